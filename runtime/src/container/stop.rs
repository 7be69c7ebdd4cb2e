//! Stopping a container, and finalising one whose keeper vanished.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::proc::{self, ProcHandle};
use super::{disk, HostRuntime, Inner};
use crate::keeper::{Started, EXIT_FILE};
use crate::ExitInfo;

/// `start_error` recorded for a container whose keeper died without recording an exit.
pub(crate) const KEEPER_DIED: &str = "keeper died";
/// Exit code recorded for such a container (as if SIGKILLed).
const LOST_CODE: i32 = 137;
/// Exit code recorded for a container that never started.
const START_FAILED_CODE: i32 = 128;
/// How long the keeper may take to record the exit and clean up after the SIGKILL.
const KEEPER_FINISH: Duration = Duration::from_secs(15);
/// How long a killed container process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Stopping a container failed.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("signal container {id} (pid {pid})")]
    Signal {
        id: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

impl HostRuntime {
    /// Sends `signal` to the container's init, waits up to `grace` for it to exit, then kills
    /// every process of the container, waits for the keeper to finish and returns the exit.
    /// Stopping an exited container returns its [`ExitInfo`].
    #[tracing::instrument(skip(self), fields(container = %id))]
    pub async fn stop_container(
        &self,
        id: &str,
        signal: i32,
        grace: Duration,
    ) -> Result<ExitInfo, StopError> {
        let inner = &self.inner;
        let not_found = || StopError::NotFound { id: id.to_string() };
        let dir = inner.container_dir(id).ok_or_else(not_found)?;
        if !dir.is_dir() {
            return Err(not_found());
        }
        if let Some(info) = disk::read_exit(&dir) {
            return Ok(info);
        }
        let keeper = match proc::open_keeper(&dir) {
            Some(k) => k,
            None if inner.is_starting(id) => {
                // start_container is spawning the keeper: let it report first.
                let deadline = tokio::time::Instant::now() + grace.max(Duration::from_secs(5));
                loop {
                    if let Some(k) = proc::open_keeper(&dir) {
                        break k;
                    }
                    if !inner.is_starting(id) || tokio::time::Instant::now() >= deadline {
                        return Ok(inner.finalize_lost(id, KEEPER_DIED, true).await);
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            None => return Ok(inner.finalize_lost(id, KEEPER_DIED, true).await),
        };

        // Signal the init as soon as it is known (the keeper may still be starting it), and
        // wait for the exit record until the grace period ends.
        let deadline = tokio::time::Instant::now() + grace;
        let mut signalled = false;
        let exited_in_grace = loop {
            if dir.join(EXIT_FILE).exists() {
                break true;
            }
            if !signalled {
                if let Some(started) = disk::read_started(&dir) {
                    signalled = true;
                    if let Some(init) = proc::open_container(started.pid, started.started_at) {
                        tracing::debug!(pid = started.pid, signal, "signalling init");
                        init.signal(signal).map_err(|source| StopError::Signal {
                            id: id.to_string(),
                            pid: started.pid,
                            source,
                        })?;
                    }
                }
            }
            if !keeper.alive() || tokio::time::Instant::now() >= deadline {
                break dir.join(EXIT_FILE).exists();
            }
            tokio::time::sleep(POLL).await;
        };
        if !exited_in_grace && keeper.alive() {
            tracing::info!(?grace, "grace period over, killing the container");
            kill_all(&dir, id, disk::read_started(&dir).as_ref()).await;
            if disk::read_started(&dir).is_none() {
                // Never started (keeper stuck in setup): the keeper itself has to go.
                let _ = keeper.signal(libc::SIGKILL);
            }
        }
        if !keeper.wait_timeout(KEEPER_FINISH).await {
            tracing::warn!(pid = keeper.pid, "keeper did not finish, killing it");
            let _ = keeper.signal(libc::SIGKILL);
            keeper.wait_timeout(KILL_WAIT).await;
        }
        match disk::read_exit(&dir) {
            Some(info) => Ok(info),
            None => Ok(inner.finalize_lost(id, KEEPER_DIED, true).await),
        }
    }
}

/// SIGKILLs every process of the container: through libcontainer (its cgroup), falling back to
/// the init's pidfd.
async fn kill_all(dir: &Path, id: &str, started: Option<&Started>) {
    let root = dir.join("state").join(id);
    let lc = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut c = libcontainer::container::Container::load(root).map_err(|e| e.to_string())?;
        c.kill(nix::sys::signal::Signal::SIGKILL, true)
            .map_err(|e| e.to_string())
    })
    .await;
    match lc {
        Ok(Ok(())) => tracing::debug!(container = %id, "killed through libcontainer"),
        Ok(Err(e)) => tracing::debug!(container = %id, error = %e, "libcontainer kill failed"),
        Err(e) => tracing::debug!(container = %id, error = %e, "libcontainer kill panicked"),
    }
    if let Some(s) = started {
        if let Some(init) = proc::open_container(s.pid, s.started_at) {
            if let Err(e) = init.signal(libc::SIGKILL) {
                tracing::warn!(container = %id, pid = s.pid, error = %e, "kill init");
            }
        }
    }
}

impl Inner {
    /// Makes the state of a container whose keeper is gone final: kills what is left of it,
    /// removes its libcontainer state and cgroup, unmounts its rootfs and writes `exit.json`
    /// (`code` 137 and `start_error` = `reason`). With `unknown`, the state reads as
    /// [`crate::ContainerState::Unknown`] from then on. Idempotent; returns the exit record.
    pub(super) async fn finalize_lost(&self, id: &str, reason: &str, unknown: bool) -> ExitInfo {
        let _guard = self.finalize.lock().await;
        let Some(dir) = self.container_dir(id) else {
            return lost_info(None, reason, unknown);
        };
        if let Some(info) = disk::read_exit(&dir) {
            return info;
        }
        let started = disk::read_started(&dir);
        if let Some(s) = &started {
            let init: Option<ProcHandle> = proc::open_container(s.pid, s.started_at);
            kill_all(&dir, id, Some(s)).await;
            if let Some(init) = init {
                if !init.wait_timeout(KILL_WAIT).await {
                    tracing::warn!(container = %id, pid = s.pid, "container init survived SIGKILL");
                }
            }
        }
        delete_libcontainer_state(&dir, id).await;
        let rootfs: PathBuf = dir.join("bundle").join("rootfs");
        if let Err(e) = disk::unmount_all_under(&rootfs) {
            tracing::warn!(container = %id, error = %e, "unmount rootfs");
        }
        let info = lost_info(started.as_ref(), reason, unknown);
        if unknown {
            if let Err(e) = std::fs::write(dir.join(disk::UNKNOWN_FILE), reason) {
                tracing::warn!(container = %id, error = %e, "record unknown state");
            }
        }
        if let Err(e) = disk::write_json_atomic(&dir.join(EXIT_FILE), &info) {
            tracing::error!(container = %id, error = %e, "write exit record");
        }
        info
    }
}

fn lost_info(started: Option<&Started>, reason: &str, unknown: bool) -> ExitInfo {
    ExitInfo {
        code: if unknown {
            LOST_CODE
        } else {
            START_FAILED_CODE
        },
        signal: None,
        oom_killed: false,
        started_at: started.map(|s| s.started_at),
        finished_at: SystemTime::now(),
        start_error: Some(reason.to_string()),
    }
}

/// `delete(force)` of the libcontainer state (removes its cgroup too), if any is left.
async fn delete_libcontainer_state(dir: &Path, id: &str) {
    let root = dir.join("state").join(id);
    if !root.exists() {
        return;
    }
    let r = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut c = libcontainer::container::Container::load(root).map_err(|e| e.to_string())?;
        c.delete(true).map_err(|e| e.to_string())
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(container = %id, error = %e, "delete libcontainer state"),
        Err(e) => tracing::warn!(container = %id, error = %e, "delete libcontainer state panicked"),
    }
}
