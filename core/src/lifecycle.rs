//! The task lifecycle as a pure state machine that owns the kill's time.
//!
//! ```text
//!             recover                                   start (after the spawn)
//!                |                                          |
//!           Recovering --Reattached---------------------> Running --KillRequested--> Killing
//!                |                                       |    |                      |  |
//!   FoundExitRecord / SupervisorLost          TaskExited |    | SupervisorLost       |  | Timeout (grace over)
//!                |                                       v    v                      |  | / KillSignalFailed
//!                +-------------------------------> CleaningUp <---- TaskExited ------+  v
//!                                                    |   ^  ^----- TaskExited ------ Forcing
//!                                   CleanupFinished  |   |  SupervisorLost / SupervisorUnresponsive /
//!                                                    v   |  ForceKillFailed / Timeout (force over)
//!                                                  Exited  ReleaseFailed (falls back to the
//!                                                          cleanup by cgroup)
//! ```
//!
//! In the manner of quinn-proto, [`Lifecycle`] does no I/O and has no clock: it is told the
//! time with every event, says through [`Lifecycle::poll_timeout`] when it next needs to be
//! woken, and answers with [`Effect`]s that carry the deadline each platform call must keep.
//! The driver executes the effects, feeds their outcomes back as events, and sleeps (in a
//! platform wait) until the deadline. So the kill that runs on Linux and the one the property
//! tests run on the mock's virtual clock are the same code, and the bound on a kill is a
//! property of this file: every deadline of a kill lies within its kill timeout plus
//! [`Timeouts::overrun`].
//!
//! [`TRANSITIONS`] lists every legal transition as data; anything else is a
//! [`TransitionError`] and the machine keeps its state.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::outcome::{CleanupFailure, ExitStatus, TaskError, TaskErrorKind, WaitResult};
use crate::platform::Timestamp;
use crate::signal::Signal;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// A new agent is reconnecting to a supervisor from a handle id.
    Recovering,
    /// The task runs under a supervisor we are connected to.
    Running,
    /// The kill signal was sent; the task has its grace to exit.
    Killing,
    /// The grace is over: everything of the task was force-killed through the supervisor.
    Forcing,
    /// The task is over (or given up on): its cgroup and state are being removed.
    CleaningUp,
    /// Final: the exit result has been delivered.
    Exited,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The durations the machine gives each step of a kill and of a cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Timeouts {
    /// How long a supervisor has to answer one request of a kill (the release after the
    /// exit; the kill signal at least this, up to the grace); one that does not is
    /// unresponsive. The force kill has `force` instead.
    pub answer: Duration,
    /// How long a force kill through the supervisor has to end the task.
    pub force: Duration,
    /// How far past its kill timeout a kill may run in all: the force kill, then, when the
    /// supervisor failed, the cleanup by cgroup.
    pub overrun: Duration,
    /// How long a signal, stats or release request outside a kill may take.
    pub call: Duration,
    /// How long the cleanup by cgroup of a lost task may take outside a kill.
    pub cleanup: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            answer: Duration::from_millis(500),
            force: Duration::from_secs(1),
            overrun: Duration::from_secs(2),
            call: Duration::from_secs(5),
            cleanup: Duration::from_secs(10),
        }
    }
}

impl Timeouts {
    /// The durations in effect: `answer <= force <= overrun`, so that every deadline of a kill
    /// stays within its bound however they were configured.
    fn normalized(self) -> Self {
        let overrun = self.overrun;
        let force = self.force.min(overrun);
        let answer = self.answer.min(force);
        Self {
            answer,
            force,
            overrun,
            ..self
        }
    }
}

