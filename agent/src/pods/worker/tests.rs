//! The worker against [`FakeRuntime`] and [`FakeImages`]: whole syncs of a pod, without root,
//! in milliseconds. What the status says, which Events are sent, what the runtime was asked.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_runtime::{ContainerSpec, PodSecurity, Sandbox};
use k8s_openapi::api::core::v1::{ContainerStateWaiting, Pod, PodStatus};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;

use super::fake::{Call, FakeImages, FakeRuntime};
use super::{Intent, Next, Worker};
use crate::config::{Config, Flags};
use crate::images::EnsureError;
use crate::pods::{Ctx, EventRecord, StatusUpdate};

struct Harness {
    _tmp: tempfile::TempDir,
    rt: Arc<FakeRuntime>,
    images: Arc<FakeImages>,
    ctx: Arc<Ctx>,
    events: UnboundedReceiver<EventRecord>,
    statuses: UnboundedReceiver<StatusUpdate>,
}

impl Harness {
    fn new() -> Harness {
        Harness::build(None, None)
    }

    fn with_network(pod_network: Arc<crate::podnet::PodNetwork>) -> Harness {
        Harness::with(None, None, pod_network)
    }

    fn with_devices(devices: Option<Arc<dyn crate::devices::DeviceService>>) -> Harness {
        Harness::build(devices, None)
    }

    fn build(
        devices: Option<Arc<dyn crate::devices::DeviceService>>,
        dra: Option<Arc<dyn crate::dra::DraService>>,
    ) -> Harness {
        Harness::with(devices, dra, Arc::new(crate::podnet::PodNetwork::ready()))
    }

    fn with(
        devices: Option<Arc<dyn crate::devices::DeviceService>>,
        dra: Option<Arc<dyn crate::dra::DraService>>,
        pod_network: Arc<crate::podnet::PodNetwork>,
    ) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |n: &str| Some(tmp.path().join(n));
        let flags = Flags {
            root_dir: dir("root"),
            run_dir: dir("run"),
            data_dir: dir("data"),
            pod_logs_dir: dir("logs"),
            container_logs_dir: dir("clogs"),
            ..Default::default()
        };
        let (cfg, _) = Config::load(&flags).unwrap();
        let rt = FakeRuntime::new();
        let images = Arc::new(FakeImages::default());
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (status_tx, statuses) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            cfg,
            runtime: rt.clone(),
            images: images.clone(),
            node: crate::fieldpath::NodeAllocatable {
                memory_bytes: 8 << 30,
                cpu_millis: 4000,
            },
            status_tx: Some(status_tx),
            objects: None,
            volumes: None,
            volume_stats: None,
            events_tx: Some(events_tx),
            devices,
            dra,
            security: crate::security::NodeSecurity {
                sysctls: crate::security::sysctl::Allowlist::new(&[], (6, 1)).unwrap(),
                ..Default::default()
            },
            userns: Some(Arc::new(
                bosun_runtime::userns::Allocator::open(
                    tmp.path().join("userns.json"),
                    bosun_runtime::userns::IdPool::default_for(65536),
                )
                .unwrap(),
            )),
            resources: Arc::new(crate::pods::eviction::NodeResources::unlimited()),
            allocated: Default::default(),
            node_shutdown: Default::default(),
            status_flush: None,
            pod_network,
        });
        Harness {
            _tmp: tmp,
            rt,
            images,
            ctx,
            events,
            statuses,
        }
    }

    /// The status updates sent since the last call.
    fn statuses(&mut self) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        while let Ok(u) = self.statuses.try_recv() {
            out.push(u);
        }
        out
    }

    fn worker(&self, pod: &Pod) -> Worker {
        Worker::new(
            self.ctx.clone(),
            Arc::new(pod.clone()),
            Arc::new(Notify::new()),
        )
    }

    /// The Events sent since the last call, as `(reason, container, message)`.
    fn events(&mut self) -> Vec<(String, Option<String>, String)> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            let container = e.field_path.map(|f| {
                f.trim_end_matches('}')
                    .rsplit('{')
                    .next()
                    .unwrap()
                    .to_string()
            });
            out.push((e.reason, container, e.message));
        }
        out
    }

    fn state_dir(&self, uid: &str) -> std::path::PathBuf {
        self.ctx.cfg.run_dir.join("pods").join(uid)
    }
}

fn pod(yaml: &str) -> Pod {
    let base = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: ns, uid: u1}\n";
    serde_yaml::from_str(&format!("{base}{yaml}")).unwrap()
}

fn two_containers() -> Pod {
    pod("spec:\n  containers:\n  - {name: a, image: busybox:1}\n  - {name: b, image: busybox:1}\n")
}

fn status(w: &Worker) -> PodStatus {
    w.last_status.clone().expect("a status was written")
}

fn waiting(st: &PodStatus, container: &str) -> Option<ContainerStateWaiting> {
    st.container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == container)
        .and_then(|c| c.state.as_ref()?.waiting.clone())
}

fn reasons(events: &[(String, Option<String>, String)]) -> Vec<&str> {
    events.iter().map(|e| e.0.as_str()).collect()
}

fn starts(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Start(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn within(next: Next, from: SystemTime, lo: u64, hi: u64) -> bool {
    match next {
        Next::At(t) => {
            let d = t.duration_since(from).unwrap_or_default();
            d >= Duration::from_secs(lo) && d <= Duration::from_secs(hi)
        }
        _ => false,
    }
}

#[tokio::test]
async fn a_new_pod_gets_a_sandbox_a_network_and_its_containers() {
    let mut h = Harness::new();
    let p = two_containers();
    let mut w = h.worker(&p);
    let next = w.sync(Intent::Run).await;
    assert_eq!(next, Next::Resync);
    let calls = h.rt.take_calls();
    assert_eq!(calls[0], Call::CreateSandbox("u1".into()));
    // The first container is built while the network is set up, and runs once it is there.
    assert!(calls.contains(&Call::Create("u1_a_0".into())), "{calls:?}");
    assert!(
        calls.contains(&Call::SetupNetwork("u1".into())),
        "{calls:?}"
    );
    assert_eq!(starts(&calls), ["u1_a_0", "u1_b_0"]);
    // The runtime is handed the pod's and each container's security: a pod that asks for
    // nothing gets no sysctls, no user namespace, seccomp Unconfined (no seccompDefault) and
    // AppArmor RuntimeDefault (the kubelet's default; the runtime skips it on a host without
    // AppArmor).
    assert_eq!(h.rt.pod_security("u1"), Some(PodSecurity::default()));
    for id in ["u1_a_0", "u1_b_0"] {
        let sec =
            h.rt.container_security(id)
                .expect("created with a security");
        assert_eq!(
            sec.seccomp,
            bosun_runtime::seccomp::SeccompProfile::Unconfined
        );
        assert_eq!(
            sec.apparmor,
            bosun_runtime::apparmor::AppArmorProfile::RuntimeDefault
        );
        assert!(sec.plain_mounts.is_empty());
    }
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.7"));
    let ready = st.container_statuses.iter().flatten().all(|c| c.ready);
    assert!(ready, "no probes: ready once running");
    assert_eq!(
        reasons(&h.events()),
        ["Pulled", "Created", "Started", "Pulled", "Created", "Started"]
    );
    // What `bosun pods` and a restarted agent read.
    let dir = h.state_dir("u1");
    assert!(dir.join("status.json").exists() && dir.join("pod.json").exists());
    // Nothing changed: the next sync asks the runtime for nothing.
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    assert!(h.rt.take_calls().is_empty());
    assert!(h.events().is_empty());
}

#[tokio::test]
async fn a_restarted_agent_adopts_what_runs() {
    let h = Harness::new();
    let p = two_containers();
    let sandbox = Sandbox {
        pod_uid: "u1".into(),
        dir: "/fake/sandboxes/u1".into(),
        netns: None,
        ipcns: None,
        utsns: None,
        pidns: None,
        shm: "/fake/sandboxes/u1/shm".into(),
        cgroup_parent: "/kubepods/podu1".into(),
        host_pid: false,
        userns: None,
        id_range: None,
    };
    for name in ["a", "b"] {
        let id = crate::translate::container_id("u1", name, 0);
        let labels = BTreeMap::from([
            (
                crate::translate::LABEL_POD_UID.to_string(),
                "u1".to_string(),
            ),
            (
                crate::translate::LABEL_CONTAINER_NAME.to_string(),
                name.to_string(),
            ),
            (
                crate::translate::LABEL_RESTART_COUNT.to_string(),
                "0".to_string(),
            ),
        ]);
        h.rt.adopt(sandbox.clone(), &container_spec(&id, name, labels));
    }
    let mut w = h.worker(&p);
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    let calls = h.rt.take_calls();
    assert!(
        calls.is_empty(),
        "nothing created, started or removed: {calls:?}"
    );
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let restarts: i32 = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0);
}

fn container_spec(id: &str, name: &str, labels: BTreeMap<String, String>) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        name: name.into(),
        pod_uid: "u1".into(),
        pod_namespace: "ns".into(),
        pod_name: "web".into(),
        attempt: 0,
        image: "busybox:1".into(),
        image_id: "sha256:x".into(),
        args: vec!["sleep".into()],
        env: vec![],
        cwd: "/".into(),
        user: bosun_runtime::User::Id { uid: 0, gid: None },
        tty: false,
        stdin: false,
        stdin_once: false,
        mounts: vec![],
        // What a container without resources runs with.
        resources: bosun_runtime::Resources {
            cpu_shares: Some(2),
            ..Default::default()
        },
        oom_score_adj: 0,
        security: Default::default(),
        stop_signal: 15,
        termination_message_path: None,
        labels,
        devices: vec![],
        cdi_devices: vec![],
    }
}

