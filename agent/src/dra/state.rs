//! The deciding part of DRA, pure: which ResourceClaims a pod uses
//! (`resourceclaim.Name`), whether a claim may be prepared for it (`IsForPod`,
//! `IsReservedForPod`, allocated), the claim info cache (the kubelet's `claimInfoCache`, kept in
//! the checkpoint) and what a prepare or unprepare round does to it, the CDI devices a container
//! gets (`GetResources`), and the kubelet's messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodResourceClaim};
use k8s_openapi::api::resource::v1::ResourceClaim;
use serde::{Deserialize, Serialize};

use super::api;

/// The kubelet's `resourceclaim.ErrAPIUnsupported`.
pub const ERR_API_UNSUPPORTED: &str = "none of the supported fields are set";
/// The kubelet's `resourceclaim.ErrClaimNotFound`.
pub const ERR_CLAIM_NOT_FOUND: &str = "ResourceClaim not created yet";

fn ns(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// Does the pod use ResourceClaims at all?
pub fn wants(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.resource_claims.as_ref())
        .is_some_and(|c| !c.is_empty())
}

/// The ResourceClaim a pod's claim stands for, as `resourceclaim.Name`: its
/// `resourceClaimName`, or for a template the generated claim named in
/// `status.resourceClaimStatuses` (then the claim must be owned by the pod: the bool). `None`
/// when the status names no claim (none was needed). An error when the claim was not made yet.
pub fn claim_name(pod: &Pod, pc: &PodResourceClaim) -> Result<(Option<String>, bool), String> {
    if let Some(n) = &pc.resource_claim_name {
        return Ok((Some(n.clone()), false));
    }
    if pc.resource_claim_template_name.is_some() {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.resource_claim_statuses.as_ref());
        if let Some(s) = statuses.into_iter().flatten().find(|s| s.name == pc.name) {
            return Ok((s.resource_claim_name.clone(), true));
        }
        return Err(format!(
            "pod \"{}/{}\": {ERR_CLAIM_NOT_FOUND}",
            ns(pod),
            name(pod)
        ));
    }
    Err(format!(
        "pod \"{}/{}\", spec.resourceClaim {:?}: {ERR_API_UNSUPPORTED}",
        ns(pod),
        name(pod),
        pc.name
    ))
}

/// The pod's claims in spec order: (the ResourceClaim's name, must its owner be checked).
/// Those with no generated claim are left out; the first error ends it.
pub fn claim_names(pod: &Pod) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    for pc in pod
        .spec
        .as_ref()
        .and_then(|s| s.resource_claims.as_ref())
        .into_iter()
        .flatten()
    {
        if let (Some(n), owner) = claim_name(pod, pc)? {
            out.push((n, owner));
        }
    }
    Ok(out)
}

/// One device a driver prepared for a claim (the kubelet's `state.Device`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Device {
    pub pool_name: String,
    pub device_name: String,
    #[serde(default, rename = "ShareID", skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    #[serde(default)]
    pub request_names: Vec<String>,
    #[serde(default, rename = "CDIDeviceIDs")]
    pub cdi_device_ids: Vec<String>,
}

/// What one driver prepared for a claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DriverState {
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// A claim the node prepares or prepared (the kubelet's `ClaimInfoState`, plus whether its
/// preparation finished, which bosun keeps across restarts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClaimInfo {
    #[serde(rename = "ClaimUID")]
    pub claim_uid: String,
    pub claim_name: String,
    pub namespace: String,
    /// The pods that use it.
    #[serde(rename = "PodUIDs")]
    pub pod_uids: BTreeSet<String>,
    /// By driver name: every driver of the claim's allocation.
    pub driver_state: BTreeMap<String, DriverState>,
    /// NodePrepareResources answered for every driver.
    #[serde(default)]
    pub prepared: bool,
}

impl ClaimInfo {
    /// The CDI device ids of the devices for `request` ("" or a device naming no request:
    /// every device), as `cdiDevicesAsList`.
    pub fn cdi_devices(&self, request: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.driver_state.values().flat_map(|s| &s.devices) {
            if request.is_empty()
                || d.request_names.is_empty()
                || d.request_names.iter().any(|r| r == request)
            {
                out.extend(d.cdi_device_ids.iter().cloned());
            }
        }
        out
    }

    fn claim(&self) -> api::Claim {
        api::Claim {
            namespace: self.namespace.clone(),
            uid: self.claim_uid.clone(),
            name: self.claim_name.clone(),
        }
    }
}

