//! The standalone pod source: the manifest folder (the kubelet's `staticPodPath`).
//!
//! Every regular file ending in `.yaml`, `.yml` or `.json` (hidden files skipped) holds one or
//! more Pod documents. The folder is watched with inotify and rescanned every
//! `fileCheckFrequency` anyway (events are hints). Each pod is defaulted and validated as the
//! kubelet does it (the apiserver's validation, no references to API objects); a file with an
//! invalid pod makes no pod at all. A file that stops parsing or validating keeps its last good
//! pods running and the error is reported once per change (a typo never kills a running pod),
//! and listed in [`ERRORS_FILE`] for `bosun pods`.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::manifest;

/// The desired pods, keyed by uid. Shared, not copied: the API source publishes the whole set
/// on every watch event (each status write of ours comes back as one), so a pod that did not
/// change stays the same allocation, and [`same_pods`] tells that without comparing fields.
pub type DesiredPods = BTreeMap<String, Arc<Pod>>;

/// Whether two sets hold the same pods: the same uids, each the same allocation or equal.
pub fn same_pods(a: &DesiredPods, b: &DesiredPods) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, pa), (kb, pb))| ka == kb && (Arc::ptr_eq(pa, pb) || pa == pb))
}

/// What the pod manager runs: every source's pods so far, and whether every source has answered
/// once. Until then a pod the node has but no source lists is not taken for an orphan (the
/// kubelet's "sources ready"), so the manifest folder's pods start while the apiserver is still
/// unreachable, as `kubeadm init`'s control plane needs, and an agent restarted during an
/// apiserver outage keeps the API's pods running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub pods: DesiredPods,
    pub all_sources: bool,
}

/// One source's answer so far: `None` for a source that is not configured, `Some(None)` for one
/// that has not answered yet.
pub type Answer<'a> = Option<Option<&'a DesiredPods>>;

