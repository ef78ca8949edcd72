//! `rm`: remove tasks and everything kept of them.

use super::context::Ctx;
use super::output::out;
use super::{CliError, Result, errln};

pub fn rm(ctx: &Ctx, force: bool, args: &[String]) -> Result<u8> {
    let mut failed: Option<u8> = None;
    for arg in args {
        match remove_one(ctx, force, arg) {
            Ok(task_id) => out(&task_id)?,
            Err(e) => {
                errln!("execdriver: {e}");
                failed.get_or_insert(e.code());
            }
        }
    }
    Ok(failed.unwrap_or(0))
}

fn remove_one(ctx: &Ctx, force: bool, arg: &str) -> std::result::Result<String, CliError> {
    let target = ctx.target(arg)?;
    let task_id = target.task_id().to_owned();
    let removed = ctx
        .driver()
        .remove_task(&task_id, force)
        .map_err(|e| ctx.explain(&task_id, e))?;
    // No result: an abandoned start's debris, whose alloc dir the driver cannot name.
    if removed.is_none() {
        ctx.remove_alloc(&task_id);
    }
    Ok(task_id)
}
