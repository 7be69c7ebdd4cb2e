//! The node-local subcommands: `bosun pods`, `bosun logs`, `bosun images`, `bosun image import`,
//! `bosun pull`: they read bosun's folders and the image store, without a running agent.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bosun_runtime::image::ImageStore;

use crate::config::Config;
use crate::pods::source::ManifestFailure;
use crate::pods::status;

pub fn pods(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let pods = status::read_all(&cfg.run_dir);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &pods)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<12} {:<28} {:<10} {:<6} {:<9} UID",
        "NAMESPACE", "NAME", "PHASE", "READY", "RESTARTS"
    )?;
    for pod in &pods {
        let st = pod.status.clone().unwrap_or_default();
        let cs = st.container_statuses.clone().unwrap_or_default();
        let ready = cs.iter().filter(|c| c.ready).count();
        let restarts: i32 = cs.iter().map(|c| c.restart_count).sum();
        writeln!(
            out,
            "{:<12} {:<28} {:<10} {:<6} {:<9} {}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or(""),
            st.phase.as_deref().unwrap_or("Unknown"),
            format!("{ready}/{}", cs.len()),
            restarts,
            pod.metadata.uid.as_deref().unwrap_or(""),
        )?;
        // Why the node ended the pod (admission, eviction).
        if let Some(reason) = &st.reason {
            writeln!(out, "  {reason}: {}", st.message.as_deref().unwrap_or(""))?;
        }
        let inits = st.init_container_statuses.clone().unwrap_or_default();
        for (kind, c) in inits
            .iter()
            .map(|c| ("init", c))
            .chain(cs.iter().map(|c| ("", c)))
        {
            writeln!(
                out,
                "  {:<4} {:<22} {:<13} {}",
                kind,
                c.name,
                short_cri_id(c),
                describe_state(c)
            )?;
        }
    }
    let failures: Vec<ManifestFailure> =
        std::fs::read(cfg.run_dir.join(crate::pods::source::ERRORS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    if !failures.is_empty() {
        writeln!(out, "\nINVALID MANIFESTS (refused: no pod is made of them)")?;
        for f in &failures {
            let kept = match f.kept_pods {
                0 => String::new(),
                n => format!(" ({n} pods of its last good version keep running)"),
            };
            writeln!(out, "{}{kept}\n  {}", f.file.display(), f.error)?;
        }
    }
    Ok(())
}

/// The container's CRI id as crictl prints it (13 characters), `-` before it has one.
fn short_cri_id(c: &k8s_openapi::api::core::v1::ContainerStatus) -> String {
    match c
        .container_id
        .as_deref()
        .and_then(|i| i.strip_prefix(status::ID_SCHEME))
    {
        Some(id) => {
            let mut cri = crate::translate::cri_container_id(id);
            cri.truncate(crate::translate::SHORT_ID_LEN);
            cri
        }
        None => "-".into(),
    }
}

fn describe_state(c: &k8s_openapi::api::core::v1::ContainerStatus) -> String {
    let st = c.state.clone().unwrap_or_default();
    let mut s = if st.running.is_some() {
        "Running".to_string()
    } else if let Some(t) = &st.terminated {
        format!(
            "Terminated ({}, exit code {})",
            t.reason.as_deref().unwrap_or(""),
            t.exit_code
        )
    } else if let Some(w) = &st.waiting {
        match &w.message {
            Some(m) => format!("Waiting ({}: {m})", w.reason.as_deref().unwrap_or("")),
            None => format!("Waiting ({})", w.reason.as_deref().unwrap_or("")),
        }
    } else {
        "Unknown".to_string()
    };
    s.push_str(&format!("  restarts={}", c.restart_count));
    if let Some(t) = c.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
        s.push_str(&format!(
            "  last: {} exit code {}",
            t.reason.as_deref().unwrap_or(""),
            t.exit_code
        ));
    }
    s
}

pub struct LogsArgs {
    pub pod: String,
    pub container: Option<String>,
    pub namespace: String,
    pub tail: Option<usize>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
}

