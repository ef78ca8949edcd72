//! Where a [`super::LogPump`] writes: the driver's rotating files, or a path of the spec's
//! [`execdriver_core::LogOutputs`] (a FIFO someone else reads, such as Nomad's log collector,
//! or a file appended to).
//!
//! A FIFO is opened `O_RDWR | O_NONBLOCK`: the supervisor is then a reader of it itself, so
//! the open never fails for want of a reader (ENXIO), a write never gets EPIPE (and no
//! SIGPIPE) when the reader goes away, and a reader that comes back (Nomad's logmon restarts
//! with its agent and opens the FIFO again) simply reads on. While nobody reads, the FIFO's
//! buffer (enlarged to [`FIFO_SIZE`] where the kernel allows) keeps the latest output; once
//! it is full a write takes what fits and the pump drops the rest, counted in the task's
//! log stats and marked in the stream when it flows again. The task is never blocked: its
//! pipe to the supervisor is read at the usual rate whatever the FIFO does.
//!
//! The path is opened once, before the task starts, without following a symlink in any of
//! its components (`RESOLVE_NO_SYMLINKS`: Nomad's FIFOs sit in the alloc dir, where a root task
//! could swap a dir for a link to a host dir and have the supervisor create or append to a
//! file there), and must be a FIFO, a regular file of one name (created if missing) or
//! `/dev/null`: a spec cannot point a root supervisor's writes at a disk or a terminal, nor a
//! hard link planted in a dir the task can write at another file.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{RotatingWriter, Stream};

/// The buffer asked for a FIFO output: what a task may write while its reader is away
/// before output is dropped.
pub(crate) const FIFO_SIZE: usize = 1024 * 1024;
/// Mode of an output file the supervisor creates.
const FILE_MODE: u32 = 0o640;
/// `/dev/null`'s device number (major 1, minor 3).
const DEV_NULL: (u32, u32) = (1, 3);

/// A pump's destination.
#[derive(Debug)]
pub(crate) enum Sink {
    /// The driver's rotating files in the alloc dir's `logs/`.
    Files(RotatingWriter),
    /// A path of the spec's log outputs.
    Path(PathOutput),
}

impl From<RotatingWriter> for Sink {
    fn from(writer: RotatingWriter) -> Self {
        Sink::Files(writer)
    }
}

impl Sink {
    /// The stream it holds.
    pub(crate) fn stream(&self) -> Stream {
        match self {
            Sink::Files(w) => w.stream,
            Sink::Path(p) => p.stream,
        }
    }

    /// Where it writes, for a message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Sink::Files(w) => w.dir.display().to_string(),
            Sink::Path(p) => p.path.display().to_string(),
        }
    }

    /// Writes what it can of `buf`; returns how much it took. Less than all only for a FIFO
    /// that is full (no reader, or a slow one): the caller drops the rest.
    pub(crate) fn write_chunk(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Files(w) => w.write_chunk(buf).map(|()| buf.len()),
            Sink::Path(p) => p.write(buf),
        }
    }

    /// Gets ready to write again after a failed write.
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        match self {
            Sink::Files(w) => w.reopen(),
            // The one fd is held for the task's life: a reader reopens its end, not we ours.
            Sink::Path(_) => Ok(()),
        }
    }
}

/// What a [`PathOutput`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    /// A FIFO, held open read-write and non-blocking.
    Fifo,
    /// A regular file, appended to.
    File,
    /// `/dev/null`.
    Null,
}

/// An output path, opened.
#[derive(Debug)]
pub(crate) struct PathOutput {
    path: PathBuf,
    stream: Stream,
    file: File,
}

