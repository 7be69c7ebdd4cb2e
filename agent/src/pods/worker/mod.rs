//! One worker per pod: each sync looks at what the runtime has, [`plan::plan`]s what to do
//! (a pure function, the kubelet's `computePodActions`) and carries the plan out in small
//! steps, in the order of the kubelet's `SyncPod`:
//!
//! 1. the pod ends: stop its containers and release or remove what it holds ([`stop`]);
//! 2. the sandbox and its network ([`sandbox`]), then the volumes ([`volumes`]); a pod not on
//!    the host network waits here while the node's pod network is not ready;
//! 3. running containers whose probes failed are stopped (in the background);
//! 4. init containers and sidecars, 5. regular containers, 6. ephemeral containers: each start
//!    is image, config, create, start, postStart hook ([`start`]);
//! 7. sidecars stop once every regular container is done;
//! 8. the report: old attempts removed, probes follow the running containers, status written
//!    ([`report`]).
//!
//! The worker acts on what the runtime reports now (`list`), never on remembered container
//! state: it is woken by spec changes, container exits and probe results, and a sync returns
//! when it wants to be woken next. A restarted agent runs the same code over the containers it
//! finds, which is how pods are adopted. It sees the runtime and images only through
//! [`bosun_runtime::PodRuntime`] and [`crate::images::ImageService`], so its unit tests run it
//! against fakes.

pub mod errors;
mod hooks;
pub mod plan;
mod report;
mod sandbox;
mod start;
mod stop;
mod volumes;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_runtime::ContainerState;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::backoff::Backoff;
use super::probing::Probes;
use super::resize;
use super::status::{self, Record, Waiting};
use super::Ctx;
use crate::reasons::EventType;
use crate::translate::{self, LABEL_CONTAINER_NAME, LABEL_POD_UID, LABEL_RESTART_COUNT};
use errors::PodSetupError;
pub use plan::{pod_key, Intent};
use plan::{Attempts, Desired, Observed, PodActions};

/// The stop signal the container was started with (the image's STOPSIGNAL or SIGTERM).
pub const LABEL_STOP_SIGNAL: &str = "bosun.stop-signal";

/// How long a pod whose sandbox, network or volumes failed waits before the next try.
const POD_SETUP_RETRY: Duration = Duration::from_secs(5);
/// How soon a pod held for the node's pod network looks again (the kubelet's
/// `backOffOnTransientErrorPeriod`).
const NETWORK_RETRY: Duration = Duration::from_secs(1);

/// How long a pod whose set-up failed waits before the next try: DRA preparation backs off
/// ([`crate::dra::state::retry_after`]), the rest is tried again after [`POD_SETUP_RETRY`].
fn setup_retry(error: Option<&PodSetupError>, dra_failures: u32) -> Duration {
    match error {
        Some(PodSetupError::DynamicResources { .. }) => {
            crate::dra::state::retry_after(dra_failures)
        }
        _ => POD_SETUP_RETRY,
    }
}

/// What the manager holds of a worker.
pub struct WorkerHandle {
    /// The pod and what is wanted of it (the worker syncs on every change).
    pub tx: watch::Sender<(Arc<Pod>, Intent)>,
    /// Wakes the worker (a container of the pod exited).
    pub wake: Arc<Notify>,
    pub done: tokio::task::JoinHandle<()>,
}

/// When a sync wants to run again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At this time at the latest (earlier on a change, an exit or a probe result; never later
    /// than the sync period).
    At(SystemTime),
    /// On a change, an exit, a probe result or the sync period.
    Resync,
    /// The pod is gone: the worker ends.
    Done,
}

impl Next {
    /// The earlier of two wishes.
    fn min(self, other: Next) -> Next {
        match (self, other) {
            (Next::Done, _) | (_, Next::Done) => Next::Done,
            (Next::At(a), Next::At(b)) => Next::At(a.min(b)),
            (Next::At(a), Next::Resync) | (Next::Resync, Next::At(a)) => Next::At(a),
            (Next::Resync, Next::Resync) => Next::Resync,
        }
    }

    fn after(d: Duration) -> Next {
        Next::At(SystemTime::now() + d)
    }
}

