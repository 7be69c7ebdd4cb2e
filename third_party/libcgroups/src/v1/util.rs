use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::OnceLock;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
///
/// bosun's patch: read from mountinfo once per process (see [`cgroup_mounts`]).
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    cgroup_mounts().map(<[PathBuf]>::to_vec)
}

/// The cgroup v1 mount points of this process's mount namespace, in mount order, read once per
/// process and kept (a process that forks without exec, as libcontainer's container processes
/// do, inherits them).
///
/// bosun's patch. Upstream reads and parses all of mountinfo on every lookup, for each of the
/// twelve controllers, several times per container start; mountinfo grows by a few lines for
/// every pod on a node, so every start got slower the more pods ran (a lookup of a controller
/// that is not mounted reads it to the end). Hierarchies are not remounted under a running
/// container runtime.
fn cgroup_mounts() -> Result<&'static [PathBuf], V1MountPointError> {
    static MOUNTS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    if let Some(m) = MOUNTS.get() {
        return Ok(m);
    }
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);
    let mut found = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        // Only cgroup v1 lines are parsed: the type follows the " - " separator (spaces in paths
        // are escaped). Other lines are many, of no interest, and need not even be UTF-8.
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        if !line.contains(" - cgroup ") {
            continue;
        }
        let m = MountInfo::from_line(line).map_err(V1MountPointError::MountInfo)?;
        if m.fs_type == "cgroup" {
            found.push(m.mount_point);
        }
    }
    Ok(MOUNTS.get_or_init(|| found))
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());

    for controller in CONTROLLERS {
        if let Ok(mount_point) = get_subsystem_mount_point(controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    cgroup_mounts()?
        .iter()
        .find(|mount_point| {
            // Some systems mount net_prio and net_cls in the same directory
            // other systems mount them in their own directories. This
            // should handle both cases.
            match subsystem_name.as_str() {
                "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "cpu" => ["cpu,cpuacct", "cpu"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                _ => mount_point.ends_with(&subsystem_name),
            }
        })
        .cloned()
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}
