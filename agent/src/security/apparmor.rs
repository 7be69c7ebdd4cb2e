//! Which AppArmor profile a container gets and the kubelet's AppArmor admission
//! (`pkg/security/apparmor`, `pkg/kubelet/lifecycle`).
//!
//! The profile: the container's `securityContext.appArmorProfile`, else the deprecated
//! annotation `container.apparmor.security.beta.kubernetes.io/<container>` (static pods may not
//! have had their annotations synced to fields), else the pod's field. What the runtime does
//! with none is containerd's: `RuntimeDefault` unless the container is privileged (privileged
//! containers run unconfined unless they name a Localhost profile).

use bosun_runtime::apparmor::AppArmorProfile;
use k8s_openapi::api::core::v1::{
    AppArmorProfile as Field, Container, EphemeralContainer, Pod, SecurityContext,
};

use super::Refusal;

/// `v1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix`.
pub const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
/// The admission's reason (`lifecycle.AppArmorNotAdmittedReason`).
pub const NOT_ADMITTED_REASON: &str = "AppArmor";

/// The profile the kubelet names for a container (`apparmor.GetProfile`), as a field.
fn field(pod: &Pod, name: &str, sc: Option<&SecurityContext>) -> Option<Field> {
    if let Some(p) = sc.and_then(|s| s.app_armor_profile.clone()) {
        return Some(p);
    }
    if let Some(p) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{ANNOTATION_PREFIX}{name}")))
        .and_then(|v| from_annotation(v))
    {
        return Some(p);
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.app_armor_profile.clone())
}

/// `runtime/default`, `unconfined`, `localhost/<name>`; anything else is no profile.
fn from_annotation(v: &str) -> Option<Field> {
    let f = |t: &str, l: Option<String>| {
        Some(Field {
            type_: t.into(),
            localhost_profile: l,
        })
    };
    match v {
        "runtime/default" => f("RuntimeDefault", None),
        "unconfined" => f("Unconfined", None),
        _ => v
            .strip_prefix("localhost/")
            .and_then(|n| f("Localhost", Some(n.to_string()))),
    }
}

/// The profile of a container (regular, init or sidecar: its name and `securityContext`).
pub fn profile(pod: &Pod, name: &str, sc: Option<&SecurityContext>) -> AppArmorProfile {
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    match field(pod, name, sc) {
        Some(f) if f.type_ == "Localhost" => {
            AppArmorProfile::Localhost(f.localhost_profile.unwrap_or_default())
        }
        Some(f) if f.type_ == "Unconfined" => AppArmorProfile::Unconfined,
        _ if privileged => AppArmorProfile::Unconfined,
        _ => AppArmorProfile::RuntimeDefault,
    }
}

/// Every container of the pod with its name and security context (init, regular, ephemeral).
fn containers(pod: &Pod) -> Vec<(&str, Option<&SecurityContext>)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    fn c(c: &Container) -> (&str, Option<&SecurityContext>) {
        (c.name.as_str(), c.security_context.as_ref())
    }
    fn e(c: &EphemeralContainer) -> (&str, Option<&SecurityContext>) {
        (c.name.as_str(), c.security_context.as_ref())
    }
    let mut out: Vec<(&str, Option<&SecurityContext>)> = Vec::new();
    out.extend(spec.init_containers.iter().flatten().map(c));
    out.extend(spec.containers.iter().map(c));
    out.extend(spec.ephemeral_containers.iter().flatten().map(e));
    out
}

/// Whether the pod asks for AppArmor at all (`isRequired`): a pod or container field that is
/// not `Unconfined`, or (the first such) deprecated annotation that is not `unconfined`.
fn required(pod: &Pod) -> bool {
    let confined = |f: Option<&Field>| f.is_some_and(|f| f.type_ != "Unconfined");
    let spec = pod.spec.as_ref();
    if confined(
        spec.and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.app_armor_profile.as_ref()),
    ) {
        return true;
    }
    if containers(pod)
        .iter()
        .any(|(_, sc)| confined(sc.and_then(|s| s.app_armor_profile.as_ref())))
    {
        return true;
    }
    let mut annotations: Vec<(&String, &String)> =
        pod.metadata.annotations.iter().flatten().collect();
    annotations.sort();
    annotations
        .into_iter()
        .find(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .is_some_and(|(_, v)| v != "unconfined")
}

