//! `/containerLogs/{ns}/{pod}/{container}`: a container's CRI log file as `kubectl logs` shows
//! it, with `follow`, `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes` and
//! `previous`. A follow reads the open file to its end, notices a rotation (the path names
//! another inode) and goes on with the new file, and ends when the container no longer runs.
//! Containers the runtime has released (an ended pod's) are read from the pod's log folder
//! (`<podLogsDir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bosun_runtime::logs::{format_for_user, parse_line, rotated_files, LogLine, Stream};
use bosun_runtime::{ContainerState, ContainerStatus};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pods::Ctx;
use crate::translate::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE};

const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What the query asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<u64>,
    /// Only records at or after this time (nanoseconds since the epoch).
    pub since_nanos: Option<i128>,
}

/// A query value the kubelet accepts as true.
fn truthy(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

/// Why a `/containerLogs` query is refused: a value that does not decode (the kubelet's 400) or
/// options that decode but are not valid together (`ValidatePodLogOptions`, the kubelet's 422).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogQueryError {
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Invalid(String),
}

impl LogQueryError {
    /// The HTTP status the kubelet answers with.
    pub fn status(&self) -> u16 {
        match self {
            LogQueryError::Decode(_) => 400,
            LogQueryError::Invalid(_) => 422,
        }
    }
}

/// Parses the query of `/containerLogs` (already split in pairs) at time `now`.
pub fn parse_options(
    query: &[(String, String)],
    now: SystemTime,
) -> Result<LogOptions, LogQueryError> {
    use LogQueryError::{Decode, Invalid};
    let mut o = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (k, v) in query {
        match k.as_str() {
            "follow" => o.follow = truthy(v).map_err(|e| Decode(format!("follow: {e}")))?,
            "previous" => o.previous = truthy(v).map_err(|e| Decode(format!("previous: {e}")))?,
            "timestamps" => {
                o.timestamps = truthy(v).map_err(|e| Decode(format!("timestamps: {e}")))?
            }
            "tailLines" => {
                let n: i64 = v.parse().map_err(|_| Decode(format!("tailLines: {v:?}")))?;
                if n < 0 {
                    return Err(Invalid("tailLines must be >= 0".into()));
                }
                o.tail_lines = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            "limitBytes" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| Decode(format!("limitBytes: {v:?}")))?;
                if n < 1 {
                    return Err(Invalid("limitBytes must be > 0".into()));
                }
                o.limit_bytes = Some(n as u64);
            }
            "sinceSeconds" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| Decode(format!("sinceSeconds: {v:?}")))?;
                if n < 1 {
                    return Err(Invalid("sinceSeconds must be > 0".into()));
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                since_time = Some(
                    parse_rfc3339(v)
                        .ok_or_else(|| Decode(format!("sinceTime: {v:?} is not RFC3339")))?,
                )
            }
            _ => {}
        }
    }
    o.since_nanos = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(Invalid("at most one of sinceTime or sinceSeconds".into()))
        }
        (Some(s), None) => Some(nanos(now) - i128::from(s) * 1_000_000_000),
        (None, t) => t,
    };
    Ok(o)
}

fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// RFC 3339 (`2024-01-02T03:04:05.123Z`, `...+02:00`) to nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac: i128 = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        if digits == 0 {
            return None;
        }
        let d = &r[..digits.min(9)];
        frac = d.parse::<i128>().ok()? * 10i128.pow(9 - d.len() as u32);
        rest = &r[digits..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let h: i64 = o.get(1..3)?.parse().ok()?;
            let m: i64 = o.get(4..6)?.parse().ok()?;
            let v = h * 3600 + m * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(secs as i128 * 1_000_000_000 + frac)
}

/// Records at or after `since` (records with an unreadable time are kept).
fn since_filter(lines: Vec<LogLine>, since: Option<i128>) -> Vec<LogLine> {
    match since {
        None => lines,
        Some(t) => lines
            .into_iter()
            .filter(|l| parse_rfc3339(&l.time).is_none_or(|lt| lt >= t))
            .collect(),
    }
}

