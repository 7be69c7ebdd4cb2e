//! Teardown: unmount everything below a folder in reverse mount order, then delete our own
//! folders without following a symlink and without crossing into a mount, so that a hostPath
//! (or anything else mounted or linked below the pod folder) never loses a file.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::unistd::{unlinkat, UnlinkatFlags};
use tracing::{debug, info, warn};

use crate::layout::{self, InvalidName};
use crate::mounts;
use crate::sys::{self, RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV};

/// How many times the mounts below a folder are re-read and unmounted before giving up (mounts
/// can reappear through propagation, or be stacked).
const UNMOUNT_PASSES: usize = 8;

/// Why a teardown did not finish. Teardown goes on past errors; this is the first one.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("cannot read the mounts below {}: {source}", dir.display())]
    Mountinfo {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unmount {}: {source}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{} is still mounted after {passes} unmount passes", path.display())]
    StillMounted { path: PathBuf, passes: usize },
    #[error("refusing to remove {}: it is a mount point", path.display())]
    MountPoint { path: PathBuf },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A CSI volume is still published in the pod: unpublish it first
    /// (`csi::unpublish`, which finds it from its `vol_data.json`). Nothing was touched.
    #[error("CSI volume {} is still published: unpublish it before removing the pod", path.display())]
    CsiVolumePublished { path: PathBuf },
}

/// Keeps the first error and logs the others.
#[derive(Default)]
struct FirstError(Option<TeardownError>);

