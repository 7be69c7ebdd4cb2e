//! Static pod manifests: the files of the kubelet's `staticPodPath`.
//!
//! [`parse_file`] reads one file (YAML with one or more documents, or JSON) into Pods with
//! errors that name the file, the document and the field; [`default_static_pod`] gives a pod the
//! identity and defaults the kubelet gives a static pod; [`validate`] then refuses what the
//! apiserver would refuse and static pods that refer to API objects, as the kubelet does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sha2::{Digest, Sha256};

pub const ANNOTATION_CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const ANNOTATION_CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const ANNOTATION_CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// The annotation the kubelet puts on mirror pods (the apiserver copy of a static pod).
pub const ANNOTATION_CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

use crate::validation::join_errors;
pub use crate::validation::{is_dns_label, is_dns_subdomain, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The document is not well-formed YAML/JSON.
    #[error("{}: document {document}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        document: usize,
        message: String,
    },
    #[error("{}: document {document}: expected apiVersion v1 and kind Pod, got apiVersion {api_version:?} and kind {kind:?}", file.display())]
    NotAPod {
        file: PathBuf,
        document: usize,
        api_version: String,
        kind: String,
    },
    /// A field has the wrong type or value.
    #[error("{}: document {document}: {path}: {message}", file.display())]
    Field {
        file: PathBuf,
        document: usize,
        path: String,
        message: String,
    },
    /// The pod failed validation.
    #[error("pod {pod:?} is invalid: {}", join_errors(errors))]
    Invalid {
        pod: String,
        errors: Vec<FieldError>,
    },
    /// A static pod that refers to API objects (the kubelet's `PreventStaticPodAPIReferences`).
    #[error("pod {pod:?} is invalid: static pods may not reference {resource}")]
    ApiReference { pod: String, resource: &'static str },
}

/// `.json` files are read as JSON (exact error positions); everything else as YAML, which also
/// accepts JSON documents.
fn is_json_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

