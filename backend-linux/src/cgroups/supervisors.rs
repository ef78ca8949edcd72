//! The supervisors' own cgroup, `/<slice>/supervisors`, outside the agent's cgroup: a
//! service manager stopping the agent kills every process in the agent's cgroup (systemd's
//! default KillMode=control-group), and a supervisor must outlive the agent.
//!
//! On v1 it is made in EVERY mounted hierarchy, not only the driver's five: systemd tracks a
//! service's processes in `name=systemd` (and in the unified hierarchy on hybrid nodes), and
//! a process left in the agent's cgroup of any hierarchy is still the agent's there. On v2 it
//! is a leaf under the slice, so the slice itself holds no process and can delegate
//! controllers to the task cgroups beside it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::hierarchy::{
    AnyHierarchy, ControllerDir, all_hierarchies, parse_mountinfo, proc_cgroup_path_of,
};
use super::placement::slice_dir_name;
use super::cpuset::inherit as inherit_cpuset;
use super::{CgroupError, fs};

/// The name of the supervisors' cgroup inside the driver's slice.
pub const SUPERVISORS_CGROUP: &str = "supervisors";

/// The supervisors cgroup a process joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorsCgroup {
    paths: Vec<PathBuf>,
    born_there: bool,
}

impl SupervisorsCgroup {
    /// Its directory in each mounted hierarchy.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Whether the process was there from its start in every hierarchy (it was cloned into
    /// it), so that no write moved it.
    pub fn born_there(&self) -> bool {
        self.born_there
    }
}

/// `/<slice>/supervisors` in each mounted hierarchy, with the hierarchy.
fn supervisors_dirs(slice_name: &str) -> Result<Vec<(AnyHierarchy, ControllerDir)>, CgroupError> {
    let slice = slice_dir_name(slice_name)?;
    let mountinfo = fs::read(Path::new("/proc/self/mountinfo"))?;
    let hierarchies = all_hierarchies(&parse_mountinfo(&mountinfo));
    if hierarchies.is_empty() {
        return Err(CgroupError::NotMounted);
    }
    hierarchies
        .into_iter()
        .map(|h| {
            // A mount that shows only a subtree (a container) cannot reach the top level.
            let dir = ControllerDir::root_of(h.as_hierarchy())?
                .child(&slice)?
                .child(SUPERVISORS_CGROUP)?;
            Ok((h, dir))
        })
        .collect()
}

/// Where the supervisors cgroup of slice `slice_name` is (or would be) in every mounted
/// hierarchy; nothing is created. For cleanup and checks.
pub fn supervisors_cgroup_paths(slice_name: &str) -> Result<Vec<PathBuf>, CgroupError> {
    Ok(supervisors_dirs(slice_name)?
        .into_iter()
        .map(|(_, d)| d.dir)
        .collect())
}

/// Moves the calling process, and only it (its threads with it, not its children), into
/// `/<slice_name>.slice/supervisors` in every mounted hierarchy, creating the slice and the
/// supervisors cgroup where missing (on v1 cpuset, `cpuset.cpus` and `cpuset.mems` are copied
/// down from the parent first: a process cannot join a cpuset without them). No controller is
/// enabled anywhere. Then /proc/self/cgroup is checked to show the new place in each hierarchy.
pub fn join_supervisors_cgroup(slice_name: &str) -> Result<SupervisorsCgroup, CgroupError> {
    let dirs = supervisors_dirs(slice_name)?;
    let pid = std::process::id().to_string();
    let before = fs::read(Path::new("/proc/self/cgroup"))?;
    let mut born_there = true;
    for (h, sup) in &dirs {
        // Born there (see `supervisors_clone_target`): a write would only wait out another
        // RCU grace period for nothing.
        if proc_cgroup_path_of(&before, &h.key) == Some(sup.rel.as_str()) {
            continue;
        }
        born_there = false;
        let procs = sup.dir.join("cgroup.procs");
        // Made once per node and then joined by every supervisor: try the join first. A
        // cgroup that another supervisor is still setting up (its cpuset still empty) fails
        // the write and is set up here too, which is idempotent.
        if sup.dir.is_dir() && fs::write(&procs, &pid).is_ok() {
            continue;
        }
        let Some(slice) = sup.dir.parent() else {
            continue;
        };
        fs::ensure_dir(slice)?;
        fs::ensure_dir(&sup.dir)?;
        if !h.key.is_empty() {
            // v1 only: on v2 an empty cpuset means "the parent's" and must stay so.
            if let Some(top) = slice.parent() {
                inherit_cpuset(top, slice)?;
            }
            inherit_cpuset(slice, &sup.dir)?;
        }
        fs::write(&procs, &pid)?;
    }
    // Unchanged when no write moved us: what was read before still holds.
    let text = if born_there {
        before
    } else {
        fs::read(Path::new("/proc/self/cgroup"))?
    };
    for (h, sup) in &dirs {
        let found = proc_cgroup_path_of(&text, &h.key).unwrap_or_default();
        if found != sup.rel {
            return Err(CgroupError::NotJoined {
                path: sup.dir.clone(),
                hierarchy: h.key.clone(),
                found: found.to_owned(),
            });
        }
    }
    Ok(SupervisorsCgroup {
        paths: dirs.into_iter().map(|(_, d)| d.dir).collect(),
        born_there,
    })
}

