//! Step 8, and the one place where what went wrong becomes what the pod's status and Events
//! say: a failed start ([`StartContainerError`]) or pod set-up ([`PodSetupError`]) turned into
//! the kubelet's waiting reason, Event reason and message; then old attempts removed, probes
//! following the running containers, and the status written when it changed.

use std::time::{Duration, SystemTime};

use bosun_runtime::ContainerState;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};

use bosun_runtime::container::StartError;

use super::errors::{PodSetupError, StartContainerError};
use super::plan::{self, Attempts};
use super::{Next, Waiting, Worker};
use crate::pods::status::{self, ContainerView};
use crate::reasons::{event, waiting, EventType};

/// How long after a failed pull the container shows ImagePullBackOff (its pull waits for the
/// back-off).
const PULL_RETRY: Duration = Duration::from_secs(2);
/// How long a container whose config is wrong, or that the runtime could not create, waits
/// before the next try (the kubelet's pause after a failed pod sync).
const CONFIG_RETRY: Duration = Duration::from_secs(10);

/// What the status and Events say of a failed start.
struct Report {
    /// The container's waiting reason and message (`None`: unchanged).
    waiting: Option<Waiting>,
    /// The Event, if the failure raises one.
    event: Option<(EventType, &'static str, String)>,
    next: Next,
}

impl StartContainerError {
    /// The pod and the container it is about.
    pub fn names(&self) -> (&str, &str) {
        match self {
            StartContainerError::PullBackOff { pod, container, .. }
            | StartContainerError::Image { pod, container, .. }
            | StartContainerError::Mounts { pod, container, .. }
            | StartContainerError::Config { pod, container, .. }
            | StartContainerError::Devices { pod, container, .. }
            | StartContainerError::Security { pod, container, .. }
            | StartContainerError::ImageVolume { pod, container, .. }
            | StartContainerError::NoNetwork { pod, container }
            | StartContainerError::Runtime { pod, container, .. }
            | StartContainerError::NotCreated { pod, container, .. }
            | StartContainerError::PostStartHook { pod, container, .. } => (pod, container),
        }
    }

    /// The kubelet's reasons for this failure, given why the container waited before (events
    /// are sent when the reason changes).
    fn report(&self, previous: Option<&Waiting>) -> Report {
        let changed = |reason: &str| previous.map(|w| w.reason) != Some(reason);
        let message = self.to_string();
        let config_error = |event_message: String| Report {
            waiting: Some(Waiting {
                reason: waiting::CREATE_CONTAINER_CONFIG_ERROR,
                message: message.clone(),
            }),
            event: Some((EventType::Warning, event::FAILED_CONTAINER, event_message)),
            next: Next::after(CONFIG_RETRY),
        };
        match self {
            StartContainerError::PullBackOff { image, until, .. } => Report {
                waiting: Some(Waiting {
                    reason: waiting::IMAGE_PULL_BACK_OFF,
                    message: message.clone(),
                }),
                event: changed(waiting::IMAGE_PULL_BACK_OFF).then(|| {
                    (
                        EventType::Normal,
                        event::BACK_OFF_PULL_IMAGE,
                        format!("Back-off pulling image {image:?}"),
                    )
                }),
                next: until.map_or(Next::Resync, Next::At),
            },
            StartContainerError::Image { source, .. } => {
                let reason = source.reason();
                let event_reason = if reason == waiting::ERR_IMAGE_PULL {
                    event::FAILED_TO_PULL_IMAGE
                } else {
                    reason
                };
                Report {
                    waiting: Some(Waiting {
                        reason,
                        message: message.clone(),
                    }),
                    event: changed(reason)
                        .then(|| (EventType::Warning, event_reason, message.clone())),
                    next: Next::after(PULL_RETRY),
                }
            }
            StartContainerError::Mounts { .. } => config_error(message.clone()),
            StartContainerError::Config { .. }
            | StartContainerError::Devices { .. }
            | StartContainerError::Security { .. } => config_error(format!("Error: {message}")),
            // What the runtime refuses before it makes anything (a profile it cannot apply, a
            // mount it cannot idmap): the kubelet's CreateContainerError, tried again later
            // (a fixed profile file lets the next try start it).
            StartContainerError::ImageVolume { .. }
            | StartContainerError::Runtime {
                source:
                    StartError::Seccomp { .. }
                    | StartError::AppArmor { .. }
                    | StartError::Idmap { .. }
                    | StartError::Capability { .. },
                ..
            } => Report {
                waiting: Some(Waiting {
                    reason: waiting::CREATE_CONTAINER_ERROR,
                    message: message.clone(),
                }),
                event: Some((
                    EventType::Warning,
                    event::FAILED_CONTAINER,
                    format!("Error: {message}"),
                )),
                next: Next::after(CONFIG_RETRY),
            },
            StartContainerError::NoNetwork { .. } => Report {
                waiting: None,
                event: None,
                next: Next::Resync,
            },
            StartContainerError::Runtime { .. } => Report {
                waiting: None,
                event: Some((
                    EventType::Warning,
                    event::FAILED_CONTAINER,
                    format!("Error: {message}"),
                )),
                next: Next::Resync,
            },
            // As the kubelet's CreateContainerError: reported, and the start tried again after
            // the pause of a failed pod sync.
            StartContainerError::NotCreated { .. } => Report {
                waiting: Some(Waiting {
                    reason: waiting::CREATE_CONTAINER_ERROR,
                    message: message.clone(),
                }),
                event: Some((
                    EventType::Warning,
                    event::FAILED_CONTAINER,
                    format!("Error: {message}"),
                )),
                next: Next::after(CONFIG_RETRY),
            },
            StartContainerError::PostStartHook { .. } => Report {
                waiting: None,
                event: Some((EventType::Warning, event::FAILED_POST_START_HOOK, message)),
                next: Next::Resync,
            },
        }
    }
}

impl PodSetupError {
    /// The Event reason of this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            PodSetupError::Volumes { .. } => event::FAILED_MOUNT_VOLUME,
            PodSetupError::DynamicResources { .. } => event::FAILED_PREPARE_DYNAMIC_RESOURCES,
            _ => event::FAILED_CREATE_POD_SANDBOX,
        }
    }

    /// The pod it is about.
    pub fn pod(&self) -> &str {
        match self {
            PodSetupError::Sandbox { pod, .. }
            | PodSetupError::Network { pod, .. }
            | PodSetupError::NetworkTask { pod, .. }
            | PodSetupError::PodFiles { pod, .. }
            | PodSetupError::HostsFile { pod, .. }
            | PodSetupError::Volumes { pod, .. }
            | PodSetupError::DynamicResources { pod, .. }
            | PodSetupError::UserNamespace { pod, .. } => pod,
        }
    }
}

