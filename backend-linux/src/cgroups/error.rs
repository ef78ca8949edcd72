//! The one error type of the cgroups module: which cgroup, which file, which limit.

use std::path::PathBuf;

use execdriver_core::SpecError;

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
    /// A cpuset with cpus the parent cgroup does not allow.
    #[error("cpuset {cpus} asks for cpus {outside} that the parent cgroup does not allow (it allows {allowed}, from {}): pick cpus from {allowed}", .path.display())]
    CpusNotAllowed {
        /// The cpus asked for.
        cpus: String,
        /// Those of them the parent does not allow.
        outside: String,
        /// What the parent allows.
        allowed: String,
        /// The file that says so.
        path: PathBuf,
    },
    /// The cgroup named for the task's cpuset cannot be used (see `Resources::cpuset_cgroup`).
    #[error("cpuset cgroup {}: {reason}", .path.display())]
    CpusetCgroup {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Devices asked for on a node whose cgroups cannot confine them.
    #[error("devices need cgroup v1 here: execdriver does not attach a BPF device filter on cgroup v2 yet (leave devices out)")]
    DevicesNeedV1,
    /// An optional v1 hierarchy a task asks for is not mounted.
    #[error("the task asks for {what}, which needs the cgroup v1 {controller} hierarchy, and none is mounted")]
    OptionalHierarchyMissing {
        /// The controller.
        controller: &'static str,
        /// The task setting that needs it.
        what: &'static str,
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
    /// Processes survived every kill round of the time budget (by default
    /// [`super::KILL_ALL_BUDGET`]).
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
    /// After a move, /proc/self/cgroup shows the process elsewhere in a hierarchy.
    #[error(
        "moved into {} but /proc/self/cgroup shows {found:?} for the {hierarchy:?} hierarchy",
        .path.display()
    )]
    NotJoined {
        /// The cgroup joined.
        path: PathBuf,
        /// The hierarchy's key in /proc/self/cgroup (empty for the unified one).
        hierarchy: String,
        /// What /proc/self/cgroup shows (empty when it has no line for it).
        found: String,
    },
    /// Removing a parent this driver did not create.
    #[error("refusing to remove cgroup parent {}: it is not one this driver created", .path.display())]
    NotOurs {
        /// The directory.
        path: PathBuf,
    },
}
