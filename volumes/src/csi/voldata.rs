//! The kubelet's `vol_data.json` files and reconstruction from them: what is published in a pod
//! folder and what is staged on the node, without any pod spec (after a restart).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::node::CsiVolume;
use crate::layout;
use crate::mounts;

/// The content of a `vol_data.json`, with the kubelet's keys. Unknown keys are kept, so a file
/// the kubelet wrote survives a rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolData {
    #[serde(rename = "driverName")]
    pub driver_name: String,
    #[serde(rename = "volumeHandle")]
    pub volume_handle: String,
    #[serde(
        rename = "specVolID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub spec_vol_id: String,
    #[serde(rename = "nodeName", default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(
        rename = "attachmentID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub attachment_id: String,
    #[serde(
        rename = "volumeLifecycleMode",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub lifecycle_mode: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

impl VolData {
    /// What the kubelet writes beside `globalmount`.
    pub fn for_stage(vol: &CsiVolume) -> Self {
        VolData {
            driver_name: vol.driver.clone(),
            volume_handle: vol.volume_handle.clone(),
            ..Default::default()
        }
    }
    /// What the kubelet writes beside a pod's `mount`.
    pub fn for_publish(vol: &CsiVolume) -> Self {
        VolData {
            driver_name: vol.driver.clone(),
            volume_handle: vol.volume_handle.clone(),
            spec_vol_id: vol.spec_name.clone(),
            node_name: vol.node_name.clone(),
            attachment_id: vol.attachment_id.clone(),
            lifecycle_mode: vol.lifecycle.as_str().to_string(),
            other: BTreeMap::new(),
        }
    }
}

/// A `vol_data.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VolDataError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `<dir>/vol_data.json` atomically (temporary file, fsync, rename).
pub fn write(dir: &Path, data: &VolData) -> Result<(), VolDataError> {
    let path = dir.join(layout::VOL_DATA_FILE);
    let tmp = dir.join(format!(".{}.tmp", layout::VOL_DATA_FILE));
    let err = |source| VolDataError::Write {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec(data).map_err(|e| err(io::Error::other(e)))?;
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&json).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(())
}

/// Reads `<dir>/vol_data.json`; `None` when there is none.
pub fn read(dir: &Path) -> Result<Option<VolData>, VolDataError> {
    let path = dir.join(layout::VOL_DATA_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VolDataError::Read { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| VolDataError::Parse { path, source })
}

/// A CSI volume found published in a pod folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedVolume {
    /// The folder name under `volumes/kubernetes.io~csi/` (the PV or inline volume name).
    pub spec_name: String,
    pub data: VolData,
    /// `<...>/<spec_name>/mount`.
    pub target: PathBuf,
    /// Whether `target` is a mount point now.
    pub mounted: bool,
}

/// The CSI volumes published in a pod folder, from their `vol_data.json` files (folders without
/// one are skipped: nothing was asked of a driver for them). A missing folder is an empty list.
pub fn published_volumes(pod_dir: &Path) -> Result<Vec<PublishedVolume>, VolDataError> {
    let root = layout::csi_publish_root(pod_dir);
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(VolDataError::Read { path: root, source }),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        let Some(data) = read(&dir)? else { continue };
        let target = dir.join(layout::CSI_PUBLISH_MOUNT);
        out.push(PublishedVolume {
            spec_name: e.file_name().to_string_lossy().into_owned(),
            mounted: mounts::is_mount_point(&target).unwrap_or(false),
            data,
            target,
        });
    }
    out.sort_by(|a, b| a.spec_name.cmp(&b.spec_name));
    Ok(out)
}

/// A CSI volume found staged on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedVolume {
    pub data: VolData,
    /// `<...>/<driver>/<hash>/globalmount`.
    pub staging: PathBuf,
    pub mounted: bool,
}

