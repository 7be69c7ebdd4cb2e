//! Probes: the Kubernetes timing and threshold state machine ([`Tracker`]), the network checkers
//! ([`http_get`] over HTTP or HTTPS, [`tcp`], [`grpc`]) and the probe loop ([`run`]). Free of Kubernetes types: the agent
//! translates a Probe into a [`Spec`] and runs exec checks itself (they need the runtime's
//! single-threaded exec helper) through the [`Check::Exec`] callback.
//!
//! Cheap by design: a probe is a tokio task with a timer; only exec probes spawn a process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

mod grpc;
mod tls;

pub use grpc::grpc;

/// Timing of one probe (Kubernetes defaults in [`Timing::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Consecutive successes/failures against the thresholds. `result` only changes when a
/// threshold is reached (the kubelet's worker.go semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    timing: Timing,
    successes: u32,
    failures: u32,
    result: bool,
}

impl Tracker {
    /// `initial`: the result before any threshold is reached (false for readiness and startup,
    /// true for liveness).
    pub fn new(timing: Timing, initial: bool) -> Self {
        Tracker {
            timing,
            successes: 0,
            failures: 0,
            result: initial,
        }
    }

    pub fn result(&self) -> bool {
        self.result
    }

    /// Records one outcome; returns the new result when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.result && self.successes >= self.timing.success_threshold.max(1) {
                self.result = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.result && self.failures >= self.timing.failure_threshold.max(1) {
                self.result = false;
                self.failures = 0;
                return Some(false);
            }
            if !self.result && self.failures >= self.timing.failure_threshold.max(1) {
                // Already failing: report the threshold again (liveness kills on it).
                self.failures = 0;
                return Some(false);
            }
        }
        None
    }
}

/// An httpGet check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpGet {
    /// `HTTP` or `HTTPS`.
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// A future returned by an exec callback: Ok(exit code) or Err(why it could not run).
pub type ExecFuture = Pin<Box<dyn Future<Output = Result<i32, String>> + Send>>;
/// Runs a command in the container with a timeout.
pub type ExecFn = Arc<dyn Fn(Vec<String>, Duration) -> ExecFuture + Send + Sync>;

/// What a probe checks.
#[derive(Clone)]
pub enum Check {
    Exec {
        command: Vec<String>,
        exec: ExecFn,
    },
    Http(HttpGet),
    Tcp {
        host: String,
        port: u16,
    },
    /// `grpc.health.v1.Health/Check` over plaintext HTTP/2.
    Grpc {
        host: String,
        port: u16,
        /// The `service` of the request (empty: the server as a whole).
        service: String,
    },
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Exec { command, .. } => write!(f, "exec {command:?}"),
            Check::Http(h) => write!(f, "http-get {}:{}{}", h.host, h.port, h.path),
            Check::Tcp { host, port } => write!(f, "tcp-socket {host}:{port}"),
            Check::Grpc {
                host,
                port,
                service,
            } => write!(f, "grpc {host}:{port} service {service:?}"),
        }
    }
}

/// Runs one check bounded by `timeout` (a check that exceeds it is a failure).
pub async fn check(c: &Check, timeout: Duration) -> Outcome {
    let fut = async {
        match c {
            Check::Exec { command, exec } => match exec(command.clone(), timeout).await {
                Ok(0) => Outcome::Success,
                Ok(code) => Outcome::Failure(format!("command {command:?} exited with {code}")),
                Err(e) => Outcome::Failure(e),
            },
            Check::Http(h) => http_get(h).await,
            Check::Tcp { host, port } => tcp(host, *port).await,
            Check::Grpc {
                host,
                port,
                service,
            } => grpc(host, *port, service, timeout).await,
        }
    };
    // Exec and grpc get a little slack: they enforce the timeout themselves and report it
    // with their own messages.
    let bound = match c {
        Check::Exec { .. } | Check::Grpc { .. } => timeout + Duration::from_secs(1),
        _ => timeout,
    };
    match tokio::time::timeout(bound, fut).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure(format!("{c:?} timed out after {timeout:?}")),
    }
}

fn addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// tcpSocket: success when a connection opens.
pub async fn tcp(host: &str, port: u16) -> Outcome {
    match TcpStream::connect(addr(host, port)).await {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure(format!("dial tcp {}: {e}", addr(host, port))),
    }
}