/// The supervisors cgroup of slice `slice_name`, made where missing and opened, for a
/// supervisor to be born in it (clone3 with CLONE_INTO_CGROUP) rather than moved there by a
/// write to `cgroup.procs`, which waits out an RCU grace period (the longest wait of a
/// start). Only where the unified hierarchy is the only one mounted: on v1 and hybrid nodes
/// the other hierarchies need the writes anyway. `None` whenever it cannot be had: the
/// supervisor then joins by writes, which report what is wrong.
pub fn supervisors_clone_target(slice_name: &str) -> Option<OwnedFd> {
    // One statfs on the start path of every node: a v1 or hybrid node (a tmpfs here) is
    // told apart before mountinfo is read and parsed a second time for the start.
    let unified = nix::sys::statfs::statfs(Path::new("/sys/fs/cgroup"))
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if !unified {
        return None;
    }
    let dirs = supervisors_dirs(slice_name).ok()?;
    let [(h, sup)] = dirs.as_slice() else {
        return None;
    };
    if !h.key.is_empty() {
        return None;
    }
    fs::ensure_dir(sup.dir.parent()?).ok()?;
    fs::ensure_dir(&sup.dir).ok()?;
    fs::open_clone_target(&sup.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_is_copied_only_where_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path();
        let child = parent.join("c");
        std::fs::create_dir(&child).unwrap();
        std::fs::write(parent.join("cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(parent.join("cpuset.mems"), "0\n").unwrap();
        std::fs::write(child.join("cpuset.cpus"), "\n").unwrap();
        std::fs::write(child.join("cpuset.mems"), "1\n").unwrap();
        inherit_cpuset(parent, &child).unwrap();
        assert_eq!(
            std::fs::read_to_string(child.join("cpuset.cpus"))
                .unwrap()
                .trim(),
            "0-3"
        );
        assert_eq!(
            std::fs::read_to_string(child.join("cpuset.mems"))
                .unwrap()
                .trim(),
            "1"
        );
        // Not a cpuset: nothing to do.
        let other = parent.join("o");
        std::fs::create_dir(&other).unwrap();
        inherit_cpuset(parent, &other).unwrap();
        assert!(!other.join("cpuset.cpus").exists());
    }

    #[test]
    fn paths_cover_every_mounted_hierarchy_and_create_nothing() {
        let name = format!("execdriver-test-paths-{}", std::process::id());
        let paths = match supervisors_cgroup_paths(&name) {
            Ok(p) => p,
            // No cgroups here (or a container showing only a subtree): nothing to look at.
            Err(e) => return println!("skipped: {e}"),
        };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts = all_hierarchies(&parse_mountinfo(&mountinfo));
        assert_eq!(paths.len(), mounts.len());
        for p in &paths {
            assert!(
                p.ends_with(format!("{name}.slice/supervisors")),
                "{}",
                p.display()
            );
            assert!(!p.exists() && !p.parent().unwrap().exists());
        }
        assert!(supervisors_cgroup_paths("a/b").is_err());
    }
}