/// The output of the records present now: since, tail, timestamps, then limitBytes.
pub fn render(lines: Vec<LogLine>, o: &LogOptions) -> Vec<u8> {
    let lines = since_filter(lines, o.since_nanos);
    let mut out = format_for_user(&lines, o.tail_lines, o.timestamps);
    if let Some(limit) = o.limit_bytes {
        out.truncate(limit.min(out.len() as u64) as usize);
    }
    out
}

/// Splits records into those that end a line of their stream and the trailing partial records
/// that wait for the rest of their line.
fn split_complete(lines: Vec<LogLine>) -> (Vec<LogLine>, Vec<LogLine>) {
    let last_full = |s: Stream| lines.iter().rposition(|l| l.stream == s && !l.partial);
    let ends = [last_full(Stream::Stdout), last_full(Stream::Stderr)];
    let mut done = Vec::new();
    let mut wait = Vec::new();
    for (i, l) in lines.into_iter().enumerate() {
        let end = ends[if l.stream == Stream::Stdout { 0 } else { 1 }];
        if end.is_some_and(|e| i <= e) {
            done.push(l);
        } else {
            wait.push(l);
        }
    }
    (done, wait)
}

/// The containers of a pod's container, oldest attempt first.
pub fn attempts(ctx: &Ctx, ns: &str, pod: &str, container: &str) -> Vec<ContainerStatus> {
    let mut v: Vec<ContainerStatus> = ctx
        .runtime
        .list()
        .into_iter()
        .filter(|c| {
            c.labels.get(LABEL_POD_NAMESPACE).map(String::as_str) == Some(ns)
                && c.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(pod)
                && c.labels.get(LABEL_CONTAINER_NAME).map(String::as_str) == Some(container)
        })
        .collect();
    v.sort_by_key(|c| {
        c.labels
            .get(crate::translate::LABEL_RESTART_COUNT)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    });
    v
}

/// Where the log of the asked-for attempt is, and that attempt's container id (empty when the
/// runtime no longer has the container: its log is read from the pod's log folder, and a follow
/// ends at once).
pub fn find_log(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String), String> {
    let all = attempts(ctx, ns, pod, container);
    let pick = if previous {
        all.iter().rev().nth(1)
    } else {
        all.last()
    };
    if let Some(c) = pick {
        return Ok((c.log_path.clone(), c.id.clone()));
    }
    // Released containers (an ended pod's, or an attempt the runtime forgot) keep their files.
    let uid = crate::pods::status::read_all(&ctx.cfg.run_dir)
        .into_iter()
        .find(|p| {
            p.metadata.name.as_deref() == Some(pod)
                && p.metadata.namespace.as_deref().unwrap_or("default") == ns
        })
        .and_then(|p| p.metadata.uid);
    let from_folder = pod_log_dir(&ctx.cfg.pod_logs_dir, ns, pod, uid.as_deref())
        .and_then(|dir| attempt_log(&dir.join(container), previous));
    match from_folder {
        Some(path) => Ok((path, String::new())),
        None if previous => Err(format!(
            "previous terminated container \"{container}\" in pod \"{pod}\" not found"
        )),
        None => Err(format!(
            "container \"{container}\" in pod \"{pod}\" is not available"
        )),
    }
}

/// The log folder of pod `ns/pod` under `root` (`<ns>_<pod>_<uid>`): `uid`'s when given and
/// present, else the most recently changed one of that name.
pub fn pod_log_dir(root: &Path, ns: &str, pod: &str, uid: Option<&str>) -> Option<PathBuf> {
    if let Some(uid) = uid {
        let d = root.join(format!("{ns}_{pod}_{uid}"));
        if d.is_dir() {
            return Some(d);
        }
    }
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                // A uid has no `_`: `ns_pod_x_uid` is another pod's folder.
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('_'))
        })
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}

/// `<n>.log` in a container's log folder: the highest `n` (the current attempt), or with
/// `previous` the one before it.
pub fn attempt_log(dir: &Path, previous: bool) -> Option<PathBuf> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    numbers.sort_unstable();
    let n = if previous {
        numbers.iter().rev().nth(1)
    } else {
        numbers.last()
    }?;
    Some(dir.join(format!("{n}.log")))
}

/// An open log file being read to its end.
pub(crate) struct Tail {
    path: PathBuf,
    file: Option<std::fs::File>,
    ino: u64,
    /// Bytes after the last newline.
    carry: Vec<u8>,
}

