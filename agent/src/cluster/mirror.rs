//! Mirror pods: the apiserver's read-only copy of each static pod, as the kubelet keeps them.
//!
//! For every static pod there must be a pod of the same namespace and name, bound to this node,
//! annotated `kubernetes.io/config.mirror: <config hash>` and owned by the Node (NodeRestriction
//! requires both). A mirror pod whose hash differs (the manifest changed), that is being deleted
//! (a user deleted it: the apiserver waits for the node to finish the deletion), or whose static
//! pod is gone is deleted at once (grace 0); a missing or so deleted one is created again, as the
//! kubelet's syncPod does. Pod statuses of static pods
//! are written to their mirror pods ([`crate::cluster::status`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::manifest::{ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_MIRROR};
use crate::pods::source::DesiredPods;

/// Mirror pods on this node by `namespace/name`.
pub type MirrorPods = BTreeMap<String, Pod>;

/// Is `pod` a mirror pod?
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_CONFIG_MIRROR))
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn config_hash(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CONFIG_HASH).cloned())
        .or_else(|| pod.metadata.uid.clone())
        .unwrap_or_default()
}

/// The mirror pod of a static pod.
pub fn mirror_of(static_pod: &Pod, node: &str, node_uid: &str) -> Pod {
    let mut annotations = static_pod.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(ANNOTATION_CONFIG_MIRROR.into(), config_hash(static_pod));
    Pod {
        metadata: ObjectMeta {
            name: static_pod.metadata.name.clone(),
            namespace: static_pod.metadata.namespace.clone(),
            labels: static_pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: node_uid.to_string(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: static_pod.spec.clone(),
        status: None,
    }
}

/// What to do to make the mirror pods match the static pods.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Create(String),
    /// Delete (namespace/name, uid).
    Delete(String, String),
}

/// The kubelet's mirror pod rules, as a pure function.
pub fn plan(statics: &DesiredPods, mirrors: &MirrorPods) -> Vec<Action> {
    let mut out = Vec::new();
    let mut wanted: BTreeMap<String, &Pod> = BTreeMap::new();
    for p in statics.values() {
        if p.metadata.deletion_timestamp.is_none() {
            wanted.insert(key(p), p);
        }
    }
    for (k, m) in mirrors {
        let hash = m
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CONFIG_MIRROR))
            .cloned()
            .unwrap_or_default();
        let keep = wanted
            .get(k)
            .is_some_and(|s| config_hash(s) == hash && m.metadata.deletion_timestamp.is_none());
        if !keep {
            out.push(Action::Delete(
                k.clone(),
                m.metadata.uid.clone().unwrap_or_default(),
            ));
        }
    }
    let deleted: Vec<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::Delete(k, _) => Some(k.clone()),
            Action::Create(_) => None,
        })
        .collect();
    for k in wanted.keys() {
        if !mirrors.contains_key(k) || deleted.contains(k) {
            out.push(Action::Create(k.clone()));
        }
    }
    out
}

