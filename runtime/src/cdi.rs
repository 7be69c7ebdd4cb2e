//! The Container Device Interface (CDI): device specs vendors write as JSON or YAML files, and
//! the edits a container gets for each device it is given by its fully qualified name
//! `vendor.com/class=name`.
//!
//! Spec files are every `*.json` and `*.yaml` file directly in the spec folders, `/etc/cdi`
//! (static specs) and `/var/run/cdi` (generated ones). A later folder takes precedence: a device
//! defined in both is the later folder's; a device defined twice in the same folder is a
//! conflict and neither is used. A file that does not parse or validate is skipped (its error
//! kept) and the others still count. Spec versions 0.1.0 to 1.1.0 are accepted, each checked
//! against the fields it uses, as the reference implementation does.
//!
//! [`Registry::load`] reads the folders; [`Registry::resolve`] turns a container's device names
//! into the edits to make ([`ContainerEdits`]: the spec-wide edits of every spec involved once,
//! then each device's, in the order asked), with the device nodes completed from the host
//! ([`ContainerEdits::complete`]); [`apply`] makes them in an OCI `config.json` document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where static specs live.
pub const STATIC_DIR: &str = "/etc/cdi";
/// Where generated specs live (drivers write theirs here).
pub const DYNAMIC_DIR: &str = "/var/run/cdi";

/// The spec folders in order of precedence (later wins).
pub fn default_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from(STATIC_DIR), PathBuf::from(DYNAMIC_DIR)]
}

/// The spec versions accepted (the current release of the spec is 1.1.0).
pub const VERSIONS: [&str; 10] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// The OCI hooks a spec may name.
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A CDI spec file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits made for any device of the spec.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// Edits to a container's OCI spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=value`, set in the process environment (replacing a variable of the same name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    /// Host network interfaces moved into the container's network namespace (1.1.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<NetDevice>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Intel RDT settings (0.7.0); the last device's wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<IntelRdt>,
    /// Supplementary groups of the container's process (0.7.0); 0 is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

/// A device node made in the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host (0.5.0); `path` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `b`, `c`, `u` or `p`; read from the host node when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub major: i64,
    #[serde(default)]
    pub minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// devices-cgroup access (`rwm` when unset, `none` for no rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount into the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// The filesystem type (0.4.0); `bind` when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// An OCI hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    /// One of [`HOOK_NAMES`].
    pub hook_name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Intel RDT settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IntelRdt {
    #[serde(default, rename = "closID", skip_serializing_if = "Option::is_none")]
    pub clos_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3_cache_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bw_schema: Option<String>,
    /// 1.1.0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemata: Vec<String>,
    /// 1.1.0.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_monitoring: bool,
    /// 0.7.0 to 1.0.0 only.
    #[serde(default, rename = "enableCMT", skip_serializing_if = "is_false")]
    pub enable_cmt: bool,
    /// 0.7.0 to 1.0.0 only.
    #[serde(default, rename = "enableMBM", skip_serializing_if = "is_false")]
    pub enable_mbm: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A host network interface moved into the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetDevice {
    pub host_interface_name: String,
    /// Its name in the container.
    pub name: String,
}

/// A spec file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read CDI spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse CDI spec {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid CDI spec {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Two specs of the same folder define the same device: neither is used.
    #[error("conflicting CDI device {device} (specs {first}, {second})")]
    Conflict {
        device: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// A container's CDI devices could not be given to it.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// No valid spec defines these devices (the spec files' own errors are logged where the
    /// registry is loaded).
    #[error("unresolvable CDI devices {}", devices.join(", "))]
    Unresolvable { devices: Vec<String> },
    /// A device node of a spec cannot be made from the host's node.
    #[error("CDI device {device}: host device {host_path}: {reason}")]
    DeviceNode {
        device: String,
        host_path: String,
        reason: String,
    },
}

/// A qualified device name that is not `vendor/class=name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CDI device name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: String,
}

