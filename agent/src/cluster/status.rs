//! Writes pod status to the apiserver and deletes pods once they are terminated, keeping only
//! the newest status per pod (a slow apiserver never queues stale writes).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use tokio::sync::{mpsc, oneshot};

use crate::pods::StatusUpdate;
use crate::reasons::condition;

/// Applies status updates and final deletions. Never returns while the sender lives. A write
/// that fails stays queued (unless a newer one for the pod replaces it) and is retried with
/// backoff, so statuses catch up after an apiserver outage. The last status written to each
/// mirror pod is kept and written again when the mirror pod was replaced (a user deleted it and
/// the mirror manager made a new one), as the kubelet's status manager syncs it.
///
/// A flush request (`flush`) is answered once every update sent before it was written (or
/// tried once and kept for a retry): the node shutdown manager waits for it before it lets the
/// node go down.
pub async fn run(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<StatusUpdate>,
    mut flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut pending: HashMap<String, StatusUpdate> = HashMap::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    // Static pod uid -> (uid of the mirror pod written to, the update, checks that found no
    // mirror pod in a row).
    let mut mirrors: HashMap<String, (String, StatusUpdate, u32)> = HashMap::new();
    let mut backoff = RETRY_MIN;
    let mut resync = tokio::time::interval(MIRROR_RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Some(update), Some(None) when the channel closed, None for a timer.
        let next = tokio::select! {
            u = rx.recv() => Some(u),
            Some(f) = flush.recv() => {
                flushes.push(f);
                None
            }
            _ = tokio::time::sleep(backoff), if !pending.is_empty() => None,
            _ = resync.tick(), if !mirrors.is_empty() => {
                for (uid, (written, u, misses)) in mirrors.iter_mut() {
                    if pending.contains_key(uid) {
                        continue;
                    }
                    let api: Api<Pod> = Api::namespaced(client.clone(), &u.namespace);
                    match api.get_opt(&u.name).await {
                        Ok(Some(p)) if super::mirror::is_mirror(&p) => {
                            *misses = 0;
                            if p.metadata.uid.as_deref() != Some(written.as_str())
                                || drifted(p.status.as_ref(), u.status.as_ref())
                            {
                                pending.insert(uid.clone(), u.clone());
                            }
                        }
                        // Not there (the Node authorizer answers 403 for a missing pod): being
                        // made again, or its static pod is gone.
                        Ok(_) => *misses += 1,
                        Err(kube::Error::Api(e)) if e.code == 403 => *misses += 1,
                        Err(_) => {}
                    }
                }
                mirrors.retain(|_, (_, _, misses)| *misses < MIRROR_GONE_AFTER);
                None
            }
        };
        let closed = matches!(next, Some(None));
        if let Some(Some(u)) = next {
            pending.insert(u.uid.clone(), u);
        }
        if closed && pending.is_empty() {
            return;
        }
        // Coalesce: take everything queued, keep the newest per pod.
        while let Ok(u) = rx.try_recv() {
            pending.insert(u.uid.clone(), u);
        }
        let mut failed = false;
        for (uid, u) in std::mem::take(&mut pending) {
            match apply(&client, &u).await {
                Ok(Some(mirror_uid)) => {
                    mirrors.insert(uid, (mirror_uid, u, 0));
                }
                Ok(None) => {
                    if u.status.is_none() {
                        mirrors.remove(&uid);
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{}/{}", u.namespace, u.name), error = %e, retry_in = ?backoff, "cannot write pod status; will retry");
                    pending.insert(uid, u);
                    failed = true;
                }
            }
        }
        // Every update sent before a flush request was tried: answer it.
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        // Newer updates that came in meanwhile replace the failed ones.
        while let Ok(u) = rx.try_recv() {
            pending.insert(u.uid.clone(), u);
        }
        if closed {
            // Shutting down: one last attempt was made.
            return;
        }
        backoff = if failed {
            (backoff * 2).min(RETRY_MAX)
        } else {
            RETRY_MIN
        };
    }
}

/// Whether the API's copy of a status no longer says what was written: a kubelet condition
/// with another status (the node lifecycle controller sets every pod's Ready to False while the
/// Node is not Ready, a pod update at a time), or another phase. The kubelet's status manager
/// writes its status again then (its reconcile against the API's copy every 10 s).
pub fn drifted(api: Option<&PodStatus>, written: Option<&PodStatus>) -> bool {
    let (Some(api), Some(written)) = (api, written) else {
        return false;
    };
    let status_of = |ty: &str| {
        api.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == ty)
            .map(|c| c.status.as_str())
    };
    api.phase != written.phase
        || written
            .conditions
            .iter()
            .flatten()
            .filter(|c| crate::pods::status::is_kubelet_condition(&c.type_))
            .any(|c| status_of(&c.type_) != Some(c.status.as_str()))
}

