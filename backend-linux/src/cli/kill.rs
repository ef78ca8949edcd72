//! `kill`: stop a task (kill signal, kill timeout, then everything) and collect it.

use super::context::Ctx;
use super::{Result, errln, fail, parse};

pub fn kill(ctx: &Ctx, timeout: Option<&str>, arg: &str) -> Result<u8> {
    let timeout = timeout
        .map(|t| parse::duration(t).map_err(|e| fail!("--timeout: {e}")))
        .transpose()?;
    let target = ctx.target(arg)?;
    let task = ctx.open(&target)?;
    if let Some(timeout) = timeout {
        let effective = task.update(timeout);
        if effective < timeout {
            errln!(
                "execdriver: kill timeout capped at the task's maximum of {}",
                parse::human_duration(effective)
            );
        }
    }
    let killed = task.kill();
    let result = task.wait()?;
    let handle = task.handle_id();
    if killed.is_ok() {
        ctx.remove_alloc(&handle.task_id, Some(&handle.alloc_dir));
    }
    killed?;
    match &result.error {
        Some(error) => Err(fail!("task {}: {error}", handle.task_id)),
        None => Ok(0),
    }
}
