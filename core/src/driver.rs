//! [`Driver`] and [`TaskHandle`]: the public, blocking, thread-safe API.
//!
//! They feed events into the task's [`Lifecycle`] and run the effects it returns through the
//! [`Platform`], feeding each effect's outcome back as an event. They keep no time of their
//! own: when the machine has a deadline, the driver's only way of sleeping is a platform wait
//! until that deadline. The state lives under one mutex; platform calls that block (waits,
//! signals, cleanup) run outside it, so a `wait` in one thread never holds up a `kill` in
//! another. Whichever thread drives the task to `Exited` delivers the result; every other
//! caller then reads that same result.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::exec::{ExecRequest, ExecStarted};
use crate::handle::{HandleError, HandleId};
use crate::lifecycle::{Effect, Event, Lifecycle, State, Timeouts, TransitionError, kill_timeout};
use crate::logs::LogStart;
use crate::outcome::{
    CleanupFailure, CleanupStep, ExitStatus, TaskError, TaskErrorKind, WaitResult, join_failures,
};
use crate::platform::{
    Fingerprint, FoundTask, LogChunk, LogCursor, LogStream, Platform, PlatformError, Reattach,
    TaskDetails, TaskStats, Timestamp,
};
use crate::signal::Signal;
use crate::spec::{SpecError, TaskSpec};

/// Callbacks at the two moments an agent cares about, each called once per handle: where the
/// reference registered and deregistered Consul services, an agent plugs its registry in here.
/// A hook that panics is contained: the task's lifecycle goes on as if it had returned.
pub trait LifecycleHooks: Send + Sync {
    /// The task is running (after a start, or after a reattach to a live supervisor).
    fn on_running(&self, task_id: &str) {
        let _ = task_id;
    }

    /// The task has exited and `result` is final. Also called when a reattach finds the task
    /// already gone, so that registrations kept outside the agent can be removed.
    fn on_exited(&self, task_id: &str, result: &WaitResult) {
        let _ = (task_id, result);
    }
}

/// Hooks that do nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl LifecycleHooks for NoHooks {}

/// Driver-wide settings; start from [`DriverConfig::default`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// The longest kill timeout a task may ask for.
    pub max_kill_timeout: Duration,
    /// What each step of a kill and of a cleanup may take.
    pub timeouts: Timeouts,
    /// How often an agent should call [`Driver::fingerprint`].
    pub fingerprint_period: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            max_kill_timeout: Duration::from_secs(30),
            timeouts: Timeouts::default(),
            fingerprint_period: Duration::from_secs(15),
        }
    }
}

impl DriverConfig {
    /// This config with `max` as the longest kill timeout.
    pub fn with_max_kill_timeout(mut self, max: Duration) -> Self {
        self.max_kill_timeout = max;
        self
    }

    /// This config with `timeouts`.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// This config with `period` as the fingerprint period.
    pub fn with_fingerprint_period(mut self, period: Duration) -> Self {
        self.fingerprint_period = period;
        self
    }
}

/// A driver operation, named in errors as the verb of "cannot ... task X".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Driver::open`] and friends.
    Open,
    /// [`TaskHandle::wait`].
    Wait,
    /// [`TaskHandle::signal`].
    Signal,
    /// [`TaskHandle::kill`].
    Kill,
    /// [`TaskHandle::stats`].
    Stats,
    /// [`Driver::read_logs`].
    Logs,
    /// [`Driver::list`].
    List,
    /// [`TaskHandle::remove`] and [`Driver::remove_task`].
    Remove,
    /// [`Driver::details`].
    Inspect,
    /// [`TaskHandle::exec`].
    Exec,
    /// [`TaskHandle::terminal`].
    Terminal,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Open => "open",
            Operation::Wait => "wait for",
            Operation::Signal => "signal",
            Operation::Kill => "kill",
            Operation::Stats => "read the stats of",
            Operation::Logs => "read the logs of",
            Operation::List => "list",
            Operation::Remove => "remove",
            Operation::Inspect => "inspect",
            Operation::Exec => "exec in",
            Operation::Terminal => "attach to",
        })
    }
}

