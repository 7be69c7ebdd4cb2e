//! What can fail in CSI, one enum per operation: mounting a volume for a pod, unmounting a
//! pod's volumes, expanding a mounted volume. The messages are those of the pod's FailedMount
//! events and of the agent's log.

use std::time::Duration;

use bosun_volumes::csi;

/// Mounting (staging, publishing) a CSI volume for a pod failed; the worker retries.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("persistentvolume has no spec")]
    NoSpec,
    #[error("not a CSI volume")]
    NotCsi,
    #[error("cannot get CSIDriver {driver}: {source}")]
    Driver {
        driver: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot get secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot get VolumeAttachment {attachment}: {source}")]
    Attachment {
        attachment: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot get Node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: kube::Error,
    },
    /// The kubelet's VerifyControllerAttachedVolume: the attach/detach controller may detach a
    /// volume the Node does not list in `volumesInUse`, so nothing is staged before it does.
    #[error("volume {volume} has not been added to the list of VolumesInUse in the node's volume status")]
    NotReportedInUse { volume: String },
    #[error("volume {volume} is not attached to node {node} yet (VolumeAttachment {attachment})")]
    NotAttached {
        volume: String,
        node: String,
        attachment: String,
    },
    #[error("driver name {driver} not found in the list of registered CSI drivers")]
    NotRegistered { driver: String },
    /// An inline volume whose CSIDriver does not list the `Ephemeral` lifecycle mode.
    #[error(
        "volume mode \"Ephemeral\" not supported by driver {driver} (only supports [{modes}])"
    )]
    NotEphemeral { driver: String, modes: String },
    #[error("{0}")]
    Stage(#[source] csi::StageError),
    #[error("{0}")]
    Publish(#[source] csi::PublishError),
    #[error("{0}")]
    FsGroupTask(String),
    #[error("applyFSGroup failed for vol {handle}: {source}")]
    FsGroup {
        handle: String,
        #[source]
        source: bosun_volumes::ownership::OwnershipError,
    },
}

/// Unmounting (unpublishing, unstaging) a pod's CSI volumes failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error("{0}")]
    PodDir(#[source] bosun_volumes::InvalidName),
    #[error("{0}")]
    VolData(#[source] csi::VolDataError),
    #[error("{0}")]
    Unpublish(#[source] csi::UnpublishError),
    #[error("{0}")]
    Unstage(#[source] csi::UnstageError),
    /// It failed and is retried in the background until it works.
    #[error("{source} (retrying every {}s)", every.as_secs())]
    Retrying {
        #[source]
        source: Box<UnmountError>,
        every: Duration,
    },
}

/// Expanding a mounted volume on the node failed; the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error("{0}")]
    Read(#[source] kube::Error),
    #[error("cannot patch the status of claim {claim}: {source}")]
    PatchStatus {
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Expand(#[source] csi::ExpandError),
}
