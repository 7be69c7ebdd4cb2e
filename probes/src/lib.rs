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
    check_warn(c, timeout).await.0
}

/// [`check`], with the warning of an httpGet success (see [`http_step`]).
pub async fn check_warn(c: &Check, timeout: Duration) -> (Outcome, Option<String>) {
    let fut = async {
        let o = match c {
            Check::Exec { command, exec } => match exec(command.clone(), timeout).await {
                Ok(0) => Outcome::Success,
                Ok(code) => Outcome::Failure(format!("command {command:?} exited with {code}")),
                Err(e) => Outcome::Failure(e),
            },
            Check::Http(h) => return http_get_warn(h).await,
            Check::Tcp { host, port } => tcp(host, *port).await,
            Check::Grpc {
                host,
                port,
                service,
            } => grpc(host, *port, service, timeout).await,
        };
        (o, None)
    };
    // Exec and grpc get a little slack: they enforce the timeout themselves and report it
    // with their own messages.
    let bound = match c {
        Check::Exec { .. } | Check::Grpc { .. } => timeout + Duration::from_secs(1),
        _ => timeout,
    };
    match tokio::time::timeout(bound, fut).await {
        Ok(o) => o,
        Err(_) => (
            Outcome::Failure(format!("{c:?} timed out after {timeout:?}")),
            None,
        ),
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

/// The most of a response body an httpGet probe reads (the kubelet's `maxRespBodyLength`).
const MAX_BODY: usize = 10 << 10;
/// Redirects followed before the probe fails (Go's http.Client and the kubelet's checker).
const MAX_REDIRECTS: usize = 10;

/// What an httpGet probe read of one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    /// The body, decoded (chunked), at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

/// What to do with one response of an httpGet probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The probe's result and, for a success, a warning (the kubelet's `probe.Warning`).
    Done(Outcome, Option<String>),
    /// Send the request again to this target.
    Follow(HttpGet),
}

/// The kubelet's prober (pkg/probe/http, `DoHTTPProbe` with `RedirectChecker(false)` in Go's
/// http.Client): a redirect (301, 302, 303, 307, 308 with a Location) to the same host name is
/// followed, at most 10 times; one to another host is not, and its 3xx response is a success with
/// the warning "Probe terminated redirects, Response body: ..."; 200..300 succeeds; anything
/// else fails with its status code. `first_host` is the host of the probe's first request and
/// `redirects` how many were followed so far.
pub fn http_step(first_host: &str, current: &HttpGet, resp: &Response, redirects: usize) -> Step {
    let code = resp.status;
    let redirect = matches!(code, 301 | 302 | 303 | 307 | 308);
    if let (true, Some(loc)) = (redirect, resp.location.as_deref()) {
        match resolve_location(current, loc) {
            Some(next) if !next.host.eq_ignore_ascii_case(first_host) => {}
            Some(_) if redirects >= MAX_REDIRECTS => {
                return Step::Done(
                    Outcome::Failure(format!(
                        "get {}: stopped after {MAX_REDIRECTS} redirects",
                        url_of(current)
                    )),
                    None,
                )
            }
            Some(next) => return Step::Follow(next),
            None => {
                return Step::Done(
                    Outcome::Failure(format!(
                        "get {}: failed to parse Location header {loc:?}",
                        url_of(current)
                    )),
                    None,
                )
            }
        }
    }
    match code {
        200..=299 => Step::Done(Outcome::Success, None),
        300..=399 => Step::Done(
            Outcome::Success,
            Some(format!(
                "Probe terminated redirects, Response body: {}",
                String::from_utf8_lossy(&resp.body)
            )),
        ),
        _ => Step::Done(
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            None,
        ),
    }
}

fn url_of(h: &HttpGet) -> String {
    let https = h.scheme.eq_ignore_ascii_case("https");
    format!(
        "{}://{}{}",
        if https { "https" } else { "http" },
        addr(&h.host, h.port),
        h.path
    )
}

/// The target a Location header points to, relative to the request it answered: an absolute
/// URL (`http://host:port/path`), a scheme-relative one (`//host/path`), an absolute path or a
/// path relative to the current one. The probe's headers go along.
pub fn resolve_location(current: &HttpGet, loc: &str) -> Option<HttpGet> {
    let loc = loc.trim();
    let mut next = current.clone();
    let rest = if let Some((scheme, rest)) = loc
        .split_once("://")
        .filter(|(s, _)| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
    {
        next.scheme = scheme.to_ascii_uppercase();
        Some(rest)
    } else {
        loc.strip_prefix("//")
    };
    if let Some(rest) = rest {
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let default_port = if next.scheme == "HTTPS" { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            match after.strip_prefix(':') {
                Some(p) if !p.is_empty() => (h, p.parse().ok()?),
                _ => (h, default_port),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() => (h, p.parse().ok()?),
                Some((h, _)) => (h, default_port),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        next.host = host.to_string();
        next.port = port;
        next.path = path.to_string();
    } else if loc.starts_with('/') {
        next.path = loc.to_string();
    } else {
        let base = current.path.split(['?', '#']).next().unwrap_or("/");
        let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
        next.path = if loc.starts_with('?') {
            format!("{base}{loc}")
        } else if dir.is_empty() {
            format!("/{loc}")
        } else {
            format!("{dir}{loc}")
        };
    }
    next.path = next.path.split('#').next().unwrap_or("/").to_string();
    if next.path.is_empty() {
        next.path = "/".into();
    }
    Some(next)
}

/// httpGet: see [`http_step`] for what succeeds and which redirects are followed. `HTTPS`
/// connects with TLS without verifying the server's certificate (the kubelet's
/// InsecureSkipVerify), with SNI from the host when it is a name.
pub async fn http_get(h: &HttpGet) -> Outcome {
    http_get_warn(h).await.0
}

/// [`http_get`], with the warning of a success that stopped at a redirect to another host.
pub async fn http_get_warn(h: &HttpGet) -> (Outcome, Option<String>) {
    let mut current = h.clone();
    let mut redirects = 0;
    loop {
        let resp = match fetch(&current).await {
            Ok(r) => r,
            Err(e) => {
                return (
                    Outcome::Failure(format!("get {}: {e}", url_of(&current))),
                    None,
                )
            }
        };
        match http_step(&h.host, &current, &resp, redirects) {
            Step::Done(o, warning) => return (o, warning),
            Step::Follow(next) => {
                current = next;
                redirects += 1;
            }
        }
    }
}

async fn fetch(h: &HttpGet) -> std::io::Result<Response> {
    let s = TcpStream::connect(addr(&h.host, h.port)).await?;
    let raw = if h.scheme.eq_ignore_ascii_case("https") {
        let s = tls::connect(&h.host, s)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        exchange(s, h).await?
    } else {
        exchange(s, h).await?
    };
    parse_response(&raw).ok_or_else(|| std::io::Error::other("bad response"))
}

/// Parses an HTTP/1.x response read up to the connection's end (or our limit).
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let status = parse_status(raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match end {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => (raw, &raw[raw.len()..]),
    };
    let head = String::from_utf8_lossy(head);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    body.truncate(MAX_BODY);
    Some(Response {
        status,
        location: header("location"),
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..i])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|n| *n > 0) else {
            break;
        };
        b = &b[i + 2..];
        let take = size.min(b.len());
        out.extend_from_slice(&b[..take]);
        b = &b[take..];
        b = b.strip_prefix(b"\r\n").unwrap_or(b);
    }
    out
}

/// Sends the probe's request and reads the response (the request says `Connection: close`), up
/// to its head and [`MAX_BODY`] bytes of body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    h: &HttpGet,
) -> std::io::Result<Vec<u8>> {
    s.write_all(http_request(h).as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let k = match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(k) => k,
            // A server that closes without TLS close_notify: keep what came.
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..k]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            // Complete (a server that keeps the connection open) or enough of the body.
            let body = buf.len() - i - 4;
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            let complete = match length {
                Some(n) => body >= n,
                None => head.contains("transfer-encoding: chunked") && buf.ends_with(b"0\r\n\r\n"),
            };
            if complete || body >= MAX_BODY + 64 {
                break;
            }
        } else if buf.len() > 64 << 10 {
            break;
        }
    }
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
    run_observed(spec, initial, |_, _| {}, on_change).await
}

