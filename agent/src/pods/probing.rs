//! Probes of a pod's running containers: one tokio task per running container (no thread, no
//! process except for exec checks). The startup probe runs first and holds liveness and
//! readiness back. A liveness (or startup) failure is an `Unhealthy` event and a result the
//! worker reads: its plan stops the container and the restart policy applies. Readiness results
//! are read by the worker for `ready` and the pod's conditions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_probes::{Check, ExecFn, HttpGet, Spec, Timing};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

use super::Ctx;
use crate::reasons::{event, EventType};

/// The three probes of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// As events and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// What the probes of one container found so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// Readiness (true without a readiness probe once started).
    pub ready: bool,
    /// The probe that failed for good (startup or liveness): the container is to be stopped.
    pub failed: Option<ProbeKind>,
}

struct Entry {
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<ProbeState>>,
    /// The pod is being stopped: liveness and startup probes end, readiness goes on.
    terminating: Arc<AtomicBool>,
}

/// The probe tasks of one pod, by container id.
#[derive(Default)]
pub struct Probes {
    entries: HashMap<String, Entry>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for e in self.entries.values() {
            e.task.abort();
        }
    }
}

/// A running container to probe.
pub struct Target {
    /// The pod, for Events.
    pub pod: Arc<k8s_openapi::api::core::v1::Pod>,
    pub id: String,
    pub container: Container,
    pub pod_ip: String,
}

impl Probes {
    /// Starts tasks for newly running containers and stops those of containers no longer running.
    pub fn sync(&mut self, ctx: &Arc<Ctx>, wake: &Arc<Notify>, running: Vec<Target>) {
        let ids: Vec<String> = running.iter().map(|t| t.id.clone()).collect();
        self.entries.retain(|id, e| {
            let keep = ids.contains(id);
            if !keep {
                e.task.abort();
            }
            keep
        });
        for t in running {
            if self.entries.contains_key(&t.id) {
                continue;
            }
            let c = &t.container;
            let initial = ProbeState {
                started: c.startup_probe.is_none(),
                ready: c.startup_probe.is_none() && c.readiness_probe.is_none(),
                failed: None,
            };
            if c.startup_probe.is_none()
                && c.liveness_probe.is_none()
                && c.readiness_probe.is_none()
            {
                continue;
            }
            let id = t.id.clone();
            let state = Arc::new(Mutex::new(initial));
            let terminating = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(probe_container(
                ctx.clone(),
                wake.clone(),
                t,
                state.clone(),
                terminating.clone(),
            ));
            self.entries.insert(
                id,
                Entry {
                    task,
                    state,
                    terminating,
                },
            );
        }
    }

    /// The pod is being stopped: liveness and startup probes end (a failure now is no reason
    /// to restart anything, and raises no Event); readiness probes go on, so that the status
    /// says when a stopping container is no longer ready, as the kubelet's prober does.
    pub fn terminating(&self) {
        for e in self.entries.values() {
            e.terminating.store(true, Ordering::Relaxed);
        }
    }

    /// The probe state of a running container (not probed: the defaults).
    pub fn state(&self, id: &str, c: &Container) -> ProbeState {
        match self.entries.get(id) {
            Some(e) => *e.state.lock().unwrap_or_else(|p| p.into_inner()),
            None => ProbeState {
                started: c.startup_probe.is_none(),
                ready: c.startup_probe.is_none() && c.readiness_probe.is_none(),
                failed: None,
            },
        }
    }

    /// Records `state` for container `id` as if its probes had found it (the worker's tests).
    #[cfg(test)]
    pub fn set_for_test(&mut self, id: &str, state: ProbeState) {
        let entry = Entry {
            task: tokio::spawn(async {}),
            state: Arc::new(Mutex::new(state)),
            terminating: Arc::new(AtomicBool::new(false)),
        };
        self.entries.insert(id.to_string(), entry);
    }

    /// The probe state of every probed container, by container id.
    pub fn states(&self) -> HashMap<String, ProbeState> {
        self.entries
            .iter()
            .map(|(id, e)| {
                (
                    id.clone(),
                    *e.state.lock().unwrap_or_else(|p| p.into_inner()),
                )
            })
            .collect()
    }
}

/// A probe (or an httpGet hook) that cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeSpecError {
    #[error("invalid port {0}")]
    Port(i32),
    #[error("port {0:?} is not a named port of the container")]
    PortName(String),
    #[error("probe has no handler")]
    NoHandler,
}

/// Translates a Kubernetes probe. `exec` runs commands in the container.
pub fn spec(p: &Probe, c: &Container, pod_ip: &str, exec: ExecFn) -> Result<Spec, ProbeSpecError> {
    let secs =
        |v: Option<i32>, d: u64| Duration::from_secs(v.map(|v| v.max(0) as u64).unwrap_or(d));
    let timing = Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    };
    let port = |v: &IntOrString| -> Result<u16, ProbeSpecError> {
        match v {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| ProbeSpecError::Port(*n)),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| ProbeSpecError::PortName(name.clone())),
        }
    };
    let check = if let Some(e) = &p.exec {
        Check::Exec {
            command: e.command.clone().unwrap_or_default(),
            exec,
        }
    } else if let Some(h) = &p.http_get {
        Check::Http(HttpGet {
            scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()),
            host: h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: port(&h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        })
    } else if let Some(t) = &p.tcp_socket {
        Check::Tcp {
            host: t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: port(&t.port)?,
        }
    } else if let Some(g) = &p.grpc {
        Check::Grpc {
            host: pod_ip.to_string(),
            port: u16::try_from(g.port).map_err(|_| ProbeSpecError::Port(g.port))?,
            service: g.service.clone().unwrap_or_default(),
        }
    } else {
        return Err(ProbeSpecError::NoHandler);
    };
    Ok(Spec { check, timing })
}

