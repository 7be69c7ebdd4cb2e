//! The pod manager's heartbeat: when its loop last came round. The `syncloop` check of
//! `/healthz` (the HTTP server) reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// When the pod manager's loop last came round (milliseconds since the epoch, 0: never).
static SYNC_LOOP_TICK: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the epoch of `t` (0 before it).
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Called by the pod manager each time its loop comes round.
pub fn sync_loop_tick() {
    SYNC_LOOP_TICK.store(millis(SystemTime::now()), Ordering::Relaxed);
}

/// When the loop last came round (milliseconds since the epoch), 0 before its first round.
pub fn last_sync_loop_tick() -> u64 {
    SYNC_LOOP_TICK.load(Ordering::Relaxed)
}
