//! Unmounting a pod's CSI volumes when it goes (retried in the background while a driver is
//! down), and the node's `volumesInUse`.

use std::path::Path;
use std::time::Duration;

use bosun_volumes::csi::{self, Drivers};

use super::{Csi, UnmountError};

impl Csi {
    /// Unpublishes every CSI volume of the pod (found on disk, so it works after a restart)
    /// and unstages the ones no other pod uses. When that fails (the driver is down, e.g. its
    /// DaemonSet pod restarting), it is retried in the background until it works, and only then
    /// is the pod folder removed, as the kubelet's volume manager does for an orphaned pod: the
    /// mount must neither leak nor have the pod folder's removal delete the volume's data.
    pub async fn unmount_pod(&self, pod_uid: &str) -> Result<(), UnmountError> {
        if let Ok(mut map) = self.mounted.lock() {
            map.retain(|(uid, _), _| uid != pod_uid);
        }
        // The pod no longer wants its volumes: what stays in use is what is still on disk.
        if let Ok(mut r) = self.reporting.lock() {
            forget_pod(&mut r, pod_uid);
        }
        let Err(e) = unmount_pod_volumes(&self.root, &self.drivers, pod_uid).await else {
            return Ok(());
        };
        let first = self
            .retrying
            .lock()
            .map(|mut s| s.insert(pod_uid.to_string()))
            .unwrap_or(false);
        if first {
            let (root, drivers, retrying) = (
                self.root.clone(),
                self.drivers.clone(),
                self.retrying.clone(),
            );
            let uid = pod_uid.to_string();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UNMOUNT_RETRY).await;
                    match unmount_pod_volumes(&root, &drivers, &uid).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::debug!(pod_uid = %uid, error = %e, "CSI unmount retry failed")
                        }
                    }
                }
                match bosun_volumes::layout::pod_dir(&root, &uid) {
                    Ok(dir) => match bosun_volumes::teardown_pod(&dir) {
                        Ok(()) => {
                            tracing::info!(pod_uid = %uid, "CSI volumes unmounted on retry; pod folder removed")
                        }
                        Err(e) => {
                            tracing::warn!(pod_uid = %uid, error = %e, "cannot remove the pod folder")
                        }
                    },
                    Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "invalid pod folder"),
                }
                if let Ok(mut s) = retrying.lock() {
                    s.remove(&uid);
                }
            });
        }
        Err(UnmountError::Retrying {
            source: Box::new(e),
            every: UNMOUNT_RETRY,
        })
    }
}

/// How often an unmount that failed is tried again.
const UNMOUNT_RETRY: Duration = Duration::from_secs(5);

