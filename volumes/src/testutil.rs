//! Helpers for the privileged tests: guards that undo mounts even when a test fails.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Unmounts (lazily) everything at or below a folder when dropped. Declare it *after* the
/// `TempDir` it protects, so it drops first and the tempdir's removal never runs into a mount.
pub(crate) struct UnmountGuard(PathBuf);

impl UnmountGuard {
    pub fn new(dir: &Path) -> Self {
        UnmountGuard(dir.to_path_buf())
    }
}

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            let mounts = crate::mounts_below(&self.0);
            if mounts.is_empty() {
                return;
            }
            for m in mounts {
                let _ = umount2(&m, MntFlags::MNT_DETACH);
            }
        }
    }
}

/// How many mounts are stacked exactly at `path`.
pub(crate) fn mount_count_at(path: &Path) -> usize {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    crate::mounts::read_mountinfo()
        .expect("mountinfo")
        .iter()
        .filter(|m| m.mount_point == p)
        .count()
}
