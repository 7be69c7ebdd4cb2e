use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::config::{ShutdownConfig, ShutdownGracePeriodByPodPriority as P};

fn p(priority: i32, seconds: i64) -> P {
    P {
        priority,
        shutdown_grace_period_seconds: seconds,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn periods_from_shutdown_grace_period_or_by_priority() {
    let cases: Vec<(&str, ShutdownConfig, Vec<P>)> = vec![
        ("off", ShutdownConfig::default(), vec![]),
        (
            "30s with 10s for critical pods",
            ShutdownConfig {
                grace_period: secs(30),
                grace_period_critical_pods: secs(10),
                ..Default::default()
            },
            vec![p(0, 20), p(2_000_000_000, 10)],
        ),
        (
            "no critical part",
            ShutdownConfig {
                grace_period: secs(30),
                ..Default::default()
            },
            vec![p(0, 30), p(2_000_000_000, 0)],
        ),
        (
            "all of it for critical pods",
            ShutdownConfig {
                grace_period: secs(10),
                grace_period_critical_pods: secs(10),
                ..Default::default()
            },
            vec![p(0, 0), p(2_000_000_000, 10)],
        ),
        (
            "a critical part alone is off",
            ShutdownConfig {
                grace_period_critical_pods: secs(10),
                ..Default::default()
            },
            vec![],
        ),
        (
            "by priority, sorted lowest first",
            ShutdownConfig {
                by_pod_priority: vec![p(100000, 10), p(10000, 180), p(1000, 120), p(0, 60)],
                ..Default::default()
            },
            vec![p(0, 60), p(1000, 120), p(10000, 180), p(100000, 10)],
        ),
    ];
    for (name, cfg, want) in cases {
        assert_eq!(periods(&cfg), want, "{name}");
    }
}

#[test]
fn requested_is_the_sum_of_the_groups() {
    assert_eq!(requested(&[]), Duration::ZERO);
    assert_eq!(requested(&[p(0, 20), p(2_000_000_000, 10)]), secs(30));
    assert_eq!(
        requested(&[p(0, 60), p(1000, 120), p(10000, 180), p(100000, 10)]),
        secs(370)
    );
}

#[test]
fn a_pod_goes_to_the_highest_group_at_or_below_its_priority() {
    let periods = [p(1, 10), p(2, 20), p(3, 30), p(4, 40)];
    // The kubelet's groupByPriority table.
    for (priority, group) in [
        (0, 0),
        (1, 0),
        (2, 1),
        (3, 2),
        (4, 3),
        (5, 3),
        (-5, 0),
        (i32::MAX, 3),
    ] {
        assert_eq!(group_of(&periods, priority), group, "priority {priority}");
    }
    let two = [p(0, 20), p(2_000_000_000, 10)];
    for (priority, group) in [
        (0, 0),
        (1000, 0),
        (1_999_999_999, 0),
        (2_000_000_000, 1),
        (2_000_001_000, 1),
    ] {
        assert_eq!(group_of(&two, priority), group, "priority {priority}");
    }
    // Equal priorities: the first of them, as sort.Search finds it.
    assert_eq!(group_of(&[p(0, 1), p(5, 2), p(5, 3)], 5), 1);
    assert_eq!(group_of(&[p(0, 1), p(5, 2), p(5, 3)], 6), 2);
}

fn pod(uid: &str, priority: Option<i32>, grace: Option<i64>) -> Pod {
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "i"}]});
    if let Some(p) = priority {
        spec["priority"] = p.into();
    }
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = g.into();
    }
    serde_json::from_value(serde_json::json!({"metadata": {"uid": uid}, "spec": spec}))
        .expect("pod")
}

#[test]
fn groups_hold_their_pods_with_the_shorter_grace_period() {
    let periods = [p(0, 20), p(2_000_000_000, 10)];
    let pods = [
        pod("regular", None, None),
        pod("short", Some(100), Some(5)),
        pod("long", Some(100), Some(600)),
        pod("zero", None, Some(0)),
        pod("critical", Some(2_000_001_000), Some(30)),
        pod("node-critical-short", Some(2_000_001_000), Some(3)),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let got = groups(&periods, &refs);
    let want = vec![
        Group {
            priority: 0,
            seconds: 20,
            pods: vec![
                // No terminationGracePeriodSeconds in the spec (the apiserver defaults it to
                // 30): the group's.
                ("regular".into(), 20),
                ("short".into(), 5),
                ("long".into(), 20),
                ("zero".into(), 0),
            ],
        },
        Group {
            priority: 2_000_000_000,
            seconds: 10,
            pods: vec![("critical".into(), 10), ("node-critical-short".into(), 3)],
        },
    ];
    assert_eq!(got, want);
    // Every group is listed, with or without pods; no groups: nothing.
    let only_regular = groups(&periods, &refs[..1]);
    assert_eq!(only_regular.len(), 2);
    assert!(only_regular[1].pods.is_empty());
    assert!(groups(&[], &refs).is_empty());
}

#[test]
fn the_logind_dropin_says_whole_seconds() {
    assert_eq!(
        logind_dropin(secs(30)),
        "# bosun logind override\n[Login]\nInhibitDelayMaxSec=30\n"
    );
    assert!(logind_dropin(Duration::from_millis(370_400)).contains("InhibitDelayMaxSec=370\n"));
}
