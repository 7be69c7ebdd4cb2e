//! CSI in cluster mode, by job: driver discovery and the node's CSINode object ([`csinode`]),
//! mounting CSI persistent and inline volumes for pods through `bosun_volumes::csi` at the
//! kubelet's paths ([`mount`]), the pod's fsGroup on them ([`fsgroup`]), service account tokens
//! for drivers ([`tokens`]), volume figures ([`stats`]), online expansion ([`expansion`]), and
//! unmounting when a pod goes ([`unmount`]).
//!
//! For a CSI PV the worker gets: the CSIDriver's `attachRequired` (default true) honoured by
//! waiting for the VolumeAttachment the attach/detach controller creates (its
//! `attachmentMetadata` becomes the publish context), the stage and publish secrets the PV
//! names, `podInfoOnMount`, then NodeStageVolume (once per volume on the node) and
//! NodePublishVolume (once per pod). When a pod goes, its volumes are unpublished and a volume
//! no pod uses any more is unstaged.

pub mod csinode;
mod errors;
pub mod expansion;
pub mod fsgroup;
pub mod mount;
pub mod stats;
pub mod tokens;
pub mod unmount;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bosun_volumes::csi::{self, CsiVolume, Drivers};
use kube::Client;

pub use csinode::csinode;
pub use errors::{ExpandError, MountError, UnmountError};
pub use expansion::{
    expand_failure, expansion, resize_failed_patch, resize_finished_patch, ExpandFailure, Expansion,
};
pub use fsgroup::applies_fs_group;
pub use mount::{access_mode, inline_volume};
pub use tokens::{tokens_json, ServiceAccountTokens};
pub use unmount::volumes_in_use;

/// Drivers, their discovery and the CSINode object of this node.
pub struct Csi {
    client: Client,
    node: String,
    root: PathBuf,
    pub drivers: Drivers,
    /// Pods whose CSI volumes a background task is still trying to unmount.
    retrying: Arc<Mutex<HashSet<String>>>,
    /// The CSI volumes set up for pods since this agent started, by (pod uid, spec name): what
    /// stats and expansion need (a restarted agent fills it again as workers set up volumes).
    mounted: Arc<Mutex<BTreeMap<(String, String), Mounted>>>,
    /// The last volume figures and when they were taken: scrapes within [`STATS_TTL`] reuse
    /// them instead of asking every driver again (the kubelet caches them too).
    stats: Arc<tokio::sync::Mutex<Option<stats::StatsCache>>>,
    /// The CSI volumes pods are setting up, by unique name, with those pods' uids: reported in
    /// the Node's `volumesInUse` before they are staged (the kubelet's desired state of world),
    /// until the pods go.
    reporting: Reporting,
}

/// CSI volumes being set up, by unique name (`kubernetes.io/csi/<driver>^<handle>`), with the
/// uids of the pods that want them.
type Reporting = Arc<Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>>;

/// Where the CSI side sends its Events (expansion results, on the pod and its claim).
pub type Events = Option<tokio::sync::mpsc::UnboundedSender<crate::pods::EventRecord>>;

/// A CSI volume published for a pod.
#[derive(Clone, Debug)]
pub struct Mounted {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    /// The volume's name in the pod spec.
    pub volume: String,
    /// The claim (PVs; generic ephemeral volumes included); `None` for inline volumes.
    pub claim: Option<String>,
    pub vol: CsiVolume,
    pub target: PathBuf,
    pub staging: Option<PathBuf>,
}

impl Csi {
    /// Starts the plugin watcher on `<root>/plugins_registry` (CSI drivers, and the plugin
    /// types of `handlers`: DRA drivers), the CSINode sync and the expansion checks (whose
    /// Events go to `events`).
    pub fn start(
        client: Client,
        node: String,
        root: PathBuf,
        events: Events,
        handlers: Vec<Arc<dyn csi::PluginHandler>>,
    ) -> Self {
        let drivers = Drivers::default();
        let registry = root.join("plugins_registry");
        let _ = std::fs::create_dir_all(&registry);
        let mut all: Vec<Arc<dyn csi::PluginHandler>> =
            vec![Arc::new(csi::CsiHandler(drivers.clone()))];
        all.extend(handlers);
        tokio::spawn(csi::run_watcher(
            registry,
            all,
            csi::DiscoveryOptions::default(),
        ));
        tokio::spawn(csinode::sync_csinode(
            client.clone(),
            node.clone(),
            drivers.clone(),
        ));
        let mounted: Arc<Mutex<BTreeMap<(String, String), Mounted>>> = Arc::default();
        tokio::spawn(expansion::expand_loop(
            client.clone(),
            drivers.clone(),
            mounted.clone(),
            events,
        ));
        Csi {
            client,
            node,
            root,
            drivers,
            retrying: Arc::default(),
            mounted,
            stats: Arc::default(),
            reporting: Arc::default(),
        }
    }

    /// What the Node reports in `volumesInUse`: the CSI volumes staged or published on disk and
    /// those pods are setting up.
    pub fn volumes_in_use_fn(&self) -> impl Fn() -> Vec<String> + Send + Sync + 'static {
        let (root, reporting) = (self.root.clone(), self.reporting.clone());
        move || {
            let pending: Vec<String> = reporting
                .lock()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            unmount::in_use(unmount::volumes_in_use(&root), pending)
        }
    }

    fn remember(&self, m: Mounted) {
        if let Ok(mut map) = self.mounted.lock() {
            map.insert((m.pod_uid.clone(), m.vol.spec_name.clone()), m);
        }
    }
}
