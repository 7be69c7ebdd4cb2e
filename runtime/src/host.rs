//! [`HostRuntime`] as a [`PodRuntime`]: the container verbs of [`crate::container`] joined with
//! the sandbox ([`crate::sandbox`]), its network ([`crate::cni`]) and the node-wide clean-up
//! ([`crate::cgroups`]), so that the agent drives one object and knows none of these modules.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::cgroups::CgroupLayout;
use crate::cni::{self, CniError};
use crate::container::{
    self, Created, ExecError, ExecOutput, ExecSession, RemoveError, StartError, StopError,
};
use crate::sandbox::{self, SandboxError};
use crate::{
    ContainerSecurity, ContainerSpec, ContainerStatus, ExitInfo, HeldContainer, HostRuntime,
    PodNetwork, PodRuntime, PodSecurity, RuntimeEvent, Sandbox, SandboxSpec,
};

/// Setting up a pod's network failed. The messages are those of the pod's
/// FailedCreatePodSandBox event.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The sandbox shares the host's network: there is nothing to set up.
    #[error("sandbox has no network namespace")]
    NoNamespace { pod_uid: String },
    /// Undoing a set-up that a crash interrupted failed.
    #[error("{source}")]
    UndoInterrupted {
        pod_uid: String,
        #[source]
        source: CniError,
    },
    /// The plugins' ADD failed (what they did is undone).
    #[error("failed to set up the pod network: {source}")]
    Setup {
        pod_uid: String,
        #[source]
        source: CniError,
    },
}

/// Removing a pod's sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveSandboxError {
    /// The network's DEL failed; the sandbox was removed anyway and DEL is retried by the next
    /// removal.
    #[error("tear down the network of pod {pod_uid}: {source}")]
    Network {
        pod_uid: String,
        #[source]
        source: CniError,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("kubepods cgroups: {0}")]
    Cgroups(#[from] crate::cgroups::CgroupError),
    /// An image volume of the pod could not be unmounted; tried again by the next removal.
    #[error("unmount the image volumes of pod {pod_uid}: {source}")]
    ImageVolumes {
        pod_uid: String,
        #[source]
        source: std::io::Error,
    },
}

impl HeldContainer for Created {
    fn id(&self) -> &str {
        Created::id(self)
    }

    fn start(self: Box<Self>) -> BoxFuture<'static, Result<ContainerStatus, StartError>> {
        Box::pin(Created::start(*self))
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(Created::abort(*self))
    }
}

impl PodRuntime for HostRuntime {
    fn sandbox(&self, pod_uid: &str) -> Option<Sandbox> {
        sandbox::load(self.paths(), pod_uid)
    }

