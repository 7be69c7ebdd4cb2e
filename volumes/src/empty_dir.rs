//! emptyDir: a folder under the pod folder, optionally backed by a tmpfs.

use std::fs::{self, DirBuilder, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use tracing::{debug, info};

use crate::layout;
use crate::mounts::{self, MountInfo};
use crate::{Medium, SetupError};

/// Mode of an emptyDir, as the kubelet makes it: anyone in the pod may write.
const EMPTY_DIR_MODE: u32 = 0o777;
/// Mode of the folders between the pod folder and the volume (the kubelet's 0750).
const PARENT_MODE: u32 = 0o750;

pub(crate) fn setup(
    pod_dir: &Path,
    name: &str,
    medium: Medium,
    size_limit: Option<u64>,
) -> Result<PathBuf, SetupError> {
    let path = layout::empty_dir_path(pod_dir, name)?;
    setup_at(
        &layout::empty_dir_root(pod_dir),
        &path,
        name,
        medium,
        size_limit,
    )
}

/// An emptyDir-like folder at `path` (below `parent`): what the kubelet's configMap, secret,
/// downwardAPI and projected plugins wrap too.
pub(crate) fn setup_at(
    parent: &Path,
    path: &Path,
    name: &str,
    medium: Medium,
    size_limit: Option<u64>,
) -> Result<PathBuf, SetupError> {
    let path = path.to_path_buf();
    let volume = || name.to_string();
    let create_err = |path: &Path, source| SetupError::Create {
        volume: volume(),
        path: path.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(PARENT_MODE)
        .create(parent)
        .map_err(|e| create_err(parent, e))?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SetupError::NotADirectory {
                volume: volume(),
                path,
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            match DirBuilder::new().mode(EMPTY_DIR_MODE).create(&path) {
                Ok(()) => debug!(path = %path.display(), "created emptyDir"),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(create_err(&path, e)),
            }
        }
        Err(e) => return Err(create_err(&path, e)),
    }

    // The umask trims the mode given to mkdir; the kubelet chmods afterwards (its setupDir: the
    // permission bits only, so an fsGroup's setgid stays), so do we, before a tmpfs is mounted
    // on the folder (whose root then has tmpfs's own 1777, as with the kubelet).
    let mode = fs::symlink_metadata(&path)
        .map_err(|e| create_err(&path, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode != EMPTY_DIR_MODE {
        fs::set_permissions(&path, Permissions::from_mode(EMPTY_DIR_MODE)).map_err(|source| {
            SetupError::Chmod {
                volume: volume(),
                path: path.clone(),
                source,
            }
        })?;
    }
    if medium == Medium::Memory {
        // What is mounted at the folder: asked of the folder itself (every pod sync comes here
        // for its token and API data volumes), mountinfo only on kernels before 5.8.
        let mounted: Option<String> = match mounts::mount_root_type(&path) {
            Ok(t) => t.map(|t| {
                if t == libc::TMPFS_MAGIC {
                    "tmpfs".to_string()
                } else {
                    format!("filesystem type {t:#x}")
                }
            }),
            Err(_) => {
                let mounts = mounts::read_mountinfo().map_err(|source| SetupError::Mountinfo {
                    volume: volume(),
                    path: path.clone(),
                    source,
                })?;
                top_mount_at(&mounts, &mounts::canonical(&path)).map(|m| m.fs_type.clone())
            }
        };
        match mounted {
            Some(fs_type) if fs_type == "tmpfs" => {
                debug!(path = %path.display(), "tmpfs already mounted");
            }
            Some(fs_type) => {
                return Err(SetupError::ForeignMount {
                    volume: volume(),
                    path,
                    fs_type,
                })
            }
            None => {
                let data = tmpfs_options(size_limit);
                info!(path = %path.display(), options = %data, "mounting tmpfs for emptyDir");
                mount(
                    Some("tmpfs"),
                    &path,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some(data.as_str()),
                )
                .map_err(|source| SetupError::MountTmpfs {
                    volume: volume(),
                    path: path.clone(),
                    source,
                })?;
            }
        }
    }

    Ok(path)
}

/// The mount data of a Memory emptyDir's tmpfs: only the size, as the kubelet's
/// `generateTmpfsMountOptions`, so the root has tmpfs's own mode, 1777 (the sticky bit shows in
/// the volume and in the subPath folders made in it, which take the root's mode).
pub(crate) fn tmpfs_options(size_limit: Option<u64>) -> String {
    match size_limit {
        Some(size) if size > 0 => format!("size={size}"),
        // No size: the tmpfs default (half of the RAM). The kubelet always gives one (the
        // volume's sizeLimit, else the pod's memory limit, else the node's allocatable memory):
        // callers compute it.
        _ => String::new(),
    }
}

/// The mount visible at `path` (the last one mounted there), if any.
fn top_mount_at<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, UnmountGuard};
    use crate::{setup as setup_volume, VolumeSource};

    fn disk() -> VolumeSource {
        VolumeSource::EmptyDir {
            medium: Medium::Disk,
            size_limit: None,
        }
    }

    #[test]
    fn disk_empty_dir_is_created_0777_and_idempotent() {
        let td = tempfile::tempdir().expect("tempdir");
        let pod = td.path().join("pods/uid1");
        let p = setup_volume(&pod, "cache", &disk()).expect("setup");
        assert_eq!(p, pod.join("volumes/kubernetes.io~empty-dir/cache"));
        let m = fs::metadata(&p).expect("stat");
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o777);
        fs::write(p.join("data"), b"kept").expect("write");
        let again = setup_volume(&pod, "cache", &disk()).expect("setup again");
        assert_eq!(again, p);
        assert_eq!(fs::read(p.join("data")).expect("read"), b"kept");
    }

    #[test]
    fn empty_dir_refuses_a_file_or_symlink_in_its_place() {
        let td = tempfile::tempdir().expect("tempdir");
        let root = layout::empty_dir_root(td.path());
        fs::create_dir_all(&root).expect("mkdir");
        fs::write(root.join("f"), b"").expect("write");
        std::os::unix::fs::symlink("/etc", root.join("l")).expect("symlink");
        for name in ["f", "l"] {
            let err = setup_volume(td.path(), name, &disk()).expect_err("must fail");
            assert!(matches!(err, SetupError::NotADirectory { .. }), "{err}");
        }
        assert!(matches!(
            setup_volume(td.path(), "../x", &disk()),
            Err(SetupError::InvalidName(_))
        ));
    }

    #[test]
    fn tmpfs_options_follow_the_size_limit() {
        assert_eq!(tmpfs_options(None), "");
        assert_eq!(tmpfs_options(Some(0)), "");
        assert_eq!(tmpfs_options(Some(1 << 20)), "size=1048576");
    }

    #[test]
    #[ignore = "needs root: mounts tmpfs"]
    fn memory_empty_dir_is_a_sized_tmpfs_and_teardown_unmounts_it() {
        let td = tempfile::tempdir().expect("tempdir");
        let _guard = UnmountGuard::new(td.path());
        let pod = td.path().join("pod");
        let src = VolumeSource::EmptyDir {
            medium: Medium::Memory,
            size_limit: Some(8 << 20),
        };
        let p = setup_volume(&pod, "mem", &src).expect("setup");
        let st = nix::sys::statfs::statfs(&p).expect("statfs");
        assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        assert_eq!(st.blocks() * st.block_size() as u64, 8 << 20);
        // tmpfs's own root mode, as with the kubelet (no `mode=` option): 1777.
        assert_eq!(
            fs::metadata(&p).expect("stat").permissions().mode() & 0o7777,
            0o1777
        );
        fs::write(p.join("f"), b"x").expect("write into tmpfs");
        // Idempotent: no second tmpfs stacked.
        setup_volume(&pod, "mem", &src).expect("setup again");
        assert_eq!(testutil::mount_count_at(&p), 1);
        assert!(p.join("f").exists());
        // Another filesystem already mounted where a memory emptyDir goes: refused, named.
        let other = p.parent().expect("parent").join("other");
        let disk_dir = td.path().join("disk");
        fs::create_dir_all(&other).expect("mkdir other");
        fs::create_dir_all(&disk_dir).expect("mkdir disk");
        mount(
            Some(&disk_dir),
            &other,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        match setup_volume(&pod, "other", &src) {
            Err(SetupError::ForeignMount { fs_type, .. }) => {
                assert!(fs_type.contains("filesystem type"), "{fs_type}")
            }
            other => panic!("expected a foreign mount, got {other:?}"),
        }
        assert_eq!(testutil::mount_count_at(&other), 1);

        crate::teardown_pod(&pod).expect("teardown");
        assert_eq!(testutil::mount_count_at(&p), 0);
        assert!(crate::mounts_below(td.path()).is_empty());
        assert!(!pod.exists());
    }

    #[test]
    #[ignore = "needs root: mounts tmpfs"]
    fn memory_empty_dir_without_limit_is_unlimited_tmpfs() {
        let td = tempfile::tempdir().expect("tempdir");
        let _guard = UnmountGuard::new(td.path());
        let src = VolumeSource::EmptyDir {
            medium: Medium::Memory,
            size_limit: None,
        };
        let p = setup_volume(td.path(), "mem", &src).expect("setup");
        let st = nix::sys::statfs::statfs(&p).expect("statfs");
        assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        // The tmpfs default is half of RAM: far more than a few MiB.
        assert!(st.blocks() * st.block_size() as u64 > 64 << 20);
        crate::teardown_pod(td.path()).expect("teardown");
        assert!(crate::mounts_below(td.path()).is_empty());
    }
}