#[tokio::test]
async fn a_failed_sandbox_keeps_the_pod_pending_and_is_retried() {
    let mut h = Harness::new();
    let p = two_containers();
    let mut w = h.worker(&p);
    h.rt.fail_sandboxes(Some("no room"));
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, t0, 4, 6), "retried in 5 s: {next:?}");
    assert_eq!(h.rt.take_calls(), [Call::CreateSandbox("u1".into())]);
    let message = "sandbox u1: helper failed: no room";
    assert_eq!(
        h.events(),
        [(
            "FailedCreatePodSandBox".to_string(),
            None,
            message.to_string()
        )]
    );
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let wa = waiting(&st, "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("ContainerCreating"));
    assert_eq!(wa.message.as_deref(), Some(message));
    // The next try works.
    h.rt.fail_sandboxes(None);
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0", "u1_b_0"]);
    assert_eq!(status(&w).phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn a_failed_network_abandons_the_built_container_without_a_trace() {
    let mut h = Harness::new();
    let p = two_containers();
    let mut w = h.worker(&p);
    h.rt.fail_networks(Some("/etc/cni/none"));
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, t0, 4, 6), "{next:?}");
    let calls = h.rt.take_calls();
    assert!(calls.contains(&Call::Abort("u1_a_0".into())), "{calls:?}");
    assert!(calls.contains(&Call::Remove("u1_a_0".into())), "{calls:?}");
    assert!(starts(&calls).is_empty(), "{calls:?}");
    assert!(h.rt.ids().is_empty(), "no attempt is left");
    let ev = h.events();
    assert_eq!(
        reasons(&ev),
        ["Pulled", "FailedCreatePodSandBox"],
        "no Created: {ev:?}"
    );
    assert_eq!(
        ev[1].2,
        "failed to set up the pod network: no network config list in /etc/cni/none"
    );
    assert_eq!(
        waiting(&status(&w), "b").unwrap().reason.as_deref(),
        Some("ContainerCreating")
    );
    h.rt.fail_networks(None);
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0", "u1_b_0"]);
}

#[tokio::test]
async fn a_crashing_container_is_restarted_then_backs_off() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  containers:\n  - {name: a, image: busybox:1}\n");
    h.rt.exit_on_start("a", 1);
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    // The first restart is immediate.
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0", "u1_a_1"]);
    h.events();
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert!(within(next, t0, 8, 11), "the back-off's end: {next:?}");
    let st = status(&w);
    let wa = waiting(&st, "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        wa.message.as_deref(),
        Some("back-off 10s restarting failed container=a pod=ns/web")
    );
    let c = &st.container_statuses.as_ref().unwrap()[0];
    assert_eq!(c.restart_count, 1);
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert_eq!(reasons(&h.events()), ["BackOff"]);
    // Told once.
    w.sync(Intent::Run).await;
    assert!(h.events().is_empty());
}

#[tokio::test]
async fn image_volumes_are_pulled_by_their_policy_and_mounted_read_only() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  volumes:\n  - {name: tools, image: {reference: \"tools:1\"}}\n  - {name: latest, image: {reference: tools, pullPolicy: IfNotPresent}}\n  - {name: data, emptyDir: {}}\n  containers:\n  - name: a\n    image: app:1\n    volumeMounts:\n    - {name: tools, mountPath: /tools}\n    - {name: latest, mountPath: /latest, readOnly: false}\n    - {name: data, mountPath: /data}\n  - {name: b, image: app:1}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    // The volumes' images first (their policies, defaulted by the reference's tag), then the
    // container's own; the container without image volumes pulls only its image.
    use crate::images::PullPolicy::*;
    assert_eq!(
        h.images.take_ensured(),
        [
            ("tools:1".to_string(), IfNotPresent),
            ("tools".to_string(), IfNotPresent),
            ("app:1".to_string(), IfNotPresent),
            ("app:1".to_string(), IfNotPresent),
        ]
    );
    let image_id = format!("sha256:{}", "a".repeat(64));
    assert!(h
        .rt
        .take_calls()
        .contains(&Call::MountImageVolume("u1".into(), image_id.clone())));
    let mounts = h.rt.container_mounts("u1_a_0");
    let at = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination == std::path::Path::new(dest))
            .unwrap()
            .clone()
    };
    let view = std::path::PathBuf::from(format!("/fake/image-volumes/u1/{}", "a".repeat(64)));
    // Read-only whatever the volumeMount says.
    assert_eq!(
        (at("/tools").source, at("/tools").readonly),
        (view.clone(), true)
    );
    assert_eq!((at("/latest").source, at("/latest").readonly), (view, true));
    assert!(!at("/data").readonly);
    // The image is in use while the pod's view is mounted.
    assert!(bosun_runtime::PodRuntime::images_in_use(&*h.rt).contains(&image_id));
    // Never idmapped (in a pod with its own user namespace): an overlay cannot be.
    let sec = h.rt.container_security("u1_a_0").unwrap();
    assert!(sec
        .plain_mounts
        .contains(&std::path::PathBuf::from("/tools")));
    let pulled: Vec<_> = h
        .events()
        .into_iter()
        .filter(|(r, _, m)| r == "Pulled" && m.contains("tools"))
        .collect();
    // The image puller's events of image volumes name the pod, not a container.
    assert!(
        !pulled.is_empty() && pulled.iter().all(|(_, c, _)| c.is_none()),
        "{pulled:?}"
    );
}

