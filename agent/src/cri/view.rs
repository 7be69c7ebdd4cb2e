//! Pure: bosun's own state (the pod status files, the runtime's container records, the image
//! store's list) as CRI v1 messages, the CRI list filters, and which container or sandbox an
//! id a user typed names. A sandbox's id is its pod's uid; a container's is the hex SHA-256 of
//! the runtime's id (`<pod uid>_<name>_<attempt>`, [`cri_container_id`]), as `bosun pods` shows
//! them. Like containerd, a unique prefix of either names it; a container's runtime id (what
//! the pod status's `containerID` holds after `bosun://`) names it too.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bosun_runtime::{ContainerState, ContainerStatus as Record};
use k8s_openapi::api::core::v1::Pod;

use super::api;
use crate::pods::status::ID_SCHEME;
use crate::server::stats::Usage;
use crate::translate::{
    cri_container_id, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

/// What an id a client sent names among the candidates.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    One(T),
    None,
    /// A prefix of more than one.
    Ambiguous,
}

/// The candidate `id` names: one whose id or other name (`aliases`) is `id` exactly, else the
/// only one whose id starts with it (containerd's truncated index). An empty id names none.
pub fn lookup<T>(id: &str, candidates: Vec<(String, Vec<String>, T)>) -> Lookup<T> {
    let id = id.trim();
    if id.is_empty() {
        return Lookup::None;
    }
    let mut prefixed = Vec::new();
    for (own, aliases, item) in candidates {
        if own == id || aliases.iter().any(|a| a == id) {
            return Lookup::One(item);
        }
        if own.starts_with(id) {
            prefixed.push(item);
        }
    }
    match prefixed.len() {
        0 => Lookup::None,
        1 => Lookup::One(prefixed.remove(0)),
        _ => Lookup::Ambiguous,
    }
}

/// The container candidates of [`lookup`]: each record by its CRI id, with its runtime id and
/// `bosun://<runtime id>` as aliases.
pub fn container_candidates(records: Vec<Record>) -> Vec<(String, Vec<String>, Record)> {
    records
        .into_iter()
        .map(|r| {
            let aliases = vec![r.id.clone(), format!("{ID_SCHEME}{}", r.id)];
            (cri_container_id(&r.id), aliases, r)
        })
        .collect()
}

/// Nanoseconds since the epoch (CRI's timestamps); 0 for times before it.
pub fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rfc3339_nanos(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.map(|t| i64::try_from(t.0.as_nanosecond()).unwrap_or(0))
        .unwrap_or(0)
}

/// The labels a pod's sandbox carries: the pod's own and the kubelet's `io.kubernetes.pod.*`.
fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    let mut labels: HashMap<String, String> =
        m.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(LABEL_POD_NAME.into(), m.name.clone().unwrap_or_default());
    labels.insert(
        LABEL_POD_NAMESPACE.into(),
        m.namespace.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_POD_UID.into(), m.uid.clone().unwrap_or_default());
    labels
}

fn sandbox_metadata(pod: &Pod) -> api::PodSandboxMetadata {
    let m = &pod.metadata;
    api::PodSandboxMetadata {
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        namespace: m.namespace.clone().unwrap_or_default(),
        attempt: 0,
    }
}

fn sandbox_state(ready: bool) -> i32 {
    if ready {
        api::PodSandboxState::SandboxReady as i32
    } else {
        api::PodSandboxState::SandboxNotready as i32
    }
}

/// A pod as a sandbox; `ready` says whether its sandbox (pinned namespaces) exists.
pub fn sandbox(pod: &Pod, ready: bool) -> api::PodSandbox {
    api::PodSandbox {
        id: pod.metadata.uid.clone().unwrap_or_default(),
        metadata: Some(sandbox_metadata(pod)),
        state: sandbox_state(ready),
        created_at: rfc3339_nanos(pod.status.as_ref().and_then(|s| s.start_time.as_ref())),
        labels: sandbox_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        runtime_handler: String::new(),
    }
}

