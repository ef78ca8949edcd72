//! Every cgroup operation of the driver, v1 and v2, on top of cgroups-rs.
//!
//! A task cgroup is created only in the hierarchies of [`REQUIRED_CONTROLLERS`] (never in
//! cpuset, devices, blkio or `name=systemd`), as `<parent>/<name>` where the parent is, by
//! default, the caller's own cgroup in each hierarchy ([`CgroupParent::own`]).
//!
//! This module checks what cgroups-rs silently accepts or gets wrong:
//! - names: one plain path component (no `/`, `.`, `..`, empty or over-long names), and
//!   controller names limited to [`REQUIRED_CONTROLLERS`];
//! - creation: cgroups-rs `create()` ignores mkdir errors and `mkdir -p`s missing parents, and
//!   creates in every mounted hierarchy; here each directory is created with one mkdir, an
//!   existing cgroup is refused, and a failed create is rolled back;
//! - limits: every value written is read back and a difference is an error naming the file;
//! - membership: cgroups-rs returns an empty list when cgroup.procs cannot be read, which looks
//!   like "all dead"; here a read failure is an error, and descendants are included;
//! - removal: cgroups-rs gives up after ~150 ms and never checks; here rmdir is retried while
//!   busy for up to [`REMOVE_WAIT`] and the directory is verified gone.
//!
//! cgroups-rs is used for writing limits and driving the freezer; discovery (mountinfo,
//! /proc/self/cgroup) is done here because cgroups-rs ignores the mount root, hardcodes
//! `/sys/fs/cgroup` for v2, and drops /proc/self/cgroup lines whose path contains a `:`.

mod fs;
mod hierarchy;
mod kill;
mod limits;
mod stats;

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use execdriver_core::{Resources, SpecError, TaskStats};

use hierarchy::{Hierarchy, Layout, check_hierarchy_path, proc_cgroup_path};

/// How long removal retries an rmdir that fails with EBUSY (for one removal call: all the
/// directories of a [`TaskCgroup::destroy`] share it).
pub const REMOVE_WAIT: Duration = Duration::from_secs(2);

/// The longest [`TaskCgroup::kill_all`] spends killing before it reports
/// [`CgroupError::NotEmpty`] (plus the system calls of the round under way when it runs
/// out, milliseconds). Callers that wait for a kill (socket timeouts) derive theirs from it.
pub const KILL_ALL_BUDGET: Duration = Duration::from_secs(5);

/// The longest [`TaskCgroup::destroy`] takes: [`KILL_ALL_BUDGET`] for the kill, then
/// [`REMOVE_WAIT`] of rmdir retries shared by every directory it removes (plus the system
/// calls under way when a budget runs out).
pub const DESTROY_BUDGET: Duration = KILL_ALL_BUDGET.saturating_add(REMOVE_WAIT);

/// Longest cgroup name accepted (a directory name).
pub const MAX_NAME_LEN: usize = 255;

