//! `bosun __sandbox ...`: the single-threaded side of sandbox creation, run in a fresh process of
//! the agent's binary (unshare of the net/ipc/uts/pid namespaces is per process, and must not
//! touch the agent itself), and `__sandbox init`, the pod's pid-namespace init.
//!
//! Arguments (after `__sandbox`):
//! - `create --dir DIR [--net] [--ipc] [--uts HOSTNAME] [--pid] [--shm-size BYTES]`
//! - `init`

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::sys;

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CreateArgs {
    pub dir: PathBuf,
    pub net: bool,
    pub ipc: bool,
    pub uts: Option<String>,
    pub pid: bool,
    pub shm_size: Option<u64>,
}

impl CreateArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "__sandbox".to_string(),
            "create".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        if self.net {
            a.push("--net".into());
        }
        if self.ipc {
            a.push("--ipc".into());
        }
        if let Some(h) = &self.uts {
            a.push("--uts".into());
            a.push(h.clone());
        }
        if self.pid {
            a.push("--pid".into());
        }
        if let Some(s) = self.shm_size {
            a.push("--shm-size".into());
            a.push(s.to_string());
        }
        a
    }

    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = CreateArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--dir" => out.dir = it.next().ok_or("--dir needs a value")?.into(),
                "--net" => out.net = true,
                "--ipc" => out.ipc = true,
                "--pid" => out.pid = true,
                "--uts" => out.uts = Some(it.next().ok_or("--uts needs a hostname")?.clone()),
                "--shm-size" => {
                    let v = it.next().ok_or("--shm-size needs a value")?;
                    out.shm_size = Some(v.parse().map_err(|e| format!("--shm-size {v}: {e}"))?);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if let Some(h) = &out.uts {
            if h.is_empty() || h.len() > 64 {
                return Err(format!("hostname {h:?}: must be 1 to 64 bytes"));
            }
        }
        if out.dir.as_os_str().is_empty() {
            return Err("--dir is required".into());
        }
        Ok(out)
    }
}

/// Entry point; `args` may start with `__sandbox` or not.
pub(super) fn main(args: Vec<String>) -> i32 {
    let args: Vec<String> = match args.first().map(String::as_str) {
        Some("__sandbox") => args[1..].to_vec(),
        _ => args,
    };
    let result = match args.first().map(String::as_str) {
        Some("create") => CreateArgs::parse(&args[1..]).and_then(|a| create(&a)),
        Some("init") => pod_init(),
        other => Err(format!(
            "usage: __sandbox create --dir DIR [--net] [--ipc] [--uts HOSTNAME] [--pid] \
             [--shm-size BYTES] | __sandbox init (got {other:?})"
        )),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bosun __sandbox: {e}");
            1
        }
    }
}

