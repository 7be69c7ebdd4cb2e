//! The pod sandbox: its identity, hostname, host namespaces, QoS and pod cgroup, and the ids of
//! the pod's containers.

use bosun_runtime::SandboxSpec;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use sha2::{Digest, Sha256};

use super::*;

const HOSTNAME_MAX_LEN: usize = 63;

/// The pod's hostname: spec.hostnameOverride, else spec.hostname, else the pod name; cut to
/// 63 characters with trailing '-' and '.' trimmed (kubelet `truncatePodHostnameIfNeeded`).
pub fn pod_hostname(pod: &Pod) -> String {
    let spec = spec_of(pod);
    let chosen = spec
        .and_then(|s| s.hostname_override.as_deref())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            spec.and_then(|s| s.hostname.as_deref())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| pod.metadata.name.as_deref().unwrap_or(""));
    if chosen.len() <= HOSTNAME_MAX_LEN {
        return chosen.to_string();
    }
    let mut cut = HOSTNAME_MAX_LEN;
    while !chosen.is_char_boundary(cut) {
        cut -= 1;
    }
    chosen[..cut].trim_end_matches(['-', '.']).to_string()
}

/// The sandbox of a pod: identity, hostname, host namespaces, QoS and the pod cgroup.
pub fn sandbox_spec(pod: &Pod) -> SandboxSpec {
    let spec = spec_of(pod);
    let flag = |f: fn(&PodSpec) -> Option<bool>| spec.and_then(f).unwrap_or(false);
    SandboxSpec {
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        hostname: pod_hostname(pod),
        host_network: flag(|s| s.host_network),
        host_ipc: flag(|s| s.host_ipc),
        host_pid: flag(|s| s.host_pid),
        share_pid: flag(|s| s.share_process_namespace),
        qos: qos_class(pod),
        resources: pod_resources(pod),
        shm_size: None,
    }
}

/// A unique id for one run of a container: `<pod uid>_<container>_<attempt>`.
///
/// Only `[A-Za-z0-9_.+-]` is valid for libcontainer; the pod uid (a UUID, or the 32 hex chars of
/// a static pod) and the container name (a DNS label) are kept when they fit, else replaced by a
/// hash so that ids stay unique. '_' never appears in either part, so the id is unambiguous.
pub fn container_id(pod_uid: &str, container: &str, attempt: u32) -> String {
    format!(
        "{}{}_{attempt}",
        container_id_prefix(pod_uid),
        id_part(container, 63)
    )
}

/// The prefix every container id of a pod starts with (`<pod uid>_`).
pub fn container_id_prefix(pod_uid: &str) -> String {
    format!("{}_", id_part(pod_uid, 64))
}

fn id_part(s: &str, max: usize) -> String {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'+');
    if ok {
        s.to_string()
    } else {
        let digest = Sha256::digest(s.as_bytes());
        format!("h{}", &hex::encode(digest)[..31])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::testing::*;
    use bosun_runtime::QosClass;

    // --- sandbox ---------------------------------------------------------------------------------

    #[test]
    fn hostname_rules() {
        let mk = |name: &str, hostname: Option<&str>| {
            let mut p = pod_res(&[("", "")], &[]);
            p.metadata.name = Some(name.to_string());
            p.spec.as_mut().unwrap().hostname = hostname.map(String::from);
            p
        };
        assert_eq!(pod_hostname(&mk("web", None)), "web");
        assert_eq!(pod_hostname(&mk("web", Some("h1"))), "h1");
        assert_eq!(pod_hostname(&mk("web", Some(""))), "web");
        let long = "a".repeat(70);
        assert_eq!(pod_hostname(&mk(&long, None)), "a".repeat(63));
        let exact = "b".repeat(63);
        assert_eq!(pod_hostname(&mk(&exact, None)), exact);
        // Cut at 63, then trailing '-' and '.' trimmed.
        let tricky = format!("{}-.-{}", "c".repeat(60), "d".repeat(10));
        assert_eq!(pod_hostname(&mk(&tricky, None)), "c".repeat(60));
        let dotted = format!("{}.{}", "e".repeat(62), "f".repeat(10));
        assert_eq!(pod_hostname(&mk(&dotted, None)), "e".repeat(62));
    }

    #[test]
    fn sandbox_spec_flags() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: ns, uid: abc}\nspec:\n  hostNetwork: true\n  hostPID: true\n  shareProcessNamespace: true\n  containers: [{name: a, image: x}]\n",
        );
        let s = sandbox_spec(&p);
        assert_eq!(s.pod_uid, "abc");
        assert_eq!(s.namespace, "ns");
        assert_eq!(s.name, "web");
        assert_eq!(s.hostname, "web");
        assert!(s.host_network && s.host_pid && s.share_pid && !s.host_ipc);
        assert_eq!(s.qos, QosClass::BestEffort);
        assert_eq!(s.resources.cpu_shares, Some(2));
    }

    #[test]
    fn container_ids_are_valid_and_unique() {
        let valid = |id: &str| {
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
        };
        let a = container_id("0f3c1c1e-8f7a-4b9e-9d3b-6f1d2c3b4a5e", "web", 0);
        assert_eq!(a, "0f3c1c1e-8f7a-4b9e-9d3b-6f1d2c3b4a5e_web_0");
        assert!(valid(&a));
        assert_ne!(container_id("a-b", "c", 0), container_id("a", "b-c", 0));
        assert_ne!(container_id("u", "web", 1), container_id("u", "web", 10));
        let odd = container_id("uid/with space", "na_me", 3);
        assert!(valid(&odd), "{odd}");
        assert_ne!(odd, container_id("uid/with spacf", "na_me", 3));
        let long = container_id(&"u".repeat(36), &"n".repeat(63), u32::MAX);
        assert!(long.len() <= 36 + 63 + 12, "{}", long.len());
    }
}
