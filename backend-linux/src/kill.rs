//! The kill path: the orphan cleanup by cgroup membership, used when a supervisor is gone.
//!
//! (The force kill of a live task goes through its supervisor: `kill` on the socket.)
//! Every step confines the handle first, so a forged handle can never make us kill or
//! remove anything outside this driver's data dir and cgroup parent. The task itself is
//! killed by cgroup membership, never by a stored pid; the supervisor only through a pidfd
//! opened after its start time matched, and only if its command line shows it is the
//! supervisor of this very state dir.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use execdriver_core::{HandleId, PlatformError, ProcessIdentity, Signal};

use crate::cgroups::{TaskCgroup, cgroup_name};
use crate::platform::LinuxPlatform;
use crate::process::Pidfd;
use crate::reattach::confine_state;
use crate::state::{CgroupRecord, StatePaths};
use crate::supervisor::exit_record;

/// How long a process whose command line is not the supervisor's gets to turn out to be a
/// supervisor in the middle of exiting.
const DYING_GRACE: Duration = Duration::from_secs(1);
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
        // A supervisor exiting after its linger shows an empty command line for a moment
        // before it is a zombie: if it dies within the grace, there was nothing to kill.
        if pidfd.wait_exit(Some(DYING_GRACE)).unwrap_or(false) {
            return Ok(());
        }
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
    check_exit_record(&confined.paths, handle)?;
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
    check_exit_record(&confined.paths, handle)?;
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
    check_exit_record(&confined.paths, handle)?;
    // The state dir holds the only proof that the cgroup is ours: while the cgroup is still
    // there (an earlier step failed), keep the record so a later cleanup can finish the job.
    if let Ok(Some(cgroup)) = recorded_cgroup(&confined.paths, &handle.task_id) {
        return Err(failed(format!(
            "kept {}: task cgroup {} still exists, and its record is needed to remove it later",
            confined.paths.dir.display(),
            cgroup.name()
        )));
    }
    remove_dir(&confined.paths.dir)
}

/// The task's cgroup as its state dir records it, if there is one to clean up.
///
/// A cgroup is touched by name only with proof that this data dir's task created it and has
/// not removed it yet: the state dir holds the `cgroup.json` the agent wrote before the
/// supervisor started, and the `cgroup.created` mark the supervisor writes only after
/// creating the cgroup and removes (with the record) once the cgroup is gone. Without both
/// (already collected, never created here, removed after the exit) the answer is `None` and
/// nothing is touched, so a cgroup of the same name that another data dir sharing the parent
/// created meanwhile is never ours. The recorded paths are used as
/// recorded ([`TaskCgroup::open_recorded`] checks each lies in a cgroup hierarchy of this
/// node and ends in the task's cgroup name), never re-derived from the recorded parent: that
/// would resolve the caller's own cgroup, which differs when the cleanup runs from another
/// process than the agent. Nothing is created.
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
    match fs::symlink_metadata(paths.cgroup_created()) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(failed(format!(
                "{} is not a regular file",
                paths.cgroup_created().display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(failed(format!(
                "reading {}: {e}",
                paths.cgroup_created().display()
            )));
        }
    }
    let name = cgroup_name(task_id);
    let bad = |why: String| failed(format!("cgroup record {}: {why}", record_path.display()));
    if record.name != name {
        return Err(bad(format!(
            "names cgroup {:?}, not {name:?} of task {task_id}",
            record.name
        )));
    }
    TaskCgroup::open_recorded(&name, &record.paths).map_err(|e| bad(e.to_string()))
}

