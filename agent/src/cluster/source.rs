//! The cluster pod source: a watch on the pods bound to this node (`spec.nodeName`), kept as a
//! local cache and published as the desired set. The watcher relists after errors and
//! disconnects, so a restarted apiserver is caught up with (kube-runtime's watcher semantics).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::pods::source::DesiredPods;

/// Watches this node's pods forever and publishes them (keyed by uid) on `tx`.
pub async fn run(client: Client, node: String, tx: watch::Sender<Option<DesiredPods>>) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg).boxed();
    let mut cache: BTreeMap<String, Pod> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, Pod>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => init = Some(BTreeMap::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(m), Some(uid)) = (init.as_mut(), pod.metadata.uid.clone()) {
                    m.insert(uid, pod);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(m) = init.take() {
                    cache = m;
                    publish(&tx, &cache);
                }
            }
            Ok(Event::Apply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    cache.insert(uid, pod);
                    publish(&tx, &cache);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    cache.remove(&uid);
                    publish(&tx, &cache);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn publish(tx: &watch::Sender<Option<DesiredPods>>, cache: &BTreeMap<String, Pod>) {
    let desired: DesiredPods = cache
        .iter()
        .filter(|(_, p)| {
            // A pod that ended before this node saw it never runs again.
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded") | Some("Failed"))
                || p.metadata.deletion_timestamp.is_some()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tx.send_if_modified(|cur| {
        if cur.as_ref() != Some(&desired) {
            *cur = Some(desired);
            true
        } else {
            false
        }
    });
}