fn check_and_decode(
    path: &Path,
    document: usize,
    value: serde_json::Value,
) -> Result<Pod, ManifestError> {
    let field = |name: &str| {
        value
            .get(name)
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    if !value.is_object() {
        return Err(ManifestError::Syntax {
            file: path.to_path_buf(),
            document,
            message: format!("expected a mapping, got {}", value_kind(&value)),
        });
    }
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != "v1" || kind != "Pod" {
        return Err(ManifestError::NotAPod {
            file: path.to_path_buf(),
            document,
            api_version,
            kind,
        });
    }
    serde_path_to_error::deserialize::<_, Pod>(value).map_err(|e| {
        let path_str = e.path().to_string();
        ManifestError::Field {
            file: path.to_path_buf(),
            document,
            path: path_str,
            message: e.into_inner().to_string(),
        }
    })
}

fn value_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// Parses one file: YAML (one or more `---` documents) or JSON; empty documents are skipped;
/// every document must be `apiVersion: v1, kind: Pod`. Errors name the file, the document
/// (counted from 1) and the field path, e.g.
/// `pods/web.yaml: document 2: spec.containers[0].ports[0].containerPort: invalid type: string "x", expected i32`.
pub fn parse_file(path: &Path, content: &str) -> Result<Vec<Pod>, ManifestError> {
    let syntax = |document: usize, message: String| ManifestError::Syntax {
        file: path.to_path_buf(),
        document,
        message,
    };
    if is_json_file(path) {
        if content.trim().is_empty() {
            return Ok(Vec::new());
        }
        let value: serde_json::Value =
            serde_json::from_str(content).map_err(|e| syntax(1, e.to_string()))?;
        return Ok(vec![check_and_decode(path, 1, value)?]);
    }
    let mut pods = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(content).enumerate() {
        let document = i + 1;
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e: serde_yaml::Error| syntax(document, e.to_string()))?;
        if value.is_null() {
            continue;
        }
        pods.push(check_and_decode(path, document, value)?);
    }
    Ok(pods)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Validates a static pod as the kubelet does once it has defaulted it: the apiserver's pod
/// validation ([`crate::validation`]), then no references to API objects.
pub fn validate(pod: &Pod) -> Result<(), ManifestError> {
    let name = || pod.metadata.name.clone().unwrap_or_default();
    let errors = crate::validation::validate_pod(pod);
    if !errors.is_empty() {
        return Err(ManifestError::Invalid {
            pod: name(),
            errors,
        });
    }
    match crate::validation::api_object_reference(pod) {
        Some(resource) => Err(ManifestError::ApiReference {
            pod: name(),
            resource,
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------------

/// The tag of an image reference (`busybox:1.36` -> `1.36`, `busybox` -> None,
/// `localhost:5000/busybox` -> None, `busybox@sha256:..` -> None).
fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag)
}

/// The kubelet's default pull policy: Always for `:latest` or no tag, IfNotPresent otherwise
/// (a digest without a tag counts as IfNotPresent).
pub fn default_pull_policy(image: &str) -> &'static str {
    match image_tag(image) {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if image.contains('@') => "IfNotPresent",
        None => "Always",
    }
}

fn default_container(c: &mut Container) {
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_path = Some("/dev/termination-log".into());
    }
    if c.termination_message_policy
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_policy = Some("File".into());
    }
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    for p in c.ports.iter_mut().flatten() {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".into());
        }
    }
    // The apiserver copies limits into unset requests.
    if let Some(res) = c.resources.as_mut() {
        if let Some(limits) = res.limits.clone() {
            let requests = res.requests.get_or_insert_with(BTreeMap::new);
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

/// Pod-level requests as the apiserver defaults them (`defaultPodRequests`, PodLevelResources):
/// when pod-level limits are set, an unset pod-level cpu or memory request takes the
/// containers' aggregated requests when they have some, and every pod-level resource still
/// without a request takes its pod-level limit.
fn default_pod_requests(pod: &mut Pod) {
    let Some(limits) = pod
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.limits.clone())
        .filter(|l| !l.is_empty())
    else {
        return;
    };
    // The containers' own requests (no pod level, no overhead).
    let containers_only = {
        let mut p = pod.clone();
        if let Some(s) = p.spec.as_mut() {
            s.resources = None;
            s.overhead = None;
        }
        p
    };
    let Some(res) = pod.spec.as_mut().and_then(|s| s.resources.as_mut()) else {
        return;
    };
    let mut requests = res.requests.clone().unwrap_or_default();
    for name in ["cpu", "memory"] {
        if requests.contains_key(name) {
            continue;
        }
        if let Some(v) = crate::admission::pod_request(&containers_only, name) {
            let text = if name == "cpu" {
                format!("{v}m")
            } else {
                v.to_string()
            };
            requests.insert(name.to_string(), Quantity(text));
        }
    }
    for (name, limit) in limits {
        if crate::quantity::is_pod_level_resource(&name) && !requests.contains_key(&name) {
            requests.insert(name, limit);
        }
    }
    if !requests.is_empty() {
        res.requests = Some(requests);
    }
}

/// The uid of a static pod: a hash of the pod as written, the node and the source file, so an
/// unchanged file keeps its uid and a changed one gets a new uid (32 hex characters).
pub fn static_pod_uid(pod: &Pod, source: &Path, node_name: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&pod.metadata).unwrap_or_default());
    h.update(serde_json::to_vec(&pod.spec).unwrap_or_default());
    h.update(format!("host:{node_name}").as_bytes());
    h.update(format!("file:{}", source.display()).as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// RFC 3339 UTC time with nanoseconds, like Go's `time.RFC3339Nano`.
fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let nanos = d.subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Kubelet-style identity and defaults for a static pod read from `source` (call it once, on a
/// freshly parsed pod):
/// uid (kept when the file sets one, else [`static_pod_uid`]), name suffixed with `-<node>`
/// like the kubelet's mirror pods, namespace `default`, spec.nodeName, the config annotations,
/// the NoExecute toleration, and the API defaults bosun relies on.
pub fn default_static_pod(pod: &mut Pod, source: &Path, node_name: &str) {
    if pod.metadata.uid.as_deref().unwrap_or("").is_empty() {
        pod.metadata.uid = Some(static_pod_uid(pod, source, node_name));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(name) = pod.metadata.name.as_mut() {
        if !node_name.is_empty() {
            name.push('-');
            name.push_str(&node_name.to_ascii_lowercase());
        }
    }
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_CONFIG_SOURCE.into(), "file".into());
    annotations.insert(ANNOTATION_CONFIG_HASH.into(), uid);
    annotations.insert(
        ANNOTATION_CONFIG_SEEN.into(),
        rfc3339_nano(SystemTime::now()),
    );
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.node_name = Some(node_name.to_string());
    let set = |f: &mut Option<String>, v: &str| {
        if f.as_deref().unwrap_or("").is_empty() {
            *f = Some(v.to_string());
        }
    };
    set(&mut spec.restart_policy, "Always");
    set(&mut spec.dns_policy, "ClusterFirst");
    set(&mut spec.scheduler_name, "default-scheduler");
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    spec.security_context.get_or_insert_with(Default::default);
    for c in spec.containers.iter_mut() {
        default_container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
    // An image volume's pullPolicy as the apiserver defaults it (SetDefaults_Volume).
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(i) = v.image.as_mut() {
            if i.pull_policy.as_deref().unwrap_or("").is_empty() {
                i.pull_policy =
                    Some(default_pull_policy(i.reference.as_deref().unwrap_or("")).into());
            }
        }
    }
    default_pod_requests(pod);
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let toleration = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Toleration::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&toleration) {
        tolerations.push(toleration);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox:1.36\n    command: [sleep, \"3600\"]\n";

    fn parse(content: &str) -> Result<Vec<Pod>, ManifestError> {
        parse_file(Path::new("pods/web.yaml"), content)
    }

    fn one(content: &str) -> Pod {
        let mut pods = parse(content).expect("parses");
        assert_eq!(pods.len(), 1);
        pods.remove(0)
    }

    #[test]
    fn image_volumes_and_pod_level_requests_are_defaulted() {
        let p = one("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec:\n  resources: {limits: {cpu: \"1\", memory: 1Gi}}\n  volumes:\n  - {name: a, image: {reference: \"tool:1.0\"}}\n  - {name: b, image: {reference: tool}}\n  - {name: c, image: {reference: tool:1.0, pullPolicy: Never}}\n  containers:\n  - {name: app, image: busybox:1.36}\n");
        let mut p = p;
        default_static_pod(&mut p, Path::new("pods/w.yaml"), "node");
        let spec = p.spec.as_ref().unwrap();
        let policies: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.image.as_ref().unwrap().pull_policy.clone().unwrap())
            .collect();
        assert_eq!(policies, ["IfNotPresent", "Always", "Never"]);
        // No container requests: the pod-level requests take the pod-level limits.
        let req = spec.resources.as_ref().unwrap().requests.clone().unwrap();
        assert_eq!(req["cpu"].0, "1");
        assert_eq!(req["memory"].0, "1Gi");
        assert_eq!(
            crate::translate::qos_class(&p),
            bosun_runtime::QosClass::Guaranteed
        );
        // Containers with requests: their aggregate for the resources they name.
        let mut q = one("apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  resources: {limits: {cpu: \"1\", memory: 1Gi}}\n  containers:\n  - {name: a, image: x:1, resources: {requests: {cpu: 100m}}}\n  - {name: b, image: x:1, resources: {requests: {cpu: 150m}}}\n");
        default_static_pod(&mut q, Path::new("pods/q.yaml"), "node");
        let req = q
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .clone()
            .unwrap();
        assert_eq!(req["cpu"].0, "250m");
        assert_eq!(req["memory"].0, "1Gi");
        // Pod-level requests only: nothing added.
        let mut r = one("apiVersion: v1\nkind: Pod\nmetadata: {name: r}\nspec:\n  resources: {requests: {cpu: \"1\"}}\n  containers: [{name: a, image: x:1}]\n");
        default_static_pod(&mut r, Path::new("pods/r.yaml"), "node");
        let res = r.spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn parses_single_yaml() {
        let p = one(WEB);
        assert_eq!(p.metadata.name.as_deref(), Some("web"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("busybox:1.36"));
        assert_eq!(
            spec.containers[0].command.as_deref(),
            Some(&["sleep".to_string(), "3600".to_string()][..])
        );
        validate(&p).unwrap();
    }

    #[test]
    fn parses_multi_document_yaml_skipping_empty_ones() {
        let content = format!(
            "---\n# leading comment\n---\n{WEB}---\n{}\n---\n",
            WEB.replace("name: web", "name: other")
        );
        let pods = parse(&content).unwrap();
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["web", "other"]);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("---\n---\n").unwrap().is_empty());
    }

    #[test]
    fn parses_json() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"a","image":"x","resources":{"limits":{"cpu":1,"memory":"64Mi"}}}]}}"#;
        let pods = parse_file(Path::new("pods/j.json"), json).unwrap();
        assert_eq!(pods.len(), 1);
        let c = &pods[0].spec.as_ref().unwrap().containers[0];
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["cpu"].0, "1");
        // JSON content without the extension goes through the YAML parser, which reads it too.
        assert_eq!(parse_file(Path::new("pods/j"), json).unwrap().len(), 1);
        let err = parse_file(Path::new("pods/j.json"), "{\"apiVersion\": ").unwrap_err();
        assert!(
            err.to_string().starts_with("pods/j.json: document 1: "),
            "{err}"
        );
    }

    #[test]
    fn field_errors_name_file_document_and_path() {
        let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers:\n  - name: a\n    image: x\n    ports:\n    - containerPort: x\n";
        let content = format!("{WEB}---\n{bad}");
        let err = parse(&content).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pods/web.yaml: document 2: spec.containers[0].ports[0].containerPort: invalid type: string \"x\", expected i32"
        );
        let err = parse("apiVersion: v1\nkind: Pod\nspec: {containers: 3}\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pods/web.yaml: document 1: spec.containers: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn rejects_other_kinds_and_bad_syntax() {
        let err =
            parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::NotAPod { document: 1, .. }),
            "{err}"
        );
        let err = parse(&format!("{WEB}---\nkind: Pod\n")).unwrap_err();
        assert!(
            matches!(err, ManifestError::NotAPod { document: 2, .. }),
            "{err}"
        );
        let err = parse(&format!("{WEB}---\n- a\n- b\n")).unwrap_err();
        assert!(
            err.to_string().contains("document 2: expected a mapping"),
            "{err}"
        );
        let err = parse("apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { document: 1, .. }),
            "{err}"
        );
    }

    fn invalid_fields(yaml: &str) -> Vec<String> {
        match validate(&one(yaml)) {
            Ok(()) => Vec::new(),
            Err(ManifestError::Invalid { errors, .. }) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }

    fn pod_yaml(meta: &str, spec: &str) -> String {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n{spec}")
    }

    #[test]
    fn validation_errors() {
        let c = "  containers:\n  - {name: app, image: x}\n";
        assert!(invalid_fields(&pod_yaml("{name: ok.name-1}", c)).is_empty());
        assert_eq!(invalid_fields(&pod_yaml("{}", c)), ["metadata.name"]);
        assert_eq!(
            invalid_fields(&pod_yaml("{name: Bad_Name}", c)),
            ["metadata.name"]
        );
        assert_eq!(
            invalid_fields(&pod_yaml("{name: p}", "  containers: []\n")),
            ["spec.containers"]
        );
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  containers:\n  - {name: app, image: x}\n  - {name: app, image: \"\"}\n"
            )),
            ["spec.containers[1].image", "spec.containers[1].name"]
        );
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  initContainers:\n  - {name: app, image: x}\n  containers:\n  - {name: app, image: x}\n"
            )),
            ["spec.containers[0].name"]
        );
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  containers:\n  - {name: App, image: x}\n"
            )),
            ["spec.containers[0].name"]
        );
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  restartPolicy: Sometimes\n  dnsPolicy: Nope\n  containers:\n  - {name: a, image: x, imagePullPolicy: Maybe}\n"
            )),
            ["spec.containers[0].imagePullPolicy", "spec.restartPolicy", "spec.dnsPolicy"]
        );
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  volumes:\n  - {name: v, emptyDir: {}}\n  - {name: v, emptyDir: {}}\n  - {name: w}\n  - {name: z, emptyDir: {}, hostPath: {path: /x}}\n  containers:\n  - name: a\n    image: x\n    volumeMounts:\n    - {name: v, mountPath: /a}\n    - {name: missing, mountPath: /b}\n    - {name: v, mountPath: /a}\n"
            )),
            [
                "spec.volumes[1].name",
                "spec.volumes[2]",
                "spec.volumes[3]",
                "spec.containers[0].volumeMounts[1].name",
                "spec.containers[0].volumeMounts[2].mountPath"
            ]
        );
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  containers:\n  - name: a\n    image: x\n    resources: {requests: {cpu: 2, memory: 1x}, limits: {cpu: 1}}\n"
            )),
            ["spec.containers[0].resources.requests[memory]", "spec.containers[0].resources.requests"]
        );
        // A static pod may not refer to API objects (configMaps, secrets, claims...).
        let err = validate(&one(&pod_yaml(
            "{name: p}",
            "  volumes:\n  - {name: cm, configMap: {name: c}}\n  containers:\n  - {name: a, image: x, volumeMounts: [{name: cm, mountPath: /c}]}\n",
        )))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod \"p\" is invalid: static pods may not reference configmaps"
        );
        // The path of a hostPath volume may not climb out with `..`.
        assert_eq!(
            invalid_fields(&pod_yaml(
                "{name: p}",
                "  volumes:\n  - {name: etc, hostPath: {path: ../../etc}}\n  containers:\n  - {name: a, image: x}\n"
            )),
            ["spec.volumes[0].hostPath.path"]
        );
        let err = validate(&one(&pod_yaml(
            "{name: p}",
            "  containers:\n  - {name: a}\n",
        )))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod \"p\" is invalid: spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:v1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abcd"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox:latest@sha256:abcd"), "Always");
    }

    #[test]
    fn defaults_and_identity() {
        let mut p = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  initContainers: [{name: init, image: x}]\n  containers:\n  - {name: a, image: busybox, resources: {limits: {cpu: 1}}, ports: [{containerPort: 80}]}\n  - {name: b, image: busybox:1.36, imagePullPolicy: Never}\n",
        );
        default_static_pod(
            &mut p,
            Path::new("/etc/kubernetes/manifests/web.yaml"),
            "Node1",
        );
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(p.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let a = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[ANNOTATION_CONFIG_SOURCE], "file");
        assert_eq!(a[ANNOTATION_CONFIG_HASH], uid);
        assert!(a[ANNOTATION_CONFIG_SEEN].ends_with('Z'));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.enable_service_links, Some(true));
        let (ca, cb) = (&spec.containers[0], &spec.containers[1]);
        assert_eq!(
            ca.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(ca.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(ca.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(cb.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            ca.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            ca.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
            "1"
        );
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        assert!(is_dns_label(&uid));
        // The node's name as bosun has it (lowercased by the configuration) makes a valid pod.
        let mut p = one(WEB);
        default_static_pod(&mut p, Path::new("/m/web.yaml"), "node1");
        validate(&p).unwrap();
    }

    #[test]
    fn uid_is_stable_and_changes_with_the_manifest() {
        let path = Path::new("/etc/kubernetes/manifests/web.yaml");
        let uid = |content: &str, path: &Path, node: &str| {
            let mut p = one(content);
            default_static_pod(&mut p, path, node);
            p.metadata.uid.unwrap()
        };
        let first = uid(WEB, path, "n1");
        assert_eq!(first, uid(WEB, path, "n1"));
        // Formatting-only changes keep the uid: it hashes the parsed pod.
        let reformatted = WEB.replace(
            "command: [sleep, \"3600\"]",
            "command:\n    - sleep\n    - \"3600\"",
        );
        assert_eq!(first, uid(&reformatted, path, "n1"));
        assert_ne!(first, uid(&WEB.replace("1.36", "1.37"), path, "n1"));
        assert_ne!(
            first,
            uid(WEB, Path::new("/etc/kubernetes/manifests/other.yaml"), "n1")
        );
        assert_ne!(first, uid(WEB, path, "n2"));
        // A uid written in the file is kept, like the kubelet.
        let fixed = WEB.replace("name: web\n", "name: web\n  uid: my-uid\n");
        assert_eq!(uid(&fixed, path, "n1"), "my-uid");
    }

    #[test]
    fn rfc3339_formatting() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_nano(leap), "2000-02-29T00:00:00Z");
    }
}
