//! [`crate::ContainerSpec`] + [`crate::Sandbox`] -> OCI runtime spec (`config.json`).
//! Pure functions: no I/O except reading the agent's own rlimits (and the kernel's last
//! capability, for privileged containers) once, in [`HostFacts::read`].
//!
//! The layout follows what containerd's CRI plugin gives a Kubernetes container: the usual
//! pseudo filesystems, the pod's `/dev/shm`, the pod's namespaces by path, a devices cgroup that
//! denies everything but the default devices, containerd's masked and read-only paths.

use std::sync::OnceLock;

use libcontainer::oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::keeper::KeeperRequest;
use crate::Propagation;

/// RLIMIT_NOFILE wanted for containers (containerd/systemd's usual 1048576), clamped to what
/// the agent itself may use: without CAP_SYS_RESOURCE no limit can be raised past our hard one.
pub const WANTED_NOFILE: u64 = 1_048_576;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {id}: invalid spec: {source}")]
    Invalid {
        id: String,
        source: serde_json::Error,
    },
    #[error("container {id}: {reason}")]
    Bad { id: String, reason: String },
    /// The message a kubelet with containerd and runc shows for a capability the host's
    /// bounding set lacks (the capset of runc's init fails with EPERM).
    #[error("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: unable to apply caps: operation not permitted: unknown (container {id}: {caps:?} not in this node's capability bounding set)")]
    CapsNotPermitted { id: String, caps: Vec<String> },
}

/// Facts about the host the spec depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// Our own hard RLIMIT_NOFILE.
    pub nofile_hard: u64,
    /// `/proc/sys/kernel/cap_last_cap`: the highest capability this kernel knows.
    pub cap_last_cap: u32,
    /// Our own effective capabilities (`CapEff` of /proc/self/status, bit n = capability n):
    /// what a privileged container gets (containerd's `WithAllCurrentCapabilities`) and all a
    /// container can be given (a host whose bounding set lacks one cannot grant it).
    pub own_caps: u64,
    /// The lowest oom_score_adj we may give: without CAP_SYS_RESOURCE a process can only raise
    /// its score above its own (the Guaranteed pods' -997 would fail the create), so we clamp to
    /// our own value, as we clamp rlimits.
    pub min_oom_score_adj: i32,
    /// The cgroup v1 hierarchies mounted in `/sys/fs/cgroup` (`cpu`, `memory`, `systemd` ...),
    /// by folder name; empty on pure cgroup v2.
    ///
    /// On pure v2 a container gets a cgroup namespace of its own (as with containerd). On v1
    /// (legacy or hybrid) it shares the host's, as containerd and Docker do there: libcontainer
    /// then bind-mounts the container's own cgroup folders at `/sys/fs/cgroup/<x>` instead of
    /// mounting every hierarchy anew, which makes one superblock per hierarchy and container
    /// (the kernel looks through all of them on every such mount: each start got slower the more
    /// containers ran). libcontainer mounts those read-write whatever the spec says, so an
    /// unprivileged container gets them as read-only paths (runc mounts them read-only).
    pub cgroup_v1_hierarchies: &'static [String],
}

impl HostFacts {
    /// Reads the facts once per process.
    pub fn read() -> HostFacts {
        static FACTS: OnceLock<HostFacts> = OnceLock::new();
        *FACTS.get_or_init(|| HostFacts {
            nofile_hard: crate::sys::nofile_limit().map(|l| l.1).unwrap_or(1024),
            cap_last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(40),
            own_caps: own_effective_caps().unwrap_or(u64::MAX),
            min_oom_score_adj: if has_cap_sys_resource() {
                -1000
            } else {
                crate::sys::own_oom_score_adj().unwrap_or(0)
            },
            cgroup_v1_hierarchies: cgroup_v1_hierarchies(),
        })
    }
}

/// The folders of `/sys/fs/cgroup` that are cgroup v1 mounts (see
/// [`HostFacts::cgroup_v1_hierarchies`]), read once per process.
fn cgroup_v1_hierarchies() -> &'static [String] {
    static DIRS: OnceLock<Vec<String>> = OnceLock::new();
    DIRS.get_or_init(|| {
        if !cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            let mut dirs: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| crate::sys::fs_magic(&e.path()).ok() == Some(libc::CGROUP_SUPER_MAGIC))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            dirs.sort();
            dirs
        } else {
            Vec::new()
        }
    })
}

