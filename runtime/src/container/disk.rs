//! The container folder `<run_dir>/containers/<id>/` as files: reading what the keeper wrote and
//! deriving a [`ContainerStatus`] from it, plus the few files the runtime itself writes.

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::proc;
use crate::keeper::{KeeperRequest, Started, EXIT_FILE, REQUEST_FILE, STARTED_FILE};
use crate::{ContainerState, ContainerStatus, ExitInfo};

/// Written (before `exit.json`) when the runtime finalised a container whose keeper vanished;
/// holds the reason. Its presence makes the state [`ContainerState::Unknown`].
pub const UNKNOWN_FILE: &str = "unknown";
/// The keeper's stdout and stderr.
pub const KEEPER_LOG: &str = "keeper.log";

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let raw = std::fs::read(path).ok()?;
    match serde_json::from_slice(&raw) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable state file");
            None
        }
    }
}

/// Writes `value` as JSON to `path` atomically for readers. No fsync: a container folder
/// describes this boot only (the run folder is a tmpfs on a node).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec(value).map_err(io::Error::other)?;
    bosun_fsutil::write_atomic(path, &data, bosun_fsutil::Durability::Volatile)
}

pub fn read_request(dir: &Path) -> Option<KeeperRequest> {
    read_json(&dir.join(REQUEST_FILE))
}

pub fn read_started(dir: &Path) -> Option<Started> {
    read_json(&dir.join(STARTED_FILE))
}

pub fn read_exit(dir: &Path) -> Option<ExitInfo> {
    read_json(&dir.join(EXIT_FILE))
}

pub fn read_unknown(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(UNKNOWN_FILE)).ok()
}

/// The state of the container in `dir`, from its files and the keeper's liveness.
/// `starting`: the runtime is spawning its keeper right now.
pub fn state(dir: &Path, starting: bool) -> ContainerState {
    let finished = |exit: ExitInfo| match read_unknown(dir) {
        Some(reason) => ContainerState::Unknown { reason },
        None => ContainerState::Exited(exit),
    };
    if let Some(exit) = read_exit(dir) {
        return finished(exit);
    }
    if proc::keeper_alive(dir) {
        return match read_started(dir) {
            Some(s) => ContainerState::Running {
                pid: s.pid,
                started_at: s.started_at,
            },
            None => ContainerState::Created,
        };
    }
    // The keeper may have written exit.json and exited since the first look.
    if let Some(exit) = read_exit(dir) {
        return finished(exit);
    }
    if starting {
        return ContainerState::Created;
    }
    ContainerState::Unknown {
        reason: "keeper is not running and recorded no exit".to_string(),
    }
}

/// The full status of the container in `dir`, or `None` if it has no readable request.
pub fn status(dir: &Path, id: &str, starting: bool) -> Option<ContainerStatus> {
    let req = read_request(dir)?;
    Some(ContainerStatus {
        id: id.to_string(),
        labels: req.spec.labels.clone(),
        state: state(dir, starting),
        image: req.spec.image.clone(),
        image_id: req.spec.image_id.clone(),
        log_path: req.log_path,
        resources: req.spec.resources,
    })
}

/// Unmounts everything at or below `dir` (lazily). Errors if something stays mounted.
pub fn unmount_all_under(dir: &Path) -> io::Result<()> {
    for m in crate::sys::mounts_under(dir) {
        tracing::debug!(mount = %m.display(), "unmounting");
        match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    match crate::sys::mounts_under(dir).first() {
        Some(m) => Err(io::Error::other(format!(
            "{} is still mounted",
            m.display()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn exit_file_round_trips_in_serde_default_time_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = r#"{"code":3,"signal":null,"oom_killed":false,
            "started_at":{"secs_since_epoch":10,"nanos_since_epoch":5},
            "finished_at":{"secs_since_epoch":20,"nanos_since_epoch":0},"start_error":null}"#;
        std::fs::write(dir.path().join(EXIT_FILE), raw).expect("write");
        let exit = read_exit(dir.path()).expect("parsed");
        assert_eq!(exit.code, 3);
        assert_eq!(exit.started_at, Some(UNIX_EPOCH + Duration::new(10, 5)));
        write_json_atomic(&dir.path().join("copy.json"), &exit).expect("write");
        let back: ExitInfo = read_json(&dir.path().join("copy.json")).expect("read");
        assert_eq!(back, exit);
        assert!(matches!(
            state(dir.path(), false),
            ContainerState::Exited(_)
        ));
        std::fs::write(dir.path().join(UNKNOWN_FILE), "keeper died").expect("write");
        assert_eq!(
            state(dir.path(), false),
            ContainerState::Unknown {
                reason: "keeper died".into()
            }
        );
    }

    #[test]
    fn state_without_keeper() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(state(dir.path(), true), ContainerState::Created);
        assert!(matches!(
            state(dir.path(), false),
            ContainerState::Unknown { .. }
        ));
    }
}
