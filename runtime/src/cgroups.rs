//! The one module that owns the cgroup layout: `<root>/kubepods[/burstable|/besteffort]/pod<uid>`
//! with container cgroups inside, on cgroup v1 (hybrid) and pure v2.
//!
//! What comes from cgroups-rs 0.5 and what does not:
//! - cgroups-rs gives us the hierarchy detection (`is_cgroup2_unified_mode`, a statfs of
//!   `/sys/fs/cgroup`) and, on v1, where each controller is mounted (`V1::get_mount_point`, read
//!   from `/proc/self/mountinfo`, which copes with joined mounts such as `cpu,cpuacct`).
//! - Creating, limiting and removing cgroups is done with direct file writes. cgroups-rs fights
//!   us there: on v1 its `Cgroup::new` creates the cgroup in *every* mounted subsystem (net_cls,
//!   perf_event, name=systemd ...), its `Resources` would need a second translation of ours and
//!   it does not report which write failed with which path; on v2 its root is hard-wired and it
//!   does not handle the "no internal processes" rule; its `delete` does not handle children and
//!   does not retry the transient EBUSY of a cgroup whose last task is still exiting.
//!
//! Pure v2 and the agent's own cgroup: domain controllers can only be enabled in
//! `cgroup.subtree_control` of a cgroup without processes (the hierarchy root excepted). When the
//! configured cgroup root is the cgroup the agent itself lives in (e.g. a delegated
//! `bosun.service` with `cgroup_root` pointing at it), [`CgroupLayout::ensure_pod`] moves every
//! process of that cgroup into a leaf child `<root>/agent` first (what k3s and kind do with
//! `/init`), then enables the controllers. Any other ancestor that holds processes is an error
//! naming it: bosun never moves processes it does not own.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{QosClass, Resources};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {reason}")]
    Other { path: String, reason: String },
}

/// The number of OOM kills recorded for a cgroup (`path` relative to the hierarchy root, as in
/// an OCI `cgroupsPath`): v1 `memory.oom_control` / v2 `memory.events`. `None` if unreadable.
pub fn oom_kill_count(path: &str) -> Option<u64> {
    let rel = path.trim_start_matches('/');
    let candidates = [
        std::path::Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        std::path::Path::new("/sys/fs/cgroup")
            .join(rel)
            .join("memory.events"),
    ];
    candidates.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|v| v.trim().parse().ok())
        })
    })
}

/// The kubelet/runc conversion from cgroup v1 `cpu.shares` (2..=262144) to v2 `cpu.weight`
/// (1..=10000): `1 + ((shares - 2) * 9999) / 262142`, with shares clamped to its v1 range.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// A CPU limit as CFS bandwidth: `quota` microseconds of CPU time in every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota: u64,
    pub period: u64,
}

impl CpuQuota {
    /// The limit in `res` (a quota above zero; the period defaults to 100 ms), if any.
    pub fn of(res: &Resources) -> Option<CpuQuota> {
        let quota = res.cpu_quota.filter(|q| *q > 0)? as u64;
        Some(CpuQuota {
            quota,
            period: res.cpu_period.unwrap_or(100_000),
        })
    }
}

/// The CPU quota in the cgroup folder `dir` (v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`, v2
/// `cpu.max`); `None` when unlimited.
fn read_quota(dir: &Path, v2: bool) -> Result<Option<CpuQuota>, CgroupError> {
    let (quota, period) = if v2 {
        let path = dir.join("cpu.max");
        let text = read_trimmed(&path)?;
        let mut it = text.split_whitespace();
        let q = it.next().unwrap_or("max").to_string();
        let p = it.next().unwrap_or("100000").to_string();
        (q, p)
    } else {
        (
            read_trimmed(&dir.join("cpu.cfs_quota_us"))?,
            read_trimmed(&dir.join("cpu.cfs_period_us"))?,
        )
    };
    if quota == "max" || quota.starts_with('-') {
        return Ok(None);
    }
    let num = |v: &str| {
        v.parse::<u64>().map_err(|_| {
            other(
                dir,
                format!("unreadable CPU quota {quota:?} / period {period:?}"),
            )
        })
    };
    Ok(Some(CpuQuota {
        quota: num(&quota)?,
        period: num(&period)?,
    }))
}

/// Where a cgroup's CPU quota is written: its folder in the hierarchy that has the cpu controller.
/// The agent finds it for a keeper (see [`crate::KeeperRequest::cpu_cgroup`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuCgroup {
    pub dir: PathBuf,
    /// cgroup v2 (`cpu.max`) rather than v1 (`cpu.cfs_quota_us`, `cpu.cfs_period_us`).
    pub v2: bool,
}

impl CpuCgroup {
    /// Sets (or lifts, `None`) the quota.
    pub fn set_quota(&self, want: Option<CpuQuota>) -> Result<(), CgroupError> {
        write_quota(&self.dir, self.v2, want)
    }
}

