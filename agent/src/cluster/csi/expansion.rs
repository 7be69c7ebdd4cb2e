//! Online expansion: the claims of mounted CSI volumes checked every few seconds, and
//! NodeExpandVolume when the resizer asks for the node's part.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_volumes::csi::{self, Drivers};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use super::{Events, ExpandError, Mounted};

/// How often the claims of mounted CSI volumes are checked for a pending node expansion.
const EXPAND_PERIOD: Duration = Duration::from_secs(5);

/// The kubelet's volume operations back off after a failure (`goroutinemap/exponentialbackoff`):
/// 500 ms after the first, doubling up to 2 min 2 s. A failed node expansion is tried again no
/// sooner than that (and at the next [`EXPAND_PERIOD`] tick after it).
const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(122);

/// The back-off of failed node expansions, one entry per mounted volume (`<pod uid>/<volume>`).
pub struct Retries(crate::pods::backoff::Backoff);

impl Default for Retries {
    fn default() -> Self {
        Self(crate::pods::backoff::Backoff::new(RETRY_INITIAL, RETRY_MAX))
    }
}

impl Retries {
    /// Whether the volume `key` may be tried at `now`: never failed, or its back-off is over.
    pub fn due(&self, key: &str, now: std::time::SystemTime) -> bool {
        self.0.in_backoff_since_update(key, now).is_none()
    }

    /// Records the outcome of a try at `now`: a failure backs off (500 ms, then doubling), a
    /// success starts over.
    pub fn record(&mut self, key: &str, failed: bool, now: std::time::SystemTime) {
        if failed {
            self.0.next(key, now, now);
        } else {
            self.0.forget(key);
        }
    }

    /// The current delay of `key`, for the log (the kubelet's "durationBeforeRetry").
    pub fn delay(&self, key: &str) -> Duration {
        self.0.delay(key)
    }
}

/// What to do about a mounted volume's claim (the kubelet's online expansion precheck).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expansion {
    /// Nothing: the PV is no larger than the claim's status capacity, or the resizer has not
    /// asked for the node's part (no `NodeResizePending` / `NodeResizeInProgress`).
    None,
    /// NodeExpandVolume to `bytes` (the PV's capacity, as a quantity string too), then record it
    /// in the claim's status.
    Expand { bytes: i64, quantity: String },
}

fn storage_bytes(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<i64> {
    let q = q?;
    crate::translate::parse_quantity(&q.0)
        .ok()
        .and_then(|p| i64::try_from(p.value()).ok())
}

/// The kubelet's decision for a mounted volume: the PV's capacity is larger than the claim's
/// status capacity and the claim's `allocatedResourceStatuses[storage]` is `NodeResizePending`
/// (or `NodeResizeInProgress`, a node expansion that did not finish).
pub fn expansion(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Expansion {
    let pv_q = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref()?.get("storage"));
    let status = pvc.status.as_ref();
    let pvc_bytes = storage_bytes(status.and_then(|s| s.capacity.as_ref()?.get("storage")));
    let (Some(pv_bytes), Some(pv_q)) = (storage_bytes(pv_q), pv_q) else {
        return Expansion::None;
    };
    if pvc_bytes.is_some_and(|c| c >= pv_bytes) {
        return Expansion::None;
    }
    let resize = status
        .and_then(|s| s.allocated_resource_statuses.as_ref()?.get("storage"))
        .map(String::as_str);
    match resize {
        Some("NodeResizePending" | "NodeResizeInProgress") => Expansion::Expand {
            bytes: pv_bytes,
            quantity: pv_q.0.clone(),
        },
        _ => Expansion::None,
    }
}

/// The claim status patch that ends a node expansion (the kubelet's `MarkFSResizeFinished`):
/// the new capacity, the resize status removed, the resize conditions dropped; with the
/// resourceVersion seen, so a concurrent change wins.
pub fn resize_finished_patch(pvc: &PersistentVolumeClaim, quantity: &str) -> serde_json::Value {
    let conditions: Vec<_> = pvc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "FileSystemResizePending" && c.type_ != "Resizing")
        .collect();
    serde_json::json!({
        "metadata": {"resourceVersion": pvc.metadata.resource_version},
        "status": {
            "capacity": {"storage": quantity},
            "allocatedResourceStatuses": {"storage": null},
            "conditions": conditions,
        }
    })
}

/// How a failed NodeExpandVolume ends (the kubelet's `NodeExpander`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandFailure {
    /// The driver is not there (not registered): nothing recorded, tried again.
    Transient,
    /// The driver failed: the claim gets the `NodeResizeError` condition, tried again.
    Final,
    /// The driver says it cannot be done (InvalidArgument, OutOfRange, NotFound): the claim is
    /// also marked `NodeResizeInfeasible`, and the node tries no more.
    Infeasible,
}

