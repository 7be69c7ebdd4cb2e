//! The test harness: a bosun node in its own folders and cgroup, driven like a person would
//! (manifest files in, `status.json` and log files out), torn down completely even when a test
//! fails.
//!
//! Privileged: everything here runs real containers, so tests using it are marked
//! `#[ignore = "needs root: ..."]` and run in the privileged tier (`make test`).

pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The node name every test node uses; static pods are named `<name>-<node>` like the kubelet's.
pub const NODE: &str = "node1";

/// The full name of a static pod from manifest name `name`.
pub fn full_name(name: &str) -> String {
    format!("{name}-{NODE}")
}

/// The `bosun` binary under test: `$BOSUN_BIN`, or `bosun` next to the test's `deps/` folder.
pub fn bosun_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BOSUN_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("bosun")
}

/// The repository root. From the environment cargo gives the test process, not the one the
/// binary was compiled in: a build directory shared by two checkouts (CI's and a developer's)
/// may hand this checkout a test binary compiled for the other one.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().expect("root").to_path_buf()
}

/// Builds (once per process, cached under `$BOSUN_CACHE` or ~/.cache/bosun) the busybox test
/// image as an OCI layout and returns its folder.
pub fn busybox_layout() -> Result<PathBuf> {
    static ONCE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut guard = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let cache = std::env::var_os("BOSUN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/bosun")
        });
    let out = cache.join("images/busybox-oci");
    let status = Command::new("bash")
        .arg(repo_root().join("tests/images/build-busybox.sh"))
        .arg(&out)
        .status()
        .context("running tests/images/build-busybox.sh")?;
    if !status.success() {
        bail!("building the busybox test image failed: {status}");
    }
    *guard = Some(out.clone());
    Ok(out)
}

/// One bosun node with private folders, a private cgroup root and its own manifest folder.
pub struct Node {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub cgroup_root: String,
    /// This node's own CNI network (conf dir under `dir`, own bridge, subnet and IPAM store).
    pub net: TestNetwork,
    /// Extra arguments of `bosun standalone`.
    pub extra_args: Vec<String>,
    /// Lines added to the node's KubeletConfiguration file (`--config`).
    pub config: String,
    child: Option<Child>,
}

/// A private CNI network per test node so nodes never collide with each other or the host.
#[derive(Clone, Debug)]
pub struct TestNetwork {
    pub name: String,
    pub bridge: String,
    /// e.g. `10.213.57.0/24`; the gateway (bridge address) is `.1`.
    pub subnet: String,
    pub gateway: String,
    /// host-local's private dataDir.
    pub ipam_dir: PathBuf,
}

impl TestNetwork {
    fn new(dir: &Path) -> TestNetwork {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        let a = 200 + (pid / 250 + n) % 50;
        let b = pid % 250;
        TestNetwork {
            name: format!("bosun-e2e-{pid}-{n}"),
            bridge: format!("bt{}x{n}", pid % 1_000_000),
            subnet: format!("10.{a}.{b}.0/24"),
            gateway: format!("10.{a}.{b}.1"),
            ipam_dir: dir.join("cni-ipam"),
        }
    }

