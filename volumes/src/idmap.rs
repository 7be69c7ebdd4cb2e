//! Idmapped mounts of pod volumes for pods with a user namespace: whether a volume's folder can
//! be seen through the pod's ID mapping (mount_setattr(2) `MOUNT_ATTR_IDMAP`), and an idmapped
//! bind of it. The runtime makes the binds it gives containers itself; the agent asks
//! [`check`] first so that a volume on a filesystem without support (tmpfs before Linux 6.3,
//! NFS, ...) is a clear error before any container starts.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Why a volume cannot be idmapped.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("volume {volume:?}: {path} is on a {fs} filesystem, which this kernel cannot idmap ({source})")]
    Unsupported {
        volume: String,
        path: PathBuf,
        fs: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume:?}: idmapped mount of {path}: {what}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Whether the volume `volume` at `path` can be idmapped with the user namespace `userns` (a
/// namespace file, e.g. the pod's pinned one): makes the idmapped copy and drops it.
pub fn check(volume: &str, path: &Path, userns: &Path) -> Result<(), IdmapError> {
    tree(volume, path, userns).map(drop)
}

/// Mounts an idmapped view of the volume's `path` at `target` (an existing folder, or file
/// for a file).
pub fn bind(volume: &str, path: &Path, target: &Path, userns: &Path) -> Result<(), IdmapError> {
    let t = tree(volume, path, userns)?;
    let io = |what: &'static str, source| IdmapError::Io {
        volume: volume.to_string(),
        path: target.to_path_buf(),
        what,
        source,
    };
    let c = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io("path", std::io::Error::other(e)))?;
    // SAFETY: move_mount of our detached tree (empty from-path) onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            t.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(io("move_mount", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn tree(volume: &str, path: &Path, userns: &Path) -> Result<OwnedFd, IdmapError> {
    let io = |what: &'static str, source| IdmapError::Io {
        volume: volume.to_string(),
        path: path.to_path_buf(),
        what,
        source,
    };
    let ns = std::fs::File::open(userns).map_err(|e| io("open the user namespace", e))?;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io("path", std::io::Error::other(e)))?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE;
    // SAFETY: open_tree with a NUL-terminated path; the result is checked before use.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io("open_tree", std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let t = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on our detached tree, empty path, an attr struct of the given size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            t.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH as libc::c_uint) | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                IdmapError::Unsupported {
                    volume: volume.to_string(),
                    path: path.to_path_buf(),
                    fs: fs_name(path),
                    source: e,
                }
            }
            _ => io("mount_setattr", e),
        });
    }
    Ok(t)
}

fn fs_name(path: &Path) -> String {
    match nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0) {
        Ok(0x0102_1994) => "tmpfs".into(),
        Ok(0xef53) => "ext4".into(),
        Ok(0x5846_5342) => "xfs".into(),
        Ok(0x9123_683e) => "btrfs".into(),
        Ok(0x794c_7630) => "overlay".into(),
        Ok(0x6969) => "nfs".into(),
        Ok(m) => format!("{m:#x}"),
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::UnmountGuard;
    use crate::{setup, HostPathType, Medium, VolumeSource};
    use std::os::unix::fs::MetadataExt;

    /// A process in a new user namespace mapping 0.. to `first`..; killed on drop.
    struct Userns {
        pid: nix::unistd::Pid,
    }

    impl Userns {
        fn new(first: u32) -> Userns {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            // SAFETY: the child only unshares, writes one byte and sleeps until killed.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                nix::unistd::ForkResult::Child => {
                    let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
                    let _ = nix::unistd::write(&w, if ok { b"y" } else { b"n" });
                    loop {
                        // SAFETY: pause only waits for a signal.
                        unsafe { libc::pause() };
                    }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    drop(w);
                    let mut b = [0u8; 1];
                    nix::unistd::read(r.as_raw_fd(), &mut b).expect("read");
                    let ns = Userns { pid: child };
                    assert_eq!(&b, b"y", "unshare user");
                    for f in ["uid_map", "gid_map"] {
                        std::fs::write(format!("/proc/{child}/{f}"), format!("0 {first} 65536"))
                            .expect(f);
                    }
                    ns
                }
            }
        }

        fn file(&self) -> PathBuf {
            PathBuf::from(format!("/proc/{}/ns/user", self.pid))
        }
    }

    impl Drop for Userns {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }

    #[test]
    #[ignore = "needs root: user namespaces and idmapped mounts"]
    fn emptydir_hostpath_and_tmpfs_volumes_seen_through_the_pods_mapping() {
        const FIRST: u32 = 1_000_000_000;
        let tmp = tempfile::tempdir().expect("tempdir");
        let _guard = UnmountGuard::new(tmp.path());
        let ns = Userns::new(FIRST);
        let pod = tmp.path().join("pods/uid1");
        let host = tmp.path().join("host");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::write(host.join("f"), "x").expect("write");
        let sources = [
            (
                "cache",
                VolumeSource::EmptyDir {
                    medium: Medium::Disk,
                    size_limit: None,
                },
            ),
            (
                "mem",
                VolumeSource::EmptyDir {
                    medium: Medium::Memory,
                    size_limit: Some(1 << 20),
                },
            ),
            (
                "host",
                VolumeSource::HostPath {
                    path: host.clone(),
                    kind: HostPathType::Directory,
                },
            ),
        ];
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmpfs_ok = {
            let mut it = release.split(|c: char| !c.is_ascii_digit());
            let v: (u32, u32) = (
                it.next().and_then(|x| x.parse().ok()).unwrap_or(0),
                it.next().and_then(|x| x.parse().ok()).unwrap_or(0),
            );
            v >= (6, 3)
        };
        for (name, src) in sources {
            let path = setup(&pod, name, &src).expect("setup");
            std::fs::write(path.join("owned-by-root"), "x").expect("write");
            let res = check(name, &path, &ns.file());
            if name == "mem" && !tmpfs_ok {
                assert!(
                    matches!(res, Err(IdmapError::Unsupported { .. })),
                    "{res:?}"
                );
                continue;
            }
            res.unwrap_or_else(|e| panic!("{name}: {e}"));
            // Mounted: from the host, host root's file shows as the pod's first ID.
            let target = tmp.path().join("view").join(name);
            std::fs::create_dir_all(&target).expect("mkdir");
            bind(name, &path, &target, &ns.file()).expect("bind");
            let md = std::fs::metadata(target.join("owned-by-root")).expect("stat");
            assert_eq!((md.uid(), md.gid()), (FIRST, FIRST), "{name}");
            nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        }
        // A path that is not there: a typed error naming it.
        let e = check("gone", &tmp.path().join("nope"), &ns.file()).expect_err("missing");
        assert!(e.to_string().contains("nope"), "{e}");
        crate::teardown_pod(&pod).expect("teardown");
    }
}
