//! What a pod worker does next, decided by one pure function of what is wanted, what the
//! runtime has and the restart back-off: [`plan`], modelled on the kubelet's
//! `computePodActions` and its `podActions`. The worker's steps carry the answer out; nothing
//! here does I/O, so every decision is a table test (`tests` below) that runs in microseconds.
//!
//! Decided first, before anything starts:
//! - admission: a pod the node refuses ([`Desired::admission`]: the worker asks
//!   [`crate::pods::admission`] (OS, architecture) then [`crate::security::admit`] (sysctls,
//!   then AppArmor), once per pod) is a [`KillPod`] ending in [`PodEnd::Failed`]
//!   ([`PodFailure::rejected`]); the manager's resource admission comes as [`Intent::Fail`];
//! - activeDeadlineSeconds: a pod active longer than its deadline is killed with its grace
//!   period and ends [`PodEnd::Failed`] (`DeadlineExceeded`); before that the plan asks to be
//!   woken at the deadline.
//!
//! - the pod network: while the node's is not ready, a pod not on the host network is held
//!   ([`PodActions::network_not_ready`]), as the kubelet holds it;
//!
//! Where what comes next lands:
//! - killing a whole pod for another reason (eviction, node shutdown) is an [`Intent`] that
//!   [`plan`] turns into a [`KillPod`] whose [`PodEnd`] says the terminal phase and reason;
//!
//! In-place resize (the kubelet's `computePodResizeAction`): the pod comes as allocated
//! ([`crate::pods::resize`]); a running regular container, sidecar or (before the pod is
//! initialized) non-sidecar init container whose resources as the runtime reports them are not
//! its allocation's is in [`PodActions::containers_to_update`] (decreases first), or stopped
//! and started again when its `resizePolicy` says `RestartContainer` for a resource that
//! changed (whatever the pod's restart policy; the apiserver refuses to resize a non-sidecar
//! init container with that policy, the kubelet restarts one all the same).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_runtime::{ContainerState, Resources};
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodStatus, Probe};

use super::super::backoff::Backoff;
use super::super::probing::{ProbeKind, ProbeState};
use super::super::status::{Record, Waiting};
use crate::reasons::{event, waiting, EventType};
use crate::security::Refusal;
use crate::translate::{self, RestartPolicy};

/// The reason of a pod killed at its activeDeadlineSeconds (its phase, and a Normal Event).
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Its message.
pub const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// Every attempt of every container of a pod, by container name, oldest first.
pub type Attempts = BTreeMap<String, Vec<Record>>;

/// What the pod manager wants of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Run it (until the API says it ended).
    Run,
    /// Terminate it gracefully (a grace override in seconds, e.g. a deletion's), then remove
    /// everything it has.
    Terminate { grace: Option<i64> },
    /// End it in phase Failed for a reason of the node's (admission refused it, the eviction
    /// manager evicts it): stopped, its status written, what it holds released.
    Fail(Arc<PodFailure>),
}

/// Why the node ends a pod on its own: the pod's phase becomes Failed with this reason and
/// message (the kubelet's `rejectPod` and the eviction manager's `evictPod`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    /// The status reason and the Warning Event's (`OutOfcpu`, `NodeAffinity`, `Evicted`).
    pub reason: String,
    /// The status message.
    pub message: String,
    /// The Event's message (empty: no Event about the pod, as for a node shutdown).
    pub event_message: String,
    /// The Event's type: Warning, Normal for activeDeadlineSeconds (as the kubelet's).
    pub event_type: EventType,
    /// Refused at admission: it never ran, its status has no containers.
    pub rejected: bool,
    /// The `DisruptionTarget` condition (reason `TerminationByKubelet`) goes with the status.
    pub disruption: bool,
    /// A grace period override in seconds (an eviction's).
    pub grace: Option<i64>,
}

/// The reason of the DisruptionTarget condition of a pod the kubelet ends.
pub const TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";

