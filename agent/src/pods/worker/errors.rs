//! What can fail in a pod worker, one enum per operation, each variant named for the step that
//! failed (as firecracker's `StartMicrovmError`). The messages are those of the status and of
//! the Events; which reason each gets is decided in one place, [`super::report`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bosun_runtime::container::{ExecError, StartError};
use bosun_runtime::sandbox::SandboxError;
use bosun_runtime::NetworkError;

use crate::images::EnsureError;
use crate::translate::TranslateError;

/// Setting up the pod's sandbox, its network or its volumes failed: the pod stays Pending and
/// the next sync tries again.
#[derive(Debug, thiserror::Error)]
pub enum PodSetupError {
    #[error("{source}")]
    Sandbox {
        pod: String,
        #[source]
        source: SandboxError,
    },
    #[error("{source}")]
    Network {
        pod: String,
        #[source]
        source: NetworkError,
    },
    /// The background set-up of the network ended without an answer (it panicked).
    #[error("pod network set-up: {message}")]
    NetworkTask { pod: String, message: String },
    #[error("writing the pod's hosts and resolv.conf: {source}")]
    PodFiles {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the pod's hosts file: {source}")]
    HostsFile {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    /// The pod's ResourceClaims could not be prepared (the kubelet's
    /// `FailedPrepareDynamicResources`; the message is its Event's).
    #[error("Failed to prepare dynamic resources: {source}")]
    DynamicResources {
        pod: String,
        #[source]
        source: crate::dra::DraError,
    },
    #[error("{source}")]
    Volumes {
        pod: String,
        #[source]
        source: VolumeError,
    },
    /// A `hostUsers: false` pod got no ID range: the node has no allocator (`source: None`,
    /// the kubelet's message for a runtime without user namespaces) or it has no free range.
    #[error("{}", match source {
        Some(e) => format!("create user namespace: {e}"),
        None => "can't set `spec.hostUsers: false`, runtime does not support user namespaces".to_string(),
    })]
    UserNamespace {
        pod: String,
        source: Option<bosun_runtime::userns::UsernsError>,
    },
}

/// Setting up (or refreshing) one of the pod's volumes failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The pod's volumes could not be told apart (unsupported or invalid ones).
    #[error("{0}")]
    Kinds(#[source] TranslateError),
    /// A claim or CSI inline volume could not be resolved to what to mount.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Resolve {
        volume: String,
        #[source]
        source: crate::pods::SourceError,
    },
    /// A volume that cannot be set up on this node as it is (a hostPath type, an unresolved
    /// claim).
    #[error("{message}")]
    Source { volume: String, message: String },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    SetUp {
        volume: String,
        #[source]
        source: bosun_volumes::SetupError,
    },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    FsGroup {
        volume: String,
        #[source]
        source: bosun_volumes::ownership::OwnershipError,
    },
    /// The walk that gives the fsGroup ended without an answer (it panicked).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    FsGroupTask { volume: String, message: String },
    /// The API objects (configMaps, secrets, tokens) could not be read.
    #[error("{0}")]
    Fetch(#[source] crate::pods::SourceError),
    /// An API data volume's files could not be made from the objects.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Payload {
        volume: String,
        #[source]
        source: crate::projection::ProjectionError,
    },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Write {
        volume: String,
        #[source]
        source: bosun_volumes::atomic::WriteError,
    },
}

/// Starting one attempt of a container failed (or was held back).
#[derive(Debug, thiserror::Error)]
pub enum StartContainerError {
    /// The image's pulls are backing off: no pull now.
    #[error("{message}")]
    PullBackOff {
        pod: String,
        container: String,
        image: String,
        /// When the next pull may be tried.
        until: Option<SystemTime>,
        message: String,
    },
    #[error("{source}")]
    Image {
        pod: String,
        container: String,
        #[source]
        source: EnsureError,
    },
    #[error("{source}")]
    Mounts {
        pod: String,
        container: String,
        #[source]
        source: MountsError,
    },
    #[error("{source}")]
    Config {
        pod: String,
        container: String,
        #[source]
        source: TranslateError,
    },
    #[error("{source}")]
    Devices {
        pod: String,
        container: String,
        #[source]
        source: DevicesError,
    },
    /// The container's security context names a profile the kubelet cannot make a config of
    /// (a `Localhost` seccomp profile without a name): the kubelet's message.
    #[error("{message}")]
    Security {
        pod: String,
        container: String,
        message: String,
    },
    /// An image volume's view could not be mounted, or its subPath is not a folder of the
    /// image: containerd's `ErrImageVolumeMountFailed`, the kubelet's CreateContainerError.
    #[error("failed to mount image volume: {volume:?}: {message}")]
    ImageVolume {
        pod: String,
        container: String,
        volume: String,
        message: String,
    },
    /// The pod network failed during this sync (reported on its own): nothing starts without.
    #[error("the pod network is not set up")]
    NoNetwork { pod: String, container: String },
    #[error("{source}")]
    Runtime {
        pod: String,
        container: String,
        #[source]
        source: StartError,
    },
    /// The runtime refused the container before making it (its log folder, its request, the
    /// keeper's spawn): no attempt exists to restart, the start is tried again later.
    #[error("{source}")]
    NotCreated {
        pod: String,
        container: String,
        #[source]
        source: StartError,
    },
    /// The container started, its postStart hook failed: it is killed.
    #[error("PostStartHook failed: {source}")]
    PostStartHook {
        pod: String,
        container: String,
        #[source]
        source: HookError,
    },
}

/// A container's mounts could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("{0}")]
    Requests(#[source] TranslateError),
    #[error("volume {volume:?} is not set up")]
    NotSetUp { volume: String },
    #[error("making {} a shared mount: {source}", path.display())]
    SharedMount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    SubPath(#[source] bosun_volumes::SubPathError),
    /// A subPath of an image volume that is not a folder of the image.
    #[error("image volume {volume:?}: {message}")]
    ImageSubPath { volume: String, message: String },
    #[error("{}: {source}", path.display())]
    MessageFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A container's `volumeDevices` could not be given.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("volumeDevice {name:?}: no such volume")]
    NoVolume { name: String },
    #[error("{message}")]
    Device { message: String },
    /// The CDI devices of the container's ResourceClaims could not be told.
    #[error("{0}")]
    Claims(#[source] crate::dra::DraError),
    /// A device plugin's PreStartContainer failed.
    #[error("PreStartContainer: {message}")]
    PreStart { message: String },
}

/// A lifecycle hook (postStart, preStop) failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("exec hook has no command")]
    NoCommand,
    #[error("{0}")]
    Exec(#[source] ExecError),
    #[error("command {argv:?} exited with {code}: {output}")]
    ExitCode {
        argv: Vec<String>,
        code: i32,
        output: String,
    },
    #[error("{0}")]
    HttpSpec(#[source] crate::pods::probing::ProbeSpecError),
    #[error("httpGet hook")]
    NotHttp,
    #[error("httpGet hook failed: {0}")]
    Http(String),
    #[error("httpGet hook timed out after {0:?}")]
    HttpTimeout(Duration),
    #[error("tcpSocket hooks are deprecated and not supported")]
    TcpSocket,
    #[error("hook has no handler")]
    NoHandler,
}