/// The union of the API's and the manifest folder's answers, or `None` while there is nothing to
/// publish: the folder (read at once) has not been read yet, or the apiserver is the only source
/// and has not answered. The folder's pods go first while the apiserver has not answered.
pub fn union(api: Answer, file: Answer) -> Option<Desired> {
    if matches!(file, Some(None)) || (file.is_none() && !matches!(api, Some(Some(_)))) {
        return None;
    }
    let mut pods = DesiredPods::new();
    for answer in [api, file].into_iter().flatten().flatten() {
        pods.extend(answer.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(Desired {
        pods,
        all_sources: !matches!(api, Some(None)),
    })
}

/// Whether a source changed (`false` when it closed); never ready for a source not configured.
async fn changed(r: Option<&mut watch::Receiver<Option<DesiredPods>>>) -> bool {
    match r {
        Some(r) => r.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Publishes [`union`] of the sources whenever one of them changes (a source absent is `None`).
/// Returns when a source closes.
pub async fn merge(
    mut api: Option<watch::Receiver<Option<DesiredPods>>>,
    mut file: Option<watch::Receiver<Option<DesiredPods>>>,
    tx: watch::Sender<Option<Desired>>,
) {
    loop {
        // Read in place (the API source publishes its whole set on every watch event): only the
        // union is a new map.
        let next = {
            let a = api.as_mut().map(|r| r.borrow_and_update());
            let f = file.as_mut().map(|r| r.borrow_and_update());
            union(
                a.as_deref().map(Option::as_ref),
                f.as_deref().map(Option::as_ref),
            )
        };
        if let Some(next) = next {
            tx.send_if_modified(|cur| {
                let same = cur.as_ref().is_some_and(|c| {
                    c.all_sources == next.all_sources && same_pods(&c.pods, &next.pods)
                });
                if !same {
                    *cur = Some(next);
                }
                !same
            });
        }
        tokio::select! {
            ok = changed(api.as_mut()) => if !ok { return; },
            ok = changed(file.as_mut()) => if !ok { return; },
        }
    }
}

#[derive(Default)]
struct FileState {
    modified: Option<SystemTime>,
    len: u64,
    pods: Vec<Pod>,
    error: Option<String>,
}

/// Scans the folder; keeps per-file state so unchanged files are not re-parsed.
pub struct FolderSource {
    dir: PathBuf,
    node_name: String,
    files: HashMap<PathBuf, FileState>,
    /// Where the files that fail are listed for `bosun pods` ([`ERRORS_FILE`] in the run folder).
    errors_file: Option<PathBuf>,
    /// What the errors file says now.
    written: Option<Vec<ManifestFailure>>,
}

/// The file, in bosun's run folder, that lists the manifests that fail to parse or validate.
pub const ERRORS_FILE: &str = "manifest-errors.json";

/// A manifest file that fails, as `bosun pods` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFailure {
    pub file: PathBuf,
    pub error: String,
    /// How many pods of the file keep running from its last good version.
    pub kept_pods: usize,
}

impl FolderSource {
    pub fn new(dir: PathBuf, node_name: String) -> Self {
        Self {
            dir,
            node_name,
            files: HashMap::new(),
            errors_file: None,
            written: None,
        }
    }

    /// Lists the files that fail in `run_dir`/[`ERRORS_FILE`] after every scan that changes them.
    pub fn with_errors_in(mut self, run_dir: &Path) -> Self {
        self.errors_file = Some(run_dir.join(ERRORS_FILE));
        self
    }

    fn write_errors(&mut self) {
        let Some(path) = &self.errors_file else {
            return;
        };
        let mut now: Vec<ManifestFailure> = self
            .files
            .iter()
            .filter_map(|(file, s)| {
                s.error.clone().map(|error| ManifestFailure {
                    file: file.clone(),
                    error,
                    kept_pods: s.pods.len(),
                })
            })
            .collect();
        now.sort_by(|a, b| a.file.cmp(&b.file));
        if self.written.as_ref() == Some(&now) {
            return;
        }
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&now)
            .map_err(std::io::Error::other)
            .and_then(|b| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&tmp, b)?;
                std::fs::rename(&tmp, path)
            });
        match result {
            Ok(()) => self.written = Some(now),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the manifest errors")
            }
        }
    }

    /// Rescans the folder and returns the desired pods.
    pub fn scan(&mut self) -> DesiredPods {
        let mut seen = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let path = e.path();
                    if !is_manifest(&path) {
                        continue;
                    }
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    seen.push(path.clone());
                    let state = self.files.entry(path.clone()).or_default();
                    let modified = meta.modified().ok();
                    if state.modified == modified
                        && state.len == meta.len()
                        && state.modified.is_some()
                    {
                        continue;
                    }
                    state.modified = modified;
                    state.len = meta.len();
                    match read_file(&path, &self.node_name) {
                        Ok(pods) => {
                            if state.error.take().is_some() {
                                tracing::info!(file = %path.display(), "manifest parses again");
                            }
                            state.pods = pods;
                        }
                        Err(e) => {
                            tracing::error!(file = %path.display(), error = %e, kept_pods = state.pods.len(), "invalid pod manifest: no pod made of it (its last good pods, if any, keep running)");
                            state.error = Some(e);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read manifest folder");
                // Keep the last known pods: an unreadable folder must not kill everything.
                return self.collect();
            }
        }
        self.files.retain(|p, _| seen.contains(p));
        self.write_errors();
        self.collect()
    }

    fn collect(&self) -> DesiredPods {
        let mut out = DesiredPods::new();
        let mut names: HashMap<(String, String), PathBuf> = HashMap::new();
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        for (path, state) in files {
            for pod in &state.pods {
                let key = (
                    pod.metadata.namespace.clone().unwrap_or_default(),
                    pod.metadata.name.clone().unwrap_or_default(),
                );
                if let Some(other) = names.get(&key) {
                    tracing::error!(file = %path.display(), other = %other.display(), pod = %format!("{}/{}", key.0, key.1), "duplicate pod name; ignoring this one");
                    continue;
                }
                names.insert(key, path.clone());
                if let Some(uid) = pod.metadata.uid.clone() {
                    out.insert(uid, Arc::new(pod.clone()));
                }
            }
        }
        out
    }

    /// Errors of files that currently fail to parse (file, message).
    pub fn errors(&self) -> Vec<(PathBuf, String)> {
        self.files
            .iter()
            .filter_map(|(p, s)| s.error.clone().map(|e| (p.clone(), e)))
            .collect()
    }
}

fn is_manifest(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// The pods of one manifest file, each defaulted then validated as the kubelet does it (so
/// names are checked with their `-<node>` suffix); any invalid pod fails the whole file, before
/// anything of it runs.
pub fn read_file(path: &Path, node_name: &str) -> Result<Vec<Pod>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    pods_of(path, &text, node_name)
}

