//! Node calls with the kubelet's paths: NodeStageVolume into
//! `<root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/globalmount`, NodePublishVolume
//! into `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`, each with the kubelet's
//! `vol_data.json` beside it, so that unpublish and unstage work from disk alone after a restart.
//! Every call is idempotent (CSI requires drivers to be, and bosun's own steps are).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info};

use super::proto::csi as pb;
use super::registry::{Driver, Drivers};
use super::voldata::{self, VolData, VolDataError};
use crate::layout::{self, InvalidName};
use crate::mounts;

/// Timeout of one node call (the kubelet's `csiTimeout`).
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed gRPC call, shown as the Go tools show it (`rpc error: code = NotFound desc = ...`),
/// which is what users see in the kubelet's `FailedMount` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcFailure {
    pub code: tonic::Code,
    pub message: String,
}

impl From<tonic::Status> for RpcFailure {
    fn from(s: tonic::Status) -> Self {
        RpcFailure {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl RpcFailure {
    /// Whether the driver says the call cannot succeed as asked: InvalidArgument, OutOfRange or
    /// NotFound (the kubelet's `isInfeasibleError` for NodeExpandVolume).
    pub fn infeasible(&self) -> bool {
        matches!(
            self.code,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::NotFound
        )
    }
}

impl fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpc error: code = {:?} desc = {}",
            self.code, self.message
        )
    }
}

impl std::error::Error for RpcFailure {}

/// How the volume is accessed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessType {
    /// A filesystem: `fs_type` (empty: the driver's default) and the PV's `mountOptions`.
    Mount {
        fs_type: String,
        mount_flags: Vec<String>,
        /// The pod's fsGroup when the driver has VOLUME_MOUNT_GROUP and the CSIDriver's
        /// fsGroupPolicy is `File`.
        volume_mount_group: String,
    },
    /// A raw block device (`volumeMode: Block`): staged and published at the kubelet's block
    /// paths (module [`super::block`]).
    Block,
}

impl Default for AccessType {
    fn default() -> Self {
        AccessType::Mount {
            fs_type: String::new(),
            mount_flags: Vec::new(),
            volume_mount_group: String::new(),
        }
    }
}

/// The CSI access mode, from the PV's access modes (the kubelet's mapping: `ReadWriteOnce` ->
/// [`AccessMode::SingleNodeWriter`], or `SingleNodeMultiWriter` when the driver has that
/// capability; `ReadOnlyMany` -> `MultiNodeReaderOnly`; `ReadWriteMany` -> `MultiNodeMultiWriter`;
/// `ReadWriteOncePod` -> `SingleNodeSingleWriter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessMode {
    #[default]
    SingleNodeWriter,
    SingleNodeReaderOnly,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
}

impl AccessMode {
    fn to_proto(self) -> pb::volume_capability::access_mode::Mode {
        use pb::volume_capability::access_mode::Mode;
        match self {
            AccessMode::SingleNodeWriter => Mode::SingleNodeWriter,
            AccessMode::SingleNodeReaderOnly => Mode::SingleNodeReaderOnly,
            AccessMode::MultiNodeReaderOnly => Mode::MultiNodeReaderOnly,
            AccessMode::MultiNodeSingleWriter => Mode::MultiNodeSingleWriter,
            AccessMode::MultiNodeMultiWriter => Mode::MultiNodeMultiWriter,
            AccessMode::SingleNodeSingleWriter => Mode::SingleNodeSingleWriter,
            AccessMode::SingleNodeMultiWriter => Mode::SingleNodeMultiWriter,
        }
    }
}

/// Whether the volume is a PV or a CSI inline volume of the pod (the kubelet's
/// `volumeLifecycleMode` in `vol_data.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LifecycleMode {
    #[default]
    Persistent,
    Ephemeral,
}

impl LifecycleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleMode::Persistent => "Persistent",
            LifecycleMode::Ephemeral => "Ephemeral",
        }
    }
}