/// Whether `claim` may be prepared for `pod`, as the kubelet checks it before anything is
/// prepared (`IsForPod` for generated claims, `IsReservedForPod`, allocated): the claim info
/// for it (each driver of the allocation, nothing prepared yet), or the kubelet's message.
pub fn check_claim(
    pod: &Pod,
    claim: &ResourceClaim,
    must_check_owner: bool,
) -> Result<ClaimInfo, String> {
    let cns = claim.metadata.namespace.as_deref().unwrap_or("default");
    let cname = claim.metadata.name.as_deref().unwrap_or("");
    let cuid = claim.metadata.uid.as_deref().unwrap_or("");
    if must_check_owner {
        if cns != ns(pod) {
            return Err(format!(
                "ResourceClaim {cns}/{cname} is not in the same namespace as Pod {}/{}",
                ns(pod),
                name(pod)
            ));
        }
        let owned = claim
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid(pod));
        if !owned {
            return Err(format!(
                "ResourceClaim {cns}/{cname} was not created for Pod {}/{} (Pod is not owner)",
                ns(pod),
                name(pod)
            ));
        }
    }
    let status = claim.status.as_ref();
    let reserved = status
        .and_then(|s| s.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .any(|r| r.uid == uid(pod));
    if !reserved {
        return Err(format!(
            "pod {} ({}) is not allowed to use ResourceClaim {cname} ({cuid})",
            name(pod),
            uid(pod)
        ));
    }
    let Some(alloc) = status.and_then(|s| s.allocation.as_ref()) else {
        return Err(format!("ResourceClaim {cname}: not allocated"));
    };
    let driver_state = alloc
        .devices
        .as_ref()
        .and_then(|d| d.results.as_ref())
        .into_iter()
        .flatten()
        .map(|r| (r.driver.clone(), DriverState::default()))
        .collect();
    Ok(ClaimInfo {
        claim_uid: cuid.to_string(),
        claim_name: cname.to_string(),
        namespace: cns.to_string(),
        pod_uids: BTreeSet::new(),
        driver_state,
        prepared: false,
    })
}

/// The claim info cache, by (namespace, claim name); what the checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    pub claims: BTreeMap<(String, String), ClaimInfo>,
}

/// The claims to ask one driver about in one call.
pub type Batches = BTreeMap<String, Vec<api::Claim>>;

impl Cache {
    pub fn from_list(list: Vec<ClaimInfo>) -> Cache {
        Cache {
            claims: list
                .into_iter()
                .map(|c| ((c.namespace.clone(), c.claim_name.clone()), c))
                .collect(),
        }
    }

    pub fn list(&self) -> Vec<ClaimInfo> {
        self.claims.values().cloned().collect()
    }

    /// Every pod some claim is prepared (or being prepared) for.
    pub fn pods(&self) -> BTreeSet<String> {
        self.claims
            .values()
            .flat_map(|c| c.pod_uids.iter().cloned())
            .collect()
    }

    /// Does every one of `names` (in `namespace`) have a prepared claim the pod is in?
    pub fn prepared_for(&self, namespace: &str, names: &[String], pod_uid: &str) -> bool {
        names.iter().all(|n| {
            self.claims
                .get(&(namespace.to_string(), n.clone()))
                .is_some_and(|c| c.prepared && c.pod_uids.contains(pod_uid))
        })
    }

    /// The prepare round's cache step (the kubelet's, under its lock): each claim enters the
    /// cache (a claim of the same name but another uid still there is an error), the pod is
    /// added to it, and the claims not prepared yet are batched by driver.
    pub fn begin_prepare(
        &mut self,
        pod_uid: &str,
        infos: Vec<ClaimInfo>,
    ) -> Result<Batches, String> {
        let mut batches = Batches::new();
        for info in infos {
            let key = (info.namespace.clone(), info.claim_name.clone());
            let entry = self.claims.entry(key).or_insert_with(|| info.clone());
            if entry.claim_uid != info.claim_uid {
                return Err(format!("old ResourceClaim with same name {} and different UID {} still exists (previous pod force-deleted?!)", info.claim_name, entry.claim_uid));
            }
            entry.pod_uids.insert(pod_uid.to_string());
            if entry.prepared {
                continue;
            }
            for driver in entry.driver_state.keys() {
                batches
                    .entry(driver.clone())
                    .or_default()
                    .push(entry.claim());
            }
        }
        Ok(batches)
    }

    /// One driver's NodePrepareResources answer for `claims`: each claim's devices replace
    /// what the driver gave before; a claim's error, an unknown claim or a claim left out is
    /// the kubelet's error.
    pub fn apply_prepared(
        &mut self,
        driver: &str,
        claims: &[api::Claim],
        response: &api::NodePrepareResourcesResponse,
    ) -> Result<(), String> {
        for (uid, result) in &response.claims {
            let Some(req) = claims.iter().find(|c| &c.uid == uid) else {
                return Err(format!(
                    "NodePrepareResources returned result for unknown claim UID {uid}"
                ));
            };
            if !result.error.is_empty() {
                return Err(format!(
                    "NodePrepareResources failed for ResourceClaim {}: {}",
                    req.name, result.error
                ));
            }
            let Some(info) = self
                .claims
                .get_mut(&(req.namespace.clone(), req.name.clone()))
            else {
                return Err(format!(
                    "internal error: unable to get claim info for ResourceClaim {} in namespace {}",
                    req.name, req.namespace
                ));
            };
            let state = info.driver_state.entry(driver.to_string()).or_default();
            state.devices = result
                .devices
                .iter()
                .map(|d| Device {
                    pool_name: d.pool_name.clone(),
                    device_name: d.device_name.clone(),
                    share_id: d.share_id.clone(),
                    request_names: d.request_names.clone(),
                    cdi_device_ids: d.cdi_device_ids.clone(),
                })
                .collect();
        }
        let unfinished = claims.len().saturating_sub(response.claims.len());
        if unfinished != 0 {
            return Err(format!(
                "NodePrepareResources skipped {unfinished} ResourceClaims"
            ));
        }
        Ok(())
    }

