//! Privileged tests of pod sandboxes and the cgroup layout (root: namespaces, mounts, cgroups).
//!
//! No libtest harness: this binary is its own sandbox helper (`__sandbox ...` is dispatched
//! before any thread exists, as the agent's main does), and it runs the tests one after the
//! other in a tokio runtime created after that dispatch. Everything lives under a temporary
//! run_dir and the private cgroup root `/bosun-test-sbx-<pid>`, removed on the way out even when
//! a test fails. Skipped (exit 0) when not root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bosun_runtime::cgroups::CgroupLayout;
use bosun_runtime::{sandbox, QosClass, Resources, RuntimePaths, SandboxSpec};

type TestResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{} (line {}): {}", stringify!($cond), line!(), format!($($fmt)+)));
        }
    };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__sandbox") => std::process::exit(sandbox::helper_main(args[2..].to_vec())),
        Some("__cgroup-v2-test") => std::process::exit(cgroup_v2_inner(&args[2])),
        _ => {}
    }
    // The privileged tier runs with `-- --ignored` (or `--include-ignored`), like the #[ignore]d tests.
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!("sandbox tests are in the privileged tier: run with -- --ignored");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("sandbox tests skipped: need root");
        return;
    }
    // Libtest-style filter: `cargo test --test sandbox -- NAME`.
    let filter: Option<String> = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    // Orphans (the pod inits) come back to us and are reaped by the reaper.
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(run_all(filter));
    std::process::exit(code);
}

#[derive(Clone)]
struct Ctx {
    paths: RuntimePaths,
    tag: String,
}

impl Ctx {
    fn spec(&self, name: &str) -> SandboxSpec {
        SandboxSpec {
            pod_uid: format!("{}-{name}", self.tag),
            namespace: "default".into(),
            name: name.into(),
            hostname: format!("h-{name}"),
            host_network: false,
            host_ipc: false,
            host_pid: false,
            share_pid: false,
            qos: QosClass::Burstable,
            resources: Resources::default(),
            shm_size: None,
        }
    }
}

type TestFn = fn(Ctx) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + Send>>;

async fn run_all(filter: Option<String>) -> i32 {
    bosun_runtime::reaper::install().expect("reaper");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pid = std::process::id();
    let paths = RuntimePaths {
        run_dir: tmp.path().join("run"),
        data_dir: tmp.path().join("data"),
        pod_logs_dir: tmp.path().join("logs"),
        container_logs_dir: tmp.path().join("containers"),
        cgroup_root: format!("/bosun-test-sbx-{pid}"),
        helper_binary: std::env::current_exe().expect("current_exe"),
        keeper_binary: std::env::current_exe().expect("current_exe"),
    };
    let ctx = Ctx {
        paths: paths.clone(),
        tag: format!("t{pid}"),
    };
    let tests: Vec<(&str, TestFn)> = vec![
        ("create_pins_namespaces_and_removes_cleanly", |c| {
            Box::pin(create_pins_namespaces_and_removes_cleanly(c))
        }),
        ("shm_size_is_applied", |c| Box::pin(shm_size_is_applied(c))),
        ("share_pid_runs_a_pod_init", |c| {
            Box::pin(share_pid_runs_a_pod_init(c))
        }),
        ("broken_sandbox_is_recreated", |c| {
            Box::pin(broken_sandbox_is_recreated(c))
        }),
        ("host_namespaces_use_no_pins", |c| {
            Box::pin(host_namespaces_use_no_pins(c))
        }),
        ("pins_propagate_to_slave_namespaces", |c| {
            Box::pin(pins_propagate_to_slave_namespaces(c))
        }),
        ("concurrent_creates_share_one_root_mount", |c| {
            Box::pin(concurrent_creates_share_one_root_mount(c))
        }),
        ("cgroup_v2_private_mount", |c| {
            Box::pin(cgroup_v2_private_mount(c))
        }),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = std::time::Instant::now();
        // A panic inside the task becomes a JoinError instead of ending the run before cleanup.
        let result = match tokio::spawn(test(ctx.clone())).await {
            Ok(r) => r,
            Err(e) => Err(format!("panicked: {e}")),
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:?})", started.elapsed());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    // Cleanup, whatever happened above.
    for uid in sandbox::list(&paths) {
        if let Err(e) = sandbox::remove(&paths, &uid).await {
            println!("cleanup: {e}");
            failed += 1;
        }
    }
    if let Err(e) = sandbox::release_root(&paths) {
        println!("cleanup: {e}");
        failed += 1;
    }
    match CgroupLayout::detect(&paths.cgroup_root) {
        Ok(layout) => {
            if let Err(e) = layout.remove_all() {
                println!("cleanup: {e}");
                failed += 1;
            }
        }
        Err(e) => println!("cleanup: {e}"),
    }
    let leftover: Vec<String> = mountinfo()
        .into_iter()
        .filter(|m| m.starts_with(tmp.path()))
        .map(|m| m.display().to_string())
        .collect();
    if !leftover.is_empty() {
        println!("cleanup: mounts left behind: {leftover:?}");
        failed += 1;
    }
    println!("{passed} passed, {failed} failed");
    i32::from(failed > 0)
}

