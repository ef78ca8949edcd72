//! execdriver-core: the pure model of an isolated task driver.
//!
//! This crate never touches the operating system: no files, processes, threads or clocks of
//! its own. Everything that does lives behind the [`Platform`] trait, which the Linux backend
//! implements for real and the mock backend implements in memory with a virtual clock.
//!
//! - [`config`]: the user's task config (`command`, `args`), weakly typed like the reference.
//! - [`spec`]: [`TaskSpec`], everything a start needs, with field-by-field validation.
//! - [`seccomp`]: the task's system call filter, and profiles in the OCI JSON format.
//! - [`lifecycle`]: the task state machine, [`Lifecycle`], which owns the kill's deadlines.
//! - [`outcome`]: how a task ended ([`WaitResult`]) and the typed errors a result carries.
//! - [`handle`]: [`HandleId`], the serialized record from which a restarted agent reattaches.
//! - [`platform`]: the OS boundary, with typed [`PlatformError`]s.
//! - [`driver`]: [`Driver`] and [`TaskHandle`], which drive the machine and run its effects.
//!
//! An agent matches on error kinds rather than on messages:
//!
//! ```
//! use execdriver_core::{DriverError, PlatformError};
//!
//! fn advice(e: &DriverError) -> &'static str {
//!     match e {
//!         DriverError::NotFound { .. } => "no such task",
//!         DriverError::Platform { source: PlatformError::Unresponsive { .. }, .. } => {
//!             "the supervisor is busy or stopped: try again, or kill (which works by cgroup)"
//!         }
//!         e if e.is_transient() => "try again",
//!         _ => "give up",
//!     }
//! }
//! # let e = DriverError::NotFound { task_id: "t".into(), reason: "no state".into() };
//! # assert_eq!(advice(&e), "no such task");
//! ```

pub mod config;
pub mod cpuset;
pub mod devices;
pub mod dns;
pub mod driver;
pub mod exec;
pub mod handle;
pub mod lifecycle;
pub mod log_outputs;
pub mod logs;
pub mod outcome;
pub mod platform;
pub mod seccomp;
pub mod signal;
pub mod spec;

pub use config::{ConfigError, TaskConfig, validate_command};
pub use cpuset::{CpuList, CpuListError};
pub use devices::{DeviceError, DeviceMapping};
pub use dns::{DnsConfig, DnsError};
pub use driver::{
    Driver, DriverConfig, DriverError, LifecycleHooks, Listed, NoHooks, Operation, TaskHandle,
    TaskStatus,
};
pub use exec::{ExecExit, ExecRequest, ExecSession, ExecStarted, ExecStdio};
pub use handle::{HandleError, HandleId, ProcessIdentity, SupervisorIdentity};
pub use lifecycle::{
    Effect, Event, EventKind, Lifecycle, State, Timeouts, TransitionError, kill_timeout,
};
pub use log_outputs::LogOutputs;
pub use logs::{LogStart, find_start};
pub use outcome::{CleanupFailure, CleanupStep, ExitStatus, TaskError, TaskErrorKind, WaitResult};
pub use platform::{
    CpuStats, Fingerprint, FoundTask, LogChunk, LogCursor, LogStats, LogStream, LogTime,
    MemoryStats, Platform, PlatformError, PlatformErrorKind, Reattach, Refusal, SpawnStep, Spawned,
    TaskDetails, TaskLimits, TaskRecord, TaskStats, Timestamp,
};
pub use seccomp::{Seccomp, SeccompProfile, SeccompProfileError};
pub use signal::{Signal, SignalError};
pub use spec::{
    BindMount, LogRotation, Network, Propagation, Resources, SpecError, Stdin, TaskSpec,
    TerminalSize, UserSpec, parse_user, validate_cpuset_cgroup, validate_task_id,
};

#[cfg(feature = "mock")]
pub use platform::{MockPlatform, MockSupervisor};

/// The version recorded in every handle id this build writes.
pub const DRIVER_VERSION: &str = env!("CARGO_PKG_VERSION");
