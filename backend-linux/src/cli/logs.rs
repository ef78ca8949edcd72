//! `logs`: print a task's output as `docker logs` does: stdout on our stdout and stderr on
//! our stderr, both in the order they arrived from the task (by the arrival times the
//! supervisor records); or one stream, on our stdout, with `--stdout`/`--stderr` (as
//! `--stderr` always printed it); `--tail`, `--since` and `--timestamps` over those; with
//! `-f`, keep printing until the task exits.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use execdriver_core::{DriverError, LogChunk, LogCursor, LogStart, LogStream};

use super::args::LogsOpts;
use super::context::Ctx;
use super::follow::{BrokenPipeTolerant, POLL_FIRST, POLL_MAX};
use super::{Result, errln, fail, parse};

/// Bytes asked for per read.
const CHUNK: usize = 64 * 1024;

/// The time `--timestamps` prints for a line whose arrival was not recorded (output of a
/// supervisor that kept no times, or whose index was unusable): docker's zero time.
const UNKNOWN_TIME: &str = "0001-01-01T00:00:00.000000000Z";

pub fn logs(ctx: &Ctx, opts: &LogsOpts) -> Result<u8> {
    let tail = match opts.tail.as_deref().map(str::trim) {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            fail!("--tail {n:?} is not a number of lines: use a number, such as 10, or all")
        })?),
    };
    let since = opts
        .since
        .as_deref()
        .map(|s| parse::since(s, SystemTime::now()).map_err(|e| fail!("--since {e}")))
        .transpose()?;
    let streams: &[LogStream] = if opts.stdout {
        &[LogStream::Stdout]
    } else if opts.stderr {
        &[LogStream::Stderr]
    } else {
        &[LogStream::Stdout, LogStream::Stderr]
    };
    let target = ctx.target(&opts.handle)?;
    let handle = ctx.handle_of(&target)?;
    let driver = ctx.driver();
    let read = |stream, cursor, max| driver.read_logs(&handle, stream, cursor, max);
    let start = LogStart {
        tail,
        since_unix_nanos: since,
    };
    let mut readers = Vec::new();
    for &stream in streams {
        let cursor = driver.log_start(&handle, stream, start)?;
        readers.push(StreamReader::new(stream, cursor));
    }
    let mut out = Output {
        stdout: BrokenPipeTolerant {
            inner: io::stdout().lock(),
        },
        stderr: BrokenPipeTolerant {
            inner: io::stderr().lock(),
        },
        timestamps: opts.timestamps,
        all_on_stdout: streams.len() == 1,
        last: None,
    };
    // What is there now, both streams, the last `tail` lines of them together.
    let (mut pieces, mut more) = poll(&read, &mut readers)?;
    if let Some(n) = tail {
        keep_last_lines(&mut pieces, n);
    }
    out.write(&pieces);
    let mut pause = POLL_FIRST;
    while opts.follow && more {
        std::thread::park_timeout(pause);
        let (pieces, still) = poll(&read, &mut readers)?;
        pause = if pieces.is_empty() {
            (pause * 2).min(POLL_MAX)
        } else {
            POLL_FIRST
        };
        out.write(&pieces);
        more = still;
    }
    out.flush();
    if opts.follow
        && matches!(
            driver.probe(&handle),
            Ok(execdriver_core::TaskStatus::Lost { .. })
        )
    {
        errln!(
            "execdriver: supervisor {} of task {} is gone and left no exit record; no more output will come",
            handle.supervisor.process.pid,
            handle.task_id
        );
    }
    Ok(0)
}

/// A span of one stream's output: a line, or the part of one that was read at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    stream: LogStream,
    /// When its first byte arrived, unix nanoseconds (`None`: not recorded).
    time: Option<u64>,
    /// It starts a line (else it goes on with the line before it in its stream).
    line_start: bool,
    bytes: Vec<u8>,
}

/// Where one stream's reading is.
struct StreamReader {
    stream: LogStream,
    cursor: LogCursor,
    at_line_start: bool,
    /// The time of the last piece, which a piece of no recorded time sorts at.
    last_time: Option<u64>,
}

impl StreamReader {
    fn new(stream: LogStream, cursor: LogCursor) -> Self {
        Self {
            stream,
            cursor,
            at_line_start: true,
            last_time: None,
        }
    }

