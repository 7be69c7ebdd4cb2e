#![allow(clippy::unwrap_used)]

//! Fakes of the DRA manager's seams for unit tests: ResourceClaims in memory and drivers that
//! answer with scripted CDI devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{
    AllocationResult, DeviceAllocationResult, DeviceRequestAllocationResult, ResourceClaim,
    ResourceClaimConsumerReference, ResourceClaimStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::api;
use super::manager::{ClaimSource, DriverCalls};

/// ResourceClaims by (namespace, name).
#[derive(Default)]
pub struct FakeClaims(pub Mutex<BTreeMap<(String, String), ResourceClaim>>);

impl FakeClaims {
    pub fn put(&self, c: ResourceClaim) {
        let key = (
            c.metadata.namespace.clone().unwrap_or_default(),
            c.metadata.name.clone().unwrap_or_default(),
        );
        self.0.lock().unwrap().insert(key, c);
    }
}

impl ClaimSource for FakeClaims {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ResourceClaim, String>> {
        let found = self
            .0
            .lock()
            .unwrap()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move {
            found.ok_or_else(|| format!("resourceclaims.resource.k8s.io \"{name}\" not found"))
        })
    }
}

/// A claim `ns/name` (uid `uid`) allocated one device per request of `requests` by `driver`,
/// reserved for the pods `reserved`, owned by `owner` (a pod uid) when given.
pub fn claim(
    name: &str,
    uid: &str,
    driver: &str,
    requests: &[&str],
    reserved: &[&str],
    owner: Option<&str>,
) -> ResourceClaim {
    ResourceClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: "p".into(),
                    uid: o.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        status: Some(ResourceClaimStatus {
            allocation: Some(AllocationResult {
                devices: Some(DeviceAllocationResult {
                    results: Some(
                        requests
                            .iter()
                            .enumerate()
                            .map(|(i, r)| DeviceRequestAllocationResult {
                                driver: driver.into(),
                                pool: "pool".into(),
                                device: format!("dev-{i}"),
                                request: r.to_string(),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            reserved_for: Some(
                reserved
                    .iter()
                    .map(|u| ResourceClaimConsumerReference {
                        resource: "pods".into(),
                        name: "p".into(),
                        uid: u.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A device a fake driver answers: (request names, CDI ids).
pub type AnsweredDevice = (Vec<String>, Vec<String>);

/// What the fake drivers saw and how they answer.
#[derive(Default)]
pub struct FakeDriverState {
    /// Registered driver names.
    pub registered: Vec<String>,
    /// (driver, claim names) of every NodePrepareResources.
    pub prepared: Vec<(String, Vec<String>)>,
    /// (driver, claim names) of every NodeUnprepareResources.
    pub unprepared: Vec<(String, Vec<String>)>,
    /// Every call fails with this message.
    pub fail: Option<String>,
    /// Per claim name: (request names, CDI ids) of each device answered.
    pub devices: BTreeMap<String, Vec<AnsweredDevice>>,
}

#[derive(Default, Clone)]
pub struct FakeDrivers(pub Arc<Mutex<FakeDriverState>>);

impl DriverCalls for FakeDrivers {
    fn check(&self, driver: &str) -> Result<(), String> {
        if self
            .0
            .lock()
            .unwrap()
            .registered
            .iter()
            .any(|d| d == driver)
        {
            Ok(())
        } else {
            Err(format!("DRA driver {driver} is not registered"))
        }
    }

    fn prepare<'a>(
        &'a self,
        driver: &'a str,
        claims: Vec<api::Claim>,
    ) -> BoxFuture<'a, Result<api::NodePrepareResourcesResponse, String>> {
        Box::pin(async move {
            let mut st = self.0.lock().unwrap();
            st.prepared.push((
                driver.to_string(),
                claims.iter().map(|c| c.name.clone()).collect(),
            ));
            if let Some(f) = &st.fail {
                return Err(format!("NodePrepareResources: {f}"));
            }
            let mut resp = api::NodePrepareResourcesResponse::default();
            for c in claims {
                let devices = st
                    .devices
                    .get(&c.name)
                    .into_iter()
                    .flatten()
                    .map(|(reqs, ids)| api::Device {
                        request_names: reqs.clone(),
                        pool_name: "pool".into(),
                        device_name: "dev".into(),
                        cdi_device_ids: ids.clone(),
                        share_id: None,
                    })
                    .collect();
                resp.claims.insert(
                    c.uid,
                    api::NodePrepareResourceResponse {
                        devices,
                        error: String::new(),
                    },
                );
            }
            Ok(resp)
        })
    }

    fn unprepare<'a>(
        &'a self,
        driver: &'a str,
        claims: Vec<api::Claim>,
    ) -> BoxFuture<'a, Result<api::NodeUnprepareResourcesResponse, String>> {
        Box::pin(async move {
            let mut st = self.0.lock().unwrap();
            st.unprepared.push((
                driver.to_string(),
                claims.iter().map(|c| c.name.clone()).collect(),
            ));
            if let Some(f) = &st.fail {
                return Err(format!("NodeUnprepareResources: {f}"));
            }
            let mut resp = api::NodeUnprepareResourcesResponse::default();
            for c in claims {
                resp.claims
                    .insert(c.uid, api::NodeUnprepareResourceResponse::default());
            }
            Ok(resp)
        })
    }
}

/// A pod `p` (uid `uid`) whose claims are `(pod claim name, Some(claim) | None for a template)`,
/// with the template's generated claim `generated` in its status, and containers
/// `(name, [(claim, request)])`.
pub fn pod(
    uid: &str,
    claims: &[(&str, Option<&str>)],
    generated: &[(&str, &str)],
    containers: &[(&str, &[(&str, &str)])],
) -> Pod {
    use k8s_openapi::api::core::v1 as core;
    let mut p = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(core::PodSpec {
            resource_claims: Some(
                claims
                    .iter()
                    .map(|(n, c)| core::PodResourceClaim {
                        name: n.to_string(),
                        resource_claim_name: c.map(|c| c.to_string()),
                        resource_claim_template_name: c.is_none().then(|| "tmpl".to_string()),
                    })
                    .collect(),
            ),
            containers: containers
                .iter()
                .map(|(n, cl)| core::Container {
                    name: n.to_string(),
                    image: Some("busybox".into()),
                    resources: Some(core::ResourceRequirements {
                        claims: Some(
                            cl.iter()
                                .map(|(c, r)| core::ResourceClaim {
                                    name: c.to_string(),
                                    request: (!r.is_empty()).then(|| r.to_string()),
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            resource_claim_statuses: Some(
                generated
                    .iter()
                    .map(|(n, c)| core::PodResourceClaimStatus {
                        name: n.to_string(),
                        resource_claim_name: Some(c.to_string()),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    };
    if generated.is_empty() {
        if let Some(s) = p.status.as_mut() {
            s.resource_claim_statuses = None;
        }
    }
    p
}
