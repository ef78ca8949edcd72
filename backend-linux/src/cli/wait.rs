//! `wait`: wait for a task's exit; the task is kept, so asking again answers the same.

use execdriver_core::{DriverError, PlatformError};

use super::context::Ctx;
use super::output::{exit_code_of, json, out};
use super::{EXIT_STILL_RUNNING, Result, errln, fail, parse};

pub fn wait(ctx: &Ctx, timeout: Option<&str>, as_json: bool, arg: &str) -> Result<u8> {
    let timeout = timeout
        .map(|t| parse::duration(t).map_err(|e| fail!("--timeout: {e}")))
        .transpose()?;
    let target = ctx.target(arg)?;
    let task = ctx.open(&target)?;
    let waited = match timeout {
        None => task.wait().map(Some),
        Some(timeout) => task.wait_timeout(timeout),
    };
    let result = match waited {
        Ok(Some(result)) => result,
        Ok(None) => {
            errln!(
                "execdriver: task {} still runs after {}",
                task.task_id(),
                timeout.map(parse::human_duration).unwrap_or_default()
            );
            return Ok(EXIT_STILL_RUNNING);
        }
        // Unresponsive is not gone: the task may well run on, as with a timeout.
        Err(DriverError::Platform {
            source: source @ PlatformError::Unresponsive { .. },
            ..
        }) if timeout.is_some() => {
            errln!("execdriver: task {}: {source}", task.task_id());
            return Ok(EXIT_STILL_RUNNING);
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        out(&json(&result)?)?;
    }
    Ok(exit_code_of(task.task_id(), &result, true))
}
