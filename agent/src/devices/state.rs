//! Pure: the device plugin manager's bookkeeping, as the kubelet's devicemanager keeps it.
//!
//! Per resource, the devices its plugin last listed (healthy or not) and whether the plugin is
//! still connected; per pod container and resource, the devices it was given and what the
//! plugin's `Allocate` answered. From these: the Node's capacity and allocatable (every device
//! and the healthy ones; a plugin gone makes its devices unhealthy at once and the resource 0
//! after [`STOP_GRACE`]), which devices a container gets ([`State::plan`], [`choose`]) with the
//! kubelet's messages, and the checkpoint ([`Checkpoint`]) that keeps allocations across
//! restarts so that no device is handed out twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::api::ContainerAllocateResponse;

/// The health value of a usable device.
pub const HEALTHY: &str = "Healthy";

/// How long a resource whose plugin went away stays on the Node (with no allocatable devices)
/// before it is reported as 0: the kubelet's `endpointStopGracePeriod`.
pub const STOP_GRACE: Duration = Duration::from_secs(5 * 60);

/// One resource's devices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    /// Device id -> healthy.
    pub devices: BTreeMap<String, bool>,
    /// When its plugin went away (`None` while connected).
    pub stopped: Option<Instant>,
}

/// The devices a container holds for one resource, and the plugin's answer for them.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub pod_uid: String,
    pub container: String,
    pub resource: String,
    pub device_ids: Vec<String>,
    pub response: ContainerAllocateResponse,
}

/// Why a container's devices cannot be allocated (the kubelet's messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("cannot allocate unregistered device {0}")]
    Unregistered(String),
    #[error(
        "requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}"
    )]
    Unavailable {
        resource: String,
        requested: usize,
        available: usize,
    },
}

/// What a container needs for one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// It already holds its devices (an earlier admission, or before a restart).
    Held,
    /// `count` devices from `available` (sorted, free and healthy).
    Allocate {
        count: usize,
        available: Vec<String>,
    },
}

/// The manager's state.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub resources: BTreeMap<String, Resource>,
    pub allocations: Vec<Allocation>,
}

impl State {
    /// A plugin (re)connected: its resource is live again (the devices come with its first
    /// ListAndWatch answer).
    pub fn plugin_started(&mut self, resource: &str) {
        self.resources
            .entry(resource.to_string())
            .or_default()
            .stopped = None;
    }

    /// A ListAndWatch answer: the resource's whole device list.
    pub fn update(&mut self, resource: &str, devices: impl IntoIterator<Item = (String, bool)>) {
        let r = self.resources.entry(resource.to_string()).or_default();
        r.devices = devices.into_iter().collect();
        r.stopped = None;
    }

    /// Its plugin went away: every device is unhealthy from now on.
    pub fn plugin_stopped(&mut self, resource: &str, now: Instant) {
        if let Some(r) = self.resources.get_mut(resource) {
            r.devices.values_mut().for_each(|h| *h = false);
            r.stopped.get_or_insert(now);
        }
    }

    /// Forgets resources whose plugin has been gone for [`STOP_GRACE`]; they stay in the
    /// capacity as 0 (the kubelet reports removed resources as 0 so that the Node's copy drops
    /// them to nothing).
    pub fn expire(&mut self, now: Instant) {
        for r in self.resources.values_mut() {
            if r.stopped
                .is_some_and(|t| now.duration_since(t) >= STOP_GRACE)
            {
                r.devices.clear();
            }
        }
    }

    /// Resource -> (capacity, allocatable): every device listed and the healthy ones.
    pub fn capacity(&self) -> BTreeMap<String, (u64, u64)> {
        self.resources
            .iter()
            .map(|(name, r)| {
                let healthy = r.devices.values().filter(|h| **h).count() as u64;
                (name.clone(), (r.devices.len() as u64, healthy))
            })
            .collect()
    }

