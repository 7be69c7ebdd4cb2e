//! The raw syscalls of this crate, each behind a small safe function: the logic above only sees
//! `OwnedFd`s and `io::Result`s. The one other `unsafe` of the crate registers the plugin
//! registry's inotify fd with tokio (`csi/registry.rs`); mount roots are asked through
//! `bosun_fsutil`.
//!
//! nix 0.29 returns bare `RawFd`s from `openat`/`openat2` (turning those into `OwnedFd` needs
//! `unsafe` anyway) and does not wrap `statx`, so these few calls go through libc directly.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct open_how` of `linux/openat2.h` (version 0, 24 bytes). libc's own is
/// `#[non_exhaustive]`, so we keep an exact copy of the kernel ABI here.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Resolve flags of `openat2(2)` we use.
pub(crate) const RESOLVE_BENEATH: u64 = libc::RESOLVE_BENEATH;
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = libc::RESOLVE_NO_MAGICLINKS;
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = libc::RESOLVE_NO_SYMLINKS;
pub(crate) const RESOLVE_NO_XDEV: u64 = libc::RESOLVE_NO_XDEV;

pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains a nul byte".to_string(),
        )
    })
}

/// `openat2(dir, path, flags, mode, resolve)`; `O_CLOEXEC` is always added. Retries on
/// `EINTR` and on `EAGAIN` (which `RESOLVE_BENEATH` returns when a rename or mount raced with
/// the walk, see openat2(2)).
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    let mut attempts = 0;
    loop {
        // SAFETY: `c` is a valid nul-terminated string and `how` a valid `open_how` (version 0
        // layout, size passed alongside); both outlive the call. `dir` is a live fd borrowed for
        // the duration of the call. The kernel only reads the two pointers.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            let fd = i32::try_from(ret).map_err(|_| io::Error::other("fd out of range"))?;
            // SAFETY: the syscall succeeded, so `fd` is a fresh descriptor that nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if attempts < 16 => {
                attempts += 1;
                continue;
            }
            _ => return Err(err),
        }
    }
}

/// `open(path, flags)` of an absolute (or cwd-relative) path, `O_CLOEXEC` added.
pub(crate) fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    loop {
        // SAFETY: `c` is a valid nul-terminated string that outlives the call; no mode is read
        // because `flags` never contains O_CREAT/O_TMPFILE when this helper is used.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: the call succeeded, so `fd` is a fresh descriptor that nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// What `statx` tells us about one file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// The file is the root of a mount (bind mounts included). `None` when the kernel does not
    /// report the attribute.
    pub mount_root: Option<bool>,
}

impl Stat {
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }
}

/// `statx(dir, path, flags)` asking for the type and mode. Pass an empty path with
/// `AT_EMPTY_PATH` to stat `dir` itself.
pub(crate) fn statx(dir: BorrowedFd<'_>, path: &CStr, flags: i32) -> io::Result<Stat> {
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `path` is nul-terminated and `buf` points to writable memory of the size of
    // `struct statx`; both outlive the call. `dir` is a live borrowed fd.
    let ret = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            path.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_TYPE | libc::STATX_MODE,
            buf.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded and filled the buffer; it was zero-initialised before, so every
    // field holds a valid integer even if the kernel left some untouched.
    let st = unsafe { buf.assume_init() };
    let attr = libc::STATX_ATTR_MOUNT_ROOT as u64;
    let mount_root = (st.stx_attributes_mask & attr != 0).then_some(st.stx_attributes & attr != 0);
    Ok(Stat {
        mode: u32::from(st.stx_mode),
        mount_root,
    })
}

/// `statx` of an fd itself (`AT_EMPTY_PATH`); works on `O_PATH` fds.
pub(crate) fn fstatx(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    statx(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// `/proc/self/fd/<fd>`: the magic link that names exactly the file an fd holds. Mounting from
/// or onto it binds that very inode, whatever happens to the path it was opened by.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn open_how_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<OpenHow>(), 24);
    }

    #[test]
    fn openat2_beneath_refuses_escapes() {
        let td = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(td.path().join("d")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", td.path().join("abs")).expect("symlink");
        std::os::unix::fs::symlink("d/../..", td.path().join("up")).expect("symlink");
        std::os::unix::fs::symlink("d", td.path().join("in")).expect("symlink");
        let root = open(td.path(), libc::O_PATH | libc::O_DIRECTORY).expect("open root");
        let r = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        let ok = openat2(root.as_fd(), Path::new("in"), libc::O_PATH, 0, r).expect("inside");
        assert!(fstatx(ok.as_fd()).expect("statx").is_dir());
        for bad in ["abs", "up", "../x", "/etc"] {
            let err = openat2(root.as_fd(), Path::new(bad), libc::O_PATH, 0, r)
                .expect_err("escape must be refused");
            assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{bad}: {err}");
        }
    }
}
