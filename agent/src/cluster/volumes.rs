//! The volumes of a pod that live outside its folder: PersistentVolumeClaims resolved to their
//! bound PersistentVolume (hostPath, local, CSI), CSI ephemeral inline volumes, and undoing
//! them when the pod goes; and the CSI volumes' figures for `/stats/summary` and `/metrics`.
//! Service account tokens for CSI drivers come from [`super::objects::ClusterObjects`].

use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{Api, Client};

use super::csi::Csi;
use super::objects::ClusterObjects;
use crate::metrics::volume::VolumeStats;
use crate::metrics::VolumeSample;
use crate::pods::{PersistentVolumes, SourceError};

/// Resolving a claim or CSI inline volume to what to mount failed (the worker retries).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot get {what}: {source}")]
    Get {
        /// `persistentvolumeclaim <ns>/<name>`, `persistentvolume <name>`, `node <name>`.
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("persistentvolumeclaim {claim:?} not found (the ephemeral volume controller has not created it yet)")]
    EphemeralNotCreated { claim: String },
    #[error("{0}")]
    Claim(#[from] crate::claims::ClaimError),
    #[error("CSI volumes are not enabled on this node")]
    NoCsi,
    #[error("volume {volume:?} is not a CSI inline volume")]
    NotInline { volume: String },
    #[error("{0}")]
    Tokens(#[from] super::objects::FetchError),
    #[error("{0}")]
    Mount(#[from] super::csi::MountError),
}

/// The apiserver-backed [`PersistentVolumes`] and [`VolumeStats`].
pub struct ClusterVolumes {
    client: Client,
    objects: Arc<ClusterObjects>,
    /// CSI drivers and mounts (None: no CSI on this node).
    csi: Option<Csi>,
}

impl ClusterVolumes {
    pub fn new(client: Client, objects: Arc<ClusterObjects>, csi: Option<Csi>) -> Self {
        Self {
            client,
            objects,
            csi,
        }
    }
}

impl VolumeStats for ClusterVolumes {
    fn volume_samples(&self) -> BoxFuture<'_, Vec<VolumeSample>> {
        Box::pin(async move {
            match &self.csi {
                Some(csi) => csi.volume_samples().await,
                None => Vec::new(),
            }
        })
    }
}

impl PersistentVolumes for ClusterVolumes {
    fn claim<'a>(
        &'a self,
        pod: &'a Pod,
        claim: &'a str,
        ephemeral: bool,
    ) -> BoxFuture<'a, Result<crate::translate::VolumeKind, SourceError>> {
        Box::pin(async move { Ok(self.resolve_claim(pod, claim, ephemeral).await?) })
    }

    fn csi_inline<'a>(
        &'a self,
        pod: &'a Pod,
        volume: &'a str,
    ) -> BoxFuture<'a, Result<crate::translate::VolumeKind, SourceError>> {
        Box::pin(async move { Ok(self.resolve_inline(pod, volume).await?) })
    }

    fn release<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            match &self.csi {
                Some(csi) => Ok(csi.unmount_pod(pod_uid).await?),
                None => Ok(()),
            }
        })
    }
}

impl ClusterVolumes {
    /// What to mount for claim `claim` of `pod`: its bound PersistentVolume's source (a CSI PV
    /// staged and published for the pod).
    async fn resolve_claim(
        &self,
        pod: &Pod,
        claim: &str,
        ephemeral: bool,
    ) -> Result<crate::translate::VolumeKind, ResolveError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pvc = pvcs
            .get_opt(claim)
            .await
            .map_err(|source| ResolveError::Get {
                what: format!("persistentvolumeclaim {ns}/{claim}"),
                source,
            })?;
        if ephemeral {
            // Not created yet by the ephemeral volume controller: wait (retried).
            let pvc = pvc
                .as_ref()
                .ok_or_else(|| ResolveError::EphemeralNotCreated {
                    claim: claim.to_string(),
                })?;
            crate::claims::check_ephemeral_owner(
                ns,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.uid.as_deref().unwrap_or_default(),
                pvc,
            )?;
        }
        let pv_name = crate::claims::bound_volume(claim, pvc.as_ref())?;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs
            .get(&pv_name)
            .await
            .map_err(|source| ResolveError::Get {
                what: format!("persistentvolume {pv_name}"),
                source,
            })?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let labels = nodes
            .get(&node)
            .await
            .map_err(|source| ResolveError::Get {
                what: format!("node {node}"),
                source,
            })?
            .metadata
            .labels
            .unwrap_or_default();
        if pv.spec.as_ref().is_some_and(|s| s.csi.is_some()) {
            let csi = self.csi.as_ref().ok_or(ResolveError::NoCsi)?;
            let volumes = || pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
            let read_only = volumes()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .any(|c| c.claim_name == claim && c.read_only == Some(true));
            // The pod's volume that names this claim (for stats and expansion).
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let volume = volumes()
                .find(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                        || (v.ephemeral.is_some()
                            && crate::translate::ephemeral_claim_name(pod_name, &v.name) == claim)
                })
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let driver = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.driver.clone())
                .unwrap_or_default();
            let tokens = self.objects.csi_tokens(pod, &driver).await?;
            let path = csi
                .mount(pod, &pv, read_only, &volume, claim, tokens)
                .await?;
            let block = pv
                .spec
                .as_ref()
                .is_some_and(|s| s.volume_mode.as_deref() == Some("Block"));
            return Ok(crate::translate::VolumeKind::HostPath {
                path: path.to_string_lossy().into_owned(),
                // A block volume is the device file NodePublishVolume made.
                type_: if block { "BlockDevice" } else { "Directory" }.into(),
            });
        }
        Ok(crate::claims::volume_kind(&pv, &node, &labels)?)
    }

    /// Publishes the CSI inline volume `volume` of `pod` and says what to mount.
    async fn resolve_inline(
        &self,
        pod: &Pod,
        volume: &str,
    ) -> Result<crate::translate::VolumeKind, ResolveError> {
        let csi = self.csi.as_ref().ok_or(ResolveError::NoCsi)?;
        let source = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| v.name == volume)
            .and_then(|v| v.csi.as_ref())
            .ok_or_else(|| ResolveError::NotInline {
                volume: volume.to_string(),
            })?;
        let tokens = self.objects.csi_tokens(pod, &source.driver).await?;
        let path = csi.mount_inline(pod, volume, source, tokens).await?;
        Ok(crate::translate::VolumeKind::HostPath {
            path: path.to_string_lossy().into_owned(),
            type_: "Directory".into(),
        })
    }
}
