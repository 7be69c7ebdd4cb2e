//! The bodies of the fuzz targets (`fuzz/`, run by `hack/fuzz.sh`): each takes arbitrary bytes,
//! must not panic, and asserts what must hold whatever the input. The unit tests below run them
//! over the seed corpus and a few thousand generated inputs on stable, so they stay compiled and
//! true between fuzz runs.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::server::request::{self, Decision, Endpoint};
use crate::server::{exec, logs, portforward, spdy};

/// A static pod manifest, as the folder source reads it (parse, default, validate), then
/// everything bosun computes from a pod without root: sandbox, QoS, resources, volumes, mounts,
/// security, the container spec. A `.json` file when the input starts with `{`, else YAML.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = if text.trim_start().starts_with('{') {
        "/etc/kubernetes/manifests/fuzz.json"
    } else {
        "/etc/kubernetes/manifests/fuzz.yaml"
    };
    let Ok(pods) = crate::pods::source::pods_of(Path::new(file), &text, "node1") else {
        return;
    };
    for pod in &pods {
        // What the source lets through validates, and has none of what validation exists to
        // stop (a hostPath that climbs out, a name that is not one).
        assert_eq!(
            crate::validation::validate_pod(pod),
            Vec::new(),
            "source passed an invalid pod"
        );
        let name = pod.metadata.name.as_deref().unwrap_or("");
        assert!(crate::validation::is_dns_subdomain(name), "{name:?}");
        let Some(spec) = pod.spec.as_ref() else {
            panic!("a valid pod without spec");
        };
        for v in spec.volumes.iter().flatten() {
            if let Some(h) = &v.host_path {
                assert!(!h.path.split('/').any(|c| c == ".."), "{:?}", h.path);
            }
        }
        let _ = crate::translate::sandbox_spec(pod);
        let _ = crate::translate::volume_sources(pod, false);
        let image = bosun_runtime::image::ImageConfig::default();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        for c in containers {
            let _ = crate::translate::mount_requests(pod, c, None);
            let _ = crate::translate::container_security(pod, c);
            let _ = crate::translate::container_hash(c);
            let ctx = crate::translate::ContainerContext {
                pod,
                container: c,
                image: &image,
                image_ref: c.image.as_deref().unwrap_or(""),
                image_id: "sha256:0",
                attempt: 0,
                mounts: Vec::new(),
                node_memory_bytes: 8 << 30,
                node_cpu_millis: 4000,
                termination_message_path: None,
                objects: None,
            };
            let _ = crate::translate::container_spec(&ctx);
        }
    }
}

/// A request line of the kubelet API (`METHOD path[?query]`, the first line of the input) and
/// the query parsers of its endpoints. What must hold: authorization and routing agree (the
/// endpoint is the one of the decided path), a streaming endpoint is only ever reached with
/// `create` on `nodes/proxy`, and a redirect leads to a clean path that is not redirected again.
pub fn request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let line = text.lines().next().unwrap_or("");
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    match request::decide(method, path, query) {
        Decision::Serve(r) => {
            assert_eq!(request::clean_path(path), path, "served an unclean path");
            assert!(!r.attributes.is_empty());
            assert_eq!(request::endpoint(method, &r.path), r.endpoint);
            let streaming = matches!(
                r.endpoint,
                Endpoint::Exec(_) | Endpoint::Attach(_) | Endpoint::PortForward { .. }
            );
            if streaming {
                for a in &r.attributes {
                    assert_eq!((a.verb, a.subresource), ("create", "proxy"), "{line:?}");
                }
            }
            // Every attribute of one request has the same verb.
            assert!(r.attributes.iter().all(|a| a.verb == r.attributes[0].verb));
        }
        Decision::Redirect(location) => {
            let (to, q) = match location.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (location.as_str(), None),
            };
            assert_eq!(request::clean_path(to), to);
            assert!(
                !matches!(request::decide(method, to, q), Decision::Redirect(_)),
                "{line:?} redirects twice"
            );
        }
        Decision::Bad(_) => {}
    }
    let pairs = logs::query_pairs(query);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Ok(o) = logs::parse_options(&pairs, now) {
        assert!(o.limit_bytes != Some(0));
    }
    let _ = exec::parse_request(&pairs);
    let _ = portforward::query_ports(&pairs);
    for (_, v) in &pairs {
        let _ = logs::parse_rfc3339(v);
        let _ = portforward::parse_port(v);
    }
}

/// SPDY/3.1 frames as a peer sends them, cut in two reads at a point the input chooses, and
/// uncompressed header blocks.
pub fn spdy(data: &[u8]) {
    let cut = data
        .first()
        .map(|b| usize::from(*b) % (data.len() + 1))
        .unwrap_or(0);
    let mut d = spdy::Decoder::new();
    let mut frames = 0usize;
    'outer: for part in [&data[..cut], &data[cut..]] {
        d.push(part);
        loop {
            match d.next_frame() {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    // A frame has at least its 8-byte head.
    assert!(frames <= data.len() / 8);
    if let Ok(headers) = spdy::parse_header_block(data) {
        // What parses serializes and parses back to the same headers (names lowercased).
        let again = spdy::parse_header_block(&spdy::header_block(&headers)).expect("reparse");
        let sorted = |mut h: spdy::Headers| {
            h.sort();
            h
        };
        assert_eq!(sorted(again), sorted(headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds of one target (fuzz/seeds/<target>/).
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = repo().join("fuzz/seeds").join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out.sort();
        out
    }

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("repository")
            .to_path_buf()
    }

    /// Small deterministic mutations of the seeds (bytes flipped, cut, repeated): what a fuzz
    /// run starts from, in a unit test's time.
    fn mutations(seed: &[u8], n: usize) -> Vec<Vec<u8>> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.len() as u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                let mut m = seed.to_vec();
                for _ in 0..1 + next() % 4 {
                    if m.is_empty() {
                        m.push(next() as u8);
                        continue;
                    }
                    let at = (next() as usize) % m.len();
                    match next() % 4 {
                        0 => m[at] = next() as u8,
                        1 => m.truncate(at),
                        2 => {
                            let tail = m[at..].to_vec();
                            m.extend_from_slice(&tail);
                        }
                        _ => m.insert(at, b"./%{}:-\n\0"[(next() % 9) as usize]),
                    }
                }
                m
            })
            .collect()
    }

    #[test]
    fn manifest_target_holds_on_seeds_and_mutations() {
        // The seeds are valid pods: the fuzzer starts from the whole path, translate included.
        for s in seeds("manifest") {
            let text = String::from_utf8_lossy(&s);
            let file = if text.starts_with('{') {
                "/m/s.json"
            } else {
                "/m/s.yaml"
            };
            let pods = crate::pods::source::pods_of(Path::new(file), &text, "node1");
            assert!(
                pods.as_ref().is_ok_and(|p| !p.is_empty()),
                "{pods:?}\n{text}"
            );
        }
        for s in seeds("manifest") {
            manifest(&s);
            for m in mutations(&s, 200) {
                manifest(&m);
            }
        }
    }

    #[test]
    fn request_target_holds_on_seeds_and_mutations() {
        for s in seeds("request") {
            request(&s);
            for m in mutations(&s, 500) {
                request(&m);
            }
        }
    }

    #[test]
    fn spdy_target_holds_on_seeds_and_mutations() {
        for s in seeds("spdy") {
            spdy(&s);
            for m in mutations(&s, 500) {
                spdy(&m);
            }
        }
    }
}
