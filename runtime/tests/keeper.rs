//! Privileged tests of the keeper (needs root: overlay mounts, namespaces, cgroups).
//!
//! `harness = false`: this binary is also the keeper. Run as `<bin> __keeper <dir>` it becomes
//! one (single-threaded, as libcontainer requires); otherwise it runs the tests one after the
//! other, each spawning itself as the keeper of a busybox container, and prints a summary.
//! Everything lives in a tempdir and a private cgroup parent `/bosun-test-<pid>`, removed even
//! when a test fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bosun_runtime::keeper::{KeeperRequest, Started, EXIT_FILE, REQUEST_FILE, STARTED_FILE};
use bosun_runtime::logs::{self, Stream};
use bosun_runtime::{ContainerSpec, ExitInfo, Resources, Sandbox, Security, User};

type TestResult = Result<(), String>;
type TestFn = fn(&Env) -> TestResult;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 3 && args[1] == "__keeper" {
        std::process::exit(bosun_runtime::keeper::main(PathBuf::from(&args[2])));
    }
    // The privileged tier runs with `-- --ignored` (or `--include-ignored`), like the #[ignore]d tests.
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!("keeper tests are in the privileged tier: run with -- --ignored");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("keeper tests skipped: needs root (overlay mounts, namespaces, cgroups)");
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let env = match Env::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    };
    let tests: &[(&str, TestFn)] = &[
        ("exit_code_env_args_and_log", exit_code_env_args_and_log),
        ("user_name_resolves", user_name_resolves),
        ("memory_limit_oom_kill", memory_limit_oom_kill),
        ("cpu_limit_from_the_start", cpu_limit_from_the_start),
        ("start_failure_records_error", start_failure_records_error),
        ("hold_until_go_ahead", hold_until_go_ahead),
        ("hold_ends_without_go_ahead", hold_ends_without_go_ahead),
        ("sigterm_is_delivered", sigterm_is_delivered),
        ("signals_default_and_nofile", signals_default_and_nofile),
        ("log_rotation_while_running", log_rotation_while_running),
        ("host_pid_lingering_child", host_pid_lingering_child),
        (
            "readonly_rootfs_and_bind_mount",
            readonly_rootfs_and_bind_mount,
        ),
        ("stdin_once_pipe", stdin_once_pipe),
        ("tty_stdin_and_resize", tty_stdin_and_resize),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if filter
            .as_ref()
            .is_some_and(|fl| !name.contains(fl.as_str()))
        {
            continue;
        }
        let t0 = Instant::now();
        let res = f(&env).and_then(|()| env.assert_clean(name));
        match res {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({} ms)", t0.elapsed().as_millis());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n  {e}");
                let log = std::fs::read_to_string(env.container_dir(name).join("keeper.log"))
                    .unwrap_or_default();
                if !log.is_empty() {
                    println!("  keeper.log:\n{log}");
                }
            }
        }
    }
    drop(env);
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The shared test environment: a busybox layer, a tempdir, a private cgroup parent.
struct Env {
    base: tempfile::TempDir,
    layer: PathBuf,
    cgroup_parent: String,
}

impl Env {
    fn new() -> Result<Env, String> {
        let base = tempfile::Builder::new()
            .prefix("bosun-keeper-test")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let layer = base.path().join("layer");
        make_busybox_layer(&layer).map_err(|e| format!("busybox layer: {e}"))?;
        Ok(Env {
            base,
            layer,
            cgroup_parent: format!("/bosun-test-{}", std::process::id()),
        })
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        self.base.path().join("c").join(name)
    }

    fn cgroup_path(&self, name: &str) -> String {
        format!("{}/pod-{name}/{}", self.cgroup_parent, container_id(name))
    }