/// Finds `/var/log/pods/<ns>_<name>_<uid>/<container>/<n>.log` for the newest uid.
fn log_file(cfg: &Config, a: &LogsArgs) -> anyhow::Result<PathBuf> {
    let (ns, name) = match a.pod.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (a.namespace.clone(), a.pod.clone()),
    };
    let prefix = format!("{ns}_{name}_");
    let mut pod_dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&cfg.pod_logs_dir)
        .with_context(|| format!("reading {}", cfg.pod_logs_dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            (
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                e.path(),
            )
        })
        .collect();
    pod_dirs.sort();
    let Some((_, pod_dir)) = pod_dirs.pop() else {
        bail!("no logs for pod {ns}/{name}");
    };
    let containers: Vec<String> = std::fs::read_dir(&pod_dir)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Like kubectl: without a name, the default-container annotation or the first container.
    let default = status::read_all(&cfg.run_dir)
        .into_iter()
        .find(|p| {
            p.metadata.name.as_deref() == Some(name.as_str())
                && p.metadata.namespace.as_deref().unwrap_or("default") == ns
        })
        .and_then(|p| {
            let ann = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned());
            ann.or_else(|| {
                p.spec
                    .and_then(|s| s.containers.first().map(|c| c.name.clone()))
            })
        });
    let container = match (&a.container, default) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c,
        (None, None) if containers.len() == 1 => containers[0].clone(),
        (None, None) => bail!(
            "pod {ns}/{name} has several containers, name one of: {}",
            containers.join(", ")
        ),
    };
    let dir = pod_dir.join(&container);
    if !dir.is_dir() {
        bail!("no logs for container {container} of pod {ns}/{name}");
    }
    let pick = crate::server::logs::attempt_log(&dir, a.previous);
    match pick {
        Some(path) => Ok(path),
        None if a.previous => {
            bail!("previous terminated container {container} in pod {ns}/{name} not found")
        }
        None => bail!("no logs for container {container} of pod {ns}/{name}"),
    }
}

pub fn logs(cfg: &Config, a: &LogsArgs) -> anyhow::Result<()> {
    let path = log_file(cfg, a)?;
    let mut out = std::io::stdout().lock();
    let lines = bosun_runtime::logs::read_lines(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    out.write_all(&bosun_runtime::logs::format_for_user(
        &lines,
        a.tail,
        a.timestamps,
    ))?;
    out.flush()?;
    if !a.follow {
        return Ok(());
    }
    let mut seen = lines.len();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let lines = match bosun_runtime::logs::read_lines(&path) {
            Ok(l) => l,
            Err(_) => continue,
        };
        if lines.len() < seen {
            seen = 0; // rotated
        }
        if lines.len() > seen {
            out.write_all(&bosun_runtime::logs::format_for_user(
                &lines[seen..],
                None,
                a.timestamps,
            ))?;
            out.flush()?;
            seen = lines.len();
        }
    }
}

pub fn images(cfg: &Config) -> anyhow::Result<()> {
    let store = ImageStore::open(&cfg.data_dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<50} {:<14} {:>10}  LAST USED",
        "REFERENCE", "IMAGE ID", "SIZE"
    )?;
    let now = std::time::SystemTime::now();
    for img in store.list()? {
        let reference = if img.references.is_empty() {
            "<none>".to_string()
        } else {
            img.references.join(",")
        };
        let ago = now
            .duration_since(img.last_used)
            .map(|d| format!("{} ago", age(d)))
            .unwrap_or_else(|_| "just now".into());
        writeln!(
            out,
            "{:<50} {:<14} {:>10}  {}",
            reference,
            img.id
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>(),
            human(img.size),
            ago
        )?;
    }
    Ok(())
}

fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `bosun pull REF`: pulls into the store, printing the reference and image id.
pub async fn pull(cfg: Config, reference: String) -> anyhow::Result<()> {
    let mgr = crate::images::ImageManager::new(&cfg).context("setting up image pulls")?;
    let img = mgr
        .pull(&reference)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{} {} {}", img.reference, img.id, img.digest);
    Ok(())
}

/// `bosun images gc`: one collection with the configured or given thresholds; images of every
/// container recorded under the run folder are kept.
pub fn images_gc(
    cfg: &Config,
    high: Option<u8>,
    low: Option<u8>,
    min_age: Option<&str>,
) -> anyhow::Result<()> {
    let store = ImageStore::open(&cfg.data_dir)?;
    let high = high.unwrap_or(cfg.image_gc_high_threshold_percent);
    let low = low.unwrap_or(cfg.image_gc_low_threshold_percent).min(high);
    let min_age = match min_age {
        Some(s) => crate::config::parse_duration(s)
            .with_context(|| format!("{s:?} is not a duration like 2m"))?,
        None => cfg.image_minimum_gc_age,
    };
    let in_use = bosun_runtime::container::images_in_use(&crate::assembly::runtime_paths(cfg)?);
    let report = store.gc(&in_use, high, low, min_age)?;
    for img in &report.removed {
        println!(
            "removed {} {}",
            img.id,
            if img.references.is_empty() {
                "<none>".to_string()
            } else {
                img.references.join(",")
            }
        );
    }
    for path in &report.swept {
        println!("removed stale download {}", path.display());
    }
    println!(
        "usage {}% (high {high}%, low {low}%), freed {}",
        report.usage_percent,
        human(report.freed)
    );
    Ok(())
}

fn human(bytes: u64) -> String {
    let mut v = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return format!("{v:.1}{unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.1}TiB")
}

pub fn import(
    cfg: &Config,
    layout: &Path,
    reference: &str,
    tag: Option<&str>,
) -> anyhow::Result<()> {
    let store = ImageStore::open(&cfg.data_dir)?;
    let img = store
        .import_layout(layout, tag, reference)
        .with_context(|| format!("importing {}", layout.display()))?;
    println!("{} {}", img.reference, img.id);
    Ok(())
}
