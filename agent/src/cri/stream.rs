//! The CRI streaming server: `Exec`, `Attach` and `PortForward` answer a one-time URL on
//! 127.0.0.1 (as containerd's streaming server does), where the client (crictl) upgrades to
//! SPDY/3.1 or WebSocket and gets the same session the kubelet API's `/exec`, `/attach` and
//! `/portForward` serve ([`crate::server::routes::session`],
//! [`crate::server::portforward::upgrade`]). A URL is good once, for [`TOKEN_TTL`]; it carries
//! no credentials because only root could ask the CRI socket for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::pods::Ctx;
use crate::server::exec::ExecRequest;
use crate::server::portforward::{self, Target};
use crate::server::routes::{is_websocket, session, NoContainer};
use crate::server::Body;

/// How long an Exec, Attach or PortForward URL may wait for its client (containerd's and the kubelet's
/// streaming servers: one minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// What a URL was made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A command in the container of that runtime id.
    Exec {
        container: String,
        request: ExecRequest,
    },
    /// The streams of the container of that runtime id (the request's command is empty).
    Attach {
        container: String,
        request: ExecRequest,
    },
    /// Connections into the pod of the sandbox (pod uid) `sandbox`, named `namespace/name`;
    /// the ports come from the client's streams (or the URL's query, for WebSocket channels).
    PortForward {
        sandbox: String,
        namespace: String,
        name: String,
    },
}

impl Pending {
    fn kind(&self) -> Kind {
        match self {
            Pending::Exec { .. } => Kind::Exec,
            Pending::Attach { .. } => Kind::Attach,
            Pending::PortForward { .. } => Kind::PortForward,
        }
    }
}