#[tokio::test]
async fn a_failed_image_volume_pull_holds_the_container_back() {
    let h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  volumes:\n  - {name: tools, image: {reference: \"tools:1\", pullPolicy: Never}}\n  containers:\n  - name: a\n    image: app:1\n    volumeMounts: [{name: tools, mountPath: /tools}]\n  - {name: b, image: app:1}\n");
    h.images.fail(
        "tools:1",
        Some(EnsureError::NeverPull {
            image: "tools:1".into(),
        }),
    );
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    let st = status(&w);
    let wa = waiting(&st, "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("ErrImageNeverPull"));
    assert_eq!(
        wa.message.as_deref(),
        Some("container image \"tools:1\" is not present with pull policy of Never")
    );
    // The other container runs; nothing of `a` was made, its own image not even asked for.
    assert_eq!(starts(&h.rt.take_calls()), ["u1_b_0"]);
    let ensured = h.images.take_ensured();
    assert_eq!(ensured.iter().filter(|(i, _)| i == "app:1").count(), 1);
    assert!(h.rt.image_volumes("u1").is_empty());
    // A pull error backs off as the container's own image does.
    h.images.fail(
        "tools:1",
        Some(EnsureError::Pull {
            image: "tools:1".into(),
            message: "manifest unknown".into(),
        }),
    );
    w.sync(Intent::Run).await;
    assert_eq!(
        waiting(&status(&w), "a").unwrap().reason.as_deref(),
        Some("ErrImagePull")
    );
    w.sync(Intent::Run).await;
    let wa = waiting(&status(&w), "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("ImagePullBackOff"));
    assert!(
        wa.message
            .as_deref()
            .unwrap()
            .starts_with("Back-off pulling image \"tools:1\""),
        "{wa:?}"
    );
    assert!(h.rt.image_volumes("u1").is_empty());
}

#[tokio::test]
async fn a_failed_pull_backs_off() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  containers:\n  - {name: a, image: nope:1}\n");
    h.images.fail(
        "nope:1",
        Some(EnsureError::Pull {
            image: "nope:1".into(),
            message: "manifest unknown".into(),
        }),
    );
    let mut w = h.worker(&p);
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, t0, 1, 3), "{next:?}");
    let message = "failed to pull image \"nope:1\": manifest unknown";
    let wa = waiting(&status(&w), "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("ErrImagePull"));
    assert_eq!(wa.message.as_deref(), Some(message));
    let ev = h.events();
    assert_eq!(
        ev.last().unwrap(),
        &(
            "Failed".to_string(),
            Some("a".to_string()),
            message.to_string()
        )
    );
    // Within the back-off: no pull, ImagePullBackOff with the last error.
    w.sync(Intent::Run).await;
    let wa = waiting(&status(&w), "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(
        wa.message.as_deref(),
        Some(format!("Back-off pulling image \"nope:1\": ErrImagePull: {message}").as_str())
    );
    assert_eq!(
        h.events(),
        [(
            "BackOff".to_string(),
            Some("a".to_string()),
            "Back-off pulling image \"nope:1\"".to_string()
        )]
    );
    assert!(starts(&h.rt.take_calls()).is_empty());
}

#[tokio::test]
async fn a_config_error_is_reported_and_retried() {
    let mut h = Harness::new();
    // A configMap env in standalone mode cannot be given.
    let p = pod("spec:\n  hostNetwork: true\n  containers:\n  - name: a\n    image: busybox:1\n    env:\n    - {name: X, valueFrom: {configMapKeyRef: {name: cm, key: k}}}\n");
    let mut w = h.worker(&p);
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, t0, 9, 11), "{next:?}");
    let wa = waiting(&status(&w), "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("CreateContainerConfigError"));
    let message = wa.message.unwrap();
    assert!(
        message.contains("not supported in standalone mode"),
        "{message}"
    );
    let ev = h.events();
    assert_eq!(
        ev.last().unwrap(),
        &(
            "Failed".to_string(),
            Some("a".to_string()),
            format!("Error: {message}")
        )
    );
    assert!(starts(&h.rt.take_calls()).is_empty());
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_within_its_grace_period_and_removed() {
    let mut h = Harness::new();
    let p = pod("spec:\n  initContainers:\n  - {name: side, image: x:1, restartPolicy: Always}\n  containers:\n  - {name: a, image: x:1}\n  - {name: b, image: x:1}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    w.sync(Intent::Run).await;
    assert_eq!(
        starts(&h.rt.take_calls()),
        ["u1_side_0", "u1_a_0", "u1_b_0"]
    );
    h.events();
    let next = w.sync(Intent::Terminate { grace: Some(5) }).await;
    assert_eq!(next, Next::Done);
    let calls = h.rt.take_calls();
    let stops: Vec<(&str, Duration)> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Stop {
                id,
                signal: 15,
                grace,
            } => Some((id.as_str(), *grace)),
            _ => None,
        })
        .collect();
    assert_eq!(stops.len(), 3, "{calls:?}");
    // The sidecar after the regular containers, each within the 5 s.
    assert_eq!(stops[2].0, "u1_side_0");
    assert!(stops
        .iter()
        .all(|(_, g)| *g <= Duration::from_secs(5) && *g >= Duration::from_secs(4)));
    assert!(calls.contains(&Call::RemoveSandbox("u1".into())));
    assert!(!h.rt.has_sandbox("u1"));
    assert!(h.rt.ids().is_empty(), "every attempt removed");
    assert!(!h.state_dir("u1").exists());
    let ev = h.events();
    assert_eq!(ev.first().unwrap().2, "Stopping pod with grace period 5s");
    assert_eq!(reasons(&ev), ["Killing", "Removed"]);
    assert!(h.rt.state("u1_a_0").is_none());
}

#[tokio::test]
async fn a_pod_the_api_ended_is_released_and_keeps_its_logs() {
    let h = Harness::new();
    let mut p = pod("spec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n  - {name: a, image: x:1}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    h.rt.exit("u1_a_0", 0, SystemTime::now());
    p.status = Some(PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    w.pod = Arc::new(p);
    h.rt.take_calls();
    let logs = h.ctx.cfg.pod_logs_dir.join("ns_web_u1");
    std::fs::create_dir_all(&logs).unwrap();
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    let calls = h.rt.take_calls();
    assert_eq!(
        calls,
        [
            Call::Remove("u1_a_0".into()),
            Call::RemoveSandbox("u1".into())
        ]
    );
    assert!(logs.exists(), "logs stay for users");
    // Once.
    w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert!(h.rt.state("u1_a_0").is_none());
}

#[tokio::test]
async fn a_failed_liveness_probe_stops_the_container_and_its_policy_restarts_it() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 9\n  containers:\n  - name: a\n    image: busybox:1\n    livenessProbe: {exec: {command: ['false']}}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    h.rt.take_calls();
    h.events();
    // The prober found the container unhealthy (and sent its Unhealthy event).
    let failed = crate::pods::probing::ProbeState {
        started: true,
        ready: false,
        failed: Some(crate::pods::probing::ProbeKind::Liveness),
    };
    w.probes.set_for_test("u1_a_0", failed);
    w.sync(Intent::Run).await;
    let kills: Vec<_> = w.stopping.drain().map(|(_, task)| task).collect();
    for task in kills {
        task.await.unwrap();
    }
    assert_eq!(
        h.rt.take_calls(),
        [Call::Stop {
            id: "u1_a_0".into(),
            signal: 15,
            grace: Duration::from_secs(9)
        }]
    );
    assert_eq!(
        h.events(),
        [(
            "Killing".to_string(),
            Some("a".to_string()),
            "Container a failed liveness probe, will be restarted".to_string()
        )]
    );
    // Stopped: restarted as its policy says (Always, the first restart at once).
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_1"]);
    let c = &status(&w).container_statuses.unwrap()[0];
    assert_eq!(c.restart_count, 1);
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .unwrap();
    assert_eq!(last.exit_code, 143);
}

#[test]
fn next_wakes_take_the_earliest() {
    let t0 = SystemTime::UNIX_EPOCH;
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(Next::At(t1).min(Next::At(t0)), Next::At(t0));
    assert_eq!(Next::Resync.min(Next::At(t1)), Next::At(t1));
    assert_eq!(Next::Resync.min(Next::Resync), Next::Resync);
    assert_eq!(Next::Done.min(Next::At(t0)), Next::Done);
}

fn condition(st: &PodStatus, ty: &str) -> String {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_pod_for_another_os_is_refused_and_nothing_of_it_is_made() {
    let mut h = Harness::new();
    let p = pod("spec:\n  os: {name: windows}\n  containers:\n  - {name: a, image: busybox:1}\n");
    let mut w = h.worker(&p);
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("PodOSNotSupported"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Failed to admit pod as the OS field doesn't match node OS")
    );
    assert_eq!(
        h.events(),
        [(
            "PodOSNotSupported".to_string(),
            None,
            "Failed to admit pod as the OS field doesn't match node OS".to_string()
        )]
    );
    // Once: no sandbox, no container, no second event.
    w.sync(Intent::Run).await;
    assert!(h.events().is_empty());
    assert_eq!(h.rt.take_calls(), []);
    assert!(!h.rt.has_sandbox("u1"));
    let sent = h.statuses();
    assert_eq!(sent.len(), 1, "{sent:?}");
}

#[tokio::test]
async fn an_updated_active_deadline_kills_the_pod_and_fails_it() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 4\n  containers:\n  - {name: a, image: busybox:1}\n");
    let mut w = h.worker(&p);
    w.start_time = SystemTime::now() - Duration::from_secs(60);
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    assert_eq!(status(&w).phase.as_deref(), Some("Running"));
    h.rt.take_calls();
    h.events();
    // The deadline is set by an update, and has passed already.
    let mut p2 = p.clone();
    p2.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
    w.pod = Arc::new(p2);
    w.sync(Intent::Run).await;
    let calls = h.rt.take_calls();
    // Stopped within the pod's grace period.
    assert!(
        calls.iter().any(|c| matches!(c, Call::Stop { id, signal: 15, grace }
            if id == "u1_a_0" && *grace > Duration::from_secs(3) && *grace <= Duration::from_secs(4))),
        "{calls:?}"
    );
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    let c = &st.container_statuses.clone().unwrap()[0];
    let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(t.exit_code, 143);
    assert_eq!(condition(&st, "Ready"), "False");
    let ev = h.events();
    assert_eq!(ev[0].0, "DeadlineExceeded");
    assert_eq!(
        ev[0].2,
        "Pod was active on the node longer than the specified deadline"
    );
    // Released once (its logs kept); nothing restarts.
    assert!(!h.rt.has_sandbox("u1"));
    w.sync(Intent::Run).await;
    assert!(starts(&h.rt.take_calls()).is_empty());
    assert!(h.events().is_empty());
}

#[tokio::test]
async fn a_deleted_pod_posts_its_terminal_status_before_its_deletion() {
    let mut h = Harness::new();
    let mut p = pod("spec:\n  hostNetwork: true\n  containers:\n  - name: a\n    image: busybox:1\n    readinessProbe: {exec: {command: [cat, /tmp/ready]}}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    let ready = crate::pods::probing::ProbeState {
        started: true,
        ready: true,
        failed: None,
    };
    w.probes.set_for_test("u1_a_0", ready);
    w.sync(Intent::Run).await;
    assert_eq!(condition(&status(&w), "Ready"), "True");
    h.statuses();
    // Deleted; its readiness probe fails once the stop signal is sent.
    p.metadata.deletion_timestamp = Some(crate::pods::status::time(SystemTime::now()));
    w.pod = Arc::new(p);
    let unready = crate::pods::probing::ProbeState {
        ready: false,
        ..ready
    };
    w.probes.set_for_test("u1_a_0", unready);
    w.wake.notify_one();
    assert_eq!(
        w.sync(Intent::Terminate { grace: Some(30) }).await,
        Next::Done
    );
    let sent = h.statuses();
    // While stopping: not ready, still running.
    let stopping = sent[0].status.as_ref().unwrap();
    assert_eq!(condition(stopping, "Ready"), "False");
    assert_eq!(condition(stopping, "ContainersReady"), "False");
    assert!(!sent[0].delete);
    // Last: the deletion, with the terminated state and the final phase.
    let last = sent.last().unwrap();
    assert!(last.delete, "{sent:?}");
    let st = last
        .status
        .as_ref()
        .expect("the last status goes with the deletion");
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    let t = st.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(t.exit_code, 143);
}

#[tokio::test]
async fn a_start_the_runtime_refuses_is_reported_and_tried_again() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  containers:\n  - {name: a, image: busybox:1}\n");
    h.rt.fail_starts("a", Some("file name too long"));
    let mut w = h.worker(&p);
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, t0, 9, 11), "{next:?}");
    let wa = waiting(&status(&w), "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("CreateContainerError"));
    let message = wa.message.unwrap();
    assert!(message.contains("file name too long"), "{message}");
    assert_eq!(status(&w).phase.as_deref(), Some("Pending"));
    let ev = h.events();
    assert_eq!(
        ev.last().unwrap(),
        &(
            "Failed".to_string(),
            Some("a".to_string()),
            format!("Error: {message}")
        )
    );
    // The next try works.
    h.rt.fail_starts("a", None);
    h.rt.take_calls();
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0"]);
    assert!(waiting(&status(&w), "a").is_none());
}

