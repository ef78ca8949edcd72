//! The cgroup a task's spec names for its cpuset ([`Resources::cpuset_cgroup`], Nomad's
//! `cpuset_cgroup`): made and owned by another manager, which changes its cpus as other tasks
//! reserve cores. It is checked here against the node's mounts, and this module says how the
//! task's own cgroup relates to it; the driver never kills by it or removes it.
//!
//! - v2: the task's whole cgroup is made as its child, so it gets the named cgroup's
//!   effective cpus (and any later change of them) without a cpuset of its own.
//! - v1 with a cpuset (reserved cores): the task's cgroup in the cpuset hierarchy is made as
//!   its child, holding the task's cpus.
//! - v1 without one: the task's processes join the named cgroup itself in the cpuset
//!   hierarchy, and the task has no cpuset cgroup of its own. A child would need a copy of
//!   the parent's cpus to be joinable, and v1 refuses (EBUSY) to shrink a cgroup's cpus below
//!   what a child holds, so the manager could no longer take cores out of its shared
//!   partition for a reservation. Kills and removal go by the task's own cgroups in the other
//!   hierarchies (the freezer's membership), never by this one.

use std::path::{Path, PathBuf};

use execdriver_core::Resources;

use super::hierarchy::{ControllerDir, Hierarchy, Layout, join_rel};
use super::v2::delegation;
use super::{CgroupError, CgroupVersion, cpuset, fs};

/// How the task's cgroup relates to the named cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    /// The task's cgroup (v2), or its cpuset-hierarchy cgroup (v1), is made beneath it.
    Parent(ControllerDir),
    /// v1 only: the task's processes join it in the cpuset hierarchy.
    Join(ControllerDir),
}

fn refuse(path: &Path, reason: impl Into<String>) -> CgroupError {
    CgroupError::CpusetCgroup {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The hierarchy a named cgroup must lie in: the unified one on v2, the cpuset one on v1.
fn hierarchy_for<'a>(layout: &'a Layout, path: &Path) -> Result<&'a Hierarchy, CgroupError> {
    match layout.version {
        CgroupVersion::V2 => layout
            .hierarchies
            .first()
            .ok_or(CgroupError::NotMounted),
        CgroupVersion::V1 => layout.optional("cpuset").ok_or_else(|| {
            refuse(
                path,
                "this node has no cgroup v1 cpuset hierarchy of its own to find it in",
            )
        }),
    }
}

/// The named cgroup `path` as a directory of its hierarchy, if it lies strictly inside it
/// and is written plainly (checked lexically: cgroupfs has no symlinks below a mountpoint).
fn dir_in(layout: &Layout, path: &Path) -> Result<ControllerDir, CgroupError> {
    execdriver_core::validate_cpuset_cgroup(path)
        .map_err(|_| refuse(path, "it must be an absolute path without empty, . or .. components"))?;
    let hierarchy = hierarchy_for(layout, path)?;
    let which = match layout.version {
        CgroupVersion::V2 => "the cgroup v2 hierarchy",
        CgroupVersion::V1 => "the cgroup v1 cpuset hierarchy",
    };
    let outside = || {
        refuse(
            path,
            format!(
                "it is not a cgroup inside {which} mounted at {} (the hierarchy's root is not \
                 one either)",
                hierarchy.mountpoint.display()
            ),
        )
    };
    let rest = path
        .strip_prefix(&hierarchy.mountpoint)
        .ok()
        .and_then(Path::to_str)
        .filter(|rest| !rest.is_empty())
        .ok_or_else(outside)?;
    let rel = join_rel(&hierarchy.mount_root, rest);
    let dir = ControllerDir::at(hierarchy.clone(), &rel).map_err(|e| refuse(path, e.to_string()))?;
    if dir.dir != path {
        return Err(outside());
    }
    Ok(dir)
}

