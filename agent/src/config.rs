//! Flags + the KubeletConfiguration file -> one validated [`Config`].

pub mod kubelet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the agent needs, validated. Defaults are the kubelet's where one exists.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// staticPodPath: the manifest folder.
    pub manifests: Option<PathBuf>,
    /// `--root-dir` (kubelet's `/var/lib/kubelet`): pod folders and volumes.
    pub root_dir: PathBuf,
    /// bosun's volatile state (keepers, sandboxes, pod status files).
    pub run_dir: PathBuf,
    /// bosun's persistent data (image store).
    pub data_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub container_logs_dir: PathBuf,
    /// cgroupRoot: the parent of `kubepods`.
    pub cgroup_root: String,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    /// How often the manifest folder is rescanned even without inotify events (fileCheckFrequency).
    pub file_check_frequency: std::time::Duration,
    /// How often every pod worker re-checks the runtime without an event (syncFrequency).
    pub sync_frequency: std::time::Duration,
    /// Cluster mode: the node's kubeconfig (written by the TLS bootstrap when missing).
    pub kubeconfig: Option<PathBuf>,
    /// Cluster mode: a bootstrap kubeconfig (bootstrap token) for the TLS bootstrap.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Client certificate and key folder (`--cert-dir`, default `<root-dir>/pki`).
    pub cert_dir: PathBuf,
    pub node_ip: Option<String>,
    pub node_labels: std::collections::BTreeMap<String, String>,
    pub register_with_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// maxPods (110).
    pub max_pods: u32,
    /// clusterDNS: nameservers of ClusterFirst pods (empty: ClusterFirst falls back to Default).
    pub cluster_dns: Vec<String>,
    /// clusterDomain: the DNS domain of the cluster (`cluster.local`).
    pub cluster_domain: String,
    /// resolvConf: the host resolv.conf that Default pods get (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// podCIDR / `--pod-cidr`: the subnet of the default CNI network bosun writes when none
    /// exists (in cluster mode the Node's `spec.podCIDR` wins: `crate::podnet`).
    pub pod_cidr: String,
    /// `--default-cni-network`: write the default bridge network when the conf folder has none,
    /// in cluster mode too (standalone mode always does; a cluster node otherwise waits, not
    /// ready, for the admin's or the network add-on's config).
    pub default_cni_network: bool,
    /// `--cni-conf-dir`: CNI network configs (`/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// `--cni-bin-dir`: folders of CNI plugins, in order (`/opt/cni/bin:/usr/lib/cni`).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// `--cdi-spec-dir`: folders of CDI spec files, a later one taking precedence
    /// (`/etc/cdi:/var/run/cdi`).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// `--registry-config`: mirrors, plain-HTTP registries, private CAs (YAML).
    pub registry_config: PathBuf,
    /// `--image-credentials`: docker-style `auth.json` for registry logins.
    pub image_credentials: PathBuf,
    /// serializeImagePulls (default true): one pull at a time.
    pub serialize_image_pulls: bool,
    /// maxParallelImagePulls (only with serializeImagePulls false; None = no limit).
    pub max_parallel_image_pulls: Option<u32>,
    pub image_gc_high_threshold_percent: u8,
    pub image_gc_low_threshold_percent: u8,
    pub image_minimum_gc_age: std::time::Duration,
    /// The kubelet HTTP API (port, TLS, authentication, authorization).
    pub server: ServerConfig,
    /// The unix sockets the CRI API is served on: `<run-dir>/bosun.sock`, and the path of
    /// containerRuntimeEndpoint (`--container-runtime-endpoint`) when it names another.
    pub cri_sockets: Vec<PathBuf>,
    /// seccompDefault (false): containers that name no seccomp profile get `RuntimeDefault`
    /// instead of `Unconfined`.
    pub seccomp_default: bool,
    /// allowedUnsafeSysctls: sysctls (and `prefix*` patterns) pods may set beyond the safe set;
    /// each must be namespaced (checked here, as the kubelet refuses to start otherwise).
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Reservations, node allocatable enforcement and eviction (checked further when the agent
    /// starts: `pods::eviction::NodeResources::new`).
    pub node_resources: NodeResourceConfig,
    /// Graceful node shutdown (shutdownGracePeriod, shutdownGracePeriodCriticalPods,
    /// shutdownGracePeriodByPodPriority; all empty by default: off).
    pub shutdown: ShutdownConfig,
}

/// One entry of shutdownGracePeriodByPodPriority: pods of this priority and above (up to the
/// next entry's) get this many seconds when the node shuts down.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownGracePeriodByPodPriority {
    pub priority: i32,
    pub shutdown_grace_period_seconds: i64,
}

/// Graceful node shutdown as the file gives it, validated as the kubelet does (both feature
/// gates, GracefulNodeShutdown and GracefulNodeShutdownBasedOnPodPriority, are on by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// shutdownGracePeriod (0: off).
    pub grace_period: std::time::Duration,
    /// shutdownGracePeriodCriticalPods (0), part of shutdownGracePeriod.
    pub grace_period_critical_pods: std::time::Duration,
    /// shutdownGracePeriodByPodPriority (empty).
    pub by_pod_priority: Vec<ShutdownGracePeriodByPodPriority>,
}

