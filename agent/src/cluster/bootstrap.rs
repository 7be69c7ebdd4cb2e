//! TLS bootstrap and client certificate rotation, as the kubelet does it.
//!
//! With a valid `--kubeconfig`, nothing to do. Otherwise the bootstrap kubeconfig (a bootstrap
//! token) is used to create a CertificateSigningRequest for signer
//! `kubernetes.io/kube-apiserver-client-kubelet` with CN `system:node:<name>` and O
//! `system:nodes`; once the controller-manager approves and signs it, the certificate and key are
//! written under `--cert-dir` (`kubelet-client-<time>.pem`, `kubelet-client-current.pem` pointing
//! at the newest, mode 0600) and a kubeconfig using them is written to `--kubeconfig`.
//! Rotation repeats the request with the current identity when 80 % of the lifetime has passed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::certs::{self, Signing};

pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const CURRENT: &str = "kubelet-client-current.pem";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("no kubeconfig at {kubeconfig} and no bootstrap kubeconfig given")]
    NoCredentials { kubeconfig: PathBuf },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("generating the node key: {0}")]
    Key(String),
    #[error("certificate signing request {name}: {message}")]
    Csr { name: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the credentials live.
#[derive(Clone, Debug)]
pub struct Paths {
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
}

/// A client for this node: from the kubeconfig if its certificate is still good, else after a TLS
/// bootstrap. Returns the client and when the certificate should be rotated.
pub async fn client(
    paths: &Paths,
    node_name: &str,
) -> Result<(Client, Option<SystemTime>), BootstrapError> {
    if paths.kubeconfig.exists() {
        let rotate_at = current_rotation_time(&paths.cert_dir);
        let usable = rotate_at.map(|t| t > SystemTime::now()).unwrap_or(true);
        if usable {
            return Ok((load(&paths.kubeconfig).await?, rotate_at));
        }
        tracing::info!("client certificate is due for rotation");
        if let Ok(c) = load(&paths.kubeconfig).await {
            if let Ok(r) = request_certificate(&c, paths, node_name).await {
                return Ok((load(&paths.kubeconfig).await?, Some(r)));
            }
        }
    }
    let Some(bootstrap) = &paths.bootstrap_kubeconfig else {
        return Err(BootstrapError::NoCredentials {
            kubeconfig: paths.kubeconfig.clone(),
        });
    };
    tracing::info!(bootstrap = %bootstrap.display(), "TLS bootstrap: requesting a client certificate");
    let boot = load(bootstrap).await?;
    let rotate_at = request_certificate(&boot, paths, node_name).await?;
    Ok((load(&paths.kubeconfig).await?, Some(rotate_at)))
}

async fn load(path: &Path) -> Result<Client, BootstrapError> {
    let err = |message: String| BootstrapError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// Creates the CSR with `client`, waits for the signed certificate, writes key, certificate and
/// kubeconfig. Returns the rotation time (80 % of the lifetime).
pub async fn request_certificate(
    client: &Client,
    paths: &Paths,
    node_name: &str,
) -> Result<SystemTime, BootstrapError> {
    let key = rcgen::KeyPair::generate().map_err(|e| BootstrapError::Key(e.to_string()))?;
    let csr = certs::node_request(node_name, &[], &key)
        .map_err(|e| BootstrapError::Key(e.to_string()))?;
    let name = format!(
        "node-csr-{}-{}",
        node_name,
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let csr_err = |message: String| BootstrapError::Csr {
        name: name.clone(),
        message,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let object = certs::csr_object(&name, csr, SIGNER, &["digital signature", "client auth"]);
    api.create(&PostParams::default(), &object)
        .await
        .map_err(|e| csr_err(e.to_string()))?;
    // Wait for approval and signing (the CSR approving and signing controllers).
    let deadline = SystemTime::now() + Duration::from_secs(300);
    let cert_pem = loop {
        let got = api.get(&name).await.map_err(|e| csr_err(e.to_string()))?;
        match certs::signing(&got) {
            Signing::Refused { condition, message } => {
                return Err(csr_err(format!("{condition}: {message}")))
            }
            Signing::Signed(cert) => break cert,
            Signing::Pending => {}
        }
        if SystemTime::now() > deadline {
            return Err(csr_err(
                "not signed within 5 minutes (is it approved?)".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let not_after = certs::not_after(&cert_pem)
        .ok_or_else(|| csr_err("the signed certificate cannot be parsed".into()))?;
    write_credentials(paths, &cert_pem, key.serialize_pem().as_bytes(), client)?;
    tracing::info!(csr = %name, "client certificate issued");
    Ok(rotation_time(SystemTime::now(), not_after))
}

/// When to rotate: 80 % of the way from `issued` to `not_after`.
pub fn rotation_time(issued: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(issued).unwrap_or_default();
    issued + life.mul_f64(0.8)
}

/// The rotation time of the current client certificate in `cert_dir`, if there is one.
fn current_rotation_time(cert_dir: &Path) -> Option<SystemTime> {
    let pem = std::fs::read(cert_dir.join(CURRENT)).ok()?;
    Some(rotation_time(
        certs::not_before(&pem)?,
        certs::not_after(&pem)?,
    ))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    certs::write_private(path, bytes).map_err(|source| BootstrapError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `kubelet-client-<time>.pem` (cert + key), points `kubelet-client-current.pem` at it
/// and writes the kubeconfig using it, with the server and CA of the client that got it.
fn write_credentials(
    paths: &Paths,
    cert: &[u8],
    key: &[u8],
    client: &Client,
) -> Result<(), BootstrapError> {
    let _ = client;
    std::fs::create_dir_all(&paths.cert_dir).map_err(|source| BootstrapError::Write {
        path: paths.cert_dir.clone(),
        source,
    })?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let file = paths.cert_dir.join(format!("kubelet-client-{stamp}.pem"));
    let mut both = cert.to_vec();
    if !both.ends_with(b"\n") {
        both.push(b'\n');
    }
    both.extend_from_slice(key);
    write_private(&file, &both)?;
    let link = paths.cert_dir.join(CURRENT);
    let tmp_link = paths.cert_dir.join(".kubelet-client-current.tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&file, &tmp_link)
        .and_then(|_| std::fs::rename(&tmp_link, &link))
        .map_err(|source| BootstrapError::Write {
            path: link.clone(),
            source,
        })?;
    // Server and CA come from the bootstrap (or current) kubeconfig.
    let source = paths
        .bootstrap_kubeconfig
        .as_ref()
        .filter(|p| p.exists())
        .unwrap_or(&paths.kubeconfig);
    let kc = Kubeconfig::read_from(source).map_err(|e| BootstrapError::Kubeconfig {
        path: source.clone(),
        message: e.to_string(),
    })?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| BootstrapError::Kubeconfig {
            path: source.clone(),
            message: "no cluster".into(),
        })?;
    let server = cluster.server.unwrap_or_default();
    let ca_line = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => format!("    certificate-authority-data: {data}\n"),
        (None, Some(file)) => format!("    certificate-authority: {file}\n"),
        (None, None) => String::new(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: {server}\n{ca_line}contexts:\n- name: default-context\n  context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\ncurrent-context: default-context\nusers:\n- name: default-auth\n  user:\n    client-certificate: {cur}\n    client-key: {cur}\n",
        cur = link.display()
    );
    if let Some(parent) = paths.kubeconfig.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    write_private(&paths.kubeconfig, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_eighty_percent() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let end = t0 + Duration::from_secs(1000);
        assert_eq!(rotation_time(t0, end), t0 + Duration::from_secs(800));
    }
}
