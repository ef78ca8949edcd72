//! The mock's whole state: the virtual clock, every resource with its owner, and the scripted
//! timeline of each task. Everything here runs under the platform's one mutex.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use execdriver_core::{ExitStatus, PlatformError, Signal, TaskRecord, TaskSpec, Timestamp};

use crate::script::{Faults, SignalResponse, TaskScript};
use crate::{Call, Cause, Op, Removal, Resource};

/// A process the mock pretends to run.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub owner: String,
    pub start_time: u64,
    pub supervisor: bool,
    /// The cgroup it is in; supervisors are in none of the task cgroups.
    pub cgroup: Option<String>,
}

/// A task's state dir.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    pub owner: String,
    /// `exit.json`: written by a live supervisor when the task ends.
    pub exit_record: Option<ExitStatus>,
    /// What the platform recorded at the spawn, for `find_task`.
    pub record: TaskRecord,
    /// The spec it was started from.
    pub spec: TaskSpec,
}

/// One spawned instance of a task and its timeline.
#[derive(Debug, Clone)]
pub(crate) struct Sim {
    pub script: TaskScript,
    pub kill_signal: Signal,
    pub supervisor_pid: i32,
    pub supervisor_start_time: u64,
    pub cgroup: String,
    pub state_dir: PathBuf,
    /// When and how the task ended, once it has.
    pub exited: Option<(Timestamp, ExitStatus)>,
    /// The earliest exit scheduled so far.
    pub exit_at: Option<(Timestamp, ExitStatus)>,
    pub supervisor_dies_at: Option<Timestamp>,
    /// Every signal that reached the task.
    pub signals: Vec<(Timestamp, Signal)>,
}

/// A scheduled event, ordered so that ties resolve the same way every run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    // Declared first: at equal times a task's exit comes before its supervisor's death, so
    // the supervisor still writes the exit record.
    Exit,
    SupervisorDeath,
}

#[derive(Debug, Default)]
pub(crate) struct World {
    pub clock: Timestamp,
    next_pid: i32,
    next_start_time: u64,
    pub procs: BTreeMap<i32, Proc>,
    pub cgroups: BTreeMap<String, String>,
    pub mounts: BTreeSet<(String, PathBuf)>,
    pub state_dirs: BTreeMap<PathBuf, StateDir>,
    /// Unique names claimed, and the task that holds each.
    pub names: BTreeMap<String, String>,
    pub sims: BTreeMap<String, Sim>,
    pub scripts: BTreeMap<String, TaskScript>,
    pub faults: BTreeMap<String, Faults>,
    pub removals: Vec<Removal>,
    pub calls: Vec<Call>,
    pub unhealthy: Option<String>,
}

impl World {
    pub fn new() -> Self {
        Self {
            // Low pids belong to init and the kernel; the handle id refuses pid 1 anyway.
            next_pid: 1000,
            next_start_time: 1,
            ..Self::default()
        }
    }

    pub fn faults(&self, task_id: &str) -> Faults {
        self.faults.get(task_id).copied().unwrap_or_default()
    }

    pub fn record(&mut self, op: Op, task_id: &str, ok: bool) {
        self.calls.push(Call {
            at: self.clock,
            op,
            task_id: task_id.to_owned(),
            ok,
        });
    }

    /// A fresh (pid, start time); pids are never reused in the mock.
    pub fn new_process(&mut self, proc_: Proc) -> (i32, u64) {
        let pid = self.next_pid;
        self.next_pid = self.next_pid.saturating_add(1);
        let start_time = self.next_start_time;
        self.next_start_time = self.next_start_time.saturating_add(1);
        self.procs.insert(
            pid,
            Proc {
                start_time,
                ..proc_
            },
        );
        (pid, start_time)
    }

    fn removed(&mut self, resource: Resource, owner: String, cause: &Cause) {
        self.removals.push(Removal {
            at: self.clock,
            resource,
            owner,
            cause: cause.clone(),
        });
    }