    fn request(&self, name: &str, args: &[&str]) -> KeeperRequest {
        let shm = self.base.path().join("shm").join(name);
        let _ = std::fs::create_dir_all(&shm);
        KeeperRequest {
            spec: ContainerSpec {
                id: container_id(name),
                name: name.replace('_', "-"),
                pod_uid: "pod".into(),
                pod_namespace: "default".into(),
                pod_name: "test".into(),
                attempt: 0,
                image: "busybox".into(),
                image_id: "sha256:test".into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![("PATH".into(), "/bin".into())],
                cwd: "/".into(),
                user: User::Id { uid: 0, gid: None },
                tty: false,
                stdin: false,
                stdin_once: false,
                mounts: vec![],
                resources: Resources::default(),
                oom_score_adj: 0,
                security: Security {
                    capabilities: vec![
                        "CAP_CHOWN".into(),
                        "CAP_KILL".into(),
                        "CAP_SETUID".into(),
                        "CAP_SETGID".into(),
                    ],
                    mask_paths: true,
                    ..Default::default()
                },
                stop_signal: libc::SIGTERM,
                termination_message_path: None,
                labels: BTreeMap::new(),
                devices: Vec::new(),
                cdi_devices: Vec::new(),
            },
            sandbox: Sandbox {
                pod_uid: "pod".into(),
                dir: self.base.path().join("sandbox"),
                netns: None,
                ipcns: None,
                utsns: None,
                pidns: None,
                shm,
                cgroup_parent: format!("{}/pod-{name}", self.cgroup_parent),
                host_pid: false,
                userns: None,
                id_range: None,
            },
            layers: vec![self.layer.clone()],
            log_path: self.base.path().join("logs").join(name).join("0.log"),
            log_max_size: 10 << 20,
            log_max_files: 5,
            cgroup_path: self.cgroup_path(name),
            hold: false,
            cpu_cgroup: None,
            security: Default::default(),
            seccomp: None,
            apparmor_label: None,
            cdi: None,
        }
    }

    /// No mount left under the test dir, no cgroup left for the container.
    fn assert_clean(&self, name: &str) -> TestResult {
        let base = self.base.path().to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let left: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&base))
            .collect();
        check!(left.is_empty(), "mounts left behind: {left:?}");
        let rel = self.cgroup_path(name);
        for ctrl in cgroup_hierarchies() {
            let p = ctrl.join(rel.trim_start_matches('/'));
            check!(!p.exists(), "cgroup left behind: {}", p.display());
        }
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Unmount anything a failed test left (deepest first), then remove our cgroups.
        let base = self.base.path().to_string_lossy().into_owned();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mounts: Vec<String> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&base))
                .map(String::from)
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for ctrl in cgroup_hierarchies() {
            let p = ctrl.join(self.cgroup_parent.trim_start_matches('/'));
            if p.exists() {
                kill_and_rmdir(&p);
            }
        }
    }
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                v.push(e.path());
            }
        }
    }
    v
}

