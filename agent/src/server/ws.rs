//! The Kubernetes remote-command WebSocket protocols: every binary message starts with its
//! channel (0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 terminal resize JSON).
//!
//! As the kubelet serves them (cri-streaming's remotecommand/websocket.go over
//! wsstream.Conn): `channel.k8s.io` (also when the client names no subprotocol) and
//! `v4.channel.k8s.io` are binary; `base64.channel.k8s.io` and `v4.base64.channel.k8s.io` send
//! text messages, the channel as an ASCII digit followed by the data in base64. The pre-v4 ones
//! write only a failure on the error channel, as its plain message; v4 writes the `metav1.Status`
//! JSON. `v5.channel.k8s.io` is v4 plus 255, a client's "close this channel" signal.

use base64::Engine;
use tokio_tungstenite::tungstenite::Message;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";
pub const V1: &str = "channel.k8s.io";
pub const V1_BASE64: &str = "base64.channel.k8s.io";
/// No subprotocol asked for: `channel.k8s.io`, and no Sec-WebSocket-Protocol in the answer.
pub const NONE: &str = "";
/// What bosun speaks, for error messages.
pub const SUPPORTED: [&str; 5] = [V5, V4, V4_BASE64, V1, V1_BASE64];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes the client's side of `channel`.
pub const CLOSE: u8 = 255;

/// The subprotocol to answer with: the first of the client's (in its order) that we speak,
/// [`NONE`] when the client offered none (wsstream's handshake), `None` when we speak none.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let offered: Vec<&str> = offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Some(NONE);
    }
    offered
        .into_iter()
        .find_map(|p| SUPPORTED.into_iter().find(|s| *s == p))
}

/// Does `protocol` send text messages with base64 data?
pub fn is_base64(protocol: &str) -> bool {
    protocol == V4_BASE64 || protocol == V1_BASE64
}

/// The WebSocket message for one channel frame (`[channel, data...]`, see [`frame`]).
pub fn encode(protocol: &str, frame: Vec<u8>) -> Message {
    if !is_base64(protocol) {
        return Message::binary(frame);
    }
    let Some((&ch, data)) = frame.split_first() else {
        return Message::text("");
    };
    let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
    text.push(char::from(b'0'.wrapping_add(ch)));
    base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
    Message::text(text)
}

/// A client's message as a channel frame (`[channel, data...]`): binary and text messages
/// alike, decoded from base64 for the base64 protocols. `None`: not data (ping, close...) or
/// invalid base64 (the kubelet drops that frame too).
pub fn decode(protocol: &str, m: &Message) -> Option<Vec<u8>> {
    let raw: &[u8] = match m {
        Message::Binary(b) => b.as_ref(),
        Message::Text(t) => t.as_bytes(),
        _ => return None,
    };
    if !is_base64(protocol) {
        return Some(raw.to_vec());
    }
    let (&ch, data) = raw.split_first()?;
    // v5's close signal is binary only; in base64 the channel is an ASCII digit.
    let mut out = vec![ch.wrapping_sub(b'0')];
    base64::engine::general_purpose::STANDARD
        .decode_vec(data, &mut out)
        .ok()?;
    Some(out)
}

/// What goes on the error channel when the session ends: v4 and v5 send the status JSON; the
/// older protocols send nothing for a success and the status's message for a failure.
pub fn status_payload(protocol: &str, status: &serde_json::Value) -> Option<Vec<u8>> {
    if matches!(protocol, V5 | V4 | V4_BASE64) {
        return Some(status.to_string().into_bytes());
    }
    if status["status"] == "Success" {
        return None;
    }
    Some(status["message"].as_str().unwrap_or("").as_bytes().to_vec())
}

/// One message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// What a client's message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    /// v5: the client closed its stdin.
    CloseStdin,
    Resize {
        width: u16,
        height: u16,
    },
    /// Anything else (empty messages, unknown channels, closing other channels).
    Ignored,
}

pub fn parse<'a>(protocol: &str, msg: &'a [u8]) -> Incoming<'a> {
    let Some((&ch, data)) = msg.split_first() else {
        return Incoming::Ignored;
    };
    match ch {
        STDIN => Incoming::Stdin(data),
        RESIZE => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Size {
                width: u16,
                height: u16,
            }
            match serde_json::from_slice::<Size>(data) {
                Ok(s) => Incoming::Resize {
                    width: s.width,
                    height: s.height,
                },
                Err(_) => Incoming::Ignored,
            }
        }
        CLOSE if protocol == V5 && data.first() == Some(&STDIN) => Incoming::CloseStdin,
        _ => Incoming::Ignored,
    }
}

