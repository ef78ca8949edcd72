//! Where a process is, in every mounted hierarchy: for a process that must join another's
//! cgroups exactly (an exec into a task, which is in the task's cgroup in the driver's
//! hierarchies and in the supervisors' cgroup in the others).

use std::path::{Path, PathBuf};

use super::hierarchy::{all_hierarchies, parse_mountinfo, proc_cgroup_path_of};
use super::{CgroupError, fs};

/// The cgroup directory of `pid` in each mounted hierarchy that lists it.
pub fn cgroup_dirs_of(pid: i32) -> Result<Vec<PathBuf>, CgroupError> {
    let mountinfo = fs::read(Path::new("/proc/self/mountinfo"))?;
    let text = fs::read(&PathBuf::from(format!("/proc/{pid}/cgroup")))?;
    let mut dirs = Vec::new();
    for h in all_hierarchies(&parse_mountinfo(&mountinfo)) {
        if let Some(rel) = proc_cgroup_path_of(&text, &h.key) {
            dirs.push(h.as_hierarchy().dir_of(rel)?);
        }
    }
    Ok(dirs)
}
