//! Writes pod status to the apiserver and deletes pods once they are terminated, keeping only
//! the newest status per pod (a slow apiserver never queues stale writes).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use tokio::sync::mpsc;

use crate::pods::StatusUpdate;

/// Applies status updates and final deletions. Never returns while the sender lives.
pub async fn run(client: Client, mut rx: mpsc::UnboundedReceiver<StatusUpdate>) {
    let mut pending: HashMap<String, StatusUpdate> = HashMap::new();
    loop {
        // Coalesce: take everything queued, keep the newest per pod.
        match rx.recv().await {
            Some(u) => {
                pending.insert(u.uid.clone(), u);
            }
            None => return,
        }
        while let Ok(u) = rx.try_recv() {
            pending.insert(u.uid.clone(), u);
        }
        let mut failed = Vec::new();
        for (_, u) in pending.drain() {
            if let Err(e) = apply(&client, &u).await {
                tracing::warn!(pod = %format!("{}/{}", u.namespace, u.name), error = %e, "cannot write pod status; will retry");
                failed.push(u);
            }
        }
        if !failed.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for u in failed {
                pending.entry(u.uid.clone()).or_insert(u);
            }
            // Put them back through the loop by re-sending to ourselves is not possible; retry now.
            for (_, u) in pending.drain() {
                if let Err(e) = apply(&client, &u).await {
                    tracing::warn!(error = %e, "pod status retry failed");
                }
            }
        }
    }
}

async fn apply(client: &Client, u: &StatusUpdate) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &u.namespace);
    match &u.status {
        Some(status) => {
            let patch = status_patch(&u.uid, status);
            match api
                .patch_status(&u.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                // Gone, or another pod of that name: nothing to report to.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        None => {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(u.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&u.name, &dp).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{}/{}", u.namespace, u.name), "pod deleted from the API");
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// A merge patch of the status, guarded by the uid (a recreated pod of the same name is never
/// given the old one's status).
pub fn status_patch(uid: &str, status: &PodStatus) -> serde_json::Value {
    serde_json::json!({
        "metadata": { "uid": uid },
        "status": status,
    })
}
