//! Cluster mode: bosun as the node agent of a real cluster (TLS bootstrap, Node and Lease, the
//! pods bound to this node, their status and final deletion).

pub mod bootstrap;
pub mod csi;
pub mod events;
pub mod mirror;
pub mod node;
pub mod objects;
pub mod source;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;
use crate::pods;
use crate::pods::source::{same_pods, DesiredPods};

/// Runs bosun as a cluster node until SIGTERM/SIGINT (pods keep running after).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Two TLS stacks are linked (ring for kube, aws-lc-rs through oci-client): pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = cfg.kubeconfig.clone().context(
        "cluster mode needs --kubeconfig (and --bootstrap-kubeconfig for a TLS bootstrap)",
    )?;
    let creds = bootstrap::Paths {
        kubeconfig,
        bootstrap_kubeconfig: cfg.bootstrap_kubeconfig.clone(),
        cert_dir: cfg.cert_dir.clone(),
    };
    let node_name = cfg.node_name.clone();
    // The apiserver may not be up yet: retry with backoff, never give up.
    let mut delay = Duration::from_secs(1);
    let (client, rotate_at) = loop {
        match bootstrap::client(&creds, &node_name).await {
            Ok(c) => break c,
            Err(e @ bootstrap::BootstrapError::NoCredentials { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot get node credentials");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let mut facts = node::NodeFacts::gather(
        &node_name,
        cfg.node_ip.clone(),
        &cfg.node_labels,
        cfg.register_with_taints.clone(),
        &cfg.root_dir,
        cfg.max_pods,
    );
    facts.port = i32::from(cfg.server.port);
    let mut delay = Duration::from_secs(1);
    while let Err(e) = node::register(&client, &facts).await {
        tracing::warn!(error = %e, retry_in = ?delay, "cannot register the node");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ctx = crate::cli::context(cfg).await?;
    ctx.status_tx = Some(status_tx);
    let csi = csi::Csi::start(client.clone(), node_name.clone(), ctx.cfg.root_dir.clone());
    ctx.objects = Some(Arc::new(objects::ClusterObjects::new(
        client.clone(),
        Some(csi),
    )));
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    ctx.events_tx = Some(events_tx);
    tokio::spawn(events::run(client.clone(), node_name.clone(), events_rx));
    let ctx = Arc::new(ctx);
    let addresses = facts.addresses.iter().map(|(_, a)| a.clone()).collect();
    crate::server::spawn(client.clone(), node_name.clone(), ctx.clone(), addresses);
    crate::cri::serve(ctx.clone(), &ctx.cfg.cri_sockets)?;
    tokio::spawn(node::lease_loop(client.clone(), node_name.clone()));
    let images_ctx = ctx.clone();
    tokio::spawn(node::status_loop(
        client.clone(),
        facts,
        move || {
            images_ctx
                .images
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
        {
            let root = ctx.cfg.root_dir.clone();
            move || csi::volumes_in_use(&root)
        },
    ));
    tokio::spawn(status::run(client.clone(), status_rx));
    if let Some(at) = rotate_at {
        tokio::spawn(rotate(client.clone(), creds, node_name.clone(), at));
    }

    // Desired pods: the apiserver's, plus static pods from the manifest folder when configured.
    let (api_tx, api_rx) = watch::channel(None);
    let (mirror_tx, mirror_rx) = watch::channel(None);
    tokio::spawn(source::run(
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
    tokio::spawn(mirror::run(
        client.clone(),
        node_name.clone(),
        static_rx,
        mirror_rx,
    ));
    let (tx, rx) = watch::channel(None);
    tokio::spawn(merge(api_rx, file_rx, tx));
    pods::serve(ctx, rx).await
}

/// Publishes the union of the apiserver's pods and the static pods, once the apiserver's first
/// list is in (so nothing is taken for an orphan before that).
async fn merge(
    mut api: watch::Receiver<Option<DesiredPods>>,
    mut file: Option<watch::Receiver<Option<DesiredPods>>>,
    tx: watch::Sender<Option<DesiredPods>>,
) {
    loop {
        if let Some(a) = api.borrow_and_update().clone() {
            let mut all = a;
            if let Some(f) = file.as_mut() {
                all.extend(f.borrow_and_update().clone().unwrap_or_default());
            }
            tx.send_if_modified(|cur| {
                if !cur.as_ref().is_some_and(|c| same_pods(c, &all)) {
                    *cur = Some(all);
                    true
                } else {
                    false
                }
            });
        }
        let file_changed = async {
            match file.as_mut() {
                Some(f) => f.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = api.changed() => if r.is_err() { return; },
            ok = file_changed => if !ok { return; },
        }
    }
}

/// Rotates the client certificate at 80 % of its lifetime, then restarts bosun in place
/// (restart is the recovery path: pods are adopted, nothing is lost).
async fn rotate(client: kube::Client, creds: bootstrap::Paths, node: String, at: SystemTime) {
    if let Ok(wait) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    loop {
        match bootstrap::request_certificate(&client, &creds, &node).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "client certificate rotation failed; retrying");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
    tracing::info!("client certificate rotated; restarting bosun to use it");
    let exe = std::path::PathBuf::from("/proc/self/exe");
    let args: Vec<std::ffi::CString> = std::env::args()
        .filter_map(|a| std::ffi::CString::new(a).ok())
        .collect();
    if let Ok(path) = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes()) {
        let _ = nix::unistd::execv(&path, &args);
    }
    std::process::exit(0);
}