/// One CSI volume as the agent resolved it from the PV (or the pod's inline `csi:` source), the
/// CSIDriver and the VolumeAttachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsiVolume {
    /// `spec.csi.driver`.
    pub driver: String,
    /// `spec.csi.volumeHandle` (for an inline volume, the kubelet makes one: see the agent).
    pub volume_handle: String,
    /// The PV name, or the pod's volume name for an inline volume: the folder under
    /// `volumes/kubernetes.io~csi/` (the kubelet's `specVolID`).
    pub spec_name: String,
    /// This node's name, recorded in `vol_data.json`.
    pub node_name: String,
    /// The VolumeAttachment's name when the driver requires attach, recorded in `vol_data.json`.
    pub attachment_id: String,
    pub lifecycle: LifecycleMode,
    pub access_type: AccessType,
    pub access_mode: AccessMode,
    /// The PV's `spec.csi.readOnly` or the pod's `readOnly` (publish only; staging is never
    /// read-only, as in the kubelet).
    pub read_only: bool,
    /// `spec.csi.volumeAttributes`.
    pub volume_context: BTreeMap<String, String>,
    /// The VolumeAttachment's `status.attachmentMetadata`.
    pub publish_context: BTreeMap<String, String>,
    /// From `spec.csi.nodeStageSecretRef`.
    pub stage_secrets: BTreeMap<String, String>,
    /// From `spec.csi.nodePublishSecretRef`.
    pub publish_secrets: BTreeMap<String, String>,
}

impl CsiVolume {
    /// A read-write filesystem volume with the driver's default fs type.
    pub fn new(driver: &str, volume_handle: &str, spec_name: &str) -> Self {
        CsiVolume {
            driver: driver.to_string(),
            volume_handle: volume_handle.to_string(),
            spec_name: spec_name.to_string(),
            ..Default::default()
        }
    }

    pub(crate) fn capability(&self) -> pb::VolumeCapability {
        use pb::volume_capability::{
            AccessMode as PbMode, AccessType as PbType, BlockVolume, MountVolume,
        };
        let access_type = match &self.access_type {
            AccessType::Mount {
                fs_type,
                mount_flags,
                volume_mount_group,
            } => PbType::Mount(MountVolume {
                fs_type: fs_type.clone(),
                mount_flags: mount_flags.clone(),
                volume_mount_group: volume_mount_group.clone(),
            }),
            AccessType::Block => PbType::Block(BlockVolume {}),
        };
        pb::VolumeCapability {
            access_mode: Some(PbMode {
                mode: self.access_mode.to_proto() as i32,
            }),
            access_type: Some(access_type),
        }
    }
}

/// The volume handle the kubelet makes for a CSI inline (ephemeral) volume:
/// `csi-<sha256 hex of pod uid + volume name>`.
pub fn ephemeral_volume_handle(pod_uid: &str, volume_name: &str) -> String {
    format!(
        "csi-{}",
        layout::volume_handle_hash(&format!("{pod_uid}{volume_name}"))
    )
}

/// The VolumeAttachment name the attach/detach controller gives a CSI volume on a node and the
/// kubelet looks for: `csi-<sha256 hex of volume handle + driver + node name>` (the kubelet's
/// `getAttachmentName`; the `attachmentID` of `vol_data.json`). The volume handle, not the PV
/// name: two PVs of one volume share the attachment.
pub fn attachment_name(volume_handle: &str, driver: &str, node_name: &str) -> String {
    format!(
        "csi-{}",
        layout::volume_handle_hash(&format!("{volume_handle}{driver}{node_name}"))
    )
}

/// The pod, for the volume context keys of `podInfoOnMount` and `tokenRequests`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
    /// The volume is a CSI inline volume of this pod.
    pub ephemeral: bool,
    /// Set only when the CSIDriver has `podInfoOnMount: true`: adds the pod keys.
    pub pod_info_on_mount: bool,
    /// The JSON of `{audience: {token, expirationTimestamp}}` when the CSIDriver has
    /// `tokenRequests`.
    pub service_account_tokens: Option<String>,
}

