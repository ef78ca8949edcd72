//! `status`: what is known of a task, from the driver's one liveness rule; nothing is
//! changed.

use execdriver_core::{ExitStatus, TaskStatus};
use serde::Serialize;

use super::Result;
use super::context::Ctx;
use super::output::{describe_exit, json, out};

#[derive(Serialize)]
struct Report {
    task_id: String,
    state: &'static str,
    supervisor_pid: Option<i32>,
    task_pid: Option<i32>,
    exit: Option<ExitStatus>,
    reason: Option<String>,
}

impl Report {
    fn new(task_id: String, status: &TaskStatus) -> Self {
        let mut report = Self {
            task_id,
            state: "running",
            supervisor_pid: None,
            task_pid: None,
            exit: None,
            reason: None,
        };
        match status {
            TaskStatus::Running {
                supervisor_pid,
                task_pid,
            } => {
                report.supervisor_pid = Some(*supervisor_pid);
                report.task_pid = Some(*task_pid);
            }
            TaskStatus::Exited(exit) => {
                report.state = "exited";
                report.exit = Some(*exit);
            }
            TaskStatus::Unresponsive { reason } => {
                report.state = "unresponsive";
                report.reason = Some(reason.clone());
            }
            TaskStatus::Lost { reason } => {
                report.state = "lost";
                report.reason = Some(reason.clone());
            }
            TaskStatus::Starting => report.state = "starting",
            TaskStatus::Incomplete { reason } => {
                report.state = "incomplete";
                report.reason = Some(reason.clone());
            }
            _ => report.state = "unknown",
        }
        report
    }

    fn detail(&self) -> String {
        match (&self.exit, &self.reason, self.supervisor_pid, self.task_pid) {
            (Some(exit), _, _, _) => describe_exit(exit),
            (None, Some(reason), _, _) => reason.clone(),
            (None, None, Some(sup), Some(task)) => {
                format!("supervisor pid {sup}, task pid {task}")
            }
            _ => String::new(),
        }
    }
}

pub fn status(ctx: &Ctx, as_json: bool, arg: &str) -> Result<u8> {
    let target = ctx.target(arg)?;
    let report = Report::new(target.task_id().to_owned(), &ctx.probe(&target)?);
    if as_json {
        out(&json(&report)?)?;
    } else {
        out(&format!(
            "{}: {} ({})",
            report.task_id,
            report.state,
            report.detail()
        ))?;
    }
    Ok(0)
}