/// The kubelet's AppArmor admission of a pending pod on a host where AppArmor is `enabled` or
/// not: a pod that asks for a profile is refused on a host without AppArmor, and one with an
/// empty Localhost name anywhere.
pub fn admit(pod: &Pod, enabled: bool) -> Result<(), Refusal> {
    let pending = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    if !pending || !required(pod) {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(Refusal {
            reason: NOT_ADMITTED_REASON,
            message: format!("Cannot enforce AppArmor: {why}"),
        })
    };
    if !enabled {
        return refuse("AppArmor is not enabled on the host".into());
    }
    for (name, sc) in containers(pod) {
        if let Some(f) = field(pod, name, sc) {
            let empty = f
                .localhost_profile
                .as_deref()
                .is_none_or(|n| n.trim().is_empty());
            if f.type_ == "Localhost" && empty {
                return refuse(format!(
                    "invalid empty AppArmor profile name: &{{{:?} {:?}}}",
                    f.type_,
                    f.localhost_profile.unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, PodStatus};
    use std::collections::BTreeMap;

    fn f(t: &str, l: Option<&str>) -> Option<Field> {
        Some(Field {
            type_: t.into(),
            localhost_profile: l.map(String::from),
        })
    }

    fn pod(pod_field: Option<Field>, ctr: Option<Field>, ann: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    app_armor_profile: pod_field,
                    ..Default::default()
                }),
                containers: vec![Container {
                    name: "app".into(),
                    security_context: Some(SecurityContext {
                        app_armor_profile: ctr,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sc(p: &Pod) -> Option<SecurityContext> {
        p.spec
            .as_ref()
            .and_then(|s| s.containers[0].security_context.clone())
    }

    #[test]
    fn container_field_then_annotation_then_pod_field() {
        use AppArmorProfile as P;
        let key = format!("{ANNOTATION_PREFIX}app");
        let cases = [
            (pod(None, None, &[]), P::RuntimeDefault),
            (pod(f("Unconfined", None), None, &[]), P::Unconfined),
            (
                pod(f("Unconfined", None), f("Localhost", Some("k8s-x")), &[]),
                P::Localhost("k8s-x".into()),
            ),
            (
                pod(f("Localhost", Some("pod-p")), None, &[]),
                P::Localhost("pod-p".into()),
            ),
            (
                pod(
                    f("Localhost", Some("pod-p")),
                    None,
                    &[(&key, "localhost/ann-p")],
                ),
                P::Localhost("ann-p".into()),
            ),
            (
                pod(None, f("RuntimeDefault", None), &[(&key, "unconfined")]),
                P::RuntimeDefault,
            ),
            (
                pod(f("Unconfined", None), None, &[(&key, "runtime/default")]),
                P::RuntimeDefault,
            ),
            (
                pod(f("Unconfined", None), None, &[(&key, "bogus")]),
                P::Unconfined,
            ),
            (
                pod(
                    None,
                    None,
                    &[(&format!("{ANNOTATION_PREFIX}other"), "unconfined")],
                ),
                P::RuntimeDefault,
            ),
        ];
        for (i, (p, want)) in cases.into_iter().enumerate() {
            assert_eq!(profile(&p, "app", sc(&p).as_ref()), want, "case {i}");
        }
        let privileged = SecurityContext {
            privileged: Some(true),
            ..Default::default()
        };
        assert_eq!(
            profile(&pod(None, None, &[]), "app", Some(&privileged)),
            P::Unconfined
        );
        let privileged_local = SecurityContext {
            privileged: Some(true),
            app_armor_profile: f("Localhost", Some("p")),
            ..Default::default()
        };
        assert_eq!(
            profile(&pod(None, None, &[]), "app", Some(&privileged_local)),
            P::Localhost("p".into())
        );
    }

    #[test]
    fn admission_on_a_host_without_apparmor() {
        let key = format!("{ANNOTATION_PREFIX}app");
        // Nothing asked, or only Unconfined: admitted anywhere.
        for p in [
            pod(None, None, &[]),
            pod(
                f("Unconfined", None),
                f("Unconfined", None),
                &[(&key, "unconfined")],
            ),
        ] {
            assert_eq!(admit(&p, false), Ok(()));
        }
        let refused = Err(Refusal {
            reason: "AppArmor",
            message: "Cannot enforce AppArmor: AppArmor is not enabled on the host".into(),
        });
        for p in [
            pod(f("RuntimeDefault", None), None, &[]),
            pod(None, f("Localhost", Some("x")), &[]),
            pod(None, None, &[(&key, "runtime/default")]),
        ] {
            assert_eq!(admit(&p, false), refused);
            assert_eq!(admit(&p, true), Ok(()));
        }
        // Only pending pods are checked.
        let mut running = pod(f("RuntimeDefault", None), None, &[]);
        running.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert_eq!(admit(&running, false), Ok(()));
        // An empty Localhost name is refused even where AppArmor is enabled.
        let e = admit(&pod(None, f("Localhost", Some(" ")), &[]), true).expect_err("empty");
        assert_eq!(e.reason, "AppArmor");
        assert!(e
            .message
            .starts_with("Cannot enforce AppArmor: invalid empty AppArmor profile name"));
    }
}