/// Removes a cgroup tree: kills what is inside, rmdirs children first.
fn kill_and_rmdir(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_and_rmdir(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(p.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory preconditions; these pids are in our test cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(p).is_ok() || !p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("could not remove cgroup {}", p.display());
}

fn container_id(name: &str) -> String {
    format!(
        "keeper-test-{}-{}",
        std::process::id(),
        name.replace('_', "-")
    )
}

fn make_busybox_layer(layer: &Path) -> std::io::Result<()> {
    let bin = layer.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))?;
    for tool in [
        "sh", "echo", "cat", "sleep", "head", "tail", "id", "env", "ls", "true", "false", "grep",
        "seq",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(tool))?;
    }
    let etc = layer.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )?;
    std::fs::write(
        etc.join("group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )?;
    for d in ["proc", "sys", "dev", "tmp", "root", "home/app"] {
        std::fs::create_dir_all(layer.join(d))?;
    }
    Ok(())
}

/// A running keeper spawned by a test.
struct Spawned {
    child: std::process::Child,
    status_line: String,
    dir: PathBuf,
    /// The rest of the status pipe (a holding keeper writes a second line).
    status: BufReader<File>,
    /// The go-ahead pipe of a holding keeper.
    go: Option<std::os::fd::OwnedFd>,
}

/// Writes the request and spawns the keeper with a status pipe on fd 3; returns once the
/// keeper reported on it.
fn spawn_keeper(env: &Env, name: &str, req: &KeeperRequest) -> Result<Spawned, String> {
    spawn(env, name, req, false)
}

/// Like [`spawn_keeper`], with `hold` set and a go-ahead pipe on fd 4.
fn spawn_holding(env: &Env, name: &str, req: &KeeperRequest) -> Result<Spawned, String> {
    let mut req = req.clone();
    req.hold = true;
    spawn(env, name, &req, true)
}

fn spawn(env: &Env, name: &str, req: &KeeperRequest, hold: bool) -> Result<Spawned, String> {
    let dir = env.container_dir(name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join(REQUEST_FILE),
        serde_json::to_vec(req).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let log = File::create(dir.join("keeper.log")).map_err(|e| e.to_string())?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let w_raw = w.as_raw_fd();
    let go = if hold {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let go_raw = go.as_ref().map(|(r, _)| r.as_raw_fd());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("__keeper")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: the closure only calls fcntl, dup2 and close, which are async-signal-safe, on
    // fds that are open in the child (inherited until exec; 3 and 4 are the targets). Each goes
    // through a copy above 9 so that placing one cannot close the other.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, target) in [(Some(w_raw), 3), (go_raw, 4)] {
                let Some(fd) = fd else { continue };
                let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if high < 0 || libc::dup2(high, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("spawn keeper: {e}"))?;
    drop(w);
    let go = go.map(|(_, w)| w);
    let mut status_line = String::new();
    // Bounded: a keeper that hangs must not hang the test run.
    let ready = nix::poll::poll(
        &mut [nix::poll::PollFd::new(
            r.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )],
        nix::poll::PollTimeout::from(30_000u16),
    )
    .map_err(|e| e.to_string())?;
    if ready == 0 {
        return Err("keeper did not report within 30 s".into());
    }
    let mut status = BufReader::new(File::from(r));
    status
        .read_line(&mut status_line)
        .map_err(|e| e.to_string())?;
    Ok(Spawned {
        child,
        status_line: status_line.trim_end().to_string(),
        dir,
        status,
        go,
    })
}

impl Spawned {
    /// Waits for the keeper to exit (bounded) and returns its exit.json.
    fn wait(mut self, timeout: Duration) -> Result<ExitInfo, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    if !st.success() {
                        return Err(format!("keeper exited with {st}"));
                    }
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("keeper did not exit in time".into());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let text =
            std::fs::read(self.dir.join(EXIT_FILE)).map_err(|e| format!("exit.json: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| e.to_string())
    }

    /// The keeper's next status line (a holding keeper's second), bounded.
    fn next_line(&mut self) -> Result<String, String> {
        let ready = nix::poll::poll(
            &mut [nix::poll::PollFd::new(
                self.status.get_ref().as_fd(),
                nix::poll::PollFlags::POLLIN,
            )],
            nix::poll::PollTimeout::from(30_000u16),
        )
        .map_err(|e| e.to_string())?;
        if ready == 0 && self.status.buffer().is_empty() {
            return Err("keeper did not report within 30 s".into());
        }
        let mut line = String::new();
        self.status
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end().to_string())
    }

    fn started(&self) -> Result<Started, String> {
        let text =
            std::fs::read(self.dir.join(STARTED_FILE)).map_err(|e| format!("started.json: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| e.to_string())
    }
}

/// (stream, partial, msg) of every record, checking the line format on the way.
fn records(path: &Path) -> Result<Vec<(Stream, bool, String)>, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for line in raw.lines() {
        let ts = line.split(' ').next().unwrap_or_default();
        check!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "bad timestamp in {line:?}"
        );
    }
    Ok(logs::read_lines(path)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|l| {
            (
                l.stream,
                l.partial,
                String::from_utf8_lossy(&l.msg).into_owned(),
            )
        })
        .collect())
}

fn exit_code_env_args_and_log(env: &Env) -> TestResult {
    let name = "exit_code_env_args_and_log";
    let mut req = env.request(
        name,
        &[
            "sh",
            "-c",
            "echo \"$GREETING\" \"$1\"; echo oops >&2; printf tail; exit 3",
            "sh",
            "arg1",
        ],
    );
    req.spec.env.push(("GREETING".into(), "hello world".into()));
    let k = spawn_keeper(env, name, &req)?;
    check!(
        k.status_line.starts_with("started "),
        "status: {:?}",
        k.status_line
    );
    let started = k.started()?;
    check!(
        k.status_line == format!("started {}", started.pid),
        "status {:?} vs started.json pid {}",
        k.status_line,
        started.pid
    );
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 3, "code {}", exit.code);
    check!(exit.signal.is_none() && !exit.oom_killed, "{exit:?}");
    check!(exit.start_error.is_none(), "{exit:?}");
    check!(exit.started_at.is_some(), "{exit:?}");
    let mut recs = records(&req.log_path)?;
    recs.sort_by_key(|r| r.0 == Stream::Stderr);
    let want = vec![
        (Stream::Stdout, false, "hello world arg1".to_string()),
        (Stream::Stdout, true, "tail".to_string()),
        (Stream::Stderr, false, "oops".to_string()),
    ];
    check!(recs == want, "log records {recs:?}");
    let dir = env.container_dir(name);
    check!(
        !dir.join("state").join(container_id(name)).exists(),
        "libcontainer state left"
    );
    // A second keeper on the same folder refuses and leaves exit.json alone.
    let before = std::fs::read(dir.join(EXIT_FILE)).map_err(|e| e.to_string())?;
    let again = spawn_keeper(env, name, &req)?;
    check!(
        again.status_line.starts_with("error ") && again.status_line.contains("already"),
        "second keeper: {:?}",
        again.status_line
    );
    let mut child = again.child;
    let st = child.wait().map_err(|e| e.to_string())?;
    check!(st.code() == Some(2), "second keeper exit {st}");
    let after = std::fs::read(dir.join(EXIT_FILE)).map_err(|e| e.to_string())?;
    check!(before == after, "exit.json changed");
    Ok(())
}

fn user_name_resolves(env: &Env) -> TestResult {
    let name = "user_name_resolves";
    let mut req = env.request(name, &["sh", "-c", "id -u; id -g; id -G"]);
    req.spec.user = User::Name("app".into());
    req.spec.security.supplemental_groups = vec![3000];
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {}", exit.code);
    let out: Vec<String> = records(&req.log_path)?
        .into_iter()
        .filter(|r| r.0 == Stream::Stdout)
        .map(|r| r.2)
        .collect();
    check!(
        out == ["1000", "1000", "1000 2000 3000"],
        "id output {out:?}"
    );
    Ok(())
}

fn memory_limit_oom_kill(env: &Env) -> TestResult {
    let name = "memory_limit_oom_kill";
    let mut req = env.request(name, &["sh", "-c", "head -c 64m /dev/zero | tail"]);
    req.spec.resources.memory_limit = Some(16 << 20);
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(60))?;
    check!(exit.code == 137, "code {} ({exit:?})", exit.code);
    check!(exit.oom_killed, "not marked oom killed: {exit:?}");
    Ok(())
}

