//! The `bosun` binary.
//!
//! `main` decides the process's role before any thread or async runtime exists: the keeper, exec
//! and sandbox helpers must stay single-threaded because libcontainer clones without exec (the
//! child of a multi-threaded process may inherit a lock another thread held). Only then is the
//! tokio runtime built and the agent put together (`bosun::assembly`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bosun::config::{Config, Flags};
use bosun::{assembly, cli};

#[derive(Parser)]
#[command(
    name = "bosun",
    version,
    about = "A lightweight Kubernetes node agent",
    long_about = "A lightweight Kubernetes node agent. Without a subcommand, bosun joins a cluster \
                  like a kubelet (--kubeconfig / --bootstrap-kubeconfig, --config ...).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
}

/// The kubelet flags of cluster mode.
#[derive(clap::Args, Clone, Debug, Default)]
struct NodeArgs {
    #[command(flatten)]
    common: Common,
    /// The node's kubeconfig (written by the TLS bootstrap when missing).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A kubeconfig with a bootstrap token, for the TLS bootstrap.
    #[arg(long)]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// Folder of the client certificate and key (default <root-dir>/pki).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// The node's InternalIP (default: the address of the default route's interface).
    #[arg(long)]
    node_ip: Option<String>,
    /// Labels added at registration: k=v,k2=v2.
    #[arg(long)]
    node_labels: Option<String>,
    /// Taints added at registration: key=value:Effect,...
    #[arg(long)]
    register_with_taints: Option<String>,
    /// Static pod folder in cluster mode (staticPodPath).
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// Accepted for kubelet compatibility; bosun logs with --log / RUST_LOG.
    #[arg(short = 'v', long = "v")]
    verbosity: Option<u8>,
}

#[derive(clap::Args, Clone, Debug, Default)]
struct Common {
    /// KubeletConfiguration file (kubelet.config.k8s.io/v1beta1).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The kubelet's root folder: pod folders and volumes.
    #[arg(long)]
    root_dir: Option<PathBuf>,
    /// bosun's volatile state: keepers, sandboxes, pod status.
    #[arg(long, env = "BOSUN_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// bosun's persistent data: the image store.
    #[arg(long, env = "BOSUN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Pod log folder (CRI layout).
    #[arg(long, env = "BOSUN_POD_LOGS_DIR")]
    pod_logs_dir: Option<PathBuf>,
    /// Folder of /var/log/containers-style symlinks.
    #[arg(long)]
    container_logs_dir: Option<PathBuf>,
    /// The cgroup under which `kubepods` is created.
    #[arg(long)]
    cgroup_root: Option<String>,
    /// Node name (default: the hostname, lowercased).
    #[arg(long)]
    hostname_override: Option<String>,
    /// Subnet of the default CNI network bosun writes when the conf folder has none (cluster
    /// mode: the Node's spec.podCIDR when the controller-manager allocated one).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Cluster mode: write bosun's default bridge network when the CNI conf folder has none
    /// (otherwise the node stays NotReady until a config appears; standalone mode always does).
    #[arg(long, env = "BOSUN_DEFAULT_CNI_NETWORK")]
    default_cni_network: bool,
    /// Folder of CNI network configs (default /etc/cni/net.d).
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// Colon-separated folders of CNI plugins (default /opt/cni/bin:/usr/lib/cni).
    #[arg(long)]
    cni_bin_dir: Option<String>,
    /// Colon-separated folders of CDI spec files, later ones taking precedence (default
    /// /etc/cdi:/var/run/cdi).
    #[arg(long)]
    cdi_spec_dir: Option<String>,
    /// Registry config (YAML): mirrors, plain-HTTP registries, private CAs.
    #[arg(long, env = "BOSUN_REGISTRY_CONFIG")]
    registry_config: Option<PathBuf>,
    /// Docker-style credentials file (`{"auths": {...}}`) for registry logins.
    #[arg(long, env = "BOSUN_IMAGE_CREDENTIALS")]
    image_credentials: Option<PathBuf>,
}

impl Common {
    fn flags(&self, manifests: Option<PathBuf>) -> Flags {
        Flags {
            kubeconfig: None,
            bootstrap_kubeconfig: None,
            cert_dir: None,
            node_ip: None,
            node_labels: None,
            register_with_taints: None,
            config: self.config.clone(),
            manifests,
            node_name: self.hostname_override.clone(),
            root_dir: self.root_dir.clone(),
            run_dir: self.run_dir.clone(),
            data_dir: self.data_dir.clone(),
            pod_logs_dir: self.pod_logs_dir.clone(),
            container_logs_dir: self.container_logs_dir.clone(),
            cgroup_root: self.cgroup_root.clone(),
            pod_cidr: self.pod_cidr.clone(),
            default_cni_network: self.default_cni_network,
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bin_dir: self.cni_bin_dir.clone(),
            cdi_spec_dir: self.cdi_spec_dir.clone(),
            registry_config: self.registry_config.clone(),
            image_credentials: self.image_credentials.clone(),
            config_overrides: Default::default(),
        }
    }

