//! The Kubernetes remote-command WebSocket protocols (`v4.channel.k8s.io`, `v5.channel.k8s.io`):
//! every binary message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 error/status
//! JSON, 4 terminal resize JSON); v5 adds 255, a client's "close this channel" signal.

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes the client's side of `channel`.
pub const CLOSE: u8 = 255;

/// The subprotocol to answer with: the first of the client's (in its order) that we speak.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .find_map(|p| match p {
            V5 => Some(V5),
            V4 => Some(V4),
            _ => None,
        })
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
            Some(V4)
        );
        assert_eq!(negotiate(["base64.channel.k8s.io"]), None);
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
