//! The names in `<run_dir>/containers`, read again only when the folder changed.
//!
//! Every pod worker lists its pod's containers on each sync (`list_prefix`), and the eviction
//! and stats rounds do it per pod: with a thousand pods that was a thousand reads of a
//! thousand-entry folder per round, most of an idle agent's CPU (`getdents64`). A folder's
//! mtime changes whenever an entry is added, removed or renamed in it, so a listing stays true
//! while the mtime is the one it was read under. Timestamps are coarse (a clock tick), so a
//! change in the same tick as the read would keep the mtime: a listing is reused only when the
//! folder's mtime was already [`SETTLED`] old when it was read (git's "racy" rule).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How old the folder's mtime must have been when a listing was read for it to be reused.
pub(super) const SETTLED: Duration = Duration::from_secs(1);

/// One reading of the folder.
struct Reading {
    mtime: SystemTime,
    read_at: SystemTime,
    names: Arc<Vec<String>>,
}

/// Whether a listing read at `read_at` under the folder's mtime `then` may stand for the folder
/// whose mtime is `now_mtime`: unchanged, and settled when read.
pub(super) fn reusable(then: SystemTime, read_at: SystemTime, now_mtime: SystemTime) -> bool {
    now_mtime == then && read_at.duration_since(then).is_ok_and(|age| age >= SETTLED)
}

/// The cached listing of one folder.
#[derive(Default)]
pub(super) struct Listing {
    last: Mutex<Option<Reading>>,
}

impl Listing {
    /// The entry names of `dir` (empty when it cannot be read).
    pub(super) fn names(&self, dir: &Path) -> Arc<Vec<String>> {
        let Ok(mtime) = std::fs::metadata(dir).and_then(|m| m.modified()) else {
            return Arc::default();
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = last.as_ref() {
            if reusable(r.mtime, r.read_at, mtime) {
                return r.names.clone();
            }
        }
        let read_at = SystemTime::now();
        let Ok(entries) = std::fs::read_dir(dir) else {
            *last = None;
            return Arc::default();
        };
        let names: Arc<Vec<String>> = Arc::new(
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
        );
        *last = Some(Reading {
            mtime,
            read_at,
            names: names.clone(),
        });
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_stands_only_for_a_settled_unchanged_folder() {
        let t = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms);
        // (mtime when read, read at, mtime now, reusable)
        let table = [
            (t(0), t(1_000), t(0), true),
            (t(0), t(60_000), t(0), true),
            // Changed since.
            (t(0), t(5_000), t(6_000), false),
            (t(0), t(5_000), t(1), false),
            // Read in the same second as the last change: a change in the same tick after the
            // read would not show in the mtime.
            (t(0), t(0), t(0), false),
            (t(0), t(999), t(0), false),
            // A clock stepped back: never trusted.
            (t(5_000), t(0), t(5_000), false),
        ];
        for (then, read_at, now, want) in table {
            assert_eq!(
                reusable(then, read_at, now),
                want,
                "{then:?} {read_at:?} {now:?}"
            );
        }
    }

    #[test]
    fn new_and_removed_entries_are_seen_at_once() {
        let dir = std::env::temp_dir().join(format!("bosun-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let l = Listing::default();
        let sorted = |v: Arc<Vec<String>>| {
            let mut v = (*v).clone();
            v.sort();
            v
        };
        assert!(l.names(&dir).is_empty());
        std::fs::create_dir(dir.join("a")).expect("mkdir a");
        assert_eq!(sorted(l.names(&dir)), ["a"]);
        std::fs::create_dir(dir.join("b")).expect("mkdir b");
        assert_eq!(sorted(l.names(&dir)), ["a", "b"]);
        std::fs::remove_dir(dir.join("a")).expect("rmdir a");
        assert_eq!(sorted(l.names(&dir)), ["b"]);
        // Settled: the reading is reused, and a change still shows.
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        assert_eq!(sorted(l.names(&dir)), ["b"]);
        assert_eq!(sorted(l.names(&dir)), ["b"]);
        std::fs::create_dir(dir.join("c")).expect("mkdir c");
        assert_eq!(sorted(l.names(&dir)), ["b", "c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
