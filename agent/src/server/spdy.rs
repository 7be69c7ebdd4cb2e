//! SPDY/3.1 framing, the server's half of what Kubernetes streaming speaks (moby/spdystream on
//! the other side): control frames (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY,
//! HEADERS, WINDOW_UPDATE) and data frames. Header blocks are zlib streams with the SPDY/3
//! preset dictionary, one compression context per direction for the whole connection, each block
//! ended by a sync flush. Pure: bytes in, frames out, and back; no I/O.
//!
//! Flow control is not enforced: spdystream never sends WINDOW_UPDATE and ignores the ones it
//! gets, as the kubelet's own SPDY server does.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

/// Control frames and data frames: the sender's last frame on a stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM: the receiver may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
pub const RST_INTERNAL_ERROR: u32 = 6;

/// Largest frame payload (24-bit length field).
pub const MAX_PAYLOAD: usize = 0xff_ffff;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Name/value pairs of a header block, names lowercase; several values of one name are joined
/// with NUL on the wire.
pub type Headers = Vec<(String, String)>;

/// The first value of `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) triples.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this module does not know (skipped, as SPDY asks).
    Unknown {
        kind: u16,
    },
}

impl Frame {
    /// A data frame, FIN when `fin`.
    pub fn data(stream_id: u32, data: Vec<u8>, fin: bool) -> Frame {
        Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported spdy version {0}")]
    Version(u16),
    #[error("{kind} frame too short ({len} bytes)")]
    Short { kind: &'static str, len: usize },
    #[error("header block: {0}")]
    HeaderBlock(String),
    #[error("header block decompression: {0}")]
    Inflate(#[from] flate2::DecompressError),
    #[error("header block compression: {0}")]
    Deflate(#[from] flate2::CompressError),
    #[error("frame payload of {0} bytes is too large")]
    TooLarge(usize),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Turns the bytes a peer sends into frames. Keeps the peer's header decompression context.
pub struct Decoder {
    buf: Vec<u8>,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: Vec::new(),
            inflate: Decompress::new(true),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, None until more bytes are needed. An error leaves the
    /// connection unusable (the compression context is shared by every frame).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let first = be32(&self.buf, 0);
        let second = be32(&self.buf, 4);
        let flags = (second >> 24) as u8;
        let len = (second & 0xff_ffff) as usize;
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize, kind: &'static str| {
            if payload.len() < n {
                Err(SpdyError::Short {
                    kind,
                    len: payload.len(),
                })
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream_id: be32(&payload, 0) & 0x7fff_ffff,
                    associated_to: be32(&payload, 4) & 0x7fff_ffff,
                    priority: payload[8] >> 5,
                    flags,
                    headers: self.headers(&payload[10..])?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4, "SYN_REPLY")?;
                let stream_id = be32(&payload, 0) & 0x7fff_ffff;
                let headers = self.headers(&payload[4..])?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: be32(&payload, 0) & 0x7fff_ffff,
                    status: be32(&payload, 4),
                }
            }
            SETTINGS => {
                need(4, "SETTINGS")?;
                let n = be32(&payload, 0) as usize;
                if n > (payload.len() - 4) / 8 {
                    return Err(SpdyError::Short {
                        kind: "SETTINGS",
                        len: payload.len(),
                    });
                }
                let entries = (0..n)
                    .map(|i| {
                        let w = be32(&payload, 4 + i * 8);
                        ((w >> 24) as u8, w & 0xff_ffff, be32(&payload, 8 + i * 8))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4, "PING")?;
                Frame::Ping {
                    id: be32(&payload, 0),
                }
            }
            GOAWAY => {
                need(4, "GOAWAY")?;
                Frame::GoAway {
                    last_good_stream_id: be32(&payload, 0) & 0x7fff_ffff,
                    status: if payload.len() >= 8 {
                        be32(&payload, 4)
                    } else {
                        0
                    },
                }
            }
            WINDOW_UPDATE => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: be32(&payload, 0) & 0x7fff_ffff,
                    delta: be32(&payload, 4) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }

    /// Decompresses one header block (continuing the connection's zlib stream) and parses it.
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(4 * compressed.len() + 256);
        let mut pos = 0;
        loop {
            let before = self.inflate.total_in();
            let r =
                self.inflate
                    .decompress_vec(&compressed[pos..], &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            pos += used;
            match r {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY)?;
                }
                Err(e) => return Err(e.into()),
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if out.len() < out.capacity() && pos >= compressed.len() {
                        break;
                    }
                    if out.len() == out.capacity() {
                        if out.len() >= MAX_HEADER_BLOCK {
                            return Err(SpdyError::HeaderBlock("too large".into()));
                        }
                        out.reserve(out.len().max(1024));
                    } else if used == 0 {
                        break;
                    }
                }
            }
        }
        parse_header_block(&out)
    }
}

