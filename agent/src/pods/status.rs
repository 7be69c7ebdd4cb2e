//! Pod status, computed from what the runtime reports (pure functions), and the on-disk status
//! store that `bosun pods` reads.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bosun_runtime::{ContainerState, ExitInfo};
use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as KStatus, Pod, PodCondition, PodStatus,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::reasons::{condition, terminated as term, waiting as wait};
use crate::translate::RestartPolicy;

/// The prefix of containerID in status, like `containerd://`.
pub const ID_SCHEME: &str = "bosun://";

/// One attempt of a container as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub image: String,
    pub image_id: String,
    /// Termination message read after exit.
    pub message: Option<String>,
    /// The signal that stops it first (the image's STOPSIGNAL or SIGTERM).
    pub stop_signal: i32,
    /// The limits its cgroup has, as the runtime reports them.
    pub resources: bosun_runtime::Resources,
}

/// Why a container is not running, as its status says (`state.waiting`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// One of [`crate::reasons::waiting`].
    pub reason: &'static str,
    pub message: String,
}

/// Everything the worker knows of one container of the pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The newest attempt.
    pub current: Option<Record>,
    /// The attempt before it (for lastState).
    pub previous: Option<Record>,
    pub restart_count: u32,
    /// Why the container is not running (`CrashLoopBackOff`, `ErrImagePull`, ...).
    pub waiting: Option<Waiting>,
    pub ready: bool,
    /// Running and past its startup probe (if any).
    pub started: bool,
    /// A resizable container's allocated resources (`allocatedResources`, and with what its
    /// cgroup has, `resources`).
    pub allocated: Option<ResourceRequirements>,
}

pub fn time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Time(
        k8s_openapi::jiff::Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Kubernetes' reason for a terminated container.
pub fn exit_reason(info: &ExitInfo) -> &'static str {
    if info.start_error.is_some() {
        term::START_ERROR
    } else if info.oom_killed {
        term::OOM_KILLED
    } else if info.code == 0 {
        term::COMPLETED
    } else {
        term::ERROR
    }
}

fn terminated(rec: &Record) -> ContainerStateTerminated {
    match &rec.state {
        ContainerState::Exited(info) => ContainerStateTerminated {
            exit_code: info.code,
            signal: info.signal,
            reason: Some(exit_reason(info).to_string()),
            message: info.start_error.clone().or_else(|| rec.message.clone()),
            started_at: info.started_at.map(time),
            finished_at: Some(time(info.finished_at)),
            container_id: Some(format!("{ID_SCHEME}{}", rec.id)),
        },
        ContainerState::Unknown { reason } => ContainerStateTerminated {
            exit_code: 137,
            reason: Some(term::CONTAINER_STATUS_UNKNOWN.into()),
            message: Some(reason.clone()),
            container_id: Some(format!("{ID_SCHEME}{}", rec.id)),
            ..Default::default()
        },
        _ => ContainerStateTerminated::default(),
    }
}

fn is_terminal(state: &ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Exited(_) | ContainerState::Unknown { .. }
    )
}

/// The Kubernetes ContainerStatus of one container, waiting as `ContainerCreating` before it
/// exists.
pub fn container_status(v: &ContainerView) -> KStatus {
    container_status_in(v, wait::CONTAINER_CREATING)
}

/// The waiting reason of a container that does not run yet and has no reason of its own: the
/// kubelet's default, `PodInitializing` in a pod with init containers.
pub fn default_waiting(pod: &Pod) -> &'static str {
    let has_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| !i.is_empty());
    if has_init {
        wait::POD_INITIALIZING
    } else {
        wait::CONTAINER_CREATING
    }
}

