//! Filesystem helpers that both the runtime and the volumes crate need, kept here so that
//! neither depends on the other (nor on Kubernetes): whether a path is the root of a mount, and
//! writing a file atomically.
//!
//! A mount root is asked of the path (or file descriptor) itself with `statx`'s
//! `STATX_ATTR_MOUNT_ROOT` (Linux 5.8): reading `/proc/self/mountinfo` instead costs a few lines
//! for every pod on the node, on every pod start. mountinfo is read only where the kernel does
//! not say.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn statx_mount_root(dirfd: i32, path: &CString, flags: i32) -> io::Result<Option<bool>> {
    // SAFETY: statx is the plain C struct the kernel fills; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string that outlives the call and `stx` is a writable statx.
    let r = unsafe { libc::statx(dirfd, path.as_ptr(), flags, 0, &mut stx) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok((stx.stx_attributes_mask & root != 0).then_some(stx.stx_attributes & root != 0))
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// Whether `path` is the root of a mount as statx tells it (the path is not followed if it is a
/// symlink); `None` when the kernel does not say.
pub fn mount_root_attr(path: &Path) -> io::Result<Option<bool>> {
    statx_mount_root(
        libc::AT_FDCWD,
        &cstring(path)?,
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
    )
}

/// Whether `path` is the root of a mount: statx, or mountinfo where the kernel does not say.
pub fn is_mount_root(path: &Path) -> io::Result<bool> {
    match mount_root_attr(path)? {
        Some(root) => Ok(root),
        None => Ok(mount_points().iter().any(|m| m == path)),
    }
}

/// [`is_mount_root`] of the file `fd` holds (opened from `path`, which mountinfo is searched
/// for where the kernel does not say).
pub fn is_mount_root_fd(fd: BorrowedFd<'_>, path: &Path) -> io::Result<bool> {
    let empty = CString::default();
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    match statx_mount_root(fd.as_raw_fd(), &empty, flags)? {
        Some(root) => Ok(root),
        None => {
            let path = std::fs::canonicalize(path)?;
            Ok(mount_points().contains(&path))
        }
    }
}

/// Every mount point (decoded, absolute) from `/proc/self/mountinfo`, in mount order.
pub fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(p))))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether an atomic write waits for the data to reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the rename: the file survives a crash of the machine (persistent data,
    /// like the image store's records).
    Synced,
    /// No fsync: readers never see a partial file, a crash of the machine may lose it (state
    /// that describes this boot only, in a tmpfs on a node: container folders, pod status).
    Volatile,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` through a temporary file beside it and a rename, so that readers see the old
/// content or the new one, never a part. The temporary name is unique per process and call, so
/// concurrent writers never share one; it is removed when the write fails.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if durability == Durability::Synced {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn mount_roots_are_told_by_the_path_or_the_fd() {
        for p in ["/", "/proc"] {
            assert!(is_mount_root(Path::new(p)).expect("statx"), "{p}");
            let f = File::open(p).expect("open");
            assert!(
                is_mount_root_fd(f.as_fd(), Path::new(p)).expect("statx"),
                "{p}"
            );
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let sub = tmp.path().join("d");
        std::fs::create_dir(&sub).expect("mkdir");
        assert!(!is_mount_root(&sub).expect("statx"));
        let f = File::open(&sub).expect("open");
        assert!(!is_mount_root_fd(f.as_fd(), &sub).expect("statx"));
        assert!(is_mount_root(&sub.join("missing")).is_err());
        assert!(mount_points().iter().any(|m| m == Path::new("/proc")));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c"), b"/a b\tc");
        assert_eq!(unescape_mountinfo("/x\\134"), b"/x\\");
        assert_eq!(unescape_mountinfo("/short\\04"), b"/short\\04");
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("state.json");
        for (bytes, d) in [
            (&b"one"[..], Durability::Volatile),
            (b"two", Durability::Synced),
        ] {
            write_atomic(&p, bytes, d).expect("write");
            assert_eq!(std::fs::read(&p).expect("read"), bytes);
        }
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        // A folder that does not exist: an error, nothing left behind.
        assert!(write_atomic(&tmp.path().join("no/such"), b"x", Durability::Volatile).is_err());
    }
}
