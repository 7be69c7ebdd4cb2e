//! The files of configMap, secret, downwardAPI and projected volumes, and the environment that
//! comes from configMaps and secrets: pure functions over objects fetched beforehand.
//!
//! The rules are the kubelet's (`configmap.MakePayload`, `secret.MakePayload`,
//! `downwardapi.CollectData`, `projected.collectData`, `makeEnvironmentVariables`), error
//! messages included, because users search for them. Fetching is the caller's business
//! ([`crate::cluster::objects`]): [`references`] says what a pod needs, [`ApiObjects`] holds
//! what was found.

use std::collections::{BTreeMap, BTreeSet};

use bosun_volumes::atomic::{FileProjection, Payload};
use bosun_volumes::ApiDataPlugin;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use crate::fieldpath::{self, NodeAllocatable};

/// The kubelet's default file mode of API data volumes.
pub const DEFAULT_MODE: i32 = 0o644;

/// One service account token a pod's volumes ask for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenKey {
    /// Empty: the apiserver's audiences.
    pub audience: String,
    pub expiration_seconds: i64,
}

/// What a pod needs from the API, by name in the pod's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub tokens: BTreeSet<TokenKey>,
}

impl References {
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty() && self.tokens.is_empty()
    }
}

/// The objects found for a pod's [`References`]; a `None` value means "does not exist".
#[derive(Clone, Debug, Default)]
pub struct ApiObjects {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
    pub tokens: BTreeMap<TokenKey, String>,
    /// The service link variables of the pod ([`service_env`]).
    pub service_env: Vec<(String, String)>,
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The kubelet's service environment (`getServiceEnvVarMap` + `envvars.FromServices`): the
/// `kubernetes` Service of the `default` namespace always, and with `enableServiceLinks` every
/// Service of the pod's namespace that has a cluster IP. Sorted by name.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Service>,
    namespace: &str,
    enable_links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &k8s_openapi::api::core::v1::Service> = BTreeMap::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if ns == namespace && enable_links {
            chosen.insert(name, svc);
        }
    }
    let mut out = BTreeMap::new();
    for (name, svc) in chosen {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else {
            continue;
        };
        let prefix = env_name(&name);
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.clone());
        out.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.insert(
                    format!("{prefix}_SERVICE_PORT_{}", env_name(pn)),
                    p.port.to_string(),
                );
            }
        }
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let url = format!("{}://{host}:{}", proto.to_lowercase(), p.port);
            if i == 0 {
                out.insert(format!("{prefix}_PORT"), url.clone());
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.insert(format!("{pp}_PROTO"), proto.to_lowercase());
            out.insert(format!("{pp}_PORT"), p.port.to_string());
            out.insert(format!("{pp}_ADDR"), ip.clone());
            out.insert(pp, url);
        }
    }
    out.into_iter().collect()
}

/// Everything the pod's volumes and env refer to.
pub fn references(pod: &Pod) -> References {
    let mut r = References::default();
    let Some(spec) = pod.spec.as_ref() else {
        return r;
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            r.config_maps.insert(cm.name.clone());
        }
        if let Some(s) = &v.secret {
            r.secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                r.secrets.insert(s.name.clone());
            }
            if let Some(t) = &src.service_account_token {
                r.tokens.insert(TokenKey {
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                });
            }
        }
    }
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        for from in c.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &from.secret_ref {
                r.secrets.insert(s.name.clone());
            }
        }
        for var in c.env.iter().flatten() {
            if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
                continue;
            }
            if let Some(from) = &var.value_from {
                if let Some(k) = &from.config_map_key_ref {
                    r.config_maps.insert(k.name.clone());
                }
                if let Some(k) = &from.secret_key_ref {
                    r.secrets.insert(k.name.clone());
                }
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(s.name.clone());
    }
    r.config_maps.retain(|n| !n.is_empty());
    r.secrets.retain(|n| !n.is_empty());
    r
}