/// Something that happened to a task, or the outcome of an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Reconnected to a live supervisor.
    Reattached,
    /// The supervisor is gone but recorded how the task ended.
    FoundExitRecord(ExitStatus),
    /// The supervisor is dead and left no result.
    SupervisorLost {
        /// What was observed.
        reason: String,
    },
    /// The supervisor did not answer in time during a kill: the driver takes the kill over.
    SupervisorUnresponsive {
        /// What was observed.
        reason: String,
    },
    /// Stop the task: the graceful signal, then force after the timeout.
    KillRequested {
        /// The graceful signal.
        signal: Signal,
        /// How long the task is given.
        timeout: Duration,
    },
    /// The supervisor answered the kill request with an error: the signal did not reach
    /// the task, so there is no point waiting out the grace.
    KillSignalFailed {
        /// The supervisor's error.
        error: String,
    },
    /// Deliver a signal to the task.
    SignalRequested(Signal),
    /// The machine's deadline ([`Lifecycle::poll_timeout`]) has passed.
    Timeout,
    /// The force kill through the supervisor failed.
    ForceKillFailed {
        /// Why.
        error: String,
    },
    /// The task exited.
    TaskExited(ExitStatus),
    /// The supervisor could not release the task: clean up by cgroup instead.
    ReleaseFailed(CleanupFailure),
    /// The cleanup has run.
    CleanupFinished {
        /// Each cleanup step that failed.
        failures: Vec<CleanupFailure>,
    },
}

/// An [`Event`] without its data: for errors and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`Event::Reattached`].
    Reattached,
    /// [`Event::FoundExitRecord`].
    FoundExitRecord,
    /// [`Event::SupervisorLost`].
    SupervisorLost,
    /// [`Event::SupervisorUnresponsive`].
    SupervisorUnresponsive,
    /// [`Event::KillRequested`].
    KillRequested,
    /// [`Event::KillSignalFailed`].
    KillSignalFailed,
    /// [`Event::SignalRequested`].
    SignalRequested,
    /// [`Event::Timeout`].
    Timeout,
    /// [`Event::ForceKillFailed`].
    ForceKillFailed,
    /// [`Event::TaskExited`].
    TaskExited,
    /// [`Event::ReleaseFailed`].
    ReleaseFailed,
    /// [`Event::CleanupFinished`].
    CleanupFinished,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Reattached => EventKind::Reattached,
            Event::FoundExitRecord(_) => EventKind::FoundExitRecord,
            Event::SupervisorLost { .. } => EventKind::SupervisorLost,
            Event::SupervisorUnresponsive { .. } => EventKind::SupervisorUnresponsive,
            Event::KillRequested { .. } => EventKind::KillRequested,
            Event::KillSignalFailed { .. } => EventKind::KillSignalFailed,
            Event::SignalRequested(_) => EventKind::SignalRequested,
            Event::Timeout => EventKind::Timeout,
            Event::ForceKillFailed { .. } => EventKind::ForceKillFailed,
            Event::TaskExited(_) => EventKind::TaskExited,
            Event::ReleaseFailed(_) => EventKind::ReleaseFailed,
            Event::CleanupFinished { .. } => EventKind::CleanupFinished,
        }
    }
}

/// Work the driver must do after a transition, in order. Each platform call carries the
/// deadline it must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell the lifecycle hooks the task is running.
    NotifyRunning,
    /// Send a signal to the task.
    SendSignal {
        /// The signal.
        signal: Signal,
        /// When the call must have returned.
        deadline: Timestamp,
    },
    /// Send the kill signal, and have the supervisor force the kill itself `grace` later.
    BeginKill {
        /// The graceful signal.
        signal: Signal,
        /// How long the task is given.
        grace: Duration,
        /// When the call must have returned.
        deadline: Timestamp,
    },
    /// Kill everything of the task now, through the supervisor.
    ForceKill {
        /// When the call must have returned.
        deadline: Timestamp,
    },
    /// Have the live supervisor remove the task's cgroup and state, then exit; the outcome
    /// is [`Event::CleanupFinished`] or [`Event::ReleaseFailed`].
    Release {
        /// When the call must have returned.
        deadline: Timestamp,
    },
    /// Clean up without the supervisor, by the records: kill the supervisor if it is still
    /// the recorded process, kill and remove the task's cgroup, remove its state. Every step
    /// is attempted; the outcome is [`Event::CleanupFinished`].
    OrphanCleanup {
        /// When every step must be done.
        deadline: Timestamp,
    },
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
/// [`Lifecycle::handle`] implements; the tests and the fuzzer check the machine against it, so
/// the two are written independently and must agree. A [`Event::Timeout`] before the
/// machine's deadline is a wake-up that changes nothing.
pub const TRANSITIONS: [(State, EventKind, State); 23] = {
    use EventKind as K;
    use State as S;
    [
        (S::Recovering, K::Reattached, S::Running),
        (S::Recovering, K::FoundExitRecord, S::CleaningUp),
        (S::Recovering, K::SupervisorLost, S::CleaningUp),
        (S::Running, K::SupervisorLost, S::CleaningUp),
        (S::Killing, K::SupervisorLost, S::CleaningUp),
        (S::Forcing, K::SupervisorLost, S::CleaningUp),
        (S::Killing, K::SupervisorUnresponsive, S::CleaningUp),
        (S::Forcing, K::SupervisorUnresponsive, S::CleaningUp),
        (S::Running, K::KillRequested, S::Killing),
        (S::Killing, K::KillRequested, S::Killing),
        (S::Forcing, K::KillRequested, S::Forcing),
        (S::Killing, K::KillSignalFailed, S::Forcing),
        (S::Running, K::SignalRequested, S::Running),
        (S::Killing, K::SignalRequested, S::Killing),
        (S::Forcing, K::SignalRequested, S::Forcing),
        (S::Killing, K::Timeout, S::Forcing),
        (S::Forcing, K::Timeout, S::CleaningUp),
        (S::Forcing, K::ForceKillFailed, S::CleaningUp),
        (S::Running, K::TaskExited, S::CleaningUp),
        (S::Killing, K::TaskExited, S::CleaningUp),
        (S::Forcing, K::TaskExited, S::CleaningUp),
        (S::CleaningUp, K::ReleaseFailed, S::CleaningUp),
        (S::CleaningUp, K::CleanupFinished, S::Exited),
    ]
};

