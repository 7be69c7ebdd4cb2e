//! Image pulls end to end against a real `docker-registry` on 127.0.0.1 (privileged tier).
//!
//! `cargo test -p bosun-tests --test images -- --ignored --test-threads=1`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bosun_tests::registry::{host_arch, noise, write_auth_file, LayoutBuilder, Registry};
use bosun_tests::{busybox_layout, container, Node};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(90);

fn pod(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// The test images, built once per process into a tempdir-like cache folder.
struct Images {
    layout: PathBuf,
    /// Manifest digest of `bb`.
    bb_digest: String,
    /// Layer digest of `tamper`'s own layer.
    tamper_layer: String,
}

fn images() -> Result<&'static Images> {
    static ONCE: std::sync::OnceLock<Images> = std::sync::OnceLock::new();
    if let Some(i) = ONCE.get() {
        return Ok(i);
    }
    let busybox = busybox_layout()?;
    let dir = std::env::temp_dir().join(format!("bosun-test-images-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut b = LayoutBuilder::new(&dir)?;
    let base = b.base(&busybox)?;
    let bb = b.image(&base, &[], json!({}), host_arch())?;
    let bb_digest = bb["digest"].as_str().context("digest")?.to_string();
    b.tag(bb.clone(), "bb");
    // Whiteouts: a lower layer with files, an upper one deleting, replacing and making /opaque
    // opaque.
    let lower = b.layer(&[
        ("data/", None),
        ("data/keep", Some(b"keep")),
        ("data/remove", Some(b"remove")),
        ("data/replace", Some(b"old")),
        ("opaque/", None),
        ("opaque/a", Some(b"a")),
        ("opaque/b", Some(b"b")),
    ])?;
    let upper = b.layer(&[
        ("data/", None),
        ("data/.wh.remove", Some(b"")),
        ("data/replace", Some(b"new")),
        ("opaque/", None),
        ("opaque/.wh..wh..opq", Some(b"")),
        ("opaque/c", Some(b"c")),
    ])?;
    let layers = b.image(&base, &[lower, upper], json!({}), host_arch())?;
    b.tag(layers, "layers");
    // Multi-arch: this machine's entry and another architecture's (same layers).
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let env = |p: &str| json!({ "Env": ["PATH=/bin:/usr/bin", format!("PLATFORM={p}")] });
    let mine = b.image(&base, &[], env(host_arch()), host_arch())?;
    let theirs = b.image(&base, &[], env(other), other)?;
    let idx = b.index(&[(theirs.clone(), other), (mine, host_arch())])?;
    b.tag(idx, "multi");
    let s390 = b.image(&base, &[], env("s390x"), "s390x")?;
    let noarch = b.index(&[(theirs, other), (s390, "s390x")])?;
    b.tag(noarch, "noarch");
    let user = b.image(
        &base,
        &[],
        json!({ "User": "1000", "StopSignal": "SIGUSR1" }),
        host_arch(),
    )?;
    b.tag(user, "user");
    let tl = b.layer(&[("tamper", Some(&noise(4096, 7)))])?;
    let tamper_layer = tl.0["digest"].as_str().context("digest")?.to_string();
    let tamper = b.image(&base, &[tl], json!({}), host_arch())?;
    b.tag(tamper, "tamper");
    let big = b.layer(&[("big", Some(&noise(40 << 20, 11)))])?;
    let bigimg = b.image(&base, &[big], json!({}), host_arch())?;
    b.tag(bigimg, "big");
    b.finish()?;
    let _ = ONCE.set(Images {
        layout: dir,
        bb_digest,
        tamper_layer,
    });
    ONCE.get().context("images")
}

fn push(reg: &Registry, tag: &str, name_tag: &str) -> Result<String> {
    reg.push(&images()?.layout, tag, name_tag)?;
    Ok(reg.reference(name_tag))
}

fn waiting_reason(p: &Value) -> String {
    container(p, "c")["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn run_once(node: &Node, name: &str, image: &str, policy: &str, cmd: &str) -> Result<String> {
    node.apply(
        &format!("{name}.yaml"),
        &pod(
            name,
            &format!("  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [sh, -c, '{cmd}']\n"),
        ),
    )?;
    node.wait_pod(name, T, "terminated", |p| {
        bosun_tests::terminated(p, "c").is_some()
    })?;
    node.logs(name, "c", false)
}

#[test]
#[ignore = "needs root: runs containers from pulled images"]
fn pull_by_tag_and_digest_and_platform_and_whiteouts() -> Result<()> {
    let imgs = images()?;
    let reg = Registry::start(None)?;
    let bb = push(&reg, "bb", "busybox:v1")?;
    let layers = push(&reg, "layers", "layers:v1")?;
    let multi = push(&reg, "multi", "multi:v1")?;
    let noarch = push(&reg, "noarch", "noarch:v1")?;
    let user = push(&reg, "user", "user:v1")?;
    let mut node = Node::new("img-pull")?;

    // bosun pull by tag and by digest.
    let out = node.bosun(&["pull", &bb])?;
    ensure!(
        out.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).contains(&imgs.bb_digest));
    let by_digest = format!("{}/busybox@{}", reg.addr, imgs.bb_digest);
    let out = node.bosun(&["pull", &by_digest])?;
    ensure!(
        out.status.success(),
        "pull by digest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A node without CA certificates (no ca-certificates package, like the VM tier's guest):
    // a plain-HTTP registry still works, and an HTTPS one fails with a clear error, never a
    // crash (reqwest's Client::new() used to panic there).
    let no_cas = [
        ("SSL_CERT_FILE", "/dev/null"),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let out = node.bosun_env(&["pull", &bb], &no_cas)?;
    ensure!(
        out.status.success(),
        "pull without system CAs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.bosun_env(&["pull", "registry.invalid/x:v1"], &no_cas)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("CA certificates"),
        "https pull without system CAs: {:?} {err}",
        out.status
    );
    // The index of a wrong platform only: a clear error naming what it has.
    let out = node.bosun(&["pull", &noarch])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("no manifest for linux/"),
        "{err}"
    );
    ensure!(err.contains("s390x"), "{err}");
    let listed = node.bosun(&["images"])?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    ensure!(
        listed.contains("busybox:v1") && listed.contains("LAST USED"),
        "{listed}"
    );

    node.start()?;
    let log = run_once(
        &node,
        "digest",
        &by_digest,
        "IfNotPresent",
        "echo by-digest",
    )?;
    ensure!(log.contains("by-digest"), "{log}");
    let log = run_once(
        &node,
        "multi",
        &multi,
        "IfNotPresent",
        "echo platform=$PLATFORM",
    )?;
    ensure!(log.contains(&format!("platform={}", host_arch())), "{log}");
    let log = run_once(
        &node,
        "wh",
        &layers,
        "IfNotPresent",
        "cd /data && ls -A; cat replace; echo; ls -A /opaque",
    )?;
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    ensure!(lines == ["keep", "replace", "new", "c"], "{log:?}");
    let log = run_once(&node, "user", &user, "IfNotPresent", "id -u")?;
    ensure!(log.trim() == "1000", "{log}");

    // The image's StopSignal (SIGUSR1) ends the container on delete, not SIGTERM; the
    // container runs as the image's User (1000), so the marks folder is open to all.
    let marks = node.path("marks");
    std::fs::create_dir_all(&marks)?;
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    node.apply(
        "stopsig.yaml",
        &pod(
            "stopsig",
            &format!("  terminationGracePeriodSeconds: 30\n  volumes:\n  - name: marks\n    hostPath: {{path: {}, type: Directory}}\n  containers:\n  - name: c\n    image: {user}\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'trap \"echo usr1 > /marks/sig; exit 0\" USR1; trap \"echo term > /marks/sig; exit 0\" TERM; echo up > /marks/up; while true; do sleep 0.1; done']\n    volumeMounts: [{{name: marks, mountPath: /marks}}]\n", marks.display()),
        ),
    )?;
    node.wait_pod("stopsig", T, "running", |p| {
        bosun_tests::is_running(p, "c") && marks.join("up").exists()
    })?;
    let t0 = Instant::now();
    node.delete("stopsig.yaml")?;
    node.wait_gone("stopsig", T)?;
    let sig = std::fs::read_to_string(marks.join("sig")).unwrap_or_default();
    ensure!(
        sig.trim() == "usr1",
        "stop signal seen by the container: {sig:?}"
    );
    // Ended by its own trap, well before the 30 s grace period would have run out.
    ensure!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    Ok(())
}

#[test]
#[ignore = "needs root: runs containers from pulled images"]
fn policies_count_registry_requests_and_one_pull_for_ten_pods() -> Result<()> {
    let reg = Registry::start(None)?;
    let img = push(&reg, "bb", "policy:v1")?;
    let shared = push(&reg, "bb", "shared:v1")?;
    let mut node = Node::new("img-policy")?;
    node.start()?;
    // Never and absent.
    node.apply(
        "never.yaml",
        &pod("never", &format!("  containers:\n  - name: c\n    image: {img}\n    imagePullPolicy: Never\n    command: [sleep, '100']\n")),
    )?;
    node.wait_pod("never", T, "ErrImageNeverPull", |p| {
        waiting_reason(p) == "ErrImageNeverPull"
    })?;
    ensure!(reg.manifest_gets("policy") == 0);
    node.delete("never.yaml")?;
    node.wait_gone("never", T)?;
    run_once(&node, "inp1", &img, "IfNotPresent", "true")?;
    ensure!(
        reg.manifest_gets("policy") == 1,
        "{}",
        reg.manifest_gets("policy")
    );
    run_once(&node, "inp2", &img, "IfNotPresent", "true")?;
    ensure!(reg.manifest_gets("policy") == 1);
    run_once(&node, "always1", &img, "Always", "true")?;
    ensure!(reg.manifest_gets("policy") == 2);
    run_once(&node, "always2", &img, "Always", "true")?;
    ensure!(reg.manifest_gets("policy") == 3);
    run_once(&node, "never2", &img, "Never", "true")?;
    ensure!(reg.manifest_gets("policy") == 3);

    // Ten pods of one image at once: one pull.
    for i in 0..10 {
        node.apply(
            &format!("ten{i}.yaml"),
            &pod(&format!("ten{i}"), &format!("  containers:\n  - name: c\n    image: {shared}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '100']\n")),
        )?;
    }
    for i in 0..10 {
        node.wait_pod(&format!("ten{i}"), T, "running", |p| {
            bosun_tests::is_running(p, "c")
        })?;
    }
    ensure!(
        reg.manifest_gets("shared") == 1,
        "{}",
        reg.manifest_gets("shared")
    );
    let blob_gets = reg
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/shared/blobs/"))
        .count();
    // Same blobs as policy:v1, already in the store: nothing is downloaded again.
    ensure!(blob_gets == 0, "blobs fetched again: {blob_gets}");
    Ok(())
}

#[test]
#[ignore = "needs root: runs containers from pulled images"]
fn missing_tag_backs_off_and_tampered_blob_is_rejected() -> Result<()> {
    let imgs = images()?;
    let reg = Registry::start(None)?;
    let tamper = push(&reg, "tamper", "tamper:v1")?;
    // Flip a byte of the stored layer.
    let file = reg.blob_file(&imgs.tamper_layer);
    let mut bytes = std::fs::read(&file)?;
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(&file, bytes)?;
    let mut node = Node::new("img-fail")?;
    let out = node.bosun(&["pull", &tamper])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("failed verification"),
        "{err}"
    );
    ensure!(err.contains(&imgs.tamper_layer), "{err}");
    let data = node.path("data/images");
    ensure!(
        std::fs::read_dir(data.join("meta"))?.count() == 1,
        "only the imported busybox"
    );
    node.start()?;
    let missing = reg.reference("tamper:nope");
    node.apply(
        "missing.yaml",
        &pod(
            "missing",
            &format!(
                "  containers:\n  - name: c\n    image: {missing}\n    command: [sleep, '1']\n"
            ),
        ),
    )?;
    let p = node.wait_pod("missing", T, "ErrImagePull", |p| {
        waiting_reason(p) == "ErrImagePull"
    })?;
    let msg = container(&p, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    ensure!(msg.to_lowercase().contains("manifest unknown"), "{msg}");
    node.wait_pod("missing", T, "ImagePullBackOff", |p| {
        waiting_reason(p) == "ImagePullBackOff"
    })?;
    Ok(())
}

#[test]
#[ignore = "needs root: runs containers from pulled images"]
fn auth_through_the_credentials_file() -> Result<()> {
    let reg = Registry::start(Some(("alice", "s3cret")))?;
    let img = push(&reg, "bb", "private:v1")?;
    let mut node = Node::new("img-auth")?;
    let out = node.bosun(&["pull", &img])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "anonymous pull must fail");
    ensure!(err.to_lowercase().contains("auth"), "{err}");
    let creds = node.path("auth.json");
    write_auth_file(&creds, &reg)?;
    std::env::set_var("BOSUN_IMAGE_CREDENTIALS", &creds);
    let started = node.start();
    std::env::remove_var("BOSUN_IMAGE_CREDENTIALS");
    started?;
    let log = run_once(&node, "private", &img, "IfNotPresent", "echo authed")?;
    ensure!(log.contains("authed"), "{log}");
    Ok(())
}

#[test]
#[ignore = "needs root: runs containers from pulled images"]
fn gc_keeps_images_in_use() -> Result<()> {
    let reg = Registry::start(None)?;
    let used = push(&reg, "bb", "used:v1")?;
    let unused = push(&reg, "user", "unused:v1")?;
    let mut node = Node::new("img-gc")?;
    let out = node.bosun(&["pull", &unused])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.start()?;
    node.apply(
        "used.yaml",
        &pod("used", &format!("  containers:\n  - name: c\n    image: {used}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '100']\n")),
    )?;
    node.wait_pod("used", T, "running", |p| bosun_tests::is_running(p, "c"))?;
    let out = node.bosun(&[
        "images",
        "gc",
        "--high",
        "1",
        "--low",
        "0",
        "--min-age",
        "0s",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&node.bosun(&["images"])?.stdout).to_string();
    ensure!(
        listed.contains("used:v1"),
        "in-use image removed: {text}\n{listed}"
    );
    ensure!(
        !listed.contains("unused:v1"),
        "unused image kept: {text}\n{listed}"
    );
    ensure!(
        !listed.contains("busybox:latest"),
        "unused import kept: {listed}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: mounts image volumes (overlay, bind) into containers"]
fn image_volumes_are_read_only_views_kept_from_gc_and_unmounted() -> Result<()> {
    let reg = Registry::start(None)?;
    // `layers`: busybox + a lower and an upper layer with whiteouts (an overlay view);
    // `bb`: busybox alone (its one layer: a read-only bind).
    let layers = push(&reg, "layers", "vol-layers:v1")?;
    let bb = push(&reg, "bb", "vol-bb:v1")?;
    let unused = push(&reg, "user", "vol-unused:v1")?;
    let mut node = Node::new("img-vol")?;
    let out = node.bosun(&["pull", &unused])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.start()?;
    let script = "cat /vol/data/keep /vol/data/replace /vol/opaque/c; echo; \
                  echo $(ls /vol/data) $(ls /vol/opaque); \
                  test -x /bin-of-bb/busybox && echo bin-ok; \
                  test -x /bb-root/bin/busybox && echo root-ok; \
                  touch /vol/x 2>/dev/null && echo vol-writable || echo vol-read-only; \
                  touch /bin-of-bb/x 2>/dev/null && echo bb-writable || echo bb-read-only; \
                  grep \" /vol \" /proc/self/mounts | grep -q \" ro,\" && echo mounted-ro; \
                  sleep 3600";
    node.apply(
        "v.yaml",
        &pod(
            "vol",
            &format!("  volumes:\n  - name: layers\n    image: {{reference: \"{layers}\"}}\n  - name: bb\n    image: {{reference: \"{bb}\", pullPolicy: IfNotPresent}}\n  containers:\n  - name: c\n    image: localhost/busybox:test\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{script}']\n    volumeMounts:\n    - {{name: layers, mountPath: /vol}}\n    - {{name: bb, mountPath: /bin-of-bb, subPath: bin}}\n    - {{name: bb, mountPath: /bb-root}}\n"),
        ),
    )?;
    let p = node.wait_pod("vol", T, "running", |p| bosun_tests::is_running(p, "c"))?;
    let uid = p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut log = String::new();
    for _ in 0..50 {
        log = node.logs("vol", "c", false)?;
        if log.lines().count() >= 7 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines: Vec<&str> = log.lines().collect();
    ensure!(lines.len() == 7, "{log:?}");
    // The image's files with the upper layer's whiteouts and opaque folder applied.
    ensure!(lines[0] == "keepnewc", "{log:?}");
    ensure!(lines[1].trim() == "keep replace c", "{log:?}");
    ensure!(lines[2] == "bin-ok", "{log:?}");
    ensure!(lines[3] == "root-ok", "{log:?}");
    ensure!(lines[4] == "vol-read-only", "{log:?}");
    ensure!(lines[5] == "bb-read-only", "{log:?}");
    ensure!(lines[6] == "mounted-ro", "{log:?}");
    // One view per pod and image, on the host.
    let views = node.path("run").join("image-volumes").join(&uid);
    let mounted: Vec<String> = node
        .mounts()
        .into_iter()
        .filter(|m| m.starts_with(&views.display().to_string()))
        .collect();
    ensure!(mounted.len() == 2, "views {mounted:?}");
    // In use while mounted: image GC keeps both images, removes the unused one.
    let out = node.bosun(&[
        "images",
        "gc",
        "--high",
        "1",
        "--low",
        "0",
        "--min-age",
        "0s",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&node.bosun(&["images"])?.stdout).to_string();
    ensure!(
        listed.contains("vol-layers:v1") && listed.contains("vol-bb:v1"),
        "an image volume's image was removed: {listed}"
    );
    ensure!(
        !listed.contains("vol-unused:v1"),
        "unused image kept: {listed}"
    );
    // Gone with the pod.
    node.delete("v.yaml")?;
    node.wait_gone("vol", T)?;
    let left: Vec<String> = node
        .mounts()
        .into_iter()
        .filter(|m| m.contains("image-volumes"))
        .collect();
    ensure!(left.is_empty(), "views left mounted: {left:?}");
    ensure!(!views.exists(), "{} left", views.display());
    bosun_tests::check_clean(node)
}

#[test]
#[ignore = "needs root: kills a pull with SIGKILL"]
fn kill9_during_a_pull_then_a_clean_retry() -> Result<()> {
    let reg = Registry::start(None)?;
    let big = push(&reg, "big", "big:v1")?;
    let node = Node::new("img-kill")?;
    let downloads = node.path("data/images/downloads");
    let mut child = std::process::Command::new(bosun_tests::bosun_bin())
        .args(["pull", &big, "--data-dir"])
        .arg(node.path("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + T;
    let mut killed_at = 0;
    while Instant::now() < deadline {
        let partial = std::fs::read_dir(&downloads)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        if partial > 1 << 20 {
            killed_at = partial;
            break;
        }
        if child.try_wait()?.is_some() {
            bail!("the pull finished before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill()?;
    child.wait()?;
    ensure!(killed_at > 0, "no partial download seen");
    let listed = String::from_utf8_lossy(&node.bosun(&["images"])?.stdout).to_string();
    ensure!(!listed.contains("big:v1"), "{listed}");
    let out = node.bosun(&["pull", &big])?;
    ensure!(
        out.status.success(),
        "retry: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&node.bosun(&["images"])?.stdout).to_string();
    ensure!(listed.contains("big:v1"), "{listed}");
    ensure!(
        std::fs::read_dir(&downloads)?.count() == 0,
        "downloads left behind"
    );
    ensure!(
        std::fs::read_dir(node.path("data/images/tmp"))?.count() == 0,
        "tmp left behind"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: runs a container from a registry that answers late"]
fn an_unreachable_registry_is_tried_again_on_the_kubelets_schedule() -> Result<()> {
    // The registry is down when the pod comes, and back 20 s later. The kubelet's image back-off
    // (10 s after the last failure, doubling to 300 s) tries again at about 10 s and 30 s: the
    // pod runs well within 25 s of the registry's return. A back-off counted from the first
    // failure's entry (as bosun once had) waited 10 minutes.
    let mut reg = Registry::start(None)?;
    let img = push(&reg, "bb", "late:v1")?;
    reg.stop();
    let mut node = Node::new("img-late")?;
    node.start()?;
    node.apply(
        "late.yaml",
        &pod("late", &format!("  containers:\n  - name: c\n    image: {img}\n    imagePullPolicy: Always\n    command: [sleep, '1000']\n")),
    )?;
    let applied = Instant::now();
    let p = node.wait_pod("late", T, "a failed pull", |p| {
        matches!(
            waiting_reason(p).as_str(),
            "ErrImagePull" | "ImagePullBackOff"
        )
    })?;
    let message = container(&p, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    ensure!(
        message.contains(&reg.addr),
        "the error names the registry: {message}"
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(applied.elapsed()));
    // The log spans both runs of the registry: count only the pulls after its return.
    let gets_before = reg.manifest_gets("late");
    reg.resume()?;
    let back = Instant::now();
    node.wait_pod("late", Duration::from_secs(25), "running", |p| {
        bosun_tests::is_running(p, "c")
    })?;
    let gets = reg.manifest_gets("late") - gets_before;
    ensure!(gets >= 1, "pulled after the registry came back: {gets}");
    eprintln!("running {:?} after the registry came back", back.elapsed());
    node.delete("late.yaml")?;
    node.wait_gone("late", T)?;
    Ok(())
}
