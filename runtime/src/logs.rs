//! CRI log format (`<RFC3339Nano> <stdout|stderr> <P|F> <msg>`): the writer used by the keeper
//! (with rotation by size and count) and the reader used by `bosun logs`.
//!
//! The writer is plain blocking I/O (the keeper is single-threaded). A line longer than
//! [`MAX_LINE`] is cut into partial (`P`) records; output without a final newline at the end of
//! a stream is written as a partial record too. Rotation renames `<n>.log` to
//! `<n>.log.<YYYYMMDD-HHMMSS.nnnnnnnnn>` and keeps at most `max_files - 1` rotated files.
//! When something else moves or removes the file (a log rotator, which then asks for the CRI's
//! `ReopenContainerLog`), the next write reopens the path, creating the file when missing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest record written as one line; longer lines are split into partial records.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("write log {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("rotate log {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
    #[error("read log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// Writes CRI log lines for both streams of one container into one file, with rotation.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// (device, inode) of `file`: whether the path still names it.
    identity: (u64, u64),
    size: u64,
    max_size: u64,
    max_files: u32,
    /// Incomplete line per stream (stdout, stderr).
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appends to) the log file. `max_size` 0 disables rotation; `max_files` below 2
    /// keeps no rotated file.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> Result<Self, LogError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| LogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let file = open_append(path)?;
        let meta = file.metadata().map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            identity: identity(&meta),
            size: meta.len(),
            max_size,
            max_files,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Adds output of `stream`. Complete lines are written at once; the rest waits for more.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), LogError> {
        self.write_at(stream, bytes, SystemTime::now())
    }

    fn write_at(&mut self, stream: Stream, bytes: &[u8], now: SystemTime) -> Result<(), LogError> {
        let mut pending = std::mem::take(&mut self.pending[stream.index()]);
        pending.extend_from_slice(bytes);
        let mut start = 0;
        let mut out = Vec::new();
        let mut result = Ok(());
        loop {
            let rest = &pending[start..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(nl) if nl <= MAX_LINE => {
                    format_record(&mut out, now, stream, false, &rest[..nl]);
                    start += nl + 1;
                }
                _ if rest.len() > MAX_LINE => {
                    format_record(&mut out, now, stream, true, &rest[..MAX_LINE]);
                    start += MAX_LINE;
                }
                _ => break,
            }
            // Rotate between records, not only after a whole batch.
            if self.max_size > 0 && self.size + out.len() as u64 > self.max_size {
                result = self.emit(&out);
                out.clear();
                if result.is_err() {
                    break;
                }
            }
        }
        pending.drain(..start);
        self.pending[stream.index()] = pending;
        result?;
        self.emit(&out)
    }

    /// End of `stream`: what is left without a newline is written as a partial record.
    pub fn finish(&mut self, stream: Stream) -> Result<(), LogError> {
        let now = SystemTime::now();
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        format_record(&mut out, now, stream, true, &pending);
        self.emit(&out)
    }

    fn emit(&mut self, out: &[u8]) -> Result<(), LogError> {
        if out.is_empty() {
            return Ok(());
        }
        self.follow_path();
        self.file.write_all(out).map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.size += out.len() as u64;
        if self.max_size > 0 && self.size > self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    /// Reopens the path when it no longer names the open file. Best effort: when the path
    /// cannot be opened (its folder is gone), output keeps going to the open file.
    fn follow_path(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| identity(&m) == self.identity) {
            return;
        }
        let Ok(file) = open_append(&self.path) else {
            return;
        };
        let Ok(meta) = file.metadata() else { return };
        self.identity = identity(&meta);
        self.size = meta.len();
        self.file = file;
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        let err = |source| LogError::Rotate {
            path: self.path.clone(),
            source,
        };
        // A unique name even for two rotations within one clock tick.
        let mut now = SystemTime::now();
        let rotated = loop {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".");
            name.push(rotation_suffix(now));
            let candidate = PathBuf::from(name);
            if !candidate.exists() {
                break candidate;
            }
            now += std::time::Duration::from_nanos(1);
        };
        if self.max_files >= 2 {
            std::fs::rename(&self.path, &rotated).map_err(err)?;
        } else {
            std::fs::remove_file(&self.path).map_err(err)?;
        }
        self.file = open_append(&self.path)?;
        if let Ok(meta) = self.file.metadata() {
            self.identity = identity(&meta);
        }
        self.size = 0;
        let mut old = rotated_files(&self.path).map_err(err)?;
        let keep = self.max_files.saturating_sub(1) as usize;
        while old.len() > keep {
            let victim = old.remove(0);
            std::fs::remove_file(&victim).map_err(err)?;
        }
        Ok(())
    }
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn format_record(out: &mut Vec<u8>, t: SystemTime, stream: Stream, partial: bool, msg: &[u8]) {
    out.extend_from_slice(rfc3339_nano(t).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(msg);
    out.push(b'\n');
}

/// Rotated files of `path` (`<path>.<suffix>`), oldest first (the suffix sorts by time).
/// Compressed (`.gz`) or temporary files are not included.
pub fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_os_string();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if let Some(suffix) = n.strip_prefix(&prefix) {
            if is_rotation_suffix(suffix) {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_rotation_suffix(s: &str) -> bool {
    // YYYYMMDD-HHMMSS.nnnnnnnnn
    let b = s.as_bytes();
    b.len() == 25
        && b[8] == b'-'
        && b[15] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit())
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    nanos: u32,
}

fn utc(t: SystemTime) -> Utc {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut n = d.subsec_nanos();
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s, n)
        }
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    Utc {
        year,
        month,
        day,
        hour: rem / 3600,
        min: rem / 60 % 60,
        sec: rem % 60,
        nanos,
    }
}