/// The ContainerStatus of one container, waiting with `default_reason` while it does not run
/// and has no reason of its own.
fn container_status_in(v: &ContainerView, default_reason: &'static str) -> KStatus {
    let mut s = KStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        restart_count: v.restart_count as i32,
        ready: v.ready,
        started: Some(false),
        ..Default::default()
    };
    if let Some(a) = &v.allocated {
        s.allocated_resources = a.requests.clone();
        // The kubelet's `convertContainerStatusResources`: a running container reports what
        // its cgroup has; one that exists and does not run (a completed init container), its
        // allocation.
        s.resources = match v.current.as_ref() {
            Some(rec) if matches!(rec.state, ContainerState::Running { .. }) => {
                Some(crate::pods::resize::reported(&rec.resources, a))
            }
            Some(_) => Some(a.clone()),
            None => None,
        };
    }
    let waiting = |reason: &str, message: &str| KState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    };
    match &v.current {
        None => {
            let w = v.waiting.clone().unwrap_or(Waiting {
                reason: default_reason,
                message: String::new(),
            });
            s.state = Some(waiting(w.reason, &w.message));
        }
        Some(rec) => {
            s.container_id = Some(format!("{ID_SCHEME}{}", rec.id));
            s.image_id = rec.image_id.clone();
            match &rec.state {
                ContainerState::Running { started_at, .. } => {
                    s.state = Some(KState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(time(*started_at)),
                        }),
                        ..Default::default()
                    });
                    s.started = Some(v.started);
                    if let Some(prev) = &v.previous {
                        s.last_state = Some(KState {
                            terminated: Some(terminated(prev)),
                            ..Default::default()
                        });
                    }
                }
                ContainerState::Created => {
                    s.state = Some(waiting(default_reason, ""));
                }
                state if is_terminal(state) => match &v.waiting {
                    // Exited and about to be restarted: waiting, with the exit as lastState.
                    Some(w) => {
                        s.state = Some(waiting(w.reason, &w.message));
                        s.last_state = Some(KState {
                            terminated: Some(terminated(rec)),
                            ..Default::default()
                        });
                    }
                    None => {
                        s.state = Some(KState {
                            terminated: Some(terminated(rec)),
                            ..Default::default()
                        });
                        if let Some(prev) = &v.previous {
                            s.last_state = Some(KState {
                                terminated: Some(terminated(prev)),
                                ..Default::default()
                            });
                        }
                    }
                },
                _ => {}
            }
        }
    }
    s
}

/// The ContainerStatus of an init container: one that completed (exit 0, not a sidecar) is
/// ready, as the kubelet's prober manager marks it.
pub fn init_container_status(
    v: &ContainerView,
    sidecar: bool,
    default_reason: &'static str,
) -> KStatus {
    let mut s = container_status_in(v, default_reason);
    if !sidecar {
        let completed = s
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        s.ready = completed;
    }
    s
}

