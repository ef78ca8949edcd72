//! Confining a handle id before anything is touched.
//!
//! A handle id comes from outside (an agent's state store) and may be forged or corrupt.
//! Every path in it must be exactly what this platform would have written for its task id,
//! its cgroup exactly that task's cgroup name, and, when the task's state dir exists, every
//! identity and dir in it exactly what the task record there says: a task dir or alloc dir
//! forged to `/etc` or to another task's dirs, or a handle of an earlier task whose id was
//! collected and reused, is refused. Nothing signalled, nothing removed.

use std::fs;
use std::io;
use std::path::Path;

use execdriver_core::{HandleId, PlatformError, Refusal};

use crate::cgroups::cgroup_name;
use crate::state::{StatePaths, read_task_record};

/// What confinement established about a handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confined {
    /// The task's state dir, as this platform lays it out.
    pub paths: StatePaths,
    /// Whether the state dir exists (and matched the handle).
    pub present: bool,
}

fn refused(kind: Refusal, why: String) -> PlatformError {
    PlatformError::refused(kind, why)
}

/// Checks the handle against what this platform derives from its task id and what the
/// task's records say; an absent state dir passes (there is nothing of the task to touch),
/// as the cleanup steps need.
pub(crate) fn confine_state(data_dir: &Path, handle: &HandleId) -> Result<Confined, PlatformError> {
    handle
        .validate()
        .map_err(|e| refused(Refusal::NotOurs, format!("invalid handle id: {e}")))?;
    let paths = StatePaths::new(data_dir, &handle.task_id);
    if handle.state_dir != paths.dir {
        return Err(refused(
            Refusal::NotOurs,
            format!(
                "state dir {} is not {}, the state dir of task {} in this driver's data dir",
                handle.state_dir.display(),
                paths.dir.display(),
                handle.task_id
            ),
        ));
    }
    if handle.supervisor.socket != paths.socket() {
        return Err(refused(
            Refusal::NotOurs,
            format!(
                "supervisor socket {} is not {}",
                handle.supervisor.socket.display(),
                paths.socket().display()
            ),
        ));
    }
    let cgroup = cgroup_name(&handle.task_id);
    if handle.cgroup != cgroup {
        return Err(refused(
            Refusal::NotOurs,
            format!(
                "cgroup {:?} is not {cgroup:?}, the cgroup of task {} under this driver's parent",
                handle.cgroup, handle.task_id
            ),
        ));
    }
    match fs::symlink_metadata(&paths.dir) {
        Ok(meta) => {
            // The lexical checks above are not enough if a component is a symlink.
            let real = fs::canonicalize(&paths.dir).map_err(|e| {
                refused(
                    Refusal::NotOurs,
                    format!("state dir {} cannot be resolved: {e}", paths.dir.display()),
                )
            })?;
            if !meta.is_dir() || real != paths.dir {
                return Err(refused(
                    Refusal::NotOurs,
                    format!(
                        "state dir {} is not a plain directory in the data dir (resolves to {})",
                        paths.dir.display(),
                        real.display()
                    ),
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Confined {
                paths,
                present: false,
            });
        }
        Err(e) => {
            return Err(refused(
                Refusal::NotOurs,
                format!("state dir {} cannot be inspected: {e}", paths.dir.display()),
            ));
        }
    }
    check_record(&paths, handle)?;
    Ok(Confined {
        paths,
        present: true,
    })
}

/// The handle must describe the task the state dir's record describes.
fn check_record(paths: &StatePaths, handle: &HandleId) -> Result<(), PlatformError> {
    let id = &handle.task_id;
    let record = match read_task_record(&paths.task_record()) {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err(refused(
                Refusal::Reused,
                format!(
                    "task {id} has no task record in {}: its id is being started again, or a \
                     start of it was abandoned; this handle is not of that task",
                    paths.dir.display()
                ),
            ));
        }
        Err(e) => {
            return Err(refused(
                Refusal::NotOurs,
                format!("the handle cannot be checked against its task: {e}"),
            ));
        }
    };
    if record.supervisor != handle.supervisor || record.task != handle.task {
        return Err(refused(
            Refusal::Reused,
            format!(
                "task {id} in {} is supervisor {:?} and task {:?}, not the handle's {:?} and \
                 {:?}: the task id was reused; nothing of it was touched",
                paths.dir.display(),
                record.supervisor.process,
                record.task,
                handle.supervisor.process,
                handle.task
            ),
        ));
    }
    for (what, given, recorded) in [
        ("task dir", &handle.task_dir, &record.task_dir),
        ("alloc dir", &handle.alloc_dir, &record.alloc_dir),
    ] {
        if given != recorded {
            return Err(refused(
                Refusal::NotOurs,
                format!(
                    "{what} {} is not {}, the {what} task {id} was started with",
                    given.display(),
                    recorded.display()
                ),
            ));
        }
    }
    Ok(())
}

/// [`confine_state`], plus the state dir must exist: it is the proof that this data dir
/// started the task, and without it there is nothing to reattach to.
///
/// A missing state dir is a refusal rather than a lost task: "lost" would send the driver
/// to kill a cgroup by a name that may now belong to a task of another data dir sharing the
/// parent, and would tell the user the task was lost when it was most likely collected.
pub(crate) fn confine(data_dir: &Path, handle: &HandleId) -> Result<Confined, PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    if !confined.present {
        return Err(refused(
            Refusal::Collected,
            format!(
                "task {} has no state in {}: it was already collected, or never started here; \
                 nothing was touched",
                handle.task_id,
                data_dir.display()
            ),
        ));
    }
    Ok(confined)
}
