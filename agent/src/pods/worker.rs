//! One worker per pod: drives the runtime toward the newest spec and writes the pod's status.
//!
//! The worker always acts on what the runtime reports now (`list`), never on remembered state:
//! it is woken by spec changes, by container exits and by a timer, and each time compares the
//! containers that exist with the ones the spec wants (STYLE habit 1). A restarted agent runs the
//! same code over the containers it finds, which is how pods are adopted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_runtime::{ContainerState, ContainerStatus, Mount, Propagation, Sandbox};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, PodStatus};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::backoff::Backoff;
use super::status::{self, ContainerView, Record};
use super::Ctx;
use crate::translate;

pub use crate::translate::{
    LABEL_CONTAINER_NAME as LABEL_CONTAINER, LABEL_POD_UID, LABEL_RESTART_COUNT as LABEL_ATTEMPT,
};
/// The stop signal the container was started with (the image's STOPSIGNAL or SIGTERM).
pub const LABEL_STOP_SIGNAL: &str = "bosun.stop-signal";

/// What the manager wants of a pod.
#[derive(Clone, Debug)]
pub enum Desired {
    Run(Arc<Pod>),
    /// Terminate gracefully (grace override in seconds, e.g. from a deletion), then clean up.
    Terminate {
        pod: Arc<Pod>,
        grace: Option<i64>,
    },
}

pub struct WorkerHandle {
    pub tx: watch::Sender<Desired>,
    pub wake: Arc<Notify>,
    pub done: tokio::task::JoinHandle<()>,
}

