//! The layout of the driver's data dir: `<data dir>/tasks/<task id>/` holds one task's state.
//!
//! Every path the platform, the supervisor and the CLI use is derived here from the data dir
//! and a task id, so that confinement checks compare against the one place that builds them.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The supervisor's unix socket, inside the state dir.
pub const SOCKET_FILE: &str = "supervisor.sock";
/// The task's exit record, written atomically by the supervisor.
pub const EXIT_FILE: &str = "exit.json";
/// The task spec handed to the supervisor.
pub const SPEC_FILE: &str = "spec.json";
/// The supervisor's own diagnostics.
pub const LOG_FILE: &str = "supervisor.log";
/// The handle id, written by the CLI so that a task id can be resolved to its handle.
pub const HANDLE_FILE: &str = "handle.json";
/// Where the task's cgroup is, written by the agent before the supervisor starts.
pub const CGROUP_FILE: &str = "cgroup.json";
/// Written by the supervisor only once it has created the task's cgroup, and removed once it
/// removed it: the proof that the cgroup `cgroup.json` names is this task's to clean up.
pub const CGROUP_CREATED_FILE: &str = "cgroup.created";
/// Largest cgroup record read.
const MAX_CGROUP_RECORD: u64 = 64 * 1024;

/// Where a task's cgroup lives, recorded once by the agent that spawned it.
///
/// Every later cleanup uses this record rather than resolving the parent again: the caller's
/// own cgroup (the default parent) depends on which process asks, so a `wait` from another
/// cgroup, or a restarted agent, would otherwise look in the wrong place and report a
/// cleanup that never happened. The supervisor checks that it resolves the same paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupRecord {
    /// The task cgroup's name under its parent.
    pub name: String,
    /// The configured parent, relative to each hierarchy root; `None`: the spawning
    /// process's own cgroup.
    pub parent: Option<String>,
    /// The task cgroup's absolute directory in each hierarchy, sorted.
    pub paths: Vec<PathBuf>,
}

impl CgroupRecord {
    /// Writes the record to `path` (which must not exist), mode 0600.
    pub fn write_new(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(&text))
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
    }

    /// Reads the record at `path`; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> io::Result<Option<Self>> {
        read_record(path, MAX_CGROUP_RECORD, "cgroup record")
    }
}

/// Writes the mark that the supervisor created the task's cgroup (see [`CGROUP_CREATED_FILE`]):
/// created new, mode 0600, synced, so that a mark on disk never precedes the cgroup.
pub fn write_cgroup_created(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Removes the cgroup record and its created mark once the cgroup is gone, mark first: a
/// record without its mark is never acted on. Absent files are fine.
pub fn remove_cgroup_record(paths: &StatePaths) -> io::Result<()> {
    for path in [paths.cgroup_created(), paths.cgroup_record()] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// The dir under the data dir that holds every task's state dir.
pub fn tasks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tasks")
}

/// The dir under the data dir where the CLI prepares alloc dirs.
pub fn allocs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("allocs")
}

/// The paths of one task's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// `<data dir>/tasks/<task id>`.
    pub dir: PathBuf,
}

impl StatePaths {
    /// The state dir of `task_id` under `data_dir` (the task id must be valid already).
    pub fn new(data_dir: &Path, task_id: &str) -> Self {
        Self {
            dir: tasks_dir(data_dir).join(task_id),
        }
    }

    /// A state dir given as a path.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The supervisor's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }

    /// The exit record.
    pub fn exit_record(&self) -> PathBuf {
        self.dir.join(EXIT_FILE)
    }

    /// The task spec.
    pub fn spec(&self) -> PathBuf {
        self.dir.join(SPEC_FILE)
    }

    /// The supervisor's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The CLI's copy of the handle id.
    pub fn handle(&self) -> PathBuf {
        self.dir.join(HANDLE_FILE)
    }

    /// The record of where the task's cgroup is.
    pub fn cgroup_record(&self) -> PathBuf {
        self.dir.join(CGROUP_FILE)
    }

    /// The mark that the supervisor created the recorded cgroup (and has not removed it).
    pub fn cgroup_created(&self) -> PathBuf {
        self.dir.join(CGROUP_CREATED_FILE)
    }
}

/// Creates `dir` and its missing parents with mode 0700 (only the new dirs get that mode).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `dir` with mode 0700; fails if it exists.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Reads a small JSON record the driver wrote into a state dir: `Ok(None)` when there is
/// none, an error naming the file when it cannot be read or is not what `what` should be.
/// The size bound keeps a planted or corrupt file from costing more than it is worth.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    max_bytes: u64,
    what: &str,
) -> io::Result<Option<T>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", path.display()),
            ));
        }
    };
    let mut text = Vec::new();
    file.take(max_bytes).read_to_end(&mut text)?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} {} is corrupt: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = StatePaths::new(Path::new("/var/lib/execdriver"), "t1");
        assert_eq!(p.dir, Path::new("/var/lib/execdriver/tasks/t1"));
        assert_eq!(
            p.socket(),
            Path::new("/var/lib/execdriver/tasks/t1/supervisor.sock")
        );
        assert_eq!(
            p.exit_record(),
            Path::new("/var/lib/execdriver/tasks/t1/exit.json")
        );
    }

    #[test]
    fn cgroup_record_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CGROUP_FILE);
        assert_eq!(CgroupRecord::read(&path).ok(), Some(None));
        let record = CgroupRecord {
            name: "execdriver-t1".into(),
            parent: None,
            paths: vec!["/sys/fs/cgroup/execdriver-t1".into()],
        };
        record.write_new(&path).expect("write");
        assert_eq!(CgroupRecord::read(&path).ok(), Some(Some(record.clone())));
        assert!(record.write_new(&path).is_err());
        std::fs::write(&path, b"{").expect("write");
        assert!(CgroupRecord::read(&path).is_err());
    }

    #[test]
    fn created_mark_is_written_once_and_removed_with_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = StatePaths::at(dir.path());
        assert!(remove_cgroup_record(&paths).is_ok());
        write_cgroup_created(&paths.cgroup_created()).expect("mark");
        assert!(write_cgroup_created(&paths.cgroup_created()).is_err());
        std::fs::write(paths.cgroup_record(), b"{}").expect("write");
        remove_cgroup_record(&paths).expect("remove");
        assert!(!paths.cgroup_created().exists());
        assert!(!paths.cgroup_record().exists());
    }
}
