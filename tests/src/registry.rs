//! A real registry for the image tests: Debian's `docker-registry` on 127.0.0.1 and a free
//! port, storage in a tempdir, plain HTTP, optionally with htpasswd auth; killed on drop. Images
//! are pushed with `skopeo copy` from OCI layouts built here from the busybox test image.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// One running `docker-registry`.
pub struct Registry {
    child: Option<Child>,
    config: PathBuf,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `(user, password)` when htpasswd auth is on.
    pub auth: Option<(String, String)>,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn bcrypt(password: &str) -> Result<String> {
    if let Ok(out) = Command::new("htpasswd")
        .args(["-nbB", "u", password])
        .output()
    {
        if out.status.success() {
            let line = String::from_utf8_lossy(&out.stdout);
            if let Some((_, hash)) = line.trim().split_once(':') {
                return Ok(hash.to_string());
            }
        }
    }
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .context("python3 for bcrypt")?;
    if !out.status.success() {
        bail!("bcrypt: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Registry {
    /// Starts a registry; with `auth`, clients must log in with that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("bosun-registry-")
            .tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = auth {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{}\n", bcrypt(password)?))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bosun-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let mut reg = Registry {
            child: None,
            config: config_path,
            dir,
            addr,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        reg.resume()?;
        Ok(reg)
    }

    /// Stops the registry process; its address answers nothing until [`Registry::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry process (again) on the same address and storage, and waits until it
    /// listens.
    pub fn resume(&mut self) -> Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if Instant::now() > deadline {
                bail!("registry did not listen on {}: {}", self.addr, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The registry's log (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// GET requests for manifests of `repo` so far (by tag or digest).
    pub fn manifest_gets(&self, repo: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/manifests/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// `REPO:TAG` on this registry.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.addr)
    }

    /// Pushes `layout`'s `tag` (an OCI layout) as `name_tag` (`repo:tag`).
    pub fn push(&self, layout: &Path, tag: &str, name_tag: &str) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.auth {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}", self.reference(name_tag)))
            .output()
            .context("running skopeo")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {tag} -> {name_tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The stored data file of a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A docker-style credentials file for `reg`.
pub fn write_auth_file(path: &Path, reg: &Registry) -> Result<()> {
    let (u, p) = reg.auth.clone().context("registry without auth")?;
    let auth = base64(format!("{u}:{p}").as_bytes());
    std::fs::write(
        path,
        serde_json::to_vec(&json!({ "auths": { reg.addr.clone(): { "auth": auth } } }))?,
    )?;
    Ok(())
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- OCI layouts built from the busybox test image ----

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An OCI layout under construction (blobs written as they come, index.json at the end).
pub struct LayoutBuilder {
    pub dir: PathBuf,
    manifests: Vec<Value>,
}

/// The base busybox image: its layer descriptor, diff id and config.
pub struct Base {
    pub layer: Value,
    pub diff_id: String,
    pub config: Value,
}

impl LayoutBuilder {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        })
    }

    /// Writes a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Result<Value> {
        let hex = sha256_hex(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes)?;
        Ok(
            json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len() }),
        )
    }

    /// Copies the busybox layer blob from the busybox layout; returns it with its config.
    pub fn base(&self, busybox: &Path) -> Result<Base> {
        let read = |digest: &str| -> Result<Vec<u8>> {
            Ok(std::fs::read(
                busybox
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )?)
        };
        let index: Value = serde_json::from_slice(&std::fs::read(busybox.join("index.json"))?)?;
        let mdigest = index["manifests"][0]["digest"].as_str().context("index")?;
        let manifest: Value = serde_json::from_slice(&read(mdigest)?)?;
        let config: Value = serde_json::from_slice(&read(
            manifest["config"]["digest"].as_str().context("cfg")?,
        )?)?;
        let layer = manifest["layers"][0].clone();
        let bytes = read(layer["digest"].as_str().context("layer")?)?;
        self.blob(layer["mediaType"].as_str().unwrap_or_default(), &bytes)?;
        Ok(Base {
            layer,
            diff_id: config["rootfs"]["diff_ids"][0]
                .as_str()
                .context("diff id")?
                .to_string(),
            config,
        })
    }

    /// Writes config + manifest for `layers` (descriptor, diff id) on top of `base`'s config,
    /// with `patch` merged into the config's `config` object and `arch` as architecture.
    pub fn image(
        &self,
        base: &Base,
        layers: &[(Value, String)],
        patch: Value,
        arch: &str,
    ) -> Result<Value> {
        let mut config = base.config.clone();
        config["architecture"] = json!(arch);
        if arch != host_arch() {
            config.as_object_mut().map(|o| o.remove("variant"));
        }
        let mut diff_ids = vec![json!(base.diff_id)];
        let mut descs = vec![base.layer.clone()];
        for (d, id) in layers {
            descs.push(d.clone());
            diff_ids.push(json!(id));
        }
        config["rootfs"]["diff_ids"] = json!(diff_ids);
        if let (Some(c), Some(p)) = (config["config"].as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                c.insert(k.clone(), v.clone());
            }
        }
        let cdesc = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config)?,
        )?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cdesc,
            "layers": descs,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest)?,
        )
    }

    /// A layer from (path, content) files; `None` content makes a directory. Returns the
    /// gzip descriptor and diff id.
    pub fn layer(&self, entries: &[(&str, Option<&[u8]>)]) -> Result<(Value, String)> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match content {
                Some(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, path, *data)?;
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_data(&mut h, path, std::io::empty())?;
                }
            }
        }
        let tar = b.into_inner()?;
        self.tar_layer(&tar)
    }

    pub fn tar_layer(&self, tar: &[u8]) -> Result<(Value, String)> {
        let diff_id = format!("sha256:{}", sha256_hex(tar));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar)?;
        let desc = self.blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz.finish()?)?;
        Ok((desc, diff_id))
    }

    /// Tags a manifest (or index) descriptor in index.json.
    pub fn tag(&mut self, mut desc: Value, tag: &str) {
        desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        self.manifests.push(desc);
    }

    /// An image index over `(manifest descriptor, arch)` entries.
    pub fn index(&self, entries: &[(Value, &str)]) -> Result<Value> {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(d, arch)| {
                let mut d = d.clone();
                d["platform"] = json!({ "os": "linux", "architecture": arch });
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index)?,
        )
    }

    pub fn finish(&self) -> Result<()> {
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": self.manifests }))?,
        )?;
        Ok(())
    }
}

/// The OCI name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Deterministic incompressible bytes (xorshift), for big layers.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