fn mountinfo() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

fn inode(p: &Path) -> Result<u64, String> {
    std::fs::metadata(p)
        .map(|m| m.ino())
        .map_err(|e| format!("stat {}: {e}", p.display()))
}

async fn run(cmd: &mut Command) -> Result<String, String> {
    let desc = format!("{cmd:?}");
    let (exit, out, err) = bosun_runtime::reaper::output(cmd)
        .await
        .map_err(|e| format!("{desc}: {e}"))?;
    if exit.code() != 0 {
        return Err(format!(
            "{desc}: exit {}: {}",
            exit.code(),
            String::from_utf8_lossy(&err)
        ));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn tmpfs_size(p: &Path) -> Result<u64, String> {
    let st = nix::sys::statfs::statfs(p).map_err(|e| format!("statfs {}: {e}", p.display()))?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return Err(format!("{} is not a tmpfs", p.display()));
    }
    Ok(st.blocks() * st.block_size() as u64)
}

/// After remove: no mount under the folder, no folder, no pod cgroup in any v1 controller.
fn assert_gone(paths: &RuntimePaths, uid: &str, cgroup_parent: &str) -> TestResult {
    let d = sandbox::dir(paths, uid);
    let mounted: Vec<PathBuf> = mountinfo()
        .into_iter()
        .filter(|m| m.starts_with(&d))
        .collect();
    ensure!(mounted.is_empty(), "still mounted: {mounted:?}");
    ensure!(!d.exists(), "{} still exists", d.display());
    for c in ["cpu", "memory", "pids", "cpuset", "freezer", "unified"] {
        let p = Path::new("/sys/fs/cgroup")
            .join(c)
            .join(cgroup_parent.trim_start_matches('/'));
        ensure!(!p.exists(), "{} still exists", p.display());
    }
    ensure!(
        !sandbox::list(paths).contains(&uid.to_string()),
        "still listed"
    );
    Ok(())
}

async fn create_pins_namespaces_and_removes_cleanly(c: Ctx) -> TestResult {
    let mut spec = c.spec("basic");
    spec.resources.memory_limit = Some(128 << 20);
    let s = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    let net = s.netns.clone().ok_or("no netns")?;
    let uts = s.utsns.clone().ok_or("no utsns")?;
    let ipc = s.ipcns.clone().ok_or("no ipcns")?;
    ensure!(s.pidns.is_none(), "pidns without share_pid");
    ensure!(
        inode(&net)? != inode(Path::new("/proc/self/ns/net"))?,
        "same netns as the host"
    );
    ensure!(
        inode(&ipc)? != inode(Path::new("/proc/self/ns/ipc"))?,
        "same ipcns as the host"
    );
    ensure!(
        inode(&uts)? != inode(Path::new("/proc/self/ns/uts"))?,
        "same utsns as the host"
    );
    let host = run(Command::new("nsenter")
        .arg(format!("--net={}", net.display()))
        .arg(format!("--uts={}", uts.display()))
        .arg("hostname"))
    .await?;
    ensure!(host.trim() == "h-basic", "hostname {host:?}");
    let links = run(Command::new("nsenter")
        .arg(format!("--net={}", net.display()))
        .args(["ip", "-o", "link"]))
    .await?;
    ensure!(
        links.lines().count() == 1,
        "links in the pod netns: {links}"
    );
    ensure!(
        links.contains("lo:") && links.contains("UP"),
        "lo is not up: {links}"
    );
    ensure!(
        tmpfs_size(&s.shm)? == 64 << 20,
        "shm size {}",
        tmpfs_size(&s.shm)?
    );
    // The pod cgroup, with its limit.
    ensure!(
        s.cgroup_parent
            == format!(
                "{}/kubepods/burstable/pod{}",
                c.paths.cgroup_root, spec.pod_uid
            ),
        "cgroup parent {}",
        s.cgroup_parent
    );
    let layout = CgroupLayout::detect(&c.paths.cgroup_root).map_err(|e| e.to_string())?;
    if !layout.is_v2() {
        let limit = std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/memory")
                .join(s.cgroup_parent.trim_start_matches('/'))
                .join("memory.limit_in_bytes"),
        )
        .map_err(|e| e.to_string())?;
        ensure!(limit.trim() == (128u64 << 20).to_string(), "limit {limit}");
    }
    ensure!(
        layout
            .list_pods()
            .contains(&(QosClass::Burstable, spec.pod_uid.clone())),
        "pod cgroup not listed"
    );
    // Recorded, listed, and create is idempotent.
    ensure!(
        sandbox::load(&c.paths, &spec.pod_uid).as_ref() == Some(&s),
        "load differs"
    );
    ensure!(
        sandbox::list(&c.paths).contains(&spec.pod_uid),
        "not listed"
    );
    let again = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(again == s, "second create differs");
    ensure!(
        inode(&net)? == inode(again.netns.as_deref().ok_or("netns")?)?,
        "netns changed"
    );

    sandbox::remove(&c.paths, &spec.pod_uid)
        .await
        .map_err(|e| e.to_string())?;
    assert_gone(&c.paths, &spec.pod_uid, &s.cgroup_parent)?;
    sandbox::remove(&c.paths, &spec.pod_uid)
        .await
        .map_err(|e| format!("second remove: {e}"))?;
    Ok(())
}

