//! What a request to the kubelet API asks for, decided once, before authorization and routing,
//! so that both see the same thing.
//!
//! The path is taken as the kubelet's Go server takes it: a path that is not clean (`//exec`,
//! `/./exec`, `/x/../exec`) is answered with a redirect to its clean form before anything else
//! (Go's `ServeMux`), percent escapes are decoded (Go's `URL.Path`), and both the authorization
//! attributes and the endpoint come from that one decoded path. The verb is the kubelet's verb for
//! the HTTP method, except that a request to a streaming endpoint (`/exec`, `/attach`,
//! `/portForward`), which upgrades to a WebSocket or SPDY session that runs commands or opens
//! connections in a pod, needs `create` whatever its method.

use super::auth::Attributes;

/// Why a request was refused before authentication.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid URL escape {0:?}")]
    BadEscape(String),
    #[error("path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("path must start with /")]
    NotAbsolute,
}

/// The first decision on a request, taken from its method and raw path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a clean path: `307 Temporary Redirect` to this location (the clean path, with the
    /// query), as Go's `ServeMux` answers before any handler or filter runs.
    Redirect(String),
    /// A request the server cannot read: `400 Bad Request`.
    Bad(PathError),
    /// A request to authenticate, authorize with `attributes` and then serve as `endpoint`.
    Serve(Request),
}

/// A readable request: its decoded path, what authorization checks and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The decoded, clean path (what authorization and routing both use).
    pub path: String,
    /// The attributes to authorize, any one of which lets the request through.
    pub attributes: Vec<Attributes>,
    pub endpoint: Endpoint,
}

/// The endpoint a request is routed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Pods,
    RunningPods,
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
    },
    Exec(StreamTarget),
    Attach(StreamTarget),
    PortForward {
        namespace: String,
        pod: String,
        uid: Option<String>,
    },
    Metrics,
    MetricsResource,
    StatsSummary,
    Configz,
    /// A known path that does not take this method: `405` with `Allow`.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

/// The container an exec or attach request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTarget {
    pub namespace: String,
    pub pod: String,
    /// The pod uid of `/exec/{ns}/{pod}/{uid}/{container}`: the pod must have it.
    pub uid: Option<String>,
    pub container: String,
}

/// The streaming endpoints: their requests run commands or open connections in pods.
const STREAMING: [&str; 3] = ["/exec", "/attach", "/portForward"];

/// Decides what a request is, from its method, its raw path and its raw query.
pub fn decide(method: &str, raw_path: &str, raw_query: Option<&str>) -> Decision {
    if !raw_path.starts_with('/') {
        return Decision::Bad(PathError::NotAbsolute);
    }
    let clean = clean_path(raw_path);
    if clean != raw_path {
        let location = match raw_query {
            Some(q) => format!("{clean}?{q}"),
            None => clean,
        };
        return Decision::Redirect(location);
    }
    let path = match decode_path(raw_path) {
        Ok(p) => p,
        Err(e) => return Decision::Bad(e),
    };
    let verb = verb(method, &path);
    Decision::Serve(Request {
        attributes: super::auth::attributes(verb, &path),
        endpoint: endpoint(method, &path),
        path,
    })
}

/// The kubelet's verb for an HTTP method (`""` for the methods it has none for, HEAD and
/// OPTIONS among them), and `create` for GET and POST on a streaming endpoint.
pub fn verb(method: &str, path: &str) -> &'static str {
    let verb = match method {
        "POST" => "create",
        "GET" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    };
    if matches!(verb, "get" | "create") && STREAMING.iter().any(|p| is_subpath(path, p)) {
        return "create";
    }
    verb
}

/// Is `path` the folder `dir` or below it (the kubelet's isSubpath)?
pub fn is_subpath(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Go's `cleanPath` (net/http): `path.Clean` of a rooted path, keeping a trailing slash.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut clean = String::with_capacity(p.len());
    for seg in &out {
        clean.push('/');
        clean.push_str(seg);
    }
    // The root, or a trailing slash kept.
    if clean.is_empty() || p.ends_with('/') {
        clean.push('/');
    }
    clean
}

