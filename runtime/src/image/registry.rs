//! Where and how to reach registries: the registry config file (mirrors, plain HTTP, private CAs,
//! in the spirit of containerd's `hosts.toml`) and docker-style credentials (`auth.json` /
//! `~/.docker/config.json`).
//!
//! The registry config is YAML (default `/etc/bosun/registries.yaml`); a missing file is an empty
//! config:
//!
//! ```yaml
//! registries:
//!   docker.io:
//!     mirrors: ["https://mirror.example.com", "http://10.0.0.5:5000"]
//!   registry.internal:5000:
//!     plainHTTP: true          # talk http:// instead of https://
//!   secure.internal:
//!     ca: /etc/bosun/certs/internal-ca.pem   # extra trusted root (PEM)
//!     skipVerify: false                       # accept any certificate (testing only)
//! ```
//!
//! Mirrors are tried in order, then the registry itself. Registries on `localhost`, `127.0.0.1`
//! and `[::1]` use plain HTTP without any configuration, as docker and containerd allow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The registry config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryHost>,
}

/// Settings of one registry host (`host` or `host:port`, as in image references).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryHost {
    /// Endpoints tried before the registry itself: `https://host[:port]`, `http://host[:port]`
    /// or a bare `host[:port]` (https unless that host is configured or local).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Plain HTTP instead of HTTPS.
    #[serde(default, rename = "plainHTTP", alias = "plainHttp", alias = "insecure")]
    pub plain_http: bool,
    /// A PEM file with extra trusted root certificates.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Accept any TLS certificate.
    #[serde(default)]
    pub skip_verify: bool,
}

/// One place to pull from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as the reference names it.
    pub host: String,
    pub plain_http: bool,
    pub ca: Option<PathBuf>,
    pub skip_verify: bool,
    pub mirror: bool,
}

/// `localhost`, `127.0.0.1`, `[::1]` with or without a port.
pub fn is_local_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name == "localhost" || name == "::1" || name.starts_with("127.")
}

impl RegistryConfig {
    /// Reads the file; a missing file is the empty config.
    pub fn load(path: &Path) -> Result<Self, RegistryConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(RegistryConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|message| RegistryConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let cfg: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (host, h) in &cfg.registries {
            for m in &h.mirrors {
                let bare = strip_scheme(m).0;
                if bare.is_empty() || bare.contains('/') {
                    return Err(format!(
                        "registries.{host}.mirrors: {m:?} is not a host[:port] or scheme://host[:port]"
                    ));
                }
            }
        }
        Ok(cfg)
    }

    fn host_settings(&self, host: &str) -> Endpoint {
        let h = self.registries.get(host).cloned().unwrap_or_default();
        Endpoint {
            host: host.to_string(),
            plain_http: h.plain_http || (is_local_host(host) && h.ca.is_none()),
            ca: h.ca,
            skip_verify: h.skip_verify,
            mirror: false,
        }
    }

    /// The endpoints for a registry domain, mirrors first.
    pub fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if let Some(h) = self.registries.get(domain) {
            for m in &h.mirrors {
                let (host, scheme) = strip_scheme(m);
                let mut ep = self.host_settings(host);
                match scheme {
                    Some("http") => ep.plain_http = true,
                    Some(_) => ep.plain_http = false,
                    None => {}
                }
                ep.mirror = true;
                out.push(ep);
            }
        }
        out.push(self.host_settings(domain));
        out
    }
}

fn strip_scheme(m: &str) -> (&str, Option<&str>) {
    let m = m.trim_end_matches('/');
    for scheme in ["http", "https"] {
        if let Some(rest) = m.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
            return (rest, Some(scheme));
        }
    }
    (m, None)
}

