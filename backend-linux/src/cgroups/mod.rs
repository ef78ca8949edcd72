//! Every cgroup operation of the driver, v1 and v2, behind one trait.
//!
//! Layout, top down:
//! - [`TaskCgroup`] (`task.rs`): one task's cgroup as the rest of the driver sees it. It finds
//!   or makes the cgroup's directories under a [`CgroupParent`] (`parent.rs`) and drives
//!   them through [`TaskCgroupOps`] (`ops.rs`), the one trait for what the driver does with a
//!   cgroup: create with limits (applied and read back), add a process, freeze and thaw, kill
//!   all (`kill.rs`, written once over the trait), pids, stats, OOM count, remove.
//! - `v1/` implements it over the per-controller hierarchies, `v2/` over the unified one
//!   (`v2/delegation.rs`: `cgroup.subtree_control`); `fake.rs` in memory for unit tests.
//! - `limits.rs`: the value conversions (cpu shares to weight, millicores to a CFS quota,
//!   pages) and the writer that reads every value back; each version lists its files.
//! - `named.rs`: the cgroup a task's spec names for its cpuset (Nomad's `cpuset_cgroup`),
//!   another manager's, checked and placed relative to (the task's cgroup beneath it, or on
//!   v1 without cpus joined), never killed by or removed;
//! - `placement.rs`: the default parent (own cgroup or the driver's slice) and why;
//!   `supervisors.rs`: the supervisors' own cgroup, in every hierarchy.
//! - `hierarchy.rs`: mountinfo and /proc/self/cgroup; `fs.rs`: file helpers whose errors
//!   name the file.
//!
//! A task cgroup is created in the hierarchies of [`REQUIRED_CONTROLLERS`], and on v1 in those
//! of [`OPTIONAL_V1_CONTROLLERS`] only for a task that asks for a cpuset or devices (never in
//! blkio or `name=systemd`), as `<parent>/<name>` where the parent is, by
//! default, the caller's own cgroup in each hierarchy ([`CgroupParent::own`]). What is
//! checked everywhere: names are one plain path component and controller names are from
//! [`REQUIRED_CONTROLLERS`]; each directory is made with one mkdir, an existing cgroup is
//! refused and a failed create rolled back; every limit written is read back; a membership
//! read failure is an error, never "no members"; removal retries a busy rmdir for up to
//! [`REMOVE_WAIT`] and checks the directory is gone.

// Part of this API (inspection, the parent helpers, the value conversions) is used only by
// the workspace's tests, which reach it through the `test-support` feature.
#![cfg_attr(
    not(any(test, feature = "test-support")),
    allow(dead_code, unused_imports)
)]

mod cpuset;
mod error;
#[cfg(test)]
pub(crate) mod fake;
mod fs;
mod hierarchy;
mod kill;
mod limits;
mod membership;
mod named;
mod ops;
mod parent;
mod placement;
#[cfg(any(test, feature = "test-support"))]
mod service;
#[cfg(any(test, feature = "test-support"))]
mod standin;
mod supervisors;
mod task;
mod v1;
mod v2;

use std::path::PathBuf;
use std::time::Duration;

use hierarchy::Layout;

pub use error::CgroupError;
pub use membership::cgroup_dirs_of;
pub use limits::{CPU_PERIOD_US, cpu_max_line, cpu_quota_us, shares_to_weight};
pub use ops::{AppliedLimit, TaskCgroupOps};
pub use parent::{CgroupParent, TaskPlacement};
pub use placement::{
    CallerCgroup, DEFAULT_SLICE_NAME, DefaultParent, OwnCgroupFacts, ParentDecision,
    decide_default_parent, detect_default_parent, slice_dir_name,
};
pub use supervisors::{
    SUPERVISORS_CGROUP, SupervisorsCgroup, join_supervisors_cgroup, supervisors_clone_target,
    supervisors_cgroup_paths,
};
#[cfg(any(test, feature = "test-support"))]
pub use service::ServiceCgroup;
#[cfg(any(test, feature = "test-support"))]
pub use standin::NomadCgroup;
pub use task::TaskCgroup;

/// How long removal retries an rmdir that fails with EBUSY (for one removal call: all the
/// directories of a [`TaskCgroup::destroy`] share it).
pub const REMOVE_WAIT: Duration = Duration::from_secs(2);

/// The longest [`TaskCgroup::kill_all`] spends killing before it reports
/// [`CgroupError::NotEmpty`] (plus the system calls of the round under way when it runs out,
/// milliseconds). Callers that wait for a kill (socket timeouts) derive theirs from it;
/// callers with a deadline of their own use [`TaskCgroup::kill_all_within`].
pub const KILL_ALL_BUDGET: Duration = Duration::from_secs(5);

/// The longest [`TaskCgroup::destroy`] takes: [`KILL_ALL_BUDGET`] for the kill, then
/// [`REMOVE_WAIT`] of rmdir retries shared by every directory it removes (plus the system
/// calls under way when a budget runs out).
pub const DESTROY_BUDGET: Duration = KILL_ALL_BUDGET.saturating_add(REMOVE_WAIT);

/// Longest cgroup name accepted (a directory name).
pub const MAX_NAME_LEN: usize = 255;

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

/// v1 hierarchies a task cgroup joins only when the task asks for what they control: cpuset
/// for a cpuset, devices for devices (so that the common start path makes no more cgroups).
pub const OPTIONAL_V1_CONTROLLERS: [&str; 2] = ["cpuset", "devices"];

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
    fn probe_sees_this_node() {
        let p = probe();
        println!("probe: {p:?}");
        if p.version.is_some() {
            assert!(p.mountpoint.is_absolute());
        }
    }
}