impl ShutdownConfig {
    fn from_file(f: &KubeletConfigFile) -> Result<ShutdownConfig, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.into(),
            message,
        };
        let duration = |field: &str, v: &Option<String>| match v {
            Some(s) => parse_duration(s)
                .ok_or_else(|| invalid(field, format!("{s:?} is not a duration like 30s"))),
            None => Ok(std::time::Duration::ZERO),
        };
        let cfg = ShutdownConfig {
            grace_period: duration("shutdownGracePeriod", &f.shutdown_grace_period)?,
            grace_period_critical_pods: duration(
                "shutdownGracePeriodCriticalPods",
                &f.shutdown_grace_period_critical_pods,
            )?,
            by_pod_priority: f
                .shutdown_grace_period_by_pod_priority
                .clone()
                .unwrap_or_default(),
        };
        let (grace, critical) = (cfg.grace_period, cfg.grace_period_critical_pods);
        let second = std::time::Duration::from_secs(1);
        if critical > grace {
            return Err(invalid(
                "shutdownGracePeriodCriticalPods",
                format!(
                    "shutdownGracePeriodCriticalPods {critical:?} must be <= shutdownGracePeriod {grace:?}"
                ),
            ));
        }
        for (field, d) in [
            ("shutdownGracePeriod", grace),
            ("shutdownGracePeriodCriticalPods", critical),
        ] {
            if !d.is_zero() && d < second {
                return Err(invalid(
                    field,
                    format!("{field} {d:?} must be either zero or otherwise >= 1 sec"),
                ));
            }
        }
        if !cfg.by_pod_priority.is_empty() && (!grace.is_zero() || !critical.is_zero()) {
            return Err(invalid(
                "shutdownGracePeriodByPodPriority",
                "Cannot specify both shutdownGracePeriodByPodPriority and shutdownGracePeriod at the same time".into(),
            ));
        }
        Ok(cfg)
    }
}

/// The kubelet's `evictionHard` when the configuration file sets none (Linux).
pub const DEFAULT_EVICTION_HARD: [(&str, &str); 5] = [
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

/// What the node keeps from pods and when it evicts them, as the file gives them (defaults the
/// kubelet's).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeResourceConfig {
    /// kubeReserved / systemReserved: resource lists (`cpu`, `memory`, `ephemeral-storage`,
    /// `pid`) taken off capacity for the node's allocatable.
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    /// enforceNodeAllocatable (`[pods]`): the allocatable is put on the `kubepods` cgroup.
    pub enforce_pods: bool,
    /// evictionHard (the kubelet's defaults when the file has none; with
    /// mergeDefaultEvictionSettings the defaults fill the signals it does not name).
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, std::time::Duration>,
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    /// evictionPressureTransitionPeriod (5m).
    pub eviction_pressure_transition_period: std::time::Duration,
    /// evictionMaxPodGracePeriod (0).
    pub eviction_max_pod_grace_period: i64,
    /// localStorageCapacityIsolation (true).
    pub local_storage_capacity_isolation: bool,
}

impl NodeResourceConfig {
    fn from_file(f: &KubeletConfigFile) -> Result<NodeResourceConfig, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.into(),
            message,
        };
        let defaults = || -> BTreeMap<String, String> {
            DEFAULT_EVICTION_HARD
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let eviction_hard = match &f.eviction_hard {
            None => defaults(),
            Some(h) if f.merge_default_eviction_settings == Some(true) => {
                let mut all = defaults();
                all.extend(h.clone());
                all
            }
            Some(h) => h.clone(),
        };
        let mut grace = BTreeMap::new();
        for (k, v) in f.eviction_soft_grace_period.iter().flatten() {
            let d = parse_duration(v).ok_or_else(|| {
                invalid(
                    "evictionSoftGracePeriod",
                    format!("{k}: {v:?} is not a duration like 30s"),
                )
            })?;
            grace.insert(k.clone(), d);
        }
        let transition = match &f.eviction_pressure_transition_period {
            Some(v) => parse_duration(v).ok_or_else(|| {
                invalid(
                    "evictionPressureTransitionPeriod",
                    format!("{v:?} is not a duration like 5m"),
                )
            })?,
            None => std::time::Duration::ZERO,
        };
        let enforce = f
            .enforce_node_allocatable
            .clone()
            .unwrap_or_else(|| vec!["pods".into()]);
        for e in &enforce {
            if !["pods", "none"].contains(&e.as_str()) {
                return Err(invalid(
                    "enforceNodeAllocatable",
                    format!("{e:?}: bosun enforces the allocatable on pods only (pods or none)"),
                ));
            }
        }
        if enforce.iter().any(|e| e == "none") && enforce.len() > 1 {
            return Err(invalid(
                "enforceNodeAllocatable",
                "none cannot be combined with other values".into(),
            ));
        }
        let max_grace = f.eviction_max_pod_grace_period.unwrap_or(0);
        if max_grace < 0 {
            return Err(invalid(
                "evictionMaxPodGracePeriod",
                format!("{max_grace} must not be negative"),
            ));
        }
        Ok(NodeResourceConfig {
            kube_reserved: f.kube_reserved.clone().unwrap_or_default(),
            system_reserved: f.system_reserved.clone().unwrap_or_default(),
            enforce_pods: enforce.iter().any(|e| e == "pods"),
            eviction_hard,
            eviction_soft: f.eviction_soft.clone().unwrap_or_default(),
            eviction_soft_grace_period: grace,
            eviction_minimum_reclaim: f.eviction_minimum_reclaim.clone().unwrap_or_default(),
            // A zero period is the default's 5 minutes, as the kubelet's defaulting has it.
            eviction_pressure_transition_period: if transition.is_zero() {
                std::time::Duration::from_secs(300)
            } else {
                transition
            },
            eviction_max_pod_grace_period: max_grace,
            local_storage_capacity_isolation: f.local_storage_capacity_isolation.unwrap_or(true),
        })
    }
}

