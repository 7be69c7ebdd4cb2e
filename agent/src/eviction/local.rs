//! Local storage limits (`localStorageEviction`): an emptyDir over its `sizeLimit`, a pod over
//! the sum of its containers' `limits.ephemeral-storage`, a container over its own. Checked
//! every round before the thresholds; such a pod is evicted at once (1 s grace), with no
//! DisruptionTarget condition, whatever the node's pressure.

use k8s_openapi::api::core::v1::Pod;

use super::message;
use super::rank::PodStats;
use crate::admission::{pod_limit, EPHEMERAL_STORAGE};

/// The first limit `pod` is over, as the eviction's message; `None` when it is within them.
pub fn over_limit(pod: &Pod, stats: &PodStats, dedicated_image_fs: bool) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for v in spec.volumes.iter().flatten() {
        let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) else {
            continue;
        };
        let Ok(size) = crate::quantity::parse_quantity(&limit.0) else {
            continue;
        };
        let used = stats
            .volumes
            .iter()
            .find(|s| s.name == v.name)
            .map(|s| s.bytes);
        if let Some(used) = used {
            if size.milli_value() > 0 && i128::from(used) * 1000 > size.milli_value() {
                return Some(message::empty_dir(&v.name, &limit.0));
            }
        }
    }
    if let Some(limit) = pod_limit(pod, EPHEMERAL_STORAGE) {
        if stats.ephemeral_bytes() > limit {
            return Some(message::pod_ephemeral(limit));
        }
    }
    for c in &spec.containers {
        let Some(limit) = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(EPHEMERAL_STORAGE))
        else {
            continue;
        };
        let Ok(q) = crate::quantity::parse_quantity(&limit.0) else {
            continue;
        };
        if q.is_zero() {
            continue;
        }
        let Some(s) = stats.containers.iter().find(|s| s.name == c.name) else {
            continue;
        };
        let mut used = s.logs_bytes;
        if !dedicated_image_fs {
            used += s.rootfs_bytes;
        }
        if i128::from(used) * 1000 > q.milli_value() {
            return Some(message::container_ephemeral(&c.name, &limit.0));
        }
    }
    None
}