/// What went wrong with a cgroup: which cgroup, which file, which limit.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A task cgroup name that is not one plain path component.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A parent path that is not a plain relative path.
    #[error("invalid cgroup parent {path:?}: {reason}")]
    InvalidParent {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A controller this module does not manage.
    #[error("unknown cgroup controller {0:?} (known: cpu, cpuacct, memory, pids, freezer)")]
    UnknownController(String),
    /// No cgroup filesystem is mounted.
    #[error("no cgroup filesystem is mounted (none in /proc/self/mountinfo)")]
    NotMounted,
    /// Required controllers without a hierarchy.
    #[error("cgroup controllers not available: {}", .0.join(", "))]
    MissingControllers(Vec<String>),
    /// The caller's own cgroup is not listed for a hierarchy.
    #[error("/proc/self/cgroup has no entry for the {controller} hierarchy")]
    NoOwnCgroup {
        /// The controller looked up (empty for v2).
        controller: String,
    },
    /// A cgroup path outside what the mount shows.
    #[error("cgroup {rel} is not visible under {} (mount root {mount_root})", .mountpoint.display())]
    NotVisible {
        /// The path within the hierarchy.
        rel: String,
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The hierarchy path at the mountpoint.
        mount_root: String,
    },
    /// Limits the spec rules refuse.
    #[error("invalid resources: {0}")]
    InvalidResources(#[source] SpecError),
    /// The task cgroup exists already (a leftover: open and destroy it first).
    #[error("cgroup {} already exists", .path.display())]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// mkdir failed.
    #[error("creating cgroup {}: {source}", .path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// rmdir failed.
    #[error("removing cgroup {}: {source}", .path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cgroup file could not be read.
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cgroup file could not be written.
    #[error("writing {value:?} to {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cgroup file did not hold what was expected.
    #[error("cannot parse {}: {detail}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The kernel kept a different value than the one written.
    #[error("limit did not read back: wrote {wanted} to {}, it reads {actual:?}", .path.display())]
    LimitMismatch {
        /// The file.
        path: PathBuf,
        /// The value written.
        wanted: String,
        /// The value read.
        actual: String,
    },
    /// A v2 parent cannot hand the controllers to its children.
    #[error(
        "cannot enable {controllers} in {}: {source} (a v2 cgroup that holds processes cannot \
         delegate controllers; configure a parent cgroup without processes)",
        .path.display()
    )]
    Delegate {
        /// The cgroup.subtree_control file.
        path: PathBuf,
        /// The controllers asked for.
        controllers: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A v2 parent under which task cgroups could not get their controllers.
    #[error(
        "cgroup {} cannot hold task cgroups: {reason}; set a cgroup parent without processes \
         (--cgroup-parent, LinuxConfig::cgroup_parent) or delegate cpu, memory and pids to it",
        .path.display()
    )]
    CannotHostTasks {
        /// The parent's directory.
        path: PathBuf,
        /// What stands in the way.
        reason: String,
    },
    /// A controller the parent does not offer its children (v2).
    #[error("controller {controller} is not available in {}", .path.display())]
    ControllerUnavailable {
        /// The controller.
        controller: String,
        /// The parent's cgroup.controllers.
        path: PathBuf,
    },
    /// A pid that cannot be a process.
    #[error("invalid pid {0}")]
    InvalidPid(i32),
    /// Signalling a member failed.
    #[error("signalling pid {pid}: {source}")]
    Signal {
        /// The pid.
        pid: i32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Processes survived every kill round of the [`KILL_ALL_BUDGET`].
    #[error("cgroup {} still has processes {pids:?} after {rounds} kill rounds", .path.display())]
    NotEmpty {
        /// The cgroup.
        path: PathBuf,
        /// Rounds tried.
        rounds: u32,
        /// The survivors.
        pids: Vec<i32>,
    },
    /// A directory that rmdir reported removed (or busy) is still there.
    #[error("cgroup {} still exists after {waited_ms} ms of removal attempts", .path.display())]
    StillExists {
        /// The directory.
        path: PathBuf,
        /// How long removal was retried.
        waited_ms: u128,
    },
    /// A recorded task cgroup path that this node's cgroup hierarchies do not vouch for.
    #[error("recorded cgroup path {} refused: {reason}", .path.display())]
    InvalidRecordedPath {
        /// The path as recorded.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// Removing a parent this driver did not create.
    #[error("refusing to remove cgroup parent {}: it is not one this driver created", .path.display())]
    NotOurs {
        /// The directory.
        path: PathBuf,
    },
}

/// The cgroup hierarchy layout in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Controllers a task cgroup needs.
pub const REQUIRED_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// The v2 controllers that must be enabled in the parent's cgroup.subtree_control.
const V2_DELEGATED: [&str; 3] = ["cpu", "memory", "pids"];

/// The cgroup name of a task: `execdriver-<task id>`.
pub fn cgroup_name(task_id: &str) -> String {
    format!("execdriver-{task_id}")
}

/// Checks that `name` is usable as one cgroup directory name.
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("a . or .. component");
    }
    if name.contains('/') {
        return bad("contains /");
    }
    if name.starts_with('.') {
        return bad("starts with .");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// What the node offers, for the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupProbe {
    /// v1 or v2; `None` when no cgroup filesystem is mounted.
    pub version: Option<CgroupVersion>,
    /// Where the hierarchy (v2) or the per-controller hierarchies (v1) are mounted.
    pub mountpoint: PathBuf,
    /// Required controllers that are missing.
    pub missing: Vec<String>,
}

