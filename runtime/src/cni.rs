//! Pod networking through CNI: bosun calls the plugins itself (there is no CRI runtime below it).
//!
//! [`setup`] reads the first network config list of the conf folder (sorted by file name), runs
//! ADD for each plugin of the list in order with the sandbox's pinned net namespace, chaining
//! `prevResult`, and passes `runtimeConfig.portMappings` to plugins that declare the capability.
//! Before the first plugin runs, the config used and the arguments are stored in
//! `<sandbox dir>/cni.json`; the final result is added when ADD completed. [`teardown`] runs DEL
//! in reverse order from that file, so DEL works after an agent restart or crash (also for an ADD
//! that was interrupted half way) and does not depend on the conf folder being unchanged.
//!
//! Plugins are run through [`crate::reaper`] (never `tokio::process`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// File in the sandbox folder holding what DEL needs.
pub const STATE_FILE: &str = "cni.json";
/// The interface name inside the pod.
pub const IFNAME: &str = "eth0";
/// How long one plugin call may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the CNI configuration and plugins live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniConfig {
    /// Folder of `*.conflist` (and `*.conf`) files (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Folders searched for plugin binaries, in order.
    pub bin_dirs: Vec<PathBuf>,
}

/// One `hostPort` mapping for the portmap plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lowercase, as CNI wants it).
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty", default)]
    pub host_ip: String,
}

/// The pod a network is set up for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetworkSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pinned net namespace file of the sandbox.
    pub netns: PathBuf,
    pub port_mappings: Vec<PortMapping>,
}

/// What [`setup`] returns (and [`status`] reads back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Network name from the config list.
    pub network: String,
    /// The pod's addresses, without prefix length, IPv4 first.
    pub ips: Vec<String>,
}

/// What `cni.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    conflist: Value,
    spec: PodNetworkSpec,
    bin_dirs: Vec<PathBuf>,
    /// The final ADD result; `None` while ADD runs (or when it failed half way).
    result: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("cni conf dir {dir}: {source}")]
    ConfDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no network config list in {dir}")]
    NoConfig { dir: PathBuf },
    #[error("cni config {path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("cni plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("cni plugin {plugin} {command} for pod {pod_uid}: {message}")]
    Plugin {
        plugin: String,
        command: String,
        pod_uid: String,
        message: String,
    },
    #[error("cni state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The default network config list bosun writes when the conf folder has none: a bridge with
/// host-local IPAM on `subnet`, plus portmap for hostPorts. lo is brought up by the sandbox
/// helper, so the loopback plugin is not in the list.
pub fn default_conflist(
    name: &str,
    bridge: &str,
    subnet: &str,
    data_dir: Option<&Path>,
    ip_masq: bool,
) -> Value {
    let mut ipam = json!({
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    });
    if let Some(d) = data_dir {
        ipam["dataDir"] = json!(d);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": ip_masq,
                "hairpinMode": true,
                "ipam": ipam,
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            }
        ]
    })
}