    /// Splits `chunk` into pieces at line ends.
    fn split(&mut self, chunk: &LogChunk, out: &mut Vec<Piece>) {
        let mut start = 0;
        while start < chunk.data.len() {
            let end = chunk.data[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(chunk.data.len(), |i| start + i + 1);
            let time = chunk.time_at(start).or(self.last_time);
            self.last_time = time;
            out.push(Piece {
                stream: self.stream,
                time,
                line_start: self.at_line_start,
                bytes: chunk.data[start..end].to_vec(),
            });
            self.at_line_start = chunk.data[end - 1] == b'\n';
            start = end;
        }
    }
}

type Read<'a> =
    dyn Fn(LogStream, LogCursor, usize) -> std::result::Result<LogChunk, DriverError> + 'a;

/// Everything the streams have now, merged by arrival; whether more may come.
fn poll(
    read: &Read<'_>,
    readers: &mut [StreamReader],
) -> std::result::Result<(Vec<Piece>, bool), DriverError> {
    let mut merged: Vec<Piece> = Vec::new();
    let mut more = false;
    for reader in readers.iter_mut() {
        let mut pieces = Vec::new();
        loop {
            let chunk = read(reader.stream, reader.cursor, CHUNK)?;
            if chunk.skipped > 0 {
                errln!(
                    "execdriver: up to {} bytes of the task's {} were rotated away or removed before they were read",
                    chunk.skipped,
                    reader.stream.as_str()
                );
            }
            let moved = chunk.next != reader.cursor;
            reader.cursor = chunk.next;
            if chunk.data.is_empty() {
                if moved {
                    continue;
                }
                more |= chunk.more_may_come;
                break;
            }
            reader.split(&chunk, &mut pieces);
        }
        merged = merge(merged, pieces);
    }
    Ok((merged, more))
}

/// Two lists each in its stream's order, merged by time; on a tie (or an unknown time) the
/// first list's piece goes first. Each stream's own order is kept whatever its times say.
fn merge(a: Vec<Piece>, b: Vec<Piece>) -> Vec<Piece> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.time.unwrap_or(0) <= y.time.unwrap_or(0),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
}

/// Drops everything before the last `n` lines.
fn keep_last_lines(pieces: &mut Vec<Piece>, n: usize) {
    let starts: Vec<usize> = (0..pieces.len())
        .filter(|&i| pieces[i].line_start)
        .collect();
    let from = match starts.len().checked_sub(n) {
        Some(k) => starts.get(k).copied().unwrap_or(pieces.len()),
        None => 0,
    };
    pieces.drain(..from);
}

/// Our stdout and stderr, and what was written last.
struct Output<O: Write, E: Write> {
    stdout: BrokenPipeTolerant<O>,
    stderr: BrokenPipeTolerant<E>,
    timestamps: bool,
    /// One stream was asked for: it goes to our stdout, whichever it is.
    all_on_stdout: bool,
    last: Option<LogStream>,
}

impl<O: Write, E: Write> Output<O, E> {
    fn write(&mut self, pieces: &[Piece]) {
        for piece in pieces {
            if self.last != Some(piece.stream) {
                // The other stream's output must be out before this one's: both may go to
                // one terminal or file.
                self.flush();
                self.last = Some(piece.stream);
            }
            let prefix = (self.timestamps && piece.line_start).then(|| {
                piece.time.map_or_else(
                    || UNKNOWN_TIME.to_owned(),
                    |t| {
                        humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(t))
                            .to_string()
                    },
                )
            });
            let sink: &mut dyn Write = match piece.stream {
                LogStream::Stderr if !self.all_on_stdout => &mut self.stderr,
                _ => &mut self.stdout,
            };
            // A closed output (`| head`) ends nothing: the task goes on.
            if let Some(prefix) = prefix {
                let _ = write!(sink, "{prefix} ");
            }
            let _ = sink.write_all(&piece.bytes);
        }
    }

    fn flush(&mut self) {
        let _ = self.stdout.flush();
        let _ = self.stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(stream: LogStream, time: u64, line_start: bool, text: &str) -> Piece {
        Piece {
            stream,
            time: Some(time),
            line_start,
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn merges_by_arrival_and_keeps_the_last_lines_of_both() {
        use LogStream::{Stderr as E, Stdout as O};
        let out = vec![
            piece(O, 1, true, "a\n"),
            piece(O, 4, true, "c"),
            piece(O, 6, false, "c\n"),
        ];
        let err = vec![piece(E, 2, true, "b\n"), piece(E, 5, true, "d\n")];
        let mut all = merge(out, err);
        let text: Vec<&[u8]> = all.iter().map(|p| &p.bytes[..]).collect();
        assert_eq!(text, [&b"a\n"[..], b"b\n", b"c", b"d\n", b"c\n"]);
        keep_last_lines(&mut all, 2);
        let text: Vec<&[u8]> = all.iter().map(|p| &p.bytes[..]).collect();
        assert_eq!(text, [&b"c"[..], b"d\n", b"c\n"]);
        keep_last_lines(&mut all, 0);
        assert!(all.is_empty());
    }

    #[test]
    fn timestamps_prefix_line_starts_only() {
        let mut out = Output {
            stdout: BrokenPipeTolerant { inner: Vec::new() },
            stderr: BrokenPipeTolerant { inner: Vec::new() },
            timestamps: true,
            all_on_stdout: false,
            last: None,
        };
        let mut unknown = piece(LogStream::Stdout, 0, true, "x\n");
        unknown.time = None;
        out.write(&[
            piece(LogStream::Stdout, 1_500_000_000, true, "ab"),
            piece(LogStream::Stdout, 1_600_000_000, false, "c\n"),
            unknown,
        ]);
        assert_eq!(
            String::from_utf8(out.stdout.inner).unwrap(),
            "1970-01-01T00:00:01.500000000Z abc\n0001-01-01T00:00:00.000000000Z x\n"
        );
    }
}
