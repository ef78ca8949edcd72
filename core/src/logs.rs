//! Choosing where to start reading a task's log: its last lines, or what arrived since a
//! time (`logs --tail N --since T`), over any platform's [`LogChunk`] reads.
//!
//! A platform's chunk holds bytes of one log file only, so the cursor of every byte of it is
//! known: `data[i]` is at `next.offset - data.len() + i` of `next.file`.

use std::collections::VecDeque;

use crate::platform::{LogChunk, LogCursor};

/// Which part of a stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStart {
    /// Only the last this many lines (of those `since` lets through).
    pub tail: Option<usize>,
    /// Only the lines whose first byte arrived at or after this unix time, in nanoseconds.
    /// Lines of no known time (written by a platform or a version that kept no times) count as
    /// older than any time.
    pub since_unix_nanos: Option<u64>,
}

/// Bytes asked for per read while looking for the start.
const SCAN: usize = 1 << 20;

impl LogChunk {
    /// When `data[i]` arrived, unix nanoseconds, if known.
    pub fn time_at(&self, i: usize) -> Option<u64> {
        let after = self.times.partition_point(|t| t.at <= i);
        after
            .checked_sub(1)
            .and_then(|k| self.times.get(k))
            .map(|t| t.unix_nanos)
    }

    /// The cursor of `data[i]` (of the end for `i == data.len()`).
    pub fn cursor_at(&self, i: usize) -> LogCursor {
        let back = self.data.len().saturating_sub(i) as u64;
        LogCursor {
            file: self.next.file,
            offset: self.next.offset.saturating_sub(back),
        }
    }
}

