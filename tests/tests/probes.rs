//! End-to-end tests of liveness, readiness and startup probes. Run with `--test-threads=1`.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bosun_tests::{container, is_running, pod, Node};

const T: Duration = Duration::from_secs(60);

fn cond(p: &serde_json::Value, ty: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty)
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root: runs containers"]
fn liveness_restarts_and_readiness_flips() -> Result<()> {
    bosun_tests::become_subreaper();
    let mut node = Node::new("probes")?;
    node.start()?;
    // Ready while /tmp/ready exists; unhealthy once /tmp/dead exists.
    node.apply(
        "p.yaml",
        &pod(
            "probed",
            "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'touch /tmp/ready; sleep 3600']\n    readinessProbe:\n      exec: {command: [test, -f, /tmp/ready]}\n      periodSeconds: 1\n      failureThreshold: 1\n    livenessProbe:\n      exec: {command: [sh, -c, 'test ! -f /tmp/dead']}\n      periodSeconds: 1\n      failureThreshold: 2\n      terminationGracePeriodSeconds: 1\n",
        ),
    )?;
    let p = node.wait_pod("probed", T, "ready", |p| {
        is_running(p, "c") && container(p, "c")["ready"] == true && cond(p, "Ready") == "True"
    })?;
    ensure!(cond(&p, "ContainersReady") == "True");
    let pid = |p: &serde_json::Value| -> Result<i32> {
        let id = container(p, "c")["containerID"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("bosun://")
            .to_string();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(
            node.path("run")
                .join("containers")
                .join(&id)
                .join("started.json"),
        )?)?;
        Ok(v["pid"].as_i64().unwrap_or_default() as i32)
    };
    let root = format!("/proc/{}/root/tmp", pid(&p)?);
    std::fs::remove_file(format!("{root}/ready"))?;
    node.wait_pod("probed", Duration::from_secs(10), "not ready", |p| {
        container(p, "c")["ready"] == false
            && cond(p, "Ready") == "False"
            && cond(p, "ContainersReady") == "False"
    })?;
    std::fs::write(format!("{root}/ready"), "")?;
    node.wait_pod("probed", Duration::from_secs(10), "ready again", |p| {
        container(p, "c")["ready"] == true && cond(p, "Ready") == "True"
    })?;
    // Liveness: failureThreshold 2 x periodSeconds 1 -> restarted within ~3 s.
    std::fs::write(format!("{root}/dead"), "")?;
    let start = Instant::now();
    node.wait_pod("probed", Duration::from_secs(20), "restarted", |p| {
        container(p, "c")["restartCount"].as_i64() == Some(1)
    })?;
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "restart took {:?}",
        start.elapsed()
    );
    node.delete("p.yaml")?;
    node.wait_gone("probed", T)?;
    let leaks = node.teardown();
    ensure!(leaks.is_empty(), "leaks: {leaks:?}");
    Ok(())
}

/// The container's `/tmp` as seen from the host (through its init's `/proc/<pid>/root`).
fn container_tmp(node: &Node, p: &serde_json::Value, name: &str) -> Result<String> {
    let id = container(p, name)["containerID"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("bosun://")
        .to_string();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(
        node.path("run")
            .join("containers")
            .join(&id)
            .join("started.json"),
    )?)?;
    Ok(format!(
        "/proc/{}/root/tmp",
        v["pid"].as_i64().unwrap_or_default()
    ))
}