/// The volume context entries the kubelet adds for a pod (`podInfoOnMount`, `tokenRequests`).
pub fn pod_info_context(pod: &PodInfo) -> BTreeMap<String, String> {
    use super::pod_info_keys as k;
    let mut m = BTreeMap::new();
    if pod.pod_info_on_mount {
        m.insert(k::POD_NAME.to_string(), pod.name.clone());
        m.insert(k::POD_NAMESPACE.to_string(), pod.namespace.clone());
        m.insert(k::POD_UID.to_string(), pod.uid.clone());
        m.insert(
            k::SERVICE_ACCOUNT_NAME.to_string(),
            pod.service_account.clone(),
        );
        m.insert(k::EPHEMERAL.to_string(), pod.ephemeral.to_string());
    }
    if let Some(t) = &pod.service_account_tokens {
        m.insert(k::SERVICE_ACCOUNT_TOKENS.to_string(), t.clone());
    }
    m
}

fn timed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(NODE_CALL_TIMEOUT);
    r
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Why NodeStageVolume did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("CSI driver {driver} is not registered on this node")]
    DriverNotRegistered { driver: String },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    VolData(#[from] VolDataError),
    #[error("NodeStageVolume of {volume_handle} with {driver} failed: {failure}")]
    Rpc {
        driver: String,
        volume_handle: String,
        failure: RpcFailure,
    },
}

pub(super) fn driver_for<E>(
    drivers: &Drivers,
    name: &str,
    err: impl FnOnce(String) -> E,
) -> Result<Driver, E> {
    drivers.get(name).ok_or_else(|| err(name.to_string()))
}

/// Stages the volume (NodeStageVolume) when the driver has STAGE_UNSTAGE_VOLUME and returns the
/// staging path; `None` (nothing done) for drivers that do not stage. Writes `vol_data.json`
/// (`driverName`, `volumeHandle`) beside `globalmount` first, as the kubelet does, so a crash
/// mid-call still leaves what unstage needs. Idempotent.
#[tracing::instrument(level = "info", skip_all, fields(driver = %vol.driver, volume = %vol.volume_handle))]
pub async fn stage(
    root: &Path,
    drivers: &Drivers,
    vol: &CsiVolume,
) -> Result<Option<PathBuf>, StageError> {
    let driver = driver_for(drivers, &vol.driver, |driver| {
        StageError::DriverNotRegistered { driver }
    })?;
    if vol.access_type == AccessType::Block {
        return super::block::stage(root, drivers, vol).await;
    }
    // Inline ephemeral volumes are never staged (the kubelet has no device mount for them).
    if !driver.capabilities.stage_unstage || vol.lifecycle == LifecycleMode::Ephemeral {
        return Ok(None);
    }
    let dir = layout::csi_stage_dir(root, &vol.driver, &vol.volume_handle)?;
    let staging = dir.join(layout::CSI_GLOBAL_MOUNT);
    mkdir(&staging).map_err(|source| StageError::Create {
        path: staging.clone(),
        source,
    })?;
    voldata::write(&dir, &VolData::for_stage(vol))?;
    stage_rpc(&driver, vol, &staging).await?;
    info!(staging = %staging.display(), "staged");
    Ok(Some(staging))
}

/// Why NodePublishVolume did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("CSI driver {driver} is not registered on this node")]
    DriverNotRegistered { driver: String },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    VolData(#[from] VolDataError),
    #[error("NodePublishVolume of {volume_handle} with {driver} failed: {failure}")]
    Rpc {
        driver: String,
        volume_handle: String,
        failure: RpcFailure,
    },
}

