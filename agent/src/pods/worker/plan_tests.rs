//! Table tests of [`plan`]: what a worker does for each state of a pod's containers.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bosun_runtime::{ContainerState, ExitInfo};
use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::pods::backoff::Backoff;
use crate::pods::probing::{ProbeKind, ProbeState};
use crate::pods::status::{Record, Waiting};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn pod(yaml: &str) -> Pod {
    let base = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: ns, uid: u1}\n";
    serde_yaml::from_str(&format!("{base}{yaml}")).expect("test pod parses")
}

/// A pod with regular containers `names` and restart policy `policy`.
fn simple(policy: &str, names: &[&str]) -> Pod {
    let cs: String = names
        .iter()
        .map(|n| format!("  - {{name: {n}, image: busybox}}\n"))
        .collect();
    pod(&format!(
        "spec:\n  restartPolicy: {policy}\n  containers:\n{cs}"
    ))
}

fn running() -> ContainerState {
    ContainerState::Running {
        pid: 42,
        started_at: t(0),
    }
}

fn exited(code: i32, at: SystemTime) -> ContainerState {
    ContainerState::Exited(ExitInfo {
        code,
        signal: None,
        oom_killed: false,
        started_at: Some(t(0)),
        finished_at: at,
        start_error: None,
    })
}

fn rec(name: &str, attempt: u32, state: ContainerState) -> Record {
    Record {
        id: format!("u1_{name}_{attempt}"),
        attempt,
        state,
        image: "busybox".into(),
        image_id: "sha256:x".into(),
        message: None,
        stop_signal: 15,
        // What a container without resources runs with.
        resources: bosun_runtime::Resources {
            cpu_shares: Some(2),
            ..Default::default()
        },
    }
}

/// Attempts from `(name, [states, oldest first])`.
fn attempts(list: &[(&str, Vec<ContainerState>)]) -> Attempts {
    list.iter()
        .map(|(name, states)| {
            let v = states
                .iter()
                .enumerate()
                .map(|(i, s)| rec(name, i as u32, s.clone()))
                .collect();
            (name.to_string(), v)
        })
        .collect()
}

fn observed(a: Attempts) -> Observed<'static> {
    Observed {
        attempts: a,
        volumes_set_up: true,
        objects_at: Some(t(0)),
        ..Default::default()
    }
}

fn run(pod: &Pod) -> Desired<'_> {
    Desired {
        pod,
        intent: Intent::Run,
        sync_frequency: Duration::from_secs(60),
        start_time: t(0),
        admission: None,
        network_error: None,
    }
}

/// The restart back-off key of container `name` with image busybox.
fn rkey(name: &str) -> String {
    restart_key(&k8s_openapi::api::core::v1::Container {
        name: name.into(),
        image: Some("busybox".into()),
        ..Default::default()
    })
}

fn names(starts: &[StartContainer]) -> Vec<(String, u32)> {
    starts.iter().map(|s| (s.name.clone(), s.attempt)).collect()
}

fn plan_at(pod: &Pod, o: &Observed, backoff: &Backoff, now: SystemTime) -> PodActions {
    plan(&run(pod), o, backoff, now)
}

#[test]
fn a_new_pod_starts_every_container() {
    let p = simple("Always", &["a", "b"]);
    let a = plan_at(&p, &observed(Attempts::new()), &Backoff::default(), t(1));
    assert_eq!(
        names(&a.containers_to_start),
        [("a".into(), 0), ("b".into(), 0)]
    );
    assert!(a.init_done && !a.init_failed);
    assert_eq!(a.kill_pod, None);
    assert_eq!(a.requeue_at, None);
    assert!(a.sidecars_to_stop.is_empty());
}

#[test]
fn restart_policies_decide_what_restarts() {
    // (policy, exit code, restarted)
    let cases = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 2, false),
    ];
    for (policy, code, restarts) in cases {
        let p = simple(policy, &["a"]);
        let o = observed(attempts(&[("a", vec![exited(code, t(10))])]));
        let a = plan_at(&p, &o, &Backoff::default(), t(11));
        let want: Vec<(String, u32)> = if restarts {
            vec![("a".into(), 1)]
        } else {
            vec![]
        };
        assert_eq!(names(&a.containers_to_start), want, "{policy} exit {code}");
        // The first restart is immediate and recorded in the back-off.
        assert_eq!(
            a.restarts,
            if restarts {
                vec![(rkey("a"), t(10))]
            } else {
                vec![]
            },
            "{policy} exit {code}"
        );
        // Done for good: no longer waiting for anything.
        let cleared = if restarts {
            vec![]
        } else {
            vec![("a".to_string(), None)]
        };
        assert_eq!(a.waiting, cleared, "{policy} exit {code}");
    }
}

#[test]
fn a_container_of_unknown_state_is_restarted_as_killed() {
    let p = simple("OnFailure", &["a"]);
    let unknown = ContainerState::Unknown {
        reason: "keeper died".into(),
    };
    let o = observed(attempts(&[("a", vec![unknown])]));
    let a = plan_at(&p, &o, &Backoff::default(), t(5));
    assert_eq!(names(&a.containers_to_start), [("a".into(), 1)]);
}