impl PodFailure {
    /// A pod admission refused: "Pod was rejected: <message>".
    pub fn rejected(reason: &str, message: &str) -> PodFailure {
        PodFailure {
            reason: reason.to_string(),
            message: format!("Pod was rejected: {message}"),
            event_message: message.to_string(),
            event_type: EventType::Warning,
            rejected: true,
            disruption: false,
            grace: None,
        }
    }

    /// A pod the eviction manager evicts (reason `Evicted`).
    pub fn evicted(message: &str, grace: Option<i64>, disruption: bool) -> PodFailure {
        PodFailure {
            reason: crate::eviction::REASON.to_string(),
            message: message.to_string(),
            event_message: message.to_string(),
            event_type: EventType::Warning,
            rejected: false,
            disruption,
            grace,
        }
    }

    /// A pod active on the node longer than its activeDeadlineSeconds: stopped with its own
    /// grace period, a Normal Event (the kubelet's active deadline handler).
    pub fn deadline() -> PodFailure {
        PodFailure {
            reason: DEADLINE_EXCEEDED.to_string(),
            message: DEADLINE_EXCEEDED_MESSAGE.to_string(),
            event_message: DEADLINE_EXCEEDED_MESSAGE.to_string(),
            event_type: EventType::Normal,
            rejected: false,
            disruption: false,
            grace: None,
        }
    }

    /// A pod ended because the node shuts down (the kubelet's nodeshutdown manager): stopped
    /// with `grace` seconds (its group's, or its own when shorter), reason `Terminated`, the
    /// DisruptionTarget condition, no Event about the pod.
    pub fn shutdown(grace: i64) -> PodFailure {
        PodFailure {
            reason: crate::shutdown::REASON.to_string(),
            message: crate::shutdown::MESSAGE.to_string(),
            event_message: String::new(),
            event_type: EventType::Normal,
            rejected: false,
            disruption: true,
            grace: Some(grace),
        }
    }

    /// The status of a pod that ran and ended so: phase Failed, the reason and message, the
    /// DisruptionTarget condition (its transition time kept from `previous`). A rejected pod's
    /// is `status::rejected_status` instead.
    pub fn apply(&self, st: &mut PodStatus, previous: Option<&PodStatus>, now: SystemTime) {
        st.phase = Some("Failed".into());
        st.reason = Some(self.reason.clone());
        st.message = Some(self.message.clone());
        if !self.disruption {
            return;
        }
        let at = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| super::super::status::time(now));
        let conditions = st.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some(TERMINATION_BY_KUBELET.into()),
            message: Some(self.message.clone()),
            last_transition_time: Some(at),
            ..PodCondition::default()
        });
    }
}

/// What is wanted of the pod.
pub struct Desired<'a> {
    pub pod: &'a Pod,
    pub intent: Intent,
    /// How often the files of API data volumes are rewritten (syncFrequency).
    pub sync_frequency: Duration,
    /// When the node first synced the pod (`status.startTime`): activeDeadlineSeconds counts
    /// from it.
    pub start_time: SystemTime,
    /// Why the node's admission refuses the pod (`None`: admitted).
    pub admission: Option<&'a Refusal>,
    /// The kubelet's network error while the node's pod network is not ready (no CNI config:
    /// `crate::podnet`); `None`: ready.
    pub network_error: Option<&'a str>,
}

/// What the worker sees of the pod now.
#[derive(Default)]
pub struct Observed<'a> {
    pub attempts: Attempts,
    /// Probe results of running containers, by container id (absent: not probed).
    pub probes: HashMap<String, ProbeState>,
    /// Containers the worker is stopping right now, by id.
    pub stopping: HashSet<String>,
    /// Why each container waits, as last reported (events are sent when this changes).
    pub waiting: Option<&'a HashMap<String, Waiting>>,
    /// Every volume of the pod is set up.
    pub volumes_set_up: bool,
    /// When the API objects of the pod's volumes and env were last read.
    pub objects_at: Option<SystemTime>,
    /// The pod ended and what it held was released.
    pub released: bool,
}

/// What to do with the pod's volumes before containers start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VolumeStep {
    /// Set every volume up and write the API data volumes.
    SetUp,
    /// Rewrite the API data volumes from the API's objects (once per sync period).
    Refresh,
    /// Nothing to do.
    #[default]
    Keep,
}

