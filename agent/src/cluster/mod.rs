//! Cluster mode: bosun as the node agent of a real cluster (TLS bootstrap, Node and Lease, the
//! pods bound to this node, their status and final deletion). The parts are put together by
//! [`crate::assembly::cluster_node`].

pub mod bootstrap;
pub mod csi;
pub mod events;
pub mod mirror;
pub mod node;
pub mod objects;
pub mod source;
pub mod status;
pub mod volumes;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::pods::source::{same_pods, DesiredPods};

/// Publishes the union of the apiserver's pods and the static pods, once the apiserver's first
/// list is in (so nothing is taken for an orphan before that).
pub async fn merge(
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
pub async fn rotate(client: kube::Client, creds: bootstrap::Paths, node: String, at: SystemTime) {
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
    restart_in_place()
}

/// Runs bosun again in this process (same binary, same arguments): pods are adopted, nothing is
/// lost. Exits when the exec fails (the service manager starts it again).
pub fn restart_in_place() -> ! {
    let exe = std::path::PathBuf::from("/proc/self/exe");
    let args: Vec<std::ffi::CString> = std::env::args()
        .filter_map(|a| std::ffi::CString::new(a).ok())
        .collect();
    if let Ok(path) = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes()) {
        let _ = nix::unistd::execv(&path, &args);
    }
    std::process::exit(0);
}
