//! A volume of a pod as its driver measured it: written by the cluster's CSI volume manager,
//! read by the HTTP server's `/stats/summary` and `/metrics`.

use futures_util::future::BoxFuture;

/// One volume of a pod as its driver measured it (NodeGetVolumeStats), for `/stats/summary`
/// and the `kubelet_volume_stats_*` metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeSample {
    pub pod_uid: String,
    /// The volume's name in the pod spec.
    pub name: String,
    /// `(namespace, claim)` for a volume from a PersistentVolumeClaim.
    pub pvc: Option<(String, String)>,
    /// `(capacity, available, used)` bytes.
    pub bytes: Option<(i64, i64, i64)>,
    /// `(inodes, free, used)`.
    pub inodes: Option<(i64, i64, i64)>,
    /// The driver's volume condition, when it reports one.
    pub abnormal: Option<bool>,
}

/// Who measures the volumes mounted for pods (the CSI drivers, through
/// [`crate::cluster::volumes`]), asked when `/stats/summary` or `/metrics` is requested.
pub trait VolumeStats: Send + Sync {
    /// The figures of every volume a driver measures (CSI NodeGetVolumeStats).
    fn volume_samples(&self) -> BoxFuture<'_, Vec<VolumeSample>>;
}
