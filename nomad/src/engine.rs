//! The one module that touches the engine (`Driver<LinuxPlatform>` and its `TaskHandle`).
//!
//! Everything else in the plugin speaks the small vocabulary defined here ([`StartRequest`],
//! [`Task`], [`Exit`], [`Usage`], [`EngineError`]), so that a change of the engine's API is a
//! change of this file. Every call here blocks; the gRPC services run them in the runtime's
//! blocking pool or in a task's own waiter thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use execdriver_core::{
    DnsConfig, Driver, DriverConfig, DriverError, ExecRequest, ExecStarted, HandleId, LogOutputs,
    Network, PlatformError, Seccomp, SeccompProfile, Signal, SpawnStep, State, TaskConfig,
    TaskHandle, TaskSpec, WaitResult,
};
use execdriver_linux::{LinuxConfig, LinuxPlatform};

use crate::settings::Settings;

/// What kind of failure an engine call had, for the gRPC status it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (a bad spec, a bad handle); retrying cannot help.
    Invalid,
    /// It may work if tried again (a start that failed on the node, a busy supervisor).
    Transient,
    /// The task has exited; the call needs a running one.
    NotRunning,
    /// The engine refused to act on what it was given (not ours, outside confinement).
    Refused,
    /// The task's supervisor is gone without a result; the task was cleaned up.
    Lost,
    /// Anything else.
    Failed,
}

/// An engine call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// The kind.
    pub kind: ErrorKind,
    /// The engine's message.
    pub message: String,
}

impl EngineError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<DriverError> for EngineError {
    fn from(e: DriverError) -> Self {
        let of_platform = |source: &PlatformError| match source {
            PlatformError::SupervisorGone { .. } => ErrorKind::Lost,
            PlatformError::Unresponsive { .. } => ErrorKind::Transient,
            PlatformError::Refused { .. } => ErrorKind::Refused,
            PlatformError::NotFound { .. } => ErrorKind::Invalid,
            // What the task's own config decides (its dirs, user, command, id) cannot get
            // better by retrying; the node's side (cgroups, records, the supervisor) may.
            PlatformError::Spawn {
                step:
                    SpawnStep::Dirs | SpawnStep::Claim | SpawnStep::Launch | SpawnStep::CpusetCgroup,
                ..
            } => ErrorKind::Invalid,
            _ => ErrorKind::Transient,
        };
        let kind = match &e {
            DriverError::Spec(_) | DriverError::Handle(_) | DriverError::ExecRefused { .. } => {
                ErrorKind::Invalid
            }
            DriverError::Spawn { source, .. } => of_platform(source),
            DriverError::NotFound { .. } => ErrorKind::Invalid,
            DriverError::Starting { .. } => ErrorKind::Transient,
            DriverError::NeverStarted { .. } | DriverError::ReattachFailed { .. } => {
                ErrorKind::Lost
            }
            DriverError::ReattachRefused { source, .. } => match source {
                PlatformError::Unresponsive { .. } => ErrorKind::Transient,
                _ => ErrorKind::Refused,
            },
            DriverError::KillIncomplete { .. } => ErrorKind::Failed,
            DriverError::Platform { source, .. } => of_platform(source),
            DriverError::NotRunning { .. } | DriverError::Transition(_) => ErrorKind::NotRunning,
            _ => ErrorKind::Failed,
        };
        Self::new(kind, e.to_string())
    }
}

/// What the node can do, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFingerprint {
    /// Whether tasks can run here.
    pub healthy: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The engine's attributes (`driver.exec`, `unique.cgroup.version`, `kernel.version`...).
    pub attributes: BTreeMap<String, String>,
}

