//! Parsers for the values users type: sizes, durations, `KEY=VALUE`, and generated task ids.
//!
//! They run after clap, so a bad value is reported as one line naming the option and the
//! value, with exit status 125, the same as every other refusal of bad input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A size in bytes as docker's `--memory` takes it: a number with an optional K, M, G or T
/// (powers of 1024, with or without `i`/`B`), such as `64M`, `64MiB`, `1.5G` or `4096`.
pub fn size(text: &str) -> Result<u64, String> {
    const BINARY: parse_size::Config = parse_size::Config::new().with_binary();
    BINARY.parse_size(text.trim()).map_err(|e| match e {
        parse_size::Error::PosOverflow => format!("{text:?} is too large"),
        parse_size::Error::Empty | parse_size::Error::InvalidDigit => format!(
            "{text:?} is not a size: use a number of bytes with an optional K, M, G or T \
             suffix, such as 64M"
        ),
        _ => format!("{text:?} is not a size: {e}"),
    })
}

/// A duration: a bare number of seconds (as docker's `--stop-timeout`), or numbers with
/// units in humantime's grammar (`500ms`, `5s`, `1m30s`, `1h`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too large"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "{text:?} is not a duration ({e}): use a number with a unit, such as 500ms, 5s, 1m \
             or 1h"
        )
    })
}

/// A moment for `logs --since`, in unix nanoseconds: a duration back from `now`, an RFC 3339
/// time in UTC, or unix seconds (with an optional fraction), as docker takes it.
pub fn since(text: &str, now: SystemTime) -> Result<u64, String> {
    let t = text.trim();
    let at = if let Ok(at) = humantime::parse_rfc3339_weak(t) {
        at
    } else if let Ok(secs) = t.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(format!(
                "{text:?} is not a time: unix seconds are never negative"
            ));
        }
        UNIX_EPOCH + Duration::from_secs_f64(secs.min(u64::MAX as f64 / 1e9))
    } else {
        let back = humantime::parse_duration(t).map_err(|_| {
            format!(
                "{text:?} is neither a duration (10m, 1h30m), an RFC 3339 time in UTC \
                 (2026-12-03T10:00:00Z) nor unix seconds"
            )
        })?;
        now.checked_sub(back).unwrap_or(UNIX_EPOCH)
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
}

/// `KEY=VALUE`; the value may be empty or contain `=`.
pub fn env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A fresh task id from the clock and our pid: `t<seconds>-<nanos>-<pid>`.
pub fn generate_task_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "t{:x}-{:x}-{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

/// A duration for people: `1s 500ms`, `300ms`.
pub fn human_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64M"), Ok(64 << 20));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("64mb"), Ok(64 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("1Gi"), Ok(1 << 30));
        assert_eq!(size("512k"), Ok(512 << 10));
        assert_eq!(size("100B"), Ok(100));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        for bad in ["", "M", "12X", "-1", "99999999999999999999", "20000000T"] {
            let err = size(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "5x", "-1s", "99999999999999999999999"] {
            let err = duration(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn since_takes_durations_times_and_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(since("10m", now), Ok((1_000_000 - 600) * 1_000_000_000));
        assert_eq!(since("1h30m", now), Ok((1_000_000 - 5400) * 1_000_000_000));
        assert_eq!(
            since("2026-12-03T10:00:00.5Z", now),
            Ok(1_796_292_000_500_000_000)
        );
        assert_eq!(since("1.25", now), Ok(1_250_000_000));
        assert_eq!(since("100000000h", now), Ok(0));
        assert!(since("yesterday", now).is_err());
        assert!(since("-5", now).is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(env_pair("A="), Ok(("A".into(), String::new())));
        assert!(env_pair("=x").is_err());
        assert!(env_pair("novalue").is_err());
    }

    #[test]
    fn generated_ids_are_valid() {
        let id = generate_task_id();
        assert_eq!(execdriver_core::validate_task_id(&id), Ok(()));
    }

    #[test]
    fn human() {
        assert_eq!(human_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1s 500ms");
    }
}
