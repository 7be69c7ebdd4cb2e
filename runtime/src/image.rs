//! The image store: OCI image layouts imported into a content store, layers unpacked once by
//! digest and shared, image configs. The images issue extends it with registry pulls.
//!
//! Layout under `<data_dir>/images`:
//! - `blobs/sha256/<hex>`: the content store (manifests, configs, compressed layers), every blob
//!   verified against its digest and size before it lands here;
//! - `layers/sha256/<diff-id hex>/fs`: an unpacked layer, shared by every image that uses it,
//!   with `layer.json` beside `fs` (its size); overlayfs whiteouts already converted;
//! - `meta/<manifest hex>.json`: one record per image (config, layers, size, last used);
//! - `refs.json`: normalized reference -> manifest digest;
//! - `tmp/`: work in progress (unpacks, blob copies), emptied under the lock; `lock`: flock.
//!
//! Every write is atomic (a temporary file or folder renamed into place), so a crash never leaves
//! a half-written blob or a half-unpacked layer visible. Mutations hold an exclusive `flock` on
//! `lock`; readers (`resolve`, `list`) need none.

mod gc;
mod layout;
mod pull;
mod reference;
pub mod registry;
mod sys;
mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use gc::{GcError, GcReport};
use layout::{ConfigFile, Descriptor, Index, Manifest, OciLayoutFile};
pub use pull::{PullError, PullProgress, Puller};
pub use reference::normalize_reference;
pub use unpack::{unpack_layer, UnpackError, UnpackStats};

/// The parts of an OCI image config that drive a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// USER as written in the image (`""`, `1000`, `1000:1000`, `nobody`, `user:group`).
    pub user: String,
    pub stop_signal: Option<String>,
}

/// An image present in the store, ready to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image id: the config blob digest, `sha256:<hex>`.
    pub id: String,
    /// Normalized reference it was stored under (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Manifest digest (`sha256:<hex>`), used for `image@digest` and imageID in status.
    pub digest: String,
    pub config: ImageConfig,
    /// Unpacked layer folders, bottom first.
    pub layers: Vec<PathBuf>,
    /// Sum of the unpacked layer sizes in bytes.
    pub size: u64,
}

/// One image in the store, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// The image id (config digest).
    pub id: String,
    /// The manifest digest.
    pub digest: String,
    /// Normalized references pointing at it, sorted; empty for an image whose tag moved on
    /// (remove it by id).
    pub references: Vec<String>,
    /// Sum of the unpacked layer sizes in bytes.
    pub size: u64,
    pub last_used: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("image {reference}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("image store file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Why importing an OCI image layout failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("image layout {layout}: {reason}")]
    Layout { layout: PathBuf, reason: String },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parsing {what} {digest}: {source}")]
    Json {
        what: &'static str,
        digest: String,
        source: serde_json::Error,
    },
    #[error("blob {digest} is missing from the image layout ({path})")]
    MissingBlob { digest: String, path: PathBuf },
    #[error("blob {digest} does not match its descriptor: {reason}")]
    Tampered { digest: String, reason: String },
    #[error("no manifest tagged {tag:?} in image layout {layout}")]
    NoManifest { layout: PathBuf, tag: String },
    #[error("image index {digest} has no manifest for linux/{arch}")]
    NoPlatform { digest: String, arch: String },
    #[error("image {digest}: unsupported {what} {value:?}")]
    Unsupported {
        digest: String,
        what: &'static str,
        value: String,
    },
    #[error("unpacking layer {digest}: {source}")]
    Unpack { digest: String, source: UnpackError },
    #[error("layer {digest} unpacks to diff id {actual}, but the config says {expected}")]
    DiffId {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 8 << 20;

/// What the store keeps about one image: `meta/<manifest hex>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ImageRecord {
    id: String,
    digest: String,
    config: ImageConfig,
    /// Compressed layer blob digests, bottom first.
    layer_blobs: Vec<String>,
    /// Uncompressed layer digests (diff ids), bottom first: name the unpacked folders.
    diff_ids: Vec<String>,
    size: u64,
    imported: SystemTime,
    last_used: SystemTime,
}

/// `layers/sha256/<hex>/layer.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LayerRecord {
    diff_id: String,
    size: u64,
    entries: u64,
}

