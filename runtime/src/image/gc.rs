//! Image garbage collection, the kubelet's way: when the image filesystem's usage reaches the
//! high threshold, unused images are removed, least recently used first, until usage would be
//! at the low threshold. Images in use and images used more recently than the minimum age stay.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{ImageStore, ImageSummary, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("statfs {path}: {source}")]
    Statfs {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a collection did.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Usage of the image filesystem before, in percent.
    pub usage_percent: u64,
    /// Bytes the collection wanted to free (0 below the high threshold).
    pub wanted: u64,
    /// Unpacked bytes of the removed images.
    pub freed: u64,
    pub removed: Vec<ImageSummary>,
}

impl ImageStore {
    /// Used and total bytes of the filesystem holding the store.
    pub fn fs_usage(&self) -> Result<(u64, u64), GcError> {
        let st = nix::sys::statvfs::statvfs(self.root()).map_err(|source| GcError::Statfs {
            path: self.root().to_path_buf(),
            source,
        })?;
        let frag = st.fragment_size().max(1) as u64;
        let total = st.blocks() as u64 * frag;
        let free = st.blocks_available() as u64 * frag;
        Ok((total.saturating_sub(free), total))
    }

    /// Runs one collection. `in_use` holds image ids (config digests) or manifest digests of
    /// images that containers use; a `high` of 100 or more disables collection.
    pub fn gc(
        &self,
        in_use: &BTreeSet<String>,
        high: u8,
        low: u8,
        min_age: Duration,
    ) -> Result<GcReport, GcError> {
        let (used, total) = self.fs_usage()?;
        let usage_percent = used.saturating_mul(100) / total.max(1);
        let mut report = GcReport {
            usage_percent,
            ..GcReport::default()
        };
        if high >= 100 || usage_percent < u64::from(high) {
            return Ok(report);
        }
        report.wanted = used.saturating_sub(total / 100 * u64::from(low));
        let now = SystemTime::now();
        let mut candidates: Vec<ImageSummary> = self
            .list()?
            .into_iter()
            .filter(|i| !in_use.contains(&i.id) && !in_use.contains(&i.digest))
            .filter(|i| {
                now.duration_since(i.last_used)
                    .map(|age| age >= min_age)
                    .unwrap_or(false)
            })
            .collect();
        candidates.sort_by_key(|i| i.last_used);
        tracing::info!(
            usage_percent,
            high,
            low,
            wanted = report.wanted,
            candidates = candidates.len(),
            "image filesystem over the high threshold: collecting unused images"
        );
        for image in candidates {
            if report.freed >= report.wanted {
                break;
            }
            tracing::info!(id = %image.id, references = ?image.references, size = image.size, "removing unused image");
            self.remove(&image.id)?;
            report.freed += image.size;
            report.removed.push(image);
        }
        Ok(report)
    }
}
