#![allow(clippy::unwrap_used)]

use super::*;
use crate::dra::testing::{claim, pod};

#[test]
fn claim_names_follow_resourceclaim_name() {
    struct Case {
        name: &'static str,
        pod: Pod,
        want: Result<Vec<(String, bool)>, &'static str>,
    }
    let mut unsupported = pod("u1", &[("a", Some("c"))], &[], &[]);
    unsupported
        .spec
        .as_mut()
        .unwrap()
        .resource_claims
        .as_mut()
        .unwrap()[0]
        .resource_claim_name = None;
    let mut none_generated = pod("u1", &[("t", None)], &[("t", "x")], &[]);
    none_generated
        .status
        .as_mut()
        .unwrap()
        .resource_claim_statuses
        .as_mut()
        .unwrap()[0]
        .resource_claim_name = None;
    let cases = vec![
        Case {
            name: "a named claim, owner not checked",
            pod: pod("u1", &[("a", Some("shared"))], &[], &[]),
            want: Ok(vec![("shared".into(), false)]),
        },
        Case {
            name: "a template's generated claim, owner checked",
            pod: pod("u1", &[("t", None)], &[("t", "p-t-abcde")], &[]),
            want: Ok(vec![("p-t-abcde".into(), true)]),
        },
        Case {
            name: "both, in spec order",
            pod: pod(
                "u1",
                &[("t", None), ("a", Some("shared"))],
                &[("t", "p-t-abcde")],
                &[],
            ),
            want: Ok(vec![("p-t-abcde".into(), true), ("shared".into(), false)]),
        },
        Case {
            name: "the status names no claim: nothing needed",
            pod: none_generated,
            want: Ok(vec![]),
        },
        Case {
            name: "a template's claim not made yet",
            pod: pod("u1", &[("t", None)], &[], &[]),
            want: Err("pod \"default/p\": ResourceClaim not created yet"),
        },
        Case {
            name: "neither field",
            pod: unsupported,
            want: Err(
                "pod \"default/p\", spec.resourceClaim \"a\": none of the supported fields are set",
            ),
        },
    ];
    for c in cases {
        assert_eq!(
            claim_names(&c.pod),
            c.want.map_err(String::from),
            "{}",
            c.name
        );
    }
}

#[test]
fn a_claim_is_checked_as_the_kubelet_does() {
    let p = pod("u1", &[("t", None)], &[("t", "gen")], &[]);
    let mut unallocated = claim("gen", "c1", "drv", &["r"], &["u1"], Some("u1"));
    unallocated.status.as_mut().unwrap().allocation = None;
    let mut other_ns = claim("gen", "c1", "drv", &["r"], &["u1"], Some("u1"));
    other_ns.metadata.namespace = Some("other".into());
    /// (case, claim, must check the owner, the drivers or the error).
    type Case<'a> = (&'a str, ResourceClaim, bool, Result<Vec<&'a str>, &'a str>);
    let cases: Vec<Case> = vec![
        (
            "owned, reserved, allocated",
            claim("gen", "c1", "drv", &["r"], &["u1"], Some("u1")),
            true,
            Ok(vec!["drv"]),
        ),
        (
            "two drivers' results",
            {
                let mut c = claim("gen", "c1", "a.example.com", &["r"], &["u1"], Some("u1"));
                let res = c.status.as_mut().unwrap().allocation.as_mut().unwrap();
                let mut more = res.devices.as_ref().unwrap().results.clone().unwrap();
                more[0].driver = "b.example.com".into();
                res.devices
                    .as_mut()
                    .unwrap()
                    .results
                    .as_mut()
                    .unwrap()
                    .extend(more);
                c
            },
            true,
            Ok(vec!["a.example.com", "b.example.com"]),
        ),
        (
            "not the pod's (owner)",
            claim("gen", "c1", "drv", &["r"], &["u1"], Some("u2")),
            true,
            Err("ResourceClaim default/gen was not created for Pod default/p (Pod is not owner)"),
        ),
        (
            "a named claim: the owner is not checked",
            claim("gen", "c1", "drv", &["r"], &["u1"], None),
            false,
            Ok(vec!["drv"]),
        ),
        (
            "another namespace",
            other_ns,
            true,
            Err("ResourceClaim other/gen is not in the same namespace as Pod default/p"),
        ),
        (
            "not reserved for the pod",
            claim("gen", "c1", "drv", &["r"], &["u9"], Some("u1")),
            true,
            Err("pod p (u1) is not allowed to use ResourceClaim gen (c1)"),
        ),
        (
            "not allocated",
            unallocated,
            true,
            Err("ResourceClaim gen: not allocated"),
        ),
    ];
    for (name, c, owner, want) in cases {
        let got = check_claim(&p, &c, owner).map(|i| {
            assert!(!i.prepared && i.pod_uids.is_empty(), "{name}");
            i.driver_state.keys().cloned().collect::<Vec<_>>()
        });
        assert_eq!(
            got,
            want.map(|v| v.into_iter().map(String::from).collect())
                .map_err(String::from),
            "{name}"
        );
    }
}

