//! The kubelet's security rules, as pure functions of the pod (and the node's settings): which
//! seccomp filter and AppArmor profile each container gets, which sysctls a pod may set and
//! where, and what a pod with its own user namespace may ask. The runtime applies what they
//! decide (`bosun_runtime::seccomp`, `apparmor`, `sandbox::create_with`, `userns`).

pub mod apparmor;
pub mod seccomp;
pub mod sysctl;
pub mod userns;

/// A pod the kubelet's admission refuses: it gets phase `Failed` with this reason and message
/// and nothing of it is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}