/// Publishes the volume into the pod (NodePublishVolume) and returns the target path to bind
/// into its containers: `<root>/pods/<pod_uid>/volumes/kubernetes.io~csi/<spec_name>/mount`.
/// Creates the volume's folder (not `mount` itself: the driver creates the target, as with the
/// kubelet) and writes its `vol_data.json`; passes the staging path when the driver stages (call
/// [`stage`] first) and the pod's keys when `pod` asks for them. Idempotent.
#[tracing::instrument(level = "info", skip_all, fields(driver = %vol.driver, volume = %vol.volume_handle, pod = pod_uid))]
pub async fn publish(
    root: &Path,
    pod_uid: &str,
    drivers: &Drivers,
    vol: &CsiVolume,
    pod: Option<&PodInfo>,
) -> Result<PathBuf, PublishError> {
    let driver = driver_for(drivers, &vol.driver, |driver| {
        PublishError::DriverNotRegistered { driver }
    })?;
    if vol.access_type == AccessType::Block {
        return super::block::publish(root, pod_uid, drivers, vol, pod).await;
    }
    let pod_dir = layout::pod_dir(root, pod_uid)?;
    let dir = layout::csi_publish_dir(&pod_dir, &vol.spec_name)?;
    let target = dir.join(layout::CSI_PUBLISH_MOUNT);
    mkdir(&dir).map_err(|source| PublishError::Create {
        path: dir.clone(),
        source,
    })?;
    voldata::write(&dir, &VolData::for_publish(vol))?;
    let staging = if driver.capabilities.stage_unstage && vol.lifecycle == LifecycleMode::Persistent
    {
        path_string(&layout::csi_staging_path(
            root,
            &vol.driver,
            &vol.volume_handle,
        )?)
    } else {
        String::new()
    };
    publish_rpc(&driver, vol, pod, staging, &target).await?;
    info!(target = %target.display(), read_only = vol.read_only, "published");
    Ok(target)
}

/// Why NodeUnpublishVolume did not finish.
#[derive(Debug, thiserror::Error)]
pub enum UnpublishError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error(transparent)]
    VolData(#[from] VolDataError),
    #[error("CSI driver {driver} is not registered on this node")]
    DriverNotRegistered { driver: String },
    #[error("NodeUnpublishVolume of {volume_handle} with {driver} failed: {failure}")]
    Rpc {
        driver: String,
        volume_handle: String,
        failure: RpcFailure,
    },
    #[error("{} is still a mount point after NodeUnpublishVolume", path.display())]
    StillMounted { path: PathBuf },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unpublishes a volume from a pod from what is on disk alone (its `vol_data.json`), so it works
/// after a restart without the pod spec: NodeUnpublishVolume, then removes `mount` (never while
/// it is still a mount point), `vol_data.json` and the volume's folder. Idempotent: a volume
/// already gone is fine.
#[tracing::instrument(level = "info", skip(root, drivers))]
pub async fn unpublish(
    root: &Path,
    pod_uid: &str,
    spec_name: &str,
    drivers: &Drivers,
) -> Result<(), UnpublishError> {
    let pod_dir = layout::pod_dir(root, pod_uid)?;
    let dir = layout::csi_publish_dir(&pod_dir, spec_name)?;
    let target = dir.join(layout::CSI_PUBLISH_MOUNT);
    let Some(data) = voldata::read(&dir)? else {
        // No vol_data.json: either never published or already unpublished. An empty folder
        // left by a crash between mkdir and the write can go; a mount cannot be ours to undo.
        if mounts::is_mount_point(&target).unwrap_or(false) {
            return Err(UnpublishError::StillMounted { path: target });
        }
        return remove_publish_dir(&dir, &target);
    };
    let driver = driver_for(drivers, &data.driver_name, |driver| {
        UnpublishError::DriverNotRegistered { driver }
    })?;
    unpublish_rpc(&driver, &data.driver_name, &data.volume_handle, &target).await?;
    if mounts::is_mount_point(&target).unwrap_or(false) {
        return Err(UnpublishError::StillMounted { path: target });
    }
    remove_publish_dir(&dir, &target)?;
    info!(target = %target.display(), "unpublished");
    Ok(())
}

fn remove_publish_dir(dir: &Path, target: &Path) -> Result<(), UnpublishError> {
    let rm = |path: &Path, r: io::Result<()>| match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UnpublishError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    };
    // Plain rmdir: the target must be an empty folder once unmounted; never a recursive delete
    // of something a driver may still hold.
    rm(target, std::fs::remove_dir(target))?;
    let vd = dir.join(layout::VOL_DATA_FILE);
    rm(&vd, std::fs::remove_file(&vd))?;
    rm(dir, std::fs::remove_dir(dir))?;
    debug!(dir = %dir.display(), "publish folder removed");
    Ok(())
}

