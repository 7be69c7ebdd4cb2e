//! Pod sandboxes without a pause image: net, ipc and uts namespaces created once by the helper
//! `bosun __sandbox` and pinned as bind-mounted files, a per-pod /dev/shm tmpfs, an optional pod
//! pid namespace held by a tiny init, and the pod cgroup.
//!
//! Layout of `<run_dir>/sandboxes/<pod_uid>/`:
//! - `user`, `net`, `ipc`, `uts`, `pid`: namespace files (bind mounts of nsfs), each only when
//!   the pod has its own namespace of that kind (with `user`, the others belong to it);
//! - `shm/`: the pod's /dev/shm tmpfs (absent with hostIPC: the host's /dev/shm is used);
//! - `init.pid`: the pid of the pod's pid-namespace init (with `pid`);
//! - `sandbox.json`: the [`Sandbox`], written last: a folder without it is a partial sandbox.
//!
//! `<run_dir>/sandboxes` itself is made a shared mount point in its own peer group (see
//! `helper::ensure_shared_root` for why shared and not private).
//!
//! Namespaces are never created in the agent's own process: [`create`] runs the single-threaded
//! helper (`<helper_binary> __sandbox create ...`) through the reaper. Unmounting, signalling
//! the pod init and cgroup writes happen in the agent (none of them clones or unshares).
//!
//! The pod init is a child of the helper; when the helper exits it is re-parented to the nearest
//! child subreaper (the agent sets `PR_SET_CHILD_SUBREAPER`) and reaped by the reaper when it
//! ends. It lives in the agent's cgroup, not the pod's: on pure v2 the pod cgroup is an inner
//! node (container cgroups below it) and may hold no processes.

mod helper;
mod sys;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::Instrument;

use crate::cgroups::CgroupLayout;
use crate::{PodSecurity, QosClass, RuntimePaths, Sandbox, SandboxSpec};

/// Default size of a pod's /dev/shm.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

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
    #[error("sandbox {pod_uid}: {source}")]
    Sysctl {
        pod_uid: String,
        source: SysctlError,
    },
}

/// A sysctl the sandbox cannot set.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {name:?}: invalid name")]
    InvalidName { name: String },
    #[error("sysctl {name:?} is not known to be namespaced")]
    NotNamespaced { name: String },
    #[error("sysctl {name:?} is in the {ns} namespace, which the pod shares with the host")]
    HostNamespace { name: String, ns: &'static str },
}

/// The namespace a sysctl belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysctlNamespace {
    Net,
    Ipc,
}

/// `net/ipv4/conf/eno2.100/rp_filter` or `net.ipv4.conf.eno2/100.rp_filter` -> the dotted form
/// (the kubelet's `NormalizeName`: a name whose first separator is `/` swaps `.` and `/`).
pub fn sysctl_normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The file of a sysctl below `/proc/sys`: `net.ipv4.conf.eno2/100.rp_filter` ->
/// `net/ipv4/conf/eno2.100/rp_filter`.
pub fn sysctl_path(name: &str) -> PathBuf {
    sysctl_normalize(name)
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect::<String>()
        .into()
}

/// Which of the pod's namespaces holds the sysctl (`net.*`: network; `kernel.shm*`,
/// `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`: IPC), checked against what the pod has of its
/// own: a sysctl is only ever written in a namespace created for the pod.
pub fn sysctl_namespace(
    name: &str,
    own_net: bool,
    own_ipc: bool,
) -> Result<SysctlNamespace, SysctlError> {
    let n = sysctl_normalize(name);
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    // Segments of the file path: no empty, `.` or `..` segment may reach out of /proc/sys.
    let path = sysctl_path(name);
    let path_ok = path
        .to_str()
        .is_some_and(|p| p.split('/').all(segment_ok) && !p.contains(".."));
    if !path_ok {
        return Err(SysctlError::InvalidName {
            name: name.to_string(),
        });
    }
    let ns = if n.starts_with("net.") {
        SysctlNamespace::Net
    } else if n == "kernel.sem"
        || n.starts_with("kernel.shm")
        || n.starts_with("kernel.msg")
        || n.starts_with("fs.mqueue.")
    {
        SysctlNamespace::Ipc
    } else {
        return Err(SysctlError::NotNamespaced {
            name: name.to_string(),
        });
    };
    match ns {
        SysctlNamespace::Net if !own_net => Err(SysctlError::HostNamespace {
            name: name.to_string(),
            ns: "network",
        }),
        SysctlNamespace::Ipc if !own_ipc => Err(SysctlError::HostNamespace {
            name: name.to_string(),
            ns: "IPC",
        }),
        _ => Ok(ns),
    }
}

