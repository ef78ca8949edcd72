//! `signal` and `stats`: for a running task only; an exited or lost one is reported as such,
//! untouched.

use execdriver_core::{Signal, TaskHandle, TaskStatus};
use execdriver_linux::LinuxPlatform;

use super::context::Ctx;
use super::output::{describe_exit, json, out};
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

pub fn stats(ctx: &Ctx, as_json: bool, arg: &str) -> Result<u8> {
    let task = running(ctx, arg)?;
    let stats = task.stats()?;
    if as_json {
        out(&json(&stats)?)?;
    } else {
        let m = stats.memory;
        let c = stats.cpu;
        out(&format!(
            "{}: memory rss {} cache {} swap {} max {}; cpu user {:.3}s system {:.3}s throttled {} periods {:.3}s; pids {}; logs dropped stdout {} stderr {} bytes",
            task.task_id(),
            m.rss,
            m.cache,
            m.swap,
            m.max_usage,
            c.user_ns as f64 / 1e9,
            c.system_ns as f64 / 1e9,
            c.throttled_periods,
            c.throttled_ns as f64 / 1e9,
            stats.pids,
            stats.logs.stdout_dropped_bytes,
            stats.logs.stderr_dropped_bytes
        ))?;
    }
    Ok(0)
}
