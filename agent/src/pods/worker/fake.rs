//! A [`PodRuntime`] and an [`ImageService`] in memory, for the worker's unit tests: the
//! runtime records every call, keeps containers and sandboxes as plain data, and plays scripted
//! exits (a container that exits with a code as soon as it starts) and failures (a sandbox or a
//! network that cannot be set up, an image that cannot be pulled).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bosun_runtime::container::{
    ExecError, ExecOutput, ExecSession, RemoveError, StartError, StopError,
};
use bosun_runtime::image::registry::Credentials;
use bosun_runtime::image::{Image, ImageConfig};
use bosun_runtime::sandbox::SandboxError;
use bosun_runtime::{
    ContainerSecurity, ContainerSpec, ContainerState, ContainerStatus, ExitInfo, HeldContainer,
    NetworkError, PodNetwork, PodRuntime, PodSecurity, RemoveSandboxError, RuntimeEvent, Sandbox,
    SandboxSpec,
};
use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

use crate::images::{EnsureError, ImageService, PullPolicy};

/// One call the worker made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    CreateSandbox(String),
    SetupNetwork(String),
    RemoveSandbox(String),
    /// Built and held (the pod network is being set up).
    Create(String),
    /// Started (directly, or a held one let run).
    Start(String),
    /// A held container ended without running.
    Abort(String),
    Stop {
        id: String,
        signal: i32,
        grace: Duration,
    },
    Remove(String),
    Exec(String, Vec<String>),
    /// In-place resize of a container's cgroup.
    UpdateContainer(String, bosun_runtime::Resources),
    /// In-place resize of a pod's cgroup.
    UpdatePod(String, bosun_runtime::Resources),
    /// An image volume view mounted: pod uid, image id.
    MountImageVolume(String, String),
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, ContainerStatus>,
    sandboxes: BTreeMap<String, Sandbox>,
    networks: BTreeMap<String, Vec<String>>,
    calls: Vec<Call>,
    /// The security each sandbox (pod uid) and container (id) was last created with.
    pod_security: BTreeMap<String, PodSecurity>,
    container_security: BTreeMap<String, ContainerSecurity>,
    /// Container name -> the exit code it exits with as soon as it starts.
    exits_on_start: HashMap<String, i32>,
    /// Command (argv[0]) -> the exit code of its execs (default 0).
    exec_codes: HashMap<String, i32>,
    /// Container name -> why its starts fail before anything is made.
    start_errors: HashMap<String, String>,
    sandbox_error: Option<String>,
    network_error: Option<String>,
    next_pid: i32,
    /// Container name -> the profile file its creation fails on (a profile the runtime
    /// refuses).
    seccomp_errors: HashMap<String, String>,
    /// Container name -> its memory usage in bytes (what `pods_usage` reports).
    memory_usage: HashMap<String, u64>,
    /// The mounts each container (id) was last created with.
    container_mounts: BTreeMap<String, Vec<bosun_runtime::Mount>>,
    /// Pod uid -> the image ids of its mounted image volumes.
    image_volumes: BTreeMap<String, BTreeSet<String>>,
    /// The spec each container (id) was last created or started with.
    specs: BTreeMap<String, ContainerSpec>,
}

pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<RuntimeEvent>,
}