/// Unpublishes the pod's CSI volumes and unstages the ones no pod uses any more; goes on past
/// errors and returns the first.
async fn unmount_pod_volumes(
    root: &Path,
    drivers: &Drivers,
    pod_uid: &str,
) -> Result<(), UnmountError> {
    let pod_dir = bosun_volumes::layout::pod_dir(root, pod_uid).map_err(UnmountError::PodDir)?;
    let published = csi::published_volumes(&pod_dir).map_err(UnmountError::VolData)?;
    let mut first = None;
    for spec in csi::block::published(&pod_dir) {
        let result = async {
            csi::block::unpublish(root, pod_uid, &spec, drivers)
                .await
                .map_err(UnmountError::Unpublish)?;
            if csi::block::published_count(root, &spec).map_err(UnmountError::VolData)? == 0 {
                csi::block::unstage(root, drivers, &spec)
                    .await
                    .map_err(UnmountError::Unstage)?;
            }
            Ok::<(), UnmountError>(())
        }
        .await;
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    for p in published {
        let result = async {
            csi::unpublish(root, pod_uid, &p.spec_name, drivers)
                .await
                .map_err(UnmountError::Unpublish)?;
            let users = csi::published_count(root, &p.data.driver_name, &p.data.volume_handle)
                .map_err(UnmountError::VolData)?;
            if users == 0 {
                csi::unstage(root, drivers, &p.data.driver_name, &p.data.volume_handle)
                    .await
                    .map_err(UnmountError::Unstage)?;
            }
            Ok::<(), UnmountError>(())
        }
        .await;
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The node's `volumesInUse`: every CSI volume staged on the node or published into a pod
/// folder, as `kubernetes.io/csi/<driver>^<volume handle>` (the kubelet's unique volume name),
/// sorted. Read from disk, so it is right after a restart too.
pub fn volumes_in_use(root: &std::path::Path) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let name = |driver: &str, handle: &str| format!("kubernetes.io/csi/{driver}^{handle}");
    for s in csi::staged_volumes(root).unwrap_or_default() {
        out.insert(name(&s.data.driver_name, &s.data.volume_handle));
    }
    for d in csi::block::volumes(root) {
        out.insert(name(&d.driver_name, &d.volume_handle));
    }
    if let Ok(pods) = std::fs::read_dir(root.join("pods")) {
        for p in pods.flatten() {
            for v in csi::published_volumes(&p.path()).unwrap_or_default() {
                out.insert(name(&v.data.driver_name, &v.data.volume_handle));
            }
        }
    }
    out.into_iter().collect()
}

/// `volumesInUse`: the volumes on disk and those being set up, sorted, once each.
pub fn in_use(on_disk: Vec<String>, pending: Vec<String>) -> Vec<String> {
    let all: std::collections::BTreeSet<String> = on_disk.into_iter().chain(pending).collect();
    all.into_iter().collect()
}

/// Drops `pod_uid` from the volumes being set up, and the volumes no pod wants any more.
pub fn forget_pod(
    reporting: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    pod_uid: &str,
) {
    reporting.retain(|_, pods| {
        pods.remove(pod_uid);
        !pods.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_being_set_up_are_in_use_until_their_pods_go() {
        let mut r = std::collections::BTreeMap::new();
        for (vol, pod) in [("v1", "p1"), ("v1", "p2"), ("v2", "p2")] {
            r.entry(vol.to_string())
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(pod.to_string());
        }
        let pending = |r: &std::collections::BTreeMap<_, _>| r.keys().cloned().collect();
        assert_eq!(
            in_use(vec!["v3".into(), "v1".into()], pending(&r)),
            ["v1", "v2", "v3"]
        );
        forget_pod(&mut r, "p2");
        assert_eq!(in_use(vec![], pending(&r)), ["v1"]);
        forget_pod(&mut r, "p1");
        assert!(in_use(vec![], pending(&r)).is_empty());
    }

    #[test]
    fn volumes_in_use_from_disk() {
        let td = tempfile::tempdir().expect("tempdir");
        let root = td.path();
        let vol = |driver: &str, handle: &str| csi::VolData {
            driver_name: driver.into(),
            volume_handle: handle.into(),
            ..Default::default()
        };
        let stage = bosun_volumes::layout::csi_stage_dir(root, "d1", "h1").expect("stage dir");
        std::fs::create_dir_all(&stage).expect("mkdir");
        csi::voldata::write(&stage, &vol("d1", "h1")).expect("write");
        for (pod, handle) in [("p1", "h1"), ("p2", "h2")] {
            let pod_dir = bosun_volumes::layout::pod_dir(root, pod).expect("pod dir");
            let dir = bosun_volumes::layout::csi_publish_dir(&pod_dir, "pv").expect("dir");
            std::fs::create_dir_all(&dir).expect("mkdir");
            csi::voldata::write(&dir, &vol("d1", handle)).expect("write");
        }
        assert_eq!(
            volumes_in_use(root),
            ["kubernetes.io/csi/d1^h1", "kubernetes.io/csi/d1^h2"]
        );
        assert!(volumes_in_use(&root.join("nothing")).is_empty());
    }
}
