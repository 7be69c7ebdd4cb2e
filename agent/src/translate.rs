//! Pure functions that turn a Pod into the runtime's plain specs.
//!
//! No I/O happens here: everything the agent needs to know about the host (image config, node
//! memory, mounts already prepared) is passed in. The rules follow the kubelet and containerd's
//! CRI plugin closely (argv from command/args and the image, `$(VAR)` expansion, env order, QoS,
//! cgroup numbers, OOM scores, capabilities), so most of the agent's unit tests live in this file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use bosun_runtime::image::ImageConfig;
use bosun_runtime::{
    ContainerSpec, Mount, Propagation, QosClass, Resources, SandboxSpec, Security, User,
};
use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, ObjectFieldSelector, Pod, PodSpec, ResourceFieldSelector,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sha2::{Digest, Sha256};

use crate::projection::ApiObjects;

/// Why a pod (or one of its containers) cannot be turned into runtime specs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("container {container}: no command specified")]
    NoCommand { container: String },
    /// Something that needs the cluster (configMaps, secrets ...) in standalone mode.
    #[error("container {container}: {what} is not supported in standalone mode")]
    Unsupported { container: String, what: String },
    #[error(
        "unsupported volume type{}: {kind} (volume {volume})",
        if *standalone { " in standalone mode" } else { "" }
    )]
    UnsupportedVolume {
        volume: String,
        kind: String,
        /// Whether the cluster would have made it (configMap, secret ...).
        standalone: bool,
    },
    #[error("volume {volume}: {reason}")]
    Volume { volume: String, reason: String },
    #[error("container {container}: env {name}: {reason}")]
    Env {
        container: String,
        name: String,
        reason: String,
    },
    #[error("container {container}: {field}: invalid quantity {value:?}: {source}")]
    Quantity {
        container: String,
        field: String,
        value: String,
        source: QuantityError,
    },
    /// runAsNonRoot could not be honoured (the kubelet's words).
    #[error("{reason}")]
    NonRoot { container: String, reason: String },
    /// An invalid security context combination or value.
    #[error("container {container}: {reason}")]
    Security { container: String, reason: String },
    #[error("container {container}: unknown capability {name:?}")]
    Capability { container: String, name: String },
    #[error("container {container}: invalid stop signal {signal:?}")]
    StopSignal { container: String, signal: String },
    #[error("container {container}: volume mount {mount_path}: {reason}")]
    Mount {
        container: String,
        mount_path: String,
        reason: String,
    },
    /// A configMap or secret the environment needs is missing (CreateContainerConfigError).
    #[error("{reason}")]
    EnvSource { container: String, reason: String },
    #[error("pod has no spec")]
    NoSpec,
}

// ---------------------------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------------------------

/// Why a Kubernetes quantity string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("no digits")]
    NoDigits,
    #[error("unknown suffix {0:?}")]
    Suffix(String),
    #[error("too many digits")]
    TooLong,
}

/// An exactly parsed quantity, kept as thousandths rounded up (away from zero) like
/// `Quantity.MilliValue()`; the largest magnitude is capped at 2^63-1 units like Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParsedQuantity {
    milli: i128,
}

const QUANTITY_CAP_MILLI: i128 = (i64::MAX as i128) * 1000;

impl ParsedQuantity {
    pub fn from_milli(milli: i128) -> Self {
        Self {
            milli: milli.clamp(-QUANTITY_CAP_MILLI, QUANTITY_CAP_MILLI),
        }
    }
    /// `MilliValue()`: thousandths, rounded up.
    pub fn milli_value(self) -> i128 {
        self.milli
    }
    /// `Value()`: units, rounded up.
    pub fn value(self) -> i128 {
        ceil_div(self.milli, 1000)
    }
    pub fn is_zero(self) -> bool {
        self.milli == 0
    }
}

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 && ((n > 0) == (d > 0)) {
        q + 1
    } else {
        q
    }
}

/// Parses a Kubernetes quantity (`100m`, `0.5`, `2`, `64Mi`, `1G`, `1e3`, `128974848`) exactly.
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let int_part = &rest[..int_len];
    let mut after = &rest[int_len..];
    let mut frac_part = "";
    if let Some(stripped) = after.strip_prefix('.') {
        let frac_len = stripped.bytes().take_while(u8::is_ascii_digit).count();
        frac_part = &stripped[..frac_len];
        after = &stripped[frac_len..];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoDigits);
    }
    let (dec_exp, bin_pow): (i64, u32) = match after {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|e| e.parse::<i64>().ok())
                .ok_or_else(|| QuantityError::Suffix(other.to_string()))?;
            (exp, 0)
        }
    };
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return Err(QuantityError::TooLong);
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::TooLong)?
    };
    // value * 1000 = mantissa * 2^bin_pow * 10^(dec_exp - frac_len + 3)
    let scale = dec_exp - frac_part.len() as i64 + 3;
    let mut v = mantissa
        .checked_mul(1i128 << bin_pow)
        .unwrap_or(QUANTITY_CAP_MILLI);
    if v != 0 {
        if scale >= 0 {
            for _ in 0..scale {
                v = v.saturating_mul(10);
                if v >= QUANTITY_CAP_MILLI {
                    break;
                }
            }
        } else if scale < -36 {
            v = 1;
        } else {
            v = ceil_div(v, 10i128.pow((-scale) as u32));
        }
    }
    Ok(ParsedQuantity::from_milli(if negative { -v } else { v }))
}