/// Everything a start needs, in the plugin's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// The engine's task id (see `start::engine_task_id`).
    pub task_id: String,
    /// Nomad's task name.
    pub name: String,
    /// Nomad's alloc dir: `<alloc_dir>/alloc` is shared, `<alloc_dir>/<name>` is the task's.
    pub alloc_dir: PathBuf,
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The task's whole environment.
    pub env: BTreeMap<String, String>,
    /// The user it runs as.
    pub user: String,
    /// cpu weight; `None`: the engine's default.
    pub cpu_shares: Option<u64>,
    /// Memory limit; `None`: the engine's default.
    pub memory_limit_bytes: Option<u64>,
    /// Hard memory maximum above the limit, if any.
    pub memory_max_bytes: Option<u64>,
    /// The network namespace file to join (Nomad's group network); `None`: the host's.
    pub network_path: Option<PathBuf>,
    /// The task's resolv.conf; `None`: the host's.
    pub dns: Option<Dns>,
    /// Where stdout goes (Nomad's FIFO); `None`: the engine's rotating files.
    pub stdout_path: Option<PathBuf>,
    /// Where stderr goes (Nomad's FIFO); `None`: the engine's rotating files.
    pub stderr_path: Option<PathBuf>,
    /// The cpus the task may run on (Nomad's reserved cores), kernel list format.
    pub cpuset_cpus: Option<String>,
    /// The cgroup Nomad made for the task's cpuset partition, which the task's own goes
    /// beneath (`start::cpuset_cgroup`); `None`: none named.
    pub cpuset_cgroup: Option<PathBuf>,
    /// Host devices given to the task (Nomad's device plugins).
    pub devices: Vec<execdriver_core::DeviceMapping>,
    /// `default`, `unconfined`, or the absolute path of a seccomp profile; `None`: default.
    pub seccomp: Option<String>,
    /// Nomad's volume and host mounts, bound into the task's root.
    pub mounts: Vec<execdriver_core::BindMount>,
}

/// A task's resolver settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// Name server addresses.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128 + N when killed by signal N; -1 when unknown.
    pub exit_code: i32,
    /// The signal that killed it, 0 if none.
    pub signal: i32,
    /// Whether the kernel OOM-killed a process of it.
    pub oom_killed: bool,
    /// What went wrong in the driver, if anything did.
    pub error: Option<String>,
}

impl From<WaitResult> for Exit {
    fn from(r: WaitResult) -> Self {
        Self {
            exit_code: r.exit_code,
            signal: r.signal.map_or(0, Signal::number),
            oom_killed: r.oom_killed,
            error: r.error.map(|e| e.to_string()),
        }
    }
}

/// One reading of a task's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// When it was read, on a monotonic clock (only differences mean anything).
    pub at: Duration,
    /// cpu time in user mode, ns.
    pub user_ns: u64,
    /// cpu time in kernel mode, ns.
    pub system_ns: u64,
    /// Periods the cgroup was throttled.
    pub throttled_periods: u64,
    /// Time throttled, ns.
    pub throttled_ns: u64,
    /// Resident anonymous memory, bytes.
    pub rss: u64,
    /// Page cache, bytes.
    pub cache: u64,
    /// Swap, bytes.
    pub swap: u64,
    /// Peak usage, bytes.
    pub max_usage: u64,
    /// Processes and threads.
    pub pids: u64,
    /// When it was read, by the wall clock of the node (`None` from an older supervisor).
    pub read_at: Option<std::time::SystemTime>,
}

/// The engine, configured from the plugin's settings.
#[derive(Debug)]
pub struct Engine {
    driver: Driver<LinuxPlatform>,
    chroot_env: Vec<PathBuf>,
    max_kill_timeout: Duration,
}

impl Engine {
    /// Builds the engine; cheap: nothing on the node is touched until a task starts.
    pub fn new(settings: &Settings) -> Self {
        let mut config = LinuxConfig::new(&settings.data_dir).with_slice_name(&settings.slice_name);
        if let Some(parent) = &settings.cgroup_parent {
            config = config.with_cgroup_parent(parent);
        }
        // The plugin binary serves `supervise` itself (see [`supervisor_main`]), so the
        // default, the running executable, is right: one file to install.
        let driver_config = DriverConfig::default()
            .with_max_kill_timeout(settings.max_kill_timeout)
            .with_fingerprint_period(settings.fingerprint_period);
        Self {
            driver: Driver::with_config(LinuxPlatform::new(config), driver_config),
            chroot_env: settings.chroot_env.clone(),
            max_kill_timeout: settings.max_kill_timeout,
        }
    }

