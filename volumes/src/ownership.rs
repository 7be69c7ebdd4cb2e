//! fsGroup ownership of a volume, as the kubelet's `SetVolumeOwnership` applies it: every file
//! and folder below the volume gets group `fsGroup` (`lchown`, symlinks themselves are never
//! followed), group read/write (read only for a read-only volume) and, for folders, group
//! execute and setgid so new files inherit the group. With `OnRootMismatch` nothing is walked
//! when the volume's root already has the group, the permissions and setgid (so a big volume
//! is not re-walked at every pod start).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info};

/// `fsGroupChangePolicy` of the pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Walk the whole volume at every setup (the default).
    #[default]
    Always,
    /// Walk only when the volume's root does not already look right.
    OnRootMismatch,
}

impl ChangePolicy {
    /// The API's spelling (`Always`, `OnRootMismatch`); anything else is `Always`.
    pub fn from_api(s: Option<&str>) -> Self {
        match s {
            Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
            _ => ChangePolicy::Always,
        }
    }
}

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The ownership of a volume could not be set.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("cannot stat {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot change the group of {} to {gid}: {source}", path.display())]
    Chown {
        path: PathBuf,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot change the mode of {}: {source}", path.display())]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether the volume's root needs the walk (the kubelet's `requiresPermissionChange`): wrong
/// group, missing group permissions, or (for a folder) no setgid.
pub fn root_mismatch(dir: &Path, fs_group: u32, read_only: bool) -> Result<bool, OwnershipError> {
    let md = std::fs::metadata(dir).map_err(|source| OwnershipError::Stat {
        path: dir.to_path_buf(),
        source,
    })?;
    if md.gid() != fs_group {
        return Ok(true);
    }
    let mut want = if read_only { RO_MASK } else { RW_MASK };
    if md.is_dir() {
        want |= EXEC_MASK;
    }
    let mode = md.permissions().mode();
    if mode & want != want {
        return Ok(true);
    }
    Ok(md.is_dir() && mode & SETGID == 0)
}

/// Applies `fs_group` to the volume at `dir` (see the module). Returns whether it walked the
/// volume (false when `OnRootMismatch` found the root already right).
#[tracing::instrument(level = "debug", skip_all, fields(dir = %dir.display(), fs_group))]
pub fn set_volume_ownership(
    dir: &Path,
    fs_group: u32,
    policy: ChangePolicy,
    read_only: bool,
) -> Result<bool, OwnershipError> {
    if policy == ChangePolicy::OnRootMismatch && !root_mismatch(dir, fs_group, read_only)? {
        debug!("root already has the fsGroup; skipping the walk");
        return Ok(false);
    }
    let mut count = 0usize;
    walk(dir, fs_group, read_only, &mut count)?;
    info!(files = count, "fsGroup applied");
    Ok(true)
}

fn walk(path: &Path, gid: u32, read_only: bool, count: &mut usize) -> Result<(), OwnershipError> {
    let md = std::fs::symlink_metadata(path).map_err(|source| OwnershipError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    change(path, &md, gid, read_only)?;
    *count += 1;
    if md.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|source| OwnershipError::ReadDir {
            path: path.to_path_buf(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| OwnershipError::ReadDir {
                path: path.to_path_buf(),
                source,
            })?;
            walk(&e.path(), gid, read_only, count)?;
        }
    }
    Ok(())
}

fn change(
    path: &Path,
    md: &std::fs::Metadata,
    gid: u32,
    read_only: bool,
) -> Result<(), OwnershipError> {
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|source| OwnershipError::Chown {
        path: path.to_path_buf(),
        gid,
        source,
    })?;
    // chmod follows symlinks: the target's mode is not ours to change (as the kubelet).
    if md.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if md.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask)).map_err(
            |source| OwnershipError::Chmod {
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    /// The process's own group: chown to it needs no privilege.
    fn my_gid() -> u32 {
        nix::unistd::getegid().as_raw()
    }

    #[test]
    fn walks_files_and_folders_and_leaves_symlink_targets() {
        let td = tempfile::tempdir().expect("tempdir");
        let vol = td.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).expect("mkdir");
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::set_permissions(vol.join("sub"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::fs::write(vol.join("sub/f"), b"x").expect("write");
        std::fs::set_permissions(vol.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let outside = td.path().join("outside");
        std::fs::write(&outside, b"y").expect("write");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&outside, vol.join("link")).expect("symlink");

        let g = my_gid();
        assert!(root_mismatch(&vol, g, false).expect("check"));
        assert!(set_volume_ownership(&vol, g, ChangePolicy::Always, false).expect("set"));
        assert_eq!(mode(&vol), 0o2770);
        assert_eq!(mode(&vol.join("sub")), 0o2770);
        assert_eq!(mode(&vol.join("sub/f")), 0o660);
        // The symlink's target outside the volume is untouched.
        assert_eq!(mode(&outside), 0o600);
        assert!(!root_mismatch(&vol, g, false).expect("check"));
    }

    #[test]
    fn on_root_mismatch_skips_a_volume_that_looks_right() {
        let td = tempfile::tempdir().expect("tempdir");
        let vol = td.path();
        std::fs::write(vol.join("f"), b"x").expect("write");
        std::fs::set_permissions(vol.join("f"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        std::fs::set_permissions(vol, std::fs::Permissions::from_mode(0o2770)).expect("chmod");
        let g = my_gid();
        // The root is right: the file below is not visited.
        assert!(!set_volume_ownership(vol, g, ChangePolicy::OnRootMismatch, false).expect("set"));
        assert_eq!(mode(&vol.join("f")), 0o600);
        // Always walks.
        assert!(set_volume_ownership(vol, g, ChangePolicy::Always, false).expect("set"));
        assert_eq!(mode(&vol.join("f")), 0o660);
        // No setgid on the root: a mismatch.
        std::fs::set_permissions(vol, std::fs::Permissions::from_mode(0o770)).expect("chmod");
        assert!(root_mismatch(vol, g, false).expect("check"));
        // Read-only volumes need only group read (and execute on folders).
        std::fs::set_permissions(vol, std::fs::Permissions::from_mode(0o2550)).expect("chmod");
        assert!(!root_mismatch(vol, g, true).expect("check"));
        assert!(root_mismatch(vol, g, false).expect("check"));
    }

    #[test]
    fn policies_from_the_api() {
        assert_eq!(
            ChangePolicy::from_api(Some("OnRootMismatch")),
            ChangePolicy::OnRootMismatch
        );
        assert_eq!(ChangePolicy::from_api(Some("Always")), ChangePolicy::Always);
        assert_eq!(ChangePolicy::from_api(None), ChangePolicy::Always);
    }
}