fn info(name: &str, uid: &str, drivers: &[&str]) -> ClaimInfo {
    ClaimInfo {
        claim_uid: uid.into(),
        claim_name: name.into(),
        namespace: "default".into(),
        pod_uids: BTreeSet::new(),
        driver_state: drivers
            .iter()
            .map(|d| (d.to_string(), DriverState::default()))
            .collect(),
        prepared: false,
    }
}

fn batch_names(b: &Batches) -> Vec<(String, Vec<String>)> {
    b.iter()
        .map(|(d, c)| (d.clone(), c.iter().map(|c| c.name.clone()).collect()))
        .collect()
}

#[test]
fn prepare_batches_what_is_not_prepared_and_shares_claims() {
    let mut cache = Cache::default();
    let b = cache
        .begin_prepare(
            "u1",
            vec![info("a", "ca", &["d1"]), info("b", "cb", &["d1", "d2"])],
        )
        .unwrap();
    assert_eq!(
        batch_names(&b),
        [
            ("d1".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("d2".to_string(), vec!["b".to_string()])
        ]
    );
    // The pods are in the cache (and checkpoint) before the calls.
    assert!(cache.pods().contains("u1"));
    assert!(!cache.prepared_for("default", &["a".into()], "u1"));
    cache.finish_prepare(&b);
    assert!(cache.prepared_for("default", &["a".into(), "b".into()], "u1"));
    // A second pod sharing "a": nothing to call, the pod is added.
    let b2 = cache
        .begin_prepare("u2", vec![info("a", "ca", &["d1"])])
        .unwrap();
    assert!(b2.is_empty());
    assert_eq!(
        cache.claims[&("default".into(), "a".into())].pod_uids,
        BTreeSet::from(["u1".to_string(), "u2".to_string()])
    );
    // A claim of the same name and another uid: the kubelet's error, nothing batched.
    let err = cache
        .begin_prepare("u3", vec![info("a", "other", &["d1"])])
        .unwrap_err();
    assert_eq!(err, "old ResourceClaim with same name a and different UID ca still exists (previous pod force-deleted?!)");
}

#[test]
fn unprepare_waits_for_the_last_pod_of_a_claim() {
    let mut cache = Cache::default();
    let b = cache
        .begin_prepare(
            "u1",
            vec![info("shared", "cs", &["d"]), info("own", "co", &["d"])],
        )
        .unwrap();
    cache.finish_prepare(&b);
    let b = cache
        .begin_prepare("u2", vec![info("shared", "cs", &["d"])])
        .unwrap();
    cache.finish_prepare(&b);
    // u1 ends: its own claim is unprepared, the shared one only loses u1.
    let b = cache.begin_unprepare("u1");
    assert_eq!(
        batch_names(&b),
        [("d".to_string(), vec!["own".to_string()])]
    );
    cache.finish_unprepare(&b);
    assert_eq!(
        cache
            .claims
            .keys()
            .map(|k| k.1.as_str())
            .collect::<Vec<_>>(),
        ["shared"]
    );
    // u2 ends: the shared claim goes.
    let b = cache.begin_unprepare("u2");
    assert_eq!(
        batch_names(&b),
        [("d".to_string(), vec!["shared".to_string()])]
    );
    cache.finish_unprepare(&b);
    assert!(cache.claims.is_empty());
    // A pod with nothing: nothing to do.
    assert!(cache.begin_unprepare("u9").is_empty());
}

/// A device answered: (request names, CDI ids).
type Dev<'a> = (&'a [&'a str], &'a [&'a str]);

/// An answer: (claim uid, its devices, its error) per claim.
fn prep_response(entries: &[(&str, &[Dev], &str)]) -> api::NodePrepareResourcesResponse {
    api::NodePrepareResourcesResponse {
        claims: entries
            .iter()
            .map(|(uid, devs, err)| {
                (
                    uid.to_string(),
                    api::NodePrepareResourceResponse {
                        devices: devs
                            .iter()
                            .map(|(reqs, ids)| api::Device {
                                request_names: reqs.iter().map(|s| s.to_string()).collect(),
                                pool_name: "p".into(),
                                device_name: "d".into(),
                                cdi_device_ids: ids.iter().map(|s| s.to_string()).collect(),
                                share_id: None,
                            })
                            .collect(),
                        error: err.to_string(),
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn prepare_answers_are_checked_as_the_kubelet_does() {
    let claims = vec![
        api::Claim {
            namespace: "default".into(),
            uid: "ca".into(),
            name: "a".into(),
        },
        api::Claim {
            namespace: "default".into(),
            uid: "cb".into(),
            name: "b".into(),
        },
    ];
    let cases: Vec<(&str, api::NodePrepareResourcesResponse, Result<(), &str>)> = vec![
        (
            "both answered",
            prep_response(&[("ca", &[(&["r"], &["v/c=1"])], ""), ("cb", &[], "")]),
            Ok(()),
        ),
        (
            "one claim failed",
            prep_response(&[("ca", &[], ""), ("cb", &[], "no such device")]),
            Err("NodePrepareResources failed for ResourceClaim b: no such device"),
        ),
        (
            "an unknown claim",
            prep_response(&[("zz", &[], "")]),
            Err("NodePrepareResources returned result for unknown claim UID zz"),
        ),
        (
            "one left out",
            prep_response(&[("ca", &[], "")]),
            Err("NodePrepareResources skipped 1 ResourceClaims"),
        ),
    ];
    for (name, resp, want) in cases {
        let mut cache = Cache::default();
        cache
            .begin_prepare("u1", vec![info("a", "ca", &["d"]), info("b", "cb", &["d"])])
            .unwrap();
        assert_eq!(
            cache.apply_prepared("d", &claims, &resp),
            want.map_err(String::from),
            "{name}"
        );
    }
    // A retry's answer replaces the devices of the earlier one.
    let mut cache = Cache::default();
    cache
        .begin_prepare("u1", vec![info("a", "ca", &["d"])])
        .unwrap();
    let one = &claims[..1];
    let r = prep_response(&[("ca", &[(&["r"], &["v/c=1"])], "")]);
    cache.apply_prepared("d", one, &r).unwrap();
    cache.apply_prepared("d", one, &r).unwrap();
    assert_eq!(
        cache.claims[&("default".into(), "a".into())].cdi_devices(""),
        ["v/c=1"]
    );
}

#[test]
fn unprepare_answers_are_checked_as_the_kubelet_does() {
    let claims = vec![api::Claim {
        namespace: "default".into(),
        uid: "ca".into(),
        name: "a".into(),
    }];
    let ok = |uid: &str, err: &str| api::NodeUnprepareResourcesResponse {
        claims: [(
            uid.to_string(),
            api::NodeUnprepareResourceResponse {
                error: err.to_string(),
            },
        )]
        .into(),
    };
    assert_eq!(check_unprepared(&claims, &ok("ca", "")), Ok(()));
    assert_eq!(
        check_unprepared(&claims, &ok("ca", "busy")),
        Err("NodeUnprepareResources failed for ResourceClaim a: busy".to_string())
    );
    assert_eq!(
        check_unprepared(&claims, &ok("x", "")),
        Err("NodeUnprepareResources returned result for unknown claim UID x".to_string())
    );
    assert_eq!(
        check_unprepared(&claims, &Default::default()),
        Err("NodeUnprepareResources skipped 1 ResourceClaims".to_string())
    );
}

#[test]
fn containers_get_the_cdi_devices_of_the_requests_they_name() {
    let mut cache = Cache::default();
    let b = cache
        .begin_prepare(
            "u1",
            vec![info("gen", "cg", &["d"]), info("shared", "cs", &["d"])],
        )
        .unwrap();
    let claims: Vec<api::Claim> = b["d"].clone();
    let resp = prep_response(&[
        (
            "cg",
            &[
                (&["gpu"], &["v/c=gpu0"]),
                (&["nic"], &["v/c=nic0"]),
                (&[], &["v/c=common"]),
            ],
            "",
        ),
        ("cs", &[(&["x"], &["v/c=s0"])], ""),
    ]);
    cache.apply_prepared("d", &claims, &resp).unwrap();
    cache.finish_prepare(&b);
    let p = pod(
        "u1",
        &[("t", None), ("s", Some("shared"))],
        &[("t", "gen")],
        &[
            ("all", &[("t", "")]),
            ("gpu", &[("t", "gpu")]),
            ("both", &[("t", "nic"), ("s", "")]),
            ("none", &[]),
        ],
    );
    let cases: &[(&str, Result<Vec<&str>, &str>)] = &[
        ("all", Ok(vec!["v/c=gpu0", "v/c=nic0", "v/c=common"])),
        ("gpu", Ok(vec!["v/c=gpu0", "v/c=common"])),
        ("both", Ok(vec!["v/c=nic0", "v/c=common", "v/c=s0"])),
        ("none", Ok(vec![])),
    ];
    let containers = p.spec.as_ref().unwrap().containers.clone();
    for (name, want) in cases {
        let c = containers.iter().find(|c| c.name == *name).unwrap();
        assert_eq!(
            cache.container_cdi_devices(&p, c),
            want.clone()
                .map(|v| v.into_iter().map(String::from).collect())
                .map_err(String::from),
            "{name}"
        );
    }
    // A claim the cache does not know: the kubelet's internal error.
    let empty = Cache::default();
    assert_eq!(
        empty.container_cdi_devices(&p, &containers[0]),
        Err(
            "internal error: unable to get claim info for ResourceClaim gen in namespace default"
                .to_string()
        )
    );
}

#[test]
fn retries_back_off() {
    let cases = [
        (0, 5),
        (1, 5),
        (2, 10),
        (3, 20),
        (4, 40),
        (5, 80),
        (6, 120),
        (40, 120),
    ];
    for (n, secs) in cases {
        assert_eq!(retry_after(n), Duration::from_secs(secs), "{n}");
    }
}

#[test]
fn the_checkpoint_round_trips_in_the_kubelets_field_names() {
    let mut cache = Cache::default();
    let b = cache
        .begin_prepare("u1", vec![info("a", "ca", &["d"])])
        .unwrap();
    let r = prep_response(&[("ca", &[(&["r"], &["v/c=1"])], "")]);
    cache.apply_prepared("d", &b["d"], &r).unwrap();
    cache.finish_prepare(&b);
    let json = serde_json::to_value(Checkpoint::new(&cache)).unwrap();
    assert_eq!(json["Kind"], "DRACheckpoint");
    let entry = &json["ClaimInfoStateList"][0];
    assert_eq!(entry["ClaimUID"], "ca");
    assert_eq!(entry["PodUIDs"][0], "u1");
    assert_eq!(
        entry["DriverState"]["d"]["Devices"][0]["CDIDeviceIDs"][0],
        "v/c=1"
    );
    let back: Checkpoint = serde_json::from_value(json).unwrap();
    assert_eq!(Cache::from_list(back.claim_info_state_list), cache);
}