/// The state [`TRANSITIONS`] says `kind` leads to from `state`, `None` if it is illegal.
pub fn legal_next(state: State, kind: EventKind) -> Option<State> {
    TRANSITIONS
        .iter()
        .find(|(from, event, _)| *from == state && *event == kind)
        .map(|(_, _, to)| *to)
}

/// The kill timeout a task gets: what it asked for, capped at the driver's maximum.
pub fn kill_timeout(desired: Duration, max: Duration) -> Duration {
    desired.min(max)
}

/// The deadlines of a kill under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KillClock {
    /// When the grace ends and the force kill is due.
    grace_ends: Timestamp,
    /// When the force kill has had its time and the cgroup cleanup takes over.
    force_ends: Timestamp,
    /// The latest any step of this kill may end: the kill timeout plus the overrun.
    bound: Timestamp,
}

/// How a task ended, before its cleanup has run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Exited(ExitStatus),
    Failed(TaskErrorKind, String),
}

/// A cleanup under way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cleaning {
    outcome: Outcome,
    /// When the cleanup must be done.
    deadline: Timestamp,
    /// The release failed and the cleanup by cgroup runs instead: reported only when that
    /// fails too, to explain its failures.
    release_failure: Option<CleanupFailure>,
}

/// The lifecycle of one task: its state, and the deadlines it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    state: State,
    timeouts: Timeouts,
    kill: Option<KillClock>,
    cleaning: Option<Cleaning>,
}

impl Lifecycle {
    /// A task whose supervisor was just spawned, and the effects of its start.
    pub fn running(timeouts: Timeouts) -> (Self, Vec<Effect>) {
        (
            Self::new(State::Running, timeouts),
            vec![Effect::NotifyRunning],
        )
    }

    /// A task being reattached from a handle id.
    pub fn recovering(timeouts: Timeouts) -> Self {
        Self::new(State::Recovering, timeouts)
    }

    fn new(state: State, timeouts: Timeouts) -> Self {
        Self {
            state,
            timeouts: timeouts.normalized(),
            kill: None,
            cleaning: None,
        }
    }

    /// Where the task is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the result has been delivered or is being worked out by whoever applied the
    /// event that ended the task.
    pub fn is_finishing(&self) -> bool {
        matches!(self.state, State::CleaningUp | State::Exited)
    }

