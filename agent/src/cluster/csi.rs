//! CSI in cluster mode: driver discovery, the node's CSINode object, and mounting CSI
//! persistent volumes for pods (through `bosun_volumes::csi`, at the kubelet's paths).
//!
//! For a CSI PV the worker gets: the CSIDriver's `attachRequired` (default true) honoured by
//! waiting for the VolumeAttachment the attach/detach controller creates (its
//! `attachmentMetadata` becomes the publish context), the stage and publish secrets the PV
//! names, `podInfoOnMount`, then NodeStageVolume (once per volume on the node) and
//! NodePublishVolume (once per pod). When a pod goes, its volumes are unpublished and a volume
//! no pod uses any more is unstaged.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_volumes::csi::{self, AccessMode, AccessType, CsiVolume, Drivers, PodInfo};
use bosun_volumes::ownership;
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSINodeDriver, CSINodeSpec, VolumeAttachment, VolumeNodeResources,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;

/// Drivers, their discovery and the CSINode object of this node.
pub struct Csi {
    client: Client,
    node: String,
    root: PathBuf,
    pub drivers: Drivers,
    /// Pods whose CSI volumes a background task is still trying to unmount.
    retrying: Arc<Mutex<HashSet<String>>>,
    /// The CSI volumes set up for pods since this agent started, by (pod uid, spec name): what
    /// stats and expansion need (a restarted agent fills it again as workers set up volumes).
    mounted: Arc<Mutex<BTreeMap<(String, String), Mounted>>>,
    /// The last volume figures and when they were taken: scrapes within [`STATS_TTL`] reuse
    /// them instead of asking every driver again (the kubelet caches them too).
    stats: Arc<tokio::sync::Mutex<Option<StatsCache>>>,
}

/// Where the CSI side sends its Events (expansion results, on the pod and its claim).
pub type Events = Option<tokio::sync::mpsc::UnboundedSender<crate::pods::EventRecord>>;

/// Volume figures and when they were taken.
type StatsCache = (std::time::Instant, Vec<crate::server::stats::VolumeSample>);

/// How long volume figures are reused.
const STATS_TTL: Duration = Duration::from_secs(10);

/// A CSI volume published for a pod.
#[derive(Clone, Debug)]
pub struct Mounted {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    /// The volume's name in the pod spec.
    pub volume: String,
    /// The claim (PVs; generic ephemeral volumes included); `None` for inline volumes.
    pub claim: Option<String>,
    pub vol: CsiVolume,
    pub target: PathBuf,
    pub staging: Option<PathBuf>,
}

impl Csi {
    /// Starts discovery in `<root>/plugins_registry`, the CSINode sync and the expansion checks
    /// (whose Events go to `events`).
    pub fn start(client: Client, node: String, root: PathBuf, events: Events) -> Self {
        let drivers = Drivers::default();
        let registry = root.join("plugins_registry");
        let _ = std::fs::create_dir_all(&registry);
        tokio::spawn(csi::run_discovery(
            registry,
            drivers.clone(),
            csi::DiscoveryOptions::default(),
        ));
        tokio::spawn(sync_csinode(client.clone(), node.clone(), drivers.clone()));
        let mounted: Arc<Mutex<BTreeMap<(String, String), Mounted>>> = Arc::default();
        tokio::spawn(expand_loop(
            client.clone(),
            drivers.clone(),
            mounted.clone(),
            events,
        ));
        Csi {
            client,
            node,
            root,
            drivers,
            retrying: Arc::default(),
            mounted,
            stats: Arc::default(),
        }
    }

    /// The CSI volume of PV `pv` for `pod`, as the driver will see it.
    async fn volume(
        &self,
        pod: &Pod,
        pv: &PersistentVolume,
        read_only: bool,
    ) -> Result<(CsiVolume, CSIDriver), String> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let spec = pv.spec.as_ref().ok_or("persistentvolume has no spec")?;
        let source = spec.csi.as_ref().ok_or("not a CSI volume")?;
        let drivers: Api<CSIDriver> = Api::all(self.client.clone());
        let driver_obj = drivers
            .get_opt(&source.driver)
            .await
            .map_err(|e| format!("cannot get CSIDriver {}: {e}", source.driver))?
            .unwrap_or_default();
        let mut vol = CsiVolume::new(&source.driver, &source.volume_handle, &name);
        vol.node_name = self.node.clone();
        vol.read_only = read_only || source.read_only.unwrap_or(false);
        vol.volume_context = source.volume_attributes.clone().unwrap_or_default();
        vol.access_type = if spec.volume_mode.as_deref() == Some("Block") {
            AccessType::Block
        } else {
            AccessType::Mount {
                fs_type: source.fs_type.clone().unwrap_or_default(),
                mount_flags: spec.mount_options.clone().unwrap_or_default(),
                volume_mount_group: String::new(),
            }
        };
        vol.access_mode = access_mode(spec.access_modes.as_deref().unwrap_or_default());
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(r) = &source.node_stage_secret_ref {
            vol.stage_secrets = self
                .secret(
                    r.namespace.as_deref().unwrap_or(ns),
                    r.name.as_deref().unwrap_or(""),
                )
                .await?;
        }
        if let Some(r) = &source.node_publish_secret_ref {
            vol.publish_secrets = self
                .secret(
                    r.namespace.as_deref().unwrap_or(ns),
                    r.name.as_deref().unwrap_or(""),
                )
                .await?;
        }
        let attach = driver_obj.spec.attach_required.unwrap_or(true);
        if attach {
            // Named after the volume handle, as the attach/detach controller names it.
            let id = csi::node::attachment_name(&source.volume_handle, &source.driver, &self.node);
            let vas: Api<VolumeAttachment> = Api::all(self.client.clone());
            // The Node authorizer lets a node read only the VolumeAttachments that name it: one
            // the attacher has not created yet is Forbidden, not NotFound.
            let va = match vas.get_opt(&id).await {
                Ok(va) => va,
                Err(kube::Error::Api(s)) if s.code == 403 => None,
                Err(e) => return Err(format!("cannot get VolumeAttachment {id}: {e}")),
            };
            let status = va.and_then(|v| v.status);
            match status {
                Some(s) if s.attached => {
                    vol.publish_context = s.attachment_metadata.unwrap_or_default();
                    vol.attachment_id = id;
                }
                _ => {
                    return Err(format!(
                        "volume {name} is not attached to node {} yet (VolumeAttachment {id})",
                        self.node
                    ))
                }
            }
        }
        Ok((vol, driver_obj))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let s = api
            .get(name)
            .await
            .map_err(|e| format!("cannot get secret {ns}/{name}: {e}"))?;
        Ok(s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }

    /// Publishes the CSI ephemeral inline volume `volume` (source `source`) of `pod`: only when
    /// the CSIDriver lists the `Ephemeral` lifecycle mode; never staged; the volume handle is
    /// the kubelet's (`csi-<sha256(pod uid + volume name)>`). Returns the path to bind.
    pub async fn mount_inline(
        &self,
        pod: &Pod,
        volume: &str,
        source: &CSIVolumeSource,
        tokens: Option<ServiceAccountTokens>,
    ) -> Result<PathBuf, String> {
        let drivers: Api<CSIDriver> = Api::all(self.client.clone());
        let driver_obj = drivers
            .get_opt(&source.driver)
            .await
            .map_err(|e| format!("cannot get CSIDriver {}: {e}", source.driver))?;
        let mut vol = inline_volume(pod, volume, source, driver_obj.as_ref(), &self.node)?;
        if let Some(r) = &source.node_publish_secret_ref {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            vol.publish_secrets = self.secret(ns, &r.name).await?;
        }
        self.wait_for_driver(&vol.driver).await?;
        let fs_group = self.fs_group_plan(pod, &mut vol, driver_obj.as_ref(), None);
        let mut info = pod_info(pod, driver_obj.as_ref());
        info.ephemeral = true;
        give_tokens(&mut vol, &mut info, tokens);
        self.publish(volume, None, vol, &info, fs_group, None).await
    }

    fn remember(&self, m: Mounted) {
        if let Ok(mut map) = self.mounted.lock() {
            map.insert((m.pod_uid.clone(), m.vol.spec_name.clone()), m);
        }
    }

    /// NodeGetVolumeStats of every volume mounted for a pod, from drivers with the
    /// GET_VOLUME_STATS capability (5 s each at most; failures leave the volume out), reused
    /// for [`STATS_TTL`].
    pub async fn volume_samples(&self) -> Vec<crate::server::stats::VolumeSample> {
        // One measurement at a time; concurrent scrapes wait for it and share it.
        let mut cache = self.stats.lock().await;
        if let Some((at, v)) = cache.as_ref().filter(|(at, _)| at.elapsed() < STATS_TTL) {
            tracing::trace!(age = ?at.elapsed(), "volume stats from the cache");
            return v.clone();
        }
        let out = self.measure_volumes().await;
        *cache = Some((std::time::Instant::now(), out.clone()));
        out
    }

    async fn measure_volumes(&self) -> Vec<crate::server::stats::VolumeSample> {
        let list: Vec<Mounted> = self
            .mounted
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for m in list {
            let call = csi::volume_stats(
                &self.drivers,
                &m.vol.driver,
                &m.vol.volume_handle,
                &m.target,
                m.staging.as_deref(),
            );
            match tokio::time::timeout(Duration::from_secs(5), call).await {
                Ok(Ok(s)) => out.push(crate::server::stats::VolumeSample {
                    pod_uid: m.pod_uid.clone(),
                    name: m.volume.clone(),
                    pvc: m.claim.clone().map(|c| (m.namespace.clone(), c)),
                    bytes: s.bytes.map(|b| (b.total, b.available, b.used)),
                    inodes: s.inodes.map(|i| (i.total, i.available, i.used)),
                    abnormal: s.condition.map(|c| c.0),
                }),
                Ok(Err(e)) => {
                    tracing::debug!(volume = %m.vol.spec_name, error = %e, "no volume stats")
                }
                Err(_) => {
                    tracing::debug!(volume = %m.vol.spec_name, "NodeGetVolumeStats timed out")
                }
            }
        }
        out
    }

    async fn wait_for_driver(&self, driver: &str) -> Result<(), String> {
        if self
            .drivers
            .wait_for(driver, Duration::from_secs(5))
            .await
            .is_none()
        {
            return Err(format!(
                "driver name {driver} not found in the list of registered CSI drivers"
            ));
        }
        Ok(())
    }

    /// Stages (when the driver does) and publishes PV `pv` for `pod`; returns the path to bind
    /// into its containers.
    pub async fn mount(
        &self,
        pod: &Pod,
        pv: &PersistentVolume,
        read_only: bool,
        volume: &str,
        claim: &str,
        tokens: Option<ServiceAccountTokens>,
    ) -> Result<PathBuf, String> {
        let (mut vol, driver) = self.volume(pod, pv, read_only).await?;
        self.wait_for_driver(&vol.driver).await?;
        let modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
        let fs_group = self.fs_group_plan(
            pod,
            &mut vol,
            Some(&driver),
            Some(modes.unwrap_or_default()),
        );
        let staging = csi::stage(&self.root, &self.drivers, &vol)
            .await
            .map_err(|e| e.to_string())?;
        let mut info = pod_info(pod, Some(&driver));
        give_tokens(&mut vol, &mut info, tokens);
        self.publish(volume, Some(claim), vol, &info, fs_group, staging)
            .await
    }

