//! The one module that owns the cgroup layout: `<root>/kubepods[/burstable|/besteffort]/pod<uid>`
//! with container cgroups inside, on cgroup v1 (hybrid) and pure v2.

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {reason}")]
    Other { path: String, reason: String },
}

/// The number of OOM kills recorded for a cgroup (`path` relative to the hierarchy root, as in
/// an OCI `cgroupsPath`): v1 `memory.oom_control` / v2 `memory.events`. `None` if unreadable.
pub fn oom_kill_count(path: &str) -> Option<u64> {
    let rel = path.trim_start_matches('/');
    let candidates = [
        std::path::Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        std::path::Path::new("/sys/fs/cgroup")
            .join(rel)
            .join("memory.events"),
    ];
    candidates.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|v| v.trim().parse().ok())
        })
    })
}