    /// Resource -> what admission counts as allocatable for the pod `pod_uid`: the healthy
    /// devices; for a pod that already holds devices (admitted before a restart, its
    /// allocation in the checkpoint), at least the devices all pods hold, as the kubelet's
    /// `sanitizeNodeAllocatable`. After a restart a plugin lists no device until it registers
    /// again, and the pods that run with its devices must not be refused meanwhile.
    pub fn admission_allocatable(&self, pod_uid: &str) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .capacity()
            .into_iter()
            .map(|(r, (_, healthy))| (r, healthy))
            .collect();
        if !self.allocations.iter().any(|a| a.pod_uid == pod_uid) {
            return out;
        }
        let mut held: BTreeMap<&str, u64> = BTreeMap::new();
        for a in &self.allocations {
            *held.entry(a.resource.as_str()).or_default() += a.device_ids.len() as u64;
        }
        for (resource, n) in held {
            let v = out.entry(resource.to_string()).or_default();
            *v = (*v).max(n);
        }
        out
    }

    /// Whether the manager handles `resource`: a plugin registered it or a container holds it.
    pub fn is_device_resource(&self, resource: &str) -> bool {
        self.resources.contains_key(resource)
            || self.allocations.iter().any(|a| a.resource == resource)
    }

    /// Device ids in use by any container.
    fn in_use(&self, resource: &str) -> HashSet<&str> {
        self.allocations
            .iter()
            .filter(|a| a.resource == resource)
            .flat_map(|a| a.device_ids.iter().map(String::as_str))
            .collect()
    }

    /// What `container` of `pod_uid` needs to hold `count` devices of `resource` (the kubelet's
    /// devicesToAllocate): nothing when it holds them already, else free healthy devices.
    pub fn plan(
        &self,
        pod_uid: &str,
        container: &str,
        resource: &str,
        count: usize,
    ) -> Result<Plan, PlanError> {
        if self
            .allocations
            .iter()
            .any(|a| a.pod_uid == pod_uid && a.container == container && a.resource == resource)
        {
            return Ok(Plan::Held);
        }
        let Some(r) = self.resources.get(resource) else {
            return Err(PlanError::Unregistered(resource.to_string()));
        };
        let used = self.in_use(resource);
        let available: Vec<String> = r
            .devices
            .iter()
            .filter(|(id, healthy)| **healthy && !used.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        if available.len() < count {
            return Err(PlanError::Unavailable {
                resource: resource.to_string(),
                requested: count,
                available: available.len(),
            });
        }
        Ok(Plan::Allocate { count, available })
    }

    /// Records what a container was given.
    pub fn allocated(&mut self, a: Allocation) {
        self.allocations.retain(|x| {
            !(x.pod_uid == a.pod_uid && x.container == a.container && x.resource == a.resource)
        });
        self.allocations.push(a);
    }

    /// The allocations of one container, in the order they were made.
    pub fn container(&self, pod_uid: &str, container: &str) -> Vec<&Allocation> {
        self.allocations
            .iter()
            .filter(|a| a.pod_uid == pod_uid && a.container == container)
            .collect()
    }

    /// Frees the devices of pods not in `active`; true when something was freed.
    pub fn retain_pods(&mut self, active: &HashSet<String>) -> bool {
        let before = self.allocations.len();
        self.allocations.retain(|a| active.contains(&a.pod_uid));
        before != self.allocations.len()
    }

    /// The checkpoint of the allocations and of the devices each resource had.
    pub fn checkpoint(&self) -> Checkpoint {
        let data = CheckpointData {
            pod_device_entries: self
                .allocations
                .iter()
                .map(|a| PodDevicesEntry {
                    pod_uid: a.pod_uid.clone(),
                    container_name: a.container.clone(),
                    resource_name: a.resource.clone(),
                    device_ids: BTreeMap::from([("-1".to_string(), a.device_ids.clone())]),
                    alloc_resp: base64::engine::general_purpose::STANDARD
                        .encode(a.response.encode_to_vec()),
                })
                .collect(),
            registered_devices: self
                .resources
                .iter()
                .map(|(n, r)| (n.clone(), r.devices.keys().cloned().collect()))
                .collect(),
        };
        Checkpoint {
            checksum: data.checksum(),
            data,
        }
    }

    /// The state a checkpoint describes: its allocations, and its resources with every device
    /// unhealthy until their plugin registers again and lists them (the kubelet's
    /// readCheckpoint), stopped `now` so that they expire if it never does.
    pub fn restore(cp: &Checkpoint, now: Instant) -> Result<State, CheckpointError> {
        if cp.checksum != cp.data.checksum() {
            return Err(CheckpointError::Checksum);
        }
        let mut allocations = Vec::new();
        for e in &cp.data.pod_device_entries {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&e.alloc_resp)
                .map_err(|err| CheckpointError::Entry(format!("{}: {err}", e.pod_uid)))?;
            let response = ContainerAllocateResponse::decode(bytes.as_slice())
                .map_err(|err| CheckpointError::Entry(format!("{}: {err}", e.pod_uid)))?;
            let ids: BTreeSet<String> = e.device_ids.values().flatten().cloned().collect();
            allocations.push(Allocation {
                pod_uid: e.pod_uid.clone(),
                container: e.container_name.clone(),
                resource: e.resource_name.clone(),
                device_ids: ids.into_iter().collect(),
                response,
            });
        }
        let resources = cp
            .data
            .registered_devices
            .iter()
            .map(|(n, ids)| {
                let r = Resource {
                    devices: ids.iter().map(|id| (id.clone(), false)).collect(),
                    stopped: Some(now),
                };
                (n.clone(), r)
            })
            .collect();
        Ok(State {
            resources,
            allocations,
        })
    }
}

