//! When each part of a log file arrived: a small binary index beside every log file, so that
//! the log files themselves stay the task's raw bytes (`tail`, `grep` and Nomad read them as
//! before) while `logs --timestamps`, `--since` and the arrival order of both streams have
//! the time each chunk was read from the task.
//!
//! Format: `<log dir>/.<task>.<stream>.<n>.idx` beside `<task>.<stream>.<n>`, a sequence of
//! 16-byte records, each two little-endian u64: the byte offset in the log file where a chunk
//! starts, and the unix time in nanoseconds when the supervisor read it. Records are in offset
//! order; a record is written before its bytes, so a reader never sees bytes older than their
//! record says. A chunk that arrives less than [`GRANULARITY_NS`] after the last record of its
//! file gets none (the earlier record's time stands for it): that bounds the index to 16
//! bytes per millisecond whatever the task writes, and the pump's cost to one small write per
//! millisecond at most. A torn last record (a crash mid-write) is ignored by readers and cut
//! off by a writer that continues the file. The index is rotated and pruned with its log file.
//!
//! Both sides go through the log dir's fd, never follow a symlink, never block on a FIFO and
//! accept regular files only (a writer also refuses a hard link); an index that cannot be
//! used costs the times of its file, never its bytes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Bytes per record.
pub(crate) const RECORD: usize = 16;

/// Chunks closer than this to their file's last record share its time.
pub(crate) const GRANULARITY_NS: u64 = 1_000_000;

/// The index file of log file `log_name`.
pub(crate) fn index_name(log_name: &str) -> String {
    format!(".{log_name}.idx")
}

/// One record: `offset` in the log file, arrival time in unix nanoseconds.
pub(crate) fn encode(offset: u64, unix_nanos: u64) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..8].copy_from_slice(&offset.to_le_bytes());
    out[8..].copy_from_slice(&unix_nanos.to_le_bytes());
    out
}

/// The record in `bytes` (exactly [`RECORD`] long, else `None`).
pub(crate) fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let offset = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let nanos = u64::from_le_bytes(bytes.get(8..RECORD)?.try_into().ok()?);
    (bytes.len() == RECORD).then_some((offset, nanos))
}

/// The writer's side: the index of the live log file.
#[derive(Debug)]
pub(crate) struct IndexWriter {
    file: File,
    /// The time of the last record written, if any in this file.
    last: Option<u64>,
}

impl IndexWriter {
    /// Opens (or creates) the index of log file `log_name` in `dir`. With `fresh`, the log file
    /// was just created: whatever an index of that name held is stale and is emptied. Else the
    /// index is continued, a torn last record cut off.
    pub(crate) fn open(dir: &OwnedFd, log_name: &str, fresh: bool) -> io::Result<Self> {
        let fd = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            index_name(log_name).as_str(),
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o640),
        )
        .map_err(io::Error::from)?;
        // SAFETY: openat just returned this fd.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = file.metadata()?;
        // Truncating is safe only once it is known to be our own file, not a planted link.
        if !meta.file_type().is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file with a single link",
            ));
        }
        let len = meta.len();
        let keep = if fresh {
            0
        } else {
            len - len % RECORD as u64
        };
        if keep != len {
            file.set_len(keep)?;
        }
        nix::fcntl::fcntl(
            file.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND),
        )
        .map_err(io::Error::from)?;
        Ok(Self { file, last: None })
    }

    /// Records that the bytes from `offset` arrived at `unix_nanos`, unless the last record
    /// of this writer is recent enough to stand for them (see the module doc).
    pub(crate) fn note(&mut self, offset: u64, unix_nanos: u64) -> io::Result<()> {
        if self
            .last
            .is_some_and(|last| unix_nanos.saturating_sub(last) < GRANULARITY_NS)
        {
            return Ok(());
        }
        self.file.write_all(&encode(offset, unix_nanos))?;
        self.last = Some(unix_nanos);
        Ok(())
    }
}

/// The reader's side: the arrival times of the bytes `[start, end)` of log file `log_name`,
/// as `(offset, unix nanos)`, the first one at or before `start` (when the index has one).
/// An index that is missing, planted (a symlink, a FIFO, not a regular file) or unreadable
/// gives no times. Looked up by binary search, so that a huge index costs little.
pub(crate) fn lookup(dir: &OwnedFd, log_name: &str, start: u64, end: u64) -> Vec<(u64, u64)> {
    let Ok(fd) = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        index_name(log_name).as_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    // SAFETY: openat just returned this fd.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    match file.metadata() {
        Ok(meta) if meta.file_type().is_file() => {
            let records = meta.len() / RECORD as u64;
            lookup_in(&|i| record_at(&file, i), records, start, end)
        }
        _ => Vec::new(),
    }
}

fn record_at(file: &File, i: u64) -> Option<(u64, u64)> {
    let mut buf = [0u8; RECORD];
    file.read_exact_at(&mut buf, i.checked_mul(RECORD as u64)?)
        .ok()?;
    decode(&buf)
}

