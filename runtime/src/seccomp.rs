//! seccomp filters: the built-in default profile, profiles read from files (Docker/moby or
//! OCI JSON), their resolution for one container (architecture, capabilities, kernel) into the
//! OCI `linux.seccomp` section, and their BPF programs, compiled once and kept on disk.
//!
//! Compiling a Docker-like default profile with libseccomp takes 10-30 ms on a 2-core node, as
//! long as the rest of a container start. The program only depends on the resolved filter, so
//! [`Filters`] compiles each distinct one once per boot (`<run_dir>/seccomp/<sha256>.bpf`,
//! named by the hash of the filter) and the keeper hands the program to libcontainer, which
//! loads it with seccomp(2) instead of compiling again (third_party/README.md).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use libcontainer::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The built-in profile for `RuntimeDefault` (`runtime/profiles/README.md` says where its list
/// comes from).
pub const DEFAULT_PROFILE: &str = include_str!("../profiles/seccomp-default.json");

/// The filter a container runs under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// No filter.
    #[default]
    Unconfined,
    /// The built-in profile ([`DEFAULT_PROFILE`]).
    RuntimeDefault,
    /// A profile in Docker/moby or OCI JSON format read from this file.
    Localhost(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile file does not exist (containerd's wording, which the kubelet shows).
    #[error("cannot load seccomp profile {path:?}: open {}: no such file or directory", path.display())]
    Missing { path: PathBuf },
    #[error("cannot load seccomp profile {path:?}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid seccomp profile {profile:?}: {reason}")]
    Invalid { profile: String, reason: String },
    #[error("compile seccomp profile {profile:?}: {reason}")]
    Compile { profile: String, reason: String },
    #[error("seccomp program {path}: {source}")]
    Program {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A filter resolved for one container and its compiled program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompiledFilter {
    /// The OCI `linux.seccomp` section.
    pub filter: LinuxSeccomp,
    /// Its BPF program (`struct sock_filter` array, as `seccomp_export_bpf` writes it).
    pub program: PathBuf,
}

/// A profile in Docker/moby JSON format (which also reads OCI `linux.seccomp` sections: those
/// use `architectures` and no `includes`/`excludes`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What a profile is resolved against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The architecture in Go's words, as profiles name it (`amd64`, `arm64`, ...).
    pub goarch: &'static str,
    /// The running kernel's major and minor version.
    pub kernel: (u32, u32),
}

impl Target {
    /// This host.
    pub fn host() -> Target {
        static KERNEL: OnceLock<(u32, u32)> = OnceLock::new();
        let kernel = *KERNEL.get_or_init(|| {
            nix::sys::utsname::uname()
                .ok()
                .and_then(|u| parse_kernel(&u.release().to_string_lossy()))
                .unwrap_or((0, 0))
        });
        Target {
            goarch: goarch(std::env::consts::ARCH),
            kernel,
        }
    }
}

/// Rust's architecture name -> Go's (what `includes.arches` says).
fn goarch(rust: &str) -> &'static str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "mips64" => "mips64le",
        "loongarch64" => "loong64",
        _ => "unknown",
    }
}

/// Go's architecture name -> the seccomp architecture `archMap` is keyed by.
fn native_seccomp_arch(goarch: &str) -> Option<&'static str> {
    Some(match goarch {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "386" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "mips64le" => "SCMP_ARCH_MIPSEL64",
        "loong64" => "SCMP_ARCH_LOONGARCH64",
        _ => return None,
    })
}

/// `6.18.44-fc` -> (6, 18).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