/// Sets (or lifts, `None`) the CPU quota in the cgroup folder `dir`; writes nothing when it is
/// already so. On v1 the quota is lifted first so that a new period never conflicts with the old
/// quota (a cgroup is never left more limited than asked, at worst briefly less).
fn write_quota(dir: &Path, v2: bool, want: Option<CpuQuota>) -> Result<(), CgroupError> {
    if read_quota(dir, v2)? == want {
        return Ok(());
    }
    if v2 {
        let value = match want {
            Some(q) => format!("{} {}", q.quota, q.period),
            None => "max".to_string(),
        };
        return write_file(&dir.join("cpu.max"), &value);
    }
    let quota_file = dir.join("cpu.cfs_quota_us");
    write_file(&quota_file, "-1")?;
    if let Some(q) = want {
        write_file(&dir.join("cpu.cfs_period_us"), &q.period.to_string())?;
        write_file(&quota_file, &q.quota.to_string())?;
    }
    Ok(())
}

/// v1 controllers a pod cgroup is created in (where mounted).
const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer",
];
/// v2 controllers enabled in `cgroup.subtree_control` down to the pod (where available).
const V2_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];
/// cgroup v1 `cpu.shares` kubelet gives the BestEffort parent.
const BESTEFFORT_SHARES: u64 = 2;
/// The leaf the agent's processes move to when its own cgroup is the v2 root (see module docs).
const AGENT_LEAF: &str = "agent";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Mount point of each v1 controller we use (absent controllers are left out), and every v1
    /// hierarchy mounted (for removal of whatever libcontainer created anywhere).
    V1 {
        controllers: Vec<(&'static str, PathBuf)>,
        all: Vec<PathBuf>,
    },
    /// The cgroup2 mount point.
    V2 { mount: PathBuf },
}

/// Where bosun's cgroups live and how they are laid out. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Normalised root: "" for "/", otherwise "/a/b" without a trailing slash.
    root: String,
    kind: Kind,
}