    /// NodePublishVolume of a staged (or never staged) volume for the pod, the fsGroup the plan
    /// asked for, and the volume remembered for stats, expansion and release.
    async fn publish(
        &self,
        volume: &str,
        claim: Option<&str>,
        vol: CsiVolume,
        info: &PodInfo,
        fs_group: Option<(u32, ownership::ChangePolicy)>,
        staging: Option<PathBuf>,
    ) -> Result<PathBuf, String> {
        let target = csi::publish(&self.root, &info.uid, &self.drivers, &vol, Some(info))
            .await
            .map_err(|e| e.to_string())?;
        apply_fs_group(&target, &vol, fs_group).await?;
        self.remember(Mounted {
            pod_uid: info.uid.clone(),
            pod_name: info.name.clone(),
            namespace: info.namespace.clone(),
            volume: volume.to_string(),
            claim: claim.map(str::to_string),
            vol,
            target: target.clone(),
            staging,
        });
        Ok(target)
    }

    /// How the pod's fsGroup reaches the volume (the kubelet's rules): through the driver
    /// (`volume_mount_group` set on `vol`) when the CSIDriver's fsGroupPolicy is `File` and the
    /// driver has VOLUME_MOUNT_GROUP; by the node after publishing (the returned group and
    /// policy) when [`applies_fs_group`] says so; not at all otherwise.
    fn fs_group_plan(
        &self,
        pod: &Pod,
        vol: &mut CsiVolume,
        driver: Option<&CSIDriver>,
        pv_access_modes: Option<Vec<String>>,
    ) -> Option<(u32, ownership::ChangePolicy)> {
        let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let gid = psc
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok())?;
        let change = ownership::ChangePolicy::from_api(
            psc.and_then(|s| s.fs_group_change_policy.as_deref()),
        );
        let policy = driver.and_then(|d| d.spec.fs_group_policy.clone());
        let mount_group = self
            .drivers
            .get(&vol.driver)
            .is_some_and(|d| d.capabilities.volume_mount_group);
        if mount_group && policy.as_deref() == Some("File") {
            if let AccessType::Mount {
                volume_mount_group, ..
            } = &mut vol.access_type
            {
                *volume_mount_group = gid.to_string();
            }
            return None;
        }
        let fs_type = match &vol.access_type {
            AccessType::Mount { fs_type, .. } => fs_type.as_str(),
            AccessType::Block => return None,
        };
        applies_fs_group(
            policy.as_deref(),
            fs_type,
            vol.read_only,
            pv_access_modes.as_deref(),
        )
        .then_some((gid, change))
    }

    /// Unpublishes every CSI volume of the pod (found on disk, so it works after a restart)
    /// and unstages the ones no other pod uses. When that fails (the driver is down, e.g. its
    /// DaemonSet pod restarting), it is retried in the background until it works, and only then
    /// is the pod folder removed, as the kubelet's volume manager does for an orphaned pod: the
    /// mount must neither leak nor have the pod folder's removal delete the volume's data.
    pub async fn unmount_pod(&self, pod_uid: &str) -> Result<(), String> {
        if let Ok(mut map) = self.mounted.lock() {
            map.retain(|(uid, _), _| uid != pod_uid);
        }
        let Err(e) = unmount_pod_volumes(&self.root, &self.drivers, pod_uid).await else {
            return Ok(());
        };
        let first = self
            .retrying
            .lock()
            .map(|mut s| s.insert(pod_uid.to_string()))
            .unwrap_or(false);
        if first {
            let (root, drivers, retrying) = (
                self.root.clone(),
                self.drivers.clone(),
                self.retrying.clone(),
            );
            let uid = pod_uid.to_string();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UNMOUNT_RETRY).await;
                    match unmount_pod_volumes(&root, &drivers, &uid).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::debug!(pod_uid = %uid, error = %e, "CSI unmount retry failed")
                        }
                    }
                }
                match bosun_volumes::layout::pod_dir(&root, &uid) {
                    Ok(dir) => match bosun_volumes::teardown_pod(&dir) {
                        Ok(()) => {
                            tracing::info!(pod_uid = %uid, "CSI volumes unmounted on retry; pod folder removed")
                        }
                        Err(e) => {
                            tracing::warn!(pod_uid = %uid, error = %e, "cannot remove the pod folder")
                        }
                    },
                    Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "invalid pod folder"),
                }
                if let Ok(mut s) = retrying.lock() {
                    s.remove(&uid);
                }
            });
        }
        Err(format!("{e} (retrying every {}s)", UNMOUNT_RETRY.as_secs()))
    }
}

/// How often the claims of mounted CSI volumes are checked for a pending node expansion.
const EXPAND_PERIOD: Duration = Duration::from_secs(5);

/// What to do about a mounted volume's claim (the kubelet's online expansion precheck).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expansion {
    /// Nothing: the PV is no larger than the claim's status capacity, or the resizer has not
    /// asked for the node's part (no `NodeResizePending` / `NodeResizeInProgress`).
    None,
    /// NodeExpandVolume to `bytes` (the PV's capacity, as a quantity string too), then record it
    /// in the claim's status.
    Expand { bytes: i64, quantity: String },
}

fn storage_bytes(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<i64> {
    let q = q?;
    crate::translate::parse_quantity(&q.0)
        .ok()
        .and_then(|p| i64::try_from(p.value()).ok())
}

/// The kubelet's decision for a mounted volume: the PV's capacity is larger than the claim's
/// status capacity and the claim's `allocatedResourceStatuses[storage]` is `NodeResizePending`
/// (or `NodeResizeInProgress`, a node expansion that did not finish).
pub fn expansion(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Expansion {
    let pv_q = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref()?.get("storage"));
    let status = pvc.status.as_ref();
    let pvc_bytes = storage_bytes(status.and_then(|s| s.capacity.as_ref()?.get("storage")));
    let (Some(pv_bytes), Some(pv_q)) = (storage_bytes(pv_q), pv_q) else {
        return Expansion::None;
    };
    if pvc_bytes.is_some_and(|c| c >= pv_bytes) {
        return Expansion::None;
    }
    let resize = status
        .and_then(|s| s.allocated_resource_statuses.as_ref()?.get("storage"))
        .map(String::as_str);
    match resize {
        Some("NodeResizePending" | "NodeResizeInProgress") => Expansion::Expand {
            bytes: pv_bytes,
            quantity: pv_q.0.clone(),
        },
        _ => Expansion::None,
    }
}

/// The claim status patch that ends a node expansion (the kubelet's `MarkFSResizeFinished`):
/// the new capacity, the resize status removed, the resize conditions dropped; with the
/// resourceVersion seen, so a concurrent change wins.
pub fn resize_finished_patch(pvc: &PersistentVolumeClaim, quantity: &str) -> serde_json::Value {
    let conditions: Vec<_> = pvc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "FileSystemResizePending" && c.type_ != "Resizing")
        .collect();
    serde_json::json!({
        "metadata": {"resourceVersion": pvc.metadata.resource_version},
        "status": {
            "capacity": {"storage": quantity},
            "allocatedResourceStatuses": {"storage": null},
            "conditions": conditions,
        }
    })
}

