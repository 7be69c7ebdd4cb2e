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
            // A folder removed once its keeper was gone (a container that never ran, see
            // `Created::abort`) has nothing to record or report.
            let info = match inner.container_dir(&id).filter(|d| d.exists()) {
                Some(dir) => Some(match disk::read_exit(&dir) {
                    Some(info) => info,
                    None => inner.finalize_lost(&id, stop::KEEPER_DIED, true).await,
                }),
                None => None,
            };
            inner
                .monitored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(info) = info {
                tracing::info!(container = %id, code = info.code, "container exited");
                let _ = inner.events.send(RuntimeEvent::Exited { id, info });
            }
        });
    }
}
