//! The container config: argv from command/args and the image, the labels the runtime keeps
//! with a container, and the whole [`ContainerSpec`] of one attempt.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bosun_runtime::image::ImageConfig;
use bosun_runtime::{ContainerSpec, Mount, Propagation};
use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};
use sha2::{Digest, Sha256};

use super::*;
use crate::projection::ApiObjects;

/// An ephemeral container as a [`Container`] (the fields they share; the API rejects ports,
/// probes, resources and lifecycle on ephemeral containers) and its `targetContainerName`.
pub fn ephemeral_container(e: &EphemeralContainer) -> Option<(Container, Option<String>)> {
    let mut v = serde_json::to_value(e).ok()?;
    let target = v
        .as_object_mut()?
        .remove("targetContainerName")
        .and_then(|t| t.as_str().map(str::to_string))
        .filter(|t| !t.is_empty());
    let c: Container = serde_json::from_value(v).ok()?;
    Some((c, target))
}

/// The final argv: Kubernetes command/args (already expanded) over the image's ENTRYPOINT/CMD,
/// like containerd's CRI plugin.
pub fn build_args(command: &[String], args: &[String], image: &ImageConfig) -> Option<Vec<String>> {
    let mut command = command.to_vec();
    let mut args = args.to_vec();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    if command.is_empty() && args.is_empty() {
        return None;
    }
    command.extend(args);
    Some(command)
}

/// A hash of everything in the container spec that requires a restart when it changes
/// (resources are left out: they can change in place).
pub fn container_hash(container: &Container) -> String {
    let mut c = container.clone();
    c.resources = None;
    c.resize_policy = None;
    let bytes = serde_json::to_vec(&c).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// The id the CRI socket gives a container (`crictl ps`, `bosun pods`): the hex SHA-256 of the
/// runtime's id (`<pod uid>_<name>_<attempt>`), 64 hex digits as containerd's, so the
/// 13-character prefix crictl prints names one container (the runtime's ids of one pod share
/// their first 36 characters). Derived, never stored: the same on every agent start.
pub fn cri_container_id(runtime_id: &str) -> String {
    hex::encode(Sha256::digest(runtime_id.as_bytes()))
}

/// How many characters of an id crictl and `bosun pods` print.
pub const SHORT_ID_LEN: usize = 13;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const LABEL_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const LABEL_CONTAINER_HASH: &str = "bosun.container.hash";

/// Default terminationMessagePath.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Everything `container_spec` needs beyond the pod.
pub struct ContainerContext<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    /// The image reference as written in the pod.
    pub image_ref: &'a str,
    /// The resolved image id.
    pub image_id: &'a str,
    pub attempt: u32,
    /// Volume mounts already resolved to host paths (see [`mount_requests`]).
    pub mounts: Vec<Mount>,
    /// Node allocatable memory: OOM score of burstable pods and unset memory limits in
    /// `resourceFieldRef`.
    pub node_memory_bytes: u64,
    /// Node allocatable cpu in millicores, for unset cpu limits in `resourceFieldRef`.
    pub node_cpu_millis: u64,
    /// Host file bind-mounted at the container's terminationMessagePath.
    pub termination_message_path: Option<PathBuf>,
    /// configMaps and secrets for the environment (cluster mode only).
    pub objects: Option<&'a ApiObjects>,
}

/// Whether the container's environment names the pod's own address (`status.podIP(s)`), which
/// is known only once the pod network is set up.
pub fn env_needs_pod_ip(c: &Container) -> bool {
    c.env.iter().flatten().any(|e| {
        e.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| matches!(f.field_path.as_str(), "status.podIP" | "status.podIPs"))
    })
}

