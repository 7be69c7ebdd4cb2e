//! The DRA manager (the kubelet's `cm/dra` Manager and its plugin manager): DRA kubelet plugins
//! registered through the plugins registry (type `DRAPlugin`, gRPC service `v1.DRAPlugin`),
//! NodePrepareResources before a pod's sandbox, NodeUnprepareResources once it ended, the claim
//! info cache in the checkpoint `<root-dir>/dra_manager_state`. The decisions are
//! [`super::state`]'s; the ResourceClaims come from a [`ClaimSource`] (the apiserver) and the
//! calls go through [`DriverCalls`] (the registered plugins), so tests run it on fakes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::ResourceClaim;
use tonic::transport::Channel;

use super::api;
use super::api::dra_plugin_client::DraPluginClient;
use super::state::{self, Cache, Checkpoint};
use super::DraError;

/// The checkpoint file in the root dir (the kubelet's name).
pub const CHECKPOINT_FILE: &str = "dra_manager_state";
/// The plugin type DRA kubelet plugins register with.
pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
/// The gRPC services bosun calls, most recent first (the kubelet also speaks v1beta1).
pub const SERVICES: &[&str] = &["v1.DRAPlugin"];
/// Timeout of each NodePrepareResources / NodeUnprepareResources call (the kubelet's).
const CALL_TIMEOUT: Duration = Duration::from_secs(45);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where ResourceClaims are read: the apiserver (a fake in tests).
pub trait ClaimSource: Send + Sync {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ResourceClaim, String>>;
}

/// The apiserver's ResourceClaims (resource.k8s.io/v1).
pub struct ApiClaims(pub kube::Client);

impl ClaimSource for ApiClaims {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ResourceClaim, String>> {
        Box::pin(async move {
            let api: kube::Api<ResourceClaim> = kube::Api::namespaced(self.0.clone(), namespace);
            api.get(name).await.map_err(|e| match e {
                kube::Error::Api(s) => s.message,
                e => e.to_string(),
            })
        })
    }
}

/// The calls to the drivers' kubelet plugins: the registered plugins (a fake in tests).
pub trait DriverCalls: Send + Sync {
    /// The kubelet's `GetPlugin` error when `driver` is not registered.
    fn check(&self, driver: &str) -> Result<(), String>;
    fn prepare<'a>(
        &'a self,
        driver: &'a str,
        claims: Vec<api::Claim>,
    ) -> BoxFuture<'a, Result<api::NodePrepareResourcesResponse, String>>;
    fn unprepare<'a>(
        &'a self,
        driver: &'a str,
        claims: Vec<api::Claim>,
    ) -> BoxFuture<'a, Result<api::NodeUnprepareResourcesResponse, String>>;
}

/// A registered DRA kubelet plugin.
#[derive(Clone, Debug)]
struct Plugin {
    endpoint: PathBuf,
    registration_socket: PathBuf,
    channel: Channel,
}

/// The DRA kubelet plugins registered through the plugins registry, by driver name (the newest
/// registration of a name wins, as the kubelet picks the most recent).
#[derive(Clone, Default)]
pub struct Plugins {
    map: Arc<Mutex<BTreeMap<String, Plugin>>>,
}

impl Plugins {
    fn get(&self, driver: &str) -> Result<Plugin, String> {
        if driver.is_empty() {
            return Err("DRA driver name is empty".into());
        }
        lock(&self.map)
            .get(driver)
            .cloned()
            .ok_or_else(|| format!("DRA driver {driver} is not registered"))
    }

    /// The registered drivers' names.
    pub fn names(&self) -> Vec<String> {
        lock(&self.map).keys().cloned().collect()
    }
}

fn timed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}

impl DriverCalls for Plugins {
    fn check(&self, driver: &str) -> Result<(), String> {
        self.get(driver).map(|_| ())
    }

    fn prepare<'a>(
        &'a self,
        driver: &'a str,
        claims: Vec<api::Claim>,
    ) -> BoxFuture<'a, Result<api::NodePrepareResourcesResponse, String>> {
        Box::pin(async move {
            let p = self.get(driver)?;
            DraPluginClient::new(p.channel)
                .node_prepare_resources(timed(api::NodePrepareResourcesRequest { claims }))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("NodePrepareResources: {}", state::rpc_message(&s)))
        })
    }

    fn unprepare<'a>(
        &'a self,
        driver: &'a str,
        claims: Vec<api::Claim>,
    ) -> BoxFuture<'a, Result<api::NodeUnprepareResourcesResponse, String>> {
        Box::pin(async move {
            let p = self.get(driver)?;
            DraPluginClient::new(p.channel)
                .node_unprepare_resources(timed(api::NodeUnprepareResourcesRequest { claims }))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("NodeUnprepareResources: {}", state::rpc_message(&s)))
        })
    }
}

