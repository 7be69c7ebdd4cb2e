//! Assembly: the one place that builds the agent's parts and wires them together, for the
//! two ways bosun runs (standalone on a manifest folder, or as a cluster's node). `main` calls
//! it; nothing else in the crate does, so the parts it joins (runtime, images, pod manager,
//! cluster tasks, HTTP server) never need to know each other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bosun_runtime::{HostRuntime, RuntimePaths};
use tokio::sync::watch;

use crate::cluster;
use crate::config::Config;
use crate::images::ImageManager;
use crate::pods::source::DesiredPods;
use crate::pods::{self, Ctx};

pub fn runtime_paths(cfg: &Config) -> anyhow::Result<RuntimePaths> {
    let exe = std::env::current_exe().context("cannot find my own binary")?;
    Ok(runtime_paths_for(cfg, &exe))
}

/// [`runtime_paths`] for the agent binary `exe`: keepers and helpers both run `bosun-keeper`.
fn runtime_paths_for(cfg: &Config, exe: &Path) -> RuntimePaths {
    let keeper = keeper_binary(exe);
    RuntimePaths {
        run_dir: cfg.run_dir.clone(),
        data_dir: cfg.data_dir.clone(),
        pod_logs_dir: cfg.pod_logs_dir.clone(),
        container_logs_dir: cfg.container_logs_dir.clone(),
        cgroup_root: cfg.cgroup_root.clone(),
        helper_binary: keeper.clone(),
        keeper_binary: keeper,
    }
}

/// The keeper and helper binary: `bosun-keeper` next to the agent (both packages install it
/// there; cargo builds it next to `bosun`). Without one the agent's own binary serves
/// (`bosun __keeper`, `bosun __sandbox`, ...), at the cost of the agent's relocated data in every
/// keeper and a slower start of each helper.
pub fn keeper_binary(exe: &Path) -> PathBuf {
    let keeper = exe.with_file_name(KEEPER_BINARY);
    if is_executable(&keeper) {
        keeper
    } else {
        exe.to_path_buf()
    }
}

/// The file name of the keeper binary.
pub const KEEPER_BINARY: &str = "bosun-keeper";

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How the agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On a manifest folder: bosun writes its default CNI network.
    Standalone,
    /// A cluster's node.
    Cluster,
    /// A cluster's node before its `--config` file exists: only the CRI API is served.
    CriOnly,
}

