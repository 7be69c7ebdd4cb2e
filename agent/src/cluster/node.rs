//! The Node object: registration with everything the kubelet fills in, the Lease heartbeat
//! (renewed every 10 s, 40 s duration) and node status (computed every 10 s, posted when it
//! changed or every 5 minutes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, GetParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;

use crate::eviction::NodeCondition as Pressure;
use crate::pods::status::time;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(300);
/// The Kubernetes version bosun speaks for (build metadata names bosun).
pub const KUBELET_VERSION: &str = crate::config::kubelet::KUBELET_VERSION;

/// What the node reports about itself; gathered once at start (and capacity on every status).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub addresses: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub max_pods: u32,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel: String,
    pub os_image: String,
    pub arch: String,
    pub port: i32,
    /// What the node's HTTP API serves that apiservers may rely on
    /// (`status.declaredFeatures`).
    pub declared_features: Vec<String>,
    /// `status.allocatable` (capacity minus the reservations: `pods::eviction::NodeResources`);
    /// empty: the capacity.
    pub allocatable: BTreeMap<String, Quantity>,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The first IPv4 address of the interface of the default route (what the kubelet picks when
/// `--node-ip` is not given).
pub fn default_node_ip() -> Option<String> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some("00000000"))?
        .split_whitespace()
        .next()?
        .to_string();
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &iface])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next().map(str::to_string))
}

impl NodeFacts {
    pub fn gather(
        memory_bytes: u64,
        name: &str,
        node_ip: Option<String>,
        extra_labels: &BTreeMap<String, String>,
        taints: Vec<Taint>,
        root_dir: &std::path::Path,
        max_pods: u32,
    ) -> NodeFacts {
        let arch = crate::pods::admission::go_arch().to_string();
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/hostname".into(), name.to_string());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), arch.clone());
        labels.insert("beta.kubernetes.io/os".into(), "linux".into());
        labels.insert("beta.kubernetes.io/arch".into(), arch.clone());
        labels.extend(extra_labels.clone());
        let mut addresses = Vec::new();
        let mut ips = crate::network::node_ips(node_ip.as_deref());
        if ips.is_empty() {
            ips.extend(default_node_ip());
        }
        addresses.extend(ips.into_iter().map(|ip| ("InternalIP".to_string(), ip)));
        addresses.push(("Hostname".to_string(), name.to_string()));
        let storage = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        let machine_id = read_trim("/etc/machine-id");
        let uuid = read_trim("/sys/class/dmi/id/product_uuid");
        NodeFacts {
            name: name.to_string(),
            addresses,
            labels,
            taints,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_bytes,
            ephemeral_storage_bytes: storage,
            max_pods,
            system_uuid: if uuid.is_empty() {
                machine_id.clone()
            } else {
                uuid
            },
            machine_id,
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image: os_image(),
            arch,
            port: 10250,
            declared_features: Vec::new(),
            allocatable: BTreeMap::new(),
        }
    }

    fn resources(&self) -> BTreeMap<String, Quantity> {
        let mut r = BTreeMap::new();
        r.insert("cpu".into(), Quantity(self.cpus.to_string()));
        r.insert(
            "memory".into(),
            Quantity(format!("{}Ki", self.memory_bytes / 1024)),
        );
        r.insert("pods".into(), Quantity(self.max_pods.to_string()));
        r.insert(
            "ephemeral-storage".into(),
            Quantity(format!("{}Ki", self.ephemeral_storage_bytes / 1024)),
        );
        r.insert("hugepages-2Mi".into(), Quantity("0".into()));
        r.insert("hugepages-1Gi".into(), Quantity("0".into()));
        r
    }

