//! Connections of the kubelet API: how long each may wait and how many may be unauthenticated.
//!
//! A connection is in one of four phases, and its reads time out by phase:
//! - waiting for a request head (from the connection's start, or from the first byte of a
//!   request after an idle time): [`Limits::header_timeout`], the kube-apiserver's own 32 s
//!   (`ReadHeaderTimeout`); a client that completes TLS and sends nothing is closed then;
//! - idle between requests (keep-alive): [`Limits::idle_timeout`], the kubelet's 90 s
//!   (`IdleTimeout`, http.DefaultTransport's keep-alive);
//! - serving a request: no limit (a `containerLogs?follow` stream may last for days);
//! - upgraded to an exec/attach/port-forward session (WebSocket or SPDY): closed after
//!   `streamingConnectionIdleTimeout` (4 h by default) without a byte either way, as the
//!   kubelet's streaming server does.
//!
//! The timeouts live in [`TimedIo`], the connection's I/O below hyper, so they hold whoever owns
//! the connection (hyper, then the session after an upgrade). And until one of its requests is
//! authenticated (or its client certificate is verified), a connection holds one of
//! [`Limits::max_unauthenticated`] permits, taken before it is accepted: a flood of anonymous
//! clients waits in the listen backlog instead of using up the agent's file descriptors.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::Body;

/// The limits of one listener's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a request head may take, from the connection's start or the request's first byte.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long an upgraded session may go without a byte either way (zero: no limit).
    pub stream_idle_timeout: Duration,
    /// Connections that have not authenticated yet, at most.
    pub max_unauthenticated: usize,
}

