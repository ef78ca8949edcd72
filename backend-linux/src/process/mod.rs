//! Process identities (pid + start time) and pidfds: a reused pid can never be signalled.
//!
//! A pid alone names whatever process holds that number now. A [`execdriver_core::ProcessIdentity`] adds the
//! start time from `/proc/<pid>/stat`, and a [`Pidfd`] pins one process for good: once open,
//! it keeps referring to that process even after it exits and its pid is handed out again.

pub(crate) mod born_in_cgroup;
mod footprint;
mod identity;
mod pidfd;

use std::io;

pub use identity::{identity, is_gone_or_dead, stat_field};
#[cfg(any(test, feature = "test-support"))]
pub use identity::parse_start_time;
pub(crate) use footprint::{CleanMappings, trim_heap};
pub use pidfd::{Pidfd, check_kernel_floor};

/// A failed process operation, naming the pid.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A pid that no process can have (zero or negative).
    #[error("pid {pid} is not a valid process id")]
    InvalidPid {
        /// The pid given.
        pid: i32,
    },
    /// No process has this pid (any more).
    #[error("no process with pid {pid}")]
    NotFound {
        /// The pid looked for.
        pid: i32,
    },
    /// `/proc/<pid>/stat` could not be read.
    #[error("cannot read /proc/{pid}/stat: {source}")]
    ReadStat {
        /// The process.
        pid: i32,
        /// Why.
        source: io::Error,
    },
    /// `/proc/<pid>/stat` did not have the expected shape.
    #[error("cannot parse /proc/{pid}/stat: {what}")]
    ParseStat {
        /// The process.
        pid: i32,
        /// What was wrong with it.
        what: &'static str,
    },
    /// A pidfd system call failed.
    #[error("{call} on pid {pid} failed: {source}")]
    Syscall {
        /// The call (`pidfd_open`, `pidfd_send_signal`, `poll`).
        call: &'static str,
        /// The process.
        pid: i32,
        /// The OS error.
        source: io::Error,
    },
}