    fn load(&self, manifests: Option<PathBuf>) -> anyhow::Result<Config> {
        let (cfg, warnings) = Config::load(&self.flags(manifests))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(cfg)
    }
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the pods of a manifest folder (the kubelet's staticPodPath), without a cluster.
    Standalone {
        /// The manifest folder.
        #[arg(long)]
        manifests: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// List pods with their containers, states, restart counts and exit codes.
    Pods {
        /// Print the full pod objects as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print a container's logs.
    Logs {
        /// Pod name (or namespace/name).
        pod: String,
        /// Container name (needed when the pod has several).
        container: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// The previous attempt's log.
        #[arg(short, long)]
        previous: bool,
        /// Prefix each line with its timestamp.
        #[arg(long)]
        timestamps: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List images in the local store (size, last use); `images gc` collects unused ones.
    Images {
        #[command(subcommand)]
        op: Option<ImagesOp>,
        #[command(flatten)]
        common: Common,
    },
    /// Pull an image from its registry into the local store.
    Pull {
        /// The image reference, as in a pod (`busybox`, `127.0.0.1:5000/app:v1`, `x@sha256:...`).
        reference: String,
        #[command(flatten)]
        common: Common,
    },
    /// Image operations.
    Image {
        #[command(subcommand)]
        op: ImageOp,
    },
}

#[derive(Subcommand)]
enum ImagesOp {
    /// Remove unused images (least recently used first) when usage is over the high threshold.
    Gc {
        /// High threshold in percent (default: imageGCHighThresholdPercent).
        #[arg(long)]
        high: Option<u8>,
        /// Low threshold in percent (default: imageGCLowThresholdPercent).
        #[arg(long)]
        low: Option<u8>,
        /// Minimum age since last use (default: imageMinimumGCAge), e.g. `0s`.
        #[arg(long)]
        min_age: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum ImageOp {
    /// Import an OCI image layout folder into the store under a reference.
    Import {
        /// The OCI image layout folder.
        layout: PathBuf,
        /// The reference pods will use (e.g. `busybox` or `localhost/test:1`).
        reference: String,
        /// Which tag of the layout (its `org.opencontainers.image.ref.name`); default: the only one.
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    // Helper roles first: no thread may exist in these processes.
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = bosun_runtime::helper_role(&args) {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // The kubelet's flags that bosun takes as config keys or ignores, and `--version` in the
    // kubelet's format (kubeadm's preflight reads it).
    let kubelet = match bosun::config::kubelet::split_args(args) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("bosun: {e}");
            return ExitCode::from(2);
        }
    };
    match kubelet.version {
        Some(false) => return print_line(&bosun::config::kubelet::version_line()),
        Some(true) => return print_line(&bosun::config::kubelet::version_raw()),
        None => {}
    }
    // One descriptor per running pod: up to the hard limit before any thread exists.
    let nofile = bosun_runtime::sys::raise_nofile_soft_limit();
    let cli = Cli::parse_from(&kubelet.args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match nofile {
        Ok(Some((from, to))) => tracing::debug!(from, to, "raised the soft open files limit"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the soft open files limit"),
    }
    // Still single-threaded: may set SSL_CERT_FILE (see the module).
    bosun::tls_roots::ensure();
    for w in &kubelet.warnings {
        tracing::warn!("{w}");
    }
    let result =
        match cli.command {
            None => {
                let n = cli.node;
                let mut flags = n.common.flags(n.pod_manifest_path.clone());
                flags.kubeconfig = n.kubeconfig;
                flags.bootstrap_kubeconfig = n.bootstrap_kubeconfig;
                flags.cert_dir = n.cert_dir;
                flags.node_ip = n.node_ip;
                flags.node_labels = n.node_labels;
                flags.register_with_taints = n.register_with_taints;
                flags.config_overrides = kubelet.overrides;
                match bosun::config::missing_config_file(&flags) {
                    // Not written yet (kubeadm does that): the CRI API meanwhile.
                    Some(path) => {
                        let waiting = bosun::config::Flags {
                            config: None,
                            ..flags.clone()
                        };
                        Config::load(&waiting)
                            .map_err(anyhow::Error::from)
                            .and_then(|(cfg, _)| block_on(assembly::wait_for_config(cfg, path)))
                    }
                    None => Config::load(&flags).map_err(anyhow::Error::from).and_then(
                        |(cfg, warnings)| {
                            for w in warnings {
                                tracing::warn!("{w}");
                            }
                            block_on(assembly::cluster_node(cfg))
                        },
                    ),
                }
            }
            Some(Command::Standalone { manifests, common }) => common
                .load(Some(manifests))
                .and_then(|cfg| block_on(assembly::standalone(cfg))),
            Some(Command::Pods { json, common }) => {
                common.load(None).and_then(|cfg| cli::pods(&cfg, json))
            }
            Some(Command::Logs {
                pod,
                container,
                namespace,
                tail,
                follow,
                previous,
                timestamps,
                common,
            }) => common.load(None).and_then(|cfg| {
                cli::logs(
                    &cfg,
                    &cli::LogsArgs {
                        pod,
                        container,
                        namespace,
                        tail,
                        follow,
                        previous,
                        timestamps,
                    },
                )
            }),
            Some(Command::Images { op: None, common }) => {
                common.load(None).and_then(|cfg| cli::images(&cfg))
            }
            Some(Command::Images {
                op:
                    Some(ImagesOp::Gc {
                        high,
                        low,
                        min_age,
                        common,
                    }),
                ..
            }) => common
                .load(None)
                .and_then(|cfg| cli::images_gc(&cfg, high, low, min_age.as_deref())),
            Some(Command::Pull { reference, common }) => common
                .load(None)
                .and_then(|cfg| block_on(cli::pull(cfg, reference))),
            Some(Command::Image {
                op:
                    ImageOp::Import {
                        layout,
                        reference,
                        tag,
                        common,
                    },
            }) => common
                .load(None)
                .and_then(|cfg| cli::import(&cfg, &layout, &reference, tag.as_deref())),
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `bosun logs | head`: a closed pipe is the reader's choice, not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(|io| io.kind())
                == Some(std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bosun: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_line(line: &str) -> ExitCode {
    println!("{line}");
    ExitCode::SUCCESS
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(f)
}