/// Picks `count` devices of `available`: the plugin's preference when it gave one that fits
/// (that many distinct available devices), else the first ones in order.
pub fn choose(available: &[String], count: usize, preferred: Option<&[String]>) -> Vec<String> {
    if let Some(p) = preferred {
        let distinct: BTreeSet<&String> = p.iter().collect();
        if p.len() == count && distinct.len() == count && p.iter().all(|d| available.contains(d)) {
            return p.to_vec();
        }
    }
    available.iter().take(count).cloned().collect()
}

/// The allocations on disk (`<root-dir>/device-plugins/bosun_internal_checkpoint`): the
/// kubelet's `kubelet_internal_checkpoint` layout (entries with the Allocate answer as base64
/// protobuf, the registered devices), with a checksum of its own (FNV-1a of the data's JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(rename = "Data")]
    pub data: CheckpointData,
    #[serde(rename = "Checksum")]
    pub checksum: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointData {
    #[serde(rename = "PodDeviceEntries", default)]
    pub pod_device_entries: Vec<PodDevicesEntry>,
    #[serde(rename = "RegisteredDevices", default)]
    pub registered_devices: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodDevicesEntry {
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "ContainerName")]
    pub container_name: String,
    #[serde(rename = "ResourceName")]
    pub resource_name: String,
    /// NUMA node -> device ids (`-1`: no topology).
    #[serde(rename = "DeviceIDs")]
    pub device_ids: BTreeMap<String, Vec<String>>,
    #[serde(rename = "AllocResp")]
    pub alloc_resp: String,
}

impl CheckpointData {
    fn checksum(&self) -> u64 {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut h: u32 = 0x811c_9dc5;
        for b in json {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        u64::from(h)
    }
}

/// A checkpoint that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is corrupted: checksum mismatch")]
    Checksum,
    #[error("checkpoint entry of pod {0}")]
    Entry(String),
}

