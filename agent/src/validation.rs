//! Pod validation as the apiserver does it (`ValidatePodCreate`, pkg/apis/core/validation), for
//! the pods that do not come through an apiserver: the kubelet runs the same validation on every
//! static pod it reads (pkg/kubelet/config/common.go) and refuses the invalid ones, and then
//! refuses static pods that reference API objects (`PreventStaticPodAPIReferences`).
//!
//! Not every rule of the apiserver is here: the ones that keep a bad pod from reaching the node
//! (paths with `..`, names, ports, duplicate names, probes and handlers, env names, volume
//! items, DNS settings, sysctls, tolerations). Messages are the apiserver's
//! (`spec.volumes[0].hostPath.path: Invalid value: "../../etc": must not contain '..'`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, KeyToPath, LifecycleHandler, Pod, PodSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::translate::{parse_quantity, volume_type_names};

/// One invalid field, as the apiserver names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path like `spec.containers[0].image`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The errors joined as one message.
pub fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

const DNS_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const ENV_NAME_MSG: &str = "a valid environment variable name must consist only of printable ASCII characters other than '='";
const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const HANDLER_TYPES: &str = "may not specify more than 1 handler type";
/// The apiserver's limit on all annotations of an object together.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters (empty allowed when `empty`).
fn is_label_value(s: &str, empty: bool) -> bool {
    if s.is_empty() {
        return empty;
    }
    let b = s.as_bytes();
    s.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A qualified name (`[prefix/]name`, the prefix a DNS subdomain): the problems, if any.
fn qualified_name_errors(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut out = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            out.push("prefix part must be non-empty".to_string());
        } else if !is_dns_subdomain(p) {
            out.push(format!("prefix part {DNS_SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_string());
    } else if !is_label_value(name, false) || name.contains('/') {
        out.push(QUALIFIED_NAME_MSG.to_string());
    }
    out
}

/// `IsValidPortName`: at most 15 of `[a-z0-9-]`, a letter, no `--`, no hyphen at either end.
fn port_name_errors(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push("must be no more than 15 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)");
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens");
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen");
    }
    out
}

/// `IsValidSysctlName`: dot- or slash-separated lowercase segments, at most 253 characters.
fn is_sysctl_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let segment = |seg: &str| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
    };
    s.split(['.', '/']).all(segment)
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    fn required(&mut self, field: impl Into<String>) {
        self.add(field, "Required value");
    }
    fn invalid(&mut self, field: impl Into<String>, value: impl fmt::Debug, msg: &str) {
        self.add(field, format!("Invalid value: {value:?}: {msg}"));
    }
    fn check_enum(&mut self, field: String, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value {
            if !allowed.contains(&v) {
                let list = allowed
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.add(
                    field,
                    format!("Unsupported value: \"{v}\": supported values: {list}"),
                );
            }
        }
    }
    fn non_negative(&mut self, field: String, v: Option<i64>) {
        if let Some(v) = v.filter(|v| *v < 0) {
            self.invalid(field, v, "must be greater than or equal to 0");
        }
    }
    fn dns_label(&mut self, field: String, s: &str) {
        if !is_dns_label(s) {
            self.invalid(field, s, DNS_LABEL_MSG);
        }
    }
    fn dns_subdomain(&mut self, field: String, s: &str) {
        if !is_dns_subdomain(s) {
            self.invalid(field, s, DNS_SUBDOMAIN_MSG);
        }
    }
}

/// `validatePathNoBacksteps`: no `..` element.
fn no_backsteps(errs: &mut Errors, field: String, p: &str) {
    if p.split('/').any(|c| c == "..") {
        errs.invalid(field, p, "must not contain '..'");
    }
}

/// `validateLocalDescendingPath`: relative and without `..`.
fn local_descending_path(errs: &mut Errors, field: String, p: &str) {
    if p.starts_with('/') {
        errs.invalid(field.clone(), p, "must be a relative path");
    }
    no_backsteps(errs, field, p);
}

/// `ValidateLocalNonReservedPath`: a descending path that does not start with `..` either (the
/// atomic writer's own `..data` and `..<time>` entries).
fn local_non_reserved_path(errs: &mut Errors, field: String, p: &str) {
    local_descending_path(errs, field.clone(), p);
    if p.starts_with("..") && !p.starts_with("../") {
        errs.invalid(field, p, "must not start with '..'");
    }
}

fn file_mode(errs: &mut Errors, field: String, mode: Option<i32>) {
    if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
        errs.invalid(field, m, FILE_MODE_MSG);
    }
}

fn key_to_paths(errs: &mut Errors, base: &str, items: Option<&Vec<KeyToPath>>) {
    for (i, kp) in items.into_iter().flatten().enumerate() {
        let f = format!("{base}.items[{i}]");
        if kp.key.is_empty() {
            errs.required(format!("{f}.key"));
        }
        if kp.path.is_empty() {
            errs.required(format!("{f}.path"));
        }
        local_non_reserved_path(errs, format!("{f}.path"), &kp.path);
        file_mode(errs, format!("{f}.mode"), kp.mode);
    }
}

