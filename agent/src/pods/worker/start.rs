//! Steps 4 to 6: starting one attempt of a container, as the kubelet's `startContainer`: the
//! image (pull policy, pull back-off), the config (mounts with subPaths, devices, the runtime's
//! [`bosun_runtime::ContainerSpec`]), create and start (held until the pod network is there on a
//! pod's first start), then the postStart hook. Each step returns a typed error; what the status
//! and the Events say of it is decided in [`super::report`].
//!
//! The config step also decides the container's security profiles ([`Worker::container_config`]:
//! seccomp, AppArmor, which mounts of a `hostUsers: false` pod are idmapped), which the runtime
//! applies when it creates the container; an exec into it (kubectl exec, exec probes, hooks)
//! runs under the same filter, label and user namespace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bosun_runtime::image::Image;
use bosun_runtime::{ContainerSecurity, ContainerSpec, Mount, Propagation, Sandbox};
use k8s_openapi::api::core::v1::Container;

use super::errors::{DevicesError, MountsError, StartContainerError};
use super::plan::{image_key, Attempts};
use super::{Next, Worker, LABEL_STOP_SIGNAL};
use crate::images::PullPolicy;
use crate::reasons::{event, waiting, EventType};
use crate::translate;

/// The message of a container whose pulls back off, as the kubelet's image manager words it:
/// "Back-off pulling image", with the last pull's reason and error while there is one.
pub fn pull_back_off_message(image: &str, previous: Option<&super::Waiting>) -> String {
    let back_off = format!("Back-off pulling image {image:?}");
    match previous {
        // Still backing off: the message already says why.
        Some(w) if w.reason == waiting::IMAGE_PULL_BACK_OFF => w.message.clone(),
        Some(w) if !w.message.is_empty() => format!("{back_off}: {}: {}", w.reason, w.message),
        _ => back_off,
    }
}

/// How long the postStart hook may take.
const POST_START_TIMEOUT: Duration = Duration::from_secs(30);

impl Worker {
    /// Starts attempt `attempt` of container `c` (an ephemeral container with its target:
    /// `ephemeral`), and reports what went wrong. When to look again.
    pub(super) async fn start(
        &mut self,
        c: &Container,
        attempt: u32,
        ephemeral: Option<Option<&str>>,
        attempts: &Attempts,
    ) -> Next {
        let Some(mut sandbox) = self.net.sandbox.clone() else {
            return Next::Resync;
        };
        if let Some(Some(target)) = ephemeral {
            match target_pid_namespace(&sandbox, attempts, target) {
                Ok(Some(ns)) => sandbox.pidns = Some(ns),
                Ok(None) => {}
                Err(message) => {
                    self.waiting.insert(
                        c.name.clone(),
                        super::Waiting {
                            reason: waiting::CONTAINER_CREATING,
                            message,
                        },
                    );
                    return Next::after(Duration::from_secs(5));
                }
            }
        }
        match self.start_in(c, attempt, sandbox).await {
            Ok(()) => Next::Resync,
            Err(e) => {
                let hook_failed = matches!(e, StartContainerError::PostStartHook { .. });
                let next = self.start_failed(c, e);
                if hook_failed {
                    // Reported first, then killed: its restart policy applies.
                    let id = translate::container_id(&self.uid, &c.name, attempt);
                    let _ = self
                        .ctx
                        .runtime
                        .stop_container(&id, libc::SIGKILL, Duration::from_secs(2))
                        .await;
                }
                next
            }
        }
    }

