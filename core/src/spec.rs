//! [`TaskSpec`]: everything `start` needs, and the checks each field must pass.
//!
//! Validation happens here, before any process or cgroup exists, so that a bad value is
//! reported by name instead of surfacing as an obscure kernel error half-way through a start.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, TaskConfig};
use crate::cpuset::{CpuList, CpuListError};
use crate::devices::{DeviceError, DeviceMapping};
use crate::dns::{DnsConfig, DnsError};
use crate::log_outputs::LogOutputs;
use crate::seccomp::{Seccomp, SeccompProfileError};
use crate::signal::Signal;

/// The smallest memory limit accepted: below this even a shell fails to start, and the
/// resulting OOM kill looks like a driver bug.
pub const MIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;
/// The cgroup v1 `cpu.shares` range.
pub const CPU_SHARES_RANGE: std::ops::RangeInclusive<u64> = 2..=262_144;
/// The smallest hard cpu limit, in millicores (0.01 cpu): below it the kernel's 1 ms
/// minimum quota per 100 ms period would be undercut.
pub const MIN_CPU_MAX_MILLICORES: u64 = 10;
/// The largest hard cpu limit, in millicores (1024 cpus).
pub const MAX_CPU_MAX_MILLICORES: u64 = 1024 * 1000;
/// Longest task id: it becomes part of a cgroup name and of paths.
pub const MAX_TASK_ID_LEN: usize = 64;
/// Longest task name: it becomes part of log file names.
pub const MAX_TASK_NAME_LEN: usize = 128;

/// A field of a [`TaskSpec`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The command or its arguments.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A seccomp profile that cannot be used.
    #[error(transparent)]
    Seccomp(#[from] SeccompProfileError),
    /// A task id that is not safe to put in a cgroup name or a path.
    #[error(
        "task id {0:?} is not usable: use 1 to 64 characters from A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    TaskId(String),
    /// A unique name that is not safe in a file name.
    #[error(
        "name {0:?} is not usable: use 1 to 64 characters from A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    Name(String),
    /// A task name that is not safe in a file name.
    #[error(
        "task name {0:?} is not usable: it must be 1 to 128 characters without `/` or nul, and not `.` or `..`"
    )]
    TaskName(String),
    /// A path that must be absolute and plain.
    #[error("{field} {path:?} must be an absolute path without `..` or nul")]
    Path {
        /// Which field.
        field: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// The host's root given where a dir below it is needed.
    #[error("{0} cannot be `/`: that would expose the whole host to the task")]
    RootDir(&'static str),
    /// An environment variable that cannot be passed to exec.
    #[error("environment variable {key:?} is not usable: {why}")]
    Env {
        /// The variable's name.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A user that cannot be looked up.
    #[error(
        "user {0:?} is not usable: give NAME, UID, UID:GID or NAME:GROUP (no spaces, `/` or nul)"
    )]
    User(String),
    /// Memory limit below [`MIN_MEMORY_BYTES`].
    #[error("memory limit {bytes} bytes is below the minimum of {min} bytes (4 MiB)", min = MIN_MEMORY_BYTES)]
    MemoryTooSmall {
        /// The limit given.
        bytes: u64,
    },
    /// Memory max below the memory limit.
    #[error("memory max {max} bytes is below the memory limit {limit} bytes")]
    MemoryMaxBelowLimit {
        /// The hard maximum given.
        max: u64,
        /// The limit given.
        limit: u64,
    },
    /// cpu shares outside the kernel's range.
    #[error("cpu shares {0} is outside the range 2 to 262144")]
    CpuShares(u64),
    /// A hard cpu limit outside what the kernel can enforce.
    #[error(
        "cpu max {millicores} millicores is outside the range {min} (0.01 cpu) to {max} (1024 cpus)",
        min = MIN_CPU_MAX_MILLICORES,
        max = MAX_CPU_MAX_MILLICORES
    )]
    CpuMax {
        /// The limit given.
        millicores: u64,
    },
    /// A cpu count that is not a positive decimal number of at most three decimals.
    #[error("cpus {text:?} is not usable: {why}")]
    Cpus {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A terminal asked for together with the starter's stdin: the terminal is the task's
    /// stdin.
    #[error(
        "a task with a terminal reads its stdin from the terminal: leave `stdin` at `null` and \
         write to the terminal (`run -i -t` does)"
    )]
    TtyWithStdin,
    /// A pids limit below what the task needs to exist: its init and the task itself.
    #[error(
        "pids max {pids_max} is too low: at least {MIN_PIDS_MAX} are needed (the task's init and \
         the task itself each count)"
    )]
    PidsTooLow {
        /// The limit asked for.
        pids_max: u64,
    },
    /// A kill timeout longer than the driver allows.
    #[error("kill timeout {timeout:?} is above the maximum of {max:?}")]
    KillTimeoutAboveMax {
        /// The requested timeout.
        timeout: Duration,
        /// The driver's maximum.
        max: Duration,
    },
    /// A masked path that cannot be placed inside the task root.
    #[error("masked path {path:?} is not usable: {why}")]
    MaskedPath {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A network mode that is neither `host`, `none` nor a plain absolute path.
    #[error(
        "network {0:?} is not usable: use `host`, `none`, or the absolute path (without `..`) of a network namespace file such as /var/run/netns/NAME or /proc/PID/ns/net"
    )]
    Network(String),
    /// A log rotation that keeps no file or files of no size.
    #[error(
        "log rotation needs at least 1 file of at least 1 byte, got {max_files} files of {max_file_size_bytes} bytes"
    )]
    LogRotation {
        /// Files to keep.
        max_files: u32,
        /// Size at which a file is rotated.
        max_file_size_bytes: u64,
    },
    /// A dns setting that cannot go into a resolv.conf.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// A cpuset that is not a cpu list.
    #[error(transparent)]
    Cpuset(#[from] CpuListError),
    /// A device mapping that cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A cpuset cgroup that is not a plain absolute directory path.
    #[error(
        "cpuset cgroup {path:?} is not usable: {why} (give the absolute directory of the cgroup made for the task, such as /sys/fs/cgroup/nomad.slice/share.slice/ALLOC.TASK.scope or /sys/fs/cgroup/cpuset/nomad/share)"
    )]
    CpusetCgroup {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A log output inside the task's root, where the task could reach it.
    #[error(
        "log output {path:?} is inside the task dir {task_dir:?}, which is the task's root: put it outside (Nomad's FIFOs are in the alloc dir's logs/)"
    )]
    LogOutputInTaskDir {
        /// The output path.
        path: PathBuf,
        /// The task dir.
        task_dir: PathBuf,
    },
    /// A log rate of zero, which would drop everything the task writes.
    #[error("log rate must be at least 1 byte per second, got 0 (null means no limit)")]
    ZeroLogRate,
    /// A working dir that is not a plain absolute path.
    #[error("working dir {0:?} must be an absolute path (in the task's root) without `..` or nul")]
    Workdir(PathBuf),
    /// A bind mount that cannot be placed in the task root.
    #[error("mount {host:?} -> {destination:?} is not usable: {why}")]
    Mount {
        /// The host path (the mount's source).
        host: PathBuf,
        /// The path in the task root.
        destination: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Resource limits applied through the task's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Relative cpu weight (`cpu.shares` on v1, mapped to `cpu.weight` on v2).
    pub cpu_shares: u64,
    /// The memory limit in bytes; the task is OOM-killed above it.
    pub memory_limit_bytes: u64,
    /// A hard maximum above the limit: v2 `memory.max` with `memory.high` at the limit; v1
    /// `memory.limit_in_bytes` with `memory.soft_limit_in_bytes` at the limit.
    pub memory_max_bytes: Option<u64>,
    /// Most processes and threads the task may have at once.
    pub pids_max: u64,
    /// A hard cpu limit in thousandths of a cpu (1500 = 1.5 cpus), `None` for none: v1
    /// `cpu.cfs_quota_us` over a 100 ms `cpu.cfs_period_us`, v2 `cpu.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max_millicores: Option<u64>,
    /// The cpus the task may run on, in the kernel's list format (`0-2,4`), `None` for the
    /// parent's: `cpuset.cpus` of the task's cgroup (on v1 the task cgroup then joins the
    /// cpuset hierarchy too). Checked against the cpus the parent allows at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// A cgroup that the caller's own manager made for the task's cpuset (Nomad's
    /// `cpuset_cgroup`, whose cpus Nomad changes as other tasks reserve cores), `None` for
    /// none: the task's own cgroup is made beneath it (v2: the task's whole cgroup; v1: its
    /// cgroup in the cpuset hierarchy, the others staying under the driver's parent), so the
    /// driver still kills by and removes only a cgroup of its own. An absolute directory in
    /// the cgroup mount; it must exist. With `cpuset_cpus` the task's own cpuset holds those
    /// cpus beneath it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cgroup: Option<PathBuf>,
    /// Host device nodes given to the task: made in its /dev and allowed by its cgroup (v1
    /// only: the task cgroup joins the devices hierarchy, which then denies every other
    /// device).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_shares: 1024,
            memory_limit_bytes: 300 * 1024 * 1024,
            memory_max_bytes: None,
            pids_max: 4096,
            cpu_max_millicores: None,
            cpuset_cpus: None,
            cpuset_cgroup: None,
            devices: Vec::new(),
        }
    }
}