impl Tail {
    pub(crate) fn open(path: &Path) -> Tail {
        let file = std::fs::File::open(path).ok();
        let ino = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.ino())
            .unwrap_or(0);
        Tail {
            path: path.to_path_buf(),
            file,
            ino,
            carry: Vec::new(),
        }
    }

    /// New complete records; follows the path to a new file once the old one is drained.
    /// Opens the file positioned at its end (only records written from now on are read).
    pub(crate) fn open_at_end(path: &Path) -> Tail {
        let mut t = Tail::open(path);
        if let Some(f) = t.file.as_mut() {
            let _ = f.seek(SeekFrom::End(0));
        }
        t
    }

    pub(crate) fn read(&mut self) -> Vec<LogLine> {
        let mut data = std::mem::take(&mut self.carry);
        if let Some(f) = self.file.as_mut() {
            let _ = f.read_to_end(&mut data);
        }
        let current = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        if current.is_some() && current != Some(self.ino) {
            // Rotated (or created): what the old file had is read; files rotated after it
            // (several rotations between two reads) come next, then the new current file.
            if !data.is_empty() && !data.ends_with(b"\n") {
                data.push(b'\n');
            }
            let rotated = rotated_files(&self.path).unwrap_or_default();
            let ino = |p: &PathBuf| std::fs::metadata(p).map(|m| m.ino()).ok();
            if let Some(pos) = rotated.iter().position(|p| ino(p) == Some(self.ino)) {
                for p in &rotated[pos + 1..] {
                    if let Ok(more) = std::fs::read(p) {
                        data.extend_from_slice(&more);
                        if !data.is_empty() && !data.ends_with(b"\n") {
                            data.push(b'\n');
                        }
                    }
                }
            }
            *self = Tail::open(&self.path);
            if let Some(f) = self.file.as_mut() {
                let _ = f.seek(SeekFrom::Start(0));
                let _ = f.read_to_end(&mut data);
            }
        }
        let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.carry = data.split_off(end);
        data.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(parse_line)
            .collect()
    }
}

/// How long the end of a log response waits after its last chunk was taken, so that the chunk
/// goes out (flushed) before the end of the chunked body: the kubelet flushes every write, and
/// the apiserver's WebSocket log stream (`binary.k8s.io`) drops data that arrives together with
/// the end of the response, so a short log came back empty.
const FLUSH_BEFORE_END: Duration = Duration::from_millis(20);

/// Streams the log into `tx` (one chunk per batch). Returns when done or the receiver is gone,
/// once the last chunk has been handed to the connection and flushed on its own.
pub async fn stream(
    ctx: Arc<Ctx>,
    path: PathBuf,
    id: String,
    o: LogOptions,
    tx: mpsc::Sender<Bytes>,
) {
    stream_records(ctx, path, id, o, &tx).await;
    flush_before_end(&tx).await;
}