/// Looks at the mounted cgroup filesystems.
pub fn probe() -> CgroupProbe {
    let nothing = || CgroupProbe {
        version: None,
        mountpoint: PathBuf::from("/sys/fs/cgroup"),
        missing: REQUIRED_CONTROLLERS
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
    };
    match Layout::detect() {
        Ok(Some(layout)) => CgroupProbe {
            version: Some(layout.version),
            mountpoint: layout.mountpoint(),
            missing: layout.missing,
        },
        Ok(None) | Err(_) => nothing(),
    }
}

/// One hierarchy's directory of a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ControllerDir {
    hierarchy: Hierarchy,
    /// The cgroup's path within the hierarchy (as in /proc/<pid>/cgroup).
    rel: String,
    /// Where that is in the filesystem.
    dir: PathBuf,
}

impl ControllerDir {
    fn child(&self, name: &str) -> Result<Self, CgroupError> {
        let rel = join_rel(&self.rel, name);
        Ok(Self {
            dir: self.hierarchy.dir_of(&rel)?,
            rel,
            hierarchy: self.hierarchy.clone(),
        })
    }
}

fn join_rel(base: &str, relative: &str) -> String {
    format!("{}/{relative}", base.trim_end_matches('/'))
}

/// The parent under which task cgroups are created, resolved per controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupParent {
    version: CgroupVersion,
    dirs: Vec<ControllerDir>,
    /// Created (or adopted) by this driver, so [`CgroupParent::remove`] may remove it.
    ours: bool,
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
            dirs.push(ControllerDir {
                dir: h.dir_of(&rel)?,
                rel,
                hierarchy: h,
            });
        }
        Ok(Self {
            version: layout.version,
            dirs,
            ours: false,
        })
    }

    /// A configured parent, relative to each hierarchy's root (e.g. `execdriver`), created in
    /// every required hierarchy where missing. A leading `/` is allowed; empty, `.` and `..`
    /// components are refused. The parent then counts as the driver's own: nothing else should
    /// use it, and [`CgroupParent::remove`] may remove it.
    pub fn at(relative: &str) -> Result<Self, CgroupError> {
        let relative = check_relative(relative)?;
        let layout = Layout::detect_complete()?;
        let bases = layout
            .hierarchies
            .into_iter()
            .map(|h| {
                // A mount that shows only a subtree (a container) cannot reach the root.
                Ok(ControllerDir {
                    dir: h.dir_of("/")?,
                    rel: "/".to_owned(),
                    hierarchy: h,
                })
            })
            .collect::<Result<Vec<_>, CgroupError>>()?;
        Self::create_below(layout.version, bases, relative)
    }

    /// A parent `relative` below the caller's own cgroup, created where missing, and the
    /// driver's own as with [`CgroupParent::at`]. Useful to keep a driver's task cgroups together.
    pub fn under_own(relative: &str) -> Result<Self, CgroupError> {
        let relative = check_relative(relative)?;
        let own = Self::own()?;
        Self::create_below(own.version, own.dirs, relative)
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
                    enable_v2_controllers(&cur.dir)?;
                }
                cur = cur.child(component)?;
                match std::fs::create_dir(&cur.dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists && cur.dir.is_dir() => {}
                    Err(source) => {
                        return Err(CgroupError::Create {
                            path: cur.dir.clone(),
                            source,
                        });
                    }
                }
            }
            dirs.push(cur);
        }
        Ok(Self {
            version,
            dirs,
            ours: true,
        })
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
            remove_dir_verified(&d.dir)?;
        }
        Ok(())
    }
}

impl CgroupParent {
    /// Whether task cgroups can be created under this parent, without changing anything.
    ///
    /// v1 has no rule against processes in inner cgroups, so any parent will do. On v2 each
    /// directory must pass [`check_v2_host`].
    pub fn can_host_tasks(&self) -> Result<(), CgroupError> {
        if self.version == CgroupVersion::V1 {
            return Ok(());
        }
        self.dirs.iter().try_for_each(|d| check_v2_host(&d.dir))
    }

    /// Whether the parent the driver would use (`relative` as for [`CgroupParent::at`], or the
    /// caller's own cgroup when `None`) can hold task cgroups, without creating anything.
    ///
    /// [`CgroupParent::at`] would create the missing directories, so it is not called: instead
    /// every directory along the would-be path that exists already (the hierarchy root, each
    /// existing component, and the parent itself if it exists) is checked with
    /// [`check_v2_host`], since `at` enables the controllers in each of them on its way down.
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
            .try_for_each(|h| check_v2_path(&h.dir_of("/")?, relative))
    }
}