    pub fn supervisor_alive(&self, pid: i32, start_time: u64) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| p.supervisor && p.start_time == start_time)
    }

    /// The task a live supervisor process belongs to.
    pub fn supervisor_owner(&self, pid: i32, start_time: u64) -> Option<&str> {
        self.procs
            .get(&pid)
            .filter(|p| p.supervisor && p.start_time == start_time)
            .map(|p| p.owner.as_str())
    }

    pub fn remove_process(&mut self, pid: i32, cause: &Cause) {
        if let Some(p) = self.procs.remove(&pid) {
            let resource = if p.supervisor {
                Resource::Supervisor { pid }
            } else {
                Resource::Process { pid }
            };
            self.removed(resource, p.owner, cause);
        }
    }

    pub fn remove_cgroup(&mut self, name: &str, cause: &Cause) {
        if let Some(owner) = self.cgroups.remove(name) {
            self.removed(Resource::Cgroup(name.to_owned()), owner, cause);
        }
    }

    pub fn remove_state_dir(&mut self, path: &PathBuf, cause: &Cause) {
        if let Some(dir) = self.state_dirs.remove(path) {
            // A name is held only by a task that is there.
            self.names.retain(|_, holder| *holder != dir.owner);
            self.removed(Resource::StateDir(path.clone()), dir.owner, cause);
        }
    }

    fn remove_mounts_of(&mut self, owner: &str, cause: &Cause) {
        let gone: Vec<(String, PathBuf)> = self
            .mounts
            .iter()
            .filter(|(o, _)| o == owner)
            .cloned()
            .collect();
        for (o, path) in gone {
            self.mounts.remove(&(o.clone(), path.clone()));
            self.removed(Resource::Mount(path), o, cause);
        }
    }

    /// Live task processes in `cgroup`.
    pub fn pids_in(&self, cgroup: &str) -> Vec<i32> {
        self.procs
            .iter()
            .filter(|(_, p)| p.cgroup.as_deref() == Some(cgroup))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// The task ends now: its processes die together (its main process is init of its PID
    /// namespace), its mount namespace and mounts with them, and a live supervisor writes the
    /// exit record.
    pub fn end_task(&mut self, task_id: &str, status: ExitStatus, cause: &Cause) {
        let now = self.clock;
        let Some(sim) = self.sims.get_mut(task_id) else {
            return;
        };
        if sim.exited.is_some() {
            return;
        }
        sim.exited = Some((now, status));
        sim.exit_at = None;
        let cgroup = sim.cgroup.clone();
        let state_dir = sim.state_dir.clone();
        let (sup_pid, sup_start) = (sim.supervisor_pid, sim.supervisor_start_time);
        let pids: Vec<i32> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.supervisor && p.owner == task_id)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            self.remove_process(pid, cause);
        }
        self.remove_mounts_of(task_id, cause);
        debug_assert!(self.pids_in(&cgroup).is_empty());
        // A hung supervisor cannot write it: the exit is lost if it is killed.
        if self.supervisor_alive(sup_pid, sup_start)
            && !self.faults(task_id).hung
            && let Some(dir) = self.state_dirs.get_mut(&state_dir)
        {
            dir.exit_record = Some(status);
        }
    }

    /// Spends the time one supervisor call takes: the task's latency fault, or for a hung
    /// supervisor everything up to `deadline`; an error when the call does not fit.
    pub fn spend_call(&mut self, task_id: &str, deadline: Timestamp) -> Result<(), PlatformError> {
        let faults = self.faults(task_id);
        let end = self.clock + faults.latency;
        if !faults.hung && end <= deadline {
            self.advance_to(end);
            return Ok(());
        }
        self.advance_to(deadline.max(self.clock));
        Err(PlatformError::unresponsive(format!(
            "the supervisor of task {task_id} did not answer by its deadline"
        )))
    }

    /// Schedules an exit `after` now, unless an earlier one is already scheduled.
    pub fn schedule_exit(&mut self, task_id: &str, at: Timestamp, status: ExitStatus) {
        if let Some(sim) = self.sims.get_mut(task_id)
            && sim.exited.is_none()
            && sim.exit_at.is_none_or(|(t, _)| at < t)
        {
            sim.exit_at = Some((at, status));
        }
    }

    /// The task's reaction to a signal, as its script says.
    pub fn deliver_signal(&mut self, task_id: &str, signal: Signal) {
        let now = self.clock;
        let Some(sim) = self.sims.get_mut(task_id) else {
            return;
        };
        if sim.exited.is_some() {
            return;
        }
        sim.signals.push((now, signal));
        let response = if signal == Signal::SIGKILL {
            SignalResponse::DieAfter(std::time::Duration::ZERO)
        } else if signal == sim.kill_signal {
            sim.script.on_kill_signal
        } else {
            sim.script.on_other_signal
        };
        match response {
            SignalResponse::Ignore => {}
            SignalResponse::DieAfter(d) => {
                self.schedule_exit(task_id, now + d, ExitStatus::signaled(signal));
            }
            SignalResponse::ExitAfter(d, code) => {
                self.schedule_exit(task_id, now + d, ExitStatus::code(code));
            }
        }
        self.advance_to(now);
    }

    /// The next scheduled event of one task.
    pub fn next_event_of(&self, task_id: &str) -> Option<Timestamp> {
        let sim = self.sims.get(task_id)?;
        let exit = sim.exit_at.map(|(t, _)| t);
        let death = sim
            .supervisor_dies_at
            .filter(|_| self.supervisor_alive(sim.supervisor_pid, sim.supervisor_start_time));
        match (exit, death) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_due(&self, until: Timestamp) -> Option<(Timestamp, Due, String)> {
        let mut best: Option<(Timestamp, Due, String)> = None;
        for (id, sim) in &self.sims {
            let mut candidates = Vec::new();
            if let Some((t, _)) = sim.exit_at {
                candidates.push((t, Due::Exit, id.clone()));
            }
            if let Some(t) = sim.supervisor_dies_at {
                candidates.push((t, Due::SupervisorDeath, id.clone()));
            }
            for c in candidates {
                if c.0 <= until && best.as_ref().is_none_or(|b| c < *b) {
                    best = Some(c);
                }
            }
        }
        best
    }

    /// Moves the clock to `until` (never backwards), running every scheduled event on the
    /// way in time order, across all tasks.
    pub fn advance_to(&mut self, until: Timestamp) {
        let until = until.max(self.clock);
        while let Some((at, due, id)) = self.next_due(until) {
            self.clock = self.clock.max(at);
            match due {
                Due::Exit => {
                    let status = self
                        .sims
                        .get(&id)
                        .and_then(|s| s.exit_at)
                        .map(|(_, status)| status);
                    if let Some(status) = status {
                        self.end_task(&id, status, &Cause::Timeline);
                    }
                }
                Due::SupervisorDeath => {
                    let pid = self.sims.get_mut(&id).map(|sim| {
                        sim.supervisor_dies_at = None;
                        sim.supervisor_pid
                    });
                    if let Some(pid) = pid {
                        self.remove_process(pid, &Cause::Timeline);
                    }
                }
            }
        }
        self.clock = until;
    }

    /// Every resource still held, with its owner, in a stable order.
    pub fn resources(&self) -> Vec<(String, Resource)> {
        let mut out: Vec<(String, Resource)> = Vec::new();
        for (pid, p) in &self.procs {
            let r = if p.supervisor {
                Resource::Supervisor { pid: *pid }
            } else {
                Resource::Process { pid: *pid }
            };
            out.push((p.owner.clone(), r));
        }
        for (name, owner) in &self.cgroups {
            out.push((owner.clone(), Resource::Cgroup(name.clone())));
        }
        for (owner, path) in &self.mounts {
            out.push((owner.clone(), Resource::Mount(path.clone())));
        }
        for (path, dir) in &self.state_dirs {
            out.push((dir.owner.clone(), Resource::StateDir(path.clone())));
        }
        out.sort();
        out
    }
}
