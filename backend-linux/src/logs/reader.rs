//! Reading a task's log files the way the writer writes them: through the log dir's fd,
//! never following a symlink, regular files only, never blocking. The log dir sits in the
//! alloc dir, which a task can write: a symlink or a FIFO planted there must neither show a
//! host file to whoever reads the logs nor hang the reader.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use execdriver_core::{LogCursor, LogRotation, LogStream};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{context, indexes, list_dir, log_file_name, nix_context, prefix};

/// What one read found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Read {
    /// The bytes, in stream order.
    pub data: Vec<u8>,
    /// Where the next read starts.
    pub next: LogCursor,
    /// Bytes rotated away before they could be read (whole files are the rotation size; at
    /// most that for a live file removed from under the writer before it was full).
    pub skipped: u64,
    /// When the bytes arrived: `(i, unix nanos)` says `data[i..]` arrived then, up to the next
    /// entry; bytes before the first entry have no known time (see [`super::times`]).
    pub times: Vec<(usize, u64)>,
}

/// Reads up to `max` bytes of `stream` from `cursor`, across rotations.
pub(crate) fn read_from(
    log_dir: &Path,
    task_name: &str,
    stream: LogStream,
    rotation: &LogRotation,
    cursor: LogCursor,
    max: usize,
) -> io::Result<Read> {
    let mut out = Read {
        next: cursor,
        ..Read::default()
    };
    let Some(dir) = open_dir(log_dir)? else {
        return Ok(out);
    };
    let names = list_dir(dir.as_raw_fd()).map_err(|e| nix_context(e, "listing", log_dir))?;
    let present = indexes(names, &prefix(task_name, stream));
    let Some(&oldest) = present.first() else {
        return Ok(out);
    };
    let size = rotation.max_file_size_bytes;
    if out.next.file < oldest {
        let gone = (oldest - out.next.file).saturating_mul(size);
        out.skipped = gone.saturating_sub(out.next.offset);
        out.next = LogCursor {
            file: oldest,
            offset: 0,
        };
    }
    while out.data.len() < max {
        let later = present.iter().copied().find(|i| *i > out.next.file);
        let name = log_file_name(task_name, stream, out.next.file);
        let file = match open_file(&dir, &name) {
            Ok(file) => file,
            // Rotated away since the listing: what was left of it is lost.
            Err(e) if e.kind() == io::ErrorKind::NotFound => match later {
                Some(_) if !out.data.is_empty() => break,
                Some(next) => {
                    out.skipped += size.saturating_sub(out.next.offset);
                    out.next = LogCursor {
                        file: next,
                        offset: 0,
                    };
                    continue;
                }
                None => break,
            },
            Err(e) => return Err(context(e, "opening log file", &log_dir.join(&name))),
        };
        let mut buf = vec![0u8; max - out.data.len()];
        let n = read_at(&file, &mut buf, out.next.offset)
            .map_err(|e| context(e, "reading log file", &log_dir.join(&name)))?;
        if n > 0 {
            let (start, at) = (out.next.offset, out.data.len());
            for (offset, nanos) in super::times::lookup(&dir, &name, start, start + n as u64) {
                let i = at + usize::try_from(offset - start).unwrap_or(n);
                out.times.push((i, nanos));
            }
        }
        out.data.extend_from_slice(&buf[..n]);
        out.next.offset += n as u64;
        if n == 0 {
            if !out.data.is_empty() {
                // A chunk holds bytes of one file only (see `LogChunk`): the next read moves on.
                break;
            }
            // At the end of this file: the writer has moved on to the next one, if any.
            match later {
                Some(next) => {
                    out.next = LogCursor {
                        file: next,
                        offset: 0,
                    }
                }
                None => break,
            }
        }
    }
    Ok(out)
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The log dir, opened without following a symlink; `None` when there is none yet.
fn open_dir(log_dir: &Path) -> io::Result<Option<OwnedFd>> {
    match nix::fcntl::open(
        log_dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        // SAFETY: open just returned this fd.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(nix::Error::ELOOP | nix::Error::ENOTDIR) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "log dir {} is a symlink or not a directory; refusing to read logs through it",
                log_dir.display()
            ),
        )),
        Err(e) => Err(nix_context(e, "opening log dir", log_dir)),
    }
}

/// A log file in `dir`, for reading: no symlink, no blocking open, regular files only.
fn open_file(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::Error::ELOOP => io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symlink; refusing to follow it",
        ),
        e => io::Error::from(e),
    })?;
    // SAFETY: openat just returned this fd.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file; refusing to read it",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn rotation() -> LogRotation {
        LogRotation {
            max_files: 3,
            max_file_size_bytes: 4,
            ..LogRotation::default()
        }
    }

    fn read_all(dir: &Path, cursor: LogCursor, max: usize) -> Read {
        read_from(dir, "web", LogStream::Stdout, &rotation(), cursor, max).expect("read")
    }

    #[test]
    fn reads_across_rotation_and_counts_what_was_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert_eq!(read_all(d, LogCursor::default(), 100).data, b"");
        fs::write(d.join("web.stdout.0"), b"abcd").expect("write");
        fs::write(d.join("web.stdout.1"), b"ef").expect("write");
        fs::write(d.join("web.stderr.0"), b"xx").expect("write");
        let r = read_all(d, LogCursor::default(), 3);
        assert_eq!(r.data, b"abc");
        // One file per read: a chunk's bytes are all of one file.
        let r = read_all(d, r.next, 100);
        assert_eq!(r.data, b"d");
        assert_eq!(r.next, LogCursor { file: 0, offset: 4 });
        let r = read_all(d, r.next, 100);
        assert_eq!(r.data, b"ef");
        assert_eq!(r.next, LogCursor { file: 1, offset: 2 });
        // Nothing new: the cursor stays.
        assert_eq!(read_all(d, r.next, 100).next, r.next);
        // The reader fell behind by a whole file: the loss is counted, not hidden.
        fs::remove_file(d.join("web.stdout.0")).expect("rm");
        fs::write(d.join("web.stdout.2"), b"g").expect("write");
        let r = read_all(d, LogCursor { file: 0, offset: 1 }, 100);
        assert_eq!(r.skipped, 3);
        assert_eq!(r.data, b"ef");
        assert_eq!(read_all(d, r.next, 100).data, b"g");
    }

    #[test]
    fn planted_symlinks_and_fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::os::unix::fs::symlink("/etc/hostname", d.join("web.stdout.0")).expect("symlink");
        let err = read_from(d, "web", LogStream::Stdout, &rotation(), LogCursor::default(), 10)
            .expect_err("symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
        nix::unistd::mkfifo(&d.join("web.stderr.0"), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = read_from(d, "web", LogStream::Stderr, &rotation(), LogCursor::default(), 10)
            .expect_err("fifo");
        assert!(err.to_string().contains("regular file"), "{err}");
        let linked = d.join("linked");
        std::os::unix::fs::symlink(d, &linked).expect("symlink");
        let err = read_from(&linked, "web", LogStream::Stderr, &rotation(), LogCursor::default(), 10)
            .expect_err("dir symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
