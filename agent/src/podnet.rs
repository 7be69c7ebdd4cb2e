//! The node's pod network as the kubelet and its CRI runtime see it: whether a CNI network
//! configuration exists (containerd's `NetworkReady` condition), the node's pod CIDR (the
//! Node's `spec.podCIDRs`, allocated by the controller-manager), and the default bridge network
//! bosun writes where it is asked to.
//!
//! In cluster mode bosun writes no network configuration of its own: the cluster admin (or a
//! network add-on's DaemonSet, running meanwhile with `hostNetwork`) puts one into the conf
//! folder. Until one is there the runtime reports `NetworkReady=false` ("cni plugin not
//! initialized", as containerd does), the node's Ready condition is False with the kubelet's
//! message and pods on the pod network are held (the kubelet's `NetworkNotReady`); the folder is
//! looked at again every [`POLL_INTERVAL`], so a config that appears is used without a restart.
//! Standalone mode, and cluster mode with `--default-cni-network`, write the default bridge
//! network ([`bosun_runtime::cni::default_conflist`]) when the folder has none.
//!
//! [`decide`] is the pure decision; [`PodNetwork`] reads the folder, acts on the decision and
//! publishes what the node status, the CRI `Status` and the pod workers read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

/// containerd's `NetworkReady=false` reason.
pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";
/// go-cni's error while no network config is loaded (containerd's status message carries it).
pub const NOT_INITIALIZED: &str = "cni plugin not initialized";
/// The kubelet's `NetworkNotReadyErrorMsg`: the start of a held pod's error and Event.
pub const POD_NOT_READY: &str = "network is not ready";
/// How often the conf folder is looked at (containerd watches it; the kubelet asks the runtime
/// every 5 s).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The message of containerd's `NetworkReady=false` condition for `cause`.
pub fn runtime_message(cause: &str) -> String {
    format!("Network plugin returns error: {cause}")
}

/// The kubelet's network error (a Ready=False message; its `runtimeState.networkErrors`): the
/// runtime's NetworkReady condition as the kubelet prints it.
pub fn node_message(cause: &str) -> String {
    format!(
        "container runtime network not ready: NetworkReady=false reason:{NOT_READY_REASON} message:{}",
        runtime_message(cause)
    )
}

/// The error and `NetworkNotReady` Event message of a pod held for the network.
pub fn pod_message(node_message: &str) -> String {
    format!("{POD_NOT_READY}: {node_message}")
}

/// The kubelet's Ready condition message from its errors (utilerrors' aggregate: one error is
/// itself, several are `[a, b]` without duplicates); `None` when there is none.
pub fn ready_error(errors: &[Option<&str>]) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors.iter().flatten() {
        if !seen.contains(e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => None,
        1 => Some(seen[0].to_string()),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

/// What the conf folder holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A usable config (the first by name).
    Config(PathBuf),
    /// No config.
    Nothing,
    /// The first config cannot be used, or the folder cannot be read (the error).
    Unusable(String),
}

/// What the decision is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs<'a> {
    pub found: &'a Found,
    /// Write the default bridge network when there is no config (standalone mode, or
    /// `--default-cni-network`).
    pub default_network: bool,
    /// The Node's `spec.podCIDRs`; `None` in cluster mode until the Node was read.
    pub node_cidrs: Option<&'a [String]>,
    /// podCIDR / `--pod-cidr`: the default network's subnet where the Node has none.
    pub configured_cidr: &'a str,
}

/// What to do and what the node's network is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Write the default network with this subnet (then the network is ready).
    pub write_default: Option<String>,
    /// Why the network is not ready (containerd's cause: [`NOT_INITIALIZED`]); `None`: ready
    /// (once the default is written, when there is one to write).
    pub not_ready: Option<String>,
}

/// The subnet of the default network: the Node's first IPv4 pod CIDR, else its first, else the
/// configured one.
pub fn default_subnet(node_cidrs: &[String], configured: &str) -> String {
    node_cidrs
        .iter()
        .find(|c| !c.contains(':'))
        .or(node_cidrs.first())
        .cloned()
        .unwrap_or_else(|| configured.to_string())
}

