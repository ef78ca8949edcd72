//! The `execdriver` command line: a thin face over `Driver<LinuxPlatform>`, one file per
//! command. It calls no platform, protocol or record function itself: what it needs of a
//! task (finding it by id, its liveness, its logs) is Driver API, shared with every face.
//!
//! `run` and `start` prepare an alloc dir under `<data dir>/allocs/<task id>/` (the task dir
//! is `<alloc dir>/<task name>`). A task is kept after its exit (spec, exit record, logs,
//! alloc dir) until `rm`, `run --rm` or `prune` removes it through the driver.

mod args;
mod attach;
mod context;
mod docs;
mod exec;
mod fingerprint;
mod follow;
mod inspect;
mod kill;
mod list;
mod logs;
mod output;
mod parse;
mod prune;
mod rm;
mod run;
mod signal;
mod spec;
mod stats;
mod status;
mod terminal;
mod wait;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
use args::Command;
use context::Ctx;

/// Exit status when execdriver itself failed or refused its input.
pub const EXIT_DRIVER_FAILED: u8 = 125;
/// Exit status of `wait --timeout` when the task still runs (or its supervisor does not
/// answer in time).
pub const EXIT_STILL_RUNNING: u8 = 124;

/// Exit status when the task named does not exist (or was removed), as `docker inspect`
/// gives for an unknown container.
pub const EXIT_NO_SUCH_TASK: u8 = 1;

/// A failure of a command, printed as one line, and the exit status it gives.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// A failure of execdriver itself or of its input: status 125.
    pub fn new(message: String) -> Self {
        Self {
            message,
            code: EXIT_DRIVER_FAILED,
        }
    }

    /// The exit status this failure gives.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The task named is not there: status 1.
    pub fn no_such_task(message: String) -> Self {
        Self {
            message,
            code: EXIT_NO_SUCH_TASK,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<execdriver_core::DriverError> for CliError {
    fn from(e: execdriver_core::DriverError) -> Self {
        use execdriver_core::{DriverError, PlatformError, Refusal};
        let gone = matches!(
            &e,
            DriverError::NotFound { .. }
                | DriverError::ReattachRefused {
                    source: PlatformError::Refused {
                        kind: Refusal::Collected,
                        ..
                    },
                    ..
                }
        );
        if gone {
            Self::no_such_task(e.to_string())
        } else {
            Self::new(e.to_string())
        }
    }
}

macro_rules! from_error {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                Self::new(e.to_string())
            }
        }
    )*};
}
from_error!(
    std::io::Error,
    execdriver_linux::AllocDirError,
    execdriver_core::SpecError,
    execdriver_core::HandleError,
    serde_json::Error,
);

/// What a command returns.
type Result<T> = std::result::Result<T, CliError>;

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
    ($($arg:tt)*) => { $crate::cli::CliError::new(format!($($arg)*)) };
}
pub(crate) use fail;

/// Parses the command line, runs the command, and turns the outcome into an exit status.
pub fn main() -> ExitCode {
    // The supervisor's own command line, as the platform starts it, skips clap: building the
    // whole command tree is most of what the supervisor's start would spend before its work.
    if let Some(code) = execdriver_linux::supervise_main() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers (0); every usage error is execdriver refusing its
            // input, 125 as docker and podman give.
            return if e.use_stderr() {
                ExitCode::from(EXIT_DRIVER_FAILED)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Command::Supervise {
        state_dir,
        linger_ms,
        start_lock_fd,
    } = &cli.command
    {
        execdriver_linux::set_supervisor_panic_hook();
        let options = execdriver_linux::SuperviseOptions::new(state_dir)
            .with_slice(cli.slice.clone())
            .with_linger(std::time::Duration::from_millis(*linger_ms))
            .with_start_lock_fd(*start_lock_fd);
        let code = execdriver_linux::supervise(&options);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    std::panic::set_hook(Box::new(|info| {
        errln!(
            "execdriver: internal error: {}",
            execdriver_linux::panic_message(info)
        );
        std::process::exit(i32::from(EXIT_DRIVER_FAILED));
    }));
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("execdriver: {e}");
            ExitCode::from(e.code)
        }
    }
}

/// Runs the parsed command; `Ok` carries the exit status.
fn dispatch(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(cli.data_dir, cli.cgroup_parent, cli.slice);
    match cli.command {
        Command::Run(opts) => run::run(&ctx, &opts),
        Command::Start(opts) => run::start(&ctx, &opts),
        Command::Wait {
            timeout,
            json,
            handle,
        } => wait::wait(&ctx, timeout.as_deref(), json, &handle),
        Command::Kill {
            timeout,
            quiet,
            json,
            handle,
        } => kill::kill(&ctx, timeout.as_deref(), quiet, json, &handle),
        Command::Status { json, handle } => status::status(&ctx, json, &handle),
        Command::Signal { handle, signal } => signal::signal(&ctx, &handle, &signal),
        Command::Exec(opts) => exec::exec(&ctx, opts),
        Command::Attach(opts) => attach::attach(&ctx, &opts),
        Command::Stats(opts) => stats::stats(&ctx, &opts),
        Command::Logs(opts) => logs::logs(&ctx, &opts),
        Command::List { json } => list::list(&ctx, json),
        Command::Rm { force, tasks } => rm::rm(&ctx, force, &tasks),
        Command::Prune { until } => prune::prune(&ctx, until.as_deref()),
        Command::Inspect { handle } => inspect::inspect(&ctx, &handle),
        Command::Fingerprint { json } => fingerprint::fingerprint(&ctx, json),
        Command::Completion { shell } => docs::completion(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
        // Handled before dispatch: it must not install the CLI's panic hook.
        Command::Supervise { .. } => Err(fail!("supervise is handled by main")),
    }
}
