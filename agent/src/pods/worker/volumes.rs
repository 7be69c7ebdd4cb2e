//! Step 2b: the pod's volumes. Every volume is set up once (claims and CSI inline volumes
//! resolved through [`crate::pods::PersistentVolumes`] first); the files of configMap, secret,
//! downwardAPI and projected volumes are written from the API's objects and rewritten at most
//! once per sync period ([`super::plan::VolumeStep`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use super::errors::{PodSetupError, VolumeError};
use super::plan::VolumeStep;
use super::Worker;
use crate::reasons::EventType;
use crate::translate::VolumeKind;

/// The pod's volumes as the worker holds them.
#[derive(Default)]
pub(super) struct PodVolumes {
    /// Volume name -> host path, once every volume is set up.
    pub paths: Option<HashMap<String, PathBuf>>,
    /// The configMaps, secrets and tokens last read for volumes and env (cluster mode).
    pub api_objects: Option<crate::projection::ApiObjects>,
    /// When they were read.
    pub objects_at: Option<SystemTime>,
}

/// The volumes crate's source for a volume of the pod.
pub fn volume_source(
    name: &str,
    kind: &VolumeKind,
) -> Result<bosun_volumes::VolumeSource, VolumeError> {
    let source = |message: String| VolumeError::Source {
        volume: name.to_string(),
        message,
    };
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
            kind: type_
                .parse()
                .map_err(|e| source(format!("hostPath {path}: {e}")))?,
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
            return Err(source(format!(
                "persistentvolumeclaim {claim:?} must be resolved to its volume first"
            )))
        }
        VolumeKind::CsiInline { driver } => {
            return Err(source(format!(
                "CSI inline volume of driver {driver} must be published first"
            )))
        }
        VolumeKind::Image { reference, .. } => {
            return Err(source(format!(
                "image volume of {reference:?} is mounted when a container starts"
            )))
        }
    })
}

/// The size of a `medium: Memory` emptyDir's tmpfs, as the kubelet's
/// `calculateEmptyDirMemorySize`: the node's allocatable memory, or the pod's memory limit when
/// it has one below that, or the volume's `sizeLimit` when it is below both. (A tmpfs mounted
/// without a size would take half the node's RAM.)
pub fn memory_medium_size(
    node_allocatable: u64,
    pod_limit: Option<u64>,
    size_limit: Option<u64>,
) -> u64 {
    let mut size = node_allocatable;
    for limit in [pod_limit, size_limit].into_iter().flatten() {
        if limit > 0 && limit <= size {
            size = limit;
        }
    }
    size
}

impl Worker {
    /// Carries out the plan's volume step. False when the volumes could not be set up the first
    /// time (FailedMount; the pod stays Pending). A refresh that fails keeps the files the
    /// containers already see.
    pub(super) async fn ensure_volumes(&mut self, step: VolumeStep) -> bool {
        let first = step == VolumeStep::SetUp;
        let result = match step {
            VolumeStep::Keep => Ok(()),
            _ => self.setup_volumes(first).await,
        };
        match result {
            Ok(()) => {
                if matches!(self.pod_error, Some(PodSetupError::Volumes { .. })) {
                    self.pod_error = None;
                }
                true
            }
            Err(e) if !first => {
                tracing::warn!(error = %e, "cannot refresh the pod's API volumes");
                true
            }
            Err(source) => {
                self.vols.paths = None;
                let e = PodSetupError::Volumes {
                    pod: self.key(),
                    source,
                };
                let message = e.to_string();
                // Told once while the same failure repeats.
                let same = matches!(&self.pod_error, Some(prev @ PodSetupError::Volumes { .. }) if prev.to_string() == message);
                if !same {
                    self.event(EventType::Warning, e.reason(), &message);
                }
                self.pod_error = Some(e);
                false
            }
        }
    }

