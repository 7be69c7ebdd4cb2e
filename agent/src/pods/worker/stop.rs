//! Stopping: one container (preStop hook, stop signal, SIGKILL when the grace period ends), a
//! container whose probe failed (in the background), and the whole pod (step 1 of a sync:
//! [`KillPod`]), then releasing or removing what the pod holds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_runtime::ContainerState;
use k8s_openapi::api::core::v1::Container;

use super::plan::{Attempts, KillContainer, KillPod, PodEnd};
use super::{Next, Worker};
use crate::pods::status::Ended;
use crate::pods::Ctx;
use crate::reasons::{event, EventType};

impl Worker {
    /// Step 1: the pod ends. A pod the node refused starts nothing and says why; otherwise its
    /// containers are stopped as the plan says (readiness probes go on meanwhile and the status
    /// follows them; liveness and startup probes stop), the status says how the pod ended, then
    /// what it holds is released (its logs kept) or everything is removed.
    pub(super) async fn kill_pod(&mut self, kill: KillPod, attempts: &Attempts) -> Next {
        let first = self.ended.is_none();
        match &kill.end {
            PodEnd::Failed(f) => {
                if first && !f.event_message.is_empty() {
                    self.event(f.event_type, &f.reason, &f.event_message);
                }
                self.ended = Some(Ended::Failed {
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                });
                self.failure = Some(f.clone());
                if f.rejected {
                    // The kubelet's rejectPod: its status at once; nothing of the pod was made,
                    // nothing to stop.
                    self.write_state_files();
                    self.write_status(false, false, false);
                    if kill.containers.is_empty() {
                        if !attempts.is_empty() {
                            self.release().await;
                        }
                        self.released = true;
                        return Next::Resync;
                    }
                }
            }
            PodEnd::Removed => self.ended = Some(Ended::Stopped),
            PodEnd::Released => {}
        }
        self.probes.terminating();
        match kill.grace {
            None => {
                // Kills whatever still runs in a pod that ended (nothing should).
                for r in &kill.containers {
                    let _ = self
                        .ctx
                        .runtime
                        .stop_container(&r.id, libc::SIGKILL, Duration::from_secs(2))
                        .await;
                }
            }
            Some(grace) => {
                let deadline = SystemTime::now() + grace;
                self.event(
                    EventType::Normal,
                    event::KILLING_CONTAINER,
                    &format!("Stopping pod with grace period {}s", grace.as_secs()),
                );
                let mut set = tokio::task::JoinSet::new();
                for r in &kill.containers {
                    let Some(rec) = attempts.get(&r.name).and_then(|v| v.last()) else {
                        continue;
                    };
                    set.spawn(kill_container(
                        self.ctx.clone(),
                        self.container(&r.name),
                        self.net.pod_ip(),
                        rec.id.clone(),
                        rec.stop_signal,
                        deadline,
                    ));
                }
                // Readiness results that change meanwhile are published.
                loop {
                    tokio::select! {
                        joined = set.join_next() => if joined.is_none() { break },
                        _ = self.wake.notified() => self.write_status(true, self.init.0, self.init.1),
                    }
                }
                for name in &kill.sidecars {
                    self.stop_running(name, Some(deadline)).await;
                }
            }
        }
        match kill.end {
            PodEnd::Failed(f) if f.rejected => {
                if !attempts.is_empty() {
                    self.release().await;
                }
                self.released = true;
                Next::Resync
            }
            PodEnd::Released => {
                self.release().await;
                self.released = true;
                Next::Resync
            }
            PodEnd::Failed(_) => {
                // The containers' terminated states and the phase, then the release.
                self.write_status(true, self.init.0, self.init.1);
                self.release().await;
                self.released = true;
                Next::Resync
            }
            PodEnd::Removed => {
                self.write_status(true, self.init.0, self.init.1);
                self.cleanup().await;
                Next::Done
            }
        }
    }

    /// Stops the running attempt of `name` (preStop, stop signal, SIGKILL at the deadline; by
    /// default the pod's grace period from now).
    pub(super) async fn stop_running(&mut self, name: &str, deadline: Option<SystemTime>) {
        let grace = self
            .spec()
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        let deadline = deadline.unwrap_or_else(|| SystemTime::now() + Duration::from_secs(grace));
        let attempts = self.attempts();
        let Some(rec) = attempts.get(name).and_then(|v| v.last()) else {
            return;
        };
        if matches!(
            rec.state,
            ContainerState::Running { .. } | ContainerState::Created
        ) {
            let c = self.container(name);
            let pod_ip = self.net.pod_ip();
            kill_container(
                self.ctx.clone(),
                c,
                pod_ip,
                rec.id.clone(),
                rec.stop_signal,
                deadline,
            )
            .await;
        }
    }

