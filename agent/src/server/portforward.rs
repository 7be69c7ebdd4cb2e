//! `/portForward/{ns}/{pod}[/{uid}]`: connections to ports inside the pod's network namespace.
//!
//! Protocols, as the kubelet serves them:
//! - SPDY/3.1 `portforward.k8s.io`, on the upgraded connection (`Upgrade: SPDY/3.1`; what
//!   apiservers send when they translate) or tunneled through a WebSocket whose subprotocol is
//!   `SPDY/3.1+portforward.k8s.io` (kubectl 1.30+; passed through by 1.36 apiservers to nodes
//!   declaring `ExtendWebSocketsToKubelet`). For every forwarded connection the client opens
//!   an error stream and a data stream with headers `streamtype` (`error`/`data`), `port` and
//!   `requestid`; the pair gets one TCP connection to 127.0.0.1:`port` (or [::1]) in the pod's
//!   network namespace; a failure is written as text on the error stream, then both end.
//! - WebSocket `v4.channel.k8s.io` (and no subprotocol) with `?port=P[&port=Q]`: channels
//!   2i (data) and 2i+1 (error) for the i-th port, each starting with the port as 2 bytes,
//!   little endian; one TCP connection per port for the whole session.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::spdy::{self, Headers};
use super::spdy_conn::{self, Io, Stream, CHUNK};
use super::Body;
use crate::pods::Ctx;
use crate::translate::{LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

/// The SPDY subprotocol (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket channel protocol.
pub const WS_V4: &str = "v4.channel.k8s.io";

/// How long the second stream of a pair may take (the kubelet's streamCreationTimeout).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the pod's side closed, how long the client's remaining data may still drain.
const DRAIN: Duration = Duration::from_secs(1);

/// The pod whose ports are forwarded.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pinned network namespace; None for hostNetwork pods.
    pub netns: Option<PathBuf>,
}

/// Why a connection into a pod could not be made. The messages go to the client (on the error
/// stream), so they read as the kubelet's and containerd's: no Rust debug text.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("open network namespace {}: {}", path.display(), go_text(source))]
    OpenNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enter network namespace {}: {}", path.display(), source.desc().to_lowercase())]
    Setns { path: PathBuf, source: nix::Error },
    #[error(
        "failed to connect to localhost:{port} inside namespace {}, IPv4: dial tcp4 127.0.0.1:{port}: connect: {} IPv6 dial tcp6 [::1]:{port}: connect: {}",
        namespace_name(netns.as_deref()), go_text(v4), go_text(v6)
    )]
    Connect {
        port: u16,
        netns: Option<PathBuf>,
        v4: std::io::Error,
        v6: std::io::Error,
    },
    #[error("no thread to connect from: {}", go_text(.0))]
    Thread(std::io::Error),
    #[error("the connecting thread ended without an answer")]
    NoAnswer,
    #[error("socket: {}", go_text(.0))]
    Socket(std::io::Error),
}

/// The network namespace as a message names it.
fn namespace_name(netns: Option<&std::path::Path>) -> String {
    match netns {
        Some(p) => format!("{:?}", p.display().to_string()),
        None => "\"host\"".into(),
    }
}

/// An I/O error as Go prints a system call's error: the lowercase `strerror` text, without
/// Rust's `(os error N)`; a timeout is Go's `i/o timeout`.
pub fn go_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None if e.kind() == std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        None => e.to_string(),
    }
}

/// Connects to localhost:`port` in `netns`, on a short-lived thread that enters the namespace
/// (the socket keeps the namespace it was made in; the thread and its namespace end).
pub async fn dial(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, DialError> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("bosun-portfwd".into())
        .spawn(move || {
            let _ = tx.send(dial_blocking(netns, port));
        })
        .map_err(DialError::Thread)?;
    let s = rx.await.map_err(|_| DialError::NoAnswer)??;
    s.set_nonblocking(true).map_err(DialError::Socket)?;
    TcpStream::from_std(s).map_err(DialError::Socket)
}

fn dial_blocking(netns: Option<PathBuf>, port: u16) -> Result<std::net::TcpStream, DialError> {
    if let Some(path) = &netns {
        let f = std::fs::File::open(path).map_err(|source| DialError::OpenNetns {
            path: path.clone(),
            source,
        })?;
        // Only this thread moves; it exits right after.
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
            DialError::Setns {
                path: path.clone(),
                source,
            }
        })?;
    }
    let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => match std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT) {
            Ok(s) => Ok(s),
            Err(e6) => Err(DialError::Connect {
                port,
                netns,
                v4: e4,
                v6: e6,
            }),
        },
    }
}

