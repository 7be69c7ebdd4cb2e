//! Starting a container: request, log folder and symlink, the keeper and its status line.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;

use std::collections::HashMap;
use std::sync::Mutex;

use super::proc::{self, ProcHandle};
use super::{disk, valid_id, HostRuntime};
use crate::cgroups::{CgroupLayout, CpuQuota};
use crate::keeper::{KeeperRequest, REQUEST_FILE, STATUS_FD};
use crate::{ContainerSpec, ContainerState, ContainerStatus, RuntimePaths, Sandbox};

/// How long the keeper may take to report `started` or `error`.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a keeper that reported an error may take to record it and exit.
const ERROR_EXIT_WAIT: Duration = Duration::from_secs(5);

/// Starting a container failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid container id {id:?}")]
    InvalidId { id: String },
    #[error("container {id} already exists")]
    Exists { id: String },
    #[error("create container folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    WriteRequest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create log folder {path}")]
    LogDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create log symlink {path}")]
    LogSymlink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spawn keeper {binary} for container {id}")]
    Spawn {
        id: String,
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read keeper status of container {id}")]
    Status {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("keeper of container {id} reported no status within {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    #[error("keeper of container {id} exited without reporting a status")]
    NoStatus { id: String },
    #[error("container {id} failed to start: {message}")]
    Keeper { id: String, message: String },
}

/// The pod cgroups whose CPU quota is lifted while one of their containers is being set up:
/// libcontainer's set-up runs in the pod's cgroup, and throttled to the pod's limit (100m: 10 ms
/// of CPU in every 100 ms) it took longer than everything else in a start. The container's own
/// quota is applied by its keeper just before the container runs (its set-up is over by then),
/// so what runs unthrottled for those milliseconds is the runtime's work, never the pod's code:
/// every container of a pod with a pod-level quota has a quota of its own (the kubelet sets one
/// on the pod only when all containers have CPU limits). Counted per pod, so that overlapping
/// starts put the quota back once, when the last one is done.
#[derive(Default)]
pub(crate) struct QuotaLifts {
    pods: Mutex<HashMap<String, (usize, Option<CpuQuota>)>>,
}

/// A pod's quota lifted; put back when the last lift of the pod is dropped.
pub(crate) struct Lift<'a> {
    lifts: &'a QuotaLifts,
    pod: String,
}

impl QuotaLifts {
    fn layout(&self) -> Option<CgroupLayout> {
        CgroupLayout::host("/").ok()
    }

    /// Lifts the CPU quota of the pod cgroup `pod` (cgroupsPath form) until the guard drops.
    pub(crate) fn lift(&self, pod: &str) -> Lift<'_> {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pods.entry(pod.to_string()).or_insert((0, None));
        if entry.0 == 0 {
            if let Some(layout) = self.layout() {
                match layout.cpu_quota(pod) {
                    Ok(Some(q)) => match layout.set_cpu_quota(pod, None) {
                        Ok(()) => entry.1 = Some(q),
                        Err(e) => tracing::warn!(error = %e, "cannot lift the pod's CPU quota"),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "no pod CPU quota to lift"),
                }
            }
        }
        entry.0 += 1;
        Lift {
            lifts: self,
            pod: pod.to_string(),
        }
    }
}

impl Drop for Lift<'_> {
    fn drop(&mut self) {
        let mut pods = self.lifts.pods.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = pods.get_mut(&self.pod) else {
            return;
        };
        entry.0 -= 1;
        if entry.0 > 0 {
            return;
        }
        if let (Some(q), Some(layout)) = (entry.1, self.lifts.layout()) {
            if let Err(e) = layout.set_cpu_quota(&self.pod, Some(q)) {
                tracing::warn!(error = %e, pod = %self.pod, "cannot put the pod's CPU quota back");
            }
        }
        pods.remove(&self.pod);
    }
}

