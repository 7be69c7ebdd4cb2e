//! Request routing: authentication, authorization, then the endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_runtime::ContainerState;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::ObjectMeta;

use super::auth::{Authn, User};
use super::request::{self, Endpoint, StreamTarget};
use super::{exec, health, logs, stats, ws, Body, Server};
use crate::pods::Ctx;
use crate::translate::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    full(status, "text/plain; charset=utf-8", m)
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(b) => full(StatusCode::OK, "application/json", b),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `/healthz` (and `/healthz/ping`, `/healthz/log`, `/healthz/syncloop`), also on the plain port.
pub fn healthz(path: &str, query: Option<&str>, sync_frequency: Duration) -> Response<Body> {
    let pairs = logs::query_pairs(query);
    match health::answer(path, &pairs, sync_frequency) {
        Some(a) => full(
            StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "text/plain; charset=utf-8",
            a.body,
        ),
        None => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Does the request ask to upgrade to a WebSocket?
pub fn is_websocket(h: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Authenticates, authorizes and serves one request. `conn` hears when the connection's user
/// is known (it stops counting as unauthenticated).
pub async fn handle(
    server: Arc<Server>,
    cert_user: Option<User>,
    conn: Arc<super::conn::ConnState>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let target = match request::decide(&method, req.uri().path(), req.uri().query()) {
        request::Decision::Serve(t) => t,
        request::Decision::Redirect(location) => return redirect(&location),
        request::Decision::Bad(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let path = target.path.as_str();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match server
        .auth
        .authenticate(cert_user.as_ref(), authorization)
        .await
    {
        Ok(Authn::User(u)) => u,
        Ok(Authn::Unauthorized) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Err(e) => {
            tracing::warn!(error = %e, "authentication failed");
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    };
    conn.authenticated();
    let attrs = &target.attributes;
    let subresources = attrs
        .iter()
        .map(|a| a.subresource)
        .collect::<Vec<_>>()
        .join(" ");
    let verb = attrs.first().map(|a| a.verb).unwrap_or_default();
    match server.auth.authorize(&user, attrs).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(user = %user.name, %path, verb, subresources, "forbidden");
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{subresources}])",
                    user.name
                ),
            );
        }
        Err(e) => {
            tracing::warn!(user = %user.name, verb, subresources, error = %e, "authorization error");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Authorization error (user={}, verb={verb}, resource=nodes, subresource={})",
                    user.name,
                    attrs.last().map(|a| a.subresource).unwrap_or_default()
                ),
            );
        }
    }
    tracing::debug!(user = %user.name, %method, %path, "request");
    // Volume figures come from the drivers (NodeGetVolumeStats): asked only where they are shown.
    let volumes = match (&target.endpoint, &server.ctx.volume_stats) {
        (Endpoint::StatsSummary | Endpoint::Metrics, Some(stats)) => stats.volume_samples().await,
        _ => Vec::new(),
    };
    route(server, req, target, &volumes)
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = text(
        StatusCode::TEMPORARY_REDIRECT,
        format!("<a href=\"{location}\">Temporary Redirect</a>."),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn route(
    server: Arc<Server>,
    req: Request<Incoming>,
    target: request::Request,
    volumes: &[crate::metrics::VolumeSample],
) -> Response<Body> {
    let websocket = is_websocket(req.headers());
    match target.endpoint {
        Endpoint::Healthz => healthz(
            &target.path,
            req.uri().query(),
            server.ctx.cfg.sync_frequency,
        ),
        Endpoint::Pods => json(&pod_list(&server)),
        Endpoint::RunningPods => json(&running_pods(&server)),
        Endpoint::ContainerLogs {
            namespace,
            pod,
            container,
        } => container_logs(&server, &req, &namespace, &pod, &container),
        Endpoint::Exec(t) => exec_endpoint(server, req, websocket, &t),
        Endpoint::Metrics => full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            stats::agent_metrics(&server.ctx.runtime.list())
                + &crate::metrics::render()
                + &stats::volume_metrics(volumes),
        ),
        Endpoint::MetricsResource => {
            let samples = stats::sample(&server.ctx);
            let body = stats::resource_metrics(stats::node_now(), &samples, SystemTime::now());
            full(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        Endpoint::StatsSummary => {
            let samples = stats::sample(&server.ctx);
            json(&stats::summary(
                &server.node_name,
                stats::node_now(),
                &samples,
                volumes,
                SystemTime::now(),
            ))
        }
        Endpoint::Configz => json(&configz(&server)),
        Endpoint::Attach(t) => attach_endpoint(server, req, websocket, &t),
        Endpoint::PortForward {
            namespace,
            pod,
            uid,
        } => super::portforward::endpoint(
            server.ctx.clone(),
            req,
            websocket,
            &namespace,
            &pod,
            uid.as_deref(),
        ),
        Endpoint::MethodNotAllowed { allow } => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        Endpoint::NotFound => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// `/configz`: the settings bosun runs with, in KubeletConfiguration terms.
fn configz(server: &Server) -> serde_json::Value {
    let c = &server.ctx.cfg;
    let s = &c.server;
    serde_json::json!({"kubeletconfig": {
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "staticPodPath": c.manifests,
        "syncFrequency": format!("{}s", c.sync_frequency.as_secs()),
        "fileCheckFrequency": format!("{}s", c.file_check_frequency.as_secs()),
        "address": s.address,
        "port": s.port,
        "healthzBindAddress": s.healthz_bind_address,
        "healthzPort": s.healthz_port,
        "tlsCertFile": s.tls_cert_file,
        "tlsPrivateKeyFile": s.tls_private_key_file,
        "serverTLSBootstrap": s.server_tls_bootstrap,
        "streamingConnectionIdleTimeout": format!("{}s", s.streaming_connection_idle_timeout.as_secs()),
        "authentication": {
            "x509": {"clientCAFile": s.client_ca_file},
            "webhook": {"enabled": s.webhook_authn,
                        "cacheTTL": format!("{}s", s.authn_cache_ttl.as_secs())},
            "anonymous": {"enabled": s.anonymous_auth},
        },
        "authorization": {
            "mode": if s.authz_webhook { "Webhook" } else { "AlwaysAllow" },
            "webhook": {
                "cacheAuthorizedTTL": format!("{}s", s.authz_cache_authorized_ttl.as_secs()),
                "cacheUnauthorizedTTL": format!("{}s", s.authz_cache_unauthorized_ttl.as_secs()),
            },
        },
        "cgroupRoot": c.cgroup_root,
        "podLogsDir": c.pod_logs_dir,
        "containerLogMaxSize": c.container_log_max_size.to_string(),
        "containerLogMaxFiles": c.container_log_max_files,
        "maxPods": c.max_pods,
        "clusterDNS": c.cluster_dns,
        "clusterDomain": c.cluster_domain,
        "resolvConf": c.resolv_conf,
        "podCIDR": c.pod_cidr,
        "serializeImagePulls": c.serialize_image_pulls,
        "imageGCHighThresholdPercent": c.image_gc_high_threshold_percent,
        "imageGCLowThresholdPercent": c.image_gc_low_threshold_percent,
    }})
}

fn list_of(items: Vec<Pod>) -> serde_json::Value {
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// The pods this node runs, as it last wrote their status.
fn pod_list(server: &Server) -> serde_json::Value {
    let mut items = crate::pods::status::read_all(&server.ctx.cfg.run_dir);
    for p in &mut items {
        p.metadata.managed_fields = None;
    }
    list_of(items)
}

/// Pods with running containers, from the runtime alone (the kubelet's /runningpods).
fn running_pods(server: &Server) -> serde_json::Value {
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    for c in server.ctx.runtime.list() {
        if !matches!(c.state, ContainerState::Running { .. }) {
            continue;
        }
        let Some(uid) = c.labels.get(LABEL_POD_UID) else {
            continue;
        };
        let pod = pods.entry(uid.clone()).or_insert_with(|| Pod {
            metadata: ObjectMeta {
                name: c.labels.get(LABEL_POD_NAME).cloned(),
                namespace: c.labels.get(LABEL_POD_NAMESPACE).cloned(),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        });
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers.push(Container {
                name: c
                    .labels
                    .get(LABEL_CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default(),
                image: Some(c.image.clone()),
                ..Default::default()
            });
        }
    }
    list_of(pods.into_values().collect())
}

fn container_logs(
    server: &Server,
    req: &Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let pairs = logs::query_pairs(req.uri().query());
    let opts = match logs::parse_options(&pairs, SystemTime::now()) {
        Ok(o) => o,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return text(status, e.to_string());
        }
    };
    let (path, id) = match logs::find_log(&server.ctx, ns, pod, container, opts.previous) {
        Ok(x) => x,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(logs::stream(server.ctx.clone(), path, id, opts, tx));
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(chunks).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn exec_endpoint(
    server: Arc<Server>,
    req: Request<Incoming>,
    websocket: bool,
    target: &StreamTarget,
) -> Response<Body> {
    let pairs = logs::query_pairs(req.uri().query());
    match exec::parse_request(&pairs) {
        Ok(r) => streaming(server, req, websocket, target, r, false),
        Err(e) => text(StatusCode::BAD_REQUEST, e),
    }
}

fn attach_endpoint(
    server: Arc<Server>,
    req: Request<Incoming>,
    websocket: bool,
    target: &StreamTarget,
) -> Response<Body> {
    let pairs = logs::query_pairs(req.uri().query());
    match exec::parse_streams(&pairs, Vec::new()) {
        Ok(r) => streaming(server, req, websocket, target, r, true),
        Err(e) => text(StatusCode::BAD_REQUEST, e),
    }
}

/// Why an exec or attach request has no container to enter: the status and text to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct NoContainer(pub StatusCode, pub String);

/// The running attempt an exec or attach request enters: the newest running attempt of the
/// container, of the pod with the path's uid when there is one. A uid that is not the pod's is
/// refused as the kubelet's attach refuses it (`pod <name>_<namespace> not found`, 500): a pod
/// recreated under the same name is not entered by a request meant for the old one.
pub fn running_attempt(
    attempts: Vec<bosun_runtime::ContainerStatus>,
    target: &StreamTarget,
) -> Result<bosun_runtime::ContainerStatus, NoContainer> {
    let (ns, pod, container) = (&target.namespace, &target.pod, &target.container);
    let mut of_pod = attempts;
    if let Some(uid) = target.uid.as_deref() {
        let known = !of_pod.is_empty();
        of_pod.retain(|c| c.labels.get(LABEL_POD_UID).map(String::as_str) == Some(uid));
        if known && of_pod.is_empty() {
            return Err(NoContainer(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("pod {pod}_{ns} not found"),
            ));
        }
    }
    of_pod
        .into_iter()
        .rev()
        .find(|c| matches!(c.state, ContainerState::Running { .. }))
        .ok_or_else(|| {
            NoContainer(
                StatusCode::NOT_FOUND,
                format!("container \"{container}\" in pod \"{pod}\" is not running"),
            )
        })
}

/// Upgrades an exec or attach request to a WebSocket or SPDY session with the container's
/// running attempt.
fn streaming(
    server: Arc<Server>,
    req: Request<Incoming>,
    websocket: bool,
    st: &StreamTarget,
    ereq: exec::ExecRequest,
    attach: bool,
) -> Response<Body> {
    let ctx = server.ctx.clone();
    let st = st.clone();
    let resolve = move || {
        running_attempt(
            logs::attempts(&ctx, &st.namespace, &st.pod, &st.container),
            &st,
        )
    };
    session(server.ctx.clone(), req, websocket, resolve, ereq, attach)
}

/// Upgrades an exec or attach request to a session (WebSocket when `websocket`, else SPDY/3.1)
/// with the container `resolve` finds, once the request's protocol is known to be served. The
/// kubelet API's `/exec` and `/attach` and the CRI socket's streaming URLs both end here.
pub fn session(
    ctx: Arc<Ctx>,
    mut req: Request<Incoming>,
    websocket: bool,
    resolve: impl FnOnce() -> Result<bosun_runtime::ContainerStatus, NoContainer>,
    ereq: exec::ExecRequest,
    attach: bool,
) -> Response<Body> {
    if !websocket {
        return super::spdy_exec::endpoint(ctx, req, resolve, ereq, attach);
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Some(protocol) = ws::negotiate(offered) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("no supported subprotocol ({})", ws::SUPPORTED.join(", ")),
        );
    };
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let target = match resolve() {
        Ok(t) => t,
        Err(NoContainer(status, msg)) => return text(status, msg),
    };
    let kind = if attach {
        exec::Kind::Attach {
            log: target.log_path.clone(),
        }
    } else {
        exec::Kind::Exec
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => exec::serve(ctx, up, protocol, target.id, ereq, kind).await,
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if protocol != ws::NONE {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_websocket(&h));
    }

    /// A uid in the path must be the pod's: a pod recreated under the same name is not entered
    /// by a request meant for the old one.
    #[test]
    fn a_pod_uid_in_the_path_must_be_the_pods() {
        let attempt = |uid: &str, n: u32, running: bool| bosun_runtime::ContainerStatus {
            id: format!("{uid}_c_{n}"),
            labels: [(LABEL_POD_UID.to_string(), uid.to_string())].into(),
            state: if running {
                ContainerState::Running {
                    pid: 1,
                    started_at: SystemTime::UNIX_EPOCH,
                }
            } else {
                ContainerState::Created
            },
            image: String::new(),
            image_id: String::new(),
            log_path: Default::default(),
            resources: Default::default(),
        };
        let target = |uid: Option<&str>| StreamTarget {
            namespace: "ns".into(),
            pod: "p".into(),
            uid: uid.map(Into::into),
            container: "c".into(),
        };
        let attempts = vec![attempt("old", 0, false), attempt("new", 0, true)];
        let pick = |uid| running_attempt(attempts.clone(), &target(uid));
        assert_eq!(pick(None).map(|c| c.id), Ok("new_c_0".to_string()));
        assert_eq!(pick(Some("new")).map(|c| c.id), Ok("new_c_0".to_string()));
        assert_eq!(
            pick(Some("other")),
            Err(NoContainer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "pod p_ns not found".into()
            ))
        );
        // The old pod's uid names a pod whose container does not run.
        assert_eq!(
            pick(Some("old")).map_err(|e| e.0),
            Err(StatusCode::NOT_FOUND)
        );
        // No such container at all: not running, whatever the uid.
        assert_eq!(
            running_attempt(Vec::new(), &target(Some("x"))).map_err(|e| e.0),
            Err(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn healthz_paths() {
        let f = Duration::from_secs(60);
        assert_eq!(healthz("/healthz", None, f).status(), StatusCode::OK);
        assert_eq!(healthz("/healthz/ping", None, f).status(), StatusCode::OK);
        assert_eq!(healthz("/other", None, f).status(), StatusCode::NOT_FOUND);
    }
}
