//! The device plugin manager: the `Registration` service on
//! `<root-dir>/device-plugins/kubelet.sock`, one task per registered plugin reading its
//! `ListAndWatch` stream, and the calls admission and container starts make (`Allocate`,
//! `GetPreferredAllocation`, `PreStartContainer`). The decisions are [`super::state`]'s.
//!
//! The socket is made anew at every start (a stale one removed first): plugins watch it and
//! register again when it is recreated, which is how they come back after an agent restart.
//! Allocations are written to the checkpoint before a container is admitted and read back at
//! start, so a restarted agent keeps them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::api::device_plugin_client::DevicePluginClient;
use super::api::registration_server::{Registration, RegistrationServer};
use super::api::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, DevicePluginOptions, Empty, PreStartContainerRequest,
    PreferredAllocationRequest, RegisterRequest,
};
use super::state::{self, Allocation, Checkpoint, Plan, State};

/// The API version plugins must speak.
pub const VERSION: &str = "v1beta1";
/// The agent's socket, in the plugins' folder.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The checkpoint file, in the plugins' folder.
pub const CHECKPOINT_FILE: &str = "bosun_internal_checkpoint";
/// The kubelet's timeout for PreStartContainer.
pub const PRE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("device plugins: folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("device plugins: listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A container's devices cannot be given to it. The message is what the kubelet's
/// `UnexpectedAdmissionError` wraps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error(transparent)]
    Plan(#[from] state::PlanError),
    #[error("unknown Device Plugin {0}")]
    UnknownPlugin(String),
    /// The plugin's call failed (gRPC's words, as the kubelet shows them).
    #[error("rpc error: code = {code} desc = {message}")]
    Rpc { code: String, message: String },
    #[error("no containers return in allocation response")]
    EmptyResponse,
    #[error("write the device checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
}

impl AllocateError {
    fn rpc(s: tonic::Status) -> AllocateError {
        AllocateError::Rpc {
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
        }
    }

    /// The pod status message of the refusal (reason `UnexpectedAdmissionError`).
    pub fn admission_message(&self) -> String {
        format!("Allocate failed due to {self}, which is unexpected")
    }
}

/// The pod status reason of a refused allocation.
pub const UNEXPECTED_ADMISSION_ERROR: &str = "UnexpectedAdmissionError";

/// What a container gets from its plugins' `Allocate` answers, merged in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerDevices {
    pub env: BTreeMap<String, String>,
    /// (host path, container path, read-only).
    pub mounts: Vec<(String, String, bool)>,
    /// (host path, container path, cgroup permissions).
    pub devices: Vec<(String, String, String)>,
    pub annotations: BTreeMap<String, String>,
    /// Fully qualified CDI device names.
    pub cdi_devices: Vec<String>,
}