/// [`check_v2_host`] on `root` and on each existing directory of the checked `relative` path
/// below it, stopping at the first one still to be made.
fn check_v2_path(root: &Path, relative: &str) -> Result<(), CgroupError> {
    check_v2_host(root)?;
    let mut cur = root.to_owned();
    for component in relative.split('/') {
        cur.push(component);
        if !std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
            break;
        }
        check_v2_host(&cur)?;
    }
    Ok(())
}

/// Whether the v2 cgroup at `dir` can hand cpu, memory and pids to children it gets.
///
/// It can when its `cgroup.subtree_control` lists them already; when it is the hierarchy's
/// real root (which is exempt from the no-internal-processes rule); or when it holds no
/// processes and its `cgroup.controllers` offers them, so that they can be enabled. The
/// root is recognised by having no `cgroup.events` (the kernel gives that file to every cgroup
/// but the root), not by a path of `/`: inside a cgroup namespace `/` is the namespace's root,
/// which the rule does bind.
fn check_v2_host(dir: &Path) -> Result<(), CgroupError> {
    let enabled = fs::read(&dir.join("cgroup.subtree_control"))?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = V2_DELEGATED
        .into_iter()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() || !dir.join("cgroup.events").exists() {
        return Ok(());
    }
    let cannot = |reason: String| CgroupError::CannotHostTasks {
        path: dir.to_owned(),
        reason,
    };
    let procs_path = dir.join("cgroup.procs");
    let procs = fs::read(&procs_path)?;
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if !pids.is_empty() {
        let shown = pids.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        let more = if pids.len() > 5 { ", ..." } else { "" };
        return Err(cannot(format!(
            "it holds processes ({shown}{more}) and does not delegate {} to children (a v2 \
             cgroup with processes cannot)",
            missing.join(", ")
        )));
    }
    let offered = fs::read(&dir.join("cgroup.controllers"))?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    let unavailable: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|c| !offered.contains(c))
        .collect();
    if unavailable.is_empty() {
        Ok(())
    } else {
        Err(cannot(format!(
            "its cgroup.controllers does not offer {}",
            unavailable.join(", ")
        )))
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

/// Makes sure a v2 cgroup hands cpu, memory and pids to its children.
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&subtree)?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let wanted: Vec<&str> = V2_DELEGATED
        .into_iter()
        .filter(|c| !enabled.contains(c))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let offered_path = dir.join("cgroup.controllers");
    let offered = fs::read(&offered_path)?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    if let Some(c) = wanted.iter().find(|c| !offered.contains(c)) {
        return Err(CgroupError::ControllerUnavailable {
            controller: (*c).to_owned(),
            path: offered_path,
        });
    }
    let value = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(&subtree, &value).map_err(|e| match e {
        CgroupError::Write { path, source, .. } => CgroupError::Delegate {
            path,
            controllers: value.clone(),
            source,
        },
        other => other,
    })
}

/// One task's cgroup, created by us under a [`CgroupParent`].
#[derive(Debug)]
pub struct TaskCgroup {
    name: String,
    version: CgroupVersion,
    dirs: Vec<ControllerDir>,
}

impl TaskCgroup {
    /// Creates `name` under `parent` with the limits applied and read back. An existing
    /// cgroup of that name is refused; on any failure nothing is left behind.
    pub fn create(
        parent: &CgroupParent,
        name: &str,
        resources: &Resources,
    ) -> Result<Self, CgroupError> {
        validate_name(name)?;
        resources
            .validate()
            .map_err(CgroupError::InvalidResources)?;
        let cgroup = Self::at(parent, name)?;
        if parent.version == CgroupVersion::V2 {
            for d in &parent.dirs {
                enable_v2_controllers(&d.dir)?;
            }
        }
        let mut created: Vec<&Path> = Vec::new();
        let rollback = |created: &[&Path]| {
            for dir in created.iter().rev() {
                // Best effort: the directories are empty and were made a moment ago.
                let _ = std::fs::remove_dir(dir);
            }
        };
        for d in &cgroup.dirs {
            if let Err(source) = std::fs::create_dir(&d.dir) {
                rollback(&created);
                return Err(if source.kind() == ErrorKind::AlreadyExists {
                    CgroupError::AlreadyExists {
                        path: d.dir.clone(),
                    }
                } else {
                    CgroupError::Create {
                        path: d.dir.clone(),
                        source,
                    }
                });
            }
            created.push(&d.dir);
        }
        if let Err(e) = limits::apply(cgroup.version, |c| cgroup.dir_for(c), resources) {
            rollback(&created);
            return Err(e);
        }
        Ok(cgroup)
    }