pub fn spawn(ctx: Arc<Ctx>, desired: Desired) -> WorkerHandle {
    let pod = match &desired {
        Desired::Run(p) | Desired::Terminate { pod: p, .. } => p.clone(),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let (tx, rx) = watch::channel(desired);
    let wake = Arc::new(Notify::new());
    let span = tracing::info_span!("pod", pod = %pod_key(&pod), uid = %uid);
    let worker = Worker {
        ctx,
        uid,
        pod,
        rx,
        wake: wake.clone(),
        sandbox: None,
        volume_paths: None,
        api_objects: None,
        objects_at: None,
        backoff: Backoff::default(),
        waiting: HashMap::new(),
        messages: HashMap::new(),
        last_status: None,
        start_time: SystemTime::now(),
        next_wakeup: None,
        pod_error: None,
        pod_ips: Vec::new(),
        host_ip: None,
        pod_files: None,
        network_pending: None,
        probes: super::probing::Probes::default(),
        released: false,
    };
    let done = tokio::spawn(worker.run().instrument(span));
    WorkerHandle { tx, wake, done }
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    pod: Arc<Pod>,
    rx: watch::Receiver<Desired>,
    wake: Arc<Notify>,
    sandbox: Option<Sandbox>,
    /// Volume name -> host path, once every volume is set up.
    volume_paths: Option<HashMap<String, PathBuf>>,
    /// The configMaps, secrets and tokens last read for volumes and env (cluster mode), and
    /// when.
    api_objects: Option<crate::projection::ApiObjects>,
    objects_at: Option<SystemTime>,
    backoff: Backoff,
    /// Why a container is not running: (reason, message).
    waiting: HashMap<String, (String, String)>,
    /// Termination messages read after exit, by container id.
    messages: HashMap<String, Option<String>>,
    last_status: Option<PodStatus>,
    start_time: SystemTime,
    next_wakeup: Option<SystemTime>,
    /// A pod-level problem (sandbox, volumes): (reason, message).
    pod_error: Option<(String, String)>,
    /// The pod's addresses (CNI result, or the host's with hostNetwork), IPv4 first.
    pod_ips: Vec<String>,
    host_ip: Option<String>,
    /// /etc/hosts, /etc/resolv.conf, /etc/hostname of the pod, once the network is set up (or
    /// being set up: `network_pending`).
    pod_files: Option<crate::network::PodFiles>,
    /// The pod's CNI ADD running while its first container is built (see `ensure_network`);
    /// never outlives a sync ([`Worker::finish_network`]).
    network_pending: Option<tokio::task::JoinHandle<Result<Vec<String>, String>>>,
    /// Probe tasks and their results.
    probes: super::probing::Probes,
    /// The pod ended and its resources were released.
    released: bool,
}

/// What to do with one container after looking at its newest attempt.
enum Step {
    /// Running or being set up: nothing to do.
    Keep,
    /// Start attempt `n`.
    Start(u32),
    /// Exited and done (no restart).
    Done { succeeded: bool },
    /// Exited, will restart at this time.
    Wait,
}

impl Worker {
    async fn run(mut self) {
        if let Ok(state) = std::fs::read(self.state_dir().join("start-time")) {
            if let Ok(secs) = String::from_utf8_lossy(&state).trim().parse::<u64>() {
                self.start_time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            }
        }
        // kubelet_pod_worker_duration_seconds: the first sync creates, a new spec updates.
        let mut operation = "create";
        loop {
            let desired = self.rx.borrow_and_update().clone();
            match desired {
                Desired::Run(pod) => {
                    self.pod = pod;
                    let t0 = std::time::Instant::now();
                    self.sync().await;
                    crate::metrics::observe_pod_worker(operation, t0.elapsed());
                }
                Desired::Terminate { pod, grace } => {
                    self.pod = pod;
                    self.terminate(grace).await;
                    return;
                }
            }
            let resync = self.ctx.cfg.sync_frequency;
            let wait = self
                .next_wakeup
                .take()
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .map(|d| d.min(resync))
                .unwrap_or(resync);
            operation = "sync";
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() {
                        // The manager is gone (agent shutting down): leave pods running.
                        return;
                    }
                    operation = "update";
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn state_dir(&self) -> PathBuf {
        status::pod_state_dir(&self.ctx.cfg.run_dir, &self.uid)
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.cfg.root_dir.join("pods").join(&self.uid)
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn event(&self, kind: &str, reason: &str, message: &str) {
        super::emit(&self.ctx, &self.pod, None, kind, reason, message);
    }

    /// An event about one container of the pod.
    fn cevent(&self, container: &str, kind: &str, reason: &str, message: &str) {
        super::emit(&self.ctx, &self.pod, Some(container), kind, reason, message);
    }

    /// Every attempt of every container of this pod, by container name, oldest first.
    fn records(&mut self) -> BTreeMap<String, Vec<(Record, ContainerStatus)>> {
        let mut out: BTreeMap<String, Vec<(Record, ContainerStatus)>> = BTreeMap::new();
        for st in self
            .ctx
            .runtime
            .list_prefix(&translate::container_id_prefix(&self.uid))
        {
            if st.labels.get(LABEL_POD_UID) != Some(&self.uid) {
                continue;
            }
            let Some(name) = st.labels.get(LABEL_CONTAINER).cloned() else {
                continue;
            };
            let attempt = st
                .labels
                .get(LABEL_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let message = match &st.state {
                ContainerState::Exited(info) => {
                    let id = st.id.clone();
                    if !self.messages.contains_key(&id) {
                        let m = self.termination_message(&name, &id, info.code, &st);
                        self.messages.insert(id.clone(), m);
                    }
                    self.messages.get(&id).cloned().flatten()
                }
                _ => None,
            };
            let rec = Record {
                id: st.id.clone(),
                attempt,
                state: st.state.clone(),
                image: st.image.clone(),
                image_id: st.image_id.clone(),
                message,
            };
            out.entry(name).or_default().push((rec, st));
        }
        for v in out.values_mut() {
            v.sort_by_key(|(r, _)| r.attempt);
        }
        out
    }

    /// The termination message: the file the container wrote (at most 4096 bytes), or with
    /// FallbackToLogsOnError the tail of its log when it failed.
    fn termination_message(
        &self,
        name: &str,
        id: &str,
        code: i32,
        st: &ContainerStatus,
    ) -> Option<String> {
        let file = self.pod_dir().join("containers").join(name).join(id);
        let mut text = std::fs::read(&file).ok().unwrap_or_default();
        text.truncate(4096);
        if text.is_empty() && code != 0 {
            let c = self.container(name)?;
            if c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
                let lines = bosun_runtime::logs::read_lines(&st.log_path).ok()?;
                let out = bosun_runtime::logs::format_for_user(&lines, Some(80), false);
                let start = out.len().saturating_sub(2048);
                text = out[start..].to_vec();
            }
        }
        (!text.is_empty()).then(|| String::from_utf8_lossy(&text).into_owned())
    }

    fn container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
            .or_else(|| {
                self.ephemeral_containers()
                    .into_iter()
                    .map(|(c, _)| c)
                    .find(|c| c.name == name)
            })
    }

    /// The pod's ephemeral containers (`kubectl debug`) as containers, with their targets.
    fn ephemeral_containers(&self) -> Vec<(Container, Option<String>)> {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.ephemeral_containers.iter().flatten())
            .filter_map(translate::ephemeral_container)
            .collect()
    }

    /// Starts the ephemeral containers that never ran. They are never restarted, and start
    /// whether or not the init containers are done (as with the kubelet).
    async fn start_ephemeral(
        &mut self,
        records: &BTreeMap<String, Vec<(Record, ContainerStatus)>>,
    ) {
        for (c, target) in self.ephemeral_containers() {
            if records.contains_key(&c.name) {
                continue;
            }
            let Some(mut sandbox) = self.sandbox.clone() else {
                return;
            };
            if let Some(t) = target.as_deref() {
                match target_pid_namespace(&sandbox, records, t) {
                    Ok(Some(ns)) => sandbox.pidns = Some(ns),
                    Ok(None) => {}
                    Err(msg) => {
                        self.waiting
                            .insert(c.name.clone(), ("ContainerCreating".into(), msg));
                        self.wake_at(SystemTime::now() + Duration::from_secs(5));
                        continue;
                    }
                }
            }
            self.start_in(&c, 0, sandbox).await;
        }
    }

    async fn ensure_sandbox(&mut self) -> bool {
        self.ensure_sandbox_ns().await && self.ensure_network().await
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// CNI ADD (once; the result is kept in the sandbox folder), then the hosts/resolv.conf/hostname
    /// files. hostNetwork pods skip CNI and get the host's address.
    ///
    /// On a pod's first set-up the ADD runs in the background while the first container is
    /// built (`start_in`): the plugins (~20 ms) and libcontainer's set-up (~40 ms) need nothing
    /// of each other, and the container's process runs only once the network is there. The
    /// hosts file is written without the pod's address meanwhile and rewritten in place (the
    /// container's bind mount holds its inode) when the ADD is done.
    async fn ensure_network(&mut self) -> bool {
        if self.pod_files.is_some() {
            return true;
        }
        let Some(sb) = self.sandbox.clone() else {
            return false;
        };
        self.host_ip = crate::network::host_ip();
        if self.host_network() || sb.netns.is_none() {
            self.pod_ips = self.host_ip.clone().into_iter().collect();
        } else if let Some(ips) = self.ctx.runtime.network_ips(&sb) {
            self.pod_ips = ips;
        } else {
            let add = self.cni_add(&sb);
            let span = tracing::Span::current();
            self.network_pending = Some(tokio::spawn(add.instrument(span)));
            self.pod_ips.clear();
        }
        let dns = self.dns_settings();
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        match crate::network::write_pod_files(
            &self.pod_dir(),
            &self.pod,
            &self.pod_ips,
            &dns,
            &host_hosts,
        ) {
            Ok(f) => {
                self.pod_files = Some(f);
                true
            }
            Err(e) => {
                // A background ADD finishes first: its result stays for the next try.
                if let Some(h) = self.network_pending.take() {
                    let _ = h.await;
                }
                let msg = format!("writing the pod's hosts and resolv.conf: {e}");
                self.network_failed(msg)
            }
        }
    }

    fn dns_settings(&self) -> crate::network::DnsSettings {
        crate::network::DnsSettings {
            cluster_dns: self.ctx.cfg.cluster_dns.clone(),
            cluster_domain: self.ctx.cfg.cluster_domain.clone(),
            host_resolv: std::fs::read_to_string(&self.ctx.cfg.resolv_conf).unwrap_or_default(),
        }
    }

    /// The pod network could not be set up: FailedCreatePodSandBox, and no container starts
    /// until a later sync sets it up.
    fn network_failed(&mut self, msg: String) -> bool {
        self.event("Warning", "FailedCreatePodSandBox", &msg);
        self.pod_error = Some(("FailedCreatePodSandBox".into(), msg));
        self.pod_files = None;
        false
    }

    /// Waits for a background CNI ADD (`ensure_network`) and puts the pod's address into its
    /// hosts file. False when the network failed (reported; the next sync tries again).
    async fn finish_network(&mut self) -> bool {
        let Some(handle) = self.network_pending.take() else {
            return self.pod_files.is_some();
        };
        let ips = match handle.await {
            Ok(Ok(ips)) => ips,
            Ok(Err(msg)) => return self.network_failed(msg),
            Err(e) => return self.network_failed(format!("pod network set-up: {e}")),
        };
        self.pod_ips = ips;
        if self.pod_error.as_ref().map(|e| e.0.as_str()) == Some("FailedCreatePodSandBox") {
            self.pod_error = None;
        }
        let Some(files) = &self.pod_files else {
            return false;
        };
        let text =
            crate::network::hosts_file(&self.pod, &self.pod_ips, &self.ctx.cfg.cluster_domain, "");
        if let Err(e) = crate::network::rewrite_in_place(&files.hosts, text.as_bytes()) {
            let msg = format!("writing the pod's hosts file: {e}");
            return self.network_failed(msg);
        }
        true
    }

    /// The pod's CNI ADD, to run in the background: the pod's addresses, or the message of
    /// the FailedCreatePodSandBox event.
    fn cni_add(
        &self,
        sb: &Sandbox,
    ) -> impl std::future::Future<Output = Result<Vec<String>, String>> + Send + 'static {
        let net = bosun_runtime::PodNetwork {
            namespace: self
                .pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: self.pod.metadata.name.clone().unwrap_or_default(),
            uid: self.uid.clone(),
            port_mappings: crate::network::port_mappings(&self.pod),
        };
        let add = self.ctx.runtime.setup_network(sb, &net);
        async move { add.await.map_err(|e| e.to_string()) }
    }

    /// The pod with status.podIP(s)/hostIP(s) filled in (for downward-API env).
    fn pod_with_ips(&self) -> Pod {
        let mut pod = Pod::clone(&self.pod);
        let st = pod.status.get_or_insert_with(Default::default);
        crate::network::set_ips(st, &self.pod_ips, self.host_ip.as_deref());
        pod
    }

    async fn ensure_sandbox_ns(&mut self) -> bool {
        if self.sandbox.is_some() {
            return true;
        }
        if let Some(sb) = self.ctx.runtime.sandbox(&self.uid) {
            self.sandbox = Some(sb);
            return true;
        }
        let mut spec = translate::sandbox_spec(&self.pod);
        spec.hostname = crate::network::uts_hostname(&self.pod, &self.ctx.cfg.cluster_domain);
        match self.ctx.runtime.create_sandbox(&spec).await {
            Ok(sb) => {
                self.sandbox = Some(sb);
                self.pod_error = None;
                true
            }
            Err(e) => {
                let msg = e.to_string();
                self.event("Warning", "FailedCreatePodSandBox", &msg);
                self.pod_error = Some(("FailedCreatePodSandBox".into(), msg));
                false
            }
        }
    }

    /// Sets every volume up once, and (re)writes the files of the configMap, secret,
    /// downwardAPI and projected volumes from the API at most once per sync period.
    async fn ensure_volumes(&mut self) -> bool {
        let first = self.volume_paths.is_none();
        let result = self.setup_volumes(first).await;
        match result {
            Ok(()) => {
                if self.pod_error.as_ref().map(|e| e.0.as_str()) == Some("FailedMount") {
                    self.pod_error = None;
                }
                true
            }
            // A refresh that fails keeps the files the containers already see.
            Err(msg) if !first => {
                tracing::warn!(error = %msg, "cannot refresh the pod's API volumes");
                true
            }
            Err(msg) => {
                self.volume_paths = None;
                if self.pod_error.as_ref().map(|e| &e.1) != Some(&msg) {
                    self.event("Warning", "FailedMount", &msg);
                }
                self.pod_error = Some(("FailedMount".into(), msg));
                false
            }
        }
    }

    /// The pod's fsGroup on a volume the kubelet gives it to: emptyDir and writable `local`
    /// PVs (hostPath never; CSI volumes by their driver's fsGroupPolicy, in `cluster::csi`; API
    /// data volumes when their files are written), honouring `fsGroupChangePolicy`.
    async fn apply_fs_group(
        &self,
        name: &str,
        kind: &translate::VolumeKind,
        path: &std::path::Path,
    ) -> Result<(), String> {
        let psc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let Some(gid) = psc
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok())
        else {
            return Ok(());
        };
        let applies = match kind {
            translate::VolumeKind::EmptyDir { .. } => true,
            translate::VolumeKind::Local { block, .. } => !*block && !self.claim_read_only(name),
            _ => false,
        };
        if !applies {
            return Ok(());
        }
        let policy = bosun_volumes::ownership::ChangePolicy::from_api(
            psc.and_then(|s| s.fs_group_change_policy.as_deref()),
        );
        let path = path.to_path_buf();
        // A walk of a whole volume: off the async threads.
        tokio::task::spawn_blocking(move || {
            bosun_volumes::ownership::set_volume_ownership(&path, gid, policy, false)
        })
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Whether the pod mounts the claim of volume `name` read-only (`persistentVolumeClaim.readOnly`).
    fn claim_read_only(&self, name: &str) -> bool {
        self.spec()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .is_some_and(|c| c.read_only == Some(true))
    }

    async fn setup_volumes(&mut self, first: bool) -> Result<(), String> {
        let pod_dir = self.pod_dir();
        let cluster = self.ctx.objects.is_some();
        let sources = translate::volume_sources(&self.pod, cluster).map_err(|e| e.to_string())?;
        if first {
            let mut paths = HashMap::new();
            for (name, kind) in &sources {
                let resolved;
                let set_up_err =
                    |e: String| format!("MountVolume.SetUp failed for volume {name:?} : {e}");
                let kind = match (kind, &self.ctx.volumes) {
                    (translate::VolumeKind::Claim { claim }, Some(src)) => {
                        resolved = src
                            .claim(&self.pod, claim, false)
                            .await
                            .map_err(set_up_err)?;
                        &resolved
                    }
                    (translate::VolumeKind::EphemeralClaim { claim }, Some(src)) => {
                        resolved = src
                            .claim(&self.pod, claim, true)
                            .await
                            .map_err(set_up_err)?;
                        &resolved
                    }
                    (translate::VolumeKind::CsiInline { .. }, Some(src)) => {
                        resolved = src.csi_inline(&self.pod, name).await.map_err(set_up_err)?;
                        &resolved
                    }
                    _ => kind,
                };
                let source = super::volume_source(kind)?;
                let path = bosun_volumes::setup(&pod_dir, name, &source)
                    .map_err(|e| format!("MountVolume.SetUp failed for volume {name:?} : {e}"))?;
                self.apply_fs_group(name, kind, &path)
                    .await
                    .map_err(set_up_err)?;
                paths.insert(name.clone(), path);
            }
            self.volume_paths = Some(paths);
        }
        let due = self
            .objects_at
            .is_none_or(|at| at.elapsed().unwrap_or_default() >= self.ctx.cfg.sync_frequency);
        if !first && !due {
            return Ok(());
        }
        // configMaps, secrets and tokens, and the service links (cluster mode).
        let refs = crate::projection::references(&self.pod);
        let objects = match &self.ctx.objects {
            Some(src) => src.fetch(&self.pod, &refs).await?,
            None => crate::projection::ApiObjects::default(),
        };
        self.objects_at = Some(SystemTime::now());
        let node = translate::NodeAllocatable {
            memory_bytes: self.ctx.node_memory,
            cpu_millis: self.ctx.node_cpu_millis,
        };
        let pod = self.pod_with_ips();
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let paths = self.volume_paths.clone().unwrap_or_default();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if crate::projection::api_data_plugin(v).is_none() {
                continue;
            }
            let Some(path) = paths.get(&v.name) else {
                continue;
            };
            let set_up_err =
                |e: String| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name);
            let payload =
                crate::projection::payload(&pod, v, &objects, node).map_err(set_up_err)?;
            match bosun_volumes::atomic::write(path, &payload, fs_group) {
                Ok(true) if !first => tracing::info!(volume = %v.name, "volume files updated"),
                Ok(_) => {}
                Err(e) => return Err(set_up_err(e.to_string())),
            }
        }
        self.api_objects = Some(objects);
        Ok(())
    }

    async fn sync(&mut self) {
        // A pod the API says has ended never runs again (also one that ended before this node
        // saw it, or before a restart lost its records): release it and keep its logs.
        if super::api_terminal(&self.pod) {
            if !self.released {
                self.stop_all_now().await;
                self.release().await;
                self.released = true;
            }
            return;
        }
        let _ = std::fs::create_dir_all(self.state_dir());
        let start_file = self.state_dir().join("start-time");
        if !start_file.exists() {
            let secs = self
                .start_time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let _ =
                status::write_atomic(&self.state_dir(), "start-time", secs.to_string().as_bytes());
        }
        if let Ok(bytes) = serde_json::to_vec(&*self.pod) {
            let _ = status::write_atomic(&self.state_dir(), "pod.json", &bytes);
        }
        let ready = self.ensure_sandbox().await && self.ensure_volumes().await;
        if !ready {
            // A background CNI ADD never outlives the sync that began it.
            self.finish_network().await;
            self.next_wakeup = Some(SystemTime::now() + Duration::from_secs(5));
            self.write_status(false, false, false);
            return;
        }
        let spec = self.spec();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut records = self.records();

        // Init containers, in order. Sidecars (restartPolicy: Always) keep running.
        let mut init_done = true;
        let mut init_failed = false;
        for c in spec.init_containers.iter().flatten() {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let latest = records
                .get(&c.name)
                .and_then(|v| v.last())
                .map(|(r, _)| r.clone());
            let step = self.step(
                c,
                latest.as_ref(),
                if sidecar {
                    "Always"
                } else {
                    init_policy(&policy)
                },
            );
            match step {
                Step::Keep
                    if sidecar
                        && matches!(
                            latest.as_ref().map(|r| &r.state),
                            Some(ContainerState::Running { .. })
                        ) =>
                {
                    continue
                }
                Step::Keep => {
                    init_done = false;
                    break;
                }
                Step::Done { succeeded: true } if !sidecar => continue,
                Step::Done { .. } => {
                    init_done = false;
                    init_failed = true;
                    break;
                }
                Step::Wait => {
                    if sidecar {
                        continue;
                    }
                    init_done = false;
                    break;
                }
                Step::Start(n) => {
                    self.start(c, n).await;
                    if sidecar {
                        continue;
                    }
                    init_done = false;
                    break;
                }
            }
        }

        let mut finished = true;
        if init_done {
            for c in &spec.containers {
                let latest = records
                    .get(&c.name)
                    .and_then(|v| v.last())
                    .map(|(r, _)| r.clone());
                match self.step(c, latest.as_ref(), &policy) {
                    Step::Start(n) => {
                        finished = false;
                        self.start(c, n).await;
                    }
                    Step::Keep | Step::Wait => finished = false,
                    Step::Done { .. } => {}
                }
            }
        } else {
            finished = init_failed && policy == "Never";
        }
        // No container started to wait for a background CNI ADD: wait for it here.
        if !self.finish_network().await {
            self.next_wakeup = Some(SystemTime::now() + Duration::from_secs(5));
            self.write_status(false, false, false);
            return;
        }
        self.start_ephemeral(&records).await;
        if finished {
            // Every main container is done for good: stop sidecars, newest first.
            let sidecars: Vec<Container> = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .cloned()
                .collect();
            for c in sidecars.iter().rev() {
                self.stop_running(&c.name, None).await;
            }
        }
        records = self.records();
        let all_running = !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                matches!(
                    records
                        .get(&c.name)
                        .and_then(|v| v.last())
                        .map(|(r, _)| &r.state),
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
        self.gc(&records).await;
        self.sync_probes(&records);
        self.write_status(true, init_done, init_failed);
    }

    /// Decides the next step for one container from its newest attempt.
    fn step(&mut self, c: &Container, latest: Option<&Record>, policy: &str) -> Step {
        let now = SystemTime::now();
        let Some(rec) = latest else {
            return Step::Start(0);
        };
        let (code, finished_at) = match &rec.state {
            ContainerState::Created | ContainerState::Running { .. } => {
                self.waiting.remove(&c.name);
                return Step::Keep;
            }
            ContainerState::Exited(info) => (info.code, info.finished_at),
            ContainerState::Unknown { .. } => (137, now),
        };
        let restart = match policy {
            "Always" => true,
            "OnFailure" => code != 0,
            _ => false,
        };
        if !restart {
            self.waiting.remove(&c.name);
            return Step::Done {
                succeeded: code == 0,
            };
        }
        let key = format!("{}/{}", c.name, "run");
        if let Some(until) = self.backoff.in_backoff_until(&key, finished_at, now) {
            let delay = self.backoff.delay(&key);
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}",
                delay.as_secs(),
                c.name,
                pod_key(&self.pod)
            );
            if self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                self.cevent(&c.name, "Warning", "BackOff", &msg);
            }
            self.waiting
                .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
            self.wake_at(until);
            return Step::Wait;
        }
        self.backoff.next(&key, finished_at, now);
        Step::Start(rec.attempt + 1)
    }

    fn wake_at(&mut self, t: SystemTime) {
        self.next_wakeup = Some(match self.next_wakeup {
            Some(cur) if cur < t => cur,
            _ => t,
        });
    }

    /// Creates and starts attempt `attempt` of container `c`, then runs its postStart hook.
    async fn start(&mut self, c: &Container, attempt: u32) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        self.start_in(c, attempt, sandbox).await;
    }

    /// [`Worker::start`] with the sandbox given (an ephemeral container's may join its
    /// target's pid namespace).
    async fn start_in(&mut self, c: &Container, attempt: u32, sandbox: Sandbox) {
        if self.pod_files.is_none() {
            // The pod network failed in this sync (reported): nothing starts without it.
            return;
        }
        let image_ref = c.image.clone().unwrap_or_default();
        // Image: pull policy, shared pulls and back-off (crate::images).
        let key = format!("{}/image", c.name);
        let now = SystemTime::now();
        if self.backoff.in_backoff_until(&key, now, now).is_some()
            && self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("ErrImageNeverPull")
        {
            let msg = format!("Back-off pulling image {image_ref:?}");
            if self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("ImagePullBackOff") {
                self.cevent(&c.name, "Normal", "BackOff", &msg);
            }
            let prev = self.waiting.get(&c.name).map(|w| w.1.clone());
            let msg = match prev {
                Some(p) if !p.starts_with("Back-off") => format!("{msg}: {p}"),
                _ => msg,
            };
            self.waiting
                .insert(c.name.clone(), ("ImagePullBackOff".into(), msg));
            if let Some(until) = self.backoff.in_backoff_until(&key, now, now) {
                self.wake_at(until);
            }
            return;
        }
        let policy = crate::images::PullPolicy::of(c.image_pull_policy.as_deref(), &image_ref);
        let present = matches!(self.ctx.images.resolve(&image_ref), Ok(Some(_)));
        let pulls = match policy {
            crate::images::PullPolicy::Always => true,
            crate::images::PullPolicy::IfNotPresent => !present,
            crate::images::PullPolicy::Never => false,
        };
        if pulls {
            self.cevent(
                &c.name,
                "Normal",
                "Pulling",
                &format!("Pulling image {image_ref:?}"),
            );
        }
        let pull_start = std::time::Instant::now();
        let creds = match &self.api_objects {
            Some(o) if pulls => {
                let (creds, bad) = crate::projection::pull_credentials(&self.pod, o);
                for name in bad {
                    self.event(
                        "Warning",
                        "FailedToRetrieveImagePullSecret",
                        &format!("Unable to retrieve some image pull secrets ({name}); attempting to pull the image may not succeed."),
                    );
                }
                creds
            }
            _ => Default::default(),
        };
        let image = match self
            .ctx
            .image_manager
            .ensure_with(&image_ref, policy, &creds)
            .await
        {
            Ok(i) => {
                if pulls {
                    crate::metrics::pod_image_pulled(&self.uid, pull_start.elapsed());
                    crate::metrics::observe_runtime_operation("pull_image", pull_start.elapsed());
                }
                let msg = if pulls {
                    format!(
                        "Successfully pulled image {image_ref:?} in {:.3}s",
                        pull_start.elapsed().as_secs_f64()
                    )
                } else {
                    format!("Container image {image_ref:?} already present on machine")
                };
                self.cevent(&c.name, "Normal", "Pulled", &msg);
                i
            }
            Err(e) => {
                let reason = e.reason();
                let msg = e.to_string();
                if self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some(reason) {
                    self.cevent(
                        &c.name,
                        "Warning",
                        if reason == "ErrImagePull" {
                            "Failed"
                        } else {
                            reason
                        },
                        &msg,
                    );
                }
                self.waiting.insert(c.name.clone(), (reason.into(), msg));
                let now = SystemTime::now();
                self.backoff.next(&key, now, now);
                // Show ImagePullBackOff soon, retry when the back-off ends.
                self.wake_at(now + Duration::from_secs(2));
                return;
            }
        };
        let id = translate::container_id(&self.uid, &c.name, attempt);
        let (mounts, message_file) = match self.mounts(c, &id) {
            Ok(m) => m,
            Err(msg) => {
                self.cevent(&c.name, "Warning", "Failed", &msg);
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), msg));
                self.wake_at(SystemTime::now() + Duration::from_secs(10));
                return;
            }
        };
        // The process environment is fixed when the container is built: one that names the
        // pod's address waits for the network first.
        if self.network_pending.is_some()
            && translate::env_needs_pod_ip(c)
            && !self.finish_network().await
        {
            return;
        }
        let pod_with_ips = self.pod_with_ips();
        let ctx = translate::ContainerContext {
            pod: &pod_with_ips,
            container: c,
            image: &image.config,
            image_ref: &image_ref,
            image_id: &image.id,
            attempt,
            mounts,
            node_memory_bytes: self.ctx.node_memory,
            node_cpu_millis: self.ctx.node_cpu_millis,
            termination_message_path: Some(message_file),
            objects: self.ctx.objects.as_ref().and(self.api_objects.as_ref()),
        };
        let mut spec = match translate::container_spec(&ctx) {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                self.cevent(&c.name, "Warning", "Failed", &format!("Error: {msg}"));
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), msg));
                self.wake_at(SystemTime::now() + Duration::from_secs(10));
                return;
            }
        };
        match self.devices(c) {
            Ok(d) => spec.devices = d,
            Err(msg) => {
                self.cevent(&c.name, "Warning", "Failed", &format!("Error: {msg}"));
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), msg));
                self.wake_at(SystemTime::now() + Duration::from_secs(10));
                return;
            }
        }
        spec.labels
            .insert(LABEL_STOP_SIGNAL.into(), spec.stop_signal.to_string());
        self.ctx.image_manager.used(&image.id);
        self.waiting.remove(&c.name);
        let t0 = std::time::Instant::now();
        // Built while the pod network is set up, it runs once the network is there.
        let held = if self.network_pending.is_some() {
            let created = self
                .ctx
                .runtime
                .create_container(&sandbox, &spec, &image.layers)
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
                    return;
                }
                created => Some(created),
            }
        } else {
            None
        };
        self.cevent(
            &c.name,
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        );
        let started = match held {
            Some(Ok(created)) => created.start().await,
            Some(Err(e)) => Err(e),
            None => {
                self.ctx
                    .runtime
                    .start_container(&sandbox, &spec, &image.layers)
                    .await
            }
        };
        crate::metrics::observe_runtime_operation("start_container", t0.elapsed());
        match started {
            Ok(_) => {
                crate::metrics::pod_container_started(&self.uid);
                self.cevent(
                    &c.name,
                    "Normal",
                    "Started",
                    &format!("Started container {}", c.name),
                );
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
                    let pod_ip = self.pod_ips.first().cloned().unwrap_or_default();
                    if let Err(msg) =
                        run_hook(&self.ctx, &id, c, &pod_ip, &hook, Duration::from_secs(30)).await
                    {
                        let msg = format!("PostStartHook failed: {msg}");
                        self.cevent(&c.name, "Warning", "FailedPostStartHook", &msg);
                        let _ = self
                            .ctx
                            .runtime
                            .stop_container(&id, libc::SIGKILL, Duration::from_secs(2))
                            .await;
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                self.cevent(&c.name, "Warning", "Failed", &format!("Error: {msg}"));
            }
        }
    }

    /// The container's `volumeDevices`: each names a block volume of the pod, whose device file
    /// (set up with the pod's volumes) becomes a node at `devicePath`.
    fn devices(&self, c: &Container) -> Result<Vec<bosun_runtime::Device>, String> {
        if c.volume_devices.as_ref().is_none_or(|d| d.is_empty()) {
            return Ok(Vec::new());
        }
        let vols = self.volume_paths.clone().unwrap_or_default();
        let spec = self.spec();
        let read_only: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.read_only == Some(true))
            })
            .map(|v| v.name.as_str())
            .collect();
        let mut out = Vec::new();
        for d in c.volume_devices.iter().flatten() {
            let path = vols
                .get(&d.name)
                .ok_or_else(|| format!("volumeDevice {:?}: no such volume", d.name))?;
            out.push(translate::block_device(
                path,
                &d.device_path,
                read_only.contains(&d.name.as_str()),
            )?);
        }
        Ok(out)
    }

    /// The container's volume mounts (with safe subPaths) and its termination message file.
    fn mounts(&self, c: &Container, id: &str) -> Result<(Vec<Mount>, PathBuf), String> {
        let vols = self.volume_paths.clone().unwrap_or_default();
        let pod_dir = self.pod_dir();
        let mut out = Vec::new();
        let objects = self.ctx.objects.as_ref().and(self.api_objects.as_ref());
        for (i, r) in translate::mount_requests(&self.pod, c, objects)
            .map_err(|e| e.to_string())?
            .into_iter()
            .enumerate()
        {
            let vol = vols
                .get(&r.volume)
                .ok_or_else(|| format!("volume {:?} is not set up", r.volume))?;
            if r.propagation == Propagation::Bidirectional {
                // Mounts made in the container must reach the host: the kubelet's root folder has
                // to be a shared mount (the kubelet makes it one at start; bosun only when needed).
                bosun_volumes::ensure_shared_mount(&self.ctx.cfg.root_dir).map_err(|e| {
                    format!(
                        "making {} a shared mount: {e}",
                        self.ctx.cfg.root_dir.display()
                    )
                })?;
            }
            let source = match r.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) => {
                    bosun_volumes::prepare_subpath(&pod_dir, &r.volume, vol, sp, &c.name, i)
                        .map_err(|e| e.to_string())?
                }
                None => vol.clone(),
            };
            out.push(Mount {
                destination: r.destination,
                source,
                readonly: r.readonly,
                propagation: r.propagation,
            });
        }
        if let Some(files) = &self.pod_files {
            for (dest, source) in [
                ("/etc/hosts", &files.hosts),
                ("/etc/hostname", &files.hostname),
                ("/etc/resolv.conf", &files.resolv),
            ] {
                if out
                    .iter()
                    .any(|m| m.destination == std::path::Path::new(dest))
                {
                    continue;
                }
                out.push(Mount {
                    destination: dest.into(),
                    source: source.clone(),
                    readonly: false,
                    propagation: Propagation::Private,
                });
            }
        }
        let dir = pod_dir.join("containers").join(&c.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = dir.join(id);
        std::fs::write(&file, b"").map_err(|e| format!("{}: {e}", file.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666));
        Ok((out, file))
    }

    /// Stops the running attempt of `name` (preStop, stop signal, SIGKILL at the deadline).
    async fn stop_running(&mut self, name: &str, deadline: Option<SystemTime>) {
        let grace = self
            .spec()
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        let deadline = deadline.unwrap_or_else(|| SystemTime::now() + Duration::from_secs(grace));
        let records = self.records();
        let Some((rec, st)) = records.get(name).and_then(|v| v.last()).cloned() else {
            return;
        };
        if matches!(
            rec.state,
            ContainerState::Running { .. } | ContainerState::Created
        ) {
            let c = self.container(name);
            let pod_ip = self.pod_ips.first().cloned().unwrap_or_default();
            kill_container(self.ctx.clone(), c, pod_ip, st, deadline).await;
        }
    }

    /// Keeps the newest attempt and the one before it of every container; removes the rest.
    async fn gc(&mut self, records: &BTreeMap<String, Vec<(Record, ContainerStatus)>>) {
        for (name, attempts) in records {
            if attempts.len() <= 2 {
                continue;
            }
            for (rec, _) in &attempts[..attempts.len() - 2] {
                if matches!(
                    rec.state,
                    ContainerState::Exited(_) | ContainerState::Unknown { .. }
                ) {
                    if let Err(e) = self.ctx.runtime.remove_container(&rec.id).await {
                        tracing::warn!(container = %rec.id, error = %e, "cannot remove old container");
                    }
                    self.messages.remove(&rec.id);
                    let file = self.pod_dir().join("containers").join(name).join(&rec.id);
                    let _ = std::fs::remove_file(file);
                }
            }
        }
    }

    /// Probe tasks follow the running containers (main containers and sidecars).
    fn sync_probes(&mut self, records: &BTreeMap<String, Vec<(Record, ContainerStatus)>>) {
        let spec = self.spec();
        let pod = self.pod.clone();
        let grace = spec.termination_grace_period_seconds.unwrap_or(30);
        let pod_ip = self.pod_ips.first().cloned().unwrap_or_default();
        let mut running = Vec::new();
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        for c in spec.containers.iter().chain(sidecars) {
            let Some((rec, st)) = records.get(&c.name).and_then(|v| v.last()) else {
                continue;
            };
            if !matches!(rec.state, ContainerState::Running { .. }) {
                continue;
            }
            running.push(super::probing::Target {
                pod: pod.clone(),
                id: rec.id.clone(),
                container: c.clone(),
                pod_ip: pod_ip.clone(),
                pod_grace: grace,
                stop_signal: st
                    .labels
                    .get(LABEL_STOP_SIGNAL)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(libc::SIGTERM),
            });
        }
        let wake = self.wake.clone();
        self.probes.sync(&self.ctx, &wake, running);
    }

    fn views(
        &self,
        containers: &[Container],
        records: &BTreeMap<String, Vec<(Record, ContainerStatus)>>,
    ) -> Vec<ContainerView> {
        containers
            .iter()
            .map(|c| {
                let attempts = records.get(&c.name);
                let current = attempts.and_then(|v| v.last()).map(|(r, _)| r.clone());
                let previous = attempts
                    .filter(|v| v.len() >= 2)
                    .and_then(|v| v.get(v.len() - 2))
                    .map(|(r, _)| r.clone());
                let running = matches!(
                    current.as_ref().map(|r| &r.state),
                    Some(ContainerState::Running { .. })
                );
                let probe = current
                    .as_ref()
                    .map(|r| self.probes.state(&r.id, c))
                    .unwrap_or_default();
                let mut waiting = self.waiting.get(&c.name).cloned();
                if running {
                    waiting = None;
                } else if waiting.is_none() && current.is_none() {
                    if let Some((reason, msg)) = &self.pod_error {
                        let r = if reason == "FailedMount" || reason == "FailedCreatePodSandBox" {
                            "ContainerCreating"
                        } else {
                            reason.as_str()
                        };
                        waiting = Some((r.to_string(), msg.clone()));
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
                    waiting,
                }
            })
            .collect()
    }

    fn write_status(&mut self, sandbox_ready: bool, init_done: bool, init_failed: bool) {
        let spec = self.spec();
        let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        let records = self.records();
        let init_views = self.views(&inits, &records);
        let mut views = self.views(&spec.containers, &records);
        if !init_done {
            for v in views
                .iter_mut()
                .filter(|v| v.current.is_none() && v.waiting.is_none())
            {
                v.waiting = Some(("PodInitializing".into(), String::new()));
            }
        }
        let qos = translate::qos_class(&self.pod);
        let st = status::pod_status(
            &self.pod,
            self.last_status.as_ref(),
            sandbox_ready,
            &init_views,
            init_done,
            init_failed,
            &views,
            self.start_time,
            SystemTime::now(),
            qos.as_str(),
        );
        let mut st = st;
        let ephemeral: Vec<Container> = self
            .ephemeral_containers()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        if !ephemeral.is_empty() {
            let views = self.views(&ephemeral, &records);
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
        crate::network::set_ips(&mut st, &self.pod_ips, self.host_ip.as_deref());
        if self.last_status.as_ref() == Some(&st) {
            return;
        }
        // Static pods report through their mirror pods.
        if let Some(tx) = &self.ctx.status_tx {
            let _ = tx.send(super::StatusUpdate {
                uid: self.uid.clone(),
                namespace: self
                    .pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: self.pod.metadata.name.clone().unwrap_or_default(),
                status: Some(st.clone()),
                mirror: !super::from_api(&self.pod),
            });
        }
        let mut pod = Pod::clone(&self.pod);
        pod.status = Some(st.clone());
        if let Ok(bytes) = serde_json::to_vec_pretty(&pod) {
            if let Err(e) = status::write_atomic(&self.state_dir(), "status.json", &bytes) {
                tracing::warn!(error = %e, "cannot write pod status");
            }
        }
        self.last_status = Some(st);
    }

    /// Kills whatever still runs in a pod that ended (nothing should).
    async fn stop_all_now(&mut self) {
        for attempts in self.records().values() {
            if let Some((rec, _)) = attempts.last() {
                if matches!(
                    rec.state,
                    ContainerState::Running { .. } | ContainerState::Created
                ) {
                    let _ = self
                        .ctx
                        .runtime
                        .stop_container(&rec.id, libc::SIGKILL, Duration::from_secs(2))
                        .await;
                }
            }
        }
    }

    /// Terminates the pod: preStop and stop signal for every main container at once, then the
    /// sidecars newest first, all within the grace period; then removes containers, sandbox,
    /// volumes, logs and state.
    async fn terminate(&mut self, grace: Option<i64>) {
        let spec = self.spec();
        let grace = grace
            .or(spec.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        let deadline = SystemTime::now() + Duration::from_secs(grace);
        self.event(
            "Normal",
            "Killing",
            &format!("Stopping pod with grace period {grace}s"),
        );
        let records = self.records();
        let sidecars: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .map(|c| c.name.clone())
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (name, attempts) in &records {
            if sidecars.contains(name) {
                continue;
            }
            if let Some((rec, st)) = attempts.last() {
                if matches!(
                    rec.state,
                    ContainerState::Running { .. } | ContainerState::Created
                ) {
                    set.spawn(kill_container(
                        self.ctx.clone(),
                        self.container(name),
                        self.pod_ips.first().cloned().unwrap_or_default(),
                        st.clone(),
                        deadline,
                    ));
                }
            }
        }
        while set.join_next().await.is_some() {}
        for name in sidecars.iter().rev() {
            self.stop_running(name, Some(deadline)).await;
        }
        self.cleanup().await;
    }

    /// Releases what a pod that ended holds (containers, network, sandbox, volumes) and keeps
    /// its logs, which users still read (`kubectl logs` of a finished Job).
    async fn release(&mut self) {
        for attempts in self.records().values() {
            for (rec, _) in attempts {
                if let Err(e) = self.ctx.runtime.remove_container(&rec.id).await {
                    tracing::warn!(container = %rec.id, error = %e, "cannot remove container");
                }
            }
        }
        if let Some(add) = self.network_pending.take() {
            // DEL only after the ADD is over.
            let _ = add.await;
        }
        if let Err(e) = self.ctx.runtime.remove_sandbox(&self.uid).await {
            tracing::warn!(error = %e, "cannot remove the sandbox");
        }
        if let Some(src) = &self.ctx.volumes {
            if let Err(e) = src.release(&self.uid).await {
                tracing::warn!(error = %e, "cannot unmount the pod's CSI volumes");
            }
        }
        // teardown_pod removes the pod folder itself, never entering a mount. No
        // remove_dir_all after it: when a CSI volume is still published (its driver down), that
        // would delete the volume's data through the mount.
        if let Err(e) = bosun_volumes::teardown_pod(&self.pod_dir()) {
            tracing::warn!(error = %e, "cannot tear down volumes");
        }
        self.sandbox = None;
        self.volume_paths = None;
    }

    async fn cleanup(&mut self) {
        crate::metrics::forget_pod(&self.uid);
        self.release().await;
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let log_dir = self
            .ctx
            .cfg
            .pod_logs_dir
            .join(format!("{ns}_{name}_{}", self.uid));
        let _ = std::fs::remove_dir_all(&log_dir);
        super::remove_log_links(&self.ctx.cfg.container_logs_dir, &log_dir);
        let _ = std::fs::remove_dir_all(self.state_dir());
        self.event("Normal", "Removed", "pod terminated and cleaned up");
        // Only a deletion is confirmed by deleting the pod object: a pod that ended, or that
        // the API no longer has, stays as it is.
        let deleted = self.pod.metadata.deletion_timestamp.is_some();
        if let (Some(tx), true, true) = (&self.ctx.status_tx, super::from_api(&self.pod), deleted) {
            let _ = tx.send(super::StatusUpdate {
                uid: self.uid.clone(),
                namespace: ns,
                name,
                status: None,
                mirror: false,
            });
        }
    }
}

/// The pid namespace an ephemeral container targeting `target` joins: the target's own, unless
/// the pod shares one (or the host's) anyway. An error while the target is not running.
fn target_pid_namespace(
    sandbox: &Sandbox,
    records: &BTreeMap<String, Vec<(Record, ContainerStatus)>>,
    target: &str,
) -> Result<Option<PathBuf>, String> {
    if sandbox.pidns.is_some() || sandbox.host_pid {
        return Ok(None);
    }
    match records
        .get(target)
        .and_then(|v| v.last())
        .map(|(r, _)| &r.state)
    {
        Some(ContainerState::Running { pid, .. }) => {
            Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))))
        }
        _ => Err(format!("the target container {target:?} is not running")),
    }
}

