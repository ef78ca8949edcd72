//! `stats`: running tasks' resource use against their limits, as `docker stats` shows it: a
//! table refreshed every second until Ctrl-C or every task named has exited, or one table
//! with `--no-stream`; `--json` prints one object per task and sample instead. The cpu % is
//! the cpu time used between two samples over the time between them, in percent of one cpu.

use std::time::Duration;

use execdriver_core::{DriverError, TaskHandle, TaskStats, TaskStatus};
use execdriver_linux::LinuxPlatform;
use serde::Serialize;

use super::args::StatsOpts;
use super::context::{Ctx, Target};
use super::output::{json, out};
use super::signal::running;
use super::{Result, errln};

/// Time between samples.
const INTERVAL: Duration = Duration::from_secs(1);

/// Clears a terminal and puts the cursor home, as `docker stats` redraws.
const CLEAR: &str = "\x1b[2J\x1b[H";

struct Watched {
    task: TaskHandle<LinuxPlatform>,
    /// Its name, looked up once (`-` in the table when it has none).
    name: Option<String>,
    last: Option<TaskStats>,
}

impl Watched {
    fn new(ctx: &Ctx, task: TaskHandle<LinuxPlatform>) -> Self {
        let name = ctx
            .driver()
            .details(&task.handle_id())
            .ok()
            .and_then(|d| d.spec.name);
        Self {
            task,
            name,
            last: None,
        }
    }
}

pub fn stats(ctx: &Ctx, opts: &StatsOpts) -> Result<u8> {
    let mut tasks = Vec::new();
    if opts.handles.is_empty() {
        for listed in ctx.driver().list()? {
            if matches!(listed.status, Ok(TaskStatus::Running { .. })) {
                // One that exited since the listing is no longer of interest.
                if let Ok(task) = ctx.open(&Target::Task(listed.task_id)) {
                    tasks.push(Watched::new(ctx, task));
                }
            }
        }
    } else {
        for arg in &opts.handles {
            tasks.push(Watched::new(ctx, running(ctx, arg)?));
        }
    }
    let mut first = true;
    loop {
        let mut rows = Vec::new();
        tasks.retain_mut(|w| match w.task.stats() {
            Ok(now) => {
                let cpu = w.last.as_ref().and_then(|l| now.cpu_percent_since(l));
                rows.push(Row::new(w.task.task_id(), w.name.as_deref(), &now, cpu));
                w.last = Some(now);
                true
            }
            Err(DriverError::NotRunning { .. }) => false,
            // Exited between two samples: the table goes on without it.
            Err(_) if !still_running(ctx, &w.task) => false,
            Err(e) => {
                errln!("execdriver: {e}");
                false
            }
        });
        let shown = !(first && opts.no_stream);
        if shown {
            if opts.json {
                for row in &rows {
                    out(&json(row)?)?;
                }
            } else {
                if !opts.no_stream {
                    print!("{CLEAR}");
                }
                table(&rows)?;
            }
        }
        if (opts.no_stream && !first) || tasks.is_empty() {
            return Ok(0);
        }
        first = false;
        std::thread::sleep(INTERVAL);
    }
}

fn still_running(ctx: &Ctx, task: &TaskHandle<LinuxPlatform>) -> bool {
    matches!(
        ctx.driver().probe(&task.handle_id()),
        Ok(TaskStatus::Running { .. } | TaskStatus::Unresponsive { .. })
    )
}

/// One task's sample, as printed.
#[derive(Debug, Serialize)]
struct Row {
    task_id: String,
    /// The task's name, null when it has none.
    name: Option<String>,
    /// When the sample was taken, RFC 3339 in UTC (null from an older supervisor).
    read_at: Option<String>,
    read_at_unix_nanos: u64,
    /// Percent of one cpu since the sample before (null for the first).
    cpu_percent: Option<f64>,
    memory_used_bytes: u64,
    /// The hard memory limit: the max above the limit if there is one, else the limit.
    memory_limit_bytes: Option<u64>,
    memory_percent: Option<f64>,
    /// The raw reading: memory, cpu, pids, logs, limits.
    #[serde(flatten)]
    stats: TaskStats,
}

impl Row {
    fn new(task_id: &str, name: Option<&str>, s: &TaskStats, cpu_percent: Option<f64>) -> Self {
        let limit = s
            .limits
            .map(|l| l.memory_max_bytes.unwrap_or(l.memory_limit_bytes));
        let used = s.memory_used();
        Self {
            task_id: task_id.to_owned(),
            name: name.map(str::to_owned),
            read_at: (s.read_at_unix_nanos > 0).then(|| {
                humantime::format_rfc3339_nanos(
                    std::time::UNIX_EPOCH + Duration::from_nanos(s.read_at_unix_nanos),
                )
                .to_string()
            }),
            read_at_unix_nanos: s.read_at_unix_nanos,
            cpu_percent,
            memory_used_bytes: used,
            memory_limit_bytes: limit,
            memory_percent: limit
                .filter(|l| *l > 0)
                .map(|l| used as f64 * 100.0 / l as f64),
            stats: *s,
        }
    }
}

fn table(rows: &[Row]) -> Result<()> {
    out(&format!(
        "{:<28} {:<16} {:>8} {:>22} {:>8} {:>13}",
        "TASK ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS / LIMIT"
    ))?;
    let pct = |p: Option<f64>| p.map_or_else(|| "--".to_owned(), |p| format!("{p:.2}%"));
    for r in rows {
        let limit = r.memory_limit_bytes.map_or_else(|| "-".to_owned(), bytes);
        let pids_max = r
            .stats
            .limits
            .map_or_else(|| "-".to_owned(), |l| l.pids_max.to_string());
        out(&format!(
            "{:<28} {:<16} {:>8} {:>22} {:>8} {:>13}",
            r.task_id,
            r.name.as_deref().unwrap_or("-"),
            pct(r.cpu_percent),
            format!("{} / {limit}", bytes(r.memory_used_bytes)),
            pct(r.memory_percent),
            format!("{} / {pids_max}", r.stats.pids),
        ))?;
    }
    Ok(())
}

/// Bytes for people, in powers of 1024 as docker shows them: `512B`, `1.5MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + UNITS[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_as_docker_shows_them() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536 * 1024), "1.5MiB");
        assert_eq!(bytes(300 << 20), "300MiB");
        assert_eq!(bytes(3 << 30), "3GiB");
    }
}