/// [`lookup`] over `records` records read by `at`.
fn lookup_in(
    at: &dyn Fn(u64) -> Option<(u64, u64)>,
    records: u64,
    start: u64,
    end: u64,
) -> Vec<(u64, u64)> {
    // The first record past `start`: everything before it is at or before `start`.
    let (mut lo, mut hi) = (0u64, records);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at(mid) {
            Some((offset, _)) if offset <= start => lo = mid + 1,
            Some(_) => hi = mid,
            None => return Vec::new(),
        }
    }
    let mut out = Vec::new();
    let mut i = lo.saturating_sub(1);
    while i < records {
        let Some((offset, nanos)) = at(i) else { break };
        if offset >= end && !(out.is_empty() && offset <= start) {
            break;
        }
        out.push((offset.max(start), nanos));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn records_round_trip_and_short_ones_are_refused() {
        let r = encode(0x0102_0304, u64::MAX - 7);
        assert_eq!(decode(&r), Some((0x0102_0304, u64::MAX - 7)));
        assert_eq!(decode(&r[..15]), None);
        assert_eq!(&r[..8], &[4, 3, 2, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn lookup_finds_the_record_covering_the_start_and_those_inside() {
        let recs = [(0u64, 100u64), (10, 200), (10, 210), (30, 300), (50, 400)];
        let at = |i: u64| recs.get(i as usize).copied();
        assert_eq!(lookup_in(&at, 5, 0, 5), [(0, 100)]);
        // Duplicate offsets (a restarted writer): the later record wins at the start.
        assert_eq!(lookup_in(&at, 5, 12, 40), [(12, 210), (30, 300)]);
        assert_eq!(lookup_in(&at, 5, 30, 31), [(30, 300)]);
        assert_eq!(lookup_in(&at, 5, 60, 70), [(60, 400)]);
        // Bytes before the first record have no time.
        let late = [(5u64, 100u64)];
        let at = |i: u64| late.get(i as usize).copied();
        assert_eq!(lookup_in(&at, 1, 0, 10), [(5, 100)]);
        assert_eq!(lookup_in(&at, 1, 0, 5), Vec::<(u64, u64)>::new());
        // Unsorted garbage (a task wrote the index) gives odd times, never a panic.
        let bad = [(50u64, 1u64), (0, 2), (u64::MAX, 3), (7, 4)];
        let at = |i: u64| bad.get(i as usize).copied();
        let _ = lookup_in(&at, 4, 3, 60);
        assert!(lookup_in(&at, 0, 3, 60).is_empty());
    }

    #[test]
    fn a_torn_record_is_ignored_and_cut_off_by_the_next_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir_fd(tmp.path());
        let mut w = IndexWriter::open(&dir, "t.stdout.0", true).unwrap();
        w.note(0, 1_000_000_000).unwrap();
        // Within the granularity: no record.
        w.note(5, 1_000_000_500).unwrap();
        w.note(9, 1_002_000_000).unwrap();
        drop(w);
        let path = tmp.path().join(".t.stdout.0.idx");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);
        // A crash mid-record.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(20, 5)[..7]).unwrap();
        assert_eq!(
            lookup(&dir, "t.stdout.0", 0, 100),
            [(0, 1_000_000_000), (9, 1_002_000_000)]
        );
        let mut w = IndexWriter::open(&dir, "t.stdout.0", false).unwrap();
        w.note(20, 2_000_000_000).unwrap();
        assert_eq!(
            lookup(&dir, "t.stdout.0", 10, 100),
            [(10, 1_002_000_000), (20, 2_000_000_000)]
        );
        // A fresh log file of that name empties a stale index.
        drop(IndexWriter::open(&dir, "t.stdout.0", true).unwrap());
        assert!(lookup(&dir, "t.stdout.0", 0, 100).is_empty());
    }

    #[test]
    fn planted_indexes_are_neither_followed_nor_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir_fd(tmp.path());
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, encode(0, 42)).unwrap();
        std::os::unix::fs::symlink(&secret, tmp.path().join(".t.stdout.0.idx")).unwrap();
        assert!(lookup(&dir, "t.stdout.0", 0, 10).is_empty());
        assert!(IndexWriter::open(&dir, "t.stdout.0", true).is_err());
        assert_eq!(std::fs::metadata(&secret).unwrap().len(), 16);
        nix::unistd::mkfifo(
            &tmp.path().join(".t.stderr.0.idx"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(lookup(&dir, "t.stderr.0", 0, 10).is_empty());
        assert!(IndexWriter::open(&dir, "t.stderr.0", true).is_err());
        std::fs::hard_link(&secret, tmp.path().join(".t.stdout.1.idx")).unwrap();
        assert!(IndexWriter::open(&dir, "t.stdout.1", true).is_err());
        assert_eq!(std::fs::metadata(&secret).unwrap().len(), 16);
    }
}
