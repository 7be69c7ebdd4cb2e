//! `bosun __sandbox ...`: the single-threaded side of sandbox creation, run in a fresh process of
//! the agent's binary (unshare of the net/ipc/uts/pid namespaces is per process, and must not
//! touch the agent itself), and `__sandbox init`, the pod's pid-namespace init.
//!
//! Arguments (after `__sandbox`):
//! - `create --dir DIR [--net] [--ipc] [--uts HOSTNAME] [--pid] [--shm-size BYTES]
//!   [--userns FIRST:LEN] [--sysctl NAME=VALUE]...`
//! - `init`
//!
//! With `--userns` a child process creates the pod's user namespace first (this process, root
//! in the host's, writes its `0 FIRST LEN` uid and gid maps) and then, inside it, the net, ipc,
//! uts and pid namespaces, so that the user namespace owns them; this process pins them all
//! from `/proc/<child>/ns/`. Sysctls are written by whichever process is in the new namespaces,
//! before any container exists.

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
    pub userns: Option<crate::userns::IdRange>,
    pub sysctls: Vec<(String, String)>,
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
        if let Some(r) = &self.userns {
            a.push("--userns".into());
            a.push(format!("{}:{}", r.first, r.len));
        }
        for (k, v) in &self.sysctls {
            a.push("--sysctl".into());
            a.push(format!("{k}={v}"));
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
                "--userns" => {
                    let v = it.next().ok_or("--userns needs FIRST:LEN")?;
                    let (f, l) = v.split_once(':').ok_or("--userns needs FIRST:LEN")?;
                    let num = |x: &str| x.parse::<u32>().map_err(|e| format!("--userns {v}: {e}"));
                    out.userns = Some(crate::userns::IdRange {
                        first: num(f)?,
                        len: num(l)?,
                    });
                }
                "--sysctl" => {
                    let v = it.next().ok_or("--sysctl needs NAME=VALUE")?;
                    let (k, val) = v.split_once('=').ok_or("--sysctl needs NAME=VALUE")?;
                    out.sysctls.push((k.to_string(), val.to_string()));
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
        for (k, _) in &out.sysctls {
            super::sysctl_namespace(k, out.net, out.ipc).map_err(|e| e.to_string())?;
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
             [--shm-size BYTES] [--userns FIRST:LEN] [--sysctl NAME=VALUE]... | \
             __sandbox init (got {other:?})"
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

    let mut pins: Vec<&str> = Vec::new();
    if a.userns.is_some() {
        pins.push("user");
    }
    if a.net {
        pins.push("net");
    }
    if a.ipc {
        pins.push("ipc");
    }
    if a.uts.is_some() {
        pins.push("uts");
    }
    for ns in &pins {
        touch(&a.dir.join(ns))?;
    }
    if a.pid {
        touch(&a.dir.join("pid"))?;
    }

    // The process in the new namespaces: this one, or with a user namespace a child (this
    // process must stay root in the host's to write the ID maps and pin the namespaces).
    let (holder, init_pid, child) = match &a.userns {
        None => (None, enter(a)?, None),
        Some(range) => {
            let child = UsernsChild::spawn(range, a)?;
            (Some(child.pid), child.init_pid, Some(child))
        }
    };
    let proc_ns = match holder {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns")),
        None => PathBuf::from("/proc/self/ns"),
    };
    for ns in &pins {
        let target = a.dir.join(ns);
        sys::bind(&proc_ns.join(ns), &target, false)
            .map_err(ctx(format!("pin {ns} namespace at {}", target.display())))?;
    }
    if let Some(pid) = init_pid {
        let target = a.dir.join("pid");
        let src = PathBuf::from(format!("/proc/{pid}/ns/pid"));
        sys::bind(&src, &target, false)
            .map_err(ctx(format!("pin pid namespace at {}", target.display())))?;
        std::fs::write(a.dir.join("init.pid"), pid.to_string())
            .map_err(ctx(format!("write {}", a.dir.join("init.pid").display())))?;
    }
    if let Some(c) = child {
        c.finish()?;
    }

    if let Some(size) = a.shm_size {
        let shm = a.dir.join("shm");
        std::fs::create_dir_all(&shm).map_err(ctx(format!("mkdir {}", shm.display())))?;
        if !sys::is_tmpfs(&shm) {
            sys::mount_shm(&shm, size).map_err(ctx(format!("mount tmpfs {}", shm.display())))?;
        }
    }

    Ok(())
}

/// Enters the pod's new net/ipc/uts namespaces, sets the hostname, brings `lo` up, writes the
/// sysctls and starts the pod init (returned) when the pod has a pid namespace.
fn enter(a: &CreateArgs) -> Result<Option<u32>, String> {
    let mut flags = CloneFlags::empty();
    if a.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if a.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if a.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
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
    // /proc/sys/net and the IPC sysctls are those of the writer's namespaces: ours, new.
    for (k, v) in &a.sysctls {
        super::sysctl_namespace(k, a.net, a.ipc).map_err(|e| e.to_string())?;
        let path = Path::new("/proc/sys").join(super::sysctl_path(k));
        std::fs::write(&path, v).map_err(ctx(format!("sysctl {k}={v} ({})", path.display())))?;
    }
    if a.pid {
        return spawn_pod_init().map(Some);
    }
    Ok(None)
}

/// The child that creates the pod's user namespace and the others inside it. It reports on a
/// pipe: `u` once it has its user namespace (we write its maps), then `ok <init pid>` or
/// `error <message>` once its namespaces are set up; it exits when we close our end of the
/// second pipe (once everything is pinned).
struct UsernsChild {
    pid: i32,
    init_pid: Option<u32>,
    report: std::fs::File,
    done: Option<std::os::fd::OwnedFd>,
}

impl UsernsChild {
    fn spawn(range: &crate::userns::IdRange, a: &CreateArgs) -> Result<UsernsChild, String> {
        use std::io::{BufRead, Read, Write};
        let (report_r, report_w) = nix::unistd::pipe().map_err(ctx("pipe"))?;
        let (go_r, go_w) = nix::unistd::pipe().map_err(ctx("pipe"))?;
        // SAFETY: this helper is single-threaded; the child only makes syscalls, writes to its
        // pipes and exits with _exit.
        match unsafe { nix::unistd::fork() }.map_err(ctx("fork"))? {
            nix::unistd::ForkResult::Child => {
                drop(report_r);
                drop(go_w);
                let mut out = std::fs::File::from(report_w);
                let mut go = std::fs::File::from(go_r);
                let result = (|| -> Result<Option<u32>, String> {
                    sys::unshare(CloneFlags::CLONE_NEWUSER).map_err(ctx("unshare user"))?;
                    out.write_all(b"u").map_err(ctx("report"))?;
                    let mut b = [0u8; 1];
                    go.read_exact(&mut b).map_err(ctx("wait for the ID maps"))?;
                    // Container root: the pod init and the pins' owner are not host root.
                    nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                        .map_err(ctx("setgid 0"))?;
                    nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                        .map_err(ctx("setuid 0"))?;
                    enter(a)
                })();
                let line = match result {
                    Ok(init) => format!("ok {}\n", init.unwrap_or(0)),
                    Err(e) => format!("error {e}\n"),
                };
                let _ = out.write_all(line.as_bytes());
                drop(out);
                // Held until the parent has pinned our namespaces (it closes the pipe).
                let _ = go.read(&mut [0u8; 1]);
                // SAFETY: _exit ends the forked child without running the parent's cleanup.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(report_w);
                drop(go_r);
                let pid = child.as_raw();
                let mut report = std::fs::File::from(report_r);
                let mut go = std::fs::File::from(go_w);
                let fail = |e: String| {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(child, None);
                    e
                };
                let mut b = [0u8; 1];
                report
                    .read_exact(&mut b)
                    .map_err(|e| fail(format!("user namespace child: {e}")))?;
                let line = range.map_line();
                for (file, text) in [("uid_map", &line), ("gid_map", &line)] {
                    let p = format!("/proc/{pid}/{file}");
                    std::fs::write(&p, text)
                        .map_err(|e| fail(format!("write {p} {text:?}: {e}")))?;
                }
                go.write_all(b"m")
                    .map_err(|e| fail(format!("user namespace child: {e}")))?;
                let mut reader = std::io::BufReader::new(&mut report);
                let mut status = String::new();
                reader
                    .read_line(&mut status)
                    .map_err(|e| fail(format!("user namespace child: {e}")))?;
                let status = status.trim();
                let init_pid = match status.strip_prefix("ok ") {
                    Some(n) => n.parse::<u32>().ok().filter(|p| *p != 0),
                    None => {
                        let why = status.strip_prefix("error ").unwrap_or(status);
                        return Err(fail(format!("in the pod's user namespace: {why}")));
                    }
                };
                Ok(UsernsChild {
                    pid,
                    init_pid,
                    report,
                    done: Some(go.into()),
                })
            }
        }
    }

    /// Lets the child exit and reaps it.
    fn finish(mut self) -> Result<(), String> {
        drop(self.done.take());
        drop(self.report);
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None)
            .map(|_| ())
            .map_err(ctx("wait for the user namespace child"))
    }
}

/// The pod's pid namespace: unshare(CLONE_NEWPID) makes our next child its pid 1. That child is
/// `<this binary> __sandbox init`, detached from our stdio (the agent reads our pipes to EOF) and
/// in its own process group; the caller pins its pid namespace and we exit without waiting for
/// it, so it is re-parented to the agent (a child subreaper) or to init.
fn spawn_pod_init() -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
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
    Ok(pid)
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
            ipc: true,
            uts: Some("web-0".into()),
            pid: true,
            shm_size: Some(64 << 20),
            userns: Some(crate::userns::IdRange {
                first: 65536,
                len: 65536,
            }),
            sysctls: vec![
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                ("kernel/shmmax".into(), "1=2".into()),
            ],
        };
        let args = a.to_args();
        assert_eq!(args[0], "__sandbox");
        assert_eq!(args[1], "create");
        assert_eq!(CreateArgs::parse(&args[2..]).as_ref(), Ok(&a));
        assert!(CreateArgs::parse(&["--bogus".into()]).is_err());
        // A sysctl of a namespace the pod shares with the host never reaches the helper's writes.
        let host_ipc = CreateArgs { ipc: false, ..a };
        assert!(CreateArgs::parse(&host_ipc.to_args()[2..]).is_err());
        assert!(CreateArgs::parse(&[]).is_err());
        let long = "x".repeat(65);
        assert!(CreateArgs::parse(&["--dir".into(), "/d".into(), "--uts".into(), long]).is_err());
    }
}