/// This process's effective capabilities, as a bitmap.
fn own_effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24) in its effective set.
fn has_cap_sys_resource() -> bool {
    own_effective_caps().is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The capabilities of a container: a privileged one gets every capability we have (up to the
/// kernel's last), as containerd gives it the runtime's own current ones; otherwise the
/// requested list, each of which we must have ourselves. `Err` names the unknown capability, or
/// lists those this host cannot grant.
pub fn container_caps(
    privileged: bool,
    requested: &[String],
    host: &HostFacts,
) -> Result<Vec<String>, CapsError> {
    let have = |i: usize| i <= host.cap_last_cap as usize && host.own_caps & (1u64 << i) != 0;
    if privileged {
        return Ok(ALL_CAPS
            .iter()
            .enumerate()
            .filter(|(i, _)| have(*i))
            .map(|(_, c)| c.to_string())
            .collect());
    }
    let mut v: Vec<String> = Vec::new();
    let mut missing = Vec::new();
    for c in requested {
        let n = normalize_cap(c);
        let Some(i) = ALL_CAPS.iter().position(|k| *k == n) else {
            return Err(CapsError::Unknown(c.clone()));
        };
        if !have(i) && !missing.contains(&n) {
            missing.push(n.clone());
        }
        if !v.contains(&n) {
            v.push(n);
        }
    }
    if missing.is_empty() {
        Ok(v)
    } else {
        Err(CapsError::NotPermitted(missing))
    }
}

/// containerd's default environment (`defaultUnixEnv` of its default spec).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process environment: `env` in order, after containerd's default PATH when neither the
/// image nor the pod sets one (containerd's default spec starts with it, and image and pod
/// variables replace or append to it).
pub fn process_env(env: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::with_capacity(env.len() + 1);
    if !env.iter().any(|(k, _)| k == "PATH") {
        out.push(DEFAULT_PATH.to_string());
    }
    out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    out
}

/// Why a container's capabilities cannot be set.
#[derive(Debug, PartialEq, Eq)]
pub enum CapsError {
    Unknown(String),
    /// Capabilities outside this host's (our) set: runc's capset fails with EPERM.
    NotPermitted(Vec<String>),
}

/// Every capability, by number (index = capability number).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's default masked paths.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Builds the OCI spec for `req`, running as `uid:gid` with `additional_gids`.
pub fn build(
    req: &KeeperRequest,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
) -> Result<Spec, SpecError> {
    build_with(req, uid, gid, additional_gids, HostFacts::read())
}

/// [`build`] with the host facts given (pure).
pub fn build_with(
    req: &KeeperRequest,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    host: HostFacts,
) -> Result<Spec, SpecError> {
    let spec = &req.spec;
    let sec = &spec.security;
    let sb = &req.sandbox;
    let bad = |reason: String| SpecError::Bad {
        id: spec.id.clone(),
        reason,
    };
    if spec.args.is_empty() {
        return Err(bad("no command to run".into()));
    }
    let caps = match container_caps(sec.privileged, &sec.capabilities, &host) {
        Ok(caps) => caps,
        Err(CapsError::Unknown(c)) => return Err(bad(format!("unknown capability {c}"))),
        Err(CapsError::NotPermitted(caps)) => {
            return Err(SpecError::CapsNotPermitted {
                id: spec.id.clone(),
                caps,
            })
        }
    };
    let nofile = WANTED_NOFILE.min(host.nofile_hard);
    let env = process_env(&spec.env);
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };

    let process = json!({
        // With a terminal the keeper passes a console socket (see keeper::attach).
        "terminal": spec.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids},
        "args": spec.args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": sec.no_new_privileges,
        // Always set: otherwise the container inherits the keeper's (the agent's) score.
        "oomScoreAdj": spec.oom_score_adj.max(host.min_oom_score_adj),
    });
    let mut process = process;
    if let Some(label) = &req.apparmor_label {
        process["apparmorProfile"] = json!(label);
    }

    let sys_opt = if sec.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_opt]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", sys_opt]}),
        json!({"destination": "/dev/shm", "type": "bind", "source": sb.shm,
               "options": ["rbind", "nosuid", "nodev", "noexec"]}),
    ];
    for m in &spec.mounts {
        if !m.destination.is_absolute() {
            return Err(bad(format!(
                "mount destination {} is not absolute",
                m.destination.display()
            )));
        }
        let mut opts = vec!["rbind"];
        opts.push(match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        });
        if m.readonly {
            opts.push("ro");
        }
        mounts.push(json!({"destination": m.destination, "type": "bind",
                           "source": m.source, "options": opts}));
    }

    // The pod's user namespace first: libcontainer joins it before the others, which it owns.
    let mut namespaces = Vec::new();
    if let Some(p) = &sb.userns {
        namespaces.push(json!({"type": "user", "path": p}));
    }
    namespaces.push(json!({"type": "mount"}));
    if host.cgroup_v1_hierarchies.is_empty() {
        namespaces.push(json!({"type": "cgroup"}));
    }
    if !sb.host_pid {
        match &sb.pidns {
            Some(p) => namespaces.push(json!({"type": "pid", "path": p})),
            None => namespaces.push(json!({"type": "pid"})),
        }
    }
    for (typ, path) in [
        ("network", &sb.netns),
        ("ipc", &sb.ipcns),
        ("uts", &sb.utsns),
    ] {
        if let Some(p) = path {
            namespaces.push(json!({"type": typ, "path": p}));
        }
    }

    let device_rules = if sec.privileged {
        vec![json!({"allow": true, "access": "rwm"})]
    } else {
        let mut v = vec![json!({"allow": false, "access": "rwm"})];
        // mknod of any device (what is reachable is limited by the rules below and /dev).
        v.push(json!({"allow": true, "type": "c", "access": "m"}));
        v.push(json!({"allow": true, "type": "b", "access": "m"}));
        for (major, minor) in [
            (1, Some(3)), // null
            (1, Some(5)), // zero
            (1, Some(7)), // full
            (1, Some(8)), // random
            (1, Some(9)), // urandom
            (5, Some(0)), // tty
            (5, Some(1)), // console
            (5, Some(2)), // ptmx
            (136, None),  // /dev/pts/*
        ] {
            let mut r = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
            if let Some(m) = minor {
                r["minor"] = json!(m);
            }
            v.push(r);
        }
        v
    };
    let mut device_rules = device_rules;
    for d in &spec.devices {
        if d.kind != "b" && d.kind != "c" {
            return Err(bad(format!(
                "device {}: type {:?} is neither b nor c",
                d.container_path, d.kind
            )));
        }
        device_rules.push(json!({"allow": true, "type": d.kind, "major": d.major,
                                 "minor": d.minor, "access": d.access}));
    }
    let mut resources = json!({"devices": device_rules});
    let res = &spec.resources;
    if let Some(l) = res.memory_limit {
        resources["memory"] = json!({"limit": l});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(s) = res.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(q) = res.cpu_quota {
        cpu.insert("quota".into(), json!(q));
        cpu.insert("period".into(), json!(res.cpu_period.unwrap_or(100_000)));
    } else if let Some(p) = res.cpu_period {
        cpu.insert("period".into(), json!(p));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = res.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let devices: Vec<Value> = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .iter()
    .map(|(path, major, minor)| {
        json!({"path": path, "type": "c", "major": major, "minor": minor,
               "fileMode": 0o666, "uid": 0, "gid": 0})
    })
    .chain(spec.devices.iter().map(|d| {
        json!({"path": d.container_path, "type": d.kind, "major": d.major,
               "minor": d.minor, "fileMode": 0o660, "uid": 0, "gid": 0})
    }))
    .collect();

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": req.cgroup_path,
        "resources": resources,
        "devices": devices,
    });
    // A Bidirectional mount stays a peer of the host's mount only when the container's copy of
    // the host's mounts is shared (the default makes them slaves): the CRI runtimes' rootfs
    // propagation "rshared" then, which libcontainer spells "shared" (recursive, as runc's).
    if rootfs_shared(&spec.mounts) {
        linux["rootfsPropagation"] = json!("shared");
    }
    let mut readonly: Vec<String> = Vec::new();
    if sec.mask_paths {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        readonly.extend(READONLY_PATHS.iter().map(|p| p.to_string()));
    }
    if !sec.privileged && !host.cgroup_v1_hierarchies.is_empty() {
        readonly.push("/sys/fs/cgroup".into());
        readonly.extend(
            host.cgroup_v1_hierarchies
                .iter()
                .map(|h| format!("/sys/fs/cgroup/{h}")),
        );
    }
    if !readonly.is_empty() {
        linux["readonlyPaths"] = json!(readonly);
    }
    if let Some(f) = &req.seccomp {
        linux["seccomp"] =
            serde_json::to_value(&f.filter).map_err(|source| SpecError::Invalid {
                id: spec.id.clone(),
                source,
            })?;
    }

    let mut annotations = serde_json::Map::new();
    for (k, v) in &spec.labels {
        annotations.insert(k.clone(), json!(v));
    }

    let mut doc = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    });
    if let Some(edits) = &req.cdi {
        crate::cdi::apply(&mut doc, edits);
    }
    serde_json::from_value(doc).map_err(|source| SpecError::Invalid {
        id: spec.id.clone(),
        source,
    })
}

