//! For tests only: a cgroup below the caller's own in every mounted hierarchy, the way a
//! service manager gives an agent's unit one (systemd tracks a unit in `name=systemd` on v1
//! and in the unified hierarchy on v2), so a test can stop the "agent's service" the way
//! systemd does by default: SIGKILL every process in it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use execdriver_core::Signal;

use super::hierarchy::{ControllerDir, all_hierarchies, parse_mountinfo, proc_cgroup_path_of};
use super::{CgroupError, fs, validate_name};
use crate::process::Pidfd;

/// A service-like cgroup the test made, removed on drop.
#[derive(Debug)]
pub struct ServiceCgroup {
    dirs: Vec<PathBuf>,
    /// The dirs in the hierarchies a service manager tracks a unit's processes by:
    /// `name=systemd` on v1 and the unified one (v2, or hybrid v1); all of them on a v1 node
    /// that has neither.
    tracked: Vec<PathBuf>,
}

impl ServiceCgroup {
    /// Creates `<own cgroup>/<name>` in every mounted hierarchy (v1 cpusets get their
    /// parent's cpus and mems, as a process cannot join an empty cpuset).
    pub fn create(name: &str) -> Result<Self, CgroupError> {
        validate_name(name)?;
        let mountinfo = fs::read(Path::new("/proc/self/mountinfo"))?;
        let own = fs::read(Path::new("/proc/self/cgroup"))?;
        let mut made = Self {
            dirs: Vec::new(),
            tracked: Vec::new(),
        };
        for h in all_hierarchies(&parse_mountinfo(&mountinfo)) {
            let rel = proc_cgroup_path_of(&own, &h.key).ok_or_else(|| CgroupError::NoOwnCgroup {
                controller: h.key.clone(),
            })?;
            let parent = ControllerDir::at(h.as_hierarchy(), rel)?;
            let dir = parent.child(name)?.dir;
            fs::ensure_dir(&dir)?;
            made.dirs.push(dir.clone());
            if h.key.is_empty() || h.key == "name=systemd" {
                made.tracked.push(dir.clone());
            }
            // v1 only: on v2 an empty cpuset means "the parent's" (and the root has no
            // cpuset.cpus to copy), which is what a service gets once a task's cpuset has
            // enabled the controller above it.
            for file in ["cpuset.cpus", "cpuset.mems"].into_iter().filter(|_| !h.key.is_empty()) {
                let target = dir.join(file);
                if target.exists() && fs::read(&target)?.trim().is_empty() {
                    let value = fs::read(&parent.dir.join(file))?;
                    fs::write(&target, value.trim())?;
                }
            }
        }
        if made.tracked.is_empty() {
            made.tracked = made.dirs.clone();
        }
        Ok(made)
    }

    /// Moves `pid` (a process the test started) into it in every hierarchy.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process the service manager counts as the unit's: those in it (or below it) in
    /// the hierarchies it tracks units by.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in &self.tracked {
            pids.extend(fs::tree_pids(dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// What a service manager does to stop the unit by default (systemd's
    /// KillMode=control-group): SIGKILL to every process it counts as the unit's (each
    /// pinned by a pidfd first), until there is none or `timeout` passes; the pids killed.
    pub fn kill_every_process(&self, timeout: Duration) -> Result<Vec<i32>, CgroupError> {
        let deadline = Instant::now() + timeout;
        let mut killed = Vec::new();
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(killed);
            }
            if Instant::now() > deadline {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs.first().cloned().unwrap_or_default(),
                    rounds: 0,
                    pids,
                });
            }
            for pid in pids {
                if let Ok(pidfd) = Pidfd::open(pid) {
                    let _ = pidfd.signal(Signal::SIGKILL);
                    let _ = pidfd.wait_exit(Some(Duration::from_secs(1)));
                    killed.push(pid);
                }
            }
        }
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
