//! The layout of the driver's data dir: `<data dir>/tasks/<task id>/` holds one task's state.
//!
//! Every path the platform, the supervisor and the CLI use is derived here from the data dir
//! and a task id, so that confinement checks compare against the one place that builds them.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

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
}
