//! [`CgroupParent`]: where task cgroups are created (the caller's own cgroup, a configured
//! path, or the driver's own slice), resolved in each hierarchy.

use std::path::{Path, PathBuf};

#[cfg(doc)]
use super::DEFAULT_SLICE_NAME;
use execdriver_core::Resources;

use super::hierarchy::{
    ControllerDir, Hierarchy, Layout, check_hierarchy_path, proc_cgroup_path,
};
use super::named::{self, Named};
use super::placement::slice_dir_name;
use super::v2::delegation;
use super::{CgroupError, CgroupVersion, cpuset, fs, validate_name};

/// Where a task's cgroup goes, decided before it exists and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskPlacement {
    /// The task cgroup's own directories, one per hierarchy it has one in: created, killed
    /// by and removed with the task.
    pub paths: Vec<PathBuf>,
    /// Cgroups of another manager (v1: the cpuset cgroup a task without cpus is named) that
    /// the task's processes join where the task has no cgroup of its own: never killed by,
    /// never removed.
    pub join: Vec<PathBuf>,
}

/// The parent under which task cgroups are created, resolved per controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupParent {
    version: CgroupVersion,
    dirs: Vec<ControllerDir>,
    /// Created (or adopted) by this driver, so [`CgroupParent::remove`] may remove it.
    ours: bool,
    /// How it was found, to find it again in a hierarchy a task asks for (v1 cpuset, devices).
    origin: Origin,
}

/// Where a [`CgroupParent`] lies in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The caller's own cgroup.
    Own,
    /// This path below the hierarchy's root.
    Root(String),
    /// This path below the caller's own cgroup.
    UnderOwn(String),
}

impl CgroupParent {
    /// The calling process's own cgroup in each controller (from /proc/self/cgroup).
    ///
    /// On v2 a cgroup that holds processes cannot hand controllers to children, so task
    /// cgroups can be created under the caller's own cgroup only when that is the root (or
    /// already delegates cpu, memory and pids); otherwise `create` fails with
    /// [`CgroupError::Delegate`] and a parent from [`CgroupParent::at`] is needed
    /// ([`CgroupParent::can_host_tasks`] tells in advance).
    pub fn own() -> Result<Self, CgroupError> {
        let layout = Layout::detect_complete()?;
        let path = Path::new("/proc/self/cgroup");
        let text = fs::read(path)?;
        let mut dirs = Vec::new();
        for h in layout.hierarchies {
            let key = h.proc_key(layout.version);
            let rel = proc_cgroup_path(&text, key)
                .ok_or_else(|| CgroupError::NoOwnCgroup {
                    controller: key.to_owned(),
                })?
                .to_owned();
            dirs.push(ControllerDir::at(h, &rel)?);
        }
        Ok(Self {
            version: layout.version,
            dirs,
            ours: false,
            origin: Origin::Own,
        })
    }

    /// A configured parent, relative to each hierarchy's root (e.g. `execdriver`), created in
    /// every required hierarchy where missing. A leading `/` is allowed; empty, `.` and `..`
    /// components are refused. The parent then counts as the driver's own: nothing else should
    /// use it, and [`CgroupParent::remove`] may remove it.
    pub fn at(relative: &str) -> Result<Self, CgroupError> {
        let relative = check_relative(relative)?;
        let layout = Layout::detect_complete()?;
        // A mount that shows only a subtree (a container) cannot reach the root.
        let bases = layout
            .hierarchies
            .into_iter()
            .map(ControllerDir::root_of)
            .collect::<Result<Vec<_>, CgroupError>>()?;
        Self::create_below(layout.version, bases, relative)
            .map(|p| p.with_origin(Origin::Root(relative.to_owned())))
    }

    /// A parent `relative` below the caller's own cgroup, created where missing, and the
    /// driver's own as with [`CgroupParent::at`]. Useful to keep a driver's task cgroups together.
    pub fn under_own(relative: &str) -> Result<Self, CgroupError> {
        let relative = check_relative(relative)?;
        let own = Self::own()?;
        Self::create_below(own.version, own.dirs, relative)
            .map(|p| p.with_origin(Origin::UnderOwn(relative.to_owned())))
    }

