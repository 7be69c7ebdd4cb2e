//! End-to-end tests of pod networking through the real CNI plugins (bridge, host-local, portmap
//! from Debian's containernetworking-plugins). Each test node has its own network name, bridge,
//! subnet, conf dir and host-local store (see `bosun_tests::TestNetwork`); traffic stays in the
//! bridge and namespaces created here. Run with `--test-threads=1`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bosun_tests::{is_running, pod, setup, Node};

const T: Duration = Duration::from_secs(60);

fn pod_ip(p: &serde_json::Value) -> String {
    p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn http_get(addr: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

const SERVER: &str = "  containers:\n  - name: web\n    image: localhost/busybox:test\n    command: [sh, -c, 'mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www']\n    ports:\n    - {containerPort: 8080, hostPort: HOSTPORT}\n    env:\n    - name: MY_IP\n      valueFrom: {fieldRef: {fieldPath: status.podIP}}\n    - name: MY_NAME\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n";

#[test]
#[ignore = "needs root: creates network namespaces, a bridge, veths and iptables rules through CNI"]
fn pods_reach_each_other_hostport_files_and_del() -> Result<()> {
    let node = setup("net")?;
    let host_port = 20000 + (std::process::id() % 20000) as u16;
    node.apply(
        "server.yaml",
        &pod(
            "server",
            &format!(
                "  hostname: srv\n  subdomain: sub\n  hostAliases:\n  - {{ip: 10.9.9.9, hostnames: [alias.example]}}\n{}",
                SERVER.replace("HOSTPORT", &host_port.to_string())
            ),
        ),
    )?;
    let p = node.wait_pod("server", T, "running with an IP", |p| {
        is_running(p, "web") && !pod_ip(p).is_empty()
    })?;
    let ip = pod_ip(&p);
    let subnet_prefix = node.net.gateway.trim_end_matches('1');
    ensure!(
        ip.starts_with(subnet_prefix),
        "pod ip {ip} not in {}",
        node.net.subnet
    );
    ensure!(
        p["status"]["podIPs"][0]["ip"] == ip.as_str(),
        "{}",
        p["status"]
    );

    // A second pod fetches from the first by pod IP over the bridge.
    node.apply(
        "client.yaml",
        &pod(
            "client",
            &format!("  restartPolicy: Never\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'cat /etc/hosts; for i in 1 2 3 4 5 6 7 8 9 10; do printf \"GET /index.html HTTP/1.0\\r\\n\\r\\n\" | nc -w 2 {ip} 8080 | grep hello && exit 0; sleep 0.5; done; exit 1']\n"),
        ),
    )?;
    let c = node.wait_pod("client", T, "client done", |p| {
        matches!(bosun_tests::phase(p), "Succeeded" | "Failed")
    })?;
    let logs = node.logs("client", "c", false)?;
    ensure!(
        bosun_tests::phase(&c) == "Succeeded" && logs.contains("hello-from-srv"),
        "client: {} logs {logs:?}",
        c["status"]
    );
    let client_ip = pod_ip(&c);
    ensure!(
        !client_ip.is_empty() && client_ip != ip,
        "client ip {client_ip}"
    );
    // The client (no pod IP in its env) was built while its network was set up: its /etc/hosts
    // got the address written in place before it ran.
    ensure!(
        logs.contains(&format!("\n{client_ip}\t")),
        "client's /etc/hosts lacks its address {client_ip}: {logs:?}"
    );

    // hostPort through portmap: from the host, on the bridge address and on 127.0.0.1.
    let mut last = String::new();
    let start = Instant::now();
    let mut ok_gw = false;
    while start.elapsed() < Duration::from_secs(10) && !ok_gw {
        match http_get(&format!("{}:{host_port}", node.net.gateway)) {
            Ok(body) if body.contains("hello-from-srv") => ok_gw = true,
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(ok_gw, "hostPort via the bridge address: {last}");
    let local = http_get(&format!("127.0.0.1:{host_port}"));
    ensure!(
        matches!(&local, Ok(b) if b.contains("hello-from-srv")),
        "hostPort via 127.0.0.1: {local:?}"
    );

    // The mounted files and the downward API.
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    let hosts = std::fs::read_to_string(node.path("root").join(format!("pods/{uid}/etc-hosts")))?;
    ensure!(
        hosts.contains(&format!("{ip}\tsrv.sub.default.svc.cluster.local\tsrv\n"))
            && hosts.contains("10.9.9.9\talias.example"),
        "hosts: {hosts}"
    );
    // Inside the container: the same files are mounted, and the env has the pod IP.
    let proc_env = container_env(&node, &p, "web")?;
    ensure!(proc_env.contains(&format!("MY_IP={ip}")), "env: {proc_env}");
    ensure!(
        proc_env.contains(&format!("MY_NAME={}", bosun_tests::full_name("server"))),
        "env: {proc_env}"
    );
    let in_hosts = container_file(&node, &p, "web", "/etc/hosts")?;
    ensure!(in_hosts == hosts, "container /etc/hosts: {in_hosts}");
    let in_hostname = container_file(&node, &p, "web", "/etc/hostname")?;
    ensure!(in_hostname == "srv\n", "hostname: {in_hostname:?}");
    let resolv = container_file(&node, &p, "web", "/etc/resolv.conf")?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    // No clusterDNS configured: ClusterFirst falls back to the host's resolv.conf.
    for line in host_resolv.lines().filter(|l| l.starts_with("nameserver")) {
        ensure!(resolv.contains(line), "resolv.conf {resolv:?} lacks {line}");
    }

    // DEL on removal: host-local's store is empty again.
    ensure!(
        node.net.allocated().len() == 2,
        "allocated: {:?}",
        node.net.allocated()
    );
    node.delete("client.yaml")?;
    node.delete("server.yaml")?;
    node.wait_gone("server", T)?;
    node.wait_gone("client", T)?;
    ensure!(
        node.net.allocated().is_empty(),
        "leaked IPs: {:?}",
        node.net.allocated()
    );
    let mut node = node;
    let leaks = node.teardown();
    ensure!(leaks.is_empty(), "leaks: {leaks:?}");
    Ok(())
}

/// The environment of a container's main process, read from /proc on the host.
fn container_env(node: &Node, p: &serde_json::Value, name: &str) -> Result<String> {
    let pid = main_pid(node, p, name)?;
    let env = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(String::from_utf8_lossy(&env).replace('\0', "\n"))
}

/// A file as the container sees it (through /proc/<pid>/root).
fn container_file(node: &Node, p: &serde_json::Value, name: &str, path: &str) -> Result<String> {
    let pid = main_pid(node, p, name)?;
    Ok(std::fs::read_to_string(format!("/proc/{pid}/root{path}"))?)
}

fn main_pid(node: &Node, p: &serde_json::Value, name: &str) -> Result<i32> {
    let id = bosun_tests::container(p, name)["containerID"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("bosun://")
        .to_string();
    let started = node
        .path("run")
        .join("containers")
        .join(&id)
        .join("started.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&started)?)?;
    match v["pid"].as_i64() {
        Some(pid) => Ok(pid as i32),
        None => bail!("no pid in {}: {v}", started.display()),
    }
}

#[test]
#[ignore = "needs root: creates network namespaces, a bridge and veths through CNI"]
fn del_runs_for_pods_removed_while_the_agent_was_down() -> Result<()> {
    let mut node = setup("netcrash")?;
    node.apply(
        "p.yaml",
        &pod(
            "p",
            "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sleep, '3600']\n",
        ),
    )?;
    node.wait_pod("p", T, "running with an IP", |p| {
        is_running(p, "c") && !pod_ip(p).is_empty()
    })?;
    ensure!(
        node.net.allocated().len() == 1,
        "allocated: {:?}",
        node.net.allocated()
    );
    node.kill9();
    node.delete("p.yaml")?;
    node.start()?;
    node.wait_gone("p", T)?;
    ensure!(
        node.net.allocated().is_empty(),
        "leaked IPs: {:?}",
        node.net.allocated()
    );
    let leaks = node.teardown();
    ensure!(leaks.is_empty(), "leaks: {leaks:?}");
    Ok(())
}

#[test]
#[ignore = "needs root: creates network namespaces, a bridge and veths through CNI"]
fn a_failed_pod_network_holds_the_container_back_until_it_works() -> Result<()> {
    // The container is built while CNI ADD runs; when the ADD fails it must never run, and
    // must leave no attempt behind: once the network works, attempt 0 runs.
    bosun_tests::become_subreaper();
    let mut node = Node::new("netfail")?;
    let conflist = node.path("cni").join("10-test.conflist");
    let mut broken = node.net.conflist();
    broken["plugins"][0]["type"] = "bosun-no-such-plugin".into();
    std::fs::write(&conflist, serde_json::to_vec_pretty(&broken)?)?;
    node.start()?;
    node.apply(
        "p.yaml",
        &pod(
            "p",
            "  containers:\n  - name: c\n    image: localhost/busybox:test\n    command: [sh, -c, 'echo ran; exec sleep 3600']\n",
        ),
    )?;
    let p = node.wait_pod("p", T, "waiting for its network", |p| {
        bosun_tests::container(p, "c")["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bosun-no-such-plugin"))
    })?;
    ensure!(
        bosun_tests::container(&p, "c")["state"]["waiting"]["reason"] == "ContainerCreating",
        "{}",
        p["status"]
    );
    let log = std::fs::read_to_string(node.path("bosun.log"))?;
    ensure!(
        log.contains("FailedCreatePodSandBox"),
        "no FailedCreatePodSandBox event:\n{}",
        node.log_tail(30)
    );
    let uid = p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let containers: Vec<String> = std::fs::read_dir(node.path("run").join("containers"))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&uid))
        .collect();
    ensure!(
        containers.is_empty(),
        "unstarted containers left: {containers:?}"
    );
    ensure!(
        node.logs("p", "c", false).unwrap_or_default().is_empty(),
        "the container ran"
    );
    ensure!(
        !log.contains("Created container: c"),
        "a Created event for a container that never ran:\n{}",
        node.log_tail(30)
    );

    std::fs::write(&conflist, serde_json::to_vec_pretty(&node.net.conflist())?)?;
    let p = node.wait_pod("p", T, "running with an IP", |p| {
        is_running(p, "c") && !pod_ip(p).is_empty()
    })?;
    ensure!(
        bosun_tests::container(&p, "c")["restartCount"] == 0,
        "{}",
        p["status"]
    );
    ensure!(node.logs("p", "c", false)?.contains("ran"), "no output");
    ensure!(
        std::fs::read_to_string(node.path("bosun.log"))?.contains("Created container: c"),
        "no Created event once it ran"
    );
    node.delete("p.yaml")?;
    node.wait_gone("p", T)?;
    bosun_tests::check_clean(node)
}
