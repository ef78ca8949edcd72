//! Every cgroup operation of the driver, v1 and v2, on top of cgroups-rs.
//!
//! OWNED BY THE CGROUPS WORK. Signatures here are the contract the supervisor and platform
//! code against; change them only together with their callers.

use std::path::PathBuf;

use execdriver_core::{Resources, TaskStats};

/// What went wrong with a cgroup: which cgroup, which file, which limit.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Placeholder until the module is written.
    #[error("cgroup operation not implemented: {0}")]
    NotImplemented(&'static str),
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

/// The cgroup name of a task: `execdriver-<task id>`.
pub fn cgroup_name(task_id: &str) -> String {
    format!("execdriver-{task_id}")
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
    CgroupProbe {
        version: None,
        mountpoint: PathBuf::from("/sys/fs/cgroup"),
        missing: REQUIRED_CONTROLLERS
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
    }
}

/// The parent under which task cgroups are created, resolved per controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupParent {
    _private: (),
}

impl CgroupParent {
    /// The calling process's own cgroup in each controller (from /proc/self/cgroup).
    pub fn own() -> Result<Self, CgroupError> {
        Err(CgroupError::NotImplemented("CgroupParent::own"))
    }

    /// A configured parent, relative to each hierarchy's root (e.g. `execdriver`).
    pub fn at(relative: &str) -> Result<Self, CgroupError> {
        let _ = relative;
        Err(CgroupError::NotImplemented("CgroupParent::at"))
    }

    /// The hierarchy layout of this parent.
    pub fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }
}

/// One task's cgroup, created by us under a [`CgroupParent`].
#[derive(Debug)]
pub struct TaskCgroup {
    name: String,
}

impl TaskCgroup {
    /// Creates `name` under `parent` with the limits applied and read back.
    pub fn create(
        parent: &CgroupParent,
        name: &str,
        resources: &Resources,
    ) -> Result<Self, CgroupError> {
        let _ = (parent, name, resources);
        Err(CgroupError::NotImplemented("TaskCgroup::create"))
    }

    /// An existing task cgroup, `None` if it is not there.
    pub fn open(parent: &CgroupParent, name: &str) -> Result<Option<Self>, CgroupError> {
        let _ = (parent, name);
        Err(CgroupError::NotImplemented("TaskCgroup::open"))
    }

    /// Its name under the parent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves `pid` (a process we just started) into the cgroup in every controller.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let _ = pid;
        Err(CgroupError::NotImplemented("TaskCgroup::add_process"))
    }

    /// Every pid in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Err(CgroupError::NotImplemented("TaskCgroup::pids"))
    }

    /// Kills every process in the cgroup and returns once it is empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("TaskCgroup::kill_all"))
    }

    /// Kills what is left, removes the cgroup in every controller, and checks it is gone.
    pub fn destroy(self) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("TaskCgroup::destroy"))
    }

    /// Whether the kernel OOM-killed a process in the cgroup.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        Err(CgroupError::NotImplemented("TaskCgroup::oom_killed"))
    }

    /// Memory, cpu and pids use (the timestamp is left for the caller).
    pub fn stats(&self) -> Result<TaskStats, CgroupError> {
        Err(CgroupError::NotImplemented("TaskCgroup::stats"))
    }
}
