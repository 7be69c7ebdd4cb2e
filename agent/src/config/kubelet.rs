//! bosun in the kubelet's place: the kubelet flags and KubeletConfiguration keys that kubeadm (or
//! an operator used to the kubelet) passes, each honoured or accepted with one clear warning.
//!
//! Flags come in three kinds. bosun's own (`--kubeconfig`, `--node-ip`, ...) go to clap as they
//! are. A kubelet flag that stands for a KubeletConfiguration key (`--cluster-dns`, `--max-pods`,
//! `--container-runtime-endpoint`, ...) becomes an override of that key, so it is honoured or
//! warned about exactly as the key in the file would be (flags win over the file, as with the
//! kubelet). A kubelet flag with no meaning for bosun (`--pod-infra-container-image`, ...) is
//! dropped with a warning that says why. Anything else is left to clap, which rejects it as the
//! kubelet rejects an unknown flag. All of it is pure: [`split_args`] and [`config_key_warning`]
//! are table-tested below.

use serde_json::{Map, Value};

/// The kubelet version bosun stands in for: `kubelet --version` prints `Kubernetes <this>`
/// (kubeadm's preflight parses it for its version-skew check) and the Node's `kubeletVersion`.
pub const KUBELET_VERSION: &str = concat!("v1.36.5+bosun-", env!("CARGO_PKG_VERSION"));

/// How a kubelet flag's value turns into a KubeletConfiguration value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A string (also durations and quantities, which the file holds as strings).
    Str,
    /// An integer.
    Int,
    /// `true`/`false`; the bare flag means true.
    Bool,
    /// A comma-separated list.
    List,
    /// `k=v,k2=v2` (a map of strings).
    Map,
    /// `k<v,k2<v2` (a map of strings: the eviction thresholds' flags).
    LangleMap,
    /// `Gate=true,Other=false` (a map of booleans).
    Gates,
}