/// One attempt of a container to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartContainer {
    pub name: String,
    pub attempt: u32,
}

/// Why a running container is stopped while its pod runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// Its image was updated (the kubelet's container hash changed): restarted whatever its
    /// restart policy.
    Changed,
    LivenessProbe,
    StartupProbe,
    /// An in-place resize its `resizePolicy` says needs a restart.
    Resize,
}

/// A running container whose cgroup takes its allocated resources in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateContainer {
    pub id: String,
    pub name: String,
    /// Its new limits (the allocation's).
    pub resources: Resources,
    /// Its CPU limit grows (or is lifted): the pod cgroup must grow first.
    pub cpu_grows: bool,
    /// Its memory limit shrinks (or is set): checked against its usage first.
    pub memory_shrinks: bool,
}

/// A running container to stop while its pod runs (in the background: the pod's other
/// containers are looked after meanwhile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillContainer {
    pub id: String,
    pub name: String,
    pub signal: i32,
    pub grace: Duration,
    pub reason: KillReason,
    /// The Killing event's message.
    pub message: String,
}

/// A container attempt to stop when the pod ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub name: String,
    pub id: String,
}

/// How a pod ends, once its containers are stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEnd {
    /// Deleted or no longer wanted: everything is removed (containers, sandbox, volumes, logs,
    /// state), and a deletion is confirmed to the API.
    Removed,
    /// The API says the pod ended: what it holds is released, its logs stay for users.
    Released,
    /// The node ends it (admission, eviction): its Failed status is written, then what it holds
    /// is released as for [`PodEnd::Released`].
    Failed(Arc<PodFailure>),
}

/// Stopping the whole pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillPod {
    /// The grace period for preStop hooks and the stop signal; `None`: SIGKILL at once.
    pub grace: Option<Duration>,
    /// Stopped together first (everything but the sidecars).
    pub containers: Vec<Running>,
    /// Then the sidecars, one by one, newest first.
    pub sidecars: Vec<String>,
    pub end: PodEnd,
}

/// An Event a decision raises about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container: String,
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// Everything the worker does in one sync, in the order of the kubelet's `SyncPod` steps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Step 1: end the pod (then nothing else is done).
    pub kill_pod: Option<KillPod>,
    /// Step 2: the pod's volumes (after its sandbox and network).
    pub volumes: VolumeStep,
    /// Step 3: running containers to stop (failed probes); restarted by their policy.
    pub containers_to_kill: Vec<KillContainer>,
    /// Why containers wait, as this plan changes it (`None`: no longer waiting).
    pub waiting: Vec<(String, Option<Waiting>)>,
    /// Events raised by the decisions (a container entering CrashLoopBackOff).
    pub events: Vec<ContainerEvent>,
    /// Restarts to record in the back-off: (key, when the container finished).
    pub restarts: Vec<(String, SystemTime)>,
    /// Step 3b: running containers resized in place, decreases first (the kubelet's
    /// `ContainersToUpdate`); the pod cgroup follows the allocation around them.
    pub containers_to_update: Vec<UpdateContainer>,
    /// A running container does not run with its allocated resources yet (the kubelet's
    /// `IsPodResizeInProgress`).
    pub resizing: bool,
    /// Step 4: init containers and sidecars to start, in order.
    pub init_containers_to_start: Vec<StartContainer>,
    /// Step 5: regular containers to start.
    pub containers_to_start: Vec<StartContainer>,
    /// Step 6: ephemeral containers that never ran (never restarted).
    pub ephemeral_containers_to_start: Vec<String>,
    /// Step 7: every regular container is done for good: the sidecars to stop, newest first.
    pub sidecars_to_stop: Vec<String>,
    /// Every init container completed (sidecars running).
    pub init_done: bool,
    /// An init container failed for good (the pod fails).
    pub init_failed: bool,
    /// When to look again at the latest (a back-off ending).
    pub requeue_at: Option<SystemTime>,
    /// The pod is on the pod network and the network is not ready: nothing is set up or
    /// started (the kubelet's `NetworkNotReady`: this error, a Warning Event, a retry soon).
    pub network_not_ready: Option<String>,
}

