//! HostRuntime tests against a fake keeper: a shell script that follows the keeper protocol
//! (keeper.pid, started.json with a real process, `started <pid>` on fd 3, exit.json), so start,
//! stop, list, adoption after a restart and a killed keeper run without root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::broadcast;

use super::*;
use crate::{
    ContainerSpec, ContainerState, ExitInfo, QosClass, Resources, RuntimeEvent, Sandbox, Security,
    User,
};

/// The container "process" the fake keeper runs: `sleep` honouring SIGTERM.
const SLEEPER: &str = "sleep 1000";
/// One that ignores SIGTERM (the disposition survives exec), for the SIGKILL escalation.
const STUBBORN: &str = "sh -c \"trap '' TERM; exec sleep 1000\"";

/// A keeper in shell. `body` runs the container process in the background as `$pid`.
fn fake_keeper(container: &str) -> String {
    format!(
        r#"#!/bin/sh
dir="$2"
echo $$ > "$dir/keeper.pid"
{container} 3>&- </dev/null &
pid=$!
printf '{{"pid":%d,"started_at":{{"secs_since_epoch":%s,"nanos_since_epoch":%s}}}}' \
  "$pid" "$(date +%s)" "$(date +%N | sed 's/^0*//;s/^$/0/')" > "$dir/started.json.tmp"
mv "$dir/started.json.tmp" "$dir/started.json"
echo "started $pid" >&3
exec 3>&-
wait "$pid"
code=$?
printf '{{"code":%d,"signal":null,"oom_killed":false,"started_at":null,"finished_at":{{"secs_since_epoch":%s,"nanos_since_epoch":0}},"start_error":null}}' \
  "$code" "$(date +%s)" > "$dir/exit.json.tmp"
mv "$dir/exit.json.tmp" "$dir/exit.json"
"#
    )
}

/// [`fake_keeper`] that honours `hold`: says `created 0` and waits for the go-ahead on fd 4;
/// without it, records a start error as the keeper does.
fn holding_keeper(container: &str) -> String {
    fake_keeper(container).replacen(
        "echo $$ > \"$dir/keeper.pid\"\n",
        r#"echo $$ > "$dir/keeper.pid"
if grep -q '"hold":true' "$dir/request.json"; then
  echo "created 0" >&3
  go=$(head -c1 <&4)
  exec 4<&-
  if [ "$go" != g ]; then
    printf '{"code":128,"signal":null,"oom_killed":false,"started_at":null,"finished_at":{"secs_since_epoch":%s,"nanos_since_epoch":0},"start_error":"no go-ahead"}' \
      "$(date +%s)" > "$dir/exit.json.tmp"
    mv "$dir/exit.json.tmp" "$dir/exit.json"
    echo "error no go-ahead" >&3
    exit 0
  fi
fi
"#,
        1,
    )
}

struct Env {
    tmp: tempfile::TempDir,
    paths: RuntimePaths,
}

impl Env {
    fn new(keeper_script: &str) -> Env {
        // Orphans (a killed keeper's container) are re-parented to us and reaped by the reaper,
        // as with the agent.
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        crate::reaper::install().expect("reaper");
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = tmp.path().join("keeper.sh");
        std::fs::write(&script, keeper_script).expect("write keeper");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let paths = RuntimePaths {
            run_dir: tmp.path().join("run"),
            data_dir: tmp.path().join("data"),
            pod_logs_dir: tmp.path().join("pods"),
            container_logs_dir: tmp.path().join("containers"),
            cgroup_root: "/bosun-test".into(),
            helper_binary: script.clone(),
            keeper_binary: script,
        };
        Env { tmp, paths }
    }

    async fn runtime(&self) -> HostRuntime {
        HostRuntime::new(self.paths.clone(), RuntimeOptions::default())
            .await
            .expect("runtime")
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.paths.run_dir.join("containers").join(id)
    }
}

