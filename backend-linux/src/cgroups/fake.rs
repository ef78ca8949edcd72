//! An in-memory [`TaskCgroupOps`] for unit tests, with failure injection: members that
//! ignore SIGKILL (a process stuck in the kernel), members that fork when killed while not
//! frozen, a limit that reads back differently, and any operation made to fail.
//!
//! It keeps the contract of the real implementations (see [`TaskCgroupOps`]), so tests of
//! code built on the trait (the kill-all algorithm, [`TaskCgroup`]) run here without root.
//! A [`FakeCgroup`] is a handle: clones share one state, so a test keeps one to look inside
//! and inject faults while the code under test owns another.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use execdriver_core::{Resources, TaskStats};

use super::{AppliedLimit, CgroupError, CgroupVersion, TaskCgroupOps, v1, v2};

/// An operation of the fake, to fail on purpose or to find in the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FakeOp {
    /// Making the directories.
    Create,
    /// Writing the limits (the create is rolled back).
    Apply,
    /// Moving a pid in.
    AddProcess,
    /// Listing members.
    Pids,
    /// Starting a freeze.
    Freeze,
    /// Reading the freezer state.
    IsFrozen,
    /// Thawing.
    Thaw,
    /// The kernel's kill-all (v2 cgroup.kill).
    KillByKernel,
    /// Signalling one member.
    Signal,
    /// Reading stats.
    Stats,
    /// Reading the OOM-kill counter.
    OomKillCount,
    /// Removing the cgroup.
    Remove,
}

#[derive(Debug)]
struct State {
    version: CgroupVersion,
    exists: bool,
    resources: Option<Resources>,
    members: BTreeSet<i32>,
    frozen: bool,
    has_freezer: bool,
    cgroup_kill: bool,
    immortal: BTreeSet<i32>,
    /// How many times a member killed while not frozen forks a new one first.
    forks_left: u32,
    next_pid: i32,
    oom_kills: u64,
    failing: BTreeSet<FakeOp>,
    /// A limit file that reads back something else than what was written.
    mismatch: Option<&'static str>,
    calls: Vec<FakeOp>,
}

/// An in-memory task cgroup.
#[derive(Debug, Clone)]
pub(crate) struct FakeCgroup {
    name: String,
    state: Arc<Mutex<State>>,
}