/// Checks the cgroup `path` that `resources` names for the task on this node and says how
/// the task's cgroup relates to it. Refused ([`CgroupError::CpusetCgroup`]) unless it is a
/// plain absolute path strictly inside the right hierarchy (v2: the unified one; v1: the
/// cpuset one), exists as a cgroup, and can take what the task needs: on v2 it must be able
/// to hand cpu, memory and pids (and cpuset, for a task with cpus) to a child, so it may not
/// hold processes unless it delegates them already; on v1 a cgroup to join must have cpus.
/// Nothing is changed.
pub(super) fn locate(
    path: &Path,
    layout: &Layout,
    resources: &Resources,
) -> Result<Named, CgroupError> {
    let dir = dir_in(layout, path)?;
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(refuse(
            path,
            "it does not exist (the cgroup must be made before the task starts)",
        ));
    }
    if !path.join("cgroup.procs").exists() {
        return Err(refuse(path, "it is not a cgroup (it has no cgroup.procs)"));
    }
    match layout.version {
        CgroupVersion::V2 => {
            // The task's cgroup gets its limit files (cpu.weight, memory.max, pids.max) only
            // from controllers its parent enables for children, so the create enables those
            // not enabled yet in the named cgroup's subtree_control, and nothing else. A v2
            // cgroup holding processes cannot enable them (the no-internal-processes rule):
            // refused here, before anything is made, rather than failing half-way.
            delegation::check_v2_host(path).map_err(|e| match e {
                CgroupError::CannotHostTasks { reason, .. } => refuse(
                    path,
                    format!("the task's cgroup cannot be made beneath it: {reason}"),
                ),
                other => other,
            })?;
            if resources.cpuset_cpus.is_some() {
                let offered = fs::read(&path.join("cgroup.controllers"))?;
                if !offered.split_whitespace().any(|c| c == "cpuset") {
                    return Err(refuse(
                        path,
                        "the task asks for cpus, and cpuset is not in its cgroup.controllers \
                         (its parent does not enable cpuset for it)",
                    ));
                }
            }
            Ok(Named::Parent(dir))
        }
        CgroupVersion::V1 if resources.cpuset_cpus.is_some() => Ok(Named::Parent(dir)),
        CgroupVersion::V1 => {
            if fs::read(&path.join("cpuset.cpus"))?.trim().is_empty() {
                return Err(refuse(
                    path,
                    "its cpuset.cpus is empty, so no process can join it",
                ));
            }
            Ok(Named::Join(dir))
        }
    }
}

/// Checks a recorded cgroup for the task to join (what [`locate`] answered as
/// [`Named::Join`]): as [`locate`] checks a v1 named cgroup, read again because the record
/// is read by another process than the one that wrote it.
pub(super) fn check_join(path: &Path, layout: &Layout) -> Result<PathBuf, CgroupError> {
    if layout.version != CgroupVersion::V1 {
        return Err(refuse(path, "only a cgroup v1 cpuset cgroup is ever joined"));
    }
    let dir = dir_in(layout, path)?;
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(refuse(path, "it does not exist"));
    }
    Ok(dir.dir)
}