/// Content store under `<data_dir>/images`.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hex part of a `sha256:<hex>` digest, validated (so it is safe as a file name).
fn digest_hex(digest: &str) -> Result<&str, String> {
    reference::validate_digest(digest)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to `path` atomically, fsynced: the store outlives reboots.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    bosun_fsutil::write_atomic(path, bytes, bosun_fsutil::Durability::Synced).map_err(io_err(path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// An exclusive hold on the store's lock file, released on drop.
struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

/// One import in progress: the layout it reads from.
struct Source<'a> {
    layout: &'a Path,
}

impl Source<'_> {
    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImportError> {
        let hex = digest_hex(digest).map_err(|reason| ImportError::Unsupported {
            digest: digest.to_string(),
            what: "digest",
            value: reason,
        })?;
        Ok(self.layout.join("blobs").join("sha256").join(hex))
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<File, ImportError> {
        let path = self.blob_path(&desc.digest)?;
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ImportError::MissingBlob {
                    digest: desc.digest.clone(),
                    path: path.clone(),
                }
            } else {
                ImportError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })
    }

    /// Reads a small blob (JSON) whole and checks it against its descriptor.
    fn read_verified(&self, desc: &Descriptor) -> Result<Vec<u8>, ImportError> {
        if desc.size > MAX_JSON {
            return Err(ImportError::Tampered {
                digest: desc.digest.clone(),
                reason: format!(
                    "descriptor size {} is over the {MAX_JSON} byte limit",
                    desc.size
                ),
            });
        }
        let file = self.open_blob(desc)?;
        let mut bytes = Vec::new();
        file.take(desc.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ImportError::Read {
                path: self.layout.join("blobs"),
                source,
            })?;
        check_blob(
            desc,
            &format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            bytes.len() as u64,
        )?;
        Ok(bytes)
    }
}

fn check_blob(desc: &Descriptor, actual_digest: &str, actual_size: u64) -> Result<(), ImportError> {
    if actual_size != desc.size {
        return Err(ImportError::Tampered {
            digest: desc.digest.clone(),
            reason: format!("size is {actual_size}, the descriptor says {}", desc.size),
        });
    }
    if actual_digest != desc.digest {
        return Err(ImportError::Tampered {
            digest: desc.digest.clone(),
            reason: format!("content hashes to {actual_digest}"),
        });
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &str,
    bytes: &[u8],
) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::Json {
        what,
        digest: digest.to_string(),
        source,
    })
}