/// Decodes the `%XX` escapes of a path (a `+` stays a `+` in a path). A `%` not followed by two
/// hex digits is an error, as in Go's URL parser.
pub fn decode_path(p: &str) -> Result<String, PathError> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => {
                    let end = (i + 3).min(b.len());
                    return Err(PathError::BadEscape(
                        String::from_utf8_lossy(&b[i..end]).into_owned(),
                    ));
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// A path parameter as go-restful matches one: a whole, non-empty segment. `.` and `..` name
/// nothing this API serves (they can only come from escapes such as `%2e%2e`).
fn param(s: &str) -> Option<String> {
    (!s.is_empty() && s != "." && s != "..").then(|| s.to_string())
}

/// Where a request goes, from its method and decoded path.
pub fn endpoint(method: &str, path: &str) -> Endpoint {
    let read = matches!(method, "GET" | "HEAD");
    let stream = matches!(method, "GET" | "POST");
    // Exactly one leading slash: `//portForward/...` (which only an escape such as `/%2F/`
    // can make of a clean path) is not `/portForward/...`, and authorization did not see it so.
    let Some(rest) = path.strip_prefix('/') else {
        return Endpoint::NotFound;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (endpoint, allowed, allow) = match parts.as_slice() {
        ["healthz"] | ["healthz", ..] => (Endpoint::Healthz, read, "GET, HEAD"),
        ["pods"] | ["pods", ""] => (Endpoint::Pods, read, "GET, HEAD"),
        ["runningpods"] | ["runningpods", ""] => (Endpoint::RunningPods, read, "GET, HEAD"),
        ["containerLogs", ns, pod, container] => {
            let Some((namespace, pod, container)) = param(ns)
                .zip(param(pod))
                .zip(param(container))
                .map(|((a, b), c)| (a, b, c))
            else {
                return Endpoint::NotFound;
            };
            (
                Endpoint::ContainerLogs {
                    namespace,
                    pod,
                    container,
                },
                read,
                "GET, HEAD",
            )
        }
        [kind @ ("exec" | "attach"), ns, pod, rest @ ..] => {
            let (uid, container) = match rest {
                [container] => (None, container),
                [uid, container] => match param(uid) {
                    Some(u) => (Some(u), container),
                    None => return Endpoint::NotFound,
                },
                _ => return Endpoint::NotFound,
            };
            let Some(((namespace, pod), container)) =
                param(ns).zip(param(pod)).zip(param(container))
            else {
                return Endpoint::NotFound;
            };
            let t = StreamTarget {
                namespace,
                pod,
                uid,
                container,
            };
            let e = if *kind == "exec" {
                Endpoint::Exec(t)
            } else {
                Endpoint::Attach(t)
            };
            (e, stream, "GET, POST")
        }
        ["portForward", ns, pod, rest @ ..] => {
            let uid = match rest {
                [] => None,
                [uid] => match param(uid) {
                    Some(u) => Some(u),
                    None => return Endpoint::NotFound,
                },
                _ => return Endpoint::NotFound,
            };
            let Some((namespace, pod)) = param(ns).zip(param(pod)) else {
                return Endpoint::NotFound;
            };
            (
                Endpoint::PortForward {
                    namespace,
                    pod,
                    uid,
                },
                stream,
                "GET, POST",
            )
        }
        ["metrics"] => (Endpoint::Metrics, read, "GET, HEAD"),
        ["metrics", "resource"] => (Endpoint::MetricsResource, read, "GET, HEAD"),
        ["stats", "summary"] => (Endpoint::StatsSummary, read, "GET, HEAD"),
        ["configz"] => (Endpoint::Configz, read, "GET, HEAD"),
        _ => return Endpoint::NotFound,
    };
    if allowed {
        endpoint
    } else {
        Endpoint::MethodNotAllowed { allow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(verb: &'static str, subresource: &'static str) -> Attributes {
        Attributes { verb, subresource }
    }

    fn serve(method: &str, path: &str) -> Request {
        match decide(method, path, None) {
            Decision::Serve(r) => r,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn clean_path_is_gos() {
        for (raw, clean) in [
            ("/", "/"),
            ("", "/"),
            ("/exec/ns/p/c", "/exec/ns/p/c"),
            ("//exec/ns/p/c", "/exec/ns/p/c"),
            ("/exec//ns/p/c", "/exec/ns/p/c"),
            ("/./exec/ns/p/c", "/exec/ns/p/c"),
            ("/x/../exec/ns/p/c", "/exec/ns/p/c"),
            ("/../../exec", "/exec"),
            ("/pods/", "/pods/"),
            ("/pods//", "/pods/"),
            ("/pods/.", "/pods"),
            ("/pods/..", "/"),
            ("/runningpods/", "/runningpods/"),
            ("/%2e%2e/exec", "/%2e%2e/exec"),
        ] {
            assert_eq!(clean_path(raw), clean, "{raw:?}");
        }
    }

    #[test]
    fn unclean_paths_are_redirected_before_anything_else() {
        for raw in [
            "//exec/ns/p/c",
            "//attach/ns/p/c",
            "//portForward/ns/p",
            "/./exec/ns/p/c",
            "/pods/../exec/ns/p/c",
            "/exec/ns/p/./c",
            "/exec/ns//p/c",
        ] {
            match decide("GET", raw, Some("command=id&output=1")) {
                Decision::Redirect(l) => {
                    assert!(l.ends_with("?command=id&output=1"), "{raw}: {l}");
                    assert_eq!(
                        clean_path(&l[..l.find('?').unwrap_or(l.len())]),
                        l[..l.find('?').unwrap_or(l.len())]
                    );
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn escapes_are_decoded_once_for_both_authorization_and_routing() {
        let r = serve("GET", "/%65xec/ns/p/c");
        assert_eq!(r.path, "/exec/ns/p/c");
        assert_eq!(r.attributes, vec![a("create", "proxy")]);
        assert!(matches!(r.endpoint, Endpoint::Exec(_)));
        let r = serve("GET", "/exec%2Fns%2Fp%2Fc");
        assert_eq!(r.path, "/exec/ns/p/c");
        assert_eq!(r.attributes, vec![a("create", "proxy")]);
        let r = serve("GET", "/%70ortForward/ns/p");
        assert_eq!(r.attributes, vec![a("create", "proxy")]);
        assert!(matches!(r.endpoint, Endpoint::PortForward { .. }));
        // Dot segments that only appear once decoded route nowhere, and are still authorized as
        // what their path says.
        let r = serve("GET", "/exec/%2e%2e/p/c");
        assert_eq!(r.attributes, vec![a("create", "proxy")]);
        assert_eq!(r.endpoint, Endpoint::NotFound);
        let r = serve("GET", "/pods/%2e%2e/exec/ns/p/c");
        assert_eq!(r.endpoint, Endpoint::NotFound);
        assert_eq!(r.attributes, vec![a("get", "pods"), a("get", "proxy")]);
        // An escaped slash in front makes `//portForward/...`: authorized as what it is (not a
        // streaming path, so `get`), it is routed nowhere (found by the request fuzz target).
        for raw in [
            "/%2F/portForward/l/b",
            "/%2Fexec/ns/p/c",
            "/%2f%2fattach/ns/p/c",
        ] {
            let r = serve("GET", raw);
            assert_eq!(r.endpoint, Endpoint::NotFound, "{raw}");
        }
        // A stats path is authorized as stats only when it is routed as stats.
        let r = serve("GET", "/stats%2Fsummary");
        assert_eq!(r.endpoint, Endpoint::StatsSummary);
        assert_eq!(r.attributes, vec![a("get", "stats")]);
    }

    #[test]
    fn bad_escapes_are_bad_requests() {
        for raw in ["/exec/%zz/p/c", "/exec/%2", "/exec/%", "/%ff%fe"] {
            assert!(
                matches!(decide("GET", raw, None), Decision::Bad(_)),
                "{raw}"
            );
        }
        assert_eq!(
            decide("OPTIONS", "*", None),
            Decision::Bad(PathError::NotAbsolute)
        );
        assert_eq!(decode_path("/a%20b+c").as_deref(), Ok("/a b+c"));
    }

    #[test]
    fn streaming_endpoints_need_create_whatever_the_method() {
        for path in [
            "/exec/ns/p/c",
            "/exec/ns/p/uid/c",
            "/attach/ns/p/c",
            "/portForward/ns/p",
            "/portForward/ns/p/uid",
            "/exec",
            "/exec/anything/else/that/is/long",
        ] {
            for method in ["GET", "POST"] {
                assert_eq!(
                    serve(method, path).attributes,
                    vec![a("create", "proxy")],
                    "{method} {path}"
                );
            }
        }
        // Not below the streaming endpoints.
        assert_eq!(serve("GET", "/execx").attributes, vec![a("get", "proxy")]);
        assert_eq!(
            serve("GET", "/containerLogs/ns/p/c").attributes,
            vec![a("get", "proxy")]
        );
    }

    #[test]
    fn methods_without_a_kubelet_verb_are_authorized_with_none() {
        assert_eq!(
            serve("HEAD", "/pods").attributes,
            vec![a("", "pods"), a("", "proxy")]
        );
        assert_eq!(
            serve("OPTIONS", "/exec/ns/p/c").attributes,
            vec![a("", "proxy")]
        );
        assert_eq!(serve("DELETE", "/pods").attributes[0], a("delete", "pods"));
    }

    #[test]
    fn endpoints_and_their_methods() {
        let t = |ns: &str, pod: &str, uid: Option<&str>, c: &str| StreamTarget {
            namespace: ns.into(),
            pod: pod.into(),
            uid: uid.map(Into::into),
            container: c.into(),
        };
        assert_eq!(
            endpoint("GET", "/exec/ns/p/c"),
            Endpoint::Exec(t("ns", "p", None, "c"))
        );
        assert_eq!(
            endpoint("POST", "/exec/ns/p/u1/c"),
            Endpoint::Exec(t("ns", "p", Some("u1"), "c"))
        );
        assert_eq!(
            endpoint("GET", "/attach/ns/p/c"),
            Endpoint::Attach(t("ns", "p", None, "c"))
        );
        assert_eq!(
            endpoint("GET", "/portForward/ns/p/u1"),
            Endpoint::PortForward {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: Some("u1".into())
            }
        );
        assert_eq!(endpoint("GET", "/exec/ns/p"), Endpoint::NotFound);
        assert_eq!(endpoint("GET", "/exec/ns/p/u/c/x"), Endpoint::NotFound);
        assert_eq!(endpoint("GET", "/portForward/ns/p/u/x"), Endpoint::NotFound);
        assert_eq!(endpoint("GET", "/exec/ns//c"), Endpoint::NotFound);
        assert_eq!(endpoint("GET", "/pods"), Endpoint::Pods);
        assert_eq!(endpoint("HEAD", "/pods/"), Endpoint::Pods);
        assert_eq!(endpoint("GET", "/runningpods/"), Endpoint::RunningPods);
        assert_eq!(endpoint("GET", "/healthz/ping"), Endpoint::Healthz);
        assert_eq!(
            endpoint("GET", "/metrics/resource"),
            Endpoint::MetricsResource
        );
        assert_eq!(endpoint("GET", "/stats/summary"), Endpoint::StatsSummary);
        assert_eq!(endpoint("GET", "/configz"), Endpoint::Configz);
        assert_eq!(endpoint("GET", "/nope"), Endpoint::NotFound);
        assert_eq!(
            endpoint("DELETE", "/pods"),
            Endpoint::MethodNotAllowed { allow: "GET, HEAD" }
        );
        assert_eq!(
            endpoint("OPTIONS", "/exec/ns/p/c"),
            Endpoint::MethodNotAllowed { allow: "GET, POST" }
        );
        assert_eq!(
            endpoint("PUT", "/portForward/ns/p"),
            Endpoint::MethodNotAllowed { allow: "GET, POST" }
        );
    }
}