/// The CSI volumes staged under `<root>/plugins/kubernetes.io/csi/*/*/` (from their
/// `vol_data.json` files).
pub fn staged_volumes(root: &Path) -> Result<Vec<StagedVolume>, VolDataError> {
    let base = root
        .join(layout::PLUGINS_DIR)
        .join(layout::CSI_PLUGIN_DATA_DIR);
    let drivers = match std::fs::read_dir(&base) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(VolDataError::Read { path: base, source }),
    };
    let mut out = Vec::new();
    for d in drivers.flatten() {
        let Ok(vols) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for v in vols.flatten() {
            let dir = v.path();
            let Some(data) = read(&dir)? else { continue };
            let staging = dir.join(layout::CSI_GLOBAL_MOUNT);
            out.push(StagedVolume {
                mounted: mounts::is_mount_point(&staging).unwrap_or(false),
                data,
                staging,
            });
        }
    }
    out.sort_by(|a, b| a.staging.cmp(&b.staging));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kubelet_keys() {
        let td = tempfile::tempdir().expect("tempdir");
        let mut vol = CsiVolume::new("hostpath.csi.k8s.io", "vol-1", "pvc-1");
        vol.node_name = "node-a".into();
        let d = VolData::for_publish(&vol);
        write(td.path(), &d).expect("write");
        let text = std::fs::read_to_string(td.path().join("vol_data.json")).expect("read");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["driverName"], "hostpath.csi.k8s.io");
        assert_eq!(v["volumeHandle"], "vol-1");
        assert_eq!(v["specVolID"], "pvc-1");
        assert_eq!(v["nodeName"], "node-a");
        assert_eq!(v["volumeLifecycleMode"], "Persistent");
        assert!(v.get("attachmentID").is_none());
        assert_eq!(read(td.path()).expect("read"), Some(d));
        assert_eq!(read(&td.path().join("nope")).expect("missing"), None);
    }

    #[test]
    fn reads_a_kubelet_file_and_keeps_unknown_keys() {
        let td = tempfile::tempdir().expect("tempdir");
        let kubelet = r#"{"attachmentID":"csi-abc","driverName":"d","nodeName":"n","specVolID":"pv","volumeHandle":"h","volumeLifecycleMode":"Persistent","seLinuxMountContext":""}"#;
        std::fs::write(td.path().join("vol_data.json"), kubelet).expect("write");
        let d = read(td.path()).expect("read").expect("some");
        assert_eq!(d.attachment_id, "csi-abc");
        assert_eq!(
            d.other.get("seLinuxMountContext").map(String::as_str),
            Some("")
        );
        write(td.path(), &d).expect("rewrite");
        assert_eq!(read(td.path()).expect("read"), Some(d));
    }

    #[test]
    fn reconstructs_published_and_staged_volumes() {
        let td = tempfile::tempdir().expect("tempdir");
        let root = td.path();
        let pod = layout::pod_dir(root, "uid-1").expect("pod");
        for (name, handle) in [("pv-b", "h-b"), ("pv-a", "h-a")] {
            let dir = layout::csi_publish_dir(&pod, name).expect("dir");
            std::fs::create_dir_all(&dir).expect("mkdir");
            write(
                &dir,
                &VolData::for_publish(&CsiVolume::new("d", handle, name)),
            )
            .expect("write");
        }
        // A folder without vol_data.json is not a volume.
        std::fs::create_dir_all(layout::csi_publish_dir(&pod, "junk").expect("dir"))
            .expect("mkdir");
        let got = published_volumes(&pod).expect("list");
        assert_eq!(
            got.iter()
                .map(|v| (
                    v.spec_name.as_str(),
                    v.data.volume_handle.as_str(),
                    v.mounted
                ))
                .collect::<Vec<_>>(),
            vec![("pv-a", "h-a", false), ("pv-b", "h-b", false)]
        );
        assert_eq!(
            got[0].target,
            pod.join("volumes/kubernetes.io~csi/pv-a/mount")
        );
        assert_eq!(
            crate::csi::published_count(root, "d", "h-a").expect("count"),
            1
        );
        assert_eq!(
            crate::csi::published_count(root, "other", "h-a").expect("count"),
            0
        );

        let sdir = layout::csi_stage_dir(root, "d", "h-a").expect("dir");
        std::fs::create_dir_all(sdir.join("globalmount")).expect("mkdir");
        write(
            &sdir,
            &VolData::for_stage(&CsiVolume::new("d", "h-a", "pv-a")),
        )
        .expect("write");
        let staged = staged_volumes(root).expect("staged");
        assert_eq!(staged.len(), 1);
        assert_eq!(staged[0].data.volume_handle, "h-a");
        assert_eq!(staged[0].staging, sdir.join("globalmount"));
        assert!(published_volumes(&root.join("nope"))
            .expect("none")
            .is_empty());
    }
}