/// The port of a `port` header (1..=65535).
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) => Err(format!("port \"{s}\" must be > 0")),
        Ok(p) => Ok(p),
        Err(e) => Err(format!("unable to parse \"{s}\" as a port: {e}")),
    }
}

/// Which streams the SPDY session accepts (the kubelet's httpStreamReceived).
pub fn validate(headers: &Headers) -> Result<(), String> {
    let port = spdy::header(headers, "port").ok_or("\"port\" header is required")?;
    parse_port(port)?;
    match spdy::header(headers, "streamtype") {
        Some("data" | "error") => Ok(()),
        Some(t) => Err(format!("invalid stream type \"{t}\"")),
        None => Err("\"streamtype\" header is required".into()),
    }
}

/// The pair a stream belongs to: its `requestid`, or for old clients a guess from the ids
/// (error stream n, data stream n+2), as the kubelet does.
pub fn request_id(headers: &Headers, stream_id: u32) -> String {
    if let Some(r) = spdy::header(headers, "requestid") {
        return r.to_string();
    }
    match spdy::header(headers, "streamtype") {
        Some("data") => stream_id.wrapping_sub(2).to_string(),
        _ => stream_id.to_string(),
    }
}

/// Serves a SPDY port-forward session on `io`.
pub async fn serve_spdy(io: Io, target: Target) {
    let (tx, rx) = mpsc::channel::<Stream>(16);
    let pairing = tokio::spawn(pair_streams(rx, Arc::new(target)));
    spdy_conn::serve(io, validate, tx).await;
    let _ = pairing.await;
}

struct Pending {
    since: Instant,
    data: Option<Stream>,
    error: Option<Stream>,
}

/// Pairs data and error streams and forwards each pair; ends (aborting the forwards) when the
/// connection does.
async fn pair_streams(mut streams: mpsc::Receiver<Stream>, target: Arc<Target>) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        while tasks.try_join_next().is_some() {}
        let s = tokio::select! {
            s = streams.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = tick.tick() => {
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.elapsed() > PAIR_TIMEOUT)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in expired {
                    if let Some(p) = pending.remove(&k) {
                        tasks.spawn(time_out(p));
                    }
                }
                continue;
            }
        };
        let key = request_id(&s.headers, s.id);
        let p = pending.entry(key.clone()).or_insert_with(|| Pending {
            since: Instant::now(),
            data: None,
            error: None,
        });
        let slot = if s.header("streamtype") == Some("data") {
            &mut p.data
        } else {
            &mut p.error
        };
        if slot.is_some() {
            tracing::debug!(request = %key, "port-forward: duplicate stream");
            s.out.reset(s.id, spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        if p.data.is_some() && p.error.is_some() {
            if let Some(Pending {
                data: Some(d),
                error: Some(e),
                ..
            }) = pending.remove(&key)
            {
                tasks.spawn(forward_pair(target.clone(), d, e));
            }
        }
    }
    tasks.shutdown().await;
}

async fn time_out(p: Pending) {
    let msg = b"timed out waiting for streams";
    if let Some(e) = &p.error {
        e.out.data(e.id, msg, true).await;
    }
    if let Some(d) = &p.data {
        d.out.reset(d.id, spdy::RST_CANCEL).await;
    }
}