/// `<run_dir>/sandboxes/<pod_uid>`
pub fn dir(paths: &RuntimePaths, pod_uid: &str) -> PathBuf {
    paths.run_dir.join("sandboxes").join(pod_uid)
}

fn sandboxes_root(paths: &RuntimePaths) -> PathBuf {
    paths.run_dir.join("sandboxes")
}

fn io(pod_uid: &str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let pod_uid = pod_uid.to_string();
    let what = what.into();
    move |source| SandboxError::Io {
        pod_uid,
        what,
        source,
    }
}

/// A pod uid becomes a path component: refuse anything that could escape the folder.
fn check_uid(pod_uid: &str) -> Result<(), SandboxError> {
    let ok = !pod_uid.is_empty()
        && pod_uid != "."
        && pod_uid != ".."
        && pod_uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::Helper {
            pod_uid: pod_uid.into(),
            message: "invalid pod uid for a sandbox folder".into(),
        })
    }
}

/// Creates (idempotently) the pod sandbox. An existing, intact sandbox is returned as is (its
/// cgroup limits updated); a partial or broken one (a pin missing, the pod init gone) is torn
/// down and created again.
pub async fn create(paths: &RuntimePaths, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
    create_with(paths, spec, &PodSecurity::default()).await
}

/// [`create`] with the pod's sysctls and user namespace. Every sysctl is checked before
/// anything is created ([`sysctl_namespace`]); they are written in the new namespaces before
/// the sandbox is returned. An existing sandbox is kept only if it has the same user namespace
/// range.
pub async fn create_with(
    paths: &RuntimePaths,
    spec: &SandboxSpec,
    security: &PodSecurity,
) -> Result<Sandbox, SandboxError> {
    let span = tracing::info_span!(
        "sandbox_create",
        pod = %format!("{}/{}", spec.namespace, spec.name),
        uid = %spec.pod_uid
    );
    create_inner(paths, spec, security).instrument(span).await
}

async fn create_inner(
    paths: &RuntimePaths,
    spec: &SandboxSpec,
    security: &PodSecurity,
) -> Result<Sandbox, SandboxError> {
    let uid = spec.pod_uid.as_str();
    check_uid(uid)?;
    for (name, _) in &security.sysctls {
        sysctl_namespace(name, !spec.host_network, !spec.host_ipc).map_err(|source| {
            SandboxError::Sysctl {
                pod_uid: uid.into(),
                source,
            }
        })?;
    }
    let layout = CgroupLayout::host(&paths.cgroup_root).map_err(|source| SandboxError::Cgroup {
        pod_uid: uid.into(),
        source,
    })?;

    if let Some(existing) = load(paths, uid) {
        if is_intact(&existing) && existing.id_range == security.user_namespace {
            layout
                .ensure_pod(spec.qos, uid, &spec.resources)
                .map_err(|source| SandboxError::Cgroup {
                    pod_uid: uid.into(),
                    source,
                })?;
            tracing::debug!("sandbox already exists");
            return Ok(existing);
        }
        tracing::warn!("sandbox is broken; recreating it");
    }
    if dir(paths, uid).exists() {
        // A pod network set up in it is given back first (CNI DEL releases its IP in the
        // IPAM store even when the namespace is gone), or the rebuilt sandbox leaks an IP.
        if crate::cni::has_state(&dir(paths, uid)) {
            if let Err(e) = crate::cni::teardown(&dir(paths, uid)).await {
                tracing::warn!(error = %e, "cannot tear down the broken sandbox's network");
                // Given back later by the runtime's retries, not lost with the folder.
                let parked = crate::cni::parked_dir(paths);
                if let Err(e) = crate::cni::park(&dir(paths, uid), &parked, uid) {
                    tracing::warn!(error = %e, "cannot keep the pod network's state for a retry");
                }
            }
        }
        remove(paths, uid).await?;
    }

    let root = sandboxes_root(paths);
    std::fs::create_dir_all(&root).map_err(io(uid, format!("mkdir {}", root.display())))?;
    let root = root
        .canonicalize()
        .map_err(io(uid, format!("canonicalize {}", root.display())))?;
    let d = root.join(uid);

    let own_pid = spec.share_pid && !spec.host_pid;
    let args = helper::CreateArgs {
        dir: d.clone(),
        net: !spec.host_network,
        ipc: !spec.host_ipc,
        uts: (!spec.host_network).then(|| spec.hostname.clone()),
        pid: own_pid,
        shm_size: (!spec.host_ipc).then(|| spec.shm_size.unwrap_or(DEFAULT_SHM_SIZE)),
        userns: security.user_namespace,
        sysctls: security.sysctls.clone(),
    };
    let result = run_helper(paths, uid, &args).await.and_then(|()| {
        layout
            .ensure_pod(spec.qos, uid, &spec.resources)
            .map_err(|source| SandboxError::Cgroup {
                pod_uid: uid.into(),
                source,
            })
    });
    let cgroup_parent = match result {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "creating sandbox; cleaning up");
            if let Err(e2) = remove(paths, uid).await {
                tracing::warn!(error = %e2, "cleanup after a failed create");
            }
            return Err(e);
        }
    };

    let sandbox = Sandbox {
        pod_uid: uid.into(),
        dir: d.clone(),
        netns: args.net.then(|| d.join("net")),
        ipcns: args.ipc.then(|| d.join("ipc")),
        utsns: args.uts.is_some().then(|| d.join("uts")),
        pidns: own_pid.then(|| d.join("pid")),
        userns: args.userns.is_some().then(|| d.join("user")),
        id_range: args.userns,
        shm: if spec.host_ipc {
            PathBuf::from("/dev/shm")
        } else {
            d.join("shm")
        },
        cgroup_parent,
        host_pid: spec.host_pid,
    };
    let record = Record {
        sandbox: sandbox.clone(),
        qos: spec.qos,
    };
    if let Err(e) = write_record(&d, &record) {
        let _ = remove(paths, uid).await;
        return Err(io(uid, "write sandbox.json")(e));
    }
    tracing::info!(netns = ?sandbox.netns, pidns = ?sandbox.pidns, "sandbox created");
    Ok(sandbox)
}