async fn shm_size_is_applied(c: Ctx) -> TestResult {
    let mut spec = c.spec("shm");
    spec.shm_size = Some(16 << 20);
    let s = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(tmpfs_size(&s.shm)? == 16 << 20, "shm size");
    std::fs::write(s.shm.join("x"), b"data").map_err(|e| e.to_string())?;
    sandbox::remove(&c.paths, &spec.pod_uid)
        .await
        .map_err(|e| e.to_string())?;
    assert_gone(&c.paths, &spec.pod_uid, &s.cgroup_parent)
}

fn init_pid(s: &bosun_runtime::Sandbox) -> Result<i32, String> {
    std::fs::read_to_string(s.dir.join("init.pid"))
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("init.pid: {e}"))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// Reaped, not just dead (the reaper runs on SIGCHLD).
async fn wait_gone(pid: i32) -> bool {
    for _ in 0..300 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn share_pid_runs_a_pod_init(c: Ctx) -> TestResult {
    let mut spec = c.spec("pid");
    spec.share_pid = true;
    let s = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    let pidns = s.pidns.clone().ok_or("no pidns")?;
    ensure!(
        inode(&pidns)? != inode(Path::new("/proc/self/ns/pid"))?,
        "same pidns as the host"
    );
    let pid = init_pid(&s)?;
    ensure!(alive(pid), "pod init {pid} not running");
    ensure!(
        inode(Path::new(&format!("/proc/{pid}/ns/pid")))? == inode(&pidns)?,
        "init is not in the pinned pid namespace"
    );
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .ok_or("no NSpid")?;
    ensure!(nspid.split_whitespace().last() == Some("1"), "{nspid}");
    ensure!(
        inode(Path::new(&format!("/proc/{pid}/ns/net")))?
            == inode(s.netns.as_deref().ok_or("netns")?)?,
        "init not in the pod netns"
    );
    // A process entering the pod pid namespace sees the init as pid 1.
    let ps = run(Command::new("nsenter")
        .arg(format!("--pid={}", pidns.display()))
        .args(["sh", "-c", "echo $$"]))
    .await?;
    ensure!(
        ps.trim() != "1" && !ps.trim().is_empty(),
        "pid in pod ns {ps:?}"
    );
    // Orphans inside are reaped by the init: a zombie grandchild must not stay around.
    run(Command::new("nsenter")
        .arg(format!("--pid={}", pidns.display()))
        .args(["sh", "-c", "sleep 0.1 & exit 0"]))
    .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    ensure!(
        children.trim().is_empty(),
        "init still has children {children:?}"
    );

    sandbox::remove(&c.paths, &spec.pod_uid)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(wait_gone(pid).await, "pod init {pid} still exists");
    assert_gone(&c.paths, &spec.pod_uid, &s.cgroup_parent)
}

async fn broken_sandbox_is_recreated(c: Ctx) -> TestResult {
    let mut spec = c.spec("broken");
    spec.share_pid = true;
    let s = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    let pid = init_pid(&s)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| e.to_string())?;
    ensure!(wait_gone(pid).await, "killed init not reaped");
    let s2 = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    let pid2 = init_pid(&s2)?;
    ensure!(pid2 != pid && alive(pid2), "no new init");
    sandbox::remove(&c.paths, &spec.pod_uid)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(wait_gone(pid2).await, "pod init {pid2} still exists");
    assert_gone(&c.paths, &spec.pod_uid, &s2.cgroup_parent)
}