fn init_policy(pod_policy: &str) -> &'static str {
    // A failed init container is retried unless the pod never restarts.
    if pod_policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    }
}

/// preStop (bounded by the deadline), then the stop signal, then SIGKILL when the deadline passes.
async fn kill_container(
    ctx: Arc<Ctx>,
    c: Option<Container>,
    pod_ip: String,
    st: ContainerStatus,
    deadline: SystemTime,
) {
    let remaining = |min: u64| {
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(min))
    };
    if let Some((c, hook)) = c
        .as_ref()
        .and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.clone()?)))
    {
        tracing::info!(container = %st.id, "running preStop hook");
        if let Err(msg) = run_hook(&ctx, &st.id, c, &pod_ip, &hook, remaining(0)).await {
            tracing::warn!(container = %st.id, reason = "FailedPreStopHook", "{msg}");
        }
    }
    let signal = st
        .labels
        .get(LABEL_STOP_SIGNAL)
        .and_then(|s| s.parse().ok())
        .unwrap_or(libc::SIGTERM);
    // The kubelet gives at least 2 s after a preStop hook that used the whole grace period.
    let grace = remaining(2);
    tracing::info!(container = %st.id, signal, grace_s = grace.as_secs_f32(), "stopping container");
    let t0 = std::time::Instant::now();
    let stopped = ctx.runtime.stop_container(&st.id, signal, grace).await;
    crate::metrics::observe_runtime_operation("stop_container", t0.elapsed());
    if let Err(e) = stopped {
        tracing::warn!(container = %st.id, error = %e, "cannot stop container");
    }
}