impl FakeRuntime {
    pub fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            state: Arc::new(Mutex::new(State {
                next_pid: 1000,
                ..Default::default()
            })),
            events: broadcast::channel(64).0,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// The calls so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        self.with(|s| std::mem::take(&mut s.calls))
    }

    /// The security the sandbox of `pod_uid` was created with.
    pub fn pod_security(&self, pod_uid: &str) -> Option<PodSecurity> {
        self.with(|s| s.pod_security.get(pod_uid).cloned())
    }

    /// The spec container `id` was last created or started with.
    pub fn container_spec(&self, id: &str) -> Option<ContainerSpec> {
        self.with(|s| s.specs.get(id).cloned())
    }

    /// The security container `id` was created or started with.
    pub fn container_security(&self, id: &str) -> Option<ContainerSecurity> {
        self.with(|s| s.container_security.get(id).cloned())
    }

    /// The mounts container `id` was created or started with.
    pub fn container_mounts(&self, id: &str) -> Vec<bosun_runtime::Mount> {
        self.with(|s| s.container_mounts.get(id).cloned().unwrap_or_default())
    }

    /// Image ids of the image volumes mounted for pod `pod_uid`.
    pub fn image_volumes(&self, pod_uid: &str) -> BTreeSet<String> {
        self.with(|s| s.image_volumes.get(pod_uid).cloned().unwrap_or_default())
    }

    /// Container `name` exits with `code` as soon as it starts.
    pub fn exit_on_start(&self, name: &str, code: i32) {
        self.with(|s| s.exits_on_start.insert(name.to_string(), code));
    }

    /// Container `name` uses `bytes` of memory.
    pub fn use_memory(&self, name: &str, bytes: u64) {
        self.with(|s| s.memory_usage.insert(name.to_string(), bytes));
    }

    /// Execs of `command` (argv[0]) exit with `code`.
    pub fn exec_exits(&self, command: &str, code: i32) {
        self.with(|s| s.exec_codes.insert(command.to_string(), code));
    }

    /// Starts of container `name` fail before anything is made, as a log folder whose name is
    /// too long does (`None`: they work again).
    pub fn fail_starts(&self, name: &str, message: Option<&str>) {
        self.with(|s| match message {
            Some(m) => s.start_errors.insert(name.to_string(), m.to_string()),
            None => s.start_errors.remove(name),
        });
    }

    /// Sandboxes fail to be created with `message` (`None`: they work again).
    pub fn fail_sandboxes(&self, message: Option<&str>) {
        self.with(|s| s.sandbox_error = message.map(str::to_string));
    }

    /// Creating container `name` fails with a seccomp error naming `path` as the profile file
    /// (`None`: it works again), as the runtime refuses a missing Localhost profile.
    pub fn fail_start(&self, name: &str, path: Option<&str>) {
        self.with(|s| match path {
            Some(p) => s.seccomp_errors.insert(name.to_string(), p.to_string()),
            None => s.seccomp_errors.remove(name),
        });
    }

    /// Pod networks fail to be set up with `message` (`None`: they work again).
    pub fn fail_networks(&self, message: Option<&str>) {
        self.with(|s| s.network_error = message.map(str::to_string));
    }

    /// The running container `id` exits with `code` at `at`.
    pub fn exit(&self, id: &str, code: i32, at: SystemTime) {
        let info = self.with(|s| {
            let c = s.containers.get_mut(id).expect("container");
            let started_at = match c.state {
                ContainerState::Running { started_at, .. } => Some(started_at),
                _ => None,
            };
            let info = ExitInfo {
                code,
                signal: None,
                oom_killed: false,
                started_at,
                finished_at: at,
                start_error: None,
            };
            c.state = ContainerState::Exited(info.clone());
            info
        });
        let _ = self.events.send(RuntimeEvent::Exited {
            id: id.to_string(),
            info,
        });
    }

    /// Sets up what a node that ran the pod before an agent restart has: its sandbox and a
    /// running container built from `spec`.
    pub fn adopt(&self, sandbox: Sandbox, spec: &ContainerSpec) {
        self.with(|s| {
            s.sandboxes.insert(sandbox.pod_uid.clone(), sandbox);
            let st = running(s, spec);
            s.containers.insert(spec.id.clone(), st);
        });
    }

    /// The state of container `id`.
    pub fn state(&self, id: &str) -> Option<ContainerState> {
        self.with(|s| s.containers.get(id).map(|c| c.state.clone()))
    }

    /// The ids of every container, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.with(|s| s.containers.keys().cloned().collect())
    }

    /// Whether pod `uid` has a sandbox.
    pub fn has_sandbox(&self, uid: &str) -> bool {
        self.with(|s| s.sandboxes.contains_key(uid))
    }
}

/// Records the container's profiles; a scripted error refuses it before anything is made, as
/// the runtime refuses a missing seccomp profile.
fn refuse(
    s: &mut State,
    spec: &ContainerSpec,
    security: &ContainerSecurity,
) -> Result<(), StartError> {
    s.container_security
        .insert(spec.id.clone(), security.clone());
    s.container_mounts
        .insert(spec.id.clone(), spec.mounts.clone());
    match s.seccomp_errors.get(&spec.name) {
        Some(path) => Err(StartError::Seccomp {
            id: spec.id.clone(),
            source: bosun_runtime::seccomp::SeccompError::Missing { path: path.into() },
        }),
        None => Ok(()),
    }
}

