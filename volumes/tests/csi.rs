//! Privileged: bosun's CSI node side against the Kubernetes CSI reference driver and its
//! registration sidecar as host processes (csi-driver-host-path's `hostpathplugin` and
//! `csi-node-driver-registrar`), everything below one tempdir (root dir, plugins registry, driver
//! state).
//!
//! The binaries are built from their released sources by `tests/csi/upstream/build.sh` (cached
//! under `~/.cache/bosun/csi/<archive>/bin/`). What the driver was asked is read from its log: at
//! `--v=5` it logs every call as `gRPCCall: {"Method", "Request", "Response", "Error"}` JSON,
//! which Kubernetes' own CSI e2e tests read too.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bosun_volumes::csi::proto::csi as pb;
use bosun_volumes::csi::{self, CsiVolume, DiscoveryOptions, Drivers, PodInfo, UnstageError};
use bosun_volumes::{layout, mounts_below, teardown_pod, TeardownError};
use nix::mount::{umount2, MntFlags};

const DRIVER: &str = "hostpath.csi.k8s.io";
const NODE_ID: &str = "bosun-test-node";

/// Kills (SIGTERM, then SIGKILL) and reaps a child when dropped.
struct Proc(Option<Child>, &'static str);

impl Proc {
    fn terminate(&mut self) {
        if let Some(mut c) = self.0.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            for _ in 0..50 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("{} did not exit on SIGTERM; killing it", self.1);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Lazily unmounts everything below a folder when dropped (declare it after the TempDir).
struct UnmountGuard(PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            let m = mounts_below(&self.0);
            if m.is_empty() {
                return;
            }
            for p in m {
                let _ = umount2(&p, MntFlags::MNT_DETACH);
            }
        }
    }
}

/// The reference binaries: the driver and the registrar.
struct Peers {
    driver: PathBuf,
    registrar: PathBuf,
}

/// Builds (or finds cached) the reference binaries; `None` when Go is needed and not installed.
fn peers() -> Option<Peers> {
    // The runtime CARGO_MANIFEST_DIR: a shared build folder may hold a binary compiled in
    // another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let script = manifest_dir.join("../tests/csi/upstream/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/csi/upstream/build.sh");
    if out.status.code() == Some(2) {
        return None;
    }
    assert!(out.status.success(), "tests/csi/upstream/build.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cache = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh prints the cache folder")
            .trim(),
    );
    let p = Peers {
        driver: cache.join("csi-driver-host-path-v1.18.0/bin/hostpathplugin"),
        registrar: cache.join("node-driver-registrar-v2.17.0/bin/csi-node-driver-registrar"),
    };
    assert!(p.driver.is_file(), "{}", p.driver.display());
    assert!(p.registrar.is_file(), "{}", p.registrar.display());
    Some(p)
}

fn spawn(bin: &Path, args: &[&str], log: &Path, what: &'static str) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    Proc(Some(child), what)
}

/// hostpathplugin serving `sock` with its state in `state`, logging every call to `log`.
fn driver(p: &Peers, sock: &Path, state: &Path, log: &Path, extra: &[&str]) -> Proc {
    let endpoint = format!("unix://{}", sock.to_str().expect("utf-8"));
    let mut args = vec![
        "--endpoint",
        &endpoint,
        "--nodeid",
        NODE_ID,
        "--drivername",
        DRIVER,
        "--statedir",
        state.to_str().expect("utf-8"),
        "--v=5",
    ];
    args.extend_from_slice(extra);
    spawn(&p.driver, &args, log, "hostpathplugin")
}

/// csi-node-driver-registrar for the driver at `sock`, announcing `announced` as its endpoint.
fn registrar(p: &Peers, sock: &Path, announced: &Path, registry: &Path, log: &Path) -> Proc {
    spawn(
        &p.registrar,
        &[
            "--csi-address",
            sock.to_str().expect("utf-8"),
            "--kubelet-registration-path",
            announced.to_str().expect("utf-8"),
            "--plugin-registration-path",
            registry.to_str().expect("utf-8"),
            "--v=5",
        ],
        log,
        "csi-node-driver-registrar",
    )
}

/// The request of the driver's last `method` call (`NodePublishVolume`...), from its log.
fn last_request(log: &Path, method: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(log).expect("driver log");
    text.lines()
        .rev()
        .filter_map(|l| l.split_once("gRPCCall: ").map(|(_, j)| j))
        .map(|j| serde_json::from_str::<serde_json::Value>(j).expect("gRPCCall json"))
        .find(|v| {
            v["Method"]
                .as_str()
                .is_some_and(|m| m.ends_with(&format!("/{method}")))
        })
        .unwrap_or_else(|| panic!("no {method} call in the driver's log:\n{text}"))["Request"]
        .clone()
}

