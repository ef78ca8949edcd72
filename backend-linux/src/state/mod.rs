//! The state dir records, shared ground of the agent side and the supervisor:
//! `<data dir>/tasks/<task id>/` holds one task's state.
//!
//! Every path the platform and the supervisor use is derived here from the data dir and a
//! task id, so that confinement checks compare against the one place that builds them.
//!
//! - `spec.json`, `cgroup.json`: written by the agent while it claims the task id.
//! - `start.lock`: held (flock) by whoever is starting the task, the agent and then the
//!   supervisor, until the task record exists; a free lock without a record is debris.
//! - `cgroup.created`: the supervisor's proof that it created the recorded cgroup.
//! - `task.json`: the task record, written by the supervisor before it reports ready.
//! - `exit.json`: the exit record, written atomically by the supervisor.
//!
//! The records stay after the exit is collected, until the task is removed
//! (`Platform::remove_task`). Unique names are claimed apart, in `<data dir>/names/`
//! (see [`names`]).

mod cgroup_record;
pub(crate) mod exit_record;
pub(crate) mod names;
mod start_lock;
mod task_record;

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(crate) use cgroup_record::{
    CgroupRecord, recorded_cgroup, remove_cgroup_record, write_cgroup_created,
};
pub(crate) use start_lock::{
    ClaimError, LockState, StartLock, claim_task_dir, sweep_abandoned_claims,
};
pub(crate) use task_record::{read_task_record, write_task_record};

/// Largest task spec read.
pub(crate) const MAX_SPEC: u64 = 1024 * 1024;

/// The supervisor's unix socket, inside the state dir.
pub const SOCKET_FILE: &str = "supervisor.sock";
/// The task's exit record, written atomically by the supervisor.
pub const EXIT_FILE: &str = "exit.json";
/// The task spec handed to the supervisor.
pub const SPEC_FILE: &str = "spec.json";
/// The supervisor's own diagnostics.
pub const LOG_FILE: &str = "supervisor.log";
/// The task record, written by the supervisor once the task runs.
pub const TASK_FILE: &str = "task.json";
/// The lock held while the task is being started.
pub const START_LOCK_FILE: &str = "start.lock";
/// Where the task's cgroup is, written by the agent before the supervisor starts.
pub const CGROUP_FILE: &str = "cgroup.json";
/// Written by the supervisor only once it has created the task's cgroup, and removed once it
/// removed it: the proof that the cgroup `cgroup.json` names is this task's to clean up.
pub const CGROUP_CREATED_FILE: &str = "cgroup.created";

/// The dir under the data dir that holds every task's state dir.
pub fn tasks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tasks")
}

/// The dir under the data dir where the CLI prepares alloc dirs.
pub fn allocs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("allocs")
}

/// The names in `dir` that start with `prefix`. Every start sweeps the tasks dir and the
/// allocs dir for claims their makers abandoned, and both keep one entry per task until it
/// is removed, while the names looked for are rare: read with getdents into one buffer, no
/// allocation or UTF-8 check per entry (`read_dir` spent some 800 instructions on each, over
/// a million per sweep of a data dir holding 1500 tasks).
pub(crate) fn names_with_prefix(dir: &Path, prefix: &str) -> io::Result<Vec<std::ffi::OsString>> {
    use rustix::fs::{Mode, OFlags, RawDir};
    use std::os::unix::ffi::OsStringExt;
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Any entry fits (a name is at most 255 bytes); the rest is fewer getdents calls.
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut entries = RawDir::new(fd, buf.spare_capacity_mut());
    let mut found = Vec::new();
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name.starts_with(prefix.as_bytes()) {
            found.push(std::ffi::OsString::from_vec(name.to_vec()));
        }
    }
    Ok(found)
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

    /// The task record.
    pub fn task_record(&self) -> PathBuf {
        self.dir.join(TASK_FILE)
    }

    /// The start lock.
    pub fn start_lock(&self) -> PathBuf {
        self.dir.join(START_LOCK_FILE)
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

/// Writes `bytes` to `path` atomically: a temp file in the same dir, then a rename, so a
/// reader sees the whole record or none. With `durable`, the file is synced before the
/// rename, so that after a crash of the node the record is whole or absent, never empty. The
/// dir is not synced: that would cost every exit a second journal commit, and a rename lost
/// in a crash only makes a task that ended just before it read as lost.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("record {} has no parent", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("record {} has no name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e: io::Error| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Reads a small JSON record the driver wrote into a state dir: `Ok(None)` when there is
/// none, an error naming the file when it cannot be read or is not what `what` should be.
/// The size bound keeps a planted or corrupt file from costing more than it is worth.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    max_bytes: u64,
    what: &str,
) -> io::Result<Option<T>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
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
    fn only_names_with_the_prefix_are_listed_from_a_dir_of_many() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..2000 {
            fs::create_dir(dir.path().join(format!("t{i}"))).expect("task dir");
        }
        fs::create_dir(dir.path().join(".claim-a")).expect("claim");
        fs::write(dir.path().join(".claim-b"), b"").expect("claim file");
        fs::create_dir(dir.path().join(".new-c")).expect("other prefix");
        let mut found = names_with_prefix(dir.path(), ".claim-").expect("listed");
        found.sort();
        assert_eq!(found, [".claim-a", ".claim-b"]);
        assert!(names_with_prefix(&dir.path().join("absent"), ".claim-").is_err());
    }

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
