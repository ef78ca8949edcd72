//! What the `execdriver` CLI tests share: the root check, the binary run against a test
//! environment's data dir and slice, and reading its output.
// Each test crate uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::linux_support::TestEnv;

/// How long a test's leftover check waits for its tasks to be gone.
pub const CLEAN: Duration = Duration::from_secs(5);

/// The test's environment, or `None` (after a printed reason, or a failure under CI) without
/// root.
pub fn env(test: &str) -> Option<TestEnv> {
    execdriver_linux::testing::require_root(test, "it creates cgroups and namespaces")
        .then(|| TestEnv::new(PathBuf::from(env!("CARGO_BIN_EXE_execdriver"))))
}

/// `execdriver --data-dir .. --slice .. ARGS`, stdin from /dev/null.
pub fn command(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(&env.binary);
    cmd.arg("--data-dir")
        .arg(&env.data)
        .arg("--slice")
        .arg(&env.slice)
        .args(args)
        // Errors must be printed by execdriver, never as a panic with a backtrace.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs [`command`] to its end.
pub fn cli(env: &TestEnv, args: &[&str]) -> Output {
    command(env, args).output().expect("run execdriver")
}

/// Output as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
