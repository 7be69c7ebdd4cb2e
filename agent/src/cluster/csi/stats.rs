//! The figures of the CSI volumes mounted for pods (NodeGetVolumeStats), cached briefly.

use std::time::Duration;

use bosun_volumes::csi::{self};

use super::{Csi, Mounted};

/// Volume figures and when they were taken.
pub(super) type StatsCache = (std::time::Instant, Vec<crate::metrics::VolumeSample>);

/// How long volume figures are reused.
const STATS_TTL: Duration = Duration::from_secs(10);

impl Csi {
    /// NodeGetVolumeStats of every volume mounted for a pod, from drivers with the
    /// GET_VOLUME_STATS capability (5 s each at most; failures leave the volume out), reused
    /// for [`STATS_TTL`].
    pub async fn volume_samples(&self) -> Vec<crate::metrics::VolumeSample> {
        // One measurement at a time; concurrent scrapes wait for it and share it.
        let mut cache = self.stats.lock().await;
        if let Some((at, v)) = cache.as_ref().filter(|(at, _)| at.elapsed() < STATS_TTL) {
            tracing::trace!(age = ?at.elapsed(), "volume stats from the cache");
            return v.clone();
        }
        let out = self.measure_volumes().await;
        *cache = Some((std::time::Instant::now(), out.clone()));
        out
    }

    async fn measure_volumes(&self) -> Vec<crate::metrics::VolumeSample> {
        let list: Vec<Mounted> = self
            .mounted
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for m in list {
            let call = csi::volume_stats(
                &self.drivers,
                &m.vol.driver,
                &m.vol.volume_handle,
                &m.target,
                m.staging.as_deref(),
            );
            match tokio::time::timeout(Duration::from_secs(5), call).await {
                Ok(Ok(s)) => out.push(crate::metrics::VolumeSample {
                    pod_uid: m.pod_uid.clone(),
                    name: m.volume.clone(),
                    pvc: m.claim.clone().map(|c| (m.namespace.clone(), c)),
                    bytes: s.bytes.map(|b| (b.total, b.available, b.used)),
                    inodes: s.inodes.map(|i| (i.total, i.available, i.used)),
                    abnormal: s.condition.map(|c| c.0),
                }),
                Ok(Err(e)) => {
                    tracing::debug!(volume = %m.vol.spec_name, error = %e, "no volume stats")
                }
                Err(_) => {
                    tracing::debug!(volume = %m.vol.spec_name, "NodeGetVolumeStats timed out")
                }
            }
        }
        out
    }
}
