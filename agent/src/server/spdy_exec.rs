//! exec and attach over SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version:
//! v4.channel.k8s.io`), what apiservers send when they do not pass kubectl's WebSockets through
//! (older ones, or `ExtendWebSocketsToKubelet` off). The client opens one stream per channel,
//! named by its `streamtype` header (`error`, `stdin`, `stdout`, `stderr`, `resize`); once the
//! streams the request asked for are there, the session runs exactly as over WebSocket
//! ([`exec::session`]): this module translates SPDY streams to and from channel messages. The
//! exit status goes out as JSON (a metav1.Status) on the error stream, then every stream ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::exec::{self, ExecRequest, Kind};
use super::spdy::Headers;
use super::spdy_conn::{self, Io, Stream};
use super::ws;
use crate::pods::Ctx;

/// SPDY remote-command protocols bosun speaks (v5 over SPDY is v4; stdin ends with FIN).
pub const PROTOCOLS: [&str; 2] = [ws::V5, ws::V4];
/// How long the client may take to open the streams (the kubelet's streamCreationTimeout).
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// The protocol to answer: the client's first that bosun speaks (None: no match).
pub fn negotiate(offered: &[&str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().copied().find(|p| p == o))
}

/// The stream types a request needs (the kubelet's expected streams).
pub fn expected(req: &ExecRequest) -> Vec<&'static str> {
    let mut v = vec!["error"];
    if req.stdin {
        v.push("stdin");
    }
    if req.stdout {
        v.push("stdout");
    }
    if req.stderr && !req.tty {
        v.push("stderr");
    }
    if req.tty {
        v.push("resize");
    }
    v
}

fn validate(headers: &Headers) -> Result<(), String> {
    match super::spdy::header(headers, "streamtype") {
        Some("error" | "stdin" | "stdout" | "stderr" | "resize") => Ok(()),
        Some(t) => Err(format!("invalid stream type \"{t}\"")),
        None => Err("\"streamtype\" header is required".into()),
    }
}

/// The terminal sizes in a resize stream: JSON objects one after the other. Returns the
/// complete ones and keeps the rest in `buf`.
pub fn take_sizes(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    while let Some(Ok(v)) = it.next() {
        used = it.byte_offset();
        if let Ok(b) = serde_json::to_vec(&v) {
            out.push(b);
        }
    }
    buf.drain(..used);
    out
}

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn has(&self, t: &str) -> bool {
        match t {
            "error" => self.error.is_some(),
            "stdin" => self.stdin.is_some(),
            "stdout" => self.stdout.is_some(),
            "stderr" => self.stderr.is_some(),
            "resize" => self.resize.is_some(),
            _ => false,
        }
    }
}

