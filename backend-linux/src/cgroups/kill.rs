//! Killing everything in a task cgroup: `cgroup.kill` on v2 where the kernel has it, otherwise
//! freeze, SIGKILL each member by pidfd, thaw, and repeat until the cgroup is empty.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use cgroups_rs::freezer::FreezerController;
use execdriver_core::Signal;

use crate::process::{Pidfd, ProcessError};

use super::hierarchy::proc_cgroup_path;
use super::limits::lib_error;
use super::{CgroupError, CgroupVersion, TaskCgroup, fs};

/// How long one round waits for the freezer to report FROZEN (at most).
const FREEZE_WAIT: Duration = Duration::from_millis(500);
/// How long one round waits for killed members to leave the cgroup (at most).
const EXIT_WAIT: Duration = Duration::from_millis(500);
/// The part of [`KILL_ALL_BUDGET`] that `cgroup.kill` gets before the per-pid rounds, which
/// name the survivors, take over.
const CGROUP_KILL_WAIT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(5);

impl TaskCgroup {
    /// The kill-all algorithm behind [`TaskCgroup::kill_all`], within `budget`.
    pub(super) fn kill_everything(&self, budget: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let deadline = start + budget;
        if self.pids()?.is_empty() {
            return Ok(());
        }
        if self.version == CgroupVersion::V2 {
            let dir = self.primary_dir();
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                fs::write(&kill_file, "1")?;
                if self.wait_empty((start + CGROUP_KILL_WAIT).min(deadline))? {
                    return Ok(());
                }
                // Fall through to the per-pid rounds, which name the survivors.
            }
        }
        let freezer = self.dir_for("freezer").ok().filter(|d| d.exists());
        let mut rounds = 0;
        // At least one round, however little of the budget cgroup.kill left.
        while rounds == 0 || Instant::now() < deadline {
            rounds += 1;
            if let Some(dir) = freezer {
                self.freeze(dir, (Instant::now() + FREEZE_WAIT).min(deadline))?;
            }
            let killed = self.pids().and_then(|pids| {
                for pid in pids {
                    self.kill_member(pid)?;
                }
                Ok(())
            });
            // Thaw even after a failed kill: a frozen task would otherwise stay stuck forever.
            let thawed = match freezer {
                Some(dir) => self.thaw(dir),
                None => Ok(()),
            };
            killed?;
            thawed?;
            if self.wait_empty((Instant::now() + EXIT_WAIT).min(deadline))? {
                return Ok(());
            }
        }
        Err(CgroupError::NotEmpty {
            path: self.primary_dir().to_owned(),
            rounds,
            pids: self.pids()?,
        })
    }

    /// Polls until no pid is left; true if that happened by `deadline` (checked at least
    /// once, even past it).
    fn wait_empty(&self, deadline: Instant) -> Result<bool, CgroupError> {
        loop {
            if self.pids()?.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            sleep(POLL);
        }
    }

    /// Freezes and waits (bounded) until the kernel reports the cgroup frozen. A cgroup that
    /// stays FREEZING is still killed: SIGKILL reaches its members once they are thawed.
    fn freeze(&self, dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
        let v2 = self.version == CgroupVersion::V2;
        let (file, value) = if v2 {
            ("cgroup.freeze", "1")
        } else {
            ("freezer.state", "FROZEN")
        };
        FreezerController::new(dir.to_owned(), v2)
            .freeze()
            .map_err(|e| lib_error(&dir.join(file), value, e))?;
        while Instant::now() < deadline {
            if is_frozen(dir, v2)? {
                break;
            }
            sleep(POLL);
        }
        Ok(())
    }

    fn thaw(&self, dir: &Path) -> Result<(), CgroupError> {
        let v2 = self.version == CgroupVersion::V2;
        let (file, value) = if v2 {
            ("cgroup.freeze", "0")
        } else {
            ("freezer.state", "THAWED")
        };
        FreezerController::new(dir.to_owned(), v2)
            .thaw()
            .map_err(|e| lib_error(&dir.join(file), value, e))
    }

    /// SIGKILLs `pid` by pidfd if it is still a member of this cgroup (or a descendant).
    fn kill_member(&self, pid: i32) -> Result<(), CgroupError> {
        let freezer = self.dir_for("freezer").ok();
        let Some(dir) = self
            .dirs
            .iter()
            .find(|c| Some(c.dir.as_path()) == freezer)
            .or_else(|| self.dirs.first())
        else {
            return Ok(());
        };
        let key = dir.hierarchy.proc_key(self.version);
        let rel = dir.rel.as_str();
        signal_member(pid, libc::SIGKILL, |text| {
            proc_cgroup_path(text, key).is_some_and(|p| {
                p == rel || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
            })
        })
    }
}

/// Whether the freezer reports the cgroup fully frozen.
fn is_frozen(dir: &Path, v2: bool) -> Result<bool, CgroupError> {
    if v2 {
        let path = dir.join("cgroup.events");
        let text = fs::read(&path)?;
        Ok(fs::keyed(&text, "frozen") == Some(1))
    } else {
        Ok(fs::read(&dir.join("freezer.state"))?.trim() == "FROZEN")
    }
}

