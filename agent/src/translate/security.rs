//! The security context of a container: privileges, capabilities, user and groups,
//! runAsNonRoot, masked paths, and the stop signal.

use bosun_runtime::{Security, User};
use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};

use super::*;

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows (0 to 40), in number order (the runtime owns the list).
pub use bosun_runtime::spec::ALL_CAPS as ALL_CAPABILITIES;

/// `NET_ADMIN`, `net_admin`, `CAP_NET_ADMIN` -> `CAP_NET_ADMIN` (None if unknown).
pub fn normalize_capability(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL_CAPABILITIES.iter().find(|c| &c[4..] == bare).copied()
}

/// The capability set from a container's add/drop lists, applied like containerd:
/// add ALL, then drop ALL, then each added one, then each dropped one.
pub fn capabilities(
    container: &str,
    add: &[String],
    drop: &[String],
) -> Result<Vec<String>, TranslateError> {
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let resolve = |names: &[String]| -> Result<Vec<&'static str>, TranslateError> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .map(|n| {
                normalize_capability(n).ok_or_else(|| TranslateError::Capability {
                    container: container.to_string(),
                    name: n.clone(),
                })
            })
            .collect()
    };
    let mut caps: Vec<&'static str> = DEFAULT_CAPABILITIES.to_vec();
    if add.iter().any(is_all) {
        caps = ALL_CAPABILITIES.to_vec();
    }
    if drop.iter().any(is_all) {
        caps.clear();
    }
    for c in resolve(add)? {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    let dropped = resolve(drop)?;
    caps.retain(|c| !dropped.contains(c));
    Ok(caps.into_iter().map(String::from).collect())
}

fn pod_name_for_errors(pod: &Pod) -> String {
    // The kubelet's format.Pod: name_namespace(uid).
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

fn id_u32(container: &str, field: &str, v: i64) -> Result<u32, TranslateError> {
    u32::try_from(v).map_err(|_| TranslateError::Security {
        container: container.to_string(),
        reason: format!("{field} {v} is out of range"),
    })
}

/// The user (container securityContext over pod securityContext, else the image's USER),
/// checked against runAsNonRoot like the kubelet's `verifyRunAsNonRoot`.
pub fn container_user(
    pod: &Pod,
    container: &Container,
    image_user: &str,
) -> Result<User, TranslateError> {
    let csc = container.security_context.as_ref();
    let psc = spec_of(pod).and_then(|s| s.security_context.as_ref());
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let name = &container.name;
    let gid = run_as_group
        .map(|g| id_u32(name, "runAsGroup", g))
        .transpose()?;
    let non_root_err = |what: String| TranslateError::NonRoot {
        container: name.clone(),
        reason: format!(
            "{what} (pod: {:?}, container: {name})",
            pod_name_for_errors(pod)
        ),
    };
    if let Some(uid) = run_as_user {
        let uid = id_u32(name, "runAsUser", uid)?;
        if non_root && uid == 0 {
            return Err(non_root_err(
                "container's runAsUser breaks non-root policy".into(),
            ));
        }
        return Ok(User::Id { uid, gid });
    }
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let numeric_uid = if user_part.is_empty() {
        Some(0)
    } else {
        user_part.parse::<u32>().ok()
    };
    if non_root {
        match numeric_uid {
            Some(0) => {
                return Err(non_root_err(
                    "container has runAsNonRoot and image will run as root".into(),
                ))
            }
            None => {
                return Err(non_root_err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({user_part}), cannot verify user is non-root"
                )))
            }
            Some(_) => {}
        }
    }
    let image_gid = group_part.map(|g| g.parse::<u32>().ok());
    match (numeric_uid, gid, image_gid) {
        (Some(uid), Some(gid), _) => Ok(User::Id {
            uid,
            gid: Some(gid),
        }),
        (Some(uid), None, None) => Ok(User::Id { uid, gid: None }),
        (Some(uid), None, Some(Some(g))) => Ok(User::Id { uid, gid: Some(g) }),
        (Some(_), None, Some(None)) => Ok(User::Name(image_user.to_string())),
        (None, Some(gid), _) => Ok(User::Name(format!("{user_part}:{gid}"))),
        (None, None, _) => Ok(User::Name(image_user.to_string())),
    }
}

