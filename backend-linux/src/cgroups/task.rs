//! [`TaskCgroup`]: one task's cgroup as the rest of the driver sees it, whichever the version:
//! found or made under a [`CgroupParent`] (or from its recorded paths), then driven through
//! [`TaskCgroupOps`] (`v1/`, `v2/`, or the fake in tests).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use execdriver_core::{Resources, TaskStats};

use super::hierarchy::{ControllerDir, Hierarchy, Layout, join_rel};
use super::v1::V1Cgroup;
use super::v2::V2Cgroup;
use super::{
    AppliedLimit, CgroupError, CgroupParent, CgroupVersion, OPTIONAL_V1_CONTROLLERS,
    REQUIRED_CONTROLLERS, TaskCgroupOps,
    validate_name,
};

/// One task's cgroup, created by us under a [`CgroupParent`].
#[derive(Debug)]
pub struct TaskCgroup {
    name: String,
    ops: Box<dyn TaskCgroupOps>,
    /// What `create` applied (empty for a cgroup that was opened).
    applied: Vec<AppliedLimit>,
    /// Another manager's cgroups its processes join ([`super::TaskPlacement::join`]); only
    /// [`TaskCgroup::add_process`] uses them.
    joined: Vec<PathBuf>,
}

impl TaskCgroup {
    /// Creates `name` under `parent` with the limits applied and read back (every value
    /// written is read back; a difference is an error naming the file). An existing cgroup
    /// of that name is refused; on any failure nothing is left behind.
    pub fn create(
        parent: &CgroupParent,
        name: &str,
        resources: &Resources,
    ) -> Result<Self, CgroupError> {
        validate_name(name)?;
        resources
            .validate()
            .map_err(CgroupError::InvalidResources)?;
        let mut cgroup = Self::at(parent, name)?;
        cgroup.applied = cgroup.ops.create(resources)?;
        Ok(cgroup)
    }

    /// An existing task cgroup, `None` if it is not there. A cgroup present in only some
    /// hierarchies (a crash during create) is returned so that it can be destroyed.
    pub fn open(parent: &CgroupParent, name: &str) -> Result<Option<Self>, CgroupError> {
        validate_name(name)?;
        let cgroup = Self::at(parent, name)?;
        Ok(cgroup.ops.exists().then_some(cgroup))
    }

    /// A task cgroup found again from the absolute directories recorded when it was made
    /// (its [`TaskCgroup::paths`]), without resolving any parent: the result does not depend
    /// on the caller's own cgroup, so a cleanup works from any process.
    ///
    /// Each path must be absolute and plain (no empty, `.` or `..` components), lie strictly
    /// inside a hierarchy this node mounts for [`REQUIRED_CONTROLLERS`] (the mount gives its
    /// controllers), and end in `name`; no two may lie in the same hierarchy. Anything else is
    /// [`CgroupError::InvalidRecordedPath`] and nothing is touched. Paths that no longer exist
    /// are left out; `None` when none does. Nothing is ever created.
    pub fn open_recorded(name: &str, paths: &[PathBuf]) -> Result<Option<Self>, CgroupError> {
        let Some((version, mut dirs)) = recorded_dirs(name, paths)? else {
            return Ok(None);
        };
        // Gone since (destroyed, or never made in that hierarchy): nothing to clean there.
        dirs.retain(|d| std::fs::symlink_metadata(&d.dir).is_ok_and(|m| m.is_dir()));
        if dirs.is_empty() {
            return Ok(None);
        }
        Self::of(name, version, dirs).map(Some)
    }

    /// Creates the task cgroup at the directories recorded for it before it existed (the
    /// agent resolves the parent and records where the cgroup goes; the supervisor, which
    /// lives in another cgroup, creates it there), with the limits applied and read back.
    /// The paths are checked as [`TaskCgroup::open_recorded`] checks them, and every one of
    /// the required hierarchies must have one.
    pub fn create_recorded(
        name: &str,
        paths: &[PathBuf],
        resources: &Resources,
    ) -> Result<Self, CgroupError> {
        Self::create_recorded_joining(name, paths, &[], resources)
    }