fn normalise_root(root: &str) -> String {
    let parts: Vec<&str> = root.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("/{}", parts.join("/"))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn other(path: &Path, reason: impl Into<String>) -> CgroupError {
    CgroupError::Other {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    tracing::debug!(path = %path.display(), value, "cgroup write");
    std::fs::write(path, value).map_err(io_err(path))
}

fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(io_err(path))
}

fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Pids in `cgroup.procs` of `dir` (empty when unreadable or absent).
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Every directory below `dir` (inclusive), children before parents.
fn post_order(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                post_order(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// Removes `dir` and every cgroup below it, deepest first, refusing to touch any that still has
/// processes. Absent is success. Retries the short EBUSY a cgroup shows while its last task exits.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    if !dir.exists() {
        return Ok(());
    }
    let mut dirs = Vec::new();
    post_order(dir, &mut dirs);
    for d in dirs {
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => {
                    let pids = procs(&d);
                    if !pids.is_empty() {
                        return Err(other(
                            &d,
                            format!("still has processes {pids:?}; not removed"),
                        ));
                    }
                    attempt += 1;
                    if attempt >= 20 || e.raw_os_error() != Some(libc::EBUSY) {
                        return Err(io_err(&d)(e));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
    Ok(())
}

fn qos_dir(qos: QosClass) -> Option<&'static str> {
    match qos {
        QosClass::Guaranteed => None,
        QosClass::Burstable => Some("burstable"),
        QosClass::BestEffort => Some("besteffort"),
    }
}

impl CgroupLayout {
    /// Detects the host's hierarchy (pure v2 if `/sys/fs/cgroup` is cgroup2, otherwise v1
    /// controllers from mountinfo) for a layout rooted at `cgroup_root` ("/" on a node).
    pub fn detect(cgroup_root: &str) -> Result<Self, CgroupError> {
        let root = normalise_root(cgroup_root);
        if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            return Ok(CgroupLayout {
                root,
                kind: Kind::V2 {
                    mount: PathBuf::from(cgroups_rs::fs::hierarchies::UNIFIED_MOUNTPOINT),
                },
            });
        }
        let v1 = cgroups_rs::fs::hierarchies::V1::new();
        let controllers: Vec<(&'static str, PathBuf)> = V1_CONTROLLERS
            .iter()
            .filter_map(|c| {
                let ctl = match *c {
                    "cpu" => cgroups_rs::fs::Controllers::Cpu,
                    "cpuacct" => cgroups_rs::fs::Controllers::CpuAcct,
                    "cpuset" => cgroups_rs::fs::Controllers::CpuSet,
                    "memory" => cgroups_rs::fs::Controllers::Mem,
                    "pids" => cgroups_rs::fs::Controllers::Pids,
                    "blkio" => cgroups_rs::fs::Controllers::BlkIo,
                    "devices" => cgroups_rs::fs::Controllers::Devices,
                    _ => cgroups_rs::fs::Controllers::Freezer,
                };
                v1.get_mount_point(ctl).map(|(mp, _root)| (*c, mp))
            })
            .collect();
        if controllers.is_empty() {
            return Err(CgroupError::Other {
                path: "/sys/fs/cgroup".into(),
                reason: "neither a cgroup2 unified mount nor any cgroup v1 controller found".into(),
            });
        }
        let mut all: Vec<PathBuf> = cgroups_rs::fs::hierarchies::mountinfo_self()
            .into_iter()
            .filter(|m| m.fs_type.0 == "cgroup")
            .map(|m| m.mount_point)
            .collect();
        all.sort();
        all.dedup();
        Ok(CgroupLayout {
            root,
            kind: Kind::V1 { controllers, all },
        })
    }

    /// [`CgroupLayout::detect`], with the host's hierarchies detected once per process: reading
    /// mountinfo costs time in proportion to the mounts (a few per pod), and every pod sync needs
    /// the layout; hierarchies are not remounted under a running agent. A failed detection is
    /// not remembered.
    pub fn host(cgroup_root: &str) -> Result<Self, CgroupError> {
        static KIND: std::sync::Mutex<Option<Kind>> = std::sync::Mutex::new(None);
        let mut known = KIND.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kind) = &*known {
            return Ok(CgroupLayout {
                root: normalise_root(cgroup_root),
                kind: kind.clone(),
            });
        }
        let layout = Self::detect(cgroup_root)?;
        *known = Some(layout.kind.clone());
        Ok(layout)
    }

    /// A v2 layout on an explicit cgroup2 mount (for tests with a private mount).
    pub fn v2_at(mount: impl Into<PathBuf>, cgroup_root: &str) -> Self {
        CgroupLayout {
            root: normalise_root(cgroup_root),
            kind: Kind::V2 {
                mount: mount.into(),
            },
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self.kind, Kind::V2 { .. })
    }

    /// The configured root in cgroupsPath form ("/" or "/a/b").
    pub fn root(&self) -> &str {
        if self.root.is_empty() {
            "/"
        } else {
            &self.root
        }
    }

    fn kubepods_path(&self) -> String {
        format!("{}/kubepods", self.root)
    }

    fn qos_path(&self, qos: QosClass) -> String {
        match qos_dir(qos) {
            Some(d) => format!("{}/kubepods/{d}", self.root),
            None => self.kubepods_path(),
        }
    }

    /// "<root>/kubepods/pod<uid>" (Guaranteed) or "<root>/kubepods/{burstable,besteffort}/pod<uid>":
    /// the cgroupsPath form (leading /, relative to the hierarchy root).
    pub fn pod_path(&self, qos: QosClass, pod_uid: &str) -> String {
        format!("{}/pod{pod_uid}", self.qos_path(qos))
    }

    /// Every hierarchy directory a path lives in, for removal.
    fn removal_mounts(&self) -> Vec<PathBuf> {
        match &self.kind {
            Kind::V1 { all, .. } => all.clone(),
            Kind::V2 { mount } => vec![mount.clone()],
        }
    }

    /// The components from the hierarchy root to `path` ("/a/b/c" -> ["/a", "/a/b", "/a/b/c"]).
    fn chain(path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            out.push(cur.clone());
        }
        out
    }

    /// Where the CPU quota of the cgroup at `path` (cgroupsPath form) is written; `None` when no
    /// hierarchy has the cpu controller.
    pub fn cpu_cgroup(&self, path: &str) -> Option<CpuCgroup> {
        self.cpu_dir(path).map(|dir| CpuCgroup {
            dir,
            v2: self.is_v2(),
        })
    }

    /// The folder of the cgroup at `path` (cgroupsPath form) in the hierarchy that has the cpu
    /// controller; `None` when no hierarchy has it.
    fn cpu_dir(&self, path: &str) -> Option<PathBuf> {
        let rel = path.trim_start_matches('/');
        match &self.kind {
            Kind::V1 { controllers, .. } => controllers
                .iter()
                .find(|(n, _)| *n == "cpu")
                .map(|(_, m)| m.join(rel)),
            Kind::V2 { mount } => {
                let dir = mount.join(rel);
                dir.join("cpu.max").exists().then_some(dir)
            }
        }
    }

    /// The CPU quota of the cgroup at `path` (cgroupsPath form); `None`: unlimited, or no cpu
    /// controller here.
    pub fn cpu_quota(&self, path: &str) -> Result<Option<CpuQuota>, CgroupError> {
        match self.cpu_dir(path) {
            Some(dir) => read_quota(&dir, self.is_v2()),
            None => Ok(None),
        }
    }

    /// Sets the CPU quota of the cgroup at `path` (cgroupsPath form), or lifts it (`None`).
    pub fn set_cpu_quota(&self, path: &str, want: Option<CpuQuota>) -> Result<(), CgroupError> {
        match self.cpu_cgroup(path) {
            Some(c) => c.set_quota(want),
            None if want.is_none() => Ok(()),
            None => Err(CgroupError::Other {
                path: path.to_string(),
                reason: "a CPU limit needs the cpu controller, which is not available here".into(),
            }),
        }
    }

    /// Creates kubepods, the qos parent and the pod cgroup in every controller needed, writes the
    /// pod limits and returns the pod's cgroupsPath. Idempotent; updates limits if they changed.
    pub fn ensure_pod(
        &self,
        qos: QosClass,
        pod_uid: &str,
        res: &Resources,
    ) -> Result<String, CgroupError> {
        let pod = self.pod_path(qos, pod_uid);
        let _span = tracing::debug_span!("ensure_pod", pod = %pod).entered();
        match &self.kind {
            Kind::V1 { controllers, .. } => self.ensure_v1(controllers, qos, &pod, res)?,
            Kind::V2 { mount } => self.ensure_v2(mount, qos, &pod, res)?,
        }
        Ok(pod)
    }

    fn ensure_v1(
        &self,
        controllers: &[(&'static str, PathBuf)],
        qos: QosClass,
        pod: &str,
        res: &Resources,
    ) -> Result<(), CgroupError> {
        // Directories below the root are ours; the root and its ancestors are created if missing.
        let chain = Self::chain(pod);
        let mut done: Vec<&Path> = Vec::new();
        for (name, mount) in controllers {
            // Joined mounts (cpu,cpuacct) appear twice: create once.
            if done.contains(&mount.as_path()) {
                continue;
            }
            done.push(mount);
            for rel in &chain {
                let dir = mount.join(rel.trim_start_matches('/'));
                let created = mkdir(&dir)?;
                // Only the cpuset hierarchy has these files (whatever it is joined with).
                copy_cpuset_from_parent(&dir)?;
                if created && *name == "cpu" && rel == &self.qos_path(QosClass::BestEffort) {
                    write_file(&dir.join("cpu.shares"), &BESTEFFORT_SHARES.to_string())?;
                }
            }
        }
        let _ = qos;
        Self::write_v1(controllers, pod, res)
    }

    /// Writes `res` to the existing cgroup at `path` (cgroupsPath form) in each v1 hierarchy.
    fn write_v1(
        controllers: &[(&'static str, PathBuf)],
        pod: &str,
        res: &Resources,
    ) -> Result<(), CgroupError> {
        let find = |c: &str| {
            controllers
                .iter()
                .find(|(n, _)| *n == c)
                .map(|(_, m)| m.join(pod.trim_start_matches('/')))
        };
        let missing = |c: &str| CgroupError::Other {
            path: pod.to_string(),
            reason: format!("a limit needs the v1 {c} controller, which is not mounted"),
        };
        // cpu
        match find("cpu") {
            Some(dir) => {
                if let Some(shares) = res.cpu_shares {
                    write_file(
                        &dir.join("cpu.shares"),
                        &shares.clamp(2, 262_144).to_string(),
                    )?;
                }
                write_quota(&dir, false, CpuQuota::of(res))?;
            }
            None if res.cpu_shares.is_some() || res.cpu_quota.is_some() => {
                return Err(missing("cpu"))
            }
            None => {}
        }
        match find("memory") {
            Some(dir) => {
                let v = res.memory_limit.filter(|m| *m > 0).unwrap_or(-1);
                write_file(&dir.join("memory.limit_in_bytes"), &v.to_string())?;
            }
            None if res.memory_limit.is_some() => return Err(missing("memory")),
            None => {}
        }
        match find("pids") {
            Some(dir) => {
                let v = match res.pids_limit.filter(|p| *p > 0) {
                    Some(p) => p.to_string(),
                    None => "max".to_string(),
                };
                write_file(&dir.join("pids.max"), &v)?;
            }
            None if res.pids_limit.is_some() => return Err(missing("pids")),
            None => {}
        }
        Ok(())
    }

    fn ensure_v2(
        &self,
        mount: &Path,
        qos: QosClass,
        pod: &str,
        res: &Resources,
    ) -> Result<(), CgroupError> {
        let chain = Self::chain(pod);
        // The hierarchy root first, then every level down to the pod: each must delegate the
        // controllers to its children (the pod's own subtree_control serves container cgroups).
        enable_controllers(mount, mount, &self.root)?;
        for rel in &chain {
            let dir = mount.join(rel.trim_start_matches('/'));
            let created = mkdir(&dir)?;
            if created
                && rel == &self.qos_path(QosClass::BestEffort)
                && dir.join("cpu.weight").exists()
            {
                write_file(
                    &dir.join("cpu.weight"),
                    &cpu_shares_to_weight(BESTEFFORT_SHARES).to_string(),
                )?;
            }
            enable_controllers(mount, &dir, &self.root)?;
        }
        let _ = qos;
        Self::write_v2(&mount.join(pod.trim_start_matches('/')), res)
    }

    /// Writes `res` to the existing v2 cgroup folder `dir`.
    fn write_v2(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
        // Writes `value` to `file`; a missing file is an error only when a real limit is asked.
        let put = |file: &str, value: String, limited: bool| -> Result<(), CgroupError> {
            let path = dir.join(file);
            if !path.exists() {
                if limited {
                    return Err(other(
                        dir,
                        format!("{file} is missing: its controller is not available here"),
                    ));
                }
                return Ok(());
            }
            write_file(&path, &value)
        };
        if let Some(shares) = res.cpu_shares {
            put("cpu.weight", cpu_shares_to_weight(shares).to_string(), true)?;
        }
        let quota = CpuQuota::of(res);
        if dir.join("cpu.max").exists() {
            write_quota(dir, true, quota)?;
        } else if quota.is_some() {
            return Err(other(
                dir,
                "cpu.max is missing: its controller is not available here",
            ));
        }
        match res.memory_limit.filter(|m| *m > 0) {
            Some(m) => put("memory.max", m.to_string(), true)?,
            None => put("memory.max", "max".into(), false)?,
        }
        match res.pids_limit.filter(|p| *p > 0) {
            Some(p) => put("pids.max", p.to_string(), true)?,
            None => put("pids.max", "max".into(), false)?,
        }
        Ok(())
    }

    /// Writes new limits to the existing cgroup at `path` (cgroupsPath form: a pod's or a
    /// container's), for an in-place resize; creates nothing. `None` fields lift a limit, but
    /// `cpu_shares: None` leaves the weight as it is.
    pub fn set_limits(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        match &self.kind {
            Kind::V1 { controllers, .. } => Self::write_v1(controllers, path, res),
            Kind::V2 { mount } => {
                let dir = mount.join(path.trim_start_matches('/'));
                if !dir.is_dir() {
                    return Err(other(&dir, "no such cgroup"));
                }
                Self::write_v2(&dir, res)
            }
        }
    }

    /// Removes the pod cgroup (and any leftover child cgroups inside it, deepest first) from every
    /// hierarchy. Never kills processes: a cgroup that still has some is an error naming it.
    /// Idempotent. Continues with the other hierarchies after an error and returns the first.
    pub fn remove_pod(&self, qos: QosClass, pod_uid: &str) -> Result<(), CgroupError> {
        self.remove_rel(&self.pod_path(qos, pod_uid))
    }

    fn remove_rel(&self, rel: &str) -> Result<(), CgroupError> {
        let mut first = None;
        for mount in self.removal_mounts() {
            if let Err(e) = remove_tree(&mount.join(rel.trim_start_matches('/'))) {
                tracing::warn!(error = %e, "removing cgroup");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Pod uids that have a pod cgroup, with their QoS class (for cleanup after a crash).
    pub fn list_pods(&self) -> Vec<(QosClass, String)> {
        let base = match &self.kind {
            Kind::V2 { mount } => mount.clone(),
            Kind::V1 { controllers, .. } => match controllers
                .iter()
                .find(|(n, _)| *n == "memory")
                .or_else(|| controllers.first())
            {
                Some((_, m)) => m.clone(),
                None => return Vec::new(),
            },
        };
        let mut out = Vec::new();
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let dir = base.join(self.qos_path(qos).trim_start_matches('/'));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                if let Some(uid) = e.file_name().to_str().and_then(|n| n.strip_prefix("pod")) {
                    out.push((qos, uid.to_string()));
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// For tests and teardown of a private root: removes `<root>/kubepods` entirely (deepest
    /// first), then the root cgroup itself when it is not the hierarchy root (an absent one is
    /// fine; one with processes is an error). Never use it on a node's real root.
    pub fn remove_all(&self) -> Result<(), CgroupError> {
        let mut res = self.remove_rel(&self.kubepods_path());
        if !self.root.is_empty() {
            let r = self.remove_rel(&self.root);
            if res.is_ok() {
                res = r;
            }
        }
        res
    }
}

/// v1 cpuset: a new cgroup starts with empty `cpuset.cpus`/`cpuset.mems`, and no task can join
/// it until they are set; copy them from the parent when empty.
fn copy_cpuset_from_parent(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !own.exists() {
            continue;
        }
        if read_trimmed(&own)?.is_empty() {
            let value = read_trimmed(&parent.join(file))?;
            if !value.is_empty() {
                write_file(&own, &value)?;
            }
        }
    }
    Ok(())
}

/// v2: enables in `dir`'s `cgroup.subtree_control` every wanted controller that `dir` has in
/// `cgroup.controllers` and has not enabled yet. Handles the agent's own cgroup being the root
/// (see the module docs).
fn enable_controllers(mount: &Path, dir: &Path, root: &str) -> Result<(), CgroupError> {
    let available = read_trimmed(&dir.join("cgroup.controllers"))?;
    let enabled = read_trimmed(&dir.join("cgroup.subtree_control"))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let want: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| available.contains(c) && !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    let is_hier_root = dir == mount;
    let is_our_root = !root.is_empty() && dir == mount.join(root.trim_start_matches('/'));
    if !is_hier_root {
        let pids = procs(dir);
        if !pids.is_empty() {
            if !is_our_root {
                return Err(other(
                    dir,
                    format!(
                        "has processes {pids:?}: controllers cannot be delegated below it \
                         (cgroup v2 no-internal-processes rule)"
                    ),
                ));
            }
            evacuate(dir)?;
        }
    }
    write_file(&dir.join("cgroup.subtree_control"), &want.join(" "))
}

/// Moves every process of `dir` into the leaf `dir/agent` (a few rounds: processes may fork
/// while we move them).
fn evacuate(dir: &Path) -> Result<(), CgroupError> {
    let leaf = dir.join(AGENT_LEAF);
    mkdir(&leaf)?;
    tracing::info!(from = %dir.display(), to = %leaf.display(), "moving processes out of the cgroup root so controllers can be delegated");
    for _ in 0..10 {
        let pids = procs(dir);
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            match std::fs::write(leaf.join("cgroup.procs"), pid.to_string()) {
                Ok(()) => {}
                // The process exited meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(io_err(&leaf.join("cgroup.procs"))(e)),
            }
        }
    }
    Err(other(dir, "processes keep appearing; could not empty it"))
}

/// Memory and processes of one cgroup, as the kubelet's summary reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    pub memory_usage: u64,
    /// The usage minus inactive file pages (the kubelet's working set).
    pub memory_working_set: u64,
    /// `pids.current`.
    pub processes: u64,
}

/// The usage of the `kubepods` cgroup and of each pod cgroup in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsUsage {
    pub kubepods: Option<CgroupUsage>,
    /// By pod uid.
    pub pods: std::collections::BTreeMap<String, CgroupUsage>,
    /// By container id (the container cgroups inside the pod cgroups).
    pub containers: std::collections::BTreeMap<String, CgroupUsage>,
}

fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl CgroupLayout {
    /// Creates `kubepods` (and its parents) and writes its limits: the node's allocatable for
    /// pods with `enforceNodeAllocatable: [pods]`. Idempotent.
    pub fn ensure_kubepods(&self, res: &Resources) -> Result<String, CgroupError> {
        let path = self.kubepods_path();
        match &self.kind {
            Kind::V1 { controllers, .. } => {
                self.ensure_v1(controllers, QosClass::Guaranteed, &path, res)?
            }
            Kind::V2 { mount } => self.ensure_v2(mount, QosClass::Guaranteed, &path, res)?,
        }
        Ok(path)
    }

    /// The folder of the cgroup at `path` in the memory hierarchy.
    fn memory_dir(&self, path: &str) -> Option<PathBuf> {
        let rel = path.trim_start_matches('/');
        match &self.kind {
            Kind::V1 { controllers, .. } => controllers
                .iter()
                .find(|(n, _)| *n == "memory")
                .map(|(_, m)| m.join(rel)),
            Kind::V2 { mount } => Some(mount.join(rel)),
        }
    }

    /// The usage of the cgroup at `path` (cgroupsPath form); `None` when it does not exist.
    pub fn usage(&self, path: &str) -> Option<CgroupUsage> {
        let rel = path.trim_start_matches('/');
        let (memory, pids) = match &self.kind {
            Kind::V1 { controllers, .. } => {
                let find = |c: &str| {
                    controllers
                        .iter()
                        .find(|(n, _)| *n == c)
                        .map(|(_, m)| m.join(rel))
                };
                (find("memory")?, find("pids"))
            }
            Kind::V2 { mount } => (mount.join(rel), Some(mount.join(rel))),
        };
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        let (usage, inactive) = if self.is_v2() {
            (
                read(memory.join("memory.current"))?.trim().parse().ok()?,
                read(memory.join("memory.stat"))
                    .and_then(|s| stat_value(&s, "inactive_file"))
                    .unwrap_or(0),
            )
        } else {
            (
                read(memory.join("memory.usage_in_bytes"))?
                    .trim()
                    .parse()
                    .ok()?,
                read(memory.join("memory.stat"))
                    .and_then(|s| stat_value(&s, "total_inactive_file"))
                    .unwrap_or(0),
            )
        };
        let processes = pids
            .and_then(|p| read(p.join("pids.current")))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Some(CgroupUsage {
            memory_usage: usage,
            memory_working_set: u64::saturating_sub(usage, inactive),
            processes,
        })
    }

    /// The usage of `kubepods` and, with `each_pod`, of every pod and container cgroup.
    pub fn pods_usage(&self, each_pod: bool) -> PodsUsage {
        let mut out = PodsUsage {
            kubepods: self.usage(&self.kubepods_path()),
            ..PodsUsage::default()
        };
        if !each_pod {
            return out;
        }
        for (qos, uid) in self.list_pods() {
            let pod = self.pod_path(qos, &uid);
            if let Some(u) = self.usage(&pod) {
                out.pods.insert(uid, u);
            }
            let Some(dir) = self.memory_dir(&pod) else {
                continue;
            };
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Some(id) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if let Some(u) = self.usage(&format!("{pod}/{id}")) {
                    out.containers.insert(id, u);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(root: &str) -> CgroupLayout {
        CgroupLayout {
            root: normalise_root(root),
            kind: Kind::V1 {
                controllers: vec![],
                all: vec![],
            },
        }
    }

    #[test]
    fn pod_paths() {
        let l = v1("/");
        assert_eq!(
            l.pod_path(QosClass::Guaranteed, "abc-1"),
            "/kubepods/podabc-1"
        );
        assert_eq!(
            l.pod_path(QosClass::Burstable, "abc"),
            "/kubepods/burstable/podabc"
        );
        assert_eq!(
            l.pod_path(QosClass::BestEffort, "abc"),
            "/kubepods/besteffort/podabc"
        );
        let l = v1("/bosun-test-123/");
        assert_eq!(
            l.pod_path(QosClass::Burstable, "u"),
            "/bosun-test-123/kubepods/burstable/podu"
        );
        assert_eq!(l.root(), "/bosun-test-123");
        assert_eq!(v1("").root(), "/");
        assert_eq!(
            v1("a//b").pod_path(QosClass::Guaranteed, "u"),
            "/a/b/kubepods/podu"
        );
    }

    #[test]
    fn chain_lists_every_level() {
        assert_eq!(
            CgroupLayout::chain("/a/kubepods/podx"),
            vec!["/a", "/a/kubepods", "/a/kubepods/podx"]
        );
        assert!(CgroupLayout::chain("/").is_empty());
    }

    #[test]
    fn shares_to_weight() {
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        // Out of range values are clamped like the kernel does for v1.
        assert_eq!(cpu_shares_to_weight(0), 1);
        assert_eq!(cpu_shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn pods_usage_reads_memory_and_pids_of_a_fake_v2_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = CgroupLayout::v2_at(tmp.path(), "/r");
        let put = |rel: &str, current: u64, inactive: u64, pids: u64| {
            let d = tmp.path().join(rel);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("memory.current"), format!("{current}\n")).expect("write");
            std::fs::write(
                d.join("memory.stat"),
                format!("anon 1\ninactive_file {inactive}\nactive_file 3\n"),
            )
            .expect("write");
            std::fs::write(d.join("pids.current"), format!("{pids}\n")).expect("write");
        };
        put("r/kubepods", 1000, 100, 7);
        put("r/kubepods/burstable/poda", 600, 50, 4);
        put("r/kubepods/burstable/poda/a_c_0", 500, 40, 3);
        let u = l.pods_usage(true);
        assert_eq!(
            u.kubepods,
            Some(CgroupUsage {
                memory_usage: 1000,
                memory_working_set: 900,
                processes: 7
            })
        );
        assert_eq!(u.pods["a"].memory_working_set, 550);
        assert_eq!(u.containers["a_c_0"].processes, 3);
        let only = l.pods_usage(false);
        assert!(only.pods.is_empty() && only.kubepods.is_some());
        assert_eq!(l.usage("/r/missing"), None);
    }

    #[test]
    fn set_limits_writes_an_existing_fake_v2_cgroup() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = CgroupLayout::v2_at(tmp.path(), "/r");
        let dir = tmp.path().join("r/kubepods/burstable/podu1/c1");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (f, v) in [
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("memory.max", "max"),
            ("pids.max", "max"),
        ] {
            std::fs::write(dir.join(f), v).expect("write");
        }
        let res = Resources {
            cpu_shares: Some(1024),
            cpu_quota: Some(40_000),
            cpu_period: Some(100_000),
            memory_limit: Some(96 << 20),
            pids_limit: None,
        };
        l.set_limits("/r/kubepods/burstable/podu1/c1", &res)
            .expect("set");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("read");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "40000 100000");
        assert_eq!(read("memory.max"), (96u64 << 20).to_string());
        // Lifted again; shares not given: the weight stays.
        let lifted = Resources::default();
        l.set_limits("/r/kubepods/burstable/podu1/c1", &lifted)
            .expect("lift");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "max");
        assert_eq!(read("memory.max"), "max");
        // A cgroup that does not exist is not made.
        assert!(l.set_limits("/r/kubepods/podgone/c", &res).is_err());
        assert!(!tmp.path().join("r/kubepods/podgone").exists());
    }

    #[test]
    fn list_pods_reads_a_fake_v2_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = CgroupLayout::v2_at(tmp.path(), "/r");
        for p in [
            "r/kubepods/poda",
            "r/kubepods/burstable/podb",
            "r/kubepods/besteffort/podc",
        ] {
            std::fs::create_dir_all(tmp.path().join(p)).expect("mkdir");
        }
        assert_eq!(
            l.list_pods(),
            vec![
                (QosClass::Guaranteed, "a".to_string()),
                (QosClass::Burstable, "b".to_string()),
                (QosClass::BestEffort, "c".to_string()),
            ]
        );
        // remove_tree on plain directories behaves like on cgroupfs (empty dirs only).
        l.remove_pod(QosClass::Burstable, "b").expect("remove");
        l.remove_pod(QosClass::Burstable, "b").expect("idempotent");
        assert_eq!(l.list_pods().len(), 2);
    }

    #[test]
    fn v2_enable_controllers_on_a_fake_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = tmp.path();
        let put = |d: &Path, f: &str, v: &str| {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join(f), v).expect("write");
        };
        // The hierarchy root may hold processes; only available controllers are asked for.
        put(m, "cgroup.controllers", "cpu io memory hugetlb\n");
        put(m, "cgroup.subtree_control", "");
        put(m, "cgroup.procs", "1\n");
        enable_controllers(m, m, "/r").expect("root");
        assert_eq!(
            std::fs::read_to_string(m.join("cgroup.subtree_control")).expect("read"),
            "+cpu +io +memory"
        );
        // Nothing left to enable: no write at all (the fake file keeps its content).
        let done = m.join("done");
        put(&done, "cgroup.controllers", "cpu");
        put(&done, "cgroup.subtree_control", "cpu");
        put(&done, "cgroup.procs", "7");
        enable_controllers(m, &done, "/r").expect("already enabled");
        // An ancestor we do not own with processes: refused, named, nothing moved.
        let busy = m.join("busy");
        put(&busy, "cgroup.controllers", "cpu");
        put(&busy, "cgroup.subtree_control", "");
        put(&busy, "cgroup.procs", "42\n");
        let err = enable_controllers(m, &busy, "/r").expect_err("busy");
        assert!(err.to_string().contains("no-internal-processes"), "{err}");
        assert!(!busy.join(AGENT_LEAF).exists());
    }

    /// Removes a private root on drop, even when the test fails.
    struct Guard(CgroupLayout);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Err(e) = self.0.remove_all() {
                eprintln!("cleanup: {e}");
            }
        }
    }

    #[test]
    #[ignore = "needs root: creates cgroups under a private v1 root"]
    fn v1_ensure_and_remove_pod() {
        let layout = CgroupLayout::detect(&format!("/bosun-test-cg-{}", std::process::id()))
            .expect("detect");
        if layout.is_v2() {
            eprintln!("host is pure v2; v1 test skipped");
            return;
        }
        let g = Guard(layout.clone());
        let res = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(100),
        };
        let pod = layout
            .ensure_pod(QosClass::Burstable, "uid-1", &res)
            .expect("ensure");
        let rel = pod.trim_start_matches('/');
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(c).join(rel).join(f))
                .expect("read")
                .trim()
                .to_string()
        };
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        let half = CpuQuota {
            quota: 50_000,
            period: 100_000,
        };
        assert_eq!(layout.cpu_quota(&pod).expect("quota"), Some(half));
        layout.set_cpu_quota(&pod, None).expect("lift");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "-1");
        assert_eq!(layout.cpu_quota(&pod).expect("quota"), None);
        let tenth = CpuQuota {
            quota: 5_000,
            period: 50_000,
        };
        layout.set_cpu_quota(&pod, Some(tenth)).expect("set");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "50000");
        assert_eq!(layout.cpu_quota(&pod).expect("quota"), Some(tenth));
        layout.set_cpu_quota(&pod, Some(half)).expect("set back");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "100");
        assert!(!read("cpuset", "cpuset.cpus").is_empty());
        for c in V1_CONTROLLERS {
            assert!(
                Path::new("/sys/fs/cgroup").join(c).join(rel).is_dir(),
                "{c}"
            );
        }
        // An in-place resize writes new limits to the existing cgroup.
        let resized = Resources {
            cpu_shares: Some(256),
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            memory_limit: Some(48 << 20),
            pids_limit: Some(100),
        };
        layout.set_limits(&pod, &resized).expect("set limits");
        assert_eq!(read("cpu", "cpu.shares"), "256");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        // Idempotent, and limits follow changes.
        let res2 = Resources {
            memory_limit: Some(32 << 20),
            ..Resources::default()
        };
        layout
            .ensure_pod(QosClass::Burstable, "uid-1", &res2)
            .expect("ensure again");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "-1");
        assert_eq!(
            layout.list_pods(),
            vec![(QosClass::Burstable, "uid-1".into())]
        );
        // A leftover child cgroup (a container's) is removed too.
        std::fs::create_dir(Path::new("/sys/fs/cgroup/memory").join(rel).join("ctr"))
            .expect("child");
        // A process in the pod cgroup blocks removal and is named.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        std::fs::write(
            Path::new("/sys/fs/cgroup/pids")
                .join(rel)
                .join("cgroup.procs"),
            child.id().to_string(),
        )
        .expect("join");
        let err = layout
            .remove_pod(QosClass::Burstable, "uid-1")
            .expect_err("busy");
        assert!(err.to_string().contains("still has processes"), "{err}");
        let _ = child.kill();
        let _ = child.wait();
        layout
            .remove_pod(QosClass::Burstable, "uid-1")
            .expect("remove");
        layout
            .remove_pod(QosClass::Burstable, "uid-1")
            .expect("remove is idempotent");
        for c in V1_CONTROLLERS {
            assert!(
                !Path::new("/sys/fs/cgroup").join(c).join(rel).exists(),
                "{c}"
            );
        }
        assert!(layout.list_pods().is_empty());
        drop(g);
        assert!(!Path::new("/sys/fs/cgroup/memory")
            .join(layout.root().trim_start_matches('/'))
            .exists());
    }
}