/// How a failed NodeExpandVolume ends (the kubelet's `NodeExpander`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandFailure {
    /// The driver is not there (not registered): nothing recorded, tried again.
    Transient,
    /// The driver failed: the claim gets the `NodeResizeError` condition, tried again.
    Final,
    /// The driver says it cannot be done (InvalidArgument, OutOfRange, NotFound): the claim is
    /// also marked `NodeResizeInfeasible`, and the node tries no more.
    Infeasible,
}

/// What a failed NodeExpandVolume means and the kubelet's words for it.
pub fn expand_failure(e: &csi::ExpandError) -> (ExpandFailure, String) {
    match e {
        csi::ExpandError::Rpc { failure, .. } => {
            if failure.infeasible() {
                (
                    ExpandFailure::Infeasible,
                    format!("Expander.NodeExpand failed to expand the volume {failure}"),
                )
            } else {
                (
                    ExpandFailure::Final,
                    format!("Expander.NodeExpand failed to expand the volume : {failure}"),
                )
            }
        }
        csi::ExpandError::DriverNotRegistered { driver } => (
            ExpandFailure::Transient,
            format!("driver name {driver} not found in the list of registered CSI drivers"),
        ),
        other => (ExpandFailure::Final, other.to_string()),
    }
}

/// The claim status patch after a failed node expansion (the kubelet's
/// `MarkNodeExpansionFailedCondition` and `MarkNodeExpansionInfeasible`): the `NodeResizeError`
/// condition (replacing an earlier one, other conditions kept) and, when infeasible, the resize
/// status `NodeResizeInfeasible`. `None` for a transient failure.
pub fn resize_failed_patch(
    pvc: &PersistentVolumeClaim,
    failure: &ExpandFailure,
    message: &str,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<serde_json::Value> {
    if *failure == ExpandFailure::Transient {
        return None;
    }
    let mut conditions: Vec<serde_json::Value> = pvc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "NodeResizeError")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(serde_json::json!({
        "type": "NodeResizeError",
        "status": "True",
        "lastTransitionTime": now,
        "message": format!("failed to expand pvc with {message}"),
    }));
    let mut status = serde_json::json!({"conditions": conditions});
    if *failure == ExpandFailure::Infeasible {
        status["allocatedResourceStatuses"] =
            serde_json::json!({"storage": "NodeResizeInfeasible"});
    }
    Some(serde_json::json!({ "status": status }))
}

/// Checks the claims of the mounted CSI volumes every [`EXPAND_PERIOD`] and expands on the node
/// what the resizer grew.
async fn expand_loop(
    client: Client,
    drivers: Drivers,
    mounted: Arc<Mutex<BTreeMap<(String, String), Mounted>>>,
    events: Events,
) {
    loop {
        tokio::time::sleep(EXPAND_PERIOD).await;
        let list: Vec<Mounted> = mounted
            .lock()
            .map(|m| m.values().filter(|m| m.claim.is_some()).cloned().collect())
            .unwrap_or_default();
        for m in list {
            if let Err(e) = expand_one(&client, &drivers, &m, &events).await {
                tracing::warn!(pod_uid = %m.pod_uid, volume = %m.volume, error = %e, "MountVolume.NodeExpandVolume failed");
            }
        }
    }
}

/// Sends an Event about the pod of `m` or, with `claim_uid`, about its claim.
fn volume_event(
    events: &Events,
    m: &Mounted,
    claim_uid: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let Some(tx) = events else { return };
    let (kind, name, uid) = match claim_uid {
        Some(uid) => (
            "PersistentVolumeClaim",
            m.claim.clone().unwrap_or_default(),
            uid.to_string(),
        ),
        None => ("Pod", m.pod_name.clone(), m.pod_uid.clone()),
    };
    let _ = tx.send(crate::pods::EventRecord {
        kind,
        namespace: m.namespace.clone(),
        name,
        uid,
        field_path: None,
        type_: type_.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        at: std::time::SystemTime::now(),
    });
}

