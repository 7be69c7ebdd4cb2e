//! Running a command in a running container through `bosun __exec` (see [`crate::exec`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::proc::{self, ProcHandle};
use super::HostRuntime;
use crate::exec::{EXEC_SUBCOMMAND, STATUS_FD};
use crate::ContainerState;

/// At most this much of each stream is kept (the rest is read and dropped).
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024;
/// After the helper exited, how long its pipes may stay open (a background process of the
/// command holding them) before we stop reading.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// What a command run in a container produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code (128 + signal when signalled).
    pub code: i32,
    /// First 16 KiB of stdout.
    pub stdout: Vec<u8>,
    /// First 16 KiB of stderr.
    pub stderr: Vec<u8>,
}

/// Running a command in a container failed (the command itself failing is an [`ExecOutput`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("exec in container {id}: empty command")]
    EmptyCommand { id: String },
    #[error("spawn exec helper for container {id}")]
    Spawn {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("exec in container {id}: {message}")]
    Helper { id: String, message: String },
    #[error("exec in container {id} timed out after {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    #[error("exec in container {id}: read output")]
    Io {
        id: String,
        #[source]
        source: io::Error,
    },
}

impl HostRuntime {
    /// Runs `argv` in the running container `id` (its env, user and working folder), at most for
    /// `timeout`; on timeout the process and the helper are killed.
    #[tracing::instrument(skip(self, argv), fields(container = %id))]
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let cmd = self.exec_command(id, argv, None)?;
        run_helper(id, cmd, timeout).await
    }

    /// `<helper> __exec [flag] <state> <id> "" -- argv` for the running container `id`.
    fn exec_command(
        &self,
        id: &str,
        argv: &[String],
        flag: Option<&str>,
    ) -> Result<Command, ExecError> {
        let inner = &self.inner;
        let status = inner
            .status(id)
            .ok_or_else(|| ExecError::NotFound { id: id.to_string() })?;
        if !matches!(status.state, ContainerState::Running { .. }) {
            return Err(ExecError::NotRunning { id: id.to_string() });
        }
        if argv.is_empty() {
            return Err(ExecError::EmptyCommand { id: id.to_string() });
        }
        let dir = inner.containers_dir().join(id);
        let mut cmd = Command::new(&inner.paths.helper_binary);
        cmd.arg(EXEC_SUBCOMMAND);
        if let Some(flag) = flag {
            cmd.arg(flag);
        }
        cmd.arg(dir.join("state"))
            .arg(id)
            .arg("")
            .arg("--")
            .args(argv);
        Ok(cmd)
    }
}

/// A command running in a container with its stdio as pipes (`kubectl exec`), started by
/// [`HostRuntime::exec_streaming`]. Dropping it kills the command if it still runs.
pub struct ExecSession {
    id: String,
    /// The command's stdin (when asked for); drop it to close the command's stdin.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    status: Option<OwnedFd>,
    exit: Option<tokio::sync::oneshot::Receiver<crate::reaper::Exit>>,
    helper: Option<ProcHandle>,
    target: Option<ProcHandle>,
    helper_pid: i32,
    error: Option<String>,
    done: bool,
    /// The master side of the command's terminal (TTY sessions).
    terminal: Option<OwnedFd>,
}