/// Sends `signal` to `pid` through a pidfd, but only if `is_member` accepts its
/// /proc/<pid>/cgroup: a pid reused by a process outside the cgroup is left alone, and once
/// the pidfd is open the signal can only reach the process it was opened on.
pub(super) fn signal_member(
    pid: i32,
    signal: i32,
    is_member: impl Fn(&str) -> bool,
) -> Result<(), CgroupError> {
    let pidfd = match Pidfd::open(pid) {
        Ok(fd) => Some(fd),
        Err(ProcessError::NotFound { .. } | ProcessError::InvalidPid { .. }) => return Ok(()),
        // Kernels before 5.3: fall back to kill(2) after the membership check below.
        Err(ProcessError::Syscall { source, .. })
            if source.raw_os_error() == Some(libc::ENOSYS) =>
        {
            None
        }
        Err(e) => {
            return Err(CgroupError::Signal {
                pid,
                source: process_io_error(e),
            });
        }
    };
    let text = match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(source) => return Err(CgroupError::Signal { pid, source }),
    };
    if !is_member(&text) {
        return Ok(());
    }
    let sig = Signal::new(signal).map_err(|e| CgroupError::Signal {
        pid,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    match &pidfd {
        // If the pidfd's process had already exited, /proc/<pid> may have shown another
        // process; the signal then fails with ESRCH (not an error for Pidfd::signal)
        // instead of reaching that one.
        Some(fd) => fd.signal(sig).map_err(|e| CgroupError::Signal {
            pid,
            source: process_io_error(e),
        }),
        None => {
            // SAFETY: kill(2) takes plain integers.
            let rc = unsafe { libc::kill(pid, signal) };
            let err = std::io::Error::last_os_error();
            if rc == 0 || err.raw_os_error() == Some(libc::ESRCH) {
                Ok(())
            } else {
                Err(CgroupError::Signal { pid, source: err })
            }
        }
    }
}

/// The OS error inside a [`ProcessError`], or the error as text.
fn process_io_error(e: ProcessError) -> std::io::Error {
    match e {
        ProcessError::Syscall { source, .. } | ProcessError::ReadStat { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::hierarchy::{Hierarchy, parse_mountinfo};
    use super::super::{ControllerDir, KILL_ALL_BUDGET, remove_dir_verified};
    use super::*;

    /// The v2 paths (cgroup.kill, cgroup.freeze, cgroup.events) on whatever cgroup2 mount the
    /// node has: the unified hierarchy of a hybrid node like this one, or the only one on v2.
    /// The test cgroup has no controllers, which v2 allows even below a cgroup with processes.
    #[test]
    fn v2_cgroup_kill_freeze_and_remove() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = parse_mountinfo(&mountinfo)
            .into_iter()
            .find(|m| m.fstype == "cgroup2");
        let reason = mount.is_none().then(|| "no cgroup2 mount".to_owned());
        let test = "v2_cgroup_kill_freeze_and_remove";
        if !(crate::testing::require_root(test, "creates a cgroup")
            && crate::testing::require(test, reason))
        {
            return;
        }
        let Some(mount) = mount else { return };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own_rel = proc_cgroup_path(&own, "").unwrap().to_owned();
        let hierarchy = Hierarchy {
            controllers: vec!["freezer"],
            mountpoint: mount.mountpoint,
            mount_root: mount.root,
        };
        let base = ControllerDir {
            dir: hierarchy.dir_of(&own_rel).unwrap(),
            rel: own_rel,
            hierarchy,
        };
        let name = format!("execdriver-test-v2-{}", std::process::id());
        let cg = TaskCgroup {
            name: name.clone(),
            version: CgroupVersion::V2,
            dirs: vec![base.child(&name).unwrap()],
        };
        let dir = cg.dirs[0].dir.clone();
        std::fs::create_dir(&dir).unwrap();
        struct Cleanup(std::path::PathBuf, Vec<std::process::Child>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for c in &mut self.1 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                let _ = remove_dir_verified(&self.0.join("sub"));
                let _ = remove_dir_verified(&self.0);
            }
        }
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .unwrap()
        };
        let mut guard = Cleanup(dir.clone(), vec![spawn(), spawn()]);
        let pids: Vec<i32> = guard
            .1
            .iter()
            .map(|c| i32::try_from(c.id()).unwrap())
            .collect();
        cg.add_process(pids[0]).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/cgroup.procs"), pids[1].to_string()).unwrap();
        let mut sorted = pids.clone();
        sorted.sort_unstable();
        assert_eq!(cg.pids().unwrap(), sorted);

        if dir.join("cgroup.freeze").exists() {
            cg.freeze(&dir, Instant::now() + FREEZE_WAIT).unwrap();
            assert!(is_frozen(&dir, true).unwrap());
            cg.thaw(&dir).unwrap();
            // cgroup.events reports the thaw once every task has left the freezer, which
            // can lag the write under load: poll, with a bound far above any real lag.
            let thawed_by = Instant::now() + Duration::from_secs(10);
            while is_frozen(&dir, true).unwrap() {
                assert!(Instant::now() < thawed_by, "still frozen 10 s after thaw");
                sleep(Duration::from_millis(5));
            }
        }

        let started = Instant::now();
        cg.kill_all().unwrap();
        assert!(started.elapsed() < KILL_ALL_BUDGET + Duration::from_secs(1));
        assert!(cg.pids().unwrap().is_empty());
        for c in &mut guard.1 {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGKILL));
        }
        cg.destroy().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn signal_member_skips_non_members_and_dead_pids() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        signal_member(pid, libc::SIGKILL, |_| false).unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "a non-member was signalled"
        );
        signal_member(pid, libc::SIGKILL, |_| true).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        // Reaped: the pid is gone (or reused by a stranger, which the predicate refuses).
        signal_member(pid, libc::SIGKILL, |_| false).unwrap();
    }
}
