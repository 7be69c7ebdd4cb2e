//! The seam to systemd-logind (and systemd, to reload it) over the system D-Bus, as the
//! kubelet's pkg/kubelet/nodeshutdown/systemd: InhibitDelayMaxUSec, a `delay` inhibitor lock
//! on `shutdown`, `PrepareForShutdown` signals, and the logind.conf.d drop-in. Blocking calls
//! (zbus's blocking API): the caller runs them on a thread of their own.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use zbus::blocking::{proxy::Builder, Connection, Proxy};
use zbus::proxy::CacheProperties;

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";

/// Where the kubelet's drop-in goes; bosun's is named after it.
pub const LOGIND_CONF_DIR: &str = "/etc/systemd/logind.conf.d";
/// bosun's drop-in (the kubelet's is `99-kubelet.conf`).
pub const DROPIN: &str = "99-bosun.conf";

/// Who holds the inhibitor lock, and why (`systemd-inhibit --list`).
const WHO: &str = "bosun";
const WHY: &str = "bosun needs time to handle node shutdown";

/// What the shutdown manager needs of logind (a fake in tests).
pub trait Logind: Send {
    /// logind's InhibitDelayMaxUSec.
    fn inhibit_delay(&self) -> zbus::Result<Duration>;
    /// A `delay` inhibitor lock on shutdown: held while the file descriptor is open.
    fn inhibit(&self) -> zbus::Result<OwnedFd>;
    /// Makes logind read its configuration again (SIGHUP through systemd's KillUnit).
    fn reload(&self) -> zbus::Result<()>;
    /// Waits for the next `PrepareForShutdown` signal: `true` the node is shutting down,
    /// `false` the shutdown was cancelled; `None` when the bus connection ended.
    fn next_shutdown_signal(&mut self) -> Option<bool>;
}

/// logind on the system bus.
pub struct SystemLogind {
    conn: Connection,
    manager: Proxy<'static>,
    signals: Option<zbus::blocking::proxy::SignalIterator<'static>>,
}

impl SystemLogind {
    /// Connects to the system bus and subscribes to `PrepareForShutdown` (before the lock is
    /// taken, so no signal is missed).
    pub fn connect() -> zbus::Result<SystemLogind> {
        let conn = Connection::system()?;
        let manager: Proxy<'static> = Builder::new(&conn)
            .destination(LOGIND)?
            .path(LOGIND_PATH)?
            .interface(LOGIND_MANAGER)?
            .cache_properties(CacheProperties::No)
            .build()?;
        let signals = manager.receive_signal("PrepareForShutdown")?;
        Ok(SystemLogind {
            conn,
            manager,
            signals: Some(signals),
        })
    }
}

impl Logind for SystemLogind {
    fn inhibit_delay(&self) -> zbus::Result<Duration> {
        let usec: u64 = self.manager.get_property("InhibitDelayMaxUSec")?;
        Ok(Duration::from_micros(usec))
    }

    fn inhibit(&self) -> zbus::Result<OwnedFd> {
        let fd: zbus::zvariant::OwnedFd = self
            .manager
            .call("Inhibit", &("shutdown", WHO, WHY, "delay"))?;
        Ok(fd.into())
    }

    fn reload(&self) -> zbus::Result<()> {
        let systemd = Proxy::new(
            &self.conn,
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
        )?;
        systemd.call::<_, _, ()>("KillUnit", &("systemd-logind.service", "all", 1i32))
    }

    fn next_shutdown_signal(&mut self) -> Option<bool> {
        let signals = self.signals.as_mut()?;
        for msg in signals.by_ref() {
            match msg.body().deserialize::<bool>() {
                Ok(active) => return Some(active),
                Err(e) => {
                    tracing::warn!(error = %e, "PrepareForShutdown signal without its boolean")
                }
            }
        }
        self.signals = None;
        None
    }
}

/// Writes the drop-in raising InhibitDelayMaxSec to `delay` into `dir` (made if missing).
pub fn write_dropin(dir: &Path, delay: Duration) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(DROPIN), super::logind_dropin(delay))
}
