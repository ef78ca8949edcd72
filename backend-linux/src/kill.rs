//! The kill path: the orphan cleanup by cgroup membership, used when a supervisor is gone.
//!
//! (The force kill of a live task goes through its supervisor: `kill` on the socket.)
//! Every step confines the handle first, so a forged handle can never make us kill or
//! remove anything outside this driver's data dir and cgroup parent. The task itself is
//! killed by cgroup membership, never by a stored pid; the supervisor only through a pidfd
//! opened after its start time matched, and only if its command line shows it is the
//! supervisor of this very state dir.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path};
use std::time::Duration;

use execdriver_core::{HandleId, PlatformError, ProcessIdentity, Signal};

use crate::cgroups::{CgroupParent, TaskCgroup, cgroup_name};
use crate::platform::LinuxPlatform;
use crate::process::Pidfd;
use crate::reattach::confine_state;
use crate::state::{CgroupRecord, StatePaths};

/// How long a SIGKILLed supervisor may take to die.
const SUPERVISOR_DEATH: Duration = Duration::from_secs(5);

fn failed(message: String) -> PlatformError {
    PlatformError::Failed(message)
}

/// Kills the handle's supervisor if it is still the recorded process.
pub(crate) fn kill_supervisor(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<(), PlatformError> {
    let confined = confine_state(platform, handle)?;
    kill_supervisor_process(&handle.supervisor.process, &confined.paths)
}

/// SIGKILLs `identity` and waits for it, if it is alive, the same process (start time) and
/// the supervisor of `paths`. A process that is gone is not an error.
pub(crate) fn kill_supervisor_process(
    identity: &ProcessIdentity,
    paths: &StatePaths,
) -> Result<(), PlatformError> {
    let pidfd = match Pidfd::open_verified(identity) {
        Ok(Some(pidfd)) => pidfd,
        Ok(None) => return Ok(()),
        Err(e) => {
            return Err(failed(format!(
                "checking supervisor pid {}: {e}",
                identity.pid
            )));
        }
    };
    // Dead but not reaped (its parent, usually init, has not got to it yet): nothing to kill,
    // and a zombie's empty command line would not pass the check below.
    if pidfd.wait_exit(Some(Duration::ZERO)).unwrap_or(false) {
        return Ok(());
    }
    // The pidfd pins the process: whatever the command line says, the signal can only reach it.
    if !is_supervisor_of(identity.pid, &paths.dir) {
        return Err(PlatformError::Refused(format!(
            "process {} is not the supervisor of {}; it was not signalled",
            identity.pid,
            paths.dir.display()
        )));
    }
    pidfd
        .signal(Signal::SIGKILL)
        .map_err(|e| failed(format!("killing supervisor pid {}: {e}", identity.pid)))?;
    match pidfd.wait_exit(Some(SUPERVISOR_DEATH)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed(format!(
            "supervisor pid {} did not die within {SUPERVISOR_DEATH:?} of SIGKILL",
            identity.pid
        ))),
        Err(e) => Err(failed(format!(
            "waiting for supervisor pid {}: {e}",
            identity.pid
        ))),
    }
}

/// Whether `pid`'s command line is `... supervise --state-dir <dir> ...`.
fn is_supervisor_of(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir = dir.as_os_str().as_encoded_bytes();
    args.contains(&b"supervise".as_slice())
        && args
            .windows(2)
            .any(|w| w[0] == b"--state-dir".as_slice() && w[1] == dir)
}

