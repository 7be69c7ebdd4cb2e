//! End-to-end tests of standalone mode: real containers through the real keeper, libcontainer,
//! cgroups and mounts. Privileged tier: each test says why it needs root. Run them one at a time
//! (`--test-threads=1`): teardown reaps orphaned keepers with waitpid(-1).

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Result};
use bosun_tests::{check_clean, container, is_running, phase, pod, setup, terminated};

const T: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root: runs containers (namespaces, overlay mounts, cgroups)"]
fn exit_code_env_args_and_logs() -> Result<()> {
    let node = setup("exit")?;
    node.apply(
        "p.yaml",
        &pod(
            "exit",
            "  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c]\n    args: ['echo \"greeting=$GREETING $(WHO)\"; echo to-stderr >&2; exit 3']\n    env:\n    - name: WHO\n      value: world\n    - name: GREETING\n      value: hello-$(WHO)\n",
        ),
    )?;
    let p = node.wait_pod("exit", T, "phase Failed", |p| phase(p) == "Failed")?;
    let t = terminated(&p, "main").expect("terminated");
    ensure!(t["exitCode"] == 3, "exit code: {t}");
    ensure!(t["reason"] == "Error", "reason: {t}");
    let logs = node.logs("exit", "main", false)?;
    ensure!(
        logs.contains("greeting=hello-world world"),
        "logs: {logs:?}"
    );
    ensure!(logs.contains("to-stderr"), "logs: {logs:?}");
    // The raw CRI file has both streams in CRI format.
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    let file = node
        .path("pods-logs")
        .join(format!("default_exit-node1_{uid}/main/0.log"));
    let raw = std::fs::read_to_string(&file)?;
    ensure!(
        raw.lines()
            .any(|l| l.contains(" stdout F greeting=hello-world world")),
        "{raw}"
    );
    ensure!(
        raw.lines().any(|l| l.contains(" stderr F to-stderr")),
        "{raw}"
    );
    // /var/log/containers-style symlink.
    let links: Vec<_> = std::fs::read_dir(node.path("containers-logs"))?
        .flatten()
        .collect();
    ensure!(
        links.iter().any(|l| l
            .file_name()
            .to_string_lossy()
            .starts_with("exit-node1_default_main-")),
        "links"
    );
    node.delete("p.yaml")?;
    node.wait_gone("exit", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: cgroup limits and the OOM killer"]
fn limits_visible_inside_and_oom_killed() -> Result<()> {
    let node = setup("limits")?;
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max; \
                  cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu.weight; \
                  if { echo 7 > /sys/fs/cgroup/pids/pids.max || echo 7 > /sys/fs/cgroup/pids.max; } 2>/dev/null; \
                  then echo cgroups-writable; else echo cgroups-read-only; fi";
    node.apply(
        "l.yaml",
        &pod(
            "limits",
            &format!("  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{script}']\n    resources:\n      requests: {{cpu: 250m, memory: 32Mi}}\n      limits: {{cpu: 500m, memory: 64Mi}}\n"),
        ),
    )?;
    node.apply(
        "o.yaml",
        &pod(
            "oom",
            "  restartPolicy: Never\n  containers:\n  - name: hog\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'head -c 200m /dev/zero | tail > /dev/null']\n    resources:\n      limits: {memory: 32Mi}\n",
        ),
    )?;
    let p = node.wait_pod("limits", T, "Succeeded", |p| phase(p) == "Succeeded")?;
    ensure!(
        p["status"]["qosClass"] == "Burstable",
        "qos {}",
        p["status"]["qosClass"]
    );
    let out = node.logs("limits", "main", false)?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 4, "output {out:?}");
    ensure!(
        lines[0] == (64u64 << 20).to_string(),
        "memory limit {out:?}"
    );
    ensure!(
        lines[1] == "50000" || lines[1] == "50000 100000",
        "cpu quota {out:?}"
    );
    // 250m -> 256 shares (v1) or weight 1 + (254*9999)/262142 = 10 (v2).
    ensure!(lines[2] == "256" || lines[2] == "10", "cpu shares {out:?}");
    // An unprivileged container cannot raise its own limits (runc mounts them read-only too).
    ensure!(lines[3] == "cgroups-read-only", "cgroup files {out:?}");
    let p = node.wait_pod("oom", T, "terminated", |p| terminated(p, "hog").is_some())?;
    let t = terminated(&p, "hog").expect("terminated");
    ensure!(t["reason"] == "OOMKilled", "reason {t}");
    ensure!(t["exitCode"] == 137, "exit {t}");
    node.delete("l.yaml")?;
    node.delete("o.yaml")?;
    node.wait_gone("limits", T)?;
    node.wait_gone("oom", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: cgroup limits"]
fn pod_level_resources_limit_the_pod_cgroup() -> Result<()> {
    let node = setup("podres")?;
    // Pod-level resources (spec.resources) and containers without any: the pod is Guaranteed,
    // its cgroup has the pod-level limits, a container without limits gets them too (its own
    // cgroup, and the downward API's defaults).
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max; \
                  echo $LIMIT_MEM $LIMIT_CPU; sleep 3600";
    node.apply(
        "r.yaml",
        &pod(
            "podres",
            &format!("  resources:\n    limits: {{cpu: 500m, memory: 96Mi}}\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{script}']\n    env:\n    - name: LIMIT_MEM\n      valueFrom: {{resourceFieldRef: {{resource: limits.memory}}}}\n    - name: LIMIT_CPU\n      valueFrom: {{resourceFieldRef: {{resource: limits.cpu, divisor: 1m}}}}\n  - name: side\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n"),
        ),
    )?;
    let p = node.wait_pod("podres", T, "running", |p| {
        is_running(p, "main") && is_running(p, "side")
    })?;
    ensure!(
        p["status"]["qosClass"] == "Guaranteed",
        "qos {}",
        p["status"]["qosClass"]
    );
    let uid = p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod_cgroups: Vec<_> = node
        .cgroups()
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy() == format!("pod{uid}"))
        })
        .collect();
    let read = |file: &str| {
        pod_cgroups
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
    };
    let memory = read("memory.limit_in_bytes").or_else(|| read("memory.max"));
    ensure!(
        memory.as_deref() == Some((96u64 << 20).to_string().as_str()),
        "pod cgroup memory limit {memory:?} in {pod_cgroups:?}"
    );
    let quota = read("cpu.cfs_quota_us").or_else(|| read("cpu.max"));
    ensure!(
        quota.as_deref() == Some("50000") || quota.as_deref() == Some("50000 100000"),
        "pod cgroup cpu quota {quota:?}"
    );
    let mut out = String::new();
    for _ in 0..50 {
        out = node.logs("podres", "main", false)?;
        if out.lines().count() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 3, "output {out:?}");
    ensure!(
        lines[0] == (96u64 << 20).to_string(),
        "container memory limit {out:?}"
    );
    ensure!(
        lines[1] == "50000" || lines[1] == "50000 100000",
        "container cpu quota {out:?}"
    );
    ensure!(
        lines[2] == format!("{} 500", 96u64 << 20),
        "downward API {out:?}"
    );
    node.delete("r.yaml")?;
    node.wait_gone("podres", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: runs containers that crash and are restarted"]
fn restart_backoff_intervals() -> Result<()> {
    let node = setup("backoff")?;
    node.apply(
        "b.yaml",
        &pod("crash", "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'date +%s; exit 1']\n"),
    )?;
    // Attempt 0 at t0, attempt 1 at once, attempt 2 about 10 s after attempt 1 ended, attempt 3
    // about 20 s after attempt 2 ended.
    let p = node.wait_pod("crash", Duration::from_secs(90), "3 restarts", |p| {
        container(p, "c")["restartCount"].as_i64().unwrap_or(0) >= 3
    })?;
    let c = container(&p, "c");
    ensure!(
        c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            || !c["state"]["running"].is_null()
            || !c["state"]["terminated"].is_null(),
        "{c}"
    );
    // The starts, from the logs of each attempt (each prints its start second).
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    let dir = node
        .path("pods-logs")
        .join(format!("default_crash-node1_{uid}/c"));
    let mut starts = Vec::new();
    for n in 0..4 {
        let text = std::fs::read_to_string(dir.join(format!("{n}.log")))?;
        let secs: i64 = text.split_whitespace().nth(3).unwrap_or("0").parse()?;
        starts.push(secs);
    }
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    ensure!(gaps[0] <= 2, "first restart should be immediate: {gaps:?}");
    ensure!(
        (9..=13).contains(&gaps[1]),
        "second restart after ~10s: {gaps:?}"
    );
    ensure!(
        (19..=24).contains(&gaps[2]),
        "third restart after ~20s: {gaps:?}"
    );
    // Older attempts are garbage collected: at most the current and the previous container exist.
    let containers = std::fs::read_dir(node.path("run").join("containers"))?.count();
    ensure!(containers <= 2, "{containers} containers kept");
    node.delete("b.yaml")?;
    node.wait_gone("crash", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: graceful termination of real container processes"]
fn graceful_termination_prestop_sigterm_sigkill() -> Result<()> {
    let node = setup("grace")?;
    let marks = node.path("host");
    node.apply(
        "g.yaml",
        &pod(
            "grace",
            &format!(
                "  terminationGracePeriodSeconds: 4\n  volumes:\n  - name: marks\n    hostPath: {{path: {}, type: Directory}}\n  containers:\n  - name: polite\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'trap \"echo got-term; date +%s > /marks/polite-exit; exit 0\" TERM; while true; do sleep 0.1; done']\n    volumeMounts: [{{name: marks, mountPath: /marks}}]\n    lifecycle:\n      preStop:\n        exec:\n          command: [sh, -c, 'date +%s > /marks/prestop; sleep 1']\n  - name: stubborn\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'trap \"\" TERM; while true; do sleep 0.1; done']\n",
                marks.display()
            ),
        ),
    )?;
    node.wait_pod("grace", T, "running", |p| {
        is_running(p, "polite") && is_running(p, "stubborn")
    })?;
    let t0 = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs_f64();
    node.delete("g.yaml")?;
    node.wait_gone("grace", T)?;
    let took = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs_f64()
        - t0;
    let prestop: f64 = std::fs::read_to_string(marks.join("prestop"))?
        .trim()
        .parse()?;
    let polite: f64 = std::fs::read_to_string(marks.join("polite-exit"))?
        .trim()
        .parse()?;
    ensure!(
        prestop <= polite,
        "preStop ({prestop}) must run before SIGTERM ({polite})"
    );
    ensure!(
        polite - prestop >= 0.9,
        "SIGTERM only after preStop finished: {prestop} {polite}"
    );
    // The stubborn one ignores SIGTERM and is SIGKILLed when the 4 s grace runs out.
    ensure!(
        (3.5..12.0).contains(&took),
        "pod removal took {took:.1}s with a 4s grace"
    );
    check_clean(node)
}

#[test]
#[ignore = "needs root: emptyDir and hostPath mounts into containers"]
fn empty_dir_shared_and_host_path_types() -> Result<()> {
    let node = setup("vols")?;
    let host = node.path("host");
    std::fs::create_dir_all(host.join("dir"))?;
    std::fs::write(host.join("file"), "host-file-content")?;
    let sock = host.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock)?;
    let h = host.display();
    node.apply(
        "v.yaml",
        &pod(
            "vols",
            &format!(
                "  restartPolicy: Never\n  initContainers:\n  - name: writer\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo shared-bytes > /data/f']\n    volumeMounts: [{{name: scratch, mountPath: /data}}]\n  containers:\n  - name: reader\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'cat /data/f; cat /hf; echo; test -d /hd && echo dir-ok; test -S /hs && echo sock-ok; test -c /hc && echo char-ok; test -d /created && echo created-ok; test -f /createdf && echo createdf-ok; df -t tmpfs /mem >/dev/null && echo tmpfs-ok']\n    volumeMounts:\n    - {{name: scratch, mountPath: /data}}\n    - {{name: hf, mountPath: /hf, readOnly: true}}\n    - {{name: hd, mountPath: /hd}}\n    - {{name: hs, mountPath: /hs}}\n    - {{name: hc, mountPath: /hc}}\n    - {{name: created, mountPath: /created}}\n    - {{name: createdf, mountPath: /createdf}}\n    - {{name: mem, mountPath: /mem}}\n  volumes:\n  - {{name: scratch, emptyDir: {{}}}}\n  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}\n  - {{name: hf, hostPath: {{path: {h}/file, type: File}}}}\n  - {{name: hd, hostPath: {{path: {h}/dir, type: Directory}}}}\n  - {{name: hs, hostPath: {{path: {h}/sock, type: Socket}}}}\n  - {{name: hc, hostPath: {{path: /dev/null, type: CharDevice}}}}\n  - {{name: created, hostPath: {{path: {h}/new/dir, type: DirectoryOrCreate}}}}\n  - {{name: createdf, hostPath: {{path: {h}/new/file, type: FileOrCreate}}}}\n"
            ),
        ),
    )?;
    node.apply(
        "bad.yaml",
        &pod(
            "badtype",
            &format!("  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '100']\n    volumeMounts: [{{name: x, mountPath: /x}}]\n  volumes:\n  - {{name: x, hostPath: {{path: {h}/file, type: Directory}}}}\n"),
        ),
    )?;
    let p = node.wait_pod("vols", T, "Succeeded", |p| phase(p) == "Succeeded")?;
    let out = node.logs("vols", "reader", false)?;
    for want in [
        "shared-bytes",
        "host-file-content",
        "dir-ok",
        "sock-ok",
        "char-ok",
        "created-ok",
        "createdf-ok",
        "tmpfs-ok",
    ] {
        ensure!(
            out.contains(want),
            "missing {want} in {out:?} ({})",
            p["status"]
        );
    }
    ensure!(
        host.join("new/dir").is_dir() && host.join("new/file").is_file(),
        "OrCreate types"
    );
    // A type mismatch keeps the pod from starting, with the reason in its status.
    let p = node.wait_pod("badtype", T, "a FailedMount message", |p| {
        container(p, "c")["state"]["waiting"]["message"]
            .as_str()
            .map(|m| m.contains("not a directory") || m.contains("hostPath"))
            .unwrap_or(false)
    })?;
    ensure!(phase(&p) == "Pending", "phase {}", phase(&p));
    node.delete("v.yaml")?;
    node.delete("bad.yaml")?;
    node.wait_gone("vols", T)?;
    node.wait_gone("badtype", T)?;
    ensure!(
        host.join("file").exists() && host.join("new/file").exists(),
        "hostPath sources are never removed"
    );
    check_clean(node)
}

#[test]
#[ignore = "needs root: subPath bind mounts"]
fn subpath_symlink_escape_refused() -> Result<()> {
    let node = setup("subpath")?;
    node.apply(
        "s.yaml",
        &pod(
            "subpath",
            "  initContainers:\n  - name: plant\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'mkdir -p /v/ok && echo inside > /v/ok/f && ln -s /etc /v/escape']\n    volumeMounts: [{name: v, mountPath: /v}]\n  containers:\n  - name: good\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'cat /sub/f; sleep 1000']\n    volumeMounts: [{name: v, mountPath: /sub, subPath: ok}]\n  - name: evil\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'cat /sub/shadow; sleep 1000']\n    volumeMounts: [{name: v, mountPath: /sub, subPath: escape}]\n  volumes:\n  - {name: v, emptyDir: {}}\n",
        ),
    )?;
    let p = node.wait_pod("subpath", T, "good running and evil refused", |p| {
        is_running(p, "good")
            && container(p, "evil")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })?;
    let msg = container(&p, "evil")["state"]["waiting"]["message"].to_string();
    ensure!(
        msg.contains("escape") || msg.contains("outside"),
        "message {msg}"
    );
    let out = node.logs("subpath", "good", false)?;
    ensure!(out.contains("inside"), "{out:?}");
    node.delete("s.yaml")?;
    node.wait_gone("subpath", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: kill -9 of the agent with live containers"]
fn kill9_restart_adopts_pods_and_keeps_exit_codes() -> Result<()> {
    let mut node = setup("adopt")?;
    node.apply(
        "a.yaml",
        &pod("long", "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done']\n"),
    )?;
    node.apply(
        "b.yaml",
        &pod("short", "  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'sleep 3; echo done-while-agent-away; exit 7']\n"),
    )?;
    let before = node.wait_pod("long", T, "running", |p| is_running(p, "c"))?;
    node.wait_pod("short", T, "running", |p| is_running(p, "c"))?;
    let started = container(&before, "c")["state"]["running"]["startedAt"].clone();
    let id = container(&before, "c")["containerID"].clone();
    node.kill9();
    std::thread::sleep(Duration::from_secs(5));
    node.start()?;
    let p = node.wait_pod("short", T, "exit 7 recorded", |p| {
        terminated(p, "c")
            .map(|t| t["exitCode"] == 7)
            .unwrap_or(false)
    })?;
    ensure!(phase(&p) == "Failed", "phase {}", phase(&p));
    let logs = node.logs("short", "c", false)?;
    ensure!(
        logs.contains("done-while-agent-away"),
        "log line written while the agent was down: {logs:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = node.pod("long").expect("long");
    let c = container(&after, "c");
    ensure!(c["restartCount"] == 0, "no restart: {c}");
    ensure!(
        c["containerID"] == id && c["state"]["running"]["startedAt"] == started,
        "same container: {c}"
    );
    // Log lines kept flowing across the agent's death.
    let logs = node.logs("long", "c", false)?;
    let ticks: Vec<i64> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .collect();
    ensure!(ticks.len() > 30, "ticks {}", ticks.len());
    ensure!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "no lost lines");
    node.delete("a.yaml")?;
    node.delete("b.yaml")?;
    node.wait_gone("long", T)?;
    node.wait_gone("short", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: runs containers"]
fn bad_input_fails_only_that_pod() -> Result<()> {
    let node = setup("bad")?;
    node.apply("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    ports:\n    - containerPort: not-a-number\n")?;
    node.apply(
        "noimage.yaml",
        &pod(
            "noimage",
            "  containers:\n  - name: c\n    image: example.invalid/nothing:1\n",
        ),
    )?;
    node.apply("nonroot.yaml", &pod("nonroot", "  securityContext: {runAsNonRoot: true}\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '100']\n"))?;
    node.apply(
        "ok.yaml",
        &pod(
            "ok",
            "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n",
        ),
    )?;
    node.wait_pod("ok", T, "running", |p| is_running(p, "c"))?;
    node.wait_pod("noimage", T, "ErrImagePull", |p| {
        matches!(
            container(p, "c")["state"]["waiting"]["reason"].as_str(),
            Some("ErrImagePull") | Some("ImagePullBackOff")
        )
    })?;
    node.wait_pod("nonroot", T, "CreateContainerConfigError", |p| {
        container(p, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })?;
    ensure!(
        node.pod("broken").is_none(),
        "a malformed manifest creates no pod"
    );
    let log = std::fs::read_to_string(node.path("bosun.log"))?;
    ensure!(
        log.contains("broken.yaml") && log.contains("containerPort"),
        "the error names file and field"
    );
    for f in ["broken.yaml", "noimage.yaml", "nonroot.yaml", "ok.yaml"] {
        node.delete(f)?;
    }
    node.wait_gone("ok", T)?;
    node.wait_gone("noimage", T)?;
    node.wait_gone("nonroot", T)?;
    check_clean(node)
}

/// An invalid static pod (a hostPath that climbs out with `..`, two containers of one name, a
/// port out of range) is refused as the kubelet refuses it: no sandbox, no network namespace,
/// no address, no pod folder; the apiserver's messages are in the log and in `bosun pods`.
#[test]
#[ignore = "needs root: runs containers beside the refused pod"]
fn invalid_static_pod_makes_nothing() -> Result<()> {
    let node = setup("invalid")?;
    node.apply(
        "etc.yaml",
        &pod(
            "etc",
            "  volumes: [{name: etc, hostPath: {path: ../../etc}}]\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n    volumeMounts: [{name: etc, mountPath: /host-etc}]\n",
        ),
    )?;
    node.apply(
        "names.yaml",
        &pod(
            "names",
            "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n    ports: [{containerPort: 70000}]\n  - {name: c, image: busybox, imagePullPolicy: IfNotPresent}\n",
        ),
    )?;
    node.apply(
        "ok.yaml",
        &pod(
            "ok",
            "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n",
        ),
    )?;
    let ok = node.wait_pod("ok", T, "running", |p| is_running(p, "c"))?;
    let ok_uid = ok["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A few more scans of the folder.
    std::thread::sleep(Duration::from_secs(3));
    ensure!(node.pod("etc").is_none(), "the invalid pod has a status");
    ensure!(node.pod("names").is_none(), "the invalid pod has a status");
    let entries = |sub: &str| -> Vec<String> {
        std::fs::read_dir(node.path(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(
        entries("run/sandboxes") == [ok_uid.clone()],
        "sandboxes: {:?}",
        entries("run/sandboxes")
    );
    ensure!(
        entries("run/pods") == [ok_uid.clone()],
        "pod state: {:?}",
        entries("run/pods")
    );
    ensure!(
        entries("root/pods") == [ok_uid.clone()],
        "pod folders: {:?}",
        entries("root/pods")
    );
    let ips = node.net.allocated();
    ensure!(ips.len() == 1, "one address (the valid pod's): {ips:?}");
    let netns: Vec<String> = node
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/sandboxes/") && !m.contains(&ok_uid))
        .collect();
    ensure!(netns.is_empty(), "namespace pins of no pod: {netns:?}");
    let messages = [
        "spec.volumes[0].hostPath.path: Invalid value: \"../../etc\": must not contain '..'",
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.containers[1].name: Duplicate value: \"c\"",
    ];
    let log = std::fs::read_to_string(node.path("bosun.log"))?;
    for m in messages {
        ensure!(log.contains(m), "the log says {m:?}");
    }
    let out = node.bosun(&["pods"])?;
    let shown = String::from_utf8_lossy(&out.stdout);
    ensure!(
        shown.contains("INVALID MANIFESTS")
            && shown.contains("etc.yaml")
            && shown.contains("names.yaml"),
        "bosun pods: {shown}"
    );
    for m in messages {
        ensure!(shown.contains(m), "bosun pods shows {m:?}: {shown}");
    }
    for f in ["etc.yaml", "names.yaml", "ok.yaml"] {
        node.delete(f)?;
    }
    node.wait_gone("ok", T)?;
    check_clean(node)
}

/// A payload the kernel refuses to exec (an environment value over the 128 KiB a string may
/// have: E2BIG) is a start error as the kubelet reports it: `StartError`, exit code 128 and the
/// reason, not a silent exit 255.
#[test]
#[ignore = "needs root: runs a container"]
fn exec_failure_is_a_start_error() -> Result<()> {
    let node = setup("e2big")?;
    let big = "x".repeat(1 << 20);
    node.apply(
        "big.yaml",
        &pod(
            "big",
            &format!("  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo ran']\n    env: [{{name: BIG, value: {big}}}]\n"),
        ),
    )?;
    let p = node.wait_pod("big", T, "terminated", |p| terminated(p, "c").is_some())?;
    let t = terminated(&p, "c").expect("terminated");
    ensure!(t["reason"] == "StartError", "reason: {t}");
    ensure!(t["exitCode"] == 128, "exit code: {t}");
    ensure!(
        t["message"] == "exec: \"sh\": argument list too long",
        "message: {}",
        t["message"]
    );
    node.delete("big.yaml")?;
    node.wait_gone("big", T)?;
    check_clean(node)
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
#[ignore = "needs root: a privileged container and a file in the host's /dev"]
fn privileged_container_gets_the_hosts_dev() -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    // What CSI drivers ask (csi-driver-host-path's deployment): the host's /dev as a hostPath
    // at /dev in a privileged container. The runtime leaves that /dev as it is, as runc does: it
    // makes no device nodes, /dev/fd links or ptmx in it (the create used to fail on the host's
    // existing /dev/fd, and a new /dev/ptmx link there would break the host's terminals).
    let marker = std::path::PathBuf::from(format!("/dev/bosun-test-{}", std::process::id()));
    std::fs::write(&marker, "from-the-host")?;
    let _marker = RemoveOnDrop(marker.clone());
    let node = setup("hostdev")?;
    let m = marker.display();
    node.apply(
        "d.yaml",
        &pod(
            "hostdev",
            &format!("  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    securityContext: {{privileged: true}}\n    command: [sh, -c, 'cat {m}; echo; test -c /dev/ptmx && echo ptmx-ok; echo written > {m}']\n    volumeMounts: [{{name: dev, mountPath: /dev}}]\n  volumes:\n  - {{name: dev, hostPath: {{path: /dev, type: Directory}}}}\n"),
        ),
    )?;
    let p = node.wait_pod("hostdev", T, "Succeeded", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })?;
    let out = node.logs("hostdev", "c", false)?;
    ensure!(
        phase(&p) == "Succeeded" && out == "from-the-host\nptmx-ok\n",
        "{out:?} ({})",
        p["status"]
    );
    ensure!(
        std::fs::read_to_string(&marker)? == "written\n",
        "the container wrote to the host's /dev"
    );
    // The host's /dev is as it was.
    ensure!(
        std::fs::symlink_metadata("/dev/ptmx")?
            .file_type()
            .is_char_device(),
        "/dev/ptmx is no longer the host's character device"
    );
    ensure!(
        std::fs::read_link("/dev/fd")? == std::path::Path::new("/proc/self/fd"),
        "/dev/fd changed"
    );
    node.delete("d.yaml")?;
    node.wait_gone("hostdev", T)?;
    check_clean(node)
}

/// Lazily unmounts a path when dropped.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn is_mount_point(p: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
}

#[test]
#[ignore = "needs root: a privileged container mounting into a shared host folder"]
fn bidirectional_mounts_reach_the_host() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    // What CSI drivers ask (csi-driver-host-path's deployment): a host folder of shared mounts
    // (the kubelet's pods folder) with mountPropagation Bidirectional in a privileged
    // container: what the driver mounts there must reach the host, where the pods that use the
    // volume are. A mount in a folder without it (None, the default) stays in the container.
    let node = setup("bidir")?;
    let host = node.path("host");
    for d in ["shared/m", "private/m"] {
        std::fs::create_dir_all(host.join(d))?;
    }
    // The folder is a shared mount, as the kubelet makes its root dir.
    let none: Option<&str> = None;
    mount(Some(&host), &host, none, MsFlags::MS_BIND, none)?;
    let _host_mount = UnmountOnDrop(host.clone());
    mount(none, &host, none, MsFlags::MS_SHARED, none)?;
    let _propagated = UnmountOnDrop(host.join("shared/m"));
    let h = host.display();
    node.apply(
        "b.yaml",
        &pod(
            "bidir",
            &format!("  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    securityContext: {{privileged: true}}\n    command: [sh, -c, 'mount -t tmpfs -o size=1m tmpfs /shared/m && echo from-the-container > /shared/m/f && mount -t tmpfs -o size=1m tmpfs /private/m && echo mounted; sleep 3600']\n    volumeMounts:\n    - {{name: shared, mountPath: /shared, mountPropagation: Bidirectional}}\n    - {{name: private, mountPath: /private}}\n  volumes:\n  - {{name: shared, hostPath: {{path: {h}/shared, type: Directory}}}}\n  - {{name: private, hostPath: {{path: {h}/private, type: Directory}}}}\n"),
        ),
    )?;
    node.wait_pod("bidir", T, "running", |p| is_running(p, "c"))?;
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while node.logs("bidir", "c", false)? != "mounted\n" && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = node.logs("bidir", "c", false)?;
    ensure!(out == "mounted\n", "the container's mounts: {out:?}");
    ensure!(
        std::fs::read_to_string(host.join("shared/m/f"))
            .ok()
            .as_deref()
            == Some("from-the-container\n"),
        "the Bidirectional mount did not reach the host"
    );
    ensure!(
        !is_mount_point(&host.join("private/m")),
        "a mount without propagation reached the host"
    );
    node.delete("b.yaml")?;
    node.wait_gone("bidir", T)?;
    drop(_propagated);
    drop(_host_mount);
    // The root dir stays a shared mount (bound onto itself for the Bidirectional volume, as
    // the kubelet keeps its own): the test's to remove.
    ensure!(
        is_mount_point(&node.path("root")),
        "the root dir was made a shared mount"
    );
    drop(UnmountOnDrop(node.path("root")));
    check_clean(node)
}

#[test]
#[ignore = "needs root: runs the agent with its cgroups and the pods beside the rejected one"]
fn a_static_pod_that_does_not_fit_is_rejected_with_the_kubelets_reason() -> Result<()> {
    let node = setup("admit")?;
    // The node has a few CPUs: 1000 do not fit. Admission refuses it before anything of it
    // exists, with the kubelet's reason and message, and `bosun pods` says why.
    node.apply(
        "big.yaml",
        &pod(
            "big",
            "  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n    resources:\n      requests: {cpu: '1000'}\n",
        ),
    )?;
    node.apply(
        "small.yaml",
        &pod(
            "small",
            "  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n    resources:\n      requests: {cpu: 10m}\n",
        ),
    )?;
    let p = node.wait_pod("big", T, "phase Failed", |p| phase(p) == "Failed")?;
    ensure!(
        p["status"]["reason"] == "OutOfcpu",
        "status: {}",
        p["status"]
    );
    let message = p["status"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.starts_with(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "
        ),
        "message: {message}"
    );
    node.wait_pod("small", T, "running", |p| is_running(p, "main"))?;
    let out = node.bosun(&["pods"])?;
    let shown = String::from_utf8_lossy(&out.stdout);
    ensure!(
        shown.contains("OutOfcpu: Pod was rejected: Node didn't have enough resource: cpu"),
        "bosun pods: {shown}"
    );
    node.delete("big.yaml")?;
    node.delete("small.yaml")?;
    node.wait_gone("big", T)?;
    node.wait_gone("small", T)?;
    check_clean(node)
}
