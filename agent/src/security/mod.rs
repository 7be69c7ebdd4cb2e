//! The kubelet's security rules, as pure functions of the pod (and the node's settings): which
//! seccomp filter and AppArmor profile each container gets, which sysctls a pod may set and
//! where, and what a pod with its own user namespace may ask. The pod worker asks [`admit`]
//! before anything of a pod is made, [`pod_security`] for its sandbox and
//! [`container_security`] for each container; the runtime applies what they decide
//! (`bosun_runtime::seccomp`, `apparmor`, `sandbox::create_with`, `userns`).

pub mod apparmor;
pub mod seccomp;
pub mod sysctl;
pub mod userns;

use std::path::PathBuf;

use bosun_runtime::userns::IdRange;
use bosun_runtime::{ContainerSecurity, PodSecurity};
use k8s_openapi::api::core::v1::{Container, Pod};

/// A pod the kubelet's admission refuses: it gets phase `Failed` with this reason and message
/// and nothing of it is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// What the node decides security with: its KubeletConfiguration (`seccompDefault`,
/// `allowedUnsafeSysctls`), its root folder and whether its kernel enforces AppArmor.
#[derive(Clone, Debug, Default)]
pub struct NodeSecurity {
    /// The safe sysctls for this kernel plus `allowedUnsafeSysctls`.
    pub sysctls: sysctl::Allowlist,
    /// AppArmor is enabled on the host (`bosun_runtime::apparmor::is_enabled`).
    pub apparmor_enabled: bool,
    /// `seccompDefault`.
    pub seccomp_default: bool,
    /// `<root-dir>/seccomp`: where `Localhost` seccomp profiles are.
    pub seccomp_root: PathBuf,
}

/// The kubelet's admission of a pod by its security fields, in the order of its admit
/// handlers: sysctls, then AppArmor. A refused pod fails (phase `Failed`, this reason and
/// `Pod was rejected: <message>`) and nothing of it is made.
pub fn admit(pod: &Pod, node: &NodeSecurity) -> Result<(), Refusal> {
    node.sysctls.admit(pod)?;
    apparmor::admit(pod, node.apparmor_enabled)
}

/// The security profiles of one container of `pod` (regular, init, sidecar, or ephemeral turned
/// into a container: its own `securityContext` counts): its seccomp filter and AppArmor profile.
/// The error is the kubelet's message for a config it cannot make
/// (`CreateContainerConfigError`).
pub fn container_security(
    pod: &Pod,
    c: &Container,
    node: &NodeSecurity,
) -> Result<ContainerSecurity, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    Ok(ContainerSecurity {
        seccomp: seccomp::profile(pod_sc, sc, node.seccomp_default, &node.seccomp_root)?,
        apparmor: apparmor::profile(pod, &c.name, sc),
        ..ContainerSecurity::default()
    })
}

/// The pod-level security of the pod's sandbox: its sysctls (admitted already) and, with
/// `hostUsers: false`, the host IDs its user namespace maps (`range`, from the node's
/// allocator).
pub fn pod_security(pod: &Pod, range: Option<IdRange>) -> PodSecurity {
    PodSecurity {
        sysctls: sysctl::pod_sysctls(pod),
        user_namespace: range,
    }
}

