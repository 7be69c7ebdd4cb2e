//! The node's certificates from the cluster, for both the client certificate of the TLS
//! bootstrap (`cluster::bootstrap`) and the serving certificate of `serverTLSBootstrap`
//! (`server::csr`): the certificate signing request as the kubelet makes it, the
//! CertificateSigningRequest object, what its status says, the validity of a certificate, and
//! private files (mode 0600) written atomically.

use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};

/// The PEM certificate request of node `node_name`: CN `system:node:<name>`, O `system:nodes`,
/// and `names` (DNS names or IP addresses; none for a client certificate) as SANs.
pub fn node_request(
    node_name: &str,
    names: &[String],
    key: &rcgen::KeyPair,
) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name = dn;
    for n in names {
        params
            .subject_alt_names
            .push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(n.clone().try_into()?),
            });
    }
    params.serialize_request(key).and_then(|r| r.pem())
}

/// The CertificateSigningRequest object `name` for the PEM request `pem`.
pub fn csr_object(
    name: &str,
    pem: String,
    signer: &str,
    usages: &[&str],
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(pem.into_bytes()),
            signer_name: signer.to_string(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    }
}

/// What a CertificateSigningRequest's status says.
#[derive(Debug, PartialEq, Eq)]
pub enum Signing {
    /// Not approved or not signed yet.
    Pending,
    /// Denied or failed: the condition's type and message.
    Refused { condition: String, message: String },
    /// Signed: the PEM certificate.
    Signed(Vec<u8>),
}

/// Reads a CertificateSigningRequest's status.
pub fn signing(csr: &CertificateSigningRequest) -> Signing {
    let Some(status) = &csr.status else {
        return Signing::Pending;
    };
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
    {
        return Signing::Refused {
            condition: c.type_.clone(),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    match &status.certificate {
        Some(c) if !c.0.is_empty() => Signing::Signed(c.0.clone()),
        _ => Signing::Pending,
    }
}

fn validity(pem: &[u8]) -> Option<(i64, i64)> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn time(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// When the (first) certificate of `pem` starts being valid.
pub fn not_before(pem: &[u8]) -> Option<SystemTime> {
    validity(pem).map(|(nb, _)| time(nb))
}

/// When the (first) certificate of `pem` stops being valid.
pub fn not_after(pem: &[u8]) -> Option<SystemTime> {
    validity(pem).map(|(_, na)| time(na))
}

/// Writes a private file (keys, kubeconfigs): mode 0600, fsynced, replaced atomically; its
/// folder is made first.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_node_with_sans() {
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = node_request("n1", &["10.0.0.1".into(), "n1".into()], &key).expect("csr");
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
                .expect("csr der");
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }

    #[test]
    fn reads_validity_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["n".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 11);
        let cert = params.self_signed(&key).expect("cert");
        let pem = cert.pem();
        let nb = not_before(pem.as_bytes()).expect("nb");
        let na = not_after(pem.as_bytes()).expect("na");
        assert_eq!(
            na.duration_since(nb).expect("order"),
            Duration::from_secs(10 * 86400)
        );
    }

    #[test]
    fn csr_status_is_pending_refused_or_signed() {
        let mut csr = csr_object("c", "pem".into(), "s", &["client auth"]);
        assert_eq!(signing(&csr), Signing::Pending);
        csr.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Denied", "status": "True", "message": "no"}]
        }))
        .expect("status");
        assert_eq!(
            signing(&csr),
            Signing::Refused {
                condition: "Denied".into(),
                message: "no".into()
            }
        );
        csr.status =
            serde_json::from_value(serde_json::json!({"certificate": "Y2VydA=="})).expect("status");
        assert_eq!(signing(&csr), Signing::Signed(b"cert".to_vec()));
    }
}
