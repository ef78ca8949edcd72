//! How a mock task behaves ([`TaskScript`]) and how the mock platform misbehaves ([`Faults`]).
//!
//! A script is fixed when the task is spawned: it is the program's behaviour. Faults are the
//! platform's, and can be switched at any time, for example after an agent restart.

use std::time::Duration;

use execdriver_core::{ExitStatus, Signal};

/// How a task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Death by a signal.
    Signal(Signal),
    /// The kernel's OOM killer: SIGKILL with the OOM flag.
    Oom,
}

impl Exit {
    /// The status the platform reports for this ending.
    pub fn status(self) -> ExitStatus {
        match self {
            Exit::Code(code) => ExitStatus::code(code),
            Exit::Signal(signal) => ExitStatus::signaled(signal),
            Exit::Oom => ExitStatus {
                oom_killed: true,
                ..ExitStatus::signaled(Signal::SIGKILL)
            },
        }
    }
}

/// What a task does with a signal it can catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalResponse {
    /// Nothing: the signal is ignored or handled without exiting.
    Ignore,
    /// Dies of the signal after this much virtual time (zero: at once).
    DieAfter(Duration),
    /// Handles the signal and exits with this code after this much virtual time.
    ExitAfter(Duration, i32),
}

/// What a force kill through the supervisor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForceKill {
    /// Every process of the task dies at once.
    Works,
    /// The supervisor reports an error and nothing dies.
    Fails,
    /// The supervisor reports success but nothing dies (a stuck supervisor); only a kill by
    /// cgroup ends the task.
    Ineffective,
}

/// The scripted behaviour of one task, set per task id before it is spawned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskScript {
    /// When, after its spawn, the task ends on its own, and how; `None`: it never does.
    pub exit_after: Option<(Duration, Exit)>,
    /// The response to the kill signal named in the task's spec.
    pub on_kill_signal: SignalResponse,
    /// The response to every other catchable signal.
    pub on_other_signal: SignalResponse,
    /// When, after the spawn, the supervisor process dies; `None`: it lives.
    pub supervisor_dies_after: Option<Duration>,
    /// What a force kill does.
    pub force_kill: ForceKill,
    /// Processes the task forks besides its main one (all in its cgroup and PID namespace,
    /// so they die with it).
    pub children: u32,
}

impl Default for TaskScript {
    /// A task that runs until it is killed and dies of its kill signal at once.
    fn default() -> Self {
        Self {
            exit_after: None,
            on_kill_signal: SignalResponse::DieAfter(Duration::ZERO),
            on_other_signal: SignalResponse::Ignore,
            supervisor_dies_after: None,
            force_kill: ForceKill::Works,
            children: 0,
        }
    }
}

impl TaskScript {
    /// A task that ends on its own `after` its spawn.
    pub fn exits_after(after: Duration, exit: Exit) -> Self {
        Self {
            exit_after: Some((after, exit)),
            ..Self::default()
        }
    }

    /// This script, with the kill signal ignored.
    pub fn ignoring_kill_signal(self) -> Self {
        Self {
            on_kill_signal: SignalResponse::Ignore,
            ..self
        }
    }

    /// This script, with the supervisor dying `after` the spawn.
    pub fn supervisor_dies_after(self, after: Duration) -> Self {
        Self {
            supervisor_dies_after: Some(after),
            ..self
        }
    }

    /// This script, with `force_kill` as the force kill's behaviour.
    pub fn with_force_kill(self, force_kill: ForceKill) -> Self {
        Self { force_kill, ..self }
    }

    /// This script, with `children` extra processes.
    pub fn with_children(self, children: u32) -> Self {
        Self { children, ..self }
    }
}

/// What `reattach` does, besides finding what is really there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReattachFault {
    /// Reattach reports what it finds.
    #[default]
    None,
    /// The supervisor cannot be reached even if it lives: `Reattach::Gone`.
    Unreachable,
    /// The platform refuses the handle id: `PlatformError::Refused`, nothing touched.
    Refused,
}

/// Platform failures for one task id, switchable at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Faults {
    /// `spawn` fails (and leaves nothing behind).
    pub spawn_fails: bool,
    /// How `reattach` fails.
    pub reattach: ReattachFault,
    /// `signal` fails without reaching the task.
    pub signal_fails: bool,
    /// `wait` fails at once, without waiting (a broken connection to a live supervisor).
    pub wait_fails: bool,
    /// `stats` fails.
    pub stats_fails: bool,
    /// `release` fails and releases nothing.
    pub release_fails: bool,
    /// The orphan step `kill_supervisor` fails.
    pub kill_supervisor_fails: bool,
    /// The orphan step `kill_cgroup` fails.
    pub kill_cgroup_fails: bool,
    /// The orphan step `destroy_cgroup` fails.
    pub destroy_cgroup_fails: bool,
    /// The orphan step `remove_state` fails.
    pub remove_state_fails: bool,
    /// The supervisor is hung (SIGSTOPped, deadlocked): its process lives, but no call to it
    /// is answered; each one takes until its deadline and is unresponsive. SIGKILL still
    /// ends it, and the exit of its task is not recorded while it hangs.
    pub hung: bool,
    /// How long each call to the supervisor takes (a loaded node); one that does not fit
    /// before its deadline is unresponsive.
    pub latency: Duration,
}

impl Faults {
    /// Whether any cleanup step (release or an orphan step) is set to fail.
    pub fn any_cleanup_fails(&self) -> bool {
        self.release_fails
            || self.kill_supervisor_fails
            || self.kill_cgroup_fails
            || self.destroy_cgroup_fails
            || self.remove_state_fails
    }

    /// Whether any orphan cleanup step is set to fail.
    pub fn any_orphan_step_fails(&self) -> bool {
        self.kill_supervisor_fails
            || self.kill_cgroup_fails
            || self.destroy_cgroup_fails
            || self.remove_state_fails
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_is_a_sigkill_with_the_flag() {
        let s = Exit::Oom.status();
        assert_eq!(s.exit_code, 137);
        assert_eq!(s.signal, Some(Signal::SIGKILL));
        assert!(s.oom_killed);
        assert!(!Exit::Signal(Signal::SIGKILL).status().oom_killed);
    }
}