    /// Whether and how tasks can run here.
    pub fn fingerprint(&self) -> NodeFingerprint {
        let fp = self.driver.fingerprint();
        NodeFingerprint {
            healthy: fp.healthy,
            reason: fp.reason,
            attributes: fp.attributes,
        }
    }

    /// Starts a task; returns once it runs. Nothing is left behind on error.
    pub fn start(&self, req: &StartRequest) -> Result<Task, EngineError> {
        let mut spec = TaskSpec::new(
            req.task_id.clone(),
            req.name.clone(),
            req.alloc_dir.join("alloc"),
            req.alloc_dir.join(&req.name),
            TaskConfig::new(req.command.clone(), req.args.clone()),
        );
        spec.env.clone_from(&req.env);
        spec.user.clone_from(&req.user);
        spec.chroot_env.clone_from(&self.chroot_env);
        if let Some(shares) = req.cpu_shares {
            spec.resources.cpu_shares = shares;
        }
        if let Some(bytes) = req.memory_limit_bytes {
            spec.resources.memory_limit_bytes = bytes;
        }
        spec.resources.memory_max_bytes = req.memory_max_bytes;
        spec.resources.cpuset_cpus.clone_from(&req.cpuset_cpus);
        spec.resources.cpuset_cgroup.clone_from(&req.cpuset_cgroup);
        spec.resources.devices.clone_from(&req.devices);
        if let Some(path) = &req.network_path {
            spec.network = Network::Path(path.clone());
        }
        spec.dns = req.dns.as_ref().map(|d| DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        spec.log_outputs = LogOutputs {
            stdout: req.stdout_path.clone(),
            stderr: req.stderr_path.clone(),
        };
        if let Some(text) = &req.seccomp {
            spec.seccomp = seccomp(text)?;
        }
        spec.mounts.clone_from(&req.mounts);
        // Nomad gives the kill timeout with each StopTask; until then the engine's default,
        // within the operator's maximum, protects a kill started behind the plugin's back.
        spec.kill_timeout = spec.kill_timeout.min(self.max_kill_timeout);
        let handle = self.driver.start(&spec)?;
        Ok(Task { handle })
    }

    /// Reattaches to a task from its handle id (the `driver_state` Nomad stored).
    pub fn recover(&self, handle_id: &str) -> Result<Task, EngineError> {
        let handle = self.driver.open(handle_id)?;
        Ok(Task { handle })
    }
}

/// The task config's `seccomp`: `default`, `unconfined`, or the absolute path of a profile
/// in the OCI JSON format on this node, read and checked against this kernel before the
/// start.
fn seccomp(text: &str) -> Result<Seccomp, EngineError> {
    let invalid =
        |why: String| EngineError::new(ErrorKind::Invalid, format!("seccomp {text:?}: {why}"));
    let seccomp = match text {
        "default" => Seccomp::Default,
        "unconfined" => Seccomp::Unconfined,
        path if path.starts_with('/') => {
            use std::io::Read;
            let file = std::fs::File::open(path)
                .map_err(|e| invalid(format!("cannot open the profile: {e}")))?;
            let mut body = String::new();
            // One byte past the limit is enough to refuse it, without reading a huge file.
            file.take(execdriver_core::seccomp::MAX_PROFILE_BYTES as u64 + 1)
                .read_to_string(&mut body)
                .map_err(|e| invalid(format!("cannot read the profile: {e}")))?;
            Seccomp::Profile(SeccompProfile::from_json(&body).map_err(|e| invalid(e.to_string()))?)
        }
        _ => {
            return Err(invalid(
                "use \"default\", \"unconfined\", or the absolute path of a profile file on the node"
                    .to_owned(),
            ));
        }
    };
    execdriver_linux::check_seccomp(&seccomp).map_err(|e| invalid(e.to_string()))?;
    Ok(seccomp)
}

/// The engine task id a handle id names, without touching anything.
pub fn task_id_of_handle(handle_id: &str) -> Result<String, EngineError> {
    HandleId::parse(handle_id)
        .map(|h| h.task_id)
        .map_err(|e| EngineError::new(ErrorKind::Invalid, format!("invalid handle id: {e}")))
}

/// Parses a signal name as Nomad sends it (`SIGTERM`), or a number.
pub fn parse_signal(name: &str) -> Result<Signal, EngineError> {
    name.parse::<Signal>()
        .map_err(|e| EngineError::new(ErrorKind::Invalid, e.to_string()))
}

/// A started or recovered task.
#[derive(Debug)]
pub struct Task {
    handle: TaskHandle<LinuxPlatform>,
}

impl Task {
    /// The engine's task id.
    pub fn task_id(&self) -> &str {
        self.handle.task_id()
    }

