//! [`Platform`]: the boundary between the pure model and an operating system.
//!
//! The Linux backend implements it with a supervisor process, cgroups and namespaces; the mock
//! backend implements it in memory with a virtual clock. Time comes from here too, so that
//! kill timeouts and wait deadlines run on the mock's virtual clock in tests.
//!
//! Every call that talks to a supervisor or cleans up takes a deadline on the platform's
//! clock and returns by it: the lifecycle machine computes the deadlines, so a kill ends
//! within its bound whatever the supervisor does.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Add;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exec::{ExecRequest, ExecStarted};
use crate::handle::{HandleId, ProcessIdentity, SupervisorIdentity};
use crate::outcome::ExitStatus;
use crate::signal::Signal;
use crate::spec::{Resources, TaskSpec};

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

/// What became of a task's output on its way to the log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogStats {
    /// Bytes of stdout dropped because the task wrote them faster than its log rate.
    pub stdout_dropped_bytes: u64,
    /// Bytes of stderr dropped because the task wrote them faster than its log rate.
    pub stderr_dropped_bytes: u64,
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
    /// The task's output dropped over its log rate; zero from a supervisor that predates it.
    #[serde(default)]
    pub logs: LogStats,
    /// When the stats were read, on the platform clock (monotonic: for differences, such as
    /// a cpu % between two readings).
    pub timestamp: Timestamp,
    /// When the stats were read, by the wall clock where they were read: unix nanoseconds;
    /// 0 from a supervisor that predates it.
    #[serde(default)]
    pub read_at_unix_nanos: u64,
    /// The limits the task runs under; `None` from a supervisor that predates them.
    #[serde(default)]
    pub limits: Option<TaskLimits>,
}

/// The limits a task runs under, as its spec set them on its cgroup (see [`Resources`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Relative cpu weight.
    pub cpu_shares: u64,
    /// A hard cpu limit in thousandths of a cpu, if any.
    pub cpu_max_millicores: Option<u64>,
    /// The memory limit, bytes.
    pub memory_limit_bytes: u64,
    /// The hard memory maximum above the limit, bytes, if any.
    pub memory_max_bytes: Option<u64>,
    /// Most processes and threads at once.
    pub pids_max: u64,
}

impl From<&Resources> for TaskLimits {
    fn from(r: &Resources) -> Self {
        Self {
            cpu_shares: r.cpu_shares,
            cpu_max_millicores: r.cpu_max_millicores,
            memory_limit_bytes: r.memory_limit_bytes,
            memory_max_bytes: r.memory_max_bytes,
            pids_max: r.pids_max,
        }
    }
}

impl TaskStats {
    /// The memory in use, bytes: resident anonymous memory and page cache.
    pub fn memory_used(&self) -> u64 {
        self.memory.rss.saturating_add(self.memory.cache)
    }

    /// The cpu used between `earlier` and this reading, in percent of one cpu (200 is two
    /// cpus busy, as `docker stats` counts); `None` if no time passed between them.
    pub fn cpu_percent_since(&self, earlier: &TaskStats) -> Option<f64> {
        let wall = self
            .timestamp
            .0
            .checked_sub(earlier.timestamp.0)?
            .as_nanos();
        if wall == 0 {
            return None;
        }
        let used = |s: &TaskStats| u128::from(s.cpu.user_ns) + u128::from(s.cpu.system_ns);
        let cpu = used(self).saturating_sub(used(earlier));
        Some(cpu as f64 * 100.0 / wall as f64)
    }
}

/// What the platform recorded about a task it started: everything needed to find it again.
/// The driver turns it into the [`HandleId`] an agent persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    /// The task's id.
    pub task_id: String,
    /// Its supervisor.
    pub supervisor: SupervisorIdentity,
    /// Its main process.
    pub task: ProcessIdentity,
    /// Its cgroup name under the driver's parent.
    pub cgroup: String,
    /// Its state dir.
    pub state_dir: PathBuf,
    /// Its task dir.
    pub task_dir: PathBuf,
    /// Its allocation dir.
    pub alloc_dir: PathBuf,
    /// The kill timeout its spec asked for.
    pub kill_timeout: Duration,
    /// The graceful signal its spec named.
    pub kill_signal: Signal,
}

