//! The pod's fsGroup on CSI volumes, as the kubelet gives it: through the driver or by the node
//! after publishing, per the CSIDriver's `fsGroupPolicy`.

use std::path::Path;

use bosun_volumes::csi::{AccessType, CsiVolume};
use bosun_volumes::ownership;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::CSIDriver;

use super::Csi;

impl Csi {
    /// How the pod's fsGroup reaches the volume (the kubelet's rules): through the driver
    /// (`volume_mount_group` set on `vol`) when the CSIDriver's fsGroupPolicy is `File` and the
    /// driver has VOLUME_MOUNT_GROUP; by the node after publishing (the returned group and
    /// policy) when [`applies_fs_group`] says so; not at all otherwise.
    pub(super) fn fs_group_plan(
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
pub(super) async fn apply_fs_group(
    target: &Path,
    vol: &CsiVolume,
    plan: Option<(u32, ownership::ChangePolicy)>,
) -> Result<(), super::MountError> {
    let Some((gid, change)) = plan else {
        return Ok(());
    };
    let (dir, read_only) = (target.to_path_buf(), vol.read_only);
    tokio::task::spawn_blocking(move || {
        ownership::set_volume_ownership(&dir, gid, change, read_only)
    })
    .await
    .map_err(|e| super::MountError::FsGroupTask(e.to_string()))?
    .map(|_| ())
    .map_err(|source| super::MountError::FsGroup {
        handle: vol.volume_handle.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