/// The pod phase, as the kubelet's getPhase computes it. `terminal`: the node ended the pod (its
/// containers were stopped for good, the kubelet's `podIsTerminal`): once every container has
/// stopped, the phase is Succeeded or Failed whatever the restart policy (not for static pods).
pub fn phase(
    pod: &Pod,
    init_pending: bool,
    init_failed: bool,
    containers: &[KStatus],
    terminal: bool,
) -> &'static str {
    let policy = RestartPolicy::of_pod(pod);
    if init_failed && policy == RestartPolicy::Never {
        return "Failed";
    }
    if init_pending {
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for c in containers {
        let st = c.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            if t.reason.as_deref() == Some(term::CONTAINER_STATUS_UNKNOWN) {
                unknown += 1;
            } else {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
        } else if st.waiting.is_some() {
            match c.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            }
        } else {
            unknown += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal && crate::pods::from_api(pod) {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if policy == RestartPolicy::Always {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == RestartPolicy::Never {
            return "Failed";
        }
        return "Running";
    }
    if unknown > 0 && running == 0 && stopped + waiting == 0 {
        return "Failed";
    }
    "Pending"
}

/// The pod conditions the kubelet owns; every other type belongs to other writers and is kept.
pub const KUBELET_CONDITIONS: [&str; 7] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
    condition::POD_RESIZE_PENDING,
    condition::POD_RESIZE_IN_PROGRESS,
];

/// Whether bosun (as the kubelet) owns a pod condition of this type.
pub fn is_kubelet_condition(ty: &str) -> bool {
    KUBELET_CONDITIONS.contains(&ty)
}

/// The conditions of the pod's status as the API holds it (set by controllers).
fn api_conditions(pod: &Pod) -> &[PodCondition] {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// Why the pod's readiness gates hold Ready back (`None`: every gate's condition is True), in
/// the kubelet's words (GeneratePodReadyCondition).
pub fn readiness_gates_message(pod: &Pod) -> Option<String> {
    let gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())?;
    let conditions = api_conditions(pod);
    let unready: Vec<String> = gates
        .iter()
        .filter_map(|g| {
            let ty = &g.condition_type;
            match conditions.iter().find(|c| &c.type_ == ty) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {ty:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {ty:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    (!unready.is_empty()).then(|| unready.join(", "))
}

/// How the node ended a pod (the kubelet's `podIsTerminal`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its containers were stopped for good (a deletion): once they have all stopped the phase
    /// is Succeeded when every one exited 0, else Failed.
    Stopped,
    /// The node failed it (activeDeadlineSeconds): phase Failed with this reason and message.
    Failed { reason: String, message: String },
}

/// What the pod status is built from.
pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    /// The status written last (keeps the transition times of conditions that did not change).
    pub previous: Option<&'a PodStatus>,
    pub sandbox_ready: bool,
    /// The init containers, in spec order.
    pub init: &'a [ContainerView],
    /// Every init container completed (sidecars running), as the plan decided.
    pub init_done: bool,
    /// An init container failed for good.
    pub init_failed: bool,
    /// The regular containers, in spec order.
    pub containers: &'a [ContainerView],
    pub start_time: SystemTime,
    pub now: SystemTime,
    pub qos: &'a str,
    /// The node ended the pod.
    pub ended: Option<&'a Ended>,
    /// The resize conditions (`PodResizePending`, `PodResizeInProgress`), as
    /// [`crate::pods::resize::conditions`] makes them.
    pub resize: Vec<PodCondition>,
}

/// One pod condition the kubelet owns, before its transition time is known.
#[derive(Clone)]
struct Cond {
    ty: &'static str,
    ok: bool,
    reason: Option<&'static str>,
    message: Option<String>,
}

impl Cond {
    fn new(ty: &'static str, ok: bool) -> Cond {
        Cond {
            ty,
            ok,
            reason: None,
            message: None,
        }
    }

    fn because(mut self, reason: &'static str, message: Option<String>) -> Cond {
        self.reason = Some(reason);
        self.message = message;
        self
    }
}

/// Names as the kubelet's messages list them (Go's `%s` of a string slice: `[a b]`).
fn listed(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// The `Initialized` condition, as the kubelet's GeneratePodInitializedCondition: true once a
/// regular container has started; else false while a regular init container has not completed
/// or a sidecar has not started, naming them.
fn initialized_condition(pod: &Pod, init: &[KStatus], containers: &[KStatus], phase: &str) -> Cond {
    let ty = "Initialized";
    if phase == "Succeeded" {
        return Cond::new(ty, true).because(condition::POD_COMPLETED, None);
    }
    let started = |s: &KStatus| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    };
    if containers.iter().any(started) {
        return Cond::new(ty, true);
    }
    let specs = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    let incomplete: Vec<&str> = specs
        .filter_map(|c| {
            let s = init.iter().find(|s| s.name == c.name)?;
            let done = if crate::translate::is_sidecar(c) {
                s.started == Some(true)
            } else {
                s.ready
            };
            (!done).then_some(c.name.as_str())
        })
        .collect();
    if incomplete.is_empty() {
        return Cond::new(ty, true);
    }
    Cond::new(ty, false).because(
        condition::CONTAINERS_NOT_INITIALIZED,
        Some(format!(
            "containers with incomplete status: {}",
            listed(&incomplete)
        )),
    )
}

/// The `ContainersReady` condition, as the kubelet's GenerateContainersReadyCondition: every
/// sidecar and regular container ready; false with PodCompleted or PodFailed once the pod ended.
fn containers_ready_condition(
    pod: &Pod,
    init: &[KStatus],
    containers: &[KStatus],
    phase: &str,
) -> Cond {
    let ty = "ContainersReady";
    match phase {
        "Succeeded" => return Cond::new(ty, false).because(condition::POD_COMPLETED, None),
        "Failed" => return Cond::new(ty, false).because(condition::POD_FAILED, None),
        _ => {}
    }
    let sidecars = crate::pods::worker::plan::sidecars(pod);
    let unready: Vec<&str> = init
        .iter()
        .filter(|s| sidecars.iter().any(|c| c.name == s.name))
        .chain(containers)
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    if unready.is_empty() {
        return Cond::new(ty, true);
    }
    Cond::new(ty, false).because(
        condition::CONTAINERS_NOT_READY,
        Some(format!(
            "containers with unready status: {}",
            listed(&unready)
        )),
    )
}

/// Builds the pod status from what the worker sees, as the kubelet's generateAPIPodStatus.
pub fn pod_status(input: &StatusInput) -> PodStatus {
    let pod = input.pod;
    let default_reason = default_waiting(pod);
    let init_statuses: Vec<KStatus> = input
        .init
        .iter()
        .map(|v| {
            let sidecar = pod
                .spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .any(|c| c.name == v.name && crate::translate::is_sidecar(c));
            init_container_status(v, sidecar, default_reason)
        })
        .collect();
    let statuses: Vec<KStatus> = input
        .containers
        .iter()
        .map(|v| container_status_in(v, default_reason))
        .collect();
    let (mut phase, mut reason, mut message) = (
        phase(
            pod,
            !input.init_done,
            input.init_failed,
            &statuses,
            input.ended.is_some(),
        ),
        None,
        None,
    );
    if let Some(Ended::Failed {
        reason: r,
        message: m,
    }) = input.ended
    {
        phase = "Failed";
        reason = Some(r.clone());
        message = Some(m.clone());
    } else if let Some(prev) = input.previous.filter(|p| p.phase.as_deref() == Some(phase)) {
        // The same phase keeps its reason and message.
        reason = prev.reason.clone();
        message = prev.message.clone();
    }
    let terminal = phase == "Succeeded" || phase == "Failed";
    let containers_ready = containers_ready_condition(pod, &init_statuses, &statuses, phase);
    let ready = if !containers_ready.ok {
        Cond {
            ty: "Ready",
            ..containers_ready.clone()
        }
    } else {
        match readiness_gates_message(pod) {
            Some(msg) => {
                Cond::new("Ready", false).because(condition::READINESS_GATES_NOT_READY, Some(msg))
            }
            None => Cond::new("Ready", true),
        }
    };
    let conds = [
        Cond::new(
            "PodReadyToStartContainers",
            input.sandbox_ready && !terminal,
        ),
        initialized_condition(pod, &init_statuses, &statuses, phase),
        ready,
        containers_ready,
        Cond::new("PodScheduled", true),
    ];
    let mut conditions: Vec<PodCondition> = conds
        .into_iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" };
            let old = input
                .previous
                .and_then(|p| p.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|o| o.type_ == c.ty));
            let last_transition_time = match old {
                Some(o) if o.status == status => o.last_transition_time.clone(),
                _ => Some(time(input.now)),
            };
            PodCondition {
                type_: c.ty.to_string(),
                status: status.to_string(),
                reason: c.reason.map(str::to_string),
                message: c.message,
                last_transition_time,
                ..Default::default()
            }
        })
        .collect();
    if !terminal {
        conditions.extend(input.resize.iter().cloned());
    }
    // Conditions set by others (readiness gates, DisruptionTarget, ...) are kept as the API
    // has them, as the kubelet's mergePodStatus does.
    conditions.extend(
        api_conditions(pod)
            .iter()
            .filter(|c| !is_kubelet_condition(&c.type_))
            .cloned(),
    );
    PodStatus {
        phase: Some(phase.to_string()),
        reason,
        message,
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        start_time: Some(time(input.start_time)),
        qos_class: Some(input.qos.to_string()),
        host_ip: input.previous.and_then(|p| p.host_ip.clone()),
        pod_ip: input.previous.and_then(|p| p.pod_ip.clone()),
        ..Default::default()
    }
}

