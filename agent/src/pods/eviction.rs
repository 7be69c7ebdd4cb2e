//! The node's resources at work: [`NodeResources`] (capacity, allocatable, what admission and
//! the eviction manager know, the pressure conditions they publish) and the eviction manager's
//! loop ([`run`]): every `housekeeping` interval (10 s) it measures the signals and the pods'
//! usage, runs one round of [`crate::eviction::synchronize`], evicts pods over their local
//! storage limits, and for a threshold met reclaims (dead containers, unused images) before it
//! evicts one pod, ranked as the kubelet ranks them, then waits for that pod to be gone. Memory
//! is looked at every second between rounds (cgroup v2 has no threshold notification; the
//! kubelet polls there too), so a memory threshold starts a round at once. Every decision is in
//! [`crate::eviction`] and [`crate::admission`]; this module measures and acts.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bosun_runtime::{ContainerState, ContainerStatus};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};

use super::worker::plan::PodFailure;
use super::Ctx;
use crate::admission::{self, NodeInfo, ResourceList, CPU, EPHEMERAL_STORAGE, MEMORY, PIDS, PODS};
use crate::config::Config;
use crate::eviction::rank::{self, Candidate, ContainerStats, PodStats, VolumeStats};
use crate::eviction::{
    self, local, message, NodeCondition, Observation, Observations, Reclaim, Settings, Signal,
    State,
};
use crate::translate::{LABEL_CONTAINER_NAME, LABEL_POD_UID, LABEL_RESTART_COUNT};

/// How often the eviction manager measures everything (the kubelet's `--housekeeping-interval`).
pub const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// How often memory is looked at between rounds.
const MEMORY_POLL: Duration = Duration::from_secs(1);
/// How long the manager waits for an evicted pod to be gone (`podCleanupTimeout`).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the node has and keeps, decided once at start, and the pressure it is under now.
pub struct NodeResources {
    pub capacity: ResourceList,
    /// The Node's `allocatable`.
    pub allocatable: ResourceList,
    /// What the `kubepods` cgroup is limited to (`enforceNodeAllocatable: [pods]`).
    pub pods_limits: ResourceList,
    /// Whether those limits are written to `kubepods`.
    pub enforce_pods: bool,
    /// The node as admission sees it.
    pub node: NodeInfo,
    pub settings: Settings,
    pressure: watch::Sender<Vec<NodeCondition>>,
}

/// The node's capacity on this host: CPUs, memory, the root dir's filesystem, `maxPods`, no
/// hugepages; and `pid_max` (for the kubepods cgroup only, as the kubelet).
pub fn host_capacity(cfg: &Config) -> ResourceList {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1);
    // The root dir may not exist yet: its filesystem is its nearest existing ancestor's.
    let storage = cfg
        .root_dir
        .ancestors()
        .find_map(|p| nix::sys::statvfs::statvfs(p).ok())
        .map(|s| (s.blocks() as i64).saturating_mul(s.fragment_size() as i64))
        .unwrap_or(0);
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    ResourceList::from([
        (CPU.to_string(), cpus * 1000),
        (MEMORY.to_string(), meminfo_total() as i64),
        (EPHEMERAL_STORAGE.to_string(), storage),
        (PODS.to_string(), i64::from(cfg.max_pods)),
        ("hugepages-1Gi".to_string(), 0),
        ("hugepages-2Mi".to_string(), 0),
        (PIDS.to_string(), pid_max),
    ])
}

fn meminfo_total() -> u64 {
    meminfo_kib(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        "MemTotal:",
    ) * 1024
}

fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// The eviction settings of the configuration (its thresholds checked as the kubelet checks
/// them at start).
pub fn settings(cfg: &Config) -> Result<Settings, String> {
    let r = &cfg.node_resources;
    Ok(Settings {
        thresholds: eviction::parse_thresholds(
            &r.eviction_hard,
            &r.eviction_soft,
            &r.eviction_soft_grace_period,
            &r.eviction_minimum_reclaim,
            r.enforce_pods,
        )?,
        pressure_transition: r.eviction_pressure_transition_period,
        max_pod_grace_seconds: r.eviction_max_pod_grace_period,
        local_storage: r.local_storage_capacity_isolation,
    })
}