impl Profile {
    /// Parses a profile; `origin` names it in errors (its path).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Profile, SeccompError> {
        let invalid = |reason: String| SeccompError::Invalid {
            profile: origin.to_string(),
            reason,
        };
        let p: Profile = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if p.default_action.is_empty() {
            return Err(invalid("no defaultAction".into()));
        }
        if !p.architectures.is_empty() && !p.arch_map.is_empty() {
            return Err(invalid(
                "both 'architectures' and 'archMap' are specified, use either one".into(),
            ));
        }
        for s in &p.syscalls {
            if !s.name.is_empty() && !s.names.is_empty() {
                return Err(invalid(format!(
                    "syscall {:?}: use 'name' or 'names', not both",
                    s.name
                )));
            }
            for k in [&s.includes.min_kernel, &s.excludes.min_kernel]
                .into_iter()
                .flatten()
            {
                if parse_kernel(k).is_none() {
                    return Err(invalid(format!("invalid minKernel {k:?}")));
                }
            }
        }
        // Every action, operator, architecture and flag name must be one the OCI spec knows:
        // resolving against every capability on every arch includes every rule.
        for goarch in ["amd64", "arm64"] {
            p.resolve_unchecked(
                &crate::spec::ALL_CAPS.map(String::from),
                Target {
                    goarch,
                    kernel: (u32::MAX, u32::MAX),
                },
            )
            .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(p)
    }

    /// The built-in profile, parsed once per process.
    pub fn runtime_default() -> &'static Profile {
        static P: OnceLock<Profile> = OnceLock::new();
        P.get_or_init(|| {
            #[allow(clippy::expect_used)]
            Profile::parse(DEFAULT_PROFILE.as_bytes(), "RuntimeDefault")
                .expect("the built-in seccomp profile parses (tested)")
        })
    }

    /// Reads and parses a profile file.
    pub fn load(path: &Path) -> Result<Profile, SeccompError> {
        let bytes = read_profile(path)?;
        Profile::parse(&bytes, &path.display().to_string())
    }

    /// The OCI filter this profile gives a container with `caps` (its bounding set) on
    /// `target`, as moby and containerd resolve it: the native architecture and its
    /// sub-architectures from `archMap`; a rule only when all of `includes.caps` are held, the
    /// arch is among `includes.arches` and the kernel at least `includes.minKernel`, and none
    /// of `excludes` holds.
    pub fn resolve(&self, caps: &[String], target: Target) -> Result<LinuxSeccomp, SeccompError> {
        self.resolve_unchecked(caps, target)
            .map_err(|e| SeccompError::Invalid {
                profile: "profile".into(),
                reason: e.to_string(),
            })
    }

    fn resolve_unchecked(
        &self,
        caps: &[String],
        target: Target,
    ) -> Result<LinuxSeccomp, serde_json::Error> {
        let mut arches: Vec<String> = self.architectures.clone();
        if let Some(native) = native_seccomp_arch(target.goarch) {
            for m in self.arch_map.iter().filter(|m| m.architecture == native) {
                arches.push(m.architecture.clone());
                arches.extend(m.sub_architectures.iter().flatten().cloned());
            }
        }
        let has = |c: &String| caps.iter().any(|h| h == c);
        let kernel_at_least = |v: &str| parse_kernel(v).is_some_and(|k| target.kernel >= k);
        let mut syscalls = Vec::new();
        for s in &self.syscalls {
            let ex = &s.excludes;
            if ex.arches.iter().any(|a| a == target.goarch)
                || ex.caps.iter().any(has)
                || ex.min_kernel.as_deref().is_some_and(kernel_at_least)
            {
                continue;
            }
            let inc = &s.includes;
            if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.goarch))
                || !inc.caps.iter().all(has)
                || inc
                    .min_kernel
                    .as_deref()
                    .is_some_and(|v| !kernel_at_least(v))
            {
                continue;
            }
            let names = if s.name.is_empty() {
                s.names.clone()
            } else {
                vec![s.name.clone()]
            };
            let mut rule = json!({"names": names, "action": s.action});
            if let Some(e) = s.errno_ret {
                rule["errnoRet"] = json!(e);
            }
            if let Some(args) = &s.args {
                rule["args"] = json!(args);
            }
            syscalls.push(rule);
        }
        let mut doc = json!({
            "defaultAction": self.default_action,
            "architectures": arches,
            "syscalls": syscalls,
        });
        if let Some(e) = self.default_errno_ret {
            doc["defaultErrnoRet"] = json!(e);
        }
        if !self.flags.is_empty() {
            doc["flags"] = json!(self.flags);
        }
        if let Some(l) = &self.listener_path {
            doc["listenerPath"] = json!(l);
        }
        if let Some(l) = &self.listener_metadata {
            doc["listenerMetadata"] = json!(l);
        }
        serde_json::from_value(doc)
    }
}

