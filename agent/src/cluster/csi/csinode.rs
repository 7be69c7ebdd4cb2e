//! The node's CSINode object (and topology labels) in step with the registered drivers.

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_volumes::csi::{self, Drivers};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::Client;

/// The CSINode object this node should have for `drivers`.
pub fn csinode(node: &str, node_uid: &str, drivers: &[csi::Driver]) -> CSINode {
    CSINode {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: node_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: CSINodeSpec {
            drivers: drivers
                .iter()
                .map(|d| CSINodeDriver {
                    name: d.name.clone(),
                    node_id: d.node_id.clone(),
                    topology_keys: Some(d.topology_keys()),
                    allocatable: (d.max_volumes_per_node > 0).then_some(VolumeNodeResources {
                        count: Some(d.max_volumes_per_node as i32),
                    }),
                })
                .collect(),
        },
    }
}

/// Keeps the CSINode object (and the Node's topology labels) in step with the drivers.
pub(super) async fn sync_csinode(client: Client, node: String, drivers: Drivers) {
    let nodes: Api<Node> = Api::all(client.clone());
    let api: Api<CSINode> = Api::all(client.clone());
    let mut rx = drivers.subscribe();
    loop {
        let list: Vec<csi::Driver> = rx.borrow_and_update().values().cloned().collect();
        let result = async {
            let n = nodes.get(&node).await?;
            let uid = n.metadata.uid.clone().unwrap_or_default();
            let want = csinode(&node, &uid, &list);
            match api.get_opt(&node).await? {
                None => {
                    api.create(&PostParams::default(), &want).await?;
                }
                Some(cur) if cur.spec != want.spec => {
                    let mut next = want.clone();
                    next.metadata.resource_version = cur.metadata.resource_version;
                    api.replace(&node, &PostParams::default(), &next).await?;
                }
                Some(_) => {}
            }
            // Topology segments become node labels, as the kubelet does.
            let mut labels = BTreeMap::new();
            for d in &list {
                for (k, v) in &d.topology {
                    labels.insert(k.clone(), v.clone());
                }
            }
            let current = n.metadata.labels.unwrap_or_default();
            if labels.iter().any(|(k, v)| current.get(k) != Some(v)) {
                let patch = serde_json::json!({"metadata": {"labels": labels}});
                nodes
                    .patch(
                        &node,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await?;
            }
            Ok::<(), kube::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot update the CSINode object; retrying");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
