//! Privileged tests of the security mechanisms with real containers (root: namespaces, mounts,
//! cgroups, seccomp): seccomp filters (RuntimeDefault, Localhost, missing profiles) for the
//! container and for processes exec'd into it, sysctls in the pod's own namespaces, pods with
//! a user namespace of their own (ID maps, host-side IDs, idmapped rootfs and mounts, the
//! allocator's file), AppArmor labels (where the host enforces AppArmor: the VM tier runs this
//! binary in its Debian guest with `BOSUN_REQUIRE_APPARMOR=1`; elsewhere that test is skipped),
//! what a start costs with and without a filter (printed, not asserted), and CDI devices
//! (a spec in the runtime's CDI folder: device node, devices-cgroup rule, env and mount).
//!
//! No libtest harness: this binary is its own keeper, sandbox helper and exec helper
//! (`bosun_runtime::helper_role`, dispatched before any thread exists), and runs the tests one
//! after the other in a tokio runtime. Everything lives in a tempdir and the cgroup root
//! `/bosun-test-sec-<pid>`, removed even when a test fails. Run with `-- --ignored` as root.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_runtime::seccomp::SeccompProfile;
use bosun_runtime::userns::{Allocator, IdPool, IdRange};
use bosun_runtime::{
    sandbox, ContainerSecurity, ContainerSpec, ContainerState, HostRuntime, Mount, PodSecurity,
    Propagation, QosClass, Resources, RuntimePaths, Sandbox, SandboxSpec, Security, User,
};

type TestResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("line {}: {}", line!(), format!($($fmt)+)));
        }
    };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = bosun_runtime::helper_role(&args) {
        std::process::exit(code);
    }
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!("security tests are in the privileged tier: run with -- --ignored");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("security tests skipped: need root");
        return;
    }
    let filter: Option<String> = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    std::process::exit(rt.block_on(run_all(filter)));
}

struct Env {
    tmp: tempfile::TempDir,
    paths: RuntimePaths,
    rt: HostRuntime,
    layer: PathBuf,
}

type TestFn =
    for<'a> fn(&'a Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + 'a>>;

async fn run_all(filter: Option<String>) -> i32 {
    bosun_runtime::reaper::install().expect("reaper");
    let tmp = tempfile::Builder::new()
        .prefix("bosun-sec-test")
        .tempdir()
        .expect("tempdir");
    // Traversable by a pod's user namespace (its root is not host root): like /run/bosun.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let me = std::env::current_exe().expect("current_exe");
    let paths = RuntimePaths {
        run_dir: tmp.path().join("run"),
        data_dir: tmp.path().join("data"),
        pod_logs_dir: tmp.path().join("logs"),
        container_logs_dir: tmp.path().join("containers"),
        cgroup_root: format!("/bosun-test-sec-{}", std::process::id()),
        helper_binary: me.clone(),
        keeper_binary: me,
    };
    let layer = tmp.path().join("layer");
    make_busybox_layer(&layer).expect("busybox layer");
    let opts = bosun_runtime::container::RuntimeOptions {
        cdi_spec_dirs: vec![tmp.path().join("cdi-static"), tmp.path().join("cdi")],
        ..Default::default()
    };
    let rt = HostRuntime::new(paths.clone(), opts)
        .await
        .expect("runtime");
    let env = Env {
        tmp,
        paths,
        rt,
        layer,
    };
    let tests: Vec<(&str, TestFn)> = vec![
        ("seccomp_runtime_default_confines_container_and_exec", |e| {
            Box::pin(seccomp_runtime_default_confines_container_and_exec(e))
        }),
        ("seccomp_localhost_profile_denies_mkdir", |e| {
            Box::pin(seccomp_localhost_profile_denies_mkdir(e))
        }),
        (
            "seccomp_missing_profile_refused_before_anything_starts",
            |e| Box::pin(seccomp_missing_profile_refused_before_anything_starts(e)),
        ),
        ("sysctls_set_in_the_pods_namespaces_only", |e| {
            Box::pin(sysctls_set_in_the_pods_namespaces_only(e))
        }),
        ("user_namespace_pod", |e| Box::pin(user_namespace_pod(e))),
        ("apparmor_profiles_label_container_and_exec", |e| {
            Box::pin(apparmor_profiles_label_container_and_exec(e))
        }),
        ("cdi_devices_injected", |e| {
            Box::pin(cdi_devices_injected(e))
        }),
        ("start_cost_with_and_without_seccomp", |e| {
            Box::pin(start_cost_with_and_without_seccomp(e))
        }),
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
        let res = f(&env).await;
        let res = res.and_then(|()| env.assert_clean());
        match res {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({} ms)", t0.elapsed().as_millis());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n  {e}");
                env.cleanup().await;
            }
        }
    }
    env.cleanup().await;
    // The sandboxes' shared root mount (kept between sandboxes, as on a node), then the
    // cgroup tree under our root, deepest first.
    let _ = nix::mount::umount2(
        &env.paths.run_dir.join("sandboxes"),
        nix::mount::MntFlags::MNT_DETACH,
    );
    let root = env.paths.cgroup_root.clone();
    drop(env);
    for h in cgroup_hierarchies() {
        remove_tree(&h.join(root.trim_start_matches('/')));
    }
    println!("{passed} passed, {failed} failed");
    i32::from(failed > 0)
}

