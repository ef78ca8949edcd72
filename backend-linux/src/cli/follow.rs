//! Following a task's output through the driver, the way `tail -F` follows files: every
//! read goes through `Driver::read_logs` or `TaskHandle::read_logs`, which read the rotated
//! files safely and say whether more may come.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use execdriver_core::{DriverError, LogChunk, LogCursor, LogStream};

use super::errln;

/// How soon the logs are looked at again after output came (or the task started), so that
/// output appears about when it is written. (The task's end needs no look: `run` wakes the
/// followers when it has waited for the exit.)
pub(super) const POLL_FIRST: Duration = Duration::from_millis(5);
/// How often, at most, while the task is quiet: the pause doubles up to this.
pub(super) const POLL_MAX: Duration = Duration::from_millis(50);
/// Bytes asked for per read.
const CHUNK: usize = 64 * 1024;

/// Where a follower reads from: one stream of one task, by cursor.
pub type Source<'a> = dyn Fn(LogCursor, usize) -> Result<LogChunk, DriverError> + 'a;

/// Reads one stream of one task, remembering where it is.
pub struct Follower<'a> {
    read: &'a Source<'a>,
    stream: LogStream,
    cursor: LogCursor,
    /// Bytes copied so far.
    pub copied: u64,
}

impl<'a> Follower<'a> {
    /// A follower of `stream` through `read`, from the oldest byte kept.
    pub fn new(read: &'a Source<'a>, stream: LogStream) -> Self {
        Self {
            read,
            stream,
            cursor: LogCursor::default(),
            copied: 0,
        }
    }

    /// A follower of `stream` through `read`, from `cursor`.
    pub fn starting_at(read: &'a Source<'a>, stream: LogStream, cursor: LogCursor) -> Self {
        Self {
            cursor,
            ..Self::new(read, stream)
        }
    }

    /// Copies everything there is now to `out`; whether more may come.
    pub fn poll(&mut self, out: &mut dyn Write) -> Result<bool, DriverError> {
        loop {
            let chunk = (self.read)(self.cursor, CHUNK)?;
            if chunk.skipped > 0 {
                errln!(
                    "execdriver: up to {} bytes of the task's {} were rotated away or removed before they were read",
                    chunk.skipped,
                    self.stream.as_str()
                );
            }
            self.cursor = chunk.next;
            if chunk.data.is_empty() {
                let _ = out.flush();
                return Ok(chunk.more_may_come);
            }
            self.copied += chunk.data.len() as u64;
            // A closed output (`| head`) ends nothing: the task goes on.
            let _ = out.write_all(&chunk.data);
        }
    }

    /// Copies until nothing more can come, or `stop` is set (then drains once more).
    pub fn follow(
        &mut self,
        out: &mut dyn Write,
        stop: Option<&AtomicBool>,
    ) -> Result<(), DriverError> {
        let mut pause = POLL_FIRST;
        loop {
            let last = stop.is_some_and(|s| s.load(Ordering::Acquire));
            let before = self.copied;
            if !self.poll(out)? || last {
                return Ok(());
            }
            pause = if self.copied > before {
                POLL_FIRST
            } else {
                (pause * 2).min(POLL_MAX)
            };
            std::thread::park_timeout(pause);
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