/// How many pods have `volume_handle` of `driver` published, counted from the `vol_data.json`
/// files under `<root>/pods/*/volumes/kubernetes.io~csi/`.
pub fn published_count(
    root: &Path,
    driver: &str,
    volume_handle: &str,
) -> Result<usize, VolDataError> {
    let pods = root.join(layout::PODS_DIR);
    let rd = match std::fs::read_dir(&pods) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(VolDataError::Read { path: pods, source }),
    };
    let mut n = 0;
    for pod in rd.flatten() {
        for v in voldata::published_volumes(&pod.path())? {
            if v.data.driver_name == driver && v.data.volume_handle == volume_handle {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Why NodeUnstageVolume did not finish.
#[derive(Debug, thiserror::Error)]
pub enum UnstageError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error(transparent)]
    VolData(#[from] VolDataError),
    #[error("volume {volume_handle} of {driver} is still published to {count} pod(s)")]
    InUse {
        driver: String,
        volume_handle: String,
        count: usize,
    },
    #[error("CSI driver {driver} is not registered on this node")]
    DriverNotRegistered { driver: String },
    #[error("NodeUnstageVolume of {volume_handle} with {driver} failed: {failure}")]
    Rpc {
        driver: String,
        volume_handle: String,
        failure: RpcFailure,
    },
    #[error("{} is still a mount point after NodeUnstageVolume", path.display())]
    StillMounted { path: PathBuf },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unstages a volume (NodeUnstageVolume) once no pod on this node has it published (counted
/// from disk: [`published_count`]; refuses with [`UnstageError::InUse`] otherwise), then removes
/// `globalmount`, `vol_data.json` and the hash folder. Idempotent: nothing staged is fine. Works
/// for drivers that do not stage (only the folder, if any, is removed).
#[tracing::instrument(level = "info", skip(root, drivers))]
pub async fn unstage(
    root: &Path,
    drivers: &Drivers,
    driver: &str,
    volume_handle: &str,
) -> Result<(), UnstageError> {
    let dir = layout::csi_stage_dir(root, driver, volume_handle)?;
    let staging = dir.join(layout::CSI_GLOBAL_MOUNT);
    let count = published_count(root, driver, volume_handle)?;
    if count > 0 {
        return Err(UnstageError::InUse {
            driver: driver.to_string(),
            volume_handle: volume_handle.to_string(),
            count,
        });
    }
    if !dir.exists() {
        return Ok(());
    }
    let d = driver_for(drivers, driver, |driver| {
        UnstageError::DriverNotRegistered { driver }
    })?;
    if d.capabilities.stage_unstage {
        unstage_rpc(&d, driver, volume_handle, &staging).await?;
    }
    if mounts::is_mount_point(&staging).unwrap_or(false) {
        return Err(UnstageError::StillMounted { path: staging });
    }
    let rm = |path: &Path, r: io::Result<()>| match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UnstageError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    };
    rm(&staging, std::fs::remove_dir(&staging))?;
    let vd = dir.join(layout::VOL_DATA_FILE);
    rm(&vd, std::fs::remove_file(&vd))?;
    rm(&dir, std::fs::remove_dir(&dir))?;
    info!(staging = %staging.display(), "unstaged");
    Ok(())
}

/// One line of NodeGetVolumeStats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    pub available: i64,
    pub total: i64,
    pub used: i64,
}

/// NodeGetVolumeStats, for volume metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub bytes: Option<VolumeUsage>,
    pub inodes: Option<VolumeUsage>,
    /// `Some((abnormal, message))` when the driver reports a volume condition.
    pub condition: Option<(bool, String)>,
}

/// Why NodeGetVolumeStats failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("CSI driver {driver} is not registered on this node")]
    DriverNotRegistered { driver: String },
    #[error("CSI driver {driver} does not report volume stats")]
    NotSupported { driver: String },
    #[error("NodeGetVolumeStats of {volume_handle} with {driver} failed: {failure}")]
    Rpc {
        driver: String,
        volume_handle: String,
        failure: RpcFailure,
    },
}

