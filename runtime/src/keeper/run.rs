//! The keeper's life: set up, start, copy the logs, wait, record the exit, clean up.
//!
//! Order that must hold at the end: the container is dead (reaped), then deleted
//! (its cgroup removed), then the rootfs is unmounted, then leftovers are removed, and only then
//! is `exit.json` written, so that an agent seeing `exit.json` knows nothing is left behind.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;

use super::{attach, payload, user};
use super::{
    KeeperRequest, Started, EXIT_FILE, GO, GO_FD, PID_FILE, REQUEST_FILE, STARTED_FILE, STATUS_FD,
};
use crate::cgroups::{CgroupLayout, CpuQuota};
use crate::logs::{LogWriter, Stream};
use crate::sys::{self, WaitResult};
use crate::ExitInfo;

/// How long the pipes are drained after the container's init exited. Other processes can hold
/// them (a pod sharing the host pid namespace): they are killed by the delete that follows.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the pipes are drained after the delete.
const DRAIN_AFTER_DELETE: Duration = Duration::from_millis(200);
/// Reads per pipe and wake-up, so that a chatty container cannot hide its own exit.
const READS_PER_WAKE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("read request {path}: {source}")]
    ReadRequest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse request {path}: {source}")]
    ParseRequest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount rootfs {path}: {source}")]
    MountRootfs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
    #[error("create log pipes: {0}")]
    Pipes(std::io::Error),
    #[error("create container {id}: {}", chain(source))]
    Create {
        id: String,
        source: LibcontainerError,
    },
    #[error("start container {id}: {}", chain(source))]
    Start {
        id: String,
        source: LibcontainerError,
    },
    #[error("container {id}: receive the terminal: {source}")]
    Console { id: String, source: std::io::Error },
    #[error("container {id}: apply the CPU limit: {source}")]
    CpuLimit {
        id: String,
        source: crate::cgroups::CgroupError,
    },
    #[error("container {id}: {source}")]
    Idmap {
        id: String,
        source: crate::idmap::IdmapError,
    },
    #[error("container {id}: seccomp program {path}: {reason}")]
    Seccomp {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("container {id}: no pid after start")]
    NoPid { id: String },
    #[error("container {id}: not started: the agent gave no go-ahead ({why})")]
    NoGoAhead { id: String, why: String },
    #[error("container {id}: pidfd of {pid}: {source}")]
    Pidfd {
        id: String,
        pid: i32,
        source: std::io::Error,
    },
}

/// An error and its sources, joined: libcontainer's top-level messages alone say little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Takes a descriptor the spawner handed over (closed on exec from here on), if it is open.
/// Must run before this process opens any file, so that `fd` is not some file of ours when the
/// spawner gave none.
fn inherited(fd: i32) -> Option<File> {
    match sys::set_cloexec_raw(fd) {
        // SAFETY: `fd` is open (fcntl succeeded); it was handed to us by the spawner and
        // nothing else in this process owns it, since no file has been opened yet.
        Ok(true) => Some(unsafe { File::from_raw_fd(fd) }),
        _ => None,
    }
}

/// The status pipe on fd 3 (absent when the spawner did not give one).
struct StatusPipe(Option<File>);

impl StatusPipe {
    fn take() -> StatusPipe {
        StatusPipe(inherited(STATUS_FD))
    }

    /// Writes one line and closes the pipe. A reader that went away is not an error.
    fn report(&mut self, line: &str) {
        self.say(line);
        self.0 = None;
    }

    /// Writes one line and keeps the pipe open for the next.
    fn say(&mut self, line: &str) {
        if let Some(f) = self.0.as_mut() {
            let one_line: String = line
                .chars()
                .map(|c| if c == '\n' { ' ' } else { c })
                .collect();
            if let Err(e) = f.write_all(format!("{one_line}\n").as_bytes()) {
                eprintln!("keeper: report status: {e}");
            }
        }
    }
}

/// The go-ahead pipe on fd 4 of a holding keeper (absent when the spawner gave none).
struct GoPipe(Option<File>);

impl GoPipe {
    fn take() -> GoPipe {
        GoPipe(inherited(GO_FD))
    }

