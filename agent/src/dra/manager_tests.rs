#![allow(clippy::unwrap_used)]

use super::*;
use crate::dra::testing::{claim, pod, FakeClaims, FakeDrivers};

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    claims: Arc<FakeClaims>,
    drivers: FakeDrivers,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let drivers = FakeDrivers::default();
    drivers.0.lock().unwrap().registered.push("drv".into());
    Setup {
        root: tmp.path().to_path_buf(),
        _tmp: tmp,
        claims: Arc::default(),
        drivers,
    }
}

impl Setup {
    fn manager(&self) -> DraManager {
        DraManager::new(
            &self.root,
            self.claims.clone(),
            Arc::new(self.drivers.clone()),
        )
    }
}

#[tokio::test]
async fn prepares_once_gives_cdi_devices_and_unprepares_after_the_last_pod() {
    let s = setup();
    s.claims
        .put(claim("shared", "cs", "drv", &["r"], &["u1", "u2"], None));
    s.drivers.0.lock().unwrap().devices.insert(
        "shared".into(),
        vec![(vec!["r".into()], vec!["drv/c=0".into()])],
    );
    let m = s.manager();
    let p1 = pod("u1", &[("s", Some("shared"))], &[], &[("c", &[("s", "")])]);
    let p2 = pod("u2", &[("s", Some("shared"))], &[], &[("c", &[("s", "r")])]);
    m.prepare(&p1).await.unwrap();
    m.prepare(&p1).await.unwrap();
    m.prepare(&p2).await.unwrap();
    // One NodePrepareResources for the shared claim.
    assert_eq!(
        s.drivers.0.lock().unwrap().prepared,
        [("drv".to_string(), vec!["shared".to_string()])]
    );
    let c1 = &p1.spec.as_ref().unwrap().containers[0];
    assert_eq!(m.container_cdi_devices(&p1, c1).await.unwrap(), ["drv/c=0"]);
    let mut pods = m.pods().await;
    pods.sort();
    assert_eq!(pods, ["u1", "u2"]);
    // An agent restart: the checkpoint keeps the claim prepared for both pods.
    let m = s.manager();
    m.prepare(&p2).await.unwrap();
    assert_eq!(s.drivers.0.lock().unwrap().prepared.len(), 1);
    let c2 = &p2.spec.as_ref().unwrap().containers[0];
    assert_eq!(m.container_cdi_devices(&p2, c2).await.unwrap(), ["drv/c=0"]);
    // The first pod ends: the claim stays; the second ends: NodeUnprepareResources.
    m.unprepare("u1").await.unwrap();
    assert!(s.drivers.0.lock().unwrap().unprepared.is_empty());
    m.unprepare("u2").await.unwrap();
    assert_eq!(
        s.drivers.0.lock().unwrap().unprepared,
        [("drv".to_string(), vec!["shared".to_string()])]
    );
    assert!(m.pods().await.is_empty());
    // Unprepared again (a worker's second release): nothing to call.
    m.unprepare("u2").await.unwrap();
    assert_eq!(s.drivers.0.lock().unwrap().unprepared.len(), 1);
    assert!(s.manager().pods().await.is_empty());
}

#[tokio::test]
async fn preparation_errors_are_the_kubelets_and_change_nothing_before_the_calls() {
    let s = setup();
    let m = s.manager();
    let p = pod(
        "u1",
        &[("t", None)],
        &[("t", "gen")],
        &[("c", &[("t", "")])],
    );
    // The claim is not there.
    let e = m.prepare(&p).await.unwrap_err();
    assert_eq!(
        e.0,
        "prepare dynamic resources: fetch ResourceClaim gen: resourceclaims.resource.k8s.io \"gen\" not found"
    );
    // Reserved for another pod.
    s.claims
        .put(claim("gen", "cg", "drv", &["r"], &["u9"], Some("u1")));
    let e = m.prepare(&p).await.unwrap_err();
    assert_eq!(
        e.0,
        "prepare dynamic resources: pod p (u1) is not allowed to use ResourceClaim gen (cg)"
    );
    // Its driver is not registered.
    s.claims.put(claim(
        "gen",
        "cg",
        "other.example.com",
        &["r"],
        &["u1"],
        Some("u1"),
    ));
    let e = m.prepare(&p).await.unwrap_err();
    assert_eq!(
        e.0,
        "prepare dynamic resources: DRA driver other.example.com is not registered"
    );
    assert!(m.pods().await.is_empty(), "nothing cached before the calls");
    assert!(s.drivers.0.lock().unwrap().prepared.is_empty());
    // The driver fails: the pod is cached (so its claims are unprepared when it goes).
    s.claims
        .put(claim("gen", "cg", "drv", &["r"], &["u1"], Some("u1")));
    s.drivers.0.lock().unwrap().fail = Some("rpc error: code = Unavailable desc = down".into());
    let e = m.prepare(&p).await.unwrap_err();
    assert_eq!(
        e.0,
        "prepare dynamic resources: NodePrepareResources: rpc error: code = Unavailable desc = down"
    );
    assert_eq!(m.pods().await, ["u1"]);
    // Its unprepare fails too: retried later.
    let e = m.unprepare("u1").await.unwrap_err();
    assert!(
        e.0.starts_with("unprepare dynamic resources: NodeUnprepareResources"),
        "{e}"
    );
    assert!(lock(&m.inner.retry).contains_key("u1"));
    s.drivers.0.lock().unwrap().fail = None;
    m.unprepare("u1").await.unwrap();
    assert!(lock(&m.inner.retry).is_empty());
    assert!(m.pods().await.is_empty());
}

#[test]
fn services_are_chosen_as_the_kubelet_does() {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        choose_service(&v(&["v1.DRAPlugin", "v1beta1.DRAPlugin"])),
        Ok("v1.DRAPlugin")
    );
    assert_eq!(
        choose_service(&v(&["v1beta1.DRAPlugin", "v1.DRAPlugin"])),
        Ok("v1.DRAPlugin")
    );
    assert_eq!(
        choose_service(&[]),
        Err("empty list of supported gRPC services (aka supported versions)".to_string())
    );
    assert_eq!(
        choose_service(&v(&["v1beta1.DRAPlugin"])),
        Err("none of services supported by the plugin ([\"v1beta1.DRAPlugin\"]) are supported by the kubelet ([\"v1.DRAPlugin\"])".to_string())
    );
}