/// Keeps the mirror pods in step with the static pods until either channel closes.
pub async fn run(
    client: Client,
    node: String,
    mut statics: watch::Receiver<Option<DesiredPods>>,
    mut mirrors: watch::Receiver<Option<MirrorPods>>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node_uid = loop {
        match nodes.get(&node).await {
            Ok(n) => break n.metadata.uid.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(error = %e, "mirror pods wait for the Node object");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    loop {
        let s = statics.borrow_and_update().clone();
        let m = mirrors.borrow_and_update().clone();
        let mut retry = false;
        if let (Some(s), Some(m)) = (s, m) {
            let by_key: BTreeMap<String, &Pod> = s.values().map(|p| (key(p), p.as_ref())).collect();
            for action in plan(&s, &m) {
                let result = match &action {
                    Action::Create(k) => {
                        let Some(p) = by_key.get(k) else { continue };
                        let mirror = mirror_of(p, &node, &node_uid);
                        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                        match api.create(&PostParams::default(), &mirror).await {
                            Ok(_) => {
                                tracing::info!(pod = %k, "created mirror pod");
                                Ok(())
                            }
                            // Created meanwhile (or a pod of that name exists): the watch says.
                            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                    Action::Delete(k, uid) => {
                        let (ns, name) = k.split_once('/').unwrap_or(("default", k));
                        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            preconditions: Some(Preconditions {
                                uid: Some(uid.clone()),
                                resource_version: None,
                            }),
                            ..Default::default()
                        };
                        match api.delete(name, &dp).await {
                            Ok(_) => {
                                tracing::info!(pod = %k, "deleted mirror pod");
                                Ok(())
                            }
                            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, ?action, "mirror pod update failed; retrying");
                    retry = true;
                }
            }
        }
        let timer = async {
            if retry {
                tokio::time::sleep(Duration::from_secs(5)).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            r = statics.changed() => if r.is_err() { return },
            r = mirrors.changed() => if r.is_err() { return },
            _ = timer => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(name: &str, hash: &str, mirror: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("kube-system".into());
        p.metadata.uid = Some(format!("uid-{name}-{mirror}"));
        let ann = if mirror {
            ANNOTATION_CONFIG_MIRROR
        } else {
            ANNOTATION_CONFIG_HASH
        };
        p.metadata.annotations = Some([(ann.to_string(), hash.to_string())].into());
        p
    }

    #[test]
    fn mirror_pods_follow_static_pods() {
        let statics: DesiredPods = [
            ("a".to_string(), pod("a", "h1", false).into()),
            ("b".to_string(), pod("b", "h2", false).into()),
            ("c".to_string(), pod("c", "h3", false).into()),
        ]
        .into();
        let mut mirrors: MirrorPods = [
            ("kube-system/a".to_string(), pod("a", "h1", true)),
            ("kube-system/b".to_string(), pod("b", "old", true)),
            ("kube-system/gone".to_string(), pod("gone", "h9", true)),
        ]
        .into();
        assert_eq!(
            plan(&statics, &mirrors),
            [
                Action::Delete("kube-system/b".into(), "uid-b-true".into()),
                Action::Delete("kube-system/gone".into(), "uid-gone-true".into()),
                Action::Create("kube-system/b".into()),
                Action::Create("kube-system/c".into()),
            ]
        );
        // A mirror pod a user deleted (the apiserver waits for the node to finish the graceful
        // deletion) is deleted at once and created again, as the kubelet does; it used to wait
        // forever for the deletion to finish.
        let mut deleting = pod("a", "h1", true);
        deleting.metadata.deletion_timestamp =
            Some(crate::pods::status::time(std::time::SystemTime::UNIX_EPOCH));
        mirrors.insert("kube-system/a".into(), deleting);
        let p = plan(&statics, &mirrors);
        assert!(p.contains(&Action::Delete("kube-system/a".into(), "uid-a-true".into())));
        assert!(p.contains(&Action::Create("kube-system/a".into())));
        // Its static pod is gone too: deleted, not recreated.
        let only_b: DesiredPods = [("b".to_string(), pod("b", "h2", false).into())].into();
        let p = plan(&only_b, &mirrors);
        assert!(!p.contains(&Action::Create("kube-system/a".into())));
        mirrors.remove("kube-system/a");
        assert!(plan(&statics, &mirrors).contains(&Action::Create("kube-system/a".into())));
    }

    #[test]
    fn mirror_pod_is_owned_by_the_node() {
        let m = mirror_of(&pod("a", "h1", false), "node1", "node-uid");
        let ann = m.metadata.annotations.unwrap();
        assert_eq!(ann[ANNOTATION_CONFIG_MIRROR], "h1");
        let owner = &m.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "node1", "node-uid")
        );
        assert!(m.metadata.uid.is_none());
    }
}
