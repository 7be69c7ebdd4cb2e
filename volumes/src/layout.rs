//! Where things live on disk. These paths are the kubelet's own: other node tools (log
//! shippers, CSI drivers, monitoring agents) look for them, so they must not change.
//!
//! ```text
//! <root_dir>/pods/<uid>/                                         the pod folder
//! <pod_dir>/volumes/kubernetes.io~empty-dir/<name>               an emptyDir
//! <pod_dir>/volumes/kubernetes.io~configmap/<name>               a configMap (also ~secret,
//!                                                                ~downward-api, ~projected)
//! <pod_dir>/volume-subpaths/<volume>/<container>/<mount index>   a subPath bind mount
//! <pod_dir>/volumes/kubernetes.io~csi/<volume>/mount             a CSI publish target
//! <pod_dir>/volumes/kubernetes.io~csi/<volume>/vol_data.json     what unpublish needs
//! <root_dir>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/globalmount   CSI staging
//! <root_dir>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/vol_data.json
//! ```

use std::path::{Path, PathBuf};

/// The kubelet's default root dir.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Folder of pods under the root dir.
pub const PODS_DIR: &str = "pods";
/// Folder of volumes under a pod folder.
pub const VOLUMES_DIR: &str = "volumes";
/// Folder of subPath bind mounts under a pod folder.
pub const VOLUME_SUBPATHS_DIR: &str = "volume-subpaths";
/// The emptyDir plugin's folder name (plugin name with `/` escaped as `~`).
pub const EMPTY_DIR_PLUGIN_DIR: &str = "kubernetes.io~empty-dir";

/// The folder name of the plugin of each API data volume type.
pub const CONFIG_MAP_PLUGIN_DIR: &str = "kubernetes.io~configmap";
pub const SECRET_PLUGIN_DIR: &str = "kubernetes.io~secret";
pub const DOWNWARD_API_PLUGIN_DIR: &str = "kubernetes.io~downward-api";
pub const PROJECTED_PLUGIN_DIR: &str = "kubernetes.io~projected";

/// The CSI plugin's folder name under a pod's `volumes/` (`kubernetes.io/csi` escaped).
pub const CSI_PLUGIN_DIR: &str = "kubernetes.io~csi";
/// Folder of plugin data under the root dir.
pub const PLUGINS_DIR: &str = "plugins";
/// The CSI plugin's data folder under `plugins/`.
pub const CSI_PLUGIN_DATA_DIR: &str = "kubernetes.io/csi";
/// The staging folder's name below the volume's hash folder.
pub const CSI_GLOBAL_MOUNT: &str = "globalmount";
/// The publish target's name below the volume's folder in a pod.
pub const CSI_PUBLISH_MOUNT: &str = "mount";
/// The file the kubelet keeps next to CSI stage and publish targets.
pub const VOL_DATA_FILE: &str = "vol_data.json";
/// The kubelet's default plugin registration folder.
pub const DEFAULT_PLUGINS_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";

/// A name that would not be exactly one path component below its folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {name:?}: must be one non-empty path component")]
pub struct InvalidName {
    pub what: &'static str,
    pub name: String,
}

/// Whether `name` is usable as one path component: not empty, not `.`/`..`, no `/` or nul.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// `<root_dir>/pods/<uid>`.
pub fn pod_dir(root_dir: &Path, pod_uid: &str) -> Result<PathBuf, InvalidName> {
    check_name("pod uid", pod_uid)?;
    Ok(root_dir.join(PODS_DIR).join(pod_uid))
}

/// `<pod_dir>/volumes/kubernetes.io~empty-dir`.
pub fn empty_dir_root(pod_dir: &Path) -> PathBuf {
    pod_dir.join(VOLUMES_DIR).join(EMPTY_DIR_PLUGIN_DIR)
}

/// `<pod_dir>/volumes/kubernetes.io~empty-dir/<name>`.
pub fn empty_dir_path(pod_dir: &Path, name: &str) -> Result<PathBuf, InvalidName> {
    check_name("volume name", name)?;
    Ok(empty_dir_root(pod_dir).join(name))
}

/// `<pod_dir>/volumes/<plugin_dir>/<name>`.
pub fn plugin_volume_path(
    pod_dir: &Path,
    plugin_dir: &str,
    name: &str,
) -> Result<PathBuf, InvalidName> {
    check_name("volume name", name)?;
    Ok(pod_dir.join(VOLUMES_DIR).join(plugin_dir).join(name))
}

/// `<pod_dir>/volume-subpaths/<volume>`.
pub fn volume_subpaths_dir(pod_dir: &Path, volume: &str) -> Result<PathBuf, InvalidName> {
    check_name("volume name", volume)?;
    Ok(pod_dir.join(VOLUME_SUBPATHS_DIR).join(volume))
}

/// `<pod_dir>/volume-subpaths/<volume>/<container>/<index>`: where the subPath of the
/// `index`-th volumeMount of `container` is bind-mounted.
pub fn subpath_target(
    pod_dir: &Path,
    volume: &str,
    container: &str,
    index: usize,
) -> Result<PathBuf, InvalidName> {
    check_name("container name", container)?;
    Ok(volume_subpaths_dir(pod_dir, volume)?
        .join(container)
        .join(index.to_string()))
}