/// The kubelet HTTP API's settings, with the kubelet's defaults (KubeletConfiguration v1beta1).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// port (10250): HTTPS.
    pub port: u16,
    /// address (0.0.0.0).
    pub address: String,
    /// healthzPort (10248; 0 disables the plain healthz endpoint).
    pub healthz_port: u16,
    /// healthzBindAddress (127.0.0.1).
    pub healthz_bind_address: String,
    /// tlsCertFile / tlsPrivateKeyFile; without them a self-signed pair under `--cert-dir`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// authentication.x509.clientCAFile: client certificates signed by it are users.
    pub client_ca_file: Option<PathBuf>,
    /// authentication.anonymous.enabled (false).
    pub anonymous_auth: bool,
    /// authentication.webhook.enabled (true): bearer tokens through TokenReview.
    pub webhook_authn: bool,
    /// authentication.webhook.cacheTTL (2m).
    pub authn_cache_ttl: std::time::Duration,
    /// authorization.mode: `Webhook` (SubjectAccessReview, default) or `AlwaysAllow`.
    pub authz_webhook: bool,
    /// authorization.webhook.cacheAuthorizedTTL (5m) / cacheUnauthorizedTTL (30s).
    pub authz_cache_authorized_ttl: std::time::Duration,
    pub authz_cache_unauthorized_ttl: std::time::Duration,
    /// serverTLSBootstrap (false): the serving certificate from a `kubernetes.io/kubelet-serving`
    /// CSR instead of a self-signed one.
    pub server_tls_bootstrap: bool,
    /// streamingConnectionIdleTimeout (4h): an exec/attach/port-forward session without a byte
    /// either way for this long is closed (zero: never).
    pub streaming_connection_idle_timeout: std::time::Duration,
    /// How long a request head may take (the kube-apiserver's 32 s; not a file key).
    pub header_timeout: std::time::Duration,
    /// How long a kept-alive connection may wait for its next request (the kubelet's 90 s; not
    /// a file key).
    pub idle_timeout: std::time::Duration,
    /// Connections not yet authenticated, at most (a quarter of the agent's file descriptor
    /// limit, 16 to 1024; not a file key).
    pub max_unauthenticated_connections: usize,
}

/// The kube-apiserver's `ReadHeaderTimeout`.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(32);
/// The kubelet server's `IdleTimeout`.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// The default cap on unauthenticated connections: a quarter of the file descriptors the agent
/// may open, between 16 and 1024.
pub fn default_max_unauthenticated() -> usize {
    // SAFETY: getrlimit writes into the struct we pass and has no other effect.
    let soft = unsafe {
        let mut r = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur
        } else {
            1024
        }
    };
    usize::try_from(soft / 4).unwrap_or(1024).clamp(16, 1024)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationFile {
    pub x509: Option<X509File>,
    pub webhook: Option<WebhookAuthnFile>,
    pub anonymous: Option<AnonymousFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509File {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAuthnFile {
    pub enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AnonymousFile {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationFile {
    pub mode: Option<String>,
    pub webhook: Option<WebhookAuthzFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAuthzFile {
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<String>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<String>,
}

impl ServerConfig {
    fn from_file(f: &KubeletConfigFile) -> Result<ServerConfig, ConfigError> {
        let duration = |field: &str, v: Option<&String>, default: u64| match v {
            // 0s is the zero value, which the kubelet's defaulting replaces (kubeadm writes it).
            Some(s) if parse_duration(s).is_some_and(|d| d.is_zero()) => {
                Ok(std::time::Duration::from_secs(default))
            }
            Some(s) => parse_duration(s).ok_or_else(|| ConfigError::Invalid {
                field: field.into(),
                message: format!("{s:?} is not a duration like 2m"),
            }),
            None => Ok(std::time::Duration::from_secs(default)),
        };
        let authn = f.authentication.as_ref();
        let webhook = authn.and_then(|a| a.webhook.as_ref());
        let authz = f.authorization.as_ref();
        let authz_webhook = authz.and_then(|a| a.webhook.as_ref());
        let authz_mode = match authz.and_then(|a| a.mode.as_deref()) {
            None | Some("Webhook") => true,
            Some("AlwaysAllow") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "authorization.mode".into(),
                    message: format!("{other:?} is not Webhook or AlwaysAllow"),
                })
            }
        };
        let cfg = ServerConfig {
            port: f.port.unwrap_or(10250),
            address: f.address.clone().unwrap_or_else(|| "0.0.0.0".into()),
            healthz_port: f.healthz_port.unwrap_or(10248),
            healthz_bind_address: f
                .healthz_bind_address
                .clone()
                .unwrap_or_else(|| "127.0.0.1".into()),
            tls_cert_file: f.tls_cert_file.clone(),
            tls_private_key_file: f.tls_private_key_file.clone(),
            client_ca_file: authn
                .and_then(|a| a.x509.as_ref())
                .and_then(|x| x.client_ca_file.clone()),
            anonymous_auth: authn
                .and_then(|a| a.anonymous.as_ref())
                .and_then(|a| a.enabled)
                .unwrap_or(false),
            webhook_authn: webhook.and_then(|w| w.enabled).unwrap_or(true),
            authn_cache_ttl: duration(
                "authentication.webhook.cacheTTL",
                webhook.and_then(|w| w.cache_ttl.as_ref()),
                120,
            )?,
            authz_webhook: authz_mode,
            authz_cache_authorized_ttl: duration(
                "authorization.webhook.cacheAuthorizedTTL",
                authz_webhook.and_then(|w| w.cache_authorized_ttl.as_ref()),
                300,
            )?,
            authz_cache_unauthorized_ttl: duration(
                "authorization.webhook.cacheUnauthorizedTTL",
                authz_webhook.and_then(|w| w.cache_unauthorized_ttl.as_ref()),
                30,
            )?,
            server_tls_bootstrap: f.server_tls_bootstrap.unwrap_or(false),
            streaming_connection_idle_timeout: duration(
                "streamingConnectionIdleTimeout",
                f.streaming_connection_idle_timeout.as_ref(),
                4 * 3600,
            )?,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_unauthenticated_connections: default_max_unauthenticated(),
        };
        for (field, addr) in [
            ("address", &cfg.address),
            ("healthzBindAddress", &cfg.healthz_bind_address),
        ] {
            if addr.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    message: format!("{addr:?} is not an IP address"),
                });
            }
        }
        if cfg.tls_cert_file.is_some() != cfg.tls_private_key_file.is_some() {
            return Err(ConfigError::Invalid {
                field: "tlsCertFile".into(),
                message: "tlsCertFile and tlsPrivateKeyFile go together".into(),
            });
        }
        Ok(cfg)
    }
}

