//! Image reference normalization, following the rules of Docker's reference grammar
//! (`distribution/reference`): a missing domain means `docker.io`, a single path component on
//! `docker.io` lives under `library/`, and a reference with neither tag nor digest gets `:latest`.

use super::StoreError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";

/// A parsed, normalized reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `docker.io`, `localhost:5000`, `registry.k8s.io`.
    pub domain: String,
    /// `library/busybox`.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `busybox` -> `docker.io/library/busybox:latest`; `foo/bar` -> `docker.io/foo/bar:latest`;
/// `localhost:5000/x` -> `localhost:5000/x:latest`; `x@sha256:...` keeps its digest (no tag
/// added); `registry.k8s.io/pause:3.9` is kept as is.
pub fn normalize_reference(r: &str) -> Result<String, StoreError> {
    parse(r).map(|parsed| parsed.to_string())
}

fn invalid(reference: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Reference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn parse(r: &str) -> Result<Reference, StoreError> {
    if r.is_empty() {
        return Err(invalid(r, "empty reference"));
    }
    if r.len() > 4096 {
        return Err(invalid(r, "reference too long"));
    }
    let (rest, digest) = match r.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(digest).map_err(|reason| invalid(r, reason))?;
            (rest, Some(digest.to_string()))
        }
        None => (r, None),
    };
    // The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(tag).map_err(|reason| invalid(r, reason))?;
    }
    if name.is_empty() {
        return Err(invalid(r, "empty repository name"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            validate_domain(first).map_err(|reason| invalid(r, reason))?;
            let domain = if first == LEGACY_DOMAIN {
                DEFAULT_DOMAIN
            } else {
                first
            };
            (domain.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    for component in path.split('/') {
        validate_path_component(component).map_err(|reason| invalid(r, reason))?;
    }
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(Reference {
        domain,
        path,
        tag,
        digest,
    })
}

/// `sha256:<64 lowercase hex>`; the only algorithm the store handles.
pub(crate) fn validate_digest(digest: &str) -> Result<&str, String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!("unsupported digest {digest:?} (want sha256:<hex>)"));
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(format!("malformed digest {digest:?}"));
    }
    Ok(hex)
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("invalid registry domain {domain:?}"))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_path_component(component: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut ok = !bytes.is_empty() && alnum(bytes[0]) && alnum(bytes[bytes.len() - 1]);
    let mut i = 0;
    while ok && i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
    }
    if ok {
        Ok(())
    } else {
        Err(format!("invalid repository path component {component:?}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn n(r: &str) -> String {
        normalize_reference(r).unwrap()
    }

    #[test]
    fn normalizes_docker_hub_short_names() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(n("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("index.docker.io/foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(
            n("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn keeps_other_registries_and_ports() {
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("localhost:5000/x:v2"), "localhost:5000/x:v2");
        assert_eq!(n("localhost/x"), "localhost/x:latest");
        assert_eq!(n("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(n("127.0.0.1:5000/a/b/c"), "127.0.0.1:5000/a/b/c:latest");
    }

    #[test]
    fn keeps_digests_without_adding_latest() {
        assert_eq!(n(&format!("x@{D}")), format!("docker.io/library/x@{D}"));
        assert_eq!(n(&format!("x:1@{D}")), format!("docker.io/library/x:1@{D}"));
        assert_eq!(
            n(&format!("localhost:5000/x@{D}")),
            format!("localhost:5000/x@{D}")
        );
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "x@sha256:abc",
            "x@md5:0123",
            "foo//bar",
            "foo/bar/",
            "-foo",
            "foo bar",
            "foo/../bar",
            "localhost:abc/x",
            &format!("x@{}", D.to_uppercase().replace("SHA256", "sha256")),
        ] {
            assert!(
                normalize_reference(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn parses_parts() {
        let r = parse(&format!("localhost:5000/a/b:1@{D}")).unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.path, "a/b");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.as_deref(), Some(D));
    }
}
