//! The CRI socket, driven by the real crictl (sigs.k8s.io/cri-tools at the version of
//! tests/kubeadm/env.sh, built once from the Go module proxy by `tests/kubeadm/build.sh crictl`
//! and cached under ~/.cache/bosun/tools): what crictl shows is what `bosun pods` shows.
//! Privileged tier: it runs containers.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bosun_tests::registry::Registry;
use bosun_tests::{
    busybox_layout, check_clean, container, full_name, is_running, pod, repo_root, setup,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(60);

/// The CRI id of the runtime's container `id`.
fn cri_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The crictl binary: `$CRICTL`, else the cached build (made when missing).
fn crictl_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CRICTL") {
        return Ok(p.into());
    }
    let script = repo_root().join("tests/kubeadm/build.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}/tests/kubeadm/env.sh && {} crictl >&2 && echo \"$CRICTL_BIN/crictl\"",
            repo_root().display(),
            script.display()
        ))
        .output()?;
    if !out.status.success() {
        bail!("building crictl: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

struct Crictl {
    bin: PathBuf,
    endpoint: String,
}

impl Crictl {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--runtime-endpoint")
            .arg(&self.endpoint)
            .arg("--image-endpoint")
            .arg(&self.endpoint)
            .arg("--timeout")
            .arg("10s")
            .args(args)
            .output()
            .context("running crictl")?;
        if !out.status.success() {
            bail!(
                "crictl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let text = self.run(args)?;
        serde_json::from_str(&text).with_context(|| format!("crictl {args:?}: {text}"))
    }

    /// [`Crictl::run`] with `input` on crictl's stdin.
    fn run_with_input(&self, args: &[&str], input: &[u8]) -> Result<String> {
        let mut child = Command::new(&self.bin)
            .arg("--runtime-endpoint")
            .arg(&self.endpoint)
            .arg("--timeout")
            .arg("10s")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running crictl")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "crictl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `crictl port-forward --transport <transport> <pod> :<port>`, sends `request` to the
    /// local port it prints and returns the answer; stops crictl.
    fn port_forward(
        &self,
        transport: &str,
        pod: &str,
        port: u16,
        request: &[u8],
    ) -> Result<String> {
        use std::io::{BufRead, Read};
        let mut child = Command::new(&self.bin)
            .arg("--runtime-endpoint")
            .arg(&self.endpoint)
            .args(["port-forward", "--transport", transport, pod])
            .arg(format!(":{port}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running crictl port-forward")?;
        let result = (|| -> Result<String> {
            let stdout = child.stdout.take().context("stdout")?;
            let mut lines = std::io::BufReader::new(stdout).lines();
            // "Forwarding from 127.0.0.1:<local> -> <port>"
            let local = loop {
                let line = lines
                    .next()
                    .context("crictl port-forward printed no port")??;
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    break rest
                        .split_whitespace()
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .with_context(|| format!("{line:?}"))?;
                }
            };
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", local))?;
            conn.set_read_timeout(Some(Duration::from_secs(20)))?;
            conn.write_all(request)?;
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        })();
        let _ = child.kill();
        let out = child.wait_with_output()?;
        result.with_context(|| {
            format!(
                "crictl port-forward: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn fails(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--runtime-endpoint")
            .arg(&self.endpoint)
            .arg("--image-endpoint")
            .arg(&self.endpoint)
            .args(args)
            .output()?;
        ensure!(!out.status.success(), "crictl {args:?} succeeded");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A protobuf JSON uint64 (a string) or number as a number; 0 when absent.
fn uint(v: &Value) -> u64 {
    let v = &v["value"];
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root: runs containers; builds crictl from the Go module proxy once"]
fn crictl_shows_what_bosun_pods_shows() -> Result<()> {
    let bin = crictl_bin()?;
    let node = setup("cri")?;
    let socket = node.path("run").join("bosun.sock");
    let crictl = Crictl {
        bin,
        endpoint: format!("unix://{}", socket.display()),
    };
    node.apply(
        "p.yaml",
        &pod(
            "cri",
            "  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo hello-from-cri; mkdir -p /www && echo forwarded-bytes > /www/index.html && httpd -p 8080 -h /www; exec sleep 3600']\n  - name: quits\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'exit 2']\n",
        ),
    )?;
    let p = node.wait_pod("cri", T, "main running, quits restarted", |p| {
        is_running(p, "main")
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["name"] == "quits" && c["restartCount"].as_i64() >= Some(1))
                })
    })?;
    let uid = p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Only root may connect.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket)?.permissions());
    ensure!(mode & 0o777 == 0o660, "socket mode {mode:o}");

    let version = crictl.run(&["version"])?;
    ensure!(
        version.contains("RuntimeName:  bosun") && version.contains("RuntimeApiVersion:  v1"),
        "{version}"
    );
    let info = crictl.json(&["info"])?;
    let conds = info["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        conds
            .iter()
            .any(|c| c["type"] == "RuntimeReady" && c["status"] == true),
        "{info}"
    );

    // pods: the pod's uid is the sandbox id, ready, with its name and namespace.
    let pods = crictl.json(&["pods", "-o", "json"])?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    ensure!(items.len() == 1, "{pods}");
    let sb = &items[0];
    ensure!(sb["id"] == uid.as_str(), "{sb}");
    ensure!(sb["state"] == "SANDBOX_READY", "{sb}");
    ensure!(sb["metadata"]["name"] == full_name("cri").as_str(), "{sb}");
    ensure!(sb["metadata"]["namespace"] == "default", "{sb}");
    let inspectp = crictl.json(&["inspectp", &uid[..12]])?;
    ensure!(inspectp["status"]["id"] == uid.as_str(), "{inspectp}");

    // ps -a: the runtime's containers, with the restart attempts `bosun pods` counts.
    let ps = crictl.json(&["ps", "-a", "-o", "json"])?;
    let cs = ps["containers"].as_array().cloned().unwrap_or_default();
    let main: Vec<&Value> = cs
        .iter()
        .filter(|c| c["metadata"]["name"] == "main")
        .collect();
    ensure!(main.len() == 1, "{ps}");
    ensure!(main[0]["state"] == "CONTAINER_RUNNING", "{ps}");
    ensure!(main[0]["podSandboxId"] == uid.as_str(), "{ps}");
    let main_id = main[0]["id"].as_str().unwrap_or_default().to_string();
    // A container's CRI id is the hex SHA-256 of the runtime's id, 64 digits as containerd's.
    ensure!(main_id == cri_id(&format!("{uid}_main_0")), "{main_id}");
    // `bosun pods` shows the 13 characters crictl prints.
    let listing = node.bosun(&["pods"])?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    ensure!(
        listing
            .lines()
            .any(|l| l.contains(" main ") && l.contains(&main_id[..13])),
        "{listing}"
    );
    let quits: Vec<&Value> = cs
        .iter()
        .filter(|c| c["metadata"]["name"] == "quits")
        .collect();
    ensure!(
        !quits.is_empty()
            && quits
                .iter()
                .all(|c| c["state"] == "CONTAINER_EXITED" || c["state"] == "CONTAINER_RUNNING"),
        "{ps}"
    );
    let running = crictl.json(&["ps", "-o", "json"])?;
    ensure!(
        running["containers"]
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["state"] == "CONTAINER_RUNNING")),
        "{running}"
    );

    // The pod's containers by its sandbox id's prefix.
    let of_pod = crictl.json(&["ps", "-a", "--pod", &uid[..13], "-o", "json"])?;
    let of_pod = of_pod["containers"].as_array().cloned().unwrap_or_default();
    ensure!(
        of_pod.len() >= 2 && of_pod.iter().all(|c| c["podSandboxId"] == uid.as_str()),
        "{of_pod:?}"
    );

    // inspect, logs and exec of the running container by the prefix `crictl ps` prints, as an
    // operator types it; the runtime's id (the pod status's containerID) names it too.
    let short = &main_id[..13];
    for id in [short, main_id.as_str(), &format!("{uid}_main_0")] {
        let inspect = crictl.json(&["inspect", id])?;
        ensure!(inspect["status"]["id"] == main_id.as_str(), "{inspect}");
        ensure!(
            inspect["status"]["state"] == "CONTAINER_RUNNING",
            "{inspect}"
        );
    }
    let logs = crictl.run(&["logs", short])?;
    ensure!(logs.contains("hello-from-cri"), "{logs:?}");
    let out = crictl.run(&["exec", "-s", short, "sh", "-c", "echo sync-$((1+2))"])?;
    ensure!(out.trim() == "sync-3", "{out:?}");
    let err = crictl.fails(&["exec", "-s", short, "sh", "-c", "exit 3"])?;
    ensure!(!err.is_empty(), "a failing command fails crictl");
    // Streaming exec over the URL Exec answers (SPDY, crictl's default, and WebSocket).
    let out = crictl.run(&[
        "exec",
        short,
        "sh",
        "-c",
        "echo streamed-$((2+3)); echo to-err >&2",
    ])?;
    ensure!(out.contains("streamed-5"), "{out:?}");
    let out = crictl.run(&["exec", "--transport", "websocket", short, "echo", "over-ws"])?;
    ensure!(out.trim() == "over-ws", "{out:?}");
    let out = crictl.run_with_input(&["exec", "-i", short, "cat"], b"from-stdin\n")?;
    ensure!(out.trim() == "from-stdin", "{out:?}");
    // stats: the CPU and memory of the running container's cgroup, as /stats/summary reports
    // them; the exited attempts of `quits` have no figures.
    let stats = crictl.json(&["stats", "-a", "-o", "json"])?;
    let all = stats["stats"].as_array().cloned().unwrap_or_default();
    let of = |id: &str| all.iter().find(|s| s["attributes"]["id"] == id).cloned();
    let main_stats = of(&main_id).with_context(|| format!("no stats of main: {stats}"))?;
    ensure!(
        main_stats["attributes"]["metadata"]["name"] == "main"
            && uint(&main_stats["cpu"]["usageCoreNanoSeconds"]) > 0
            && uint(&main_stats["memory"]["workingSetBytes"]) > 0,
        "{main_stats}"
    );
    // Every container has stats, exited attempts too (`-a`), without figures.
    ensure!(
        all.iter()
            .any(|s| s["attributes"]["metadata"]["name"] == "quits"
                && s["cpu"].is_null()
                && s["memory"].is_null()),
        "{stats}"
    );
    let table = crictl.run(&["stats", "--id", short])?;
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with(short) && l.contains(" main ")),
        "{table}"
    );
    let statsp = crictl.json(&["statsp", "-o", "json"])?;
    let sp = &statsp["stats"][0];
    ensure!(
        sp["attributes"]["id"] == uid.as_str()
            && uint(&sp["linux"]["memory"]["workingSetBytes"]) > 0
            && uint(&sp["linux"]["cpu"]["usageCoreNanoSeconds"]) > 0
            && sp["linux"]["containers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["attributes"]["id"] == main_id.as_str())),
        "{statsp}"
    );

    // port-forward: bytes from httpd in the pod's network namespace (nothing listens on the
    // node's 8080), over SPDY (crictl's default) and SPDY tunneled in WebSocket.
    for transport in ["spdy", "websocket"] {
        let page = crictl.port_forward(transport, &uid[..13], 8080, b"GET / HTTP/1.0\r\n\r\n")?;
        ensure!(
            page.starts_with("HTTP/1.") && page.contains("forwarded-bytes"),
            "{transport}: {page:?}"
        );
    }

    // An exited attempt has its exit code and the kubelet's reason.
    let quit_id = quits
        .iter()
        .find(|c| c["state"] == "CONTAINER_EXITED")
        .and_then(|c| c["id"].as_str())
        .context("an exited attempt of quits")?
        .to_string();
    let q = crictl.json(&["inspect", &quit_id])?;
    ensure!(
        q["status"]["exitCode"] == 2 && q["status"]["reason"] == "Error",
        "{q}"
    );

    // stop: as containerd's, the pod's policy then restarts the container (attempt 1), and
    // crictl's attempt is `bosun pods`' restart count.
    crictl.run(&["stop", short])?;
    let p = node.wait_pod("cri", T, "main restarted after crictl stop", |p| {
        is_running(p, "main") && container(p, "main")["restartCount"].as_i64() >= Some(1)
    })?;
    let restarts = container(&p, "main")["restartCount"].as_i64().unwrap_or(-1);
    let ps = crictl.json(&["ps", "--name", "^main$", "-o", "json"])?;
    let running: Vec<&Value> = ps["containers"].as_array().into_iter().flatten().collect();
    ensure!(running.len() == 1, "{ps}");
    ensure!(
        running[0]["metadata"]["attempt"].as_i64() == Some(restarts)
            && running[0]["id"] == cri_id(&format!("{uid}_main_{restarts}")).as_str(),
        "{ps} restarts={restarts}"
    );
    let now_main = running[0]["id"].as_str().unwrap_or_default().to_string();
    let now_short = &now_main[..13.min(now_main.len())];

    // images: busybox as imported.
    let images = crictl.json(&["images", "-o", "json"])?;
    let tags: Vec<String> = images["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["repoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    ensure!(
        tags.iter().any(|t| t == "docker.io/library/busybox:latest"),
        "{images}"
    );
    let status = crictl.json(&["inspecti", "busybox"])?;
    ensure!(
        status["status"]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{status}"
    );
    ensure!(
        crictl.run(&["imagefsinfo"])?.contains("usedBytes"),
        "imagefsinfo"
    );

    // pull and rmi against a real registry: the image appears in `crictl images`, and is gone
    // after rmi; an image a container uses is refused.
    let reg = Registry::start(None)?;
    reg.push(&busybox_layout()?, "latest", "crictl/bb:v1")?;
    let reference = reg.reference("crictl/bb:v1");
    let out = crictl.run(&["pull", &reference])?;
    ensure!(out.contains("sha256:"), "pull: {out}");
    let has = |r: &str| -> Result<bool> {
        let images = crictl.json(&["images", "-o", "json"])?;
        Ok(images["images"].as_array().into_iter().flatten().any(|i| {
            i["repoTags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == r))
        }))
    };
    ensure!(has(&reference)?, "pulled image not listed");
    crictl.run(&["rmi", &reference])?;
    ensure!(!has(&reference)?, "rmi: still listed");

    // rm of an exited attempt: gone from `ps -a`; the running container is refused without -f.
    let exited: Vec<String> = crictl.json(&["ps", "-a", "--name", "^quits$", "-o", "json"])?
        ["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] == "CONTAINER_EXITED")
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();
    let old = exited
        .first()
        .context("no exited attempt of quits")?
        .clone();
    crictl.run(&["rm", &old])?;
    let err = crictl.fails(&["inspect", &old])?;
    ensure!(err.to_lowercase().contains("not found"), "{err}");

    // logs -f: what was written, then it keeps following (still running a second later).
    {
        let mut follow = Command::new(&crictl.bin)
            .arg("--runtime-endpoint")
            .arg(&crictl.endpoint)
            .args(["logs", "-f", now_short])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(follow.stdout.take().context("stdout")?);
        std::io::BufRead::read_line(&mut reader, &mut line)?;
        std::thread::sleep(Duration::from_secs(1));
        let still = follow.try_wait()?.is_none();
        let _ = follow.kill();
        let _ = follow.wait();
        ensure!(line.trim() == "hello-from-cri", "logs -f: {line:?}");
        ensure!(still, "logs -f returned instead of following");
    }

    // exec -it: a terminal in the container (script(1) gives crictl one).
    let out = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --runtime-endpoint {} exec -it {now_short} sh -c 'tty; echo tty-ok'",
            crictl.bin.display(),
            crictl.endpoint
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("/dev/pts/") && text.contains("tty-ok"),
        "exec -it: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pods come from the manifest folder: crictl cannot make one, and says where they come from.
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("sandbox.json");
    std::fs::write(
        &cfg,
        r#"{"metadata": {"name": "x", "namespace": "default", "uid": "x"}}"#,
    )?;
    let err = crictl.fails(&["runp", cfg.to_str().unwrap_or_default()])?;
    ensure!(err.contains("static pod folder"), "{err}");
    // Unknown ids are NotFound, not a crash.
    let err = crictl.fails(&["inspect", "no-such-container"])?;
    ensure!(err.to_lowercase().contains("not found"), "{err}");

    // A client that sends garbage gets its connection closed; the socket keeps serving.
    {
        let mut s = std::os::unix::net::UnixStream::connect(&socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let _ = s.write_all(&[0xff; 4096]);
        let mut buf = [0u8; 256];
        let _ = std::io::Read::read(&mut s, &mut buf);
    }
    ensure!(crictl.run(&["version"])?.contains("bosun"), "after garbage");

    node.delete("p.yaml")?;
    node.wait_gone("cri", T)?;
    // The pod is gone from crictl too.
    let pods = crictl.json(&["pods", "-o", "json"])?;
    ensure!(
        pods["items"].as_array().is_none_or(|a| a.is_empty()),
        "{pods}"
    );
    check_clean(node)
}

/// `kubeadm init`'s order: the manifest folder's pods start while the apiserver does not answer
/// (they are the apiserver), the Node's registration retrying in the background meanwhile; and
/// a static pod removed then still ends (only the decision about orphans waits for the API).
#[test]
#[ignore = "needs root: runs a static pod in cluster mode"]
fn static_pods_start_before_the_apiserver_answers() -> Result<()> {
    bosun_tests::become_subreaper();
    let mut node = bosun_tests::Node::new("early")?;
    // Nothing listens on port 1.
    let kubeconfig = node.path("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
    )?;
    node.apply(
        "early.yaml",
        &pod(
            "early",
            "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n",
        ),
    )?;
    node.start_cluster_mode(&kubeconfig)?;
    let result = (|| -> Result<()> {
        node.wait_pod("early", T, "Running", |p| is_running(p, "c"))?;
        let log = std::fs::read_to_string(node.path("bosun.log"))?;
        ensure!(
            log.contains("cannot register the node"),
            "registration not retried: {}",
            node.log_tail(20)
        );
        node.delete("early.yaml")?;
        node.wait_gone("early", T)
    })();
    // (check_clean stops the agent with SIGTERM, which releases the node's mounts and cgroups.)
    let clean = check_clean(node);
    result?;
    clean
}

/// An enabled kubelet.service before `kubeadm init` writes its `--config` file: bosun serves
/// the CRI socket meanwhile (kubeadm's preflight checks it first, its image pulls go through
/// it), and once the file is there it starts again with it.
#[test]
#[ignore = "needs root: serves a node's CRI socket; builds crictl from the Go module proxy once"]
fn the_cri_socket_is_served_while_the_config_file_is_missing() -> Result<()> {
    bosun_tests::become_subreaper();
    let bin = crictl_bin()?;
    let node = bosun_tests::Node::new("criwait")?;
    let socket = node.path("run").join("bosun.sock");
    let crictl = Crictl {
        bin,
        endpoint: format!("unix://{}", socket.display()),
    };
    let config = node.path("kubelet").join("config.yaml");
    let log = std::fs::File::create(node.path("bosun.log"))?;
    let dir = |d: &str| node.path(d).display().to_string();
    let mut agent = Command::new(bosun_tests::bosun_bin())
        .arg("--config")
        .arg(&config)
        .arg("--kubeconfig")
        .arg(node.path("kubelet").join("kubeconfig"))
        .args(["--root-dir", &dir("root"), "--run-dir", &dir("run")])
        .args([
            "--data-dir",
            &dir("data"),
            "--pod-logs-dir",
            &dir("pods-logs"),
        ])
        .args(["--container-logs-dir", &dir("containers-logs")])
        .args([
            "--cgroup-root",
            &node.cgroup_root,
            "--cni-conf-dir",
            &dir("cni"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = (|| -> Result<()> {
        let start = std::time::Instant::now();
        while !socket.exists() {
            ensure!(start.elapsed() < T, "no CRI socket: {}", node.log_tail(20));
            ensure!(
                agent.try_wait()?.is_none(),
                "bosun exited: {}",
                node.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let version = crictl.run(&["version"])?;
        ensure!(
            version
                .lines()
                .any(|l| l.starts_with("RuntimeName:") && l.contains("bosun")),
            "{version}"
        );
        let images = crictl.run(&["images", "-q"])?;
        ensure!(!images.trim().is_empty(), "the store's images: {images:?}");
        let info = crictl.json(&["info"])?;
        ensure!(
            info["status"]["conditions"][0]["type"] == "RuntimeReady",
            "{info}"
        );
        ensure!(
            std::fs::read_to_string(node.path("bosun.log"))?
                .contains("the config file does not exist yet"),
            "{}",
            node.log_tail(20)
        );
        // kubeadm writes the file (and kubeadm-flags.env beside it): bosun exits for the
        // service manager to start it again with both.
        std::fs::create_dir_all(node.path("kubelet"))?;
        std::fs::write(
            &config,
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
        )?;
        let start = std::time::Instant::now();
        while agent.try_wait()?.is_none() {
            ensure!(start.elapsed() < T, "still waiting: {}", node.log_tail(20));
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(node.path("bosun.log"))?;
        ensure!(
            log.contains("the config file exists now"),
            "{}",
            node.log_tail(20)
        );
        ensure!(
            agent.try_wait()?.is_some_and(|s| s.success()),
            "bosun did not exit cleanly: {}",
            node.log_tail(20)
        );
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    result?;
    check_clean(node)
}
