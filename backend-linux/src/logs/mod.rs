//! Size-rotated log files for a task's stdout and stderr.
//!
//! Naming (as Nomad's): `<log dir>/<task name>.<stdout|stderr>.<n>` with n = 0, 1, 2, ...
//! The file with the highest index is the live one, the lowest the oldest. When a write would
//! take the live file past `max_file_size_bytes`, the live file is filled exactly to the limit
//! and the rest goes to a new file `<n+1>`; then the oldest files beyond `max_files` (the live
//! one included) are deleted. Files are never renamed, so a reader following the live file is
//! never moved under, and every byte read from the task is in exactly one file: concatenating
//! [`log_files`] oldest first gives the stream, less what rotation deleted. Every file but the
//! live one is exactly `max_file_size_bytes` long, except one whose live file was removed or
//! replaced from under the writer (by the task, or by an operator): the writer notices before
//! its next chunk and goes on in the next index, so that what the task writes afterwards is
//! not lost in an unlinked file. A pump started again (a restarted supervisor) appends to the
//! highest-numbered file.
//!
//! How fast a task's output is read, and what happens when it writes faster, is in [`rate`];
//! the drops it decides on are counted and marked in the log by [`LogPump`].

use std::fs::File;
use std::io::{self, Write};
#[cfg(test)]
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use execdriver_core::LogRotation;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Bytes read from the task per read(2).
const CHUNK: usize = 64 * 1024;

/// Mode of a log dir the pump creates: readable by an operator, writable only by the
/// supervisor.
const DIR_MODE: u32 = 0o755;
/// Mode of a log file the pump creates.
const FILE_MODE: u32 = 0o640;

pub(crate) mod rate;
pub(crate) mod reader;
pub(crate) mod sink;
pub(crate) mod times;

use sink::Sink;

/// While a stream is being dropped, a marker line is written at most this often.
const MARKER_EVERY: Duration = Duration::from_secs(1);

/// Which stream a log file holds.
pub(crate) use execdriver_core::LogStream as Stream;

/// The file name of log file `index` of a task's stream: `<task>.<stream>.<index>`.
pub(crate) fn log_file_name(task_name: &str, stream: Stream, index: u64) -> String {
    format!("{task_name}.{}.{index}", stream.as_str())
}

/// The log files of a task's stream in `log_dir`, oldest first (the last one is live).
/// Empty when there are none or the directory cannot be read.
#[cfg(test)]
pub(crate) fn log_files(log_dir: &Path, task_name: &str, stream: Stream) -> Vec<PathBuf> {
    log_indexes(log_dir, task_name, stream)
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// [`log_files`] with each file's rotation index, for readers that must tell whether a
/// file is newer than the one they are on (a follower across rotations).
#[cfg(test)]
pub(crate) fn log_indexes(log_dir: &Path, task_name: &str, stream: Stream) -> Vec<(u64, PathBuf)> {
    std::fs::read_dir(log_dir)
        .ok()
        .map(|entries| {
            indexes(
                entries.filter_map(Result::ok).map(|e| e.file_name()),
                &prefix(task_name, stream),
            )
        })
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i, log_dir.join(log_file_name(task_name, stream, i))))
        .collect()
}

/// Copies everything read from `source` into rotating files in `log_dir` (created if
/// missing) until EOF. Returns the bytes written to the files.
///
/// `log_dir` may sit in a directory the task can write (the alloc dir), so it is opened
/// once, without following a symlink, and every file is created, appended and deleted
/// relative to that open directory: a task that renames the dir and puts a symlink in its
/// place cannot redirect the (root) supervisor's writes. A `log_dir` that is a symlink or
/// not a directory is refused with an error before anything is read.
///
/// A failed write (a full disk, say) does not stop the pump: the task would die of SIGPIPE
/// on a closed pipe. The failure is reported once on this process's stderr, what the task
/// writes meanwhile is read and dropped, and each later chunk tries the live file again.
#[cfg(test)]
pub(crate) fn pump(
    source: OwnedFd,
    log_dir: &Path,
    task_name: &str,
    stream: Stream,
    rotation: &LogRotation,
) -> io::Result<u64> {
    let writer = RotatingWriter::open(log_dir, task_name, stream, rotation)?;
    pump_into(source, writer)
}

