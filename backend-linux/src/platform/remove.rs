//! Removing a task: the one place where what is kept of an exited task goes. Collecting an
//! exit (`release`) only lets the supervisor leave; the spec, the exit record, the logs and
//! the alloc dir stay for later `wait`, `logs` and `inspect` until this runs.
//!
//! Also what `inspect` and `list` read of a task: its spec and where its things are.

use std::path::Path;
use std::time::{Instant, UNIX_EPOCH};

use execdriver_core::{HandleId, PlatformError, TaskDetails};

use super::client::LogLocation;
use super::confine::confine_state;
use super::orphan::{destroy_recorded_cgroup, kill_supervisor_process, remove_state_dir};
use crate::AllocDir;
use crate::logs::{Stream, log_file_name};
use crate::state::{CgroupRecord, StatePaths, names};

/// Removes the state dir, cgroup, name claim, and (when the driver made it, under its data
/// dir) the alloc dir with the logs of an exited task. The supervisor, if it lingers, is
/// killed first: the exit is recorded, so it holds nothing that is not on disk. Each step
/// runs only once the one before it succeeded, so a failure leaves what a retry needs.
pub(crate) fn remove_task(
    data_dir: &Path,
    handle: &HandleId,
    deadline: Instant,
) -> Result<(), PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    let paths = &confined.paths;
    let spec = super::read_spec(&paths.spec()).ok();
    if confined.present {
        kill_supervisor_process(&handle.supervisor.process, paths, deadline)?;
        destroy_recorded_cgroup(paths, &handle.task_id, deadline)?;
        remove_state_dir(paths, &handle.task_id)?;
    }
    if let Some(name) = spec.as_ref().and_then(|s| s.name.as_deref()) {
        names::release(data_dir, name, &handle.task_id)
            .map_err(|e| PlatformError::io(names::names_dir(data_dir), e.kind(), e.to_string()))?;
    }
    let ours = AllocDir::path(data_dir, &handle.task_id);
    if handle.alloc_dir == ours {
        AllocDir::remove(&ours)
            .map_err(|e| PlatformError::io(&ours, std::io::ErrorKind::Other, e.to_string()))?;
    }
    Ok(())
}

/// The spec of the task of `handle` and where its state, cgroup and logs are.
pub(crate) fn details(data_dir: &Path, handle: &HandleId) -> Result<TaskDetails, PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    let paths: &StatePaths = &confined.paths;
    let spec = super::read_spec(&paths.spec())?;
    let created_unix_ms = std::fs::metadata(paths.spec())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok());
    // Recorded while the cgroup exists; it goes with the cgroup at the exit.
    let cgroup_paths = CgroupRecord::read(&paths.cgroup_record())
        .ok()
        .flatten()
        .map(|record| record.paths)
        .unwrap_or_default();
    let logs = LogLocation::of(&spec);
    let log_paths = [Stream::Stdout, Stream::Stderr]
        .into_iter()
        .map(|stream| logs.dir.join(log_file_name(&logs.task_name, stream, 0)))
        .collect();
    Ok(TaskDetails {
        spec,
        created_unix_ms,
        state_dir: paths.dir.clone(),
        cgroup_paths,
        log_paths,
    })
}
