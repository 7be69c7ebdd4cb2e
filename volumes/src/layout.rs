//! Where things live on disk. These paths are the kubelet's own: other node tools (log
//! shippers, CSI drivers, monitoring agents) look for them, so they must not change.
//!
//! ```text
//! <root_dir>/pods/<uid>/                                         the pod folder
//! <pod_dir>/volumes/kubernetes.io~empty-dir/<name>               an emptyDir
//! <pod_dir>/volumes/kubernetes.io~configmap/<name>               a configMap (also ~secret,
//!                                                                ~downward-api, ~projected)
//! <pod_dir>/volume-subpaths/<volume>/<container>/<mount index>   a subPath bind mount
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