/// Splits `vendor.com/class=name` into its vendor, class and name, each validated.
pub fn parse_qualified_name(qualified: &str) -> Result<(&str, &str, &str), NameError> {
    let err = |reason: String| NameError {
        name: qualified.to_string(),
        reason,
    };
    let (kind, name) = qualified
        .split_once('=')
        .ok_or_else(|| err("missing '=' between class and device name".into()))?;
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| err("missing '/' between vendor and class".into()))?;
    validate_vendor_or_class("vendor", vendor).map_err(err)?;
    validate_vendor_or_class("class", class).map_err(err)?;
    validate_device_name(name).map_err(err)?;
    Ok((vendor, class, name))
}

fn validate_vendor_or_class(what: &str, s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return Err(format!("empty {what}"));
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!("{what} {s:?} should start with a letter"));
    }
    if let Some(c) = inner(b)
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
    {
        return Err(format!(
            "invalid character {:?} in {what} {s:?}",
            *c as char
        ));
    }
    if !last.is_ascii_alphanumeric() {
        return Err(format!("{what} {s:?} should end with a letter or digit"));
    }
    Ok(())
}

/// The bytes between the first and the last.
fn inner(b: &[u8]) -> &[u8] {
    b.get(1..b.len().saturating_sub(1)).unwrap_or_default()
}