/// `<pod_logs_dir>/<ns>_<name>_<uid>/<container>/<attempt>.log`
pub(crate) fn log_path(paths: &RuntimePaths, spec: &ContainerSpec) -> PathBuf {
    paths
        .pod_logs_dir
        .join(format!(
            "{}_{}_{}",
            spec.pod_namespace, spec.pod_name, spec.pod_uid
        ))
        .join(&spec.name)
        .join(format!("{}.log", spec.attempt))
}

/// `<container_logs_dir>/<pod>_<ns>_<container>-<id>.log`
pub(crate) fn log_symlink(paths: &RuntimePaths, spec: &ContainerSpec) -> PathBuf {
    paths.container_logs_dir.join(format!(
        "{}_{}_{}-{}.log",
        spec.pod_name, spec.pod_namespace, spec.name, spec.id
    ))
}

/// Creates the log folders (mode 0755) and points the symlink at the log file (replacing one
/// that exists).
fn prepare_logs(paths: &RuntimePaths, spec: &ContainerSpec, log: &Path) -> Result<(), StartError> {
    let container_dir = log.parent().unwrap_or(&paths.pod_logs_dir);
    std::fs::create_dir_all(container_dir).map_err(|source| StartError::LogDir {
        path: container_dir.to_path_buf(),
        source,
    })?;
    let pod_dir = container_dir.parent().unwrap_or(&paths.pod_logs_dir);
    for d in [pod_dir, container_dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
            StartError::LogDir {
                path: d.to_path_buf(),
                source,
            }
        })?;
    }
    std::fs::create_dir_all(&paths.container_logs_dir).map_err(|source| StartError::LogDir {
        path: paths.container_logs_dir.clone(),
        source,
    })?;
    let link = log_symlink(paths, spec);
    let link_err = |source| StartError::LogSymlink {
        path: link.clone(),
        source,
    };
    // Atomic replace: a new link beside it, renamed over the old one.
    let tmp = link.with_extension("log.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(log, &tmp).map_err(link_err)?;
    std::fs::rename(&tmp, &link).map_err(link_err)?;
    Ok(())
}

