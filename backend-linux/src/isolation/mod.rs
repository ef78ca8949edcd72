//! How a task is started: new mount, PID, IPC and UTS namespaces; a root made of the task dir
//! and read-only binds of the chroot env; a pid-1 init that forwards signals and reaps;
//! the user drop; exec. (OWNED BY THE ISOLATION WORK.)
//!
//! Must be called while the caller is single-threaded: the child runs Rust code after fork.

use std::os::fd::OwnedFd;

use execdriver_core::{ExitStatus, Signal, TaskSpec};

use crate::process::Pidfd;

/// A failure to start the task, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// Placeholder until the module is written.
    #[error("isolation not implemented: {0}")]
    NotImplemented(&'static str),
}

/// Everything needed to start a task in its isolated root.
pub struct LaunchRequest<'a> {
    /// The task.
    pub spec: &'a TaskSpec,
    /// Where the task's stdout goes (write end of a pipe to the log pump).
    pub stdout: OwnedFd,
    /// Where the task's stderr goes.
    pub stderr: OwnedFd,
    /// Called in the parent with the init's host pid before the init may go on: the
    /// supervisor puts it into the task cgroup here, so the task never runs outside it.
    pub place_in_cgroup: &'a dyn Fn(i32) -> Result<(), String>,
}

impl std::fmt::Debug for LaunchRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("task_id", &self.spec.task_id)
            .finish_non_exhaustive()
    }
}

/// A started task: its pid-1 init, as seen from the host.
#[derive(Debug)]
pub struct LaunchedTask {
    /// Host pid of the task's init (pid 1 of its namespace).
    pub init_pid: i32,
    /// A pidfd on the init.
    pub pidfd: Pidfd,
}

impl LaunchedTask {
    /// Forwards `signal` to the task (through its init).
    pub fn signal(&self, signal: Signal) -> Result<(), IsolationError> {
        let _ = signal;
        Err(IsolationError::NotImplemented("LaunchedTask::signal"))
    }

    /// Blocks until the task has exited and reaps its init; the status is the task's own
    /// (its exit code or signal), not the init's.
    pub fn wait(&self) -> Result<ExitStatus, IsolationError> {
        Err(IsolationError::NotImplemented("LaunchedTask::wait"))
    }
}

/// Starts the task: clone into new namespaces, place in cgroup, build the root, drop to the
/// user, exec. Returns once the exec happened or failed (a failed exec is an exit 126/127).
pub fn launch(request: LaunchRequest<'_>) -> Result<LaunchedTask, IsolationError> {
    let _ = request;
    Err(IsolationError::NotImplemented("launch"))
}
