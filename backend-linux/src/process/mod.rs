//! Process identities (pid + start time) and pidfds: a reused pid can never be signalled.
//! (OWNED BY THE ISOLATION WORK.)

use std::time::Duration;

use execdriver_core::{ProcessIdentity, Signal};

/// A failed process operation, naming the pid.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Placeholder until the module is written.
    #[error("process operation not implemented: {0}")]
    NotImplemented(&'static str),
}

/// The identity of a live process, from /proc/<pid>/stat.
pub fn identity(pid: i32) -> Result<ProcessIdentity, ProcessError> {
    let _ = pid;
    Err(ProcessError::NotImplemented("identity"))
}

/// A pidfd: a handle on one process that stays valid if its pid is reused.
#[derive(Debug)]
pub struct Pidfd {
    _private: (),
}

impl Pidfd {
    /// Opens a pidfd on `pid` (pidfd_open).
    pub fn open(pid: i32) -> Result<Self, ProcessError> {
        let _ = pid;
        Err(ProcessError::NotImplemented("Pidfd::open"))
    }

    /// Opens a pidfd on the process only if its start time still matches `identity`:
    /// `Ok(None)` when the process is gone or the pid now belongs to another process.
    pub fn open_verified(identity: &ProcessIdentity) -> Result<Option<Self>, ProcessError> {
        let _ = identity;
        Err(ProcessError::NotImplemented("Pidfd::open_verified"))
    }

    /// Sends `signal` (pidfd_send_signal); a process that already exited is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        let _ = signal;
        Err(ProcessError::NotImplemented("Pidfd::signal"))
    }

    /// Waits until the process exits or `timeout` passes; true if it exited.
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Result<bool, ProcessError> {
        let _ = timeout;
        Err(ProcessError::NotImplemented("Pidfd::wait_exit"))
    }
}
