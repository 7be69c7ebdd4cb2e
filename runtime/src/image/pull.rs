//! Pulling images from registries (the OCI distribution protocol through `oci-client`).
//!
//! Manifests and configs are small and verified in memory. Layer blobs are streamed into
//! `downloads/<hex>.partial` while hashing, under an `flock` on that file (one download of a blob
//! at a time, across processes); once the size and the sha256 match the descriptor the file is
//! renamed to `downloads/<hex>`, and the store moves it into `blobs/` when the image is
//! committed. A partial file left by a crash is resumed with a range request and verified as a
//! whole; a mismatch deletes it. Nothing unverified is ever unpacked.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::client::ClientProtocol;
use oci_client::client::{BlobResponse, Certificate, CertificateEncoding, ClientConfig};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference as OciReference};
use sha2::{Digest as _, Sha256};

use super::layout::{self, Descriptor, Index};
use super::registry::{Credentials, Endpoint, RegistryConfig};
use super::{digest_hex, reference, Image, ImageStore, ImportError, StoreError};

const ACCEPT: &[&str] = &[
    layout::MT_OCI_INDEX,
    layout::MT_DOCKER_LIST,
    layout::MT_OCI_MANIFEST,
    layout::MT_DOCKER_MANIFEST,
];

/// Why a pull failed. The Display text carries the registry's own message.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] StoreError),
    #[error("pulling {reference} from {endpoint}: {message}")]
    Registry {
        reference: String,
        endpoint: String,
        message: String,
        /// The registry answered that the manifest (tag or digest) does not exist.
        not_found: bool,
        /// The endpoint could not be reached at all (connection refused, DNS, TLS).
        unreachable: bool,
    },
    #[error("image {reference} ({digest}) has no manifest for linux/{platform}; the index has {available}")]
    NoPlatform {
        reference: String,
        digest: String,
        platform: String,
        available: String,
    },
    #[error("blob {digest} of {reference} failed verification: {reason}")]
    Verify {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error("downloading blob {digest} into {path}: {source}")]
    Download {
        digest: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("reading the CA file {path}: {source}")]
    Ca { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("image commit task failed: {0}")]
    Join(String),
}

impl PullError {
    /// True when no endpoint could be reached (as opposed to a registry that answered).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PullError::Registry {
                unreachable: true,
                ..
            }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            PullError::Registry {
                not_found: true,
                ..
            }
        )
    }
}

/// What a pull did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Layer blobs downloaded (not already present).
    pub blobs_downloaded: usize,
    pub bytes_downloaded: u64,
}

/// Pulls images into an [`ImageStore`].
#[derive(Clone, Debug)]
pub struct Puller {
    store: ImageStore,
    registries: RegistryConfig,
    credentials: Credentials,
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn registry_error(reference: &str, ep: &Endpoint, e: OciDistributionError) -> PullError {
    let not_found = match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    };
    let unreachable =
        matches!(&e, OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout());
    // reqwest hides the cause behind "error sending request": show the chain.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    PullError::Registry {
        reference: reference.to_string(),
        endpoint: format!(
            "{}://{}",
            if ep.plain_http { "http" } else { "https" },
            ep.host
        ),
        message,
        not_found,
        unreachable,
    }
}

