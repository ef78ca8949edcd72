//! `exit.json`: the task's exit status, written atomically so that it survives the
//! supervisor's own death and is never seen half-written.
//!
//! The record names the supervisor and the task it belongs to: a task id can be reused once
//! the old task was collected, and a handle of the old task must never take (and then
//! remove) the exit of the new one. [`ExitRecord::check`] compares them with a handle's.

use std::io;
use std::path::Path;

use execdriver_core::{ExitStatus, ProcessIdentity};
use serde::{Deserialize, Serialize};

/// What `exit.json` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExitRecord {
    /// How the task ended.
    pub status: ExitStatus,
    /// The supervisor that wrote the record.
    pub supervisor: ProcessIdentity,
    /// The task's main process.
    pub task: ProcessIdentity,
}

impl ExitRecord {
    /// The status, if the record belongs to `supervisor` and `task`; otherwise a message
    /// that says whose it is.
    pub fn check(
        &self,
        supervisor: &ProcessIdentity,
        task: &ProcessIdentity,
    ) -> Result<ExitStatus, String> {
        if self.supervisor == *supervisor && self.task == *task {
            Ok(self.status)
        } else {
            Err(format!(
                "the exit record belongs to supervisor {:?} and task {:?}, not to supervisor \
                 {supervisor:?} and task {task:?}: the task id was reused",
                self.supervisor, self.task
            ))
        }
    }
}

/// Largest exit record read back; a real one is under 100 bytes.
const MAX_RECORD: u64 = 4096;

/// Writes `record` to `path` atomically, synced (see [`super::write_atomic`]): the exit
/// status depends on it.
pub(crate) fn write(path: &Path, record: &ExitRecord) -> io::Result<()> {
    let text = serde_json::to_vec(record).map_err(io::Error::other)?;
    super::write_atomic(path, &text, true)
}

/// Reads the exit record at `path`: `Ok(None)` when there is none.
pub(crate) fn read(path: &Path) -> io::Result<Option<ExitRecord>> {
    super::read_record(path, MAX_RECORD, "exit record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use execdriver_core::Signal;

    #[test]
    fn round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        assert_eq!(read(&path).ok(), Some(None));
        let mut status = ExitStatus::signaled(Signal::SIGKILL);
        status.oom_killed = true;
        let record = ExitRecord {
            status,
            supervisor: ProcessIdentity {
                pid: 10,
                start_time: 1,
            },
            task: ProcessIdentity {
                pid: 11,
                start_time: 2,
            },
        };
        write(&path, &record).expect("write");
        assert_eq!(read(&path).ok(), Some(Some(record)));
        assert_eq!(record.check(&record.supervisor, &record.task), Ok(status));
        let other = ProcessIdentity {
            pid: 11,
            start_time: 3,
        };
        let err = record
            .check(&record.supervisor, &other)
            .expect_err("reused id");
        assert!(err.contains("reused"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        std::fs::write(&path, b"{\"exit_code\":").expect("write");
        assert!(read(&path).is_err());
    }
}
