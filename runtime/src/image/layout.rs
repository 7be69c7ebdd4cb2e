//! The JSON documents of an OCI image layout (and their Docker v2 equivalents) and the choice of
//! a manifest in an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn is_index(&self) -> bool {
        self.media_type == MT_OCI_INDEX || self.media_type == MT_DOCKER_LIST
    }
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// An image index (OCI) or manifest list (Docker); also the layout's `index.json`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ContainerConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The OCI architecture name of the machine this binary runs on.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64le",
        other => other,
    }
}

/// Picks the descriptor for `tag` in the layout's index (by the ref.name annotation), or the
/// only/first one when no tag is asked for.
pub(crate) fn select_tagged<'a>(index: &'a Index, tag: Option<&str>) -> Option<&'a Descriptor> {
    match tag {
        Some(tag) => index.manifests.iter().find(|d| {
            d.annotations
                .get(REF_NAME_ANNOTATION)
                .is_some_and(|name| name == tag)
        }),
        None => index.manifests.first(),
    }
}

/// Picks the linux/<host arch> manifest of a nested index (preferring the v8 variant on arm64,
/// and any variant otherwise).
pub(crate) fn select_platform(index: &Index) -> Option<&Descriptor> {
    let arch = host_arch();
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    let preferred = candidates.iter().copied().find(|d| {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match arch {
            "arm64" => matches!(variant, None | Some("v8")),
            _ => true,
        }
    });
    preferred.or_else(|| candidates.first().copied())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn desc(
        digest: char,
        platform: Option<(&str, &str, Option<&str>)>,
        tag: Option<&str>,
    ) -> Descriptor {
        Descriptor {
            media_type: MT_OCI_MANIFEST.to_string(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            size: 1,
            annotations: tag
                .map(|t| BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), t.to_string())]))
                .unwrap_or_default(),
            platform: platform.map(|(os, arch, variant)| Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.map(str::to_string),
            }),
        }
    }

    #[test]
    fn selects_by_tag_or_first() {
        let index = Index {
            media_type: None,
            manifests: vec![desc('a', None, Some("v1")), desc('b', None, Some("latest"))],
        };
        assert!(select_tagged(&index, Some("latest"))
            .unwrap()
            .digest
            .contains('b'));
        assert!(select_tagged(&index, Some("v1"))
            .unwrap()
            .digest
            .contains('a'));
        assert!(select_tagged(&index, Some("v2")).is_none());
        assert!(select_tagged(&index, None).unwrap().digest.contains('a'));
    }

    #[test]
    fn selects_host_platform() {
        let index = Index {
            media_type: None,
            manifests: vec![
                desc('a', Some(("windows", host_arch(), None)), None),
                desc('b', Some(("linux", "not-an-arch", None)), None),
                desc('c', Some(("linux", host_arch(), None)), None),
            ],
        };
        assert!(select_platform(&index).unwrap().digest.contains('c'));
        let none = Index {
            media_type: None,
            manifests: vec![desc('b', Some(("linux", "not-an-arch", None)), None)],
        };
        assert!(select_platform(&none).is_none());
    }
}