fn validate_device_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return Err("empty device name".into());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "device name {s:?} should start with a letter or digit"
        ));
    }
    if b.len() > 1 {
        if let Some(c) = inner(b)
            .iter()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':')))
        {
            return Err(format!(
                "invalid character {:?} in device name {s:?}",
                *c as char
            ));
        }
        if !last.is_ascii_alphanumeric() {
            return Err(format!(
                "device name {s:?} should end with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// A version as three numbers (`0.6.0`, `v1.1.0`); `None` when it is not one of [`VERSIONS`].
fn version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    if !VERSIONS.contains(&v) {
        return None;
    }
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

impl Spec {
    /// Parses a spec file's contents (JSON or YAML; unknown fields are errors).
    pub fn parse(data: &[u8]) -> Result<Spec, serde_yaml::Error> {
        serde_yaml::from_slice(data)
    }

    /// The vendor and class of `kind` (`vendor.com/class`).
    pub fn vendor_class(&self) -> Option<(&str, &str)> {
        self.kind
            .split_once('/')
            .filter(|(v, c)| !v.is_empty() && !c.is_empty())
    }

    /// The lowest version whose fields this spec uses.
    pub fn minimum_version(&self) -> (u32, u32, u32) {
        let edits = || {
            std::iter::once(&self.container_edits)
                .chain(self.devices.iter().map(|d| &d.container_edits))
        };
        let rdt = || edits().filter_map(|e| e.intel_rdt.as_ref());
        if edits().any(|e| !e.net_devices.is_empty())
            || rdt().any(|r| !r.schemata.is_empty() || r.enable_monitoring)
        {
            return (1, 1, 0);
        }
        if rdt().next().is_some() || edits().any(|e| !e.additional_gids.is_empty()) {
            return (0, 7, 0);
        }
        let dotted_class = self.vendor_class().is_some_and(|(_, c)| c.contains('.'));
        if !self.annotations.is_empty()
            || self.devices.iter().any(|d| !d.annotations.is_empty())
            || dotted_class
        {
            return (0, 6, 0);
        }
        if self
            .devices
            .iter()
            .any(|d| d.name.as_bytes().first().is_some_and(u8::is_ascii_digit))
            || edits().any(|e| e.device_nodes.iter().any(|n| n.host_path.is_some()))
        {
            return (0, 5, 0);
        }
        if edits().any(|e| e.mounts.iter().any(|m| m.kind.is_some())) {
            return (0, 4, 0);
        }
        (0, 3, 0)
    }

    /// Checks the spec as the reference implementation does: version, kind, edits, devices.
    pub fn validate(&self) -> Result<(), String> {
        let Some(v) = version(&self.cdi_version) else {
            return Err(format!("invalid version {:?}", self.cdi_version));
        };
        let min = self.minimum_version();
        if min > v {
            return Err(format!(
                "the spec version must be at least v{}.{}.{}",
                min.0, min.1, min.2
            ));
        }
        let Some((vendor, class)) = self.vendor_class() else {
            return Err(format!("kind {:?} is not vendor/class", self.kind));
        };
        validate_vendor_or_class("vendor", vendor)?;
        validate_vendor_or_class("class", class)?;
        self.container_edits.validate(v)?;
        if self.devices.is_empty() {
            return Err("invalid spec, no devices".into());
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.devices {
            validate_device_name(&d.name).map_err(|e| format!("device {:?}: {e}", d.name))?;
            if d.container_edits.is_empty() {
                return Err(format!("device {:?}: empty container edits", d.name));
            }
            d.container_edits
                .validate(v)
                .map_err(|e| format!("device {:?}: {e}", d.name))?;
            if !seen.insert(d.name.as_str()) {
                return Err(format!("invalid spec, multiple device {:?}", d.name));
            }
        }
        Ok(())
    }
}

fn validate_env(env: &[String]) -> Result<(), String> {
    match env.iter().find(|v| v.find('=').is_none_or(|i| i == 0)) {
        Some(v) => Err(format!("invalid environment variable {v:?}")),
        None => Ok(()),
    }
}

impl ContainerEdits {
    /// Whether there is nothing to do (valid for a spec's edits, not for a device's).
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.net_devices.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
    }

    fn validate(&self, version: (u32, u32, u32)) -> Result<(), String> {
        validate_env(&self.env).map_err(|e| format!("invalid container edits: {e}"))?;
        for d in &self.device_nodes {
            if d.path.is_empty() {
                return Err("invalid (empty) device path".into());
            }
            if let Some(k) = &d.kind {
                if !matches!(k.as_str(), "b" | "c" | "u" | "p") {
                    return Err(format!("device {:?}: invalid type {k:?}", d.path));
                }
            }
            if d.major < 0 || d.minor < 0 {
                return Err(format!(
                    "device {:?}: invalid (negative) device number {}:{}",
                    d.path, d.major, d.minor
                ));
            }
            if let Some(p) = &d.permissions {
                if p != "none" && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                    return Err(format!("device {:?}: invalid permissions {p:?}", d.path));
                }
            }
        }
        for h in &self.hooks {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(format!("invalid hook name {:?}", h.hook_name));
            }
            if h.path.is_empty() {
                return Err(format!("invalid hook {:?} with empty path", h.hook_name));
            }
            validate_env(&h.env).map_err(|e| format!("invalid hook {:?}: {e}", h.hook_name))?;
        }
        for m in &self.mounts {
            if m.host_path.is_empty() {
                return Err("invalid mount, empty host path".into());
            }
            if m.container_path.is_empty() {
                return Err("invalid mount, empty container path".into());
            }
        }
        if let Some(r) = &self.intel_rdt {
            if let Some(c) = &r.clos_id {
                if c != "/" && (c.len() >= 4096 || c == "." || c == ".." || c.contains(['/', '\n']))
                {
                    return Err("invalid ClosID".into());
                }
            }
            if version >= (1, 1, 0) && (r.enable_cmt || r.enable_mbm) {
                return Err(format!(
                    "intelRdt.enableCMT and enableMBM are not valid for CDI spec version {}.{}.{}",
                    version.0, version.1, version.2
                ));
            }
        }
        let mut hosts = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for n in &self.net_devices {
            if n.host_interface_name.is_empty() {
                return Err("invalid linux net device, empty HostInterfaceName".into());
            }
            if n.name.is_empty() {
                return Err("invalid linux net device, empty Name".into());
            }
            if !hosts.insert(&n.host_interface_name) {
                return Err(format!(
                    "invalid linux net device, duplicate HostInterfaceName {:?}",
                    n.host_interface_name
                ));
            }
            if !names.insert(&n.name) {
                return Err(format!(
                    "invalid linux net device, duplicate Name {:?}",
                    n.name
                ));
            }
        }
        Ok(())
    }

    /// Appends `other`'s edits (its Intel RDT settings replace these).
    pub fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.net_devices.extend(other.net_devices.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        if other.intel_rdt.is_some() {
            self.intel_rdt = other.intel_rdt.clone();
        }
        self.additional_gids
            .extend(other.additional_gids.iter().copied());
    }

    /// Completes every device node: its host path, and its type and numbers when the spec
    /// leaves them out (from `stat` of the host node, which must then be a device or a fifo of
    /// the type given). `device` names the CDI device in errors.
    fn complete(&mut self, device: &str, stat: Stat) -> Result<(), InjectError> {
        for n in &mut self.device_nodes {
            complete_node(n, device, stat)?;
        }
        Ok(())
    }
}

/// Type, major and minor of a host device node.
type Stat = fn(&Path) -> Result<(String, i64, i64), String>;

/// Type, major and minor of a host device node (not following a symlink).
fn host_node(path: &Path) -> Result<(String, i64, i64), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let ft = md.file_type();
    let kind = if ft.is_block_device() {
        "b"
    } else if ft.is_char_device() {
        "c"
    } else if ft.is_fifo() {
        "p"
    } else {
        return Err("not a device node".into());
    };
    let rdev = md.rdev();
    Ok((
        kind.to_string(),
        i64::from(nix::sys::stat::major(rdev) as u32),
        i64::from(nix::sys::stat::minor(rdev) as u32),
    ))
}