impl FirstError {
    fn push(&mut self, e: TeardownError) {
        if self.0.is_none() {
            self.0 = Some(e);
        } else {
            warn!(error = %e, "teardown");
        }
    }
    fn into_result(self) -> Result<(), TeardownError> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Removes everything of a pod: unmounts every mount below `pod_dir` (subPath binds, tmpfs
/// emptyDirs, mounts propagated from containers) in reverse mount order, then deletes the pod
/// folder (`volumes/` with the emptyDir data, `volume-subpaths/`, and whatever else the agent
/// kept there). A hostPath's content is never touched: the deletion never follows a symlink and
/// never enters a mount. Idempotent (a missing `pod_dir` is fine); goes on past errors and
/// returns the first.
#[tracing::instrument(level = "debug", fields(pod_dir = %pod_dir.display()))]
pub fn teardown_pod(pod_dir: &Path) -> Result<(), TeardownError> {
    // A CSI volume's mount belongs to its driver: unmounting it here would leave the driver's
    // state behind (and a staged volume in use). The agent unpublishes first; an empty or
    // missing `kubernetes.io~csi` folder is the normal case.
    if let Some(path) = csi_volume_left(pod_dir) {
        return Err(TeardownError::CsiVolumePublished { path });
    }
    let mut errs = FirstError::default();
    unmount_below(pod_dir, &mut errs);
    remove_tree(pod_dir, &mut errs);
    errs.into_result()
}

/// The first entry left in `<pod_dir>/volumes/kubernetes.io~csi/`, if any.
fn csi_volume_left(pod_dir: &Path) -> Option<PathBuf> {
    let root = layout::csi_publish_root(pod_dir);
    let first = std::fs::read_dir(&root).ok()?.flatten().next()?;
    Some(first.path())
}

/// Tears one volume of a pod down: unmounts and removes its subPath binds
/// (`volume-subpaths/<name>`) and, for an emptyDir, unmounts its tmpfs and deletes its folder
/// and data. Idempotent; goes on past errors and returns the first.
#[tracing::instrument(level = "debug", fields(pod_dir = %pod_dir.display()))]
pub fn teardown_volume(pod_dir: &Path, name: &str) -> Result<(), TeardownError> {
    let path = layout::empty_dir_path(pod_dir, name)?;
    let mut errs = FirstError::default();
    if let Err(e) = teardown_subpaths(pod_dir, name) {
        errs.push(e);
    }
    unmount_below(&path, &mut errs);
    remove_tree(&path, &mut errs);
    errs.into_result()
}

/// Unmounts and removes the subPath binds of one volume (`<pod_dir>/volume-subpaths/<volume>`).
pub fn teardown_subpaths(pod_dir: &Path, volume: &str) -> Result<(), TeardownError> {
    let dir = layout::volume_subpaths_dir(pod_dir, volume)?;
    let mut errs = FirstError::default();
    unmount_below(&dir, &mut errs);
    remove_tree(&dir, &mut errs);
    errs.into_result()
}

/// Unmounts every mount at or below `dir`, innermost first, re-reading mountinfo between
/// passes until none is left or no progress is made.
fn unmount_below(dir: &Path, errs: &mut FirstError) {
    let dir = mounts::canonical(dir);
    for _ in 0..UNMOUNT_PASSES {
        let all = match mounts::read_mountinfo() {
            Ok(m) => m,
            Err(source) => {
                errs.push(TeardownError::Mountinfo {
                    dir: dir.clone(),
                    source,
                });
                return;
            }
        };
        let below = mounts::mounts_below_in(&all, &dir);
        if below.is_empty() {
            return;
        }
        let mut progress = false;
        let mut pass_err = None;
        for m in &below {
            // UMOUNT_NOFOLLOW: a mount point path is never a symlink we could be tricked by.
            match umount2(m, MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => {
                    debug!(path = %m.display(), "unmounted");
                    progress = true;
                }
                // Already gone (a propagated unmount, or a stacked mount taken with another).
                Err(Errno::EINVAL | Errno::ENOENT) => progress = true,
                Err(source) => {
                    pass_err.get_or_insert(TeardownError::Unmount {
                        path: m.clone(),
                        source,
                    });
                }
            }
        }
        if !progress {
            if let Some(e) = pass_err {
                errs.push(e);
                return;
            }
            break;
        }
    }
    if let Some(path) = mounts::mounts_below(&dir).into_iter().next() {
        errs.push(TeardownError::StillMounted {
            path,
            passes: UNMOUNT_PASSES,
        });
    }
}

/// One folder being emptied: its fd, what is left to remove in it, its path for messages.
struct Frame {
    fd: OwnedFd,
    name: OsString,
    path: PathBuf,
    left: Vec<OsString>,
}

/// Deletes `path` and everything below it without following symlinks (a symlink is removed, not
/// its target) and without entering mounts (a mount point is reported and left alone, with its
/// parents). Missing `path` is fine. Iterative, so deep trees cannot overflow the stack.
fn remove_tree(path: &Path, errs: &mut FirstError) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        errs.push(TeardownError::Remove {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no parent folder"),
        });
        return;
    };
    let parent_fd = match sys::open(parent, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
        Err(source) => {
            errs.push(TeardownError::Remove {
                path: path.to_path_buf(),
                source,
            });
            return;
        }
    };
    let mut stack: Vec<Frame> = Vec::new();
    match enter_or_unlink(parent_fd.as_fd(), name, path, errs) {
        Some(frame) => stack.push(frame),
        None => return,
    }
    info!(path = %path.display(), "removing");
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.left.pop() {
            let child_path = top.path.join(&child);
            if let Some(frame) = enter_or_unlink(top.fd.as_fd(), &child, &child_path, errs) {
                stack.push(frame);
            }
            continue;
        }
        let Some(done) = stack.pop() else { break };
        let dir_fd = stack.last().map_or(parent_fd.as_fd(), |f| f.fd.as_fd());
        drop(done.fd);
        match unlinkat(
            Some(dir_fd.as_raw_fd()),
            done.name.as_os_str(),
            UnlinkatFlags::RemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            // Something below could not go (a mount point, an error already reported).
            Err(Errno::ENOTEMPTY | Errno::EBUSY) if errs.0.is_some() => {}
            Err(e) => errs.push(TeardownError::Remove {
                path: done.path,
                source: e.into(),
            }),
        }
    }
}

