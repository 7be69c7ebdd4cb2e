//! The node shutdown manager (the kubelet's nodeshutdown manager): holds a logind `delay`
//! inhibitor lock; on `PrepareForShutdown(true)` the node says it is not ready, new pods are
//! refused, and the running pods are ended group by group, lowest priority first, each group
//! within its seconds ([`crate::shutdown::groups`]), through the pod manager
//! ([`Intent::Fail`](super::worker::Intent) with [`PodFailure::shutdown`]: preStop hooks, the
//! stop signal, then the Failed status with reason `Terminated` and the DisruptionTarget
//! condition); once the statuses are written the lock is released and the node goes down.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::eviction::Eviction;
use super::worker::plan::PodFailure;
use super::Ctx;
use crate::config::ShutdownGracePeriodByPodPriority;
use crate::shutdown::logind::{self, Logind};

/// Is the node shutting down (node status, admission)? Shared by the pod manager, the shutdown
/// manager and the node status loop.
#[derive(Debug, Default)]
pub struct NodeShutdown {
    active: AtomicBool,
    /// Wakes the node status loop when `active` changes (the kubelet syncs the node status at
    /// once).
    pub changed: Notify,
}

impl NodeShutdown {
    pub fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    pub fn set(&self, active: bool) {
        if self.active.swap(active, Ordering::SeqCst) != active {
            self.changed.notify_one();
        }
    }

    /// The error the Ready condition reports (`None`: nothing to say).
    pub fn ready_error(&self) -> Option<&'static str> {
        self.active().then_some(crate::shutdown::NOT_READY_MESSAGE)
    }
}

/// How long logind is given to take the new InhibitDelayMaxSec (the kubelet's backoff: 100 ms
/// doubling, 5 tries).
const DELAY_CHECKS: [u64; 5] = [100, 200, 400, 800, 1600];
/// Between a lost bus connection and the next (the kubelet's dbusReconnectPeriod).
const RECONNECT: Duration = Duration::from_secs(1);
/// How often a group's pods are checked for being done.
const POLL: Duration = Duration::from_millis(250);
/// At most this long for the pod statuses to reach the apiserver before the lock goes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the logind thread asks of the async side: the node is shutting down (`true`, answered
/// once the pods are ended) or the shutdown was cancelled (`false`).
type Request = (bool, oneshot::Sender<()>);

