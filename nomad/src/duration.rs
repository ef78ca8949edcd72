//! Durations written the way Nomad's users write them (Go's `time.ParseDuration`):
//! `30s`, `1m30s`, `1.5h`, `250ms`; units ns, us (or µs), ms, s, m, h; a bare `0`.

use std::time::Duration;

/// Parses a Go-style duration; negative durations are refused.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write it as 30s, 1m30s, 1.5h or 250ms");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(unit_ns).ok_or_else(bad)?;
        // The fraction to nanosecond precision; digits beyond it cannot matter.
        let mut scale = unit_ns;
        for digit in fraction.chars().take(24) {
            scale /= 10;
            let d = u128::from(digit.to_digit(10).ok_or_else(bad)?);
            part = part.checked_add(d * scale).ok_or_else(bad)?;
        }
        total_ns = total_ns.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 10^9, so it fits.
    let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way [`parse`] reads it back: `30s`, `1m30s`, `250ms`.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) || d.as_secs() == 0 {
        if d.as_nanos().is_multiple_of(1_000_000) {
            return format!("{}ms", d.as_millis());
        }
        return format!("{}ns", d.as_nanos());
    }
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let mut out = String::new();
    if secs >= 3600 {
        out.push_str(&format!("{}h", secs / 3600));
    }
    if secs % 3600 >= 60 {
        out.push_str(&format!("{}m", secs % 3600 / 60));
    }
    if !secs.is_multiple_of(60) || millis != 0 {
        if millis == 0 {
            out.push_str(&format!("{}s", secs % 60));
        } else {
            out.push_str(&format!("{}.{:03}s", secs % 60, millis));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            (".5s", Duration::from_millis(500)),
            ("2µs", Duration::from_micros(2)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused_with_the_text() {
        for text in [
            "",
            "30",
            "-1s",
            "1x",
            "s",
            "1..2s",
            "1.2.3s",
            "99999999999999999999999h",
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains("is not a duration"), "{text}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_secs(3600 * 2 + 5),
            Duration::from_millis(1500),
            Duration::from_millis(250),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
    }
}
