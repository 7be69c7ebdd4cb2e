//! The files the kubelet writes for a pod's network identity: `/etc/hosts`, `/etc/resolv.conf`
//! and `/etc/hostname`, as pure functions of the pod, its IPs and the node's DNS settings, plus
//! writing them into the pod folder (`<root>/pods/<uid>/etc-hosts` like the kubelet).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::translate;

/// The node's DNS settings (KubeletConfiguration `clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Content of the host's resolv.conf (the `resolvConf` file; empty when none).
    pub host_resolv: String,
}

/// Kubernetes' limits (validation.MaxDNSNameservers, MaxDNSSearchPaths).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The pod's hostname and, with a subdomain, its FQDN `<host>.<subdomain>.<ns>.svc.<domain>`.
/// A `hostnameOverride` is the whole name: no domain (the kubelet's
/// `GeneratePodHostNameAndDomain` returns it with an empty domain).
pub fn hostname_and_fqdn(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let host = translate::pod_hostname(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let overridden = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.hostname_override.is_some());
    let sub = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty() && !overridden);
    let fqdn = sub.map(|sub| {
        let d = cluster_domain.trim_end_matches('.');
        if d.is_empty() {
            format!("{host}.{sub}.{ns}.svc")
        } else {
            format!("{host}.{sub}.{ns}.svc.{d}")
        }
    });
    (host, fqdn)
}

/// The hostname set in the pod's uts namespace and written to /etc/hostname: the FQDN with
/// `setHostnameAsFQDN` (when there is one), else the short hostname.
pub fn uts_hostname(pod: &Pod, cluster_domain: &str) -> String {
    let (host, fqdn) = hostname_and_fqdn(pod, cluster_domain);
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match fqdn {
        Some(f) if as_fqdn => f,
        _ => host,
    }
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
    }
    out
}