/// What a platform keeps of a task besides its handle: its spec and where its things are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetails {
    /// The spec it was started from.
    pub spec: TaskSpec,
    /// When it was started, in milliseconds since the Unix epoch, if known.
    pub created_unix_ms: Option<u64>,
    /// Its state dir.
    pub state_dir: PathBuf,
    /// Its cgroup dirs, one per hierarchy (still named after the cgroup is removed).
    pub cgroup_paths: Vec<PathBuf>,
    /// Its current stdout and stderr log files.
    pub log_paths: Vec<PathBuf>,
}

/// A task the platform has started.
#[derive(Debug)]
pub struct Spawned<S> {
    /// The live connection to its supervisor.
    pub supervisor: S,
    /// Where it can be found again.
    pub record: TaskRecord,
}

/// What reconnecting from a handle id found.
#[derive(Debug)]
pub enum Reattach<S> {
    /// The supervisor is alive and is the one recorded.
    Live(S),
    /// The supervisor is alive (its process is the recorded one) but did not answer in
    /// time: a connection to it, on which a kill still works (by cgroup, if need be).
    Unresponsive {
        /// The connection.
        supervisor: S,
        /// What was observed.
        reason: String,
    },
    /// The supervisor is gone but recorded the task's exit.
    Exited(ExitStatus),
    /// Neither a supervisor nor a result: the task must be cleaned up.
    Gone {
        /// What was observed.
        reason: String,
    },
}

/// What a platform knows of a task id in its data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundTask {
    /// It was started: open it from this record.
    Started(TaskRecord),
    /// A start of it is under way in some process: leave it alone.
    Starting,
    /// A start of it was abandoned half-way (its starter died): only debris is left, which
    /// [`Platform::discard_incomplete`] removes.
    Incomplete {
        /// What is left.
        reason: String,
    },
}

/// Which output stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Where a log reader is in a task's rotated output; [`LogCursor::default`] is the oldest
/// byte still kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LogCursor {
    /// The rotation index of the file.
    pub file: u64,
    /// The byte offset in it.
    pub offset: u64,
}

/// Output read from a task's logs: bytes of one log file only, ending at `next` (so that the
/// cursor of each byte is known, see [`crate::logs`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogChunk {
    /// The bytes, in order.
    pub data: Vec<u8>,
    /// Where the next read starts.
    pub next: LogCursor,
    /// Bytes that were rotated away before they could be read.
    pub skipped: u64,
    /// Whether more may come: the task (or its supervisor, which writes the logs) still runs.
    pub more_may_come: bool,
    /// When the bytes arrived from the task, where the platform records it: each entry says
    /// that `data[at..]` arrived at its time, up to the next entry. Bytes before the first
    /// entry (or all, when it is empty) have no known time.
    pub times: Vec<LogTime>,
}

/// When a part of a [`LogChunk`] arrived from the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogTime {
    /// Where in the chunk's data the part starts.
    pub at: usize,
    /// When it arrived, unix time in nanoseconds.
    pub unix_nanos: u64,
}

/// Why the platform refused to act on a handle or task; nothing was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The handle is not one this platform would write: a path outside its data dir, a
    /// cgroup that is not the task's.
    NotOurs,
    /// The task id was collected and reused: the supervisor, record or socket found belong to
    /// another task.
    Reused,
    /// There is no state of the task: it was already removed, or never started here.
    Collected,
    /// The recorded process is alive but is not the task's supervisor.
    NotSupervisor,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotOurs => "not this driver's",
            Refusal::Reused => "task id reused",
            Refusal::Collected => "already collected",
            Refusal::NotSupervisor => "not the supervisor",
        })
    }
}

/// The step of a start that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpawnStep {
    /// The task's dirs, as given in the spec.
    Dirs,
    /// Claiming the task id (its state dir): taken when the id is already in use.
    Claim,
    /// Claiming the task's unique name: taken when another task that is there holds it.
    Name,
    /// Writing the task's records into its state dir.
    Records,
    /// Starting the supervisor or reading its reports.
    Supervisor,
    /// Checking the cgroup the spec names for the task's cpuset (`Resources::cpuset_cgroup`)
    /// against the node's cgroup mounts: a path there that cannot be used.
    CpusetCgroup,
    /// Creating the task's cgroup with its limits.
    Cgroup,
    /// Opening the task's log files.
    Logs,
    /// Setting up the task's isolation (namespaces, root, user) and executing it.
    Launch,
}