fn ctx<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Makes `dir` a mount point with shared propagation in a peer group of its own (what `ip netns`
/// does with /run/netns). Shared, not private: a mount namespace copied from the host later (a
/// keeper, a container before its pivot_root, a `unshare -m --propagation slave`) receives our
/// later unmounts, so it cannot keep a pinned namespace alive after the sandbox is gone; and the
/// pins stay plain mounts of the host namespace, visible wherever containers are created.
/// The bind onto itself first (when `dir` is not yet a mount point) joins the parent's peer
/// group; MS_PRIVATE then MS_SHARED moves it into a new group, so our pins do not propagate
/// back under the parent (e.g. /run) in other namespaces.
///
/// Helpers for two pods may run at once: an exclusive flock on `<dir>.lock` keeps them from
/// both bind-mounting `dir` (stacked mounts).
pub(super) fn ensure_shared_root(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(ctx(format!("mkdir {}", dir.display())))?;
    let lock_path = dir.with_extension("lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(ctx(format!("open {}", lock_path.display())))?;
    // Released when dropped at the end of this function.
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("flock {}: {e}", lock_path.display()))?;
    if crate::sys::is_mount_root(dir).map_err(ctx(format!("statx {}", dir.display())))? {
        return Ok(());
    }
    sys::bind(dir, dir, true).map_err(ctx(format!("bind {} onto itself", dir.display())))?;
    sys::set_propagation(dir, MsFlags::MS_PRIVATE)
        .map_err(ctx(format!("make-private {}", dir.display())))?;
    sys::set_propagation(dir, MsFlags::MS_SHARED)
        .map_err(ctx(format!("make-shared {}", dir.display())))?;
    Ok(())
}

fn touch(path: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(|_| ())
        .map_err(ctx(format!("create {}", path.display())))
}

fn create(a: &CreateArgs) -> Result<(), String> {
    let root = a
        .dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", a.dir.display()))?;
    ensure_shared_root(root)?;
    std::fs::create_dir_all(&a.dir).map_err(ctx(format!("mkdir {}", a.dir.display())))?;

    // The new namespaces: this process enters them; the pins keep them alive after it exits.
    let mut flags = CloneFlags::empty();
    let mut pins: Vec<&str> = Vec::new();
    if a.net {
        flags |= CloneFlags::CLONE_NEWNET;
        pins.push("net");
    }
    if a.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
        pins.push("ipc");
    }
    if a.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
        pins.push("uts");
    }
    for ns in &pins {
        touch(&a.dir.join(ns))?;
    }
    if !flags.is_empty() {
        sys::unshare(flags).map_err(ctx("unshare"))?;
    }
    if let Some(h) = &a.uts {
        sys::sethostname(h).map_err(ctx(format!("sethostname {h:?}")))?;
    }
    if a.net {
        // Optional: the CNI loopback plugin does it otherwise.
        if let Err(e) = sys::loopback_up() {
            eprintln!("bosun __sandbox: warning: lo up: {e}");
        }
    }
    for ns in &pins {
        let target = a.dir.join(ns);
        sys::bind(&Path::new("/proc/self/ns").join(ns), &target, false)
            .map_err(ctx(format!("pin {ns} namespace at {}", target.display())))?;
    }

    if let Some(size) = a.shm_size {
        let shm = a.dir.join("shm");
        std::fs::create_dir_all(&shm).map_err(ctx(format!("mkdir {}", shm.display())))?;
        if !sys::is_tmpfs(&shm) {
            sys::mount_shm(&shm, size).map_err(ctx(format!("mount tmpfs {}", shm.display())))?;
        }
    }

    if a.pid {
        spawn_pod_init(&a.dir)?;
    }
    Ok(())
}

/// The pod's pid namespace: unshare(CLONE_NEWPID) makes our next child its pid 1. That child is
/// `<this binary> __sandbox init`, detached from our stdio (the agent reads our pipes to EOF) and
/// in its own process group; we pin its pid namespace and exit without waiting for it, so it is
/// re-parented to the agent (a child subreaper) or to init.
fn spawn_pod_init(dir: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let target = dir.join("pid");
    touch(&target)?;
    sys::unshare(CloneFlags::CLONE_NEWPID).map_err(ctx("unshare pid"))?;
    let exe = std::env::current_exe().map_err(ctx("current_exe"))?;
    let child = Command::new(exe)
        .args(["__sandbox", "init"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(ctx("spawn pod init"))?;
    let pid = child.id();
    // Dropping `child` neither waits nor kills: the process lives on.
    drop(child);
    let src = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    sys::bind(&src, &target, false)
        .map_err(ctx(format!("pin pid namespace at {}", target.display())))?;
    std::fs::write(dir.join("init.pid"), pid.to_string())
        .map_err(ctx(format!("write {}", dir.join("init.pid").display())))?;
    Ok(())
}

/// pid 1 of a pod's pid namespace: reaps zombies, sleeps, exits on SIGTERM/SIGINT.
/// The signals are blocked and taken with sigwait (a blocked signal is queued even for a
/// namespace init without a handler, see kernel `sig_ignored`).
fn pod_init() -> Result<(), String> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let _ = nix::sys::prctl::set_name(c"bosun-pod-init");
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set.thread_block().map_err(ctx("sigprocmask"))?;
    loop {
        // Reap everything that has exited (containers' orphans end up here).
        while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if st == WaitStatus::StillAlive {
                break;
            }
        }
        match set.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return Ok(()),
            Ok(_) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_args_round_trip() {
        let a = CreateArgs {
            dir: "/run/bosun/sandboxes/u".into(),
            net: true,
            ipc: false,
            uts: Some("web-0".into()),
            pid: true,
            shm_size: Some(64 << 20),
        };
        let args = a.to_args();
        assert_eq!(args[0], "__sandbox");
        assert_eq!(args[1], "create");
        assert_eq!(CreateArgs::parse(&args[2..]), Ok(a));
        assert!(CreateArgs::parse(&["--bogus".into()]).is_err());
        assert!(CreateArgs::parse(&[]).is_err());
        let long = "x".repeat(65);
        assert!(CreateArgs::parse(&["--dir".into(), "/d".into(), "--uts".into(), long]).is_err());
    }
}