/// Gives a v1 named cgroup that is to hold the task's cpuset child the task's cpus (and its
/// parent's mems) where it has none: a child's cpus must lie within its parent's.
///
/// Nomad makes a task's reserved-cores cgroup with its mems only and leaves the cpus for the
/// driver to write, as its own drivers do. Exactly the task's cpus go there, never the
/// parent's whole list: a v1 cgroup's cpus cannot shrink below a child's, and the parent
/// (the reserve partition) shrinks when other reservations end. A cgroup with cpus already
/// is left as it is.
pub(super) fn fill_v1_parent(dir: &Path, cpus: &str) -> Result<(), CgroupError> {
    let above = dir
        .parent()
        .ok_or_else(|| refuse(dir, "it has no parent cgroup"))?;
    let cpus_file = dir.join("cpuset.cpus");
    if fs::read(&cpus_file)?.trim().is_empty() {
        cpuset::check_allowed(cpus, &above.join("cpuset.cpus"))?;
        fs::write_verified(&cpus_file, cpus)?;
    }
    let mems_file = dir.join("cpuset.mems");
    if fs::read(&mems_file)?.trim().is_empty() {
        let mems = fs::read(&above.join("cpuset.mems"))?;
        fs::write_verified(&mems_file, mems.trim())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(version: CgroupVersion, root: &Path) -> Layout {
        let h = |c: Vec<&'static str>, dir: &str| Hierarchy {
            controllers: c,
            mountpoint: root.join(dir),
            mount_root: "/".into(),
        };
        match version {
            CgroupVersion::V2 => Layout {
                version,
                hierarchies: vec![h(super::super::REQUIRED_CONTROLLERS.to_vec(), "")],
                missing: Vec::new(),
                optional: Vec::new(),
            },
            CgroupVersion::V1 => Layout {
                version,
                hierarchies: vec![h(vec!["memory"], "memory")],
                missing: Vec::new(),
                optional: vec![h(vec!["cpuset"], "cpuset")],
            },
        }
    }

    /// A fake cgroup dir with `files`.
    fn fake(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            std::fs::write(dir.join(f), v).unwrap();
        }
    }

    fn with_cpus(cpus: Option<&str>) -> Resources {
        Resources {
            cpuset_cpus: cpus.map(str::to_owned),
            ..Resources::default()
        }
    }

    fn reason(e: CgroupError) -> String {
        match e {
            CgroupError::CpusetCgroup { reason, .. } => reason,
            other => panic!("not a cpuset cgroup refusal: {other:?}"),
        }
    }

    #[test]
    fn a_path_outside_the_right_hierarchy_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let v1 = layout(CgroupVersion::V1, tmp.path());
        fake(&tmp.path().join("memory/nomad"), &[("cgroup.procs", "")]);
        let res = with_cpus(None);
        for (path, needle) in [
            (tmp.path().join("memory/nomad"), "cpuset hierarchy mounted at"),
            (tmp.path().join("cpuset"), "root is not"),
            (PathBuf::from("/etc"), "not a cgroup inside"),
            (tmp.path().join("cpuset/a/../b"), ".. components"),
            (PathBuf::from("relative/x"), "absolute"),
        ] {
            let err = locate(&path, &v1, &res).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("cpuset cgroup "), "{msg}");
            assert!(reason(err).contains(needle), "{}: {msg}", path.display());
        }
        let missing = tmp.path().join("cpuset/nomad/share");
        let err = reason(locate(&missing, &v1, &res).unwrap_err());
        assert!(err.contains("does not exist"), "{err}");
        std::fs::create_dir_all(&missing).unwrap();
        let err = reason(locate(&missing, &v1, &res).unwrap_err());
        assert!(err.contains("not a cgroup"), "{err}");
    }

    #[test]
    fn v1_joins_without_cpus_and_parents_with_them() {
        let tmp = tempfile::tempdir().unwrap();
        let v1 = layout(CgroupVersion::V1, tmp.path());
        let share = tmp.path().join("cpuset/nomad/share");
        fake(&share, &[("cgroup.procs", ""), ("cpuset.cpus", "\n")]);
        let err = reason(locate(&share, &v1, &with_cpus(None)).unwrap_err());
        assert!(err.contains("cpuset.cpus is empty"), "{err}");
        std::fs::write(share.join("cpuset.cpus"), "0-3\n").unwrap();
        assert!(matches!(
            locate(&share, &v1, &with_cpus(None)).unwrap(),
            Named::Join(d) if d.dir == share && d.rel == "/nomad/share"
        ));
        assert!(matches!(
            locate(&share, &v1, &with_cpus(Some("1"))).unwrap(),
            Named::Parent(d) if d.dir == share
        ));
        assert_eq!(check_join(&share, &v1).unwrap(), share);
        assert!(check_join(&tmp.path().join("memory/nomad"), &v1).is_err());
        let v2 = layout(CgroupVersion::V2, tmp.path());
        assert!(check_join(&share, &v2).is_err());
    }

    #[test]
    fn v1_fill_gives_the_task_cpus_only_where_there_are_none() {
        let tmp = tempfile::tempdir().unwrap();
        let reserve = tmp.path().join("reserve");
        fake(&reserve, &[("cpuset.cpus", "1-3\n"), ("cpuset.mems", "0\n")]);
        let scope = reserve.join("a1.web");
        fake(&scope, &[("cpuset.cpus", ""), ("cpuset.mems", "")]);
        let err = fill_v1_parent(&scope, "0-1").unwrap_err().to_string();
        assert!(err.contains("asks for cpus 0"), "{err}");
        fill_v1_parent(&scope, "2-3").unwrap();
        assert_eq!(std::fs::read_to_string(scope.join("cpuset.cpus")).unwrap(), "2-3");
        assert_eq!(std::fs::read_to_string(scope.join("cpuset.mems")).unwrap(), "0");
        std::fs::write(scope.join("cpuset.cpus"), "1\n").unwrap();
        fill_v1_parent(&scope, "2-3").unwrap();
        assert_eq!(std::fs::read_to_string(scope.join("cpuset.cpus")).unwrap(), "1\n");
    }

    #[test]
    fn v2_needs_a_cgroup_that_can_hand_controllers_down() {
        let tmp = tempfile::tempdir().unwrap();
        let v2 = layout(CgroupVersion::V2, tmp.path());
        let scope = tmp.path().join("nomad.slice/share.slice/a1.web.scope");
        let files = |procs: &'static str, offered: &'static str| {
            [
                ("cgroup.procs", procs),
                ("cgroup.controllers", offered),
                ("cgroup.subtree_control", ""),
                ("cgroup.events", "populated 0\n"),
            ]
        };
        fake(&scope, &files("", "cpu memory pids\n"));
        assert!(matches!(
            locate(&scope, &v2, &with_cpus(None)).unwrap(),
            Named::Parent(d) if d.dir == scope
        ));
        let err = reason(locate(&scope, &v2, &with_cpus(Some("0"))).unwrap_err());
        assert!(err.contains("cpuset is not in its cgroup.controllers"), "{err}");
        fake(&scope, &files("42\n", "cpu memory pids\n"));
        let err = reason(locate(&scope, &v2, &with_cpus(None)).unwrap_err());
        assert!(err.contains("holds processes (42)"), "{err}");
        fake(&scope, &files("", "cpu\n"));
        let err = reason(locate(&scope, &v2, &with_cpus(None)).unwrap_err());
        assert!(err.contains("does not offer memory, pids"), "{err}");
    }
}
