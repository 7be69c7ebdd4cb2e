//! Resource usage: `/metrics/resource` (what metrics-server scrapes for `kubectl top` and the
//! HorizontalPodAutoscaler) and `/stats/summary` (CPU and memory of the node, pods and
//! containers). Container figures come from the cgroup of each running container's init
//! process (`/proc/<pid>/cgroup`; cgroup v1 `cpuacct`/`memory` or the v2 unified hierarchy),
//! pod figures from its parent (the pod cgroup), node figures from `/proc/stat` and
//! `/proc/meminfo`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bosun_runtime::ContainerState;

use crate::metrics::VolumeSample;
use crate::pods::Ctx;
use crate::translate::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

/// CPU and memory of one cgroup (or the node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory usage minus inactive file pages (the kubelet's working set).
    pub working_set: u64,
    pub usage: u64,
}

/// Where a process's cgroups are: (cpu accounting dir, memory dir).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupDirs {
    pub cpu: PathBuf,
    pub memory: PathBuf,
    pub v2: bool,
}

/// Finds the cgroup folders of a process from the text of `/proc/<pid>/cgroup`.
pub fn cgroup_dirs(proc_cgroup: &str, root: &Path) -> Option<CgroupDirs> {
    let mut cpu = None;
    let mut memory = None;
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            unified = Some(root.join(rel));
            continue;
        }
        let list: Vec<&str> = controllers.split(',').collect();
        // The hierarchy is mounted under its controller list ("cpu,cpuacct"), usually with a
        // link per controller; either will do.
        let mount = |name: &str| {
            let joint = root.join(controllers);
            if joint.exists() || !root.join(name).exists() {
                joint
            } else {
                root.join(name)
            }
        };
        if list.contains(&"cpuacct") {
            cpu = Some(mount("cpuacct").join(rel));
        }
        if list.contains(&"memory") {
            memory = Some(mount("memory").join(rel));
        }
    }
    match (cpu, memory, unified) {
        (Some(cpu), Some(memory), _) => Some(CgroupDirs {
            cpu,
            memory,
            v2: false,
        }),
        (_, _, Some(u)) => {
            // A pure cgroup v2 host (the unified path of a hybrid host has no cpu/memory).
            let u = if root.join("cgroup.controllers").exists() {
                u
            } else {
                root.join("unified").join(u.strip_prefix(root).ok()?)
            };
            Some(CgroupDirs {
                cpu: u.clone(),
                memory: u,
                v2: true,
            })
        }
        _ => None,
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The usage of the cgroup at `dirs`.
pub fn usage(dirs: &CgroupDirs) -> Option<Usage> {
    let (cpu_nanos, usage, inactive) = if dirs.v2 {
        (
            stat_field(&dirs.cpu.join("cpu.stat"), "usage_usec")? * 1000,
            read_u64(&dirs.memory.join("memory.current"))?,
            stat_field(&dirs.memory.join("memory.stat"), "inactive_file").unwrap_or(0),
        )
    } else {
        (
            read_u64(&dirs.cpu.join("cpuacct.usage"))?,
            read_u64(&dirs.memory.join("memory.usage_in_bytes"))?,
            stat_field(&dirs.memory.join("memory.stat"), "total_inactive_file").unwrap_or(0),
        )
    };
    Some(Usage {
        cpu_nanos,
        working_set: usage.saturating_sub(inactive),
        usage,
    })
}

/// The node's usage from `/proc/stat` (jiffies of every busy state) and `/proc/meminfo`.
pub fn node_usage(proc_stat: &str, meminfo: &str) -> Usage {
    // USER_HZ is 100 on every Linux architecture Kubernetes runs on.
    let busy_jiffies: u64 = proc_stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system (idle iowait skipped) irq softirq steal
                .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kib("MemTotal:");
    let used = total.saturating_sub(kib("MemAvailable:"));
    Usage {
        cpu_nanos: busy_jiffies * 10_000_000,
        working_set: used,
        usage: used,
    }
}

/// One running container's figures.
#[derive(Clone, Debug)]
pub struct ContainerSample {
    /// The runtime's id of the container.
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub started: SystemTime,
    pub usage: Usage,
    /// The pod cgroup's usage (the parent of the container's).
    pub pod_usage: Option<Usage>,
}

/// Samples every running container of the node.
pub fn sample(ctx: &Ctx) -> Vec<ContainerSample> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = Vec::new();
    for c in ctx.runtime.list() {
        let ContainerState::Running { pid, started_at } = c.state else {
            continue;
        };
        let label = |k: &str| c.labels.get(k).cloned();
        let (Some(namespace), Some(pod), Some(pod_uid), Some(container)) = (
            label(LABEL_POD_NAMESPACE),
            label(LABEL_POD_NAME),
            label(LABEL_POD_UID),
            label(LABEL_CONTAINER_NAME),
        ) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let Some(dirs) = cgroup_dirs(&text, root) else {
            continue;
        };
        let Some(u) = usage(&dirs) else { continue };
        let parent = |p: &Path| p.parent().map(Path::to_path_buf);
        let pod_usage = match (parent(&dirs.cpu), parent(&dirs.memory)) {
            (Some(cpu), Some(memory)) => usage(&CgroupDirs {
                cpu,
                memory,
                v2: dirs.v2,
            }),
            _ => None,
        };
        out.push(ContainerSample {
            id: c.id.clone(),
            namespace,
            pod,
            pod_uid,
            container,
            started: started_at,
            usage: u,
            pod_usage,
        });
    }
    out
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn secs_f(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics/resource` in the Prometheus text format, samples stamped with `now`.
pub fn resource_metrics(node: Usage, samples: &[ContainerSample], now: SystemTime) -> String {
    let ts = millis(now);
    let mut s = String::new();
    let mut family = |name: &str, kind: &str, help: &str, lines: Vec<String>| {
        let _ = writeln!(s, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
    };
    let cl = |c: &ContainerSample| {
        format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            esc(&c.container),
            esc(&c.namespace),
            esc(&c.pod)
        )
    };
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        samples
            .iter()
            .map(|c| {
                format!(
                    "container_cpu_usage_seconds_total{{{}}} {} {ts}",
                    cl(c),
                    c.usage.cpu_nanos as f64 / 1e9
                )
            })
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        samples
            .iter()
            .map(|c| {
                format!(
                    "container_memory_working_set_bytes{{{}}} {} {ts}",
                    cl(c),
                    c.usage.working_set
                )
            })
            .collect(),
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        samples
            .iter()
            .map(|c| {
                format!(
                    "container_start_time_seconds{{{}}} {} {ts}",
                    cl(c),
                    secs_f(c.started)
                )
            })
            .collect(),
    );
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        vec![format!(
            "node_cpu_usage_seconds_total {} {ts}",
            node.cpu_nanos as f64 / 1e9
        )],
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        vec![format!(
            "node_memory_working_set_bytes {} {ts}",
            node.working_set
        )],
    );
    let mut pods: BTreeMap<(String, String), Usage> = BTreeMap::new();
    for c in samples {
        if let Some(u) = c.pod_usage {
            pods.insert((c.namespace.clone(), c.pod.clone()), u);
        }
    }
    let pl = |(ns, p): &(String, String)| format!("namespace=\"{}\",pod=\"{}\"", esc(ns), esc(p));
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter()
            .map(|(k, u)| {
                format!(
                    "pod_cpu_usage_seconds_total{{{}}} {} {ts}",
                    pl(k),
                    u.cpu_nanos as f64 / 1e9
                )
            })
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pods.iter()
            .map(|(k, u)| {
                format!(
                    "pod_memory_working_set_bytes{{{}}} {} {ts}",
                    pl(k),
                    u.working_set
                )
            })
            .collect(),
    );
    family(
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        vec!["resource_scrape_error 0".to_string()],
    );
    s
}

/// `/metrics`: bosun's own figures in the Prometheus text format (running pods and
/// containers by state for now).
pub fn agent_metrics(containers: &[bosun_runtime::ContainerStatus]) -> String {
    let mut pods = std::collections::BTreeSet::new();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for c in containers {
        let state = match &c.state {
            ContainerState::Created => "created",
            ContainerState::Running { .. } => {
                if let Some(uid) = c.labels.get(LABEL_POD_UID) {
                    pods.insert(uid.clone());
                }
                "running"
            }
            ContainerState::Exited(_) => "exited",
            ContainerState::Unknown { .. } => "unknown",
        };
        *states.entry(state).or_default() += 1;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox"
    );
    let _ = writeln!(s, "# TYPE kubelet_running_pods gauge");
    let _ = writeln!(s, "kubelet_running_pods {}", pods.len());
    let _ = writeln!(
        s,
        "# HELP kubelet_running_containers [ALPHA] Number of containers currently running"
    );
    let _ = writeln!(s, "# TYPE kubelet_running_containers gauge");
    for state in ["created", "exited", "running", "unknown"] {
        let _ = writeln!(
            s,
            "kubelet_running_containers{{container_state=\"{state}\"}} {}",
            states.get(state).copied().unwrap_or(0)
        );
    }
    s
}

fn cpu_json(u: &Usage, time: &str) -> serde_json::Value {
    serde_json::json!({"time": time, "usageCoreNanoSeconds": u.cpu_nanos})
}

fn memory_json(u: &Usage, time: &str) -> serde_json::Value {
    serde_json::json!({"time": time, "usageBytes": u.usage, "workingSetBytes": u.working_set})
}

fn volume_json(v: &VolumeSample, time: &str) -> serde_json::Value {
    let mut j = serde_json::json!({"time": time, "name": v.name});
    if let Some((capacity, available, used)) = v.bytes {
        j["capacityBytes"] = capacity.into();
        j["availableBytes"] = available.into();
        j["usedBytes"] = used.into();
    }
    if let Some((inodes, free, used)) = v.inodes {
        j["inodes"] = inodes.into();
        j["inodesFree"] = free.into();
        j["inodesUsed"] = used.into();
    }
    if let Some((ns, claim)) = &v.pvc {
        j["pvcRef"] = serde_json::json!({"name": claim, "namespace": ns});
    }
    if let Some(abnormal) = v.abnormal {
        j["volumeHealthStats"] = serde_json::json!({"abnormal": abnormal});
    }
    j
}

/// The kubelet's `kubelet_volume_stats_*` gauges of the volumes that come from claims.
pub fn volume_metrics(volumes: &[VolumeSample]) -> String {
    type Field = fn(&VolumeSample) -> Option<i64>;
    let gauges: [(&str, &str, Field); 7] = [
        (
            "kubelet_volume_stats_available_bytes",
            "[ALPHA] Number of available bytes in the volume",
            |v| v.bytes.map(|b| b.1),
        ),
        (
            "kubelet_volume_stats_capacity_bytes",
            "[ALPHA] Capacity in bytes of the volume",
            |v| v.bytes.map(|b| b.0),
        ),
        (
            "kubelet_volume_stats_health_status_abnormal",
            "[ALPHA] Abnormal volume health status. The count is either 1 or 0. 1 indicates the volume is unhealthy, 0 indicates volume is healthy",
            |v| v.abnormal.map(i64::from),
        ),
        (
            "kubelet_volume_stats_inodes",
            "[ALPHA] Maximum number of inodes in the volume",
            |v| v.inodes.map(|i| i.0),
        ),
        (
            "kubelet_volume_stats_inodes_free",
            "[ALPHA] Number of free inodes in the volume",
            |v| v.inodes.map(|i| i.1),
        ),
        (
            "kubelet_volume_stats_inodes_used",
            "[ALPHA] Number of used inodes in the volume",
            |v| v.inodes.map(|i| i.2),
        ),
        (
            "kubelet_volume_stats_used_bytes",
            "[ALPHA] Number of used bytes in the volume",
            |v| v.bytes.map(|b| b.2),
        ),
    ];
    let mut s = String::new();
    for (name, help, field) in gauges {
        let lines: BTreeMap<(String, String), i64> = volumes
            .iter()
            .filter_map(|v| Some((v.pvc.clone()?, field(v)?)))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} gauge");
        for ((ns, claim), value) in lines {
            let _ = writeln!(
                s,
                "{name}{{namespace=\"{}\",persistentvolumeclaim=\"{}\"}} {value}",
                esc(&ns),
                esc(&claim)
            );
        }
    }
    s
}

/// `/stats/summary`: the node, and each pod with its containers and volumes.
pub fn summary(
    node_name: &str,
    node: Usage,
    samples: &[ContainerSample],
    volumes: &[VolumeSample],
    now: SystemTime,
) -> serde_json::Value {
    let time = bosun_runtime::logs::rfc3339_nano(now);
    let mut pods: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for c in samples {
        let pod = pods.entry(c.pod_uid.clone()).or_insert_with(|| {
            let mut p = serde_json::json!({
                "podRef": {"name": c.pod, "namespace": c.namespace, "uid": c.pod_uid},
                "startTime": bosun_runtime::logs::rfc3339_nano(c.started),
                "containers": [],
            });
            if let Some(u) = &c.pod_usage {
                p["cpu"] = cpu_json(u, &time);
                p["memory"] = memory_json(u, &time);
            }
            p
        });
        if let Some(list) = pod["containers"].as_array_mut() {
            list.push(serde_json::json!({
                "name": c.container,
                "startTime": bosun_runtime::logs::rfc3339_nano(c.started),
                "cpu": cpu_json(&c.usage, &time),
                "memory": memory_json(&c.usage, &time),
            }));
        }
    }
    for v in volumes {
        if let Some(pod) = pods.get_mut(&v.pod_uid) {
            let list = pod
                .as_object_mut()
                .map(|o| o.entry("volume").or_insert_with(|| serde_json::json!([])));
            if let Some(serde_json::Value::Array(list)) = list {
                list.push(volume_json(v, &time));
            }
        }
    }
    serde_json::json!({
        "node": {
            "nodeName": node_name,
            "cpu": cpu_json(&node, &time),
            "memory": memory_json(&node, &time),
        },
        "pods": pods.into_values().collect::<Vec<_>>(),
    })
}

/// The node's usage now.
pub fn node_now() -> Usage {
    node_usage(
        &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup_dirs_v1_and_v2() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let v1 = "12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n";
        let d = cgroup_dirs(v1, root).expect("v1");
        assert_eq!(d.cpu, root.join("cpu,cpuacct/kubepods/pod1/c1"));
        assert_eq!(d.memory, root.join("memory/kubepods/pod1/c1"));
        assert!(!d.v2);
        // Only a per-controller folder (separate hierarchies, or a link): that one is used.
        std::fs::create_dir(root.join("cpuacct")).expect("mkdir");
        let d = cgroup_dirs(v1, root).expect("v1");
        assert_eq!(d.cpu, root.join("cpuacct/kubepods/pod1/c1"));
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpu memory").expect("w");
        let d = cgroup_dirs("0::/kubepods/pod1/c1\n", tmp.path()).expect("v2");
        assert_eq!(d.cpu, tmp.path().join("kubepods/pod1/c1"));
        assert!(d.v2);
    }

    #[test]
    fn reads_usage_from_cgroup_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path();
        std::fs::write(p.join("cpuacct.usage"), "2500000000\n").expect("w");
        std::fs::write(p.join("memory.usage_in_bytes"), "1000\n").expect("w");
        std::fs::write(p.join("memory.stat"), "cache 5\ntotal_inactive_file 300\n").expect("w");
        let d = CgroupDirs {
            cpu: p.to_path_buf(),
            memory: p.to_path_buf(),
            v2: false,
        };
        let u = usage(&d).expect("usage");
        assert_eq!(
            (u.cpu_nanos, u.working_set, u.usage),
            (2_500_000_000, 700, 1000)
        );
        std::fs::write(p.join("cpu.stat"), "usage_usec 42\nuser_usec 1\n").expect("w");
        std::fs::write(p.join("memory.current"), "500\n").expect("w");
        std::fs::write(p.join("memory.stat"), "inactive_file 600\n").expect("w");
        let u = usage(&CgroupDirs { v2: true, ..d }).expect("usage");
        assert_eq!((u.cpu_nanos, u.working_set), (42_000, 0));
    }

    #[test]
    fn node_usage_from_proc() {
        let u = node_usage(
            "cpu  100 5 20 1000 7 3 2 1 0 0\ncpu0 1 2 3\n",
            "MemTotal:       2048 kB\nMemFree: 1 kB\nMemAvailable:   1024 kB\n",
        );
        assert_eq!(u.cpu_nanos, 131 * 10_000_000);
        assert_eq!(u.working_set, 1024 * 1024);
    }

    #[test]
    fn counts_running_pods_and_containers() {
        let c = |uid: &str, state: ContainerState| bosun_runtime::ContainerStatus {
            id: format!("{uid}_c"),
            labels: [(LABEL_POD_UID.to_string(), uid.to_string())].into(),
            state,
            image: String::new(),
            image_id: String::new(),
            log_path: PathBuf::new(),
            resources: Default::default(),
        };
        let running = || ContainerState::Running {
            pid: 1,
            started_at: UNIX_EPOCH,
        };
        let text = agent_metrics(&[
            c("a", running()),
            c("a", running()),
            c("b", running()),
            c("c", ContainerState::Created),
        ]);
        assert!(text.contains("kubelet_running_pods 2\n"), "{text}");
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 3\n"));
        assert!(text.contains("kubelet_running_containers{container_state=\"created\"} 1\n"));
    }

    #[test]
    fn formats_resource_metrics() {
        let c = ContainerSample {
            id: "u1_app_0".into(),
            namespace: "default".into(),
            pod: "p".into(),
            pod_uid: "u".into(),
            container: "c".into(),
            started: UNIX_EPOCH,
            usage: Usage {
                cpu_nanos: 1_500_000_000,
                working_set: 10,
                usage: 20,
            },
            pod_usage: Some(Usage::default()),
        };
        let now = UNIX_EPOCH + std::time::Duration::from_secs(2);
        let text = resource_metrics(Usage::default(), std::slice::from_ref(&c), now);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"p\"} 1.5 2000\n"
        ));
        assert!(text.contains("# TYPE node_memory_working_set_bytes gauge\n"));
        assert!(
            text.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"p\"} 0 2000")
        );
        let vols = [
            VolumeSample {
                pod_uid: "u".into(),
                name: "data".into(),
                pvc: Some(("default".into(), "claim-1".into())),
                bytes: Some((1048576, 1048000, 576)),
                inodes: Some((100, 90, 10)),
                abnormal: Some(false),
            },
            // A pod without a running container is not in the summary.
            VolumeSample {
                pod_uid: "gone".into(),
                name: "x".into(),
                ..Default::default()
            },
        ];
        let s = summary("n", Usage::default(), &[c], &vols, now);
        assert_eq!(s["pods"][0]["podRef"]["name"], "p");
        let v = &s["pods"][0]["volume"][0];
        assert_eq!(v["name"], "data");
        assert_eq!(v["capacityBytes"], 1048576);
        assert_eq!(v["availableBytes"], 1048000);
        assert_eq!(v["usedBytes"], 576);
        assert_eq!(v["inodesFree"], 90);
        assert_eq!(v["pvcRef"]["name"], "claim-1");
        assert_eq!(v["pvcRef"]["namespace"], "default");
        assert_eq!(s["pods"].as_array().map(Vec::len), Some(1));
        let m = volume_metrics(&vols);
        assert!(
            m.contains("# TYPE kubelet_volume_stats_capacity_bytes gauge\n"),
            "{m}"
        );
        assert!(m.contains(
            "kubelet_volume_stats_capacity_bytes{namespace=\"default\",persistentvolumeclaim=\"claim-1\"} 1048576\n"
        ));
        assert!(m.contains(
            "kubelet_volume_stats_health_status_abnormal{namespace=\"default\",persistentvolumeclaim=\"claim-1\"} 0\n"
        ));
        // Inline volumes (no claim) have no metrics; no volumes, no lines.
        assert!(!m.contains("\"x\""));
        assert!(volume_metrics(&[]).is_empty());
        assert_eq!(
            s["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"],
            1_500_000_000
        );
    }
}