fn quantity_in(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<ParsedQuantity> {
    list.and_then(|l| l.get(name))
        .and_then(|q| parse_quantity(&q.0).ok())
}

/// The cpu and memory numbers of one container, in thousandths, after the apiserver's
/// defaulting (a missing request takes the limit's value).
#[derive(Clone, Copy, Debug, Default)]
struct ContainerRes {
    cpu_request: Option<i128>,
    cpu_limit: Option<i128>,
    memory_request: Option<i128>,
    memory_limit: Option<i128>,
}

fn container_res(c: &Container) -> ContainerRes {
    let res = c.resources.as_ref();
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let get = |name: &str| {
        let limit = quantity_in(limits, name).map(ParsedQuantity::milli_value);
        let request = match requests.and_then(|r| r.get(name)) {
            Some(q) => parse_quantity(&q.0).ok().map(ParsedQuantity::milli_value),
            None => limit,
        };
        (request, limit)
    };
    let (cpu_request, cpu_limit) = get("cpu");
    let (memory_request, memory_limit) = get("memory");
    ContainerRes {
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    }
}

fn spec_of(pod: &Pod) -> Option<&PodSpec> {
    pod.spec.as_ref()
}

fn init_containers(pod: &Pod) -> &[Container] {
    spec_of(pod)
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

fn containers(pod: &Pod) -> &[Container] {
    spec_of(pod).map(|s| s.containers.as_slice()).unwrap_or(&[])
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

// ---------------------------------------------------------------------------------------------
// QoS and cgroup numbers
// ---------------------------------------------------------------------------------------------

/// The pod's QoS class, computed exactly like `ComputePodQOS` (containers and init containers,
/// only cpu and memory count, requests defaulted from limits like the apiserver does).
pub fn qos_class(pod: &Pod) -> QosClass {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for c in containers(pod).iter().chain(init_containers(pod)) {
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
    let cpu_limits_declared = all().all(|c| container_res(c).cpu_limit.is_some_and(|v| v > 0));
    let memory_limits_declared =
        all().all(|c| container_res(c).memory_limit.is_some_and(|v| v > 0));
    let cpu_requests =
        aggregate(pod, |r| r.cpu_request).unwrap_or(0) + overhead(pod, "cpu").unwrap_or(0);
    let cpu_limits =
        aggregate(pod, |r| r.cpu_limit).unwrap_or(0) + overhead(pod, "cpu").unwrap_or(0);
    let memory_limits =
        aggregate(pod, |r| r.memory_limit).unwrap_or(0) + overhead(pod, "memory").unwrap_or(0);
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

/// The container cgroup, like the kubelet's `calculateLinuxResources`.
pub fn container_resources(container: &Container) -> Resources {
    let r = container_res(container);
    let quota = r.cpu_limit.and_then(milli_cpu_to_quota);
    Resources {
        cpu_shares: Some(milli_cpu_to_shares(r.cpu_request.unwrap_or(0))),
        cpu_quota: quota,
        cpu_period: quota.map(|_| QUOTA_PERIOD),
        memory_limit: r.memory_limit.filter(|v| *v > 0).map(milli_to_bytes),
        pids_limit: None,
    }
}

const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

fn is_static_pod(pod: &Pod) -> bool {
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
    let request_bytes =
        |c: &Container| ceil_div(container_res(c).memory_request.unwrap_or(0), 1000);
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

// ---------------------------------------------------------------------------------------------
// Sandbox
// ---------------------------------------------------------------------------------------------

const HOSTNAME_MAX_LEN: usize = 63;

/// The pod's hostname: spec.hostnameOverride, else spec.hostname, else the pod name; cut to
/// 63 characters with trailing '-' and '.' trimmed (kubelet `truncatePodHostnameIfNeeded`).
pub fn pod_hostname(pod: &Pod) -> String {
    let spec = spec_of(pod);
    let chosen = spec
        .and_then(|s| s.hostname_override.as_deref())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            spec.and_then(|s| s.hostname.as_deref())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| pod.metadata.name.as_deref().unwrap_or(""));
    if chosen.len() <= HOSTNAME_MAX_LEN {
        return chosen.to_string();
    }
    let mut cut = HOSTNAME_MAX_LEN;
    while !chosen.is_char_boundary(cut) {
        cut -= 1;
    }
    chosen[..cut].trim_end_matches(['-', '.']).to_string()
}

/// The sandbox of a pod: identity, hostname, host namespaces, QoS and the pod cgroup.
pub fn sandbox_spec(pod: &Pod) -> SandboxSpec {
    let spec = spec_of(pod);
    let flag = |f: fn(&PodSpec) -> Option<bool>| spec.and_then(f).unwrap_or(false);
    SandboxSpec {
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        hostname: pod_hostname(pod),
        host_network: flag(|s| s.host_network),
        host_ipc: flag(|s| s.host_ipc),
        host_pid: flag(|s| s.host_pid),
        share_pid: flag(|s| s.share_process_namespace),
        qos: qos_class(pod),
        resources: pod_resources(pod),
        shm_size: None,
    }
}

/// A unique id for one run of a container: `<pod uid>_<container>_<attempt>`.
///
/// Only `[A-Za-z0-9_.+-]` is valid for libcontainer; the pod uid (a UUID, or the 32 hex chars of
/// a static pod) and the container name (a DNS label) are kept when they fit, else replaced by a
/// hash so that ids stay unique. '_' never appears in either part, so the id is unambiguous.
/// An ephemeral container as a [`Container`] (the fields they share; the API rejects ports,
/// probes, resources and lifecycle on ephemeral containers) and its `targetContainerName`.
pub fn ephemeral_container(e: &EphemeralContainer) -> Option<(Container, Option<String>)> {
    let mut v = serde_json::to_value(e).ok()?;
    let target = v
        .as_object_mut()?
        .remove("targetContainerName")
        .and_then(|t| t.as_str().map(str::to_string))
        .filter(|t| !t.is_empty());
    let c: Container = serde_json::from_value(v).ok()?;
    Some((c, target))
}

pub fn container_id(pod_uid: &str, container: &str, attempt: u32) -> String {
    format!(
        "{}{}_{attempt}",
        container_id_prefix(pod_uid),
        id_part(container, 63)
    )
}

/// The prefix every container id of a pod starts with (`<pod uid>_`).
pub fn container_id_prefix(pod_uid: &str) -> String {
    format!("{}_", id_part(pod_uid, 64))
}

fn id_part(s: &str, max: usize) -> String {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'+');
    if ok {
        s.to_string()
    } else {
        let digest = Sha256::digest(s.as_bytes());
        format!("h{}", &hex::encode(digest)[..31])
    }
}

// ---------------------------------------------------------------------------------------------
// $(VAR) expansion
// ---------------------------------------------------------------------------------------------

/// Kubernetes' `expansion.Expand`: `$(NAME)` is replaced by `mapping(NAME)`, `$$` is an escaped
/// `$`, an unterminated `$(` or a `$` before anything else is kept as written.
pub fn expand(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance;
            match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    advance = 1;
                }
                b'(' => match rest[1..].find(')') {
                    Some(end) => {
                        out.push_str(&mapping(&rest[1..1 + end]));
                        advance = end + 2;
                    }
                    None => {
                        out.push_str("$(");
                        advance = 1;
                    }
                },
                _ => {
                    // Keep the '$' and the whole next character.
                    let ch_len = rest.chars().next().map(char::len_utf8).unwrap_or(1);
                    out.push('$');
                    out.push_str(&rest[..ch_len]);
                    advance = ch_len;
                }
            }
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// `expansion.MappingFuncFor`: defined names map to their value, others stay `$(NAME)`.
fn mapping_for<'a>(vars: &'a HashMap<String, String>) -> impl FnMut(&str) -> String + 'a {
    move |name| match vars.get(name) {
        Some(v) => v.clone(),
        None => format!("$({name})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// What the node offers, for `resourceFieldRef` of unset limits (the kubelet uses allocatable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", go_quote(v)))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// The value of a downward API `fieldRef`, like the kubelet's `podFieldSelectorRuntimeValue`.
pub fn field_ref_value(pod: &Pod, sel: &ObjectFieldSelector) -> Result<String, String> {
    if let Some(v) = sel.api_version.as_deref().filter(|v| !v.is_empty()) {
        if v != "v1" {
            return Err(format!("unsupported fieldRef apiVersion {v:?}"));
        }
    }
    let meta = &pod.metadata;
    let spec = spec_of(pod);
    let status = pod.status.as_ref();
    let path = sel.field_path.as_str();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => status
            .and_then(|s| {
                s.host_ip
                    .clone()
                    .or_else(|| s.host_ips.as_ref()?.first()?.ip.clone().into())
            })
            .unwrap_or_default(),
        "status.hostIPs" => status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .or_else(|| status.and_then(|s| s.host_ip.clone()))
            .unwrap_or_default(),
        "status.podIP" => status
            .and_then(|s| {
                s.pod_ips
                    .as_ref()
                    .and_then(|ips| ips.first())
                    .map(|i| i.ip.clone())
                    .or_else(|| s.pod_ip.clone())
            })
            .unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .or_else(|| status.and_then(|s| s.pod_ip.clone()))
            .unwrap_or_default(),
        other => {
            if let Some(key) = subscript(other, "metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = subscript(other, "metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {other:?}"));
            }
        }
    };
    Ok(value)
}

/// The value of a `resourceFieldRef`, like the kubelet's `containerResourceRuntimeValue` with
/// unset cpu and memory limits defaulted to the node's allocatable.
pub fn resource_field_value(
    pod: &Pod,
    container: &Container,
    sel: &ResourceFieldSelector,
    node: NodeAllocatable,
) -> Result<String, String> {
    let target = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => containers(pod)
            .iter()
            .chain(init_containers(pod))
            .find(|c| c.name == name)
            .ok_or_else(|| format!("container {name:?} not found in pod"))?,
    };
    let divisor = match &sel.divisor {
        Some(q) => parse_quantity(&q.0).map_err(|e| format!("divisor {:?}: {e}", q.0))?,
        None => ParsedQuantity::from_milli(1000),
    };
    let divisor = if divisor.is_zero() {
        ParsedQuantity::from_milli(1000)
    } else {
        divisor
    };
    let r = container_res(target);
    let res = target.resources.as_ref();
    let raw = |limits: bool, name: &str| {
        quantity_in(
            res.and_then(|r| {
                if limits {
                    r.limits.as_ref()
                } else {
                    r.requests.as_ref()
                }
            }),
            name,
        )
        .map(ParsedQuantity::milli_value)
    };
    let cpu = |milli: i128| ceil_div(milli, divisor.milli_value().max(1)).to_string();
    let bytes = |milli: i128| ceil_div(ceil_div(milli, 1000), divisor.value().max(1)).to_string();
    let node_cpu = node.cpu_millis as i128;
    let node_mem = node.memory_bytes as i128 * 1000;
    Ok(match sel.resource.as_str() {
        "limits.cpu" => cpu(r.cpu_limit.filter(|v| *v > 0).unwrap_or(node_cpu)),
        "requests.cpu" => cpu(r.cpu_request.unwrap_or(0)),
        "limits.memory" => bytes(r.memory_limit.filter(|v| *v > 0).unwrap_or(node_mem)),
        "requests.memory" => bytes(r.memory_request.unwrap_or(0)),
        "limits.ephemeral-storage" => match raw(true, "ephemeral-storage") {
            Some(v) if v > 0 => bytes(v),
            _ => return Err("limits.ephemeral-storage is unset and the node's allocatable ephemeral storage is not known".into()),
        },
        "requests.ephemeral-storage" => bytes(
            raw(false, "ephemeral-storage")
                .or_else(|| raw(true, "ephemeral-storage"))
                .unwrap_or(0),
        ),
        other => {
            if let Some(name) = other.strip_prefix("limits.").filter(|n| n.starts_with("hugepages-")) {
                bytes(raw(true, name).unwrap_or(0))
            } else if let Some(name) =
                other.strip_prefix("requests.").filter(|n| n.starts_with("hugepages-"))
            {
                bytes(raw(false, name).or_else(|| raw(true, name)).unwrap_or(0))
            } else {
                return Err(format!("unsupported resourceFieldRef resource {other:?}"));
            }
        }
    })
}

