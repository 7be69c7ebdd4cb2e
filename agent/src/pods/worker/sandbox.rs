//! Step 2a: the pod's sandbox and its network. The sandbox is created once (or found after a
//! restart); the network is set up in the background on a pod's first sync while its first
//! container is built (the plugins and libcontainer's set-up need nothing of each other), and
//! the pod's hosts, resolv.conf and hostname files are written.

use bosun_runtime::{NetworkError, Sandbox};
use k8s_openapi::api::core::v1::Pod;
use tracing::Instrument;

use super::errors::PodSetupError;
use super::Worker;
use crate::reasons::EventType;

/// The pod's sandbox and network as the worker holds them.
#[derive(Default)]
pub(super) struct PodNet {
    pub sandbox: Option<Sandbox>,
    /// The pod's addresses (the network's, or the host's with hostNetwork), IPv4 first.
    pub ips: Vec<String>,
    pub host_ip: Option<String>,
    /// /etc/hosts, /etc/resolv.conf, /etc/hostname of the pod, once the network is set up (or
    /// being set up: `pending`).
    pub files: Option<crate::network::PodFiles>,
    /// The network set-up running while the pod's first container is built; never outlives a
    /// sync ([`Worker::finish_network`]).
    pub pending: Option<tokio::task::JoinHandle<Result<Vec<String>, NetworkError>>>,
}

impl PodNet {
    /// The first address of the pod (hooks and probes aim at it), empty before there is one.
    pub fn pod_ip(&self) -> String {
        self.ips.first().cloned().unwrap_or_default()
    }
}

impl Worker {
    /// The sandbox, then the network. False when either failed (reported).
    pub(super) async fn ensure_sandbox(&mut self) -> bool {
        self.ensure_sandbox_ns().await && self.ensure_network().await
    }