/// The status of a pod the node's admission refused, as the kubelet's `rejectPod` writes it:
/// phase `Failed`, the reason, `Pod was rejected: <message>`, the QoS class and the start time
/// (kept from the previous status, as the kubelet's status manager keeps it); the conditions
/// others own stay, nothing of the kubelet's, no containers: nothing of it ran.
pub fn rejected_status(
    pod: &Pod,
    previous: Option<&PodStatus>,
    reason: &str,
    message: &str,
    start_time: SystemTime,
    qos: &str,
) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some(reason.to_string()),
        message: Some(format!("Pod was rejected: {message}")),
        qos_class: Some(qos.to_string()),
        start_time: previous
            .and_then(|p| p.start_time.clone())
            .or_else(|| Some(time(start_time))),
        conditions: Some(
            api_conditions(pod)
                .iter()
                .filter(|c| !is_kubelet_condition(&c.type_))
                .cloned()
                .collect::<Vec<_>>(),
        )
        .filter(|c| !c.is_empty()),
        ..Default::default()
    }
}

/// The pod's desired spec in its state folder (what an agent restart terminates it with when
/// its source is gone).
pub const POD_FILE: &str = "pod.json";
/// The pod with its last status, in its state folder (what `bosun pods` reads).
pub const STATUS_FILE: &str = "status.json";
/// When this node first synced the pod (seconds since the epoch): `status.startTime`.
pub const START_TIME_FILE: &str = "start-time";