/// Kubelet flags that set a KubeletConfiguration key (the kubelet's deprecated config flags),
/// with the key's path in the file.
const CONFIG_FLAGS: &[(&str, &str, Kind)] = &[
    ("address", "address", Kind::Str),
    (
        "anonymous-auth",
        "authentication.anonymous.enabled",
        Kind::Bool,
    ),
    (
        "authentication-token-webhook",
        "authentication.webhook.enabled",
        Kind::Bool,
    ),
    (
        "authentication-token-webhook-cache-ttl",
        "authentication.webhook.cacheTTL",
        Kind::Str,
    ),
    ("authorization-mode", "authorization.mode", Kind::Str),
    (
        "authorization-webhook-cache-authorized-ttl",
        "authorization.webhook.cacheAuthorizedTTL",
        Kind::Str,
    ),
    (
        "authorization-webhook-cache-unauthorized-ttl",
        "authorization.webhook.cacheUnauthorizedTTL",
        Kind::Str,
    ),
    ("cgroup-driver", "cgroupDriver", Kind::Str),
    ("cgroups-per-qos", "cgroupsPerQOS", Kind::Bool),
    (
        "client-ca-file",
        "authentication.x509.clientCAFile",
        Kind::Str,
    ),
    ("cluster-dns", "clusterDNS", Kind::List),
    ("cluster-domain", "clusterDomain", Kind::Str),
    ("container-log-max-files", "containerLogMaxFiles", Kind::Int),
    ("container-log-max-size", "containerLogMaxSize", Kind::Str),
    (
        "container-runtime-endpoint",
        "containerRuntimeEndpoint",
        Kind::Str,
    ),
    ("cpu-manager-policy", "cpuManagerPolicy", Kind::Str),
    (
        "enforce-node-allocatable",
        "enforceNodeAllocatable",
        Kind::List,
    ),
    ("event-qps", "eventRecordQPS", Kind::Int),
    ("eviction-hard", "evictionHard", Kind::LangleMap),
    (
        "eviction-max-pod-grace-period",
        "evictionMaxPodGracePeriod",
        Kind::Int,
    ),
    (
        "eviction-minimum-reclaim",
        "evictionMinimumReclaim",
        Kind::Map,
    ),
    (
        "eviction-pressure-transition-period",
        "evictionPressureTransitionPeriod",
        Kind::Str,
    ),
    ("eviction-soft", "evictionSoft", Kind::LangleMap),
    (
        "eviction-soft-grace-period",
        "evictionSoftGracePeriod",
        Kind::Map,
    ),
    ("fail-swap-on", "failSwapOn", Kind::Bool),
    ("feature-gates", "featureGates", Kind::Gates),
    ("file-check-frequency", "fileCheckFrequency", Kind::Str),
    ("hairpin-mode", "hairpinMode", Kind::Str),
    ("healthz-bind-address", "healthzBindAddress", Kind::Str),
    ("healthz-port", "healthzPort", Kind::Int),
    ("http-check-frequency", "httpCheckFrequency", Kind::Str),
    (
        "image-gc-high-threshold",
        "imageGCHighThresholdPercent",
        Kind::Int,
    ),
    (
        "image-gc-low-threshold",
        "imageGCLowThresholdPercent",
        Kind::Int,
    ),
    ("image-service-endpoint", "imageServiceEndpoint", Kind::Str),
    ("kube-api-burst", "kubeAPIBurst", Kind::Int),
    ("kube-api-qps", "kubeAPIQPS", Kind::Int),
    ("kube-reserved", "kubeReserved", Kind::Map),
    ("kubelet-cgroups", "kubeletCgroups", Kind::Str),
    (
        "make-iptables-util-chains",
        "makeIPTablesUtilChains",
        Kind::Bool,
    ),
    ("max-open-files", "maxOpenFiles", Kind::Int),
    ("max-pods", "maxPods", Kind::Int),
    ("minimum-image-ttl-duration", "imageMinimumGCAge", Kind::Str),
    (
        "node-status-update-frequency",
        "nodeStatusUpdateFrequency",
        Kind::Str,
    ),
    ("pod-max-pids", "podPidsLimit", Kind::Int),
    ("pods-per-core", "podsPerCore", Kind::Int),
    ("port", "port", Kind::Int),
    (
        "protect-kernel-defaults",
        "protectKernelDefaults",
        Kind::Bool,
    ),
    ("provider-id", "providerID", Kind::Str),
    ("read-only-port", "readOnlyPort", Kind::Int),
    ("register-node", "registerNode", Kind::Bool),
    ("registry-burst", "registryBurst", Kind::Int),
    ("registry-qps", "registryPullQPS", Kind::Int),
    ("resolv-conf", "resolvConf", Kind::Str),
    ("rotate-certificates", "rotateCertificates", Kind::Bool),
    (
        "rotate-server-certificates",
        "serverTLSBootstrap",
        Kind::Bool,
    ),
    (
        "runtime-request-timeout",
        "runtimeRequestTimeout",
        Kind::Str,
    ),
    ("seccomp-default", "seccompDefault", Kind::Bool),
    ("serialize-image-pulls", "serializeImagePulls", Kind::Bool),
    (
        "streaming-connection-idle-timeout",
        "streamingConnectionIdleTimeout",
        Kind::Str,
    ),
    ("sync-frequency", "syncFrequency", Kind::Str),
    ("system-cgroups", "systemCgroups", Kind::Str),
    ("system-reserved", "systemReserved", Kind::Map),
    ("tls-cert-file", "tlsCertFile", Kind::Str),
    ("tls-cipher-suites", "tlsCipherSuites", Kind::List),
    ("tls-min-version", "tlsMinVersion", Kind::Str),
    ("tls-private-key-file", "tlsPrivateKeyFile", Kind::Str),
    (
        "topology-manager-policy",
        "topologyManagerPolicy",
        Kind::Str,
    ),
    ("volume-plugin-dir", "volumePluginDir", Kind::Str),
    ("volume-stats-agg-period", "volumeStatsAggPeriod", Kind::Str),
];

