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
