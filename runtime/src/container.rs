//! [`HostRuntime`]: the runtime the agent drives. Spawns keepers, lists and adopts containers from
//! `<run_dir>/containers`, stops and removes them, publishes [`crate::RuntimeEvent`]s.
//!
//! Everything is derived from the container folders (see [`crate::keeper`]): the runtime keeps
//! no state of its own beyond which keepers it is watching, so a restarted agent rebuilds the
//! same picture by scanning the folders ([`HostRuntime::new`]). Each live keeper is watched by
//! one task holding a pidfd of the keeper; when the keeper is gone the task reads `exit.json`
//! (or, if the keeper died without one, finalises the container itself) and publishes
//! [`RuntimeEvent::Exited`].

mod attach;
mod disk;
mod exec;
mod listing;
mod monitor;
mod proc;
mod remove;
mod start;
mod stop;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

pub use exec::{ExecError, ExecOutput, ExecSession, TerminalResizer};
pub use remove::RemoveError;
pub use start::{Created, StartError};
pub use stop::StopError;

use crate::{ContainerStatus, RuntimeEvent, RuntimePaths};

/// Tunables of the runtime: what the keeper applies per container, and the pod network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Rotate a container's log when it passes this size (containerLogMaxSize).
    pub log_max_size: u64,
    /// Keep at most this many log files per container (containerLogMaxFiles).
    pub log_max_files: u32,
    /// The CDI spec folders, later ones taking precedence (`/etc/cdi`, `/var/run/cdi`).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Where pod networks come from (see [`crate::PodRuntime::setup_network`]).
    pub network: NetworkOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            log_max_size: 10 * 1024 * 1024,
            log_max_files: 5,
            cdi_spec_dirs: crate::cdi::default_dirs(),
            network: NetworkOptions::default(),
        }
    }
}

/// The node's pod network: the CNI config and plugins (the agent decides whether a config is
/// there and writes bosun's default one where it should: `bosun::podnet`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkOptions {
    pub cni: crate::cni::CniConfig,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            cni: crate::cni::CniConfig {
                conf_dir: "/etc/cni/net.d".into(),
                bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            },
        }
    }
}

/// The writable layer (overlay upper folder) of container `id`, when the container exists.
pub fn writable_layer(paths: &RuntimePaths, id: &str) -> Option<PathBuf> {
    let dir = paths.run_dir.join("containers").join(id).join("upper");
    (valid_id(id) && dir.is_dir()).then_some(dir)
}

/// Image ids of every container recorded under `<run_dir>/containers` (what image GC must
/// keep), read from the containers' requests, and of every mounted image volume; needs no running [`HostRuntime`] (the CLI's
/// `bosun images gc` uses it too).
pub fn images_in_use(paths: &RuntimePaths) -> std::collections::BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(paths.run_dir.join("containers")) else {
        return crate::image_volume::in_use(paths);
    };
    let mut out: std::collections::BTreeSet<String> = entries
        .flatten()
        .filter_map(|e| disk::read_request(&e.path()))
        .map(|req| req.spec.image_id)
        .collect();
    out.extend(crate::image_volume::in_use(paths));
    out
}

/// Creating the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("create folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scan container folders in {path}")]
    Scan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The runtime on this host.
pub struct HostRuntime {
    inner: Arc<Inner>,
    /// Dropped with the runtime: tells the monitor tasks to stop (as if the agent had exited).
    _shutdown: watch::Sender<()>,
}

pub(crate) struct Inner {
    paths: RuntimePaths,
    opts: RuntimeOptions,
    events: broadcast::Sender<RuntimeEvent>,
    /// Containers whose keeper is being spawned right now (no keeper.pid yet).
    starting: Mutex<HashSet<String>>,
    /// Containers whose keeper has a monitor task.
    monitored: Mutex<HashSet<String>>,
    /// Serialises finalising containers whose keeper vanished.
    finalize: tokio::sync::Mutex<()>,
    shutdown: watch::Receiver<()>,
    /// Pod CPU quotas lifted while containers of the pod are set up (see `start`).
    lifts: start::QuotaLifts,
    /// seccomp profiles parsed and compiled once for every container (`<run_dir>/seccomp`).
    filters: Arc<crate::seccomp::Filters>,
    /// The names in the containers folder, read again only when it changed.
    listing: listing::Listing,
}