/// A pod's sandbox status: its IPs and the namespaces it shares with the node.
pub fn sandbox_status(pod: &Pod, ready: bool) -> api::PodSandboxStatus {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .or_else(|| ips.first().cloned())
        .unwrap_or_default();
    let mode = |host: Option<bool>| {
        if host.unwrap_or(false) {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        }
    };
    let pid = if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        api::NamespaceMode::Node as i32
    } else if spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
    {
        api::NamespaceMode::Pod as i32
    } else {
        api::NamespaceMode::Container as i32
    };
    let s = sandbox(pod, ready);
    api::PodSandboxStatus {
        id: s.id,
        metadata: s.metadata,
        state: s.state,
        created_at: s.created_at,
        network: Some(api::PodSandboxNetworkStatus {
            additional_ips: ips
                .iter()
                .filter(|i| **i != ip)
                .map(|i| api::PodIp { ip: i.clone() })
                .collect(),
            ip,
        }),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace {
                options: Some(api::NamespaceOption {
                    network: mode(spec.and_then(|s| s.host_network)),
                    pid,
                    ipc: mode(spec.and_then(|s| s.host_ipc)),
                    ..Default::default()
                }),
            }),
        }),
        labels: s.labels,
        annotations: s.annotations,
        runtime_handler: s.runtime_handler,
    }
}