/// `<pod_dir>/volumes/kubernetes.io~csi`.
pub fn csi_publish_root(pod_dir: &Path) -> PathBuf {
    pod_dir.join(VOLUMES_DIR).join(CSI_PLUGIN_DIR)
}

/// `<pod_dir>/volumes/kubernetes.io~csi/<volume>`: holds `vol_data.json` and the `mount` target.
/// `volume` is the PV name for a persistent volume, the pod's volume name for an inline one.
pub fn csi_publish_dir(pod_dir: &Path, volume: &str) -> Result<PathBuf, InvalidName> {
    check_name("volume name", volume)?;
    Ok(csi_publish_root(pod_dir).join(volume))
}

/// `<pod_dir>/volumes/kubernetes.io~csi/<volume>/mount`: the CSI `target_path`.
pub fn csi_publish_path(pod_dir: &Path, volume: &str) -> Result<PathBuf, InvalidName> {
    Ok(csi_publish_dir(pod_dir, volume)?.join(CSI_PUBLISH_MOUNT))
}

/// Hex SHA-256 of a volume handle, the kubelet's staging folder name (handles may hold `/`).
pub fn volume_handle_hash(volume_handle: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(volume_handle.as_bytes()))
}

/// `<root_dir>/plugins/kubernetes.io/csi/<driver>/<sha256 hex of handle>`: holds
/// `vol_data.json` and the `globalmount` staging folder.
pub fn csi_stage_dir(
    root_dir: &Path,
    driver: &str,
    volume_handle: &str,
) -> Result<PathBuf, InvalidName> {
    check_name("CSI driver name", driver)?;
    Ok(root_dir
        .join(PLUGINS_DIR)
        .join(CSI_PLUGIN_DATA_DIR)
        .join(driver)
        .join(volume_handle_hash(volume_handle)))
}

/// `<root_dir>/plugins/kubernetes.io/csi/<driver>/<sha256 hex of handle>/globalmount`: the CSI
/// `staging_target_path`.
pub fn csi_staging_path(
    root_dir: &Path,
    driver: &str,
    volume_handle: &str,
) -> Result<PathBuf, InvalidName> {
    Ok(csi_stage_dir(root_dir, driver, volume_handle)?.join(CSI_GLOBAL_MOUNT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_layout() {
        let pod = pod_dir(Path::new(DEFAULT_ROOT_DIR), "1234-abcd").expect("pod dir");
        assert_eq!(pod, PathBuf::from("/var/lib/kubelet/pods/1234-abcd"));
        assert_eq!(
            empty_dir_path(&pod, "cache").expect("path"),
            PathBuf::from("/var/lib/kubelet/pods/1234-abcd/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(
            subpath_target(&pod, "data", "app", 2).expect("path"),
            PathBuf::from("/var/lib/kubelet/pods/1234-abcd/volume-subpaths/data/app/2")
        );
    }

    #[test]
    fn kubelet_csi_layout() {
        let root = Path::new(DEFAULT_ROOT_DIR);
        let pod = pod_dir(root, "1234-abcd").expect("pod dir");
        assert_eq!(
            csi_publish_path(&pod, "pvc-0a1b").expect("path"),
            PathBuf::from(
                "/var/lib/kubelet/pods/1234-abcd/volumes/kubernetes.io~csi/pvc-0a1b/mount"
            )
        );
        // sha256("vol-1"), as `printf vol-1 | sha256sum` gives it.
        assert_eq!(
            csi_staging_path(root, "hostpath.csi.k8s.io", "vol-1").expect("path"),
            PathBuf::from(
                "/var/lib/kubelet/plugins/kubernetes.io/csi/hostpath.csi.k8s.io/\
                 d2e8363faaac7ae76def3b14091d8eb5755f6b92e9531627aeec833a8731cc49/globalmount"
            )
        );
        // Handles with slashes stay one component.
        let p = csi_staging_path(root, "d", "projects/p/disks/x").expect("path");
        assert_eq!(
            p.parent().and_then(|h| h.parent()),
            Some(Path::new("/var/lib/kubelet/plugins/kubernetes.io/csi/d"))
        );
        assert!(csi_staging_path(root, "../evil", "v").is_err());
        assert!(csi_publish_dir(&pod, "a/b").is_err());
    }

    #[test]
    fn names_must_be_one_component() {
        for bad in ["", ".", "..", "a/b", "/abs", "x\0y"] {
            assert!(!is_valid_name(bad), "{bad:?}");
            assert!(empty_dir_path(Path::new("/p"), bad).is_err());
            assert!(subpath_target(Path::new("/p"), "v", bad, 0).is_err());
        }
        assert!(pod_dir(Path::new("/r"), "../etc").is_err());
        assert!(is_valid_name("..."));
        assert!(is_valid_name("a.b-c_d"));
        let err = empty_dir_path(Path::new("/p"), "a/b").expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "invalid volume name \"a/b\": must be one non-empty path component"
        );
    }
}