/// What a driver operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The spec was refused before anything was started.
    #[error("invalid task spec: {0}")]
    Spec(#[from] SpecError),
    /// The handle id was refused before anything was touched.
    #[error("invalid handle id: {0}")]
    Handle(#[from] HandleError),
    /// Starting failed; the platform left nothing behind (or says what it kept).
    #[error("starting task {task_id} failed: {source}")]
    Spawn {
        /// The task.
        task_id: String,
        /// Why.
        source: PlatformError,
    },
    /// No task of that id is known to the platform.
    #[error("no task {task_id}: {reason}")]
    NotFound {
        /// The task id.
        task_id: String,
        /// Where it was looked for.
        reason: String,
    },
    /// A start of the task is under way in another process.
    #[error("task {task_id} is still being started; try again in a moment")]
    Starting {
        /// The task id.
        task_id: String,
    },
    /// A start of the task was abandoned half-way (its starter died); what it left was
    /// removed, unless `cleanup` says why not.
    #[error(
        "task {task_id} never started: {reason}{}",
        cleanup.as_ref().map(|e| format!("; removing what is left failed: {e}")).unwrap_or_default()
    )]
    NeverStarted {
        /// The task id.
        task_id: String,
        /// What was found.
        reason: String,
        /// Why the debris could not be removed, if it could not.
        cleanup: Option<PlatformError>,
    },
    /// The platform refused the handle id (not ours, or outside its confinement); nothing was
    /// signalled or removed.
    #[error("reattaching to task {task_id} refused: {source}")]
    ReattachRefused {
        /// The task named in the handle.
        task_id: String,
        /// Why.
        source: PlatformError,
    },
    /// The supervisor was gone without a result; the task was cleaned up by cgroup.
    #[error(
        "reattaching to task {task_id} failed: {reason}{}",
        cleanup_summary(failures)
    )]
    ReattachFailed {
        /// The task.
        task_id: String,
        /// What was found.
        reason: String,
        /// Every cleanup step that failed.
        failures: Vec<CleanupFailure>,
    },
    /// The task was killed, but some cleanup steps failed: processes, the cgroup or the
    /// state dir may be left.
    #[error("kill of task {task_id} is incomplete: {}", join_failures(failures))]
    KillIncomplete {
        /// The task.
        task_id: String,
        /// Every cleanup step that failed.
        failures: Vec<CleanupFailure>,
    },
    /// A platform call failed.
    #[error("cannot {op} task {task_id}: {source}")]
    Platform {
        /// The operation.
        op: Operation,
        /// The task.
        task_id: String,
        /// Why.
        source: PlatformError,
    },
    /// The task has exited; the operation needs a running task.
    #[error("cannot {op} task {task_id}: it has exited")]
    NotRunning {
        /// The operation.
        op: Operation,
        /// The task.
        task_id: String,
    },
    /// The task runs: removing it needs force, which kills it first.
    #[error("task {task_id} is running: stop it first, or remove it with force to kill it")]
    StillRunning {
        /// The task.
        task_id: String,
    },
    /// An exec was refused before anything was started: a bad request, or a task being
    /// killed.
    #[error("cannot exec in task {task_id}: {reason}")]
    ExecRefused {
        /// The task.
        task_id: String,
        /// Why.
        reason: String,
    },
    /// An event the lifecycle does not allow now.
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

impl DriverError {
    /// Whether trying again later may succeed (a supervisor that did not answer in time, a
    /// start still under way).
    pub fn is_transient(&self) -> bool {
        match self {
            DriverError::Starting { .. } => true,
            DriverError::Platform { source, .. } | DriverError::ReattachRefused { source, .. } => {
                source.is_transient()
            }
            _ => false,
        }
    }
}

fn cleanup_summary(failures: &[CleanupFailure]) -> String {
    if failures.is_empty() {
        "; cleanup succeeded".to_owned()
    } else {
        format!("; cleanup failed: {}", join_failures(failures))
    }
}

/// What is known of a task without touching it: the answer of [`Driver::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskStatus {
    /// Its supervisor answers and the task runs.
    Running {
        /// The supervisor's pid.
        supervisor_pid: i32,
        /// The task's main pid.
        task_pid: i32,
    },
    /// It has exited, and this is how.
    Exited(ExitStatus),
    /// Its supervisor is alive but did not answer in time; a kill still works (by cgroup).
    Unresponsive {
        /// What was observed.
        reason: String,
    },
    /// Its supervisor is gone without a result: opening it cleans it up.
    Lost {
        /// What was observed.
        reason: String,
    },
    /// A start of it is under way.
    Starting,
    /// A start of it was abandoned half-way: opening it removes the debris.
    Incomplete {
        /// What is left.
        reason: String,
    },
}

/// One task of [`Driver::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its id.
    pub task_id: String,
    /// What is known of it, or why that could not be found out.
    pub status: Result<TaskStatus, DriverError>,
}

/// The driver: starts tasks and reattaches to them.
pub struct Driver<P: Platform> {
    platform: Arc<P>,
    config: DriverConfig,
    hooks: Arc<dyn LifecycleHooks>,
}

impl<P: Platform> fmt::Debug for Driver<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Driver<P> {
    /// A driver with the default config and no hooks.
    pub fn new(platform: P) -> Self {
        Self::with_config(platform, DriverConfig::default())
    }

    /// A driver with `config` and no hooks.
    pub fn with_config(platform: P, config: DriverConfig) -> Self {
        Self {
            platform: Arc::new(platform),
            config,
            hooks: Arc::new(NoHooks),
        }
    }

