//! In-place pod resize, the decisions (pure): the kubelet's allocation manager
//! (`pkg/kubelet/allocation`) and the resize parts of its status manager and runtime manager.
//!
//! - A pod's *allocation* is the resources (requests and limits) of its resizable containers
//!   (regular containers, sidecars and, as with the kubelet's Beta gate
//!   `InPlacePodVerticalScalingInitContainers`, the other init containers) as the node admitted
//!   them. It starts as the spec's, is kept in the pod's state folder ([`ALLOCATED_FILE`], the
//!   kubelet's `allocated_pods_state` checkpoint) so that it survives an agent restart, and
//!   changes only when a resize is admitted ([`decide`]): the pod's new requests must fit
//!   beside the other pods' allocations, else the resize waits (`PodResizePending`, reason
//!   `Deferred`: the kubelet 1.36 defers every resource shortage; a resize beyond the node's
//!   allocatable is refused by the apiserver itself). The worker runs the pod *as allocated*
//!   ([`with_allocation`]): containers start and are resized to the allocation, never to a
//!   pending spec.
//! - What the containers run with is what the runtime reports (`ContainerStatus::resources`,
//!   kept by the runtime across restarts: the kubelet's actuated state). The worker's plan
//!   compares it with the allocation for each running container (a non-sidecar init container
//!   while it runs, before the pod is initialized): `containers_to_update`, or a restart where
//!   the container's `resizePolicy` says `RestartContainer`.
//! - A memory limit below the current usage is not applied ([`memory_check`]): the resize stays
//!   in progress with the error, and is tried again.

/// The node declares this feature (`status.declaredFeatures`) so that the apiserver accepts a
/// resize of a non-sidecar init container for its pods ("pod update requires features
/// InPlacePodVerticalScalingInitContainers which are not available on node" otherwise); the
/// kubelet declares it when its feature gate of that name is on, the default at 1.36.
pub const INIT_CONTAINER_RESIZE_FEATURE: &str = "InPlacePodVerticalScalingInitContainers";

use std::collections::BTreeMap;

use bosun_runtime::cgroups::PodsUsage;
use bosun_runtime::Resources;
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, ResourceRequirements};
use serde::Serialize;

use crate::reasons::condition;

/// The file of a pod's allocation in its state folder.
pub const ALLOCATED_FILE: &str = "allocated.json";

/// The allocated resources of a pod's resizable containers, by container name.
pub type Allocation = BTreeMap<String, ResourceRequirements>;

/// The containers whose resources can change in place, init containers first (the kubelet's
/// `IsResizableContainer` with `InPlacePodVerticalScalingInitContainers`, Beta and on by
/// default in 1.36): every init container (sidecar or not) and every regular container.
pub fn resizable(pod: &Pod) -> Vec<&Container> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .collect()
}

/// The pod's allocation as its spec asks.
pub fn allocation_of(pod: &Pod) -> Allocation {
    resizable(pod)
        .into_iter()
        .map(|c| (c.name.clone(), c.resources.clone().unwrap_or_default()))
        .collect()
}

/// Does the allocation say what the spec asks? (Semantic: `1` and `1000m` are one quantity.)
fn same(a: &ResourceRequirements, b: &ResourceRequirements) -> bool {
    let norm = |r: &ResourceRequirements| {
        let list = |l: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            l.iter()
                .flatten()
                .map(|(k, q)| {
                    let v = crate::quantity::parse_quantity(&q.0)
                        .map(|p| p.milli_value())
                        .unwrap_or(i128::MIN);
                    (k.clone(), v)
                })
                .collect::<BTreeMap<_, _>>()
        };
        (list(&r.requests), list(&r.limits))
    };
    norm(a) == norm(b)
}

/// Whether the spec asks for other resources than `allocated`.
pub fn changed(pod: &Pod, allocated: &Allocation) -> bool {
    resizable(pod)
        .into_iter()
        .any(|c| match allocated.get(&c.name) {
            Some(a) => !same(a, &c.resources.clone().unwrap_or_default()),
            None => false,
        })
}

/// The pod as allocated: each resizable container's resources are its allocation's (the
/// kubelet's `UpdatePodFromAllocation`); containers the allocation does not know keep theirs.
pub fn with_allocation(pod: &Pod, allocated: &Allocation) -> Pod {
    let mut out = pod.clone();
    if let Some(spec) = out.spec.as_mut() {
        let all = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in all {
            if let Some(a) = allocated.get(&c.name) {
                c.resources = Some(a.clone());
            }
        }
    }
    out
}

/// The allocated pod of every pod the node runs, by uid: what a resize must fit beside.
#[derive(Default)]
pub struct Allocated(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Pod>>>);