    fn with_origin(self, origin: Origin) -> Self {
        Self { origin, ..self }
    }

    fn create_below(
        version: CgroupVersion,
        bases: Vec<ControllerDir>,
        relative: &str,
    ) -> Result<Self, CgroupError> {
        let mut dirs = Vec::new();
        for base in bases {
            let mut cur = base;
            for component in relative.split('/') {
                if version == CgroupVersion::V2 {
                    delegation::enable_controllers(&cur.dir)?;
                }
                cur = cur.child(component)?;
                fs::ensure_dir(&cur.dir)?;
            }
            dirs.push(cur);
        }
        Ok(Self {
            version,
            dirs,
            ours: true,
            origin: Origin::Own,
        })
    }

    /// The driver's own top-level slice, `/<name>.slice` in each required hierarchy (v2: the
    /// unified one), created where missing and the driver's own as with [`CgroupParent::at`];
    /// task cgroups go directly under it. On v2 cpu, memory and pids are enabled in the
    /// root's and the slice's `cgroup.subtree_control` and nowhere else. `name` is one plain
    /// name ([`validate_name`]) such as [`DEFAULT_SLICE_NAME`].
    pub fn slice(name: &str) -> Result<Self, CgroupError> {
        let slice = slice_dir_name(name)?;
        let parent = Self::at(&slice)?;
        if parent.version == CgroupVersion::V2 {
            for d in &parent.dirs {
                delegation::enable_controllers(&d.dir)?;
            }
        }
        Ok(parent)
    }

    /// The directories of task cgroup `name` under this parent, to be recorded before the
    /// cgroup exists and created from the record: one per required hierarchy, and on v1 one in
    /// the cpuset hierarchy for a task with a cpuset and in the devices hierarchy for a task
    /// given devices (the parent made there where missing, a v1 cpuset parent with its own
    /// parent's cpus and mems). On v2 a cpuset has cpuset enabled down to the parent, along
    /// the directories this parent was made through. A cpuset is checked against the cpus
    /// the parent allows; devices on v2 are refused ([`CgroupError::DevicesNeedV1`]).
    ///
    /// [`CgroupParent::task_placement`] for a task that joins no cgroup of another manager;
    /// one that would (v1, a `cpuset_cgroup` without cpus) is refused rather than placed
    /// without it.
    pub fn task_paths(
        &self,
        name: &str,
        resources: &Resources,
    ) -> Result<Vec<PathBuf>, CgroupError> {
        let placement = self.task_placement(name, resources)?;
        match placement.join.first() {
            None => Ok(placement.paths),
            Some(path) => Err(CgroupError::CpusetCgroup {
                path: path.clone(),
                reason: "the task joins it, which only task_placement records".into(),
            }),
        }
    }