    /// Installs lifecycle hooks for tasks started or opened from now on.
    pub fn with_hooks(mut self, hooks: Arc<dyn LifecycleHooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// The platform, for callers that need its own operations.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The driver's config.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// Whether and how tasks can run on this node.
    pub fn fingerprint(&self) -> Fingerprint {
        self.platform.fingerprint()
    }

    /// How often the fingerprint should be refreshed.
    pub fn fingerprint_period(&self) -> Duration {
        self.config.fingerprint_period
    }

    /// Validates `spec`, starts the task, and returns its handle once it runs.
    pub fn start(&self, spec: &TaskSpec) -> Result<TaskHandle<P>, DriverError> {
        spec.validate(self.config.max_kill_timeout)?;
        let spawned = self
            .platform
            .spawn(spec)
            .map_err(|source| DriverError::Spawn {
                task_id: spec.task_id.clone(),
                source,
            })?;
        let handle = HandleId::new(&spawned.record, self.config.max_kill_timeout);
        let (machine, effects) = Lifecycle::running(self.config.timeouts);
        let task = self.handle(
            handle,
            Some(spawned.supervisor),
            machine,
            Arc::clone(&self.hooks),
        );
        task.run(effects)?;
        Ok(task)
    }

    /// Reattaches to a task from its handle id, as a restarted agent does.
    ///
    /// A live supervisor gives a running handle (also one that does not answer: its kill
    /// then works by cgroup); a recorded exit gives an exited handle whose `wait` returns at
    /// once; neither means the task is cleaned up by its cgroup and this returns
    /// [`DriverError::ReattachFailed`] listing every cleanup step that failed.
    pub fn open(&self, handle_id: &str) -> Result<TaskHandle<P>, DriverError> {
        self.open_handle(HandleId::parse(handle_id)?)
    }

    /// [`Driver::open`] of the task `task_id` in the platform's data dir, whatever process
    /// started it. A start that was abandoned half-way has its debris removed and is
    /// [`DriverError::NeverStarted`].
    pub fn open_task(&self, task_id: &str) -> Result<TaskHandle<P>, DriverError> {
        match self.find(task_id)? {
            FoundTask::Started(record) => {
                self.open_handle(HandleId::new(&record, self.config.max_kill_timeout))
            }
            FoundTask::Starting => Err(DriverError::Starting {
                task_id: task_id.to_owned(),
            }),
            FoundTask::Incomplete { reason } => {
                let deadline = self.platform.now() + self.config.timeouts.cleanup;
                let cleanup = self.platform.discard_incomplete(task_id, deadline).err();
                Err(DriverError::NeverStarted {
                    task_id: task_id.to_owned(),
                    reason,
                    cleanup,
                })
            }
        }
    }

    /// The handle id of the task `task_id` in the platform's data dir.
    pub fn handle_of(&self, task_id: &str) -> Result<HandleId, DriverError> {
        match self.find(task_id)? {
            FoundTask::Started(record) => Ok(HandleId::new(&record, self.config.max_kill_timeout)),
            FoundTask::Starting => Err(DriverError::Starting {
                task_id: task_id.to_owned(),
            }),
            FoundTask::Incomplete { reason } => Err(DriverError::NeverStarted {
                task_id: task_id.to_owned(),
                reason,
                cleanup: None,
            }),
        }
    }

    /// The task id of `id_or_name`: a task of that id in the data dir, else the task that
    /// holds that unique name; [`DriverError::NotFound`] when neither is there.
    pub fn resolve(&self, id_or_name: &str) -> Result<String, DriverError> {
        let by_id = match self.find(id_or_name) {
            Ok(_) => return Ok(id_or_name.to_owned()),
            Err(e @ DriverError::NotFound { .. }) => e,
            Err(e) => return Err(e),
        };
        match self.platform.task_named(id_or_name) {
            Ok(Some(task_id)) => Ok(task_id),
            Ok(None) => Err(by_id),
            Err(source) => Err(DriverError::Platform {
                op: Operation::Open,
                task_id: id_or_name.to_owned(),
                source,
            }),
        }
    }

    /// Removes the task `task_id` and everything kept of it (see [`TaskHandle::remove`]);
    /// its result, when it had one. A lost task is cleaned up by its cgroup first; an
    /// abandoned start has its debris removed.
    pub fn remove_task(
        &self,
        task_id: &str,
        force: bool,
    ) -> Result<Option<WaitResult>, DriverError> {
        let record = match self.find(task_id)? {
            FoundTask::Started(record) => record,
            FoundTask::Starting => {
                return Err(DriverError::Starting {
                    task_id: task_id.to_owned(),
                });
            }
            FoundTask::Incomplete { .. } => {
                let deadline = self.platform.now() + self.config.timeouts.cleanup;
                return self
                    .platform
                    .discard_incomplete(task_id, deadline)
                    .map(|()| None)
                    .map_err(|source| DriverError::Platform {
                        op: Operation::Remove,
                        task_id: task_id.to_owned(),
                        source,
                    });
            }
        };
        let handle = HandleId::new(&record, self.config.max_kill_timeout);
        // A task known to be over is opened without hooks: its end was reported when it was
        // collected, and a removal is not a second end. A running one keeps them, so that a
        // forced removal reports the end its kill makes.
        let over = matches!(
            self.probe(&handle),
            Ok(TaskStatus::Exited(_) | TaskStatus::Lost { .. })
        );
        let hooks: Arc<dyn LifecycleHooks> = if over {
            Arc::new(NoHooks)
        } else {
            Arc::clone(&self.hooks)
        };
        match self.open_handle_with(handle.clone(), hooks) {
            Ok(task) => task.remove(force).map(Some),
            // Cleaned up by cgroup: what is left is removed as for any exited task.
            Err(DriverError::ReattachFailed { failures, .. }) if failures.is_empty() => {
                let deadline = self.platform.now() + self.config.timeouts.cleanup;
                remove_exited(&*self.platform, &handle, deadline).map(|()| None)
            }
            Err(e) => Err(e),
        }
    }

    /// The spec of the task of `handle` and where its state, cgroup and logs are.
    pub fn details(&self, handle: &HandleId) -> Result<TaskDetails, DriverError> {
        self.platform
            .details(handle)
            .map_err(|source| DriverError::Platform {
                op: Operation::Inspect,
                task_id: handle.task_id.clone(),
                source,
            })
    }

    fn find(&self, task_id: &str) -> Result<FoundTask, DriverError> {
        self.platform
            .find_task(task_id)
            .map_err(|source| match source {
                PlatformError::NotFound { task_id, reason } => {
                    DriverError::NotFound { task_id, reason }
                }
                source => DriverError::Platform {
                    op: Operation::Open,
                    task_id: task_id.to_owned(),
                    source,
                },
            })
    }

    /// What is known of the task of `handle` now, without changing anything: no signal, no
    /// cleanup, no hook.
    pub fn probe(&self, handle: &HandleId) -> Result<TaskStatus, DriverError> {
        let handle = self.capped(handle.clone());
        let deadline = self.platform.now() + self.config.timeouts.answer;
        let found = self
            .platform
            .reattach(&handle, deadline)
            .map_err(|source| DriverError::ReattachRefused {
                task_id: handle.task_id.clone(),
                source,
            })?;
        Ok(match found {
            Reattach::Live(supervisor) => {
                match self.platform.wait(&supervisor, Some(self.platform.now())) {
                    Ok(Some(status)) => TaskStatus::Exited(status),
                    Ok(None) => TaskStatus::Running {
                        supervisor_pid: handle.supervisor.process.pid,
                        task_pid: handle.task.pid,
                    },
                    Err(PlatformError::SupervisorGone { reason }) => TaskStatus::Lost { reason },
                    Err(e) => TaskStatus::Unresponsive {
                        reason: e.to_string(),
                    },
                }
            }
            Reattach::Unresponsive { reason, .. } => TaskStatus::Unresponsive { reason },
            Reattach::Exited(status) => TaskStatus::Exited(status),
            Reattach::Gone { reason } => TaskStatus::Lost { reason },
        })
    }

    /// [`Driver::probe`] of the task `task_id` in the platform's data dir.
    pub fn probe_task(&self, task_id: &str) -> Result<TaskStatus, DriverError> {
        match self.find(task_id)? {
            FoundTask::Started(record) => {
                self.probe(&HandleId::new(&record, self.config.max_kill_timeout))
            }
            FoundTask::Starting => Ok(TaskStatus::Starting),
            FoundTask::Incomplete { reason } => Ok(TaskStatus::Incomplete { reason }),
        }
    }

    /// The ids of every task in the platform's data dir, sorted: for a caller that probes
    /// them its own way (in parallel, within a bound).
    pub fn task_ids(&self) -> Result<Vec<String>, DriverError> {
        let mut ids = self
            .platform
            .task_ids()
            .map_err(|source| DriverError::Platform {
                op: Operation::List,
                task_id: "*".to_owned(),
                source,
            })?;
        ids.sort();
        Ok(ids)
    }

    /// Every task in the platform's data dir with what [`Driver::probe_task`] says of it,
    /// sorted by task id.
    pub fn list(&self) -> Result<Vec<Listed>, DriverError> {
        Ok(self
            .task_ids()?
            .into_iter()
            .map(|task_id| Listed {
                status: self.probe_task(&task_id),
                task_id,
            })
            .collect())
    }

    /// Where to start reading the task's `stream` for what `start` asks (its last lines,
    /// what arrived since a time); see [`crate::logs::find_start`].
    pub fn log_start(
        &self,
        handle: &HandleId,
        stream: LogStream,
        start: LogStart,
    ) -> Result<LogCursor, DriverError> {
        crate::logs::find_start(
            &mut |cursor, max| self.read_logs(handle, stream, cursor, max),
            start,
        )
    }

    /// Reads up to `max` bytes of the task's `stream` from `cursor`, without blocking and
    /// without touching the task; works while it runs and after it exited, until it is
    /// removed.
    pub fn read_logs(
        &self,
        handle: &HandleId,
        stream: LogStream,
        cursor: LogCursor,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        self.platform
            .read_logs(handle, None, stream, cursor, max)
            .map_err(|source| DriverError::Platform {
                op: Operation::Logs,
                task_id: handle.task_id.clone(),
                source,
            })
    }

    /// The handle with this driver's maximum kill timeout: a handle from a laxer config (or
    /// a forged one) cannot stretch a kill.
    fn capped(&self, mut handle: HandleId) -> HandleId {
        handle.max_kill_timeout_ms = handle
            .max_kill_timeout_ms
            .min(millis(self.config.max_kill_timeout));
        handle.kill_timeout_ms = handle.kill_timeout_ms.min(handle.max_kill_timeout_ms);
        handle
    }

    fn open_handle(&self, handle: HandleId) -> Result<TaskHandle<P>, DriverError> {
        self.open_handle_with(handle, Arc::clone(&self.hooks))
    }

    fn open_handle_with(
        &self,
        handle: HandleId,
        hooks: Arc<dyn LifecycleHooks>,
    ) -> Result<TaskHandle<P>, DriverError> {
        let handle = self.capped(handle);
        let task_id = handle.task_id.clone();
        let deadline = self.platform.now() + self.config.timeouts.answer;
        let found = self
            .platform
            .reattach(&handle, deadline)
            .map_err(|source| DriverError::ReattachRefused {
                task_id: task_id.clone(),
                source,
            })?;
        let machine = Lifecycle::recovering(self.config.timeouts);
        let (task, event) = match found {
            Reattach::Live(supervisor) | Reattach::Unresponsive { supervisor, .. } => (
                self.handle(handle, Some(supervisor), machine, hooks),
                Event::Reattached,
            ),
            Reattach::Exited(status) => (
                self.handle(handle, None, machine, hooks),
                Event::FoundExitRecord(status),
            ),
            Reattach::Gone { reason } => {
                let task = self.handle(handle, None, machine, hooks);
                task.feed(Event::SupervisorLost {
                    reason: reason.clone(),
                })?;
                let failures = task
                    .result()
                    .and_then(|r| r.error)
                    .map(|e| e.cleanup_failures)
                    .unwrap_or_default();
                return Err(DriverError::ReattachFailed {
                    task_id,
                    reason,
                    failures,
                });
            }
        };
        task.feed(event)?;
        Ok(task)
    }

    fn handle(
        &self,
        handle: HandleId,
        supervisor: Option<P::Supervisor>,
        machine: Lifecycle,
        hooks: Arc<dyn LifecycleHooks>,
    ) -> TaskHandle<P> {
        TaskHandle {
            platform: Arc::clone(&self.platform),
            hooks,
            timeouts: self.config.timeouts,
            task_id: handle.task_id.clone(),
            supervisor,
            inner: Mutex::new(Inner {
                machine,
                handle,
                result: None,
            }),
            finished: Condvar::new(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Inner {
    machine: Lifecycle,
    handle: HandleId,
    result: Option<WaitResult>,
}

/// A started or reattached task.
pub struct TaskHandle<P: Platform> {
    platform: Arc<P>,
    hooks: Arc<dyn LifecycleHooks>,
    timeouts: Timeouts,
    task_id: String,
    supervisor: Option<P::Supervisor>,
    inner: Mutex<Inner>,
    /// Signalled once the result is delivered.
    finished: Condvar,
}

impl<P: Platform> fmt::Debug for TaskHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("task_id", &self.task_id)
            .field("state", &self.state())
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> TaskHandle<P> {
    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The handle id to persist: a new agent passes it to [`Driver::open`].
    pub fn id(&self) -> String {
        self.lock().handle.to_string()
    }

    /// The handle id as a value.
    pub fn handle_id(&self) -> HandleId {
        self.lock().handle.clone()
    }

    /// Where the task is in its lifecycle.
    pub fn state(&self) -> State {
        self.lock().machine.state()
    }

    /// The result, if the task has exited; never blocks.
    pub fn result(&self) -> Option<WaitResult> {
        self.lock().result.clone()
    }

    /// Blocks until the task exits and returns its result.
    pub fn wait(&self) -> Result<WaitResult, DriverError> {
        match self.drive(None)? {
            Some(result) => Ok(result),
            // A wait without deadline only returns on exit; a platform that says otherwise
            // is reported, not trusted.
            None => Err(self.platform_error(
                Operation::Wait,
                PlatformError::other("wait without deadline returned without an exit"),
            )),
        }
    }

    /// Waits up to `timeout` for the exit; `Ok(None)` if the task still runs.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<WaitResult>, DriverError> {
        self.drive(Some(self.platform.now() + timeout))
    }

    /// Changes the kill timeout, capped at the maximum recorded in the handle; returns the
    /// timeout now in effect. Nothing else of a running task can change.
    pub fn update(&self, desired_kill_timeout: Duration) -> Duration {
        let mut inner = self.lock();
        let effective = kill_timeout(desired_kill_timeout, inner.handle.max_kill_timeout());
        inner.handle.kill_timeout_ms = millis(effective);
        effective
    }

    /// Sends `signal` to the task.
    pub fn signal(&self, signal: Signal) -> Result<(), DriverError> {
        let not_running = || DriverError::NotRunning {
            op: Operation::Signal,
            task_id: self.task_id.clone(),
        };
        let effects = self
            .apply(Event::SignalRequested(signal))
            .map_err(|_| not_running())?;
        self.run(effects)?;
        // A supervisor found gone while signalling was cleaned up: nothing was delivered.
        if self.lock().machine.is_finishing() {
            return Err(not_running());
        }
        Ok(())
    }

    /// Stops the task: the kill signal, up to the kill timeout for it to exit, then a force
    /// kill of everything in its cgroup. Returns once the task has exited, within the kill
    /// timeout plus [`Timeouts::overrun`] whatever its supervisor does; the result is then
    /// available from [`TaskHandle::wait`]. Killing an exited task does nothing.
    pub fn kill(&self) -> Result<(), DriverError> {
        let (signal, timeout) = {
            let inner = self.lock();
            (inner.handle.kill_signal, inner.handle.kill_timeout())
        };
        self.kill_with(signal, timeout)
    }

    /// [`TaskHandle::kill`] with this signal and grace instead of the task's own (as a
    /// Nomad StopTask gives them); the grace is capped at the handle's maximum kill timeout,
    /// and the force kill follows at its end as with `kill`.
    pub fn stop(&self, signal: Signal, timeout: Duration) -> Result<(), DriverError> {
        let timeout = {
            let mut inner = self.lock();
            let effective = kill_timeout(timeout, inner.handle.max_kill_timeout());
            // Recorded too, so a supervisor asked to kill (and a reattached handle) keeps
            // to the same grace.
            inner.handle.kill_timeout_ms = millis(effective);
            effective
        };
        self.kill_with(signal, timeout)
    }

    fn kill_with(&self, signal: Signal, timeout: Duration) -> Result<(), DriverError> {
        // Refused when the task is finishing or a kill is under way: both end in a result.
        if let Ok(effects) = self.apply(Event::KillRequested { signal, timeout }) {
            self.run(effects)?;
        }
        self.drive(None)?;
        self.kill_outcome()
    }

    /// How a kill ended once the task has a result: an error when a cleanup step failed,
    /// whichever thread ran that cleanup, because the caller must not believe the task is
    /// gone when it may not be.
    fn kill_outcome(&self) -> Result<(), DriverError> {
        let failures = self
            .lock()
            .result
            .as_ref()
            .and_then(|r| r.error.as_ref())
            .map(|e| e.cleanup_failures.clone())
            .unwrap_or_default();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DriverError::KillIncomplete {
                task_id: self.task_id.clone(),
                failures,
            })
        }
    }

    /// Removes the task and everything kept of it: its records (spec, exit record), its
    /// cgroup, its name, and the logs and alloc dir the platform made. An exited task's
    /// exit is collected first; a running one is refused unless `force`, which kills it
    /// first through [`TaskHandle::kill`]. Returns the task's result.
    pub fn remove(&self, force: bool) -> Result<WaitResult, DriverError> {
        let result = match self.result() {
            Some(result) => result,
            None => match self.wait_timeout(Duration::ZERO)? {
                Some(result) => result,
                None if !force => {
                    return Err(DriverError::StillRunning {
                        task_id: self.task_id.clone(),
                    });
                }
                None => {
                    self.kill()?;
                    self.wait()?
                }
            },
        };
        let deadline = self.platform.now() + self.timeouts.cleanup;
        remove_exited(&*self.platform, &self.handle_id(), deadline)?;
        Ok(result)
    }

    /// Runs a command inside the running task (see [`crate::exec`]) and returns once it is
    /// started; wait for it through [`ExecStarted::session`]. Refused for a task that has
    /// exited ([`DriverError::NotRunning`]) or is being killed.
    pub fn exec(&self, request: ExecRequest) -> Result<ExecStarted, DriverError> {
        let refused = |reason: String| DriverError::ExecRefused {
            task_id: self.task_id.clone(),
            reason,
        };
        request.validate().map_err(refused)?;
        let supervisor = self.live_supervisor(Operation::Exec)?;
        if self.state() != State::Running {
            return Err(refused("it is being killed".to_owned()));
        }
        let handle = self.handle_id();
        let deadline = self.platform.now() + self.timeouts.call;
        match self.platform.exec(supervisor, &handle, request, deadline) {
            Ok(started) => Ok(started),
            // The task may have ended since this handle last looked: say so, as for an
            // exec into a task known to have exited.
            Err(source) => match self.wait_timeout(Duration::ZERO) {
                Ok(Some(_)) => Err(DriverError::NotRunning {
                    op: Operation::Exec,
                    task_id: self.task_id.clone(),
                }),
                _ => Err(self.platform_error(Operation::Exec, source)),
            },
        }
    }

    /// The master side of the task's terminal (a task started with
    /// [`TaskSpec::tty`](crate::TaskSpec::tty)): what is written to it is the task's
    /// input, and its window size is the task's. The task's output is read from its stdout
    /// log, which the supervisor keeps filling whether or not anyone holds this.
    pub fn terminal(&self) -> Result<OwnedFd, DriverError> {
        let supervisor = self.live_supervisor(Operation::Terminal)?;
        let deadline = self.platform.now() + self.timeouts.call;
        self.platform
            .terminal(supervisor, deadline)
            .map_err(|source| self.platform_error(Operation::Terminal, source))
    }

    /// The task's current resource use.
    pub fn stats(&self) -> Result<TaskStats, DriverError> {
        let supervisor = self.live_supervisor(Operation::Stats)?;
        let deadline = self.platform.now() + self.timeouts.call;
        self.platform
            .stats(supervisor, deadline)
            .map_err(|source| self.platform_error(Operation::Stats, source))
    }

    /// Where to start reading the task's `stream` for what `start` asks; see
    /// [`Driver::log_start`].
    pub fn log_start(&self, stream: LogStream, start: LogStart) -> Result<LogCursor, DriverError> {
        crate::logs::find_start(
            &mut |cursor, max| self.read_logs(stream, cursor, max),
            start,
        )
    }

    /// Reads up to `max` bytes of the task's `stream` from `cursor`, without blocking; also
    /// after the task was collected, until it is removed.
    pub fn read_logs(
        &self,
        stream: LogStream,
        cursor: LogCursor,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let handle = self.handle_id();
        self.platform
            .read_logs(&handle, self.supervisor.as_ref(), stream, cursor, max)
            .map_err(|source| self.platform_error(Operation::Logs, source))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated: every write is a
        // single assignment or one machine step, which changes nothing when it fails. So a
        // poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_supervisor(&self, op: Operation) -> Result<&P::Supervisor, DriverError> {
        let state = self.state();
        match (&self.supervisor, state) {
            (Some(supervisor), State::Running | State::Killing | State::Forcing) => Ok(supervisor),
            _ => Err(DriverError::NotRunning {
                op,
                task_id: self.task_id.clone(),
            }),
        }
    }

    /// The supervisor an effect talks to; `None` when another thread has moved the task on
    /// to its end since the effect was decided, which makes the effect moot.
    fn effect_supervisor(&self, op: Operation) -> Result<Option<&P::Supervisor>, DriverError> {
        match (&self.supervisor, self.state()) {
            (_, State::CleaningUp | State::Exited) => Ok(None),
            (Some(supervisor), State::Running | State::Killing | State::Forcing) => {
                Ok(Some(supervisor))
            }
            _ => Err(DriverError::NotRunning {
                op,
                task_id: self.task_id.clone(),
            }),
        }
    }

    fn platform_error(&self, op: Operation, source: PlatformError) -> DriverError {
        DriverError::Platform {
            op,
            task_id: self.task_id.clone(),
            source,
        }
    }

    /// Runs one transition under the lock; the machine is unchanged on error.
    fn apply(&self, event: Event) -> Result<Vec<Effect>, TransitionError> {
        let now = self.platform.now();
        self.lock().machine.handle(now, event)
    }

    /// Applies `event` and runs what follows; an event refused because another thread moved
    /// the task on first is dropped, since that thread runs the consequences.
    fn feed(&self, event: Event) -> Result<(), DriverError> {
        match self.apply(event) {
            Ok(effects) => self.run(effects),
            Err(_) => Ok(()),
        }
    }

    /// Runs effects in order, outside the lock, feeding each one's outcome back.
    fn run(&self, effects: Vec<Effect>) -> Result<(), DriverError> {
        let _guard = DeliverOnUnwind(self);
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            if let Some(event) = self.execute(effect)?
                && let Ok(more) = self.apply(event)
            {
                queue.extend(more);
            }
        }
        Ok(())
    }

    /// Executes one effect; the event its outcome is, if the machine must hear of it.
    fn execute(&self, effect: Effect) -> Result<Option<Event>, DriverError> {
        let lost = |reason: String| Some(Event::SupervisorLost { reason });
        Ok(match effect {
            Effect::NotifyRunning => {
                contain(|| self.hooks.on_running(&self.task_id));
                None
            }
            Effect::SendSignal { signal, deadline } => {
                let Some(supervisor) = self.effect_supervisor(Operation::Signal)? else {
                    return Ok(None);
                };
                match self.platform.signal(supervisor, signal, deadline) {
                    Ok(()) => None,
                    Err(PlatformError::SupervisorGone { reason }) => lost(reason),
                    Err(source) => return Err(self.platform_error(Operation::Signal, source)),
                }
            }
            Effect::BeginKill {
                signal,
                grace,
                deadline,
            } => {
                let Some(supervisor) = self.effect_supervisor(Operation::Kill)? else {
                    return Ok(None);
                };
                match self
                    .platform
                    .begin_kill(supervisor, signal, grace, deadline)
                {
                    Ok(()) => None,
                    // The supervisor reached is not this task's (a stale handle after the id
                    // was reused): a cleanup by cgroup would hit the other task.
                    Err(e @ PlatformError::Refused { .. }) => {
                        return Err(self.platform_error(Operation::Kill, e));
                    }
                    Err(PlatformError::SupervisorGone { reason }) => lost(reason),
                    Err(PlatformError::Unresponsive { reason }) => {
                        Some(Event::SupervisorUnresponsive { reason })
                    }
                    Err(e) => Some(Event::KillSignalFailed {
                        error: e.to_string(),
                    }),
                }
            }
            Effect::ForceKill { deadline } => {
                let Some(supervisor) = self.effect_supervisor(Operation::Kill)? else {
                    return Ok(None);
                };
                match self.platform.force_kill(supervisor, deadline) {
                    Ok(()) => None,
                    // The supervisor reached is not this task's (a stale handle after the id
                    // was reused): a cleanup by cgroup would hit the other task.
                    Err(e @ PlatformError::Refused { .. }) => {
                        return Err(self.platform_error(Operation::Kill, e));
                    }
                    Err(PlatformError::SupervisorGone { reason }) => lost(reason),
                    Err(PlatformError::Unresponsive { reason }) => {
                        Some(Event::SupervisorUnresponsive { reason })
                    }
                    Err(e) => Some(Event::ForceKillFailed {
                        error: e.to_string(),
                    }),
                }
            }
            Effect::Release { deadline } => {
                let released = match &self.supervisor {
                    Some(supervisor) => self.platform.release(supervisor, deadline),
                    None => Ok(()),
                };
                Some(match released {
                    Ok(()) => Event::CleanupFinished { failures: vec![] },
                    Err(e) => Event::ReleaseFailed(CleanupFailure::new(CleanupStep::Release, &e)),
                })
            }
            Effect::OrphanCleanup { deadline } => {
                let handle = self.handle_id();
                Some(Event::CleanupFinished {
                    failures: orphan_cleanup(&*self.platform, &handle, deadline),
                })
            }
            Effect::DeliverExit(result) => {
                self.deliver(result);
                None
            }
        })
    }

    fn deliver(&self, result: WaitResult) {
        {
            let mut inner = self.lock();
            debug_assert!(inner.result.is_none(), "a task's result is delivered once");
            inner.result = Some(result.clone());
        }
        self.finished.notify_all();
        contain(|| self.hooks.on_exited(&self.task_id, &result));
    }

    /// Called while unwinding out of `run`: if the task was on its way to `Exited`, its
    /// waiters would otherwise block forever on a result nobody will deliver.
    fn deliver_after_panic(&self) {
        {
            let mut inner = self.lock();
            if inner.result.is_some() || !inner.machine.is_finishing() {
                return;
            }
            inner.result = Some(WaitResult::failed(TaskError::new(
                TaskErrorKind::Internal,
                "the driver panicked while finishing the task; its cleanup may be incomplete",
            )));
        }
        self.finished.notify_all();
    }

    /// Blocks until the thread that is finishing the task has delivered its result.
    fn await_result(&self) -> WaitResult {
        let inner = self.lock();
        let inner = self
            .finished
            .wait_while(inner, |i| i.result.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        inner.result.clone().unwrap_or_else(|| {
            WaitResult::failed(TaskError::new(
                TaskErrorKind::Internal,
                "the task's result was lost",
            ))
        })
    }

    /// Waits for the exit until `until` (forever if `None`), waking the machine at its own
    /// deadlines on the way: the one loop behind `wait`, `wait_timeout` and `kill`.
    fn drive(&self, until: Option<Timestamp>) -> Result<Option<WaitResult>, DriverError> {
        loop {
            let (state, wake) = {
                let inner = self.lock();
                if let Some(result) = &inner.result {
                    return Ok(Some(result.clone()));
                }
                (inner.machine.state(), inner.machine.poll_timeout())
            };
            let killing = matches!(state, State::Killing | State::Forcing);
            let supervisor = match (&self.supervisor, state) {
                (_, State::CleaningUp | State::Exited) => return Ok(Some(self.await_result())),
                (Some(supervisor), State::Running | State::Killing | State::Forcing) => supervisor,
                _ => {
                    return Err(DriverError::NotRunning {
                        op: Operation::Wait,
                        task_id: self.task_id.clone(),
                    });
                }
            };
            let wait_until = match (until, wake) {
                (Some(u), Some(w)) => Some(u.min(w)),
                (u, w) => u.or(w),
            };
            match self.platform.wait(supervisor, wait_until) {
                Ok(Some(status)) => self.feed(Event::TaskExited(status))?,
                Ok(None) => {
                    let now = self.platform.now();
                    if wake.is_some_and(|w| now >= w) {
                        self.feed(Event::Timeout)?;
                    } else if until.is_some_and(|u| now >= u) {
                        return Ok(None);
                    }
                }
                Err(PlatformError::SupervisorGone { reason }) => {
                    self.feed(Event::SupervisorLost { reason })?;
                }
                // Another thread saw the exit and is releasing the supervisor under us.
                Err(_) if self.lock().machine.is_finishing() => {}
                // A wait that ran to the grace's end and was not answered: the supervisor
                // may be busy killing the cgroup itself at that moment, so the force kill,
                // which has the force window to be answered, is what decides.
                Err(PlatformError::Unresponsive { .. })
                    if state == State::Killing
                        && wake.is_some_and(|w| self.platform.now() >= w) =>
                {
                    self.feed(Event::Timeout)?;
                }
                // During a kill, a supervisor that cannot tell us about the exit is taken
                // over: the cleanup by cgroup ends the task for sure, within the bound.
                Err(e) if killing => self.feed(Event::SupervisorUnresponsive {
                    reason: e.to_string(),
                })?,
                Err(source) => return Err(self.platform_error(Operation::Wait, source)),
            }
        }
    }
}

/// Runs a lifecycle hook so that its panic cannot unwind through the driver: a hook that
/// panicked half-way through a start would otherwise leak a running task nobody can name.
fn contain(hook: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
}

/// Delivers a failed result if `run` unwinds while the task is finishing.
struct DeliverOnUnwind<'a, P: Platform>(&'a TaskHandle<P>);

impl<P: Platform> Drop for DeliverOnUnwind<'_, P> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.deliver_after_panic();
        }
    }
}

