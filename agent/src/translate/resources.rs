//! Resources and QoS, as the kubelet computes them: the pod's QoS class (`ComputePodQOS`),
//! CPU shares and CFS quota, the pod cgroup's limits (with sidecars and overhead), and the OOM
//! score of a container.

use std::collections::BTreeMap;

use bosun_runtime::{QosClass, Resources};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;
use crate::quantity::{
    ceil_div, container_res, pod_level_limit, pod_level_request, pod_level_resources_set,
    quantity_in, ContainerRes, ParsedQuantity,
};

/// The pod's QoS class, computed exactly like `ComputePodQOS` (containers and init containers,
/// only cpu and memory count, requests defaulted from limits like the apiserver does).
///
/// With pod-level resources (`spec.resources`, present even when empty, as the kubelet tests
/// it), only they count: the containers' resources are not looked at.
pub fn qos_class(pod: &Pod) -> QosClass {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let pod_level = crate::quantity::pod_level(pod);
    if let Some(r) = pod_level {
        let positive = |list: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            ["cpu", "memory"]
                .into_iter()
                .filter_map(|name| {
                    quantity_in(list, name)
                        .map(ParsedQuantity::milli_value)
                        .filter(|v| *v > 0)
                        .map(|v| (name, v))
                })
                .collect::<Vec<_>>()
        };
        requests.extend(positive(r.requests.as_ref()));
        if r.limits.as_ref().is_some_and(|l| !l.is_empty()) {
            let found = positive(r.limits.as_ref());
            if found.len() != 2 {
                guaranteed = false;
            }
            limits.extend(found);
        }
    }
    for c in containers(pod)
        .iter()
        .chain(init_containers(pod))
        .filter(|_| pod_level.is_none())
    {
        let r = container_res(c);
        for (name, v) in [("cpu", r.cpu_request), ("memory", r.memory_request)] {
            if let Some(v) = v.filter(|v| *v > 0) {
                *requests.entry(name).or_default() += v;
            }
        }
        let mut found = 0;
        for (name, v) in [("cpu", r.cpu_limit), ("memory", r.memory_limit)] {
            if let Some(v) = v.filter(|v| *v > 0) {
                found += 1;
                *limits.entry(name).or_default() += v;
            }
        }
        if found != 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed {
        for (name, req) in &requests {
            if limits.get(name) != Some(req) {
                guaranteed = false;
                break;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const QUOTA_PERIOD: u64 = 100_000;
const MIN_QUOTA: i64 = 1000;

/// `MilliCPUToShares`: milli*1024/1000, at least 2, at most 262144.
pub fn milli_cpu_to_shares(milli: i128) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = milli.saturating_mul(1024) / 1000;
    shares.clamp(MIN_SHARES as i128, MAX_SHARES as i128) as u64
}

/// `milliCPUToQuota` with the 100ms period: milli*period/1000, at least 1000; `None` for no limit.
pub fn milli_cpu_to_quota(milli: i128) -> Option<i64> {
    if milli <= 0 {
        return None;
    }
    let quota = milli.saturating_mul(QUOTA_PERIOD as i128) / 1000;
    Some(quota.clamp(MIN_QUOTA as i128, i64::MAX as i128) as i64)
}

fn milli_to_bytes(milli: i128) -> i64 {
    ceil_div(milli, 1000).clamp(0, i64::MAX as i128) as i64
}

/// Aggregates a per-container value like the kubelet's `PodRequests`/`PodLimits`: regular
/// containers and sidecars add up, a regular init container counts as max(itself + sidecars
/// started before it), and the pod takes the larger of the two. Returns `None` when no container
/// has a value.
fn aggregate(pod: &Pod, get: impl Fn(&ContainerRes) -> Option<i128>) -> Option<i128> {
    let mut any = false;
    let mut sum: i128 = 0;
    for c in containers(pod) {
        if let Some(v) = get(&container_res(c)) {
            any = true;
            sum += v;
        }
    }
    let mut sidecars: i128 = 0;
    let mut init_max: i128 = 0;
    for c in init_containers(pod) {
        let v = get(&container_res(c));
        any |= v.is_some();
        let v = v.unwrap_or(0);
        let effective = if is_sidecar(c) {
            sum += v;
            sidecars += v;
            sidecars
        } else {
            v + sidecars
        };
        init_max = init_max.max(effective);
    }
    any.then_some(sum.max(init_max))
}

fn overhead(pod: &Pod, name: &str) -> Option<i128> {
    quantity_in(spec_of(pod).and_then(|s| s.overhead.as_ref()), name)
        .map(ParsedQuantity::milli_value)
}

/// The pod-level cgroup, like the kubelet's `ResourceConfigForPod`.
pub fn pod_resources(pod: &Pod) -> Resources {
    let all = || containers(pod).iter().chain(init_containers(pod));
    // Pod-level resources (PodLevelResources): a pod-level request or limit stands for the
    // containers' sum of that resource, and a pod-level limit declares it.
    let pod_limit = |name| pod_level_limit(pod, name).filter(|v| *v > 0);
    let cpu_limits_declared = all().all(|c| container_res(c).cpu_limit.is_some_and(|v| v > 0))
        || pod_limit("cpu").is_some();
    let memory_limits_declared = all()
        .all(|c| container_res(c).memory_limit.is_some_and(|v| v > 0))
        || pod_limit("memory").is_some();
    let cpu_requests = pod_level_request(pod, "cpu")
        .or_else(|| aggregate(pod, |r| r.cpu_request))
        .unwrap_or(0)
        + overhead(pod, "cpu").unwrap_or(0);
    let cpu_limits = pod_level_limit(pod, "cpu")
        .or_else(|| aggregate(pod, |r| r.cpu_limit))
        .unwrap_or(0)
        + overhead(pod, "cpu").unwrap_or(0);
    let memory_limits = pod_level_limit(pod, "memory")
        .or_else(|| aggregate(pod, |r| r.memory_limit))
        .unwrap_or(0)
        + overhead(pod, "memory").unwrap_or(0);
    let shares = milli_cpu_to_shares(cpu_requests);
    match qos_class(pod) {
        QosClass::Guaranteed => Resources {
            cpu_shares: Some(shares),
            cpu_quota: milli_cpu_to_quota(cpu_limits),
            cpu_period: Some(QUOTA_PERIOD),
            memory_limit: Some(milli_to_bytes(memory_limits)),
            pids_limit: None,
        },
        QosClass::Burstable => {
            let mut r = Resources {
                cpu_shares: Some(shares),
                ..Resources::default()
            };
            if cpu_limits_declared {
                r.cpu_quota = milli_cpu_to_quota(cpu_limits);
                r.cpu_period = Some(QUOTA_PERIOD);
            }
            if memory_limits_declared {
                r.memory_limit = Some(milli_to_bytes(memory_limits));
            }
            r
        }
        QosClass::BestEffort => Resources {
            cpu_shares: Some(MIN_SHARES),
            ..Resources::default()
        },
    }
}

/// The container cgroup, like the kubelet's `calculateLinuxResources`: a container without a
/// CPU or memory limit of its own gets the pod-level limit when the pod has pod-level resources
/// (`getCPULimit`/`getMemoryLimit`).
pub fn container_resources(pod: &Pod, container: &Container) -> Resources {
    let r = container_res(container);
    let pod_level = pod_level_resources_set(pod);
    let limit = |own: Option<i128>, name: &str| match own.filter(|v| *v > 0) {
        Some(v) => Some(v),
        None if pod_level => pod_level_limit(pod, name),
        None => own,
    };
    let quota = limit(r.cpu_limit, "cpu").and_then(milli_cpu_to_quota);
    Resources {
        cpu_shares: Some(milli_cpu_to_shares(r.cpu_request.unwrap_or(0))),
        cpu_quota: quota,
        cpu_period: quota.map(|_| QUOTA_PERIOD),
        memory_limit: limit(r.memory_limit, "memory")
            .filter(|v| *v > 0)
            .map(milli_to_bytes),
        pids_limit: None,
    }
}

/// The kubelet's `remainingPodMemReqPerContainer` (0 without a pod-level memory request): the
/// pod-level memory request minus the containers' aggregated requests, divided by the number
/// of containers and init containers.
fn remaining_pod_memory_per_container(pod: &Pod) -> i128 {
    let Some(pod_request) = pod_level_request(pod, "memory").filter(|v| *v != 0) else {
        return 0;
    };
    let n = (containers(pod).len() + init_containers(pod).len()).max(1) as i128;
    let containers = aggregate(pod, |r| r.memory_request).unwrap_or(0);
    (ceil_div(pod_request, 1000) - ceil_div(containers, 1000)) / n
}

const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Is `pod` a static pod (from a file, not the apiserver)?
pub fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api")
}

fn is_node_critical(pod: &Pod) -> bool {
    let Some(spec) = spec_of(pod) else {
        return false;
    };
    let critical =
        is_static_pod(pod) || spec.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    critical && spec.priority_class_name.as_deref() == Some("system-node-critical")
}

/// The container's oom_score_adj, exactly like the kubelet's `GetContainerOOMScoreAdjust`.
pub fn oom_score_adj(pod: &Pod, container: &Container, node_memory_bytes: u64) -> i32 {
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ as i32;
    }
    match qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ as i32,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ as i32,
        QosClass::Burstable => {}
    }
    let capacity = node_memory_bytes.max(1) as i128;
    // Pod-level memory requests: what the containers do not request of it is shared equally
    // among all of them (the kubelet's `remainingPodMemReqPerContainer`).
    let remaining = remaining_pod_memory_per_container(pod);
    let request_bytes =
        |c: &Container| ceil_div(container_res(c).memory_request.unwrap_or(0), 1000) + remaining;
    let score = |bytes: i128| 1000 - (1000 * bytes) / capacity;
    let mut adj = score(request_bytes(container));
    let sidecar = is_sidecar(container)
        && init_containers(pod)
            .iter()
            .any(|c| c.name == container.name);
    if sidecar {
        if let Some(min_regular) = containers(pod).iter().map(request_bytes).min() {
            adj = adj.min(score(min_regular));
        }
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ as i128 {
        return (1000 + GUARANTEED_OOM_SCORE_ADJ) as i32;
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ as i128 {
        return (adj - 1) as i32;
    }
    adj as i32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::testing::*;

    // --- QoS ---------------------------------------------------------------------------------

    #[test]
    fn qos_table() {
        use QosClass::*;
        type Res<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Res, Res, QosClass)] = &[
            (&[("", "")], &[], BestEffort),
            (&[("", ""), ("", "")], &[], BestEffort),
            (&[("0,0", "")], &[], BestEffort),
            (&[("1,1Gi", "1,1Gi")], &[], Guaranteed),
            // Limits only: requests default to limits.
            (&[("", "1,1Gi")], &[], Guaranteed),
            (&[("", "100m,64Mi"), ("", "2,1Gi")], &[], Guaranteed),
            (&[("1000m,1024Mi", "1,1Gi")], &[], Guaranteed),
            (&[("500m,1Gi", "1,1Gi")], &[], Burstable),
            (&[("1,", "1,")], &[], Burstable),
            (&[(",1Gi", ",1Gi")], &[], Burstable),
            (&[("100m,", "")], &[], Burstable),
            (&[("1,1Gi", "1,1Gi"), ("", "")], &[], Burstable),
            (&[("", "1,1Gi")], &[("", "")], Burstable),
            (&[("", "1,1Gi")], &[("", "1,1Gi")], Guaranteed),
            (&[("", "")], &[("100m,", "")], Burstable),
            (&[("1,1Gi", "1,2Gi")], &[], Burstable),
        ];
        for (i, (cs, init, want)) in cases.iter().enumerate() {
            assert_eq!(qos_class(&pod_res(cs, init)), *want, "case {i}");
        }
    }

    // --- pod-level resources (PodLevelResources) -------------------------------------------------

    #[test]
    fn qos_with_pod_level_resources() {
        use QosClass::*;
        // (pod requests, pod limits), containers, want: only the pod level counts once set.
        type Case<'a> = ((&'a str, &'a str), &'a [(&'a str, &'a str)], QosClass);
        let cases: &[Case] = &[
            (("1,1Gi", "1,1Gi"), &[("", "")], Guaranteed),
            // Containers' own resources do not matter when the pod level is set.
            (("1,1Gi", "1,1Gi"), &[("100m,", "")], Guaranteed),
            (("500m,1Gi", "1,1Gi"), &[("", "")], Burstable),
            // A memory limit only: not guaranteed.
            ((",1Gi", ",1Gi"), &[("", "")], Burstable),
            (("100m,", ""), &[("", "")], Burstable),
            // Requests without limits.
            (("1,1Gi", ""), &[("", "1,1Gi")], Burstable),
            // `resources: {}`: the pod level is present but empty -> BestEffort, whatever the
            // containers say (the kubelet tests `pod.Spec.Resources != nil`).
            (("", ""), &[("1,1Gi", "1,1Gi")], BestEffort),
            // Zero quantities do not count.
            (("0,0", "0,0"), &[("", "")], BestEffort),
        ];
        for (i, (pl, cs, want)) in cases.iter().enumerate() {
            assert_eq!(qos_class(&pod_level_res(*pl, cs, &[])), *want, "case {i}");
        }
    }

    #[test]
    fn pod_cgroup_with_pod_level_resources() {
        let gib = 1024 * 1024 * 1024;
        // Guaranteed at the pod level, containers without resources.
        let p = pod_level_res(("1,1Gi", "1,1Gi"), &[("", ""), ("", "")], &[]);
        assert_eq!(
            pod_resources(&p),
            Resources {
                cpu_shares: Some(1024),
                cpu_quota: Some(100_000),
                cpu_period: Some(100_000),
                memory_limit: Some(gib),
                pids_limit: None,
            }
        );
        // Burstable: a pod-level memory limit declares it even though no container has one;
        // the CPU has no limit anywhere: shares from the pod-level request only.
        let p = pod_level_res(("200m,64Mi", ",256Mi"), &[("", ""), ("50m,", "")], &[]);
        assert_eq!(
            pod_resources(&p),
            Resources {
                cpu_shares: Some(204),
                memory_limit: Some(256 << 20),
                ..Resources::default()
            }
        );
        // A pod-level CPU limit, the pod-level memory limit over the containers' sum.
        let p = pod_level_res(("", "2,512Mi"), &[("100m,", "1,1Gi")], &[]);
        let r = pod_resources(&p);
        assert_eq!(
            (r.cpu_quota, r.memory_limit),
            (Some(200_000), Some(512 << 20))
        );
        // The pod-level request replaces the aggregate only for the resources it names.
        let p = pod_level_res((",128Mi", ",1Gi"), &[("300m,", "")], &[]);
        assert_eq!(pod_resources(&p).cpu_shares, Some(307));
        // Pod overhead on top of the pod-level values.
        let mut p = pod_level_res(("1,1Gi", "1,1Gi"), &[("", "")], &[]);
        p.spec.as_mut().unwrap().overhead = Some(
            [(
                "memory".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("64Mi".into()),
            )]
            .into(),
        );
        assert_eq!(pod_resources(&p).memory_limit, Some(gib + (64 << 20)));
    }

    #[test]
    fn container_cgroup_with_pod_level_limits() {
        // A container without limits gets the pod-level ones; its own limits win.
        let p = pod_level_res(("", "500m,256Mi"), &[("100m,", ""), ("", "2,1Gi")], &[]);
        let cs = &p.spec.as_ref().unwrap().containers;
        let first = container_resources(&p, &cs[0]);
        assert_eq!(
            first,
            Resources {
                cpu_shares: Some(102),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(256 << 20),
                pids_limit: None,
            }
        );
        let second = container_resources(&p, &cs[1]);
        assert_eq!(
            (second.cpu_quota, second.memory_limit),
            (Some(200_000), Some(1 << 30))
        );
        // Pod-level requests only: no limit comes from them.
        let p = pod_level_res(("1,1Gi", ""), &[("", "")], &[]);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!((r.cpu_quota, r.memory_limit), (None, None));
    }

    #[test]
    fn oom_score_with_pod_level_requests() {
        let gib: u64 = 1024 * 1024 * 1024;
        // Burstable: pod requests 2Gi, the two containers request 512Mi between them: each
        // container counts 512Mi + (2Gi - 512Mi) / 2 = ... as the kubelet's formula.
        let p = pod_level_res((",2Gi", ""), &[(",512Mi", ""), ("", "")], &[]);
        let cs = &p.spec.as_ref().unwrap().containers;
        let remaining = (2 * gib - 512 * 1024 * 1024) / 2;
        let want = |req: u64| (1000 - (1000 * (req + remaining)) / (10 * gib)) as i32;
        assert_eq!(oom_score_adj(&p, &cs[0], 10 * gib), want(512 * 1024 * 1024));
        assert_eq!(oom_score_adj(&p, &cs[1], 10 * gib), want(0));
        // Guaranteed at the pod level: -997 like any guaranteed pod.
        let g = pod_level_res(("1,1Gi", "1,1Gi"), &[("", "")], &[]);
        assert_eq!(
            oom_score_adj(&g, &g.spec.as_ref().unwrap().containers[0], 10 * gib),
            -997
        );
    }

    // --- cgroup numbers -------------------------------------------------------------------------

    #[test]
    fn shares_and_quota_numbers() {
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(250), 256);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(100), Some(10_000));
        assert_eq!(milli_cpu_to_quota(5), Some(1000));
        assert_eq!(milli_cpu_to_quota(1500), Some(150_000));
        assert_eq!(milli_cpu_to_quota(0), None);
    }

    #[test]
    fn container_resources_numbers() {
        let p = pod_res(&[("100m,64Mi", "500m,128Mi")], &[]);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(102),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(128 * 1024 * 1024),
                pids_limit: None,
            }
        );
        // Request defaults to the limit.
        let p = pod_res(&[("", "250m,")], &[]);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(25_000));
        assert_eq!(r.memory_limit, None);
        // Nothing set.
        let p = pod_res(&[("", "")], &[]);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(2),
                ..Resources::default()
            }
        );
        // 0m request -> minimum shares.
        let p = pod_res(&[("0m,", "")], &[]);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(r.cpu_shares, Some(2));
    }

    #[test]
    fn pod_resources_numbers() {
        // Guaranteed: everything set from the sums.
        let p = pod_res(&[("", "1,1Gi"), ("", "500m,512Mi")], &[]);
        assert_eq!(
            pod_resources(&p),
            Resources {
                cpu_shares: Some(1536),
                cpu_quota: Some(150_000),
                cpu_period: Some(100_000),
                memory_limit: Some(1536 * 1024 * 1024),
                pids_limit: None,
            }
        );
        // Burstable with a container lacking limits: shares only.
        let p = pod_res(&[("100m,64Mi", "1,1Gi"), ("200m,", "")], &[]);
        assert_eq!(
            pod_resources(&p),
            Resources {
                cpu_shares: Some(307),
                ..Resources::default()
            }
        );
        // Burstable, all cpu limits but no memory limit.
        let p = pod_res(&[("100m,", "1,"), ("100m,", "1,")], &[]);
        let r = pod_resources(&p);
        assert_eq!(r.cpu_quota, Some(200_000));
        assert_eq!(r.memory_limit, None);
        // Init containers: max of init vs sum of regular.
        let p = pod_res(&[("100m,100Mi", "1,1Gi")], &[("", "2,2Gi")]);
        let r = pod_resources(&p);
        assert_eq!(r.cpu_shares, Some(2048));
        assert_eq!(r.cpu_quota, Some(200_000));
        assert_eq!(r.memory_limit, Some(2 * 1024 * 1024 * 1024));
        // Init container without limits: limits undeclared.
        let p = pod_res(&[("100m,100Mi", "1,1Gi")], &[("", "")]);
        let r = pod_resources(&p);
        assert_eq!(r.cpu_quota, None);
        assert_eq!(r.memory_limit, None);
        // BestEffort: minimal shares.
        let p = pod_res(&[("", "")], &[]);
        assert_eq!(
            pod_resources(&p),
            Resources {
                cpu_shares: Some(2),
                ..Resources::default()
            }
        );
    }

    #[test]
    fn pod_resources_sidecars_add_up() {
        let mut p = pod_res(&[("", "1,1Gi")], &[("", "500m,256Mi"), ("", "1,1Gi")]);
        let init = p.spec.as_mut().unwrap().init_containers.as_mut().unwrap();
        init[0].restart_policy = Some("Always".into());
        let r = pod_resources(&p);
        // regular 1 + sidecar 0.5 = 1.5 > init 1 + sidecar 0.5 = 1.5
        assert_eq!(r.cpu_shares, Some(1536));
        assert_eq!(r.memory_limit, Some(1280 * 1024 * 1024));
    }

    // --- oom score -------------------------------------------------------------------------------

    #[test]
    fn oom_score_adj_values() {
        let gib: u64 = 1 << 30;
        let node = 10 * gib;
        let first = |p: &Pod| p.spec.as_ref().unwrap().containers[0].clone();
        let g = pod_res(&[("", "1,1Gi")], &[]);
        assert_eq!(oom_score_adj(&g, &first(&g), node), -997);
        let be = pod_res(&[("", "")], &[]);
        assert_eq!(oom_score_adj(&be, &first(&be), node), 1000);
        // 1Gi of 10Gi -> 1000 - 100 = 900; of 3Gi -> 1000 - 333 = 667 (integer division).
        let b = pod_res(&[("100m,1Gi", "")], &[]);
        assert_eq!(oom_score_adj(&b, &first(&b), node), 900);
        assert_eq!(oom_score_adj(&b, &first(&b), 3 * gib), 667);
        // No memory request in a burstable pod -> 1000 -> 999.
        let b = pod_res(&[("100m,", "")], &[]);
        assert_eq!(oom_score_adj(&b, &first(&b), node), 999);
        // Requesting all the memory -> clamped at 3.
        let b = pod_res(&[("100m,10Gi", "")], &[]);
        assert_eq!(oom_score_adj(&b, &first(&b), node), 3);
        let b = pod_res(&[("100m,20Gi", "")], &[]);
        assert_eq!(oom_score_adj(&b, &first(&b), node), 3);
        // Node critical static pod.
        let mut c = pod_res(&[("", "")], &[]);
        c.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        assert_eq!(oom_score_adj(&c, &first(&c), node), 1000);
        c.metadata.annotations = Some(
            [(
                "kubernetes.io/config.source".to_string(),
                "file".to_string(),
            )]
            .into(),
        );
        assert_eq!(oom_score_adj(&c, &first(&c), node), -997);
        let mut c = pod_res(&[("", "")], &[]);
        c.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        c.spec.as_mut().unwrap().priority = Some(2_000_001_000);
        assert_eq!(oom_score_adj(&c, &first(&c), node), -997);
    }

    #[test]
    fn oom_score_adj_sidecar_follows_regular_containers() {
        let gib: u64 = 1 << 30;
        let mut p = pod_res(&[("100m,2Gi", "")], &[("100m,", "")]);
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].restart_policy =
            Some("Always".into());
        let sidecar = p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0].clone();
        assert_eq!(oom_score_adj(&p, &sidecar, 10 * gib), 800);
    }
}