impl ContainerDevices {
    fn add(&mut self, r: &ContainerAllocateResponse) {
        self.env
            .extend(r.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.mounts.extend(
            r.mounts
                .iter()
                .map(|m| (m.host_path.clone(), m.container_path.clone(), m.read_only)),
        );
        self.devices.extend(r.devices.iter().map(|d| {
            (
                d.host_path.clone(),
                d.container_path.clone(),
                d.permissions.clone(),
            )
        }));
        self.annotations
            .extend(r.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.cdi_devices
            .extend(r.cdi_devices.iter().map(|c| c.name.clone()));
    }

    pub fn is_empty(&self) -> bool {
        *self == ContainerDevices::default()
    }
}

struct Plugin {
    client: DevicePluginClient<Channel>,
    options: DevicePluginOptions,
    /// Bumped at every registration, so an old stream's end does not stop a new plugin.
    generation: u64,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    plugins: Mutex<BTreeMap<String, Plugin>>,
    generation: Mutex<u64>,
    /// Bumped whenever the capacity may have changed.
    changed: watch::Sender<u64>,
    /// One admission at a time: plans and allocations must see each other.
    admit: tokio::sync::Mutex<()>,
}

/// The device plugin manager (cheap to clone).
#[derive(Clone)]
pub struct DeviceManager {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DeviceManager {
    /// Serves the registration socket in `dir` (`<root-dir>/device-plugins`) with the
    /// allocations of the checkpoint there.
    pub async fn start(dir: &Path) -> Result<DeviceManager, StartError> {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
        let cp_path = dir.join(CHECKPOINT_FILE);
        let state = match std::fs::read(&cp_path) {
            Ok(bytes) => match serde_json::from_slice::<Checkpoint>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|cp| State::restore(&cp, Instant::now()).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %cp_path.display(), error = %e, "device checkpoint unusable; starting without allocations");
                    State::default()
                }
            },
            Err(_) => State::default(),
        };
        let sock = dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener =
            tokio::net::UnixListener::bind(&sock).map_err(|source| StartError::Listen {
                path: sock.clone(),
                source,
            })?;
        let (changed, _) = watch::channel(0);
        let mgr = DeviceManager {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                state: Mutex::new(state),
                plugins: Mutex::new(BTreeMap::new()),
                generation: Mutex::new(0),
                changed,
                admit: tokio::sync::Mutex::new(()),
            }),
        };
        let svc = RegistrationServer::new(RegistrationService { mgr: mgr.clone() });
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .serve_with_incoming(svc, incoming)
                .await
            {
                tracing::error!(socket = %sock.display(), error = %e, "device plugin registration server ended");
            }
        });
        // Resources of plugins gone for the grace period drop to 0.
        let weak = Arc::downgrade(&mgr.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let Some(inner) = weak.upgrade() else { return };
                let before = lock(&inner.state).capacity();
                lock(&inner.state).expire(Instant::now());
                if lock(&inner.state).capacity() != before {
                    inner.changed.send_modify(|v| *v += 1);
                }
            }
        });
        Ok(mgr)
    }

    /// Resource -> (capacity, allocatable) for the Node's status.
    pub fn capacity(&self) -> BTreeMap<String, (u64, u64)> {
        lock(&self.inner.state).capacity()
    }

    /// What admission counts as allocatable for the pod `pod_uid` (see
    /// [`super::state::State::admission_allocatable`]).
    pub fn admission_allocatable(&self, pod_uid: &str) -> BTreeMap<String, u64> {
        lock(&self.inner.state).admission_allocatable(pod_uid)
    }

    /// Changes of [`DeviceManager::capacity`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Gives every container of `pod` (init containers first) the devices its limits ask for,
    /// of the resources plugins registered (the kubelet's Allocate at admission). Containers
    /// that hold theirs already keep them. On error nothing new is kept for the container that
    /// failed.
    pub async fn allocate_pod(&self, pod: &Pod) -> Result<(), AllocateError> {
        let Some(spec) = &pod.spec else {
            return Ok(());
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let _one = self.inner.admit.lock().await;
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        let mut dirty = false;
        for c in containers {
            let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            for (resource, q) in limits.into_iter().flatten() {
                if !lock(&self.inner.state).is_device_resource(resource) {
                    continue;
                }
                let count = q.0.trim().parse::<usize>().unwrap_or(0);
                if count == 0 {
                    continue;
                }
                let plan = lock(&self.inner.state).plan(&uid, &c.name, resource, count)?;
                let Plan::Allocate { count, available } = plan else {
                    continue;
                };
                let (mut client, options) = {
                    let plugins = lock(&self.inner.plugins);
                    let p = plugins
                        .get(resource)
                        .ok_or_else(|| AllocateError::UnknownPlugin(resource.clone()))?;
                    (p.client.clone(), p.options)
                };
                let preferred = if options.get_preferred_allocation_available {
                    let req = PreferredAllocationRequest {
                        container_requests: vec![ContainerPreferredAllocationRequest {
                            available_device_i_ds: available.clone(),
                            must_include_device_i_ds: Vec::new(),
                            allocation_size: count as i32,
                        }],
                    };
                    match client.get_preferred_allocation(req).await {
                        Ok(r) => r
                            .into_inner()
                            .container_responses
                            .into_iter()
                            .next()
                            .map(|r| r.device_i_ds),
                        Err(e) => {
                            tracing::warn!(%resource, error = %e, "GetPreferredAllocation failed; choosing devices in order");
                            None
                        }
                    }
                } else {
                    None
                };
                let ids = state::choose(&available, count, preferred.as_deref());
                let resp = client
                    .allocate(AllocateRequest {
                        container_requests: vec![ContainerAllocateRequest {
                            devices_ids: ids.clone(),
                        }],
                    })
                    .await
                    .map_err(AllocateError::rpc)?
                    .into_inner();
                let response = resp
                    .container_responses
                    .into_iter()
                    .next()
                    .ok_or(AllocateError::EmptyResponse)?;
                lock(&self.inner.state).allocated(Allocation {
                    pod_uid: uid.clone(),
                    container: c.name.clone(),
                    resource: resource.clone(),
                    device_ids: ids,
                    response,
                });
                dirty = true;
            }
        }
        if dirty {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// What the plugins' answers give `container` of the pod `pod_uid`.
    pub fn container_devices(&self, pod_uid: &str, container: &str) -> ContainerDevices {
        let mut out = ContainerDevices::default();
        for a in lock(&self.inner.state).container(pod_uid, container) {
            out.add(&a.response);
        }
        out
    }

    /// The devices `container` of the pod `pod_uid` holds: (resource, device ids).
    pub fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
        lock(&self.inner.state)
            .container(pod_uid, container)
            .into_iter()
            .map(|a| (a.resource.clone(), a.device_ids.clone()))
            .collect()
    }

    /// Every device the plugins list (healthy or not), by resource.
    pub fn devices(&self) -> BTreeMap<String, Vec<String>> {
        lock(&self.inner.state)
            .resources
            .iter()
            .filter(|(_, r)| !r.devices.is_empty())
            .map(|(name, r)| (name.clone(), r.devices.keys().cloned().collect()))
            .collect()
    }

    /// Calls `PreStartContainer` of the plugins that asked for it with the container's devices.
    pub async fn pre_start(&self, pod_uid: &str, container: &str) -> Result<(), AllocateError> {
        let held: Vec<(String, Vec<String>)> = lock(&self.inner.state)
            .container(pod_uid, container)
            .into_iter()
            .map(|a| (a.resource.clone(), a.device_ids.clone()))
            .collect();
        for (resource, ids) in held {
            let client = {
                let plugins = lock(&self.inner.plugins);
                match plugins.get(&resource) {
                    Some(p) if p.options.pre_start_required => Some(p.client.clone()),
                    Some(_) => None,
                    None => return Err(AllocateError::UnknownPlugin(resource)),
                }
            };
            if let Some(mut client) = client {
                let mut req = tonic::Request::new(PreStartContainerRequest { devices_ids: ids });
                req.set_timeout(PRE_START_TIMEOUT);
                client
                    .pre_start_container(req)
                    .await
                    .map_err(AllocateError::rpc)?;
            }
        }
        Ok(())
    }

    /// Frees the devices of pods that are not in `active` (the kubelet's
    /// UpdateAllocatedDevices).
    pub fn retain_pods(&self, active: &HashSet<String>) {
        let freed = lock(&self.inner.state).retain_pods(active);
        if freed {
            if let Err(e) = self.write_checkpoint() {
                tracing::warn!(error = %e, "cannot write the device checkpoint");
            }
        }
    }

    /// Frees the devices of one pod (it is gone from the node).
    pub fn release_pod(&self, pod_uid: &str) {
        let freed = {
            let mut st = lock(&self.inner.state);
            let before = st.allocations.len();
            st.allocations.retain(|a| a.pod_uid != pod_uid);
            before != st.allocations.len()
        };
        if freed {
            if let Err(e) = self.write_checkpoint() {
                tracing::warn!(pod = %pod_uid, error = %e, "cannot write the device checkpoint");
            }
        }
    }

    fn write_checkpoint(&self) -> Result<(), AllocateError> {
        let cp = lock(&self.inner.state).checkpoint();
        let path = self.inner.dir.join(CHECKPOINT_FILE);
        write_atomic(&path, &cp).map_err(|e| AllocateError::Checkpoint {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Connects to a plugin that registered and follows its device list until it goes away.
    async fn run_plugin(&self, req: RegisterRequest) {
        let resource = req.resource_name.clone();
        let path = self.inner.dir.join(&req.endpoint);
        let channel = match bosun_volumes::csi::dial(&path).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%resource, error = %e, "cannot connect to the device plugin");
                return;
            }
        };
        let mut client = DevicePluginClient::new(channel);
        let generation = {
            let mut g = lock(&self.inner.generation);
            *g += 1;
            *g
        };
        lock(&self.inner.plugins).insert(
            resource.clone(),
            Plugin {
                client: client.clone(),
                options: req.options.unwrap_or_default(),
                generation,
            },
        );
        lock(&self.inner.state).plugin_started(&resource);
        tracing::info!(%resource, endpoint = %path.display(), "device plugin registered");
        match client.list_and_watch(Empty {}).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            let devices = resp
                                .devices
                                .into_iter()
                                .map(|d| (d.id, d.health == state::HEALTHY));
                            lock(&self.inner.state).update(&resource, devices);
                            self.notify();
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(%resource, error = %e, "device plugin stream ended");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(%resource, error = %e, "ListAndWatch failed"),
        }
        // A newer registration of the same resource owns it now.
        let current = {
            let mut plugins = lock(&self.inner.plugins);
            let current = plugins
                .get(&resource)
                .is_some_and(|p| p.generation == generation);
            if current {
                plugins.remove(&resource);
            }
            current
        };
        if current {
            lock(&self.inner.state).plugin_stopped(&resource, Instant::now());
            self.notify();
            tracing::info!(%resource, "device plugin gone; its devices are unhealthy");
        }
    }
}

struct RegistrationService {
    mgr: DeviceManager,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let r = request.into_inner();
        if r.version != VERSION {
            return Err(tonic::Status::unknown(format!(
                "requested API version {:?} is not supported by kubelet. Supported versions are [{VERSION:?}]",
                r.version
            )));
        }
        if !state::is_extended_resource_name(&r.resource_name) {
            return Err(tonic::Status::unknown(format!(
                "the ResourceName {:?} is invalid",
                r.resource_name
            )));
        }
        if r.endpoint.is_empty() || r.endpoint.contains('/') {
            return Err(tonic::Status::unknown(format!(
                "invalid endpoint {:?}: a socket name in the device plugin folder",
                r.endpoint
            )));
        }
        let mgr = self.mgr.clone();
        tokio::spawn(async move { mgr.run_plugin(r).await });
        Ok(tonic::Response::new(Empty {}))
    }
}

fn write_atomic<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