    /// When the machine must be woken with [`Event::Timeout`] if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.state, self.kill) {
            (State::Killing, Some(kill)) => Some(kill.grace_ends),
            (State::Forcing, Some(kill)) => Some(kill.force_ends),
            _ => None,
        }
    }

    /// The latest a kill under way may end, if one is.
    pub fn kill_bound(&self) -> Option<Timestamp> {
        self.kill.map(|k| k.bound)
    }

    /// Feeds `event`, which happened at `now`, into the machine: the effects to run, in
    /// order, or an error that leaves the machine unchanged.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Result<Vec<Effect>, TransitionError> {
        use State as S;
        let kind = event.kind();
        let refuse = TransitionError {
            state: self.state,
            event: kind,
        };
        let t = self.timeouts;
        let effects = match (self.state, event) {
            (S::Recovering, Event::Reattached) => {
                self.state = S::Running;
                vec![Effect::NotifyRunning]
            }
            (S::Recovering, Event::FoundExitRecord(status)) => {
                self.orphan_cleanup(now, Outcome::Exited(status), None)
            }
            (
                S::Recovering | S::Running | S::Killing | S::Forcing,
                Event::SupervisorLost { reason },
            ) => {
                let outcome = Outcome::Failed(TaskErrorKind::SupervisorLost, reason);
                self.orphan_cleanup(now, outcome, None)
            }
            (S::Killing | S::Forcing, Event::SupervisorUnresponsive { reason }) => {
                let message = format!("{reason}; the driver killed the task by its cgroup");
                let outcome = Outcome::Failed(TaskErrorKind::SupervisorUnresponsive, message);
                self.orphan_cleanup(now, outcome, None)
            }
            (S::Running, Event::KillRequested { signal, timeout }) => {
                let grace_ends = now + timeout;
                self.kill = Some(KillClock {
                    grace_ends,
                    force_ends: grace_ends + t.force,
                    bound: grace_ends + t.overrun,
                });
                self.state = S::Killing;
                vec![Effect::BeginKill {
                    signal,
                    grace: timeout,
                    deadline: now + begin_kill_answer(t, timeout),
                }]
            }
            // A second kill while one is under way joins it rather than restarting the clock.
            (S::Killing | S::Forcing, Event::KillRequested { .. }) => vec![],
            (S::Killing, Event::KillSignalFailed { .. }) => self.force(now),
            (S::Running | S::Killing | S::Forcing, Event::SignalRequested(signal)) => {
                vec![Effect::SendSignal {
                    signal,
                    deadline: now + t.call,
                }]
            }
            (S::Killing | S::Forcing, Event::Timeout) => match self.poll_timeout() {
                Some(due) if now >= due => {
                    if self.state == S::Killing {
                        self.force(now)
                    } else {
                        let message = format!(
                            "the task did not exit within {:?} of a force kill through its \
                             supervisor; the driver killed it by its cgroup",
                            t.force
                        );
                        self.orphan_cleanup(
                            now,
                            Outcome::Failed(TaskErrorKind::ForceKillFailed, message),
                            None,
                        )
                    }
                }
                // Woken early: nothing is due yet.
                _ => vec![],
            },
            (S::Forcing, Event::ForceKillFailed { error }) => {
                let message = format!(
                    "force kill through the supervisor failed: {error}; the driver killed the task by its cgroup"
                );
                self.orphan_cleanup(
                    now,
                    Outcome::Failed(TaskErrorKind::ForceKillFailed, message),
                    None,
                )
            }
            (S::Running | S::Killing | S::Forcing, Event::TaskExited(status)) => {
                let deadline = match self.kill {
                    Some(kill) => (now + t.answer).min(kill.bound.max(now)),
                    None => now + t.call,
                };
                self.cleaning = Some(Cleaning {
                    outcome: Outcome::Exited(status),
                    deadline,
                    release_failure: None,
                });
                self.state = S::CleaningUp;
                vec![Effect::Release { deadline }]
            }
            (S::CleaningUp, Event::ReleaseFailed(failure)) => {
                let Some(cleaning) = self.cleaning.take() else {
                    return Err(refuse);
                };
                if cleaning.release_failure.is_some() {
                    // The fallback runs already (a release failure cannot come twice through
                    // the driver): nothing more to start.
                    self.cleaning = Some(cleaning);
                    vec![]
                } else {
                    self.orphan_cleanup(now, cleaning.outcome, Some(failure))
                }
            }
            (S::CleaningUp, Event::CleanupFinished { failures }) => {
                let Some(cleaning) = self.cleaning.take() else {
                    return Err(refuse);
                };
                self.state = S::Exited;
                vec![Effect::DeliverExit(finish(cleaning, failures))]
            }
            _ => return Err(refuse),
        };
        Ok(effects)
    }

    /// Enters [`State::Forcing`]: the force kill, with the rest of the force window to work.
    fn force(&mut self, now: Timestamp) -> Vec<Effect> {
        self.state = State::Forcing;
        if let Some(kill) = self.kill.as_mut() {
            // A kill signal that failed before the grace ended moves the force kill forward;
            // its window then starts now, still within the kill's bound.
            if now < kill.grace_ends {
                kill.grace_ends = now;
                kill.force_ends = (now + self.timeouts.force).min(kill.bound);
            }
        }
        // The supervisor's force kill does its work before it answers, so the request gets the
        // whole force window rather than one answer's time: under load, emptying a cgroup can
        // take longer than an idle supervisor takes to reply.
        let answer_by = now + self.timeouts.answer;
        let deadline = self
            .kill
            .map_or(answer_by, |kill| kill.force_ends.max(answer_by));
        vec![Effect::ForceKill { deadline }]
    }

    /// Enters [`State::CleaningUp`] without the supervisor.
    fn orphan_cleanup(
        &mut self,
        now: Timestamp,
        outcome: Outcome,
        release_failure: Option<CleanupFailure>,
    ) -> Vec<Effect> {
        let deadline = match (self.kill, &self.cleaning) {
            // Within the kill's bound, but never without time for the steps themselves.
            (Some(kill), _) => kill.bound.max(now + self.timeouts.answer),
            (None, _) => now + self.timeouts.cleanup,
        };
        self.cleaning = Some(Cleaning {
            outcome,
            deadline,
            release_failure,
        });
        self.state = State::CleaningUp;
        vec![Effect::OrphanCleanup { deadline }]
    }
}