/// NodeGetVolumeStats on a published (or staged) path.
pub async fn volume_stats(
    drivers: &Drivers,
    driver: &str,
    volume_handle: &str,
    volume_path: &Path,
    staging_path: Option<&Path>,
) -> Result<VolumeStats, StatsError> {
    let d = driver_for(drivers, driver, |driver| StatsError::DriverNotRegistered {
        driver,
    })?;
    if !d.capabilities.get_volume_stats {
        return Err(StatsError::NotSupported {
            driver: driver.to_string(),
        });
    }
    let req = pb::NodeGetVolumeStatsRequest {
        volume_id: volume_handle.to_string(),
        volume_path: path_string(volume_path),
        staging_target_path: staging_path.map(path_string).unwrap_or_default(),
    };
    let resp = d
        .node()
        .node_get_volume_stats(timed(req))
        .await
        .map_err(|s| StatsError::Rpc {
            driver: driver.to_string(),
            volume_handle: volume_handle.to_string(),
            failure: s.into(),
        })?
        .into_inner();
    let mut out = VolumeStats {
        condition: resp.volume_condition.map(|c| (c.abnormal, c.message)),
        ..Default::default()
    };
    for u in resp.usage {
        let usage = VolumeUsage {
            available: u.available,
            total: u.total,
            used: u.used,
        };
        match pb::volume_usage::Unit::try_from(u.unit) {
            Ok(pb::volume_usage::Unit::Bytes) => out.bytes = Some(usage),
            Ok(pb::volume_usage::Unit::Inodes) => out.inodes = Some(usage),
            _ => {}
        }
    }
    Ok(out)
}

/// Why NodeExpandVolume failed.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error("CSI driver {driver} is not registered on this node")]
    DriverNotRegistered { driver: String },
    #[error("CSI driver {driver} does not expand volumes on the node")]
    NotSupported { driver: String },
    #[error("NodeExpandVolume of {volume_handle} with {driver} failed: {failure}")]
    Rpc {
        driver: String,
        volume_handle: String,
        failure: RpcFailure,
    },
}