fn read_profile(path: &Path) -> Result<Vec<u8>, SeccompError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => SeccompError::Missing {
            path: path.to_path_buf(),
        },
        _ => SeccompError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Compiles `filter` into a BPF program with libseccomp, the way libcontainer's
/// `initialize_seccomp` builds its filter (same actions, arches, rules and attributes), without
/// loading it.
pub fn compile(filter: &LinuxSeccomp, profile: &str) -> Result<Vec<u8>, SeccompError> {
    use libseccomp::{ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    let err = |reason: String| SeccompError::Compile {
        profile: profile.to_string(),
        reason,
    };
    let default = action(filter.default_action(), filter.default_errno_ret())
        .map_err(|e| err(e.to_string()))?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err(e.to_string()))?;
    for flag in filter.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(|e| err(format!("flag {flag:?}: {e}")))?;
    }
    for arch in filter.architectures().iter().flatten() {
        let a = scmp_arch(*arch);
        ctx.add_arch(a)
            .map_err(|e| err(format!("architecture {arch:?}: {e}")))?;
    }
    ctx.set_ctl_nnp(false).map_err(|e| err(e.to_string()))?;
    // A binary tree of syscall numbers instead of libseccomp's default list: the same
    // decisions, fewer instructions per call, and the kernel's attach (which runs the program
    // for every syscall number to fill its action cache) took 0.4 ms instead of 1.1 ms here.
    ctx.set_ctl_optimize(2).map_err(|e| err(e.to_string()))?;
    for s in filter.syscalls().iter().flatten() {
        let act = action(s.action(), s.errno_ret()).map_err(|e| err(e.to_string()))?;
        if act == default {
            continue;
        }
        for name in s.names() {
            // A name this libseccomp does not know is a syscall this kernel lacks.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let cmps: Vec<ScmpArgCompare> = s
                .args()
                .iter()
                .flatten()
                .map(|a| {
                    let op = match a.op() {
                        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                        LinuxSeccompOperator::ScmpCmpMaskedEq => {
                            ScmpCompareOp::MaskedEqual(a.value_two().unwrap_or(0))
                        }
                    };
                    ScmpArgCompare::new(a.index() as u32, op, a.value())
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            let duplicate = s.args().iter().flatten().any(|a| !seen.insert(a.index()));
            let added = if cmps.is_empty() {
                ctx.add_rule(act, sc)
            } else if duplicate {
                // libseccomp compares each argument once per rule: one rule per comparison.
                cmps.iter()
                    .try_for_each(|c| {
                        ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                            .map(|_| ())
                    })
                    .map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, sc, &cmps)
            };
            added.map_err(|e| err(format!("rule for {name}: {e}")))?;
        }
    }
    let mut tmp = memfd().map_err(|e| err(format!("memfd: {e}")))?;
    ctx.export_bpf(tmp.as_fd())
        .map_err(|e| err(format!("export: {e}")))?;
    let mut program = Vec::new();
    tmp.rewind()
        .and_then(|_| tmp.read_to_end(&mut program))
        .map_err(|e| err(format!("read the program back: {e}")))?;
    Ok(program)
}

