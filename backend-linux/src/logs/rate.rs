//! The log rate of one stream: a token bucket that says how much of a task's output may be
//! read now, and when a task held back for too long has what waits in its pipe dropped.
//!
//! Pure: it is told the time, so its tests run on a virtual clock. The event loop asks it
//! how much to read ([`Limiter::allowance`]), tells it what was read ([`Limiter::spend`])
//! and how much still waits in the pipe, and gets back what to do with the pipe next
//! ([`Limiter::after`]): watch it, leave it alone until tokens are back, or drop what waits.
//!
//! Why backpressure first and dropping only after [`HOLD_LIMIT`]: a pipe the pump does not
//! read fills and blocks the task's writes, which is what docker's json-file logger does to
//! a container whose logger is slow, and it loses nothing; a burst above the rate is written
//! whole, a little late. But a task must never be blocked for good on its own logging, so a
//! stream held back continuously for [`HOLD_LIMIT`] has its pipe emptied every
//! [`DROP_TICK`] while it stays over the rate: its log keeps getting the rate's worth of its
//! output, and the rest is dropped and counted.

use std::time::{Duration, Instant};

/// How long a stream may be held back (its output waiting unread because it is over its
/// rate) before what waits is dropped.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(1);

/// How often a stream over its rate for longer than [`HOLD_LIMIT`] has its pipe emptied.
/// With a 1 MiB pipe, a flooding task gets about 50 MiB/s through (nearly all of it
/// dropped). Dropping is not free: the reader of a pipe frees its pages, about 0.1 to
/// 0.2 ms of cpu per MiB, so this tick is what bounds the supervisor's cpu for a flooding
/// task, to about 2% of a core (50 wake-ups and 50 MiB of pages a second).
pub(crate) const DROP_TICK: Duration = Duration::from_millis(20);

/// The bucket holds this many seconds of the rate: the burst written at once.
const BURST_SECONDS: u64 = 2;

/// Tokens are counted in billionths of a byte, so that a refill after any number of
/// nanoseconds at any rate is an exact integer.
const SCALE: u128 = 1_000_000_000;

/// What the pump does with a pipe next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Watch the pipe: read as soon as it has data.
    Watch,
    /// Leave the pipe alone until then: the stream is over its rate.
    WakeAt(Instant),
    /// Drop what waits in the pipe now, then leave it alone until then.
    DropAndWakeAt(Instant),
}

/// The log rate of one stream.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    /// Bytes per second; `None` for no limit.
    rate: Option<u64>,
    /// Capacity of the bucket, in bytes.
    burst: u64,
    /// What the bucket holds, in billionths of a byte.
    tokens: u128,
    /// When the bucket was last refilled.
    last: Instant,
    /// Since when output has waited unread for lack of tokens.
    held_since: Option<Instant>,
}

impl Limiter {
    /// A stream at `rate` bytes per second (`None`: no limit), its bucket full at `now`.
    pub(crate) fn new(rate: Option<u64>, now: Instant) -> Self {
        let rate = rate.filter(|r| *r > 0);
        let burst = rate.map_or(0, |r| r.saturating_mul(BURST_SECONDS));
        Self {
            rate,
            burst,
            tokens: u128::from(burst) * SCALE,
            last: now,
            held_since: None,
        }
    }

    /// The rate, if there is one.
    pub(crate) fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Lifts the limit: once the task has exited, what is left in its pipe is bounded by
    /// the pipe's size and is read at once.
    pub(crate) fn lift(&mut self) {
        self.rate = None;
        self.held_since = None;
    }

    /// How many bytes, at most `want`, may be read now.
    pub(crate) fn allowance(&mut self, now: Instant, want: usize) -> usize {
        if self.rate.is_none() {
            return want;
        }
        self.refill(now);
        usize::try_from(self.tokens / SCALE).map_or(want, |t| t.min(want))
    }

    /// `bytes` were read (and written to the log).
    pub(crate) fn spend(&mut self, bytes: usize) {
        if self.rate.is_some() {
            let cost = u128::try_from(bytes).unwrap_or(u128::MAX).saturating_mul(SCALE);
            self.tokens = self.tokens.saturating_sub(cost);
        }
    }

