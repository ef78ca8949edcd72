//! The `execdriver` command line: thin commands over `Driver<LinuxPlatform>`.
//!
//! `run` and `start` prepare an alloc dir under `<data dir>/allocs/<task id>/` (the task dir
//! is `<alloc dir>/<task name>`), which is removed once the task's result is collected by
//! `run`, `wait` or `kill`. `start` stores the handle id in the task's state dir so that the
//! task id alone finds it again.

mod args;
mod follow;
mod parse;
mod tasks;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Exit status when execdriver itself failed or refused its input.
pub const EXIT_DRIVER_FAILED: u8 = 125;
/// Exit status of `wait --timeout` when the task still runs.
pub const EXIT_STILL_RUNNING: u8 = 124;

/// A failure of a command, printed as one line.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// Writes one line to stderr, ignoring failure: stderr may be a closed pipe or a full disk,
/// and `eprintln!` would panic there, turning a warning into an internal error.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use errln;

/// Builds a [`CliError`] from a format string.
macro_rules! fail {
    ($($arg:tt)*) => { $crate::cli::CliError(format!($($arg)*)) };
}
pub(crate) use fail;

/// Parses the command line, runs the command, and turns the outcome into an exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if let args::Command::Supervise {
        state_dir,
        linger_ms,
    } = &cli.command
    {
        // A bug in one connection thread must not take the task down with the supervisor:
        // note it in the supervisor log, without a backtrace, and let the thread end.
        std::panic::set_hook(Box::new(|info| {
            errln!("supervisor: internal error: {}", one_line(info));
        }));
        let options = execdriver_linux::supervisor::SuperviseOptions {
            state_dir: state_dir.clone(),
            cgroup_parent: cli.cgroup_parent.clone(),
            linger: std::time::Duration::from_millis(*linger_ms),
        };
        let code = execdriver_linux::supervisor::run(&options);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    std::panic::set_hook(Box::new(|info| {
        errln!("execdriver: internal error: {}", one_line(info));
        std::process::exit(i32::from(EXIT_DRIVER_FAILED));
    }));
    match tasks::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("execdriver: {e}");
            ExitCode::from(EXIT_DRIVER_FAILED)
        }
    }
}

fn one_line(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    match info.location() {
        Some(l) => format!("{payload} at {}:{}", l.file(), l.line()).replace('\n', " "),
        None => payload.replace('\n', " "),
    }
}