impl Env {
    fn sandbox_spec(&self, name: &str) -> SandboxSpec {
        SandboxSpec {
            pod_uid: format!("sec-{}-{name}", std::process::id()),
            namespace: "default".into(),
            name: name.into(),
            hostname: name.replace('_', "-"),
            host_network: false,
            host_ipc: false,
            host_pid: false,
            share_pid: false,
            qos: QosClass::BestEffort,
            resources: Resources::default(),
            shm_size: None,
        }
    }

    fn spec(&self, sb: &Sandbox, name: &str, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: format!("{}_{name}_0", sb.pod_uid),
            name: name.replace('_', "-"),
            pod_uid: sb.pod_uid.clone(),
            pod_namespace: "default".into(),
            pod_name: "sec".into(),
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
                // Docker's default set: no CAP_SYS_ADMIN.
                capabilities: [
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "FOWNER",
                    "FSETID",
                    "KILL",
                    "SETGID",
                    "SETUID",
                    "SETPCAP",
                    "NET_BIND_SERVICE",
                    "SYS_CHROOT",
                    "MKNOD",
                    "AUDIT_WRITE",
                    "SETFCAP",
                ]
                .iter()
                .map(|c| format!("CAP_{c}"))
                .collect(),
                mask_paths: true,
                ..Default::default()
            },
            stop_signal: libc::SIGKILL,
            termination_message_path: None,
            labels: BTreeMap::new(),
            devices: vec![],
            cdi_devices: vec![],
        }
    }

    async fn start(
        &self,
        sb: &Sandbox,
        spec: &ContainerSpec,
        sec: &ContainerSecurity,
    ) -> Result<i32, String> {
        let st = self
            .rt
            .start_container_with(sb, spec, std::slice::from_ref(&self.layer), sec)
            .await
            .map_err(|e| format!("start {}: {e:#}", spec.id))?;
        match st.state {
            ContainerState::Running { pid, .. } => Ok(pid),
            other => Err(format!("{} not running: {other:?}", spec.id)),
        }
    }

    /// Runs `argv` in the container; (exit code, stdout + stderr).
    async fn exec(&self, id: &str, argv: &[&str]) -> Result<(i32, String), String> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let out = self
            .rt
            .exec(id, &argv, Duration::from_secs(20))
            .await
            .map_err(|e| format!("exec {argv:?} in {id}: {e}"))?;
        Ok((
            out.code,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// Stops and removes every container and sandbox of the tests.
    async fn cleanup(&self) {
        for c in self.rt.list() {
            let _ = self
                .rt
                .stop_container(&c.id, libc::SIGKILL, Duration::from_secs(5))
                .await;
            let _ = self.rt.remove_container(&c.id).await;
        }
        for uid in sandbox::list(&self.paths) {
            let _ = sandbox::remove(&self.paths, &uid).await;
        }
    }

    /// Nothing of ours mounted, no container left.
    fn assert_clean(&self) -> TestResult {
        let base = self.tmp.path().to_string_lossy().into_owned();
        let shared_root = self.paths.run_dir.join("sandboxes");
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let left: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&base) && Path::new(m) != shared_root)
            .collect();
        ensure!(left.is_empty(), "mounts left behind: {left:?}");
        ensure!(
            self.rt.list().is_empty(),
            "containers left: {:?}",
            self.rt.list()
        );
        Ok(())
    }

    async fn done(&self, sb: &Sandbox, ids: &[&str]) -> TestResult {
        for id in ids {
            self.rt
                .stop_container(id, libc::SIGKILL, Duration::from_secs(5))
                .await
                .map_err(|e| format!("stop {id}: {e}"))?;
            self.rt
                .remove_container(id)
                .await
                .map_err(|e| format!("remove {id}: {e}"))?;
        }
        sandbox::remove(&self.paths, &sb.pod_uid)
            .await
            .map_err(|e| format!("remove sandbox: {e}"))
    }
}