#[tokio::test]
async fn a_failed_pull_is_tried_again_when_its_back_off_since_the_last_failure_ends() {
    let h = Harness::new();
    let p = pod(
        "spec:\n  hostNetwork: true\n  containers:\n  - {name: a, image: reg.example:5000/app:1}\n",
    );
    let unreachable = EnsureError::Pull {
        image: "reg.example:5000/app:1".into(),
        message: "connection refused".into(),
    };
    h.images.fail("reg.example:5000/app:1", Some(unreachable));
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    let wa = waiting(&status(&w), "a").unwrap();
    assert_eq!(wa.reason.as_deref(), Some("ImagePullBackOff"));
    // Woken when the 10 s from the failure end.
    assert!(within(next, t0, 7, 10), "{next:?}");
    // 11 s after the last failure the registry answers: pulled and started.
    let key = super::plan::image_key("a", "reg.example:5000/app:1");
    let earlier = SystemTime::now() - Duration::from_secs(11);
    w.backoff = crate::pods::backoff::Backoff::default();
    w.backoff.next(&key, earlier, earlier);
    h.images.fail("reg.example:5000/app:1", None);
    h.rt.take_calls();
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0"]);
    assert!(waiting(&status(&w), "a").is_none());
}

#[tokio::test]
async fn a_stopping_pod_keeps_its_readiness_probes_and_drops_its_liveness_probes() {
    let mut h = Harness::new();
    let p = pod("spec:\n  hostNetwork: true\n  containers:\n  - name: a\n    image: busybox:1\n    livenessProbe: {exec: {command: [live]}, periodSeconds: 1, failureThreshold: 1}\n    readinessProbe: {exec: {command: [ready]}, periodSeconds: 1, failureThreshold: 1}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    // Probe tasks follow the running container; both probes pass.
    let c = p.spec.as_ref().unwrap().containers[0].clone();
    let mut waits = 0;
    while !w.probes.state("u1_a_0", &c).ready {
        waits += 1;
        assert!(waits < 100, "the readiness probe never passed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.events();
    // The pod is being stopped; its stop signal handler removes both files.
    w.probes.terminating();
    h.rt.exec_exits("live", 1);
    h.rt.exec_exits("ready", 1);
    let mut waits = 0;
    while w.probes.state("u1_a_0", &c).ready {
        waits += 1;
        assert!(waits < 100, "no readiness result while the pod stops");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A liveness probe would have run and failed by now: it no longer does anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.probes.state("u1_a_0", &c).failed, None);
    let ev = h.events();
    let unhealthy: Vec<&str> = ev
        .iter()
        .filter(|e| e.0 == "Unhealthy")
        .map(|e| e.2.as_str())
        .collect();
    assert!(!unhealthy.is_empty(), "{ev:?}");
    assert!(
        unhealthy
            .iter()
            .all(|m| m.starts_with("Readiness probe failed")),
        "{unhealthy:?}"
    );
}

#[tokio::test]
async fn admission_rejects_a_pod_before_anything_of_it_is_made() {
    let mut h = Harness::new();
    let p = pod("spec:\n  securityContext:\n    sysctls: [{name: net.core.somaxconn, value: '1024'}]\n  containers:\n  - {name: a, image: busybox:1}\n");
    let mut w = h.worker(&p);
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    // No sandbox, no container: only the sandbox removal of the release, which is idempotent.
    let calls = h.rt.take_calls();
    assert!(
        calls.iter().all(|c| matches!(c, Call::RemoveSandbox(_))),
        "{calls:?}"
    );
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("SysctlForbidden"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: forbidden sysctl: \"net.core.somaxconn\" not allowlisted")
    );
    assert!(st.container_statuses.is_none() && st.conditions.is_none());
    let events = h.events();
    assert_eq!(
        events,
        [(
            "SysctlForbidden".to_string(),
            None,
            "forbidden sysctl: \"net.core.somaxconn\" not allowlisted".to_string()
        )]
    );
    assert!(h.state_dir("u1").join("status.json").exists());
    // Rejected once: later syncs do nothing, send nothing.
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    assert!(h.rt.take_calls().is_empty());
    assert!(h.events().is_empty());
    // Deleted: removed like any pod.
    assert_eq!(w.sync(Intent::Terminate { grace: None }).await, Next::Done);
    assert!(!h.state_dir("u1").exists());
}

#[tokio::test]
async fn sysctls_user_namespace_and_profiles_reach_the_runtime() {
    let h = Harness::new();
    let p = pod("spec:\n  hostUsers: false\n  securityContext:\n    seccompProfile: {type: RuntimeDefault}\n    sysctls: [{name: net/ipv4/ip_local_port_range, value: '1024 2048'}]\n  volumes:\n  - {name: host, hostPath: {path: /tmp}}\n  - {name: data, emptyDir: {}}\n  containers:\n  - name: a\n    image: busybox:1\n    volumeMounts: [{name: host, mountPath: /h}, {name: data, mountPath: /d}]\n  - name: b\n    image: busybox:1\n    securityContext: {seccompProfile: {type: Unconfined}}\n");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    let range = h.ctx.userns.as_ref().unwrap().get("u1").expect("a range");
    assert_eq!(
        h.rt.pod_security("u1"),
        Some(bosun_runtime::PodSecurity {
            sysctls: vec![("net.ipv4.ip_local_port_range".into(), "1024 2048".into())],
            user_namespace: Some(range),
        })
    );
    let a = h.rt.container_security("u1_a_0").expect("a");
    assert_eq!(
        a.seccomp,
        bosun_runtime::seccomp::SeccompProfile::RuntimeDefault
    );
    // The hostPath is bound as it is; everything else idmapped.
    assert_eq!(a.plain_mounts, [std::path::PathBuf::from("/h")]);
    assert!(a.idmap_mounts);
    let b = h.rt.container_security("u1_b_0").expect("b");
    assert_eq!(
        b.seccomp,
        bosun_runtime::seccomp::SeccompProfile::Unconfined
    );
    // The range is the pod's until its sandbox is gone.
    assert_eq!(
        w.sync(Intent::Terminate { grace: Some(0) }).await,
        Next::Done
    );
    assert!(h.ctx.userns.as_ref().unwrap().get("u1").is_none());
}

#[tokio::test]
async fn a_profile_the_runtime_refuses_is_a_create_container_error_until_fixed() {
    let mut h = Harness::new();
    let p = pod("spec:\n  containers:\n  - name: a\n    image: busybox:1\n    securityContext: {seccompProfile: {type: Localhost, localhostProfile: p.json}}\n");
    let file = h.ctx.cfg.root_dir.join("seccomp/p.json");
    h.rt.fail_start("a", Some(&file.display().to_string()));
    let mut w = h.worker(&p);
    let t0 = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, t0, 9, 11), "{next:?}");
    let w_state = waiting(&status(&w), "a").expect("waiting");
    assert_eq!(w_state.reason.as_deref(), Some("CreateContainerError"));
    let message = w_state.message.unwrap_or_default();
    assert!(message.contains(&file.display().to_string()), "{message}");
    let events = h.events();
    let failed = events
        .iter()
        .find(|e| e.0 == "Failed")
        .expect("a Failed event");
    assert_eq!(failed.1.as_deref(), Some("a"));
    assert!(failed.2.starts_with("Error: ") && failed.2.contains(&file.display().to_string()));
    // The Localhost field without a name: the kubelet's CreateContainerConfigError.
    let unnamed = pod("spec:\n  containers:\n  - name: c\n    image: busybox:1\n    securityContext: {seccompProfile: {type: Localhost}}\n");
    let mut w2 = h.worker(&unnamed);
    w2.sync(Intent::Run).await;
    let w_state = waiting(&status(&w2), "c").expect("waiting");
    assert_eq!(
        w_state.reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert_eq!(
        w_state.message.as_deref(),
        Some(crate::security::seccomp::LOCALHOST_UNSET)
    );
    // Fixed: the next try starts it.
    h.rt.fail_start("a", None);
    h.rt.take_calls();
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0"]);
    assert!(waiting(&status(&w), "a").is_none());
}

#[tokio::test]
async fn an_evicted_pod_is_stopped_with_the_eviction_grace_and_ends_failed_keeping_its_logs() {
    let mut h = Harness::new();
    let p = two_containers();
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0", "u1_b_0"]);
    h.events();
    let failure = Arc::new(crate::pods::worker::plan::PodFailure::evicted(
        "The node was low on resource: memory. ",
        Some(1),
        true,
    ));
    let next = w.sync(Intent::Fail(failure.clone())).await;
    assert_eq!(
        next,
        Next::Resync,
        "the worker stays (the API keeps the pod)"
    );
    let calls = h.rt.take_calls();
    let stops: Vec<Duration> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Stop { grace, .. } => Some(*grace),
            _ => None,
        })
        .collect();
    assert_eq!(stops.len(), 2, "{calls:?}");
    assert!(
        stops.iter().all(|g| *g <= Duration::from_secs(2)),
        "{stops:?}"
    );
    assert!(calls.contains(&Call::RemoveSandbox("u1".into())));
    let st = status(&w);
    assert_eq!(
        (
            st.phase.as_deref(),
            st.reason.as_deref(),
            st.message.as_deref()
        ),
        (
            Some("Failed"),
            Some("Evicted"),
            Some("The node was low on resource: memory. ")
        )
    );
    assert!(st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
    // The containers' last states are in the status; the status file says the same.
    assert_eq!(st.container_statuses.as_ref().map(Vec::len), Some(2));
    let file = std::fs::read(h.state_dir("u1").join(crate::pods::status::STATUS_FILE)).unwrap();
    assert!(String::from_utf8_lossy(&file).contains("\"reason\": \"Evicted\""));
    let ev = h.events();
    assert_eq!(ev.first().unwrap().0, "Evicted");
    // Nothing starts again.
    assert_eq!(w.sync(Intent::Fail(failure)).await, Next::Resync);
    assert!(starts(&h.rt.take_calls()).is_empty());
}