fn exec_fn(ctx: &Arc<Ctx>, id: &str) -> ExecFn {
    let ctx = ctx.clone();
    let id = id.to_string();
    Arc::new(move |argv, timeout| {
        let ctx = ctx.clone();
        let id = id.clone();
        Box::pin(async move {
            ctx.runtime
                .exec(&id, &argv, timeout)
                .await
                .map(|o| o.code)
                .map_err(|e| e.to_string())
        })
    })
}

fn unhealthy(ctx: &Ctx, t: &Target, kind: ProbeKind, msg: &str) {
    super::emit(
        ctx,
        &t.pod,
        Some(&t.container.name),
        EventType::Warning,
        event::CONTAINER_UNHEALTHY,
        &format!("{} probe failed: {msg}", kind.as_str()),
    );
}

async fn probe_container(
    ctx: Arc<Ctx>,
    wake: Arc<Notify>,
    t: Target,
    state: Arc<Mutex<ProbeState>>,
    terminating: Arc<AtomicBool>,
) {
    let stopping = || terminating.load(Ordering::Relaxed);
    let c = t.container.clone();
    let exec = exec_fn(&ctx, &t.id);
    let set = |f: &dyn Fn(&mut ProbeState)| {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let before = *s;
        f(&mut s);
        if *s != before {
            wake.notify_one();
        }
    };
    // prober_probe_total of /metrics.
    let meta = &t.pod.metadata;
    let (pod_name, pod_ns, pod_uid) = (
        meta.name.clone().unwrap_or_default(),
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.uid.clone().unwrap_or_default(),
    );
    let count = |kind: &'static str| {
        let (container, pod, ns, uid) = (
            c.name.clone(),
            pod_name.clone(),
            pod_ns.clone(),
            pod_uid.clone(),
        );
        let (ctx, pod_obj) = (ctx.clone(), t.pod.clone());
        move |ok: bool, warning: Option<&str>| {
            let result = if ok { "successful" } else { "failed" };
            crate::metrics::count_probe(kind, result, &container, &pod, &ns, &uid);
            // The kubelet's prober: a success with a warning (a redirect to another host).
            if let Some(w) = warning {
                super::emit(
                    &ctx,
                    &pod_obj,
                    Some(&container),
                    EventType::Warning,
                    event::PROBE_WARNING,
                    &format!("{kind} probe warning: {w}"),
                );
            }
        }
    };
    let translate = |p: &Probe, kind: &str| match spec(p, &c, &t.pod_ip, exec.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(container = %t.id, "{kind} probe: {e}");
            None
        }
    };
    if let Some(p) = &c.startup_probe {
        if let Some(s) = translate(p, "Startup") {
            let mut failed = None;
            bosun_probes::run_observed(s, false, count("Startup"), |ok, msg| {
                if !ok && !stopping() {
                    failed = Some(msg.to_string());
                }
                false
            })
            .await;
            if stopping() {
                return;
            }
            if let Some(msg) = failed {
                unhealthy(&ctx, &t, ProbeKind::Startup, &msg);
                set(&|s| s.failed = Some(ProbeKind::Startup));
                return;
            }
        }
        set(&|s| {
            s.started = true;
            s.ready = c.readiness_probe.is_none();
        });
    }
    let liveness = async {
        if let Some(p) = &c.liveness_probe {
            if let Some(s) = translate(p, "Liveness") {
                let mut failed = None;
                bosun_probes::run_observed(s, true, count("Liveness"), |ok, msg| {
                    if stopping() {
                        return false;
                    }
                    if !ok {
                        failed = Some(msg.to_string());
                        return false;
                    }
                    true
                })
                .await;
                if let Some(msg) = failed {
                    unhealthy(&ctx, &t, ProbeKind::Liveness, &msg);
                    set(&|s| s.failed = Some(ProbeKind::Liveness));
                }
                if stopping() {
                    // Readiness goes on while the pod stops.
                    std::future::pending::<()>().await
                }
            }
        }
    };
    let readiness = async {
        if let Some(p) = &c.readiness_probe {
            if let Some(s) = translate(p, "Readiness") {
                bosun_probes::run_observed(s, false, count("Readiness"), |ok, msg| {
                    if !ok {
                        unhealthy(&ctx, &t, ProbeKind::Readiness, msg);
                    }
                    set(&|st| st.ready = ok);
                    true
                })
                .await;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = liveness, if c.liveness_probe.is_some() => {}
        _ = readiness => {}
    }
}
