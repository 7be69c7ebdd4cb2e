//! How the container's init runs the payload: libcontainer's default executor, except that a
//! failed `execvp` (`argument list too long`, `permission denied`, a missing interpreter...) is
//! told to the keeper instead of lost.
//!
//! The init execs only after `start()` has returned, so libcontainer has nobody left to tell
//! (its channel to the keeper is closed by then): the init exits 255 and the reason is gone.
//! Here the init writes the reason to a pipe the keeper made before `build()` (the init is
//! cloned, not exec'd, so it has the write end; libcontainer marks it close-on-exec with every
//! other descriptor, so a payload that runs never sees it and its end closes). The keeper reads
//! the pipe once the init has exited: a message there means the payload never started, which
//! is recorded as a start error with the exit code runc's callers report (128).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};

/// The exit code of a container whose process could not be started.
pub const START_ERROR_CODE: i32 = 128;

/// Runs the payload as [`DefaultExecutor`] does; reports an exec failure on `report`.
#[derive(Clone)]
pub struct ReportingExecutor {
    /// The write end of the keeper's report pipe, as numbered in the init.
    report: RawFd,
}

impl ReportingExecutor {
    pub fn new(report: &OwnedFd) -> ReportingExecutor {
        ReportingExecutor {
            report: report.as_raw_fd(),
        }
    }

    fn report(&self, message: &str) {
        // SAFETY: `report` is the write end the keeper created before build() and keeps open
        // until build() returns; the init is a clone of the keeper and has it at the same number.
        let fd = unsafe { BorrowedFd::borrow_raw(self.report) };
        let _ = nix::unistd::write(fd, message.as_bytes());
    }
}

/// Go's wording of an exec failure, as runc reports it (`exec: "sh": argument list too long`).
pub fn exec_failure(executable: &str, errno: nix::errno::Errno) -> String {
    format!("exec: {executable:?}: {}", errno.desc().to_lowercase())
}

impl Executor for ReportingExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let c = |s: &str| CString::new(s.as_bytes()).map_err(|_| ExecutorError::InvalidArg);
        let executable = c(&args[0])?;
        let argv = args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
        let Err(errno) = nix::unistd::execvp(&executable, &argv);
        let message = exec_failure(&args[0], errno);
        self.report(&message);
        Err(ExecutorError::Other(message))
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}

/// What the init reported, once it has exited (every write end is closed by then): the
/// payload's exec failure, or None when it ran.
pub fn read_report(read_end: OwnedFd) -> Option<String> {
    let mut f = std::fs::File::from(read_end);
    if let Err(e) = crate::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&f)) {
        eprintln!("keeper: non-blocking report pipe: {e}");
    }
    let mut buf = Vec::new();
    let _ = f.by_ref().take(64 * 1024).read_to_end(&mut buf);
    let msg = String::from_utf8_lossy(&buf).trim().to_string();
    (!msg.is_empty()).then_some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_read_as_runcs() {
        assert_eq!(
            exec_failure("sh", nix::errno::Errno::E2BIG),
            "exec: \"sh\": argument list too long"
        );
        assert_eq!(
            exec_failure("/bin/app", nix::errno::Errno::EACCES),
            "exec: \"/bin/app\": permission denied"
        );
    }

    #[test]
    fn the_report_is_what_was_written_and_nothing_when_closed() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        ReportingExecutor::new(&w).report("exec: \"x\": argument list too long");
        drop(w);
        assert_eq!(
            read_report(r).as_deref(),
            Some("exec: \"x\": argument list too long")
        );
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        drop(w);
        assert_eq!(read_report(r), None);
    }
}
