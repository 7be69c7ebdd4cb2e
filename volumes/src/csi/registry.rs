//! Plugin discovery, as the kubelet's plugin watcher does it: registration sockets appear in the
//! plugins registry folder (written there by node-driver-registrar, or by a DRA driver's kubelet
//! plugin); for each, bosun is the gRPC client: `GetInfo`, then the handler of the announced
//! plugin type validates the plugin, then `NotifyRegistrationStatus` tells the plugin the
//! outcome. A plugin is deregistered when its registration socket goes away.
//!
//! The watcher ([`run_watcher`]) knows nothing of the plugin types: each is a
//! [`PluginHandler`] (the kubelet's `cache.PluginHandler`). The CSI one is [`CsiHandler`]
//! (the driver's own endpoint: `GetPluginInfo`, `NodeGetInfo`, `NodeGetCapabilities`); the
//! agent adds the DRA one (`DRAPlugin`). A socket of a type no handler takes is refused with
//! the kubelet's message.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::conn::{self, DialError};
use super::node::RpcFailure;
use super::proto::csi::identity_client::IdentityClient;
use super::proto::csi::node_client::NodeClient;
use super::proto::csi::node_service_capability::{self, rpc};
use super::proto::csi::{GetPluginInfoRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest};
use super::proto::registration::registration_client::RegistrationClient;
pub use super::proto::registration::PluginInfo;
use super::proto::registration::{InfoRequest, RegistrationStatus};

/// The plugin type a CSI registration socket must announce.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// Timeout of each discovery call.
const DISCOVERY_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a driver's node service can do (`NodeGetCapabilities`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCapabilities {
    pub stage_unstage: bool,
    pub get_volume_stats: bool,
    pub expand_volume: bool,
    pub volume_condition: bool,
    pub single_node_multi_writer: bool,
    pub volume_mount_group: bool,
}

/// A registered CSI driver. Cheap to clone (the channel is shared).
#[derive(Clone, Debug)]
pub struct Driver {
    /// The driver name (`GetInfo`, checked against `GetPluginInfo`).
    pub name: String,
    /// The driver's vendor version (`GetPluginInfo`).
    pub vendor_version: String,
    /// The driver's socket, as announced by the registration socket.
    pub endpoint: PathBuf,
    /// The registration socket it came from.
    pub registration_socket: PathBuf,
    /// The versions the registration socket announced.
    pub supported_versions: Vec<String>,
    /// `NodeGetInfo`: the node id for the CSINode object.
    pub node_id: String,
    /// `NodeGetInfo`: 0 when the driver sets no limit.
    pub max_volumes_per_node: i64,
    /// `NodeGetInfo`: the accessible topology segments (keys go into the CSINode object, the
    /// pairs into the Node's labels).
    pub topology: BTreeMap<String, String>,
    pub capabilities: NodeCapabilities,
    channel: Channel,
}

impl Driver {
    /// The topology keys for the CSINode object, sorted.
    pub fn topology_keys(&self) -> Vec<String> {
        self.topology.keys().cloned().collect()
    }
    /// A gRPC channel to the driver's endpoint (lazy, reconnecting).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
    /// A Node service client.
    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }
    /// An Identity service client.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }
}

/// A change of the registered drivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverChange {
    Registered(String),
    Removed(String),
}

type DriverMap = Arc<BTreeMap<String, Driver>>;

/// The registered drivers: a cheap clone shared between discovery and the volume code. Changes
/// are published on a watch channel ([`Drivers::subscribe`]) so the agent can rewrite the
/// CSINode object.
#[derive(Clone, Debug)]
pub struct Drivers {
    tx: Arc<watch::Sender<DriverMap>>,
}

impl Default for Drivers {
    fn default() -> Self {
        Drivers {
            tx: Arc::new(watch::Sender::new(Arc::default())),
        }
    }
}

