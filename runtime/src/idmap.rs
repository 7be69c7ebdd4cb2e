//! Idmapped mounts (mount_setattr(2) `MOUNT_ATTR_IDMAP`) for pods with a user namespace: the
//! image layers under the container's overlay rootfs (an overlay mount cannot be idmapped
//! itself, its layers can) and its bind mounts, seen through the pod's ID mapping, so that files
//! owned by host ID `n` appear owned by container ID `n` (and the container's writes land as
//! host ID `n`). Needs a kernel and filesystem that support it: ext4/xfs/btrfs since 5.12,
//! overlayfs since 5.19, tmpfs since 6.3; elsewhere [`IdmapError::Unsupported`].

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

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("idmapped mount of {path}: the kernel or the {fs} filesystem does not support idmapped mounts ({source})")]
    Unsupported {
        path: PathBuf,
        fs: String,
        source: std::io::Error,
    },
    #[error("{path} (mode {mode:04o}) cannot be searched by users other than its owner: a pod with hostUsers: false reaches its image layers, root file system and volumes through it as a user of its own (its root is not the host's), so the kernel would refuse its command with EACCES; make it searchable (chmod o+x, e.g. 0711)")]
    Unsearchable { path: PathBuf, mode: u32 },
    #[error("idmapped mount of {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

/// Checks that every folder above `path` can be searched by users other than its owner (`o+x`);
/// `path` itself is seen through the pod's ID mapping, owned by the container's root. A pod in a user namespace of its own walks these paths as an
/// unprivileged host ID (libcontainer mounts the rootfs and volumes from inside the namespace):
/// a 0700 folder anywhere above them (a `mktemp -d` root, a state folder made private) makes
/// its command fail with a bare EACCES. containerd makes its root and state folders 0711 for
/// the same reason. Folders that cannot be read are left to fail where they are used.
pub fn check_searchable(path: &Path) -> Result<(), IdmapError> {
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && mode & 0o001 == 0 {
            return Err(IdmapError::Unsearchable {
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// A detached copy of the mount tree at `source` (recursive for folders), seen through the ID
/// mapping of the user namespace `userns` (a namespace file such as `/proc/<pid>/ns/user` or
/// a pinned one).
pub fn idmapped_tree(source: &Path, userns: &Path) -> Result<OwnedFd, IdmapError> {
    let io = |what: &'static str| {
        let path = source.to_path_buf();
        move |source| IdmapError::Io { path, what, source }
    };
    let ns = std::fs::File::open(userns).map_err(io("open the user namespace"))?;
    let c = cpath(source).map_err(io("path"))?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE;
    // SAFETY: open_tree with a NUL-terminated path; the returned fd is checked before use.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io("open_tree")(std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on our detached tree with an empty path and a valid attr struct of
    // the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
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
                    path: source.to_path_buf(),
                    fs: fs_name(source),
                    source: e,
                }
            }
            _ => io("mount_setattr")(e),
        });
    }
    Ok(tree)
}

/// Attaches a detached tree at `target` (which must exist: a folder, or a file for a file).
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<(), IdmapError> {
    let c = cpath(target).map_err(|source| IdmapError::Io {
        path: target.to_path_buf(),
        what: "path",
        source,
    })?;
    // SAFETY: move_mount of our detached tree (empty from-path) onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(IdmapError::Io {
            path: target.to_path_buf(),
            what: "move_mount",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Mounts an idmapped view of `source` at `target` (created: a folder, or an empty file when
/// `source` is a file).
pub fn bind(source: &Path, target: &Path, userns: &Path) -> Result<(), IdmapError> {
    let tree = idmapped_tree(source, userns)?;
    let made = if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(target)
                    .map(|_| ())
            })
    };
    made.map_err(|source| IdmapError::Io {
        path: target.to_path_buf(),
        what: "create the mount point",
        source,
    })?;
    attach(&tree, target)
}

/// The filesystem type of `path` from statfs, for messages.
fn fs_name(path: &Path) -> String {
    match nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0) {
        Ok(0x794c_7630) => "overlay".into(),
        Ok(0x0102_1994) => "tmpfs".into(),
        Ok(0xef53) => "ext4".into(),
        Ok(0x5846_5342) => "xfs".into(),
        Ok(0x9123_683e) => "btrfs".into(),
        Ok(m) => format!("{m:#x}"),
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_folder_on_the_way_is_named() -> std::io::Result<()> {
        let t = tempfile::tempdir()?;
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711))?;
        let deep = t.path().join("data/images/layer/fs");
        std::fs::create_dir_all(&deep)?;
        let data = t.path().join("data");
        let cases: [(u32, Option<&Path>); 4] = [
            (0o755, None),
            (0o711, None),
            (0o700, Some(&data)),
            (0o750, Some(&data)),
        ];
        for (mode, want) in cases {
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode))?;
            match (check_searchable(&deep), want) {
                (Ok(()), None) => {}
                (Err(IdmapError::Unsearchable { path, mode: m }), Some(w)) => {
                    assert_eq!(path, w, "mode {mode:o}");
                    assert_eq!(m, mode);
                }
                (got, _) => panic!("mode {mode:o}: {got:?}"),
            }
        }
        Ok(())
    }
}
