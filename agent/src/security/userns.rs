//! Pods with `hostUsers: false`: whether a pod gets its own user namespace, the API's rules
//! the kubelet relies on (re-checked here: static pods skip the apiserver), and where
//! `procMount: Unmasked` is allowed.

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};

/// Whether the pod asks for a user namespace of its own (`hostUsers: false`).
pub fn wanted(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_users) == Some(false)
}

/// The API validation of such a pod (`validateHostUsers`, and `procMount: Unmasked` only with
/// `hostUsers: false`), as `field: message` lines; empty when the pod is fine.
pub fn validate(pod: &Pod) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return errs;
    };
    let host_users = !wanted(pod);
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    let mut by_kind: std::collections::HashMap<&str, usize> = Default::default();
    for (kind, c) in containers {
        let i = by_kind.entry(kind).or_insert(0);
        let path = format!("spec.{kind}[{i}]");
        *i += 1;
        if !host_users && c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()) {
            errs.push(format!(
                "{path}.volumeDevices: Forbidden: when `hostUsers` is false"
            ));
        }
        if host_users && unmasked(c.security_context.as_ref()) {
            errs.push(format!(
                "{path}.securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
            ));
        }
    }
    if host_users {
        return errs;
    }
    let fld = "spec.securityContext";
    if spec.host_network == Some(true) {
        errs.insert(
            0,
            format!("{fld}.hostNetwork: Forbidden: when `hostUsers` is false"),
        );
    }
    if spec.host_pid == Some(true) {
        errs.push(format!(
            "{fld}.HostPID: Forbidden: when `hostUsers` is false"
        ));
    }
    if spec.host_ipc == Some(true) {
        errs.push(format!(
            "{fld}.HostIPC: Forbidden: when `hostUsers` is false"
        ));
    }
    errs
}

/// Whether a mount of a pod with its own user namespace is seen through an idmapped view (the
/// pod's files and every volume but `hostPath`; `volume` is `None` for the pod's hosts,
/// hostname and resolv.conf files). The kubelet asks its runtime to idmap every mount; bosun
/// binds hostPath volumes as they are, so that what the pod writes into the host's folders is
/// owned by the pod's mapped IDs there (the first of its range for its root), never by host
/// root. Image volumes are bound as they are too: their view is an overlay, which cannot be
/// idmapped (the image's files show as the overflow ID; readable where their mode lets others
/// read).
pub fn idmapped(pod: &Pod, volume: Option<&str>) -> bool {
    let Some(name) = volume else {
        return true;
    };
    !pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.name == name && (v.host_path.is_some() || v.image.is_some()))
}

/// `procMount: Unmasked` asked.
fn unmasked(sc: Option<&SecurityContext>) -> bool {
    sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked")
}

/// Whether the container's /proc paths stay unmasked: privileged containers, and
/// `procMount: Unmasked` in a pod with its own user namespace (never without one).
pub fn proc_unmasked(pod: &Pod, c: &Container) -> bool {
    let sc = c.security_context.as_ref();
    sc.and_then(|s| s.privileged) == Some(true) || (unmasked(sc) && wanted(pod))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, VolumeDevice};

    fn pod(host_users: Option<bool>, f: impl FnOnce(&mut PodSpec)) -> Pod {
        let mut spec = PodSpec {
            host_users,
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        f(&mut spec);
        Pod {
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn unmasked_sc() -> Option<SecurityContext> {
        Some(SecurityContext {
            proc_mount: Some("Unmasked".into()),
            ..Default::default()
        })
    }

    #[test]
    fn host_namespaces_and_devices_refused_with_a_user_namespace() {
        assert!(wanted(&pod(Some(false), |_| {})));
        assert!(!wanted(&pod(None, |_| {})));
        assert!(!wanted(&pod(Some(true), |_| {})));
        assert!(validate(&pod(Some(false), |_| {})).is_empty());
        let all = pod(Some(false), |s| {
            s.host_network = Some(true);
            s.host_pid = Some(true);
            s.host_ipc = Some(true);
            s.containers[0].volume_devices = Some(vec![VolumeDevice {
                name: "b".into(),
                device_path: "/dev/xvda".into(),
            }]);
        });
        assert_eq!(
            validate(&all),
            [
                "spec.securityContext.hostNetwork: Forbidden: when `hostUsers` is false",
                "spec.containers[0].volumeDevices: Forbidden: when `hostUsers` is false",
                "spec.securityContext.HostPID: Forbidden: when `hostUsers` is false",
                "spec.securityContext.HostIPC: Forbidden: when `hostUsers` is false",
            ]
        );
        // The same host namespaces without hostUsers: false are fine.
        assert!(validate(&pod(None, |s| s.host_network = Some(true))).is_empty());
    }

    #[test]
    fn every_mount_but_host_paths_is_idmapped() {
        let p: Pod = serde_yaml::from_str(
            "spec:\n  hostUsers: false\n  containers: [{name: c}]\n  volumes:\n  - {name: data, emptyDir: {}}\n  - {name: host, hostPath: {path: /srv}}\n  - {name: cm, configMap: {name: x}}\n",
        )
        .expect("pod");
        // (volume, idmapped)
        let cases = [
            (None, true),
            (Some("data"), true),
            (Some("cm"), true),
            (Some("host"), false),
            (Some("unknown"), true),
        ];
        for (volume, want) in cases {
            assert_eq!(idmapped(&p, volume), want, "{volume:?}");
        }
    }

    #[test]
    fn unmasked_proc_only_with_a_user_namespace() {
        let with = pod(Some(false), |s| {
            s.containers[0].security_context = unmasked_sc()
        });
        assert!(validate(&with).is_empty());
        let c = &with.spec.as_ref().expect("spec").containers[0];
        assert!(proc_unmasked(&with, c));
        let without = pod(None, |s| s.containers[0].security_context = unmasked_sc());
        assert_eq!(
            validate(&without),
            ["spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"]
        );
        let c = &without.spec.as_ref().expect("spec").containers[0];
        assert!(!proc_unmasked(&without, c));
        let privileged = Container {
            security_context: Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(proc_unmasked(&without, &privileged));
    }
}