    /// [`TaskCgroup::create_recorded`] for a task that also joins the recorded cgroups `join`
    /// of another manager ([`super::TaskPlacement::join`]): each is checked (a v1 cpuset
    /// cgroup, existing) before anything is created, and [`TaskCgroup::add_process`] moves
    /// processes into them too. They are never killed by and never removed.
    pub fn create_recorded_joining(
        name: &str,
        paths: &[PathBuf],
        join: &[PathBuf],
        resources: &Resources,
    ) -> Result<Self, CgroupError> {
        resources
            .validate()
            .map_err(CgroupError::InvalidResources)?;
        let joined = match join {
            [] => Vec::new(),
            _ => {
                let layout = Layout::detect_complete()?;
                join.iter()
                    .map(|p| super::named::check_join(p, &layout))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let Some((version, dirs)) = recorded_dirs(name, paths)? else {
            return Err(CgroupError::NotMounted);
        };
        let layout = Layout::detect_complete()?;
        if let Some(missing) = layout
            .hierarchies
            .iter()
            .find(|h| !dirs.iter().any(|d| d.hierarchy == **h))
        {
            return Err(CgroupError::InvalidRecordedPath {
                path: missing.mountpoint.clone(),
                reason: format!(
                    "no recorded path in the hierarchy mounted at {}",
                    missing.mountpoint.display()
                ),
            });
        }
        let mut cgroup = Self::of(name, version, dirs)?;
        cgroup.applied = cgroup.ops.create(resources)?;
        cgroup.joined = joined;
        Ok(cgroup)
    }

    /// The cgroup `name` under `parent` (not made).
    fn at(parent: &CgroupParent, name: &str) -> Result<Self, CgroupError> {
        let dirs = parent
            .dirs()
            .iter()
            .map(|d| d.child(name))
            .collect::<Result<Vec<_>, _>>()?;
        Self::of(name, parent.version(), dirs)
    }

    /// The version's implementation over these directories.
    fn of(
        name: &str,
        version: CgroupVersion,
        dirs: Vec<ControllerDir>,
    ) -> Result<Self, CgroupError> {
        let ops: Box<dyn TaskCgroupOps> = match version {
            CgroupVersion::V1 => Box::new(V1Cgroup::new(dirs)),
            // The unified hierarchy is the one directory of a v2 layout.
            CgroupVersion::V2 => Box::new(V2Cgroup::new(
                dirs.into_iter().next().ok_or(CgroupError::NotMounted)?,
            )),
        };
        Ok(Self::with_ops(name, ops))
    }

    /// A task cgroup driven by `ops` (the fake, in tests).
    pub(crate) fn with_ops(name: &str, ops: Box<dyn TaskCgroupOps>) -> Self {
        Self {
            name: name.to_owned(),
            ops,
            applied: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// Its name under the parent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hierarchy layout of this cgroup.
    pub fn version(&self) -> CgroupVersion {
        self.ops.version()
    }

    /// Its directory in each hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.ops.paths()
    }

    /// Its directory for `controller`, one of [`REQUIRED_CONTROLLERS`].
    pub fn controller_path(&self, controller: &str) -> Result<PathBuf, CgroupError> {
        if !REQUIRED_CONTROLLERS.contains(&controller) {
            return Err(CgroupError::UnknownController(controller.to_owned()));
        }
        self.ops.controller_path(controller)
    }

    /// The control files `create` wrote, with what each reads back (empty for a cgroup that
    /// was opened rather than created).
    pub fn applied_limits(&self) -> &[AppliedLimit] {
        &self.applied
    }

    /// The operations behind it, for what the facade does not forward.
    pub fn ops(&self) -> &dyn TaskCgroupOps {
        self.ops.as_ref()
    }

    /// Moves `pid` (a process we just started) into the cgroup in every controller, and into
    /// the cgroups it joins.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        self.ops.add_process(pid)?;
        for dir in &self.joined {
            super::fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroup's directory for the init to be born in (see
    /// [`TaskCgroupOps::clone_target`]); never for a cgroup whose processes join others too.
    pub fn clone_target(&self) -> Option<OwnedFd> {
        if self.joined.is_empty() {
            self.ops.clone_target()
        } else {
            None
        }
    }

    /// The cgroups of another manager that its processes join (see
    /// [`TaskCgroup::create_recorded_joining`]).
    pub fn joined(&self) -> &[PathBuf] {
        &self.joined
    }

    /// Every pid in the cgroup and its descendants, in every hierarchy, sorted.
    /// A hierarchy where the cgroup does not exist contributes nothing.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.ops.pids()
    }

    /// Asks the kernel to freeze every member (see [`TaskCgroup::is_frozen`] for when it is
    /// done).
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.ops.freeze()
    }

    /// Whether the kernel reports the cgroup fully frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        self.ops.is_frozen()
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.ops.thaw()
    }

    /// Kills every process in the cgroup and returns once it is empty, within
    /// [`super::KILL_ALL_BUDGET`] (5 s): [`TaskCgroup::kill_all_within`] that budget.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        self.ops.kill_all()
    }

