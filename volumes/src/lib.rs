//! Makes pod volumes exist on disk, idempotently, and tears them down without leaks.
//!
//! This crate knows nothing of Kubernetes types: the agent translates a Pod's volumes into
//! [`VolumeSource`]s and drives [`setup`], [`prepare_subpath`] and [`teardown_pod`]. The
//! on-disk layout is the kubelet's (see [`layout`]) because other
//! node tools assume it.
//!
//! - emptyDir: a folder (0777) under the pod folder; `Memory` mounts a tmpfs on it.
//! - hostPath: the host path itself, after the kubelet's type checks (and creation for the
//!   `*OrCreate` types).
//! - subPath: resolved inside the volume through file descriptors (`openat2` with
//!   `RESOLVE_BENEATH`), then the checked fd itself is bind-mounted into
//!   `volume-subpaths/`, so what a container gets is exactly what was checked.
//! - CSI (module [`csi`]): plugin discovery through the registration folder and the node calls
//!   (stage, publish, unpublish, unstage, stats, expand) at the kubelet's paths.
//! - teardown: unmount everything below the pod folder in reverse mount order, then delete
//!   our own folders without following symlinks or crossing mounts.
//!
//! ```no_run
//! use std::path::Path;
//! use bosun_volumes::{layout, prepare_subpath, setup, teardown_pod, Medium, VolumeSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root = Path::new(layout::DEFAULT_ROOT_DIR);
//! bosun_volumes::ensure_shared_mount(root)?; // once, at agent start
//! let pod = layout::pod_dir(root, "0c6f-uid")?;
//! let cache = VolumeSource::EmptyDir { medium: Medium::Memory, size_limit: Some(64 << 20) };
//! let host_path = setup(&pod, "cache", &cache)?; // bind this into the containers
//! // volumeMount #1 of container "app" uses subPath "conf" of that volume:
//! let bind_source = prepare_subpath(&pod, "cache", &host_path, "conf", "app", 1)?;
//! # let _ = bind_source;
//! // ... once every container of the pod is gone:
//! teardown_pod(&pod)?;
//! # Ok(()) }
//! ```

pub mod atomic;
pub mod csi;
pub mod layout;
pub mod mounts;
pub mod ownership;
pub mod subpath;
pub mod teardown;

mod empty_dir;
mod host_path;
mod sys;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use layout::InvalidName;
pub use mounts::{ensure_shared_mount, mounts_below, release_shared_mount};
pub use subpath::{prepare_subpath, SubPathError};
pub use teardown::{teardown_pod, teardown_volume, TeardownError};

/// Where an emptyDir keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Medium {
    /// A folder on the node's disk.
    #[default]
    Disk,
    /// A tmpfs (counts against the pod's memory).
    Memory,
}

/// The kind a hostPath must be (Kubernetes `HostPathType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPathType {
    /// `""`: no check at all (a missing path is created as a folder, as containerd does).
    #[default]
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A hostPath type string that Kubernetes does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hostPath type {0:?}")]
pub struct UnknownHostPathType(pub String);

impl FromStr for HostPathType {
    type Err = UnknownHostPathType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" => HostPathType::Unset,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            other => return Err(UnknownHostPathType(other.to_string())),
        })
    }
}

impl HostPathType {
    /// The Kubernetes spelling (`""` for [`HostPathType::Unset`]).
    pub fn as_str(self) -> &'static str {
        match self {
            HostPathType::Unset => "",
            HostPathType::DirectoryOrCreate => "DirectoryOrCreate",
            HostPathType::Directory => "Directory",
            HostPathType::FileOrCreate => "FileOrCreate",
            HostPathType::File => "File",
            HostPathType::Socket => "Socket",
            HostPathType::CharDevice => "CharDevice",
            HostPathType::BlockDevice => "BlockDevice",
        }
    }
}

/// What a volume is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    EmptyDir {
        medium: Medium,
        /// Bytes. For `Memory`, the tmpfs size (`None` or 0: the tmpfs default, half of RAM).
        /// For `Disk` it is only recorded: eviction on usage is the agent's business.
        size_limit: Option<u64>,
    },
    HostPath {
        path: PathBuf,
        kind: HostPathType,
    },
    /// The folder of a configMap, secret, downwardAPI or projected volume; its files are
    /// written by [`atomic::write`].
    ApiData {
        plugin: ApiDataPlugin,
    },
}

/// The volume types whose files come from the API (and are written by [`atomic::write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiDataPlugin {
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

