//! Fuzzes the lifecycle machine with arbitrary event sequences on an arbitrary clock.
//!
//! Invariants checked after every event:
//! - a legal event moves to exactly the state `lifecycle::TRANSITIONS` says, and only legal
//!   events succeed; a `Timeout` before the machine's deadline changes nothing;
//! - an illegal event returns a `TransitionError` naming the current state and the event,
//!   and the machine is unchanged;
//! - `Exited` is entered at most once and is final: every event after it is refused;
//! - `DeliverExit` is emitted exactly once, as the only effect of the step entering
//!   `Exited`, and never otherwise;
//! - while a kill runs, the wake-up time and every deadline an effect carries lie within
//!   the kill's bound (its timeout plus the overrun), unless the event came after it.
//!
//! Input format, chosen so seeds can be written by hand (see `fuzz/README.md`): byte 0 picks
//! the entry point (even: a spawned task, odd: a recovering one); then each event is a tag
//! byte (`tag % 12` picks the kind, in `EventKind` order), a time byte (milliseconds x 10
//! that pass before it; a `Timeout` instead jumps to the machine's deadline when it has
//! one), then that kind's payload. Missing bytes read as 0.
#![no_main]

use std::time::Duration;

use execdriver_core::lifecycle::legal_next as expected;
use execdriver_core::{
    CleanupFailure, CleanupStep, Effect, Event, ExitStatus, Lifecycle, PlatformErrorKind, Signal,
    State, Timeouts, Timestamp, TransitionError,
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

    fn failure(&mut self) -> CleanupFailure {
        CleanupFailure {
            step: CleanupStep::KillCgroup,
            kind: PlatformErrorKind::Other,
            message: self.string(),
        }
    }

    /// The next event and the milliseconds that pass before it.
    fn event(&mut self) -> Option<(u64, Event)> {
        let tag = *self.0.first()?;
        self.byte();
        let elapsed = u64::from(self.byte()) * 10;
        let event = match tag % 12 {
            0 => Event::Reattached,
            1 => Event::FoundExitRecord(self.exit_status()),
            2 => Event::SupervisorLost {
                reason: self.string(),
            },
            3 => Event::SupervisorUnresponsive {
                reason: self.string(),
            },
            4 => Event::KillRequested {
                signal: self.signal(),
                timeout: Duration::from_millis(u64::from(self.byte()) * 100),
            },
            5 => Event::KillSignalFailed {
                error: self.string(),
            },
            6 => Event::SignalRequested(self.signal()),
            7 => Event::Timeout,
            8 => Event::ForceKillFailed {
                error: self.string(),
            },
            9 => Event::TaskExited(self.exit_status()),
            10 => Event::ReleaseFailed(self.failure()),
            _ => {
                let count = self.byte() % 4;
                Event::CleanupFinished {
                    failures: (0..count).map(|_| self.failure()).collect(),
                }
            }
        };
        Some((elapsed, event))
    }
}

fn deadline_of(effect: &Effect) -> Option<Timestamp> {
    match effect {
        Effect::SendSignal { .. } | Effect::NotifyRunning | Effect::DeliverExit(_) => None,
        Effect::BeginKill { deadline, .. }
        | Effect::ForceKill { deadline }
        | Effect::Release { deadline }
        | Effect::OrphanCleanup { deadline } => Some(*deadline),
    }
}

fuzz_target!(|data: &[u8]| {
    let timeouts = Timeouts::default();
    let mut input = Bytes(data);
    let mut machine = if input.byte() % 2 == 0 {
        let (machine, effects) = Lifecycle::running(timeouts);
        assert_eq!(effects, vec![Effect::NotifyRunning]);
        machine
    } else {
        Lifecycle::recovering(timeouts)
    };
    let mut now = Timestamp::default();
    let mut exits = 0usize;
    while let Some((elapsed, event)) = input.event() {
        now = match (&event, machine.poll_timeout()) {
            (Event::Timeout, Some(due)) if elapsed % 20 != 0 => due.max(now),
            _ => now + Duration::from_millis(elapsed),
        };
        let state = machine.state();
        let kind = event.kind();
        let due = machine.poll_timeout().is_some_and(|d| now >= d);
        let want = expected(state, kind);
        let before = machine.clone();
        match machine.handle(now, event.clone()) {
            Ok(effects) => {
                let next = machine.state();
                if kind == execdriver_core::EventKind::Timeout && !due {
                    assert_eq!(machine, before, "an early wake-up changed the machine");
                    assert!(
                        effects.is_empty(),
                        "an early wake-up had effects: {effects:?}"
                    );
                } else {
                    assert_eq!(Some(next), want, "{state:?} + {event:?} went to {next:?}");
                }
                let delivered = effects
                    .iter()
                    .filter(|e| matches!(e, Effect::DeliverExit(_)))
                    .count();
                if next == State::Exited && state != State::Exited {
                    exits += 1;
                    assert_eq!(delivered, 1, "{state:?} + {event:?}: {effects:?}");
                    assert_eq!(effects.len(), 1, "{effects:?}");
                } else {
                    assert_eq!(delivered, 0, "{state:?} + {event:?}: {effects:?}");
                }
                if let Some(bound) = before.kill_bound().or(machine.kill_bound()) {
                    let slack = now + timeouts.answer;
                    for effect in &effects {
                        if let Some(deadline) = deadline_of(effect) {
                            assert!(
                                deadline <= bound.max(slack),
                                "{effect:?} past the kill's bound {bound:?} at {now:?}"
                            );
                        }
                    }
                    if let Some(wake) = machine.poll_timeout() {
                        assert!(wake <= bound, "wake-up {wake:?} past the bound {bound:?}");
                    }
                }
            }
            Err(e) => {
                assert_eq!(want, None, "{state:?} + {event:?} refused: {e}");
                assert_eq!(e, TransitionError { state, event: kind });
                assert_eq!(machine, before, "a refused event changed the machine");
            }
        }
        assert!(exits <= 1, "Exited entered {exits} times");
    }
});
