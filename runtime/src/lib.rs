//! Containers on this host: images, pod sandboxes, cgroups, the libcontainer keeper and logs.
//!
//! This crate knows nothing of Kubernetes. The agent translates a Pod into the plain specs
//! below ([`SandboxSpec`], [`ContainerSpec`]) and drives a [`PodRuntime`] with them: the
//! [`HostRuntime`] on a node, a fake in the agent's unit tests.
//!
//! Process model (see ARCHITECTURE.md): libcontainer's `build()`/`start()` clone without exec,
//! so they never run in the agent's (multi-threaded) process. Each container has a *keeper*:
//! a single-threaded process of the same binary (`bosun __keeper`) that mounts the rootfs,
//! builds and starts the container, stays its parent, writes its CRI log and records its exit in
//! `exit.json` before cleaning up. Keepers outlive the agent, so a restarted agent adopts them.

pub mod apparmor;
pub mod cdi;
pub mod cgroups;
pub mod cni;
pub mod container;
pub mod exec;
mod host;
pub mod idmap;
pub mod image;
pub mod image_volume;
pub mod keeper;
pub mod logs;
pub mod reaper;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod sys;
pub mod userns;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use container::HostRuntime;
pub use host::{NetworkError, RemoveSandboxError};

/// Where the runtime keeps its state and data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuntimePaths {
    /// Volatile state: keepers, container bundles, sandboxes (`/run/bosun`).
    pub run_dir: PathBuf,
    /// Persistent data: image and layer store (`/var/lib/bosun`).
    pub data_dir: PathBuf,
    /// Pod logs (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// Symlinks for log shippers (`/var/log/containers`).
    pub container_logs_dir: PathBuf,
    /// The cgroup under which `kubepods` lives ("/" on a node; a private parent in tests).
    pub cgroup_root: String,
    /// The binary that runs the helpers (`__exec`, `__sandbox`, and the pod init of a pod that
    /// shares its pid namespace): normally `bosun-keeper`, like `keeper_binary`; its start is
    /// quicker than the agent's (a fifth of the code, no relocations) and a pod init costs less.
    pub helper_binary: PathBuf,
    /// The binary that runs keepers (`<keeper_binary> __keeper <dir>`, one per running
    /// container): normally the small `bosun-keeper` next to the agent, which costs a
    /// container far less memory than a copy of the agent would (see `agent/src/bin/keeper.rs`).
    pub keeper_binary: PathBuf,
}

/// Kubernetes QoS class, computed by the agent, used for the cgroup layout and OOM scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Limits of one cgroup (pod or container). `None` means unlimited / default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// cpu.shares (v1) / converted to cpu.weight (v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (100000 when a quota is set).
    pub cpu_period: Option<u64>,
    /// memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// pids limit.
    pub pids_limit: Option<i64>,
}

/// The pod sandbox: namespaces created once and pinned as files, `/dev/shm`, the pod cgroup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    /// Hostname set in the pod's uts namespace (ignored with host_network).
    pub hostname: String,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// shareProcessNamespace: one pid namespace for all containers of the pod.
    pub share_pid: bool,
    pub qos: QosClass,
    /// Pod-level cgroup limits (sum of containers where the kubelet would set them).
    pub resources: Resources,
    /// Size of the pod's /dev/shm tmpfs in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
}

/// A created sandbox. Everything in it is derivable from `dir`, so it can be reloaded after restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub pod_uid: String,
    /// `<run_dir>/sandboxes/<pod_uid>`
    pub dir: PathBuf,
    /// Pinned namespace files (None = use the host's).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// Pinned pid namespace when the pod shares one (held by a tiny pod init process).
    pub pidns: Option<PathBuf>,
    /// Pinned user namespace, when the pod has its own, and its ID range.
    #[serde(default)]
    pub userns: Option<PathBuf>,
    #[serde(default)]
    pub id_range: Option<userns::IdRange>,
    /// The pod's /dev/shm (a tmpfs mounted at `<dir>/shm`, or the host's /dev/shm with hostIPC).
    pub shm: PathBuf,
    /// cgroup path of the pod relative to the hierarchy root, e.g. `/kubepods/burstable/pod<uid>`.
    pub cgroup_parent: String,
    pub host_pid: bool,
}

/// The user a container process runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum User {
    /// Numeric ids, already known.
    Id { uid: u32, gid: Option<u32> },
    /// A name (or `name:group`) from the image's USER, resolved against the rootfs' /etc/passwd.
    Name(String),
}