async fn expand_one(
    client: &Client,
    drivers: &Drivers,
    m: &Mounted,
    events: &Events,
) -> Result<(), String> {
    let Some(claim) = &m.claim else {
        return Ok(());
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &m.namespace);
    let pvc = pvcs.get(claim).await.map_err(|e| e.to_string())?;
    // Most rounds end here, with one read: the resizer has asked nothing of the node.
    let asked = pvc
        .status
        .as_ref()
        .and_then(|s| s.allocated_resource_statuses.as_ref()?.get("storage"))
        .is_some_and(|r| r == "NodeResizePending" || r == "NodeResizeInProgress");
    if !asked {
        return Ok(());
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&m.vol.spec_name).await.map_err(|e| e.to_string())?;
    let Expansion::Expand { bytes, quantity } = expansion(&pvc, &pv) else {
        return Ok(());
    };
    let status = |p: serde_json::Value| {
        let pvcs = pvcs.clone();
        async move {
            pvcs.patch_status(claim, &PatchParams::default(), &Patch::Merge(&p))
                .await
                .map_err(|e| format!("cannot patch the status of claim {claim}: {e}"))
        }
    };
    // MarkNodeExpansionInProgress.
    let pvc = status(serde_json::json!({
        "metadata": {"resourceVersion": pvc.metadata.resource_version},
        "status": {"allocatedResourceStatuses": {"storage": "NodeResizeInProgress"}},
    }))
    .await?;
    match csi::expand(drivers, &m.vol, &m.target, m.staging.as_deref(), bytes).await {
        Ok(_) => {}
        // A driver without node expansion has nothing to do on the node.
        Err(csi::ExpandError::NotSupported { .. }) => {}
        Err(e) => {
            let (failure, message) = expand_failure(&e);
            let now = crate::pods::status::time(std::time::SystemTime::now());
            if let Some(p) = resize_failed_patch(&pvc, &failure, &message, now) {
                // Without the resourceVersion, as the kubelet does: the failure is recorded.
                status(p).await?;
            }
            volume_event(
                events,
                m,
                None,
                "Warning",
                "VolumeResizeFailed",
                &format!(
                    "NodeExpandVolume.NodeExpandVolume failed for volume {:?} : {message}",
                    m.vol.spec_name
                ),
            );
            return Err(message);
        }
    }
    status(resize_finished_patch(&pvc, &quantity)).await?;
    let message = format!(
        "MountVolume.NodeExpandVolume succeeded for volume {:?} {}",
        m.vol.spec_name, m.vol.node_name
    );
    let claim_uid = pvc.metadata.uid.clone().unwrap_or_default();
    for uid in [None, Some(claim_uid.as_str())] {
        volume_event(
            events,
            m,
            uid,
            "Normal",
            "FileSystemResizeSuccessful",
            &message,
        );
    }
    tracing::info!(pod_uid = %m.pod_uid, volume = %m.volume, claim = %claim, capacity = %quantity, "MountVolume.NodeExpandVolume succeeded");
    Ok(())
}

/// Whether the node applies the pod's fsGroup to a CSI volume itself (the kubelet's
/// `supportsFSGroup`), given the CSIDriver's `fsGroupPolicy` (unset:
/// `ReadWriteOnceWithFSType`), the volume's fs type, whether it is read-only and the PV's access
/// modes (`None` for an inline volume, which is always mounted read-write-once). Never for
/// read-only volumes or policy `None`; always for `File`; for `ReadWriteOnceWithFSType` only
/// with an fs type and (for a PV) a `ReadWriteOnce` access mode.
pub fn applies_fs_group(
    policy: Option<&str>,
    fs_type: &str,
    read_only: bool,
    pv_access_modes: Option<&[String]>,
) -> bool {
    if read_only {
        return false;
    }
    match policy.unwrap_or("ReadWriteOnceWithFSType") {
        "None" => false,
        "File" => true,
        _ => {
            !fs_type.is_empty()
                && pv_access_modes.is_none_or(|m| m.iter().any(|m| m == "ReadWriteOnce"))
        }
    }
}

/// Applies the fsGroup the plan asked for to a published volume (a walk: off the async threads).
async fn apply_fs_group(
    target: &Path,
    vol: &CsiVolume,
    plan: Option<(u32, ownership::ChangePolicy)>,
) -> Result<(), String> {
    let Some((gid, change)) = plan else {
        return Ok(());
    };
    let (dir, read_only) = (target.to_path_buf(), vol.read_only);
    tokio::task::spawn_blocking(move || {
        ownership::set_volume_ownership(&dir, gid, change, read_only)
    })
    .await
    .map_err(|e| e.to_string())?
    .map(|_| ())
    .map_err(|e| format!("applyFSGroup failed for vol {}: {e}", vol.volume_handle))
}

/// The service account tokens a CSIDriver asked for (`tokenRequests`), as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountTokens {
    pub json: String,
    /// `serviceAccountTokenInSecrets`: in NodePublishVolume's secrets, not its volume context.
    pub in_secrets: bool,
}

/// The kubelet's `csi.storage.k8s.io/serviceAccount.tokens` value: a JSON object of audience
/// -> `{token, expirationTimestamp}` (RFC 3339, seconds).
pub fn tokens_json(tokens: &[(String, String, std::time::SystemTime)]) -> String {
    let mut m = serde_json::Map::new();
    for (audience, token, expires) in tokens {
        let at = k8s_openapi::jiff::Timestamp::try_from(*expires)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        m.insert(
            audience.clone(),
            serde_json::json!({"token": token, "expirationTimestamp": at}),
        );
    }
    serde_json::Value::Object(m).to_string()
}

/// Hands the tokens to the driver where the CSIDriver wants them.
fn give_tokens(vol: &mut CsiVolume, info: &mut PodInfo, tokens: Option<ServiceAccountTokens>) {
    let Some(t) = tokens else { return };
    if t.in_secrets {
        vol.publish_secrets.insert(
            csi::pod_info_keys::SERVICE_ACCOUNT_TOKENS.to_string(),
            t.json,
        );
    } else {
        info.service_account_tokens = Some(t.json);
    }
}

/// The pod, for the volume context keys the CSIDriver asks for (`podInfoOnMount`).
fn pod_info(pod: &Pod, driver: Option<&CSIDriver>) -> PodInfo {
    PodInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        ephemeral: false,
        pod_info_on_mount: driver
            .and_then(|d| d.spec.pod_info_on_mount)
            .unwrap_or(false),
        service_account_tokens: None,
    }
}

