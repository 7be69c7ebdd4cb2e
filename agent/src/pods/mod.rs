//! Pods: the source of desired pods, the manager that keeps one worker per pod, the workers
//! ([`worker`]: plan, then act, against a [`PodRuntime`]), probes, back-off and status.

pub mod admission;
pub mod backoff;
pub mod eviction;
pub mod probing;
pub mod resize;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bosun_runtime::{PodRuntime, RuntimeEvent};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::config::Config;
use crate::fieldpath::NodeAllocatable;
use crate::images::ImageService;
use crate::reasons::EventType;
use crate::translate::{VolumeKind, LABEL_POD_UID};
use source::{Desired, DesiredPods};
use worker::{Intent, WorkerHandle};

pub use worker::plan::{api_terminal, pod_key};

/// A pod status for the apiserver (cluster mode); with `delete` (the pod is terminated and
/// cleaned up), its last status and then the deletion of the pod object.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub status: Option<k8s_openapi::api::core::v1::PodStatus>,
    /// A static pod: the status goes to its mirror pod (whatever the mirror's uid), and the
    /// mirror pod is deleted by the mirror manager, not here.
    pub mirror: bool,
    /// The pod object is deleted (grace 0, uid precondition) after `status`, if any, is written.
    pub delete: bool,
}

/// One Kubernetes Event about a pod (or one of its containers, by `field_path`), or about
/// another object of the pod's namespace the kubelet reports on (a claim it expanded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The involved object's kind: `Pod`, or `PersistentVolumeClaim`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{name}` or `spec.initContainers{name}` for container events.
    pub field_path: Option<String>,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// When it happened (the Event's timestamps), not when it is written.
    pub at: std::time::SystemTime,
}

/// The Event's `involvedObject.fieldPath` of a container of `pod`.
pub fn container_field_path(pod: &Pod, container: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| i.iter().any(|c| c.name == container));
    if init {
        format!("spec.initContainers{{{container}}}")
    } else {
        format!("spec.containers{{{container}}}")
    }
}

/// Logs an event about `pod` and, in cluster mode, sends it to the apiserver.
pub fn emit(
    ctx: &Ctx,
    pod: &Pod,
    container: Option<&str>,
    type_: EventType,
    reason: &str,
    msg: &str,
) {
    if type_ == EventType::Warning {
        tracing::warn!(reason, container, "{msg}");
    } else {
        tracing::info!(reason, container, "{msg}");
    }
    if let Some(tx) = &ctx.events_tx {
        let _ = tx.send(EventRecord {
            kind: "Pod",
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: container.map(|c| container_field_path(pod, c)),
            type_: type_.as_str().to_string(),
            reason: reason.to_string(),
            message: msg.to_string(),
            at: std::time::SystemTime::now(),
        });
    }
}

/// Is this pod from the apiserver (not a static pod from a file)?
pub fn from_api(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_none()
}