    /// An existing task cgroup, `None` if it is not there. A cgroup present in only some
    /// hierarchies (a crash during create) is returned so that it can be destroyed.
    pub fn open(parent: &CgroupParent, name: &str) -> Result<Option<Self>, CgroupError> {
        validate_name(name)?;
        let cgroup = Self::at(parent, name)?;
        Ok(cgroup.dirs.iter().any(|d| d.dir.exists()).then_some(cgroup))
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
        validate_name(name)?;
        let layout = Layout::detect()?;
        let hierarchies = layout.as_ref().map_or(&[][..], |l| &l.hierarchies[..]);
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
                .max_by_key(|h| h.mountpoint.components().count())
                .ok_or_else(|| {
                    refuse(format!(
                        "not inside a mounted cgroup hierarchy of {REQUIRED_CONTROLLERS:?}"
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
        // Gone since (destroyed, or never made in that hierarchy): nothing to clean there.
        dirs.retain(|d| std::fs::symlink_metadata(&d.dir).is_ok_and(|m| m.is_dir()));
        match layout {
            Some(layout) if !dirs.is_empty() => Ok(Some(Self {
                name: name.to_owned(),
                version: layout.version,
                dirs,
            })),
            _ => Ok(None),
        }
    }

    fn at(parent: &CgroupParent, name: &str) -> Result<Self, CgroupError> {
        let dirs = parent
            .dirs
            .iter()
            .map(|d| d.child(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_owned(),
            version: parent.version,
            dirs,
        })
    }

    /// Its name under the parent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hierarchy layout of this cgroup.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Its directory in each hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.clone()).collect()
    }

    /// Its directory for `controller`, one of [`REQUIRED_CONTROLLERS`].
    pub fn controller_path(&self, controller: &str) -> Result<PathBuf, CgroupError> {
        self.dir_for(controller).map(Path::to_owned)
    }

    fn dir_for(&self, controller: &str) -> Result<&Path, CgroupError> {
        if !REQUIRED_CONTROLLERS.contains(&controller) {
            return Err(CgroupError::UnknownController(controller.to_owned()));
        }
        self.dirs
            .iter()
            .find(|d| d.hierarchy.controllers.contains(&controller))
            .map(|d| d.dir.as_path())
            .ok_or_else(|| CgroupError::MissingControllers(vec![controller.to_owned()]))
    }

    /// The directory named in errors about the cgroup as a whole.
    fn primary_dir(&self) -> &Path {
        self.dir_for("freezer")
            .or_else(|_| self.dir_for("memory"))
            .ok()
            .or_else(|| self.dirs.first().map(|d| d.dir.as_path()))
            .unwrap_or(Path::new("/sys/fs/cgroup"))
    }

    /// Moves `pid` (a process we just started) into the cgroup in every controller.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid(pid));
        }
        for d in &self.dirs {
            fs::write(&d.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every pid in the cgroup and its descendants, in every hierarchy, sorted.
    /// A hierarchy where the cgroup does not exist contributes nothing.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            for dir in descendants(&d.dir)? {
                let path = dir.join("cgroup.procs");
                match std::fs::read_to_string(&path) {
                    Ok(text) => pids.extend(fs::parse_pids(&path, &text)?),
                    // Removed meanwhile: nothing in it.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(source) => return Err(CgroupError::Read { path, source }),
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Kills every process in the cgroup and returns once it is empty: v2 `cgroup.kill` where
    /// present (for up to 3 s), then rounds of freeze, SIGKILL by pidfd, thaw (each waiting at
    /// most 0.5 s for the freezer and 0.5 s for the exits) until the cgroup is empty or
    /// [`KILL_ALL_BUDGET`] (5 s) is spent, which is [`CgroupError::NotEmpty`] naming the
    /// survivors. Returns at once for an empty cgroup.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        self.kill_everything(KILL_ALL_BUDGET)
    }

    /// [`TaskCgroup::kill_all`] within `budget` instead of [`KILL_ALL_BUDGET`] (at least one
    /// round is tried): for a kill that must end by a deadline.
    pub fn kill_all_within(&self, budget: Duration) -> Result<(), CgroupError> {
        self.kill_everything(budget.min(KILL_ALL_BUDGET))
    }

    /// Kills what is left ([`TaskCgroup::kill_all`]), removes the cgroup (descendants first)
    /// in every controller, and checks it is gone; within [`DESTROY_BUDGET`] in all: the
    /// rmdir retries of a busy cgroup share [`REMOVE_WAIT`], after which
    /// [`CgroupError::StillExists`]. Borrowed, so that a caller whose removal failed still
    /// holds the cgroup and can report it or try again.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.destroy_within(DESTROY_BUDGET)
    }

    /// [`TaskCgroup::destroy`] within `budget` instead of [`DESTROY_BUDGET`]: the kill and the
    /// rmdir retries share it (each tried at least once).
    pub fn destroy_within(&self, budget: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        self.kill_all_within(budget)?;
        let left = budget.saturating_sub(start.elapsed()).min(REMOVE_WAIT);
        let deadline = Instant::now() + left;
        for d in &self.dirs {
            let mut dirs = descendants(&d.dir)?;
            // Deepest first: a cgroup with children cannot be removed.
            dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for dir in dirs {
                remove_dir_until(&dir, deadline)?;
            }
        }
        Ok(())
    }

    /// Whether the kernel OOM-killed a process in the cgroup.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        Ok(self.oom_kill_count()? > 0)
    }

    /// Memory, cpu and pids use (the timestamp is left for the caller).
    pub fn stats(&self) -> Result<TaskStats, CgroupError> {
        self.read_stats()
    }
}

/// Bound on cgroup nesting walked below a task cgroup.
const MAX_DEPTH: usize = 32;

/// `dir` and every cgroup below it (empty when `dir` does not exist).
fn descendants(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0usize)];
    while let Some((cur, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&cur) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path: cur, source }),
        };
        if depth < MAX_DEPTH {
            for entry in entries {
                let entry = entry.map_err(|source| CgroupError::Read {
                    path: cur.clone(),
                    source,
                })?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        out.push(cur);
    }
    Ok(out)
}