impl PodActions {
    fn requeue(&mut self, at: SystemTime) {
        self.requeue_at = Some(self.requeue_at.map_or(at, |cur| cur.min(at)));
    }

    fn set_waiting(&mut self, name: &str, w: Option<Waiting>) {
        self.waiting.push((name.to_string(), w));
    }
}

/// The back-off key of a container's restarts: its name and image, as the kubelet's key holds
/// the hash of both, so that a new image starts at once with a back-off of its own.
pub fn restart_key(c: &Container) -> String {
    format!("{}/run/{}", c.name, c.image.as_deref().unwrap_or_default())
}

/// The back-off key of a container's image pulls: its name and image (the kubelet's key is the
/// pod and the image), so that an updated image is pulled at once.
pub fn image_key(name: &str, image: &str) -> String {
    format!("{name}/image/{image}")
}

/// `namespace/name` of a pod, as messages and logs name it.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Has the API recorded that this pod ended (phase Succeeded or Failed, not being deleted)?
pub fn api_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded") | Some("Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's sidecars (init containers with `restartPolicy: Always`), in spec order.
pub fn sidecars(pod: &Pod) -> Vec<&Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| translate::is_sidecar(c))
        .collect()
}

/// The pod's grace period: an override (a deletion's), else the spec's, else 30 s.
pub fn grace_period(pod: &Pod, grace: Option<i64>) -> Duration {
    let secs = grace
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

fn latest<'a>(attempts: &'a Attempts, name: &str) -> Option<&'a Record> {
    attempts.get(name).and_then(|v| v.last())
}

/// The container's image is not the one its attempt `rec` was started with.
fn changed(c: &Container, rec: &Record) -> bool {
    rec.image != c.image.as_deref().unwrap_or_default()
}

/// Has the pod been initialized: has one of its regular containers been created or started
/// (the kubelet's `podHasInitialized`)? Its non-sidecar init containers are then done with.
fn initialized(pod: &Pod, attempts: &Attempts) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .any(|c| latest(attempts, &c.name).is_some_and(|r| is_live(&r.state)))
}

/// Ended otherwise than by completing (a non-zero exit, or a state the runtime lost).
fn stopped_unsuccessfully(state: &ContainerState) -> bool {
    match state {
        ContainerState::Exited(info) => info.code != 0,
        ContainerState::Unknown { .. } => true,
        ContainerState::Created | ContainerState::Running { .. } => false,
    }
}

fn is_live(state: &ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Running { .. } | ContainerState::Created
    )
}

/// Decides what the worker does for `desired` given `observed`, the restart back-off and `now`.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    backoff: &Backoff,
    now: SystemTime,
) -> PodActions {
    let pod = desired.pod;
    let mut a = PodActions::default();
    match &desired.intent {
        Intent::Terminate { grace } => {
            a.kill_pod = Some(terminate(pod, &observed.attempts, *grace));
            return a;
        }
        // Ended by the node: stopped with the failure's grace period, once.
        Intent::Fail(failure) => {
            if !observed.released {
                let mut kill = terminate(pod, &observed.attempts, failure.grace);
                kill.end = PodEnd::Failed(failure.clone());
                a.kill_pod = Some(kill);
            }
            return a;
        }
        // A pod the API says has ended never runs again (also one that ended before this node
        // saw it, or before a restart lost its records): release it, keep its logs.
        Intent::Run if api_terminal(pod) => {
            if !observed.released {
                a.kill_pod = Some(release(&observed.attempts));
            }
            return a;
        }
        Intent::Run => {}
    }
    if let Some(refusal) = desired.admission {
        if !observed.released {
            a.kill_pod = Some(KillPod {
                end: PodEnd::Failed(Arc::new(PodFailure::rejected(
                    refusal.reason,
                    &refusal.message,
                ))),
                ..release(&observed.attempts)
            });
        }
        return a;
    }
    match deadline(pod, desired.start_time) {
        Some(at) if now >= at => {
            if !observed.released {
                a.kill_pod = Some(KillPod {
                    end: PodEnd::Failed(Arc::new(PodFailure::deadline())),
                    ..terminate(pod, &observed.attempts, None)
                });
            }
            return a;
        }
        Some(at) => a.requeue(at),
        None => {}
    }
    // The kubelet's SyncPod: without a ready network only hostNetwork pods go on.
    if let Some(e) = desired.network_error {
        if !translate::host_network(pod) {
            a.network_not_ready = Some(crate::podnet::pod_message(e));
            return a;
        }
    }
    a.volumes = if !observed.volumes_set_up {
        VolumeStep::SetUp
    } else if observed
        .objects_at
        .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= desired.sync_frequency)
    {
        VolumeStep::Refresh
    } else {
        VolumeStep::Keep
    };
    let mut p = Planner {
        pod,
        observed,
        backoff,
        now,
        a,
    };
    p.changed_kills();
    p.probe_kills();
    p.resize();
    p.init_and_regular_containers();
    p.ephemeral_containers();
    p.a
}