/// Is the node's pod network ready, and does bosun write the default network?
pub fn decide(i: &Inputs) -> Decision {
    let not_ready = |cause: &str| Decision {
        write_default: None,
        not_ready: Some(cause.to_string()),
    };
    match i.found {
        Found::Config(_) => Decision {
            write_default: None,
            not_ready: None,
        },
        // A file the admin (or an add-on) wrote is never replaced by the default; containerd
        // loads nothing from it and says so.
        Found::Unusable(_) => not_ready(NOT_INITIALIZED),
        Found::Nothing if !i.default_network => not_ready(NOT_INITIALIZED),
        // Cluster mode: the subnet is the Node's when it has one; wait for the first read.
        Found::Nothing => match i.node_cidrs {
            None => not_ready(NOT_INITIALIZED),
            Some(cidrs) => Decision {
                write_default: Some(default_subnet(cidrs, i.configured_cidr)),
                not_ready: None,
            },
        },
    }
}

/// What the node knows of its pod network now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetState {
    /// Why the network is not ready (the runtime's cause); `None`: ready.
    pub not_ready: Option<String>,
    /// The config in use.
    pub config: Option<PathBuf>,
    /// The Node's `spec.podCIDRs` (empty: none allocated, or standalone).
    pub pod_cidrs: Vec<String>,
    /// The Node was read (always in standalone mode).
    pub node_read: bool,
}

/// How the node's pod network is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub conf_dir: PathBuf,
    pub default_network: bool,
    pub configured_cidr: String,
    /// Cluster mode: the Node's pod CIDRs come from the apiserver.
    pub cluster: bool,
}

/// The node's pod network state, kept up to date by [`PodNetwork::check`].
pub struct PodNetwork {
    settings: Settings,
    state: watch::Sender<NetState>,
}

impl PodNetwork {
    /// Looks at the conf folder once (so that the first pods see the network as it is).
    pub fn new(settings: Settings) -> PodNetwork {
        let state = NetState {
            // Not looked at yet (never seen: the first check below replaces it, and logs).
            not_ready: Some(String::new()),
            node_read: !settings.cluster,
            ..Default::default()
        };
        let n = PodNetwork {
            settings,
            state: watch::Sender::new(state),
        };
        n.check();
        n
    }

    /// A network that is always ready (unit tests).
    pub fn ready() -> PodNetwork {
        PodNetwork {
            settings: Settings {
                conf_dir: PathBuf::new(),
                default_network: false,
                configured_cidr: String::new(),
                cluster: false,
            },
            state: watch::Sender::new(NetState {
                node_read: true,
                ..Default::default()
            }),
        }
    }

    /// The state now.
    pub fn state(&self) -> NetState {
        self.state.borrow().clone()
    }

    /// Changes of the state.
    pub fn subscribe(&self) -> watch::Receiver<NetState> {
        self.state.subscribe()
    }

    /// The kubelet's network error (the Ready condition's message, a held pod's error), `None`
    /// when the network is ready.
    pub fn error(&self) -> Option<String> {
        self.state.borrow().not_ready.as_deref().map(node_message)
    }

    /// The Node's pod CIDRs (the kubelet's `updatePodCIDR`), logged when they change; the conf
    /// folder is looked at again (the default network may wait for them).
    pub fn set_pod_cidrs(&self, cidrs: Vec<String>) {
        let old = self.state.borrow().clone();
        if old.node_read && old.pod_cidrs == cidrs {
            return;
        }
        if old.pod_cidrs != cidrs {
            tracing::info!(
                original = %old.pod_cidrs.join(","),
                new = %cidrs.join(","),
                "updating the node's pod CIDR"
            );
        }
        self.state.send_modify(|s| {
            s.pod_cidrs = cidrs;
            s.node_read = true;
        });
        self.check();
    }