    /// The handle id to store as Nomad's `driver_state`.
    pub fn handle_id(&self) -> String {
        self.handle.id()
    }

    /// Whether the task still runs (or is being killed).
    pub fn is_running(&self) -> bool {
        matches!(
            self.handle.state(),
            State::Running | State::Killing | State::Forcing
        )
    }

    /// The result, if it has exited; never blocks.
    pub fn result(&self) -> Option<Exit> {
        self.handle.result().map(Exit::from)
    }

    /// Blocks until the task exits. The engine collects the exit and releases the task's
    /// supervisor and cgroup as part of it; its records stay, so the exit is answered again,
    /// until [`Task::remove`].
    pub fn wait(&self) -> Result<Exit, EngineError> {
        Ok(self.handle.wait()?.into())
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) -> Result<(), EngineError> {
        Ok(self.handle.signal(signal)?)
    }

    /// Stops the task: `signal`, up to `timeout` (capped at the driver's maximum) for it to
    /// exit, then a kill of everything in its cgroup. Returns once it has exited; a task that
    /// has already exited is left alone.
    pub fn stop(&self, signal: Signal, timeout: Duration) -> Result<(), EngineError> {
        Ok(self.handle.stop(signal, timeout)?)
    }

    /// Kills everything of the task now; returns once it has exited.
    pub fn force_kill(&self) -> Result<(), EngineError> {
        self.handle.update(Duration::ZERO);
        Ok(self.handle.kill()?)
    }

    /// Removes the task and everything the engine kept of it (records, cgroup); a running
    /// one only with `force`, which kills it first with no grace, as a forced DestroyTask
    /// expects.
    pub fn remove(&self, force: bool) -> Result<(), EngineError> {
        if force && self.is_running() {
            self.force_kill()?;
        }
        self.handle.remove(force)?;
        Ok(())
    }

    /// Starts a command in the running task (see `execdriver_core::exec`).
    pub fn exec(&self, request: ExecRequest) -> Result<ExecStarted, EngineError> {
        Ok(self.handle.exec(request)?)
    }

    /// Resource use now; `None` once the task has exited.
    pub fn usage(&self) -> Result<Option<Usage>, EngineError> {
        match self.handle.stats() {
            Ok(s) => Ok(Some(Usage {
                at: s.timestamp.0,
                user_ns: s.cpu.user_ns,
                system_ns: s.cpu.system_ns,
                throttled_periods: s.cpu.throttled_periods,
                throttled_ns: s.cpu.throttled_ns,
                rss: s.memory.rss,
                cache: s.memory.cache,
                swap: s.memory.swap,
                max_usage: s.memory.max_usage,
                pids: s.pids,
                read_at: (s.read_at_unix_nanos > 0)
                    .then(|| std::time::UNIX_EPOCH + Duration::from_nanos(s.read_at_unix_nanos)),
            })),
            Err(DriverError::NotRunning { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// When this process was started as a task's supervisor (`<binary> supervise ...`, as the
/// engine starts it), runs it and returns its exit code; `None` for any other command line.
pub fn supervisor_main() -> Option<i32> {
    execdriver_linux::supervise_main()
}