fn complete_node(n: &mut DeviceNode, device: &str, stat: Stat) -> Result<(), InjectError> {
    let host_path = n.host_path.get_or_insert_with(|| n.path.clone()).clone();
    if n.kind.as_deref().is_some_and(|k| n.major != 0 || k == "p") {
        return Ok(());
    }
    let fail = |reason: String| InjectError::DeviceNode {
        device: device.to_string(),
        host_path: host_path.clone(),
        reason,
    };
    let (kind, major, minor) = stat(Path::new(&host_path)).map_err(fail)?;
    match n.kind.as_deref() {
        None => n.kind = Some(kind.clone()),
        // `u` (unbuffered) is a character device on the host.
        Some(k) if k == kind || (k == "u" && kind == "c") => {}
        Some(k) => {
            return Err(fail(format!(
                "host type mismatch: the spec says {k}, the host node is {kind}"
            )))
        }
    }
    if n.major == 0 && kind != "p" {
        n.major = major;
        n.minor = minor;
    }
    Ok(())
}

/// A spec as loaded, with where it came from.
#[derive(Clone, Debug)]
struct Loaded {
    spec: Spec,
    path: PathBuf,
    priority: usize,
}

/// The devices of the spec folders.
#[derive(Debug, Default)]
pub struct Registry {
    specs: Vec<Loaded>,
    /// Qualified name -> (spec, device index in it).
    devices: BTreeMap<String, (usize, usize)>,
    errors: Vec<LoadError>,
}

