//! configMaps, secrets and service account tokens for the pods of this node, as the Node
//! authorizer allows them: only objects that pods bound to this node refer to, and tokens bound
//! to those pods.
//!
//! Objects are read with GET and kept for [`OBJECT_TTL`] (the kubelet's `Cache` change
//! detection strategy): the pod workers re-read them every sync, so an update reaches the
//! volumes within a sync period plus the TTL. When the apiserver cannot be reached the last
//! value read is used, so an outage never empties a running pod's volumes.
//!
//! Tokens come from TokenRequest, bound to the pod, and are requested again when 80 % of their
//! lifetime has passed or they are 24 hours old (the kubelet's token manager).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::pods::{ObjectSource, SourceError};
use crate::projection::{ApiObjects, References, TokenKey};

/// Reading what a pod refers to from the API failed (and nothing was read before).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("services have not yet been read at least once, cannot construct envvars")]
    ServicesNotRead,
    #[error("cannot get {kind} {namespace}/{name}: {source}")]
    Object {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot get CSIDriver {driver}: {source}")]
    Driver {
        driver: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot get a token for service account {namespace}/{service_account}: {source}")]
    Token {
        namespace: String,
        service_account: String,
        #[source]
        source: kube::Error,
    },
    /// A TokenRequest answered without this part.
    #[error("TokenRequest returned no {0}")]
    TokenAnswer(&'static str),
}

/// How long a configMap or secret read from the API is used before it is read again.
pub const OBJECT_TTL: Duration = Duration::from_secs(5);
/// A token is never kept longer than this, whatever its expiry.
const TOKEN_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ObjectKey {
    kind: &'static str,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenCacheKey {
    namespace: String,
    service_account: String,
    pod_uid: String,
    key: TokenKey,
}

#[derive(Clone)]
enum Cached {
    ConfigMap(Option<ConfigMap>),
    Secret(Option<Secret>),
}

#[derive(Clone)]
struct Token {
    value: String,
    issued: SystemTime,
    expires: SystemTime,
}

impl Token {
    /// Past 80 % of its lifetime, or older than a day.
    fn needs_refresh(&self, now: SystemTime) -> bool {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        let refresh_at = self.issued + life.mul_f64(0.8).min(TOKEN_MAX_AGE);
        now >= refresh_at
    }
}

/// The apiserver-backed [`ObjectSource`].
pub struct ClusterObjects {
    client: Client,
    /// Every Service of the cluster (the Node authorizer lets nodes watch them), for the
    /// service link variables.
    services: reflector::Store<Service>,
    objects: Mutex<HashMap<ObjectKey, (Instant, Cached)>>,
    tokens: Mutex<HashMap<TokenCacheKey, Token>>,
}

impl ClusterObjects {
    /// Also starts the Service reflector (it runs as long as the runtime).
    pub fn new(client: Client) -> Self {
        let (services, writer) = reflector::store();
        let api: Api<Service> = Api::all(client.clone());
        let stream =
            reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                .default_backoff()
                .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "service watch failed; retrying");
                }
            }
        });
        Self {
            client,
            services,
            objects: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &ObjectKey, fresh_only: bool) -> Option<Cached> {
        let map = self.objects.lock().ok()?;
        let (at, v) = map.get(key)?;
        (!fresh_only || at.elapsed() < OBJECT_TTL).then(|| v.clone())
    }

    fn store(&self, key: ObjectKey, v: Cached) {
        if let Ok(mut map) = self.objects.lock() {
            // Entries nobody asked for in a while go, so deleted pods leave nothing behind.
            map.retain(|_, (at, _)| at.elapsed() < OBJECT_TTL * 60);
            map.insert(key, (Instant::now(), v));
        }
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, FetchError> {
        let key = ObjectKey {
            kind: "configmap",
            namespace: ns.into(),
            name: name.into(),
        };
        if let Some(Cached::ConfigMap(v)) = self.cached(&key, true) {
            return Ok(v);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(v) => {
                self.store(key, Cached::ConfigMap(v.clone()));
                Ok(v)
            }
            Err(e) => match self.cached(&key, false) {
                Some(Cached::ConfigMap(v)) => {
                    tracing::debug!(error = %e, configmap = name, "using the last value read");
                    Ok(v)
                }
                _ => Err(FetchError::Object {
                    kind: "configmap",
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    source: e,
                }),
            },
        }
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, FetchError> {
        let key = ObjectKey {
            kind: "secret",
            namespace: ns.into(),
            name: name.into(),
        };
        if let Some(Cached::Secret(v)) = self.cached(&key, true) {
            return Ok(v);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(v) => {
                self.store(key, Cached::Secret(v.clone()));
                Ok(v)
            }
            Err(e) => match self.cached(&key, false) {
                Some(Cached::Secret(v)) => {
                    tracing::debug!(error = %e, secret = name, "using the last value read");
                    Ok(v)
                }
                _ => Err(FetchError::Object {
                    kind: "secret",
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    source: e,
                }),
            },
        }
    }

    async fn token(&self, pod: &Pod, key: &TokenKey) -> Result<String, FetchError> {
        self.token_entry(pod, key).await.map(|t| t.value)
    }

    /// The service account tokens a CSIDriver asks for (`tokenRequests`), bound to the pod, as
    /// the kubelet hands them to the driver: JSON `{audience: {token, expirationTimestamp}}`.
    /// `None` when the driver asks for none (or has no CSIDriver object).
    pub(crate) async fn csi_tokens(
        &self,
        pod: &Pod,
        driver: &str,
    ) -> Result<Option<super::csi::ServiceAccountTokens>, FetchError> {
        let api: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(self.client.clone());
        let Some(d) = api
            .get_opt(driver)
            .await
            .map_err(|source| FetchError::Driver {
                driver: driver.to_string(),
                source,
            })?
        else {
            return Ok(None);
        };
        let requests = d.spec.token_requests.unwrap_or_default();
        if requests.is_empty() {
            return Ok(None);
        }
        let mut tokens = Vec::new();
        for r in requests {
            let key = TokenKey {
                audience: r.audience.clone(),
                expiration_seconds: r.expiration_seconds.unwrap_or(3600),
            };
            let t = self.token_entry(pod, &key).await?;
            tokens.push((r.audience, t.value, t.expires));
        }
        Ok(Some(super::csi::ServiceAccountTokens {
            json: super::csi::tokens_json(&tokens),
            in_secrets: d.spec.service_account_token_in_secrets == Some(true),
        }))
    }

    async fn token_entry(&self, pod: &Pod, key: &TokenKey) -> Result<Token, FetchError> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let cache_key = TokenCacheKey {
            namespace: ns.clone(),
            service_account: sa.clone(),
            pod_uid: uid.clone(),
            key: key.clone(),
        };
        let now = SystemTime::now();
        if let Ok(map) = self.tokens.lock() {
            if let Some(t) = map.get(&cache_key).filter(|t| !t.needs_refresh(now)) {
                return Ok(t.clone());
            }
        }
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!key.audience.is_empty()).then(|| vec![key.audience.clone()]),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name),
                    uid: Some(uid),
                }),
            }),
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let result = api
            .create_token_request(&sa, &PostParams::default(), &req)
            .await;
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| t.expires > now);
        match result {
            Ok(tr) => {
                let status = tr.status.ok_or(FetchError::TokenAnswer("status"))?;
                let token = status.token.ok_or(FetchError::TokenAnswer("token"))?;
                let expires: SystemTime = status
                    .expiration_timestamp
                    .map(|t| t.0.into())
                    .unwrap_or(now + Duration::from_secs(key.expiration_seconds.max(0) as u64));
                let t = Token {
                    value: token,
                    issued: now,
                    expires,
                };
                map.insert(cache_key, t.clone());
                Ok(t)
            }
            // The old token still works until it expires: keep using it.
            Err(e) => match map.get(&cache_key) {
                Some(t) => {
                    tracing::warn!(error = %e, "cannot refresh a service account token");
                    Ok(t.clone())
                }
                None => Err(FetchError::Token {
                    namespace: ns,
                    service_account: sa,
                    source: e,
                }),
            },
        }
    }
}

