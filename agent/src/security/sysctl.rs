//! The kubelet's sysctl admission (`pkg/kubelet/sysctl`): the safe set at v1.36.5 (each from
//! the kernel version that namespaced it) plus the KubeletConfiguration's
//! `allowedUnsafeSysctls` (names or `prefix*` patterns, each known to be namespaced), a
//! network sysctl refused for a `hostNetwork` pod and an IPC one for a `hostIPC` pod. A refused
//! pod fails with reason `SysctlForbidden`.

use k8s_openapi::api::core::v1::Pod;

use super::Refusal;

/// `sysctl.ForbiddenReason`.
pub const FORBIDDEN_REASON: &str = "SysctlForbidden";

/// The safe sysctls and the kernel version from which each is namespaced.
pub const SAFE: &[(&str, (u32, u32))] = &[
    ("kernel.shm_rmid_forced", (0, 0)),
    ("net.ipv4.ip_local_port_range", (0, 0)),
    ("net.ipv4.tcp_syncookies", (0, 0)),
    ("net.ipv4.ping_group_range", (0, 0)),
    ("net.ipv4.ip_unprivileged_port_start", (0, 0)),
    ("net.ipv4.ip_local_reserved_ports", (3, 16)),
    ("net.ipv4.tcp_keepalive_time", (4, 5)),
    ("net.ipv4.tcp_fin_timeout", (4, 6)),
    ("net.ipv4.tcp_keepalive_intvl", (4, 5)),
    ("net.ipv4.tcp_keepalive_probes", (4, 5)),
    ("net.ipv4.tcp_rmem", (4, 15)),
    ("net.ipv4.tcp_wmem", (4, 15)),
];

/// The kubelet's `SysctlMaxLength`.
const MAX_LENGTH: usize = 253;
/// `policyvalidation.SysctlContainSlashPatternFmt`, as the kubelet prints it.
const PATTERN_FMT: &str = "([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*([a-z0-9][-_a-z0-9]*)?[a-z0-9*]";

/// The namespace a sysctl is known to live in (`k8s.io/component-helpers` `sysctl.Namespace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
}

impl Namespace {
    fn as_str(self) -> &'static str {
        match self {
            Namespace::Ipc => "IPC",
            Namespace::Net => "Net",
        }
    }
}

/// `NormalizeName`: a name whose first separator is `/` swaps `.` and `/`.
pub fn normalize(name: &str) -> String {
    bosun_runtime::sandbox::sysctl_normalize(name)
}

/// `namespaceOf`.
fn namespace_of(v: &str) -> Option<Namespace> {
    const IPC: &[&str] = &[
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.shm",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.msg",
    ];
    if IPC.contains(&v) {
        return Some(Namespace::Ipc);
    }
    if v.starts_with("net.") {
        return Some(Namespace::Net);
    }
    if v.starts_with("fs.mqueue.") {
        return Some(Namespace::Ipc);
    }
    None
}

/// `IsValidSysctlPattern`: segments of `[a-z0-9]([-_a-z0-9]*[a-z0-9])?` joined by `.` or `/`,
/// the last one `([a-z0-9][-_a-z0-9]*)?[a-z0-9*]`.
fn valid_pattern(p: &str) -> bool {
    if p.len() > MAX_LENGTH || p.is_empty() {
        return false;
    }
    let segs: Vec<&str> = p.split(['.', '/']).collect();
    let (last, rest) = segs.split_last().unwrap_or((&"", &[]));
    let an = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mid = |c: u8| an(c) || c == b'-' || c == b'_';
    let seg_ok = |s: &str| {
        let b = s.as_bytes();
        !b.is_empty() && an(b[0]) && an(b[b.len() - 1]) && b.iter().all(|c| mid(*c))
    };
    let last_ok = {
        let b = last.as_bytes();
        match b.split_last() {
            None => false,
            Some((end, head)) => {
                (an(*end) || *end == b'*')
                    && (head.is_empty() || (an(head[0]) && head.iter().all(|c| mid(*c))))
            }
        }
    };
    rest.iter().all(|s| seg_ok(s)) && last_ok
}