/// Where the agent keeps each pod's desired spec and last status: `<run_dir>/pods/<uid>/`.
pub fn pod_state_dir(run_dir: &Path, uid: &str) -> PathBuf {
    run_dir.join("pods").join(uid)
}

/// Writes `<dir>/<name>` atomically (the folder made first).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // The run folder describes this boot only: no fsync.
    bosun_fsutil::write_atomic(&dir.join(name), bytes, bosun_fsutil::Durability::Volatile)
}

/// Reads every pod status file (for `bosun pods`).
pub fn read_all(run_dir: &Path) -> Vec<Pod> {
    let mut pods = Vec::new();
    let Ok(entries) = std::fs::read_dir(run_dir.join("pods")) else {
        return pods;
    };
    for e in entries.flatten() {
        if let Ok(text) = std::fs::read(e.path().join(STATUS_FILE)) {
            if let Ok(pod) = serde_json::from_slice::<Pod>(&text) {
                pods.push(pod);
            }
        }
    }
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn exited(code: i32, oom: bool) -> ContainerState {
        ContainerState::Exited(ExitInfo {
            code,
            signal: None,
            oom_killed: oom,
            started_at: Some(SystemTime::UNIX_EPOCH),
            finished_at: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
            start_error: None,
        })
    }

    fn view(
        name: &str,
        state: Option<ContainerState>,
        waiting: Option<&'static str>,
    ) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "busybox".into(),
            current: state.map(|state| Record {
                id: format!("id-{name}"),
                attempt: 0,
                state,
                image: "busybox".into(),
                image_id: "sha256:x".into(),
                message: None,
                stop_signal: 15,
                resources: Default::default(),
            }),
            waiting: waiting.map(|reason| Waiting {
                reason,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a"}]}
        }))
        .expect("pod")
    }

    #[test]
    fn a_rejected_pod_fails_with_the_reason_and_nothing_else() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let st = rejected_status(
            &Pod::default(),
            None,
            "SysctlForbidden",
            "forbidden sysctl: x",
            at,
            "BestEffort",
        );
        assert_eq!(
            serde_json::to_value(&st).expect("json"),
            serde_json::json!({
                "phase": "Failed",
                "reason": "SysctlForbidden",
                "message": "Pod was rejected: forbidden sysctl: x",
                "qosClass": "BestEffort",
                "startTime": "1970-01-12T13:46:40Z",
            })
        );
        // The start time of an earlier status stays.
        let later = at + Duration::from_secs(60);
        assert_eq!(
            rejected_status(
                &Pod::default(),
                Some(&st),
                "SysctlForbidden",
                "forbidden sysctl: x",
                later,
                "BestEffort"
            ),
            st
        );
    }

    #[test]
    fn resources_are_reported_by_a_container_that_exists() {
        let allocated: ResourceRequirements = serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "200m", "memory": "64Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"}
        }))
        .expect("resources");
        let with = |state: Option<ContainerState>| {
            let mut v = view("i", state, None);
            v.allocated = Some(allocated.clone());
            if let Some(r) = v.current.as_mut() {
                // Its cgroup has more CPU than allocated (a resize not done yet).
                r.resources = bosun_runtime::Resources {
                    cpu_shares: Some(307),
                    cpu_quota: Some(30_000),
                    cpu_period: Some(100_000),
                    memory_limit: Some(64 << 20),
                    pids_limit: None,
                };
            }
            container_status(&v)
        };
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        use std::collections::BTreeMap;
        let q = |l: &Option<BTreeMap<String, Quantity>>, k: &str| {
            l.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
        };
        // Running: what its cgroup has.
        let s = with(Some(ContainerState::Running {
            pid: 1,
            started_at: SystemTime::UNIX_EPOCH,
        }));
        let r = s.resources.expect("running: resources");
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("300m"));
        assert_eq!(q(&s.allocated_resources, "cpu").as_deref(), Some("200m"));
        // Completed (an init container): its allocation.
        let s = with(Some(exited(0, false)));
        assert_eq!(s.resources, Some(allocated.clone()));
        assert_eq!(q(&s.allocated_resources, "memory").as_deref(), Some("64Mi"));
        // Not created yet: nothing reported.
        let s = with(None);
        assert_eq!(s.resources, None);
    }

    #[test]
    fn reasons_and_states() {
        let s = container_status(&view("a", Some(exited(137, true)), None));
        let t = s.state.and_then(|s| s.terminated).expect("terminated");
        assert_eq!(t.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(t.exit_code, 137);
        let s = container_status(&view("a", Some(exited(1, false)), Some("CrashLoopBackOff")));
        assert_eq!(
            s.state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = s.last_state.and_then(|l| l.terminated).expect("last");
        assert_eq!(last.reason.as_deref(), Some("Error"));
        let s = container_status(&view("a", None, Some("ErrImagePull")));
        assert_eq!(
            s.state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref(),
            Some("ErrImagePull")
        );
    }

    #[test]
    fn phases() {
        let run = ContainerState::Running {
            pid: 1,
            started_at: SystemTime::UNIX_EPOCH,
        };
        let st = |v: ContainerView| vec![container_status(&v)];
        assert_eq!(
            phase(
                &pod("Always"),
                false,
                false,
                &st(view("a", Some(run.clone()), None)),
                false
            ),
            "Running"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                false,
                false,
                &st(view("a", Some(exited(0, false)), None)),
                false
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                false,
                false,
                &st(view("a", Some(exited(2, false)), None)),
                false
            ),
            "Failed"
        );
        assert_eq!(
            phase(
                &pod("OnFailure"),
                false,
                false,
                &st(view("a", Some(exited(2, false)), Some("CrashLoopBackOff"))),
                false
            ),
            "Running"
        );
        assert_eq!(
            phase(
                &pod("Always"),
                false,
                false,
                &st(view("a", None, None)),
                false
            ),
            "Pending"
        );
        assert_eq!(phase(&pod("Always"), true, false, &[], false), "Pending");
        assert_eq!(phase(&pod("Never"), true, true, &[], false), "Failed");
        // A pod the node ended (deleted): stopped containers end it whatever the policy.
        let stopped = |code| st(view("a", Some(exited(code, false)), None));
        assert_eq!(
            phase(&pod("Always"), false, false, &stopped(0), false),
            "Running"
        );
        assert_eq!(
            phase(&pod("Always"), false, false, &stopped(0), true),
            "Succeeded"
        );
        assert_eq!(
            phase(&pod("Always"), false, false, &stopped(143), true),
            "Failed"
        );
        // Still stopping: not yet.
        assert_eq!(
            phase(
                &pod("Always"),
                false,
                false,
                &st(view("a", Some(run), None)),
                true
            ),
            "Running"
        );
    }

    fn ready_cond(st: &PodStatus, ty: &str) -> PodCondition {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == ty)
            .cloned()
            .expect("condition")
    }

    fn gated_pod(conditions: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "a"}],
                "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]
            },
            "status": {"conditions": conditions}
        }))
        .expect("pod")
    }

    fn status_of(pod: &Pod, ready: bool) -> PodStatus {
        let mut v = view(
            "a",
            Some(ContainerState::Running {
                pid: 1,
                started_at: SystemTime::UNIX_EPOCH,
            }),
            None,
        );
        v.ready = ready;
        v.started = true;
        pod_status(&StatusInput {
            pod,
            previous: None,
            sandbox_ready: true,
            init: &[],
            init_done: true,
            init_failed: false,
            containers: &[v],
            start_time: SystemTime::UNIX_EPOCH,
            now: SystemTime::UNIX_EPOCH,
            qos: "BestEffort",
            ended: None,
            resize: Vec::new(),
        })
    }

    #[test]
    fn readiness_gates() {
        // No gate conditions yet: Ready is False with the kubelet's reason and message.
        let pod = gated_pod(serde_json::json!([{"type": "PodScheduled", "status": "True"}]));
        let st = status_of(&pod, true);
        assert_eq!(ready_cond(&st, "ContainersReady").status, "True");
        let r = ready_cond(&st, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist., corresponding condition of pod readiness gate \"example.com/dns\" does not exist."
            )
        );
        // One gate False, one True.
        let pod = gated_pod(serde_json::json!([
            {"type": "example.com/lb", "status": "False"},
            {"type": "example.com/dns", "status": "True"}
        ]));
        let r = ready_cond(&status_of(&pod, true), "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(
            r.message.as_deref(),
            Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False")
        );
        // Every gate True: Ready follows ContainersReady, and the gates' conditions are kept.
        let pod = gated_pod(serde_json::json!([
            {"type": "example.com/lb", "status": "True", "reason": "Registered"},
            {"type": "example.com/dns", "status": "True"},
            {"type": "Ready", "status": "False"}
        ]));
        let st = status_of(&pod, true);
        assert_eq!(ready_cond(&st, "Ready").status, "True");
        assert_eq!(
            ready_cond(&st, "example.com/lb").reason.as_deref(),
            Some("Registered")
        );
        assert_eq!(ready_cond(&st, "example.com/dns").status, "True");
        let readies = st
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.type_ == "Ready")
            .count();
        assert_eq!(readies, 1, "the API's own Ready is replaced, not kept");
        // Containers not ready: the containers' reason wins over the gates'.
        let r = ready_cond(&status_of(&pod, false), "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("containers with unready status: [a]")
        );
        // Without gates nothing changes.
        let st = status_of(&self::pod("Always"), true);
        assert_eq!(ready_cond(&st, "Ready").status, "True");
        assert_eq!(st.conditions.as_ref().map(Vec::len), Some(5));
    }

    fn init_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [{"name": "init1"}, {"name": "init2"}],
                "containers": [{"name": "run1"}]
            }
        }))
        .expect("pod")
    }

    fn input<'a>(
        pod: &'a Pod,
        init: &'a [ContainerView],
        init_done: bool,
        containers: &'a [ContainerView],
        ended: Option<&'a Ended>,
    ) -> StatusInput<'a> {
        StatusInput {
            pod,
            previous: None,
            sandbox_ready: true,
            init,
            init_done,
            init_failed: false,
            containers,
            start_time: SystemTime::UNIX_EPOCH,
            now: SystemTime::UNIX_EPOCH,
            qos: "BestEffort",
            ended,
            resize: Vec::new(),
        }
    }

    fn reason_of(s: &KStatus) -> Option<&str> {
        s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
    }

    #[test]
    fn init_containers_as_the_kubelet_reports_them() {
        let pod = init_pod();
        let run = ContainerState::Running {
            pid: 1,
            started_at: SystemTime::UNIX_EPOCH,
        };
        // The first init container runs: everything else waits with PodInitializing.
        let init = [
            view("init1", Some(run.clone()), None),
            view("init2", None, None),
        ];
        let regular = [view("run1", None, None)];
        let st = pod_status(&input(&pod, &init, false, &regular, None));
        let inits = st.init_container_statuses.clone().expect("init statuses");
        assert!(!inits[0].ready);
        assert_eq!(reason_of(&inits[1]), Some("PodInitializing"));
        let cs = st.container_statuses.clone().expect("statuses");
        assert_eq!(reason_of(&cs[0]), Some("PodInitializing"));
        let c = ready_cond(&st, "Initialized");
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(
            c.message.as_deref(),
            Some("containers with incomplete status: [init1 init2]")
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        // init1 completed: it is ready, and only init2 is incomplete.
        let init = [
            view("init1", Some(exited(0, false)), None),
            view("init2", Some(run.clone()), None),
        ];
        let st = pod_status(&input(&pod, &init, false, &regular, None));
        let inits = st.init_container_statuses.clone().expect("init statuses");
        assert!(inits[0].ready, "a completed init container is ready");
        assert!(!inits[1].ready);
        assert_eq!(
            ready_cond(&st, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [init2]")
        );
        // A failed init container is not ready and stays incomplete.
        let init = [
            view("init1", Some(exited(1, false)), None),
            view("init2", None, None),
        ];
        let st = pod_status(&input(&pod, &init, false, &regular, None));
        assert!(!st.init_container_statuses.expect("init")[0].ready);
        // Both done, the regular container runs: Initialized, no message.
        let init = [
            view("init1", Some(exited(0, false)), None),
            view("init2", Some(exited(0, false)), None),
        ];
        let regular = [view("run1", Some(run), None)];
        let st = pod_status(&input(&pod, &init, true, &regular, None));
        let c = ready_cond(&st, "Initialized");
        assert_eq!(
            (c.status.as_str(), c.reason, c.message),
            ("True", None, None)
        );
        // A pod without init containers waits with ContainerCreating.
        let plain = self::pod("Always");
        let st = pod_status(&input(&plain, &[], true, &[view("a", None, None)], None));
        assert_eq!(
            reason_of(&st.container_statuses.expect("statuses")[0]),
            Some("ContainerCreating")
        );
    }

    #[test]
    fn sidecars_count_for_readiness_and_start_for_initialization() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "side", "restartPolicy": "Always"}],
                "containers": [{"name": "main"}]
            }
        }))
        .expect("pod");
        let running = |name: &str, ready: bool, started: bool| {
            let mut v = view(
                name,
                Some(ContainerState::Running {
                    pid: 1,
                    started_at: SystemTime::UNIX_EPOCH,
                }),
                None,
            );
            v.ready = ready;
            v.started = started;
            v
        };
        // The sidecar runs and has started, its readiness probe has not passed yet.
        let init = [running("side", false, true)];
        let regular = [running("main", true, true)];
        let st = pod_status(&input(&pod, &init, true, &regular, None));
        assert_eq!(ready_cond(&st, "Initialized").status, "True");
        for ty in ["ContainersReady", "Ready"] {
            let c = ready_cond(&st, ty);
            assert_eq!(c.status, "False", "{ty}");
            assert_eq!(
                c.message.as_deref(),
                Some("containers with unready status: [side]")
            );
        }
        assert!(!st.init_container_statuses.expect("init")[0].ready);
        // Its probe passed: the pod is ready.
        let init = [running("side", true, true)];
        let st = pod_status(&input(&pod, &init, true, &regular, None));
        assert_eq!(ready_cond(&st, "Ready").status, "True");
        assert!(st.init_container_statuses.expect("init")[0].ready);
        // Not started yet (its startup probe): the pod is not initialized.
        let init = [running("side", false, false)];
        let st = pod_status(&input(
            &pod,
            &init,
            false,
            &[view("main", None, None)],
            None,
        ));
        assert_eq!(
            ready_cond(&st, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [side]")
        );
    }

    #[test]
    fn ended_pods_say_why() {
        let pod = self::pod("Always");
        let regular = [view("a", Some(exited(143, false)), None)];
        // Deleted and stopped: Failed (a container did not exit 0), conditions say PodFailed.
        let st = pod_status(&input(&pod, &[], true, &regular, Some(&Ended::Stopped)));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason, None);
        for ty in ["Ready", "ContainersReady"] {
            let c = ready_cond(&st, ty);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref()),
                ("False", Some("PodFailed"))
            );
        }
        let t = st.container_statuses.expect("statuses")[0]
            .state
            .clone()
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(t.exit_code, 143);
        let ok = [view("a", Some(exited(0, false)), None)];
        let st = pod_status(&input(&pod, &[], true, &ok, Some(&Ended::Stopped)));
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        assert_eq!(
            ready_cond(&st, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
        assert_eq!(
            ready_cond(&st, "Initialized").reason.as_deref(),
            Some("PodCompleted")
        );
        // Failed by the node (activeDeadlineSeconds), whatever the containers did.
        let deadline = Ended::Failed {
            reason: "DeadlineExceeded".into(),
            message: "Pod was active on the node longer than the specified deadline".into(),
        };
        let st = pod_status(&input(&pod, &[], true, &ok, Some(&deadline)));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(
            st.message.as_deref(),
            Some("Pod was active on the node longer than the specified deadline")
        );
        // Rejected by admission: nothing ran.
        let st = rejected_status(
            &pod,
            None,
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
            SystemTime::UNIX_EPOCH,
            "BestEffort",
        );
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("PodOSNotSupported"));
        assert_eq!(
            st.message.as_deref(),
            Some("Pod was rejected: Failed to admit pod as the OS field doesn't match node OS")
        );
        assert!(st.container_statuses.is_none());
    }
}
