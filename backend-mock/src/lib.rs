//! execdriver-mock: an in-memory [`Platform`] with a virtual clock and fault injection.
//!
//! Deterministic by construction: no threads, no real time, no randomness. The clock only moves
//! when the driver waits (`wait` with a deadline jumps to the deadline or to the task's next
//! scripted event, whichever comes first) or when a test calls [`MockPlatform::advance`].
//! Each task follows a [`TaskScript`] set before its spawn; [`Faults`] make platform calls fail.
//!
//! Every resource a real platform would hold is recorded with its owning task: the supervisor
//! process, the task's processes, its cgroup, its mounts, its state dir. Orphan cleanup acts
//! by address (the pid and start time, cgroup name and state dir in the handle id), as the
//! Linux platform does, and every removal is logged with its cause, so tests can assert both
//! that nothing of a task is left and that nothing of another task was touched.
//!
//! [`MockPlatform`] is a cheap handle to shared state: clone it to give a second [`Driver`]
//! (a restarted agent) the same node.
//!
//! ```
//! use std::time::Duration;
//! use execdriver_core::{Driver, TaskConfig, TaskSpec};
//! use execdriver_mock::{MockPlatform, TaskScript};
//!
//! let mock = MockPlatform::new();
//! mock.script("web", TaskScript::default().ignoring_kill_signal());
//! let driver = Driver::new(mock.clone());
//! let config = TaskConfig::new("/bin/sleep", ["60"]);
//! let task = driver.start(&TaskSpec::new("web", "web", "/alloc", "/alloc/web", config))?;
//! let id = task.id();
//! drop((task, driver)); // the agent dies...
//! let driver = Driver::new(mock.clone()); // ...and comes back
//! let task = driver.open(&id)?;
//! task.kill()?; // SIGINT is ignored: the force kill comes after the 5 s kill timeout
//! assert_eq!(mock.time().0, Duration::from_secs(5));
//! task.remove(false)?; // the exit is kept until the task is removed
//! assert!(mock.all_resources().is_empty());
//! # Ok::<(), execdriver_core::DriverError>(())
//! ```
//!
//! [`Driver`]: execdriver_core::Driver

mod exec;
mod script;
mod world;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use execdriver_core::{
    ExecRequest, ExecStarted, ExitStatus, Fingerprint, FoundTask, HandleId, LogChunk, LogCursor,
    LogStream, MemoryStats, Platform, PlatformError, ProcessIdentity, Reattach, Refusal, Signal,
    SpawnStep, Spawned, SupervisorIdentity, TaskDetails, TaskRecord, TaskSpec, TaskStats,
    Timestamp,
};

pub use script::{Exit, Faults, ForceKill, ReattachFault, SignalResponse, TaskScript};
use world::{Proc, Sim, StateDir, World};

/// How long after the kill deadline the supervisor's own backup kill lands in virtual time.
const BACKUP_KILL_LAG: Duration = Duration::from_millis(1);

/// The longest a mock wait without deadline blocks on a hung supervisor before it gives up,
/// as the Linux platform's waits go in chunks.
pub const WAIT_CHUNK: Duration = Duration::from_secs(10);

/// The mock's data dir: every state dir is `<MOCK_DATA_DIR>/<task id>`.
pub const MOCK_DATA_DIR: &str = "/mock/execdriver/tasks";

/// The cgroup name the mock gives a task, as the Linux platform does.
pub fn cgroup_name(task_id: &str) -> String {
    format!("execdriver-{task_id}")
}

/// The state dir the mock gives a task.
pub fn state_dir(task_id: &str) -> PathBuf {
    Path::new(MOCK_DATA_DIR).join(task_id)
}

/// Something a platform holds on a task's behalf.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// The supervisor process.
    Supervisor {
        /// Its pid.
        pid: i32,
    },
    /// A process of the task (its main process or a child).
    Process {
        /// Its pid.
        pid: i32,
    },
    /// The task's cgroup.
    Cgroup(String),
    /// A mount in the task's root.
    Mount(PathBuf),
    /// The task's state dir (socket, exit record).
    StateDir(PathBuf),
}

