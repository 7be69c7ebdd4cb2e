//! subPath: resolve a path inside a volume without ever leaving it, then bind-mount exactly
//! the file that was checked.
//!
//! The resolution happens on file descriptors: the volume root is opened once, and the subPath
//! is opened below it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`. The kernel then
//! refuses any step that would leave the volume (a `..` above the root, an absolute symlink, a
//! relative symlink climbing out) with `EXDEV`, while symlinks that stay inside the volume are
//! followed, as the kubelet allows. Missing folders are created one by one with `mkdirat` on
//! the already-resolved parent fd, with the mode of the volume root (the kubelet's SafeMakeDir
//! with `GetMode(volumePath)`: 0777 in an emptyDir). Finally `/proc/self/fd/<fd>` is
//! bind-mounted onto `<pod_dir>/volume-subpaths/<volume>/<container>/<index>`: the mount takes
//! the inode the fd holds, so swapping a path component for a symlink after the check changes
//! nothing (no TOCTOU, the class of CVE-2017-1002101 and CVE-2021-25741).
//!
//! One difference with the kubelet: an absolute symlink inside the volume is refused even when
//! its host path points back inside the volume (the kubelet evaluates it on the host). Such a
//! link means something else inside the container anyway.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use tracing::{debug, info};

use crate::layout::{self, InvalidName};
use crate::sys::{self, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};

/// Modes of the bind targets under `volume-subpaths/` (the kubelet's).
const TARGET_DIR_MODE: u32 = 0o750;
const TARGET_FILE_MODE: u32 = 0o640;

