//! `/healthz` as the kubelet serves it: the checks `ping`, `log` and `syncloop`, each at
//! `/healthz/<name>`, all at `/healthz` (`?verbose` lists them, `?exclude=<name>` skips one).
//! `syncloop` fails once the pod manager's loop has not come round for twice the sync
//! frequency (at least 5 minutes, like the kubelet); `log` fails when writing to stderr has
//! been blocked for 2 minutes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use crate::metrics::health::{last_sync_loop_tick, millis};

/// When the log watchdog last got stderr (milliseconds since the epoch).
static LOG_VERIFIED: AtomicU64 = AtomicU64::new(0);
static LOG_WATCHDOG: Once = Once::new();

const LOG_CHECK_PERIOD: Duration = Duration::from_secs(60);
const LOG_BLOCKED_AFTER: Duration = Duration::from_secs(120);
const MIN_SYNC_LOOP_DEADLINE: Duration = Duration::from_secs(300);

/// The check names, in the kubelet's order.
pub const CHECKS: [&str; 3] = ["ping", "log", "syncloop"];

/// How long the sync loop may stay away: twice the sync frequency, at least 5 minutes.
pub fn sync_loop_deadline(sync_frequency: Duration) -> Duration {
    (sync_frequency * 2).max(MIN_SYNC_LOOP_DEADLINE)
}

/// The syncloop check: `last_tick` 0 (the loop has not started yet) is healthy, as in the kubelet.
pub fn check_sync_loop(last_tick: u64, now: u64, deadline: Duration) -> Result<(), String> {
    if last_tick != 0 && now > last_tick.saturating_add(deadline.as_millis() as u64) {
        return Err("sync Loop took longer than expected".into());
    }
    Ok(())
}

