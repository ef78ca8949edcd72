//! Printing: lines on stdout that survive a closed pipe, JSON, and exit statuses.

use std::io::{self, Write};

use execdriver_core::{ExitStatus, WaitResult};
use serde::Serialize;

use super::{EXIT_DRIVER_FAILED, Result, errln, fail};

/// Prints a line to stdout; a closed stdout (`| head`) is not an error worth a message.
pub fn out(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(fail!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

/// One JSON line.
pub fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| fail!("serializing output: {e}"))
}

/// How a task ended, in words.
pub fn describe_exit(exit: &ExitStatus) -> String {
    let mut text = match exit.signal {
        Some(signal) => format!("killed by {signal}, status {}", exit.exit_code),
        None => format!("exit code {}", exit.exit_code),
    };
    if exit.oom_killed {
        text.push_str(", out of memory");
    }
    text
}

/// How a task's result reads, in words: its exit, or why there is none.
pub fn describe_result(result: &WaitResult) -> String {
    let exit = describe_exit(&ExitStatus {
        exit_code: result.exit_code,
        signal: result.signal,
        oom_killed: result.oom_killed,
    });
    match &result.error {
        Some(error) if result.exit_code < 0 => format!("failed: {error}"),
        Some(error) => format!("{exit}; {error}"),
        None => exit,
    }
}

/// The exit status for a result, with a line on stderr for what the status alone hides.
pub fn exit_code_of(task_id: &str, result: &WaitResult, explain_exec: bool) -> u8 {
    if result.oom_killed {
        errln!("execdriver: task {task_id} ran out of memory: the kernel killed it (oom)");
    }
    if let Some(error) = &result.error {
        errln!("execdriver: task {task_id}: {error}");
    }
    if explain_exec && result.signal.is_none() {
        match result.exit_code {
            126 => errln!(
                "execdriver: task {task_id} exited with 126: the command could not be executed"
            ),
            127 => {
                errln!("execdriver: task {task_id} exited with 127: the command was not found")
            }
            _ => {}
        }
    }
    u8::try_from(result.exit_code).unwrap_or(EXIT_DRIVER_FAILED)
}

#[cfg(test)]
mod tests {
    use execdriver_core::{Signal, TaskError, TaskErrorKind};

    use super::*;

    #[test]
    fn exit_codes() {
        let ok = WaitResult::from(ExitStatus::code(3));
        assert_eq!(exit_code_of("t", &ok, false), 3);
        let killed = WaitResult::from(ExitStatus::signaled(Signal::SIGKILL));
        assert_eq!(exit_code_of("t", &killed, false), 137);
        let failed = WaitResult::failed(TaskError::new(TaskErrorKind::SupervisorLost, "x"));
        assert_eq!(exit_code_of("t", &failed, false), 125);
    }
}
