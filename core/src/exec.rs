//! Running a command inside a running task: what is asked ([`ExecRequest`]) and what a
//! platform hands back ([`ExecStarted`], [`ExecSession`]).
//!
//! The command joins the task as the task itself was set up: its namespaces, cgroup, root,
//! user and groups, capabilities, no_new_privs, seccomp filter and environment (plus the
//! request's). It is accounted to the task and ends with it.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::OwnedFd;

use crate::outcome::ExitStatus;
use crate::platform::{PlatformError, Timestamp};
use crate::signal::Signal;

/// Where an exec'd command's standard streams go when it has no terminal; `None` is
/// `/dev/null`.
#[derive(Debug, Default)]
pub struct ExecStdio {
    /// Its stdin.
    pub stdin: Option<OwnedFd>,
    /// Its stdout.
    pub stdout: Option<OwnedFd>,
    /// Its stderr.
    pub stderr: Option<OwnedFd>,
}

/// A command to run in a running task.
#[derive(Debug, Default)]
pub struct ExecRequest {
    /// The program, looked up in the task's PATH when it has no `/`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the task's environment (they win over the task's own).
    pub env: BTreeMap<String, String>,
    /// The working directory inside the task's root; `None`: `/`, as for the task.
    pub cwd: Option<String>,
    /// A terminal: the command gets a new pseudo-terminal of the task's own as its
    /// controlling terminal and stdin, stdout and stderr; `stdio` is then unused and the
    /// master is in [`ExecStarted::pty`].
    pub tty: bool,
    /// With `tty`: the terminal's size (rows, columns), set before the command starts so
    /// that its first look at it is right.
    pub window_size: Option<(u16, u16)>,
    /// The standard streams when there is no terminal.
    pub stdio: ExecStdio,
}

impl ExecRequest {
    /// A request to run `command` with `args`, without a terminal, streams on /dev/null.
    pub fn new(command: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            command: command.into(),
            args,
            ..Self::default()
        }
    }

    /// Checks what can be checked without the task: a command is given, no string has a nul
    /// byte, env keys are names, the working dir is absolute.
    pub fn validate(&self) -> Result<(), String> {
        if self.command.trim().is_empty() {
            return Err("no command given to exec".to_owned());
        }
        let nul = |what: String, s: &str| {
            if s.contains('\0') {
                Err(format!("{what} contains a nul byte"))
            } else {
                Ok(())
            }
        };
        nul("the command".to_owned(), &self.command)?;
        for (i, arg) in self.args.iter().enumerate() {
            nul(format!("argument {}", i + 1), arg)?;
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') {
                return Err(format!(
                    "environment variable name {key:?} is empty or contains '='"
                ));
            }
            nul(format!("environment variable {key:?}"), key)?;
            nul(format!("environment variable {key:?}"), value)?;
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') {
                return Err(format!(
                    "working dir {cwd:?} must be an absolute path inside the task's root"
                ));
            }
            nul("the working dir".to_owned(), cwd)?;
        }
        Ok(())
    }
}

/// How an exec'd command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecExit {
    /// Its status: exit code, or 128 + N when killed by signal N; 126 when the command
    /// could not be run, 127 when it was not found.
    pub status: ExitStatus,
    /// Why the command could not be run, when it could not (the status is then 126 or 127).
    pub failure: Option<String>,
}

/// A command running in a task, as a platform started it.
pub trait ExecSession: Send + Sync + fmt::Debug {
    /// Waits for the command to end until `until` (forever if `None`); `Ok(None)` when it
    /// still runs at `until`.
    fn wait(&self, until: Option<Timestamp>) -> Result<Option<ExecExit>, PlatformError>;

    /// Sends `signal` to the command (not to the task); nothing when it has ended.
    fn signal(&self, signal: Signal) -> Result<(), PlatformError>;
}

/// What [`crate::Platform::exec`] started.
#[derive(Debug)]
pub struct ExecStarted {
    /// The running command.
    pub session: Box<dyn ExecSession>,
    /// The master side of its terminal, when one was asked for: write its input here, read
    /// its output, set its window size.
    pub pty: Option<OwnedFd>,
}
