//! A container's environment as the kubelet makes it (`makeEnvironmentVariables`): `envFrom`,
//! `env` with `$(VAR)` expansion, field and resource refs, service links, merged over the
//! image's environment like containerd.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;
use crate::fieldpath::{field_ref_value, resource_field_value, NodeAllocatable};
use crate::projection::ApiObjects;

/// Kubernetes' `expansion.Expand`: `$(NAME)` is replaced by `mapping(NAME)`, `$$` is an escaped
/// `$`, an unterminated `$(` or a `$` before anything else is kept as written.
pub fn expand(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance;
            match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    advance = 1;
                }
                b'(' => match rest[1..].find(')') {
                    Some(end) => {
                        out.push_str(&mapping(&rest[1..1 + end]));
                        advance = end + 2;
                    }
                    None => {
                        out.push_str("$(");
                        advance = 1;
                    }
                },
                _ => {
                    // Keep the '$' and the whole next character.
                    let ch_len = rest.chars().next().map(char::len_utf8).unwrap_or(1);
                    out.push('$');
                    out.push_str(&rest[..ch_len]);
                    advance = ch_len;
                }
            }
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// `expansion.MappingFuncFor`: defined names map to their value, others stay `$(NAME)`.
pub(crate) fn mapping_for<'a>(
    vars: &'a HashMap<String, String>,
) -> impl FnMut(&str) -> String + 'a {
    move |name| match vars.get(name) {
        Some(v) => v.clone(),
        None => format!("$({name})"),
    }
}