async fn host_namespaces_use_no_pins(c: Ctx) -> TestResult {
    let mut spec = c.spec("host");
    spec.host_network = true;
    spec.host_ipc = true;
    spec.host_pid = true;
    spec.share_pid = true;
    spec.qos = QosClass::BestEffort;
    let s = sandbox::create(&c.paths, &spec)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        s.netns.is_none() && s.utsns.is_none() && s.ipcns.is_none() && s.pidns.is_none(),
        "{s:?}"
    );
    ensure!(s.shm == Path::new("/dev/shm"), "shm {}", s.shm.display());
    for f in ["net", "uts", "ipc", "pid", "shm", "init.pid"] {
        ensure!(!s.dir.join(f).exists(), "{f} exists");
    }
    ensure!(s.host_pid, "host_pid");
    ensure!(
        s.cgroup_parent
            .ends_with(&format!("/kubepods/besteffort/pod{}", spec.pod_uid)),
        "{}",
        s.cgroup_parent
    );
    sandbox::remove(&c.paths, &spec.pod_uid)
        .await
        .map_err(|e| e.to_string())?;
    assert_gone(&c.paths, &spec.pod_uid, &s.cgroup_parent)
}

/// The sandboxes root is shared: a mount namespace copied from the host as a slave (like a
/// keeper's or a container's before pivot_root) sees new pins, and our unmounts reach it, so it
/// cannot keep a pod's network namespace alive after removal.
async fn pins_propagate_to_slave_namespaces(c: Ctx) -> TestResult {
    let a = c.spec("prop-a");
    let sa = sandbox::create(&c.paths, &a)
        .await
        .map_err(|e| e.to_string())?;
    let (mut child, _exit) = bosun_runtime::reaper::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "sleep", "30"])
            .stdin(std::process::Stdio::null()),
    )
    .map_err(|e| e.to_string())?;
    let pid = child.id();
    let result = async {
        // unshare execs sleep once the namespace exists.
        for _ in 0..200 {
            let mine = inode(Path::new("/proc/self/ns/mnt"))?;
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if inode(Path::new(&format!("/proc/{pid}/ns/mnt")))? != mine && cmd.trim() == "sleep" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let b = c.spec("prop-b");
        let sb = sandbox::create(&c.paths, &b)
            .await
            .map_err(|e| e.to_string())?;
        let theirs =
            || std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        let net_a = sa.netns.clone().ok_or("netns a")?;
        let net_b = sb.netns.clone().ok_or("netns b")?;
        ensure!(
            theirs().contains(&net_a.display().to_string()),
            "pin from before the namespace is missing in it"
        );
        ensure!(
            theirs().contains(&net_b.display().to_string()),
            "pin made after the namespace did not propagate into it"
        );
        sandbox::remove(&c.paths, &a.pod_uid)
            .await
            .map_err(|e| e.to_string())?;
        sandbox::remove(&c.paths, &b.pod_uid)
            .await
            .map_err(|e| e.to_string())?;
        ensure!(
            !theirs().contains(&sa.dir.display().to_string())
                && !theirs().contains(&sb.dir.display().to_string()),
            "unmounts did not propagate: {}",
            theirs()
        );
        assert_gone(&c.paths, &a.pod_uid, &sa.cgroup_parent)?;
        assert_gone(&c.paths, &b.pod_uid, &sb.cgroup_parent)
    }
    .await;
    let _ = child.kill();
    result
}

