//! Process handles for the runtime: pidfds (against pid reuse), liveness checks through `/proc`,
//! and waiting for a process to exit without being its reaper.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

pub(crate) use crate::sys::{pidfd_open, pidfd_send_signal};

/// Sends a signal through a pidfd, treating "already gone" as success.
pub(crate) fn signal_pidfd(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    match pidfd_send_signal(fd, sig) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}

/// A process we hold a pidfd on; `exited` resolves once it has exited (zombie or reaped).
pub(crate) struct ProcHandle {
    pub pid: i32,
    fd: AsyncFd<OwnedFd>,
}

impl ProcHandle {
    /// Wraps a pidfd; must be called inside the tokio runtime.
    pub fn new(pid: i32, fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: an `OwnedFd` is a valid open descriptor that it alone owns; it is moved into
        // the AsyncFd, so it stays open and returns the same fd until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(ProcHandle { pid, fd })
    }

    /// Resolves when the process has exited.
    pub async fn exited(&self) {
        // A pidfd becomes readable (and stays so) once the process exits. If registration
        // failed somehow, fall back to polling.
        loop {
            match self.fd.readable().await {
                Ok(_guard) => return,
                Err(_) => {
                    if !self.alive() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Whether the process still runs (non-blocking poll of the pidfd).
    pub fn alive(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd on our stack for the duration of the call, nfds is 1
        // and the timeout 0 makes it non-blocking.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        !(r > 0 && pfd.revents != 0)
    }

    pub fn signal(&self, sig: i32) -> io::Result<()> {
        signal_pidfd(self.fd.get_ref().as_fd(), sig)
    }

    /// Waits up to `limit` for the exit. Returns whether it exited.
    pub async fn wait_timeout(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.exited()).await.is_ok()
    }
}

/// The NUL-separated command line of `pid` (empty for zombies and kernel threads).
pub(crate) fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is a live keeper for the container folder `dir` (`<bin> __keeper <dir>`).
/// Guards against pid reuse: another process with the same pid does not have that command line.
pub(crate) fn is_keeper(pid: i32, dir: &Path) -> bool {
    if pid <= 0 {
        return false;
    }
    let args = cmdline(pid);
    let dir = dir.to_string_lossy();
    args.iter().position(|a| a == "__keeper").is_some_and(|i| {
        args.get(i + 1)
            .is_some_and(|d| d.trim_end_matches('/') == dir.trim_end_matches('/'))
    })
}

/// Opens a pidfd on the keeper of `dir` (pid from `keeper.pid`) if it is alive.
pub(crate) fn open_keeper(dir: &Path) -> Option<ProcHandle> {
    let pid: i32 = std::fs::read_to_string(dir.join(crate::keeper::PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let fd = pidfd_open(pid).ok()?;
    // Checked after opening: if the pid was reused before the open, the check fails; if the
    // process dies after the check, the pidfd still names it and simply reports the exit.
    if !is_keeper(pid, dir) {
        return None;
    }
    ProcHandle::new(pid, fd).ok()
}

/// Whether the keeper of `dir` runs (synchronous check, for listing).
pub(crate) fn keeper_alive(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(crate::keeper::PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|pid| is_keeper(pid, dir))
}

/// Start time of `pid` as wall-clock time (from `/proc/<pid>/stat` and the boot time).
pub(crate) fn start_time(pid: i32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts with " state ..." = field 3; starttime is field 22 -> index 19 in `rest`.
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    let since_boot = Duration::from_millis(ticks.saturating_mul(1000) / hz);
    Some(UNIX_EPOCH + Duration::from_secs(btime) + since_boot)
}

/// Whether `pid` is still a process that started no later than `started_at` (plus slack for the
/// second granularity of the boot time): a reused pid belongs to a process started after the
/// original one died, so it fails this check.
pub(crate) fn started_by(pid: i32, started_at: SystemTime) -> bool {
    match start_time(pid) {
        Some(t) => t <= started_at + Duration::from_secs(2),
        None => false,
    }
}

/// Opens a pidfd on the container process `pid` recorded in `started.json`, if it is still that
/// process.
pub(crate) fn open_container(pid: i32, started_at: SystemTime) -> Option<ProcHandle> {
    if pid <= 0 {
        return None;
    }
    let fd = pidfd_open(pid).ok()?;
    if !started_by(pid, started_at) {
        return None;
    }
    ProcHandle::new(pid, fd).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_in_the_past() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("start time");
        assert!(t <= SystemTime::now() + Duration::from_secs(2));
        assert!(started_by(me, SystemTime::now()));
        assert!(!started_by(me, UNIX_EPOCH));
    }

    #[test]
    fn keeper_check_needs_matching_cmdline() {
        let me = std::process::id() as i32;
        assert!(!is_keeper(me, Path::new("/nonexistent")));
        assert!(!is_keeper(0, Path::new("/")));
    }

    #[tokio::test]
    async fn pidfd_of_self_is_alive() {
        let me = std::process::id() as i32;
        let h = ProcHandle::new(me, pidfd_open(me).expect("pidfd")).expect("handle");
        assert!(h.alive());
        assert!(!h.wait_timeout(Duration::from_millis(20)).await);
        h.signal(0).expect("signal 0");
    }
}