impl ApiDataPlugin {
    /// The plugin's folder under `<pod>/volumes`.
    pub fn dir(self) -> &'static str {
        match self {
            ApiDataPlugin::ConfigMap => layout::CONFIG_MAP_PLUGIN_DIR,
            ApiDataPlugin::Secret => layout::SECRET_PLUGIN_DIR,
            ApiDataPlugin::DownwardApi => layout::DOWNWARD_API_PLUGIN_DIR,
            ApiDataPlugin::Projected => layout::PROJECTED_PLUGIN_DIR,
        }
    }
    /// Secrets and projected volumes (which carry tokens) never touch the disk: a tmpfs.
    pub fn medium(self) -> Medium {
        match self {
            ApiDataPlugin::Secret | ApiDataPlugin::Projected => Medium::Memory,
            ApiDataPlugin::ConfigMap | ApiDataPlugin::DownwardApi => Medium::Disk,
        }
    }
}

/// Why a volume could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("cannot create {path}: {source}")]
    Create {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists and is not a directory")]
    NotADirectory { volume: String, path: PathBuf },
    #[error("cannot read the mounts of {path}: {source}")]
    Mountinfo {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is already a {fs_type} mount, not a tmpfs")]
    ForeignMount {
        volume: String,
        path: PathBuf,
        fs_type: String,
    },
    #[error("cannot mount a tmpfs on {path}: {source}")]
    MountTmpfs {
        volume: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set the mode of {path}: {source}")]
    Chmod {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hostPath {path} is not an absolute path")]
    HostPathNotAbsolute { volume: String, path: PathBuf },
    /// The kubelet's own wording, which users search for.
    #[error("hostPath type check failed: {} is not {}", path.display(), expected)]
    HostPathType {
        volume: String,
        path: PathBuf,
        /// "a directory", "a file", "a socket file", "a character device", "a block device".
        expected: &'static str,
    },
    #[error("cannot stat hostPath {path}: {source}")]
    HostPathStat {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: the {plugin} plugin cannot set up this source")]
    WrongPlugin {
        volume: String,
        plugin: &'static str,
    },
}

/// Sets a volume up (idempotent) and returns the host path to bind into containers.
///
/// - emptyDir: creates `<pod_dir>/volumes/kubernetes.io~empty-dir/<name>` with mode 0777 like
///   the kubelet; with [`Medium::Memory`] mounts a tmpfs there (`size=` the size limit; its
///   root 1777, tmpfs's default, as with the kubelet) unless one is already mounted.
/// - hostPath: `DirectoryOrCreate` creates the folder (0755, with parents), `FileOrCreate` an
///   empty file (0644, parents 0755); the other types check the kind (a missing path fails).
///   `Unset` checks nothing, but a missing path is created as a folder (0755), as containerd
///   does for the kubelet's bind sources.
#[tracing::instrument(level = "debug", skip(source), fields(pod_dir = %pod_dir.display()))]
pub fn setup(pod_dir: &Path, name: &str, source: &VolumeSource) -> Result<PathBuf, SetupError> {
    match source {
        VolumeSource::EmptyDir { medium, size_limit } => {
            empty_dir::setup(pod_dir, name, *medium, *size_limit)
        }
        VolumeSource::HostPath { path, kind } => host_path::setup(name, path, *kind),
        VolumeSource::ApiData { plugin } => {
            let path = layout::plugin_volume_path(pod_dir, plugin.dir(), name)?;
            let parent = pod_dir.join(layout::VOLUMES_DIR).join(plugin.dir());
            empty_dir::setup_at(&parent, &path, name, plugin.medium(), None)
        }
    }
}

/// Idempotent setup and teardown of the volumes of one pod folder, one plugin per volume type
/// (the kubelet's volume plugin interface), for a caller that holds plugins as values. The agent
/// does not: it calls [`setup`] and [`teardown_pod`].
pub trait VolumePlugin: Send + Sync {
    /// The plugin's name, for logs.
    fn name(&self) -> &'static str;
    /// Sets the volume up (idempotent) and returns the host path to bind into containers.
    fn setup(
        &self,
        pod_dir: &Path,
        name: &str,
        source: &VolumeSource,
    ) -> Result<PathBuf, SetupError>;
    /// Undoes [`VolumePlugin::setup`] and the volume's subPath binds (idempotent). Never
    /// touches the content of a hostPath.
    fn teardown(&self, pod_dir: &Path, name: &str) -> Result<(), TeardownError>;
}

/// emptyDir volumes.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyDirPlugin;

impl VolumePlugin for EmptyDirPlugin {
    fn name(&self) -> &'static str {
        "kubernetes.io/empty-dir"
    }
    fn setup(
        &self,
        pod_dir: &Path,
        name: &str,
        source: &VolumeSource,
    ) -> Result<PathBuf, SetupError> {
        match source {
            VolumeSource::EmptyDir { .. } => setup(pod_dir, name, source),
            _ => Err(SetupError::WrongPlugin {
                volume: name.to_string(),
                plugin: self.name(),
            }),
        }
    }
    fn teardown(&self, pod_dir: &Path, name: &str) -> Result<(), TeardownError> {
        teardown_volume(pod_dir, name)
    }
}

/// hostPath volumes. Teardown only removes the volume's subPath binds: the host path is the
/// user's and is never touched.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostPathPlugin;

impl VolumePlugin for HostPathPlugin {
    fn name(&self) -> &'static str {
        "kubernetes.io/host-path"
    }
    fn setup(
        &self,
        pod_dir: &Path,
        name: &str,
        source: &VolumeSource,
    ) -> Result<PathBuf, SetupError> {
        match source {
            VolumeSource::HostPath { .. } => setup(pod_dir, name, source),
            _ => Err(SetupError::WrongPlugin {
                volume: name.to_string(),
                plugin: self.name(),
            }),
        }
    }
    fn teardown(&self, pod_dir: &Path, name: &str) -> Result<(), TeardownError> {
        teardown::teardown_subpaths(pod_dir, name)
    }
}

/// Every volume type this crate knows, dispatched on the source. Teardown by name removes the
/// volume's subPath binds and its emptyDir folder if there is one.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostVolumes;

impl VolumePlugin for HostVolumes {
    fn name(&self) -> &'static str {
        "bosun-volumes"
    }
    fn setup(
        &self,
        pod_dir: &Path,
        name: &str,
        source: &VolumeSource,
    ) -> Result<PathBuf, SetupError> {
        setup(pod_dir, name, source)
    }
    fn teardown(&self, pod_dir: &Path, name: &str) -> Result<(), TeardownError> {
        teardown_volume(pod_dir, name)
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_type_round_trips() {
        for t in [
            HostPathType::Unset,
            HostPathType::DirectoryOrCreate,
            HostPathType::Directory,
            HostPathType::FileOrCreate,
            HostPathType::File,
            HostPathType::Socket,
            HostPathType::CharDevice,
            HostPathType::BlockDevice,
        ] {
            assert_eq!(t.as_str().parse::<HostPathType>(), Ok(t));
        }
        let err = "directory".parse::<HostPathType>().expect_err("unknown");
        assert_eq!(err.to_string(), "unknown hostPath type \"directory\"");
    }

    #[test]
    fn plugins_refuse_other_sources() {
        let td = tempfile::tempdir().expect("tempdir");
        let host = VolumeSource::HostPath {
            path: td.path().to_path_buf(),
            kind: HostPathType::Directory,
        };
        let empty = VolumeSource::EmptyDir {
            medium: Medium::Disk,
            size_limit: None,
        };
        assert!(matches!(
            EmptyDirPlugin.setup(td.path(), "v", &host),
            Err(SetupError::WrongPlugin { .. })
        ));
        assert!(matches!(
            HostPathPlugin.setup(td.path(), "v", &empty),
            Err(SetupError::WrongPlugin { .. })
        ));
        assert_eq!(
            HostVolumes.setup(td.path(), "v", &host).expect("hostPath"),
            td.path()
        );
    }

    #[test]
    #[ignore = "needs root: bind mounts"]
    fn plugin_teardown_removes_binds_and_keeps_host_content() {
        let td = tempfile::tempdir().expect("tempdir");
        let _guard = testutil::UnmountGuard::new(td.path());
        let root = std::fs::canonicalize(td.path()).expect("canon");
        let pod = root.join("pod");
        let host = root.join("host");
        let src = VolumeSource::HostPath {
            path: host.clone(),
            kind: HostPathType::DirectoryOrCreate,
        };
        let hp = HostPathPlugin.setup(&pod, "h", &src).expect("hostPath");
        std::fs::create_dir(host.join("sub")).expect("mkdir");
        std::fs::write(host.join("sub/marker"), b"keep").expect("marker");
        let t = prepare_subpath(&pod, "h", &hp, "sub", "c", 0).expect("subPath");
        let ed = EmptyDirPlugin
            .setup(
                &pod,
                "e",
                &VolumeSource::EmptyDir {
                    medium: Medium::Memory,
                    size_limit: Some(1 << 20),
                },
            )
            .expect("emptyDir");
        assert_eq!(mounts_below(&pod).len(), 2);

        HostPathPlugin
            .teardown(&pod, "h")
            .expect("teardown hostPath");
        assert_eq!(testutil::mount_count_at(&t), 0);
        assert!(!pod.join("volume-subpaths/h").exists());
        assert!(host.join("sub/marker").exists());
        assert_eq!(
            mounts_below(&pod),
            vec![ed.clone()],
            "the emptyDir is not touched"
        );

        HostVolumes.teardown(&pod, "e").expect("teardown emptyDir");
        assert!(mounts_below(&pod).is_empty());
        assert!(!ed.exists());
        HostVolumes.teardown(&pod, "e").expect("idempotent");
    }
}
