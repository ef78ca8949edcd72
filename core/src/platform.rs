//! [`Platform`]: the boundary between the pure model and an operating system.
//!
//! The Linux backend implements it with a supervisor process, cgroups and namespaces; the mock
//! backend implements it in memory with a virtual clock. Time comes from here too, so that
//! kill timeouts and wait deadlines run on the mock's virtual clock in tests.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Add;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handle::{HandleId, ProcessIdentity, SupervisorIdentity};
use crate::lifecycle::ExitStatus;
use crate::signal::Signal;
use crate::spec::TaskSpec;

/// A point on the platform's clock: time since an arbitrary, fixed epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub Duration);

impl Timestamp {
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d))
    }
}

/// What a platform reports about its node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Whether tasks can run here (`driver.exec = "1"`).
    pub healthy: bool,
    /// Node attributes: `driver.exec`, cgroup version, kernel, ...
    pub attributes: BTreeMap<String, String>,
    /// Why the driver is disabled, when it is.
    pub reason: Option<String>,
}

/// Memory use of a task's cgroup, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Resident anonymous memory.
    pub rss: u64,
    /// Page cache.
    pub cache: u64,
    /// Swap in use.
    pub swap: u64,
    /// Peak usage.
    pub max_usage: u64,
}

/// cpu use of a task's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuStats {
    /// User time, nanoseconds.
    pub user_ns: u64,
    /// System time, nanoseconds.
    pub system_ns: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Time throttled, nanoseconds.
    pub throttled_ns: u64,
}

/// Resource use of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskStats {
    /// Memory.
    pub memory: MemoryStats,
    /// cpu.
    pub cpu: CpuStats,
    /// Processes and threads in the cgroup now.
    pub pids: u64,
    /// When the stats were read, on the platform clock.
    pub timestamp: Timestamp,
}

/// A task the platform has started.
#[derive(Debug)]
pub struct Spawned<S> {
    /// The live connection to its supervisor.
    pub supervisor: S,
    /// The supervisor's identity, for the handle id.
    pub identity: SupervisorIdentity,
    /// The task's main process.
    pub task: ProcessIdentity,
    /// The task's cgroup name under the driver's parent.
    pub cgroup: String,
    /// The task's state dir.
    pub state_dir: std::path::PathBuf,
}

/// What reconnecting from a handle id found.
#[derive(Debug)]
pub enum Reattach<S> {
    /// The supervisor is alive and is the one recorded.
    Live(S),
    /// The supervisor is gone but recorded the task's exit.
    Exited(ExitStatus),
    /// Neither a supervisor nor a result: the task must be cleaned up.
    Gone {
        /// What was observed.
        reason: String,
    },
}

/// A platform operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// The supervisor is unreachable or died: the driver cleans up by cgroup.
    #[error("supervisor lost: {0}")]
    SupervisorLost(String),
    /// The platform refused to act on what it was given (a forged or foreign handle id,
    /// a path outside the data dir); nothing was touched.
    #[error("refused: {0}")]
    Refused(String),
    /// Any other failure, with a message that says what and where.
    #[error("{0}")]
    Failed(String),
}

/// The operating system as the driver needs it. Implementations are thread-safe: a
/// [`crate::TaskHandle`] may wait in one thread while another kills.
#[cfg_attr(feature = "mock", mockall::automock(type Supervisor = MockSupervisor;))]
pub trait Platform: Send + Sync {
    /// A live connection to one task's supervisor.
    type Supervisor: Send + Sync + fmt::Debug;

    /// The current time on the platform's clock.
    fn now(&self) -> Timestamp;

    /// Whether and how tasks can run here.
    fn fingerprint(&self) -> Fingerprint;

    /// Starts a supervisor and the task under it; on error, leaves nothing behind.
    fn spawn(&self, spec: &TaskSpec) -> Result<Spawned<Self::Supervisor>, PlatformError>;

    /// Reconnects to the supervisor of a parsed handle id, after confining its paths.
    fn reattach(&self, handle: &HandleId) -> Result<Reattach<Self::Supervisor>, PlatformError>;

    /// Sends `signal` to the task's main process.
    fn signal(&self, supervisor: &Self::Supervisor, signal: Signal) -> Result<(), PlatformError>;

    /// Waits for the task's exit until `deadline` (forever if `None`); `Ok(None)` on timeout.
    fn wait(
        &self,
        supervisor: &Self::Supervisor,
        deadline: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError>;

    /// Asks the platform to force-kill the task `after` this long unless it has exited, so
    /// a kill that was started finishes even if the agent dies during the grace period. The
    /// driver still force-kills at the same deadline itself; this is the platform's backup.
    fn schedule_force_kill(
        &self,
        supervisor: &Self::Supervisor,
        after: Duration,
    ) -> Result<(), PlatformError> {
        let _ = (supervisor, after);
        Ok(())
    }

    /// Kills every process of the task at once.
    fn force_kill(&self, supervisor: &Self::Supervisor) -> Result<(), PlatformError>;

    /// Reads the task's resource use.
    fn stats(&self, supervisor: &Self::Supervisor) -> Result<TaskStats, PlatformError>;

    /// After an exit was collected: the supervisor removes the cgroup and state, then exits.
    fn release(&self, supervisor: &Self::Supervisor) -> Result<(), PlatformError>;

    /// Orphan cleanup: kills the supervisor if it is still the process the handle recorded.
    fn kill_supervisor(&self, handle: &HandleId) -> Result<(), PlatformError>;

    /// Orphan cleanup: kills every process in the task's cgroup.
    fn kill_cgroup(&self, handle: &HandleId) -> Result<(), PlatformError>;

    /// Orphan cleanup: removes the task's cgroup.
    fn destroy_cgroup(&self, handle: &HandleId) -> Result<(), PlatformError>;

    /// Orphan cleanup: removes the task's state dir.
    fn remove_state(&self, handle: &HandleId) -> Result<(), PlatformError>;
}

/// The supervisor type of [`MockPlatform`]: a plain number tests can match on.
#[cfg(feature = "mock")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MockSupervisor(pub u32);
