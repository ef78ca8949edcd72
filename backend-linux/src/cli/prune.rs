//! `prune`: remove every exited task, or those started longer ago than `--until`.

use std::time::SystemTime;

use super::context::Ctx;
use super::list::rows;
use super::output::out;
use super::{Result, errln, fail, parse};

pub fn prune(ctx: &Ctx, until: Option<&str>) -> Result<u8> {
    let until = until
        .map(|t| parse::duration(t).map_err(|e| fail!("--until: {e}")))
        .transpose()?;
    let now = SystemTime::now();
    let mut code = 0;
    for row in rows(ctx)? {
        if !row.has_exited() {
            continue;
        }
        // A task of unknown age is kept when an age is asked for: it may be recent.
        if let Some(until) = until
            && row.age(now).is_none_or(|age| age < until)
        {
            continue;
        }
        match ctx.driver().remove_task(&row.task_id, false) {
            Ok(_) => out(&row.task_id)?,
            Err(e) => {
                errln!("execdriver: {e}");
                code = super::EXIT_DRIVER_FAILED;
            }
        }
    }
    Ok(code)
}
