//! The node's resource contract, pure: its `allocatable` (capacity minus `kubeReserved`,
//! `systemReserved` and the hard eviction thresholds, the kubelet's
//! `GetNodeAllocatableReservation`), what the `kubepods` cgroup gets with
//! `enforceNodeAllocatable: [pods]`, a pod's requests (`resourcehelper.PodRequests`), and the
//! kubelet's admission of a pod that reached the node (`lifecycle.predicateAdmitHandler`: the
//! scheduler's resource fit, node affinity/selector, node name, host ports and NoExecute taints,
//! with the kubelet's reasons and messages), for pods that bypassed the scheduler.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{parse_quantity, quantity_in};
use crate::translate;

/// The resources the node reports and pods request, in their smallest units: cpu in
/// millicores, memory, ephemeral storage and hugepages in bytes, pods and pids as counts.
pub type ResourceList = BTreeMap<String, i64>;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";
pub const PIDS: &str = "pid";

/// The reason of an admission that failed for lack of `resource`: `OutOfcpu`, `OutOfmemory`,
/// `OutOfephemeral-storage`, `OutOfpods` (the kubelet's `InsufficientResourcePrefix`).
pub fn out_of(resource: &str) -> String {
    format!("OutOf{resource}")
}

/// A resource list as config files and specs write it (`{cpu: 500m, memory: 1Gi}`) in the
/// units of [`ResourceList`]: cpu in millicores, everything else in whole units (rounded up).
pub fn parse_resource_list(map: &BTreeMap<String, String>) -> Result<ResourceList, String> {
    let mut out = ResourceList::new();
    for (k, v) in map {
        let q = parse_quantity(v).map_err(|e| format!("{k}: {v:?} is not a quantity: {e}"))?;
        if q.milli_value() < 0 {
            return Err(format!("{k}: {v:?} must not be negative"));
        }
        out.insert(k.clone(), units(k, q.milli_value()));
    }
    Ok(out)
}

/// Thousandths of `resource` in the units of [`ResourceList`].
fn units(resource: &str, milli: i128) -> i64 {
    let v = if resource == CPU {
        milli
    } else {
        crate::quantity::ceil_div(milli, 1000)
    };
    v.clamp(0, i64::MAX as i128) as i64
}

/// The amount of `resource` in a Kubernetes resource list.
fn amount(list: Option<&BTreeMap<String, Quantity>>, resource: &str) -> Option<i64> {
    quantity_in(list, resource).map(|q| units(resource, q.milli_value()))
}

/// A resource list as the Node's status writes it: cpu in cores or millicores, bytes with the
/// largest exact binary suffix, counts as numbers.
pub fn to_quantities(list: &ResourceList) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(k, v)| {
            let text = if k == CPU {
                if v % 1000 == 0 {
                    (v / 1000).to_string()
                } else {
                    format!("{v}m")
                }
            } else if k == PODS || k == PIDS {
                v.to_string()
            } else {
                crate::quantity::binary_si(*v)
            };
            (k.clone(), Quantity(text))
        })
        .collect()
}

/// What the node keeps from pods: `systemReserved` + `kubeReserved` + the hard eviction
/// thresholds of `memory.available` and `nodefs.available` (resolved against capacity).
pub fn reservation(
    capacity: &ResourceList,
    system_reserved: &ResourceList,
    kube_reserved: &ResourceList,
    hard_eviction: &ResourceList,
) -> ResourceList {
    let mut out = ResourceList::new();
    for k in capacity.keys() {
        let v = [system_reserved, kube_reserved, hard_eviction]
            .iter()
            .map(|l| l.get(k).copied().unwrap_or(0))
            .fold(0i64, i64::saturating_add);
        if v != 0 {
            out.insert(k.clone(), v);
        }
    }
    out
}

