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