pub fn spawn(ctx: Arc<Ctx>, pod: Arc<Pod>, intent: Intent) -> WorkerHandle {
    let (tx, rx) = watch::channel((pod.clone(), intent));
    let wake = Arc::new(Notify::new());
    let worker = Worker::new(ctx, pod, wake.clone());
    let span = tracing::info_span!("pod", pod = %pod_key(&worker.pod), uid = %worker.uid);
    let done = tokio::spawn(worker.run(rx).instrument(span));
    WorkerHandle { tx, wake, done }
}

pub(crate) struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    pod: Arc<Pod>,
    wake: Arc<Notify>,
    /// The sandbox and its network.
    net: sandbox::PodNet,
    /// The volumes and the API objects they (and the env) are made of.
    vols: volumes::PodVolumes,
    backoff: Backoff,
    /// Why a container is not running, as last reported.
    waiting: HashMap<String, Waiting>,
    /// Termination messages read after exit, by container id.
    messages: HashMap<String, Option<String>>,
    last_status: Option<PodStatus>,
    start_time: SystemTime,
    /// A pod-level problem (sandbox, network, volumes) the status shows.
    pod_error: Option<PodSetupError>,
    /// Failed NodePrepareResources rounds in a row (their back-off).
    dra_failures: u32,
    /// Probe tasks and their results.
    probes: Probes,
    /// Containers being stopped in the background (failed probes), by id.
    stopping: HashMap<String, tokio::task::JoinHandle<()>>,
    /// The pod ended and its resources were released.
    released: bool,
    /// How the node ended the pod, once it decided to (the status says it).
    ended: Option<status::Ended>,
    /// What the last plan said of the init containers (done, failed), for the statuses
    /// written while the pod is being stopped.
    init: (bool, bool),
    /// Admission let the pod in: the kubelet admits a pod once, when it is added (by this
    /// worker, or before an agent restart: the node has its sandbox or containers).
    admitted: bool,
    /// Admission refused the pod: the refusal stands (the node does not judge it again).
    rejected: Option<crate::security::Refusal>,
    /// The node ended the pod (admission, eviction): its status says so.
    failure: Option<Arc<plan::PodFailure>>,
    /// The pod as its source has it; `pod` is the same pod as allocated (in-place resize).
    api_pod: Arc<Pod>,
    /// The allocated resources of the resizable containers (kept in the state folder).
    allocated: Option<resize::Allocation>,
    /// A resize the node cannot admit now (`PodResizePending`).
    resize_pending: Option<resize::Pending>,
    /// A resize admitted and not yet done (`PodResizeInProgress`).
    resize_in_progress: Option<resize::InProgress>,
    /// The pod waits for the node's pod network (the error, told once in an Event).
    network_held: Option<String>,
}

