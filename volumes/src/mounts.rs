//! Reading `/proc/self/mountinfo` and the mount propagation of the kubelet root dir.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use tracing::{debug, info};

/// One line of `/proc/self/mountinfo` (see proc(5)), with octal escapes decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    /// Root of the mount within its filesystem (`/` unless a bind of a subfolder).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub options: String,
    /// Optional fields such as `shared:12` or `master:3`.
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

impl MountInfo {
    /// The mount is in a shared peer group (`shared:N`), so mounts below propagate.
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|f| f.starts_with("shared:"))
    }
}

/// Decodes the `\\ooo` escapes the kernel writes for space, tab, newline and backslash.
fn unescape_bytes(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A text field with its octal escapes decoded.
pub fn unescape(field: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(field)).into_owned()
}

/// A path field with its octal escapes decoded (paths are bytes: no lossy conversion).
fn unescape_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(unescape_bytes(field)))
}

/// Parses one mountinfo line; `None` if it is malformed.
pub fn parse_line(line: &str) -> Option<MountInfo> {
    let mut it = line.split(' ');
    let id = it.next()?.parse().ok()?;
    let parent = it.next()?.parse().ok()?;
    let _dev = it.next()?;
    let root = unescape_path(it.next()?);
    let mount_point = unescape_path(it.next()?);
    let options = it.next()?.to_string();
    let mut optional = Vec::new();
    loop {
        let f = it.next()?;
        if f == "-" {
            break;
        }
        optional.push(f.to_string());
    }
    let fs_type = unescape(it.next()?);
    let source = unescape(it.next()?);
    let super_options = it.next().unwrap_or("").to_string();
    Some(MountInfo {
        id,
        parent,
        root,
        mount_point,
        options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

/// Parses a whole mountinfo text, in file order (which is mount order), skipping bad lines.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

/// The mounts of this process's mount namespace, in mount order.
pub fn read_mountinfo() -> io::Result<Vec<MountInfo>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// `dir` made absolute and free of symlinks when it exists (mountinfo shows resolved paths),
/// else returned as is.
pub(crate) fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Mount points at or below `dir` among `mounts`, innermost first: reverse mount order, so that
/// a mount always comes before the one it sits on (also for mounts stacked on one path).
pub fn mounts_below_in(mounts: &[MountInfo], dir: &Path) -> Vec<PathBuf> {
    mounts
        .iter()
        .rev()
        .filter(|m| m.mount_point.starts_with(dir))
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Mount points at or below `dir` (from `/proc/self/mountinfo`, octal escapes decoded),
/// deepest first: in reverse mount order, which is the order to unmount them in. A path appears
/// once per mount stacked on it. Empty if mountinfo cannot be read.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    match read_mountinfo() {
        Ok(m) => mounts_below_in(&m, &canonical(dir)),
        Err(e) => {
            debug!(error = %e, "cannot read /proc/self/mountinfo");
            Vec::new()
        }
    }
}

/// The filesystem type (statfs magic) of the mount whose root is `path`, or `None` when `path`
/// is not a mount root; asked of the path itself (`statx`'s `STATX_ATTR_MOUNT_ROOT`, Linux
/// 5.8), which costs nothing like reading mountinfo (a few lines per pod on a busy node).
/// `Err(Unsupported)` when the kernel does not say: read mountinfo then. The path is not
/// followed if it is a symlink.
pub fn mount_root_type(path: &Path) -> io::Result<Option<i64>> {
    match bosun_fsutil::mount_root_attr(path)? {
        None => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx does not report mount roots here",
        )),
        Some(false) => Ok(None),
        Some(true) => {
            let fs = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
            Ok(Some(fs.filesystem_type().0 as i64))
        }
    }
}

/// Whether `path` itself is a mount point (per mountinfo).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let p = canonical(path);
    Ok(read_mountinfo()?.iter().any(|m| m.mount_point == p))
}

