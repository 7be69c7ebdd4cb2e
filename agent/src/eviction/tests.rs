#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

use super::rank::{rank, Candidate, ContainerStats, PodStats, VolumeStats};
use super::*;

const MI: i64 = 1 << 20;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": name},
        "spec": spec,
    }))
    .unwrap()
}

fn container(name: &str, resources: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "busybox", "resources": resources})
}

fn stats(uid: &str, container: &str, memory: i64) -> PodStats {
    PodStats {
        uid: uid.into(),
        memory_working_set: memory,
        processes: 1,
        containers: vec![ContainerStats {
            name: container.into(),
            memory_working_set: memory,
            ..Default::default()
        }],
        volumes: vec![],
    }
}

fn obs(pairs: &[(Signal, i64, i64)]) -> Observations {
    pairs
        .iter()
        .map(|(s, available, capacity)| {
            (
                *s,
                Observation {
                    available: *available,
                    capacity: *capacity,
                },
            )
        })
        .collect()
}

#[test]
fn thresholds_parse_like_the_kubelet() {
    let hard = map(&[("memory.available", "100Mi"), ("nodefs.available", "10%")]);
    let soft = map(&[("memory.available", "300Mi")]);
    let grace = BTreeMap::from([("memory.available".to_string(), Duration::from_secs(30))]);
    let reclaim = map(&[("nodefs.available", "500Mi")]);
    let t = parse_thresholds(&hard, &soft, &grace, &reclaim, true).unwrap();
    let sigs: Vec<(Signal, bool)> = t.iter().map(|t| (t.signal, t.is_hard())).collect();
    assert_eq!(
        sigs,
        [
            (Signal::MemoryAvailable, true),
            (Signal::NodeFsAvailable, true),
            (Signal::MemoryAvailable, false),
            (Signal::AllocatableMemoryAvailable, true),
        ]
    );
    assert_eq!(t[0].value.resolve(0), 100 * MI);
    assert_eq!(t[1].value.resolve(1000), 100);
    assert_eq!(t[1].min_reclaim.as_ref().unwrap().resolve(0), 500 * MI);
    assert_eq!(t[2].grace, Duration::from_secs(30));
    // 0% and 100% mean nothing; containerfs is accepted and ignored.
    let t = parse_thresholds(
        &map(&[("nodefs.available", "0%"), ("containerfs.available", "5%")]),
        &BTreeMap::new(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        true,
    )
    .unwrap();
    assert!(t.is_empty());
    let errors = [
        (
            map(&[("memory.free", "1Mi")]),
            BTreeMap::new(),
            "unsupported eviction signal memory.free",
        ),
        (
            map(&[("memory.available", "0")]),
            BTreeMap::new(),
            "must be positive",
        ),
        (
            map(&[("memory.available", "120%")]),
            BTreeMap::new(),
            "must be <= 100%",
        ),
        (
            BTreeMap::new(),
            map(&[("memory.available", "1Gi")]),
            "grace period must be specified",
        ),
    ];
    for (hard, soft, want) in errors {
        let e =
            parse_thresholds(&hard, &soft, &BTreeMap::new(), &BTreeMap::new(), false).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
    // The reservation of the hard thresholds.
    let t = parse_thresholds(
        &map(&[("memory.available", "100Mi"), ("nodefs.available", "10%")]),
        &BTreeMap::new(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        false,
    )
    .unwrap();
    assert_eq!(hard_reservation(&t, 8 << 30, 1000), (100 * MI, 100));
}

fn settings(thresholds: Vec<Threshold>) -> Settings {
    Settings {
        thresholds,
        pressure_transition: Duration::from_secs(300),
        max_pod_grace_seconds: 0,
        local_storage: true,
    }
}

fn threshold(signal: Signal, amount: i64, grace: u64, reclaim: Option<i64>) -> Threshold {
    Threshold {
        signal,
        value: Value::Quantity {
            amount,
            text: message::binary(amount),
        },
        grace: Duration::from_secs(grace),
        min_reclaim: reclaim.map(|r| Value::Quantity {
            amount: r,
            text: message::binary(r),
        }),
    }
}

#[test]
fn a_round_applies_grace_periods_transition_and_minimum_reclaim() {
    let s = settings(vec![
        threshold(Signal::NodeFsAvailable, 100 * MI, 0, Some(50 * MI)),
        threshold(Signal::MemoryAvailable, 100 * MI, 0, None),
        threshold(Signal::MemoryAvailable, 300 * MI, 30, None),
    ]);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut st = State::default();
    // Nothing crossed.
    let fine = obs(&[
        (Signal::MemoryAvailable, 1000 * MI, 4000 * MI),
        (Signal::NodeFsAvailable, 1000 * MI, 2000 * MI),
    ]);
    assert_eq!(synchronize(&s, &mut st, &fine, t0), Round::default());
    // The soft memory threshold: a condition at once, eviction after its grace period.
    let soft = obs(&[
        (Signal::MemoryAvailable, 200 * MI, 4000 * MI),
        (Signal::NodeFsAvailable, 1000 * MI, 2000 * MI),
    ]);
    let r = synchronize(&s, &mut st, &soft, at(10));
    assert_eq!(r.conditions, [NodeCondition::MemoryPressure]);
    assert!(r.met.is_empty());
    let r = synchronize(&s, &mut st, &soft, at(39));
    assert!(r.met.is_empty(), "grace period not over");
    let r = synchronize(&s, &mut st, &soft, at(40));
    assert_eq!(r.met, [2]);
    // Disk and memory both hard: memory first.
    let both = obs(&[
        (Signal::MemoryAvailable, 50 * MI, 4000 * MI),
        (Signal::NodeFsAvailable, 90 * MI, 2000 * MI),
    ]);
    let r = synchronize(&s, &mut st, &both, at(41));
    assert_eq!(r.to_reclaim(), Some(1));
    assert_eq!(
        r.conditions,
        [NodeCondition::MemoryPressure, NodeCondition::DiskPressure]
    );
    // Disk back above the threshold but not above threshold + minimum reclaim: still met.
    let partly = obs(&[
        (Signal::MemoryAvailable, 1000 * MI, 4000 * MI),
        (Signal::NodeFsAvailable, 120 * MI, 2000 * MI),
    ]);
    let r = synchronize(&s, &mut st, &partly, at(50));
    assert_eq!(r.met, [0]);
    // Reclaimed: nothing to act on, but the conditions stay for the transition period.
    let r = synchronize(&s, &mut st, &fine, at(60));
    assert!(r.met.is_empty());
    assert_eq!(
        r.conditions,
        [NodeCondition::MemoryPressure, NodeCondition::DiskPressure]
    );
    let r = synchronize(&s, &mut st, &fine, at(50 + 299));
    assert_eq!(r.conditions, [NodeCondition::DiskPressure]);
    let r = synchronize(&s, &mut st, &fine, at(50 + 300));
    assert!(r.conditions.is_empty());
    // A signal not observed meets nothing.
    let r = synchronize(&s, &mut st, &Observations::new(), at(400));
    assert_eq!(r, Round::default());
}

#[test]
fn memory_ranking_best_effort_then_burstable_then_guaranteed() {
    let be = pod(
        "be",
        serde_json::json!({"containers": [container("c", serde_json::json!({}))]}),
    );
    let burst = pod(
        "burst",
        serde_json::json!({"containers": [container("c", serde_json::json!({"requests": {"memory": "100Mi"}}))]}),
    );
    let guaranteed = pod(
        "g",
        serde_json::json!({"containers": [container("c", serde_json::json!({
            "requests": {"memory": "200Mi", "cpu": "100m"}, "limits": {"memory": "200Mi", "cpu": "100m"}}))]}),
    );
    let mut high = be.clone();
    high.metadata.name = Some("high".into());
    if let Some(s) = high.spec.as_mut() {
        s.priority = Some(1000);
    }
    // BestEffort uses least, yet goes first: it is above its (zero) request.
    let s_be = stats("be", "c", 10 * MI);
    let s_burst = stats("burst", "c", 150 * MI);
    let s_g = stats("g", "c", 150 * MI);
    let s_high = stats("high", "c", 300 * MI);
    let mut pods = vec![
        Candidate {
            pod: &guaranteed,
            stats: Some(&s_g),
        },
        Candidate {
            pod: &burst,
            stats: Some(&s_burst),
        },
        Candidate {
            pod: &high,
            stats: Some(&s_high),
        },
        Candidate {
            pod: &be,
            stats: Some(&s_be),
        },
    ];
    rank(Signal::MemoryAvailable, &mut pods, false);
    let order: Vec<&str> = pods
        .iter()
        .map(|c| c.pod.metadata.name.as_deref().unwrap())
        .collect();
    // Above requests: be (10 > 0), burst (150 > 100), high (300 > 0): priority puts high last of
    // them; then by usage above request: burst 50Mi before be 10Mi. Guaranteed is below its
    // request: last.
    assert_eq!(order, ["burst", "be", "high", "g"]);
    // Without figures first.
    let mut pods = vec![
        Candidate {
            pod: &burst,
            stats: Some(&s_burst),
        },
        Candidate {
            pod: &be,
            stats: None,
        },
    ];
    rank(Signal::MemoryAvailable, &mut pods, false);
    assert_eq!(pods[0].pod.metadata.name.as_deref(), Some("be"));
}

#[test]
fn disk_and_pid_ranking() {
    let a = pod(
        "a",
        serde_json::json!({"containers": [container("c", serde_json::json!({
        "requests": {"ephemeral-storage": "1Gi"}}))]}),
    );
    let b = pod(
        "b",
        serde_json::json!({"containers": [container("c", serde_json::json!({}))]}),
    );
    let disk = |uid: &str, rootfs: i64, logs: i64, vol: i64| PodStats {
        uid: uid.into(),
        containers: vec![ContainerStats {
            name: "c".into(),
            rootfs_bytes: rootfs,
            logs_bytes: logs,
            ..Default::default()
        }],
        volumes: vec![VolumeStats {
            name: "v".into(),
            bytes: vol,
            ..Default::default()
        }],
        ..Default::default()
    };
    // a uses 500Mi below its 1Gi request; b 10Mi above its (zero) request: b first.
    let sa = disk("a", 200 * MI, 100 * MI, 200 * MI);
    let sb = disk("b", 0, 0, 10 * MI);
    let mut pods = vec![
        Candidate {
            pod: &a,
            stats: Some(&sa),
        },
        Candidate {
            pod: &b,
            stats: Some(&sb),
        },
    ];
    rank(Signal::NodeFsAvailable, &mut pods, false);
    assert_eq!(pods[0].pod.metadata.name.as_deref(), Some("b"));
    // With a dedicated image filesystem the image filesystem counts writable layers only.
    let parts = rank::DiskParts::of(Signal::ImageFsAvailable, true);
    assert_eq!(sa.disk(parts, false), 200 * MI);
    let parts = rank::DiskParts::of(Signal::NodeFsAvailable, true);
    assert_eq!(sa.disk(parts, false), 300 * MI);
    // PIDs: priority, then more processes first.
    let many = PodStats {
        processes: 50,
        ..Default::default()
    };
    let few = PodStats {
        processes: 2,
        ..Default::default()
    };
    let mut pods = vec![
        Candidate {
            pod: &a,
            stats: Some(&few),
        },
        Candidate {
            pod: &b,
            stats: Some(&many),
        },
    ];
    rank(Signal::PidAvailable, &mut pods, false);
    assert_eq!(pods[0].pod.metadata.name.as_deref(), Some("b"));
}

#[test]
fn messages_are_the_kubelets() {
    assert_eq!(message::binary(100 * MI), "100Mi");
    assert_eq!(message::binary(1536), "1536");
    assert_eq!(message::binary(512), "512");
    assert_eq!(message::binary(52428800 + 4096), "51204Ki");
    assert_eq!(message::decimal(2000), "2k");
    assert_eq!(message::decimal(1500), "1500");
    assert_eq!(message::decimal(0), "0");
    let s = settings(vec![threshold(Signal::MemoryAvailable, 100 * MI, 0, None)]);
    let p = pod(
        "p",
        serde_json::json!({"containers": [
            container("hog", serde_json::json!({"requests": {"memory": "64Mi"}})),
            container("idle", serde_json::json!({"requests": {"memory": "64Mi"}}))
        ]}),
    );
    let mut st = stats("p", "hog", 150 * MI);
    st.containers.push(ContainerStats {
        name: "idle".into(),
        memory_working_set: MI,
        ..Default::default()
    });
    let o = obs(&[(Signal::MemoryAvailable, 50 * MI, 4096 * MI)]);
    let m = message::node_pressure(Resource::Memory, &p, Some(&st), &s, &[0], &o);
    assert_eq!(
        m,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         Container hog was using 150Mi, request is 64Mi, has larger consumption of memory. "
    );
    // Pod-level resources: the pod's usage against its pod-level memory request first.
    let plr = pod(
        "plr",
        serde_json::json!({
            "resources": {"requests": {"memory": "128Mi"}},
            "containers": [container("hog", serde_json::json!({"requests": {"memory": "64Mi"}}))]
        }),
    );
    let mut st = stats("plr", "hog", 150 * MI);
    st.memory_working_set = 160 * MI;
    let m = message::node_pressure(Resource::Memory, &plr, Some(&st), &s, &[0], &o);
    assert_eq!(
        m,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         Pod plr was using 160Mi, request is 128Mi, has larger consumption of memory. \
         Container hog was using 150Mi, request is 64Mi, has larger consumption of memory. "
    );
    // A percentage threshold reads as the quantity it resolves to.
    let pct = settings(vec![Threshold {
        signal: Signal::NodeFsAvailable,
        value: Value::Percentage(0.5),
        grace: Duration::ZERO,
        min_reclaim: None,
    }]);
    let o = obs(&[(Signal::NodeFsAvailable, 100 * MI, 1024 * MI)]);
    let m = message::node_pressure(Resource::EphemeralStorage, &p, None, &pct, &[0], &o);
    assert_eq!(
        m,
        "The node was low on resource: ephemeral-storage. Threshold quantity: 512Mi, available: 100Mi. "
    );
}

#[test]
fn local_storage_limits() {
    let p = pod(
        "p",
        serde_json::json!({
            "containers": [container("c", serde_json::json!({"limits": {"ephemeral-storage": "10Mi"}}))],
            "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Mi"}}, {"name": "other", "emptyDir": {}}]
        }),
    );
    let st = |vol: i64, rootfs: i64, logs: i64| PodStats {
        uid: "p".into(),
        containers: vec![ContainerStats {
            name: "c".into(),
            rootfs_bytes: rootfs,
            logs_bytes: logs,
            ..Default::default()
        }],
        volumes: vec![
            VolumeStats {
                name: "data".into(),
                bytes: vol,
                ..Default::default()
            },
            VolumeStats {
                name: "other".into(),
                bytes: 0,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert_eq!(local::over_limit(&p, &st(MI, 0, 0), false), None);
    assert_eq!(
        local::over_limit(&p, &st(MI + 4096, 0, 0), false).as_deref(),
        Some("Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ")
    );
    assert_eq!(
        local::over_limit(&p, &st(0, 6 * MI, 5 * MI), false).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 10Mi. ")
    );
    // A container alone over its limit (two containers: the pod total is theirs together).
    let two = pod(
        "t",
        serde_json::json!({"containers": [
            container("c", serde_json::json!({"limits": {"ephemeral-storage": "10Mi"}})),
            container("d", serde_json::json!({"limits": {"ephemeral-storage": "100Mi"}}))
        ]}),
    );
    let mut s2 = st(0, 0, 11 * MI);
    s2.containers.push(ContainerStats {
        name: "d".into(),
        ..Default::default()
    });
    assert_eq!(
        local::over_limit(&two, &s2, false).as_deref(),
        Some("Container c exceeded its local ephemeral storage limit \"10Mi\". ")
    );
    // With a dedicated image filesystem the writable layer does not count for the container.
    let s3 = {
        let mut s = st(0, 20 * MI, 0);
        s.containers.push(ContainerStats {
            name: "d".into(),
            ..Default::default()
        });
        s
    };
    assert_eq!(
        local::over_limit(&two, &s3, true),
        None,
        "the pod's 20Mi are within 110Mi, the container's logs within 10Mi"
    );
}

#[test]
fn critical_pods_grace_and_admission_under_pressure() {
    let mut p = pod(
        "p",
        serde_json::json!({"containers": [container("c", serde_json::json!({}))],
        "terminationGracePeriodSeconds": 30}),
    );
    let hard = threshold(Signal::MemoryAvailable, MI, 0, None);
    let soft = threshold(Signal::MemoryAvailable, MI, 10, None);
    assert_eq!(grace_seconds(&p, &hard, 60), 1);
    assert_eq!(grace_seconds(&p, &soft, 60), 30);
    assert_eq!(grace_seconds(&p, &soft, 5), 5);
    assert!(!is_critical(&p));
    let mem = [NodeCondition::MemoryPressure];
    assert_eq!(
        admit_under_pressure(&p, &mem).unwrap_err(),
        "The node had condition: [MemoryPressure]. "
    );
    let mut burstable = p.clone();
    if let Some(s) = burstable.spec.as_mut() {
        s.containers[0].resources =
            serde_json::from_value(serde_json::json!({"requests": {"cpu": "10m"}})).ok();
    }
    assert_eq!(admit_under_pressure(&burstable, &mem), Ok(()));
    assert_eq!(
        admit_under_pressure(
            &burstable,
            &[NodeCondition::MemoryPressure, NodeCondition::DiskPressure]
        )
        .unwrap_err(),
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
    if let Some(s) = p.spec.as_mut() {
        s.tolerations = serde_json::from_value(serde_json::json!([
            {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}
        ]))
        .ok();
    }
    assert_eq!(admit_under_pressure(&p, &mem), Ok(()));
    let mut static_pod = burstable.clone();
    static_pod.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".to_string(),
        "file".to_string(),
    )]));
    assert!(is_critical(&static_pod));
    assert_eq!(
        admit_under_pressure(&static_pod, &[NodeCondition::DiskPressure]),
        Ok(())
    );
    let mut node_critical = burstable.clone();
    if let Some(s) = node_critical.spec.as_mut() {
        s.priority = Some(2_000_001_000);
    }
    assert!(is_critical(&node_critical));
    assert_eq!(reclaim_for(Signal::NodeFsAvailable, true), Reclaim::Nothing);
    assert_eq!(
        reclaim_for(Signal::NodeFsAvailable, false),
        Reclaim::ContainersAndImages
    );
    assert_eq!(
        reclaim_for(Signal::ImageFsInodesFree, true),
        Reclaim::ContainersAndImages
    );
    assert_eq!(
        reclaim_for(Signal::MemoryAvailable, false),
        Reclaim::Nothing
    );
}
