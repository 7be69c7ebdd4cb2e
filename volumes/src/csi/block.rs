//! Raw block CSI volumes (`volumeMode: Block`) at the kubelet's block paths:
//!
//! | path under `<root>/plugins/kubernetes.io/csi/volumeDevices/` | what |
//! | --- | --- |
//! | `staging/<spec name>` | NodeStageVolume's staging path (a folder) |
//! | `publish/<spec name>/<pod uid>` | NodePublishVolume's target: the driver makes the device file there |
//! | `<spec name>/data/vol_data.json` | driver, handle, attachment (unpublish and unstage from disk) |
//!
//! and `<root>/pods/<uid>/volumeDevices/kubernetes.io~csi/<spec name>`, a symlink to the
//! publish path, which marks the pod as a user of the volume (reconstruction after a restart).
//! The device file itself is what the container gets (`volumeDevices`).
//!
//! Not done as the kubelet does: the global map bind mount (`<spec name>/dev/<pod uid>`) and
//! the loop device the kubelet opens on it to keep the device from being detached under a pod.

use std::io;
use std::path::{Path, PathBuf};

use tracing::info;

use super::node::{
    self, mkdir, CsiVolume, LifecycleMode, PodInfo, PublishError, StageError, UnpublishError,
    UnstageError,
};
use super::registry::Drivers;
use super::voldata::{self, VolData, VolDataError};
use crate::layout::{self, InvalidName};
use crate::mounts;

/// `<root>/plugins/kubernetes.io/csi/volumeDevices`.
pub fn block_root(root: &Path) -> PathBuf {
    root.join(layout::PLUGINS_DIR)
        .join(layout::CSI_PLUGIN_DATA_DIR)
        .join("volumeDevices")
}

fn checked(name: &str) -> Result<&str, InvalidName> {
    if layout::is_valid_name(name) {
        Ok(name)
    } else {
        Err(InvalidName {
            what: "volume or pod uid",
            name: name.to_string(),
        })
    }
}

/// NodeStageVolume's staging path of a block volume.
pub fn staging_path(root: &Path, spec_name: &str) -> Result<PathBuf, InvalidName> {
    Ok(block_root(root).join("staging").join(checked(spec_name)?))
}

/// The folder of a block volume's publish paths (one per pod).
pub fn publish_dir(root: &Path, spec_name: &str) -> Result<PathBuf, InvalidName> {
    Ok(block_root(root).join("publish").join(checked(spec_name)?))
}

/// NodePublishVolume's target of a block volume for a pod: the device file.
pub fn publish_path(root: &Path, spec_name: &str, pod_uid: &str) -> Result<PathBuf, InvalidName> {
    Ok(publish_dir(root, spec_name)?.join(checked(pod_uid)?))
}

/// The folder of a block volume's `vol_data.json`.
pub fn data_dir(root: &Path, spec_name: &str) -> Result<PathBuf, InvalidName> {
    Ok(block_root(root).join(checked(spec_name)?).join("data"))
}