impl NodeResources {
    /// From the configuration and the node's capacity: the reservation, allocatable, the
    /// kubepods limits, the thresholds. An invalid eviction setting or a reservation above
    /// capacity is an error (the kubelet refuses to start).
    pub fn new(cfg: &Config, capacity: ResourceList) -> Result<NodeResources, String> {
        let r = &cfg.node_resources;
        let settings = settings(cfg)?;
        let system = admission::parse_resource_list(&r.system_reserved)
            .map_err(|e| format!("systemReserved: {e}"))?;
        let kube = admission::parse_resource_list(&r.kube_reserved)
            .map_err(|e| format!("kubeReserved: {e}"))?;
        let (memory, storage) = eviction::hard_reservation(
            &settings.thresholds,
            capacity.get(MEMORY).copied().unwrap_or(0),
            capacity.get(EPHEMERAL_STORAGE).copied().unwrap_or(0),
        );
        let hard = ResourceList::from([
            (MEMORY.to_string(), memory),
            (EPHEMERAL_STORAGE.to_string(), storage),
        ]);
        let reservation = admission::reservation(&capacity, &system, &kube, &hard);
        for (k, v) in &reservation {
            let cap = capacity.get(k).copied().unwrap_or(0);
            if *v > cap {
                return Err(format!(
                    "invalid Node Allocatable configuration. Resource \"{k}\" has a reservation of {v} but capacity of {cap}. Expected capacity >= reservation."
                ));
            }
        }
        // The Node reports no pid resource.
        let mut reported = capacity.clone();
        reported.remove(PIDS);
        let allocatable = admission::allocatable(&reported, &reservation);
        let pods_limits = admission::pods_cgroup_limits(&capacity, &system, &kube, r.enforce_pods);
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "kubernetes.io/arch".to_string(),
                crate::config::kubelet::go_arch().to_string(),
            ),
        ]);
        labels.extend(cfg.node_labels.clone());
        Ok(NodeResources {
            node: NodeInfo {
                name: cfg.node_name.clone(),
                labels,
                taints: cfg.register_with_taints.clone(),
                allocatable: allocatable.clone(),
            },
            capacity: reported,
            allocatable,
            pods_limits,
            enforce_pods: r.enforce_pods,
            settings,
            pressure: watch::channel(Vec::new()).0,
        })
    }

    /// For unit tests: a node with room for everything and no thresholds.
    pub fn unlimited() -> NodeResources {
        let big = ResourceList::from([
            (CPU.to_string(), 1 << 40),
            (MEMORY.to_string(), 1 << 50),
            (EPHEMERAL_STORAGE.to_string(), 1 << 50),
            (PODS.to_string(), 1 << 20),
        ]);
        NodeResources {
            node: NodeInfo {
                allocatable: big.clone(),
                ..NodeInfo::default()
            },
            capacity: big.clone(),
            allocatable: big.clone(),
            pods_limits: big,
            enforce_pods: false,
            settings: Settings {
                thresholds: Vec::new(),
                pressure_transition: Duration::from_secs(300),
                max_pod_grace_seconds: 0,
                local_storage: false,
            },
            pressure: watch::channel(Vec::new()).0,
        }
    }

    /// The pressure conditions the node has now.
    pub fn conditions(&self) -> Vec<NodeCondition> {
        self.pressure.borrow().clone()
    }

    fn set_conditions(&self, c: Vec<NodeCondition>) {
        self.pressure.send_if_modified(|cur| {
            if *cur == c {
                return false;
            }
            tracing::info!(conditions = ?c, "node pressure conditions changed");
            *cur = c;
            true
        });
    }

    /// The limits of the `kubepods` cgroup in the runtime's terms.
    pub fn kubepods_resources(&self) -> bosun_runtime::Resources {
        let get = |k: &str| self.pods_limits.get(k).copied().filter(|v| *v > 0);
        bosun_runtime::Resources {
            cpu_shares: get(CPU).map(|m| crate::translate::milli_cpu_to_shares(i128::from(m))),
            memory_limit: get(MEMORY),
            pids_limit: get(PIDS),
            ..bosun_runtime::Resources::default()
        }
    }
}