    /// Reads the conf folder, decides, acts (writes the default network), publishes.
    pub fn check(&self) {
        let found = look(&self.settings.conf_dir);
        let old = self.state.borrow().clone();
        let decision = decide(&Inputs {
            found: &found,
            default_network: self.settings.default_network,
            node_cidrs: old.node_read.then_some(old.pod_cidrs.as_slice()),
            configured_cidr: &self.settings.configured_cidr,
        });
        let mut new = NetState {
            not_ready: decision.not_ready.clone(),
            config: match &found {
                Found::Config(p) => Some(p.clone()),
                _ => None,
            },
            ..old.clone()
        };
        if let Some(subnet) = &decision.write_default {
            match bosun_runtime::cni::ensure_default_conflist(&self.settings.conf_dir, subnet) {
                Ok(path) => new.config = path.or_else(|| found_path(&self.settings.conf_dir)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the default cni network config");
                    new.not_ready = Some(e.to_string());
                }
            }
        }
        if new.not_ready != old.not_ready || new.config != old.config {
            match (&new.not_ready, &found) {
                (None, _) => tracing::info!(
                    config = %new.config.as_deref().unwrap_or(Path::new("")).display(),
                    "pod network ready"
                ),
                (Some(cause), Found::Unusable(e)) => tracing::warn!(
                    conf_dir = %self.settings.conf_dir.display(), error = %e, cause,
                    "pod network not ready: the cni config cannot be used"
                ),
                (Some(cause), _) => tracing::warn!(
                    conf_dir = %self.settings.conf_dir.display(), cause,
                    "pod network not ready: no cni config (pods on the pod network wait; \
                     hostNetwork pods run)"
                ),
            }
        }
        self.state.send_if_modified(|s| {
            let changed = *s != new;
            *s = new;
            changed
        });
    }

    /// Looks at the conf folder every [`POLL_INTERVAL`]. Never returns.
    pub async fn run(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            self.check();
        }
    }
}

fn found_path(conf_dir: &Path) -> Option<PathBuf> {
    match look(conf_dir) {
        Found::Config(p) => Some(p),
        _ => None,
    }
}

