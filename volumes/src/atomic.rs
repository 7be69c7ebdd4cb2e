//! The kubelet's atomic writer: the files of a configMap, secret, downwardAPI or projected
//! volume change all at once, so a container never reads half of an update.
//!
//! ```text
//! <volume>/..2026_11_26_18_40_01.123456789/   the files of one version (the payload)
//! <volume>/..data -> ..2026_11_26_18_40_01.123456789
//! <volume>/<key>  -> ..data/<key>              one symlink per top-level name
//! ```
//!
//! An update writes a new timestamped folder, points `..data_tmp` at it and renames that over
//! `..data` (one atomic `rename`), then adds the new top-level symlinks, removes the ones that
//! are no longer in the payload and deletes the old folder. Applications that watch for the
//! `..data` rename (as many config reloaders do) see every change exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// The symlink naming the current version.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
}

/// Relative path (may contain `/`) -> file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a payload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid path {path:?} in the volume payload: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kubelet's payload path rules: relative, no `..` element, not starting with `..`.
pub fn validate_path(path: &str) -> Result<(), WriteError> {
    let invalid = |reason| WriteError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if path.len() > 4096 {
        return Err(invalid("must be shorter than 4096 bytes"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be relative"));
    }
    if path.starts_with("..") {
        return Err(invalid("must not start with '..'"));
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => return Err(invalid("must not contain '..'")),
        }
    }
    if path.contains('\0') {
        return Err(invalid("must not contain a nul byte"));
    }
    Ok(())
}

/// The first component of a payload path: the name a user sees at the volume's top.
fn top_level(path: &str) -> &str {
    path.split('/')
        .find(|s| !s.is_empty() && *s != ".")
        .unwrap_or(path)
}

/// Writes `payload` into `dir` atomically (see the module docs). Returns whether anything
/// changed: an identical payload (data and modes) writes nothing. With `gid`, every file and
/// folder of the version gets that group and group read access (the kubelet's fsGroup on a
/// read-only volume: files `| 0440`, folders `| 0550` and setgid).
pub fn write(dir: &Path, payload: &Payload, gid: Option<u32>) -> Result<bool, WriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    let data_link = dir.join(DATA_DIR);
    let old_version = match fs::read_link(&data_link) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&data_link)(e)),
    };
    if let Some(old) = &old_version {
        if same_payload(&dir.join(old), payload, gid) {
            ensure_user_links(dir, payload)?;
            return Ok(false);
        }
    }

    let version = new_version_dir(dir)?;
    let result = (|| {
        write_version(&version, payload, gid)?;
        let tmp = dir.join(DATA_DIR_TMP);
        let _ = fs::remove_file(&tmp);
        let name = version
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| version.clone());
        std::os::unix::fs::symlink(&name, &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &data_link).map_err(io_err(&data_link))
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&version);
        return Err(e);
    }
    ensure_user_links(dir, payload)?;
    remove_stale_links(dir, payload);
    if let Some(old) = old_version {
        let old = dir.join(old);
        if old.parent() == Some(dir) {
            let _ = fs::remove_dir_all(&old);
        }
    }
    Ok(true)
}