impl Drivers {
    /// The driver named `name`, if registered.
    pub fn get(&self, name: &str) -> Option<Driver> {
        self.tx.borrow().get(name).cloned()
    }
    /// Every registered driver, by name.
    pub fn list(&self) -> Vec<Driver> {
        self.tx.borrow().values().cloned().collect()
    }
    /// A receiver that sees the whole set after every change (`changed().await`, then
    /// `borrow()`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<BTreeMap<String, Driver>>> {
        self.tx.subscribe()
    }
    /// Waits until `name` is registered (or the timeout passes).
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Option<Driver> {
        let mut rx = self.subscribe();
        let found = tokio::time::timeout(timeout, rx.wait_for(|m| m.contains_key(name))).await;
        match found {
            Ok(Ok(m)) => m.get(name).cloned(),
            _ => None,
        }
    }
    /// Registers (or replaces) a driver.
    pub fn insert(&self, driver: Driver) -> DriverChange {
        let name = driver.name.clone();
        self.tx.send_modify(|m| {
            Arc::make_mut(m).insert(name.clone(), driver);
        });
        DriverChange::Registered(name)
    }
    /// Removes the drivers that came from `registration_socket`.
    pub fn remove_from_socket(&self, registration_socket: &Path) -> Vec<DriverChange> {
        let mut gone = Vec::new();
        self.tx.send_if_modified(|m| {
            let names: Vec<String> = m
                .values()
                .filter(|d| d.registration_socket == registration_socket)
                .map(|d| d.name.clone())
                .collect();
            if names.is_empty() {
                return false;
            }
            let map = Arc::make_mut(m);
            for n in names {
                map.remove(&n);
                gone.push(DriverChange::Removed(n));
            }
            true
        });
        gone
    }
}

/// Why a registration socket did not give a usable driver.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{call} on {} failed: {failure}", socket.display())]
    Rpc {
        socket: PathBuf,
        call: &'static str,
        failure: RpcFailure,
    },
    #[error("plugin at {} is of type {kind:?}, not {CSI_PLUGIN_TYPE}", socket.display())]
    NotCsi { socket: PathBuf, kind: String },
    /// No handler takes the announced type (the kubelet's message).
    #[error("no handler registered for plugin type: {kind} at socket {}", socket.display())]
    NoHandler { socket: PathBuf, kind: String },
    /// The handler of the plugin's type refused it.
    #[error("{0}")]
    Handler(String),
    #[error("CSI driver {name} supports none of bosun's versions (1.x): {versions:?}")]
    UnsupportedVersion { name: String, versions: Vec<String> },
    #[error("CSI driver registered as {registered} calls itself {reported}")]
    NameMismatch {
        registered: String,
        reported: String,
    },
    #[error("CSI driver {name}: NodeGetInfo returned an empty node id")]
    NoNodeId { name: String },
    #[error("invalid CSI driver name {name:?}")]
    InvalidName { name: String },
}

/// Whether one of the announced versions is a CSI 1.x (`1`, `1.2`, `1.0.0`, `v1.5.0`).
pub fn supports_v1(versions: &[String]) -> bool {
    versions.iter().any(|v| {
        let v = v.trim().trim_start_matches('v');
        v.split('.').next() == Some("1")
    })
}

fn rpc_err(socket: &Path, call: &'static str) -> impl FnOnce(tonic::Status) -> RegisterError {
    let socket = socket.to_path_buf();
    move |s| RegisterError::Rpc {
        socket,
        call,
        failure: RpcFailure::from(s),
    }
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(DISCOVERY_CALL_TIMEOUT);
    r
}

/// Talks to one registration socket: validates the plugin and its driver, then tells the plugin
/// the outcome with `NotifyRegistrationStatus` (a failure to notify only logs). Returns the
/// driver to register.
#[tracing::instrument(level = "info", skip_all, fields(socket = %socket.display()))]
pub async fn register(socket: &Path) -> Result<Driver, RegisterError> {
    handshake(socket, |info| async move { validate(socket, &info).await }).await
}