    async fn ensure_sandbox_ns(&mut self) -> bool {
        if self.net.sandbox.is_some() {
            return true;
        }
        if let Some(sb) = self.ctx.runtime.sandbox(&self.uid) {
            self.net.sandbox = Some(sb);
            return true;
        }
        // The pod's ResourceClaims are prepared before its sandbox is made (the kubelet's
        // PrepareDynamicResources in SyncPod, when it creates the sandbox).
        if !self.prepare_dynamic_resources().await {
            return false;
        }
        let mut spec = crate::translate::sandbox_spec(&self.pod);
        spec.hostname = crate::network::uts_hostname(&self.pod, &self.ctx.cfg.cluster_domain);
        // hostUsers: false: the pod's ID range, allocated (and persisted) before its sandbox is
        // made, kept until the sandbox is gone.
        let range = if crate::security::userns::wanted(&self.pod) {
            let allocated = match &self.ctx.userns {
                Some(a) => a.allocate(&self.uid).map_err(Some),
                None => Err(None),
            };
            match allocated {
                Ok(r) => Some(r),
                Err(source) => {
                    return self.setup_failed(PodSetupError::UserNamespace {
                        pod: self.key(),
                        source,
                    })
                }
            }
        } else {
            None
        };
        let security = crate::security::pod_security(&self.pod, range);
        match self.ctx.runtime.create_sandbox(&spec, &security).await {
            Ok(sb) => {
                self.net.sandbox = Some(sb);
                self.pod_error = None;
                true
            }
            Err(source) => self.setup_failed(PodSetupError::Sandbox {
                pod: self.key(),
                source,
            }),
        }
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// The network (set up once; the runtime keeps the result with the sandbox), then the
    /// hosts/resolv.conf/hostname files. hostNetwork pods get the host's address.
    ///
    /// On a pod's first set-up the network is set up in the background while the first
    /// container is built ([`Worker::start`]), and the container's process runs only once the
    /// network is there. The hosts file is written without the pod's address meanwhile and
    /// rewritten in place (the container's bind mount holds its inode) when it is done.
    async fn ensure_network(&mut self) -> bool {
        if self.net.files.is_some() {
            return true;
        }
        let Some(sb) = self.net.sandbox.clone() else {
            return false;
        };
        self.net.host_ip = crate::network::host_ip(self.ctx.cfg.node_ip.as_deref());
        if self.host_network() || sb.netns.is_none() {
            self.net.ips = self.net.host_ip.clone().into_iter().collect();
        } else if let Some(ips) = self.ctx.runtime.network_ips(&sb) {
            self.net.ips = ips;
        } else {
            let net = bosun_runtime::PodNetwork {
                namespace: self
                    .pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: self.pod.metadata.name.clone().unwrap_or_default(),
                uid: self.uid.clone(),
                port_mappings: crate::network::port_mappings(&self.pod),
            };
            let setup = self.ctx.runtime.setup_network(&sb, &net);
            let span = tracing::Span::current();
            self.net.pending = Some(tokio::spawn(setup.instrument(span)));
            self.net.ips.clear();
        }
        let dns = self.dns_settings();
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        match crate::network::write_pod_files(
            &self.pod_dir(),
            &self.pod,
            &self.net.ips,
            &dns,
            &host_hosts,
        ) {
            Ok(f) => {
                self.net.files = Some(f);
                true
            }
            Err(source) => {
                // A background set-up finishes first: its result stays for the next try.
                if let Some(h) = self.net.pending.take() {
                    let _ = h.await;
                }
                self.setup_failed(PodSetupError::PodFiles {
                    pod: self.key(),
                    source,
                })
            }
        }
    }

    fn dns_settings(&self) -> crate::network::DnsSettings {
        crate::network::DnsSettings {
            cluster_dns: self.ctx.cfg.cluster_dns.clone(),
            cluster_domain: self.ctx.cfg.cluster_domain.clone(),
            host_resolv: std::fs::read_to_string(&self.ctx.cfg.resolv_conf).unwrap_or_default(),
        }
    }

    /// The sandbox or its network could not be set up: FailedCreatePodSandBox, and no
    /// container starts until a later sync sets it up.
    /// NodePrepareResources for the pod's claims (nothing without claims or off a cluster).
    /// A failure is the pod's set-up error (FailedPrepareDynamicResources), tried again with
    /// back-off ([`crate::dra::state::retry_after`]).
    async fn prepare_dynamic_resources(&mut self) -> bool {
        let Some(dra) = self.ctx.dra.clone() else {
            return true;
        };
        if !crate::dra::state::wants(&self.pod) {
            return true;
        }
        match dra.prepare(&self.pod).await {
            Ok(()) => {
                self.dra_failures = 0;
                true
            }
            Err(source) => {
                self.dra_failures = self.dra_failures.saturating_add(1);
                tracing::warn!(error = %source, "failed to prepare dynamic resources");
                self.setup_failed(PodSetupError::DynamicResources {
                    pod: self.key(),
                    source,
                })
            }
        }
    }

    fn setup_failed(&mut self, e: PodSetupError) -> bool {
        tracing::debug!(pod = e.pod(), error = %e, "pod sandbox not ready");
        self.event(EventType::Warning, e.reason(), &e.to_string());
        self.pod_error = Some(e);
        self.net.files = None;
        false
    }

    /// Waits for a background network set-up ([`Worker::ensure_network`]) and puts the pod's
    /// address into its hosts file. False when the network failed (reported; the next sync
    /// tries again).
    pub(super) async fn finish_network(&mut self) -> bool {
        let Some(handle) = self.net.pending.take() else {
            return self.net.files.is_some();
        };
        let pod = self.key();
        let ips = match handle.await {
            Ok(Ok(ips)) => ips,
            Ok(Err(source)) => return self.setup_failed(PodSetupError::Network { pod, source }),
            Err(e) => {
                return self.setup_failed(PodSetupError::NetworkTask {
                    pod,
                    message: e.to_string(),
                })
            }
        };
        self.net.ips = ips;
        if matches!(
            self.pod_error,
            Some(
                PodSetupError::Sandbox { .. }
                    | PodSetupError::Network { .. }
                    | PodSetupError::NetworkTask { .. }
                    | PodSetupError::PodFiles { .. }
                    | PodSetupError::HostsFile { .. }
            )
        ) {
            self.pod_error = None;
        }
        let Some(files) = &self.net.files else {
            return false;
        };
        let text =
            crate::network::hosts_file(&self.pod, &self.net.ips, &self.ctx.cfg.cluster_domain, "");
        if let Err(source) = crate::network::rewrite_in_place(&files.hosts, text.as_bytes()) {
            return self.setup_failed(PodSetupError::HostsFile { pod, source });
        }
        true
    }

    /// The pod with status.podIP(s)/hostIP(s) filled in (for downward-API env and volumes).
    pub(super) fn pod_with_ips(&self) -> Pod {
        let mut pod = Pod::clone(&self.pod);
        let st = pod.status.get_or_insert_with(Default::default);
        crate::network::set_ips(st, &self.net.ips, self.net.host_ip.as_deref());
        pod
    }
}
