use super::*;

const NVIDIA: &str = include_str!("testdata/nvidia-gpu.yaml");
const DRA: &str = include_str!("testdata/dra-test-driver.json");
const VENDOR: &str = include_str!("testdata/vendor-all-edits.yaml");

/// A host where every node is a character device 195:<last digit of the path, or 255>.
fn fake_stat(p: &Path) -> Result<(String, i64, i64), String> {
    let s = p.to_string_lossy();
    if s.contains("missing") {
        return Err("No such file or directory (os error 2)".into());
    }
    if s.contains("fifo") {
        return Ok(("p".into(), 0, 0));
    }
    let minor = s
        .chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .map_or(255, i64::from);
    Ok(("c".into(), 195, minor))
}

fn registry(files: &[(&str, usize, &str)]) -> Registry {
    Registry::from_files(
        files
            .iter()
            .map(|(p, prio, d)| (PathBuf::from(p), *prio, d.as_bytes().to_vec()))
            .collect(),
    )
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn real_specs_parse_and_validate() {
    for (name, data) in [("nvidia", NVIDIA), ("dra", DRA), ("vendor", VENDOR)] {
        let spec = Spec::parse(data.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let nv = Spec::parse(NVIDIA.as_bytes()).expect("parse");
    assert_eq!(nv.kind, "nvidia.com/gpu");
    assert_eq!(nv.devices.len(), 3);
    assert_eq!(nv.container_edits.hooks[0].hook_name, "createContainer");
    assert_eq!(
        nv.container_edits.mounts[0].options,
        ["ro", "nosuid", "nodev", "bind"]
    );
    // A device named "0" and a hostPath need 0.5.0.
    assert_eq!(nv.minimum_version(), (0, 5, 0));
    let v = Spec::parse(VENDOR.as_bytes()).expect("parse");
    assert_eq!(v.minimum_version(), (1, 1, 0));
    assert_eq!(
        v.devices[0].container_edits.device_nodes[0].file_mode,
        Some(0o660)
    );
}

#[test]
fn versions_are_checked_against_the_fields_used() {
    let with_version = |data: &str, from: &str, to: &str| {
        Spec::parse(data.replacen(from, to, 1).as_bytes())
            .expect("parse")
            .validate()
    };
    assert_eq!(
        with_version(NVIDIA, "cdiVersion: 0.5.0", "cdiVersion: 0.4.0"),
        Err("the spec version must be at least v0.5.0".into())
    );
    assert_eq!(
        with_version(NVIDIA, "cdiVersion: 0.5.0", "cdiVersion: v0.6.0"),
        Ok(())
    );
    assert_eq!(
        with_version(NVIDIA, "cdiVersion: 0.5.0", "cdiVersion: 2.0.0"),
        Err("invalid version \"2.0.0\"".into())
    );
    assert_eq!(
        with_version(VENDOR, "cdiVersion: 1.1.0", "cdiVersion: 1.0.0"),
        Err("the spec version must be at least v1.1.0".into())
    );
    // A dotted class needs 0.6.0, mount types 0.4.0.
    let dotted = r#"{"cdiVersion":"0.5.0","kind":"a.com/b.c","devices":[{"name":"x","containerEdits":{"env":["A=1"]}}]}"#;
    assert_eq!(
        Spec::parse(dotted.as_bytes()).expect("parse").validate(),
        Err("the spec version must be at least v0.6.0".into())
    );
    let typed = r#"{"cdiVersion":"0.3.0","kind":"a.com/b","devices":[{"name":"x","containerEdits":{"mounts":[{"hostPath":"/a","containerPath":"/b","type":"tmpfs"}]}}]}"#;
    assert_eq!(
        Spec::parse(typed.as_bytes()).expect("parse").validate(),
        Err("the spec version must be at least v0.4.0".into())
    );
    // enableCMT is a field of 0.7.0 to 1.0.0.
    let cmt = |v: &str| {
        format!(
            r#"{{"cdiVersion":"{v}","kind":"a.com/b","devices":[{{"name":"x","containerEdits":{{"intelRdt":{{"enableCMT":true}}}}}}]}}"#
        )
    };
    assert_eq!(
        Spec::parse(cmt("1.0.0").as_bytes())
            .expect("parse")
            .validate(),
        Ok(())
    );
    assert!(Spec::parse(cmt("1.1.0").as_bytes())
        .expect("parse")
        .validate()
        .is_err_and(|e| e.contains("enableCMT")));
}

#[test]
fn invalid_specs_say_why() {
    let bad = |edits: &str| {
        let s = format!(
            r#"{{"cdiVersion":"0.7.0","kind":"a.com/b","devices":[{{"name":"x","containerEdits":{edits}}}]}}"#
        );
        Spec::parse(s.as_bytes()).expect("parse").validate()
    };
    assert_eq!(bad("{}"), Err("device \"x\": empty container edits".into()));
    assert_eq!(
        bad(r#"{"env":["=1"]}"#),
        Err("device \"x\": invalid container edits: invalid environment variable \"=1\"".into())
    );
    assert_eq!(
        bad(r#"{"deviceNodes":[{"path":"/dev/a","type":"x"}]}"#),
        Err("device \"x\": device \"/dev/a\": invalid type \"x\"".into())
    );
    assert_eq!(
        bad(r#"{"deviceNodes":[{"path":"/dev/a","permissions":"rwx"}]}"#),
        Err("device \"x\": device \"/dev/a\": invalid permissions \"rwx\"".into())
    );
    assert_eq!(
        bad(r#"{"hooks":[{"hookName":"preStart","path":"/x"}]}"#),
        Err("device \"x\": invalid hook name \"preStart\"".into())
    );
    assert_eq!(
        bad(r#"{"mounts":[{"hostPath":"","containerPath":"/x"}]}"#),
        Err("device \"x\": invalid mount, empty host path".into())
    );
    assert_eq!(
        bad(r#"{"intelRdt":{"closID":"a/b"}}"#),
        Err("device \"x\": invalid ClosID".into())
    );
    let no_devices = r#"{"cdiVersion":"0.3.0","kind":"a.com/b","devices":[]}"#;
    assert_eq!(
        Spec::parse(no_devices.as_bytes())
            .expect("parse")
            .validate(),
        Err("invalid spec, no devices".into())
    );
    let twice = r#"{"cdiVersion":"0.3.0","kind":"a.com/b","devices":[{"name":"x","containerEdits":{"env":["A=1"]}},{"name":"x","containerEdits":{"env":["A=1"]}}]}"#;
    assert_eq!(
        Spec::parse(twice.as_bytes()).expect("parse").validate(),
        Err("invalid spec, multiple device \"x\"".into())
    );
    let kind = r#"{"cdiVersion":"0.3.0","kind":"vendor","devices":[{"name":"x","containerEdits":{"env":["A=1"]}}]}"#;
    assert_eq!(
        Spec::parse(kind.as_bytes()).expect("parse").validate(),
        Err("kind \"vendor\" is not vendor/class".into())
    );
    // Unknown fields are errors, as the reference implementation parses strictly.
    let unknown = r#"{"cdiVersion":"0.3.0","kind":"a.com/b","devices":[],"extra":1}"#;
    assert!(Spec::parse(unknown.as_bytes()).is_err());
}

#[test]
fn qualified_names() {
    assert_eq!(
        parse_qualified_name("nvidia.com/gpu=0"),
        Ok(("nvidia.com", "gpu", "0"))
    );
    assert_eq!(
        parse_qualified_name("vendor.example.com/accel.v2=GPU-4c:f8_d.1"),
        Ok(("vendor.example.com", "accel.v2", "GPU-4c:f8_d.1"))
    );
    for bad in [
        "nvidia.com/gpu",
        "gpu=0",
        "1vendor.com/gpu=0",
        "vendor.com-/gpu=0",
        "vendor.com/gpu=",
        "vendor.com/gpu=-0",
        "vendor.com/gp u=0",
        "vendor.com/gpu=0/1",
    ] {
        assert!(parse_qualified_name(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn later_folders_win_and_same_folder_conflicts_drop_both() {
    let etc = DRA.replace("admin_a=b", "FROM=etc");
    let run = DRA.replace("admin_a=b", "FROM=run");
    let dev = "test-driver.cdi.k8s.io/test=claim-6e1f4e5c-1b6b-4d5e-9a57-6f0c2a3b9d11-my-request";
    let reg = registry(&[
        ("/etc/cdi/a.json", 0, &etc),
        ("/var/run/cdi/b.json", 1, &run),
    ]);
    let edits = reg
        .resolve_with(&names(&[dev]), fake_stat)
        .expect("resolve");
    assert!(edits.env.contains(&"FROM=run".to_string()), "{edits:?}");
    // The order of the folders decides, not the order the files were read in.
    let reg = registry(&[
        ("/var/run/cdi/b.json", 1, &run),
        ("/etc/cdi/a.json", 0, &etc),
    ]);
    let edits = reg
        .resolve_with(&names(&[dev]), fake_stat)
        .expect("resolve");
    assert!(edits.env.contains(&"FROM=run".to_string()), "{edits:?}");

    let reg = registry(&[
        ("/var/run/cdi/a.json", 1, &etc),
        ("/var/run/cdi/b.json", 1, &run),
    ]);
    assert!(reg.device_names().is_empty());
    assert!(matches!(
        reg.errors(),
        [LoadError::Conflict { device, .. }] if device == dev
    ));
    assert!(matches!(
        reg.resolve_with(&names(&[dev]), fake_stat),
        Err(InjectError::Unresolvable { devices }) if devices == [dev]
    ));
}

#[test]
fn a_broken_file_leaves_the_others_usable() {
    let reg = registry(&[
        ("/etc/cdi/broken.yaml", 0, "cdiVersion: [1"),
        ("/etc/cdi/old.json", 0, &DRA.replace("0.3.0", "0.0.1")),
        ("/etc/cdi/nvidia.yaml", 0, NVIDIA),
    ]);
    assert_eq!(
        reg.device_names(),
        [
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
            "nvidia.com/gpu=all"
        ]
    );
    let errs: Vec<String> = reg.errors().iter().map(|e| e.to_string()).collect();
    assert!(
        errs[0].starts_with("parse CDI spec /etc/cdi/broken.yaml"),
        "{errs:?}"
    );
    assert_eq!(
        errs[1],
        "invalid CDI spec /etc/cdi/old.json: invalid version \"0.0.1\""
    );
}

#[test]
fn resolving_takes_spec_edits_once_then_each_device() {
    let reg = registry(&[("/etc/cdi/nvidia.yaml", 0, NVIDIA)]);
    let edits = reg
        .resolve_with(
            &names(&["nvidia.com/gpu=0", "nvidia.com/gpu=all"]),
            fake_stat,
        )
        .expect("resolve");
    assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
    let nodes: Vec<(&str, &str, i64, i64)> = edits
        .device_nodes
        .iter()
        .map(|n| {
            (
                n.path.as_str(),
                n.kind.as_deref().unwrap_or_default(),
                n.major,
                n.minor,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/nvidiactl", "c", 195, 255),
            ("/dev/nvidia-uvm", "c", 195, 255),
            ("/dev/nvidia0", "c", 195, 0),
            ("/dev/nvidia0", "c", 195, 0),
        ]
    );
    assert_eq!(edits.hooks.len(), 2);
    assert_eq!(edits.mounts.len(), 2);
    assert!(matches!(
        reg.resolve_with(&names(&["nvidia.com/gpu=1", "nvidia.com/gpu=0", "x.com/y=z"]), fake_stat),
        Err(InjectError::Unresolvable { devices }) if devices == ["nvidia.com/gpu=1", "x.com/y=z"]
    ));
}

#[test]
fn device_nodes_are_completed_from_the_host() {
    let node = |path: &str, kind: Option<&str>, major: i64| DeviceNode {
        path: path.into(),
        kind: kind.map(str::to_string),
        major,
        ..Default::default()
    };
    let mut n = node("/dev/x1", None, 0);
    complete_node(&mut n, "a.com/b=c", fake_stat).expect("complete");
    assert_eq!(
        (n.host_path.as_deref(), n.kind.as_deref(), n.major, n.minor),
        (Some("/dev/x1"), Some("c"), 195, 1)
    );
    // Type and major given: the host is not asked.
    let mut n = node("/dev/missing", Some("b"), 8);
    complete_node(&mut n, "a.com/b=c", fake_stat).expect("complete");
    assert_eq!(n.major, 8);
    let mut n = node("/dev/fifo", Some("p"), 0);
    complete_node(&mut n, "a.com/b=c", fake_stat).expect("complete");
    let err = complete_node(&mut node("/dev/x2", Some("b"), 0), "a.com/b=c", fake_stat)
        .expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        "CDI device a.com/b=c: host device /dev/x2: host type mismatch: the spec says b, the host node is c"
    );
    let err = complete_node(&mut node("/dev/missing", None, 0), "a.com/b=c", fake_stat)
        .expect_err("missing");
    assert!(
        matches!(err, InjectError::DeviceNode { host_path, .. } if host_path == "/dev/missing")
    );
    // The real host: /dev/null is the character device 1:3.
    let mut n = node("/dev/null", None, 0);
    complete_node(&mut n, "a.com/b=c", host_node).expect("complete");
    assert_eq!((n.kind.as_deref(), n.major, n.minor), (Some("c"), 1, 3));
    let mut n = node("/etc/hostname", None, 0);
    assert!(complete_node(&mut n, "a.com/b=c", host_node).is_err());
}

fn base_doc() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 1000, "gid": 0, "additionalGids": [44]}, "cwd": "/",
                    "env": ["PATH=/bin", "ACCEL_VISIBLE=all"]},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/opt/accel/fw", "type": "bind", "source": "/old", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/v", "options": ["rbind"]},
        ],
        "linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}],
                  "resources": {"devices": [{"allow": false, "access": "rwm"}]}},
    })
}

#[test]
fn edits_are_made_in_the_oci_document() {
    let reg = registry(&[("/var/run/cdi/vendor.yaml", 1, VENDOR)]);
    let edits = reg
        .resolve_with(&names(&["vendor.example.com/accel.v2=accel0"]), fake_stat)
        .expect("resolve");
    let mut doc = base_doc();
    apply(&mut doc, &edits);
    assert_eq!(
        doc["process"]["env"],
        json!(["PATH=/bin", "ACCEL_VISIBLE=0", "ACCEL_DRIVER=1.2"])
    );
    // The spec gives the node's owner; the host's /dev/null (fake: c 195:255) its numbers.
    assert_eq!(
        doc["linux"]["devices"][1],
        json!({"path": "/dev/accel/accel0", "type": "c", "major": 195, "minor": 255,
               "fileMode": 0o660, "uid": 1000, "gid": 1000})
    );
    assert_eq!(
        doc["linux"]["resources"]["devices"][1],
        json!({"allow": true, "type": "c", "major": 195, "minor": 255, "access": "rw"})
    );
    let dests: Vec<&str> = doc["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["destination"].as_str().expect("destination"))
        .collect();
    // Replaced at the same destination, then sorted by depth (stably).
    assert_eq!(dests, ["/proc", "/data", "/dev/pts", "/opt/accel/fw"]);
    assert_eq!(
        doc["mounts"][3],
        json!({"destination": "/opt/accel/fw", "source": "/opt/accel/fw", "type": "bind",
               "options": ["rbind", "ro"]})
    );
    assert_eq!(
        doc["hooks"]["poststop"],
        json!([{"path": "/opt/accel/bin/reset", "args": ["reset", "--all"],
                "env": ["ACCEL_LOG=1"], "timeout": 5}])
    );
    assert_eq!(
        doc["linux"]["netDevices"],
        json!({"accel-nic0": {"name": "eth1"}})
    );
    assert_eq!(
        doc["linux"]["intelRdt"],
        json!({"closID": "accel", "schemata": ["L3:0=ff"], "enableMonitoring": true})
    );
    // 0 is ignored, 44 was there already.
    assert_eq!(doc["process"]["user"]["additionalGids"], json!([44]));
    // What comes out is a valid OCI spec.
    let spec: Result<libcontainer::oci_spec::runtime::Spec, _> = serde_json::from_value(doc);
    assert!(spec.is_ok(), "{spec:?}");
}

#[test]
fn device_owner_defaults_to_the_process_and_none_means_no_rule() {
    let edits = ContainerEdits {
        device_nodes: vec![
            DeviceNode {
                path: "/dev/a".into(),
                kind: Some("b".into()),
                major: 8,
                minor: 1,
                permissions: Some("none".into()),
                ..Default::default()
            },
            DeviceNode {
                path: "/dev/null".into(),
                kind: Some("u".into()),
                major: 1,
                minor: 3,
                permissions: Some("r".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut doc = base_doc();
    apply(&mut doc, &edits);
    // uid 1000 from the process; its gid is 0, so none is set.
    assert_eq!(
        doc["linux"]["devices"],
        json!([
            {"path": "/dev/a", "type": "b", "major": 8, "minor": 1, "uid": 1000},
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "uid": 1000},
        ])
    );
    assert_eq!(
        doc["linux"]["resources"]["devices"],
        json!([{"allow": false, "access": "rwm"},
               {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"}])
    );
}

#[test]
fn load_reads_json_and_yaml_files_of_the_folders_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let etc = tmp.path().join("etc");
    let run = tmp.path().join("run");
    std::fs::create_dir_all(etc.join("sub")).expect("mkdir");
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::write(etc.join("nvidia.yaml"), NVIDIA).expect("write");
    std::fs::write(etc.join("sub").join("dra.json"), DRA).expect("write");
    std::fs::write(etc.join("notes.txt"), "not a spec").expect("write");
    std::fs::write(run.join("dra.json"), DRA).expect("write");
    let reg = Registry::load(&[etc, run, tmp.path().join("missing")]);
    assert!(reg.errors().is_empty(), "{:?}", reg.errors());
    assert_eq!(reg.device_names().len(), 4);
}
