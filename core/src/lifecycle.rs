//! The task lifecycle as a pure state machine.
//!
//! ```text
//!   start()                                    recover()
//!      |                                           |
//!   Created --Spawned--> Running --KillRequested--> Killing --KillTimerFired--> (ForceKill)
//!      |                  |   ^                        |
//!      |              TaskExited \--Reattached-- Recovering --FoundExitRecord--+
//!   SpawnFailed           |                            |                       |
//!      |                  v                     SupervisorLost                 |
//!      +------------> Exited <--CleanupFinished-- ReattachFailed              |
//!                         ^-------------------------------------------------------+
//! ```
//!
//! [`step`] lists every legal transition in one `match`; anything else is a
//! [`TransitionError`] and the caller keeps its state. Effects are data: the driver executes
//! them through the platform, and tests can check them without any platform at all.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Validated; its supervisor is being spawned.
    Created,
    /// The task runs under a supervisor we are connected to.
    Running,
    /// The kill signal was sent; waiting for the exit or the kill timer.
    Killing,
    /// Final: the exit result has been delivered.
    Exited,
    /// A new agent is reconnecting to a supervisor from a handle id.
    Recovering,
    /// The supervisor is gone without a result: cleaning up by cgroup.
    ReattachFailed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How a task ended, as the platform saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + N when killed by signal N (the shell's convention).
    pub exit_code: i32,
    /// The signal that killed the task, if one did.
    pub signal: Option<Signal>,
    /// Whether the kernel OOM-killed a process of the task.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// A normal exit with `code`.
    pub fn code(exit_code: i32) -> Self {
        Self {
            exit_code,
            signal: None,
            oom_killed: false,
        }
    }

    /// Death by `signal`.
    pub fn signaled(signal: Signal) -> Self {
        Self {
            exit_code: 128 + signal.number(),
            signal: Some(signal),
            oom_killed: false,
        }
    }
}

/// The result of a task, delivered exactly once per task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaitResult {
    /// The exit code, 128 + N when killed by signal N, or -1 when it could not be known.
    pub exit_code: i32,
    /// The signal that killed the task, if one did.
    pub signal: Option<Signal>,
    /// Whether the kernel OOM-killed a process of the task.
    pub oom_killed: bool,
    /// What went wrong in the driver, if anything did.
    pub error: Option<String>,
}

impl WaitResult {
    /// The result of a driver failure, with no exit code known.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            exit_code: -1,
            signal: None,
            oom_killed: false,
            error: Some(error.into()),
        }
    }

    /// Whether the task exited 0 and nothing went wrong.
    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none() && self.error.is_none()
    }
}

impl From<ExitStatus> for WaitResult {
    fn from(s: ExitStatus) -> Self {
        Self {
            exit_code: s.exit_code,
            signal: s.signal,
            oom_killed: s.oom_killed,
            error: None,
        }
    }
}

/// What the cleanup after an exit must cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CleanupScope {
    /// The supervisor is alive: it tears down the cgroup and state and exits.
    Supervised,
    /// No supervisor: kill it if it is still the recorded process, kill everything in the
    /// task's cgroup, destroy the cgroup, remove the state. Every step is attempted.
    Orphaned,
}

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The supervisor and task were started.
    Spawned,
    /// Starting failed; the platform left nothing behind.
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// Reconnected to a live supervisor.
    Reattached,
    /// The supervisor is gone but recorded how the task ended.
    FoundExitRecord(ExitStatus),
    /// The supervisor cannot be reached and left no result.
    SupervisorLost {
        /// What was observed.
        reason: String,
    },
    /// The orphan cleanup has run.
    CleanupFinished {
        /// Why the cleanup was needed.
        reason: String,
        /// Each cleanup step that failed.
        failures: Vec<String>,
    },
    /// Stop the task: the graceful signal, then force after the timeout.
    KillRequested {
        /// The graceful signal.
        signal: Signal,
        /// How long the task is given.
        timeout: Duration,
    },
    /// Deliver a signal to the task.
    SignalRequested(Signal),
    /// The kill timeout elapsed without an exit.
    KillTimerFired,
    /// The task exited.
    TaskExited(ExitStatus),
}