#[test]
fn crash_loops_back_off_with_one_event() {
    let p = simple("Always", &["a"]);
    let mut backoff = Backoff::default();
    // The first restart was at t(10); it crashed again at t(12).
    backoff.next(&rkey("a"), t(10), t(10));
    let o = observed(attempts(&[("a", vec![exited(1, t(5)), exited(1, t(12))])]));
    let a = plan_at(&p, &o, &backoff, t(13));
    assert!(a.containers_to_start.is_empty());
    assert_eq!(a.requeue_at, Some(t(22)), "10 s after the exit");
    let msg = "back-off 10s restarting failed container=a pod=ns/web";
    assert_eq!(
        a.waiting,
        vec![(
            "a".to_string(),
            Some(Waiting {
                reason: "CrashLoopBackOff",
                message: msg.into()
            })
        )]
    );
    assert_eq!(
        a.events,
        vec![ContainerEvent {
            container: "a".into(),
            type_: EventType::Warning,
            reason: "BackOff",
            message: msg.into(),
        }]
    );
    // Still backing off, already reported: no second event.
    let before: HashMap<String, Waiting> = a
        .waiting
        .iter()
        .cloned()
        .filter_map(|(n, w)| Some((n, w?)))
        .collect();
    let o2 = Observed {
        waiting: Some(&before),
        ..observed(attempts(&[("a", vec![exited(1, t(5)), exited(1, t(12))])]))
    };
    let a2 = plan_at(&p, &o2, &backoff, t(15));
    assert!(a2.events.is_empty());
    assert!(a2.containers_to_start.is_empty());
    // The back-off over: the next attempt, and the delay doubles.
    let a3 = plan_at(&p, &o2, &backoff, t(22));
    assert_eq!(names(&a3.containers_to_start), [("a".into(), 2)]);
    assert_eq!(a3.restarts, vec![(rkey("a"), t(12))]);
    backoff.next(&rkey("a"), t(12), t(22));
    assert_eq!(backoff.delay(&rkey("a")), Duration::from_secs(20));
}

#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let p = pod("spec:\n  initContainers:\n  - {name: i1, image: busybox}\n  - {name: i2, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n");
    // (attempts, init starts, regular starts, init done)
    type Case = (
        Vec<(&'static str, Vec<ContainerState>)>,
        Vec<(String, u32)>,
        Vec<(String, u32)>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (vec![], vec![("i1".into(), 0)], vec![], false),
        (vec![("i1", vec![running()])], vec![], vec![], false),
        (
            vec![("i1", vec![exited(0, t(1))])],
            vec![("i2".into(), 0)],
            vec![],
            false,
        ),
        // A failed init container is retried (the pod restarts: OnFailure for inits).
        (
            vec![("i1", vec![exited(3, t(1))])],
            vec![("i1".into(), 1)],
            vec![],
            false,
        ),
        (
            vec![("i1", vec![exited(0, t(1))]), ("i2", vec![exited(0, t(2))])],
            vec![],
            vec![("c".into(), 0)],
            true,
        ),
    ];
    for (i, (att, init, regular, done)) in cases.into_iter().enumerate() {
        let a = plan_at(&p, &observed(attempts(&att)), &Backoff::default(), t(3));
        assert_eq!(names(&a.init_containers_to_start), init, "case {i}");
        assert_eq!(names(&a.containers_to_start), regular, "case {i}");
        assert_eq!(a.init_done, done, "case {i}");
        assert!(!a.init_failed, "case {i}");
    }
}

