//! [`Driver`] and [`TaskHandle`]: the public, blocking, thread-safe API.
//!
//! They feed events into [`crate::lifecycle::step`] and run the effects it returns through the
//! [`Platform`]. The state lives under one mutex; platform calls that block (waits, signals,
//! cleanup) run outside it, so a `wait` in one thread never holds up a `kill` in another.
//! Whichever thread drives the task to `Exited` delivers the result; every other caller then
//! reads that same result.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::handle::{HANDLE_FORMAT_VERSION, HandleError, HandleId};
use crate::lifecycle::{
    self, CleanupScope, Effect, Event, State, TransitionError, WaitResult, kill_timeout, step,
};
use crate::platform::{Fingerprint, Platform, PlatformError, Reattach, TaskStats, Timestamp};
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

/// Driver-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// The longest kill timeout a task may ask for.
    pub max_kill_timeout: Duration,
    /// How long a force kill has to end the task before the supervisor is declared lost.
    pub force_kill_grace: Duration,
    /// How often an agent should call [`Driver::fingerprint`].
    pub fingerprint_period: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            max_kill_timeout: Duration::from_secs(30),
            force_kill_grace: Duration::from_secs(5),
            fingerprint_period: Duration::from_secs(15),
        }
    }
}

/// What a driver operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The spec was refused before anything was started.
    #[error("invalid task spec: {0}")]
    Spec(#[from] SpecError),
    /// The handle id was refused before anything was touched.
    #[error("invalid handle id: {0}")]
    Handle(#[from] HandleError),
    /// Starting failed; the platform left nothing behind.
    #[error("starting task {task_id} failed: {source}")]
    Spawn {
        /// The task.
        task_id: String,
        /// Why.
        source: PlatformError,
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
        failures: Vec<String>,
    },
    /// The task was killed by cgroup after its supervisor was lost, but some cleanup steps
    /// failed: processes, the cgroup or the state dir may be left.
    #[error("kill of task {task_id} is incomplete: {}", failures.join("; "))]
    KillIncomplete {
        /// The task.
        task_id: String,
        /// Every cleanup step that failed.
        failures: Vec<String>,
    },
    /// A platform call failed.
    #[error("{op} of task {task_id} failed: {source}")]
    Platform {
        /// The operation: `wait`, `signal`, `kill`, `stats`.
        op: &'static str,
        /// The task.
        task_id: String,
        /// Why.
        source: PlatformError,
    },
    /// The task has exited; the operation needs a running task.
    #[error("cannot {op} task {task_id}: it has exited")]
    NotRunning {
        /// The operation.
        op: &'static str,
        /// The task.
        task_id: String,
    },
    /// An event the lifecycle does not allow now.
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

fn cleanup_summary(failures: &[String]) -> String {
    if failures.is_empty() {
        "; cleanup succeeded".to_owned()
    } else {
        format!("; cleanup failed: {}", failures.join("; "))
    }
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
        let (state, effects) = lifecycle::start();
        debug_assert_eq!(effects, vec![Effect::SpawnSupervisor]);
        let spawned = match self.platform.spawn(spec) {
            Ok(spawned) => spawned,
            Err(source) => {
                // The failed start still goes through the lifecycle so that the table stays
                // the one description of what happens; its result has no reader.
                step(
                    state,
                    Event::SpawnFailed {
                        error: source.to_string(),
                    },
                )?;
                return Err(DriverError::Spawn {
                    task_id: spec.task_id.clone(),
                    source,
                });
            }
        };
        let handle = HandleId {
            format: HANDLE_FORMAT_VERSION,
            driver_version: crate::DRIVER_VERSION.to_owned(),
            task_id: spec.task_id.clone(),
            supervisor: spawned.identity,
            task: spawned.task,
            cgroup: spawned.cgroup,
            state_dir: spawned.state_dir,
            task_dir: spec.task_dir.clone(),
            alloc_dir: spec.alloc_dir.clone(),
            kill_timeout_ms: millis(spec.kill_timeout),
            max_kill_timeout_ms: millis(self.config.max_kill_timeout),
            kill_signal: spec.kill_signal,
        };
        let task = self.handle(handle, Some(spawned.supervisor), state);
        let effects = task.apply(Event::Spawned)?;
        task.execute(effects)?;
        Ok(task)
    }

    /// Reattaches to a task from its handle id, as a restarted agent does.
    ///
    /// A live supervisor gives a running handle; a recorded exit gives an exited handle whose
    /// `wait` returns at once; neither means the task is cleaned up by its cgroup and this
    /// returns [`DriverError::ReattachFailed`] listing every cleanup step that failed.
    pub fn open(&self, handle_id: &str) -> Result<TaskHandle<P>, DriverError> {
        let mut handle = HandleId::parse(handle_id)?;
        // The handle records the maximum of the driver that wrote it; this driver's maximum
        // wins, so a handle from a laxer config (or a forged one) cannot stretch a kill.
        handle.max_kill_timeout_ms = handle
            .max_kill_timeout_ms
            .min(millis(self.config.max_kill_timeout));
        handle.kill_timeout_ms = handle.kill_timeout_ms.min(handle.max_kill_timeout_ms);
        let task_id = handle.task_id.clone();
        let (state, effects) = lifecycle::recover();
        debug_assert_eq!(effects, vec![Effect::ConnectSupervisor]);
        let found =
            self.platform
                .reattach(&handle)
                .map_err(|source| DriverError::ReattachRefused {
                    task_id: task_id.clone(),
                    source,
                })?;
        match found {
            Reattach::Live(supervisor) => {
                let task = self.handle(handle, Some(supervisor), state);
                let effects = task.apply(Event::Reattached)?;
                task.execute(effects)?;
                Ok(task)
            }
            Reattach::Exited(status) => {
                let task = self.handle(handle, None, state);
                let effects = task.apply(Event::FoundExitRecord(status))?;
                task.execute(effects)?;
                Ok(task)
            }
            Reattach::Gone { reason } => {
                let task = self.handle(handle, None, state);
                let failures = task.lose(reason.clone())?.1;
                Err(DriverError::ReattachFailed {
                    task_id,
                    reason,
                    failures,
                })
            }
        }
    }

    fn handle(
        &self,
        handle: HandleId,
        supervisor: Option<P::Supervisor>,
        state: State,
    ) -> TaskHandle<P> {
        TaskHandle {
            platform: Arc::clone(&self.platform),
            hooks: Arc::clone(&self.hooks),
            force_kill_grace: self.config.force_kill_grace,
            task_id: handle.task_id.clone(),
            supervisor,
            inner: Mutex::new(Inner {
                state,
                handle,
                result: None,
                cleanup_failures: Vec::new(),
            }),
            finished: Condvar::new(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Inner {
    state: State,
    handle: HandleId,
    result: Option<WaitResult>,
    /// The orphan cleanup's failed steps, for callers that lost the race to run it.
    cleanup_failures: Vec<String>,
}

/// A started or reattached task.
pub struct TaskHandle<P: Platform> {
    platform: Arc<P>,
    hooks: Arc<dyn LifecycleHooks>,
    force_kill_grace: Duration,
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

/// What running a batch of effects left for the caller to act on.
#[derive(Default)]
struct Executed {
    deadline: Option<Timestamp>,
    cleanup_failures: Vec<String>,
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
        self.lock().state
    }

    /// The result, if the task has exited; never blocks.
    pub fn result(&self) -> Option<WaitResult> {
        self.lock().result.clone()
    }

    /// Blocks until the task exits and returns its result.
    pub fn wait(&self) -> Result<WaitResult, DriverError> {
        match self.wait_until(None)? {
            Some(result) => Ok(result),
            // A wait without deadline only returns on exit; a platform that says otherwise
            // is reported, not trusted.
            None => Err(DriverError::Platform {
                op: "wait",
                task_id: self.task_id.clone(),
                source: PlatformError::Failed(
                    "wait without deadline returned without an exit".to_owned(),
                ),
            }),
        }
    }

    /// Waits up to `timeout` for the exit; `Ok(None)` if the task still runs.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<WaitResult>, DriverError> {
        self.wait_until(Some(self.platform.now() + timeout))
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
        let effects =
            self.apply(Event::SignalRequested(signal))
                .map_err(|_| DriverError::NotRunning {
                    op: "signal",
                    task_id: self.task_id.clone(),
                })?;
        match self.execute(effects) {
            Err(DriverError::Platform {
                source: PlatformError::SupervisorLost(reason),
                ..
            }) => {
                self.lose(reason)?;
                Err(DriverError::NotRunning {
                    op: "signal",
                    task_id: self.task_id.clone(),
                })
            }
            other => other.map(drop),
        }
    }

    /// Stops the task: the kill signal, up to the kill timeout for it to exit, then a force
    /// kill of everything in its cgroup. Returns once the task has exited; its result is then
    /// available from [`TaskHandle::wait`]. Killing an exited task does nothing.
    pub fn kill(&self) -> Result<(), DriverError> {
        let (signal, timeout) = {
            let inner = self.lock();
            (inner.handle.kill_signal, inner.handle.kill_timeout())
        };
        let effects = match self.apply(Event::KillRequested { signal, timeout }) {
            Ok(effects) => effects,
            Err(_) => {
                self.await_result()?;
                return self.kill_outcome();
            }
        };
        let graceful_deadline = match self.execute(effects) {
            // An empty batch means another kill is under way: wait out the same timeout.
            Ok(executed) => Some(executed.deadline.unwrap_or(self.platform.now() + timeout)),
            Err(DriverError::Platform {
                source: PlatformError::SupervisorLost(reason),
                ..
            }) => return self.lose_during_kill(reason),
            // The signal could not be delivered: go straight to the force kill rather than
            // leave the task running.
            Err(_) => None,
        };
        if let Some(deadline) = graceful_deadline {
            match self.wait_until(Some(deadline)) {
                Ok(Some(_)) => return self.kill_outcome(),
                Ok(None) => {}
                // Not knowing whether the task exited is no reason to leave it running: the
                // force kill settles it either way.
                Err(DriverError::Platform { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let effects = match self.apply(Event::KillTimerFired) {
            Ok(effects) => effects,
            Err(_) => {
                self.await_result()?;
                return self.kill_outcome();
            }
        };
        match self.execute(effects) {
            Ok(_) => {}
            Err(DriverError::Platform {
                source: PlatformError::SupervisorLost(reason),
                ..
            }) => return self.lose_during_kill(reason),
            // The platform says the supervisor it reached is not this task's (a stale handle
            // after the id was reused): cleaning up by cgroup would hit the other task.
            Err(
                e @ DriverError::Platform {
                    source: PlatformError::Refused(_),
                    ..
                },
            ) => return Err(e),
            Err(e) => {
                let reason = format!("force kill failed: {e}");
                return self.lose_during_kill(reason);
            }
        }
        let deadline = self.platform.now() + self.force_kill_grace;
        let reason = match self.wait_until(Some(deadline)) {
            Ok(Some(_)) => return self.kill_outcome(),
            Ok(None) => format!(
                "task did not exit within {:?} of a force kill",
                self.force_kill_grace
            ),
            // The supervisor cannot tell us: clean up by cgroup, which ends the task for sure.
            Err(DriverError::Platform { source, .. }) => {
                format!("waiting for the exit after a force kill failed: {source}")
            }
            Err(e) => return Err(e),
        };
        self.lose_during_kill(reason)
    }

    /// Ends a kill whose supervisor is gone: the orphan cleanup; its failures are the kill's
    /// error, because the caller must not believe the task is gone when it may not be.
    fn lose_during_kill(&self, reason: String) -> Result<(), DriverError> {
        self.lose(reason)?;
        self.kill_outcome()
    }

    /// How a kill ended once the task has a result: an error when the task was cleaned up by
    /// cgroup and a step failed, whichever thread ran that cleanup.
    fn kill_outcome(&self) -> Result<(), DriverError> {
        let failures = self.lock().cleanup_failures.clone();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DriverError::KillIncomplete {
                task_id: self.task_id.clone(),
                failures,
            })
        }
    }

    /// The task's current resource use.
    pub fn stats(&self) -> Result<TaskStats, DriverError> {
        let supervisor = self.live_supervisor("read stats of")?;
        self.platform
            .stats(supervisor)
            .map_err(|source| self.platform_error("stats", source))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated: every write is a
        // single assignment. So a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_supervisor(&self, op: &'static str) -> Result<&P::Supervisor, DriverError> {
        let state = self.state();
        match (&self.supervisor, state) {
            (Some(supervisor), State::Running | State::Killing) => Ok(supervisor),
            _ => Err(DriverError::NotRunning {
                op,
                task_id: self.task_id.clone(),
            }),
        }
    }

    fn platform_error(&self, op: &'static str, source: PlatformError) -> DriverError {
        DriverError::Platform {
            op,
            task_id: self.task_id.clone(),
            source,
        }
    }

    /// Runs one transition under the lock; the state is unchanged on error.
    fn apply(&self, event: Event) -> Result<Vec<Effect>, TransitionError> {
        let mut inner = self.lock();
        let (next, effects) = step(inner.state, event)?;
        inner.state = next;
        Ok(effects)
    }

    /// Runs effects in order, outside the lock.
    fn execute(&self, effects: Vec<Effect>) -> Result<Executed, DriverError> {
        let _guard = DeliverOnUnwind(self);
        let mut executed = Executed::default();
        for effect in effects {
            match effect {
                // Start and reattach run these themselves before a handle exists.
                Effect::SpawnSupervisor | Effect::ConnectSupervisor => {}
                Effect::NotifyRunning => contain(|| self.hooks.on_running(&self.task_id)),
                Effect::SendSignal(signal) => {
                    let supervisor = self.live_supervisor("signal")?;
                    self.platform
                        .signal(supervisor, signal)
                        .map_err(|source| self.platform_error("signal", source))?;
                }
                Effect::ArmKillTimer(timeout) => {
                    executed.deadline = Some(self.platform.now() + timeout);
                    let supervisor = self.live_supervisor("kill")?;
                    match self.platform.schedule_force_kill(supervisor, timeout) {
                        Ok(()) => {}
                        Err(PlatformError::SupervisorLost(reason)) => {
                            return Err(
                                self.platform_error("kill", PlatformError::SupervisorLost(reason))
                            );
                        }
                        // Only the backup is missing: the driver's own deadline still holds.
                        Err(_) => {}
                    }
                }
                Effect::ForceKill => {
                    let supervisor = self.live_supervisor("kill")?;
                    self.platform
                        .force_kill(supervisor)
                        .map_err(|source| self.platform_error("kill", source))?;
                }
                Effect::Cleanup(CleanupScope::Supervised) => {
                    let released = match &self.supervisor {
                        Some(supervisor) => self.platform.release(supervisor),
                        None => Ok(()),
                    };
                    if let Err(e) = released {
                        // The supervisor is gone or stuck: fall back to cleaning by cgroup.
                        // When the fallback does the whole job, nothing is wrong with the
                        // task's result, so the release failure is only reported alongside
                        // the fallback's own failures, to explain them.
                        let handle = self.handle_id();
                        let fallback = orphan_cleanup(&*self.platform, &handle);
                        if !fallback.is_empty() {
                            executed
                                .cleanup_failures
                                .push(format!("release supervisor: {e}"));
                            executed.cleanup_failures.extend(fallback);
                        }
                    }
                }
                Effect::Cleanup(CleanupScope::Orphaned) => {
                    let handle = self.handle_id();
                    executed
                        .cleanup_failures
                        .extend(orphan_cleanup(&*self.platform, &handle));
                }
                Effect::DeliverExit(mut result) => {
                    if !executed.cleanup_failures.is_empty() {
                        let failures =
                            format!("cleanup failed: {}", executed.cleanup_failures.join("; "));
                        result.error = Some(match result.error.take() {
                            Some(error) => format!("{error}; {failures}"),
                            None => failures,
                        });
                    }
                    self.deliver(result);
                }
            }
        }
        Ok(executed)
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

    /// Called while unwinding out of `execute`: if the task was on its way to `Exited`, its
    /// waiters would otherwise block forever on a result nobody will deliver.
    fn deliver_after_panic(&self) {
        {
            let mut inner = self.lock();
            if inner.result.is_some()
                || !matches!(inner.state, State::Exited | State::ReattachFailed)
            {
                return;
            }
            inner.state = State::Exited;
            inner.result = Some(WaitResult::failed(
                "the driver panicked while finishing the task; its cleanup may be incomplete",
            ));
        }
        self.finished.notify_all();
    }

    /// Blocks until another thread that is finishing the task has delivered its result.
    fn await_result(&self) -> Result<WaitResult, DriverError> {
        let inner = self.lock();
        if !matches!(inner.state, State::Exited | State::ReattachFailed) {
            return Err(DriverError::Transition(TransitionError {
                state: inner.state,
                event: lifecycle::EventKind::TaskExited,
            }));
        }
        let inner = self
            .finished
            .wait_while(inner, |i| i.result.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        inner.result.clone().ok_or(DriverError::NotRunning {
            op: "wait for",
            task_id: self.task_id.clone(),
        })
    }

    fn wait_until(&self, deadline: Option<Timestamp>) -> Result<Option<WaitResult>, DriverError> {
        {
            let inner = self.lock();
            if let Some(result) = &inner.result {
                return Ok(Some(result.clone()));
            }
        }
        if matches!(self.state(), State::Exited | State::ReattachFailed) {
            return self.await_result().map(Some);
        }
        let supervisor = self.live_supervisor("wait for")?;
        match self.platform.wait(supervisor, deadline) {
            Ok(Some(status)) => match self.apply(Event::TaskExited(status)) {
                Ok(effects) => {
                    self.execute(effects)?;
                    self.await_result().map(Some)
                }
                Err(_) => self.await_result().map(Some),
            },
            Ok(None) => Ok(None),
            Err(PlatformError::SupervisorLost(reason)) => self.lose(reason).map(|(r, _)| Some(r)),
            // Another thread saw the exit and is releasing the supervisor under us.
            Err(_) if matches!(self.state(), State::Exited | State::ReattachFailed) => {
                self.await_result().map(Some)
            }
            Err(source) => Err(self.platform_error("wait", source)),
        }
    }

    /// The supervisor is gone: clean up by cgroup and deliver a failed result. Returns the
    /// result and the cleanup steps that failed.
    fn lose(&self, reason: String) -> Result<(WaitResult, Vec<String>), DriverError> {
        let effects = match self.apply(Event::SupervisorLost {
            reason: reason.clone(),
        }) {
            Ok(effects) => effects,
            Err(_) => {
                let result = self.await_result()?;
                return Ok((result, self.lock().cleanup_failures.clone()));
            }
        };
        let failures = self.execute(effects)?.cleanup_failures;
        // Stored before the result is delivered, so a waiter woken by it sees them.
        self.lock().cleanup_failures.clone_from(&failures);
        let effects = self.apply(Event::CleanupFinished {
            reason,
            failures: failures.clone(),
        })?;
        self.execute(effects)?;
        Ok((self.await_result()?, failures))
    }
}

/// Runs a lifecycle hook so that its panic cannot unwind through the driver: a hook that
/// panicked half-way through a start would otherwise leak a running task nobody can name.
fn contain(hook: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
}

/// Delivers a failed result if `execute` unwinds while the task is finishing.
struct DeliverOnUnwind<'a, P: Platform>(&'a TaskHandle<P>);

impl<P: Platform> Drop for DeliverOnUnwind<'_, P> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.deliver_after_panic();
        }
    }
}

/// Runs every orphan cleanup step, even after one fails, and names each failure.
fn orphan_cleanup<P: Platform>(platform: &P, handle: &HandleId) -> Vec<String> {
    type Step<P> = fn(&P, &HandleId) -> Result<(), PlatformError>;
    let steps: [(&str, Step<P>); 4] = [
        ("kill supervisor", P::kill_supervisor),
        ("kill cgroup", P::kill_cgroup),
        ("destroy cgroup", P::destroy_cgroup),
        ("remove state", P::remove_state),
    ];
    steps
        .iter()
        .filter_map(|(name, run)| run(platform, handle).err().map(|e| format!("{name}: {e}")))
        .collect()
}