fn status(spec: &ContainerSpec, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        id: spec.id.clone(),
        labels: spec.labels.clone(),
        state,
        image: spec.image.clone(),
        image_id: spec.image_id.clone(),
        log_path: PathBuf::from("/nonexistent").join(&spec.id),
        resources: spec.resources.clone(),
    }
}

/// A container of `spec` as it is once started: running, or exited at once when scripted.
fn running(s: &mut State, spec: &ContainerSpec) -> ContainerStatus {
    s.next_pid += 1;
    let now = SystemTime::now();
    let state = match s.exits_on_start.get(&spec.name) {
        Some(code) => ContainerState::Exited(ExitInfo {
            code: *code,
            signal: None,
            oom_killed: false,
            started_at: Some(now),
            finished_at: now,
            start_error: None,
        }),
        None => ContainerState::Running {
            pid: s.next_pid,
            started_at: now,
        },
    };
    status(spec, state)
}

struct FakeHeld {
    state: Arc<Mutex<State>>,
    spec: ContainerSpec,
}

impl HeldContainer for FakeHeld {
    fn id(&self) -> &str {
        &self.spec.id
    }

    fn start(self: Box<Self>) -> BoxFuture<'static, Result<ContainerStatus, StartError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            s.calls.push(Call::Start(self.spec.id.clone()));
            let st = running(&mut s, &self.spec);
            s.containers.insert(self.spec.id.clone(), st.clone());
            Ok(st)
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            s.calls.push(Call::Abort(self.spec.id.clone()));
            let now = SystemTime::now();
            if let Some(c) = s.containers.get_mut(&self.spec.id) {
                c.state = ContainerState::Exited(ExitInfo {
                    code: 137,
                    signal: Some(9),
                    oom_killed: false,
                    started_at: None,
                    finished_at: now,
                    start_error: Some("aborted".into()),
                });
            }
        })
    }
}

impl PodRuntime for FakeRuntime {
    fn sandbox(&self, pod_uid: &str) -> Option<Sandbox> {
        self.with(|s| s.sandboxes.get(pod_uid).cloned())
    }