#[tokio::test]
async fn a_pod_ended_by_node_shutdown_runs_its_prestop_and_ends_terminated() {
    let mut h = Harness::new();
    let p = pod(
        "spec:\n  terminationGracePeriodSeconds: 60\n  containers:\n  - name: a\n    image: busybox:1\n    lifecycle:\n      preStop:\n        exec: {command: [sh, -c, echo bye > /mnt/marker]}\n",
    );
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0"]);
    h.events();
    let failure = Arc::new(crate::pods::worker::plan::PodFailure::shutdown(20));
    assert_eq!(w.sync(Intent::Fail(failure)).await, Next::Resync);
    let calls = h.rt.take_calls();
    // The preStop hook ran before the stop signal, within the group's 20 s (not the pod's 60).
    let exec = calls
        .iter()
        .position(|c| matches!(c, Call::Exec(id, argv) if id == "u1_a_0" && argv.last().is_some_and(|a| a.contains("marker"))));
    let stop = calls.iter().position(|c| matches!(c, Call::Stop { .. }));
    assert!(
        matches!((exec, stop), (Some(e), Some(s)) if e < s),
        "{calls:?}"
    );
    let grace = calls.iter().find_map(|c| match c {
        Call::Stop { grace, .. } => Some(*grace),
        _ => None,
    });
    assert!(
        grace.is_some_and(|g| g <= Duration::from_secs(20)),
        "{grace:?}"
    );
    assert!(calls.contains(&Call::RemoveSandbox("u1".into())));
    let st = status(&w);
    assert_eq!(
        (
            st.phase.as_deref(),
            st.reason.as_deref(),
            st.message.as_deref()
        ),
        (
            Some("Failed"),
            Some("Terminated"),
            Some("Pod was terminated in response to imminent node shutdown.")
        )
    );
    let disruption = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .cloned()
        .expect("DisruptionTarget");
    assert_eq!(
        (
            disruption.status.as_str(),
            disruption.reason.as_deref(),
            disruption.message.as_deref()
        ),
        (
            "True",
            Some("TerminationByKubelet"),
            Some("Pod was terminated in response to imminent node shutdown.")
        )
    );
    let file = std::fs::read(h.state_dir("u1").join(crate::pods::status::STATUS_FILE)).unwrap();
    assert!(String::from_utf8_lossy(&file).contains("\"reason\": \"Terminated\""));
    // No Event about the pod with the reason (the kubelet raises none).
    assert!(!reasons(&h.events()).contains(&"Terminated"));
}

#[tokio::test]
async fn a_rejected_pod_never_starts_and_ends_failed() {
    let mut h = Harness::new();
    let p = two_containers();
    let mut w = h.worker(&p);
    let failure = Arc::new(crate::pods::worker::plan::PodFailure::rejected(
        "OutOfcpu",
        "Node didn't have enough resource: cpu, requested: 8000, used: 0, capacity: 4000",
    ));
    w.sync(Intent::Fail(failure.clone())).await;
    w.sync(Intent::Fail(failure)).await;
    let calls = h.rt.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::CreateSandbox(_))),
        "{calls:?}"
    );
    assert!(starts(&calls).is_empty());
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Node didn't have enough resource: cpu, requested: 8000, used: 0, capacity: 4000")
    );
    assert!(st.container_statuses.is_none());
    let ev = h.events();
    assert_eq!(
        ev,
        [(
            "OutOfcpu".to_string(),
            None,
            "Node didn't have enough resource: cpu, requested: 8000, used: 0, capacity: 4000"
                .to_string()
        )]
    );
}

/// A pod (generation `generation`) whose container `a` asks `resources`, with `policy` as its
/// resizePolicy.
fn sized(generation: i64, resources: &str, policy: &str) -> Pod {
    let mut p = pod(&format!(
        "spec:\n  hostNetwork: true\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 3\n  containers:\n  - name: a\n    image: busybox:1\n    resources: {resources}\n    resizePolicy: {policy}\n"
    ));
    p.metadata.generation = Some(generation);
    p
}

fn resources_of(p: &Pod) -> bosun_runtime::Resources {
    crate::translate::container_resources(p, &p.spec.as_ref().unwrap().containers[0])
}

/// The status of condition `ty`: (reason, message), `None` when absent.
fn resize_condition(st: &PodStatus, ty: &str) -> Option<(Option<String>, Option<String>)> {
    let c = st.conditions.iter().flatten().find(|c| c.type_ == ty)?;
    assert_eq!(c.status, "True");
    Some((c.reason.clone(), c.message.clone()))
}

fn quantity(
    list: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    k: &str,
) -> Option<String> {
    list.as_ref()?.get(k).map(|q| q.0.clone())
}