fn attempt_of(r: &Record) -> u32 {
    r.id.rsplit('_')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn container_state(state: &ContainerState) -> i32 {
    (match state {
        ContainerState::Created => api::ContainerState::ContainerCreated,
        ContainerState::Running { .. } => api::ContainerState::ContainerRunning,
        ContainerState::Exited(_) => api::ContainerState::ContainerExited,
        ContainerState::Unknown { .. } => api::ContainerState::ContainerUnknown,
    }) as i32
}

fn started_at(state: &ContainerState) -> i64 {
    match state {
        ContainerState::Running { started_at, .. } => nanos(*started_at),
        ContainerState::Exited(e) => e.started_at.map(nanos).unwrap_or(0),
        _ => 0,
    }
}

/// A runtime record as a CRI container (`created` is when its folder was made).
pub fn container(r: &Record, created: SystemTime) -> api::Container {
    api::Container {
        id: cri_container_id(&r.id),
        pod_sandbox_id: r.labels.get(LABEL_POD_UID).cloned().unwrap_or_default(),
        metadata: Some(api::ContainerMetadata {
            name: r
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default(),
            attempt: attempt_of(r),
        }),
        image: Some(api::ImageSpec {
            image: r.image.clone(),
            user_specified_image: r.image.clone(),
            ..Default::default()
        }),
        image_ref: r.image_id.clone(),
        image_id: r.image_id.clone(),
        state: container_state(&r.state),
        created_at: nanos(created),
        labels: r.labels.clone().into_iter().collect(),
        annotations: HashMap::new(),
    }
}

/// A runtime record as a CRI container status, with the kubelet's reasons for an exit.
pub fn container_status(r: &Record, created: SystemTime) -> api::ContainerStatus {
    let c = container(r, created);
    let (exit_code, finished_at, reason, message) = match &r.state {
        ContainerState::Exited(e) => (
            e.code,
            nanos(e.finished_at),
            crate::pods::status::exit_reason(e).to_string(),
            e.start_error.clone().unwrap_or_default(),
        ),
        ContainerState::Unknown { reason } => (0, 0, "Unknown".into(), reason.clone()),
        _ => (0, 0, String::new(), String::new()),
    };
    api::ContainerStatus {
        id: c.id,
        metadata: c.metadata,
        state: c.state,
        created_at: c.created_at,
        started_at: started_at(&r.state),
        finished_at,
        exit_code,
        image: c.image,
        image_ref: c.image_ref,
        image_id: c.image_id,
        reason,
        message,
        labels: c.labels,
        annotations: c.annotations,
        log_path: r.log_path.display().to_string(),
        resources: Some(resources(&r.resources)),
        ..Default::default()
    }
}

/// The cgroup settings a container runs with (in-place resizes included), as containerd
/// reports them; 0 where none is set.
fn resources(r: &bosun_runtime::Resources) -> api::ContainerResources {
    let int = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
    api::ContainerResources {
        linux: Some(api::LinuxContainerResources {
            cpu_period: int(r.cpu_period),
            cpu_quota: r.cpu_quota.unwrap_or(0),
            cpu_shares: int(r.cpu_shares),
            memory_limit_in_bytes: r.memory_limit.unwrap_or(0),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Whether every `k=v` of a CRI label selector is in `labels`.
pub fn selected<'a>(
    selector: &HashMap<String, String>,
    mut labels: impl FnMut(&str) -> Option<&'a str>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels(k).is_some_and(|l| l == v))
}

/// ListPodSandbox's filter on one sandbox.
pub fn sandbox_matches(f: Option<&api::PodSandboxFilter>, s: &api::PodSandbox) -> bool {
    let Some(f) = f else { return true };
    (f.id.is_empty() || s.id.starts_with(&f.id))
        && f.state.as_ref().is_none_or(|v| v.state == s.state)
        && selected(&f.label_selector, |k| s.labels.get(k).map(String::as_str))
}

/// ListContainers' filter on one container.
pub fn container_matches(f: Option<&api::ContainerFilter>, c: &api::Container) -> bool {
    let Some(f) = f else { return true };
    (f.id.is_empty() || c.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || c.pod_sandbox_id.starts_with(&f.pod_sandbox_id))
        && f.state.as_ref().is_none_or(|v| v.state == c.state)
        && selected(&f.label_selector, |k| c.labels.get(k).map(String::as_str))
}

/// ListContainerStats' filter as ListContainers' (the same fields, any state).
pub fn stats_filter(f: Option<&api::ContainerStatsFilter>) -> Option<api::ContainerFilter> {
    f.map(|f| api::ContainerFilter {
        id: f.id.clone(),
        state: None,
        pod_sandbox_id: f.pod_sandbox_id.clone(),
        label_selector: f.label_selector.clone(),
    })
}

/// ListPodSandboxStats' filter as ListPodSandbox's (the same fields, any state).
pub fn sandbox_stats_filter(
    f: Option<&api::PodSandboxStatsFilter>,
) -> Option<api::PodSandboxFilter> {
    f.map(|f| api::PodSandboxFilter {
        id: f.id.clone(),
        state: None,
        label_selector: f.label_selector.clone(),
    })
}

fn cpu_usage(u: &Usage, at: i64) -> api::CpuUsage {
    api::CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: Some(api::UInt64Value { value: u.cpu_nanos }),
        ..Default::default()
    }
}

fn memory_usage(u: &Usage, at: i64) -> api::MemoryUsage {
    api::MemoryUsage {
        timestamp: at,
        working_set_bytes: Some(api::UInt64Value {
            value: u.working_set,
        }),
        usage_bytes: Some(api::UInt64Value { value: u.usage }),
        ..Default::default()
    }
}

/// A container's stats: its attributes, and the CPU and memory of its cgroup sampled at `at`
/// (`usage`, what `/stats/summary` reports; none for a container that is not running, which
/// crictl then leaves out unless `--all`).
pub fn container_stats(
    c: &api::Container,
    usage: Option<&Usage>,
    at: SystemTime,
) -> api::ContainerStats {
    let at = nanos(at);
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: c.id.clone(),
            metadata: c.metadata.clone(),
            labels: c.labels.clone(),
            annotations: c.annotations.clone(),
        }),
        cpu: usage.map(|u| cpu_usage(u, at)),
        memory: usage.map(|u| memory_usage(u, at)),
        ..Default::default()
    }
}

