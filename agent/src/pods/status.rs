//! Pod status, computed from what the runtime reports (pure functions), and the on-disk status
//! store that `bosun pods` reads.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bosun_runtime::{ContainerState, ExitInfo};
use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as KStatus, Pod, PodCondition, PodStatus,
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

/// The Kubernetes ContainerStatus of one container.
pub fn container_status(v: &ContainerView) -> KStatus {
    let mut s = KStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        restart_count: v.restart_count as i32,
        ready: v.ready,
        started: Some(false),
        ..Default::default()
    };
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
                reason: wait::CONTAINER_CREATING,
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
                    s.state = Some(waiting(wait::CONTAINER_CREATING, ""));
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

/// The pod phase, as the kubelet's getPhase computes it.
pub fn phase(
    pod: &Pod,
    init_pending: bool,
    init_failed: bool,
    containers: &[KStatus],
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
pub const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
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

/// Builds the pod status. `previous` keeps transition times of conditions that did not change.
#[allow(clippy::too_many_arguments)]
pub fn pod_status(
    pod: &Pod,
    previous: Option<&PodStatus>,
    sandbox_ready: bool,
    init: &[ContainerView],
    init_done: bool,
    init_failed: bool,
    containers: &[ContainerView],
    start_time: SystemTime,
    now: SystemTime,
    qos: &str,
) -> PodStatus {
    let init_statuses: Vec<KStatus> = init.iter().map(container_status).collect();
    let statuses: Vec<KStatus> = containers.iter().map(container_status).collect();
    let phase = phase(pod, !init_done, init_failed, &statuses);
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let mut conditions = Vec::new();
    let mut cond = |ty: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let old = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ty));
        let last_transition_time = match old {
            Some(o) if o.status == status => o.last_transition_time.clone(),
            _ => Some(time(now)),
        };
        conditions.push(PodCondition {
            type_: ty.to_string(),
            status: status.to_string(),
            reason: reason.filter(|_| !ok).map(str::to_string),
            message: message.filter(|_| !ok),
            last_transition_time,
            ..Default::default()
        });
    };
    cond(
        "PodReadyToStartContainers",
        sandbox_ready && !terminal,
        None,
        None,
    );
    cond(
        "Initialized",
        init_done,
        (!init_done).then_some(condition::CONTAINERS_NOT_INITIALIZED),
        None,
    );
    let containers_ready = all_ready && !terminal;
    let (ready_reason, ready_message) = if terminal {
        (condition::POD_COMPLETED, None)
    } else {
        let unready: Vec<&str> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.as_str())
            .collect();
        (
            condition::CONTAINERS_NOT_READY,
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let gates = readiness_gates_message(pod);
    match (&gates, containers_ready) {
        (Some(msg), true) => cond(
            "Ready",
            false,
            Some(condition::READINESS_GATES_NOT_READY),
            Some(msg.clone()),
        ),
        _ => cond(
            "Ready",
            containers_ready,
            Some(ready_reason),
            ready_message.clone(),
        ),
    }
    cond(
        "ContainersReady",
        containers_ready,
        Some(ready_reason),
        ready_message,
    );
    cond("PodScheduled", true, None, None);
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
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        start_time: Some(time(start_time)),
        qos_class: Some(qos.to_string()),
        host_ip: previous.and_then(|p| p.host_ip.clone()),
        pod_ip: previous.and_then(|p| p.pod_ip.clone()),
        ..Default::default()
    }
}

/// The status of a pod admission refused (the kubelet's `rejectPod`): phase `Failed`, the
/// reason, `Pod was rejected: <message>`, the QoS class and the start time (kept from the
/// previous status, as the kubelet's status manager keeps it); no conditions, no containers.
pub fn rejected(
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
        let st = rejected(
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
            rejected(
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
                &st(view("a", Some(run), None))
            ),
            "Running"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                false,
                false,
                &st(view("a", Some(exited(0, false)), None))
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                false,
                false,
                &st(view("a", Some(exited(2, false)), None))
            ),
            "Failed"
        );
        assert_eq!(
            phase(
                &pod("OnFailure"),
                false,
                false,
                &st(view("a", Some(exited(2, false)), Some("CrashLoopBackOff")))
            ),
            "Running"
        );
        assert_eq!(
            phase(&pod("Always"), false, false, &st(view("a", None, None))),
            "Pending"
        );
        assert_eq!(phase(&pod("Always"), true, false, &[]), "Pending");
        assert_eq!(phase(&pod("Never"), true, true, &[]), "Failed");
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
        pod_status(
            pod,
            None,
            true,
            &[],
            true,
            false,
            &[v],
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
            "BestEffort",
        )
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
}