/// When the pod's activeDeadlineSeconds ends, counted from its start on this node.
pub fn deadline(pod: &Pod, start_time: SystemTime) -> Option<SystemTime> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    Some(start_time + Duration::from_secs(secs.max(0) as u64))
}

/// Everything but the sidecars at once, then the sidecars newest first, within the grace
/// period; then everything is removed.
fn terminate(pod: &Pod, attempts: &Attempts, grace: Option<i64>) -> KillPod {
    let sidecars: Vec<String> = sidecars(pod).iter().map(|c| c.name.clone()).collect();
    let containers = attempts
        .iter()
        .filter(|(name, _)| !sidecars.contains(name))
        .filter_map(|(name, v)| v.last().map(|r| (name, r)))
        .filter(|(_, r)| is_live(&r.state))
        .map(|(name, r)| Running {
            name: name.clone(),
            id: r.id.clone(),
        })
        .collect();
    KillPod {
        grace: Some(grace_period(pod, grace)),
        containers,
        sidecars: sidecars.into_iter().rev().collect(),
        end: PodEnd::Removed,
    }
}

/// A pod that ended: whatever still runs (nothing should) is killed at once, what it holds is
/// released.
fn release(attempts: &Attempts) -> KillPod {
    let containers = attempts
        .iter()
        .filter_map(|(name, v)| v.last().map(|r| (name, r)))
        .filter(|(_, r)| is_live(&r.state))
        .map(|(name, r)| Running {
            name: name.clone(),
            id: r.id.clone(),
        })
        .collect();
    KillPod {
        grace: None,
        containers,
        sidecars: Vec::new(),
        end: PodEnd::Released,
    }
}

/// What to do with one container after looking at its newest attempt.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Running or being set up: nothing to do.
    Keep,
    /// Start attempt `n`.
    Start(u32),
    /// Exited and done (no restart).
    Done { succeeded: bool },
    /// Exited, restarts when its back-off ends.
    Wait,
}

struct Planner<'a> {
    pod: &'a Pod,
    observed: &'a Observed<'a>,
    backoff: &'a Backoff,
    now: SystemTime,
    a: PodActions,
}