/// The mount that holds `path`: the last mounted one whose mount point is the longest prefix.
pub fn containing_mount<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .rev()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// Makes `dir` a shared mount (binding it onto itself first if it is not a mount point) so that
/// Bidirectional mountPropagation works and mounts made below it reach containers with
/// HostToContainer, as the kubelet does with its root dir. Idempotent: nothing is done when the
/// mount holding `dir` is already shared.
pub fn ensure_shared_mount(dir: &Path) -> io::Result<()> {
    let dir = std::fs::canonicalize(dir)?;
    let mounts = read_mountinfo()?;
    let holder = containing_mount(&mounts, &dir);
    if holder.is_some_and(MountInfo::is_shared) {
        debug!(dir = %dir.display(), "already on a shared mount");
        return Ok(());
    }
    if holder.is_none_or(|m| m.mount_point != dir) {
        info!(dir = %dir.display(), "bind-mounting onto itself for shared propagation");
        // MS_REC keeps mounts already below `dir` (pods of a previous run) visible.
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
    }
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(())
}

/// Is the mount at `dir` the bind of `dir` onto itself that [`ensure_shared_mount`] makes (same
/// filesystem as the mount it sits on, rooted where `dir` is in it), with no other mount at or
/// below it? Only then may the agent remove it: a mount an administrator made there (its own
/// filesystem, or a bind of another folder) is left alone, and so are pods' mounts.
pub fn is_lone_self_bind(mounts: &[MountInfo], dir: &Path) -> bool {
    let at: Vec<&MountInfo> = mounts.iter().filter(|m| m.mount_point == dir).collect();
    let [m] = at.as_slice() else {
        return false;
    };
    if mounts_below_in(mounts, dir).len() != 1 {
        return false;
    }
    let Some(parent) = mounts.iter().find(|p| p.id == m.parent) else {
        return false;
    };
    let Ok(rel) = dir.strip_prefix(&parent.mount_point) else {
        return false;
    };
    m.source == parent.source && m.fs_type == parent.fs_type && m.root == parent.root.join(rel)
}

