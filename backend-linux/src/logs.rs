//! Size-rotated log files for a task's stdout and stderr.
//!
//! Naming (as Nomad's): `<log dir>/<task name>.<stdout|stderr>.<n>` with n = 0, 1, 2, ...
//! The file with the highest index is the live one, the lowest the oldest. When a write would
//! take the live file past `max_file_size_bytes`, the live file is filled exactly to the limit
//! and the rest goes to a new file `<n+1>`; then the oldest files beyond `max_files` (the live
//! one included) are deleted. Files are never renamed, so a reader following the live file is
//! never moved under, and every byte read from the task is in exactly one file: concatenating
//! [`log_files`] oldest first gives the stream, less what rotation deleted. Every file but the
//! live one is exactly `max_file_size_bytes` long. A pump started again (a restarted
//! supervisor) appends to the highest-numbered file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use execdriver_core::LogRotation;

/// Bytes read from the task per read(2).
const CHUNK: usize = 64 * 1024;

/// Which stream a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The task's stdout.
    Stdout,
    /// The task's stderr.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, as in the file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The file name of log file `index` of a task's stream: `<task>.<stream>.<index>`.
pub fn log_file_name(task_name: &str, stream: Stream, index: u64) -> String {
    format!("{task_name}.{}.{index}", stream.as_str())
}

/// The log files of a task's stream in `log_dir`, oldest first (the last one is live).
/// Empty when there are none or the directory cannot be read.
pub fn log_files(log_dir: &Path, task_name: &str, stream: Stream) -> Vec<PathBuf> {
    indexes(log_dir, &prefix(task_name, stream))
        .unwrap_or_default()
        .into_iter()
        .map(|i| log_dir.join(log_file_name(task_name, stream, i)))
        .collect()
}

/// Copies everything read from `source` into rotating files in `log_dir` (created if
/// missing) until EOF. Returns the bytes copied. A failed write stops the pump with that
/// error; what was read before it is on disk.
pub fn pump(
    source: OwnedFd,
    log_dir: &Path,
    task_name: &str,
    stream: Stream,
    rotation: &LogRotation,
) -> io::Result<u64> {
    let mut writer = RotatingWriter::open(log_dir, task_name, stream, rotation)?;
    let mut source = File::from(source);
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading the task's {}: {e}", stream.as_str()),
                ));
            }
        };
        writer.write_chunk(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

/// The writer behind [`pump`]: appends to the live file and rotates by size.
#[derive(Debug)]
pub struct RotatingWriter {
    dir: PathBuf,
    task_name: String,
    stream: Stream,
    max_files: u64,
    max_size: u64,
    index: u64,
    file: File,
    size: u64,
}

impl RotatingWriter {
    /// Opens (or creates) the live file of the stream, continuing the highest index present.
    pub fn open(
        log_dir: &Path,
        task_name: &str,
        stream: Stream,
        rotation: &LogRotation,
    ) -> io::Result<Self> {
        check_task_name(task_name)?;
        if rotation.max_files == 0 || rotation.max_file_size_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "log rotation needs at least 1 file of at least 1 byte, got {} files of {} bytes",
                    rotation.max_files, rotation.max_file_size_bytes
                ),
            ));
        }
        std::fs::create_dir_all(log_dir).map_err(|e| context(e, "creating log dir", log_dir))?;
        let index = indexes(log_dir, &prefix(task_name, stream))
            .map_err(|e| context(e, "listing log dir", log_dir))?
            .last()
            .copied()
            .unwrap_or(0);
        let path = log_dir.join(log_file_name(task_name, stream, index));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| context(e, "opening log file", &path))?;
        let size = file
            .metadata()
            .map_err(|e| context(e, "reading log file size", &path))?
            .len();
        let mut writer = Self {
            dir: log_dir.to_owned(),
            task_name: task_name.to_owned(),
            stream,
            max_files: u64::from(rotation.max_files),
            max_size: rotation.max_file_size_bytes,
            index,
            file,
            size,
        };
        writer.prune()?;
        Ok(writer)
    }

    /// The live file.
    pub fn live_path(&self) -> PathBuf {
        self.path_of(self.index)
    }

    /// Writes all of `buf`, splitting it at file boundaries.
    pub fn write_chunk(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if self.size >= self.max_size {
                self.rotate()?;
            }
            let room = usize::try_from(self.max_size - self.size).unwrap_or(usize::MAX);
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.file
                .write_all(now)
                .map_err(|e| context(e, "writing log file", &self.live_path()))?;
            self.size += now.len() as u64;
            buf = rest;
        }
        Ok(())
    }

    fn path_of(&self, index: u64) -> PathBuf {
        self.dir
            .join(log_file_name(&self.task_name, self.stream, index))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut next = self.index;
        let file = loop {
            next = next.checked_add(1).ok_or_else(|| {
                io::Error::other(format!("log file index overflow in {}", self.dir.display()))
            })?;
            let path = self.path_of(next);
            // create_new: a file someone else left at the next index is skipped, not clobbered.
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(context(e, "creating log file", &path)),
            }
        };
        self.file = file;
        self.index = next;
        self.size = 0;
        self.prune()
    }

    /// Deletes the oldest files so that at most `max_files` remain.
    fn prune(&mut self) -> io::Result<()> {
        let all = indexes(&self.dir, &prefix(&self.task_name, self.stream))
            .map_err(|e| context(e, "listing log dir", &self.dir))?;
        let excess = all
            .len()
            .saturating_sub(usize::try_from(self.max_files).unwrap_or(usize::MAX));
        for index in all.into_iter().take(excess).filter(|i| *i != self.index) {
            let path = self.path_of(index);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(context(e, "removing old log file", &path)),
            }
        }
        Ok(())
    }
}

