//! `kill`: stop a task (kill signal, kill timeout, then everything) and say how it ended.

use super::context::Ctx;
use super::output::{describe_result, json, out};
use super::{Result, errln, fail, parse};

pub fn kill(ctx: &Ctx, timeout: Option<&str>, quiet: bool, as_json: bool, arg: &str) -> Result<u8> {
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
    killed?;
    if as_json {
        out(&json(&result)?)?;
    } else if !quiet {
        out(&format!("{}: {}", task.task_id(), describe_result(&result)))?;
    }
    match &result.error {
        Some(error) => Err(fail!("task {}: {error}", task.task_id())),
        None => Ok(0),
    }
}