impl fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpawnStep::Dirs => "checking the task dirs",
            SpawnStep::Claim => "claiming the task id",
            SpawnStep::Name => "claiming the task name",
            SpawnStep::Records => "writing the task records",
            SpawnStep::Supervisor => "starting the supervisor",
            SpawnStep::CpusetCgroup => "checking the task's cpuset cgroup",
            SpawnStep::Cgroup => "creating the task cgroup",
            SpawnStep::Logs => "opening the task logs",
            SpawnStep::Launch => "launching the task",
        })
    }
}

/// A platform operation that failed, by kind; each message says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The supervisor is dead and left no exit record: the driver cleans up by cgroup.
    #[error("supervisor lost: {reason}")]
    SupervisorGone {
        /// What was observed.
        reason: String,
    },
    /// The supervisor is alive, or may be, but did not answer by the call's deadline.
    #[error("supervisor unresponsive: {reason}")]
    Unresponsive {
        /// What was observed.
        reason: String,
    },
    /// The platform refused what it was given; nothing was touched.
    #[error("{kind}: {reason}")]
    Refused {
        /// Why, as a kind.
        kind: Refusal,
        /// Why, in words.
        reason: String,
    },
    /// No task of that id is known to this platform.
    #[error("{reason}")]
    NotFound {
        /// The task id looked up.
        task_id: String,
        /// Where it was looked for.
        reason: String,
    },
    /// Starting a task failed at `step`; the platform left nothing behind unless the
    /// message says what it kept and why.
    #[error("{step} failed: {reason}")]
    Spawn {
        /// The step.
        step: SpawnStep,
        /// What failed.
        reason: String,
    },
    /// A cgroup operation failed.
    #[error("{reason}")]
    Cgroup {
        /// What failed, naming the cgroup.
        reason: String,
    },
    /// A file operation failed.
    #[error("{reason}")]
    Io {
        /// The file or dir.
        path: PathBuf,
        /// The OS error's kind.
        kind: std::io::ErrorKind,
        /// What failed, naming the path.
        reason: String,
    },
    /// Anything else.
    #[error("{reason}")]
    Other {
        /// What failed.
        reason: String,
    },
}

/// [`PlatformError`] without its data: for results and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlatformErrorKind {
    /// [`PlatformError::SupervisorGone`].
    SupervisorGone,
    /// [`PlatformError::Unresponsive`].
    Unresponsive,
    /// [`PlatformError::Refused`].
    Refused,
    /// [`PlatformError::NotFound`].
    NotFound,
    /// [`PlatformError::Spawn`].
    Spawn,
    /// [`PlatformError::Cgroup`].
    Cgroup,
    /// [`PlatformError::Io`].
    Io,
    /// [`PlatformError::Other`].
    Other,
}

impl PlatformError {
    /// The error's kind.
    pub fn kind(&self) -> PlatformErrorKind {
        match self {
            PlatformError::SupervisorGone { .. } => PlatformErrorKind::SupervisorGone,
            PlatformError::Unresponsive { .. } => PlatformErrorKind::Unresponsive,
            PlatformError::Refused { .. } => PlatformErrorKind::Refused,
            PlatformError::NotFound { .. } => PlatformErrorKind::NotFound,
            PlatformError::Spawn { .. } => PlatformErrorKind::Spawn,
            PlatformError::Cgroup { .. } => PlatformErrorKind::Cgroup,
            PlatformError::Io { .. } => PlatformErrorKind::Io,
            PlatformError::Other { .. } => PlatformErrorKind::Other,
        }
    }

    /// A [`PlatformError::SupervisorGone`].
    pub fn gone(reason: impl Into<String>) -> Self {
        PlatformError::SupervisorGone {
            reason: reason.into(),
        }
    }

    /// A [`PlatformError::Unresponsive`].
    pub fn unresponsive(reason: impl Into<String>) -> Self {
        PlatformError::Unresponsive {
            reason: reason.into(),
        }
    }

    /// A [`PlatformError::Refused`].
    pub fn refused(kind: Refusal, reason: impl Into<String>) -> Self {
        PlatformError::Refused {
            kind,
            reason: reason.into(),
        }
    }

