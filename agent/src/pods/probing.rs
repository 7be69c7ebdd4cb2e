//! Probes of a pod's running containers: one tokio task per running container (no thread, no
//! process except for exec checks). The startup probe runs first and holds liveness and
//! readiness back; liveness (and startup) failures kill the container with reason `Unhealthy`
//! and the restart policy applies; readiness results are read by the worker for `ready` and the
//! pod's conditions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_probes::{Check, ExecFn, HttpGet, Spec, Timing};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

use super::Ctx;

/// What the probes of one container found so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// Readiness (true without a readiness probe once started).
    pub ready: bool,
}

struct Entry {
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<ProbeState>>,
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
    /// Grace period for a kill (pod's terminationGracePeriodSeconds).
    pub pod_grace: i64,
    pub stop_signal: i32,
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
            };
            if c.startup_probe.is_none()
                && c.liveness_probe.is_none()
                && c.readiness_probe.is_none()
            {
                continue;
            }
            let id = t.id.clone();
            let state = Arc::new(Mutex::new(initial));
            let task = tokio::spawn(probe_container(ctx.clone(), wake.clone(), t, state.clone()));
            self.entries.insert(id, Entry { task, state });
        }
    }

    /// The probe state of a running container (`None`: not probed, use the defaults).
    pub fn state(&self, id: &str, c: &Container) -> ProbeState {
        match self.entries.get(id) {
            Some(e) => *e.state.lock().unwrap_or_else(|p| p.into_inner()),
            None => ProbeState {
                started: c.startup_probe.is_none(),
                ready: c.startup_probe.is_none() && c.readiness_probe.is_none(),
            },
        }
    }
}

/// Translates a Kubernetes probe. `exec` runs commands in the container.
pub fn spec(p: &Probe, c: &Container, pod_ip: &str, exec: ExecFn) -> Result<Spec, String> {
    let secs =
        |v: Option<i32>, d: u64| Duration::from_secs(v.map(|v| v.max(0) as u64).unwrap_or(d));
    let timing = Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    };
    let port = |v: &IntOrString| -> Result<u16, String> {
        match v {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("port {name:?} is not a named port of the container")),
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
            port: u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?,
            service: g.service.clone().unwrap_or_default(),
        }
    } else {
        return Err("probe has no handler".into());
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

async fn kill_unhealthy(ctx: &Ctx, t: &Target, p: &Probe, kind: &str, msg: &str) {
    let name = Some(t.container.name.as_str());
    super::emit(
        ctx,
        &t.pod,
        name,
        "Warning",
        "Unhealthy",
        &format!("{kind} probe failed: {msg}"),
    );
    let grace = p
        .termination_grace_period_seconds
        .unwrap_or(t.pod_grace)
        .max(1) as u64;
    super::emit(
        ctx,
        &t.pod,
        name,
        "Normal",
        "Killing",
        &format!(
            "Container {} failed {} probe, will be restarted",
            t.container.name,
            kind.to_lowercase()
        ),
    );
    if let Err(e) = ctx
        .runtime
        .stop_container(&t.id, t.stop_signal, Duration::from_secs(grace))
        .await
    {
        tracing::warn!(container = %t.id, error = %e, "cannot kill unhealthy container");
    }
}

async fn probe_container(
    ctx: Arc<Ctx>,
    wake: Arc<Notify>,
    t: Target,
    state: Arc<Mutex<ProbeState>>,
) {
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
            crate::server::metrics::count_probe(kind, result, &container, &pod, &ns, &uid);
            // The kubelet's prober: a success with a warning (a redirect to another host).
            if let Some(w) = warning {
                super::emit(
                    &ctx,
                    &pod_obj,
                    Some(&container),
                    "Warning",
                    "ProbeWarning",
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
                if !ok {
                    failed = Some(msg.to_string());
                }
                false
            })
            .await;
            if let Some(msg) = failed {
                kill_unhealthy(&ctx, &t, p, "Startup", &msg).await;
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
                    if !ok {
                        failed = Some(msg.to_string());
                        return false;
                    }
                    true
                })
                .await;
                if let Some(msg) = failed {
                    kill_unhealthy(&ctx, &t, p, "Liveness", &msg).await;
                }
            }
        }
    };
    let readiness = async {
        if let Some(p) = &c.readiness_probe {
            if let Some(s) = translate(p, "Readiness") {
                bosun_probes::run_observed(s, false, count("Readiness"), |ok, msg| {
                    if !ok {
                        super::emit(
                            &ctx,
                            &t.pod,
                            Some(&t.container.name),
                            "Warning",
                            "Unhealthy",
                            &format!("Readiness probe failed: {msg}"),
                        );
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