/// Looks at `name` in `dir` without following it: removes a non-folder right away, returns a
/// frame for a folder to empty, refuses a mount point.
fn enter_or_unlink(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    errs: &mut FirstError,
) -> Option<Frame> {
    let remove_err = |source: io::Error| TeardownError::Remove {
        path: path.to_path_buf(),
        source,
    };
    let cname = match sys::cstring(Path::new(name)) {
        Ok(c) => c,
        Err(e) => {
            errs.push(remove_err(e));
            return None;
        }
    };
    let st = match sys::statx(dir, &cname, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
        Err(e) => {
            errs.push(remove_err(e));
            return None;
        }
    };
    if st.mount_root == Some(true) {
        errs.push(TeardownError::MountPoint {
            path: path.to_path_buf(),
        });
        return None;
    }
    if !st.is_dir() {
        match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => errs.push(remove_err(e.into())),
        }
        return None;
    }
    // RESOLVE_NO_XDEV: even without statx's mount-root attribute, never enter another mount.
    let fd = match sys::openat2(
        dir,
        Path::new(name),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            errs.push(TeardownError::MountPoint {
                path: path.to_path_buf(),
            });
            return None;
        }
        Err(e) => {
            errs.push(remove_err(e));
            return None;
        }
    };
    match list(fd.as_fd()) {
        Ok(left) => Some(Frame {
            fd,
            name: name.to_os_string(),
            path: path.to_path_buf(),
            left,
        }),
        Err(e) => {
            errs.push(remove_err(e));
            None
        }
    }
}