/// The CPU limit holds for the container (its cgroup has the quota once it runs), but
/// libcontainer's set-up of it, in the same cgroup, is not throttled: with 5 ms of CPU in every
/// 100 ms that set-up alone would be (it takes more), and `nr_throttled` would count it.
fn cpu_limit_from_the_start(env: &Env) -> TestResult {
    let name = "cpu_limit_from_the_start";
    let script = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null \
                    || cut -d' ' -f1 /sys/fs/cgroup/cpu.max; \
                  grep nr_throttled /sys/fs/cgroup/cpu/cpu.stat 2>/dev/null \
                    || grep nr_throttled /sys/fs/cgroup/cpu.stat";
    let mut req = env.request(name, &["sh", "-c", script]);
    req.spec.resources.cpu_quota = Some(5_000);
    req.spec.resources.cpu_period = Some(100_000);
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {} ({exit:?})", exit.code);
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(
        out == ["5000", "nr_throttled 0"],
        "quota and throttling seen by the container: {out:?}"
    );
    Ok(())
}

/// A holding keeper builds the container (its init exists, in the container's cgroup) but runs
/// nothing of the container's until the go-ahead byte arrives.
fn hold_until_go_ahead(env: &Env) -> TestResult {
    let name = "hold_until_go_ahead";
    let req = env.request(name, &["sh", "-c", "echo ran"]);
    let mut k = spawn_holding(env, name, &req)?;
    let pid: i32 = k
        .status_line
        .strip_prefix("created ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("first line {:?}", k.status_line))?;
    // Give a container that ran anyway the time to say so.
    std::thread::sleep(Duration::from_millis(300));
    check!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the built init {pid} is gone"
    );
    check!(
        !k.dir.join(STARTED_FILE).exists(),
        "started.json before the go-ahead"
    );
    let logged = std::fs::read_to_string(&req.log_path).unwrap_or_default();
    check!(logged.is_empty(), "output before the go-ahead: {logged:?}");
    let procs = cgroup_hierarchies()
        .into_iter()
        .map(|h| {
            h.join(env.cgroup_path(name).trim_start_matches('/'))
                .join("cgroup.procs")
        })
        .find(|p| p.exists())
        .ok_or("no cgroup for the built container")?;
    let members = std::fs::read_to_string(&procs).map_err(|e| e.to_string())?;
    check!(
        members.lines().any(|l| l.trim() == pid.to_string()),
        "init {pid} not in {}: {members:?}",
        procs.display()
    );

    let go = File::from(k.go.take().ok_or("no go pipe")?);
    (&go).write_all(b"g").map_err(|e| e.to_string())?;
    drop(go);
    let line = k.next_line()?;
    check!(line == format!("started {pid}"), "second line {line:?}");
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {} ({exit:?})", exit.code);
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(out == ["ran"], "output {out:?}");
    Ok(())
}

