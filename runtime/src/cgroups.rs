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
