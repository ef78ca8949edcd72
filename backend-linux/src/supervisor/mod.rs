//! The supervisor: `<binary> supervise --state-dir DIR`, one process per task.
//!
//! The agent starts it; it daemonizes (setsid, then a second fork whose parent exits at once,
//! so the agent only reaps that intermediate and the supervisor outlives the agent). It then
//! creates the task's cgroup, the output pipes and the socket, and launches the task (see
//! [`start`]); it records the task and reports readiness, or why it could not start, as one
//! JSON line on its stdout, a pipe the agent reads. From then on one thread runs one event
//! loop (see [`event_loop`]) over the socket, the task's pidfd, the log pipes, its signals
//! and its timers, until the task's result is collected or its linger runs out.
//!
//! The supervisor is not in the task's cgroup, so its memory is never charged to the task.
//! Its diagnostics go to its stderr, which the agent points at `<state dir>/supervisor.log`.
//! It imports nothing of the agent side: only the protocol and the shared ground (state
//! records, cgroups, isolation, processes, logs).

mod connection;
mod event_loop;
mod start;

use std::fmt::Display;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use execdriver_core::SpawnStep;

use crate::process;
use crate::protocol::{self, Ready};
use crate::state::StatePaths;

/// How long `destroy` waits for the task to die after killing its cgroup.
pub(crate) const DESTROY_WAIT: Duration = Duration::from_secs(10);

/// What `supervise` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuperviseOptions {
    /// The task's state dir, holding `spec.json`.
    pub state_dir: PathBuf,
    /// The driver's slice: the supervisor moves itself into `/<slice>.slice/supervisors`.
    pub slice: String,
    /// How long to stay after the exit without a `destroy`.
    pub linger: Duration,
    /// The fd on which the agent handed over the task's start lock, if it did.
    pub start_lock_fd: Option<i32>,
    /// The ids and passwd entry of the spec's user as the agent looked it up (the start
    /// gives it the spec's user text as its name); `None` looks it up in the supervisor,
    /// which then maps the host's NSS modules for good.
    pub(crate) user: Option<crate::isolation::TaskUser>,
}

impl SuperviseOptions {
    /// Options for the task whose state dir is `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            slice: crate::cgroups::DEFAULT_SLICE_NAME.to_owned(),
            linger: crate::platform::DEFAULT_LINGER,
            start_lock_fd: None,
            user: None,
        }
    }

    /// These options with the driver's slice called `slice`.
    pub fn with_slice(mut self, slice: impl Into<String>) -> Self {
        self.slice = slice.into();
        self
    }

    /// These options with a linger.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// These options with the start lock on `fd`.
    pub fn with_start_lock_fd(mut self, fd: Option<i32>) -> Self {
        self.start_lock_fd = fd;
        self
    }
}

/// Writes one line to the supervisor log (its stderr). A full disk or a closed stderr loses
/// the line and nothing else: `eprintln!` would panic.
pub(crate) fn log(message: impl Display) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let _ = writeln!(
        io::stderr(),
        "{}.{:03} supervisor[{}]: {message}",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id()
    );
}

/// Runs the supervisor; returns the process exit code.
pub fn run(options: &SuperviseOptions) -> i32 {
    // Whatever the agent left open without CLOEXEC (a pipe a shell's `| cat` reads, say)
    // would stay open for the supervisor's whole life and the task's: keep only stdin,
    // stdout (the report pipe), stderr (the log) and the start lock.
    let lock_fd = options
        .start_lock_fd
        .filter(|fd| *fd == crate::platform::START_LOCK_FD && is_open(*fd));
    close_inherited_fds(if lock_fd.is_some() { 4 } else { 3 });
    // SAFETY: the fd is open, was handed to us by the agent as the start lock, and nothing
    // else in this process owns it (every other inherited fd above stderr was just closed).
    let start_lock = lock_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let fail_early = |message: String| {
        report(&Ready::Error {
            message,
            step: SpawnStep::Supervisor,
            cleanup_needed: false,
        });
        1
    };
    if let Err(e) = daemonize() {
        return fail_early(format!("cannot daemonize the supervisor: {e}"));
    }
    // From here on we are the daemonized grandchild.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = std::env::set_current_dir("/");
    let me = match process::identity(std::process::id().cast_signed()) {
        Ok(me) => me,
        Err(e) => return fail_early(format!("reading the supervisor's own identity failed: {e}")),
    };
    let paths = StatePaths::at(&options.state_dir);
    if !report(&Ready::Started { supervisor: me }) {
        // Nobody will ever know of this start: what the agent made goes too.
        log("the agent did not read the started report; removing the state dir and exiting");
        let _ = std::fs::remove_dir_all(&paths.dir);
        return 1;
    }
    let started = match start::start(options, &paths, me) {
        Ok(started) => started,
        Err(failure) => {
            log(format_args!("start failed: {}", failure.message));
            report(&Ready::Error {
                message: failure.message,
                step: failure.step,
                cleanup_needed: failure.cleanup_needed,
            });
            return 1;
        }
    };
    let (mut supervisor, setup_error) = event_loop::Supervisor::new(started, options.linger);
    if let Some(e) = setup_error {
        supervisor.abort(&format!("cannot set up the event loop: {e}"));
        report(&Ready::Error {
            message: format!("setting up the supervisor's event loop failed: {e}"),
            step: SpawnStep::Supervisor,
            cleanup_needed: false,
        });
        return 1;
    }
    if !report(&supervisor.ready()) {
        // The agent is gone before it learned of the task: nobody holds a handle to it.
        supervisor.abort("the agent did not read the ready report");
        return 1;
    }
    // The task record exists: the start is done, and the lock may go.
    drop(start_lock);
    log("task running; ready report delivered");
    silence_stdout();
    wait_out(&mut supervisor);
    log("exiting");
    0
}

/// Gives back the start's pages (see `process::footprint`) and runs the event loop. Called
/// from here, in the idle section, so that returning from the release faults in no page of
/// the start's code.
#[unsafe(link_section = ".text.hot.execdriver_idle")]
// Not inlined into the start code it is called from, which the release gives back.
#[inline(never)]
fn wait_out(supervisor: &mut event_loop::Supervisor) {
    process::CleanMappings::of_self().release();
    process::trim_heap();
    supervisor.run();
}

/// Whether `fd` is an open descriptor of this process.
fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Writes the ready line to stdout; false if the agent is not there to read it.
fn report(ready: &Ready) -> bool {
    let mut out = io::stdout().lock();
    protocol::write_line(&mut out, ready).is_ok()
}

/// The ready pipe is done with; later stray prints must not block or fail on it.
fn silence_stdout() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
    }
}

/// Closes every fd from `first` up. Called first, before any thread or fd of our own exists.
fn close_inherited_fds(first: u32) {
    // SAFETY: close_range takes plain integers and only closes fds; nothing in this
    // process holds a descriptor at or above `first` yet.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if closed == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists (the listing's own fd is gone by then).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd: &i32| u32::try_from(*fd).is_ok_and(|fd| fd >= first))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// setsid, then fork: the parent (the process the agent started) exits at once, the child
/// carries on as the supervisor, outside the agent's session and process group.
fn daemonize() -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid failed: {e}"))?;
    // SAFETY: called first thing in `supervise`, before any thread exists, so the child is a
    // faithful copy of a single-threaded process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => Ok(()),
        Err(e) => Err(format!("fork failed: {e}")),
    }
}
