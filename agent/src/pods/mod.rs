//! Pods: the source of desired pods, the manager that keeps one worker per pod, and status.

pub mod backoff;
pub mod probing;
pub mod source;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bosun_runtime::image::ImageStore;
use bosun_runtime::{HostRuntime, RuntimeEvent};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::config::Config;
use crate::translate::VolumeKind;
use source::DesiredPods;
use worker::{Desired, WorkerHandle, LABEL_POD_UID};

/// A pod status for the apiserver (cluster mode), or `status: None` once the pod is terminated
/// and cleaned up: then the pod object is deleted (grace 0, uid precondition).
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub status: Option<k8s_openapi::api::core::v1::PodStatus>,
    /// A static pod: the status goes to its mirror pod (whatever the mirror's uid), and the
    /// mirror pod is deleted by the mirror manager, not here.
    pub mirror: bool,
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
pub fn emit(ctx: &Ctx, pod: &Pod, container: Option<&str>, type_: &str, reason: &str, msg: &str) {
    if type_ == "Warning" {
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
            type_: type_.to_string(),
            reason: reason.to_string(),
            message: msg.to_string(),
            at: std::time::SystemTime::now(),
        });
    }
}

/// Has the API recorded that this pod ended (phase Succeeded or Failed, not being deleted)?
pub fn api_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded") | Some("Failed")) && pod.metadata.deletion_timestamp.is_none()
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
    pub runtime: HostRuntime,
    pub images: ImageStore,
    /// Pulls with policies, shared pulls and GC (the images issue).
    pub image_manager: Arc<crate::images::ImageManager>,
    /// The node's memory in bytes (oom_score_adj of burstable containers, resourceFieldRef).
    pub node_memory: u64,
    /// The node's CPUs in millicores (resourceFieldRef of an unset cpu limit).
    pub node_cpu_millis: u64,
    /// Cluster mode: where pod statuses and final deletions go.
    pub status_tx: Option<tokio::sync::mpsc::UnboundedSender<StatusUpdate>>,
    /// Cluster mode: configMaps, secrets and tokens for volumes and env.
    pub objects: Option<Arc<dyn ObjectSource>>,
    /// Cluster mode: where Events go.
    pub events_tx: Option<tokio::sync::mpsc::UnboundedSender<EventRecord>>,
}

/// Where the configMaps, secrets and service account tokens a pod refers to come from
/// (the apiserver in cluster mode: [`crate::cluster::objects`]; fakes in tests).
pub trait ObjectSource: Send + Sync {
    /// Everything in `refs`, for `pod`: missing objects as `None`, an error when the API
    /// cannot answer (and nothing was read before).
    fn fetch<'a>(
        &'a self,
        pod: &'a Pod,
        refs: &'a crate::projection::References,
    ) -> futures_util::future::BoxFuture<'a, Result<crate::projection::ApiObjects, String>>;

    /// What to mount for claim `claim` of `pod`: its bound PersistentVolume's source. With
    /// `ephemeral` (a generic ephemeral volume's claim) the claim must be controlled by the pod.
    fn claim<'a>(
        &'a self,
        pod: &'a Pod,
        claim: &'a str,
        ephemeral: bool,
    ) -> futures_util::future::BoxFuture<'a, Result<VolumeKind, String>>;

    /// Publishes the CSI ephemeral inline volume `volume` of `pod` (a `csi:` volume source) and
    /// says what to mount.
    fn csi_inline<'a>(
        &'a self,
        pod: &'a Pod,
        volume: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<VolumeKind, String>>;

    /// The figures of the volumes mounted for pods that a driver measures (CSI
    /// NodeGetVolumeStats), for `/stats/summary` and `/metrics`.
    fn volume_samples(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Vec<crate::server::stats::VolumeSample>> {
        Box::pin(async { Vec::new() })
    }

    /// Undoes what [`ObjectSource::claim`] did outside the pod folder (CSI unpublish and
    /// unstage), before the pod folder is torn down.
    fn release<'a>(
        &'a self,
        pod_uid: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>>;
}

/// Maps the translated volume description to the volumes crate's source.
pub fn volume_source(kind: &VolumeKind) -> Result<bosun_volumes::VolumeSource, String> {
    Ok(match kind {
        VolumeKind::EmptyDir { memory, size_limit } => bosun_volumes::VolumeSource::EmptyDir {
            medium: if *memory {
                bosun_volumes::Medium::Memory
            } else {
                bosun_volumes::Medium::Disk
            },
            size_limit: *size_limit,
        },
        VolumeKind::HostPath { path, type_ } => bosun_volumes::VolumeSource::HostPath {
            path: path.into(),
            kind: type_.parse().map_err(|e| format!("hostPath {path}: {e}"))?,
        },
        VolumeKind::Local { path, block } => bosun_volumes::VolumeSource::HostPath {
            path: path.into(),
            kind: if *block {
                bosun_volumes::HostPathType::BlockDevice
            } else {
                bosun_volumes::HostPathType::Directory
            },
        },
        VolumeKind::ApiData(plugin) => bosun_volumes::VolumeSource::ApiData { plugin: *plugin },
        VolumeKind::Claim { claim } | VolumeKind::EphemeralClaim { claim } => {
            return Err(format!(
                "persistentvolumeclaim {claim:?} must be resolved to its volume first"
            ))
        }
        VolumeKind::CsiInline { driver } => {
            return Err(format!(
                "CSI inline volume of driver {driver} must be published first"
            ))
        }
    })
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
    uids.extend(bosun_runtime::sandbox::list(ctx.runtime.paths()));
    uids
}

