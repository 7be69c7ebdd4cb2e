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
use std::sync::{Arc, Mutex};

use super::proc::{self, ProcHandle};
use super::{disk, valid_id, HostRuntime, Inner};
use crate::cgroups::{CgroupLayout, CpuQuota};
use crate::keeper::{KeeperRequest, GO_FD, REQUEST_FILE, STATUS_FD};
use crate::{
    ContainerSecurity, ContainerSpec, ContainerState, ContainerStatus, RuntimePaths, Sandbox,
};

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
    #[error("create container folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {path}: {source}")]
    WriteRequest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create log folder {path}: {source}")]
    LogDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create log symlink {path}: {source}")]
    LogSymlink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spawn keeper {binary} for container {id}: {source}")]
    Spawn {
        id: String,
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read keeper status of container {id}: {source}")]
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
    /// The container's seccomp profile is missing, unreadable or invalid (nothing was done).
    #[error("container {id}: {source}")]
    Seccomp {
        id: String,
        #[source]
        source: crate::seccomp::SeccompError,
    },
    /// Its AppArmor profile cannot be applied (nothing was done).
    #[error("container {id}: {source}")]
    AppArmor {
        id: String,
        #[source]
        source: crate::apparmor::AppArmorError,
    },
    #[error("container {id}: capabilities: unknown capability {name}")]
    Capability { id: String, name: String },
    /// Its CDI devices cannot be resolved or made (nothing was done).
    #[error("container {id}: CDI device injection failed: {source}")]
    Cdi {
        id: String,
        #[source]
        source: crate::cdi::InjectError,
    },
    /// In a pod with a user namespace, its image layers or a mount cannot be idmapped (the
    /// kernel or the filesystem): nothing was done.
    #[error("container {id}: {source}")]
    Idmap {
        id: String,
        #[source]
        source: crate::idmap::IdmapError,
    },
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
pub(crate) struct Lift {
    inner: Arc<Inner>,
    pod: String,
}

impl QuotaLifts {
    fn layout(&self) -> Option<CgroupLayout> {
        CgroupLayout::host("/").ok()
    }

    /// Lifts the CPU quota of the pod cgroup `pod` (cgroupsPath form) until the guard drops.
    pub(crate) fn lift(inner: &Arc<Inner>, pod: &str) -> Lift {
        let lifts = &inner.lifts;
        let mut pods = lifts.pods.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pods.entry(pod.to_string()).or_insert((0, None));
        if entry.0 == 0 {
            if let Some(layout) = lifts.layout() {
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
            inner: Arc::clone(inner),
            pod: pod.to_string(),
        }
    }
}

impl Drop for Lift {
    fn drop(&mut self) {
        let lifts = &self.inner.lifts;
        let mut pods = lifts.pods.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = pods.get_mut(&self.pod) else {
            return;
        };
        entry.0 -= 1;
        if entry.0 > 0 {
            return;
        }
        if let (Some(q), Some(layout)) = (entry.1, lifts.layout()) {
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

/// The longest file name ext4 (and most file systems) take.
const MAX_FILE_NAME: usize = 255;

/// `<container_logs_dir>/<pod>_<ns>_<container>-<id>.log`, the name cut to 255 bytes (before
/// `.log`) as the kubelet's `logSymlink` does for long pod and container names.
pub(crate) fn log_symlink(paths: &RuntimePaths, spec: &ContainerSpec) -> PathBuf {
    paths.container_logs_dir.join(log_symlink_name(
        &spec.pod_name,
        &spec.pod_namespace,
        &spec.name,
        &spec.id,
    ))
}

pub(crate) fn log_symlink_name(pod: &str, ns: &str, container: &str, id: &str) -> String {
    let mut name = format!("{pod}_{ns}_{container}-{id}");
    let max = MAX_FILE_NAME - ".log".len();
    if name.len() > max {
        let mut cut = max;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name + ".log"
}

/// Creates the log folders (mode 0755) and points the symlink at the log file (replacing one
/// that exists). A symlink that cannot be made is logged and the container starts anyway (the
/// kubelet only logs "Failed to create legacy symbolic link").
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
    // Atomic replace: a new link beside it (a short name: the link's may be 255 bytes), renamed
    // over the old one.
    let tmp = paths.container_logs_dir.join(format!(
        ".{}.tmp",
        spec.id.chars().take(64).collect::<String>()
    ));
    let _ = std::fs::remove_file(&tmp);
    let made = std::os::unix::fs::symlink(log, &tmp).and_then(|()| std::fs::rename(&tmp, &link));
    if let Err(source) = made {
        let _ = std::fs::remove_file(&tmp);
        let e = StartError::LogSymlink { path: link, source };
        tracing::warn!(container = %spec.id, "{e}");
    }
    Ok(())
}

impl HostRuntime {
    /// Writes the keeper request, prepares the logs, spawns the keeper and waits (at most 60 s)
    /// for it to report. Returns the running container's status, or the keeper's error.
    pub async fn start_container(
        &self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
    ) -> Result<ContainerStatus, StartError> {
        self.start_container_with(sandbox, spec, layers, &ContainerSecurity::default())
            .await
    }

    /// [`HostRuntime::start_container`] with security profiles. The seccomp filter and the
    /// AppArmor profile are resolved first (a missing, unreadable or invalid profile is an
    /// error before anything is created).
    #[tracing::instrument(skip_all, fields(container = %spec.id, pod = %spec.pod_uid))]
    pub async fn start_container_with(
        &self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
        security: &ContainerSecurity,
    ) -> Result<ContainerStatus, StartError> {
        check_idmap(sandbox, spec, layers, security)?;
        let confined = confine(&self.inner, spec, security).await?;
        let mut starting = Starting::begin(&self.inner, sandbox, spec, false)?;
        let result = starting.spawn(sandbox, spec, layers, confined).await;
        starting.finish(result).await
    }

    /// Builds a container and stops before its process runs: namespaces joined, mounts and
    /// cgroup set up, the keeper waiting for [`Created::start`] (or [`Created::abort`]). Lets
    /// the caller do what the process needs before it runs (the pod network) while the
    /// container is set up. Dropping the [`Created`] aborts it.
    pub async fn create_container(
        &self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
    ) -> Result<Created, StartError> {
        self.create_container_with(sandbox, spec, layers, &ContainerSecurity::default())
            .await
    }

    /// [`HostRuntime::create_container`] with security profiles (see
    /// [`HostRuntime::start_container_with`]).
    #[tracing::instrument(skip_all, fields(container = %spec.id, pod = %spec.pod_uid))]
    pub async fn create_container_with(
        &self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
        security: &ContainerSecurity,
    ) -> Result<Created, StartError> {
        check_idmap(sandbox, spec, layers, security)?;
        let confined = confine(&self.inner, spec, security).await?;
        let mut starting = Starting::begin(&self.inner, sandbox, spec, true)?;
        match starting.spawn(sandbox, spec, layers, confined).await {
            Ok(line) if line.starts_with("created") => Ok(Created(Some(starting))),
            result => match starting.finish(result).await {
                // A keeper that skipped the hold has started the container: it will not wait.
                Ok(_) => Err(StartError::NoStatus {
                    id: spec.id.clone(),
                }),
                Err(e) => Err(e),
            },
        }
    }
}

/// In a pod with a user namespace: whether what the keeper will idmap can be (the image's
/// layers, which share one filesystem, and each mount the security does not leave plain), so
/// that a kernel or filesystem without idmapped mounts is an error before anything is made. An
/// idmapped copy of each tree is made and dropped (a few system calls each).
fn check_idmap(
    sandbox: &Sandbox,
    spec: &ContainerSpec,
    layers: &[PathBuf],
    security: &ContainerSecurity,
) -> Result<(), StartError> {
    let Some(userns) = &sandbox.userns else {
        return Ok(());
    };
    let mounts = spec
        .mounts
        .iter()
        .filter(|m| security.idmap_mounts && !security.plain_mounts.contains(&m.destination))
        .map(|m| &m.source);
    for source in layers.first().into_iter().chain(mounts) {
        crate::idmap::idmapped_tree(source, userns).map_err(|source| StartError::Idmap {
            id: spec.id.clone(),
            source,
        })?;
    }
    Ok(())
}

/// What a container's security profiles resolved to, for its keeper.
struct Confined {
    security: ContainerSecurity,
    seccomp: Option<crate::seccomp::CompiledFilter>,
    apparmor_label: Option<String>,
    cdi: Option<crate::cdi::ContainerEdits>,
}

/// Resolves the container's seccomp filter (parsed and compiled once per profile and
/// capability set, see `seccomp::Filters`) and AppArmor label (the default profile loaded when
/// missing). Blocking work (reading a profile, the first compile, apparmor_parser) runs off the
/// async threads.
async fn confine(
    inner: &Arc<Inner>,
    spec: &ContainerSpec,
    security: &ContainerSecurity,
) -> Result<Confined, StartError> {
    let id = spec.id.clone();
    let cdi = cdi_edits(inner, spec).await?;
    let caps = crate::spec::capabilities(&spec.security, crate::spec::HostFacts::read()).map_err(
        |name| StartError::Capability {
            id: id.clone(),
            name,
        },
    )?;
    // The usual cases need no file: no AppArmor label (Unconfined, or RuntimeDefault on a host
    // without AppArmor, which every pod that names nothing asks for) and no filter or one
    // compiled already.
    let no_label = matches!(
        crate::apparmor::label(&security.apparmor, crate::apparmor::is_enabled()),
        Ok(None)
    );
    if no_label {
        let cached = match &security.seccomp {
            crate::seccomp::SeccompProfile::Unconfined => Some(None),
            p => inner.filters.cached(p, &caps).map(Some),
        };
        if let Some(seccomp) = cached {
            return Ok(Confined {
                security: security.clone(),
                seccomp: seccomp.map(|c| (*c).clone()),
                apparmor_label: None,
                cdi,
            });
        }
    }
    let filters = Arc::clone(&inner.filters);
    let sec = security.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let seccomp = filters.get(&sec.seccomp, &caps);
        let apparmor = crate::apparmor::prepare(&crate::apparmor::Host::default(), &sec.apparmor);
        (seccomp, apparmor)
    })
    .await;
    let (seccomp, apparmor) = joined.map_err(|e| StartError::Keeper {
        id: id.clone(),
        message: format!("resolve security profiles: {e}"),
    })?;
    let seccomp = seccomp.map_err(|source| StartError::Seccomp {
        id: id.clone(),
        source,
    })?;
    let apparmor_label = apparmor.map_err(|source| StartError::AppArmor { id, source })?;
    Ok(Confined {
        security: security.clone(),
        seccomp: seccomp.map(|c| (*c).clone()),
        apparmor_label,
        cdi,
    })
}

/// The edits of the container's CDI devices, from the spec folders as they are now (read off
/// the async threads); `None` without CDI devices. Spec files that cannot be used are logged
/// and skipped.
async fn cdi_edits(
    inner: &Arc<Inner>,
    spec: &ContainerSpec,
) -> Result<Option<crate::cdi::ContainerEdits>, StartError> {
    if spec.cdi_devices.is_empty() {
        return Ok(None);
    }
    let dirs = inner.opts.cdi_spec_dirs.clone();
    let names = spec.cdi_devices.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        let registry = crate::cdi::Registry::load(&dirs);
        for e in registry.errors() {
            tracing::warn!(error = %e, "CDI spec skipped");
        }
        registry.resolve(&names)
    })
    .await
    .map_err(|e| StartError::Keeper {
        id: spec.id.clone(),
        message: format!("resolve CDI devices: {e}"),
    })?;
    resolved.map(Some).map_err(|source| StartError::Cdi {
        id: spec.id.clone(),
        source,
    })
}

/// A container built by [`HostRuntime::create_container`] whose keeper waits for the go-ahead.
pub struct Created(Option<Starting>);

impl Created {
    /// Lets the container's process run; returns its status like [`HostRuntime::start_container`].
    pub async fn start(mut self) -> Result<ContainerStatus, StartError> {
        let Some(mut starting) = self.0.take() else {
            return Err(StartError::NoStatus { id: String::new() });
        };
        let sent = starting.go_ahead();
        let result = match sent {
            Ok(()) => starting.next_line().await,
            Err(source) => Err(StartError::Status {
                id: starting.id.clone(),
                source,
            }),
        };
        starting.finish(result).await
    }

    /// Ends the built container without running it and waits for its keeper to clean up
    /// (bounded like a start: 60 s for a silent keeper, then 5 s for its exit);
    /// `remove_container` can remove it afterwards.
    pub async fn abort(mut self) {
        if let Some(mut starting) = self.0.take() {
            starting.go = None;
            let result = starting.next_line().await;
            let _ = starting.finish(result).await;
        }
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        self.0.as_ref().map(|s| s.id.as_str()).unwrap_or("")
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        // Closing the go-ahead pipe makes the keeper end the container; its monitor records it
        // (monitors are tasks: outside the runtime, the next agent adopts the keeper instead).
        if let Some(mut starting) = self.0.take() {
            starting.go = None;
            if tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            let keeper = starting.keeper();
            starting.inner.monitor(starting.id.clone(), keeper);
        }
    }
}

/// One container start in progress: in the `starting` set and with its pod's CPU quota lifted
/// until dropped.
struct Starting {
    inner: Arc<Inner>,
    id: String,
    dir: PathBuf,
    log: PathBuf,
    hold: bool,
    labels: std::collections::BTreeMap<String, String>,
    image: String,
    image_id: String,
    child: Option<ProcHandle>,
    status: Option<LineReader>,
    go: Option<OwnedFd>,
    _lift: Lift,
}

impl Starting {
    fn begin(
        inner: &Arc<Inner>,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        hold: bool,
    ) -> Result<Starting, StartError> {
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
        Ok(Starting {
            inner: Arc::clone(inner),
            id: id.to_string(),
            dir,
            log: log_path(&inner.paths, spec),
            hold,
            labels: spec.labels.clone(),
            image: spec.image.clone(),
            image_id: spec.image_id.clone(),
            child: None,
            status: None,
            go: None,
            _lift: QuotaLifts::lift(inner, &sandbox.cgroup_parent),
        })
    }

    /// Writes the request, prepares the logs, spawns the keeper; returns its first line.
    async fn spawn(
        &mut self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
        layers: &[PathBuf],
        confined: Confined,
    ) -> Result<String, StartError> {
        let inner = &self.inner;
        let cgroup_path = format!(
            "{}/{}",
            sandbox.cgroup_parent.trim_end_matches('/'),
            self.id
        );
        let cpu_cgroup = CpuQuota::of(&spec.resources)
            .and_then(|_| CgroupLayout::host("/").ok())
            .and_then(|l| l.cpu_cgroup(&cgroup_path));
        let request = KeeperRequest {
            spec: spec.clone(),
            sandbox: sandbox.clone(),
            layers: layers.to_vec(),
            log_path: self.log.clone(),
            log_max_size: inner.opts.log_max_size,
            log_max_files: inner.opts.log_max_files,
            cgroup_path,
            hold: self.hold,
            cpu_cgroup,
            security: confined.security,
            seccomp: confined.seccomp,
            apparmor_label: confined.apparmor_label,
            cdi: confined.cdi,
        };
        let req_path = self.dir.join(REQUEST_FILE);
        disk::write_json_atomic(&req_path, &request).map_err(|source| {
            StartError::WriteRequest {
                path: req_path.clone(),
                source,
            }
        })?;
        prepare_logs(&inner.paths, spec, &self.log)?;

        let spawned =
            spawn_keeper(&inner.paths.keeper_binary, &self.dir, self.hold).map_err(|source| {
                StartError::Spawn {
                    id: self.id.clone(),
                    binary: inner.paths.keeper_binary.clone(),
                    source,
                }
            })?;
        // The keeper's own pid (it writes keeper.pid first); our child if it does not fork.
        self.child = proc::pidfd_open(spawned.pid)
            .ok()
            .and_then(|fd| ProcHandle::new(spawned.pid, fd).ok());
        self.go = spawned.go;
        self.status =
            Some(
                LineReader::new(spawned.status).map_err(|source| StartError::Status {
                    id: self.id.clone(),
                    source,
                })?,
            );
        self.next_line().await
    }

    /// The keeper's next status line, within [`STATUS_TIMEOUT`].
    async fn next_line(&mut self) -> Result<String, StartError> {
        let id = self.id.clone();
        let Some(reader) = self.status.as_mut() else {
            return Err(StartError::NoStatus { id });
        };
        match tokio::time::timeout(STATUS_TIMEOUT, reader.next_line()).await {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(source)) => Err(StartError::Status { id, source }),
            Err(_) => {
                tracing::warn!("keeper silent for {STATUS_TIMEOUT:?}, killing it");
                if let Some(k) = self.keeper() {
                    let _ = k.signal(libc::SIGKILL);
                    self.child = Some(k);
                }
                Err(StartError::Timeout {
                    id,
                    timeout: STATUS_TIMEOUT,
                })
            }
        }
    }

    /// Sends the go-ahead to a holding keeper.
    fn go_ahead(&mut self) -> io::Result<()> {
        let fd = self
            .go
            .take()
            .ok_or_else(|| io::Error::other("no go-ahead pipe"))?;
        let mut f = std::fs::File::from(fd);
        std::io::Write::write_all(&mut f, &[crate::keeper::GO])
    }

    /// The keeper, by its pid file, else the child we spawned.
    fn keeper(&mut self) -> Option<ProcHandle> {
        proc::open_keeper(&self.dir).or_else(|| self.child.take())
    }

    /// Turns the keeper's last line into the container's status (or its error), hands the
    /// keeper to a monitor and ends the start.
    async fn finish(
        mut self,
        line: Result<String, StartError>,
    ) -> Result<ContainerStatus, StartError> {
        let result = self.conclude(line).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "start failed");
        }
        result
    }

    async fn conclude(
        &mut self,
        line: Result<String, StartError>,
    ) -> Result<ContainerStatus, StartError> {
        let inner = Arc::clone(&self.inner);
        let id = self.id.clone();
        let line = match line {
            Ok(line) => line,
            Err(e) if self.status.is_none() && self.child.is_none() => {
                // No keeper was ever spawned (the request, the log folder or the spawn itself
                // failed): this attempt never existed. Its folder goes, so that nothing records
                // it as a container whose keeper died; the caller gets the error itself.
                if let Err(rm) = std::fs::remove_dir_all(&self.dir) {
                    tracing::warn!(error = %rm, dir = %self.dir.display(), "remove the folder of a container that never started");
                }
                return Err(e);
            }
            Err(e) => {
                let keeper = self.keeper();
                inner.monitor(id, keeper);
                return Err(e);
            }
        };
        let line = line.trim_end();
        if let Some(message) = line.strip_prefix("error") {
            let message = message.trim().to_string();
            // The keeper records the failure and exits; make sure the record exists.
            let keeper = self.keeper();
            if let Some(k) = &keeper {
                k.wait_timeout(ERROR_EXIT_WAIT).await;
            }
            if disk::read_exit(&self.dir).is_none() && !keeper.as_ref().is_some_and(|k| k.alive()) {
                inner.finalize_lost(&id, &message, false).await;
            }
            inner.monitor(id.clone(), keeper);
            return Err(StartError::Keeper { id, message });
        }
        let pid = line
            .strip_prefix("started")
            .and_then(|p| p.trim().parse::<i32>().ok());
        let keeper = self.keeper();
        inner.monitor(id.clone(), keeper);
        let Some(pid) = pid else {
            return Err(StartError::NoStatus { id });
        };
        tracing::info!(pid, "container started");
        let mut status = disk::status(&self.dir, &id, false).unwrap_or_else(|| ContainerStatus {
            id: id.clone(),
            labels: self.labels.clone(),
            state: ContainerState::Created,
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            log_path: self.log.clone(),
            resources: Default::default(),
        });
        if matches!(
            status.state,
            ContainerState::Created | ContainerState::Unknown { .. }
        ) && disk::read_exit(&self.dir).is_none()
        {
            let started_at = disk::read_started(&self.dir)
                .map(|s| s.started_at)
                .unwrap_or_else(SystemTime::now);
            status.state = ContainerState::Running { pid, started_at };
        }
        Ok(status)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.inner
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// A spawned keeper: its pid, the read end of its status pipe and, for a holding keeper, the
/// write end of its go-ahead pipe.
struct Spawned {
    pid: i32,
    status: OwnedFd,
    go: Option<OwnedFd>,
}

/// Spawns `<binary> __keeper <dir>` in its own session with the status pipe on fd 3 (and with
/// `hold`, the go-ahead pipe on fd 4) and its output in `<dir>/keeper.log`.
fn spawn_keeper(binary: &Path, dir: &Path, hold: bool) -> io::Result<Spawned> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(disk::KEEPER_LOG))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let go = if hold {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
    } else {
        None
    };
    let wr_raw = wr.as_raw_fd();
    let go_raw = go.as_ref().map(|(r, _)| r.as_raw_fd());
    let mut cmd = Command::new(binary);
    cmd.arg("__keeper")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe libc calls (setsid, fcntl, dup2, close) on descriptors that stay open
    // in the parent until spawn returns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Each end goes through a copy above 9 first, so that placing one on 3 or 4
            // cannot close the other; dup2 clears close-on-exec on the target.
            for (fd, target) in [(Some(wr_raw), STATUS_FD), (go_raw, GO_FD)] {
                let Some(fd) = fd else { continue };
                let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::dup2(high, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(high);
            }
            Ok(())
        });
    }
    let (child, _exit) = crate::reaper::spawn(&mut cmd)?;
    drop(wr);
    Ok(Spawned {
        pid: child.id() as i32,
        status: rd,
        go: go.map(|(_, w)| w),
    })
}