    async fn start_in(
        &mut self,
        c: &Container,
        attempt: u32,
        sandbox: Sandbox,
    ) -> Result<(), StartContainerError> {
        let (pod, container) = (self.key(), c.name.clone());
        if self.net.files.is_none() {
            // The pod network failed in this sync (reported): nothing starts without it.
            return Err(StartContainerError::NoNetwork { pod, container });
        }
        // As the kubelet: the image volumes' pulls fail before the container's own image.
        let image_volumes = self.image_volumes(c).await?;
        let image = self.pull_image(c).await?;
        let id = translate::container_id(&self.uid, &c.name, attempt);
        let (spec, security) = self
            .container_config(c, attempt, &id, &image, &image_volumes)
            .await?;
        self.ctx.images.used(&image.id);
        self.waiting.remove(&c.name);
        let t0 = std::time::Instant::now();
        // Built while the pod network is set up, it runs once the network is there.
        let held = if self.net.pending.is_some() {
            let created = self
                .ctx
                .runtime
                .create_container(&sandbox, &spec, &image.layers, &security)
                .await;
            let network = self.finish_network().await;
            match created {
                Ok(created) if !network => {
                    // No network: this attempt never ran and leaves no record, nor an event
                    // (the kubelet creates no container before the pod's sandbox is up).
                    created.abort().await;
                    if let Err(e) = self.ctx.runtime.remove_container(&id).await {
                        tracing::warn!(error = %e, container = %id, "cannot remove the unstarted container");
                    }
                    return Err(StartContainerError::NoNetwork { pod, container });
                }
                created => Some(created),
            }
        } else {
            None
        };
        self.container_event(
            &c.name,
            EventType::Normal,
            event::CREATED_CONTAINER,
            &format!("Created container: {}", c.name),
        );
        let started = match held {
            Some(Ok(created)) => created.start().await,
            Some(Err(e)) => Err(e),
            None => {
                self.ctx
                    .runtime
                    .start_container(&sandbox, &spec, &image.layers, &security)
                    .await
            }
        };
        crate::metrics::observe_runtime_operation("start_container", t0.elapsed());
        if let Err(source) = started {
            if self.ctx.runtime.status(&id).is_none() {
                return Err(StartContainerError::NotCreated {
                    pod,
                    container,
                    source,
                });
            }
            return Err(StartContainerError::Runtime {
                pod,
                container,
                source,
            });
        }
        crate::metrics::pod_container_started(&self.uid);
        self.container_event(
            &c.name,
            EventType::Normal,
            event::STARTED_CONTAINER,
            &format!("Started container {}", c.name),
        );
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let pod_ip = self.net.pod_ip();
            let ran = super::hooks::run(&self.ctx, &id, c, &pod_ip, &hook, POST_START_TIMEOUT);
            if let Err(source) = ran.await {
                return Err(StartContainerError::PostStartHook {
                    pod,
                    container,
                    source,
                });
            }
        }
        Ok(())
    }

    /// The image step: the pull back-off, the pull policy, shared pulls, pull secrets.
    async fn pull_image(&mut self, c: &Container) -> Result<Image, StartContainerError> {
        let image_ref = c.image.clone().unwrap_or_default();
        let key = image_key(&c.name, &image_ref);
        let policy = PullPolicy::of(c.image_pull_policy.as_deref(), &image_ref);
        self.ensure_image(c, image_ref, policy, key, true).await
    }

    /// The image volumes container `c` mounts (the kubelet's `getImageVolumes`, then
    /// `toKubeContainerImageVolumes`): each volume's image made available by the volume's
    /// `pullPolicy` with the pod's pull secrets (its pulls back off by volume and image), then
    /// its read-only view mounted for the pod by the runtime. Volume name -> host path.
    async fn image_volumes(
        &mut self,
        c: &Container,
    ) -> Result<HashMap<String, PathBuf>, StartContainerError> {
        let mut out = HashMap::new();
        for (name, reference, pull_policy) in translate::image_volumes_of(&self.pod, c) {
            let key = image_key(&format!("volume/{name}"), &reference);
            let policy = PullPolicy::of(pull_policy.as_deref(), &reference);
            let image = self.ensure_image(c, reference, policy, key, false).await?;
            let path = self
                .ctx
                .runtime
                .mount_image_volume(&self.uid, &image.id, &image.layers)
                .map_err(|e| StartContainerError::ImageVolume {
                    pod: self.key(),
                    container: c.name.clone(),
                    volume: name.clone(),
                    message: e.to_string(),
                })?;
            self.ctx.images.used(&image.id);
            out.insert(name, path);
        }
        Ok(out)
    }

    /// Makes `image_ref` available for container `c` (its own image, or an image volume's:
    /// `own` false, whose pull Events name the pod as the kubelet's image puller does for
    /// image volumes), with the back-off under `key`.
    async fn ensure_image(
        &mut self,
        c: &Container,
        image_ref: String,
        policy: PullPolicy,
        key: String,
        own: bool,
    ) -> Result<Image, StartContainerError> {
        let now = SystemTime::now();
        let previous = self.waiting.get(&c.name);
        // Measured from the last failed pull, as the kubelet's IsInBackOffSinceUpdate.
        if let Some(until) = self.backoff.in_backoff_since_update(&key, now) {
            if previous.map(|w| w.reason) != Some(waiting::ERR_IMAGE_NEVER_PULL) {
                let message = pull_back_off_message(&image_ref, previous);
                return Err(StartContainerError::PullBackOff {
                    pod: self.key(),
                    container: c.name.clone(),
                    image: image_ref,
                    until: Some(until),
                    message,
                });
            }
        }
        let pulls = match policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !self.ctx.images.present(&image_ref),
            PullPolicy::Never => false,
        };
        let image_event = |w: &Self, kind: EventType, reason: &str, message: &str| {
            if own {
                w.container_event(&c.name, kind, reason, message);
            } else {
                w.event(kind, reason, message);
            }
        };
        if pulls {
            image_event(
                self,
                EventType::Normal,
                event::PULLING_IMAGE,
                &format!("Pulling image {image_ref:?}"),
            );
        }
        let pull_start = std::time::Instant::now();
        let creds = match &self.vols.api_objects {
            Some(o) if pulls => {
                let (creds, bad) = crate::projection::pull_credentials(&self.pod, o);
                for name in bad {
                    self.event(
                        EventType::Warning,
                        event::FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
                        &format!("Unable to retrieve some image pull secrets ({name}); attempting to pull the image may not succeed."),
                    );
                }
                creds
            }
            _ => Default::default(),
        };
        match self.ctx.images.ensure(&image_ref, policy, &creds).await {
            Ok(image) => {
                let message = if pulls {
                    let took = pull_start.elapsed();
                    crate::metrics::pod_image_pulled(&self.uid, took);
                    crate::metrics::observe_runtime_operation("pull_image", took);
                    format!(
                        "Successfully pulled image {image_ref:?} in {:.3}s",
                        took.as_secs_f64()
                    )
                } else {
                    format!("Container image {image_ref:?} already present on machine")
                };
                image_event(self, EventType::Normal, event::PULLED_IMAGE, &message);
                Ok(image)
            }
            Err(source) => {
                let now = SystemTime::now();
                self.backoff.next(&key, now, now);
                Err(StartContainerError::Image {
                    pod: self.key(),
                    container: c.name.clone(),
                    source,
                })
            }
        }
    }

    /// The config step: mounts (subPaths bind-pinned), the runtime's spec of this attempt,
    /// devices, labels, and the container's security profiles (seccomp, AppArmor; in a pod with
    /// its own user namespace, the mounts bound without an idmapped view).
    async fn container_config(
        &mut self,
        c: &Container,
        attempt: u32,
        id: &str,
        image: &Image,
        image_volumes: &HashMap<String, PathBuf>,
    ) -> Result<(ContainerSpec, ContainerSecurity), StartContainerError> {
        let (pod, container) = (self.key(), c.name.clone());
        let (mounts, message_file) =
            self.mounts(c, id, image_volumes)
                .map_err(|source| match source {
                    MountsError::ImageSubPath { volume, message } => {
                        StartContainerError::ImageVolume {
                            pod: pod.clone(),
                            container: container.clone(),
                            volume,
                            message,
                        }
                    }
                    source => StartContainerError::Mounts {
                        pod: pod.clone(),
                        container: container.clone(),
                        source,
                    },
                })?;
        let mut security = crate::security::container_security(&self.pod, c, &self.ctx.security)
            .map_err(|message| StartContainerError::Security {
                pod: pod.clone(),
                container: container.clone(),
                message,
            })?;
        // The runtime checks that the others can be idmapped before it makes anything.
        security.plain_mounts = mounts
            .iter()
            .filter(|(_, volume)| !crate::security::userns::idmapped(&self.pod, volume.as_deref()))
            .map(|(m, _)| m.destination.clone())
            .collect();
        let mounts = mounts.into_iter().map(|(m, _)| m).collect();
        // The process environment is fixed when the container is built: one that names the
        // pod's address waits for the network first.
        if self.net.pending.is_some()
            && translate::env_needs_pod_ip(c)
            && !self.finish_network().await
        {
            return Err(StartContainerError::NoNetwork { pod, container });
        }
        let pod_with_ips = self.pod_with_ips();
        let image_ref = c.image.clone().unwrap_or_default();
        let ctx = translate::ContainerContext {
            pod: &pod_with_ips,
            container: c,
            image: &image.config,
            image_ref: &image_ref,
            image_id: &image.id,
            attempt,
            mounts,
            node_memory_bytes: self.ctx.node.memory_bytes,
            node_cpu_millis: self.ctx.node.cpu_millis,
            termination_message_path: Some(message_file),
            objects: self
                .ctx
                .objects
                .as_ref()
                .and(self.vols.api_objects.as_ref()),
        };
        let mut spec =
            translate::container_spec(&ctx).map_err(|source| StartContainerError::Config {
                pod: pod.clone(),
                container: container.clone(),
                source,
            })?;
        spec.devices = self
            .devices(c)
            .map_err(|source| StartContainerError::Devices {
                pod: pod.clone(),
                container: container.clone(),
                source,
            })?;
        self.plugin_devices(c, &mut spec)
            .await
            .map_err(|source| StartContainerError::Devices {
                pod: pod.clone(),
                container: container.clone(),
                source,
            })?;
        // The CDI devices of the ResourceClaims the container names (the kubelet's
        // GetResources): the runtime resolves them through the CDI specs.
        if let Some(dra) = &self.ctx.dra {
            let ids = dra.container_cdi_devices(&self.pod, c).await.map_err(|e| {
                StartContainerError::Devices {
                    pod,
                    container,
                    source: DevicesError::Claims(e),
                }
            })?;
            spec.cdi_devices.extend(ids);
        }
        spec.labels
            .insert(LABEL_STOP_SIGNAL.into(), spec.stop_signal.to_string());
        Ok((spec, security))
    }

    /// What the device plugins gave the container at admission (env, mounts, device nodes,
    /// annotations, CDI device names), then the plugins' PreStartContainer: a failure is the
    /// container's config error, as the kubelet's `GetDeviceRunContainerOptions`.
    async fn plugin_devices(
        &self,
        c: &Container,
        spec: &mut ContainerSpec,
    ) -> Result<(), DevicesError> {
        let Some(devices) = &self.ctx.devices else {
            return Ok(());
        };
        let given = devices.container_devices(&self.uid, &c.name);
        if given.is_empty() {
            return Ok(());
        }
        crate::devices::apply(spec, &given).map_err(|message| DevicesError::Device { message })?;
        devices
            .pre_start(&self.uid, &c.name)
            .await
            .map_err(|e| DevicesError::PreStart {
                message: e.to_string(),
            })
    }

    /// The container's `volumeDevices`: each names a block volume of the pod, whose device file
    /// (set up with the pod's volumes) becomes a node at `devicePath`.
    fn devices(&self, c: &Container) -> Result<Vec<bosun_runtime::Device>, DevicesError> {
        if c.volume_devices.as_ref().is_none_or(|d| d.is_empty()) {
            return Ok(Vec::new());
        }
        let vols = self.vols.paths.clone().unwrap_or_default();
        let mut out = Vec::new();
        for d in c.volume_devices.iter().flatten() {
            let path = vols.get(&d.name).ok_or_else(|| DevicesError::NoVolume {
                name: d.name.clone(),
            })?;
            out.push(
                translate::block_device(path, &d.device_path, self.claim_read_only(&d.name))
                    .map_err(|message| DevicesError::Device { message })?,
            );
        }
        Ok(out)
    }

    /// The container's mounts (with safe subPaths) with the volume each comes from (`None`: the
    /// pod's hosts, hostname and resolv.conf files), and its termination message file.
    #[allow(clippy::type_complexity)]
    fn mounts(
        &self,
        c: &Container,
        id: &str,
        image_volumes: &HashMap<String, PathBuf>,
    ) -> Result<(Vec<(Mount, Option<String>)>, PathBuf), MountsError> {
        let vols = self.vols.paths.clone().unwrap_or_default();
        let pod_dir = self.pod_dir();
        let mut out = Vec::new();
        let objects = self
            .ctx
            .objects
            .as_ref()
            .and(self.vols.api_objects.as_ref());
        for (i, r) in translate::mount_requests(&self.pod, c, objects)
            .map_err(MountsError::Requests)?
            .into_iter()
            .enumerate()
        {
            let image_volume = image_volumes.get(&r.volume);
            let vol = image_volume
                .or_else(|| vols.get(&r.volume))
                .ok_or_else(|| MountsError::NotSetUp {
                    volume: r.volume.clone(),
                })?;
            if let (Some(root), Some(sp)) = (image_volume, r.sub_path.as_deref()) {
                // As containerd: a subPath of an image volume must be a folder of the image
                // (never made: the view is read-only).
                translate::check_image_sub_path(root, sp).map_err(|message| {
                    MountsError::ImageSubPath {
                        volume: r.volume.clone(),
                        message,
                    }
                })?;
            }
            if r.propagation == Propagation::Bidirectional {
                // Mounts made in the container must reach the host: the kubelet's root folder has
                // to be a shared mount (the kubelet makes it one at start; bosun only when needed).
                bosun_volumes::ensure_shared_mount(&self.ctx.cfg.root_dir).map_err(|source| {
                    MountsError::SharedMount {
                        path: self.ctx.cfg.root_dir.clone(),
                        source,
                    }
                })?;
            }
            let source = match r.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) => {
                    bosun_volumes::prepare_subpath(&pod_dir, &r.volume, vol, sp, &c.name, i)
                        .map_err(MountsError::SubPath)?
                }
                None => vol.clone(),
            };
            out.push((
                Mount {
                    destination: r.destination,
                    source,
                    readonly: r.readonly,
                    propagation: r.propagation,
                },
                Some(r.volume),
            ));
        }
        if let Some(files) = &self.net.files {
            for (dest, source) in [
                ("/etc/hosts", &files.hosts),
                ("/etc/hostname", &files.hostname),
                ("/etc/resolv.conf", &files.resolv),
            ] {
                if out
                    .iter()
                    .any(|(m, _)| m.destination == std::path::Path::new(dest))
                {
                    continue;
                }
                out.push((
                    Mount {
                        destination: dest.into(),
                        source: source.clone(),
                        readonly: false,
                        propagation: Propagation::Private,
                    },
                    None,
                ));
            }
        }
        let dir = pod_dir.join("containers").join(&c.name);
        std::fs::create_dir_all(&dir).map_err(|source| MountsError::MessageFile {
            path: dir.clone(),
            source,
        })?;
        let file = dir.join(id);
        std::fs::write(&file, b"").map_err(|source| MountsError::MessageFile {
            path: file.clone(),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666));
        Ok((out, file))
    }
}