/// The driver's record of a volume (its `state.json`).
fn driver_volume(state: &Path, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(state.join("state.json")).expect("state.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("state json");
    v["Volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["VolID"] == id)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// A volume made through the driver's Controller service (the external-provisioner's part).
async fn create_volume(d: &csi::Driver, name: &str, block: bool) -> pb::Volume {
    let access_type = if block {
        pb::volume_capability::AccessType::Block(pb::volume_capability::BlockVolume::default())
    } else {
        pb::volume_capability::AccessType::Mount(pb::volume_capability::MountVolume::default())
    };
    pb::controller_client::ControllerClient::new(d.channel())
        .create_volume(pb::CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 1 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![pb::VolumeCapability {
                access_mode: Some(pb::volume_capability::AccessMode {
                    mode: pb::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
                access_type: Some(access_type),
            }],
            ..Default::default()
        })
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .expect("volume")
}

async fn delete_volume(d: &csi::Driver, id: &str) {
    pb::controller_client::ControllerClient::new(d.channel())
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: id.into(),
            secrets: Default::default(),
        })
        .await
        .expect("DeleteVolume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts and the CSI reference driver (Go build)"]
async fn csi_node_side_against_the_reference_driver() {
    let Some(bins) = peers() else {
        eprintln!("SKIPPED: go is not installed, cannot build the CSI reference driver");
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let base = std::fs::canonicalize(td.path()).expect("canonicalize");
    let _unmount = UnmountGuard(base.clone());
    let root = base.join("root");
    let registry = base.join("plugins_registry");
    let state = base.join("state");
    let plugin_dir = root.join("plugins").join(DRIVER);
    std::fs::create_dir_all(&plugin_dir).expect("mkdir");
    std::fs::create_dir_all(&registry).expect("mkdir");
    let sock = plugin_dir.join("csi.sock");
    let log = base.join("driver.log");
    let _driver = driver(&bins, &sock, &state, &log, &["--maxvolumespernode=17"]);
    let reg_log = base.join("registrar.log");
    let mut registrar = registrar(&bins, &sock, &sock, &registry, &reg_log);

    // Discovery finds the driver through the registration socket; NodeGetInfo gives the rest.
    let drivers = Drivers::default();
    let mut changes = drivers.subscribe();
    let discovery = tokio::spawn(csi::run_discovery(
        registry.clone(),
        drivers.clone(),
        DiscoveryOptions {
            rescan: Duration::from_secs(1),
            retry: Duration::from_secs(1),
        },
    ));
    let d = drivers
        .wait_for(DRIVER, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "driver never registered; registrar log:\n{}",
                std::fs::read_to_string(&reg_log).unwrap_or_default()
            )
        });
    assert_eq!(d.node_id, NODE_ID);
    assert_eq!(d.max_volumes_per_node, 17);
    assert_eq!(
        d.topology_keys(),
        vec!["topology.hostpath.csi/node".to_string()]
    );
    assert_eq!(d.endpoint, sock);
    assert_eq!(
        d.registration_socket,
        registry.join(format!("{DRIVER}-reg.sock"))
    );
    assert!(d.capabilities.stage_unstage);
    assert!(d.capabilities.get_volume_stats);
    assert!(d.capabilities.expand_volume);
    assert!(d.capabilities.single_node_multi_writer);
    assert!(!d.capabilities.volume_mount_group);
    assert!(changes.borrow_and_update().contains_key(DRIVER));
    let mut told = String::new();
    for _ in 0..50 {
        told = std::fs::read_to_string(&reg_log).expect("registrar log");
        if told.contains("Received NotifyRegistrationStatus call") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The registrar logs the status it was sent (`status="plugin_registered:true"`).
    assert!(
        told.contains(r#"status="plugin_registered:true""#),
        "{told}"
    );

    // A volume from the Controller service: a folder of the driver's state.
    let created = create_volume(&d, "pvc-0001", false).await;
    let handle = created.volume_id.clone();
    let backing = state.join(&handle);
    assert!(backing.is_dir());

    let mut vol = CsiVolume::new(DRIVER, &handle, "pv-0001");
    vol.node_name = NODE_ID.into();
    vol.volume_context = created
        .volume_context
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    vol.volume_context.insert("e2e/color".into(), "blue".into());
    vol.access_type = csi::AccessType::Mount {
        fs_type: "ext4".into(),
        mount_flags: vec!["noatime".into()],
        volume_mount_group: String::new(),
    };
    vol.stage_secrets
        .insert("key".into(), "stage-secret".into());
    // What a VolumeAttachment's attachmentMetadata gives stage and publish.
    vol.publish_context
        .insert("deviceID".into(), "/dev/e2e-csi".into());

    // Stage: the kubelet's globalmount folder and vol_data.json beside it; the driver records
    // the staging path (it mounts nothing there: its publish binds its own folder).
    let staging = csi::stage(&root, &drivers, &vol)
        .await
        .expect("stage")
        .expect("the driver stages");
    assert_eq!(
        staging,
        layout::csi_staging_path(&root, DRIVER, &handle).expect("path")
    );
    assert!(staging.is_dir());
    let sdata = csi::voldata::read(staging.parent().expect("parent"))
        .expect("vol_data")
        .expect("present");
    assert_eq!(
        (sdata.driver_name.as_str(), sdata.volume_handle.as_str()),
        (DRIVER, handle.as_str())
    );
    assert_eq!(
        driver_volume(&state, &handle)["Staged"],
        serde_json::json!([staging.to_str().expect("utf-8")])
    );
    let req = last_request(&log, "NodeStageVolume");
    assert_eq!(req["volume_id"], handle.as_str());
    assert_eq!(req["staging_target_path"], staging.to_str().expect("utf-8"));
    assert_eq!(
        req["volume_capability"]["AccessType"]["Mount"]["fs_type"],
        "ext4"
    );
    assert_eq!(
        req["volume_capability"]["AccessType"]["Mount"]["mount_flags"][0],
        "noatime"
    );
    assert_eq!(req["secrets"]["key"], "stage-secret");
    assert_eq!(req["volume_context"]["e2e/color"], "blue");
    assert_eq!(req["publish_context"]["deviceID"], "/dev/e2e-csi");
    // Idempotent: the driver answers "already staged".
    csi::stage(&root, &drivers, &vol)
        .await
        .expect("stage again");
    assert_eq!(
        driver_volume(&state, &handle)["Staged"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Publish to pod A with podInfoOnMount.
    let pod_a = PodInfo {
        name: "web-0".into(),
        namespace: "default".into(),
        uid: "pod-a".into(),
        service_account: "web".into(),
        ephemeral: false,
        pod_info_on_mount: true,
        service_account_tokens: None,
    };
    let target_a = csi::publish(&root, "pod-a", &drivers, &vol, Some(&pod_a))
        .await
        .expect("publish a");
    let pod_a_dir = layout::pod_dir(&root, "pod-a").expect("pod dir");
    assert_eq!(
        target_a,
        pod_a_dir.join("volumes/kubernetes.io~csi/pv-0001/mount")
    );
    assert!(bosun_volumes::mounts::is_mount_point(&target_a).expect("mountinfo"));
    let req = last_request(&log, "NodePublishVolume");
    let ctx = &req["volume_context"];
    assert_eq!(ctx["csi.storage.k8s.io/pod.name"], "web-0");
    assert_eq!(ctx["csi.storage.k8s.io/pod.namespace"], "default");
    assert_eq!(ctx["csi.storage.k8s.io/pod.uid"], "pod-a");
    assert_eq!(ctx["csi.storage.k8s.io/serviceAccount.name"], "web");
    assert_eq!(ctx["csi.storage.k8s.io/ephemeral"], "false");
    assert_eq!(ctx["e2e/color"], "blue");
    assert_eq!(req["staging_target_path"], staging.to_str().expect("utf-8"));
    assert_eq!(req["target_path"], target_a.to_str().expect("utf-8"));
    assert_eq!(req["publish_context"]["deviceID"], "/dev/e2e-csi");
    assert!(req["readonly"].as_bool() != Some(true), "{req}");
    csi::publish(&root, "pod-a", &drivers, &vol, Some(&pod_a))
        .await
        .expect("publish again is idempotent");
    assert_eq!(mounts_below(&pod_a_dir).len(), 1, "mounted once");

    // A write through the pod's path lands in the driver's folder.
    std::fs::write(target_a.join("hello"), b"from pod a").expect("write through publish");
    assert_eq!(
        std::fs::read(backing.join("hello")).expect("via driver"),
        b"from pod a"
    );

    // Read-only to pod B: reads work, writes fail.
    let mut ro = vol.clone();
    ro.read_only = true;
    let target_b = csi::publish(&root, "pod-b", &drivers, &ro, None)
        .await
        .expect("publish b");
    let req = last_request(&log, "NodePublishVolume");
    assert_eq!(req["readonly"], true);
    assert!(req["volume_context"]
        .get("csi.storage.k8s.io/pod.name")
        .is_none());
    assert_eq!(
        std::fs::read(target_b.join("hello")).expect("read b"),
        b"from pod a"
    );
    let err = std::fs::write(target_b.join("nope"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // Stats: the driver's figures (of the file system its folder is on) and its volume
    // condition, passed on as it gave them.
    let stats = csi::volume_stats(&drivers, DRIVER, &handle, &target_a, Some(&staging))
        .await
        .expect("stats");
    assert!(stats.bytes.expect("bytes").total > 0);
    assert!(stats.inodes.is_some());
    let req = last_request(&log, "NodeGetVolumeStats");
    assert_eq!(req["volume_path"], target_a.to_str().expect("utf-8"));
    assert!(stats.condition.is_some());
    // Expand: the driver grows nothing on the node (a folder) and says no size.
    assert_eq!(
        csi::expand(&drivers, &vol, &target_a, Some(&staging), 2 << 20)
            .await
            .expect("expand"),
        0
    );
    assert_eq!(
        last_request(&log, "NodeExpandVolume")["capacity_range"]["required_bytes"],
        2 << 20
    );
    // Beyond what the driver allows: OutOfRange, which the kubelet calls infeasible.
    match csi::expand(&drivers, &vol, &target_a, Some(&staging), 1 << 50).await {
        Err(csi::ExpandError::Rpc { failure, .. }) => {
            assert!(failure.infeasible(), "{failure}");
            assert!(
                failure
                    .to_string()
                    .starts_with("rpc error: code = OutOfRange desc = "),
                "{failure}"
            );
        }
        other => panic!("expansion beyond the driver's maximum: {other:?}"),
    }

    // Still in use: no unstage, no pod teardown.
    assert_eq!(
        csi::published_count(&root, DRIVER, &handle).expect("count"),
        2
    );
    match csi::unstage(&root, &drivers, DRIVER, &handle).await {
        Err(UnstageError::InUse { count: 2, .. }) => {}
        other => panic!("unstage while published: {other:?}"),
    }
    match teardown_pod(&pod_a_dir) {
        Err(TeardownError::CsiVolumePublished { .. }) => {}
        other => panic!("teardown of a pod with a published CSI volume: {other:?}"),
    }
    assert!(bosun_volumes::mounts::is_mount_point(&target_a).expect("mountinfo"));

    // Reconstruction from disk alone, then unpublish what was found.
    for uid in ["pod-a", "pod-b"] {
        let pod_dir = layout::pod_dir(&root, uid).expect("pod dir");
        let found = csi::published_volumes(&pod_dir).expect("reconstruct");
        assert_eq!(found.len(), 1, "{uid}");
        assert_eq!(found[0].spec_name, "pv-0001");
        assert_eq!(found[0].data.volume_handle, handle);
        assert_eq!(found[0].data.driver_name, DRIVER);
        assert_eq!(found[0].data.node_name, NODE_ID);
        assert!(found[0].mounted);
        for v in found {
            csi::unpublish(&root, uid, &v.spec_name, &drivers)
                .await
                .expect("unpublish");
        }
        csi::unpublish(&root, uid, "pv-0001", &drivers)
            .await
            .expect("unpublish again is idempotent");
        assert!(!pod_dir.join("volumes/kubernetes.io~csi/pv-0001").exists());
        teardown_pod(&pod_dir).expect("teardown after unpublish");
        assert!(!pod_dir.exists());
    }
    assert_eq!(
        driver_volume(&state, &handle)["Published"],
        serde_json::json!([])
    );
    assert_eq!(
        std::fs::read(backing.join("hello")).expect("data kept"),
        b"from pod a"
    );

    csi::unstage(&root, &drivers, DRIVER, &handle)
        .await
        .expect("unstage");
    assert!(!staging.exists());
    assert!(!staging.parent().expect("parent").exists());
    assert_eq!(
        driver_volume(&state, &handle)["Staged"],
        serde_json::json!([])
    );
    csi::unstage(&root, &drivers, DRIVER, &handle)
        .await
        .expect("unstage again is idempotent");
    assert_eq!(
        mounts_below(&base),
        Vec::<PathBuf>::new(),
        "mounts left below the tempdir"
    );

    delete_volume(&d, &handle).await;
    assert!(!backing.exists());

    // The registrar goes away (it removes its socket on SIGTERM): the driver is dropped.
    registrar.terminate();
    match std::fs::symlink_metadata(registry.join(format!("{DRIVER}-reg.sock"))) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => panic!("registration socket still there: {other:?}"),
    }
    tokio::time::timeout(
        Duration::from_secs(15),
        changes.wait_for(|m| !m.contains_key(DRIVER)),
    )
    .await
    .expect("driver dropped within 15 s")
    .expect("watch open");
    assert!(drivers.get(DRIVER).is_none());
    assert!(drivers.list().is_empty());
    discovery.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: the CSI reference driver (Go build)"]
async fn a_failed_registration_is_reported_to_the_plugin() {
    let Some(bins) = peers() else {
        eprintln!("SKIPPED: go is not installed, cannot build the CSI reference driver");
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let base = std::fs::canonicalize(td.path()).expect("canonicalize");
    let registry = base.join("plugins_registry");
    std::fs::create_dir_all(&registry).expect("mkdir");
    let sock = base.join("csi.sock");
    let _driver = driver(
        &bins,
        &sock,
        &base.join("state"),
        &base.join("driver.log"),
        &[],
    );
    // The registrar announces an endpoint where nothing listens, as after a wrong
    // --kubelet-registration-path.
    let reg_log = base.join("registrar.log");
    let mut registrar = registrar(&bins, &sock, &base.join("wrong.sock"), &registry, &reg_log);
    let reg_sock = registry.join(format!("{DRIVER}-reg.sock"));
    for _ in 0..100 {
        if reg_sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = csi::registry::register(&reg_sock)
        .await
        .expect_err("the endpoint does not answer");
    assert!(matches!(err, csi::RegisterError::Dial(_)), "{err}");
    // node-driver-registrar exits 1 when told the registration failed, to be restarted.
    let child = registrar.0.as_mut().expect("child");
    let mut status = None;
    for _ in 0..50 {
        status = child.try_wait().expect("try_wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    let log = std::fs::read_to_string(&reg_log).expect("log");
    // The status carries our error (`status="error:\"cannot connect to .../wrong.sock: ...\""`),
    // with no plugin_registered:true.
    assert!(
        log.contains(r#"status="error:\"cannot connect to "#)
            && log.contains("wrong.sock")
            && !log.contains("plugin_registered:true"),
        "{log}"
    );
}

/// Detaches the loop devices the driver attached for block volumes below a folder (dropped
/// before the driver: declare it after it).
struct LoopGuard(PathBuf);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        for img in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Ok(out) = Command::new("losetup").arg("-j").arg(img.path()).output() {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Some(dev) = line.split(':').next() {
                        let _ = Command::new("losetup").arg("-d").arg(dev).status();
                    }
                }
            }
        }
    }
}

fn loops_of(img: &Path) -> String {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(img)
        .output()
        .expect("losetup");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts, loop devices and the CSI reference driver (Go build)"]
async fn block_and_inline_ephemeral_volumes_against_the_reference_driver() {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileTypeExt;
    let Some(bins) = peers() else {
        eprintln!("SKIPPED: go is not installed, cannot build the CSI reference driver");
        return;
    };
    let td = tempfile::tempdir().expect("tempdir");
    let base = std::fs::canonicalize(td.path()).expect("canonicalize");
    let _unmount = UnmountGuard(base.clone());
    let root = base.join("root");
    let registry = base.join("plugins_registry");
    let state = base.join("state");
    let plugin_dir = root.join("plugins").join(DRIVER);
    std::fs::create_dir_all(&plugin_dir).expect("mkdir");
    std::fs::create_dir_all(&registry).expect("mkdir");
    let sock = plugin_dir.join("csi.sock");
    let log = base.join("driver.log");
    let _driver = driver(&bins, &sock, &state, &log, &[]);
    let _loops = LoopGuard(state.clone());
    let _registrar = registrar(&bins, &sock, &sock, &registry, &base.join("registrar.log"));
    let drivers = Drivers::default();
    let discovery = tokio::spawn(csi::run_discovery(
        registry.clone(),
        drivers.clone(),
        DiscoveryOptions {
            rescan: Duration::from_secs(1),
            retry: Duration::from_secs(1),
        },
    ));
    let d = drivers
        .wait_for(DRIVER, Duration::from_secs(30))
        .await
        .expect("driver registered");
    // A block volume is a file of the driver's state on a loop device it attaches at once.
    let id = create_volume(&d, "pvc-block", true).await.volume_id;
    let img = state.join(&id);
    assert_ne!(loops_of(&img), "", "loop device attached by CreateVolume");

    // Block: staged and published at the kubelet's volumeDevices paths; the target is a device.
    let mut vol = CsiVolume::new(DRIVER, &id, "pv-block");
    vol.access_type = csi::AccessType::Block;
    let staging = csi::stage(&root, &drivers, &vol).await.expect("stage");
    assert_eq!(
        staging,
        Some(csi::block::staging_path(&root, "pv-block").expect("path"))
    );
    let target = csi::publish(&root, "uid-b", &drivers, &vol, None)
        .await
        .expect("publish");
    assert_eq!(
        target,
        csi::block::publish_path(&root, "pv-block", "uid-b").expect("path")
    );
    assert!(std::fs::metadata(&target)
        .expect("stat")
        .file_type()
        .is_block_device());
    let pod_dir = layout::pod_dir(&root, "uid-b").expect("pod");
    assert_eq!(csi::block::published(&pod_dir), ["pv-block"]);
    let req = last_request(&log, "NodePublishVolume");
    assert!(
        req["volume_capability"]["AccessType"]
            .get("Block")
            .is_some(),
        "{req}"
    );
    assert_eq!(req["target_path"], target.to_str().expect("utf-8"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .expect("open device");
        f.write_all(b"raw-bytes").expect("write");
        f.sync_all().expect("sync");
    }
    let mut head = [0u8; 9];
    std::fs::File::open(&img)
        .expect("image")
        .read_exact(&mut head)
        .expect("read");
    assert_eq!(&head, b"raw-bytes");
    assert!(matches!(
        csi::block::unstage(&root, &drivers, "pv-block").await,
        Err(UnstageError::InUse { count: 1, .. })
    ));
    csi::block::unpublish(&root, "uid-b", "pv-block", &drivers)
        .await
        .expect("unpublish");
    assert!(!target.exists());
    assert!(csi::block::published(&pod_dir).is_empty());
    csi::block::unstage(&root, &drivers, "pv-block")
        .await
        .expect("unstage");
    assert!(!csi::block::block_root(&root).join("pv-block").exists());
    assert!(!csi::block::staging_path(&root, "pv-block")
        .expect("path")
        .exists());
    // Idempotent.
    csi::block::unstage(&root, &drivers, "pv-block")
        .await
        .expect("again");
    delete_volume(&d, &id).await;
    assert_eq!(loops_of(&img), "", "loop device detached by DeleteVolume");
    assert!(!img.exists());

    // Inline ephemeral: never staged, the pod's keys; the driver makes the volume on publish
    // and deletes it on unpublish.
    let handle = csi::node::ephemeral_volume_handle("uid-e", "scratch");
    let mut eph = CsiVolume::new(DRIVER, &handle, "scratch");
    eph.lifecycle = csi::LifecycleMode::Ephemeral;
    assert_eq!(
        csi::stage(&root, &drivers, &eph).await.expect("stage"),
        None
    );
    let pod = PodInfo {
        name: "p".into(),
        namespace: "ns".into(),
        uid: "uid-e".into(),
        service_account: "default".into(),
        ephemeral: true,
        pod_info_on_mount: true,
        service_account_tokens: None,
    };
    let target = csi::publish(&root, "uid-e", &drivers, &eph, Some(&pod))
        .await
        .expect("publish inline");
    let req = last_request(&log, "NodePublishVolume");
    assert_eq!(req["volume_id"], handle.as_str());
    assert!(
        req.get("staging_target_path").is_none_or(|p| p == ""),
        "{req}"
    );
    assert_eq!(
        req["volume_context"]["csi.storage.k8s.io/ephemeral"],
        "true"
    );
    std::fs::write(target.join("f"), b"x").expect("write into the volume");
    assert!(state.join(&handle).join("f").exists());
    let published =
        csi::published_volumes(&layout::pod_dir(&root, "uid-e").expect("pod")).expect("list");
    assert_eq!(published[0].data.lifecycle_mode, "Ephemeral");
    csi::unpublish(&root, "uid-e", "scratch", &drivers)
        .await
        .expect("unpublish inline");
    assert!(!state.join(&handle).exists());
    assert!(mounts_below(&root).is_empty());
    discovery.abort();
}
