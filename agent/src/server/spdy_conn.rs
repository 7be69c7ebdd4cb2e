//! A SPDY/3.1 server connection over a byte transport: the upgraded HTTP connection itself
//! (`Upgrade: SPDY/3.1`) or a WebSocket whose binary messages carry the SPDY byte stream
//! (`SPDY/3.1+<protocol>` subprotocols, what kubectl 1.30+ sends and 1.36 apiservers pass
//! through to nodes that declare `ExtendWebSocketsToKubelet`).
//!
//! The client opens every stream; each one the `validate` check accepts gets a SYN_REPLY and
//! goes to the caller as a [`Stream`]; the others are reset. Pings are answered. The session ends
//! when the transport ends or the client sends GOAWAY; dropping every [`Out`] then closes the
//! transport.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::spdy::{self, Frame, Headers};

/// The most data one data frame carries when we send.
pub const CHUNK: usize = 32 * 1024;

/// A byte transport: chunks in, chunks out (closing `tx` closes the transport).
pub struct Io {
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub tx: mpsc::Sender<Vec<u8>>,
}

/// The upgraded connection itself carries SPDY.
pub fn raw_io(upgraded: Upgraded) -> Io {
    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if in_tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    Io {
        rx: in_rx,
        tx: out_tx,
    }
}

/// SPDY tunneled through a WebSocket: every binary message is a piece of the byte stream.
pub async fn tunnel_io(upgraded: Upgraded) -> Io {
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut incoming) = socket.split();
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            match m {
                Message::Binary(b) if in_tx.send(b.to_vec()).await.is_err() => break,
                Message::Close(_) | Message::Text(_) => break,
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if sink.send(Message::binary(b)).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    });
    Io {
        rx: in_rx,
        tx: out_tx,
    }
}

/// Sends frames on the connection (cheap to clone).
#[derive(Clone)]
pub struct Out {
    tx: mpsc::Sender<Frame>,
}

impl Out {
    /// Sends `data` on `stream` in frames of at most [`CHUNK`] bytes, the last one with FIN
    /// when `fin`. False once the connection is gone.
    pub async fn data(&self, stream: u32, data: &[u8], fin: bool) -> bool {
        let mut chunks = data.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            return self
                .tx
                .send(Frame::data(stream, Vec::new(), fin))
                .await
                .is_ok();
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            if self
                .tx
                .send(Frame::data(stream, c.to_vec(), fin && last))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Ends our side of `stream`.
    pub async fn finish(&self, stream: u32) -> bool {
        self.data(stream, &[], true).await
    }

    pub async fn reset(&self, stream: u32, status: u32) -> bool {
        self.tx
            .send(Frame::RstStream {
                stream_id: stream,
                status,
            })
            .await
            .is_ok()
    }
}

/// A stream the client opened (and we accepted).
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data, until it finishes (FIN) or resets the stream.
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub out: Out,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        spdy::header(&self.headers, name)
    }
}

/// Encodes frames onto the transport until every [`Out`] is gone.
async fn write_frames(mut frames: mpsc::Receiver<Frame>, tx: mpsc::Sender<Vec<u8>>) {
    let mut enc = match spdy::Encoder::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "spdy encoder");
            return;
        }
    };
    while let Some(f) = frames.recv().await {
        match enc.encode(&f) {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "spdy encode");
                return;
            }
        }
    }
}