/// Builds the agent's shared context: runtime (adopting what runs), images (with their GC
/// loop), the pod network's state (with its poll loop), folders. The image manager is also
/// returned for what reads the store itself. In cluster mode the Node's pod CIDR comes from
/// the apiserver and bosun writes no CNI config unless `--default-cni-network` says so.
pub async fn context(cfg: Config, mode: Mode) -> anyhow::Result<(Ctx, Arc<ImageManager>)> {
    let cluster = mode != Mode::Standalone;
    // Orphans re-parented to us (a keeper's helpers) are reaped by the reaper.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    bosun_runtime::reaper::install().context("installing the child reaper")?;
    for dir in [
        &cfg.root_dir,
        &cfg.run_dir,
        &cfg.data_dir,
        &cfg.pod_logs_dir,
        &cfg.container_logs_dir,
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The pods' state (their specs, literal env values included) is for the agent alone: the
    // run folder above it is searchable (0711) for pods in user namespaces of their own.
    let pods_state = cfg.run_dir.join("pods");
    std::fs::create_dir_all(&pods_state)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pods_state, std::fs::Permissions::from_mode(0o700))
        })
        .with_context(|| format!("creating {}", pods_state.display()))?;
    let paths = runtime_paths(&cfg)?;
    if paths.keeper_binary.file_name() != Some(std::ffi::OsStr::new(KEEPER_BINARY)) {
        tracing::warn!(
            missing = %paths.keeper_binary.with_file_name(KEEPER_BINARY).display(),
            "no bosun-keeper next to the agent: containers are kept by the agent's own binary, \
             which costs each one more memory"
        );
    }
    let runtime = HostRuntime::new(
        paths,
        bosun_runtime::container::RuntimeOptions {
            log_max_size: cfg.container_log_max_size,
            log_max_files: cfg.container_log_max_files,
            cdi_spec_dirs: cfg.cdi_spec_dirs.clone(),
            network: bosun_runtime::container::NetworkOptions {
                cni: bosun_runtime::cni::CniConfig {
                    conf_dir: cfg.cni_conf_dir.clone(),
                    bin_dirs: cfg.cni_bin_dirs.clone(),
                },
            },
        },
    )
    .await
    .context("starting the runtime")?;
    let images =
        Arc::new(crate::images::ImageManager::new(&cfg).context("setting up image pulls")?);
    let runtime: Arc<dyn bosun_runtime::PodRuntime> = Arc::new(runtime);
    // Image GC every 5 minutes, as the kubelet (not while only the CRI API is served: the
    // images pulled for pods not made yet are what kubeadm asked for).
    if mode != Mode::CriOnly {
        tokio::spawn(crate::images::gc_loop(
            runtime.clone(),
            images.clone(),
            Duration::from_secs(300),
        ));
    }
    let security = crate::security::NodeSecurity::new(
        &cfg.allowed_unsafe_sysctls,
        cfg.seccomp_default,
        &cfg.root_dir,
        bosun_runtime::seccomp::Target::host().kernel,
        bosun_runtime::apparmor::is_enabled(),
    )
    .map_err(|message| anyhow::anyhow!("allowedUnsafeSysctls: {message}"))?;
    let userns = match user_namespaces(&cfg) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::warn!(error = %e, "no user namespaces for pods with hostUsers: false");
            None
        }
    };
    // The node's resources: an invalid reservation or eviction setting stops the agent, as it
    // stops the kubelet.
    let resources =
        crate::pods::eviction::NodeResources::new(&cfg, crate::pods::eviction::host_capacity(&cfg))
            .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let pod_network = Arc::new(crate::podnet::PodNetwork::new(crate::podnet::Settings {
        conf_dir: cfg.cni_conf_dir.clone(),
        default_network: !cluster || cfg.default_cni_network,
        configured_cidr: cfg.pod_cidr.clone(),
        cluster,
    }));
    tokio::spawn(pod_network.clone().run());
    let ctx = Ctx {
        pod_network,
        security,
        userns,
        cfg,
        runtime,
        images: images.clone(),
        node: crate::fieldpath::NodeAllocatable {
            memory_bytes: node_memory(),
            cpu_millis: std::thread::available_parallelism()
                .map(|n| n.get() as u64 * 1000)
                .unwrap_or(1000),
        },
        status_tx: None,
        node_shutdown: Default::default(),
        status_flush: None,
        objects: None,
        volumes: None,
        volume_stats: None,
        events_tx: None,
        devices: None,
        dra: None,
        resources: Arc::new(resources),
        allocated: Default::default(),
    };
    Ok((ctx, images))
}

/// The user that owns the node's ID pool in `/etc/subuid` and `/etc/subgid`, as for the
/// kubelet.
const USERNS_POOL_USER: &str = "kubelet";

/// The allocator of pods' ID ranges: the `kubelet` user's subordinate IDs (else the kubelet's
/// default pool), persisted in `<data-dir>/userns.json`.
fn user_namespaces(
    cfg: &Config,
) -> Result<bosun_runtime::userns::Allocator, bosun_runtime::userns::UsernsError> {
    use bosun_runtime::userns::{Allocator, IdPool, DEFAULT_IDS_PER_POD};
    let uid = nix::unistd::User::from_name(USERNS_POOL_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    let pool = IdPool::from_subid_files(
        Path::new("/etc/subuid"),
        Path::new("/etc/subgid"),
        USERNS_POOL_USER,
        uid,
        DEFAULT_IDS_PER_POD,
        cfg.max_pods,
    )?;
    Allocator::open(cfg.data_dir.join("userns.json"), pool)
}

pub fn node_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30)
}