    /// Where task cgroup `name` goes ([`CgroupParent::task_paths`]), and for a task whose
    /// resources name a `cpuset_cgroup` (checked against the node first, module `named`):
    /// on v2 the task's cgroup is made beneath it instead of beneath this parent; on v1 the
    /// task's cpuset cgroup is made beneath it (with cpus), or the task joins it (without
    /// cpus, [`TaskPlacement::join`]).
    pub fn task_placement(
        &self,
        name: &str,
        resources: &Resources,
    ) -> Result<TaskPlacement, CgroupError> {
        validate_name(name)?;
        let mut paths = self
            .dirs
            .iter()
            .map(|d| d.child(name).map(|c| c.dir))
            .collect::<Result<Vec<_>, _>>()?;
        let cpus = resources.cpuset_cpus.as_deref();
        let layout = match (&resources.cpuset_cgroup, self.version) {
            (Some(_), _) | (None, CgroupVersion::V1) => Some(Layout::detect_complete()?),
            (None, CgroupVersion::V2) => None,
        };
        let named = match (&resources.cpuset_cgroup, &layout) {
            (Some(path), Some(layout)) => Some(named::locate(path, layout, resources)?),
            _ => None,
        };
        let mut join = Vec::new();
        match self.version {
            CgroupVersion::V2 => {
                if !resources.devices.is_empty() {
                    return Err(CgroupError::DevicesNeedV1);
                }
                if let Some(Named::Parent(dir) | Named::Join(dir)) = &named {
                    // Beneath the named cgroup, whose ancestors are its manager's: cpuset is
                    // enabled (by the create) in its subtree_control only.
                    if let Some(cpus) = cpus {
                        cpuset::check_allowed(cpus, &dir.dir.join("cpuset.cpus.effective"))?;
                    }
                    paths = vec![dir.child(name)?.dir];
                } else if let Some(cpus) = cpus {
                    for d in &self.dirs {
                        for dir in self.path_down(&d.hierarchy)? {
                            delegation::enable_controller(&dir, "cpuset")?;
                        }
                        cpuset::check_allowed(cpus, &d.dir.join("cpuset.cpus.effective"))?;
                    }
                }
            }
            CgroupVersion::V1 => {
                match &named {
                    Some(Named::Parent(dir)) => {
                        let canonical = cpuset::canonical(resources).unwrap_or_default();
                        named::fill_v1_parent(&dir.dir, &canonical)?;
                        if let Some(cpus) = cpus {
                            cpuset::check_allowed(cpus, &dir.dir.join("cpuset.cpus"))?;
                        }
                        paths.push(dir.child(name)?.dir);
                    }
                    Some(Named::Join(dir)) => join.push(dir.dir.clone()),
                    None => {}
                }
                let wanted = [
                    ("cpuset", cpus.is_some() && named.is_none(), "a cpuset"),
                    ("devices", !resources.devices.is_empty(), "devices"),
                ];
                let Some(layout) = layout.filter(|_| wanted.iter().any(|(_, asked, _)| *asked))
                else {
                    return Ok(TaskPlacement { paths, join });
                };
                for (controller, asked, what) in wanted {
                    if !asked {
                        continue;
                    }
                    let hierarchy = layout
                        .optional(controller)
                        .ok_or(CgroupError::OptionalHierarchyMissing { controller, what })?;
                    let down = self.path_down(hierarchy)?;
                    for pair in down.windows(2) {
                        fs::ensure_dir(&pair[1])?;
                        cpuset::inherit(&pair[0], &pair[1])?;
                    }
                    let parent = down.last().ok_or(CgroupError::NotMounted)?;
                    if let Some(cpus) = cpus.filter(|_| controller == "cpuset") {
                        cpuset::check_allowed(cpus, &parent.join("cpuset.cpus"))?;
                    }
                    paths.push(parent.join(name));
                }
            }
        }
        Ok(TaskPlacement { paths, join })
    }

    /// The directories from where this parent starts in `hierarchy` (its root, or the
    /// caller's own cgroup) down to the parent itself, in order.
    fn path_down(&self, hierarchy: &Hierarchy) -> Result<Vec<PathBuf>, CgroupError> {
        let own = || -> Result<ControllerDir, CgroupError> {
            let text = fs::read(Path::new("/proc/self/cgroup"))?;
            let key = hierarchy.proc_key(self.version);
            let rel = proc_cgroup_path(&text, key).ok_or_else(|| CgroupError::NoOwnCgroup {
                controller: key.to_owned(),
            })?;
            ControllerDir::at(hierarchy.clone(), rel)
        };
        let (base, relative) = match &self.origin {
            Origin::Own => (own()?, None),
            Origin::Root(relative) => (ControllerDir::root_of(hierarchy.clone())?, Some(relative)),
            Origin::UnderOwn(relative) => (own()?, Some(relative)),
        };
        let mut cur = base;
        let mut out = vec![cur.dir.clone()];
        for component in relative.into_iter().flat_map(|r| r.split('/')) {
            cur = cur.child(component)?;
            out.push(cur.dir.clone());
        }
        Ok(out)
    }

    /// Its directory in each hierarchy, for the modules that build on it.
    pub(super) fn dirs(&self) -> &[ControllerDir] {
        &self.dirs
    }

    /// The hierarchy layout of this parent.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The parent's directory in each hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.clone()).collect()
    }

    /// Whether a task cgroup `name` exists under this parent in any hierarchy.
    pub fn contains(&self, name: &str) -> Result<bool, CgroupError> {
        validate_name(name)?;
        for d in &self.dirs {
            if d.child(name)?.dir.exists() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes a parent made by [`CgroupParent::at`] or [`CgroupParent::under_own`] (its last
    /// component only) once it is empty; the caller's own cgroup is never removed.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            if !self.ours {
                return Err(CgroupError::NotOurs {
                    path: d.dir.clone(),
                });
            }
            fs::remove_dir_verified(&d.dir)?;
        }
        Ok(())
    }
}

