//! Devices for pods: the kubelet's device plugin API (`deviceplugin/v1beta1`). Plugins register
//! on `<root-dir>/device-plugins/kubelet.sock` ([`manager`]); their devices become the Node's
//! extended resources, and pods asking for them get devices through the plugins' `Allocate`
//! at admission (decided in [`state`], pure), whose env, mounts, device nodes, annotations and
//! CDI device names go into the containers (see [`apply`]).

pub mod manager;
pub mod state;

/// The device plugin API generated from `proto/deviceplugin/v1beta1/api.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("v1beta1");
}

pub use manager::{AllocateError, ContainerDevices, DeviceManager, UNEXPECTED_ADMISSION_ERROR};

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;

/// What the pod workers and the pod manager need of devices: the [`DeviceManager`] on a
/// cluster node, a fake in the worker's unit tests.
pub trait DeviceService: Send + Sync {
    /// Gives every container of `pod` the devices its limits ask for (the kubelet's Allocate at
    /// admission); containers that hold theirs keep them.
    fn allocate<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<(), AllocateError>>;

    /// What the plugins' answers give `container` of the pod `pod_uid`.
    fn container_devices(&self, pod_uid: &str, container: &str) -> ContainerDevices;

    /// The plugins' `PreStartContainer` for the container's devices (those that asked for it).
    fn pre_start<'a>(
        &'a self,
        pod_uid: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<(), AllocateError>>;

    /// Frees the devices of a pod that ended or is gone.
    fn release(&self, pod_uid: &str);

    /// Resource -> what admission counts as the node's allocatable of each device plugin
    /// resource when it admits the pod `pod_uid`: the healthy devices, or the devices held if
    /// more and the pod holds some ([`state::State::admission_allocatable`]).
    fn allocatable(&self, pod_uid: &str) -> BTreeMap<String, i64>;

    /// The devices `container` of the pod `pod_uid` holds: (resource, device ids), in the
    /// order they were allocated (the pod resources API).
    fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)>;

    /// Every device the plugins list, healthy or not, by resource (the pod resources API's
    /// allocatable devices).
    fn devices(&self) -> BTreeMap<String, Vec<String>>;
}

impl DeviceService for DeviceManager {
    fn allocate<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<(), AllocateError>> {
        Box::pin(self.allocate_pod(pod))
    }

    fn container_devices(&self, pod_uid: &str, container: &str) -> ContainerDevices {
        DeviceManager::container_devices(self, pod_uid, container)
    }

    fn pre_start<'a>(
        &'a self,
        pod_uid: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<(), AllocateError>> {
        Box::pin(DeviceManager::pre_start(self, pod_uid, container))
    }

    fn release(&self, pod_uid: &str) {
        self.release_pod(pod_uid);
    }

    fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
        DeviceManager::held(self, pod_uid, container)
    }

    fn devices(&self) -> BTreeMap<String, Vec<String>> {
        DeviceManager::devices(self)
    }

    fn allocatable(&self, pod_uid: &str) -> BTreeMap<String, i64> {
        self.admission_allocatable(pod_uid)
            .into_iter()
            .map(|(r, n)| (r, i64::try_from(n).unwrap_or(i64::MAX)))
            .collect()
    }
}

/// The admission refusal of a pod whose devices could not be allocated: the kubelet's
/// `UnexpectedAdmissionError`, "Allocate failed due to <error>, which is unexpected".
pub fn refusal(e: &AllocateError) -> crate::security::Refusal {
    crate::security::Refusal {
        reason: UNEXPECTED_ADMISSION_ERROR,
        message: e.admission_message(),
    }
}

/// Adds a container's devices to its runtime spec: env (replacing a variable of the same
/// name), bind mounts, device nodes (type and numbers read from the host node; an unreadable
/// one is an error naming it), annotations and CDI device names.
pub fn apply(
    spec: &mut bosun_runtime::ContainerSpec,
    devices: &ContainerDevices,
) -> Result<(), String> {
    for (k, v) in &devices.env {
        spec.env.retain(|(name, _)| name != k);
        spec.env.push((k.clone(), v.clone()));
    }
    for (host, container, ro) in &devices.mounts {
        spec.mounts.push(bosun_runtime::Mount {
            destination: container.into(),
            source: host.into(),
            readonly: *ro,
            propagation: bosun_runtime::Propagation::Private,
        });
    }
    for (host, container, perms) in &devices.devices {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = std::fs::metadata(host).map_err(|e| format!("device {host}: {e}"))?;
        let kind = if md.file_type().is_block_device() {
            "b"
        } else if md.file_type().is_char_device() {
            "c"
        } else {
            return Err(format!("device {host}: not a device node"));
        };
        let rdev = md.rdev();
        spec.devices.push(bosun_runtime::Device {
            container_path: container.clone(),
            kind: kind.into(),
            major: i64::from(nix::sys::stat::major(rdev) as u32),
            minor: i64::from(nix::sys::stat::minor(rdev) as u32),
            access: if perms.is_empty() {
                "rwm".into()
            } else {
                perms.clone()
            },
        });
    }
    spec.labels.extend(
        devices
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    spec.cdi_devices.extend(devices.cdi_devices.iter().cloned());
    Ok(())
}