/// Retries the DEL of parked networks ([`crate::cni::park`]) every
/// [`crate::cni::PARKED_RETRY`] until the runtime is dropped.
async fn retry_parked_networks(dir: PathBuf, mut shutdown: watch::Receiver<()>) {
    loop {
        if dir.exists() {
            let left = crate::cni::retry_parked(&dir).await;
            if left > 0 {
                tracing::debug!(left, "parked pod networks still to give back");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::cni::PARKED_RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Capacity of the event channel; a lagging subscriber gets `Lagged` and must re-list.
const EVENT_CAPACITY: usize = 1024;

impl HostRuntime {
    /// Creates the folders, scans `<run_dir>/containers` and adopts every keeper it finds:
    /// a running keeper is monitored through a pidfd; an exited container needs nothing; a
    /// keeper gone without `exit.json` leaves its container in [`crate::ContainerState::Unknown`]
    /// after the runtime killed what was left of it and unmounted its rootfs.
    pub async fn new(paths: RuntimePaths, opts: RuntimeOptions) -> Result<Self, InitError> {
        let containers = paths.run_dir.join("containers");
        for dir in [&containers, &paths.pod_logs_dir, &paths.container_logs_dir] {
            std::fs::create_dir_all(dir).map_err(|source| InitError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let paths_seccomp = paths.run_dir.join("seccomp");
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (shutdown_tx, shutdown) = watch::channel(());
        let inner = Arc::new(Inner {
            paths,
            opts,
            events,
            starting: Mutex::default(),
            monitored: Mutex::default(),
            finalize: tokio::sync::Mutex::new(()),
            shutdown,
            lifts: start::QuotaLifts::default(),
            filters: Arc::new(crate::seccomp::Filters::new(paths_seccomp)),
            listing: listing::Listing::default(),
        });
        let entries = std::fs::read_dir(&containers).map_err(|source| InitError::Scan {
            path: containers.clone(),
            source,
        })?;
        let mut adopted = 0usize;
        for entry in entries.flatten() {
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            if !valid_id(&id) || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            if disk::read_exit(&dir).is_some() {
                continue;
            }
            let keeper = proc::open_keeper(&dir);
            if keeper.is_none() && disk::read_request(&dir).is_none() {
                // A start interrupted before its request was written: nothing ran, drop it.
                tracing::info!(container = %id, "removing the folder of an interrupted start");
                if disk::unmount_all_under(&dir).is_ok() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                continue;
            }
            match keeper {
                Some(keeper) => {
                    tracing::info!(container = %id, pid = keeper.pid, "adopting keeper");
                    inner.monitor(id, Some(keeper));
                    adopted += 1;
                }
                None => {
                    tracing::warn!(container = %id, "keeper gone without an exit record");
                    inner.finalize_lost(&id, stop::KEEPER_DIED, true).await;
                }
            }
        }
        // Networks whose DEL failed when their pod's sandbox was removed (before a restart
        // too) are given back as soon as their plugins answer.
        tokio::spawn(retry_parked_networks(
            crate::cni::parked_dir(&inner.paths),
            inner.shutdown.clone(),
        ));
        tracing::info!(adopted, "runtime ready");
        Ok(HostRuntime {
            inner,
            _shutdown: shutdown_tx,
        })
    }

    pub fn paths(&self) -> &RuntimePaths {
        &self.inner.paths
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.opts
    }

    /// Every container on disk with its state.
    pub fn list(&self) -> Vec<ContainerStatus> {
        let names = self.inner.listing.names(&self.inner.containers_dir());
        let mut out: Vec<ContainerStatus> = names.iter().filter_map(|id| self.status(id)).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The containers whose id starts with `prefix` (the agent names containers
    /// `<pod uid>_<name>_<attempt>`, so a pod's are found without reading everyone else's).
    pub fn list_prefix(&self, prefix: &str) -> Vec<ContainerStatus> {
        let names = self.inner.listing.names(&self.inner.containers_dir());
        let mut out: Vec<ContainerStatus> = names
            .iter()
            .filter(|id| id.starts_with(prefix))
            .filter_map(|id| self.status(id))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The state of one container, `None` if it does not exist.
    pub fn status(&self, id: &str) -> Option<ContainerStatus> {
        self.inner.status(id)
    }

    /// In-place resize: writes `res` to the container's cgroup, then keeps it in the
    /// container's request (what [`ContainerStatus::resources`] reports from then on).
    pub fn update_resources(
        &self,
        id: &str,
        res: &crate::Resources,
    ) -> Result<(), crate::cgroups::CgroupError> {
        use crate::cgroups::CgroupError;
        let missing = || CgroupError::Other {
            path: id.to_string(),
            reason: "no such container".into(),
        };
        let dir = self.inner.container_dir(id).ok_or_else(missing)?;
        let mut req = disk::read_request(&dir).ok_or_else(missing)?;
        crate::cgroups::CgroupLayout::host("/")?.set_limits(&req.cgroup_path, res)?;
        req.spec.resources = res.clone();
        let path = dir.join(crate::keeper::REQUEST_FILE);
        disk::write_json_atomic(&path, &req).map_err(|source| CgroupError::Io { path, source })
    }

    /// Exit events of containers (hints: reconcile against [`HostRuntime::list`]).
    pub fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.inner.events.subscribe()
    }
}

impl Inner {
    fn containers_dir(&self) -> PathBuf {
        self.paths.run_dir.join("containers")
    }

    /// The folder of container `id`; `None` for an id that cannot name one.
    fn container_dir(&self, id: &str) -> Option<PathBuf> {
        valid_id(id).then(|| self.containers_dir().join(id))
    }

    fn is_starting(&self, id: &str) -> bool {
        self.starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn status(&self, id: &str) -> Option<ContainerStatus> {
        let dir = self.container_dir(id)?;
        disk::status(&dir, id, self.is_starting(id))
    }
}

/// Ids valid as a folder name and a libcontainer id: `[A-Za-z0-9_.+-]`, not starting with '.',
/// at most 200 characters.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
}

#[cfg(test)]
mod tests;