impl ExecSession {
    /// Waits until the command runs; an error if the helper could not start it.
    pub async fn started(&mut self) -> Result<(), ExecError> {
        if let Some(rd) = self.status.take() {
            let line = read_line(rd).await.unwrap_or_default();
            if let Some(pid) = line
                .strip_prefix("pid ")
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                if let Ok(fd) = proc::pidfd_open(pid) {
                    if parent_of(pid) == Some(self.helper_pid) {
                        self.target = ProcHandle::new(pid, fd).ok();
                    }
                }
            } else {
                let message = line.strip_prefix("error").unwrap_or(&line).trim();
                self.error = Some(if message.is_empty() {
                    "the exec helper did not start the command".to_string()
                } else {
                    message.to_string()
                });
            }
        }
        match &self.error {
            Some(message) => Err(ExecError::Helper {
                id: self.id.clone(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Waits for the command's exit code (128 + signal when signalled).
    pub async fn wait(&mut self) -> Result<i32, ExecError> {
        self.started().await?;
        let exit = match self.exit.take() {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        self.done = true;
        match exit {
            Some(e) => Ok(e.code()),
            None => Err(ExecError::Helper {
                id: self.id.clone(),
                message: "helper exit status lost".to_string(),
            }),
        }
    }

    /// For a TTY session: the terminal's master, twice (one to read the command's output, one
    /// to write its input); `None` without a terminal.
    pub fn terminal(&self) -> io::Result<Option<(std::fs::File, std::fs::File)>> {
        match &self.terminal {
            Some(m) => Ok(Some((m.try_clone()?.into(), m.try_clone()?.into()))),
            None => Ok(None),
        }
    }

    /// A handle that resizes a TTY session's terminal while the session is waited on.
    pub fn resizer(&self) -> Option<TerminalResizer> {
        let fd = self.terminal.as_ref()?.try_clone().ok()?;
        Some(TerminalResizer { fd })
    }

    /// Sets the window size of a TTY session's terminal (no-op without one).
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        match &self.terminal {
            Some(m) => crate::sys::set_winsize(m.as_fd(), cols, rows),
            None => Ok(()),
        }
    }

    /// Kills the command and the helper.
    pub fn kill(&self) {
        if let Some(t) = &self.target {
            let _ = t.signal(libc::SIGKILL);
        }
        if let Some(h) = &self.helper {
            let _ = h.signal(libc::SIGKILL);
        }
    }
}

/// Resizes the terminal of a TTY exec session.
pub struct TerminalResizer {
    fd: OwnedFd,
}

impl TerminalResizer {
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        crate::sys::set_winsize(self.fd.as_fd(), cols, rows)
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

impl HostRuntime {
    /// Starts `argv` in the running container `id` with stdout and stderr as pipes and, when
    /// `stdin`, a pipe for its stdin too; with `tty`, a terminal for all three instead (see
    /// [`ExecSession::terminal`]). Nothing bounds its run time: the caller kills it (or drops
    /// the session) when its client goes away.
    #[tracing::instrument(skip(self, argv), fields(container = %id))]
    pub fn exec_streaming(
        &self,
        id: &str,
        argv: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<ExecSession, ExecError> {
        let flag = if tty {
            Some(crate::exec::TTY_FLAG)
        } else if stdin {
            Some(crate::exec::STDIN_FLAG)
        } else {
            None
        };
        let cmd = self.exec_command(id, argv, flag)?;
        let terminal = if tty {
            // The container's own devpts (as runc's console), the host's when it has none.
            let pid = match self.inner.status(id).map(|s| s.state) {
                Some(ContainerState::Running { pid, .. }) => Some(pid),
                _ => None,
            };
            let own = pid.and_then(|pid| {
                crate::sys::openpty_in(Path::new(&format!("/proc/{pid}/root")))
                    .inspect_err(
                        |e| tracing::debug!(error = %e, "no terminal of the container's devpts"),
                    )
                    .ok()
            });
            match own {
                Some(t) => Some(t),
                None => Some(crate::sys::openpty().map_err(|source| ExecError::Spawn {
                    id: id.to_string(),
                    source,
                })?),
            }
        } else {
            None
        };
        spawn_streaming(id, cmd, stdin, terminal)
    }
}

/// Spawns the exec helper `cmd` with pipes for its stdio and the status pipe on fd 3.
pub(crate) fn spawn_streaming(
    id: &str,
    mut cmd: Command,
    stdin: bool,
    terminal: Option<(OwnedFd, OwnedFd)>,
) -> Result<ExecSession, ExecError> {
    let spawn_err = |source| ExecError::Spawn {
        id: id.to_string(),
        source,
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err(io::Error::from(e)))?;
    let wr_raw = wr.as_raw_fd();
    let master = match terminal {
        Some((master, slave)) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(spawn_err);
            cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(slave);
            Some(master)
        }
        None => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    // SAFETY: as in `run_helper`: only async-signal-safe dup2/fcntl in the forked child.
    unsafe {
        cmd.pre_exec(move || {
            if wr_raw == STATUS_FD {
                if libc::fcntl(wr_raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(wr_raw, STATUS_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut child, exit_rx) = crate::reaper::spawn(&mut cmd).map_err(spawn_err)?;
    drop(wr);
    // The slave's copies in `cmd` are closed with it, so the master sees EOF (EIO) once the
    // command and the helper are gone.
    drop(cmd);
    let helper_pid = child.id() as i32;
    let helper = proc::pidfd_open(helper_pid)
        .ok()
        .and_then(|fd| ProcHandle::new(helper_pid, fd).ok());
    Ok(ExecSession {
        terminal: master,
        id: id.to_string(),
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        status: Some(rd),
        exit: Some(exit_rx),
        helper,
        target: None,
        helper_pid,
        error: None,
        done: false,
    })
}

/// Runs the exec helper `cmd` with a status pipe on fd 3 (`pid <n>` or `error <msg>`),
/// collecting capped output, bounded by `timeout`.
pub(crate) async fn run_helper(
    id: &str,
    mut cmd: Command,
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let spawn_err = |source| ExecError::Spawn {
        id: id.to_string(),
        source,
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err(io::Error::from(e)))?;
    let wr_raw = wr.as_raw_fd();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; only async-signal-safe libc calls (dup2,
    // fcntl) on a descriptor the parent keeps open until spawn returns; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if wr_raw == STATUS_FD {
                if libc::fcntl(wr_raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(wr_raw, STATUS_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut child, exit_rx) = crate::reaper::spawn(&mut cmd).map_err(spawn_err)?;
    drop(wr);
    let helper_pid = child.id() as i32;
    // Opened right away: the helper cannot be reaped before it exits.
    let helper = proc::pidfd_open(helper_pid)
        .ok()
        .and_then(|fd| ProcHandle::new(helper_pid, fd).ok());
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);

    // The exec'd process, once the helper names it.
    let target: std::sync::Mutex<Option<ProcHandle>> = std::sync::Mutex::new(None);
    let status = async {
        let line = read_line(rd).await.unwrap_or_default();
        if let Some(pid) = line
            .strip_prefix("pid ")
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // Still the helper's child (the helper has not waited yet) unless it already exited;
            // checked after opening the pidfd so a reused pid is not taken for it.
            if let Ok(fd) = proc::pidfd_open(pid) {
                if parent_of(pid) == Some(helper_pid) {
                    if let Ok(h) = ProcHandle::new(pid, fd) {
                        *target.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
                    }
                }
            }
        }
        line
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let kill = || {
        if let Some(t) = target.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = t.signal(libc::SIGKILL);
        }
        if let Some(h) = &helper {
            let _ = h.signal(libc::SIGKILL);
        }
    };
    let outcome = {
        let reads = async {
            let (o, e) = tokio::join!(read_capped(stdout, &mut out), read_capped(stderr, &mut err));
            o.and(e)
        };
        let run = async {
            // The helper names the process (or fails) before the command can produce output
            // that would block it, so the line comes first.
            let line = status.await;
            tokio::pin!(reads);
            let mut exit_rx = exit_rx;
            tokio::select! {
                r = &mut reads => (line, Some(r), (&mut exit_rx).await.ok()),
                e = &mut exit_rx => {
                    // Reading ends at EOF; a background process of the command may keep the
                    // pipes open, so what is left is bounded once the helper is gone.
                    let r = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reads).await.ok();
                    (line, r, e.ok())
                }
            }
        };
        tokio::time::timeout(timeout, run).await
    };
    match outcome {
        Err(_) => {
            tracing::info!(?timeout, "exec timed out, killing it");
            kill();
            Err(ExecError::Timeout {
                id: id.to_string(),
                timeout,
            })
        }
        Ok((line, read, exit)) => {
            if let Some(Err(source)) = read {
                return Err(ExecError::Io {
                    id: id.to_string(),
                    source,
                });
            }
            finish(id, line, exit, out, err)
        }
    }
}

fn finish(
    id: &str,
    line: String,
    exit: Option<crate::reaper::Exit>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> Result<ExecOutput, ExecError> {
    if let Some(message) = line.strip_prefix("error") {
        return Err(ExecError::Helper {
            id: id.to_string(),
            message: message.trim().to_string(),
        });
    }
    let code = match exit {
        Some(e) => e.code(),
        None => {
            return Err(ExecError::Helper {
                id: id.to_string(),
                message: "helper exit status lost".to_string(),
            })
        }
    };
    if !line.starts_with("pid ") && code != 0 {
        // The helper failed before running anything and did not say why on fd 3.
        let message = String::from_utf8_lossy(&stderr).trim().to_string();
        return Err(ExecError::Helper {
            id: id.to_string(),
            message: if message.is_empty() {
                format!("helper exited with code {code}")
            } else {
                message
            },
        });
    }
    Ok(ExecOutput {
        code,
        stdout,
        stderr,
    })
}

/// The parent pid of `pid` from /proc.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

async fn read_line(fd: OwnedFd) -> io::Result<String> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut buf = Vec::new();
    read_capped_from(&mut rx, &mut buf, 4096).await?;
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

async fn read_capped(fd: Option<OwnedFd>, buf: &mut Vec<u8>) -> io::Result<()> {
    let Some(fd) = fd else { return Ok(()) };
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    read_capped_from(&mut rx, buf, EXEC_OUTPUT_CAP).await
}

/// Reads to EOF, keeping the first `cap` bytes.
async fn read_capped_from<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capped_read_keeps_the_head() {
        let data = vec![7u8; 40_000];
        let mut r = &data[..];
        let mut buf = Vec::new();
        read_capped_from(&mut r, &mut buf, EXEC_OUTPUT_CAP)
            .await
            .expect("read");
        assert_eq!(buf.len(), EXEC_OUTPUT_CAP);
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[tokio::test]
    async fn helper_output_and_code() {
        crate::reaper::install().expect("reaper");
        let out = run_helper(
            "c1",
            sh("echo pid $$ >&3; exec 3>&-; echo out; echo err >&2; exit 4"),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
        assert_eq!(out.code, 4);
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[tokio::test]
    async fn streaming_session_pipes_and_code() {
        use tokio::io::AsyncWriteExt;
        crate::reaper::install().expect("reaper");
        let mut s = spawn_streaming(
            "c1",
            sh("echo pid $$ >&3; exec 3>&-; read x; echo got $x; echo err >&2; exit 5"),
            true,
            None,
        )
        .expect("spawn");
        s.started().await.expect("started");
        let stdin = s.stdin.take().expect("stdin");
        let mut tx = tokio::net::unix::pipe::Sender::from_owned_fd(stdin).expect("pipe");
        tx.write_all(b"hello\n").await.expect("write");
        drop(tx);
        let mut out = Vec::new();
        let mut err = Vec::new();
        read_capped(s.stdout.take(), &mut out).await.expect("out");
        read_capped(s.stderr.take(), &mut err).await.expect("err");
        assert_eq!(out, b"got hello\n");
        assert_eq!(err, b"err\n");
        assert_eq!(s.wait().await.expect("wait"), 5);
        let mut s = spawn_streaming(
            "c1",
            sh("echo 'error no such container' >&3; exit 126"),
            false,
            None,
        )
        .expect("spawn");
        assert!(matches!(s.started().await, Err(ExecError::Helper { .. })));
    }

    #[tokio::test]
    async fn streaming_session_with_a_terminal() {
        use std::io::{Read, Write};
        crate::reaper::install().expect("reaper");
        // A terminal of a devpts instance by its root (the host's here, a container's in
        // exec_streaming): `tty` names it. Without root the host's ptmx may be closed to us.
        let own = crate::sys::openpty_in(std::path::Path::new("/")).ok();
        let named = own.is_some();
        let pty = own.unwrap_or_else(|| crate::sys::openpty().expect("pty"));
        let mut s = spawn_streaming(
            "c1",
            // `stty size` after the read: the size is set before our input is written, but
            // the shell may reach its first commands before `resize` runs.
            sh("echo pid $$ >&3; exec 3>&-; [ -t 0 ] && echo is-a-tty; tty; read x; stty size; echo got-$x"),
            true,
            Some(pty),
        )
        .expect("spawn");
        s.resize(100, 30).expect("resize");
        s.started().await.expect("started");
        let (mut r, mut w) = s.terminal().expect("dup").expect("terminal");
        w.write_all(b"abc\n").expect("write");
        let out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            // EIO once the slave is closed everywhere: the end of the output.
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&out).into_owned()
        });
        assert_eq!(s.wait().await.expect("wait"), 0);
        drop(s);
        let out = out.await.expect("join");
        assert!(out.contains("is-a-tty"), "{out:?}");
        assert!(out.contains("30 100"), "{out:?}");
        assert!(out.contains("got-abc"), "{out:?}");
        assert!(!named || out.contains("/dev/pts/"), "{out:?}");
    }

    #[tokio::test]
    async fn helper_error_line_is_an_error() {
        crate::reaper::install().expect("reaper");
        let r = run_helper(
            "c1",
            sh("echo 'error container not running' >&3; exit 126"),
            Duration::from_secs(10),
        )
        .await;
        match r {
            Err(ExecError::Helper { message, .. }) => assert_eq!(message, "container not running"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn helper_timeout_kills_the_process() {
        crate::reaper::install().expect("reaper");
        let started = std::time::Instant::now();
        // The helper forks a child (the "exec'd process"), names it, and waits for it.
        let r = run_helper(
            "c1",
            sh("sleep 30 & echo pid $! >&3; exec 3>&-; wait"),
            Duration::from_millis(500),
        )
        .await;
        assert!(matches!(r, Err(ExecError::Timeout { .. })), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn background_process_holding_pipes_does_not_hang() {
        crate::reaper::install().expect("reaper");
        let started = std::time::Instant::now();
        let out = run_helper(
            "c1",
            sh("echo pid $$ >&3; exec 3>&-; sleep 5 & echo done"),
            Duration::from_secs(20),
        )
        .await
        .expect("exec");
        assert_eq!(out.stdout, b"done\n");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