/// rmdir of a cgroup folder and everything below it, deepest first.
fn remove_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        v.extend(
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    v
}

fn make_busybox_layer(layer: &Path) -> std::io::Result<()> {
    let bin = layer.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))?;
    for tool in [
        "sh", "cat", "sleep", "grep", "unshare", "mkdir", "touch", "stat", "id", "true",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(tool))?;
    }
    std::fs::create_dir_all(layer.join("etc"))?;
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(layer.join("etc/group"), "root:x:0:\n")?;
    for d in ["proc", "sys", "dev", "tmp", "root", "data"] {
        std::fs::create_dir_all(layer.join(d))?;
    }
    Ok(())
}

/// The `Seccomp:` field of a process's status (0 none, 2 filter).
fn seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

fn host_status(pid: i32) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("status: {e}"))
}

async fn seccomp_runtime_default_confines_container_and_exec(env: &Env) -> TestResult {
    let sb = sandbox::create(&env.paths, &env.sandbox_spec("seccomp_default"))
        .await
        .map_err(|e| e.to_string())?;
    let confined = env.spec(&sb, "confined", &["sleep", "1000"]);
    let free = env.spec(&sb, "free", &["sleep", "1000"]);
    let default = ContainerSecurity {
        seccomp: SeccompProfile::RuntimeDefault,
        ..Default::default()
    };
    let pid = env.start(&sb, &confined, &default).await?;
    let free_pid = env.start(&sb, &free, &ContainerSecurity::default()).await?;
    // The container's own process, seen from the host.
    ensure!(
        seccomp_mode(&host_status(pid)?) == Some(2),
        "container not filtered"
    );
    ensure!(
        seccomp_mode(&host_status(free_pid)?) == Some(0),
        "unconfined has a filter"
    );
    // A process exec'd into it runs under the same filter (libcontainer's tenant path, patched).
    let (code, out) = env
        .exec(&confined.id, &["cat", "/proc/self/status"])
        .await?;
    ensure!(
        code == 0 && seccomp_mode(&out) == Some(2),
        "exec'd process: {out}"
    );
    // A call the default profile denies without CAP_SYS_ADMIN fails with EPERM, in the
    // container and in an exec; unconfined, the same call works.
    let (code, out) = env.exec(&confined.id, &["unshare", "-U", "true"]).await?;
    ensure!(
        code != 0 && out.contains("Operation not permitted"),
        "unshare -U under RuntimeDefault: {code} {out}"
    );
    let (code, out) = env.exec(&free.id, &["unshare", "-U", "true"]).await?;
    ensure!(code == 0, "unshare -U unconfined: {code} {out}");
    let (code, _) = env.exec(&confined.id, &["mkdir", "/tmp/ok"]).await?;
    ensure!(code == 0, "an allowed call works");
    // The program was compiled once, beside the run folder, and handed to the bundle.
    let programs: Vec<_> = std::fs::read_dir(env.paths.run_dir.join("seccomp"))
        .map_err(|e| e.to_string())?
        .flatten()
        .collect();
    ensure!(programs.len() == 1, "one program: {programs:?}");
    let bundle = env
        .paths
        .run_dir
        .join("containers")
        .join(&confined.id)
        .join("bundle");
    ensure!(
        bundle.join(bosun_runtime::exec::SECCOMP_PROGRAM).exists(),
        "program in the bundle"
    );
    let config = std::fs::read_to_string(bundle.join("config.json")).map_err(|e| e.to_string())?;
    ensure!(
        config.contains("SCMP_ACT_ERRNO") && config.contains("SCMP_ARCH_X86"),
        "config.json has the filter"
    );
    env.done(&sb, &[&confined.id, &free.id]).await
}

