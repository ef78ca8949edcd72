//! [`LogOutputs`]: where a task's stdout and stderr go instead of the driver's rotating files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where each stream of the task goes. A stream with no path goes to the driver's rotating
/// log files (`<alloc dir>/logs/<task>.<stream>.<n>`); a stream with one goes there instead:
/// a FIFO someone else reads (Nomad's log collector), or a file appended to. The supervisor
/// opens it before the task starts and holds it for the task's whole life; the task itself
/// never gets it, only its pipe to the supervisor. A FIFO with no reader never blocks or
/// kills the task: what does not fit is dropped, counted and marked (see the backend's log
/// pump).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogOutputs {
    /// The task's stdout, instead of its rotating files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<PathBuf>,
    /// The task's stderr, instead of its rotating files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<PathBuf>,
}

impl LogOutputs {
    /// Both streams go to the rotating files: the default.
    pub fn is_default(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }
}
