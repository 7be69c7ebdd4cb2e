//! Dynamic Resource Allocation (resource.k8s.io/v1), the node's part as the kubelet does it:
//! DRA drivers' kubelet plugins register through the plugins registry ([`manager::Plugins`], a
//! handler of `bosun_volumes::csi::run_watcher`); before a pod's sandbox is made its allocated
//! ResourceClaims are prepared by their drivers (`NodePrepareResources`), the CDI devices the
//! drivers return go into the containers that name the claim, and once the pod ended the claims
//! are unprepared (`NodeUnprepareResources`). The decisions are pure ([`state`]); the claim
//! info cache is checkpointed (`<root-dir>/dra_manager_state`). ResourceSlices are the
//! drivers' business, not the node's.

pub mod manager;
pub mod state;

/// The DRA kubelet plugin API generated from `proto/dra/v1/api.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
}

pub use manager::{ApiClaims, DraManager, Plugins};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Pod};

/// A failed prepare or unprepare, with the kubelet's message ("prepare dynamic resources:
/// ...").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DraError(pub String);

/// What the pod workers need of DRA: the [`DraManager`] on a cluster node, a fake in the
/// worker's unit tests.
pub trait DraService: Send + Sync {
    /// Prepares the pod's allocated claims (before its sandbox is made).
    fn prepare<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<(), DraError>>;

    /// The CDI device ids the prepared claims give `container`.
    fn container_cdi_devices<'a>(
        &'a self,
        pod: &'a Pod,
        container: &'a Container,
    ) -> BoxFuture<'a, Result<Vec<String>, DraError>>;

    /// Unprepares the claims of a pod that ended (retried in the background when it fails).
    fn unprepare<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, Result<(), DraError>>;

    /// The pods that hold prepared claims (the pod manager terminates those it no longer has).
    fn pods(&self) -> BoxFuture<'_, Vec<String>>;
}

impl DraService for DraManager {
    fn prepare<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<(), DraError>> {
        Box::pin(DraManager::prepare(self, pod))
    }

    fn container_cdi_devices<'a>(
        &'a self,
        pod: &'a Pod,
        container: &'a Container,
    ) -> BoxFuture<'a, Result<Vec<String>, DraError>> {
        Box::pin(DraManager::container_cdi_devices(self, pod, container))
    }

    fn unprepare<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, Result<(), DraError>> {
        Box::pin(DraManager::unprepare(self, pod_uid))
    }

    fn pods(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(DraManager::pods(self))
    }
}

#[cfg(test)]
pub mod testing;
