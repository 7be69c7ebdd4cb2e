//! Which seccomp filter a container gets (the kubelet's `getSeccompProfile`): the container's
//! `securityContext.seccompProfile`, else the pod's, else `RuntimeDefault` with the
//! KubeletConfiguration's `seccompDefault` and `Unconfined` without. `Localhost` profiles are
//! files below `<root-dir>/seccomp/`. Privileged containers run without a filter (containerd
//! ignores the profile of a privileged container).

use std::path::{Component, Path};

use bosun_runtime::seccomp::SeccompProfile;
use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

/// The kubelet's message when `Localhost` names no file.
pub const LOCALHOST_UNSET: &str =
    "localhostProfile must be set if seccompProfile type is Localhost.";

/// The filter of a container (regular, init, sidecar or ephemeral: pass its
/// `securityContext`). `profile_root` is `<root-dir>/seccomp`. The error is the kubelet's
/// message (a `CreateContainerConfigError`).
pub fn profile(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    seccomp_default: bool,
    profile_root: &Path,
) -> Result<SeccompProfile, String> {
    if container.and_then(|c| c.privileged) == Some(true) {
        return Ok(SeccompProfile::Unconfined);
    }
    let field = container
        .and_then(|c| c.seccomp_profile.as_ref())
        .or_else(|| pod.and_then(|p| p.seccomp_profile.as_ref()));
    let Some(field) = field else {
        return Ok(if seccomp_default {
            SeccompProfile::RuntimeDefault
        } else {
            SeccompProfile::Unconfined
        });
    };
    match field.type_.as_str() {
        "RuntimeDefault" => Ok(SeccompProfile::RuntimeDefault),
        "Localhost" => {
            let name = field.localhost_profile.as_deref().unwrap_or("");
            if name.is_empty() {
                return Err(LOCALHOST_UNSET.to_string());
            }
            // The API refuses these; a static pod is not validated by it.
            let rel = Path::new(name);
            if rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
                return Err(format!(
                    "localhostProfile {name:?} must be a relative path below the seccomp profile root without '..'"
                ));
            }
            Ok(SeccompProfile::Localhost(profile_root.join(rel)))
        }
        _ => Ok(SeccompProfile::Unconfined),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::SeccompProfile as Field;
    use std::path::PathBuf;

    fn field(t: &str, l: Option<&str>) -> Option<Field> {
        Some(Field {
            type_: t.into(),
            localhost_profile: l.map(String::from),
        })
    }

    /// Pod context, container context, seccompDefault, the profile.
    type Case = (
        Option<PodSecurityContext>,
        Option<SecurityContext>,
        bool,
        Result<SeccompProfile, String>,
    );

    #[test]
    fn container_over_pod_over_the_node_default() {
        let root = Path::new("/var/lib/kubelet/seccomp");
        let pod = |f| PodSecurityContext {
            seccomp_profile: f,
            ..Default::default()
        };
        let ctr = |f, privileged| SecurityContext {
            seccomp_profile: f,
            privileged,
            ..Default::default()
        };
        use SeccompProfile as P;
        let local = |p: &str| P::Localhost(PathBuf::from("/var/lib/kubelet/seccomp").join(p));
        let cases: Vec<Case> = vec![
            (None, None, false, Ok(P::Unconfined)),
            (None, None, true, Ok(P::RuntimeDefault)),
            (
                Some(pod(None)),
                Some(ctr(None, None)),
                true,
                Ok(P::RuntimeDefault),
            ),
            (
                Some(pod(field("RuntimeDefault", None))),
                None,
                false,
                Ok(P::RuntimeDefault),
            ),
            (
                Some(pod(field("Unconfined", None))),
                None,
                true,
                Ok(P::Unconfined),
            ),
            (
                Some(pod(field("RuntimeDefault", None))),
                Some(ctr(field("Unconfined", None), None)),
                false,
                Ok(P::Unconfined),
            ),
            (
                Some(pod(field("Unconfined", None))),
                Some(ctr(
                    field("Localhost", Some("profiles/deny-mkdir.json")),
                    None,
                )),
                false,
                Ok(local("profiles/deny-mkdir.json")),
            ),
            (
                Some(pod(field("Localhost", Some("a.json")))),
                None,
                false,
                Ok(local("a.json")),
            ),
            (
                None,
                Some(ctr(field("Localhost", None), None)),
                false,
                Err(LOCALHOST_UNSET.into()),
            ),
            (
                None,
                Some(ctr(field("Localhost", Some("")), None)),
                false,
                Err(LOCALHOST_UNSET.into()),
            ),
            (
                Some(pod(field("RuntimeDefault", None))),
                Some(ctr(None, Some(true))),
                true,
                Ok(P::Unconfined),
            ),
        ];
        for (i, (p, c, default, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                profile(p.as_ref(), c.as_ref(), default, root),
                want,
                "case {i}"
            );
        }
        for bad in ["../etc/x.json", "/etc/x.json", "a/../../b"] {
            assert!(profile(
                None,
                Some(&ctr(field("Localhost", Some(bad)), None)),
                false,
                root
            )
            .is_err());
        }
    }
}