/// Runs a lifecycle hook (exec, sleep or httpGet against the pod IP).
async fn run_hook(
    ctx: &Ctx,
    id: &str,
    c: &Container,
    pod_ip: &str,
    hook: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &hook.exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err("exec hook has no command".into());
        }
        let out = ctx
            .runtime
            .exec(id, &argv, timeout)
            .await
            .map_err(|e| e.to_string())?;
        if out.code != 0 {
            return Err(format!(
                "command {argv:?} exited with {}: {}",
                out.code,
                String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
            ));
        }
        return Ok(());
    }
    if let Some(sleep) = &hook.sleep {
        let d = Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout);
        tokio::time::sleep(d).await;
        return Ok(());
    }
    if let Some(h) = &hook.http_get {
        let probe = k8s_openapi::api::core::v1::Probe {
            http_get: Some(h.clone()),
            ..Default::default()
        };
        let noop: bosun_probes::ExecFn =
            Arc::new(|_, _| Box::pin(async { Err("not an exec hook".to_string()) }));
        let spec = super::probing::spec(&probe, c, pod_ip, noop)?;
        let bosun_probes::Check::Http(get) = spec.check else {
            return Err("httpGet hook".into());
        };
        return match tokio::time::timeout(timeout, bosun_probes::http_get(&get)).await {
            Ok(bosun_probes::Outcome::Success) => Ok(()),
            Ok(bosun_probes::Outcome::Failure(m)) => Err(format!("httpGet hook failed: {m}")),
            Err(_) => Err(format!("httpGet hook timed out after {timeout:?}")),
        };
    }
    if hook.tcp_socket.is_some() {
        return Err("tcpSocket hooks are deprecated and not supported".into());
    }
    Err("hook has no handler".into())
}