/// The allowed sysctls: names and `prefix*` patterns with their namespaces.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    names: Vec<(String, Namespace)>,
    prefixes: Vec<(String, Namespace)>,
}

impl Allowlist {
    /// The safe set for this kernel plus `allowed_unsafe` (`NewAllowlist`); the error is the
    /// kubelet's start-up error for a bad pattern.
    pub fn new(allowed_unsafe: &[String], kernel: (u32, u32)) -> Result<Allowlist, String> {
        let mut w = Allowlist::default();
        let safe = SAFE
            .iter()
            .filter(|(_, min)| kernel >= *min || kernel == (0, 0))
            .map(|(n, _)| n.to_string());
        for s in safe.chain(allowed_unsafe.iter().cloned()) {
            if !valid_pattern(&s) {
                return Err(format!(
                    "sysctl {s:?} must have at most {MAX_LENGTH} characters and match regex {PATTERN_FMT}"
                ));
            }
            let n = normalize(&s);
            let (prefix, prefixed) = match n.find('*') {
                Some(i) => (n[..i].to_string(), true),
                None => (n, false),
            };
            let Some(ns) = namespace_of(&prefix) else {
                return Err(format!(
                    "the sysctls {prefix:?} are not known to be namespaced"
                ));
            };
            if prefixed {
                w.prefixes.push((prefix, ns));
            } else {
                w.names.push((prefix, ns));
            }
        }
        Ok(w)
    }

    /// `validateSysctl`: the error is the kubelet's text.
    pub fn validate(&self, name: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let n = normalize(name);
        let ns = self
            .names
            .iter()
            .find(|(s, _)| *s == n)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| n.starts_with(p.as_str()))
            })
            .map(|(_, ns)| *ns);
        match ns {
            None => Err(format!("{n:?} not allowlisted")),
            Some(ns @ Namespace::Ipc) if host_ipc => Err(format!(
                "{n:?} not allowed with host {} enabled",
                ns.as_str()
            )),
            Some(ns @ Namespace::Net) if host_net => Err(format!(
                "{n:?} not allowed with host {} enabled",
                ns.as_str()
            )),
            Some(_) => Ok(()),
        }
    }

    /// The kubelet's admission of the pod's `securityContext.sysctls`.
    pub fn admit(&self, pod: &Pod) -> Result<(), Refusal> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let host_net = spec.host_network.unwrap_or(false);
        let host_ipc = spec.host_ipc.unwrap_or(false);
        for s in spec
            .security_context
            .as_ref()
            .and_then(|s| s.sysctls.as_ref())
            .into_iter()
            .flatten()
        {
            if let Err(e) = self.validate(&s.name, host_net, host_ipc) {
                return Err(Refusal {
                    reason: FORBIDDEN_REASON,
                    message: format!("forbidden sysctl: {e}"),
                });
            }
        }
        Ok(())
    }
}

