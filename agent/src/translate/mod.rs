//! Pure functions that turn a Pod into the runtime's plain specs, split as the kubelet splits
//! its `kuberuntime` and `cm` packages: [`container`] (the container config: argv, labels,
//! ids, the whole [`bosun_runtime::ContainerSpec`]), [`resources`] (QoS class, cgroup numbers,
//! OOM score), [`env`] (the environment and `$(VAR)` expansion), [`security`] (security
//! context: user, groups, capabilities, signals), [`sandbox`] (the pod sandbox and hostname)
//! and [`mounts`] (volume mounts, volume kinds, block devices).
//!
//! No I/O happens here: everything the agent needs to know about the host (image config, node
//! memory, mounts already prepared) is passed in. The rules follow the kubelet and containerd's
//! CRI plugin closely (argv from command/args and the image, `$(VAR)` expansion, env order, QoS,
//! cgroup numbers, OOM scores, capabilities); each file has its table tests beside it.

pub mod container;
pub mod env;
pub mod mounts;
pub mod resources;
pub mod sandbox;
pub mod security;
#[cfg(test)]
mod testing;

pub use container::*;
pub use env::*;
pub use mounts::*;
pub use resources::*;
pub use sandbox::*;
pub use security::*;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

pub use crate::fieldpath::NodeAllocatable;
pub use crate::quantity::{parse_quantity, ParsedQuantity, QuantityError};

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
    #[error("container {container}: env {name}: {source}")]
    Env {
        container: String,
        name: String,
        #[source]
        source: crate::fieldpath::FieldPathError,
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
    #[error("{source}")]
    EnvSource {
        container: String,
        #[source]
        source: crate::projection::ProjectionError,
    },
    #[error("pod has no spec")]
    NoSpec,
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

/// The pod uses the host's network namespace (the kubelet's `IsHostNetworkPod`).
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Whether an init container is a sidecar (`restartPolicy: Always`): it keeps running beside
/// the regular containers.
pub fn is_sidecar(c: &Container) -> bool {
    RestartPolicy::parse(c.restart_policy.as_deref()) == Some(RestartPolicy::Always)
}

/// A restart policy: the pod's `spec.restartPolicy`, or a sidecar's `restartPolicy: Always`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The policy a field names, `None` when unset or unknown.
    pub fn parse(s: Option<&str>) -> Option<RestartPolicy> {
        match s? {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }

    /// The pod's policy (Always when unset, as the apiserver defaults it).
    pub fn of_pod(pod: &Pod) -> RestartPolicy {
        Self::parse(spec_of(pod).and_then(|s| s.restart_policy.as_deref()))
            .unwrap_or(RestartPolicy::Always)
    }

    /// The policy of the pod's (non-sidecar) init containers: retried on failure unless the pod
    /// never restarts.
    pub fn for_init(self) -> RestartPolicy {
        match self {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}