/// [`read_file`] on the file's text.
pub fn pods_of(path: &Path, text: &str, node_name: &str) -> Result<Vec<Pod>, String> {
    let mut pods = manifest::parse_file(path, text).map_err(|e| e.to_string())?;
    for pod in &mut pods {
        manifest::default_static_pod(pod, path, node_name);
        manifest::validate(pod).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(pods)
}

/// Runs the source: publishes the desired pods after the first scan and whenever they change
/// (`None` until the folder has been read once, so nothing is taken for an orphan before).
/// Never returns.
pub async fn run(mut src: FolderSource, period: Duration, tx: watch::Sender<Option<DesiredPods>>) {
    let inotify = watch_folder(&src.dir);
    loop {
        let desired = src.scan();
        tx.send_if_modified(|cur| {
            if cur.as_ref() != Some(&desired) {
                *cur = Some(desired);
                true
            } else {
                false
            }
        });
        match &inotify {
            Some(fd) => {
                tokio::select! {
                    r = fd.readable() => {
                        if let Ok(mut guard) = r {
                            // Drain the events and rescan at once: a file still being written
                            // fails to parse (its last good pods stay) and its close brings
                            // another event.
                            let _ = guard.get_inner().read_events();
                            guard.clear_ready();
                        }
                    }
                    _ = tokio::time::sleep(period) => {}
                }
            }
            None => tokio::time::sleep(period.min(Duration::from_secs(2))).await,
        }
    }
}

/// An inotify instance that tokio can poll (nix's `Inotify` only implements `AsFd`).
struct Watch(nix::sys::inotify::Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Watch {
    fn read_events(&self) -> nix::Result<Vec<nix::sys::inotify::InotifyEvent>> {
        self.0.read_events()
    }
}

fn watch_folder(dir: &Path) -> Option<tokio::io::unix::AsyncFd<Watch>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let _ = std::fs::create_dir_all(dir);
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    ino.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB,
    )
    .ok()?;
    tracing::debug!(fd = ino.as_fd().as_raw_fd(), dir = %dir.display(), "watching manifest folder");
    // SAFETY: the inotify fd is owned by `Watch`, which the AsyncFd owns; it stays open and is the
    // same fd until the AsyncFd is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(Watch(ino), tokio::io::Interest::READABLE)
    }
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    #[test]
    fn union_of_the_sources_and_whether_all_answered() {
        let set = |uids: &[&str]| -> DesiredPods {
            uids.iter()
                .map(|u| (u.to_string(), Arc::new(Pod::default())))
                .collect()
        };
        let (api, file, empty) = (set(&["a1", "a2"]), set(&["f1"]), set(&[]));
        let uids = |d: &Desired| d.pods.keys().cloned().collect::<Vec<_>>();
        // (api, file) -> None, or (uids, all sources answered)
        type Case<'a> = (Answer<'a>, Answer<'a>, Option<(Vec<&'a str>, bool)>);
        let cases: Vec<Case> = vec![
            // cluster mode without a manifest folder: nothing until the first list
            (Some(None), None, None),
            (Some(Some(&api)), None, Some((vec!["a1", "a2"], true))),
            (Some(Some(&empty)), None, Some((vec![], true))),
            // cluster mode with static pods: the folder's pods at once, the API's added later
            (Some(None), Some(None), None),
            (Some(None), Some(Some(&file)), Some((vec!["f1"], false))),
            (Some(Some(&api)), Some(None), None),
            (
                Some(Some(&api)),
                Some(Some(&file)),
                Some((vec!["a1", "a2", "f1"], true)),
            ),
            // standalone: the folder is the only source
            (None, Some(None), None),
            (None, Some(Some(&file)), Some((vec!["f1"], true))),
            (None, Some(Some(&empty)), Some((vec![], true))),
            (None, None, None),
        ];
        for (i, (a, f, want)) in cases.into_iter().enumerate() {
            let got = union(a, f).map(|d| (uids(&d), d.all_sources));
            let want = want.map(|(u, all)| (u.into_iter().map(String::from).collect(), all));
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn same_pods_by_allocation_or_content() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("a".into());
        let a = Arc::new(pod.clone());
        let one: DesiredPods = [("u1".to_string(), a.clone())].into();
        assert!(same_pods(&one, &[("u1".to_string(), a.clone())].into()));
        // Another allocation with equal content is the same too.
        assert!(same_pods(
            &one,
            &[("u1".to_string(), Arc::new(pod.clone()))].into()
        ));
        pod.metadata.name = Some("b".into());
        assert!(!same_pods(
            &one,
            &[("u1".to_string(), Arc::new(pod))].into()
        ));
        assert!(!same_pods(&one, &[("u2".to_string(), a.clone())].into()));
        assert!(!same_pods(&one, &DesiredPods::new()));
    }

    #[test]
    fn scan_adds_changes_and_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut src = FolderSource::new(dir.path().into(), "node".into());
        assert!(src.scan().is_empty());
        std::fs::write(dir.path().join("a.yaml"), POD.replace("NAME", "a")).expect("write");
        std::fs::write(dir.path().join(".hidden.yaml"), POD.replace("NAME", "h")).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let first = src.scan();
        assert_eq!(first.len(), 1);
        let uid = first.keys().next().expect("uid").clone();
        // Unchanged: same uid.
        assert_eq!(src.scan().keys().next(), Some(&uid));
        // Changed: replaced by a pod with a new uid.
        std::fs::write(
            dir.path().join("a.yaml"),
            POD.replace("NAME", "a").replace("busybox", "busybox:1"),
        )
        .expect("write");
        let changed = src.scan();
        assert_eq!(changed.len(), 1);
        assert_ne!(changed.keys().next(), Some(&uid));
        // Broken: the last good pod stays, the error is reported with the file name.
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Pod\nspec: [",
        )
        .expect("write");
        let broken = src.scan();
        assert_eq!(
            broken.keys().collect::<Vec<_>>(),
            changed.keys().collect::<Vec<_>>()
        );
        let errors = src.errors();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("a.yaml"), "{}", errors[0].1);
        // A second, valid file is unaffected by the broken one.
        std::fs::write(dir.path().join("b.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#).expect("write");
        assert_eq!(src.scan().len(), 2);
        // Removed.
        std::fs::remove_file(dir.path().join("a.yaml")).expect("rm");
        let left = src.scan();
        assert_eq!(left.len(), 1);
        assert_eq!(
            left.values()
                .next()
                .and_then(|p| p.metadata.name.clone())
                .as_deref(),
            Some("b-node")
        );
    }

    /// An invalid static pod (here a hostPath that climbs out with `..`) is refused before
    /// anything of it runs, with the apiserver's message, and listed for `bosun pods`.
    #[test]
    fn invalid_pods_are_refused_and_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = tempfile::tempdir().expect("tempdir");
        let mut src =
            FolderSource::new(dir.path().into(), "node".into()).with_errors_in(run.path());
        let bad =
            POD.replace("NAME", "bad") + "  volumes: [{name: etc, hostPath: {path: ../../etc}}]\n";
        std::fs::write(dir.path().join("bad.yaml"), &bad).expect("write");
        std::fs::write(dir.path().join("ok.yaml"), POD.replace("NAME", "ok")).expect("write");
        let pods = src.scan();
        let names: Vec<_> = pods
            .values()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, ["ok-node"]);
        let listed: Vec<ManifestFailure> = serde_json::from_slice(
            &std::fs::read(run.path().join(ERRORS_FILE)).expect("errors file"),
        )
        .expect("json");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].file, dir.path().join("bad.yaml"));
        assert_eq!(listed[0].kept_pods, 0);
        assert!(
            listed[0].error.ends_with(
                "pod \"bad-node\" is invalid: spec.volumes[0].hostPath.path: Invalid value: \"../../etc\": must not contain '..'"
            ),
            "{}",
            listed[0].error
        );
        // A name that is too long once the node is appended, as the kubelet checks it.
        let long = "a".repeat(250);
        std::fs::write(dir.path().join("bad.yaml"), POD.replace("NAME", &long)).expect("write");
        assert_eq!(src.scan().len(), 1);
        assert!(
            src.errors()[0].1.contains("metadata.name: Invalid value"),
            "{:?}",
            src.errors()
        );
        // Fixed: listed no more.
        std::fs::write(dir.path().join("bad.yaml"), POD.replace("NAME", "bad")).expect("write");
        assert_eq!(src.scan().len(), 2);
        let listed: Vec<ManifestFailure> = serde_json::from_slice(
            &std::fs::read(run.path().join(ERRORS_FILE)).expect("errors file"),
        )
        .expect("json");
        assert!(listed.is_empty());
    }

    /// The first value the manager sees is the folder's real content, never an empty set sent
    /// before the scan (which would make a restarted agent take every pod for an orphan).
    #[tokio::test]
    async fn first_published_set_is_the_scanned_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), POD.replace("NAME", "a")).expect("write");
        let (tx, mut rx) = watch::channel(None);
        assert!(rx.borrow_and_update().is_none());
        let src = FolderSource::new(dir.path().into(), "node".into());
        let task = tokio::spawn(run(src, Duration::from_secs(60), tx));
        rx.changed().await.expect("published");
        let first = rx.borrow_and_update().clone().expect("some");
        assert_eq!(first.len(), 1);
        // An empty folder is published too (the manager must not wait forever).
        let empty = tempfile::tempdir().expect("tempdir");
        let (tx2, mut rx2) = watch::channel(None);
        let task2 = tokio::spawn(run(
            FolderSource::new(empty.path().into(), "node".into()),
            Duration::from_secs(60),
            tx2,
        ));
        rx2.changed().await.expect("published");
        assert_eq!(rx2.borrow_and_update().clone().map(|d| d.len()), Some(0));
        task.abort();
        task2.abort();
    }
}
