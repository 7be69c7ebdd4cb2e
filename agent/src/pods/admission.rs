//! The node's admission of a pod, as the kubelet's admit handlers (`lifecycle/predicate.go`)
//! decide it before anything of the pod starts: a refused pod gets phase `Failed` with the
//! handler's reason and "Pod was rejected: <message>", a Warning Event, and never runs.
//!
//! Here: the pod's OS (`spec.os.name`, the `kubernetes.io/os` label) and the node selectors that
//! name another OS or architecture than this node's. The security handlers (sysctls, AppArmor)
//! keep their rules in [`crate::security`] and return the same [`Refusal`].

use k8s_openapi::api::core::v1::Pod;

use crate::security::Refusal;

/// The pod's `kubernetes.io/os` label names another OS than the node's.
pub const POD_OS_SELECTOR_NODE_LABEL_DOES_NOT_MATCH: &str = "PodOSSelectorNodeLabelDoesNotMatch";
/// `spec.os.name` is not the node's OS.
pub const POD_OS_NOT_SUPPORTED: &str = "PodOSNotSupported";
/// The pod's node selector does not match the node (the scheduler's NodeAffinity predicate).
pub const NODE_AFFINITY: &str = "NodeAffinity";

/// The node's OS, as Go's `runtime.GOOS` names it.
pub const NODE_OS: &str = "linux";

/// The node's architecture, as Go's `runtime.GOARCH` names it (the `kubernetes.io/arch` label).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The node's labels that say its OS and architecture, and the value each must have.
fn platform_labels(arch: &str) -> [(&'static str, String); 4] {
    [
        ("kubernetes.io/os", NODE_OS.to_string()),
        ("beta.kubernetes.io/os", NODE_OS.to_string()),
        ("kubernetes.io/arch", arch.to_string()),
        ("beta.kubernetes.io/arch", arch.to_string()),
    ]
}

/// Admits `pod` on a node of architecture `arch` (Go's `GOARCH` name), in the kubelet's order:
/// the OS label, the OS field, then the node selector.
pub fn admit(pod: &Pod, arch: &str) -> Result<(), Refusal> {
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"));
    if label.is_some_and(|os| os != NODE_OS) {
        return Err(Refusal {
            reason: POD_OS_SELECTOR_NODE_LABEL_DOES_NOT_MATCH,
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                .into(),
        });
    }
    let spec = pod.spec.as_ref();
    if spec
        .and_then(|s| s.os.as_ref())
        .is_some_and(|os| os.name != NODE_OS)
    {
        return Err(Refusal {
            reason: POD_OS_NOT_SUPPORTED,
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    let selector = spec.and_then(|s| s.node_selector.as_ref());
    let mismatch = platform_labels(arch).iter().any(|(key, value)| {
        selector
            .and_then(|s| s.get(*key))
            .is_some_and(|v| v != value)
    });
    if mismatch {
        return Err(Refusal {
            reason: NODE_AFFINITY,
            message:
                "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
                    .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        let base = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, uid: u1";
        serde_yaml::from_str(&format!("{base}{yaml}")).expect("test pod parses")
    }

    #[test]
    fn os_and_platform_as_the_kubelet_admits_them() {
        let spec = "\nspec:\n  containers: [{name: a, image: x}]\n";
        let cases: &[(&str, Option<&str>)] = &[
            ("}", None),
            ("}\nspec:\n  os: {name: linux}\n  containers: [{name: a, image: x}]\n", None),
            (
                "}\nspec:\n  os: {name: windows}\n  containers: [{name: a, image: x}]\n",
                Some(POD_OS_NOT_SUPPORTED),
            ),
            (", labels: {kubernetes.io/os: linux}}", None),
            (
                ", labels: {kubernetes.io/os: windows}}",
                Some(POD_OS_SELECTOR_NODE_LABEL_DOES_NOT_MATCH),
            ),
            (
                "}\nspec:\n  nodeSelector: {kubernetes.io/os: linux, kubernetes.io/arch: amd64, disk: ssd}\n  containers: [{name: a, image: x}]\n",
                None,
            ),
            (
                "}\nspec:\n  nodeSelector: {kubernetes.io/os: windows}\n  containers: [{name: a, image: x}]\n",
                Some(NODE_AFFINITY),
            ),
            (
                "}\nspec:\n  nodeSelector: {kubernetes.io/arch: arm64}\n  containers: [{name: a, image: x}]\n",
                Some(NODE_AFFINITY),
            ),
            (
                "}\nspec:\n  nodeSelector: {beta.kubernetes.io/arch: s390x}\n  containers: [{name: a, image: x}]\n",
                Some(NODE_AFFINITY),
            ),
        ];
        for (yaml, want) in cases {
            let text = if yaml.contains("spec:") {
                yaml.to_string()
            } else {
                format!("{yaml}{spec}")
            };
            let got = admit(&pod(&text), "amd64").err().map(|r| r.reason);
            assert_eq!(got, *want, "{text}");
        }
        let r = admit(
            &pod("}\nspec:\n  os: {name: windows}\n  containers: [{name: a, image: x}]\n"),
            "amd64",
        )
        .expect_err("windows");
        assert_eq!(
            r.message,
            "Failed to admit pod as the OS field doesn't match node OS"
        );
        // Another node's architecture is admitted by its own name.
        let arm = "}\nspec:\n  nodeSelector: {kubernetes.io/arch: arm64}\n  containers: [{name: a, image: x}]\n";
        assert_eq!(admit(&pod(arm), "arm64"), Ok(()));
    }
}
