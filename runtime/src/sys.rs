//! Raw syscalls the runtime needs (pidfd, prctl, signals, mounts, poll), each `unsafe` block
//! justified. Everything above this module is written against these small safe wrappers.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bosun_fsutil::{is_mount_root, mount_points, unescape_mountinfo};

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a nul byte"))
}

/// `pidfd_open(2)`: a file descriptor that refers to process `pid` (immune to pid reuse).
/// It becomes readable when the process exits (also for a zombie that was not reaped yet).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1; it touches
    // no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returned a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `pidfd_send_signal(2)`: sends `sig` to the process behind `fd`.
pub fn pidfd_send_signal(fd: BorrowedFd, sig: i32) -> io::Result<()> {
    // SAFETY: the fd is valid for the duration of the borrow, the siginfo pointer is NULL (the
    // kernel then fills it as for kill(2)) and flags are 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphans below us are re-parented to us, not to init.
pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Resets every signal disposition to the default and unblocks every signal, so processes
/// cloned from here (containers) do not inherit Rust's ignored SIGPIPE or a blocked mask.
/// The raw `rt_sigaction` is used because glibc refuses to touch the two real-time signals it
/// reserves (32, 33), which can still arrive here ignored from whoever started us.
pub fn reset_signals() -> io::Result<()> {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // Failures (numbers the kernel refuses) are ignored on purpose.
        let _ = set_default_raw(sig);
    }
    // SAFETY: `set` is initialised by sigemptyset before use; the old set pointer is NULL.
    let ret = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn set_default_raw(sig: i32) -> io::Result<()> {
    /// The kernel's `struct sigaction` on these architectures (both have sa_restorer).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let sa = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: `sa` is a valid kernel sigaction with SIG_DFL (no handler and so no restorer
    // is needed), the old-action pointer is NULL and the sigset size is the kernel's (8).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &sa as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn set_default_raw(sig: i32) -> io::Result<()> {
    // SAFETY: a zeroed sigaction (empty mask, no flags) with SIG_DFL: no handler code runs.
    let ret = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the disposition of `sig` to "ignore" (for SIGPIPE in the keeper once the container
/// has been cloned).
pub fn ignore_signal(sig: i32) -> io::Result<()> {
    // SAFETY: as in reset_signals, with SIG_IGN: no handler code runs.
    let ret = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pseudo-terminal: (master, slave), both close-on-exec.
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        set_cloexec_raw(fd.as_raw_fd())?;
    }
    Ok((pty.master, pty.slave))
}

/// A new pseudo-terminal from the devpts instance under `root` (a container's root, e.g.
/// `/proc/<pid>/root`): (master, slave), both close-on-exec. A terminal of the container's own
/// `/dev/pts`, as runc's console is, so `tty` and `ttyname(3)` in the container name it
/// (`/dev/pts/0`); one from the host's devpts would be "not a tty" there. The slave is opened
/// with TIOCGPTPEER, without a path lookup in the container.
pub fn openpty_in(root: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(root.join("dev/pts/ptmx"))?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, valid for the call; the fd is open.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor we own.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a fresh descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

/// Sets the window size of the terminal `fd` (TIOCSWINSZ).
pub fn set_winsize(fd: BorrowedFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call; the
    // descriptor is borrowed and open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts a new session and makes the terminal on `fd` its controlling terminal (for a TTY
/// exec helper, so the terminal's signals reach the command).
pub fn make_controlling_tty(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: setsid takes no arguments and only changes this process's session.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); the descriptor is open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts an overlay at `target`. `lower` is given top layer first (overlayfs order).
pub fn mount_overlay(lower: &[&Path], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    overlay(lower, Some((upper, work)), target)
}

/// Mounts a read-only overlay of `lower` (top layer first, at least two: overlayfs needs an
/// upper folder otherwise) at `target`, with no upper folder (an image volume's view).
pub fn mount_overlay_ro(lower: &[&Path], target: &Path) -> io::Result<()> {
    overlay(lower, None, target)
}

fn overlay(lower: &[&Path], upper_work: Option<(&Path, &Path)>, target: &Path) -> io::Result<()> {
    if lower.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "overlay needs at least one lower layer",
        ));
    }
    let mut data = String::from("lowerdir=");
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            data.push(':');
        }
        data.push_str(&overlay_escape(l)?);
    }
    let flags = match upper_work {
        Some((upper, work)) => {
            data.push_str(",upperdir=");
            data.push_str(&overlay_escape(upper)?);
            data.push_str(",workdir=");
            data.push_str(&overlay_escape(work)?);
            nix::mount::MsFlags::empty()
        }
        None => nix::mount::MsFlags::MS_RDONLY,
    };
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(io::Error::from)
}