impl Registry {
    /// Reads every `*.json` and `*.yaml` file directly in `dirs` (missing folders are empty;
    /// sub-folders are skipped). Later folders take precedence.
    pub fn load<P: AsRef<Path>>(dirs: &[P]) -> Registry {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (priority, dir) in dirs.iter().enumerate() {
            let dir = dir.as_ref();
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml")
                    )
                })
                .collect();
            names.sort();
            for path in names {
                match std::fs::read(&path) {
                    Ok(data) => files.push((path, priority, data)),
                    Err(source) => errors.push(LoadError::Read { path, source }),
                }
            }
        }
        let mut reg = Registry::from_files(files);
        errors.append(&mut reg.errors);
        reg.errors = errors;
        reg
    }

    /// Builds the registry from file contents (path, folder priority, bytes), in scan order.
    fn from_files(files: Vec<(PathBuf, usize, Vec<u8>)>) -> Registry {
        let mut reg = Registry::default();
        let mut conflicts = std::collections::BTreeSet::new();
        for (path, priority, data) in files {
            let spec = match Spec::parse(&data) {
                Ok(s) => s,
                Err(source) => {
                    reg.errors.push(LoadError::Parse { path, source });
                    continue;
                }
            };
            if let Err(reason) = spec.validate() {
                reg.errors.push(LoadError::Invalid { path, reason });
                continue;
            }
            let idx = reg.specs.len();
            for (di, d) in spec.devices.iter().enumerate() {
                let qualified = format!("{}={}", spec.kind, d.name);
                if let Some(&(other, _)) = reg.devices.get(&qualified) {
                    let old = &reg.specs[other];
                    if priority < old.priority {
                        continue;
                    }
                    if priority == old.priority {
                        reg.errors.push(LoadError::Conflict {
                            device: qualified.clone(),
                            first: old.path.clone(),
                            second: path.clone(),
                        });
                        conflicts.insert(qualified);
                        continue;
                    }
                }
                reg.devices.insert(qualified, (idx, di));
            }
            reg.specs.push(Loaded {
                spec,
                path,
                priority,
            });
        }
        for c in conflicts {
            reg.devices.remove(&c);
        }
        reg
    }

    /// The qualified names of every usable device, sorted.
    pub fn device_names(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// The spec files that could not be used, and conflicts.
    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }

    /// The edits for `devices` (qualified names), in order: a spec's own edits once, before
    /// its first device's; device nodes completed from the host.
    pub fn resolve(&self, devices: &[String]) -> Result<ContainerEdits, InjectError> {
        self.resolve_with(devices, host_node)
    }

    fn resolve_with(&self, devices: &[String], stat: Stat) -> Result<ContainerEdits, InjectError> {
        let mut edits = ContainerEdits::default();
        let mut unresolved = Vec::new();
        let mut specs_seen = std::collections::HashSet::new();
        for name in devices {
            let Some(&(si, di)) = self.devices.get(name) else {
                unresolved.push(name.clone());
                continue;
            };
            let spec = &self.specs[si].spec;
            if specs_seen.insert(si) {
                let mut e = spec.container_edits.clone();
                e.complete(name, stat)?;
                edits.append(&e);
            }
            let mut e = spec.devices[di].container_edits.clone();
            e.complete(name, stat)?;
            edits.append(&e);
        }
        if !unresolved.is_empty() {
            return Err(InjectError::Unresolvable {
                devices: unresolved,
            });
        }
        Ok(edits)
    }
}