/// /etc/hosts in the kubelet's format. With hostNetwork the host's file (`host_hosts`) is used.
pub fn hosts_file(pod: &Pod, pod_ips: &[String], cluster_domain: &str, host_hosts: &str) -> String {
    if host_network(pod) {
        let mut out = String::from("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(host_hosts);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&host_aliases(pod));
        return out;
    }
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let (host, fqdn) = hostname_and_fqdn(pod, cluster_domain);
    for ip in pod_ips {
        match &fqdn {
            Some(f) => out.push_str(&format!("{ip}\t{f}\t{host}\n")),
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// The parts of a resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parses a resolv.conf (nameserver, search/domain, options; comments ignored).
pub fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.nameservers.extend(words.next().map(String::from)),
            Some("search") | Some("domain") => {
                r.searches = words.map(String::from).collect();
            }
            Some("options") => r.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    r
}

fn merge_options(into: &mut Vec<String>, add: impl IntoIterator<Item = String>) {
    for o in add {
        let key = o.split(':').next().unwrap_or("").to_string();
        into.retain(|e| e.split(':').next() != Some(key.as_str()));
        into.push(o);
    }
}

fn push_unique(into: &mut Vec<String>, add: impl IntoIterator<Item = String>) {
    for a in add {
        if !into.contains(&a) {
            into.push(a);
        }
    }
}

/// The resolv.conf content of a pod for its dnsPolicy (the kubelet's rules, dns.go):
/// ClusterFirst (default) uses clusterDNS with the cluster search path and `ndots:5`, unless the
/// pod uses the host network or no clusterDNS is configured, in which case it falls back to
/// Default (the host's resolv.conf); ClusterFirstWithHostNet is ClusterFirst even with the host
/// network; None starts empty. `dnsConfig` is merged into all of them.
pub fn resolv(pod: &Pod, dns: &DnsSettings) -> Resolv {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host = parse_resolv(&dns.host_resolv);
    let cluster = |r: &mut Resolv| {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let d = dns.cluster_domain.trim_end_matches('.');
        r.nameservers = dns.cluster_dns.clone();
        r.searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
        push_unique(&mut r.searches, host.searches.clone());
        r.options = vec!["ndots:5".into()];
    };
    let mut r = Resolv::default();
    let has_cluster = !dns.cluster_dns.is_empty();
    match policy {
        "None" => {}
        "Default" => r = host.clone(),
        "ClusterFirstWithHostNet" if has_cluster => cluster(&mut r),
        "ClusterFirst" if has_cluster && !spec.host_network.unwrap_or(false) => cluster(&mut r),
        _ => r = host.clone(),
    }
    if let Some(cfg) = &spec.dns_config {
        push_unique(
            &mut r.nameservers,
            cfg.nameservers.clone().unwrap_or_default(),
        );
        push_unique(&mut r.searches, cfg.searches.clone().unwrap_or_default());
        merge_options(
            &mut r.options,
            cfg.options
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|o| match o.value.filter(|v| !v.is_empty()) {
                    Some(v) => format!("{}:{v}", o.name.unwrap_or_default()),
                    None => o.name.unwrap_or_default(),
                }),
        );
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    r
}

/// Formats a [`Resolv`] as a file.
pub fn resolv_text(r: &Resolv) -> String {
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    out
}

/// The host paths of the files written for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFiles {
    pub hosts: PathBuf,
    pub resolv: PathBuf,
    pub hostname: PathBuf,
}

/// Writes `etc-hosts`, `resolv.conf` and `hostname` into `pod_dir` (atomically) and returns
/// their paths for bind mounts. `host_hosts` is the host's /etc/hosts (for hostNetwork pods).
pub fn write_pod_files(
    pod_dir: &Path,
    pod: &Pod,
    pod_ips: &[String],
    dns: &DnsSettings,
    host_hosts: &str,
) -> std::io::Result<PodFiles> {
    std::fs::create_dir_all(pod_dir)?;
    let write = |name: &str, text: String| -> std::io::Result<PathBuf> {
        let path = pod_dir.join(name);
        let tmp = pod_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    };
    let hostname = if host_network(pod) {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    } else {
        uts_hostname(pod, &dns.cluster_domain)
    };
    Ok(PodFiles {
        hosts: write(
            "etc-hosts",
            hosts_file(pod, pod_ips, &dns.cluster_domain, host_hosts),
        )?,
        resolv: write("resolv.conf", resolv_text(&resolv(pod, dns)))?,
        hostname: write("hostname", format!("{hostname}\n"))?,
    })
}

/// Replaces a pod file's content keeping its inode: a container built with the file
/// bind-mounted sees the new content (a rename would leave it the old file). Only for a file
/// no running process reads yet.
pub fn rewrite_in_place(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(content)
}

/// The addresses `--node-ip` names (one, or two for a dual-stack node: "a,b").
pub fn node_ips(flag: Option<&str>) -> Vec<String> {
    flag.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A pod's hostIP, and a hostNetwork pod's IP: the node's address as the kubelet takes it, the
/// first of `--node-ip` when set, else the default route's source address.
pub fn host_ip(node_ip_flag: Option<&str>) -> Option<String> {
    node_ips(node_ip_flag)
        .into_iter()
        .next()
        .or_else(default_route_ip)
}

/// The source address of the default route (a UDP socket is connected, which sends nothing),
/// else None.
fn default_route_ip() -> Option<String> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

/// hostPort mappings of every container (and init container) for the portmap plugin.
pub fn port_mappings(pod: &Pod) -> Vec<bosun_runtime::cni::PortMapping> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(bosun_runtime::cni::PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// Fills podIP(s) and hostIP(s) of a status.
pub fn set_ips(
    st: &mut k8s_openapi::api::core::v1::PodStatus,
    pod_ips: &[String],
    host_ip: Option<&str>,
) {
    use k8s_openapi::api::core::v1::{HostIP, PodIP};
    if let Some(first) = pod_ips.first() {
        st.pod_ip = Some(first.clone());
        st.pod_ips = Some(pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
    }
    if let Some(h) = host_ip {
        st.host_ip = Some(h.to_string());
        st.host_ips = Some(vec![HostIP { ip: h.to_string() }]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_from_the_flag() {
        let cases: [(Option<&str>, &[&str]); 5] = [
            (None, &[]),
            (Some(""), &[]),
            (Some("10.0.0.5"), &["10.0.0.5"]),
            (Some("10.0.0.5,fd00::5"), &["10.0.0.5", "fd00::5"]),
            (Some(" 10.0.0.5 , "), &["10.0.0.5"]),
        ];
        for (flag, want) in cases {
            assert_eq!(node_ips(flag), want, "{flag:?}");
        }
        // The flag wins over the default route's address.
        assert_eq!(
            host_ip(Some("10.0.0.5,fd00::5")).as_deref(),
            Some("10.0.0.5")
        );
    }

    #[test]
    fn rewrite_in_place_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("etc-hosts");
        std::fs::write(&path, "a long first version\n").expect("write");
        let ino = std::fs::metadata(&path).expect("stat").ino();
        rewrite_in_place(&path, b"short\n").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"short\n");
        assert_eq!(std::fs::metadata(&path).expect("stat").ino(), ino);
        assert!(rewrite_in_place(&dir.path().join("missing"), b"x").is_err());
    }

    fn pod(yaml: &str) -> Pod {
        let mut p: Pod = serde_yaml::from_str(yaml).unwrap();
        p.metadata.namespace.get_or_insert_with(|| "ns1".into());
        p
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv: "# host\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan example.com\noptions edns0\n".into(),
        }
    }

    const HEADER: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

    #[test]
    fn hosts_plain_subdomain_and_aliases() {
        let p = pod("metadata: {name: web}\nspec: {containers: []}");
        assert_eq!(
            hosts_file(&p, &["10.244.0.5".into()], "cluster.local", ""),
            format!("{HEADER}10.244.0.5\tweb\n")
        );
        let p = pod("metadata: {name: web}\nspec:\n  hostname: h\n  subdomain: sub\n  hostAliases:\n  - {ip: 1.2.3.4, hostnames: [foo, bar]}\n  containers: []");
        assert_eq!(
            hosts_file(&p, &["10.244.0.5".into()], "cluster.local", ""),
            format!("{HEADER}10.244.0.5\th.sub.ns1.svc.cluster.local\th\n\n# Entries added by HostAliases.\n1.2.3.4\tfoo\tbar\n")
        );
    }

    #[test]
    fn hosts_host_network_uses_host_file() {
        let p = pod("metadata: {name: web}\nspec: {hostNetwork: true, containers: []}");
        assert_eq!(
            hosts_file(
                &p,
                &["10.0.0.1".into()],
                "cluster.local",
                "127.0.0.1 localhost"
            ),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn resolv_cluster_first() {
        let p = pod("metadata: {name: web}\nspec: {containers: []}");
        assert_eq!(
            resolv_text(&resolv(&p, &dns())),
            "nameserver 10.96.0.10\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local lan example.com\noptions ndots:5\n"
        );
    }

    #[test]
    fn resolv_cluster_first_falls_back_to_default() {
        // Without clusterDNS, and with hostNetwork, ClusterFirst behaves like Default.
        let host = "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan example.com\noptions edns0\n";
        let p = pod("metadata: {name: web}\nspec: {containers: []}");
        let mut d = dns();
        d.cluster_dns.clear();
        assert_eq!(resolv_text(&resolv(&p, &d)), host);
        let p = pod("metadata: {name: web}\nspec: {hostNetwork: true, containers: []}");
        assert_eq!(resolv_text(&resolv(&p, &dns())), host);
        let p = pod("metadata: {name: web}\nspec: {dnsPolicy: Default, containers: []}");
        assert_eq!(resolv_text(&resolv(&p, &dns())), host);
    }

    #[test]
    fn resolv_with_host_net_and_none() {
        let p = pod("metadata: {name: web}\nspec: {hostNetwork: true, dnsPolicy: ClusterFirstWithHostNet, containers: []}");
        assert!(resolv_text(&resolv(&p, &dns())).starts_with("nameserver 10.96.0.10\n"));
        let p = pod("metadata: {name: web}\nspec:\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [1.1.1.1]\n    searches: [a.example]\n    options: [{name: ndots, value: '2'}, {name: edns0}]\n  containers: []");
        assert_eq!(
            resolv_text(&resolv(&p, &dns())),
            "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 edns0\n"
        );
        // dnsConfig merges into ClusterFirst, options override by name.
        let p = pod("metadata: {name: web}\nspec:\n  dnsConfig:\n    nameservers: [1.1.1.1]\n    options: [{name: ndots, value: '1'}]\n  containers: []");
        let r = resolv(&p, &dns());
        assert_eq!(r.nameservers, vec!["10.96.0.10", "1.1.1.1"]);
        assert_eq!(r.options, vec!["ndots:1"]);
    }

    #[test]
    fn hostname_as_fqdn() {
        let p = pod(
            "metadata: {name: web}\nspec: {subdomain: s, setHostnameAsFQDN: true, containers: []}",
        );
        assert_eq!(
            uts_hostname(&p, "cluster.local"),
            "web.s.ns1.svc.cluster.local"
        );
        let p = pod("metadata: {name: web}\nspec: {setHostnameAsFQDN: true, containers: []}");
        assert_eq!(uts_hostname(&p, "cluster.local"), "web");
        // hostnameOverride: no domain, even with a subdomain (`hostname -f` is the override).
        let p = pod("metadata: {name: web}\nspec: {hostnameOverride: my.host, subdomain: s, setHostnameAsFQDN: true, containers: []}");
        assert_eq!(
            hostname_and_fqdn(&p, "cluster.local"),
            ("my.host".to_string(), None)
        );
        assert_eq!(uts_hostname(&p, "cluster.local"), "my.host");
    }

    #[test]
    fn host_ports_become_mappings() {
        let p = pod("metadata: {name: web}\nspec:\n  containers:\n  - name: a\n    ports:\n    - {containerPort: 80, hostPort: 8080}\n    - {containerPort: 53, hostPort: 5353, protocol: UDP, hostIP: 127.0.0.1}\n    - {containerPort: 81}");
        let m = port_mappings(&p);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].host_port, m[0].container_port, m[0].protocol.as_str()),
            (8080, 80, "tcp")
        );
        assert_eq!(
            (m[1].protocol.as_str(), m[1].host_ip.as_str()),
            ("udp", "127.0.0.1")
        );
    }

    #[test]
    fn writes_files() {
        let d = tempfile::tempdir().unwrap();
        let p = pod("metadata: {name: web}\nspec: {containers: []}");
        let f = write_pod_files(d.path(), &p, &["10.1.1.1".into()], &dns(), "").unwrap();
        assert!(std::fs::read_to_string(f.hosts)
            .unwrap()
            .ends_with("10.1.1.1\tweb\n"));
        assert_eq!(std::fs::read_to_string(f.hostname).unwrap(), "web\n");
        assert!(std::fs::read_to_string(f.resolv)
            .unwrap()
            .contains("ndots:5"));
    }
}
