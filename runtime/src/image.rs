//! The image store: OCI image layouts imported into a content store, layers unpacked once by
//! digest and shared, image configs. The images issue extends it with registry pulls.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

/// Content store under `<data_dir>/images`.
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("images");
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