impl Resources {
    /// Checks each limit against what the kernel accepts and what a task can live with.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !CPU_SHARES_RANGE.contains(&self.cpu_shares) {
            return Err(SpecError::CpuShares(self.cpu_shares));
        }
        if self.memory_limit_bytes < MIN_MEMORY_BYTES {
            return Err(SpecError::MemoryTooSmall {
                bytes: self.memory_limit_bytes,
            });
        }
        if let Some(max) = self.memory_max_bytes
            && max < self.memory_limit_bytes
        {
            return Err(SpecError::MemoryMaxBelowLimit {
                max,
                limit: self.memory_limit_bytes,
            });
        }
        if self.pids_max < MIN_PIDS_MAX {
            return Err(SpecError::PidsTooLow {
                pids_max: self.pids_max,
            });
        }
        if let Some(millicores) = self.cpu_max_millicores
            && !(MIN_CPU_MAX_MILLICORES..=MAX_CPU_MAX_MILLICORES).contains(&millicores)
        {
            return Err(SpecError::CpuMax { millicores });
        }
        if let Some(cpus) = &self.cpuset_cpus {
            CpuList::parse(cpus)?;
        }
        if let Some(path) = &self.cpuset_cgroup {
            validate_cpuset_cgroup(path)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for device in &self.devices {
            device.validate_syntax()?;
            device.host_device()?;
            if !seen.insert(&device.task_path) {
                return Err(DeviceError::Duplicate {
                    path: device.task_path.clone(),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// Parses a cpu count as a decimal (`2`, `1.5`, `0.25`) into millicores, the unit of
/// [`Resources::cpu_max_millicores`]. More than three decimals, zero, signs, exponents and
/// anything but digits and one `.` are refused; the range is checked as by
/// [`Resources::validate`].
pub fn parse_cpus(text: &str) -> Result<u64, SpecError> {
    let bad = |why| SpecError::Cpus {
        text: text.to_owned(),
        why,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.starts_with('-') {
        return Err(bad("it is negative"));
    }
    let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(bad("use a decimal number of cpus such as 2 or 1.5"));
    }
    if fraction.len() > 3 {
        return Err(bad("at most three decimals (a thousandth of a cpu)"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        // Digits only, so the only failure is overflow.
        whole.parse().map_err(|_| bad("far too many cpus"))?
    };
    let milli: u64 = fraction
        .bytes()
        .zip([100, 10, 1])
        .map(|(b, scale)| u64::from(b - b'0') * scale)
        .sum();
    let millicores = whole
        .checked_mul(1000)
        .and_then(|m| m.checked_add(milli))
        .ok_or_else(|| bad("far too many cpus"))?;
    if millicores == 0 {
        return Err(bad("it must be above 0 (leave it out for no limit)"));
    }
    if !(MIN_CPU_MAX_MILLICORES..=MAX_CPU_MAX_MILLICORES).contains(&millicores) {
        return Err(SpecError::CpuMax { millicores });
    }
    Ok(millicores)
}

/// The default log rate of each stream, in bytes per second (4 MiB/s).
pub const DEFAULT_LOG_RATE_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;

/// How the task's stdout and stderr are written to their files: rotated by size, at most at
/// a rate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRotation {
    /// Files kept per stream, the live one included.
    pub max_files: u32,
    /// Size at which the live file is rotated.
    pub max_file_size_bytes: u64,
    /// Most bytes per second of each stream written to its files, `None` for no limit. A
    /// task writing faster is held back, and what it writes beyond the rate for longer than
    /// a second is dropped, counted and marked in the log. Left out of the JSON when it is
    /// the default, so an older reader still parses the spec.
    #[serde(
        default = "default_log_rate",
        skip_serializing_if = "is_default_log_rate"
    )]
    pub rate_bytes_per_sec: Option<u64>,
}

fn default_log_rate() -> Option<u64> {
    Some(DEFAULT_LOG_RATE_BYTES_PER_SEC)
}

fn is_default_log_rate(rate: &Option<u64>) -> bool {
    *rate == default_log_rate()
}

impl Default for LogRotation {
    fn default() -> Self {
        Self {
            max_files: 10,
            max_file_size_bytes: 10 * 1024 * 1024,
            rate_bytes_per_sec: default_log_rate(),
        }
    }
}

/// The host dirs made visible read-only in a task root when the spec names none.
pub const DEFAULT_CHROOT_ENV: [&str; 8] = [
    "/bin",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/run/resolvconf",
    "/sbin",
    "/usr",
];

/// The lowest pids limit a task can start under: its init (pid 1 of its namespace) and the
/// task process.
pub const MIN_PIDS_MAX: u64 = 2;

/// What of the chroot env a task sees as an empty read-only file or dir when the spec says
/// nothing else: what no task needs and a task run as root could otherwise read.
/// - `/etc/shadow`, `/etc/gshadow` and their `-` backups: password hashes.
/// - `/etc/security/opasswd`: old password hashes kept by pam_pwhistory.
/// - `/etc/sudoers`, `/etc/sudoers.d`: who may become root and how, a map for escalation.
/// - `/etc/ssh/ssh_host_*_key`: the node's ssh identity (the `.pub` halves stay).
/// - `/etc/ssl/private`: TLS private keys (Debian's `ssl-cert` dir).
/// - `/etc/krb5.keytab`: the node's Kerberos keys, enough to pose as the host in its realm.
/// - `/etc/wireguard`, `/etc/ipsec.secrets`: VPN private keys and pre-shared secrets.
/// - `/etc/execdriver`: the driver's own configuration.
/// - `/etc/nomad.d`, `/etc/consul.d`: the configuration of the agents that run tasks on a
///   Nomad node (gossip encryption keys, ACL tokens, TLS key paths).
pub const DEFAULT_MASKED_PATHS: [&str; 15] = [
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh/ssh_host_*_key",
    "/etc/ssl/private",
    "/etc/krb5.keytab",
    "/etc/wireguard",
    "/etc/ipsec.secrets",
    "/etc/execdriver",
    "/etc/nomad.d",
    "/etc/consul.d",
];

/// [`DEFAULT_MASKED_PATHS`] as a spec field holds them.
pub fn default_masked_paths() -> Vec<PathBuf> {
    DEFAULT_MASKED_PATHS.iter().map(PathBuf::from).collect()
}

fn is_default_masked_paths(paths: &[PathBuf]) -> bool {
    paths.len() == DEFAULT_MASKED_PATHS.len()
        && paths
            .iter()
            .zip(DEFAULT_MASKED_PATHS)
            .all(|(p, d)| p == Path::new(d))
}

/// The network a task is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Network {
    /// The host's network namespace, as with Nomad's `exec` driver (`host`).
    #[default]
    Host,
    /// A network namespace of its own with only the loopback interface, up (`none`).
    None,
    /// The existing network namespace behind this nsfs file, such as
    /// `/var/run/netns/NAME` or `/proc/PID/ns/net` (a plain absolute path).
    Path(PathBuf),
}

impl Network {
    /// Whether this is [`Network::Host`], the default.
    pub fn is_host(&self) -> bool {
        *self == Network::Host
    }

    /// Refuses a [`Network::Path`] that is not plain and absolute.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            Network::Path(path) if !is_plain_absolute(path) || path.parent().is_none() => {
                Err(SpecError::Network(path.to_string_lossy().into_owned()))
            }
            _ => Ok(()),
        }
    }
}

