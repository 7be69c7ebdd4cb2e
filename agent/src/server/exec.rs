//! `/exec/{ns}/{pod}/{container}` over WebSocket: the command runs through the runtime's exec
//! helper with pipes; its stdout/stderr go out on channels 1 and 2, channel 0 feeds its stdin,
//! and when it ends its exit status goes out on channel 3 before the close frame.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::logs::{all_values, value};
use super::ws;
use crate::pods::Ctx;

/// After the command exits, how long its output pipes may stay open (a background process of
/// the command holding them) before the session ends anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long to wait for the client's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What an exec request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn flag(pairs: &[(String, String)], key: &str) -> bool {
    matches!(value(pairs, key), Some("1" | "true" | "True" | "TRUE"))
}

/// The query of an exec request (`command` repeated, `stdin`, `stdout`, `stderr`, `tty`).
pub fn parse_request(pairs: &[(String, String)]) -> Result<ExecRequest, String> {
    let command = all_values(pairs, "command");
    if command.is_empty() {
        return Err("missing command".into());
    }
    parse_streams(pairs, command)
}

/// The streams of an exec or attach request.
pub fn parse_streams(
    pairs: &[(String, String)],
    command: Vec<String>,
) -> Result<ExecRequest, String> {
    let r = ExecRequest {
        command,
        stdin: flag(pairs, "input") || flag(pairs, "stdin"),
        stdout: flag(pairs, "output") || flag(pairs, "stdout"),
        stderr: flag(pairs, "error") || flag(pairs, "stderr"),
        tty: flag(pairs, "tty"),
    };
    if !(r.stdin || r.stdout || r.stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok(r)
}

/// Copies a pipe into `channel` messages until EOF (or drops the data when not wanted).
async fn pump(fd: Option<OwnedFd>, channel: u8, wanted: bool, tx: mpsc::Sender<Message>) {
    let Some(fd) = fd else { return };
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if wanted
                    && tx
                        .send(Message::binary(ws::frame(channel, &buf[..n])))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Where the client's stdin goes.
enum Input {
    Pipe(tokio::net::unix::pipe::Sender),
    Terminal(tokio::fs::File),
}

impl Input {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Input::Pipe(p) => p.write_all(b).await,
            Input::Terminal(f) => {
                f.write_all(b).await?;
                f.flush().await
            }
        }
    }
}

/// Copies a terminal's output into `channel` messages until it ends (EIO once the command
/// and the helper have closed it).
async fn pump_file(file: std::fs::File, channel: u8, tx: mpsc::Sender<Message>) {
    let mut f = tokio::fs::File::from_std(file);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match f.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(Message::binary(ws::frame(channel, &buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// What a streaming session does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Runs the request's command.
    Exec,
    /// Streams the container's output (`kubectl attach`); `log` is its current log file.
    Attach { log: std::path::PathBuf },
}

/// Runs one exec or attach session on an upgraded connection.
pub async fn serve(
    ctx: Arc<Ctx>,
    upgraded: hyper::upgrade::Upgraded,
    protocol: &'static str,
    id: String,
    req: ExecRequest,
    kind: Kind,
) {
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, incoming) = socket.split();
    // The session speaks binary channel frames; the base64 protocols are converted here.
    let mut incoming = incoming.filter_map(move |m| {
        std::future::ready(match m {
            Ok(Message::Close(c)) => Some(Ok(Message::Close(c))),
            Ok(m) => ws::decode(protocol, &m).map(|f| Ok(Message::binary(f))),
            Err(e) => Some(Err(e)),
        })
    });
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let closing = matches!(m, Message::Close(_));
            let m = match m {
                Message::Binary(frame) => ws::encode(protocol, frame.to_vec()),
                m => m,
            };
            if sink.send(m).await.is_err() || closing {
                break;
            }
        }
        sink
    });
    // Tell the client the streams are up: an empty message on the lowest writable channel.
    let first = if req.stdout {
        ws::STDOUT
    } else if req.stderr {
        ws::STDERR
    } else {
        ws::ERROR
    };
    let _ = tx.send(Message::binary(ws::frame(first, b""))).await;

    let status = session(&ctx, protocol, &id, &req, kind, &tx, &mut incoming).await;
    if let Some(payload) = ws::status_payload(protocol, &status) {
        let _ = tx
            .send(Message::binary(ws::frame(ws::ERROR, &payload)))
            .await;
    }
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(tx);
    let _ = writer.await;
    // The client answers our close once it has read everything.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = incoming.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The session proper in channel-protocol terms (`protocol` is one of [`ws::SUPPORTED`]):