/// Writes `10-bosun.conflist` with [`default_conflist`] when `conf_dir` holds no config.
/// Returns the file written, if any.
pub fn ensure_default_conflist(conf_dir: &Path, subnet: &str) -> Result<Option<PathBuf>, CniError> {
    if find_config(conf_dir)?.is_some() {
        return Ok(None);
    }
    let err = |source| CniError::ConfDir {
        dir: conf_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(conf_dir).map_err(err)?;
    let path = conf_dir.join("10-bosun.conflist");
    let text = serde_json::to_vec_pretty(&default_conflist("bosun", "bosun0", subnet, None, true))
        .unwrap_or_default();
    bosun_fsutil::write_atomic(&path, &text, bosun_fsutil::Durability::Volatile).map_err(err)?;
    tracing::info!(path = %path.display(), subnet, "wrote the default cni network config");
    Ok(Some(path))
}

/// The first `*.conflist` or `*.conf` (sorted by name) of `conf_dir`, as a config list.
pub fn find_config(conf_dir: &Path) -> Result<Option<(PathBuf, Value)>, CniError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CniError::ConfDir {
                dir: conf_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let Some(path) = files.into_iter().next() else {
        return Ok(None);
    };
    let bad = |message: String| CniError::BadConfig {
        path: path.clone(),
        message,
    };
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let list = normalize(v).map_err(bad)?;
    Ok(Some((path, list)))
}

/// A single-plugin `.conf` becomes a list of one; a list is checked.
fn normalize(v: Value) -> Result<Value, String> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no network name")?
        .to_string();
    let version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.4.0")
        .to_string();
    if let Some(plugins) = v.get("plugins") {
        let ok = plugins
            .as_array()
            .map(|a| !a.is_empty() && a.iter().all(|p| p.get("type").is_some()))
            .unwrap_or(false);
        if !ok {
            return Err("plugins must be a non-empty list of objects with a type".into());
        }
        return Ok(v);
    }
    if v.get("type").is_none() {
        return Err("neither plugins nor type".into());
    }
    let mut plugin = v;
    if let Some(o) = plugin.as_object_mut() {
        o.remove("name");
        o.remove("cniVersion");
    }
    Ok(json!({"cniVersion": version, "name": name, "plugins": [plugin]}))
}

/// The network state recorded for a sandbox, if ADD completed.
pub fn status(sandbox_dir: &Path) -> Option<NetworkStatus> {
    let state = read_state(sandbox_dir)?;
    let result = state.result.as_ref()?;
    Some(NetworkStatus {
        network: network_name(&state.conflist),
        ips: result_ips(result),
    })
}

/// Whether the sandbox has CNI state (complete or partial) that DEL must undo.
pub fn has_state(sandbox_dir: &Path) -> bool {
    sandbox_dir.join(STATE_FILE).exists()
}