/// Go's `time.RFC3339Nano` in UTC: `2006-01-02T15:04:05.999999999Z` (trailing zeros of the
/// fraction trimmed, no fraction when it is zero), as containerd writes CRI logs.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let u = utc(t);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        u.year, u.month, u.day, u.hour, u.min, u.sec
    );
    if u.nanos != 0 {
        let frac = format!("{:09}", u.nanos);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `YYYYMMDD-HHMMSS.nnnnnnnnn` in UTC, the suffix of rotated log files.
pub fn rotation_suffix(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}.{:09}",
        u.year, u.month, u.day, u.hour, u.min, u.sec, u.nanos
    )
}

/// One record of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: Stream,
    pub partial: bool,
    pub msg: Vec<u8>,
}

/// Parses one record (without its newline). `None` for a malformed line.
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let msg = parts.next().unwrap_or_default().to_vec();
    Some(LogLine {
        time,
        stream,
        partial,
        msg,
    })
}

/// Reads every record of a container's log: rotated files oldest first, then `path` itself.
/// Malformed lines are skipped; a missing current file is fine when rotated ones exist.
pub fn read_lines(path: &Path) -> Result<Vec<LogLine>, LogError> {
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LogError::Read { path: p, source }
    };
    let mut files = rotated_files(path).map_err(err(path))?;
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    let mut any = false;
    for f in &files {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(f)(e)),
        };
        any = true;
        out.extend(
            data.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(parse_line),
        );
    }
    if !any {
        return Err(LogError::Read {
            path: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    }
    Ok(out)
}

/// What `kubectl logs` shows: partial records joined into lines (per stream), the last `tail`
/// lines, each prefixed with its (first record's) timestamp when `timestamps`.
pub fn format_for_user(lines: &[LogLine], tail: Option<usize>, timestamps: bool) -> Vec<u8> {
    struct Joined<'a> {
        time: &'a str,
        msg: Vec<u8>,
        complete: bool,
    }
    let mut done: Vec<Joined> = Vec::new();
    let mut open: [Option<Joined>; 2] = [None, None];
    for l in lines {
        let slot = &mut open[l.stream.index()];
        let j = slot.get_or_insert_with(|| Joined {
            time: &l.time,
            msg: Vec::new(),
            complete: false,
        });
        j.msg.extend_from_slice(&l.msg);
        if !l.partial {
            if let Some(mut j) = slot.take() {
                j.complete = true;
                done.push(j);
            }
        }
    }
    // Output that never got its newline (the container ended mid-line) is still shown, as it
    // was written: without a newline (the kubelet's ReadLogs writes a partial record as is).
    let mut rest: Vec<Joined> = open.into_iter().flatten().collect();
    rest.sort_by(|a, b| a.time.cmp(b.time));
    done.extend(rest);
    let skip = match tail {
        Some(n) => done.len().saturating_sub(n),
        None => 0,
    };
    let mut out = Vec::new();
    for j in &done[skip..] {
        if timestamps {
            out.extend_from_slice(j.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&j.msg);
        if j.complete {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn formats_utc_like_go() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 123_456_789)),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(at(951_782_400, 500_000_000)),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            rfc3339_nano(at(4_107_542_399, 10)),
            "2100-02-28T23:59:59.00000001Z"
        );
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH - Duration::new(1, 0)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            rotation_suffix(at(1_700_000_000, 42)),
            "20231114-221320.000000042"
        );
        assert!(is_rotation_suffix("20231114-221320.000000042"));
        assert!(!is_rotation_suffix("20231114-221320.000000042.gz"));
    }

    #[test]
    fn civil_dates_round_trip_over_years() {
        // Every 1st of March from 1970 to 2400 must have day 1 and month 3.
        let mut days: i64 = 0;
        for year in 1970..2400i64 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let u = utc(at((days as u64 + 59 + leap as u64) * 86_400, 0));
            assert_eq!((u.year, u.month, u.day), (year, 3, 1));
            days += if leap { 366 } else { 365 };
        }
    }

    fn read(path: &Path) -> String {
        String::from_utf8(std::fs::read(path).expect("read")).expect("utf8")
    }

    #[test]
    fn writes_full_and_partial_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c/0.log");
        let mut w = LogWriter::open(&p, 0, 5).expect("open");
        let t = at(1_700_000_000, 1);
        w.write_at(Stream::Stdout, b"hello\nwor", t).expect("w");
        w.write_at(Stream::Stderr, b"err\n", t).expect("w");
        w.write_at(Stream::Stdout, b"ld\n\nend", t).expect("w");
        w.finish(Stream::Stdout).expect("finish");
        w.finish(Stream::Stderr).expect("finish");
        let text = read(&p);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2023-11-14T22:13:20.000000001Z stdout F hello");
        assert_eq!(lines[1], "2023-11-14T22:13:20.000000001Z stderr F err");
        assert_eq!(lines[2], "2023-11-14T22:13:20.000000001Z stdout F world");
        assert_eq!(lines[3], "2023-11-14T22:13:20.000000001Z stdout F ");
        assert!(lines[4].ends_with(" stdout P end"), "{}", lines[4]);
        assert_eq!(lines.len(), 5);
        // Read back as written: the unfinished "end" gets no newline (`echo -n DONE; false`
        // gives the termination message "DONE", the kubelet's FallbackToLogsOnError).
        let recs = read_lines(&p).expect("read");
        assert_eq!(
            String::from_utf8_lossy(&format_for_user(&recs, None, false)),
            "hello\nerr\nworld\n\nend"
        );
        assert_eq!(
            String::from_utf8_lossy(&format_for_user(&recs, Some(1), false)),
            "end"
        );
    }

    #[test]
    fn follows_a_moved_or_removed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        let moved = dir.path().join("0.log.old");
        let mut w = LogWriter::open(&p, 0, 5).expect("open");
        let t = at(1_700_000_000, 1);
        w.write_at(Stream::Stdout, b"one\n", t).expect("w");
        // A rotator moves the file and makes a new one (ReopenContainerLog): the next line
        // goes to the new file, none to the moved one.
        std::fs::rename(&p, &moved).expect("rename");
        std::fs::write(&p, b"").expect("create");
        w.write_at(Stream::Stdout, b"two\n", t).expect("w");
        assert!(
            read(&moved).ends_with(" stdout F one\n"),
            "{}",
            read(&moved)
        );
        assert!(read(&p).ends_with(" stdout F two\n"), "{}", read(&p));
        // Removed: made again.
        std::fs::remove_file(&p).expect("rm");
        w.write_at(Stream::Stdout, b"three\n", t).expect("w");
        assert_eq!(read_lines(&p).expect("read").len(), 1);
        // Its folder gone: the writer keeps going (to the unlinked file), no error.
        drop(dir);
        w.write_at(Stream::Stdout, b"four\n", t).expect("w");
    }

    #[test]
    fn long_lines_are_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        let mut w = LogWriter::open(&p, 0, 5).expect("open");
        let mut big = vec![b'x'; MAX_LINE * 2 + 10];
        big.push(b'\n');
        w.write(Stream::Stdout, &big).expect("w");
        let recs = read_lines(&p).expect("read");
        assert_eq!(recs.len(), 3);
        assert!(recs[0].partial && recs[1].partial && !recs[2].partial);
        assert_eq!(recs[0].msg.len(), MAX_LINE);
        assert_eq!(recs[2].msg.len(), 10);
        let user = format_for_user(&recs, None, false);
        assert_eq!(user.len(), MAX_LINE * 2 + 11);
        // Exactly MAX_LINE bytes plus newline is one full record.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        w.write(Stream::Stderr, &exact).expect("w");
        let recs = read_lines(&p).expect("read");
        assert_eq!(recs.len(), 4);
        assert!(!recs[3].partial);
    }

    #[test]
    fn rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        let mut w = LogWriter::open(&p, 100, 3).expect("open");
        for i in 0..20 {
            w.write_at(
                Stream::Stdout,
                format!("line {i:02} padding padding\n").as_bytes(),
                at(1_700_000_000, i + 1),
            )
            .expect("w");
        }
        let rotated = rotated_files(&p).expect("list");
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let recs = read_lines(&p).expect("read");
        // Records come back in order and end with the last one written.
        let msgs: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.msg).into_owned())
            .collect();
        assert_eq!(
            msgs.last().map(String::as_str),
            Some("line 19 padding padding")
        );
        let mut sorted = msgs.clone();
        sorted.sort();
        assert_eq!(msgs, sorted);
        assert!(msgs.len() < 20);
    }

    #[test]
    fn parse_and_format_for_user() {
        let recs = vec![
            parse_line(b"2024-01-01T00:00:00Z stdout P ab").expect("p"),
            parse_line(b"2024-01-01T00:00:01Z stderr F oops").expect("p"),
            parse_line(b"2024-01-01T00:00:02Z stdout F c d").expect("p"),
            parse_line(b"2024-01-01T00:00:03Z stdout F last").expect("p"),
        ];
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2024 stdout X m").is_none());
        assert_eq!(
            format_for_user(&recs, None, false),
            b"oops\nabc d\nlast\n".to_vec()
        );
        assert_eq!(format_for_user(&recs, Some(1), false), b"last\n".to_vec());
        assert_eq!(format_for_user(&recs, Some(0), false), b"".to_vec());
        assert_eq!(
            format_for_user(&recs, Some(2), true),
            b"2024-01-01T00:00:00Z abc d\n2024-01-01T00:00:03Z last\n".to_vec()
        );
        // An empty message parses.
        let e = parse_line(b"2024-01-01T00:00:00Z stdout F ").expect("p");
        assert!(e.msg.is_empty());
    }

    #[test]
    fn missing_log_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_lines(&dir.path().join("nope.log")).is_err());
    }
}