    /// Blocks until the spawner sends the go-ahead byte; an error says why it never came.
    fn wait(&mut self) -> Result<(), String> {
        let Some(mut f) = self.0.take() else {
            return Err("no go-ahead pipe".into());
        };
        let mut b = [0u8; 1];
        loop {
            return match f.read(&mut b) {
                Ok(1) if b[0] == GO => Ok(()),
                Ok(0) => Err("the agent closed the pipe".into()),
                Ok(_) => Err(format!("unexpected byte {:#04x}", b[0])),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e.to_string()),
            };
        }
    }
}

/// Writes `path` atomically for readers. No fsync: everything in a container's folder
/// describes this boot only (the run folder is a tmpfs on a node).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    bosun_fsutil::write_atomic(path, bytes, bosun_fsutil::Durability::Volatile)
}

struct Running {
    req: KeeperRequest,
    log: LogWriter,
    pipes: [Option<File>; 2],
    pidfd: OwnedFd,
    pid: i32,
    started_at: SystemTime,
    stdin: Stdin,
    /// The read end of the init's exec failure report.
    report: OwnedFd,
}

/// The container's stdin and the socket it is handed out on (see [`attach`]).
struct Stdin {
    listener: Option<UnixListener>,
    /// The writing end of the stdin pipe, or the terminal's master.
    fd: Option<OwnedFd>,
    /// stdinOnce without a terminal: give our copy up after the first hand-out.
    once: bool,
    dir: PathBuf,
}