#[tokio::test]
async fn a_resize_updates_the_pod_and_container_cgroups_in_place() {
    let mut h = Harness::new();
    let small = sized(
        1,
        "{requests: {cpu: 100m}, limits: {cpu: 200m, memory: 64Mi}}",
        "[]",
    );
    let mut w = h.worker(&small);
    w.sync(Intent::Run).await;
    h.rt.take_calls();
    h.events();
    let c = &status(&w).container_statuses.unwrap()[0];
    assert_eq!(
        quantity(&c.allocated_resources, "cpu").as_deref(),
        Some("100m")
    );
    assert_eq!(
        c.resources.as_ref().map(|r| quantity(&r.limits, "memory")),
        Some(Some("64Mi".into()))
    );
    // The resize subresource: more CPU, more memory.
    let big = sized(
        2,
        "{requests: {cpu: 300m}, limits: {cpu: 400m, memory: 128Mi}}",
        "[]",
    );
    w.pod = Arc::new(big.clone());
    let next = w.sync(Intent::Run).await;
    let calls = h.rt.take_calls();
    let pod_res = crate::translate::pod_resources(&big);
    // The CPU limit grows: the pod cgroup first, then the container's; nothing restarted.
    assert_eq!(
        calls,
        [
            Call::UpdatePod("u1".into(), pod_res),
            Call::UpdateContainer("u1_a_0".into(), resources_of(&big)),
        ]
    );
    let ev = h.events();
    assert_eq!(reasons(&ev), ["ResizeStarted"]);
    assert!(
        ev[0]
            .2
            .starts_with("Pod resize started: {\"containers\":[{\"name\":\"a\""),
        "{}",
        ev[0].2
    );
    let st = status(&w);
    assert_eq!(
        resize_condition(&st, "PodResizeInProgress"),
        Some((None, None))
    );
    let c = &st.container_statuses.clone().unwrap()[0];
    assert_eq!(
        quantity(&c.allocated_resources, "cpu").as_deref(),
        Some("300m")
    );
    // Looked at again at once: done.
    assert!(matches!(next, Next::At(t) if t <= SystemTime::now()));
    w.pod = Arc::new(big.clone());
    w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert_eq!(reasons(&h.events()), ["ResizeCompleted"]);
    let st = status(&w);
    assert_eq!(resize_condition(&st, "PodResizeInProgress"), None);
    let c = &st.container_statuses.clone().unwrap()[0];
    let r = c.resources.clone().unwrap();
    assert_eq!(quantity(&r.limits, "cpu").as_deref(), Some("400m"));
    assert_eq!(quantity(&r.limits, "memory").as_deref(), Some("128Mi"));
    assert_eq!(quantity(&r.requests, "cpu").as_deref(), Some("300m"));
    assert_eq!(c.restart_count, 0);
    // Kept for an agent restart: a new worker finds the allocation and has nothing to do.
    let mut w2 = h.worker(&big);
    w2.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert!(h.events().is_empty());
}

#[tokio::test]
async fn a_memory_limit_below_the_usage_is_not_applied_and_stays_in_progress() {
    let mut h = Harness::new();
    let p = sized(1, "{limits: {cpu: 200m, memory: 64Mi}}", "[]");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    h.rt.take_calls();
    h.events();
    h.rt.use_memory("a", 40 << 20);
    let down = sized(2, "{limits: {cpu: 200m, memory: 32Mi}}", "[]");
    w.pod = Arc::new(down.clone());
    let next = w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty(), "nothing written");
    assert_eq!(reasons(&h.events()), ["ResizeStarted", "ResizeError"]);
    let st = status(&w);
    let (reason, message) = resize_condition(&st, "PodResizeInProgress").unwrap();
    assert_eq!(reason.as_deref(), Some("Error"));
    assert!(
        message.as_deref().unwrap().starts_with("cannot decrease memory limits: [attempting to set pod memory limit (33554432) below current usage (41943040), attempting to set container \"a\" memory limit (33554432)"),
        "{message:?}"
    );
    assert!(
        within(next, SystemTime::now(), 4, 6),
        "tried again: {next:?}"
    );
    // Still too much: no new event, no write.
    w.pod = Arc::new(down.clone());
    w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert!(h.events().is_empty());
    // The usage went down: applied (containers first when nothing grows), then done.
    h.rt.use_memory("a", 8 << 20);
    w.pod = Arc::new(down.clone());
    w.sync(Intent::Run).await;
    assert_eq!(
        h.rt.take_calls(),
        [
            Call::UpdateContainer("u1_a_0".into(), resources_of(&down)),
            Call::UpdatePod("u1".into(), crate::translate::pod_resources(&down)),
        ]
    );
    w.pod = Arc::new(down);
    w.sync(Intent::Run).await;
    assert_eq!(reasons(&h.events()), ["ResizeCompleted"]);
    assert_eq!(resize_condition(&status(&w), "PodResizeInProgress"), None);
}

#[tokio::test]
async fn a_resize_that_does_not_fit_is_deferred_until_room_is_made() {
    let mut h = Harness::new();
    // Another pod holds nearly all the node's CPU.
    let mut hog = pod("spec:\n  containers:\n  - {name: h, image: busybox:1, resources: {requests: {cpu: '1099511627'}}}\n");
    hog.metadata.uid = Some("u2".into());
    hog.metadata.name = Some("hog".into());
    h.ctx.allocated.set("u2", Arc::new(hog));
    let p = sized(1, "{requests: {cpu: 100m}}", "[]");
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    h.rt.take_calls();
    h.events();
    let more = sized(2, "{requests: {cpu: 2}}", "[]");
    w.pod = Arc::new(more.clone());
    w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    let ev = h.events();
    assert_eq!(reasons(&ev), ["ResizeDeferred"]);
    assert!(ev[0].2.starts_with("Pod resize Deferred: "), "{}", ev[0].2);
    let st = status(&w);
    let (reason, message) = resize_condition(&st, "PodResizePending").unwrap();
    assert_eq!(reason.as_deref(), Some("Deferred"));
    assert!(
        message
            .as_deref()
            .unwrap()
            .starts_with("Node didn't have enough resource: cpu"),
        "{message:?}"
    );
    let c = &st.container_statuses.clone().unwrap()[0];
    assert_eq!(
        quantity(&c.allocated_resources, "cpu").as_deref(),
        Some("100m")
    );
    // Pending across an agent restart: the pod runs as allocated, nothing is written.
    let mut w2 = h.worker(&more);
    w2.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert!(resize_condition(&status(&w2), "PodResizePending").is_some());
    h.events();
    // Room is made: allocated and applied.
    h.ctx.allocated.remove("u2");
    w.pod = Arc::new(more.clone());
    w.sync(Intent::Run).await;
    assert_eq!(reasons(&h.events()), ["ResizeStarted"]);
    let calls = h.rt.take_calls();
    assert!(
        calls.contains(&Call::UpdateContainer("u1_a_0".into(), resources_of(&more))),
        "{calls:?}"
    );
    assert_eq!(resize_condition(&status(&w), "PodResizePending"), None);
}

#[tokio::test]
async fn a_resize_policy_of_restart_container_restarts_it_with_the_new_resources() {
    let mut h = Harness::new();
    let policy = "[{resourceName: cpu, restartPolicy: RestartContainer}]";
    let p = sized(1, "{limits: {cpu: 200m}}", policy);
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    h.rt.take_calls();
    h.events();
    let more = sized(2, "{limits: {cpu: 500m}}", policy);
    w.pod = Arc::new(more.clone());
    w.sync(Intent::Run).await;
    let kills: Vec<_> = w.stopping.drain().map(|(_, task)| task).collect();
    for task in kills {
        task.await.unwrap();
    }
    assert_eq!(
        h.rt.take_calls(),
        [
            Call::UpdatePod("u1".into(), crate::translate::pod_resources(&more)),
            Call::Stop {
                id: "u1_a_0".into(),
                signal: 15,
                grace: Duration::from_secs(3)
            }
        ]
    );
    let ev = h.events();
    assert_eq!(reasons(&ev), ["ResizeStarted", "Killing"]);
    assert_eq!(ev[1].2, "Container a resize requires restart");
    // Stopped: started again although the pod's policy is Never, with the new resources.
    w.pod = Arc::new(more.clone());
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_1"]);
    let st = status(&w);
    let c = &st.container_statuses.clone().unwrap()[0];
    assert_eq!(c.restart_count, 1);
    assert_eq!(
        quantity(&c.resources.clone().unwrap().limits, "cpu").as_deref(),
        Some("500m")
    );
    w.pod = Arc::new(more);
    w.sync(Intent::Run).await;
    assert!(reasons(&h.events()).contains(&"ResizeCompleted"));
    assert_eq!(resize_condition(&status(&w), "PodResizeInProgress"), None);
}

