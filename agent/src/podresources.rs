//! The pod resources API (`podresources/v1`, the kubelet's `PodResourcesLister`) on
//! `<root-dir>/pod-resources/kubelet.sock`: monitoring agents and device plugins ask which
//! devices the node's pods hold (`List`, `Get`) and which it has (`GetAllocatableResources`).
//!
//! The answers are made by pure functions ([`list`], [`get`], [`allocatable`]) from what a
//! [`Source`] reports: the pods the node runs (admitted, not ended) and the devices of the
//! device plugins. bosun has no CPU or memory manager policies (`static`, `Static`): CPU ids
//! and memory are never reported, as a kubelet with the `none` policies; nor are dynamic
//! resources (DRA is not implemented).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The API generated from `proto/podresources/v1/api.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("v1");
}

use api::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use api::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};

/// The socket's folder below the root dir, and its name.
pub const FOLDER: &str = "pod-resources";
pub const SOCKET: &str = "kubelet.sock";

/// What the API reports from.
pub trait Source: Send + Sync {
    /// The pods the node runs (admitted and not ended).
    fn pods(&self) -> Vec<Arc<Pod>>;
    /// The devices `container` of the pod `pod_uid` holds: (resource, device ids).
    fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)>;
    /// Every device of the device plugins, by resource.
    fn devices(&self) -> BTreeMap<String, Vec<String>>;
}

/// The containers the API reports of a pod, in the kubelet's order: the sidecars (restartable
/// init containers), then the regular containers.
fn reported_containers(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .chain(spec.containers.iter())
        .collect()
}

fn devices_of(held: Vec<(String, Vec<String>)>) -> Vec<ContainerDevices> {
    held.into_iter()
        .map(|(resource_name, device_ids)| ContainerDevices {
            resource_name,
            device_ids,
            topology: None,
        })
        .collect()
}

/// One pod's resources: each reported container with its devices.
pub fn pod_resources(pod: &Pod, source: &dyn Source) -> PodResources {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    PodResources {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        containers: reported_containers(pod)
            .into_iter()
            .map(|c| ContainerResources {
                name: c.name.clone(),
                devices: devices_of(source.held(uid, &c.name)),
                cpu_ids: Vec::new(),
                memory: Vec::new(),
                dynamic_resources: Vec::new(),
            })
            .collect(),
    }
}

/// `List`: every pod the node runs, by namespace and name.
pub fn list(source: &dyn Source) -> ListPodResourcesResponse {
    let mut pods = source.pods();
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    ListPodResourcesResponse {
        pod_resources: pods.iter().map(|p| pod_resources(p, source)).collect(),
    }
}

/// `Get`: one pod the node runs, or the kubelet's error.
pub fn get(source: &dyn Source, namespace: &str, name: &str) -> Result<PodResources, String> {
    source
        .pods()
        .iter()
        .find(|p| {
            p.metadata.namespace.as_deref().unwrap_or_default() == namespace
                && p.metadata.name.as_deref() == Some(name)
        })
        .map(|p| pod_resources(p, source))
        .ok_or_else(|| format!("pod {name} in namespace {namespace} not found"))
}

