//! execdriver-core: the pure model of an isolated task driver.
//!
//! This crate never touches the operating system: no files, processes, threads or clocks of
//! its own. Everything that does lives behind the [`Platform`] trait, which the Linux backend
//! implements for real and the mock backend implements in memory with a virtual clock.
//!
//! - [`config`]: the user's task config (`command`, `args`), weakly typed like the reference.
//! - [`spec`]: [`TaskSpec`], everything a start needs, with field-by-field validation.
//! - [`lifecycle`]: the task state machine, a pure [`step`] function with effects as data.
//! - [`handle`]: [`HandleId`], the serialized record from which a restarted agent reattaches.
//! - [`platform`]: the OS boundary.
//! - [`driver`]: [`Driver`] and [`TaskHandle`], which drive `step` and run its effects.

pub mod config;
pub mod driver;
pub mod handle;
pub mod lifecycle;
pub mod platform;
pub mod signal;
pub mod spec;

pub use config::{ConfigError, TaskConfig, validate_command};
pub use driver::{Driver, DriverConfig, DriverError, LifecycleHooks, NoHooks, TaskHandle};
pub use handle::{HandleError, HandleId, ProcessIdentity, SupervisorIdentity};
pub use lifecycle::{
    CleanupScope, Effect, Event, EventKind, ExitStatus, State, TransitionError, WaitResult,
    kill_timeout, step,
};
pub use platform::{
    CpuStats, Fingerprint, MemoryStats, Platform, PlatformError, Reattach, Spawned, TaskStats,
    Timestamp,
};
pub use signal::{Signal, SignalError};
pub use spec::{LogRotation, Resources, SpecError, TaskSpec, validate_task_id};

#[cfg(feature = "mock")]
pub use platform::{MockPlatform, MockSupervisor};

/// The version recorded in every handle id this build writes.
pub const DRIVER_VERSION: &str = env!("CARGO_PKG_VERSION");