impl NodeSecurity {
    /// The node's settings: its KubeletConfiguration's `allowedUnsafeSysctls` and
    /// `seccompDefault`, its root folder, the running kernel (major, minor: which safe sysctls
    /// it namespaces) and whether AppArmor is enabled. The error is the kubelet's for a bad
    /// `allowedUnsafeSysctls` entry (the configuration is checked when it is loaded already).
    pub fn new(
        allowed_unsafe_sysctls: &[String],
        seccomp_default: bool,
        root_dir: &std::path::Path,
        kernel: (u32, u32),
        apparmor_enabled: bool,
    ) -> Result<NodeSecurity, String> {
        Ok(NodeSecurity {
            sysctls: sysctl::Allowlist::new(allowed_unsafe_sysctls, kernel)?,
            apparmor_enabled,
            seccomp_default,
            seccomp_root: root_dir.join("seccomp"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_runtime::apparmor::AppArmorProfile;
    use bosun_runtime::seccomp::SeccompProfile;

    fn pod(yaml: &str) -> Pod {
        let base = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, uid: u1}\n";
        serde_yaml::from_str(&format!("{base}{yaml}")).expect("test pod parses")
    }

    fn node(unsafe_sysctls: &[&str], apparmor: bool, seccomp_default: bool) -> NodeSecurity {
        let allowed: Vec<String> = unsafe_sysctls.iter().map(|s| s.to_string()).collect();
        NodeSecurity {
            sysctls: sysctl::Allowlist::new(&allowed, (6, 1)).expect("allowlist"),
            apparmor_enabled: apparmor,
            seccomp_default,
            seccomp_root: "/var/lib/kubelet/seccomp".into(),
        }
    }

    #[test]
    fn admission_sysctls_first_then_apparmor() {
        let both = pod("spec:\n  securityContext:\n    sysctls: [{name: net.core.somaxconn, value: '1'}]\n    appArmorProfile: {type: RuntimeDefault}\n  containers: [{name: c}]\n");
        let sysctl_only = pod("spec:\n  securityContext:\n    sysctls: [{name: net.core.somaxconn, value: '1'}]\n  containers: [{name: c}]\n");
        let apparmor_only = pod("spec:\n  containers:\n  - name: c\n    securityContext: {appArmorProfile: {type: Localhost, localhostProfile: p}}\n");
        let plain = pod("spec:\n  securityContext:\n    sysctls: [{name: net.ipv4.ping_group_range, value: '0 1'}]\n  containers: [{name: c}]\n");
        let forbidden = |m: &str| {
            Err(Refusal {
                reason: "SysctlForbidden",
                message: format!("forbidden sysctl: \"{m}\" not allowlisted"),
            })
        };
        let no_apparmor = Err(Refusal {
            reason: "AppArmor",
            message: "Cannot enforce AppArmor: AppArmor is not enabled on the host".into(),
        });
        // (pod, node, answer)
        let cases = [
            (
                &both,
                node(&[], false, false),
                forbidden("net.core.somaxconn"),
            ),
            (
                &both,
                node(&["net.core.*"], false, false),
                no_apparmor.clone(),
            ),
            (&both, node(&["net.core.*"], true, false), Ok(())),
            (
                &sysctl_only,
                node(&[], true, false),
                forbidden("net.core.somaxconn"),
            ),
            (
                &sysctl_only,
                node(&["net.core.somaxconn"], false, false),
                Ok(()),
            ),
            (&apparmor_only, node(&[], false, false), no_apparmor),
            (&apparmor_only, node(&[], true, false), Ok(())),
            (&plain, node(&[], false, false), Ok(())),
        ];
        for (i, (p, n, want)) in cases.into_iter().enumerate() {
            assert_eq!(admit(p, &n), want, "case {i}");
        }
    }

    #[test]
    fn each_container_gets_its_own_profiles() {
        let p = pod("spec:\n  securityContext:\n    seccompProfile: {type: RuntimeDefault}\n  initContainers:\n  - {name: init}\n  containers:\n  - name: local\n    securityContext: {seccompProfile: {type: Localhost, localhostProfile: deny.json}, appArmorProfile: {type: Unconfined}}\n  - name: open\n    securityContext: {seccompProfile: {type: Unconfined}}\n  - name: bad\n    securityContext: {seccompProfile: {type: Localhost}}\n  ephemeralContainers:\n  - name: dbg\n    securityContext: {seccompProfile: {type: Unconfined}, appArmorProfile: {type: Localhost, localhostProfile: dbg}}\n");
        let n = node(&[], true, false);
        let spec = p.spec.as_ref().expect("spec");
        let c = |name: &str| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
                .cloned()
                .expect("container")
        };
        let sec = |c: &Container| container_security(&p, c, &n);
        let want = |seccomp, apparmor| {
            Ok(ContainerSecurity {
                seccomp,
                apparmor,
                ..Default::default()
            })
        };
        assert_eq!(
            sec(&c("init")),
            want(
                SeccompProfile::RuntimeDefault,
                AppArmorProfile::RuntimeDefault
            )
        );
        assert_eq!(
            sec(&c("local")),
            want(
                SeccompProfile::Localhost("/var/lib/kubelet/seccomp/deny.json".into()),
                AppArmorProfile::Unconfined
            )
        );
        assert_eq!(
            sec(&c("open")),
            want(SeccompProfile::Unconfined, AppArmorProfile::RuntimeDefault)
        );
        assert_eq!(sec(&c("bad")), Err(seccomp::LOCALHOST_UNSET.to_string()));
        // An ephemeral container, turned into a container as the worker runs it (its fields
        // are a container's), keeps its own.
        let e = &spec.ephemeral_containers.as_ref().expect("ephemeral")[0];
        let dbg: Container =
            serde_json::from_value(serde_json::to_value(e).expect("json")).expect("converts");
        assert_eq!(
            sec(&dbg),
            want(
                SeccompProfile::Unconfined,
                AppArmorProfile::Localhost("dbg".into())
            )
        );
        // seccompDefault gives RuntimeDefault to a pod that names nothing.
        let bare = pod("spec:\n  containers: [{name: c}]\n");
        let c0 = &bare.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            container_security(&bare, c0, &node(&[], false, true)).map(|s| s.seccomp),
            Ok(SeccompProfile::RuntimeDefault)
        );
        assert_eq!(
            container_security(&bare, c0, &n).map(|s| s.seccomp),
            Ok(SeccompProfile::Unconfined)
        );
    }

    #[test]
    fn the_sandbox_gets_the_sysctls_and_the_range() {
        let p = pod("spec:\n  hostUsers: false\n  securityContext:\n    sysctls: [{name: net/ipv4/ip_local_port_range, value: '1024 2048'}, {name: kernel.shm_rmid_forced, value: '1'}]\n  containers: [{name: c}]\n");
        let range = IdRange {
            first: 65536,
            len: 65536,
        };
        assert_eq!(
            pod_security(&p, Some(range)),
            PodSecurity {
                sysctls: vec![
                    ("net.ipv4.ip_local_port_range".into(), "1024 2048".into()),
                    ("kernel.shm_rmid_forced".into(), "1".into()),
                ],
                user_namespace: Some(range),
            }
        );
        assert_eq!(
            pod_security(&pod("spec:\n  containers: [{name: c}]\n"), None),
            PodSecurity::default()
        );
    }
}
