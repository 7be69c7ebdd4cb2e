//! AppArmor: whether the host enforces it, the built-in `bosun-default` profile (loaded with
//! `apparmor_parser` when it is missing) and the exec label a container gets.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Name of the built-in profile ([`DEFAULT_PROFILE`]).
pub const DEFAULT_PROFILE_NAME: &str = "bosun-default";
/// The built-in profile for `RuntimeDefault` (`runtime/profiles/README.md` says where it comes
/// from).
pub const DEFAULT_PROFILE: &str = include_str!("../profiles/apparmor-default");

/// The AppArmor profile a container's processes run under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppArmorProfile {
    /// No profile (the label the keeper has: unconfined).
    #[default]
    Unconfined,
    /// [`DEFAULT_PROFILE_NAME`], loaded on first use.
    RuntimeDefault,
    /// A profile already loaded in the kernel, by name.
    Localhost(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    /// containerd's wording for a Localhost profile the kernel does not have.
    #[error("apparmor profile not found {name}")]
    NotLoaded { name: String },
    #[error("apparmor is not enabled on the host: cannot apply profile {name:?}")]
    Disabled { name: String },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("load apparmor profile {name:?} with {parser}: {reason}")]
    Load {
        name: String,
        parser: PathBuf,
        reason: String,
    },
}

/// Where the host's AppArmor state is read (`/` on a node; a fake root in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host { root: "/".into() }
    }
}

impl Host {
    fn securityfs(&self) -> PathBuf {
        self.root.join("sys/kernel/security/apparmor")
    }

    /// Whether AppArmor is enabled, as the kubelet decides it (its fork of runc's
    /// `apparmor.IsEnabled`): the securityfs folder exists and the module's `enabled`
    /// parameter starts with `Y`.
    pub fn is_enabled(&self) -> bool {
        self.securityfs().exists()
            && std::fs::read(self.root.join("sys/module/apparmor/parameters/enabled"))
                .is_ok_and(|b| b.len() > 1 && b[0] == b'Y')
    }

    /// Whether a profile of this name is loaded (in any mode).
    pub fn is_loaded(&self, name: &str) -> Result<bool, AppArmorError> {
        let path = self.securityfs().join("profiles");
        let text = std::fs::read_to_string(&path).map_err(|source| AppArmorError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(profile_listed(&text, name))
    }
}

/// Whether AppArmor is enabled on this host, read once per process.
pub fn is_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| Host::default().is_enabled())
}

/// Lines of `/sys/kernel/security/apparmor/profiles` are `<name> (<mode>)`.
fn profile_listed(profiles: &str, name: &str) -> bool {
    profiles
        .lines()
        .any(|l| l.rsplit_once(" (").map(|(n, _)| n).unwrap_or(l).trim() == name)
}

/// The exec label of a container with `profile` on a host where AppArmor is `enabled` or not
/// (pure). `RuntimeDefault` on a host without AppArmor is no label, as with containerd;
/// `Localhost` there is an error (the kubelet refuses such pods before they get here).
pub fn label(profile: &AppArmorProfile, enabled: bool) -> Result<Option<String>, AppArmorError> {
    match profile {
        AppArmorProfile::Unconfined => Ok(None),
        AppArmorProfile::RuntimeDefault if !enabled => Ok(None),
        AppArmorProfile::RuntimeDefault => Ok(Some(DEFAULT_PROFILE_NAME.to_string())),
        AppArmorProfile::Localhost(name) if !enabled => {
            Err(AppArmorError::Disabled { name: name.clone() })
        }
        AppArmorProfile::Localhost(name) => Ok(Some(name.clone())),
    }
}