impl ImageStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("images");
        for dir in [
            root.clone(),
            root.join("blobs/sha256"),
            root.join("layers/sha256"),
            root.join("meta"),
            root.join("tmp"),
            root.join("downloads"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, errno)| StoreError::Io {
                path: path.clone(),
                source: errno.into(),
            },
        )?;
        Ok(StoreLock { _lock: lock })
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers/sha256").join(hex)
    }

    fn meta_path(&self, hex: &str) -> PathBuf {
        self.root.join("meta").join(format!("{hex}.json"))
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    fn load_refs(&self) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(read_json(&self.refs_path())?.unwrap_or_default())
    }

    fn save_refs(&self, refs: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let path = self.refs_path();
        write_atomic(&path, &to_json(&path, refs)?)
    }

    fn load_record(&self, digest: &str) -> Result<Option<ImageRecord>, StoreError> {
        let hex = digest_hex(digest).map_err(|reason| StoreError::Corrupt {
            path: self.refs_path(),
            reason,
        })?;
        read_json(&self.meta_path(hex))
    }

    fn save_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let hex = digest_hex(&record.digest).map_err(|reason| StoreError::Invalid {
            reference: record.digest.clone(),
            reason,
        })?;
        let path = self.meta_path(hex);
        write_atomic(&path, &to_json(&path, record)?)
    }

    /// Every image record in `meta/`.
    fn records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("meta");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if digest_hex(&format!("sha256:{hex}")).is_err() {
                continue;
            }
            if let Some(record) = read_json::<ImageRecord>(&entry.path())? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Empties `tmp/` (leftovers of a crash); call with the lock held.
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let dir = self.root.join("tmp");
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let result = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(io_err(&path)(e));
                }
            }
        }
        Ok(())
    }

    /// Imports an OCI image layout folder (`oci-layout`, `index.json`, `blobs/`) and records the
    /// image under `reference` (normalized).
    ///
    /// The manifest is the one whose `org.opencontainers.image.ref.name` annotation equals `tag`
    /// (the first one when `tag` is None); a nested image index resolves to linux/<host arch>.
    /// Every blob is checked against its descriptor's sha256 and size before use, and every
    /// unpacked layer against its diff id.
    pub fn import_layout(
        &self,
        layout: &Path,
        tag: Option<&str>,
        reference: &str,
    ) -> Result<Image, ImportError> {
        let reference = normalize_reference(reference)?;
        let span = tracing::info_span!("import_layout", layout = %layout.display(), reference = %reference);
        let _enter = span.enter();
        let src = Source { layout };
        let bad_layout = |reason: String| ImportError::Layout {
            layout: layout.to_path_buf(),
            reason,
        };

        let oci_layout_path = layout.join("oci-layout");
        let oci_layout: OciLayoutFile = serde_json::from_slice(
            &fs::read(&oci_layout_path).map_err(|e| bad_layout(format!("oci-layout: {e}")))?,
        )
        .map_err(|e| bad_layout(format!("oci-layout: {e}")))?;
        if oci_layout.image_layout_version != "1.0.0" {
            return Err(bad_layout(format!(
                "unsupported imageLayoutVersion {:?}",
                oci_layout.image_layout_version
            )));
        }
        let index_path = layout.join("index.json");
        let mut index_bytes = Vec::new();
        File::open(&index_path)
            .and_then(|f| f.take(MAX_JSON).read_to_end(&mut index_bytes))
            .map_err(|e| bad_layout(format!("index.json: {e}")))?;
        let index: Index = serde_json::from_slice(&index_bytes)
            .map_err(|e| bad_layout(format!("index.json: {e}")))?;
        let mut desc = layout::select_tagged(&index, tag)
            .cloned()
            .ok_or_else(|| match tag {
                Some(tag) => ImportError::NoManifest {
                    layout: layout.to_path_buf(),
                    tag: tag.to_string(),
                },
                None => bad_layout("index.json lists no manifest".to_string()),
            })?;

        // Follow nested indexes down to one manifest.
        let mut manifest_bytes = None;
        for _ in 0..4 {
            let bytes = src.read_verified(&desc)?;
            let nested = if desc.is_index() {
                true
            } else if desc.media_type.is_empty() {
                // No media type on the descriptor: the document says what it is.
                let probe: Index = parse_json("manifest", &desc.digest, &bytes)?;
                probe.media_type.as_deref() == Some(layout::MT_OCI_INDEX)
                    || probe.media_type.as_deref() == Some(layout::MT_DOCKER_LIST)
                    || !probe.manifests.is_empty()
            } else {
                false
            };
            if !nested {
                manifest_bytes = Some(bytes);
                break;
            }
            let nested_index: Index = parse_json("image index", &desc.digest, &bytes)?;
            desc = layout::select_platform(&nested_index)
                .cloned()
                .ok_or_else(|| ImportError::NoPlatform {
                    digest: desc.digest.clone(),
                    arch: layout::host_arch().to_string(),
                })?;
        }
        let manifest_bytes = manifest_bytes
            .ok_or_else(|| bad_layout("image indexes nested too deeply".to_string()))?;
        let manifest_desc = desc;
        self.commit(
            reference,
            &manifest_desc,
            &manifest_bytes,
            |manifest| src.read_verified(&manifest.config),
            |store, layer| store.store_blob_from(&src, layer),
        )
    }

    /// Validates a manifest and its config, stores the layer blobs (`fetch_layer` puts each one
    /// into the content store, verified), unpacks them and records the image under `reference`
    /// (already normalized). The manifest bytes are verified by the caller.
    fn commit(
        &self,
        reference: String,
        manifest_desc: &Descriptor,
        manifest_bytes: &[u8],
        fetch_config: impl FnOnce(&Manifest) -> Result<Vec<u8>, ImportError>,
        mut fetch_layer: impl FnMut(&Self, &Descriptor) -> Result<(), ImportError>,
    ) -> Result<Image, ImportError> {
        let manifest: Manifest = parse_json("manifest", &manifest_desc.digest, manifest_bytes)?;
        if let Some(mt) = manifest.media_type.as_deref() {
            if mt != layout::MT_OCI_MANIFEST && mt != layout::MT_DOCKER_MANIFEST {
                return Err(ImportError::Unsupported {
                    digest: manifest_desc.digest.clone(),
                    what: "manifest media type",
                    value: mt.to_string(),
                });
            }
        }
        let config_bytes = fetch_config(&manifest)?;
        let config: ConfigFile =
            parse_json("image config", &manifest.config.digest, &config_bytes)?;
        if !config.os.is_empty() && config.os != "linux" {
            return Err(ImportError::Unsupported {
                digest: manifest_desc.digest.clone(),
                what: "os",
                value: config.os,
            });
        }
        if !config.architecture.is_empty() && config.architecture != layout::host_arch() {
            return Err(ImportError::Unsupported {
                digest: manifest_desc.digest.clone(),
                what: "architecture",
                value: config.architecture,
            });
        }
        if !config.rootfs.kind.is_empty() && config.rootfs.kind != "layers" {
            return Err(ImportError::Unsupported {
                digest: manifest.config.digest.clone(),
                what: "rootfs type",
                value: config.rootfs.kind,
            });
        }
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImportError::Tampered {
                digest: manifest.config.digest.clone(),
                reason: format!(
                    "config lists {} diff ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }

        let _lock = self.lock()?;
        self.clean_tmp()?;

        let mut size = 0;
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            fetch_layer(self, layer)?;
            size += self.ensure_layer(layer, diff_id)?.size;
        }
        self.store_blob_bytes(&manifest.config, &config_bytes)?;
        self.store_blob_bytes(manifest_desc, manifest_bytes)?;

        let now = SystemTime::now();
        let c = config.config.unwrap_or_default();
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            digest: manifest_desc.digest.clone(),
            config: ImageConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
                stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            },
            layer_blobs: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: config.rootfs.diff_ids.clone(),
            size,
            imported: self
                .load_record(&manifest_desc.digest)?
                .map(|r| r.imported)
                .unwrap_or(now),
            last_used: now,
        };
        self.save_record(&record)?;
        let mut refs = self.load_refs()?;
        refs.insert(reference.clone(), record.digest.clone());
        self.save_refs(&refs)?;
        tracing::info!(id = %record.id, digest = %record.digest, size, "image imported");
        self.image_of(&record, reference).map_err(ImportError::from)
    }

    /// Copies a layer blob from the layout into the content store, verifying it on the way.
    fn store_blob_from(&self, src: &Source<'_>, desc: &Descriptor) -> Result<(), ImportError> {
        let hex = digest_hex(&desc.digest).map_err(|value| ImportError::Unsupported {
            digest: desc.digest.clone(),
            what: "digest",
            value,
        })?;
        let dest = self.blob_path(hex);
        if dest.exists() {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(unique_name("blob"));
        let result = (|| {
            let input = src.open_blob(desc)?;
            let mut reader = HashingReader::new(input.take(desc.size + 1));
            let mut out = File::create(&tmp).map_err(|source| ImportError::Read {
                path: tmp.clone(),
                source,
            })?;
            io::copy(&mut reader, &mut out).map_err(|source| ImportError::Read {
                path: src.layout.join("blobs/sha256").join(hex),
                source,
            })?;
            let (digest, count) = reader.finish();
            check_blob(desc, &digest, count)?;
            out.sync_all()
                .and_then(|()| fs::rename(&tmp, &dest))
                .map_err(|source| ImportError::Store(io_err(&dest)(source)))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes an already verified small blob into the content store.
    fn store_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<(), ImportError> {
        let hex = digest_hex(&desc.digest).map_err(|value| ImportError::Unsupported {
            digest: desc.digest.clone(),
            what: "digest",
            value,
        })?;
        let dest = self.blob_path(hex);
        if !dest.exists() {
            write_atomic(&dest, bytes)?;
        }
        Ok(())
    }

    /// Unpacks a stored layer blob into `layers/sha256/<diff id>` unless it is already there.
    fn ensure_layer(&self, layer: &Descriptor, diff_id: &str) -> Result<LayerRecord, ImportError> {
        let diff_hex = digest_hex(diff_id).map_err(|value| ImportError::Unsupported {
            digest: layer.digest.clone(),
            what: "diff id",
            value,
        })?;
        let dir = self.layer_dir(diff_hex);
        let record_path = dir.join("layer.json");
        if let Some(record) = read_json::<LayerRecord>(&record_path)? {
            return Ok(record);
        }
        let blob_hex = digest_hex(&layer.digest).map_err(|value| ImportError::Unsupported {
            digest: layer.digest.clone(),
            what: "digest",
            value,
        })?;
        let span = tracing::debug_span!("unpack_layer", digest = %layer.digest, diff_id);
        let _enter = span.enter();
        let tmp = self.root.join("tmp").join(unique_name("layer"));
        let result = (|| {
            let fs_dir = tmp.join("fs");
            fs::create_dir_all(&fs_dir).map_err(io_err(&fs_dir))?;
            let blob = self.blob_path(blob_hex);
            let file = File::open(&blob).map_err(io_err(&blob))?;
            let mut reader = HashingReader::new(decompressor(file, &layer.digest, &blob)?);
            let stats =
                unpack_layer(&mut reader, &fs_dir).map_err(|source| ImportError::Unpack {
                    digest: layer.digest.clone(),
                    source,
                })?;
            // The diff id covers the whole stream, padding after the end-of-archive included.
            io::copy(&mut reader, &mut io::sink()).map_err(|source| ImportError::Unpack {
                digest: layer.digest.clone(),
                source: UnpackError::Read { source },
            })?;
            let (actual, _) = reader.finish();
            if actual != diff_id {
                return Err(ImportError::DiffId {
                    digest: layer.digest.clone(),
                    expected: diff_id.to_string(),
                    actual,
                });
            }
            let record = LayerRecord {
                diff_id: diff_id.to_string(),
                size: stats.size,
                entries: stats.entries,
            };
            let record_tmp = tmp.join("layer.json");
            write_atomic(&record_tmp, &to_json(&record_tmp, &record)?)?;
            let tmp_file = File::open(&tmp).map_err(io_err(&tmp))?;
            sys::syncfs(&tmp_file).map_err(io_err(&tmp))?;
            if dir.exists() {
                // A folder without layer.json: an import that crashed before the rename cannot
                // leave one, but an old or hand-made one is replaced.
                let stale = self.root.join("tmp").join(unique_name("stale"));
                fs::rename(&dir, &stale).map_err(io_err(&dir))?;
            }
            fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
            tracing::debug!(size = stats.size, entries = stats.entries, "layer unpacked");
            Ok(record)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn image_of(&self, record: &ImageRecord, reference: String) -> Result<Image, StoreError> {
        let mut layers = Vec::with_capacity(record.diff_ids.len());
        for diff_id in &record.diff_ids {
            let hex = digest_hex(diff_id).map_err(|reason| StoreError::Invalid {
                reference: reference.clone(),
                reason,
            })?;
            let dir = self.layer_dir(hex);
            if !dir.join("layer.json").exists() {
                return Err(StoreError::Invalid {
                    reference,
                    reason: format!("layer {diff_id} is missing from the store"),
                });
            }
            layers.push(dir.join("fs"));
        }
        Ok(Image {
            id: record.id.clone(),
            reference,
            digest: record.digest.clone(),
            config: record.config.clone(),
            layers,
            size: record.size,
        })
    }

    /// Finds an image by reference (normalized first), by image id (`sha256:<config digest>`)
    /// or by manifest digest. `Ok(None)` when the store does not have it.
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, StoreError> {
        let refs = self.load_refs()?;
        if reference.starts_with("sha256:") {
            digest_hex(reference).map_err(|reason| StoreError::Reference {
                reference: reference.to_string(),
                reason,
            })?;
            let Some(record) = self
                .records()?
                .into_iter()
                .find(|r| r.id == reference)
                .map(Ok)
                .or_else(|| self.load_record(reference).transpose())
                .transpose()?
            else {
                return Ok(None);
            };
            let name = refs
                .iter()
                .find(|(_, digest)| **digest == record.digest)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| record.id.clone());
            return self.image_of(&record, name).map(Some);
        }
        let parsed = reference::parse(reference)?;
        let normalized = parsed.to_string();
        let digest = match refs.get(&normalized) {
            Some(digest) => digest.clone(),
            // `repo@sha256:<manifest>`: any stored image with that manifest digest.
            None => match &parsed.digest {
                Some(digest) => digest.clone(),
                None => return Ok(None),
            },
        };
        match self.load_record(&digest)? {
            Some(record) => self.image_of(&record, normalized).map(Some),
            None => Ok(None),
        }
    }

    /// Every image in the store with the references that point at it.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let refs = self.load_refs()?;
        let mut by_digest: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (name, digest) in &refs {
            by_digest.entry(digest).or_default().push(name.clone());
        }
        let mut out: Vec<ImageSummary> = self
            .records()?
            .into_iter()
            .map(|r| ImageSummary {
                references: by_digest
                    .get(r.digest.as_str())
                    .cloned()
                    .unwrap_or_default(),
                id: r.id,
                digest: r.digest,
                size: r.size,
                last_used: r.last_used,
            })
            .collect();
        out.sort_by(|a, b| a.references.cmp(&b.references).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Marks the image (by id, manifest digest or reference) as used now.
    pub fn touch(&self, id: &str) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let targets: Vec<ImageRecord> = if id.starts_with("sha256:") {
            self.records()?
                .into_iter()
                .filter(|r| r.id == id || r.digest == id)
                .collect()
        } else {
            let normalized = normalize_reference(id)?;
            match self.load_refs()?.get(&normalized) {
                Some(digest) => self.load_record(digest)?.into_iter().collect(),
                None => Vec::new(),
            }
        };
        if targets.is_empty() {
            return Err(StoreError::Invalid {
                reference: id.to_string(),
                reason: "no such image in the store".to_string(),
            });
        }
        let now = SystemTime::now();
        for mut record in targets {
            record.last_used = now;
            self.save_record(&record)?;
        }
        Ok(())
    }

    /// Removes a reference (or, given an image id or manifest digest, the image and every
    /// reference to it). An image left without references is deleted, and so are the blobs and
    /// layers no remaining image uses. Removing what is not there is not an error.
    ///
    /// The caller makes sure no running container uses the image: its layer folders are
    /// overlayfs lower dirs.
    pub fn remove(&self, reference: &str) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut refs = self.load_refs()?;
        let mut dropped: BTreeSet<String> = BTreeSet::new();
        if reference.starts_with("sha256:") {
            for record in self.records()? {
                if record.id == reference || record.digest == reference {
                    dropped.insert(record.digest);
                }
            }
            refs.retain(|_, digest| !dropped.contains(digest));
        } else {
            let normalized = normalize_reference(reference)?;
            match refs.remove(&normalized) {
                Some(digest) => {
                    if !refs.values().any(|d| *d == digest) {
                        dropped.insert(digest);
                    }
                }
                None => {
                    tracing::debug!(reference = %normalized, "remove: no such reference");
                    return Ok(());
                }
            }
        }
        self.save_refs(&refs)?;
        for digest in &dropped {
            if let Ok(hex) = digest_hex(digest) {
                let path = self.meta_path(hex);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                    _ => {}
                }
            }
        }
        self.sweep()
    }

    /// If the store already has the image with manifest `digest` (layers unpacked), points
    /// `reference` (normalized) at it, marks it used and returns it.
    pub(crate) fn tag_existing(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Option<Image>, StoreError> {
        let _lock = self.lock()?;
        let Some(mut record) = self.load_record(digest)? else {
            return Ok(None);
        };
        let Ok(image) = self.image_of(&record, reference.to_string()) else {
            return Ok(None);
        };
        let mut refs = self.load_refs()?;
        if refs.get(reference).map(String::as_str) != Some(digest) {
            refs.insert(reference.to_string(), digest.to_string());
            self.save_refs(&refs)?;
        }
        record.last_used = SystemTime::now();
        self.save_record(&record)?;
        Ok(Some(image))
    }

    /// Records a pulled image: the manifest (verified by the caller), its config (verified) and
    /// layer blobs already downloaded and verified into `downloads/`.
    pub(crate) fn commit_pulled(
        &self,
        reference: String,
        manifest_desc: &Descriptor,
        manifest_bytes: &[u8],
        config_bytes: Vec<u8>,
    ) -> Result<Image, ImportError> {
        self.commit(
            reference,
            manifest_desc,
            manifest_bytes,
            |manifest| {
                check_blob(
                    &manifest.config,
                    &format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes))),
                    config_bytes.len() as u64,
                )?;
                Ok(config_bytes)
            },
            |store, layer| {
                let hex = digest_hex(&layer.digest).map_err(|value| ImportError::Unsupported {
                    digest: layer.digest.clone(),
                    what: "digest",
                    value,
                })?;
                let dest = store.blob_path(hex);
                if dest.exists() {
                    return Ok(());
                }
                let done = store.root.join("downloads").join(hex);
                fs::rename(&done, &dest).map_err(|source| {
                    if source.kind() == io::ErrorKind::NotFound {
                        ImportError::MissingBlob {
                            digest: layer.digest.clone(),
                            path: done.clone(),
                        }
                    } else {
                        ImportError::Store(io_err(&dest)(source))
                    }
                })
            },
        )
    }

    /// Deletes blobs and layers that no image record uses; call with the lock held.
    fn sweep(&self) -> Result<(), StoreError> {
        let mut blobs: BTreeSet<String> = BTreeSet::new();
        let mut layers: BTreeSet<String> = BTreeSet::new();
        for record in self.records()? {
            blobs.insert(record.digest.clone());
            blobs.insert(record.id.clone());
            blobs.extend(record.layer_blobs.iter().cloned());
            layers.extend(record.diff_ids.iter().cloned());
        }
        let blob_dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir).map_err(io_err(&blob_dir))? {
            let entry = entry.map_err(io_err(&blob_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&format!("sha256:{name}")) {
                tracing::debug!(blob = %name, "deleting unused blob");
                fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
        let layer_dir = self.root.join("layers/sha256");
        for entry in fs::read_dir(&layer_dir).map_err(io_err(&layer_dir))? {
            let entry = entry.map_err(io_err(&layer_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !layers.contains(&format!("sha256:{name}")) {
                tracing::debug!(layer = %name, "deleting unused layer");
                // Out of sight first (atomic), then deleted at leisure.
                let doomed = self.root.join("tmp").join(unique_name("gc"));
                fs::rename(entry.path(), &doomed).map_err(io_err(&entry.path()))?;
            }
        }
        self.clean_tmp()
    }
}

/// Picks the decompressor from the blob's first bytes (media types lie more often than magic).
fn decompressor(file: File, digest: &str, path: &Path) -> Result<Box<dyn Read>, ImportError> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(|source| {
            ImportError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let _ = digest;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::unpack::tests::TarBuilder;
    use super::*;
    use std::io::Write;

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn put_blob(layout: &Path, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        let dir = layout.join("blobs/sha256");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(&digest[7..]), bytes).unwrap();
        digest
    }

    fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
        serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size })
    }

    /// Writes an image (manifest + config + layers) into the layout's blobs; returns the
    /// manifest descriptor.
    fn write_image(layout: &Path, layer_tars: &[Vec<u8>], cmd: &str) -> serde_json::Value {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in layer_tars {
            diff_ids.push(sha(tar));
            let gz = gzip(tar);
            let digest = put_blob(layout, &gz);
            layers.push(descriptor(
                layout::MT_OCI_MANIFEST
                    .replace("manifest.v1+json", "layer.v1.tar+gzip")
                    .as_str(),
                &digest,
                gz.len(),
            ));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": layout::host_arch(),
            "os": "linux",
            "config": { "Cmd": [cmd], "Env": ["PATH=/bin"], "User": "1000", "WorkingDir": "/w", "StopSignal": "SIGQUIT" },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let config_digest = put_blob(layout, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": layout::MT_OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config_digest, config.len()),
            "layers": layers,
        }))
        .unwrap();
        let digest = put_blob(layout, &manifest);
        descriptor(layout::MT_OCI_MANIFEST, &digest, manifest.len())
    }

    fn write_index(layout: &Path, manifests: Vec<serde_json::Value>) {
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "manifests": manifests }))
                .unwrap(),
        )
        .unwrap();
    }

    fn tagged(mut desc: serde_json::Value, tag: &str) -> serde_json::Value {
        desc["annotations"] = serde_json::json!({ layout::REF_NAME_ANNOTATION: tag });
        desc
    }

    fn base_layer() -> Vec<u8> {
        TarBuilder::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"binary")
            .link(tar::EntryType::Symlink, "bin/sh", "busybox")
            .finish()
    }

    fn app_layer(content: &[u8]) -> Vec<u8> {
        TarBuilder::new().file("app", content).finish()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: ImageStore,
        layout: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        let layout = dir.path().join("layout");
        fs::create_dir(&layout).unwrap();
        Fixture {
            store,
            layout,
            _dir: dir,
        }
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn import_resolve_list_touch_remove() {
        let f = fixture();
        let desc = write_image(&f.layout, &[base_layer(), app_layer(b"v1")], "sh");
        write_index(&f.layout, vec![tagged(desc.clone(), "latest")]);
        let image = f
            .store
            .import_layout(&f.layout, Some("latest"), "busybox")
            .unwrap();
        assert_eq!(image.reference, "docker.io/library/busybox:latest");
        assert_eq!(image.digest, desc["digest"].as_str().unwrap());
        assert_eq!(image.config.cmd, vec!["sh"]);
        assert_eq!(image.config.user, "1000");
        assert_eq!(image.config.working_dir, "/w");
        assert_eq!(image.config.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(image.size, 6 + 2);
        assert_eq!(image.layers.len(), 2);
        assert_eq!(
            fs::read(image.layers[0].join("bin/busybox")).unwrap(),
            b"binary"
        );
        assert_eq!(fs::read(image.layers[1].join("app")).unwrap(), b"v1");

        let by_ref = f
            .store
            .resolve("docker.io/library/busybox")
            .unwrap()
            .unwrap();
        assert_eq!(by_ref, image);
        let by_id = f.store.resolve(&image.id).unwrap().unwrap();
        assert_eq!(by_id, image);
        let by_digest = f
            .store
            .resolve(&format!("busybox@{}", image.digest))
            .unwrap()
            .unwrap();
        assert_eq!(by_digest.id, image.id);
        assert!(f.store.resolve("other").unwrap().is_none());
        assert!(f.store.resolve(&sha(b"nothing")).unwrap().is_none());

        let listed = f.store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].references, vec![image.reference.clone()]);
        assert_eq!(listed[0].size, image.size);
        let before = listed[0].last_used;
        std::thread::sleep(std::time::Duration::from_millis(5));
        f.store.touch(&image.id).unwrap();
        assert!(f.store.list().unwrap()[0].last_used > before);
        assert!(f.store.touch(&sha(b"nothing")).is_err());

        // Importing again is idempotent; a second reference shares everything.
        f.store
            .import_layout(&f.layout, None, "localhost:5000/bb:1")
            .unwrap();
        assert_eq!(f.store.list().unwrap()[0].references.len(), 2);
        f.store.remove("busybox").unwrap();
        assert!(f.store.resolve("busybox").unwrap().is_none());
        assert!(f.store.resolve("localhost:5000/bb:1").unwrap().is_some());
        assert!(image.layers[0].exists());
        f.store.remove("localhost:5000/bb:1").unwrap();
        assert!(f.store.list().unwrap().is_empty());
        assert_eq!(count(&f.store.root().join("blobs/sha256")), 0);
        assert_eq!(count(&f.store.root().join("layers/sha256")), 0);
        assert_eq!(count(&f.store.root().join("tmp")), 0);
        f.store.remove("busybox").unwrap();
    }

    #[test]
    fn shared_layers_survive_until_the_last_image_goes() {
        let f = fixture();
        let one = write_image(&f.layout, &[base_layer(), app_layer(b"one")], "one");
        let two = write_image(&f.layout, &[base_layer(), app_layer(b"two")], "two");
        write_index(&f.layout, vec![tagged(one, "one"), tagged(two, "two")]);
        let a = f
            .store
            .import_layout(&f.layout, Some("one"), "app:one")
            .unwrap();
        let b = f
            .store
            .import_layout(&f.layout, Some("two"), "app:two")
            .unwrap();
        assert_eq!(a.config.cmd, vec!["one"]);
        assert_eq!(b.config.cmd, vec!["two"]);
        assert_eq!(a.layers[0], b.layers[0]);
        assert_eq!(count(&f.store.root().join("layers/sha256")), 3);
        f.store.remove(&a.id).unwrap();
        assert!(b.layers[0].join("bin/busybox").exists());
        assert!(!a.layers[1].exists());
        assert_eq!(count(&f.store.root().join("layers/sha256")), 2);
        // manifest + config + 2 layer blobs of the remaining image.
        assert_eq!(count(&f.store.root().join("blobs/sha256")), 4);
    }

    #[test]
    fn retagging_leaves_the_old_image_dangling_until_removed_by_id() {
        let f = fixture();
        let one = write_image(&f.layout, &[app_layer(b"one")], "one");
        let two = write_image(&f.layout, &[app_layer(b"two")], "two");
        write_index(&f.layout, vec![tagged(one, "one"), tagged(two, "two")]);
        let old = f
            .store
            .import_layout(&f.layout, Some("one"), "app")
            .unwrap();
        let new = f
            .store
            .import_layout(&f.layout, Some("two"), "app")
            .unwrap();
        assert_eq!(f.store.resolve("app").unwrap().unwrap().id, new.id);
        let listed = f.store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed
            .iter()
            .any(|s| s.id == old.id && s.references.is_empty()));
        assert_eq!(f.store.resolve(&old.id).unwrap().unwrap().reference, old.id);
        f.store.remove(&old.id).unwrap();
        assert_eq!(f.store.list().unwrap().len(), 1);
        assert!(new.layers[0].exists());
    }

    #[test]
    fn tampered_blobs_are_refused_with_their_digest() {
        let f = fixture();
        let desc = write_image(&f.layout, &[base_layer()], "sh");
        write_index(&f.layout, vec![tagged(desc.clone(), "latest")]);
        let manifest: Manifest = serde_json::from_slice(
            &fs::read(
                f.layout
                    .join("blobs/sha256")
                    .join(&desc["digest"].as_str().unwrap()[7..]),
            )
            .unwrap(),
        )
        .unwrap();
        let layer_path = f
            .layout
            .join("blobs/sha256")
            .join(&manifest.layers[0].digest[7..]);
        let good = fs::read(&layer_path).unwrap();

        // Same size, different bytes.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        fs::write(&layer_path, &bad).unwrap();
        let err = f.store.import_layout(&f.layout, None, "x").unwrap_err();
        assert!(
            matches!(&err, ImportError::Tampered { digest, .. } if *digest == manifest.layers[0].digest),
            "{err}"
        );
        assert!(
            err.to_string().contains(&manifest.layers[0].digest),
            "{err}"
        );
        // Longer than its descriptor.
        let mut long = good.clone();
        long.push(0);
        fs::write(&layer_path, &long).unwrap();
        let err = f.store.import_layout(&f.layout, None, "x").unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
        fs::write(&layer_path, &good).unwrap();

        // A tampered config.
        let config_path = f
            .layout
            .join("blobs/sha256")
            .join(&manifest.config.digest[7..]);
        let config = fs::read(&config_path).unwrap();
        fs::write(&config_path, config.to_ascii_uppercase()).unwrap();
        let err = f.store.import_layout(&f.layout, None, "x").unwrap_err();
        assert!(err.to_string().contains(&manifest.config.digest), "{err}");
        fs::write(&config_path, &config).unwrap();

        // Nothing was recorded, nothing left behind.
        assert!(f.store.list().unwrap().is_empty());
        assert_eq!(count(&f.store.root().join("layers/sha256")), 0);
        assert_eq!(count(&f.store.root().join("tmp")), 0);
        f.store.import_layout(&f.layout, None, "x").unwrap();
    }

    #[test]
    fn a_wrong_diff_id_is_refused() {
        let f = fixture();
        let tar = base_layer();
        let gz = gzip(&tar);
        let layer_digest = put_blob(&f.layout, &gz);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": layout::host_arch(), "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [sha(b"something else")] },
        }))
        .unwrap();
        let config_digest = put_blob(&f.layout, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config_digest, config.len()),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer_digest, gz.len())],
        }))
        .unwrap();
        let manifest_digest = put_blob(&f.layout, &manifest);
        write_index(
            &f.layout,
            vec![descriptor(
                layout::MT_OCI_MANIFEST,
                &manifest_digest,
                manifest.len(),
            )],
        );
        let err = f.store.import_layout(&f.layout, None, "x").unwrap_err();
        assert!(matches!(err, ImportError::DiffId { .. }), "{err}");
        assert_eq!(count(&f.store.root().join("layers/sha256")), 0);
    }

    #[test]
    fn uncompressed_layers_and_nested_indexes() {
        let f = fixture();
        // An uncompressed layer, by hand.
        let tar = app_layer(b"plain");
        let layer_digest = put_blob(&f.layout, &tar);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": layout::host_arch(), "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [sha(&tar)] },
        }))
        .unwrap();
        let config_digest = put_blob(&f.layout, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config_digest, config.len()),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer_digest, tar.len())],
        }))
        .unwrap();
        let manifest_digest = put_blob(&f.layout, &manifest);
        let mut host = descriptor(layout::MT_OCI_MANIFEST, &manifest_digest, manifest.len());
        host["platform"] =
            serde_json::json!({ "os": "linux", "architecture": layout::host_arch() });
        let mut other = descriptor(layout::MT_OCI_MANIFEST, &sha(b"absent"), 10);
        other["platform"] = serde_json::json!({ "os": "linux", "architecture": "not-an-arch" });
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": layout::MT_OCI_INDEX, "manifests": [other, host],
        }))
        .unwrap();
        let index_digest = put_blob(&f.layout, &index);
        write_index(
            &f.layout,
            vec![tagged(
                descriptor(layout::MT_OCI_INDEX, &index_digest, index.len()),
                "multi",
            )],
        );
        let image = f
            .store
            .import_layout(&f.layout, Some("multi"), "multi")
            .unwrap();
        assert_eq!(image.digest, manifest_digest);
        assert_eq!(fs::read(image.layers[0].join("app")).unwrap(), b"plain");
        let err = f
            .store
            .import_layout(&f.layout, Some("nope"), "multi")
            .unwrap_err();
        assert!(matches!(err, ImportError::NoManifest { .. }), "{err}");
    }

    #[test]
    fn rejects_a_bad_layout() {
        let f = fixture();
        let err = f.store.import_layout(&f.layout, None, "x").unwrap_err();
        assert!(matches!(err, ImportError::Layout { .. }), "{err}");
        let err = f
            .store
            .import_layout(&f.layout, None, "Bad Ref")
            .unwrap_err();
        assert!(
            matches!(err, ImportError::Store(StoreError::Reference { .. })),
            "{err}"
        );
        // A digest that would escape the blobs folder.
        write_index(
            &f.layout,
            vec![descriptor(
                layout::MT_OCI_MANIFEST,
                "sha256:../../etc/passwd",
                10,
            )],
        );
        let err = f.store.import_layout(&f.layout, None, "x").unwrap_err();
        assert!(matches!(err, ImportError::Unsupported { .. }), "{err}");
    }
}