/// Serves one connection: accepted streams go to `streams`. Returns when the client is gone;
/// the transport closes once the caller has dropped every [`Stream`] and [`Out`].
pub async fn serve(
    mut io: Io,
    validate: impl Fn(&Headers) -> Result<(), String>,
    streams: mpsc::Sender<Stream>,
) {
    let (ftx, frx) = mpsc::channel::<Frame>(64);
    tokio::spawn(write_frames(frx, io.tx));
    let out = Out { tx: ftx };
    let mut dec = spdy::Decoder::new();
    let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    'conn: while let Some(chunk) = io.rx.recv().await {
        dec.push(&chunk);
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy: bad frame; closing the connection");
                    let _ = out
                        .tx
                        .send(Frame::GoAway {
                            last_good_stream_id: 0,
                            status: 1,
                        })
                        .await;
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    if stream_id % 2 == 0 || open.contains_key(&stream_id) {
                        out.reset(stream_id, spdy::RST_PROTOCOL_ERROR).await;
                        continue;
                    }
                    if let Err(e) = validate(&headers) {
                        tracing::debug!(stream = stream_id, error = %e, "spdy: stream refused");
                        out.reset(stream_id, spdy::RST_REFUSED_STREAM).await;
                        continue;
                    }
                    let reply = Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Headers::new(),
                    };
                    if out.tx.send(reply).await.is_err() {
                        break 'conn;
                    }
                    let (tx, rx) = mpsc::channel(16);
                    if flags & spdy::FLAG_FIN == 0 {
                        open.insert(stream_id, tx);
                    }
                    let s = Stream {
                        id: stream_id,
                        headers,
                        rx,
                        out: out.clone(),
                    };
                    if streams.send(s).await.is_err() {
                        break 'conn;
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    if !data.is_empty() {
                        if let Some(tx) = open.get(&stream_id) {
                            if tx.send(data).await.is_err() {
                                open.remove(&stream_id);
                            }
                        }
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Headers {
                    stream_id, flags, ..
                } => {
                    if flags & spdy::FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::Ping { id } => {
                    if out.tx.send(Frame::Ping { id }).await.is_err() {
                        break 'conn;
                    }
                }
                Frame::GoAway { .. } => break 'conn,
                Frame::SynReply { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    }
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

    /// A client's view: encodes what it sends, decodes what comes back.
    struct Client {
        enc: spdy::Encoder,
        dec: spdy::Decoder,
        tx: mpsc::Sender<Vec<u8>>,
        rx: mpsc::Receiver<Vec<u8>>,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let b = self.enc.encode(&f).expect("encode");
            self.tx.send(b).await.expect("send");
        }
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.next_frame().expect("decode") {
                    return Some(f);
                }
                let b = self.rx.recv().await?;
                self.dec.push(&b);
            }
        }
    }

    #[tokio::test]
    async fn replies_resets_pings_and_delivers_data() {
        let (c_tx, s_rx) = mpsc::channel(16);
        let (s_tx, c_rx) = mpsc::channel(16);
        let (streams_tx, mut streams) = mpsc::channel(4);
        let server = tokio::spawn(serve(
            Io { rx: s_rx, tx: s_tx },
            |h: &Headers| match spdy::header(h, "ok") {
                Some(_) => Ok(()),
                None => Err("no".into()),
            },
            streams_tx,
        ));
        let mut c = Client {
            enc: spdy::Encoder::new().expect("enc"),
            dec: spdy::Decoder::new(),
            tx: c_tx,
            rx: c_rx,
        };
        c.send(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: h(&[("ok", "1")]),
        })
        .await;
        assert!(matches!(
            c.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        let mut s = streams.recv().await.expect("stream");
        assert_eq!(s.header("ok"), Some("1"));
        c.send(Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::new(),
        })
        .await;
        assert_eq!(
            c.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: spdy::RST_REFUSED_STREAM
            })
        );
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.recv().await, Some(Frame::Ping { id: 1 }));
        c.send(Frame::data(1, b"abc".to_vec(), true)).await;
        assert_eq!(s.rx.recv().await, Some(b"abc".to_vec()));
        assert_eq!(s.rx.recv().await, None);
        assert!(s.out.data(1, &vec![7u8; CHUNK + 1], true).await);
        assert_eq!(
            c.recv().await,
            Some(Frame::data(1, vec![7u8; CHUNK], false))
        );
        assert_eq!(c.recv().await, Some(Frame::data(1, vec![7u8], true)));
        c.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
        server.await.expect("server");
        drop(s);
        // Every Out gone: the transport closes.
        assert_eq!(c.recv().await, None);
    }
}