/// Without the go-ahead (the pipe closes: the agent gave up or died) the built container
/// never runs: the keeper reports an error, records it and cleans up (`assert_clean`).
fn hold_ends_without_go_ahead(env: &Env) -> TestResult {
    let name = "hold_ends_without_go_ahead";
    let req = env.request(name, &["sh", "-c", "echo ran"]);
    let mut k = spawn_holding(env, name, &req)?;
    check!(k.status_line.starts_with("created "), "{}", k.status_line);
    let pid: i32 = k.status_line["created ".len()..]
        .parse()
        .map_err(|e| format!("{e}"))?;
    drop(k.go.take());
    let line = k.next_line()?;
    check!(
        line.starts_with("error ") && line.contains("go-ahead"),
        "second line {line:?}"
    );
    let exit = k.wait(Duration::from_secs(30))?;
    check!(
        exit.start_error
            .as_ref()
            .is_some_and(|e| e.contains("go-ahead")),
        "{exit:?}"
    );
    check!(exit.started_at.is_none(), "{exit:?}");
    check!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the built init {pid} outlived its keeper"
    );
    let logged = std::fs::read_to_string(&req.log_path).unwrap_or_default();
    check!(!logged.contains("ran"), "the container ran: {logged:?}");
    Ok(())
}

fn start_failure_records_error(env: &Env) -> TestResult {
    let name = "start_failure_records_error";
    let req = env.request(name, &["/no/such/binary"]);
    let k = spawn_keeper(env, name, &req)?;
    check!(
        k.status_line.starts_with("error "),
        "status {:?}",
        k.status_line
    );
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 128, "code {}", exit.code);
    check!(
        exit.start_error.as_ref().is_some_and(|e| !e.is_empty()),
        "{exit:?}"
    );
    check!(exit.started_at.is_none(), "{exit:?}");
    println!("  (start error: {})", exit.start_error.unwrap_or_default());
    // A user that does not exist fails before libcontainer is involved.
    let name2 = "start_failure_no_user";
    let mut req2 = env.request(name2, &["true"]);
    req2.spec.user = User::Name("ghost".into());
    let k2 = spawn_keeper(env, name2, &req2)?;
    check!(
        k2.status_line.contains("ghost"),
        "status {:?}",
        k2.status_line
    );
    let exit2 = k2.wait(Duration::from_secs(30))?;
    check!(
        exit2
            .start_error
            .as_ref()
            .is_some_and(|e| e.contains("ghost")),
        "{exit2:?}"
    );
    env.assert_clean(name2)
}