#[tokio::test]
async fn a_pod_that_comes_while_the_node_shuts_down_is_rejected() {
    let h = Harness::new();
    h.ctx.node_shutdown.set(true);
    let p = Arc::new(two_containers());
    let desired = crate::pods::source::DesiredPods::from([("u1".to_string(), p)]);
    let mut workers = std::collections::HashMap::new();
    let mut terminated = std::collections::HashSet::new();
    crate::pods::reconcile(&h.ctx, &mut workers, &mut terminated, &desired);
    let intent = workers.get("u1").map(|w| w.tx.borrow().1.clone());
    let Some(Intent::Fail(f)) = intent else {
        panic!("not refused: {intent:?}");
    };
    assert_eq!(
        (f.reason.as_str(), f.message.as_str(), f.rejected),
        (
            "NodeShutdown",
            "Pod was rejected: Pod was rejected as the node is shutting down.",
            true
        )
    );
    // Once the shutdown is cancelled, a new pod is admitted again.
    h.ctx.node_shutdown.set(false);
    let mut q = two_containers();
    q.metadata.uid = Some("u2".into());
    q.metadata.name = Some("web2".into());
    let q = Arc::new(q);
    let desired = crate::pods::source::DesiredPods::from([("u2".to_string(), q)]);
    crate::pods::reconcile(&h.ctx, &mut workers, &mut terminated, &desired);
    assert_eq!(
        workers.get("u2").map(|w| w.tx.borrow().1.clone()),
        Some(Intent::Run)
    );
    for w in workers.values() {
        w.done.abort();
    }
}

/// A pod (generation `generation`, restart policy Never) whose non-sidecar init container
/// `init` asks `init` before its container `a` (the upstream e2e spec's pod: requests are
/// limits).
fn init_sized(generation: i64, init: &str) -> Pod {
    let mut p = pod(&format!(
        "spec:\n  hostNetwork: true\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 3\n  initContainers:\n  - name: init\n    image: busybox:1\n    resources: {init}\n  containers:\n  - name: a\n    image: busybox:1\n    resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{cpu: 100m, memory: 64Mi}}}}\n"
    ));
    p.metadata.generation = Some(generation);
    p
}

fn init_resources_of(p: &Pod) -> bosun_runtime::Resources {
    crate::translate::container_resources(
        p,
        &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0],
    )
}