async fn seccomp_localhost_profile_denies_mkdir(env: &Env) -> TestResult {
    let profiles = env.tmp.path().join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).map_err(|e| e.to_string())?;
    let file = profiles.join("deny-mkdir.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_AARCH64"],
           "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .map_err(|e| e.to_string())?;
    let sb = sandbox::create(&env.paths, &env.sandbox_spec("seccomp_local"))
        .await
        .map_err(|e| e.to_string())?;
    let c = env.spec(&sb, "nomkdir", &["sleep", "1000"]);
    let sec = ContainerSecurity {
        seccomp: SeccompProfile::Localhost(file),
        ..Default::default()
    };
    let pid = env.start(&sb, &c, &sec).await?;
    ensure!(seccomp_mode(&host_status(pid)?) == Some(2), "filtered");
    let (code, out) = env.exec(&c.id, &["mkdir", "/tmp/x"]).await?;
    ensure!(
        code != 0 && out.contains("Permission denied"),
        "mkdir under the profile: {code} {out}"
    );
    let (code, out) = env.exec(&c.id, &["touch", "/tmp/x"]).await?;
    ensure!(code == 0, "other calls work: {out}");
    env.done(&sb, &[&c.id]).await
}

async fn seccomp_missing_profile_refused_before_anything_starts(env: &Env) -> TestResult {
    let sb = sandbox::create(&env.paths, &env.sandbox_spec("seccomp_missing"))
        .await
        .map_err(|e| e.to_string())?;
    let file = env.tmp.path().join("seccomp/profiles/later.json");
    let c = env.spec(&sb, "later", &["sleep", "1000"]);
    let sec = ContainerSecurity {
        seccomp: SeccompProfile::Localhost(file.clone()),
        ..Default::default()
    };
    let err = env
        .rt
        .start_container_with(&sb, &c, std::slice::from_ref(&env.layer), &sec)
        .await
        .err()
        .ok_or("started without its profile")?;
    let msg = err.to_string();
    ensure!(
        matches!(
            err,
            bosun_runtime::container::StartError::Seccomp {
                source: bosun_runtime::seccomp::SeccompError::Missing { .. },
                ..
            }
        ),
        "typed error: {err:?}"
    );
    ensure!(
        msg.contains(&file.display().to_string()),
        "names the file: {msg}"
    );
    let dir = env.paths.run_dir.join("containers").join(&c.id);
    ensure!(!dir.exists(), "nothing created for it: {}", dir.display());
    // An invalid file: refused the same way; fixed, the next try starts it.
    std::fs::create_dir_all(file.parent().ok_or("parent")?).map_err(|e| e.to_string())?;
    std::fs::write(&file, "{\"defaultAction\": 7}").map_err(|e| e.to_string())?;
    let err = env
        .rt
        .start_container_with(&sb, &c, std::slice::from_ref(&env.layer), &sec)
        .await
        .err()
        .ok_or("started with an invalid profile")?;
    ensure!(err.to_string().contains("invalid seccomp profile"), "{err}");
    std::fs::write(&file, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).map_err(|e| e.to_string())?;
    env.start(&sb, &c, &sec).await?;
    env.done(&sb, &[&c.id]).await
}

