//! Arbitrary event sequences on the pure state machine, checked against the transition table
//! `lifecycle::TRANSITIONS` (data written independently of `step`'s match), and against the
//! effects each transition must carry.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use execdriver_core::lifecycle::{self, CleanupScope, Effect, Event, State};
use execdriver_core::{ExitStatus, Signal, TransitionError, WaitResult, kill_timeout, step};
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

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Spawned),
        "[a-z :;]{0,12}".prop_map(|error| Event::SpawnFailed { error }),
        Just(Event::Reattached),
        exit_status().prop_map(Event::FoundExitRecord),
        "[a-z :;]{0,12}".prop_map(|reason| Event::SupervisorLost { reason }),
        (
            "[a-z :;]{0,12}",
            prop::collection::vec("[a-z :]{1,8}", 0..4)
        )
            .prop_map(|(reason, failures)| Event::CleanupFinished { reason, failures }),
        (signal(), 0..100_000u64).prop_map(|(signal, ms)| Event::KillRequested {
            signal,
            timeout: Duration::from_millis(ms),
        }),
        signal().prop_map(Event::SignalRequested),
        Just(Event::KillTimerFired),
        exit_status().prop_map(Event::TaskExited),
    ]
}

/// Checks the effects of one accepted transition against what the design requires.
fn check_effects(
    from: State,
    event: &Event,
    to: State,
    effects: &[Effect],
) -> Result<(), TestCaseError> {
    let delivers = effects
        .iter()
        .filter(|e| matches!(e, Effect::DeliverExit(_)))
        .count();
    prop_assert_eq!(delivers, usize::from(to == State::Exited));
    if to == State::Exited {
        // The result goes out last, after any cleanup.
        prop_assert!(matches!(effects.last(), Some(Effect::DeliverExit(_))));
    }
    match (from, event) {
        (State::Running, Event::KillRequested { signal, timeout }) => prop_assert_eq!(
            effects,
            &[Effect::SendSignal(*signal), Effect::ArmKillTimer(*timeout)][..]
        ),
        // Joining a kill under way neither re-signals nor re-arms the timer.
        (State::Killing, Event::KillRequested { .. }) => prop_assert!(effects.is_empty()),
        (_, Event::SignalRequested(signal)) => {
            prop_assert_eq!(effects, &[Effect::SendSignal(*signal)][..])
        }
        (_, Event::KillTimerFired) => prop_assert_eq!(effects, &[Effect::ForceKill][..]),
        (_, Event::Spawned | Event::Reattached) => {
            prop_assert_eq!(effects, &[Effect::NotifyRunning][..])
        }
        (_, Event::TaskExited(status)) => prop_assert_eq!(
            effects,
            &[
                Effect::Cleanup(CleanupScope::Supervised),
                Effect::DeliverExit(WaitResult::from(*status)),
            ][..]
        ),
        (_, Event::FoundExitRecord(status)) => prop_assert_eq!(
            effects,
            &[
                Effect::Cleanup(CleanupScope::Orphaned),
                Effect::DeliverExit(WaitResult::from(*status)),
            ][..]
        ),
        (_, Event::SupervisorLost { .. }) => {
            prop_assert_eq!(effects, &[Effect::Cleanup(CleanupScope::Orphaned)][..])
        }
        (_, Event::SpawnFailed { error }) => {
            prop_assert_eq!(
                effects,
                &[Effect::DeliverExit(WaitResult::failed(error.clone()))][..]
            )
        }
        (_, Event::CleanupFinished { reason, failures }) => {
            let Some(Effect::DeliverExit(result)) = effects.first() else {
                return Err(TestCaseError::fail(format!("{effects:?}")));
            };
            prop_assert_eq!(result.exit_code, -1);
            let error = result.error.as_deref().unwrap_or_default();
            prop_assert!(error.starts_with(reason.as_str()));
            // Every failed step is reported, in order, in the one error.
            let mut rest = error;
            for f in failures {
                let at = rest.find(f.as_str());
                prop_assert!(at.is_some(), "{:?} missing from {:?}", f, error);
                rest = &rest[at.unwrap_or_default() + f.len()..];
            }
        }
        (_, Event::KillRequested { .. }) => unreachable!("both states handled above"),
    }
    Ok(())
}

proptest! {
    // 1000 cases of up to 40 events each: `step` is a pure function, so this is cheap, and
    // it reaches every state from both entry points many times.
    #![proptest_config(proptest_config!(1000, "lifecycle_props.txt"))]

    #[test]
    fn only_legal_transitions_change_state(
        recovering in any::<bool>(),
        events in prop::collection::vec(event(), 0..40),
    ) {
        let (mut state, initial) = if recovering { lifecycle::recover() } else { lifecycle::start() };
        prop_assert_eq!(initial.len(), 1);
        let mut exited_count = 0;
        let mut delivered = Vec::new();
        let mut timers = 0;
        let mut running_notices = 0;
        for event in events {
            let kind = event.kind();
            match (step(state, event.clone()), table(state, kind)) {
                (Ok((next, effects)), Some(want)) => {
                    prop_assert_eq!(next, want, "{:?} + {:?}", state, kind);
                    check_effects(state, &event, next, &effects)?;
                    if next == State::Exited {
                        exited_count += 1;
                    }
                    timers += effects.iter().filter(|e| matches!(e, Effect::ArmKillTimer(_))).count();
                    running_notices += effects.iter().filter(|e| matches!(e, Effect::NotifyRunning)).count();
                    delivered.extend(effects.into_iter().filter_map(|e| match e {
                        Effect::DeliverExit(r) => Some(r),
                        _ => None,
                    }));
                    state = next;
                }
                (Err(e), None) => {
                    // Refused: the error names the unchanged state and the event.
                    prop_assert_eq!(e, TransitionError { state, event: kind });
                }
                (got, want) => {
                    return Err(TestCaseError::fail(format!(
                        "{state:?} + {kind:?}: step gave {got:?}, table says {want:?}"
                    )));
                }
            }
        }
        // A task reaches Exited at most once, and its result is delivered exactly then.
        prop_assert!(exited_count <= 1);
        prop_assert_eq!(delivered.len(), usize::from(state == State::Exited));
        // Killing never returns to Running: one kill timer and one running notice per life.
        prop_assert!(timers <= 1);
        prop_assert!(running_notices <= 1);
    }

}

proptest! {
    // 256 cases: a single state, so fewer cases cover it.
    #![proptest_config(proptest_config!(256, "lifecycle_props.txt"))]

    #[test]
    fn exited_refuses_everything(events in prop::collection::vec(event(), 1..20)) {
        for event in events {
            let kind = event.kind();
            prop_assert_eq!(
                step(State::Exited, event),
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
    let mut seen = BTreeSet::new();
    let strategy = (any::<bool>(), prop::collection::vec(event(), 0..40));
    for _ in 0..1000 {
        let (recovering, events) = strategy.new_tree(&mut runner).expect("generate").current();
        let mut state = if recovering {
            State::Recovering
        } else {
            State::Created
        };
        for event in events {
            let kind = event.kind();
            if let Ok((next, _)) = step(state, event) {
                seen.insert(format!("{state:?}+{kind:?}"));
                state = next;
            }
        }
    }
    let legal: BTreeSet<String> = lifecycle::TRANSITIONS
        .iter()
        .map(|(s, k, _)| format!("{s:?}+{k:?}"))
        .collect();
    assert_eq!(seen, legal);
}
