//! The CSI node side, as the kubelet does it: plugin discovery through the registration folder
//! ([`registry`]), and the node calls with the kubelet's paths and `vol_data.json` files
//! ([`node`], [`voldata`]). Knows nothing of Kubernetes objects: the agent looks the PV, the
//! CSIDriver and the VolumeAttachment up and hands over plain data ([`CsiVolume`], [`PodInfo`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use bosun_volumes::csi::{self, CsiVolume, Drivers};
//! let root = Path::new(bosun_volumes::layout::DEFAULT_ROOT_DIR);
//! let drivers = Drivers::default();
//! tokio::spawn(csi::run_discovery(
//!     bosun_volumes::layout::DEFAULT_PLUGINS_REGISTRY_DIR.into(),
//!     drivers.clone(),
//!     csi::DiscoveryOptions::default(),
//! ));
//! let vol = CsiVolume::new("hostpath.csi.k8s.io", "vol-1", "pvc-1234");
//! csi::stage(root, &drivers, &vol).await?;
//! let target = csi::publish(root, "pod-uid", &drivers, &vol, None).await?;
//! // ... bind `target` into the containers; when the pod is gone:
//! csi::unpublish(root, "pod-uid", "pvc-1234", &drivers).await?;
//! csi::unstage(root, &drivers, "hostpath.csi.k8s.io", "vol-1").await?;
//! # let _ = target; Ok(()) }
//! ```

pub mod block;
pub mod conn;
pub mod node;
pub mod registry;
pub mod voldata;

pub use conn::{dial, dial_lazy, socket_path, DialError};
pub use node::{
    expand, pod_info_context, publish, published_count, stage, unpublish, unstage, volume_stats,
    AccessMode, AccessType, CsiVolume, ExpandError, LifecycleMode, PodInfo, PublishError,
    RpcFailure, StageError, StatsError, UnpublishError, UnstageError, VolumeStats, VolumeUsage,
};
pub use registry::{
    register, register_with, run_discovery, run_watcher, CsiHandler, DiscoveryOptions, Driver,
    DriverChange, Drivers, NodeCapabilities, PluginHandler, PluginInfo, RegisterError,
    Registration,
};
pub use voldata::{
    published_volumes, staged_volumes, PublishedVolume, StagedVolume, VolData, VolDataError,
};

/// Generated gRPC clients and messages.
pub mod proto {
    /// The CSI spec, package `csi.v1` (spec v1.12.0).
    pub mod csi {
        #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
        tonic::include_proto!("csi.v1");
    }
    /// The kubelet plugin registration API, package `pluginregistration` (k8s.io/kubelet
    /// `pkg/apis/pluginregistration/v1`).
    pub mod registration {
        #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
        tonic::include_proto!("pluginregistration");
    }
}

/// Volume context keys the kubelet adds when the CSIDriver has `podInfoOnMount: true`.
pub mod pod_info_keys {
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
    pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
    /// Added when the CSIDriver has `tokenRequests` (a JSON map audience -> token).
    pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
}
