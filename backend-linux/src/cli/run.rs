//! `run` (start, follow the output, wait, exit with the task's status) and `start` (start in
//! the background and print the handle id).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use execdriver_core::{LogStream, TaskHandle};
use execdriver_linux::{AllocDir, LinuxPlatform};

use super::args::{RunOptions, TaskOptions};
use super::context::Ctx;
use super::follow::{BrokenPipeTolerant, Follower};
use super::output::{exit_code_of, out};
use super::terminal::{RawMode, copy_window_size, pump_input};
use super::{Result, errln, fail, spec};

/// Builds the spec, makes its alloc dir, and starts the task.
fn start_task(ctx: &Ctx, opts: &TaskOptions) -> Result<TaskHandle<LinuxPlatform>> {
    let spec = spec::build(ctx, opts)?;
    let alloc = AllocDir::create(&ctx.data_dir, &spec.task_id, &spec.task_name)?;
    match ctx.driver().start(&spec) {
        Ok(handle) => Ok(handle),
        Err(e) => {
            if let Err(rm) = AllocDir::remove(alloc.dir()) {
                errln!("execdriver: {rm}");
            }
            Err(e.into())
        }
    }
}

/// `--dry-run`: the resolved spec, as `--spec` reads it back; nothing is created.
fn dry_run(ctx: &Ctx, opts: &TaskOptions) -> Result<u8> {
    let spec = spec::build(ctx, opts)?;
    out(&serde_json::to_string_pretty(&spec)?)?;
    Ok(0)
}

pub fn start(ctx: &Ctx, opts: &TaskOptions) -> Result<u8> {
    if opts.dry_run {
        return dry_run(ctx, opts);
    }
    let handle = start_task(ctx, opts)?;
    out(&handle.id())?;
    Ok(0)
}

pub fn run(ctx: &Ctx, run_opts: &RunOptions) -> Result<u8> {
    let opts = &run_opts.task;
    if opts.dry_run {
        return dry_run(ctx, opts);
    }
    // Blocked before any thread exists so that every thread inherits the mask and only the
    // signal thread below receives them; the supervisor gets a clean mask from exec.
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGHUP,
        nix::sys::signal::SIGWINCH,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| fail!("blocking signals: {e}"))?;
    let handle = Arc::new(start_task(ctx, opts)?);
    let master = opts.tty.then(|| attach(&handle)).flatten();
    watch_signals(&handle, signals, master.clone());
    // Raw mode only while our input goes to the task: without -i, Ctrl-C stays ours and
    // kills the task as for any `run`.
    let stdin = io::stdin();
    let raw = match &master {
        Some(master) if opts.interactive => {
            let raw = RawMode::enter(stdin.as_fd()).unwrap_or_else(|e| {
                errln!("execdriver: {e}; our input is passed on as the terminal gives it");
                None
            });
            pump_input(Arc::clone(master), None);
            raw
        }
        _ => None,
    };
    // The followers copy the output while the task runs; this thread waits for the exit
    // (which the supervisor records only once the task's pipes are drained into the log
    // files) and then tells them to drain once more and stop, so a short task's `run` ends
    // when the task does, not at the followers' next look. The task is kept after its exit
    // (logs, exit record) until `rm`, or `--rm` below.
    let done = AtomicBool::new(false);
    let (result, stderr_bytes) = thread::scope(|scope| {
        let follow = |stream: LogStream| {
            let task = Arc::clone(&handle);
            let done = &done;
            thread::Builder::new()
                .name(format!("follow-{}", stream.as_str()))
                .spawn_scoped(scope, move || {
                    let read = |cursor, max| task.read_logs(stream, cursor, max);
                    let mut follower = Follower::new(&read, stream);
                    let followed = match stream {
                        LogStream::Stdout => follower.follow(
                            &mut BrokenPipeTolerant {
                                inner: io::stdout(),
                            },
                            Some(done),
                        ),
                        LogStream::Stderr => follower.follow(
                            &mut BrokenPipeTolerant {
                                inner: io::stderr(),
                            },
                            Some(done),
                        ),
                    };
                    if let Err(e) = followed {
                        errln!("execdriver: following the task's {}: {e}", stream.as_str());
                    }
                    follower.copied
                })
        };
        let threads: Vec<_> = [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .map(|stream| (stream, follow(stream)))
            .collect();
        let result = handle.wait();
        done.store(true, Ordering::Release);
        let mut stderr_bytes = 0;
        for (stream, thread) in threads {
            match thread {
                Ok(thread) => {
                    thread.thread().unpark();
                    let copied = thread.join().unwrap_or(0);
                    if stream == LogStream::Stderr {
                        stderr_bytes = copied;
                    }
                }
                // The task runs on; its output is still in the log files.
                Err(e) => errln!(
                    "execdriver: cannot follow the task's {} (see `execdriver logs`): {e}",
                    stream.as_str()
                ),
            }
        }
        (result, stderr_bytes)
    });
    drop(raw);
    // Only an exited task is removed: after a failed wait the task may still run (and
    // `wait <task id>` can collect it later).
    let result = result?;
    // A task with a terminal says why its exec failed on the terminal, so in the stdout log.
    let explain = stderr_bytes == 0 && !opts.tty;
    let code = exit_code_of(handle.task_id(), &result, explain);
    if run_opts.rm {
        handle.remove(false)?;
    }
    Ok(code)
}