/// Kubelet flags (not config keys) that mean nothing to bosun, with why. Bool flags take a value
/// only as `--flag=value`.
const IGNORED_FLAGS: &[(&str, bool, &str)] = &[
    ("pod-infra-container-image", true, "bosun has no pause container: a pod's namespaces are pinned as files"),
    ("cloud-provider", true, "bosun has no cloud provider code; with `external` the cloud controller manager still sets the node's addresses"),
    ("image-credential-provider-config", true, "bosun has no credential provider plugins: it reads --image-credentials and imagePullSecrets"),
    ("image-credential-provider-bin-dir", true, "bosun has no credential provider plugins: it reads --image-credentials and imagePullSecrets"),
    ("runtime-cgroups", true, "bosun is its own runtime: its cgroup is its service's"),
    ("config-dir", true, "bosun reads only the --config file, not drop-in folders"),
    ("lock-file", true, "bosun takes no lock file"),
    ("exit-on-lock-contention", false, "bosun takes no lock file"),
    ("logtostderr", false, "bosun logs to stderr; the filter is --log / RUST_LOG"),
    ("alsologtostderr", false, "bosun logs to stderr; the filter is --log / RUST_LOG"),
    ("log-dir", true, "bosun logs to stderr; the filter is --log / RUST_LOG"),
    ("log-file", true, "bosun logs to stderr; the filter is --log / RUST_LOG"),
    ("logging-format", true, "bosun logs text to stderr"),
    ("node-status-max-images", true, "bosun reports every image with a name in the node status"),
    ("minimum-container-ttl-duration", true, "bosun keeps the newest two attempts of each container"),
    ("maximum-dead-containers", true, "bosun keeps the newest two attempts of each container"),
    ("maximum-dead-containers-per-container", true, "bosun keeps the newest two attempts of each container"),
    ("experimental-allocatable-ignore-eviction", false, "bosun always takes the hard eviction thresholds off the allocatable"),
    ("keep-terminated-pod-volumes", false, "bosun removes a terminated pod's volumes"),
    ("seccomp-profile-root", true, "localhost seccomp profiles are read from <root-dir>/seccomp"),
];

/// What [`split_args`] made of the command line.
#[derive(Debug, Default, PartialEq)]
pub struct KubeletArgs {
    /// What clap gets: the program name, bosun's own flags and anything not recognised here.
    pub args: Vec<String>,
    /// KubeletConfiguration keys set by kubelet flags, merged over the `--config` file.
    pub overrides: Map<String, Value>,
    /// One line per flag accepted without effect.
    pub warnings: Vec<String>,
    /// `--version` (Some(false)) or `--version=raw` (Some(true)): print and exit.
    pub version: Option<bool>,
}

