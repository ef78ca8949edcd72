//! The one rule for "is this supervisor alive, gone or unresponsive?".
//!
//! A call that got no answer, a socket that is missing, a log follower asking whether more
//! may come, an orphan cleanup finding a process that does not look like a supervisor: all
//! of them ask here. The answer comes from the exit record first (a supervisor that recorded
//! the exit has said everything), then from the supervisor's process, pinned by a pidfd
//! against pid reuse: only a process that is gone or dead (a zombie) with no record is lost.
//! A live one whose socket failed is not, because the driver's answer to a lost supervisor
//! is to kill the task.

use std::time::{Duration, Instant};

use execdriver_core::{ExitStatus, ProcessIdentity};

use crate::process::{self, Pidfd, ProcessError};
use crate::state::{StatePaths, exit_record};

/// How long a supervisor whose socket failed as if it were gone has to turn out dead: a
/// supervisor being killed drops its connections a moment before it is a zombie, and one
/// leaving after its linger shows an empty command line for a moment.
pub(crate) const DYING_GRACE: Duration = Duration::from_secs(1);

/// What a supervisor turned out to be.
#[derive(Debug)]
pub(crate) enum Liveness {
    /// Its exit record is there (and is this task's): the task has exited.
    Exited(ExitStatus),
    /// Its process lives (or may): it did not answer, and that is all.
    Unresponsive(String),
    /// It is dead and left no exit record: the task is lost.
    Gone(String),
    /// The exit record there belongs to another supervisor and task (a reused task id).
    NotOurs(String),
}

/// Whether the process `identity` names is dead or gone: a zombie counts, a recycled pid
/// counts as gone. `Err` when that cannot be told.
pub(crate) fn is_dead(identity: &ProcessIdentity) -> Result<bool, ProcessError> {
    match Pidfd::open_verified(identity) {
        Ok(None) => Ok(true),
        Ok(Some(pidfd)) => pidfd.wait_exit(Some(Duration::ZERO)),
        // Kernels before 5.3 have no pidfd_open: /proc tells the same, less safely.
        Err(ProcessError::Syscall { source, .. })
            if source.raw_os_error() == Some(libc::ENOSYS) =>
        {
            process::is_gone_or_dead(identity)
        }
        Err(e) => Err(e),
    }
}

/// Whether `identity` is dead, or dies within `grace` (never past `deadline`).
pub(crate) fn dies_within(
    identity: &ProcessIdentity,
    grace: Duration,
    deadline: Instant,
) -> Result<bool, ProcessError> {
    let grace = grace.min(deadline.saturating_duration_since(Instant::now()));
    match Pidfd::open_verified(identity) {
        Ok(None) => Ok(true),
        Ok(Some(pidfd)) => pidfd.wait_exit(Some(grace)),
        Err(ProcessError::Syscall { source, .. })
            if source.raw_os_error() == Some(libc::ENOSYS) =>
        {
            let until = Instant::now() + grace;
            loop {
                if process::is_gone_or_dead(identity)? {
                    return Ok(true);
                }
                if Instant::now() >= until {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(e) => Err(e),
    }
}

/// Decides what an unanswered call to the supervisor `supervisor` of `task_id` means;
/// `error` says how the call failed, for the messages. Returns by `deadline`.
pub(crate) fn settle(
    task_id: &str,
    supervisor: &ProcessIdentity,
    task: &ProcessIdentity,
    paths: &StatePaths,
    error: &dyn std::fmt::Display,
    deadline: Instant,
) -> Liveness {
    let record = match exit_record::read(&paths.exit_record()) {
        Ok(Some(record)) => {
            return match record.check(supervisor, task) {
                Ok(status) => Liveness::Exited(status),
                Err(why) => {
                    Liveness::NotOurs(format!("task {task_id}: {why}; nothing of it was touched"))
                }
            };
        }
        Ok(None) => "no exit record".to_owned(),
        Err(e) => e.to_string(),
    };
    let what = format!("supervisor {} of task {task_id}", supervisor.pid);
    match dies_within(supervisor, DYING_GRACE, deadline) {
        Ok(true) => {
            // It may have written the record on its way out.
            if let Ok(Some(record)) = exit_record::read(&paths.exit_record())
                && let Ok(status) = record.check(supervisor, task)
            {
                return Liveness::Exited(status);
            }
            Liveness::Gone(format!("{what} is gone ({error}) and left {record}"))
        }
        Ok(false) => Liveness::Unresponsive(format!("{what} is alive but did not answer: {error}")),
        Err(e) => Liveness::Unresponsive(format!(
            "{what} did not answer ({error}) and its state is unknown: {e}"
        )),
    }
}