/// What every pod worker shares.
pub struct Ctx {
    pub cfg: Config,
    /// The container runtime (the host's; a fake in unit tests).
    pub runtime: Arc<dyn PodRuntime>,
    /// Images by pull policy (the image manager; a fake in unit tests).
    pub images: Arc<dyn ImageService>,
    /// The node's memory (oom_score_adj of burstable containers, resourceFieldRef) and CPUs
    /// (resourceFieldRef of an unset cpu limit).
    pub node: NodeAllocatable,
    /// Cluster mode: where pod statuses and final deletions go.
    pub status_tx: Option<tokio::sync::mpsc::UnboundedSender<StatusUpdate>>,
    /// Cluster mode: configMaps, secrets and tokens for volumes and env.
    pub objects: Option<Arc<dyn ObjectSource>>,
    /// Cluster mode: claims and CSI volumes.
    pub volumes: Option<Arc<dyn PersistentVolumes>>,
    /// Cluster mode: the figures of the CSI volumes, for the HTTP API.
    pub volume_stats: Option<Arc<dyn crate::metrics::volume::VolumeStats>>,
    /// Cluster mode: where Events go.
    pub events_tx: Option<tokio::sync::mpsc::UnboundedSender<EventRecord>>,
    /// Cluster mode: the device plugin manager (devices allocated at admission, given to
    /// containers at start, freed with the pod).
    pub devices: Option<Arc<dyn crate::devices::DeviceService>>,
    /// Cluster mode: the DRA manager (claims prepared before the sandbox, CDI devices given to
    /// the containers that name them, unprepared when the pod ended).
    pub dra: Option<Arc<dyn crate::dra::DraService>>,
    /// The node's security settings (admission, seccomp, AppArmor).
    pub security: crate::security::NodeSecurity,
    /// The ID ranges of pods with `hostUsers: false` (persisted); `None` when the node cannot
    /// give any (a bad pool or allocation file, logged at start-up): such pods fail to start.
    pub userns: Option<Arc<bosun_runtime::userns::Allocator>>,
    /// The node's capacity, allocatable, admission view, eviction settings and pressure.
    pub resources: Arc<eviction::NodeResources>,
    /// Every running pod as allocated (in-place resize admits against these).
    pub allocated: resize::Allocated,
    /// The node is shutting down (graceful node shutdown): node status and admission read it.
    pub node_shutdown: Arc<shutdown::NodeShutdown>,
    /// The node's pod network: is a CNI config there (pods on the pod network wait for one),
    /// the Node's pod CIDR.
    pub pod_network: Arc<crate::podnet::PodNetwork>,
    /// Cluster mode: answered once the status writer has written every status sent before.
    pub status_flush: Option<tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>>,
}

/// The device plugins' allocatable devices by resource as admission sees them for the pod
/// `pod_uid` (none without a device manager).
pub(crate) fn device_allocatable(ctx: &Ctx, pod_uid: &str) -> crate::admission::ResourceList {
    ctx.devices
        .as_ref()
        .map(|d| d.allocatable(pod_uid))
        .unwrap_or_default()
}

/// An error of a cluster source, typed where it is made ([`crate::cluster`]) and told by its
/// message here (it becomes a FailedMount event's).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where the configMaps, secrets and service account tokens (and the Services, for the service
/// link variables) that a pod's volumes and environment refer to come from: the apiserver in
/// cluster mode ([`crate::cluster::objects`]), none in standalone mode.
pub trait ObjectSource: Send + Sync {
    /// Everything in `refs`, for `pod`: missing objects as `None`, an error when the API
    /// cannot answer (and nothing was read before).
    fn fetch<'a>(
        &'a self,
        pod: &'a Pod,
        refs: &'a crate::projection::References,
    ) -> futures_util::future::BoxFuture<'a, Result<crate::projection::ApiObjects, SourceError>>;
}

/// The volumes of a pod that come from outside the node: claims bound to PersistentVolumes and
/// CSI inline volumes (the apiserver and the CSI drivers in cluster mode:
/// [`crate::cluster::volumes`]; none in standalone mode).
pub trait PersistentVolumes: Send + Sync {
    /// What to mount for claim `claim` of `pod`: its bound PersistentVolume's source. With
    /// `ephemeral` (a generic ephemeral volume's claim) the claim must be controlled by the pod.
    fn claim<'a>(
        &'a self,
        pod: &'a Pod,
        claim: &'a str,
        ephemeral: bool,
    ) -> futures_util::future::BoxFuture<'a, Result<VolumeKind, SourceError>>;

    /// Publishes the CSI ephemeral inline volume `volume` of `pod` (a `csi:` volume source) and
    /// says what to mount.
    fn csi_inline<'a>(
        &'a self,
        pod: &'a Pod,
        volume: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<VolumeKind, SourceError>>;

    /// Undoes what [`PersistentVolumes::claim`] and [`PersistentVolumes::csi_inline`] did
    /// outside the pod folder (CSI unpublish and unstage), before the pod folder is torn down.
    fn release<'a>(
        &'a self,
        pod_uid: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), SourceError>>;
}

