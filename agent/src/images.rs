//! The image manager: pull policies, one pull per image at a time (concurrent callers share its
//! result), a limit on parallel pulls (`serializeImagePulls` / `maxParallelImagePulls`), and
//! image garbage collection (`imageGCHighThresholdPercent` and friends).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_runtime::image::registry::{Credentials, RegistryConfig};
use bosun_runtime::image::{
    normalize_reference, GcError, GcReport, Image, ImageStore, PullError, Puller,
};
use tokio::sync::{OnceCell, Semaphore};

use crate::config::Config;

/// `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The container's policy, or the kubelet's default for the image when it has none
    /// (`:latest` or no tag: Always; otherwise IfNotPresent).
    pub fn of(policy: Option<&str>, image: &str) -> PullPolicy {
        let p = match policy {
            Some(p) if !p.is_empty() => p,
            _ => crate::manifest::default_pull_policy(image),
        };
        match p {
            "Always" => PullPolicy::Always,
            "Never" => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// What a pod worker needs of images: whether one is present, making one available by its
/// pull policy, and recording its use. The [`ImageManager`] on a node; a fake in the worker's
/// unit tests.
pub trait ImageService: Send + Sync {
    /// Whether `image` is in the store.
    fn present(&self, image: &str) -> bool;

    /// Makes `image` available according to `policy` (with a pod's pull credentials, tried
    /// before the node's) and returns it.
    fn ensure<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        creds: &'a Credentials,
    ) -> futures_util::future::BoxFuture<'a, Result<Image, EnsureError>>;

    /// Records that a container starts from image `id` (for image GC).
    fn used(&self, id: &str);

    /// Removes every image no container in `in_use` uses and not used within the minimum GC
    /// age (the eviction manager's reclaim, the kubelet's `DeleteUnusedImages`); the bytes freed.
    fn delete_unused(&self, in_use: &BTreeSet<String>) -> Result<u64, GcError> {
        let _ = in_use;
        Ok(0)
    }
}

impl ImageService for ImageManager {
    fn delete_unused(&self, in_use: &BTreeSet<String>) -> Result<u64, GcError> {
        // A high threshold of 0: whatever the usage, every unused image old enough goes.
        self.store
            .gc(in_use, 0, 0, self.gc.min_age)
            .map(|r| r.freed)
    }

    fn present(&self, image: &str) -> bool {
        matches!(self.store.resolve(image), Ok(Some(_)))
    }

    fn ensure<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        creds: &'a Credentials,
    ) -> futures_util::future::BoxFuture<'a, Result<Image, EnsureError>> {
        Box::pin(self.ensure_with(image, policy, creds))
    }

    fn used(&self, id: &str) {
        ImageManager::used(self, id);
    }
}

/// Why an image could not be made available; the waiting reason follows from the variant.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EnsureError {
    /// `ErrImageNeverPull`.
    #[error("container image {image:?} is not present with pull policy of Never")]
    NeverPull { image: String },
    /// `InvalidImageName`.
    #[error("failed to apply default image tag {image:?}: {message}")]
    InvalidName { image: String, message: String },
    /// `ImageInspectError`: the local image store could not be read.
    #[error("failed to inspect image {image:?}: {message}")]
    Inspect { image: String, message: String },
    /// `ErrImagePull`: the message carries the registry's.
    #[error("failed to pull image {image:?}: {message}")]
    Pull { image: String, message: String },
}

impl EnsureError {
    /// The container's waiting reason for this failure.
    pub fn reason(&self) -> &'static str {
        use crate::reasons::waiting;
        match self {
            EnsureError::NeverPull { .. } => waiting::ERR_IMAGE_NEVER_PULL,
            EnsureError::InvalidName { .. } => waiting::INVALID_IMAGE_NAME,
            EnsureError::Inspect { .. } => waiting::IMAGE_INSPECT_ERROR,
            EnsureError::Pull { .. } => waiting::ERR_IMAGE_PULL,
        }
    }

    /// Whether the failure starts or extends the image pull back-off. Only a pull that was
    /// tried does, as in the kubelet: an invalid name or a Never policy fails the same way at
    /// every sync, keeps its own reason, and is never `ImagePullBackOff`.
    pub fn backs_off(&self) -> bool {
        matches!(self, EnsureError::Pull { .. })
    }
}

/// Checks an image reference as the kubelet does before anything else (`applyDefaultImageTag`):
/// its normalized form, or `InvalidImageName`.
pub fn check_reference(image: &str) -> Result<String, EnsureError> {
    normalize_reference(image).map_err(|e| EnsureError::InvalidName {
        image: image.to_string(),
        message: e.to_string(),
    })
}