fn sigterm_is_delivered(env: &Env) -> TestResult {
    let name = "sigterm_is_delivered";
    let req = env.request(
        name,
        &[
            "sh",
            "-c",
            "trap 'echo got term; exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let pid = k.started()?.pid;
    // Wait until the trap is installed (it printed "ready").
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = logs::read_lines(&req.log_path)
            .map(|l| l.iter().any(|r| r.msg == b"ready"))
            .unwrap_or(false);
        if ready {
            break;
        }
        check!(Instant::now() < deadline, "container never printed ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fd = bosun_runtime::sys::pidfd_open(pid).map_err(|e| e.to_string())?;
    bosun_runtime::sys::pidfd_send_signal(fd.as_fd(), libc::SIGTERM).map_err(|e| e.to_string())?;
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 42, "code {} ({exit:?})", exit.code);
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(out == ["ready", "got term"], "log {out:?}");
    Ok(())
}

fn signals_default_and_nofile(env: &Env) -> TestResult {
    let name = "signals_default_and_nofile";
    let req = env.request(
        name,
        &[
            "sh",
            "-c",
            "ulimit -n; exec grep -E '^(SigIgn|SigBlk)' /proc/self/status",
        ],
    );
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {}", exit.code);
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| e.to_string())?
        .1
        .min(bosun_runtime::spec::WANTED_NOFILE);
    check!(
        out == [
            hard.to_string(),
            "SigBlk:\t0000000000000000".to_string(),
            "SigIgn:\t0000000000000000".to_string()
        ],
        "output {out:?}"
    );
    Ok(())
}

fn log_rotation_while_running(env: &Env) -> TestResult {
    let name = "log_rotation_while_running";
    let mut req = env.request(
        name,
        &[
            "sh",
            "-c",
            "for i in $(seq 1000 1499); do echo line $i; done",
        ],
    );
    req.log_max_size = 4096;
    req.log_max_files = 3;
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {}", exit.code);
    let rotated = logs::rotated_files(&req.log_path).map_err(|e| e.to_string())?;
    check!(rotated.len() == 2, "rotated files {rotated:?}");
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(
        out.last().map(String::as_str) == Some("line 1499"),
        "last {:?}",
        out.last()
    );
    let mut sorted = out.clone();
    sorted.sort();
    check!(
        out == sorted && out.len() > 50,
        "records out of order or too few: {}",
        out.len()
    );
    Ok(())
}

fn host_pid_lingering_child(env: &Env) -> TestResult {
    let name = "host_pid_lingering_child";
    let mut req = env.request(name, &["sh", "-c", "sleep 30 & echo bye"]);
    req.sandbox.host_pid = true;
    let t0 = Instant::now();
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(20))?;
    check!(exit.code == 0, "code {}", exit.code);
    check!(
        t0.elapsed() < Duration::from_secs(10),
        "keeper waited for the lingering child: {:?}",
        t0.elapsed()
    );
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(out == ["bye"], "log {out:?}");
    Ok(())
}

