//! End-to-end tests of liveness, readiness and startup probes. Run with `--test-threads=1`.

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