/// The default pod subnet (unlikely to clash with podman's 10.88.0.0/16 or docker's 172.17/16).
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/24";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {field}: {message}")]
    Invalid { field: String, message: String },
}

/// The subset of `kubelet.config.k8s.io/v1beta1` KubeletConfiguration bosun reads. Unknown keys
/// are kept in `rest` and warned about once.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfigFile {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub static_pod_path: Option<PathBuf>,
    pub cgroup_root: Option<String>,
    pub container_log_max_size: Option<String>,
    pub container_log_max_files: Option<u32>,
    pub file_check_frequency: Option<String>,
    pub sync_frequency: Option<String>,
    pub pod_logs_dir: Option<PathBuf>,
    pub max_pods: Option<u32>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    pub cluster_domain: Option<String>,
    pub resolv_conf: Option<PathBuf>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    pub serialize_image_pulls: Option<bool>,
    pub max_parallel_image_pulls: Option<u32>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<u8>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<u8>,
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: Option<String>,
    pub port: Option<u16>,
    pub address: Option<String>,
    pub healthz_port: Option<u16>,
    pub healthz_bind_address: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub authentication: Option<AuthenticationFile>,
    pub authorization: Option<AuthorizationFile>,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: Option<bool>,
    pub container_runtime_endpoint: Option<String>,
    pub streaming_connection_idle_timeout: Option<String>,
    pub seccomp_default: Option<bool>,
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    pub kube_reserved: Option<BTreeMap<String, String>>,
    pub system_reserved: Option<BTreeMap<String, String>>,
    pub enforce_node_allocatable: Option<Vec<String>>,
    pub eviction_hard: Option<BTreeMap<String, String>>,
    pub eviction_soft: Option<BTreeMap<String, String>>,
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    pub eviction_pressure_transition_period: Option<String>,
    pub eviction_max_pod_grace_period: Option<i64>,
    pub merge_default_eviction_settings: Option<bool>,
    pub local_storage_capacity_isolation: Option<bool>,
    pub shutdown_grace_period: Option<String>,
    pub shutdown_grace_period_critical_pods: Option<String>,
    pub shutdown_grace_period_by_pod_priority: Option<Vec<ShutdownGracePeriodByPodPriority>>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// Values given on the command line (None = not given).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub manifests: Option<PathBuf>,
    pub node_name: Option<String>,
    pub root_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub pod_logs_dir: Option<PathBuf>,
    pub container_logs_dir: Option<PathBuf>,
    pub cgroup_root: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
    pub node_ip: Option<String>,
    /// `k=v,k2=v2`
    pub node_labels: Option<String>,
    /// `key=value:Effect,...`
    pub register_with_taints: Option<String>,
    pub pod_cidr: Option<String>,
    pub default_cni_network: bool,
    pub cni_conf_dir: Option<PathBuf>,
    /// Colon-separated folders.
    pub cni_bin_dir: Option<String>,
    /// Colon-separated folders.
    pub cdi_spec_dir: Option<String>,
    pub registry_config: Option<PathBuf>,
    pub image_credentials: Option<PathBuf>,
    /// KubeletConfiguration keys set by kubelet flags (`--cluster-dns`, ...: see
    /// [`kubelet::split_args`]), merged over the file.
    pub config_overrides: serde_json::Map<String, serde_json::Value>,
}