/// What `sandbox.json` holds: the [`Sandbox`] plus the QoS class (to find the cgroup again).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(flatten)]
    sandbox: Sandbox,
    qos: QosClass,
}

fn write_record(d: &Path, record: &Record) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let tmp = d.join(".sandbox.json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, d.join("sandbox.json"))
}

fn read_record(paths: &RuntimePaths, pod_uid: &str) -> Option<Record> {
    let text = std::fs::read(dir(paths, pod_uid).join("sandbox.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

async fn run_helper(
    paths: &RuntimePaths,
    uid: &str,
    args: &helper::CreateArgs,
) -> Result<(), SandboxError> {
    let mut cmd = Command::new(&paths.helper_binary);
    cmd.args(args.to_args());
    tracing::debug!(helper = %paths.helper_binary.display(), args = ?args, "running sandbox helper");
    let (exit, _out, err) = crate::reaper::output(&mut cmd)
        .await
        .map_err(io(uid, format!("run {}", paths.helper_binary.display())))?;
    if exit.code() != 0 {
        return Err(SandboxError::Helper {
            pod_uid: uid.into(),
            message: format!(
                "exit {}: {}",
                exit.code(),
                String::from_utf8_lossy(&err).trim()
            ),
        });
    }
    Ok(())
}

/// Every pin is still a namespace file, the shm is still a tmpfs, the pod init still lives.
fn is_intact(s: &Sandbox) -> bool {
    let pins_ok = [&s.userns, &s.netns, &s.ipcns, &s.utsns, &s.pidns]
        .into_iter()
        .flatten()
        .all(|p| sys::is_nsfs(p));
    let shm_ok = s.shm == Path::new("/dev/shm") || sys::is_tmpfs(&s.shm);
    let init_ok = s.pidns.is_none() || live_init(&s.dir).is_some();
    pins_ok && shm_ok && init_ok
}

/// The pod init's pid, if it still runs and is really the pid 1 of the pinned namespace (guards
/// against pid reuse).
fn live_init(d: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(d.join("init.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pinned = d.join("pid");
    if !sys::is_nsfs(&pinned) || is_zombie_or_gone(pid) {
        return None;
    }
    let ns = sys::ns_inode(Path::new(&format!("/proc/{pid}/ns/pid")))?;
    (Some(ns) == sys::ns_inode(&pinned)).then_some(pid)
}

fn is_zombie_or_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may contain one).
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// The sandbox as recorded in `sandbox.json`, if there is one.
pub fn load(paths: &RuntimePaths, pod_uid: &str) -> Option<Sandbox> {
    read_record(paths, pod_uid).map(|r| r.sandbox)
}

/// Pod uids with a sandbox folder (complete or partial), sorted.
pub fn list(paths: &RuntimePaths) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sandboxes_root(paths)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Tears down: stops the pod init process if any, unmounts the namespace files and shm, removes
/// the pod cgroup and the folder. Idempotent; continues past errors and reports the first. The
/// folder is only deleted once nothing is mounted below it any more.
pub async fn remove(paths: &RuntimePaths, pod_uid: &str) -> Result<(), SandboxError> {
    let span = tracing::info_span!("sandbox_remove", uid = pod_uid);
    remove_inner(paths, pod_uid).instrument(span).await
}

async fn remove_inner(paths: &RuntimePaths, pod_uid: &str) -> Result<(), SandboxError> {
    check_uid(pod_uid)?;
    let mut first: Option<SandboxError> = None;
    let mut note = |e: SandboxError| {
        tracing::warn!(error = %e, "removing sandbox");
        if first.is_none() {
            first = Some(e);
        }
    };
    let record = read_record(paths, pod_uid);
    let d = dir(paths, pod_uid);
    let d = d.canonicalize().unwrap_or(d);

    // 1. The pod init first (its identity is checked against the pin, which must still exist).
    if let Some(pid) = live_init(&d) {
        if let Err(e) = stop_init(pid).await {
            note(io(pod_uid, format!("stop pod init {pid}"))(e));
        }
    }

    // 2. Every mount below the folder (pins, shm, and anything a crash left), deepest first.
    if d.exists() {
        let mut mounts: Vec<PathBuf> = sys::mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&d) && m != &d)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        mounts.dedup();
        for m in mounts {
            // Stacked mounts on one point: unmount until it is gone.
            for _ in 0..8 {
                if let Err(e) = sys::unmount(&m) {
                    note(io(pod_uid, format!("unmount {}", m.display()))(
                        std::io::Error::from(e),
                    ));
                    break;
                }
                if !sys::mount_points().contains(&m) {
                    break;
                }
            }
        }
    }

    // 3. The pod cgroup (the recorded QoS class, or every class for a partial sandbox).
    match CgroupLayout::host(&paths.cgroup_root) {
        Ok(layout) => {
            let classes = match &record {
                Some(r) => vec![r.qos],
                None => vec![
                    QosClass::Guaranteed,
                    QosClass::Burstable,
                    QosClass::BestEffort,
                ],
            };
            for qos in classes {
                if let Err(source) = layout.remove_pod(qos, pod_uid) {
                    note(SandboxError::Cgroup {
                        pod_uid: pod_uid.into(),
                        source,
                    });
                }
            }
        }
        Err(source) => note(SandboxError::Cgroup {
            pod_uid: pod_uid.into(),
            source,
        }),
    }

    // 4. The folder, never while something is still mounted in it (remove_dir_all would walk
    //    into a mounted shm and delete the pod's files).
    if d.exists() {
        let still_mounted: Vec<PathBuf> = sys::mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&d))
            .collect();
        if still_mounted.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    note(io(pod_uid, format!("remove {}", d.display()))(e));
                }
            }
        } else {
            note(io(pod_uid, format!("remove {}", d.display()))(
                std::io::Error::other(format!("still mounted: {still_mounted:?}")),
            ));
        }
    }
    first.map_or(Ok(()), Err)
}

