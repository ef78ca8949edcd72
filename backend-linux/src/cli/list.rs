//! `list` (`ps`): every task of the data dir as a table or JSON. Tasks are probed in
//! parallel by a few threads, and the whole list is bounded in time: a task whose probe has
//! not answered by then is shown as unresponsive, so one stuck supervisor cannot stall it.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use execdriver_core::{Driver, ExitStatus, TaskStatus};
use execdriver_linux::LinuxPlatform;
use serde::Serialize;

use super::context::Ctx;
use super::output::{json, out};
use super::{Result, errln};

/// Most tasks probed at once.
const PROBE_THREADS: usize = 8;
/// The longest a whole list may take.
pub const LIST_BOUND: Duration = Duration::from_secs(5);
/// Widest COMMAND shown in the table.
const COMMAND_WIDTH: usize = 30;

/// One task as `list` shows it; the JSON field names are stable.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Its unique name, if it has one.
    pub name: Option<String>,
    pub task_id: String,
    /// running, exited, unresponsive, lost, starting, incomplete or error.
    pub state: &'static str,
    pub exit: Option<ExitStatus>,
    pub reason: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// When it was started, RFC 3339 (UTC).
    pub created: Option<String>,
    pub created_unix_ms: Option<u64>,
    pub supervisor_pid: Option<i32>,
    pub task_pid: Option<i32>,
}

impl Row {
    fn new(task_id: String) -> Self {
        Self {
            name: None,
            task_id,
            state: "error",
            exit: None,
            reason: None,
            command: Vec::new(),
            created: None,
            created_unix_ms: None,
            supervisor_pid: None,
            task_pid: None,
        }
    }

    /// The row of `task_id`, probed now.
    fn probe(driver: &Driver<LinuxPlatform>, task_id: String) -> Self {
        let mut row = Self::new(task_id);
        match driver.probe_task(&row.task_id) {
            Ok(status) => row.set_status(&status),
            Err(e) => row.reason = Some(e.to_string()),
        }
        if let Some(details) = driver
            .handle_of(&row.task_id)
            .ok()
            .and_then(|h| driver.details(&h).ok())
        {
            row.name = details.spec.name.clone();
            row.command = std::iter::once(details.spec.config.command.clone())
                .chain(details.spec.config.args.iter().cloned())
                .collect();
            row.created_unix_ms = details.created_unix_ms;
            row.created = details.created_unix_ms.map(|ms| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            });
        }
        row
    }

    fn set_status(&mut self, status: &TaskStatus) {
        match status {
            TaskStatus::Running {
                supervisor_pid,
                task_pid,
            } => {
                self.state = "running";
                self.supervisor_pid = Some(*supervisor_pid);
                self.task_pid = Some(*task_pid);
            }
            TaskStatus::Exited(exit) => {
                self.state = "exited";
                self.exit = Some(*exit);
            }
            TaskStatus::Unresponsive { reason } => {
                self.state = "unresponsive";
                self.reason = Some(reason.clone());
            }
            TaskStatus::Lost { reason } => {
                self.state = "lost";
                self.reason = Some(reason.clone());
            }
            TaskStatus::Starting => self.state = "starting",
            TaskStatus::Incomplete { reason } => {
                self.state = "incomplete";
                self.reason = Some(reason.clone());
            }
            _ => self.state = "error",
        }
    }

    /// The STATE column: how it ended, for an exited task.
    fn state_words(&self) -> String {
        match (self.state, &self.exit) {
            (_, Some(exit)) if exit.oom_killed => "oom-killed".to_owned(),
            (
                _,
                Some(ExitStatus {
                    signal: Some(signal),
                    ..
                }),
            ) => format!("killed by {signal}"),
            (_, Some(exit)) => format!("exited {}", exit.exit_code),
            (state, None) => state.to_owned(),
        }
    }

    /// Whether the task has exited (and can be removed without force).
    pub fn has_exited(&self) -> bool {
        self.exit.is_some()
    }

    /// How long ago the task was started, if known.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let created = UNIX_EPOCH + Duration::from_millis(self.created_unix_ms?);
        Some(now.duration_since(created).unwrap_or_default())
    }
}

