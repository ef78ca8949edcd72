//! [`LinuxPlatform`]. (OWNED BY THE SUPERVISOR/PLATFORM WORK.)

use std::path::PathBuf;

/// Settings of the Linux platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxConfig {
    /// Where task state lives: `<data dir>/tasks/<task id>/`.
    pub data_dir: PathBuf,
    /// The `execdriver` binary started as the supervisor; default: the running executable.
    pub supervisor_binary: Option<PathBuf>,
    /// The cgroup parent, relative to each hierarchy root; default: the caller's own cgroup.
    pub cgroup_parent: Option<String>,
}

/// The Linux platform.
#[derive(Debug)]
pub struct LinuxPlatform {
    config: LinuxConfig,
}

impl LinuxPlatform {
    /// A platform with `config`.
    pub fn new(config: LinuxConfig) -> Self {
        Self { config }
    }

    /// Its config.
    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }
}
