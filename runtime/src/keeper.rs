//! The keeper: one small single-threaded process per container (`bosun __keeper <dir>`).
//!
//! It is the only place libcontainer's `build()`/`start()` run: they clone without exec, which
//! is only sound in a single-threaded process (the child of a multi-threaded one may inherit a
//! lock another thread held). It mounts the overlay rootfs, writes the OCI `config.json`, builds and starts the
//! container and stays its parent: it copies stdout/stderr into the CRI log (with rotation),
//! waits for the exit through a pidfd, records it atomically in `exit.json`, then deletes the
//! container, unmounts the rootfs and exits. It runs in its own session, so it outlives the agent.
//!
//! Files in the container folder `<run_dir>/containers/<id>/`:
//! - `request.json`  [`KeeperRequest`], written by the agent before it spawns the keeper
//! - `keeper.pid`    the keeper's pid (written first)
//! - `bundle/`       `config.json` and `rootfs/` (overlay of the image layers)
//! - `upper/`, `work/` the container's writable overlay layer
//! - `state/`        libcontainer's root folder for this container
//! - `started.json`  [`Started`] once the process runs
//! - `exit.json`     [`crate::ExitInfo`] once it has exited (written with rename, never partial)
//! - `attach.sock`   with `stdin`/`tty`: hands out the container's stdin ([`attach`])
//! - `console.sock`  with `tty`: where libcontainer sends the terminal's master (during start)
//!
//! The agent passes a pipe as fd 3; the keeper writes one line to it and closes it:
//! `started <pid>` or `error <message>`. A request with `hold` makes it stop between
//! libcontainer's `build()` and `start()`: it writes `created <pid>` first and waits for one
//! byte on fd 4 (the go-ahead) before it starts the container; the pipe closing without that
//! byte (the agent gave up, or died) ends the container before it ever ran, reported as an error.
//! The agent sets the pod network up meanwhile.
//!
//! The container's init execs the payload only after `start()`; when that exec fails (argument
//! list too long, a missing interpreter) it says why on a pipe of the keeper's ([`payload`]),
//! and the exit is recorded as a start error (code 128) with that message.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{ContainerSpec, Sandbox};

pub mod attach;
mod payload;
mod run;
pub(crate) use run::write_atomic;
pub mod user;

pub const REQUEST_FILE: &str = "request.json";
pub const PID_FILE: &str = "keeper.pid";
pub const STARTED_FILE: &str = "started.json";
pub const EXIT_FILE: &str = "exit.json";
/// The fd on which the keeper reports `started <pid>` or `error <msg>`.
pub const STATUS_FD: i32 = 3;
/// The fd on which a holding keeper waits for the go-ahead (see [`KeeperRequest::hold`]).
pub const GO_FD: i32 = 4;
/// The go-ahead byte.
pub const GO: u8 = b'g';

/// What the agent asks a keeper to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeeperRequest {
    pub spec: ContainerSpec,
    pub sandbox: Sandbox,
    /// Unpacked image layers, bottom first (overlay lowerdirs are given top first).
    pub layers: Vec<PathBuf>,
    /// CRI log file: `/var/log/pods/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub log_path: PathBuf,
    /// Rotate the log when it passes this size (containerLogMaxSize, default 10 MiB).
    pub log_max_size: u64,
    /// Keep at most this many log files per container (containerLogMaxFiles, default 5).
    pub log_max_files: u32,
    /// cgroup path of the container (`<sandbox.cgroup_parent>/<id>`).
    pub cgroup_path: String,
    /// Stop after the container is built (namespaces joined, mounts done, cgroup set) and
    /// report `created <pid>`; start it only on the go-ahead on [`GO_FD`].
    #[serde(default)]
    pub hold: bool,
    /// Where the container's CPU quota goes, found by the agent, which knows the cgroup layout
    /// (finding it reads mountinfo, a few lines for every pod on the node). `None`: the keeper
    /// finds it itself.
    #[serde(default)]
    pub cpu_cgroup: Option<crate::cgroups::CpuCgroup>,
    /// The container's security profiles as asked.
    #[serde(default)]
    pub security: crate::ContainerSecurity,
    /// Its seccomp filter, resolved and compiled by the agent (`seccomp::Filters`).
    #[serde(default)]
    pub seccomp: Option<crate::seccomp::CompiledFilter>,
    /// Its AppArmor exec label, resolved by the agent (the profile is loaded).
    #[serde(default)]
    pub apparmor_label: Option<String>,
    /// The edits of its CDI devices (`spec.cdi_devices`), resolved by the agent.
    #[serde(default)]
    pub cdi: Option<crate::cdi::ContainerEdits>,
}

/// Written by the keeper once the container's process runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub pid: i32,
    pub started_at: SystemTime,
}

/// Entry point of `bosun __keeper <dir>`. Called by `main` before any thread or runtime exists.
/// Returns the process exit code: 0 once an exit (or a start error) was recorded in
/// `exit.json`, 1 if even that failed, 2 if the folder already had a keeper (`keeper.pid`
/// exists; nothing was touched).
pub fn main(dir: PathBuf) -> i32 {
    run::main(dir)
}
