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

use crate::cgroups::{CgroupParent, TaskCgroup};
use crate::platform::LinuxPlatform;
use crate::process::Pidfd;
use crate::reattach::confine_state;
use crate::state::StatePaths;

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
    kill_cgroup_named(&platform.cgroup_parent()?, &confined.cgroup)
}

/// Removes the handle's cgroup; an absent cgroup is fine.
pub(crate) fn destroy_cgroup(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<(), PlatformError> {
    let confined = confine_state(platform, handle)?;
    destroy_cgroup_named(&platform.cgroup_parent()?, &confined.cgroup)
}

/// Removes the handle's state dir; an absent one is fine.
pub(crate) fn remove_state(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<(), PlatformError> {
    let confined = confine_state(platform, handle)?;
    remove_dir(&confined.paths.dir)
}

/// Kills everything in cgroup `name` under `parent`, if it exists.
pub(crate) fn kill_cgroup_named(parent: &CgroupParent, name: &str) -> Result<(), PlatformError> {
    match TaskCgroup::open(parent, name) {
        Ok(Some(cgroup)) => cgroup
            .kill_all()
            .map_err(|e| failed(format!("killing cgroup {name}: {e}"))),
        Ok(None) => Ok(()),
        Err(e) => Err(failed(format!("opening cgroup {name}: {e}"))),
    }
}

/// Removes cgroup `name` under `parent`, if it exists.
pub(crate) fn destroy_cgroup_named(parent: &CgroupParent, name: &str) -> Result<(), PlatformError> {
    match TaskCgroup::open(parent, name) {
        Ok(Some(cgroup)) => cgroup
            .destroy()
            .map_err(|e| failed(format!("destroying cgroup {name}: {e}"))),
        Ok(None) => Ok(()),
        Err(e) => Err(failed(format!("opening cgroup {name}: {e}"))),
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
    use super::*;

    #[test]
    fn only_a_supervisor_of_the_dir_matches() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(!is_supervisor_of(me, Path::new("/tmp/x")));
        assert!(!is_supervisor_of(i32::MAX, Path::new("/tmp/x")));
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
