//! Image volumes (the pod's `image` volume source): a read-only view of an image of the store,
//! one per pod and image, as containerd's CRI makes one per sandbox and image
//! (`<state>/image-volumes/<sandbox>/<image>`). The view is an overlay of the image's unpacked
//! layers with no upper folder (read-only by construction; a one-layer image is a read-only
//! bind of its layer: overlayfs needs two lower folders without an upper one), mounted at
//! `<run_dir>/image-volumes/<pod uid>/<image hex>` and bound read-only into the containers that
//! mount the volume. While it is mounted the image counts as in use for image GC
//! ([`in_use`]); it is unmounted when the pod's sandbox is removed ([`release`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::{sys, RuntimePaths};

/// The folder of a pod's image volumes.
pub fn dir(paths: &RuntimePaths, pod_uid: &str) -> PathBuf {
    paths.run_dir.join("image-volumes").join(pod_uid)
}

fn check_name(what: &str, s: &str) -> io::Result<()> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} {s:?}"),
        ))
    }
}

/// The mount point of image `image_id` (`sha256:<hex>`) for pod `pod_uid`.
pub fn target(paths: &RuntimePaths, pod_uid: &str, image_id: &str) -> io::Result<PathBuf> {
    check_name("pod uid", pod_uid)?;
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    check_name("image id", hex)?;
    Ok(dir(paths, pod_uid).join(hex))
}

/// How a view of `layers` (bottom first) is mounted: the overlay's lower folders (top first),
/// or one folder bound read-only.
#[derive(Debug, PartialEq, Eq)]
pub enum View<'a> {
    Overlay(Vec<&'a Path>),
    Bind(&'a Path),
}

/// The view of an image with these layers (bottom first). An image without layers has none.
pub fn view(layers: &[PathBuf]) -> io::Result<View<'_>> {
    match layers {
        [] => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the image has no layers",
        )),
        [one] => Ok(View::Bind(one)),
        many => Ok(View::Overlay(
            many.iter().rev().map(PathBuf::as_path).collect(),
        )),
    }
}

/// Mounts the read-only view of an image (`layers` bottom first) for pod `pod_uid`, unless it
/// is mounted already (another container of the pod, an earlier attempt); its path.
pub fn mount(
    paths: &RuntimePaths,
    pod_uid: &str,
    image_id: &str,
    layers: &[PathBuf],
) -> io::Result<PathBuf> {
    let target = target(paths, pod_uid, image_id)?;
    if sys::is_mount_point(&target)? {
        return Ok(target);
    }
    let view = view(layers)?;
    std::fs::create_dir_all(&target)?;
    let mounted = match view {
        View::Overlay(lower) => sys::mount_overlay_ro(&lower, &target),
        View::Bind(layer) => nix::mount::mount(
            Some(layer),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .and_then(|()| {
            let ro = nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            if ro.is_err() {
                let _ = sys::unmount(&target);
            }
            ro
        })
        .map_err(io::Error::from),
    };
    if let Err(e) = mounted {
        let _ = std::fs::remove_dir(&target);
        return Err(e);
    }
    Ok(target)
}

/// Unmounts and removes every image volume of pod `pod_uid` (idempotent).
pub fn release(paths: &RuntimePaths, pod_uid: &str) -> io::Result<()> {
    check_name("pod uid", pod_uid)?;
    let d = dir(paths, pod_uid);
    if !d.exists() {
        return Ok(());
    }
    let mut first: Option<io::Error> = None;
    for m in sys::mounts_under(&d) {
        // Stacked mounts on one point: unmount until it is gone.
        for _ in 0..8 {
            if let Err(e) = sys::unmount(&m) {
                first.get_or_insert(e);
                break;
            }
            if !sys::is_mount_point(&m).unwrap_or(false) {
                break;
            }
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    for e in std::fs::read_dir(&d)?.flatten() {
        // Only empty mount points are left: remove_dir never deletes an image's files.
        if let Err(err) = std::fs::remove_dir(e.path()) {
            if err.kind() != io::ErrorKind::NotFound {
                return Err(err);
            }
        }
    }
    match std::fs::remove_dir(&d) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Image ids (`sha256:<hex>`) with a view mounted for some pod: image GC keeps them.
pub fn in_use(paths: &RuntimePaths) -> BTreeSet<String> {
    let Ok(pods) = std::fs::read_dir(paths.run_dir.join("image-volumes")) else {
        return BTreeSet::new();
    };
    pods.flatten()
        .filter_map(|p| std::fs::read_dir(p.path()).ok())
        .flat_map(|images| images.flatten())
        .filter_map(|e| e.file_name().to_str().map(|h| format!("sha256:{h}")))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn paths(run: &Path) -> RuntimePaths {
        RuntimePaths {
            run_dir: run.to_path_buf(),
            data_dir: run.join("data"),
            pod_logs_dir: run.join("logs"),
            container_logs_dir: run.join("clogs"),
            cgroup_root: "/".into(),
            helper_binary: "/bin/true".into(),
            keeper_binary: "/bin/true".into(),
        }
    }

    #[test]
    fn views_of_images() {
        let l = |s: &str| PathBuf::from(s);
        assert!(view(&[]).is_err());
        let one = [l("/a")];
        assert_eq!(view(&one).unwrap(), View::Bind(Path::new("/a")));
        let three = [l("/bottom"), l("/mid"), l("/top")];
        assert_eq!(
            view(&three).unwrap(),
            View::Overlay(vec![
                Path::new("/top"),
                Path::new("/mid"),
                Path::new("/bottom")
            ])
        );
    }

    #[test]
    fn targets_and_images_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        let t = target(&p, "uid-1", "sha256:abc").unwrap();
        assert_eq!(t, tmp.path().join("image-volumes/uid-1/abc"));
        assert!(target(&p, "../x", "sha256:abc").is_err());
        assert!(target(&p, "u", "sha256:../../etc").is_err());
        assert!(target(&p, "u", "").is_err());
        assert!(in_use(&p).is_empty());
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(target(&p, "uid-2", "sha256:def").unwrap()).unwrap();
        assert_eq!(
            in_use(&p),
            ["sha256:abc".to_string(), "sha256:def".to_string()].into()
        );
        // Nothing mounted: release removes the empty mount points.
        release(&p, "uid-1").unwrap();
        assert!(!dir(&p, "uid-1").exists());
        assert_eq!(in_use(&p), ["sha256:def".to_string()].into());
        release(&p, "uid-1").unwrap();
    }
}