impl std::str::FromStr for Network {
    type Err = SpecError;

    /// `host`, `none`, or an absolute path.
    fn from_str(text: &str) -> Result<Self, SpecError> {
        let network = match text {
            "host" => Network::Host,
            "none" => Network::None,
            _ if text.starts_with('/') => Network::Path(PathBuf::from(text)),
            _ => return Err(SpecError::Network(text.to_owned())),
        };
        network.validate()?;
        Ok(network)
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::Host => f.write_str("host"),
            Network::None => f.write_str("none"),
            Network::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Network::Host => serializer.serialize_str("host"),
            Network::None => serializer.serialize_str("none"),
            Network::Path(path) => match path.to_str() {
                Some(text) => serializer.serialize_str(text),
                None => Err(serde::ser::Error::custom(format!(
                    "network namespace path {path:?} is not valid UTF-8"
                ))),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The default kill timeout, as in the reference (5 s).
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything needed to start one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique id of the task on this node; names its cgroup and state dir.
    pub task_id: String,
    /// The task's name within its allocation; names its log files.
    pub task_name: String,
    /// The allocation dir shared by the allocation's tasks, prepared by the caller.
    pub alloc_dir: PathBuf,
    /// The task's own dir, prepared by the caller; becomes the task's root.
    pub task_dir: PathBuf,
    /// What to run.
    pub config: TaskConfig,
    /// The task's whole environment, besides the task-dir variables the platform adds.
    pub env: BTreeMap<String, String>,
    /// The user the task runs as.
    pub user: String,
    /// cgroup limits.
    pub resources: Resources,
    /// How long the kill signal is given before everything is force-killed.
    pub kill_timeout: Duration,
    /// The graceful signal sent by kill.
    pub kill_signal: Signal,
    /// Rotation of the stdout and stderr files.
    pub logs: LogRotation,
    /// Host dirs bind-mounted read-only into the task root.
    pub chroot_env: Vec<PathBuf>,
    /// Paths inside the chroot env the task sees as an empty read-only file (or dir, for a
    /// dir); `*` in the last component matches any run of characters. What does not exist
    /// on the host, or is not inside the chroot env, is left alone.
    #[serde(
        default = "default_masked_paths",
        skip_serializing_if = "is_default_masked_paths"
    )]
    pub masked_paths: Vec<PathBuf>,
    /// The task's network namespace.
    #[serde(default, skip_serializing_if = "Network::is_host")]
    pub network: Network,
    /// The task's system call filter. Left out of the JSON when default, so that a spec
    /// without one still reads the same for a reader that does not know the field.
    #[serde(default, skip_serializing_if = "Seccomp::is_default")]
    pub seccomp: Seccomp,
    /// Where stdout and stderr go instead of the rotating log files (a FIFO, a file).
    #[serde(default, skip_serializing_if = "LogOutputs::is_default")]
    pub log_outputs: LogOutputs,
    /// The task's own resolv.conf; `None`: the chroot env's (the host's) /etc/resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// A name unique among the tasks of the driver's data dir, claimed at start (a start
    /// whose name is held fails) and released when the task is removed; the task can then
    /// be found by it as by its id. None: the task has only its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    // What `execdriver run` users reach for: the working dir, bind mounts, stdin. Each is
    // left out of the JSON when default, so an older reader still parses the spec.
    /// The task's working dir inside its root, `None` for `/` (as docker without `-w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Host paths bound into the task root, after the chroot env (so one may sit inside
    /// `/etc`) and after the masks; a parent before what it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<BindMount>,
    /// Where the task's stdin comes from.
    #[serde(default, skip_serializing_if = "Stdin::is_null")]
    pub stdin: Stdin,
    /// A terminal (`run -t`): the task's stdin, stdout and stderr are a new pseudo-terminal
    /// of its own devpts, of this size, and its controlling terminal; all its output goes to
    /// the stdout log. Input reaches it through [`crate::TaskHandle::terminal`], so `stdin`
    /// must then be [`Stdin::Null`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TerminalSize>,
}