/// The log check: stderr was obtained within the last 2 minutes. Starts the watchdog (a thread
/// that takes the stderr lock every minute) on first use, as the kubelet does.
pub fn check_log(now: u64) -> Result<(), String> {
    LOG_WATCHDOG.call_once(|| {
        LOG_VERIFIED.store(now, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("log-healthz".into())
            .spawn(|| loop {
                std::thread::sleep(LOG_CHECK_PERIOD);
                {
                    use std::io::Write;
                    // Blocks while another thread is stuck writing a log line.
                    let _ = std::io::stderr().lock().flush();
                }
                LOG_VERIFIED.store(millis(SystemTime::now()), Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "log healthz watchdog not started");
        }
    });
    let last = LOG_VERIFIED.load(Ordering::Relaxed);
    if now < last.saturating_add(LOG_BLOCKED_AFTER.as_millis() as u64) {
        Ok(())
    } else {
        Err("logging blocked".into())
    }
}

/// Runs check `name` now.
fn run_check(name: &str, sync_frequency: Duration) -> Result<(), String> {
    let now = millis(SystemTime::now());
    match name {
        "ping" => Ok(()),
        "log" => check_log(now),
        _ => check_sync_loop(
            last_sync_loop_tick(),
            now,
            sync_loop_deadline(sync_frequency),
        ),
    }
}

/// A healthz answer: status code and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Answers `path` (`/healthz` or `/healthz/<check>`) with query pairs `query`; `None` for a
/// path that is not a healthz one.
pub fn answer(path: &str, query: &[(String, String)], sync_frequency: Duration) -> Option<Answer> {
    answer_with(path, query, |name| run_check(name, sync_frequency))
}

/// [`answer`] with the checks given (tests).
pub fn answer_with(
    path: &str,
    query: &[(String, String)],
    check: impl Fn(&str) -> Result<(), String>,
) -> Option<Answer> {
    let rest = path.strip_prefix("/healthz")?;
    let rest = rest.trim_end_matches('/');
    if let Some(name) = rest.strip_prefix('/') {
        if !CHECKS.contains(&name) {
            return None;
        }
        return Some(match check(name) {
            Ok(()) => Answer {
                status: 200,
                body: "ok".into(),
            },
            Err(e) => Answer {
                status: 500,
                body: format!("internal server error: {e}\n"),
            },
        });
    }
    if !rest.is_empty() {
        return None;
    }
    let mut excluded: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut out = String::new();
    let mut failed = Vec::new();
    for name in CHECKS {
        if let Some(i) = excluded.iter().position(|e| *e == name) {
            excluded.remove(i);
            out.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match check(name) {
            Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
            Err(e) => {
                tracing::info!(check = name, error = %e, "healthz check failed");
                // The reason stays out of this public answer, as in the kubelet.
                out.push_str(&format!("[-]{name} failed: reason withheld\n"));
                failed.push(name);
            }
        }
    }
    if !excluded.is_empty() {
        out.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            excluded
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if !failed.is_empty() {
        out.push_str("healthz check failed\n");
        return Some(Answer {
            status: 500,
            body: out,
        });
    }
    if !query.iter().any(|(k, _)| k == "verbose") {
        return Some(Answer {
            status: 200,
            body: "ok".into(),
        });
    }
    out.push_str("healthz check passed\n");
    Some(Answer {
        status: 200,
        body: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        super::super::logs::query_pairs(Some(s))
    }

    fn all_ok(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn sync_fails(name: &str) -> Result<(), String> {
        if name == "syncloop" {
            Err("sync Loop took longer than expected".into())
        } else {
            Ok(())
        }
    }

    #[test]
    fn root_is_ok_or_verbose() {
        let a = answer_with("/healthz", &[], all_ok).expect("healthz");
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        let a = answer_with("/healthz", &q("verbose"), all_ok).expect("healthz");
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            "[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n"
        );
    }

    #[test]
    fn a_failing_check_fails_the_root_verbosely() {
        let a = answer_with("/healthz", &[], sync_fails).expect("healthz");
        assert_eq!(a.status, 500);
        assert_eq!(
            a.body,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
        );
        let a = answer_with("/healthz", &q("exclude=syncloop&exclude=nope"), sync_fails)
            .expect("healthz");
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        let a =
            answer_with("/healthz", &q("verbose=1&exclude=syncloop"), sync_fails).expect("healthz");
        assert!(a.body.contains("[+]syncloop excluded: ok\n"), "{}", a.body);
    }

    #[test]
    fn single_checks() {
        let a = answer_with("/healthz/ping", &[], sync_fails).expect("ping");
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        let a = answer_with("/healthz/syncloop", &[], sync_fails).expect("syncloop");
        assert_eq!(a.status, 500);
        assert_eq!(
            a.body,
            "internal server error: sync Loop took longer than expected\n"
        );
        assert!(answer_with("/healthz/other", &[], all_ok).is_none());
        assert!(answer_with("/healthzz", &[], all_ok).is_none());
        assert!(answer_with("/metrics", &[], all_ok).is_none());
        assert_eq!(
            answer_with("/healthz/", &[], all_ok).map(|a| a.status),
            Some(200)
        );
    }

    #[test]
    fn sync_loop_deadline_and_check() {
        assert_eq!(
            sync_loop_deadline(Duration::from_secs(60)),
            Duration::from_secs(300)
        );
        assert_eq!(
            sync_loop_deadline(Duration::from_secs(600)),
            Duration::from_secs(1200)
        );
        let d = Duration::from_secs(300);
        assert!(check_sync_loop(0, 1_000_000_000, d).is_ok());
        assert!(check_sync_loop(1_000_000, 1_000_000 + 299_000, d).is_ok());
        assert!(check_sync_loop(1_000_000, 1_000_000 + 301_000, d).is_err());
    }

    #[test]
    fn log_check_starts_healthy() {
        let now = millis(SystemTime::now());
        assert!(check_log(now).is_ok());
        assert!(check_log(now + 121_000).is_err());
    }
}
