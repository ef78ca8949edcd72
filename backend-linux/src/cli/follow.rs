//! Following a task's log files as they grow and rotate, the way `tail -F` does.
//!
//! A stream's files are `<task name>.<stream>.<index>`; rotation starts the next index and
//! deletes the oldest. The follower keeps its current file open and remembers its index:
//! once a higher index exists, the current file gets one last read to its end (through the
//! open handle, so even a deleted file is finished) and the next index is opened. Nothing is
//! lost or repeated as long as rotation does not outrun the reader by whole files.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use execdriver_linux::logs::{Stream, log_indexes};

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(50);

/// Reads one stream's files in order, remembering where it is.
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    task_name: String,
    stream: Stream,
    current: Option<(File, u64)>,
}

impl Follower {
    /// A follower that starts at the oldest file.
    pub fn new(dir: &Path, task_name: &str, stream: Stream) -> Self {
        Self {
            dir: dir.to_owned(),
            task_name: task_name.to_owned(),
            stream,
            current: None,
        }
    }

    /// Copies everything new to `out`; returns the bytes copied.
    pub fn poll(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        let mut copied = 0;
        loop {
            if let Some((file, _)) = self.current.as_mut() {
                copied += io::copy(file, out)?;
            }
            let after = self.current.as_ref().map(|(_, index)| *index);
            let next = log_indexes(&self.dir, &self.task_name, self.stream)
                .into_iter()
                .find(|(index, _)| after.is_none_or(|a| *index > a));
            let Some((index, path)) = next else {
                out.flush()?;
                return Ok(copied);
            };
            // A newer file exists: whatever the current one still gets was written before
            // the rotation, so drain it once more and move on.
            if let Some((mut file, _)) = self.current.take() {
                copied += io::copy(&mut file, out)?;
            }
            match File::open(&path) {
                Ok(file) => self.current = Some((file, index)),
                // Rotated away between listing and opening: skip to the one after it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.current = File::open("/dev/null").ok().map(|f| (f, index));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies until `stop` is set, then drains once more and returns. Whoever sets `stop`
    /// should unpark this thread so that it does not sleep out its poll interval.
    pub fn run(&mut self, out: &mut dyn Write, stop: &AtomicBool) -> io::Result<u64> {
        let mut copied = 0;
        loop {
            let last = stop.load(Ordering::Acquire);
            copied += self.poll(out)?;
            if last {
                return Ok(copied);
            }
            std::thread::park_timeout(POLL);
        }
    }
}

/// A writer that stops writing, silently, once its reader is gone (`| head`).
pub struct BrokenPipeTolerant<W> {
    /// The real output.
    pub inner: W,
}

impl<W: Write> Write for BrokenPipeTolerant<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(path: &Path, text: &str) {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn follows_across_rotation_without_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut f = Follower::new(d, "web", Stream::Stdout);
        let mut out = Vec::new();
        assert_eq!(f.poll(&mut out).ok(), Some(0));
        write(&d.join("web.stdout.0"), "a\n");
        f.poll(&mut out).expect("poll");
        write(&d.join("web.stdout.0"), "b\n");
        write(&d.join("web.stdout.1"), "c\n");
        f.poll(&mut out).expect("poll");
        write(&d.join("web.stdout.1"), "d\n");
        // Rotation deletes the oldest file: it was fully read already.
        fs::remove_file(d.join("web.stdout.0")).expect("rm");
        write(&d.join("web.stdout.2"), "e\n");
        f.poll(&mut out).expect("poll");
        assert_eq!(String::from_utf8_lossy(&out), "a\nb\nc\nd\ne\n");
        // Another stream's files are not mixed in.
        write(&d.join("web.stderr.0"), "x\n");
        f.poll(&mut out).expect("poll");
        assert_eq!(String::from_utf8_lossy(&out), "a\nb\nc\nd\ne\n");
    }
}
