//! Authentication and authorization of the kubelet API, as the kubelet does them
//! (pkg/kubelet/server/auth.go): x509 client certificates, bearer tokens through TokenReview,
//! anonymous requests only when enabled; then a SubjectAccessReview on `nodes/<subresource>`
//! named after the node, with the verb [`super::request`] decided (the HTTP method's, `create`
//! for the streaming endpoints).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::request::is_subpath;
use crate::config::ServerConfig;

/// How long a rejected token is remembered (at most the configured cacheTTL).
const FAILED_TOKEN_TTL: Duration = Duration::from_secs(10);
/// Entries kept per cache before it is cleared (bounds memory under a flood of tokens).
const CACHE_LIMIT: usize = 4096;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }
}

/// The user of a client certificate (already verified against clientCAFile): CN is the name,
/// the organizations are the groups.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(User {
        name,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// What a request asks for, in the terms of a SubjectAccessReview on the Node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The attributes to check for a request with `verb` (decided by [`super::request::verb`]) on
/// the decoded `path`, in order: a fine-grained subresource first where the kubelet has one
/// (`nodes/pods`, `nodes/healthz`, `nodes/configz`), then the classic mapping. Any one allowed
/// lets the request through.
pub fn attributes(verb: &'static str, path: &str) -> Vec<Attributes> {
    let classic = if is_subpath(path, "/stats/") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs/") {
        "log"
    } else if is_subpath(path, "/spec/") {
        "spec"
    } else if is_subpath(path, "/checkpoint/") {
        "checkpoint"
    } else {
        "proxy"
    };
    let fine = if is_subpath(path, "/pods") || is_subpath(path, "/runningpods") {
        Some("pods")
    } else if is_subpath(path, "/healthz") {
        Some("healthz")
    } else if is_subpath(path, "/configz") {
        Some("configz")
    } else {
        None
    };
    let mut out = Vec::new();
    if let Some(f) = fine {
        out.push(Attributes {
            verb,
            subresource: f,
        });
    }
    out.push(Attributes {
        verb,
        subresource: classic,
    });
    out
}

/// A map whose entries expire, each after its own time to live.
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_LIMIT {
            m.retain(|_, (expires, _)| *expires > now);
            if m.len() >= CACHE_LIMIT {
                m.clear();
            }
        }
        m.insert(key, (now + ttl, value));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token review: {0}")]
    TokenReview(#[source] kube::Error),
    #[error("subject access review: {0}")]
    AccessReview(#[source] kube::Error),
}

/// Who may do what on this node's API.
pub struct Auth {
    client: kube::Client,
    node_name: String,
    cfg: ServerConfig,
    tokens: TtlCache<String, Option<User>>,
    decisions: TtlCache<(User, Attributes), bool>,
}

/// The outcome of authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Authn {
    User(User),
    /// No credentials, or credentials that are not valid: 401.
    Unauthorized,
}

impl Auth {
    pub fn new(client: kube::Client, node_name: String, cfg: ServerConfig) -> Auth {
        Auth {
            client,
            node_name,
            cfg,
            tokens: TtlCache::default(),
            decisions: TtlCache::default(),
        }
    }

    /// The request's user: its verified client certificate, else its bearer token, else
    /// anonymous when that is enabled.
    pub async fn authenticate(
        &self,
        cert_user: Option<&User>,
        authorization: Option<&str>,
    ) -> Result<Authn, AuthError> {
        if let Some(u) = cert_user {
            return Ok(Authn::User(u.clone()));
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            Some(t) if self.cfg.webhook_authn => Ok(match self.review_token(t).await? {
                Some(u) => Authn::User(u),
                None => Authn::Unauthorized,
            }),
            Some(_) => Ok(Authn::Unauthorized),
            None if self.cfg.anonymous_auth => Ok(Authn::User(User::anonymous())),
            None => Ok(Authn::Unauthorized),
        }
    }