fn overlay_escape(p: &Path) -> io::Result<String> {
    let s = p
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "overlay path is not utf-8"))?;
    if s.contains([',', ':']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("overlay path {s} contains ',' or ':'"),
        ));
    }
    Ok(s.to_string())
}

/// Unmounts `target`; falls back to a lazy detach when it is busy. Not mounted is not an error.
pub fn unmount(target: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// The filesystem type (`f_type` of statfs) of the filesystem holding `path`.
pub fn fs_magic(path: &Path) -> io::Result<libc::c_long> {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as libc::c_long)
        .map_err(io::Error::from)
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_bytes();
    Ok(info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m).as_slice() == want)
    }))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Opens `path` (absolute or relative) inside `root` with `openat2(RESOLVE_IN_ROOT)`, so that
/// symlinks in an image (`/etc/passwd -> /host/file`) cannot escape the root.
pub fn open_in_root(root: &Path, path: &Path) -> io::Result<File> {
    let root_file = File::open(root)?;
    let c = cstring(path)?;
    // SAFETY: open_how is a plain C struct; zeroed is a valid value that we then fill in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the dirfd is valid while `root_file` lives, `c` is a nul-terminated string that
    // outlives the call, `how` points to an initialised open_how of the size we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_file.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(ret as RawFd) })
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Sets or clears FD_CLOEXEC on a raw fd we may or may not own (fd 3 of the keeper).
/// Returns `Ok(false)` when the fd is not open.
pub fn set_cloexec_raw(fd: RawFd) -> io::Result<bool> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    match fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EBADF) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Gives the C heap's free memory back to the kernel (glibc's `malloc_trim`): a keeper's
/// start-up (libcontainer, the spec, serde) leaves free heap behind that its long supervision
/// never reuses.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a plain size and only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives back what only start-up used: the C heap's free memory ([`trim_heap`]) and the pages of
/// this binary's code and read-only data, with `MADV_PAGEOUT` (Linux 5.4): they leave memory
/// (the page cache too, unless another process maps them) and are read from the file again if
/// ever needed. For the agent most of its resident code is start-up's (configuration, TLS
/// bootstrap, registration): ~6 of its ~9 MiB standalone. Returns the bytes advised; a kernel
/// without `MADV_PAGEOUT` or a caller that may not write the binary (the kernel's condition
/// for paging out file pages) gets nothing done, and no error.
pub fn release_startup_memory() -> usize {
    trim_heap();
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, end) in own_readonly_mappings(&maps, &exe.to_string_lossy()) {
        // SAFETY: the range is a whole mapping of this process, read from /proc/self/maps; it
        // is read-only (code, constants), so paging it out changes no content: a later access
        // faults it back in from the file.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if r == 0 {
            advised += end - start;
        }
    }
    advised
}

/// The address ranges in `maps` (`/proc/self/maps`) that map the file `exe` without write
/// permission.
fn own_readonly_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3)?;
            if path != exe || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// Opens /dev/null on any of fds 0, 1, 2 that is closed, so that no file of ours can land on