fn sandbox(dir: &Path) -> Sandbox {
    Sandbox {
        pod_uid: "uid1".into(),
        dir: dir.join("sandbox"),
        netns: None,
        ipcns: None,
        utsns: None,
        pidns: None,
        shm: "/dev/shm".into(),
        cgroup_parent: "/kubepods/poduid1".into(),
        host_pid: false,
        userns: None,
        id_range: None,
    }
}

fn spec(id: &str) -> ContainerSpec {
    let mut labels = BTreeMap::new();
    labels.insert(
        "io.kubernetes.container.name".to_string(),
        "app".to_string(),
    );
    ContainerSpec {
        id: id.into(),
        name: "app".into(),
        pod_uid: "uid1".into(),
        pod_namespace: "ns".into(),
        pod_name: "pod".into(),
        attempt: 2,
        image: "busybox".into(),
        image_id: "sha256:abc".into(),
        args: vec!["sleep".into(), "1000".into()],
        env: vec![],
        cwd: "/".into(),
        user: User::Id { uid: 0, gid: None },
        tty: false,
        stdin: false,
        stdin_once: false,
        mounts: vec![],
        resources: Resources::default(),
        oom_score_adj: 0,
        security: Security::default(),
        stop_signal: libc::SIGTERM,
        termination_message_path: None,
        labels,
        devices: Vec::new(),
        cdi_devices: Vec::new(),
    }
}

async fn next_exit(rx: &mut broadcast::Receiver<RuntimeEvent>) -> (String, ExitInfo) {
    let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("event in time")
        .expect("event");
    let RuntimeEvent::Exited { id, info } = ev;
    (id, info)
}

fn running_pid(rt: &HostRuntime, id: &str) -> i32 {
    match rt.status(id).expect("status").state {
        ContainerState::Running { pid, .. } => pid,
        other => panic!("not running: {other:?}"),
    }
}

/// Whether `pid` is gone or a zombie.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(pid, sig) };
}