/// Capabilities, privileges and /proc masking of a container.
pub fn container_security(pod: &Pod, container: &Container) -> Result<Security, TranslateError> {
    let name = &container.name;
    let default_sc = SecurityContext::default();
    let sc = container.security_context.as_ref().unwrap_or(&default_sc);
    let privileged = sc.privileged.unwrap_or(false);
    let add: Vec<String> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    let drop: Vec<String> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    let no_new_privileges = sc.allow_privilege_escalation == Some(false);
    if no_new_privileges {
        if privileged {
            return Err(TranslateError::Security {
                container: name.clone(),
                reason: "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
                    .into(),
            });
        }
        if add
            .iter()
            .any(|c| normalize_capability(c) == Some("CAP_SYS_ADMIN"))
        {
            return Err(TranslateError::Security {
                container: name.clone(),
                reason: "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN".into(),
            });
        }
    }
    let caps = if privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        capabilities(name, &add, &drop)?
    };
    // procMount: Unmasked counts only in a pod with its own user namespace (the API refuses it
    // otherwise; a static pod is not validated by the API).
    let unmasked = crate::security::userns::proc_unmasked(pod, container);
    let psc = spec_of(pod).and_then(|s| s.security_context.as_ref());
    let mut groups = Vec::new();
    if let Some(fs_group) = psc.and_then(|p| p.fs_group) {
        groups.push(id_u32(name, "fsGroup", fs_group)?);
    }
    for g in psc
        .and_then(|p| p.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
    {
        groups.push(id_u32(name, "supplementalGroups", *g)?);
    }
    Ok(Security {
        privileged,
        capabilities: caps,
        no_new_privileges: no_new_privileges && !privileged,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        mask_paths: !unmasked,
        supplemental_groups: groups,
    })
}

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` -> the signal number (Linux numbering).
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rtmin = 34;
    let rtmax = 64;
    if let Some(off) = name.strip_prefix("RTMIN+") {
        let n = rtmin + off.parse::<i32>().ok()?;
        return (n <= rtmax).then_some(n);
    }
    if let Some(off) = name.strip_prefix("RTMAX-") {
        let n = rtmax - off.parse::<i32>().ok()?;
        return (n >= rtmin).then_some(n);
    }
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        "RTMIN" => rtmin,
        "RTMAX" => rtmax,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::testing::*;

    #[test]
    fn capability_combos() {
        let caps = |add: &[&str], drop: &[&str]| capabilities("c", &v(add), &v(drop)).unwrap();
        assert_eq!(caps(&[], &[]), v(&DEFAULT_CAPABILITIES));
        let mut with_admin = v(&DEFAULT_CAPABILITIES);
        with_admin.push("CAP_NET_ADMIN".into());
        assert_eq!(caps(&["NET_ADMIN"], &[]), with_admin);
        assert_eq!(caps(&["CAP_NET_ADMIN"], &[]), with_admin);
        assert_eq!(caps(&["net_admin", "NET_ADMIN"], &[]), with_admin);
        assert_eq!(caps(&["CHOWN"], &[]), v(&DEFAULT_CAPABILITIES));
        assert_eq!(caps(&[], &["ALL"]), Vec::<String>::new());
        assert_eq!(caps(&[], &["all"]), Vec::<String>::new());
        assert_eq!(
            caps(&["NET_BIND_SERVICE"], &["ALL"]),
            v(&["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(caps(&["ALL"], &[]), v(&ALL_CAPABILITIES));
        let mut all_but_chown = v(&ALL_CAPABILITIES);
        all_but_chown.retain(|c| c != "CAP_CHOWN");
        assert_eq!(caps(&["ALL"], &["CHOWN"]), all_but_chown);
        assert_eq!(caps(&["ALL"], &["ALL"]), Vec::<String>::new());
        let mut without = v(&DEFAULT_CAPABILITIES);
        without.retain(|c| c != "CAP_NET_RAW" && c != "CAP_KILL");
        assert_eq!(caps(&[], &["NET_RAW", "CAP_KILL"]), without);
        // Drop wins over add of the same capability.
        assert_eq!(caps(&["SYS_TIME"], &["SYS_TIME"]), v(&DEFAULT_CAPABILITIES));
        assert!(matches!(
            capabilities("c", &v(&["NOT_A_CAP"]), &[]),
            Err(TranslateError::Capability { .. })
        ));
    }

    #[test]
    fn security_contexts() {
        let f = Fixture::new("name: app\nimage: x\nsecurityContext: {privileged: true}");
        let s = f.spec().unwrap().security;
        assert!(s.privileged && !s.mask_paths);
        assert_eq!(s.capabilities, v(&ALL_CAPABILITIES));

        let f = Fixture::new(
            "name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, procMount: Unmasked, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}",
        );
        let s = f.spec().unwrap().security;
        // Unmasked without hostUsers: false: the paths stay masked.
        assert!(s.no_new_privileges && s.readonly_rootfs && s.mask_paths && !s.privileged);
        assert_eq!(s.capabilities, v(&["CAP_NET_BIND_SERVICE"]));
        let mut f = f;
        f.pod.spec.as_mut().unwrap().host_users = Some(false);
        assert!(
            !f.spec().unwrap().security.mask_paths,
            "Unmasked with hostUsers: false"
        );

        let f = Fixture::new(
            "name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: false, privileged: true}",
        );
        let e = f.spec().unwrap_err().to_string();
        assert!(
            e.contains("cannot set `allowPrivilegeEscalation` to false and `privileged` to true"),
            "{e}"
        );
        let f = Fixture::new(
            "name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: false, capabilities: {add: [SYS_ADMIN]}}",
        );
        assert!(matches!(f.spec(), Err(TranslateError::Security { .. })));
        let f =
            Fixture::new("name: app\nimage: x\nsecurityContext: {allowPrivilegeEscalation: true}");
        assert!(!f.spec().unwrap().security.no_new_privileges);
    }

    #[test]
    fn users_and_groups() {
        let mut f = Fixture::new("name: app\nimage: x");
        f.pod.spec.as_mut().unwrap().security_context = Some(
            serde_yaml::from_str("{runAsUser: 1000, runAsGroup: 2000, fsGroup: 3000, supplementalGroups: [4000, 5000]}")
                .unwrap(),
        );
        let s = f.spec().unwrap();
        assert_eq!(
            s.user,
            User::Id {
                uid: 1000,
                gid: Some(2000)
            }
        );
        assert_eq!(s.security.supplemental_groups, vec![3000, 4000, 5000]);

        // Container securityContext overrides the pod's.
        let mut f = Fixture::new("name: app\nimage: x\nsecurityContext: {runAsUser: 7}");
        f.pod.spec.as_mut().unwrap().security_context =
            Some(serde_yaml::from_str("{runAsUser: 1000, runAsGroup: 2000}").unwrap());
        assert_eq!(
            f.spec().unwrap().user,
            User::Id {
                uid: 7,
                gid: Some(2000)
            }
        );

        // Image USER forms.
        let user_for = |image_user: &str, sc: &str| {
            let mut f = Fixture::new(&format!("name: app\nimage: x{sc}"));
            f.image.user = image_user.to_string();
            f.spec().map(|s| s.user)
        };
        assert_eq!(user_for("", ""), Ok(User::Id { uid: 0, gid: None }));
        assert_eq!(
            user_for("1000", ""),
            Ok(User::Id {
                uid: 1000,
                gid: None
            })
        );
        assert_eq!(
            user_for("1000:50", ""),
            Ok(User::Id {
                uid: 1000,
                gid: Some(50)
            })
        );
        assert_eq!(user_for("nobody", ""), Ok(User::Name("nobody".into())));
        assert_eq!(
            user_for("app:staff", ""),
            Ok(User::Name("app:staff".into()))
        );
        assert_eq!(
            user_for("1000:50", "\nsecurityContext: {runAsGroup: 9}"),
            Ok(User::Id {
                uid: 1000,
                gid: Some(9)
            })
        );
        assert_eq!(
            user_for("nobody", "\nsecurityContext: {runAsGroup: 9}"),
            Ok(User::Name("nobody:9".into()))
        );
    }

    #[test]
    fn run_as_non_root() {
        let nr = "\nsecurityContext: {runAsNonRoot: true}";
        let check = |image_user: &str, sc: &str| {
            let mut f = Fixture::new(&format!("name: app\nimage: x{sc}"));
            f.image.user = image_user.to_string();
            f.spec().map(|s| s.user)
        };
        assert_eq!(
            check("1000", nr),
            Ok(User::Id {
                uid: 1000,
                gid: None
            })
        );
        let e = check("", nr).unwrap_err().to_string();
        assert!(
            e.contains("container has runAsNonRoot and image will run as root"),
            "{e}"
        );
        let e = check("0:0", nr).unwrap_err().to_string();
        assert!(e.contains("image will run as root"), "{e}");
        let e = check("nobody", nr).unwrap_err().to_string();
        assert!(
            e.contains("image has non-numeric user (nobody), cannot verify user is non-root"),
            "{e}"
        );
        assert!(
            e.contains("web_ns(uid-1)") && e.contains("container: app"),
            "{e}"
        );
        let e = check(
            "1000",
            "\nsecurityContext: {runAsNonRoot: true, runAsUser: 0}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("container's runAsUser breaks non-root policy"),
            "{e}"
        );
        assert_eq!(
            check(
                "nobody",
                "\nsecurityContext: {runAsNonRoot: true, runAsUser: 5}"
            ),
            Ok(User::Id { uid: 5, gid: None })
        );
        // Pod-level runAsNonRoot applies too; the container can turn it off.
        let mut f = Fixture::new("name: app\nimage: x");
        f.pod.spec.as_mut().unwrap().security_context =
            Some(serde_yaml::from_str("{runAsNonRoot: true}").unwrap());
        assert!(matches!(f.spec(), Err(TranslateError::NonRoot { .. })));
        let mut f = Fixture::new("name: app\nimage: x\nsecurityContext: {runAsNonRoot: false}");
        f.pod.spec.as_mut().unwrap().security_context =
            Some(serde_yaml::from_str("{runAsNonRoot: true}").unwrap());
        assert!(f.spec().is_ok());
    }

    #[test]
    fn stop_signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("sigquit"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("RTMAX"), Some(64));
        assert_eq!(parse_signal("SIGWINCH"), Some(28));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
        let mut f = Fixture::new("name: app\nimage: x");
        f.image.stop_signal = Some("SIGQUIT".into());
        assert_eq!(f.spec().unwrap().stop_signal, 3);
        f.image.stop_signal = Some("SIGBOGUS".into());
        assert!(matches!(f.spec(), Err(TranslateError::StopSignal { .. })));
        // The container's lifecycle.stopSignal wins over the image's.
        let mut f = Fixture::new("name: app\nimage: x\nlifecycle: {stopSignal: SIGUSR1}");
        f.image.stop_signal = Some("SIGQUIT".into());
        assert_eq!(f.spec().unwrap().stop_signal, 10);
    }
}