impl Config {
    /// Flags win over the file, the file over defaults.
    pub fn load(flags: &Flags) -> Result<(Config, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let file = read_file(flags, &mut warnings)?;
        let node_name = match &flags.node_name {
            Some(n) => n.clone(),
            None => hostname(),
        }
        .to_lowercase();
        let container_log_max_size = match &file.container_log_max_size {
            Some(q) => parse_size(q).ok_or_else(|| ConfigError::Invalid {
                field: "containerLogMaxSize".into(),
                message: format!("{q:?} is not a quantity like 10Mi"),
            })?,
            None => 10 * 1024 * 1024,
        };
        let container_log_max_files = file.container_log_max_files.unwrap_or(5);
        if container_log_max_files < 2 {
            return Err(ConfigError::Invalid {
                field: "containerLogMaxFiles".into(),
                message: "must be at least 2".into(),
            });
        }
        let duration = |field: &str, v: &Option<String>, default: u64| match v {
            // 0s is the zero value, which the kubelet's defaulting replaces (kubeadm writes it).
            Some(s) if parse_duration(s).is_some_and(|d| d.is_zero()) => {
                Ok(std::time::Duration::from_secs(default))
            }
            Some(s) => parse_duration(s).ok_or_else(|| ConfigError::Invalid {
                field: field.into(),
                message: format!("{s:?} is not a duration like 20s"),
            }),
            None => Ok(std::time::Duration::from_secs(default)),
        };
        let root_dir: PathBuf = flags
            .root_dir
            .clone()
            .unwrap_or_else(|| "/var/lib/kubelet".into());
        let node_labels = match &flags.node_labels {
            Some(l) => parse_labels(l).map_err(|message| ConfigError::Invalid {
                field: "--node-labels".into(),
                message,
            })?,
            None => Default::default(),
        };
        let register_with_taints = match &flags.register_with_taints {
            Some(t) => parse_taints(t).map_err(|message| ConfigError::Invalid {
                field: "--register-with-taints".into(),
                message,
            })?,
            None => Vec::new(),
        };
        let mut cfg = Config {
            kubeconfig: flags.kubeconfig.clone(),
            bootstrap_kubeconfig: flags.bootstrap_kubeconfig.clone(),
            cert_dir: flags
                .cert_dir
                .clone()
                .unwrap_or_else(|| root_dir.join("pki")),
            node_ip: flags.node_ip.clone(),
            node_labels,
            register_with_taints,
            max_pods: file.max_pods.unwrap_or(110),
            node_name,
            manifests: flags.manifests.clone().or(file.static_pod_path.clone()),
            root_dir,
            run_dir: flags.run_dir.clone().unwrap_or_else(|| "/run/bosun".into()),
            data_dir: flags
                .data_dir
                .clone()
                .unwrap_or_else(|| "/var/lib/bosun".into()),
            pod_logs_dir: flags
                .pod_logs_dir
                .clone()
                .or(file.pod_logs_dir.clone())
                .unwrap_or_else(|| "/var/log/pods".into()),
            container_logs_dir: flags
                .container_logs_dir
                .clone()
                .unwrap_or_else(|| "/var/log/containers".into()),
            cgroup_root: flags
                .cgroup_root
                .clone()
                .or(file.cgroup_root.clone())
                .unwrap_or_else(|| "/".into()),
            container_log_max_size,
            container_log_max_files,
            file_check_frequency: duration("fileCheckFrequency", &file.file_check_frequency, 20)?,
            sync_frequency: duration("syncFrequency", &file.sync_frequency, 10)?,
            cluster_dns: file.cluster_dns.clone().unwrap_or_default(),
            cluster_domain: file
                .cluster_domain
                .clone()
                .unwrap_or_else(|| "cluster.local".into()),
            resolv_conf: file
                .resolv_conf
                .clone()
                .unwrap_or_else(|| "/etc/resolv.conf".into()),
            pod_cidr: flags
                .pod_cidr
                .clone()
                .or(file.pod_cidr.clone())
                .unwrap_or_else(|| DEFAULT_POD_CIDR.into()),
            default_cni_network: flags.default_cni_network,
            cni_conf_dir: flags
                .cni_conf_dir
                .clone()
                .unwrap_or_else(|| "/etc/cni/net.d".into()),
            cni_bin_dirs: flags
                .cni_bin_dir
                .as_deref()
                .unwrap_or("/opt/cni/bin:/usr/lib/cni")
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            cdi_spec_dirs: flags
                .cdi_spec_dir
                .as_deref()
                .map(|d| {
                    d.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_else(bosun_runtime::cdi::default_dirs),
            registry_config: flags
                .registry_config
                .clone()
                .unwrap_or_else(|| "/etc/bosun/registries.yaml".into()),
            image_credentials: flags
                .image_credentials
                .clone()
                .unwrap_or_else(|| "/etc/bosun/auth.json".into()),
            serialize_image_pulls: file.serialize_image_pulls.unwrap_or(true),
            max_parallel_image_pulls: file.max_parallel_image_pulls,
            image_gc_high_threshold_percent: file.image_gc_high_threshold_percent.unwrap_or(85),
            image_gc_low_threshold_percent: file.image_gc_low_threshold_percent.unwrap_or(80),
            image_minimum_gc_age: duration("imageMinimumGCAge", &file.image_minimum_gc_age, 120)?,
            server: ServerConfig::from_file(&file)?,
            cri_sockets: Vec::new(),
            seccomp_default: file.seccomp_default.unwrap_or(false),
            allowed_unsafe_sysctls: file.allowed_unsafe_sysctls.clone().unwrap_or_default(),
            node_resources: NodeResourceConfig::from_file(&file)?,
            shutdown: ShutdownConfig::from_file(&file)?,
        };
        cfg.cri_sockets = cri_sockets(&cfg.run_dir, file.container_runtime_endpoint.as_deref())?;
        // The kubelet refuses to start with a pattern that is invalid or not namespaced.
        crate::security::sysctl::Allowlist::new(&cfg.allowed_unsafe_sysctls, (0, 0)).map_err(
            |message| ConfigError::Invalid {
                field: "allowedUnsafeSysctls".into(),
                message,
            },
        )?;
        for ip in &cfg.cluster_dns {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    field: "clusterDNS".into(),
                    message: format!("{ip:?} is not an IP address"),
                });
            }
        }
        if !cfg.pod_cidr.contains('/') {
            return Err(ConfigError::Invalid {
                field: "podCIDR".into(),
                message: format!("{:?} is not a CIDR like 10.244.0.0/24", cfg.pod_cidr),
            });
        }
        if cfg.image_gc_high_threshold_percent > 100
            || cfg.image_gc_low_threshold_percent > cfg.image_gc_high_threshold_percent
        {
            return Err(ConfigError::Invalid {
                field: "imageGCLowThresholdPercent".into(),
                message: format!(
                    "need low ({}) <= high ({}) <= 100",
                    cfg.image_gc_low_threshold_percent, cfg.image_gc_high_threshold_percent
                ),
            });
        }
        if cfg.serialize_image_pulls && cfg.max_parallel_image_pulls.is_some_and(|n| n > 1) {
            return Err(ConfigError::Invalid {
                field: "maxParallelImagePulls".into(),
                message: "must be unset or 1 when serializeImagePulls is true".into(),
            });
        }
        if !cfg.cgroup_root.starts_with('/') {
            return Err(ConfigError::Invalid {
                field: "cgroupRoot".into(),
                message: format!("{:?} must be an absolute cgroup path", cfg.cgroup_root),
            });
        }
        Ok((cfg, warnings))
    }
}

/// Reads the `--config` file (none: an empty one), merges the kubelet flags' overrides over it
/// and warns once for each key bosun does not read.
/// The `--config` file when it does not exist (yet): before `kubeadm init` or `join` writes
/// `/var/lib/kubelet/config.yaml`, an enabled kubelet.service starts without it.
pub fn missing_config_file(flags: &Flags) -> Option<PathBuf> {
    let path = flags.config.as_ref()?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(path.clone()),
        _ => None,
    }
}

