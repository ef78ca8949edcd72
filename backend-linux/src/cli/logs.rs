//! `logs`: print a task's stdout or stderr, and with `-f` keep printing until it exits.

use std::io;

use execdriver_core::LogStream;

use super::context::Ctx;
use super::follow::{BrokenPipeTolerant, Follower};
use super::{Result, errln};

pub fn logs(ctx: &Ctx, stderr: bool, follow: bool, arg: &str) -> Result<u8> {
    let target = ctx.target(arg)?;
    let handle = ctx.handle_of(&target)?;
    let stream = if stderr {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    let mut sink = BrokenPipeTolerant {
        inner: io::stdout().lock(),
    };
    let read = |cursor, max| ctx.driver().read_logs(&handle, stream, cursor, max);
    let mut follower = Follower::new(&read, stream);
    if !follow {
        follower.poll(&mut sink)?;
        return Ok(0);
    }
    follower.follow(&mut sink, None)?;
    if matches!(
        ctx.driver().probe(&handle),
        Ok(execdriver_core::TaskStatus::Lost { .. })
    ) {
        errln!(
            "execdriver: supervisor {} of task {} is gone and left no exit record; no more output will come",
            handle.supervisor.process.pid,
            handle.task_id
        );
    }
    Ok(0)
}