/// `incoming` carries the client's messages, `tx` takes ours. Returns the status for the error
/// channel. The SPDY transport (`spdy_exec`) drives it through the same messages.
pub async fn session<S>(
    ctx: &Arc<Ctx>,
    protocol: &'static str,
    id: &str,
    req: &ExecRequest,
    kind: Kind,
    tx: &mpsc::Sender<Message>,
    incoming: &mut S,
) -> serde_json::Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    match kind {
        Kind::Exec => run(ctx, id, req, protocol, tx, incoming).await,
        Kind::Attach { log } => attach(ctx, id, &log, req, protocol, tx, incoming).await,
    }
}

/// An attach: the container's output from now on, read from its log, until it stops running
/// or the client goes away; with `stdin`, the client's input goes to the container's stdin
/// (handed out by its keeper), and with `tty` resizes go to its terminal.
async fn attach<S>(
    ctx: &Arc<Ctx>,
    id: &str,
    log: &std::path::Path,
    req: &ExecRequest,
    protocol: &'static str,
    tx: &mpsc::Sender<Message>,
    incoming: &mut S,
) -> serde_json::Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut tail = super::logs::Tail::open_at_end(log);
    let mut input = None;
    if req.stdin || req.tty {
        let (c, cid) = (ctx.clone(), id.to_string());
        match tokio::task::spawn_blocking(move || c.runtime.attach_stdin(&cid)).await {
            Ok(Ok(Some(fd))) => match StdinWriter::new(fd) {
                Ok(w) => input = Some(w),
                Err(e) => tracing::debug!(container = %id, error = %e, "container stdin"),
            },
            Ok(Ok(None)) => {
                tracing::debug!(container = %id, "the container has no stdin to attach to")
            }
            Ok(Err(e)) => tracing::warn!(container = %id, error = %e, "cannot attach to stdin"),
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot attach to stdin"),
        }
    }
    let poll = if input.is_some() {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(200)
    };
    let output = async {
        loop {
            let running = matches!(
                ctx.runtime.status(id).map(|s| s.state),
                Some(bosun_runtime::ContainerState::Running { .. })
            );
            for rec in tail.read() {
                let (channel, wanted) = match rec.stream {
                    bosun_runtime::logs::Stream::Stdout => (ws::STDOUT, req.stdout),
                    // With a terminal both streams are the terminal's output.
                    bosun_runtime::logs::Stream::Stderr if req.tty => (ws::STDOUT, req.stdout),
                    bosun_runtime::logs::Stream::Stderr => (ws::STDERR, req.stderr),
                };
                if !wanted {
                    continue;
                }
                let mut data = rec.msg;
                if !rec.partial {
                    data.push(b'\n');
                }
                if tx
                    .send(Message::binary(ws::frame(channel, &data)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !running {
                return;
            }
            tokio::time::sleep(poll).await;
        }
    };
    let client = async {
        while let Some(Ok(m)) = incoming.next().await {
            let data = match &m {
                Message::Binary(b) => b.as_ref(),
                Message::Close(_) => break,
                _ => continue,
            };
            match ws::parse(protocol, data) {
                ws::Incoming::Stdin(bytes) if req.stdin => {
                    if let Some(w) = input.as_ref() {
                        if w.write_all(bytes).await.is_err() {
                            input = None;
                        }
                    }
                }
                // Closing our copy is what ends a stdinOnce container's input.
                ws::Incoming::CloseStdin if !req.tty => input = None,
                ws::Incoming::Resize { width, height } if req.tty => {
                    if let Some(w) = input.as_ref() {
                        if let Err(e) = w.resize(width, height) {
                            tracing::debug!(error = %e, "terminal resize");
                        }
                    }
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        _ = output => ws::exit_status(0, &[]),
        _ = client => ws::error_status("client went away"),
    }
}

/// Writes to a container's stdin (a pipe or a terminal's master) without blocking the runtime.
struct StdinWriter {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl StdinWriter {
    fn new(fd: OwnedFd) -> std::io::Result<StdinWriter> {
        set_nonblocking(&fd)?;
        // SAFETY: the AsyncFd owns `fd` and never closes or replaces it while registered; it is
        // deregistered when the writer (and with it the descriptor) is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE)?
        };
        Ok(StdinWriter { fd })
    }

    async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        bosun_runtime::sys::set_winsize(self.fd.get_ref().as_fd(), cols, rows)
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

/// The session proper; returns the status for the error channel.
async fn run<S>(
    ctx: &Arc<Ctx>,
    id: &str,
    req: &ExecRequest,
    protocol: &'static str,
    tx: &mpsc::Sender<Message>,
    incoming: &mut S,
) -> serde_json::Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut session = match ctx
        .runtime
        .exec_streaming(id, &req.command, req.stdin, req.tty)
    {
        Ok(s) => s,
        Err(e) => return ws::error_status(&e.to_string()),
    };
    let terminal = match session.terminal() {
        Ok(t) => t,
        Err(e) => return ws::error_status(&format!("terminal: {e}")),
    };
    let (stdout, stderr, mut stdin): (_, _, Option<Input>) = match terminal {
        // A terminal: its output is the command's stdout (and stderr); input goes to it.
        Some((reader, writer)) => (
            tokio::spawn(pump_file(reader, ws::STDOUT, tx.clone())),
            tokio::spawn(async {}),
            req.stdin
                .then(|| Input::Terminal(tokio::fs::File::from_std(writer))),
        ),
        None => (
            tokio::spawn(pump(
                session.stdout.take(),
                ws::STDOUT,
                req.stdout,
                tx.clone(),
            )),
            tokio::spawn(pump(
                session.stderr.take(),
                ws::STDERR,
                req.stderr,
                tx.clone(),
            )),
            session
                .stdin
                .take()
                .and_then(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok())
                .map(Input::Pipe),
        ),
    };
    if let Err(e) = session.started().await {
        return ws::error_status(&e.to_string());
    }
    let resizer = session.resizer();
    let session_resize = |w: u16, h: u16| match &resizer {
        Some(r) => r.resize(w, h),
        None => Ok(()),
    };
    // Feeds stdin until the client goes away; returns when it does.
    let client = async {
        while let Some(Ok(m)) = incoming.next().await {
            let data = match &m {
                Message::Binary(b) => b.as_ref(),
                Message::Close(_) => break,
                _ => continue,
            };
            match ws::parse(protocol, data) {
                ws::Incoming::Stdin(bytes) => {
                    if let Some(p) = stdin.as_mut() {
                        if p.write_all(bytes).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                // A terminal's input stays open: the command ends on its own (^D, exit).
                ws::Incoming::CloseStdin if !req.tty => stdin = None,
                ws::Incoming::Resize { width, height } => {
                    if let Err(e) = session_resize(width, height) {
                        tracing::debug!(error = %e, "terminal resize");
                    }
                }
                ws::Incoming::CloseStdin | ws::Incoming::Ignored => {}
            }
        }
    };
    let code = tokio::select! {
        r = session.wait() => r,
        _ = client => {
            tracing::debug!(container = %id, "exec client went away; killing the command");
            session.kill();
            return ws::error_status("client went away");
        }
    };
    // The output the command wrote before it ended goes out before the status.
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        let _ = stdout.await;
        let _ = stderr.await;
    })
    .await;
    match code {
        Ok(c) => ws::exit_status(c, &req.command),
        Err(e) => ws::error_status(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::logs::query_pairs;

    #[test]
    fn parses_exec_queries() {
        let r = parse_request(&query_pairs(Some(
            "command=sh&command=-c&command=exit%203&stdin=true&stdout=1&stderr=true",
        )))
        .expect("ok");
        assert_eq!(r.command, vec!["sh", "-c", "exit 3"]);
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        // The old names (input/output/error) work too.
        let r = parse_request(&query_pairs(Some("command=ls&output=1&tty=1"))).expect("ok");
        assert!(r.stdout && r.tty && !r.stdin);
        assert!(parse_request(&query_pairs(Some("stdout=1"))).is_err());
        assert!(parse_request(&query_pairs(Some("command=ls"))).is_err());
    }
}
