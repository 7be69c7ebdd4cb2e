//! Image garbage collection, the kubelet's way: when the image filesystem's usage reaches the
//! high threshold, unused images are removed, least recently used first, until usage would be
//! at the low threshold. Images in use and images used more recently than the minimum age stay.

use std::collections::BTreeSet;
use std::fs;
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
    /// Downloads left by abandoned pulls (see [`STALE_DOWNLOAD`]) that were deleted.
    pub swept: Vec<PathBuf>,
}

/// A download (`downloads/<hex>` or `<hex>.partial`) untouched for this long and held by no pull
/// is a leftover: of a pull killed and never retried, or of an image nobody wants any more.
pub const STALE_DOWNLOAD: Duration = Duration::from_secs(3600);

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
        let swept = self.sweep_downloads(STALE_DOWNLOAD);
        let (used, total) = self.fs_usage()?;
        let usage_percent = used.saturating_mul(100) / total.max(1);
        let mut report = GcReport {
            usage_percent,
            swept,
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

    /// Deletes downloads not modified for `older_than` that no pull holds (a pull keeps an
    /// `flock` on its `.partial` file while it writes; a younger file may still be resumed).
    pub fn sweep_downloads(&self, older_than: Duration) -> Vec<PathBuf> {
        let mut swept = Vec::new();
        let Ok(entries) = fs::read_dir(self.root().join("downloads")) else {
            return swept;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= older_than);
            if !stale {
                continue;
            }
            let Ok(file) = fs::File::open(&path) else {
                continue;
            };
            // Held by a pull (this process or another): leave it.
            let Ok(_lock) =
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            else {
                continue;
            };
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a stale download");
                    swept.push(path);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "removing a stale download")
                }
            }
        }
        swept
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn age(path: &std::path::Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn sweep_removes_old_unheld_downloads_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let downloads = store.root().join("downloads");
        fs::create_dir_all(&downloads).unwrap();
        let old = downloads.join("aa.partial");
        let young = downloads.join("bb.partial");
        let held = downloads.join("cc.partial");
        let verified = downloads.join("dd");
        for p in [&old, &young, &held, &verified] {
            fs::write(p, b"bytes").unwrap();
        }
        age(&old, 7200);
        age(&held, 7200);
        age(&verified, 7200);
        let lock = nix::fcntl::Flock::lock(
            fs::File::open(&held).unwrap(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )
        .unwrap();

        let mut swept = store.sweep_downloads(STALE_DOWNLOAD);
        swept.sort();
        assert_eq!(swept, vec![old.clone(), verified.clone()]);
        assert!(!old.exists() && !verified.exists());
        assert!(young.exists(), "a recent partial may still be resumed");
        assert!(held.exists(), "a partial a pull holds is never removed");
        drop(lock);
        assert_eq!(store.sweep_downloads(STALE_DOWNLOAD), vec![held]);
    }
}