fn downward_api_files(
    errs: &mut Errors,
    base: &str,
    items: Option<&Vec<k8s_openapi::api::core::v1::DownwardAPIVolumeFile>>,
) {
    for (i, file) in items.into_iter().flatten().enumerate() {
        let f = format!("{base}.items[{i}]");
        if file.path.is_empty() {
            errs.required(format!("{f}.path"));
        }
        local_non_reserved_path(errs, format!("{f}.path"), &file.path);
        match (&file.field_ref, &file.resource_field_ref) {
            (Some(_), Some(_)) => errs.invalid(
                f.clone(),
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ),
            (None, None) => errs.add(
                f.clone(),
                "Required value: one of fieldRef and resourceFieldRef is required",
            ),
            _ => {}
        }
        file_mode(errs, format!("{f}.mode"), file.mode);
    }
}

fn validate_volume(errs: &mut Errors, f: &str, v: &Volume) {
    match volume_type_names(v).len() {
        0 => errs.add(f, "Required value: must specify a volume type"),
        1 => {}
        _ => errs.add(f, "Forbidden: may not specify more than 1 volume type"),
    }
    if let Some(i) = &v.image {
        if i.reference.as_deref().unwrap_or("").is_empty() {
            errs.required(format!("{f}.image.reference"));
        }
        errs.check_enum(
            format!("{f}.image.pullPolicy"),
            i.pull_policy.as_deref(),
            &["Always", "IfNotPresent", "Never"],
        );
    }
    if let Some(h) = &v.host_path {
        if h.path.is_empty() {
            errs.required(format!("{f}.hostPath.path"));
        } else {
            no_backsteps(errs, format!("{f}.hostPath.path"), &h.path);
        }
        errs.check_enum(
            format!("{f}.hostPath.type"),
            h.type_.as_deref(),
            &[
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ],
        );
    }
    if let Some(e) = &v.empty_dir {
        if let Some(q) = &e.size_limit {
            match parse_quantity(&q.0) {
                Err(err) => errs.invalid(format!("{f}.emptyDir.sizeLimit"), &q.0, &err.to_string()),
                Ok(p) if p.milli_value() < 0 => errs.add(
                    format!("{f}.emptyDir.sizeLimit"),
                    "Forbidden: SizeLimit field must be a valid resource quantity",
                ),
                Ok(_) => {}
            }
        }
    }
    if let Some(s) = &v.secret {
        if s.secret_name.as_deref().unwrap_or("").is_empty() {
            errs.required(format!("{f}.secret.secretName"));
        }
        file_mode(errs, format!("{f}.secret.defaultMode"), s.default_mode);
        key_to_paths(errs, &format!("{f}.secret"), s.items.as_ref());
    }
    if let Some(c) = &v.config_map {
        if c.name.is_empty() {
            errs.required(format!("{f}.configMap.name"));
        }
        file_mode(errs, format!("{f}.configMap.defaultMode"), c.default_mode);
        key_to_paths(errs, &format!("{f}.configMap"), c.items.as_ref());
    }
    if let Some(d) = &v.downward_api {
        file_mode(errs, format!("{f}.downwardAPI.defaultMode"), d.default_mode);
        downward_api_files(errs, &format!("{f}.downwardAPI"), d.items.as_ref());
    }
    if let Some(p) = &v.projected {
        file_mode(errs, format!("{f}.projected.defaultMode"), p.default_mode);
        for (i, s) in p.sources.iter().flatten().enumerate() {
            let sf = format!("{f}.projected.sources[{i}]");
            let kinds = [
                s.secret.is_some(),
                s.config_map.is_some(),
                s.downward_api.is_some(),
                s.service_account_token.is_some(),
                s.cluster_trust_bundle.is_some(),
                s.pod_certificate.is_some(),
            ]
            .iter()
            .filter(|k| **k)
            .count();
            if kinds > 1 {
                errs.add(
                    sf.clone(),
                    "Forbidden: may not specify more than 1 volume type per source",
                );
            }
            if let Some(sec) = &s.secret {
                key_to_paths(errs, &format!("{sf}.secret"), sec.items.as_ref());
            }
            if let Some(cm) = &s.config_map {
                key_to_paths(errs, &format!("{sf}.configMap"), cm.items.as_ref());
            }
            if let Some(d) = &s.downward_api {
                downward_api_files(errs, &format!("{sf}.downwardAPI"), d.items.as_ref());
            }
            if let Some(t) = &s.service_account_token {
                if t.path.is_empty() {
                    errs.required(format!("{sf}.serviceAccountToken.path"));
                }
                local_non_reserved_path(errs, format!("{sf}.serviceAccountToken.path"), &t.path);
            }
        }
    }
}

