//! [`HandleId`]: the record a restarted agent reattaches from.
//!
//! A handle id crosses a trust boundary: agents persist it in their own state stores, and a
//! corrupted or forged one must never make the driver signal an unrelated process or remove
//! an unrelated cgroup. So `parse` is strict: bounded input, a known format version, no
//! unknown fields, absolute plain paths, a cgroup that is one plain name under the driver's
//! parent, pids above 1, and a kill timeout within its recorded maximum. The platform then
//! confines the paths to its own data dir and checks process start times before trusting pids.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::platform::TaskRecord;
use crate::signal::Signal;
use crate::spec::{is_plain_absolute, validate_task_id};

/// The handle format this build reads and writes.
pub const HANDLE_FORMAT_VERSION: u32 = 1;
/// Largest handle id `parse` looks at; real ones are well under 1 KiB.
pub const MAX_HANDLE_LEN: usize = 16 * 1024;
/// Longest cgroup name accepted in a handle (the kernel's NAME_MAX).
pub const MAX_CGROUP_NAME_LEN: usize = 255;

/// A process as identified safely: its pid and the start time that pins down which process
/// that pid meant (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessIdentity {
    /// The pid in the agent's pid namespace.
    pub pid: i32,
    /// When the process started, in clock ticks since boot.
    pub start_time: u64,
}

/// The supervisor: its process identity and the socket it serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorIdentity {
    /// The supervisor process.
    pub process: ProcessIdentity,
    /// Its unix socket, in the driver's state dir.
    pub socket: PathBuf,
}

/// Everything needed to find a running task again from a new agent process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandleId {
    /// Handle format version, [`HANDLE_FORMAT_VERSION`].
    pub format: u32,
    /// The driver version that wrote the handle.
    pub driver_version: String,
    /// The task's id.
    pub task_id: String,
    /// The supervisor that owns the task.
    pub supervisor: SupervisorIdentity,
    /// The task's main process.
    pub task: ProcessIdentity,
    /// The task's cgroup: one name under the driver's cgroup parent.
    pub cgroup: String,
    /// The task's state dir (socket, exit record), in the driver's data dir.
    pub state_dir: PathBuf,
    /// The task dir.
    pub task_dir: PathBuf,
    /// The allocation dir.
    pub alloc_dir: PathBuf,
    /// The effective kill timeout, in milliseconds.
    pub kill_timeout_ms: u64,
    /// The ceiling the kill timeout may be updated to, in milliseconds.
    pub max_kill_timeout_ms: u64,
    /// The graceful signal a kill sends, so a reattached agent kills the way the task asked.
    pub kill_signal: Signal,
}

/// Why a handle id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Longer than [`MAX_HANDLE_LEN`].
    #[error("handle id is {len} bytes, more than the {max} a handle id can be", max = MAX_HANDLE_LEN)]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not JSON of the right shape.
    #[error("handle id is malformed: {0}")]
    Malformed(String),
    /// A format this build does not read.
    #[error("handle id has format version {found}, this driver reads version {expected}", expected = HANDLE_FORMAT_VERSION)]
    UnsupportedVersion {
        /// The version found, as written.
        found: String,
    },
    /// A field whose value cannot be trusted.
    #[error("handle id field `{field}` is invalid: {why}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl HandleId {
    /// The handle of the task `record` describes, under a driver whose longest kill timeout
    /// is `max_kill_timeout`: the one way a handle id is made.
    pub fn new(record: &TaskRecord, max_kill_timeout: Duration) -> Self {
        let max = millis(max_kill_timeout);
        HandleId {
            format: HANDLE_FORMAT_VERSION,
            driver_version: crate::DRIVER_VERSION.to_owned(),
            task_id: record.task_id.clone(),
            supervisor: record.supervisor.clone(),
            task: record.task,
            cgroup: record.cgroup.clone(),
            state_dir: record.state_dir.clone(),
            task_dir: record.task_dir.clone(),
            alloc_dir: record.alloc_dir.clone(),
            kill_timeout_ms: millis(record.kill_timeout).min(max),
            max_kill_timeout_ms: max,
            kill_signal: record.kill_signal,
        }
    }

    /// Parses and checks a handle id; never panics, whatever the input.
    pub fn parse(text: &str) -> Result<Self, HandleError> {
        if text.len() > MAX_HANDLE_LEN {
            return Err(HandleError::TooLarge { len: text.len() });
        }
        // The version is checked before the shape so that a handle from a future format is
        // reported as such, not as a pile of unknown fields.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| HandleError::Malformed(e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(HandleError::Malformed("expected a json object".to_owned()));
        };
        match object.get("format") {
            Some(v) if v.as_u64() == Some(u64::from(HANDLE_FORMAT_VERSION)) => {}
            Some(v) => {
                return Err(HandleError::UnsupportedVersion {
                    found: v.to_string(),
                });
            }
            None => return Err(HandleError::Malformed("missing field `format`".to_owned())),
        }
        let handle: HandleId =
            serde_json::from_value(value).map_err(|e| HandleError::Malformed(e.to_string()))?;
        handle.validate()?;
        Ok(handle)
    }

    /// Checks every field the way `parse` does.
    pub fn validate(&self) -> Result<(), HandleError> {
        let invalid =
            |field: &'static str, why: String| Err(HandleError::InvalidField { field, why });
        if self.format != HANDLE_FORMAT_VERSION {
            return Err(HandleError::UnsupportedVersion {
                found: self.format.to_string(),
            });
        }
        if self.driver_version.is_empty()
            || self.driver_version.len() > 64
            || self.driver_version.chars().any(char::is_control)
        {
            return invalid(
                "driver_version",
                "must be 1 to 64 characters without control characters".to_owned(),
            );
        }
        if let Err(e) = validate_task_id(&self.task_id) {
            return invalid("task_id", e.to_string());
        }
        for (field, pid) in [
            ("supervisor.process.pid", self.supervisor.process.pid),
            ("task.pid", self.task.pid),
        ] {
            if pid <= 1 {
                return invalid(
                    field,
                    format!("pid {pid} is not a process the driver started"),
                );
            }
        }
        if !valid_cgroup_name(&self.cgroup) {
            return invalid(
                "cgroup",
                format!(
                    "{:?} must be one plain name under the driver's cgroup parent (no `/`, no `..`)",
                    self.cgroup
                ),
            );
        }
        for (field, path) in [
            ("supervisor.socket", &self.supervisor.socket),
            ("state_dir", &self.state_dir),
            ("task_dir", &self.task_dir),
            ("alloc_dir", &self.alloc_dir),
        ] {
            if !is_plain_absolute(path) {
                return invalid(
                    field,
                    format!("{path:?} must be absolute, without `..` or nul"),
                );
            }
        }
        if self.kill_timeout_ms > self.max_kill_timeout_ms {
            return invalid(
                "kill_timeout_ms",
                format!(
                    "{} ms is above the maximum of {} ms",
                    self.kill_timeout_ms, self.max_kill_timeout_ms
                ),
            );
        }
        Ok(())
    }

    /// The effective kill timeout.
    pub fn kill_timeout(&self) -> Duration {
        Duration::from_millis(self.kill_timeout_ms)
    }

    /// The ceiling for kill timeout updates.
    pub fn max_kill_timeout(&self) -> Duration {
        Duration::from_millis(self.max_kill_timeout_ms)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn valid_cgroup_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CGROUP_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0', '\n'])
}

