//! `serverTLSBootstrap: true`: the serving certificate from a `kubernetes.io/kubelet-serving`
//! CertificateSigningRequest (`system:node:<name>` in `system:nodes`, the node's names and
//! addresses as SANs), kept as `kubelet-server-<time>.pem` (certificate and key, 0600) with
//! `kubelet-server-current.pem` pointing at it, as the kubelet does. Serving CSRs are not
//! approved automatically: until someone approves it the API does not listen.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};

use super::tls::TlsError;
use crate::certs::{self, Signing};

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const CURRENT: &str = "kubelet-server-current.pem";
/// A current certificate closer than this to its end is replaced at start.
const MIN_LEFT: Duration = Duration::from_secs(3600);

/// The PEM file (certificate and key) to serve with: the current one while it is valid, else a
/// new one from a CSR, waiting (without end) for its approval and signature.
pub async fn serving_file(
    client: &kube::Client,
    node_name: &str,
    addresses: &[String],
    cert_dir: &Path,
) -> Result<PathBuf, TlsError> {
    let current = cert_dir.join(CURRENT);
    if let Ok(pem) = std::fs::read(&current) {
        if certs::not_after(&pem).is_some_and(|t| t > SystemTime::now() + MIN_LEFT) {
            return Ok(current);
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let csr_pem = request(node_name, addresses, &key)?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("csr-serving-{node_name}-{stamp}");
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let usages = ["digital signature", "key encipherment", "server auth"];
    let object = certs::csr_object(&name, csr_pem, SIGNER, &usages);
    let mut delay = Duration::from_secs(1);
    while let Err(e) = api.create(&PostParams::default(), &object).await {
        tracing::warn!(csr = %name, error = %e, "cannot create the serving CSR; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::info!(csr = %name, "serving certificate requested; waiting for its approval");
    let mut waited = Duration::ZERO;
    let cert_pem = loop {
        match api.get(&name).await {
            Ok(got) => match certs::signing(&got) {
                Signing::Refused { condition, message } => {
                    return Err(TlsError::Generate(format!(
                        "serving CSR {name} {condition}: {message}"
                    )))
                }
                Signing::Signed(cert) => break cert,
                Signing::Pending => {}
            },
            Err(e) => tracing::debug!(csr = %name, error = %e, "reading the serving CSR"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
        if waited.as_secs().is_multiple_of(60) {
            tracing::info!(csr = %name, "still waiting for the serving CSR to be approved");
        }
    };
    let mut pem = cert_pem;
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend_from_slice(key.serialize_pem().as_bytes());
    let file = cert_dir.join(format!("kubelet-server-{stamp}.pem"));
    write_private(&file, &pem)?;
    let tmp = cert_dir.join(format!(".{CURRENT}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let link_err = |source| TlsError::Write {
        path: current.clone(),
        source,
    };
    std::os::unix::fs::symlink(file.file_name().unwrap_or_default(), &tmp).map_err(link_err)?;
    std::fs::rename(&tmp, &current).map_err(link_err)?;
    tracing::info!(csr = %name, file = %file.display(), "serving certificate issued");
    Ok(current)
}

/// The PEM CSR: `system:node:<name>` in `system:nodes`, DNS and IP SANs.
pub fn request(
    node_name: &str,
    addresses: &[String],
    key: &rcgen::KeyPair,
) -> Result<String, TlsError> {
    let mut names = vec![node_name.to_string()];
    names.extend(addresses.iter().cloned());
    names.sort();
    names.dedup();
    certs::node_request(node_name, &names, key).map_err(|e| TlsError::Generate(e.to_string()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    certs::write_private(path, bytes).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_names_the_node_with_sans() {
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = request("n1", &["10.0.0.1".into(), "n1".into()], &key).expect("csr");
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
                .expect("csr der");
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }
}
