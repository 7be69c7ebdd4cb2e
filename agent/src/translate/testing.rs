//! Pods, images and a container fixture shared by the translate tests.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bosun_runtime::image::ImageConfig;
use bosun_runtime::ContainerSpec;
use k8s_openapi::api::core::v1::Pod;

use super::*;

pub(crate) fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).expect("test pod parses")
}

/// A pod with one container per (requests, limits) pair, given as `cpu,memory` strings where
/// an empty field means unset.
pub(crate) fn pod_res(containers: &[(&str, &str)], init: &[(&str, &str)]) -> Pod {
    fn list(s: &str) -> String {
        let mut parts = s.split(',');
        let cpu = parts.next().unwrap_or("");
        let mem = parts.next().unwrap_or("");
        let mut out = String::new();
        if !cpu.is_empty() {
            out.push_str(&format!("cpu: \"{cpu}\", "));
        }
        if !mem.is_empty() {
            out.push_str(&format!("memory: \"{mem}\""));
        }
        format!("{{{}}}", out.trim_end_matches([',', ' ']))
    }
    let render = |cs: &[(&str, &str)], prefix: &str| {
        cs.iter()
            .enumerate()
            .map(|(i, (req, lim))| {
                format!(
                    "  - name: {prefix}{i}\n    image: busybox\n    resources:\n      requests: {}\n      limits: {}\n",
                    list(req),
                    list(lim)
                )
            })
            .collect::<String>()
    };
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns, uid: u1}}\nspec:\n  containers:\n{}",
        render(containers, "c")
    );
    if !init.is_empty() {
        y.push_str(&format!("  initContainers:\n{}", render(init, "i")));
    }
    pod(&y)
}

/// `pod_res` with pod-level resources (`spec.resources`): `(requests, limits)` as `cpu,memory`.
pub(crate) fn pod_level_res(
    pod_level: (&str, &str),
    containers: &[(&str, &str)],
    init: &[(&str, &str)],
) -> Pod {
    let mut p = pod_res(containers, init);
    let list = |s: &str| {
        let mut out = std::collections::BTreeMap::new();
        let mut parts = s.split(',');
        for name in ["cpu", "memory"] {
            if let Some(v) = parts.next().filter(|v| !v.is_empty()) {
                out.insert(
                    name.to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string()),
                );
            }
        }
        (!out.is_empty()).then_some(out)
    };
    p.spec.as_mut().unwrap().resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
        requests: list(pod_level.0),
        limits: list(pod_level.1),
        ..Default::default()
    });
    p
}

pub(crate) fn v(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

pub(crate) struct Fixture {
    pub(crate) pod: Pod,
    pub(crate) image: ImageConfig,
}

impl Fixture {
    pub(crate) fn new(container_yaml: &str) -> Self {
        let y = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: ns\n  uid: uid-1\n  labels: {{app: web, tier: \"front\"}}\n  annotations: {{note: hello}}\nspec:\n  nodeName: node-1\n  serviceAccountName: sa\n  containers:\n  - {}\n",
            container_yaml.replace('\n', "\n    ")
        );
        Fixture {
            pod: pod(&y),
            image: ImageConfig {
                entrypoint: v(&["/entry"]),
                cmd: v(&["default-cmd"]),
                env: v(&["PATH=/usr/bin:/bin", "IMG=1", "HOME=/root"]),
                working_dir: "/img".into(),
                user: String::new(),
                stop_signal: None,
            },
        }
    }
    pub(crate) fn spec(&self) -> Result<ContainerSpec, TranslateError> {
        self.spec_with(0, None)
    }
    pub(crate) fn spec_with(
        &self,
        attempt: u32,
        term: Option<PathBuf>,
    ) -> Result<ContainerSpec, TranslateError> {
        container_spec(&ContainerContext {
            pod: &self.pod,
            container: &self.pod.spec.as_ref().unwrap().containers[0],
            image: &self.image,
            image_ref: "busybox:1.36",
            image_id: "sha256:abc",
            attempt,
            mounts: Vec::new(),
            node_memory_bytes: 8 << 30,
            node_cpu_millis: 4000,
            termination_message_path: term,
            objects: None,
        })
    }
}

pub(crate) fn env_of(spec: &ContainerSpec) -> Vec<(String, String)> {
    spec.env.clone()
}

pub(crate) fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