/// An [`Event`] without its data: for errors and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`Event::Spawned`].
    Spawned,
    /// [`Event::SpawnFailed`].
    SpawnFailed,
    /// [`Event::Reattached`].
    Reattached,
    /// [`Event::FoundExitRecord`].
    FoundExitRecord,
    /// [`Event::SupervisorLost`].
    SupervisorLost,
    /// [`Event::CleanupFinished`].
    CleanupFinished,
    /// [`Event::KillRequested`].
    KillRequested,
    /// [`Event::SignalRequested`].
    SignalRequested,
    /// [`Event::KillTimerFired`].
    KillTimerFired,
    /// [`Event::TaskExited`].
    TaskExited,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Spawned => EventKind::Spawned,
            Event::SpawnFailed { .. } => EventKind::SpawnFailed,
            Event::Reattached => EventKind::Reattached,
            Event::FoundExitRecord(_) => EventKind::FoundExitRecord,
            Event::SupervisorLost { .. } => EventKind::SupervisorLost,
            Event::CleanupFinished { .. } => EventKind::CleanupFinished,
            Event::KillRequested { .. } => EventKind::KillRequested,
            Event::SignalRequested(_) => EventKind::SignalRequested,
            Event::KillTimerFired => EventKind::KillTimerFired,
            Event::TaskExited(_) => EventKind::TaskExited,
        }
    }
}

/// Work the driver must do after a transition, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Spawn the supervisor and, through it, the task.
    SpawnSupervisor,
    /// Connect to the supervisor named in the handle id.
    ConnectSupervisor,
    /// Tell the lifecycle hooks the task is running.
    NotifyRunning,
    /// Send a signal to the task.
    SendSignal(Signal),
    /// Start the kill timer.
    ArmKillTimer(Duration),
    /// Kill everything of the task now.
    ForceKill,
    /// Release the task's resources.
    Cleanup(CleanupScope),
    /// Record the result, wake waiters, tell the hooks. Happens once per task.
    DeliverExit(WaitResult),
}

/// An event that is not legal in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} is not allowed in state {state}")]
pub struct TransitionError {
    /// The state, which is left unchanged.
    pub state: State,
    /// The refused event.
    pub event: EventKind,
}

/// Every legal transition as data: `(from, event, to)`. This is the specification that
/// [`step`]'s `match` implements; the tests and the fuzzer check `step` against it, so the
/// two are written independently and must agree.
pub const TRANSITIONS: [(State, EventKind, State); 15] = {
    use EventKind as K;
    use State as S;
    [
        (S::Created, K::Spawned, S::Running),
        (S::Created, K::SpawnFailed, S::Exited),
        (S::Recovering, K::Reattached, S::Running),
        (S::Recovering, K::FoundExitRecord, S::Exited),
        (S::Recovering, K::SupervisorLost, S::ReattachFailed),
        (S::Running, K::SupervisorLost, S::ReattachFailed),
        (S::Killing, K::SupervisorLost, S::ReattachFailed),
        (S::ReattachFailed, K::CleanupFinished, S::Exited),
        (S::Running, K::KillRequested, S::Killing),
        (S::Killing, K::KillRequested, S::Killing),
        (S::Running, K::SignalRequested, S::Running),
        (S::Killing, K::SignalRequested, S::Killing),
        (S::Killing, K::KillTimerFired, S::Killing),
        (S::Running, K::TaskExited, S::Exited),
        (S::Killing, K::TaskExited, S::Exited),
    ]
};

/// The state [`TRANSITIONS`] says `kind` leads to from `state`, `None` if it is illegal.
pub fn legal_next(state: State, kind: EventKind) -> Option<State> {
    TRANSITIONS
        .iter()
        .find(|(from, event, _)| *from == state && *event == kind)
        .map(|(_, _, to)| *to)
}

/// The state and effects of a task being started.
pub fn start() -> (State, Vec<Effect>) {
    (State::Created, vec![Effect::SpawnSupervisor])
}

/// The state and effects of a task being reattached from a handle id.
pub fn recover() -> (State, Vec<Effect>) {
    (State::Recovering, vec![Effect::ConnectSupervisor])
}