/// The API data plugin of a volume, if it is one.
pub fn api_data_plugin(v: &Volume) -> Option<ApiDataPlugin> {
    if v.config_map.is_some() {
        Some(ApiDataPlugin::ConfigMap)
    } else if v.secret.is_some() {
        Some(ApiDataPlugin::Secret)
    } else if v.downward_api.is_some() {
        Some(ApiDataPlugin::DownwardApi)
    } else if v.projected.is_some() {
        Some(ApiDataPlugin::Projected)
    } else {
        None
    }
}

/// Whether a volume's files come from API objects (configMap, secret, token).
pub fn volume_needs_api(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.iter().any(|p| {
            p.sources.iter().flatten().any(|s| {
                s.config_map.is_some()
                    || s.secret.is_some()
                    || s.service_account_token.is_some()
                    || s.cluster_trust_bundle.is_some()
                    || s.pod_certificate.is_some()
            })
        })
}

/// Whether the pod has volumes or env that only the API can fill.
pub fn needs_api(pod: &Pod) -> bool {
    !references(pod).is_empty()
}

fn mode_of(m: Option<i32>, default: Option<i32>) -> u32 {
    (m.or(default).unwrap_or(DEFAULT_MODE) & 0o7777) as u32
}

/// Why the files of an API data volume, or an env value from a configMap or secret, cannot be
/// made (the kubelet's words; a FailedMount or a CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error("{kind} references non-existent {} key: {key}", if *kind == "configmap" { "config" } else { "secret" })]
    NoKey { kind: &'static str, key: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {namespace}/{name} was not fetched")]
    NotFetched {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{0}")]
    FieldPath(#[from] fieldpath::FieldPathError),
    #[error("service account token was not requested")]
    TokenNotRequested,
    #[error("{0} projections are not supported")]
    Unsupported(&'static str),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    NoEnvKey {
        kind: &'static str,
        key: String,
        namespace: String,
        name: String,
    },
}

/// configMap / secret data as bytes, with the kubelet's item rules.
fn key_payload(
    kind: &'static str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    out: &mut Payload,
) -> Result<(), ProjectionError> {
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(ProjectionError::NoKey {
                        kind,
                        key: item.key.clone(),
                    });
                };
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(())
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.entry(k.clone()).or_insert_with(|| v.0.clone());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// A configMap by name: its data, `None` when optional and missing, the kubelet's error when
/// Where key/value data comes from.
#[derive(Clone, Copy)]
enum Keys {
    ConfigMap,
    Secret,
}

/// The data of a configMap or secret by name: `None` when optional and missing, the kubelet's
/// error when required and missing.
fn lookup(
    pod: &Pod,
    objects: &ApiObjects,
    keys: Keys,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, ProjectionError> {
    let (kind, found) = match keys {
        Keys::ConfigMap => (
            "configmap",
            objects
                .config_maps
                .get(name)
                .map(|o| o.as_ref().map(config_map_data)),
        ),
        Keys::Secret => (
            "secret",
            objects
                .secrets
                .get(name)
                .map(|o| o.as_ref().map(secret_data)),
        ),
    };
    match found {
        Some(Some(data)) => Ok(Some(data)),
        Some(None) if optional => Ok(None),
        Some(None) => Err(ProjectionError::NotFound {
            kind,
            name: name.to_string(),
        }),
        None => Err(ProjectionError::NotFetched {
            kind,
            namespace: namespace(pod).to_string(),
            name: name.to_string(),
        }),
    }
}

/// The files of a configMap or secret source (a volume or a projected source).
fn project_keys(
    pod: &Pod,
    objects: &ApiObjects,
    (keys, name): (Keys, &str),
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: Option<bool>,
    out: &mut Payload,
) -> Result<(), ProjectionError> {
    let optional = optional.unwrap_or(false);
    let kind = match keys {
        Keys::ConfigMap => "configmap",
        Keys::Secret => "secret",
    };
    if let Some(data) = lookup(pod, objects, keys, name, optional)? {
        key_payload(kind, &data, items, default_mode, optional, out)?;
    }
    Ok(())
}

/// The downwardAPI items of a volume (or projected source).
fn downward_payload(
    pod: &Pod,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: Option<i32>,
    node: NodeAllocatable,
    out: &mut Payload,
) -> Result<(), ProjectionError> {
    for item in items.into_iter().flatten() {
        let value = if let Some(f) = &item.field_ref {
            fieldpath::field_ref_value(pod, f)?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or("");
            let c: Container = pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .cloned()
                .ok_or_else(|| fieldpath::FieldPathError::NoContainer(name.to_string()))?;
            fieldpath::resource_field_value(pod, &c, r, node)?
        } else {
            String::new()
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// The files of an API data volume. `fs_group`: the pod's fsGroup (service account tokens are
/// then 0600 before group read is added, as the kubelet does).
pub fn payload(
    pod: &Pod,
    v: &Volume,
    objects: &ApiObjects,
    node: NodeAllocatable,
) -> Result<Payload, ProjectionError> {
    let mut out = Payload::new();
    if let Some(cm) = &v.config_map {
        let (items, mode) = (cm.items.as_ref(), cm.default_mode);
        project_keys(
            pod,
            objects,
            (Keys::ConfigMap, &cm.name),
            items,
            mode,
            cm.optional,
            &mut out,
        )?;
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        let (items, mode) = (s.items.as_ref(), s.default_mode);
        project_keys(
            pod,
            objects,
            (Keys::Secret, name),
            items,
            mode,
            s.optional,
            &mut out,
        )?;
    } else if let Some(d) = &v.downward_api {
        downward_payload(pod, d.items.as_ref(), d.default_mode, node, &mut out)?;
    } else if let Some(p) = &v.projected {
        let default_mode = p.default_mode;
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group);
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let items = cm.items.as_ref();
                let name = &cm.name;
                project_keys(
                    pod,
                    objects,
                    (Keys::ConfigMap, name),
                    items,
                    default_mode,
                    cm.optional,
                    &mut out,
                )?;
            } else if let Some(s) = &src.secret {
                let items = s.items.as_ref();
                project_keys(
                    pod,
                    objects,
                    (Keys::Secret, &s.name),
                    items,
                    default_mode,
                    s.optional,
                    &mut out,
                )?;
            } else if let Some(d) = &src.downward_api {
                downward_payload(pod, d.items.as_ref(), default_mode, node, &mut out)?;
            } else if let Some(t) = &src.service_account_token {
                let key = TokenKey {
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                };
                let token = objects
                    .tokens
                    .get(&key)
                    .ok_or(ProjectionError::TokenNotRequested)?;
                let mode = if fs_group.is_some() {
                    0o600
                } else {
                    mode_of(None, default_mode)
                };
                out.insert(
                    t.path.clone(),
                    FileProjection {
                        data: token.clone().into_bytes(),
                        mode,
                    },
                );
            } else if src.cluster_trust_bundle.is_some() {
                return Err(ProjectionError::Unsupported("clusterTrustBundle"));
            } else if src.pod_certificate.is_some() {
                return Err(ProjectionError::Unsupported("podCertificate"));
            }
        }
    }
    Ok(out)
}

/// The pull credentials of the pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and
/// `kubernetes.io/dockercfg` secrets), and the names of those that could not be used (the
/// kubelet goes on without them).
pub fn pull_credentials(
    pod: &Pod,
    objects: &ApiObjects,
) -> (bosun_runtime::image::registry::Credentials, Vec<String>) {
    use bosun_runtime::image::registry::Credentials;
    let mut creds = Credentials::default();
    let mut bad = Vec::new();
    for r in pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
    {
        let parsed = match objects.secrets.get(&r.name) {
            Some(Some(s)) => {
                let data = s.data.clone().unwrap_or_default();
                if let Some(v) = data.get(".dockerconfigjson") {
                    Credentials::parse(&String::from_utf8_lossy(&v.0)).ok()
                } else if let Some(v) = data.get(".dockercfg") {
                    Credentials::parse_dockercfg(&String::from_utf8_lossy(&v.0)).ok()
                } else {
                    None
                }
            }
            _ => None,
        };
        match parsed {
            Some(c) => creds.extend(&c),
            None => bad.push(r.name.clone()),
        }
    }
    (creds, bad)
}

/// Environment variables from `envFrom` (in order, later sources win), keyed by name: the
/// kubelet's first pass of `makeEnvironmentVariables`.
pub fn env_from(
    pod: &Pod,
    c: &Container,
    objects: &ApiObjects,
) -> Result<Vec<(String, String)>, ProjectionError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: String, v: String| match out.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = v,
        None => out.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &from.config_map_ref {
            let optional = cm.optional.unwrap_or(false);
            lookup(pod, objects, Keys::ConfigMap, &cm.name, optional)?
        } else if let Some(s) = &from.secret_ref {
            let optional = s.optional.unwrap_or(false);
            lookup(pod, objects, Keys::Secret, &s.name, optional)?
        } else {
            None
        };
        for (k, v) in data.unwrap_or_default() {
            put(
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    Ok(out)
}

/// The value of a `configMapKeyRef` / `secretKeyRef` env var; `None` when optional and missing.
pub fn env_key_ref(
    pod: &Pod,
    from: &k8s_openapi::api::core::v1::EnvVarSource,
    objects: &ApiObjects,
) -> Result<Option<String>, ProjectionError> {
    let ns = namespace(pod);
    if let Some(k) = &from.config_map_key_ref {
        let optional = k.optional.unwrap_or(false);
        let Some(data) = lookup(pod, objects, Keys::ConfigMap, &k.name, optional)? else {
            return Ok(None);
        };
        match data.get(&k.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(ProjectionError::NoEnvKey {
                kind: "ConfigMap",
                key: k.key.clone(),
                namespace: ns.to_string(),
                name: k.name.clone(),
            }),
        }
    } else if let Some(k) = &from.secret_key_ref {
        let optional = k.optional.unwrap_or(false);
        let Some(data) = lookup(pod, objects, Keys::Secret, &k.name, optional)? else {
            return Ok(None);
        };
        match data.get(&k.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(ProjectionError::NoEnvKey {
                kind: "Secret",
                key: k.key.clone(),
                namespace: ns.to_string(),
                name: k.name.clone(),
            }),
        }
    } else {
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        );
        s
    }

    const SA_POD: &str = r#"
metadata: {name: web, namespace: prod, uid: u-1, labels: {app: web, tier: "a\"b"}}
spec:
  serviceAccountName: default
  containers:
  - name: c
    image: busybox
    resources: {limits: {memory: 64Mi}}
    envFrom:
    - configMapRef: {name: settings}
    - secretRef: {name: creds}
      prefix: S_
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
    - {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: pass}}}
    - {name: OPT, valueFrom: {configMapKeyRef: {name: nothere, key: k, optional: true}}}
  volumes:
  - name: kube-api-access
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items:
          - path: namespace
            fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}
  - name: conf
    configMap: {name: settings, items: [{key: mode, path: sub/mode.txt, mode: 256}]}
  - name: creds
    secret: {secretName: creds, defaultMode: 384}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}