    /// What to do with the pipe after reading from it at `now`, with `waiting` bytes still
    /// in it (0: it was found empty).
    pub(crate) fn after(&mut self, now: Instant, waiting: u64) -> Next {
        let Some(rate) = self.rate else {
            self.held_since = None;
            return Next::Watch;
        };
        if waiting == 0 {
            self.held_since = None;
            return Next::Watch;
        }
        self.refill(now);
        let threshold = u128::from(self.wake_threshold()) * SCALE;
        if self.tokens >= threshold {
            // Still allowed to read a useful amount (the loop bounded its reads per
            // wake-up): the pipe is readable, so the next poll comes straight back.
            return Next::Watch;
        }
        let since = *self.held_since.get_or_insert(now);
        let missing = threshold - self.tokens;
        let refill_ns = missing.div_ceil(u128::from(rate));
        let refilled = later(now, Duration::from_nanos(u64::try_from(refill_ns).unwrap_or(u64::MAX)));
        let hold_ends = later(since, HOLD_LIMIT);
        if now >= hold_ends {
            Next::DropAndWakeAt(refilled.min(later(now, DROP_TICK)))
        } else {
            Next::WakeAt(refilled.min(hold_ends))
        }
    }

    /// Whether the stream has been held back long enough that what waits is being dropped.
    pub(crate) fn dropping(&self, now: Instant) -> bool {
        self.held_since
            .is_some_and(|since| now >= later(since, HOLD_LIMIT))
    }

    /// The least worth waking up for: a full read, or the whole bucket when it is smaller.
    fn wake_threshold(&self) -> u64 {
        self.burst.min(super::PUMP_CHUNK as u64).max(1)
    }

    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else {
            return;
        };
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let cap = u128::from(self.burst) * SCALE;
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(u128::from(rate)))
            .min(cap);
    }
}