/// The Node's `allocatable`: capacity minus the reservation, never below zero; memory also
/// loses what hugepages take (the kubelet's node status setter).
pub fn allocatable(capacity: &ResourceList, reservation: &ResourceList) -> ResourceList {
    let mut out: ResourceList = capacity
        .iter()
        .map(|(k, v)| {
            let left = v.saturating_sub(reservation.get(k).copied().unwrap_or(0));
            (k.clone(), left.max(0))
        })
        .collect();
    let hugepages: i64 = capacity
        .iter()
        .filter(|(k, _)| k.starts_with("hugepages-"))
        .map(|(_, v)| *v)
        .sum();
    if let Some(m) = out.get_mut(MEMORY) {
        *m = (*m - hugepages).max(0);
    }
    out
}

/// What the `kubepods` cgroup is limited to: with `enforceNodeAllocatable` naming `pods`,
/// capacity minus `systemReserved` and `kubeReserved` (not the eviction thresholds: the
/// eviction manager acts before the cgroup's limit is reached); else capacity.
pub fn pods_cgroup_limits(
    capacity: &ResourceList,
    system_reserved: &ResourceList,
    kube_reserved: &ResourceList,
    enforce_pods: bool,
) -> ResourceList {
    capacity
        .iter()
        .map(|(k, v)| {
            if !enforce_pods {
                return (k.clone(), *v);
            }
            let reserved = [system_reserved, kube_reserved]
                .iter()
                .map(|l| l.get(k).copied().unwrap_or(0))
                .fold(0i64, i64::saturating_add);
            (k.clone(), v.saturating_sub(reserved).max(0))
        })
        .collect()
}

/// The requests of one container (a missing request takes its limit's value, as the apiserver
/// defaults it).
fn container_requests(c: &Container, resource: &str) -> Option<i64> {
    let res = c.resources.as_ref();
    amount(res.and_then(|r| r.requests.as_ref()), resource)
        .or_else(|| amount(res.and_then(|r| r.limits.as_ref()), resource))
}

/// The pod's request of `resource` (`resourcehelper.PodRequests` with the overhead): the sum of
/// the regular containers and sidecars, or the most any init container needs with the sidecars
/// started before it, whichever is more; `None` when no container names the resource.
///
/// With pod-level requests (`spec.resources.requests`, PodLevelResources) of `resource`, they
/// stand for the containers' sum, plus the overhead.
pub fn pod_request(pod: &Pod, resource: &str) -> Option<i64> {
    if let Some(v) = crate::quantity::pod_level_request(pod, resource) {
        let v = units(resource, v);
        let overhead = amount(
            pod.spec.as_ref().and_then(|s| s.overhead.as_ref()),
            resource,
        );
        return Some(v.saturating_add(overhead.unwrap_or(0)));
    }
    aggregate(pod, resource, |c| container_requests(c, resource))
}

/// The pod's limit of `resource` (`resourcehelper.PodLimits`), aggregated as requests are.
pub fn pod_limit(pod: &Pod, resource: &str) -> Option<i64> {
    aggregate(pod, resource, |c| {
        amount(
            c.resources.as_ref().and_then(|r| r.limits.as_ref()),
            resource,
        )
    })
}

fn aggregate(pod: &Pod, resource: &str, of: impl Fn(&Container) -> Option<i64>) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut any = false;
    let mut sum = 0i64;
    for c in &spec.containers {
        if let Some(v) = of(c) {
            any = true;
            sum = sum.saturating_add(v);
        }
    }
    let mut sidecars = 0i64;
    let mut init_max = 0i64;
    for c in spec.init_containers.iter().flatten() {
        let v = of(c);
        any |= v.is_some();
        let v = v.unwrap_or(0);
        if translate::is_sidecar(c) {
            sum = sum.saturating_add(v);
            sidecars = sidecars.saturating_add(v);
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(v.saturating_add(sidecars));
        }
    }
    if !any {
        return None;
    }
    let mut total = sum.max(init_max);
    if total != 0 {
        if let Some(o) = amount(spec.overhead.as_ref(), resource) {
            total = total.saturating_add(o);
        }
    }
    Some(total)
}

