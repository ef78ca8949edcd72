//! execdriver-linux: the [`execdriver_core::Platform`] for Linux, and the `execdriver` binary.
//!
//! Where things are:
//! - [`platform`]: [`LinuxPlatform`], the `Platform` impl an agent embeds in `Driver`.
//! - [`supervisor`]: the `execdriver supervise` process that owns one task, and its protocol.
//! - [`isolation`]: how a task is started: namespaces, the task root, the user drop, exec.
//! - [`cgroups`]: every cgroup operation (create with limits, kill all, destroy, OOM, stats).
//! - [`kill`]: the kill path (force kill and the orphan cleanup by cgroup).
//! - [`reattach`]: the reattach path (confine a handle id, connect, verify, fall back).
//! - [`process`]: pidfds and process identities (pid + start time).
//! - [`logs`]: size-rotated log files for the task's stdout and stderr.
//! - [`fingerprint`]: whether this node can run tasks.
//! - [`mountinfo`]: the parser of /proc/self/mountinfo.
//! - [`state`]: the layout of the data dir (`tasks/<task id>/` state dirs).
//! - [`testing`]: for tests only: skip (or, under CI, fail) a test that needs root.

pub mod cgroups;
pub mod fingerprint;
pub mod isolation;
pub mod kill;
pub mod logs;
pub mod mountinfo;
pub mod platform;
pub mod process;
pub mod reattach;
pub mod state;
pub mod supervisor;
pub mod testing;

pub use platform::{LinuxConfig, LinuxPlatform};