/// NodeExpandVolume after the controller grew the volume; returns the new capacity (0 when the
/// driver does not say).
pub async fn expand(
    drivers: &Drivers,
    vol: &CsiVolume,
    volume_path: &Path,
    staging_path: Option<&Path>,
    required_bytes: i64,
) -> Result<i64, ExpandError> {
    let d = driver_for(drivers, &vol.driver, |driver| {
        ExpandError::DriverNotRegistered { driver }
    })?;
    if !d.capabilities.expand_volume {
        return Err(ExpandError::NotSupported {
            driver: vol.driver.clone(),
        });
    }
    let req = pb::NodeExpandVolumeRequest {
        volume_id: vol.volume_handle.clone(),
        volume_path: path_string(volume_path),
        capacity_range: Some(pb::CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        staging_target_path: staging_path.map(path_string).unwrap_or_default(),
        volume_capability: Some(vol.capability()),
        secrets: Default::default(),
    };
    let resp = d
        .node()
        .node_expand_volume(timed(req))
        .await
        .map_err(|s| ExpandError::Rpc {
            driver: vol.driver.clone(),
            volume_handle: vol.volume_handle.clone(),
            failure: s.into(),
        })?
        .into_inner();
    Ok(resp.capacity_bytes)
}

/// NodeStageVolume of `vol` at `staging` (file system and block volumes alike).
pub(super) async fn stage_rpc(
    driver: &Driver,
    vol: &CsiVolume,
    staging: &Path,
) -> Result<(), StageError> {
    let req = pb::NodeStageVolumeRequest {
        volume_id: vol.volume_handle.clone(),
        publish_context: vol.publish_context.clone().into_iter().collect(),
        staging_target_path: path_string(staging),
        volume_capability: Some(vol.capability()),
        secrets: vol.stage_secrets.clone().into_iter().collect(),
        volume_context: vol.volume_context.clone().into_iter().collect(),
    };
    driver
        .node()
        .node_stage_volume(timed(req))
        .await
        .map_err(|s| StageError::Rpc {
            driver: vol.driver.clone(),
            volume_handle: vol.volume_handle.clone(),
            failure: s.into(),
        })?;
    Ok(())
}

/// NodePublishVolume of `vol` at `target`; `staging` is empty when the driver does not stage,
/// and the pod's keys join the volume context when `pod` is given.
pub(super) async fn publish_rpc(
    driver: &Driver,
    vol: &CsiVolume,
    pod: Option<&PodInfo>,
    staging: String,
    target: &Path,
) -> Result<(), PublishError> {
    let mut context = vol.volume_context.clone();
    if let Some(p) = pod {
        context.extend(pod_info_context(p));
    }
    let req = pb::NodePublishVolumeRequest {
        volume_id: vol.volume_handle.clone(),
        publish_context: vol.publish_context.clone().into_iter().collect(),
        staging_target_path: staging,
        target_path: path_string(target),
        volume_capability: Some(vol.capability()),
        readonly: vol.read_only,
        secrets: vol.publish_secrets.clone().into_iter().collect(),
        volume_context: context.into_iter().collect(),
    };
    driver
        .node()
        .node_publish_volume(timed(req))
        .await
        .map_err(|s| PublishError::Rpc {
            driver: vol.driver.clone(),
            volume_handle: vol.volume_handle.clone(),
            failure: s.into(),
        })?;
    Ok(())
}

/// NodeUnpublishVolume of the volume `volume_handle` of `driver_name` at `target`.
pub(super) async fn unpublish_rpc(
    driver: &Driver,
    driver_name: &str,
    volume_handle: &str,
    target: &Path,
) -> Result<(), UnpublishError> {
    let req = pb::NodeUnpublishVolumeRequest {
        volume_id: volume_handle.to_string(),
        target_path: path_string(target),
    };
    driver
        .node()
        .node_unpublish_volume(timed(req))
        .await
        .map_err(|s| UnpublishError::Rpc {
            driver: driver_name.to_string(),
            volume_handle: volume_handle.to_string(),
            failure: s.into(),
        })?;
    Ok(())
}

/// NodeUnstageVolume of the volume `volume_handle` of `driver_name` at `staging`.
pub(super) async fn unstage_rpc(
    driver: &Driver,
    driver_name: &str,
    volume_handle: &str,
    staging: &Path,
) -> Result<(), UnstageError> {
    let req = pb::NodeUnstageVolumeRequest {
        volume_id: volume_handle.to_string(),
        staging_target_path: path_string(staging),
    };
    driver
        .node()
        .node_unstage_volume(timed(req))
        .await
        .map_err(|s| UnstageError::Rpc {
            driver: driver_name.to_string(),
            volume_handle: volume_handle.to_string(),
            failure: s.into(),
        })?;
    Ok(())
}

/// `mkdir -p` with 0750 for new folders, as the kubelet does.
pub(super) fn mkdir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::pod_info_keys as k;

    #[test]
    fn pod_info_keys_only_when_asked() {
        let mut pod = PodInfo {
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "0c6f".into(),
            service_account: "default".into(),
            ephemeral: false,
            pod_info_on_mount: false,
            service_account_tokens: None,
        };
        assert!(pod_info_context(&pod).is_empty());
        pod.pod_info_on_mount = true;
        let m = pod_info_context(&pod);
        assert_eq!(m.get(k::POD_NAME).map(String::as_str), Some("web-0"));
        assert_eq!(m.get(k::POD_NAMESPACE).map(String::as_str), Some("default"));
        assert_eq!(m.get(k::POD_UID).map(String::as_str), Some("0c6f"));
        assert_eq!(
            m.get(k::SERVICE_ACCOUNT_NAME).map(String::as_str),
            Some("default")
        );
        assert_eq!(m.get(k::EPHEMERAL).map(String::as_str), Some("false"));
        assert_eq!(m.len(), 5);
        pod.ephemeral = true;
        pod.service_account_tokens = Some("{}".into());
        let m = pod_info_context(&pod);
        assert_eq!(m.get(k::EPHEMERAL).map(String::as_str), Some("true"));
        assert_eq!(
            m.get(k::SERVICE_ACCOUNT_TOKENS).map(String::as_str),
            Some("{}")
        );
    }

    #[test]
    fn capability_maps_to_proto() {
        let mut v = CsiVolume::new("d", "h", "pv");
        v.access_type = AccessType::Mount {
            fs_type: "ext4".into(),
            mount_flags: vec!["noatime".into()],
            volume_mount_group: String::new(),
        };
        v.access_mode = AccessMode::MultiNodeMultiWriter;
        let c = v.capability();
        assert_eq!(
            c.access_mode.map(|m| m.mode),
            Some(pb::volume_capability::access_mode::Mode::MultiNodeMultiWriter as i32)
        );
        match c.access_type {
            Some(pb::volume_capability::AccessType::Mount(m)) => {
                assert_eq!(m.fs_type, "ext4");
                assert_eq!(m.mount_flags, vec!["noatime".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ephemeral_handles_are_the_kubelets() {
        // sha256("uid-1vol") as `printf uid-1vol | sha256sum` gives it.
        assert_eq!(
            ephemeral_volume_handle("uid-1", "vol"),
            "csi-67efd08187334bc4caecc2244debc613d2dae49b3b82338caf725c10f4e8a821"
        );
    }

    #[test]
    fn attachment_names_are_the_kubelets() {
        // sha256("vol-1hostpath.csi.k8s.ionode-a") as
        // `printf vol-1hostpath.csi.k8s.ionode-a | sha256sum` gives it.
        assert_eq!(
            attachment_name("vol-1", "hostpath.csi.k8s.io", "node-a"),
            "csi-5a70c5de395ccad5e79daeb27c7c4f2634b675e6e1bb2a397999a016143bc9fb"
        );
    }

    #[test]
    fn rpc_failures_read_like_go() {
        let f = RpcFailure::from(tonic::Status::not_found("volume vol-1 not found"));
        assert_eq!(
            f.to_string(),
            "rpc error: code = NotFound desc = volume vol-1 not found"
        );
        assert!(f.infeasible());
        assert!(RpcFailure::from(tonic::Status::out_of_range("too big")).infeasible());
        assert!(RpcFailure::from(tonic::Status::invalid_argument("no")).infeasible());
        assert!(!RpcFailure::from(tonic::Status::unavailable("down")).infeasible());
        assert!(!RpcFailure::from(tonic::Status::internal("oops")).infeasible());
    }

    #[tokio::test]
    async fn unpublish_of_nothing_is_fine_and_unknown_drivers_are_errors() {
        let td = tempfile::tempdir().expect("tempdir");
        let drivers = Drivers::default();
        unpublish(td.path(), "uid", "pv", &drivers)
            .await
            .expect("nothing to do");
        unstage(td.path(), &drivers, "d", "h")
            .await
            .expect("nothing staged");
        let vol = CsiVolume::new("nope.csi", "h", "pv");
        let err = publish(td.path(), "uid", &drivers, &vol, None)
            .await
            .expect_err("no driver");
        assert!(
            matches!(err, PublishError::DriverNotRegistered { .. }),
            "{err}"
        );
    }
}
