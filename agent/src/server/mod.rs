//! The kubelet HTTP API: HTTPS on `port` (10250) behind the kubelet's authentication and
//! authorization, and plain `/healthz` on `healthzBindAddress:healthzPort` (127.0.0.1:10248).
//!
//! Endpoints: `/healthz`, `/pods`, `/runningpods/`, `/containerLogs/{ns}/{pod}/{container}`,
//! `/exec/{ns}/{pod}/{container}` and `/attach/...` over WebSocket (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`; the node declares `ExtendWebSocketsToKubelet` so 1.36+ apiservers proxy
//! WebSockets here instead of translating them to SPDY) or SPDY/3.1 (what the apiserver sends
//! when it translates), `/portForward/{ns}/{pod}[/{uid}]` (SPDY `portforward.k8s.io` tunneled in
//! a WebSocket or not, WebSocket `v4.channel.k8s.io`).
//!
//! Every request is decided once ([`request`]: the clean, decoded path, the verb, the
//! authorization attributes and the endpoint) before authentication, authorization and routing
//! use it; every connection has the read deadlines of its phase and unauthenticated ones are
//! capped ([`conn`]).

pub mod auth;
pub mod conn;
pub mod csr;
pub mod exec;
pub mod health;
pub mod logs;
pub mod portforward;
pub mod request;
pub mod routes;
pub mod spdy;
pub mod spdy_conn;
pub mod spdy_exec;
pub mod stats;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpListener;

use crate::pods::Ctx;

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// The node feature that makes 1.36+ apiservers send exec/attach/port-forward WebSockets
/// straight to the node (`node.status.declaredFeatures`).
pub const WEBSOCKET_FEATURE: &str = "ExtendWebSocketsToKubelet";

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
pub struct Server {
    pub ctx: Arc<Ctx>,
    pub auth: auth::Auth,
    pub node_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Starts the API in the background (errors are logged: the node keeps running pods without it).
pub fn spawn(client: kube::Client, node_name: String, ctx: Arc<Ctx>, addresses: Vec<String>) {
    tokio::spawn(async move {
        if let Err(e) = start(client, node_name, ctx, addresses).await {
            tracing::error!(error = %e, "kubelet API not started");
        }
    });
}

/// Makes or loads the serving certificate, binds both listeners and serves them in background
/// tasks. Returns once listening.
pub async fn start(
    client: kube::Client,
    node_name: String,
    ctx: Arc<Ctx>,
    addresses: Vec<String>,
) -> Result<(), ServerError> {
    let cfg = ctx.cfg.server.clone();
    if cfg.healthz_port != 0 {
        let haddr = join_host_port(&cfg.healthz_bind_address, cfg.healthz_port);
        let hl = TcpListener::bind(&haddr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: haddr.clone(),
                source,
            })?;
        tracing::info!(addr = %haddr, "healthz listening");
        tokio::spawn(serve_healthz(
            hl,
            ctx.cfg.sync_frequency,
            conn::Limits::of(&cfg),
        ));
    }
    let (cert, key) = if cfg.server_tls_bootstrap && cfg.tls_cert_file.is_none() {
        let f = csr::serving_file(&client, &node_name, &addresses, &ctx.cfg.cert_dir).await?;
        (f.clone(), f)
    } else {
        tls::serving_files(&cfg, &ctx.cfg.cert_dir, &node_name, &addresses)?
    };
    let tls_cfg = tls::server_config(&cert, &key, cfg.client_ca_file.as_deref())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_cfg));
    let addr = join_host_port(&cfg.address, cfg.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, client_ca = ?cfg.client_ca_file, "kubelet API listening");
    let server = Arc::new(Server {
        auth: auth::Auth::new(client, node_name.clone(), cfg),
        ctx,
        node_name,
    });
    tokio::spawn(serve_https(listener, acceptor, server));
    Ok(())
}

fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

async fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<Server>,
) {
    let limits = conn::Limits::of(&server.ctx.cfg.server);
    let permits = conn::permits(&limits);
    loop {
        // An unauthenticated connection holds a permit from before it is accepted until one of
        // its requests authenticates: a flood waits in the backlog.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let cert_user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| auth::user_from_cert(c));
            let state = conn::ConnState::new(Some(permit));
            if cert_user.is_some() {
                state.authenticated();
            }
            let st = state.clone();
            let handler =
                move |req| routes::handle(server.clone(), cert_user.clone(), st.clone(), req);
            if let Err(e) = conn::serve(stream, state, limits, handler).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

async fn serve_healthz(listener: TcpListener, sync_frequency: Duration, limits: conn::Limits) {
    let permits = conn::permits(&limits);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            // Nothing to authenticate here: the permit is held for the connection's life.
            let state = conn::ConnState::new(Some(permit));
            let handler = move |req: hyper::Request<hyper::body::Incoming>| async move {
                routes::healthz(req.uri().path(), req.uri().query(), sync_frequency)
            };
            let _ = conn::serve(tcp, state, limits, handler).await;
        });
    }
}