/// The master of the task's terminal (`run -t`), with our window size set on it; `None`
/// (said why) when it cannot be had: the task runs on and its output still shows.
fn attach(handle: &TaskHandle<LinuxPlatform>) -> Option<Arc<OwnedFd>> {
    match handle.terminal() {
        Ok(master) => {
            copy_window_size(master.as_fd());
            Some(Arc::new(master))
        }
        // A task that is done already has nothing to type into: its output still shows.
        Err(_) if matches!(handle.wait_timeout(std::time::Duration::ZERO), Ok(Some(_))) => None,
        Err(e) => {
            errln!("execdriver: {e}; its output shows, our input and window size do not reach it");
            None
        }
    }
}

/// Ctrl-C, SIGTERM or SIGHUP kill the task gracefully, from a thread of their own; a
/// second one, acknowledged at once, forces it: SIGKILL to the task's init, which takes
/// everything in its PID namespace down, while the graceful kill goes on to collect it.
/// SIGWINCH passes our window size on to the task's terminal, if it has one.
fn watch_signals(
    handle: &Arc<TaskHandle<LinuxPlatform>>,
    signals: nix::sys::signal::SigSet,
    master: Option<Arc<OwnedFd>>,
) {
    let watched = Arc::clone(handle);
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let handle = watched;
            let mut received = 0u32;
            while let Ok(sig) = signals.wait() {
                if sig == nix::sys::signal::SIGWINCH {
                    if let Some(master) = &master {
                        copy_window_size(master.as_fd());
                    }
                    continue;
                }
                received += 1;
                match received {
                    1 => {
                        errln!(
                            "execdriver: {sig} received: killing task {} (press Ctrl-C again to \
                             kill it at once)",
                            handle.task_id()
                        );
                        // The graceful kill blocks for up to the kill timeout: off this
                        // thread, so a second signal is read meanwhile.
                        let killer = Arc::clone(&handle);
                        let started = thread::Builder::new().name("kill".into()).spawn(move || {
                            if let Err(e) = killer.kill() {
                                errln!("execdriver: killing task {}: {e}", killer.task_id());
                            }
                        });
                        if let Err(e) = started {
                            errln!("execdriver: cannot start the kill ({e}); killing at once");
                            force(&handle);
                        }
                    }
                    2 => {
                        errln!(
                            "execdriver: {sig} received again: killing task {} now (SIGKILL)",
                            handle.task_id()
                        );
                        force(&handle);
                    }
                    _ => errln!("execdriver: {sig} received again; the task is being killed"),
                }
            }
        });
    if let Err(e) = spawned {
        // With the signals blocked and nobody waiting for them, Ctrl-C would do nothing:
        // a foreground task nobody can stop is worse than no task.
        errln!(
            "execdriver: cannot watch for Ctrl-C ({e}): killing task {}",
            handle.task_id()
        );
        if let Err(e) = handle.kill() {
            errln!("execdriver: killing task {}: {e}", handle.task_id());
        }
    }
}

/// SIGKILL through the task's signal path: its init takes the whole PID namespace down.
fn force(handle: &TaskHandle<LinuxPlatform>) {
    if let Err(e) = handle.signal(execdriver_core::Signal::SIGKILL) {
        errln!("execdriver: force-killing task {}: {e}", handle.task_id());
    }
}