"#;

    fn objects() -> ApiObjects {
        let mut o = ApiObjects::default();
        o.config_maps.insert(
            "settings".into(),
            Some(cm("settings", &[("mode", "fast"), ("level", "3")])),
        );
        o.config_maps.insert(
            "kube-root-ca.crt".into(),
            Some(cm("kube-root-ca.crt", &[("ca.crt", "PEM")])),
        );
        o.config_maps.insert("nothere".into(), None);
        o.secrets.insert(
            "creds".into(),
            Some(secret("creds", &[("pass", "hunter2")])),
        );
        o.tokens.insert(
            TokenKey {
                audience: String::new(),
                expiration_seconds: 3607,
            },
            "tok".into(),
        );
        o
    }

    fn vol<'a>(p: &'a Pod, name: &str) -> &'a Volume {
        p.spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .unwrap()
    }

    fn files(p: &Payload) -> Vec<(String, String, u32)> {
        p.iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    String::from_utf8_lossy(&f.data).into_owned(),
                    f.mode,
                )
            })
            .collect()
    }

    #[test]
    fn service_links_like_the_kubelet() {
        let svc = |ns: &str, name: &str, ip: &str, ports: &str| {
            serde_yaml::from_str::<k8s_openapi::api::core::v1::Service>(&format!(
                "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{clusterIP: {ip}, ports: {ports}}}"
            ))
            .unwrap()
        };
        let all = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                "[{name: https, port: 443}]",
            ),
            svc(
                "app",
                "my-db",
                "10.96.0.9",
                "[{port: 5432}, {name: metrics, port: 9100, protocol: UDP}]",
            ),
            svc("app", "headless", "None", "[{port: 80}]"),
            svc("other", "x", "10.96.0.7", "[{port: 80}]"),
        ];
        let env: BTreeMap<String, String> = service_env(&all, "app", true).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
        assert_eq!(env["MY_DB_SERVICE_HOST"], "10.96.0.9");
        assert_eq!(env["MY_DB_SERVICE_PORT"], "5432");
        assert_eq!(env["MY_DB_SERVICE_PORT_METRICS"], "9100");
        assert_eq!(env["MY_DB_PORT"], "tcp://10.96.0.9:5432");
        assert_eq!(env["MY_DB_PORT_9100_UDP"], "udp://10.96.0.9:9100");
        assert_eq!(env["MY_DB_PORT_9100_UDP_PROTO"], "udp");
        assert!(!env
            .keys()
            .any(|k| k.starts_with("HEADLESS") || k.starts_with("X_")));
        assert_eq!(env.len(), 8 + 12);
        // Without service links only the master service stays.
        let env = service_env(&all, "app", false);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
        assert_eq!(env.len(), 8);
    }

    #[test]
    fn pull_secrets_become_credentials() {
        let p = pod(
            "metadata: {name: a}\nspec:\n  imagePullSecrets: [{name: reg}, {name: legacy}, {name: missing}, {name: other}]\n  containers: [{name: c, image: i}]",
        );
        assert!(references(&p).secrets.contains("reg"));
        let mut o = ApiObjects::default();
        // base64("u:p") = dTpw
        o.secrets.insert(
            "reg".into(),
            Some(secret(
                "reg",
                &[(
                    ".dockerconfigjson",
                    r#"{"auths":{"reg.example:5000":{"auth":"dTpw"}}}"#,
                )],
            )),
        );
        o.secrets.insert(
            "legacy".into(),
            Some(secret(
                "legacy",
                &[(
                    ".dockercfg",
                    r#"{"https://index.docker.io/v1/":{"username":"d","password":"x"}}"#,
                )],
            )),
        );
        o.secrets.insert("missing".into(), None);
        o.secrets
            .insert("other".into(), Some(secret("other", &[("token", "t")])));
        let (creds, bad) = pull_credentials(&p, &o);
        assert_eq!(
            creds.lookup("reg.example:5000"),
            Some(("u".to_string(), "p".to_string()))
        );
        assert_eq!(
            creds.lookup("docker.io"),
            Some(("d".to_string(), "x".to_string()))
        );
        assert_eq!(bad, ["missing", "other"]);
    }

    #[test]
    fn references_cover_volumes_and_env() {
        let r = references(&pod(SA_POD));
        assert_eq!(
            r.config_maps.into_iter().collect::<Vec<_>>(),
            ["kube-root-ca.crt", "nothere", "settings"]
        );
        assert_eq!(r.secrets.into_iter().collect::<Vec<_>>(), ["creds"]);
        assert_eq!(r.tokens.len(), 1);
        assert!(!needs_api(&pod(
            "metadata: {name: a}\nspec:\n  containers: [{name: c, image: i, env: [{name: A, value: b}]}]"
        )));
    }

    #[test]
    fn service_account_volume_like_the_admission_plugin_makes_it() {
        let p = pod(SA_POD);
        let node = NodeAllocatable::default();
        let got = payload(&p, vol(&p, "kube-api-access"), &objects(), node).expect("payload");
        assert_eq!(
            files(&got),
            [
                ("ca.crt".to_string(), "PEM".to_string(), 0o644),
                ("namespace".into(), "prod".into(), 0o644),
                ("token".into(), "tok".into(), 0o644),
            ]
        );
    }

    #[test]
    fn config_map_secret_and_downward_volumes() {
        let p = pod(SA_POD);
        let node = NodeAllocatable::default();
        let o = objects();
        assert_eq!(
            files(&payload(&p, vol(&p, "conf"), &o, node).unwrap()),
            [("sub/mode.txt".to_string(), "fast".to_string(), 0o400)]
        );
        assert_eq!(
            files(&payload(&p, vol(&p, "creds"), &o, node).unwrap()),
            [("pass".to_string(), "hunter2".to_string(), 0o600)]
        );
        assert_eq!(
            files(&payload(&p, vol(&p, "info"), &o, node).unwrap()),
            [
                (
                    "labels".to_string(),
                    "app=\"web\"\ntier=\"a\\\"b\"".to_string(),
                    0o644
                ),
                ("mem".into(), "64".into(), 0o644),
            ]
        );
    }

    #[test]
    fn missing_objects_and_keys_fail_like_the_kubelet_unless_optional() {
        let mut p = pod(SA_POD);
        let node = NodeAllocatable::default();
        let mut o = objects();
        o.config_maps.insert("settings".into(), None);
        assert_eq!(
            payload(&p, vol(&p, "conf"), &o, node)
                .unwrap_err()
                .to_string(),
            "configmap \"settings\" not found"
        );
        let o = objects();
        if let Some(cm) = p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[1]
            .config_map
            .as_mut()
        {
            cm.items.as_mut().unwrap()[0].key = "absent".into();
        }
        assert_eq!(
            payload(&p, vol(&p, "conf"), &o, node)
                .unwrap_err()
                .to_string(),
            "configmap references non-existent config key: absent"
        );
        if let Some(cm) = p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[1]
            .config_map
            .as_mut()
        {
            cm.optional = Some(true);
        }
        assert!(payload(&p, vol(&p, "conf"), &o, node).unwrap().is_empty());
    }

    #[test]
    fn env_from_and_key_refs() {
        let p = pod(SA_POD);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let o = objects();
        assert_eq!(
            env_from(&p, c, &o).unwrap(),
            [
                ("level".to_string(), "3".to_string()),
                ("mode".into(), "fast".into()),
                ("S_pass".into(), "hunter2".into()),
            ]
        );
        let env = c.env.as_ref().unwrap();
        let val = |i: usize| env_key_ref(&p, env[i].value_from.as_ref().unwrap(), &o);
        assert_eq!(val(0).unwrap().as_deref(), Some("fast"));
        assert_eq!(val(1).unwrap().as_deref(), Some("hunter2"));
        assert_eq!(val(2).unwrap(), None);
        let mut o2 = objects();
        o2.secrets
            .insert("creds".into(), Some(secret("creds", &[("user", "x")])));
        assert_eq!(
            val_with(&p, &env[1], &o2).unwrap_err().to_string(),
            "couldn't find key pass in Secret prod/creds"
        );
        o2.secrets.insert("creds".into(), None);
        assert_eq!(
            env_from(&p, c, &o2).unwrap_err().to_string(),
            "secret \"creds\" not found"
        );
    }

    fn val_with(
        p: &Pod,
        var: &k8s_openapi::api::core::v1::EnvVar,
        o: &ApiObjects,
    ) -> Result<Option<String>, String> {
        env_key_ref(p, var.value_from.as_ref().unwrap(), o).map_err(|e| e.to_string())
    }
}