/// What the conf folder holds now.
pub fn look(conf_dir: &Path) -> Found {
    match bosun_runtime::cni::find_config(conf_dir) {
        Ok(Some((path, _))) => Found::Config(path),
        Ok(None) => Found::Nothing,
        Err(e) => Found::Unusable(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_kubelets_and_containerds() {
        assert_eq!(
            node_message(NOT_INITIALIZED),
            "container runtime network not ready: NetworkReady=false \
             reason:NetworkPluginNotReady message:Network plugin returns error: \
             cni plugin not initialized"
        );
        assert_eq!(
            pod_message("x"),
            "network is not ready: x",
            "the kubelet's NetworkNotReadyErrorMsg prefix"
        );
        assert_eq!(ready_error(&[None, None]), None);
        assert_eq!(ready_error(&[Some("a"), None]).as_deref(), Some("a"));
        assert_eq!(
            ready_error(&[Some("a"), Some("b"), Some("a")]).as_deref(),
            Some("[a, b]")
        );
    }

    #[test]
    fn decisions() {
        let cfg = Found::Config("/etc/cni/net.d/10-flannel.conflist".into());
        let bad = Found::Unusable("cni config x: no network name".into());
        let none = Found::Nothing;
        let node = ["10.244.1.0/24".to_string(), "fd00:1::/64".to_string()];
        let v6 = ["fd00:1::/64".to_string()];
        let ready = Decision {
            write_default: None,
            not_ready: None,
        };
        let waiting = Decision {
            write_default: None,
            not_ready: Some(NOT_INITIALIZED.into()),
        };
        let write = |s: &str| Decision {
            write_default: Some(s.into()),
            not_ready: None,
        };
        // (found, default network, node cidrs, expected)
        let table: Vec<(&Found, bool, Option<&[String]>, Decision)> = vec![
            // A config is used whatever else holds.
            (&cfg, false, None, ready.clone()),
            (&cfg, true, Some(&node), ready.clone()),
            // Cluster mode without the flag: never a config of bosun's.
            (&none, false, None, waiting.clone()),
            (&none, false, Some(&node), waiting.clone()),
            (&none, false, Some(&[]), waiting.clone()),
            // An unusable file is not replaced.
            (&bad, true, Some(&node), waiting.clone()),
            (&bad, false, Some(&node), waiting.clone()),
            // The default network: the Node's IPv4 CIDR, its only one, else the configured.
            (&none, true, Some(&node), write("10.244.1.0/24")),
            (&none, true, Some(&v6), write("fd00:1::/64")),
            (&none, true, Some(&[]), write("10.88.0.0/24")),
            // ... once the Node was read.
            (&none, true, None, waiting.clone()),
        ];
        for (i, (found, default_network, node_cidrs, want)) in table.into_iter().enumerate() {
            let got = decide(&Inputs {
                found,
                default_network,
                node_cidrs,
                configured_cidr: "10.88.0.0/24",
            });
            assert_eq!(got, want, "row {i}");
        }
    }

    fn settings(dir: &Path, default_network: bool, cluster: bool) -> Settings {
        Settings {
            conf_dir: dir.join("net.d"),
            default_network,
            configured_cidr: "10.88.0.0/24".into(),
            cluster,
        }
    }

    const FLANNEL: &str = r#"{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}]}"#;

    #[test]
    fn cluster_mode_waits_for_a_config_and_picks_it_up() {
        let tmp = tempfile::tempdir().unwrap();
        let n = PodNetwork::new(settings(tmp.path(), false, true));
        assert_eq!(
            n.error().as_deref(),
            Some(node_message(NOT_INITIALIZED).as_str())
        );
        n.set_pod_cidrs(vec!["10.244.3.0/24".into()]);
        assert_eq!(n.state().pod_cidrs, vec!["10.244.3.0/24"]);
        assert!(n.error().is_some(), "bosun writes nothing in cluster mode");
        assert!(!tmp.path().join("net.d").exists());
        let mut rx = n.subscribe();
        rx.borrow_and_update();
        std::fs::create_dir_all(tmp.path().join("net.d")).unwrap();
        let file = tmp.path().join("net.d/10-flannel.conflist");
        std::fs::write(&file, FLANNEL).unwrap();
        n.check();
        assert_eq!(n.error(), None);
        assert_eq!(n.state().config, Some(file.clone()));
        assert!(rx.has_changed().unwrap());
        // Removed again: not ready again.
        std::fs::remove_file(&file).unwrap();
        n.check();
        assert!(n.error().is_some());
    }

    #[test]
    fn the_default_network_uses_the_nodes_cidr() {
        let tmp = tempfile::tempdir().unwrap();
        let n = PodNetwork::new(settings(tmp.path(), true, true));
        // The Node not read yet: nothing written.
        assert!(n.error().is_some());
        assert!(!tmp.path().join("net.d").exists());
        n.set_pod_cidrs(vec!["10.244.7.0/24".into()]);
        assert_eq!(n.error(), None);
        let written = tmp.path().join("net.d/10-bosun.conflist");
        assert_eq!(n.state().config, Some(written.clone()));
        let text = std::fs::read_to_string(written).unwrap();
        assert!(text.contains("10.244.7.0/24"), "{text}");
        // Standalone: at once, with the configured subnet.
        let tmp = tempfile::tempdir().unwrap();
        let n = PodNetwork::new(settings(tmp.path(), true, false));
        assert_eq!(n.error(), None);
        let text = std::fs::read_to_string(tmp.path().join("net.d/10-bosun.conflist")).unwrap();
        assert!(text.contains("10.88.0.0/24"), "{text}");
    }

    #[test]
    fn an_unusable_config_is_kept_and_not_ready() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("net.d")).unwrap();
        std::fs::write(tmp.path().join("net.d/00-bad.conf"), "{not json").unwrap();
        let n = PodNetwork::new(settings(tmp.path(), true, false));
        assert!(n.error().is_some());
        assert!(!tmp.path().join("net.d/10-bosun.conflist").exists());
    }
}
