//! The raw system calls of the sandbox code, in one place: namespaces, hostname, mounts, the
//! loopback interface, filesystem magic numbers. Most go through nix; the one `unsafe` block is
//! the loopback ioctl.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{statfs, FsType, NSFS_MAGIC, TMPFS_MAGIC};

pub use nix::Error as Errno;

/// `unshare(2)` with the given namespaces.
pub fn unshare(flags: CloneFlags) -> Result<(), Errno> {
    tracing::debug!(?flags, "unshare");
    nix::sched::unshare(flags)
}

pub fn sethostname(name: &str) -> Result<(), Errno> {
    nix::unistd::sethostname(name)
}

/// `mount --bind src dst`.
pub fn bind(src: &Path, dst: &Path, recursive: bool) -> Result<(), Errno> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, flags, None::<&str>)
}

/// Changes the propagation of the mount at `target` (MS_PRIVATE, MS_SHARED, MS_SLAVE ...).
pub fn set_propagation(target: &Path, flags: MsFlags) -> Result<(), Errno> {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
}

/// A tmpfs for a pod's /dev/shm: `nosuid,nodev,noexec,mode=1777,size=<bytes>`.
pub fn mount_shm(target: &Path, size: u64) -> Result<(), Errno> {
    let data = format!("mode=1777,size={size}");
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
}

/// Unmounts `target`; "not mounted" and "absent" are success; a busy mount is detached.
pub fn unmount(target: &Path) -> Result<(), Errno> {
    match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW),
        Err(e) => Err(e),
    }
}

fn fs_type(path: &Path) -> Option<FsType> {
    statfs(path).ok().map(|s| s.filesystem_type())
}

/// Whether `path` is a bind-mounted namespace file (nsfs).
pub fn is_nsfs(path: &Path) -> bool {
    fs_type(path) == Some(NSFS_MAGIC)
}

pub fn is_tmpfs(path: &Path) -> bool {
    fs_type(path) == Some(TMPFS_MAGIC)
}

pub use crate::sys::mount_points;

/// The inode of a namespace file (equal inodes = same namespace).
pub fn ns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Sets `lo` up in the current network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS on a socket).
pub fn loopback_up() -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are a valid value; we copy the
    // NUL-terminated name "lo" (3 bytes) into `ifr_name` (IFNAMSIZ = 16 bytes); both ioctls get a
    // pointer to that live, properly aligned struct for the duration of the call only, and `sock`
    // is an open socket owned by this function. SIOCGIFFLAGS fills `ifru_flags`, which we read
    // back only after the kernel wrote it.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(Errno::last());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}