impl Stdin {
    /// Answers every pending connection with the stdin descriptor (or nothing once it is gone).
    fn serve(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            let conn = match l.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("keeper: accept on attach socket: {e}");
                    return;
                }
            };
            let Some(fd) = &self.fd else {
                continue;
            };
            if let Err(e) = attach::send_fd(&conn, fd.as_raw_fd()) {
                eprintln!("keeper: hand out stdin: {e}");
                continue;
            }
            if self.once {
                self.close();
                return;
            }
        }
    }

    /// Gives the stdin up: no more sessions get it. The socket file goes first (no new
    /// connection finds it), then the connections already queued are answered with nothing (a
    /// clean EOF: "no stdin") before the listener closes; closing it with connections still
    /// queued would reset them.
    fn close(&mut self) {
        self.fd = None;
        let Some(l) = self.listener.take() else {
            return;
        };
        let _ = std::fs::remove_file(self.dir.join(attach::ATTACH_SOCKET));
        loop {
            match l.accept() {
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

struct Keeper {
    dir: PathBuf,
    id: Option<String>,
    container: Option<Container>,
    /// The container's init pid once built (reaped on cleanup).
    pid: Option<i32>,
    mounted: bool,
    /// Idmapped views of the mount sources (`idmap/<n>`), unmounted on cleanup.
    idmapped: Vec<PathBuf>,
}

pub(super) fn main(dir: PathBuf) -> i32 {
    let mut status = StatusPipe::take();
    let mut go = GoPipe::take();
    sys::ensure_std_fds();
    // libcontainer chdirs into its state folder: every path must be absolute.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    // keeper.pid is created exclusively: a second keeper for the same folder (a confused or
    // retried spawn) must not touch the first one's container, mount or exit.json.
    let pid_file = dir.join(PID_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&pid_file)
    {
        Ok(mut f) => {
            if let Err(e) = f.write_all(format!("{}\n", std::process::id()).as_bytes()) {
                eprintln!("keeper: write {}: {e}", pid_file.display());
            }
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let msg = format!(
                "{} exists: this folder already has a keeper",
                pid_file.display()
            );
            eprintln!("keeper: {msg}");
            status.report(&format!("error {msg}"));
            return 2;
        }
        Err(e) => eprintln!("keeper: write {}: {e}", pid_file.display()),
    }
    let mut k = Keeper {
        dir,
        id: None,
        container: None,
        pid: None,
        mounted: false,
        idmapped: Vec::new(),
    };
    match k.start(&mut status, &mut go) {
        Ok(running) => {
            status.report(&format!("started {}", running.pid));
            drop(status);
            // Every container keeps its keeper for its whole life: hand back what start-up used.
            sys::trim_heap();
            let info = k.supervise(running);
            record(&k.dir, &info)
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("keeper: {msg}");
            k.cleanup();
            let info = ExitInfo {
                code: 128,
                signal: None,
                oom_killed: false,
                started_at: None,
                finished_at: SystemTime::now(),
                start_error: Some(msg.clone()),
            };
            let rc = record(&k.dir, &info);
            status.report(&format!("error {msg}"));
            rc
        }
    }
}

fn record(dir: &Path, info: &ExitInfo) -> i32 {
    let path = dir.join(EXIT_FILE);
    let res = serde_json::to_vec(info)
        .map_err(std::io::Error::other)
        .and_then(|b| write_atomic(&path, &b));
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("keeper: write {}: {e}", path.display());
            1
        }
    }
}

impl Keeper {
    fn rootfs(&self) -> PathBuf {
        self.dir.join("bundle").join("rootfs")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn start(&mut self, status: &mut StatusPipe, go: &mut GoPipe) -> Result<Running, KeeperError> {
        let req_path = self.dir.join(REQUEST_FILE);
        let text = std::fs::read(&req_path).map_err(|source| KeeperError::ReadRequest {
            path: req_path.clone(),
            source,
        })?;
        let mut req: KeeperRequest =
            serde_json::from_slice(&text).map_err(|source| KeeperError::ParseRequest {
                path: req_path.clone(),
                source,
            })?;
        let id = req.spec.id.clone();
        self.id = Some(id.clone());

        if let Err(e) = sys::set_child_subreaper() {
            eprintln!("keeper: set child subreaper: {e}");
        }
        if let Err(e) = sys::reset_signals() {
            eprintln!("keeper: reset signals: {e}");
        }

        let bundle = self.dir.join("bundle");
        let rootfs = self.rootfs();
        let upper = self.dir.join("upper");
        let work = self.dir.join("work");
        let state = self.state_dir();
        for d in [&rootfs, &upper, &work, &state] {
            std::fs::create_dir_all(d).map_err(|source| KeeperError::Prepare {
                path: d.clone(),
                source,
            })?;
        }
        let idmap = |source| KeeperError::Idmap {
            id: id.clone(),
            source,
        };
        // In the pod's user namespace the image's files (owned by host root) must appear owned
        // by the container's root. An overlay mount cannot be idmapped itself, but its lower
        // layers can: each layer is seen through an idmapped view (detached again once the
        // overlay holds it), and the upper layer belongs to the container's root on the host,
        // so its writes land there as that ID.
        let userns = req.sandbox.userns.clone();
        let mut lowers: Vec<PathBuf> = req.layers.iter().rev().cloned().collect();
        let mut views = Vec::new();
        if let (Some(ns), Some(range)) = (&userns, &req.sandbox.id_range) {
            for p in lowers.iter().chain([&rootfs]) {
                crate::idmap::check_searchable(p).map_err(idmap)?;
            }
            let base = self.dir.join("idmap");
            for (i, layer) in lowers.iter_mut().enumerate() {
                let view = base.join(format!("layer-{i}"));
                crate::idmap::bind(layer, &view, ns).map_err(idmap)?;
                views.push(view.clone());
                self.idmapped.push(view.clone());
                *layer = view;
            }
            for d in [&upper, &rootfs] {
                nix::unistd::chown(
                    d.as_path(),
                    Some(range.first.into()),
                    Some(range.first.into()),
                )
                .map_err(|e| KeeperError::Prepare {
                    path: d.to_path_buf(),
                    source: e.into(),
                })?;
            }
        }
        let lower: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        sys::mount_overlay(&lower, &upper, &work, &rootfs).map_err(|source| {
            KeeperError::MountRootfs {
                path: rootfs.clone(),
                source,
            }
        })?;
        self.mounted = true;
        for v in views {
            // The overlay holds the views; nothing else needs them mounted.
            if nix::mount::umount2(&v, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                self.idmapped.retain(|m| *m != v);
            }
        }
        if let Some(ns) = &userns {
            if req.security.idmap_mounts {
                // The volumes too (what the kubelet asks for every mount of such a pod), but
                // those the agent wants bound as they are (hostPath).
                let base = self.dir.join("idmap");
                for (i, m) in req.spec.mounts.iter_mut().enumerate() {
                    if req.security.plain_mounts.contains(&m.destination) {
                        continue;
                    }
                    let target = base.join(i.to_string());
                    crate::idmap::bind(&m.source, &target, ns).map_err(idmap)?;
                    self.idmapped.push(target.clone());
                    m.source = target;
                }
            }
            for m in req.spec.mounts.iter().filter(|m| m.source.is_absolute()) {
                crate::idmap::check_searchable(&m.source).map_err(idmap)?;
            }
        }

        let who = user::resolve_in_root(
            &rootfs,
            &req.spec.user,
            &req.spec.security.supplemental_groups,
        )?;
        // The CPU limit applies from the container's own start (below, before `start()`), not
        // to libcontainer's set-up of it (mounts, namespaces, capabilities), which runs in the
        // container's cgroup: throttled to a 100m limit, that set-up alone took ~100 ms.
        // The request keeps no quota from here on (nothing later reads it).
        let cpu_limit = CpuQuota::of(&req.spec.resources);
        if cpu_limit.is_some() {
            req.spec.resources.cpu_quota = None;
            req.spec.resources.cpu_period = None;
        }
        let spec = crate::spec::build(&req, who.uid, who.gid, who.additional_gids)?;
        if let Some(f) = &req.seccomp {
            // The filter compiled once (seccomp::Filters): libcontainer loads the program
            // instead of compiling the filter again; exec helpers find it beside config.json.
            let fail = |reason: String| KeeperError::Seccomp {
                id: id.clone(),
                path: f.program.clone(),
                reason,
            };
            let program = std::fs::read(&f.program).map_err(|e| fail(e.to_string()))?;
            let filter = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
            if let Some(filter) = filter {
                libcontainer::seccomp::set_precompiled(filter, &program)
                    .map_err(|e| fail(e.to_string()))?;
            }
            let copy = bundle.join(crate::exec::SECCOMP_PROGRAM);
            std::fs::hard_link(&f.program, &copy)
                .or_else(|_| std::fs::write(&copy, &program))
                .map_err(|e| fail(format!("{}: {e}", copy.display())))?;
        }
        let config = bundle.join("config.json");
        serde_json::to_vec_pretty(&spec)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomic(&config, &b))
            .map_err(|source| KeeperError::Write {
                path: config.clone(),
                source,
            })?;

        let log = LogWriter::open(&req.log_path, req.log_max_size, req.log_max_files)?;
        let tty = req.spec.tty;
        let prepare = |path: PathBuf| move |source| KeeperError::Prepare { path, source };
        // stdio: pipes to the log (and for stdin, a pipe the keeper hands out), or a terminal
        // that libcontainer creates inside the container and sends us through a socket.
        let (stdio, console, stdin_w) = if tty {
            let l = attach::bind(&self.dir, attach::CONSOLE_SOCKET)
                .map_err(prepare(self.dir.join(attach::CONSOLE_SOCKET)))?;
            (None, Some(l), None)
        } else {
            let (out_r, out_w) = sys::pipe().map_err(KeeperError::Pipes)?;
            let (err_r, err_w) = sys::pipe().map_err(KeeperError::Pipes)?;
            let (stdin, stdin_w) = if req.spec.stdin {
                let (r, w) = sys::pipe().map_err(KeeperError::Pipes)?;
                (r, Some(w))
            } else {
                let f = File::open("/dev/null").map_err(prepare("/dev/null".into()))?;
                (OwnedFd::from(f), None)
            };
            (Some((stdin, out_w, err_w, out_r, err_r)), None, stdin_w)
        };
        let attach_listener = if req.spec.stdin || tty {
            Some(
                attach::bind(&self.dir, attach::ATTACH_SOCKET)
                    .map_err(prepare(self.dir.join(attach::ATTACH_SOCKET)))?,
            )
        } else {
            None
        };
        let (child_stdio, out_pipes) = match stdio {
            Some((i, o, e, out_r, err_r)) => (Some((i, o, e)), Some((out_r, err_r))),
            None => (None, None),
        };
        let console_path = self.dir.join(attach::CONSOLE_SOCKET);
        let own_oom = sys::own_oom_score_adj().ok();
        // Where the init tells why the payload could not be exec'd (see `payload`).
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| KeeperError::Pipes(e.into()))?;
        let executor = payload::ReportingExecutor::new(&report_w);

        let built = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&state)
            .and_then(|b| {
                match child_stdio {
                    Some((i, o, e)) => b.with_stdin(i).with_stdout(o).with_stderr(e),
                    None => b.with_console_socket(Some(&console_path)),
                }
                .validate_id()
            })
            .and_then(|b| {
                b.with_executor(executor)
                    .as_init(&bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
            });
        // Only the init (a clone) writes the report from here on.
        drop(report_w);
        // The clone is done: from here on the keeper must not die of a closed status pipe.
        if let Err(e) = sys::ignore_signal(libc::SIGPIPE) {
            eprintln!("keeper: ignore SIGPIPE: {e}");
        }
        // libcontainer wrote the container's oomScoreAdj into our own; put ours back where
        // allowed (lowering needs CAP_SYS_RESOURCE).
        if let Some(v) = own_oom {
            if sys::own_oom_score_adj().ok() != Some(v) {
                if let Err(e) = sys::set_own_oom_score_adj(v) {
                    eprintln!("keeper: restore own oom_score_adj {v}: {e}");
                }
            }
        }
        let container = built.map_err(|source| KeeperError::Create {
            id: id.clone(),
            source,
        })?;
        self.pid = container.pid().map(|p| p.as_raw());
        let container = self.container.insert(container);
        if let Some(limit) = cpu_limit {
            match &req.cpu_cgroup {
                Some(c) => c.set_quota(Some(limit)),
                None => CgroupLayout::detect("/")
                    .and_then(|l| l.set_cpu_quota(&req.cgroup_path, Some(limit))),
            }
            .map_err(|source| KeeperError::CpuLimit {
                id: id.clone(),
                source,
            })?;
        }
        // The terminal's master arrived during build(), before the process runs.
        let master = match console {
            Some(l) => {
                let m = receive_console(&l).map_err(|source| KeeperError::Console {
                    id: id.clone(),
                    source,
                })?;
                let _ = std::fs::remove_file(&console_path);
                Some(m)
            }
            None => None,
        };
        if req.hold {
            // Built: the agent finishes the pod's network meanwhile and then lets it run.
            status.say(&format!("created {}", self.pid.unwrap_or(0)));
            go.wait().map_err(|why| KeeperError::NoGoAhead {
                id: id.clone(),
                why,
            })?;
        }
        drop(go.0.take());
        container.start().map_err(|source| KeeperError::Start {
            id: id.clone(),
            source,
        })?;
        let pid = container
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| KeeperError::NoPid { id: id.clone() })?;
        self.pid = Some(pid);
        let pidfd = sys::pidfd_open(pid).map_err(|source| KeeperError::Pidfd {
            id: id.clone(),
            pid,
            source,
        })?;
        let started_at = SystemTime::now();
        let started = self.dir.join(STARTED_FILE);
        serde_json::to_vec(&Started { pid, started_at })
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomic(&started, &b))
            .map_err(|source| KeeperError::Write {
                path: started.clone(),
                source,
            })?;
        // With a terminal, its master is the output (stdout) and the stdin handed out.
        let (pipes, stdin) = match (out_pipes, master) {
            (Some((out_r, err_r)), _) => {
                ([Some(File::from(out_r)), Some(File::from(err_r))], stdin_w)
            }
            (None, Some(m)) => {
                let input = m.try_clone().map_err(|source| KeeperError::Console {
                    id: id.clone(),
                    source,
                })?;
                ([Some(File::from(m)), None], Some(input))
            }
            (None, None) => ([None, None], None),
        };
        for f in pipes.iter().flatten() {
            if let Err(e) = sys::set_nonblocking(f.as_fd()) {
                eprintln!("keeper: non-blocking pipe: {e}");
            }
        }
        let stdin = Stdin {
            listener: attach_listener,
            fd: stdin,
            once: req.spec.stdin_once && !tty,
            dir: self.dir.clone(),
        };
        if let Some(l) = &stdin.listener {
            if let Err(e) = l.set_nonblocking(true) {
                eprintln!("keeper: non-blocking attach socket: {e}");
            }
        }
        Ok(Running {
            req,
            log,
            pipes,
            pidfd,
            pid,
            started_at,
            stdin,
            report: report_r,
        })
    }

    /// Copies the output until the container's init exits, then records and cleans up.
    fn supervise(&mut self, run: Running) -> ExitInfo {
        let Running {
            req,
            mut log,
            mut pipes,
            pidfd,
            pid,
            started_at,
            mut stdin,
            report,
        } = run;
        let mut buf = vec![0u8; 64 * 1024];
        let mut log_failed = false;
        let result = loop {
            let open: Vec<usize> = (0..2).filter(|i| pipes[*i].is_some()).collect();
            let mut fds: Vec<BorrowedFd> = vec![pidfd.as_fd()];
            fds.extend(
                open.iter()
                    .filter_map(|i| pipes[*i].as_ref().map(|f| f.as_fd())),
            );
            let attach_at = fds.len();
            if let Some(l) = &stdin.listener {
                fds.push(l.as_fd());
            }
            // The timeout also reaps orphans re-parented to us (we are a subreaper).
            let ready = match sys::poll(&fds, Some(Duration::from_secs(5))) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("keeper: poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    vec![sys::Ready::default(); fds.len()]
                }
            };
            for (n, i) in open.iter().enumerate() {
                let r = ready[n + 1];
                if r.readable || r.hangup {
                    pump(&mut pipes, *i, &mut log, &mut buf, &mut log_failed);
                }
            }
            if ready.get(attach_at).is_some_and(|r| r.readable) {
                stdin.serve();
            }
            if let Some(r) = reap(pid) {
                break r;
            }
        };
        stdin.close();
        drop(pidfd);
        let finished_at = SystemTime::now();
        drain(
            &mut pipes,
            &mut log,
            &mut buf,
            &mut log_failed,
            DRAIN_AFTER_EXIT,
        );

        let (code, signal) = match result {
            WaitResult::Exited(c) => (c, None),
            WaitResult::Signaled(s) => (128 + s, Some(s)),
            WaitResult::Running => (255, None),
        };
        // The payload never ran: the init could not exec it.
        let start_error = payload::read_report(report);
        let (code, signal) = match &start_error {
            Some(msg) => {
                eprintln!("keeper: {msg}");
                (payload::START_ERROR_CODE, None)
            }
            None => (code, signal),
        };
        // Read before the delete removes the cgroup. A shell that relays its child's SIGKILL
        // exits with 137 as well: both count.
        let ooms = crate::cgroups::oom_kill_count(&req.cgroup_path).unwrap_or(0);
        let oom_killed = ooms > 0 && code == 128 + libc::SIGKILL;

        self.delete();
        drain(
            &mut pipes,
            &mut log,
            &mut buf,
            &mut log_failed,
            DRAIN_AFTER_DELETE,
        );
        for s in [Stream::Stdout, Stream::Stderr] {
            if let Err(e) = log.finish(s) {
                eprintln!("keeper: {e}");
            }
        }
        drop(pipes);
        self.unmount();
        self.remove_leftovers();
        reap_orphans();
        ExitInfo {
            code,
            signal,
            oom_killed,
            started_at: start_error.is_none().then_some(started_at),
            finished_at,
            start_error,
        }
    }

    /// Deletes the container (killing what is left in its cgroup, removing the cgroup and its
    /// state folder) and reaps its init if it was never waited for.
    fn delete(&mut self) {
        if let Some(mut c) = self.container.take() {
            if let Err(e) = c.delete(true) {
                eprintln!("keeper: delete container {}: {}", c.id(), chain(&e));
            }
        } else if let Some(id) = &self.id {
            // A build that failed before libcontainer could clean up after itself.
            let root = self.state_dir().join(id);
            if root.exists() {
                match Container::load(root.clone()) {
                    Ok(mut c) => {
                        if let Err(e) = c.delete(true) {
                            eprintln!("keeper: delete container {id}: {}", chain(&e));
                        }
                    }
                    Err(e) => eprintln!("keeper: load container {id}: {}", chain(&e)),
                }
                if root.exists() {
                    let _ = std::fs::remove_dir_all(&root);
                }
            }
        }
        if let Some(pid) = self.pid.take() {
            // Bounded: the delete sent SIGKILL.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match sys::try_wait(pid) {
                    Ok(Some((_, WaitResult::Running))) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }

    fn unmount(&mut self) {
        for m in std::mem::take(&mut self.idmapped) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("keeper: unmount {}: {e}", m.display());
            }
        }
        if self.mounted {
            let rootfs = self.rootfs();
            match sys::unmount(&rootfs) {
                Ok(()) => self.mounted = false,
                Err(e) => eprintln!("keeper: unmount {}: {e}", rootfs.display()),
            }
        }
    }

    /// Removes `tenant-notify-*.sock` files exec left in the state folder (normally gone with
    /// the delete already).
    fn remove_leftovers(&self) {
        let Some(id) = &self.id else { return };
        crate::exec::remove_tenant_sockets(&self.state_dir().join(id));
    }

    /// After a failed start: nothing may be left running, mounted or in a cgroup.
    fn cleanup(&mut self) {
        self.delete();
        self.unmount();
        self.remove_leftovers();
        reap_orphans();
    }
}