impl Limits {
    /// The limits the configuration sets for the API's listeners.
    pub fn of(cfg: &crate::config::ServerConfig) -> Limits {
        Limits {
            header_timeout: cfg.header_timeout,
            idle_timeout: cfg.idle_timeout,
            stream_idle_timeout: cfg.streaming_connection_idle_timeout,
            max_unauthenticated: cfg.max_unauthenticated_connections,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head to be complete, since this instant.
    Head(Instant),
    /// Kept alive between requests, since this instant.
    Idle(Instant),
    /// A request is being served.
    Busy,
    /// A session; the instant is its last byte either way.
    Upgraded(Instant),
}

/// What a connection's I/O and its request handler share.
pub struct ConnState {
    phase: Mutex<PhaseAndReader>,
    /// The permit of an unauthenticated connection, dropped once it has authenticated.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

struct PhaseAndReader {
    phase: Phase,
    /// The task waiting in a read: woken when the phase changes, so that the read takes the new
    /// phase's deadline (a read that began while a request was served has none).
    reader: Option<Waker>,
}

impl ConnState {
    pub fn new(permit: Option<OwnedSemaphorePermit>) -> Arc<ConnState> {
        Arc::new(ConnState {
            phase: Mutex::new(PhaseAndReader {
                phase: Phase::Head(Instant::now()),
                reader: None,
            }),
            permit: Mutex::new(permit),
        })
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        let reader = {
            let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            let next = f(p.phase);
            let changed = std::mem::discriminant(&next) != std::mem::discriminant(&p.phase);
            p.phase = next;
            if changed {
                p.reader.take()
            } else {
                None
            }
        };
        if let Some(w) = reader {
            w.wake();
        }
    }

    fn get(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).phase
    }

    /// The phase, with `waker` to wake when it changes.
    fn watch(&self, waker: &Waker) -> Phase {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        match &p.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => p.reader = Some(waker.clone()),
        }
        p.phase
    }

    /// The connection's user is known: it stops counting as unauthenticated.
    pub fn authenticated(&self) {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Does it still count as unauthenticated?
    pub fn is_unauthenticated(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// The read deadline of a phase, if any.
fn deadline(phase: Phase, limits: &Limits) -> Option<Instant> {
    match phase {
        Phase::Head(since) => Some(since + limits.header_timeout),
        Phase::Idle(since) => Some(since + limits.idle_timeout),
        Phase::Busy => None,
        Phase::Upgraded(_) if limits.stream_idle_timeout.is_zero() => None,
        Phase::Upgraded(last) => Some(last + limits.stream_idle_timeout),
    }
}

/// A connection's I/O with the read deadline of its phase: a read that would wait past it fails
/// with `TimedOut`, which ends the connection (or the session that owns it).
pub struct TimedIo<S> {
    inner: S,
    state: Arc<ConnState>,
    limits: Limits,
    sleep: Pin<Box<Sleep>>,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, state: Arc<ConnState>, limits: Limits) -> TimedIo<S> {
        TimedIo {
            inner,
            state,
            limits,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    this.state.set(|p| match p {
                        Phase::Idle(_) => Phase::Head(now),
                        Phase::Upgraded(_) => Phase::Upgraded(now),
                        other => other,
                    });
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(at) = deadline(this.state.watch(cx.waker()), &this.limits) else {
                    return Poll::Pending;
                };
                if at <= Instant::now() {
                    return Poll::Ready(Err(timed_out(this.state.get())));
                }
                this.sleep.as_mut().reset(at);
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out(this.state.get()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

fn timed_out(phase: Phase) -> io::Error {
    let what = match phase {
        Phase::Head(_) => "request header read timeout",
        Phase::Idle(_) => "idle connection timeout",
        Phase::Busy => "read timeout",
        Phase::Upgraded(_) => "streaming connection idle timeout",
    };
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                let now = Instant::now();
                self.state.set(|p| match p {
                    Phase::Upgraded(_) => Phase::Upgraded(now),
                    other => other,
                });
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that marks its connection idle once hyper is done with it.
struct IdleWhenDone {
    inner: Body,
    state: Arc<ConnState>,
}

impl Drop for IdleWhenDone {
    fn drop(&mut self) {
        let now = Instant::now();
        self.state.set(|p| match p {
            Phase::Busy => Phase::Idle(now),
            other => other,
        });
    }
}

impl HttpBody for IdleWhenDone {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection with the phase timeouts of `limits`;
/// `handler` answers each request. Returns when the connection ends or is handed to a session.
pub async fn serve<I, F, Fut>(
    io: I,
    state: Arc<ConnState>,
    limits: Limits,
    handler: F,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let io = TimedIo::new(io, state.clone(), limits);
    let handler = Arc::new(handler);
    let svc = service_fn(move |req| {
        state.set(|_| Phase::Busy);
        let (state, handler) = (state.clone(), handler.clone());
        async move {
            let resp = handler(req).await;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let now = Instant::now();
                state.set(|_| Phase::Upgraded(now));
                return Ok::<_, std::convert::Infallible>(resp);
            }
            let (parts, body) = resp.into_parts();
            let body = IdleWhenDone { inner: body, state }.boxed();
            Ok(Response::from_parts(parts, body))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The phases' deadlines are TimedIo's; hyper's own header timer would also end idle
        // keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
}

/// The permits of unauthenticated connections of one listener.
pub fn permits(limits: &Limits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_unauthenticated.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(1500),
            stream_idle_timeout: Duration::from_millis(700),
            max_unauthenticated: 2,
        }
    }

    fn ok_body() -> Response<Body> {
        Response::new(
            Full::new(Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed(),
        )
    }

    /// A TLS listener serving `ok` (or an upgrade to an echo session on `/upgrade`), with the
    /// permits of [`serve`]'s callers in `mod.rs`: taken before accept, dropped by a request
    /// carrying `authorization`.
    async fn tls_server(limits: Limits) -> (std::net::SocketAddr, tokio_rustls::TlsConnector) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = crate::config::Config::load(&crate::config::Flags::default())
            .expect("cfg")
            .0
            .server;
        let (cert, key) =
            super::super::tls::serving_files(&cfg, dir.path(), "localhost", &["127.0.0.1".into()])
                .expect("cert");
        let server_cfg = super::super::tls::server_config(&cert, &key, None).expect("tls");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).expect("pem") {
            roots.add(c.expect("cert")).expect("root");
        }
        let client_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sem = permits(&limits);
        tokio::spawn(async move {
            let _dir = dir;
            loop {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let state = ConnState::new(Some(permit));
                    let st = state.clone();
                    let _ = serve(tls, state, limits, move |mut req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            if req.headers().contains_key("authorization") {
                                st.authenticated();
                            }
                            if req.uri().path() != "/upgrade" {
                                return ok_body();
                            }
                            let on_upgrade = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let Ok(up) = on_upgrade.await else { return };
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            });
                            let mut r = Response::new(
                                Full::new(Bytes::new())
                                    .map_err(|never| match never {})
                                    .boxed(),
                            );
                            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            r.headers_mut()
                                .insert("upgrade", hyper::header::HeaderValue::from_static("echo"));
                            r.headers_mut().insert(
                                "connection",
                                hyper::header::HeaderValue::from_static("Upgrade"),
                            );
                            r
                        }
                    })
                    .await;
                });
            }
        });
        (addr, connector)
    }

    type Tls = tokio_rustls::client::TlsStream<TcpStream>;

    async fn connect(addr: std::net::SocketAddr, c: &tokio_rustls::TlsConnector) -> Tls {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        c.connect(name, tcp).await.expect("tls handshake")
    }

    /// Reads until the server closes; how long that took.
    async fn time_to_close(s: &mut Tls) -> Duration {
        let t0 = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("still open after 10 s"),
            }
        }
    }