impl Puller {
    pub fn new(store: ImageStore, registries: RegistryConfig, credentials: Credentials) -> Self {
        Self {
            store,
            registries,
            credentials,
        }
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Pulls `reference` (as users write it) and records it in the store; returns the image.
    /// Mirrors are tried first, then the registry; the last error is returned.
    pub async fn pull(&self, reference: &str) -> Result<Image, PullError> {
        self.pull_with(reference, &Credentials::default()).await
    }

    /// [`Puller::pull`] with credentials tried before the node's own (a pod's
    /// `imagePullSecrets`).
    pub async fn pull_with(
        &self,
        reference: &str,
        extra: &Credentials,
    ) -> Result<Image, PullError> {
        let parsed = reference::parse(reference)?;
        let normalized = parsed.to_string();
        let span = tracing::info_span!("pull", image = %normalized);
        let _enter = span.enter();
        let mut last = None;
        for ep in self.registries.endpoints(&parsed.domain) {
            match self.pull_from(&parsed, &normalized, &ep, extra).await {
                Ok(image) => return Ok(image),
                Err(e) => {
                    let next = ep.mirror
                        && matches!(e, PullError::Registry { .. } | PullError::Verify { .. });
                    tracing::warn!(endpoint = %ep.host, error = %e, "pull failed");
                    last = Some(e);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| PullError::Join("no endpoint".into())))
    }

    /// The HTTP client for one endpoint. Never panics: `oci_client::Client::new` falls back to
    /// `reqwest::Client::new()`, which panics on a node without CA certificates (no
    /// ca-certificates package: found by the VM tier).
    fn client(&self, ep: &Endpoint, normalized: &str) -> Result<Client, PullError> {
        let ca = match &ep.ca {
            Some(path) => Some(fs::read(path).map_err(|source| PullError::Ca {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let pem = |data: &Vec<u8>| Certificate {
            encoding: CertificateEncoding::Pem,
            data: data.clone(),
        };
        let config = |certs_only: bool, accept_invalid: bool| ClientConfig {
            protocol: if ep.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: ep.skip_verify || accept_invalid,
            extra_root_certificates: if certs_only {
                Vec::new()
            } else {
                ca.iter().map(pem).collect()
            },
            tls_certs_only: if certs_only {
                ca.iter().map(pem).collect()
            } else {
                Vec::new()
            },
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("bosun/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let system_roots = match Client::try_from(config(false, false)) {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        // The system's roots could not be loaded. A registry with a CA of its own is verified
        // against that CA alone; a plain-HTTP registry makes no TLS connection (its blobs are
        // still checked against their digests); anything else cannot be verified here.
        let fallback = if ca.is_some() {
            Client::try_from(config(true, false)).ok()
        } else if ep.plain_http {
            Client::try_from(config(false, true)).ok()
        } else {
            None
        };
        fallback.ok_or_else(|| PullError::Registry {
            reference: normalized.to_string(),
            endpoint: ep.host.clone(),
            message: format!(
                "no TLS client: {system_roots} (install the CA certificates of this system, e.g. \
                 the ca-certificates package, or give the registry a CA in the registry config)"
            ),
            not_found: false,
            unreachable: true,
        })
    }

    fn auth(&self, ep: &Endpoint, domain: &str, extra: &Credentials) -> RegistryAuth {
        let lookup = |c: &Credentials| {
            c.lookup(&ep.host)
                .or_else(|| if ep.mirror { None } else { c.lookup(domain) })
        };
        let found = lookup(extra).or_else(|| lookup(&self.credentials));
        match found {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        }
    }

    async fn pull_from(
        &self,
        parsed: &reference::Reference,
        normalized: &str,
        ep: &Endpoint,
        extra: &Credentials,
    ) -> Result<Image, PullError> {
        let client = self.client(ep, normalized)?;
        let auth = self.auth(ep, &parsed.domain, extra);
        let oci_ref = match (&parsed.digest, &parsed.tag) {
            (Some(d), _) => {
                OciReference::with_digest(ep.host.clone(), parsed.path.clone(), d.clone())
            }
            (None, tag) => OciReference::with_tag(
                ep.host.clone(),
                parsed.path.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        let started = Instant::now();
        tracing::info!(endpoint = %ep.host, "pulling image");
        let (bytes, _) = client
            .pull_manifest_raw(&oci_ref, &auth, ACCEPT)
            .await
            .map_err(|e| registry_error(normalized, ep, e))?;
        let mut digest = sha256_of(&bytes);
        if let Some(want) = &parsed.digest {
            if *want != digest {
                return Err(PullError::Verify {
                    reference: normalized.to_string(),
                    digest: want.clone(),
                    reason: format!("the registry sent a manifest hashing to {digest}"),
                });
            }
        }
        let mut bytes = bytes.to_vec();
        let mut media_type = media_type_of(&bytes);
        if media_type == layout::MT_OCI_INDEX || media_type == layout::MT_DOCKER_LIST {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| PullError::Verify {
                reference: normalized.to_string(),
                digest: digest.clone(),
                reason: format!("unparsable image index: {e}"),
            })?;
            let chosen = layout::select_platform(&index).cloned().ok_or_else(|| {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| {
                        let mut s = format!("{}/{}", p.os, p.architecture);
                        if let Some(v) = &p.variant {
                            s.push('/');
                            s.push_str(v);
                        }
                        s
                    })
                    .collect();
                PullError::NoPlatform {
                    reference: normalized.to_string(),
                    digest: digest.clone(),
                    platform: layout::host_arch().to_string(),
                    available: if available.is_empty() {
                        "no platforms".into()
                    } else {
                        available.join(", ")
                    },
                }
            })?;
            tracing::info!(index = %digest, manifest = %chosen.digest, arch = layout::host_arch(), "picked the platform manifest from the index");
            let by_digest = OciReference::with_digest(
                ep.host.clone(),
                parsed.path.clone(),
                chosen.digest.clone(),
            );
            let (m, _) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPT)
                .await
                .map_err(|e| registry_error(normalized, ep, e))?;
            digest = sha256_of(&m);
            if digest != chosen.digest || m.len() as u64 != chosen.size {
                return Err(PullError::Verify {
                    reference: normalized.to_string(),
                    digest: chosen.digest.clone(),
                    reason: format!(
                        "the registry sent {} bytes hashing to {digest} (descriptor: {} bytes)",
                        m.len(),
                        chosen.size
                    ),
                });
            }
            bytes = m.to_vec();
            media_type = if chosen.media_type.is_empty() {
                media_type_of(&bytes)
            } else {
                chosen.media_type.clone()
            };
        }
        let manifest_desc = Descriptor {
            media_type,
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: Default::default(),
            platform: None,
        };

        // Already have this manifest: record the reference, download nothing.
        let store = self.store.clone();
        let (n, d) = (normalized.to_string(), digest.clone());
        if let Some(image) = tokio::task::spawn_blocking(move || store.tag_existing(&n, &d))
            .await
            .map_err(|e| PullError::Join(e.to_string()))??
        {
            tracing::info!(id = %image.id, digest = %image.digest, "image is up to date");
            return Ok(image);
        }

        let manifest: layout::Manifest =
            serde_json::from_slice(&bytes).map_err(|e| PullError::Verify {
                reference: normalized.to_string(),
                digest: digest.clone(),
                reason: format!("unparsable manifest: {e}"),
            })?;
        let config_bytes = self
            .fetch_small(&client, &oci_ref, ep, &manifest.config, normalized)
            .await?;
        let mut progress = PullProgress::default();
        let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
        for (i, layer) in manifest.layers.iter().enumerate() {
            tracing::info!(
                layer = i + 1,
                of = manifest.layers.len(),
                digest = %layer.digest,
                size = layer.size,
                "fetching layer"
            );
            if let Some(n) = self
                .download_blob(&client, &oci_ref, ep, layer, normalized)
                .await?
            {
                progress.blobs_downloaded += 1;
                progress.bytes_downloaded += n;
            }
        }
        let store = self.store.clone();
        let n = normalized.to_string();
        let image = tokio::task::spawn_blocking(move || {
            store.commit_pulled(n, &manifest_desc, &bytes, config_bytes)
        })
        .await
        .map_err(|e| PullError::Join(e.to_string()))??;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            id = %image.id,
            digest = %image.digest,
            layers = manifest.layers.len(),
            downloaded = progress.bytes_downloaded,
            compressed_size = total,
            unpacked_size = image.size,
            seconds = format!("{secs:.2}"),
            "image pulled"
        );
        Ok(image)
    }

    /// Fetches a small blob (the config) into memory and verifies it.
    async fn fetch_small(
        &self,
        client: &Client,
        oci_ref: &OciReference,
        ep: &Endpoint,
        desc: &Descriptor,
        normalized: &str,
    ) -> Result<Vec<u8>, PullError> {
        let bad = |reason: String| PullError::Verify {
            reference: normalized.to_string(),
            digest: desc.digest.clone(),
            reason,
        };
        if desc.size > super::MAX_JSON {
            return Err(bad(format!("config of {} bytes is too large", desc.size)));
        }
        digest_hex(&desc.digest).map_err(bad)?;
        let mut out = Vec::new();
        let mut stream = client
            .pull_blob_stream(oci_ref, &oci_desc(desc))
            .await
            .map_err(|e| registry_error(normalized, ep, e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bad(e.to_string()))?;
            out.extend_from_slice(&chunk);
            if out.len() as u64 > desc.size {
                return Err(bad(format!("longer than its {} bytes", desc.size)));
            }
        }
        let actual = sha256_of(&out);
        if out.len() as u64 != desc.size || actual != desc.digest {
            return Err(bad(format!(
                "{} bytes hashing to {actual} (descriptor: {} bytes)",
                out.len(),
                desc.size
            )));
        }
        Ok(out)
    }

    /// Downloads a layer blob into `downloads/<hex>`, verified; `Some(bytes)` when it was
    /// fetched, `None` when the store or a finished download already has it.
    async fn download_blob(
        &self,
        client: &Client,
        oci_ref: &OciReference,
        ep: &Endpoint,
        desc: &Descriptor,
        normalized: &str,
    ) -> Result<Option<u64>, PullError> {
        let bad = |reason: String| PullError::Verify {
            reference: normalized.to_string(),
            digest: desc.digest.clone(),
            reason,
        };
        let hex = digest_hex(&desc.digest).map_err(bad)?.to_string();
        let downloads = self.store.root().join("downloads");
        let done = downloads.join(&hex);
        let partial = downloads.join(format!("{hex}.partial"));
        let io_err = |source: io::Error| PullError::Download {
            digest: desc.digest.clone(),
            path: partial.clone(),
            source,
        };
        if self.store.blob_path(&hex).exists() || done.exists() {
            return Ok(None);
        }
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&partial)
                .map_err(io_err)
        };
        // One download per blob: wait for another pull (maybe another process) to finish it.
        let mut unlocked = open()?;
        let mut file = loop {
            match nix::fcntl::Flock::lock(unlocked, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break locked,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    drop(f);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if self.store.blob_path(&hex).exists() || done.exists() {
                        return Ok(None);
                    }
                    // Reopen: the holder renames the file when it is done.
                    unlocked = open()?;
                }
                Err((_, errno)) => return Err(io_err(errno.into())),
            }
        };
        if self.store.blob_path(&hex).exists() || done.exists() {
            let _ = fs::remove_file(&partial);
            return Ok(None);
        }
        // Resume: hash what a previous (killed) download left, if it is not too long.
        let mut hasher = Sha256::new();
        let mut have = file.metadata().map_err(io_err)?.len();
        if have > desc.size {
            file.set_len(0).map_err(io_err)?;
            have = 0;
        }
        if have > 0 {
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut left = have;
            while left > 0 {
                let n = file.read(&mut buf).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            tracing::info!(digest = %desc.digest, offset = have, "resuming a partial download");
        }
        let mut stream = if have == desc.size {
            None
        } else {
            match client
                .pull_blob_stream_partial(oci_ref, &oci_desc(desc), have, None)
                .await
                .map_err(|e| registry_error(normalized, ep, e))?
            {
                BlobResponse::Partial(s) => Some(s),
                BlobResponse::Full(s) => {
                    if have > 0 {
                        tracing::info!(digest = %desc.digest, "registry ignored the range: restarting");
                    }
                    file.set_len(0).map_err(io_err)?;
                    hasher = Sha256::new();
                    have = 0;
                    Some(s)
                }
            }
        };
        file.seek(SeekFrom::Start(have)).map_err(io_err)?;
        let mut count = have;
        let mut fetched = 0u64;
        let mut last_log = Instant::now();
        if let Some(stream) = stream.as_mut() {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(io_err)?;
                count += chunk.len() as u64;
                fetched += chunk.len() as u64;
                if count > desc.size {
                    drop(file);
                    let _ = fs::remove_file(&partial);
                    return Err(bad(format!(
                        "the registry sent more than the descriptor's {} bytes",
                        desc.size
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).map_err(io_err)?;
                if last_log.elapsed() >= Duration::from_secs(2) {
                    last_log = Instant::now();
                    tracing::info!(
                        digest = %desc.digest,
                        done = count,
                        total = desc.size,
                        percent = count * 100 / desc.size.max(1),
                        "downloading"
                    );
                }
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if count != desc.size || actual != desc.digest {
            drop(file);
            let _ = fs::remove_file(&partial);
            return Err(bad(format!(
                "got {count} bytes hashing to {actual}, the manifest says {} bytes",
                desc.size
            )));
        }
        file.sync_all().map_err(io_err)?;
        fs::rename(&partial, &done).map_err(io_err)?;
        drop(file);
        Ok(Some(fetched))
    }
}

fn oci_desc(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
    }
}

/// The document's own mediaType, or a guess from its shape.
fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Probe {
            manifests: Some(_), ..
        }) => layout::MT_OCI_INDEX.to_string(),
        _ => layout::MT_OCI_MANIFEST.to_string(),
    }
}
