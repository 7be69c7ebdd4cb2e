//! Field paths of the downward API: `fieldRef` (`metadata.name`, `metadata.labels['x']`,
//! `status.podIP`, ...) and `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) of a pod,
//! as the kubelet's `pkg/fieldpath` and `ExtractResourceValueByContainerName` answer them. Both
//! the environment (`translate::env`) and downwardAPI volumes (`projection`) read them here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use crate::quantity::{ceil_div, container_res, parse_quantity, quantity_in, ParsedQuantity};

/// What the node offers, for `resourceFieldRef` of unset limits (the kubelet uses allocatable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
}

impl NodeAllocatable {
    /// The defaults of unset limits for `pod`: its pod-level cpu and memory limits where it has
    /// them (not zero), the node's allocatable otherwise.
    pub fn with_pod_level_limits(self, pod: &Pod) -> NodeAllocatable {
        if !crate::quantity::pod_level_limits_set(pod) {
            return self;
        }
        let limit = |name| crate::quantity::pod_level_limit(pod, name).filter(|v| *v > 0);
        NodeAllocatable {
            cpu_millis: limit("cpu")
                .map_or(self.cpu_millis, |v| v.clamp(0, u64::MAX as i128) as u64),
            memory_bytes: limit("memory").map_or(self.memory_bytes, |v| {
                ceil_div(v, 1000).clamp(0, u64::MAX as i128) as u64
            }),
        }
    }
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

/// A field path that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    #[error("unsupported fieldRef apiVersion {0:?}")]
    ApiVersion(String),
    #[error("unsupported fieldRef fieldPath {0:?}")]
    FieldPath(String),
    #[error("container {0:?} not found in pod")]
    NoContainer(String),
    #[error("divisor {value:?}: {source}")]
    Divisor {
        value: String,
        #[source]
        source: crate::quantity::QuantityError,
    },
    #[error("limits.ephemeral-storage is unset and the node's allocatable ephemeral storage is not known")]
    EphemeralStorage,
    #[error("unsupported resourceFieldRef resource {0:?}")]
    Resource(String),
}

/// The value of a downward API `fieldRef`, like the kubelet's `podFieldSelectorRuntimeValue`.
pub fn field_ref_value(pod: &Pod, sel: &ObjectFieldSelector) -> Result<String, FieldPathError> {
    if let Some(v) = sel.api_version.as_deref().filter(|v| !v.is_empty()) {
        if v != "v1" {
            return Err(FieldPathError::ApiVersion(v.to_string()));
        }
    }
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
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
                return Err(FieldPathError::FieldPath(other.to_string()));
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
) -> Result<String, FieldPathError> {
    let target = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => containers(pod)
            .iter()
            .chain(init_containers(pod))
            .find(|c| c.name == name)
            .ok_or_else(|| FieldPathError::NoContainer(name.to_string()))?,
    };
    let divisor = match &sel.divisor {
        Some(q) => parse_quantity(&q.0).map_err(|source| FieldPathError::Divisor {
            value: q.0.clone(),
            source,
        })?,
        None => ParsedQuantity::from_milli(1000),
    };
    let divisor = if divisor.is_zero() {
        ParsedQuantity::from_milli(1000)
    } else {
        divisor
    };
    // A pod with pod-level limits: they, not the node's allocatable, stand for the limits its
    // containers do not set (the kubelet's `defaultPodLimitsForDownwardAPI`).
    let node = node.with_pod_level_limits(pod);
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
            _ => return Err(FieldPathError::EphemeralStorage),
        },
        "requests.ephemeral-storage" => bytes(
            raw(false, "ephemeral-storage")
                .or_else(|| raw(true, "ephemeral-storage"))
                .unwrap_or(0),
        ),
        other => {
            if let Some(name) = other
                .strip_prefix("limits.")
                .filter(|n| n.starts_with("hugepages-"))
            {
                bytes(raw(true, name).unwrap_or(0))
            } else if let Some(name) = other
                .strip_prefix("requests.")
                .filter(|n| n.starts_with("hugepages-"))
            {
                bytes(raw(false, name).or_else(|| raw(true, name)).unwrap_or(0))
            } else {
                return Err(FieldPathError::Resource(other.to_string()));
            }
        }
    })
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn unset_limits_default_to_pod_level_limits_then_the_node() {
        let node = NodeAllocatable {
            memory_bytes: 8 << 30,
            cpu_millis: 4000,
        };
        let p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  resources: {limits: {cpu: 500m, memory: 256Mi}}\n  containers:\n  - {name: a, image: x}\n  - {name: b, image: x, resources: {limits: {memory: 64Mi}}}\n");
        let value = |c: usize, res: &str| {
            let sel = ResourceFieldSelector {
                resource: res.into(),
                ..Default::default()
            };
            let cs = &p.spec.as_ref().unwrap().containers;
            resource_field_value(&p, &cs[c], &sel, node).unwrap()
        };
        assert_eq!(value(0, "limits.cpu"), "1");
        assert_eq!(value(0, "limits.memory"), (256u64 << 20).to_string());
        // Its own limit wins.
        assert_eq!(value(1, "limits.memory"), (64u64 << 20).to_string());
        // Only the pod-level limits that exist replace the node's.
        let cpu_only = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  resources: {limits: {cpu: \"2\"}}\n  containers: [{name: a, image: x}]\n");
        assert_eq!(
            node.with_pod_level_limits(&cpu_only),
            NodeAllocatable {
                memory_bytes: 8 << 30,
                cpu_millis: 2000
            }
        );
        // Pod-level requests only: the node's allocatable.
        let req = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  resources: {requests: {cpu: \"2\"}}\n  containers: [{name: a, image: x}]\n");
        assert_eq!(node.with_pod_level_limits(&req), node);
    }
}