/// Refuses a state dir whose exit record belongs to another supervisor and task: the task id
/// was collected and reused, and its cgroup and state are the new task's. An unreadable
/// record proves nothing either way; the cgroup steps still need the created mark.
fn check_exit_record(paths: &StatePaths, handle: &HandleId) -> Result<(), PlatformError> {
    match exit_record::read(&paths.exit_record()) {
        Ok(Some(record)) => record
            .check(&handle.supervisor.process, &handle.task)
            .map(|_| ())
            .map_err(|why| {
                PlatformError::Refused(format!(
                    "task {}: {why}; nothing of it was touched",
                    handle.task_id
                ))
            }),
        Ok(None) | Err(_) => Ok(()),
    }
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
    use std::path::PathBuf;

    use super::*;
    use crate::cgroups::CgroupParent;

    #[test]
    fn only_a_supervisor_of_the_dir_matches() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(!is_supervisor_of(me, Path::new("/tmp/x")));
        assert!(!is_supervisor_of(i32::MAX, Path::new("/tmp/x")));
        // A process whose command line reads like a supervisor of /tmp/x (sh's $0 and
        // positional arguments land in its cmdline): it matches that dir and no other.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read x", "sh", "supervise", "--state-dir", "/tmp/x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pid = i32::try_from(child.id()).expect("pid");
        // spawn returns while execve may still be swapping the image in, when the kernel
        // shows an empty cmdline: wait (bounded) for the new one.
        let cmdline = format!("/proc/{pid}/cmdline");
        let by = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read(&cmdline).map_or(true, |c| c.is_empty()) && std::time::Instant::now() < by {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let matched = is_supervisor_of(pid, Path::new("/tmp/x"));
        let other = is_supervisor_of(pid, Path::new("/tmp/y"));
        drop(child.stdin.take());
        let _ = child.wait();
        assert!(matched, "the supervisor of /tmp/x was not recognised");
        assert!(!other, "a supervisor of /tmp/x matched /tmp/y");
    }

    #[test]
    fn cgroups_are_touched_only_with_a_state_dir_and_a_sound_record() {
        let data = tempfile::tempdir().expect("tempdir");
        let task = format!("absent-{}", std::process::id());
        let name = cgroup_name(&task);
        let paths = StatePaths::new(data.path(), &task);
        // No state dir, then no record: nothing to clean, nothing resolved or created.
        assert!(matches!(recorded_cgroup(&paths, &task), Ok(None)));
        fs::create_dir_all(&paths.dir).expect("mkdir");
        assert!(matches!(recorded_cgroup(&paths, &task), Ok(None)));
        // A record without the supervisor's created mark is not acted on, however sound.
        let outside = data.path().join("no-cgroup-fs").join(&name);
        CgroupRecord {
            name: "execdriver-other".into(),
            parent: None,
            paths: vec![outside.clone()],
        }
        .write_new(&paths.cgroup_record())
        .expect("write");
        assert!(matches!(recorded_cgroup(&paths, &task), Ok(None)));
        crate::state::write_cgroup_created(&paths.cgroup_created()).expect("mark");
        let with_record = |name: &str, path: &Path| {
            let _ = fs::remove_file(paths.cgroup_record());
            CgroupRecord {
                name: name.into(),
                parent: Some("execdriver-test-parent-never-created".into()),
                paths: vec![path.to_owned()],
            }
            .write_new(&paths.cgroup_record())
            .expect("write");
            recorded_cgroup(&paths, &task)
        };
        // A record that names another task's cgroup, a path outside every cgroup mount, or
        // one that climbs out with `..`.
        assert!(with_record("execdriver-other", &outside).is_err());
        assert!(with_record(&name, &outside).is_err());
        let climbing = PathBuf::from(format!("/sys/fs/cgroup/memory/../../etc/{name}"));
        assert!(with_record(&name, &climbing).is_err());
        // A recorded cgroup that is not there any more, in a real hierarchy: nothing to do,
        // and the configured parent it names is not created by looking.
        if let Ok(own) = CgroupParent::own() {
            let gone = own.paths()[0].join(&name);
            assert!(matches!(with_record(&name, &gone), Ok(None)));
            assert!(!gone.exists());
            let parent = own.paths()[0].join("execdriver-test-parent-never-created");
            assert!(!parent.exists());
        }
    }

    #[test]
    fn a_process_that_is_not_the_supervisor_is_refused_unless_it_is_exiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = StatePaths::at(dir.path());
        let identity_of = |child: &std::process::Child| {
            crate::process::identity(i32::try_from(child.id()).expect("pid")).expect("identity")
        };
        // Exits within the grace: what a supervisor leaving after its linger looks like.
        let mut exiting = std::process::Command::new("/bin/sleep")
            .arg("0.2")
            .spawn()
            .expect("sleep");
        assert_eq!(
            kill_supervisor_process(&identity_of(&exiting), &paths),
            Ok(())
        );
        assert!(
            exiting.wait().expect("wait").success(),
            "it was not signalled"
        );
        let mut stranger = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let refused = kill_supervisor_process(&identity_of(&stranger), &paths);
        assert!(
            matches!(refused, Err(PlatformError::Refused(_))),
            "{refused:?}"
        );
        assert!(
            stranger.try_wait().expect("try_wait").is_none(),
            "it was signalled"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
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
