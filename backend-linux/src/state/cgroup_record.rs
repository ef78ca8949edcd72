//! `cgroup.json` and `cgroup.created`: where a task's cgroup is, and the proof that it is
//! this task's to clean up.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StatePaths, read_record};
use crate::cgroups::{TaskCgroup, cgroup_name};

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
pub(crate) struct CgroupRecord {
    /// The task cgroup's name under its parent.
    pub name: String,
    /// The configured parent, relative to each hierarchy root; `None`: the spawning
    /// process's own cgroup.
    pub parent: Option<String>,
    /// The task cgroup's absolute directory in each hierarchy, sorted.
    pub paths: Vec<PathBuf>,
    /// Cgroups of another manager the task's processes join (Nomad's v1 cpuset cgroup of a
    /// task without reserved cores), checked again when the supervisor creates the cgroup.
    /// Only ever joined: cleanups go by `paths` alone, never killing by or removing these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<PathBuf>,
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
/// created new, mode 0600, after the cgroup. Not synced: it speaks of a cgroup, which no
/// crash of the node outlives, and every process sees it at once through the page cache.
pub(crate) fn write_cgroup_created(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Removes the cgroup record and its created mark once the cgroup is gone, mark first: a
/// record without its mark is never acted on. Absent files are fine.
pub(crate) fn remove_cgroup_record(paths: &StatePaths) -> io::Result<()> {
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


/// The task's cgroup as its state dir records it, if there is one to clean up.
///
/// A cgroup is touched by name only with proof that this data dir's task created it and has
/// not removed it yet: the state dir holds the `cgroup.json` the agent wrote before the
/// supervisor started, and the `cgroup.created` mark the supervisor writes only after
/// creating the cgroup and removes (with the record) once the cgroup is gone. Without both
/// (already collected, never created here, removed after the exit) the answer is `None` and
/// nothing is touched, so a cgroup of the same name that another data dir sharing the parent
/// created meanwhile is never ours. The recorded paths are used as recorded
/// ([`TaskCgroup::open_recorded`] checks each lies in a cgroup hierarchy of this node and
/// ends in the task's cgroup name), never re-derived from the recorded parent: that would
/// resolve the caller's own cgroup, which differs when the cleanup runs from another process
/// than the agent. Nothing is created.
pub(crate) fn recorded_cgroup(
    paths: &StatePaths,
    task_id: &str,
) -> Result<Option<TaskCgroup>, String> {
    if !fs::symlink_metadata(&paths.dir).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    let record_path = paths.cgroup_record();
    let record = match CgroupRecord::read(&record_path) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    match fs::symlink_metadata(paths.cgroup_created()) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(format!(
                "{} is not a regular file",
                paths.cgroup_created().display()
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!("reading {}: {e}", paths.cgroup_created().display()));
        }
    }
    let name = cgroup_name(task_id);
    let bad = |why: String| format!("cgroup record {}: {why}", record_path.display());
    if record.name != name {
        return Err(bad(format!(
            "names cgroup {:?}, not {name:?} of task {task_id}",
            record.name
        )));
    }
    TaskCgroup::open_recorded(&name, &record.paths).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CGROUP_FILE;

    #[test]
    fn cgroup_record_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CGROUP_FILE);
        assert_eq!(CgroupRecord::read(&path).ok(), Some(None));
        let record = CgroupRecord {
            name: "execdriver-t1".into(),
            parent: None,
            paths: vec!["/sys/fs/cgroup/execdriver-t1".into()],
            join: Vec::new(),
        };
        // Records written before `join` existed still read.
        let old: CgroupRecord = serde_json::from_str(
            r#"{"name":"execdriver-t1","parent":null,"paths":["/sys/fs/cgroup/execdriver-t1"]}"#,
        )
        .expect("old record");
        assert_eq!(old, record);
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
