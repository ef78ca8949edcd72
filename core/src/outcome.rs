//! How a task ended: [`ExitStatus`] as the platform saw it, [`WaitResult`] as the driver
//! delivers it, and the typed errors a result can carry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::platform::{PlatformError, PlatformErrorKind};
use crate::signal::Signal;

/// How a task ended, as the platform saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + N when killed by signal N (the shell's convention).
    pub exit_code: i32,
    /// The signal that killed the task, if one did.
    pub signal: Option<Signal>,
    /// Whether the kernel OOM-killed a process of the task.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// A normal exit with `code`.
    pub fn code(exit_code: i32) -> Self {
        Self {
            exit_code,
            signal: None,
            oom_killed: false,
        }
    }

    /// Death by `signal`.
    pub fn signaled(signal: Signal) -> Self {
        Self {
            exit_code: 128 + signal.number(),
            signal: Some(signal),
            oom_killed: false,
        }
    }
}

/// One step of the cleanup after a task, named in a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CleanupStep {
    /// Asking the live supervisor to remove the task's cgroup and state, then exit.
    Release,
    /// Killing the supervisor, if it is still the recorded process.
    KillSupervisor,
    /// Killing every process in the task's cgroup.
    KillCgroup,
    /// Removing the task's cgroup.
    DestroyCgroup,
    /// Removing the task's state dir.
    RemoveState,
}

impl fmt::Display for CleanupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupStep::Release => "release supervisor",
            CleanupStep::KillSupervisor => "kill supervisor",
            CleanupStep::KillCgroup => "kill cgroup",
            CleanupStep::DestroyCgroup => "destroy cgroup",
            CleanupStep::RemoveState => "remove state",
        })
    }
}

/// A cleanup step that failed: which one, what kind of failure, and the platform's message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CleanupFailure {
    /// The step.
    pub step: CleanupStep,
    /// What kind of failure it was.
    pub kind: PlatformErrorKind,
    /// The platform's message.
    pub message: String,
}

impl CleanupFailure {
    /// The failure of `step` with `error`.
    pub fn new(step: CleanupStep, error: &PlatformError) -> Self {
        Self {
            step,
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for CleanupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.message)
    }
}

/// Joins failures as `a; b; c` for messages.
pub(crate) fn join_failures(failures: &[CleanupFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What went wrong in the driver while a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The supervisor died and left no exit record: the exit status is unknown, and the
    /// task was cleaned up by its cgroup.
    SupervisorLost,
    /// The supervisor did not answer in time during a kill: the driver killed the task by
    /// its cgroup and the supervisor by its verified pidfd.
    SupervisorUnresponsive,
    /// The force kill through the supervisor failed or did not end the task in time: the
    /// driver killed it by its cgroup.
    ForceKillFailed,
    /// The task's exit is known, but a cleanup step failed: something of it may be left.
    CleanupFailed,
    /// The driver panicked while finishing the task.
    Internal,
}

/// The error part of a [`WaitResult`]: a kind to branch on, a message to show, and every
/// cleanup step that failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of failure.
    pub kind: TaskErrorKind,
    /// What happened, specific (which supervisor, which pid, which step).
    pub message: String,
    /// The cleanup steps that failed; empty when the cleanup succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup_failures: Vec<CleanupFailure>,
}

impl TaskError {
    /// An error of `kind` with `message` and no cleanup failures.
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            cleanup_failures: Vec::new(),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.cleanup_failures.is_empty() {
            write!(
                f,
                "; cleanup failed: {}",
                join_failures(&self.cleanup_failures)
            )?;
        }
        Ok(())
    }
}

/// The result of a task, delivered exactly once per task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaitResult {
    /// The exit code, 128 + N when killed by signal N, or -1 when it could not be known.
    pub exit_code: i32,
    /// The signal that killed the task, if one did.
    pub signal: Option<Signal>,
    /// Whether the kernel OOM-killed a process of the task.
    pub oom_killed: bool,
    /// What went wrong in the driver, if anything did.
    pub error: Option<TaskError>,
}

impl WaitResult {
    /// The result of a driver failure, with no exit code known.
    pub fn failed(error: TaskError) -> Self {
        Self {
            exit_code: -1,
            signal: None,
            oom_killed: false,
            error: Some(error),
        }
    }

    /// Whether the task exited 0 and nothing went wrong.
    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none() && self.error.is_none()
    }
}

impl From<ExitStatus> for WaitResult {
    fn from(s: ExitStatus) -> Self {
        Self {
            exit_code: s.exit_code,
            signal: s.signal,
            oom_killed: s.oom_killed,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signaled_exit_uses_shell_convention() {
        assert_eq!(ExitStatus::signaled(Signal::SIGKILL).exit_code, 137);
    }

    #[test]
    fn a_task_error_names_every_failed_step() {
        let mut e = TaskError::new(TaskErrorKind::SupervisorLost, "supervisor gone");
        e.cleanup_failures = vec![
            CleanupFailure {
                step: CleanupStep::KillCgroup,
                kind: PlatformErrorKind::Cgroup,
                message: "a".into(),
            },
            CleanupFailure {
                step: CleanupStep::RemoveState,
                kind: PlatformErrorKind::Io,
                message: "b".into(),
            },
        ];
        assert_eq!(
            e.to_string(),
            "supervisor gone; cleanup failed: kill cgroup: a; remove state: b"
        );
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["kind"], "supervisor_lost");
        assert_eq!(json["cleanup_failures"][0]["step"], "kill_cgroup");
    }
}
