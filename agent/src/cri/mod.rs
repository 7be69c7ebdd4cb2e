//! The CRI v1 gRPC API (`runtime.v1`, vendored from `k8s.io/cri-api` in `proto/cri/v1`) on unix
//! sockets, for the node's tools (crictl, kubeadm's preflight and reset): `<run-dir>/bosun.sock`
//! and the path `containerRuntimeEndpoint` names.
//!
//! It is backed by bosun's own state, read as the kubelet HTTP server reads it: pods from the
//! status files the workers write (`pods::status::read_all`), containers from the runtime's
//! records, images from the store. It never makes pods: they come from the apiserver and the
//! manifest folder, so `RunPodSandbox`, `CreateContainer` and `StartContainer` answer
//! `Unimplemented` saying so. `StopContainer` and `RemoveContainer` act on the runtime as
//! containerd's do (the pod's restart policy then decides whether the worker starts it again);
//! `ExecSync` runs through the runtime's exec, `Exec`, `Attach` and `PortForward` answer a URL
//! of the streaming server ([`stream`]). The stats calls report what `/stats/summary` does
//! (the cgroups' CPU and memory); `ReopenContainerLog` makes the log file again, which the
//! container's keeper then writes to. Ids: see [`view`]. Image pulls and removals go through the image manager and store as
//! `bosun pull` and `bosun images` do. Only root may connect (sockets 0660 root:root); every
//! request is bounded by tonic's message size limit (4 MiB) and answered with a gRPC error when
//! malformed.

pub mod stream;
pub mod view;

/// The generated messages and services of `runtime.v1`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Request, Response, Status};
use tower::ServiceExt;

use crate::images::ImageManager;
use crate::pods::Ctx;
use crate::server::stats::ContainerSample;
use api::image_service_server::{ImageService, ImageServiceServer};
use api::runtime_service_server::{RuntimeService, RuntimeServiceServer};

/// The CRI API version bosun serves.
pub const API_VERSION: &str = "v1";

/// Why the CRI socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cri socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cri socket {path} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("cri streaming server: {0}")]
    Streaming(std::io::Error),
}

const NOT_HERE: &str = "bosun runs pods from the apiserver and the static pod folder \
                        (staticPodPath): create a Pod instead";

/// Binds every socket (replacing stale ones, mode 0660) and serves them in the background.
/// Returns once all are listening.
pub fn serve(
    ctx: Arc<Ctx>,
    images: Arc<ImageManager>,
    sockets: &[PathBuf],
) -> Result<(), CriError> {
    let streams = stream::Streams::start(ctx.clone()).map_err(CriError::Streaming)?;
    let cri = Cri {
        ctx,
        images,
        streams,
    };
    for path in sockets {
        let listener = bind(path)?;
        let cri = cri.clone();
        let path = path.clone();
        tokio::spawn(async move {
            tracing::info!(socket = %path.display(), "CRI API listening");
            accept_loop(listener, cri).await;
        });
    }
    Ok(())
}

/// Binds `path` as a unix socket only root may use.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, CriError> {
    let err = |source| CriError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(CriError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Serves HTTP/2 gRPC on every connection of `listener`: `runtime.v1.ImageService` by its path,
/// everything else to `runtime.v1.RuntimeService` (which answers unknown methods).
pub async fn accept_loop(listener: tokio::net::UnixListener, cri: Cri) {
    let runtime = RuntimeServiceServer::new(cri.clone());
    let image = ImageServiceServer::new(cri);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "CRI socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (runtime, image) = (runtime.clone(), image.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (runtime, image) = (runtime.clone(), image.clone());
                    async move {
                        if req.uri().path().starts_with("/runtime.v1.ImageService/") {
                            image.oneshot(req).await
                        } else {
                            runtime.oneshot(req).await
                        }
                    }
                });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "CRI connection ended");
            }
        });
    }
}

/// The CRI services over the agent's state.
#[derive(Clone)]
pub struct Cri {
    ctx: Arc<Ctx>,
    /// The image manager (pulls, what is in use) and its store (listing, removal).
    images: Arc<ImageManager>,
    /// Where Exec and Attach send their clients.
    streams: Arc<stream::Streams>,
}