    fn create_sandbox<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        security: &'a PodSecurity,
    ) -> BoxFuture<'a, Result<Sandbox, SandboxError>> {
        Box::pin(sandbox::create_with(self.paths(), spec, security))
    }

    fn network_ips(&self, sandbox: &Sandbox) -> Option<Vec<String>> {
        cni::status(&sandbox.dir).map(|st| st.ips)
    }

    fn setup_network(
        &self,
        sandbox: &Sandbox,
        pod: &PodNetwork,
    ) -> BoxFuture<'static, Result<Vec<String>, NetworkError>> {
        let net = self.options().network.clone();
        let dir = sandbox.dir.clone();
        let netns = sandbox.netns.clone();
        let pod = pod.clone();
        Box::pin(async move {
            let netns = netns.ok_or_else(|| NetworkError::NoNamespace {
                pod_uid: pod.uid.clone(),
            })?;
            if cni::has_state(&dir) {
                // An ADD interrupted by a crash: undo what it did before trying again.
                cni::teardown(&dir)
                    .await
                    .map_err(|source| NetworkError::UndoInterrupted {
                        pod_uid: pod.uid.clone(),
                        source,
                    })?;
            }
            let spec = cni::PodNetworkSpec {
                namespace: pod.namespace,
                name: pod.name,
                uid: pod.uid.clone(),
                netns,
                port_mappings: pod.port_mappings,
            };
            cni::setup(&net.cni, &dir, &spec)
                .await
                .map(|st| st.ips)
                .map_err(|source| NetworkError::Setup {
                    pod_uid: pod.uid,
                    source,
                })
        })
    }

    fn remove_sandbox<'a>(
        &'a self,
        pod_uid: &'a str,
    ) -> BoxFuture<'a, Result<(), RemoveSandboxError>> {
        Box::pin(async move {
            let dir = sandbox::dir(self.paths(), pod_uid);
            let network = cni::teardown(&dir).await;
            if network.is_err() {
                // Kept for a later DEL (the runtime retries parked networks), or the pod's
                // address would be lost with the sandbox folder.
                if let Err(e) = cni::park(&dir, &cni::parked_dir(self.paths()), pod_uid) {
                    tracing::warn!(uid = pod_uid, error = %e, "cannot keep the pod network's state for a retry");
                }
            }
            // No container of the pod runs any more: its image volumes go first.
            let images = crate::image_volume::release(self.paths(), pod_uid);
            let removed = sandbox::remove(self.paths(), pod_uid).await;
            if let Err(source) = images {
                if let Err(e) = &network {
                    tracing::warn!(uid = pod_uid, error = %e, "cannot tear down the pod network");
                }
                if let Err(e) = &removed {
                    tracing::warn!(uid = pod_uid, error = %e, "cannot remove the sandbox");
                }
                return Err(RemoveSandboxError::ImageVolumes {
                    pod_uid: pod_uid.to_string(),
                    source,
                });
            }
            match (network, removed) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(source), Ok(())) => Err(RemoveSandboxError::Network {
                    pod_uid: pod_uid.to_string(),
                    source,
                }),
                (Ok(()), Err(e)) => Err(e.into()),
                (Err(source), Err(e)) => {
                    // Two failures, one error returned: the network's is told here.
                    tracing::warn!(uid = pod_uid, error = %source, "cannot tear down the pod network");
                    Err(e.into())
                }
            }
        })
    }

    fn list_sandboxes(&self) -> Vec<String> {
        sandbox::list(self.paths())
    }

    fn mount_image_volume(
        &self,
        pod_uid: &str,
        image_id: &str,
        layers: &[PathBuf],
    ) -> std::io::Result<PathBuf> {
        crate::image_volume::mount(self.paths(), pod_uid, image_id, layers)
    }

    fn create_container<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        spec: &'a ContainerSpec,
        layers: &'a [PathBuf],
        security: &'a ContainerSecurity,
    ) -> BoxFuture<'a, Result<Box<dyn HeldContainer>, StartError>> {
        Box::pin(async move {
            let created =
                HostRuntime::create_container_with(self, sandbox, spec, layers, security).await?;
            Ok(Box::new(created) as Box<dyn HeldContainer>)
        })
    }

    fn start_container<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        spec: &'a ContainerSpec,
        layers: &'a [PathBuf],
        security: &'a ContainerSecurity,
    ) -> BoxFuture<'a, Result<ContainerStatus, StartError>> {
        Box::pin(HostRuntime::start_container_with(
            self, sandbox, spec, layers, security,
        ))
    }

    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        signal: i32,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitInfo, StopError>> {
        Box::pin(HostRuntime::stop_container(self, id, signal, grace))
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RemoveError>> {
        Box::pin(HostRuntime::remove_container(self, id))
    }

    fn list(&self) -> Vec<ContainerStatus> {
        HostRuntime::list(self)
    }

    fn list_prefix(&self, prefix: &str) -> Vec<ContainerStatus> {
        HostRuntime::list_prefix(self, prefix)
    }

    fn status(&self, id: &str) -> Option<ContainerStatus> {
        HostRuntime::status(self, id)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent> {
        HostRuntime::subscribe(self)
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(HostRuntime::exec(self, id, argv, timeout))
    }

    fn exec_streaming(
        &self,
        id: &str,
        argv: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<ExecSession, ExecError> {
        HostRuntime::exec_streaming(self, id, argv, stdin, tty)
    }

    fn attach_stdin(&self, id: &str) -> std::io::Result<Option<OwnedFd>> {
        HostRuntime::attach_stdin(self, id)
    }

    fn images_in_use(&self) -> BTreeSet<String> {
        container::images_in_use(self.paths())
    }

    fn enforce_pods_limits(
        &self,
        limits: &crate::Resources,
    ) -> Result<(), crate::cgroups::CgroupError> {
        CgroupLayout::host(&self.paths().cgroup_root)?
            .ensure_kubepods(limits)
            .map(|_| ())
    }

    fn pods_usage(&self, each_pod: bool) -> crate::cgroups::PodsUsage {
        CgroupLayout::host(&self.paths().cgroup_root)
            .map(|layout| layout.pods_usage(each_pod))
            .unwrap_or_default()
    }

    fn update_container_resources(
        &self,
        id: &str,
        res: &crate::Resources,
    ) -> Result<(), crate::cgroups::CgroupError> {
        HostRuntime::update_resources(self, id, res)
    }

    fn update_pod_resources(
        &self,
        pod_uid: &str,
        res: &crate::Resources,
    ) -> Result<(), crate::cgroups::CgroupError> {
        let sandbox = crate::PodRuntime::sandbox(self, pod_uid).ok_or_else(|| {
            crate::cgroups::CgroupError::Other {
                path: pod_uid.to_string(),
                reason: "no sandbox for this pod".into(),
            }
        })?;
        CgroupLayout::host("/")?.set_limits(&sandbox.cgroup_parent, res)
    }

    fn writable_layer(&self, id: &str) -> Option<PathBuf> {
        container::writable_layer(self.paths(), id)
    }

    fn release_node(&self) -> Result<bool, RemoveSandboxError> {
        if !sandbox::list(self.paths()).is_empty() {
            return Ok(false);
        }
        // The folder of the image volumes, empty once every sandbox is gone.
        let _ = std::fs::remove_dir(self.paths().run_dir.join("image-volumes"));
        // Both are tried; the first failure is returned.
        let root = sandbox::release_root(self.paths()).map_err(RemoveSandboxError::from);
        let cgroups = CgroupLayout::host(&self.paths().cgroup_root)
            .and_then(|layout| layout.remove_all())
            .map_err(RemoveSandboxError::from);
        root.and(cgroups).map(|()| true)
    }
}
