//! What the agent measures of itself, in one leaf module that the pod workers, the cluster
//! tasks and the HTTP server all write to or read from (it uses nothing else of the crate):
//!
//! - here, the figures of `/metrics`, named and bucketed as the kubelet's:
//!   `kubelet_pod_start_sli_duration_seconds`, `kubelet_pod_worker_duration_seconds`,
//!   `kubelet_runtime_operations_duration_seconds` and `prober_probe_total`, recorded by the pod
//!   workers, the runtime calls and the probers into a process-wide registry;
//! - [`health`]: when the pod manager's loop last came round (`/healthz/syncloop`);
//! - [`volume`]: one measured volume of a pod (`/stats/summary`, `kubelet_volume_stats_*`).

pub mod health;
pub mod volume;

pub use volume::VolumeSample;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The kubelet's buckets for the pod start SLI.
pub const POD_START_SLI_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];
/// Prometheus' default buckets (the pod worker duration).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `ExponentialBuckets(0.005, 2.5, 14)`: the runtime operation latencies.
pub fn runtime_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.005 * 2.5f64.powi(i)).collect()
}

type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Default)]
struct Series {
    /// Per bucket (not cumulative).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// What the pod start SLI needs of one pod.
#[derive(Default)]
struct PodStart {
    /// A container of the pod was started by this process (adopted pods are not measured).
    started_here: bool,
    /// Time spent pulling its images.
    pulling: Duration,
    /// Already observed.
    observed: bool,
}

#[derive(Default)]
struct Registry {
    pods: BTreeMap<String, PodStart>,
    pod_start_sli: BTreeMap<Labels, Series>,
    pod_worker: BTreeMap<Labels, Series>,
    runtime_ops: BTreeMap<Labels, Series>,
    probes: BTreeMap<Labels, u64>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

fn observe(map: &mut BTreeMap<Labels, Series>, labels: Labels, buckets: &[f64], v: f64) {
    let s = map.entry(labels).or_insert_with(|| Series {
        counts: vec![0; buckets.len()],
        ..Default::default()
    });
    if let Some(i) = buckets.iter().position(|b| v <= *b) {
        s.counts[i] += 1;
    }
    s.sum += v;
    s.count += 1;
}

/// Pod `uid` pulled an image for `d`.
pub fn pod_image_pulled(uid: &str, d: Duration) {
    with(|r| r.pods.entry(uid.to_string()).or_default().pulling += d);
}

/// This process started a container of pod `uid`.
pub fn pod_container_started(uid: &str) {
    with(|r| r.pods.entry(uid.to_string()).or_default().started_here = true);
}

/// Every container of pod `uid` (created at `created`) runs: the first time, for a pod whose
/// containers this process started, its start SLI is observed (from creation, pulls left out).
pub fn pod_running(uid: &str, created: Option<SystemTime>) {
    let Some(created) = created else { return };
    let Ok(age) = SystemTime::now().duration_since(created) else {
        return;
    };
    with(|r| {
        let Some(p) = r.pods.get_mut(uid) else { return };
        if p.observed || !p.started_here {
            return;
        }
        p.observed = true;
        let d = age.saturating_sub(p.pulling);
        observe(
            &mut r.pod_start_sli,
            Vec::new(),
            &POD_START_SLI_BUCKETS,
            d.as_secs_f64(),
        );
    });
}

/// Pod `uid` is gone.
pub fn forget_pod(uid: &str) {
    with(|r| {
        r.pods.remove(uid);
    });
}

/// A pod started: from its creation to all its containers running, image pulls left out.
pub fn observe_pod_start_sli(d: Duration) {
    with(|r| {
        observe(
            &mut r.pod_start_sli,
            Vec::new(),
            &POD_START_SLI_BUCKETS,
            d.as_secs_f64(),
        )
    });
}

/// One sync of a pod worker (`operation`: create, update or sync, as the kubelet).
pub fn observe_pod_worker(operation: &str, d: Duration) {
    with(|r| {
        observe(
            &mut r.pod_worker,
            vec![("operation_type", operation.to_string())],
            &DEFAULT_BUCKETS,
            d.as_secs_f64(),
        )
    });
}

/// One runtime operation (`operation`: the CRI verb it stands for, e.g. create_container).
pub fn observe_runtime_operation(operation: &str, d: Duration) {
    with(|r| {
        observe(
            &mut r.runtime_ops,
            vec![("operation_type", operation.to_string())],
            &runtime_buckets(),
            d.as_secs_f64(),
        )
    });
}

/// One probe result (`probe_type`: Liveness, Readiness or Startup; `result`: successful,
/// failed or unknown).
pub fn count_probe(
    probe_type: &str,
    result: &str,
    container: &str,
    pod: &str,
    namespace: &str,
    pod_uid: &str,
) {
    let labels = vec![
        ("container", container.to_string()),
        ("namespace", namespace.to_string()),
        ("pod", pod.to_string()),
        ("pod_uid", pod_uid.to_string()),
        ("probe_type", probe_type.to_string()),
        ("result", result.to_string()),
    ];
    with(|r| *r.probes.entry(labels).or_default() += 1);
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &[(&str, String)], extra: Option<(&str, String)>) -> String {
    let all: Vec<String> = labels
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .chain(extra)
        .map(|(k, v)| format!("{k}=\"{}\"", esc(&v)))
        .collect();
    if all.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", all.join(","))
    }
}

fn fmt_f(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[f64],
    map: &BTreeMap<Labels, Series>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, s) in map {
        let mut acc = 0;
        for (b, c) in buckets.iter().zip(&s.counts) {
            acc += c;
            let l = label_text(labels, Some(("le", fmt_f(*b))));
            let _ = writeln!(out, "{name}_bucket{l} {acc}");
        }
        let l = label_text(labels, Some(("le", "+Inf".into())));
        let _ = writeln!(out, "{name}_bucket{l} {}", s.count);
        let l = label_text(labels, None);
        let _ = writeln!(out, "{name}_sum{l} {}", s.sum);
        let _ = writeln!(out, "{name}_count{l} {}", s.count);
    }
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    with(|r| {
        let mut out = String::new();
        histogram(
            &mut out,
            "kubelet_pod_start_sli_duration_seconds",
            "[BETA] Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
            &POD_START_SLI_BUCKETS,
            &r.pod_start_sli,
        );
        histogram(
            &mut out,
            "kubelet_pod_worker_duration_seconds",
            "[ALPHA] Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
            &DEFAULT_BUCKETS,
            &r.pod_worker,
        );
        histogram(
            &mut out,
            "kubelet_runtime_operations_duration_seconds",
            "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
            &runtime_buckets(),
            &r.runtime_ops,
        );
        let _ = writeln!(
            out,
            "# HELP prober_probe_total [ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result."
        );
        let _ = writeln!(out, "# TYPE prober_probe_total counter");
        for (labels, n) in &r.probes {
            let _ = writeln!(out, "prober_probe_total{} {n}", label_text(labels, None));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_counters_render() {
        let mut map = BTreeMap::new();
        observe(&mut map, Vec::new(), &POD_START_SLI_BUCKETS, 0.7);
        observe(&mut map, Vec::new(), &POD_START_SLI_BUCKETS, 4000.0);
        let mut out = String::new();
        histogram(&mut out, "x", "help", &POD_START_SLI_BUCKETS, &map);
        assert!(out.contains("# TYPE x histogram\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.5\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"3600\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_sum 4000.7\n"), "{out}");
        assert!(out.contains("x_count 2\n"), "{out}");

        observe_pod_worker("sync", Duration::from_millis(20));
        count_probe("Readiness", "successful", "c", "p", "default", "u1");
        count_probe("Readiness", "successful", "c", "p", "default", "u1");
        let text = render();
        assert!(text.contains(
            "kubelet_pod_worker_duration_seconds_bucket{operation_type=\"sync\",le=\"0.025\"} "
        ));
        assert!(text.contains(
            "prober_probe_total{container=\"c\",namespace=\"default\",pod=\"p\",pod_uid=\"u1\",probe_type=\"Readiness\",result=\"successful\"} 2\n"
        ), "{text}");
        assert!(text.contains("# TYPE kubelet_pod_start_sli_duration_seconds histogram\n"));
    }

    #[test]
    fn pod_start_sli_once_for_pods_started_here() {
        let count = || {
            with(|r| {
                r.pod_start_sli
                    .get(&Vec::new())
                    .map(|s| s.count)
                    .unwrap_or(0)
            })
        };
        let before = count();
        let created = SystemTime::now() - Duration::from_secs(10);
        pod_running("sli-adopted", Some(created));
        assert_eq!(count(), before);
        pod_image_pulled("sli-new", Duration::from_secs(8));
        pod_container_started("sli-new");
        pod_running("sli-new", Some(created));
        pod_running("sli-new", Some(created));
        assert_eq!(count(), before + 1);
        forget_pod("sli-new");
        assert!(with(|r| !r.pods.contains_key("sli-new")));
    }

    #[test]
    fn runtime_buckets_are_the_kubelets() {
        let b = runtime_buckets();
        assert_eq!(b.len(), 14);
        assert!((b[0] - 0.005).abs() < 1e-12);
        assert!((b[1] - 0.0125).abs() < 1e-12);
        assert!((b[13] - 0.005 * 2.5f64.powi(13)).abs() < 1e-6);
    }
}