/// A platform operation, as recorded in the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Platform::spawn`].
    Spawn,
    /// [`Platform::reattach`].
    Reattach,
    /// [`Platform::signal`].
    Signal,
    /// [`Platform::wait`].
    Wait,
    /// [`Platform::begin_kill`].
    BeginKill,
    /// [`Platform::force_kill`].
    ForceKill,
    /// [`Platform::stats`].
    Stats,
    /// [`Platform::release`].
    Release,
    /// [`Platform::kill_supervisor`].
    KillSupervisor,
    /// [`Platform::kill_cgroup`].
    KillCgroup,
    /// [`Platform::destroy_cgroup`].
    DestroyCgroup,
    /// [`Platform::remove_state`].
    RemoveState,
    /// [`Platform::remove_task`].
    RemoveTask,
    /// [`Platform::exec`].
    Exec,
}

/// Why a resource went away.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A scripted event: the task ended or its supervisor died on schedule.
    Timeline,
    /// A test forced it ([`MockPlatform::kill_supervisor_now`], [`MockPlatform::end_task_now`]).
    Injected,
    /// A platform call made for `task_id`.
    Call {
        /// The operation.
        op: Op,
        /// The task the call was made for (from its supervisor or handle id).
        task_id: String,
    },
}

/// One removal of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// When, on the virtual clock.
    pub at: Timestamp,
    /// What.
    pub resource: Resource,
    /// The task that held it.
    pub owner: String,
    /// Why.
    pub cause: Cause,
}

/// One platform call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When, on the virtual clock.
    pub at: Timestamp,
    /// Which operation.
    pub op: Op,
    /// For which task.
    pub task_id: String,
    /// Whether it returned `Ok`.
    pub ok: bool,
}

/// The mock's connection to one supervisor: the supervisor process it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MockSupervisorHandle {
    /// The task.
    pub task_id: String,
    /// The supervisor's pid.
    pub pid: i32,
    /// The supervisor's start time.
    pub start_time: u64,
}

/// The in-memory platform. Clones share one node.
#[derive(Debug, Clone)]
pub struct MockPlatform {
    world: Arc<Mutex<World>>,
}

impl Default for MockPlatform {
    fn default() -> Self {
        Self::new()
    }
}

/// Shorthand for the error of a call on a supervisor that is gone.
fn lost(sup: &MockSupervisorHandle) -> PlatformError {
    PlatformError::gone(format!(
        "supervisor pid {} of task {} is gone",
        sup.pid, sup.task_id
    ))
}

fn injected(what: &str, task_id: &str) -> PlatformError {
    PlatformError::other(format!("{what} of task {task_id} failed (injected fault)"))
}

fn unresponsive(sup: &MockSupervisorHandle, what: &str) -> PlatformError {
    PlatformError::unresponsive(format!(
        "supervisor pid {} of task {} did not answer {what} in time (hung)",
        sup.pid, sup.task_id
    ))
}