fn memfd() -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(
        c"bosun-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    Ok(std::fs::File::from(fd))
}

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<libseccomp::ScmpAction, std::num::TryFromIntError> {
    use libseccomp::ScmpAction;
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno)?),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn scmp_arch(a: libcontainer::oci_spec::runtime::Arch) -> libseccomp::ScmpArch {
    use libcontainer::oci_spec::runtime::Arch as A;
    use libseccomp::ScmpArch as S;
    match a {
        A::ScmpArchNative => S::Native,
        A::ScmpArchX86 => S::X86,
        A::ScmpArchX86_64 => S::X8664,
        A::ScmpArchX32 => S::X32,
        A::ScmpArchArm => S::Arm,
        A::ScmpArchAarch64 => S::Aarch64,
        A::ScmpArchMips => S::Mips,
        A::ScmpArchMips64 => S::Mips64,
        A::ScmpArchMips64n32 => S::Mips64N32,
        A::ScmpArchMipsel => S::Mipsel,
        A::ScmpArchMipsel64 => S::Mipsel64,
        A::ScmpArchMipsel64n32 => S::Mipsel64N32,
        A::ScmpArchPpc => S::Ppc,
        A::ScmpArchPpc64 => S::Ppc64,
        A::ScmpArchPpc64le => S::Ppc64Le,
        A::ScmpArchS390 => S::S390,
        A::ScmpArchS390x => S::S390X,
        A::ScmpArchRiscv64 => S::Riscv64,
        A::ScmpArchParisc => S::Parisc,
        A::ScmpArchParisc64 => S::Parisc64,
        A::ScmpArchLoongarch64 => S::Loongarch64,
        A::ScmpArchM68k => S::M68k,
        A::ScmpArchSh => S::Sh,
        A::ScmpArchSheb => S::Sheb,
    }
}

/// A profile's identity (`runtime/default`, `localhost/<sha256 of the file>`) and the
/// capability set it was resolved for.
type FilterKey = (String, Vec<String>);

/// The filters of this node: each profile parsed once, each resolved filter compiled once
/// (per boot: the programs live in the run folder). Shared by every container start.
pub struct Filters {
    dir: PathBuf,
    target: Target,
    /// (profile identity, capabilities) -> compiled filter.
    done: Mutex<HashMap<FilterKey, Arc<CompiledFilter>>>,
}

impl Filters {
    /// Programs go to `dir` (`<run_dir>/seccomp`).
    pub fn new(dir: PathBuf) -> Filters {
        Filters {
            dir,
            target: Target::host(),
            done: Mutex::new(HashMap::new()),
        }
    }