    /// Step 3: a running container the plan stops while the pod runs (a failed probe). The stop
    /// runs in the background; the container's exit wakes the worker, whose next plan restarts
    /// it by its policy.
    pub(super) fn kill_in_background(&mut self, kill: KillContainer) {
        self.container_event(
            &kill.name,
            EventType::Normal,
            event::KILLING_CONTAINER,
            &kill.message,
        );
        let ctx = self.ctx.clone();
        let wake = self.wake.clone();
        let id = kill.id.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = ctx
                .runtime
                .stop_container(&kill.id, kill.signal, kill.grace)
                .await
            {
                tracing::warn!(container = %kill.id, reason = ?kill.reason, error = %e, "cannot stop the container");
            }
            wake.notify_one();
        });
        self.stopping.insert(id, task);
    }

    /// Releases what a pod that ended holds (containers, network, sandbox, volumes) and keeps
    /// its logs, which users still read (`kubectl logs` of a finished Job).
    async fn release(&mut self) {
        // The pod's devices are free for others once it ended (the kubelet's
        // UpdateAllocatedDevices drops the pods that are not active).
        if let Some(devices) = &self.ctx.devices {
            devices.release(&self.uid);
        }
        for attempts in self.attempts().values() {
            for rec in attempts {
                if let Err(e) = self.ctx.runtime.remove_container(&rec.id).await {
                    tracing::warn!(container = %rec.id, error = %e, "cannot remove container");
                }
            }
        }
        // Its ResourceClaims are unprepared once no container of it runs (the kubelet's
        // UnprepareDynamicResources in SyncTerminatingPod); a failure is retried by the DRA
        // manager in the background.
        if let Some(dra) = &self.ctx.dra {
            if let Err(e) = dra.unprepare(&self.uid).await {
                tracing::warn!(error = %e, "dynamic resources not unprepared; retrying");
            }
        }
        if let Some(setup) = self.net.pending.take() {
            // The network is given back only after its set-up is over.
            let _ = setup.await;
        }
        match self.ctx.runtime.remove_sandbox(&self.uid).await {
            // The pod's ID range is free once its sandbox (its user namespace) is gone; kept
            // while anything of it may remain.
            Ok(()) => {
                if let Some(a) = &self.ctx.userns {
                    if let Err(e) = a.release(&self.uid) {
                        tracing::warn!(error = %e, "cannot free the pod's user namespace range");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove the sandbox"),
        }
        if let Some(src) = &self.ctx.volumes {
            if let Err(e) = src.release(&self.uid).await {
                tracing::warn!(error = %e, "cannot unmount the pod's CSI volumes");
            }
        }
        // teardown_pod removes the pod folder itself, never entering a mount. No
        // remove_dir_all after it: when a CSI volume is still published (its driver down), that
        // would delete the volume's data through the mount.
        if let Err(e) = bosun_volumes::teardown_pod(&self.pod_dir()) {
            tracing::warn!(error = %e, "cannot tear down volumes");
        }
        self.net.sandbox = None;
        self.vols.paths = None;
    }

    /// Removes everything of a pod that is gone: what it holds, its logs and state; a deletion
    /// is confirmed to the API by deleting the pod object.
    async fn cleanup(&mut self) {
        crate::metrics::forget_pod(&self.uid);
        self.release().await;
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let log_dir = self
            .ctx
            .cfg
            .pod_logs_dir
            .join(format!("{ns}_{name}_{}", self.uid));
        let _ = std::fs::remove_dir_all(&log_dir);
        crate::pods::remove_log_links(&self.ctx.cfg.container_logs_dir, &log_dir);
        let _ = std::fs::remove_dir_all(self.state_dir());
        self.event(
            EventType::Normal,
            event::REMOVED_POD,
            "pod terminated and cleaned up",
        );
        // Only a deletion is confirmed by deleting the pod object: a pod that ended, or that
        // the API no longer has, stays as it is.
        let deleted = self.pod.metadata.deletion_timestamp.is_some();
        if let (Some(tx), true, true) = (
            &self.ctx.status_tx,
            crate::pods::from_api(&self.pod),
            deleted,
        ) {
            // With the last status (the containers' terminated states, the final phase), which
            // is written before the pod object is deleted.
            let _ = tx.send(crate::pods::StatusUpdate {
                uid: self.uid.clone(),
                namespace: ns,
                name,
                status: self.last_status.clone(),
                mirror: false,
                delete: true,
            });
        }
    }
}

/// preStop (bounded by the deadline), then the stop signal, then SIGKILL when the deadline
/// passes.
async fn kill_container(
    ctx: Arc<Ctx>,
    c: Option<Container>,
    pod_ip: String,
    id: String,
    signal: i32,
    deadline: SystemTime,
) {
    let remaining = |min: u64| {
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(min))
    };
    if let Some((c, hook)) = c
        .as_ref()
        .and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.clone()?)))
    {
        tracing::info!(container = %id, "running preStop hook");
        if let Err(e) = super::hooks::run(&ctx, &id, c, &pod_ip, &hook, remaining(0)).await {
            tracing::warn!(container = %id, reason = event::FAILED_PRE_STOP_HOOK, "{e}");
        }
    }
    // The kubelet gives at least 2 s after a preStop hook that used the whole grace period.
    let grace = remaining(2);
    tracing::info!(container = %id, signal, grace_s = grace.as_secs_f32(), "stopping container");
    let t0 = std::time::Instant::now();
    let stopped = ctx.runtime.stop_container(&id, signal, grace).await;
    crate::metrics::observe_runtime_operation("stop_container", t0.elapsed());
    if let Err(e) = stopped {
        tracing::warn!(container = %id, error = %e, "cannot stop container");
    }
}