/// Reads the keeper's status lines (it writes one, or two when it holds).
struct LineReader {
    rx: tokio::net::unix::pipe::Receiver,
    buf: Vec<u8>,
}

impl LineReader {
    fn new(fd: OwnedFd) -> io::Result<LineReader> {
        Ok(LineReader {
            rx: tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?,
            buf: Vec::new(),
        })
    }

    /// The next line; at the end of the pipe, what is left (empty when nothing is).
    async fn next_line(&mut self) -> io::Result<String> {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(n) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=n).collect();
                return Ok(String::from_utf8_lossy(&line[..n]).into_owned());
            }
            if self.buf.len() > 64 * 1024 {
                let line = std::mem::take(&mut self.buf);
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let n = self.rx.read(&mut chunk).await?;
            if n == 0 {
                let line = std::mem::take(&mut self.buf);
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_symlink_names_fit_a_file_name() {
        assert_eq!(
            log_symlink_name("web", "ns", "app", "c1"),
            "web_ns_app-c1.log"
        );
        // The kubelet's logSymlink: cut to 251 bytes, then `.log`.
        let (pod, ctr, id) = ("p".repeat(200), "c".repeat(63), "f".repeat(64));
        let name = log_symlink_name(&pod, "e2e-tests-1", &ctr, &id);
        assert_eq!(name.len(), 255);
        assert!(name.starts_with(&format!("{pod}_e2e-tests-1_ccc")));
        assert!(name.ends_with("c.log"), "{name}");
        // Never inside a UTF-8 sequence.
        let name = log_symlink_name(&"é".repeat(200), "ns", "c", "id");
        assert!(name.len() <= 255 && name.ends_with(".log"));
    }
}