async fn forward_pair(target: Arc<Target>, data: Stream, error: Stream) {
    let port = data
        .header("port")
        .and_then(|p| parse_port(p).ok())
        .unwrap_or(0);
    let (id, out) = (data.id, data.out.clone());
    tracing::debug!(pod = %format!("{}/{}", target.namespace, target.name), port, stream = id, "port-forward");
    let result = match dial(target.netns.clone(), port).await {
        Ok(tcp) => {
            pump(tcp, data.rx, |b: Vec<u8>| {
                let out = out.clone();
                async move { out.data(id, &b, false).await }
            })
            .await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    out.finish(id).await;
    if let Err(e) = result {
        let msg = format!(
            "error forwarding port {port} to pod {}/{}, uid {}: {e}",
            target.namespace, target.name, target.uid
        );
        tracing::info!("{msg}");
        error.out.data(error.id, msg.as_bytes(), false).await;
    }
    error.out.finish(error.id).await;
}

/// Copies the client's data into `tcp` (half-closing it when the client finishes) and `tcp`'s
/// data to `send`, until the pod's side ends (then the client's side gets [`DRAIN`] more) or
/// both have.
async fn pump<F, Fut>(tcp: TcpStream, mut from_client: mpsc::Receiver<Vec<u8>>, send: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (mut r, mut w) = tcp.into_split();
    let up = async move {
        while let Some(b) = from_client.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !send(buf[..n].to_vec()).await {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => down.await,
        _ = &mut down => { let _ = tokio::time::timeout(DRAIN, up).await; }
    }
}

/// The ports of a WebSocket port-forward request (`port`, repeated or comma-separated).
pub fn query_ports(pairs: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in pairs {
        if k == "port" {
            for p in v.split(',') {
                ports.push(parse_port(p)?);
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Serves the WebSocket channel protocol: one connection per port for the whole session.
pub async fn serve_websocket(upgraded: hyper::upgrade::Upgraded, target: Target, ports: Vec<u16>) {
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    });
    let frame = |ch: usize, data: &[u8]| Message::binary(super::ws::frame(ch as u8, data));
    let mut inputs = Vec::new();
    let mut tasks = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = (2 * i, 2 * i + 1);
        let _ = tx.send(frame(data_ch, &port.to_le_bytes())).await;
        let _ = tx.send(frame(err_ch, &port.to_le_bytes())).await;
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
        inputs.push(Some(in_tx));
        let (tx, target) = (tx.clone(), target.clone());
        tasks.spawn(async move {
            match dial(target.netns.clone(), port).await {
                Ok(tcp) => {
                    pump(tcp, in_rx, |b: Vec<u8>| {
                        let tx = tx.clone();
                        async move { tx.send(frame(data_ch, &b)).await.is_ok() }
                    })
                    .await
                }
                Err(e) => {
                    let msg = format!(
                        "error forwarding port {port} to pod {}/{}, uid {}: {e}",
                        target.namespace, target.name, target.uid
                    );
                    let _ = tx.send(frame(err_ch, msg.as_bytes())).await;
                }
            }
        });
    }
    drop(tx);
    let client = async {
        while let Some(Ok(m)) = incoming.next().await {
            let b = match m {
                Message::Binary(b) => b,
                Message::Close(_) => return,
                _ => continue,
            };
            let Some((&ch, data)) = b.split_first() else {
                continue;
            };
            // Data channels are even; the error channels are ours to write.
            let idx = usize::from(ch) / 2;
            if ch % 2 == 0 && !data.is_empty() {
                if let Some(Some(t)) = inputs.get(idx) {
                    if t.send(data.to_vec()).await.is_err() {
                        inputs[idx] = None;
                    }
                }
            }
        }
    };
    let all_done = async { while tasks.join_next().await.is_some() {} };
    tokio::select! {
        _ = client => {}
        _ = all_done => {}
    }
    tasks.shutdown().await;
    let _ = writer.await;
}

/// The pod `ns/name` (with `uid` when the path has one) as this node runs it: the newest
/// container's pod uid, preferring running containers, and the sandbox's network namespace.
pub fn find_target(ctx: &Ctx, ns: &str, name: &str, uid: Option<&str>) -> Option<Target> {
    let all = ctx.runtime.list();
    let of_pod = |c: &&bosun_runtime::ContainerStatus| {
        c.labels.get(LABEL_POD_NAMESPACE).map(String::as_str) == Some(ns)
            && c.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(name)
            && uid.is_none_or(|u| c.labels.get(LABEL_POD_UID).map(String::as_str) == Some(u))
    };
    let pick = all
        .iter()
        .filter(of_pod)
        .find(|c| matches!(c.state, bosun_runtime::ContainerState::Running { .. }))
        .or_else(|| all.iter().find(of_pod))?;
    let pod_uid = pick.labels.get(LABEL_POD_UID)?.clone();
    let sandbox = ctx.runtime.sandbox(&pod_uid)?;
    Some(Target {
        namespace: ns.to_string(),
        name: name.to_string(),
        uid: pod_uid,
        netns: sandbox.netns,
    })
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn values<'a>(h: &'a hyper::HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// How a port-forward request wants to talk.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// WebSocket carrying SPDY.
    Tunnel,
    /// WebSocket channels (`v4.channel.k8s.io` or none): the answered subprotocol.
    WebSocket(Option<&'static str>),
    /// SPDY on the connection; the answered `X-Stream-Protocol-Version` (none for old clients).
    Spdy(Option<&'static str>),
}

/// Picks the protocol from the request's headers (the kubelet's order: tunneling first).
pub fn negotiate(h: &hyper::HeaderMap, websocket: bool) -> Result<Upgrade, String> {
    if websocket {
        let offered = values(h, "sec-websocket-protocol");
        if offered.contains(&TUNNEL_PROTOCOL) {
            return Ok(Upgrade::Tunnel);
        }
        if offered.contains(&WS_V4) {
            return Ok(Upgrade::WebSocket(Some(WS_V4)));
        }
        if offered.is_empty() {
            return Ok(Upgrade::WebSocket(None));
        }
        return Err(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{TUNNEL_PROTOCOL}\" \"{WS_V4}\"]"
        ));
    }
    let spdy = values(h, "upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    if !spdy {
        return Err("unable to upgrade: missing upgrade headers in request".into());
    }
    let offered = values(h, "x-stream-protocol-version");
    if offered.is_empty() {
        return Ok(Upgrade::Spdy(None));
    }
    if offered.contains(&PROTOCOL) {
        return Ok(Upgrade::Spdy(Some(PROTOCOL)));
    }
    Err(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PROTOCOL}\"]"
    ))
}

/// `/portForward/{ns}/{pod}[/{uid}]`: answers the upgrade and serves the session in the
/// background.
pub fn endpoint(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    websocket: bool,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Response<Body> {
    upgrade(req, websocket, || {
        find_target(&ctx, ns, pod, uid).ok_or_else(|| {
            // The kubelet's answers: no pod of that name, or one whose uid is not the path's.
            if uid.is_some() && find_target(&ctx, ns, pod, None).is_some() {
                "pod not found".to_string()
            } else {
                "pod does not exist".to_string()
            }
        })
    })
}

/// Answers a port-forward request (SPDY, SPDY tunneled in WebSocket, or WebSocket channels)
/// to the pod `target` finds (its error: 404 with that message), and serves the session in
/// the background. The kubelet API's `/portForward` and the CRI streaming server's
/// `/portforward/<token>` both end here.
pub fn upgrade(
    mut req: Request<Incoming>,
    websocket: bool,
    target: impl FnOnce() -> Result<Target, String>,
) -> Response<Body> {
    let upgrade = match negotiate(req.headers(), websocket) {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
    };
    let ports = match upgrade {
        Upgrade::WebSocket(_) => match query_ports(&super::logs::query_pairs(req.uri().query())) {
            Ok(p) => p,
            Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
        },
        _ => Vec::new(),
    };
    let target = match target() {
        Ok(t) => t,
        Err(msg) => return plain(StatusCode::NOT_FOUND, &msg),
    };
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    if websocket && key.is_none() {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match &upgrade {
        Upgrade::Spdy(p) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Some(p) = p {
                h.insert("x-stream-protocol-version", HeaderValue::from_static(p));
            }
        }
        Upgrade::Tunnel | Upgrade::WebSocket(_) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Some(k) = &key {
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes());
                if let Ok(v) = HeaderValue::from_str(&accept) {
                    h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
                }
            }
            let proto = match &upgrade {
                Upgrade::Tunnel => Some(TUNNEL_PROTOCOL),
                Upgrade::WebSocket(p) => *p,
                Upgrade::Spdy(_) => None,
            };
            if let Some(p) = proto {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
            }
        }
    }
    tracing::info!(
        pod = %format!("{}/{}", target.namespace, target.name),
        protocol = ?upgrade,
        "port-forward"
    );
    tokio::spawn(async move {
        let up = match on_upgrade.await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        match upgrade {
            Upgrade::Spdy(_) => serve_spdy(spdy_conn::raw_io(up), target).await,
            Upgrade::Tunnel => serve_spdy(spdy_conn::tunnel_io(up).await, target).await,
            Upgrade::WebSocket(_) => serve_websocket(up, target, ports).await,
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validates_streams_like_the_kubelet() {
        assert!(validate(&h(&[("port", "80"), ("streamtype", "data")])).is_ok());
        assert!(validate(&h(&[("port", "80"), ("streamtype", "error")])).is_ok());
        assert!(validate(&h(&[("streamtype", "data")])).is_err());
        assert!(validate(&h(&[("port", "0"), ("streamtype", "data")])).is_err());
        assert!(validate(&h(&[("port", "x"), ("streamtype", "data")])).is_err());
        assert!(validate(&h(&[("port", "80"), ("streamtype", "stdin")])).is_err());
    }

    #[test]
    fn pairs_by_request_id_or_stream_ids() {
        let d = h(&[("streamtype", "data"), ("requestid", "4")]);
        assert_eq!(request_id(&d, 9), "4");
        assert_eq!(request_id(&h(&[("streamtype", "error")]), 1), "1");
        assert_eq!(request_id(&h(&[("streamtype", "data")]), 3), "1");
    }

    #[test]
    fn negotiates_like_the_kubelet() {
        let hm = |pairs: &[(&'static str, &'static str)]| {
            let mut m = hyper::HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        let tunnel = hm(&[(
            "sec-websocket-protocol",
            "SPDY/3.1+portforward.k8s.io, v4.channel.k8s.io",
        )]);
        assert_eq!(negotiate(&tunnel, true), Ok(Upgrade::Tunnel));
        let ws = hm(&[("sec-websocket-protocol", "v4.channel.k8s.io")]);
        assert_eq!(negotiate(&ws, true), Ok(Upgrade::WebSocket(Some(WS_V4))));
        assert_eq!(negotiate(&hm(&[]), true), Ok(Upgrade::WebSocket(None)));
        assert!(negotiate(&hm(&[("sec-websocket-protocol", "x")]), true).is_err());
        let spdy = hm(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]);
        assert_eq!(negotiate(&spdy, false), Ok(Upgrade::Spdy(Some(PROTOCOL))));
        assert_eq!(
            negotiate(&hm(&[("upgrade", "SPDY/3.1")]), false),
            Ok(Upgrade::Spdy(None))
        );
        let wrong = hm(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert!(negotiate(&wrong, false).is_err());
        assert!(negotiate(&hm(&[]), false).is_err());
    }

    #[test]
    fn websocket_ports() {
        let q = |s: &str| super::super::logs::query_pairs(Some(s));
        assert_eq!(query_ports(&q("port=80&port=81,82")), Ok(vec![80, 81, 82]));
        assert!(query_ports(&q("x=1")).is_err());
        assert!(query_ports(&q("port=0")).is_err());
    }

    /// A whole SPDY session against a local TCP server (host network: no namespace).
    #[tokio::test]
    async fn forwards_a_pair_and_reports_refused_ports() {
        use spdy::Frame;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(b"pong:").await.expect("write");
            s.write_all(&buf).await.expect("write");
        });
        // A closed port: bind and drop.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (c_tx, s_rx) = mpsc::channel(16);
        let (s_tx, mut c_rx) = mpsc::channel(16);
        let target = Target {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            netns: None,
        };
        tokio::spawn(serve_spdy(Io { rx: s_rx, tx: s_tx }, target));
        let mut enc = spdy::Encoder::new().expect("enc");
        let mut dec = spdy::Decoder::new();
        let syn = |id: u32, t: &str, p: u16, r: &str| Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: h(&[
                ("streamtype", t),
                ("port", &p.to_string()),
                ("requestid", r),
            ]),
        };
        for f in [
            syn(1, "error", port, "0"),
            Frame::data(1, Vec::new(), true),
            syn(3, "data", port, "0"),
            Frame::data(3, b"hello".to_vec(), false),
            syn(5, "error", closed, "1"),
            syn(7, "data", closed, "1"),
        ] {
            c_tx.send(enc.encode(&f).expect("encode"))
                .await
                .expect("send");
        }
        let mut got: HashMap<u32, (Vec<u8>, bool)> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while [1, 3, 5, 7]
            .iter()
            .any(|i| !got.get(i).is_some_and(|g| g.1))
        {
            let frame = loop {
                if let Some(f) = dec.next_frame().expect("decode") {
                    break f;
                }
                let b = tokio::time::timeout_at(deadline, c_rx.recv())
                    .await
                    .expect("in time")
                    .expect("open");
                dec.push(&b);
            };
            if let Frame::Data {
                stream_id,
                flags,
                data,
            } = frame
            {
                let g = got.entry(stream_id).or_default();
                g.0.extend(data);
                g.1 |= flags & spdy::FLAG_FIN != 0;
            }
        }
        assert_eq!(got[&3].0, b"pong:hello");
        assert!(got[&1].0.is_empty());
        let err = String::from_utf8_lossy(&got[&5].0).to_string();
        assert!(
            err.starts_with(&format!("error forwarding port {closed} to pod ns/p, uid u: failed to connect to localhost:{closed} inside namespace \"host\", IPv4: dial tcp4 127.0.0.1:{closed}: connect: connection refused IPv6 dial tcp6 [::1]:{closed}: connect: ")),
            "{err}"
        );
        // The client reads it: Go's wording, no Rust debug text.
        assert!(
            !err.contains("os error") && !err.contains("Some(") && !err.contains("None"),
            "{err}"
        );
        assert!(got[&7].0.is_empty());
    }
}