/// A terminal's size in character cells; 0 for a dimension not known (the kernel's own
/// default for a new terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// How a mount's events propagate between the host and the task (`mount --make-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// Nothing propagates either way (Nomad's `private`).
    Private,
    /// Nothing propagates, for the mounts below too (the default, as docker's).
    #[default]
    Rprivate,
    /// Mounts made on the host under the source appear in the task.
    Slave,
    /// As [`Propagation::Slave`], for the mounts below too (Nomad's `host-to-task`).
    Rslave,
    /// Mounts propagate both ways.
    Shared,
    /// As [`Propagation::Shared`], for the mounts below too (Nomad's `bidirectional`).
    Rshared,
}

impl Propagation {
    fn is_default(&self) -> bool {
        *self == Propagation::default()
    }
}

/// A host file or dir bound into the task root (`-v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMount {
    /// The host path; must exist when the task starts.
    pub source: PathBuf,
    /// Where it appears in the task root.
    pub destination: PathBuf,
    /// Whether the task may not write through it (writes fail with EROFS).
    #[serde(default)]
    pub readonly: bool,
    /// How mount events propagate through it.
    #[serde(default, skip_serializing_if = "Propagation::is_default")]
    pub propagation: Propagation,
}

impl BindMount {
    /// A private read-write bind of `source` at `destination`.
    pub fn new(source: impl Into<PathBuf>, destination: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            destination: destination.into(),
            readonly: false,
            propagation: Propagation::default(),
        }
    }

    /// Checks both paths: absolute, plain, and the destination neither `/` nor in a dir the
    /// driver mounts itself ([`DRIVER_MOUNTS`]). Whether the source exists is the
    /// platform's to check, at start.
    pub fn validate(&self) -> Result<(), SpecError> {
        let why = if !is_plain_absolute(&self.source) {
            Some("the source must be an absolute host path without `..` or nul")
        } else if !is_plain_absolute(&self.destination) {
            Some("the destination must be an absolute path without `..` or nul")
        } else if self.destination.file_name().is_none() {
            Some("the destination cannot be `/`, the task's whole root")
        } else if driver_mount_of(&self.destination).is_some() {
            Some(
                "the destination is in /proc, /dev, /alloc, /local, /secrets or /tmp, which \
                 the driver mounts itself",
            )
        } else {
            None
        };
        match why {
            Some(why) => Err(SpecError::Mount {
                host: self.source.clone(),
                destination: self.destination.clone(),
                why,
            }),
            None => Ok(()),
        }
    }
}

/// Top-level dirs of the task root the driver mounts itself: no chroot env dir, mask or
/// bind mount may cover or replace them.
pub const DRIVER_MOUNTS: [&str; 6] = ["alloc", "dev", "local", "proc", "secrets", "tmp"];

/// The entry of [`DRIVER_MOUNTS`] an absolute path is in, if any.
pub fn driver_mount_of(path: &Path) -> Option<&'static str> {
    let first = path.components().find_map(|c| match c {
        Component::Normal(name) => Some(name),
        _ => None,
    })?;
    DRIVER_MOUNTS.iter().copied().find(|r| first == *r)
}