impl Write for RotatingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn prefix(task_name: &str, stream: Stream) -> String {
    format!("{task_name}.{}.", stream.as_str())
}

/// The indexes of the files named `<prefix><n>` in `dir`, ascending.
fn indexes(dir: &Path, prefix: &str) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let canonical = !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
            && (rest == "0" || !rest.starts_with('0'));
        if let Some(index) = canonical.then(|| rest.parse::<u64>().ok()).flatten() {
            out.push(index);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn check_task_name(task_name: &str) -> io::Result<()> {
    let ok = !task_name.is_empty()
        && task_name != "."
        && task_name != ".."
        && !task_name.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid task name for log files: {task_name:?}"),
        ))
    }
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(max_files: u32, max_file_size_bytes: u64) -> LogRotation {
        LogRotation {
            max_files,
            max_file_size_bytes,
        }
    }

    fn contents(dir: &Path, task: &str, stream: Stream) -> Vec<Vec<u8>> {
        log_files(dir, task, stream)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    fn names(dir: &Path, task: &str, stream: Stream) -> Vec<String> {
        log_files(dir, task, stream)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn rotates_exactly_at_the_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w =
            RotatingWriter::open(tmp.path(), "web", Stream::Stdout, &rotation(10, 10)).unwrap();
        w.write_chunk(b"0123456789").unwrap();
        // Full but not rotated until more arrives: no empty file is made.
        assert_eq!(names(tmp.path(), "web", Stream::Stdout), ["web.stdout.0"]);
        w.write_chunk(b"a").unwrap();
        assert_eq!(
            names(tmp.path(), "web", Stream::Stdout),
            ["web.stdout.0", "web.stdout.1"]
        );
        w.write_chunk(b"bcdefghijklmnopqrstuv").unwrap();
        assert_eq!(
            contents(tmp.path(), "web", Stream::Stdout),
            [&b"0123456789"[..], b"abcdefghij", b"klmnopqrst", b"uv"]
        );
        assert_eq!(w.live_path(), tmp.path().join("web.stdout.3"));
    }

    #[test]
    fn keeps_at_most_max_files_and_the_newest_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        let mut w = RotatingWriter::open(tmp.path(), "t", Stream::Stderr, &rotation(3, 7)).unwrap();
        for chunk in data.chunks(5) {
            w.write_chunk(chunk).unwrap();
            assert!(log_files(tmp.path(), "t", Stream::Stderr).len() <= 3);
        }
        // 100 bytes in 7-byte files: indexes 0..=14, the live one holds 2 bytes.
        assert_eq!(
            names(tmp.path(), "t", Stream::Stderr),
            ["t.stderr.12", "t.stderr.13", "t.stderr.14"]
        );
        let kept: Vec<u8> = contents(tmp.path(), "t", Stream::Stderr).concat();
        assert_eq!(kept, data[100 - kept.len()..]);
        assert_eq!(kept.len(), 7 + 7 + 2);
    }

    #[test]
    fn one_file_means_only_the_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &rotation(1, 4)).unwrap();
        w.write_chunk(b"abcdefghij").unwrap();
        assert_eq!(contents(tmp.path(), "t", Stream::Stdout), [b"ij".to_vec()]);
    }

    #[test]
    fn pump_preserves_every_byte_and_creates_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("alloc/logs");
        let (read, write) = nix::unistd::pipe().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut f = File::from(write);
            // Uneven writes, so reads straddle file boundaries in every way.
            let mut rest = &data[..];
            let mut n = 1;
            while !rest.is_empty() {
                let (a, b) = rest.split_at(n.min(rest.len()));
                f.write_all(a).unwrap();
                rest = b;
                n = n * 3 % 9_973 + 1;
            }
        });
        let copied = pump(read, &dir, "task", Stream::Stdout, &rotation(1_000, 4_096)).unwrap();
        writer.join().unwrap();
        assert_eq!(copied, expected.len() as u64);
        let files = log_files(&dir, "task", Stream::Stdout);
        assert_eq!(files.len(), expected.len().div_ceil(4_096));
        for f in &files[..files.len() - 1] {
            assert_eq!(std::fs::metadata(f).unwrap().len(), 4_096);
        }
        assert_eq!(contents(&dir, "task", Stream::Stdout).concat(), expected);
        assert!(log_files(&dir, "task", Stream::Stderr).is_empty());
    }

    #[test]
    fn a_restarted_writer_continues_the_live_file() {
        let tmp = tempfile::tempdir().unwrap();
        let r = rotation(5, 10);
        let mut w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &r).unwrap();
        w.write_chunk(b"0123456789abc").unwrap();
        drop(w);
        let mut w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &r).unwrap();
        w.write_chunk(b"defghijklm").unwrap();
        assert_eq!(
            contents(tmp.path(), "t", Stream::Stdout),
            [&b"0123456789"[..], b"abcdefghij", b"klm"]
        );
        // A smaller max_files on restart prunes at once.
        drop(w);
        let w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &rotation(1, 10)).unwrap();
        assert_eq!(names(tmp.path(), "t", Stream::Stdout), ["t.stdout.2"]);
        drop(w);
    }

    #[test]
    fn log_files_sorts_numerically_and_ignores_strangers() {
        let tmp = tempfile::tempdir().unwrap();
        for n in [
            "t.stdout.10",
            "t.stdout.9",
            "t.stdout.0",
            "t.stdout.01",
            "t.stdout.",
            "t.stdout.3.fifo",
            "t.stdout.x",
            "t.stderr.1",
            "tt.stdout.2",
            "t.stdout.stdout.4",
        ] {
            std::fs::write(tmp.path().join(n), b"").unwrap();
        }
        assert_eq!(
            names(tmp.path(), "t", Stream::Stdout),
            ["t.stdout.0", "t.stdout.9", "t.stdout.10"]
        );
        assert_eq!(names(tmp.path(), "t", Stream::Stderr), ["t.stderr.1"]);
        assert!(log_files(&tmp.path().join("missing"), "t", Stream::Stdout).is_empty());
    }

    #[test]
    fn bad_names_and_rotations_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            let e = RotatingWriter::open(tmp.path(), bad, Stream::Stdout, &rotation(2, 10))
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        for r in [rotation(0, 10), rotation(2, 0)] {
            let e = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &r).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