/// Runs the shutdown manager when graceful shutdown is configured. `active` is what the pod
/// manager runs; `fail` is its way to end a pod.
pub async fn run(
    ctx: Arc<Ctx>,
    active: watch::Receiver<Vec<Arc<Pod>>>,
    fail: mpsc::UnboundedSender<Eviction>,
) {
    let periods = crate::shutdown::periods(&ctx.cfg.shutdown);
    if periods.is_empty() {
        return;
    }
    tracing::info!(?periods, "creating node shutdown manager");
    let (tx, mut rx) = mpsc::channel::<Request>(1);
    let requested = crate::shutdown::requested(&periods);
    let spawned = std::thread::Builder::new()
        .name("logind".into())
        .spawn(move || {
            serve_logind(
                || Some(logind::SystemLogind::connect()),
                requested,
                PathBuf::from(logind::LOGIND_CONF_DIR),
                |active| {
                    let (done_tx, done_rx) = oneshot::channel();
                    if tx.blocking_send((active, done_tx)).is_ok() {
                        let _ = done_rx.blocking_recv();
                    }
                },
            )
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the node shutdown manager");
        return;
    }
    while let Some((shutting_down, done)) = rx.recv().await {
        ctx.node_shutdown.set(shutting_down);
        if shutting_down {
            tracing::info!("shutdown manager detected shutdown event");
            let pods = active.borrow().clone();
            end_pods(&ctx, &periods, &pods, &fail).await;
            flush_statuses(&ctx).await;
            tracing::info!(
                "shutdown manager completed processing shutdown event, node will shutdown shortly"
            );
        } else {
            tracing::info!("shutdown manager detected shutdown cancellation");
        }
        let _ = done.send(());
    }
}

/// Ends the pods group by group: each group's pods at once, then waits for them to be done or
/// for the group's seconds, whichever comes first.
async fn end_pods(
    ctx: &Ctx,
    periods: &[ShutdownGracePeriodByPodPriority],
    pods: &[Arc<Pod>],
    fail: &mpsc::UnboundedSender<Eviction>,
) {
    let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    for group in crate::shutdown::groups(periods, &refs) {
        if group.pods.is_empty() {
            continue;
        }
        tracing::info!(
            priority = group.priority,
            seconds = group.seconds,
            pods = group.pods.len(),
            "shutdown manager ending a group of pods"
        );
        for (uid, grace) in &group.pods {
            let _ = fail.send(Eviction {
                uid: uid.clone(),
                failure: Arc::new(PodFailure::shutdown(*grace)),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(group.seconds.max(0) as u64);
        loop {
            if group.pods.iter().all(|(uid, _)| ended(ctx, uid)) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::info!(
                    priority = group.priority,
                    "shutdown manager pod killing time out"
                );
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The pod's worker wrote its shutdown status and released it (no container left).
fn ended(ctx: &Ctx, uid: &str) -> bool {
    let file = super::status::pod_state_dir(&ctx.cfg.run_dir, uid).join(super::status::STATUS_FILE);
    let reason = std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Pod>(&b).ok())
        .and_then(|p| p.status)
        .and_then(|s| s.reason);
    reason.as_deref() == Some(crate::shutdown::REASON)
        && ctx
            .runtime
            .list_prefix(&crate::translate::container_id_prefix(uid))
            .is_empty()
}

/// Cluster mode: waits until the status writer has written what was sent before.
async fn flush_statuses(ctx: &Ctx) {
    let Some(flush) = &ctx.status_flush else {
        return;
    };
    let (tx, rx) = oneshot::channel();
    if flush.send(tx).is_ok() && tokio::time::timeout(FLUSH_TIMEOUT, rx).await.is_err() {
        tracing::warn!("pod statuses not all written before the node shuts down");
    }
}

/// The logind side, on a thread of its own: makes sure logind waits long enough
/// (InhibitDelayMaxSec raised by a drop-in and a reload when shorter than `requested`), takes
/// the inhibitor lock, then hands every `PrepareForShutdown` to `on_event` and releases the
/// lock once it returned for a shutdown (taken again when one is cancelled). A lost connection
/// is made again after [`RECONNECT`]; the first failure to start ends it (logged), as the
/// kubelet goes on without a shutdown manager.
/// `connect` answering `None` ends it (tests).
pub fn serve_logind<L: Logind>(
    mut connect: impl FnMut() -> Option<zbus::Result<L>>,
    requested: Duration,
    conf_dir: PathBuf,
    mut on_event: impl FnMut(bool),
) {
    let mut first = true;
    loop {
        let Some(connected) = connect() else {
            return;
        };
        let mut bus = match start(connected, requested, &conf_dir) {
            Ok(b) => b,
            Err(e) if first => {
                tracing::error!(error = %e, "cannot start the node shutdown manager");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "unable to watch the node for shutdown events");
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        first = false;
        let mut lock: Option<OwnedFd> = match bus.inhibit() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::error!(error = %e, "cannot take the shutdown inhibitor lock");
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        while let Some(shutting_down) = bus.next_shutdown_signal() {
            on_event(shutting_down);
            if shutting_down {
                // The kubelet's processShutdownEvent releases the lock when it is done.
                drop(lock.take());
            } else {
                match bus.inhibit() {
                    Ok(fd) => lock = Some(fd),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the shutdown inhibitor lock again")
                    }
                }
            }
        }
        tracing::info!("restarting watch for node shutdown events");
        drop(lock);
        std::thread::sleep(RECONNECT);
    }
}

/// Why the shutdown manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] zbus::Error),
    #[error("unable to override inhibit delay by shutdown manager: {0}")]
    Dropin(std::io::Error),
    #[error("node shutdown manager was timed out after {attempts} attempts waiting for logind InhibitDelayMaxSec to update to {requested:?} (ShutdownGracePeriod), current value is {current:?}")]
    Delay {
        attempts: usize,
        requested: Duration,
        current: Duration,
    },
}

fn start<L: Logind>(
    connected: zbus::Result<L>,
    requested: Duration,
    conf_dir: &std::path::Path,
) -> Result<L, StartError> {
    let bus = connected?;
    let current = bus.inhibit_delay()?;
    if requested > current {
        logind::write_dropin(conf_dir, requested).map_err(StartError::Dropin)?;
        bus.reload()?;
        for (attempt, ms) in DELAY_CHECKS.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(*ms));
            let current = bus.inhibit_delay()?;
            if requested <= current {
                break;
            }
            if attempt + 1 == DELAY_CHECKS.len() {
                return Err(StartError::Delay {
                    attempts: DELAY_CHECKS.len(),
                    requested,
                    current,
                });
            }
        }
    }
    Ok(bus)
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;