#[test]
#[ignore = "needs root: runs containers"]
fn startup_probe_holds_liveness_back() -> Result<()> {
    let node = bosun_tests::setup("startup")?;
    // Liveness fails (threshold 1, every second) until /tmp/alive exists, which the container
    // makes only after 5 s; the startup probe checks the same file with room for 30 failures.
    // Were liveness not held back, the container would restart within ~2 s.
    node.apply(
        "s.yaml",
        &pod(
            "slowstart",
            "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'sleep 5; touch /tmp/alive; sleep 3600']\n    startupProbe:\n      exec: {command: [test, -f, /tmp/alive]}\n      periodSeconds: 1\n      failureThreshold: 30\n    livenessProbe:\n      exec: {command: [test, -f, /tmp/alive]}\n      periodSeconds: 1\n      failureThreshold: 1\n      terminationGracePeriodSeconds: 1\n",
        ),
    )?;
    let p = node.wait_pod("slowstart", T, "running", |p| is_running(p, "c"))?;
    ensure!(
        container(&p, "c")["started"] == false,
        "started before the startup probe succeeded: {}",
        container(&p, "c")
    );
    ensure!(container(&p, "c")["ready"] == false);
    let since = Instant::now();
    let p = node.wait_pod("slowstart", Duration::from_secs(20), "started", |p| {
        container(p, "c")["started"] == true
    })?;
    ensure!(
        since.elapsed() >= Duration::from_secs(2),
        "started too early ({:?})",
        since.elapsed()
    );
    ensure!(
        container(&p, "c")["restartCount"] == 0,
        "restarted while starting: {}",
        container(&p, "c")
    );
    // Without a readiness probe, ready follows started.
    node.wait_pod("slowstart", Duration::from_secs(5), "ready", |p| {
        container(p, "c")["ready"] == true && cond(p, "Ready") == "True"
    })?;
    // Liveness now runs and passes: still no restart a few periods later.
    std::thread::sleep(Duration::from_secs(3));
    let p = node.pod("slowstart").unwrap_or_default();
    ensure!(
        container(&p, "c")["restartCount"] == 0 && is_running(&p, "c"),
        "restarted after starting: {}",
        container(&p, "c")
    );
    // And it does act once started: removing the file restarts the container.
    std::fs::remove_file(format!("{}/alive", container_tmp(&node, &p, "c")?))?;
    node.wait_pod("slowstart", Duration::from_secs(20), "restarted", |p| {
        container(p, "c")["restartCount"].as_i64() == Some(1)
    })?;
    bosun_tests::check_clean(node)
}

#[test]
#[ignore = "needs root: runs containers"]
fn exec_probe_past_its_timeout_is_a_failure() -> Result<()> {
    let node = bosun_tests::setup("exectimeout")?;
    // The readiness command would succeed, but only after 3 s, past timeoutSeconds 1; once
    // /tmp/fast exists it succeeds at once.
    node.apply(
        "e.yaml",
        &pod(
            "slowprobe",
            "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sleep, '3600']\n    readinessProbe:\n      exec: {command: [sh, -c, 'test -f /tmp/fast || sleep 3']}\n      timeoutSeconds: 1\n      periodSeconds: 2\n      failureThreshold: 1\n",
        ),
    )?;
    let p = node.wait_pod("slowprobe", T, "running", |p| is_running(p, "c"))?;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let p = node.pod("slowprobe").unwrap_or_default();
        ensure!(
            container(&p, "c")["ready"] == false && cond(&p, "Ready") != "True",
            "ready although every probe ran past its timeout: {}",
            container(&p, "c")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The probe really runs: made fast, it passes.
    std::fs::write(format!("{}/fast", container_tmp(&node, &p, "c")?), "")?;
    node.wait_pod("slowprobe", Duration::from_secs(10), "ready", |p| {
        container(p, "c")["ready"] == true && cond(p, "Ready") == "True"
    })?;
    bosun_tests::check_clean(node)
}

/// An HTTPS server on 127.0.0.1 with a fresh self-signed certificate, answering 200 while
/// `healthy` holds and 503 otherwise. Returns its port; the thread lives as long as the test.
fn https_peer(healthy: Arc<AtomicBool>) -> Result<u16> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)?,
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut b = [0u8; 1024];
            let _ = tls.read(&mut b);
            let code = if healthy.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ =
                tls.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    Ok(port)
}

#[test]
#[ignore = "needs root: runs containers"]
fn https_readiness_probe_with_a_self_signed_certificate() -> Result<()> {
    // The probe runs from the agent's network namespace, so `host: 127.0.0.1` reaches a server
    // of this test process (busybox has no TLS server to run inside the pod).
    let healthy = Arc::new(AtomicBool::new(true));
    let port = https_peer(healthy.clone())?;
    let node = bosun_tests::setup("https")?;
    node.apply(
        "h.yaml",
        &pod(
            "tlsprobe",
            &format!("  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sleep, '3600']\n    readinessProbe:\n      httpGet: {{scheme: HTTPS, host: 127.0.0.1, port: {port}, path: /healthz}}\n      periodSeconds: 1\n      failureThreshold: 1\n"),
        ),
    )?;
    node.wait_pod("tlsprobe", T, "ready", |p| {
        is_running(p, "c") && container(p, "c")["ready"] == true && cond(p, "Ready") == "True"
    })?;
    healthy.store(false, Ordering::SeqCst);
    node.wait_pod("tlsprobe", Duration::from_secs(10), "not ready", |p| {
        container(p, "c")["ready"] == false && cond(p, "Ready") == "False"
    })?;
    healthy.store(true, Ordering::SeqCst);
    node.wait_pod("tlsprobe", Duration::from_secs(10), "ready again", |p| {
        container(p, "c")["ready"] == true
    })?;
    bosun_tests::check_clean(node)
}