/// Docker-style credentials: `{"auths": {"host[:port]": {"auth": base64("user:pass")}}}` (or
/// `username` / `password` fields). Keys may be URLs (`https://index.docker.io/v1/`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    by_host: BTreeMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Reads the file; a missing file means no credentials.
    pub fn load(path: &Path) -> Result<Self, RegistryConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(RegistryConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|message| RegistryConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// The legacy `.dockercfg` format: the `auths` map itself (`kubernetes.io/dockercfg`
    /// secrets).
    pub fn parse_dockercfg(text: &str) -> Result<Self, String> {
        let auths: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Self::parse(&serde_json::json!({ "auths": auths }).to_string())
    }

    /// Adds `other`'s hosts that this one does not have.
    pub fn extend(&mut self, other: &Credentials) {
        for (k, v) in &other.by_host {
            self.by_host.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: DockerConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut by_host = BTreeMap::new();
        for (key, a) in cfg.auths {
            let pair = match (&a.auth, a.username, a.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("auths.{key}.auth: {e}"))?;
                    let s = String::from_utf8(raw)
                        .map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
                    let (u, p) = s
                        .split_once(':')
                        .ok_or_else(|| format!("auths.{key}.auth is not user:password"))?;
                    (u.to_string(), p.to_string())
                }
                (_, Some(u), Some(p)) => (u, p),
                _ => continue,
            };
            by_host.insert(normalize_auth_key(&key), pair);
        }
        Ok(Self { by_host })
    }

    /// Username and password for a registry host.
    pub fn lookup(&self, host: &str) -> Option<(String, String)> {
        self.by_host.get(&normalize_auth_key(host)).cloned()
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://h:5000/x` -> `h:5000`.
fn normalize_auth_key(key: &str) -> String {
    let host = strip_scheme(key).0;
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_config() {
        let cfg = RegistryConfig::parse(
            r#"
registries:
  docker.io:
    mirrors: ["https://mirror.example.com", "http://10.0.0.5:5000/", "m3:443"]
  registry.internal:5000:
    plainHTTP: true
  secure.internal:
    ca: /etc/bosun/ca.pem
    skipVerify: true
"#,
        )
        .unwrap();
        let eps = cfg.endpoints("docker.io");
        assert_eq!(eps.len(), 4);
        assert_eq!(eps[0].host, "mirror.example.com");
        assert!(!eps[0].plain_http && eps[0].mirror);
        assert_eq!(eps[1].host, "10.0.0.5:5000");
        assert!(eps[1].plain_http);
        assert_eq!(eps[2].host, "m3:443");
        assert!(!eps[2].plain_http);
        assert_eq!(eps[3].host, "docker.io");
        assert!(!eps[3].mirror);
        assert!(cfg.endpoints("registry.internal:5000")[0].plain_http);
        let s = &cfg.endpoints("secure.internal")[0];
        assert_eq!(s.ca.as_deref(), Some(Path::new("/etc/bosun/ca.pem")));
        assert!(s.skip_verify && !s.plain_http);
        assert!(RegistryConfig::parse("").unwrap().registries.is_empty());
        assert!(RegistryConfig::parse("registries:\n  x:\n    bogus: 1\n").is_err());
        assert!(RegistryConfig::parse("registries:\n  x:\n    mirrors: [\"h/p\"]\n").is_err());
        let missing = RegistryConfig::load(Path::new("/nonexistent/registries.yaml")).unwrap();
        assert_eq!(missing, RegistryConfig::default());
    }

    #[test]
    fn local_registries_are_plain_http() {
        let cfg = RegistryConfig::default();
        for host in [
            "localhost:5000",
            "127.0.0.1:34567",
            "localhost",
            "[::1]:5000",
        ] {
            assert!(cfg.endpoints(host)[0].plain_http, "{host}");
        }
        for host in ["docker.io", "ghcr.io", "localhost.example.com:5000"] {
            assert!(!cfg.endpoints(host)[0].plain_http, "{host}");
        }
    }

    #[test]
    fn parses_docker_credentials() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let creds = Credentials::parse(&format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                "empty.example": {{}}
            }}}}"#
        ))
        .unwrap();
        assert_eq!(
            creds.lookup("127.0.0.1:5000"),
            Some(("alice".into(), "s3:cret".into()))
        );
        assert_eq!(creds.lookup("docker.io"), Some(("bob".into(), "pw".into())));
        assert_eq!(creds.lookup("empty.example"), None);
        assert_eq!(creds.lookup("other:5000"), None);
        assert!(Credentials::parse(r#"{"auths": {"h": {"auth": "!!"}}}"#).is_err());
    }
}