impl CgroupParent {
    /// Whether task cgroups can be created under this parent, without changing anything.
    ///
    /// v1 has no rule against processes in inner cgroups, so any parent will do. On v2 each
    /// directory must pass `check_v2_host` (`v2/delegation.rs`).
    pub fn can_host_tasks(&self) -> Result<(), CgroupError> {
        if self.version == CgroupVersion::V1 {
            return Ok(());
        }
        self.dirs
            .iter()
            .try_for_each(|d| delegation::check_v2_host(&d.dir))
    }

    /// Whether the parent the driver would use (`relative` as for [`CgroupParent::at`], or the
    /// caller's own cgroup when `None`) can hold task cgroups, without creating anything.
    ///
    /// [`CgroupParent::at`] would create the missing directories, so it is not called: instead
    /// every directory along the would-be path that exists already (the hierarchy root, each
    /// existing component, and the parent itself if it exists) is checked with
    /// `check_v2_host` (`v2/delegation.rs`), since `at` enables the controllers in each of them on its way down.
    /// Directories still to be made start empty and receive the controllers from their
    /// checked parent, so they need no check.
    pub fn check_would_host(relative: Option<&str>) -> Result<(), CgroupError> {
        let Some(relative) = relative else {
            return Self::own()?.can_host_tasks();
        };
        let relative = check_relative(relative)?;
        let layout = Layout::detect_complete()?;
        if layout.version == CgroupVersion::V1 {
            return Ok(());
        }
        layout
            .hierarchies
            .iter()
            .try_for_each(|h| delegation::check_v2_path(&h.dir_of("/")?, relative))
    }
}

/// Validates a parent path given relative to a base, returning it without a leading `/`.
fn check_relative(relative: &str) -> Result<&str, CgroupError> {
    let trimmed = relative.strip_prefix('/').unwrap_or(relative);
    if trimmed.is_empty() {
        return Err(CgroupError::InvalidParent {
            path: relative.to_owned(),
            reason: "empty",
        });
    }
    check_hierarchy_path(&format!("/{trimmed}")).map_err(|e| match e {
        CgroupError::InvalidParent { reason, .. } => CgroupError::InvalidParent {
            path: relative.to_owned(),
            reason,
        },
        other => other,
    })?;
    for component in trimmed.split('/') {
        validate_name(component).map_err(|e| match e {
            CgroupError::InvalidName { reason, .. } => CgroupError::InvalidParent {
                path: relative.to_owned(),
                reason,
            },
            other => other,
        })?;
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_parents() {
        assert_eq!(check_relative("execdriver").unwrap(), "execdriver");
        assert_eq!(check_relative("/a/b").unwrap(), "a/b");
        for bad in [
            "", "/", "a//b", "a/", "../x", "a/../b", "./a", "//a", "a/.b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn check_would_host_refuses_a_bad_parent_before_looking() {
        for bad in ["", "a/../b", "a//b"] {
            assert!(matches!(
                CgroupParent::check_would_host(Some(bad)),
                Err(CgroupError::InvalidParent { .. })
            ));
        }
    }

    #[test]
    fn v1_parents_can_always_host() {
        let p = CgroupParent {
            version: CgroupVersion::V1,
            dirs: vec![ControllerDir {
                hierarchy: Hierarchy {
                    controllers: vec!["memory"],
                    mountpoint: PathBuf::from("/nonexistent/memory"),
                    mount_root: "/".into(),
                },
                rel: "/x".into(),
                dir: PathBuf::from("/nonexistent/memory/x"),
            }],
            ours: false,
            origin: Origin::Own,
        };
        p.can_host_tasks().unwrap();
        let v2 = CgroupParent {
            version: CgroupVersion::V2,
            ..p
        };
        assert!(matches!(v2.can_host_tasks(), Err(CgroupError::Read { .. })));
    }
}