impl Planner<'_> {
    fn previous_waiting(&self, name: &str) -> Option<&'static str> {
        self.observed
            .waiting
            .and_then(|w| w.get(name))
            .map(|w| w.reason)
    }

    /// The next step of container `c` under `policy`, from its newest attempt.
    fn step(&mut self, c: &Container, policy: RestartPolicy) -> Step {
        let Some(rec) = latest(&self.observed.attempts, &c.name) else {
            return Step::Start(0);
        };
        let (code, finished_at) = match &rec.state {
            ContainerState::Created | ContainerState::Running { .. } => {
                self.a.set_waiting(&c.name, None);
                return Step::Keep;
            }
            ContainerState::Exited(info) => (info.code, info.finished_at),
            ContainerState::Unknown { .. } => (137, self.now),
        };
        if !policy.restarts(code) {
            self.a.set_waiting(&c.name, None);
            return Step::Done {
                succeeded: code == 0,
            };
        }
        let key = restart_key(c);
        if let Some(until) = self.backoff.in_backoff_until(&key, finished_at, self.now) {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                self.backoff.delay(&key).as_secs(),
                c.name,
                pod_key(self.pod)
            );
            if self.previous_waiting(&c.name) != Some(waiting::CRASH_LOOP_BACK_OFF) {
                self.a.events.push(ContainerEvent {
                    container: c.name.clone(),
                    type_: EventType::Warning,
                    reason: event::BACK_OFF_START_CONTAINER,
                    message: message.clone(),
                });
            }
            self.a.set_waiting(
                &c.name,
                Some(Waiting {
                    reason: waiting::CRASH_LOOP_BACK_OFF,
                    message,
                }),
            );
            self.a.requeue(until);
            return Step::Wait;
        }
        self.a.restarts.push((key, finished_at));
        Step::Start(rec.attempt + 1)
    }

    fn start(name: &str, attempt: u32) -> StartContainer {
        StartContainer {
            name: name.to_string(),
            attempt,
        }
    }

    /// Init containers in order (each must complete before the next starts; sidecars must be
    /// running), then the regular containers; sidecars stop once every regular container is
    /// done for good.
    fn init_and_regular_containers(&mut self) {
        let pod = self.pod;
        let policy = RestartPolicy::of_pod(pod);
        let spec = pod.spec.as_ref();
        let mut init_done = true;
        let mut init_failed = false;
        let pod_initialized = initialized(pod, &self.observed.attempts);
        for c in spec.iter().flat_map(|s| s.init_containers.iter().flatten()) {
            let sidecar = translate::is_sidecar(c);
            // A sidecar with a startup probe holds back the containers after it until the probe
            // succeeds, while the pod initializes (the kubelet's computeInitContainerActions:
            // "wait for the startup probe to succeed"); once the pod was initialized, a
            // restarted sidecar holds back nothing.
            let holds_back = sidecar && c.startup_probe.is_some() && !pod_initialized;
            // Stopped for a resize before the pod was initialized, and not started again yet
            // (the kubelet kills it and starts it again in one sync): still resizing, and it
            // starts again whatever the pod's restart policy.
            let resized = !sidecar
                && !pod_initialized
                && latest(&self.observed.attempts, &c.name).is_some_and(|r| {
                    stopped_unsuccessfully(&r.state)
                        && resize_of(pod, c, &r.resources) == Some(true)
                });
            self.a.resizing |= resized;
            let own = if sidecar || resized {
                RestartPolicy::Always
            } else {
                policy.for_init()
            };
            let rec = latest(&self.observed.attempts, &c.name);
            let running = matches!(rec.map(|r| &r.state), Some(ContainerState::Running { .. }));
            let started = rec
                .and_then(|r| self.observed.probes.get(&r.id))
                .is_some_and(|p| p.started);
            match self.step(c, own) {
                Step::Keep if sidecar && running && (started || !holds_back) => continue,
                Step::Keep => {
                    init_done = false;
                    break;
                }
                Step::Done { succeeded: true } if !sidecar => continue,
                Step::Done { .. } => {
                    init_done = false;
                    init_failed = true;
                    break;
                }
                Step::Wait if sidecar => continue,
                Step::Wait => {
                    init_done = false;
                    break;
                }
                Step::Start(n) => {
                    self.a
                        .init_containers_to_start
                        .push(Self::start(&c.name, n));
                    if sidecar && !holds_back {
                        continue;
                    }
                    init_done = false;
                    break;
                }
            }
        }
        let finished = if init_done {
            let mut finished = true;
            for c in spec.iter().flat_map(|s| s.containers.iter()) {
                let resized = latest(&self.observed.attempts, &c.name).is_some_and(|r| {
                    !is_live(&r.state) && resize_of(pod, c, &r.resources) == Some(true)
                });
                // Stopped for a resize and not started again yet: still resizing.
                self.a.resizing |= resized;
                let changed = resized
                    || latest(&self.observed.attempts, &c.name).is_some_and(|r| changed(c, r));
                let own = if changed {
                    RestartPolicy::Always
                } else {
                    policy
                };
                match self.step(c, own) {
                    Step::Start(n) => {
                        finished = false;
                        self.a.containers_to_start.push(Self::start(&c.name, n));
                    }
                    Step::Keep | Step::Wait => finished = false,
                    Step::Done { .. } => {}
                }
            }
            finished
        } else {
            init_failed && policy == RestartPolicy::Never
        };
        if finished {
            self.a.sidecars_to_stop = sidecars(pod).iter().rev().map(|c| c.name.clone()).collect();
        }
        self.a.init_done = init_done;
        self.a.init_failed = init_failed;
    }

    /// Ephemeral containers start once, whether or not the init containers are done (as with
    /// the kubelet), and are never restarted.
    fn ephemeral_containers(&mut self) {
        for (c, _) in ephemeral_containers(self.pod) {
            if !self.observed.attempts.contains_key(&c.name) {
                self.a.ephemeral_containers_to_start.push(c.name);
            }
        }
    }

    /// A running regular container or sidecar whose image was updated is stopped with the pod's
    /// grace period and started again with the new image, as the kubelet does when the
    /// container's hash (its name and image) changed.
    fn changed_kills(&mut self) {
        let pod = self.pod;
        let spec = pod.spec.as_ref();
        let pod_grace = grace_period(pod, None);
        let watched = spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .chain(sidecars(pod));
        for c in watched {
            let Some(rec) = latest(&self.observed.attempts, &c.name) else {
                continue;
            };
            if !is_live(&rec.state) || self.observed.stopping.contains(&rec.id) || !changed(c, rec)
            {
                continue;
            }
            self.a.containers_to_kill.push(KillContainer {
                id: rec.id.clone(),
                name: c.name.clone(),
                signal: rec.stop_signal,
                grace: pod_grace,
                reason: KillReason::Changed,
                message: format!("Container {} definition changed, will be restarted", c.name),
            });
        }
    }

    /// In-place resize: each running container whose resources are not its allocation's is
    /// updated, or stopped (then started again) when its policy says so. A non-sidecar init
    /// container is looked at while the pod is not initialized (the kubelet's
    /// `computeInitContainerActions` with `InPlacePodVerticalScalingInitContainers`: a running
    /// one goes through `computePodResizeAction`, its restart being an init container to start).
    fn resize(&mut self) {
        let pod = self.pod;
        let spec = pod.spec.as_ref();
        let pod_grace = grace_period(pod, None);
        let initialized = initialized(pod, &self.observed.attempts);
        let resizable = spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .filter(|c| translate::is_sidecar(c) || !initialized)
            .chain(spec.iter().flat_map(|s| s.containers.iter()));
        let mut updates = Vec::new();
        for c in resizable {
            let Some(rec) = latest(&self.observed.attempts, &c.name) else {
                continue;
            };
            if !matches!(rec.state, ContainerState::Running { .. })
                || self.observed.stopping.contains(&rec.id)
                || self.a.containers_to_kill.iter().any(|k| k.id == rec.id)
            {
                continue;
            }
            let Some(restart) = resize_of(pod, c, &rec.resources) else {
                continue;
            };
            self.a.resizing = true;
            if restart {
                self.a.containers_to_kill.push(KillContainer {
                    id: rec.id.clone(),
                    name: c.name.clone(),
                    signal: rec.stop_signal,
                    grace: pod_grace,
                    reason: KillReason::Resize,
                    message: format!("Container {} resize requires restart", c.name),
                });
                continue;
            }
            let want = translate::container_resources(pod, c);
            let cpu_grows = match (cpu_limit(&want), cpu_limit(&rec.resources)) {
                (None, Some(_)) => true,
                (Some(new), Some(old)) => new > old,
                _ => false,
            };
            let memory_shrinks = match (want.memory_limit, rec.resources.memory_limit) {
                (Some(_), None) => true,
                (Some(new), Some(old)) => new < old,
                _ => false,
            };
            let grows = cpu_grows
                || want
                    .memory_limit
                    .is_none_or(|new| rec.resources.memory_limit.is_some_and(|old| new > old));
            updates.push((
                grows,
                UpdateContainer {
                    id: rec.id.clone(),
                    name: c.name.clone(),
                    resources: want,
                    cpu_grows,
                    memory_shrinks,
                },
            ));
        }
        // Decreases first, then increases (stable within each).
        updates.sort_by_key(|(grows, _)| *grows);
        self.a.containers_to_update = updates.into_iter().map(|(_, u)| u).collect();
    }

    /// A running container whose liveness or startup probe failed is stopped, with the
    /// probe's grace period (or the pod's); its restart policy then applies.
    fn probe_kills(&mut self) {
        let pod = self.pod;
        let spec = pod.spec.as_ref();
        let pod_grace = spec
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let probed = spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .chain(sidecars(pod));
        for c in probed {
            let Some(rec) = latest(&self.observed.attempts, &c.name) else {
                continue;
            };
            if !matches!(rec.state, ContainerState::Running { .. })
                || self.observed.stopping.contains(&rec.id)
            {
                continue;
            }
            if self.a.containers_to_kill.iter().any(|k| k.id == rec.id) {
                continue;
            }
            let Some(kind) = self.observed.probes.get(&rec.id).and_then(|p| p.failed) else {
                continue;
            };
            let (probe, reason, what): (Option<&Probe>, _, _) = match kind {
                ProbeKind::Liveness => (
                    c.liveness_probe.as_ref(),
                    KillReason::LivenessProbe,
                    "liveness",
                ),
                ProbeKind::Startup => (
                    c.startup_probe.as_ref(),
                    KillReason::StartupProbe,
                    "startup",
                ),
                ProbeKind::Readiness => continue,
            };
            let grace = probe
                .and_then(|p| p.termination_grace_period_seconds)
                .unwrap_or(pod_grace)
                .max(1);
            self.a.containers_to_kill.push(KillContainer {
                id: rec.id.clone(),
                name: c.name.clone(),
                signal: rec.stop_signal,
                grace: Duration::from_secs(grace as u64),
                reason,
                message: format!(
                    "Container {} failed {what} probe, will be restarted",
                    c.name
                ),
            });
        }
    }
}