impl ObjectSource for ClusterObjects {
    fn fetch<'a>(
        &'a self,
        pod: &'a Pod,
        refs: &'a References,
    ) -> BoxFuture<'a, Result<ApiObjects, SourceError>> {
        Box::pin(async move {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut out = ApiObjects::default();
            // The kubelet refuses to start an API pod's containers before it has seen the
            // Services once; a static pod starts with the Services known so far (none while the
            // apiserver is down: with `kubeadm init` the static pods are the apiserver).
            if !crate::translate::is_static_pod(pod)
                && tokio::time::timeout(Duration::from_secs(10), self.services.wait_until_ready())
                    .await
                    .is_err()
            {
                return Err(FetchError::ServicesNotRead.into());
            }
            // The reflector's objects as they are: no copy of every Service per pod sync.
            let services = self.services.state();
            let links = pod
                .spec
                .as_ref()
                .and_then(|s| s.enable_service_links)
                .unwrap_or(true);
            out.service_env =
                crate::projection::service_env(services.iter().map(|s| s.as_ref()), ns, links);
            for name in &refs.config_maps {
                out.config_maps
                    .insert(name.clone(), self.config_map(ns, name).await?);
            }
            for name in &refs.secrets {
                out.secrets
                    .insert(name.clone(), self.secret(ns, name).await?);
            }
            for key in &refs.tokens {
                out.tokens.insert(key.clone(), self.token(pod, key).await?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refresh_at_80_percent_or_a_day() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = Token {
            value: String::new(),
            issued: t0,
            expires: t0 + Duration::from_secs(3600),
        };
        assert!(!t.needs_refresh(t0 + Duration::from_secs(2879)));
        assert!(t.needs_refresh(t0 + Duration::from_secs(2880)));
        let year = Token {
            value: String::new(),
            issued: t0,
            expires: t0 + Duration::from_secs(365 * 86400),
        };
        assert!(!year.needs_refresh(t0 + Duration::from_secs(86399)));
        assert!(year.needs_refresh(t0 + TOKEN_MAX_AGE));
    }
}
