//! Restart back-off exactly like the kubelet's `flowcontrol.Backoff` for containers:
//! the first restart is immediate, then 10 s doubling up to 300 s, measured from the container's
//! finish time; an entry untouched for twice the maximum (10 minutes) starts over.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
    initial: Option<Duration>,
    max: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: SystemTime,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            initial: Some(initial),
            max: Some(max),
        }
    }

    fn initial(&self) -> Duration {
        self.initial.unwrap_or(INITIAL)
    }

    fn max(&self) -> Duration {
        self.max.unwrap_or(MAX)
    }

    fn expired(&self, event: SystemTime, last_update: SystemTime) -> bool {
        event
            .duration_since(last_update)
            .map(|d| d > self.max() * 2)
            .unwrap_or(false)
    }

    /// If `key` is backing off since `event` (the container's finish time), the time it may
    /// restart at.
    pub fn in_backoff_until(
        &self,
        key: &str,
        event: SystemTime,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let entry = self.entries.get(key)?;
        if self.expired(event, entry.last_update) {
            return None;
        }
        let until = event + entry.delay;
        (now < until).then_some(until)
    }

    /// If `key` is backing off since its last [`Backoff::next`], the time its back-off ends: the
    /// kubelet's `IsInBackOffSinceUpdate`, what image pulls use (a failed pull is retried 10 s
    /// after it failed, then 20 s after the next failure, up to 300 s).
    pub fn in_backoff_since_update(&self, key: &str, now: SystemTime) -> Option<SystemTime> {
        let entry = self.entries.get(key)?;
        if self.expired(now, entry.last_update) {
            return None;
        }
        let until = entry.last_update + entry.delay;
        (now < until).then_some(until)
    }

    /// Records a restart of `key` for an exit at `event`.
    pub fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let initial = self.initial();
        let max = self.max();
        let expired = self
            .entries
            .get(key)
            .map(|e| self.expired(event, e.last_update))
            .unwrap_or(true);
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            delay: initial,
            last_update: now,
        });
        if expired {
            entry.delay = initial;
        } else {
            entry.delay = (entry.delay * 2).min(max);
        }
        entry.last_update = now;
    }

    /// The current delay for `key` (for messages like "back-off 20s restarting ...").
    pub fn delay(&self, key: &str) -> Duration {
        self.entries
            .get(key)
            .map(|e| e.delay)
            .unwrap_or(Duration::ZERO)
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // First exit: no entry, restart at once.
        assert_eq!(b.in_backoff_until("c", t0, t0), None);
        b.next("c", t0, t0);
        assert_eq!(b.delay("c"), INITIAL);
        // Second exit 1 s after: back off 10 s from the exit.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.in_backoff_until("c", t1, t1), Some(t1 + INITIAL));
        assert_eq!(b.in_backoff_until("c", t1, t1 + INITIAL), None);
        b.next("c", t1, t1 + INITIAL);
        assert_eq!(b.delay("c"), Duration::from_secs(20));
        let mut t = t1 + INITIAL;
        for _ in 0..10 {
            b.next("c", t, t);
            t += Duration::from_secs(1);
        }
        assert_eq!(b.delay("c"), MAX);
        // Ten minutes of clean running: starts over at 10 s.
        let later = t + Duration::from_secs(601);
        assert_eq!(b.in_backoff_until("c", later, later), None);
        b.next("c", later, later);
        assert_eq!(b.delay("c"), INITIAL);
    }

    /// Image pulls back off from each failure: 10 s after the first, 20 s after the second,
    /// doubling to 300 s; measured from the failure, not from when the check runs.
    #[test]
    fn pull_backoff_is_measured_from_the_last_failure() {
        let mut b = Backoff::default();
        let s = |n: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + n);
        assert_eq!(b.in_backoff_since_update("img", s(0)), None);
        // Failure at t=0: retried from t=10.
        b.next("img", s(0), s(0));
        for (now, want) in [
            (0, Some(10)),
            (1, Some(10)),
            (9, Some(10)),
            (10, None),
            (11, None),
        ] {
            assert_eq!(
                b.in_backoff_since_update("img", s(now)),
                want.map(s),
                "t={now}"
            );
        }
        // Failure again at t=10: retried from t=30; at t=30: from t=70; then 150, 310, 610 (300).
        let mut t = 10;
        for gap in [20, 40, 80, 160, 300, 300] {
            b.next("img", s(t), s(t));
            assert_eq!(b.in_backoff_since_update("img", s(t)), Some(s(t + gap)));
            assert_eq!(b.in_backoff_since_update("img", s(t + gap)), None);
            t += gap;
        }
        // A check long after the last failure (more than 600 s) finds no back-off.
        assert_eq!(b.in_backoff_since_update("img", s(t + 601)), None);
    }
}