/// The kubelet's admission of a pod (resources, with the device plugins' `devices`, affinity,
/// taints; then the eviction manager's refusal under pressure): `Err` carries the failure the
/// pod ends with.
pub fn admit(
    res: &NodeResources,
    devices: &ResourceList,
    pod: &Pod,
    others: &[&Pod],
) -> Result<(), PodFailure> {
    if let Err(r) = admission::admit(pod, others, &res.node.with_devices(devices)) {
        return Err(PodFailure::rejected(&r.reason, &r.message));
    }
    if let Err(message) = eviction::admit_under_pressure(pod, &res.conditions()) {
        return Err(PodFailure::rejected(eviction::REASON, &message));
    }
    Ok(())
}

/// A pod the manager is to fail, and how.
#[derive(Clone, Debug)]
pub struct Eviction {
    pub uid: String,
    pub failure: Arc<PodFailure>,
}

/// What a round measures of the disks, kept for [`HOUSEKEEPING`].
#[derive(Clone, Debug, Default)]
struct DiskView {
    observations: Observations,
    pods: HashMap<String, PodStats>,
    dedicated_image_fs: bool,
}

/// Bytes and inodes of a filesystem: (available bytes, capacity bytes, free inodes, inodes).
fn statvfs(p: &Path) -> Option<(i64, i64, i64, i64)> {
    let s = nix::sys::statvfs::statvfs(p).ok()?;
    let frag = s.fragment_size().max(1) as i64;
    Some((
        s.blocks_available() as i64 * frag,
        s.blocks() as i64 * frag,
        s.files_free() as i64,
        s.files() as i64,
    ))
}

/// Bytes allocated (blocks) and inodes under `dir`, staying on its filesystem.
pub fn disk_usage(dir: &Path) -> (i64, i64) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = meta.dev();
    let (mut bytes, mut inodes) = (meta.blocks() as i64 * 512, 1i64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            bytes += m.blocks() as i64 * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// The node's memory from `/proc/meminfo`: (available, capacity) as the kubelet sees them
/// (capacity minus the working set: used memory without inactive file pages).
fn node_memory(meminfo: &str) -> Observation {
    let kib = |k| meminfo_kib(meminfo, k) as i64 * 1024;
    let total = kib("MemTotal:");
    let working_set = (total - kib("MemFree:") - kib("Inactive(file):")).max(0);
    Observation {
        available: total - working_set,
        capacity: total,
    }
}

/// The memory and pid signals, measured now (cheap: a few small files).
fn memory_and_pids(
    ctx: &Ctx,
    res: &NodeResources,
    usage: &bosun_runtime::cgroups::PodsUsage,
) -> Observations {
    let mut obs = Observations::new();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    obs.insert(Signal::MemoryAvailable, node_memory(&meminfo));
    if let Some(pods) = usage.kubepods {
        let limit = res
            .pods_limits
            .get(MEMORY)
            .copied()
            .unwrap_or_else(|| meminfo_total() as i64);
        let ws = pods.memory_working_set as i64;
        obs.insert(
            Signal::AllocatableMemoryAvailable,
            Observation {
                available: limit - ws,
                capacity: limit,
            },
        );
    }
    let pid_max = res.pods_limits.get(PIDS).copied().unwrap_or(0).max(
        std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
    );
    if let Some(running) = running_processes() {
        obs.insert(
            Signal::PidAvailable,
            Observation {
                available: pid_max - running,
                capacity: pid_max,
            },
        );
    }
    let _ = ctx;
    obs
}

/// Processes (threads count as the kernel counts tasks against pid_max) running now: the
/// fourth field of `/proc/loadavg` ("running/total").
fn running_processes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The pods' disk use and the filesystems' signals.
fn measure_disks(ctx: &Ctx, pods: &[Arc<Pod>]) -> DiskView {
    let cfg = &ctx.cfg;
    let mut obs = Observations::new();
    let images = cfg.data_dir.join("images");
    let images = if images.exists() {
        images
    } else {
        cfg.data_dir.clone()
    };
    let dev = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let dedicated_image_fs = match (dev(&cfg.root_dir), dev(&images)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    for (path, bytes, inodes) in [
        (
            &cfg.root_dir,
            Signal::NodeFsAvailable,
            Signal::NodeFsInodesFree,
        ),
        (&images, Signal::ImageFsAvailable, Signal::ImageFsInodesFree),
    ] {
        if let Some((avail, cap, ifree, itotal)) = statvfs(path) {
            obs.insert(
                bytes,
                Observation {
                    available: avail,
                    capacity: cap,
                },
            );
            if itotal > 0 {
                obs.insert(
                    inodes,
                    Observation {
                        available: ifree,
                        capacity: itotal,
                    },
                );
            }
        }
    }
    let containers = ctx.runtime.list();
    let mut stats = HashMap::new();
    for pod in pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        stats.insert(uid.clone(), pod_disk(ctx, pod, &uid, &containers));
    }
    DiskView {
        observations: obs,
        pods: stats,
        dedicated_image_fs,
    }
}

/// The newest attempt of each container of pod `uid`.
fn newest_attempts<'a>(
    uid: &str,
    containers: &'a [ContainerStatus],
) -> BTreeMap<String, &'a ContainerStatus> {
    let mut out: BTreeMap<String, &ContainerStatus> = BTreeMap::new();
    let attempt = |c: &ContainerStatus| -> u32 {
        c.labels
            .get(LABEL_RESTART_COUNT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    };
    for c in containers
        .iter()
        .filter(|c| c.labels.get(LABEL_POD_UID).map(String::as_str) == Some(uid))
    {
        let Some(name) = c.labels.get(LABEL_CONTAINER_NAME) else {
            continue;
        };
        match out.get(name) {
            Some(cur) if attempt(cur) >= attempt(c) => {}
            _ => {
                out.insert(name.clone(), c);
            }
        }
    }
    out
}

