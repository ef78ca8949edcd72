//! A task cgroup on cgroup v2: one directory in the unified hierarchy, with cpu, memory and
//! pids delegated to it by its parent.
//!
//! Everything is written against the cgroup's directory ([`V2Cgroup::under_root`] takes the
//! hierarchy's root as a parameter), so a temp dir holding fake control files can stand in
//! for the file formats on a node without cgroup v2.

pub(super) mod delegation;
mod limits;
mod stats;

#[cfg(test)]
pub(super) use limits::settings;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use execdriver_core::{Resources, TaskStats};

use super::hierarchy::{ControllerDir, is_within, proc_cgroup_path};
use super::limits::page_size;
use super::{AppliedLimit, CgroupError, CgroupVersion, TaskCgroupOps, fs, kill};

/// One task's cgroup in the unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V2Cgroup {
    dir: ControllerDir,
}

impl V2Cgroup {
    /// The cgroup at `dir`.
    pub fn new(dir: ControllerDir) -> Self {
        Self { dir }
    }

    /// The cgroup `rel` (a hierarchy path such as `/a/t`) of a unified hierarchy whose root
    /// directory is `root`, offering every required controller.
    #[cfg(test)]
    pub fn under_root(root: &Path, rel: &str) -> Result<Self, CgroupError> {
        let hierarchy = super::hierarchy::Hierarchy {
            controllers: super::REQUIRED_CONTROLLERS.to_vec(),
            mountpoint: root.to_owned(),
            mount_root: "/".into(),
        };
        ControllerDir::at(hierarchy, rel).map(Self::new)
    }