/// The names in a folder (without `.` and `..`).
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let dup = dir.try_clone_to_owned()?;
    let mut d = Dir::from_fd(dup.into_raw_fd())?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, UnmountGuard};
    use crate::{HostPathType, Medium, VolumeSource};
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_trees_without_following_symlinks() {
        let td = tempfile::tempdir().expect("tempdir");
        let outside = td.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("keep"), b"precious").expect("write");
        let pod = td.path().join("pod");
        let ed = crate::setup(
            &pod,
            "data",
            &VolumeSource::EmptyDir {
                medium: Medium::Disk,
                size_limit: None,
            },
        )
        .expect("emptyDir");
        fs::create_dir_all(ed.join("a/b/c")).expect("mkdir");
        fs::write(ed.join("a/b/c/f"), b"x").expect("write");
        symlink(&outside, ed.join("link-dir")).expect("symlink");
        symlink(outside.join("keep"), ed.join("a/link-file")).expect("symlink");
        symlink("../../..", ed.join("a/b/up")).expect("symlink");
        let sock = ed.join("a/s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");

        teardown_pod(&pod).expect("teardown");
        assert!(!pod.exists());
        assert_eq!(fs::read(outside.join("keep")).expect("kept"), b"precious");
        // Idempotent.
        teardown_pod(&pod).expect("teardown again");
    }

    #[test]
    fn a_published_csi_volume_blocks_teardown_until_it_is_gone() {
        let td = tempfile::tempdir().expect("tempdir");
        let pod = td.path().join("pod");
        let csi = layout::csi_publish_dir(&pod, "pv-1").expect("dir");
        fs::create_dir_all(csi.join("mount")).expect("mkdir");
        fs::write(csi.join("vol_data.json"), b"{}").expect("write");
        let err = teardown_pod(&pod).expect_err("published");
        assert!(
            matches!(err, TeardownError::CsiVolumePublished { .. }),
            "{err}"
        );
        assert!(csi.join("mount").exists(), "nothing touched");
        // What unpublish leaves: an empty kubernetes.io~csi folder.
        fs::remove_dir_all(&csi).expect("rm");
        teardown_pod(&pod).expect("teardown");
        assert!(!pod.exists());
    }

    #[test]
    fn deep_trees_do_not_overflow() {
        // On tmpfs when there is one: thousands of mkdir/rmdir are slow on this VM's disk.
        let td = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let pod = td.path().join("pod");
        let mut p = pod.join("volumes");
        fs::create_dir_all(&p).expect("mkdir");
        // Built with *at calls: the full path would pass PATH_MAX.
        let mut fd = sys::open(&p, libc::O_PATH | libc::O_DIRECTORY).expect("open");
        for _ in 0..3000 {
            nix::sys::stat::mkdirat(
                Some(fd.as_raw_fd()),
                "dd",
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            )
            .expect("mkdirat");
            fd = sys::openat2(fd.as_fd(), Path::new("dd"), libc::O_PATH, 0, 0).expect("open");
            p.push("dd");
        }
        teardown_pod(&pod).expect("teardown");
        assert!(!pod.exists());
    }

    #[test]
    fn teardown_volume_only_removes_that_volume() {
        let td = tempfile::tempdir().expect("tempdir");
        let pod = td.path().join("pod");
        let src = VolumeSource::EmptyDir {
            medium: Medium::Disk,
            size_limit: None,
        };
        let a = crate::setup(&pod, "a", &src).expect("a");
        let b = crate::setup(&pod, "b", &src).expect("b");
        fs::write(b.join("f"), b"x").expect("write");
        teardown_volume(&pod, "a").expect("teardown a");
        teardown_volume(&pod, "a").expect("idempotent");
        assert!(!a.exists());
        assert!(b.join("f").exists());
    }

    #[test]
    #[ignore = "needs root: tmpfs and bind mounts"]
    fn teardown_leaves_no_mount_and_never_touches_host_path_content() {
        let td = tempfile::tempdir().expect("tempdir");
        let _guard = UnmountGuard::new(td.path());
        let root = fs::canonicalize(td.path()).expect("canon");
        let pod = root.join("pods/uid-1");
        let host = root.join("host-data");
        fs::create_dir(&host).expect("mkdir");
        fs::write(host.join("marker"), b"keep me").expect("marker");
        fs::create_dir(host.join("sub")).expect("mkdir");
        fs::write(host.join("sub/marker2"), b"keep me too").expect("marker");

        let hp = crate::setup(
            &pod,
            "host",
            &VolumeSource::HostPath {
                path: host.clone(),
                kind: HostPathType::Directory,
            },
        )
        .expect("hostPath");
        let mem = crate::setup(
            &pod,
            "mem",
            &VolumeSource::EmptyDir {
                medium: Medium::Memory,
                size_limit: Some(4 << 20),
            },
        )
        .expect("memory emptyDir");
        fs::create_dir(mem.join("d")).expect("mkdir");
        let s1 = crate::prepare_subpath(&pod, "host", &hp, "sub", "app", 0).expect("subpath");
        let s2 = crate::prepare_subpath(&pod, "host", &hp, "marker", "app", 1).expect("file");
        let s3 = crate::prepare_subpath(&pod, "mem", &mem, "d", "app", 2).expect("mem subpath");
        // A stacked mount and a nested one, as a Bidirectional container could leave.
        nix::mount::mount(
            Some("tmpfs"),
            &mem.join("d"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("nested tmpfs");
        assert_eq!(crate::mounts_below(&pod).len(), 5);
        // A symlink in an emptyDir pointing at the hostPath.
        symlink(&host, mem.join("to-host")).expect("symlink");
        // A hostPath linked from the pod folder itself.
        symlink(&host, pod.join("to-host")).expect("symlink");

        teardown_pod(&pod).expect("teardown");
        for p in [&s1, &s2, &s3, &mem] {
            assert_eq!(testutil::mount_count_at(p), 0, "{}", p.display());
        }
        assert!(crate::mounts_below(&root).is_empty());
        assert!(!pod.exists());
        assert_eq!(fs::read(host.join("marker")).expect("marker"), b"keep me");
        assert_eq!(
            fs::read(host.join("sub/marker2")).expect("marker2"),
            b"keep me too"
        );
        teardown_pod(&pod).expect("idempotent");
    }

    #[test]
    #[ignore = "needs root: bind mounts"]
    fn a_mount_that_will_not_go_is_never_deleted_through() {
        let td = tempfile::tempdir().expect("tempdir");
        let _guard = UnmountGuard::new(td.path());
        let root = fs::canonicalize(td.path()).expect("canon");
        let host = root.join("host");
        fs::create_dir(&host).expect("mkdir");
        fs::write(host.join("marker"), b"keep").expect("marker");
        let pod = root.join("pod");
        let target = pod.join("volume-subpaths/v/c/0");
        fs::create_dir_all(&target).expect("mkdir");
        nix::mount::mount(
            Some(&host),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        // Keep the mount busy: an open folder inside it makes umount fail with EBUSY.
        let _busy = fs::File::open(&target).expect("open");
        let cwd_holder = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&target)
            .spawn()
            .expect("spawn");
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _kill = Kill(cwd_holder);

        let err = teardown_pod(&pod).expect_err("busy mount");
        assert!(
            matches!(err, TeardownError::Unmount { .. }),
            "unexpected {err}"
        );
        assert_eq!(fs::read(host.join("marker")).expect("marker"), b"keep");
        assert!(target.exists());
    }
}