/// One pod's disk figures: each container's writable layer and logs, the local volumes.
fn pod_disk(ctx: &Ctx, pod: &Pod, uid: &str, containers: &[ContainerStatus]) -> PodStats {
    let mut st = PodStats {
        uid: uid.to_string(),
        ..PodStats::default()
    };
    for (name, c) in newest_attempts(uid, containers) {
        let (rootfs_bytes, rootfs_inodes) = ctx
            .runtime
            .writable_layer(&c.id)
            .map(|p| disk_usage(&p))
            .unwrap_or((0, 0));
        // Every attempt's log of the container, as the kubelet counts the container's log dir.
        let (logs_bytes, logs_inodes) = c.log_path.parent().map(disk_usage).unwrap_or((0, 0));
        st.containers.push(ContainerStats {
            name,
            memory_working_set: 0,
            rootfs_bytes,
            rootfs_inodes,
            logs_bytes,
            logs_inodes,
        });
    }
    let volumes = ctx.cfg.root_dir.join("pods").join(uid).join("volumes");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let (plugin, memory_backed) = if let Some(e) = &v.empty_dir {
            (
                "kubernetes.io~empty-dir",
                e.medium.as_deref() == Some("Memory"),
            )
        } else if v.config_map.is_some() {
            ("kubernetes.io~configmap", false)
        } else if v.downward_api.is_some() {
            ("kubernetes.io~downward-api", false)
        } else {
            continue;
        };
        let (bytes, inodes) = disk_usage(&volumes.join(plugin).join(&v.name));
        st.volumes.push(VolumeStats {
            name: v.name.clone(),
            bytes,
            inodes,
            memory_backed,
        });
    }
    st
}