/// `GetInfo` on the registration socket, `check` on its answer, then
/// `NotifyRegistrationStatus` with the outcome (a failure to notify only logs).
async fn handshake<T, F, Fut>(socket: &Path, check: F) -> Result<T, RegisterError>
where
    F: FnOnce(PluginInfo) -> Fut,
    Fut: Future<Output = Result<T, RegisterError>>,
{
    let chan = conn::dial(socket).await?;
    let mut reg = RegistrationClient::new(chan);
    let info = reg
        .get_info(request(InfoRequest {}))
        .await
        .map_err(rpc_err(socket, "GetInfo"))?
        .into_inner();
    let result = check(info).await;
    let status = match &result {
        Ok(_) => RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        },
        Err(e) => RegistrationStatus {
            plugin_registered: false,
            error: e.to_string(),
        },
    };
    if let Err(s) = reg.notify_registration_status(request(status)).await {
        warn!(error = %RpcFailure::from(s), "NotifyRegistrationStatus");
    }
    result
}

/// What [`PluginHandler::register`] returns: the registered plugin's name (for the logs), or
/// why it was refused (told to the plugin).
pub type Registration<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// One plugin type of the registry (the kubelet's `cache.PluginHandler`): validates and
/// registers the plugins that announce it, and drops them when their socket goes.
pub trait PluginHandler: Send + Sync {
    /// The type it takes (`PluginInfo.type`: `CSIPlugin`, `DRAPlugin`).
    fn plugin_type(&self) -> &str;
    /// Validates and registers the plugin that the registration socket `socket` announced.
    fn register<'a>(&'a self, socket: &'a Path, info: &'a PluginInfo) -> Registration<'a>;
    /// The registration socket `socket` is gone: its plugin with it.
    fn deregister(&self, socket: &Path);
}

/// The CSI drivers' handler: [`register`]'s checks, the drivers kept in [`Drivers`].
pub struct CsiHandler(pub Drivers);

impl PluginHandler for CsiHandler {
    fn plugin_type(&self) -> &str {
        CSI_PLUGIN_TYPE
    }
    fn register<'a>(&'a self, socket: &'a Path, info: &'a PluginInfo) -> Registration<'a> {
        Box::pin(async move {
            let d = validate(socket, info).await.map_err(|e| e.to_string())?;
            info!(driver = %d.name, node_id = %d.node_id, endpoint = %d.endpoint.display(), "CSI driver registered");
            let name = d.name.clone();
            // A driver registered from another socket before is replaced.
            self.0.insert(d);
            Ok(name)
        })
    }
    fn deregister(&self, socket: &Path) {
        for c in self.0.remove_from_socket(socket) {
            info!(socket = %socket.display(), change = ?c, "CSI driver removed: its registration socket is gone");
        }
    }
}