/// How container `c` differs from the resources it runs with: `None` when it does not,
/// `Some(restart)` when it does, `restart` when its `resizePolicy` says `RestartContainer` for
/// a resource that changed (the kubelet's `determineContainerResize`; `NotRequired` is the
/// default).
pub fn resize_of(pod: &Pod, c: &Container, actual: &Resources) -> Option<bool> {
    let want = translate::container_resources(pod, c);
    if want == *actual {
        return None;
    }
    let cpu = want.cpu_shares != actual.cpu_shares
        || want.cpu_quota != actual.cpu_quota
        || want.cpu_period != actual.cpu_period;
    let memory = want.memory_limit != actual.memory_limit;
    let restarts = |resource: &str| {
        c.resize_policy
            .iter()
            .flatten()
            .any(|p| p.resource_name == resource && p.restart_policy == "RestartContainer")
    };
    Some((cpu && restarts("cpu")) || (memory && restarts("memory")))
}

/// The CPU quota in thousandths of a CPU per period (`None`: unlimited), to compare limits.
fn cpu_limit(r: &Resources) -> Option<u128> {
    match (r.cpu_quota, r.cpu_period) {
        (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as u128 * 1_000_000 / p as u128),
        _ => None,
    }
}

/// The pod's ephemeral containers (`kubectl debug`) as containers, with their targets.
pub fn ephemeral_containers(pod: &Pod) -> Vec<(Container, Option<String>)> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(translate::ephemeral_container)
        .collect()
}

/// Of every container's attempts, those to remove: all but the newest and the one before it
/// (kept for `lastState` and `logs --previous`), when they have exited.
pub fn collectable(attempts: &Attempts) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, v) in attempts {
        if v.len() <= 2 {
            continue;
        }
        for rec in &v[..v.len() - 2] {
            if matches!(
                rec.state,
                ContainerState::Exited(_) | ContainerState::Unknown { .. }
            ) {
                out.push((name.clone(), rec.id.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
