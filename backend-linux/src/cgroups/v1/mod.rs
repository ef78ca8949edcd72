//! A task cgroup on cgroup v1: one directory per hierarchy of the required controllers
//! (cpu, cpuacct, memory, pids, freezer; co-mounted ones share a directory), plus cpuset for
//! a task with a cpuset and devices for a task given devices (`devices.rs`); never in the
//! others (blkio, `name=systemd`).

mod devices;
mod limits;
mod stats;

#[cfg(test)]
pub(super) use limits::settings;

use std::path::{Path, PathBuf};
use std::time::Instant;

use execdriver_core::{Resources, TaskStats};

use super::hierarchy::{ControllerDir, is_within, proc_cgroup_path};
use super::limits::page_size;
use super::{AppliedLimit, CgroupError, CgroupVersion, TaskCgroupOps, cpuset, fs, kill};

/// One task's cgroup in the v1 hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V1Cgroup {
    dirs: Vec<ControllerDir>,
}

impl V1Cgroup {
    /// The cgroup whose directory in each hierarchy is one of `dirs`.
    pub fn new(dirs: Vec<ControllerDir>) -> Self {
        Self { dirs }
    }

    fn dir_for(&self, controller: &str) -> Result<&Path, CgroupError> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.controllers.contains(&controller))
            .map(|d| d.dir.as_path())
            .ok_or_else(|| CgroupError::MissingControllers(vec![controller.to_owned()]))
    }

    /// The directory whose membership decides who is signalled: the freezer's, since that is
    /// the hierarchy the kill freezes (or the first one of a partial cgroup).
    fn membership_dir(&self) -> Option<&ControllerDir> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.controllers.contains(&"freezer"))
            .or_else(|| self.dirs.first())
    }

    /// Writes the limits into the directories just made: a cpuset directory first gets its
    /// parent's mems (and cpus, replaced by the task's), a devices one its rules.
    fn apply(&self, resources: &Resources) -> Result<Vec<AppliedLimit>, CgroupError> {
        let in_hierarchy = |c: &str| {
            self.dirs
                .iter()
                .find(|d| d.hierarchy.controllers.contains(&c))
        };
        if let Some(d) = in_hierarchy("cpuset")
            && let Some(parent) = d.dir.parent()
        {
            cpuset::inherit(parent, &d.dir)?;
        }
        let settings = limits::settings(resources, page_size());
        let applied = super::limits::apply(&settings, |c| self.dir_for(c))?;
        if !resources.devices.is_empty() {
            let d = in_hierarchy("devices").ok_or(CgroupError::OptionalHierarchyMissing {
                controller: "devices",
                what: "devices",
            })?;
            devices::apply(&d.dir, &devices::rules(&resources.devices)?)?;
        }
        Ok(applied)
    }

    fn rollback(dirs: &[&Path]) {
        for dir in dirs.iter().rev() {
            // Best effort: the directories are empty and were made a moment ago.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl TaskCgroupOps for V1Cgroup {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.clone()).collect()
    }

    fn controller_path(&self, controller: &str) -> Result<PathBuf, CgroupError> {
        self.dir_for(controller).map(Path::to_owned)
    }

    fn primary_path(&self) -> PathBuf {
        self.dir_for("freezer")
            .or_else(|_| self.dir_for("memory"))
            .map(Path::to_owned)
            .ok()
            .or_else(|| self.dirs.first().map(|d| d.dir.clone()))
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
    }

    fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.dir.exists())
    }

    fn create(&self, resources: &Resources) -> Result<Vec<AppliedLimit>, CgroupError> {
        let mut created: Vec<&Path> = Vec::new();
        for d in &self.dirs {
            if let Err(e) = fs::create_dir(&d.dir) {
                Self::rollback(&created);
                return Err(e);
            }
            created.push(&d.dir);
        }
        self.apply(resources).inspect_err(|_| {
            Self::rollback(&created);
        })
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid(pid));
        }
        for d in &self.dirs {
            fs::write(&d.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            pids.extend(fs::tree_pids(&d.dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn has_freezer(&self) -> bool {
        self.dir_for("freezer").is_ok_and(Path::exists)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        fs::write(&self.dir_for("freezer")?.join("freezer.state"), "FROZEN")
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        // FREEZING while some member has not stopped yet.
        Ok(fs::read(&self.dir_for("freezer")?.join("freezer.state"))?.trim() == "FROZEN")
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        fs::write(&self.dir_for("freezer")?.join("freezer.state"), "THAWED")
    }

    fn kill_by_kernel(&self) -> Result<bool, CgroupError> {
        // v1 has no cgroup.kill.
        Ok(false)
    }

    fn signal_member(&self, pid: i32, signal: i32) -> Result<(), CgroupError> {
        let Some(dir) = self.membership_dir() else {
            return Ok(());
        };
        let key = dir.hierarchy.proc_key(CgroupVersion::V1);
        let rel = dir.rel.as_str();
        kill::signal_member(pid, signal, |text| {
            proc_cgroup_path(text, key).is_some_and(|p| is_within(p, rel))
        })
    }

    fn stats(&self) -> Result<TaskStats, CgroupError> {
        stats::read(
            self.dir_for("memory")?,
            self.dir_for("cpu")?,
            self.dir_for("cpuacct")?,
            self.dir_for("pids")?,
        )
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let path = self.dir_for("memory")?.join("memory.oom_control");
        let text = fs::read(&path)?;
        fs::require_keyed(&path, &text, "oom_kill")
    }

    fn remove(&self, deadline: Instant) -> Result<(), CgroupError> {
        for d in &self.dirs {
            fs::remove_tree_until(&d.dir, deadline)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::hierarchy::Hierarchy;
    use super::*;

    fn cgroup_in(root: &Path, name: &str) -> V1Cgroup {
        let dirs = [
            vec!["cpu", "cpuacct"],
            vec!["memory"],
            vec!["pids"],
            vec!["freezer"],
        ]
        .into_iter()
        .map(|controllers| {
            let mountpoint = root.join(controllers.join(","));
            std::fs::create_dir_all(&mountpoint).unwrap();
            ControllerDir::at(
                Hierarchy {
                    controllers,
                    mountpoint,
                    mount_root: "/".into(),
                },
                &format!("/{name}"),
            )
            .unwrap()
        })
        .collect();
        V1Cgroup::new(dirs)
    }

    #[test]
    fn directories_per_controller_and_unknown_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = cgroup_in(tmp.path(), "t");
        assert_eq!(
            cg.controller_path("cpuacct").unwrap(),
            tmp.path().join("cpu,cpuacct/t")
        );
        assert_eq!(cg.primary_path(), tmp.path().join("freezer/t"));
        assert!(matches!(
            cg.controller_path("cpuset"),
            Err(CgroupError::MissingControllers(_))
        ));
        // Nothing made yet: no members, no freezer, and not there.
        assert!(!cg.exists());
        assert!(cg.pids().unwrap().is_empty());
        assert!(!cg.has_freezer());
        assert!(!cg.kill_by_kernel().unwrap());
        assert!(matches!(cg.add_process(0), Err(CgroupError::InvalidPid(0))));
        cg.remove(Instant::now()).unwrap();
    }

    /// Plain directories stand in for cgroupfs: mkdir makes no control files, so the first
    /// limit fails, and the create must leave nothing behind.
    #[test]
    fn a_failed_create_is_rolled_back() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = cgroup_in(tmp.path(), "t");
        let err = cg.create(&Resources::default()).unwrap_err();
        assert!(err.to_string().contains("cpu.shares"), "{err}");
        assert!(!cg.exists());
        // An existing cgroup is refused and kept.
        std::fs::create_dir(tmp.path().join("memory/t")).unwrap();
        let err = cg.create(&Resources::default()).unwrap_err();
        assert!(matches!(err, CgroupError::AlreadyExists { .. }), "{err}");
        assert!(tmp.path().join("memory/t").is_dir());
        assert!(!tmp.path().join("cpu,cpuacct/t").exists());
    }

    #[test]
    fn freezer_state_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = cgroup_in(tmp.path(), "t");
        let freezer = tmp.path().join("freezer/t");
        let state = freezer.join("freezer.state");
        // Emptied before each write: a plain file keeps what lies past a shorter write.
        let reset = |text: &str| std::fs::write(&state, text).unwrap();
        let read = || std::fs::read_to_string(&state).unwrap();
        std::fs::create_dir(&freezer).unwrap();
        reset("");
        assert!(cg.has_freezer());
        cg.freeze().unwrap();
        assert_eq!(read(), "FROZEN");
        assert!(cg.is_frozen().unwrap());
        reset("FREEZING\n");
        assert!(!cg.is_frozen().unwrap());
        reset("");
        cg.thaw().unwrap();
        assert_eq!(read(), "THAWED");
        assert!(!cg.is_frozen().unwrap());
    }

    #[test]
    fn oom_kill_count_from_oom_control() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = cgroup_in(tmp.path(), "t");
        let mem = tmp.path().join("memory/t");
        std::fs::create_dir(&mem).unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kill_count().unwrap(), 2);
        assert!(cg.oom_killed().unwrap());
        std::fs::write(mem.join("memory.oom_control"), "under_oom 0\n").unwrap();
        let err = cg.oom_kill_count().unwrap_err().to_string();
        assert!(
            err.contains("memory.oom_control") && err.contains("oom_kill"),
            "{err}"
        );
    }
}