/// Splits the agent's command line (cluster mode: no subcommand) into clap's arguments,
/// configuration overrides and warnings. A subcommand's command line is left alone.
pub fn split_args(args: Vec<String>) -> Result<KubeletArgs, String> {
    let mut out = KubeletArgs::default();
    let mut it = args.into_iter();
    if let Some(prog) = it.next() {
        out.args.push(prog);
    }
    let rest: Vec<String> = it.collect();
    if rest.first().is_some_and(|a| !a.starts_with('-')) {
        out.args.extend(rest);
        return Ok(out);
    }
    let mut i = 0;
    while i < rest.len() {
        let arg = &rest[i];
        i += 1;
        let Some(body) = arg.strip_prefix("--").filter(|b| !b.is_empty()) else {
            out.args.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "version" {
            out.version = Some(match inline.as_deref() {
                None | Some("true") => false,
                Some("raw") => true,
                Some(other) => return Err(format!("--version={other}: want true or raw")),
            });
            continue;
        }
        if let Some(&(_, key, kind)) = CONFIG_FLAGS.iter().find(|(f, _, _)| *f == name) {
            let raw = match (inline, kind) {
                (Some(v), _) => v,
                (None, Kind::Bool) => "true".into(),
                (None, _) => {
                    let v = rest
                        .get(i)
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    i += 1;
                    v.clone()
                }
            };
            let value = flag_value(&raw, kind).map_err(|e| format!("--{name}={raw}: {e}"))?;
            set_path(&mut out.overrides, key, value);
            continue;
        }
        if let Some(&(_, takes_value, why)) = IGNORED_FLAGS.iter().find(|(f, _, _)| *f == name) {
            let shown = match inline {
                Some(v) => v,
                None if takes_value => {
                    let v = rest
                        .get(i)
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    i += 1;
                    v.clone()
                }
                None => "true".into(),
            };
            out.warnings.push(format!(
                "flag --{name}={shown} is accepted for kubelet compatibility and ignored: {why}"
            ));
            continue;
        }
        out.args.push(arg.clone());
    }
    Ok(out)
}

fn flag_value(raw: &str, kind: Kind) -> Result<Value, String> {
    let items = || raw.split(',').map(str::trim).filter(|s| !s.is_empty());
    Ok(match kind {
        Kind::Str => Value::String(raw.to_string()),
        Kind::Int => Value::from(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| "not an integer".to_string())?,
        ),
        Kind::Bool => Value::Bool(parse_bool(raw)?),
        Kind::List => Value::Array(items().map(|s| Value::String(s.into())).collect()),
        Kind::Map | Kind::LangleMap | Kind::Gates => {
            let sep = if kind == Kind::LangleMap { '<' } else { '=' };
            let mut m = Map::new();
            for item in items() {
                let (k, v) = item
                    .split_once(sep)
                    .ok_or_else(|| format!("{item:?} is not key{sep}value"))?;
                let v = match kind {
                    Kind::Gates => Value::Bool(parse_bool(v)?),
                    _ => Value::String(v.to_string()),
                };
                m.insert(k.trim().to_string(), v);
            }
            Value::Object(m)
        }
    })
}

/// Go's strconv.ParseBool, which the kubelet's flags use.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean")),
    }
}

/// Sets `a.b.c` in a JSON object, making the objects on the way.
fn set_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_string(), value);
        }
        Some((head, tail)) => {
            let entry = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                set_path(inner, tail, value);
            }
        }
    }
}

/// Merges `overrides` into `file` (objects key by key, anything else replaced).
pub fn merge(file: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (k, v) in overrides {
        match (file.get_mut(k), v) {
            (Some(Value::Object(inner)), Value::Object(over)) => merge(inner, over),
            _ => {
                file.insert(k.clone(), v.clone());
            }
        }
    }
}