    fn create_sandbox<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        security: &'a PodSecurity,
    ) -> BoxFuture<'a, Result<Sandbox, SandboxError>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::CreateSandbox(spec.pod_uid.clone()));
                s.pod_security
                    .insert(spec.pod_uid.clone(), security.clone());
                if let Some(message) = &s.sandbox_error {
                    return Err(SandboxError::Helper {
                        pod_uid: spec.pod_uid.clone(),
                        message: message.clone(),
                    });
                }
                let dir = PathBuf::from("/fake/sandboxes").join(&spec.pod_uid);
                let own = |what: &str, host: bool| (!host).then(|| dir.join(what));
                let sb = Sandbox {
                    pod_uid: spec.pod_uid.clone(),
                    netns: own("net", spec.host_network),
                    ipcns: own("ipc", spec.host_ipc),
                    utsns: own("uts", spec.host_network),
                    pidns: spec.share_pid.then(|| dir.join("pid")),
                    shm: dir.join("shm"),
                    cgroup_parent: format!("/kubepods/pod{}", spec.pod_uid),
                    host_pid: spec.host_pid,
                    userns: security.user_namespace.map(|_| dir.join("user")),
                    id_range: security.user_namespace,
                    dir,
                };
                s.sandboxes.insert(spec.pod_uid.clone(), sb.clone());
                Ok(sb)
            })
        })
    }

    fn network_ips(&self, sandbox: &Sandbox) -> Option<Vec<String>> {
        self.with(|s| s.networks.get(&sandbox.pod_uid).cloned())
    }

    fn setup_network(
        &self,
        sandbox: &Sandbox,
        pod: &PodNetwork,
    ) -> BoxFuture<'static, Result<Vec<String>, NetworkError>> {
        let state = self.state.clone();
        let uid = sandbox.pod_uid.clone();
        let pod_uid = pod.uid.clone();
        Box::pin(async move {
            let mut s = state.lock().unwrap();
            s.calls.push(Call::SetupNetwork(uid.clone()));
            if let Some(message) = &s.network_error {
                return Err(NetworkError::Setup {
                    pod_uid,
                    source: bosun_runtime::cni::CniError::NoConfig {
                        dir: PathBuf::from(message),
                    },
                });
            }
            let ips = vec!["10.244.0.7".to_string()];
            s.networks.insert(uid, ips.clone());
            Ok(ips)
        })
    }

    fn remove_sandbox<'a>(
        &'a self,
        pod_uid: &'a str,
    ) -> BoxFuture<'a, Result<(), RemoveSandboxError>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::RemoveSandbox(pod_uid.to_string()));
                s.sandboxes.remove(pod_uid);
                s.networks.remove(pod_uid);
                s.image_volumes.remove(pod_uid);
            });
            Ok(())
        })
    }

    fn list_sandboxes(&self) -> Vec<String> {
        self.with(|s| s.sandboxes.keys().cloned().collect())
    }

    fn create_container<'a>(
        &'a self,
        _sandbox: &'a Sandbox,
        spec: &'a ContainerSpec,
        _layers: &'a [PathBuf],
        security: &'a ContainerSecurity,
    ) -> BoxFuture<'a, Result<Box<dyn HeldContainer>, StartError>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::Create(spec.id.clone()));
                s.specs.insert(spec.id.clone(), spec.clone());
                refuse(s, spec, security)?;
                s.containers
                    .insert(spec.id.clone(), status(spec, ContainerState::Created));
                Ok(())
            })?;
            Ok(Box::new(FakeHeld {
                state: self.state.clone(),
                spec: spec.clone(),
            }) as Box<dyn HeldContainer>)
        })
    }

    fn start_container<'a>(
        &'a self,
        _sandbox: &'a Sandbox,
        spec: &'a ContainerSpec,
        _layers: &'a [PathBuf],
        security: &'a ContainerSecurity,
    ) -> BoxFuture<'a, Result<ContainerStatus, StartError>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::Start(spec.id.clone()));
                s.specs.insert(spec.id.clone(), spec.clone());
                refuse(s, spec, security)?;
                if let Some(m) = spec
                    .labels
                    .get(crate::translate::LABEL_CONTAINER_NAME)
                    .and_then(|n| s.start_errors.get(n))
                {
                    return Err(StartError::LogDir {
                        path: PathBuf::from("/var/log/pods").join(&spec.id),
                        source: std::io::Error::other(m.clone()),
                    });
                }
                if s.containers.contains_key(&spec.id) {
                    return Err(StartError::Exists {
                        id: spec.id.clone(),
                    });
                }
                let st = running(s, spec);
                s.containers.insert(spec.id.clone(), st.clone());
                Ok(st)
            })
        })
    }

    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        signal: i32,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitInfo, StopError>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::Stop {
                    id: id.to_string(),
                    signal,
                    grace,
                });
                let c = s
                    .containers
                    .get_mut(id)
                    .ok_or_else(|| StopError::NotFound { id: id.to_string() })?;
                if let ContainerState::Exited(info) = &c.state {
                    return Ok(info.clone());
                }
                let info = ExitInfo {
                    code: 128 + signal,
                    signal: Some(signal),
                    oom_killed: false,
                    started_at: None,
                    finished_at: SystemTime::now(),
                    start_error: None,
                };
                c.state = ContainerState::Exited(info.clone());
                Ok(info)
            })
        })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RemoveError>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::Remove(id.to_string()));
                s.containers.remove(id);
            });
            Ok(())
        })
    }

    fn list(&self) -> Vec<ContainerStatus> {
        self.with(|s| s.containers.values().cloned().collect())
    }

    fn list_prefix(&self, prefix: &str) -> Vec<ContainerStatus> {
        self.with(|s| {
            s.containers
                .values()
                .filter(|c| c.id.starts_with(prefix))
                .cloned()
                .collect()
        })
    }

    fn status(&self, id: &str) -> Option<ContainerStatus> {
        self.with(|s| s.containers.get(id).cloned())
    }

    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.events.subscribe()
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        argv: &'a [String],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let code = self.with(|s| {
                s.calls.push(Call::Exec(id.to_string(), argv.to_vec()));
                argv.first()
                    .and_then(|c| s.exec_codes.get(c).copied())
                    .unwrap_or(0)
            });
            Ok(ExecOutput {
                code,
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
        })
    }

    fn exec_streaming(
        &self,
        id: &str,
        _argv: &[String],
        _stdin: bool,
        _tty: bool,
    ) -> Result<ExecSession, ExecError> {
        Err(ExecError::NotFound { id: id.to_string() })
    }

    fn attach_stdin(&self, _id: &str) -> std::io::Result<Option<OwnedFd>> {
        Ok(None)
    }

    fn images_in_use(&self) -> BTreeSet<String> {
        self.with(|s| {
            s.containers
                .values()
                .map(|c| c.image_id.clone())
                .chain(s.image_volumes.values().flatten().cloned())
                .collect()
        })
    }

    fn mount_image_volume(
        &self,
        pod_uid: &str,
        image_id: &str,
        _layers: &[PathBuf],
    ) -> std::io::Result<PathBuf> {
        self.with(|s| {
            s.calls.push(Call::MountImageVolume(
                pod_uid.to_string(),
                image_id.to_string(),
            ));
            s.image_volumes
                .entry(pod_uid.to_string())
                .or_default()
                .insert(image_id.to_string());
        });
        Ok(PathBuf::from(format!(
            "/fake/image-volumes/{pod_uid}/{}",
            image_id.trim_start_matches("sha256:")
        )))
    }

    fn release_node(&self) -> Result<bool, RemoveSandboxError> {
        Ok(self.with(|s| s.sandboxes.is_empty()))
    }

    fn update_container_resources(
        &self,
        id: &str,
        res: &bosun_runtime::Resources,
    ) -> Result<(), bosun_runtime::cgroups::CgroupError> {
        self.with(|s| {
            s.calls
                .push(Call::UpdateContainer(id.to_string(), res.clone()));
            match s.containers.get_mut(id) {
                Some(c) => {
                    c.resources = res.clone();
                    Ok(())
                }
                None => Err(bosun_runtime::cgroups::CgroupError::Other {
                    path: id.to_string(),
                    reason: "no such container".into(),
                }),
            }
        })
    }

    fn update_pod_resources(
        &self,
        pod_uid: &str,
        res: &bosun_runtime::Resources,
    ) -> Result<(), bosun_runtime::cgroups::CgroupError> {
        self.with(|s| {
            s.calls
                .push(Call::UpdatePod(pod_uid.to_string(), res.clone()));
            Ok(())
        })
    }

    fn pods_usage(&self, _each_pod: bool) -> bosun_runtime::cgroups::PodsUsage {
        self.with(|s| {
            let mut out = bosun_runtime::cgroups::PodsUsage::default();
            for c in s.containers.values() {
                let name = c.labels.get(crate::translate::LABEL_CONTAINER_NAME);
                let Some(bytes) = name.and_then(|n| s.memory_usage.get(n)) else {
                    continue;
                };
                let usage = bosun_runtime::cgroups::CgroupUsage {
                    memory_usage: *bytes,
                    memory_working_set: *bytes,
                    processes: 1,
                };
                out.containers.insert(c.id.clone(), usage);
                if let Some(uid) = c.labels.get(crate::translate::LABEL_POD_UID) {
                    let pod = out.pods.entry(uid.clone()).or_default();
                    pod.memory_usage += bytes;
                    pod.memory_working_set += bytes;
                }
            }
            out
        })
    }
}