    fn dir(&self) -> &Path {
        &self.dir.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Writes the limits into the existing directory and reads each back.
    fn apply(&self, resources: &Resources) -> Result<Vec<AppliedLimit>, CgroupError> {
        let settings = limits::settings(resources, page_size());
        super::limits::apply(&settings, |_| Ok(self.dir()))
    }
}

impl TaskCgroupOps for V2Cgroup {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir().to_owned()]
    }

    fn controller_path(&self, controller: &str) -> Result<PathBuf, CgroupError> {
        if self.dir.hierarchy.controllers.contains(&controller) {
            Ok(self.dir().to_owned())
        } else {
            Err(CgroupError::MissingControllers(vec![controller.to_owned()]))
        }
    }

    fn primary_path(&self) -> PathBuf {
        self.dir().to_owned()
    }

    fn exists(&self) -> bool {
        self.dir().exists()
    }

    /// Enables cpu, memory and pids in the parent's `cgroup.subtree_control` (so the new
    /// cgroup gets their files), makes the directory, applies the limits.
    fn create(&self, resources: &Resources) -> Result<Vec<AppliedLimit>, CgroupError> {
        if !resources.devices.is_empty() {
            return Err(CgroupError::DevicesNeedV1);
        }
        if let Some(parent) = self.dir().parent() {
            delegation::enable_controllers(parent)?;
            if resources.cpuset_cpus.is_some() {
                delegation::enable_controller(parent, "cpuset")?;
            }
        }
        fs::create_dir(self.dir())?;
        self.apply(resources).inspect_err(|_| {
            // Best effort: the directory is empty and was made a moment ago.
            let _ = std::fs::remove_dir(self.dir());
        })
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid(pid));
        }
        fs::write(&self.file("cgroup.procs"), &pid.to_string())
    }

    fn clone_target(&self) -> Option<OwnedFd> {
        fs::open_clone_target(self.dir())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = fs::tree_pids(self.dir())?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn has_freezer(&self) -> bool {
        // The v2 freezer is cgroup.freeze, from Linux 5.2.
        self.file("cgroup.freeze").exists()
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        fs::write(&self.file("cgroup.freeze"), "1")
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        let text = fs::read(&self.file("cgroup.events"))?;
        Ok(fs::keyed(&text, "frozen") == Some(1))
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        fs::write(&self.file("cgroup.freeze"), "0")
    }

    fn kill_by_kernel(&self) -> Result<bool, CgroupError> {
        // cgroup.kill, from Linux 5.14: SIGKILL to every member and descendant, race-free.
        let kill_file = self.file("cgroup.kill");
        if !kill_file.exists() {
            return Ok(false);
        }
        fs::write(&kill_file, "1")?;
        Ok(true)
    }

    fn signal_member(&self, pid: i32, signal: i32) -> Result<(), CgroupError> {
        let rel = self.dir.rel.as_str();
        kill::signal_member(pid, signal, |text| {
            proc_cgroup_path(text, "").is_some_and(|p| is_within(p, rel))
        })
    }

    fn stats(&self) -> Result<TaskStats, CgroupError> {
        stats::read(self.dir())
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let path = self.file("memory.events");
        let text = fs::read(&path)?;
        fs::require_keyed(&path, &text, "oom_kill")
    }

    fn remove(&self, deadline: Instant) -> Result<(), CgroupError> {
        fs::remove_tree_until(self.dir(), deadline)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::hierarchy::{Hierarchy, parse_mountinfo};
    use super::super::{KILL_ALL_BUDGET, kill::freeze_until};
    use super::*;

    /// A directory of fake control files standing in for a fresh v2 cgroup (what the kernel
    /// gives a new cgroup with cpu, memory and pids enabled in its parent).
    fn fake_cgroup(root: &Path, name: &str, extra: &[&str]) -> V2Cgroup {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = vec![
            "cpu.weight",
            "cpu.max",
            "memory.high",
            "memory.max",
            "pids.max",
            "cgroup.procs",
        ];
        files.extend_from_slice(extra);
        for f in files {
            std::fs::write(dir.join(f), "").unwrap();
        }
        V2Cgroup::under_root(root, &format!("/{name}")).unwrap()
    }

    fn read(cg: &V2Cgroup, file: &str) -> String {
        std::fs::read_to_string(cg.file(file)).unwrap()
    }

    #[test]
    fn apply_writes_the_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = fake_cgroup(tmp.path(), "t", &["memory.swap.max", "memory.oom.group"]);
        let r = Resources {
            cpu_shares: 1024,
            memory_limit_bytes: 32 << 20,
            memory_max_bytes: Some(48 << 20),
            pids_max: 16,
            cpu_max_millicores: Some(1500),
            ..Default::default()
        };
        let applied = cg.apply(&r).unwrap();
        assert_eq!(read(&cg, "cpu.weight"), "39");
        assert_eq!(read(&cg, "cpu.max"), "150000 100000");
        assert_eq!(read(&cg, "memory.high"), (32u64 << 20).to_string());
        assert_eq!(read(&cg, "memory.max"), (48u64 << 20).to_string());
        assert_eq!(read(&cg, "memory.swap.max"), "0");
        assert_eq!(read(&cg, "memory.oom.group"), "1");
        assert_eq!(read(&cg, "pids.max"), "16");
        assert_eq!(applied.len(), 7);
        assert!(applied.iter().all(|a| a.path.starts_with(tmp.path())));
    }

    #[test]
    fn apply_without_swap_or_oom_group_files_skips_them() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = fake_cgroup(tmp.path(), "t", &[]);
        let r = Resources {
            memory_limit_bytes: 64 << 20,
            ..Resources::default()
        };
        let applied = cg.apply(&r).unwrap();
        let files: Vec<String> = applied
            .iter()
            .map(|a| a.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["cpu.weight", "memory.max", "pids.max"]);
        // No max: memory.high is left alone and cpu.max too.
        assert_eq!(read(&cg, "memory.high"), "");
        assert_eq!(read(&cg, "cpu.max"), "");
        assert!(!cg.file("memory.swap.max").exists());
    }

    #[test]
    fn create_delegates_in_the_parent_and_rolls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let cg = V2Cgroup::under_root(root, "/t").unwrap();
        // A plain mkdir has no control files: the first limit fails and nothing is left.
        let err = cg.create(&Resources::default()).unwrap_err();
        assert!(err.to_string().contains("cpu.weight"), "{err}");
        assert!(!cg.exists());
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
        std::fs::create_dir(root.join("t")).unwrap();
        let err = cg.create(&Resources::default()).unwrap_err();
        assert!(matches!(err, CgroupError::AlreadyExists { .. }), "{err}");
    }

    #[test]
    fn freeze_kill_and_oom_files() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = fake_cgroup(tmp.path(), "t", &[]);
        assert!(!cg.has_freezer());
        assert!(!cg.kill_by_kernel().unwrap());
        for f in ["cgroup.freeze", "cgroup.kill"] {
            std::fs::write(cg.file(f), "").unwrap();
        }
        std::fs::write(cg.file("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(cg.has_freezer());
        cg.freeze().unwrap();
        assert_eq!(read(&cg, "cgroup.freeze"), "1");
        assert!(!cg.is_frozen().unwrap());
        std::fs::write(cg.file("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        assert!(cg.is_frozen().unwrap());
        cg.thaw().unwrap();
        assert_eq!(read(&cg, "cgroup.freeze"), "0");
        assert!(cg.kill_by_kernel().unwrap());
        assert_eq!(read(&cg, "cgroup.kill"), "1");
        std::fs::write(
            cg.file("memory.events"),
            "low 0\nhigh 3\nmax 9\noom 2\noom_kill 1\noom_group_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kill_count().unwrap(), 1);
        std::fs::write(cg.file("cgroup.procs"), "12\n7\n").unwrap();
        std::fs::create_dir(cg.file("sub")).unwrap();
        std::fs::write(cg.file("sub/cgroup.procs"), "7\n30\n").unwrap();
        assert_eq!(cg.pids().unwrap(), vec![7, 12, 30]);
        assert_eq!(cg.controller_path("memory").unwrap(), cg.dir());
    }

    /// The v2 paths (cgroup.kill, cgroup.freeze, cgroup.events) for real, on whatever cgroup2
    /// mount the node has: the unified hierarchy of a hybrid node like this one, or the only
    /// one on v2. The test cgroup has no controllers, which v2 allows even below a cgroup with
    /// processes, so it is made by hand rather than by `create`.
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
        let base = ControllerDir::at(hierarchy, &own_rel).unwrap();
        let name = format!("execdriver-test-v2-{}", std::process::id());
        let cg = V2Cgroup::new(base.child(&name).unwrap());
        let dir = cg.dir().to_owned();
        std::fs::create_dir(&dir).unwrap();
        struct Cleanup(PathBuf, Vec<std::process::Child>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for c in &mut self.1 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                let _ = fs::remove_dir_verified(&self.0.join("sub"));
                let _ = fs::remove_dir_verified(&self.0);
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

        if cg.has_freezer() {
            assert!(freeze_until(&cg, Instant::now() + Duration::from_secs(10)).unwrap());
            assert!(cg.is_frozen().unwrap());
            cg.thaw().unwrap();
            // cgroup.events reports the thaw once every task has left the freezer, which
            // can lag the write under load: poll, with a bound far above any real lag.
            let thawed_by = Instant::now() + Duration::from_secs(10);
            while cg.is_frozen().unwrap() {
                assert!(Instant::now() < thawed_by, "still frozen 10 s after thaw");
                std::thread::sleep(Duration::from_millis(5));
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
}
