//! Exec in the mock: a process of the task, in its cgroup, that dies with the task.
//!
//! What the command does is told by its name: `true` exits 0 at once, `exit N` exits N at
//! once, anything else runs until it is signalled or its task ends.

use std::sync::{Arc, Mutex, PoisonError};

use execdriver_core::{
    ExecExit, ExecRequest, ExecSession, ExecStarted, ExitStatus, PlatformError, Signal, Timestamp,
};

use crate::world::{Proc, World};
use crate::{Cause, MockSupervisorHandle, Op};

/// A running mock exec.
#[derive(Debug)]
pub(crate) struct MockExec {
    world: Arc<Mutex<World>>,
    task_id: String,
    pid: i32,
    /// Set once it has ended (by itself, by a signal, or with its task).
    exit: Mutex<Option<ExitStatus>>,
}

impl MockExec {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        if exit.is_none() && !self.world().procs.contains_key(&self.pid) {
            // Gone without an exit of its own: killed with its task.
            *exit = Some(ExitStatus::signaled(Signal::SIGKILL));
        }
        *exit
    }
}

fn done(status: ExitStatus) -> ExecExit {
    ExecExit {
        status,
        failure: None,
    }
}

impl ExecSession for MockExec {
    fn wait(&self, until: Option<Timestamp>) -> Result<Option<ExecExit>, PlatformError> {
        if let Some(status) = self.ended() {
            return Ok(Some(done(status)));
        }
        let Some(until) = until else {
            // Only its task's end can end it: run the task's timeline to that.
            let mut w = self.world();
            let Some(next) = w.next_event_of(&self.task_id) else {
                return Err(PlatformError::other(format!(
                    "wait for an exec in task {} would block forever in virtual time",
                    self.task_id
                )));
            };
            w.advance_to(next);
            drop(w);
            return self.wait(None);
        };
        {
            let mut w = self.world();
            let target = w
                .next_event_of(&self.task_id)
                .map_or(until, |n| n.min(until));
            if target > w.clock {
                w.advance_to(target);
            }
        }
        match self.ended() {
            Some(status) => Ok(Some(done(status))),
            None if self.world().clock >= until => Ok(None),
            None => self.wait(Some(until)),
        }
    }

    fn signal(&self, signal: Signal) -> Result<(), PlatformError> {
        if self.ended().is_some() {
            return Ok(());
        }
        let mut w = self.world();
        w.remove_process(self.pid, &Cause::Injected);
        *self.exit.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(ExitStatus::signaled(signal));
        Ok(())
    }
}

/// Starts `request` in the task of `sup`.
pub(crate) fn exec(
    world: &Arc<Mutex<World>>,
    sup: &MockSupervisorHandle,
    request: &ExecRequest,
    deadline: Timestamp,
) -> Result<ExecStarted, PlatformError> {
    let mut w = world.lock().unwrap_or_else(PoisonError::into_inner);
    let result = w.call(sup, deadline).and_then(|()| {
        let sim = w.live(sup)?;
        if sim.exited.is_some() {
            return Err(PlatformError::other(format!(
                "task {} has exited: there is nothing to exec in",
                sup.task_id
            )));
        }
        Ok(sim.cgroup.clone())
    });
    w.record(Op::Exec, &sup.task_id, result.is_ok());
    let cgroup = result?;
    let immediate = match (request.command.as_str(), request.args.first()) {
        ("true", _) => Some(0),
        ("exit", Some(code)) => code.parse().ok(),
        _ => None,
    };
    let (pid, _) = w.new_process(Proc {
        owner: sup.task_id.clone(),
        start_time: 0,
        supervisor: false,
        cgroup: Some(cgroup),
    });
    let exit = immediate.map(|code| {
        w.remove_process(pid, &Cause::Timeline);
        ExitStatus::code(code)
    });
    drop(w);
    Ok(ExecStarted {
        session: Box::new(MockExec {
            world: Arc::clone(world),
            task_id: sup.task_id.clone(),
            pid,
            exit: Mutex::new(exit),
        }),
        pty: None,
    })
}
