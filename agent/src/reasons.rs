//! Every reason bosun reports, in one place: Event reasons grouped by subsystem as the kubelet's
//! `pkg/kubelet/events/event.go` groups them, the reasons of container states
//! (`state.waiting.reason`, `state.terminated.reason`) and of pod conditions. The strings are the
//! kubelet's, since clients (kubectl, controllers, dashboards) match on them.
//!
//! Which failure maps to which reason is decided where the pod worker writes the status
//! (`pods::worker::report`); this module only names them.

/// The type of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Event reasons (`Event.reason`).
pub mod event {
    // Container events.
    pub const CREATED_CONTAINER: &str = "Created";
    pub const STARTED_CONTAINER: &str = "Started";
    /// A container could not be configured or started (`FailedToCreateContainer`,
    /// `FailedToStartContainer`).
    pub const FAILED_CONTAINER: &str = "Failed";
    pub const KILLING_CONTAINER: &str = "Killing";
    pub const BACK_OFF_START_CONTAINER: &str = "BackOff";

    // In-place resize (pod events).
    pub const RESIZE_STARTED: &str = "ResizeStarted";
    pub const RESIZE_COMPLETED: &str = "ResizeCompleted";
    pub const RESIZE_DEFERRED: &str = "ResizeDeferred";
    pub const RESIZE_INFEASIBLE: &str = "ResizeInfeasible";
    pub const RESIZE_ERROR: &str = "ResizeError";

    // Image events.
    pub const PULLING_IMAGE: &str = "Pulling";
    pub const PULLED_IMAGE: &str = "Pulled";
    pub const FAILED_TO_PULL_IMAGE: &str = "Failed";
    pub const BACK_OFF_PULL_IMAGE: &str = "BackOff";
    pub const FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET: &str = "FailedToRetrieveImagePullSecret";

    // Kubelet (pod-level) events.
    pub const FAILED_MOUNT_VOLUME: &str = "FailedMount";
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
    /// A pod on the pod network while the node's is not ready (Warning).
    pub const NETWORK_NOT_READY: &str = "NetworkNotReady";
    pub const FAILED_PREPARE_DYNAMIC_RESOURCES: &str = "FailedPrepareDynamicResources";
    /// bosun's own: a pod was terminated and everything it held removed.
    pub const REMOVED_POD: &str = "Removed";

    // Probe events.
    pub const CONTAINER_UNHEALTHY: &str = "Unhealthy";
    /// A probe that succeeded with a warning (a redirect to another host).
    pub const PROBE_WARNING: &str = "ProbeWarning";

    // Lifecycle hooks.
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
}

/// Why a container is waiting (`state.waiting.reason`).
pub mod waiting {
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    pub const POD_INITIALIZING: &str = "PodInitializing";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    pub const IMAGE_INSPECT_ERROR: &str = "ImageInspectError";
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    /// The runtime refused to create the container (a seccomp or AppArmor profile it cannot
    /// apply, a volume it cannot idmap).
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
}

/// Why a container terminated (`state.terminated.reason`).
pub mod terminated {
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const START_ERROR: &str = "StartError";
    pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";
}

/// Reasons of the pod conditions the kubelet owns.
pub mod condition {
    pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
    pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
    pub const POD_COMPLETED: &str = "PodCompleted";
    pub const POD_FAILED: &str = "PodFailed";
    pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";
    // In-place resize: the condition types and their reasons.
    pub const POD_RESIZE_PENDING: &str = "PodResizePending";
    pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
    pub const RESIZE_DEFERRED: &str = "Deferred";
    pub const RESIZE_INFEASIBLE: &str = "Infeasible";
    pub const RESIZE_ERROR: &str = "Error";
}