/// Where a task's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Stdin {
    /// `/dev/null`: the task reads EOF at once.
    #[default]
    Null,
    /// The starter's own stdin (fd 0 of the process that calls `start`), handed through the
    /// supervisor to the task; the task reads EOF when the starter's input ends.
    Inherit,
}

impl Stdin {
    fn is_null(&self) -> bool {
        *self == Stdin::Null
    }
}

/// The parts of a [`TaskSpec::user`]: a name or a uid, and optionally a group name or gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec<'a> {
    /// The user name or uid.
    pub user: &'a str,
    /// The group name or gid, after a `:`.
    pub group: Option<&'a str>,
}

/// Splits `NAME`, `UID`, `UID:GID` or `NAME:GROUP`, refusing what no lookup could use.
pub fn parse_user(text: &str) -> Result<UserSpec<'_>, SpecError> {
    let bad = || SpecError::User(text.to_owned());
    let usable = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && !s
                .chars()
                .any(|c| c == '\0' || c == ':' || c == '/' || c.is_whitespace())
    };
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    if !usable(user) || group.is_some_and(|g| !usable(g)) {
        return Err(bad());
    }
    Ok(UserSpec { user, group })
}

impl TaskSpec {
    /// A spec with the defaults for everything but identity, dirs and command.
    pub fn new(
        task_id: impl Into<String>,
        task_name: impl Into<String>,
        alloc_dir: impl Into<PathBuf>,
        task_dir: impl Into<PathBuf>,
        config: TaskConfig,
    ) -> Self {
        Self {
            task_id: task_id.into(),
            task_name: task_name.into(),
            alloc_dir: alloc_dir.into(),
            task_dir: task_dir.into(),
            config,
            env: BTreeMap::new(),
            user: "nobody".to_owned(),
            resources: Resources::default(),
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            kill_signal: Signal::SIGINT,
            logs: LogRotation::default(),
            chroot_env: DEFAULT_CHROOT_ENV.iter().map(PathBuf::from).collect(),
            masked_paths: default_masked_paths(),
            network: Network::Host,
            seccomp: Seccomp::Default,
            log_outputs: LogOutputs::default(),
            dns: None,
            workdir: None,
            mounts: Vec::new(),
            stdin: Stdin::Null,
            tty: None,
            name: None,
        }
    }

    /// Checks every field; `max_kill_timeout` is the driver's ceiling.
    pub fn validate(&self, max_kill_timeout: Duration) -> Result<(), SpecError> {
        validate_task_id(&self.task_id)?;
        validate_task_name(&self.task_name)?;
        if let Some(name) = &self.name {
            validate_task_id(name).map_err(|_| SpecError::Name(name.clone()))?;
        }
        validate_abs_path("alloc dir", &self.alloc_dir)?;
        validate_abs_path("task dir", &self.task_dir)?;
        for dir in &self.chroot_env {
            validate_abs_path("chroot env dir", dir)?;
        }
        // The task dir becomes the task's root and each chroot-env dir is mounted over the
        // same path inside it: `/` for either would put the whole host in the task.
        if let Some(field) = [("task dir", &self.task_dir)]
            .into_iter()
            .chain(self.chroot_env.iter().map(|d| ("chroot env dir", d)))
            .find_map(|(field, dir)| (dir.parent().is_none()).then_some(field))
        {
            return Err(SpecError::RootDir(field));
        }
        for path in &self.masked_paths {
            validate_masked_path(path)?;
        }
        self.network.validate()?;
        self.config.validate()?;
        for (key, value) in &self.env {
            validate_env(key, value)?;
        }
        parse_user(&self.user)?;
        if let Some(dir) = &self.workdir
            && !is_plain_absolute(dir)
        {
            return Err(SpecError::Workdir(dir.clone()));
        }
        for mount in &self.mounts {
            mount.validate()?;
        }
        if self.tty.is_some() && self.stdin != Stdin::Null {
            return Err(SpecError::TtyWithStdin);
        }
        self.resources.validate()?;
        self.seccomp.validate()?;
        for path in [&self.log_outputs.stdout, &self.log_outputs.stderr]
            .into_iter()
            .flatten()
        {
            validate_abs_path("log output", path)?;
            if path.starts_with(&self.task_dir) {
                return Err(SpecError::LogOutputInTaskDir {
                    path: path.clone(),
                    task_dir: self.task_dir.clone(),
                });
            }
        }
        if let Some(dns) = &self.dns {
            dns.validate()?;
        }
        if self.kill_timeout > max_kill_timeout {
            return Err(SpecError::KillTimeoutAboveMax {
                timeout: self.kill_timeout,
                max: max_kill_timeout,
            });
        }
        if self.logs.max_files == 0 || self.logs.max_file_size_bytes == 0 {
            return Err(SpecError::LogRotation {
                max_files: self.logs.max_files,
                max_file_size_bytes: self.logs.max_file_size_bytes,
            });
        }
        if self.logs.rate_bytes_per_sec == Some(0) {
            return Err(SpecError::ZeroLogRate);
        }
        Ok(())
    }
}

/// Refuses a task id that could escape a cgroup name or a path.
pub fn validate_task_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TASK_ID_LEN
        && !id.starts_with('.')
        && !id.starts_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::TaskId(id.to_owned()))
    }
}

fn validate_task_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TASK_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(SpecError::TaskName(name.to_owned()))
    }
}

/// True when `path` is absolute, has no `..` and no NUL: safe to confine by prefix.
pub fn is_plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && !path.as_os_str().as_encoded_bytes().contains(&0)
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir))
}

/// Refuses a cpuset cgroup path that is not absolute, not plain (an empty, `.` or `..`
/// component, a trailing `/`, a NUL) or not UTF-8, or that is `/`. Where it must lie and that
/// it exists are the platform's checks, made against the node's cgroup mounts.
pub fn validate_cpuset_cgroup(path: &Path) -> Result<(), SpecError> {
    let bad = |why| {
        Err(SpecError::CpusetCgroup {
            path: path.to_owned(),
            why,
        })
    };
    let Some(text) = path.to_str() else {
        return bad("it is not valid UTF-8");
    };
    let Some(inner) = text.strip_prefix('/') else {
        return bad("it must be an absolute path");
    };
    if text.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if inner.is_empty() {
        return bad("it cannot be `/`");
    }
    if inner
        .split('/')
        .any(|component| matches!(component, "" | "." | ".."))
    {
        return bad("it has an empty, `.` or `..` component");
    }
    Ok(())
}

