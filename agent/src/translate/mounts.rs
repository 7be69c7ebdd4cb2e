//! Volumes and mounts: what each volume of a pod is ([`VolumeKind`]), the mounts of a container
//! (with subPath checks), and the device nodes of block volumes.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bosun_runtime::Propagation;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;
use crate::projection::ApiObjects;

/// One volume mount of a container, before the volume exists on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountRequest {
    pub volume: String,
    /// subPath, or subPathExpr expanded with the container's env.
    pub sub_path: Option<String>,
    pub destination: PathBuf,
    pub readonly: bool,
    pub propagation: Propagation,
}

fn check_sub_path(p: &str) -> Result<(), String> {
    if Path::new(p).is_absolute() {
        return Err(format!("subPath `{p}` must not be an absolute path"));
    }
    if Path::new(p)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!("subPath `{p}` must not contain '..'"));
    }
    Ok(())
}

/// The container's volume mounts, checked like the kubelet's `makeMounts`.
///
/// subPathExpr is expanded with the container's env; a `resourceFieldRef` of an unset limit
/// resolves against an unknown (zero) node allocatable here.
pub fn mount_requests(
    pod: &Pod,
    container: &Container,
    objects: Option<&ApiObjects>,
) -> Result<Vec<MountRequest>, TranslateError> {
    let volumes: Vec<&str> = spec_of(pod)
        .and_then(|s| s.volumes.as_ref())
        .map(|v| v.iter().map(|v| v.name.as_str()).collect())
        .unwrap_or_default();
    // API data is always mounted read-only, as the kubelet does; so are read-only claims and
    // read-only CSI inline volumes.
    let api_data: Vec<&str> = spec_of(pod)
        .and_then(|s| s.volumes.as_ref())
        .map(|v| {
            v.iter()
                .filter(|v| {
                    crate::projection::api_data_plugin(v).is_some()
                        || v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.read_only == Some(true))
                        || v.csi.as_ref().is_some_and(|c| c.read_only == Some(true))
                        // Image volumes are read-only (the kubelet's image volume plugin).
                        || v.image.is_some()
                })
                .map(|v| v.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut env: Option<HashMap<String, String>> = None;
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let err = |reason: String| TranslateError::Mount {
            container: container.name.clone(),
            mount_path: m.mount_path.clone(),
            reason,
        };
        if !volumes.contains(&m.name.as_str()) {
            return Err(err(format!("volume {:?} not found in pod", m.name)));
        }
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") | Some("") => Propagation::Private,
            Some("HostToContainer") => Propagation::HostToContainer,
            Some("Bidirectional") => {
                if !privileged {
                    return Err(err(
                        "Bidirectional mount propagation is available only to privileged containers"
                            .into(),
                    ));
                }
                Propagation::Bidirectional
            }
            Some(other) => return Err(err(format!("invalid MountPropagation mode: {other:?}"))),
        };
        let sub_path_expr = m.sub_path_expr.as_deref().filter(|s| !s.is_empty());
        let sub_path = m.sub_path.as_deref().filter(|s| !s.is_empty());
        let sub_path = match (sub_path, sub_path_expr) {
            (Some(_), Some(_)) => {
                return Err(err("subPath and subPathExpr are mutually exclusive".into()))
            }
            (Some(p), None) => Some(p.to_string()),
            (None, Some(expr)) => {
                if env.is_none() {
                    env = Some(
                        container_env(pod, container, NodeAllocatable::default(), objects)?
                            .into_iter()
                            .collect(),
                    );
                }
                let vars: Option<&HashMap<String, String>> = env.as_ref();
                let mut missing = Vec::new();
                let expanded = expand(expr, |key| {
                    match vars.and_then(|v| v.get(key)).filter(|v| !v.is_empty()) {
                        Some(v) => v.clone(),
                        None => {
                            if !missing.contains(&key.to_string()) {
                                missing.push(key.to_string());
                            }
                            String::new()
                        }
                    }
                });
                if !missing.is_empty() {
                    missing.sort();
                    return Err(err(format!("missing value for {}", missing.join(", "))));
                }
                Some(expanded)
            }
            (None, None) => None,
        };
        if let Some(p) = &sub_path {
            check_sub_path(p).map_err(err)?;
        }
        out.push(MountRequest {
            volume: m.name.clone(),
            sub_path,
            destination: PathBuf::from(&m.mount_path),
            readonly: m.read_only.unwrap_or(false) || api_data.contains(&m.name.as_str()),
            propagation,
        });
    }
    Ok(out)
}

