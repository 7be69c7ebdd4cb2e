//! The one place the agent's children are reaped.
//!
//! Every child the agent starts (keepers, helpers) is spawned through [`spawn`], which registers
//! its pid; a task woken by SIGCHLD calls `waitpid(-1, WNOHANG)` until nothing is left and sends
//! each status to whoever registered that pid. Exits of unknown pids (orphans re-parented to us
//! as a child subreaper) are simply reaped. Because this loop reaps every child, nothing else in
//! the agent may wait for children: never use `tokio::process` or `std::process::Child::wait`.
//! (containerd's rust-extensions reap.rs / monitor.rs follow the same rule.)

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    /// Exits reaped before their spawner registered (the child was very quick).
    unclaimed: HashMap<i32, Exit>,
}

fn registry() -> &'static Mutex<Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// Spawns `cmd` and returns the child (for its pipes) and a receiver for its exit.
/// [`install`] must have been called inside the tokio runtime.
pub fn spawn(cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<Exit>)> {
    let (tx, rx) = oneshot::channel();
    // Hold the lock across spawn so the reaper cannot see this pid before it is registered.
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    if let Some(exit) = reg.unclaimed.remove(&pid) {
        let _ = tx.send(exit);
    } else {
        reg.waiting.insert(pid, tx);
    }
    Ok((child, rx))
}

/// Reaps every child that has exited and dispatches its status. Returns how many were reaped.
pub fn reap_now() -> usize {
    let mut n = 0;
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return n,
            Ok(_) => continue,
        };
        n += 1;
        let (pid, exit) = status;
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        match reg.waiting.remove(&pid.as_raw()) {
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => {
                tracing::debug!(pid = pid.as_raw(), ?exit, "reaped unregistered child");
                // Keep it briefly for a spawner that has not registered yet; bounded.
                if reg.unclaimed.len() > 1024 {
                    reg.unclaimed.clear();
                }
                reg.unclaimed.insert(pid.as_raw(), exit);
            }
        }
    }
}

/// Starts the reaping task. Call once, from within the tokio runtime, before spawning children.
pub fn install() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_now();
            // A timer as well as the signal: signals coalesce, and a missed one must not strand
            // a zombie.
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        }
    });
    Ok(())
}

/// Runs `cmd` to completion, collecting stdout and stderr (for short-lived helpers).
pub async fn output(cmd: &mut Command) -> std::io::Result<(Exit, Vec<u8>, Vec<u8>)> {
    output_with_input(cmd, None).await
}

/// Like [`output`], feeding `input` on stdin (None: stdin is /dev/null). A child that exits
/// without reading its stdin is not an error by itself.
pub async fn output_with_input(
    cmd: &mut Command,
    input: Option<&[u8]>,
) -> std::io::Result<(Exit, Vec<u8>, Vec<u8>)> {
    use std::process::Stdio;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let (mut child, rx) = spawn(cmd)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = async {
        if let (Some(s), Some(input)) = (stdin, input) {
            let mut p = tokio::net::unix::pipe::Sender::from_owned_fd(s.into())?;
            p.write_all(input).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    async fn read_all(pipe: Option<impl Into<std::os::fd::OwnedFd>>) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        if let Some(s) = pipe {
            let mut p = tokio::net::unix::pipe::Receiver::from_owned_fd(s.into())?;
            p.read_to_end(&mut buf).await?;
        }
        Ok(buf)
    }
    let (w, out, err) = tokio::join!(write, read_all(stdout), read_all(stderr));
    if let Err(e) = w {
        tracing::debug!(error = %e, "writing a child's stdin");
    }
    let (out, err) = (out?, err?);
    let exit = rx
        .await
        .map_err(|_| std::io::Error::other("reaper dropped the child"))?;
    Ok((exit, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_reports_code_and_streams() {
        install().expect("install");
        let (exit, out, err) =
            output(Command::new("sh").args(["-c", "echo hi; echo oops >&2; exit 3"]))
                .await
                .expect("run");
        assert_eq!(exit, Exit::Code(3));
        assert_eq!(out, b"hi\n");
        assert_eq!(err, b"oops\n");
    }
}