/// The container's own environment (pod env only, no image env), in order, each value expanded
/// against the ones defined before it, like the kubelet's `makeEnvironmentVariables`.
/// A name defined twice keeps its first position and its last value.
///
/// `objects`: the configMaps and secrets the pod refers to (cluster mode); `None` in standalone
/// mode, where `envFrom` and key refs are refused. `envFrom` comes first, like the kubelet's.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    node: NodeAllocatable,
    objects: Option<&ApiObjects>,
) -> Result<Vec<(String, String)>, TranslateError> {
    let cname = &container.name;
    let unsupported = |what: String| TranslateError::Unsupported {
        container: cname.clone(),
        what,
    };
    let config_err = |reason: String| TranslateError::EnvSource {
        container: cname.clone(),
        reason,
    };
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    match objects {
        None => {
            for from in container.env_from.iter().flatten() {
                if from.config_map_ref.is_some() {
                    return Err(unsupported("envFrom configMapRef".into()));
                }
                if from.secret_ref.is_some() {
                    return Err(unsupported("envFrom secretRef".into()));
                }
            }
        }
        Some(o) => {
            // Service links are the base: usable in $(VAR), overridden by the pod's own.
            vars.extend(o.service_env.iter().cloned());
            for (k, v) in crate::projection::env_from(pod, container, o).map_err(config_err)? {
                order.push(k.clone());
                vars.insert(k, v);
            }
        }
    }
    for var in container.env.iter().flatten() {
        let env_err = |reason: String| TranslateError::Env {
            container: cname.clone(),
            name: var.name.clone(),
            reason,
        };
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => expand(v, mapping_for(&vars)),
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_ref_value(pod, f).map_err(env_err)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field_value(pod, container, r, node).map_err(env_err)?
                } else if from.config_map_key_ref.is_some() || from.secret_key_ref.is_some() {
                    let Some(o) = objects else {
                        let what = if from.config_map_key_ref.is_some() {
                            "configMapKeyRef"
                        } else {
                            "secretKeyRef"
                        };
                        return Err(unsupported(format!("env {}: {what}", var.name)));
                    };
                    match crate::projection::env_key_ref(pod, from, o).map_err(config_err)? {
                        Some(v) => v,
                        // Optional and missing: the variable is not set at all.
                        None => continue,
                    }
                } else if from.file_key_ref.is_some() {
                    return Err(unsupported(format!("env {}: fileKeyRef", var.name)));
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        if !order.contains(&var.name) {
            order.push(var.name.clone());
        }
        vars.insert(var.name.clone(), value);
    }
    let mut out: Vec<(String, String)> = order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect();
    // Then the service variables the pod did not set itself.
    for (k, v) in objects.iter().flat_map(|o| o.service_env.iter()) {
        if !out.iter().any(|(name, _)| name == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// containerd's `replaceOrAppendEnvValues`: image env first, a pod variable of the same name
/// replaces the image's in place, new ones are appended in order.
fn merge_env(image_env: &[String], pod_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut upsert = |k: &str, v: &str| match out.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        upsert(k, v);
    }
    for (k, v) in pod_env {
        upsert(k, v);
    }
    out
}

/// The final argv: Kubernetes command/args (already expanded) over the image's ENTRYPOINT/CMD,
/// like containerd's CRI plugin.
pub fn build_args(command: &[String], args: &[String], image: &ImageConfig) -> Option<Vec<String>> {
    let mut command = command.to_vec();
    let mut args = args.to_vec();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    if command.is_empty() && args.is_empty() {
        return None;
    }
    command.extend(args);
    Some(command)
}

// ---------------------------------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------------------------------

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows (0 to 40), in number order (the runtime owns the list).
pub use bosun_runtime::spec::ALL_CAPS as ALL_CAPABILITIES;

/// `NET_ADMIN`, `net_admin`, `CAP_NET_ADMIN` -> `CAP_NET_ADMIN` (None if unknown).
pub fn normalize_capability(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL_CAPABILITIES.iter().find(|c| &c[4..] == bare).copied()
}

/// The capability set from a container's add/drop lists, applied like containerd:
/// add ALL, then drop ALL, then each added one, then each dropped one.
pub fn capabilities(
    container: &str,
    add: &[String],
    drop: &[String],
) -> Result<Vec<String>, TranslateError> {
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let resolve = |names: &[String]| -> Result<Vec<&'static str>, TranslateError> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .map(|n| {
                normalize_capability(n).ok_or_else(|| TranslateError::Capability {
                    container: container.to_string(),
                    name: n.clone(),
                })
            })
            .collect()
    };
    let mut caps: Vec<&'static str> = DEFAULT_CAPABILITIES.to_vec();
    if add.iter().any(is_all) {
        caps = ALL_CAPABILITIES.to_vec();
    }
    if drop.iter().any(is_all) {
        caps.clear();
    }
    for c in resolve(add)? {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    let dropped = resolve(drop)?;
    caps.retain(|c| !dropped.contains(c));
    Ok(caps.into_iter().map(String::from).collect())
}

fn pod_name_for_errors(pod: &Pod) -> String {
    // The kubelet's format.Pod: name_namespace(uid).
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

fn id_u32(container: &str, field: &str, v: i64) -> Result<u32, TranslateError> {
    u32::try_from(v).map_err(|_| TranslateError::Security {
        container: container.to_string(),
        reason: format!("{field} {v} is out of range"),
    })
}

/// The user (container securityContext over pod securityContext, else the image's USER),
/// checked against runAsNonRoot like the kubelet's `verifyRunAsNonRoot`.
pub fn container_user(
    pod: &Pod,
    container: &Container,
    image_user: &str,
) -> Result<User, TranslateError> {
    let csc = container.security_context.as_ref();
    let psc = spec_of(pod).and_then(|s| s.security_context.as_ref());
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let name = &container.name;
    let gid = run_as_group
        .map(|g| id_u32(name, "runAsGroup", g))
        .transpose()?;
    let non_root_err = |what: String| TranslateError::NonRoot {
        container: name.clone(),
        reason: format!(
            "{what} (pod: {:?}, container: {name})",
            pod_name_for_errors(pod)
        ),
    };
    if let Some(uid) = run_as_user {
        let uid = id_u32(name, "runAsUser", uid)?;
        if non_root && uid == 0 {
            return Err(non_root_err(
                "container's runAsUser breaks non-root policy".into(),
            ));
        }
        return Ok(User::Id { uid, gid });
    }
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let numeric_uid = if user_part.is_empty() {
        Some(0)
    } else {
        user_part.parse::<u32>().ok()
    };
    if non_root {
        match numeric_uid {
            Some(0) => {
                return Err(non_root_err(
                    "container has runAsNonRoot and image will run as root".into(),
                ))
            }
            None => {
                return Err(non_root_err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({user_part}), cannot verify user is non-root"
                )))
            }
            Some(_) => {}
        }
    }
    let image_gid = group_part.map(|g| g.parse::<u32>().ok());
    match (numeric_uid, gid, image_gid) {
        (Some(uid), Some(gid), _) => Ok(User::Id {
            uid,
            gid: Some(gid),
        }),
        (Some(uid), None, None) => Ok(User::Id { uid, gid: None }),
        (Some(uid), None, Some(Some(g))) => Ok(User::Id { uid, gid: Some(g) }),
        (Some(_), None, Some(None)) => Ok(User::Name(image_user.to_string())),
        (None, Some(gid), _) => Ok(User::Name(format!("{user_part}:{gid}"))),
        (None, None, _) => Ok(User::Name(image_user.to_string())),
    }
}