/// Makes sure the profile `profile` needs is loaded: loads [`DEFAULT_PROFILE`] with
/// `apparmor_parser -Kr` when it is missing; a missing Localhost profile is an error naming it.
/// Returns the label (see [`label`]). Runs `apparmor_parser`, so call it where blocking is fine.
pub fn prepare(host: &Host, profile: &AppArmorProfile) -> Result<Option<String>, AppArmorError> {
    let enabled = if host.root == Path::new("/") {
        is_enabled()
    } else {
        host.is_enabled()
    };
    let label = label(profile, enabled)?;
    let Some(name) = &label else {
        return Ok(None);
    };
    if host.is_loaded(name)? {
        return Ok(label);
    }
    if *profile != AppArmorProfile::RuntimeDefault {
        return Err(AppArmorError::NotLoaded { name: name.clone() });
    }
    load(name, DEFAULT_PROFILE)?;
    Ok(label)
}

/// Loads (or replaces) a profile from its text with `apparmor_parser -Kr` (no cache).
pub fn load(name: &str, text: &str) -> Result<(), AppArmorError> {
    let parser = parser();
    let fail = |reason: String| AppArmorError::Load {
        name: name.to_string(),
        parser: parser.clone(),
        reason,
    };
    let mut child = Command::new(&parser)
        .arg("-Kr")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(format!("write the profile: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `apparmor_parser` from the usual places (it lives in /sbin on Debian).
fn parser() -> PathBuf {
    ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap_or(Path::new("apparmor_parser"))
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(enabled: Option<&str>, profiles: &str) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host {
            root: dir.path().to_path_buf(),
        };
        if let Some(e) = enabled {
            std::fs::create_dir_all(host.securityfs()).expect("mkdir");
            std::fs::write(host.securityfs().join("profiles"), profiles).expect("write");
            let p = dir.path().join("sys/module/apparmor/parameters");
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("enabled"), e).expect("write");
        }
        (dir, host)
    }

    #[test]
    fn enabled_as_the_kubelet_reads_it() {
        assert!(fake_host(Some("Y\n"), "").1.is_enabled());
        assert!(!fake_host(Some("N\n"), "").1.is_enabled());
        assert!(
            !fake_host(Some("Y"), "").1.is_enabled(),
            "one byte is not enough"
        );
        assert!(!fake_host(None, "").1.is_enabled());
    }

    #[test]
    fn loaded_profiles_by_name() {
        let (_d, host) = fake_host(
            Some("Y\n"),
            "bosun-default (enforce)\n/usr/bin/man (complain)\nk8s-deny-write (enforce)\n",
        );
        assert!(host.is_loaded("bosun-default").expect("read"));
        assert!(host.is_loaded("/usr/bin/man").expect("read"));
        assert!(!host.is_loaded("k8s-deny").expect("read"));
        assert_eq!(
            prepare(&host, &AppArmorProfile::Localhost("k8s-deny-write".into())).expect("ok"),
            Some("k8s-deny-write".into())
        );
        assert!(matches!(
            prepare(&host, &AppArmorProfile::Localhost("nope".into())),
            Err(AppArmorError::NotLoaded { .. })
        ));
        assert_eq!(
            prepare(&host, &AppArmorProfile::RuntimeDefault).expect("loaded already"),
            Some(DEFAULT_PROFILE_NAME.into())
        );
        let (_d, off) = fake_host(None, "");
        assert!(matches!(
            prepare(&off, &AppArmorProfile::Localhost("x".into())),
            Err(AppArmorError::Disabled { .. })
        ));
    }

    #[test]
    fn labels() {
        use AppArmorProfile as P;
        let t = |p: &P, on: bool| label(p, on).ok().flatten();
        assert_eq!(t(&P::Unconfined, true), None);
        assert_eq!(
            t(&P::RuntimeDefault, true).as_deref(),
            Some("bosun-default")
        );
        assert_eq!(t(&P::RuntimeDefault, false), None);
        assert_eq!(t(&P::Localhost("p".into()), true).as_deref(), Some("p"));
        assert!(label(&P::Localhost("p".into()), false).is_err());
    }

    #[test]
    fn default_profile_is_named_and_closed() {
        assert!(DEFAULT_PROFILE.contains(&format!("profile {DEFAULT_PROFILE_NAME} ")));
        let opens = DEFAULT_PROFILE.matches('{').count();
        assert_eq!(opens, DEFAULT_PROFILE.matches('}').count());
        assert!(DEFAULT_PROFILE.contains("deny mount,"));
    }
}
