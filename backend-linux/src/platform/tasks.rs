//! The tasks of a data dir: listing them, finding one by id from any process, and removing
//! what an abandoned start left.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use execdriver_core::{FoundTask, PlatformError, Refusal, validate_task_id};

use super::orphan::{destroy_recorded_cgroup, remove_state_dir};
use crate::state::{self, LockState, StartLock, StatePaths, read_task_record};

/// The ids of every task in the data dir (claims under way are not tasks yet).
pub(crate) fn task_ids(data_dir: Option<&Path>) -> Result<Vec<String>, PlatformError> {
    let Some(data_dir) = data_dir else {
        return Ok(Vec::new());
    };
    let tasks = state::tasks_dir(data_dir);
    let entries = match fs::read_dir(&tasks) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PlatformError::io(
                &tasks,
                e.kind(),
                format!("reading {}: {e}", tasks.display()),
            ));
        }
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|id| validate_task_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// What the data dir holds of `task_id`.
pub(crate) fn find_task(
    data_dir: Option<&Path>,
    task_id: &str,
) -> Result<FoundTask, PlatformError> {
    let not_found = |reason: String| PlatformError::NotFound {
        task_id: task_id.to_owned(),
        reason,
    };
    validate_task_id(task_id).map_err(|e| not_found(e.to_string()))?;
    let Some(data_dir) = data_dir else {
        return Err(not_found("the data dir does not exist".to_owned()));
    };
    let paths = StatePaths::new(data_dir, task_id);
    if !fs::symlink_metadata(&paths.dir).is_ok_and(|m| m.is_dir()) {
        return Err(not_found(format!(
            "no state dir {} (never started here, or already removed)",
            paths.dir.display()
        )));
    }
    // A task record appears before its supervisor has told the starter about it, and the
    // supervisor aborts the task if the starter is gone by then: until the start lock is
    // free the task is starting, not started. That window is one pipe write, so a record
    // under a held lock is waited out briefly rather than reported as a start under way.
    let settle_by = Instant::now() + REPORT_SETTLE;
    loop {
        let lock = StartLock::probe(&paths)
            .map_err(|e| PlatformError::io(paths.start_lock(), e.kind(), e.to_string()))?;
        let record = read_task_record(&paths.task_record())
            .map_err(|e| PlatformError::io(paths.task_record(), e.kind(), e.to_string()))?;
        return match (lock, record) {
            (LockState::Held, Some(_)) if Instant::now() < settle_by => {
                std::thread::sleep(REPORT_SETTLE_POLL);
                continue;
            }
            (LockState::Held, _) => Ok(FoundTask::Starting),
            (LockState::Free(_) | LockState::Missing, Some(record)) => {
                Ok(FoundTask::Started(record))
            }
            (LockState::Free(_) | LockState::Missing, None) => Ok(FoundTask::Incomplete {
                reason: format!(
                    "state dir {} has no task record and nobody is starting it: its starter \
                     died before the task ran",
                    paths.dir.display()
                ),
            }),
        };
    }
}

/// How long a task record under a held start lock is given to become a started task.
const REPORT_SETTLE: Duration = Duration::from_secs(1);
/// How often the start lock is looked at meanwhile.
const REPORT_SETTLE_POLL: Duration = Duration::from_millis(2);

/// Removes what an abandoned start of `task_id` left: its cgroup, if the supervisor got as
/// far as making it (whatever runs in it is killed), then its state dir. Holds the start
/// lock while it works, so no start can begin under it; refuses a task that is started or
/// starting.
pub(crate) fn discard_incomplete(
    data_dir: Option<&Path>,
    task_id: &str,
    deadline: Instant,
) -> Result<(), PlatformError> {
    let found = find_task(data_dir, task_id)?;
    let Some(data_dir) = data_dir else {
        return Ok(());
    };
    let refuse = |what: &str| {
        Err(PlatformError::refused(
            Refusal::NotOurs,
            format!("task {task_id} is {what}, not an abandoned start; nothing was touched"),
        ))
    };
    match found {
        FoundTask::Started(_) => return refuse("started"),
        FoundTask::Starting => return refuse("being started"),
        FoundTask::Incomplete { .. } => {}
    }
    let paths = StatePaths::new(data_dir, task_id);
    let _lock = match StartLock::probe(&paths) {
        Ok(LockState::Free(lock)) => Some(lock),
        Ok(LockState::Missing) => None,
        Ok(LockState::Held) => return refuse("being started"),
        Err(e) => {
            return Err(PlatformError::io(
                paths.start_lock(),
                e.kind(),
                e.to_string(),
            ));
        }
    };
    // Checked again under the lock: a start that finished in between is not debris.
    if paths.task_record().exists() {
        return refuse("started");
    }
    destroy_recorded_cgroup(&paths, task_id, deadline)?;
    remove_state_dir(&paths, task_id)
}
