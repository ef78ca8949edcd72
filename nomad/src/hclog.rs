//! Log lines on stderr in the JSON form go-plugin re-logs at their own level: one object per
//! line with `@level`, `@message`, `@timestamp` and `@module`, plus any key-value pairs.
//!
//! A write that fails (stderr closed after the agent died, a full pipe) is dropped: the
//! plugin must live on until the agent comes back and reattaches.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The module name every line carries.
pub const MODULE: &str = "execdriver";

/// The levels hclog knows, as they are spelled on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The line for `message` at `level` with `fields`, at wall-clock time `now`.
pub fn line(level: Level, message: &str, fields: &[(&str, &str)], now: SystemTime) -> String {
    let mut object = Map::new();
    object.insert("@level".into(), Value::from(level.as_str()));
    object.insert("@message".into(), Value::from(message));
    object.insert("@module".into(), Value::from(MODULE));
    object.insert("@timestamp".into(), Value::from(timestamp(now)));
    for (key, value) in fields {
        // The `@` keys are hclog's own: a field cannot overwrite them.
        if !key.starts_with('@') {
            object.insert((*key).into(), Value::from(*value));
        }
    }
    Value::Object(object).to_string()
}

/// Writes one log line to stderr; a failed write is dropped.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let mut text = line(level, message, fields, SystemTime::now());
    text.push('\n');
    // One write per line, so lines from several threads do not interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Logs at info.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Logs at warn.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Logs at error.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}

/// Logs at debug.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// `2006-01-02T15:04:05.000000Z`: hclog's JSON time format, in UTC.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01 (the proleptic Gregorian calendar,
/// by eras of 400 years, which repeat exactly).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_hclog_format_in_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789012
        let t = UNIX_EPOCH + Duration::new(951_827_696, 789_012_000);
        assert_eq!(timestamp(t), "2000-02-29T12:34:56.789012Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(timestamp(t), "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn a_line_is_one_json_object_with_the_hclog_keys() {
        let text = line(
            Level::Warn,
            "a \"quoted\"\nmessage",
            &[("task_id", "t1"), ("@level", "forged")],
            UNIX_EPOCH,
        );
        assert!(!text.contains('\n'));
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["@level"], "warn");
        assert_eq!(value["@message"], "a \"quoted\"\nmessage");
        assert_eq!(value["@module"], MODULE);
        assert_eq!(value["@timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(value["task_id"], "t1");
    }
}