/// The container's own environment (pod env only, no image env), in order, each value expanded
/// against the ones defined before it, like the kubelet's `makeEnvironmentVariables`.
/// A name defined twice keeps its first position and its last value.
///
/// `objects`: the configMaps and secrets the pod refers to (cluster mode); `None` in standalone
/// mode, where `envFrom` and key refs are refused. `envFrom` comes first, like the kubelet's.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    node: NodeAllocatable,
    objects: Option<&ApiObjects>,
) -> Result<Vec<(String, String)>, TranslateError> {
    let cname = &container.name;
    let unsupported = |what: String| TranslateError::Unsupported {
        container: cname.clone(),
        what,
    };
    let config_err = |source| TranslateError::EnvSource {
        container: cname.clone(),
        source,
    };
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    match objects {
        None => {
            for from in container.env_from.iter().flatten() {
                if from.config_map_ref.is_some() {
                    return Err(unsupported("envFrom configMapRef".into()));
                }
                if from.secret_ref.is_some() {
                    return Err(unsupported("envFrom secretRef".into()));
                }
            }
        }
        Some(o) => {
            // Service links are the base: usable in $(VAR), overridden by the pod's own.
            vars.extend(o.service_env.iter().cloned());
            for (k, v) in crate::projection::env_from(pod, container, o).map_err(config_err)? {
                order.push(k.clone());
                vars.insert(k, v);
            }
        }
    }
    for var in container.env.iter().flatten() {
        let env_err = |source| TranslateError::Env {
            container: cname.clone(),
            name: var.name.clone(),
            source,
        };
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => expand(v, mapping_for(&vars)),
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_ref_value(pod, f).map_err(env_err)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field_value(pod, container, r, node).map_err(env_err)?
                } else if from.config_map_key_ref.is_some() || from.secret_key_ref.is_some() {
                    let Some(o) = objects else {
                        let what = if from.config_map_key_ref.is_some() {
                            "configMapKeyRef"
                        } else {
                            "secretKeyRef"
                        };
                        return Err(unsupported(format!("env {}: {what}", var.name)));
                    };
                    match crate::projection::env_key_ref(pod, from, o).map_err(config_err)? {
                        Some(v) => v,
                        // Optional and missing: the variable is not set at all.
                        None => continue,
                    }
                } else if from.file_key_ref.is_some() {
                    return Err(unsupported(format!("env {}: fileKeyRef", var.name)));
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        if !order.contains(&var.name) {
            order.push(var.name.clone());
        }
        vars.insert(var.name.clone(), value);
    }
    let mut out: Vec<(String, String)> = order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect();
    // Then the service variables the pod did not set itself.
    for (k, v) in objects.iter().flat_map(|o| o.service_env.iter()) {
        if !out.iter().any(|(name, _)| name == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// containerd's `replaceOrAppendEnvValues`: image env first, a pod variable of the same name
/// replaces the image's in place, new ones are appended in order.
pub(crate) fn merge_env(
    image_env: &[String],
    pod_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut upsert = |k: &str, v: &str| match out.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        upsert(k, v);
    }
    for (k, v) in pod_env {
        upsert(k, v);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::testing::*;
    use k8s_openapi::api::core::v1::ObjectFieldSelector;
    use std::collections::BTreeMap;

    // --- expansion -------------------------------------------------------------------------------

    #[test]
    fn expansion_edge_cases() {
        let vars: HashMap<String, String> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // Cases from Kubernetes' expand_test.go.
        let cases: &[(&str, &str)] = &[
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$", "$"),
            ("$$", "$"),
            ("foo$", "foo$"),
            ("$foo", "$foo"),
            ("$(", "$("),
            ("$()", "$()"),
            ("$()$(VAR_A)", "$()A"),
            ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
            ("$(VAR_A)$(VAR_B", "A$(VAR_B"),
            ("$(\u{e9})", "$(\u{e9})"),
            ("x$\u{e9}y", "x$\u{e9}y"),
            ("plain", "plain"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, mapping_for(&vars)), *want, "{input:?}");
        }
    }

    #[test]
    fn expansion_dollar_paren_inner_not_nested() {
        // `$(VAR_A$(VAR_B))`: name is "VAR_A$(VAR_B", undefined, so kept; the ")" follows.
        let vars: HashMap<String, String> = [("VAR_A$(VAR_B".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(VAR_A$(VAR_B))", mapping_for(&vars)), "x)");
    }

    #[test]
    fn env_override_order_and_expansion() {
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: A, value: a}\n- {name: IMG, value: pod-$(A)}\n- {name: B, value: $(A)-$(C)-$(PATH)}\n- {name: C, value: c}\n- {name: A, value: again-$(A)}\n- {name: D, value: $(C)$$(A)}\ncommand: [/bin/echo, $(A), $(B)]\nargs: [$(C), $(MISSING), $$(A)]",
        );
        let s = f.spec().unwrap();
        assert_eq!(
            env_of(&s),
            pairs(&[
                ("PATH", "/usr/bin:/bin"),
                ("IMG", "pod-a"),
                ("HOME", "/root"),
                ("A", "again-a"),
                // C is not yet defined and image env is not visible to expansion.
                ("B", "a-$(C)-$(PATH)"),
                ("C", "c"),
                ("D", "c$(A)"),
            ])
        );
        assert_eq!(
            s.args,
            v(&[
                "/bin/echo",
                "again-a",
                "a-$(C)-$(PATH)",
                "c",
                "$(MISSING)",
                "$(A)"
            ])
        );
    }

    #[test]
    fn field_refs() {
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n- {name: NS, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}}\n- {name: U, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}\n- {name: L, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}\n- {name: LM, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['nope']\"}}}\n- {name: AN, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['note']\"}}}\n- {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n- {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}\n- {name: HIP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n- {name: PIP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n- {name: X, value: $(N).$(NS)}",
        );
        let s = f.spec().unwrap();
        let got: BTreeMap<_, _> = s.env.into_iter().collect();
        assert_eq!(got["N"], "web");
        assert_eq!(got["NS"], "ns");
        assert_eq!(got["U"], "uid-1");
        assert_eq!(got["L"], "web");
        assert_eq!(got["LM"], "");
        assert_eq!(got["AN"], "hello");
        assert_eq!(got["NODE"], "node-1");
        assert_eq!(got["SA"], "sa");
        assert_eq!(got["HIP"], "");
        assert_eq!(got["PIP"], "");
        assert_eq!(got["X"], "web.ns");

        let mut f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: HIP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n- {name: PIP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n- {name: PIPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}",
        );
        f.pod.status = Some(
            serde_yaml::from_str(
                "hostIP: 10.0.0.1\npodIP: 10.1.0.5\npodIPs: [{ip: 10.1.0.5}, {ip: \"fd00::5\"}]",
            )
            .unwrap(),
        );
        let got: BTreeMap<_, _> = f.spec().unwrap().env.into_iter().collect();
        assert_eq!(got["HIP"], "10.0.0.1");
        assert_eq!(got["PIP"], "10.1.0.5");
        assert_eq!(got["PIPS"], "10.1.0.5,fd00::5");
    }

    #[test]
    fn field_ref_whole_maps_and_errors() {
        let p = Fixture::new("name: app\nimage: x").pod;
        let sel = |path: &str| ObjectFieldSelector {
            api_version: None,
            field_path: path.to_string(),
        };
        assert_eq!(
            field_ref_value(&p, &sel("metadata.labels")).unwrap(),
            "app=\"web\"\ntier=\"front\""
        );
        assert!(field_ref_value(&p, &sel("spec.containers")).is_err());
        let bad_version = ObjectFieldSelector {
            api_version: Some("v2".into()),
            field_path: "metadata.name".into(),
        };
        assert!(field_ref_value(&p, &bad_version).is_err());
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: Z, valueFrom: {fieldRef: {fieldPath: status.phase}}}",
        );
        assert!(matches!(f.spec(), Err(TranslateError::Env { .. })));
    }

    #[test]
    fn resource_field_refs() {
        let f = Fixture::new(
            "name: app\nimage: x\nresources:\n  requests: {cpu: 250m, memory: 64Mi}\n  limits: {cpu: \"1.5\", memory: 128Mi}\nenv:\n- {name: LC, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n- {name: LCM, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}\n- {name: RC, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}\n- {name: RCM, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}\n- {name: LM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}\n- {name: LMI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n- {name: RM, valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1Gi}}}\n- {name: Z, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: \"0\"}}}",
        );
        let got: BTreeMap<_, _> = f.spec().unwrap().env.into_iter().collect();
        assert_eq!(got["LC"], "2");
        assert_eq!(got["LCM"], "1500");
        assert_eq!(got["RC"], "1");
        assert_eq!(got["RCM"], "250");
        assert_eq!(got["LM"], "134217728");
        assert_eq!(got["LMI"], "128");
        assert_eq!(got["RM"], "1");
        assert_eq!(got["Z"], "2");

        // Unset limits resolve to the node's allocatable.
        let f = Fixture::new(
            "name: app\nimage: x\nenv:\n- {name: LC, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n- {name: LM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n- {name: RC, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}",
        );
        let got: BTreeMap<_, _> = f.spec().unwrap().env.into_iter().collect();
        assert_eq!(got["LC"], "4");
        assert_eq!(got["LM"], "8192");
        assert_eq!(got["RC"], "0");
    }

    #[test]
    fn cluster_env_from_config_maps_and_secrets() {
        let p = pod(r#"
metadata: {name: w, namespace: ns}
spec:
  containers:
  - name: c
    image: x
    envFrom: [{configMapRef: {name: cm}, prefix: P_}]
    env:
    - {name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}
    - {name: B, value: "$(P_x)-$(A)"}
    - {name: GONE, valueFrom: {configMapKeyRef: {name: cm, key: nope, optional: true}}}
    - {name: P_x, value: override}
"#);
        let mut o = ApiObjects::default();
        let cm = k8s_openapi::api::core::v1::ConfigMap {
            data: Some([("x".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        o.config_maps.insert("cm".into(), Some(cm));
        let s = k8s_openapi::api::core::v1::Secret {
            data: Some([("k".to_string(), k8s_openapi::ByteString(b"sec".to_vec()))].into()),
            ..Default::default()
        };
        o.secrets.insert("s".into(), Some(s));
        o.service_env = vec![
            ("A".into(), "from-service".into()),
            ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()),
        ];
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = container_env(&p, c, NodeAllocatable::default(), Some(&o)).unwrap();
        assert_eq!(
            env,
            [
                ("P_x".to_string(), "override".to_string()),
                ("A".into(), "sec".into()),
                ("B".into(), "1-sec".into()),
                ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()),
            ]
        );
        o.secrets.insert("s".into(), None);
        let e = container_env(&p, c, NodeAllocatable::default(), Some(&o)).unwrap_err();
        assert_eq!(e.to_string(), "secret \"s\" not found");
        assert!(matches!(e, TranslateError::EnvSource { .. }));
    }

    #[test]
    fn cluster_sources_are_unsupported() {
        for src in [
            "env:\n- {name: A, valueFrom: {configMapKeyRef: {name: cm, key: k}}}",
            "env:\n- {name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}",
            "envFrom:\n- configMapRef: {name: cm}",
            "envFrom:\n- secretRef: {name: s}",
        ] {
            let f = Fixture::new(&format!("name: app\nimage: x\n{src}"));
            assert!(
                matches!(f.spec(), Err(TranslateError::Unsupported { .. })),
                "{src}"
            );
        }
    }
}