#[tokio::test]
async fn start_list_stop_remove() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    let mut events = rt.subscribe();
    let sb = sandbox(env.tmp.path());
    let status = rt
        .start_container(&sb, &spec("c1"), &[])
        .await
        .expect("start");
    let ContainerState::Running { pid, .. } = status.state else {
        panic!("not running: {status:?}");
    };
    assert!(!dead(pid));
    assert_eq!(status.image_id, "sha256:abc");
    assert_eq!(status.labels["io.kubernetes.container.name"], "app");
    let log = env.paths.pod_logs_dir.join("ns_pod_uid1/app/2.log");
    assert_eq!(status.log_path, log);
    let mode = std::fs::metadata(log.parent().expect("parent"))
        .expect("log dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let link = env.paths.container_logs_dir.join("pod_ns_app-c1.log");
    assert_eq!(std::fs::read_link(&link).expect("symlink"), log);
    let req = disk::read_request(&env.dir("c1")).expect("request");
    assert_eq!(req.cgroup_path, "/kubepods/poduid1/c1");
    assert_eq!(req.log_max_files, 5);

    // Same id again is refused.
    assert!(matches!(
        rt.start_container(&sb, &spec("c1"), &[]).await,
        Err(StartError::Exists { .. })
    ));
    assert!(matches!(
        rt.start_container(&sb, &spec("../x"), &[]).await,
        Err(StartError::InvalidId { .. })
    ));
    let list = rt.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "c1");
    assert!(matches!(
        rt.remove_container("c1").await,
        Err(RemoveError::Running { .. })
    ));

    let info = rt
        .stop_container("c1", libc::SIGTERM, Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(info.code, 128 + libc::SIGTERM);
    assert!(dead(pid));
    let (id, ev) = next_exit(&mut events).await;
    assert_eq!(id, "c1");
    assert_eq!(ev, info);
    assert_eq!(
        rt.status("c1").expect("status").state,
        ContainerState::Exited(info.clone())
    );
    // Idempotent.
    let again = rt
        .stop_container("c1", libc::SIGTERM, Duration::from_secs(1))
        .await
        .expect("stop again");
    assert_eq!(again, info);

    rt.remove_container("c1").await.expect("remove");
    assert!(!env.dir("c1").exists());
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert!(log.parent().expect("parent").exists(), "logs stay");
    assert!(rt.status("c1").is_none());
    assert!(matches!(
        rt.stop_container("c1", libc::SIGTERM, Duration::from_secs(1))
            .await,
        Err(StopError::NotFound { .. })
    ));
    assert!(matches!(
        rt.remove_container("c1").await,
        Err(RemoveError::NotFound { .. })
    ));
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_grace() {
    let env = Env::new(&fake_keeper(STUBBORN));
    let rt = env.runtime().await;
    rt.start_container(&sandbox(env.tmp.path()), &spec("c2"), &[])
        .await
        .expect("start");
    let pid = running_pid(&rt, "c2");
    let t = std::time::Instant::now();
    let info = rt
        .stop_container("c2", libc::SIGTERM, Duration::from_millis(300))
        .await
        .expect("stop");
    assert_eq!(info.code, 128 + libc::SIGKILL);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(dead(pid));
}

#[tokio::test]
async fn adopts_running_keeper_after_restart() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    rt.start_container(&sandbox(env.tmp.path()), &spec("c3"), &[])
        .await
        .expect("start");
    let pid = running_pid(&rt, "c3");
    drop(rt);

    let rt = env.runtime().await;
    assert_eq!(running_pid(&rt, "c3"), pid);
    let mut events = rt.subscribe();
    // The container exits on its own: the new runtime still publishes it.
    kill(pid, libc::SIGTERM);
    let (id, info) = next_exit(&mut events).await;
    assert_eq!(id, "c3");
    assert_eq!(info.code, 128 + libc::SIGTERM);
    assert!(matches!(
        rt.status("c3").expect("status").state,
        ContainerState::Exited(_)
    ));
    rt.remove_container("c3").await.expect("remove");
}

#[tokio::test]
async fn killed_keeper_makes_the_state_unknown() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    let mut events = rt.subscribe();
    rt.start_container(&sandbox(env.tmp.path()), &spec("c4"), &[])
        .await
        .expect("start");
    let pid = running_pid(&rt, "c4");
    let keeper: i32 = std::fs::read_to_string(env.dir("c4").join("keeper.pid"))
        .expect("keeper.pid")
        .trim()
        .parse()
        .expect("pid");
    kill(keeper, libc::SIGKILL);
    let (id, info) = next_exit(&mut events).await;
    assert_eq!(id, "c4");
    assert_eq!(info.code, 137);
    assert_eq!(info.start_error.as_deref(), Some("keeper died"));
    assert!(wait_dead(pid).await, "container killed");
    assert_eq!(
        rt.status("c4").expect("status").state,
        ContainerState::Unknown {
            reason: "keeper died".into()
        }
    );
    let stopped = rt
        .stop_container("c4", libc::SIGTERM, Duration::from_secs(1))
        .await
        .expect("stop");
    assert_eq!(stopped, info);
    rt.remove_container("c4").await.expect("remove");
}

#[tokio::test]
async fn keeper_dead_while_agent_was_away() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    rt.start_container(&sandbox(env.tmp.path()), &spec("c5"), &[])
        .await
        .expect("start");
    let pid = running_pid(&rt, "c5");
    drop(rt);
    let keeper: i32 = std::fs::read_to_string(env.dir("c5").join("keeper.pid"))
        .expect("keeper.pid")
        .trim()
        .parse()
        .expect("pid");
    kill(keeper, libc::SIGKILL);
    assert!(wait_dead(keeper).await);

    let rt = env.runtime().await;
    assert_eq!(
        rt.status("c5").expect("status").state,
        ContainerState::Unknown {
            reason: "keeper died".into()
        }
    );
    assert!(wait_dead(pid).await, "leftover container killed");
    assert!(env.dir("c5").join("exit.json").exists());
}