/// A volume bosun can make in standalone mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir {
        /// medium: Memory (a tmpfs).
        memory: bool,
        size_limit: Option<u64>,
    },
    HostPath {
        path: String,
        /// The hostPath type as written ("" when unset).
        type_: String,
    },
    /// A `local` PV: a folder (or, with `block`, a device) of this node. Mounted like a
    /// hostPath, but the pod's fsGroup applies to a writable folder (the kubelet's local
    /// volume plugin does that; its hostPath plugin does not).
    Local { path: String, block: bool },
    /// configMap, secret, downwardAPI or projected: files written from API data.
    ApiData(bosun_volumes::ApiDataPlugin),
    /// A PersistentVolumeClaim, resolved to its bound PV when the pod's volumes are set up.
    Claim { claim: String },
    /// A generic ephemeral volume (`ephemeral.volumeClaimTemplate`): the claim
    /// `<pod name>-<volume name>` the ephemeral volume controller creates, used only when the
    /// pod is its controller (the kubelet's `ephemeral.VolumeIsForPod`).
    EphemeralClaim { claim: String },
    /// A CSI ephemeral inline volume (`csi:` in the pod spec), published by the driver when the
    /// pod's volumes are set up.
    CsiInline { driver: String },
    /// An `image` volume (ImageVolume, GA and locked on at 1.36): an image of the store mounted
    /// read-only, pulled by its `pullPolicy` when a container that mounts it starts (not set
    /// up with the other volumes).
    Image {
        reference: String,
        pull_policy: Option<String>,
    },
}

/// The image volumes container `c` mounts: (volume name, image reference, pullPolicy), each
/// once, in the order of its volumeMounts.
pub fn image_volumes_of(pod: &Pod, c: &Container) -> Vec<(String, String, Option<String>)> {
    let volumes = spec_of(pod).and_then(|s| s.volumes.as_ref());
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if out.iter().any(|(n, _, _)| *n == m.name) {
            continue;
        }
        let image = volumes
            .into_iter()
            .flatten()
            .find(|v| v.name == m.name)
            .and_then(|v| v.image.as_ref());
        if let Some(i) = image {
            out.push((
                m.name.clone(),
                i.reference.clone().unwrap_or_default(),
                i.pull_policy.clone().filter(|p| !p.is_empty()),
            ));
        }
    }
    out
}

/// Checks a subPath into an image volume mounted at `root`, as containerd's
/// `ensureImageSubPath`: it must be a folder inside the image (symlinks that lead outside the
/// image are refused; a file is refused: "only directory subpath is supported").
pub fn check_image_sub_path(root: &Path, sub_path: &str) -> Result<(), String> {
    check_sub_path(sub_path)?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let target = root
        .join(sub_path)
        .canonicalize()
        .map_err(|e| format!("subPath {sub_path:?}: {e}"))?;
    if !target.starts_with(&root) {
        return Err(format!("subPath {sub_path:?} leads outside the image"));
    }
    if !target.is_dir() {
        return Err(format!(
            "only directory subpath is supported, subpath: {sub_path:?}"
        ));
    }
    Ok(())
}

/// The device node a container gets for a block volume whose device file is `host` (what
/// NodePublishVolume made): its type and numbers, read-write or read-only.
pub fn block_device(
    host: &std::path::Path,
    container_path: &str,
    read_only: bool,
) -> Result<bosun_runtime::Device, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(host)
        .map_err(|e| format!("volumeDevice {container_path}: {}: {e}", host.display()))?;
    let kind = if md.file_type().is_block_device() {
        "b"
    } else if md.file_type().is_char_device() {
        "c"
    } else {
        return Err(format!(
            "volumeDevice {container_path}: {} is not a device",
            host.display()
        ));
    };
    let rdev = md.rdev();
    Ok(bosun_runtime::Device {
        container_path: container_path.to_string(),
        kind: kind.to_string(),
        major: i64::from(nix::sys::stat::major(rdev) as u32),
        minor: i64::from(nix::sys::stat::minor(rdev) as u32),
        access: if read_only { "rm" } else { "rwm" }.to_string(),
    })
}

/// The name of the claim the ephemeral volume controller makes for volume `volume` of pod
/// `pod`: `<pod name>-<volume name>`.
pub fn ephemeral_claim_name(pod: &str, volume: &str) -> String {
    format!("{pod}-{volume}")
}