/// What a failed NodeExpandVolume means and the kubelet's words for it.
pub fn expand_failure(e: &csi::ExpandError) -> (ExpandFailure, String) {
    match e {
        csi::ExpandError::Rpc { failure, .. } => {
            if failure.infeasible() {
                (
                    ExpandFailure::Infeasible,
                    format!("Expander.NodeExpand failed to expand the volume {failure}"),
                )
            } else {
                (
                    ExpandFailure::Final,
                    format!("Expander.NodeExpand failed to expand the volume : {failure}"),
                )
            }
        }
        csi::ExpandError::DriverNotRegistered { driver } => (
            ExpandFailure::Transient,
            format!("driver name {driver} not found in the list of registered CSI drivers"),
        ),
        other => (ExpandFailure::Final, other.to_string()),
    }
}

/// The claim status patch after a failed node expansion (the kubelet's
/// `MarkNodeExpansionFailedCondition` and `MarkNodeExpansionInfeasible`): the `NodeResizeError`
/// condition (replacing an earlier one, other conditions kept) and, when infeasible, the resize
/// status `NodeResizeInfeasible`. `None` for a transient failure.
pub fn resize_failed_patch(
    pvc: &PersistentVolumeClaim,
    failure: &ExpandFailure,
    message: &str,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<serde_json::Value> {
    if *failure == ExpandFailure::Transient {
        return None;
    }
    let mut conditions: Vec<serde_json::Value> = pvc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "NodeResizeError")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(serde_json::json!({
        "type": "NodeResizeError",
        "status": "True",
        "lastTransitionTime": now,
        "message": format!("failed to expand pvc with {message}"),
    }));
    let mut status = serde_json::json!({"conditions": conditions});
    if *failure == ExpandFailure::Infeasible {
        status["allocatedResourceStatuses"] =
            serde_json::json!({"storage": "NodeResizeInfeasible"});
    }
    Some(serde_json::json!({ "status": status }))
}

/// Checks the claims of the mounted CSI volumes every [`EXPAND_PERIOD`] and expands on the node
/// what the resizer grew.
pub(super) async fn expand_loop(
    client: Client,
    drivers: Drivers,
    mounted: Arc<Mutex<BTreeMap<(String, String), Mounted>>>,
    events: Events,
) {
    let mut retries = Retries::default();
    loop {
        tokio::time::sleep(EXPAND_PERIOD).await;
        let list: Vec<Mounted> = mounted
            .lock()
            .map(|m| m.values().filter(|m| m.claim.is_some()).cloned().collect())
            .unwrap_or_default();
        for m in list {
            let key = format!("{}/{}", m.pod_uid, m.volume);
            if !retries.due(&key, std::time::SystemTime::now()) {
                continue;
            }
            let result = expand_one(&client, &drivers, &m, &events).await;
            retries.record(&key, result.is_err(), std::time::SystemTime::now());
            if let Err(e) = result {
                tracing::warn!(pod_uid = %m.pod_uid, volume = %m.volume, error = %e, retry_after = ?retries.delay(&key), "MountVolume.NodeExpandVolume failed, no retries permitted until the back-off ends");
            }
        }
    }
}

/// Sends an Event about the pod of `m` or, with `claim_uid`, about its claim.
fn volume_event(
    events: &Events,
    m: &Mounted,
    claim_uid: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let Some(tx) = events else { return };
    let (kind, name, uid) = match claim_uid {
        Some(uid) => (
            "PersistentVolumeClaim",
            m.claim.clone().unwrap_or_default(),
            uid.to_string(),
        ),
        None => ("Pod", m.pod_name.clone(), m.pod_uid.clone()),
    };
    let _ = tx.send(crate::pods::EventRecord {
        kind,
        namespace: m.namespace.clone(),
        name,
        uid,
        field_path: None,
        type_: type_.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        at: std::time::SystemTime::now(),
    });
}