/// The sysctls the sandbox writes (names normalised to dots, values as given).
pub fn pod_sysctls(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (normalize(&s.name), s.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, Sysctl};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn safe_set_unsafe_globs_and_host_namespaces() {
        let w = Allowlist::new(
            &s(&["net.core.*", "kernel.msg*", "fs/mqueue/msg_max"]),
            (6, 1),
        )
        .expect("allowlist");
        let cases: &[(&str, bool, bool, Result<(), &str>)] = &[
            ("net.ipv4.ip_local_port_range", false, false, Ok(())),
            ("net/ipv4/ip_local_port_range", false, false, Ok(())),
            ("kernel.shm_rmid_forced", false, false, Ok(())),
            ("net.ipv4.tcp_rmem", false, false, Ok(())),
            ("net.core.somaxconn", false, false, Ok(())),
            ("kernel.msgmax", false, false, Ok(())),
            ("fs.mqueue.msg_max", false, false, Ok(())),
            (
                "net.ipv4.ip_forward",
                false,
                false,
                Err("\"net.ipv4.ip_forward\" not allowlisted"),
            ),
            (
                "kernel.shmmax",
                false,
                false,
                Err("\"kernel.shmmax\" not allowlisted"),
            ),
            (
                "vm.swappiness",
                false,
                false,
                Err("\"vm.swappiness\" not allowlisted"),
            ),
            (
                "net.ipv4.tcp_syncookies",
                true,
                false,
                Err("\"net.ipv4.tcp_syncookies\" not allowed with host Net enabled"),
            ),
            (
                "kernel.shm_rmid_forced",
                false,
                true,
                Err("\"kernel.shm_rmid_forced\" not allowed with host IPC enabled"),
            ),
            (
                "net.core.somaxconn",
                true,
                false,
                Err("\"net.core.somaxconn\" not allowed with host Net enabled"),
            ),
            ("kernel.shm_rmid_forced", true, false, Ok(())),
        ];
        for (name, net, ipc, want) in cases {
            assert_eq!(
                w.validate(name, *net, *ipc),
                want.map_err(String::from),
                "{name} net={net} ipc={ipc}"
            );
        }
        // Without the unsafe list only the safe set passes.
        let safe = Allowlist::new(&[], (6, 1)).expect("safe");
        assert!(safe.validate("net.core.somaxconn", false, false).is_err());
        // On an old kernel the later-namespaced safe sysctls are not safe.
        let old = Allowlist::new(&[], (4, 4)).expect("old");
        assert!(old
            .validate("net.ipv4.tcp_keepalive_time", false, false)
            .is_err());
        assert!(old
            .validate("net.ipv4.ip_local_reserved_ports", false, false)
            .is_ok());
    }

    #[test]
    fn bad_patterns_stop_the_node_as_they_stop_the_kubelet() {
        let e = Allowlist::new(&s(&["vm.swappiness"]), (6, 1)).expect_err("not namespaced");
        assert_eq!(
            e,
            "the sysctls \"vm.swappiness\" are not known to be namespaced"
        );
        let e = Allowlist::new(&s(&["kernel.*"]), (6, 1)).expect_err("too wide");
        assert!(e.contains("not known to be namespaced"), "{e}");
        for bad in ["Net.core.x", "net..core", "net.*.x", "", "net.core.x-"] {
            let e = Allowlist::new(&s(&[bad]), (6, 1)).expect_err(bad);
            assert!(e.contains("must have at most 253 characters"), "{bad}: {e}");
        }
        assert!(Allowlist::new(&s(&["net.*", "kernel.sem", "kernel.shm*"]), (6, 1)).is_ok());
    }

    #[test]
    fn admission_refuses_with_the_kubelets_reason_and_message() {
        let pod = |names: &[&str], host_net: bool| Pod {
            spec: Some(PodSpec {
                host_network: Some(host_net),
                security_context: Some(PodSecurityContext {
                    sysctls: Some(
                        names
                            .iter()
                            .map(|n| Sysctl {
                                name: n.to_string(),
                                value: "1".into(),
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let w = Allowlist::new(&[], (6, 1)).expect("safe");
        assert_eq!(w.admit(&pod(&["net.ipv4.tcp_syncookies"], false)), Ok(()));
        assert_eq!(
            w.admit(&pod(
                &["net.ipv4.tcp_syncookies", "net.core.somaxconn"],
                false
            )),
            Err(Refusal {
                reason: "SysctlForbidden",
                message: "forbidden sysctl: \"net.core.somaxconn\" not allowlisted".into(),
            })
        );
        assert_eq!(
            w.admit(&pod(&["net/ipv4/tcp_syncookies"], true))
                .map_err(|r| r.message),
            Err(
                "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host Net enabled"
                    .into()
            )
        );
        let allowed = Allowlist::new(&s(&["net.core.somaxconn"]), (6, 1)).expect("unsafe");
        assert_eq!(allowed.admit(&pod(&["net.core.somaxconn"], false)), Ok(()));
        assert_eq!(
            pod_sysctls(&pod(&["net/ipv4/conf/eno2.100/rp_filter"], false)),
            [(
                "net.ipv4.conf.eno2/100.rp_filter".to_string(),
                "1".to_string()
            )]
        );
    }
}