fn validate_handler(
    errs: &mut Errors,
    f: &str,
    exec: bool,
    http: Option<&k8s_openapi::api::core::v1::HTTPGetAction>,
    tcp: Option<&k8s_openapi::api::core::v1::TCPSocketAction>,
    grpc: Option<i32>,
    sleep: Option<i64>,
) {
    let mut n = 0;
    for (name, set) in [
        ("exec", exec),
        ("httpGet", http.is_some()),
        ("tcpSocket", tcp.is_some()),
        ("grpc", grpc.is_some()),
        ("sleep", sleep.is_some()),
    ] {
        if set {
            if n > 0 {
                errs.add(format!("{f}.{name}"), format!("Forbidden: {HANDLER_TYPES}"));
            }
            n += 1;
        }
    }
    if n == 0 {
        errs.add(f, "Required value: must specify a handler type");
    }
    let port = |errs: &mut Errors, field: String, p: &IntOrString| match p {
        IntOrString::Int(i) if !(1..=65535).contains(i) => errs.invalid(field, i, PORT_RANGE_MSG),
        IntOrString::String(s) => {
            for msg in port_name_errors(s) {
                errs.invalid(field.clone(), s, msg);
            }
        }
        IntOrString::Int(_) => {}
    };
    if let Some(h) = http {
        port(errs, format!("{f}.httpGet.port"), &h.port);
        errs.check_enum(
            format!("{f}.httpGet.scheme"),
            h.scheme.as_deref(),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(t) = tcp {
        port(errs, format!("{f}.tcpSocket.port"), &t.port);
    }
    if let Some(g) = grpc {
        if !(1..=65535).contains(&g) {
            errs.invalid(format!("{f}.grpc.port"), g, PORT_RANGE_MSG);
        }
    }
    if let Some(s) = sleep.filter(|s| *s < 0) {
        errs.invalid(
            format!("{f}.sleep.seconds"),
            s,
            "must be greater than or equal to 0",
        );
    }
}

fn validate_probe(errs: &mut Errors, f: &str, p: &Probe, success_must_be_one: bool) {
    validate_handler(
        errs,
        f,
        p.exec.is_some(),
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
        p.grpc.as_ref().map(|g| g.port),
        None,
    );
    for (name, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        errs.non_negative(format!("{f}.{name}"), v.map(i64::from));
    }
    if let Some(t) = p.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.invalid(
            format!("{f}.terminationGracePeriodSeconds"),
            t,
            "must be greater than 0",
        );
    }
    // Defaulted to 1 by the API when unset.
    if success_must_be_one && p.success_threshold.unwrap_or(1) != 1 {
        errs.invalid(
            format!("{f}.successThreshold"),
            p.success_threshold.unwrap_or(1),
            "must be 1",
        );
    }
}

fn validate_lifecycle_handler(errs: &mut Errors, f: String, h: &LifecycleHandler) {
    validate_handler(
        errs,
        &f,
        h.exec.is_some(),
        h.http_get.as_ref(),
        h.tcp_socket.as_ref(),
        None,
        h.sleep.as_ref().map(|s| s.seconds),
    );
}

fn validate_container(
    errs: &mut Errors,
    base: &str,
    c: &Container,
    volumes: &HashSet<&str>,
    init: bool,
    host_network: bool,
) {
    if c.name.is_empty() {
        errs.required(format!("{base}.name"));
    } else {
        errs.dns_label(format!("{base}.name"), &c.name);
    }
    let image = c.image.as_deref().unwrap_or("");
    if image.is_empty() {
        errs.required(format!("{base}.image"));
    } else if image.trim() != image {
        errs.invalid(
            format!("{base}.image"),
            image,
            "must not have leading or trailing whitespace",
        );
    } else if image.trim().is_empty() {
        errs.required(format!("{base}.image"));
    }
    errs.check_enum(
        format!("{base}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    errs.check_enum(
        format!("{base}.terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
    );
    let sidecar = init && c.restart_policy.as_deref() == Some("Always");
    if init {
        errs.check_enum(
            format!("{base}.restartPolicy"),
            c.restart_policy.as_deref(),
            &["Always"],
        );
        if !sidecar {
            for (name, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    errs.add(
                        format!("{base}.{name}"),
                        "Forbidden: may not be set for init containers without restartPolicy=Always",
                    );
                }
            }
        }
    } else if c.restart_policy.is_some() {
        errs.add(
            format!("{base}.restartPolicy"),
            "Forbidden: may not be set for non-init containers",
        );
    }
    let mut port_names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let f = format!("{base}.ports[{i}]");
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name_errors(name);
            for msg in &msgs {
                errs.invalid(format!("{f}.name"), name, msg);
            }
            if msgs.is_empty() && !port_names.insert(name) {
                errs.add(format!("{f}.name"), format!("Duplicate value: {name:?}"));
            }
        }
        if p.container_port == 0 {
            errs.required(format!("{f}.containerPort"));
        } else if !(1..=65535).contains(&p.container_port) {
            errs.invalid(
                format!("{f}.containerPort"),
                p.container_port,
                PORT_RANGE_MSG,
            );
        }
        if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
            if !(1..=65535).contains(&hp) {
                errs.invalid(format!("{f}.hostPort"), hp, PORT_RANGE_MSG);
            } else if host_network && !init && hp != p.container_port {
                errs.invalid(
                    format!("{f}.hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                );
            }
        }
        errs.check_enum(
            format!("{f}.protocol"),
            p.protocol.as_deref(),
            &["TCP", "UDP", "SCTP"],
        );
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        let f = format!("{base}.env[{i}]");
        if e.name.is_empty() {
            errs.required(format!("{f}.name"));
        } else if e
            .name
            .chars()
            .any(|ch| !ch.is_ascii_graphic() && ch != ' ' || ch == '=')
        {
            errs.invalid(format!("{f}.name"), &e.name, ENV_NAME_MSG);
        }
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) && e.value_from.is_some() {
            errs.add(
                format!("{f}.valueFrom"),
                "Invalid value: \"\": may not be specified when `value` is not empty",
            );
        }
        if let Some(vf) = &e.value_from {
            let n = [
                vf.field_ref.is_some(),
                vf.resource_field_ref.is_some(),
                vf.config_map_key_ref.is_some(),
                vf.secret_key_ref.is_some(),
                vf.file_key_ref.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            match n {
                0 => errs.invalid(
                    format!("{f}.valueFrom"),
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef` or `fileKeyRef`",
                ),
                1 => {}
                _ => errs.invalid(
                    format!("{f}.valueFrom"),
                    "",
                    "may not have more than one field specified at a time",
                ),
            }
        }
    }
    for (i, e) in c.env_from.iter().flatten().enumerate() {
        if let Some(p) = e.prefix.as_deref().filter(|p| !p.is_empty()) {
            if p.chars()
                .any(|ch| !ch.is_ascii_graphic() && ch != ' ' || ch == '=')
            {
                errs.invalid(format!("{base}.envFrom[{i}].prefix"), p, ENV_NAME_MSG);
            }
        }
    }
    if let Some(res) = &c.resources {
        for (kind, list) in [("limits", &res.limits), ("requests", &res.requests)] {
            for (name, q) in list.iter().flatten() {
                match parse_quantity(&q.0) {
                    Err(e) => errs.invalid(
                        format!("{base}.resources.{kind}[{name}]"),
                        &q.0,
                        &e.to_string(),
                    ),
                    Ok(v) if v.milli_value() < 0 => errs.invalid(
                        format!("{base}.resources.{kind}[{name}]"),
                        &q.0,
                        "must be greater than or equal to 0",
                    ),
                    Ok(_) => {}
                }
            }
        }
        for name in ["cpu", "memory"] {
            let get = |l: &Option<BTreeMap<String, _>>| {
                l.as_ref()
                    .and_then(
                        |l: &BTreeMap<
                            String,
                            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                        >| l.get(name),
                    )
                    .and_then(|q| parse_quantity(&q.0).ok())
            };
            if let (Some(req), Some(lim)) = (get(&res.requests), get(&res.limits)) {
                if req > lim {
                    errs.add(
                        format!("{base}.resources.requests"),
                        format!("Invalid value: must be less than or equal to {name} limit"),
                    );
                }
            }
        }
    }
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut mount_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let f = format!("{base}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.required(format!("{f}.name"));
        } else if !volumes.contains(m.name.as_str()) {
            errs.add(format!("{f}.name"), format!("Not found: {:?}", m.name));
        }
        if m.mount_path.is_empty() {
            errs.required(format!("{f}.mountPath"));
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            errs.invalid(format!("{f}.mountPath"), &m.mount_path, "must be unique");
        }
        errs.check_enum(
            format!("{f}.mountPropagation"),
            m.mount_propagation.as_deref(),
            &["None", "HostToContainer", "Bidirectional"],
        );
        if m.mount_propagation.as_deref() == Some("Bidirectional") && !privileged {
            errs.add(
                format!("{f}.mountPropagation"),
                "Forbidden: Bidirectional mount propagation is available only to privileged containers",
            );
        }
        let sub_path = m.sub_path.as_deref().filter(|s| !s.is_empty());
        let sub_path_expr = m.sub_path_expr.as_deref().filter(|s| !s.is_empty());
        if let Some(p) = sub_path {
            local_descending_path(errs, format!("{f}.subPath"), p);
        }
        if let Some(p) = sub_path_expr {
            if sub_path.is_some() {
                errs.invalid(
                    format!("{f}.subPathExpr"),
                    p,
                    "subPathExpr and subPath are mutually exclusive",
                );
            }
            local_descending_path(errs, format!("{f}.subPathExpr"), p);
        }
    }
    if let Some(p) = &c.liveness_probe {
        validate_probe(errs, &format!("{base}.livenessProbe"), p, true);
    }
    if let Some(p) = &c.readiness_probe {
        validate_probe(errs, &format!("{base}.readinessProbe"), p, false);
        if let Some(t) = p.termination_grace_period_seconds {
            errs.invalid(
                format!("{base}.readinessProbe.terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            );
        }
    }
    if let Some(p) = &c.startup_probe {
        validate_probe(errs, &format!("{base}.startupProbe"), p, true);
    }
    if let Some(l) = &c.lifecycle {
        if let Some(h) = &l.post_start {
            validate_lifecycle_handler(errs, format!("{base}.lifecycle.postStart"), h);
        }
        if let Some(h) = &l.pre_stop {
            validate_lifecycle_handler(errs, format!("{base}.lifecycle.preStop"), h);
        }
    }
    if let Some(sc) = &c.security_context {
        let f = format!("{base}.securityContext");
        if sc.allow_privilege_escalation == Some(false) && sc.privileged == Some(true) {
            errs.add(
                f.clone(),
                "Invalid value: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
        for (name, v) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
        ] {
            if let Some(v) = v.filter(|v| !(0..=i64::from(i32::MAX)).contains(v)) {
                errs.invalid(
                    format!("{f}.{name}"),
                    v,
                    "must be between 0 and 2147483647, inclusive",
                );
            }
        }
        errs.check_enum(
            format!("{f}.procMount"),
            sc.proc_mount.as_deref(),
            &["Default", "Unmasked"],
        );
    }
}

fn validate_spec(errs: &mut Errors, spec: &PodSpec) {
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("spec.volumes[{i}]");
        if v.name.is_empty() {
            errs.required(format!("{f}.name"));
        } else if !is_dns_label(&v.name) {
            errs.invalid(format!("{f}.name"), &v.name, DNS_LABEL_MSG);
        } else if !volumes.insert(v.name.as_str()) {
            errs.add(
                format!("{f}.name"),
                format!("Duplicate value: {:?}", v.name),
            );
        }
        validate_volume(errs, &f, v);
    }
    if spec.containers.is_empty() {
        errs.required("spec.containers");
    }
    let host_network = spec.host_network.unwrap_or(false);
    let mut names = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c, false)),
        );
    for (base, c, init) in all {
        validate_container(errs, &base, c, &volumes, init, host_network);
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            errs.add(
                format!("{base}.name"),
                format!("Duplicate value: {:?}", c.name),
            );
        }
    }
    errs.check_enum(
        "spec.restartPolicy".into(),
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    errs.check_enum(
        "spec.dnsPolicy".into(),
        spec.dns_policy.as_deref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if spec.dns_policy.as_deref() == Some("None") && spec.dns_config.is_none() {
        errs.add(
            "spec.dnsConfig",
            "Required value: must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    if let Some(dc) = &spec.dns_config {
        let ns = dc.nameservers.as_deref().unwrap_or_default();
        if ns.len() > 3 {
            errs.invalid(
                "spec.dnsConfig.nameservers",
                ns,
                "must not have more than 3 nameservers",
            );
        }
        for (i, n) in ns.iter().enumerate() {
            if n.parse::<std::net::IpAddr>().is_err() {
                errs.invalid(
                    format!("spec.dnsConfig.nameservers[{i}]"),
                    n,
                    "must be a valid IP address",
                );
            }
        }
        let searches = dc.searches.as_deref().unwrap_or_default();
        if searches.len() > 32 {
            errs.invalid(
                "spec.dnsConfig.searches",
                searches,
                "must not have more than 32 search paths",
            );
        }
        for (i, s) in searches.iter().enumerate() {
            // A trailing dot (an absolute name) is allowed, as by the apiserver.
            errs.dns_subdomain(
                format!("spec.dnsConfig.searches[{i}]"),
                s.trim_end_matches('.'),
            );
        }
        for (i, o) in dc.options.iter().flatten().enumerate() {
            if o.name.as_deref().unwrap_or("").is_empty() {
                errs.required(format!("spec.dnsConfig.options[{i}].name"));
            }
        }
    }
    if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        errs.dns_label("spec.hostname".into(), h);
    }
    if let Some(s) = spec.subdomain.as_deref().filter(|h| !h.is_empty()) {
        errs.dns_label("spec.subdomain".into(), s);
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        errs.non_negative("spec.terminationGracePeriodSeconds".into(), Some(g));
    }
    if let Some(a) = spec
        .active_deadline_seconds
        .filter(|a| !(1..=i64::from(i32::MAX)).contains(a))
    {
        errs.invalid(
            "spec.activeDeadlineSeconds",
            a,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        errs.dns_subdomain("spec.serviceAccountName".into(), sa);
    }
    if let Some(n) = spec.node_name.as_deref().filter(|s| !s.is_empty()) {
        errs.dns_subdomain("spec.nodeName".into(), n);
    }
    for (k, v) in spec.node_selector.iter().flatten() {
        for msg in qualified_name_errors(k) {
            errs.invalid("spec.nodeSelector", k, &msg);
        }
        if !is_label_value(v, true) {
            errs.invalid(format!("spec.nodeSelector[{k}]"), v, LABEL_VALUE_MSG);
        }
    }
    for (i, h) in spec.host_aliases.iter().flatten().enumerate() {
        let f = format!("spec.hostAliases[{i}]");
        if h.ip.parse::<std::net::IpAddr>().is_err() {
            errs.invalid(format!("{f}.ip"), &h.ip, "must be a valid IP address");
        }
        for (j, name) in h.hostnames.iter().flatten().enumerate() {
            errs.dns_subdomain(format!("{f}.hostnames[{j}]"), name);
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let f = format!("spec.tolerations[{i}]");
        let key = t.key.as_deref().unwrap_or("");
        if !key.is_empty() {
            for msg in qualified_name_errors(key) {
                errs.invalid(format!("{f}.key"), key, &msg);
            }
        }
        match t.operator.as_deref().unwrap_or("Equal") {
            "" | "Equal" => {
                if key.is_empty() {
                    errs.invalid(
                        format!("{f}.operator"),
                        t.operator.as_deref().unwrap_or(""),
                        "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    );
                }
                if let Some(v) = t.value.as_deref().filter(|v| !is_label_value(v, true)) {
                    errs.invalid(format!("{f}.value"), v, LABEL_VALUE_MSG);
                }
            }
            "Exists" => {
                if t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                    errs.invalid(
                        format!("{f}.operator"),
                        t.value.as_deref().unwrap_or(""),
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            other => errs.add(
                format!("{f}.operator"),
                format!("Unsupported value: \"{other}\": supported values: \"Equal\", \"Exists\""),
            ),
        }
        errs.check_enum(
            format!("{f}.effect"),
            t.effect.as_deref().filter(|e| !e.is_empty()),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
    }
    if let Some(psc) = &spec.security_context {
        for (name, v) in [
            ("runAsUser", psc.run_as_user),
            ("runAsGroup", psc.run_as_group),
            ("fsGroup", psc.fs_group),
        ] {
            if let Some(v) = v.filter(|v| !(0..=i64::from(i32::MAX)).contains(v)) {
                errs.invalid(
                    format!("spec.securityContext.{name}"),
                    v,
                    "must be between 0 and 2147483647, inclusive",
                );
            }
        }
        for (i, g) in psc.supplemental_groups.iter().flatten().enumerate() {
            if !(0..=i64::from(i32::MAX)).contains(g) {
                errs.invalid(
                    format!("spec.securityContext.supplementalGroups[{i}]"),
                    g,
                    "must be between 0 and 2147483647, inclusive",
                );
            }
        }
        let mut sysctls = HashSet::new();
        for (i, s) in psc.sysctls.iter().flatten().enumerate() {
            let f = format!("spec.securityContext.sysctls[{i}].name");
            if s.name.is_empty() {
                errs.required(f);
            } else if !is_sysctl_name(&s.name) {
                errs.invalid(
                    f,
                    &s.name,
                    "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
                );
            } else if !sysctls.insert(s.name.as_str()) {
                errs.add(f, format!("Duplicate value: {:?}", s.name));
            } else if host_network && s.name.starts_with("net.") {
                errs.invalid(
                    f,
                    &s.name,
                    "may not be specified when 'hostNetwork' is true",
                );
            } else if spec.host_ipc.unwrap_or(false)
                && (s.name.starts_with("kernel.shm")
                    || s.name.starts_with("kernel.msg")
                    || s.name == "kernel.sem"
                    || s.name.starts_with("fs.mqueue."))
            {
                errs.invalid(f, &s.name, "may not be specified when 'hostIPC' is true");
            }
        }
    }
}

/// The apiserver's validation of a new pod: every problem found, in the order it finds them.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Errors(Vec::new());
    let meta = &pod.metadata;
    match meta.name.as_deref() {
        None | Some("") => errs.add(
            "metadata.name",
            "Required value: name or generateName is required",
        ),
        Some(n) => errs.dns_subdomain("metadata.name".into(), n),
    }
    if let Some(ns) = meta.namespace.as_deref().filter(|n| !n.is_empty()) {
        errs.dns_label("metadata.namespace".into(), ns);
    }
    for (k, v) in meta.labels.iter().flatten() {
        for msg in qualified_name_errors(k) {
            errs.invalid("metadata.labels", k, &msg);
        }
        if !is_label_value(v, true) {
            errs.invalid(format!("metadata.labels[{k}]"), v, LABEL_VALUE_MSG);
        }
    }
    let mut total = 0;
    for (k, v) in meta.annotations.iter().flatten() {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errs.invalid("metadata.annotations", k, &msg);
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.add(
            "metadata.annotations",
            format!("Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
        );
    }
    match &pod.spec {
        None => errs.required("spec"),
        Some(spec) => validate_spec(&mut errs, spec),
    }
    errs.0
}

/// The kind of API object a static pod refers to (`PreventStaticPodAPIReferences`, the kubelet's
/// `HasAPIObjectReference`), worded as the kubelet's message `static pods may not reference ...`.
pub fn api_object_reference(pod: &Pod) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    if spec
        .service_account_name
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Some("serviceaccounts");
    }
    let containers = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.env.as_ref(), c.env_from.as_ref())),
            )
    };
    let volumes = || spec.volumes.iter().flatten();
    let secrets = spec
        .image_pull_secrets
        .as_ref()
        .is_some_and(|s| !s.is_empty())
        || containers().any(|(env, env_from)| {
            env.into_iter().flatten().any(|e| {
                e.value_from
                    .as_ref()
                    .is_some_and(|v| v.secret_key_ref.is_some())
            }) || env_from
                .into_iter()
                .flatten()
                .any(|e| e.secret_ref.is_some())
        })
        || volumes().any(|v| {
            v.secret.is_some()
                || v.azure_file.is_some()
                || v.cephfs.as_ref().is_some_and(|c| c.secret_ref.is_some())
                || v.cinder.as_ref().is_some_and(|c| c.secret_ref.is_some())
                || v.flex_volume
                    .as_ref()
                    .is_some_and(|c| c.secret_ref.is_some())
                || v.rbd.as_ref().is_some_and(|c| c.secret_ref.is_some())
                || v.scale_io.is_some()
                || v.iscsi.as_ref().is_some_and(|c| c.secret_ref.is_some())
                || v.storageos.as_ref().is_some_and(|c| c.secret_ref.is_some())
                || v.csi
                    .as_ref()
                    .is_some_and(|c| c.node_publish_secret_ref.is_some())
                || v.projected
                    .as_ref()
                    .is_some_and(|p| p.sources.iter().flatten().any(|s| s.secret.is_some()))
        });
    if secrets {
        return Some("secrets");
    }
    let config_maps = containers().any(|(env, env_from)| {
        env.into_iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|v| v.config_map_key_ref.is_some())
        }) || env_from
            .into_iter()
            .flatten()
            .any(|e| e.config_map_ref.is_some())
    }) || volumes().any(|v| {
        v.config_map.is_some()
            || v.projected
                .as_ref()
                .is_some_and(|p| p.sources.iter().flatten().any(|s| s.config_map.is_some()))
    });
    if config_maps {
        return Some("configmaps");
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        return Some("resourceclaims");
    }
    for v in volumes() {
        if v.csi.is_some() {
            return Some("csidrivers (via CSI volumes)");
        }
        if v.glusterfs.is_some() {
            return Some("endpoints (via glusterFS volumes)");
        }
        if v.persistent_volume_claim.is_some() {
            return Some("persistentvolumeclaims");
        }
        if v.ephemeral.is_some() {
            return Some("persistentvolumeclaims (via ephemeral volumes)");
        }
        for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if s.service_account_token.is_some() {
                return Some("serviceaccounts (via projected volumes)");
            }
            if s.cluster_trust_bundle.is_some() {
                return Some("clustertrustbundles");
            }
            if s.pod_certificate.is_some() {
                return Some("podcertificates");
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("pod yaml")
    }

    fn spec(containers_and_rest: &str) -> Pod {
        pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{containers_and_rest}"
        ))
    }

    const C: &str = "  containers:\n  - {name: app, image: x}\n";

    fn errors(p: &Pod) -> Vec<String> {
        validate_pod(p).into_iter().map(|e| e.to_string()).collect()
    }

    /// Table: a spec fragment and the errors it must give (exactly).
    #[test]
    fn invalid_pods_and_their_messages() {
        let cases: &[(&str, &[&str])] = &[
            (C, &[]),
            (
                "  volumes: [{name: etc, hostPath: {path: ../../etc}}]\n  containers:\n  - {name: app, image: x, volumeMounts: [{name: etc, mountPath: /e}]}\n",
                &["spec.volumes[0].hostPath.path: Invalid value: \"../../etc\": must not contain '..'"],
            ),
            (
                "  volumes: [{name: etc, hostPath: {path: /var/../etc}}]\n  containers:\n  - {name: app, image: x}\n",
                &["spec.volumes[0].hostPath.path: Invalid value: \"/var/../etc\": must not contain '..'"],
            ),
            (
                "  containers:\n  - {name: app, image: x}\n  - {name: app, image: y}\n",
                &["spec.containers[1].name: Duplicate value: \"app\""],
            ),
            (
                "  containers:\n  - {name: App_1, image: x}\n",
                &["spec.containers[0].name: Invalid value: \"App_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"],
            ),
            (
                "  containers:\n  - name: app\n    image: x\n    ports: [{containerPort: 70000}, {containerPort: 80, hostPort: -1}, {containerPort: 0}]\n",
                &[
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[1].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[2].containerPort: Required value",
                ],
            ),
            (
                "  containers:\n  - name: app\n    image: x\n    ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}, {containerPort: 82, name: Bad--Name-that-is-long}]\n",
                &[
                    "spec.containers[0].ports[1].name: Duplicate value: \"web\"",
                    "spec.containers[0].ports[2].name: Invalid value: \"Bad--Name-that-is-long\": must be no more than 15 characters",
                    "spec.containers[0].ports[2].name: Invalid value: \"Bad--Name-that-is-long\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                    "spec.containers[0].ports[2].name: Invalid value: \"Bad--Name-that-is-long\": must not contain consecutive hyphens",
                ],
            ),
            (
                "  hostNetwork: true\n  containers:\n  - {name: app, image: x, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81}]}\n",
                &["spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true"],
            ),
            (
                "  volumes: [{name: d, downwardAPI: {items: [{path: ../escape, fieldRef: {fieldPath: metadata.name}}, {path: /abs}, {path: ..data, fieldRef: {fieldPath: metadata.name}}]}}]\n  containers:\n  - {name: app, image: x}\n",
                &[
                    "spec.volumes[0].downwardAPI.items[0].path: Invalid value: \"../escape\": must not contain '..'",
                    "spec.volumes[0].downwardAPI.items[1].path: Invalid value: \"/abs\": must be a relative path",
                    "spec.volumes[0].downwardAPI.items[1]: Required value: one of fieldRef and resourceFieldRef is required",
                    "spec.volumes[0].downwardAPI.items[2].path: Invalid value: \"..data\": must not start with '..'",
                ],
            ),
            (
                "  containers:\n  - name: app\n    image: x\n    volumeMounts: [{name: v, mountPath: /v, subPath: ../up}]\n  volumes: [{name: v, emptyDir: {sizeLimit: -1Gi}}]\n",
                &[
                    "spec.volumes[0].emptyDir.sizeLimit: Forbidden: SizeLimit field must be a valid resource quantity",
                    "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../up\": must not contain '..'",
                ],
            ),
            (
                "  containers:\n  - name: app\n    image: x\n    volumeMounts: [{name: v, mountPath: /v, mountPropagation: Bidirectional}]\n  volumes: [{name: v, emptyDir: {}}]\n",
                &["spec.containers[0].volumeMounts[0].mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers"],
            ),
            (
                "  containers:\n  - name: app\n    image: x\n    livenessProbe: {successThreshold: 2, periodSeconds: -1, exec: {command: [true]}, httpGet: {port: 80}}\n    readinessProbe: {}\n    lifecycle: {preStop: {sleep: {seconds: -3}}}\n",
                &[
                    "spec.containers[0].livenessProbe.httpGet: Forbidden: may not specify more than 1 handler type",
                    "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
                    "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                    "spec.containers[0].readinessProbe: Required value: must specify a handler type",
                    "spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: -3: must be greater than or equal to 0",
                ],
            ),
            (
                "  initContainers:\n  - {name: init, image: x, readinessProbe: {exec: {command: [true]}}}\n  containers:\n  - {name: app, image: \" x\", env: [{name: \"A=B\", value: v}]}\n",
                &[
                    "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                    "spec.containers[0].image: Invalid value: \" x\": must not have leading or trailing whitespace",
                    "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                ],
            ),
            (
                "  dnsPolicy: None\n  hostAliases: [{ip: not-an-ip, hostnames: [Bad_Host]}]\n  activeDeadlineSeconds: 0\n  containers:\n  - {name: app, image: x}\n",
                &[
                    "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None",
                    "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
                    "spec.hostAliases[0].ip: Invalid value: \"not-an-ip\": must be a valid IP address",
                    "spec.hostAliases[0].hostnames[0]: Invalid value: \"Bad_Host\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                ],
            ),
            (
                "  hostNetwork: true\n  securityContext: {sysctls: [{name: net.core.somaxconn, value: \"1\"}, {name: \"kernel/shm max\", value: \"1\"}]}\n  tolerations: [{operator: Equal, value: x}, {key: k, operator: Exists, value: v}]\n  containers:\n  - {name: app, image: x}\n",
                &[
                    "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
                    "spec.securityContext.sysctls[0].name: Invalid value: \"net.core.somaxconn\": may not be specified when 'hostNetwork' is true",
                    "spec.securityContext.sysctls[1].name: Invalid value: \"kernel/shm max\": must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
                ],
            ),
        ];
        for (fragment, want) in cases {
            assert_eq!(&errors(&spec(fragment)), want, "{fragment}");
        }
    }

    #[test]
    fn metadata_rules() {
        let p = pod("apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\n  namespace: Default\n  labels: {\"bad key!\": v, ok: \"bad value!\"}\nspec:\n  containers:\n  - {name: app, image: x}\n");
        assert_eq!(
            errors(&p),
            [
                format!("metadata.name: Invalid value: \"Bad_Name\": {DNS_SUBDOMAIN_MSG}"),
                format!("metadata.namespace: Invalid value: \"Default\": {DNS_LABEL_MSG}"),
                format!("metadata.labels: Invalid value: \"bad key!\": {QUALIFIED_NAME_MSG}"),
                format!("metadata.labels[ok]: Invalid value: \"bad value!\": {LABEL_VALUE_MSG}"),
            ]
        );
        let long = "a".repeat(250);
        let p = pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {long}-node}}\nspec:\n{C}"
        ));
        assert_eq!(
            validate_pod(&p).len(),
            1,
            "a 255-character name is too long"
        );
    }

    #[test]
    fn api_references_of_static_pods() {
        let cases: &[(&str, Option<&str>)] = &[
            (C, None),
            (
                "  volumes: [{name: d, downwardAPI: {items: []}}, {name: e, emptyDir: {}}, {name: h, hostPath: {path: /x}}]\n  containers:\n  - {name: app, image: x}\n",
                None,
            ),
            (
                "  serviceAccountName: default\n  containers:\n  - {name: app, image: x}\n",
                Some("serviceaccounts"),
            ),
            (
                "  containers:\n  - {name: app, image: x, env: [{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}]}\n",
                Some("secrets"),
            ),
            (
                "  volumes: [{name: s, secret: {secretName: s}}]\n  containers:\n  - {name: app, image: x}\n",
                Some("secrets"),
            ),
            (
                "  containers:\n  - {name: app, image: x, envFrom: [{configMapRef: {name: c}}]}\n",
                Some("configmaps"),
            ),
            (
                "  volumes: [{name: c, configMap: {name: c}}]\n  containers:\n  - {name: app, image: x}\n",
                Some("configmaps"),
            ),
            (
                "  volumes: [{name: c, persistentVolumeClaim: {claimName: c}}]\n  containers:\n  - {name: app, image: x}\n",
                Some("persistentvolumeclaims"),
            ),
            (
                "  volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: t}}]}}]\n  containers:\n  - {name: app, image: x}\n",
                Some("serviceaccounts (via projected volumes)"),
            ),
        ];
        for (fragment, want) in cases {
            assert_eq!(api_object_reference(&spec(fragment)), *want, "{fragment}");
        }
    }

    #[test]
    fn name_helpers() {
        assert!(is_dns_label("a-1") && !is_dns_label("-a") && !is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("a.b-c") && !is_dns_subdomain("a..b"));
        assert!(qualified_name_errors("example.com/My_Name.1").is_empty());
        assert!(!qualified_name_errors("/x").is_empty());
        assert!(!qualified_name_errors("a/b/c").is_empty());
        assert!(port_name_errors("http").is_empty());
        assert!(!port_name_errors("8080").is_empty());
        assert!(
            is_sysctl_name("net.ipv4.ip_forward") && is_sysctl_name("net/ipv4/conf/eth0.100/x")
        );
        assert!(!is_sysctl_name("Net.x") && !is_sysctl_name("a..b"));
    }
}
