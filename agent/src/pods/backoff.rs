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
}