/// A pod's requests of every resource the admission checks (extended resources too).
pub fn pod_requests(pod: &Pod) -> ResourceList {
    let mut out = ResourceList::new();
    let mut names: Vec<String> = vec![CPU.into(), MEMORY.into(), EPHEMERAL_STORAGE.into()];
    for c in pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    }) {
        for list in c
            .resources
            .iter()
            .flat_map(|r| r.requests.iter().chain(r.limits.iter()))
        {
            for k in list.keys() {
                if (k.starts_with("hugepages-") || is_extended_resource_name(k))
                    && !names.contains(k)
                {
                    names.push(k.clone());
                }
            }
        }
    }
    for list in crate::quantity::pod_level(pod)
        .iter()
        .flat_map(|r| r.requests.iter().chain(r.limits.iter()))
    {
        for k in list.keys() {
            if k.starts_with("hugepages-") && !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    for name in names {
        if let Some(v) = pod_request(pod, &name) {
            out.insert(name, v);
        }
    }
    out
}

/// Whether `name` is an extended resource (a device plugin's, or one an administrator put on
/// the Node): `domain/name`, a qualified
/// name, not in the `kubernetes.io` domains, and not `requests.`-prefixed (the kubelet's
/// IsExtendedResourceName).
pub fn is_extended_resource_name(name: &str) -> bool {
    let Some((domain, rest)) = name.split_once('/') else {
        return false;
    };
    if domain == "kubernetes.io"
        || domain.ends_with(".kubernetes.io")
        || name.starts_with("requests.")
    {
        return false;
    }
    let dns_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let b = rest.as_bytes();
    let name_ok = !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    dns_ok && name_ok
}

/// What admission knows of the node: the Node's labels, taints and allocatable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub allocatable: ResourceList,
}

impl NodeInfo {
    /// The node with the device plugins' resources (resource -> healthy devices) in its
    /// allocatable, as the kubelet's `UpdatePluginResources` gives admission the Node's
    /// extended resources: a plugin's resource replaces what the config had of that name.
    pub fn with_devices(&self, devices: &ResourceList) -> NodeInfo {
        let mut node = self.clone();
        for (resource, count) in devices {
            node.allocatable.insert(resource.clone(), (*count).max(0));
        }
        node
    }
}

/// Why a pod was not admitted: the pod's `status.reason` and the message after
/// "Pod was rejected: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

impl Rejection {
    /// The pod's `status.message`, as the kubelet's `rejectPod` writes it.
    pub fn status_message(&self) -> String {
        format!("Pod was rejected: {}", self.message)
    }
}

const NODE_AFFINITY: &str = "NodeAffinity";
const NODE_AFFINITY_REASON: &str = "node(s) didn't match Pod's node affinity/selector";
const NODE_NAME: &str = "NodeName";
const NODE_NAME_REASON: &str = "node(s) didn't match the requested node name";
const NODE_PORTS: &str = "NodePorts";
const NODE_PORTS_REASON: &str = "node(s) didn't have free ports for the requested pod ports";
const TAINT_TOLERATION: &str = "TaintToleration";
const TAINT_TOLERATION_REASON: &str = "node(s) had taints that the pod didn't tolerate";

fn predicate(name: &str, desc: &str) -> Rejection {
    Rejection {
        reason: name.to_string(),
        message: format!("Predicate {name} failed: {desc}"),
    }
}

