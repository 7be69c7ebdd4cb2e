//! The order in which pods are evicted (`rankMemoryPressure`, `rankDiskPressureFunc`,
//! `rankPIDPressure`): pods using more than they request first, then lower priority first, then
//! more usage (above requests) first. A pod without figures goes first, as with the kubelet.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::Pod;

use super::{Resource, Signal};
use crate::admission::{pod_request, EPHEMERAL_STORAGE, MEMORY};

/// One container's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub name: String,
    pub memory_working_set: i64,
    /// The writable layer.
    pub rootfs_bytes: i64,
    pub rootfs_inodes: i64,
    pub logs_bytes: i64,
    pub logs_inodes: i64,
}

/// One volume's figures (local ephemeral volumes: disk-backed emptyDir, configMap,
/// downwardAPI).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub name: String,
    pub bytes: i64,
    pub inodes: i64,
    /// A `medium: Memory` emptyDir: counts against memory, not disk.
    pub memory_backed: bool,
}

/// One pod's figures, as the kubelet's summary has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodStats {
    pub uid: String,
    /// The pod cgroup's working set.
    pub memory_working_set: i64,
    pub processes: i64,
    pub containers: Vec<ContainerStats>,
    pub volumes: Vec<VolumeStats>,
}

/// What of a pod's disk use a disk signal counts (`fsStatsType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskParts {
    pub rootfs: bool,
    pub logs: bool,
    pub volumes: bool,
}

impl DiskParts {
    /// Without a dedicated image filesystem everything is on the node filesystem; with one, the
    /// node filesystem holds logs and volumes and the image filesystem the writable layers.
    pub fn of(signal: Signal, dedicated_image_fs: bool) -> DiskParts {
        let nodefs = matches!(signal, Signal::NodeFsAvailable | Signal::NodeFsInodesFree);
        match (dedicated_image_fs, nodefs) {
            (false, _) => DiskParts {
                rootfs: true,
                logs: true,
                volumes: true,
            },
            (true, true) => DiskParts {
                rootfs: false,
                logs: true,
                volumes: true,
            },
            (true, false) => DiskParts {
                rootfs: true,
                logs: false,
                volumes: false,
            },
        }
    }
}

impl PodStats {
    /// Disk bytes (or inodes) of the parts counted (`podDiskUsage`).
    pub fn disk(&self, parts: DiskParts, inodes: bool) -> i64 {
        let mut sum = 0i64;
        for c in &self.containers {
            if parts.rootfs {
                sum += if inodes {
                    c.rootfs_inodes
                } else {
                    c.rootfs_bytes
                };
            }
            if parts.logs {
                sum += if inodes { c.logs_inodes } else { c.logs_bytes };
            }
        }
        if parts.volumes {
            for v in self.volumes.iter().filter(|v| !v.memory_backed) {
                sum += if inodes { v.inodes } else { v.bytes };
            }
        }
        sum
    }

    /// The pod's ephemeral storage use: writable layers, logs and disk-backed local volumes.
    pub fn ephemeral_bytes(&self) -> i64 {
        self.disk(
            DiskParts {
                rootfs: true,
                logs: true,
                volumes: true,
            },
            false,
        )
    }
}

/// A pod and its figures, if any.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    pub stats: Option<&'a PodStats>,
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// `cmpBool`: true first.
fn true_first(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// Without figures first; then `f`.
fn with_stats(
    a: &Candidate,
    b: &Candidate,
    f: impl Fn(&PodStats, &PodStats) -> Ordering,
) -> Ordering {
    match (a.stats, b.stats) {
        (Some(x), Some(y)) => f(x, y),
        (x, y) => true_first(x.is_none(), y.is_none()),
    }
}

/// Sorts `pods` in eviction order for `signal` (stable, as the kubelet's sort is for equal pods
/// in practice).
pub fn rank(signal: Signal, pods: &mut [Candidate], dedicated_image_fs: bool) {
    match signal.resource() {
        Resource::Memory => pods.sort_by(|a, b| {
            let request = |c: &Candidate| pod_request(c.pod, MEMORY).unwrap_or(0);
            with_stats(a, b, |x, y| {
                true_first(
                    x.memory_working_set > request(a),
                    y.memory_working_set > request(b),
                )
            })
            .then_with(|| priority(a.pod).cmp(&priority(b.pod)))
            .then_with(|| {
                with_stats(a, b, |x, y| {
                    (y.memory_working_set - request(b)).cmp(&(x.memory_working_set - request(a)))
                })
            })
        }),
        Resource::Pids => pods.sort_by(|a, b| {
            priority(a.pod)
                .cmp(&priority(b.pod))
                .then_with(|| with_stats(a, b, |x, y| y.processes.cmp(&x.processes)))
        }),
        Resource::EphemeralStorage | Resource::Inodes => {
            let inodes = signal.resource() == Resource::Inodes;
            let parts = DiskParts::of(signal, dedicated_image_fs);
            // Usage above the ephemeral storage request orders them (inodes too, as the kubelet).
            let request = |c: &Candidate| pod_request(c.pod, EPHEMERAL_STORAGE).unwrap_or(0);
            // Above requests: of the resource measured (nobody requests inodes).
            let above = |c: &Candidate| if inodes { 0 } else { request(c) };
            pods.sort_by(|a, b| {
                with_stats(a, b, |x, y| {
                    true_first(
                        x.disk(parts, inodes) > above(a),
                        y.disk(parts, inodes) > above(b),
                    )
                })
                .then_with(|| priority(a.pod).cmp(&priority(b.pod)))
                .then_with(|| {
                    with_stats(a, b, |x, y| {
                        (y.disk(parts, inodes) - request(b))
                            .cmp(&(x.disk(parts, inodes) - request(a)))
                    })
                })
            })
        }
    }
}