/// KubeletConfiguration keys that bosun does not read but accepts: at the kubelet's default
/// (or at the zero value, which the kubelet's defaulting turns into the default, as in the file
/// kubeadm writes) silently; otherwise with the note as the warning (an empty note: any value is
/// fine). Values are compared as JSON; every key but a boolean also takes its zero value.
const ACCEPTED_KEYS: &[(&str, &[&str], &str)] = &[
    ("cgroupDriver", &["\"cgroupfs\""], "bosun lays out its cgroups itself under cgroupRoot (the cgroupfs layout), which its CRI RuntimeConfig reports, and the kubelet takes the driver from the runtime"),
    ("cgroupsPerQOS", &["true"], "bosun always makes the kubepods QoS cgroups"),
    ("rotateCertificates", &["true"], "bosun always renews its client certificate at 80 % of its lifetime"),
    ("registerNode", &["true"], "bosun always registers its Node"),
    ("cpuManagerReconcilePeriod", &["\"10s\""], "bosun has no CPU manager (the kubelet's `none` policy)"),
    ("cpuManagerPolicy", &["\"none\""], "bosun has no CPU manager (the kubelet's `none` policy)"),
    ("topologyManagerPolicy", &["\"none\""], "bosun has no topology manager"),
    ("memoryManagerPolicy", &["\"None\""], "bosun has no memory manager"),
    ("crashLoopBackOff", &[], "bosun's restart back-off is the kubelet's default (10 s doubling to 5 min)"),
    ("memorySwap", &[], "bosun gives containers no swap (the kubelet's NoSwap)"),
    ("failSwapOn", &["true", "false"], ""),
    ("httpCheckFrequency", &["\"20s\""], "bosun reads static pods from staticPodPath only (no staticPodURL)"),
    ("imageMaximumGCAge", &[], "bosun's image GC removes by disk usage only"),
    ("nodeStatusUpdateFrequency", &["\"10s\""], "bosun checks the node status every 10s"),
    ("nodeStatusReportFrequency", &["\"5m0s\"", "\"5m\""], "bosun posts the node status on change or every 5m"),
    ("runtimeRequestTimeout", &["\"2m0s\"", "\"2m\""], "bosun is its own runtime: there is no runtime request to time out"),
    ("shutdownGracePeriod", &[], "bosun has no graceful node shutdown: pods keep running when it stops"),
    ("shutdownGracePeriodCriticalPods", &[], "bosun has no graceful node shutdown: pods keep running when it stops"),
    ("volumeStatsAggPeriod", &["\"1m0s\"", "\"1m\""], "bosun measures volumes when /stats/summary is asked"),
    ("logging", &[], "bosun logs text to stderr; the filter is --log / RUST_LOG"),
    ("eventRecordQPS", &["50"], "bosun writes Events as they happen, folded as the kubelet folds them"),
    ("eventBurst", &["100"], "bosun writes Events as they happen, folded as the kubelet folds them"),
    ("kubeAPIQPS", &["50"], "bosun does not rate-limit its apiserver calls"),
    ("kubeAPIBurst", &["100"], "bosun does not rate-limit its apiserver calls"),
    ("registryPullQPS", &["5"], "bosun does not rate-limit registry pulls"),
    ("registryBurst", &["10"], "bosun does not rate-limit registry pulls"),
    ("readOnlyPort", &[], "bosun serves no read-only port"),
    ("makeIPTablesUtilChains", &["true"], "bosun makes no iptables chains of its own (kube-proxy and the CNI plugins do)"),
    ("hairpinMode", &["\"promiscuous-bridge\""], "the CNI config decides hairpin mode"),
    ("enableServer", &["true"], "bosun always serves the kubelet API in cluster mode"),
    ("enableDebuggingHandlers", &["true"], "bosun always serves logs, exec, attach and port-forward"),
    ("enableProfilingHandler", &["true"], "bosun has no profiling handler"),
    ("enableContentionProfiling", &["false"], "bosun has no profiling handler"),
    ("enableSystemLogHandler", &["true"], "bosun serves no /logs/ of the node"),
    ("enableSystemLogQuery", &["false"], "bosun serves no /logs/ of the node"),
    ("featureGates", &[], "bosun has no feature gates: it does what the kubelet does with the defaults of this version"),
    ("protectKernelDefaults", &["false"], "bosun does not check kernel settings"),
    ("maxOpenFiles", &["1000000"], "bosun does not change its own open-file limit"),
    ("podPidsLimit", &["-1"], "bosun sets no pod-level pids limit"),
    ("podsPerCore", &[], "maxPods alone bounds the node's pods"),
    ("kubeletCgroups", &[], "bosun's cgroup is its service's"),
    ("systemCgroups", &[], "bosun does not manage system cgroups"),
    ("imageServiceEndpoint", &[], "bosun's image service is on the same socket as its runtime service"),
    ("providerID", &[], "bosun sets no providerID; a cloud controller manager may"),
    ("tlsCipherSuites", &[], "the kubelet API uses rustls's default cipher suites"),
    ("tlsMinVersion", &["\"VersionTLS12\""], "the kubelet API takes TLS 1.2 and 1.3"),
    ("volumePluginDir", &["\"/usr/libexec/kubernetes/kubelet-plugins/volume/exec/\""], "bosun has no FlexVolume plugins"),
];

/// The warning for a KubeletConfiguration key bosun does not read (None: silently accepted).
/// `file` names where it was found.
pub fn config_key_warning(file: &str, key: &str, value: &Value) -> Option<String> {
    let shown = || serde_json::to_string(value).unwrap_or_default();
    match ACCEPTED_KEYS.iter().find(|(k, _, _)| *k == key) {
        Some((_, defaults, note)) => {
            // A false is explicit (the kubelet's booleans that default to true are pointers).
            let zero = !value.is_boolean() && is_zero(value);
            if zero || defaults.contains(&shown().as_str()) || note.is_empty() {
                None
            } else {
                Some(format!(
                    "config file {file}: {key}: {} is accepted and ignored: {note}",
                    shown()
                ))
            }
        }
        None => Some(format!(
            "config file {file}: field {key} is not implemented by bosun and is ignored"
        )),
    }
}