/// Waits until the response body took every chunk (its stream then finds the channel empty and
/// the connection flushes what it has) and a moment more, before the end of the body.
pub async fn flush_before_end(tx: &mpsc::Sender<Bytes>) {
    let drained = async {
        while !tx.is_closed() && tx.capacity() < tx.max_capacity() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_ok()
        && !tx.is_closed()
    {
        tokio::time::sleep(FLUSH_BEFORE_END).await;
    }
}

async fn stream_records(
    ctx: Arc<Ctx>,
    path: PathBuf,
    id: String,
    o: LogOptions,
    tx: &mpsc::Sender<Bytes>,
) {
    // Rotated files first, then the current file through a handle that survives its rotation.
    let mut first = Vec::new();
    for f in rotated_files(&path).unwrap_or_default() {
        if let Ok(data) = std::fs::read(&f) {
            first.extend(
                data.split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .filter_map(parse_line),
            );
        }
    }
    let mut tail = Tail::open(&path);
    first.extend(tail.read());
    let (done, mut waiting) = if o.follow {
        split_complete(first)
    } else {
        (first, Vec::new())
    };
    let out = render(done, &o);
    let mut left = o.limit_bytes.map(|l| l.saturating_sub(out.len() as u64));
    if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
        return;
    }
    if !o.follow || left == Some(0) {
        return;
    }
    let batch_opts = LogOptions {
        tail_lines: None,
        limit_bytes: None,
        ..o.clone()
    };
    loop {
        let running = !id.is_empty()
            && matches!(
                ctx.runtime.status(&id).map(|s| s.state),
                Some(ContainerState::Running { .. }) | Some(ContainerState::Created)
            );
        waiting.extend(tail.read());
        let (done, rest) = split_complete(std::mem::take(&mut waiting));
        waiting = rest;
        let mut out = render(done, &batch_opts);
        if !running {
            // The container ended: what is left (a line without its newline) goes out too.
            out.extend(render(std::mem::take(&mut waiting), &batch_opts));
        }
        if let Some(l) = left.as_mut() {
            out.truncate((*l).min(out.len() as u64) as usize);
            *l -= out.len() as u64;
        }
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        if !running || left == Some(0) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Splits a query string into decoded pairs.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `%XX` and `+` decoding of a query component.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                // Two hex digits, nothing else (from_str_radix would take "+f").
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The values of `key` in order (`command=sh&command=-c`).
pub fn all_values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The last value of `key`, if any.
pub fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        query_pairs(Some(s))
    }

    fn rec(t: &str, stream: &str, p: &str, msg: &str) -> LogLine {
        parse_line(format!("{t} {stream} {p} {msg}").as_bytes()).expect("line")
    }

    #[test]
    fn parses_query_options() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let o = parse_options(
            &q("follow=true&tailLines=5&timestamps=1&limitBytes=100&sinceSeconds=10"),
            now,
        )
        .expect("ok");
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.limit_bytes, Some(100));
        assert_eq!(o.since_nanos, Some(990 * 1_000_000_000));
        let o = parse_options(&q("sinceTime=1970-01-01T00:00:10Z&previous=true"), now).expect("ok");
        assert_eq!(o.since_nanos, Some(10_000_000_000));
        assert!(o.previous);
        // Valid values that are not valid together or in range: the kubelet's 422.
        for bad in [
            "sinceTime=1970-01-01T00:00:10Z&sinceSeconds=1",
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
        ] {
            let e = parse_options(&q(bad), now).expect_err(bad);
            assert_eq!(e.status(), 422, "{bad}: {e}");
        }
        // Values that do not decode: 400.
        for bad in ["follow=maybe", "tailLines=x", "sinceTime=yesterday"] {
            let e = parse_options(&q(bad), now).expect_err(bad);
            assert_eq!(e.status(), 400, "{bad}: {e}");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2023-11-14T22:13:20").is_none());
    }

    #[test]
    fn renders_since_tail_timestamps_and_limit() {
        let lines = || {
            vec![
                rec("2024-01-01T00:00:01Z", "stdout", "F", "one"),
                rec("2024-01-01T00:00:02.5Z", "stderr", "F", "two"),
                rec("2024-01-01T00:00:03Z", "stdout", "P", "thr"),
                rec("2024-01-01T00:00:03.1Z", "stdout", "F", "ee"),
            ]
        };
        let o = LogOptions::default();
        assert_eq!(render(lines(), &o), b"one\ntwo\nthree\n");
        let o = LogOptions {
            tail_lines: Some(1),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(render(lines(), &o), b"2024-01-01T00:00:03Z three\n");
        let o = LogOptions {
            since_nanos: parse_rfc3339("2024-01-01T00:00:02Z"),
            ..Default::default()
        };
        assert_eq!(render(lines(), &o), b"two\nthree\n");
        let o = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(lines(), &o), b"one\ntw");
    }

    #[test]
    fn partial_records_wait_for_their_line() {
        let (done, wait) = split_complete(vec![
            rec("2024-01-01T00:00:01Z", "stdout", "F", "a"),
            rec("2024-01-01T00:00:02Z", "stderr", "P", "b1"),
            rec("2024-01-01T00:00:03Z", "stdout", "P", "c1"),
        ]);
        assert_eq!(done.len(), 1);
        assert_eq!(wait.len(), 2);
    }

    #[test]
    fn tail_follows_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        std::fs::write(
            &p,
            "2024-01-01T00:00:01Z stdout F a\n2024-01-01T00:00:02Z stdout F b",
        )
        .expect("w");
        let mut t = Tail::open(&p);
        assert_eq!(t.read().len(), 1);
        // The rest of the line arrives, then the file is rotated and a new one started.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open");
        f.write_all(b"b\n").expect("w");
        std::fs::rename(&p, dir.path().join("0.log.20240101-000000.000000000")).expect("mv");
        std::fs::write(&p, "2024-01-01T00:00:03Z stdout F c\n").expect("w");
        let msgs: Vec<Vec<u8>> = t.read().into_iter().map(|l| l.msg).collect();
        assert_eq!(msgs, vec![b"bb".to_vec(), b"c".to_vec()]);
        assert!(t.read().is_empty());
        // Two rotations between reads: the file in between is not skipped.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open");
        f.write_all(b"2024-01-01T00:00:04Z stdout F d\n")
            .expect("w");
        std::fs::rename(&p, dir.path().join("0.log.20240101-000001.000000000")).expect("mv");
        std::fs::write(&p, "2024-01-01T00:00:05Z stdout F e\n").expect("w");
        std::fs::rename(&p, dir.path().join("0.log.20240101-000002.000000000")).expect("mv");
        std::fs::write(&p, "2024-01-01T00:00:06Z stdout F f\n").expect("w");
        let msgs: Vec<Vec<u8>> = t.read().into_iter().map(|l| l.msg).collect();
        assert_eq!(msgs, vec![b"d".to_vec(), b"e".to_vec(), b"f".to_vec()]);
    }

    #[test]
    fn ended_pod_logs_from_the_folder() {
        let root = tempfile::tempdir().expect("tempdir");
        let old = root.path().join("ns_job-x_uid1");
        let new = root.path().join("ns_job-x_uid2");
        let other = root.path().join("ns_job-x_y_uid3");
        for (d, n) in [(&old, 0), (&new, 0), (&new, 1), (&new, 10), (&other, 5)] {
            std::fs::create_dir_all(d.join("c")).expect("mkdir");
            std::fs::write(d.join(format!("c/{n}.log")), "").expect("w");
        }
        std::fs::write(new.join("c/1.log.20240101-000000.000000000"), "").expect("w");
        // The asked-for uid wins; without it (or when absent) the newest folder of that pod.
        assert_eq!(
            pod_log_dir(root.path(), "ns", "job-x", Some("uid1")),
            Some(old.clone())
        );
        let t = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::open(&new)
            .and_then(|f| f.set_modified(t))
            .expect("touch");
        assert_eq!(
            pod_log_dir(root.path(), "ns", "job-x", Some("gone")),
            Some(new.clone())
        );
        assert_eq!(pod_log_dir(root.path(), "ns", "job", None), None);
        assert_eq!(
            attempt_log(&new.join("c"), false),
            Some(new.join("c/10.log"))
        );
        assert_eq!(attempt_log(&new.join("c"), true), Some(new.join("c/1.log")));
        assert_eq!(attempt_log(&old.join("c"), true), None);
        assert_eq!(attempt_log(&old.join("missing"), false), None);
    }

    #[tokio::test]
    async fn the_end_waits_until_the_last_chunk_was_taken() {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        tx.send(Bytes::from_static(b"short log\n"))
            .await
            .expect("send");
        let took = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = took.clone();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let b = rx.recv().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            // The end of the body (all senders gone) comes only after that.
            (b, rx.recv().await)
        });
        flush_before_end(&tx).await;
        assert!(took.load(std::sync::atomic::Ordering::SeqCst));
        drop(tx);
        let (first, end) = reader.await.expect("reader");
        assert_eq!(first.as_deref(), Some(&b"short log\n"[..]));
        assert_eq!(end, None);
    }

    #[test]
    fn query_decoding() {
        let p = q("command=sh&command=-c&command=echo%20hi+there&stdin=1");
        assert_eq!(all_values(&p, "command"), vec!["sh", "-c", "echo hi there"]);
        assert_eq!(value(&p, "stdin"), Some("1"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%2Fx"), "/x");
        // Only two hex digits make an escape.
        assert_eq!(percent_decode("%zz%-1%4"), "%zz%-1%4");
        assert_eq!(percent_decode("%+f"), "% f");
        assert_eq!(percent_decode("a%41"), "aA");
    }
}
