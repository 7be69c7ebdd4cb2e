//! The serving certificate and the TLS configuration of the kubelet API.
//!
//! As the kubelet: `tlsCertFile`/`tlsPrivateKeyFile` when configured, else a self-signed pair
//! `kubelet.crt`/`kubelet.key` under `--cert-dir` (made once, kept across restarts) for the
//! node's name, hostname and addresses. Client certificates are verified against
//! `authentication.x509.clientCAFile` but not required, so bearer tokens still work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("serving certificate: generate: {0}")]
    Generate(String),
    #[error("serving certificate: write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serving certificate: read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("client CA file {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("tls configuration: {0}")]
    Config(String),
}

/// The certificate and key files to serve with, generating the self-signed pair when needed.
pub fn serving_files(
    cfg: &ServerConfig,
    cert_dir: &Path,
    node_name: &str,
    addresses: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(c), Some(k)) = (&cfg.tls_cert_file, &cfg.tls_private_key_file) {
        return Ok((c.clone(), k.clone()));
    }
    let cert = cert_dir.join("kubelet.crt");
    let key = cert_dir.join("kubelet.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let (cert_pem, key_pem) = self_signed(node_name, addresses)?;
    std::fs::create_dir_all(cert_dir).map_err(|source| TlsError::Write {
        path: cert_dir.to_path_buf(),
        source,
    })?;
    write_file(&key, key_pem.as_bytes(), 0o600)?;
    write_file(&cert, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert.display(), "wrote a self-signed serving certificate");
    Ok((cert, key))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A self-signed serving certificate (PEM cert, PEM key) for the node, valid one year, with
/// the node name and every address as subject alternative names.
pub fn self_signed(node_name: &str, addresses: &[String]) -> Result<(String, String), TlsError> {
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    dn.push(rcgen::DnType::CommonName, format!("{node_name}@{now}"));
    params.distinguished_name = dn;
    let mut names: Vec<String> = vec![node_name.to_string()];
    names.extend(addresses.iter().cloned());
    names.sort();
    names.dedup();
    for n in names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(n.try_into().map_err(gen)?),
        };
        params.subject_alt_names.push(san);
    }
    let (y, m, d) = civil(now.saturating_sub(86_400));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil(now + 365 * 86_400);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// (year, month, day) in UTC of a Unix time (Howard Hinnant's civil_from_days).
fn civil(secs: u64) -> (i32, u8, u8) {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + if month <= 2 { 1 } else { 0 }) as i32;
    (year, month, day)
}

/// The rustls server configuration: the serving pair, and client certificates verified
/// against the client CA when one is configured (optional, so bearer tokens still work).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let read = |p: &Path, m: String| TlsError::Read {
        path: p.to_path_buf(),
        message: m,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let ca_err = |m: String| TlsError::ClientCa {
                path: ca.to_path_buf(),
                message: m,
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| ca_err(e.to_string()))? {
                roots
                    .add(c.map_err(|e| ca_err(e.to_string()))?)
                    .map_err(|e| ca_err(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ca_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(951_782_400), (2000, 2, 29));
    }

    #[test]
    fn self_signed_pair_is_made_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = crate::config::Config::load(&crate::config::Flags::default())
            .expect("cfg")
            .0
            .server;
        let addrs = vec!["10.0.0.5".to_string(), "host-a".to_string()];
        let (c, k) = serving_files(&cfg, dir.path(), "node-a", &addrs).expect("files");
        assert_eq!(c, dir.path().join("kubelet.crt"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read(&c).expect("read");
        serving_files(&cfg, dir.path(), "node-a", &addrs).expect("again");
        assert_eq!(
            std::fs::read(&c).expect("read"),
            first,
            "kept across restarts"
        );
        let pem = String::from_utf8(first).expect("utf8");
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let x = p.parse_x509().expect("x509");
        let san = format!(
            "{:?}",
            x.subject_alternative_name().expect("ext").expect("san")
        );
        assert!(san.contains("node-a") && san.contains("host-a"), "{san}");
        // The client CA here is the serving cert itself (any CA certificate would do).
        server_config(&c, &k, Some(&c)).expect("rustls config with client CA");
        server_config(&c, &k, None).expect("rustls config");
    }
}
