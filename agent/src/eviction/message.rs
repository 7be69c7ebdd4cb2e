//! The kubelet's eviction messages (`evictionMessage` and the local storage formats), with
//! quantities written as `resource.Quantity.String()` writes them.

use k8s_openapi::api::core::v1::Pod;

use super::rank::PodStats;
use super::{Observations, Resource, Settings};

pub use crate::quantity::{binary_si as binary, decimal_si as decimal};

fn format(resource: Resource, v: i64) -> String {
    if resource.is_bytes() {
        binary(v)
    } else {
        decimal(v)
    }
}

/// The container's request of `resource` as its spec writes it ("0" without one).
fn request_text(pod: &Pod, container: &str, resource: Resource) -> String {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container)
        .and_then(|c| {
            c.resources
                .as_ref()?
                .requests
                .as_ref()?
                .get(resource.as_str())
                .cloned()
        })
        .map(|q| q.0)
        .unwrap_or_else(|| "0".into())
}

fn request_value(pod: &Pod, container: &str, resource: Resource) -> i64 {
    let text = request_text(pod, container, resource);
    crate::quantity::parse_quantity(&text)
        .map(|q| q.value().clamp(0, i64::MAX as i128) as i64)
        .unwrap_or(0)
}

/// The message of an eviction for `resource` (`evictionMessage`): "The node was low on
/// resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container c was using
/// 150Mi, request is 0, has larger consumption of memory. "
pub fn node_pressure(
    resource: Resource,
    pod: &Pod,
    stats: Option<&PodStats>,
    settings: &Settings,
    met: &[usize],
    obs: &Observations,
) -> String {
    let mut m = format!("The node was low on resource: {}. ", resource.as_str());
    let info = met.iter().find_map(|i| {
        let t = &settings.thresholds[*i];
        if t.signal.resource() != resource {
            return None;
        }
        let o = obs.get(&t.signal)?;
        Some((t.value.display(o.capacity), o.available))
    });
    if let Some((quantity, available)) = info {
        m += &format!(
            "Threshold quantity: {quantity}, available: {}. ",
            format(resource, available)
        );
    }
    let Some(stats) = stats else {
        return m;
    };
    // Pod-level resources (PodLevelResources): the pod's usage against its pod-level memory
    // request comes first, whatever it is.
    if resource == Resource::Memory && crate::quantity::pod_level_resources_set(pod) {
        let request = crate::quantity::pod_level(pod)
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("memory"));
        if let Some(request) = request {
            m += &format!(
                "Pod {} was using {}, request is {}, has larger consumption of memory. ",
                pod.metadata.name.as_deref().unwrap_or_default(),
                binary(stats.memory_working_set),
                request.0
            );
        }
    }
    for c in &stats.containers {
        let usage = match resource {
            Resource::Memory => Some(c.memory_working_set),
            Resource::EphemeralStorage => Some(c.rootfs_bytes + c.logs_bytes),
            _ => None,
        };
        let Some(usage) = usage else { continue };
        let known = pod.spec.iter().any(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|x| x.name == c.name)
        });
        if known && usage > request_value(pod, &c.name, resource) {
            m += &format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                c.name,
                binary(usage),
                request_text(pod, &c.name, resource),
                resource.as_str()
            );
        }
    }
    m
}

/// "Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". "
pub fn empty_dir(volume: &str, limit: &str) -> String {
    format!("Usage of EmptyDir volume {volume:?} exceeds the limit {limit:?}. ")
}

/// "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi. "
pub fn pod_ephemeral(limit: i64) -> String {
    format!(
        "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
        binary(limit)
    )
}

/// "Container c exceeded its local ephemeral storage limit \"1Mi\". "
pub fn container_ephemeral(container: &str, limit: &str) -> String {
    format!("Container {container} exceeded its local ephemeral storage limit {limit:?}. ")
}