/// Makes `edits` (completed, see [`Registry::resolve`]) in an OCI `config.json` document: the
/// environment (a variable of the same name replaced), device nodes (one at the same path
/// replaced; owned by the process's uid and gid when the spec gives none and they are not 0)
/// with a devices-cgroup rule for block and character devices, mounts (one at the same
/// destination replaced; then every mount sorted by the depth of its destination, stably),
/// hooks, network devices, Intel RDT and supplementary groups.
pub fn apply(doc: &mut Value, edits: &ContainerEdits) {
    let user = |k: &str| {
        doc.pointer(&format!("/process/user/{k}"))
            .and_then(Value::as_u64)
            .filter(|&v| v > 0)
    };
    let (puid, pgid) = (user("uid"), user("gid"));
    if !edits.env.is_empty() {
        let env = array_at(doc, &["process", "env"]);
        for kv in &edits.env {
            let key = kv.split('=').next().unwrap_or_default();
            let prefix = format!("{key}=");
            match env
                .iter_mut()
                .find(|v| v.as_str().is_some_and(|s| s.starts_with(&prefix)))
            {
                Some(v) => *v = json!(kv),
                None => env.push(json!(kv)),
            }
        }
    }
    for n in &edits.device_nodes {
        let kind = n.kind.clone().unwrap_or_else(|| "c".into());
        let kind = if kind == "u" { "c".to_string() } else { kind };
        let mut dev = json!({"path": n.path, "type": kind, "major": n.major, "minor": n.minor});
        if let Some(m) = n.file_mode {
            dev["fileMode"] = json!(m);
        }
        if let Some(u) = n.uid.map(u64::from).or(puid) {
            dev["uid"] = json!(u);
        }
        if let Some(g) = n.gid.map(u64::from).or(pgid) {
            dev["gid"] = json!(g);
        }
        let devices = array_at(doc, &["linux", "devices"]);
        devices.retain(|d| d["path"] != json!(n.path));
        devices.push(dev);
        if kind == "b" || kind == "c" {
            let access = match n.permissions.as_deref() {
                None | Some("") => "rwm",
                Some("none") => "",
                Some(p) => p,
            };
            if !access.is_empty() {
                array_at(doc, &["linux", "resources", "devices"]).push(json!({
                    "allow": true, "type": kind, "major": n.major, "minor": n.minor,
                    "access": access,
                }));
            }
        }
    }
    for nd in &edits.net_devices {
        let map = object_at(doc, &["linux", "netDevices"]);
        map.insert(nd.host_interface_name.clone(), json!({"name": nd.name}));
    }
    if !edits.mounts.is_empty() {
        let mounts = array_at(doc, &["mounts"]);
        for m in &edits.mounts {
            mounts.retain(|x| x["destination"] != json!(m.container_path));
            let mut v = json!({
                "destination": m.container_path,
                "source": m.host_path,
                "type": m.kind.clone().unwrap_or_else(|| "bind".into()),
            });
            if !m.options.is_empty() {
                v["options"] = json!(m.options);
            } else if m.kind.is_none() {
                v["options"] = json!(["bind"]);
            }
            mounts.push(v);
        }
        let depth = |m: &Value| {
            let d = m["destination"].as_str().unwrap_or_default();
            clean(d).matches('/').count()
        };
        mounts.sort_by_key(depth);
    }
    for h in &edits.hooks {
        let mut v = json!({"path": h.path});
        if !h.args.is_empty() {
            v["args"] = json!(h.args);
        }
        if !h.env.is_empty() {
            v["env"] = json!(h.env);
        }
        if let Some(t) = h.timeout {
            v["timeout"] = json!(t);
        }
        array_at(doc, &["hooks", &h.hook_name]).push(v);
    }
    if let Some(r) = &edits.intel_rdt {
        let mut v = serde_json::Map::new();
        if let Some(c) = &r.clos_id {
            v.insert("closID".into(), json!(c));
        }
        if let Some(s) = &r.l3_cache_schema {
            v.insert("l3CacheSchema".into(), json!(s));
        }
        if let Some(s) = &r.mem_bw_schema {
            v.insert("memBwSchema".into(), json!(s));
        }
        if !r.schemata.is_empty() {
            v.insert("schemata".into(), json!(r.schemata));
        }
        if r.enable_monitoring {
            v.insert("enableMonitoring".into(), json!(true));
        }
        if r.enable_cmt {
            v.insert("enableCMT".into(), json!(true));
        }
        if r.enable_mbm {
            v.insert("enableMBM".into(), json!(true));
        }
        *object_at(doc, &["linux"])
            .entry("intelRdt")
            .or_insert(Value::Null) = Value::Object(v);
    }
    for &g in &edits.additional_gids {
        if g == 0 {
            continue;
        }
        let gids = array_at(doc, &["process", "user", "additionalGids"]);
        if !gids.contains(&json!(g)) {
            gids.push(json!(g));
        }
    }
}

/// `path` with `.`/`..` and repeated slashes folded, as Go's filepath.Clean.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(serde_json::Map::new());
    }
    let Value::Object(map) = v else {
        unreachable!("made an object above")
    };
    match path.split_first() {
        None => map,
        Some((k, rest)) => object_at(map.entry(*k).or_insert(Value::Null), rest),
    }
}

fn array_at<'a>(doc: &'a mut Value, path: &[&str]) -> &'a mut Vec<Value> {
    let (last, parents) = path.split_last().unwrap_or((&"", &[]));
    let v = object_at(doc, parents).entry(*last).or_insert(Value::Null);
    if !v.is_array() {
        *v = Value::Array(Vec::new());
    }
    let Value::Array(a) = v else {
        unreachable!("made an array above")
    };
    a
}

#[cfg(test)]
mod tests;