    /// A [`PlatformError::Spawn`].
    pub fn spawn(step: SpawnStep, reason: impl Into<String>) -> Self {
        PlatformError::Spawn {
            step,
            reason: reason.into(),
        }
    }

    /// A [`PlatformError::Cgroup`].
    pub fn cgroup(reason: impl Into<String>) -> Self {
        PlatformError::Cgroup {
            reason: reason.into(),
        }
    }

    /// A [`PlatformError::Io`] about `path`; `reason` should name it.
    pub fn io(
        path: impl Into<PathBuf>,
        kind: std::io::ErrorKind,
        reason: impl Into<String>,
    ) -> Self {
        PlatformError::Io {
            path: path.into(),
            kind,
            reason: reason.into(),
        }
    }

    /// A [`PlatformError::Other`].
    pub fn other(reason: impl Into<String>) -> Self {
        PlatformError::Other {
            reason: reason.into(),
        }
    }

    /// Whether trying again later may succeed: the supervisor is alive but did not answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, PlatformError::Unresponsive { .. })
    }
}

/// The operating system as the driver needs it. Implementations are thread-safe: a
/// [`crate::TaskHandle`] may wait in one thread while another kills.
///
/// A call given a `deadline` returns by it (plus the system calls under way), with
/// [`PlatformError::Unresponsive`] when the supervisor did not answer in time.
#[cfg_attr(feature = "mock", mockall::automock(type Supervisor = MockSupervisor;))]
pub trait Platform: Send + Sync {
    /// A live connection to one task's supervisor.
    type Supervisor: Send + Sync + fmt::Debug;

    /// The current time on the platform's clock.
    fn now(&self) -> Timestamp;

    /// Whether and how tasks can run here.
    fn fingerprint(&self) -> Fingerprint;

    /// Starts a supervisor and the task under it, and records the task so that
    /// [`Platform::find_task`] finds it from any process from then on, even if the caller dies
    /// right after. On error, leaves nothing behind (or says what it kept).
    fn spawn(&self, spec: &TaskSpec) -> Result<Spawned<Self::Supervisor>, PlatformError>;

    /// The ids of every task in this platform's data dir, started, starting or debris.
    fn task_ids(&self) -> Result<Vec<String>, PlatformError>;

    /// What is known of `task_id`; [`PlatformError::NotFound`] when nothing is.
    fn find_task(&self, task_id: &str) -> Result<FoundTask, PlatformError>;

    /// Removes what an abandoned start of `task_id` left ([`FoundTask::Incomplete`]); refuses
    /// a task that is started or starting.
    fn discard_incomplete(&self, task_id: &str, deadline: Timestamp) -> Result<(), PlatformError>;

    /// Reconnects to the supervisor of a parsed handle id, after confining its paths. Nothing
    /// is changed: a supervisor that does not answer by `deadline` is
    /// [`PlatformError::Unresponsive`].
    fn reattach(
        &self,
        handle: &HandleId,
        deadline: Timestamp,
    ) -> Result<Reattach<Self::Supervisor>, PlatformError>;

    /// Sends `signal` to the task's main process.
    fn signal(
        &self,
        supervisor: &Self::Supervisor,
        signal: Signal,
        deadline: Timestamp,
    ) -> Result<(), PlatformError>;

    /// Starts a kill: sends `signal`, and has the supervisor kill everything of the task
    /// `grace` after it unless it has exited, so a kill that was started finishes even if
    /// the agent dies during the grace.
    fn begin_kill(
        &self,
        supervisor: &Self::Supervisor,
        signal: Signal,
        grace: Duration,
        deadline: Timestamp,
    ) -> Result<(), PlatformError>;