/// One mount into a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub destination: PathBuf,
    pub source: PathBuf,
    pub readonly: bool,
    pub propagation: Propagation,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub privileged: bool,
    /// Final capability set (names like `CAP_NET_BIND_SERVICE`), for bounding/effective/permitted.
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub readonly_rootfs: bool,
    /// Apply the default masked and read-only /proc paths (off for privileged or procMount Unmasked).
    pub mask_paths: bool,
    pub supplemental_groups: Vec<u32>,
}

/// The security profiles of one container, beside its [`ContainerSpec`] (given to
/// [`PodRuntime::start_container`] / [`PodRuntime::create_container`], which are
/// `HostRuntime::start_container_with` / `create_container_with`; kept in the keeper's
/// `request.json`; requests without them are unconfined).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSecurity {
    /// The seccomp filter (see [`seccomp`]). A privileged container gets what it is given.
    #[serde(default)]
    pub seccomp: seccomp::SeccompProfile,
    /// The AppArmor profile of the container's processes (see [`apparmor`]).
    #[serde(default)]
    pub apparmor: apparmor::AppArmorProfile,
    /// In a pod with a user namespace: bind an idmapped view of every mount source (host IDs
    /// 0.. appear as container IDs 0.. and the container's writes land as host IDs 0..), as
    /// the kubelet asks of its runtime for every mount of such a pod. Off: the container sees
    /// the sources' real owners, and its files are owned by the mapped host IDs. The rootfs is
    /// always idmapped in a user namespace.
    #[serde(default = "yes")]
    pub idmap_mounts: bool,
    /// With `idmap_mounts`: the destinations of mounts bound as they are all the same (their
    /// files keep their real owners; what the container writes there is owned by the mapped
    /// host IDs): the agent names its hostPath volumes here.
    #[serde(default)]
    pub plain_mounts: Vec<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for ContainerSecurity {
    fn default() -> Self {
        ContainerSecurity {
            seccomp: Default::default(),
            apparmor: Default::default(),
            idmap_mounts: true,
            plain_mounts: Vec::new(),
        }
    }
}

/// The pod-level security of a sandbox, beside its [`SandboxSpec`] (given to
/// [`PodRuntime::create_sandbox`], which is `sandbox::create_with`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSecurity {
    /// Namespaced sysctls (`net.*` in the pod's network namespace, `kernel.shm*`, `kernel.msg*`,
    /// `kernel.sem`, `fs.mqueue.*` in its IPC namespace), names with `.` or `/` separators,
    /// written by the sandbox helper before any container starts. One whose namespace the pod
    /// shares with the host is refused: the host's values are never touched.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// A user namespace of the pod's own, mapping container IDs 0.. to this host range (uids
    /// and gids); the pod's net, ipc, uts (and pid) namespaces are created inside it, and every
    /// container joins it.
    #[serde(default)]
    pub user_namespace: Option<userns::IdRange>,
}

/// Everything needed to run one container, already resolved by the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique id on this host: `<pod_uid>-<name>-<attempt>` style, valid as a libcontainer id.
    pub id: String,
    /// Container name within the pod.
    pub name: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// Restart count: names the log file `<restart>.log`.
    pub attempt: u32,
    /// Image reference as written in the pod and the resolved image id (config digest).
    pub image: String,
    pub image_id: String,
    /// Final argv (entrypoint/cmd rules applied).
    pub args: Vec<String>,
    /// Final environment, in order.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: User,
    pub tty: bool,
    pub stdin: bool,
    /// stdinOnce: the container's stdin closes when the first attach session ends.
    #[serde(default)]
    pub stdin_once: bool,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub oom_score_adj: i32,
    pub security: Security,
    /// Signal sent first on stop (the image's STOPSIGNAL or SIGTERM), as a number.
    pub stop_signal: i32,
    /// Host path of the termination message file, bind-mounted at the pod's terminationMessagePath.
    pub termination_message_path: Option<PathBuf>,
    /// Labels kept with the container (pod/container identity, restart count, hashes).
    pub labels: BTreeMap<String, String>,
    /// Host devices given to the container (a pod's `volumeDevices`: raw block volumes).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// CDI devices by qualified name (`vendor.com/class=name`): the runtime resolves them
    /// against the CDI spec folders when the container starts and makes their edits (see
    /// [`cdi`]); an unknown name fails the start.
    #[serde(default)]
    pub cdi_devices: Vec<String>,
}

