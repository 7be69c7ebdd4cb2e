//! Mounting CSI volumes for a pod: the PV's volume as the driver sees it (attachment, secrets,
//! access), NodeStageVolume and NodePublishVolume, and inline volumes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bosun_volumes::csi::{self, AccessMode, AccessType, CsiVolume, PodInfo};
use bosun_volumes::ownership;
use k8s_openapi::api::core::v1::{CSIVolumeSource, Node, PersistentVolume, Pod, Secret};
use k8s_openapi::api::storage::v1::{CSIDriver, VolumeAttachment};
use kube::api::Api;

use super::fsgroup::apply_fs_group;
use super::tokens::{give_tokens, ServiceAccountTokens};
use super::{Csi, MountError, Mounted};

impl Csi {
    /// The CSI volume of PV `pv` for `pod`, as the driver will see it.
    async fn volume(
        &self,
        pod: &Pod,
        pv: &PersistentVolume,
        read_only: bool,
    ) -> Result<(CsiVolume, CSIDriver), MountError> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let spec = pv.spec.as_ref().ok_or(MountError::NoSpec)?;
        let source = spec.csi.as_ref().ok_or(MountError::NotCsi)?;
        let drivers: Api<CSIDriver> = Api::all(self.client.clone());
        let driver_obj = drivers
            .get_opt(&source.driver)
            .await
            .map_err(|e| MountError::Driver {
                driver: source.driver.clone(),
                source: e,
            })?
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
        // Reported in use from now on (the kubelet's desired state of world), until the pod
        // goes.
        let unique = unique_name(&source.driver, &source.volume_handle);
        if let Ok(mut r) = self.reporting.lock() {
            r.entry(unique.clone())
                .or_default()
                .insert(pod.metadata.uid.clone().unwrap_or_default());
        }
        let attach = driver_obj.spec.attach_required.unwrap_or(true);
        if attach {
            // The kubelet's VerifyControllerAttachedVolume: the Node must list the volume in
            // volumesInUse before it is staged, or the attach/detach controller may detach it
            // under the mount (a pod deleted before the next status update).
            let nodes: Api<Node> = Api::all(self.client.clone());
            let node = nodes
                .get(&self.node)
                .await
                .map_err(|source| MountError::Node {
                    node: self.node.clone(),
                    source,
                })?;
            if !reported_in_use(&node, &unique) {
                return Err(MountError::NotReportedInUse { volume: name });
            }
            // Named after the volume handle, as the attach/detach controller names it.
            let id = csi::node::attachment_name(&source.volume_handle, &source.driver, &self.node);
            let vas: Api<VolumeAttachment> = Api::all(self.client.clone());
            // The Node authorizer lets a node read only the VolumeAttachments that name it: one
            // the attacher has not created yet is Forbidden, not NotFound.
            let va = match vas.get_opt(&id).await {
                Ok(va) => va,
                Err(kube::Error::Api(s)) if s.code == 403 => None,
                Err(source) => {
                    return Err(MountError::Attachment {
                        attachment: id,
                        source,
                    })
                }
            };
            let status = va.and_then(|v| v.status);
            match status {
                Some(s) if s.attached => {
                    vol.publish_context = s.attachment_metadata.unwrap_or_default();
                    vol.attachment_id = id;
                }
                _ => {
                    return Err(MountError::NotAttached {
                        volume: name,
                        node: self.node.clone(),
                        attachment: id,
                    })
                }
            }
        }
        Ok((vol, driver_obj))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<BTreeMap<String, String>, MountError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let s = api.get(name).await.map_err(|source| MountError::Secret {
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        })?;
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
    ) -> Result<PathBuf, MountError> {
        let drivers: Api<CSIDriver> = Api::all(self.client.clone());
        let driver_obj = drivers
            .get_opt(&source.driver)
            .await
            .map_err(|e| MountError::Driver {
                driver: source.driver.clone(),
                source: e,
            })?;
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

    async fn wait_for_driver(&self, driver: &str) -> Result<(), MountError> {
        if self
            .drivers
            .wait_for(driver, Duration::from_secs(5))
            .await
            .is_none()
        {
            return Err(MountError::NotRegistered {
                driver: driver.to_string(),
            });
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
    ) -> Result<PathBuf, MountError> {
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
            .map_err(MountError::Stage)?;
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
    ) -> Result<PathBuf, MountError> {
        let target = csi::publish(&self.root, &info.uid, &self.drivers, &vol, Some(info))
            .await
            .map_err(MountError::Publish)?;
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
}

/// A CSI volume's name in the Node's `volumesInUse` and `volumesAttached`.
pub fn unique_name(driver: &str, volume_handle: &str) -> String {
    format!("kubernetes.io/csi/{driver}^{volume_handle}")
}

/// Whether the Node's status lists `unique` in `volumesInUse`.
pub fn reported_in_use(node: &Node, unique: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.volumes_in_use.as_ref())
        .is_some_and(|v| v.iter().any(|n| n == unique))
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
) -> Result<CsiVolume, MountError> {
    let modes = driver
        .and_then(|d| d.spec.volume_lifecycle_modes.clone())
        .unwrap_or_else(|| vec!["Persistent".to_string()]);
    if !modes.iter().any(|m| m == "Ephemeral") {
        let list = modes
            .iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(MountError::NotEphemeral {
            driver: source.driver.clone(),
            modes: list,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_only_once_the_node_reports_the_volume_in_use() {
        let name = unique_name("hostpath.csi.k8s.io", "h1");
        assert_eq!(name, "kubernetes.io/csi/hostpath.csi.k8s.io^h1");
        let node = |yaml: &str| -> Node { serde_yaml::from_str(yaml).expect("node") };
        assert!(!reported_in_use(&node("metadata: {name: n}"), &name));
        assert!(!reported_in_use(
            &node("metadata: {name: n}\nstatus: {volumesInUse: [kubernetes.io/csi/hostpath.csi.k8s.io^h2]}"),
            &name
        ));
        assert!(reported_in_use(
            &node("metadata: {name: n}\nstatus: {volumesInUse: [kubernetes.io/csi/hostpath.csi.k8s.io^h2, kubernetes.io/csi/hostpath.csi.k8s.io^h1]}"),
            &name
        ));
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
            e.to_string(),
            "volume mode \"Ephemeral\" not supported by driver d.csi (only supports [\"Persistent\"])"
        );
        let e = inline_volume(&pod, "v", &source, Some(&driver("[Persistent]")), "n")
            .expect_err("persistent only")
            .to_string();
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
    fn access_modes_like_the_kubelet() {
        let m = |v: &[&str]| access_mode(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(m(&["ReadWriteOnce"]), AccessMode::SingleNodeWriter);
        assert_eq!(m(&["ReadOnlyMany"]), AccessMode::MultiNodeReaderOnly);
        assert_eq!(m(&["ReadWriteMany"]), AccessMode::MultiNodeMultiWriter);
        assert_eq!(m(&["ReadWriteOncePod"]), AccessMode::SingleNodeSingleWriter);
        assert_eq!(m(&[]), AccessMode::SingleNodeWriter);
    }
}