    /// Every driver answered: the batched claims are prepared.
    pub fn finish_prepare(&mut self, batches: &Batches) {
        for c in batches.values().flatten() {
            if let Some(info) = self.claims.get_mut(&(c.namespace.clone(), c.name.clone())) {
                info.prepared = true;
            }
        }
    }

    /// The unprepare round's cache step for a pod that ended: a claim other pods still use
    /// only loses the pod; the others are batched by driver for NodeUnprepareResources (they
    /// leave the cache in [`Cache::finish_unprepare`]).
    pub fn begin_unprepare(&mut self, pod_uid: &str) -> Batches {
        let mut batches = Batches::new();
        for info in self.claims.values_mut() {
            if !info.pod_uids.contains(pod_uid) {
                continue;
            }
            if info.pod_uids.len() > 1 {
                info.pod_uids.remove(pod_uid);
                continue;
            }
            for driver in info.driver_state.keys() {
                batches
                    .entry(driver.clone())
                    .or_default()
                    .push(info.claim());
            }
        }
        batches
    }

    /// Every driver unprepared the batched claims: they leave the cache.
    pub fn finish_unprepare(&mut self, batches: &Batches) {
        for c in batches.values().flatten() {
            self.claims.remove(&(c.namespace.clone(), c.name.clone()));
        }
    }

    /// The CDI device ids `container` of `pod` gets (the kubelet's `GetResources`): for each
    /// claim the container names (`resources.claims`), the devices of the request it names (all
    /// when it names none). A claim not in the cache is the kubelet's internal error.
    pub fn container_cdi_devices(
        &self,
        pod: &Pod,
        container: &Container,
    ) -> Result<Vec<String>, String> {
        let wanted: Vec<(&str, &str)> = container
            .resources
            .as_ref()
            .and_then(|r| r.claims.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.request.as_deref().unwrap_or("")))
            .collect();
        let mut out = Vec::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        for pc in pod
            .spec
            .as_ref()
            .and_then(|s| s.resource_claims.as_ref())
            .into_iter()
            .flatten()
        {
            let requests: Vec<&str> = wanted
                .iter()
                .filter(|(n, _)| *n == pc.name)
                .map(|(_, r)| *r)
                .collect();
            if requests.is_empty() {
                continue;
            }
            let Some(claim) = claim_name(pod, pc)?.0 else {
                continue;
            };
            let Some(info) = self.claims.get(&(ns(pod).to_string(), claim.clone())) else {
                return Err(format!("internal error: unable to get claim info for ResourceClaim {claim} in namespace {}", ns(pod)));
            };
            for r in requests {
                out.extend(info.cdi_devices(r));
            }
        }
        Ok(out)
    }
}

/// One driver's NodeUnprepareResources answer for `claims`, checked as the kubelet does.
pub fn check_unprepared(
    claims: &[api::Claim],
    response: &api::NodeUnprepareResourcesResponse,
) -> Result<(), String> {
    for (uid, result) in &response.claims {
        let Some(req) = claims.iter().find(|c| &c.uid == uid) else {
            return Err(format!(
                "NodeUnprepareResources returned result for unknown claim UID {uid}"
            ));
        };
        if !result.error.is_empty() {
            return Err(format!(
                "NodeUnprepareResources failed for ResourceClaim {}: {}",
                req.name, result.error
            ));
        }
    }
    let unfinished = claims.len().saturating_sub(response.claims.len());
    if unfinished != 0 {
        return Err(format!(
            "NodeUnprepareResources skipped {unfinished} ResourceClaims"
        ));
    }
    Ok(())
}

/// A gRPC failure as grpc-go prints it (the kubelet's messages wrap it).
pub fn rpc_message(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

/// How long a pod whose resources could not be prepared (or unprepared) waits before the next
/// try after `failures` failures in a row: 5 s doubling, at most 2 min (the kubelet's pod
/// worker backs off a failing sync the same way up to its resync).
pub fn retry_after(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_secs(secs.min(120))
}

/// The checkpoint file's content (the kubelet's `DRACheckpoint` data, JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Checkpoint {
    pub kind: String,
    pub api_version: String,
    #[serde(default)]
    pub claim_info_state_list: Vec<ClaimInfo>,
}

pub const CHECKPOINT_KIND: &str = "DRACheckpoint";
pub const CHECKPOINT_API_VERSION: &str = "checkpoint.dra.kubelet.k8s.io/v1";

impl Checkpoint {
    pub fn new(cache: &Cache) -> Checkpoint {
        Checkpoint {
            kind: CHECKPOINT_KIND.into(),
            api_version: CHECKPOINT_API_VERSION.into(),
            claim_info_state_list: cache.list(),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
