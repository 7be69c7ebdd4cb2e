//! Running a command inside a running container (exec hooks and probes) through the
//! single-threaded helper `bosun __exec` (libcontainer's tenant path clones without exec).
//!
//! `bosun __exec [--stdin] [--tty] <state_root> <id> <cwd-or-empty> -- argv...`: joins container `id`
//! whose libcontainer state lives in `<state_root>/<id>`, runs `argv` there with the container's
//! own environment, user and (unless `cwd` is given) working folder, stdin `/dev/null` (the
//! helper's own stdin with `--stdin`) and the helper's stdout/stderr, waits for it and exits with
//! its code (128 + signal if signalled).
//! If fd 3 is open it receives one line: `pid <host pid>` once the command runs (so the agent
//! can kill it on timeout) or `error <message>`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};

/// The hidden subcommand of the agent binary that runs [`helper_main`].
pub const EXEC_SUBCOMMAND: &str = "__exec";
/// The fd on which the helper reports `pid <n>` or `error <msg>`.
pub const STATUS_FD: i32 = 3;
/// Exit code of the helper when it could not run the command at all.
pub const HELPER_FAILED: i32 = 126;
/// The container's compiled seccomp program, beside `config.json` in its bundle (written by
/// its keeper): an exec'd process runs under the container's filter without compiling it.
pub const SECCOMP_PROGRAM: &str = "seccomp.bpf";

/// Parsed arguments of `__exec`.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    state_root: PathBuf,
    id: String,
    cwd: Option<PathBuf>,
    argv: Vec<String>,
    /// Give the command the helper's stdin instead of `/dev/null`.
    stdin: bool,
    /// The helper's stdin is a terminal: make it the controlling terminal of a new session
    /// first, so the terminal's signals (^C) reach the command.
    tty: bool,
}

/// The flag of `__exec` for a terminal on stdin/stdout/stderr (implies `--stdin`).
pub const TTY_FLAG: &str = "--tty";

/// The flag of `__exec` that passes the helper's stdin to the command.
pub const STDIN_FLAG: &str = "--stdin";

fn parse_args(mut args: Vec<String>) -> Result<Args, String> {
    // Accept the full argv too: skip a program name and the subcommand if present.
    if let Some(i) = args.iter().take(2).position(|a| a == EXEC_SUBCOMMAND) {
        args.drain(..=i);
    }
    let (mut stdin, mut tty) = (false, false);
    while let Some(flag) = args.first() {
        match flag.as_str() {
            STDIN_FLAG => stdin = true,
            TTY_FLAG => tty = true,
            _ => break,
        }
        args.remove(0);
    }
    let sep = args
        .iter()
        .position(|a| a == "--")
        .ok_or("usage: __exec <state_root> <id> <cwd-or-empty> -- argv...")?;
    if sep != 3 {
        return Err("usage: __exec <state_root> <id> <cwd-or-empty> -- argv...".into());
    }
    let argv: Vec<String> = args[sep + 1..].to_vec();
    if argv.is_empty() {
        return Err("empty command".into());
    }
    Ok(Args {
        state_root: PathBuf::from(&args[0]),
        id: args[1].clone(),
        cwd: (!args[2].is_empty()).then(|| PathBuf::from(&args[2])),
        argv,
        stdin: stdin || tty,
        tty,
    })
}

