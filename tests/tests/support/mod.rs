//! Helpers shared by the mock-based tests: specs and a recorder of lifecycle hooks.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use execdriver_core::{LifecycleHooks, Signal, TaskConfig, TaskSpec, WaitResult};

/// A valid spec for `id` with the given kill signal and timeout.
pub fn spec_with(id: &str, kill_signal: Signal, kill_timeout: Duration) -> TaskSpec {
    let mut spec = TaskSpec::new(
        id,
        "web",
        "/alloc",
        format!("/alloc/{id}"),
        TaskConfig::new("/bin/sleep", ["1000"]),
    );
    spec.kill_signal = kill_signal;
    spec.kill_timeout = kill_timeout;
    spec
}

/// A valid spec for `id` with the defaults (SIGINT, 5 s).
pub fn spec(id: &str) -> TaskSpec {
    let defaults = TaskSpec::new("x", "x", "/", "/", TaskConfig::default());
    spec_with(id, defaults.kill_signal, defaults.kill_timeout)
}

/// One call of a lifecycle hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `on_running`.
    Running,
    /// `on_exited` with its result.
    Exited(WaitResult),
}

/// Records every hook call per task id, in order.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<BTreeMap<String, Vec<Hook>>>,
}

impl Recorder {
    fn push(&self, task_id: &str, hook: Hook) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(task_id.to_owned())
            .or_default()
            .push(hook);
    }

    /// The hook calls for `task_id`, in order.
    pub fn of(&self, task_id: &str) -> Vec<Hook> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(task_id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many times `on_running` and `on_exited` were called for `task_id`.
    pub fn counts(&self, task_id: &str) -> (usize, usize) {
        let calls = self.of(task_id);
        let running = calls.iter().filter(|h| **h == Hook::Running).count();
        (running, calls.len() - running)
    }
}

impl LifecycleHooks for Recorder {
    fn on_running(&self, task_id: &str) {
        self.push(task_id, Hook::Running);
    }

    fn on_exited(&self, task_id: &str, result: &WaitResult) {
        self.push(task_id, Hook::Exited(result.clone()));
    }
}

/// A proptest config with `cases` cases whose failures are saved to
/// `tests/proptest-regressions/<file>` (the default looks for a `lib.rs` next to the test
/// and, finding none in `tests/tests`, would write beside the source instead).
#[macro_export]
macro_rules! proptest_config {
    ($cases:expr, $file:literal) => {
        proptest::test_runner::Config {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(concat!(
                    "proptest-regressions/",
                    $file
                )),
            )),
            ..proptest::test_runner::Config::with_cases($cases)
        }
    };
}