impl Worker {
    /// Reports a failed start: the container's waiting reason, an Event, when to try again.
    pub(super) fn start_failed(&mut self, c: &Container, e: StartContainerError) -> Next {
        let r = e.report(self.waiting.get(&c.name));
        let (pod, container) = e.names();
        tracing::debug!(pod, container, error = %e, "container not started");
        if let Some((type_, reason, message)) = &r.event {
            self.container_event(&c.name, *type_, reason, message);
        }
        if let Some(w) = r.waiting {
            self.waiting.insert(c.name.clone(), w);
        }
        r.next
    }

    /// Step 8: old attempts removed, probes following the running containers, the pod start
    /// measured, the status written.
    pub(super) async fn report(&mut self, init_done: bool, init_failed: bool) {
        let attempts = self.attempts();
        let spec = self.spec();
        let all_running = !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                matches!(
                    attempts
                        .get(&c.name)
                        .and_then(|v| v.last())
                        .map(|r| &r.state),
                    Some(ContainerState::Running { .. })
                )
            });
        if all_running {
            let created = self
                .pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0));
            crate::metrics::pod_running(&self.uid, created);
        }
        for (name, id) in plan::collectable(&attempts) {
            if let Err(e) = self.ctx.runtime.remove_container(&id).await {
                tracing::warn!(container = %id, error = %e, "cannot remove old container");
            }
            self.messages.remove(&id);
            let file = self.pod_dir().join("containers").join(&name).join(&id);
            let _ = std::fs::remove_file(file);
        }
        self.sync_probes(&attempts);
        self.init = (init_done, init_failed);
        self.write_status(true, init_done, init_failed);
    }

    /// Probe tasks follow the running containers (regular containers and sidecars).
    fn sync_probes(&mut self, attempts: &Attempts) {
        let spec = self.spec();
        let pod = self.pod.clone();
        let pod_ip = self.net.pod_ip();
        let mut running = Vec::new();
        let sidecars = plan::sidecars(&pod);
        for c in spec.containers.iter().chain(sidecars) {
            let Some(rec) = attempts.get(&c.name).and_then(|v| v.last()) else {
                continue;
            };
            if !matches!(rec.state, ContainerState::Running { .. }) {
                continue;
            }
            running.push(crate::pods::probing::Target {
                pod: pod.clone(),
                id: rec.id.clone(),
                container: c.clone(),
                pod_ip: pod_ip.clone(),
            });
        }
        let wake = self.wake.clone();
        self.probes.sync(&self.ctx, &wake, running);
    }

    fn views(&self, containers: &[Container], attempts: &Attempts) -> Vec<ContainerView> {
        containers
            .iter()
            .map(|c| {
                let v = attempts.get(&c.name);
                let current = v.and_then(|v| v.last()).cloned();
                let previous = v
                    .filter(|v| v.len() >= 2)
                    .and_then(|v| v.get(v.len() - 2))
                    .cloned();
                let running = matches!(
                    current.as_ref().map(|r| &r.state),
                    Some(ContainerState::Running { .. })
                );
                let probe = current
                    .as_ref()
                    .map(|r| self.probes.state(&r.id, c))
                    .unwrap_or_default();
                let mut w = self.waiting.get(&c.name).cloned();
                if running {
                    w = None;
                } else if w.is_none() && current.is_none() {
                    // A pod-level failure (sandbox, network, volumes) keeps every container
                    // creating, with the failure's message.
                    if let Some(e) = &self.pod_error {
                        w = Some(Waiting {
                            reason: status::default_waiting(&self.pod),
                            message: e.to_string(),
                        });
                    }
                }
                ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    restart_count: current.as_ref().map(|r| r.attempt).unwrap_or(0),
                    ready: running && probe.ready,
                    started: running && probe.started,
                    current,
                    previous,
                    waiting: w,
                    allocated: self
                        .allocated
                        .as_ref()
                        .and_then(|a| a.get(&c.name))
                        .cloned(),
                }
            })
            .collect()
    }

    /// Builds the pod's status and, when it changed, sends it (cluster mode) and writes it to
    /// the state folder.
    pub(super) fn write_status(&mut self, sandbox_ready: bool, init_done: bool, init_failed: bool) {
        let spec = self.spec();
        let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        let attempts = self.attempts();
        let init_views = self.views(&inits, &attempts);
        let views = self.views(&spec.containers, &attempts);
        let qos = crate::translate::qos_class(&self.pod);
        let mut st = status::pod_status(&status::StatusInput {
            pod: &self.pod,
            previous: self.last_status.as_ref(),
            sandbox_ready,
            init: &init_views,
            init_done,
            init_failed,
            containers: &views,
            start_time: self.start_time,
            now: SystemTime::now(),
            qos: qos.as_str(),
            ended: self.ended.as_ref(),
            resize: crate::pods::resize::conditions(
                self.resize_pending.as_ref(),
                self.resize_in_progress.as_ref(),
                self.last_status
                    .as_ref()
                    .and_then(|s| s.conditions.as_deref())
                    .unwrap_or_default(),
                status::time(SystemTime::now()),
            ),
        });
        let ephemeral: Vec<Container> = plan::ephemeral_containers(&self.pod)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        if !ephemeral.is_empty() {
            let views = self.views(&ephemeral, &attempts);
            st.ephemeral_container_statuses = Some(
                views
                    .iter()
                    .map(|v| {
                        // Never ready, never restarted: only the state counts.
                        let mut s = status::container_status(v);
                        s.ready = false;
                        s.started = None;
                        s
                    })
                    .collect(),
            );
        }
        crate::network::set_ips(&mut st, &self.net.ips, self.net.host_ip.as_deref());
        match self.failure.clone() {
            // The kubelet's rejectPod: nothing of the pod ran.
            Some(f) if f.rejected => {
                st = status::rejected_status(
                    &self.pod,
                    self.last_status.as_ref(),
                    &f.reason,
                    &f.event_message,
                    self.start_time,
                    qos.as_str(),
                )
            }
            Some(f) => f.apply(&mut st, self.last_status.as_ref(), SystemTime::now()),
            None => {}
        }
        self.publish_status(st);
    }

    /// Sends `st` (cluster mode) and writes it to the state folder, when it changed.
    pub(super) fn publish_status(&mut self, st: PodStatus) {
        if self.last_status.as_ref() == Some(&st) {
            return;
        }
        // Static pods report through their mirror pods.
        if let Some(tx) = &self.ctx.status_tx {
            let _ = tx.send(crate::pods::StatusUpdate {
                uid: self.uid.clone(),
                namespace: self
                    .pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: self.pod.metadata.name.clone().unwrap_or_default(),
                status: Some(st.clone()),
                mirror: !crate::pods::from_api(&self.pod),
                delete: false,
            });
        }
        let mut pod = Pod::clone(&self.pod);
        pod.status = Some(st.clone());
        if let Ok(bytes) = serde_json::to_vec_pretty(&pod) {
            if let Err(e) = status::write_atomic(&self.state_dir(), status::STATUS_FILE, &bytes) {
                tracing::warn!(error = %e, "cannot write pod status");
            }
        }
        self.last_status = Some(st);
    }
}