    /// The Node object to register.
    pub fn node(&self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: Some(self.status(SystemTime::now(), None, Vec::new(), Vec::new(), &[], None)),
        }
    }

    /// The patch that brings a Node registered before (by this agent or another) up to date:
    /// the labels, and attach/detach left to the controller (the kubelet's
    /// `reconcileCMADAnnotationWithExistingNode`: a node without the annotation gets no
    /// VolumeAttachments from the attach/detach controller).
    pub fn existing_node_patch(&self) -> serde_json::Value {
        serde_json::json!({"metadata": {
            "labels": self.labels,
            "annotations": {CONTROLLER_MANAGED_ATTACH_DETACH: "true"},
        }})
    }

    /// Node status: capacity, allocatable, conditions (keeping transition times; `pressure`: the
    /// eviction manager's; `ready_error`: why the node is not ready, e.g. it is shutting down), node
    /// info, images.
    pub fn status(
        &self,
        now: SystemTime,
        previous: Option<&NodeStatus>,
        images: Vec<k8s_openapi::api::core::v1::ContainerImage>,
        volumes_in_use: Vec<String>,
        pressure: &[Pressure],
        ready_error: Option<&str>,
    ) -> NodeStatus {
        let cond = |ty: &str, status: &str, reason: &str, message: &str| {
            let old = previous
                .and_then(|p| p.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == ty));
            let transition = match old {
                Some(o) if o.status == status => o.last_transition_time.clone(),
                _ => Some(time(now)),
            };
            NodeCondition {
                type_: ty.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: Some(time(now)),
                last_transition_time: transition,
            }
        };
        let pressure_cond = |c: Pressure| {
            let on = pressure.contains(&c);
            let (reason, message) = c.reason_and_message(on);
            cond(
                c.as_str(),
                if on { "True" } else { "False" },
                reason,
                message,
            )
        };
        NodeStatus {
            addresses: Some(
                self.addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.clone(),
                        address: a.clone(),
                    })
                    .collect(),
            ),
            capacity: Some(self.resources()),
            allocatable: Some(if self.allocatable.is_empty() {
                self.resources()
            } else {
                self.allocatable.clone()
            }),
            conditions: Some(vec![
                pressure_cond(Pressure::MemoryPressure),
                pressure_cond(Pressure::DiskPressure),
                pressure_cond(Pressure::PidPressure),
                match ready_error {
                    // The kubelet's ReadyCondition: its errors (here the shutdown manager's).
                    Some(e) => cond("Ready", "False", "KubeletNotReady", e),
                    None => cond(
                        "Ready",
                        "True",
                        "KubeletReady",
                        "kubelet is posting ready status",
                    ),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: self.port }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: self.arch.clone(),
                boot_id: self.boot_id.clone(),
                container_runtime_version: format!("bosun://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: self.kernel.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.to_string(),
                machine_id: self.machine_id.clone(),
                operating_system: "linux".into(),
                os_image: self.os_image.clone(),
                system_uuid: self.system_uuid.clone(),
                ..Default::default()
            }),
            images: (!images.is_empty()).then_some(images),
            // Mounted attachable volumes: the attach/detach controller never detaches these.
            volumes_in_use: Some(volumes_in_use),
            declared_features: Some(self.declared_features.clone()),
            ..Default::default()
        }
    }
}

/// The Node annotation that makes the attach/detach controller attach and detach this node's
/// volumes (the kubelet's `enableControllerAttachDetach`, on by default and always on here).
pub const CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// Creates the Node, or brings an existing one's labels and attach/detach annotation up to date
/// (the kubelet's registerWithAPIServer).
pub async fn register(client: &Client, facts: &NodeFacts) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    match api.create(&PostParams::default(), &facts.node()).await {
        Ok(_) => {
            tracing::info!(node = %facts.name, "node registered");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = facts.existing_node_patch();
            api.patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(node = %facts.name, "node already registered; labels and annotations updated");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Makes the Node the Lease's owner (so the garbage collector removes the Lease with the Node)
/// when the Lease has no owner yet and the Node's uid is known: the kubelet's
/// `setNodeOwnerFunc` (pkg/kubelet/util/nodelease.go), run at every renewal until it succeeds.
pub fn set_node_owner(lease: &mut Lease, node: &str, node_uid: Option<&str>) {
    let owners = lease.metadata.owner_references.get_or_insert_with(Vec::new);
    if let (true, Some(uid)) = (owners.is_empty(), node_uid) {
        owners.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.to_string(),
            uid: uid.to_string(),
            ..Default::default()
        });
    }
    if owners.is_empty() {
        lease.metadata.owner_references = None;
    }
}

/// Renews the node's Lease every 10 s, creating it when missing, owned by the Node. Never
/// returns.
pub async fn lease_loop(client: Client, name: String) {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    loop {
        let now = MicroTime(time(SystemTime::now()).0);
        let result = match api.get_opt(&name).await {
            Ok(found) => {
                let exists = found.is_some();
                let mut lease = found.unwrap_or_else(|| Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(LEASE_NAMESPACE.into()),
                        ..Default::default()
                    },
                    spec: None,
                });
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(name.clone());
                spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
                spec.renew_time = Some(now);
                if lease
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(|o| o.is_empty())
                {
                    match nodes.get_opt(&name).await {
                        Ok(node) => {
                            let uid = node.and_then(|n| n.metadata.uid);
                            set_node_owner(&mut lease, &name, uid.as_deref());
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot read the node to own its lease")
                        }
                    }
                }
                if exists {
                    api.replace(&name, &PostParams::default(), &lease)
                        .await
                        .map(|_| ())
                } else {
                    api.create(&PostParams::default(), &lease).await.map(|_| ())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot renew the node lease");
        }
        tokio::time::sleep(RENEW_INTERVAL).await;
    }
}