/// [`pump`] into a writer opened beforehand: the supervisor opens both before launching the
/// task, so that a log dir it cannot use fails the start instead of closing a pipe the task
/// already writes to. Returns the bytes written to the files.
#[cfg(test)]
pub(crate) fn pump_into(source: OwnedFd, writer: RotatingWriter) -> io::Result<u64> {
    let stream = writer.stream;
    let mut source = File::from(source);
    let mut pump = LogPump::new(writer, None);
    let mut buf = vec![0u8; CHUNK];
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
        pump.write(&buf[..n], Instant::now());
    }
    Ok(pump.written())
}

/// Bytes read from the task per read(2) by a pump.
pub(crate) const PUMP_CHUNK: usize = CHUNK;

/// What a pump does with each chunk read from the task: write it to the rotating files, and
/// when that fails (a full disk, say) keep going rather than stop reading, since the task
/// would die of SIGPIPE on a closed pipe. The failure is reported once on this process's
/// stderr, what the task writes meanwhile is dropped, and each later chunk tries the live
/// file again.
///
/// Output dropped over the log rate (see [`rate`]) is counted here, and marked in the log by
/// a line of its own, `[execdriver: N bytes dropped, over the log rate of R bytes/s]`: before
/// the next output written after a drop, at most once a [`MARKER_EVERY`] while a flood
/// lasts, and once more when it ends (the pipe found empty) or the stream closes.
#[derive(Debug)]
pub(crate) struct LogPump {
    writer: Sink,
    failing: bool,
    written: u64,
    /// The rate the markers name.
    rate: Option<u64>,
    /// Bytes dropped, over the rate or for a full output FIFO, in all.
    dropped: u64,
    /// Bytes dropped over the rate since the last marker.
    unmarked: u64,
    /// Bytes a full output FIFO (no reader, or a slow one) did not take since the last
    /// marker.
    unread: u64,
    /// When the last marker was written.
    marked_at: Option<Instant>,
    /// Nothing was written yet, or the last byte written ended a line: a marker needs no
    /// line break of its own before it.
    at_line_start: bool,
}

impl LogPump {
    /// A pump into `writer`, whose markers name `rate` (bytes per second).
    pub(crate) fn new(writer: impl Into<Sink>, rate: Option<u64>) -> Self {
        Self {
            writer: writer.into(),
            failing: false,
            written: 0,
            rate,
            dropped: 0,
            unmarked: 0,
            unread: 0,
            marked_at: None,
            at_line_start: true,
        }
    }

    /// Which stream this pump writes.
    pub(crate) fn stream(&self) -> Stream {
        self.writer.stream()
    }

    /// The bytes dropped so far, over the rate and for a full output FIFO.
    pub(crate) fn dropped_bytes(&self) -> u64 {
        self.dropped
    }

    /// Counts `bytes` of the task's output dropped over the rate; the marker follows.
    pub(crate) fn dropped(&mut self, bytes: u64) {
        self.dropped = self.dropped.saturating_add(bytes);
        self.unmarked = self.unmarked.saturating_add(bytes);
    }

    /// The drops are over for now (the pipe was found empty, or it closed): marks what was
    /// dropped since the last marker, if anything was.
    pub(crate) fn settle(&mut self, now: Instant) {
        if self.unmarked > 0 || self.unread > 0 {
            self.mark(now);
        }
    }

    /// Writes one chunk the task wrote, after the marker of what was dropped before it when
    /// one is due. Returns the bytes of it an output FIFO did not take (dropped, counted,
    /// marked later), for the supervisor's stats.
    pub(crate) fn write(&mut self, chunk: &[u8], now: Instant) -> u64 {
        let due = self
            .marked_at
            .is_none_or(|at| now.saturating_duration_since(at) >= MARKER_EVERY);
        if (self.unmarked > 0 || self.unread > 0) && due {
            self.mark(now);
        }
        let taken = self.put(chunk);
        let lost = (chunk.len() - taken) as u64;
        // A failing writer already reported its loss; only what a FIFO refused counts here.
        if !self.failing && lost > 0 {
            self.dropped = self.dropped.saturating_add(lost);
            self.unread = self.unread.saturating_add(lost);
            return lost;
        }
        0
    }