/// The runtime spec of one container run.
pub fn container_spec(ctx: &ContainerContext) -> Result<ContainerSpec, TranslateError> {
    let pod = ctx.pod;
    let c = ctx.container;
    let node = NodeAllocatable {
        memory_bytes: ctx.node_memory_bytes,
        cpu_millis: ctx.node_cpu_millis,
    };
    let pod_env = container_env(pod, c, node, ctx.objects)?;
    let vars: HashMap<String, String> = pod_env.iter().cloned().collect();
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, mapping_for(&vars)))
        .collect();
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|s| expand(s, mapping_for(&vars)))
        .collect();
    let argv = build_args(&command, &args, ctx.image).ok_or_else(|| TranslateError::NoCommand {
        container: c.name.clone(),
    })?;
    let env = merge_env(&ctx.image.env, &pod_env);
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(ctx.image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let user = container_user(pod, c, &ctx.image.user)?;
    let security = container_security(pod, c)?;
    let signal_name = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.clone())
        .or_else(|| ctx.image.stop_signal.clone())
        .filter(|s| !s.is_empty());
    let stop_signal = match signal_name {
        None => libc::SIGTERM,
        Some(s) => parse_signal(&s).ok_or_else(|| TranslateError::StopSignal {
            container: c.name.clone(),
            signal: s.clone(),
        })?,
    };
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let pod_namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_POD_NAME.to_string(), pod_name.clone());
    labels.insert(LABEL_POD_NAMESPACE.to_string(), pod_namespace.clone());
    labels.insert(LABEL_POD_UID.to_string(), pod_uid.clone());
    labels.insert(LABEL_CONTAINER_NAME.to_string(), c.name.clone());
    labels.insert(LABEL_RESTART_COUNT.to_string(), ctx.attempt.to_string());
    labels.insert(LABEL_CONTAINER_HASH.to_string(), container_hash(c));
    let mut mounts = ctx.mounts.clone();
    if let Some(host) = &ctx.termination_message_path {
        let dest = c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
        mounts.push(Mount {
            destination: PathBuf::from(dest),
            source: host.clone(),
            readonly: false,
            propagation: Propagation::Private,
        });
    }
    Ok(ContainerSpec {
        id: container_id(&pod_uid, &c.name, ctx.attempt),
        name: c.name.clone(),
        pod_uid,
        pod_namespace,
        pod_name,
        attempt: ctx.attempt,
        image: ctx.image_ref.to_string(),
        image_id: ctx.image_id.to_string(),
        args: argv,
        env,
        cwd,
        user,
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        mounts,
        resources: container_resources(pod, c),
        oom_score_adj: oom_score_adj(pod, c, ctx.node_memory_bytes),
        security,
        stop_signal,
        termination_message_path: ctx.termination_message_path.clone(),
        labels,
        // volumeDevices: resolved by the worker from the pod's block volumes.
        devices: Vec::new(),
        cdi_devices: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::testing::*;
    use bosun_runtime::User;

    // --- argv ------------------------------------------------------------------------------------

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..ImageConfig::default()
        }
    }

    #[test]
    fn argv_rules_table() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a [&'a str]>,
        );
        let cases: &[Case] = &[
            // command, args, entrypoint, cmd -> argv
            (
                &[],
                &[],
                &["/ep"],
                &["c1", "c2"],
                Some(&["/ep", "c1", "c2"]),
            ),
            (&[], &[], &[], &["/bin/sh"], Some(&["/bin/sh"])),
            (&[], &[], &["/ep"], &[], Some(&["/ep"])),
            (&["/cmd"], &[], &["/ep"], &["c1"], Some(&["/cmd"])),
            (&["/cmd"], &["a1"], &["/ep"], &["c1"], Some(&["/cmd", "a1"])),
            (
                &[],
                &["a1", "a2"],
                &["/ep"],
                &["c1"],
                Some(&["/ep", "a1", "a2"]),
            ),
            (&[], &["a1"], &[], &["c1"], Some(&["a1"])),
            (&[], &[], &[""], &["c1"], Some(&["c1"])),
            (&[], &["a1"], &[""], &[], Some(&["a1"])),
            (&[], &[], &[], &[], None),
            (&[], &[], &[""], &[], None),
        ];
        for (i, (command, args, ep, cmd, want)) in cases.iter().enumerate() {
            let got = build_args(&v(command), &v(args), &image(ep, cmd));
            assert_eq!(got, want.map(v), "case {i}");
        }
    }

    #[test]
    fn env_naming_the_pod_ip() {
        let c: Container = serde_yaml::from_str(
            "name: app\nimage: x\nenv:\n- {name: A, value: b}\n- {name: H, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}",
        )
        .expect("yaml");
        assert!(!env_needs_pod_ip(&c));
        for path in ["status.podIP", "status.podIPs"] {
            let c: Container = serde_yaml::from_str(&format!(
                "name: app\nimage: x\nenv:\n- {{name: P, valueFrom: {{fieldRef: {{fieldPath: {path}}}}}}}"
            ))
            .expect("yaml");
            assert!(env_needs_pod_ip(&c), "{path}");
        }
    }

    #[test]
    fn container_spec_basics() {
        let f = Fixture::new("name: app\nimage: busybox:1.36\ntty: true\nstdin: true");
        let s = f.spec_with(2, Some(PathBuf::from("/host/term"))).unwrap();
        assert_eq!(s.id, "uid-1_app_2");
        assert_eq!(s.name, "app");
        assert_eq!(s.pod_uid, "uid-1");
        assert_eq!(s.pod_name, "web");
        assert_eq!(s.pod_namespace, "ns");
        assert_eq!(s.attempt, 2);
        assert_eq!(s.image, "busybox:1.36");
        assert_eq!(s.image_id, "sha256:abc");
        assert_eq!(s.args, v(&["/entry", "default-cmd"]));
        assert_eq!(s.cwd, "/img");
        assert_eq!(s.user, User::Id { uid: 0, gid: None });
        assert!(s.tty && s.stdin);
        assert_eq!(s.stop_signal, 15);
        assert_eq!(s.oom_score_adj, 1000);
        assert_eq!(s.labels[LABEL_POD_NAME], "web");
        assert_eq!(s.labels[LABEL_POD_NAMESPACE], "ns");
        assert_eq!(s.labels[LABEL_POD_UID], "uid-1");
        assert_eq!(s.labels[LABEL_CONTAINER_NAME], "app");
        assert_eq!(s.labels[LABEL_RESTART_COUNT], "2");
        assert_eq!(s.labels[LABEL_CONTAINER_HASH].len(), 16);
        assert_eq!(
            s.termination_message_path,
            Some(PathBuf::from("/host/term"))
        );
        assert_eq!(
            s.mounts,
            vec![Mount {
                destination: PathBuf::from("/dev/termination-log"),
                source: PathBuf::from("/host/term"),
                readonly: false,
                propagation: Propagation::Private,
            }]
        );
        assert_eq!(s.security.capabilities, v(&DEFAULT_CAPABILITIES));
        assert!(s.security.mask_paths && !s.security.privileged && !s.security.no_new_privileges);
    }

    #[test]
    fn working_dir_fallbacks() {
        let f = Fixture::new("name: app\nimage: x\nworkingDir: /work");
        assert_eq!(f.spec().unwrap().cwd, "/work");
        let mut f = Fixture::new("name: app\nimage: x");
        f.image.working_dir = String::new();
        assert_eq!(f.spec().unwrap().cwd, "/");
    }

    #[test]
    fn no_command_is_an_error() {
        let mut f = Fixture::new("name: app\nimage: x");
        f.image.entrypoint.clear();
        f.image.cmd.clear();
        assert_eq!(
            f.spec().unwrap_err(),
            TranslateError::NoCommand {
                container: "app".into()
            }
        );
        assert!(f
            .spec()
            .unwrap_err()
            .to_string()
            .contains("no command specified"));
    }

    #[test]
    fn container_hash_tracks_spec_not_resources() {
        let a = Fixture::new("name: app\nimage: x:1");
        let b = Fixture::new("name: app\nimage: x:2");
        let c = Fixture::new("name: app\nimage: x:1\nresources: {limits: {cpu: 1}}");
        let h = |f: &Fixture| f.spec().unwrap().labels[LABEL_CONTAINER_HASH].clone();
        assert_ne!(h(&a), h(&b));
        assert_eq!(h(&a), h(&c));
        assert_eq!(h(&a), h(&Fixture::new("name: app\nimage: x:1")));
    }

    #[test]
    fn ephemeral_containers_become_containers_with_their_target() {
        let e: EphemeralContainer = serde_yaml::from_str(
            "name: debugger\nimage: busybox\nstdin: true\ntty: true\ntargetContainerName: app\nvolumeMounts: [{name: data, mountPath: /data}]\n",
        )
        .expect("parse");
        let (c, target) = ephemeral_container(&e).expect("convert");
        assert_eq!(c.name, "debugger");
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.stdin, Some(true));
        assert_eq!(c.tty, Some(true));
        assert_eq!(c.volume_mounts.map(|v| v.len()), Some(1));
        assert_eq!(target.as_deref(), Some("app"));
        let e = EphemeralContainer {
            name: "d".into(),
            ..Default::default()
        };
        assert_eq!(ephemeral_container(&e).expect("convert").1, None);
    }
}
