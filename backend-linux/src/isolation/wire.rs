//! Fixed-size records on the pipes between the supervisor, the task's init and the task.
//!
//! Every record is [`RECORD_LEN`] bytes, well under `PIPE_BUF`, so each write is atomic and
//! a reader never sees half a record. They are encoded without allocating, because the init
//! and the task write them from a process that must not touch the heap.

/// Size in bytes of one encoded record.
pub(crate) const RECORD_LEN: usize = 20;

/// The init's control socket (from the supervisor) once its fds are arranged; the reaper
/// finds it there too.
pub(crate) const CTL_FD: i32 = 3;
/// The init's report pipe (to the supervisor) once its fds are arranged; the reaper finds
/// it there too.
pub(crate) const REPORT_FD: i32 = 4;

const MAGIC: u32 = 0x4544_5852;

/// A message between the supervisor, the init and the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// Supervisor -> init: the init is in its cgroup; go on with the setup.
    Go,
    /// Supervisor -> init: send this signal to the task (for signals that cannot be sent
    /// to the init itself, such as SIGSTOP).
    Forward {
        /// Signal number.
        signal: i32,
    },
    /// Init -> supervisor: a setup step failed; the init exits.
    SetupFailed {
        /// Index in the setup plan, or one of the `step::` codes.
        step: u32,
        /// errno of the failed call.
        errno: i32,
    },
    /// Init -> supervisor, on the control socket with the master of the task's terminal
    /// (`SCM_RIGHTS`): the task's terminal is open, before the task is forked.
    Terminal,
    /// Init -> supervisor: the task has exec'd (or failed to, which is reported as its exit).
    Started,
    /// Init -> supervisor: the task exited with this code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Init -> supervisor: the task was killed by this signal.
    Killed {
        /// Signal number.
        signal: i32,
    },
    /// Task -> init: a step between fork and exec failed (CLOEXEC pipe: nothing is
    /// written when the exec succeeds).
    TaskFailed {
        /// One of the `step::TASK_*` codes.
        step: u32,
        /// errno of the failed call.
        errno: i32,
        /// `TASK_FLAG_*` bits.
        flags: u32,
    },
}

/// [`Record::TaskFailed`] flag: execve said ENOENT but the file is there (its interpreter
/// or dynamic loader is missing from the task root).
pub(crate) const FLAG_MISSING_INTERPRETER: u32 = 1;
/// [`Record::TaskFailed`] flag: the command was searched for in PATH.
pub(crate) const FLAG_SEARCHED_PATH: u32 = 2;

impl Record {
    /// The record as bytes.
    pub(crate) fn encode(self) -> [u8; RECORD_LEN] {
        let (kind, a, b, c): (u32, u32, u32, u32) = match self {
            Record::Go => (1, 0, 0, 0),
            Record::Forward { signal } => (2, signal as u32, 0, 0),
            Record::SetupFailed { step, errno } => (3, step, errno as u32, 0),
            Record::Started => (4, 0, 0, 0),
            Record::Exited { code } => (5, code as u32, 0, 0),
            Record::Killed { signal } => (6, signal as u32, 0, 0),
            Record::TaskFailed { step, errno, flags } => (7, step, errno as u32, flags),
            Record::Terminal => (8, 0, 0, 0),
        };
        let mut out = [0u8; RECORD_LEN];
        for (i, word) in [MAGIC, kind, a, b, c].into_iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        out
    }

    /// The record in `bytes`, or `None` if they are not one.
    pub(crate) fn decode(bytes: &[u8; RECORD_LEN]) -> Option<Record> {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            u32::from_ne_bytes(w)
        };
        if word(0) != MAGIC {
            return None;
        }
        let (a, b, c) = (word(2), word(3), word(4));
        Some(match word(1) {
            1 => Record::Go,
            2 => Record::Forward { signal: a as i32 },
            3 => Record::SetupFailed {
                step: a,
                errno: b as i32,
            },
            4 => Record::Started,
            5 => Record::Exited { code: a as i32 },
            6 => Record::Killed { signal: a as i32 },
            7 => Record::TaskFailed {
                step: a,
                errno: b as i32,
                flags: c,
            },
            8 => Record::Terminal,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let all = [
            Record::Go,
            Record::Forward { signal: 19 },
            Record::SetupFailed {
                step: u32::MAX - 3,
                errno: 13,
            },
            Record::Started,
            Record::Terminal,
            Record::Exited { code: 127 },
            Record::Exited { code: -1 },
            Record::Killed { signal: 9 },
            Record::TaskFailed {
                step: 7,
                errno: 2,
                flags: FLAG_MISSING_INTERPRETER | FLAG_SEARCHED_PATH,
            },
        ];
        for r in all {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn garbage_is_not_a_record() {
        assert_eq!(Record::decode(&[0u8; RECORD_LEN]), None);
        let mut bad_kind = Record::Started.encode();
        bad_kind[4] = 99;
        assert_eq!(Record::decode(&bad_kind), None);
    }
}