/// The pod resources API on `<root-dir>/pod-resources/kubelet.sock` (a node without it still
/// runs its pods, as a kubelet whose socket cannot be made).
fn serve_pod_resources(ctx: &Arc<Ctx>) {
    let source = Arc::new(crate::podresources::NodeSource { ctx: ctx.clone() });
    if let Err(e) = crate::podresources::serve(&ctx.cfg.root_dir, source) {
        tracing::warn!(error = %e, "no pod resources API");
    }
}

/// Runs the pods of the manifest folder until SIGTERM/SIGINT (pods keep running after).
pub async fn standalone(cfg: Config) -> anyhow::Result<()> {
    let (ctx, images) = context(cfg, Mode::Standalone).await?;
    let ctx = Arc::new(ctx);
    serve_pod_resources(&ctx);
    crate::cri::serve(ctx.clone(), images, &ctx.cfg.cri_sockets)?;
    let manifests = ctx
        .cfg
        .manifests
        .clone()
        .context("no manifest folder (--manifests or staticPodPath)")?;
    tracing::info!(manifests = %manifests.display(), node = %ctx.cfg.node_name, "bosun standalone starting");
    let (ftx, frx) = watch::channel(None);
    let src = pods::source::FolderSource::new(manifests, ctx.cfg.node_name.clone())
        .with_errors_in(&ctx.cfg.run_dir);
    tokio::spawn(pods::source::run(src, ctx.cfg.file_check_frequency, ftx));
    let (tx, rx) = watch::channel(None);
    tokio::spawn(pods::source::merge(None, Some(frx), tx));
    pods::serve(ctx, rx).await
}

/// A cluster node whose `--config` file does not exist yet (an enabled kubelet.service before
/// `kubeadm init` or `join` writes it): serves the CRI API (kubeadm's preflight checks the
/// socket, its image pulls go through it) with the flags' settings, looks for the file every
/// second, and once it is there exits, for the service manager to start bosun again: the unit's
/// command line then comes from the files kubeadm wrote with it (`kubeadm-flags.env`: the node's
/// name, its address, ...), which a restart in place with the old arguments would miss.
pub async fn wait_for_config(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    tracing::warn!(
        config = %path.display(),
        "the config file does not exist yet: serving the CRI API until it does"
    );
    // One TLS stack for image pulls, as in cluster mode.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ctx, images) = context(cfg, Mode::CriOnly).await?;
    let ctx = Arc::new(ctx);
    crate::cri::serve(ctx.clone(), images, &ctx.cfg.cri_sockets)?;
    while crate::config::missing_config_file(&crate::config::Flags {
        config: Some(path.clone()),
        ..Default::default()
    })
    .is_some()
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::info!(
        config = %path.display(),
        "the config file exists now: exiting for the service manager to start bosun with it"
    );
    Ok(())
}

