#![allow(clippy::unwrap_used)]

use super::*;
use bosun_runtime::cgroups::CgroupUsage;

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

/// A pod with one container `app` of these resources, and a sidecar `log` without any.
fn app(resources: &str, generation: i64) -> Pod {
    pod(&format!(
        r#"
metadata: {{name: p, namespace: ns, uid: u1, generation: {generation}}}
spec:
  initContainers:
  - {{name: log, image: busybox, restartPolicy: Always}}
  - {{name: setup, image: busybox, resources: {{requests: {{cpu: 5}}}}}}
  containers:
  - name: app
    image: busybox
    resources: {resources}
"#
    ))
}

fn requirements(yaml: &str) -> ResourceRequirements {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn allocation_is_the_resizable_containers_resources() {
    let p = app("{requests: {cpu: 100m}, limits: {memory: 64Mi}}", 1);
    let a = allocation_of(&p);
    assert_eq!(
        a.keys().map(String::as_str).collect::<Vec<_>>(),
        ["app", "log", "setup"],
        "regular containers, sidecars and the other init containers \
         (the kubelet's InPlacePodVerticalScalingInitContainers)"
    );
    assert_eq!(
        a["app"],
        requirements("{requests: {cpu: 100m}, limits: {memory: 64Mi}}")
    );
    assert_eq!(a["setup"], requirements("{requests: {cpu: 5}}"));
    assert_eq!(a["log"], ResourceRequirements::default());
    assert_eq!(
        resizable(&p)
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["log", "setup", "app"],
        "init containers first, in spec order"
    );
}

/// `app(resources, generation)` with the init container `setup` asking `init` instead.
fn with_init(resources: &str, init: &str, generation: i64) -> Pod {
    let mut p = app(resources, generation);
    p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[1].resources =
        Some(requirements(init));
    p
}

#[test]
fn decide_table_of_a_non_sidecar_init_container() {
    let app_res = "{requests: {cpu: 100m}}";
    let allocated = allocation_of(&with_init(
        app_res,
        "{requests: {cpu: 500m, memory: 64Mi}, limits: {cpu: 500m, memory: 64Mi}}",
        1,
    ));
    // (case, the init container asks, fits, decision)
    let cases = [
        (
            "unchanged",
            "{requests: {cpu: 500m, memory: 64Mi}, limits: {cpu: 500m, memory: 64Mi}}",
            Err("never asked"),
            Decision::Unchanged,
        ),
        (
            "the same quantities written otherwise",
            "{requests: {cpu: 0.5, memory: 67108864}, limits: {cpu: 500m, memory: 64Mi}}",
            Err("never asked"),
            Decision::Unchanged,
        ),
        (
            "more CPU and memory that fit",
            "{requests: {cpu: 1, memory: 128Mi}, limits: {cpu: 1, memory: 128Mi}}",
            Ok(()),
            Decision::Allocate,
        ),
        (
            "more CPU than is free",
            "{requests: {cpu: 64, memory: 64Mi}, limits: {cpu: 64, memory: 64Mi}}",
            Err("Node didn't have enough resource: cpu"),
            Decision::Pending(Pending {
                reason: "Deferred",
                message: "Node didn't have enough resource: cpu".into(),
                generation: 2,
            }),
        ),
    ];
    for (case, init, fits, want) in cases {
        let p = with_init(app_res, init, 2);
        let got = decide(&p, &allocated, |asked| {
            // Admission sees the pod as the spec asks, the init container's new resources too.
            let setup = &asked
                .spec
                .as_ref()
                .unwrap()
                .init_containers
                .as_ref()
                .unwrap()[1];
            assert_eq!(setup.resources, Some(requirements(init)), "{case}");
            fits.map_err(str::to_string)
        });
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn decide_table() {
    let allocated = allocation_of(&app("{requests: {cpu: 100m}, limits: {cpu: 1}}", 1));
    struct Case {
        name: &'static str,
        spec: &'static str,
        fits: Result<(), &'static str>,
        want: Decision,
    }
    let cases = [
        Case {
            name: "same resources",
            spec: "{requests: {cpu: 100m}, limits: {cpu: 1}}",
            fits: Err("never asked"),
            want: Decision::Unchanged,
        },
        Case {
            name: "the same quantities written otherwise",
            spec: "{requests: {cpu: 0.1}, limits: {cpu: 1000m}}",
            fits: Err("never asked"),
            want: Decision::Unchanged,
        },
        Case {
            name: "more CPU that fits",
            spec: "{requests: {cpu: 200m}, limits: {cpu: 1}}",
            fits: Ok(()),
            want: Decision::Allocate,
        },
        Case {
            name: "a limit added",
            spec: "{requests: {cpu: 100m}, limits: {cpu: 1, memory: 1Gi}}",
            fits: Ok(()),
            want: Decision::Allocate,
        },
        Case {
            name: "more CPU than is free: deferred with the admission's message",
            spec: "{requests: {cpu: 64}, limits: {cpu: 64}}",
            fits: Err("Node didn't have enough resource: cpu, requested: 64000, used: 100, capacity: 2000"),
            want: Decision::Pending(Pending {
                reason: "Deferred",
                message: "Node didn't have enough resource: cpu, requested: 64000, used: 100, capacity: 2000".into(),
                generation: 2,
            }),
        },
    ];
    for c in cases {
        let p = app(c.spec, 2);
        let got = decide(&p, &allocated, |_| c.fits.map_err(str::to_string));
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn the_pod_runs_as_allocated() {
    let allocated = allocation_of(&app("{requests: {cpu: 100m}}", 1));
    let asked = app("{requests: {cpu: 64}}", 2);
    let run = with_allocation(&asked, &allocated);
    let c = &run.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.resources, Some(requirements("{requests: {cpu: 100m}}")));
    assert!(changed(&asked, &allocated));
    assert!(!changed(&run, &allocated));
    // A non-sidecar init container runs as allocated too.
    let asked = with_init("{requests: {cpu: 100m}}", "{requests: {cpu: 7}}", 2);
    assert!(changed(&asked, &allocated));
    let run = with_allocation(&asked, &allocated);
    let init = &run.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1];
    assert_eq!(init.resources, Some(requirements("{requests: {cpu: 5}}")));
    assert!(!changed(&run, &allocated));
    // A container the allocation does not know (kept by an older agent) keeps its own.
    let mut old = allocated.clone();
    old.remove("setup");
    assert!(!changed(&asked, &old));
    let run = with_allocation(&asked, &old);
    let init = &run.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1];
    assert_eq!(init.resources, Some(requirements("{requests: {cpu: 7}}")));
}

fn usage(pod: u64, containers: &[(&str, u64)]) -> PodsUsage {
    let u = |bytes| CgroupUsage {
        memory_usage: bytes,
        memory_working_set: bytes,
        processes: 1,
    };
    PodsUsage {
        kubepods: None,
        pods: [("u1".to_string(), u(pod))].into(),
        containers: containers
            .iter()
            .map(|(id, b)| (id.to_string(), u(*b)))
            .collect(),
    }
}

#[test]
fn memory_check_table() {
    let upd = |limit| MemoryUpdate {
        id: "c1",
        name: "app",
        memory_limit: limit,
    };
    struct Case {
        name: &'static str,
        pod_limit: Option<i64>,
        updates: Vec<MemoryUpdate<'static>>,
        usage: PodsUsage,
        want: Result<(), &'static str>,
    }
    let cases = [
        Case {
            name: "above the usage",
            pod_limit: Some(100 << 20),
            updates: vec![upd(Some(64 << 20))],
            usage: usage(40 << 20, &[("c1", 30 << 20)]),
            want: Ok(()),
        },
        Case {
            name: "a container limit below its usage",
            pod_limit: None,
            updates: vec![upd(Some(10 << 20))],
            usage: usage(40 << 20, &[("c1", 30 << 20)]),
            want: Err("cannot decrease memory limits: attempting to set container \"app\" memory limit (10485760) below current usage (31457280)"),
        },
        Case {
            name: "the pod limit below its usage",
            pod_limit: Some(20 << 20),
            updates: vec![upd(Some(64 << 20))],
            usage: usage(40 << 20, &[("c1", 30 << 20)]),
            want: Err("cannot decrease memory limits: attempting to set pod memory limit (20971520) below current usage (41943040)"),
        },
        Case {
            name: "both",
            pod_limit: Some(20 << 20),
            updates: vec![upd(Some(10 << 20))],
            usage: usage(40 << 20, &[("c1", 30 << 20)]),
            want: Err("cannot decrease memory limits: [attempting to set pod memory limit (20971520) below current usage (41943040), attempting to set container \"app\" memory limit (10485760) below current usage (31457280)]"),
        },
        Case {
            name: "no usage known: not applied",
            pod_limit: None,
            updates: vec![upd(Some(10 << 20))],
            usage: usage(40 << 20, &[]),
            want: Err("cannot decrease memory limits: missing container \"app\" memory usage"),
        },
        Case {
            name: "a limit lifted is never below",
            pod_limit: None,
            updates: vec![upd(None)],
            usage: usage(40 << 20, &[]),
            want: Ok(()),
        },
    ];
    for c in cases {
        let got = memory_check("u1", c.pod_limit, &c.updates, &c.usage);
        assert_eq!(got, c.want.map_err(str::to_string), "{}", c.name);
    }
}

#[test]
fn reported_resources_are_the_allocated_where_the_cgroup_says_so() {
    let alloc =
        requirements("{requests: {cpu: 250m, memory: 32Mi}, limits: {cpu: 500m, memory: 64Mi}}");
    let c = Container {
        resources: Some(alloc.clone()),
        ..Default::default()
    };
    let actual = crate::translate::container_resources(&Pod::default(), &c);
    assert_eq!(reported(&actual, &alloc), alloc);
    // The cgroup has other numbers (a resize not applied yet): they are what is reported.
    let old = Resources {
        cpu_shares: Some(102),
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        memory_limit: Some(128 << 20),
        pids_limit: None,
    };
    assert_eq!(
        reported(&old, &alloc),
        requirements(
            "{requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 200m, memory: '134217728'}}"
        )
    );
    // No resources: nothing reported.
    let none = ResourceRequirements::default();
    let actual = crate::translate::container_resources(&Pod::default(), &Container::default());
    assert_eq!(reported(&actual, &none), none);
}

#[test]
fn conditions_keep_their_times_while_unchanged() {
    let t = |s: i64| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::new(s, 0).unwrap(),
        )
    };
    let pending = Pending {
        reason: "Deferred",
        message: "no room".into(),
        generation: 2,
    };
    let first = conditions(Some(&pending), None, &[], t(10));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].type_, "PodResizePending");
    assert_eq!(first[0].status, "True");
    assert_eq!(first[0].reason.as_deref(), Some("Deferred"));
    assert_eq!(first[0].observed_generation, Some(2));
    let again = conditions(Some(&pending), None, &first, t(20));
    assert_eq!(again, first);
    let progress = InProgress {
        generation: 3,
        error: Some("cannot decrease memory limits: x".into()),
    };
    let now = conditions(None, Some(&progress), &again, t(30));
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].type_, "PodResizeInProgress");
    assert_eq!(now[0].reason.as_deref(), Some("Error"));
    assert_eq!(now[0].last_transition_time, Some(t(30)));
}

#[test]
fn event_messages_summarise_the_resources() {
    let p = pod(r#"
metadata: {name: p, generation: 2}
spec:
  containers:
  - {name: app, image: busybox, resources: {requests: {cpu: 200m}}}
"#);
    assert_eq!(
        event_message("Pod resize started", &p, ""),
        r#"Pod resize started: {"containers":[{"name":"app","resources":{"requests":{"cpu":"200m"}}}],"generation":2}"#
    );
    assert_eq!(
        event_message("Pod resize Deferred", &p, "no room"),
        r#"Pod resize Deferred: {"containers":[{"name":"app","resources":{"requests":{"cpu":"200m"}}}],"generation":2,"error":"no room"}"#
    );
}