/// `<pod dir>/volumeDevices/kubernetes.io~csi`.
pub fn pod_devices_root(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumeDevices").join(layout::CSI_PLUGIN_DIR)
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Stages a block volume: writes `vol_data.json`, then NodeStageVolume on the staging folder
/// when the driver stages. Idempotent.
pub async fn stage(
    root: &Path,
    drivers: &Drivers,
    vol: &CsiVolume,
) -> Result<Option<PathBuf>, StageError> {
    let driver = node::driver_for(drivers, &vol.driver, |driver| {
        StageError::DriverNotRegistered { driver }
    })?;
    let data = data_dir(root, &vol.spec_name)?;
    mkdir(&data).map_err(|source| StageError::Create {
        path: data.clone(),
        source,
    })?;
    voldata::write(&data, &VolData::for_publish(vol))?;
    if !driver.capabilities.stage_unstage || vol.lifecycle == LifecycleMode::Ephemeral {
        return Ok(None);
    }
    let staging = staging_path(root, &vol.spec_name)?;
    mkdir(&staging).map_err(|source| StageError::Create {
        path: staging.clone(),
        source,
    })?;
    node::stage_rpc(&driver, vol, &staging).await?;
    info!(staging = %staging.display(), "block volume staged");
    Ok(Some(staging))
}

/// Publishes a block volume to a pod and returns the device file (the publish path), after
/// linking it from the pod folder. Idempotent.
pub async fn publish(
    root: &Path,
    pod_uid: &str,
    drivers: &Drivers,
    vol: &CsiVolume,
    pod: Option<&PodInfo>,
) -> Result<PathBuf, PublishError> {
    let driver = node::driver_for(drivers, &vol.driver, |driver| {
        PublishError::DriverNotRegistered { driver }
    })?;
    let dir = publish_dir(root, &vol.spec_name)?;
    let target = publish_path(root, &vol.spec_name, pod_uid)?;
    let pod_dir = layout::pod_dir(root, pod_uid)?;
    let links = pod_devices_root(&pod_dir);
    for d in [&dir, &links] {
        mkdir(d).map_err(|source| PublishError::Create {
            path: d.to_path_buf(),
            source,
        })?;
    }
    // The pod's link first: from here on a restart finds the pod among the volume's users.
    let link = links.join(&vol.spec_name);
    match std::fs::read_link(&link) {
        Ok(t) if t == target => {}
        _ => {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).map_err(|source| PublishError::Create {
                path: link.clone(),
                source,
            })?;
        }
    }
    let staging = if driver.capabilities.stage_unstage && vol.lifecycle == LifecycleMode::Persistent
    {
        path_string(&staging_path(root, &vol.spec_name)?)
    } else {
        String::new()
    };
    node::publish_rpc(&driver, vol, pod, staging, &target).await?;
    info!(target = %target.display(), "block volume published");
    Ok(target)
}

/// The block volumes linked from a pod folder (their spec names), sorted.
pub fn published(pod_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(pod_devices_root(pod_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// Every block volume known on the node (from the `vol_data.json` files).
pub fn volumes(root: &Path) -> Vec<VolData> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(block_root(root))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "staging" || name == "publish" {
            continue;
        }
        if let Ok(Some(d)) = voldata::read(&e.path().join("data")) {
            out.push(d);
        }
    }
    out
}

/// Unpublishes a block volume from a pod, from disk alone: NodeUnpublishVolume of its publish
/// path, then the pod's link goes. Idempotent.
pub async fn unpublish(
    root: &Path,
    pod_uid: &str,
    spec_name: &str,
    drivers: &Drivers,
) -> Result<(), UnpublishError> {
    let target = publish_path(root, spec_name, pod_uid)?;
    let link = pod_devices_root(&layout::pod_dir(root, pod_uid)?).join(checked(spec_name)?);
    let data = voldata::read(&data_dir(root, spec_name)?)?;
    if let Some(data) = data.filter(|_| target.symlink_metadata().is_ok()) {
        let driver = node::driver_for(drivers, &data.driver_name, |driver| {
            UnpublishError::DriverNotRegistered { driver }
        })?;
        node::unpublish_rpc(&driver, &data.driver_name, &data.volume_handle, &target).await?;
    }
    if mounts::is_mount_point(&target).unwrap_or(false) {
        return Err(UnpublishError::StillMounted { path: target });
    }
    for p in [&target, &link] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(UnpublishError::Remove {
                    path: p.to_path_buf(),
                    source,
                })
            }
        }
    }
    info!(target = %target.display(), "block volume unpublished");
    Ok(())
}