/// The CSI volume of inline volume `volume` of `pod` (pure): refused unless the CSIDriver
/// lists the `Ephemeral` lifecycle mode (without a CSIDriver object only `Persistent` is, as in
/// the kubelet), with the kubelet's volume handle, the volume's attributes as the context and
/// the single-node-writer access mode the kubelet uses for inline volumes.
pub fn inline_volume(
    pod: &Pod,
    volume: &str,
    source: &CSIVolumeSource,
    driver: Option<&CSIDriver>,
    node: &str,
) -> Result<CsiVolume, String> {
    let modes = driver
        .and_then(|d| d.spec.volume_lifecycle_modes.clone())
        .unwrap_or_else(|| vec!["Persistent".to_string()]);
    if !modes.iter().any(|m| m == "Ephemeral") {
        let list = modes
            .iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "volume mode \"Ephemeral\" not supported by driver {} (only supports [{list}])",
            source.driver
        ));
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let handle = csi::node::ephemeral_volume_handle(uid, volume);
    let mut vol = CsiVolume::new(&source.driver, &handle, volume);
    vol.lifecycle = csi::LifecycleMode::Ephemeral;
    vol.node_name = node.to_string();
    vol.read_only = source.read_only.unwrap_or(false);
    vol.volume_context = source.volume_attributes.clone().unwrap_or_default();
    vol.access_type = AccessType::Mount {
        fs_type: source.fs_type.clone().unwrap_or_default(),
        mount_flags: Vec::new(),
        volume_mount_group: String::new(),
    };
    vol.access_mode = AccessMode::SingleNodeWriter;
    Ok(vol)
}

/// How often an unmount that failed is tried again.
const UNMOUNT_RETRY: Duration = Duration::from_secs(5);