fn readonly_rootfs_and_bind_mount(env: &Env) -> TestResult {
    let name = "readonly_rootfs_and_bind_mount";
    let data = env.base.path().join("data").join(name);
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let mut req = env.request(
        name,
        &[
            "sh",
            "-c",
            "if (echo x > /x) 2>/dev/null; then echo rootfs-rw; else echo rootfs-ro; fi; \
             echo hi > /data/f && echo data-ok; echo x > /dev/shm/s && echo shm-ok",
        ],
    );
    req.spec.security.readonly_rootfs = true;
    req.spec.mounts.push(bosun_runtime::Mount {
        destination: "/data".into(),
        source: data.clone(),
        readonly: false,
        propagation: bosun_runtime::Propagation::Private,
    });
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {}", exit.code);
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(out == ["rootfs-ro", "data-ok", "shm-ok"], "log {out:?}");
    let f = std::fs::read_to_string(data.join("f")).map_err(|e| e.to_string())?;
    check!(f == "hi\n", "data file {f:?}");
    check!(
        req.sandbox.shm.join("s").exists(),
        "/dev/shm is not the sandbox's"
    );
    Ok(())
}

/// stdin + stdinOnce: the first attach gets the pipe, a second one nothing, and the container
/// sees EOF when the first session closes its copy.
fn stdin_once_pipe(env: &Env) -> TestResult {
    let name = "stdin_once_pipe";
    let mut req = env.request(name, &["sh", "-c", "read x; echo got-$x; cat; echo eof"]);
    req.spec.stdin = true;
    req.spec.stdin_once = true;
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let fd = bosun_runtime::keeper::attach::stdin_of(&k.dir)
        .map_err(|e| e.to_string())?
        .ok_or("no stdin handed out")?;
    let second = bosun_runtime::keeper::attach::stdin_of(&k.dir).map_err(|e| e.to_string())?;
    check!(second.is_none(), "a second session got the stdinOnce stdin");
    let mut f = File::from(fd);
    std::io::Write::write_all(&mut f, b"hello\nrest\n").map_err(|e| e.to_string())?;
    drop(f);
    let exit = k.wait(Duration::from_secs(30))?;
    check!(exit.code == 0, "code {}", exit.code);
    let out: Vec<String> = records(&req.log_path)?.into_iter().map(|r| r.2).collect();
    check!(out == ["got-hello", "rest", "eof"], "output {out:?}");
    Ok(())
}

/// tty: the container gets a terminal (libcontainer's console socket); its master is handed
/// out for input and window sizes; output lands in the log as stdout.
fn tty_stdin_and_resize(env: &Env) -> TestResult {
    let name = "tty_stdin_and_resize";
    let mut req = env.request(
        name,
        &[
            "sh",
            "-c",
            "test -t 0 && echo is-a-tty; read x; stty size; echo got-$x",
        ],
    );
    req.spec.stdin = true;
    req.spec.stdin_once = true;
    req.spec.tty = true;
    let k = spawn_keeper(env, name, &req)?;
    check!(k.status_line.starts_with("started "), "{}", k.status_line);
    let fd = bosun_runtime::keeper::attach::stdin_of(&k.dir)
        .map_err(|e| e.to_string())?
        .ok_or("no terminal handed out")?;
    bosun_runtime::sys::set_winsize(fd.as_fd(), 100, 30).map_err(|e| e.to_string())?;
    let mut f = File::from(fd);
    std::io::Write::write_all(&mut f, b"hi\r").map_err(|e| e.to_string())?;
    let exit = k.wait(Duration::from_secs(30))?;
    drop(f);
    check!(exit.code == 0, "code {}", exit.code);
    let recs = records(&req.log_path)?;
    check!(
        recs.iter().all(|r| r.0 == Stream::Stdout),
        "terminal output on stderr: {recs:?}"
    );
    let text: String = recs
        .iter()
        .map(|r| r.2.clone())
        .collect::<Vec<_>>()
        .join("\n");
    check!(text.contains("is-a-tty"), "output {text:?}");
    check!(text.contains("30 100"), "output {text:?}");
    check!(text.contains("got-hi"), "output {text:?}");
    Ok(())
}