/// SIGTERM, up to 2 s for it to end, then SIGKILL and up to 2 s more. The agent (its subreaper)
/// reaps it; a zombie counts as ended.
async fn stop_init(pid: i32) -> std::io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        match kill(Pid::from_raw(pid), sig) {
            Ok(()) => {}
            Err(nix::Error::ESRCH) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for _ in 0..200 {
            if is_zombie_or_gone(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Err(std::io::Error::other("still running after SIGKILL"))
}

/// Unmounts `<run_dir>/sandboxes` (the shared mount point the helper made), once no sandbox is
/// left in it. For tests with a temporary run_dir, and for uninstalling.
pub fn release_root(paths: &RuntimePaths) -> Result<(), SandboxError> {
    let left = list(paths);
    if !left.is_empty() {
        return Err(SandboxError::Helper {
            pod_uid: left.join(","),
            message: "sandboxes remain; not releasing the sandboxes mount point".into(),
        });
    }
    let root = sandboxes_root(paths);
    let root = root.canonicalize().unwrap_or(root);
    while sys::mount_points().contains(&root) {
        sys::unmount(&root)
            .map_err(|e| io("-", format!("unmount {}", root.display()))(std::io::Error::from(e)))?;
    }
    Ok(())
}

/// `bosun __sandbox <args>`: the single-threaded helper (called from main before any thread
/// exists). `args` are the words after `__sandbox` (a leading `__sandbox` is skipped). Returns
/// the process exit code.
pub fn helper_main(args: Vec<String>) -> i32 {
    helper::main(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked() {
        assert!(check_uid("0b7c-11ee_a.b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_uid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zombie_detection_handles_odd_names() {
        assert!(!is_zombie_or_gone(std::process::id() as i32));
        assert!(is_zombie_or_gone(i32::MAX));
    }

    #[test]
    fn record_round_trips_and_list_reads_folders() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = RuntimePaths {
            run_dir: tmp.path().into(),
            data_dir: tmp.path().into(),
            pod_logs_dir: tmp.path().into(),
            container_logs_dir: tmp.path().into(),
            cgroup_root: "/".into(),
            helper_binary: "/bin/false".into(),
            keeper_binary: "/bin/false".into(),
        };
        let d = dir(&paths, "u1");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::create_dir_all(dir(&paths, "u0")).expect("mkdir");
        let s = Sandbox {
            pod_uid: "u1".into(),
            dir: d.clone(),
            netns: Some(d.join("net")),
            ipcns: None,
            utsns: Some(d.join("uts")),
            pidns: None,
            shm: d.join("shm"),
            cgroup_parent: "/kubepods/burstable/podu1".into(),
            host_pid: false,
            userns: None,
            id_range: None,
        };
        write_record(
            &d,
            &Record {
                sandbox: s.clone(),
                qos: QosClass::Burstable,
            },
        )
        .expect("write");
        assert_eq!(load(&paths, "u1"), Some(s));
        assert_eq!(load(&paths, "u0"), None);
        assert_eq!(list(&paths), vec!["u0".to_string(), "u1".to_string()]);
    }
}

#[cfg(test)]
mod sysctl_tests {
    use super::*;

    #[test]
    fn both_separators_name_the_same_file() {
        for (name, path) in [
            (
                "net.ipv4.ip_local_port_range",
                "net/ipv4/ip_local_port_range",
            ),
            (
                "net/ipv4/ip_local_port_range",
                "net/ipv4/ip_local_port_range",
            ),
            (
                "net/ipv4/conf/eno2.100/rp_filter",
                "net/ipv4/conf/eno2.100/rp_filter",
            ),
            (
                "net.ipv4.conf.eno2/100.rp_filter",
                "net/ipv4/conf/eno2.100/rp_filter",
            ),
            ("kernel.shm_rmid_forced", "kernel/shm_rmid_forced"),
        ] {
            assert_eq!(sysctl_path(name), PathBuf::from(path), "{name}");
        }
        assert_eq!(
            sysctl_normalize("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
    }

    #[test]
    fn only_in_the_pods_own_namespaces() {
        use SysctlNamespace as N;
        let ns = |n: &str, net: bool, ipc: bool| sysctl_namespace(n, net, ipc);
        assert_eq!(ns("net.ipv4.tcp_syncookies", true, false), Ok(N::Net));
        assert_eq!(ns("net/core/somaxconn", true, false), Ok(N::Net));
        for ipc in [
            "kernel.shmmax",
            "kernel.shm_rmid_forced",
            "kernel.msgmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
        ] {
            assert_eq!(ns(ipc, false, true), Ok(N::Ipc), "{ipc}");
            assert!(matches!(
                ns(ipc, true, false),
                Err(SysctlError::HostNamespace { .. })
            ));
        }
        assert!(matches!(
            ns("net.core.somaxconn", false, true),
            Err(SysctlError::HostNamespace { ns: "network", .. })
        ));
        for bad in ["kernel.hostname", "vm.swappiness", "fs.file-max"] {
            assert!(
                matches!(ns(bad, true, true), Err(SysctlError::NotNamespaced { .. })),
                "{bad}"
            );
        }
        for bad in [
            "net/../../../etc/passwd",
            "net..x",
            "net.ipv4.",
            "net.a b",
            "",
        ] {
            assert!(
                matches!(ns(bad, true, true), Err(SysctlError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