/// A sandbox's stats: its attributes, the pod cgroup's usage (`usage`, none without a running
/// container to find it by) and its containers' stats.
pub fn sandbox_stats(
    s: &api::PodSandbox,
    usage: Option<&Usage>,
    containers: Vec<api::ContainerStats>,
    at: SystemTime,
) -> api::PodSandboxStats {
    let at = nanos(at);
    api::PodSandboxStats {
        attributes: Some(api::PodSandboxAttributes {
            id: s.id.clone(),
            metadata: s.metadata.clone(),
            labels: s.labels.clone(),
            annotations: s.annotations.clone(),
        }),
        linux: Some(api::LinuxPodSandboxStats {
            cpu: usage.map(|u| cpu_usage(u, at)),
            memory: usage.map(|u| memory_usage(u, at)),
            containers,
            ..Default::default()
        }),
        windows: None,
    }
}

/// An image of the store as a CRI image: tags and `name@digest` from its references.
pub fn image(i: &bosun_runtime::image::ImageSummary) -> api::Image {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for r in &i.references {
        match r.split_once('@') {
            Some(_) => digests.push(r.clone()),
            None => {
                tags.push(r.clone());
                if !i.digest.is_empty() {
                    // name@digest of the tagged reference's repository
                    let repo = match r.rfind(':') {
                        Some(colon) if !r[colon..].contains('/') => &r[..colon],
                        _ => r.as_str(),
                    };
                    digests.push(format!("{repo}@{}", i.digest));
                }
            }
        }
    }
    digests.sort();
    digests.dedup();
    api::Image {
        id: i.id.clone(),
        repo_tags: tags,
        repo_digests: digests,
        size: i.size,
        ..Default::default()
    }
}

/// Whether `reference` (as a user typed it, normalized, or an id or id prefix of at least 12
/// hex digits) names image `i`.
pub fn image_named(
    i: &bosun_runtime::image::ImageSummary,
    reference: &str,
    normalized: &str,
) -> bool {
    let hex = i.id.trim_start_matches("sha256:");
    let asked = reference.trim_start_matches("sha256:");
    i.id == reference
        || (asked.len() >= 12 && hex.starts_with(asked))
        || i.references
            .iter()
            .any(|r| r == normalized || r == reference)
}

