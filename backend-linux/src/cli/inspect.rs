//! `inspect`: everything known of one task, as one JSON object; changes nothing.

use execdriver_core::{ExitStatus, HandleId, Resources, TaskSpec, TaskStatus};
use serde::Serialize;

use super::Result;
use super::context::Ctx;
use super::output::{json, out};

#[derive(Serialize)]
struct Inspected {
    task_id: String,
    name: Option<String>,
    /// The handle id, as `start` printed it.
    handle: String,
    state: &'static str,
    exit: Option<ExitStatus>,
    reason: Option<String>,
    supervisor_pid: i32,
    task_pid: i32,
    created_unix_ms: Option<u64>,
    state_dir: std::path::PathBuf,
    cgroup: String,
    cgroup_paths: Vec<std::path::PathBuf>,
    limits: Resources,
    log_paths: Vec<std::path::PathBuf>,
    spec: TaskSpec,
}

pub fn inspect(ctx: &Ctx, arg: &str) -> Result<u8> {
    let target = ctx.target(arg)?;
    let handle: HandleId = ctx.handle_of(&target)?;
    let details = ctx.driver().details(&handle)?;
    let (state, exit, reason) = match ctx.driver().probe(&handle)? {
        TaskStatus::Running { .. } => ("running", None, None),
        TaskStatus::Exited(exit) => ("exited", Some(exit), None),
        TaskStatus::Unresponsive { reason } => ("unresponsive", None, Some(reason)),
        TaskStatus::Lost { reason } => ("lost", None, Some(reason)),
        TaskStatus::Starting => ("starting", None, None),
        TaskStatus::Incomplete { reason } => ("incomplete", None, Some(reason)),
        _ => ("unknown", None, None),
    };
    let inspected = Inspected {
        task_id: handle.task_id.clone(),
        name: details.spec.name.clone(),
        handle: handle.to_string(),
        state,
        exit,
        reason,
        supervisor_pid: handle.supervisor.process.pid,
        task_pid: handle.task.pid,
        created_unix_ms: details.created_unix_ms,
        state_dir: details.state_dir,
        cgroup: handle.cgroup.clone(),
        cgroup_paths: details.cgroup_paths,
        limits: details.spec.resources.clone(),
        log_paths: details.log_paths,
        spec: details.spec,
    };
    out(&json(&inspected)?)?;
    Ok(0)
}