/// A new `..<UTC timestamp>.<nanos>` folder, 0755.
fn new_version_dir(dir: &Path) -> Result<PathBuf, WriteError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    for attempt in 0..100u32 {
        let name = format!(
            "..{}.{:09}",
            utc_stamp(now.as_secs()),
            now.subsec_nanos().wrapping_add(attempt)
        );
        let path = dir.join(name);
        match DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {
                fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(io_err(&path))?;
                return Ok(path);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Err(io_err(dir)(io::Error::from(ErrorKind::AlreadyExists)))
}

/// `2006_01_02_15_04_05` for a Unix time (UTC), like the kubelet's folder names.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn write_version(version: &Path, payload: &Payload, gid: Option<u32>) -> Result<(), WriteError> {
    let mut dirs = BTreeSet::new();
    for (rel, file) in payload {
        let path = version.join(rel);
        if let Some(parent) = path.parent() {
            if parent != version && dirs.insert(parent.to_path_buf()) {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(io_err(parent))?;
            }
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode & 0o7777)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&file.data).map_err(io_err(&path))?;
        let mut mode = file.mode & 0o7777;
        if let Some(g) = gid {
            std::os::unix::fs::fchown(&f, None, Some(g)).map_err(io_err(&path))?;
            mode |= 0o440;
        }
        // The umask trims the mode given to open; set it exactly.
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err(&path))?;
    }
    if let Some(g) = gid {
        dirs.insert(version.to_path_buf());
        for d in &dirs {
            let mut cur = d.as_path();
            loop {
                std::os::unix::fs::chown(cur, None, Some(g)).map_err(io_err(cur))?;
                fs::set_permissions(cur, Permissions::from_mode(0o2755 | 0o550))
                    .map_err(io_err(cur))?;
                match cur.parent() {
                    Some(p) if p.starts_with(version) && cur != version => cur = p,
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

/// Whether the version folder holds exactly `payload` (same files, bytes and modes).
fn same_payload(version: &Path, payload: &Payload, gid: Option<u32>) -> bool {
    let mut on_disk = BTreeSet::new();
    if collect_files(version, version, &mut on_disk).is_err() {
        return false;
    }
    if on_disk.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(rel, file)| {
        let path = version.join(rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        let mut mode = file.mode & 0o7777;
        if let Some(g) = gid {
            mode |= 0o440;
            if std::os::unix::fs::MetadataExt::gid(&meta) != g {
                return false;
            }
        }
        meta.is_file()
            && meta.permissions().mode() & 0o7777 == mode
            && fs::read(&path).is_ok_and(|d| d == file.data)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            collect_files(root, &e.path(), out)?;
        } else {
            out.insert(e.path().strip_prefix(root).unwrap_or(&e.path()).into());
        }
    }
    Ok(())
}

/// `<key> -> ..data/<key>` for each top-level name of the payload.
fn ensure_user_links(dir: &Path, payload: &Payload) -> Result<(), WriteError> {
    let tops: BTreeSet<&str> = payload.keys().map(|k| top_level(k)).collect();
    for top in tops {
        let link = dir.join(top);
        let target = Path::new(DATA_DIR).join(top);
        match fs::read_link(&link) {
            Ok(t) if t == target => continue,
            Ok(_) => {
                let _ = fs::remove_file(&link);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // Something that is not a symlink in the way: the kubelet refuses too.
            Err(e) => return Err(io_err(&link)(e)),
        }
        std::os::unix::fs::symlink(&target, &link).map_err(io_err(&link))?;
    }
    Ok(())
}

/// Removes the top-level symlinks into `..data` whose name left the payload.
fn remove_stale_links(dir: &Path, payload: &Payload) {
    let tops: BTreeSet<&str> = payload.keys().map(|k| top_level(k)).collect();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("..") || tops.contains(name) {
            continue;
        }
        if let Ok(t) = fs::read_link(e.path()) {
            if t.starts_with(DATA_DIR) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("..2"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_links_and_swaps_versions() {
        let td = tempfile::tempdir().expect("tempdir");
        let dir = td.path();
        let mut p = Payload::new();
        p.insert("a".into(), file("one", 0o644));
        p.insert("sub/b".into(), file("two", 0o600));
        assert!(write(dir, &p, None).expect("write"));
        assert_eq!(fs::read_to_string(dir.join("a")).expect("a"), "one");
        assert_eq!(fs::read_to_string(dir.join("sub/b")).expect("b"), "two");
        assert_eq!(
            fs::read_link(dir.join("a")).expect("link"),
            PathBuf::from("..data/a")
        );
        assert_eq!(
            fs::metadata(dir.join("sub/b"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777,
            0o600
        );
        let first = versions(dir);
        assert_eq!(first.len(), 1);

        // The same payload again: nothing written.
        assert!(!write(dir, &p, None).expect("write"));
        assert_eq!(versions(dir), first);

        // An update: new version, old one gone, a removed key's link gone.
        let mut q = Payload::new();
        q.insert("a".into(), file("uno", 0o644));
        q.insert("c".into(), file("three", 0o644));
        assert!(write(dir, &q, None).expect("update"));
        let second = versions(dir);
        assert_eq!(second.len(), 1);
        assert_ne!(second, first);
        assert_eq!(fs::read_to_string(dir.join("a")).expect("a"), "uno");
        assert_eq!(fs::read_to_string(dir.join("c")).expect("c"), "three");
        assert!(fs::symlink_metadata(dir.join("sub")).is_err());
        assert_eq!(
            fs::read_link(dir.join(DATA_DIR)).expect("..data"),
            PathBuf::from(&second[0])
        );
        // A mode change alone is an update too.
        q.insert("c".into(), file("three", 0o400));
        assert!(write(dir, &q, None).expect("mode update"));
    }

    #[test]
    fn empty_payload_is_a_valid_version() {
        let td = tempfile::tempdir().expect("tempdir");
        assert!(write(td.path(), &Payload::new(), None).expect("write"));
        assert!(td.path().join(DATA_DIR).is_dir());
        assert!(!write(td.path(), &Payload::new(), None).expect("again"));
    }

    #[test]
    fn refuses_paths_that_leave_the_volume() {
        let td = tempfile::tempdir().expect("tempdir");
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data", "..x/y"] {
            let mut p = Payload::new();
            p.insert(bad.into(), file("x", 0o644));
            assert!(
                matches!(
                    write(td.path(), &p, None),
                    Err(WriteError::InvalidPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(validate_path("a..b").is_ok());
        assert!(validate_path("dir/..file").is_ok());
    }

    #[test]
    fn group_ownership_and_read_bits() {
        let td = tempfile::tempdir().expect("tempdir");
        let gid = nix::unistd::getegid().as_raw();
        let mut p = Payload::new();
        p.insert("k".into(), file("v", 0o600));
        write(td.path(), &p, Some(gid)).expect("write");
        let m = fs::metadata(td.path().join("k")).expect("stat");
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert!(!write(td.path(), &p, Some(gid)).expect("same"));
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "1970_01_01_00_00_00");
        assert_eq!(utc_stamp(1_795_718_401), "2026_11_26_18_40_01");
        assert_eq!(utc_stamp(951_782_400), "2000_02_29_00_00_00");
    }
}