    fn mark(&mut self, now: Instant) {
        let lead = if self.at_line_start { "" } else { "\n" };
        let mut line = String::from(lead);
        if self.unmarked > 0 {
            let rate = self
                .rate
                .map_or_else(|| "no limit".to_owned(), |r| format!("{r} bytes/s"));
            line.push_str(&format!(
                "[execdriver: {} bytes dropped, over the log rate of {rate}]\n",
                self.unmarked
            ));
        }
        if self.unread > 0 {
            line.push_str(&format!(
                "[execdriver: {} bytes dropped, the log output was full (no reader, or a slow one)]\n",
                self.unread
            ));
        }
        // A marker goes in whole or not at all (a FIFO takes a short write whole or
        // nothing): one that did not fit is tried again before the next chunk, so that
        // it comes before the output that follows the drop.
        if self.put(line.as_bytes()) == line.len() {
            self.marked_at = Some(now);
            self.unmarked = 0;
            self.unread = 0;
        }
    }

    /// The bytes written to the files so far.
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Writes `chunk` to the output, or counts it lost when that fails; returns the bytes
    /// the output took.
    fn put(&mut self, chunk: &[u8]) -> usize {
        let Some(_) = chunk.last() else {
            return 0;
        };
        let stream = self.writer.stream();
        let written = if self.failing {
            self.writer
                .reopen()
                .and_then(|()| self.writer.write_chunk(chunk))
        } else {
            self.writer.write_chunk(chunk)
        };
        match written {
            Ok(taken) => {
                if self.failing {
                    report(format_args!(
                        "execdriver: writing {} logs works again in {}",
                        stream.as_str(),
                        self.writer.describe()
                    ));
                }
                self.failing = false;
                self.written += taken as u64;
                if taken > 0 {
                    self.at_line_start = chunk[taken - 1] == b'\n';
                }
                taken
            }
            Err(e) => {
                if !self.failing {
                    report(format_args!(
                        "execdriver: {e}; dropping the task's {} until a write works again",
                        stream.as_str()
                    ));
                }
                self.failing = true;
                0
            }
        }
    }
}

/// One line on this process's stderr; a closed stderr is ignored (never a panic).
fn report(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// The writer behind [`pump`]: appends to the live file and rotates by size, through a
/// directory fd opened once (see [`pump`]).
#[derive(Debug)]
pub(crate) struct RotatingWriter {
    dir: PathBuf,
    dir_fd: OwnedFd,
    task_name: String,
    stream: Stream,
    max_files: u64,
    max_size: u64,
    index: u64,
    file: File,
    /// Device and inode of `file`: the live file's name must still lead to it.
    file_id: (u64, u64),
    size: u64,
    /// The arrival times of the live file (see [`times`]); `None` when its index cannot be
    /// used, which costs the times of that file and nothing else.
    times: Option<times::IndexWriter>,
}

pub(super) fn nix_context(e: nix::Error, what: &str, path: &Path) -> io::Error {
    context(io::Error::from(e), what, path)
}

/// Opens `log_dir` as a directory, creating its last component (0755) if missing and its
/// parents as usual; the last component must not be a symlink.
fn open_log_dir(log_dir: &Path) -> io::Result<OwnedFd> {
    let name = log_dir.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("log dir {} has no final name", log_dir.display()),
        )
    })?;
    let parent = match log_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| context(e, "creating log dir parent", parent))?;
    let parent_fd = nix::fcntl::open(
        parent,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| nix_context(e, "opening log dir parent", parent))?;
    // SAFETY: open just returned this fd.
    let parent_fd = unsafe { OwnedFd::from_raw_fd(parent_fd) };
    match nix::sys::stat::mkdirat(
        Some(parent_fd.as_raw_fd()),
        name,
        Mode::from_bits_truncate(DIR_MODE),
    ) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(nix_context(e, "creating log dir", log_dir)),
    }
    let fd = nix::fcntl::openat(
        Some(parent_fd.as_raw_fd()),
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::Error::ELOOP | nix::Error::ENOTDIR => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "log dir {} is a symlink or not a directory; refusing to write logs through it",
                log_dir.display()
            ),
        ),
        e => nix_context(e, "opening log dir", log_dir),
    })?;
    // SAFETY: openat just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names in the directory open as `dir_fd` (read through a fresh open of it, so the
