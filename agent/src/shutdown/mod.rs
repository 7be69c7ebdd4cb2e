//! Graceful node shutdown, the kubelet's rules (pkg/kubelet/nodeshutdown): which priority
//! groups there are and how long each gets, which pods go in which group, the grace period each
//! pod gets, the logind drop-in that makes room for it all. Pure; [`logind`] is the thin seam
//! to systemd-logind over D-Bus, and `pods::shutdown` acts on a `PrepareForShutdown`.

pub mod logind;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::config::{ShutdownConfig, ShutdownGracePeriodByPodPriority};

/// The status reason of a pod ended by a node shutdown.
pub const REASON: &str = "Terminated";
/// Its status message (and the DisruptionTarget condition's).
pub const MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";
/// The admission reason of a pod that comes while the node shuts down.
pub const NOT_ADMITTED_REASON: &str = "NodeShutdown";
/// Its message.
pub const NOT_ADMITTED_MESSAGE: &str = "Pod was rejected as the node is shutting down.";
/// The Ready condition's message while the node shuts down (reason `KubeletNotReady`).
pub const NOT_READY_MESSAGE: &str = "node is shutting down";

/// The kubelet's `scheduling.DefaultPriorityWhenNoDefaultClassExists`.
pub const DEFAULT_PRIORITY: i32 = 0;
/// The kubelet's `scheduling.SystemCriticalPriority` (2 * HighestUserDefinablePriority).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The priority groups, lowest priority first (stopped in this order), each with its seconds:
/// shutdownGracePeriodByPodPriority when given, otherwise the two groups of
/// shutdownGracePeriod (regular pods get what critical pods do not; the kubelet's
/// `migrateConfig`). Empty: graceful shutdown is off.
pub fn periods(cfg: &ShutdownConfig) -> Vec<ShutdownGracePeriodByPodPriority> {
    let mut periods = if cfg.by_pod_priority.is_empty() {
        migrate(cfg.grace_period, cfg.grace_period_critical_pods)
    } else {
        cfg.by_pod_priority.clone()
    };
    periods.sort_by_key(|p| p.priority);
    periods
}

fn migrate(total: Duration, critical: Duration) -> Vec<ShutdownGracePeriodByPodPriority> {
    if total.is_zero() || critical > total {
        return Vec::new();
    }
    let regular = total - critical;
    vec![
        ShutdownGracePeriodByPodPriority {
            priority: DEFAULT_PRIORITY,
            shutdown_grace_period_seconds: regular.as_secs() as i64,
        },
        ShutdownGracePeriodByPodPriority {
            priority: SYSTEM_CRITICAL_PRIORITY,
            shutdown_grace_period_seconds: (total - regular).as_secs() as i64,
        },
    ]
}

/// What the node asks logind to wait for: every group's seconds added up.
pub fn requested(periods: &[ShutdownGracePeriodByPodPriority]) -> Duration {
    let secs: i64 = periods
        .iter()
        .map(|p| p.shutdown_grace_period_seconds)
        .sum();
    Duration::from_secs(secs.max(0) as u64)
}

/// The group of a pod of `priority` (`periods` sorted, not empty): the highest group whose
/// priority is at most the pod's; below the lowest, the lowest (the kubelet's
/// `groupByPriority`).
pub fn group_of(periods: &[ShutdownGracePeriodByPodPriority], priority: i32) -> usize {
    let index = periods.partition_point(|p| p.priority < priority);
    if index == periods.len() {
        periods.len().saturating_sub(1)
    } else if index > 0 && periods[index].priority > priority {
        index - 1
    } else {
        index
    }
}

/// One priority group: its seconds and its pods (uid, the grace period in seconds each gets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub priority: i32,
    pub seconds: i64,
    pub pods: Vec<(String, i64)>,
}

/// The pods in their groups, lowest priority first, each with its grace period: its own
/// terminationGracePeriodSeconds when that is shorter than the group's, else the group's.
/// Every group is listed, empty or not (an empty one is skipped without waiting).
pub fn groups(periods: &[ShutdownGracePeriodByPodPriority], pods: &[&Pod]) -> Vec<Group> {
    let mut groups: Vec<Group> = periods
        .iter()
        .map(|p| Group {
            priority: p.priority,
            seconds: p.shutdown_grace_period_seconds,
            pods: Vec::new(),
        })
        .collect();
    if groups.is_empty() {
        return groups;
    }
    for pod in pods {
        let spec = pod.spec.as_ref();
        let i = group_of(periods, spec.and_then(|s| s.priority).unwrap_or(0));
        let g = &mut groups[i];
        let grace = match spec.and_then(|s| s.termination_grace_period_seconds) {
            Some(own) if own <= g.seconds => own,
            _ => g.seconds,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        g.pods.push((uid, grace));
    }
    groups
}

/// The drop-in that raises logind's InhibitDelayMaxSec to `delay` (the kubelet's
/// `OverrideInhibitDelay`, whole seconds).
pub fn logind_dropin(delay: Duration) -> String {
    format!(
        "# bosun logind override\n[Login]\nInhibitDelayMaxSec={}\n",
        delay.as_secs_f64().round() as u64
    )
}

#[cfg(test)]
mod tests;
