//! Node-pressure eviction, the kubelet's rules (`pkg/kubelet/eviction`), pure: signals and
//! thresholds (`evictionHard`, `evictionSoft` with `evictionSoftGracePeriod`,
//! `evictionMinimumReclaim`), one round of the manager's `synchronize` (which thresholds are
//! met, the grace periods, the pressure transition period, the node conditions), the ranking of
//! pods ([`rank`]), the messages ([`message`]) and the local storage limits ([`local`]). The
//! loop that measures and acts is `pods::eviction`.

pub mod local;
pub mod message;
pub mod rank;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

/// An eviction signal (`evictionapi.Signal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// The node's memory: capacity minus the node's working set.
    MemoryAvailable,
    /// The pods' memory: what the `kubepods` cgroup may use minus its working set (added for
    /// every hard `memory.available` threshold when `enforceNodeAllocatable` names `pods`).
    AllocatableMemoryAvailable,
    /// The filesystem of the root dir (`--root-dir`).
    NodeFsAvailable,
    NodeFsInodesFree,
    /// The filesystem of bosun's image store.
    ImageFsAvailable,
    ImageFsInodesFree,
    /// `pid_max` minus the processes running.
    PidAvailable,
}

/// What a signal measures (`signalToResource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
    Pids,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }

    /// Bytes (binary suffixes in messages) or counts (decimal ones).
    fn is_bytes(self) -> bool {
        matches!(self, Resource::Memory | Resource::EphemeralStorage)
    }
}

/// The node conditions the eviction manager owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeCondition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl NodeCondition {
    pub const ALL: [NodeCondition; 3] = [
        NodeCondition::MemoryPressure,
        NodeCondition::DiskPressure,
        NodeCondition::PidPressure,
    ];

    /// The condition's type on the Node.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::MemoryPressure => "MemoryPressure",
            NodeCondition::DiskPressure => "DiskPressure",
            NodeCondition::PidPressure => "PIDPressure",
        }
    }

    /// The kubelet's reason and message when the condition is true and when it is false
    /// (`nodestatus.MemoryPressureCondition` and its siblings).
    pub fn reason_and_message(self, pressure: bool) -> (&'static str, &'static str) {
        match (self, pressure) {
            (NodeCondition::MemoryPressure, true) => (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (NodeCondition::MemoryPressure, false) => (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (NodeCondition::DiskPressure, true) => {
                ("KubeletHasDiskPressure", "kubelet has disk pressure")
            }
            (NodeCondition::DiskPressure, false) => {
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            }
            (NodeCondition::PidPressure, true) => (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (NodeCondition::PidPressure, false) => (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        }
    }
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::MemoryAvailable,
        Signal::AllocatableMemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Resource::EphemeralStorage,
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }

    pub fn condition(self) -> NodeCondition {
        match self.resource() {
            Resource::Memory => NodeCondition::MemoryPressure,
            Resource::EphemeralStorage | Resource::Inodes => NodeCondition::DiskPressure,
            Resource::Pids => NodeCondition::PidPressure,
        }
    }

    fn is_memory(self) -> bool {
        self.resource() == Resource::Memory
    }
}

/// A threshold's value: a quantity (as written, and in bytes or counts) or a fraction of the
/// signal's capacity.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Quantity { amount: i64, text: String },
    Percentage(f32),
}

impl Value {
    /// `GetThresholdQuantity`: the amount, or the fraction of `capacity` (truncated).
    pub fn resolve(&self, capacity: i64) -> i64 {
        match self {
            Value::Quantity { amount, .. } => *amount,
            Value::Percentage(p) => (capacity as f64 * f64::from(*p)) as i64,
        }
    }

    /// How the value reads in messages.
    fn display(&self, capacity: i64) -> String {
        match self {
            Value::Quantity { text, .. } => text.clone(),
            Value::Percentage(_) => message::binary(self.resolve(capacity)),
        }
    }
}

/// One eviction threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
    /// Zero for a hard threshold; a soft one's `evictionSoftGracePeriod`.
    pub grace: Duration,
    pub min_reclaim: Option<Value>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace.is_zero()
    }
}