/// The last spec this node ran for `uid` (for terminating pods it no longer has a source for).
fn stored_pod(ctx: &Ctx, uid: &str) -> Pod {
    let path = status::pod_state_dir(&ctx.cfg.run_dir, uid).join("pod.json");
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

/// The agent's main loop in both modes: image GC, the pod manager, until SIGTERM/SIGINT. Pods
/// keep running after (a restarted bosun adopts them); with no pod left, nothing is left behind:
/// the sandboxes root mount and the empty kubepods cgroups are removed.
pub async fn serve(
    ctx: Arc<Ctx>,
    desired: watch::Receiver<Option<DesiredPods>>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let paths = ctx.runtime.paths().clone();
    // Image GC every 5 minutes, as the kubelet.
    tokio::spawn(crate::images::gc_loop(
        ctx.clone(),
        Duration::from_secs(300),
    ));
    let manager = tokio::spawn(run(ctx, desired));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = manager => { r.context("pod manager")?; }
    }
    if bosun_runtime::sandbox::list(&paths).is_empty() {
        let _ = bosun_runtime::sandbox::release_root(&paths);
        if let Ok(layout) = bosun_runtime::cgroups::CgroupLayout::host(&paths.cgroup_root) {
            if let Err(e) = layout.remove_all() {
                tracing::debug!(error = %e, "kubepods cgroups left in place");
            }
        }
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
pub async fn run(ctx: Arc<Ctx>, mut desired: watch::Receiver<Option<DesiredPods>>) {
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut events = ctx.runtime.subscribe();
    // Wait for the source's first full answer before deciding what is an orphan.
    let mut current = loop {
        if let Some(d) = desired.borrow_and_update().clone() {
            break d;
        }
        if desired.changed().await.is_err() {
            return;
        }
    };
    tokio::spawn(release_startup_memory());
    for uid in known_uids(&ctx) {
        if !current.contains_key(&uid) {
            let pod = stored_pod(&ctx, &uid);
            tracing::info!(uid = %uid, pod = %worker::pod_key(&pod), "terminating pod that is no longer wanted");
            workers.insert(
                uid,
                worker::spawn(
                    ctx.clone(),
                    Desired::Terminate {
                        pod: Arc::new(pod),
                        grace: None,
                    },
                ),
            );
        }
    }
    let mut terminated: HashSet<String> = HashSet::new();
    loop {
        crate::server::health::sync_loop_tick();
        reconcile(&ctx, &mut workers, &mut terminated, &current);
        tokio::select! {
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

fn reconcile(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, WorkerHandle>,
    terminated: &mut HashSet<String>,
    desired: &DesiredPods,
) {
    workers.retain(|uid, w| {
        let finished = w.done.is_finished();
        if finished && matches!(*w.tx.borrow(), Desired::Terminate { .. }) {
            terminated.insert(uid.clone());
        }
        !finished
    });
    // Forget terminated pods once their source no longer lists them.
    terminated.retain(|uid| desired.contains_key(uid));
    for (uid, pod) in desired {
        // Deleted in the API: terminate with the deletion's grace period (once: until the API's
        // delete event arrives, a pod already cleaned up is not terminated again).
        if pod.metadata.deletion_timestamp.is_some() {
            if terminated.contains(uid) && !workers.contains_key(uid) {
                continue;
            }
            let grace = pod.metadata.deletion_grace_period_seconds;
            let terminate = Desired::Terminate {
                pod: pod.clone(),
                grace,
            };
            match workers.get(uid) {
                None => {
                    workers.insert(uid.clone(), worker::spawn(ctx.clone(), terminate));
                }
                Some(w) => {
                    w.tx.send_if_modified(|cur| match cur {
                        Desired::Run(_) => {
                            *cur = terminate;
                            true
                        }
                        Desired::Terminate { .. } => false,
                    });
                }
            }
            continue;
        }
        match workers.get(uid) {
            None => {
                workers.insert(
                    uid.clone(),
                    worker::spawn(ctx.clone(), Desired::Run(pod.clone())),
                );
            }
            Some(w) => {
                w.tx.send_if_modified(|cur| match cur {
                    Desired::Run(p) if !Arc::ptr_eq(p, pod) && **p != **pod => {
                        *cur = Desired::Run(pod.clone());
                        true
                    }
                    _ => false,
                });
            }
        }
    }
    for (uid, w) in workers.iter() {
        if desired.contains_key(uid) {
            continue;
        }
        w.tx.send_if_modified(|cur| match cur {
            Desired::Run(p) => {
                *cur = Desired::Terminate {
                    pod: p.clone(),
                    grace: None,
                };
                true
            }
            Desired::Terminate { .. } => false,
        });
    }
}
