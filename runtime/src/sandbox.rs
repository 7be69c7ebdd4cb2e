//! Pod sandboxes without a pause image: net, ipc and uts namespaces created once by the helper
//! `bosun __sandbox` and pinned as bind-mounted files, a per-pod /dev/shm tmpfs.

use std::path::PathBuf;

use crate::RuntimePaths;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox {pod_uid}: {what}: {source}")]
    Io {
        pod_uid: String,
        what: String,
        source: std::io::Error,
    },
    #[error("sandbox {pod_uid}: helper failed: {message}")]
    Helper { pod_uid: String, message: String },
    #[error("sandbox {pod_uid}: cgroup: {source}")]
    Cgroup {
        pod_uid: String,
        source: crate::cgroups::CgroupError,
    },
}

/// `<run_dir>/sandboxes/<pod_uid>`
pub fn dir(paths: &RuntimePaths, pod_uid: &str) -> PathBuf {
    paths.run_dir.join("sandboxes").join(pod_uid)
}