/// The `metav1.Status` sent on the error channel when the command ended (as the kubelet's
/// stream translator writes it): Success for 0, NonZeroExitCode with an ExitCode cause else.
pub fn exit_status(code: i32, argv: &[String]) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A Failure status for an error that is not the command's exit code.
pub fn error_status(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_in_client_order() {
        assert_eq!(
            negotiate(["v5.channel.k8s.io, v4.channel.k8s.io"]),
            Some(V5)
        );
        assert_eq!(
            negotiate(["channel.k8s.io", "v4.channel.k8s.io,v5.channel.k8s.io"]),
            Some(V1)
        );
        assert_eq!(
            negotiate(["v3.channel.k8s.io", "base64.channel.k8s.io"]),
            Some(V1_BASE64)
        );
        assert_eq!(negotiate(["v4.base64.channel.k8s.io"]), Some(V4_BASE64));
        // Nothing offered: the kubelet's "" protocol (binary channels).
        assert_eq!(negotiate(std::iter::empty()), Some(NONE));
        assert_eq!(negotiate([" "]), Some(NONE));
        // Only what the kubelet does not serve over WebSocket (v2/v3 are SPDY's).
        assert_eq!(negotiate(["v2.channel.k8s.io", "v3.channel.k8s.io"]), None);
    }

    #[test]
    fn base64_protocols_use_text_messages() {
        // wsstream's example: "foo\n" on stdin is "0Zm9vCg==", "\n" on stdout "1Cg==".
        assert_eq!(
            decode(V1_BASE64, &Message::text("0Zm9vCg==")),
            Some(b"\x00foo\n".to_vec())
        );
        assert_eq!(
            encode(V1_BASE64, frame(STDOUT, b"\n")),
            Message::text("1Cg==")
        );
        assert_eq!(encode(V4_BASE64, frame(STDOUT, b"")), Message::text("1"));
        assert_eq!(decode(V1_BASE64, &Message::text("0%%%")), None);
        // A resize arrives as base64 JSON on channel '4'.
        let resize = decode(
            V4_BASE64,
            &Message::text("4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9"),
        );
        assert_eq!(
            resize.as_deref().map(|m| parse(V4_BASE64, m)),
            Some(Incoming::Resize {
                width: 80,
                height: 24
            })
        );
        // The binary protocols pass frames through (text ones too, as wsstream reads both).
        assert_eq!(
            encode(V1, frame(STDERR, b"x")),
            Message::binary(vec![2, b'x'])
        );
        assert_eq!(decode(NONE, &Message::text("\u{0}a")), Some(vec![0, b'a']));
        assert_eq!(decode(V4, &Message::Ping(Default::default())), None);
    }

    #[test]
    fn old_protocols_send_only_failures_as_text() {
        let argv = vec!["false".to_string()];
        let ok = exit_status(0, &argv);
        let failed = exit_status(1, &argv);
        assert_eq!(status_payload(V1, &ok), None);
        assert_eq!(status_payload(V1_BASE64, &ok), None);
        assert_eq!(
            status_payload(V1, &failed),
            Some(
                b"command terminated with non-zero exit code: error executing command [\"false\"], exit code 1"
                    .to_vec()
            )
        );
        for p in [V4, V5, V4_BASE64] {
            let json: serde_json::Value =
                serde_json::from_slice(&status_payload(p, &ok).unwrap_or_default())
                    .unwrap_or_default();
            assert_eq!(json["status"], "Success", "{p}");
        }
    }

    #[test]
    fn frames_and_parses_channels() {
        assert_eq!(frame(STDOUT, b"hi"), vec![1, b'h', b'i']);
        assert_eq!(frame(ERROR, b""), vec![3]);
        assert_eq!(parse(V5, &[0, b'x']), Incoming::Stdin(b"x"));
        assert_eq!(parse(V5, &[255, 0]), Incoming::CloseStdin);
        assert_eq!(parse(V4, &[255, 0]), Incoming::Ignored);
        assert_eq!(parse(V5, &[255, 1]), Incoming::Ignored);
        assert_eq!(parse(V5, &[]), Incoming::Ignored);
        assert_eq!(
            parse(V5, b"\x04{\"Width\":80,\"Height\":24}"),
            Incoming::Resize {
                width: 80,
                height: 24
            }
        );
    }

    #[test]
    fn exit_statuses() {
        let argv = vec!["sh".to_string()];
        assert_eq!(exit_status(0, &argv)["status"], "Success");
        let s = exit_status(3, &argv);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