impl fmt::Display for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Serializing a struct of strings, integers and paths that were valid UTF-8 on the
        // way in cannot fail; a non-UTF-8 path would, and is written lossily instead of
        // panicking.
        match serde_json::to_string(self) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(
                f,
                "{{\"format\":{},\"error\":\"unserializable handle\"}}",
                self.format
            ),
        }
    }
}

impl std::str::FromStr for HandleId {
    type Err = HandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HandleId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> HandleId {
        HandleId {
            format: HANDLE_FORMAT_VERSION,
            driver_version: "0.1.0".into(),
            task_id: "task-1".into(),
            supervisor: SupervisorIdentity {
                process: ProcessIdentity {
                    pid: 100,
                    start_time: 5,
                },
                socket: "/var/lib/execdriver/tasks/task-1/supervisor.sock".into(),
            },
            task: ProcessIdentity {
                pid: 101,
                start_time: 6,
            },
            cgroup: "execdriver-task-1".into(),
            state_dir: "/var/lib/execdriver/tasks/task-1".into(),
            task_dir: "/alloc/web".into(),
            alloc_dir: "/alloc".into(),
            kill_timeout_ms: 5000,
            max_kill_timeout_ms: 30000,
            kill_signal: Signal::SIGINT,
        }
    }

    #[test]
    fn round_trips_exactly() {
        let h = sample();
        let text = h.to_string();
        assert_eq!(HandleId::parse(&text), Ok(h));
        assert_eq!(HandleId::parse(&text).map(|h| h.to_string()), Ok(text));
    }

    #[test]
    fn refuses_forgeries() {
        let check = |mutate: fn(&mut HandleId), needle: &str| {
            let mut h = sample();
            mutate(&mut h);
            let text = serde_json::to_string(&h).expect("serialize");
            let err = HandleId::parse(&text).expect_err(needle);
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        };
        check(|h| h.task.pid = 1, "task.pid");
        check(|h| h.supervisor.process.pid = 0, "supervisor.process.pid");
        check(|h| h.state_dir = "relative".into(), "state_dir");
        check(|h| h.task_dir = "/alloc/../etc".into(), "task_dir");
        check(|h| h.cgroup = "../system.slice".into(), "cgroup");
        check(|h| h.cgroup = "/".into(), "cgroup");
        check(|h| h.kill_timeout_ms = 30001, "kill_timeout_ms");
        check(|h| h.task_id = "a/b".into(), "task_id");
        check(|h| h.format = 2, "format version 2");
    }

    #[test]
    fn refuses_bad_shapes() {
        assert!(matches!(
            HandleId::parse(""),
            Err(HandleError::Malformed(_))
        ));
        assert!(matches!(
            HandleId::parse("[]"),
            Err(HandleError::Malformed(_))
        ));
        assert!(matches!(
            HandleId::parse("{}"),
            Err(HandleError::Malformed(_))
        ));
        let big = " ".repeat(MAX_HANDLE_LEN + 1);
        assert!(matches!(
            HandleId::parse(&big),
            Err(HandleError::TooLarge { .. })
        ));
        let mut v = serde_json::to_value(sample()).expect("value");
        v["extra"] = serde_json::json!(1);
        let err = HandleId::parse(&v.to_string()).expect_err("unknown field");
        assert!(err.to_string().contains("extra"), "{err}");
        let mut v = serde_json::to_value(sample()).expect("value");
        v["format"] = serde_json::json!("1");
        assert!(matches!(
            HandleId::parse(&v.to_string()),
            Err(HandleError::UnsupportedVersion { .. })
        ));
    }
}
