//! PersistentVolumeClaims: from a bound PersistentVolume to what the node mounts (pure).
//!
//! `hostPath` PVs are the host path with its type check; `local` PVs are a folder of this node,
//! refused with a clear reason when the PV's node affinity does not select this node (the
//! scheduler should never let that happen; a hand-made pod can).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, PersistentVolume, PersistentVolumeClaim,
};

use crate::translate::VolumeKind;

/// Why a claim cannot be mounted (yet), in the kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("persistentvolumeclaim {claim:?} not found")]
    NotFound { claim: String },
    #[error("persistentvolumeclaim {claim:?} is being deleted")]
    BeingDeleted { claim: String },
    #[error("persistentvolumeclaim {claim:?} is not bound")]
    NotBound { claim: String },
    /// A generic ephemeral volume's claim that the pod does not control.
    #[error(
        "PVC {namespace}/{claim} was not created for pod {pod_namespace}/{pod} (pod is not owner)"
    )]
    NotOwner {
        namespace: String,
        claim: String,
        pod_namespace: String,
        pod: String,
    },
    #[error("persistentvolume {pv:?} has no spec")]
    NoSpec { pv: String },
    #[error(
        "persistentvolume {pv:?}: volumeMode Block is supported for local and CSI volumes only"
    )]
    BlockUnsupported { pv: String },
    #[error("persistentvolume {pv:?} is local to other nodes: its node affinity does not select node {node:?}")]
    OtherNode { pv: String, node: String },
    #[error("persistentvolume {pv:?}: CSI volumes are not mounted by this node yet")]
    Csi { pv: String },
    #[error("persistentvolume {pv:?}: unsupported volume source")]
    Unsupported { pv: String },
}

/// The PV name a claim is bound to, or why it cannot be used yet.
pub fn bound_volume(
    claim_name: &str,
    pvc: Option<&PersistentVolumeClaim>,
) -> Result<String, ClaimError> {
    let claim = || claim_name.to_string();
    let pvc = pvc.ok_or_else(|| ClaimError::NotFound { claim: claim() })?;
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(ClaimError::BeingDeleted { claim: claim() });
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    match (phase, volume) {
        (Some("Bound"), Some(v)) => Ok(v),
        _ => Err(ClaimError::NotBound { claim: claim() }),
    }
}

/// A generic ephemeral volume's claim may be used only by the pod that controls it (the
/// kubelet's `ephemeral.VolumeIsForPod`): a claim of that name made by someone else must never
/// hand its data to this pod. The message is the kubelet's.
pub fn check_ephemeral_owner(
    pod_namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    pvc: &PersistentVolumeClaim,
) -> Result<(), ClaimError> {
    let controlled = pvc
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == pod_uid && !pod_uid.is_empty());
    if controlled {
        return Ok(());
    }
    Err(ClaimError::NotOwner {
        namespace: pvc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| pod_namespace.to_string()),
        claim: pvc.metadata.name.clone().unwrap_or_default(),
        pod_namespace: pod_namespace.to_string(),
        pod: pod_name.to_string(),
    })
}

/// What to mount for a bound PV on node `node` (with its labels).
pub fn volume_kind(
    pv: &PersistentVolume,
    node: &str,
    node_labels: &BTreeMap<String, String>,
) -> Result<VolumeKind, ClaimError> {
    let pv_name = || pv.metadata.name.clone().unwrap_or_default();
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| ClaimError::NoSpec { pv: pv_name() })?;
    let block = spec.volume_mode.as_deref() == Some("Block");
    if block && spec.local.is_none() {
        return Err(ClaimError::BlockUnsupported { pv: pv_name() });
    }
    if let Some(h) = &spec.host_path {
        return Ok(VolumeKind::HostPath {
            path: h.path.clone(),
            type_: h.type_.clone().unwrap_or_default(),
        });
    }
    if let Some(l) = &spec.local {
        let selects = spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            .is_none_or(|sel| selector_matches(sel, node, node_labels));
        if !selects {
            return Err(ClaimError::OtherNode {
                pv: pv_name(),
                node: node.to_string(),
            });
        }
        // A block local PV is a device of this node, given to containers by `volumeDevices`.
        return Ok(VolumeKind::Local {
            path: l.path.clone(),
            block,
        });
    }
    if spec.csi.is_some() {
        return Err(ClaimError::Csi { pv: pv_name() });
    }
    Err(ClaimError::Unsupported { pv: pv_name() })
}

/// A required node selector: any term matches; in a term every requirement matches.
pub fn selector_matches(sel: &NodeSelector, node: &str, labels: &BTreeMap<String, String>) -> bool {
    sel.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.iter().flatten();
        let fields = t.match_fields.iter().flatten();
        let empty = t.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            && t.match_fields.as_ref().is_none_or(|f| f.is_empty());
        !empty
            && exprs
                .into_iter()
                .all(|r| requirement(r, labels.get(&r.key)))
            && fields.into_iter().all(|r| {
                let value = (r.key == "metadata.name").then(|| node.to_string());
                requirement(r, value.as_ref())
            })
    })
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => match (
            value.and_then(|v| int(v)),
            values.first().and_then(|v| int(v)),
        ) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
        "Lt" => match (
            value.and_then(|v| int(v)),
            values.first().and_then(|v| int(v)),
        ) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pv(yaml: &str) -> PersistentVolume {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn labels(node: &str) -> BTreeMap<String, String> {
        [
            ("kubernetes.io/hostname".to_string(), node.to_string()),
            ("disk".to_string(), "ssd".to_string()),
            ("gen".to_string(), "5".to_string()),
        ]
        .into()
    }

    const LOCAL: &str = r#"
metadata: {name: pv1}
spec:
  local: {path: /mnt/disks/a}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [node1]}