/// Talks to one registration socket for `handlers`: the one of the announced type validates
/// and registers the plugin. Returns that type and the plugin's name.
pub async fn register_with(
    socket: &Path,
    handlers: &[Arc<dyn PluginHandler>],
) -> Result<(String, String), RegisterError> {
    handshake(socket, |info| async move {
        let Some(h) = handlers.iter().find(|h| h.plugin_type() == info.r#type) else {
            return Err(RegisterError::NoHandler {
                socket: socket.to_path_buf(),
                kind: info.r#type.clone(),
            });
        };
        let name = h
            .register(socket, &info)
            .await
            .map_err(RegisterError::Handler)?;
        Ok((info.r#type.clone(), name))
    })
    .await
}

async fn validate(
    socket: &Path,
    info: &super::proto::registration::PluginInfo,
) -> Result<Driver, RegisterError> {
    if info.r#type != CSI_PLUGIN_TYPE {
        return Err(RegisterError::NotCsi {
            socket: socket.to_path_buf(),
            kind: info.r#type.clone(),
        });
    }
    if !crate::layout::is_valid_name(&info.name) {
        return Err(RegisterError::InvalidName {
            name: info.name.clone(),
        });
    }
    if !supports_v1(&info.supported_versions) {
        return Err(RegisterError::UnsupportedVersion {
            name: info.name.clone(),
            versions: info.supported_versions.clone(),
        });
    }
    // As the kubelet: no endpoint means the registration socket serves CSI too.
    let endpoint = if info.endpoint.is_empty() {
        socket.to_path_buf()
    } else {
        conn::socket_path(&info.endpoint)
    };
    let chan = conn::dial(&endpoint).await?;
    let plugin = IdentityClient::new(chan.clone())
        .get_plugin_info(request(GetPluginInfoRequest {}))
        .await
        .map_err(rpc_err(&endpoint, "GetPluginInfo"))?
        .into_inner();
    if plugin.name != info.name {
        return Err(RegisterError::NameMismatch {
            registered: info.name.clone(),
            reported: plugin.name,
        });
    }
    let mut node = NodeClient::new(chan);
    let ni = node
        .node_get_info(request(NodeGetInfoRequest {}))
        .await
        .map_err(rpc_err(&endpoint, "NodeGetInfo"))?
        .into_inner();
    if ni.node_id.is_empty() {
        return Err(RegisterError::NoNodeId {
            name: info.name.clone(),
        });
    }
    let caps = node
        .node_get_capabilities(request(NodeGetCapabilitiesRequest {}))
        .await
        .map_err(rpc_err(&endpoint, "NodeGetCapabilities"))?
        .into_inner();
    let mut capabilities = NodeCapabilities::default();
    for c in caps.capabilities {
        let Some(node_service_capability::Type::Rpc(r)) = c.r#type else {
            continue;
        };
        match rpc::Type::try_from(r.r#type) {
            Ok(rpc::Type::StageUnstageVolume) => capabilities.stage_unstage = true,
            Ok(rpc::Type::GetVolumeStats) => capabilities.get_volume_stats = true,
            Ok(rpc::Type::ExpandVolume) => capabilities.expand_volume = true,
            Ok(rpc::Type::VolumeCondition) => capabilities.volume_condition = true,
            Ok(rpc::Type::SingleNodeMultiWriter) => capabilities.single_node_multi_writer = true,
            Ok(rpc::Type::VolumeMountGroup) => capabilities.volume_mount_group = true,
            _ => {}
        }
    }
    Ok(Driver {
        name: info.name.clone(),
        vendor_version: plugin.vendor_version,
        // Node calls use a lazy channel: it reconnects when the driver restarts.
        channel: conn::dial_lazy(&endpoint),
        endpoint,
        registration_socket: socket.to_path_buf(),
        supported_versions: info.supported_versions.clone(),
        node_id: ni.node_id,
        max_volumes_per_node: ni.max_volumes_per_node,
        topology: ni
            .accessible_topology
            .map(|t| t.segments.into_iter().collect())
            .unwrap_or_default(),
        capabilities,
    })
}

/// Discovery settings.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// The folder is rescanned this often even without an inotify event.
    pub rescan: Duration,
    /// A socket that failed to register is tried again after this long (or when it is
    /// replaced).
    pub retry: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            rescan: Duration::from_secs(5),
            retry: Duration::from_secs(10),
        }
    }
}

/// What discovery knows of one registration socket, keyed by path.
struct Seen {
    /// (dev, ino) of the socket file: a new file at the same path is a new registration.
    id: (u64, u64),
    /// The plugin type it registered as (the handler told when it goes).
    kind: Option<String>,
    /// `None` once registered; when the last failure happened otherwise.
    failed_at: Option<Instant>,
}

/// The registration sockets in `dir`: `*.sock` sockets, hidden files skipped (the kubelet
/// ignores names starting with `.`).
fn scan(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".sock") {
            continue;
        }
        let path = e.path();
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_socket() => {
                out.insert(path, (md.dev(), md.ino()));
            }
            _ => {}
        }
    }
    out
}

/// Runs CSI discovery on `dir` forever: [`run_watcher`] with the [`CsiHandler`] only.
pub async fn run_discovery(dir: PathBuf, drivers: Drivers, opts: DiscoveryOptions) {
    run_watcher(dir, vec![Arc::new(CsiHandler(drivers))], opts).await
}