pub use crate::admission::is_extended_resource_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn state(devs: &[(&str, bool)]) -> State {
        let mut s = State::default();
        s.update(
            "example.com/resource",
            devs.iter().map(|(d, h)| (d.to_string(), *h)),
        );
        s
    }

    fn alloc(pod: &str, c: &str, devs: &[&str]) -> Allocation {
        Allocation {
            pod_uid: pod.into(),
            container: c.into(),
            resource: "example.com/resource".into(),
            device_ids: ids(devs),
            response: ContainerAllocateResponse {
                envs: [("DEV".to_string(), devs.join(","))].into(),
                ..Default::default()
            },
        }
    }

    const R: &str = "example.com/resource";

    #[test]
    fn capacity_counts_all_devices_and_allocatable_the_healthy_ones() {
        let mut s = state(&[("Dev-1", true), ("Dev-2", false), ("Dev-3", true)]);
        assert_eq!(s.capacity()[R], (3, 2));
        let t0 = Instant::now();
        s.plugin_stopped(R, t0);
        assert_eq!(s.capacity()[R], (3, 0), "gone: nothing allocatable at once");
        s.expire(t0 + STOP_GRACE - Duration::from_secs(1));
        assert_eq!(s.capacity()[R], (3, 0));
        s.expire(t0 + STOP_GRACE);
        assert_eq!(
            s.capacity()[R],
            (0, 0),
            "after the grace period: 0, still reported"
        );
        s.update(R, [("Dev-1".to_string(), true)]);
        assert_eq!(s.capacity()[R], (1, 1), "back when the plugin lists again");
    }

    #[test]
    fn admission_counts_held_devices_for_pods_that_hold_some() {
        type Held<'a> = &'a [(&'a str, &'a str, &'a [&'a str])];
        type Case<'a> = (
            Option<&'a [(&'a str, bool)]>,
            Held<'a>,
            &'a str,
            Option<u64>,
        );
        // (plugin listed (healthy devices), allocations, pod admitted, allocatable it sees)
        let none: Held = &[];
        let two_held: Held = &[("p1", "c", &["Dev-1"]), ("p2", "c", &["Dev-2"])];
        let cases: &[Case] = &[
            // No plugin, nothing held: the resource is unknown.
            (None, none, "p1", None),
            // A plugin with two healthy devices: 2 for everyone.
            (
                Some(&[("Dev-1", true), ("Dev-2", true)]),
                none,
                "p1",
                Some(2),
            ),
            (
                Some(&[("Dev-1", true), ("Dev-2", true)]),
                two_held,
                "p3",
                Some(2),
            ),
            // After a restart, before the plugin registers again: the pods that hold devices
            // see what is held; a new pod sees nothing.
            (None, two_held, "p1", Some(2)),
            (None, two_held, "p3", None),
            (Some(&[]), two_held, "p2", Some(2)),
            (Some(&[]), two_held, "p3", Some(0)),
            // One device turned unhealthy: its holder still fits, a newcomer sees 1.
            (
                Some(&[("Dev-1", false), ("Dev-2", true)]),
                two_held,
                "p1",
                Some(2),
            ),
            (
                Some(&[("Dev-1", false), ("Dev-2", true)]),
                two_held,
                "p3",
                Some(1),
            ),
        ];
        for (i, (listed, held, pod, want)) in cases.iter().enumerate() {
            let mut s = State::default();
            if let Some(devs) = listed {
                s.update(R, devs.iter().map(|(d, h)| (d.to_string(), *h)));
            }
            for (p, c, devs) in held.iter() {
                s.allocated(alloc(p, c, devs));
            }
            assert_eq!(
                s.admission_allocatable(pod).get(R).copied(),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn plans_as_the_kubelet() {
        let mut s = state(&[("Dev-1", true), ("Dev-2", true), ("Dev-3", false)]);
        assert_eq!(
            s.plan("p1", "c", R, 1),
            Ok(Plan::Allocate {
                count: 1,
                available: ids(&["Dev-1", "Dev-2"])
            })
        );
        s.allocated(alloc("p1", "c", &["Dev-1"]));
        assert_eq!(s.plan("p1", "c", R, 1), Ok(Plan::Held));
        assert_eq!(
            s.plan("p2", "c", R, 1),
            Ok(Plan::Allocate {
                count: 1,
                available: ids(&["Dev-2"])
            })
        );
        assert_eq!(
            s.plan("p2", "c", R, 2).map_err(|e| e.to_string()),
            Err("requested number of devices unavailable for example.com/resource. Requested: 2, Available: 1".into())
        );
        assert_eq!(
            s.plan("p2", "c", "other.com/x", 1)
                .map_err(|e| e.to_string()),
            Err("cannot allocate unregistered device other.com/x".into())
        );
        // Freed with the pod.
        assert!(s.retain_pods(&HashSet::from(["p2".to_string()])));
        assert!(!s.retain_pods(&HashSet::from(["p2".to_string()])));
        assert!(
            matches!(s.plan("p2", "c", R, 2), Ok(Plan::Allocate { available, .. }) if available.len() == 2)
        );
    }

    #[test]
    fn preferred_allocations_are_used_only_when_they_fit() {
        let avail = ids(&["a", "b", "c"]);
        assert_eq!(choose(&avail, 2, None), ids(&["a", "b"]));
        assert_eq!(choose(&avail, 2, Some(&ids(&["c", "a"]))), ids(&["c", "a"]));
        assert_eq!(choose(&avail, 2, Some(&ids(&["c", "x"]))), ids(&["a", "b"]));
        assert_eq!(choose(&avail, 2, Some(&ids(&["c", "c"]))), ids(&["a", "b"]));
        assert_eq!(choose(&avail, 2, Some(&ids(&["c"]))), ids(&["a", "b"]));
    }

    #[test]
    fn checkpoint_round_trip_keeps_allocations_and_never_hands_out_twice() {
        let mut s = state(&[("Dev-1", true), ("Dev-2", true)]);
        s.allocated(alloc("p1", "c", &["Dev-2"]));
        let cp = s.checkpoint();
        let json = serde_json::to_value(&cp).expect("json");
        assert_eq!(
            json["Data"]["PodDeviceEntries"][0]["DeviceIDs"]["-1"][0],
            "Dev-2"
        );
        assert_eq!(
            json["Data"]["RegisteredDevices"][R]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let back: Checkpoint = serde_json::from_value(json).expect("parse");
        let now = Instant::now();
        let mut r = State::restore(&back, now).expect("restore");
        assert_eq!(r.container("p1", "c")[0].response.envs["DEV"], "Dev-2");
        // Known but unhealthy until the plugin lists its devices again.
        assert_eq!(r.capacity()[R], (2, 0));
        assert!(r.is_device_resource(R));
        r.update(
            R,
            [("Dev-1".to_string(), true), ("Dev-2".to_string(), true)],
        );
        assert_eq!(
            r.plan("p2", "c", R, 1),
            Ok(Plan::Allocate {
                count: 1,
                available: ids(&["Dev-1"])
            })
        );
        let mut bad = back.clone();
        bad.data.pod_device_entries[0].device_ids =
            BTreeMap::from([("-1".to_string(), ids(&["Dev-1"]))]);
        assert_eq!(
            State::restore(&bad, now).map(|_| ()),
            Err(CheckpointError::Checksum)
        );
    }

    #[test]
    fn extended_resource_names() {
        for ok in ["example.com/resource", "nvidia.com/gpu", "a.b-c.io/x_y.z"] {
            assert!(is_extended_resource_name(ok), "{ok}");
        }
        for bad in [
            "gpu",
            "kubernetes.io/gpu",
            "node.kubernetes.io/x",
            "requests.example.com/x",
            "Example.com/x",
            "example.com/",
            "example.com/-x",
            "/x",
        ] {
            assert!(!is_extended_resource_name(bad), "{bad}");
        }
    }
}