impl Worker {
    pub(crate) fn new(ctx: Arc<Ctx>, pod: Arc<Pod>, wake: Arc<Notify>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut w = Worker {
            ctx,
            uid,
            pod,
            wake,
            net: Default::default(),
            vols: Default::default(),
            backoff: Backoff::default(),
            waiting: HashMap::new(),
            messages: HashMap::new(),
            last_status: None,
            start_time: SystemTime::now(),
            pod_error: None,
            dra_failures: 0,
            probes: Probes::default(),
            stopping: HashMap::new(),
            released: false,
            ended: None,
            init: (true, false),
            admitted: false,
            rejected: None,
            failure: None,
            api_pod: Arc::new(Pod::default()),
            allocated: None,
            resize_pending: None,
            resize_in_progress: None,
            network_held: None,
        };
        w.api_pod = w.pod.clone();
        w.allocated = std::fs::read(w.state_dir().join(resize::ALLOCATED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Ok(state) = std::fs::read(w.state_dir().join(status::START_TIME_FILE)) {
            if let Ok(secs) = String::from_utf8_lossy(&state).trim().parse::<u64>() {
                w.start_time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            }
        }
        w
    }

    async fn run(mut self, mut rx: watch::Receiver<(Arc<Pod>, Intent)>) {
        // kubelet_pod_worker_duration_seconds: the first sync creates, a new spec updates.
        let mut operation = "create";
        loop {
            let (pod, intent) = rx.borrow_and_update().clone();
            self.pod = pod;
            let t0 = std::time::Instant::now();
            let run = intent == Intent::Run;
            let next = self.sync(intent).await;
            if run {
                crate::metrics::observe_pod_worker(operation, t0.elapsed());
            }
            let resync = self.ctx.cfg.sync_frequency;
            let wait = match next {
                Next::Done => return,
                Next::Resync => resync,
                Next::At(t) => t
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .min(resync),
            };
            operation = "sync";
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        // The manager is gone (agent shutting down): leave pods running.
                        return;
                    }
                    operation = "update";
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn state_dir(&self) -> PathBuf {
        status::pod_state_dir(&self.ctx.cfg.run_dir, &self.uid)
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.cfg.root_dir.join("pods").join(&self.uid)
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn key(&self) -> String {
        pod_key(&self.pod)
    }

    fn event(&self, type_: EventType, reason: &str, message: &str) {
        super::emit(&self.ctx, &self.pod, None, type_, reason, message);
    }

    /// An event about one container of the pod.
    fn container_event(&self, container: &str, type_: EventType, reason: &str, message: &str) {
        super::emit(
            &self.ctx,
            &self.pod,
            Some(container),
            type_,
            reason,
            message,
        );
    }

    /// The container `name` of the spec: regular, init or ephemeral.
    fn container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
            .or_else(|| {
                plan::ephemeral_containers(&self.pod)
                    .into_iter()
                    .map(|(c, _)| c)
                    .find(|c| c.name == name)
            })
    }

    /// Every attempt of every container of this pod, by container name, oldest first.
    fn attempts(&mut self) -> Attempts {
        let mut out = Attempts::new();
        for st in self
            .ctx
            .runtime
            .list_prefix(&translate::container_id_prefix(&self.uid))
        {
            if st.labels.get(LABEL_POD_UID) != Some(&self.uid) {
                continue;
            }
            let Some(name) = st.labels.get(LABEL_CONTAINER_NAME).cloned() else {
                continue;
            };
            let attempt = st
                .labels
                .get(LABEL_RESTART_COUNT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let message = match &st.state {
                ContainerState::Exited(info) => {
                    if !self.messages.contains_key(&st.id) {
                        let m = self.termination_message(&name, &st.id, info.code, &st.log_path);
                        self.messages.insert(st.id.clone(), m);
                    }
                    self.messages.get(&st.id).cloned().flatten()
                }
                _ => None,
            };
            let rec = Record {
                id: st.id.clone(),
                attempt,
                state: st.state.clone(),
                image: st.image.clone(),
                image_id: st.image_id.clone(),
                message,
                stop_signal: st
                    .labels
                    .get(LABEL_STOP_SIGNAL)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(libc::SIGTERM),
                resources: st.resources.clone(),
            };
            out.entry(name).or_default().push(rec);
        }
        for v in out.values_mut() {
            v.sort_by_key(|r| r.attempt);
        }
        out
    }

    /// The termination message: the file the container wrote (at most 4096 bytes), or with
    /// FallbackToLogsOnError the tail of its log when it failed.
    fn termination_message(
        &self,
        name: &str,
        id: &str,
        code: i32,
        log: &std::path::Path,
    ) -> Option<String> {
        let file = self.pod_dir().join("containers").join(name).join(id);
        let mut text = std::fs::read(&file).ok().unwrap_or_default();
        text.truncate(4096);
        if text.is_empty() && code != 0 {
            let c = self.container(name)?;
            if c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
                let lines = bosun_runtime::logs::read_lines(log).ok()?;
                let out = bosun_runtime::logs::format_for_user(&lines, Some(80), false);
                let start = out.len().saturating_sub(2048);
                text = out[start..].to_vec();
            }
        }
        (!text.is_empty()).then(|| String::from_utf8_lossy(&text).into_owned())
    }

    /// What the worker sees now: the runtime's containers, probe results, its own memory.
    fn observe(&mut self) -> (Attempts, HashMap<String, super::probing::ProbeState>) {
        self.stopping.retain(|_, task| !task.is_finished());
        (self.attempts(), self.probes.states())
    }

    /// One sync: observe, plan, act. When to be woken next.
    async fn sync(&mut self, intent: Intent) -> Next {
        let (attempts, probes) = self.observe();
        // A pod the node holds anything of was admitted before a restart.
        self.admitted = self.admitted
            || !attempts.is_empty()
            || self.net.sandbox.is_some()
            || self.ctx.runtime.sandbox(&self.uid).is_some();
        if !self.admitted && self.rejected.is_none() {
            // The kubelet's admit handlers, in its order: the OS and architecture predicates,
            // then the sysctl allowlist, then AppArmor.
            self.rejected =
                crate::pods::admission::admit(&self.pod, crate::pods::admission::go_arch())
                    .and_then(|()| crate::security::admit(&self.pod, &self.ctx.security))
                    .err();
            // Then the devices of the device plugins (the kubelet's resource allocation
            // handler): a failed allocation refuses the pod (UnexpectedAdmissionError).
            if self.rejected.is_none() && intent == Intent::Run && !plan::api_terminal(&self.pod) {
                if let Some(devices) = self.ctx.devices.clone() {
                    if let Err(e) = devices.allocate(&self.pod).await {
                        tracing::warn!(error = %e, "pod's devices not allocated");
                        // What its other containers got is free again: the pod never runs.
                        devices.release(&self.uid);
                        self.rejected = Some(crate::devices::refusal(&e));
                    }
                }
            }
        }
        if intent == Intent::Run
            && self.rejected.is_none()
            && !plan::api_terminal(&self.pod)
            && !self.released
        {
            self.allocate();
        }
        let observed = Observed {
            attempts,
            probes,
            stopping: self.stopping.keys().cloned().collect(),
            waiting: Some(&self.waiting),
            volumes_set_up: self.vols.paths.is_some(),
            objects_at: self.vols.objects_at,
            released: self.released,
        };
        let admission = self.rejected.clone();
        let network_error = self.ctx.pod_network.error();
        let desired = Desired {
            pod: &self.pod,
            intent,
            sync_frequency: self.ctx.cfg.sync_frequency,
            start_time: self.start_time,
            admission: admission.as_ref(),
            network_error: network_error.as_deref(),
        };
        let actions = plan::plan(&desired, &observed, &self.backoff, SystemTime::now());
        let attempts = observed.attempts;
        self.act(actions, attempts).await
    }

    /// Carries out one plan.
    async fn act(&mut self, actions: PodActions, attempts: Attempts) -> Next {
        // 1. The pod ends.
        if let Some(kill) = actions.kill_pod {
            self.ctx.allocated.remove(&self.uid);
            self.resize_pending = None;
            self.resize_in_progress = None;
            return self.kill_pod(kill, &attempts).await;
        }
        if plan::api_terminal(&self.pod) || self.released {
            // Ended (by the API or by this node) and already released: nothing more to do.
            return Next::Resync;
        }
        // Past admission: the pod is the node's now.
        self.admitted = true;
        self.write_state_files();
        // Held until the node's pod network is ready (the kubelet retries such a pod soon).
        if let Some(e) = actions.network_not_ready {
            if self.network_held.as_deref() != Some(e.as_str()) {
                tracing::info!(error = %e, "pod waits for the pod network");
                self.event(
                    EventType::Warning,
                    crate::reasons::event::NETWORK_NOT_READY,
                    &e,
                );
            }
            self.network_held = Some(e);
            let (init_done, init_failed) = self.init;
            let sandbox = self.net.sandbox.is_some();
            self.write_status(sandbox, sandbox && init_done, init_failed);
            return Next::after(NETWORK_RETRY)
                .min(actions.requeue_at.map_or(Next::Resync, Next::At));
        }
        if self.network_held.take().is_some() {
            tracing::info!("pod network ready: the pod starts");
        }
        // 2. Sandbox, network, volumes.
        let ready = self.ensure_sandbox().await && self.ensure_volumes(actions.volumes).await;
        if !ready {
            // A background network set-up never outlives the sync that began it.
            self.finish_network().await;
            self.write_status(false, false, false);
            return Next::after(setup_retry(self.pod_error.as_ref(), self.dra_failures));
        }
        // 3. Containers whose probes failed.
        // A container restarted for a resize: the pod cgroup takes the allocation now (the
        // kubelet's UpdatePodResources), before the container starts again.
        let resize_kills = actions
            .containers_to_kill
            .iter()
            .any(|k| k.reason == plan::KillReason::Resize);
        if resize_kills && actions.containers_to_update.is_empty() {
            let res = crate::translate::pod_resources(&self.pod);
            if let Err(e) = self.ctx.runtime.update_pod_resources(&self.uid, &res) {
                tracing::warn!(error = %e, "pod cgroup not resized");
            }
        }
        for kill in actions.containers_to_kill {
            self.kill_in_background(kill);
        }
        // 3b. In-place resize: the kubelet's check at the start of each sync (allocated as
        // actual: done), then the updates.
        let mut next = Next::Resync;
        if actions.resizing {
            if self.resize_in_progress.is_none() {
                self.resize_in_progress = Some(resize::InProgress {
                    generation: self.api_pod.metadata.generation.unwrap_or(0),
                    error: None,
                });
            }
        } else if let Some(done) = self.resize_in_progress.take() {
            let pod = Pod {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    generation: Some(done.generation),
                    ..Default::default()
                },
                ..Pod::clone(&self.pod)
            };
            let msg = resize::event_message("Pod resize completed", &pod, "");
            self.event(
                EventType::Normal,
                crate::reasons::event::RESIZE_COMPLETED,
                &msg,
            );
        }
        if !actions.containers_to_update.is_empty() {
            match self.resize_containers(&actions.containers_to_update) {
                // Looked at again at once: the next sync sees it done.
                Ok(()) => next = Next::At(SystemTime::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "in-place resize not applied");
                    let p = self.resize_in_progress.get_or_insert_with(Default::default);
                    if p.error.as_deref() != Some(e.as_str()) {
                        p.error = Some(e.clone());
                        let msg = resize::event_message("Pod resize error", &self.pod, &e);
                        self.event(
                            EventType::Warning,
                            crate::reasons::event::RESIZE_ERROR,
                            &msg,
                        );
                    }
                    next = Next::after(POD_SETUP_RETRY);
                }
            }
        }
        // What the plan decided about waiting containers, their events and back-off.
        for (name, w) in actions.waiting {
            match w {
                Some(w) => self.waiting.insert(name, w),
                None => self.waiting.remove(&name),
            };
        }
        for e in &actions.events {
            self.container_event(&e.container, e.type_, e.reason, &e.message);
        }
        let now = SystemTime::now();
        for (key, finished_at) in &actions.restarts {
            self.backoff.next(key, *finished_at, now);
        }
        let mut next = next.min(actions.requeue_at.map_or(Next::Resync, Next::At));
        // 4. Init containers and sidecars, 5. regular containers.
        for s in actions
            .init_containers_to_start
            .iter()
            .chain(&actions.containers_to_start)
        {
            let Some(c) = self.container(&s.name) else {
                continue;
            };
            next = next.min(self.start(&c, s.attempt, None, &attempts).await);
        }
        // No container started to wait for a background network set-up: wait for it here.
        if !self.finish_network().await {
            self.write_status(false, false, false);
            return Next::after(POD_SETUP_RETRY);
        }
        // 6. Ephemeral containers.
        for name in &actions.ephemeral_containers_to_start {
            let Some((c, target)) = plan::ephemeral_containers(&self.pod)
                .into_iter()
                .find(|(c, _)| &c.name == name)
            else {
                continue;
            };
            next = next.min(self.start(&c, 0, Some(target.as_deref()), &attempts).await);
        }
        // 7. Sidecars stop once every regular container is done for good.
        for name in &actions.sidecars_to_stop {
            self.stop_running(name, None).await;
        }
        // 8. Report.
        self.report(actions.init_done, actions.init_failed).await;
        next
    }

    /// The kubelet's allocation manager for this pod: the first allocation is the spec's; a
    /// spec asking other resources is admitted beside the other pods' allocations (then
    /// allocated, `ResizeStarted`) or waits (`PodResizePending`). The pod then runs as
    /// allocated.
    fn allocate(&mut self) {
        // `pod` is the source's here (the sync's start); it becomes the allocated pod below.
        self.api_pod = self.pod.clone();
        let api = self.api_pod.clone();
        let Some(allocated) = self.allocated.clone() else {
            self.set_allocation(resize::allocation_of(&api));
            return;
        };
        let ctx = self.ctx.clone();
        let uid = self.uid.clone();
        let decision = resize::decide(&api, &allocated, |p| {
            let others = ctx.allocated.others(&uid);
            let others: Vec<&Pod> = others.iter().map(|p| p.as_ref()).collect();
            let node = ctx
                .resources
                .node
                .with_devices(&super::device_allocatable(&ctx, &uid));
            crate::admission::admit(p, &others, &node).map_err(|r| r.message)
        });
        match decision {
            resize::Decision::Unchanged => {
                self.resize_pending = None;
                self.pod = Arc::new(resize::with_allocation(&api, &allocated));
                self.ctx.allocated.set(&self.uid, self.pod.clone());
            }
            resize::Decision::Allocate => {
                self.resize_pending = None;
                self.set_allocation(resize::allocation_of(&api));
                let generation = api.metadata.generation.unwrap_or(0);
                self.resize_in_progress = Some(resize::InProgress {
                    generation,
                    error: None,
                });
                tracing::info!(generation, "pod resize admitted");
                let msg = resize::event_message("Pod resize started", &self.pod, "");
                self.event(
                    EventType::Normal,
                    crate::reasons::event::RESIZE_STARTED,
                    &msg,
                );
            }
            resize::Decision::Pending(p) => {
                let new = self
                    .resize_pending
                    .as_ref()
                    .is_none_or(|o| o.reason != p.reason || o.generation != p.generation);
                if new {
                    tracing::info!(reason = p.reason, message = %p.message, "pod resize pending");
                    let reason = if p.reason == crate::reasons::condition::RESIZE_INFEASIBLE {
                        crate::reasons::event::RESIZE_INFEASIBLE
                    } else {
                        crate::reasons::event::RESIZE_DEFERRED
                    };
                    let msg = resize::event_message(
                        &format!("Pod resize {}", p.reason),
                        &api,
                        &p.message,
                    );
                    self.event(EventType::Warning, reason, &msg);
                }
                self.resize_pending = Some(p);
                self.pod = Arc::new(resize::with_allocation(&api, &allocated));
                self.ctx.allocated.set(&self.uid, self.pod.clone());
            }
        }
    }

    /// Keeps `a` as the pod's allocation (in memory, in the state folder, for the other pods'
    /// resizes) and runs the pod so.
    fn set_allocation(&mut self, a: resize::Allocation) {
        if let Ok(bytes) = serde_json::to_vec(&a) {
            let _ = std::fs::create_dir_all(self.state_dir());
            if let Err(e) = status::write_atomic(&self.state_dir(), resize::ALLOCATED_FILE, &bytes)
            {
                tracing::warn!(error = %e, "cannot keep the pod's allocated resources");
            }
        }
        self.pod = Arc::new(resize::with_allocation(&self.api_pod, &a));
        self.allocated = Some(a);
        self.ctx.allocated.set(&self.uid, self.pod.clone());
    }

    /// The act of a resize (the kubelet's `doPodResizeAction`): memory limits below the usage
    /// refused first; then the pod cgroup before the containers when a CPU limit grows (a
    /// cgroup v1 child's quota may not exceed its parent's), after them otherwise.
    fn resize_containers(&self, updates: &[plan::UpdateContainer]) -> Result<(), String> {
        let runtime = &self.ctx.runtime;
        let pod_res = crate::translate::pod_resources(&self.pod);
        if updates.iter().any(|u| u.memory_shrinks) {
            let usage = runtime.pods_usage(true);
            let shrinking: Vec<resize::MemoryUpdate> = updates
                .iter()
                .filter(|u| u.memory_shrinks)
                .map(|u| resize::MemoryUpdate {
                    id: &u.id,
                    name: &u.name,
                    memory_limit: u.resources.memory_limit,
                })
                .collect();
            resize::memory_check(&self.uid, pod_res.memory_limit, &shrinking, &usage)?;
        }
        let pod_first = updates.iter().any(|u| u.cpu_grows);
        let pod = || {
            runtime
                .update_pod_resources(&self.uid, &pod_res)
                .map_err(|e| format!("pod cgroup: {e}"))
        };
        if pod_first {
            pod()?;
        }
        for u in updates {
            runtime
                .update_container_resources(&u.id, &u.resources)
                .map_err(|e| format!("container {:?}: {e}", u.name))?;
            tracing::info!(container = %u.name, resources = ?u.resources, "container resized");
        }
        if !pod_first {
            pod()?;
        }
        Ok(())
    }

    /// The start time and the desired spec, for `bosun pods` and for a restarted agent.
    fn write_state_files(&self) {
        let _ = std::fs::create_dir_all(self.state_dir());
        let start_file = self.state_dir().join(status::START_TIME_FILE);
        if !start_file.exists() {
            let secs = self
                .start_time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let _ = status::write_atomic(
                &self.state_dir(),
                status::START_TIME_FILE,
                secs.to_string().as_bytes(),
            );
        }
        if let Ok(bytes) = serde_json::to_vec(&*self.pod) {
            let _ = status::write_atomic(&self.state_dir(), status::POD_FILE, &bytes);
        }
    }
}
