//! [`LinuxError`]: the error at this crate's boundary.

/// Any failure of the Linux backend.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// A cgroup operation.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// Starting the task in its isolated root.
    #[error(transparent)]
    Isolation(#[from] crate::isolation::IsolationError),
    /// A process identity or pidfd operation.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// Anything else, with what and where.
    #[error("{0}")]
    Other(String),
}
