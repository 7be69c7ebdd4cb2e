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

use super::auth::{self, Authn, User};
use super::{exec, health, logs, stats, ws, Body, Server};
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

/// Authenticates, authorizes and serves one request.
pub async fn handle(
    server: Arc<Server>,
    cert_user: Option<User>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let websocket = is_websocket(req.headers());
    let Some(attrs) = auth::attributes(&method, &path, websocket) else {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    };
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
    match server.auth.authorize(&user, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            let a = attrs.last().copied().unwrap_or(auth::Attributes {
                verb: "get",
                subresource: "proxy",
            });
            tracing::info!(user = %user.name, %path, verb = a.verb, subresource = a.subresource, "forbidden");
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                    user.name, a.verb, a.subresource
                ),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "authorization failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error (user={}): {e}", user.name),
            );
        }
    }
    tracing::debug!(user = %user.name, %method, %path, "request");
    // Volume figures come from the drivers (NodeGetVolumeStats): asked only where they are shown.
    let volumes = match (path.as_str(), &server.ctx.volume_stats) {
        ("/stats/summary" | "/metrics", Some(stats)) => stats.volume_samples().await,
        _ => Vec::new(),
    };
    route(server, req, &path, websocket, &volumes)
}

fn route(
    server: Arc<Server>,
    req: Request<Incoming>,
    path: &str,
    websocket: bool,
    volumes: &[crate::metrics::VolumeSample],
) -> Response<Body> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz", ..] => healthz(path, req.uri().query(), server.ctx.cfg.sync_frequency),
        ["pods"] | ["pods", ""] => json(&pod_list(&server)),
        ["runningpods"] | ["runningpods", ""] => json(&running_pods(&server)),
        ["containerLogs", ns, pod, container] => container_logs(&server, &req, ns, pod, container),
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec_endpoint(server, req, websocket, &ns, &pod, &container)
        }
        ["metrics"] => full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            stats::agent_metrics(&server.ctx.runtime.list())
                + &crate::metrics::render()
                + &stats::volume_metrics(volumes),
        ),
        ["metrics", "resource"] => {
            let samples = stats::sample(&server.ctx);
            let body = stats::resource_metrics(stats::node_now(), &samples, SystemTime::now());
            full(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        ["stats", "summary"] => {
            let samples = stats::sample(&server.ctx);
            json(&stats::summary(
                &server.node_name,
                stats::node_now(),
                &samples,
                volumes,
                SystemTime::now(),
            ))
        }
        ["configz"] => json(&configz(&server)),
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            attach_endpoint(server, req, websocket, &ns, &pod, &container)
        }
        ["portForward", ns, pod] => {
            super::portforward::endpoint(server.ctx.clone(), req, websocket, ns, pod, None)
        }
        ["portForward", ns, pod, uid] => {
            super::portforward::endpoint(server.ctx.clone(), req, websocket, ns, pod, Some(uid))
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
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
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
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
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let pairs = logs::query_pairs(req.uri().query());
    match exec::parse_request(&pairs) {
        Ok(r) => streaming(server, req, websocket, ns, pod, container, r, false),
        Err(e) => text(StatusCode::BAD_REQUEST, e),
    }
}

fn attach_endpoint(
    server: Arc<Server>,
    req: Request<Incoming>,
    websocket: bool,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let pairs = logs::query_pairs(req.uri().query());
    match exec::parse_streams(&pairs, Vec::new()) {
        Ok(r) => streaming(server, req, websocket, ns, pod, container, r, true),
        Err(e) => text(StatusCode::BAD_REQUEST, e),
    }
}

/// Upgrades an exec or attach request to a WebSocket session.
#[allow(clippy::too_many_arguments)]
fn streaming(
    server: Arc<Server>,
    mut req: Request<Incoming>,
    websocket: bool,
    ns: &str,
    pod: &str,
    container: &str,
    ereq: exec::ExecRequest,
    attach: bool,
) -> Response<Body> {
    if !websocket {
        return super::spdy_exec::endpoint(server, req, ns, pod, container, ereq, attach);
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
            "no supported subprotocol (v5.channel.k8s.io, v4.channel.k8s.io)",
        );
    };
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let running = logs::attempts(&server.ctx, ns, pod, container)
        .into_iter()
        .rev()
        .find(|c| matches!(c.state, ContainerState::Running { .. }));
    let Some(target) = running else {
        return text(
            StatusCode::NOT_FOUND,
            format!("container \"{container}\" in pod \"{pod}\" is not running"),
        );
    };
    let kind = if attach {
        exec::Kind::Attach {
            log: target.log_path.clone(),
        }
    } else {
        exec::Kind::Exec
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ctx = server.ctx.clone();
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
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
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

    #[test]
    fn healthz_paths() {
        let f = Duration::from_secs(60);
        assert_eq!(healthz("/healthz", None, f).status(), StatusCode::OK);
        assert_eq!(healthz("/healthz/ping", None, f).status(), StatusCode::OK);
        assert_eq!(healthz("/other", None, f).status(), StatusCode::NOT_FOUND);
    }
}