/// Unpublishes the pod's CSI volumes and unstages the ones no pod uses any more; goes on past
/// errors and returns the first.
async fn unmount_pod_volumes(root: &Path, drivers: &Drivers, pod_uid: &str) -> Result<(), String> {
    let pod_dir = bosun_volumes::layout::pod_dir(root, pod_uid).map_err(|e| e.to_string())?;
    let published = csi::published_volumes(&pod_dir).map_err(|e| e.to_string())?;
    let mut first = None;
    for spec in csi::block::published(&pod_dir) {
        let result = async {
            csi::block::unpublish(root, pod_uid, &spec, drivers)
                .await
                .map_err(|e| e.to_string())?;
            if csi::block::published_count(root, &spec).map_err(|e| e.to_string())? == 0 {
                csi::block::unstage(root, drivers, &spec)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    for p in published {
        let result = async {
            csi::unpublish(root, pod_uid, &p.spec_name, drivers)
                .await
                .map_err(|e| e.to_string())?;
            let users = csi::published_count(root, &p.data.driver_name, &p.data.volume_handle)
                .map_err(|e| e.to_string())?;
            if users == 0 {
                csi::unstage(root, drivers, &p.data.driver_name, &p.data.volume_handle)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The node's `volumesInUse`: every CSI volume staged on the node or published into a pod
/// folder, as `kubernetes.io/csi/<driver>^<volume handle>` (the kubelet's unique volume name),
/// sorted. Read from disk, so it is right after a restart too.
pub fn volumes_in_use(root: &std::path::Path) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let name = |driver: &str, handle: &str| format!("kubernetes.io/csi/{driver}^{handle}");
    for s in csi::staged_volumes(root).unwrap_or_default() {
        out.insert(name(&s.data.driver_name, &s.data.volume_handle));
    }
    for d in csi::block::volumes(root) {
        out.insert(name(&d.driver_name, &d.volume_handle));
    }
    if let Ok(pods) = std::fs::read_dir(root.join("pods")) {
        for p in pods.flatten() {
            for v in csi::published_volumes(&p.path()).unwrap_or_default() {
                out.insert(name(&v.data.driver_name, &v.data.volume_handle));
            }
        }
    }
    out.into_iter().collect()
}

/// The kubelet's mapping of PV access modes to the CSI access mode.
pub fn access_mode(modes: &[String]) -> AccessMode {
    let has = |m: &str| modes.iter().any(|x| x == m);
    if has("ReadWriteOncePod") {
        AccessMode::SingleNodeSingleWriter
    } else if has("ReadWriteMany") {
        AccessMode::MultiNodeMultiWriter
    } else if has("ReadOnlyMany") && !has("ReadWriteOnce") {
        AccessMode::MultiNodeReaderOnly
    } else {
        AccessMode::SingleNodeWriter
    }
}

/// The CSINode object this node should have for `drivers`.
pub fn csinode(node: &str, node_uid: &str, drivers: &[csi::Driver]) -> CSINode {
    CSINode {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: node_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: CSINodeSpec {
            drivers: drivers
                .iter()
                .map(|d| CSINodeDriver {
                    name: d.name.clone(),
                    node_id: d.node_id.clone(),
                    topology_keys: Some(d.topology_keys()),
                    allocatable: (d.max_volumes_per_node > 0).then_some(VolumeNodeResources {
                        count: Some(d.max_volumes_per_node as i32),
                    }),
                })
                .collect(),
        },
    }
}

/// Keeps the CSINode object (and the Node's topology labels) in step with the drivers.
async fn sync_csinode(client: Client, node: String, drivers: Drivers) {
    let nodes: Api<Node> = Api::all(client.clone());
    let api: Api<CSINode> = Api::all(client.clone());
    let mut rx = drivers.subscribe();
    loop {
        let list: Vec<csi::Driver> = rx.borrow_and_update().values().cloned().collect();
        let result = async {
            let n = nodes.get(&node).await?;
            let uid = n.metadata.uid.clone().unwrap_or_default();
            let want = csinode(&node, &uid, &list);
            match api.get_opt(&node).await? {
                None => {
                    api.create(&PostParams::default(), &want).await?;
                }
                Some(cur) if cur.spec != want.spec => {
                    let mut next = want.clone();
                    next.metadata.resource_version = cur.metadata.resource_version;
                    api.replace(&node, &PostParams::default(), &next).await?;
                }
                Some(_) => {}
            }
            // Topology segments become node labels, as the kubelet does.
            let mut labels = BTreeMap::new();
            for d in &list {
                for (k, v) in &d.topology {
                    labels.insert(k.clone(), v.clone());
                }
            }
            let current = n.metadata.labels.unwrap_or_default();
            if labels.iter().any(|(k, v)| current.get(k) != Some(v)) {
                let patch = serde_json::json!({"metadata": {"labels": labels}});
                nodes
                    .patch(
                        &node,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await?;
            }
            Ok::<(), kube::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot update the CSINode object; retrying");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_in_use_from_disk() {
        let td = tempfile::tempdir().expect("tempdir");
        let root = td.path();
        let vol = |driver: &str, handle: &str| csi::VolData {
            driver_name: driver.into(),
            volume_handle: handle.into(),
            ..Default::default()
        };
        let stage = bosun_volumes::layout::csi_stage_dir(root, "d1", "h1").expect("stage dir");
        std::fs::create_dir_all(&stage).expect("mkdir");
        csi::voldata::write(&stage, &vol("d1", "h1")).expect("write");
        for (pod, handle) in [("p1", "h1"), ("p2", "h2")] {
            let pod_dir = bosun_volumes::layout::pod_dir(root, pod).expect("pod dir");
            let dir = bosun_volumes::layout::csi_publish_dir(&pod_dir, "pv").expect("dir");
            std::fs::create_dir_all(&dir).expect("mkdir");
            csi::voldata::write(&dir, &vol("d1", handle)).expect("write");
        }
        assert_eq!(
            volumes_in_use(root),
            ["kubernetes.io/csi/d1^h1", "kubernetes.io/csi/d1^h2"]
        );
        assert!(volumes_in_use(&root.join("nothing")).is_empty());
    }

    #[test]
    fn inline_volumes_need_the_ephemeral_mode() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p, namespace: ns, uid: uid-1}\nspec: {containers: []}",
        )
        .expect("pod");
        let source: CSIVolumeSource = serde_yaml::from_str(
            "{driver: d.csi, readOnly: true, fsType: ext4, volumeAttributes: {size: 1Mi}}",
        )
        .expect("source");
        let driver = |modes: &str| -> CSIDriver {
            serde_yaml::from_str(&format!(
                "metadata: {{name: d.csi}}\nspec: {{volumeLifecycleModes: {modes}}}"
            ))
            .expect("driver")
        };
        let e = inline_volume(&pod, "v", &source, None, "n").expect_err("no CSIDriver");
        assert_eq!(
            e,
            "volume mode \"Ephemeral\" not supported by driver d.csi (only supports [\"Persistent\"])"
        );
        let e = inline_volume(&pod, "v", &source, Some(&driver("[Persistent]")), "n")
            .expect_err("persistent only");
        assert!(e.contains("not supported by driver d.csi"), "{e}");
        let v = inline_volume(
            &pod,
            "v",
            &source,
            Some(&driver("[Persistent, Ephemeral]")),
            "n",
        )
        .expect("ephemeral");
        assert_eq!(
            v.volume_handle,
            csi::node::ephemeral_volume_handle("uid-1", "v")
        );
        assert!(v.volume_handle.starts_with("csi-"));
        assert_eq!(v.spec_name, "v");
        assert_eq!(v.lifecycle, csi::LifecycleMode::Ephemeral);
        assert!(v.read_only);
        assert_eq!(
            v.volume_context.get("size").map(String::as_str),
            Some("1Mi")
        );
        assert_eq!(v.access_mode, AccessMode::SingleNodeWriter);
        assert!(
            matches!(v.access_type, AccessType::Mount { ref fs_type, .. } if fs_type == "ext4")
        );
    }

    #[test]
    fn expansion_when_the_resizer_asks_the_node() {
        let pv: PersistentVolume =
            serde_yaml::from_str("metadata: {name: pv}\nspec: {capacity: {storage: 2Mi}}")
                .expect("pv");
        let pvc = |status: &str| -> PersistentVolumeClaim {
            serde_yaml::from_str(&format!(
                "metadata: {{name: c, resourceVersion: '7'}}\nspec: {{}}\nstatus: {status}"
            ))
            .expect("pvc")
        };
        let grow = Expansion::Expand {
            bytes: 2 << 20,
            quantity: "2Mi".into(),
        };
        let pending = pvc(
            "{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizePending}}",
        );
        assert_eq!(expansion(&pending, &pv), grow);
        assert_eq!(
            expansion(&pvc("{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizeInProgress}}"), &pv),
            grow
        );
        // The controller's part is not done, or an old resizer (no status): nothing.
        assert_eq!(
            expansion(&pvc("{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: ControllerResizeInProgress}}"), &pv),
            Expansion::None
        );
        assert_eq!(
            expansion(&pvc("{capacity: {storage: 1Mi}}"), &pv),
            Expansion::None
        );
        // Already as large as the PV (1048576 bytes is 1Mi).
        assert_eq!(
            expansion(&pvc("{capacity: {storage: '2097152'}, allocatedResourceStatuses: {storage: NodeResizePending}}"), &pv),
            Expansion::None
        );

        let with_conditions = pvc("{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizeInProgress}, conditions: [{type: FileSystemResizePending, status: 'True'}, {type: Resizing, status: 'True'}, {type: ModifyingVolume, status: 'True'}]}");
        let p = resize_finished_patch(&with_conditions, "2Mi");
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        assert_eq!(p["status"]["capacity"]["storage"], "2Mi");
        assert!(p["status"]["allocatedResourceStatuses"]["storage"].is_null());
        assert!(p["status"]["allocatedResourceStatuses"]
            .as_object()
            .is_some_and(|o| o.contains_key("storage")));
        let types: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["ModifyingVolume"]);
    }

    #[test]
    fn failed_expansions_like_the_kubelet() {
        let rpc = |s: tonic::Status| csi::ExpandError::Rpc {
            driver: "d".into(),
            volume_handle: "h".into(),
            failure: s.into(),
        };
        let (f, msg) = expand_failure(&rpc(tonic::Status::out_of_range("too big")));
        assert_eq!(f, ExpandFailure::Infeasible);
        assert_eq!(
            msg,
            "Expander.NodeExpand failed to expand the volume rpc error: code = OutOfRange desc = too big"
        );
        let (f, msg) = expand_failure(&rpc(tonic::Status::internal("disk on fire")));
        assert_eq!(f, ExpandFailure::Final);
        assert_eq!(
            msg,
            "Expander.NodeExpand failed to expand the volume : rpc error: code = Internal desc = disk on fire"
        );
        let (f, msg) = expand_failure(&csi::ExpandError::DriverNotRegistered {
            driver: "d.csi".into(),
        });
        assert_eq!(f, ExpandFailure::Transient);
        assert_eq!(
            msg,
            "driver name d.csi not found in the list of registered CSI drivers"
        );

        let pvc: PersistentVolumeClaim = serde_yaml::from_str(
            "metadata: {name: c}\nspec: {}\nstatus: {allocatedResourceStatuses: {storage: NodeResizeInProgress}, conditions: [{type: NodeResizeError, status: 'True', message: old}, {type: ModifyingVolume, status: 'True'}]}",
        )
        .expect("pvc");
        let now = crate::pods::status::time(std::time::UNIX_EPOCH);
        assert_eq!(
            resize_failed_patch(&pvc, &ExpandFailure::Transient, "m", now.clone()),
            None
        );
        let p = resize_failed_patch(&pvc, &ExpandFailure::Infeasible, "boom", now.clone())
            .expect("patch");
        assert_eq!(
            p["status"]["allocatedResourceStatuses"]["storage"],
            "NodeResizeInfeasible"
        );
        let conds = p["status"]["conditions"].as_array().expect("conditions");
        let types: Vec<&str> = conds.iter().filter_map(|c| c["type"].as_str()).collect();
        assert_eq!(types, ["ModifyingVolume", "NodeResizeError"]);
        assert_eq!(conds[1]["status"], "True");
        assert_eq!(conds[1]["message"], "failed to expand pvc with boom");
        assert_eq!(conds[1]["lastTransitionTime"], "1970-01-01T00:00:00Z");
        assert!(
            p.get("metadata").is_none(),
            "no resourceVersion: the failure is recorded"
        );
        // A failure that may pass: the condition only, the resize status stays.
        let p = resize_failed_patch(&pvc, &ExpandFailure::Final, "boom", now).expect("patch");
        assert!(p["status"].get("allocatedResourceStatuses").is_none());
        assert_eq!(p["status"]["conditions"][1]["type"], "NodeResizeError");
        // The node does not try a claim marked infeasible again.
        let pv: PersistentVolume =
            serde_yaml::from_str("metadata: {name: pv}\nspec: {capacity: {storage: 2Gi}}")
                .expect("pv");
        let marked: PersistentVolumeClaim = serde_yaml::from_str(
            "metadata: {name: c}\nspec: {}\nstatus: {capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizeInfeasible}}",
        )
        .expect("pvc");
        assert_eq!(expansion(&marked, &pv), Expansion::None);
    }

    #[test]
    fn service_account_tokens_like_the_kubelet() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let json = tokens_json(&[
            ("vault".into(), "t1".into(), at),
            ("".into(), "t2".into(), at),
        ]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["vault"]["token"], "t1");
        assert_eq!(v["vault"]["expirationTimestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(v[""]["token"], "t2");
        let t = ServiceAccountTokens {
            json: json.clone(),
            in_secrets: false,
        };
        let mut vol = CsiVolume::new("d", "h", "pv");
        let mut info = PodInfo::default();
        give_tokens(&mut vol, &mut info, Some(t.clone()));
        assert_eq!(info.service_account_tokens.as_deref(), Some(json.as_str()));
        assert!(vol.publish_secrets.is_empty());
        let mut info = PodInfo::default();
        give_tokens(
            &mut vol,
            &mut info,
            Some(ServiceAccountTokens {
                in_secrets: true,
                ..t
            }),
        );
        assert!(info.service_account_tokens.is_none());
        assert_eq!(
            vol.publish_secrets
                .get("csi.storage.k8s.io/serviceAccount.tokens")
                .map(String::as_str),
            Some(json.as_str())
        );
    }

    #[test]
    fn fs_group_policies_like_the_kubelet() {
        let rwo = vec!["ReadWriteOnce".to_string()];
        let rox = vec!["ReadOnlyMany".to_string()];
        // Default (ReadWriteOnceWithFSType): an fs type and RWO needed; inline counts as RWO.
        assert!(applies_fs_group(None, "ext4", false, Some(&rwo)));
        assert!(applies_fs_group(
            Some("ReadWriteOnceWithFSType"),
            "ext4",
            false,
            None
        ));
        assert!(!applies_fs_group(None, "", false, Some(&rwo)));
        assert!(!applies_fs_group(None, "ext4", false, Some(&rox)));
        assert!(!applies_fs_group(None, "ext4", false, Some(&[])));
        // File: always; None: never; read-only: never.
        assert!(applies_fs_group(Some("File"), "", false, Some(&rox)));
        assert!(!applies_fs_group(Some("None"), "ext4", false, Some(&rwo)));
        assert!(!applies_fs_group(Some("File"), "ext4", true, Some(&rwo)));
    }

    #[test]
    fn access_modes_like_the_kubelet() {
        let m = |v: &[&str]| access_mode(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(m(&["ReadWriteOnce"]), AccessMode::SingleNodeWriter);
        assert_eq!(m(&["ReadOnlyMany"]), AccessMode::MultiNodeReaderOnly);
        assert_eq!(m(&["ReadWriteMany"]), AccessMode::MultiNodeMultiWriter);
        assert_eq!(m(&["ReadWriteOncePod"]), AccessMode::SingleNodeSingleWriter);
        assert_eq!(m(&[]), AccessMode::SingleNodeWriter);
    }
}