/// Runs bosun as a cluster node until SIGTERM/SIGINT (pods keep running after): credentials,
/// the Node, the pod manager with the apiserver's pods and the static ones, the HTTP API.
pub async fn cluster_node(cfg: Config) -> anyhow::Result<()> {
    // Two TLS stacks are linked (ring for kube, aws-lc-rs through oci-client): pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = cfg.kubeconfig.clone().context(
        "cluster mode needs --kubeconfig (and --bootstrap-kubeconfig for a TLS bootstrap)",
    )?;
    let creds = cluster::bootstrap::Paths {
        kubeconfig,
        bootstrap_kubeconfig: cfg.bootstrap_kubeconfig.clone(),
        cert_dir: cfg.cert_dir.clone(),
    };
    let node_name = cfg.node_name.clone();
    // The apiserver may not be up yet: retry with backoff, never give up.
    let mut delay = Duration::from_secs(1);
    let (client, rotate_at) = loop {
        match cluster::bootstrap::client(&creds, &node_name).await {
            Ok(c) => break c,
            Err(e @ cluster::bootstrap::BootstrapError::NoCredentials { .. }) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot get node credentials");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let mut facts = cluster::node::NodeFacts::gather(
        node_memory(),
        &node_name,
        cfg.node_ip.clone(),
        &cfg.node_labels,
        cfg.register_with_taints.clone(),
        &cfg.root_dir,
        cfg.max_pods,
    );
    facts.port = i32::from(cfg.server.port);
    // The allocatable registered with the Node (the agent's context computes the same).
    let resources =
        crate::pods::eviction::NodeResources::new(&cfg, crate::pods::eviction::host_capacity(&cfg))
            .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    facts.allocatable = crate::admission::to_quantities(&resources.allocatable);
    // One measure of the capacity for both (the root dir may not exist yet).
    let storage = resources.capacity.get(crate::admission::EPHEMERAL_STORAGE);
    facts.ephemeral_storage_bytes = storage.copied().unwrap_or(0).max(0) as u64;
    // The features the apiserver checks a node for before it accepts a request that needs
    // them (KEP-5328's node declared features, sorted by name as the kubelet's list).
    facts.declared_features = vec![
        crate::server::WEBSOCKET_FEATURE.to_string(),
        crate::pods::resize::INIT_CONTAINER_RESIZE_FEATURE.to_string(),
    ];
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut ctx, images) = context(cfg, Mode::Cluster).await?;
    ctx.status_tx = Some(status_tx);
    let (flush_tx, flush_rx) = tokio::sync::mpsc::unbounded_channel();
    ctx.status_flush = Some(flush_tx);
    // The root dir is a shared mount before any pod's volume is mounted below it, as the
    // kubelet makes it at start (MakeRShared): made later, for the first Bidirectional
    // container (a CSI driver), its bind would cover the volumes already mounted there (the
    // driver pod's own), which then could not be unmounted through their paths.
    if let Err(e) = bosun_volumes::ensure_shared_mount(&ctx.cfg.root_dir) {
        tracing::warn!(root_dir = %ctx.cfg.root_dir.display(), error = %e, "cannot make the root dir a shared mount");
    }
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    // DRA drivers' kubelet plugins register in the plugins registry beside the CSI drivers.
    let dra_plugins = crate::dra::Plugins::default();
    let dra = crate::dra::DraManager::new(
        &ctx.cfg.root_dir,
        Arc::new(crate::dra::ApiClaims(client.clone())),
        Arc::new(dra_plugins.clone()),
    );
    dra.spawn_retries();
    ctx.dra = Some(Arc::new(dra));
    let csi = cluster::csi::Csi::start(
        client.clone(),
        node_name.clone(),
        ctx.cfg.root_dir.clone(),
        Some(events_tx.clone()),
        vec![Arc::new(dra_plugins)],
    );
    let volumes_in_use = csi.volumes_in_use_fn();
    let objects = Arc::new(cluster::objects::ClusterObjects::new(client.clone()));
    let volumes = Arc::new(cluster::volumes::ClusterVolumes::new(
        client.clone(),
        objects.clone(),
        Some(csi),
    ));
    ctx.objects = Some(objects);
    ctx.volumes = Some(volumes.clone());
    ctx.volume_stats = Some(volumes);
    ctx.events_tx = Some(events_tx);
    let devices = crate::devices::DeviceManager::start(&ctx.cfg.root_dir.join("device-plugins"))
        .await
        .context("starting the device plugin manager")?;
    ctx.devices = Some(Arc::new(devices.clone()));
    tokio::spawn(cluster::events::run(
        client.clone(),
        node_name.clone(),
        events_rx,
    ));
    let ctx = Arc::new(ctx);
    serve_pod_resources(&ctx);
    let addresses = facts.addresses.iter().map(|(_, a)| a.clone()).collect();
    crate::server::spawn(client.clone(), node_name.clone(), ctx.clone(), addresses);
    crate::cri::serve(ctx.clone(), images.clone(), &ctx.cfg.cri_sockets)?;
    // The Node is registered in the background, as the kubelet does: the manifest folder's pods
    // start meanwhile (with `kubeadm init` they are the apiserver this registration waits for).
    // The lease and the node status follow the registration.
    let status = cluster::node::status_loop(
        client.clone(),
        facts.clone(),
        move || {
            images
                .store()
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|i| !i.references.is_empty())
                .map(|i| k8s_openapi::api::core::v1::ContainerImage {
                    names: Some(i.references),
                    size_bytes: Some(i.size as i64),
                })
                .collect()
        },
        volumes_in_use,
        {
            let resources = ctx.resources.clone();
            move || resources.conditions()
        },
        move || devices.capacity(),
        cluster::node::Readiness {
            network: ctx.pod_network.clone(),
            shutdown: ctx.node_shutdown.clone(),
        },
    );
    tokio::spawn({
        let (client, node_name) = (client.clone(), node_name.clone());
        async move {
            let mut delay = Duration::from_secs(1);
            while let Err(e) = cluster::node::register(&client, &facts).await {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot register the node");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            tokio::spawn(cluster::node::lease_loop(client, node_name));
            status.await
        }
    });
    tokio::spawn(cluster::status::run(client.clone(), status_rx, flush_rx));
    if let Some(at) = rotate_at {
        tokio::spawn(cluster::rotate(
            client.clone(),
            creds,
            node_name.clone(),
            at,
        ));
    }

    // Desired pods: the apiserver's, plus static pods from the manifest folder when configured.
    let (api_tx, api_rx) = watch::channel(None);
    let (mirror_tx, mirror_rx) = watch::channel(None);
    tokio::spawn(cluster::source::run(
        client.clone(),
        node_name.clone(),
        api_tx,
        mirror_tx,
    ));
    let file_rx = match ctx.cfg.manifests.clone() {
        Some(dir) => {
            let (ftx, frx) = watch::channel(None);
            let src = pods::source::FolderSource::new(dir, node_name.clone())
                .with_errors_in(&ctx.cfg.run_dir);
            tokio::spawn(pods::source::run(src, ctx.cfg.file_check_frequency, ftx));
            Some(frx)
        }
        None => None,
    };
    let static_rx = file_rx.clone().unwrap_or_else(|| {
        let (ftx, frx) = watch::channel(Some(DesiredPods::default()));
        // Kept open for the life of the agent: "no static pods" never changes.
        std::mem::forget(ftx);
        frx
    });
    tokio::spawn(cluster::mirror::run(
        client.clone(),
        node_name.clone(),
        static_rx,
        mirror_rx,
    ));
    let (tx, rx) = watch::channel(None);
    tokio::spawn(pods::source::merge(Some(api_rx), file_rx, tx));
    pods::serve(ctx, rx).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_keeper_next_to_the_agent_when_it_is_executable() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("bosun");
        std::fs::write(&agent, "").unwrap();
        // None next to it: the agent's own binary serves.
        assert_eq!(keeper_binary(&agent), agent);
        let keeper = tmp.path().join(KEEPER_BINARY);
        std::fs::write(&keeper, "").unwrap();
        std::fs::set_permissions(&keeper, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(keeper_binary(&agent), agent, "not executable");
        std::fs::set_permissions(&keeper, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(keeper_binary(&agent), keeper);
        // The short-lived helpers (sandbox, exec) and pod inits run it too.
        let (cfg, _) = Config::load(&crate::config::Flags::default()).unwrap();
        let paths = runtime_paths_for(&cfg, &agent);
        assert_eq!(paths.keeper_binary, keeper);
        assert_eq!(paths.helper_binary, keeper);
    }
}