    /// Waits for the task's exit until `until` (forever if `None`); `Ok(None)` when the
    /// supervisor said at `until` that the task still runs.
    fn wait(
        &self,
        supervisor: &Self::Supervisor,
        until: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError>;

    /// Kills every process of the task now, through its supervisor.
    fn force_kill(
        &self,
        supervisor: &Self::Supervisor,
        deadline: Timestamp,
    ) -> Result<(), PlatformError>;

    /// Reads the task's resource use.
    fn stats(
        &self,
        supervisor: &Self::Supervisor,
        deadline: Timestamp,
    ) -> Result<TaskStats, PlatformError>;

    /// Runs `request` inside the running task: its namespaces, cgroup, root, user,
    /// capabilities, no_new_privs, seccomp filter and environment. Returns once the command
    /// is started (or could not be, by `deadline`); a task that has exited is an error.
    fn exec(
        &self,
        supervisor: &Self::Supervisor,
        handle: &HandleId,
        request: ExecRequest,
        deadline: Timestamp,
    ) -> Result<ExecStarted, PlatformError>;

    /// A new descriptor of the master side of the task's terminal, from its supervisor;
    /// an error for a task started without one.
    fn terminal(
        &self,
        supervisor: &Self::Supervisor,
        deadline: Timestamp,
    ) -> Result<OwnedFd, PlatformError>;

    /// After an exit was collected: the supervisor exits, leaving the task's records (spec,
    /// exit record) and logs for [`Platform::remove_task`]; its cgroup is gone by then.
    fn release(
        &self,
        supervisor: &Self::Supervisor,
        deadline: Timestamp,
    ) -> Result<(), PlatformError>;

    /// Reads the task's output from `cursor`, at most `max` bytes, without blocking. With
    /// the task's live `supervisor` connection, the logs stay readable after the task was
    /// collected (its files outlive its state); with the handle alone, the task's state is
    /// needed to find them.
    // The lifetime is named for mockall, which cannot mock an elided one inside an Option.
    #[allow(clippy::needless_lifetimes)]
    fn read_logs<'a>(
        &self,
        handle: &HandleId,
        supervisor: Option<&'a Self::Supervisor>,
        stream: LogStream,
        cursor: LogCursor,
        max: usize,
    ) -> Result<LogChunk, PlatformError>;

    /// Orphan cleanup: kills the supervisor if it is still the process the handle recorded.
    fn kill_supervisor(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError>;

    /// Orphan cleanup: kills every process in the task's cgroup.
    fn kill_cgroup(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError>;

    /// Orphan cleanup: removes the task's cgroup.
    fn destroy_cgroup(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError>;

    /// Removes the task's state dir, once its cgroup is gone. The driver's own cleanups no
    /// longer call it (a task is kept until [`Platform::remove_task`]); kept for agents that
    /// clean up by hand.
    fn remove_state(&self, handle: &HandleId) -> Result<(), PlatformError>;

    /// Removes everything kept of an exited task whose supervisor is gone: its state dir
    /// (spec, exit record), its cgroup if one is left, its name claim, and its logs and
    /// alloc dir when the platform made them. What is already gone is fine.
    fn remove_task(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError>;

    /// The id of the task that holds the unique `name` in this data dir, if one does.
    fn task_named(&self, name: &str) -> Result<Option<String>, PlatformError>;

    /// The spec of the task and where its state, cgroup and logs are.
    fn details(&self, handle: &HandleId) -> Result<TaskDetails, PlatformError>;
}

/// The supervisor type of [`MockPlatform`]: a plain number tests can match on.
#[cfg(feature = "mock")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MockSupervisor(pub u32);

#[cfg(test)]
mod stats_tests {
    use super::*;

    fn at(ms: u64, user_ms: u64, system_ms: u64) -> TaskStats {
        TaskStats {
            timestamp: Timestamp(Duration::from_millis(ms)),
            cpu: CpuStats {
                user_ns: user_ms * 1_000_000,
                system_ns: system_ms * 1_000_000,
                ..CpuStats::default()
            },
            ..TaskStats::default()
        }
    }

    #[test]
    fn cpu_percent_is_of_one_cpu_over_the_interval() {
        let a = at(1_000, 100, 50);
        assert_eq!(at(2_000, 600, 50).cpu_percent_since(&a), Some(50.0));
        // Two cpus busy for the whole second.
        assert_eq!(at(2_000, 1_600, 550).cpu_percent_since(&a), Some(200.0));
        // No time passed, or readings out of order: no figure rather than a division by 0.
        assert_eq!(at(1_000, 900, 50).cpu_percent_since(&a), None);
        assert_eq!(a.cpu_percent_since(&at(2_000, 0, 0)), None);
        // A counter that went backwards (a new cgroup) counts as none used.
        assert_eq!(at(2_000, 0, 0).cpu_percent_since(&a), Some(0.0));
    }
}