    /// Sends a GET and reads its answer: the head of a 101, or a whole `ok` response.
    async fn get(s: &mut Tls, path: &str, auth: bool) -> String {
        let mut h = if auth {
            "authorization: Bearer x\r\n"
        } else {
            ""
        }
        .to_string();
        if path == "/upgrade" {
            h.push_str("connection: upgrade\r\nupgrade: echo\r\n");
        }
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n{h}\r\n").as_bytes())
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 1];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.push(buf[0]);
            let head_done = got.windows(4).any(|w| w == b"\r\n\r\n");
            if head_done && (got.starts_with(b"HTTP/1.1 101") || got.ends_with(b"ok")) {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
    }

    /// A read that began while a request was served (no deadline) takes the idle deadline when
    /// the response is done: the phase change wakes it. (Without that wake-up an idle
    /// keep-alive connection whose read was already waiting stayed open for good.)
    #[tokio::test]
    async fn a_read_waiting_since_a_request_takes_the_idle_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let state = ConnState::new(None);
        state.set(|_| Phase::Busy);
        let mut io = TimedIo::new(server, state.clone(), limits());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let t0 = Instant::now();
            let r = io.read(&mut buf).await;
            (r.map_err(|e| e.kind()), t0.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!reader.is_finished(), "a read while busy has no deadline");
        state.set(|_| Phase::Idle(Instant::now()));
        let (r, took) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the waiting read ended")
            .expect("join");
        assert_eq!(r, Err(io::ErrorKind::TimedOut));
        assert!(took >= Duration::from_millis(1700), "{took:?}");
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_header_timeout() {
        let (addr, c) = tls_server(limits()).await;
        let mut s = connect(addr, &c).await;
        let took = time_to_close(&mut s).await;
        assert!(took >= Duration::from_millis(400), "{took:?}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let (addr, c) = tls_server(limits()).await;
        let mut s = connect(addr, &c).await;
        // Two requests a bit apart, each answered: the idle time is longer than the header
        // timeout, and the connection stays open across it.
        assert!(get(&mut s, "/", true).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(get(&mut s, "/", true).await.starts_with("HTTP/1.1 200"));
        let took = time_to_close(&mut s).await;
        assert!(took >= Duration::from_millis(1300), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_at_the_header_timeout() {
        let (addr, c) = tls_server(limits()).await;
        let mut s = connect(addr, &c).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"x-slow: 1\r\n").await.is_err() {
                break;
            }
        }
        let took = time_to_close(&mut s).await;
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn an_idle_session_is_closed_and_an_active_one_is_not() {
        let (addr, c) = tls_server(limits()).await;
        let mut s = connect(addr, &c).await;
        let head = get(&mut s, "/upgrade", true).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // Active for twice the stream idle timeout: it stays.
        let mut buf = [0u8; 8];
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.write_all(b"ping").await.expect("session still open");
            s.read_exact(&mut buf[..4]).await.expect("echo");
            assert_eq!(&buf[..4], b"ping");
        }
        // Then silent: closed after the stream idle timeout.
        let took = time_to_close(&mut s).await;
        assert!(took >= Duration::from_millis(600), "{took:?}");
    }

    #[tokio::test]
    async fn unauthenticated_connections_are_capped() {
        let (addr, c) = tls_server(Limits {
            header_timeout: Duration::from_secs(30),
            ..limits()
        })
        .await;
        let mut a = connect(addr, &c).await;
        let _b = connect(addr, &c).await;
        // A third waits in the backlog: its handshake does not complete while two are held.
        let c2 = c.clone();
        let third = tokio::spawn(async move { connect(addr, &c2).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !third.is_finished(),
            "a third unauthenticated connection was accepted"
        );
        // Once one of them authenticates, its permit goes to the third.
        assert!(get(&mut a, "/", true).await.starts_with("HTTP/1.1 200"));
        let mut t = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("accepted once a permit was free")
            .expect("join");
        assert!(get(&mut t, "/", false).await.starts_with("HTTP/1.1 200"));
    }
}