impl FakeCgroup {
    /// A cgroup `name` that does not exist yet, on `version`, with a freezer and without
    /// cgroup.kill.
    pub fn new(name: &str, version: CgroupVersion) -> Self {
        Self {
            name: name.to_owned(),
            state: Arc::new(Mutex::new(State {
                version,
                exists: false,
                resources: None,
                members: BTreeSet::new(),
                frozen: false,
                has_freezer: true,
                cgroup_kill: false,
                immortal: BTreeSet::new(),
                forks_left: 0,
                next_pid: 10_000,
                oom_kills: 0,
                failing: BTreeSet::new(),
                mismatch: None,
                calls: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, file: &str) -> PathBuf {
        let dir = PathBuf::from("/fake/cgroup").join(&self.name);
        if file.is_empty() { dir } else { dir.join(file) }
    }

    /// Logs `op` and fails it if asked to.
    fn enter(&self, op: FakeOp) -> Result<MutexGuard<'_, State>, CgroupError> {
        let mut s = self.lock();
        s.calls.push(op);
        if s.failing.contains(&op) {
            return Err(self.injected(op));
        }
        Ok(s)
    }

    fn injected(&self, op: FakeOp) -> CgroupError {
        let source = || std::io::Error::from_raw_os_error(libc::EIO);
        let path = self.path(&format!("{op:?}"));
        match op {
            FakeOp::Create => CgroupError::Create {
                path: self.path(""),
                source: source(),
            },
            FakeOp::Remove => CgroupError::Remove {
                path: self.path(""),
                source: source(),
            },
            FakeOp::Signal => CgroupError::Signal {
                pid: 0,
                source: source(),
            },
            FakeOp::Pids | FakeOp::IsFrozen | FakeOp::Stats | FakeOp::OomKillCount => {
                CgroupError::Read {
                    path,
                    source: source(),
                }
            }
            _ => CgroupError::Write {
                path,
                value: "injected".into(),
                source: source(),
            },
        }
    }

    /// Makes `op` fail until [`FakeCgroup::heal`].
    pub fn fail(&self, op: FakeOp) -> &Self {
        self.lock().failing.insert(op);
        self
    }

    /// Lets `op` succeed again.
    pub fn heal(&self, op: FakeOp) -> &Self {
        self.lock().failing.remove(&op);
        self
    }

    /// Makes `file` read back something else than what a create writes.
    pub fn mismatch_on(&self, file: &'static str) -> &Self {
        self.lock().mismatch = Some(file);
        self
    }

    /// Whether the kernel can kill the cgroup at once (v2 cgroup.kill).
    pub fn with_cgroup_kill(&self, yes: bool) -> &Self {
        self.lock().cgroup_kill = yes;
        self
    }

    /// Whether the cgroup has a freezer.
    pub fn with_freezer(&self, yes: bool) -> &Self {
        self.lock().has_freezer = yes;
        self
    }

    /// A process that forks itself into the cgroup (the cgroup must exist).
    pub fn spawn(&self, pid: i32) -> &Self {
        let mut s = self.lock();
        assert!(s.exists, "spawning into a fake cgroup that does not exist");
        s.members.insert(pid);
        self
    }

    /// Makes `pid` ignore SIGKILL (a process stuck in the kernel).
    pub fn immortal(&self, pid: i32) -> &Self {
        self.lock().immortal.insert(pid);
        self
    }

    /// Makes the next `n` members killed while the cgroup is not frozen fork a child first.
    pub fn forks_when_killed(&self, n: u32) -> &Self {
        self.lock().forks_left = n;
        self
    }

    /// Counts one OOM kill.
    pub fn record_oom_kill(&self) -> &Self {
        self.lock().oom_kills += 1;
        self
    }

    /// The operations called so far, in order.
    pub fn calls(&self) -> Vec<FakeOp> {
        self.lock().calls.clone()
    }

    /// Whether the cgroup is frozen now.
    pub fn frozen(&self) -> bool {
        self.lock().frozen
    }

    /// The limits of the last successful create.
    pub fn resources(&self) -> Option<Resources> {
        self.lock().resources.clone()
    }
}

impl TaskCgroupOps for FakeCgroup {
    fn version(&self) -> CgroupVersion {
        self.lock().version
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.path("")]
    }

    fn controller_path(&self, _controller: &str) -> Result<PathBuf, CgroupError> {
        Ok(self.path(""))
    }

    fn primary_path(&self) -> PathBuf {
        self.path("")
    }

    fn exists(&self) -> bool {
        self.lock().exists
    }

    fn create(&self, resources: &Resources) -> Result<Vec<AppliedLimit>, CgroupError> {
        let mut s = self.enter(FakeOp::Create)?;
        if s.exists {
            return Err(CgroupError::AlreadyExists {
                path: self.path(""),
            });
        }
        s.calls.push(FakeOp::Apply);
        if s.failing.contains(&FakeOp::Apply) {
            // Rolled back: the directory was never left.
            return Err(self.injected(FakeOp::Apply));
        }
        // What the real version would write, as if every optional file were there.
        let settings = match s.version {
            CgroupVersion::V1 => v1::settings(resources, 4096),
            CgroupVersion::V2 => v2::settings(resources, 4096),
        };
        let mut applied = Vec::new();
        for setting in settings {
            let path = self.path(setting.file);
            if s.mismatch == Some(setting.file) {
                return Err(CgroupError::LimitMismatch {
                    path,
                    wanted: setting.value,
                    actual: "0".into(),
                });
            }
            applied.push(AppliedLimit {
                path,
                value: setting.value,
            });
        }
        s.exists = true;
        s.resources = Some(resources.clone());
        Ok(applied)
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid(pid));
        }
        let mut s = self.enter(FakeOp::AddProcess)?;
        if !s.exists {
            return Err(CgroupError::Write {
                path: self.path("cgroup.procs"),
                value: pid.to_string(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        s.members.insert(pid);
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let s = self.enter(FakeOp::Pids)?;
        Ok(s.members.iter().copied().collect())
    }

    fn has_freezer(&self) -> bool {
        let s = self.lock();
        s.exists && s.has_freezer
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.enter(FakeOp::Freeze)?.frozen = true;
        Ok(())
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(self.enter(FakeOp::IsFrozen)?.frozen)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.enter(FakeOp::Thaw)?.frozen = false;
        Ok(())
    }

    fn kill_by_kernel(&self) -> Result<bool, CgroupError> {
        let mut s = self.enter(FakeOp::KillByKernel)?;
        if !s.cgroup_kill {
            return Ok(false);
        }
        let immortal = s.immortal.clone();
        s.members.retain(|p| immortal.contains(p));
        Ok(true)
    }

    fn signal_member(&self, pid: i32, signal: i32) -> Result<(), CgroupError> {
        let mut s = self.enter(FakeOp::Signal)?;
        if !s.members.contains(&pid) || signal != libc::SIGKILL || s.immortal.contains(&pid) {
            return Ok(());
        }
        if !s.frozen && s.forks_left > 0 {
            s.forks_left -= 1;
            let child = s.next_pid;
            s.next_pid += 1;
            s.members.insert(child);
        }
        s.members.remove(&pid);
        Ok(())
    }

    fn stats(&self) -> Result<TaskStats, CgroupError> {
        let s = self.enter(FakeOp::Stats)?;
        let pids = s.members.len() as u64;
        Ok(TaskStats {
            pids,
            memory: execdriver_core::MemoryStats {
                rss: (1 << 20) * pids,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        Ok(self.enter(FakeOp::OomKillCount)?.oom_kills)
    }

    fn remove(&self, _deadline: Instant) -> Result<(), CgroupError> {
        let mut s = self.enter(FakeOp::Remove)?;
        if !s.members.is_empty() {
            return Err(CgroupError::Remove {
                path: self.path(""),
                source: std::io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        s.exists = false;
        s.frozen = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{KILL_ALL_BUDGET, TaskCgroup};
    use super::*;

    fn made(version: CgroupVersion) -> FakeCgroup {
        let cg = FakeCgroup::new("execdriver-t1", version);
        cg.create(&Resources::default()).unwrap();
        cg
    }

    #[test]
    fn create_applies_the_versions_limits_and_refuses_an_existing_cgroup() {
        let cg = FakeCgroup::new("t", CgroupVersion::V2);
        let r = Resources {
            cpu_max_millicores: Some(1500),
            ..Resources::default()
        };
        let applied = cg.create(&r).unwrap();
        let get = |f: &str| {
            applied
                .iter()
                .find(|a| a.path.ends_with(f))
                .map(|a| a.value.clone())
        };
        assert_eq!(get("cpu.weight").as_deref(), Some("39"));
        assert_eq!(get("cpu.max").as_deref(), Some("150000 100000"));
        assert_eq!(get("memory.oom.group").as_deref(), Some("1"));
        assert!(cg.exists());
        assert_eq!(cg.resources(), Some(r.clone()));
        assert!(matches!(
            cg.create(&r),
            Err(CgroupError::AlreadyExists { .. })
        ));
        assert!(cg.exists(), "a refused create removed the cgroup");

        let v1 = FakeCgroup::new("t", CgroupVersion::V1);
        let applied = v1.create(&r).unwrap();
        assert!(
            applied
                .iter()
                .any(|a| a.path.ends_with("cpu.cfs_quota_us") && a.value == "150000")
        );
    }

    #[test]
    fn failed_creates_leave_nothing() {
        for version in [CgroupVersion::V1, CgroupVersion::V2] {
            let cg = FakeCgroup::new("t", version);
            cg.fail(FakeOp::Apply);
            assert!(matches!(
                cg.create(&Resources::default()),
                Err(CgroupError::Write { .. })
            ));
            assert!(!cg.exists());
            cg.heal(FakeOp::Apply).mismatch_on("pids.max");
            let err = cg.create(&Resources::default()).unwrap_err();
            assert!(
                matches!(err, CgroupError::LimitMismatch { ref path, .. } if path.ends_with("pids.max")),
                "{err}"
            );
            assert!(!cg.exists());
        }
    }

    #[test]
    fn membership_signals_stats_and_oom() {
        let cg = made(CgroupVersion::V2);
        assert!(matches!(
            cg.add_process(-1),
            Err(CgroupError::InvalidPid(-1))
        ));
        cg.add_process(42).unwrap();
        cg.spawn(7);
        assert_eq!(cg.pids().unwrap(), vec![7, 42]);
        // A non-member is never signalled; a member that is gone is not an error.
        cg.signal_member(99, libc::SIGKILL).unwrap();
        cg.signal_member(7, libc::SIGTERM).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![7, 42]);
        assert_eq!(cg.stats().unwrap().pids, 2);
        assert!(!cg.oom_killed().unwrap());
        cg.record_oom_kill();
        assert_eq!(cg.oom_kill_count().unwrap(), 1);
        assert!(cg.oom_killed().unwrap());
        // A read failure is an error, never an empty list.
        cg.fail(FakeOp::Pids);
        assert!(matches!(cg.pids(), Err(CgroupError::Read { .. })));
        // Adding to a cgroup that is not there fails.
        let gone = FakeCgroup::new("gone", CgroupVersion::V1);
        assert!(gone.add_process(5).is_err());
    }

    #[test]
    fn kill_all_freezes_kills_thaws_and_empties() {
        let cg = made(CgroupVersion::V1);
        cg.spawn(1).spawn(2).spawn(3);
        cg.kill_all().unwrap();
        assert!(cg.pids().unwrap().is_empty());
        assert!(!cg.frozen(), "left frozen");
        let calls = cg.calls();
        let pos = |op| calls.iter().position(|c| *c == op).unwrap();
        assert!(pos(FakeOp::Freeze) < pos(FakeOp::Signal));
        assert!(pos(FakeOp::Signal) < pos(FakeOp::Thaw));
    }

    #[test]
    fn kill_all_of_an_empty_cgroup_does_nothing() {
        let cg = made(CgroupVersion::V2);
        cg.kill_all().unwrap();
        assert_eq!(cg.calls(), [FakeOp::Create, FakeOp::Apply, FakeOp::Pids]);
    }

    #[test]
    fn kernel_kill_is_used_where_there_is_one() {
        let cg = made(CgroupVersion::V2);
        cg.with_cgroup_kill(true).spawn(1).spawn(2);
        cg.kill_all().unwrap();
        assert!(cg.pids().unwrap().is_empty());
        assert!(cg.calls().contains(&FakeOp::KillByKernel));
        assert!(!cg.calls().contains(&FakeOp::Signal), "{:?}", cg.calls());
    }

    #[test]
    fn forking_members_are_caught_without_a_freezer_too() {
        let cg = made(CgroupVersion::V1);
        cg.with_freezer(false).forks_when_killed(2).spawn(1);
        cg.kill_all().unwrap();
        assert!(cg.pids().unwrap().is_empty());
        assert!(!cg.calls().contains(&FakeOp::Freeze));
        // With the freezer, the forks never happen.
        let cg = made(CgroupVersion::V1);
        cg.forks_when_killed(2).spawn(1);
        cg.kill_all().unwrap();
        assert_eq!(cg.lock().forks_left, 2);
    }

    #[test]
    fn a_failing_freezer_does_not_stop_the_kill_and_a_failing_kill_still_thaws() {
        let cg = made(CgroupVersion::V1);
        cg.fail(FakeOp::IsFrozen).spawn(1);
        cg.kill_all().unwrap();
        assert!(cg.pids().unwrap().is_empty());
        assert!(!cg.frozen());

        let cg = made(CgroupVersion::V1);
        cg.fail(FakeOp::Signal).spawn(1);
        let err = cg.kill_all().unwrap_err();
        assert!(matches!(err, CgroupError::Signal { .. }), "{err}");
        assert!(!cg.frozen(), "a failed kill left the cgroup frozen");

        let cg = made(CgroupVersion::V1);
        cg.fail(FakeOp::Thaw).spawn(1);
        assert!(matches!(cg.kill_all(), Err(CgroupError::Write { .. })));
    }

    #[test]
    fn survivors_end_the_kill_within_its_budget_and_are_named() {
        for cgroup_kill in [false, true] {
            let cg = made(CgroupVersion::V2);
            cg.with_cgroup_kill(cgroup_kill)
                .spawn(1)
                .spawn(2)
                .immortal(2);
            let budget = Duration::from_millis(300);
            let started = Instant::now();
            let err = cg.kill_all_within(budget).unwrap_err();
            let took = started.elapsed();
            let CgroupError::NotEmpty { pids, rounds, .. } = err else {
                panic!("{err}");
            };
            assert_eq!(pids, vec![2]);
            assert!(rounds >= 1);
            assert!(took >= budget, "gave up early: {took:?}");
            // The bound callers rely on (kill_timeout + 2 s for the lead's kill).
            assert!(took < budget + Duration::from_secs(2), "{took:?}");
            assert!(!cg.frozen());
        }
    }

    #[test]
    fn a_spent_budget_still_runs_one_round() {
        let cg = made(CgroupVersion::V1);
        cg.spawn(1);
        cg.kill_all_within(Duration::ZERO).unwrap();
        assert!(cg.pids().unwrap().is_empty());
    }

    #[test]
    fn destroy_kills_then_removes_and_a_busy_cgroup_stays() {
        let cg = made(CgroupVersion::V2);
        cg.spawn(1);
        cg.destroy().unwrap();
        assert!(!cg.exists());
        let cg = made(CgroupVersion::V2);
        cg.spawn(1);
        assert!(matches!(
            cg.remove(Instant::now()),
            Err(CgroupError::Remove { .. })
        ));
        assert!(cg.exists());
        cg.fail(FakeOp::Remove);
        assert!(cg.destroy().is_err());
        assert!(cg.exists());
    }

    #[test]
    fn the_facade_forwards_to_its_ops() {
        let fake = FakeCgroup::new("execdriver-t9", CgroupVersion::V2);
        fake.create(&Resources::default()).unwrap();
        let cg = TaskCgroup::with_ops("execdriver-t9", Box::new(fake.clone()));
        assert_eq!(cg.name(), "execdriver-t9");
        assert_eq!(cg.version(), CgroupVersion::V2);
        assert_eq!(cg.paths(), fake.paths());
        assert!(matches!(
            cg.controller_path("cpuset"),
            Err(CgroupError::UnknownController(_))
        ));
        cg.controller_path("memory").unwrap();
        cg.add_process(5).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![5]);
        cg.freeze().unwrap();
        assert!(cg.is_frozen().unwrap());
        cg.thaw().unwrap();
        assert_eq!(cg.stats().unwrap().pids, 1);
        assert!(!cg.oom_killed().unwrap());
        cg.kill_all_within(KILL_ALL_BUDGET).unwrap();
        cg.destroy().unwrap();
        assert!(!fake.exists());
        assert!(cg.applied_limits().is_empty());
    }
}