/// Opens `path` with `flags` (a new file gets [`FILE_MODE`]) refusing a symlink anywhere in
/// it (ELOOP), so no dir on the way can have been swapped for a link.
fn open_beneath_no_links(path: &Path, flags: libc::c_int) -> io::Result<File> {
    let fd = rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        rustix::fs::OFlags::from_bits_retain(flags as u32),
        // openat2 refuses a mode without O_CREAT.
        if flags & libc::O_CREAT != 0 {
            rustix::fs::Mode::from_raw_mode(FILE_MODE)
        } else {
            rustix::fs::Mode::empty()
        },
        rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(File::from(fd))
}

fn refused(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("log output {}: {why}", path.display()),
    )
}

impl PathOutput {
    /// Opens `path` for `stream` (see the module doc for what is accepted).
    pub(crate) fn open(path: &Path, stream: Stream) -> io::Result<Self> {
        let found = match std::fs::symlink_metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(refused(path, format_args!("cannot stat it: {e}"))),
        };
        let flags = libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC;
        let (file, kind) = match &found {
            Some(meta) if meta.file_type().is_fifo() => {
                let file = open_beneath_no_links(path, libc::O_RDWR | flags | libc::O_NONBLOCK)
                    .map_err(|e| refused(path, format_args!("cannot open the FIFO: {e}")))?;
                (file, PathKind::Fifo)
            }
            Some(meta) if meta.file_type().is_char_device() => {
                let rdev = meta.rdev();
                if (libc::major(rdev), libc::minor(rdev)) != DEV_NULL {
                    return Err(refused(
                        path,
                        "it is a character device other than /dev/null; use a FIFO or a file",
                    ));
                }
                let file = open_beneath_no_links(path, libc::O_WRONLY | flags)
                    .map_err(|e| refused(path, format_args!("cannot open it: {e}")))?;
                (file, PathKind::Null)
            }
            Some(meta) if !meta.file_type().is_file() => {
                return Err(refused(
                    path,
                    "it is neither a FIFO, a regular file nor /dev/null (a symlink is not followed)",
                ));
            }
            _ => {
                let file = open_beneath_no_links(
                    path,
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | flags,
                )
                .map_err(|e| refused(path, format_args!("cannot open it to append: {e}")))?;
                (file, PathKind::File)
            }
        };
        // What was opened must be what was checked (not swapped in between).
        let opened = file
            .metadata()
            .map_err(|e| refused(path, format_args!("cannot stat it once open: {e}")))?;
        let same_type = match kind {
            PathKind::Fifo => opened.file_type().is_fifo(),
            PathKind::File => opened.file_type().is_file(),
            PathKind::Null => opened.file_type().is_char_device() && found.as_ref().is_some_and(|m| m.rdev() == opened.rdev()),
        };
        if !same_type || found.as_ref().is_some_and(|m| (m.dev(), m.ino()) != (opened.dev(), opened.ino())) {
            return Err(refused(path, "it was replaced while being opened"));
        }
        // A second name for a file may lead out of a dir the task can write (a root
        // supervisor appending to another file): only a file of one name is written.
        if kind == PathKind::File && opened.nlink() > 1 {
            return Err(refused(
                path,
                "it is a regular file with other hard links; give a file of its own",
            ));
        }
        if kind == PathKind::Fifo {
            // A smaller buffer only keeps less while the reader is away.
            let _ = rustix::pipe::fcntl_setpipe_size(file.as_fd(), FIFO_SIZE);
        }
        Ok(Self {
            path: path.to_owned(),
            stream,
            file,
        })
    }

    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(0) => break,
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A full FIFO: what did not fit is the caller's to drop.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("writing log output {}: {e}", self.path.display()),
                    ));
                }
            }
        }
        Ok(total - buf.len())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::logs::LogPump;

    fn fifo(dir: &Path) -> PathBuf {
        let path = dir.join("web.stdout.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    fn open_reader(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap()
    }

    fn drain(reader: &mut File) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[test]
    fn a_fifo_without_a_reader_keeps_what_fits_drops_the_rest_and_marks_it_for_the_next_reader() {
        let tmp = tempfile::tempdir().unwrap();
        let path = fifo(tmp.path());
        // No reader: the open still works (the supervisor reads it itself).
        let output = PathOutput::open(&path, Stream::Stdout).expect("open with no reader");
        let mut pump = LogPump::new(Sink::Path(output), None);
        let now = Instant::now();

        let mut reader = open_reader(&path);
        assert_eq!(pump.write(b"first\n", now), 0);
        assert_eq!(drain(&mut reader), b"first\n");
        drop(reader);

        // Detached: writes go on without blocking; what does not fit is dropped.
        let line = vec![b'x'; 1023];
        let mut lost = 0;
        for _ in 0..4096 {
            let mut chunk = line.clone();
            chunk.push(b'\n');
            lost += pump.write(&chunk, now);
        }
        assert!(lost > 0, "4 MiB into a FIFO of at most {FIFO_SIZE} bytes drops some");
        assert_eq!(pump.dropped_bytes(), lost);

        // Reattached: the buffered output, then the marker, then what comes next.
        let mut reader = open_reader(&path);
        let kept = drain(&mut reader);
        assert_eq!(kept.len() as u64 + lost, 4096 * 1024);
        assert_eq!(pump.write(b"after\n", now + Duration::from_secs(2)), 0);
        let text = String::from_utf8(drain(&mut reader)).unwrap();
        assert_eq!(
            text,
            format!(
                "[execdriver: {lost} bytes dropped, the log output was full (no reader, or a slow one)]\nafter\n"
            )
        );
    }

    #[test]
    fn files_and_dev_null_are_accepted_and_devices_and_symlinks_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("out.log");
        let mut sink = Sink::Path(PathOutput::open(&file, Stream::Stderr).expect("new file"));
        assert_eq!(sink.write_chunk(b"one\n").unwrap(), 4);
        let mut again = Sink::Path(PathOutput::open(&file, Stream::Stderr).expect("existing"));
        assert_eq!(again.write_chunk(b"two\n").unwrap(), 4);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
        PathOutput::open(Path::new("/dev/null"), Stream::Stdout).expect("/dev/null");
        let err = PathOutput::open(Path::new("/dev/zero"), Stream::Stdout).expect_err("zero");
        assert!(err.to_string().contains("other than /dev/null"), "{err}");
        let hard = tmp.path().join("hard");
        std::fs::hard_link(&file, &hard).unwrap();
        let err = PathOutput::open(&hard, Stream::Stdout).expect_err("hard link");
        assert!(err.to_string().contains("other hard links"), "{err}");
        std::fs::remove_file(&hard).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = PathOutput::open(&link, Stream::Stdout).expect_err("symlink");
        assert!(err.to_string().contains("symlink is not followed"), "{err}");
        let err = PathOutput::open(tmp.path(), Stream::Stdout).expect_err("dir");
        assert!(err.to_string().contains("neither a FIFO"), "{err}");
    }

    #[test]
    fn a_dir_on_the_way_swapped_for_a_link_is_refused_and_nothing_is_created_behind_it() {
        let tmp = tempfile::tempdir().unwrap();
        // What a root task can do in the alloc dir: its logs dir a link to a host dir.
        let host = tmp.path().join("host-dir");
        std::fs::create_dir(&host).unwrap();
        let logs = tmp.path().join("logs");
        std::os::unix::fs::symlink(&host, &logs).unwrap();
        for name in ["new.log", "web.stdout.fifo"] {
            let err = PathOutput::open(&logs.join(name), Stream::Stdout).expect_err(name);
            assert!(err.to_string().contains("log output"), "{err}");
        }
        fifo(&host);
        let err = PathOutput::open(&logs.join("web.stdout.fifo"), Stream::Stdout)
            .expect_err("a FIFO behind a link");
        assert!(err.to_string().contains("cannot open the FIFO"), "{err}");
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            1,
            "a file was created behind the link"
        );
    }
}
