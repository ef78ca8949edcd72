//! `attach`: our terminal on the terminal of a task started with `-t`, as `docker attach`:
//! the task's output from now on, our keys typed into it (our terminal in raw mode), our
//! window size followed, until the task exits (its status is then ours) or Ctrl-P Ctrl-Q
//! detaches (the task runs on; 0).

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use execdriver_core::{LogStart, LogStream, WaitResult};
use nix::sys::signal::{SigSet, Signal as NixSignal};

use super::args::AttachOptions;
use super::context::Ctx;
use super::follow::{BrokenPipeTolerant, Follower};
use super::output::exit_code_of;
use super::signal::running;
use super::terminal::{RawMode, copy_window_size, pump_input};
use super::{Result, errln, fail};

/// What ends an attach.
enum End {
    Exited(std::result::Result<WaitResult, execdriver_core::DriverError>),
    Detached,
}

pub fn attach(ctx: &Ctx, opts: &AttachOptions) -> Result<u8> {
    // Blocked before any thread exists, so that only the thread below receives it.
    let mut winch = SigSet::empty();
    winch.add(NixSignal::SIGWINCH);
    winch
        .thread_block()
        .map_err(|e| fail!("blocking SIGWINCH: {e}"))?;
    let task = Arc::new(running(ctx, &opts.handle)?);
    let details = ctx.driver().details(&task.handle_id())?;
    if details.spec.tty.is_none() {
        return Err(fail!(
            "task {} has no terminal: attach is for a task started with -t (`execdriver logs -f \
             {}` follows any task's output)",
            task.task_id(),
            opts.handle
        ));
    }
    let master = task.terminal()?;
    let master = Arc::new(master);
    copy_window_size(master.as_fd());
    {
        let master = Arc::clone(&master);
        let spawned = thread::Builder::new().name("winch".into()).spawn(move || {
            while winch.wait().is_ok() {
                copy_window_size(master.as_fd());
            }
        });
        if let Err(e) = spawned {
            errln!("execdriver: the task's window size will not follow ours: {e}");
        }
    }
    // What the task writes from now on; what it wrote before is for `logs`.
    let cursor = task.log_start(
        LogStream::Stdout,
        LogStart {
            tail: Some(0),
            since_unix_nanos: None,
        },
    )?;
    let (tx, ended) = mpsc::channel();
    let stdin = io::stdin();
    let raw = if opts.no_stdin {
        None
    } else {
        let raw = RawMode::enter(stdin.as_fd())?;
        let detached = tx.clone();
        pump_input(
            Arc::clone(&master),
            Some(Box::new(move || {
                let _ = detached.send(End::Detached);
            })),
        );
        raw
    };
    {
        let task = Arc::clone(&task);
        thread::Builder::new()
            .name("wait".into())
            .spawn(move || {
                let _ = tx.send(End::Exited(task.wait()));
            })
            .map_err(|e| fail!("cannot wait for the task: {e}"))?;
    }
    let done = AtomicBool::new(false);
    let end = thread::scope(|scope| {
        let follower = thread::Builder::new()
            .name("follow".into())
            .spawn_scoped(scope, || {
                let read = |cursor, max| task.read_logs(LogStream::Stdout, cursor, max);
                let mut follower = Follower::starting_at(&read, LogStream::Stdout, cursor);
                let mut out = BrokenPipeTolerant {
                    inner: io::stdout(),
                };
                if let Err(e) = follower.follow(&mut out, Some(&done)) {
                    errln!("execdriver: following the task's output: {e}");
                }
            });
        let end = ended.recv().ok();
        done.store(true, Ordering::Release);
        if let Ok(follower) = follower {
            follower.thread().unpark();
            let _ = follower.join();
        }
        end
    });
    drop(raw);
    match end {
        Some(End::Detached) => {
            errln!(
                "execdriver: detached from task {}; it runs on",
                task.task_id()
            );
            Ok(0)
        }
        Some(End::Exited(result)) => Ok(exit_code_of(task.task_id(), &result?, false)),
        None => Err(fail!("lost track of task {}", task.task_id())),
    }
}
