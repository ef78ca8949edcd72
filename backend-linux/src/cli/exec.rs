//! `exec`: a command in a running task, its status ours (docker exec's convention).
//!
//! Without `-t` the command writes straight to our stdout and stderr (and reads our stdin
//! with `-i`). With `-t` it gets a new terminal in the task's own devpts, whose master we
//! hold: its output is copied to our stdout, our stdin (with `-i`) to it, our window size to
//! it at the start and on every SIGWINCH, and our terminal, if stdin is one, is in raw mode
//! while attached and restored after, on errors too. SIGINT, SIGTERM and SIGHUP reaching us
//! are passed on to the command.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread;

use execdriver_core::{ExecExit, ExecRequest, ExecSession, ExecStdio, Signal};
use execdriver_linux::exec_io::copy_output;
use nix::sys::signal::{SigSet, Signal as NixSignal};
use rustix::termios;

use super::args::ExecOptions;
use super::context::Ctx;
use super::signal::running;
use super::terminal::{RawMode, copy_window_size, pump_input};
use super::{Result, errln, fail};

/// `-e K=V`, or `-e K` for our own value of K (left out when we have none).
fn parse_env(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some(("", _)) => {
                return Err(fail!("-e {item:?}: the variable name is empty"));
            }
            Some((key, value)) => {
                env.insert(key.to_owned(), value.to_owned());
            }
            None => {
                if let Some(value) = std::env::var_os(item) {
                    env.insert(item.clone(), value.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(env)
}

fn dup(fd: BorrowedFd<'_>, what: &str) -> Result<OwnedFd> {
    fd.try_clone_to_owned()
        .map_err(|e| fail!("duplicating our {what}: {e}"))
}

/// Passes SIGINT, SIGTERM and SIGHUP on to the command, and SIGWINCH to its terminal.
fn watch_signals(signals: SigSet, session: Arc<dyn ExecSession>, master: Option<Arc<OwnedFd>>) {
    let spawned = thread::Builder::new()
        .name("exec-signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                if sig == NixSignal::SIGWINCH {
                    if let Some(master) = &master {
                        copy_window_size(master.as_fd());
                    }
                    continue;
                }
                if let Ok(signal) = Signal::new(sig as i32) {
                    let _ = session.signal(signal);
                }
            }
        });
    if let Err(e) = spawned {
        errln!("execdriver: signals will not reach the command: {e}");
    }
}

/// Copies the terminal's output to our stdout (see [`copy_output`]).
fn pump_output(master: &OwnedFd, done: &OwnedFd) {
    let mut stdout = io::stdout();
    copy_output(master.as_fd(), done.as_fd(), &mut |data| {
        stdout.write_all(data).and_then(|()| stdout.flush()).is_ok()
    });
}

pub fn exec(ctx: &Ctx, opts: ExecOptions) -> Result<u8> {
    // Blocked before any thread exists, so that only the signal thread receives them.
    let mut signals = SigSet::empty();
    for s in [
        NixSignal::SIGINT,
        NixSignal::SIGTERM,
        NixSignal::SIGHUP,
        NixSignal::SIGWINCH,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| fail!("blocking signals: {e}"))?;
    let env = parse_env(&opts.env)?;
    let task = running(ctx, &opts.handle)?;
    let mut argv = opts.command.into_iter();
    let command = argv
        .next()
        .ok_or_else(|| fail!("no command given after --"))?;
    let stdio = if opts.tty {
        ExecStdio::default()
    } else {
        ExecStdio {
            stdin: opts
                .interactive
                .then(|| dup(io::stdin().as_fd(), "stdin"))
                .transpose()?,
            stdout: Some(dup(io::stdout().as_fd(), "stdout")?),
            stderr: Some(dup(io::stderr().as_fd(), "stderr")?),
        }
    };
    let started = task.exec(ExecRequest {
        command,
        args: argv.collect(),
        env,
        cwd: opts.workdir,
        tty: opts.tty,
        window_size: opts
            .tty
            .then(|| termios::tcgetwinsize(io::stdin().as_fd()).ok())
            .flatten()
            .map(|size| (size.ws_row, size.ws_col)),
        stdio,
    })?;
    let session: Arc<dyn ExecSession> = Arc::from(started.session);
    let exit = match started.pty {
        None => {
            watch_signals(signals, Arc::clone(&session), None);
            session.wait(None)
        }
        Some(master) => {
            let master = Arc::new(master);
            copy_window_size(master.as_fd());
            watch_signals(signals, Arc::clone(&session), Some(Arc::clone(&master)));
            let stdin = io::stdin();
            let raw = if opts.interactive {
                RawMode::enter(stdin.as_fd())?
            } else {
                None
            };
            if opts.interactive {
                pump_input(Arc::clone(&master), None);
            }
            let (done_r, done_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| fail!("creating a pipe: {e}"))?;
            let exit = thread::scope(|scope| {
                let output = scope.spawn(|| pump_output(&master, &done_r));
                let exit = session.wait(None);
                let _ = rustix::io::write(&done_w, b"x");
                let _ = output.join();
                exit
            });
            drop(raw);
            exit
        }
    };
    let exit = exit
        .map_err(|e| fail!("waiting for the command in task {}: {e}", task.task_id()))?
        .ok_or_else(|| fail!("waiting for the command returned without its exit"))?;
    report(&exit)
}

fn report(exit: &ExecExit) -> Result<u8> {
    if let Some(failure) = &exit.failure {
        errln!("{failure}");
    }
    Ok(u8::try_from(exit.status.exit_code).unwrap_or(u8::MAX))
}
