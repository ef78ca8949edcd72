//! Arbitrary event sequences on an arbitrary clock, fed to the pure lifecycle machine and
//! checked against the transition table `lifecycle::TRANSITIONS` (data written independently
//! of the machine's match), against the effects each transition must carry, and against the
//! kill's bound: every deadline of a kill lies within its timeout plus the overrun.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use execdriver_core::lifecycle::{self, Effect, Event, EventKind, State};
use execdriver_core::{
    CleanupFailure, CleanupStep, ExitStatus, Lifecycle, PlatformErrorKind, Signal, TaskErrorKind,
    Timeouts, Timestamp, TransitionError, WaitResult, kill_timeout,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use execdriver_core::lifecycle::legal_next as table;

fn signal() -> impl Strategy<Value = Signal> {
    (1..=64i32).prop_map(|n| Signal::new(n).expect("in range"))
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    (any::<i32>(), prop::option::of(signal()), any::<bool>()).prop_map(
        |(exit_code, signal, oom_killed)| ExitStatus {
            exit_code,
            signal,
            oom_killed,
        },
    )
}

fn failure() -> impl Strategy<Value = CleanupFailure> {
    "[a-z :]{1,8}".prop_map(|message| CleanupFailure {
        step: CleanupStep::DestroyCgroup,
        kind: PlatformErrorKind::Cgroup,
        message,
    })
}

fn event() -> impl Strategy<Value = Event> {
    let text = || "[a-z :;]{0,12}";
    prop_oneof![
        Just(Event::Reattached),
        exit_status().prop_map(Event::FoundExitRecord),
        text().prop_map(|reason| Event::SupervisorLost { reason }),
        text().prop_map(|reason| Event::SupervisorUnresponsive { reason }),
        (signal(), 0..100_000u64).prop_map(|(signal, ms)| Event::KillRequested {
            signal,
            timeout: Duration::from_millis(ms),
        }),
        text().prop_map(|error| Event::KillSignalFailed { error }),
        signal().prop_map(Event::SignalRequested),
        Just(Event::Timeout),
        text().prop_map(|error| Event::ForceKillFailed { error }),
        exit_status().prop_map(Event::TaskExited),
        failure().prop_map(Event::ReleaseFailed),
        prop::collection::vec(failure(), 0..4)
            .prop_map(|failures| Event::CleanupFinished { failures }),
    ]
}

/// An event, the time that passes before it, and for a `Timeout` whether it comes at the
/// machine's deadline (or early).
fn step() -> impl Strategy<Value = (Event, u64, bool)> {
    (event(), 0..3_000u64, prop::bool::weighted(0.8))
}

/// Checks the effects of one accepted transition against what the design requires.
fn check_effects(
    from: State,
    event: &Event,
    to: State,
    effects: &[Effect],
    now: Timestamp,
    t: &Timeouts,
) -> Result<(), TestCaseError> {
    let delivers = effects
        .iter()
        .filter(|e| matches!(e, Effect::DeliverExit(_)))
        .count();
    prop_assert_eq!(
        delivers,
        usize::from(to == State::Exited && from != State::Exited)
    );
    match (from, event) {
        (State::Running, Event::KillRequested { signal, timeout }) => prop_assert_eq!(
            effects,
            &[Effect::BeginKill {
                signal: *signal,
                grace: *timeout,
                deadline: now + (*timeout).min(t.call).max(t.answer)
            }][..]
        ),
        // Joining a kill under way neither re-signals nor restarts its clock.
        (_, Event::KillRequested { .. }) => prop_assert!(effects.is_empty()),
        (_, Event::SignalRequested(signal)) => prop_assert_eq!(
            effects,
            &[Effect::SendSignal {
                signal: *signal,
                deadline: now + t.call
            }][..]
        ),
        (_, Event::Reattached) => prop_assert_eq!(effects, &[Effect::NotifyRunning][..]),
        (State::Killing, Event::Timeout | Event::KillSignalFailed { .. }) => {
            prop_assert!(
                matches!(effects, [Effect::ForceKill { .. }]),
                "{:?}",
                effects
            )
        }
        (_, Event::TaskExited(_)) => {
            prop_assert!(matches!(effects, [Effect::Release { .. }]), "{:?}", effects)
        }
        (
            _,
            Event::FoundExitRecord(_)
            | Event::SupervisorLost { .. }
            | Event::SupervisorUnresponsive { .. }
            | Event::ForceKillFailed { .. }
            | Event::Timeout
            | Event::ReleaseFailed(_),
        ) => prop_assert!(
            matches!(
                effects,
                [Effect::OrphanCleanup { .. }] | [Effect::DeliverExit(_)] | []
            ),
            "{:?}",
            effects
        ),
        (_, Event::CleanupFinished { failures }) => {
            let [Effect::DeliverExit(result)] = effects else {
                return Err(TestCaseError::fail(format!("{effects:?}")));
            };
            // Every failed step of this cleanup is reported with the result.
            let reported = result
                .error
                .as_ref()
                .map(|e| e.cleanup_failures.clone())
                .unwrap_or_default();
            for f in failures {
                prop_assert!(reported.contains(f), "{:?} missing from {:?}", f, reported);
            }
        }
        (_, Event::KillSignalFailed { .. }) => {
            return Err(TestCaseError::fail(format!(
                "{from:?} + {event:?} was accepted"
            )));
        }
    }
    Ok(())
}

/// The kill-related deadlines of `effects`.
fn deadlines(effects: &[Effect]) -> impl Iterator<Item = Timestamp> + '_ {
    effects.iter().filter_map(|e| match e {
        Effect::BeginKill { deadline, .. }
        | Effect::ForceKill { deadline }
        | Effect::Release { deadline }
        | Effect::OrphanCleanup { deadline } => Some(*deadline),
        _ => None,
    })
}