/// The one transition function: the new state and the effects to run, or an error.
pub fn step(state: State, event: Event) -> Result<(State, Vec<Effect>), TransitionError> {
    use Effect as E;
    use State as S;
    let kind = event.kind();
    let next = match (state, event) {
        (S::Created, Event::Spawned) | (S::Recovering, Event::Reattached) => {
            (S::Running, vec![E::NotifyRunning])
        }
        (S::Created, Event::SpawnFailed { error }) => {
            (S::Exited, vec![E::DeliverExit(WaitResult::failed(error))])
        }
        (S::Recovering, Event::FoundExitRecord(status)) => (
            S::Exited,
            vec![
                E::Cleanup(CleanupScope::Orphaned),
                E::DeliverExit(status.into()),
            ],
        ),
        (S::Recovering | S::Running | S::Killing, Event::SupervisorLost { .. }) => {
            (S::ReattachFailed, vec![E::Cleanup(CleanupScope::Orphaned)])
        }
        (S::ReattachFailed, Event::CleanupFinished { reason, failures }) => {
            let error = if failures.is_empty() {
                reason
            } else {
                format!("{reason}; cleanup failed: {}", failures.join("; "))
            };
            (S::Exited, vec![E::DeliverExit(WaitResult::failed(error))])
        }
        (S::Running, Event::KillRequested { signal, timeout }) => (
            S::Killing,
            vec![E::SendSignal(signal), E::ArmKillTimer(timeout)],
        ),
        // A second kill while one is under way joins it rather than restarting the timer.
        (S::Killing, Event::KillRequested { .. }) => (S::Killing, vec![]),
        (S::Running | S::Killing, Event::SignalRequested(signal)) => {
            (state, vec![E::SendSignal(signal)])
        }
        (S::Killing, Event::KillTimerFired) => (S::Killing, vec![E::ForceKill]),
        (S::Running | S::Killing, Event::TaskExited(status)) => (
            S::Exited,
            vec![
                E::Cleanup(CleanupScope::Supervised),
                E::DeliverExit(status.into()),
            ],
        ),
        (state, _) => return Err(TransitionError { state, event: kind }),
    };
    Ok(next)
}

/// The kill timeout a task gets: what it asked for, capped at the driver's maximum.
pub fn kill_timeout(desired: Duration, max: Duration) -> Duration {
    desired.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [State; 6] = [
        State::Created,
        State::Running,
        State::Killing,
        State::Exited,
        State::Recovering,
        State::ReattachFailed,
    ];

    fn all_events() -> Vec<Event> {
        vec![
            Event::Spawned,
            Event::SpawnFailed { error: "e".into() },
            Event::Reattached,
            Event::FoundExitRecord(ExitStatus::code(3)),
            Event::SupervisorLost { reason: "r".into() },
            Event::CleanupFinished {
                reason: "r".into(),
                failures: vec![],
            },
            Event::KillRequested {
                signal: Signal::SIGINT,
                timeout: Duration::from_secs(1),
            },
            Event::SignalRequested(Signal::SIGUSR1),
            Event::KillTimerFired,
            Event::TaskExited(ExitStatus::code(0)),
        ]
    }

    #[test]
    fn every_pair_matches_the_table() {
        for state in ALL_STATES {
            for event in all_events() {
                let kind = event.kind();
                match (step(state, event), legal_next(state, kind)) {
                    (Ok((next, _)), Some(want)) => assert_eq!(next, want, "{state:?} + {kind:?}"),
                    (Err(e), None) => assert_eq!(e, TransitionError { state, event: kind }),
                    (got, want) => panic!("{state:?} + {kind:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn exited_is_final() {
        for event in all_events() {
            assert!(step(State::Exited, event).is_err());
        }
    }

    #[test]
    fn every_way_into_exited_delivers_once() {
        for state in ALL_STATES {
            for event in all_events() {
                if let Ok((next, effects)) = step(state, event) {
                    let delivers = effects
                        .iter()
                        .filter(|e| matches!(e, Effect::DeliverExit(_)))
                        .count();
                    assert_eq!(
                        delivers,
                        usize::from(next == State::Exited),
                        "{state:?} -> {next:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn kill_sends_then_arms() {
        let (s, e) = step(
            State::Running,
            Event::KillRequested {
                signal: Signal::SIGTERM,
                timeout: Duration::from_secs(2),
            },
        )
        .expect("legal");
        assert_eq!(s, State::Killing);
        assert_eq!(
            e,
            vec![
                Effect::SendSignal(Signal::SIGTERM),
                Effect::ArmKillTimer(Duration::from_secs(2))
            ]
        );
        assert_eq!(
            step(State::Killing, Event::KillTimerFired).map(|r| r.1),
            Ok(vec![Effect::ForceKill])
        );
    }

    #[test]
    fn cleanup_failures_are_all_reported() {
        let (_, effects) = step(
            State::ReattachFailed,
            Event::CleanupFinished {
                reason: "supervisor gone".into(),
                failures: vec!["a".into(), "b".into()],
            },
        )
        .expect("legal");
        let Some(Effect::DeliverExit(r)) = effects.first() else {
            panic!("{effects:?}")
        };
        assert_eq!(
            r.error.as_deref(),
            Some("supervisor gone; cleanup failed: a; b")
        );
    }

    #[test]
    fn kill_timeout_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(kill_timeout(s(5), s(30)), s(5));
        assert_eq!(kill_timeout(s(60), s(30)), s(30));
    }

    #[test]
    fn signaled_exit_uses_shell_convention() {
        assert_eq!(ExitStatus::signaled(Signal::SIGKILL).exit_code, 137);
    }
}