/// The HTTP/1.1 request an httpGet probe sends (the kubelet's default headers).
pub fn http_request(h: &HttpGet) -> String {
    let path = if h.path.starts_with('/') {
        h.path.clone()
    } else {
        format!("/{}", h.path)
    };
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| h.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", addr(&h.host, h.port)));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.36\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in &h.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// The status code of an HTTP/1.x response head.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// httpGet: success for a status in 200..400 (redirects are not followed). `HTTPS` connects
/// with TLS without verifying the server's certificate (the kubelet's InsecureSkipVerify), with
/// SNI from the host when it is a name.
pub async fn http_get(h: &HttpGet) -> Outcome {
    let https = h.scheme.eq_ignore_ascii_case("https");
    let target = addr(&h.host, h.port);
    let url = format!(
        "{}://{target}{}",
        if https { "https" } else { "http" },
        h.path
    );
    let fail = |e: &dyn std::fmt::Display| Outcome::Failure(format!("get {url}: {e}"));
    let s = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let head = if https {
        match tls::connect(&h.host, s).await {
            Ok(s) => exchange(s, h).await,
            Err(e) => return fail(&e),
        }
    } else {
        exchange(s, h).await
    };
    match head {
        Err(e) => fail(&e),
        Ok(head) => match parse_status(&head) {
            Some(code) if (200..400).contains(&code) => Outcome::Success,
            Some(code) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            None => fail(&"bad response"),
        },
    }
}

/// Sends the probe's request and reads the first line of the response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    h: &HttpGet,
) -> std::io::Result<Vec<u8>> {
    s.write_all(http_request(h).as_bytes()).await?;
    s.flush().await?;
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]).await? {
            0 => break,
            k => {
                n += k;
                if buf[..n].contains(&b'\n') {
                    break;
                }
            }
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// A probe: what and when.
#[derive(Clone, Debug)]
pub struct Spec {
    pub check: Check,
    pub timing: Timing,
}

/// Runs `spec` forever (until the task is dropped): after the initial delay, one check per
/// period. `on_change(result, last_message)` is called when the tracker's result changes (and
/// again each time the failure threshold is reached while failing); return `false` from it to
/// stop the loop.
pub async fn run(spec: Spec, initial: bool, on_change: impl FnMut(bool, &str) -> bool) {
    run_observed(spec, initial, |_| {}, on_change).await
}

/// [`run`], with `on_result(ok)` called after every single check (probe counters).
pub async fn run_observed(
    spec: Spec,
    initial: bool,
    mut on_result: impl FnMut(bool),
    mut on_change: impl FnMut(bool, &str) -> bool,
) {
    tokio::time::sleep(spec.timing.initial_delay).await;
    let mut tracker = Tracker::new(spec.timing, initial);
    let mut tick = tokio::time::interval(spec.timing.period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = check(&spec.check, spec.timing.timeout).await;
        let (ok, msg) = match &outcome {
            Outcome::Success => (true, String::new()),
            Outcome::Failure(m) => (false, m.clone()),
        };
        if !ok {
            tracing::debug!(check = ?spec.check, "probe failed: {msg}");
        }
        on_result(ok);
        if let Some(r) = tracker.record(ok) {
            if !on_change(r, &msg) {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn timing(s: u32, f: u32) -> Timing {
        Timing {
            success_threshold: s,
            failure_threshold: f,
            ..Timing::default()
        }
    }

    #[test]
    fn thresholds() {
        let mut t = Tracker::new(timing(2, 3), false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.result());
        // Still failing: the threshold is reported again after another failureThreshold.
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        let mut live = Tracker::new(timing(1, 1), true);
        assert_eq!(live.record(false), Some(false));
    }

    #[test]
    fn request_and_status() {
        let h = HttpGet {
            scheme: "HTTP".into(),
            host: "10.0.0.1".into(),
            port: 8080,
            path: "healthz".into(),
            headers: vec![("X-A".into(), "b".into())],
        };
        let r = http_request(&h);
        assert!(r.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n"));
        assert!(r.contains("X-A: b\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert_eq!(parse_status(b"HTTP/1.0 302 Found\r\n"), Some(302));
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                n += 1;
                let code = if n % 2 == 1 { 200 } else { 500 };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let h = HttpGet {
            scheme: "HTTP".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: vec![],
        };
        assert_eq!(http_get(&h).await, Outcome::Success);
        assert!(matches!(http_get(&h).await, Outcome::Failure(_)));
        assert_eq!(tcp("127.0.0.1", port).await, Outcome::Success);
    }

    /// A TLS server with a fresh self-signed certificate for `localhost`; answers 200 and
    /// sends the SNI it saw (or "-") on `sni`.
    async fn tls_server(sni: tokio::sync::mpsc::UnboundedSender<String>) -> u16 {
        use tokio_rustls::rustls;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let name = s.get_ref().1.server_name().unwrap_or("-").to_string();
                let _ = sni.send(name);
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = s.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn https_accepts_a_self_signed_certificate_with_sni() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let port = tls_server(tx).await;
        let mut h = HttpGet {
            scheme: "HTTPS".into(),
            host: "localhost".into(),
            port,
            path: "/healthz".into(),
            headers: vec![],
        };
        assert_eq!(http_get(&h).await, Outcome::Success);
        assert_eq!(rx.recv().await.unwrap(), "localhost");
        // By IP address: no SNI, still accepted.
        h.host = "127.0.0.1".into();
        assert_eq!(http_get(&h).await, Outcome::Success);
        assert_eq!(rx.recv().await.unwrap(), "-");
        // Plain HTTP against the TLS port fails; HTTPS against nothing fails.
        h.scheme = "HTTP".into();
        assert!(matches!(http_get(&h).await, Outcome::Failure(_)));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        h.scheme = "https".into();
        h.port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(matches!(http_get(&h).await, Outcome::Failure(m) if m.starts_with("get https://")));
    }

    /// A grpc.health.v1 server written with h2: service "" is SERVING, "down" NOT_SERVING,
    /// "slow" never answers, anything else is Unimplemented.
    async fn health_server() -> u16 {
        use prost::Message;
        use tonic::codegen::http;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(s).await.unwrap();
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            let mut body = req.into_body();
                            let mut bytes = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                bytes.extend_from_slice(&chunk);
                            }
                            let req = grpc::HealthCheckRequest::decode(&bytes[5..]).unwrap();
                            let head = |status: Option<&str>| {
                                let mut r = http::Response::builder()
                                    .status(200)
                                    .header("content-type", "application/grpc");
                                if let Some(s) = status {
                                    r = r.header("grpc-status", s).header("grpc-message", "nope");
                                }
                                r.body(()).unwrap()
                            };
                            let status = match req.service.as_str() {
                                "" => grpc::ServingStatus::Serving,
                                "down" => grpc::ServingStatus::NotServing,
                                "slow" => {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    return;
                                }
                                _ => {
                                    let _ = respond.send_response(head(Some("12")), true);
                                    return;
                                }
                            };
                            let msg = grpc::HealthCheckResponse {
                                status: status as i32,
                            }
                            .encode_to_vec();
                            let mut frame = vec![0u8];
                            frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                            frame.extend_from_slice(&msg);
                            let mut stream = respond.send_response(head(None), false).unwrap();
                            stream.send_data(frame.into(), false).unwrap();
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            stream.send_trailers(trailers).unwrap();
                        });
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn grpc_health_checks() {
        let port = health_server().await;
        let t = Duration::from_secs(2);
        assert_eq!(grpc("127.0.0.1", port, "", t).await, Outcome::Success);
        assert_eq!(
            grpc("127.0.0.1", port, "down", t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let o = grpc("127.0.0.1", port, "other", t).await;
        assert!(
            matches!(&o, Outcome::Failure(m) if m.starts_with("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): nope")),
            "{o:?}"
        );
        let o = grpc("127.0.0.1", port, "slow", Duration::from_millis(300)).await;
        assert!(
            matches!(&o, Outcome::Failure(m) if m.starts_with("timeout: health rpc did not complete within")),
            "{o:?}"
        );
        // Through `check`, as the probe loop calls it.
        let c = Check::Grpc {
            host: "127.0.0.1".into(),
            port,
            service: String::new(),
        };
        assert_eq!(check(&c, t).await, Outcome::Success);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let o = grpc("127.0.0.1", dead, "", t).await;
        assert!(
            matches!(&o, Outcome::Failure(m) if m.starts_with("error: failed to connect service at \"127.0.0.1:")),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn exec_past_its_timeout_fails() {
        let exec: ExecFn = Arc::new(|_argv, _t| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(0)
            })
        });
        let c = Check::Exec {
            command: vec!["sleep".into()],
            exec,
        };
        let o = check(&c, Duration::from_millis(50)).await;
        assert!(matches!(o, Outcome::Failure(m) if m.contains("timed out")));
    }
}