/// The zero value of a KubeletConfiguration field, which the kubelet's defaulting replaces by
/// the default: null, `0s`, `""`, 0, false, `{}`, `[]`, or an object of zero values (the
/// `logging` kubeadm writes).
pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || s == "0s",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// `kubelet --version=raw`: the version as JSON, in the fields of the kubelet's version.Info.
pub fn version_raw() -> String {
    let core = KUBELET_VERSION
        .trim_start_matches('v')
        .split('+')
        .next()
        .unwrap_or_default();
    let mut parts = core.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    serde_json::json!({
        "major": major,
        "minor": minor,
        "gitVersion": KUBELET_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", go_arch()),
    })
    .to_string()
}

/// The architecture as Go (and the `kubernetes.io/arch` label) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What `kubelet --version` prints.
pub fn version_line() -> String {
    format!("Kubernetes {KUBELET_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubeadm_flags_env_splits() {
        // kubeadm-flags.env as the real kubeadm writes it (agent/tests/kubeadm), with the
        // flags a kubeadm user's kubeletExtraArgs commonly add.
        let env = include_str!("../../tests/kubeadm/kubeadm-flags.env");
        let line = env
            .trim()
            .strip_prefix("KUBELET_KUBEADM_ARGS=\"")
            .and_then(|l| l.strip_suffix('"'))
            .expect("KUBELET_KUBEADM_ARGS line");
        let mut args = s(&[
            "kubelet",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
        ]);
        args.extend(line.split_whitespace().map(String::from));
        args.extend(s(&[
            "--container-runtime-endpoint=unix:///run/bosun/bosun.sock",
            "--pod-infra-container-image=registry.k8s.io/pause:3.10.2",
            "--node-labels=a=b",
            "--cluster-dns",
            "10.96.0.10,10.96.0.11",
            "--fail-swap-on=false",
            "--feature-gates=Foo=true,Bar=false",
            "--rotate-certificates",
            "--cloud-provider",
            "external",
            "--v=2",
        ]));
        let out = split_args(args).expect("split");
        assert_eq!(
            out.args,
            s(&[
                "kubelet",
                "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--config=/var/lib/kubelet/config.yaml",
                "--hostname-override=node-a",
                "--node-ip=10.0.0.1",
                "--node-labels=a=b",
                "--v=2",
            ])
        );
        assert_eq!(
            Value::Object(out.overrides),
            json!({
                "containerRuntimeEndpoint": "unix:///run/bosun/bosun.sock",
                "clusterDNS": ["10.96.0.10", "10.96.0.11"],
                "failSwapOn": false,
                "featureGates": {"Foo": true, "Bar": false},
                "rotateCertificates": true,
            })
        );
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("--pod-infra-container-image=registry.k8s.io/pause"));
        assert!(out.warnings[1].contains("--cloud-provider=external"));
        assert_eq!(out.version, None);
    }

    #[test]
    fn version_flags_and_errors() {
        let v = split_args(s(&["kubelet", "--version"])).expect("split");
        assert_eq!(v.version, Some(false));
        let raw = split_args(s(&["kubelet", "--version=raw"])).expect("split");
        assert_eq!(raw.version, Some(true));
        assert!(split_args(s(&["kubelet", "--version=x"])).is_err());
        assert!(split_args(s(&["kubelet", "--max-pods"])).is_err());
        assert!(split_args(s(&["kubelet", "--max-pods=lots"])).is_err());
        assert!(split_args(s(&["kubelet", "--fail-swap-on=maybe"])).is_err());
        // A subcommand's line is clap's alone; unknown flags too (clap rejects them).
        let sub = split_args(s(&["bosun", "pods", "--max-pods=3"])).expect("split");
        assert_eq!(sub.args, s(&["bosun", "pods", "--max-pods=3"]));
        let unknown = split_args(s(&["kubelet", "--no-such-flag", "-v", "3"])).expect("split");
        assert_eq!(unknown.args, s(&["kubelet", "--no-such-flag", "-v", "3"]));
        // kubeadm's preflight regex: ^\s*Kubernetes v(\d+\.\d+\.\d+)([-\w.+]*)?\s*$
        let line = version_line();
        let rest = line.strip_prefix("Kubernetes v1.36.5").expect("prefix");
        assert!(rest
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.+".contains(c)));
        let info: Value = serde_json::from_str(&version_raw()).expect("json");
        assert_eq!(
            (info["major"].as_str(), info["minor"].as_str()),
            (Some("1"), Some("36"))
        );
    }

    #[test]
    fn nested_overrides_merge_over_the_file() {
        let out = split_args(s(&[
            "kubelet",
            "--anonymous-auth=false",
            "--client-ca-file",
            "/ca.crt",
        ]))
        .expect("split");
        let mut file = json!({"authentication": {"webhook": {"enabled": true}, "anonymous": {"enabled": true}}, "port": 1})
            .as_object()
            .cloned()
            .expect("object");
        merge(&mut file, &out.overrides);
        assert_eq!(
            Value::Object(file),
            json!({"authentication": {"webhook": {"enabled": true}, "anonymous": {"enabled": false},
                   "x509": {"clientCAFile": "/ca.crt"}}, "port": 1})
        );
    }

    #[test]
    fn eviction_flags_are_the_kubelets_maps() {
        let out = split_args(s(&[
            "kubelet",
            "--eviction-hard=memory.available<100Mi,nodefs.available<10%",
            "--eviction-soft-grace-period",
            "memory.available=30s",
            "--eviction-minimum-reclaim=memory.available=0Mi",
            "--eviction-max-pod-grace-period=60",
            "--kube-reserved=cpu=100m,memory=100Mi",
        ]))
        .expect("split");
        assert_eq!(
            Value::Object(out.overrides),
            json!({
                "evictionHard": {"memory.available": "100Mi", "nodefs.available": "10%"},
                "evictionSoftGracePeriod": {"memory.available": "30s"},
                "evictionMinimumReclaim": {"memory.available": "0Mi"},
                "evictionMaxPodGracePeriod": 60,
                "kubeReserved": {"cpu": "100m", "memory": "100Mi"},
            })
        );
        assert!(split_args(s(&["kubelet", "--eviction-hard=memory.available=1Mi"])).is_err());
    }

    #[test]
    fn accepted_keys_warn_only_off_their_default() {
        let cases = [
            ("cgroupDriver", json!("systemd"), true),
            ("cgroupDriver", json!("cgroupfs"), false),
            ("cpuManagerReconcilePeriod", json!("0s"), false),
            ("crashLoopBackOff", json!({}), false),
            (
                "crashLoopBackOff",
                json!({"maxContainerRestartPeriod": "1m"}),
                true,
            ),
            (
                "logging",
                json!({"flushFrequency": 0, "options": {"json": {"infoBufferSize": "0"}}, "verbosity": 0}),
                false,
            ),
            ("logging", json!({"verbosity": 4}), true),
            ("rotateCertificates", json!(true), false),
            ("rotateCertificates", json!(false), true),
            ("shutdownGracePeriod", json!("30s"), true),
            ("nodeStatusUpdateFrequency", json!("10s"), false),
            ("failSwapOn", json!(true), false),
            ("memoryManagerPolicy", json!("Static"), true),
            ("noSuchKey", json!(1), true),
        ];
        for (key, value, warns) in cases {
            let w = config_key_warning("/c.yaml", key, &value);
            assert_eq!(w.is_some(), warns, "{key}={value}: {w:?}");
            if let Some(w) = w {
                assert!(w.contains(key) && w.contains("/c.yaml"), "{w}");
            }
        }
    }
}