/// Parses an uncompressed header block.
pub fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |what: &str| SpdyError::HeaderBlock(what.to_string());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if b.len() < at + n {
            return Err(bad("truncated"));
        }
        let s = &b[at..at + n];
        at += n;
        Ok(s)
    };
    let count = be32(take(4)?, 0) as usize;
    if count > 4096 {
        return Err(bad("too many headers"));
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let n = be32(take(4)?, 0) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?, 0) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// Serializes a header block (values of one name joined with NUL).
pub fn header_block(headers: &Headers) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in headers {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let mut b = Vec::new();
    b.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for name in names {
        let value = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("\0");
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Turns frames into bytes. Keeps this side's header compression context.
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(DICTIONARY)?;
        Ok(Encoder { deflate })
    }

    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)?;
            pos += (self.deflate.total_in() - before) as usize;
            // A sync flush is complete when it left room in the output.
            if pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }

    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| -> Result<Vec<u8>, SpdyError> {
            if payload.len() > MAX_PAYLOAD {
                return Err(SpdyError::TooLarge(payload.len()));
            }
            let mut b = Vec::with_capacity(8 + payload.len());
            b.extend_from_slice(
                &(0x8000_0000u32 | (u32::from(VERSION) << 16) | u32::from(kind)).to_be_bytes(),
            );
            b.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
            b.extend_from_slice(&payload);
            Ok(b)
        };
        let words = |ws: &[u32]| ws.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut p = words(&[*stream_id, *associated_to]);
                p.push(priority << 5);
                p.push(0);
                p.extend(self.compress(&header_block(headers))?);
                control(SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = words(&[*stream_id]);
                p.extend(self.compress(&header_block(headers))?);
                control(SYN_REPLY, *flags, p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = words(&[*stream_id]);
                p.extend(self.compress(&header_block(headers))?);
                control(HEADERS, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                control(RST_STREAM, 0, words(&[*stream_id, *status]))
            }
            Frame::Settings { flags, entries } => {
                let mut p = words(&[entries.len() as u32]);
                for (f, id, v) in entries {
                    p.extend(words(&[(u32::from(*f) << 24) | (id & 0xff_ffff), *v]));
                }
                control(SETTINGS, *flags, p)
            }
            Frame::Ping { id } => control(PING, 0, words(&[*id])),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => control(GOAWAY, 0, words(&[*last_good_stream_id, *status])),
            Frame::WindowUpdate { stream_id, delta } => {
                control(WINDOW_UPDATE, 0, words(&[*stream_id, *delta]))
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                let mut b = Vec::with_capacity(8 + data.len());
                b.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                b.extend_from_slice(&((u32::from(*flags) << 24) | data.len() as u32).to_be_bytes());
                b.extend_from_slice(data);
                Ok(b)
            }
            Frame::Unknown { kind } => control(*kind, 0, Vec::new()),
        }
    }
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
pub const DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-range\
s\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcach\
e-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-enc\
oding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content\
-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-t\
ype\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\
\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modifie\
d-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-\
since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\
\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06ser\
ver\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\
\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\
\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\
\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-al\
ive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840941041141\
2413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanen\
tly400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 N\
ot Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:0\
0:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif\
,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzi\
p,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    // Byte vectors written by moby/spdystream v0.5.1's framer (the client side of kubectl).
    const GO_SYN1: &str = "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff";
    const GO_SYN3: &str = "800300010100001600000003000000000000c22a052a651201000000ffff";

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        // The dictionary id the Go client puts in its zlib header.
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn decodes_go_syn_streams_sharing_one_zlib_context() {
        let mut d = Decoder::new();
        let all = [unhex(GO_SYN1), unhex(GO_SYN3)].concat();
        // Byte by byte: frames only come out once complete.
        let mut frames = Vec::new();
        for b in &all {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().expect("decode") {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    stream_id: 1,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: h(&[("streamtype", "error")]),
                },
                Frame::SynStream {
                    stream_id: 3,
                    associated_to: 0,
                    priority: 0,
                    flags: FLAG_FIN,
                    headers: h(&[("streamtype", "data")]),
                },
            ]
        );
    }

    #[test]
    fn fixed_frames_match_go_bytes() {
        let mut e = Encoder::new().expect("encoder");
        let cases = [
            (Frame::Ping { id: 7 }, "800300060000000400000007"),
            (Frame::data(5, b"hi".to_vec(), true), "00000005010000026869"),
            (
                Frame::RstStream {
                    stream_id: 5,
                    status: RST_CANCEL,
                },
                "80030003000000080000000500000005",
            ),
            (
                Frame::GoAway {
                    last_good_stream_id: 3,
                    status: 0,
                },
                "80030007000000080000000300000000",
            ),
        ];
        for (frame, hex) in cases {
            assert_eq!(e.encode(&frame).expect("encode"), unhex(hex), "{frame:?}");
            let mut d = Decoder::new();
            d.push(&unhex(hex));
            assert_eq!(d.next_frame().expect("decode"), Some(frame));
        }
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        let mut e = Encoder::new().expect("encoder");
        let mut d = Decoder::new();
        let frames = vec![
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::SynStream {
                stream_id: 2,
                associated_to: 0,
                priority: 3,
                flags: FLAG_UNIDIRECTIONAL,
                headers: h(&[
                    ("port", "8080"),
                    ("streamtype", "data"),
                    ("x", "a"),
                    ("x", "b"),
                ]),
            },
            Frame::Headers {
                stream_id: 2,
                flags: FLAG_FIN,
                headers: h(&[("requestid", "0")]),
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(1, 7, 100)],
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
        ];
        for f in &frames {
            d.push(&e.encode(f).expect("encode"));
        }
        for f in &frames {
            assert_eq!(d.next_frame().expect("decode").as_ref(), Some(f));
        }
        assert_eq!(d.next_frame().expect("decode"), None);
    }

    #[test]
    fn rejects_garbage() {
        let mut d = Decoder::new();
        // SPDY/2 control frame.
        d.push(&unhex("800200060000000400000007"));
        assert!(matches!(d.next_frame(), Err(SpdyError::Version(2))));
        let mut d = Decoder::new();
        d.push(&unhex("80030001000000040000000100"));
        assert!(d.next_frame().is_err());
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9]).is_err());
        assert_eq!(header(&h(&[("Port", "80")]), "port"), Some("80"));
    }
}