/// How many pods have the block volume published (entries of its publish folder).
pub fn published_count(root: &Path, spec_name: &str) -> Result<usize, VolDataError> {
    // An invalid name was never published by this node.
    let Ok(dir) = publish_dir(root, spec_name) else {
        return Ok(0);
    };
    match std::fs::read_dir(&dir) {
        Ok(rd) => Ok(rd.count()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(VolDataError::Read { path: dir, source }),
    }
}

/// Unstages a block volume once no pod uses it: NodeUnstageVolume (when the driver stages),
/// then its staging, publish and data folders go. Idempotent.
pub async fn unstage(root: &Path, drivers: &Drivers, spec_name: &str) -> Result<(), UnstageError> {
    let data_folder = data_dir(root, spec_name)?;
    let Some(data) = voldata::read(&data_folder)? else {
        return Ok(());
    };
    let count = published_count(root, spec_name)?;
    if count > 0 {
        return Err(UnstageError::InUse {
            driver: data.driver_name,
            volume_handle: data.volume_handle,
            count,
        });
    }
    let staging = staging_path(root, spec_name)?;
    let driver = node::driver_for(drivers, &data.driver_name, |driver| {
        UnstageError::DriverNotRegistered { driver }
    })?;
    if driver.capabilities.stage_unstage && staging.exists() {
        node::unstage_rpc(&driver, &data.driver_name, &data.volume_handle, &staging).await?;
    }
    if mounts::is_mount_point(&staging).unwrap_or(false) {
        return Err(UnstageError::StillMounted { path: staging });
    }
    let vd = data_folder.join(layout::VOL_DATA_FILE);
    let spec_dir = block_root(root).join(spec_name);
    for (p, file) in [
        (&staging, false),
        (&publish_dir(root, spec_name)?, false),
        (&vd, true),
        (&data_folder, false),
        (&spec_dir, false),
    ] {
        let r = if file {
            std::fs::remove_file(p)
        } else {
            std::fs::remove_dir(p)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(UnstageError::Remove {
                    path: p.to_path_buf(),
                    source,
                })
            }
        }
    }
    info!(spec = spec_name, "block volume unstaged");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_block_paths() {
        let root = Path::new("/var/lib/kubelet");
        let base = "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices";
        assert_eq!(
            staging_path(root, "pv-1").expect("ok"),
            PathBuf::from(format!("{base}/staging/pv-1"))
        );
        assert_eq!(
            publish_path(root, "pv-1", "uid-1").expect("ok"),
            PathBuf::from(format!("{base}/publish/pv-1/uid-1"))
        );
        assert_eq!(
            data_dir(root, "pv-1").expect("ok"),
            PathBuf::from(format!("{base}/pv-1/data"))
        );
        assert_eq!(
            pod_devices_root(Path::new("/var/lib/kubelet/pods/uid-1")),
            PathBuf::from("/var/lib/kubelet/pods/uid-1/volumeDevices/kubernetes.io~csi")
        );
        assert!(staging_path(root, "../x").is_err());
        assert!(publish_path(root, "pv", "a/b").is_err());
    }

    #[tokio::test]
    async fn nothing_to_undo_is_fine_and_reconstruction_reads_disk() {
        let td = tempfile::tempdir().expect("tempdir");
        let root = td.path();
        let drivers = Drivers::default();
        unpublish(root, "uid", "pv", &drivers).await.expect("none");
        unstage(root, &drivers, "pv").await.expect("none");
        // A volume published to one pod: known, counted, in use.
        let mut vol = CsiVolume::new("d", "h", "pv");
        vol.access_type = crate::csi::AccessType::Block;
        let data = data_dir(root, "pv").expect("dir");
        std::fs::create_dir_all(&data).expect("mkdir");
        voldata::write(&data, &VolData::for_publish(&vol)).expect("write");
        let target = publish_path(root, "pv", "uid").expect("path");
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(&target, b"").expect("device file");
        let links = pod_devices_root(&layout::pod_dir(root, "uid").expect("pod"));
        std::fs::create_dir_all(&links).expect("mkdir");
        std::os::unix::fs::symlink(&target, links.join("pv")).expect("link");
        assert_eq!(
            published(&layout::pod_dir(root, "uid").expect("pod")),
            ["pv"]
        );
        assert_eq!(published_count(root, "pv").expect("count"), 1);
        assert_eq!(volumes(root).len(), 1);
        assert!(matches!(
            unstage(root, &drivers, "pv").await,
            Err(UnstageError::InUse { count: 1, .. })
        ));
        // Unpublishing needs the driver.
        assert!(matches!(
            unpublish(root, "uid", "pv", &drivers).await,
            Err(UnpublishError::DriverNotRegistered { .. })
        ));
    }
}