/// `GetAllocatableResources`: every device the plugins list (the capacity, not what is free).
pub fn allocatable(source: &dyn Source) -> AllocatableResourcesResponse {
    AllocatableResourcesResponse {
        devices: devices_of(source.devices().into_iter().collect()),
        cpu_ids: Vec::new(),
        memory: Vec::new(),
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("pod resources API: folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod resources API: listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Lister {
    source: Arc<dyn Source>,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _: tonic::Request<ListPodResourcesRequest>,
    ) -> Result<tonic::Response<ListPodResourcesResponse>, tonic::Status> {
        Ok(tonic::Response::new(list(self.source.as_ref())))
    }

    async fn get_allocatable_resources(
        &self,
        _: tonic::Request<AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<AllocatableResourcesResponse>, tonic::Status> {
        Ok(tonic::Response::new(allocatable(self.source.as_ref())))
    }

    async fn get(
        &self,
        request: tonic::Request<GetPodResourcesRequest>,
    ) -> Result<tonic::Response<GetPodResourcesResponse>, tonic::Status> {
        let r = request.into_inner();
        get(self.source.as_ref(), &r.pod_namespace, &r.pod_name)
            .map(|p| {
                tonic::Response::new(GetPodResourcesResponse {
                    pod_resources: Some(p),
                })
            })
            .map_err(tonic::Status::unknown)
    }
}

/// Serves the API on `<root_dir>/pod-resources/kubelet.sock` (a stale socket removed first)
/// in the background.
pub fn serve(root_dir: &Path, source: Arc<dyn Source>) -> Result<PathBuf, ServeError> {
    let dir = root_dir.join(FOLDER);
    std::fs::create_dir_all(&dir).map_err(|source| ServeError::Folder {
        path: dir.clone(),
        source,
    })?;
    let sock = dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock).map_err(|source| ServeError::Listen {
        path: sock.clone(),
        source,
    })?;
    let svc = PodResourcesListerServer::new(Lister { source });
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let at = sock.clone();
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await
        {
            tracing::error!(socket = %at.display(), error = %e, "pod resources API ended");
        }
    });
    Ok(sock)
}

/// The node's pods and devices, as the pod manager and the device manager have them.
pub struct NodeSource {
    pub ctx: Arc<crate::pods::Ctx>,
}

impl Source for NodeSource {
    fn pods(&self) -> Vec<Arc<Pod>> {
        self.ctx.allocated.all()
    }

    fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
        self.ctx
            .devices
            .as_ref()
            .map(|d| d.held(pod_uid, container))
            .unwrap_or_default()
    }

    fn devices(&self) -> BTreeMap<String, Vec<String>> {
        self.ctx
            .devices
            .as_ref()
            .map(|d| d.devices())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// (pod uid, container) -> (resource, device ids).
    type Held = BTreeMap<(String, String), Vec<(String, Vec<String>)>>;

    #[derive(Default)]
    struct Fake {
        pods: Vec<Arc<Pod>>,
        held: Held,
        devices: BTreeMap<String, Vec<String>>,
    }

    impl Source for Fake {
        fn pods(&self) -> Vec<Arc<Pod>> {
            self.pods.clone()
        }
        fn held(&self, pod_uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
            self.held
                .get(&(pod_uid.to_string(), container.to_string()))
                .cloned()
                .unwrap_or_default()
        }
        fn devices(&self) -> BTreeMap<String, Vec<String>> {
            self.devices.clone()
        }
    }

    fn pod(ns: &str, name: &str, spec: &str) -> Arc<Pod> {
        let yaml =
            format!("metadata: {{name: {name}, namespace: {ns}, uid: u-{name}}}\nspec:\n{spec}");
        Arc::new(serde_yaml::from_str(&yaml).unwrap())
    }

    fn fake() -> Fake {
        let gpu = "  initContainers:\n  - {name: init, image: x}\n  - {name: side, image: x, restartPolicy: Always}\n  containers:\n  - {name: a, image: x}\n  - {name: b, image: x}\n";
        Fake {
            pods: vec![
                pod("zz", "last", "  containers:\n  - {name: c, image: x}\n"),
                pod("default", "gpu", gpu),
            ],
            held: BTreeMap::from([
                (
                    ("u-gpu".to_string(), "a".to_string()),
                    vec![("example.com/dev".to_string(), vec!["d2".to_string()])],
                ),
                (
                    ("u-gpu".to_string(), "side".to_string()),
                    vec![
                        ("example.com/dev".to_string(), vec!["d1".to_string()]),
                        ("example.com/nic".to_string(), vec!["n1".to_string()]),
                    ],
                ),
                (
                    ("u-gpu".to_string(), "init".to_string()),
                    vec![("example.com/dev".to_string(), vec!["d3".to_string()])],
                ),
            ]),
            devices: BTreeMap::from([
                (
                    "example.com/dev".to_string(),
                    vec!["d1".into(), "d2".into(), "d3".into()],
                ),
                ("example.com/nic".to_string(), vec!["n1".into()]),
            ]),
        }
    }

    /// (namespace/name, [(container, [(resource, ids)])])
    type Flat = Vec<(String, Vec<(String, Vec<(String, Vec<String>)>)>)>;

    fn flat(pods: &[PodResources]) -> Flat {
        pods.iter()
            .map(|p| {
                (
                    format!("{}/{}", p.namespace, p.name),
                    p.containers
                        .iter()
                        .map(|c| {
                            assert!(c.cpu_ids.is_empty() && c.memory.is_empty());
                            (
                                c.name.clone(),
                                c.devices
                                    .iter()
                                    .map(|d| (d.resource_name.clone(), d.device_ids.clone()))
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn list_reports_sidecars_then_containers_with_their_devices() {
        let f = fake();
        let got = flat(&list(&f).pod_resources);
        let want: Flat = vec![
            (
                s("default/gpu"),
                vec![
                    // The plain init container is not reported (the kubelet's List).
                    (
                        s("side"),
                        vec![
                            (s("example.com/dev"), vec![s("d1")]),
                            (s("example.com/nic"), vec![s("n1")]),
                        ],
                    ),
                    (s("a"), vec![(s("example.com/dev"), vec![s("d2")])]),
                    (s("b"), vec![]),
                ],
            ),
            (s("zz/last"), vec![(s("c"), vec![])]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn get_finds_one_pod_or_answers_the_kubelets_error() {
        let f = fake();
        let p = get(&f, "default", "gpu").unwrap();
        assert_eq!(flat(&[p]), flat(&list(&f).pod_resources[..1]));
        let cases = [("default", "nope"), ("zz", "gpu"), ("", "last")];
        for (ns, name) in cases {
            assert_eq!(
                get(&f, ns, name).unwrap_err(),
                format!("pod {name} in namespace {ns} not found")
            );
        }
    }

    #[test]
    fn allocatable_lists_every_device_by_resource() {
        let r = allocatable(&fake());
        let got: Vec<(String, Vec<String>)> = r
            .devices
            .iter()
            .map(|d| (d.resource_name.clone(), d.device_ids.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (s("example.com/dev"), vec![s("d1"), s("d2"), s("d3")]),
                (s("example.com/nic"), vec![s("n1")])
            ]
        );
        assert!(r.cpu_ids.is_empty() && r.memory.is_empty());
        assert!(allocatable(&Fake::default()).devices.is_empty());
    }

    /// The three calls over the socket, as a monitoring agent makes them (a real gRPC client on
    /// the unix socket).
    #[tokio::test]
    async fn the_socket_answers_list_get_and_allocatable() {
        use api::pod_resources_lister_client::PodResourcesListerClient;
        let tmp = tempfile::tempdir().unwrap();
        let f = Arc::new(fake());
        let sock = serve(tmp.path(), f.clone()).unwrap();
        assert_eq!(sock, tmp.path().join("pod-resources/kubelet.sock"));
        // Served anew over a stale socket (an agent restart).
        let sock = serve(tmp.path(), f.clone()).unwrap();
        let channel = bosun_volumes::csi::dial(&sock).await.unwrap();
        let mut client = PodResourcesListerClient::new(channel);
        let listed = client
            .list(ListPodResourcesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            flat(&listed.pod_resources),
            flat(&list(f.as_ref()).pod_resources)
        );
        let one = client
            .get(GetPodResourcesRequest {
                pod_name: s("gpu"),
                pod_namespace: s("default"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.pod_resources.unwrap().containers.len(), 3);
        let err = client
            .get(GetPodResourcesRequest {
                pod_name: s("nope"),
                pod_namespace: s("default"),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unknown);
        assert_eq!(err.message(), "pod nope in namespace default not found");
        let alloc = client
            .get_allocatable_resources(AllocatableResourcesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(alloc.devices.len(), 2);
    }
}