/// Whether the container's root mount propagation must be shared: some mount is
/// Bidirectional (containerd's `WithMounts` sets `rshared` then; HostToContainer keeps the
/// default, slave).
fn rootfs_shared(mounts: &[crate::Mount]) -> bool {
    mounts
        .iter()
        .any(|m| m.propagation == Propagation::Bidirectional)
}

/// The container's final capability set (bounding = effective = permitted), which seccomp
/// profiles are resolved against: [`container_caps`], except that capabilities this host cannot
/// grant are kept (the spec build refuses them with [`SpecError::CapsNotPermitted`]). The error
/// is the unknown name.
pub fn capabilities(sec: &crate::Security, host: HostFacts) -> Result<Vec<String>, String> {
    match container_caps(sec.privileged, &sec.capabilities, &host) {
        Ok(caps) => Ok(caps),
        Err(CapsError::Unknown(name)) => Err(name),
        Err(CapsError::NotPermitted(_)) => {
            let mut v: Vec<String> = Vec::new();
            for n in sec.capabilities.iter().map(|c| normalize_cap(c)) {
                if !v.contains(&n) {
                    v.push(n);
                }
            }
            Ok(v)
        }
    }
}

/// `net_admin` / `NET_ADMIN` / `CAP_NET_ADMIN` -> `CAP_NET_ADMIN`.
fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerSpec, Mount, Resources, Sandbox, Security, User};
    use libcontainer::oci_spec::runtime::{Capability, LinuxNamespaceType};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    const HOST: HostFacts = HostFacts {
        nofile_hard: 20_000,
        cap_last_cap: 40,
        own_caps: u64::MAX,
        min_oom_score_adj: -1000,
        cgroup_v1_hierarchies: &[],
    };

    #[test]
    fn oom_score_adj_is_clamped_to_what_we_may_set() {
        let mut r = req();
        r.spec.oom_score_adj = -997;
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        assert_eq!(
            s.process().as_ref().and_then(|p| p.oom_score_adj()),
            Some(-997)
        );
        let weak = HostFacts {
            min_oom_score_adj: 0,
            ..HOST
        };
        let s = build_with(&r, 0, 0, vec![], weak).expect("build");
        assert_eq!(
            s.process().as_ref().and_then(|p| p.oom_score_adj()),
            Some(0)
        );
    }

    fn req() -> KeeperRequest {
        KeeperRequest {
            spec: ContainerSpec {
                id: "pod1-app-0".into(),
                name: "app".into(),
                pod_uid: "pod1".into(),
                pod_namespace: "default".into(),
                pod_name: "p".into(),
                attempt: 0,
                image: "busybox".into(),
                image_id: "sha256:1".into(),
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("A".into(), "1".into()), ("PATH".into(), "/bin".into())],
                cwd: String::new(),
                user: User::Id { uid: 0, gid: None },
                tty: false,
                stdin: false,
                stdin_once: false,
                mounts: vec![],
                resources: Resources::default(),
                oom_score_adj: 0,
                security: Security {
                    capabilities: vec!["CAP_CHOWN".into(), "net_bind_service".into()],
                    mask_paths: true,
                    ..Default::default()
                },
                stop_signal: 15,
                termination_message_path: None,
                labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
                devices: Vec::new(),
                cdi_devices: Vec::new(),
            },
            sandbox: Sandbox {
                pod_uid: "pod1".into(),
                dir: "/run/bosun/sandboxes/pod1".into(),
                netns: Some("/run/bosun/sandboxes/pod1/net".into()),
                ipcns: Some("/run/bosun/sandboxes/pod1/ipc".into()),
                utsns: Some("/run/bosun/sandboxes/pod1/uts".into()),
                pidns: None,
                shm: "/run/bosun/sandboxes/pod1/shm".into(),
                cgroup_parent: "/kubepods/pod1".into(),
                host_pid: false,
                userns: None,
                id_range: None,
            },
            layers: vec![],
            log_path: "/var/log/pods/x/app/0.log".into(),
            log_max_size: 1 << 20,
            log_max_files: 5,
            cgroup_path: "/kubepods/pod1/pod1-app-0".into(),
            hold: false,
            cpu_cgroup: None,
            security: Default::default(),
            seccomp: None,
            apparmor_label: None,
            cdi: None,
        }
    }

    fn ns(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn process_fields() {
        let s = build_with(&req(), 1000, 1000, vec![1000, 10], HOST).expect("build");
        let p = s.process().as_ref().expect("process");
        assert_eq!(p.args().as_ref().expect("args"), &["sh", "-c", "echo hi"]);
        assert_eq!(p.env().as_ref().expect("env"), &["A=1", "PATH=/bin"]);
        assert_eq!(p.cwd(), &PathBuf::from("/"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 1000);
        assert_eq!(
            p.user().additional_gids().as_ref().expect("gids"),
            &[1000, 10]
        );
        assert_eq!(p.no_new_privileges(), Some(false));
        assert_eq!(p.oom_score_adj(), Some(0));
        assert!(!p.terminal().unwrap_or(false));
        assert!(s.hostname().is_none(), "the sandbox owns the hostname");
        let root = s.root().as_ref().expect("root");
        assert_eq!(root.path(), &PathBuf::from("rootfs"));
        assert_eq!(root.readonly(), Some(false));
        assert_eq!(
            s.annotations()
                .as_ref()
                .and_then(|a| a.get("k"))
                .map(String::as_str),
            Some("v")
        );
    }

    #[test]
    fn an_image_without_path_gets_containerds_default() {
        let env = |kv: &[(&str, &str)]| {
            process_env(
                &kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            env(&[("A", "1")]),
            vec![DEFAULT_PATH.to_string(), "A=1".to_string()]
        );
        assert_eq!(env(&[("PATH", "/x"), ("B", "2")]), vec!["PATH=/x", "B=2"]);
        let mut r = req();
        r.spec.env = vec![("HOME".into(), "/root".into())];
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let process_env = s.process().as_ref().and_then(|p| p.env().clone());
        assert_eq!(
            process_env,
            Some(vec![DEFAULT_PATH.to_string(), "HOME=/root".to_string()])
        );
    }

    #[test]
    fn capabilities_are_the_final_list() {
        let s = build_with(&req(), 0, 0, vec![], HOST).expect("build");
        let c = s
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("caps");
        let want = [Capability::Chown, Capability::NetBindService]
            .into_iter()
            .collect();
        assert_eq!(c.bounding().as_ref(), Some(&want));
        assert_eq!(c.effective().as_ref(), Some(&want));
        assert_eq!(c.permitted().as_ref(), Some(&want));
        assert!(c.inheritable().as_ref().is_none_or(|i| i.is_empty()));
        assert!(c.ambient().as_ref().is_none_or(|i| i.is_empty()));

        let mut r = req();
        r.spec.security.capabilities = vec!["CAP_NOPE".into()];
        assert!(build_with(&r, 0, 0, vec![], HOST).is_err());

        // Adding one the host cannot grant: containerd's and runc's error, before any start.
        let reduced = HostFacts {
            own_caps: !(1 << 24),
            ..HOST
        };
        let mut r = req();
        r.spec.security.capabilities = vec!["SYS_RESOURCE".into(), "CAP_CHOWN".into()];
        let e = build_with(&r, 0, 0, vec![], reduced).expect_err("refused");
        assert!(
            matches!(&e, SpecError::CapsNotPermitted { caps, .. } if caps == &["CAP_SYS_RESOURCE"])
        );
        assert!(e
            .to_string()
            .contains("unable to apply caps: operation not permitted"));
        assert_eq!(
            container_caps(false, &["chown".into()], &reduced),
            Ok(vec!["CAP_CHOWN".to_string()])
        );
    }

    #[test]
    fn privileged_gets_everything() {
        let mut r = req();
        r.spec.security.privileged = true;
        r.spec.security.mask_paths = false;
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let c = s
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("caps");
        assert_eq!(c.bounding().as_ref().map(|b| b.len()), Some(41));
        let older = HostFacts {
            cap_last_cap: 37,
            ..HOST
        };
        let s2 = build_with(&r, 0, 0, vec![], older).expect("build");
        let c2 = s2
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("caps");
        assert_eq!(c2.bounding().as_ref().map(|b| b.len()), Some(38));
        // A host whose bounding set lacks CAP_SYS_RESOURCE (24): privileged containers get what
        // we have, as with containerd, instead of failing their capset.
        let reduced = HostFacts {
            own_caps: ((1u64 << 41) - 1) & !(1 << 24),
            ..HOST
        };
        let s3 = build_with(&r, 0, 0, vec![], reduced).expect("build");
        let c3 = s3
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("caps");
        assert_eq!(c3.bounding().as_ref().map(|b| b.len()), Some(40));
        assert!(c3.bounding().as_ref().is_some_and(
            |b| !b.contains(&Capability::SysResource) && b.contains(&Capability::SysAdmin)
        ));
        let linux = s.linux().as_ref().expect("linux");
        let devs = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .expect("devices");
        assert_eq!(devs.len(), 1);
        assert!(devs[0].allow());
        assert!(linux.masked_paths().as_ref().is_none_or(|m| m.is_empty()));
        let sys = s
            .mounts()
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.destination() == &PathBuf::from("/sys"))
            .cloned()
            .expect("sys");
        assert!(sys
            .options()
            .as_ref()
            .expect("opts")
            .contains(&"rw".to_string()));
    }

    #[test]
    fn nofile_is_clamped_to_our_hard_limit() {
        let s = build_with(&req(), 0, 0, vec![], HOST).expect("build");
        let rl = s
            .process()
            .as_ref()
            .and_then(|p| p.rlimits().clone())
            .expect("rlimits");
        assert_eq!(rl.len(), 1);
        assert_eq!(rl[0].hard(), 20_000);
        assert_eq!(rl[0].soft(), 20_000);
        let big = HostFacts {
            nofile_hard: u64::MAX,
            ..HOST
        };
        let s = build_with(&req(), 0, 0, vec![], big).expect("build");
        let rl = s
            .process()
            .as_ref()
            .and_then(|p| p.rlimits().clone())
            .expect("rlimits");
        assert_eq!(rl[0].hard(), WANTED_NOFILE);
    }

    #[test]
    fn mounts_in_order_with_options() {
        let mut r = req();
        r.spec.mounts = vec![
            Mount {
                destination: "/data".into(),
                source: "/var/lib/kubelet/pods/pod1/volumes/x".into(),
                readonly: true,
                propagation: Propagation::Private,
            },
            Mount {
                destination: "/host".into(),
                source: "/".into(),
                readonly: false,
                propagation: Propagation::HostToContainer,
            },
            Mount {
                destination: "/shared".into(),
                source: "/mnt".into(),
                readonly: false,
                propagation: Propagation::Bidirectional,
            },
        ];
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let m = s.mounts().as_ref().expect("mounts");
        let dests: Vec<String> = m
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/shm",
                "/data",
                "/host",
                "/shared"
            ]
        );
        let opts = |i: usize| m[i].options().clone().unwrap_or_default();
        assert!(opts(4).contains(&"ro".to_string()));
        assert_eq!(m[5].typ().as_deref(), Some("cgroup"));
        assert!(opts(5).contains(&"ro".to_string()));
        assert_eq!(
            m[6].source().as_ref(),
            Some(&PathBuf::from("/run/bosun/sandboxes/pod1/shm"))
        );
        assert_eq!(opts(7), ["rbind", "rprivate", "ro"]);
        assert_eq!(opts(8), ["rbind", "rslave"]);
        assert_eq!(opts(9), ["rbind", "rshared"]);
        // The Bidirectional mount makes the root's propagation shared; without one it is the
        // default (slave).
        let linux = s.linux().as_ref().expect("linux");
        assert_eq!(linux.rootfs_propagation().as_deref(), Some("shared"));
        r.spec.mounts.pop();
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let linux = s.linux().as_ref().expect("linux");
        assert_eq!(linux.rootfs_propagation().as_deref(), None);
        assert_eq!(m[7].typ().as_deref(), Some("bind"));

        r.spec.mounts[0].destination = "relative".into();
        assert!(build_with(&r, 0, 0, vec![], HOST).is_err());
    }

    #[test]
    fn namespaces_by_path() {
        let s = build_with(&req(), 0, 0, vec![], HOST).expect("build");
        let n = ns(&s);
        use LinuxNamespaceType as T;
        assert_eq!(
            n,
            vec![
                (T::Mount, None),
                (T::Cgroup, None),
                (T::Pid, None),
                (T::Network, Some("/run/bosun/sandboxes/pod1/net".into())),
                (T::Ipc, Some("/run/bosun/sandboxes/pod1/ipc".into())),
                (T::Uts, Some("/run/bosun/sandboxes/pod1/uts".into())),
            ]
        );
        // Host namespaces: omitted. Host pid: no pid namespace. Shared pid: by path.
        let mut r = req();
        r.sandbox.netns = None;
        r.sandbox.ipcns = None;
        r.sandbox.utsns = None;
        r.sandbox.host_pid = true;
        let n = ns(&build_with(&r, 0, 0, vec![], HOST).expect("build"));
        assert_eq!(n, vec![(T::Mount, None), (T::Cgroup, None)]);
        r.sandbox.host_pid = false;
        r.sandbox.pidns = Some("/run/x/pid".into());
        let n = ns(&build_with(&r, 0, 0, vec![], HOST).expect("build"));
        assert_eq!(n[2], (T::Pid, Some("/run/x/pid".into())));
        // cgroup v1: the host's cgroup namespace, as containerd; /sys/fs/cgroup is still mounted.
        let v1 = HostFacts {
            cgroup_v1_hierarchies: Vec::leak(vec!["cpu".into(), "systemd".into()]),
            ..HOST
        };
        let s = build_with(&req(), 0, 0, vec![], v1).expect("build");
        let n = ns(&s);
        assert_eq!(n[..2], [(T::Mount, None), (T::Pid, None)]);
        assert!(!n.iter().any(|(t, _)| *t == T::Cgroup));
        assert!(s
            .mounts()
            .iter()
            .flatten()
            .any(|m| m.destination() == Path::new("/sys/fs/cgroup")
                && m.typ().as_deref() == Some("cgroup")));
        // ... and its hierarchies read-only unless privileged (libcontainer mounts them rw).
        let ro = |s: &Spec| {
            s.linux()
                .as_ref()
                .and_then(|l| l.readonly_paths().clone())
                .unwrap_or_default()
        };
        let paths = ro(&s);
        for p in [
            "/proc/sys",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/systemd",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} in {paths:?}");
        }
        assert!(!ro(&build_with(&req(), 0, 0, vec![], HOST).expect("build"))
            .iter()
            .any(|x| x.starts_with("/sys/fs/cgroup")));
        let mut privileged = req();
        privileged.spec.security.privileged = true;
        privileged.spec.security.mask_paths = false;
        assert!(ro(&build_with(&privileged, 0, 0, vec![], v1).expect("build")).is_empty());
    }

    #[test]
    fn volume_devices_become_nodes_and_rules() {
        let mut r = req();
        r.spec.devices = vec![crate::Device {
            container_path: "/dev/xvda".into(),
            kind: "b".into(),
            major: 7,
            minor: 3,
            access: "rwm".into(),
        }];
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let linux = s.linux().as_ref().expect("linux");
        let node = linux
            .devices()
            .iter()
            .flatten()
            .find(|d| d.path() == &PathBuf::from("/dev/xvda"))
            .expect("device node");
        assert_eq!((node.major(), node.minor()), (7, 3));
        assert_eq!(
            node.typ(),
            libcontainer::oci_spec::runtime::LinuxDeviceType::B
        );
        let rules = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .expect("rules");
        let last = rules.last().expect("rule");
        assert!(last.allow());
        assert_eq!((last.major(), last.minor()), (Some(7), Some(3)));
        assert_eq!(last.access().as_deref(), Some("rwm"));
        r.spec.devices[0].kind = "x".into();
        assert!(build_with(&r, 0, 0, vec![], HOST).is_err());
    }

    #[test]
    fn resources_and_devices() {
        let mut r = req();
        r.spec.resources = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: None,
            memory_limit: Some(16 << 20),
            pids_limit: Some(100),
        };
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let linux = s.linux().as_ref().expect("linux");
        assert_eq!(
            linux.cgroups_path(),
            &Some(PathBuf::from("/kubepods/pod1/pod1-app-0"))
        );
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(16 << 20)
        );
        let cpu = res.cpu().as_ref().expect("cpu");
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(100));
        let devs = res.devices().as_ref().expect("devices");
        assert!(!devs[0].allow(), "deny-all comes first");
        assert_eq!(devs[0].access().as_deref(), Some("rwm"));
        assert!(devs[0].major().is_none() && devs[0].minor().is_none());
        let allowed: Vec<(i64, Option<i64>)> = devs
            .iter()
            .filter(|d| d.allow() && d.access().as_deref() == Some("rwm"))
            .map(|d| (d.major().unwrap_or(-1), d.minor()))
            .collect();
        for want in [
            (1, Some(3)),
            (1, Some(5)),
            (5, Some(2)),
            (136, None),
            (5, Some(1)),
        ] {
            assert!(allowed.contains(&want), "{want:?} in {allowed:?}");
        }
        let ldevs = linux.devices().as_ref().expect("devices");
        assert!(ldevs
            .iter()
            .any(|d| d.path() == &PathBuf::from("/dev/null")));
        assert_eq!(
            linux.masked_paths().as_ref().map(|m| m.len()),
            Some(MASKED_PATHS.len())
        );
        assert!(linux
            .readonly_paths()
            .as_ref()
            .is_some_and(|m| m.contains(&"/proc/sys".to_string())));
        // No limits: no cpu/memory/pids sections.
        let s = build_with(&req(), 0, 0, vec![], HOST).expect("build");
        let res = s
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .expect("res");
        assert!(res.memory().is_none() && res.cpu().is_none() && res.pids().is_none());
    }

    #[test]
    fn security_flags() {
        let mut r = req();
        r.spec.security.readonly_rootfs = true;
        r.spec.security.no_new_privileges = true;
        r.spec.oom_score_adj = 1000;
        r.spec.cwd = "/work".into();
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        assert_eq!(s.root().as_ref().and_then(|r| r.readonly()), Some(true));
        let p = s.process().as_ref().expect("process");
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), Some(1000));
        assert_eq!(p.cwd(), &PathBuf::from("/work"));
        r.spec.args.clear();
        assert!(build_with(&r, 0, 0, vec![], HOST).is_err());
    }

    #[test]
    fn seccomp_apparmor_and_the_pods_user_namespace() {
        let mut r = req();
        let filter = crate::seccomp::Profile::runtime_default()
            .resolve(
                &r.spec.security.capabilities,
                crate::seccomp::Target::host(),
            )
            .expect("resolve");
        r.seccomp = Some(crate::seccomp::CompiledFilter {
            filter: filter.clone(),
            program: "/run/bosun/seccomp/x.bpf".into(),
        });
        r.apparmor_label = Some("bosun-default".into());
        r.sandbox.userns = Some("/run/bosun/sandboxes/pod1/user".into());
        let s = build_with(&r, 0, 0, vec![], HOST).expect("build");
        let linux = s.linux().as_ref().expect("linux");
        assert_eq!(linux.seccomp().as_ref(), Some(&filter));
        assert_eq!(
            s.process()
                .as_ref()
                .and_then(|p| p.apparmor_profile().clone()),
            Some("bosun-default".to_string())
        );
        let n = ns(&s);
        assert_eq!(
            n[0],
            (
                LinuxNamespaceType::User,
                Some("/run/bosun/sandboxes/pod1/user".into())
            ),
            "the user namespace is joined first"
        );
        // config.json round trip: what libcontainer loads equals what the program was compiled
        // from (the precompiled program is only used on equality).
        let text = serde_json::to_vec(&s).expect("json");
        let back: Spec = serde_json::from_slice(&text).expect("parse");
        assert_eq!(
            back.linux().as_ref().and_then(|l| l.seccomp().clone()),
            Some(filter)
        );
        // Without them: no filter, no label, no user namespace.
        let plain = build_with(&req(), 0, 0, vec![], HOST).expect("build");
        assert!(plain
            .linux()
            .as_ref()
            .is_some_and(|l| l.seccomp().is_none()));
        assert!(plain
            .process()
            .as_ref()
            .is_some_and(|p| p.apparmor_profile().is_none()));
        assert!(!ns(&plain)
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::User));
    }

    #[test]
    fn serializes_to_json_runc_understands() {
        let s = build_with(&req(), 0, 0, vec![], HOST).expect("build");
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], json!(false));
        assert_eq!(v["process"]["user"]["uid"], json!(0));
        assert!(v.get("hostname").is_none());
    }
}