fn read_file(flags: &Flags, warnings: &mut Vec<String>) -> Result<KubeletConfigFile, ConfigError> {
    let (mut map, path) = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let value: serde_json::Value =
                serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let map = match value {
                serde_json::Value::Object(m) => m,
                serde_json::Value::Null => Default::default(),
                _ => {
                    return Err(ConfigError::Parse {
                        path: path.clone(),
                        message: "not a mapping of KubeletConfiguration fields".into(),
                    })
                }
            };
            (map, path.clone())
        }
        None => (Default::default(), PathBuf::from("(flags)")),
    };
    kubelet::merge(&mut map, &flags.config_overrides);
    let f: KubeletConfigFile =
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if let Some(kind) = &f.kind {
        if kind != "KubeletConfiguration" {
            return Err(ConfigError::Parse {
                path,
                message: format!("kind is {kind:?}, expected KubeletConfiguration"),
            });
        }
    }
    let shown = path.display().to_string();
    let mut unknown: Vec<(&String, &serde_json::Value)> = f.rest.iter().collect();
    unknown.sort_by_key(|(k, _)| *k);
    for (key, value) in unknown {
        warnings.extend(kubelet::config_key_warning(&shown, key, value));
    }
    Ok(f)
}

/// Where the CRI API listens: `<run_dir>/bosun.sock` always, and the path of
/// containerRuntimeEndpoint when it is another `unix://` path (kubeadm's `criSocket`).
fn cri_sockets(run_dir: &Path, endpoint: Option<&str>) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = vec![run_dir.join("bosun.sock")];
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        None => {}
        Some(e) => {
            let path = e
                .strip_prefix("unix://")
                .filter(|p| p.starts_with('/'))
                .ok_or_else(|| ConfigError::Invalid {
                    field: "containerRuntimeEndpoint".into(),
                    message: format!("{e:?} is not a unix:///absolute/path endpoint"),
                })?;
            let path = PathBuf::from(path);
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `10Mi`, `1G`, `512Ki`, `1048576`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult): (&str, u64) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Go-style durations as the kubelet config uses them: `20s`, `1m`, `1m30s`, `500ms`, `2h`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// Is `p` below `dir` (lexically)?
pub fn is_below(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

/// `--node-labels k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label {part:?} is not key=value"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `--register-with-taints key=value:Effect,key:Effect`.
pub fn parse_taints(s: &str) -> Result<Vec<k8s_openapi::api::core::v1::Taint>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kv, effect) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {part:?} has no :Effect"))?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(format!("taint {part:?}: unknown effect {effect}"));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        };
        out.push(k8s_openapi::api::core::v1::Taint {
            key,
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_missing_config_file_is_told_apart() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("config.yaml");
        let flags = Flags {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(missing_config_file(&flags), Some(path.clone()));
        assert_eq!(missing_config_file(&Flags::default()), None);
        std::fs::write(&path, "kind: KubeletConfiguration\n").expect("write");
        assert_eq!(missing_config_file(&flags), None);
        // A dangling symlink is not missing: reading it fails as before.
        let link = tmp.path().join("link.yaml");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).expect("symlink");
        let flags = Flags {
            config: Some(link),
            ..Default::default()
        };
        assert_eq!(missing_config_file(&flags), None);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10Mi"), Some(10 << 20));
        assert_eq!(parse_size("1G"), Some(1_000_000_000));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn file_flags_and_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: /etc/kubernetes/manifests\ncontainerLogMaxSize: 1Mi\n\
             containerLogMaxFiles: 3\nmaxPods: 50\ncpuManagerPolicy: static\nsyncFrequency: 30s\n",
        )
        .expect("write");
        let flags = Flags {
            config: Some(path),
            cgroup_root: Some("/test".into()),
            node_name: Some("Node-A".into()),
            ..Flags::default()
        };
        let (cfg, warnings) = Config::load(&flags).expect("load");
        assert_eq!(
            cfg.manifests,
            Some(PathBuf::from("/etc/kubernetes/manifests"))
        );
        assert_eq!(cfg.container_log_max_size, 1 << 20);
        assert_eq!(cfg.container_log_max_files, 3);
        assert_eq!(cfg.cgroup_root, "/test");
        assert_eq!(cfg.node_name, "node-a");
        assert_eq!(cfg.sync_frequency, Duration::from_secs(30));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("cpuManagerPolicy"));
        assert_eq!(cfg.max_pods, 50);
    }

    #[test]
    fn security_keys() {
        let (cfg, _) = Config::load(&Flags::default()).expect("load");
        assert!(!cfg.seccomp_default);
        assert!(cfg.allowed_unsafe_sysctls.is_empty());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let load = |text: &str| {
            std::fs::write(&path, text).expect("write");
            Config::load(&Flags {
                config: Some(path.clone()),
                ..Flags::default()
            })
        };
        let (cfg, warnings) = load(
            "kind: KubeletConfiguration\nseccompDefault: true\n\
             allowedUnsafeSysctls: [net.core.somaxconn, 'kernel.msg*']\n",
        )
        .expect("load");
        assert!(cfg.seccomp_default);
        assert_eq!(
            cfg.allowed_unsafe_sysctls,
            ["net.core.somaxconn", "kernel.msg*"]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        // A sysctl that is not namespaced stops the node, as it stops the kubelet.
        let err = load("kind: KubeletConfiguration\nallowedUnsafeSysctls: [vm.swappiness]\n")
            .expect_err("not namespaced")
            .to_string();
        assert!(
            err.contains("allowedUnsafeSysctls") && err.contains("vm.swappiness"),
            "{err}"
        );
    }

    #[test]
    fn server_keys_and_defaults() {
        let (cfg, _) = Config::load(&Flags::default()).expect("load");
        let d = &cfg.server;
        assert_eq!((d.port, d.address.as_str()), (10250, "0.0.0.0"));
        assert_eq!(
            (d.healthz_port, d.healthz_bind_address.as_str()),
            (10248, "127.0.0.1")
        );
        assert!(!d.anonymous_auth && d.webhook_authn && d.authz_webhook);
        assert_eq!(d.authn_cache_ttl, Duration::from_secs(120));
        assert_eq!(d.authz_cache_authorized_ttl, Duration::from_secs(300));
        assert_eq!(d.authz_cache_unauthorized_ttl, Duration::from_secs(30));
        assert_eq!(
            d.streaming_connection_idle_timeout,
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(
            (d.header_timeout, d.idle_timeout),
            (Duration::from_secs(32), Duration::from_secs(90))
        );
        assert!((16..=1024).contains(&d.max_unauthenticated_connections));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "kind: KubeletConfiguration\nport: 20250\nhealthzPort: 20248\n\
             authentication:\n  x509: {clientCAFile: /ca.crt}\n  anonymous: {enabled: true}\n\
             \x20 webhook: {enabled: false, cacheTTL: 10s}\n\
             authorization:\n  mode: AlwaysAllow\n  webhook: {cacheAuthorizedTTL: 1m}\n\
             streamingConnectionIdleTimeout: 5m\n",
        )
        .expect("write");
        let flags = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let (cfg, warnings) = Config::load(&flags).expect("load");
        assert!(warnings.is_empty(), "{warnings:?}");
        let s = &cfg.server;
        assert_eq!((s.port, s.healthz_port), (20250, 20248));
        assert_eq!(s.client_ca_file, Some(PathBuf::from("/ca.crt")));
        assert!(s.anonymous_auth && !s.webhook_authn && !s.authz_webhook);
        assert_eq!(s.authn_cache_ttl, Duration::from_secs(10));
        assert_eq!(s.authz_cache_authorized_ttl, Duration::from_secs(60));
        assert_eq!(
            s.streaming_connection_idle_timeout,
            Duration::from_secs(300)
        );
        std::fs::write(
            &path,
            "kind: KubeletConfiguration\nauthorization: {mode: RBAC}\n",
        )
        .expect("write");
        assert!(Config::load(&flags).is_err());
    }

    #[test]
    fn kubeadm_config_and_flags() {
        // The files the real kubeadm (v1.36.5, `kubeadm init phase kubelet-start`) wrote.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubeadm");
        let env = std::fs::read_to_string(dir.join("kubeadm-flags.env")).expect("env file");
        let line = env
            .trim()
            .trim_start_matches("KUBELET_KUBEADM_ARGS=")
            .trim_matches('"');
        let mut args = vec![
            "kubelet".to_string(),
            format!("--config={}", dir.join("config.yaml").display()),
            "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock".into(),
        ];
        args.extend(line.split_whitespace().map(String::from));
        let split = kubelet::split_args(args).expect("split");
        assert!(split.warnings.is_empty(), "{:?}", split.warnings);
        let flags = Flags {
            config: Some(dir.join("config.yaml")),
            config_overrides: split.overrides,
            ..Flags::default()
        };
        let (cfg, warnings) = Config::load(&flags).expect("load");
        // Every field kubeadm sets is read or accepted; only its systemd cgroup driver is
        // worth a word.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("cgroupDriver"), "{warnings:?}");
        assert_eq!(
            cfg.manifests.as_deref(),
            Some(Path::new("/etc/kubernetes/manifests"))
        );
        assert_eq!(cfg.cluster_dns, vec!["10.96.0.10".to_string()]);
        assert_eq!(cfg.cluster_domain, "cluster.local");
        // kubeadm's 0s are zero values: the defaults apply.
        assert_eq!(cfg.sync_frequency, Duration::from_secs(10));
        assert_eq!(cfg.file_check_frequency, Duration::from_secs(20));
        assert_eq!(cfg.image_minimum_gc_age, Duration::from_secs(120));
        let s = &cfg.server;
        assert_eq!(s.authn_cache_ttl, Duration::from_secs(120));
        assert_eq!(s.authz_cache_authorized_ttl, Duration::from_secs(300));
        assert_eq!(s.authz_cache_unauthorized_ttl, Duration::from_secs(30));
        assert_eq!(
            s.client_ca_file.as_deref(),
            Some(Path::new("/etc/kubernetes/pki/ca.crt"))
        );
        assert!(s.webhook_authn && s.authz_webhook && !s.anonymous_auth);
        assert_eq!(
            (s.healthz_bind_address.as_str(), s.healthz_port),
            ("127.0.0.1", 10248)
        );
        // The flag wins over the file's unix:///run/bosun/bosun.sock; both sockets are served
        // when they differ, the file's own is bosun's default.
        assert_eq!(
            cfg.cri_sockets,
            vec![
                PathBuf::from("/run/bosun/bosun.sock"),
                PathBuf::from("/var/run/containerd/containerd.sock")
            ]
        );
        let (cfg, _) = Config::load(&Flags {
            config: Some(dir.join("config.yaml")),
            ..Flags::default()
        })
        .expect("load");
        assert_eq!(
            cfg.cri_sockets,
            vec![PathBuf::from("/run/bosun/bosun.sock")]
        );
        let bad = Flags {
            config_overrides: kubelet::split_args(vec![
                "kubelet".into(),
                "--container-runtime-endpoint=tcp://1.2.3.4:5".into(),
            ])
            .expect("split")
            .overrides,
            ..Flags::default()
        };
        let err = Config::load(&bad).expect_err("tcp endpoint");
        assert!(
            err.to_string().contains("containerRuntimeEndpoint"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "kind: KubeletConfiguration\ncontainerLogMaxSize: lots\n",
        )
        .expect("write");
        let flags = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let err = Config::load(&flags).expect_err("must fail");
        assert!(err.to_string().contains("containerLogMaxSize"), "{err}");
        std::fs::write(&path, "kind: Pod\n").expect("write");
        let err = Config::load(&flags).expect_err("must fail");
        assert!(err.to_string().contains("KubeletConfiguration"), "{err}");
    }

    #[test]
    fn eviction_and_reservation_keys() {
        // Without a file (or without evictionHard): the kubelet's defaults.
        let (cfg, _) = Config::load(&Flags::default()).expect("load");
        let r = &cfg.node_resources;
        assert_eq!(r.eviction_hard.len(), 5);
        assert_eq!(r.eviction_hard["imagefs.available"], "15%");
        assert!(r.enforce_pods && r.local_storage_capacity_isolation);
        assert_eq!(
            r.eviction_pressure_transition_period,
            Duration::from_secs(300)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let load = |text: &str| {
            std::fs::write(&path, text).expect("write");
            Config::load(&Flags {
                config: Some(path.clone()),
                ..Flags::default()
            })
        };
        let (cfg, warnings) = load(
            "kind: KubeletConfiguration\nevictionHard: {memory.available: 200Mi}\n\
             evictionSoft: {nodefs.available: 20%}\nevictionSoftGracePeriod: {nodefs.available: 1m30s}\n\
             evictionMinimumReclaim: {memory.available: 50Mi}\nevictionPressureTransitionPeriod: 30s\n\
             evictionMaxPodGracePeriod: 20\nkubeReserved: {cpu: 100m}\nsystemReserved: {memory: 1Gi}\n\
             enforceNodeAllocatable: [none]\nlocalStorageCapacityIsolation: false\n",
        )
        .expect("load");
        assert!(warnings.is_empty(), "{warnings:?}");
        let r = &cfg.node_resources;
        // A file's evictionHard replaces the defaults...
        assert_eq!(r.eviction_hard.len(), 1);
        assert_eq!(r.eviction_soft["nodefs.available"], "20%");
        assert_eq!(
            r.eviction_soft_grace_period["nodefs.available"],
            Duration::from_secs(90)
        );
        assert_eq!(r.eviction_minimum_reclaim["memory.available"], "50Mi");
        assert_eq!(
            r.eviction_pressure_transition_period,
            Duration::from_secs(30)
        );
        assert_eq!(r.eviction_max_pod_grace_period, 20);
        assert_eq!(r.kube_reserved["cpu"], "100m");
        assert_eq!(r.system_reserved["memory"], "1Gi");
        assert!(!r.enforce_pods && !r.local_storage_capacity_isolation);
        // ...unless mergeDefaultEvictionSettings fills in the rest.
        let (cfg, _) = load(
            "kind: KubeletConfiguration\nevictionHard: {memory.available: 200Mi}\nmergeDefaultEvictionSettings: true\n",
        )
        .expect("load");
        assert_eq!(cfg.node_resources.eviction_hard.len(), 5);
        assert_eq!(
            cfg.node_resources.eviction_hard["memory.available"],
            "200Mi"
        );
        for (bad, field) in [
            (
                "enforceNodeAllocatable: [system-reserved]",
                "enforceNodeAllocatable",
            ),
            (
                "enforceNodeAllocatable: [pods, none]",
                "enforceNodeAllocatable",
            ),
            (
                "evictionSoftGracePeriod: {memory.available: soon}",
                "evictionSoftGracePeriod",
            ),
            (
                "evictionPressureTransitionPeriod: later",
                "evictionPressureTransitionPeriod",
            ),
            ("evictionMaxPodGracePeriod: -1", "evictionMaxPodGracePeriod"),
        ] {
            let err = load(&format!("kind: KubeletConfiguration\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn labels_and_taints_parse() {
        let l = parse_labels("a=b, c=d").expect("labels");
        assert_eq!(l.get("c").map(String::as_str), Some("d"));
        assert!(parse_labels("nope").is_err());
        let t = parse_taints("dedicated=gpu:NoSchedule,spot:NoExecute").expect("taints");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].value.as_deref(), Some("gpu"));
        assert_eq!(t[1].key, "spot");
        assert!(parse_taints("x:Sometimes").is_err());
    }

    #[test]
    fn shutdown_keys_defaults_and_the_kubelets_validation() {
        let (cfg, _) = Config::load(&Flags::default()).expect("load");
        assert_eq!(cfg.shutdown, ShutdownConfig::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let load = |text: &str| {
            std::fs::write(&path, format!("kind: KubeletConfiguration\n{text}")).expect("write");
            Config::load(&Flags {
                config: Some(path.clone()),
                ..Flags::default()
            })
        };
        let (cfg, warnings) =
            load("shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n").expect("load");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            (
                cfg.shutdown.grace_period,
                cfg.shutdown.grace_period_critical_pods
            ),
            (Duration::from_secs(30), Duration::from_secs(10))
        );
        let (cfg, _) = load(
            "shutdownGracePeriodByPodPriority:\n\
             - {priority: 100000, shutdownGracePeriodSeconds: 10}\n\
             - {priority: 0, shutdownGracePeriodSeconds: 20}\n",
        )
        .expect("load");
        assert_eq!(
            cfg.shutdown.by_pod_priority,
            [
                ShutdownGracePeriodByPodPriority {
                    priority: 100000,
                    shutdown_grace_period_seconds: 10
                },
                ShutdownGracePeriodByPodPriority {
                    priority: 0,
                    shutdown_grace_period_seconds: 20
                }
            ]
        );
        for (text, message) in [
            (
                "shutdownGracePeriod: 10s\nshutdownGracePeriodCriticalPods: 20s\n",
                "shutdownGracePeriodCriticalPods 20s must be <= shutdownGracePeriod 10s",
            ),
            (
                "shutdownGracePeriod: 500ms\n",
                "shutdownGracePeriod 500ms must be either zero or otherwise >= 1 sec",
            ),
            (
                "shutdownGracePeriod: 2s\nshutdownGracePeriodCriticalPods: 100ms\n",
                "shutdownGracePeriodCriticalPods 100ms must be either zero or otherwise >= 1 sec",
            ),
            (
                "shutdownGracePeriod: 30s\nshutdownGracePeriodByPodPriority: [{priority: 0, shutdownGracePeriodSeconds: 5}]\n",
                "Cannot specify both shutdownGracePeriodByPodPriority and shutdownGracePeriod at the same time",
            ),
            ("shutdownGracePeriod: -5s\n", "is not a duration"),
        ] {
            let err = load(text).expect_err(text).to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
    }
}
