//! The orphan cleanup: what the driver does without a supervisor (lost, unresponsive, or
//! refusing to finish a kill), by the task's records, each step on its own and each within
//! the caller's deadline.
//!
//! Every step first confines the handle (see [`super::confine`]): a handle of another task,
//! or of an earlier task whose id was reused, touches nothing. Then it acts only on what the
//! records prove is the task's: the supervisor process pinned by pid and start time (and its
//! command line), the cgroup named by `cgroup.json` with the supervisor's `cgroup.created`
//! mark. The state dir goes last, and only once the cgroup is verifiably gone, since its
//! record is what a later cleanup needs.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use execdriver_core::{HandleId, PlatformError, ProcessIdentity, Refusal, Signal};

use super::confine::confine_state;
use super::liveness::{self, DYING_GRACE};
use crate::process::Pidfd;
use crate::state::{StatePaths, recorded_cgroup};

/// The longest a SIGKILLed supervisor (or a killed task's init) is waited for, whatever the
/// deadline.
const SUPERVISOR_DEATH: Duration = Duration::from_secs(5);

fn failed(message: String) -> PlatformError {
    PlatformError::other(message)
}

/// Kills the handle's supervisor if it is still the recorded process.
pub(crate) fn kill_supervisor(
    data_dir: &Path,
    handle: &HandleId,
    deadline: Instant,
) -> Result<(), PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    kill_supervisor_process(&handle.supervisor.process, &confined.paths, deadline)
}

/// SIGKILLs `identity` and waits for it (by `deadline`), if it is alive, the same process
/// (start time) and the supervisor of `paths`. A process that is gone is not an error.
pub(crate) fn kill_supervisor_process(
    identity: &ProcessIdentity,
    paths: &StatePaths,
    deadline: Instant,
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
        if liveness::dies_within(identity, DYING_GRACE, deadline).unwrap_or(false) {
            return Ok(());
        }
        return Err(PlatformError::refused(
            Refusal::NotSupervisor,
            format!(
                "process {} is not the supervisor of {}; it was not signalled",
                identity.pid,
                paths.dir.display()
            ),
        ));
    }
    pidfd
        .signal(Signal::SIGKILL)
        .map_err(|e| failed(format!("killing supervisor pid {}: {e}", identity.pid)))?;
    // SIGKILL ends a stopped process too, and at once; the wait is bounded all the same.
    let who = format!("supervisor pid {}", identity.pid);
    wait_dead(&pidfd, deadline, &who, |wait| {
        format!("did not die within {wait:?} of SIGKILL")
    })
}

/// Waits for `pidfd`'s process to exit: by `deadline`, but at least 100 ms and at most
/// [`SUPERVISOR_DEATH`]. `who` names it in the errors; `late` says what its outlasting the
/// wait means.
fn wait_dead(
    pidfd: &Pidfd,
    deadline: Instant,
    who: &str,
    late: impl FnOnce(Duration) -> String,
) -> Result<(), PlatformError> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), SUPERVISOR_DEATH);
    match pidfd.wait_exit(Some(wait)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed(format!("{who} {}", late(wait)))),
        Err(e) => Err(failed(format!("waiting for {who}: {e}"))),
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

/// Kills every process in the handle's cgroup by `deadline`; an absent cgroup is fine.
pub(crate) fn kill_cgroup(
    data_dir: &Path,
    handle: &HandleId,
    deadline: Instant,
) -> Result<(), PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    match recorded_cgroup(&confined.paths, &handle.task_id).map_err(PlatformError::cgroup)? {
        Some(cgroup) => {
            cgroup
                .kill_all_within(deadline.saturating_duration_since(Instant::now()))
                .map_err(|e| {
                    PlatformError::cgroup(format!("killing cgroup {}: {e}", cgroup.name()))
                })?;
            wait_task_gone(&handle.task, deadline)
        }
        None => Ok(()),
    }
}

/// Waits (by `deadline`) until the task's recorded init has exited. An empty cgroup.procs
/// does not say that: a process leaves the list early in its exit, and a pid namespace's
/// init then still waits for the rest of its namespace to be reaped, looking alive.
fn wait_task_gone(task: &ProcessIdentity, deadline: Instant) -> Result<(), PlatformError> {
    let pidfd = match Pidfd::open_verified(task) {
        Ok(Some(pidfd)) => pidfd,
        Ok(None) => return Ok(()),
        Err(e) => return Err(failed(format!("checking task pid {}: {e}", task.pid))),
    };
    let who = format!("task init pid {}", task.pid);
    wait_dead(&pidfd, deadline, &who, |wait| {
        format!(
            "has not finished exiting {wait:?} after its cgroup was emptied (an init exits \
             once every process of its namespace is reaped, exec'd commands included)"
        )
    })
}

