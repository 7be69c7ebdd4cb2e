//! The agent's layers, checked: every `crate::<module>` a source file names (outside comments)
//! must be allowed by [`RANKS`], and the library crates (runtime, volumes, probes) must not
//! depend on Kubernetes or on each other (the filesystem helpers of `fsutil` are theirs to
//! share, and depend on none of them). A new module gets a rank here; an edge upward or
//! sideways fails this test.
//!
//! ```text
//! main ─> assembly ─> cluster ─┐   cri ─> server ─┐
//!                              └─> pods <─────────┘ (server and cri read pods' state, never
//!                                                    the reverse; cri's streams are server's)
//! pods ─> rules (translate/, projection, claims, network, manifest, validation, security/,
//!          images) ─> runtime | volumes | probes
//! everyone ─> metrics, config, reasons, quantity (leaves; config checks sysctls with security/)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of the agent and its rank: a module may use modules of a lower rank
/// only (and itself). Equal ranks may not use each other, so no circle can form.
const RANKS: &[(&str, u32)] = &[
    ("metrics", 0),
    ("reasons", 0),
    ("certs", 0),
    ("quantity", 0),
    ("tls_roots", 0),
    // A rule on nothing but the runtime's types; config checks allowedUnsafeSysctls with it.
    ("security", 0),
    ("config", 1),
    ("fieldpath", 1),
    ("projection", 2),
    ("translate", 3),
    ("claims", 4),
    // The node's resource contract: allocatable, admission (resource fit, affinity, taints).
    ("admission", 4),
    ("network", 4),
    // Whether the pod network is ready (a CNI config in the conf folder) and what waits for it.
    ("podnet", 4),
    ("validation", 4),
    ("manifest", 5),
    // Node-pressure eviction: thresholds, ranking, messages (uses admission's requests).
    ("eviction", 5),
    ("shutdown", 5),
    ("images", 6),
    // Device plugins: the manager (Registration, Allocate) and its pure state.
    ("devices", 6),
    // DRA: the plugins (through the plugins registry), prepare/unprepare, its pure state.
    ("dra", 6),
    ("pods", 7),
    ("cluster", 8),
    ("server", 8),
    // The pod resources API: reads the pods the node runs and their devices.
    ("podresources", 8),
    // The CRI socket for the node's tools: reads pods' state as server does, and its streaming
    // URLs end in server's exec and attach sessions.
    ("cri", 9),
    ("assembly", 10),
    // The fuzz targets' invariants: they drive rules, pods' sources and the server's parsers.
    ("fuzzing", 9),
    ("cli", 11),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("read source folder")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs, main.rs, bin/).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (rank(&name).is_some()).then_some(name)
}

/// The modules `text` names as `crate::<module>`, outside `//` comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn agent_modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        seen.insert(module.clone());
        let from = rank(&module).unwrap_or(u32::MAX);
        let text = std::fs::read_to_string(f).expect("read source");
        for used in uses(&text) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(to) if to < from => {}
                Some(_) => bad.push(format!("{}: {module} -> {used}", f.display())),
                None => bad.push(format!("{}: {used} has no rank in RANKS", f.display())),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "forbidden module edges:\n{}",
        bad.join("\n")
    );
    // Every top-level module of lib.rs is ranked (a new one must be placed).
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    for line in lib.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(rank(m).is_some(), "module {m} has no rank in RANKS");
        }
    }
    assert!(seen.len() >= RANKS.len() - 1, "modules seen: {seen:?}");
}

#[test]
fn library_crates_know_nothing_of_kubernetes_or_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let libs = ["runtime", "volumes", "probes", "fsutil"];
    for lib in libs {
        let manifest =
            std::fs::read_to_string(root.join(lib).join("Cargo.toml")).expect("manifest");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|d| d.split("\n[").next())
            .unwrap_or("");
        for forbidden in [
            "k8s-openapi",
            "kube",
            "bosun-runtime",
            "bosun-volumes",
            "bosun-probes",
        ] {
            let named = deps
                .lines()
                .any(|l| l.split(['.', '=', ' ']).next() == Some(forbidden));
            assert!(!named, "{lib} depends on {forbidden}");
        }
    }
}

#[test]
fn the_checks_see_what_they_must() {
    let text = "use crate::pods::Ctx; // crate::cluster\nlet x = crate::metrics::render();";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["metrics", "pods"]);
}