    async fn review_token(&self, token: &str) -> Result<Option<User>, AuthError> {
        let now = Instant::now();
        if let Some(hit) = self.tokens.get(&token.to_string(), now) {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::TokenReview)?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            });
        let ttl = if user.is_some() {
            self.cfg.authn_cache_ttl
        } else {
            self.cfg.authn_cache_ttl.min(FAILED_TOKEN_TTL)
        };
        self.tokens
            .insert(token.to_string(), user.clone(), ttl, now);
        Ok(user)
    }

    /// Is `user` allowed any of `attrs` on this node?
    pub async fn authorize(&self, user: &User, attrs: &[Attributes]) -> Result<bool, AuthError> {
        if !self.cfg.authz_webhook {
            return Ok(true);
        }
        for a in attrs {
            if self.allowed(user, *a).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn allowed(&self, user: &User, attrs: Attributes) -> Result<bool, AuthError> {
        let now = Instant::now();
        let key = (user.clone(), attrs);
        if let Some(hit) = self.decisions.get(&key, now) {
            return Ok(hit);
        }
        let review = SubjectAccessReview {
            spec: access_review_spec(user, attrs, &self.node_name),
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::AccessReview)?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed {
            self.cfg.authz_cache_authorized_ttl
        } else {
            self.cfg.authz_cache_unauthorized_ttl
        };
        self.decisions.insert(key, allowed, ttl, now);
        Ok(allowed)
    }
}

/// The SubjectAccessReview the kubelet sends: `nodes/<subresource>` named after the node.
pub fn access_review_spec(user: &User, a: Attributes, node: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: Some(user.name.clone()),
        uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
        groups: Some(user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes: Some(ResourceAttributes {
            verb: Some(a.verb.into()),
            group: Some(String::new()),
            version: Some("v1".into()),
            resource: Some("nodes".into()),
            subresource: Some(a.subresource.into()),
            name: Some(node.into()),
            namespace: Some(String::new()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(verb: &'static str, subresource: &'static str) -> Attributes {
        Attributes { verb, subresource }
    }

    #[test]
    fn path_and_method_mapping() {
        let one = |m: &str, p: &str| attributes(crate::server::request::verb(m, p), p);
        assert_eq!(one("GET", "/stats/summary"), vec![a("get", "stats")]);
        assert_eq!(one("GET", "/metrics"), vec![a("get", "metrics")]);
        assert_eq!(one("GET", "/metrics/cadvisor"), vec![a("get", "metrics")]);
        assert_eq!(one("GET", "/logs/syslog"), vec![a("get", "log")]);
        assert_eq!(one("GET", "/spec/"), vec![a("get", "spec")]);
        assert_eq!(
            one("POST", "/checkpoint/ns/p/c"),
            vec![a("create", "checkpoint")]
        );
        assert_eq!(one("GET", "/containerLogs/ns/p/c"), vec![a("get", "proxy")]);
        assert_eq!(
            one("GET", "/pods"),
            vec![a("get", "pods"), a("get", "proxy")]
        );
        assert_eq!(
            one("GET", "/healthz"),
            vec![a("get", "healthz"), a("get", "proxy")]
        );
        // `/statsfoo` is not below `/stats/`, `/metricsx` not below `/metrics`.
        assert_eq!(one("GET", "/statsfoo"), vec![a("get", "proxy")]);
        assert_eq!(one("GET", "/metricsx"), vec![a("get", "proxy")]);
        assert_eq!(one("PUT", "/x"), vec![a("update", "proxy")]);
        assert_eq!(one("PATCH", "/x"), vec![a("patch", "proxy")]);
        assert_eq!(one("DELETE", "/x"), vec![a("delete", "proxy")]);
        // The kubelet has no verb for HEAD and OPTIONS: authorized with none.
        assert_eq!(one("OPTIONS", "/x"), vec![a("", "proxy")]);
        // Streaming endpoints are a create, WebSocket (GET) or SPDY (POST or GET) alike.
        assert_eq!(one("GET", "/exec/ns/p/c"), vec![a("create", "proxy")]);
        assert_eq!(one("POST", "/attach/ns/p/c"), vec![a("create", "proxy")]);
        assert_eq!(one("GET", "/portForward/ns/p"), vec![a("create", "proxy")]);
    }

    #[test]
    fn review_spec_names_the_node() {
        let u = User {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
            extra: BTreeMap::new(),
        };
        let s = access_review_spec(&u, a("create", "proxy"), "n1");
        let r = s.resource_attributes.expect("attrs");
        assert_eq!(r.resource.as_deref(), Some("nodes"));
        assert_eq!(r.subresource.as_deref(), Some("proxy"));
        assert_eq!(r.name.as_deref(), Some("n1"));
        assert_eq!(r.verb.as_deref(), Some("create"));
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert!(s.uid.is_none() && s.extra.is_none());
    }

    #[test]
    fn cache_entries_expire_after_their_ttl() {
        let c: TtlCache<&str, bool> = TtlCache::default();
        let t0 = Instant::now();
        c.insert("ok", true, Duration::from_secs(300), t0);
        c.insert("no", false, Duration::from_secs(30), t0);
        c.insert("zero", true, Duration::ZERO, t0);
        assert_eq!(c.get(&"ok", t0 + Duration::from_secs(299)), Some(true));
        assert_eq!(c.get(&"no", t0 + Duration::from_secs(29)), Some(false));
        assert_eq!(c.get(&"no", t0 + Duration::from_secs(30)), None);
        assert_eq!(c.get(&"ok", t0 + Duration::from_secs(300)), None);
        assert_eq!(c.get(&"zero", t0), None);
    }

    #[test]
    fn certificate_user_and_groups() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "bob");
        dn.push(rcgen::DnType::OrganizationName, "team");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).expect("cert");
        let u = user_from_cert(cert.der()).expect("user");
        assert_eq!(u.name, "bob");
        assert_eq!(u.groups, vec!["team", "system:authenticated"]);
    }
}