/// rmdir, retried for up to [`REMOVE_WAIT`] while the kernel still reports the cgroup busy,
/// then checked gone.
fn remove_dir_verified(dir: &Path) -> Result<(), CgroupError> {
    remove_dir_until(dir, Instant::now() + REMOVE_WAIT)
}

/// rmdir, retried until `deadline` while the kernel still reports the cgroup busy (tried at
/// least once), then checked gone.
fn remove_dir_until(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                sleep(delay.min(left));
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
    if dir.exists() {
        return Err(CgroupError::StillExists {
            path: dir.to_owned(),
            waited_ms: start.elapsed().as_millis(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["execdriver-abc", "a", "x.y_z-1", &"a".repeat(255)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/a",
            ".hidden",
            "a b",
            "a\0b",
            "é",
            &"a".repeat(256),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(cgroup_name("t1"), "execdriver-t1");
    }

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
    fn join_rel_at_root_and_below() {
        assert_eq!(join_rel("/", "x"), "/x");
        assert_eq!(join_rel("/a/b", "x"), "/a/b/x");
    }

    #[test]
    fn unknown_controllers_are_refused() {
        let h = Hierarchy {
            controllers: vec!["memory"],
            mountpoint: PathBuf::from("/nonexistent/memory"),
            mount_root: "/".into(),
        };
        let cg = TaskCgroup {
            name: "t".into(),
            version: CgroupVersion::V1,
            dirs: vec![ControllerDir {
                dir: h.dir_of("/t").unwrap(),
                rel: "/t".into(),
                hierarchy: h,
            }],
        };
        assert!(matches!(
            cg.controller_path("cpuset"),
            Err(CgroupError::UnknownController(_))
        ));
        assert!(matches!(
            cg.controller_path("name=systemd"),
            Err(CgroupError::UnknownController(_))
        ));
        assert!(matches!(
            cg.controller_path("cpu"),
            Err(CgroupError::MissingControllers(_))
        ));
        assert_eq!(
            cg.controller_path("memory").unwrap(),
            Path::new("/nonexistent/memory/t")
        );
        // A cgroup whose directories do not exist has no pids (rather than an error).
        assert!(cg.pids().unwrap().is_empty());
    }

    /// A fake v2 cgroup directory: `events` false makes it look like the hierarchy root.
    fn fake_v2(subtree: &str, procs: &str, offered: &str, events: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |f: &str, v: &str| std::fs::write(dir.path().join(f), v).unwrap();
        write("cgroup.subtree_control", subtree);
        write("cgroup.procs", procs);
        write("cgroup.controllers", offered);
        if events {
            write("cgroup.events", "populated 1\nfrozen 0\n");
        }
        dir
    }

    #[test]
    fn v2_host_that_already_delegates_is_fine() {
        let d = fake_v2(
            "cpuset cpu memory pids\n",
            "42\n",
            "cpuset cpu memory pids\n",
            true,
        );
        check_v2_host(d.path()).unwrap();
    }

    #[test]
    fn v2_root_is_exempt_from_the_process_rule() {
        let d = fake_v2("\n", "1\n2\n", "cpu memory pids\n", false);
        check_v2_host(d.path()).unwrap();
    }

    #[test]
    fn v2_empty_cgroup_offering_the_controllers_is_fine() {
        let d = fake_v2("cpu\n", "", "cpu io memory pids\n", true);
        check_v2_host(d.path()).unwrap();
    }

    #[test]
    fn v2_cgroup_with_processes_is_refused_with_advice() {
        let d = fake_v2("memory\n", "123\n456\n", "cpu memory pids\n", true);
        let e = check_v2_host(d.path()).unwrap_err();
        assert!(matches!(e, CgroupError::CannotHostTasks { .. }), "{e:?}");
        let msg = e.to_string();
        for part in [
            "holds processes (123, 456)",
            "cpu, pids",
            "--cgroup-parent",
            "delegate",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
        assert!(msg.contains(&d.path().display().to_string()), "{msg}");
        assert!(!msg.contains("memory,"), "{msg}");
        let many: String = (1..=8).map(|p| format!("{p}\n")).collect();
        let d = fake_v2("", &many, "cpu memory pids", true);
        let msg = check_v2_host(d.path()).unwrap_err().to_string();
        assert!(msg.contains("(1, 2, 3, 4, 5, ...)"), "{msg}");
    }

    #[test]
    fn v2_empty_cgroup_without_the_controllers_is_refused() {
        let d = fake_v2("", "", "cpu io\n", true);
        let msg = check_v2_host(d.path()).unwrap_err().to_string();
        assert!(msg.contains("does not offer memory, pids"), "{msg}");
    }

    #[test]
    fn v2_unreadable_cgroup_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone");
        let e = check_v2_host(&gone).unwrap_err();
        assert!(matches!(e, CgroupError::Read { ref path, .. } if path.starts_with(&gone)));
    }

    #[test]
    fn v2_configured_parent_checks_each_existing_directory() {
        let root = fake_v2("", "1\n", "cpu memory pids", false);
        let write = |dir: &Path, procs: &str| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
            std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids").unwrap();
            std::fs::write(dir.join("cgroup.events"), "populated 0\n").unwrap();
        };
        // Nothing below the root yet: `at` would make it all.
        check_v2_path(root.path(), "a/b").unwrap();
        write(&root.path().join("a"), "");
        check_v2_path(root.path(), "a/b").unwrap();
        // An existing parent with processes fails whether it is the parent or on the way.
        write(&root.path().join("a/b"), "77\n");
        let msg = check_v2_path(root.path(), "a/b").unwrap_err().to_string();
        assert!(
            msg.contains("a/b cannot hold") && msg.contains("77"),
            "{msg}"
        );
        write(&root.path().join("a"), "88\n");
        let msg = check_v2_path(root.path(), "a/c").unwrap_err().to_string();
        assert!(msg.contains("88"), "{msg}");
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
        };
        p.can_host_tasks().unwrap();
        let v2 = CgroupParent {
            version: CgroupVersion::V2,
            ..p
        };
        assert!(matches!(v2.can_host_tasks(), Err(CgroupError::Read { .. })));
    }

    #[test]
    fn probe_sees_this_node() {
        let p = probe();
        println!("probe: {p:?}");
        if p.version.is_some() {
            assert!(p.mountpoint.is_absolute());
        }
    }
}