impl HostRuntime {
    /// Writes the keeper request, prepares the logs, spawns the keeper and waits (at most 60 s)
    /// for it to report. Returns the running container's status, or the keeper's error.
    #[tracing::instrument(skip_all, fields(container = %spec.id, pod = %spec.pod_uid))]
    pub async fn start_container(
        &self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
    ) -> Result<ContainerStatus, StartError> {
        let inner = &self.inner;
        let id = spec.id.as_str();
        if !valid_id(id) {
            return Err(StartError::InvalidId { id: id.to_string() });
        }
        let dir = inner.containers_dir().join(id);
        let _ = std::fs::create_dir_all(inner.containers_dir());
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StartError::Exists { id: id.to_string() })
            }
            Err(source) => return Err(StartError::CreateDir { path: dir, source }),
        }
        inner
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
        let result = {
            let _lift = inner.lifts.lift(&sandbox.cgroup_parent);
            self.start_in(&dir, sandbox, spec, layers).await
        };
        inner
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "start failed");
        }
        result
    }

    async fn start_in(
        &self,
        dir: &Path,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
    ) -> Result<ContainerStatus, StartError> {
        let inner = &self.inner;
        let id = spec.id.as_str();
        let log = log_path(&inner.paths, spec);
        let request = KeeperRequest {
            spec: spec.clone(),
            sandbox: sandbox.clone(),
            layers: layers.to_vec(),
            log_path: log.clone(),
            log_max_size: inner.opts.log_max_size,
            log_max_files: inner.opts.log_max_files,
            cgroup_path: format!("{}/{}", sandbox.cgroup_parent.trim_end_matches('/'), id),
        };
        let req_path = dir.join(REQUEST_FILE);
        disk::write_json_atomic(&req_path, &request).map_err(|source| {
            StartError::WriteRequest {
                path: req_path.clone(),
                source,
            }
        })?;
        prepare_logs(&inner.paths, spec, &log)?;

        let (child_pid, status_rx) =
            spawn_keeper(&inner.paths.keeper_binary, dir).map_err(|source| StartError::Spawn {
                id: id.to_string(),
                binary: inner.paths.keeper_binary.clone(),
                source,
            })?;
        // The keeper's own pid (it writes keeper.pid first); our child if it does not fork.
        let child = proc::pidfd_open(child_pid)
            .ok()
            .and_then(|fd| ProcHandle::new(child_pid, fd).ok());
        let line = match tokio::time::timeout(STATUS_TIMEOUT, read_status_line(status_rx)).await {
            Ok(Ok(line)) => line,
            Ok(Err(source)) => {
                self.watch_keeper(id, proc::open_keeper(dir).or(child));
                return Err(StartError::Status {
                    id: id.to_string(),
                    source,
                });
            }
            Err(_) => {
                tracing::warn!("keeper silent for {STATUS_TIMEOUT:?}, killing it");
                let keeper = proc::open_keeper(dir).or(child);
                if let Some(k) = &keeper {
                    let _ = k.signal(libc::SIGKILL);
                }
                self.watch_keeper(id, keeper);
                return Err(StartError::Timeout {
                    id: id.to_string(),
                    timeout: STATUS_TIMEOUT,
                });
            }
        };
        let line = line.trim_end();
        if let Some(message) = line.strip_prefix("error") {
            let message = message.trim().to_string();
            // The keeper records the failure and exits; make sure the record exists.
            let keeper = proc::open_keeper(dir).or(child);
            if let Some(k) = &keeper {
                k.wait_timeout(ERROR_EXIT_WAIT).await;
            }
            if disk::read_exit(dir).is_none() && !keeper.as_ref().is_some_and(|k| k.alive()) {
                inner.finalize_lost(id, &message, false).await;
            }
            self.watch_keeper(id, keeper);
            return Err(StartError::Keeper {
                id: id.to_string(),
                message,
            });
        }
        let pid = line
            .strip_prefix("started")
            .and_then(|p| p.trim().parse::<i32>().ok());
        let Some(pid) = pid else {
            self.watch_keeper(id, proc::open_keeper(dir).or(child));
            return Err(StartError::NoStatus { id: id.to_string() });
        };
        tracing::info!(pid, "container started");
        self.watch_keeper(id, proc::open_keeper(dir).or(child));
        let mut status = disk::status(dir, id, false).unwrap_or_else(|| ContainerStatus {
            id: id.to_string(),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            image: spec.image.clone(),
            image_id: spec.image_id.clone(),
            log_path: log.clone(),
        });
        if matches!(
            status.state,
            ContainerState::Created | ContainerState::Unknown { .. }
        ) && disk::read_exit(dir).is_none()
        {
            let started_at = disk::read_started(dir)
                .map(|s| s.started_at)
                .unwrap_or_else(SystemTime::now);
            status.state = ContainerState::Running { pid, started_at };
        }
        Ok(status)
    }

    /// Starts the monitor of a freshly spawned keeper (`None`: it is already gone).
    fn watch_keeper(&self, id: &str, keeper: Option<ProcHandle>) {
        self.inner.monitor(id.to_string(), keeper);
    }
}

/// Spawns `<binary> __keeper <dir>` in its own session with the status pipe on fd 3 and its
/// output in `<dir>/keeper.log`. Returns its pid and the read end of the status pipe.
fn spawn_keeper(binary: &Path, dir: &Path) -> io::Result<(i32, OwnedFd)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(disk::KEEPER_LOG))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let wr_raw = wr.as_raw_fd();
    let mut cmd = Command::new(binary);
    cmd.arg("__keeper")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe libc calls (setsid, dup2, fcntl) on a descriptor that stays open in the
    // parent until spawn returns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if wr_raw == STATUS_FD {
                // Already in place: only clear close-on-exec.
                if libc::fcntl(wr_raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(wr_raw, STATUS_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child, _exit) = crate::reaper::spawn(&mut cmd)?;
    drop(wr);
    Ok((child.id() as i32, rd))
}

/// Reads the keeper's one status line (or what it wrote before closing the pipe).
async fn read_status_line(fd: OwnedFd) -> io::Result<String> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = rx.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') || buf.len() > 64 * 1024 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or("").to_string())
}