/// Images that are all present, except those scripted to fail.
#[derive(Default)]
pub struct FakeImages {
    failures: Mutex<HashMap<String, EnsureError>>,
    ensured: Mutex<Vec<(String, PullPolicy)>>,
}

impl FakeImages {
    /// The images asked for since the last call, with their pull policies.
    pub fn take_ensured(&self) -> Vec<(String, PullPolicy)> {
        std::mem::take(&mut *self.ensured.lock().unwrap())
    }

    /// `image` fails to be made available with `e` (`None`: it works again).
    pub fn fail(&self, image: &str, e: Option<EnsureError>) {
        let mut f = self.failures.lock().unwrap();
        match e {
            Some(e) => f.insert(image.to_string(), e),
            None => f.remove(image),
        };
    }
}

impl ImageService for FakeImages {
    fn present(&self, image: &str) -> bool {
        !self.failures.lock().unwrap().contains_key(image)
    }

    fn ensure<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        _creds: &'a Credentials,
    ) -> BoxFuture<'a, Result<Image, EnsureError>> {
        Box::pin(async move {
            self.ensured
                .lock()
                .unwrap()
                .push((image.to_string(), policy));
            if let Some(e) = self.failures.lock().unwrap().get(image) {
                return Err(e.clone());
            }
            Ok(Image {
                id: format!("sha256:{}", "a".repeat(64)),
                reference: image.to_string(),
                digest: format!("sha256:{}", "b".repeat(64)),
                config: ImageConfig {
                    cmd: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                },
                layers: Vec::new(),
                size: 0,
            })
        })
    }

    fn used(&self, _id: &str) {}
}