    /// Kills every process in the cgroup and returns once it is empty, or with
    /// [`CgroupError::NotEmpty`] naming the survivors once `budget` is spent (plus the
    /// system calls of the round under way, milliseconds): v2 `cgroup.kill` where present,
    /// then rounds of freeze, SIGKILL by pidfd, thaw. Returns at once for an empty cgroup.
    pub fn kill_all_within(&self, budget: Duration) -> Result<(), CgroupError> {
        self.ops.kill_all_within(budget)
    }

    /// Kills what is left ([`TaskCgroup::kill_all`]), removes the cgroup (descendants first)
    /// in every controller, and checks it is gone; within [`super::DESTROY_BUDGET`] in all:
    /// the rmdir retries of a busy cgroup share [`super::REMOVE_WAIT`], after which
    /// [`CgroupError::StillExists`]. Borrowed, so that a caller whose removal failed still
    /// holds the cgroup and can report it or try again.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.ops.destroy()
    }

    /// [`TaskCgroup::destroy`] within `budget` instead of [`super::DESTROY_BUDGET`]: the kill
    /// and the rmdir retries share it (each tried at least once).
    pub fn destroy_within(&self, budget: Duration) -> Result<(), CgroupError> {
        self.ops.destroy_within(budget)
    }

    /// Whether the kernel OOM-killed a process in the cgroup.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        self.ops.oom_killed()
    }

    /// How many times the kernel OOM-killed a process in this cgroup (and its descendants).
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        self.ops.oom_kill_count()
    }

    /// Memory, cpu and pids use (the timestamp is left for the caller).
    pub fn stats(&self) -> Result<TaskStats, CgroupError> {
        self.ops.stats()
    }
}

/// The directories `paths` records for the task cgroup `name`, checked (see
/// [`TaskCgroup::open_recorded`]), with the hierarchy layout's version; `None` when no
/// cgroup filesystem is mounted. Nothing is created or filtered.
fn recorded_dirs(
    name: &str,
    paths: &[PathBuf],
) -> Result<Option<(CgroupVersion, Vec<ControllerDir>)>, CgroupError> {
        validate_name(name)?;
        let layout = Layout::detect()?;
        // The optional v1 hierarchies too: a task that asked for a cpuset or devices has a
        // directory there, found, killed and removed with the rest.
        let hierarchies: Vec<&Hierarchy> = layout
            .as_ref()
            .map(|l| l.hierarchies.iter().chain(&l.optional).collect())
            .unwrap_or_default();
        let mut dirs: Vec<ControllerDir> = Vec::new();
        for path in paths {
            let refuse = |reason: String| CgroupError::InvalidRecordedPath {
                path: path.clone(),
                reason,
            };
            let plain = path.is_absolute()
                && path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !plain {
                return Err(refuse(
                    "not a plain absolute path (., .. or empty components)".into(),
                ));
            }
            if path.file_name() != Some(OsStr::new(name)) {
                return Err(refuse(format!("it does not end in the cgroup name {name}")));
            }
            // The deepest mount holding the path: a hierarchy mounted below another's
            // mountpoint (a bind mount) owns what lies under it.
            let hierarchy = hierarchies
                .iter()
                .filter(|h| path.starts_with(&h.mountpoint) && path != &h.mountpoint)
                .copied()
                .max_by_key(|h| h.mountpoint.components().count())
                .ok_or_else(|| {
                    refuse(format!(
                        "not inside a mounted cgroup hierarchy of {REQUIRED_CONTROLLERS:?} or {OPTIONAL_V1_CONTROLLERS:?}"
                    ))
                })?;
            if dirs.iter().any(|d| d.hierarchy == *hierarchy) {
                return Err(refuse(format!(
                    "a second path in the hierarchy mounted at {}",
                    hierarchy.mountpoint.display()
                )));
            }
            let rest = path
                .strip_prefix(&hierarchy.mountpoint)
                .ok()
                .and_then(Path::to_str)
                .ok_or_else(|| refuse("not valid UTF-8".into()))?;
            let rel = join_rel(&hierarchy.mount_root, rest);
            let dir = hierarchy.dir_of(&rel).map_err(|e| refuse(e.to_string()))?;
            if dir != *path {
                return Err(refuse(format!(
                    "maps back to {} in its hierarchy",
                    dir.display()
                )));
            }
            dirs.push(ControllerDir {
                hierarchy: hierarchy.clone(),
                rel,
                dir,
            });
        }
    Ok(layout.map(|l| (l.version, dirs)))
}