    /// The pod's fsGroup on a volume the kubelet gives it to: emptyDir and writable `local`
    /// PVs (hostPath never; CSI volumes by their driver's fsGroupPolicy, in `cluster::csi`; API
    /// data volumes when their files are written), honouring `fsGroupChangePolicy`.
    async fn apply_fs_group(
        &self,
        name: &str,
        kind: &VolumeKind,
        path: &std::path::Path,
    ) -> Result<(), VolumeError> {
        let psc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let Some(gid) = psc
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok())
        else {
            return Ok(());
        };
        let applies = match kind {
            VolumeKind::EmptyDir { .. } => true,
            VolumeKind::Local { block, .. } => !*block && !self.claim_read_only(name),
            _ => false,
        };
        if !applies {
            return Ok(());
        }
        let policy = bosun_volumes::ownership::ChangePolicy::from_api(
            psc.and_then(|s| s.fs_group_change_policy.as_deref()),
        );
        let path = path.to_path_buf();
        // A walk of a whole volume: off the async threads.
        tokio::task::spawn_blocking(move || {
            bosun_volumes::ownership::set_volume_ownership(&path, gid, policy, false)
        })
        .await
        .map_err(|e| VolumeError::FsGroupTask {
            volume: name.to_string(),
            message: e.to_string(),
        })?
        .map(|_| ())
        .map_err(|source| VolumeError::FsGroup {
            volume: name.to_string(),
            source,
        })
    }

    /// Whether the pod mounts the claim of volume `name` read-only (`persistentVolumeClaim.readOnly`).
    pub(super) fn claim_read_only(&self, name: &str) -> bool {
        self.spec()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .is_some_and(|c| c.read_only == Some(true))
    }

    async fn setup_volumes(&mut self, first: bool) -> Result<(), VolumeError> {
        let pod_dir = self.pod_dir();
        let cluster = self.ctx.objects.is_some();
        let sources =
            crate::translate::volume_sources(&self.pod, cluster).map_err(VolumeError::Kinds)?;
        if first {
            let mut paths = HashMap::new();
            for (name, kind) in &sources {
                let resolved;
                let resolve_err = |source| VolumeError::Resolve {
                    volume: name.clone(),
                    source,
                };
                if matches!(kind, VolumeKind::Image { .. }) {
                    // Pulled and mounted by the start of a container that mounts it.
                    continue;
                }
                let kind = match (kind, &self.ctx.volumes) {
                    (VolumeKind::Claim { claim }, Some(src)) => {
                        resolved = src
                            .claim(&self.pod, claim, false)
                            .await
                            .map_err(resolve_err)?;
                        &resolved
                    }
                    (VolumeKind::EphemeralClaim { claim }, Some(src)) => {
                        resolved = src
                            .claim(&self.pod, claim, true)
                            .await
                            .map_err(resolve_err)?;
                        &resolved
                    }
                    (VolumeKind::CsiInline { .. }, Some(src)) => {
                        resolved = src.csi_inline(&self.pod, name).await.map_err(resolve_err)?;
                        &resolved
                    }
                    _ => kind,
                };
                let mut source = volume_source(name, kind)?;
                if let bosun_volumes::VolumeSource::EmptyDir {
                    medium: bosun_volumes::Medium::Memory,
                    size_limit,
                } = &mut source
                {
                    let pod_limit = crate::translate::pod_resources(&self.pod)
                        .memory_limit
                        .and_then(|b| u64::try_from(b).ok());
                    *size_limit = Some(memory_medium_size(
                        self.ctx.node.memory_bytes,
                        pod_limit,
                        *size_limit,
                    ));
                }
                let path = bosun_volumes::setup(&pod_dir, name, &source).map_err(|source| {
                    VolumeError::SetUp {
                        volume: name.clone(),
                        source,
                    }
                })?;
                self.apply_fs_group(name, kind, &path).await?;
                paths.insert(name.clone(), path);
            }
            self.vols.paths = Some(paths);
        }
        // configMaps, secrets and tokens, and the service links (cluster mode).
        let refs = crate::projection::references(&self.pod);
        let objects = match &self.ctx.objects {
            Some(src) => src
                .fetch(&self.pod, &refs)
                .await
                .map_err(VolumeError::Fetch)?,
            None => crate::projection::ApiObjects::default(),
        };
        self.vols.objects_at = Some(SystemTime::now());
        let pod = self.pod_with_ips();
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let paths = self.vols.paths.clone().unwrap_or_default();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if crate::projection::api_data_plugin(v).is_none() {
                continue;
            }
            let Some(path) = paths.get(&v.name) else {
                continue;
            };
            let payload =
                crate::projection::payload(&pod, v, &objects, self.ctx.node).map_err(|source| {
                    VolumeError::Payload {
                        volume: v.name.clone(),
                        source,
                    }
                })?;
            match bosun_volumes::atomic::write(path, &payload, fs_group) {
                Ok(true) if !first => tracing::info!(volume = %v.name, "volume files updated"),
                Ok(_) => {}
                Err(source) => {
                    return Err(VolumeError::Write {
                        volume: v.name.clone(),
                        source,
                    })
                }
            }
        }
        self.vols.api_objects = Some(objects);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_volume_is_sized_as_the_kubelet_sizes_it() {
        const GI: u64 = 1 << 30;
        // (node allocatable, pod memory limit, sizeLimit, size)
        let cases = [
            (8 * GI, None, None, 8 * GI),
            (8 * GI, Some(GI), None, GI),
            (8 * GI, Some(GI), Some(GI / 2), GI / 2),
            (8 * GI, Some(GI), Some(2 * GI), GI),
            (8 * GI, None, Some(2 * GI), 2 * GI),
            (8 * GI, Some(16 * GI), None, 8 * GI),
            (8 * GI, None, Some(16 * GI), 8 * GI),
            (8 * GI, Some(0), Some(0), 8 * GI),
        ];
        for (node, pod, limit, want) in cases {
            assert_eq!(
                memory_medium_size(node, pod, limit),
                want,
                "{node} {pod:?} {limit:?}"
            );
        }
    }
}