/// The containers the kubelet's container GC removes to reclaim disk: every exited attempt
/// that is not the newest of its container.
pub fn dead_containers(containers: &[ContainerStatus]) -> Vec<String> {
    let mut newest: HashMap<(String, String), u32> = HashMap::new();
    let key = |c: &ContainerStatus| {
        Some((
            c.labels.get(LABEL_POD_UID)?.clone(),
            c.labels.get(LABEL_CONTAINER_NAME)?.clone(),
        ))
    };
    let attempt = |c: &ContainerStatus| -> u32 {
        c.labels
            .get(LABEL_RESTART_COUNT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    };
    for c in containers {
        if let Some(k) = key(c) {
            let e = newest.entry(k).or_insert(0);
            *e = (*e).max(attempt(c));
        }
    }
    containers
        .iter()
        .filter(|c| {
            matches!(
                c.state,
                ContainerState::Exited(_) | ContainerState::Unknown { .. }
            )
        })
        .filter(|c| key(c).is_some_and(|k| newest.get(&k) != Some(&attempt(c))))
        .map(|c| c.id.clone())
        .collect()
}

/// The manager's loop: measures, decides, acts; sends the pods to fail to the pod manager.
/// `active` is what the pod manager runs (admitted, not ending). Never returns.
pub async fn run(
    ctx: Arc<Ctx>,
    active: watch::Receiver<Vec<Arc<Pod>>>,
    evict: mpsc::UnboundedSender<Eviction>,
) {
    let res = ctx.resources.clone();
    if res.enforce_pods {
        if let Err(e) = ctx.runtime.enforce_pods_limits(&res.kubepods_resources()) {
            tracing::warn!(error = %e, "cannot put the node's allocatable on the kubepods cgroup");
        }
    }
    let settings = res.settings.clone();
    if settings.thresholds.is_empty() && !settings.local_storage {
        return;
    }
    let memory_thresholds: Vec<usize> = settings
        .thresholds
        .iter()
        .enumerate()
        .filter(|(_, t)| t.signal.resource() == eviction::Resource::Memory)
        .map(|(i, _)| i)
        .collect();
    let mut state = State::default();
    let mut disks: Option<(Instant, DiskView)> = None;
    let mut last_round = Instant::now()
        .checked_sub(HOUSEKEEPING)
        .unwrap_or_else(Instant::now);
    // The memory thresholds met at the last look, and whether the last round evicted.
    let mut memory_met: Vec<usize> = Vec::new();
    let mut acted = false;
    loop {
        // Between rounds, memory every second: a memory threshold met starts a round now.
        if last_round.elapsed() < HOUSEKEEPING {
            tokio::time::sleep(MEMORY_POLL).await;
            let c = ctx.clone();
            let r = res.clone();
            let obs = tokio::task::spawn_blocking(move || {
                let usage = c.runtime.pods_usage(false);
                memory_and_pids(&c, &r, &usage)
            })
            .await
            .unwrap_or_default();
            let met = eviction::thresholds_met(
                &settings.thresholds,
                memory_thresholds.iter().copied(),
                &obs,
                false,
            );
            // A new crossing, or one the last round acted on: a round now. Otherwise the next
            // round comes at the housekeeping interval.
            let new = met.iter().any(|i| !memory_met.contains(i));
            if met.is_empty() || !(new || acted) {
                memory_met = met;
                continue;
            }
            memory_met = met;
        }
        last_round = Instant::now();
        acted = false;
        let pods: Vec<Arc<Pod>> = active.borrow().clone();
        let fresh = disks
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < HOUSEKEEPING);
        if !fresh {
            let c = ctx.clone();
            let p = pods.clone();
            let t0 = Instant::now();
            if let Ok(view) = tokio::task::spawn_blocking(move || measure_disks(&c, &p)).await {
                crate::metrics::observe_runtime_operation("eviction_measure_disks", t0.elapsed());
                disks = Some((Instant::now(), view));
            }
        }
        let Some((_, disk)) = disks.clone() else {
            continue;
        };
        let c = ctx.clone();
        let r = res.clone();
        let (usage, memory) = tokio::task::spawn_blocking(move || {
            let usage = c.runtime.pods_usage(true);
            let obs = memory_and_pids(&c, &r, &usage);
            (usage, obs)
        })
        .await
        .unwrap_or_default();
        let mut obs = disk.observations.clone();
        obs.extend(memory);
        // Every running pod has figures: disk ones from the last measuring (none for a pod
        // newer than that), memory ones from now.
        let mut stats = disk.pods.clone();
        let listed = ctx.runtime.list();
        for pod in &pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            stats.entry(uid.clone()).or_insert_with(|| PodStats {
                uid: uid.clone(),
                containers: newest_attempts(&uid, &listed)
                    .into_keys()
                    .map(|name| ContainerStats {
                        name,
                        ..ContainerStats::default()
                    })
                    .collect(),
                ..PodStats::default()
            });
        }
        for (uid, s) in stats.iter_mut() {
            if let Some(u) = usage.pods.get(uid) {
                s.memory_working_set = u.memory_working_set as i64;
                s.processes = u.processes as i64;
            }
            let containers = ctx
                .runtime
                .list_prefix(&crate::translate::container_id_prefix(uid));
            for cs in &mut s.containers {
                if let Some(id) = containers
                    .iter()
                    .filter(|c| c.labels.get(LABEL_CONTAINER_NAME) == Some(&cs.name))
                    .map(|c| &c.id)
                    .next_back()
                {
                    if let Some(u) = usage.containers.get(id) {
                        cs.memory_working_set = u.memory_working_set as i64;
                    }
                }
            }
        }
        let round = eviction::synchronize(&settings, &mut state, &obs, SystemTime::now());
        res.set_conditions(round.conditions.clone());

        // Local storage limits first: every pod over one is evicted.
        if settings.local_storage {
            let mut evicted = Vec::new();
            for pod in &pods {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let Some(s) = stats.get(&uid) else { continue };
                let Some(msg) = local::over_limit(pod, s, disk.dedicated_image_fs) else {
                    continue;
                };
                if eviction::is_critical(pod) {
                    tracing::warn!(pod = %super::pod_key(pod), "cannot evict a critical pod");
                    continue;
                }
                let failure =
                    PodFailure::evicted(&msg, Some(eviction::IMMEDIATE_GRACE_SECONDS), false);
                let _ = evict.send(Eviction {
                    uid: uid.clone(),
                    failure: Arc::new(failure),
                });
                evicted.push(uid);
            }
            if !evicted.is_empty() {
                wait_for_cleanup(&ctx, &evicted).await;
                disks = None;
                acted = true;
                continue;
            }
        }
        let Some(ti) = round.to_reclaim() else {
            continue;
        };
        let threshold = settings.thresholds[ti].clone();
        let resource = threshold.signal.resource();
        tracing::warn!(
            resource = resource.as_str(),
            signal = threshold.signal.as_str(),
            "eviction threshold met: attempting to reclaim {}",
            resource.as_str()
        );
        if eviction::reclaim_for(threshold.signal, disk.dedicated_image_fs)
            == Reclaim::ContainersAndImages
        {
            reclaim(&ctx).await;
            let c = ctx.clone();
            let p = pods.clone();
            if let Ok(view) = tokio::task::spawn_blocking(move || measure_disks(&c, &p)).await {
                let mut after = view.observations.clone();
                after.extend(
                    obs.iter()
                        .filter(|(s, _)| {
                            s.resource() == eviction::Resource::Memory
                                || **s == Signal::PidAvailable
                        })
                        .map(|(s, o)| (*s, *o)),
                );
                let still = eviction::thresholds_met(
                    &settings.thresholds,
                    0..settings.thresholds.len(),
                    &after,
                    true,
                );
                disks = Some((Instant::now(), view));
                if still.is_empty() {
                    tracing::info!(
                        resource = resource.as_str(),
                        "reclaimed without evicting pods"
                    );
                    continue;
                }
            }
        }
        let mut candidates: Vec<Candidate> = pods
            .iter()
            .map(|p| Candidate {
                pod: p,
                stats: stats.get(p.metadata.uid.as_deref().unwrap_or("")),
            })
            .collect();
        rank::rank(threshold.signal, &mut candidates, disk.dedicated_image_fs);
        let Some(victim) = candidates.iter().find(|c| !eviction::is_critical(c.pod)) else {
            tracing::warn!(
                resource = resource.as_str(),
                "eviction thresholds met, but no pod can be evicted"
            );
            continue;
        };
        let msg = message::node_pressure(
            resource,
            victim.pod,
            victim.stats,
            &settings,
            &round.met,
            &obs,
        );
        let grace = eviction::grace_seconds(victim.pod, &threshold, settings.max_pod_grace_seconds);
        let uid = victim.pod.metadata.uid.clone().unwrap_or_default();
        tracing::warn!(pod = %super::pod_key(victim.pod), grace, "evicting pod: {msg}");
        let _ = evict.send(Eviction {
            uid: uid.clone(),
            failure: Arc::new(PodFailure::evicted(&msg, Some(grace), true)),
        });
        wait_for_cleanup(&ctx, &[uid]).await;
        disks = None;
        acted = true;
    }
}