impl Cri {
    fn sandbox_ready(&self, uid: &str) -> bool {
        self.ctx.cfg.run_dir.join("sandboxes").join(uid).exists()
    }

    fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
        crate::pods::status::read_all(&self.ctx.cfg.run_dir)
    }

    /// The pod whose uid is `id` or starts with it (crictl takes unique prefixes).
    fn pod(&self, id: &str) -> Result<k8s_openapi::api::core::v1::Pod, Status> {
        let candidates = self
            .pods()
            .into_iter()
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), Vec::new(), p))
            .collect();
        match view::lookup(id, candidates) {
            view::Lookup::One(p) => Ok(p),
            view::Lookup::Ambiguous => Err(Status::invalid_argument(format!(
                "pod sandbox id {id:?} is ambiguous"
            ))),
            view::Lookup::None => Err(Status::not_found(format!("pod sandbox {id:?} not found"))),
        }
    }

    fn created(&self, id: &str) -> SystemTime {
        std::fs::metadata(self.ctx.cfg.run_dir.join("containers").join(id))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The container `id` names: its CRI id or a unique prefix of it, or its runtime id.
    fn record(&self, id: &str) -> Result<bosun_runtime::ContainerStatus, Status> {
        match view::lookup(id, view::container_candidates(self.ctx.runtime.list())) {
            view::Lookup::One(r) => Ok(r),
            view::Lookup::Ambiguous => Err(Status::invalid_argument(format!(
                "container id {id:?} is ambiguous"
            ))),
            view::Lookup::None => Err(Status::not_found(format!("container {id:?} not found"))),
        }
    }

    /// The CPU and memory of every running container, by runtime id (what `/stats/summary`
    /// reports).
    fn usage(&self) -> std::collections::HashMap<String, ContainerSample> {
        crate::server::stats::sample(&self.ctx)
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect()
    }

    /// A pod's stats: its pod cgroup (found through a running container) and its containers.
    fn sandbox_stats(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        usage: &std::collections::HashMap<String, ContainerSample>,
        now: SystemTime,
    ) -> api::PodSandboxStats {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let records = self.ctx.runtime.list_prefix(&format!("{uid}_"));
        let pod_usage = records
            .iter()
            .find_map(|r| usage.get(&r.id).and_then(|s| s.pod_usage));
        let containers = records
            .iter()
            .map(|r| {
                view::container_stats(
                    &view::container(r, self.created(&r.id)),
                    usage.get(&r.id).map(|s| &s.usage),
                    now,
                )
            })
            .collect();
        view::sandbox_stats(
            &view::sandbox(pod, self.sandbox_ready(&uid)),
            pod_usage.as_ref(),
            containers,
            now,
        )
    }

    /// [`Cri::record`], running (what Exec and Attach need).
    fn running(&self, id: &str) -> Result<bosun_runtime::ContainerStatus, Status> {
        let r = self.record(id)?;
        if !matches!(r.state, bosun_runtime::ContainerState::Running { .. }) {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        Ok(r)
    }

    fn images(&self) -> Result<Vec<bosun_runtime::image::ImageSummary>, Status> {
        self.images
            .store()
            .list()
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn find_image(
        &self,
        spec: Option<&api::ImageSpec>,
    ) -> Result<Option<bosun_runtime::image::ImageSummary>, Status> {
        let reference = spec.map(|s| s.image.as_str()).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("no image named"));
        }
        let normalized = bosun_runtime::image::normalize_reference(reference).unwrap_or_default();
        Ok(self
            .images()?
            .into_iter()
            .find(|i| view::image_named(i, reference, &normalized)))
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// The longest an ExecSync without a timeout may run.
const EXEC_SYNC_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The gRPC status of an exec the runtime could not run (a command that fails is an exit code).
fn exec_status(e: &bosun_runtime::container::ExecError) -> Status {
    use bosun_runtime::container::ExecError as E;
    match e {
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::NotRunning { .. } => Status::failed_precondition(e.to_string()),
        E::EmptyCommand { .. } => Status::invalid_argument(e.to_string()),
        E::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        E::Spawn { .. } | E::Helper { .. } | E::Io { .. } => Status::unknown(e.to_string()),
    }
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: Request<api::VersionRequest>) -> Rpc<api::VersionResponse> {
        Ok(Response::new(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "bosun".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn status(&self, _: Request<api::StatusRequest>) -> Rpc<api::StatusResponse> {
        let cond = |ty: &str| api::RuntimeCondition {
            r#type: ty.into(),
            status: true,
            ..Default::default()
        };
        // containerd's NetworkReady: false until a CNI config is there.
        let network = match self.ctx.pod_network.state().not_ready {
            None => cond("NetworkReady"),
            Some(cause) => api::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: crate::podnet::NOT_READY_REASON.into(),
                message: crate::podnet::runtime_message(&cause),
            },
        };
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus {
                conditions: vec![cond("RuntimeReady"), network],
            }),
            info: Default::default(),
            runtime_handlers: vec![api::RuntimeHandler {
                name: String::new(),
                features: Some(api::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: true,
                }),
            }],
            features: None,
        }))
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<api::RunPodSandboxRequest>,
    ) -> Rpc<api::RunPodSandboxResponse> {
        Err(Status::unimplemented(NOT_HERE))
    }

    async fn create_container(
        &self,
        _: Request<api::CreateContainerRequest>,
    ) -> Rpc<api::CreateContainerResponse> {
        Err(Status::unimplemented(NOT_HERE))
    }

    async fn start_container(
        &self,
        _: Request<api::StartContainerRequest>,
    ) -> Rpc<api::StartContainerResponse> {
        Err(Status::unimplemented(NOT_HERE))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<api::ListPodSandboxRequest>,
    ) -> Rpc<api::ListPodSandboxResponse> {
        let filter = req.into_inner().filter;
        let items = self
            .pods()
            .iter()
            .map(|p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                view::sandbox(p, self.sandbox_ready(&uid))
            })
            .filter(|s| view::sandbox_matches(filter.as_ref(), s))
            .collect();
        Ok(Response::new(api::ListPodSandboxResponse { items }))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<api::PodSandboxStatusRequest>,
    ) -> Rpc<api::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let pod = self.pod(&req.pod_sandbox_id)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let status = view::sandbox_status(&pod, self.sandbox_ready(&uid));
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let json = serde_json::json!({"pod": pod}).to_string();
            info.insert("info".to_string(), json);
        }
        let records = self.ctx.runtime.list_prefix(&format!("{uid}_"));
        Ok(Response::new(api::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: records
                .iter()
                .map(|r| view::container_status(r, self.created(&r.id)))
                .collect(),
            timestamp: view::nanos(SystemTime::now()),
        }))
    }

    async fn list_containers(
        &self,
        req: Request<api::ListContainersRequest>,
    ) -> Rpc<api::ListContainersResponse> {
        let filter = req.into_inner().filter;
        let containers = self
            .ctx
            .runtime
            .list()
            .iter()
            .map(|r| view::container(r, self.created(&r.id)))
            .filter(|c| view::container_matches(filter.as_ref(), c))
            .collect();
        Ok(Response::new(api::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<api::ContainerStatusRequest>,
    ) -> Rpc<api::ContainerStatusResponse> {
        let req = req.into_inner();
        let r = self.record(&req.container_id)?;
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::to_string(&r).unwrap_or_default(),
            );
        }
        Ok(Response::new(api::ContainerStatusResponse {
            status: Some(view::container_status(&r, self.created(&r.id))),
            info,
        }))
    }

    async fn exec_sync(&self, req: Request<api::ExecSyncRequest>) -> Rpc<api::ExecSyncResponse> {
        let req = req.into_inner();
        let r = self.record(&req.container_id)?;
        // No timeout asked: the kubelet's probes always give one, crictl's default is none.
        let timeout = match req.timeout {
            t if t > 0 => std::time::Duration::from_secs(t as u64),
            _ => EXEC_SYNC_MAX,
        };
        match self.ctx.runtime.exec(&r.id, &req.cmd, timeout).await {
            Ok(out) => Ok(Response::new(api::ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.code,
            })),
            Err(e) => Err(exec_status(&e)),
        }
    }

    async fn exec(&self, req: Request<api::ExecRequest>) -> Rpc<api::ExecResponse> {
        let req = req.into_inner();
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must not be empty"));
        }
        let r = self.running(&req.container_id)?;
        let request = stream::exec_request(req.cmd, req.tty, req.stdin, req.stdout, req.stderr)
            .map_err(Status::invalid_argument)?;
        let url = self.streams.url(stream::Pending::Exec {
            container: r.id,
            request,
        });
        Ok(Response::new(api::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<api::AttachRequest>) -> Rpc<api::AttachResponse> {
        let req = req.into_inner();
        let r = self.running(&req.container_id)?;
        let request = stream::exec_request(Vec::new(), req.tty, req.stdin, req.stdout, req.stderr)
            .map_err(Status::invalid_argument)?;
        let url = self.streams.url(stream::Pending::Attach {
            container: r.id,
            request,
        });
        Ok(Response::new(api::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<api::PortForwardRequest>,
    ) -> Rpc<api::PortForwardResponse> {
        let req = req.into_inner();
        let pod = self.pod(&req.pod_sandbox_id)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.ctx.runtime.sandbox(&uid).is_none() {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {uid:?} is not ready"
            )));
        }
        // As the kubelet's streaming server: the ports come from the client's streams (the
        // request's list is not used by crictl nor the kubelet).
        let url = self.streams.url(stream::Pending::PortForward {
            sandbox: uid,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        });
        Ok(Response::new(api::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<api::ContainerStatsRequest>,
    ) -> Rpc<api::ContainerStatsResponse> {
        let r = self.record(&req.into_inner().container_id)?;
        let usage = self.usage();
        Ok(Response::new(api::ContainerStatsResponse {
            stats: Some(view::container_stats(
                &view::container(&r, self.created(&r.id)),
                usage.get(&r.id).map(|s| &s.usage),
                SystemTime::now(),
            )),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<api::ListContainerStatsRequest>,
    ) -> Rpc<api::ListContainerStatsResponse> {
        let filter = view::stats_filter(req.into_inner().filter.as_ref());
        let usage = self.usage();
        let now = SystemTime::now();
        let stats = self
            .ctx
            .runtime
            .list()
            .iter()
            .map(|r| (r, view::container(r, self.created(&r.id))))
            .filter(|(_, c)| view::container_matches(filter.as_ref(), c))
            .map(|(r, c)| view::container_stats(&c, usage.get(&r.id).map(|s| &s.usage), now))
            .collect();
        Ok(Response::new(api::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<api::PodSandboxStatsRequest>,
    ) -> Rpc<api::PodSandboxStatsResponse> {
        let pod = self.pod(&req.into_inner().pod_sandbox_id)?;
        let usage = self.usage();
        Ok(Response::new(api::PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&pod, &usage, SystemTime::now())),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<api::ListPodSandboxStatsRequest>,
    ) -> Rpc<api::ListPodSandboxStatsResponse> {
        let filter = view::sandbox_stats_filter(req.into_inner().filter.as_ref());
        let usage = self.usage();
        let now = SystemTime::now();
        let stats = self
            .pods()
            .iter()
            .filter(|p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                view::sandbox_matches(filter.as_ref(), &view::sandbox(p, self.sandbox_ready(&uid)))
            })
            .map(|p| self.sandbox_stats(p, &usage, now))
            .collect();
        Ok(Response::new(api::ListPodSandboxStatsResponse { stats }))
    }

    async fn reopen_container_log(
        &self,
        req: Request<api::ReopenContainerLogRequest>,
    ) -> Rpc<api::ReopenContainerLogResponse> {
        let r = self.running(&req.into_inner().container_id)?;
        // The container's keeper writes the log and reopens its path on its next write when
        // the path no longer names its file (bosun_runtime::logs); the file is made here so
        // that it exists when this returns, as containerd's does.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log_path)
            .map_err(|e| Status::internal(format!("reopen log {}: {e}", r.log_path.display())))?;
        Ok(Response::new(api::ReopenContainerLogResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<api::StopContainerRequest>,
    ) -> Rpc<api::StopContainerResponse> {
        let req = req.into_inner();
        let r = self.record(&req.container_id)?;
        // As containerd: SIGTERM, SIGKILL after the timeout; the pod's restart policy then
        // decides whether the worker starts it again.
        if matches!(r.state, bosun_runtime::ContainerState::Running { .. }) {
            let grace = std::time::Duration::from_secs(req.timeout.max(0) as u64);
            self.ctx
                .runtime
                .stop_container(&r.id, libc::SIGTERM, grace)
                .await
                .map_err(|e| Status::unknown(e.to_string()))?;
        }
        Ok(Response::new(api::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<api::RemoveContainerRequest>,
    ) -> Rpc<api::RemoveContainerResponse> {
        let req = req.into_inner();
        // As containerd: removing a container that is not there succeeds.
        let r = match self.record(&req.container_id) {
            Ok(r) => r,
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Ok(Response::new(api::RemoveContainerResponse {}))
            }
            Err(e) => return Err(e),
        };
        self.ctx
            .runtime
            .remove_container(&r.id)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(api::RemoveContainerResponse {}))
    }

    async fn runtime_config(
        &self,
        _: Request<api::RuntimeConfigRequest>,
    ) -> Rpc<api::RuntimeConfigResponse> {
        // bosun lays out cgroups itself, in the cgroupfs layout.
        Ok(Response::new(api::RuntimeConfigResponse {
            linux: Some(api::LinuxRuntimeConfiguration {
                cgroup_driver: api::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> Rpc<api::ListImagesResponse> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let normalized = filter
            .as_deref()
            .and_then(|f| bosun_runtime::image::normalize_reference(f).ok())
            .unwrap_or_default();
        let images = self
            .images()?
            .iter()
            .filter(|i| {
                filter
                    .as_deref()
                    .is_none_or(|f| view::image_named(i, f, &normalized))
            })
            .map(view::image)
            .collect();
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<api::ImageStatusRequest>,
    ) -> Rpc<api::ImageStatusResponse> {
        let req = req.into_inner();
        let image = self.find_image(req.image.as_ref())?;
        Ok(Response::new(api::ImageStatusResponse {
            image: image.as_ref().map(view::image),
            info: Default::default(),
        }))
    }

    async fn pull_image(&self, req: Request<api::PullImageRequest>) -> Rpc<api::PullImageResponse> {
        let req = req.into_inner();
        let reference = req.image.map(|s| s.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("no image named"));
        }
        let image = self
            .images
            .pull(&reference)
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        Ok(Response::new(api::PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        req: Request<api::RemoveImageRequest>,
    ) -> Rpc<api::RemoveImageResponse> {
        let req = req.into_inner();
        // As containerd: removing an image that is not there succeeds.
        let Some(image) = self.find_image(req.image.as_ref())? else {
            return Ok(Response::new(api::RemoveImageResponse {}));
        };
        if self.images.used(&image.id) {
            return Err(Status::failed_precondition(format!(
                "image {} is used by a container",
                image.id
            )));
        }
        self.images
            .store()
            .remove(&image.id)
            .map_err(|e| Status::unknown(e.to_string()))?;
        Ok(Response::new(api::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<api::ImageFsInfoRequest>,
    ) -> Rpc<api::ImageFsInfoResponse> {
        let used: u64 = self.images()?.iter().map(|i| i.size).sum();
        let fs = api::FilesystemUsage {
            timestamp: view::nanos(SystemTime::now()),
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: self.images.store().root().display().to_string(),
            }),
            used_bytes: Some(api::UInt64Value { value: used }),
            inodes_used: None,
        };
        Ok(Response::new(api::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: Vec::new(),
        }))
    }
}