    /// The compiled filter of `profile` for a container with `caps` (its final capability
    /// set), `None` for `Unconfined`. A Localhost file is read on every call (a fixed file
    /// takes effect on the next start) and resolved and compiled only when its content is
    /// new; errors name the file.
    pub fn get(
        &self,
        profile: &SeccompProfile,
        caps: &[String],
    ) -> Result<Option<Arc<CompiledFilter>>, SeccompError> {
        let (key, parsed, origin) = match profile {
            SeccompProfile::Unconfined => return Ok(None),
            SeccompProfile::RuntimeDefault => (
                "runtime/default".to_string(),
                None,
                "RuntimeDefault".to_string(),
            ),
            SeccompProfile::Localhost(path) => {
                let bytes = read_profile(path)?;
                let origin = path.display().to_string();
                let key = format!("localhost/{}", hex::encode(Sha256::digest(&bytes)));
                let cached = self.lookup(&key, caps);
                if let Some(c) = cached {
                    return Ok(Some(c));
                }
                (key, Some(Profile::parse(&bytes, &origin)?), origin)
            }
        };
        if let Some(c) = self.lookup(&key, caps) {
            return Ok(Some(c));
        }
        let profile_ref = parsed
            .as_ref()
            .unwrap_or_else(|| Profile::runtime_default());
        let filter = profile_ref
            .resolve_unchecked(caps, self.target)
            .map_err(|e| SeccompError::Invalid {
                profile: origin.clone(),
                reason: e.to_string(),
            })?;
        let compiled = Arc::new(self.program(filter, &origin)?);
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key, caps.to_vec()), Arc::clone(&compiled));
        Ok(Some(compiled))
    }

    /// The compiled filter of a built-in profile if it is compiled already (no file to read);
    /// `None` for Localhost profiles, which [`Filters::get`] reads every time.
    pub fn cached(&self, profile: &SeccompProfile, caps: &[String]) -> Option<Arc<CompiledFilter>> {
        match profile {
            SeccompProfile::RuntimeDefault => self.lookup("runtime/default", caps),
            _ => None,
        }
    }

    fn lookup(&self, key: &str, caps: &[String]) -> Option<Arc<CompiledFilter>> {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key.to_string(), caps.to_vec()))
            .cloned()
    }

    /// The program of `filter`: the one on disk if this boot compiled it already, else
    /// compiled now and written (atomically: concurrent starts may both compile it).
    fn program(&self, filter: LinuxSeccomp, origin: &str) -> Result<CompiledFilter, SeccompError> {
        let canonical = serde_json::to_vec(&filter).map_err(|e| SeccompError::Invalid {
            profile: origin.to_string(),
            reason: e.to_string(),
        })?;
        let path = self
            .dir
            .join(format!("{}.bpf", hex::encode(Sha256::digest(&canonical))));
        let fail = |source| SeccompError::Program {
            path: path.clone(),
            source,
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > 0 && m.len().is_multiple_of(8) => {}
            _ => {
                let program = compile(&filter, origin)?;
                std::fs::create_dir_all(&self.dir).map_err(fail)?;
                crate::keeper::write_atomic(&path, &program).map_err(fail)?;
            }
        }
        Ok(CompiledFilter {
            filter,
            program: path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::Arch;

    const AMD64: Target = Target {
        goarch: "amd64",
        kernel: (6, 1),
    };
    const ARM64: Target = Target {
        goarch: "arm64",
        kernel: (6, 1),
    };

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    /// Every syscall name the filter allows unconditionally.
    fn allowed(f: &LinuxSeccomp) -> Vec<String> {
        f.syscalls()
            .iter()
            .flatten()
            .filter(|s| {
                s.action() == LinuxSeccompAction::ScmpActAllow
                    && s.args().as_ref().is_none_or(|a| a.is_empty())
            })
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_denies_with_eperm_on_both_arches() {
        let p = Profile::runtime_default();
        let f = p.resolve(&caps(&["CAP_CHOWN"]), AMD64).expect("resolve");
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(f.default_errno_ret(), Some(libc::EPERM as u32));
        assert_eq!(
            f.architectures().clone().unwrap_or_default(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let a = allowed(&f);
        for name in [
            "read",
            "write",
            "execve",
            "arch_prctl",
            "modify_ldt",
            "ptrace",
        ] {
            assert!(a.iter().any(|n| n == name), "{name} allowed on amd64");
        }
        for name in [
            "mount", "unshare", "setns", "keyctl", "add_key", "reboot", "bpf",
        ] {
            assert!(!a.iter().any(|n| n == name), "{name} denied");
        }
        let f = p.resolve(&caps(&["CAP_CHOWN"]), ARM64).expect("resolve");
        assert_eq!(
            f.architectures().clone().unwrap_or_default(),
            [Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
        let a = allowed(&f);
        assert!(a.iter().any(|n| n == "set_tls"), "arm rules on arm64");
        assert!(
            !a.iter().any(|n| n == "arch_prctl"),
            "no x86 rules on arm64"
        );
    }

    #[test]
    fn capabilities_unlock_what_the_default_profile_gives_them() {
        let p = Profile::runtime_default();
        let plain = p.resolve(&caps(&[]), AMD64).expect("resolve");
        let admin = p
            .resolve(&caps(&["CAP_SYS_ADMIN"]), AMD64)
            .expect("resolve");
        let a = allowed(&admin);
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "sethostname",
        ] {
            assert!(a.iter().any(|n| n == name), "{name} with CAP_SYS_ADMIN");
            assert!(!allowed(&plain).iter().any(|n| n == name), "{name} without");
        }
        // Without CAP_SYS_ADMIN: clone only without namespace flags, clone3 says ENOSYS.
        let clone = plain
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone"])
            .expect("clone rule");
        let arg = &clone.args().as_ref().expect("args")[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(arg.value(), 0x7E02_0000);
        let clone3 = plain
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone3"])
            .expect("clone3 rule");
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));
        assert!(!admin
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActErrno));
        for (cap, name) in [
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_CHROOT", "chroot"),
            ("CAP_SYS_MODULE", "init_module"),
            ("CAP_SYS_TIME", "settimeofday"),
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
            ("CAP_BPF", "bpf"),
        ] {
            let f = p.resolve(&caps(&[cap]), AMD64).expect("resolve");
            assert!(allowed(&f).iter().any(|n| n == name), "{cap} gives {name}");
        }
        // The minimum kernel: ptrace only from 4.8 on.
        let old = p
            .resolve(
                &caps(&[]),
                Target {
                    goarch: "amd64",
                    kernel: (4, 4),
                },
            )
            .expect("resolve");
        assert!(!allowed(&old).iter().any(|n| n == "ptrace"));
    }

    #[test]
    fn oci_and_docker_profiles_parse_and_bad_ones_name_the_file() {
        let oci = br#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
        let f = Profile::parse(oci, "/x/deny-mkdir.json")
            .expect("parse")
            .resolve(&[], AMD64)
            .expect("resolve");
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActAllow);
        let s = &f.syscalls().as_ref().expect("syscalls")[0];
        assert_eq!(s.names(), &["mkdir", "mkdirat"]);
        assert_eq!(s.errno_ret(), Some(13));
        let single = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO"}]}"#;
        let f = Profile::parse(single, "p")
            .expect("parse")
            .resolve(&[], AMD64)
            .expect("resolve");
        assert_eq!(f.syscalls().as_ref().expect("s")[0].names(), &["mkdir"]);

        for (bad, want) in [
            (&b"{not json"[..], "key must be a string"),
            (br#"{"syscalls":[]}"#, "defaultAction"),
            (br#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "SCMP_ACT_NOPE"),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
                "archMap",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_WHAT"}]}]}"#,
                "SCMP_CMP_WHAT",
            ),
            (
                br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#,
                "not both",
            ),
        ] {
            let e = Profile::parse(bad, "/var/lib/kubelet/seccomp/bad.json")
                .expect_err("invalid")
                .to_string();
            assert!(e.contains("/var/lib/kubelet/seccomp/bad.json"), "{e}");
            assert!(e.contains(want), "{e} mentions {want}");
        }
    }

    #[test]
    fn loaders_give_typed_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.json");
        let e = Profile::load(&missing).expect_err("missing");
        assert!(matches!(e, SeccompError::Missing { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&missing.display().to_string()));
        assert!(msg.contains("no such file or directory"), "{msg}");
        let unreadable = dir.path().join("a-folder.json");
        std::fs::create_dir(&unreadable).expect("mkdir");
        assert!(matches!(
            Profile::load(&unreadable),
            Err(SeccompError::Unreadable { .. })
        ));
        let invalid = dir.path().join("bad.json");
        std::fs::write(&invalid, "[]").expect("write");
        assert!(matches!(
            Profile::load(&invalid),
            Err(SeccompError::Invalid { .. })
        ));
    }

    #[test]
    fn filters_compile_once_and_follow_a_fixed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let filters = Filters::new(dir.path().join("seccomp"));
        assert!(filters
            .get(&SeccompProfile::Unconfined, &[])
            .expect("unconfined")
            .is_none());
        let c = caps(&["CAP_CHOWN"]);
        let a = filters
            .get(&SeccompProfile::RuntimeDefault, &c)
            .expect("default")
            .expect("filter");
        let program = std::fs::read(&a.program).expect("program");
        assert!(!program.is_empty() && program.len().is_multiple_of(8));
        let b = filters
            .get(&SeccompProfile::RuntimeDefault, &c)
            .expect("default")
            .expect("filter");
        assert!(Arc::ptr_eq(&a, &b), "resolved and compiled once");
        // Another capability set: another filter, another program.
        let admin = filters
            .get(&SeccompProfile::RuntimeDefault, &caps(&["CAP_SYS_ADMIN"]))
            .expect("default")
            .expect("filter");
        assert_ne!(admin.program, a.program);
        // A new Filters (an agent restart) finds the program on disk.
        let again = Filters::new(dir.path().join("seccomp"))
            .get(&SeccompProfile::RuntimeDefault, &c)
            .expect("default")
            .expect("filter");
        assert_eq!(again.program, a.program);

        let file = dir.path().join("p.json");
        let local = SeccompProfile::Localhost(file.clone());
        assert!(matches!(
            filters.get(&local, &c),
            Err(SeccompError::Missing { .. })
        ));
        std::fs::write(&file, "{").expect("write");
        assert!(matches!(
            filters.get(&local, &c),
            Err(SeccompError::Invalid { .. })
        ));
        std::fs::write(
            &file,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("write");
        let l = filters.get(&local, &c).expect("fixed").expect("filter");
        assert_eq!(l.filter.default_action(), LinuxSeccompAction::ScmpActAllow);
    }

    /// Forks; the child runs `f` and exits with its result. The child of the multi-threaded
    /// test harness only makes system calls and uses glibc's fork-safe allocator.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` and leaves with _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = f();
                // SAFETY: _exit ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                    nix::sys::wait::WaitStatus::Exited(_, c) => c,
                    other => panic!("child: {other:?}"),
                }
            }
        }
    }

    /// errno of unshare(CLONE_NEWUSER) (0 when it worked).
    fn unshare_user() -> i32 {
        // SAFETY: unshare with a flag; it only changes this (child) process.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    /// The program compiled here is what libcontainer loads (through `set_precompiled`) and the
    /// kernel enforces: `Seccomp: 2`, a call the profile denies fails with EPERM, an allowed one
    /// works. No privilege needed: with no_new_privs any process may load a filter.
    #[test]
    fn the_compiled_program_is_loaded_and_enforced() {
        let filter = Profile::runtime_default()
            .resolve(&caps(&["CAP_CHOWN"]), Target::host())
            .expect("resolve");
        let program = compile(&filter, "RuntimeDefault").expect("compile");
        libcontainer::seccomp::set_precompiled(filter.clone(), &program).expect("register");
        let load_and_unshare = |f: &LinuxSeccomp| {
            let f = f.clone();
            in_child(move || {
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                if libcontainer::seccomp::initialize_seccomp(&f).is_err() {
                    return 100;
                }
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                if !status
                    .lines()
                    .any(|l| l.split_whitespace().eq(["Seccomp:", "2"]))
                {
                    return 101;
                }
                unshare_user()
            })
        };
        assert_eq!(
            load_and_unshare(&filter),
            libc::EPERM,
            "unshare(CLONE_NEWUSER) under RuntimeDefault"
        );
        // The registered program is what is loaded: registered under the default filter, a
        // program that says EACCES for unshare makes the default filter say EACCES.
        let other = Profile::parse(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["unshare"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
            "t",
        )
        .expect("parse")
        .resolve(&[], Target::host())
        .expect("resolve");
        let other_program = compile(&other, "t").expect("compile");
        libcontainer::seccomp::set_precompiled(filter.clone(), &other_program).expect("register");
        assert_eq!(
            load_and_unshare(&filter),
            libc::EACCES,
            "the registered program"
        );
        // A filter other than the registered one: libcontainer compiles it itself.
        libcontainer::seccomp::set_precompiled(filter.clone(), &program).expect("register");
        let code = load_and_unshare(&other);
        assert_eq!(
            code,
            libc::EACCES,
            "the uncompiled filter, compiled by libcontainer"
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("x"), None);
    }
}