/// How long a supervisor has to acknowledge a kill signal: the grace (it ends there anyway),
/// within `answer` and `call`. A supervisor that is alive but slow (a loaded node: dozens of
/// kills at once on two CPUs took over 0.5 s to be answered) then still sends the signal
/// itself, instead of being called unresponsive and its task reported a failure.
fn begin_kill_answer(t: Timeouts, grace: Duration) -> Duration {
    grace.min(t.call).max(t.answer)
}

/// The result of a task whose cleanup has run.
fn finish(cleaning: Cleaning, failures: Vec<CleanupFailure>) -> WaitResult {
    // A release failure only matters when the fallback could not do the whole job.
    let failures: Vec<CleanupFailure> = if failures.is_empty() {
        failures
    } else {
        cleaning
            .release_failure
            .into_iter()
            .chain(failures)
            .collect()
    };
    match cleaning.outcome {
        Outcome::Exited(status) => {
            let mut result = WaitResult::from(status);
            if !failures.is_empty() {
                result.error = Some(TaskError {
                    kind: TaskErrorKind::CleanupFailed,
                    message: "the task exited, but its cleanup is incomplete".to_owned(),
                    cleanup_failures: failures,
                });
            }
            result
        }
        Outcome::Failed(kind, message) => WaitResult::failed(TaskError {
            kind,
            message,
            cleanup_failures: failures,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::CleanupStep;
    use crate::platform::PlatformErrorKind;

    const ALL_STATES: [State; 6] = [
        State::Recovering,
        State::Running,
        State::Killing,
        State::Forcing,
        State::CleaningUp,
        State::Exited,
    ];

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp(Duration::from_millis(ms))
    }

    fn failure() -> CleanupFailure {
        CleanupFailure {
            step: CleanupStep::KillCgroup,
            kind: PlatformErrorKind::Cgroup,
            message: "busy".into(),
        }
    }

    fn all_events() -> Vec<Event> {
        vec![
            Event::Reattached,
            Event::FoundExitRecord(ExitStatus::code(3)),
            Event::SupervisorLost { reason: "r".into() },
            Event::SupervisorUnresponsive { reason: "r".into() },
            Event::KillRequested {
                signal: Signal::SIGINT,
                timeout: s(1),
            },
            Event::KillSignalFailed { error: "e".into() },
            Event::SignalRequested(Signal::SIGUSR1),
            Event::Timeout,
            Event::ForceKillFailed { error: "e".into() },
            Event::TaskExited(ExitStatus::code(0)),
            Event::ReleaseFailed(failure()),
            Event::CleanupFinished { failures: vec![] },
        ]
    }

    /// A machine in `state`, reached through legal events, with any deadline already due at
    /// time 10 s.
    fn machine_in(state: State) -> Lifecycle {
        let t = Timeouts::default();
        let kill = Event::KillRequested {
            signal: Signal::SIGINT,
            timeout: s(1),
        };
        let mut m = Lifecycle::recovering(t);
        let path: Vec<Event> = match state {
            State::Recovering => vec![],
            State::Running => vec![Event::Reattached],
            State::Killing => vec![Event::Reattached, kill],
            State::Forcing => vec![Event::Reattached, kill, Event::Timeout],
            State::CleaningUp => vec![Event::Reattached, Event::TaskExited(ExitStatus::code(0))],
            State::Exited => vec![
                Event::Reattached,
                Event::TaskExited(ExitStatus::code(0)),
                Event::CleanupFinished { failures: vec![] },
            ],
        };
        for (i, event) in path.into_iter().enumerate() {
            let now = if event == Event::Timeout {
                at(1_000 + 1)
            } else {
                at(i as u64)
            };
            m.handle(now, event).expect("legal path");
        }
        assert_eq!(m.state(), state);
        m
    }

    #[test]
    fn every_pair_matches_the_table() {
        for state in ALL_STATES {
            for event in all_events() {
                let kind = event.kind();
                let mut m = machine_in(state);
                let before = m.clone();
                match (m.handle(at(10_000), event), legal_next(state, kind)) {
                    (Ok(_), Some(want)) => assert_eq!(m.state(), want, "{state:?} + {kind:?}"),
                    (Err(e), None) => {
                        assert_eq!(e, TransitionError { state, event: kind });
                        assert_eq!(m, before, "a refused event changes nothing");
                    }
                    (got, want) => panic!("{state:?} + {kind:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn exited_is_final() {
        for event in all_events() {
            assert!(machine_in(State::Exited).handle(at(0), event).is_err());
        }
    }

    #[test]
    fn an_early_wake_up_changes_nothing() {
        let mut m = machine_in(State::Killing);
        let before = m.clone();
        assert_eq!(m.handle(at(500), Event::Timeout), Ok(vec![]));
        assert_eq!(m, before);
    }

    #[test]
    fn a_kill_runs_on_its_clock() {
        let t = Timeouts::default();
        let (mut m, effects) = Lifecycle::running(t);
        assert_eq!(effects, vec![Effect::NotifyRunning]);
        let effects = m
            .handle(
                at(100),
                Event::KillRequested {
                    signal: Signal::SIGTERM,
                    timeout: s(2),
                },
            )
            .expect("legal");
        assert_eq!(
            effects,
            vec![Effect::BeginKill {
                signal: Signal::SIGTERM,
                grace: s(2),
                deadline: at(2_100),
            }]
        );
        assert_eq!(m.poll_timeout(), Some(at(2_100)));
        assert_eq!(m.kill_bound(), Some(at(4_100)));
        let effects = m.handle(at(2_100), Event::Timeout).expect("legal");
        assert_eq!(
            effects,
            vec![Effect::ForceKill {
                deadline: at(3_100)
            }]
        );
        assert_eq!(m.state(), State::Forcing);
        assert_eq!(m.poll_timeout(), Some(at(3_100)));
        let effects = m.handle(at(3_100), Event::Timeout).expect("legal");
        assert_eq!(
            effects,
            vec![Effect::OrphanCleanup {
                deadline: at(4_100)
            }]
        );
        let effects = m
            .handle(at(3_200), Event::CleanupFinished { failures: vec![] })
            .expect("legal");
        let [Effect::DeliverExit(result)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert_eq!(
            result.error.as_ref().map(|e| e.kind),
            Some(TaskErrorKind::ForceKillFailed)
        );
        assert_eq!(m.state(), State::Exited);
    }

    #[test]
    fn a_failed_kill_signal_forces_at_once_within_the_bound() {
        let (mut m, _) = Lifecycle::running(Timeouts::default());
        m.handle(
            at(0),
            Event::KillRequested {
                signal: Signal::SIGINT,
                timeout: s(30),
            },
        )
        .expect("legal");
        let effects = m
            .handle(at(10), Event::KillSignalFailed { error: "e".into() })
            .expect("legal");
        assert_eq!(
            effects,
            vec![Effect::ForceKill {
                deadline: at(1_010)
            }]
        );
        assert_eq!(m.poll_timeout(), Some(at(1_010)));
    }

    #[test]
    fn an_unresponsive_supervisor_during_a_kill_is_cleaned_up_by_cgroup() {
        let (mut m, _) = Lifecycle::running(Timeouts::default());
        m.handle(
            at(0),
            Event::KillRequested {
                signal: Signal::SIGINT,
                timeout: s(1),
            },
        )
        .expect("legal");
        let effects = m
            .handle(
                at(500),
                Event::SupervisorUnresponsive {
                    reason: "no answer".into(),
                },
            )
            .expect("legal");
        assert_eq!(
            effects,
            vec![Effect::OrphanCleanup {
                deadline: at(3_000)
            }]
        );
    }

    #[test]
    fn a_release_failure_falls_back_and_is_reported_only_if_the_fallback_fails() {
        let exited = |failures: Vec<CleanupFailure>| {
            let (mut m, _) = Lifecycle::running(Timeouts::default());
            let effects = m
                .handle(at(0), Event::TaskExited(ExitStatus::code(4)))
                .expect("legal");
            assert_eq!(
                effects,
                vec![Effect::Release {
                    deadline: at(5_000)
                }]
            );
            let release = CleanupFailure {
                step: CleanupStep::Release,
                kind: PlatformErrorKind::Unresponsive,
                message: "no answer".into(),
            };
            let effects = m
                .handle(at(5_000), Event::ReleaseFailed(release))
                .expect("legal");
            assert_eq!(
                effects,
                vec![Effect::OrphanCleanup {
                    deadline: at(15_000)
                }]
            );
            let effects = m
                .handle(at(5_100), Event::CleanupFinished { failures })
                .expect("legal");
            match effects.as_slice() {
                [Effect::DeliverExit(result)] => result.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(exited(vec![]), WaitResult::from(ExitStatus::code(4)));
        let result = exited(vec![failure()]);
        assert_eq!(result.exit_code, 4);
        let error = result.error.expect("cleanup failed");
        assert_eq!(error.kind, TaskErrorKind::CleanupFailed);
        let steps: Vec<CleanupStep> = error.cleanup_failures.iter().map(|f| f.step).collect();
        assert_eq!(steps, vec![CleanupStep::Release, CleanupStep::KillCgroup]);
    }

    #[test]
    fn every_deadline_of_a_kill_is_within_its_bound() {
        // The kill's steps, whichever order the outcomes come in.
        let outcomes = [
            Event::KillSignalFailed { error: "e".into() },
            Event::Timeout,
            Event::ForceKillFailed { error: "e".into() },
            Event::SupervisorUnresponsive { reason: "r".into() },
            Event::TaskExited(ExitStatus::code(1)),
            Event::ReleaseFailed(failure()),
        ];
        for first in &outcomes {
            for second in &outcomes {
                for third in &outcomes {
                    let (mut m, _) = Lifecycle::running(Timeouts::default());
                    let start = at(1_000);
                    let mut effects = m
                        .handle(
                            start,
                            Event::KillRequested {
                                signal: Signal::SIGINT,
                                timeout: s(3),
                            },
                        )
                        .expect("legal");
                    let bound = start + s(3) + Timeouts::default().overrun;
                    let mut now = start;
                    for event in [first, second, third] {
                        if *event == Event::Timeout {
                            now = m.poll_timeout().unwrap_or(now).max(now);
                        } else {
                            now = now + Duration::from_millis(200);
                        }
                        if let Ok(more) = m.handle(now, event.clone()) {
                            effects.extend(more);
                        }
                    }
                    for effect in &effects {
                        let deadline = match effect {
                            Effect::BeginKill { deadline, .. }
                            | Effect::ForceKill { deadline }
                            | Effect::Release { deadline }
                            | Effect::OrphanCleanup { deadline } => *deadline,
                            _ => continue,
                        };
                        assert!(
                            deadline <= bound,
                            "{effect:?} after {first:?}, {second:?}, {third:?}"
                        );
                    }
                    if let Some(wake) = m.poll_timeout() {
                        assert!(wake <= bound);
                    }
                }
            }
        }
    }

    #[test]
    fn kill_timeout_is_capped() {
        assert_eq!(kill_timeout(s(5), s(30)), s(5));
        assert_eq!(kill_timeout(s(60), s(30)), s(30));
    }

    #[test]
    fn timeouts_are_normalized() {
        let t = Timeouts {
            answer: s(9),
            force: s(5),
            overrun: s(2),
            ..Timeouts::default()
        }
        .normalized();
        assert_eq!((t.answer, t.force, t.overrun), (s(2), s(2), s(2)));
    }
}