/// The kubelet's admission of `pod` on `node` with `others` admitted and not yet ended (the
/// first failure, in the kubelet's order: OS, resources (pods, cpu, memory, ephemeral storage,
/// hugepages), node affinity/selector, node name, host ports, NoExecute taints).
pub fn admit(pod: &Pod, others: &[&Pod], node: &NodeInfo) -> Result<(), Rejection> {
    let spec = pod.spec.clone().unwrap_or_default();
    if pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"))
        .is_some_and(|os| os != "linux")
    {
        return Err(Rejection {
            reason: "PodOSSelectorNodeLabelDoesNotMatch".into(),
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                .into(),
        });
    }
    if spec.os.as_ref().is_some_and(|os| os.name != "linux") {
        return Err(Rejection {
            reason: "PodOSNotSupported".into(),
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    if let Some(r) = insufficient(pod, others, node) {
        return Err(r);
    }
    if !matches_node_selector(pod, node) {
        return Err(predicate(NODE_AFFINITY, NODE_AFFINITY_REASON));
    }
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node.name)
    {
        return Err(predicate(NODE_NAME, NODE_NAME_REASON));
    }
    if !host_ports_free(pod, others) {
        return Err(predicate(NODE_PORTS, NODE_PORTS_REASON));
    }
    if !crate::translate::is_static_pod(pod) {
        let tolerations = spec.tolerations.unwrap_or_default();
        let untolerated = node
            .taints
            .iter()
            .filter(|t| t.effect == "NoExecute")
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
        if untolerated {
            return Err(predicate(TAINT_TOLERATION, TAINT_TOLERATION_REASON));
        }
    }
    Ok(())
}

/// The scheduler's `fitsRequest`, first failure only, with the kubelet's message.
fn insufficient(pod: &Pod, others: &[&Pod], node: &NodeInfo) -> Option<Rejection> {
    let reject = |resource: &str, requested: i64, used: i64, capacity: i64| {
        Rejection {
        reason: out_of(resource),
        message: format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
    };
    let allowed = node.allocatable.get(PODS).copied().unwrap_or(0);
    if others.len() as i64 + 1 > allowed {
        return Some(reject(PODS, 1, others.len() as i64, allowed));
    }
    let want = pod_requests(pod);
    if want.values().all(|v| *v == 0) {
        return None;
    }
    let used = |resource: &str| -> i64 {
        others
            .iter()
            .filter_map(|p| pod_request(p, resource))
            .fold(0i64, i64::saturating_add)
    };
    let mut order: Vec<&String> = want.keys().collect();
    let rank = |k: &str| match k {
        CPU => 0,
        MEMORY => 1,
        EPHEMERAL_STORAGE => 2,
        _ => 3,
    };
    order.sort_by_key(|k| (rank(k), (*k).clone()));
    for resource in order {
        let requested = want[resource];
        if requested <= 0 {
            continue;
        }
        // The kubelet's removeMissingExtendedResources: an extended resource the node does
        // not list is another admission handler's (or nobody's) to judge.
        if is_extended_resource_name(resource) && !node.allocatable.contains_key(resource) {
            continue;
        }
        let capacity = node.allocatable.get(resource).copied().unwrap_or(0);
        let used = used(resource);
        if requested > capacity - used {
            return Some(reject(resource, requested, used, capacity));
        }
    }
    None
}

/// Host ports the pod's containers ask for: (protocol, host IP, port).
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
        })
        .collect()
}