/// Every task of the data dir, sorted by task id, probed in parallel within [`LIST_BOUND`].
pub fn rows(ctx: &Ctx) -> Result<Vec<Row>> {
    let ids = ctx.driver().task_ids()?;
    let deadline = Instant::now() + LIST_BOUND;
    let queue = Arc::new(Mutex::new(
        ids.iter().cloned().enumerate().collect::<VecDeque<_>>(),
    ));
    let (tx, rx) = mpsc::channel();
    for _ in 0..PROBE_THREADS.min(ids.len()) {
        let queue = Arc::clone(&queue);
        let tx = tx.clone();
        let driver = ctx.shared_driver();
        // Detached: a probe stuck past the bound must not hold up the answer; the process
        // ends with it.
        let spawned = thread::Builder::new().name("probe".into()).spawn(move || {
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some((i, id)) = next else { break };
                if tx.send((i, Row::probe(&driver, id))).is_err() {
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            errln!("execdriver: cannot start a probe thread: {e}");
        }
    }
    drop(tx);
    let mut rows: Vec<Option<Row>> = vec![None; ids.len()];
    let mut left = ids.len();
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((i, row)) => {
                if let Some(slot) = rows.get_mut(i) {
                    *slot = Some(row);
                    left -= 1;
                }
            }
            Err(_) => break,
        }
    }
    Ok(ids
        .into_iter()
        .zip(rows)
        .map(|(id, row)| {
            row.unwrap_or_else(|| {
                let mut row = Row::new(id);
                row.state = "unresponsive";
                row.reason = Some(format!(
                    "not probed within {}",
                    super::parse::human_duration(LIST_BOUND)
                ));
                row
            })
        })
        .collect())
}

pub fn list(ctx: &Ctx, as_json: bool) -> Result<u8> {
    let rows = rows(ctx)?;
    if as_json {
        out(&json(&rows)?)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone().unwrap_or_else(|| "-".to_owned()),
                r.task_id.clone(),
                r.state_words(),
                truncate(&r.command.join(" "), COMMAND_WIDTH),
                r.age(now)
                    .map(|age| format!("{} ago", human_age(age)))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let header = ["NAME", "TASK ID", "STATE", "COMMAND", "CREATED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out(line.join("   ").trim_end())?;
    }
    Ok(0)
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// An age in the words `docker ps` uses: "5 seconds", "About a minute", "3 hours".
pub fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    let minutes = secs / 60;
    let hours = (secs + 30 * 60) / 3600;
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        0 => "Less than a second".to_owned(),
        1..=59 => plural(secs, "second"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => plural(minutes, "minute"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => plural(hours, "hour"),
        _ if hours < 24 * 7 * 2 => plural(hours / 24, "day"),
        _ if hours < 24 * 30 * 2 => plural(hours / 24 / 7, "week"),
        _ if hours < 24 * 365 * 2 => plural(hours / 24 / 30, "month"),
        _ => plural(hours / 24 / 365, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_docker_ps() {
        let s = Duration::from_secs;
        assert_eq!(human_age(Duration::from_millis(300)), "Less than a second");
        assert_eq!(human_age(s(1)), "1 second");
        assert_eq!(human_age(s(5)), "5 seconds");
        assert_eq!(human_age(s(90)), "About a minute");
        assert_eq!(human_age(s(5 * 60)), "5 minutes");
        assert_eq!(human_age(s(3600)), "About an hour");
        assert_eq!(human_age(s(3 * 3600)), "3 hours");
        assert_eq!(human_age(s(3 * 86_400)), "3 days");
        assert_eq!(human_age(s(21 * 86_400)), "3 weeks");
        assert_eq!(human_age(s(90 * 86_400)), "3 months");
        assert_eq!(human_age(s(800 * 86_400)), "2 years");
    }

    #[test]
    fn long_commands_are_cut() {
        assert_eq!(truncate("sleep 100", 30), "sleep 100");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