/// Capabilities, privileges and /proc masking of a container.
pub fn container_security(pod: &Pod, container: &Container) -> Result<Security, TranslateError> {
    let name = &container.name;
    let default_sc = SecurityContext::default();
    let sc = container.security_context.as_ref().unwrap_or(&default_sc);
    let privileged = sc.privileged.unwrap_or(false);
    let add: Vec<String> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    let drop: Vec<String> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    let no_new_privileges = sc.allow_privilege_escalation == Some(false);
    if no_new_privileges {
        if privileged {
            return Err(TranslateError::Security {
                container: name.clone(),
                reason: "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
                    .into(),
            });
        }
        if add
            .iter()
            .any(|c| normalize_capability(c) == Some("CAP_SYS_ADMIN"))
        {
            return Err(TranslateError::Security {
                container: name.clone(),
                reason: "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN".into(),
            });
        }
    }
    let caps = if privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        capabilities(name, &add, &drop)?
    };
    let unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let psc = spec_of(pod).and_then(|s| s.security_context.as_ref());
    let mut groups = Vec::new();
    if let Some(fs_group) = psc.and_then(|p| p.fs_group) {
        groups.push(id_u32(name, "fsGroup", fs_group)?);
    }
    for g in psc
        .and_then(|p| p.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
    {
        groups.push(id_u32(name, "supplementalGroups", *g)?);
    }
    Ok(Security {
        privileged,
        capabilities: caps,
        no_new_privileges: no_new_privileges && !privileged,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        mask_paths: !privileged && !unmasked,
        supplemental_groups: groups,
    })
}

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` -> the signal number (Linux numbering).
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rtmin = 34;
    let rtmax = 64;
    if let Some(off) = name.strip_prefix("RTMIN+") {
        let n = rtmin + off.parse::<i32>().ok()?;
        return (n <= rtmax).then_some(n);
    }
    if let Some(off) = name.strip_prefix("RTMAX-") {
        let n = rtmax - off.parse::<i32>().ok()?;
        return (n >= rtmin).then_some(n);
    }
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        "RTMIN" => rtmin,
        "RTMAX" => rtmax,
        _ => return None,
    };
    Some(n)
}

/// A hash of everything in the container spec that requires a restart when it changes
/// (resources are left out: they can change in place).
pub fn container_hash(container: &Container) -> String {
    let mut c = container.clone();
    c.resources = None;
    c.resize_policy = None;
    let bytes = serde_json::to_vec(&c).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

// ---------------------------------------------------------------------------------------------
// Container spec
// ---------------------------------------------------------------------------------------------

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const LABEL_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const LABEL_CONTAINER_HASH: &str = "bosun.container.hash";

/// Default terminationMessagePath.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Everything `container_spec` needs beyond the pod.
pub struct ContainerContext<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    /// The image reference as written in the pod.
    pub image_ref: &'a str,
    /// The resolved image id.
    pub image_id: &'a str,
    pub attempt: u32,
    /// Volume mounts already resolved to host paths (see [`mount_requests`]).
    pub mounts: Vec<Mount>,
    /// Node allocatable memory: OOM score of burstable pods and unset memory limits in
    /// `resourceFieldRef`.
    pub node_memory_bytes: u64,
    /// Node allocatable cpu in millicores, for unset cpu limits in `resourceFieldRef`.
    pub node_cpu_millis: u64,
    /// Host file bind-mounted at the container's terminationMessagePath.
    pub termination_message_path: Option<PathBuf>,
    /// configMaps and secrets for the environment (cluster mode only).
    pub objects: Option<&'a ApiObjects>,
}

/// Whether the container's environment names the pod's own address (`status.podIP(s)`), which
/// is known only once the pod network is set up.
pub fn env_needs_pod_ip(c: &Container) -> bool {
    c.env.iter().flatten().any(|e| {
        e.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| matches!(f.field_path.as_str(), "status.podIP" | "status.podIPs"))
    })
}

/// The runtime spec of one container run.
pub fn container_spec(ctx: &ContainerContext) -> Result<ContainerSpec, TranslateError> {
    let pod = ctx.pod;
    let c = ctx.container;
    let node = NodeAllocatable {
        memory_bytes: ctx.node_memory_bytes,
        cpu_millis: ctx.node_cpu_millis,
    };
    let pod_env = container_env(pod, c, node, ctx.objects)?;
    let vars: HashMap<String, String> = pod_env.iter().cloned().collect();
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, mapping_for(&vars)))
        .collect();
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|s| expand(s, mapping_for(&vars)))
        .collect();
    let argv = build_args(&command, &args, ctx.image).ok_or_else(|| TranslateError::NoCommand {
        container: c.name.clone(),
    })?;
    let env = merge_env(&ctx.image.env, &pod_env);
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(ctx.image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let user = container_user(pod, c, &ctx.image.user)?;
    let security = container_security(pod, c)?;
    let signal_name = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.clone())
        .or_else(|| ctx.image.stop_signal.clone())
        .filter(|s| !s.is_empty());
    let stop_signal = match signal_name {
        None => libc::SIGTERM,
        Some(s) => parse_signal(&s).ok_or_else(|| TranslateError::StopSignal {
            container: c.name.clone(),
            signal: s.clone(),
        })?,
    };
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let pod_namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_POD_NAME.to_string(), pod_name.clone());
    labels.insert(LABEL_POD_NAMESPACE.to_string(), pod_namespace.clone());
    labels.insert(LABEL_POD_UID.to_string(), pod_uid.clone());
    labels.insert(LABEL_CONTAINER_NAME.to_string(), c.name.clone());
    labels.insert(LABEL_RESTART_COUNT.to_string(), ctx.attempt.to_string());
    labels.insert(LABEL_CONTAINER_HASH.to_string(), container_hash(c));
    let mut mounts = ctx.mounts.clone();
    if let Some(host) = &ctx.termination_message_path {
        let dest = c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
        mounts.push(Mount {
            destination: PathBuf::from(dest),
            source: host.clone(),
            readonly: false,
            propagation: Propagation::Private,
        });
    }
    Ok(ContainerSpec {
        id: container_id(&pod_uid, &c.name, ctx.attempt),
        name: c.name.clone(),
        pod_uid,
        pod_namespace,
        pod_name,
        attempt: ctx.attempt,
        image: ctx.image_ref.to_string(),
        image_id: ctx.image_id.to_string(),
        args: argv,
        env,
        cwd,
        user,
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        mounts,
        resources: container_resources(c),
        oom_score_adj: oom_score_adj(pod, c, ctx.node_memory_bytes),
        security,
        stop_signal,
        termination_message_path: ctx.termination_message_path.clone(),
        labels,
        // volumeDevices: resolved by the worker from the pod's block volumes.
        devices: Vec::new(),
        cdi_devices: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Volumes and mounts
// ---------------------------------------------------------------------------------------------

/// One volume mount of a container, before the volume exists on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountRequest {
    pub volume: String,
    /// subPath, or subPathExpr expanded with the container's env.
    pub sub_path: Option<String>,
    pub destination: PathBuf,
    pub readonly: bool,
    pub propagation: Propagation,
}

fn check_sub_path(p: &str) -> Result<(), String> {
    if Path::new(p).is_absolute() {
        return Err(format!("subPath `{p}` must not be an absolute path"));
    }
    if Path::new(p)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!("subPath `{p}` must not contain '..'"));
    }
    Ok(())
}

/// The container's volume mounts, checked like the kubelet's `makeMounts`.
///
/// subPathExpr is expanded with the container's env; a `resourceFieldRef` of an unset limit
/// resolves against an unknown (zero) node allocatable here.
pub fn mount_requests(
    pod: &Pod,
    container: &Container,
    objects: Option<&ApiObjects>,
) -> Result<Vec<MountRequest>, TranslateError> {
    let volumes: Vec<&str> = spec_of(pod)
        .and_then(|s| s.volumes.as_ref())
        .map(|v| v.iter().map(|v| v.name.as_str()).collect())
        .unwrap_or_default();
    // API data is always mounted read-only, as the kubelet does; so are read-only claims and
    // read-only CSI inline volumes.
    let api_data: Vec<&str> = spec_of(pod)
        .and_then(|s| s.volumes.as_ref())
        .map(|v| {
            v.iter()
                .filter(|v| {
                    crate::projection::api_data_plugin(v).is_some()
                        || v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.read_only == Some(true))
                        || v.csi.as_ref().is_some_and(|c| c.read_only == Some(true))
                })
                .map(|v| v.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut env: Option<HashMap<String, String>> = None;
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let err = |reason: String| TranslateError::Mount {
            container: container.name.clone(),
            mount_path: m.mount_path.clone(),
            reason,
        };
        if !volumes.contains(&m.name.as_str()) {
            return Err(err(format!("volume {:?} not found in pod", m.name)));
        }
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") | Some("") => Propagation::Private,
            Some("HostToContainer") => Propagation::HostToContainer,
            Some("Bidirectional") => {
                if !privileged {
                    return Err(err(
                        "Bidirectional mount propagation is available only to privileged containers"
                            .into(),
                    ));
                }
                Propagation::Bidirectional
            }
            Some(other) => return Err(err(format!("invalid MountPropagation mode: {other:?}"))),
        };
        let sub_path_expr = m.sub_path_expr.as_deref().filter(|s| !s.is_empty());
        let sub_path = m.sub_path.as_deref().filter(|s| !s.is_empty());
        let sub_path = match (sub_path, sub_path_expr) {
            (Some(_), Some(_)) => {
                return Err(err("subPath and subPathExpr are mutually exclusive".into()))
            }
            (Some(p), None) => Some(p.to_string()),
            (None, Some(expr)) => {
                if env.is_none() {
                    env = Some(
                        container_env(pod, container, NodeAllocatable::default(), objects)?
                            .into_iter()
                            .collect(),
                    );
                }
                let vars: Option<&HashMap<String, String>> = env.as_ref();
                let mut missing = Vec::new();
                let expanded = expand(expr, |key| {
                    match vars.and_then(|v| v.get(key)).filter(|v| !v.is_empty()) {
                        Some(v) => v.clone(),
                        None => {
                            if !missing.contains(&key.to_string()) {
                                missing.push(key.to_string());
                            }
                            String::new()
                        }
                    }
                });
                if !missing.is_empty() {
                    missing.sort();
                    return Err(err(format!("missing value for {}", missing.join(", "))));
                }
                Some(expanded)
            }
            (None, None) => None,
        };
        if let Some(p) = &sub_path {
            check_sub_path(p).map_err(err)?;
        }
        out.push(MountRequest {
            volume: m.name.clone(),
            sub_path,
            destination: PathBuf::from(&m.mount_path),
            readonly: m.read_only.unwrap_or(false) || api_data.contains(&m.name.as_str()),
            propagation,
        });
    }
    Ok(out)
}

/// A volume bosun can make in standalone mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir {
        /// medium: Memory (a tmpfs).
        memory: bool,
        size_limit: Option<u64>,
    },
    HostPath {
        path: String,
        /// The hostPath type as written ("" when unset).
        type_: String,
    },
    /// A `local` PV: a folder (or, with `block`, a device) of this node. Mounted like a
    /// hostPath, but the pod's fsGroup applies to a writable folder (the kubelet's local
    /// volume plugin does that; its hostPath plugin does not).
    Local { path: String, block: bool },
    /// configMap, secret, downwardAPI or projected: files written from API data.
    ApiData(bosun_volumes::ApiDataPlugin),
    /// A PersistentVolumeClaim, resolved to its bound PV when the pod's volumes are set up.
    Claim { claim: String },
    /// A generic ephemeral volume (`ephemeral.volumeClaimTemplate`): the claim
    /// `<pod name>-<volume name>` the ephemeral volume controller creates, used only when the
    /// pod is its controller (the kubelet's `ephemeral.VolumeIsForPod`).
    EphemeralClaim { claim: String },
    /// A CSI ephemeral inline volume (`csi:` in the pod spec), published by the driver when the
    /// pod's volumes are set up.
    CsiInline { driver: String },
}

/// The device node a container gets for a block volume whose device file is `host` (what
/// NodePublishVolume made): its type and numbers, read-write or read-only.
pub fn block_device(
    host: &std::path::Path,
    container_path: &str,
    read_only: bool,
) -> Result<bosun_runtime::Device, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(host)
        .map_err(|e| format!("volumeDevice {container_path}: {}: {e}", host.display()))?;
    let kind = if md.file_type().is_block_device() {
        "b"
    } else if md.file_type().is_char_device() {
        "c"
    } else {
        return Err(format!(
            "volumeDevice {container_path}: {} is not a device",
            host.display()
        ));
    };
    let rdev = md.rdev();
    Ok(bosun_runtime::Device {
        container_path: container_path.to_string(),
        kind: kind.to_string(),
        major: i64::from(nix::sys::stat::major(rdev) as u32),
        minor: i64::from(nix::sys::stat::minor(rdev) as u32),
        access: if read_only { "rm" } else { "rwm" }.to_string(),
    })
}

/// The name of the claim the ephemeral volume controller makes for volume `volume` of pod
/// `pod`: `<pod name>-<volume name>`.
pub fn ephemeral_claim_name(pod: &str, volume: &str) -> String {
    format!("{pod}-{volume}")
}

/// The type name of a volume as written in the pod (`emptyDir`, `configMap`, ...), or None when
/// it has no source. Several sources -> the first one.
pub fn volume_type_names(volume: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
    match serde_json::to_value(volume) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| k != "name" && !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Every volume of the pod with what to make of it. Without the cluster (`cluster` false),
/// volumes that need API objects are refused; downwardAPI works anywhere.
pub fn volume_sources(
    pod: &Pod,
    cluster: bool,
) -> Result<Vec<(String, VolumeKind)>, TranslateError> {
    let mut out = Vec::new();
    for v in spec_of(pod)
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let verr = |reason: String| TranslateError::Volume {
            volume: v.name.clone(),
            reason,
        };
        if let Some(e) = &v.empty_dir {
            let memory = match e.medium.as_deref().unwrap_or("") {
                "" => false,
                "Memory" => true,
                other => {
                    return Err(TranslateError::UnsupportedVolume {
                        volume: v.name.clone(),
                        kind: format!("emptyDir medium {other}"),
                        standalone: false,
                    })
                }
            };
            let size_limit = match &e.size_limit {
                None => None,
                Some(q) => {
                    let parsed = parse_quantity(&q.0)
                        .map_err(|e| verr(format!("sizeLimit {:?}: {e}", q.0)))?;
                    Some(parsed.value().clamp(0, u64::MAX as i128) as u64)
                }
            };
            out.push((v.name.clone(), VolumeKind::EmptyDir { memory, size_limit }));
        } else if let Some(h) = &v.host_path {
            out.push((
                v.name.clone(),
                VolumeKind::HostPath {
                    path: h.path.clone(),
                    type_: h.type_.clone().unwrap_or_default(),
                },
            ));
        } else if let Some(c) = v.persistent_volume_claim.as_ref().filter(|_| cluster) {
            out.push((
                v.name.clone(),
                VolumeKind::Claim {
                    claim: c.claim_name.clone(),
                },
            ));
        } else if v.ephemeral.is_some() && cluster {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            out.push((
                v.name.clone(),
                VolumeKind::EphemeralClaim {
                    claim: ephemeral_claim_name(pod_name, &v.name),
                },
            ));
        } else if let Some(c) = v.csi.as_ref().filter(|_| cluster) {
            out.push((
                v.name.clone(),
                VolumeKind::CsiInline {
                    driver: c.driver.clone(),
                },
            ));
        } else if let Some(plugin) = crate::projection::api_data_plugin(v)
            .filter(|_| cluster || !crate::projection::volume_needs_api(v))
        {
            out.push((v.name.clone(), VolumeKind::ApiData(plugin)));
        } else {
            let kind = volume_type_names(v)
                .into_iter()
                .next()
                .ok_or_else(|| verr("must specify a volume type".into()))?;
            let standalone = !cluster
                && (crate::projection::api_data_plugin(v).is_some()
                    || v.persistent_volume_claim.is_some()
                    || v.ephemeral.is_some()
                    || v.csi.is_some());
            return Err(TranslateError::UnsupportedVolume {
                volume: v.name.clone(),
                kind,
                standalone,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    /// A pod with one container per (requests, limits) pair, given as `cpu,memory` strings where
    /// an empty field means unset.
    fn pod_res(containers: &[(&str, &str)], init: &[(&str, &str)]) -> Pod {
        fn list(s: &str) -> String {
            let mut parts = s.split(',');
            let cpu = parts.next().unwrap_or("");
            let mem = parts.next().unwrap_or("");
            let mut out = String::new();
            if !cpu.is_empty() {
                out.push_str(&format!("cpu: \"{cpu}\", "));
            }
            if !mem.is_empty() {
                out.push_str(&format!("memory: \"{mem}\""));
            }
            format!("{{{}}}", out.trim_end_matches([',', ' ']))
        }
        let render = |cs: &[(&str, &str)], prefix: &str| {
            cs.iter()
                .enumerate()
                .map(|(i, (req, lim))| {
                    format!(
                        "  - name: {prefix}{i}\n    image: busybox\n    resources:\n      requests: {}\n      limits: {}\n",
                        list(req),
                        list(lim)
                    )
                })
                .collect::<String>()
        };
        let mut y = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns, uid: u1}}\nspec:\n  containers:\n{}",
            render(containers, "c")
        );
        if !init.is_empty() {
            y.push_str(&format!("  initContainers:\n{}", render(init, "i")));
        }
        pod(&y)
    }

    fn milli(s: &str) -> i128 {
        parse_quantity(s).expect("quantity").milli_value()
    }

    // --- quantities -------------------------------------------------------------------------

    #[test]
    fn quantity_table() {
        let cases: &[(&str, i128)] = &[
            ("100m", 100),
            ("0.5", 500),
            ("2", 2000),
            ("0", 0),
            ("0m", 0),
            ("1.5", 1500),
            (".5", 500),
            ("5.", 5000),
            ("+3", 3000),
            ("-1", -1000),
            ("0.1m", 1),
            ("0.0001", 1),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1Ki", 1024 * 1000),
            ("1.5Gi", 1536 * 1024 * 1024 * 1000),
            ("1G", 1_000_000_000 * 1000),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e-3", 1),
            ("1e+2", 100_000),
            ("128974848", 128_974_848_000),
            ("129e6", 129_000_000_000),
            ("123Mi", 123 * 1024 * 1024 * 1000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1Ei", (1i128 << 60) * 1000),
        ];
        for (input, want) in cases {
            assert_eq!(milli(input), *want, "{input}");
        }
        assert_eq!(parse_quantity("64Mi").unwrap().value(), 67_108_864);
        assert_eq!(parse_quantity("0.5").unwrap().value(), 1);
        assert_eq!(parse_quantity("100m").unwrap().value(), 1);
    }

    #[test]
    fn quantity_errors_and_cap() {
        for bad in [
            "", "abc", "1x", "Mi", "1 Mi", "1e", "1.2.3", ".", "1KiB", "--1", "1e3.5",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should fail");
        }
        // Capped at 2^63-1 units like Kubernetes.
        assert_eq!(parse_quantity("100Ei").unwrap().value(), i64::MAX as i128);
    }

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
        let r = container_resources(&p.spec.as_ref().unwrap().containers[0]);
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
        let r = container_resources(&p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(25_000));
        assert_eq!(r.memory_limit, None);
        // Nothing set.
        let p = pod_res(&[("", "")], &[]);
        let r = container_resources(&p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(2),
                ..Resources::default()
            }
        );
        // 0m request -> minimum shares.
        let p = pod_res(&[("0m,", "")], &[]);
        let r = container_resources(&p.spec.as_ref().unwrap().containers[0]);
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

    // --- sandbox ---------------------------------------------------------------------------------

    #[test]
    fn hostname_rules() {
        let mk = |name: &str, hostname: Option<&str>| {
            let mut p = pod_res(&[("", "")], &[]);
            p.metadata.name = Some(name.to_string());
            p.spec.as_mut().unwrap().hostname = hostname.map(String::from);
            p
        };
        assert_eq!(pod_hostname(&mk("web", None)), "web");
        assert_eq!(pod_hostname(&mk("web", Some("h1"))), "h1");
        assert_eq!(pod_hostname(&mk("web", Some(""))), "web");
        let long = "a".repeat(70);
        assert_eq!(pod_hostname(&mk(&long, None)), "a".repeat(63));
        let exact = "b".repeat(63);
        assert_eq!(pod_hostname(&mk(&exact, None)), exact);
        // Cut at 63, then trailing '-' and '.' trimmed.
        let tricky = format!("{}-.-{}", "c".repeat(60), "d".repeat(10));
        assert_eq!(pod_hostname(&mk(&tricky, None)), "c".repeat(60));
        let dotted = format!("{}.{}", "e".repeat(62), "f".repeat(10));
        assert_eq!(pod_hostname(&mk(&dotted, None)), "e".repeat(62));
    }

    #[test]
    fn sandbox_spec_flags() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: ns, uid: abc}\nspec:\n  hostNetwork: true\n  hostPID: true\n  shareProcessNamespace: true\n  containers: [{name: a, image: x}]\n",
        );
        let s = sandbox_spec(&p);
        assert_eq!(s.pod_uid, "abc");
        assert_eq!(s.namespace, "ns");
        assert_eq!(s.name, "web");
        assert_eq!(s.hostname, "web");
        assert!(s.host_network && s.host_pid && s.share_pid && !s.host_ipc);
        assert_eq!(s.qos, QosClass::BestEffort);
        assert_eq!(s.resources.cpu_shares, Some(2));
    }

    #[test]
    fn container_ids_are_valid_and_unique() {
        let valid = |id: &str| {
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
        };
        let a = container_id("0f3c1c1e-8f7a-4b9e-9d3b-6f1d2c3b4a5e", "web", 0);
        assert_eq!(a, "0f3c1c1e-8f7a-4b9e-9d3b-6f1d2c3b4a5e_web_0");
        assert!(valid(&a));
        assert_ne!(container_id("a-b", "c", 0), container_id("a", "b-c", 0));
        assert_ne!(container_id("u", "web", 1), container_id("u", "web", 10));
        let odd = container_id("uid/with space", "na_me", 3);
        assert!(valid(&odd), "{odd}");
        assert_ne!(odd, container_id("uid/with spacf", "na_me", 3));
        let long = container_id(&"u".repeat(36), &"n".repeat(63), u32::MAX);
        assert!(long.len() <= 36 + 63 + 12, "{}", long.len());
    }

    // --- expansion -------------------------------------------------------------------------------

    #[test]
    fn expansion_edge_cases() {
        let vars: HashMap<String, String> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // Cases from Kubernetes' expand_test.go.
        let cases: &[(&str, &str)] = &[
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$", "$"),
            ("$$", "$"),
            ("foo$", "foo$"),
            ("$foo", "$foo"),
            ("$(", "$("),
            ("$()", "$()"),
            ("$()$(VAR_A)", "$()A"),
            ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
            ("$(VAR_A)$(VAR_B", "A$(VAR_B"),
            ("$(\u{e9})", "$(\u{e9})"),
            ("x$\u{e9}y", "x$\u{e9}y"),
            ("plain", "plain"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, mapping_for(&vars)), *want, "{input:?}");
        }
    }

    #[test]
    fn expansion_dollar_paren_inner_not_nested() {
        // `$(VAR_A$(VAR_B))`: name is "VAR_A$(VAR_B", undefined, so kept; the ")" follows.
        let vars: HashMap<String, String> = [("VAR_A$(VAR_B".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(VAR_A$(VAR_B))", mapping_for(&vars)), "x)");
    }

    // --- argv ------------------------------------------------------------------------------------

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..ImageConfig::default()
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_rules_table() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a [&'a str]>,
        );
        let cases: &[Case] = &[
            // command, args, entrypoint, cmd -> argv
            (
                &[],
                &[],
                &["/ep"],
                &["c1", "c2"],
                Some(&["/ep", "c1", "c2"]),
            ),
            (&[], &[], &[], &["/bin/sh"], Some(&["/bin/sh"])),
            (&[], &[], &["/ep"], &[], Some(&["/ep"])),
            (&["/cmd"], &[], &["/ep"], &["c1"], Some(&["/cmd"])),
            (&["/cmd"], &["a1"], &["/ep"], &["c1"], Some(&["/cmd", "a1"])),
            (
                &[],
                &["a1", "a2"],
                &["/ep"],
                &["c1"],
                Some(&["/ep", "a1", "a2"]),
            ),
            (&[], &["a1"], &[], &["c1"], Some(&["a1"])),
            (&[], &[], &[""], &["c1"], Some(&["c1"])),
            (&[], &["a1"], &[""], &[], Some(&["a1"])),
            (&[], &[], &[], &[], None),
            (&[], &[], &[""], &[], None),
        ];
        for (i, (command, args, ep, cmd, want)) in cases.iter().enumerate() {
            let got = build_args(&v(command), &v(args), &image(ep, cmd));
            assert_eq!(got, want.map(v), "case {i}");
        }
    }

    // --- container spec --------------------------------------------------------------------------

    struct Fixture {
        pod: Pod,
        image: ImageConfig,
    }

    impl Fixture {
        fn new(container_yaml: &str) -> Self {
            let y = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: ns\n  uid: uid-1\n  labels: {{app: web, tier: \"front\"}}\n  annotations: {{note: hello}}\nspec:\n  nodeName: node-1\n  serviceAccountName: sa\n  containers:\n  - {}\n",
                container_yaml.replace('\n', "\n    ")
            );
            Fixture {
                pod: pod(&y),
                image: ImageConfig {
                    entrypoint: v(&["/entry"]),
                    cmd: v(&["default-cmd"]),
                    env: v(&["PATH=/usr/bin:/bin", "IMG=1", "HOME=/root"]),
                    working_dir: "/img".into(),
                    user: String::new(),
                    stop_signal: None,
                },
            }
        }
        fn spec(&self) -> Result<ContainerSpec, TranslateError> {
            self.spec_with(0, None)
        }
        fn spec_with(
            &self,
            attempt: u32,
            term: Option<PathBuf>,
        ) -> Result<ContainerSpec, TranslateError> {
            container_spec(&ContainerContext {
                pod: &self.pod,
                container: &self.pod.spec.as_ref().unwrap().containers[0],
                image: &self.image,
                image_ref: "busybox:1.36",
                image_id: "sha256:abc",
                attempt,
                mounts: Vec::new(),
                node_memory_bytes: 8 << 30,
                node_cpu_millis: 4000,
                termination_message_path: term,
                objects: None,
            })
        }
    }

    fn env_of(spec: &ContainerSpec) -> Vec<(String, String)> {
        spec.env.clone()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_naming_the_pod_ip() {
        let c: Container = serde_yaml::from_str(
            "name: app\nimage: x\nenv:\n- {name: A, value: b}\n- {name: H, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}",
        )
        .expect("yaml");
        assert!(!env_needs_pod_ip(&c));
        for path in ["status.podIP", "status.podIPs"] {
            let c: Container = serde_yaml::from_str(&format!(
                "name: app\nimage: x\nenv:\n- {{name: P, valueFrom: {{fieldRef: {{fieldPath: {path}}}}}}}"
            ))
            .expect("yaml");
            assert!(env_needs_pod_ip(&c), "{path}");
        }
    }

    #[test]
    fn container_spec_basics() {
        let f = Fixture::new("name: app\nimage: busybox:1.36\ntty: true\nstdin: true");
        let s = f.spec_with(2, Some(PathBuf::from("/host/term"))).unwrap();
        assert_eq!(s.id, "uid-1_app_2");
        assert_eq!(s.name, "app");
        assert_eq!(s.pod_uid, "uid-1");
        assert_eq!(s.pod_name, "web");
        assert_eq!(s.pod_namespace, "ns");
        assert_eq!(s.attempt, 2);
        assert_eq!(s.image, "busybox:1.36");
        assert_eq!(s.image_id, "sha256:abc");
        assert_eq!(s.args, v(&["/entry", "default-cmd"]));
        assert_eq!(s.cwd, "/img");
        assert_eq!(s.user, User::Id { uid: 0, gid: None });
        assert!(s.tty && s.stdin);
        assert_eq!(s.stop_signal, 15);
        assert_eq!(s.oom_score_adj, 1000);
        assert_eq!(s.labels[LABEL_POD_NAME], "web");
        assert_eq!(s.labels[LABEL_POD_NAMESPACE], "ns");
        assert_eq!(s.labels[LABEL_POD_UID], "uid-1");
        assert_eq!(s.labels[LABEL_CONTAINER_NAME], "app");
        assert_eq!(s.labels[LABEL_RESTART_COUNT], "2");
        assert_eq!(s.labels[LABEL_CONTAINER_HASH].len(), 16);
        assert_eq!(
            s.termination_message_path,
            Some(PathBuf::from("/host/term"))
        );
        assert_eq!(
            s.mounts,
            vec![Mount {
                destination: PathBuf::from("/dev/termination-log"),
                source: PathBuf::from("/host/term"),
                readonly: false,
                propagation: Propagation::Private,
            }]
        );
        assert_eq!(s.security.capabilities, v(&DEFAULT_CAPABILITIES));
        assert!(s.security.mask_paths && !s.security.privileged && !s.security.no_new_privileges);
    }

    #[test]
    fn working_dir_fallbacks() {
        let f = Fixture::new("name: app\nimage: x\nworkingDir: /work");
        assert_eq!(f.spec().unwrap().cwd, "/work");
        let mut f = Fixture::new("name: app\nimage: x");
        f.image.working_dir = String::new();
        assert_eq!(f.spec().unwrap().cwd, "/");
    }

    #[test]
    fn no_command_is_an_error() {
        let mut f = Fixture::new("name: app\nimage: x");
        f.image.entrypoint.clear();
        f.image.cmd.clear();
        assert_eq!(
            f.spec().unwrap_err(),
            TranslateError::NoCommand {
                container: "app".into()
            }
        );
        assert!(f
            .spec()
            .unwrap_err()
            .to_string()
            .contains("no command specified"));
    }

    #[test]
    fn env_override_order_and_expansion() {
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: A, value: a}\n- {name: IMG, value: pod-$(A)}\n- {name: B, value: $(A)-$(C)-$(PATH)}\n- {name: C, value: c}\n- {name: A, value: again-$(A)}\n- {name: D, value: $(C)$$(A)}\ncommand: [/bin/echo, $(A), $(B)]\nargs: [$(C), $(MISSING), $$(A)]",
        );
        let s = f.spec().unwrap();
        assert_eq!(
            env_of(&s),
            pairs(&[
                ("PATH", "/usr/bin:/bin"),
                ("IMG", "pod-a"),
                ("HOME", "/root"),
                ("A", "again-a"),
                // C is not yet defined and image env is not visible to expansion.
                ("B", "a-$(C)-$(PATH)"),
                ("C", "c"),
                ("D", "c$(A)"),
            ])
        );
        assert_eq!(
            s.args,
            v(&[
                "/bin/echo",
                "again-a",
                "a-$(C)-$(PATH)",
                "c",
                "$(MISSING)",
                "$(A)"
            ])
        );
    }

    #[test]
    fn field_refs() {
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n- {name: NS, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}}\n- {name: U, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}\n- {name: L, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}\n- {name: LM, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['nope']\"}}}\n- {name: AN, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['note']\"}}}\n- {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n- {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}\n- {name: HIP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n- {name: PIP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n- {name: X, value: $(N).$(NS)}",
        );
        let s = f.spec().unwrap();
        let got: BTreeMap<_, _> = s.env.into_iter().collect();
        assert_eq!(got["N"], "web");
        assert_eq!(got["NS"], "ns");
        assert_eq!(got["U"], "uid-1");
        assert_eq!(got["L"], "web");
        assert_eq!(got["LM"], "");
        assert_eq!(got["AN"], "hello");
        assert_eq!(got["NODE"], "node-1");
        assert_eq!(got["SA"], "sa");
        assert_eq!(got["HIP"], "");
        assert_eq!(got["PIP"], "");
        assert_eq!(got["X"], "web.ns");

        let mut f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: HIP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n- {name: PIP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n- {name: PIPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}",
        );
        f.pod.status = Some(
            serde_yaml::from_str(
                "hostIP: 10.0.0.1\npodIP: 10.1.0.5\npodIPs: [{ip: 10.1.0.5}, {ip: \"fd00::5\"}]",
            )
            .unwrap(),
        );
        let got: BTreeMap<_, _> = f.spec().unwrap().env.into_iter().collect();
        assert_eq!(got["HIP"], "10.0.0.1");
        assert_eq!(got["PIP"], "10.1.0.5");
        assert_eq!(got["PIPS"], "10.1.0.5,fd00::5");
    }

    #[test]
    fn field_ref_whole_maps_and_errors() {
        let p = Fixture::new("name: app\nimage: x").pod;
        let sel = |path: &str| ObjectFieldSelector {
            api_version: None,
            field_path: path.to_string(),
        };
        assert_eq!(
            field_ref_value(&p, &sel("metadata.labels")).unwrap(),
            "app=\"web\"\ntier=\"front\""
        );
        assert!(field_ref_value(&p, &sel("spec.containers")).is_err());
        let bad_version = ObjectFieldSelector {
            api_version: Some("v2".into()),
            field_path: "metadata.name".into(),
        };
        assert!(field_ref_value(&p, &bad_version).is_err());
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: Z, valueFrom: {fieldRef: {fieldPath: status.phase}}}",
        );
        assert!(matches!(f.spec(), Err(TranslateError::Env { .. })));
    }

    #[test]
    fn resource_field_refs() {
        let f = Fixture::new(
            "name: app\nimage: x\nresources:\n  requests: {cpu: 250m, memory: 64Mi}\n  limits: {cpu: \"1.5\", memory: 128Mi}\nenv:\n- {name: LC, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n- {name: LCM, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}\n- {name: RC, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}\n- {name: RCM, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}\n- {name: LM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}\n- {name: LMI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n- {name: RM, valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1Gi}}}\n- {name: Z, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: \"0\"}}}",
        );
        let got: BTreeMap<_, _> = f.spec().unwrap().env.into_iter().collect();
        assert_eq!(got["LC"], "2");
        assert_eq!(got["LCM"], "1500");
        assert_eq!(got["RC"], "1");
        assert_eq!(got["RCM"], "250");
        assert_eq!(got["LM"], "134217728");
        assert_eq!(got["LMI"], "128");
        assert_eq!(got["RM"], "1");
        assert_eq!(got["Z"], "2");

        // Unset limits resolve to the node's allocatable.
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: LC, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n- {name: LM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n- {name: RC, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}",
        );
        let got: BTreeMap<_, _> = f.spec().unwrap().env.into_iter().collect();
        assert_eq!(got["LC"], "4");
        assert_eq!(got["LM"], "8192");
        assert_eq!(got["RC"], "0");
    }

    #[test]
    fn cluster_env_from_config_maps_and_secrets() {
        let p = pod(r#"
metadata: {name: w, namespace: ns}
spec:
  containers:
  - name: c
    image: x
    envFrom: [{configMapRef: {name: cm}, prefix: P_}]
    env:
    - {name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}
    - {name: B, value: "$(P_x)-$(A)"}
    - {name: GONE, valueFrom: {configMapKeyRef: {name: cm, key: nope, optional: true}}}
    - {name: P_x, value: override}
"#);
        let mut o = ApiObjects::default();
        let cm = k8s_openapi::api::core::v1::ConfigMap {
            data: Some([("x".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        o.config_maps.insert("cm".into(), Some(cm));
        let s = k8s_openapi::api::core::v1::Secret {
            data: Some([("k".to_string(), k8s_openapi::ByteString(b"sec".to_vec()))].into()),
            ..Default::default()
        };
        o.secrets.insert("s".into(), Some(s));
        o.service_env = vec![
            ("A".into(), "from-service".into()),
            ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()),
        ];
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = container_env(&p, c, NodeAllocatable::default(), Some(&o)).unwrap();
        assert_eq!(
            env,
            [
                ("P_x".to_string(), "override".to_string()),
                ("A".into(), "sec".into()),
                ("B".into(), "1-sec".into()),
                ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()),
            ]
        );
        o.secrets.insert("s".into(), None);
        let e = container_env(&p, c, NodeAllocatable::default(), Some(&o)).unwrap_err();
        assert_eq!(e.to_string(), "secret \"s\" not found");
        assert!(matches!(e, TranslateError::EnvSource { .. }));
    }

    #[test]
    fn cluster_sources_are_unsupported() {
        for src in [
            "env:\n- {name: A, valueFrom: {configMapKeyRef: {name: cm, key: k}}}",
            "env:\n- {name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}",
            "envFrom:\n- configMapRef: {name: cm}",
            "envFrom:\n- secretRef: {name: s}",
        ] {
            let f = Fixture::new(&format!("name: app\nimage: x\n{src}"));
            assert!(
                matches!(f.spec(), Err(TranslateError::Unsupported { .. })),
                "{src}"
            );
        }
    }

    #[test]
    fn capability_combos() {
        let caps = |add: &[&str], drop: &[&str]| capabilities("c", &v(add), &v(drop)).unwrap();
        assert_eq!(caps(&[], &[]), v(&DEFAULT_CAPABILITIES));
        let mut with_admin = v(&DEFAULT_CAPABILITIES);
        with_admin.push("CAP_NET_ADMIN".into());
        assert_eq!(caps(&["NET_ADMIN"], &[]), with_admin);
        assert_eq!(caps(&["CAP_NET_ADMIN"], &[]), with_admin);
        assert_eq!(caps(&["net_admin", "NET_ADMIN"], &[]), with_admin);
        assert_eq!(caps(&["CHOWN"], &[]), v(&DEFAULT_CAPABILITIES));
        assert_eq!(caps(&[], &["ALL"]), Vec::<String>::new());
        assert_eq!(caps(&[], &["all"]), Vec::<String>::new());
        assert_eq!(
            caps(&["NET_BIND_SERVICE"], &["ALL"]),
            v(&["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(caps(&["ALL"], &[]), v(&ALL_CAPABILITIES));
        let mut all_but_chown = v(&ALL_CAPABILITIES);
        all_but_chown.retain(|c| c != "CAP_CHOWN");
        assert_eq!(caps(&["ALL"], &["CHOWN"]), all_but_chown);
        assert_eq!(caps(&["ALL"], &["ALL"]), Vec::<String>::new());
        let mut without = v(&DEFAULT_CAPABILITIES);
        without.retain(|c| c != "CAP_NET_RAW" && c != "CAP_KILL");
        assert_eq!(caps(&[], &["NET_RAW", "CAP_KILL"]), without);
        // Drop wins over add of the same capability.
        assert_eq!(caps(&["SYS_TIME"], &["SYS_TIME"]), v(&DEFAULT_CAPABILITIES));
        assert!(matches!(
            capabilities("c", &v(&["NOT_A_CAP"]), &[]),
            Err(TranslateError::Capability { .. })
        ));
    }

    #[test]
    fn security_contexts() {
        let f = Fixture::new("name: app\nimage: x\nsecurityContext: {privileged: true}");
        let s = f.spec().unwrap().security;
        assert!(s.privileged && !s.mask_paths);
        assert_eq!(s.capabilities, v(&ALL_CAPABILITIES));

        let f = Fixture::new(
            "name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, procMount: Unmasked, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}",
        );
        let s = f.spec().unwrap().security;
        assert!(s.no_new_privileges && s.readonly_rootfs && !s.mask_paths && !s.privileged);
        assert_eq!(s.capabilities, v(&["CAP_NET_BIND_SERVICE"]));

        let f = Fixture::new(
            "name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: false, privileged: true}",
        );
        let e = f.spec().unwrap_err().to_string();
        assert!(
            e.contains("cannot set `allowPrivilegeEscalation` to false and `privileged` to true"),
            "{e}"
        );
        let f = Fixture::new(
            "name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: false, capabilities: {add: [SYS_ADMIN]}}",
        );
        assert!(matches!(f.spec(), Err(TranslateError::Security { .. })));
        let f =
            Fixture::new("name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: true}");
        assert!(!f.spec().unwrap().security.no_new_privileges);
    }

    #[test]
    fn users_and_groups() {
        let mut f = Fixture::new("name: app\nimage: x");
        f.pod.spec.as_mut().unwrap().security_context = Some(
            serde_yaml::from_str("{runAsUser: 1000, runAsGroup: 2000, fsGroup: 3000, supplementalGroups: [4000, 5000]}")
                .unwrap(),
        );
        let s = f.spec().unwrap();
        assert_eq!(
            s.user,
            User::Id {
                uid: 1000,
                gid: Some(2000)
            }
        );
        assert_eq!(s.security.supplemental_groups, vec![3000, 4000, 5000]);

        // Container securityContext overrides the pod's.
        let mut f = Fixture::new("name: app\nimage: x\nsecurityContext: {runAsUser: 7}");
        f.pod.spec.as_mut().unwrap().security_context =
            Some(serde_yaml::from_str("{runAsUser: 1000, runAsGroup: 2000}").unwrap());
        assert_eq!(
            f.spec().unwrap().user,
            User::Id {
                uid: 7,
                gid: Some(2000)
            }
        );

        // Image USER forms.
        let user_for = |image_user: &str, sc: &str| {
            let mut f = Fixture::new(&format!("name: app\nimage: x{sc}"));
            f.image.user = image_user.to_string();
            f.spec().map(|s| s.user)
        };
        assert_eq!(user_for("", ""), Ok(User::Id { uid: 0, gid: None }));
        assert_eq!(
            user_for("1000", ""),
            Ok(User::Id {
                uid: 1000,
                gid: None
            })
        );
        assert_eq!(
            user_for("1000:50", ""),
            Ok(User::Id {
                uid: 1000,
                gid: Some(50)
            })
        );
        assert_eq!(user_for("nobody", ""), Ok(User::Name("nobody".into())));
        assert_eq!(
            user_for("app:staff", ""),
            Ok(User::Name("app:staff".into()))
        );
        assert_eq!(
            user_for("1000:50", "\nsecurityContext: {runAsGroup: 9}"),
            Ok(User::Id {
                uid: 1000,
                gid: Some(9)
            })
        );
        assert_eq!(
            user_for("nobody", "\nsecurityContext: {runAsGroup: 9}"),
            Ok(User::Name("nobody:9".into()))
        );
    }

    #[test]
    fn run_as_non_root() {
        let nr = "\nsecurityContext: {runAsNonRoot: true}";
        let check = |image_user: &str, sc: &str| {
            let mut f = Fixture::new(&format!("name: app\nimage: x{sc}"));
            f.image.user = image_user.to_string();
            f.spec().map(|s| s.user)
        };
        assert_eq!(
            check("1000", nr),
            Ok(User::Id {
                uid: 1000,
                gid: None
            })
        );
        let e = check("", nr).unwrap_err().to_string();
        assert!(
            e.contains("container has runAsNonRoot and image will run as root"),
            "{e}"
        );
        let e = check("0:0", nr).unwrap_err().to_string();
        assert!(e.contains("image will run as root"), "{e}");
        let e = check("nobody", nr).unwrap_err().to_string();
        assert!(
            e.contains("image has non-numeric user (nobody), cannot verify user is non-root"),
            "{e}"
        );
        assert!(
            e.contains("web_ns(uid-1)") && e.contains("container: app"),
            "{e}"
        );
        let e = check(
            "1000",
            "\nsecurityContext: {runAsNonRoot: true, runAsUser: 0}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("container's runAsUser breaks non-root policy"),
            "{e}"
        );
        assert_eq!(
            check(
                "nobody",
                "\nsecurityContext: {runAsNonRoot: true, runAsUser: 5}"
            ),
            Ok(User::Id { uid: 5, gid: None })
        );
        // Pod-level runAsNonRoot applies too; the container can turn it off.
        let mut f = Fixture::new("name: app\nimage: x");
        f.pod.spec.as_mut().unwrap().security_context =
            Some(serde_yaml::from_str("{runAsNonRoot: true}").unwrap());
        assert!(matches!(f.spec(), Err(TranslateError::NonRoot { .. })));
        let mut f = Fixture::new("name: app\nimage: x\nsecurityContext: {runAsNonRoot: false}");
        f.pod.spec.as_mut().unwrap().security_context =
            Some(serde_yaml::from_str("{runAsNonRoot: true}").unwrap());
        assert!(f.spec().is_ok());
    }

    #[test]
    fn stop_signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("sigquit"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("RTMAX"), Some(64));
        assert_eq!(parse_signal("SIGWINCH"), Some(28));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
        let mut f = Fixture::new("name: app\nimage: x");
        f.image.stop_signal = Some("SIGQUIT".into());
        assert_eq!(f.spec().unwrap().stop_signal, 3);
        f.image.stop_signal = Some("SIGBOGUS".into());
        assert!(matches!(f.spec(), Err(TranslateError::StopSignal { .. })));
        // The container's lifecycle.stopSignal wins over the image's.
        let mut f = Fixture::new("name: app\nimage: x\nlifecycle: {stopSignal: SIGUSR1}");
        f.image.stop_signal = Some("SIGQUIT".into());
        assert_eq!(f.spec().unwrap().stop_signal, 10);
    }

    #[test]
    fn container_hash_tracks_spec_not_resources() {
        let a = Fixture::new("name: app\nimage: x:1");
        let b = Fixture::new("name: app\nimage: x:2");
        let c = Fixture::new("name: app\nimage: x:1\nresources: {limits: {cpu: 1}}");
        let h = |f: &Fixture| f.spec().unwrap().labels[LABEL_CONTAINER_HASH].clone();
        assert_ne!(h(&a), h(&b));
        assert_eq!(h(&a), h(&c));
        assert_eq!(h(&a), h(&Fixture::new("name: app\nimage: x:1")));
    }

    // --- mounts and volumes ----------------------------------------------------------------------

    fn volume_pod(container: &str) -> Pod {
        pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: ns, uid: u}}\nspec:\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 64Mi}}}}\n  - {{name: host, hostPath: {{path: /var/log, type: Directory}}}}\n  containers:\n  - {}\n",
            container.replace('\n', "\n    ")
        ))
    }

    fn requests(p: &Pod) -> Result<Vec<MountRequest>, TranslateError> {
        mount_requests(p, &p.spec.as_ref().unwrap().containers[0], None)
    }

    #[test]
    fn mount_requests_basic() {
        let p = volume_pod(
            "name: app\nimage: x\nenv: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\nvolumeMounts:\n- {name: data, mountPath: /data}\n- {name: host, mountPath: /logs, readOnly: true, mountPropagation: HostToContainer}\n- {name: data, mountPath: /sub, subPath: a/b}\n- {name: data, mountPath: /expr, subPathExpr: logs/$(POD)}",
        );
        assert_eq!(
            requests(&p).unwrap(),
            vec![
                MountRequest {
                    volume: "data".into(),
                    sub_path: None,
                    destination: "/data".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
                MountRequest {
                    volume: "host".into(),
                    sub_path: None,
                    destination: "/logs".into(),
                    readonly: true,
                    propagation: Propagation::HostToContainer,
                },
                MountRequest {
                    volume: "data".into(),
                    sub_path: Some("a/b".into()),
                    destination: "/sub".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
                MountRequest {
                    volume: "data".into(),
                    sub_path: Some("logs/web".into()),
                    destination: "/expr".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
            ]
        );
    }

    #[test]
    fn mount_request_errors() {
        let err = |c: &str| {
            requests(&volume_pod(&format!("name: app\nimage: x\n{c}")))
                .unwrap_err()
                .to_string()
        };
        assert!(err("volumeMounts: [{name: nope, mountPath: /x}]").contains("not found"));
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, subPath: /abs}]").contains("absolute")
        );
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, subPath: a/../../b}]").contains("..")
        );
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, subPathExpr: $(NOPE)/x}]")
                .contains("missing value for NOPE")
        );
        assert!(err(
            "volumeMounts: [{name: data, mountPath: /x, mountPropagation: Bidirectional}]"
        )
        .contains("privileged"));
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, mountPropagation: Sideways}]")
                .contains("invalid MountPropagation")
        );
        let ok = requests(&volume_pod(
            "name: app\nimage: x\nsecurityContext: {privileged: true}\nvolumeMounts: [{name: host, mountPath: /x, mountPropagation: Bidirectional}]",
        ))
        .unwrap();
        assert_eq!(ok[0].propagation, Propagation::Bidirectional);
    }

    #[test]
    fn volume_kinds() {
        let p = volume_pod("name: app\nimage: x");
        assert_eq!(
            volume_sources(&p, false).unwrap(),
            vec![
                (
                    "data".to_string(),
                    VolumeKind::EmptyDir {
                        memory: false,
                        size_limit: None
                    }
                ),
                (
                    "mem".to_string(),
                    VolumeKind::EmptyDir {
                        memory: true,
                        size_limit: Some(64 << 20)
                    }
                ),
                (
                    "host".to_string(),
                    VolumeKind::HostPath {
                        path: "/var/log".into(),
                        type_: "Directory".into()
                    }
                ),
            ]
        );
        let with = |src: &str| {
            pod(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: w}}\nspec:\n  volumes: [{{name: v, {src}}}]\n  containers: [{{name: a, image: x}}]\n"
            ))
        };
        for (src, kind) in [
            ("configMap: {name: cm}", "configMap"),
            ("secret: {secretName: s}", "secret"),
            (
                "projected: {sources: [{serviceAccountToken: {path: t}}]}",
                "projected",
            ),
        ] {
            let e = volume_sources(&with(src), false).unwrap_err();
            assert_eq!(
                e,
                TranslateError::UnsupportedVolume {
                    volume: "v".into(),
                    kind: kind.into(),
                    standalone: true,
                }
            );
            assert!(e.to_string().starts_with(&format!(
                "unsupported volume type in standalone mode: {kind}"
            )));
            assert!(volume_sources(&with(src), true).is_ok(), "{src}");
        }
        // downwardAPI needs nothing from the API: fine in standalone mode too.
        for src in [
            "downwardAPI: {items: []}",
            "projected: {sources: [{downwardAPI: {items: []}}]}",
        ] {
            assert!(matches!(
                volume_sources(&with(src), false).unwrap()[0].1,
                VolumeKind::ApiData(_)
            ));
        }
        assert_eq!(
            volume_sources(&with("persistentVolumeClaim: {claimName: c}"), true).unwrap()[0].1,
            VolumeKind::Claim { claim: "c".into() }
        );
        assert!(
            volume_sources(&with("persistentVolumeClaim: {claimName: c}"), false)
                .unwrap_err()
                .to_string()
                .starts_with("unsupported volume type in standalone mode: persistentVolumeClaim")
        );
        assert_eq!(
            volume_sources(&with("csi: {driver: d}"), true).unwrap()[0].1,
            VolumeKind::CsiInline { driver: "d".into() }
        );
        let e = volume_sources(&with("csi: {driver: d}"), false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unsupported volume type in standalone mode: csi"),
            "{e}"
        );
        // A generic ephemeral volume is the claim `<pod>-<volume>`.
        let eph = "ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}}}";
        let mut p = with(eph);
        p.metadata.name = Some("web".into());
        assert_eq!(
            volume_sources(&p, true).unwrap()[0].1,
            VolumeKind::EphemeralClaim {
                claim: "web-v".into()
            }
        );
        assert!(volume_sources(&p, false)
            .unwrap_err()
            .to_string()
            .starts_with("unsupported volume type in standalone mode: ephemeral"));
    }

    #[test]
    fn block_devices_from_device_files() {
        let d = block_device(std::path::Path::new("/dev/null"), "/dev/xvda", false).unwrap();
        assert_eq!(
            (d.kind.as_str(), d.major, d.minor, d.access.as_str()),
            ("c", 1, 3, "rwm")
        );
        assert_eq!(d.container_path, "/dev/xvda");
        let ro = block_device(std::path::Path::new("/dev/null"), "/dev/x", true).unwrap();
        assert_eq!(ro.access, "rm");
        let e = block_device(std::path::Path::new("/"), "/dev/x", false).unwrap_err();
        assert!(e.contains("is not a device"), "{e}");
    }

    #[test]
    fn ephemeral_containers_become_containers_with_their_target() {
        let e: EphemeralContainer = serde_yaml::from_str(
            "name: debugger\nimage: busybox\nstdin: true\ntty: true\ntargetContainerName: app\nvolumeMounts: [{name: data, mountPath: /data}]\n",
        )
        .expect("parse");
        let (c, target) = ephemeral_container(&e).expect("convert");
        assert_eq!(c.name, "debugger");
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.stdin, Some(true));
        assert_eq!(c.tty, Some(true));
        assert_eq!(c.volume_mounts.map(|v| v.len()), Some(1));
        assert_eq!(target.as_deref(), Some("app"));
        let e = EphemeralContainer {
            name: "d".into(),
            ..Default::default()
        };
        assert_eq!(ephemeral_container(&e).expect("convert").1, None);
    }
}