/// A [`crate::devices::DeviceService`] in memory: one resource with a number of devices, each
/// container asking for it gets the env `DEVICES=<ids>`; allocations fail when scripted.
#[derive(Default)]
pub struct FakeDevices {
    pub state: Mutex<FakeDevicesState>,
}

#[derive(Default)]
pub struct FakeDevicesState {
    /// resource -> healthy device ids.
    pub devices: BTreeMap<String, Vec<String>>,
    /// (pod uid, container) -> (resource, device ids).
    pub held: BTreeMap<(String, String), (String, Vec<String>)>,
    /// Every allocation fails with this plugin error.
    pub fail: Option<String>,
    pub pre_starts: Vec<(String, String)>,
    pub released: Vec<String>,
}

impl crate::devices::DeviceService for FakeDevices {
    fn allocate<'a>(
        &'a self,
        pod: &'a k8s_openapi::api::core::v1::Pod,
    ) -> BoxFuture<'a, Result<(), crate::devices::AllocateError>> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            if let Some(message) = st.fail.clone() {
                return Err(crate::devices::AllocateError::Rpc {
                    code: "Unknown".into(),
                    message,
                });
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                let limits = c.resources.as_ref().and_then(|r| r.limits.clone());
                for (resource, q) in limits.into_iter().flatten() {
                    let Some(free) = st.devices.get(&resource).cloned() else {
                        continue;
                    };
                    let key = (uid.clone(), c.name.clone());
                    if st.held.contains_key(&key) {
                        continue;
                    }
                    let n: usize = q.0.parse().unwrap_or(0);
                    let taken: Vec<String> =
                        st.held.values().flat_map(|(_, d)| d.clone()).collect();
                    let ids: Vec<String> = free
                        .into_iter()
                        .filter(|d| !taken.contains(d))
                        .take(n)
                        .collect();
                    if ids.len() < n {
                        return Err(crate::devices::state::PlanError::Unavailable {
                            resource: resource.clone(),
                            requested: n,
                            available: ids.len(),
                        }
                        .into());
                    }
                    st.held.insert(key, (resource.clone(), ids));
                }
            }
            Ok(())
        })
    }

    fn container_devices(
        &self,
        pod_uid: &str,
        container: &str,
    ) -> crate::devices::ContainerDevices {
        let st = self.state.lock().unwrap();
        let mut out = crate::devices::ContainerDevices::default();
        if let Some((_, ids)) = st.held.get(&(pod_uid.to_string(), container.to_string())) {
            out.env.insert("DEVICES".into(), ids.join(","));
        }
        out
    }

    fn pre_start<'a>(
        &'a self,
        pod_uid: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<(), crate::devices::AllocateError>> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            st.pre_starts
                .push((pod_uid.to_string(), container.to_string()));
            Ok(())
        })
    }

    fn release(&self, pod_uid: &str) {
        let mut st = self.state.lock().unwrap();
        st.held.retain(|(uid, _), _| uid != pod_uid);
        st.released.push(pod_uid.to_string());
    }

    fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
        let st = self.state.lock().unwrap();
        st.held
            .get(&(pod_uid.to_string(), container.to_string()))
            .cloned()
            .into_iter()
            .collect()
    }

    fn devices(&self) -> BTreeMap<String, Vec<String>> {
        self.state.lock().unwrap().devices.clone()
    }

    fn allocatable(&self, _pod_uid: &str) -> BTreeMap<String, i64> {
        let st = self.state.lock().unwrap();
        st.devices
            .iter()
            .map(|(r, d)| (r.clone(), d.len() as i64))
            .collect()
    }
}
