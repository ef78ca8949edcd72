//! `task.json`: the task record, written by the supervisor before it reports the task ready,
//! so that every task that runs can be found again by its id from any process, even when the
//! agent that started it died before it learned the handle.

use std::io;
use std::path::Path;

use execdriver_core::TaskRecord;

use super::read_record;

/// Largest task record read; a real one is well under 1 KiB.
const MAX_TASK_RECORD: u64 = 16 * 1024;

/// Writes the record atomically. Not synced: after a crash of the node there is no task to
/// find again, only debris, which the record would not help to clean.
pub(crate) fn write_task_record(path: &Path, record: &TaskRecord) -> io::Result<()> {
    let text = serde_json::to_vec(record).map_err(io::Error::other)?;
    super::write_atomic(path, &text, false)
}

/// Reads the record: `Ok(None)` when there is none.
pub(crate) fn read_task_record(path: &Path) -> io::Result<Option<TaskRecord>> {
    read_record(path, MAX_TASK_RECORD, "task record")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use execdriver_core::{ProcessIdentity, Signal, SupervisorIdentity};

    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("task.json");
        assert_eq!(read_task_record(&path).ok(), Some(None));
        let record = TaskRecord {
            task_id: "t1".into(),
            supervisor: SupervisorIdentity {
                process: ProcessIdentity {
                    pid: 10,
                    start_time: 1,
                },
                socket: dir.path().join("supervisor.sock"),
            },
            task: ProcessIdentity {
                pid: 11,
                start_time: 2,
            },
            cgroup: "execdriver-t1".into(),
            state_dir: dir.path().to_owned(),
            task_dir: "/alloc/web".into(),
            alloc_dir: "/alloc".into(),
            kill_timeout: Duration::from_millis(1500),
            kill_signal: Signal::SIGTERM,
        };
        write_task_record(&path, &record).expect("write");
        assert_eq!(read_task_record(&path).ok(), Some(Some(record)));
        std::fs::write(&path, b"{").expect("write");
        assert!(read_task_record(&path).is_err());
    }
}