/// What the node's Ready condition depends on, each woken on a change: the runtime's pod
/// network (a CNI config) and the node shutdown.
pub struct Readiness {
    pub network: std::sync::Arc<crate::podnet::PodNetwork>,
    pub shutdown: std::sync::Arc<crate::pods::shutdown::NodeShutdown>,
}

/// Computes node status every 10 s; posts it when it changed (ignoring heartbeat times) or every
/// 5 minutes. Never returns.
pub async fn status_loop(
    client: Client,
    facts: NodeFacts,
    images: impl Fn() -> Vec<k8s_openapi::api::core::v1::ContainerImage>,
    volumes_in_use: impl Fn() -> Vec<String>,
    pressure: impl Fn() -> Vec<Pressure>,
    extended: impl Fn() -> BTreeMap<String, (u64, u64)>,
    readiness: Readiness,
) {
    let Readiness { shutdown, network } = readiness;
    let api: Api<Node> = Api::all(client);
    let mut last: Option<NodeStatus> = None;
    let mut last_post = Instant::now() - STATUS_REPORT_INTERVAL;
    let mut network_changes = network.subscribe();
    loop {
        let in_api = api.get_with(&facts.name, &GetParams::any()).await.ok();
        // The controller-manager's allocation (the kubelet's updatePodCIDR).
        if let Some(node) = &in_api {
            network.set_pod_cidrs(pod_cidrs(node));
        }
        network_changes.borrow_and_update();
        // The kubelet's errors in its order: the runtime's network, then the shutdown's.
        let network_error = network.error();
        let ready_error =
            crate::podnet::ready_error(&[network_error.as_deref(), shutdown.ready_error()]);
        let mut status = facts.status(
            SystemTime::now(),
            last.as_ref(),
            images(),
            volumes_in_use(),
            &pressure(),
            ready_error.as_deref(),
        );
        add_extended_resources(&mut status, &extended());
        // Compared with what the API holds too: the node lifecycle controller sets the
        // conditions to Unknown when the Lease lapsed (an apiserver outage), and only a post
        // brings them back.
        let in_api = in_api.and_then(|n| n.status);
        let changed = last
            .as_ref()
            .map(|l| !same_ignoring_heartbeats(l, &status))
            .unwrap_or(true)
            || in_api.is_some_and(|a| !same_conditions(&a, &status));
        if changed || last_post.elapsed() >= STATUS_REPORT_INTERVAL {
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(
                    &facts.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {
                    last = Some(status);
                    last_post = Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "cannot update node status"),
            }
        }
        // A shutdown starting or cancelled, the network becoming ready or not: posted at once.
        tokio::select! {
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            _ = shutdown.changed.notified() => {}
            _ = network_changes.changed() => {}
        }
    }
}

/// The Node's pod CIDRs: `spec.podCIDRs`, else `spec.podCIDR` (an older controller's).
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.clone().unwrap_or_default();
    match spec.pod_cidrs.filter(|c| !c.is_empty()) {
        Some(cidrs) => cidrs,
        None => spec
            .pod_cidr
            .filter(|c| !c.is_empty())
            .into_iter()
            .collect(),
    }
}

/// The device plugins' resources in capacity (every device) and allocatable (the healthy
/// ones); a resource whose plugin is gone stays, as 0, so that the merge patch clears it.
pub fn add_extended_resources(status: &mut NodeStatus, extended: &BTreeMap<String, (u64, u64)>) {
    for (name, (capacity, allocatable)) in extended {
        status
            .capacity
            .get_or_insert_with(BTreeMap::new)
            .insert(name.clone(), Quantity(capacity.to_string()));
        status
            .allocatable
            .get_or_insert_with(BTreeMap::new)
            .insert(name.clone(), Quantity(allocatable.to_string()));
    }
}

/// The conditions' types, statuses and reasons are the same.
fn same_conditions(a: &NodeStatus, b: &NodeStatus) -> bool {
    let key = |s: &NodeStatus| {
        let mut v: Vec<(String, String, Option<String>)> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        v.sort();
        v
    };
    key(a) == key(b)
}

