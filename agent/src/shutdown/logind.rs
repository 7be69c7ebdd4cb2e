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
        SystemLogind::with_connection(Connection::system()?)
    }

    /// The same on a given bus connection (tests: a private bus with a stand-in logind).
    pub fn with_connection(conn: Connection) -> zbus::Result<SystemLogind> {
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

#[cfg(test)]
mod tests {
    //! The seam against a stand-in logind on a private bus (dbus-daemon, no systemd needed).
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};

    use zbus::blocking::connection;

    use super::*;

    /// logind's Manager as the seam uses it: the property, Inhibit (the other end of each lock
    /// kept, with what was asked), and PrepareForShutdown sent by the test.
    struct StandIn {
        locks: Arc<Mutex<Vec<(UnixStream, String)>>>,
    }

    #[zbus::interface(name = "org.freedesktop.login1.Manager")]
    impl StandIn {
        #[zbus(property, name = "InhibitDelayMaxUSec")]
        fn inhibit_delay_max_usec(&self) -> u64 {
            45_000_000
        }

        fn inhibit(
            &self,
            what: &str,
            who: &str,
            why: &str,
            mode: &str,
        ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
            let (mine, theirs) =
                UnixStream::pair().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
            self.locks
                .lock()
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?
                .push((theirs, format!("{what}|{who}|{why}|{mode}")));
            Ok(OwnedFd::from(mine).into())
        }
    }

    /// systemd's Manager: KillUnit, as the seam reloads logind with it.
    struct Systemd {
        kills: Arc<Mutex<Vec<String>>>,
    }

    #[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
    impl Systemd {
        fn kill_unit(&self, unit: &str, who: &str, signal: i32) {
            if let Ok(mut k) = self.kills.lock() {
                k.push(format!("{unit}|{who}|{signal}"));
            }
        }
    }

    /// Is the lock's descriptor still open at the holder's side?
    fn held(peer: &UnixStream) -> bool {
        let mut p = peer.try_clone().expect("peer");
        p.set_nonblocking(true).expect("nonblocking");
        !matches!(p.read(&mut [0u8; 1]), Ok(0))
    }

    struct Daemon(std::process::Child);

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn the_seam_reads_the_delay_reloads_logind_takes_a_delay_lock_and_hears_prepare_for_shutdown() {
        let Ok(dbus) = which("dbus-daemon") else {
            eprintln!("no dbus-daemon on this host: the logind seam test is skipped");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let address = format!("unix:path={}", dir.path().join("bus").display());
        let child = std::process::Command::new(dbus)
            .args([
                "--session",
                "--nofork",
                "--nopidfile",
                "--address",
                &address,
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let _daemon = Daemon(child);
        let mut service = None;
        for _ in 0..100 {
            if dir.path().join("bus").exists() {
                let locks = Arc::new(Mutex::new(Vec::new()));
                let built = connection::Builder::address(address.as_str())
                    .and_then(|b| b.name(LOGIND))
                    .and_then(|b| {
                        b.serve_at(
                            LOGIND_PATH,
                            StandIn {
                                locks: locks.clone(),
                            },
                        )
                    })
                    .and_then(|b| b.build());
                if let Ok(c) = built {
                    service = Some((c, locks));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (service, locks) = service.expect("the stand-in logind on the private bus");
        let kills = Arc::new(Mutex::new(Vec::new()));
        let _systemd = connection::Builder::address(address.as_str())
            .and_then(|b| b.name("org.freedesktop.systemd1"))
            .and_then(|b| {
                b.serve_at(
                    "/org/freedesktop/systemd1",
                    Systemd {
                        kills: kills.clone(),
                    },
                )
            })
            .and_then(|b| b.build())
            .expect("the stand-in systemd");
        let conn = connection::Builder::address(address.as_str())
            .and_then(|b| b.build())
            .expect("client connection");
        let mut logind = SystemLogind::with_connection(conn).expect("seam");
        assert_eq!(
            logind.inhibit_delay().expect("delay"),
            Duration::from_secs(45)
        );
        logind.reload().expect("reload");
        assert_eq!(
            *kills.lock().expect("kills"),
            ["systemd-logind.service|all|1"],
            "SIGHUP to logind through systemd"
        );
        let lock = logind.inhibit().expect("lock");
        {
            let l = locks.lock().expect("locks");
            assert_eq!(
                l[0].1,
                "shutdown|bosun|bosun needs time to handle node shutdown|delay"
            );
            assert!(held(&l[0].0));
        }
        let emit = |active: bool| {
            service
                .emit_signal(
                    None::<&str>,
                    LOGIND_PATH,
                    LOGIND_MANAGER,
                    "PrepareForShutdown",
                    &(active,),
                )
                .expect("signal");
        };
        emit(true);
        assert_eq!(logind.next_shutdown_signal(), Some(true));
        emit(false);
        assert_eq!(logind.next_shutdown_signal(), Some(false));
        // Releasing is closing the descriptor: logind sees the lock go.
        // (The bus and the connection may hold copies a moment longer: wait for the last.)
        drop(lock);
        let released = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !held(&locks.lock().expect("locks")[0].0)
        });
        assert!(released, "the lock is still held 5 s after it was dropped");
    }

    fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