/// The scheduler's NodePorts: no host port of the pod is taken (0.0.0.0 clashes with every IP).
fn host_ports_free(pod: &Pod, others: &[&Pod]) -> bool {
    let taken: Vec<(String, String, i32)> = others.iter().flat_map(|p| host_ports(p)).collect();
    host_ports(pod).iter().all(|(proto, ip, port)| {
        !taken.iter().any(|(p2, ip2, port2)| {
            p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    })
}

/// `nodeSelector` and required node affinity (`GetRequiredNodeAffinity(pod).Match(node)`).
pub fn matches_node_selector(pod: &Pod, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| node.labels.get(k) != Some(v)) {
            return false;
        }
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.clone());
    match terms {
        // A required affinity matches when any term does (a term of nothing matches nothing).
        Some(terms) => terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            r.key == "metadata.name" && requirement_matches(r, value)
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// `Toleration.ToleratesTaint`: the effect matches (or is empty), the key matches (an empty key
/// with `Exists` tolerates everything), and the value matches by the operator.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, i64)]) -> ResourceList {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn pod(name: &str, json: serde_json::Value) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": json,
        }))
        .unwrap();
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn device_plugin_resources_are_admitted_up_to_the_healthy_devices() {
        let gpu = |n: i64| {
            serde_json::json!({"containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"example.com/gpu": n.to_string()},
                              "requests": {"example.com/gpu": n.to_string()}}}]})
        };
        let one = pod("one", gpu(1));
        let two = pod("two", gpu(2));
        // (healthy devices, pods already admitted, pod, refusal reason)
        type Case<'a> = (Option<i64>, Vec<&'a Pod>, &'a Pod, Option<&'a str>);
        let cases: &[Case] = &[
            // Not a resource of the node: not judged here (removeMissingExtendedResources).
            (None, vec![], &one, None),
            (Some(0), vec![], &one, Some("OutOfexample.com/gpu")),
            (Some(1), vec![], &one, None),
            (Some(1), vec![], &two, Some("OutOfexample.com/gpu")),
            (Some(2), vec![&one], &one, None),
            (Some(2), vec![&one], &two, Some("OutOfexample.com/gpu")),
            (Some(-1), vec![], &one, Some("OutOfexample.com/gpu")),
        ];
        for (healthy, others, p, want) in cases {
            let devices: ResourceList = healthy
                .iter()
                .map(|n| ("example.com/gpu".to_string(), *n))
                .collect();
            let got = admit(p, others, &node().with_devices(&devices))
                .err()
                .map(|r| r.reason);
            assert_eq!(got.as_deref(), *want, "{healthy:?} {:?}", p.metadata.name);
        }
        let r = admit(
            &two,
            &[],
            &node().with_devices(&list(&[("example.com/gpu", 1)])),
        )
        .unwrap_err();
        assert_eq!(
            r.message,
            "Node didn't have enough resource: example.com/gpu, requested: 2, used: 0, capacity: 1"
        );
        // The other resources are the node's own.
        assert_eq!(
            node()
                .with_devices(&list(&[("example.com/gpu", 3)]))
                .allocatable[CPU],
            node().allocatable[CPU]
        );
    }

    fn requests(cpu: &str, memory: &str) -> serde_json::Value {
        serde_json::json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]})
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), "n1".to_string()),
                ("disk".to_string(), "ssd".to_string()),
                ("gen".to_string(), "5".to_string()),
            ]),
            taints: vec![],
            allocatable: list(&[
                (CPU, 2000),
                (MEMORY, 1 << 30),
                (EPHEMERAL_STORAGE, 10 << 30),
                (PODS, 3),
            ]),
        }
    }

    #[test]
    fn allocatable_is_capacity_minus_reserved_and_hard_eviction() {
        let capacity = list(&[
            (CPU, 4000),
            (MEMORY, 8 << 30),
            (EPHEMERAL_STORAGE, 100 << 30),
            (PODS, 110),
            ("hugepages-2Mi", 0),
        ]);
        let system = list(&[(CPU, 500), (MEMORY, 1 << 30)]);
        let kube = list(&[
            (CPU, 100),
            (MEMORY, 256 << 20),
            (EPHEMERAL_STORAGE, 1 << 30),
        ]);
        let hard = list(&[(MEMORY, 100 << 20), (EPHEMERAL_STORAGE, 10 << 30)]);
        let r = reservation(&capacity, &system, &kube, &hard);
        assert_eq!(
            r,
            list(&[
                (CPU, 600),
                (MEMORY, (1 << 30) + (356 << 20)),
                (EPHEMERAL_STORAGE, 11 << 30)
            ])
        );
        let a = allocatable(&capacity, &r);
        assert_eq!(a[CPU], 3400);
        assert_eq!(a[MEMORY], (8 << 30) - (1 << 30) - (356 << 20));
        assert_eq!(a[EPHEMERAL_STORAGE], 89 << 30);
        assert_eq!(a[PODS], 110);
        // More reserved than there is: zero, never negative.
        let a = allocatable(&capacity, &list(&[(CPU, 5000)]));
        assert_eq!(a[CPU], 0);
        // Hugepages come off memory.
        let mut with_huge = capacity.clone();
        with_huge.insert("hugepages-2Mi".into(), 512 << 20);
        let a = allocatable(&with_huge, &ResourceList::new());
        assert_eq!(a[MEMORY], (8 << 30) - (512 << 20));
        // The kubepods cgroup: without the eviction reservation; capacity when not enforced.
        let c = pods_cgroup_limits(&capacity, &system, &kube, true);
        assert_eq!(c[MEMORY], (8 << 30) - (1 << 30) - (256 << 20));
        assert_eq!(c[CPU], 3400);
        assert_eq!(
            pods_cgroup_limits(&capacity, &system, &kube, false),
            capacity
        );
    }

    #[test]
    fn resource_lists_parse_in_their_units() {
        let m = BTreeMap::from([
            ("cpu".to_string(), "500m".to_string()),
            ("memory".to_string(), "1Gi".to_string()),
            ("pid".to_string(), "100".to_string()),
        ]);
        let l = parse_resource_list(&m).unwrap();
        assert_eq!(l, list(&[(CPU, 500), (MEMORY, 1 << 30), (PIDS, 100)]));
        let bad = BTreeMap::from([("memory".to_string(), "lots".to_string())]);
        assert!(parse_resource_list(&bad).unwrap_err().contains("memory"));
    }

    #[test]
    fn pod_requests_count_init_containers_sidecars_and_overhead() {
        let p = pod(
            "p",
            serde_json::json!({
                "initContainers": [
                    {"name": "init", "image": "i", "resources": {"requests": {"cpu": "3"}}},
                    {"name": "side", "image": "i", "restartPolicy": "Always",
                     "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}},
                    {"name": "init2", "image": "i", "resources": {"requests": {"cpu": "1"}}}
                ],
                "containers": [
                    {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "128Mi"}}},
                    {"name": "b", "image": "i", "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}}
                ],
                "overhead": {"cpu": "10m"}
            }),
        );
        // Regular 1.2 + sidecar 0.5 = 1.7; init max 3 (init2: 1 + 0.5 sidecar): 3 + overhead.
        assert_eq!(pod_request(&p, CPU), Some(3010));
        assert_eq!(pod_request(&p, MEMORY), Some(256 << 20));
        assert_eq!(pod_request(&p, EPHEMERAL_STORAGE), None);
        let none = pod(
            "q",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}]}),
        );
        assert!(pod_requests(&none).is_empty());
    }

    #[test]
    fn pod_level_requests_stand_for_the_containers() {
        let p = pod(
            "p",
            serde_json::json!({
                "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "containers": [
                    {"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "1Gi"}}},
                    {"name": "b", "image": "i"}
                ],
                "overhead": {"cpu": "10m"}
            }),
        );
        assert_eq!(pod_request(&p, CPU), Some(2010));
        assert_eq!(pod_request(&p, MEMORY), Some(1 << 30));
        // Not a pod-level resource: still the containers'.
        assert_eq!(pod_request(&p, EPHEMERAL_STORAGE), Some(1 << 30));
        // Pod-level limits alone (no requests) leave the requests to the containers.
        let l = pod(
            "l",
            serde_json::json!({
                "resources": {"limits": {"memory": "2Gi"}},
                "containers": [{"name": "a", "image": "i", "resources": {"requests": {"memory": "64Mi"}}}]
            }),
        );
        assert_eq!(pod_request(&l, MEMORY), Some(64 << 20));
    }

    #[test]
    fn admission_table() {
        let n = node();
        let small = pod("small", requests("500m", "128Mi"));
        let big_cpu = pod("big", requests("1600m", "128Mi"));
        let big_mem = pod("mem", requests("100m", "1Gi"));
        let storage = pod(
            "storage",
            serde_json::json!({"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"ephemeral-storage": "20Gi"}}}]}),
        );
        let best_effort = pod(
            "be",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}]}),
        );
        type Case<'a> = (&'a str, &'a Pod, Vec<&'a Pod>, Option<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            ("fits", &small, vec![], None),
            ("fits beside another", &small, vec![&small], None),
            (
                "cpu",
                &big_cpu,
                vec![&small],
                Some((
                    "OutOfcpu",
                    "Node didn't have enough resource: cpu, requested: 1600, used: 500, capacity: 2000",
                )),
            ),
            (
                "memory",
                &big_mem,
                vec![&small],
                Some((
                    "OutOfmemory",
                    "Node didn't have enough resource: memory, requested: 1073741824, used: 134217728, capacity: 1073741824",
                )),
            ),
            (
                "ephemeral storage",
                &storage,
                vec![],
                Some((
                    "OutOfephemeral-storage",
                    "Node didn't have enough resource: ephemeral-storage, requested: 21474836480, used: 0, capacity: 10737418240",
                )),
            ),
            (
                "pods, even without requests",
                &best_effort,
                vec![&small, &small, &small],
                Some((
                    "OutOfpods",
                    "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3",
                )),
            ),
        ];
        for (what, p, others, want) in cases {
            let got = admit(p, &others, &n).err();
            let want = want.map(|(r, m)| Rejection {
                reason: r.into(),
                message: m.into(),
            });
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn node_affinity_selector_name_ports_and_taints() {
        let mut n = node();
        let affinity = |op: &str, values: &[&str]| {
            pod(
                "a",
                serde_json::json!({"containers": [{"name": "c", "image": "i"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "gen", "operator": op, "values": values}]}]}}}}),
            )
        };
        let affinity_fail = Some(Rejection {
            reason: "NodeAffinity".into(),
            message:
                "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
                    .into(),
        });
        assert_eq!(admit(&affinity("In", &["5", "6"]), &[], &n), Ok(()));
        assert_eq!(admit(&affinity("In", &["4"]), &[], &n).err(), affinity_fail);
        assert_eq!(admit(&affinity("NotIn", &["4"]), &[], &n), Ok(()));
        assert_eq!(admit(&affinity("Gt", &["4"]), &[], &n), Ok(()));
        assert_eq!(admit(&affinity("Lt", &["4"]), &[], &n).err(), affinity_fail);
        let selector = |v: &str| {
            pod(
                "s",
                serde_json::json!({"containers": [{"name": "c", "image": "i"}],
                    "nodeSelector": {"disk": v}}),
            )
        };
        assert_eq!(admit(&selector("ssd"), &[], &n), Ok(()));
        assert_eq!(admit(&selector("hdd"), &[], &n).err(), affinity_fail);
        let fields = pod(
            "f",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}),
        );
        assert_eq!(admit(&fields, &[], &n).err(), affinity_fail);
        let other_node = pod(
            "o",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}], "nodeName": "n2"}),
        );
        assert_eq!(
            admit(&other_node, &[], &n).err().map(|r| r.message),
            Some("Predicate NodeName failed: node(s) didn't match the requested node name".into())
        );
        let port = pod(
            "port",
            serde_json::json!({"containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        assert_eq!(admit(&port, &[], &n), Ok(()));
        assert_eq!(
            admit(&port, &[&port], &n).err().map(|r| r.reason),
            Some("NodePorts".into())
        );
        // NoExecute taints only, static pods exempt.
        n.taints = vec![
            Taint {
                key: "gpu".into(),
                value: Some("yes".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            },
            Taint {
                key: "drain".into(),
                value: None,
                effect: "NoExecute".into(),
                time_added: None,
            },
        ];
        let plain = pod(
            "t",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}]}),
        );
        let rejected = admit(&plain, &[], &n).unwrap_err();
        assert_eq!(rejected.reason, "TaintToleration");
        assert_eq!(
            rejected.status_message(),
            "Pod was rejected: Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
        );
        let tolerating = pod(
            "t2",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}],
                "tolerations": [{"key": "drain", "operator": "Exists", "effect": "NoExecute"}]}),
        );
        assert_eq!(admit(&tolerating, &[], &n), Ok(()));
        let mut static_pod = plain.clone();
        static_pod.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.source".to_string(),
            "file".to_string(),
        )]));
        assert_eq!(admit(&static_pod, &[], &n), Ok(()));
        let linux_only = pod(
            "w",
            serde_json::json!({"containers": [{"name": "c", "image": "i"}], "os": {"name": "windows"}}),
        );
        assert_eq!(
            admit(&linux_only, &[], &n).err().map(|r| r.reason),
            Some("PodOSNotSupported".into())
        );
    }

    #[test]
    fn tolerations_match_like_the_api() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    toleration_seconds: None,
                }
            };
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
        assert!(!tolerates(&tol(Some("k"), None, Some("w"), None), &taint));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoSchedule")),
            &taint
        ));
    }
}