/// Removes the handle's cgroup by `deadline`; an absent cgroup is fine.
pub(crate) fn destroy_cgroup(
    data_dir: &Path,
    handle: &HandleId,
    deadline: Instant,
) -> Result<(), PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    destroy_recorded_cgroup(&confined.paths, &handle.task_id, deadline)
}

/// Kills everything in the cgroup recorded in `paths` and removes it, by `deadline`; nothing
/// recorded or nothing there is fine.
pub(crate) fn destroy_recorded_cgroup(
    paths: &StatePaths,
    task_id: &str,
    deadline: Instant,
) -> Result<(), PlatformError> {
    match recorded_cgroup(paths, task_id).map_err(PlatformError::cgroup)? {
        Some(cgroup) => {
            let name = cgroup.name().to_owned();
            cgroup
                .destroy_within(deadline.saturating_duration_since(Instant::now()))
                .map_err(|e| PlatformError::cgroup(format!("destroying cgroup {name}: {e}")))?;
            crate::state::remove_cgroup_record(paths).map_err(|e| {
                PlatformError::io(
                    paths.cgroup_record(),
                    e.kind(),
                    format!("cgroup {name} removed, but its record stays: {e}"),
                )
            })
        }
        None => Ok(()),
    }
}

/// Removes the handle's state dir; an absent one is fine.
pub(crate) fn remove_state(data_dir: &Path, handle: &HandleId) -> Result<(), PlatformError> {
    let confined = confine_state(data_dir, handle)?;
    remove_state_dir(&confined.paths, &handle.task_id)
}

/// Removes a state dir, unless it still holds the record a later cleanup needs: the
/// cgroup it names still exists, or the record cannot be read to tell.
pub(crate) fn remove_state_dir(paths: &StatePaths, task_id: &str) -> Result<(), PlatformError> {
    match recorded_cgroup(paths, task_id) {
        Ok(None) => remove_dir(&paths.dir),
        Ok(Some(cgroup)) => Err(failed(format!(
            "kept {}: task cgroup {} still exists, and its record is needed to remove it later",
            paths.dir.display(),
            cgroup.name()
        ))),
        Err(e) => Err(failed(format!(
            "kept {}: cannot tell whether the task cgroup is gone ({e}), and its record may be              needed to remove it later",
            paths.dir.display()
        ))),
    }
}

/// Removes `dir` and everything in it; an absent dir is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), PlatformError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PlatformError::io(
            dir,
            e.kind(),
            format!("removing {}: {e}", dir.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cgroups::{CgroupParent, cgroup_name};
    use crate::state::CgroupRecord;

    #[test]
    fn only_a_supervisor_of_the_dir_matches() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(!is_supervisor_of(me, Path::new("/tmp/x")));
        assert!(!is_supervisor_of(i32::MAX, Path::new("/tmp/x")));
        // A process whose command line reads like a supervisor of /tmp/x (sh's $0 and
        // positional arguments land in its cmdline): it matches that dir and no other.
        let mut child = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "echo up; read x",
                "sh",
                "supervise",
                "--state-dir",
                "/tmp/x",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pid = i32::try_from(child.id()).expect("pid");
        // Until execve is done the kernel shows the forking test's cmdline (or none): the
        // shell's first line says its own is in place.
        let mut up = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut up).expect("up");
        assert_eq!(up, "up\n");
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
            join: Vec::new(),
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
                join: Vec::new(),
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
        // Exits within the grace (as soon as its stdin closes, which is just before the kill
        // is asked for): what a supervisor leaving after its linger looks like.
        let mut exiting = std::process::Command::new("/bin/sh")
            .args(["-c", "echo up; read x; exit 0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut up = String::new();
        let stdout = exiting.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut up).expect("up");
        let identity = identity_of(&exiting);
        drop(exiting.stdin.take());
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(kill_supervisor_process(&identity, &paths, soon), Ok(()));
        assert!(exiting.wait().expect("wait").success(), "it was signalled");
        let mut stranger = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let refused = kill_supervisor_process(&identity_of(&stranger), &paths, soon);
        assert!(
            matches!(refused, Err(PlatformError::Refused { .. })),
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