/// The cursor from which reading gives what `start` asks for, found by reading the stream
/// from its oldest kept byte through `read` (which, like a platform's `read_logs`, reads up to
/// `max` bytes from a cursor). With neither limit, the oldest byte. A tail costs a read of the
/// whole kept log; `since` alone stops at the first line it lets through.
pub fn find_start<E>(
    read: &mut dyn FnMut(LogCursor, usize) -> Result<LogChunk, E>,
    start: LogStart,
) -> Result<LogCursor, E> {
    if start == LogStart::default() {
        return Ok(LogCursor::default());
    }
    let tail = start.tail.unwrap_or(usize::MAX);
    let mut starts: VecDeque<LogCursor> = VecDeque::new();
    let mut first_kept: Option<LogCursor> = None;
    let mut cursor = LogCursor::default();
    let mut at_line_start = true;
    loop {
        let chunk = read(cursor, SCAN)?;
        let moved = chunk.next != cursor;
        cursor = chunk.next;
        if chunk.data.is_empty() {
            if !moved {
                break;
            }
            continue;
        }
        for (i, &byte) in chunk.data.iter().enumerate() {
            if at_line_start {
                let kept = match start.since_unix_nanos {
                    Some(since) => chunk.time_at(i).is_some_and(|t| t >= since),
                    None => true,
                };
                // Arrival times only grow: once one line is let through, all later ones are.
                if kept || first_kept.is_some() {
                    let at = chunk.cursor_at(i);
                    first_kept.get_or_insert(at);
                    if start.tail.is_none() {
                        return Ok(at);
                    }
                    if tail == 0 {
                        // Nothing but the end will do: keep scanning.
                    } else {
                        if starts.len() == tail {
                            starts.pop_front();
                        }
                        starts.push_back(at);
                    }
                }
            }
            at_line_start = byte == b'\n';
        }
    }
    Ok(match starts.front() {
        Some(&at) if tail > 0 => at,
        _ => cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::LogTime;

    /// A stream in files of `size` bytes, each line arriving at second = its number.
    struct Fake {
        files: Vec<Vec<u8>>,
        /// Per file, `(offset, unix nanos)`.
        times: Vec<Vec<(u64, u64)>>,
    }

    impl Fake {
        fn new(lines: &[&str], size: usize) -> Self {
            let mut files: Vec<Vec<u8>> = vec![Vec::new()];
            let mut times: Vec<Vec<(u64, u64)>> = vec![Vec::new()];
            for (n, line) in lines.iter().enumerate() {
                for (k, &b) in line.as_bytes().iter().enumerate() {
                    if files.last().unwrap().len() == size {
                        files.push(Vec::new());
                        times.push(vec![(0, n as u64 * 1_000_000_000)]);
                    }
                    let f = files.last_mut().unwrap();
                    if k == 0 {
                        times
                            .last_mut()
                            .unwrap()
                            .push((f.len() as u64, n as u64 * 1_000_000_000));
                    }
                    f.push(b);
                }
            }
            Self { files, times }
        }

        fn read(&self, c: LogCursor, max: usize) -> Result<LogChunk, ()> {
            let file = &self.files[c.file as usize];
            let off = c.offset as usize;
            if off >= file.len() {
                let next = if (c.file as usize) + 1 < self.files.len() {
                    LogCursor {
                        file: c.file + 1,
                        offset: 0,
                    }
                } else {
                    c
                };
                return Ok(LogChunk {
                    next,
                    ..LogChunk::default()
                });
            }
            let end = file.len().min(off + max);
            let mut times = Vec::new();
            for &(o, t) in &self.times[c.file as usize] {
                let o = o as usize;
                if o <= off {
                    times = vec![LogTime {
                        at: 0,
                        unix_nanos: t,
                    }];
                } else if o < end {
                    times.push(LogTime {
                        at: o - off,
                        unix_nanos: t,
                    });
                }
            }
            Ok(LogChunk {
                data: file[off..end].to_vec(),
                next: LogCursor {
                    file: c.file,
                    offset: end as u64,
                },
                times,
                ..LogChunk::default()
            })
        }

        /// Everything from `c` on.
        fn text_from(&self, c: LogCursor) -> String {
            let mut out =
                String::from_utf8(self.files[c.file as usize][c.offset as usize..].to_vec())
                    .unwrap();
            for f in &self.files[c.file as usize + 1..] {
                out.push_str(std::str::from_utf8(f).unwrap());
            }
            out
        }
    }

    fn start(fake: &Fake, tail: Option<usize>, since_s: Option<u64>) -> String {
        let s = LogStart {
            tail,
            since_unix_nanos: since_s.map(|s| s * 1_000_000_000),
        };
        let c = find_start(&mut |c, m| fake.read(c, m), s).unwrap();
        fake.text_from(c)
    }

    #[test]
    fn tail_and_since_across_files() {
        let fake = Fake::new(&["a\n", "bb\n", "ccc\n", "dddd\n", "e"], 4);
        assert_eq!(start(&fake, None, None), "a\nbb\nccc\ndddd\ne");
        assert_eq!(start(&fake, Some(2), None), "dddd\ne");
        assert_eq!(start(&fake, Some(3), None), "ccc\ndddd\ne");
        assert_eq!(start(&fake, Some(9), None), "a\nbb\nccc\ndddd\ne");
        assert_eq!(start(&fake, Some(0), None), "");
        assert_eq!(start(&fake, None, Some(2)), "ccc\ndddd\ne");
        assert_eq!(start(&fake, None, Some(9)), "");
        assert_eq!(start(&fake, Some(1), Some(2)), "e");
        assert_eq!(start(&fake, Some(5), Some(3)), "dddd\ne");
        let whole = Fake::new(&["x\n", "y\n"], 100);
        assert_eq!(start(&whole, Some(1), None), "y\n");
    }

    #[test]
    fn time_at_and_cursor_at() {
        let chunk = LogChunk {
            data: b"abcdef".to_vec(),
            next: LogCursor {
                file: 3,
                offset: 10,
            },
            times: vec![
                LogTime {
                    at: 2,
                    unix_nanos: 7,
                },
                LogTime {
                    at: 4,
                    unix_nanos: 9,
                },
            ],
            ..LogChunk::default()
        };
        assert_eq!(chunk.time_at(0), None);
        assert_eq!(chunk.time_at(2), Some(7));
        assert_eq!(chunk.time_at(3), Some(7));
        assert_eq!(chunk.time_at(5), Some(9));
        assert_eq!(chunk.cursor_at(0), LogCursor { file: 3, offset: 4 });
        assert_eq!(
            chunk.cursor_at(6),
            LogCursor {
                file: 3,
                offset: 10
            }
        );
    }
}