/// a standard fd (and be handed to a container as its stdio). The fds are kept open on purpose.
pub fn ensure_std_fds() {
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // Lowest free fd: this one, since the lower ones are open. Leaked on purpose.
            let _ = open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty());
        }
    }
}

/// Readiness of one fd after [`poll`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Data to read.
    pub readable: bool,
    /// Hang-up or error: the other side is gone (read until EOF).
    pub hangup: bool,
}

/// Polls `fds` for input. `None` as timeout waits forever. EINTR counts as "nothing ready".
pub fn poll(fds: &[BorrowedFd], timeout: Option<Duration>) -> io::Result<Vec<Ready>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    match nix::poll::poll(&mut pfds, t) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(vec![Ready::default(); fds.len()]),
        Err(e) => return Err(io::Error::from(e)),
    }
    Ok(pfds
        .iter()
        .map(|p| {
            let r = p.revents().unwrap_or(PollFlags::empty());
            Ready {
                readable: r.contains(PollFlags::POLLIN),
                hangup: r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL),
            }
        })
        .collect())
}

/// How a waited-for child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    Exited(i32),
    Signaled(i32),
    /// Still running (with WNOHANG).
    Running,
}

/// `waitpid(pid, WNOHANG)` for `pid` (or -1 for any child). Returns the pid and how it ended;
/// `None` when there is no child to wait for (ECHILD).
pub fn try_wait(pid: i32) -> io::Result<Option<(i32, WaitResult)>> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    loop {
        return match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) => Ok(Some((p.as_raw(), WaitResult::Exited(c)))),
            Ok(WaitStatus::Signaled(p, s, _)) => {
                Ok(Some((p.as_raw(), WaitResult::Signaled(s as i32))))
            }
            Ok(WaitStatus::StillAlive) => Ok(Some((pid, WaitResult::Running))),
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(io::Error::from(e)),
        };
    }
}

/// Reads `/proc/self/oom_score_adj`.
pub fn own_oom_score_adj() -> io::Result<i32> {
    let s = std::fs::read_to_string("/proc/self/oom_score_adj")?;
    s.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad oom_score_adj"))
}

/// Writes `/proc/self/oom_score_adj` (lowering it needs CAP_SYS_RESOURCE).
pub fn set_own_oom_score_adj(v: i32) -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", v.to_string())
}

/// The current process' (soft, hard) RLIMIT_NOFILE.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(io::Error::from)
}

/// The soft RLIMIT_NOFILE the agent raises itself to, if any: its hard limit, capped at the
/// kernel's `fs.nr_open` (a soft limit above it is refused, and an unlimited hard limit is
/// common). The agent keeps about one descriptor per running pod (1,011 with 1,000), so a
/// shell's usual soft 1024 stops it near 1,000 pods; Go programs (the kubelet, containerd)
/// get the same raise from their runtime. `None`: already there, or nothing to gain.
pub fn nofile_soft_target(soft: u64, hard: u64, nr_open: u64) -> Option<u64> {
    let target = hard.min(nr_open);
    (target > soft).then_some(target)
}