impl Allocated {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<String, std::sync::Arc<Pod>>) -> R,
    ) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The pod `uid` runs as `pod` now.
    pub fn set(&self, uid: &str, pod: std::sync::Arc<Pod>) {
        self.with(|m| m.insert(uid.to_string(), pod));
    }

    /// The pod `uid` as allocated, once its worker allocated it.
    pub fn get(&self, uid: &str) -> Option<std::sync::Arc<Pod>> {
        self.with(|m| m.get(uid).cloned())
    }

    /// The pod `uid` holds nothing any more.
    pub fn remove(&self, uid: &str) {
        self.with(|m| m.remove(uid));
    }

    /// Every allocated pod (the pods the node runs).
    pub fn all(&self) -> Vec<std::sync::Arc<Pod>> {
        self.with(|m| m.values().cloned().collect())
    }

    /// Every allocated pod but `uid`.
    pub fn others(&self, uid: &str) -> Vec<std::sync::Arc<Pod>> {
        self.with(|m| {
            m.iter()
                .filter(|(u, _)| u.as_str() != uid)
                .map(|(_, p)| p.clone())
                .collect()
        })
    }
}

/// A resize the node cannot admit now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// `Deferred` or `Infeasible`.
    pub reason: &'static str,
    pub message: String,
    /// The pod's generation it was decided for.
    pub generation: i64,
}

/// What the node does with the spec's resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The spec asks what is allocated.
    Unchanged,
    /// The resize fits: the spec's resources become the allocation.
    Allocate,
    /// It does not fit now: the allocation stays, the resize waits.
    Pending(Pending),
}

/// The kubelet's `handlePodResourcesResize`: `fits` is the resource admission of the pod as the
/// spec asks against the other pods' allocations (its refusal's message, e.g. "Node didn't
/// have enough resource: cpu, requested: ..."); every refusal defers the resize, as the kubelet's
/// status manager turns every reason but `Infeasible` into `Deferred`.
pub fn decide(
    pod: &Pod,
    allocated: &Allocation,
    fits: impl FnOnce(&Pod) -> Result<(), String>,
) -> Decision {
    if !changed(pod, allocated) {
        return Decision::Unchanged;
    }
    match fits(pod) {
        Ok(()) => Decision::Allocate,
        Err(message) => Decision::Pending(Pending {
            reason: condition::RESIZE_DEFERRED,
            message,
            generation: pod.metadata.generation.unwrap_or(0),
        }),
    }
}

/// A resize admitted and not yet done everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InProgress {
    /// The generation it was admitted at.
    pub generation: i64,
    /// The last attempt's error (the condition's reason `Error` and message).
    pub error: Option<String>,
}

/// The `PodResizePending` and `PodResizeInProgress` conditions (status True), their transition
/// times kept from `previous` while unchanged, as the kubelet's status manager writes them.
pub fn conditions(
    pending: Option<&Pending>,
    in_progress: Option<&InProgress>,
    previous: &[PodCondition],
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Vec<PodCondition> {
    let mut out = Vec::new();
    let mut push = |ty: &str, reason: Option<String>, message: Option<String>, generation: i64| {
        let observed_generation = (generation != 0).then_some(generation);
        let old = previous.iter().find(|c| c.type_ == ty);
        // Unchanged: kept as it was (times included), so that the status does not churn.
        let (probe, at) = match old {
            Some(o)
                if o.reason == reason
                    && o.message == message
                    && o.observed_generation == observed_generation =>
            {
                (o.last_probe_time.clone(), o.last_transition_time.clone())
            }
            _ => (Some(now.clone()), Some(now.clone())),
        };
        out.push(PodCondition {
            type_: ty.to_string(),
            status: "True".into(),
            reason,
            message,
            observed_generation,
            last_probe_time: probe,
            last_transition_time: at,
        });
    };
    if let Some(p) = pending {
        push(
            condition::POD_RESIZE_PENDING,
            Some(p.reason.to_string()),
            Some(p.message.clone()),
            p.generation,
        );
    }
    if let Some(p) = in_progress {
        let (reason, message) = match &p.error {
            Some(e) => (Some(condition::RESIZE_ERROR.to_string()), Some(e.clone())),
            None => (None, None),
        };
        push(
            condition::POD_RESIZE_IN_PROGRESS,
            reason,
            message,
            p.generation,
        );
    }
    out
}

#[derive(Serialize)]
struct ContainerAllocation<'a> {
    name: &'a str,
    resources: ResourceRequirements,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    init_containers: Vec<ContainerAllocation<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    containers: Vec<ContainerAllocation<'a>>,
    generation: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

/// A resize Event's message, as the kubelet's `podResizeMessage`: the prefix, then the
/// resources of the pod's containers as JSON with the generation (and an error).
pub fn event_message(prefix: &str, pod: &Pod, error: &str) -> String {
    let spec = pod.spec.as_ref();
    let alloc = |c: &'_ Container| ContainerAllocation {
        name: "",
        resources: c.resources.clone().unwrap_or_default(),
    };
    let mut summary = Summary {
        init_containers: Vec::new(),
        containers: Vec::new(),
        generation: pod.metadata.generation.unwrap_or(0),
        error,
    };
    for c in spec.iter().flat_map(|s| s.init_containers.iter().flatten()) {
        summary.init_containers.push(ContainerAllocation {
            name: &c.name,
            ..alloc(c)
        });
    }
    for c in spec.iter().flat_map(|s| s.containers.iter()) {
        summary.containers.push(ContainerAllocation {
            name: &c.name,
            ..alloc(c)
        });
    }
    match serde_json::to_string(&summary) {
        Ok(json) => format!("{prefix}: {json}"),
        Err(_) => prefix.to_string(),
    }
}