/// A host device node made in the container, with a devices-cgroup rule allowing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Where the node appears in the container (`volumeDevices[].devicePath`).
    pub container_path: String,
    /// `b` (block) or `c` (character).
    pub kind: String,
    pub major: i64,
    pub minor: i64,
    /// Devices-cgroup access: `rwm`, or `rm` for read-only.
    pub access: String,
}

/// What the runtime knows of a container, rebuilt from disk at any time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub image: String,
    pub image_id: String,
    pub log_path: PathBuf,
    /// The limits its cgroup was given: at creation, then by each in-place resize
    /// ([`PodRuntime::update_container_resources`]); what the CRI reports as its resources.
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// The keeper is setting it up.
    Created,
    Running {
        pid: i32,
        started_at: SystemTime,
    },
    Exited(ExitInfo),
    /// The keeper vanished without recording an exit (it was killed): state unknown.
    Unknown {
        reason: String,
    },
}

/// How a container ended, as recorded by its keeper in `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code (128 + signal for a signalled process).
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
    /// Set when the container never started; the error text.
    pub start_error: Option<String>,
}

/// Published when a keeper observes its container exit (or disappears).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeEvent {
    Exited { id: String, info: ExitInfo },
}

/// Runs the helper role named by `args[1]` (`__keeper <dir>`, `__exec ...`, `__sandbox ...`)
/// and returns its exit code; `None` when `args` name no role. Both binaries, the agent and
/// `bosun-keeper`, answer to these.
pub fn helper_role(args: &[String]) -> Option<i32> {
    match args.get(1).map(String::as_str) {
        Some("__keeper") => Some(match args.get(2) {
            Some(dir) => keeper::main(PathBuf::from(dir)),
            None => 2,
        }),
        Some("__exec") => Some(exec::helper_main(args[2..].to_vec())),
        Some("__sandbox") => Some(sandbox::helper_main(args[2..].to_vec())),
        _ => None,
    }
}

/// What an agent needs of a container runtime to run pods, in the runtime's own terms: the pod
/// sandbox with its network, containers (create, start, stop, remove, list, exec), their exits,
/// the images they use and the node-wide clean-up. [`HostRuntime`] implements it on this host;
/// the agent's pod workers see only this trait, so their decisions are tested against a fake.
///
/// Futures are boxed so that the runtime can be shared as `Arc<dyn PodRuntime>`.
pub trait PodRuntime: Send + Sync {
    /// The sandbox of pod `pod_uid` as recorded, if there is one (after an agent restart too).
    fn sandbox(&self, pod_uid: &str) -> Option<Sandbox>;