async fn expand_one(
    client: &Client,
    drivers: &Drivers,
    m: &Mounted,
    events: &Events,
) -> Result<(), ExpandError> {
    let Some(claim) = &m.claim else {
        return Ok(());
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &m.namespace);
    let pvc = pvcs.get(claim).await.map_err(ExpandError::Read)?;
    // Most rounds end here, with one read: the resizer has asked nothing of the node.
    let asked = pvc
        .status
        .as_ref()
        .and_then(|s| s.allocated_resource_statuses.as_ref()?.get("storage"))
        .is_some_and(|r| r == "NodeResizePending" || r == "NodeResizeInProgress");
    if !asked {
        return Ok(());
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&m.vol.spec_name).await.map_err(ExpandError::Read)?;
    let Expansion::Expand { bytes, quantity } = expansion(&pvc, &pv) else {
        return Ok(());
    };
    let status = |p: serde_json::Value| {
        let pvcs = pvcs.clone();
        async move {
            pvcs.patch_status(claim, &PatchParams::default(), &Patch::Merge(&p))
                .await
                .map_err(|source| ExpandError::PatchStatus {
                    claim: claim.clone(),
                    source,
                })
        }
    };
    // MarkNodeExpansionInProgress.
    let pvc = status(serde_json::json!({
        "metadata": {"resourceVersion": pvc.metadata.resource_version},
        "status": {"allocatedResourceStatuses": {"storage": "NodeResizeInProgress"}},
    }))
    .await?;
    match csi::expand(drivers, &m.vol, &m.target, m.staging.as_deref(), bytes).await {
        Ok(_) => {}
        // A driver without node expansion has nothing to do on the node.
        Err(csi::ExpandError::NotSupported { .. }) => {}
        Err(e) => {
            let (failure, message) = expand_failure(&e);
            let now = crate::pods::status::time(std::time::SystemTime::now());
            if let Some(p) = resize_failed_patch(&pvc, &failure, &message, now) {
                // Without the resourceVersion, as the kubelet does: the failure is recorded.
                status(p).await?;
            }
            volume_event(
                events,
                m,
                None,
                "Warning",
                "VolumeResizeFailed",
                &format!(
                    "NodeExpandVolume.NodeExpandVolume failed for volume {:?} : {message}",
                    m.vol.spec_name
                ),
            );
            return Err(ExpandError::Expand(e));
        }
    }
    status(resize_finished_patch(&pvc, &quantity)).await?;
    let message = format!(
        "MountVolume.NodeExpandVolume succeeded for volume {:?} {}",
        m.vol.spec_name, m.vol.node_name
    );
    let claim_uid = pvc.metadata.uid.clone().unwrap_or_default();
    for uid in [None, Some(claim_uid.as_str())] {
        volume_event(
            events,
            m,
            uid,
            "Normal",
            "FileSystemResizeSuccessful",
            &message,
        );
    }
    tracing::info!(pod_uid = %m.pod_uid, volume = %m.volume, claim = %claim, capacity = %quantity, "MountVolume.NodeExpandVolume succeeded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume whose expansion always fails, checked every 5 s: tried at the first ticks while
    /// the back-off is shorter than the period, then further apart, never more often than the
    /// kubelet's 500 ms doubling to 2 min 2 s allows; a success starts it over.
    #[test]
    fn failed_expansions_back_off_like_the_kubelets_volume_operations() {
        let t0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut r = Retries::default();
        let mut tried = Vec::new();
        for tick in 1..=60u64 {
            let now = t0 + EXPAND_PERIOD * tick as u32;
            if r.due("u/v", now) {
                tried.push(tick * 5);
                r.record("u/v", true, now);
            }
        }
        assert_eq!(tried, [5, 10, 15, 20, 25, 35, 55, 90, 155, 280]);
        assert_eq!(r.delay("u/v"), RETRY_MAX);
        // Another volume is not held back by this one.
        assert!(r.due("u/w", t0 + Duration::from_secs(281)));
        // A success forgets the failures: the next failure waits 500 ms again.
        let now = t0 + Duration::from_secs(500);
        r.record("u/v", false, now);
        assert!(r.due("u/v", now));
        r.record("u/v", true, now);
        assert_eq!(r.delay("u/v"), RETRY_INITIAL);
    }

    #[test]
    fn expansion_when_the_resizer_asks_the_node() {
        let pv: PersistentVolume =
            serde_yaml::from_str("metadata: {name: pv}\nspec: {capacity: {storage: 2Mi}}")
                .expect("pv");
        let pvc = |status: &str| -> PersistentVolumeClaim {
            serde_yaml::from_str(&format!(
                "metadata: {{name: c, resourceVersion: '7'}}\nspec: {{}}\nstatus: {status}"
            ))
            .expect("pvc")
        };
        let grow = Expansion::Expand {
            bytes: 2 << 20,
            quantity: "2Mi".into(),
        };
        let pending = pvc(
            "{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizePending}}",
        );
        assert_eq!(expansion(&pending, &pv), grow);
        assert_eq!(
            expansion(&pvc("{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizeInProgress}}"), &pv),
            grow
        );
        // The controller's part is not done, or an old resizer (no status): nothing.
        assert_eq!(
            expansion(&pvc("{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: ControllerResizeInProgress}}"), &pv),
            Expansion::None
        );
        assert_eq!(
            expansion(&pvc("{capacity: {storage: 1Mi}}"), &pv),
            Expansion::None
        );
        // Already as large as the PV (1048576 bytes is 1Mi).
        assert_eq!(
            expansion(&pvc("{capacity: {storage: '2097152'}, allocatedResourceStatuses: {storage: NodeResizePending}}"), &pv),
            Expansion::None
        );

        let with_conditions = pvc("{capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizeInProgress}, conditions: [{type: FileSystemResizePending, status: 'True'}, {type: Resizing, status: 'True'}, {type: ModifyingVolume, status: 'True'}]}");
        let p = resize_finished_patch(&with_conditions, "2Mi");
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        assert_eq!(p["status"]["capacity"]["storage"], "2Mi");
        assert!(p["status"]["allocatedResourceStatuses"]["storage"].is_null());
        assert!(p["status"]["allocatedResourceStatuses"]
            .as_object()
            .is_some_and(|o| o.contains_key("storage")));
        let types: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["ModifyingVolume"]);
    }

    #[test]
    fn failed_expansions_like_the_kubelet() {
        let rpc = |s: tonic::Status| csi::ExpandError::Rpc {
            driver: "d".into(),
            volume_handle: "h".into(),
            failure: s.into(),
        };
        let (f, msg) = expand_failure(&rpc(tonic::Status::out_of_range("too big")));
        assert_eq!(f, ExpandFailure::Infeasible);
        assert_eq!(
            msg,
            "Expander.NodeExpand failed to expand the volume rpc error: code = OutOfRange desc = too big"
        );
        let (f, msg) = expand_failure(&rpc(tonic::Status::internal("disk on fire")));
        assert_eq!(f, ExpandFailure::Final);
        assert_eq!(
            msg,
            "Expander.NodeExpand failed to expand the volume : rpc error: code = Internal desc = disk on fire"
        );
        let (f, msg) = expand_failure(&csi::ExpandError::DriverNotRegistered {
            driver: "d.csi".into(),
        });
        assert_eq!(f, ExpandFailure::Transient);
        assert_eq!(
            msg,
            "driver name d.csi not found in the list of registered CSI drivers"
        );

        let pvc: PersistentVolumeClaim = serde_yaml::from_str(
            "metadata: {name: c}\nspec: {}\nstatus: {allocatedResourceStatuses: {storage: NodeResizeInProgress}, conditions: [{type: NodeResizeError, status: 'True', message: old}, {type: ModifyingVolume, status: 'True'}]}",
        )
        .expect("pvc");
        let now = crate::pods::status::time(std::time::UNIX_EPOCH);
        assert_eq!(
            resize_failed_patch(&pvc, &ExpandFailure::Transient, "m", now.clone()),
            None
        );
        let p = resize_failed_patch(&pvc, &ExpandFailure::Infeasible, "boom", now.clone())
            .expect("patch");
        assert_eq!(
            p["status"]["allocatedResourceStatuses"]["storage"],
            "NodeResizeInfeasible"
        );
        let conds = p["status"]["conditions"].as_array().expect("conditions");
        let types: Vec<&str> = conds.iter().filter_map(|c| c["type"].as_str()).collect();
        assert_eq!(types, ["ModifyingVolume", "NodeResizeError"]);
        assert_eq!(conds[1]["status"], "True");
        assert_eq!(conds[1]["message"], "failed to expand pvc with boom");
        assert_eq!(conds[1]["lastTransitionTime"], "1970-01-01T00:00:00Z");
        assert!(
            p.get("metadata").is_none(),
            "no resourceVersion: the failure is recorded"
        );
        // A failure that may pass: the condition only, the resize status stays.
        let p = resize_failed_patch(&pvc, &ExpandFailure::Final, "boom", now).expect("patch");
        assert!(p["status"].get("allocatedResourceStatuses").is_none());
        assert_eq!(p["status"]["conditions"][1]["type"], "NodeResizeError");
        // The node does not try a claim marked infeasible again.
        let pv: PersistentVolume =
            serde_yaml::from_str("metadata: {name: pv}\nspec: {capacity: {storage: 2Gi}}")
                .expect("pv");
        let marked: PersistentVolumeClaim = serde_yaml::from_str(
            "metadata: {name: c}\nspec: {}\nstatus: {capacity: {storage: 1Mi}, allocatedResourceStatuses: {storage: NodeResizeInfeasible}}",
        )
        .expect("pvc");
        assert_eq!(expansion(&marked, &pv), Expansion::None);
    }
}