/// position of `dir_fd` itself never matters).
pub(super) fn list_dir(dir_fd: RawFd) -> nix::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = nix::dir::Dir::openat(
        Some(dir_fd),
        ".",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        names.push(std::ffi::OsStr::from_bytes(entry.file_name().to_bytes()).to_owned());
    }
    Ok(names)
}

impl RotatingWriter {
    /// Opens (or creates) the live file of the stream, continuing the highest index present.
    /// `log_dir` is created if missing and refused if it is a symlink (see [`pump`]).
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
        let dir_fd = open_log_dir(log_dir)?;
        let names =
            list_dir(dir_fd.as_raw_fd()).map_err(|e| nix_context(e, "listing log dir", log_dir))?;
        let index = indexes(names, &prefix(task_name, stream))
            .last()
            .copied()
            .unwrap_or(0);
        let name = log_file_name(task_name, stream, index);
        let (file, meta) = open_log_file(&dir_fd, &name, false)
            .map_err(|e| context(e, "opening log file", &log_dir.join(&name)))?;
        let mut writer = Self {
            dir: log_dir.to_owned(),
            dir_fd,
            task_name: task_name.to_owned(),
            stream,
            max_files: u64::from(rotation.max_files),
            max_size: rotation.max_file_size_bytes,
            index,
            file,
            file_id: id_of(&meta),
            size: meta.len(),
            times: None,
        };
        writer.times = writer.open_times(meta.len() == 0);
        writer.prune()?;
        Ok(writer)
    }

    /// The live file (by the path the log dir was opened by).
    pub fn live_path(&self) -> PathBuf {
        self.path_of(self.index)
    }

    /// Writes all of `buf`, splitting it at file boundaries; in a new live file if the one
    /// being written was removed or replaced.
    /// The arrival time noted for it is now (the pump writes each chunk as it reads it).
    pub fn write_chunk(&mut self, mut buf: &[u8]) -> io::Result<()> {
        self.follow_live()?;
        let arrived = crate::clock::unix_nanos_now();
        while !buf.is_empty() {
            if self.size >= self.max_size {
                self.rotate()?;
            }
            self.note_time(arrived);
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

    /// Opens the live file again (created if it was deleted) and takes its size from the
    /// disk: after a failed write neither the old fd nor the counted size can be trusted.
    pub fn reopen(&mut self) -> io::Result<()> {
        let name = self.name_of(self.index);
        let (file, meta) = open_log_file(&self.dir_fd, &name, false)
            .map_err(|e| context(e, "opening log file", &self.live_path()))?;
        self.size = meta.len();
        self.file_id = id_of(&meta);
        self.file = file;
        self.times = self.open_times(meta.len() == 0);
        Ok(())
    }

    /// The index of the live file; `fresh` when the live file was just created (see
    /// [`times::IndexWriter::open`]). A failure is reported and leaves the file without times.
    fn open_times(&self, fresh: bool) -> Option<times::IndexWriter> {
        match times::IndexWriter::open(&self.dir_fd, &self.name_of(self.index), fresh) {
            Ok(w) => Some(w),
            Err(e) => {
                report(format_args!(
                    "execdriver: log index {}: {e}; {} goes on without arrival times",
                    self.dir.join(times::index_name(&self.name_of(self.index))).display(),
                    self.live_path().display()
                ));
                None
            }
        }
    }

    /// Notes that what is written next to the live file arrived at `unix_nanos`.
    fn note_time(&mut self, unix_nanos: u64) {
        let Some(times) = self.times.as_mut() else {
            return;
        };
        if let Err(e) = times.note(self.size, unix_nanos) {
            report(format_args!(
                "execdriver: writing the log index of {}: {e}; it goes on without arrival times",
                self.live_path().display()
            ));
            self.times = None;
        }
    }

    /// Goes on in a new live file when the live file's name no longer leads to the file
    /// being written (removed, renamed, or something else put in its place): writes to an
    /// unlinked file reach nobody. One `fstatat` per chunk, which is cheap next to the
    /// chunk's write. The next index rather than the same name: a reader part-way into the
    /// old file would otherwise take up at its old offset in the new one and miss its start.
    /// A log dir removed as a whole is made again by its path, never through a symlink.
    fn follow_live(&mut self) -> io::Result<()> {
        let name = self.name_of(self.index);
        match nix::sys::stat::fstatat(
            Some(self.dir_fd.as_raw_fd()),
            name.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if (st.st_dev, st.st_ino) == self.file_id => return Ok(()),
            Ok(_) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(nix_context(e, "checking log file", &self.live_path())),
        }
        let dir_gone = nix::sys::stat::fstat(self.dir_fd.as_raw_fd())
            .map_err(|e| nix_context(e, "checking log dir", &self.dir))?
            .st_nlink
            == 0;
        if dir_gone {
            self.dir_fd = open_log_dir(&self.dir)?;
        }
        let was = self.live_path();
        self.rotate()?;
        report(format_args!(
            "execdriver: log file {} was removed or replaced{}; writing on in {}",
            was.display(),
            if dir_gone { " with its dir" } else { "" },
            self.live_path().display()
        ));
        Ok(())
    }

    fn name_of(&self, index: u64) -> String {
        log_file_name(&self.task_name, self.stream, index)
    }

    fn path_of(&self, index: u64) -> PathBuf {
        self.dir.join(self.name_of(index))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut next = self.index;
        let (file, file_id) = loop {
            next = next.checked_add(1).ok_or_else(|| {
                io::Error::other(format!("log file index overflow in {}", self.dir.display()))
            })?;
            // create_new: a file someone else left at the next index is skipped, not clobbered.
            match open_log_file(&self.dir_fd, &self.name_of(next), true) {
                Ok((file, meta)) => break (file, id_of(&meta)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(context(e, "creating log file", &self.path_of(next))),
            }
        };
        self.file = file;
        self.file_id = file_id;
        self.index = next;
        self.size = 0;
        self.times = self.open_times(true);
        self.prune()
    }

    /// Deletes the oldest files so that at most `max_files` remain.
    fn prune(&mut self) -> io::Result<()> {
        let names = list_dir(self.dir_fd.as_raw_fd())
            .map_err(|e| nix_context(e, "listing log dir", &self.dir))?;
        let all = indexes(names, &prefix(&self.task_name, self.stream));
        let excess = all
            .len()
            .saturating_sub(usize::try_from(self.max_files).unwrap_or(usize::MAX));
        for index in all.into_iter().take(excess).filter(|i| *i != self.index) {
            let name = self.name_of(index);
            for (name, what) in [
                (times::index_name(&name), "removing old log index"),
                (name, "removing old log file"),
            ] {
                match nix::unistd::unlinkat(
                    Some(self.dir_fd.as_raw_fd()),
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) | Err(nix::Error::ENOENT) => {}
                    Err(e) => return Err(nix_context(e, what, &self.dir.join(&name))),
                }
            }
        }
        Ok(())
    }
}

/// Opens log file `name` in `dir_fd` for appending (created 0640; with `create_new`, only
/// if it does not exist yet). Never follows a symlink, never blocks on a FIFO, and refuses
/// anything but a regular file with a single link (a hard link planted by the task could
/// point at any file of the host on the same filesystem).
fn open_log_file(
    dir_fd: &OwnedFd,
    name: &str,
    create_new: bool,
) -> io::Result<(File, std::fs::Metadata)> {
    let mut flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CREAT
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    if create_new {
        flags |= OFlag::O_EXCL;
    }
    let fd = nix::fcntl::openat(
        Some(dir_fd.as_raw_fd()),
        name,
        flags,
        Mode::from_bits_truncate(FILE_MODE),
    )
    .map_err(io::Error::from)?;
    // SAFETY: openat just returned this fd.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file with a single link",
        ));
    }
    // Back to blocking writes (O_NONBLOCK was only for the open).
    nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND),
    )
    .map_err(io::Error::from)?;
    Ok((file, meta))
}