/// Reads a file inside the namespace pinned at `ns` (`--net=` or `--ipc=`).
fn read_in(ns_flag: &str, pin: &Path, file: &str) -> Result<String, String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("{ns_flag}={}", pin.display()))
        .args(["cat", file])
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    ensure!(out.status.success(), "nsenter cat {file}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn sysctls_set_in_the_pods_namespaces_only(env: &Env) -> TestResult {
    let net_file = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let ipc_file = "/proc/sys/kernel/shm_rmid_forced";
    let read = |f: &str| std::fs::read_to_string(f).map(|s| s.trim().to_string());
    let (host_net, host_ipc) = (read(net_file), read(ipc_file));
    let (host_net, host_ipc) = (
        host_net.map_err(|e| e.to_string())?,
        host_ipc.map_err(|e| e.to_string())?,
    );
    let want_net = if host_net == "80" { "81" } else { "80" };
    let want_ipc = if host_ipc == "1" { "0" } else { "1" };
    let sec = PodSecurity {
        // Both separators.
        sysctls: vec![
            (
                "net.ipv4.ip_unprivileged_port_start".into(),
                want_net.into(),
            ),
            ("kernel/shm_rmid_forced".into(), want_ipc.into()),
        ],
        user_namespace: None,
    };
    let sb = sandbox::create_with(&env.paths, &env.sandbox_spec("sysctls"), &sec)
        .await
        .map_err(|e| e.to_string())?;
    let netns = sb.netns.clone().ok_or("netns")?;
    let ipcns = sb.ipcns.clone().ok_or("ipcns")?;
    ensure!(
        read_in("--net", &netns, net_file)? == want_net,
        "net sysctl in the pod's netns"
    );
    ensure!(
        read_in("--ipc", &ipcns, ipc_file)? == want_ipc,
        "ipc sysctl in the pod's ipcns"
    );
    ensure!(
        read(net_file).ok().as_deref() == Some(host_net.as_str()),
        "host net value unchanged"
    );
    ensure!(
        read(ipc_file).ok().as_deref() == Some(host_ipc.as_str()),
        "host ipc value unchanged"
    );
    // A container of the pod sees them.
    let c = env.spec(&sb, "reader", &["sleep", "1000"]);
    env.start(&sb, &c, &ContainerSecurity::default()).await?;
    let (_, out) = env.exec(&c.id, &["cat", net_file]).await?;
    ensure!(out.trim() == want_net, "inside: {out}");
    env.done(&sb, &[&c.id]).await?;
    // A network sysctl for a pod on the host network: refused, nothing created, host untouched.
    let mut host = env.sandbox_spec("sysctls_host");
    host.host_network = true;
    let err = sandbox::create_with(&env.paths, &host, &sec)
        .await
        .err()
        .ok_or("a host-network pod got a net sysctl")?;
    ensure!(
        matches!(err, sandbox::SandboxError::Sysctl { .. }),
        "typed error: {err}"
    );
    ensure!(
        !sandbox::dir(&env.paths, &host.pod_uid).exists(),
        "no sandbox folder"
    );
    ensure!(
        read(net_file).ok().as_deref() == Some(host_net.as_str()),
        "host unchanged"
    );
    Ok(())
}

async fn user_namespace_pod(env: &Env) -> TestResult {
    const BLOCK: u32 = 65536;
    // A pool far above any real user's IDs.
    let pool = IdPool {
        first: 15_259 * BLOCK,
        len: 4 * BLOCK,
        per_pod: BLOCK,
    };
    let file = env.tmp.path().join("data/userns.json");
    let alloc = Allocator::open(file.clone(), pool).map_err(|e| e.to_string())?;
    let spec = env.sandbox_spec("userns");
    let range = alloc.allocate(&spec.pod_uid).map_err(|e| e.to_string())?;
    let base = range.first;
    let sb = sandbox::create_with(
        &env.paths,
        &spec,
        &PodSecurity {
            sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "0".into())],
            user_namespace: Some(range),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    ensure!(
        sb.userns.is_some() && sb.id_range == Some(range),
        "sandbox records the range"
    );
    let host_dir = env.tmp.path().join("hostpath");
    std::fs::create_dir_all(&host_dir).map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        &host_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(host_dir.join("root-owned"), "x").map_err(|e| e.to_string())?;
    let mount = Mount {
        destination: "/data".into(),
        source: host_dir.clone(),
        readonly: false,
        propagation: Propagation::Private,
    };
    // Without idmapped mounts: the container's root is <base> on the host.
    let mut plain = env.spec(&sb, "plain", &["sleep", "1000"]);
    plain.mounts = vec![mount.clone()];
    let no_idmap = ContainerSecurity {
        idmap_mounts: false,
        ..Default::default()
    };
    let pid = env.start(&sb, &plain, &no_idmap).await?;
    let (_, out) = env.exec(&plain.id, &["cat", "/proc/self/uid_map"]).await?;
    let fields: Vec<&str> = out.split_whitespace().collect();
    let base_s = base.to_string();
    ensure!(
        fields == ["0", base_s.as_str(), "65536"],
        "uid_map inside: {out:?}"
    );
    let status = host_status(pid)?;
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    ensure!(
        uid_line.split_whitespace().nth(1) == Some(base_s.as_str()),
        "host-side uid of the container: {uid_line}"
    );
    let (code, out) = env.exec(&plain.id, &["touch", "/data/plain"]).await?;
    ensure!(code == 0, "touch: {out}");
    let md = std::fs::metadata(host_dir.join("plain")).map_err(|e| e.to_string())?;
    ensure!(
        md.uid() == base && md.gid() == base,
        "owner on the host: {}",
        md.uid()
    );
    // The image's files (host root's) belong to the container's root: the rootfs is idmapped.
    let (_, out) = env
        .exec(&plain.id, &["stat", "-c", "%u", "/bin/busybox"])
        .await?;
    ensure!(out.trim() == "0", "rootfs owner inside: {out}");
    // The pod's sysctl was written inside its namespaces, which belong to its user namespace.
    let (_, out) = env
        .exec(
            &plain.id,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
        )
        .await?;
    ensure!(out.trim() == "0", "sysctl in a userns pod: {out}");
    // With idmapped mounts (what the kubelet asks): host IDs appear as container IDs.
    let mut mapped = env.spec(&sb, "mapped", &["sleep", "1000"]);
    mapped.mounts = vec![mount];
    env.start(&sb, &mapped, &ContainerSecurity::default())
        .await?;
    let (_, out) = env
        .exec(&mapped.id, &["stat", "-c", "%u", "/data/root-owned"])
        .await?;
    ensure!(
        out.trim() == "0",
        "host root's file inside an idmapped mount: {out}"
    );
    let (code, out) = env.exec(&mapped.id, &["touch", "/data/mapped"]).await?;
    ensure!(code == 0, "touch: {out}");
    let md = std::fs::metadata(host_dir.join("mapped")).map_err(|e| e.to_string())?;
    ensure!(
        md.uid() == 0,
        "written through the idmapped mount: host uid {}",
        md.uid()
    );
    env.done(&sb, &[&plain.id, &mapped.id]).await?;
    // The allocation is on disk: a new allocator (a restart) has it, and never hands it out.
    drop(alloc);
    let again = Allocator::open(file.clone(), pool).map_err(|e| e.to_string())?;
    ensure!(
        again.get(&spec.pod_uid) == Some(range),
        "kept across a reload"
    );
    let other = again.allocate("another-pod").map_err(|e| e.to_string())?;
    ensure!(other.first != base, "a second pod gets another range");
    again.release(&spec.pod_uid).map_err(|e| e.to_string())?;
    again.release("another-pod").map_err(|e| e.to_string())?;
    ensure!(
        Allocator::open(file, pool)
            .map_err(|e| e.to_string())?
            .get(&spec.pod_uid)
            .is_none(),
        "freed on disk"
    );
    let _: IdRange = range;
    Ok(())
}

