//! The kubelet's security profiles as a pod gets them, checked from inside the containers and
//! from the host (issue 17): seccomp (RuntimeDefault, seccompDefault, Unconfined, Localhost,
//! a missing profile then fixed, exec probes under the container's filter), sysctls (set in the
//! pod's namespaces, the host's untouched; SysctlForbidden), AppArmor admission on a host
//! without AppArmor, and user namespaces (uid_map, host-side IDs, volume ownership, the range
//! kept across a kill -9). Privileged tier; run with `--test-threads=1`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bosun_tests::{check_clean, container, is_running, phase, pod, setup_with_config, Node};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Reads "key=value" lines a container printed.
fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until the container printed `key=`, and returns its value.
fn wait_kv(node: &Node, p: &str, c: &str, key: &str) -> Result<String> {
    let start = std::time::Instant::now();
    loop {
        let out = node.logs(p, c, false).unwrap_or_default();
        if out.lines().any(|l| l.starts_with(&format!("{key}="))) {
            return Ok(kv(&out, key));
        }
        ensure!(
            start.elapsed() < T,
            "{p}/{c} never printed {key}=: {out}\n{}",
            node.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn waiting(p: &Value, c: &str) -> (String, String) {
    let w = &container(p, c)["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or("").to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    )
}

fn ready(p: &Value, c: &str) -> bool {
    container(p, c)["ready"] == true
}

/// What every confined container prints: its seccomp mode, whether `unshare -U` (a call the
/// default profile denies) works and whether `mkdir` works.
const PROBE: &str = "echo seccomp=$(grep Seccomp: /proc/self/status | cut -f2); \
    if unshare -U true 2>/tmp/err; then echo unshare=ok; else echo unshare=$(cat /tmp/err); fi; \
    if mkdir /tmp/d 2>/tmp/err; then echo mkdir=ok; else echo mkdir=$(cat /tmp/err); fi";

/// An exec readiness probe that passes only when the exec'd process runs under a filter.
const CONFINED_PROBE: &str = "    readinessProbe:\n      periodSeconds: 1\n      exec: {command: [sh, -c, 'grep -q \"^Seccomp:.2\" /proc/self/status']}\n";

#[test]
#[ignore = "needs root: containers under seccomp filters"]
fn seccomp_profiles_as_the_kubelet_gives_them() -> Result<()> {
    // seccompDefault: containers that name nothing get RuntimeDefault.
    let node = setup_with_config("seccomp", "seccompDefault: true\n")?;
    let profiles = node.path("root").join("seccomp/profiles");
    std::fs::create_dir_all(&profiles)?;
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )?;
    let sleep = "; sleep 1000";
    // Pod-level RuntimeDefault; an init container and a sidecar under it too.
    node.apply(
        "rd.yaml",
        &pod(
            "rd",
            &format!(
                "  securityContext:\n    seccompProfile: {{type: RuntimeDefault}}\n  initContainers:\n  - name: init\n    image: localhost/busybox:test\n    command: [sh, -c, \"{PROBE}\"]\n  - name: side\n    image: localhost/busybox:test\n    restartPolicy: Always\n    command: [sh, -c, \"{PROBE}{sleep}\"]\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{PROBE}{sleep}\"]\n{CONFINED_PROBE}"
            ),
        ),
    )?;
    // seccompDefault, and a container that opts out.
    node.apply(
        "def.yaml",
        &pod(
            "def",
            &format!(
                "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{PROBE}{sleep}\"]\n{CONFINED_PROBE}  - name: u\n    image: localhost/busybox:test\n    command: [sh, -c, \"{PROBE}{sleep}\"]\n    securityContext:\n      seccompProfile: {{type: Unconfined}}\n{CONFINED_PROBE}"
            ),
        ),
    )?;
    // Localhost: the container's over the pod's.
    node.apply(
        "local.yaml",
        &pod(
            "local",
            &format!(
                "  securityContext:\n    seccompProfile: {{type: RuntimeDefault}}\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{PROBE}{sleep}\"]\n    securityContext:\n      seccompProfile: {{type: Localhost, localhostProfile: profiles/deny-mkdir.json}}\n"
            ),
        ),
    )?;
    // A profile that does not exist (yet).
    node.apply(
        "bad.yaml",
        &pod(
            "bad",
            &format!(
                "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{PROBE}{sleep}\"]\n    securityContext:\n      seccompProfile: {{type: Localhost, localhostProfile: profiles/later.json}}\n"
            ),
        ),
    )?;

    for (p, c) in [("rd", "init"), ("rd", "side"), ("rd", "c"), ("def", "c")] {
        ensure!(
            wait_kv(&node, p, c, "seccomp")? == "2",
            "{p}/{c} not filtered"
        );
        let unshare = wait_kv(&node, p, c, "unshare")?;
        ensure!(
            unshare.contains("Operation not permitted"),
            "{p}/{c}: unshare -U under RuntimeDefault: {unshare}"
        );
        ensure!(wait_kv(&node, p, c, "mkdir")? == "ok", "{p}/{c}: mkdir");
    }
    ensure!(
        wait_kv(&node, "def", "u", "seccomp")? == "0",
        "def/u confined"
    );
    ensure!(
        wait_kv(&node, "def", "u", "unshare")? == "ok",
        "def/u: unshare"
    );
    ensure!(wait_kv(&node, "local", "c", "seccomp")? == "2");
    let mkdir = wait_kv(&node, "local", "c", "mkdir")?;
    ensure!(
        mkdir.contains("Operation not permitted"),
        "Localhost deny-mkdir: {mkdir}"
    );
    ensure!(wait_kv(&node, "local", "c", "unshare")? == "ok");
    // Exec probes run under the container's filter: ready only where it is confined.
    node.wait_pod("rd", T, "rd/c ready", |p| ready(p, "c"))?;
    node.wait_pod("def", T, "def/c ready", |p| ready(p, "c"))?;
    let p = node.pod("def").context("def")?;
    ensure!(
        !ready(&p, "u") && is_running(&p, "u"),
        "an unconfined container's exec must not be confined: {}",
        p["status"]
    );

    // The missing profile: CreateContainerError naming the file, nothing started...
    let want = node.path("root").join("seccomp/profiles/later.json");
    let p = node.wait_pod("bad", T, "CreateContainerError", |p| {
        waiting(p, "c").0 == "CreateContainerError"
    })?;
    let (_, message) = waiting(&p, "c");
    ensure!(
        message.contains(&want.display().to_string()) && message.contains("no such file"),
        "{message}"
    );
    ensure!(node.logs("bad", "c", false).unwrap_or_default().is_empty());
    // ... and the next retry after the file is fixed starts it.
    std::fs::copy(
        profiles.join("deny-mkdir.json"),
        profiles.join("later.json"),
    )?;
    node.wait_pod("bad", T, "started after the fix", |p| is_running(p, "c"))?;
    ensure!(wait_kv(&node, "bad", "c", "seccomp")? == "2");

    for f in ["rd.yaml", "def.yaml", "local.yaml", "bad.yaml"] {
        node.delete(f)?;
    }
    for p in ["rd", "def", "local", "bad"] {
        node.wait_gone(p, T)?;
    }
    check_clean(node)
}

/// The kubelet's test: the securityfs folder and the module's `enabled` parameter.
fn apparmor_enabled() -> bool {
    std::path::Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
}

fn host_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root: pod sysctls and admission"]
fn sysctls_and_admission() -> Result<()> {
    let node = setup_with_config("sysctl", "allowedUnsafeSysctls: [\"kernel.msg*\"]\n")?;
    let host_range = host_sysctl("net.ipv4.ip_local_port_range");
    let host_msgmax = host_sysctl("kernel.msgmax");
    let show = "echo range=$(cat /proc/sys/net/ipv4/ip_local_port_range | tr -s ' \\t' '-'); \
                echo rmid=$(cat /proc/sys/kernel/shm_rmid_forced); \
                echo msgmax=$(cat /proc/sys/kernel/msgmax); sleep 1000";
    node.apply(
        "ok.yaml",
        &pod(
            "ok",
            &format!(
                "  securityContext:\n    sysctls:\n    - {{name: net/ipv4/ip_local_port_range, value: '20000 20100'}}\n    - {{name: kernel.shm_rmid_forced, value: '1'}}\n    - {{name: kernel.msgmax, value: '12345'}}\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{show}\"]\n"
            ),
        ),
    )?;
    node.apply(
        "unsafe.yaml",
        &pod(
            "unsafe",
            "  securityContext:\n    sysctls: [{name: net.core.somaxconn, value: '1024'}]\n  containers:\n  - {name: c, image: localhost/busybox:test, command: [sleep, '1000']}\n",
        ),
    )?;
    node.apply(
        "aa.yaml",
        &pod(
            "aa",
            "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sleep, '1000']\n    securityContext:\n      appArmorProfile: {type: RuntimeDefault}\n",
        ),
    )?;
    ensure!(wait_kv(&node, "ok", "c", "range")? == "20000-20100");
    ensure!(wait_kv(&node, "ok", "c", "rmid")? == "1");
    ensure!(wait_kv(&node, "ok", "c", "msgmax")? == "12345");
    ensure!(host_sysctl("net.ipv4.ip_local_port_range") == host_range);
    ensure!(host_sysctl("kernel.msgmax") == host_msgmax);

    let rejected = |name: &str, reason: &str, message: &str| -> Result<()> {
        let p = node.wait_pod(name, T, "rejected", |p| phase(p) == "Failed")?;
        ensure!(p["status"]["reason"] == reason, "{}", p["status"]);
        ensure!(p["status"]["message"] == message, "{}", p["status"]);
        ensure!(
            p["status"]["containerStatuses"].is_null(),
            "nothing started: {}",
            p["status"]
        );
        ensure!(
            node.logs(name, "c", false).unwrap_or_default().is_empty(),
            "no log"
        );
        let sandbox = node.path("run").join("sandboxes").join(uid_of(&p));
        ensure!(!sandbox.exists(), "no sandbox for a rejected pod");
        Ok(())
    };
    rejected(
        "unsafe",
        "SysctlForbidden",
        "Pod was rejected: forbidden sysctl: \"net.core.somaxconn\" not allowlisted",
    )?;
    if !apparmor_enabled() {
        rejected(
            "aa",
            "AppArmor",
            "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host",
        )?;
    }
    for f in ["ok.yaml", "unsafe.yaml", "aa.yaml"] {
        node.delete(f)?;
    }
    for p in ["ok", "unsafe", "aa"] {
        node.wait_gone(p, T)?;
    }
    check_clean(node)
}

/// The pids of processes whose command line is exactly `cmd`.
fn pids_of(cmd: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmd {
            out.push(pid);
        }
    }
    out
}

fn host_uid(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

fn allocations(node: &Node) -> Value {
    std::fs::read(node.path("data").join("userns.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn uid_of(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

#[test]
#[ignore = "needs root: pods in user namespaces of their own"]
fn user_namespace_pods() -> Result<()> {
    let mut node = setup_with_config("userns", "")?;
    // A host folder the pod may write to: its root is not root on the host.
    let host_dir = node.path("host").join("shared");
    std::fs::create_dir_all(&host_dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o1777))?;
    let script = "echo uidmap=$(cat /proc/self/uid_map | tr -s ' ' ' '); \
        echo me=$(id -u); \
        touch /data/f /host/f; echo data=$(stat -c %u /data/f); echo hostpath=$(stat -c %u /host/f); \
        echo rootfs=$(stat -c %u /bin/busybox); echo info=$(stat -L -c %u /info/name); \
        echo unmasked=$(grep -c ' /proc/timer_list ' /proc/self/mountinfo); \
        exec sleep 1001";
    node.apply(
        "u.yaml",
        &pod(
            "u",
            &format!(
                "  hostUsers: false\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, \"{script}\"]\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n    - {{name: host, mountPath: /host}}\n    - {{name: info, mountPath: /info}}\n  - name: unmasked\n    image: localhost/busybox:test\n    command: [sh, -c, 'echo mounts=$(grep -c \" /proc/timer_list \" /proc/self/mountinfo); sleep 1000']\n    securityContext: {{procMount: Unmasked}}\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n  - {{name: host, hostPath: {{path: {}}}}}\n  - name: info\n    downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}\n",
                host_dir.display()
            ),
        ),
    )?;
    let uidmap = wait_kv(&node, "u", "c", "uidmap")?;
    let p = node.wait_pod("u", T, "running", |p| is_running(p, "c"))?;
    let uid = uid_of(&p);
    let base = allocations(&node)["pods"][&uid]
        .as_u64()
        .context("the pod's range is in userns.json")?;
    ensure!(base >= 65536 && base % 65536 == 0, "base {base}");
    ensure!(
        uidmap.trim() == format!("0 {base} 65536"),
        "uid_map {uidmap}"
    );
    ensure!(wait_kv(&node, "u", "c", "me")? == "0");
    // The container's root is the range's first ID on the host.
    let pids = pids_of("sleep 1001");
    ensure!(pids.len() == 1, "{pids:?}");
    ensure!(
        host_uid(pids[0]) == Some(base as u32),
        "host uid of the container"
    );
    // Idmapped: emptyDir, downwardAPI and the rootfs show their owners as they are on the
    // host (root); a hostPath is not idmapped: the pod's writes land as <base> there.
    ensure!(wait_kv(&node, "u", "c", "data")? == "0");
    ensure!(wait_kv(&node, "u", "c", "rootfs")? == "0");
    ensure!(wait_kv(&node, "u", "c", "info")? == "0");
    ensure!(wait_kv(&node, "u", "c", "hostpath")? == "0");
    use std::os::unix::fs::MetadataExt;
    ensure!(
        std::fs::metadata(host_dir.join("f"))?.uid() == base as u32,
        "hostPath file owned by the range's first ID on the host"
    );
    let empty_dir = node
        .path("root")
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/data/f");
    ensure!(std::fs::metadata(&empty_dir)?.uid() == 0, "emptyDir file");
    // procMount: Unmasked with hostUsers: false: /proc/timer_list is not masked. (Not
    // /proc/kcore: in a pod with its own user namespace this host's procfs shows none, so
    // there is nothing to mask; the other masked paths are there.)
    let masked = wait_kv(&node, "u", "c", "unmasked")?;
    ensure!(
        masked == "1",
        "masked by default: {masked} /proc/timer_list mounts"
    );
    let unmasked = wait_kv(&node, "u", "unmasked", "mounts")?;
    ensure!(
        unmasked == "0",
        "Unmasked: {unmasked} /proc/timer_list mounts"
    );

    // kill -9: the range stays, the container keeps running, a second pod gets another range.
    node.kill9();
    node.start()?;
    node.apply(
        "v.yaml",
        &pod(
            "v",
            "  hostUsers: false\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'echo uidmap=$(cat /proc/self/uid_map | tr -s \" \" \" \"); sleep 1000']\n",
        ),
    )?;
    let v = node.wait_pod("v", T, "running", |p| is_running(p, "c"))?;
    let all = allocations(&node);
    ensure!(all["pods"][&uid].as_u64() == Some(base), "{all}");
    let other = all["pods"][&uid_of(&v)].as_u64().context("second range")?;
    ensure!(other != base, "{all}");
    ensure!(wait_kv(&node, "v", "c", "uidmap")?.trim() == format!("0 {other} 65536"));
    ensure!(
        pids_of("sleep 1001").len() == 1,
        "the first pod kept running"
    );

    // Freed when the pods are gone.
    node.delete("u.yaml")?;
    node.delete("v.yaml")?;
    node.wait_gone("u", T)?;
    node.wait_gone("v", T)?;
    let all = allocations(&node);
    ensure!(
        all["pods"].as_object().is_some_and(|m| m.is_empty()),
        "ranges freed: {all}"
    );
    check_clean(node)
}