/// [`run`], with `on_result(ok, warning)` called after every single check (probe counters, and
/// the kubelet's `ProbeWarning` event for a success with a warning).
pub async fn run_observed(
    spec: Spec,
    initial: bool,
    mut on_result: impl FnMut(bool, Option<&str>),
    mut on_change: impl FnMut(bool, &str) -> bool,
) {
    tokio::time::sleep(spec.timing.initial_delay).await;
    let mut tracker = Tracker::new(spec.timing, initial);
    let mut tick = tokio::time::interval(spec.timing.period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (outcome, warning) = check_warn(&spec.check, spec.timing.timeout).await;
        let (ok, msg) = match &outcome {
            Outcome::Success => (true, String::new()),
            Outcome::Failure(m) => (false, m.clone()),
        };
        if !ok {
            tracing::debug!(check = ?spec.check, "probe failed: {msg}");
        }
        on_result(ok, warning.as_deref());
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

    fn get(host: &str, port: u16, path: &str) -> HttpGet {
        HttpGet {
            scheme: "HTTP".into(),
            host: host.into(),
            port,
            path: path.into(),
            headers: vec![("X-Probe".into(), "1".into())],
        }
    }

    #[test]
    fn locations_resolve_like_urls() {
        let cur = get("10.0.0.5", 8080, "/a/b?x=1");
        let r = |loc: &str| resolve_location(&cur, loc).map(|h| (h.scheme, h.host, h.port, h.path));
        let t = |s: &str, h: &str, p: u16, path: &str| Some((s.into(), h.into(), p, path.into()));
        assert_eq!(r("/healthz"), t("HTTP", "10.0.0.5", 8080, "/healthz"));
        assert_eq!(r("c?y=2"), t("HTTP", "10.0.0.5", 8080, "/a/c?y=2"));
        assert_eq!(r("?y=2"), t("HTTP", "10.0.0.5", 8080, "/a/b?y=2"));
        assert_eq!(r("http://0.0.0.0/"), t("HTTP", "0.0.0.0", 80, "/"));
        assert_eq!(
            r("https://10.0.0.5:8443/s#frag"),
            t("HTTPS", "10.0.0.5", 8443, "/s")
        );
        assert_eq!(r("//other:81"), t("HTTP", "other", 81, "/"));
        assert_eq!(r("http://[fd00::1]:90/v6"), t("HTTP", "fd00::1", 90, "/v6"));
        assert_eq!(r("http://:80/"), None);
        // The probe's own headers go along.
        assert_eq!(
            resolve_location(&cur, "/h").map(|h| h.headers),
            Some(cur.headers.clone())
        );
    }

    #[test]
    fn redirects_are_followed_on_the_same_host_only() {
        let cur = get("10.0.0.5", 8080, "/redirect");
        let resp = |status: u16, loc: Option<&str>| Response {
            status,
            location: loc.map(String::from),
            body: b"<a href=\"http://0.0.0.0/\">Found</a>.\n\n".to_vec(),
        };
        assert_eq!(
            http_step("10.0.0.5", &cur, &resp(302, Some("/healthz")), 0),
            Step::Follow(get("10.0.0.5", 8080, "/healthz"))
        );
        // Another port of the same host is the same host (Go compares URL.Hostname()).
        assert!(matches!(
            http_step("10.0.0.5", &cur, &resp(307, Some("http://10.0.0.5:9/x")), 3),
            Step::Follow(_)
        ));
        assert_eq!(
            http_step("10.0.0.5", &cur, &resp(302, Some("http://0.0.0.0/")), 0),
            Step::Done(
                Outcome::Success,
                Some("Probe terminated redirects, Response body: <a href=\"http://0.0.0.0/\">Found</a>.\n\n".into())
            )
        );
        assert!(matches!(
            http_step("10.0.0.5", &cur, &resp(301, Some("/again")), MAX_REDIRECTS),
            Step::Done(Outcome::Failure(m), None) if m.ends_with("stopped after 10 redirects")
        ));
        // Not a redirect to follow: 304, or a 302 without Location, is a success with a warning.
        assert!(matches!(
            http_step("10.0.0.5", &cur, &resp(304, Some("/x")), 0),
            Step::Done(Outcome::Success, Some(_))
        ));
        assert!(matches!(
            http_step("10.0.0.5", &cur, &resp(302, None), 0),
            Step::Done(Outcome::Success, Some(_))
        ));
        assert_eq!(
            http_step("10.0.0.5", &cur, &resp(204, None), 0),
            Step::Done(Outcome::Success, None)
        );
        assert_eq!(
            http_step("10.0.0.5", &cur, &resp(503, None), 0),
            Step::Done(
                Outcome::Failure("HTTP probe failed with statuscode: 503".into()),
                None
            )
        );
    }

    #[test]
    fn responses_parse_with_their_bodies() {
        let r = parse_response(
            b"HTTP/1.1 302 Found\r\nLocation: /x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;e=1\r\nef\r\n0\r\n\r\n",
        );
        assert_eq!(
            r,
            Some(Response {
                status: 302,
                location: Some("/x".into()),
                body: b"abcdef".to_vec()
            })
        );
        let r = parse_response(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA");
        assert_eq!(r.map(|r| r.body), Some(b"ok".to_vec()));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_probes_follow_local_redirects_against_a_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let n = s.read(&mut b).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&b[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, extra, body) = match path.as_str() {
                    "/to-failing" => ("302 Found", "Location: /healthz\r\n", ""),
                    "/to-ok" => ("301 Moved", "Location: ok\r\n", ""),
                    "/healthz" => ("500 Internal Server Error", "", "no"),
                    "/ok" => ("200 OK", "", "fine"),
                    "/away" => (
                        "302 Found",
                        "Location: http://0.0.0.0/\r\n",
                        "<a href=\"http://0.0.0.0/\">Found</a>.\n\n",
                    ),
                    _ => ("302 Found", "Location: /loop\r\n", ""),
                };
                let msg = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                // Keeps the connection open: the probe stops at the end of the response.
                let _ = s.write_all(msg.as_bytes()).await;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(s);
                });
            }
        });
        let h = |p: &str| get("127.0.0.1", port, p);
        let failing = http_get_warn(&h("/to-failing")).await;
        assert_eq!(
            failing,
            (
                Outcome::Failure("HTTP probe failed with statuscode: 500".into()),
                None
            )
        );
        assert_eq!(http_get_warn(&h("/to-ok")).await, (Outcome::Success, None));
        assert_eq!(
            http_get_warn(&h("/away")).await,
            (
                Outcome::Success,
                Some("Probe terminated redirects, Response body: <a href=\"http://0.0.0.0/\">Found</a>.\n\n".into())
            )
        );
        assert!(matches!(
            http_get_warn(&h("/loop")).await,
            (Outcome::Failure(m), None) if m.ends_with("stopped after 10 redirects")
        ));
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