/// Helpers running at once must not stack mounts on `<run_dir>/sandboxes`.
async fn concurrent_creates_share_one_root_mount(c: Ctx) -> TestResult {
    sandbox::release_root(&c.paths).map_err(|e| e.to_string())?;
    let specs: Vec<SandboxSpec> = (0..4).map(|i| c.spec(&format!("conc{i}"))).collect();
    let mut tasks = Vec::new();
    for spec in specs.clone() {
        let paths = c.paths.clone();
        tasks.push(tokio::spawn(
            async move { sandbox::create(&paths, &spec).await },
        ));
    }
    let mut made = Vec::new();
    for t in tasks {
        made.push(
            t.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
    }
    let root = c
        .paths
        .run_dir
        .join("sandboxes")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let n = mountinfo().iter().filter(|m| **m == root).count();
    ensure!(n == 1, "{} mounted {n} times", root.display());
    for (spec, s) in specs.iter().zip(&made) {
        ensure!(
            sandbox::load(&c.paths, &spec.pod_uid).as_ref() == Some(s),
            "{} not recorded",
            spec.pod_uid
        );
        sandbox::remove(&c.paths, &spec.pod_uid)
            .await
            .map_err(|e| e.to_string())?;
        assert_gone(&c.paths, &spec.pod_uid, &s.cgroup_parent)?;
    }
    Ok(())
}

/// cgroup v2 in a private mount namespace (the test binary re-run as `__cgroup-v2-test`, which
/// unshares its mount namespace while single-threaded and mounts cgroup2 over /sys/fs/cgroup).
/// On this hybrid host every useful controller is bound to v1, so only directory creation,
/// listing, removal and the "controller not available" error can be checked.
async fn cgroup_v2_private_mount(c: Ctx) -> TestResult {
    let root = format!("/bosun-test-sbx-v2-{}", std::process::id());
    let out = run(Command::new(&c.paths.helper_binary).args(["__cgroup-v2-test", &root])).await;
    // Whatever happened inside, nothing may stay in the real unified hierarchy.
    let host_dir = Path::new("/sys/fs/cgroup/unified").join(root.trim_start_matches('/'));
    if host_dir.exists() {
        let layout = CgroupLayout::v2_at("/sys/fs/cgroup/unified", &root);
        let _ = layout.remove_all();
        return Err(format!(
            "{} left behind (inner: {out:?})",
            host_dir.display()
        ));
    }
    let out = out?;
    ensure!(out.contains("v2 ok"), "inner output {out}");
    Ok(())
}

fn cgroup_v2_inner(root: &str) -> i32 {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let setup = || -> Result<(), String> {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make-rprivate: {e}"))?;
        if !cgroup2_mounted() {
            mount(
                Some("cgroup2"),
                "/sys/fs/cgroup",
                Some("cgroup2"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| format!("mount cgroup2: {e}"))?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        eprintln!("{e}");
        return 1;
    }
    let layout = match CgroupLayout::detect(root) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("detect: {e}");
            return 1;
        }
    };
    let result = cgroup_v2_checks(&layout);
    let cleanup = layout.remove_all();
    match (result, cleanup) {
        (Ok(()), Ok(())) => {
            println!("v2 ok");
            0
        }
        (r, c) => {
            eprintln!("checks: {r:?}; cleanup: {c:?}");
            1
        }
    }
}

fn cgroup2_mounted() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn cgroup_v2_checks(layout: &CgroupLayout) -> TestResult {
    ensure!(layout.is_v2(), "detect did not find v2");
    let pod = layout
        .ensure_pod(QosClass::Guaranteed, "v2pod", &Resources::default())
        .map_err(|e| e.to_string())?;
    let dir = Path::new("/sys/fs/cgroup").join(pod.trim_start_matches('/'));
    ensure!(
        dir.join("cgroup.procs").exists(),
        "{} not a cgroup",
        dir.display()
    );
    layout
        .ensure_pod(QosClass::Guaranteed, "v2pod", &Resources::default())
        .map_err(|e| format!("idempotent: {e}"))?;
    let controllers =
        std::fs::read_to_string(dir.join("cgroup.controllers")).map_err(|e| e.to_string())?;
    if !controllers.contains("memory") {
        // Hybrid host: memory is bound to v1, so a memory limit must be refused by name.
        let err = layout
            .ensure_pod(
                QosClass::Burstable,
                "v2lim",
                &Resources {
                    memory_limit: Some(1 << 30),
                    ..Resources::default()
                },
            )
            .err()
            .ok_or("a memory limit without the memory controller was accepted")?;
        ensure!(err.to_string().contains("memory.max"), "{err}");
    }
    ensure!(
        layout
            .list_pods()
            .contains(&(QosClass::Guaranteed, "v2pod".into())),
        "{:?}",
        layout.list_pods()
    );
    std::fs::create_dir(dir.join("ctr")).map_err(|e| e.to_string())?;
    layout
        .remove_pod(QosClass::Guaranteed, "v2pod")
        .map_err(|e| e.to_string())?;
    ensure!(!dir.exists(), "pod cgroup left");
    layout
        .remove_pod(QosClass::Guaranteed, "v2pod")
        .map_err(|e| format!("idempotent remove: {e}"))?;
    Ok(())
}