/// What one run of a sequence saw.
#[derive(Default)]
struct Seen {
    transitions: std::collections::BTreeSet<String>,
}

fn run_sequence(
    recovering: bool,
    steps: &[(Event, u64, bool)],
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let t = Timeouts::default();
    let mut machine = if recovering {
        Lifecycle::recovering(t)
    } else {
        Lifecycle::running(t).0
    };
    let mut now = Timestamp::default();
    let mut exited = 0;
    let mut delivered: Vec<WaitResult> = Vec::new();
    let mut kills = 0;
    for (event, elapsed, at_deadline) in steps {
        now = match (event, machine.poll_timeout()) {
            (Event::Timeout, Some(due)) if *at_deadline => due.max(now),
            _ => now + Duration::from_millis(*elapsed),
        };
        let state = machine.state();
        let kind = event.kind();
        let due = machine.poll_timeout().is_some_and(|d| now >= d);
        let before = machine.clone();
        match machine.handle(now, event.clone()) {
            Ok(effects) if kind == EventKind::Timeout && !due => {
                prop_assert!(effects.is_empty());
                prop_assert_eq!(&machine, &before);
            }
            Ok(effects) => {
                let next = machine.state();
                prop_assert_eq!(Some(next), table(state, kind), "{:?} + {:?}", state, kind);
                check_effects(state, event, next, &effects, now, &t)?;
                seen.transitions.insert(format!("{state:?}+{kind:?}"));
                if next == State::Exited {
                    exited += 1;
                }
                kills += effects
                    .iter()
                    .filter(|e| matches!(e, Effect::BeginKill { .. }))
                    .count();
                if let Some(bound) = before.kill_bound().or(machine.kill_bound()) {
                    for deadline in deadlines(&effects) {
                        prop_assert!(
                            deadline <= bound.max(now + t.answer),
                            "{:?} > {:?}",
                            deadline,
                            bound
                        );
                    }
                    if let Some(wake) = machine.poll_timeout() {
                        prop_assert!(wake <= bound);
                    }
                }
                delivered.extend(effects.into_iter().filter_map(|e| match e {
                    Effect::DeliverExit(r) => Some(r),
                    _ => None,
                }));
            }
            Err(e) => {
                prop_assert_eq!(table(state, kind), None, "{:?} + {:?} refused", state, kind);
                prop_assert_eq!(e, TransitionError { state, event: kind });
                prop_assert_eq!(&machine, &before);
            }
        }
    }
    // A task reaches Exited at most once, and its result is delivered exactly then.
    prop_assert!(exited <= 1);
    prop_assert_eq!(
        delivered.len(),
        usize::from(machine.state() == State::Exited)
    );
    // Killing never returns to Running: one kill per life.
    prop_assert!(kills <= 1);
    // A result without a driver error is the exit some event described.
    for r in &delivered {
        if let Some(e) = &r.error {
            prop_assert!(
                !e.cleanup_failures.is_empty() || e.kind != TaskErrorKind::CleanupFailed,
                "{:?}",
                r
            );
        }
    }
    Ok(())
}

proptest! {
    // 1000 cases of up to 40 events each: the machine is pure, so this is cheap, and it
    // reaches every state from both entry points many times.
    #![proptest_config(proptest_config!(1000, "lifecycle_props.txt"))]

    #[test]
    fn only_legal_transitions_change_state(
        recovering in any::<bool>(),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        run_sequence(recovering, &steps, &mut Seen::default())?;
    }
}

proptest! {
    // 256 cases: a single state, so fewer cases cover it.
    #![proptest_config(proptest_config!(256, "lifecycle_props.txt"))]

    #[test]
    fn exited_refuses_everything(events in prop::collection::vec(event(), 1..20)) {
        let mut machine = Lifecycle::running(Timeouts::default()).0;
        machine.handle(Timestamp::default(), Event::TaskExited(ExitStatus::code(0))).expect("exit");
        machine.handle(Timestamp::default(), Event::CleanupFinished { failures: vec![] }).expect("cleanup");
        for event in events {
            let kind = event.kind();
            prop_assert_eq!(
                machine.handle(Timestamp::default(), event),
                Err(TransitionError { state: State::Exited, event: kind })
            );
        }
    }

    #[test]
    fn the_kill_timeout_never_exceeds_the_max(desired in any::<u64>(), max in any::<u64>()) {
        let (d, m) = (Duration::from_millis(desired), Duration::from_millis(max));
        let t = kill_timeout(d, m);
        prop_assert!(t <= m);
        prop_assert_eq!(t, d.min(m));
    }
}

/// The generator is only useful if it reaches every legal transition: run it outside the
/// property (1000 sequences, the same count as above) and count what it visits.
#[test]
fn the_event_generator_reaches_every_legal_transition() {
    use std::collections::BTreeSet;
    let mut runner = TestRunner::new(Config::with_cases(1000));
    let mut seen = Seen::default();
    let strategy = (any::<bool>(), prop::collection::vec(step(), 0..40));
    for _ in 0..1000 {
        let (recovering, steps) = strategy.new_tree(&mut runner).expect("generate").current();
        run_sequence(recovering, &steps, &mut seen).expect("a valid sequence");
    }
    let legal: BTreeSet<String> = lifecycle::TRANSITIONS
        .iter()
        .map(|(s, k, _)| format!("{s:?}+{k:?}"))
        .collect();
    assert_eq!(seen.transitions, legal);
}