/// Removes the `/var/log/containers` symlinks that point into `pod_log_dir`.
pub fn remove_log_links(container_logs_dir: &Path, pod_log_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(container_logs_dir) else {
        return;
    };
    for e in entries.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            if target.starts_with(pod_log_dir) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The uids of pods the node has anything of: state folders, containers, sandboxes.
fn known_uids(ctx: &Ctx) -> HashSet<String> {
    let mut uids = HashSet::new();
    if let Ok(entries) = std::fs::read_dir(ctx.cfg.run_dir.join("pods")) {
        uids.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok()),
        );
    }
    for c in ctx.runtime.list() {
        if let Some(uid) = c.labels.get(LABEL_POD_UID) {
            uids.insert(uid.clone());
        }
    }
    uids.extend(ctx.runtime.list_sandboxes());
    uids
}

/// The last spec this node ran for `uid` (for terminating pods it no longer has a source for).
fn stored_pod(ctx: &Ctx, uid: &str) -> Pod {
    let path = status::pod_state_dir(&ctx.cfg.run_dir, uid).join(status::POD_FILE);
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| {
            let mut p = Pod::default();
            p.metadata.uid = Some(uid.to_string());
            p.metadata.name = Some(format!("orphan-{uid}"));
            p
        })
}

/// The agent's main loop in both modes: the pod manager, until SIGTERM/SIGINT. Pods keep
/// running after (a restarted bosun adopts them); with no pod left, nothing is left behind: the
/// runtime removes the sandboxes root mount and the empty kubepods cgroups, and the root dir's
/// bind onto itself (made for shared propagation) is removed.
pub async fn serve(ctx: Arc<Ctx>, desired: watch::Receiver<Option<Desired>>) -> anyhow::Result<()> {
    use anyhow::Context;
    let runtime = ctx.runtime.clone();
    let root_dir = ctx.cfg.root_dir.clone();
    let manager = tokio::spawn(run(ctx, desired));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = manager => { r.context("pod manager")?; }
    }
    match runtime.release_node() {
        // No pod left: the root dir's shared bind (if the agent made one) goes too.
        Ok(true) => {
            if let Err(e) = bosun_volumes::release_shared_mount(&root_dir) {
                tracing::debug!(error = %e, "the root dir's shared bind left in place");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "node-wide runtime state left in place"),
    }
    tracing::info!("bosun stopping; pods keep running");
    Ok(())
}

/// How long after the first full set of desired pods the agent gives back what only its
/// start-up used: long enough for the first node status, lease and pod syncs to be done.
const STARTUP_SETTLE: Duration = Duration::from_secs(5);

/// Once, [`STARTUP_SETTLE`] after start-up: the free C heap and the resident pages of the
/// agent's own code and constants go back to the kernel (`bosun_runtime::sys::
/// release_startup_memory`); what the steady state runs (sync loop, lease, status, pod starts)
/// is read back in on its first use, the rest (configuration, TLS bootstrap, registration)
/// stays out. Most of an idle agent's RSS was start-up code.
async fn release_startup_memory() {
    tokio::time::sleep(STARTUP_SETTLE).await;
    match tokio::task::spawn_blocking(bosun_runtime::sys::release_startup_memory).await {
        Ok(bytes) => tracing::debug!(kib = bytes / 1024, "paged out start-up code"),
        Err(e) => tracing::debug!(error = %e, "releasing start-up memory"),
    }
}