/// `at + d`, or as far as the clock goes.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const CHUNK: usize = super::super::PUMP_CHUNK;

    /// A virtual clock: an origin and how far it has been moved.
    struct Clock(Instant, Duration);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now(), Duration::ZERO)
        }
        fn now(&self) -> Instant {
            self.0 + self.1
        }
        fn advance(&mut self, d: Duration) -> Instant {
            self.1 += d;
            self.now()
        }
        fn to(&mut self, at: Instant) -> Instant {
            self.1 = at - self.0;
            at
        }
    }

    /// Reads as the event loop does: up to 16 chunks while there are tokens, from a pipe
    /// holding `pipe` bytes. Returns the bytes read.
    fn serve(limiter: &mut Limiter, now: Instant, pipe: &mut u64) -> u64 {
        let mut read = 0;
        for _ in 0..16 {
            let allow = limiter.allowance(now, CHUNK) as u64;
            let n = allow.min(*pipe);
            if n == 0 {
                break;
            }
            limiter.spend(n as usize);
            *pipe -= n;
            read += n;
        }
        read
    }

    #[test]
    fn no_rate_reads_everything_and_always_watches() {
        let clock = Clock::new();
        let mut l = Limiter::new(None, clock.now());
        assert_eq!(l.allowance(clock.now(), CHUNK), CHUNK);
        l.spend(CHUNK);
        assert_eq!(l.allowance(clock.now(), CHUNK), CHUNK);
        assert_eq!(l.after(clock.now(), 10 * MIB), Next::Watch);
        assert!(!l.dropping(clock.now()));
        // A zero rate is no limit too (the spec refuses it; this is the last line).
        assert_eq!(Limiter::new(Some(0), clock.now()).rate(), None);
    }

    #[test]
    fn the_burst_is_read_at_once_then_the_rate() {
        let mut clock = Clock::new();
        let mut l = Limiter::new(Some(MIB), clock.now());
        let mut pipe = 100 * MIB;
        let mut read = 0;
        // The bucket starts with two seconds of the rate; 16 chunks per wake-up.
        while read < 2 * MIB {
            let n = serve(&mut l, clock.now(), &mut pipe);
            assert!(n > 0);
            read += n;
        }
        assert_eq!(read, 2 * MIB);
        assert_eq!(l.allowance(clock.now(), CHUNK), 0);
        // Held back: come back when a full chunk is there (1/16 s at 1 MiB/s).
        let start = clock.now();
        assert_eq!(
            l.after(start, pipe),
            Next::WakeAt(start + Duration::from_millis(62_500) / 1000)
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.allowance(clock.now(), usize::MAX), (MIB / 2) as usize);
    }

    #[test]
    fn tokens_never_exceed_the_burst() {
        let mut clock = Clock::new();
        let mut l = Limiter::new(Some(1000), clock.now());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(l.allowance(clock.now(), usize::MAX), 2000);
        // Refills are exact at rates that do not divide a second.
        let mut l = Limiter::new(Some(3), clock.now());
        l.spend(6);
        clock.advance(Duration::from_millis(333));
        assert_eq!(l.allowance(clock.now(), usize::MAX), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.allowance(clock.now(), usize::MAX), 1);
    }

    #[test]
    fn an_empty_pipe_is_not_held_back() {
        let clock = Clock::new();
        let mut l = Limiter::new(Some(1000), clock.now());
        l.spend(2000);
        assert_eq!(l.after(clock.now(), 0), Next::Watch);
        assert!(!l.dropping(clock.now()));
    }

    #[test]
    fn a_stream_held_back_for_the_hold_limit_is_dropped_each_tick() {
        let mut clock = Clock::new();
        let rate = 256 * 1024;
        let mut l = Limiter::new(Some(rate), clock.now());
        let mut pipe = u64::MAX / 2;
        let start = clock.now();
        let mut logged = 0;
        let mut dropped_at = None;
        // Follow the limiter's own wake-ups, as the event loop's timers would.
        for _ in 0..1000 {
            let now = clock.now();
            logged += serve(&mut l, now, &mut pipe);
            match l.after(now, pipe) {
                Next::Watch => {}
                Next::WakeAt(at) => {
                    assert!(at > now, "a wake-up in the past spins the loop");
                    assert!(!l.dropping(now));
                    clock.to(at);
                }
                Next::DropAndWakeAt(at) => {
                    dropped_at.get_or_insert(now);
                    assert!(l.dropping(now));
                    assert!(at > now && at <= now + DROP_TICK, "{:?}", at - now);
                    clock.to(at);
                }
            }
            if dropped_at.is_some_and(|d| clock.now() >= d + Duration::from_secs(2)) {
                break;
            }
        }
        let dropped_at = dropped_at.expect("the flood was never dropped");
        // Held back from the moment the burst was spent (at once), dropped HOLD_LIMIT later.
        assert_eq!(dropped_at - start, HOLD_LIMIT);
        // What reached the log: the burst, then the rate, never more.
        let elapsed = (clock.now() - start).as_secs_f64();
        let allowed = 2.0 * rate as f64 + elapsed * rate as f64;
        assert!(logged as f64 <= allowed, "{logged} > {allowed}");
        assert!(logged as f64 >= allowed - 2.0 * CHUNK as f64, "{logged} << {allowed}");
    }

    #[test]
    fn a_pause_in_the_flood_starts_the_hold_over() {
        let mut clock = Clock::new();
        let mut l = Limiter::new(Some(1000), clock.now());
        l.spend(2000);
        let now = clock.now();
        assert!(matches!(l.after(now, 5000), Next::WakeAt(_)));
        clock.advance(HOLD_LIMIT / 2);
        // The task stopped writing and the pipe was emptied: no longer held.
        assert_eq!(l.after(clock.now(), 0), Next::Watch);
        // It writes again, and what the bucket holds is read at once.
        let all = l.allowance(clock.now(), usize::MAX);
        l.spend(all);
        let now = clock.advance(HOLD_LIMIT / 2);
        assert!(matches!(l.after(now, 5000), Next::WakeAt(_)));
        assert!(!l.dropping(now));
        // The hold is counted from the new start.
        let now = clock.advance(HOLD_LIMIT);
        assert!(matches!(l.after(now, 5000), Next::DropAndWakeAt(_)));
        assert!(l.dropping(now));
    }

    #[test]
    fn the_wake_up_never_passes_the_end_of_the_hold() {
        let clock = Clock::new();
        // One byte a second: a chunk would take a day; the hold still ends on time.
        let mut l = Limiter::new(Some(1), clock.now());
        l.spend(2);
        let now = clock.now();
        assert_eq!(l.after(now, 100), Next::WakeAt(now + Duration::from_secs(1)));
        assert_eq!(l.wake_threshold(), 2);
    }

    #[test]
    fn lifting_the_limit_reads_everything() {
        let clock = Clock::new();
        let mut l = Limiter::new(Some(1000), clock.now());
        l.spend(2000);
        assert!(matches!(l.after(clock.now(), 10), Next::WakeAt(_)));
        l.lift();
        assert_eq!(l.allowance(clock.now(), CHUNK), CHUNK);
        assert_eq!(l.after(clock.now(), 10), Next::Watch);
        assert_eq!(l.rate(), None);
    }
}
