use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::*;

/// logind as the tests want it: its delay (and the one it takes after a reload), the
/// signals it sends, the locks it gave (their other ends), what was asked of it.
#[derive(Default)]
struct State {
    delay: Duration,
    delay_after_reload: Option<Duration>,
    signals: VecDeque<bool>,
    locks: Vec<UnixStream>,
    calls: Vec<&'static str>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("fake logind")
    }

    /// Is the `i`th lock still held (its file descriptor open)?
    fn held(&self, i: usize) -> bool {
        let st = self.state();
        let mut peer = st.locks[i].try_clone().expect("peer");
        peer.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        !matches!(peer.read(&mut b), Ok(0))
    }
}

impl Logind for Fake {
    fn inhibit_delay(&self) -> zbus::Result<Duration> {
        Ok(self.state().delay)
    }
    fn inhibit(&self) -> zbus::Result<OwnedFd> {
        let (mine, theirs) = UnixStream::pair().map_err(|e| zbus::Error::Failure(e.to_string()))?;
        let mut st = self.state();
        st.calls.push("inhibit");
        st.locks.push(theirs);
        Ok(mine.into())
    }
    fn reload(&self) -> zbus::Result<()> {
        let mut st = self.state();
        st.calls.push("reload");
        if let Some(d) = st.delay_after_reload {
            st.delay = d;
        }
        Ok(())
    }
    fn next_shutdown_signal(&mut self) -> Option<bool> {
        self.state().signals.pop_front()
    }
}

/// Connects once to `fake`, then ends.
fn once(fake: &Fake) -> impl FnMut() -> Option<zbus::Result<Fake>> {
    let mut f = Some(fake.clone());
    move || f.take().map(Ok)
}

#[test]
fn a_shutdown_is_handled_with_the_lock_held_then_the_lock_is_released() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.delay = Duration::from_secs(30);
        st.signals = VecDeque::from([true]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    let probe = fake.clone();
    serve_logind(
        once(&fake),
        Duration::from_secs(30),
        dir.path().to_path_buf(),
        |active| {
            // The pods are ended while the node waits for the lock.
            seen.push((active, probe.held(0)));
        },
    );
    assert_eq!(seen, [(true, true)]);
    assert!(
        !fake.held(0),
        "the lock is released once the pods are ended"
    );
    let st = fake.state();
    assert_eq!(
        st.calls,
        ["inhibit"],
        "logind's delay was long enough: no reload"
    );
    assert!(!dir.path().join(logind::DROPIN).exists());
}

#[test]
fn a_short_inhibit_delay_is_raised_by_a_dropin_and_a_reload() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.delay = Duration::from_secs(5);
        st.delay_after_reload = Some(Duration::from_secs(40));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("logind.conf.d");
    serve_logind(once(&fake), Duration::from_secs(40), conf.clone(), |_| {});
    assert_eq!(
        std::fs::read_to_string(conf.join("99-bosun.conf")).expect("drop-in"),
        "# bosun logind override\n[Login]\nInhibitDelayMaxSec=40\n"
    );
    assert_eq!(fake.state().calls, ["reload", "inhibit"]);
    // No signal came; the connection's end (the fake's) took the lock with it.
    assert!(!fake.held(0));
}

#[test]
fn logind_that_keeps_a_short_delay_stops_the_manager_without_a_lock() {
    let fake = Fake::default();
    fake.state().delay = Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = start(Ok(fake.clone()), Duration::from_secs(40), dir.path())
        .err()
        .expect("timed out")
        .to_string();
    assert!(
        err.contains("after 5 attempts") && err.contains("current value is 5s"),
        "{err}"
    );
    assert_eq!(fake.state().calls, ["reload"]);
}

#[test]
fn a_cancelled_shutdown_takes_the_lock_again() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.delay = Duration::from_secs(30);
        st.signals = VecDeque::from([true, false]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    serve_logind(
        once(&fake),
        Duration::from_secs(10),
        dir.path().to_path_buf(),
        |a| seen.push(a),
    );
    assert_eq!(seen, [true, false]);
    assert_eq!(fake.state().calls, ["inhibit", "inhibit"]);
    assert!(!fake.held(0));
    // The bus connection ended (no more signals): the second lock went with it.
    assert!(!fake.held(1));
}

#[test]
fn node_shutdown_state_wakes_the_status_loop_on_change() {
    let s = NodeShutdown::default();
    assert_eq!(s.ready_error(), None);
    s.set(true);
    assert_eq!(s.ready_error(), Some("node is shutting down"));
    assert!(s.active());
    // The change left a permit for the status loop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), s.changed.notified())
            .await
            .expect("woken");
    });
    s.set(false);
    assert!(!s.active());
}