/// A Localhost profile that denies writes below `/denied` (paths as the container sees them).
const DENY_WRITE: &str = "#include <tunables/global>
profile bosun-test-deny-write flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>
  file,
  capability,
  network,
  signal,
  deny /denied/** w,
}
";

/// Runs apparmor_parser with `flag` on a profile text.
fn apparmor_parser(flag: &str, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("apparmor_parser")
        .arg(flag)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("apparmor_parser: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    ensure!(st.success(), "apparmor_parser {flag}: {st}");
    Ok(())
}

async fn apparmor_profiles_label_container_and_exec(env: &Env) -> TestResult {
    use bosun_runtime::apparmor;
    if !apparmor::is_enabled() {
        ensure!(
            std::env::var_os("BOSUN_REQUIRE_APPARMOR").is_none(),
            "AppArmor is not enabled on this host"
        );
        println!("  skipped: AppArmor is not enabled on this host");
        return Ok(());
    }
    apparmor_parser("-Kr", DENY_WRITE)?;
    let result = apparmor_checks(env).await;
    let unloaded = apparmor_parser("-R", DENY_WRITE);
    result.and(unloaded)
}

async fn apparmor_checks(env: &Env) -> TestResult {
    use bosun_runtime::apparmor::AppArmorProfile;
    let sb = sandbox::create(&env.paths, &env.sandbox_spec("apparmor"))
        .await
        .map_err(|e| e.to_string())?;
    let local = env.spec(
        &sb,
        "local",
        &["sh", "-c", "mkdir -p /denied /allowed; exec sleep 1000"],
    );
    let sec = ContainerSecurity {
        apparmor: AppArmorProfile::Localhost("bosun-test-deny-write".into()),
        ..Default::default()
    };
    env.start(&sb, &local, &sec).await?;
    let (_, out) = env
        .exec(&local.id, &["cat", "/proc/1/attr/current"])
        .await?;
    ensure!(
        out.contains("bosun-test-deny-write"),
        "pid 1's label: {out}"
    );
    let (_, out) = env
        .exec(&local.id, &["cat", "/proc/self/attr/current"])
        .await?;
    ensure!(
        out.contains("bosun-test-deny-write"),
        "an exec'd process's label: {out}"
    );
    let (code, out) = env.exec(&local.id, &["touch", "/denied/f"]).await?;
    ensure!(
        code != 0 && out.contains("Permission denied"),
        "write denied: {code} {out}"
    );
    let (code, out) = env.exec(&local.id, &["touch", "/allowed/f"]).await?;
    ensure!(code == 0, "write allowed elsewhere: {out}");
    // RuntimeDefault: bosun-default, loaded on first use.
    let default = env.spec(&sb, "default", &["sleep", "1000"]);
    let sec = ContainerSecurity {
        apparmor: AppArmorProfile::RuntimeDefault,
        ..Default::default()
    };
    env.start(&sb, &default, &sec).await?;
    let (_, out) = env
        .exec(&default.id, &["cat", "/proc/1/attr/current"])
        .await?;
    ensure!(out.contains("bosun-default"), "RuntimeDefault label: {out}");
    // A Localhost profile that is not loaded: refused before anything starts.
    let missing = env.spec(&sb, "missing", &["sleep", "1000"]);
    let sec = ContainerSecurity {
        apparmor: AppArmorProfile::Localhost("bosun-test-not-loaded".into()),
        ..Default::default()
    };
    let err = env
        .rt
        .start_container_with(&sb, &missing, std::slice::from_ref(&env.layer), &sec)
        .await
        .err()
        .ok_or("started without its profile")?;
    ensure!(err.to_string().contains("bosun-test-not-loaded"), "{err}");
    env.done(&sb, &[&local.id, &default.id]).await
}

async fn start_cost_with_and_without_seccomp(env: &Env) -> TestResult {
    const ROUNDS: usize = 12;
    let sb = sandbox::create(&env.paths, &env.sandbox_spec("cost"))
        .await
        .map_err(|e| e.to_string())?;
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for i in 0..ROUNDS {
        for (label, profile) in [
            ("unconfined", SeccompProfile::Unconfined),
            ("runtime-default", SeccompProfile::RuntimeDefault),
        ] {
            let c = env.spec(&sb, &format!("{label}-{i}"), &["sleep", "1000"]);
            let sec = ContainerSecurity {
                seccomp: profile,
                ..Default::default()
            };
            let t0 = Instant::now();
            env.start(&sb, &c, &sec).await?;
            times.entry(label).or_default().push(t0.elapsed());
            env.rt
                .stop_container(&c.id, libc::SIGKILL, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            env.rt
                .remove_container(&c.id)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // What libcontainer would pay per container without the compiled program.
    let filter = bosun_runtime::seccomp::Profile::runtime_default()
        .resolve(
            &env.spec(&sb, "x", &["true"]).security.capabilities,
            bosun_runtime::seccomp::Target::host(),
        )
        .map_err(|e| e.to_string())?;
    let mut compile = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        bosun_runtime::seccomp::compile(&filter, "RuntimeDefault").map_err(|e| e.to_string())?;
        compile.push(t0.elapsed());
    }
    times.insert("libseccomp compile alone", compile);
    for (label, mut v) in times {
        v.sort();
        // The first start of each kind pays for cold caches (and the one compile).
        println!(
            "  cost: {label}: p50 {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[0].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3,
            v.len()
        );
    }
    sandbox::remove(&env.paths, &sb.pod_uid)
        .await
        .map_err(|e| e.to_string())
}

/// A CDI spec in the runtime's folder: the devices asked for get their nodes, made from the
/// host's nodes with the spec's owner and mode (no mode: the runtime's 0666) and usable (the
/// devices cgroup lets them through; libcontainer, as runc, allows every node it makes, so a
/// spec's narrower `permissions` only shape the rule, checked in the unit tests), a device not
/// asked for gets nothing, the spec's and the devices' env are set and the spec's read-only
/// mount is there; an unknown device fails the start before a keeper exists.
async fn cdi_devices_injected(env: &Env) -> TestResult {
    let dir = env.tmp.path().join("cdi");
    let shared = env.tmp.path().join("cdi-shared");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&shared).map_err(|e| e.to_string())?;
    std::fs::write(shared.join("firmware"), "fw-1.2\n").map_err(|e| e.to_string())?;
    let spec = format!(
        r#"cdiVersion: 0.6.0
kind: bosun.test/accel
containerEdits:
  env: [ACCEL_DRIVER=1.2]
  mounts:
  - hostPath: {shared}
    containerPath: /opt/accel
    options: [ro, nosuid, nodev, bind]
devices:
- name: rw0
  containerEdits:
    env: [ACCEL_VISIBLE=rw0]
    deviceNodes:
    - path: /dev/accel-rw0
      hostPath: /dev/null
      fileMode: 432
      uid: 0
      gid: 44
- name: ro1
  containerEdits:
    env: [ACCEL_RO=ro1]
    deviceNodes:
    - path: /dev/accel-ro1
      hostPath: /dev/net/tun
      permissions: r
- name: unused
  containerEdits:
    deviceNodes:
    - path: /dev/accel-unused
      hostPath: /dev/null
- name: elsewhere
  containerEdits:
    deviceNodes:
    - {{path: /tmp/CDI-accel, type: b, major: 1, minor: 0}}
"#,
        shared = shared.display()
    );
    std::fs::write(dir.join("accel.yaml"), spec).map_err(|e| e.to_string())?;
    let sb = sandbox::create(&env.paths, &env.sandbox_spec("cdi"))
        .await
        .map_err(|e| e.to_string())?;
    let mut c = env.spec(
        &sb,
        "accel",
        &[
            "sh",
            "-c",
            "echo \"$ACCEL_DRIVER $ACCEL_VISIBLE $ACCEL_RO\" > /tmp/env; sleep 1000",
        ],
    );
    // `elsewhere` is declared as Kubernetes' sample device plugin declares its devices: a node
    // outside /dev, with no host path, its type and numbers given.
    c.cdi_devices = vec![
        "bosun.test/accel=rw0".into(),
        "bosun.test/accel=ro1".into(),
        "bosun.test/accel=elsewhere".into(),
    ];
    env.start(&sb, &c, &ContainerSecurity::default()).await?;
    let (code, out) = env
        .exec(
            &c.id,
            &[
                "stat",
                "-c",
                "%t:%T %a %g %F",
                "/dev/accel-rw0",
                "/dev/accel-ro1",
                "/tmp/CDI-accel",
            ],
        )
        .await?;
    ensure!(
        code == 0
            && out
                == "1:3 660 44 character special file\na:c8 666 0 character special file\n\
                    1:0 666 0 block special file\n",
        "device nodes: {code} {out:?}"
    );
    let (code, out) = env
        .exec(&c.id, &["sh", "-c", "echo x > /dev/accel-rw0"])
        .await?;
    ensure!(code == 0, "write to the rw device: {code} {out}");
    let (code, out) = env.exec(&c.id, &["stat", "/dev/accel-unused"]).await?;
    ensure!(code != 0, "a device not asked for is there: {out}");
    let (code, out) = env.exec(&c.id, &["sh", "-c", ": < /dev/accel-ro1"]).await?;
    ensure!(
        code == 0,
        "open of the read-only device for reading: {code} {out}"
    );
    let (code, out) = env
        .exec(&c.id, &["cat", "/tmp/env", "/opt/accel/firmware"])
        .await?;
    ensure!(
        code == 0 && out == "1.2 rw0 ro1\nfw-1.2\n",
        "env and mount: {code} {out:?}"
    );
    let (code, out) = env.exec(&c.id, &["touch", "/opt/accel/x"]).await?;
    ensure!(
        code != 0 && out.contains("Read-only"),
        "the mount is read-only: {code} {out}"
    );

    // An unknown device: the start fails with the names, and nothing is left.
    let mut bad = env.spec(&sb, "unknown", &["sleep", "1000"]);
    bad.cdi_devices = vec![
        "bosun.test/accel=rw0".into(),
        "bosun.test/accel=gone".into(),
    ];
    let err = env
        .start(&sb, &bad, &ContainerSecurity::default())
        .await
        .expect_err("unknown CDI device started");
    ensure!(
        err.contains("unresolvable CDI devices bosun.test/accel=gone"),
        "error: {err}"
    );
    ensure!(
        !env.paths.run_dir.join("containers").join(&bad.id).exists(),
        "container folder of the refused start"
    );
    env.done(&sb, &[&c.id]).await
}