/// Reads what a pipe has now into the log; closes it at EOF.
fn pump(
    pipes: &mut [Option<File>; 2],
    i: usize,
    log: &mut LogWriter,
    buf: &mut [u8],
    log_failed: &mut bool,
) {
    let stream = if i == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    let Some(f) = pipes[i].as_mut() else { return };
    let mut eof = false;
    for _ in 0..READS_PER_WAKE {
        match f.read(buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                if let Err(e) = log.write(stream, &buf[..n]) {
                    // Keep reading (or the container blocks on a full pipe); say it once.
                    if !*log_failed {
                        eprintln!("keeper: {e}");
                        *log_failed = true;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A terminal's master reads EIO once no process holds the terminal: its EOF.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                eof = true;
                break;
            }
            Err(e) => {
                eprintln!("keeper: read {}: {e}", stream.as_str());
                eof = true;
                break;
            }
        }
    }
    if eof {
        pipes[i] = None;
        if let Err(e) = log.finish(stream) {
            eprintln!("keeper: {e}");
        }
    }
}

/// Reads the pipes until both reach EOF or `bound` has passed.
fn drain(
    pipes: &mut [Option<File>; 2],
    log: &mut LogWriter,
    buf: &mut [u8],
    log_failed: &mut bool,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    loop {
        let open: Vec<usize> = (0..2).filter(|i| pipes[*i].is_some()).collect();
        let now = Instant::now();
        if open.is_empty() || now >= deadline {
            return;
        }
        let fds: Vec<BorrowedFd> = open
            .iter()
            .filter_map(|i| pipes[*i].as_ref().map(|f| f.as_fd()))
            .collect();
        let ready = sys::poll(&fds, Some(deadline - now)).unwrap_or_default();
        for (n, i) in open.iter().enumerate() {
            if ready.get(n).is_some_and(|r| r.readable || r.hangup) {
                pump(pipes, *i, log, buf, log_failed);
            }
        }
    }
}

/// Reaps every exited child; returns how the container's init ended if it was among them.
fn reap(pid: i32) -> Option<WaitResult> {
    let mut found = None;
    loop {
        match sys::try_wait(-1) {
            Ok(Some((p, r))) if r != WaitResult::Running => {
                if p == pid {
                    found = Some(r);
                }
            }
            Ok(Some(_)) => return found,
            Ok(None) => {
                // No child at all: the init was reaped without us, which cannot happen unless
                // something else waits in this process. Record an unknown exit.
                if found.is_none() {
                    eprintln!("keeper: container pid {pid} is no longer our child");
                    return Some(WaitResult::Running);
                }
                return found;
            }
            Err(e) => {
                eprintln!("keeper: waitpid: {e}");
                return found;
            }
        }
    }
}

/// Reaps orphans that already exited (we are a subreaper).
fn reap_orphans() {
    while let Ok(Some((_, r))) = sys::try_wait(-1) {
        if r == WaitResult::Running {
            break;
        }
    }
}

/// Accepts libcontainer's connection on the console socket and takes the terminal's master
/// from it (sent during `build()`, so it is already queued; bounded all the same).
fn receive_console(l: &UnixListener) -> std::io::Result<OwnedFd> {
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match l.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                return attach::recv_fd(&conn)?.ok_or_else(|| {
                    std::io::Error::other("the console socket closed without a terminal")
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "no terminal on the console socket",
                    ));
                }
                let _ = sys::poll(&[l.as_fd()], Some(deadline - now));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
