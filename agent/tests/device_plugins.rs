//! The device plugin manager against Kubernetes' own sample device plugin
//! (`test/images/sample-device-plugin` of the pinned module, built by tests/devices/build.sh):
//! registration, ListAndWatch into capacity/allocatable, Allocate with mounts and CDI devices
//! (resolved through the plugin's CDI spec), the kubelet's refusal when too few devices are
//! free, the checkpoint across an agent restart (the plugin registers again when the socket is
//! recreated), devices freed with their pod, and a plugin gone.
//!
//! Privileged tier (root: the plugin registers on the fixed
//! `/var/lib/kubelet/device-plugins/kubelet.sock`, so it runs in a mount namespace of its own
//! where that folder, and `/run/cdi`, are this test's temporary folders; nothing of the host
//! changes). Run with `cargo test -p bosun --test device_plugins -- --ignored`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bosun::devices::DeviceManager;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const RESOURCE: &str = "example.com/resource";

fn plugin_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("bash")
        .arg(root.join("tests/devices/build.sh"))
        .status()
        .expect("run tests/devices/build.sh");
    assert!(status.success(), "tests/devices/build.sh failed");
    // The pinned version, as the build script reads it.
    let out = Command::new("bash")
        .arg("-c")
        .arg(". \"$1\" && echo \"$K8S_VERSION\"")
        .arg("bash")
        .arg(root.join("tests/cluster/env.sh"))
        .output()
        .expect("read tests/cluster/env.sh");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(version.starts_with('v'), "K8S_VERSION: {version:?}");
    let home = std::env::var("HOME").expect("HOME");
    PathBuf::from(home)
        .join(".cache/bosun/devices")
        .join(version)
        .join("bin/sample-device-plugin")
}

/// The plugin in a mount namespace where /var/lib/kubelet/device-plugins is `dir` and
/// /run/cdi is `cdi`.
struct PluginProcess(Child);

impl PluginProcess {
    fn start(bin: &Path, dir: &Path, cdi: &Path) -> PluginProcess {
        let script = r#"set -e
mount --make-rprivate /
mount -t tmpfs bosun-test /var/lib
mkdir -p /var/lib/kubelet/device-plugins
mount --bind "$1" /var/lib/kubelet/device-plugins
mount -t tmpfs bosun-test /run
mkdir -p /run/cdi
mount --bind "$2" /run/cdi
exec "$3"
"#;
        let child = Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", script, "sh"])
            .arg(dir)
            .arg(cdi)
            .arg(bin)
            .env("CDI_ENABLED", "1")
            .spawn()
            .expect("spawn the sample device plugin");
        PluginProcess(child)
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) of our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pod(uid: &str, count: u32) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            uid: Some(uid.into()),
            name: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([
                        (RESOURCE.to_string(), Quantity(count.to_string())),
                        ("cpu".to_string(), Quantity("100m".into())),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

async fn wait_for(mgr: &DeviceManager, want: (u64, u64), what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = mgr.capacity().get(RESOURCE).copied();
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: capacity {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "privileged: root, mount namespaces"]
async fn sample_device_plugin_end_to_end() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("bosun=debug")
        .with_test_writer()
        .try_init();
    let bin = plugin_binary();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("device-plugins");
    let cdi = tmp.path().join("cdi");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir_all(&cdi).expect("mkdir");
    let mgr = DeviceManager::start(&dir).await.expect("start");
    let mut plugin = PluginProcess::start(&bin, &dir, &cdi);

    // Registration and ListAndWatch: two healthy devices on the Node.
    wait_for(&mgr, (2, 2), "registered").await;

    // A pod asking for one device gets it: the plugin's mount and its CDI device, which the
    // plugin's CDI spec resolves to the device's env and node.
    mgr.allocate_pod(&pod("p1", 1)).await.expect("allocate p1");
    let d1 = mgr.container_devices("p1", "c");
    assert_eq!(d1.cdi_devices, ["example.com/resource=CDI-Dev-1"], "{d1:?}");
    assert_eq!(
        d1.mounts,
        [("/tmp/Dev-1".to_string(), "/tmp/Dev-1".to_string(), false)]
    );
    let reg = bosun_runtime::cdi::Registry::load(std::slice::from_ref(&cdi));
    assert!(reg.errors().is_empty(), "{:?}", reg.errors());
    let edits = reg.resolve(&d1.cdi_devices).expect("resolve");
    assert_eq!(edits.env, ["CDI_DEVICE=CDI-Dev-1"]);
    assert_eq!(edits.device_nodes[0].path, "/tmp/CDI-Dev-1");
    // Admitting the same pod again keeps its device.
    mgr.allocate_pod(&pod("p1", 1)).await.expect("again");
    assert_eq!(mgr.container_devices("p1", "c"), d1);

    // Too few free devices: the kubelet's refusal.
    let err = mgr.allocate_pod(&pod("p2", 2)).await.expect_err("p2 fits");
    assert_eq!(
        err.admission_message(),
        "Allocate failed due to requested number of devices unavailable for example.com/resource. Requested: 2, Available: 1, which is unexpected"
    );
    assert!(mgr.container_devices("p2", "c").is_empty());

    // An agent restart: a new manager on the same folder recreates the socket, reads the
    // checkpoint, and the plugin registers again (it waits 10 s before it does).
    let mgr2 = DeviceManager::start(&dir).await.expect("restart");
    assert_eq!(mgr2.container_devices("p1", "c"), d1, "checkpoint");
    assert_eq!(mgr2.capacity().get(RESOURCE), Some(&(2, 0)));
    wait_for(&mgr2, (2, 2), "registered again").await;
    // Dev-1 is still p1's: the next pod gets Dev-2, and no more.
    mgr2.allocate_pod(&pod("p2", 1)).await.expect("allocate p2");
    assert_eq!(
        mgr2.container_devices("p2", "c").cdi_devices,
        ["example.com/resource=CDI-Dev-2"]
    );
    let err = mgr2.allocate_pod(&pod("p3", 1)).await.expect_err("p3 fits");
    assert!(err.to_string().contains("Available: 0"), "{err}");

    // p1 deleted: its device is free again.
    mgr2.retain_pods(&HashSet::from(["p2".to_string()]));
    mgr2.allocate_pod(&pod("p3", 1)).await.expect("allocate p3");
    assert_eq!(
        mgr2.container_devices("p3", "c").cdi_devices,
        ["example.com/resource=CDI-Dev-1"]
    );

    // The plugin goes away: nothing allocatable, the devices still counted until the grace
    // period ends.
    plugin.stop();
    wait_for(&mgr2, (2, 0), "plugin gone").await;
    for f in ["/tmp/Dev-1", "/tmp/Dev-2"] {
        let _ = std::fs::remove_file(f);
    }
}