type Shared = Arc<OnceCell<Result<Image, EnsureError>>>;

/// GC settings from the config.
#[derive(Clone, Copy, Debug)]
pub struct GcSettings {
    pub high: u8,
    pub low: u8,
    pub min_age: Duration,
}

pub struct ImageManager {
    store: ImageStore,
    puller: Puller,
    inflight: Mutex<HashMap<String, Shared>>,
    permits: Arc<Semaphore>,
    pub gc: GcSettings,
    pulls: std::sync::atomic::AtomicU64,
    /// When each image's last-used time was last written (see [`ImageManager::used`]).
    used: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How often an image's last-used time is written to its record: image GC orders by it and
/// spares images younger than minutes, so a minute is precision enough, and a burst of pod
/// starts from one image does not rewrite the record (under the store's lock) for each.
const USED_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Registry(#[from] bosun_runtime::image::registry::RegistryConfigError),
    #[error(transparent)]
    Store(#[from] bosun_runtime::image::StoreError),
}

impl ImageManager {
    pub fn new(cfg: &Config) -> Result<Self, ManagerError> {
        let store = ImageStore::open(&cfg.data_dir)?;
        let registries = RegistryConfig::load(&cfg.registry_config)?;
        let credentials = Credentials::load(&cfg.image_credentials)?;
        let permits = if cfg.serialize_image_pulls {
            1
        } else {
            cfg.max_parallel_image_pulls
                .map(|n| n.max(1) as usize)
                .unwrap_or(Semaphore::MAX_PERMITS)
        };
        Ok(Self {
            puller: Puller::new(store.clone(), registries, credentials),
            store,
            inflight: Mutex::new(HashMap::new()),
            used: std::sync::Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(permits)),
            gc: GcSettings {
                high: cfg.image_gc_high_threshold_percent,
                low: cfg.image_gc_low_threshold_percent,
                min_age: cfg.image_minimum_gc_age,
            },
            pulls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Records that a container starts from image `id` (the image's last-used time, for GC):
    /// written at most once per [`USED_WRITE_INTERVAL`] per image. Returns whether it wrote.
    pub fn used(&self, id: &str) -> bool {
        let now = std::time::Instant::now();
        {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            if used
                .get(id)
                .is_some_and(|t| now.duration_since(*t) < USED_WRITE_INTERVAL)
            {
                return false;
            }
            used.insert(id.to_string(), now);
        }
        if let Err(e) = self.store.touch(id) {
            tracing::debug!(image = id, error = %e, "cannot record the image's last use");
        }
        true
    }

    /// Pulls started by this manager (shared pulls count once).
    pub fn pull_count(&self) -> u64 {
        self.pulls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes `image` available according to `policy` and returns it.
    pub async fn ensure(&self, image: &str, policy: PullPolicy) -> Result<Image, EnsureError> {
        self.ensure_with(image, policy, &Credentials::default())
            .await
    }

    /// [`ImageManager::ensure`] with a pod's pull credentials (its `imagePullSecrets`), tried
    /// before the node's.
    pub async fn ensure_with(
        &self,
        image: &str,
        policy: PullPolicy,
        creds: &Credentials,
    ) -> Result<Image, EnsureError> {
        check_reference(image)?;
        let present = match self.store.resolve(image) {
            Ok(found) => found,
            Err(e) => {
                return Err(EnsureError::Inspect {
                    image: image.to_string(),
                    message: e.to_string(),
                })
            }
        };
        match (policy, present) {
            (PullPolicy::Never, Some(img)) | (PullPolicy::IfNotPresent, Some(img)) => Ok(img),
            (PullPolicy::Never, None) => Err(EnsureError::NeverPull {
                image: image.to_string(),
            }),
            _ => self.pull_with(image, creds).await,
        }
    }

    /// Pulls `image`; concurrent calls for the same reference share one pull.
    pub async fn pull(&self, image: &str) -> Result<Image, EnsureError> {
        self.pull_with(image, &Credentials::default()).await
    }

    /// Pulls `image` with extra credentials; concurrent calls for the same reference and the
    /// same credentials share one pull (a pod without the secret never gets another's image
    /// through a shared pull).
    pub async fn pull_with(&self, image: &str, creds: &Credentials) -> Result<Image, EnsureError> {
        let key = check_reference(image)?;
        let key = if creds.is_empty() {
            key
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            creds.hash(&mut h);
            format!("{key}#{:x}", h.finish())
        };
        let cell: Shared = {
            let mut map = self
                .inflight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let result = cell
            .get_or_init(|| async {
                let _permit = self.permits.clone().acquire_owned().await;
                self.pulls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = self.puller.pull_with(image, creds).await.map_err(|e| {
                    tracing::warn!(image, error = %e, "image pull failed");
                    EnsureError::Pull {
                        image: image.to_string(),
                        message: pull_message(&e),
                    }
                });
                // Later callers start a new pull.
                self.inflight
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&key);
                r
            })
            .await
            .clone();
        result
    }

    /// One garbage collection; `in_use` are image ids of existing containers.
    pub fn collect(&self, in_use: &BTreeSet<String>) -> Result<GcReport, GcError> {
        self.store
            .gc(in_use, self.gc.high, self.gc.low, self.gc.min_age)
    }
}

fn pull_message(e: &PullError) -> String {
    e.to_string()
}

/// Runs GC every `period` (the kubelet's is 5 minutes) with the runtime's containers in use.
pub async fn gc_loop(
    runtime: Arc<dyn bosun_runtime::PodRuntime>,
    manager: Arc<ImageManager>,
    period: Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        let in_use = runtime.images_in_use();
        let mgr = manager.clone();
        match tokio::task::spawn_blocking(move || mgr.collect(&in_use)).await {
            Ok(Ok(report)) if !report.removed.is_empty() => tracing::info!(
                removed = report.removed.len(),
                freed = report.freed,
                "image garbage collection"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "image garbage collection task failed"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A malformed reference is InvalidImageName, never a pull (so never ImagePullBackOff).
    #[test]
    fn malformed_references_are_invalid_names_that_do_not_back_off() {
        for bad in [
            "Busybox",
            "busybox:bad tag",
            "busybox@sha256:zz",
            "",
            "a//b",
            "busybox:",
        ] {
            let e = check_reference(bad).expect_err(bad);
            assert_eq!(e.reason(), "InvalidImageName", "{bad}");
            assert!(!e.backs_off(), "{bad}");
            assert!(
                e.to_string()
                    .starts_with(&format!("failed to apply default image tag {bad:?}: ")),
                "{e}"
            );
        }
        assert_eq!(
            check_reference("busybox").ok().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        let pull = EnsureError::Pull {
            image: "x".into(),
            message: "no route".into(),
        };
        assert!(pull.backs_off() && pull.reason() == "ErrImagePull");
        let never = EnsureError::NeverPull { image: "x".into() };
        assert!(!never.backs_off());
    }

    #[test]
    fn last_use_is_written_once_a_minute_per_image() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let flags = crate::config::Flags {
            data_dir: Some(tmp.path().to_path_buf()),
            ..Default::default()
        };
        let (cfg, _) = Config::load(&flags).expect("config");
        let m = ImageManager::new(&cfg).expect("manager");
        assert!(m.used("sha256:aaa"), "first start from an image writes");
        assert!(
            !m.used("sha256:aaa"),
            "the next ones within a minute do not"
        );
        assert!(m.used("sha256:bbb"), "another image writes");
    }

    #[test]
    fn policy_defaulting() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::of(None, "busybox"), Always);
        assert_eq!(PullPolicy::of(Some(""), "busybox:latest"), Always);
        assert_eq!(PullPolicy::of(None, "busybox:1.36"), IfNotPresent);
        assert_eq!(PullPolicy::of(None, "localhost:5000/x"), Always);
        assert_eq!(PullPolicy::of(None, "localhost:5000/x:v1"), IfNotPresent);
        let d = format!("x@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::of(None, &d), IfNotPresent);
        assert_eq!(PullPolicy::of(Some("Never"), "busybox"), Never);
        assert_eq!(PullPolicy::of(Some("Always"), "busybox:1"), Always);
        assert_eq!(
            PullPolicy::of(Some("IfNotPresent"), "busybox"),
            IfNotPresent
        );
    }

    #[test]
    fn error_reasons() {
        let never = EnsureError::NeverPull { image: "x".into() };
        assert_eq!(never.reason(), "ErrImageNeverPull");
        assert!(never.to_string().contains("pull policy of Never"));
        let pull = EnsureError::Pull {
            image: "x".into(),
            message: "manifest unknown".into(),
        };
        assert_eq!(pull.reason(), "ErrImagePull");
        assert!(pull.to_string().contains("manifest unknown"));
    }
}