/// Entry point of `bosun __exec`. Must be called before any thread or runtime exists.
/// Returns the process exit code.
pub fn helper_main(args: Vec<String>) -> i32 {
    let mut status = status_pipe();
    let mut report = |line: &str| {
        if let Some(f) = status.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    };
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            report(&format!("error {e}"));
            eprintln!("exec: {e}");
            return HELPER_FAILED;
        }
    };
    reset_signals();
    if args.tty {
        if let Err(e) = crate::sys::make_controlling_tty(std::io::stdin().as_fd()) {
            report(&format!("error controlling terminal: {e}"));
            return HELPER_FAILED;
        }
    }
    let container_dir = args.state_root.join(&args.id);
    // Execs into one container take turns through build(): each leaves a notify socket that is
    // only in use during its own build(), so while holding the lock every socket present is a
    // leftover that can go.
    let lock = exec_lock(&args.state_root, &args.id);
    let started = run(&args, &container_dir);
    remove_tenant_sockets(&container_dir);
    drop(lock);
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            report(&format!("error {}", e.replace('\n', " ")));
            eprintln!("exec: {e}");
            return HELPER_FAILED;
        }
    };
    report(&format!("pid {pid}"));
    drop(status);
    if args.tty {
        // ^C and friends on the terminal are for the command, not for this helper.
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTSTP] {
            let _ = crate::sys::ignore_signal(sig);
        }
    }
    let code = loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("exec: wait for {pid}: {e}");
                break HELPER_FAILED;
            }
        }
    };
    code
}

/// An exclusive `flock` on `<state_root>/.<id>.exec.lock` (released on drop or exit); `None`
/// if it cannot be taken, in which case the exec goes ahead unserialised.
fn exec_lock(state_root: &Path, id: &str) -> Option<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_root.join(format!(".{id}.exec.lock")))
        .ok()?;
    loop {
        // SAFETY: flock on a descriptor owned by `f`, which outlives the call.
        let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        if r == 0 {
            return Some(f);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Fd 3 as a close-on-exec file, if it is open.
fn status_pipe() -> Option<File> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    let flags = unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above; sets close-on-exec so the container process does not inherit it.
    unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: fd 3 is open (checked above) and nothing else in this process owns it.
    Some(unsafe { File::from_raw_fd(STATUS_FD) })
}

/// Default dispositions and an empty mask: the command inherits both (Rust ignores SIGPIPE).
fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting a default disposition affects only this single-threaded process.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: `set` is initialised by sigemptyset before use; a NULL old set is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Joins the container and starts the command; returns its host pid.
fn run(args: &Args, container_dir: &Path) -> Result<i32, String> {
    let container = Container::load(container_dir.to_path_buf())
        .map_err(|e| format!("load container {}: {e}", args.id))?;
    let config = container.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("read {}: {e}", config.display()))?;
    let process = spec.process().as_ref();
    let user = process.map(|p| p.user());
    // The container's seccomp filter applies to the exec'd process too (libcontainer's tenant
    // path takes it from config.json, bosun's patch); its program was compiled once.
    if let Some(filter) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
        let path = container.bundle().join(SECCOMP_PROGRAM);
        if let Ok(program) = std::fs::read(&path) {
            libcontainer::seccomp::set_precompiled(filter, &program)
                .map_err(|e| format!("seccomp program {}: {e}", path.display()))?;
        }
    }
    // And its AppArmor label (the tenant path takes it only from here).
    let apparmor = process.and_then(|p| p.apparmor_profile().clone());
    let cwd = args
        .cwd
        .clone()
        .or_else(|| process.map(|p| p.cwd().clone()));
    let stdin: std::os::fd::OwnedFd = if args.stdin {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("dup stdin: {e}"))?
    } else {
        File::open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?
            .into()
    };
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup stdout: {e}"))?;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup stderr: {e}"))?;
    // The environment: libcontainer 0.7 starts from the container's own `process.env` (from
    // the bundle's config.json) when no override is given, keeping its order.
    let pid = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(|e| format!("state root {}: {e}", args.state_root.display()))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_tenant()
        .with_container_args(args.argv.clone())
        .with_apparmor(apparmor)
        .with_cwd(cwd)
        .with_user(user.map(|u| u.uid()))
        .with_group(user.map(|u| u.gid()))
        .with_additional_gids(
            user.and_then(|u| u.additional_gids().clone())
                .unwrap_or_default(),
        )
        .with_detach(false)
        .build()
        .map_err(|e| format!("exec in container {}: {e}", args.id))?;
    Ok(pid.as_raw())
}