/// Serves one exec or attach session on an upgraded SPDY connection.
pub async fn serve(ctx: Arc<Ctx>, io: Io, id: String, req: ExecRequest, kind: Kind) {
    let (stx, mut srx) = mpsc::channel::<Stream>(8);
    let conn = tokio::spawn(spdy_conn::serve(io, validate, stx));
    let want = expected(&req);
    let mut s = Streams::default();
    let gathered = tokio::time::timeout(STREAMS_TIMEOUT, async {
        while !want.iter().all(|t| s.has(t)) {
            let Some(st) = srx.recv().await else {
                return false;
            };
            let slot = match st.header("streamtype") {
                Some("error") => &mut s.error,
                Some("stdin") => &mut s.stdin,
                Some("stdout") => &mut s.stdout,
                Some("stderr") => &mut s.stderr,
                _ => &mut s.resize,
            };
            *slot = Some(st);
        }
        true
    })
    .await;
    if !matches!(gathered, Ok(true)) {
        tracing::debug!(container = %id, "spdy exec: the client did not open its streams");
        if let Some(e) = &s.error {
            let msg = ws::error_status("timed out waiting for client to create streams");
            e.out.data(e.id, msg.to_string().as_bytes(), true).await;
        }
        conn.abort();
        return;
    }

    // The client's streams, as channel messages.
    let (in_tx, in_rx) =
        mpsc::channel::<Result<Message, tokio_tungstenite::tungstenite::Error>>(16);
    let mut feeders = tokio::task::JoinSet::new();
    if let Some(mut st) = s.stdin.take() {
        let in_tx = in_tx.clone();
        feeders.spawn(async move {
            while let Some(b) = st.rx.recv().await {
                if in_tx
                    .send(Ok(Message::binary(ws::frame(ws::STDIN, &b))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // FIN: stdin is closed (the v5 signal the session understands).
            let _ = in_tx
                .send(Ok(Message::binary(vec![ws::CLOSE, ws::STDIN])))
                .await;
        });
    }
    if let Some(mut st) = s.resize.take() {
        let in_tx = in_tx.clone();
        feeders.spawn(async move {
            let mut buf = Vec::new();
            while let Some(b) = st.rx.recv().await {
                buf.extend_from_slice(&b);
                for size in take_sizes(&mut buf) {
                    let m = Message::binary(ws::frame(ws::RESIZE, &size));
                    if in_tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    // The client going away (the connection ending) closes the session's input.
    let closer = {
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = in_tx.send(Ok(Message::Close(None))).await;
        })
    };
    drop(in_tx);
    let mut incoming =
        futures_util::stream::unfold(
            in_rx,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        )
        .boxed_local_unpin();

    // Our channel messages, onto the streams.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let (stdout, stderr) = (s.stdout.take(), s.stderr.take());
    let error = s.error.take();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let Message::Binary(b) = m else { continue };
            let Some((&ch, data)) = b.split_first() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let target = match ch {
                ws::STDOUT => stdout.as_ref(),
                ws::STDERR => stderr.as_ref(),
                _ => None,
            };
            if let Some(t) = target {
                t.out.data(t.id, data, false).await;
            }
        }
        for t in [&stdout, &stderr].into_iter().flatten() {
            t.out.finish(t.id).await;
        }
    });
    let status = exec::session(&ctx, ws::V5, &id, &req, kind, &out_tx, &mut incoming).await;
    drop(out_tx);
    let _ = writer.await;
    if let Some(e) = &error {
        e.out.data(e.id, status.to_string().as_bytes(), true).await;
    }
    feeders.abort_all();
    closer.abort();
}

/// Answers a SPDY upgrade of `/exec` or `/attach` and serves the session in the background.
pub fn endpoint(
    ctx: Arc<Ctx>,
    mut req: hyper::Request<hyper::body::Incoming>,
    resolve: impl FnOnce() -> Result<bosun_runtime::ContainerStatus, super::routes::NoContainer>,
    ereq: ExecRequest,
    attach: bool,
) -> hyper::Response<super::Body> {
    use http_body_util::BodyExt;
    use hyper::header::{self, HeaderValue};
    use hyper::StatusCode;
    let reply = |status: StatusCode, msg: String| {
        let mut r = hyper::Response::new(
            http_body_util::Full::new(bytes::Bytes::from(msg + "\n"))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = status;
        r
    };
    let values = |name: &str| -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    if !values("upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("SPDY/3.1"))
    {
        return reply(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (WebSocket v5/v4.channel.k8s.io or SPDY/3.1)".into(),
        );
    }
    let offered = values("x-stream-protocol-version");
    let offered_refs: Vec<&str> = offered.iter().map(String::as_str).collect();
    let Some(protocol) = negotiate(&offered_refs) else {
        return reply(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {PROTOCOLS:?}"
            ),
        );
    };
    let target = match resolve() {
        Ok(t) => t,
        Err(super::routes::NoContainer(status, msg)) => return reply(status, msg),
    };
    let kind = if attach {
        Kind::Attach {
            log: target.log_path.clone(),
        }
    } else {
        Kind::Exec
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tracing::info!(container = %target.id, attach, "exec/attach over SPDY/3.1");
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => serve(ctx, spdy_conn::raw_io(up), target.id, ereq, kind).await,
            Err(e) => tracing::debug!(error = %e, "spdy exec upgrade failed"),
        }
    });
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, String::new());
    *r.body_mut() = http_body_util::Full::new(bytes::Bytes::new())
        .map_err(|never| match never {})
        .boxed();
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    r
}

/// `Box::pin` without naming the stream type.
trait BoxedUnpin: futures_util::Stream + Sized {
    fn boxed_local_unpin(self) -> std::pin::Pin<Box<Self>> {
        Box::pin(self)
    }
}
impl<S: futures_util::Stream> BoxedUnpin for S {}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
        ExecRequest {
            command: vec!["sh".into()],
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn expects_the_kubelets_streams() {
        assert_eq!(
            expected(&req(false, true, true, false)),
            ["error", "stdout", "stderr"]
        );
        assert_eq!(
            expected(&req(true, true, true, true)),
            ["error", "stdin", "stdout", "resize"]
        );
    }

    #[test]
    fn negotiates_v5_or_v4_in_client_order() {
        assert_eq!(
            negotiate(&["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]),
            Some(ws::V5)
        );
        assert_eq!(negotiate(&["v4.channel.k8s.io"]), Some(ws::V4));
        assert_eq!(negotiate(&["v3.channel.k8s.io", "channel.k8s.io"]), None);
    }

    #[test]
    fn splits_resize_json() {
        let mut b = br#"{"Width":80,"Height":24}{"Width":100,"He"#.to_vec();
        let sizes = take_sizes(&mut b);
        assert_eq!(sizes.len(), 1);
        assert_eq!(
            ws::parse(ws::V5, &ws::frame(ws::RESIZE, &sizes[0])),
            ws::Incoming::Resize {
                width: 80,
                height: 24
            }
        );
        b.extend_from_slice(br#"ight":30}"#);
        assert_eq!(take_sizes(&mut b).len(), 1);
        assert!(b.is_empty());
    }
}