/// The pid namespace an ephemeral container targeting `target` joins: the target's own, unless
/// the pod shares one (or the host's) anyway. An error while the target is not running.
pub(super) fn target_pid_namespace(
    sandbox: &Sandbox,
    attempts: &Attempts,
    target: &str,
) -> Result<Option<PathBuf>, String> {
    if sandbox.pidns.is_some() || sandbox.host_pid {
        return Ok(None);
    }
    match attempts
        .get(target)
        .and_then(|v| v.last())
        .map(|r| &r.state)
    {
        Some(bosun_runtime::ContainerState::Running { pid, .. }) => {
            Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))))
        }
        _ => Err(format!("the target container {target:?} is not running")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::status::Waiting;

    #[test]
    fn a_pull_back_off_keeps_the_last_error() {
        let w = |reason, message: &str| Waiting {
            reason,
            message: message.into(),
        };
        let failed = w(
            waiting::ERR_IMAGE_PULL,
            "failed to pull image \"x:1\": no route",
        );
        let first = pull_back_off_message("x:1", Some(&failed));
        assert_eq!(
            first,
            "Back-off pulling image \"x:1\": ErrImagePull: failed to pull image \"x:1\": no route"
        );
        // The next syncs of the same back-off say the same.
        let backing_off = w(waiting::IMAGE_PULL_BACK_OFF, &first);
        assert_eq!(pull_back_off_message("x:1", Some(&backing_off)), first);
        assert_eq!(
            pull_back_off_message("x:1", None),
            "Back-off pulling image \"x:1\""
        );
    }
}