/// One container update of a resize, as the act sees it: the container id and its new limits.
pub struct MemoryUpdate<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub memory_limit: Option<i64>,
}

/// The kubelet's `validateMemoryResizeAction`: a new memory limit (a container's, or the
/// pod's) at or below what the cgroup uses now is not applied; the error says which.
pub fn memory_check(
    pod_uid: &str,
    pod_limit: Option<i64>,
    updates: &[MemoryUpdate],
    usage: &PodsUsage,
) -> Result<(), String> {
    let mut errs = Vec::new();
    if let Some(limit) = pod_limit.filter(|l| *l > 0) {
        match usage.pods.get(pod_uid) {
            Some(u) if u.memory_usage >= limit as u64 => errs.push(format!(
                "attempting to set pod memory limit ({limit}) below current usage ({})",
                u.memory_usage
            )),
            Some(_) => {}
            None => errs.push("missing pod memory usage".to_string()),
        }
    }
    for u in updates {
        let Some(limit) = u.memory_limit.filter(|l| *l > 0) else {
            continue;
        };
        match usage.containers.get(u.id) {
            Some(c) if c.memory_usage >= limit as u64 => errs.push(format!(
                "attempting to set container {:?} memory limit ({limit}) below current usage ({})",
                u.name, c.memory_usage
            )),
            Some(_) => {}
            None => errs.push(format!("missing container {:?} memory usage", u.name)),
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let list = if errs.len() == 1 {
        errs.remove(0)
    } else {
        format!("[{}]", errs.join(", "))
    };
    Err(format!("cannot decrease memory limits: {list}"))
}

/// The resources a running container reports (`status.containerStatuses[].resources`), as the
/// kubelet converts the runtime's: the CPU request from its shares, the CPU limit from its
/// quota, the memory limit from its cgroup; the memory request (not a cgroup setting) from its
/// allocation. Where the conversion rounds, the allocated value stands (the kubelet's tolerance).
pub fn reported(actual: &Resources, allocated: &ResourceRequirements) -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let want = crate::translate::container_resources(
        &Pod::default(),
        &Container {
            resources: Some(allocated.clone()),
            ..Default::default()
        },
    );
    let given = |l: &Option<BTreeMap<String, Quantity>>, k: &str| {
        l.as_ref().and_then(|m| m.get(k)).cloned()
    };
    let milli = |v: i128| Quantity(format!("{v}m"));
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(shares) = actual.cpu_shares {
        let q = match given(&allocated.requests, "cpu") {
            Some(q) if want.cpu_shares == Some(shares) => Some(q),
            // The minimum shares of a container without a CPU request: none reported.
            None if want.cpu_shares == Some(shares) => None,
            _ => Some(milli(crate::quantity::ceil_div(
                i128::from(shares) * 1000,
                1024,
            ))),
        };
        if let Some(q) = q {
            requests.insert("cpu".to_string(), q);
        }
    }
    if let (Some(quota), Some(period)) = (actual.cpu_quota, actual.cpu_period) {
        let q = match given(&allocated.limits, "cpu") {
            Some(q) if want.cpu_quota == Some(quota) => q,
            _ => milli(crate::quantity::ceil_div(
                i128::from(quota) * 1000,
                i128::from(period.max(1)),
            )),
        };
        limits.insert("cpu".to_string(), q);
    }
    if let Some(bytes) = actual.memory_limit {
        let q = match given(&allocated.limits, "memory") {
            Some(q) if want.memory_limit == Some(bytes) => q,
            _ => Quantity(bytes.to_string()),
        };
        limits.insert("memory".to_string(), q);
    }
    if let Some(q) = given(&allocated.requests, "memory") {
        requests.insert("memory".to_string(), q);
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "resize_tests.rs"]
mod tests;