/// libcontainer leaves a `tenant-notify-*.sock` per exec in the container's state folder.
pub(crate) fn remove_tenant_sockets(container_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("tenant-notify-") && name.ends_with(".sock") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_arguments() {
        let a = parse_args(s(&["/st", "c1", "", "--", "sh", "-c", "echo hi"])).expect("parse");
        assert_eq!(
            a,
            Args {
                state_root: "/st".into(),
                id: "c1".into(),
                cwd: None,
                argv: s(&["sh", "-c", "echo hi"]),
                stdin: false,
                tty: false,
            }
        );
        let a = parse_args(s(&["__exec", "--stdin", "/st", "c1", "", "--", "cat"])).expect("parse");
        assert!(a.stdin && !a.tty);
        assert_eq!(a.argv, s(&["cat"]));
        let a = parse_args(s(&["--tty", "/st", "c1", "", "--", "sh"])).expect("parse");
        assert!(a.stdin && a.tty);
        let a =
            parse_args(s(&["bosun", "__exec", "/st", "c1", "/tmp", "--", "ls"])).expect("parse");
        assert_eq!(a.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(a.argv, s(&["ls"]));
        assert!(parse_args(s(&["/st", "c1", "", "--"])).is_err());
        assert!(parse_args(s(&["/st", "c1", "--", "ls"])).is_err());
    }

    #[test]
    fn removes_only_tenant_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tenant-notify-123.sock"), "").expect("write");
        std::fs::write(dir.path().join("notify.sock"), "").expect("write");
        remove_tenant_sockets(dir.path());
        assert!(!dir.path().join("tenant-notify-123.sock").exists());
        assert!(dir.path().join("notify.sock").exists());
    }

    /// Removes the test container and its cgroups even when the test fails.
    struct ContainerGuard {
        state_root: PathBuf,
        id: String,
        cgroup_parent: String,
    }

    impl Drop for ContainerGuard {
        fn drop(&mut self) {
            if let Ok(mut c) = Container::load(self.state_root.join(&self.id)) {
                let _ = c.kill(nix::sys::signal::Signal::SIGKILL, true);
                if let Some(pid) = c.pid() {
                    let _ = waitpid(pid, None);
                }
                let _ = c.delete(true);
            }
            if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir(e.path().join(&self.cgroup_parent));
                }
            }
            let _ =
                std::fs::remove_dir(Path::new("/sys/fs/cgroup/unified").join(&self.cgroup_parent));
        }
    }

    /// Forks; the child runs `f` and exits with its result. Test only: the child of a
    /// multi-threaded process may only be trusted because the other test threads are idle.
    fn in_child(f: impl FnOnce() -> i32) -> nix::unistd::Pid {
        // SAFETY: the child only runs `f` and exits without returning into the test harness.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = f();
                // SAFETY: _exit ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        }
    }

    fn wait_code(pid: nix::unistd::Pid) -> i32 {
        match waitpid(pid, None).expect("waitpid") {
            WaitStatus::Exited(_, c) => c,
            other => panic!("child ended with {other:?}"),
        }
    }

    #[test]
    #[ignore = "needs root: creates a container (namespaces, cgroups)"]
    fn exec_in_a_real_container() {
        use libcontainer::oci_spec::runtime::{ProcessBuilder, RootBuilder, UserBuilder};
        use std::io::Read;
        use std::os::fd::{AsRawFd, OwnedFd};

        let tmp = tempfile::tempdir().expect("tempdir");
        let bundle = tmp.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "work"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox");
        for tool in ["sh", "sleep", "id", "pwd", "echo"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).expect("link");
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .subsec_nanos();
        let cgroup_parent = format!("bosun-test-{}-{nanos}", std::process::id());
        let mut spec = Spec::default();
        spec.set_root(Some(
            RootBuilder::default()
                .path(&rootfs)
                .readonly(false)
                .build()
                .expect("root"),
        ));
        let process = ProcessBuilder::default()
            .args(s(&["sleep", "1000"]))
            .env(s(&["PATH=/bin", "FOO=bar"]))
            .cwd("/work")
            .user(
                UserBuilder::default()
                    .uid(0u32)
                    .gid(0u32)
                    .build()
                    .expect("user"),
            )
            .no_new_privileges(true)
            .build()
            .expect("process");
        spec.set_process(Some(process));
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{cgroup_parent}/c1"))));
        }
        spec.save(bundle.join("config.json")).expect("config.json");
        let state_root = tmp.path().join("state");
        std::fs::create_dir_all(&state_root).expect("state root");
        let _guard = ContainerGuard {
            state_root: state_root.clone(),
            id: "c1".into(),
            cgroup_parent: cgroup_parent.clone(),
        };

        // Create and start it from a single-threaded child, as the keeper would.
        let (sr, b) = (state_root.clone(), bundle.clone());
        let creator = in_child(move || {
            let null = || File::options().read(true).write(true).open("/dev/null");
            let r = (|| -> Result<(), String> {
                let mut c = ContainerBuilder::new("c1".into(), SyscallType::default())
                    .with_root_path(&sr)
                    .map_err(|e| e.to_string())?
                    .with_stdin(null().map_err(|e| e.to_string())?)
                    .with_stdout(null().map_err(|e| e.to_string())?)
                    .with_stderr(null().map_err(|e| e.to_string())?)
                    .validate_id()
                    .map_err(|e| e.to_string())?
                    .as_init(&b)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
                    .map_err(|e| e.to_string())?;
                c.start().map_err(|e| e.to_string())
            })();
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("create: {e}");
                    1
                }
            }
        });
        assert_eq!(wait_code(creator), 0, "container created and started");

        let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
        let (err_r, err_w) = nix::unistd::pipe().expect("pipe");
        let (st_r, st_w) = nix::unistd::pipe().expect("pipe");
        let args = vec![
            state_root.to_string_lossy().into_owned(),
            "c1".to_string(),
            String::new(),
            "--".to_string(),
            "sh".to_string(),
            "-c".to_string(),
            "echo $FOO; pwd; id -u; exit 7".to_string(),
        ];
        let helper = in_child(move || {
            // SAFETY: plain dup2 calls on descriptors this child owns.
            unsafe {
                libc::dup2(out_w.as_raw_fd(), 1);
                libc::dup2(err_w.as_raw_fd(), 2);
                libc::dup2(st_w.as_raw_fd(), STATUS_FD);
            }
            helper_main(args)
        });
        // The write ends were moved into the closure, dropped (closed) here in the parent.
        let read_all = |fd: OwnedFd| {
            let mut s = String::new();
            File::from(fd).read_to_string(&mut s).expect("read");
            s
        };
        let status = read_all(st_r);
        let out = read_all(out_r);
        let err = read_all(err_r);
        let code = wait_code(helper);
        assert!(
            status.starts_with("pid "),
            "status {status:?}, stderr {err:?}"
        );
        assert_eq!(code, 7, "stderr {err:?}");
        assert_eq!(out, "bar\n/work\n0\n");
        // Concurrent execs into the same container all succeed (build() takes turns).
        let sr = state_root.to_string_lossy().into_owned();
        let helpers: Vec<_> = (0..4)
            .map(|i| {
                let argv = vec![
                    sr.clone(),
                    "c1".to_string(),
                    "/".to_string(),
                    "--".to_string(),
                    "sh".to_string(),
                    "-c".to_string(),
                    format!("exit {}", 10 + i),
                ];
                in_child(move || helper_main(argv))
            })
            .collect();
        for (i, h) in helpers.into_iter().enumerate() {
            assert_eq!(wait_code(h), 10 + i as i32);
        }
        let leftovers: Vec<_> = std::fs::read_dir(state_root.join("c1"))
            .expect("state")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("tenant-notify-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
