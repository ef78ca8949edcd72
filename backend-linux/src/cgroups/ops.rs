//! [`TaskCgroupOps`]: what the driver does with one task's cgroup, whichever the cgroup
//! version. `v1/` and `v2/` implement it over the kernel's files, `fake` in memory for tests;
//! the kill-all, destroy and OOM answers are written once here on top of the primitives.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use execdriver_core::{Resources, TaskStats};

use super::{CgroupError, CgroupVersion, KILL_ALL_BUDGET, REMOVE_WAIT, kill};

/// One control file a create wrote, with the value it reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLimit {
    /// The control file.
    pub path: PathBuf,
    /// What it reads after the write (equal to what was written, or the create failed).
    pub value: String,
}

/// The operations on one task cgroup: its directories are known from the start (they may
/// not exist yet, or any more); `create` makes them.
///
/// Contract, for every implementation:
/// - `create` refuses an existing cgroup ([`CgroupError::AlreadyExists`]), applies every
///   limit and reads it back (a difference is [`CgroupError::LimitMismatch`] naming the
///   file), and on any failure leaves nothing behind;
/// - `pids` lists the cgroup's and its descendants' members, sorted and once each; a read
///   failure is an error, never an empty list; a cgroup that does not exist has none;
/// - `signal_member` signals a pid only while it is a member (a reused pid is left alone);
/// - `remove` removes the cgroup and its descendants and checks they are gone;
/// - after `kill_all_within` returns `Ok` the cgroup is empty and thawed, and it returns
///   within its budget plus the system calls of the round under way.
pub trait TaskCgroupOps: fmt::Debug + Send + Sync {
    /// The hierarchy layout this cgroup lives in.
    fn version(&self) -> CgroupVersion;

    /// Its directory in each hierarchy (one on v2).
    fn paths(&self) -> Vec<PathBuf>;

    /// Its directory for `controller` (one of [`super::REQUIRED_CONTROLLERS`]).
    fn controller_path(&self, controller: &str) -> Result<PathBuf, CgroupError>;

    /// The directory named in errors about the cgroup as a whole.
    fn primary_path(&self) -> PathBuf;

    /// Whether any of its directories exists.
    fn exists(&self) -> bool;

    /// Makes the cgroup with `resources` applied and read back (see the contract above).
    fn create(&self, resources: &Resources) -> Result<Vec<AppliedLimit>, CgroupError>;

    /// Moves `pid` into the cgroup (in every hierarchy).
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;

    /// The cgroup's directory, opened, for a process to be born in it (clone3 with
    /// CLONE_INTO_CGROUP): where the cgroup is one directory in the unified hierarchy and
    /// it can be opened. A child born there needs no write to `cgroup.procs`, and no RCU
    /// grace period waited out for that write.
    fn clone_target(&self) -> Option<OwnedFd> {
        None
    }

    /// Every member pid, descendants included, sorted, once each.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;

    /// Whether the cgroup can be frozen (v1: its freezer directory exists; v2: cgroup.freeze).
    fn has_freezer(&self) -> bool;

    /// Asks the kernel to freeze every member (returns before the freeze completes).
    fn freeze(&self) -> Result<(), CgroupError>;

    /// Whether the kernel reports the cgroup fully frozen.
    fn is_frozen(&self) -> Result<bool, CgroupError>;

    /// Thaws the cgroup.
    fn thaw(&self) -> Result<(), CgroupError>;

    /// Kills every member at once where the kernel can (v2 `cgroup.kill`); false when it
    /// cannot, and nothing was done.
    fn kill_by_kernel(&self) -> Result<bool, CgroupError>;

    /// Sends `signal` to `pid` if it is (still) a member; a pid that is gone is not an error.
    fn signal_member(&self, pid: i32, signal: i32) -> Result<(), CgroupError>;

    /// Memory, cpu and pids use (the timestamp is left for the caller).
    fn stats(&self) -> Result<TaskStats, CgroupError>;

    /// How many times the kernel OOM-killed a member (descendants included).
    fn oom_kill_count(&self) -> Result<u64, CgroupError>;

    /// Removes the cgroup and its descendants, retrying a busy one until `deadline`, and
    /// checks they are gone. Members are not killed: a cgroup with members stays busy.
    fn remove(&self, deadline: Instant) -> Result<(), CgroupError>;

    /// Kills every member and returns once the cgroup is empty, within `budget`: v2
    /// `cgroup.kill` where present (for at most 3 s and 60 % of the budget), then rounds of
    /// freeze, SIGKILL by pidfd, thaw (each waiting at most 0.5 s for the freezer and 0.5 s
    /// for the exits) until the cgroup is empty or the budget is spent, which is
    /// [`CgroupError::NotEmpty`] naming the survivors. At least one round runs, so a budget
    /// already spent costs the system calls of one round. Returns at once for an empty cgroup.
    fn kill_all_within(&self, budget: Duration) -> Result<(), CgroupError> {
        kill::kill_all(self, budget)
    }

    /// [`TaskCgroupOps::kill_all_within`] the [`KILL_ALL_BUDGET`].
    fn kill_all(&self) -> Result<(), CgroupError> {
        self.kill_all_within(KILL_ALL_BUDGET)
    }

    /// Kills what is left ([`TaskCgroupOps::kill_all`]), then removes the cgroup with
    /// [`REMOVE_WAIT`] of rmdir retries; within [`super::DESTROY_BUDGET`] in all.
    fn destroy(&self) -> Result<(), CgroupError> {
        self.destroy_within(super::DESTROY_BUDGET)
    }

    /// [`TaskCgroupOps::destroy`] within `budget`: the kill and the rmdir retries share it
    /// (each tried at least once), for a cleanup that must end by a deadline.
    fn destroy_within(&self, budget: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        self.kill_all_within(budget.min(KILL_ALL_BUDGET))?;
        let left = budget.saturating_sub(start.elapsed()).min(REMOVE_WAIT);
        self.remove(Instant::now() + left)
    }

    /// Whether the kernel OOM-killed a member.
    fn oom_killed(&self) -> Result<bool, CgroupError> {
        Ok(self.oom_kill_count()? > 0)
    }
}
