//! For tests only: a stand-in for the cgroup Nomad's client names for a task's cpuset
//! (`cpuset_cgroup`), made by the test where it may make cgroups and removed on drop: on v1
//! in the cpuset hierarchy below the caller's own cgroup there, with its parent's cpus and
//! mems (as Nomad's `nomad/share` partition has); on v2 below a given parent (the test's
//! cgroup parent), offered cpu, memory and pids by that parent (and cpuset, enabled from the
//! root down where each level offers it), as Nomad's `share.slice/<alloc>.<task>.scope` is.

use std::path::{Path, PathBuf};

use super::hierarchy::{ControllerDir, Layout, proc_cgroup_path};
use super::v2::delegation;
use super::{CgroupError, CgroupVersion, fs, validate_name};

/// A stand-in for Nomad's cpuset cgroup, with its children made by [`NomadCgroup::child`];
/// every directory is removed on drop, deepest first.
#[derive(Debug)]
pub struct NomadCgroup {
    version: CgroupVersion,
    /// What was made, in order.
    dirs: Vec<PathBuf>,
}

impl NomadCgroup {
    /// Creates `name`: on v1 below the caller's own cgroup in the cpuset hierarchy, on v2
    /// below `v2_parent` (one of the test's own cgroups, whose subtree_control gets cpu,
    /// memory and pids, and cpuset where every level above offers it).
    pub fn create(name: &str, v2_parent: &Path) -> Result<Self, CgroupError> {
        validate_name(name)?;
        let layout = Layout::detect_complete()?;
        let parent = match layout.version {
            CgroupVersion::V1 => {
                let hierarchy = layout.optional("cpuset").ok_or(
                    CgroupError::OptionalHierarchyMissing {
                        controller: "cpuset",
                        what: "a stand-in of Nomad's cpuset cgroup",
                    },
                )?;
                let own = fs::read(Path::new("/proc/self/cgroup"))?;
                let rel = proc_cgroup_path(&own, "cpuset").ok_or_else(|| {
                    CgroupError::NoOwnCgroup {
                        controller: "cpuset".into(),
                    }
                })?;
                ControllerDir::at(hierarchy.clone(), rel)?.dir
            }
            CgroupVersion::V2 => {
                delegation::enable_controllers(v2_parent)?;
                // cpuset down from the root where each level offers it, as the driver enables
                // it for a task with cpus, so that the reserved-cores case can run.
                let mount = layout
                    .hierarchies
                    .first()
                    .map(|h| h.mountpoint.clone())
                    .ok_or(CgroupError::NotMounted)?;
                let mut dir = mount.clone();
                let below = v2_parent.strip_prefix(&mount).unwrap_or(Path::new(""));
                let mut levels = vec![dir.clone()];
                for component in below.components() {
                    dir.push(component);
                    levels.push(dir.clone());
                }
                for level in levels {
                    let offered = fs::read(&level.join("cgroup.controllers"))?;
                    if !offered.split_whitespace().any(|c| c == "cpuset") {
                        break;
                    }
                    delegation::enable_controller(&level, "cpuset")?;
                }
                v2_parent.to_owned()
            }
        };
        let mut made = Self {
            version: layout.version,
            dirs: Vec::new(),
        };
        made.make(&parent.join(name), true)?;
        Ok(made)
    }

    /// Makes `name` below the deepest directory made so far, as Nomad makes a task's
    /// reserved-cores cgroup (`reserve/<alloc>.<task>`): on v1 with its parent's mems and no
    /// cpus; on v2 offered cpu, memory and pids, and cpuset where the parent has it, as
    /// Nomad's `reserve.slice` offers them, with nothing enabled below. Its path.
    pub fn child(&mut self, name: &str) -> Result<PathBuf, CgroupError> {
        validate_name(name)?;
        if self.version == CgroupVersion::V2 {
            let above = self.path().to_owned();
            delegation::enable_controllers(&above)?;
            let offered = fs::read(&above.join("cgroup.controllers"))?;
            if offered.split_whitespace().any(|c| c == "cpuset") {
                delegation::enable_controller(&above, "cpuset")?;
            }
        }
        let dir = self.path().join(name);
        self.make(&dir, false)?;
        Ok(dir)
    }

    fn make(&mut self, dir: &Path, with_cpus: bool) -> Result<(), CgroupError> {
        fs::create_dir(dir)?;
        self.dirs.push(dir.to_owned());
        if self.version == CgroupVersion::V1 {
            let above = dir.parent().unwrap_or(dir);
            let files: &[&str] = if with_cpus {
                &["cpuset.cpus", "cpuset.mems"]
            } else {
                &["cpuset.mems"]
            };
            for file in files {
                let value = fs::read(&above.join(file))?;
                fs::write(&dir.join(file), value.trim())?;
            }
        }
        Ok(())
    }

    /// The deepest directory made.
    pub fn path(&self) -> &Path {
        self.dirs.last().map_or(Path::new("/"), PathBuf::as_path)
    }

    /// The first one made (the stand-in itself).
    pub fn top(&self) -> &Path {
        self.dirs.first().map_or(Path::new("/"), PathBuf::as_path)
    }

    /// The path, from its hierarchy's root, that a `/proc/PID/cgroup` text gives for this
    /// stand-in's hierarchy (the cpuset one on v1, the unified one on v2).
    pub fn hierarchy_path_in<'a>(&self, proc_cgroup: &'a str) -> Option<&'a str> {
        let key = match self.version {
            CgroupVersion::V1 => "cpuset",
            CgroupVersion::V2 => "",
        };
        proc_cgroup_path(proc_cgroup, key)
    }

    /// Every pid in the deepest directory made and below it.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        fs::tree_pids(self.path())
    }
}

impl Drop for NomadCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            // Empty by now unless the test leaked a cgroup of its own, which it reports.
            let _ = std::fs::remove_dir(dir);
        }
    }
}