/// Undoes [`ensure_shared_mount`]'s bind of `dir` onto itself when nothing is mounted below it
/// any more (the agent stops with no pod left); `Ok(false)` when there is nothing of ours to
/// remove.
pub fn release_shared_mount(dir: &Path) -> io::Result<bool> {
    let dir = std::fs::canonicalize(dir)?;
    if !is_lone_self_bind(&read_mountinfo()?, &dir) {
        return Ok(false);
    }
    nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)?;
    info!(dir = %dir.display(), "removed the shared bind of the root dir");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_bind_of_the_folder_onto_itself_is_ours() {
        let info = |id: u32, parent: u32, root: &str, at: &str, source: &str| MountInfo {
            id,
            parent,
            root: root.into(),
            mount_point: at.into(),
            options: "rw".into(),
            optional: vec![],
            fs_type: if source == "tmpfs" { "tmpfs" } else { "ext4" }.into(),
            source: source.into(),
            super_options: "rw".into(),
        };
        let root = info(1, 0, "/", "/", "/dev/vda");
        let tmp = info(2, 1, "/", "/tmp", "tmpfs");
        let dir = Path::new("/tmp/w/root");
        let ours = info(3, 2, "/w/root", "/tmp/w/root", "tmpfs");
        let pod = info(4, 3, "/", "/tmp/w/root/pods/u1/volumes/x", "tmpfs");
        let other_fs = info(3, 2, "/", "/tmp/w/root", "/dev/vdb");
        let other_dir = info(3, 2, "/elsewhere", "/tmp/w/root", "tmpfs");
        let cases: [(&str, Vec<MountInfo>, bool); 5] = [
            (
                "our bind",
                vec![root.clone(), tmp.clone(), ours.clone()],
                true,
            ),
            (
                "a pod's mount below",
                vec![root.clone(), tmp.clone(), ours, pod],
                false,
            ),
            (
                "a filesystem of its own",
                vec![root.clone(), tmp.clone(), other_fs],
                false,
            ),
            (
                "a bind of another folder",
                vec![root.clone(), tmp.clone(), other_dir],
                false,
            ),
            ("no mount there", vec![root, tmp], false),
        ];
        for (name, mounts, want) in cases {
            assert_eq!(is_lone_self_bind(&mounts, dir), want, "{name}");
        }
    }

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
90 27 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw shared:40 - tmpfs tmpfs rw,size=1024k
91 27 254:0 /srv/data /var/lib/kubelet/pods/u1/volume-subpaths/data/app/0 rw - ext4 /dev/vda rw
92 27 0:51 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/with\\040space rw master:3 - tmpfs tmpfs rw
93 90 0:52 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache/inner rw - tmpfs tmpfs rw
94 27 0:53 / /var/lib/kubelet/pods/u10/volumes/x rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 7);
        assert_eq!(m[1].mount_point, PathBuf::from("/"));
        assert!(m[1].is_shared());
        assert!(!m[0].is_shared());
        assert_eq!(m[3].root, PathBuf::from("/srv/data"));
        assert_eq!(m[3].fs_type, "ext4");
        assert_eq!(m[3].source, "/dev/vda");
        assert_eq!(
            m[4].mount_point,
            PathBuf::from("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/with space")
        );
        assert_eq!(m[4].optional, vec!["master:3".to_string()]);
        assert_eq!(unescape("a\\011b\\012c\\134d"), "a\tb\nc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("1 2 0:1 / /x rw shared:1").is_none());
    }

    #[test]
    fn below_is_reverse_order_and_component_wise() {
        let m = parse(SAMPLE);
        let below = mounts_below_in(&m, Path::new("/var/lib/kubelet/pods/u1"));
        let names: Vec<_> = below
            .iter()
            .map(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        // u10 is not below u1; the inner mount comes before the tmpfs it sits on.
        assert_eq!(
            names,
            vec![
                Some("inner".into()),
                Some("with space".into()),
                Some("0".into()),
                Some("cache".into())
            ]
        );
    }

    #[test]
    fn mount_roots_are_told_by_the_path() {
        let proc_type = mount_root_type(Path::new("/proc")).expect("statx /proc");
        assert_eq!(proc_type, Some(libc::PROC_SUPER_MAGIC));
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(mount_root_type(tmp.path()).expect("statx tempdir"), None);
        assert!(mount_root_type(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn containing_mount_is_longest_prefix() {
        let m = parse(SAMPLE);
        let c = containing_mount(
            &m,
            Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache/f"),
        )
        .expect("a mount");
        assert_eq!(c.id, 90);
        assert_eq!(
            containing_mount(&m, Path::new("/etc")).map(|m| m.id),
            Some(27)
        );
    }

    #[test]
    #[ignore = "needs root: bind mounts and changes propagation"]
    fn ensure_shared_mount_binds_once_and_shares() {
        let td = tempfile::tempdir().expect("tempdir");
        let _guard = crate::testutil::UnmountGuard::new(td.path());
        let dir = canonical(td.path());
        let shared_mounts_at = |p: &Path| -> Vec<MountInfo> {
            read_mountinfo()
                .expect("mountinfo")
                .into_iter()
                .filter(|m| m.mount_point == p)
                .collect()
        };
        let holder_shared = containing_mount(&read_mountinfo().expect("mountinfo"), &dir)
            .is_some_and(MountInfo::is_shared);
        ensure_shared_mount(&dir).expect("first");
        let at = shared_mounts_at(&dir);
        if holder_shared {
            // The host's mount is already shared (systemd hosts): nothing to do.
            assert!(at.is_empty());
        } else {
            assert_eq!(at.len(), 1, "one bind of the folder onto itself");
            assert!(at[0].is_shared(), "{:?}", at[0]);
        }
        ensure_shared_mount(&dir).expect("second");
        assert_eq!(shared_mounts_at(&dir).len(), at.len(), "idempotent");

        // A mount made below now propagates to a bind of the folder (Bidirectional's need).
        if !holder_shared {
            let peer = tempfile::tempdir().expect("tempdir");
            let _peer_guard = crate::testutil::UnmountGuard::new(peer.path());
            mount(
                Some(&dir),
                peer.path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind peer");
            std::fs::create_dir(dir.join("sub")).expect("mkdir");
            mount(
                Some("tmpfs"),
                &dir.join("sub"),
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("tmpfs below");
            std::fs::write(dir.join("sub/seen"), b"x").expect("write");
            assert!(
                peer.path().join("sub/seen").exists(),
                "propagated to the peer"
            );
        }
    }
}