/// Why a subPath could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("subPath of volume {volume} is empty")]
    Empty { volume: String },
    #[error("subPath {sub_path:?} of volume {volume} must be a relative path")]
    Absolute { volume: String, sub_path: String },
    #[error("subPath {sub_path:?} of volume {volume} must not contain '..'")]
    DotDot { volume: String, sub_path: String },
    #[error("volume path {} of volume {volume} is not absolute", volume_path.display())]
    VolumePathNotAbsolute {
        volume: String,
        volume_path: PathBuf,
    },
    #[error("cannot open volume {volume} at {}: {source}", volume_path.display())]
    OpenVolume {
        volume: String,
        volume_path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("subPath {sub_path:?} leads outside the volume {volume} ({})", volume_path.display())]
    Escapes {
        volume: String,
        sub_path: String,
        volume_path: PathBuf,
    },
    #[error("cannot resolve subPath {sub_path:?} in {}: {source}", volume_path.display())]
    Resolve {
        volume: String,
        sub_path: String,
        volume_path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create folder {component:?} of subPath {sub_path:?} in {}: {source}", volume_path.display())]
    Create {
        volume: String,
        sub_path: String,
        component: String,
        volume_path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the bind target {}: {source}", target.display())]
    Target {
        volume: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind-mount subPath {sub_path:?} of volume {volume} onto {}: {source}", target.display())]
    Bind {
        volume: String,
        sub_path: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// The components of a subPath, checked: relative, no `..`; empty and `.` components dropped
/// (so `"."` names the volume root itself).
pub fn check_sub_path<'a>(volume: &str, sub_path: &'a str) -> Result<Vec<&'a str>, SubPathError> {
    if sub_path.is_empty() {
        return Err(SubPathError::Empty {
            volume: volume.to_string(),
        });
    }
    if sub_path.starts_with('/') {
        return Err(SubPathError::Absolute {
            volume: volume.to_string(),
            sub_path: sub_path.to_string(),
        });
    }
    let parts: Vec<&str> = sub_path.split('/').collect();
    if parts.contains(&"..") {
        return Err(SubPathError::DotDot {
            volume: volume.to_string(),
            sub_path: sub_path.to_string(),
        });
    }
    Ok(parts
        .into_iter()
        .filter(|c| !c.is_empty() && *c != ".")
        .collect())
}

/// Resolves a subPath safely and returns the path to bind-mount into the container, after
/// bind-mounting the checked target onto `<pod_dir>/volume-subpaths/<volume>/<container>/<index>`
/// (a folder or an empty file created to match the target).
///
/// Refused: an absolute subPath, a `..` component, and any symlink that leads outside
/// `volume_path`; symlinks that stay inside are followed. A missing subPath is created as
/// folders (with the volume root's mode) inside the volume. Idempotent: an existing bind at the
/// target is reused.
#[tracing::instrument(level = "debug", skip(pod_dir, volume_path), fields(pod_dir = %pod_dir.display()))]
pub fn prepare_subpath(
    pod_dir: &Path,
    volume: &str,
    volume_path: &Path,
    sub_path: &str,
    container: &str,
    index: usize,
) -> Result<PathBuf, SubPathError> {
    let components = check_sub_path(volume, sub_path)?;
    let target = layout::subpath_target(pod_dir, volume, container, index)?;
    let target_err = |source| SubPathError::Target {
        volume: volume.to_string(),
        target: target.clone(),
        source,
    };

    // An existing bind is reused without looking at the volume again: it holds the inode that
    // was checked when it was made, whatever the path looks like now.
    if let Some(fd) = open_nofollow(&target).map_err(target_err)? {
        if bosun_fsutil::is_mount_root_fd(fd.as_fd(), &target).map_err(target_err)? {
            debug!(target = %target.display(), "subPath bind already in place");
            return Ok(target);
        }
    }

    let source = resolve_in_volume(volume, volume_path, sub_path, &components)?;
    let source_is_dir = sys::fstatx(source.as_fd()).map_err(target_err)?.is_dir();

    let parent = target.parent().unwrap_or(pod_dir);
    DirBuilder::new()
        .recursive(true)
        .mode(TARGET_DIR_MODE)
        .create(parent)
        .map_err(target_err)?;
    let target_fd = make_target(&target, source_is_dir).map_err(target_err)?;

    info!(
        volume,
        sub_path,
        target = %target.display(),
        "bind-mounting subPath"
    );
    mount(
        Some(&sys::proc_fd_path(source.as_fd())),
        &sys::proc_fd_path(target_fd.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| SubPathError::Bind {
        volume: volume.to_string(),
        sub_path: sub_path.to_string(),
        target: target.clone(),
        source,
    })?;
    Ok(target)
}

/// Opens `sub_path` (already split into `components`) inside the volume as an `O_PATH` fd,
/// creating missing folders, never leaving the volume.
pub(crate) fn resolve_in_volume(
    volume: &str,
    volume_path: &Path,
    sub_path: &str,
    components: &[&str],
) -> Result<OwnedFd, SubPathError> {
    if !volume_path.is_absolute() {
        return Err(SubPathError::VolumePathNotAbsolute {
            volume: volume.to_string(),
            volume_path: volume_path.to_path_buf(),
        });
    }
    // The volume root itself may be a symlink (a hostPath): the kubelet follows it too.
    let root = sys::open(volume_path, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
        SubPathError::OpenVolume {
            volume: volume.to_string(),
            volume_path: volume_path.to_path_buf(),
            source,
        }
    })?;
    let resolve_err = |source: io::Error| {
        if source.raw_os_error() == Some(libc::EXDEV) {
            SubPathError::Escapes {
                volume: volume.to_string(),
                sub_path: sub_path.to_string(),
                volume_path: volume_path.to_path_buf(),
            }
        } else {
            SubPathError::Resolve {
                volume: volume.to_string(),
                sub_path: sub_path.to_string(),
                volume_path: volume_path.to_path_buf(),
                source,
            }
        }
    };
    let beneath = |prefix: &[&str]| {
        let rel: PathBuf = if prefix.is_empty() {
            PathBuf::from(".")
        } else {
            prefix.iter().collect()
        };
        sys::openat2(
            root.as_fd(),
            &rel,
            libc::O_PATH,
            0,
            RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        )
    };

    match beneath(components) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(resolve_err(e)),
    }

    // Something is missing: walk from the root, creating what is not there. Each prefix is
    // resolved again from the root, so symlinks inside the volume keep working and none can
    // lead out of it.
    let mut cur = beneath(&[]).map_err(resolve_err)?;
    // New folders get the mode of the volume's root (0777 in an emptyDir), as the kubelet's
    // makeMounts asks SafeMakeDir for (`hu.GetMode(volumePath)`).
    let mode = nix::sys::stat::fstat(cur.as_raw_fd())
        .map(|st| st.st_mode & 0o7777)
        .map_err(|e| resolve_err(e.into()))?;
    for i in 0..components.len() {
        match beneath(&components[..=i]) {
            Ok(fd) => {
                cur = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(resolve_err(e)),
        }
        let name = components[i];
        cur = make_dir_in(cur.as_fd(), name, mode).map_err(|source| SubPathError::Create {
            volume: volume.to_string(),
            sub_path: sub_path.to_string(),
            component: components[..=i].join("/"),
            volume_path: volume_path.to_path_buf(),
            source,
        })?;
        debug!(volume, component = %components[..=i].join("/"), "created subPath folder");
    }
    Ok(cur)
}

/// `mkdirat(parent, name, mode)` then opens the new folder without following anything and sets
/// its mode (the umask trimmed it). A dangling symlink in the way fails with `ELOOP`/`EEXIST`.
fn make_dir_in(parent: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<OwnedFd> {
    let mode = Mode::from_bits_truncate(mode);
    let created = match mkdirat(Some(parent.as_raw_fd()), name, mode) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(e.into()),
    };
    let fd = sys::openat2(
        parent,
        Path::new(name),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    )?;
    if created {
        fchmod(fd.as_raw_fd(), mode)?;
    }
    Ok(fd)
}

/// `open(path, O_PATH|O_NOFOLLOW)`; `None` if nothing is there.
fn open_nofollow(path: &Path) -> io::Result<Option<OwnedFd>> {
    match sys::open(path, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes the bind target match the source (a folder for a folder, an empty file otherwise),
/// replacing a leftover of the wrong kind, and returns it opened `O_PATH|O_NOFOLLOW`.
fn make_target(target: &Path, dir: bool) -> io::Result<OwnedFd> {
    if let Some(fd) = open_nofollow(target)? {
        let st = sys::fstatx(fd.as_fd())?;
        let fits = if dir {
            st.is_dir()
        } else {
            st.file_type() == libc::S_IFREG
        };
        if fits {
            return Ok(fd);
        }
        drop(fd);
        if st.is_dir() {
            std::fs::remove_dir(target)?;
        } else {
            std::fs::remove_file(target)?;
        }
    }
    if dir {
        DirBuilder::new().mode(TARGET_DIR_MODE).create(target)?;
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TARGET_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)?;
    }
    sys::open(target, libc::O_PATH | libc::O_NOFOLLOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, UnmountGuard};
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn resolve(vol: &Path, sub: &str) -> Result<OwnedFd, SubPathError> {
        let c = check_sub_path("v", sub)?;
        resolve_in_volume("v", vol, sub, &c)
    }

    fn fd_path(fd: &OwnedFd) -> PathBuf {
        fs::read_link(sys::proc_fd_path(fd.as_fd())).expect("readlink")
    }

    #[test]
    fn absolute_dotdot_and_empty_are_refused() {
        let td = tempfile::tempdir().expect("tempdir");
        let pod = td.path();
        let vol = td.path().join("vol");
        let cases = [
            ("/etc", "Absolute"),
            ("..", "DotDot"),
            ("a/../b", "DotDot"),
            ("a/..", "DotDot"),
            ("", "Empty"),
        ];
        for (sub, want) in cases {
            let err = prepare_subpath(pod, "v", &vol, sub, "c", 0).expect_err(sub);
            let got = match err {
                SubPathError::Absolute { .. } => "Absolute",
                SubPathError::DotDot { .. } => "DotDot",
                SubPathError::Empty { .. } => "Empty",
                other => panic!("{sub}: unexpected {other}"),
            };
            assert_eq!(got, want, "{sub}");
        }
        // Nothing was created for refused subPaths.
        assert!(!pod.join("volume-subpaths").exists());
        assert_eq!(check_sub_path("v", "./a//b/.").expect("ok"), vec!["a", "b"]);
        assert!(check_sub_path("v", "a..b/..c").is_ok());
        assert!(matches!(
            prepare_subpath(pod, "v", &vol, "a", "../c", 0),
            Err(SubPathError::InvalidName(_))
        ));
    }

    #[test]
    fn symlink_to_outside_is_refused() {
        let td = tempfile::tempdir().expect("tempdir");
        let vol = td.path();
        symlink("/etc", vol.join("etc")).expect("symlink");
        symlink("../../../../../../../../etc", vol.join("rel")).expect("symlink");
        fs::create_dir(vol.join("d")).expect("mkdir");
        symlink("/", vol.join("d/root")).expect("symlink");
        for sub in ["etc", "etc/passwd", "rel", "d/root/etc", "etc/new/dir"] {
            let err = resolve(vol, sub).expect_err(sub);
            assert!(matches!(err, SubPathError::Escapes { .. }), "{sub}: {err}");
        }
        // Nothing was created through the link.
        assert!(!Path::new("/etc/new").exists());
    }

    #[test]
    fn symlink_chain_tricks_are_refused() {
        let td = tempfile::tempdir().expect("tempdir");
        let vol = td.path().join("vol");
        fs::create_dir_all(vol.join("b/c")).expect("mkdir");
        // a -> b/.. is the volume root itself (fine), a2 -> b/../.. is outside.
        symlink("b/..", vol.join("a")).expect("symlink");
        symlink("b/../..", vol.join("a2")).expect("symlink");
        // x -> y/.. where y -> / : the `..` of an absolute target.
        symlink("/", vol.join("y")).expect("symlink");
        symlink("y/..", vol.join("x")).expect("symlink");
        // chain of relative links climbing one level each.
        symlink("..", vol.join("b/c/up")).expect("symlink");
        symlink("c/up", vol.join("b/l1")).expect("symlink");
        symlink("b/l1/../..", vol.join("l2")).expect("symlink");
        for sub in ["a2", "x", "l2", "a/a2", "a/../x"] {
            if sub.contains("..") {
                // `..` in the subPath itself never reaches resolution.
                assert!(matches!(
                    resolve(&vol, sub),
                    Err(SubPathError::DotDot { .. })
                ));
                continue;
            }
            let err = resolve(&vol, sub).expect_err(sub);
            assert!(matches!(err, SubPathError::Escapes { .. }), "{sub}: {err}");
        }
        let fd = resolve(&vol, "a").expect("a -> b/.. stays inside");
        assert_eq!(fd_path(&fd), fs::canonicalize(&vol).expect("canon"));
    }

    #[test]
    fn symlink_inside_the_volume_is_followed() {
        let td = tempfile::tempdir().expect("tempdir");
        let vol = fs::canonicalize(td.path()).expect("canon");
        fs::create_dir_all(vol.join("real/inner")).expect("mkdir");
        symlink("real/inner", vol.join("link")).expect("symlink");
        fs::create_dir(vol.join("other")).expect("mkdir");
        symlink("../real", vol.join("other/up")).expect("symlink");
        symlink(vol.join("real"), vol.join("abs_inside")).expect("symlink");
        assert_eq!(
            fd_path(&resolve(&vol, "link").expect("link")),
            vol.join("real/inner")
        );
        assert_eq!(
            fd_path(&resolve(&vol, "other/up/inner").expect("up")),
            vol.join("real/inner")
        );
        // Documented difference with the kubelet: absolute links are refused even when they
        // point back inside.
        assert!(matches!(
            resolve(&vol, "abs_inside"),
            Err(SubPathError::Escapes { .. })
        ));
    }

    #[test]
    fn missing_folders_are_created_with_the_volume_roots_mode() {
        let td = tempfile::tempdir().expect("tempdir");
        let vol = fs::canonicalize(td.path()).expect("canon");
        // An emptyDir's root is 0777: so are the folders made for a subPath (the kubelet's).
        fs::set_permissions(&vol, fs::Permissions::from_mode(0o777)).expect("chmod");
        resolve(&vol, "a/b").expect("created");
        for p in [vol.join("a"), vol.join("a/b")] {
            let m = fs::symlink_metadata(&p).expect("stat");
            assert_eq!(m.permissions().mode() & 0o7777, 0o777, "{}", p.display());
        }
        fs::set_permissions(&vol, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::create_dir(vol.join("real")).expect("mkdir");
        symlink("real", vol.join("link")).expect("symlink");
        let fd = resolve(&vol, "link/new/deeper").expect("created");
        let made = vol.join("real/new/deeper");
        assert_eq!(fd_path(&fd), made);
        for p in [vol.join("real/new"), made] {
            let m = fs::symlink_metadata(&p).expect("stat");
            assert!(m.is_dir());
            assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        }
        // A dangling symlink is not "missing": it is never created through.
        symlink("/nonexistent-bosun-target", vol.join("dangling")).expect("symlink");
        assert!(resolve(&vol, "dangling/x").is_err());
        assert!(!Path::new("/nonexistent-bosun-target").exists());
        symlink("nowhere", vol.join("dangling_rel")).expect("symlink");
        assert!(resolve(&vol, "dangling_rel").is_err());
        assert!(!vol.join("nowhere").exists());
        // A file in the middle of the path.
        fs::write(vol.join("file"), b"x").expect("write");
        assert!(matches!(
            resolve(&vol, "file/x"),
            Err(SubPathError::Resolve { .. })
        ));
    }

    struct Setup {
        _guard: UnmountGuard,
        td: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Self {
            let td = tempfile::tempdir().expect("tempdir");
            Setup {
                _guard: UnmountGuard::new(td.path()),
                td,
            }
        }
        fn pod(&self) -> PathBuf {
            fs::canonicalize(self.td.path()).expect("canon").join("pod")
        }
    }

    // `Setup` drops `_guard` first (fields drop in declaration order), then the tempdir.

    #[test]
    #[ignore = "needs root: bind mounts"]
    fn subdir_and_file_are_bound_and_reused() {
        let s = Setup::new();
        let pod = s.pod();
        let vol = crate::setup(
            &pod,
            "data",
            &crate::VolumeSource::EmptyDir {
                medium: crate::Medium::Disk,
                size_limit: None,
            },
        )
        .expect("emptyDir");
        fs::create_dir_all(vol.join("sub")).expect("mkdir");
        fs::write(vol.join("sub/hello"), b"hello").expect("write");
        fs::write(vol.join("conf"), b"config").expect("write");

        let t = prepare_subpath(&pod, "data", &vol, "sub", "app", 0).expect("subdir");
        assert_eq!(t, pod.join("volume-subpaths/data/app/0"));
        assert_eq!(testutil::mount_count_at(&t), 1);
        assert_eq!(fs::read(t.join("hello")).expect("read"), b"hello");
        // Idempotent: the bind is reused, not stacked.
        prepare_subpath(&pod, "data", &vol, "sub", "app", 0).expect("again");
        assert_eq!(testutil::mount_count_at(&t), 1);

        let f = prepare_subpath(&pod, "data", &vol, "conf", "app", 1).expect("file");
        assert!(fs::symlink_metadata(&f).expect("stat").is_file());
        assert_eq!(fs::read(&f).expect("read"), b"config");
        assert_eq!(testutil::mount_count_at(&f), 1);

        // The bind holds what was checked: replacing the folder by a link to /etc afterwards
        // changes nothing for the bind.
        fs::rename(vol.join("sub"), vol.join("moved")).expect("rename");
        symlink("/etc", vol.join("sub")).expect("symlink");
        assert_eq!(fs::read(t.join("hello")).expect("read"), b"hello");
        assert!(!t.join("passwd").exists());

        crate::teardown_pod(&pod).expect("teardown");
        assert!(crate::mounts_below(&pod).is_empty());
        assert!(!pod.exists());
    }

    #[test]
    #[ignore = "needs root: bind mounts"]
    fn escaping_subpaths_are_refused_and_inside_links_bound() {
        let s = Setup::new();
        let pod = s.pod();
        let vol = s.td.path().join("vol");
        fs::create_dir_all(vol.join("real/inner")).expect("mkdir");
        fs::write(vol.join("real/inner/f"), b"inside").expect("write");
        symlink("/etc", vol.join("etc")).expect("symlink");
        fs::create_dir(vol.join("b")).expect("mkdir");
        symlink("b/../..", vol.join("a")).expect("symlink");
        symlink("real/inner", vol.join("ok")).expect("symlink");

        for sub in ["etc", "a"] {
            let err = prepare_subpath(&pod, "v", &vol, sub, "c", 0).expect_err(sub);
            assert!(matches!(err, SubPathError::Escapes { .. }), "{sub}: {err}");
        }
        assert!(crate::mounts_below(&pod).is_empty());

        let t = prepare_subpath(&pod, "v", &vol, "ok", "c", 0).expect("inside link");
        assert_eq!(fs::read(t.join("f")).expect("read"), b"inside");

        let m = prepare_subpath(&pod, "v", &vol, "missing/dir", "c", 1).expect("created");
        assert!(vol.join("missing/dir").is_dir());
        fs::write(m.join("through-bind"), b"x").expect("write through bind");
        assert!(vol.join("missing/dir/through-bind").exists());

        crate::teardown_pod(&pod).expect("teardown");
        assert!(crate::mounts_below(&pod).is_empty());
        assert!(!pod.exists());
        // The volume (a hostPath here) keeps its content.
        assert!(vol.join("real/inner/f").exists());
        assert!(vol.join("missing/dir/through-bind").exists());
    }
}