/// The type name of a volume as written in the pod (`emptyDir`, `configMap`, ...), or None when
/// it has no source. Several sources -> the first one.
pub fn volume_type_names(volume: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
    match serde_json::to_value(volume) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| k != "name" && !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Every volume of the pod with what to make of it. Without the cluster (`cluster` false),
/// volumes that need API objects are refused; downwardAPI works anywhere.
pub fn volume_sources(
    pod: &Pod,
    cluster: bool,
) -> Result<Vec<(String, VolumeKind)>, TranslateError> {
    let mut out = Vec::new();
    for v in spec_of(pod)
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let verr = |reason: String| TranslateError::Volume {
            volume: v.name.clone(),
            reason,
        };
        if let Some(e) = &v.empty_dir {
            let memory = match e.medium.as_deref().unwrap_or("") {
                "" => false,
                "Memory" => true,
                other => {
                    return Err(TranslateError::UnsupportedVolume {
                        volume: v.name.clone(),
                        kind: format!("emptyDir medium {other}"),
                        standalone: false,
                    })
                }
            };
            let size_limit = match &e.size_limit {
                None => None,
                Some(q) => {
                    let parsed = parse_quantity(&q.0)
                        .map_err(|e| verr(format!("sizeLimit {:?}: {e}", q.0)))?;
                    Some(parsed.value().clamp(0, u64::MAX as i128) as u64)
                }
            };
            out.push((v.name.clone(), VolumeKind::EmptyDir { memory, size_limit }));
        } else if let Some(h) = &v.host_path {
            out.push((
                v.name.clone(),
                VolumeKind::HostPath {
                    path: h.path.clone(),
                    type_: h.type_.clone().unwrap_or_default(),
                },
            ));
        } else if let Some(c) = v.persistent_volume_claim.as_ref().filter(|_| cluster) {
            out.push((
                v.name.clone(),
                VolumeKind::Claim {
                    claim: c.claim_name.clone(),
                },
            ));
        } else if v.ephemeral.is_some() && cluster {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            out.push((
                v.name.clone(),
                VolumeKind::EphemeralClaim {
                    claim: ephemeral_claim_name(pod_name, &v.name),
                },
            ));
        } else if let Some(c) = v.csi.as_ref().filter(|_| cluster) {
            out.push((
                v.name.clone(),
                VolumeKind::CsiInline {
                    driver: c.driver.clone(),
                },
            ));
        } else if let Some(i) = &v.image {
            out.push((
                v.name.clone(),
                VolumeKind::Image {
                    reference: i.reference.clone().unwrap_or_default(),
                    pull_policy: i.pull_policy.clone().filter(|p| !p.is_empty()),
                },
            ));
        } else if let Some(plugin) = crate::projection::api_data_plugin(v)
            .filter(|_| cluster || !crate::projection::volume_needs_api(v))
        {
            out.push((v.name.clone(), VolumeKind::ApiData(plugin)));
        } else {
            let kind = volume_type_names(v)
                .into_iter()
                .next()
                .ok_or_else(|| verr("must specify a volume type".into()))?;
            let standalone = !cluster
                && (crate::projection::api_data_plugin(v).is_some()
                    || v.persistent_volume_claim.is_some()
                    || v.ephemeral.is_some()
                    || v.csi.is_some());
            return Err(TranslateError::UnsupportedVolume {
                volume: v.name.clone(),
                kind,
                standalone,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::testing::*;

    // --- mounts and volumes ----------------------------------------------------------------------

    fn volume_pod(container: &str) -> Pod {
        pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: ns, uid: u}}\nspec:\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 64Mi}}}}\n  - {{name: host, hostPath: {{path: /var/log, type: Directory}}}}\n  containers:\n  - {}\n",
            container.replace('\n', "\n    ")
        ))
    }

    fn requests(p: &Pod) -> Result<Vec<MountRequest>, TranslateError> {
        mount_requests(p, &p.spec.as_ref().unwrap().containers[0], None)
    }

    #[test]
    fn mount_requests_basic() {
        let p = volume_pod(
            "name: app\nimage: x\nenv: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\nvolumeMounts:\n- {name: data, mountPath: /data}\n- {name: host, mountPath: /logs, readOnly: true, mountPropagation: HostToContainer}\n- {name: data, mountPath: /sub, subPath: a/b}\n- {name: data, mountPath: /expr, subPathExpr: logs/$(POD)}",
        );
        assert_eq!(
            requests(&p).unwrap(),
            vec![
                MountRequest {
                    volume: "data".into(),
                    sub_path: None,
                    destination: "/data".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
                MountRequest {
                    volume: "host".into(),
                    sub_path: None,
                    destination: "/logs".into(),
                    readonly: true,
                    propagation: Propagation::HostToContainer,
                },
                MountRequest {
                    volume: "data".into(),
                    sub_path: Some("a/b".into()),
                    destination: "/sub".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
                MountRequest {
                    volume: "data".into(),
                    sub_path: Some("logs/web".into()),
                    destination: "/expr".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
            ]
        );
    }

    #[test]
    fn mount_request_errors() {
        let err = |c: &str| {
            requests(&volume_pod(&format!("name: app\nimage: x\n{c}")))
                .unwrap_err()
                .to_string()
        };
        assert!(err("volumeMounts: [{name: nope, mountPath: /x}]").contains("not found"));
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, subPath: /abs}]").contains("absolute")
        );
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, subPath: a/../../b}]").contains("..")
        );
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, subPathExpr: $(NOPE)/x}]")
                .contains("missing value for NOPE")
        );
        assert!(err(
            "volumeMounts: [{name: data, mountPath: /x, mountPropagation: Bidirectional}]"
        )
        .contains("privileged"));
        assert!(
            err("volumeMounts: [{name: data, mountPath: /x, mountPropagation: Sideways}]")
                .contains("invalid MountPropagation")
        );
        let ok = requests(&volume_pod(
            "name: app\nimage: x\nsecurityContext: {privileged: true}\nvolumeMounts: [{name: host, mountPath: /x, mountPropagation: Bidirectional}]",
        ))
        .unwrap();
        assert_eq!(ok[0].propagation, Propagation::Bidirectional);
    }

    #[test]
    fn volume_kinds() {
        let p = volume_pod("name: app\nimage: x");
        assert_eq!(
            volume_sources(&p, false).unwrap(),
            vec![
                (
                    "data".to_string(),
                    VolumeKind::EmptyDir {
                        memory: false,
                        size_limit: None
                    }
                ),
                (
                    "mem".to_string(),
                    VolumeKind::EmptyDir {
                        memory: true,
                        size_limit: Some(64 << 20)
                    }
                ),
                (
                    "host".to_string(),
                    VolumeKind::HostPath {
                        path: "/var/log".into(),
                        type_: "Directory".into()
                    }
                ),
            ]
        );
        let with = |src: &str| {
            pod(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: w}}\nspec:\n  volumes: [{{name: v, {src}}}]\n  containers: [{{name: a, image: x}}]\n"
            ))
        };
        for (src, kind) in [
            ("configMap: {name: cm}", "configMap"),
            ("secret: {secretName: s}", "secret"),
            (
                "projected: {sources: [{serviceAccountToken: {path: t}}]}",
                "projected",
            ),
        ] {
            let e = volume_sources(&with(src), false).unwrap_err();
            assert_eq!(
                e,
                TranslateError::UnsupportedVolume {
                    volume: "v".into(),
                    kind: kind.into(),
                    standalone: true,
                }
            );
            assert!(e.to_string().starts_with(&format!(
                "unsupported volume type in standalone mode: {kind}"
            )));
            assert!(volume_sources(&with(src), true).is_ok(), "{src}");
        }
        // downwardAPI needs nothing from the API: fine in standalone mode too.
        for src in [
            "downwardAPI: {items: []}",
            "projected: {sources: [{downwardAPI: {items: []}}]}",
        ] {
            assert!(matches!(
                volume_sources(&with(src), false).unwrap()[0].1,
                VolumeKind::ApiData(_)
            ));
        }
        assert_eq!(
            volume_sources(&with("persistentVolumeClaim: {claimName: c}"), true).unwrap()[0].1,
            VolumeKind::Claim { claim: "c".into() }
        );
        assert!(
            volume_sources(&with("persistentVolumeClaim: {claimName: c}"), false)
                .unwrap_err()
                .to_string()
                .starts_with("unsupported volume type in standalone mode: persistentVolumeClaim")
        );
        assert_eq!(
            volume_sources(&with("csi: {driver: d}"), true).unwrap()[0].1,
            VolumeKind::CsiInline { driver: "d".into() }
        );
        let e = volume_sources(&with("csi: {driver: d}"), false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unsupported volume type in standalone mode: csi"),
            "{e}"
        );
        // A generic ephemeral volume is the claim `<pod>-<volume>`.
        let eph = "ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}}}";
        let mut p = with(eph);
        p.metadata.name = Some("web".into());
        assert_eq!(
            volume_sources(&p, true).unwrap()[0].1,
            VolumeKind::EphemeralClaim {
                claim: "web-v".into()
            }
        );
        assert!(volume_sources(&p, false)
            .unwrap_err()
            .to_string()
            .starts_with("unsupported volume type in standalone mode: ephemeral"));
    }

    #[test]
    fn block_devices_from_device_files() {
        let d = block_device(std::path::Path::new("/dev/null"), "/dev/xvda", false).unwrap();
        assert_eq!(
            (d.kind.as_str(), d.major, d.minor, d.access.as_str()),
            ("c", 1, 3, "rwm")
        );
        assert_eq!(d.container_path, "/dev/xvda");
        let ro = block_device(std::path::Path::new("/dev/null"), "/dev/x", true).unwrap();
        assert_eq!(ro.access, "rm");
        let e = block_device(std::path::Path::new("/"), "/dev/x", false).unwrap_err();
        assert!(e.contains("is not a device"), "{e}");
    }
}