/// Device and inode, as `fstatat` gives them.
fn id_of(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
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

pub(super) fn prefix(task_name: &str, stream: Stream) -> String {
    format!("{task_name}.{}.", stream.as_str())
}

/// The indexes of the names `<prefix><n>` among `names`, ascending.
pub(super) fn indexes(names: impl IntoIterator<Item = std::ffi::OsString>, prefix: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for name in names {
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
    out
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

pub(super) fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(max_files: u32, max_file_size_bytes: u64) -> LogRotation {
        LogRotation {
            max_files,
            max_file_size_bytes,
            ..LogRotation::default()
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
    fn arrival_indexes_rotate_and_go_with_their_log_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &rotation(2, 4)).unwrap();
        let before = crate::clock::unix_nanos_now();
        w.write_chunk(b"abcdef").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        w.write_chunk(b"gh").unwrap();
        let idx = |n: u32| tmp.path().join(format!(".t.stdout.{n}.idx"));
        let records = |n: u32| -> Vec<(u64, u64)> {
            std::fs::read(idx(n))
                .unwrap()
                .chunks(times::RECORD)
                .map(|r| times::decode(r).unwrap())
                .collect()
        };
        // "abcd" | "ef" then "gh" 2 ms later (past the granularity): a record of its own.
        assert_eq!(records(0).len(), 1);
        let r1 = records(1);
        assert_eq!(r1.len(), 2);
        assert_eq!((r1[0].0, r1[1].0), (0, 2));
        assert!(r1[0].1 >= before && r1[1].1 >= r1[0].1 + 1_000_000);
        w.write_chunk(b"ijkl").unwrap();
        // File 0 and its index pruned together; the raw files hold only the bytes.
        assert!(!idx(0).exists() && !tmp.path().join("t.stdout.0").exists());
        assert!(idx(2).exists());
        assert_eq!(contents(tmp.path(), "t", Stream::Stdout), [b"efgh".to_vec(), b"ijkl".to_vec()]);
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
    fn a_symlinked_log_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("etc");
        std::fs::create_dir(&target).unwrap();
        let logs = tmp.path().join("logs");
        std::os::unix::fs::symlink(&target, &logs).unwrap();
        let e = RotatingWriter::open(&logs, "t", Stream::Stdout, &rotation(2, 10)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(write);
        assert!(pump(read, &logs, "t", Stream::Stdout, &rotation(2, 10)).is_err());
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        // A regular file in its place is refused too.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(RotatingWriter::open(&file, "t", Stream::Stdout, &rotation(2, 10)).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn new_dirs_and_files_get_fixed_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let mut w = RotatingWriter::open(&logs, "t", Stream::Stdout, &rotation(3, 2)).unwrap();
        w.write_chunk(b"abcde").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&logs) & !0o022, DIR_MODE & !0o022);
        for f in log_files(&logs, "t", Stream::Stdout) {
            assert_eq!(mode(&f) & !FILE_MODE, 0, "{f:?}");
        }
    }

    #[test]
    fn planted_links_and_fifos_are_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, logs.join("s.stdout.0")).unwrap();
        assert!(RotatingWriter::open(&logs, "s", Stream::Stdout, &rotation(5, 10)).is_err());
        std::fs::hard_link(&victim, logs.join("h.stdout.0")).unwrap();
        assert!(RotatingWriter::open(&logs, "h", Stream::Stdout, &rotation(5, 10)).is_err());
        nix::unistd::mkfifo(&logs.join("f.stdout.0"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(RotatingWriter::open(&logs, "f", Stream::Stdout, &rotation(5, 10)).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn writes_stay_in_the_dir_opened_even_if_it_is_replaced_by_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        let pump_dir = logs.clone();
        let pumping = std::thread::spawn(move || {
            pump(read, &pump_dir, "t", Stream::Stdout, &rotation(100, 4))
        });
        let mut f = File::from(write);
        f.write_all(b"0123").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read(logs.join("t.stdout.0")).unwrap_or_default() != b"0123" {
            assert!(std::time::Instant::now() < deadline, "the pump never wrote");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // What a task with write access to the alloc dir could do.
        let moved = tmp.path().join("moved");
        std::fs::rename(&logs, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &logs).unwrap();
        f.write_all(b"456789abcdef").unwrap();
        drop(f);
        assert_eq!(pumping.join().unwrap().unwrap(), 16);
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(
            contents(&moved, "t", Stream::Stdout).concat(),
            b"0123456789abcdef"
        );
    }

    /// Where [`a_full_disk_does_not_kill_the_task_with_sigpipe`] mounts its tiny tmpfs.
    const FULL_DISK_ENV: &str = "EXECDRIVER_LOGS_TEST_FULL_DIR";

    #[test]
    fn a_full_disk_does_not_kill_the_task_with_sigpipe() {
        use std::os::unix::process::CommandExt;
        if !crate::testing::require_root(
            "a_full_disk_does_not_kill_the_task_with_sigpipe",
            "a private tmpfs",
        ) {
            return;
        }
        // The pump runs in a copy of this test binary inside its own mount namespace, on a
        // 64 KiB tmpfs that fills up; nothing of it is visible to the host.
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::ffi::CString::new(tmp.path().as_os_str().as_encoded_bytes()).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "--exact",
            "logs::tests::full_disk_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FULL_DISK_ENV, tmp.path());
        // SAFETY: only system calls on C strings made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=64k".as_ptr().cast(),
                ))
            });
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("FULL-DISK-CHILD-OK"), "{stdout}\n{stderr}");
        assert_eq!(
            stderr.matches("dropping the task's stdout").count(),
            1,
            "reported once: {stderr}"
        );
        assert!(stderr.contains("works again"), "{stderr}");
    }

    #[test]
    #[ignore = "run by a_full_disk_does_not_kill_the_task_with_sigpipe on a full tmpfs"]
    fn full_disk_child() {
        let Some(dir) = std::env::var_os(FULL_DISK_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let logs = dir.join("logs");
        let (read, write) = nix::unistd::pipe().unwrap();
        let probe = nix::unistd::dup(read.as_raw_fd()).unwrap();
        let pump_dir = logs.clone();
        let pumping = std::thread::spawn(move || {
            pump(
                read,
                &pump_dir,
                "t",
                Stream::Stdout,
                &rotation(1_000, 8_192),
            )
        });
        let drained = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let mut pending: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int.
                unsafe { libc::ioctl(probe, libc::FIONREAD, &mut pending) };
                if pending == 0 {
                    // The pump may still be inside its last write.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pump stopped reading"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let mut f = File::from(write);
        // Four times what the tmpfs holds: every write must still go through (no EPIPE).
        let block = vec![b'x'; 4_096];
        for _ in 0..64 {
            f.write_all(&block).unwrap();
        }
        drained();
        // Free room (what an operator would do), then the pump must write again.
        let files = log_files(&logs, "t", Stream::Stdout);
        assert!(files.len() > 2, "{files:?}");
        for old in &files[..files.len() - 1] {
            std::fs::remove_file(old).unwrap();
        }
        f.write_all(b"after-the-disk-had-room").unwrap();
        drop(f);
        pumping.join().unwrap().unwrap();
        let live = log_files(&logs, "t", Stream::Stdout);
        let tail = std::fs::read(live.last().unwrap()).unwrap();
        assert!(tail.ends_with(b"after-the-disk-had-room"), "{live:?}");
        println!("FULL-DISK-CHILD-OK");
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

    #[test]
    fn a_removed_live_file_is_followed_by_a_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &rotation(5, 100)).unwrap();
        w.write_chunk(b"before\n").unwrap();
        std::fs::remove_file(tmp.path().join("t.stdout.0")).unwrap();
        w.write_chunk(b"after\n").unwrap();
        w.write_chunk(b"more\n").unwrap();
        assert_eq!(names(tmp.path(), "t", Stream::Stdout), ["t.stdout.1"]);
        assert_eq!(contents(tmp.path(), "t", Stream::Stdout), [b"after\nmore\n".to_vec()]);
        // Renamed away counts as removed: its name no longer leads to it.
        std::fs::rename(tmp.path().join("t.stdout.1"), tmp.path().join("elsewhere")).unwrap();
        w.write_chunk(b"third\n").unwrap();
        assert_eq!(std::fs::read(tmp.path().join("elsewhere")).unwrap(), b"after\nmore\n");
        assert_eq!(contents(tmp.path(), "t", Stream::Stdout), [b"third\n".to_vec()]);
    }

    #[test]
    fn a_live_file_replaced_by_a_link_or_fifo_is_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let mut w = RotatingWriter::open(&logs, "t", Stream::Stdout, &rotation(10, 100)).unwrap();
        w.write_chunk(b"0").unwrap();
        // The live name becomes a symlink to a host file, and the next index a FIFO.
        std::fs::remove_file(logs.join("t.stdout.0")).unwrap();
        std::os::unix::fs::symlink(&victim, logs.join("t.stdout.0")).unwrap();
        nix::unistd::mkfifo(&logs.join("t.stdout.1"), Mode::from_bits_truncate(0o600)).unwrap();
        // Never blocks on the FIFO, never writes through the link: on to index 2.
        w.write_chunk(b"1").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(logs.join("t.stdout.2")).unwrap(), b"1");
        // A hard link to a host file put in place of the live one is left alone too.
        std::fs::remove_file(logs.join("t.stdout.2")).unwrap();
        std::fs::hard_link(&victim, logs.join("t.stdout.2")).unwrap();
        w.write_chunk(b"2").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(logs.join("t.stdout.3")).unwrap(), b"2");
    }

    #[test]
    fn a_removed_log_dir_is_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let mut w = RotatingWriter::open(&logs, "t", Stream::Stderr, &rotation(3, 100)).unwrap();
        w.write_chunk(b"a").unwrap();
        std::fs::remove_dir_all(&logs).unwrap();
        w.write_chunk(b"b").unwrap();
        assert_eq!(contents(&logs, "t", Stream::Stderr), [b"b".to_vec()]);
        // Replaced by a symlink instead: refused, and nothing is written through it.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::remove_dir_all(&logs).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &logs).unwrap();
        assert!(w.write_chunk(b"c").is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn drops_are_counted_and_marked_on_a_line_of_their_own() {
        let tmp = tempfile::tempdir().unwrap();
        let w = RotatingWriter::open(tmp.path(), "t", Stream::Stdout, &rotation(5, 1 << 20)).unwrap();
        let mut pump = LogPump::new(w, Some(1000));
        let t0 = Instant::now();
        pump.write(b"partial", t0);
        pump.dropped(4096);
        // A marker is due at once (none written yet), on a new line.
        pump.write(b"next\n", t0);
        pump.dropped(10);
        // Another within MARKER_EVERY waits; the drops add up until it is due.
        pump.write(b"x\n", t0 + MARKER_EVERY / 2);
        pump.dropped(5);
        pump.write(b"y\n", t0 + MARKER_EVERY);
        pump.dropped(7);
        // The flood is over: the last marker is written without waiting.
        pump.settle(t0 + MARKER_EVERY);
        pump.settle(t0 + MARKER_EVERY);
        assert_eq!(pump.dropped_bytes(), 4096 + 10 + 5 + 7);
        let text = String::from_utf8(contents(tmp.path(), "t", Stream::Stdout).concat()).unwrap();
        let marker = |n: u64| format!("[execdriver: {n} bytes dropped, over the log rate of 1000 bytes/s]\n");
        assert_eq!(
            text,
            format!(
                "partial\n{}next\nx\n{}y\n{}",
                marker(4096),
                marker(15),
                marker(7)
            )
        );
    }
}