/// The signals the kubelet knows that bosun has no filesystem for (a container filesystem apart
/// from the image filesystem): accepted and ignored, as the kubelet ignores them.
pub const IGNORED_SIGNALS: [&str; 2] = ["containerfs.available", "containerfs.inodesFree"];

fn parse_percentage(signal: &str, v: &str) -> Result<f32, String> {
    let n: f64 = v
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{signal}: {v:?} is not a percentage"))?;
    Ok((n / 100.0) as f32)
}

/// `parseThresholdStatement`: a quantity or a percentage; `0%` and `100%` mean no threshold.
fn parse_value(signal: &str, v: &str) -> Result<Option<Value>, String> {
    if v.ends_with('%') {
        if v == "0%" || v == "100%" {
            return Ok(None);
        }
        let p = parse_percentage(signal, v)?;
        if p < 0.0 {
            return Err(format!(
                "eviction percentage threshold {signal} must be >= 0%: {v}"
            ));
        }
        if p > 1.0 {
            return Err(format!(
                "eviction percentage threshold {signal} must be <= 100%: {v}"
            ));
        }
        return Ok(Some(Value::Percentage(p)));
    }
    let q = crate::quantity::parse_quantity(v)
        .map_err(|e| format!("{signal}: {v:?} is not a quantity: {e}"))?;
    if q.milli_value() <= 0 {
        return Err(format!("eviction threshold {signal} must be positive: {v}"));
    }
    Ok(Some(Value::Quantity {
        amount: q.value().clamp(0, i64::MAX as i128) as i64,
        text: v.to_string(),
    }))
}

fn signal_of(name: &str) -> Result<Option<Signal>, String> {
    if IGNORED_SIGNALS.contains(&name) {
        return Ok(None);
    }
    Signal::parse(name)
        .map(Some)
        .ok_or_else(|| format!("unsupported eviction signal {name}"))
}

/// The thresholds of the configuration (`ParseThresholdConfig`): hard ones, soft ones with their
/// grace periods (each soft threshold needs one), minimum reclaims, and with
/// `enforceNodeAllocatable: [pods]` an `allocatableMemory.available` threshold beside every hard
/// `memory.available` one.
pub fn parse_thresholds(
    hard: &BTreeMap<String, String>,
    soft: &BTreeMap<String, String>,
    soft_grace: &BTreeMap<String, Duration>,
    min_reclaim: &BTreeMap<String, String>,
    enforce_pods: bool,
) -> Result<Vec<Threshold>, String> {
    for name in soft_grace.keys() {
        signal_of(name)?;
    }
    let mut reclaims = BTreeMap::new();
    for (name, v) in min_reclaim {
        let Some(signal) = signal_of(name)? else {
            continue;
        };
        let value = if v.ends_with('%') {
            let p = parse_percentage(name, v)?;
            if p <= 0.0 {
                return Err(format!(
                    "eviction percentage minimum reclaim {name} must be positive: {v}"
                ));
            }
            Value::Percentage(p)
        } else {
            let q = crate::quantity::parse_quantity(v)
                .map_err(|e| format!("{name}: {v:?} is not a quantity: {e}"))?;
            if q.milli_value() < 0 {
                return Err(format!(
                    "negative eviction minimum reclaim specified for {name}"
                ));
            }
            Value::Quantity {
                amount: q.value().clamp(0, i64::MAX as i128) as i64,
                text: v.clone(),
            }
        };
        reclaims.insert(signal, value);
    }
    let mut out = Vec::new();
    for (name, v) in hard {
        let (Some(signal), Some(value)) = (signal_of(name)?, parse_value(name, v)?) else {
            continue;
        };
        out.push(Threshold {
            signal,
            value,
            grace: Duration::ZERO,
            min_reclaim: None,
        });
    }
    for (name, v) in soft {
        let (Some(signal), Some(value)) = (signal_of(name)?, parse_value(name, v)?) else {
            continue;
        };
        let grace = *soft_grace.get(name).ok_or_else(|| {
            format!("grace period must be specified for the soft eviction threshold {name}")
        })?;
        out.push(Threshold {
            signal,
            value,
            grace,
            min_reclaim: None,
        });
    }
    for t in &mut out {
        t.min_reclaim = reclaims.get(&t.signal).cloned();
    }
    if enforce_pods {
        let extra: Vec<Threshold> = out
            .iter()
            .filter(|t| t.signal == Signal::MemoryAvailable && t.is_hard())
            .map(|t| Threshold {
                signal: Signal::AllocatableMemoryAvailable,
                ..t.clone()
            })
            .collect();
        out.extend(extra);
    }
    Ok(out)
}

