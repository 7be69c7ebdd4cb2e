//! Removing an exited container's folder. Its log files stay (the pod's log folder belongs to
//! the pod); the `/var/log/containers` symlink goes with the container, as with the kubelet.

use std::path::PathBuf;

use super::{disk, proc, start, stop, HostRuntime};

/// Removing a container failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("container {id} is still running")]
    Running { id: String },
    #[error("unmount what is left under {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HostRuntime {
    /// Removes an exited container's folder; errors if it still runs.
    #[tracing::instrument(skip(self), fields(container = %id))]
    pub async fn remove_container(&self, id: &str) -> Result<(), RemoveError> {
        let inner = &self.inner;
        let not_found = || RemoveError::NotFound { id: id.to_string() };
        let dir = inner.container_dir(id).ok_or_else(not_found)?;
        if !dir.is_dir() {
            return Err(not_found());
        }
        if disk::read_exit(&dir).is_none() {
            if inner.is_starting(id) || proc::keeper_alive(&dir) {
                return Err(RemoveError::Running { id: id.to_string() });
            }
            // Keeper gone without a record: make the state final first (kills leftovers).
            inner.finalize_lost(id, stop::KEEPER_DIED, true).await;
        }
        // Never delete through a mount: unmount anything the keeper left behind.
        disk::unmount_all_under(&dir).map_err(|source| RemoveError::Unmount {
            path: dir.clone(),
            source,
        })?;
        if let Some(req) = disk::read_request(&dir) {
            let link = start::log_symlink(&inner.paths, &req.spec);
            match std::fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(link = %link.display(), error = %e, "remove log symlink"),
            }
        }
        std::fs::remove_dir_all(&dir).map_err(|source| RemoveError::Remove {
            path: dir.clone(),
            source,
        })?;
        tracing::info!("container removed");
        Ok(())
    }
}