/// The one removal of an exited task's remains.
fn remove_exited<P: Platform>(
    platform: &P,
    handle: &HandleId,
    deadline: Timestamp,
) -> Result<(), DriverError> {
    platform
        .remove_task(handle, deadline)
        .map_err(|source| DriverError::Platform {
            op: Operation::Remove,
            task_id: handle.task_id.clone(),
            source,
        })
}

/// The one orphan cleanup: runs every step, even after one fails, all by `deadline`, and
/// names each failure. The supervisor goes first, so it cannot create anything more. The
/// task's records stay: a task lives until it is removed ([`TaskHandle::remove`]), and a
/// lost one is listed as lost until then.
fn orphan_cleanup<P: Platform>(
    platform: &P,
    handle: &HandleId,
    deadline: Timestamp,
) -> Vec<CleanupFailure> {
    let mut failures = Vec::new();
    let mut note = |step: CleanupStep, result: Result<(), PlatformError>| {
        if let Err(e) = result {
            failures.push(CleanupFailure::new(step, &e));
        }
    };
    note(
        CleanupStep::KillSupervisor,
        platform.kill_supervisor(handle, deadline),
    );
    note(
        CleanupStep::KillCgroup,
        platform.kill_cgroup(handle, deadline),
    );
    note(
        CleanupStep::DestroyCgroup,
        platform.destroy_cgroup(handle, deadline),
    );
    failures
}