fn validate_abs_path(field: &'static str, path: &Path) -> Result<(), SpecError> {
    if is_plain_absolute(path) {
        Ok(())
    } else {
        Err(SpecError::Path {
            field,
            path: path.to_owned(),
        })
    }
}

/// Refuses a masked path that is not a plain absolute path below `/`, or that has a `*`
/// anywhere but in its last component.
pub fn validate_masked_path(path: &Path) -> Result<(), SpecError> {
    let why = if !is_plain_absolute(path) {
        Some("it must be an absolute path without `..` or nul")
    } else if path.file_name().is_none() {
        Some("it cannot be `/`, the whole root")
    } else if path
        .parent()
        .is_some_and(|p| p.as_os_str().as_encoded_bytes().contains(&b'*'))
    {
        Some("`*` may only appear in its last component")
    } else {
        None
    };
    match why {
        Some(why) => Err(SpecError::MaskedPath {
            path: path.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

fn validate_env(key: &str, value: &str) -> Result<(), SpecError> {
    let why = if key.is_empty() {
        Some("the name is empty")
    } else if key.contains('=') {
        Some("the name contains `=`")
    } else if key.contains('\0') || value.contains('\0') {
        Some("it contains a nul byte")
    } else {
        None
    };
    match why {
        Some(why) => Err(SpecError::Env {
            key: key.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec::new(
            "t1",
            "web",
            "/alloc",
            "/alloc/web",
            TaskConfig::new("/bin/true", Vec::<String>::new()),
        )
    }

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(spec().validate(MAX), Ok(()));
    }

    #[test]
    fn each_field_is_checked() {
        type Mutation = fn(&mut TaskSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.task_id = "../x".into(), "task id"),
            (|s| s.task_id = String::new(), "task id"),
            (|s| s.task_id = "a".repeat(65), "task id"),
            (|s| s.task_name = "a/b".into(), "task name"),
            (|s| s.alloc_dir = "rel".into(), "alloc dir"),
            (|s| s.task_dir = "/a/../b".into(), "task dir"),
            (|s| s.chroot_env = vec!["usr".into()], "chroot env"),
            (|s| s.chroot_env = vec!["/".into()], "whole host"),
            (|s| s.task_dir = "/".into(), "whole host"),
            (|s| s.config.command = String::new(), "missing command"),
            (
                |s| {
                    s.env.insert("A=B".into(), "x".into());
                },
                "`=`",
            ),
            (
                |s| {
                    s.env.insert(String::new(), "x".into());
                },
                "empty",
            ),
            (|s| s.user = String::new(), "user"),
            (
                |s| s.resources.memory_limit_bytes = 1024,
                "below the minimum",
            ),
            (
                |s| s.resources.memory_max_bytes = Some(MIN_MEMORY_BYTES),
                "memory max",
            ),
            (|s| s.resources.cpu_shares = 1, "cpu shares"),
            (|s| s.resources.pids_max = 0, "pids max 0"),
            (|s| s.resources.pids_max = 1, "pids max 1"),
            (|s| s.resources.cpu_max_millicores = Some(9), "cpu max 9"),
            (
                |s| s.resources.cpu_max_millicores = Some(MAX_CPU_MAX_MILLICORES + 1),
                "1024 cpus",
            ),
            (
                |s| s.kill_timeout = Duration::from_secs(31),
                "above the maximum",
            ),
            (|s| s.logs.max_files = 0, "log rotation"),
            (
                |s| s.masked_paths = vec!["etc/shadow".into()],
                "masked path",
            ),
            (|s| s.masked_paths = vec!["/etc/../x".into()], "masked path"),
            (|s| s.masked_paths = vec!["/".into()], "whole root"),
            (
                |s| s.masked_paths = vec!["/etc/*/key".into()],
                "last component",
            ),
            (
                |s| s.network = Network::Path("/run/netns/../x".into()),
                "network",
            ),
            (|s| s.network = Network::Path("/".into()), "network"),
            (|s| s.logs.rate_bytes_per_sec = Some(0), "log rate"),
            (
                |s| s.log_outputs.stdout = Some("/alloc/web/out.fifo".into()),
                "inside the task dir",
            ),
            (
                |s| s.log_outputs.stderr = Some("logs/err".into()),
                "log output",
            ),
            (
                |s| {
                    s.dns = Some(DnsConfig {
                        servers: vec!["resolver".into()],
                        ..DnsConfig::default()
                    })
                },
                "dns servers",
            ),
            (|s| s.user = "a:".into(), "user"),
            (|s| s.user = ":0".into(), "user"),
            (|s| s.user = "a:b:c".into(), "user"),
            (|s| s.user = "a b".into(), "user"),
            (|s| s.workdir = Some("rel".into()), "working dir"),
            (|s| s.workdir = Some("/a/../b".into()), "working dir"),
            (
                |s| s.mounts = vec![BindMount::new("rel", "/data")],
                "source must be an absolute",
            ),
            (
                |s| s.mounts = vec![BindMount::new("/srv/../etc", "/data")],
                "source must be an absolute",
            ),
            (
                |s| s.mounts = vec![BindMount::new("/srv", "data")],
                "destination must be an absolute",
            ),
            (
                |s| s.mounts = vec![BindMount::new("/srv", "/")],
                "cannot be `/`",
            ),
            (
                |s| s.mounts = vec![BindMount::new("/srv", "/proc")],
                "mounts itself",
            ),
            (
                |s| s.mounts = vec![BindMount::new("/srv", "/alloc/data/x")],
                "mounts itself",
            ),
            (
                |s| s.mounts = vec![BindMount::new("/srv", "//dev/x")],
                "mounts itself",
            ),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate(MAX).expect_err(needle);
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
    }

    #[test]
    fn log_outputs_and_dns_round_trip_and_are_left_out_at_their_defaults() {
        let text = serde_json::to_string(&spec()).expect("serialize");
        assert!(
            !text.contains("log_outputs") && !text.contains("dns"),
            "{text}"
        );
        let mut s = spec();
        s.log_outputs.stdout = Some("/alloc/logs/.web.stdout.fifo".into());
        s.dns = Some(DnsConfig {
            servers: vec!["10.0.0.2".into()],
            searches: vec!["local".into()],
            options: vec![],
        });
        assert_eq!(s.validate(MAX), Ok(()));
        let text = serde_json::to_string(&s).expect("serialize");
        assert!(
            text.contains(r#""log_outputs":{"stdout":"/alloc/logs/.web.stdout.fifo"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<TaskSpec>(&text).ok(), Some(s));
    }

    #[test]
    fn users_take_names_ids_and_groups() {
        for (text, user, group) in [
            ("nobody", "nobody", None),
            ("1000", "1000", None),
            ("1000:1000", "1000", Some("1000")),
            ("www-data:adm", "www-data", Some("adm")),
        ] {
            assert_eq!(parse_user(text), Ok(UserSpec { user, group }), "{text}");
            let mut s = spec();
            s.user = text.into();
            assert_eq!(s.validate(MAX), Ok(()), "{text}");
        }
    }

    #[test]
    fn a_terminal_round_trips_and_cannot_come_with_our_stdin() {
        let mut s = spec();
        s.tty = Some(TerminalSize { rows: 24, cols: 80 });
        assert_eq!(s.validate(MAX), Ok(()));
        let text = serde_json::to_string(&s).expect("serialize");
        assert!(text.contains(r#""tty":{"rows":24,"cols":80}"#), "{text}");
        let back: TaskSpec = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.tty, s.tty);
        s.stdin = Stdin::Inherit;
        assert_eq!(s.validate(MAX), Err(SpecError::TtyWithStdin));
    }

    #[test]
    fn run_options_round_trip_and_are_left_out_when_default() {
        let s = spec();
        let text = serde_json::to_string(&s).expect("serialize");
        for field in ["workdir", "mounts", "stdin", "tty"] {
            assert!(!text.contains(field), "{field} in {text}");
        }
        let mut custom = spec();
        custom.workdir = Some("/srv".into());
        custom.stdin = Stdin::Inherit;
        custom.mounts = vec![
            BindMount::new("/srv/data", "/data"),
            BindMount {
                readonly: true,
                propagation: Propagation::Rslave,
                ..BindMount::new("/etc/hosts", "/etc/hosts")
            },
        ];
        assert_eq!(custom.validate(MAX), Ok(()));
        let text = serde_json::to_string(&custom).expect("serialize");
        assert!(text.contains(r#""stdin":"inherit""#), "{text}");
        assert!(text.contains(r#""propagation":"rslave""#), "{text}");
        assert_eq!(serde_json::from_str::<TaskSpec>(&text).ok(), Some(custom));
        let err = serde_json::from_str::<BindMount>(
            r#"{"source":"/a","destination":"/b","propagation":"host-to-task"}"#,
        )
        .expect_err("nomad's name is the plugin's to map");
        assert!(err.to_string().contains("rslave"), "{err}");
    }

    #[test]
    fn cpu_max_bounds_are_accepted() {
        for ok in [MIN_CPU_MAX_MILLICORES, 1500, MAX_CPU_MAX_MILLICORES] {
            let mut s = spec();
            s.resources.cpu_max_millicores = Some(ok);
            assert_eq!(s.validate(MAX), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_cpuset_cgroup_must_be_a_plain_absolute_path() {
        for ok in [
            "/sys/fs/cgroup/cpuset/nomad/share",
            "/sys/fs/cgroup/nomad.slice/share.slice/a1.web.scope",
        ] {
            let r = Resources {
                cpuset_cgroup: Some(PathBuf::from(ok)),
                ..Resources::default()
            };
            assert_eq!(r.validate(), Ok(()), "{ok}");
        }
        for (bad, needle) in [
            ("sys/fs/cgroup/x", "absolute"),
            ("", "absolute"),
            ("/", "cannot be `/`"),
            ("/sys/fs/cgroup/../etc", "`..`"),
            ("/sys/fs/cgroup/./x", "`.`"),
            ("/sys//fs/cgroup", "empty"),
            ("/sys/fs/cgroup/x/", "empty"),
            ("/sys/fs/cgroup/a\0b", "NUL"),
        ] {
            let r = Resources {
                cpuset_cgroup: Some(PathBuf::from(bad)),
                ..Resources::default()
            };
            let err = r.validate().expect_err(bad).to_string();
            assert!(
                err.contains(needle) && err.starts_with("cpuset cgroup "),
                "{bad:?}: {err}"
            );
        }
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = PathBuf::from(std::ffi::OsStr::from_bytes(b"/sys/fs/cgroup/\xff"));
        let err = validate_cpuset_cgroup(&not_utf8).unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn cpus_parse_as_millicores() {
        for (text, want) in [
            ("1", 1000),
            ("1.5", 1500),
            ("0.5", 500),
            (".25", 250),
            ("2.", 2000),
            (" 0.01 ", 10),
            ("0.125", 125),
            ("1024", 1_024_000),
        ] {
            assert_eq!(parse_cpus(text), Ok(want), "{text:?}");
        }
        for (text, needle) in [
            ("0", "above 0"),
            ("0.000", "above 0"),
            ("-1", "negative"),
            ("-0.5", "negative"),
            ("", "empty"),
            ("   ", "empty"),
            ("abc", "decimal"),
            ("1.5.2", "decimal"),
            ("1e3", "decimal"),
            ("+2", "decimal"),
            (".", "decimal"),
            ("1,5", "decimal"),
            ("0.0001", "three decimals"),
            ("0.001", "0.01 cpu"),
            ("1025", "1024 cpus"),
            ("99999999999999999999999", "too many"),
        ] {
            let err = parse_cpus(text).expect_err(text);
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn resources_without_cpu_max_still_parse() {
        let old = r#"{"cpu_shares":1024,"memory_limit_bytes":314572800,"memory_max_bytes":null,"pids_max":4096}"#;
        let r: Resources = serde_json::from_str(old).expect("an old spec parses");
        assert_eq!(r, Resources::default());
        // Not written when unset, so an older reader (deny_unknown_fields) still parses it.
        assert_eq!(serde_json::to_string(&r).expect("serialize"), old);
        let limited = Resources {
            cpu_max_millicores: Some(1500),
            ..Resources::default()
        };
        let text = serde_json::to_string(&limited).expect("serialize");
        assert_eq!(serde_json::from_str::<Resources>(&text).ok(), Some(limited));
    }

    #[test]
    fn masked_paths_default_to_the_secrets_of_etc_and_take_a_glob_at_the_end() {
        let s = spec();
        assert!(s.masked_paths.contains(&PathBuf::from("/etc/shadow")));
        assert!(
            s.masked_paths
                .contains(&PathBuf::from("/etc/ssh/ssh_host_*_key"))
        );
        for ok in ["/etc/hostname", "/etc/ssh/*", "/x/a..b", "/etc/sudoers.d/"] {
            assert_eq!(validate_masked_path(Path::new(ok)), Ok(()), "{ok}");
        }
        let mut cleared = spec();
        cleared.masked_paths.clear();
        assert_eq!(cleared.validate(MAX), Ok(()));
    }

    #[test]
    fn network_modes_parse_and_print_as_given() {
        for (text, want) in [
            ("host", Network::Host),
            ("none", Network::None),
            (
                "/var/run/netns/web",
                Network::Path("/var/run/netns/web".into()),
            ),
        ] {
            let parsed: Network = text.parse().expect(text);
            assert_eq!(parsed, want);
            assert_eq!(parsed.to_string(), text);
        }
        for bad in ["", "bridge", "netns/web", "/a/../b", "/", "Host"] {
            let err = bad.parse::<Network>().expect_err(bad);
            assert!(err.to_string().contains("host"), "{bad}: {err}");
        }
        assert_eq!(Network::default(), Network::Host);
    }

    #[test]
    fn default_masks_and_network_are_not_written_so_older_readers_parse_the_spec() {
        let s = spec();
        let text = serde_json::to_string(&s).expect("serialize");
        assert!(
            !text.contains("masked_paths") && !text.contains("network"),
            "{text}"
        );
        let mut custom = spec();
        custom.masked_paths = vec!["/etc/hostname".into()];
        custom.network = Network::Path("/proc/1/ns/net".into());
        let text = serde_json::to_string(&custom).expect("serialize");
        assert!(text.contains(r#""network":"/proc/1/ns/net""#), "{text}");
        assert_eq!(serde_json::from_str::<TaskSpec>(&text).ok(), Some(custom));
        let none = text.replace("/proc/1/ns/net", "none");
        let parsed: TaskSpec = serde_json::from_str(&none).expect("none");
        assert_eq!(parsed.network, Network::None);
        let bad = text.replace("/proc/1/ns/net", "bridge");
        let err = serde_json::from_str::<TaskSpec>(&bad).expect_err("bridge");
        assert!(err.to_string().contains("bridge"), "{err}");
    }

    #[test]
    fn log_rate_is_left_out_when_default_and_null_when_unlimited() {
        let old = r#"{"max_files":10,"max_file_size_bytes":10485760}"#;
        let logs: LogRotation = serde_json::from_str(old).expect("an old spec parses");
        assert_eq!(logs, LogRotation::default());
        assert_eq!(serde_json::to_string(&logs).expect("serialize"), old);
        let unlimited = LogRotation {
            rate_bytes_per_sec: None,
            ..LogRotation::default()
        };
        let text = serde_json::to_string(&unlimited).expect("serialize");
        assert!(text.contains(r#""rate_bytes_per_sec":null"#), "{text}");
        assert_eq!(
            serde_json::from_str::<LogRotation>(&text).ok(),
            Some(unlimited)
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let s = spec();
        let text = serde_json::to_string(&s).expect("serialize");
        assert!(!text.contains("seccomp"), "the default is left out: {text}");
        assert_eq!(
            serde_json::from_str::<TaskSpec>(&text).ok(),
            Some(s.clone())
        );
        let profile = crate::seccomp::SeccompProfile::from_json(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]}"#,
        )
        .expect("profile");
        for seccomp in [Seccomp::Unconfined, Seccomp::Profile(profile)] {
            let s = TaskSpec {
                seccomp,
                ..s.clone()
            };
            let text = serde_json::to_string(&s).expect("serialize");
            assert_eq!(serde_json::from_str::<TaskSpec>(&text).ok(), Some(s));
        }
    }

    #[test]
    fn a_bad_seccomp_profile_in_a_spec_is_named() {
        let mut s = spec();
        s.seccomp = Seccomp::Profile(crate::seccomp::SeccompProfile {
            default_action: crate::seccomp::SeccompAction::Allow,
            architectures: vec![],
            syscalls: vec![crate::seccomp::SyscallRule {
                names: vec![],
                action: crate::seccomp::SeccompAction::Log,
                args: vec![],
            }],
        });
        let err = s.validate(MAX).expect_err("empty names");
        assert!(matches!(err, SpecError::Seccomp(_)), "{err:?}");
        assert!(err.to_string().contains("syscalls[0].names"), "{err}");
        // A profile that does not parse does not make a spec either.
        let mut value = serde_json::to_value(spec()).expect("serialize");
        value["seccomp"] = serde_json::json!({"profile": {"defaultAction": "SCMP_ACT_BOGUS"}});
        let err = serde_json::from_value::<TaskSpec>(value).expect_err("bad action");
        assert!(err.to_string().contains("defaultAction"), "{err}");
    }
}