fn read_state(sandbox_dir: &Path) -> Option<State> {
    let bytes = std::fs::read(sandbox_dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_state(sandbox_dir: &Path, state: &State) -> Result<(), CniError> {
    let path = sandbox_dir.join(STATE_FILE);
    let err = |source| CniError::State {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(state).map_err(|e| err(std::io::Error::other(e)))?;
    bosun_fsutil::write_atomic(&path, &bytes, bosun_fsutil::Durability::Volatile).map_err(err)
}

fn network_name(conflist: &Value) -> String {
    conflist
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The addresses of a CNI result (0.3.x, 0.4.0, 1.0.0 all use `ips[].address`), IPv4 first.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

/// CNI_ARGS as the kubelet/CRI runtimes pass them.
pub fn cni_args(spec: &PodNetworkSpec) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        spec.namespace, spec.name, spec.uid, spec.uid
    )
}

/// The stdin config of one plugin of a list.
pub fn plugin_config(
    conflist: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    port_mappings: &[PortMapping],
) -> Value {
    let mut conf = plugin.clone();
    if let Some(o) = conf.as_object_mut() {
        o.insert("name".into(), json!(network_name(conflist)));
        o.insert(
            "cniVersion".into(),
            conflist
                .get("cniVersion")
                .cloned()
                .unwrap_or(json!("0.4.0")),
        );
        if let Some(p) = prev {
            o.insert("prevResult".into(), p.clone());
        }
        let wants_ports = plugin
            .get("capabilities")
            .and_then(|c| c.get("portMappings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if wants_ports && !port_mappings.is_empty() {
            o.insert(
                "runtimeConfig".into(),
                json!({ "portMappings": port_mappings }),
            );
        }
    }
    conf
}

fn find_plugin(bin_dirs: &[PathBuf], name: &str) -> Result<PathBuf, CniError> {
    if name.contains('/') || name.is_empty() {
        return Err(CniError::PluginNotFound {
            plugin: name.into(),
            dirs: "(invalid name)".into(),
        });
    }
    bin_dirs
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: name.into(),
            dirs: join_paths(bin_dirs),
        })
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs one plugin command; returns its stdout parsed as JSON (or Null when empty).
async fn run_plugin(
    bin_dirs: &[PathBuf],
    command: &str,
    spec: &PodNetworkSpec,
    conf: &Value,
) -> Result<Value, CniError> {
    let plugin = conf
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let bin = find_plugin(bin_dirs, &plugin)?;
    let fail = |message: String| CniError::Plugin {
        plugin: plugin.clone(),
        command: command.into(),
        pod_uid: spec.uid.clone(),
        message,
    };
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &spec.uid)
        .env("CNI_NETNS", &spec.netns)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_ARGS", cni_args(spec))
        .env("CNI_PATH", join_paths(bin_dirs));
    let input = serde_json::to_vec(conf).unwrap_or_default();
    tracing::debug!(plugin, command, "running cni plugin");
    let run = output_with_stdin(&mut cmd, input);
    let (code, out, err) = tokio::time::timeout(PLUGIN_TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("timed out after {PLUGIN_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    if code != 0 {
        let msg = serde_json::from_slice::<Value>(&out)
            .ok()
            .map(|v| {
                let m = v.get("msg").and_then(Value::as_str).unwrap_or_default();
                let d = v.get("details").and_then(Value::as_str).unwrap_or_default();
                if d.is_empty() {
                    m.to_string()
                } else {
                    format!("{m}: {d}")
                }
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(if out.is_empty() { &err } else { &out })
                    .trim()
                    .to_string()
            });
        return Err(fail(format!("exit code {code}: {msg}")));
    }
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out).map_err(|e| fail(format!("bad result: {e}")))
}

/// Runs a plugin with its config on stdin; the exit code and both streams.
async fn output_with_stdin(
    cmd: &mut Command,
    input: Vec<u8>,
) -> std::io::Result<(i32, Vec<u8>, Vec<u8>)> {
    let (exit, out, err) = crate::reaper::output_with_input(cmd, Some(&input)).await?;
    Ok((exit.code(), out, err))
}

/// ADD: attaches the pod's net namespace to the first network of `cfg.conf_dir`. On failure the
/// plugins that ran are undone (DEL) and the state removed.
pub async fn setup(
    cfg: &CniConfig,
    sandbox_dir: &Path,
    spec: &PodNetworkSpec,
) -> Result<NetworkStatus, CniError> {
    let (path, conflist) = find_config(&cfg.conf_dir)?.ok_or_else(|| CniError::NoConfig {
        dir: cfg.conf_dir.clone(),
    })?;
    tracing::debug!(config = %path.display(), "cni add");
    let mut state = State {
        conflist: conflist.clone(),
        spec: spec.clone(),
        bin_dirs: cfg.bin_dirs.clone(),
        result: None,
    };
    write_state(sandbox_dir, &state)?;
    let plugins = conflist
        .get("plugins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut prev: Option<Value> = None;
    for plugin in &plugins {
        let conf = plugin_config(&conflist, plugin, prev.as_ref(), &spec.port_mappings);
        match run_plugin(&cfg.bin_dirs, "ADD", spec, &conf).await {
            Ok(Value::Null) => {}
            Ok(r) => prev = Some(r),
            Err(e) => {
                if let Err(del) = teardown(sandbox_dir).await {
                    tracing::warn!(error = %del, "undoing a failed cni add");
                }
                return Err(e);
            }
        }
    }
    let result = prev.unwrap_or_else(|| json!({}));
    let status = NetworkStatus {
        network: network_name(&conflist),
        ips: result_ips(&result),
    };
    state.result = Some(result);
    write_state(sandbox_dir, &state)?;
    tracing::info!(network = %status.network, ips = ?status.ips, "pod network set up");
    Ok(status)
}

/// DEL, in reverse plugin order, from the state stored by [`setup`]. Idempotent: without state
/// there is nothing to do. Continues past plugin errors and reports the first; the state is kept
/// when something failed so that a later call retries.
pub async fn teardown(sandbox_dir: &Path) -> Result<(), CniError> {
    teardown_state(&sandbox_dir.join(STATE_FILE)).await
}

/// [`teardown`] from the state file at `path` (a sandbox's, or one parked by [`park`]).
async fn teardown_state(path: &Path) -> Result<(), CniError> {
    let Some(state) = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
    else {
        let _ = std::fs::remove_file(path);
        return Ok(());
    };
    let plugins = state
        .conflist
        .get("plugins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut first = None;
    for plugin in plugins.iter().rev() {
        let conf = plugin_config(
            &state.conflist,
            plugin,
            state.result.as_ref(),
            &state.spec.port_mappings,
        );
        match run_plugin(&state.bin_dirs, "DEL", &state.spec, &conf).await {
            Ok(_) => {}
            // A plugin that is not installed cannot undo anything (nor, as in an ADD that
            // failed on it, have done anything): retrying would hold the pod forever.
            Err(e @ CniError::PluginNotFound { .. }) => {
                tracing::warn!(error = %e, "cni del skipped: nothing can undo that plugin's part");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cni del");
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => {
            let _ = std::fs::remove_file(path);
            tracing::info!(uid = %state.spec.uid, "pod network torn down");
            Ok(())
        }
    }
}

/// Where [`park`] keeps the networks still to give back: persistent, as the IPAM stores are
/// (`<data_dir>/cni-parked`).
pub fn parked_dir(paths: &crate::RuntimePaths) -> PathBuf {
    paths.data_dir.join("cni-parked")
}

/// How often the runtime retries the DEL of parked networks.
pub const PARKED_RETRY: Duration = Duration::from_secs(10);

/// Keeps what DEL needs of a sandbox whose network could not be given back, outside the sandbox
/// (which is removed): `<parked_dir>/<pod uid>.json`. [`retry_parked`] gives it back later, so a
/// failed DEL (a plugin that crashed, a full disk under the IPAM store) never leaks the pod's
/// address, as containerd keeps a sandbox whose network teardown failed and the kubelet retries.
pub fn park(sandbox_dir: &Path, parked_dir: &Path, pod_uid: &str) -> std::io::Result<()> {
    let from = sandbox_dir.join(STATE_FILE);
    if !from.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(parked_dir)?;
    std::fs::rename(&from, parked_dir.join(format!("{pod_uid}.json")))
}

/// DEL for every network parked in `parked_dir`; returns how many are still parked (their DEL
/// failed again).
pub async fn retry_parked(parked_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parked_dir) else {
        return 0;
    };
    let mut left = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        if let Err(err) = teardown_state(&path).await {
            tracing::warn!(state = %path.display(), error = %err, "parked pod network: cni del failed again");
            left += 1;
        }
    }
    left
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> PodNetworkSpec {
        PodNetworkSpec {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
            netns: "/run/x/net".into(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
        }
    }

    /// A pod network whose DEL fails is parked, not lost: its state leaves the sandbox folder
    /// (removed next) and DEL is retried from it until it succeeds. The "plugin" is a script
    /// that fails DEL while a file exists (the real plugins' DEL is checked by the privileged
    /// and cluster tiers).
    #[tokio::test]
    async fn a_failed_del_is_parked_and_retried_until_it_succeeds() {
        use std::os::unix::fs::PermissionsExt;
        crate::reaper::install().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, conf, sandbox, parked) = (
            t.join("bin"),
            t.join("conf"),
            t.join("sb"),
            t.join("parked"),
        );
        for d in [&bin, &conf, &sandbox] {
            std::fs::create_dir_all(d).unwrap();
        }
        let (log, fail) = (t.join("log"), t.join("fail"));
        let script = format!(
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID\" >> {log}\n\
             if [ \"$CNI_COMMAND\" = DEL ] && [ -e {fail} ]; then\n\
             echo '{{\"code\": 11, \"msg\": \"ipam store busy\"}}'; exit 1; fi\n\
             echo '{{\"cniVersion\": \"1.0.0\", \"ips\": [{{\"address\": \"10.9.0.5/24\"}}]}}'\n",
            log = log.display(),
            fail = fail.display()
        );
        std::fs::write(bin.join("fake"), script).unwrap();
        std::fs::set_permissions(bin.join("fake"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            conf.join("10-fake.conflist"),
            r#"{"cniVersion": "1.0.0", "name": "fake", "plugins": [{"type": "fake"}]}"#,
        )
        .unwrap();
        let cfg = CniConfig {
            conf_dir: conf,
            bin_dirs: vec![bin],
        };
        let st = setup(&cfg, &sandbox, &spec()).await.unwrap();
        assert_eq!(st.ips, vec!["10.9.0.5".to_string()]);

        std::fs::write(&fail, "").unwrap();
        assert!(teardown(&sandbox).await.is_err(), "DEL fails");
        assert!(has_state(&sandbox), "a failed DEL keeps the state");
        park(&sandbox, &parked, "u1").unwrap();
        assert!(!has_state(&sandbox), "parked: out of the sandbox folder");
        assert!(parked.join("u1.json").exists());
        assert_eq!(
            retry_parked(&parked).await,
            1,
            "still failing: still parked"
        );
        assert!(parked.join("u1.json").exists());

        std::fs::remove_file(&fail).unwrap();
        assert_eq!(retry_parked(&parked).await, 0);
        assert!(!parked.join("u1.json").exists(), "given back: forgotten");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "ADD u1\nDEL u1\nDEL u1\nDEL u1\n"
        );
        // Nothing parked, nothing to park: both are no-ops.
        park(&sandbox, &parked, "u1").unwrap();
        assert_eq!(retry_parked(&parked).await, 0);
    }

    #[test]
    fn args_carry_pod_identity() {
        assert_eq!(
            cni_args(&spec()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=u1;K8S_POD_UID=u1"
        );
    }

    #[test]
    fn plugin_config_chains_and_adds_ports_only_with_capability() {
        let list = default_conflist("n", "br", "10.1.0.0/24", None, false);
        let plugins = list["plugins"].as_array().unwrap();
        let prev = json!({"ips": [{"address": "10.1.0.2/24"}]});
        let bridge = plugin_config(&list, &plugins[0], None, &spec().port_mappings);
        assert_eq!(bridge["name"], "n");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());
        let pm = plugin_config(&list, &plugins[1], Some(&prev), &spec().port_mappings);
        assert_eq!(pm["prevResult"], prev);
        assert_eq!(pm["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(pm["runtimeConfig"]["portMappings"][0]["containerPort"], 80);
        assert!(pm["runtimeConfig"]["portMappings"][0]
            .get("hostIP")
            .is_none());
    }

    #[test]
    fn ips_from_result_ipv4_first() {
        let r = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24"}]});
        assert_eq!(result_ips(&r), vec!["10.1.0.5", "fd00::5"]);
    }

    #[test]
    fn finds_first_config_and_wraps_single_conf() {
        let d = tempfile::tempdir().unwrap();
        assert!(find_config(d.path()).unwrap().is_none());
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"cniVersion":"0.4.0","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("ignored.txt"), "x").unwrap();
        let (p, l) = find_config(d.path()).unwrap().unwrap();
        assert!(p.ends_with("20-b.conf"));
        assert_eq!(l["name"], "b");
        assert_eq!(l["plugins"][0]["type"], "bridge");
        assert!(ensure_default_conflist(d.path(), "10.9.0.0/24")
            .unwrap()
            .is_none());
        let e = tempfile::tempdir().unwrap();
        let written = ensure_default_conflist(e.path(), "10.9.0.0/24")
            .unwrap()
            .unwrap();
        let (p, l) = find_config(e.path()).unwrap().unwrap();
        assert_eq!(p, written);
        assert_eq!(
            l["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.9.0.0/24"
        );
    }
}