/// Runs the plugin watcher on `dir` forever: registers the plugins whose registration socket
/// appears with the handler of their type, and deregisters those whose socket goes away.
/// inotify wakes it; a rescan every [`DiscoveryOptions::rescan`] catches anything missed.
pub async fn run_watcher(
    dir: PathBuf,
    handlers: Vec<Arc<dyn PluginHandler>>,
    opts: DiscoveryOptions,
) {
    let watch = watch_folder(&dir);
    if watch.is_none() {
        warn!(dir = %dir.display(), "cannot watch the plugins registry with inotify; rescanning only");
    }
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    loop {
        reconcile(&dir, &handlers, &mut seen, &opts).await;
        match &watch {
            Some(fd) => {
                tokio::select! {
                    r = fd.readable() => {
                        if let Ok(mut guard) = r {
                            let _ = guard.get_inner().0.read_events();
                            guard.clear_ready();
                        }
                    }
                    _ = tokio::time::sleep(opts.rescan) => {}
                }
            }
            None => tokio::time::sleep(opts.rescan).await,
        }
    }
}

/// One pass: compares the sockets on disk with what is registered.
async fn reconcile(
    dir: &Path,
    handlers: &[Arc<dyn PluginHandler>],
    seen: &mut HashMap<PathBuf, Seen>,
    opts: &DiscoveryOptions,
) {
    let now = scan(dir);
    let gone: Vec<PathBuf> = seen
        .iter()
        .filter(|(p, s)| now.get(*p) != Some(&s.id))
        .map(|(p, _)| p.clone())
        .collect();
    for p in gone {
        if let Some(kind) = seen.remove(&p).and_then(|s| s.kind) {
            for h in handlers.iter().filter(|h| h.plugin_type() == kind) {
                h.deregister(&p);
            }
        }
    }
    for (path, id) in now {
        if let Some(s) = seen.get(&path) {
            match s.failed_at {
                None => continue,
                Some(t) if t.elapsed() < opts.retry => continue,
                Some(_) => {}
            }
        }
        match register_with(&path, handlers).await {
            Ok((kind, name)) => {
                debug!(socket = %path.display(), kind, name, "plugin registered");
                seen.insert(
                    path,
                    Seen {
                        id,
                        kind: Some(kind),
                        failed_at: None,
                    },
                );
            }
            Err(e) => {
                warn!(socket = %path.display(), error = %e, "plugin registration failed");
                seen.insert(
                    path,
                    Seen {
                        id,
                        kind: None,
                        failed_at: Some(Instant::now()),
                    },
                );
            }
        }
    }
    debug!(sockets = seen.len(), "plugins registry scanned");
}

/// An inotify instance that tokio can poll (nix's `Inotify` only implements `AsFd`).
struct Watch(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

fn watch_folder(dir: &Path) -> Option<tokio::io::unix::AsyncFd<Watch>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let _ = std::fs::create_dir_all(dir);
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    ino.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB,
    )
    .ok()?;
    // SAFETY: the inotify fd is owned by `Watch`, which the AsyncFd owns; it stays open and is
    // the same fd until the AsyncFd is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(Watch(ino), tokio::io::Interest::READABLE)
    }
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(supports_v1(&v(&["1.0.0"])));
        assert!(supports_v1(&v(&["0.3.0", "v1.5.0"])));
        assert!(supports_v1(&v(&["1"])));
        assert!(!supports_v1(&v(&["0.3.0", "2.0.0", "10.1"])));
        assert!(!supports_v1(&[]));
    }

    #[test]
    fn scan_finds_sockets_only() {
        let td = tempfile::tempdir().expect("tempdir");
        let _a =
            std::os::unix::net::UnixListener::bind(td.path().join("a-reg.sock")).expect("bind");
        let _h =
            std::os::unix::net::UnixListener::bind(td.path().join(".hidden.sock")).expect("bind");
        let _o = std::os::unix::net::UnixListener::bind(td.path().join("other")).expect("bind");
        std::fs::write(td.path().join("file.sock"), b"").expect("write");
        let found: Vec<PathBuf> = scan(td.path()).into_keys().collect();
        assert_eq!(found, vec![td.path().join("a-reg.sock")]);
    }
}