impl MockPlatform {
    /// An empty node at virtual time zero.
    pub fn new() -> Self {
        Self {
            world: Arc::new(Mutex::new(World::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // Every mutation of the world is completed before any call that could panic, so a
        // poisoned lock still guards a consistent world.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the behaviour of the task `task_id` for its next spawns.
    pub fn script(&self, task_id: &str, script: TaskScript) {
        self.lock().scripts.insert(task_id.to_owned(), script);
    }

    /// Sets the platform failures for `task_id`, from now on.
    pub fn set_faults(&self, task_id: &str, faults: Faults) {
        self.lock().faults.insert(task_id.to_owned(), faults);
    }

    /// The platform failures set for `task_id`.
    pub fn faults(&self, task_id: &str) -> Faults {
        self.lock().faults(task_id)
    }

    /// Makes the fingerprint report the node unusable, or usable again with `None`.
    pub fn set_unhealthy(&self, reason: Option<String>) {
        self.lock().unhealthy = reason;
    }

    /// The virtual time.
    pub fn time(&self) -> Timestamp {
        self.lock().clock
    }

    /// Lets `d` of virtual time pass (the agent is away), running scripted events.
    pub fn advance(&self, d: Duration) {
        let mut w = self.lock();
        let until = w.clock + d;
        w.advance_to(until);
    }

    /// Kills the supervisor of `task_id` now, as an outside event; the task keeps running.
    pub fn kill_supervisor_now(&self, task_id: &str) {
        let mut w = self.lock();
        if let Some(pid) = w.sims.get(task_id).map(|s| s.supervisor_pid) {
            w.remove_process(pid, &Cause::Injected);
        }
    }

    /// Ends the task `task_id` now with `exit` (an OOM kill, a crash), as an outside event.
    pub fn end_task_now(&self, task_id: &str, exit: Exit) {
        self.lock()
            .end_task(task_id, exit.status(), &Cause::Injected);
    }

    /// Every resource held for `task_id`, in a stable order.
    pub fn resources_of(&self, task_id: &str) -> Vec<Resource> {
        self.lock()
            .resources()
            .into_iter()
            .filter(|(owner, _)| owner == task_id)
            .map(|(_, r)| r)
            .collect()
    }

    /// Every resource held, with its owning task, in a stable order.
    pub fn all_resources(&self) -> Vec<(String, Resource)> {
        self.lock().resources()
    }

    /// Every removal so far, in order.
    pub fn removals(&self) -> Vec<Removal> {
        self.lock().removals.clone()
    }

    /// Every platform call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The signals that reached the current instance of `task_id`, with their times.
    pub fn signals_of(&self, task_id: &str) -> Vec<(Timestamp, Signal)> {
        self.lock()
            .sims
            .get(task_id)
            .map(|s| s.signals.clone())
            .unwrap_or_default()
    }

    /// When and how the current instance of `task_id` ended, if it has.
    pub fn exit_of(&self, task_id: &str) -> Option<(Timestamp, ExitStatus)> {
        self.lock().sims.get(task_id).and_then(|s| s.exited)
    }

    /// Whether the supervisor of the current instance of `task_id` is alive.
    pub fn supervisor_alive(&self, task_id: &str) -> bool {
        let w = self.lock();
        w.sims
            .get(task_id)
            .is_some_and(|s| w.supervisor_alive(s.supervisor_pid, s.supervisor_start_time))
    }
}

impl World {
    /// The task instance a supervisor connection belongs to, if the connection is not stale.
    fn sim_of(&self, sup: &MockSupervisorHandle) -> Option<&Sim> {
        self.sims
            .get(&sup.task_id)
            .filter(|s| s.supervisor_pid == sup.pid && s.supervisor_start_time == sup.start_time)
    }

    /// What a wait would return now, or `None` if the task still runs under a live supervisor.
    fn observe(
        &self,
        sup: &MockSupervisorHandle,
    ) -> Option<Result<Option<ExitStatus>, PlatformError>> {
        let Some(sim) = self.sim_of(sup) else {
            return Some(Err(lost(sup)));
        };
        if self.supervisor_alive(sup.pid, sup.start_time) {
            return sim.exited.map(|(_, status)| Ok(Some(status)));
        }
        // The supervisor is gone: an exit it recorded before dying still counts.
        let record = self
            .state_dirs
            .get(&sim.state_dir)
            .and_then(|d| d.exit_record);
        Some(record.map(Some).ok_or_else(|| lost(sup)))
    }

    /// Spends the time a call to the supervisor of `sup` takes: its latency, or, for a hung
    /// supervisor, everything up to `deadline`; a call that runs out of time is
    /// unresponsive. A dead supervisor answers at once (its socket is gone).
    fn call(
        &mut self,
        sup: &MockSupervisorHandle,
        deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        self.live(sup)?;
        self.spend_call(&sup.task_id, deadline)
            .map_err(|_| unresponsive(sup, "the request"))?;
        // The time spent may have ended the task or its supervisor.
        self.live(sup).map(drop)
    }

    /// The live supervisor's task instance, or the error a dead one gives.
    fn live(&self, sup: &MockSupervisorHandle) -> Result<&Sim, PlatformError> {
        match self.sim_of(sup) {
            Some(sim) if self.supervisor_alive(sup.pid, sup.start_time) => Ok(sim),
            _ => Err(lost(sup)),
        }
    }

    /// Refuses a handle id whose addresses are not the ones this platform gives the task.
    fn confine(&self, handle: &HandleId) -> Result<(), PlatformError> {
        let id = &handle.task_id;
        let dir = state_dir(id);
        if handle.cgroup != cgroup_name(id) {
            return Err(PlatformError::refused(
                Refusal::NotOurs,
                format!("cgroup {:?} is not the cgroup of task {id}", handle.cgroup),
            ));
        }
        if handle.state_dir != dir || handle.supervisor.socket != dir.join("supervisor.sock") {
            return Err(PlatformError::refused(
                Refusal::NotOurs,
                format!(
                    "state dir {:?} or socket {:?} is not under {}",
                    handle.state_dir,
                    handle.supervisor.socket,
                    dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn call_cause(op: Op, task_id: &str) -> Cause {
        Cause::Call {
            op,
            task_id: task_id.to_owned(),
        }
    }
}

impl Platform for MockPlatform {
    type Supervisor = MockSupervisorHandle;

    fn now(&self) -> Timestamp {
        self.lock().clock
    }

    fn fingerprint(&self) -> Fingerprint {
        let w = self.lock();
        let mut fp = Fingerprint {
            healthy: w.unhealthy.is_none(),
            reason: w.unhealthy.clone(),
            ..Fingerprint::default()
        };
        let exec = if fp.healthy { "1" } else { "0" };
        fp.attributes
            .insert("driver.exec".to_owned(), exec.to_owned());
        fp.attributes
            .insert("driver.exec.platform".to_owned(), "mock".to_owned());
        fp
    }

    fn spawn(&self, spec: &TaskSpec) -> Result<Spawned<Self::Supervisor>, PlatformError> {
        let mut w = self.lock();
        let id = spec.task_id.clone();
        let cgroup = cgroup_name(&id);
        let dir = state_dir(&id);
        // Every check comes before the first resource is created, so a failed spawn leaves
        // nothing behind.
        let refused = if w.faults(&id).spawn_fails {
            Some(PlatformError::spawn(
                SpawnStep::Supervisor,
                format!("spawn of task {id} failed (injected fault)"),
            ))
        } else if w.cgroups.contains_key(&cgroup) {
            Some(PlatformError::spawn(
                SpawnStep::Cgroup,
                format!("cgroup {cgroup} already exists"),
            ))
        } else if w.state_dirs.contains_key(&dir) {
            Some(PlatformError::spawn(
                SpawnStep::Claim,
                format!(
                    "task id {id} is already in use: state dir {} exists",
                    dir.display()
                ),
            ))
        } else {
            spec.name
                .as_ref()
                .and_then(|n| w.names.get(n).map(|holder| (n, holder)))
                .map(|(name, holder)| {
                    PlatformError::spawn(
                        SpawnStep::Name,
                        format!("name {name:?} is held by task {holder}"),
                    )
                })
        };
        if let Some(e) = refused {
            w.record(Op::Spawn, &id, false);
            return Err(e);
        }
        let script = w.scripts.get(&id).cloned().unwrap_or_default();
        let now = w.clock;
        let (sup_pid, sup_start) = w.new_process(Proc {
            owner: id.clone(),
            start_time: 0,
            supervisor: true,
            cgroup: None,
        });
        w.cgroups.insert(cgroup.clone(), id.clone());
        let mut task = ProcessIdentity {
            pid: 0,
            start_time: 0,
        };
        for i in 0..=script.children {
            let (pid, start_time) = w.new_process(Proc {
                owner: id.clone(),
                start_time: 0,
                supervisor: false,
                cgroup: Some(cgroup.clone()),
            });
            if i == 0 {
                task = ProcessIdentity { pid, start_time };
            }
        }
        let record = TaskRecord {
            task_id: id.clone(),
            supervisor: SupervisorIdentity {
                process: ProcessIdentity {
                    pid: sup_pid,
                    start_time: sup_start,
                },
                socket: dir.join("supervisor.sock"),
            },
            task,
            cgroup: cgroup.clone(),
            state_dir: dir.clone(),
            task_dir: spec.task_dir.clone(),
            alloc_dir: spec.alloc_dir.clone(),
            kill_timeout: spec.kill_timeout,
            kill_signal: spec.kill_signal,
        };
        w.state_dirs.insert(
            dir.clone(),
            StateDir {
                owner: id.clone(),
                exit_record: None,
                record: record.clone(),
                spec: spec.clone(),
            },
        );
        if let Some(name) = &spec.name {
            w.names.insert(name.clone(), id.clone());
        }
        let mut mount_points: Vec<PathBuf> = spec
            .chroot_env
            .iter()
            .map(|d| spec.task_dir.join(d.strip_prefix("/").unwrap_or(d)))
            .collect();
        for special in ["proc", "dev", "alloc", "secrets"] {
            mount_points.push(spec.task_dir.join(special));
        }
        for m in mount_points {
            w.mounts.insert((id.clone(), m));
        }
        let sim = Sim {
            exit_at: script
                .exit_after
                .map(|(after, exit)| (now + after, exit.status())),
            supervisor_dies_at: script.supervisor_dies_after.map(|after| now + after),
            script,
            kill_signal: spec.kill_signal,
            supervisor_pid: sup_pid,
            supervisor_start_time: sup_start,
            cgroup: cgroup.clone(),
            state_dir: dir.clone(),
            exited: None,
            signals: Vec::new(),
        };
        w.sims.insert(id.clone(), sim);
        w.record(Op::Spawn, &id, true);
        // A script may end the task at its spawn time.
        w.advance_to(now);
        Ok(Spawned {
            supervisor: MockSupervisorHandle {
                task_id: id,
                pid: sup_pid,
                start_time: sup_start,
            },
            record,
        })
    }

    fn task_ids(&self) -> Result<Vec<String>, PlatformError> {
        let w = self.lock();
        Ok(w.state_dirs.values().map(|d| d.owner.clone()).collect())
    }

    fn find_task(&self, task_id: &str) -> Result<FoundTask, PlatformError> {
        let w = self.lock();
        match w.state_dirs.get(&state_dir(task_id)) {
            Some(dir) => Ok(FoundTask::Started(dir.record.clone())),
            None => Err(PlatformError::NotFound {
                task_id: task_id.to_owned(),
                reason: format!("no state dir {}", state_dir(task_id).display()),
            }),
        }
    }

    fn discard_incomplete(&self, task_id: &str, _deadline: Timestamp) -> Result<(), PlatformError> {
        // The mock's starts are atomic: a task is started or absent, never half-way.
        Err(PlatformError::refused(
            Refusal::NotOurs,
            format!("task {task_id} is not an abandoned start"),
        ))
    }

    fn reattach(
        &self,
        handle: &HandleId,
        deadline: Timestamp,
    ) -> Result<Reattach<Self::Supervisor>, PlatformError> {
        let mut w = self.lock();
        let id = handle.task_id.clone();
        let result = w.confine(handle).and_then(|()| {
            let sup = handle.supervisor.process;
            match w.faults(&id).reattach {
                ReattachFault::Refused => {
                    return Err(PlatformError::refused(
                        Refusal::NotOurs,
                        format!("handle id of task {id} refused (injected fault)"),
                    ));
                }
                ReattachFault::Unreachable => {
                    return Ok(Reattach::Gone {
                        reason: format!(
                            "supervisor socket {} of task {id} is unreachable (injected fault)",
                            handle.supervisor.socket.display()
                        ),
                    });
                }
                ReattachFault::None => {}
            }
            let owned = w.procs.get(&sup.pid).is_some_and(|p| p.owner == id);
            if owned && w.supervisor_alive(sup.pid, sup.start_time) {
                let conn = MockSupervisorHandle {
                    task_id: id.clone(),
                    pid: sup.pid,
                    start_time: sup.start_time,
                };
                return match w.spend_call(&id, deadline) {
                    Ok(()) => Ok(Reattach::Live(conn)),
                    Err(e) => Ok(Reattach::Unresponsive {
                        supervisor: conn,
                        reason: e.to_string(),
                    }),
                };
            }
            if let Some(status) = w
                .state_dirs
                .get(&handle.state_dir)
                .and_then(|d| d.exit_record)
            {
                return Ok(Reattach::Exited(status));
            }
            Ok(Reattach::Gone {
                reason: format!(
                    "supervisor pid {} of task {id} is gone and left no exit record",
                    sup.pid
                ),
            })
        });
        w.record(Op::Reattach, &id, result.is_ok());
        result
    }

    fn signal(
        &self,
        sup: &Self::Supervisor,
        signal: Signal,
        deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let result = w.call(sup, deadline).and_then(|()| {
            if w.faults(&sup.task_id).signal_fails {
                Err(injected("signal", &sup.task_id))
            } else {
                Ok(())
            }
        });
        if result.is_ok() {
            w.deliver_signal(&sup.task_id, signal);
        }
        w.record(Op::Signal, &sup.task_id, result.is_ok());
        result
    }

    fn begin_kill(
        &self,
        sup: &Self::Supervisor,
        signal: Signal,
        grace: Duration,
        deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let result = w.call(sup, deadline).and_then(|()| {
            if w.faults(&sup.task_id).signal_fails {
                Err(injected("kill signal", &sup.task_id))
            } else {
                w.live(sup).map(|sim| sim.script.force_kill)
            }
        });
        if let Ok(force_kill) = result {
            let sent = w.clock;
            w.deliver_signal(&sup.task_id, signal);
            if force_kill == ForceKill::Works {
                // A tick after the driver's own deadline: while the agent lives, its force
                // kill comes first, exactly as without the backup; only an agent gone by
                // then leaves the kill to the supervisor. The backup is as effective as the
                // script's force kill.
                let at = sent + grace + BACKUP_KILL_LAG;
                w.schedule_exit(&sup.task_id, at, ExitStatus::signaled(Signal::SIGKILL));
            }
        }
        let result = result.map(drop);
        w.record(Op::BeginKill, &sup.task_id, result.is_ok());
        result
    }

    fn wait(
        &self,
        sup: &Self::Supervisor,
        until: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError> {
        let mut w = self.lock();
        let result = loop {
            if w.live(sup).is_ok() {
                let faults = w.faults(&sup.task_id);
                if faults.hung {
                    // Nothing answers: the call times out at its end, a chunk at most.
                    let end = until.unwrap_or(w.clock + WAIT_CHUNK);
                    w.advance_to(end);
                    break Err(unresponsive(sup, "wait"));
                }
                if faults.wait_fails {
                    break Err(injected("wait", &sup.task_id));
                }
            }
            if let Some(r) = w.observe(sup) {
                break r;
            }
            if until.is_some_and(|d| w.clock >= d) {
                break Ok(None);
            }
            // Only this task's events can end this wait; other tasks' events on the way are
            // run by `advance_to` in time order.
            let next = w.next_event_of(&sup.task_id);
            let target = match (until, next) {
                (Some(d), Some(n)) => d.min(n),
                (Some(d), None) => d,
                (None, Some(n)) => n,
                (None, None) => {
                    break Err(PlatformError::other(format!(
                        "wait for task {} would block forever in virtual time: nothing will end it",
                        sup.task_id
                    )));
                }
            };
            w.advance_to(target);
        };
        w.record(Op::Wait, &sup.task_id, result.is_ok());
        result
    }

    fn force_kill(&self, sup: &Self::Supervisor, deadline: Timestamp) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let result = w
            .call(sup, deadline)
            .and_then(|()| w.live(sup).map(|sim| sim.script.force_kill));
        let result = match result {
            Ok(ForceKill::Works) => {
                let now = w.clock;
                w.schedule_exit(&sup.task_id, now, ExitStatus::signaled(Signal::SIGKILL));
                w.advance_to(now);
                Ok(())
            }
            Ok(ForceKill::Ineffective) => Ok(()),
            Ok(ForceKill::Fails) => Err(injected("force kill", &sup.task_id)),
            Err(e) => Err(e),
        };
        w.record(Op::ForceKill, &sup.task_id, result.is_ok());
        result
    }

    fn stats(
        &self,
        sup: &Self::Supervisor,
        deadline: Timestamp,
    ) -> Result<TaskStats, PlatformError> {
        let mut w = self.lock();
        let result = w
            .call(sup, deadline)
            .and_then(|()| w.live(sup).map(|sim| sim.cgroup.clone()))
            .and_then(|cgroup| {
                if w.faults(&sup.task_id).stats_fails {
                    return Err(injected("stats", &sup.task_id));
                }
                let pids = w.pids_in(&cgroup).len() as u64;
                Ok(TaskStats {
                    memory: MemoryStats {
                        rss: pids * 1024 * 1024,
                        max_usage: pids * 1024 * 1024,
                        ..MemoryStats::default()
                    },
                    pids,
                    timestamp: w.clock,
                    ..TaskStats::default()
                })
            });
        w.record(Op::Stats, &sup.task_id, result.is_ok());
        result
    }

    fn exec(
        &self,
        sup: &Self::Supervisor,
        _handle: &HandleId,
        request: ExecRequest,
        deadline: Timestamp,
    ) -> Result<ExecStarted, PlatformError> {
        exec::exec(&self.world, sup, &request, deadline)
    }

    fn terminal(
        &self,
        sup: &Self::Supervisor,
        deadline: Timestamp,
    ) -> Result<std::os::fd::OwnedFd, PlatformError> {
        let mut w = self.lock();
        w.call(sup, deadline)?;
        w.live(sup)?;
        // Nothing in the mock reads input: a terminal would be a file nobody looks at.
        Err(PlatformError::other(format!(
            "task {}: the mock platform has no terminals",
            sup.task_id
        )))
    }

    fn release(&self, sup: &Self::Supervisor, deadline: Timestamp) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let id = sup.task_id.clone();
        let result = w
            .call(sup, deadline)
            .and_then(|()| w.live(sup).map(|sim| sim.cgroup.clone()))
            .and_then(|paths| {
                if w.faults(&id).release_fails {
                    Err(injected("release", &id))
                } else {
                    Ok(paths)
                }
            });
        let result = result.map(|cgroup| {
            let cause = World::call_cause(Op::Release, &id);
            // The supervisor empties the cgroup before removing it, as rmdir needs.
            if !w.pids_in(&cgroup).is_empty() {
                w.end_task(&id, ExitStatus::signaled(Signal::SIGKILL), &cause);
            }
            w.remove_cgroup(&cgroup, &cause);
            // The state dir, with its exit record, stays until the task is removed.
            w.remove_process(sup.pid, &cause);
        });
        w.record(Op::Release, &id, result.is_ok());
        result
    }

    fn read_logs(
        &self,
        handle: &HandleId,
        _supervisor: Option<&Self::Supervisor>,
        _stream: LogStream,
        cursor: LogCursor,
        _max: usize,
    ) -> Result<LogChunk, PlatformError> {
        let w = self.lock();
        w.confine(handle)?;
        let sup = handle.supervisor.process;
        Ok(LogChunk {
            next: cursor,
            more_may_come: w.supervisor_alive(sup.pid, sup.start_time),
            ..LogChunk::default()
        })
    }

    fn kill_supervisor(
        &self,
        handle: &HandleId,
        _deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let id = handle.task_id.clone();
        let result = w.confine(handle).and_then(|()| {
            if w.faults(&id).kill_supervisor_fails {
                return Err(injected("kill supervisor", &id));
            }
            let sup = handle.supervisor.process;
            // Only the process the handle recorded, never whatever now has its pid, and only
            // if it supervises this task: as the Linux platform checks the supervisor's
            // command line, a handle naming another task's supervisor is refused. SIGKILL
            // ends a hung supervisor too.
            match w.supervisor_owner(sup.pid, sup.start_time) {
                None => Ok(()),
                Some(owner) if owner == id => {
                    w.remove_process(sup.pid, &World::call_cause(Op::KillSupervisor, &id));
                    Ok(())
                }
                Some(owner) => Err(PlatformError::refused(
                    Refusal::NotSupervisor,
                    format!(
                        "supervisor pid {} belongs to task {owner}, not {id}",
                        sup.pid
                    ),
                )),
            }
        });
        w.record(Op::KillSupervisor, &id, result.is_ok());
        result
    }

    fn kill_cgroup(&self, handle: &HandleId, _deadline: Timestamp) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let id = handle.task_id.clone();
        let result = w.confine(handle).and_then(|()| {
            if w.faults(&id).kill_cgroup_fails {
                return Err(injected("kill cgroup", &id));
            }
            let owners: std::collections::BTreeSet<String> = w
                .pids_in(&handle.cgroup)
                .iter()
                .filter_map(|pid| w.procs.get(pid).map(|p| p.owner.clone()))
                .collect();
            let cause = World::call_cause(Op::KillCgroup, &id);
            for owner in owners {
                w.end_task(&owner, ExitStatus::signaled(Signal::SIGKILL), &cause);
            }
            Ok(())
        });
        w.record(Op::KillCgroup, &id, result.is_ok());
        result
    }

    fn destroy_cgroup(&self, handle: &HandleId, _deadline: Timestamp) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let id = handle.task_id.clone();
        let result = w.confine(handle).and_then(|()| {
            if w.faults(&id).destroy_cgroup_fails {
                return Err(injected("destroy cgroup", &id));
            }
            let pids = w.pids_in(&handle.cgroup);
            if !pids.is_empty() {
                // rmdir of a cgroup with members fails with EBUSY.
                return Err(PlatformError::cgroup(format!(
                    "cgroup {} still has processes {pids:?}",
                    handle.cgroup
                )));
            }
            w.remove_cgroup(&handle.cgroup, &World::call_cause(Op::DestroyCgroup, &id));
            Ok(())
        });
        w.record(Op::DestroyCgroup, &id, result.is_ok());
        result
    }

    fn remove_state(&self, handle: &HandleId) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let id = handle.task_id.clone();
        let result = w.confine(handle).and_then(|()| {
            if w.faults(&id).remove_state_fails {
                return Err(injected("remove state", &id));
            }
            // The record is the proof a cgroup is the task's: kept while the cgroup is.
            if w.cgroups.contains_key(&handle.cgroup) {
                return Err(PlatformError::other(format!(
                    "kept {}: task cgroup {} still exists, and its record is needed to remove it later",
                    handle.state_dir.display(),
                    handle.cgroup
                )));
            }
            w.remove_state_dir(&handle.state_dir, &World::call_cause(Op::RemoveState, &id));
            Ok(())
        });
        w.record(Op::RemoveState, &id, result.is_ok());
        result
    }

    fn remove_task(&self, handle: &HandleId, _deadline: Timestamp) -> Result<(), PlatformError> {
        let mut w = self.lock();
        let id = handle.task_id.clone();
        let result = w.confine(handle).and_then(|()| {
            let sup = handle.supervisor.process;
            if w.supervisor_alive(sup.pid, sup.start_time) {
                return Err(PlatformError::other(format!(
                    "supervisor pid {} of task {id} still runs: collect the task first",
                    sup.pid
                )));
            }
            if w.faults(&id).remove_state_fails {
                return Err(injected("remove task", &id));
            }
            let cause = World::call_cause(Op::RemoveTask, &id);
            if w.cgroups.contains_key(&handle.cgroup) {
                if !w.pids_in(&handle.cgroup).is_empty() {
                    return Err(PlatformError::cgroup(format!(
                        "cgroup {} still has processes",
                        handle.cgroup
                    )));
                }
                w.remove_cgroup(&handle.cgroup, &cause);
            }
            w.remove_state_dir(&handle.state_dir, &cause);
            w.names.retain(|_, holder| *holder != id);
            Ok(())
        });
        w.record(Op::RemoveTask, &id, result.is_ok());
        result
    }

    fn task_named(&self, name: &str) -> Result<Option<String>, PlatformError> {
        Ok(self.lock().names.get(name).cloned())
    }

    fn details(&self, handle: &HandleId) -> Result<TaskDetails, PlatformError> {
        let w = self.lock();
        w.confine(handle)?;
        match w.state_dirs.get(&handle.state_dir) {
            Some(dir) => Ok(TaskDetails {
                spec: dir.spec.clone(),
                created_unix_ms: None,
                state_dir: handle.state_dir.clone(),
                cgroup_paths: vec![PathBuf::from("/").join(&handle.cgroup)],
                log_paths: Vec::new(),
            }),
            None => Err(PlatformError::NotFound {
                task_id: handle.task_id.clone(),
                reason: format!("no state dir {}", handle.state_dir.display()),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