#[test]
fn a_failed_init_container_fails_a_pod_that_never_restarts() {
    let p = pod("spec:\n  restartPolicy: Never\n  initContainers:\n  - {name: side, image: busybox, restartPolicy: Always}\n  - {name: i1, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n");
    let o = observed(attempts(&[
        ("side", vec![running()]),
        ("i1", vec![exited(1, t(1))]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(2));
    assert!(a.init_failed && !a.init_done);
    assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
    // The pod is finished: its sidecars stop.
    assert_eq!(a.sidecars_to_stop, ["side"]);
}

#[test]
fn sidecars_start_before_the_next_init_container_and_stop_last() {
    let p = pod("spec:\n  restartPolicy: Never\n  initContainers:\n  - {name: s1, image: busybox, restartPolicy: Always}\n  - {name: s2, image: busybox, restartPolicy: Always}\n  - {name: i, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n");
    // Nothing yet: both sidecars, and the init container behind them, start in this sync.
    let a = plan_at(&p, &observed(Attempts::new()), &Backoff::default(), t(1));
    assert_eq!(
        names(&a.init_containers_to_start),
        [("s1".into(), 0), ("s2".into(), 0), ("i".into(), 0)]
    );
    assert!(!a.init_done);
    // A sidecar being created holds the rest back.
    let o = observed(attempts(&[("s1", vec![ContainerState::Created])]));
    let a = plan_at(&p, &o, &Backoff::default(), t(1));
    assert!(a.init_containers_to_start.is_empty());
    // Sidecars running, init done: the regular container starts.
    let o = observed(attempts(&[
        ("s1", vec![running()]),
        ("s2", vec![running()]),
        ("i", vec![exited(0, t(1))]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(2));
    assert!(a.init_done);
    assert_eq!(names(&a.containers_to_start), [("c".into(), 0)]);
    assert!(a.sidecars_to_stop.is_empty());
    // A sidecar that exits is restarted whatever the pod's policy.
    let o = observed(attempts(&[
        ("s1", vec![exited(1, t(2))]),
        ("s2", vec![running()]),
        ("i", vec![exited(0, t(1))]),
        ("c", vec![running()]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(3));
    assert_eq!(names(&a.init_containers_to_start), [("s1".into(), 1)]);
    // The regular container done for good: sidecars stop, newest first.
    let o = observed(attempts(&[
        ("s1", vec![running()]),
        ("s2", vec![running()]),
        ("i", vec![exited(0, t(1))]),
        ("c", vec![exited(0, t(9))]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(10));
    assert_eq!(a.sidecars_to_stop, ["s2", "s1"]);
}

/// A sidecar with a startup probe holds back the containers after it until its startup probe
/// succeeds, while the pod initializes (the kubelet's computeInitContainerActions); the upstream
/// spec "Probing restartable init container should be ready immediately after startupProbe
/// succeeds" measures from the regular container's start.
#[test]
fn a_sidecar_with_a_startup_probe_holds_back_the_rest_until_it_has_started() {
    let p = pod("spec:\n  initContainers:\n  - {name: s, image: busybox, restartPolicy: Always, startupProbe: {exec: {command: [cat, /tmp/startup]}}}\n  - {name: i, image: busybox}\n  containers:\n  - {name: c, image: busybox}\n");
    let probed = |started: bool| {
        HashMap::from([(
            "u1_s_0".to_string(),
            ProbeState {
                started,
                ready: false,
                failed: None,
            },
        )])
    };
    // Nothing yet: the sidecar alone starts.
    let a = plan_at(&p, &observed(Attempts::new()), &Backoff::default(), t(1));
    assert_eq!(names(&a.init_containers_to_start), [("s".into(), 0)]);
    assert!(!a.init_done);
    // Running, its startup probe not run yet or not succeeded: nothing else starts.
    for probes in [HashMap::new(), probed(false)] {
        let mut o = observed(attempts(&[("s", vec![running()])]));
        o.probes = probes;
        let a = plan_at(&p, &o, &Backoff::default(), t(2));
        assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
        assert!(!a.init_done);
    }
    // Started: the init container after it starts.
    let mut o = observed(attempts(&[("s", vec![running()])]));
    o.probes = probed(true);
    let a = plan_at(&p, &o, &Backoff::default(), t(3));
    assert_eq!(names(&a.init_containers_to_start), [("i".into(), 0)]);
    // The pod initialized: a restarted sidecar whose probe has not succeeded holds back
    // nothing (the regular container is kept, the rest of the pod goes on).
    let o = observed(attempts(&[
        ("s", vec![exited(1, t(4)), running()]),
        ("i", vec![exited(0, t(3))]),
        ("c", vec![running()]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(5));
    assert!(a.init_done);
    assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
}

#[test]
fn failed_probes_stop_running_containers() {
    let p = pod("spec:\n  terminationGracePeriodSeconds: 7\n  containers:\n  - name: a\n    image: busybox\n    livenessProbe: {exec: {command: [false]}, terminationGracePeriodSeconds: 3}\n  - name: b\n    image: busybox\n    startupProbe: {exec: {command: [false]}}\n  - {name: c, image: busybox}\n");
    let a_id = "u1_a_0".to_string();
    let b_id = "u1_b_0".to_string();
    let failed = |kind| ProbeState {
        started: false,
        ready: false,
        failed: Some(kind),
    };
    let mut o = observed(attempts(&[
        ("a", vec![running()]),
        ("b", vec![running()]),
        ("c", vec![running()]),
    ]));
    o.probes = HashMap::from([
        (a_id.clone(), failed(ProbeKind::Liveness)),
        (b_id.clone(), failed(ProbeKind::Startup)),
    ]);
    let a = plan_at(&p, &o, &Backoff::default(), t(1));
    assert_eq!(
        a.containers_to_kill,
        vec![
            KillContainer {
                id: a_id.clone(),
                name: "a".into(),
                signal: 15,
                grace: Duration::from_secs(3),
                reason: KillReason::LivenessProbe,
                message: "Container a failed liveness probe, will be restarted".into(),
            },
            KillContainer {
                id: b_id.clone(),
                name: "b".into(),
                signal: 15,
                grace: Duration::from_secs(7),
                reason: KillReason::StartupProbe,
                message: "Container b failed startup probe, will be restarted".into(),
            },
        ]
    );
    assert!(
        a.containers_to_start.is_empty(),
        "running: nothing to start"
    );
    // Being stopped already: not again.
    o.stopping = HashSet::from([a_id, b_id]);
    let a = plan_at(&p, &o, &Backoff::default(), t(2));
    assert!(a.containers_to_kill.is_empty());
}

#[test]
fn a_probe_killed_container_restarts_by_its_policy() {
    // After the kill it exited with 143: Always restarts it, Never does not.
    for (policy, restarted) in [("Always", true), ("OnFailure", true), ("Never", false)] {
        let p = simple(policy, &["a"]);
        let o = observed(attempts(&[("a", vec![exited(143, t(4))])]));
        let a = plan_at(&p, &o, &Backoff::default(), t(5));
        assert_eq!(!a.containers_to_start.is_empty(), restarted, "{policy}");
    }
}

#[test]
fn deletion_stops_everything_within_the_grace_period() {
    let p = pod("spec:\n  terminationGracePeriodSeconds: 30\n  initContainers:\n  - {name: s1, image: busybox, restartPolicy: Always}\n  - {name: s2, image: busybox, restartPolicy: Always}\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n");
    let o = observed(attempts(&[
        ("s1", vec![running()]),
        ("s2", vec![running()]),
        ("a", vec![exited(0, t(1)), running()]),
        ("b", vec![exited(0, t(1))]),
    ]));
    // (grace override, grace used)
    for (grace, want) in [(Some(5), 5), (None, 30), (Some(0), 0)] {
        let d = Desired {
            intent: Intent::Terminate { grace },
            ..run(&p)
        };
        let a = plan(&d, &o, &Backoff::default(), t(2));
        assert_eq!(
            a.kill_pod,
            Some(KillPod {
                grace: Some(Duration::from_secs(want)),
                containers: vec![Running {
                    name: "a".into(),
                    id: "u1_a_1".into()
                }],
                sidecars: vec!["s2".into(), "s1".into()],
                end: PodEnd::Removed,
            }),
            "grace {grace:?}"
        );
        assert!(a.containers_to_start.is_empty());
    }
}

#[test]
fn a_pod_the_api_ended_is_released_once() {
    let mut p = simple("Always", &["a"]);
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    let o = observed(attempts(&[("a", vec![running()])]));
    let a = plan_at(&p, &o, &Backoff::default(), t(1));
    assert_eq!(
        a.kill_pod,
        Some(KillPod {
            grace: None,
            containers: vec![Running {
                name: "a".into(),
                id: "u1_a_0".into()
            }],
            sidecars: vec![],
            end: PodEnd::Released,
        })
    );
    assert!(a.containers_to_start.is_empty());
    let released = Observed {
        released: true,
        ..observed(Attempts::new())
    };
    assert_eq!(
        plan_at(&p, &released, &Backoff::default(), t(2)),
        PodActions::default()
    );
    // Being deleted: terminated like any deletion, not released.
    p.metadata.deletion_timestamp = Some(crate::pods::status::time(t(0)));
    assert!(!api_terminal(&p));
}

#[test]
fn adopted_containers_are_kept_as_they_run() {
    // An agent restart: the runtime reports what ran before, the worker has no memory.
    let p = pod("spec:\n  initContainers:\n  - {name: i, image: busybox}\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n");
    let o = Observed {
        volumes_set_up: false,
        objects_at: None,
        ..observed(attempts(&[
            ("i", vec![exited(0, t(1))]),
            ("a", vec![exited(1, t(2)), running()]),
            ("b", vec![running()]),
        ]))
    };
    let a = plan_at(&p, &o, &Backoff::default(), t(3));
    assert!(a.init_done);
    assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
    assert!(a.restarts.is_empty() && a.containers_to_kill.is_empty());
    assert_eq!(
        a.volumes,
        VolumeStep::SetUp,
        "volumes are set up (again) first"
    );
    assert_eq!(a.kill_pod, None);
}

#[test]
fn volumes_are_set_up_once_and_refreshed_each_sync_period() {
    let p = simple("Always", &["a"]);
    let b = Backoff::default();
    let o = |set_up, at| Observed {
        volumes_set_up: set_up,
        objects_at: at,
        ..observed(attempts(&[("a", vec![running()])]))
    };
    assert_eq!(
        plan_at(&p, &o(false, None), &b, t(0)).volumes,
        VolumeStep::SetUp
    );
    assert_eq!(
        plan_at(&p, &o(true, None), &b, t(0)).volumes,
        VolumeStep::Refresh
    );
    assert_eq!(
        plan_at(&p, &o(true, Some(t(0))), &b, t(59)).volumes,
        VolumeStep::Keep
    );
    assert_eq!(
        plan_at(&p, &o(true, Some(t(0))), &b, t(60)).volumes,
        VolumeStep::Refresh
    );
}

#[test]
fn ephemeral_containers_start_once() {
    let p = pod("spec:\n  initContainers:\n  - {name: i, image: busybox}\n  containers:\n  - {name: a, image: busybox}\n  ephemeralContainers:\n  - {name: dbg, image: busybox, targetContainerName: a}\n");
    // Even before the init containers are done.
    let a = plan_at(
        &p,
        &observed(attempts(&[("i", vec![running()])])),
        &Backoff::default(),
        t(1),
    );
    assert_eq!(a.ephemeral_containers_to_start, ["dbg"]);
    // Never again once it ran, whatever its exit.
    let o = observed(attempts(&[
        ("i", vec![running()]),
        ("dbg", vec![exited(1, t(2))]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(3));
    assert!(a.ephemeral_containers_to_start.is_empty());
}

#[test]
fn old_attempts_are_collected_keeping_two() {
    let a = attempts(&[
        (
            "a",
            vec![exited(1, t(1)), exited(1, t(2)), exited(1, t(3)), running()],
        ),
        ("b", vec![exited(0, t(1)), running()]),
    ]);
    assert_eq!(
        collectable(&a),
        [
            ("a".to_string(), "u1_a_0".to_string()),
            ("a".to_string(), "u1_a_1".to_string())
        ]
    );
}

#[test]
fn a_new_image_restarts_at_once_with_a_back_off_of_its_own() {
    let p = simple("Always", &["a"]);
    let mut backoff = Backoff::default();
    backoff.next(&rkey("a"), t(10), t(10));
    backoff.next(&rkey("a"), t(20), t(20));
    let o = observed(attempts(&[("a", vec![exited(1, t(10)), exited(1, t(30))])]));
    // The same image backs off (20 s from its exit at 30 s).
    let a = plan_at(&p, &o, &backoff, t(31));
    assert!(a.containers_to_start.is_empty());
    assert_eq!(a.requeue_at, Some(t(50)));
    // The image was updated: restarted at once, its restart recorded under the new key.
    let mut p2 = p.clone();
    p2.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
    let a = plan_at(&p2, &o, &backoff, t(31));
    assert_eq!(names(&a.containers_to_start), [("a".into(), 2)]);
    assert_eq!(a.restarts, vec![("a/run/nginx".to_string(), t(30))]);
}

#[test]
fn a_refused_pod_starts_nothing_and_ends_once() {
    let p = simple("Always", &["a"]);
    let refusal = crate::security::Refusal {
        reason: "PodOSNotSupported",
        message: "Failed to admit pod as the OS field doesn't match node OS".into(),
    };
    let d = Desired {
        admission: Some(&refusal),
        ..run(&p)
    };
    let a = plan(&d, &observed(Attempts::new()), &Backoff::default(), t(1));
    assert!(a.containers_to_start.is_empty() && a.init_containers_to_start.is_empty());
    assert_eq!(a.volumes, VolumeStep::Keep, "no volume is set up");
    assert_eq!(
        a.kill_pod,
        Some(KillPod {
            grace: None,
            containers: vec![],
            sidecars: vec![],
            end: PodEnd::Failed(Arc::new(PodFailure::rejected(
                refusal.reason,
                &refusal.message
            ))),
        })
    );
    let done = Observed {
        released: true,
        ..observed(Attempts::new())
    };
    assert_eq!(
        plan(&d, &done, &Backoff::default(), t(2)),
        PodActions::default()
    );
    // Being deleted wins over admission: a terminating pod is stopped, not rejected.
    let d = Desired {
        intent: Intent::Terminate { grace: Some(0) },
        ..d
    };
    let a = plan(&d, &observed(Attempts::new()), &Backoff::default(), t(1));
    assert_eq!(a.kill_pod.map(|k| k.end), Some(PodEnd::Removed));
}

#[test]
fn the_active_deadline_kills_the_pod_with_its_grace_and_fails_it() {
    let p = pod("spec:\n  activeDeadlineSeconds: 5\n  terminationGracePeriodSeconds: 3\n  containers:\n  - {name: a, image: busybox}\n");
    let o = observed(attempts(&[("a", vec![running()])]));
    // Before the deadline: runs, and is woken at the deadline.
    let a = plan_at(&p, &o, &Backoff::default(), t(2));
    assert_eq!(a.kill_pod, None);
    assert_eq!(a.requeue_at, Some(t(5)));
    // At the deadline: killed within its grace period, Failed with DeadlineExceeded.
    let a = plan_at(&p, &o, &Backoff::default(), t(5));
    assert_eq!(
        a.kill_pod,
        Some(KillPod {
            grace: Some(Duration::from_secs(3)),
            containers: vec![Running {
                name: "a".into(),
                id: "u1_a_0".into()
            }],
            sidecars: vec![],
            end: PodEnd::Failed(Arc::new(PodFailure::deadline())),
        })
    );
    assert!(a.containers_to_start.is_empty());
    // Once released, nothing more.
    let done = Observed {
        released: true,
        ..observed(attempts(&[("a", vec![exited(143, t(6))])]))
    };
    assert_eq!(
        plan_at(&p, &done, &Backoff::default(), t(7)),
        PodActions::default()
    );
    // A deadline set by an update counts from the pod's start, too.
    let mut later = simple("Always", &["a"]);
    assert_eq!(
        plan_at(&later, &o, &Backoff::default(), t(100)).kill_pod,
        None
    );
    later.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
    assert!(plan_at(&later, &o, &Backoff::default(), t(100))
        .kill_pod
        .is_some());
}

#[test]
fn an_updated_image_restarts_a_running_container_whatever_its_policy() {
    let mut p = pod("spec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 7\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n");
    let o = observed(attempts(&[("a", vec![running()]), ("b", vec![running()])]));
    assert!(plan_at(&p, &o, &Backoff::default(), t(1))
        .containers_to_kill
        .is_empty());
    p.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
    let a = plan_at(&p, &o, &Backoff::default(), t(1));
    assert_eq!(
        a.containers_to_kill,
        [KillContainer {
            id: "u1_a_0".into(),
            name: "a".into(),
            signal: 15,
            grace: Duration::from_secs(7),
            reason: KillReason::Changed,
            message: "Container a definition changed, will be restarted".into(),
        }]
    );
    // Stopped (exit 143 under restartPolicy Never): started again with the new image at once.
    let o = observed(attempts(&[
        ("a", vec![exited(143, t(2))]),
        ("b", vec![running()]),
    ]));
    let a = plan_at(&p, &o, &Backoff::default(), t(3));
    assert_eq!(names(&a.containers_to_start), [("a".into(), 1)]);
    assert!(a.containers_to_kill.is_empty());
}

#[test]
fn a_pod_the_node_fails_is_stopped_with_the_failures_grace_then_released_once() {
    let p =
        pod("spec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {name: a, image: x}\n");
    let o = observed(attempts(&[("a", vec![running()])]));
    let evicted = Arc::new(PodFailure::evicted(
        "The node was low on resource: memory. ",
        Some(1),
        true,
    ));
    let d = Desired {
        intent: Intent::Fail(evicted.clone()),
        ..run(&p)
    };
    let a = plan(&d, &o, &Backoff::default(), t(2));
    assert_eq!(
        a.kill_pod,
        Some(KillPod {
            grace: Some(Duration::from_secs(1)),
            containers: vec![Running {
                name: "a".into(),
                id: "u1_a_0".into()
            }],
            sidecars: vec![],
            end: PodEnd::Failed(evicted.clone()),
        })
    );
    assert!(a.containers_to_start.is_empty());
    // Once released nothing more happens (no start either).
    let released = Observed {
        released: true,
        ..observed(attempts(&[("a", vec![exited(137, t(3))])]))
    };
    assert_eq!(
        plan(&d, &released, &Backoff::default(), t(4)),
        PodActions::default()
    );
    // A rejection keeps the pod's own grace period (nothing runs anyway).
    let rejected = Arc::new(PodFailure::rejected(
        "OutOfcpu",
        "Node didn't have enough resource: cpu",
    ));
    let d = Desired {
        intent: Intent::Fail(rejected),
        ..run(&p)
    };
    let a = plan(&d, &observed(Attempts::new()), &Backoff::default(), t(1));
    let kill = a.kill_pod.expect("kill");
    assert!(kill.containers.is_empty());
    assert_eq!(kill.grace, Some(Duration::from_secs(30)));
}

#[test]
fn a_failure_writes_the_kubelets_status() {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    let running = PodStatus {
        phase: Some("Running".into()),
        qos_class: Some("BestEffort".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        }]),
        container_statuses: Some(vec![Default::default()]),
        ..Default::default()
    };
    let f = PodFailure::evicted("The node was low on resource: memory. ", Some(1), true);
    let mut st = running.clone();
    f.apply(&mut st, None, t(10));
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        st.message.as_deref(),
        Some("The node was low on resource: memory. ")
    );
    assert!(
        st.container_statuses.is_some(),
        "an evicted pod keeps its containers' states"
    );
    let dt = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .cloned()
        .expect("DisruptionTarget");
    assert_eq!(
        (dt.status.as_str(), dt.reason.as_deref()),
        ("True", Some("TerminationByKubelet"))
    );
    // Written again later: the condition keeps its transition time, so nothing changes.
    let mut again = running.clone();
    f.apply(&mut again, Some(&st), t(20));
    assert_eq!(again, st);
    // A local storage eviction has no DisruptionTarget condition.
    let mut st = running;
    PodFailure::evicted("Usage of EmptyDir volume ", Some(1), false).apply(&mut st, None, t(1));
    assert!(!st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "DisruptionTarget"));
}

/// A pod whose container `app` asks `resources`, with `policy` as its resizePolicy.
fn sized(restart: &str, resources: &str, policy: &str) -> Pod {
    pod(&format!(
        "spec:\n  restartPolicy: {restart}\n  containers:\n  - name: app\n    image: busybox\n    resources: {resources}\n    resizePolicy: {policy}\n"
    ))
}

/// A running attempt of `app` whose cgroup has what `resources` asks.
fn running_with(resources: &str) -> Attempts {
    let old = sized("Always", resources, "[]");
    let c = &old.spec.as_ref().unwrap().containers[0];
    let mut r = rec("app", 0, running());
    r.resources = translate::container_resources(&old, c);
    [("app".to_string(), vec![r])].into()
}

#[test]
fn resize_table() {
    const NOT: &str = "[]";
    const CPU_RESTARTS: &str = "[{resourceName: cpu, restartPolicy: RestartContainer}]";
    const MEM_RESTARTS: &str = "[{resourceName: memory, restartPolicy: RestartContainer}]";
    // (case, runs with, allocated, resizePolicy, updated in place (cpu grows, memory shrinks),
    // restarted)
    let cases = [
        (
            "unchanged",
            "{limits: {cpu: 1, memory: 64Mi}}",
            "{limits: {cpu: 1, memory: 64Mi}}",
            NOT,
            None,
            false,
        ),
        (
            "cpu up",
            "{limits: {cpu: 1}}",
            "{limits: {cpu: 2}}",
            NOT,
            Some((true, false)),
            false,
        ),
        (
            "cpu limit lifted",
            "{requests: {cpu: 1}, limits: {cpu: 1}}",
            "{requests: {cpu: 1}}",
            NOT,
            Some((true, false)),
            false,
        ),
        (
            "cpu request down",
            "{requests: {cpu: 1}}",
            "{requests: {cpu: 500m}}",
            NOT,
            Some((false, false)),
            false,
        ),
        (
            "memory down",
            "{limits: {memory: 64Mi}}",
            "{limits: {memory: 32Mi}}",
            NOT,
            Some((false, true)),
            false,
        ),
        (
            "memory limit set",
            "{requests: {memory: 64Mi}}",
            "{requests: {memory: 64Mi}, limits: {memory: 128Mi}}",
            NOT,
            Some((false, true)),
            false,
        ),
        (
            "memory up",
            "{limits: {memory: 64Mi}}",
            "{limits: {memory: 128Mi}}",
            NOT,
            Some((false, false)),
            false,
        ),
        (
            "cpu restarts on cpu",
            "{limits: {cpu: 1}}",
            "{limits: {cpu: 2}}",
            CPU_RESTARTS,
            None,
            true,
        ),
        (
            "memory policy, cpu change",
            "{limits: {cpu: 1, memory: 64Mi}}",
            "{limits: {cpu: 2, memory: 64Mi}}",
            MEM_RESTARTS,
            Some((true, false)),
            false,
        ),
        (
            "memory restarts on memory",
            "{limits: {cpu: 1, memory: 64Mi}}",
            "{limits: {cpu: 1, memory: 32Mi}}",
            MEM_RESTARTS,
            None,
            true,
        ),
        // A memory request is no cgroup setting: nothing to do.
        (
            "memory request only",
            "{requests: {memory: 64Mi}}",
            "{requests: {memory: 32Mi}}",
            MEM_RESTARTS,
            None,
            false,
        ),
    ];
    for (case, runs, allocated, policy, update, restart) in cases {
        let p = sized("Never", allocated, policy);
        let a = plan_at(&p, &observed(running_with(runs)), &Backoff::default(), t(1));
        let want = translate::container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
        let got: Vec<_> = a
            .containers_to_update
            .iter()
            .map(|u| {
                (
                    u.id.as_str(),
                    u.resources.clone(),
                    u.cpu_grows,
                    u.memory_shrinks,
                )
            })
            .collect();
        let expected: Vec<_> = update
            .map(|(grows, shrinks)| ("u1_app_0", want.clone(), grows, shrinks))
            .into_iter()
            .collect();
        assert_eq!(got, expected, "{case}");
        let kills: Vec<_> = a
            .containers_to_kill
            .iter()
            .map(|k| (k.reason, k.message.as_str()))
            .collect();
        let expected: Vec<(KillReason, &str)> = if restart {
            vec![(KillReason::Resize, "Container app resize requires restart")]
        } else {
            vec![]
        };
        assert_eq!(kills, expected, "{case}");
        assert_eq!(a.resizing, update.is_some() || restart, "{case}");
        assert!(a.containers_to_start.is_empty(), "{case}");
    }
}

#[test]
fn a_container_stopped_for_a_resize_starts_again_whatever_the_pod_policy() {
    const CPU_RESTARTS: &str = "[{resourceName: cpu, restartPolicy: RestartContainer}]";
    let p = sized("Never", "{limits: {cpu: 2}}", CPU_RESTARTS);
    let old = sized("Never", "{limits: {cpu: 1}}", CPU_RESTARTS);
    let mut r = rec("app", 0, exited(137, t(5)));
    r.resources = translate::container_resources(&old, &old.spec.as_ref().unwrap().containers[0]);
    let o = observed([("app".to_string(), vec![r.clone()])].into());
    let a = plan_at(&p, &o, &Backoff::default(), t(6));
    assert_eq!(names(&a.containers_to_start), [("app".into(), 1)]);
    // Exited with its own resources: the pod's policy holds (Never).
    r.resources = translate::container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
    let o = observed([("app".to_string(), vec![r])].into());
    let a = plan_at(&p, &o, &Backoff::default(), t(6));
    assert!(a.containers_to_start.is_empty());
}

#[test]
fn resizes_apply_decreases_first_and_skip_containers_being_stopped() {
    let p = pod("spec:\n  containers:\n  - {name: a, image: busybox, resources: {limits: {memory: 128Mi}}}\n  - {name: b, image: busybox, resources: {limits: {memory: 32Mi}}}\n  - {name: c, image: busybox, resources: {limits: {memory: 32Mi}}}\n");
    let mut at = Attempts::new();
    for name in ["a", "b", "c"] {
        let mut r = rec(name, 0, running());
        r.resources.memory_limit = Some(64 << 20);
        at.insert(name.to_string(), vec![r]);
    }
    let mut o = observed(at);
    o.stopping.insert("u1_c_0".to_string());
    let a = plan_at(&p, &o, &Backoff::default(), t(1));
    let order: Vec<&str> = a
        .containers_to_update
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(order, ["b", "a"]);
}

/// A pod whose non-sidecar init container `setup` asks `resources` under `policy`, before its
/// regular container `app`.
fn init_sized(restart: &str, resources: &str, policy: &str) -> Pod {
    pod(&format!(
        "spec:\n  restartPolicy: {restart}\n  initContainers:\n  - name: setup\n    image: busybox\n    resources: {resources}\n    resizePolicy: {policy}\n  containers:\n  - {{name: app, image: busybox}}\n"
    ))
}

/// An attempt of `setup` in `state` whose cgroup has what `resources` asks.
fn setup_with(resources: &str, state: ContainerState) -> Record {
    let old = init_sized("Always", resources, "[]");
    let c = &old.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let mut r = rec("setup", 0, state);
    r.resources = translate::container_resources(&old, c);
    r
}

#[test]
fn a_running_non_sidecar_init_container_is_resized_in_place() {
    const NOT: &str = "[]";
    const CPU_RESTARTS: &str = "[{resourceName: cpu, restartPolicy: RestartContainer}]";
    const MEM_RESTARTS: &str = "[{resourceName: memory, restartPolicy: RestartContainer}]";
    const ORIGINAL: &str =
        "{requests: {cpu: 200m, memory: 64Mi}, limits: {cpu: 200m, memory: 64Mi}}";
    // (case, allocated, resizePolicy, updated in place (cpu grows, memory shrinks), restarted)
    let cases = [
        ("unchanged", ORIGINAL, NOT, None, false),
        (
            "cpu and memory up (the upstream e2e spec)",
            "{requests: {cpu: 300m, memory: 128Mi}, limits: {cpu: 300m, memory: 128Mi}}",
            NOT,
            Some((true, false)),
            false,
        ),
        (
            "cpu down",
            "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}",
            NOT,
            Some((false, false)),
            false,
        ),
        (
            "memory down",
            "{requests: {cpu: 200m, memory: 32Mi}, limits: {cpu: 200m, memory: 32Mi}}",
            NOT,
            Some((false, true)),
            false,
        ),
        (
            "a memory policy, a cpu change",
            "{requests: {cpu: 300m, memory: 64Mi}, limits: {cpu: 300m, memory: 64Mi}}",
            MEM_RESTARTS,
            Some((true, false)),
            false,
        ),
        // The apiserver refuses this resize; the kubelet restarts the container all the same.
        (
            "cpu restarts on cpu",
            "{requests: {cpu: 300m, memory: 64Mi}, limits: {cpu: 300m, memory: 64Mi}}",
            CPU_RESTARTS,
            None,
            true,
        ),
    ];
    for (case, allocated, policy, update, restart) in cases {
        let p = init_sized("Never", allocated, policy);
        let o = observed([("setup".to_string(), vec![setup_with(ORIGINAL, running())])].into());
        let a = plan_at(&p, &o, &Backoff::default(), t(1));
        let want = translate::container_resources(
            &p,
            &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0],
        );
        let got: Vec<_> = a
            .containers_to_update
            .iter()
            .map(|u| {
                (
                    u.id.as_str(),
                    u.name.as_str(),
                    u.resources.clone(),
                    u.cpu_grows,
                    u.memory_shrinks,
                )
            })
            .collect();
        let expected: Vec<_> = update
            .map(|(grows, shrinks)| ("u1_setup_0", "setup", want.clone(), grows, shrinks))
            .into_iter()
            .collect();
        assert_eq!(got, expected, "{case}");
        let kills: Vec<_> = a
            .containers_to_kill
            .iter()
            .map(|k| (k.id.as_str(), k.reason, k.message.as_str()))
            .collect();
        let expected: Vec<(&str, KillReason, &str)> = if restart {
            vec![(
                "u1_setup_0",
                KillReason::Resize,
                "Container setup resize requires restart",
            )]
        } else {
            vec![]
        };
        assert_eq!(kills, expected, "{case}");
        assert_eq!(a.resizing, update.is_some() || restart, "{case}");
        // Still initializing: nothing else starts meanwhile.
        assert!(!a.init_done && !a.init_failed, "{case}");
        assert!(a.init_containers_to_start.is_empty(), "{case}");
        assert!(a.containers_to_start.is_empty(), "{case}");
    }
}

#[test]
fn a_non_sidecar_init_container_stopped_for_a_resize_starts_again_whatever_the_pod_policy() {
    const CPU_RESTARTS: &str = "[{resourceName: cpu, restartPolicy: RestartContainer}]";
    const OLD: &str = "{limits: {cpu: 1}}";
    let p = init_sized("Never", "{limits: {cpu: 2}}", CPU_RESTARTS);
    let o = observed(
        [(
            "setup".to_string(),
            vec![setup_with(OLD, exited(143, t(5)))],
        )]
        .into(),
    );
    let a = plan_at(&p, &o, &Backoff::default(), t(6));
    assert_eq!(names(&a.init_containers_to_start), [("setup".into(), 1)]);
    assert!(a.resizing && !a.init_failed && !a.init_done);
    assert!(a.containers_to_start.is_empty());
    // Failed with its own resources: the pod's policy holds (Never), the pod fails.
    let o = observed(
        [(
            "setup".to_string(),
            vec![setup_with("{limits: {cpu: 2}}", exited(143, t(5)))],
        )]
        .into(),
    );
    let a = plan_at(&p, &o, &Backoff::default(), t(6));
    assert!(a.init_containers_to_start.is_empty());
    assert!(a.init_failed && !a.resizing);
    // Completed before the resize: done with, neither restarted nor resized.
    let o = observed([("setup".to_string(), vec![setup_with(OLD, exited(0, t(5)))])].into());
    let a = plan_at(&p, &o, &Backoff::default(), t(6));
    assert!(a.init_containers_to_start.is_empty());
    assert_eq!(names(&a.containers_to_start), [("app".into(), 0)]);
    assert!(a.init_done && !a.resizing);
}

#[test]
fn a_non_sidecar_init_container_is_not_resized_once_the_pod_is_initialized() {
    const OLD: &str = "{limits: {cpu: 1}}";
    let p = init_sized("Always", "{limits: {cpu: 2}}", "[]");
    // Completed: not running, nothing to update.
    let o = observed(
        [
            ("setup".to_string(), vec![setup_with(OLD, exited(0, t(1)))]),
            ("app".to_string(), vec![rec("app", 0, running())]),
        ]
        .into(),
    );
    let a = plan_at(&p, &o, &Backoff::default(), t(2));
    assert!(a.containers_to_update.is_empty() && !a.resizing);
    // Still running beside a started regular container (adopted so): the kubelet leaves it.
    let o = observed(
        [
            ("setup".to_string(), vec![setup_with(OLD, running())]),
            ("app".to_string(), vec![rec("app", 0, running())]),
        ]
        .into(),
    );
    let a = plan_at(&p, &o, &Backoff::default(), t(2));
    assert!(a.containers_to_update.is_empty() && !a.resizing);
    assert!(a.containers_to_kill.is_empty());
}

#[test]
fn a_pod_on_the_pod_network_waits_for_it() {
    let net = crate::podnet::node_message(crate::podnet::NOT_INITIALIZED);
    let held = Some(format!("network is not ready: {net}"));
    let pod_net = simple("Always", &["a"]);
    let host_net =
        pod("spec:\n  hostNetwork: true\n  containers:\n  - {name: a, image: busybox}\n");
    let dead =
        pod("spec:\n  activeDeadlineSeconds: 5\n  containers:\n  - {name: a, image: busybox}\n");
    // (pod, intent, network error, held?, containers started, killed)
    type Row<'a> = (&'a Pod, Intent, Option<&'a str>, bool, usize, bool);
    let table: Vec<Row> = vec![
        // Ready network: everything starts.
        (&pod_net, Intent::Run, None, false, 1, false),
        (&host_net, Intent::Run, None, false, 1, false),
        // Not ready: hostNetwork pods run, the others wait with the kubelet's error.
        (&host_net, Intent::Run, Some(&net), false, 1, false),
        (&pod_net, Intent::Run, Some(&net), true, 0, false),
        // Ending a pod never waits for the network (nor does its deadline).
        (
            &pod_net,
            Intent::Terminate { grace: None },
            Some(&net),
            false,
            0,
            true,
        ),
        (&dead, Intent::Run, Some(&net), false, 0, true),
    ];
    for (i, (p, intent, network_error, want_held, starts, killed)) in table.into_iter().enumerate()
    {
        let d = Desired {
            intent,
            network_error,
            ..run(p)
        };
        let a = plan(&d, &observed(Attempts::new()), &Backoff::default(), t(10));
        assert_eq!(
            a.network_not_ready,
            if want_held { held.clone() } else { None },
            "row {i}"
        );
        assert_eq!(a.containers_to_start.len(), starts, "row {i}");
        assert_eq!(a.kill_pod.is_some(), killed, "row {i}");
        if want_held {
            assert_eq!(a.volumes, VolumeStep::Keep, "row {i}: nothing set up");
        }
    }
}