#[tokio::test]
async fn security_profiles_resolved_before_the_keeper_runs() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    let sb = sandbox(env.tmp.path());
    // A missing Localhost profile: a typed error naming the file, and nothing created.
    let file = env.tmp.path().join("seccomp/missing.json");
    let local = crate::ContainerSecurity {
        seccomp: crate::seccomp::SeccompProfile::Localhost(file.clone()),
        ..Default::default()
    };
    let err = rt
        .start_container_with(&sb, &spec("c1"), &[], &local)
        .await
        .expect_err("no profile");
    assert!(
        matches!(
            &err,
            StartError::Seccomp {
                source: crate::seccomp::SeccompError::Missing { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    assert!(!env.dir("c1").exists(), "no container folder");
    assert!(rt.list().is_empty());
    // RuntimeDefault: the keeper gets the resolved filter and its compiled program.
    let default = crate::ContainerSecurity {
        seccomp: crate::seccomp::SeccompProfile::RuntimeDefault,
        ..Default::default()
    };
    rt.start_container_with(&sb, &spec("c2"), &[], &default)
        .await
        .expect("start");
    let req = disk::read_request(&env.dir("c2")).expect("request");
    let compiled = req.seccomp.expect("filter in the request");
    assert!(compiled
        .program
        .starts_with(env.paths.run_dir.join("seccomp")));
    assert!(std::fs::metadata(&compiled.program).expect("program").len() > 0);
    assert_eq!(req.security, default);
    assert_eq!(req.apparmor_label, None, "AppArmor unconfined");
    // The next container with the same profile and capabilities: the same program, no file
    // read, no compile.
    rt.start_container_with(&sb, &spec("c3"), &[], &default)
        .await
        .expect("start");
    let again = disk::read_request(&env.dir("c3")).expect("request");
    assert_eq!(again.seccomp.map(|c| c.program), Some(compiled.program));
    for id in ["c2", "c3"] {
        rt.stop_container(id, libc::SIGKILL, Duration::from_secs(5))
            .await
            .expect("stop");
        rt.remove_container(id).await.expect("remove");
    }
}

#[tokio::test]
async fn keeper_error_is_a_start_error() {
    let env = Env::new(
        "#!/bin/sh\necho $$ > \"$2/keeper.pid\"\necho 'error no such image layer' >&3\nexit 1\n",
    );
    let rt = env.runtime().await;
    let r = rt
        .start_container(&sandbox(env.tmp.path()), &spec("c6"), &[])
        .await;
    match r {
        Err(StartError::Keeper { message, .. }) => assert_eq!(message, "no such image layer"),
        other => panic!("unexpected {other:?}"),
    }
    match rt.status("c6").expect("status").state {
        ContainerState::Exited(info) => {
            assert_eq!(info.start_error.as_deref(), Some("no such image layer"));
            assert_ne!(info.code, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    rt.remove_container("c6").await.expect("remove");
}

/// A start that fails before any keeper runs (here: the pod's log folder name is longer than a
/// file name may be) returns that error, typed, and leaves nothing behind: no container, no
/// record of a keeper that died, no exit event.
#[tokio::test]
async fn a_log_folder_too_long_is_a_typed_error_and_no_container() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    let mut events = rt.subscribe();
    let mut s = spec("c-long");
    s.pod_name = "p".repeat(253);
    s.pod_namespace = "n".repeat(63);
    let r = rt.start_container(&sandbox(env.tmp.path()), &s, &[]).await;
    match r {
        Err(e @ StartError::LogDir { .. }) => {
            // The message carries the reason (the agent shows it as it is).
            assert!(e.to_string().contains("File name too long"), "{e}");
            let StartError::LogDir { path, source } = e else {
                unreachable!()
            };
            assert_eq!(source.raw_os_error(), Some(libc::ENAMETOOLONG), "{source}");
            assert!(
                path.starts_with(&env.paths.pod_logs_dir),
                "{}",
                path.display()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(rt.status("c-long").is_none(), "a container was recorded");
    assert!(!env.dir("c-long").exists(), "its folder is left");
    let ev = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
    assert!(ev.is_err(), "an event was sent: {ev:?}");
    // The id is free again: a start with a name that fits works.
    rt.start_container(&sandbox(env.tmp.path()), &spec("c-long"), &[])
        .await
        .expect("start");
    rt.stop_container("c-long", libc::SIGKILL, Duration::from_secs(5))
        .await
        .expect("stop");
    rt.remove_container("c-long").await.expect("remove");
}

#[tokio::test]
async fn keeper_without_status_line() {
    let env = Env::new("#!/bin/sh\necho $$ > \"$2/keeper.pid\"\nexit 3\n");
    let rt = env.runtime().await;
    let r = rt
        .start_container(&sandbox(env.tmp.path()), &spec("c7"), &[])
        .await;
    assert!(matches!(r, Err(StartError::NoStatus { .. })), "{r:?}");
    // The monitor finalises it.
    for _ in 0..100 {
        if env.dir("c7").join("exit.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        rt.status("c7").expect("status").state,
        ContainerState::Unknown { .. }
    ));
}

#[tokio::test]
async fn exec_needs_a_running_container() {
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    let argv = vec!["true".to_string()];
    assert!(matches!(
        rt.exec("nope", &argv, Duration::from_secs(1)).await,
        Err(ExecError::NotFound { .. })
    ));
    rt.start_container(&sandbox(env.tmp.path()), &spec("c8"), &[])
        .await
        .expect("start");
    rt.stop_container("c8", libc::SIGTERM, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(matches!(
        rt.exec("c8", &argv, Duration::from_secs(1)).await,
        Err(ExecError::NotRunning { .. })
    ));
}

#[test]
fn ids() {
    assert!(valid_id("uid-1_app.2+x"));
    for bad in ["", ".", "..", "a/b", ".hidden", "a b"] {
        assert!(!valid_id(bad), "{bad}");
    }
    let _ = QosClass::Guaranteed;
}

#[tokio::test]
async fn interrupted_start_folder_is_dropped() {
    let env = Env::new(&fake_keeper(SLEEPER));
    std::fs::create_dir_all(env.dir("half")).expect("mkdir");
    let rt = env.runtime().await;
    assert!(!env.dir("half").exists());
    assert!(rt.list().is_empty());
}

#[tokio::test]
#[ignore = "needs root: creates a pod cgroup with a CPU quota"]
async fn pod_cpu_quota_is_lifted_while_a_container_starts() {
    use crate::cgroups::{CgroupLayout, CpuQuota};
    let layout =
        CgroupLayout::detect(&format!("/bosun-test-lift-{}", std::process::id())).expect("detect");
    struct Cleanup(CgroupLayout);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Err(e) = self.0.remove_all() {
                eprintln!("cleanup: {e}");
            }
        }
    }
    let _cleanup = Cleanup(layout.clone());
    let res = Resources {
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        ..Resources::default()
    };
    let pod = layout
        .ensure_pod(QosClass::Burstable, "uid1", &res)
        .expect("pod cgroup");
    let limit = Some(CpuQuota {
        quota: 20_000,
        period: 100_000,
    });
    assert_eq!(layout.cpu_quota(&pod).expect("read"), limit);
    // The keeper records the pod's quota as it sees it while it sets the container up.
    let seen = tempfile::NamedTempFile::new().expect("tmp");
    let file = if layout.is_v2() {
        format!("/sys/fs/cgroup{pod}/cpu.max")
    } else {
        format!("/sys/fs/cgroup/cpu{pod}/cpu.cfs_quota_us")
    };
    let script = fake_keeper(SLEEPER).replacen(
        "dir=\"$2\"\n",
        &format!("dir=\"$2\"\ncat {file} > {}\n", seen.path().display()),
        1,
    );
    let env = Env::new(&script);
    let rt = env.runtime().await;
    let mut sb = sandbox(env.tmp.path());
    sb.cgroup_parent = pod.clone();
    rt.start_container(&sb, &spec("c1"), &[])
        .await
        .expect("start");
    let during = std::fs::read_to_string(seen.path()).expect("recorded");
    let lifted = if layout.is_v2() { "max" } else { "-1" };
    assert!(
        during.starts_with(lifted),
        "quota during set-up: {during:?}"
    );
    assert_eq!(layout.cpu_quota(&pod).expect("read"), limit, "put back");
    rt.stop_container("c1", libc::SIGKILL, Duration::from_secs(5))
        .await
        .expect("stop");
}

/// A runtime with [`holding_keeper`] and container `c1` created (held) in its sandbox.
async fn holding() -> (Env, HostRuntime, Sandbox, Created) {
    let env = Env::new(&holding_keeper(SLEEPER));
    let rt = env.runtime().await;
    let sb = sandbox(env.tmp.path());
    let created = rt
        .create_container(&sb, &spec("c1"), &[])
        .await
        .expect("create");
    (env, rt, sb, created)
}

#[tokio::test]
async fn created_container_runs_only_after_start() {
    let (env, rt, _sb, created) = holding().await;
    assert_eq!(created.id(), "c1");
    assert!(disk::read_request(&env.dir("c1")).expect("request").hold);
    // Held: nothing runs yet, and the runtime still counts it as starting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!env.dir("c1").join("started.json").exists());
    assert!(rt.inner.is_starting("c1"));
    let status = created.start().await.expect("start");
    let ContainerState::Running { pid, .. } = status.state else {
        panic!("not running: {status:?}");
    };
    assert!(!dead(pid));
    assert!(!rt.inner.is_starting("c1"));
    rt.stop_container("c1", libc::SIGKILL, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(dead(pid));
}

#[tokio::test]
async fn aborted_container_never_runs_and_can_be_removed() {
    let (env, rt, sb, created) = holding().await;
    created.abort().await;
    assert!(!env.dir("c1").join("started.json").exists());
    let state = rt.status("c1").expect("status").state;
    let ContainerState::Exited(info) = state else {
        panic!("not exited: {state:?}");
    };
    assert_eq!(info.start_error.as_deref(), Some("no go-ahead"));
    rt.remove_container("c1").await.expect("remove");
    assert!(!env.dir("c1").exists());

    // Dropped without start or abort: the keeper is told all the same.
    let mut events = rt.subscribe();
    let created = rt
        .create_container(&sb, &spec("c2"), &[])
        .await
        .expect("create");
    drop(created);
    // (c1's monitor may report its exit first.)
    let (id, info) = loop {
        let (id, info) = next_exit(&mut events).await;
        if id != "c1" {
            break (id, info);
        }
    };
    assert_eq!(id, "c2");
    assert_eq!(info.start_error.as_deref(), Some("no go-ahead"));
    assert!(!env.dir("c2").join("started.json").exists());
}

#[tokio::test]
async fn a_keeper_that_does_not_hold_is_an_error_for_create() {
    // An older keeper ignores `hold` and starts the container at once.
    let env = Env::new(&fake_keeper(SLEEPER));
    let rt = env.runtime().await;
    let err = rt
        .create_container(&sandbox(env.tmp.path()), &spec("c1"), &[])
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StartError::NoStatus { .. }), "{err}");
    assert!(!rt.inner.is_starting("c1"));
    let _ = rt
        .stop_container("c1", libc::SIGKILL, Duration::from_secs(5))
        .await;
}