/// Raises this process' soft RLIMIT_NOFILE as [`nofile_soft_target`] says (no privilege
/// needed: only up to the hard limit); children inherit it, as they do the 1048576 of
/// bosun.service. Returns (old soft, new soft) when it changed something.
pub fn raise_nofile_soft_limit() -> io::Result<Option<(u64, u64)>> {
    use nix::sys::resource::{setrlimit, Resource};
    let (soft, hard) = nofile_limit()?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    match nofile_soft_target(soft, hard, nr_open) {
        Some(target) => {
            setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(io::Error::from)?;
            Ok(Some((soft, target)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn nofile_soft_target_raises_to_hard_capped_at_nr_open() {
        let inf = u64::MAX; // RLIM_INFINITY
        for (soft, hard, nr_open, want) in [
            (1024, 524_288, 1_048_576, Some(524_288)), // a shell's 1024: up to the hard limit
            (1024, inf, 1_048_576, Some(1_048_576)),   // unlimited hard: nr_open
            (1024, 4096, 2048, Some(2048)),            // nr_open below the hard limit
            (20_000, 20_000, 1_048_576, None),         // already at the hard limit
            (1_048_576, inf, 1_048_576, None),         // bosun.service: already at nr_open
            (4096, 1024, 1_048_576, None),             // never lowered
            (2048, 4096, 1024, None),                  // nr_open below soft: left alone
        ] {
            assert_eq!(
                nofile_soft_target(soft, hard, nr_open),
                want,
                "soft {soft} hard {hard} nr_open {nr_open}"
            );
        }
    }

    #[test]
    fn pidfd_of_self_child_becomes_readable_on_exit() {
        // A child that lives long enough to be opened: another test of this process may run
        // a reaper (waitpid(-1)) that takes an exited child before pidfd_open could.
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("spawn");
        let fd = pidfd_open(child.id() as i32).expect("pidfd_open");
        let ready = poll(&[fd.as_fd()], Some(Duration::from_secs(5))).expect("poll");
        assert!(ready[0].readable);
        // Signalling a zombie is fine (ESRCH is not returned before it is reaped).
        let _ = pidfd_send_signal(fd.as_fd(), 0);
        let _ = child.wait();
    }

    #[test]
    fn pidfd_send_signal_kills() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let fd = pidfd_open(child.id() as i32).expect("pidfd_open");
        pidfd_send_signal(fd.as_fd(), libc::SIGKILL).expect("signal");
        let st = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), b"/a b");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
        assert_eq!(unescape_mountinfo("/x\\134"), b"/x\\");
        assert_eq!(unescape_mountinfo("/end\\"), b"/end\\");
    }

    #[test]
    fn readonly_mappings_of_the_binary() {
        let maps = "\
55d0a000-55d0b000 r--p 00000000 08:01 42 /usr/bin/bosun
55d0b000-55d0f000 r-xp 00001000 08:01 42 /usr/bin/bosun
55d0f000-55d10000 rw-p 00005000 08:01 42 /usr/bin/bosun
55d10000-55d11000 r--p 00000000 08:01 43 /usr/bin/bosun-keeper
7f00000-7f01000 r-xp 00000000 08:01 44 /usr/lib/libc.so.6
7f01000-7f02000 rw-p 00000000 00:00 0
";
        assert_eq!(
            own_readonly_mappings(maps, "/usr/bin/bosun"),
            vec![(0x55d0a000, 0x55d0b000), (0x55d0b000, 0x55d0f000)]
        );
    }

    /// The pages of this test binary's code leave its resident set.
    #[test]
    fn release_startup_memory_pages_out_the_binary() {
        let rss_file = || {
            std::fs::read_to_string("/proc/self/status")
                .expect("status")
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .expect("RssFile")
        };
        let before = rss_file();
        let advised = release_startup_memory();
        let after = rss_file();
        assert!(advised > 0, "nothing advised");
        assert!(
            after < before,
            "file-backed RSS {before} KiB -> {after} KiB"
        );
    }

    #[test]
    fn open_in_root_stays_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("etc/inside"), "in").expect("write");
        std::os::unix::fs::symlink("/etc/inside", dir.path().join("etc/link")).expect("link");
        let mut s = String::new();
        use std::io::Read;
        open_in_root(dir.path(), Path::new("/etc/link"))
            .expect("open")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "in");
    }

    #[test]
    fn overlay_rejects_bad_paths() {
        let e = mount_overlay(
            &[Path::new("/a:b")],
            Path::new("/u"),
            Path::new("/w"),
            Path::new("/t"),
        );
        assert!(e.is_err());
        assert!(mount_overlay(&[], Path::new("/u"), Path::new("/w"), Path::new("/t")).is_err());
    }
}
