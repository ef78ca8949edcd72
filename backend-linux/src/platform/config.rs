//! [`LinuxConfig`]: the settings of the Linux platform.

use std::path::PathBuf;
use std::time::Duration;

/// The default data dir of the `execdriver` binary.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/execdriver";
/// How long a spawn waits for the supervisor's ready report by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a supervisor stays after the exit by default when nobody collects it.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(300);
/// The file name of the small supervisor binary installed beside the `execdriver` CLI (see
/// [`LinuxConfig::supervisor_entry_beside`]).
pub const SUPERVISOR_ENTRY: &str = "execdriver-supervisor";

/// Settings of the Linux platform; start from [`LinuxConfig::new`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinuxConfig {
    /// Where task state lives: `<data dir>/tasks/<task id>/`.
    pub data_dir: PathBuf,
    /// The binary started as the supervisor, with the arguments `supervise ...` (the
    /// `execdriver` binary, or an agent's own binary that calls
    /// [`crate::supervise_main`] for them); default: the running executable.
    pub supervisor_binary: Option<PathBuf>,
    /// Without a `supervisor_binary`: start [`SUPERVISOR_ENTRY`] from the running
    /// executable's dir when it is there (the CLI's install puts it there), else the running
    /// executable. The supervisor then execs a binary of a third of the size, without the
    /// CLI's argument parser. Default off: an agent's own binary serves `supervise` itself.
    pub supervisor_entry_beside: bool,
    /// The cgroup parent, relative to each hierarchy root. Default: the caller's own cgroup
    /// where it can host task cgroups (always on v1; on v2 when it is the root or delegates
    /// cpu, memory and pids), else the driver's own slice `/<slice_name>.slice`.
    pub cgroup_parent: Option<String>,
    /// The name of the driver's own top-level slice (`/<slice_name>.slice`): where the
    /// supervisors live (`<slice>/supervisors`, outside the agent's cgroup, so stopping the
    /// agent's service leaves them running), and where tasks go when the caller's own cgroup
    /// cannot host them. Default `execdriver`.
    pub slice_name: String,
    /// How long a supervisor waits after the exit for someone to collect it before exiting
    /// and leaving only the exit record.
    pub supervisor_linger: Duration,
    /// How long a spawn waits for the supervisor to report the task running.
    pub ready_timeout: Duration,
}

impl LinuxConfig {
    /// The defaults, with state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            supervisor_binary: None,
            supervisor_entry_beside: false,
            cgroup_parent: None,
            slice_name: crate::cgroups::DEFAULT_SLICE_NAME.to_owned(),
            supervisor_linger: DEFAULT_LINGER,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// This config with `binary` as the supervisor binary.
    pub fn with_supervisor_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.supervisor_binary = Some(binary.into());
        self
    }

    /// This config starting [`SUPERVISOR_ENTRY`] beside the running executable when there
    /// is one (see [`LinuxConfig::supervisor_entry_beside`]).
    pub fn with_supervisor_entry_beside(mut self) -> Self {
        self.supervisor_entry_beside = true;
        self
    }

    /// This config with `parent` as the cgroup parent (relative to each hierarchy root).
    pub fn with_cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// This config with `name` as the name of the driver's slice (`/<name>.slice`).
    pub fn with_slice_name(mut self, name: impl Into<String>) -> Self {
        self.slice_name = name.into();
        self
    }

    /// This config with `linger` as the supervisor's linger after the exit.
    pub fn with_supervisor_linger(mut self, linger: Duration) -> Self {
        self.supervisor_linger = linger;
        self
    }

    /// This config with `timeout` as the ready timeout of a spawn.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}

impl Default for LinuxConfig {
    fn default() -> Self {
        Self::new(DEFAULT_DATA_DIR)
    }
}