/// What the hard thresholds keep from pods (`hardEvictionReservation`): memory and ephemeral
/// storage, by `memory.available` and `nodefs.available`, resolved against capacity.
pub fn hard_reservation(thresholds: &[Threshold], memory: i64, storage: i64) -> (i64, i64) {
    let mut out = (0, 0);
    for t in thresholds.iter().filter(|t| t.is_hard()) {
        match t.signal {
            Signal::MemoryAvailable => out.0 = t.value.resolve(memory),
            Signal::NodeFsAvailable => out.1 = t.value.resolve(storage),
            _ => {}
        }
    }
    out
}

/// One signal measured: what is left and of how much.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// The eviction manager's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub thresholds: Vec<Threshold>,
    /// evictionPressureTransitionPeriod (5m): how long a condition stays after its last cause.
    pub pressure_transition: Duration,
    /// evictionMaxPodGracePeriod (0): the most a pod gets when a soft threshold evicts it.
    pub max_pod_grace_seconds: i64,
    /// localStorageCapacityIsolation (true): emptyDir `sizeLimit` and ephemeral-storage limits.
    pub local_storage: bool,
}

/// What the manager remembers between rounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The thresholds (indices into [`Settings::thresholds`]) met at the last round, kept until
    /// their minimum reclaim is done.
    met: Vec<usize>,
    /// When each threshold met now was first seen met.
    first_observed: BTreeMap<usize, SystemTime>,
    /// When each condition was last seen.
    conditions_last_observed: BTreeMap<NodeCondition, SystemTime>,
    /// The node's conditions now.
    pub conditions: Vec<NodeCondition>,
}

/// One round's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    /// The node's pressure conditions (within the transition period of their last cause).
    pub conditions: Vec<NodeCondition>,
    /// Thresholds whose grace period is over, memory first (`byEvictionPriority`).
    pub met: Vec<usize>,
}

impl Round {
    /// The threshold to reclaim for: the first met.
    pub fn to_reclaim(&self) -> Option<usize> {
        self.met.first().copied()
    }
}