fn same_ignoring_heartbeats(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {

    #[test]
    fn device_plugin_resources_join_capacity_and_allocatable() {
        let mut st = NodeStatus {
            capacity: Some(BTreeMap::from([("cpu".to_string(), Quantity("2".into()))])),
            allocatable: Some(BTreeMap::from([("cpu".to_string(), Quantity("2".into()))])),
            ..Default::default()
        };
        let ext = BTreeMap::from([
            ("example.com/resource".to_string(), (2, 1)),
            ("gone.example.com/x".to_string(), (0, 0)),
        ]);
        add_extended_resources(&mut st, &ext);
        let cap = st.capacity.expect("capacity");
        let alloc = st.allocatable.expect("allocatable");
        assert_eq!(cap["cpu"], Quantity("2".into()));
        assert_eq!(cap["example.com/resource"], Quantity("2".into()));
        assert_eq!(alloc["example.com/resource"], Quantity("1".into()));
        assert_eq!(cap["gone.example.com/x"], Quantity("0".into()));
        assert_eq!(alloc["gone.example.com/x"], Quantity("0".into()));
    }

    #[test]
    fn the_lease_is_owned_by_its_node_once_the_uid_is_known() {
        let mut lease = Lease::default();
        // The Node is not readable yet: no owner, try again at the next renewal.
        set_node_owner(&mut lease, "n1", None);
        assert_eq!(lease.metadata.owner_references, None);
        set_node_owner(&mut lease, "n1", Some("uid-1"));
        let owners = lease.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].api_version.as_str(),
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("v1", "Node", "n1", "uid-1")
        );
        // An owner already there is kept (a re-registered Node does not add a second one).
        set_node_owner(&mut lease, "n1", Some("uid-2"));
        assert_eq!(lease.metadata.owner_references.map(|o| o.len()), Some(1));
    }

    use super::*;

    #[test]
    fn conditions_set_to_unknown_by_the_controller_are_a_change() {
        let st = |ready: &str| -> NodeStatus {
            serde_json::from_value(serde_json::json!({"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady",
                 "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"}
            ]}))
            .expect("status")
        };
        let mut beat = st("True");
        if let Some(c) = beat.conditions.as_mut() {
            c[0].last_heartbeat_time = None;
        }
        assert!(same_conditions(&st("True"), &beat));
        assert!(!same_conditions(&st("Unknown"), &st("True")));
    }

    #[test]
    fn status_keeps_transition_times_and_reports_everything() {
        let facts = NodeFacts {
            name: "n1".into(),
            addresses: vec![("InternalIP".into(), "10.0.0.5".into())],
            labels: BTreeMap::new(),
            taints: vec![],
            cpus: 2,
            memory_bytes: 4 << 30,
            ephemeral_storage_bytes: 10 << 30,
            max_pods: 110,
            machine_id: "m".into(),
            system_uuid: "u".into(),
            boot_id: "b".into(),
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            arch: "amd64".into(),
            port: 10250,
            declared_features: vec![],
            allocatable: BTreeMap::from([("cpu".to_string(), Quantity("1500m".into()))]),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let s0 = facts.status(t0, None, vec![], vec![], &[], None);
        let s1 = facts.status(
            t0 + Duration::from_secs(10),
            Some(&s0),
            vec![],
            vec![],
            &[],
            None,
        );
        assert!(same_ignoring_heartbeats(&s0, &s1));
        let ready = |s: &NodeStatus| {
            s.conditions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .expect("ready")
        };
        assert_eq!(
            ready(&s1).last_transition_time,
            ready(&s0).last_transition_time
        );
        assert_ne!(
            ready(&s1).last_heartbeat_time,
            ready(&s0).last_heartbeat_time
        );
        assert_eq!(
            s0.allocatable.clone().expect("allocatable")["cpu"].0,
            "1500m"
        );
        // The eviction manager's conditions, with the kubelet's reasons.
        let s2 = facts.status(
            t0 + Duration::from_secs(20),
            Some(&s1),
            vec![],
            vec![],
            &[Pressure::DiskPressure],
            None,
        );
        let cond = |s: &NodeStatus, ty: &str| {
            s.conditions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == ty)
                .expect("condition")
        };
        let disk = cond(&s2, "DiskPressure");
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("True", Some("KubeletHasDiskPressure"))
        );
        assert_ne!(
            disk.last_transition_time,
            cond(&s1, "DiskPressure").last_transition_time
        );
        assert_eq!(cond(&s2, "MemoryPressure").status, "False");
        assert!(!same_ignoring_heartbeats(&s1, &s2));
        // The node shutting down: Ready goes False with the kubelet's reason and message, its
        // transition time now; back to True when the shutdown is cancelled.
        let t3 = t0 + Duration::from_secs(30);
        let s3 = facts.status(
            t3,
            Some(&s2),
            vec![],
            vec![],
            &[],
            Some(crate::shutdown::NOT_READY_MESSAGE),
        );
        let ready3 = cond(&s3, "Ready");
        assert_eq!(
            (
                ready3.status.as_str(),
                ready3.reason.as_deref(),
                ready3.message.as_deref()
            ),
            (
                "False",
                Some("KubeletNotReady"),
                Some("node is shutting down")
            )
        );
        assert_eq!(ready3.last_transition_time, Some(time(t3)));
        assert!(!same_conditions(&s2, &s3));
        let s4 = facts.status(
            t3 + Duration::from_secs(5),
            Some(&s3),
            vec![],
            vec![],
            &[],
            None,
        );
        assert_eq!(cond(&s4, "Ready").status, "True");
        let cap = s0.capacity.expect("capacity");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["memory"].0, format!("{}Ki", 4u64 << 20));
        let info = s0.node_info.expect("info");
        assert!(info.container_runtime_version.starts_with("bosun://"));
        assert!(info.kubelet_version.starts_with("v1.36"));
    }

    #[test]
    fn the_pod_cidrs_are_the_controller_managers() {
        let node = |spec: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}, "spec": spec}))
                .expect("node")
        };
        assert_eq!(
            pod_cidrs(&node(serde_json::json!({
                "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00::/64"]
            }))),
            vec!["10.244.1.0/24", "fd00::/64"]
        );
        assert_eq!(
            pod_cidrs(&node(serde_json::json!({"podCIDR": "10.244.2.0/24"}))),
            vec!["10.244.2.0/24"]
        );
        assert!(pod_cidrs(&node(serde_json::json!({}))).is_empty());
    }

    /// A one-CPU, 1 GiB node with no addresses, labels or allocatable.
    fn small_facts() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            addresses: vec![],
            labels: BTreeMap::new(),
            taints: vec![],
            cpus: 1,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 30,
            max_pods: 10,
            machine_id: "m".into(),
            system_uuid: "u".into(),
            boot_id: "b".into(),
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            arch: "amd64".into(),
            port: 10250,
            declared_features: vec![],
            allocatable: BTreeMap::new(),
        }
    }

    /// The network's error comes before the shutdown's in the Ready message.
    #[test]
    fn ready_is_false_while_the_pod_network_is_not_ready() {
        let facts = small_facts();
        let net = crate::podnet::node_message(crate::podnet::NOT_INITIALIZED);
        let ready = |err: Option<String>| {
            facts
                .status(
                    SystemTime::UNIX_EPOCH,
                    None,
                    vec![],
                    vec![],
                    &[],
                    err.as_deref(),
                )
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| {
                    (
                        c.status,
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default(),
                    )
                })
        };
        assert_eq!(
            ready(crate::podnet::ready_error(&[Some(&net), None])),
            Some(("False".into(), "KubeletNotReady".into(), net.clone()))
        );
        assert_eq!(
            ready(crate::podnet::ready_error(&[
                Some(&net),
                Some(crate::shutdown::NOT_READY_MESSAGE)
            ]))
            .map(|r| r.2),
            Some(format!("[{net}, node is shutting down]"))
        );
        assert_eq!(
            ready(crate::podnet::ready_error(&[None, None])).map(|r| r.0),
            Some("True".into())
        );
    }

    #[test]
    fn attach_and_detach_are_left_to_the_controller() {
        let facts = NodeFacts {
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            ..small_facts()
        };
        let annotation = |n: &Node| {
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("volumes.kubernetes.io/controller-managed-attach-detach"))
                .cloned()
        };
        assert_eq!(annotation(&facts.node()).as_deref(), Some("true"));
        // A Node that exists already (registered by a kubelet with
        // enableControllerAttachDetach: false, say) gets the annotation and the labels.
        let p = facts.existing_node_patch();
        assert_eq!(
            p["metadata"]["annotations"]["volumes.kubernetes.io/controller-managed-attach-detach"],
            "true"
        );
        assert_eq!(p["metadata"]["labels"]["zone"], "a");
    }
}