    /// Creates the pod's sandbox (namespaces, /dev/shm, pod cgroup) with the pod's sysctls and
    /// user namespace (`PodSecurity::default()`: none), or returns the intact one that exists
    /// with its cgroup limits updated; a broken one (or one of another user namespace range) is
    /// rebuilt (its network given back first).
    fn create_sandbox<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        security: &'a PodSecurity,
    ) -> BoxFuture<'a, Result<Sandbox, sandbox::SandboxError>>;

    /// The addresses of the sandbox's network, when a network set-up completed (IPv4 first).
    fn network_ips(&self, sandbox: &Sandbox) -> Option<Vec<String>>;

    /// Sets up the sandbox's network (CNI ADD with the node's network config; a set-up a crash
    /// interrupted is undone first) and returns the pod's addresses, IPv4 first. The future
    /// owns what it needs, so it may run in the background while a container is built.
    fn setup_network(
        &self,
        sandbox: &Sandbox,
        pod: &PodNetwork,
    ) -> BoxFuture<'static, Result<Vec<String>, NetworkError>>;

    /// Gives the pod's network back (CNI DEL) and removes its sandbox (pod init, namespace
    /// pins, /dev/shm, pod cgroup, folder) and its image volumes. Idempotent.
    fn remove_sandbox<'a>(
        &'a self,
        pod_uid: &'a str,
    ) -> BoxFuture<'a, Result<(), RemoveSandboxError>>;

    /// Pod uids that have a sandbox folder (complete or partial).
    fn list_sandboxes(&self) -> Vec<String>;

    /// Mounts the read-only view of an image (its unpacked `layers`, bottom first) for pod
    /// `pod_uid` (an `image` volume), unless it is there already; its host path, which
    /// containers bind read-only. Kept (and the image in use) until the pod's sandbox is
    /// removed. See [`image_volume`].
    fn mount_image_volume(
        &self,
        pod_uid: &str,
        image_id: &str,
        layers: &[PathBuf],
    ) -> std::io::Result<PathBuf>;

    /// Builds a container under its security profiles (seccomp, AppArmor, idmapped mounts: see
    /// [`ContainerSecurity`]) and holds it before its process runs (see
    /// [`container::Created`]): the caller lets it run or aborts it.
    fn create_container<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        spec: &'a ContainerSpec,
        layers: &'a [PathBuf],
        security: &'a ContainerSecurity,
    ) -> BoxFuture<'a, Result<Box<dyn HeldContainer>, container::StartError>>;

    /// Creates and starts a container with its security profiles (as
    /// [`PodRuntime::create_container`]); its status once its process runs.
    fn start_container<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        spec: &'a ContainerSpec,
        layers: &'a [PathBuf],
        security: &'a ContainerSecurity,
    ) -> BoxFuture<'a, Result<ContainerStatus, container::StartError>>;

    /// Sends `signal`, waits up to `grace`, then kills everything of the container; its exit.
    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        signal: i32,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitInfo, container::StopError>>;

    /// Removes an exited container (its folder); an error while it runs.
    fn remove_container<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), container::RemoveError>>;

    /// Every container with its state, sorted by id.
    fn list(&self) -> Vec<ContainerStatus>;

    /// The containers whose id starts with `prefix`, sorted by id.
    fn list_prefix(&self, prefix: &str) -> Vec<ContainerStatus>;

    /// The state of one container, `None` if it does not exist.
    fn status(&self, id: &str) -> Option<ContainerStatus>;

    /// Exit events of containers (hints: the truth is what [`PodRuntime::list`] says).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent>;

    /// Runs `argv` in a running container for at most `timeout`; its exit code and output.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<container::ExecOutput, container::ExecError>>;

    /// An interactive exec (`kubectl exec`): the session streams the process's input and output.
    fn exec_streaming(
        &self,
        id: &str,
        argv: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<container::ExecSession, container::ExecError>;

    /// The writing end of a container's stdin (`kubectl attach`), when it has one.
    fn attach_stdin(&self, id: &str) -> std::io::Result<Option<OwnedFd>>;

    /// Image ids of every container the runtime holds and of every mounted image volume (what
    /// image GC must keep).
    fn images_in_use(&self) -> BTreeSet<String>;

    /// Node-wide clean-up when the agent stops: with no sandbox left, the sandboxes mount point
    /// and the empty `kubepods` cgroups are removed. `Ok(false)` when pods remain.
    fn release_node(&self) -> Result<bool, RemoveSandboxError>;

    /// Limits the `kubepods` cgroup (all pods together) to `limits`: the node's allocatable
    /// with `enforceNodeAllocatable: [pods]`. A runtime without cgroups does nothing.
    fn enforce_pods_limits(&self, limits: &Resources) -> Result<(), cgroups::CgroupError> {
        let _ = limits;
        Ok(())
    }

    /// Memory and processes of `kubepods` and, with `each_pod`, of each pod (by uid) and
    /// container (by id), for the eviction manager.
    fn pods_usage(&self, each_pod: bool) -> cgroups::PodsUsage {
        let _ = each_pod;
        cgroups::PodsUsage::default()
    }

    /// In-place resize: writes `res` to the cgroup of container `id` (created or running) and
    /// keeps them as its resources ([`ContainerStatus::resources`]). A runtime without cgroups
    /// only keeps them.
    fn update_container_resources(
        &self,
        id: &str,
        res: &Resources,
    ) -> Result<(), cgroups::CgroupError>;

    /// In-place resize: writes `res` to the cgroup of the pod `pod_uid` (its sandbox's).
    fn update_pod_resources(
        &self,
        pod_uid: &str,
        res: &Resources,
    ) -> Result<(), cgroups::CgroupError>;

    /// The folder of a container's writable layer (for its ephemeral storage use), if the
    /// runtime keeps one on the host.
    fn writable_layer(&self, id: &str) -> Option<PathBuf> {
        let _ = id;
        None
    }
}

/// A container built and held before its process runs ([`PodRuntime::create_container`]).
/// Dropping it aborts the container.
pub trait HeldContainer: Send {
    /// The container's id.
    fn id(&self) -> &str;
    /// Lets the process run; the container's status as [`PodRuntime::start_container`] gives it.
    fn start(self: Box<Self>)
        -> BoxFuture<'static, Result<ContainerStatus, container::StartError>>;
    /// Ends the container without running it; it can be removed afterwards.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The pod a network is set up for, in the runtime's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `hostPort` mappings for the portmap plugin.
    pub port_mappings: Vec<cni::PortMapping>,
}