/// The streaming server: its address and the URLs not used yet.
pub struct Streams {
    addr: SocketAddr,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl Streams {
    /// Listens on 127.0.0.1 (a port of the kernel's choice) and serves in the background.
    pub fn start(ctx: Arc<Ctx>) -> std::io::Result<Arc<Streams>> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let streams = Arc::new(Streams {
            addr,
            pending: Mutex::new(HashMap::new()),
        });
        let s = streams.clone();
        tokio::spawn(async move {
            tracing::info!(%addr, "CRI streaming server listening");
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "CRI streaming accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (s, ctx) = (s.clone(), ctx.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (s, ctx) = (s.clone(), ctx.clone());
                        async move { Ok::<_, Infallible>(s.handle(ctx, req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "CRI streaming connection ended");
                    }
                });
            }
        });
        Ok(streams)
    }

    /// A one-time URL for `p`.
    pub fn url(&self, p: Pending) -> String {
        let token = token();
        let kind = p.kind().path();
        let now = Instant::now();
        if let Ok(mut m) = self.pending.lock() {
            m.retain(|_, (_, made)| now.duration_since(*made) < TOKEN_TTL);
            m.insert(token.clone(), (p, now));
        }
        format!("http://{}/{kind}/{token}", self.addr)
    }

    /// Takes the request a URL's token stands for (once, within [`TOKEN_TTL`]).
    fn take(&self, kind: Kind, token: &str) -> Option<Pending> {
        let (p, made) = self.pending.lock().ok()?.remove(token)?;
        (made.elapsed() < TOKEN_TTL && p.kind() == kind).then_some(p)
    }

    fn handle(&self, ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
        let Some((kind, token)) = parse_path(req.uri().path()) else {
            return reply(StatusCode::NOT_FOUND, "not found");
        };
        let Some(p) = self.take(kind, token) else {
            return reply(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        let websocket = is_websocket(req.headers());
        let (container, request, attach) = match p {
            Pending::Exec { container, request } => (container, request, false),
            Pending::Attach { container, request } => (container, request, true),
            Pending::PortForward {
                sandbox,
                namespace,
                name,
            } => {
                // The sandbox's network namespace as it is now (none: hostNetwork).
                let target = move || match ctx.runtime.sandbox(&sandbox) {
                    Some(sb) => Ok(Target {
                        namespace,
                        name,
                        uid: sandbox,
                        netns: sb.netns,
                    }),
                    None => Err(format!("pod sandbox {sandbox:?} not found")),
                };
                return portforward::upgrade(req, websocket, target);
            }
        };
        let runtime = ctx.runtime.clone();
        let id = container.clone();
        let resolve = move || match runtime.status(&id) {
            Some(r) if matches!(r.state, bosun_runtime::ContainerState::Running { .. }) => Ok(r),
            _ => Err(NoContainer(
                StatusCode::NOT_FOUND,
                format!("container {id:?} is not running"),
            )),
        };
        session(ctx, req, websocket, resolve, request, attach)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    /// The first segment of its URLs (containerd's).
    fn path(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

/// `/exec/<token>`, `/attach/<token>` or `/portforward/<token>`.
fn parse_path(path: &str) -> Option<(Kind, &str)> {
    let (kind, token) = path.strip_prefix('/')?.split_once('/')?;
    let kind = [Kind::Exec, Kind::Attach, Kind::PortForward]
        .into_iter()
        .find(|k| k.path() == kind)?;
    (!token.is_empty() && token.chars().all(|c| c.is_ascii_hexdigit())).then_some((kind, token))
}

/// 128 random bits, hex.
fn token() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom writes at most buf.len() bytes into buf, which lives across the call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // getrandom(2) does not fail short for 16 bytes once the pool is up; never reached in
        // practice, and a token of the clock still expires in a minute and works once.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        buf = t.to_le_bytes();
    }
    hex::encode(buf)
}

fn reply(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// The checks containerd and the kubelet's streaming server make on an Exec or Attach request,
/// with their messages.
pub fn exec_request(
    cmd: Vec<String>,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<ExecRequest, String> {
    if tty && stderr {
        return Err("tty and stderr cannot both be true".into());
    }
    if !(stdin || stdout || stderr) {
        return Err("one of stdin, stdout, or stderr must be set".into());
    }
    Ok(ExecRequest {
        command: cmd,
        stdin,
        stdout,
        stderr,
        tty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases = [
            ("/exec/00ff", Some((Kind::Exec, "00ff"))),
            ("/attach/abc123", Some((Kind::Attach, "abc123"))),
            ("/exec/", None),
            ("/exec", None),
            ("/exec/../x", None),
            ("/portforward/00", Some((Kind::PortForward, "00"))),
            ("/portForward/00", None),
            ("exec/00", None),
            ("/exec/00/extra", None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_path(path), want, "{path}");
        }
    }

    #[test]
    fn requests() {
        let cmd = || vec!["sh".to_string()];
        assert!(exec_request(cmd(), true, true, true, false).is_ok());
        assert!(exec_request(cmd(), false, false, true, true).is_ok());
        assert_eq!(
            exec_request(cmd(), true, true, true, true),
            Err("tty and stderr cannot both be true".into())
        );
        assert_eq!(
            exec_request(cmd(), false, false, false, false),
            Err("one of stdin, stdout, or stderr must be set".into())
        );
    }

    #[test]
    fn urls_are_good_once_for_their_kind() {
        let streams = Streams {
            addr: "127.0.0.1:1".parse().expect("addr"),
            pending: Mutex::new(HashMap::new()),
        };
        let pf = Pending::PortForward {
            sandbox: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
        };
        let url = streams.url(pf.clone());
        let path = url.strip_prefix("http://127.0.0.1:1").expect("our address");
        let (kind, token) = parse_path(path).expect("a path of ours");
        assert_eq!(kind, Kind::PortForward);
        // Another kind's path with the same token: refused, and the token stays usable.
        assert_eq!(streams.take(Kind::Exec, token), None);
        let url = streams.url(pf.clone());
        let (_, token) =
            parse_path(url.strip_prefix("http://127.0.0.1:1").unwrap_or_default()).expect("path");
        assert_eq!(streams.take(Kind::PortForward, token), Some(pf));
        assert_eq!(streams.take(Kind::PortForward, token), None, "once");
        let exec = Pending::Exec {
            container: "u1_c_0".into(),
            request: exec_request(vec!["sh".into()], false, false, true, false).expect("req"),
        };
        let url = streams.url(exec.clone());
        assert!(url.contains("/exec/"), "{url}");
        let (_, token) =
            parse_path(url.strip_prefix("http://127.0.0.1:1").unwrap_or_default()).expect("path");
        assert_eq!(streams.take(Kind::Exec, token), Some(exec));
    }

    #[test]
    fn tokens_are_unique_hex() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(parse_path(&format!("/exec/{a}")).is_some());
    }
}
