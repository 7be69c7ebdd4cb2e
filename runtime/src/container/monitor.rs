//! One task per live keeper: waits on a pidfd of the keeper, then publishes the exit.

use std::sync::Arc;

use super::proc::ProcHandle;
use super::{disk, stop, Inner};
use crate::RuntimeEvent;

impl Inner {
    /// Starts watching the keeper of `id` (once per container). `keeper == None` means the
    /// keeper is already gone: the exit is handled right away.
    pub(super) fn monitor(self: &Arc<Self>, id: String, keeper: Option<ProcHandle>) {
        {
            let mut set = self.monitored.lock().unwrap_or_else(|e| e.into_inner());
            if !set.insert(id.clone()) {
                return;
            }
        }
        let inner = Arc::clone(self);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if let Some(keeper) = keeper {
                tokio::select! {
                    _ = keeper.exited() => {}
                    // The runtime was dropped: stop watching, as a stopped agent would.
                    _ = shutdown.changed() => return,
                }
                tracing::debug!(container = %id, pid = keeper.pid, "keeper exited");
            }
            let dir = inner.container_dir(&id).filter(|d| d.exists());
            let Some(dir) = dir else {
                // Removed once its keeper was gone (a container that never ran, see
                // `Created::abort`): nothing to record or report.
                inner
                    .monitored
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return;
            };
            let info = match disk::read_exit(&dir) {
                Some(info) => info,
                None => inner.finalize_lost(&id, stop::KEEPER_DIED, true).await,
            };
            inner
                .monitored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            tracing::info!(container = %id, code = info.code, "container exited");
            let _ = inner.events.send(RuntimeEvent::Exited { id, info });
        });
    }
}
