//! The cluster pod source: a watch on the pods bound to this node (`spec.nodeName`), kept as a
//! local cache and published as the desired set. The watcher relists after errors and
//! disconnects, so a restarted apiserver is caught up with (kube-runtime's watcher semantics).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

use super::mirror::{is_mirror, MirrorPods};
use crate::pods::source::{same_pods, DesiredPods};

/// Watches this node's pods forever and publishes them (keyed by uid) on `tx`; mirror pods
/// (which bosun never runs: their static pods are the real ones) go to `mirrors` instead.
pub async fn run(
    client: Client,
    node: String,
    tx: watch::Sender<Option<DesiredPods>>,
    mirrors: watch::Sender<Option<MirrorPods>>,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg).boxed();
    let mut cache: DesiredPods = BTreeMap::new();
    let mut init: Option<DesiredPods> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => init = Some(BTreeMap::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(m), Some(uid)) = (init.as_mut(), pod.metadata.uid.clone()) {
                    m.insert(uid, Arc::new(pod));
                }
            }
            Ok(Event::InitDone) => {
                if let Some(m) = init.take() {
                    cache = m;
                    publish(&tx, &mirrors, &cache);
                }
            }
            Ok(Event::Apply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    cache.insert(uid, Arc::new(pod));
                    publish(&tx, &mirrors, &cache);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    cache.remove(&uid);
                    publish(&tx, &mirrors, &cache);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn publish(
    tx: &watch::Sender<Option<DesiredPods>>,
    mirror_tx: &watch::Sender<Option<MirrorPods>>,
    cache: &DesiredPods,
) {
    let mirrors: MirrorPods = cache
        .values()
        .filter(|p| is_mirror(p))
        .map(|p| {
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or("")
            );
            (key, Pod::clone(p))
        })
        .collect();
    mirror_tx.send_if_modified(|cur| {
        if cur.as_ref() != Some(&mirrors) {
            *cur = Some(mirrors);
            true
        } else {
            false
        }
    });
    // Pods that ended stay: their workers keep their logs until the pod is deleted, and never
    // run them again (`pods::api_terminal`).
    let desired: DesiredPods = cache
        .iter()
        .filter(|(_, p)| !is_mirror(p))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tx.send_if_modified(|cur| {
        if !cur.as_ref().is_some_and(|c| same_pods(c, &desired)) {
            *cur = Some(desired);
            true
        } else {
            false
        }
    });
}
