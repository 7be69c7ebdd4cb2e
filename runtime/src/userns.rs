//! ID ranges for pods with a user namespace of their own: each pod gets a distinct block of host
//! IDs (65536 by default: container IDs 0..65535 map to `first..first+65535`, the same block
//! for uids and gids), taken from a pool, persisted in one file so that a restart or `kill -9`
//! of the agent keeps every pod's block and never hands one out twice.
//!
//! The pool follows the kubelet's user namespace manager: the `/etc/subuid` and `/etc/subgid`
//! entries of the user the node agent is configured for (the kubelet's `kubelet`) when there
//! are some, else IDs from one block up to 2^32 (`first` = block size). Blocks are aligned to
//! the block size, the pool must start at or above one block, hold whole blocks and enough of
//! them for the node's pods.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// IDs per pod by default (the kubelet's `userNamespaces.idsPerPod` default).
pub const DEFAULT_IDS_PER_POD: u32 = 65536;

/// The host IDs of one pod: container ID `n` is host ID `first + n`, for `n < len`, for uids
/// and gids alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub first: u32,
    pub len: u32,
}

impl IdRange {
    /// The line of `/proc/<pid>/uid_map` (and `gid_map`): `0 <first> <len>`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}", self.first, self.len)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("mismatched subuids and subgids for user {user:?}")]
    Mismatch { user: String },
    #[error("user namespace pool: {reason}")]
    Pool { reason: String },
    #[error("could not find an empty slot to allocate a user namespace")]
    Exhausted,
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The host IDs pods' blocks are taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdPool {
    pub first: u32,
    pub len: u32,
    pub per_pod: u32,
}

impl IdPool {
    /// The kubelet's default: from one block up to 2^32.
    pub fn default_for(per_pod: u32) -> IdPool {
        IdPool {
            first: per_pod,
            len: (u64::from(u32::MAX) + 1 - u64::from(per_pod)) as u32,
            per_pod,
        }
    }

    /// The pool of `user` from `subuid`/`subgid` (files in `/etc/subuid` format:
    /// `name-or-uid:first:count`), or the default when neither names the user; checked as
    /// the kubelet checks it, for at least `max_pods` pods. `uid` is the user's numeric id if
    /// it exists (entries may name it by number).
    pub fn from_subid_files(
        subuid: &Path,
        subgid: &Path,
        user: &str,
        uid: Option<u32>,
        per_pod: u32,
        max_pods: u32,
    ) -> Result<IdPool, UsernsError> {
        let u = read_subids(subuid, user, uid)?;
        let g = read_subids(subgid, user, uid)?;
        let pool = match (u, g) {
            (None, None) => IdPool::default_for(per_pod),
            (a, b) if a != b => {
                return Err(UsernsError::Mismatch {
                    user: user.to_string(),
                })
            }
            (Some((first, len)), _) | (None, Some((first, len))) => IdPool {
                first,
                len,
                per_pod,
            },
        };
        pool.check(max_pods)?;
        Ok(pool)
    }

    /// The kubelet's checks of its mappings (`MakeUserNsManager`).
    pub fn check(&self, max_pods: u32) -> Result<(), UsernsError> {
        let bad = |reason: String| Err(UsernsError::Pool { reason });
        if self.per_pod == 0 || !self.per_pod.is_multiple_of(DEFAULT_IDS_PER_POD) {
            return bad(format!(
                "user namespace length {} is not a multiple of {DEFAULT_IDS_PER_POD}",
                self.per_pod
            ));
        }
        if !self.first.is_multiple_of(self.per_pod) {
            return bad(format!(
                "assigned ID {} is not a multiple of {}",
                self.first, self.per_pod
            ));
        }
        if self.first < self.per_pod {
            return bad(format!(
                "assigned ID {} must be greater or equal to {}",
                self.first, self.per_pod
            ));
        }
        if !self.len.is_multiple_of(self.per_pod) {
            return bad(format!(
                "assigned IDs length {} is not a multiple of {}",
                self.len, self.per_pod
            ));
        }
        if self.len / self.per_pod < max_pods {
            return bad(format!(
                "assigned IDs are not enough to support {max_pods} pods"
            ));
        }
        Ok(())
    }

    fn slots(&self) -> u32 {
        self.len / self.per_pod
    }
}