    /// The conflist: bridge (no masquerade: test traffic stays here) + host-local + portmap.
    pub fn conflist(&self) -> Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": false,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                          "dataDir": self.ipam_dir}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        })
    }

    /// IPs host-local still holds (files other than `last_reserved_ip.*` and `lock`).
    pub fn allocated(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir.join(&self.name))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with("last_reserved_ip") && n != "lock")
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Node {
    /// A node with the busybox image imported as `busybox` and `localhost/busybox:test`.
    pub fn new(name: &str) -> Result<Node> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bosun-{name}-"))
            .tempdir()?;
        let net = TestNetwork::new(dir.path());
        let node = Node {
            name: name.to_string(),
            cgroup_root: format!("/bosun-e2e-{name}-{}", std::process::id()),
            net,
            dir,
            extra_args: Vec::new(),
            config: String::new(),
            child: None,
        };
        for d in [
            "manifests",
            "root",
            "run",
            "data",
            "pods-logs",
            "containers-logs",
            "host",
            "cni",
        ] {
            std::fs::create_dir_all(node.path(d))?;
        }
        std::fs::write(
            node.path("cni").join("10-test.conflist"),
            serde_json::to_vec_pretty(&node.net.conflist())?,
        )?;
        let layout = busybox_layout()?;
        for reference in ["busybox", "localhost/busybox:test"] {
            let out = node.bosun(&[
                "image",
                "import",
                layout.to_str().unwrap_or_default(),
                reference,
            ])?;
            if !out.status.success() {
                bail!("image import: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(node)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            "--root-dir".into(),
            self.path("root").display().to_string(),
            "--run-dir".into(),
            self.path("run").display().to_string(),
            "--data-dir".into(),
            self.path("data").display().to_string(),
            "--pod-logs-dir".into(),
            self.path("pods-logs").display().to_string(),
            "--container-logs-dir".into(),
            self.path("containers-logs").display().to_string(),
            "--cgroup-root".into(),
            self.cgroup_root.clone(),
            "--hostname-override".into(),
            NODE.into(),
            "--cni-conf-dir".into(),
            self.path("cni").display().to_string(),
        ]
    }

    /// Runs a bosun subcommand with this node's folders.
    pub fn bosun(&self, args: &[&str]) -> Result<std::process::Output> {
        self.bosun_env(args, &[])
    }

    /// [`Node::bosun`] with extra environment variables.
    pub fn bosun_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<std::process::Output> {
        let mut cmd = Command::new(bosun_bin());
        cmd.args(args).args(self.common_args());
        cmd.envs(env.iter().copied());
        Ok(cmd.output()?)
    }

    /// Starts `bosun standalone` on the manifest folder.
    pub fn start(&mut self) -> Result<()> {
        let manifests = self.path("manifests").display().to_string();
        self.start_with(&["standalone", "--manifests", &manifests])
    }

    /// Starts bosun in cluster mode with `kubeconfig`, the manifest folder as its
    /// `staticPodPath`.
    pub fn start_cluster_mode(&mut self, kubeconfig: &Path) -> Result<()> {
        let manifests = self.path("manifests").display().to_string();
        self.config
            .push_str(&format!("staticPodPath: {manifests}\n"));
        let kubeconfig = kubeconfig.display().to_string();
        self.start_with(&["--kubeconfig", &kubeconfig])
    }

    fn start_with(&mut self, mode: &[&str]) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("bosun.log"))?;
        // Only the memory default of evictionHard: the kubelet's disk defaults (10 % / 15 %
        // free) would collect the tests' images on a host whose disk is merely quite full.
        let config = self.path("config.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard: {{memory.available: 100Mi}}\n{}",
                self.config
            ),
        )?;
        let child = Command::new(bosun_bin())
            .args(mode)
            .arg("--config")
            .arg(&config)
            .args(self.common_args())
            .args(&self.extra_args)
            .env("RUST_LOG", "info,bosun=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting bosun")?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9` the agent (containers and keepers live on).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes a manifest file.
    pub fn apply(&self, file: &str, manifest: &str) -> Result<()> {
        let tmp = self.path(&format!(".{file}.tmp"));
        std::fs::write(&tmp, manifest)?;
        std::fs::rename(&tmp, self.path("manifests").join(file))?;
        Ok(())
    }

    pub fn delete(&self, file: &str) -> Result<()> {
        std::fs::remove_file(self.path("manifests").join(file))?;
        Ok(())
    }

    /// The pod's last written status object (`<run>/pods/<uid>/status.json`), by manifest name.
    pub fn pod(&self, name: &str) -> Option<Value> {
        let name = full_name(name);
        let dir = std::fs::read_dir(self.path("run").join("pods")).ok()?;
        for e in dir.flatten() {
            let Ok(bytes) = std::fs::read(e.path().join("status.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if v["metadata"]["name"] == name {
                return Some(v);
            }
        }
        None
    }

    /// Waits until the pod exists and `pred` holds; fails with the bosun log tail on timeout.
    pub fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let start = Instant::now();
        loop {
            if let Some(p) = self.pod(name) {
                if pred(&p) {
                    return Ok(p);
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "pod {name}: timed out after {timeout:?} waiting for {what}\nlast status: {}\nbosun log tail:\n{}",
                    self.pod(name).map(|p| serde_json::to_string_pretty(&p["status"]).unwrap_or_default()).unwrap_or_else(|| "none".into()),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the pod's status is gone (terminated and cleaned up).
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while self.pod(name).is_some() {
            if start.elapsed() > timeout {
                bail!(
                    "pod {name} still present after {timeout:?}\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.path("bosun.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `bosun logs` output, by manifest name.
    pub fn logs(&self, pod: &str, container: &str, previous: bool) -> Result<String> {
        let full = full_name(pod);
        let mut args = vec!["logs", full.as_str(), container];
        if previous {
            args.push("--previous");
        }
        let out = self.bosun(&args)?;
        if !out.status.success() {
            bail!(
                "bosun logs {pod} {container}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every mount below this node's folder.
    pub fn mounts(&self) -> Vec<String> {
        let root = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect()
    }

    /// Every cgroup folder under this node's cgroup root (any hierarchy), below `kubepods`.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for base in cgroup_bases() {
            let root = base
                .join(self.cgroup_root.trim_start_matches('/'))
                .join("kubepods");
            collect_dirs(&root, &mut out);
        }
        out
    }

    /// Processes started by this node (their command line or cwd mentions its folder).
    pub fn processes(&self) -> Vec<i32> {
        let me = self.dir.path().display().to_string();
        let mut out = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return out;
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cgroup = std::fs::read_to_string(p.path().join("cgroup")).unwrap_or_default();
            if cmdline.contains(&me) || cgroup.contains(&self.cgroup_root) {
                out.push(pid);
            }
        }
        out
    }

    /// Removes every pod through bosun, waits for that, stops bosun; then removes by force what
    /// is still there (and says so). Returns what had leaked.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut leaks = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.path("manifests")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = self.start();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            let any = std::fs::read_dir(self.path("run").join("pods"))
                .map(|d| d.count() > 0)
                .unwrap_or(false);
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(c) = self.child.as_mut() {
            // SAFETY: kill(2) with a pid we own and a valid signal.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
            self.child = None;
        }
        let procs = self.processes();
        if !procs.is_empty() {
            leaks.push(format!("processes {procs:?}"));
            for pid in procs {
                // SAFETY: kill(2) takes plain integers.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        reap_orphans();
        let mut mounts = self.mounts();
        if !mounts.is_empty() {
            leaks.push(format!("mounts {mounts:?}"));
            mounts.reverse();
            for m in mounts {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
        // The bridge plugin leaves its bridge behind by design; it is this node's own.
        let _ = Command::new("ip")
            .args(["link", "del", &self.net.bridge])
            .stderr(Stdio::null())
            .status();
        let cgroups = self.cgroups();
        if !cgroups.is_empty() {
            leaks.push(format!("cgroups {cgroups:?}"));
        }
        // The private cgroup root itself is ours in any case.
        for base in cgroup_bases() {
            let root = base.join(self.cgroup_root.trim_start_matches('/'));
            let mut dirs = Vec::new();
            collect_dirs(&root, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = std::fs::remove_dir(&d);
            }
            let _ = std::fs::remove_dir(&root);
        }
        leaks
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let leaks = self.teardown();
        if !leaks.is_empty() {
            eprintln!("node {}: cleaned up leftovers: {leaks:?}", self.name);
        }
    }
}

fn cgroup_bases() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            if e.path().is_dir() {
                v.push(e.path());
            }
        }
    }
    v
}

fn collect_dirs(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    out.push(root.to_path_buf());
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// Makes the test process the subreaper of what its bosun leaves behind (keepers outlive a
/// killed agent; this VM's PID 1 does not reap) and reaps whatever has exited.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps exited orphans. Call only where no other child of the test is being waited for.
pub fn reap_orphans() {
    loop {
        // SAFETY: waitpid with a null status pointer is allowed and touches no memory of ours.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}

/// Container state helpers on status JSON.
pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    for key in ["containerStatuses", "initContainerStatuses"] {
        if let Some(list) = pod["status"][key].as_array() {
            if let Some(c) = list.iter().find(|c| c["name"] == name) {
                return c;
            }
        }
    }
    &Value::Null
}

pub fn is_running(pod: &Value, name: &str) -> bool {
    !container(pod, name)["state"]["running"].is_null()
}

pub fn terminated<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    let t = &container(pod, name)["state"]["terminated"];
    (!t.is_null()).then_some(t)
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// A Pod manifest named `name` with the given (indented) spec body.
pub fn pod(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// A started node for one test (the test process becomes the subreaper of its keepers).
pub fn setup(name: &str) -> Result<Node> {
    become_subreaper();
    let mut node = Node::new(name)?;
    node.start()?;
    Ok(node)
}

/// [`setup`] with a KubeletConfiguration file: `yaml` holds its keys (without `kind`).
pub fn setup_with_config(name: &str, yaml: &str) -> Result<Node> {
    become_subreaper();
    let mut node = Node::new(name)?;
    node.config = yaml.to_string();
    node.start()?;
    Ok(node)
}

/// Tears the node down and fails if anything had leaked (mounts, cgroups, processes).
pub fn check_clean(mut node: Node) -> Result<()> {
    let leaks = node.teardown();
    anyhow::ensure!(
        leaks.is_empty(),
        "leaked after pods were removed: {leaks:?}"
    );
    Ok(())
}