/// The kubelet's `validateSupportedServices`: the first service bosun speaks, or its message.
pub fn choose_service(versions: &[String]) -> Result<&'static str, String> {
    if versions.is_empty() {
        return Err("empty list of supported gRPC services (aka supported versions)".into());
    }
    versions
        .iter()
        .find_map(|v| SERVICES.iter().find(|s| **s == v.as_str()).copied())
        .ok_or_else(|| {
            format!(
                "none of services supported by the plugin ({versions:?}) are supported by the kubelet ({SERVICES:?})"
            )
        })
}

impl bosun_volumes::csi::PluginHandler for Plugins {
    fn plugin_type(&self) -> &str {
        DRA_PLUGIN_TYPE
    }

    fn register<'a>(
        &'a self,
        socket: &'a Path,
        info: &'a bosun_volumes::csi::PluginInfo,
    ) -> bosun_volumes::csi::Registration<'a> {
        Box::pin(async move {
            let endpoint = if info.endpoint.is_empty() {
                socket.to_path_buf()
            } else {
                bosun_volumes::csi::socket_path(&info.endpoint)
            };
            choose_service(&info.supported_versions).map_err(|e| {
                format!(
                    "invalid supported gRPC versions of DRA driver plugin {} at endpoint {}: {e}",
                    info.name,
                    endpoint.display()
                )
            })?;
            if info.name.is_empty() {
                return Err("DRA driver name is empty".into());
            }
            tracing::info!(driver = %info.name, endpoint = %endpoint.display(), "DRA driver registered");
            lock(&self.map).insert(
                info.name.clone(),
                Plugin {
                    channel: bosun_volumes::csi::dial_lazy(&endpoint),
                    endpoint,
                    registration_socket: socket.to_path_buf(),
                },
            );
            Ok(info.name.clone())
        })
    }

    fn deregister(&self, socket: &Path) {
        lock(&self.map).retain(|name, p| {
            let keep = p.registration_socket != socket;
            if !keep {
                tracing::info!(driver = %name, endpoint = %p.endpoint.display(), "DRA driver removed: its registration socket is gone");
            }
            keep
        });
    }
}

/// The DRA manager. Cheap to clone.
#[derive(Clone)]
pub struct DraManager {
    inner: Arc<Inner>,
}

struct Inner {
    claims: Arc<dyn ClaimSource>,
    drivers: Arc<dyn DriverCalls>,
    /// The claim info cache; one prepare or unprepare round at a time.
    cache: tokio::sync::Mutex<Cache>,
    checkpoint: PathBuf,
    /// Pods whose unprepare failed: failures so far and when to try again.
    retry: Mutex<BTreeMap<String, (u32, Instant)>>,
}

impl DraManager {
    /// A manager on the checkpoint `<root>/dra_manager_state` (read back: an unreadable one is
    /// logged and the node starts with no prepared claims).
    pub fn new(root: &Path, claims: Arc<dyn ClaimSource>, drivers: Arc<dyn DriverCalls>) -> Self {
        let checkpoint = root.join(CHECKPOINT_FILE);
        let cache = match std::fs::read(&checkpoint) {
            Ok(b) => match serde_json::from_slice::<Checkpoint>(&b) {
                Ok(cp) => Cache::from_list(cp.claim_info_state_list),
                Err(e) => {
                    tracing::warn!(path = %checkpoint.display(), error = %e, "DRA checkpoint unusable; starting without prepared claims");
                    Cache::default()
                }
            },
            Err(_) => Cache::default(),
        };
        DraManager {
            inner: Arc::new(Inner {
                claims,
                drivers,
                cache: tokio::sync::Mutex::new(cache),
                checkpoint,
                retry: Mutex::default(),
            }),
        }
    }