/// The one range of `user` in a subid file; `None` when the file or the entry is missing.
fn read_subids(
    path: &Path,
    user: &str,
    uid: Option<u32>,
) -> Result<Option<(u32, u32)>, UsernsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(UsernsError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let uid = uid.map(|u| u.to_string());
    let mut found = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        if parts.len() != 3 || (parts[0] != user && Some(parts[0]) != uid.as_deref()) {
            continue;
        }
        let parse = |s: &str| -> Result<u32, UsernsError> {
            s.parse().map_err(|e| UsernsError::Parse {
                path: path.to_path_buf(),
                reason: format!("line {}: {s:?}: {e}", n + 1),
            })
        };
        let range = (parse(parts[1])?, parse(parts[2])?);
        if found.replace(range).is_some() {
            return Err(UsernsError::Parse {
                path: path.to_path_buf(),
                reason: format!("more than one range for user {user:?}"),
            });
        }
    }
    Ok(found)
}

/// What the allocator's file holds.
#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Pod uid -> first host ID of its block.
    pods: BTreeMap<String, u32>,
}

/// Hands out the pods' blocks; every change is on disk (written and synced) before it is
/// returned.
pub struct Allocator {
    path: PathBuf,
    pool: IdPool,
    state: Mutex<State>,
}

impl Allocator {
    /// Loads the allocations in `path` (none if it does not exist). Entries that do not fit
    /// the pool (it changed) are an error, as for the kubelet: those pods' IDs must not be
    /// handed out again.
    pub fn open(path: PathBuf, pool: IdPool) -> Result<Allocator, UsernsError> {
        let state: State = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| UsernsError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(UsernsError::Read { path, source }),
        };
        let mut seen = std::collections::HashSet::new();
        for (pod, first) in &state.pods {
            let ok = *first >= pool.first
                && first.is_multiple_of(pool.per_pod)
                && (first - pool.first) / pool.per_pod < pool.slots();
            if !ok || !seen.insert(*first) {
                return Err(UsernsError::Parse {
                    path: path.clone(),
                    reason: format!(
                        "range {first} of pod {pod} is outside the pool or taken twice"
                    ),
                });
            }
        }
        Ok(Allocator {
            path,
            pool,
            state: Mutex::new(state),
        })
    }

    /// The pod's block, allocated (the lowest free one) if it has none yet.
    pub fn allocate(&self, pod_uid: &str) -> Result<IdRange, UsernsError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = st.pods.get(pod_uid) {
            return Ok(self.range(*first));
        }
        let used: std::collections::HashSet<u32> = st.pods.values().copied().collect();
        let first = (0..self.pool.slots())
            .map(|i| self.pool.first + i * self.pool.per_pod)
            .find(|f| !used.contains(f))
            .ok_or(UsernsError::Exhausted)?;
        st.pods.insert(pod_uid.to_string(), first);
        if let Err(e) = self.save(&st) {
            st.pods.remove(pod_uid);
            return Err(e);
        }
        Ok(self.range(first))
    }

    /// The pod's block, if it has one.
    pub fn get(&self, pod_uid: &str) -> Option<IdRange> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pods.get(pod_uid).map(|f| self.range(*f))
    }

    /// Frees the pod's block (once nothing of the pod is left).
    pub fn release(&self, pod_uid: &str) -> Result<(), UsernsError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(first) = st.pods.remove(pod_uid) else {
            return Ok(());
        };
        if let Err(e) = self.save(&st) {
            st.pods.insert(pod_uid.to_string(), first);
            return Err(e);
        }
        Ok(())
    }

    /// Frees the blocks of every pod `keep` says is gone; returns their uids.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, UsernsError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = st.pods.keys().filter(|p| !keep(p)).cloned().collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let before = std::mem::take(&mut st.pods);
        st.pods = before
            .iter()
            .filter(|(p, _)| !gone.contains(p))
            .map(|(p, f)| (p.clone(), *f))
            .collect();
        if let Err(e) = self.save(&st) {
            st.pods = before;
            return Err(e);
        }
        Ok(gone)
    }

    fn range(&self, first: u32) -> IdRange {
        IdRange {
            first,
            len: self.pool.per_pod,
        }
    }

    /// Temporary file, fsync, rename, fsync of the folder: after a crash the file is the old
    /// or the new state, never a mix, and a returned allocation is never lost.
    fn save(&self, st: &State) -> Result<(), UsernsError> {
        let fail = |source| UsernsError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(st).map_err(|e| fail(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(fail)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(fail)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u32 = DEFAULT_IDS_PER_POD;

    #[test]
    fn pool_from_subid_files_or_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
        let pool = |max| IdPool::from_subid_files(&u, &g, "kubelet", None, BLOCK, max);
        // No files: the kubelet's default.
        let p = pool(110).expect("default");
        assert_eq!((p.first, p.len), (BLOCK, 0u32.wrapping_sub(BLOCK)));
        // Other users only: the default too.
        std::fs::write(&u, "alice:100000:65536\n").expect("w");
        std::fs::write(&g, "alice:100000:65536\n").expect("w");
        assert_eq!(pool(110).expect("default").first, BLOCK);
        let range = format!("kubelet:{}:{}\n", 4 * BLOCK, 200 * BLOCK);
        std::fs::write(&u, format!("alice:100000:65536\n{range}")).expect("w");
        assert!(matches!(pool(110), Err(UsernsError::Mismatch { .. })));
        std::fs::write(&g, &range).expect("w");
        let p = pool(110).expect("kubelet's");
        assert_eq!((p.first, p.len), (4 * BLOCK, 200 * BLOCK));
        assert!(
            matches!(pool(201), Err(UsernsError::Pool { .. })),
            "too few"
        );
        // By number when the user exists.
        std::fs::write(&u, format!("999:{}:{}\n", 4 * BLOCK, 200 * BLOCK)).expect("w");
        std::fs::write(&g, format!("999:{}:{}\n", 4 * BLOCK, 200 * BLOCK)).expect("w");
        let p = IdPool::from_subid_files(&u, &g, "kubelet", Some(999), BLOCK, 110).expect("uid");
        assert_eq!(p.first, 4 * BLOCK);
        for (first, len) in [(100_000, 200 * BLOCK), (0, 200 * BLOCK), (BLOCK, 100_000)] {
            let bad = IdPool {
                first,
                len,
                per_pod: BLOCK,
            };
            assert!(bad.check(1).is_err(), "{first} {len}");
        }
        std::fs::write(&u, "kubelet:x:1\n").expect("w");
        assert!(matches!(pool(1), Err(UsernsError::Parse { .. })));
    }

    #[test]
    fn distinct_blocks_kept_across_reloads_and_freed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("userns.json");
        let pool = IdPool {
            first: 2 * BLOCK,
            len: 3 * BLOCK,
            per_pod: BLOCK,
        };
        let a = Allocator::open(file.clone(), pool).expect("open");
        let ra = a.allocate("pod-a").expect("a");
        let rb = a.allocate("pod-b").expect("b");
        assert_eq!(
            ra,
            IdRange {
                first: 2 * BLOCK,
                len: BLOCK
            }
        );
        assert_eq!(rb.first, 3 * BLOCK);
        assert_eq!(a.allocate("pod-a").expect("again"), ra, "idempotent");
        assert_eq!(ra.map_line(), format!("0 {} 65536", 2 * BLOCK));
        // A new allocator (a restart, or a kill -9: every allocation was synced) keeps them.
        drop(a);
        let a = Allocator::open(file.clone(), pool).expect("reopen");
        assert_eq!(a.get("pod-a"), Some(ra));
        assert_eq!(a.get("pod-b"), Some(rb));
        let rc = a.allocate("pod-c").expect("c");
        assert_eq!(rc.first, 4 * BLOCK, "never one already handed out");
        assert!(matches!(a.allocate("pod-d"), Err(UsernsError::Exhausted)));
        a.release("pod-a").expect("release");
        assert_eq!(a.get("pod-a"), None);
        assert_eq!(
            a.allocate("pod-d").expect("d"),
            ra,
            "a freed block is reused"
        );
        assert_eq!(a.retain(|p| p != "pod-b").expect("retain"), ["pod-b"]);
        let a = Allocator::open(file.clone(), pool).expect("reopen");
        assert_eq!(a.get("pod-b"), None);
        assert_eq!(a.get("pod-c"), Some(rc));
        // A pool that no longer holds a recorded block is an error, not a silent reuse.
        let smaller = IdPool {
            first: 2 * BLOCK,
            len: BLOCK,
            per_pod: BLOCK,
        };
        assert!(matches!(
            Allocator::open(file.clone(), smaller),
            Err(UsernsError::Parse { .. })
        ));
        std::fs::write(&file, "{").expect("w");
        assert!(Allocator::open(file, pool).is_err());
    }
}