/// Keeps one worker per desired pod and terminates the rest. Runs until the source closes.
pub async fn run(ctx: Arc<Ctx>, mut desired: watch::Receiver<Option<Desired>>) {
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut events = ctx.runtime.subscribe();
    // The eviction manager sees the pods that run and tells which to evict.
    let (active_tx, active_rx) = watch::channel(Vec::new());
    let (evict_tx, mut evict_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(eviction::run(
        ctx.clone(),
        active_rx.clone(),
        evict_tx.clone(),
    ));
    // The node shutdown manager ends pods the same way.
    tokio::spawn(shutdown::run(ctx.clone(), active_rx, evict_tx));
    // Wait for the sources' first answer; what is an orphan is decided once all have answered.
    let mut current = loop {
        if let Some(d) = desired.borrow_and_update().clone() {
            break d;
        }
        if desired.changed().await.is_err() {
            return;
        }
    };
    tokio::spawn(release_startup_memory());
    let mut swept = false;
    let mut terminated: HashSet<String> = HashSet::new();
    loop {
        if !swept && current.all_sources {
            swept = true;
            sweep_orphans(&ctx, &mut workers, &current.pods).await;
        }
        crate::metrics::health::sync_loop_tick();
        reconcile(&ctx, &mut workers, &mut terminated, &current.pods);
        active_tx.send_replace(active_pods(&workers));
        tokio::select! {
            Some(ev) = evict_rx.recv() => {
                if let Some(w) = workers.get(&ev.uid) {
                    w.tx.send_if_modified(|cur| match cur.1 {
                        Intent::Run => {
                            cur.1 = Intent::Fail(ev.failure.clone());
                            true
                        }
                        _ => false,
                    });
                }
            }
            r = desired.changed() => {
                if r.is_err() {
                    return;
                }
                if let Some(d) = desired.borrow_and_update().clone() {
                    current = d;
                }
            }
            ev = events.recv() => {
                match ev {
                    Ok(RuntimeEvent::Exited { id, .. }) => {
                        let uid = ctx.runtime.status(&id).and_then(|s| s.labels.get(LABEL_POD_UID).cloned());
                        if let Some(w) = uid.and_then(|u| workers.get(&u)) {
                            w.wake.notify_one();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        for w in workers.values() {
                            w.wake.notify_one();
                        }
                    }
                    Err(_) => {}
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The pods the node has (state, containers, sandboxes, prepared claims) that no source wants:
/// decided once every source has answered, never before (the kubelet's "sources ready").
pub(crate) fn orphans(known: &HashSet<String>, desired: &DesiredPods) -> Vec<String> {
    let mut out: Vec<String> = known
        .iter()
        .filter(|uid| !desired.contains_key(*uid))
        .cloned()
        .collect();
    out.sort();
    out
}

/// Terminates the [`orphans`] and frees the user namespace ranges of pods the node has nothing of.
async fn sweep_orphans(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, WorkerHandle>,
    desired: &DesiredPods,
) {
    let mut known = known_uids(ctx);
    // Pods that hold prepared ResourceClaims: one gone while the agent was down is terminated
    // below, which unprepares its claims.
    if let Some(dra) = &ctx.dra {
        known.extend(dra.pods().await);
    }
    // ID ranges of pods the node has nothing of and no source wants are free again (the
    // kubelet's CleanupOrphanedPodUsernsAllocations).
    if let Some(a) = &ctx.userns {
        match a.retain(|uid| known.contains(uid) || desired.contains_key(uid)) {
            Ok(freed) if !freed.is_empty() => {
                tracing::info!(pods = ?freed, "freed the user namespace ranges of pods gone")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot free orphaned user namespace ranges"),
        }
    }
    for uid in orphans(&known, desired) {
        // A static pod already has its worker (started before the apiserver answered).
        if workers.contains_key(&uid) {
            continue;
        }
        let pod = stored_pod(ctx, &uid);
        tracing::info!(uid = %uid, pod = %pod_key(&pod), "terminating pod that is no longer wanted");
        let terminate = Intent::Terminate { grace: None };
        workers.insert(uid, worker::spawn(ctx.clone(), Arc::new(pod), terminate));
    }
}

/// The pods that run (admitted, not ending, not ended in the API).
fn active_pods(workers: &HashMap<String, WorkerHandle>) -> Vec<Arc<Pod>> {
    workers
        .values()
        .filter_map(|w| {
            let cur = w.tx.borrow();
            (cur.1 == Intent::Run && !api_terminal(&cur.0)).then(|| cur.0.clone())
        })
        .collect()
}

fn reconcile(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, WorkerHandle>,
    terminated: &mut HashSet<String>,
    desired: &DesiredPods,
) {
    workers.retain(|uid, w| {
        let finished = w.done.is_finished();
        if finished && matches!(w.tx.borrow().1, Intent::Terminate { .. }) {
            terminated.insert(uid.clone());
        }
        !finished
    });
    // Forget terminated pods once their source no longer lists them.
    terminated.retain(|uid| desired.contains_key(uid));
    let mut fresh: Vec<Arc<Pod>> = Vec::new();
    for (uid, pod) in desired {
        // Deleted in the API: terminate with the deletion's grace period (once: until the API's
        // delete event arrives, a pod already cleaned up is not terminated again).
        if pod.metadata.deletion_timestamp.is_some() {
            if terminated.contains(uid) && !workers.contains_key(uid) {
                continue;
            }
            let terminate = Intent::Terminate {
                grace: pod.metadata.deletion_grace_period_seconds,
            };
            match workers.get(uid) {
                None => {
                    workers.insert(
                        uid.clone(),
                        worker::spawn(ctx.clone(), pod.clone(), terminate),
                    );
                }
                Some(w) => {
                    w.tx.send_if_modified(|cur| match cur.1 {
                        Intent::Run | Intent::Fail(_) => {
                            *cur = (pod.clone(), terminate.clone());
                            true
                        }
                        Intent::Terminate { .. } => false,
                    });
                }
            }
            continue;
        }
        match workers.get(uid) {
            // New pods are admitted below, oldest first.
            None => fresh.push(pod.clone()),
            Some(w) => {
                w.tx.send_if_modified(|cur| match cur {
                    (p, Intent::Run) if !Arc::ptr_eq(p, pod) && **p != **pod => {
                        *cur = (pod.clone(), Intent::Run);
                        true
                    }
                    _ => false,
                });
            }
        }
    }
    // The kubelet's admission, in the order the pods were created, each against the pods
    // admitted before it; a pod the API says ended is not admitted again.
    fresh.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.clone(),
                p.metadata.uid.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    for pod in fresh {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let intent = if api_terminal(&pod) {
            Intent::Run
        } else {
            // The others as allocated (a pending resize holds nothing yet).
            let running: Vec<Arc<Pod>> = active_pods(workers)
                .into_iter()
                .map(|p| {
                    let uid = p.metadata.uid.as_deref().unwrap_or_default();
                    ctx.allocated.get(uid).unwrap_or(p)
                })
                .collect();
            let others: Vec<&Pod> = running.iter().map(|p| p.as_ref()).collect();
            let admitted = if ctx.node_shutdown.active() {
                // The shutdown manager's admit handler.
                Err(worker::plan::PodFailure::rejected(
                    crate::shutdown::NOT_ADMITTED_REASON,
                    crate::shutdown::NOT_ADMITTED_MESSAGE,
                ))
            } else {
                eviction::admit(
                    &ctx.resources,
                    &device_allocatable(ctx, &uid),
                    &pod,
                    &others,
                )
            };
            match admitted {
                Ok(()) => Intent::Run,
                Err(failure) => {
                    tracing::warn!(pod = %pod_key(&pod), reason = %failure.reason, "pod rejected: {}", failure.event_message);
                    Intent::Fail(Arc::new(failure))
                }
            }
        };
        workers.insert(uid, worker::spawn(ctx.clone(), pod, intent));
    }
    for (uid, w) in workers.iter() {
        if desired.contains_key(uid) {
            continue;
        }
        w.tx.send_if_modified(|cur| match cur.1 {
            Intent::Run | Intent::Fail(_) => {
                cur.1 = Intent::Terminate { grace: None };
                true
            }
            Intent::Terminate { .. } => false,
        });
    }
}
