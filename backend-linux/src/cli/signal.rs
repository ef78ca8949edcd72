//! `signal`: for a running task only; an exited or lost one is reported as such,
//! untouched.

use execdriver_core::{Signal, TaskHandle, TaskStatus};
use execdriver_linux::LinuxPlatform;

use super::context::Ctx;
use super::output::describe_exit;
use super::{Result, fail};

/// The running task `arg` names, or a one-line reason why there is none. The probe comes
/// first so that an exited task is reported, not collected.
pub(super) fn running(ctx: &Ctx, arg: &str) -> Result<TaskHandle<LinuxPlatform>> {
    let target = ctx.target(arg)?;
    let id = target.task_id().to_owned();
    match ctx.probe(&target)? {
        TaskStatus::Running { .. } | TaskStatus::Unresponsive { .. } => ctx.open(&target),
        TaskStatus::Exited(exit) => Err(fail!("task {id} has exited ({})", describe_exit(&exit))),
        TaskStatus::Lost { reason } => Err(fail!("task {id} is lost: {reason}")),
        TaskStatus::Starting => Err(fail!("task {id} is still being started")),
        TaskStatus::Incomplete { reason } => Err(fail!("task {id} never started: {reason}")),
        other => Err(fail!("task {id} is not running: {other:?}")),
    }
}

pub fn signal(ctx: &Ctx, arg: &str, sig: &str) -> Result<u8> {
    let signal: Signal = sig.parse().map_err(|e| fail!("{e}"))?;
    running(ctx, arg)?.signal(signal)?;
    Ok(0)
}