/// How often the mirror pods written to are checked for a replacement or a status changed by
/// someone else (the kubelet's status manager syncs every 10 s).
const MIRROR_RESYNC: Duration = Duration::from_secs(10);
/// Checks without a mirror pod after which its static pod is taken as removed.
const MIRROR_GONE_AFTER: u32 = 6;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a status write must be retried.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("its mirror pod does not exist yet")]
    NoMirror,
}

/// Writes one update; `Some(uid)` of the mirror pod when it went to a mirror pod.
async fn apply(client: &Client, u: &StatusUpdate) -> Result<Option<String>, ApplyError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &u.namespace);
    // A final deletion carries the pod's last status: written first (the containers'
    // terminated states and the final phase, which a pod kept by a finalizer shows), as the
    // kubelet's status manager does before it deletes.
    let deleting;
    let u = match (&u.status, u.delete && !u.mirror) {
        (Some(status), true) => {
            let patch = status_patch(&u.uid, status);
            match api
                .patch_status(&u.name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            deleting = StatusUpdate {
                status: None,
                ..u.clone()
            };
            &deleting
        }
        _ => u,
    };
    match &u.status {
        Some(status) => {
            let uid = if u.mirror {
                match api.get_opt(&u.name).await {
                    Ok(Some(p)) if super::mirror::is_mirror(&p) => {
                        p.metadata.uid.unwrap_or_default()
                    }
                    // No mirror pod yet (the Node authorizer answers 403, not 404, for a pod
                    // that is not bound to this node, so one that does not exist): retried until
                    // the mirror manager made it again.
                    Ok(_) => return Err(ApplyError::NoMirror),
                    Err(kube::Error::Api(e)) if e.code == 403 => return Err(ApplyError::NoMirror),
                    Err(e) => return Err(e.into()),
                }
            } else {
                u.uid.clone()
            };
            let patch = status_patch(&uid, status);
            let written = u.mirror.then(|| uid.clone());
            match api
                .patch_status(&u.name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => Ok(written),
                // The mirror pod was replaced or deleted since it was read: the status is for
                // its static pod, so it goes to the next mirror pod (retried), never dropped.
                Err(kube::Error::Api(e)) if u.mirror && (e.code == 404 || e.code == 409) => {
                    Err(ApplyError::NoMirror)
                }
                // Gone, or another pod of that name: nothing to report to.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        None if u.mirror => Ok(None),
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
                    Ok(None)
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// A strategic merge patch of the status, guarded by the uid (a recreated pod of the same name
/// is never given the old one's status). Conditions merge by type, and only the kubelet's own
/// are sent: those set by other writers (readiness gates, a controller's DisruptionTarget) stay
/// as the API has them, even when they changed since the worker last saw the pod; the node's own
/// DisruptionTarget (reason TerminationByKubelet: eviction, node shutdown) is sent, as the
/// kubelet's status manager sends it.
pub fn status_patch(uid: &str, status: &PodStatus) -> serde_json::Value {
    let mut status = status.clone();
    if let Some(cs) = status.conditions.as_mut() {
        // DisruptionTarget is the kubelet's too when it ended the pod (an eviction).
        cs.retain(|c| {
            crate::pods::status::is_kubelet_condition(&c.type_)
                || (c.type_ == "DisruptionTarget"
                    && c.reason.as_deref()
                        == Some(crate::pods::worker::plan::TERMINATION_BY_KUBELET))
        });
    }
    let mut value = serde_json::json!({
        "metadata": { "uid": uid },
        "status": status,
    });
    // A resize condition that ended is deleted (merging by type alone would keep it).
    if let Some(list) = value["status"]["conditions"].as_array_mut() {
        for ty in [
            condition::POD_RESIZE_PENDING,
            condition::POD_RESIZE_IN_PROGRESS,
        ] {
            if !list.iter().any(|c| c["type"] == ty) {
                list.push(serde_json::json!({ "type": ty, "$patch": "delete" }));
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;

    #[test]
    fn drift_is_a_kubelet_condition_or_the_phase_changed_by_someone_else() {
        let st = |phase: &str, conds: &[(&str, &str)]| PodStatus {
            phase: Some(phase.into()),
            conditions: Some(
                conds
                    .iter()
                    .map(|(t, s)| PodCondition {
                        type_: t.to_string(),
                        status: s.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let written = st("Running", &[("Ready", "True"), ("ContainersReady", "True")]);
        // (API's copy, drifted?)
        let cases = [
            (
                st("Running", &[("Ready", "True"), ("ContainersReady", "True")]),
                false,
            ),
            // the node lifecycle controller's MarkPodsNotReady
            (
                st(
                    "Running",
                    &[("Ready", "False"), ("ContainersReady", "True")],
                ),
                true,
            ),
            (
                st("Pending", &[("Ready", "True"), ("ContainersReady", "True")]),
                true,
            ),
            (st("Running", &[("ContainersReady", "True")]), true),
            // a controller's own condition next to the kubelet's is not drift
            (
                st(
                    "Running",
                    &[
                        ("Ready", "True"),
                        ("ContainersReady", "True"),
                        ("DisruptionTarget", "True"),
                    ],
                ),
                false,
            ),
        ];
        for (i, (api, want)) in cases.iter().enumerate() {
            assert_eq!(drifted(Some(api), Some(&written)), *want, "case {i}");
        }
        assert!(!drifted(None, Some(&written)));
        assert!(!drifted(Some(&written), None));
    }

    #[test]
    fn patch_leaves_foreign_conditions_alone() {
        let cond = |ty: &str| PodCondition {
            type_: ty.into(),
            status: "True".into(),
            ..Default::default()
        };
        let st = PodStatus {
            conditions: Some(vec![
                cond("Ready"),
                cond("example.com/lb"),
                cond("PodScheduled"),
            ]),
            ..Default::default()
        };
        let p = status_patch("u1", &st);
        assert_eq!(p["metadata"]["uid"], "u1");
        let types: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "Ready",
                "PodScheduled",
                "PodResizePending",
                "PodResizeInProgress"
            ]
        );
        // The resize conditions absent from the status are deleted from the API's.
        let deleted: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["$patch"] == "delete")
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(deleted, ["PodResizePending", "PodResizeInProgress"]);
        // The DisruptionTarget of a pod the node evicted is sent; another writer's is not.
        let mine = PodCondition {
            reason: Some("TerminationByKubelet".into()),
            ..cond("DisruptionTarget")
        };
        let other = PodStatus {
            conditions: Some(vec![mine]),
            ..Default::default()
        };
        assert_eq!(
            status_patch("u1", &other)["status"]["conditions"][0]["type"],
            "DisruptionTarget"
        );
        let other = PodStatus {
            conditions: Some(vec![cond("DisruptionTarget")]),
            ..Default::default()
        };
        assert_ne!(
            status_patch("u1", &other)["status"]["conditions"][0]["type"],
            "DisruptionTarget"
        );
        let mut st = st;
        st.conditions
            .get_or_insert_with(Vec::new)
            .push(cond("PodResizeInProgress"));
        let p = status_patch("u1", &st);
        let deleted = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["$patch"] == "delete")
            .count();
        assert_eq!(deleted, 1, "only the pending one");
    }
}