/// `thresholdsMet`: the thresholds (of `which`) whose signal is below their quantity, plus the
/// minimum reclaim with `enforce_min_reclaim`; a signal not observed meets nothing.
pub fn thresholds_met(
    thresholds: &[Threshold],
    which: impl IntoIterator<Item = usize>,
    obs: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<usize> {
    which
        .into_iter()
        .filter(|i| {
            let t = &thresholds[*i];
            let Some(o) = obs.get(&t.signal) else {
                return false;
            };
            let mut quantity = t.value.resolve(o.capacity);
            if enforce_min_reclaim {
                if let Some(m) = &t.min_reclaim {
                    quantity = quantity.saturating_add(m.resolve(o.capacity));
                }
            }
            quantity > o.available
        })
        .collect()
}

/// The kubelet's `synchronize`, up to the decision to reclaim: updates `state` and says which
/// conditions the node has and which thresholds are to be acted on.
pub fn synchronize(
    settings: &Settings,
    state: &mut State,
    obs: &Observations,
    now: SystemTime,
) -> Round {
    let all = 0..settings.thresholds.len();
    let mut met = thresholds_met(&settings.thresholds, all, obs, false);
    // Thresholds met before stay until their minimum reclaim is done.
    for i in thresholds_met(&settings.thresholds, state.met.iter().copied(), obs, true) {
        if !met.contains(&i) {
            met.push(i);
        }
    }
    let first_observed: BTreeMap<usize, SystemTime> = met
        .iter()
        .map(|i| (*i, state.first_observed.get(i).copied().unwrap_or(now)))
        .collect();
    let mut last_observed = state.conditions_last_observed.clone();
    for i in &met {
        last_observed.insert(settings.thresholds[*i].signal.condition(), now);
    }
    let conditions: Vec<NodeCondition> = last_observed
        .iter()
        .filter(|(_, at)| {
            now.duration_since(**at).unwrap_or_default() < settings.pressure_transition
        })
        .map(|(c, _)| *c)
        .collect();
    let mut ready: Vec<usize> = first_observed
        .iter()
        .filter(|(i, at)| {
            now.duration_since(**at).unwrap_or_default() >= settings.thresholds[**i].grace
        })
        .map(|(i, _)| *i)
        .collect();
    // Memory first, then the rest in their order.
    ready.sort_by_key(|i| !settings.thresholds[*i].signal.is_memory());
    state.met = ready.clone();
    state.first_observed = first_observed;
    state.conditions_last_observed = last_observed;
    state.conditions = conditions.clone();
    Round {
        conditions,
        met: ready,
    }
}

/// What frees the resource of a signal before pods are evicted (`buildSignalToNodeReclaimFuncs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Dead containers, then unused images.
    ContainersAndImages,
    Nothing,
}

/// With a dedicated image filesystem the node filesystem has nothing to reclaim; otherwise
/// every disk signal reclaims dead containers and images.
pub fn reclaim_for(signal: Signal, dedicated_image_fs: bool) -> Reclaim {
    match signal.resource() {
        Resource::EphemeralStorage | Resource::Inodes => {
            let nodefs = matches!(signal, Signal::NodeFsAvailable | Signal::NodeFsInodesFree);
            if dedicated_image_fs && nodefs {
                Reclaim::Nothing
            } else {
                Reclaim::ContainersAndImages
            }
        }
        _ => Reclaim::Nothing,
    }
}

/// Pods the eviction manager never evicts (`IsCriticalPod`): static and mirror pods, and pods
/// of priority `system-cluster-critical` or above (2000000000).
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let static_or_mirror = annotations.is_some_and(|a| {
        a.get("kubernetes.io/config.source")
            .is_some_and(|s| s != "api")
            || a.contains_key("kubernetes.io/config.mirror")
    });
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    static_or_mirror || priority >= 2_000_000_000
}

/// The grace period an eviction gives a pod: 1 s for a hard threshold; for a soft one
/// `evictionMaxPodGracePeriod`, or the pod's own when that is less.
pub fn grace_seconds(pod: &Pod, threshold: &Threshold, max_pod_grace: i64) -> i64 {
    if threshold.is_hard() {
        return IMMEDIATE_GRACE_SECONDS;
    }
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        Some(own) => own.min(max_pod_grace),
        None => max_pod_grace,
    }
}

/// The grace period of hard and local storage evictions.
pub const IMMEDIATE_GRACE_SECONDS: i64 = 1;

/// The Event reason and pod status reason of an eviction.
pub const REASON: &str = "Evicted";

/// Admission while the node is under pressure (the eviction manager's `Admit`): with only
/// MemoryPressure, pods other than BestEffort are admitted (and BestEffort ones tolerating the
/// memory-pressure taint); with any other pressure, only critical pods. The rejection's message.
pub fn admit_under_pressure(pod: &Pod, conditions: &[NodeCondition]) -> Result<(), String> {
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions == [NodeCondition::MemoryPressure] {
        if crate::translate::qos_class(pod) != bosun_runtime::QosClass::BestEffort {
            return Ok(());
        }
        let taint = k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/memory-pressure".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        if tolerations
            .iter()
            .any(|t| crate::admission::tolerates(t, &taint))
        {
            return Ok(());
        }
    }
    let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
    Err(format!("The node had condition: [{}]. ", names.join(" ")))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
