//! Fuzzes the lifecycle state machine with arbitrary event sequences through `step`.
//!
//! Invariants checked after every event:
//! - a legal event moves to exactly the state `lifecycle::TRANSITIONS` says, and only
//!   legal events succeed;
//! - an illegal event returns a `TransitionError` naming the current state and the event,
//!   and the state is kept;
//! - `Exited` is entered at most once and is final: every event after it is refused;
//! - `DeliverExit` is emitted exactly once, as the last effect of the step entering
//!   `Exited`, carrying the result the event described, and never otherwise.
//!
//! Input format, chosen so seeds can be written by hand (see `fuzz/README.md`): byte 0 picks
//! the entry point (even: `start`, odd: `recover`); then each event is a tag byte (`tag % 10`
//! picks the kind, in `EventKind` order) followed by that kind's payload. Missing payload
//! bytes read as 0.
#![no_main]

use std::time::Duration;

use execdriver_core::lifecycle::{legal_next as expected, recover, start};
use execdriver_core::{
    Effect, Event, ExitStatus, Signal, State, TransitionError, WaitResult, step,
};
use libfuzzer_sys::fuzz_target;

/// Reads the input front to back, yielding zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A length byte (0..=7) then that many bytes, lossily as UTF-8.
    fn string(&mut self) -> String {
        let len = usize::from(self.byte() % 8).min(self.0.len());
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(text).into_owned()
    }

    /// One byte mapped onto 1..=64, so every value is a signal.
    fn signal(&mut self) -> Signal {
        let number = i32::from(self.byte() % 64) + 1;
        match Signal::new(number) {
            Ok(signal) => signal,
            Err(e) => panic!("{number} is in 1..=64 yet refused: {e}"),
        }
    }

    /// A flags byte (bit 0: killed by a signal, bit 1: OOM-killed) then a code or signal byte.
    fn exit_status(&mut self) -> ExitStatus {
        let flags = self.byte();
        let mut status = if flags & 1 == 0 {
            ExitStatus::code(i32::from(self.byte()))
        } else {
            ExitStatus::signaled(self.signal())
        };
        status.oom_killed = flags & 2 != 0;
        status
    }

    fn event(&mut self) -> Option<Event> {
        let tag = *self.0.first()?;
        self.byte();
        Some(match tag % 10 {
            0 => Event::Spawned,
            1 => Event::SpawnFailed {
                error: self.string(),
            },
            2 => Event::Reattached,
            3 => Event::FoundExitRecord(self.exit_status()),
            4 => Event::SupervisorLost {
                reason: self.string(),
            },
            5 => {
                let reason = self.string();
                let failures = (0..self.byte() % 4).map(|_| self.string()).collect();
                Event::CleanupFinished { reason, failures }
            }
            6 => Event::KillRequested {
                signal: self.signal(),
                timeout: Duration::from_millis(u64::from(self.byte()) * 100),
            },
            7 => Event::SignalRequested(self.signal()),
            8 => Event::KillTimerFired,
            _ => Event::TaskExited(self.exit_status()),
        })
    }
}

/// Checks the result an entry into `Exited` delivers against the event that caused it.
fn check_result(event: &Event, result: &WaitResult) {
    match event {
        Event::TaskExited(status) | Event::FoundExitRecord(status) => {
            assert_eq!(*result, WaitResult::from(*status), "result of {event:?}");
        }
        Event::SpawnFailed { error } => {
            assert_eq!(
                *result,
                WaitResult::failed(error.clone()),
                "result of {event:?}"
            );
        }
        Event::CleanupFinished { reason, failures } => {
            assert_eq!(result.exit_code, -1, "result of {event:?}");
            let error = result.error.as_deref().unwrap_or_default();
            for part in std::iter::once(reason).chain(failures) {
                assert!(error.contains(part.as_str()), "{error:?} hides {part:?}");
            }
        }
        _ => panic!("{event:?} delivered {result:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let (mut state, effects) = if input.byte() % 2 == 0 {
        start()
    } else {
        recover()
    };
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::DeliverExit(_))),
        "entry point delivered a result: {effects:?}"
    );
    let mut deliveries = 0usize;
    let mut exits = 0usize;
    while let Some(event) = input.event() {
        let kind = event.kind();
        let want = expected(state, kind);
        match step(state, event.clone()) {
            Ok((next, effects)) => {
                assert_eq!(Some(next), want, "{state:?} + {event:?} went to {next:?}");
                let delivered: Vec<&WaitResult> = effects
                    .iter()
                    .filter_map(|e| match e {
                        Effect::DeliverExit(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                if next == State::Exited {
                    exits += 1;
                    assert_eq!(delivered.len(), 1, "{state:?} + {event:?}: {effects:?}");
                    assert!(
                        matches!(effects.last(), Some(Effect::DeliverExit(_))),
                        "the result must be delivered after the cleanup: {effects:?}"
                    );
                    check_result(&event, delivered[0]);
                } else {
                    assert!(delivered.is_empty(), "{state:?} + {event:?}: {effects:?}");
                }
                deliveries += delivered.len();
                state = next;
            }
            Err(e) => {
                assert_eq!(want, None, "{state:?} + {event:?} refused: {e}");
                assert_eq!(e, TransitionError { state, event: kind });
            }
        }
        assert!(exits <= 1, "Exited entered {exits} times");
        assert_eq!(deliveries, exits, "deliveries and exits disagree");
    }
    assert_eq!(deliveries, usize::from(state == State::Exited));
});
