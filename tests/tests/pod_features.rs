//! End-to-end checks of what a container really gets, seen from inside the container (not from
//! what bosun recorded):
//! user, capabilities, read-only rootfs, no-new-privileges, hostname, shared and host
//! namespaces, termination messages, postStart hooks, sidecars. Privileged tier; run with
//! `--test-threads=1` (teardown reaps orphans with waitpid(-1)).

use std::time::Duration;

use anyhow::{ensure, Result};
use bosun_tests::{check_clean, container, is_running, phase, pod, setup, terminated};

const T: Duration = Duration::from_secs(60);

/// Reads "key=value" lines a container printed.
fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root: runs containers with security contexts"]
fn security_context_from_inside() -> Result<()> {
    let node = setup("sec")?;
    let script = "echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); \
                  echo capeff=$(grep CapEff /proc/self/status | cut -f2); \
                  echo capbnd=$(grep CapBnd /proc/self/status | cut -f2); \
                  echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2); \
                  if touch /rootfs-write 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi; \
                  if touch /tmp/ok 2>/dev/null; then echo tmp=rw; else echo tmp=ro; fi; \
                  echo hostname=$(hostname); \
                  echo tmpgroup=$(stat -c %g /tmp); echo tmpmode=$(stat -c %A /tmp); \
                  echo kcore=$(cat /proc/kcore 2>&1 | head -c 0; test -s /proc/kcore && echo visible || echo masked); \
                  echo devs=$(ls /dev | tr '\\n' ' ')";
    node.apply(
        "s.yaml",
        &pod(
            "sec",
            &format!(
                "  restartPolicy: Never\n  hostname: custom-host\n  securityContext:\n    runAsUser: 1000\n    runAsGroup: 2000\n    supplementalGroups: [3000]\n    fsGroup: 4000\n    fsGroupChangePolicy: OnRootMismatch\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{script}\"]\n    securityContext:\n      allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true\n      capabilities:\n        drop: [ALL]\n        add: [NET_BIND_SERVICE]\n    volumeMounts: [{{name: tmp, mountPath: /tmp}}]\n  volumes:\n  - {{name: tmp, emptyDir: {{}}}}\n"
            ),
        ),
    )?;
    node.apply(
        "r.yaml",
        &pod(
            "root",
            "  restartPolicy: Never\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'echo capeff=$(grep CapEff /proc/self/status | cut -f2); echo uid=$(id -u); echo hostname=$(hostname)']\n",
        ),
    )?;
    let p = node.wait_pod("sec", T, "Succeeded", |p| phase(p) == "Succeeded")?;
    let out = node.logs("sec", "c", false)?;
    ensure!(kv(&out, "uid") == "1000", "{out}");
    ensure!(kv(&out, "gid") == "2000", "{out}");
    ensure!(kv(&out, "groups").split(' ').any(|g| g == "3000"), "{out}");
    // Only CAP_NET_BIND_SERVICE (bit 10) in the bounding set; a non-root user has no effective caps.
    ensure!(kv(&out, "capbnd") == "0000000000000400", "{out}");
    ensure!(kv(&out, "capeff") == "0000000000000000", "{out}");
    ensure!(kv(&out, "nnp") == "1", "{out}");
    ensure!(
        kv(&out, "rootfs") == "ro" && kv(&out, "tmp") == "rw",
        "{out}"
    );
    ensure!(kv(&out, "hostname") == "custom-host", "{out}");
    // fsGroup: a supplementary group of the process, and the emptyDir's group with setgid.
    ensure!(kv(&out, "groups").split(' ').any(|g| g == "4000"), "{out}");
    ensure!(kv(&out, "tmpgroup") == "4000", "{out}");
    ensure!(kv(&out, "tmpmode") == "drwxrwsrwx", "{out}");
    ensure!(kv(&out, "kcore") == "masked", "{out}");
    for d in ["null", "zero", "urandom", "tty", "shm", "pts"] {
        ensure!(
            kv(&out, "devs").split(' ').any(|x| x == d),
            "/dev/{d} missing: {out}"
        );
    }
    ensure!(
        !kv(&out, "devs")
            .split(' ')
            .any(|x| x == "vda" || x == "mem"),
        "host devices leaked in: {out}"
    );
    ensure!(
        p["status"]["qosClass"] == "BestEffort",
        "{}",
        p["status"]["qosClass"]
    );
    let p = node.wait_pod("root", T, "Succeeded", |p| phase(p) == "Succeeded")?;
    let out = node.logs("root", "c", false)?;
    // containerd's default set: 0x00000000a80425fb.
    ensure!(
        kv(&out, "capeff") == "00000000a80425fb",
        "{out} {}",
        p["status"]
    );
    ensure!(kv(&out, "uid") == "0", "{out}");
    // The hostname is the pod name (static pods are <name>-<node>).
    ensure!(
        kv(&out, "hostname") == bosun_tests::full_name("root"),
        "{out}"
    );
    node.delete("s.yaml")?;
    node.delete("r.yaml")?;
    node.wait_gone("sec", T)?;
    node.wait_gone("root", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: pod namespaces (shared pid, host network, host pid)"]
fn shared_and_host_namespaces() -> Result<()> {
    let node = setup("ns")?;
    node.apply(
        "share.yaml",
        &pod(
            "share",
            "  shareProcessNamespace: true\n  containers:\n  - name: sleeper\n    image: localhost/busybox:test\n    command: [sh, -c, 'exec sleep 1001']\n  - name: looker\n    image: localhost/busybox:test\n    command: [sh, -c, 'while ! ps | grep -q \"[s]leep 1001\"; do sleep 0.2; done; echo saw-sleeper; echo netns=$(readlink /proc/self/ns/net); sleep 1000']\n",
        ),
    )?;
    node.apply(
        "host.yaml",
        &pod(
            "host",
            "  hostNetwork: true\n  hostPID: true\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'echo netns=$(readlink /proc/self/ns/net); echo pid1=$(cat /proc/1/comm); sleep 1000']\n",
        ),
    )?;
    node.wait_pod("share", T, "running", |p| is_running(p, "looker"))?;
    let start = std::time::Instant::now();
    let out = loop {
        let out = node.logs("share", "looker", false)?;
        if out.contains("saw-sleeper") || start.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        out.contains("saw-sleeper"),
        "shareProcessNamespace: {out:?}"
    );
    let host_net = std::fs::read_link("/proc/self/ns/net")?
        .display()
        .to_string();
    ensure!(
        kv(&out, "netns") != host_net,
        "pod netns must not be the host's: {out}"
    );
    node.wait_pod("host", T, "running", |p| is_running(p, "c"))?;
    std::thread::sleep(Duration::from_millis(500));
    let out = node.logs("host", "c", false)?;
    ensure!(
        kv(&out, "netns") == host_net,
        "hostNetwork: {out} vs {host_net}"
    );
    let host_pid1 = std::fs::read_to_string("/proc/1/comm")?.trim().to_string();
    ensure!(
        kv(&out, "pid1") == host_pid1,
        "hostPID: {out} vs {host_pid1}"
    );
    node.delete("share.yaml")?;
    node.delete("host.yaml")?;
    node.wait_gone("share", T)?;
    node.wait_gone("host", T)?;
    check_clean(node)
}

#[test]
#[ignore = "needs root: runs containers with hooks, sidecars and termination messages"]
fn hooks_sidecars_and_termination_messages() -> Result<()> {
    let node = setup("hooks")?;
    node.apply(
        "h.yaml",
        &pod(
            "hooks",
            "  restartPolicy: Never\n  initContainers:\n  - name: side\n    image: localhost/busybox:test\n    restartPolicy: Always\n    command: [sh, -c, 'echo side-up > /shared/side; trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n    volumeMounts: [{name: shared, mountPath: /shared}]\n  containers:\n  - name: main\n    image: localhost/busybox:test\n    command: [sh, -c, 'sleep 0.5; cat /shared/side; cat /shared/poststart; echo custom-message > /dev/termination-log; exit 4']\n    volumeMounts: [{name: shared, mountPath: /shared}]\n    lifecycle:\n      postStart:\n        exec:\n          command: [sh, -c, 'echo hook-ran > /shared/poststart']\n  - name: fallback\n    image: localhost/busybox:test\n    terminationMessagePolicy: FallbackToLogsOnError\n    command: [sh, -c, 'echo last-words; exit 2']\n  volumes:\n  - {name: shared, emptyDir: {}}\n",
        ),
    )?;
    let p = node.wait_pod("hooks", T, "main and fallback done", |p| {
        terminated(p, "main").is_some() && terminated(p, "fallback").is_some()
    })?;
    let out = node.logs("hooks", "main", false)?;
    ensure!(
        out.contains("side-up"),
        "the sidecar started before main: {out:?}"
    );
    ensure!(out.contains("hook-ran"), "postStart ran: {out:?}");
    let main = terminated(&p, "main").expect("main");
    ensure!(
        main["exitCode"] == 4 && main["message"] == "custom-message\n",
        "{main}"
    );
    let fb = terminated(&p, "fallback").expect("fallback");
    ensure!(
        fb["message"].as_str().unwrap_or("").contains("last-words"),
        "{fb}"
    );
    // All main containers are done and the pod never restarts: the sidecar is stopped and the
    // pod is Failed (main exited 4).
    let p = node.wait_pod("hooks", T, "Failed with the sidecar stopped", |p| {
        phase(p) == "Failed" && !container(p, "side")["state"]["terminated"].is_null()
    })?;
    ensure!(
        container(&p, "side")["state"]["terminated"]["exitCode"] == 0,
        "{}",
        p["status"]
    );
    node.delete("h.yaml")?;
    node.wait_gone("hooks", T)?;
    check_clean(node)
}