#[tokio::test]
async fn a_resize_updates_a_running_non_sidecar_init_container_in_place() {
    let mut h = Harness::new();
    let small = init_sized(
        1,
        "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}",
    );
    let mut w = h.worker(&small);
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_init_0"]);
    h.events();
    // Running: its status says what it was allocated and what its cgroup has.
    let st = status(&w);
    let c = &st.init_container_statuses.clone().unwrap()[0];
    assert_eq!(
        quantity(&c.allocated_resources, "cpu").as_deref(),
        Some("100m")
    );
    assert_eq!(
        quantity(&c.allocated_resources, "memory").as_deref(),
        Some("64Mi")
    );
    let r = c.resources.clone().expect("the init container's resources");
    assert_eq!(quantity(&r.requests, "cpu").as_deref(), Some("100m"));
    assert_eq!(quantity(&r.limits, "cpu").as_deref(), Some("100m"));
    assert_eq!(quantity(&r.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(quantity(&r.limits, "memory").as_deref(), Some("64Mi"));
    // The resize subresource: more CPU and memory for the init container.
    let big = init_sized(
        2,
        "{requests: {cpu: 200m, memory: 128Mi}, limits: {cpu: 200m, memory: 128Mi}}",
    );
    w.pod = Arc::new(big.clone());
    let next = w.sync(Intent::Run).await;
    // The CPU limit grows: the pod cgroup first (now the init container's, the larger), then
    // the init container's; nothing restarted, nothing else started.
    let pod_res = crate::translate::pod_resources(&big);
    assert_eq!(pod_res.memory_limit, Some(128 << 20));
    assert_eq!(
        h.rt.take_calls(),
        [
            Call::UpdatePod("u1".into(), pod_res),
            Call::UpdateContainer("u1_init_0".into(), init_resources_of(&big)),
        ]
    );
    let ev = h.events();
    assert_eq!(reasons(&ev), ["ResizeStarted"]);
    assert!(
        ev[0]
            .2
            .starts_with("Pod resize started: {\"initContainers\":[{\"name\":\"init\""),
        "{}",
        ev[0].2
    );
    let st = status(&w);
    assert_eq!(
        resize_condition(&st, "PodResizeInProgress"),
        Some((None, None))
    );
    let c = &st.init_container_statuses.clone().unwrap()[0];
    assert_eq!(
        quantity(&c.allocated_resources, "cpu").as_deref(),
        Some("200m")
    );
    assert!(matches!(next, Next::At(t) if t <= SystemTime::now()));
    // Looked at again: done, with the new values in the status and no restart.
    w.pod = Arc::new(big.clone());
    w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert_eq!(reasons(&h.events()), ["ResizeCompleted"]);
    let st = status(&w);
    assert_eq!(resize_condition(&st, "PodResizeInProgress"), None);
    let c = &st.init_container_statuses.clone().unwrap()[0];
    assert_eq!(c.restart_count, 0);
    assert!(c.state.as_ref().unwrap().running.is_some());
    assert_eq!(
        quantity(&c.allocated_resources, "memory").as_deref(),
        Some("128Mi")
    );
    let r = c.resources.clone().unwrap();
    assert_eq!(quantity(&r.requests, "cpu").as_deref(), Some("200m"));
    assert_eq!(quantity(&r.limits, "cpu").as_deref(), Some("200m"));
    assert_eq!(quantity(&r.requests, "memory").as_deref(), Some("128Mi"));
    assert_eq!(quantity(&r.limits, "memory").as_deref(), Some("128Mi"));
    // The regular container waits for the init container; it has its own allocation.
    let a = &st.container_statuses.clone().unwrap()[0];
    assert!(a.state.as_ref().unwrap().waiting.is_some());
    assert_eq!(
        quantity(&a.allocated_resources, "cpu").as_deref(),
        Some("100m")
    );
    // Back to the original values (the spec's revert): the memory limit above the usage, the
    // container first as nothing grows.
    h.rt.use_memory("init", 8 << 20);
    w.pod = Arc::new(init_sized(
        3,
        "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}",
    ));
    w.sync(Intent::Run).await;
    assert_eq!(
        h.rt.take_calls(),
        [
            Call::UpdateContainer("u1_init_0".into(), init_resources_of(&small)),
            Call::UpdatePod("u1".into(), crate::translate::pod_resources(&small)),
        ]
    );
    // Kept for an agent restart: a new worker finds the init container's allocation.
    let mut w2 = h.worker(&w.pod.as_ref().clone());
    w2.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    // It completes: the regular container starts; the init container's status keeps its
    // allocation.
    h.rt.exit("u1_init_0", 0, SystemTime::now());
    let p = w.pod.as_ref().clone();
    w.pod = Arc::new(p);
    w.sync(Intent::Run).await;
    assert_eq!(starts(&h.rt.take_calls()), ["u1_a_0"]);
    let st = status(&w);
    let c = &st.init_container_statuses.clone().unwrap()[0];
    assert!(c.state.as_ref().unwrap().terminated.is_some());
    assert_eq!(
        quantity(&c.allocated_resources, "cpu").as_deref(),
        Some("100m")
    );
    // Completed: it reports its allocation (the kubelet's status of a container not running).
    let init = &small
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[0];
    assert_eq!(c.resources, init.resources);
}

#[tokio::test]
async fn a_pod_waits_for_the_pod_network_and_a_host_network_pod_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("net.d");
    let net = Arc::new(crate::podnet::PodNetwork::new(crate::podnet::Settings {
        conf_dir: conf_dir.clone(),
        default_network: false,
        configured_cidr: "10.244.0.0/24".into(),
        cluster: true,
    }));
    let mut h = Harness::with_network(net.clone());
    let p = two_containers();
    let mut w = h.worker(&p);
    let from = SystemTime::now();
    let next = w.sync(Intent::Run).await;
    assert!(within(next, from, 0, 2), "looked at again soon: {next:?}");
    assert!(
        h.rt.take_calls().is_empty(),
        "no sandbox, no network, nothing"
    );
    let message = "network is not ready: container runtime network not ready: \
                   NetworkReady=false reason:NetworkPluginNotReady message:Network plugin \
                   returns error: cni plugin not initialized"
        .to_string();
    let events = h.events();
    assert_eq!(
        events,
        [("NetworkNotReady".to_string(), None, message.clone())]
    );
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting(&st, "a").and_then(|w| w.reason).as_deref(),
        Some("ContainerCreating")
    );
    // Still waiting: the Event is not repeated.
    w.sync(Intent::Run).await;
    assert!(h.rt.take_calls().is_empty());
    assert!(h.events().is_empty());
    // A hostNetwork pod runs meanwhile.
    let mut host =
        pod("spec:\n  hostNetwork: true\n  containers:\n  - {name: a, image: busybox:1}\n");
    host.metadata.name = Some("host".into());
    host.metadata.uid = Some("u2".into());
    let mut hw = h.worker(&host);
    assert_eq!(hw.sync(Intent::Run).await, Next::Resync);
    assert_eq!(starts(&h.rt.take_calls()), ["u2_a_0"]);
    h.events();
    // The admin writes a config: the held pod starts at its next sync.
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(
        conf_dir.join("10-net.conflist"),
        r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    net.check();
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    let calls = h.rt.take_calls();
    assert!(
        calls.contains(&Call::SetupNetwork("u1".into())),
        "{calls:?}"
    );
    assert_eq!(starts(&calls), ["u1_a_0", "u1_b_0"]);
    assert_eq!(status(&w).phase.as_deref(), Some("Running"));
}

fn device_pod(count: u32) -> Pod {
    pod(&format!(
        "spec:\n  containers:\n  - name: a\n    image: busybox:1\n    resources:\n      limits: {{example.com/dev: \"{count}\"}}\n  - {{name: b, image: busybox:1}}\n"
    ))
}

fn fake_devices(ids: &[&str]) -> Arc<super::fake::FakeDevices> {
    let d = Arc::new(super::fake::FakeDevices::default());
    d.state.lock().unwrap().devices.insert(
        "example.com/dev".into(),
        ids.iter().map(|s| s.to_string()).collect(),
    );
    d
}

#[tokio::test]
async fn a_pod_gets_its_plugin_devices_at_admission_and_gives_them_back_when_it_ends() {
    let devices = fake_devices(&["d1", "d2"]);
    let mut h = Harness::with_devices(Some(devices.clone()));
    let p = device_pod(2);
    let mut w = h.worker(&p);
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    assert_eq!(status(&w).phase.as_deref(), Some("Running"));
    // The container that asked gets what the plugin answered, after its PreStartContainer;
    // the other one nothing.
    let a = h.rt.container_spec("u1_a_0").expect("a started");
    assert!(
        a.env
            .contains(&("DEVICES".to_string(), "d1,d2".to_string())),
        "{:?}",
        a.env
    );
    let b = h.rt.container_spec("u1_b_0").expect("b started");
    assert!(!b.env.iter().any(|(k, _)| k == "DEVICES"));
    assert_eq!(
        devices.state.lock().unwrap().pre_starts,
        [("u1".to_string(), "a".to_string())]
    );
    // Deleted: the devices are free again.
    w.sync(Intent::Terminate { grace: Some(0) }).await;
    let st = devices.state.lock().unwrap();
    assert_eq!(st.released, ["u1"]);
    assert!(st.held.is_empty());
    drop(st);
    let _ = h.events();
}

#[tokio::test]
async fn a_pod_whose_devices_cannot_be_allocated_is_rejected_unexpectedly() {
    let devices = fake_devices(&["d1"]);
    devices.state.lock().unwrap().fail = Some("plugin down".into());
    let mut h = Harness::with_devices(Some(devices.clone()));
    let p = device_pod(1);
    let mut w = h.worker(&p);
    w.sync(Intent::Run).await;
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Allocate failed due to rpc error: code = Unknown desc = plugin down, which is unexpected")
    );
    assert!(!h.rt.has_sandbox("u1"));
    assert!(starts(&h.rt.take_calls()).is_empty());
    assert_eq!(reasons(&h.events()), ["UnexpectedAdmissionError"]);
    assert_eq!(devices.state.lock().unwrap().released, ["u1"]);
    // The refusal stands: the plugin is not asked again.
    devices.state.lock().unwrap().fail = None;
    w.sync(Intent::Run).await;
    assert!(devices.state.lock().unwrap().held.is_empty());
    assert_eq!(status(&w).phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn a_pod_beyond_the_devices_is_rejected_with_the_kubelets_message() {
    let devices = fake_devices(&["d1"]);
    let mut h = Harness::with_devices(Some(devices.clone()));
    let mut w = h.worker(&device_pod(2));
    w.sync(Intent::Run).await;
    let st = status(&w);
    assert_eq!(st.reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Allocate failed due to requested number of devices unavailable for example.com/dev. Requested: 2, Available: 1, which is unexpected")
    );
    let _ = h.events();
}

/// A DRA manager on fakes (one registered driver `drv`), its checkpoint in `root`.
fn fake_dra(
    root: &std::path::Path,
) -> (
    Arc<crate::dra::DraManager>,
    Arc<crate::dra::testing::FakeClaims>,
    crate::dra::testing::FakeDrivers,
) {
    let claims = Arc::new(crate::dra::testing::FakeClaims::default());
    let drivers = crate::dra::testing::FakeDrivers::default();
    drivers.0.lock().unwrap().registered.push("drv".into());
    let m = crate::dra::DraManager::new(root, claims.clone(), Arc::new(drivers.clone()));
    (Arc::new(m), claims, drivers)
}

#[tokio::test]
async fn a_pod_gets_the_cdi_devices_of_its_claims_and_they_are_unprepared_when_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (dra, claims, drivers) = fake_dra(tmp.path());
    claims.put(crate::dra::testing::claim(
        "gen",
        "cg",
        "drv",
        &["gpu"],
        &["u1"],
        Some("u1"),
    ));
    drivers.0.lock().unwrap().devices.insert(
        "gen".into(),
        vec![(vec!["gpu".into()], vec!["drv.example.com/gpu=0".into()])],
    );
    let mut h = Harness::build(None, Some(dra.clone()));
    let p = crate::dra::testing::pod(
        "u1",
        &[("t", None)],
        &[("t", "gen")],
        &[("a", &[("t", "gpu")]), ("b", &[])],
    );
    let mut w = h.worker(&p);
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    assert_eq!(status(&w).phase.as_deref(), Some("Running"));
    // Prepared once, before the sandbox; the container naming the claim gets its CDI device.
    assert_eq!(drivers.0.lock().unwrap().prepared.len(), 1);
    let a = h.rt.container_spec("u1_a_0").expect("a started");
    assert_eq!(a.cdi_devices, ["drv.example.com/gpu=0"]);
    let b = h.rt.container_spec("u1_b_0").expect("b started");
    assert!(b.cdi_devices.is_empty());
    // Deleted: unprepared once the containers are gone.
    w.sync(Intent::Terminate { grace: Some(0) }).await;
    assert_eq!(
        drivers.0.lock().unwrap().unprepared,
        [("drv".to_string(), vec!["gen".to_string()])]
    );
    assert!(dra.pods().await.is_empty());
    let _ = h.events();
}

#[tokio::test]
async fn a_pod_whose_claims_cannot_be_prepared_waits_with_the_kubelets_event_and_backs_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (dra, claims, drivers) = fake_dra(tmp.path());
    let mut h = Harness::build(None, Some(dra.clone()));
    // The claim is allocated to a driver that is not registered.
    claims.put(crate::dra::testing::claim(
        "gen",
        "cg",
        "gpu.example.com",
        &["gpu"],
        &["u1"],
        Some("u1"),
    ));
    let p = crate::dra::testing::pod(
        "u1",
        &[("t", None)],
        &[("t", "gen")],
        &[("a", &[("t", "")])],
    );
    let mut w = h.worker(&p);
    let first = w.sync(Intent::Run).await;
    let msg = "Failed to prepare dynamic resources: prepare dynamic resources: DRA driver gpu.example.com is not registered";
    assert_eq!(
        h.events(),
        [(
            "FailedPrepareDynamicResources".to_string(),
            None,
            msg.to_string()
        )]
    );
    // No sandbox, no container; the container waits in ContainerCreating with the message.
    assert!(bosun_runtime::PodRuntime::sandbox(&*h.rt, "u1").is_none());
    assert!(h.rt.container_spec("u1_a_0").is_none());
    let st = status(&w);
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let waiting = st.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    assert_eq!(waiting.message.as_deref(), Some(msg));
    // Tried again later each time: 5 s, then 10 s.
    let after = |n: Next| match n {
        Next::At(t) => t.duration_since(SystemTime::now()).unwrap_or_default(),
        other => panic!("{other:?}"),
    };
    assert!(after(first) <= Duration::from_secs(5));
    let second = w.sync(Intent::Run).await;
    assert!(after(second) > Duration::from_secs(8), "{second:?}");
    let _ = h.events();
    // The driver registers: the pod starts.
    drivers
        .0
        .lock()
        .unwrap()
        .registered
        .push("gpu.example.com".into());
    assert_eq!(w.sync(Intent::Run).await, Next::Resync);
    assert_eq!(status(&w).phase.as_deref(), Some("Running"));
    assert_eq!(dra.pods().await, ["u1"]);
}