/// Waits until no container of the pods runs any more (at most [`CLEANUP_TIMEOUT`]).
async fn wait_for_cleanup(ctx: &Ctx, uids: &[String]) {
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    while Instant::now() < deadline {
        let running = uids.iter().any(|uid| {
            ctx.runtime
                .list_prefix(&crate::translate::container_id_prefix(uid))
                .iter()
                .any(|c| {
                    matches!(
                        c.state,
                        ContainerState::Running { .. } | ContainerState::Created
                    )
                })
        });
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::info!(pods = ?uids, "timed out waiting for evicted pods to be cleaned up");
}

/// Node-level reclaim for disk: dead containers, then every unused image (as old as the
/// image GC's minimum age).
async fn reclaim(ctx: &Ctx) {
    let dead = dead_containers(&ctx.runtime.list());
    for id in &dead {
        if let Err(e) = ctx.runtime.remove_container(id).await {
            tracing::debug!(container = %id, error = %e, "cannot remove a dead container");
        }
    }
    let in_use = ctx.runtime.images_in_use();
    let images = ctx.images.clone();
    match tokio::task::spawn_blocking(move || images.delete_unused(&in_use)).await {
        Ok(Ok(freed)) => tracing::info!(dead_containers = dead.len(), freed, "reclaimed disk"),
        Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
        Err(e) => tracing::warn!(error = %e, "image garbage collection task failed"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bosun_runtime::ExitInfo;

    fn status(id: &str, uid: &str, name: &str, attempt: u32, exited: bool) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            labels: BTreeMap::from([
                (LABEL_POD_UID.to_string(), uid.to_string()),
                (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
                (LABEL_RESTART_COUNT.to_string(), attempt.to_string()),
            ]),
            state: if exited {
                ContainerState::Exited(ExitInfo {
                    code: 1,
                    signal: None,
                    oom_killed: false,
                    started_at: None,
                    finished_at: SystemTime::UNIX_EPOCH,
                    start_error: None,
                })
            } else {
                ContainerState::Running {
                    pid: 1,
                    started_at: SystemTime::UNIX_EPOCH,
                }
            },
            image: String::new(),
            image_id: String::new(),
            log_path: Default::default(),
            resources: Default::default(),
        }
    }

    #[test]
    fn dead_containers_are_exited_attempts_but_the_newest() {
        let list = vec![
            status("a0", "a", "c", 0, true),
            status("a1", "a", "c", 1, true),
            status("a2", "a", "c", 2, false),
            status("b0", "b", "c", 0, true),
            status("b1", "b", "d", 0, true),
        ];
        assert_eq!(dead_containers(&list), ["a0", "a1"]);
    }

    #[test]
    fn disk_usage_counts_blocks_and_inodes() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), vec![1u8; 64 * 1024]).unwrap();
        let (bytes, inodes) = disk_usage(tmp.path());
        assert!(bytes >= 64 * 1024, "{bytes}");
        assert_eq!(inodes, 3);
        assert_eq!(disk_usage(&tmp.path().join("missing")), (0, 0));
    }

    #[test]
    fn node_resources_from_config_and_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "kind: KubeletConfiguration\nevictionHard: {memory.available: 100Mi, nodefs.available: 10%}\n\
             systemReserved: {memory: 1Gi, cpu: 500m}\nkubeReserved: {memory: 256Mi, pid: '1000'}\n",
        )
        .unwrap();
        let (cfg, _) = Config::load(&crate::config::Flags {
            config: Some(path.clone()),
            node_name: Some("n1".into()),
            ..Default::default()
        })
        .unwrap();
        let capacity = ResourceList::from([
            (CPU.to_string(), 4000),
            (MEMORY.to_string(), 8 << 30),
            (EPHEMERAL_STORAGE.to_string(), 100 << 30),
            (PODS.to_string(), 110),
            (PIDS.to_string(), 4_000_000),
        ]);
        let r = NodeResources::new(&cfg, capacity.clone()).unwrap();
        assert_eq!(r.allocatable[CPU], 3500);
        assert_eq!(
            r.allocatable[MEMORY],
            (8 << 30) - (1 << 30) - (256 << 20) - (100 << 20)
        );
        // 10 % as the kubelet computes it: a float32 fraction, so 160 bytes more than 10 GiB.
        assert_eq!(
            r.allocatable[EPHEMERAL_STORAGE],
            (100 << 30) - (10 << 30) - 160
        );
        assert!(
            !r.allocatable.contains_key(PIDS),
            "the Node reports no pid resource"
        );
        // The kubepods cgroup: without the eviction threshold; pids too.
        let k = r.kubepods_resources();
        assert_eq!(k.memory_limit, Some((8 << 30) - (1 << 30) - (256 << 20)));
        assert_eq!(k.pids_limit, Some(4_000_000 - 1000));
        assert_eq!(k.cpu_shares, Some(3584));
        assert_eq!(r.node.name, "n1");
        assert_eq!(r.node.labels["kubernetes.io/os"], "linux");
        // A reservation above capacity stops the node, with the kubelet's message.
        std::fs::write(
            &path,
            "kind: KubeletConfiguration\nsystemReserved: {memory: 9Gi}\n",
        )
        .unwrap();
        let (cfg, _) = Config::load(&crate::config::Flags {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        let e = NodeResources::new(&cfg, capacity).err().unwrap();
        assert!(
            e.starts_with("invalid Node Allocatable configuration. Resource \"memory\""),
            "{e}"
        );
    }

    /// The cost of a round's disk measuring for 100 pods (BENCHMARKS.md): each pod with a
    /// writable layer of 20 files, a log folder of 2 files, an emptyDir of 100 files in 10
    /// folders and a configMap of 5 files; walked as [`pod_disk`] walks them. Prints the figure,
    /// asserts nothing about time: `cargo test -p bosun --lib measuring_cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn measuring_cost_of_100_pods() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for pod in 0..100 {
            let base = tmp.path().join(format!("pod{pod}"));
            let put = |dir: &Path, files: usize, size: usize| {
                std::fs::create_dir_all(dir).unwrap();
                for f in 0..files {
                    std::fs::write(dir.join(format!("f{f}")), vec![7u8; size]).unwrap();
                }
            };
            put(&base.join("upper/etc"), 20, 512);
            put(&base.join("logs/c"), 2, 64 * 1024);
            for d in 0..10 {
                put(&base.join(format!("empty/d{d}")), 10, 4096);
            }
            put(&base.join("configmap"), 5, 100);
            dirs.extend(["upper", "logs/c", "empty", "configmap"].map(|d| base.join(d)));
        }
        let rounds = 20;
        let cpu = || {
            let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage writes a plain struct we own.
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
            // SAFETY: initialised by getrusage (zeroed before).
            let ru = unsafe { ru.assume_init() };
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(ru.ru_utime) + t(ru.ru_stime)
        };
        let (t0, c0) = (Instant::now(), cpu());
        let mut total = 0;
        for _ in 0..rounds {
            for d in &dirs {
                total += disk_usage(d).1;
            }
        }
        let (wall, used) = (
            t0.elapsed().as_secs_f64() / rounds as f64,
            (cpu() - c0) / rounds as f64,
        );
        println!(
            "100 pods, {} inodes per round: {:.2} ms CPU ({:.2} ms wall) per round; at one round per {} s: {:.3} % of a core",
            total / rounds,
            used * 1e3,
            wall * 1e3,
            HOUSEKEEPING.as_secs(),
            used / HOUSEKEEPING.as_secs_f64() * 100.0
        );
    }

    #[test]
    fn node_memory_is_capacity_minus_working_set() {
        let o = node_memory("MemTotal: 1000 kB\nMemFree: 300 kB\nInactive(file): 200 kB\n");
        assert_eq!(
            o,
            Observation {
                available: 500 * 1024,
                capacity: 1000 * 1024
            }
        );
    }
}