/// Kills every process in the handle's cgroup; an absent cgroup is fine.
pub(crate) fn kill_cgroup(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<(), PlatformError> {
    let confined = confine_state(platform, handle)?;
    match recorded_cgroup(&confined.paths, &handle.task_id)? {
        Some(cgroup) => cgroup
            .kill_all()
            .map_err(|e| failed(format!("killing cgroup {}: {e}", cgroup.name()))),
        None => Ok(()),
    }
}

/// Removes the handle's cgroup; an absent cgroup is fine.
pub(crate) fn destroy_cgroup(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<(), PlatformError> {
    let confined = confine_state(platform, handle)?;
    destroy_recorded_cgroup(&confined.paths, &handle.task_id)
}

/// Kills everything in the cgroup recorded in `paths` and removes it; nothing recorded or
/// nothing there is fine.
pub(crate) fn destroy_recorded_cgroup(
    paths: &StatePaths,
    task_id: &str,
) -> Result<(), PlatformError> {
    match recorded_cgroup(paths, task_id)? {
        Some(cgroup) => {
            let name = cgroup.name().to_owned();
            cgroup
                .destroy()
                .map_err(|e| failed(format!("destroying cgroup {name}: {e}")))
        }
        None => Ok(()),
    }
}

/// Removes the handle's state dir; an absent one is fine.
pub(crate) fn remove_state(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<(), PlatformError> {
    let confined = confine_state(platform, handle)?;
    remove_dir(&confined.paths.dir)
}

/// The task's cgroup as its state dir records it, if there is one to clean up.
///
/// A cgroup is touched by name only with proof that this data dir's task created it: the
/// state dir exists and holds the `cgroup.json` the agent wrote before the supervisor
/// started. Without them (already collected, never started here, another data dir sharing
/// the parent) the answer is `None` and nothing is touched. The recorded paths are used as
/// recorded: they must be exactly what the recorded parent gives in this process, so that a
/// cleanup from another cgroup fails loudly instead of looking in the wrong place and
/// reporting success. Nothing is created here: a configured parent is opened only when its
/// directories exist, and only when the task cgroup still does.
pub(crate) fn recorded_cgroup(
    paths: &StatePaths,
    task_id: &str,
) -> Result<Option<TaskCgroup>, PlatformError> {
    if !fs::symlink_metadata(&paths.dir).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    let record_path = paths.cgroup_record();
    let record = match CgroupRecord::read(&record_path) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(None),
        Err(e) => return Err(failed(e.to_string())),
    };
    let name = cgroup_name(task_id);
    let bad = |why: String| failed(format!("cgroup record {}: {why}", record_path.display()));
    if record.name != name {
        return Err(bad(format!(
            "names cgroup {:?}, not {name:?} of task {task_id}",
            record.name
        )));
    }
    for path in &record.paths {
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain || path.file_name() != Some(OsStr::new(&name)) {
            return Err(bad(format!(
                "path {} is not a plain absolute path ending in {name}",
                path.display()
            )));
        }
    }
    if record.paths.is_empty() || !record.paths.iter().any(|p| p.exists()) {
        return Ok(None);
    }
    let parent = match &record.parent {
        Some(relative) => {
            let missing: Vec<_> = record
                .paths
                .iter()
                .filter_map(|p| p.parent())
                .filter(|p| !p.is_dir())
                .collect();
            if !missing.is_empty() {
                return Err(bad(format!(
                    "parent {} is gone in some hierarchies but the cgroup is not",
                    missing[0].display()
                )));
            }
            CgroupParent::at(relative)
        }
        None => CgroupParent::own(),
    }
    .map_err(|e| bad(format!("resolving its parent: {e}")))?;
    let mut expected: Vec<_> = parent.paths().iter().map(|p| p.join(&name)).collect();
    expected.sort();
    let mut recorded = record.paths.clone();
    recorded.sort();
    if expected != recorded {
        return Err(bad(format!(
            "the cgroup is at {recorded:?}, but the parent resolves to {expected:?} in this \
             process (another cgroup than the agent that started the task): clean up from the \
             agent's cgroup or with the same --cgroup-parent"
        )));
    }
    TaskCgroup::open(&parent, &name).map_err(|e| failed(format!("opening cgroup {name}: {e}")))
}

/// Removes `dir` and everything in it; an absent dir is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), PlatformError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(format!("removing {}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_supervisor_of_the_dir_matches() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(!is_supervisor_of(me, Path::new("/tmp/x")));
        assert!(!is_supervisor_of(i32::MAX, Path::new("/tmp/x")));
    }

    #[test]
    fn cgroups_are_touched_only_with_a_state_dir_and_a_sound_record() {
        let data = tempfile::tempdir().expect("tempdir");
        let paths = StatePaths::new(data.path(), "t1");
        // No state dir, then no record: nothing to clean, nothing resolved or created.
        assert!(matches!(recorded_cgroup(&paths, "t1"), Ok(None)));
        fs::create_dir_all(&paths.dir).expect("mkdir");
        assert!(matches!(recorded_cgroup(&paths, "t1"), Ok(None)));
        let gone = data.path().join("no-cgroup-fs/execdriver-t1");
        let record = |name: &str, path: &Path| CgroupRecord {
            name: name.into(),
            parent: Some("execdriver-test-parent-never-created".into()),
            paths: vec![path.to_owned()],
        };
        // A recorded cgroup that is not there any more: nothing is resolved (a configured
        // parent would be created by resolving it).
        record("execdriver-t1", &gone)
            .write_new(&paths.cgroup_record())
            .expect("write");
        assert!(matches!(recorded_cgroup(&paths, "t1"), Ok(None)));
        // A record that names another task's cgroup, or a path that is not its own.
        fs::remove_file(paths.cgroup_record()).expect("rm");
        record("execdriver-t2", &gone)
            .write_new(&paths.cgroup_record())
            .expect("write");
        assert!(recorded_cgroup(&paths, "t1").is_err());
        fs::remove_file(paths.cgroup_record()).expect("rm");
        record(
            "execdriver-t1",
            Path::new("/sys/fs/cgroup/../etc/execdriver-t1"),
        )
        .write_new(&paths.cgroup_record())
        .expect("write");
        assert!(recorded_cgroup(&paths, "t1").is_err());
    }

    #[test]
    fn removing_an_absent_dir_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(remove_dir(&dir.path().join("absent")), Ok(()));
        let full = dir.path().join("full");
        fs::create_dir_all(full.join("a/b")).expect("mkdir");
        assert_eq!(remove_dir(&full), Ok(()));
        assert!(!full.exists());
    }
}