    /// Retries, every few seconds, the unprepare of pods whose last one failed (the kubelet's
    /// reconcile loop).
    pub fn spawn_retries(&self) {
        let mgr = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let due: Vec<String> = lock(&mgr.inner.retry)
                    .iter()
                    .filter(|(_, (_, at))| *at <= Instant::now())
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in due {
                    if let Err(e) = mgr.unprepare(&uid).await {
                        tracing::info!(pod_uid = %uid, error = %e, "unpreparing pod resources failed, will retry");
                    }
                }
            }
        });
    }

    /// Writes the cache to the checkpoint; `what` names it in the error (the kubelet's
    /// "checkpoint ResourceClaim cache" before the calls, "... state" after them).
    fn save(&self, cache: &Cache, what: &str) -> Result<(), String> {
        write_atomic(&self.inner.checkpoint, &Checkpoint::new(cache))
            .map_err(|e| format!("checkpoint ResourceClaim {what}: {e}"))
    }

    /// The pods the checkpoint has claims for.
    pub async fn pods(&self) -> Vec<String> {
        self.inner.cache.lock().await.pods().into_iter().collect()
    }

    /// The kubelet's `PrepareResources`: the pod's claims read from the apiserver and checked
    /// (owner, reservedFor, allocation, driver registered) before anything changes, then the
    /// cache and checkpoint, then NodePrepareResources per driver for the claims not prepared
    /// yet, then the checkpoint again. A pod whose claims are all prepared for it is done at
    /// once (no apiserver read).
    pub async fn prepare(&self, pod: &Pod) -> Result<(), DraError> {
        self.prepare_inner(pod)
            .await
            .map_err(|e| DraError(format!("prepare dynamic resources: {e}")))
    }

    async fn prepare_inner(&self, pod: &Pod) -> Result<(), String> {
        let names = state::claim_names(pod)?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let plain: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
        if self
            .inner
            .cache
            .lock()
            .await
            .prepared_for(namespace, &plain, uid)
        {
            return Ok(());
        }
        let mut infos = Vec::new();
        for (name, owner) in &names {
            let claim = self
                .inner
                .claims
                .get(namespace, name)
                .await
                .map_err(|e| format!("fetch ResourceClaim {name}: {e}"))?;
            let info = state::check_claim(pod, &claim, *owner)?;
            for driver in info.driver_state.keys() {
                self.inner.drivers.check(driver)?;
            }
            infos.push(info);
        }
        let mut cache = self.inner.cache.lock().await;
        let batches = cache.begin_prepare(uid, infos)?;
        self.save(&cache, "cache")?;
        for (driver, claims) in &batches {
            let resp = self.inner.drivers.prepare(driver, claims.clone()).await?;
            cache.apply_prepared(driver, claims, &resp)?;
        }
        cache.finish_prepare(&batches);
        self.save(&cache, "state")
    }

    /// The CDI device ids `container` of `pod` gets from the prepared claims it names.
    pub async fn container_cdi_devices(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
    ) -> Result<Vec<String>, DraError> {
        self.inner
            .cache
            .lock()
            .await
            .container_cdi_devices(pod, container)
            .map_err(DraError)
    }

    /// The kubelet's `UnprepareResources` for a pod that ended (by uid: every claim the cache
    /// holds for it): claims other pods use lose the pod, the others are unprepared by their
    /// drivers and leave the cache. A failure is retried in the background with back-off.
    pub async fn unprepare(&self, pod_uid: &str) -> Result<(), DraError> {
        match self.unprepare_inner(pod_uid).await {
            Ok(()) => {
                lock(&self.inner.retry).remove(pod_uid);
                Ok(())
            }
            Err(e) => {
                let mut retry = lock(&self.inner.retry);
                let n = retry.get(pod_uid).map_or(1, |(n, _)| n + 1);
                retry.insert(
                    pod_uid.to_string(),
                    (n, Instant::now() + state::retry_after(n)),
                );
                Err(DraError(format!("unprepare dynamic resources: {e}")))
            }
        }
    }

    async fn unprepare_inner(&self, pod_uid: &str) -> Result<(), String> {
        let mut cache = self.inner.cache.lock().await;
        let before = cache.clone();
        let batches = cache.begin_unprepare(pod_uid);
        for (driver, claims) in &batches {
            let resp = self.inner.drivers.unprepare(driver, claims.clone()).await?;
            state::check_unprepared(claims, &resp)?;
        }
        cache.finish_unprepare(&batches);
        if *cache != before {
            self.save(&cache, "state")?;
        }
        Ok(())
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

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