/// The containers of one pod, newest attempt last (for `PodSandboxStatus`'s verbose list).
pub fn by_pod(records: &[Record]) -> BTreeMap<String, Vec<&Record>> {
    let mut out: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        if let Some(uid) = r.labels.get(LABEL_POD_UID) {
            out.entry(uid.clone()).or_default().push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_runtime::ExitInfo;
    use std::path::PathBuf;
    use std::time::Duration;

    fn pod(host_network: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-node", "namespace": "kube-system", "uid": "u1",
                         "labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"hostNetwork": host_network, "containers": [{"name": "c"}]},
            "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                       "startTime": "2026-01-02T03:04:05Z"}
        }))
        .expect("pod")
    }

    fn record(id: &str, state: ContainerState) -> Record {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_POD_UID.to_string(), "u1".to_string());
        labels.insert(LABEL_CONTAINER_NAME.to_string(), "c".to_string());
        Record {
            id: id.into(),
            labels,
            state,
            image: "docker.io/library/busybox:latest".into(),
            image_id: "sha256:abc".into(),
            log_path: PathBuf::from("/var/log/pods/x/c/0.log"),
            resources: Default::default(),
        }
    }

    #[test]
    fn pods_as_sandboxes() {
        let s = sandbox(&pod(false), true);
        assert_eq!(s.id, "u1");
        assert_eq!(s.state, api::PodSandboxState::SandboxReady as i32);
        let md = s.metadata.clone().expect("metadata");
        assert_eq!(
            (md.name.as_str(), md.namespace.as_str(), md.uid.as_str()),
            ("web-node", "kube-system", "u1")
        );
        assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            s.labels.get(LABEL_POD_NAMESPACE).map(String::as_str),
            Some("kube-system")
        );
        assert_eq!(s.created_at, 1_767_323_045_000_000_000);
        assert_eq!(
            sandbox(&pod(false), false).state,
            api::PodSandboxState::SandboxNotready as i32
        );
        let st = sandbox_status(&pod(true), true);
        let net = st.network.expect("network");
        assert_eq!(net.ip, "10.0.0.5");
        assert_eq!(
            net.additional_ips,
            vec![api::PodIp {
                ip: "fd00::5".into()
            }]
        );
        let ns = st.linux.and_then(|l| l.namespaces).and_then(|n| n.options);
        let ns = ns.expect("namespaces");
        assert_eq!(ns.network, api::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, api::NamespaceMode::Pod as i32);
    }

    #[test]
    fn records_as_containers() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let running = record(
            "u1_c_2",
            ContainerState::Running {
                pid: 1,
                started_at: t0 + Duration::from_secs(1),
            },
        );
        let c = container(&running, t0);
        assert_eq!(c.id, cri_container_id("u1_c_2"));
        assert_eq!(c.id.len(), 64);
        assert_eq!(c.pod_sandbox_id, "u1");
        assert_eq!(
            c.metadata.as_ref().map(|m| (m.name.as_str(), m.attempt)),
            Some(("c", 2))
        );
        assert_eq!(c.state, api::ContainerState::ContainerRunning as i32);
        assert_eq!(c.created_at, 100_000_000_000);
        let st = container_status(&running, t0);
        assert_eq!(st.started_at, 101_000_000_000);
        let linux = st.resources.and_then(|r| r.linux).expect("resources");
        assert_eq!(
            (
                linux.cpu_shares,
                linux.cpu_quota,
                linux.memory_limit_in_bytes
            ),
            (0, 0, 0)
        );
        let mut limited = running.clone();
        limited.resources = bosun_runtime::Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: None,
        };
        let linux = container_status(&limited, t0)
            .resources
            .and_then(|r| r.linux)
            .expect("resources");
        assert_eq!(
            (
                linux.cpu_shares,
                linux.cpu_quota,
                linux.cpu_period,
                linux.memory_limit_in_bytes
            ),
            (512, 50_000, 100_000, 64 << 20)
        );
        assert_eq!(st.log_path, "/var/log/pods/x/c/0.log");
        let exited = record(
            "u1_c_0",
            ContainerState::Exited(ExitInfo {
                code: 137,
                signal: Some(9),
                oom_killed: true,
                started_at: Some(t0),
                finished_at: t0 + Duration::from_secs(5),
                start_error: None,
            }),
        );
        let st = container_status(&exited, t0);
        assert_eq!(st.state, api::ContainerState::ContainerExited as i32);
        assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"));
        assert_eq!(st.finished_at, 105_000_000_000);
        let unknown = record(
            "u1_c_1",
            ContainerState::Unknown {
                reason: "keeper gone".into(),
            },
        );
        let st = container_status(&unknown, t0);
        assert_eq!(st.state, api::ContainerState::ContainerUnknown as i32);
        assert_eq!(st.message, "keeper gone");
    }

    #[test]
    fn filters() {
        let s = sandbox(&pod(false), true);
        let f = |id: &str, state: Option<i32>, sel: &[(&str, &str)]| api::PodSandboxFilter {
            id: id.into(),
            state: state.map(|state| api::PodSandboxStateValue { state }),
            label_selector: sel
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let cases = [
            (f("", None, &[]), true),
            (f("u1", None, &[]), true),
            (f("u2", None, &[]), false),
            (
                f("", Some(api::PodSandboxState::SandboxReady as i32), &[]),
                true,
            ),
            (
                f("", Some(api::PodSandboxState::SandboxNotready as i32), &[]),
                false,
            ),
            (f("", None, &[("app", "web")]), true),
            (f("", None, &[("app", "db")]), false),
            (f("", None, &[("app", "web"), ("tier", "x")]), false),
        ];
        for (filter, want) in cases {
            assert_eq!(sandbox_matches(Some(&filter), &s), want, "{filter:?}");
        }
        let c = container(
            &record("u1_c_0", ContainerState::Created),
            SystemTime::UNIX_EPOCH,
        );
        let cf = |pod: &str, state: Option<i32>| api::ContainerFilter {
            pod_sandbox_id: pod.into(),
            state: state.map(|state| api::ContainerStateValue { state }),
            ..Default::default()
        };
        assert!(container_matches(Some(&cf("u1", None)), &c));
        assert!(!container_matches(Some(&cf("u2", None)), &c));
        // crictl passes the prefixes it prints.
        let by_id = |id: &str| api::ContainerFilter {
            id: id.into(),
            ..Default::default()
        };
        assert!(container_matches(Some(&by_id(&c.id[..13])), &c));
        assert!(!container_matches(Some(&by_id("u1_c_0")), &c));
        assert!(container_matches(
            Some(&cf("", Some(api::ContainerState::ContainerCreated as i32))),
            &c
        ));
        assert!(!container_matches(
            Some(&cf("", Some(api::ContainerState::ContainerRunning as i32))),
            &c
        ));
    }

    #[test]
    fn ids_by_prefix_and_alias() {
        // Two attempts of one container: their runtime ids share every character but the
        // last, their CRI ids differ from the first.
        let records = vec![
            record("u1_c_0", ContainerState::Created),
            record("u1_c_1", ContainerState::Created),
        ];
        let ids: Vec<String> = records.iter().map(|r| cri_container_id(&r.id)).collect();
        assert_ne!(ids[0][..13], ids[1][..13]);
        let found = |asked: &str| match lookup(asked, container_candidates(records.clone())) {
            Lookup::One(r) => Some(r.id),
            Lookup::None => None,
            Lookup::Ambiguous => Some("ambiguous".into()),
        };
        let common = ids[0]
            .chars()
            .zip(ids[1].chars())
            .take_while(|(a, b)| a == b)
            .count();
        let cases = [
            (ids[0].clone(), Some("u1_c_0")),
            (ids[1][..13].to_string(), Some("u1_c_1")),
            (ids[1][..1 + common].to_string(), Some("u1_c_1")),
            ("u1_c_1".to_string(), Some("u1_c_1")),
            ("bosun://u1_c_0".to_string(), Some("u1_c_0")),
            // The runtime id's own prefixes are not ids.
            ("u1_c".to_string(), None),
            (String::new(), None),
            ("  ".to_string(), None),
            ("zz".to_string(), None),
        ];
        for (asked, want) in cases {
            assert_eq!(found(&asked).as_deref(), want, "{asked:?}");
        }
        // Pods: by uid or its prefix.
        let pods = |uids: &[&str]| -> Vec<(String, Vec<String>, String)> {
            uids.iter()
                .map(|u| (u.to_string(), Vec::new(), u.to_string()))
                .collect()
        };
        assert_eq!(
            lookup("abc", pods(&["abcd-1", "ef-2"])),
            Lookup::One("abcd-1".to_string())
        );
        assert_eq!(lookup("ab", pods(&["abcd-1", "abce-2"])), Lookup::Ambiguous);
        assert_eq!(
            lookup("abcd-1", pods(&["abcd-1", "abcd-10"])),
            Lookup::One("abcd-1".into())
        );
    }

    #[test]
    fn images() {
        let i = bosun_runtime::image::ImageSummary {
            id: "sha256:0123456789abcdef".into(),
            digest: "sha256:feed".into(),
            references: vec![
                "127.0.0.1:5000/app:v1".into(),
                "registry.k8s.io/pause@sha256:feed".into(),
            ],
            size: 42,
            last_used: SystemTime::UNIX_EPOCH,
        };
        let c = image(&i);
        assert_eq!(c.repo_tags, vec!["127.0.0.1:5000/app:v1".to_string()]);
        assert_eq!(
            c.repo_digests,
            vec![
                "127.0.0.1:5000/app@sha256:feed".to_string(),
                "registry.k8s.io/pause@sha256:feed".to_string()
            ]
        );
        assert_eq!(c.size, 42);
        assert!(image_named(&i, "0123456789ab", ""));
        assert!(!image_named(&i, "0123", ""));
        assert!(image_named(&i, "sha256:0123456789abcdef", ""));
        assert!(image_named(&i, "app:v1", "127.0.0.1:5000/app:v1"));
        assert!(!image_named(&i, "app:v2", "127.0.0.1:5000/app:v2"));
    }

    #[test]
    fn stats() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let running = container(
            &record(
                "u1_c_1",
                ContainerState::Running {
                    pid: 1,
                    started_at: at,
                },
            ),
            at,
        );
        let u = Usage {
            cpu_nanos: 5,
            working_set: 6,
            usage: 8,
        };
        let st = container_stats(&running, Some(&u), at);
        let attrs = st.attributes.clone().expect("attributes");
        assert_eq!(attrs.id, running.id);
        assert_eq!(
            attrs.metadata.map(|m| (m.name, m.attempt)),
            Some(("c".into(), 1))
        );
        let cpu = st.cpu.expect("cpu");
        assert_eq!(cpu.timestamp, 7_000_000_000);
        assert_eq!(cpu.usage_core_nano_seconds.map(|v| v.value), Some(5));
        let mem = st.memory.expect("memory");
        assert_eq!(
            (
                mem.working_set_bytes.map(|v| v.value),
                mem.usage_bytes.map(|v| v.value)
            ),
            (Some(6), Some(8))
        );
        // Not running: attributes, no figures (crictl hides it unless --all).
        let exited = container_stats(&running, None, at);
        assert!(exited.cpu.is_none() && exited.memory.is_none() && exited.attributes.is_some());

        let sb = sandbox(&pod(false), true);
        let ps = sandbox_stats(&sb, Some(&u), vec![st], at);
        assert_eq!(ps.attributes.as_ref().map(|a| a.id.as_str()), Some("u1"));
        let linux = ps.linux.expect("linux");
        assert_eq!(linux.containers.len(), 1);
        assert_eq!(
            linux
                .memory
                .and_then(|m| m.working_set_bytes)
                .map(|v| v.value),
            Some(6)
        );

        // The stats filters select as the list filters do: by id prefix, pod prefix, labels.
        let sel = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            (None, true),
            (Some(api::ContainerStatsFilter::default()), true),
            (
                Some(api::ContainerStatsFilter {
                    id: running.id[..13].into(),
                    ..Default::default()
                }),
                true,
            ),
            (
                Some(api::ContainerStatsFilter {
                    id: "ffff".into(),
                    ..Default::default()
                }),
                running.id.starts_with("ffff"),
            ),
            (
                Some(api::ContainerStatsFilter {
                    pod_sandbox_id: "u".into(),
                    ..Default::default()
                }),
                true,
            ),
            (
                Some(api::ContainerStatsFilter {
                    pod_sandbox_id: "v".into(),
                    ..Default::default()
                }),
                false,
            ),
            (
                Some(api::ContainerStatsFilter {
                    label_selector: sel(&[(LABEL_CONTAINER_NAME, "c")]),
                    ..Default::default()
                }),
                true,
            ),
            (
                Some(api::ContainerStatsFilter {
                    label_selector: sel(&[(LABEL_CONTAINER_NAME, "d")]),
                    ..Default::default()
                }),
                false,
            ),
        ];
        for (f, want) in cases {
            assert_eq!(
                container_matches(stats_filter(f.as_ref()).as_ref(), &running),
                want,
                "{f:?}"
            );
        }
        let sf = |id: &str, pairs: &[(&str, &str)]| api::PodSandboxStatsFilter {
            id: id.into(),
            label_selector: sel(pairs),
        };
        assert!(sandbox_matches(
            sandbox_stats_filter(Some(&sf("u", &[("app", "web")]))).as_ref(),
            &sb
        ));
        assert!(!sandbox_matches(
            sandbox_stats_filter(Some(&sf("", &[("app", "db")]))).as_ref(),
            &sb
        ));
        assert!(!sandbox_matches(
            sandbox_stats_filter(Some(&sf("x", &[]))).as_ref(),
            &sb
        ));
        // A not-ready sandbox still has stats.
        let gone = sandbox(&pod(false), false);
        assert!(sandbox_matches(
            sandbox_stats_filter(Some(&sf("", &[]))).as_ref(),
            &gone
        ));
    }
}