"#;

    #[test]
    fn local_volumes_only_on_their_nodes() {
        assert_eq!(
            volume_kind(&pv(LOCAL), "node1", &labels("node1")).unwrap(),
            VolumeKind::Local {
                path: "/mnt/disks/a".into(),
                block: false
            }
        );
        let e = volume_kind(&pv(LOCAL), "node2", &labels("node2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not select node \"node2\""), "{e}");
    }

    #[test]
    fn block_local_volumes_are_devices() {
        let mut p = pv(LOCAL);
        if let Some(s) = p.spec.as_mut() {
            s.volume_mode = Some("Block".into());
            if let Some(l) = s.local.as_mut() {
                l.path = "/dev/loop7".into();
            }
        }
        assert_eq!(
            volume_kind(&p, "node1", &labels("node1")).unwrap(),
            VolumeKind::Local {
                path: "/dev/loop7".into(),
                block: true
            }
        );
        assert!(volume_kind(&p, "node2", &labels("node2")).is_err());
        let h = pv("metadata: {name: h}\nspec: {volumeMode: Block, hostPath: {path: /dev/sda}}");
        assert!(volume_kind(&h, "n", &BTreeMap::new())
            .unwrap_err()
            .to_string()
            .contains("Block is supported for local and CSI volumes only"));
    }

    #[test]
    fn host_path_and_unsupported_sources() {
        let h = pv("metadata: {name: h}\nspec: {hostPath: {path: /data, type: DirectoryOrCreate}}");
        assert_eq!(
            volume_kind(&h, "n", &BTreeMap::new()).unwrap(),
            VolumeKind::HostPath {
                path: "/data".into(),
                type_: "DirectoryOrCreate".into()
            }
        );
        let nfs = pv("metadata: {name: n}\nspec: {nfs: {server: s, path: /}}");
        assert!(volume_kind(&nfs, "n", &BTreeMap::new())
            .unwrap_err()
            .to_string()
            .contains("unsupported volume source"));
    }

    #[test]
    fn selector_operators() {
        let sel = |yaml: &str| -> NodeSelector { serde_yaml::from_str(yaml).unwrap() };
        let l = labels("node1");
        let m = |y: &str| selector_matches(&sel(y), "node1", &l);
        assert!(m(
            "nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: Exists}]}]"
        ));
        assert!(!m(
            "nodeSelectorTerms: [{matchExpressions: [{key: gpu, operator: Exists}]}]"
        ));
        assert!(m(
            "nodeSelectorTerms: [{matchExpressions: [{key: gpu, operator: DoesNotExist}]}]"
        ));
        assert!(m(
            "nodeSelectorTerms: [{matchExpressions: [{key: gen, operator: Gt, values: ['4']}]}]"
        ));
        assert!(!m(
            "nodeSelectorTerms: [{matchExpressions: [{key: gen, operator: Lt, values: ['4']}]}]"
        ));
        assert!(m("nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: NotIn, values: [hdd]}]}]"));
        assert!(m("nodeSelectorTerms: [{matchFields: [{key: metadata.name, operator: In, values: [node1]}]}]"));
        // Terms are ORed, requirements ANDed; an empty term selects nothing.
        assert!(m("nodeSelectorTerms: [{matchExpressions: [{key: gpu, operator: Exists}]}, {matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]"));
        assert!(!m("nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: Exists}, {key: gpu, operator: Exists}]}]"));
        assert!(!m("nodeSelectorTerms: [{}]"));
    }

    #[test]
    fn ephemeral_claims_must_be_controlled_by_the_pod() {
        let pvc = |refs: &str| -> PersistentVolumeClaim {
            serde_yaml::from_str(&format!(
                "metadata: {{name: web-data, namespace: ns, ownerReferences: {refs}}}\nspec: {{}}"
            ))
            .unwrap()
        };
        let owned = pvc("[{apiVersion: v1, kind: Pod, name: web, uid: u1, controller: true}]");
        assert!(check_ephemeral_owner("ns", "web", "u1", &owned).is_ok());
        // Another pod's (an earlier pod of the same name), not the controller, or no owner.
        for refs in [
            "[{apiVersion: v1, kind: Pod, name: web, uid: u0, controller: true}]",
            "[{apiVersion: v1, kind: Pod, name: web, uid: u1}]",
            "[]",
        ] {
            assert_eq!(
                check_ephemeral_owner("ns", "web", "u1", &pvc(refs))
                    .unwrap_err()
                    .to_string(),
                "PVC ns/web-data was not created for pod ns/web (pod is not owner)",
                "{refs}"
            );
        }
        assert!(check_ephemeral_owner(
            "ns",
            "web",
            "",
            &pvc("[{apiVersion: v1, kind: Pod, name: web, uid: '', controller: true}]")
        )
        .is_err());
    }

    #[test]
    fn claims_must_be_bound() {
        let pvc = |y: &str| -> PersistentVolumeClaim { serde_yaml::from_str(y).unwrap() };
        assert_eq!(
            bound_volume(
                "c",
                Some(&pvc(
                    "metadata: {name: c}\nspec: {volumeName: pv1}\nstatus: {phase: Bound}"
                ))
            )
            .unwrap(),
            "pv1"
        );
        assert_eq!(
            bound_volume(
                "c",
                Some(&pvc(
                    "metadata: {name: c}\nspec: {}\nstatus: {phase: Pending}"
                ))
            )
            .unwrap_err()
            .to_string(),
            "persistentvolumeclaim \"c\" is not bound"
        );
        assert_eq!(
            bound_volume("c", None).unwrap_err().to_string(),
            "persistentvolumeclaim \"c\" not found"
        );
    }
}
