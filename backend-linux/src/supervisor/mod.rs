//! The supervisor: `execdriver supervise --state-dir DIR`, one process per task.
//!
//! The agent starts it; it daemonizes (setsid, then a second fork whose parent exits at once,
//! so the agent only reaps that intermediate and the supervisor outlives the agent). While
//! still single-threaded it creates the task's cgroup, the output pipes and the socket, and
//! launches the task (launch forks and must not race other threads). Only then does it start
//! threads: two log pumps, the waiter, and the socket server. It reports readiness, or why it
//! could not start, as one JSON line on its stdout, which is a pipe the agent reads.
//!
//! The supervisor is not in the task's cgroup, so its memory is never charged to the task.
//! Its diagnostics go to its stderr, which the agent points at `<state dir>/supervisor.log`.

/// The atomic `exit.json` record.
pub mod exit_record;
/// The socket protocol and its client.
pub mod protocol;
mod server;

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use execdriver_core::{DRIVER_VERSION, ProcessIdentity, TaskSpec};

use crate::cgroups::{CgroupParent, TaskCgroup, cgroup_name};
use crate::isolation::{self, LaunchRequest};
use crate::logs::{self, Stream};
use crate::process;
use crate::state::{self, CgroupRecord, StatePaths};

use protocol::{Hello, Ready};
use server::{Supervisor, THREAD_STACK};

/// How long `destroy` waits for the task to die after killing its cgroup.
pub const DESTROY_WAIT: Duration = Duration::from_secs(10);
/// How long a supervisor stays after the exit when nobody collects it.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(300);
/// Largest spec file read.
const MAX_SPEC: u64 = 1024 * 1024;

/// What `execdriver supervise` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperviseOptions {
    /// The task's state dir, holding `spec.json`.
    pub state_dir: PathBuf,
    /// The cgroup parent relative to each hierarchy root; default: our own cgroup.
    pub cgroup_parent: Option<String>,
    /// How long to stay after the exit without a `destroy`.
    pub linger: Duration,
}

/// Writes one line to the supervisor log (its stderr). A full disk or a closed stderr loses
/// the line and nothing else: `eprintln!` would panic, and a panicking waiter thread would
/// never publish the exit, leaving every `wait` blocked forever.
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
    // stdout (the report pipe) and stderr (the log).
    close_inherited_fds();
    if let Err(e) = daemonize() {
        report(&Ready::Error {
            message: format!("cannot daemonize the supervisor: {e}"),
            cleanup_needed: false,
        });
        return 1;
    }
    // From here on we are the daemonized grandchild.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = std::env::set_current_dir("/");
    let me = match process::identity(std::process::id().cast_signed()) {
        Ok(me) => me,
        Err(e) => {
            report(&Ready::Error {
                message: format!("reading the supervisor's own identity failed: {e}"),
                cleanup_needed: false,
            });
            return 1;
        }
    };
    if !report(&Ready::Started { supervisor: me }) {
        log("the agent did not read the started report; exiting before creating anything");
        return 1;
    }
    let paths = StatePaths::at(&options.state_dir);
    let started = match start(options, &paths, me) {
        Ok(started) => started,
        Err(failure) => {
            log(format_args!("start failed: {}", failure.message));
            report(&Ready::Error {
                message: failure.message,
                cleanup_needed: failure.cleanup_needed,
            });
            return 1;
        }
    };
    let Started {
        supervisor,
        listener,
        ready,
    } = started;
    {
        let me = Arc::clone(&supervisor);
        if let Err(e) = thread::Builder::new()
            .name("server".into())
            .stack_size(THREAD_STACK)
            .spawn(move || me.serve(listener))
        {
            abort(&supervisor, &format!("cannot start the socket server: {e}"));
            return 1;
        }
    }
    if !report(&ready) {
        // The agent is gone before it learned of the task: nobody holds a handle to it.
        abort(&supervisor, "the agent did not read the ready report");
        return 1;
    }
    log("task running; ready report delivered");
    silence_stdout();
    supervisor.wait_for_end(options.linger);
    log("exiting");
    0
}

struct Started {
    supervisor: Arc<Supervisor>,
    listener: UnixListener,
    ready: Ready,
}

/// Why a start failed, and whether something it created could not be removed.
struct StartFailure {
    message: String,
    cleanup_needed: bool,
}

impl From<String> for StartFailure {
    fn from(message: String) -> Self {
        Self {
            message,
            cleanup_needed: false,
        }
    }
}

/// Everything up to a running task; on error, what was created is removed (the agent removes
/// the state dir it created), or the failure says that the cgroup could not be.
fn start(
    options: &SuperviseOptions,
    paths: &StatePaths,
    me: ProcessIdentity,
) -> Result<Started, StartFailure> {
    let spec = read_spec(&paths.spec())?;
    let dir_name = paths.dir.file_name().and_then(|n| n.to_str());
    if dir_name != Some(spec.task_id.as_str()) {
        return Err(format!(
            "state dir {} does not belong to task {}",
            paths.dir.display(),
            spec.task_id
        )
        .into());
    }
    spec.validate(Duration::MAX)
        .map_err(|e| format!("invalid task spec: {e}"))?;
    let parent = match &options.cgroup_parent {
        Some(relative) => CgroupParent::at(relative),
        None => CgroupParent::own(),
    }
    .map_err(|e| format!("resolving the cgroup parent failed: {e}"))?;
    let name = cgroup_name(&spec.task_id);
    check_cgroup_record(paths, options, &parent, &name)?;
    // Opened (the dir created if missing, never through a symlink) before anything else is
    // created and before the task runs: once it runs, a pump that cannot open its files
    // could only drop its output.
    let log_dir = spec.alloc_dir.join("logs");
    let mut writers = Vec::with_capacity(2);
    for stream in [Stream::Stdout, Stream::Stderr] {
        let writer = logs::RotatingWriter::open(&log_dir, &spec.task_name, stream, &spec.logs)
            .map_err(|e| format!("opening the task's {} log failed: {e}", stream.as_str()))?;
        writers.push(writer);
    }
    let socket = paths.socket();
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("binding socket {} failed: {e}", socket.display()))?;
    let cleanup_socket = || {
        let _ = fs::remove_file(&socket);
    };
    if let Err(e) = fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)) {
        cleanup_socket();
        return Err(format!("chmod of socket {} failed: {e}", socket.display()).into());
    }
    let cgroup = match TaskCgroup::create(&parent, &name, &spec.resources) {
        Ok(cgroup) => cgroup,
        Err(e) => {
            cleanup_socket();
            return Err(format!("creating cgroup {name} failed: {e}").into());
        }
    };
    let fail = |cgroup: TaskCgroup, message: String| {
        cleanup_socket();
        match cgroup.destroy() {
            Ok(()) => {
                if let Err(e) = state::remove_cgroup_record(paths) {
                    log(format_args!("after removing cgroup {name}: {e}"));
                }
                Err(StartFailure::from(message))
            }
            Err(e) => {
                log(format_args!(
                    "removing cgroup {name} after a failed start: {e}"
                ));
                Err(StartFailure {
                    message: format!("{message}; removing cgroup {name} failed too: {e}"),
                    cleanup_needed: true,
                })
            }
        }
    };
    // Only now may a cleanup by the record touch a cgroup of this name: before, one of that
    // name could belong to another data dir sharing the parent.
    if let Err(e) = state::write_cgroup_created(&paths.cgroup_created()) {
        return fail(
            cgroup,
            format!("recording that cgroup {name} was created failed: {e}"),
        );
    }
    let pipes = match output_pipes() {
        Ok(pipes) => pipes,
        Err(e) => return fail(cgroup, e),
    };
    // Orphans of the task are reparented to its init, inside its namespace; this only
    // matters for a process that gets out of it, which must still be reaped by us.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        log(format_args!("cannot become a child subreaper: {e}"));
    }
    let ((out_r, out_w), (err_r, err_w)) = pipes;
    let place = |pid: i32| cgroup.add_process(pid).map_err(|e| e.to_string());
    let launched = isolation::launch(LaunchRequest {
        spec: &spec,
        stdout: out_w,
        stderr: err_w,
        place_in_cgroup: &place,
    });
    let task = match launched {
        Ok(task) => task,
        Err(e) => return fail(cgroup, format!("launching the task failed: {e}")),
    };
    let (sup_id, task_id) = match process::identity(task.init_pid) {
        Ok(task_id) => (me, task_id),
        Err(e) => {
            let _ = cgroup.kill_all();
            let _ = task.wait();
            return fail(cgroup, format!("reading process identities failed: {e}"));
        }
    };
    log(format_args!(
        "task {} launched: init pid {}, cgroup {name}",
        spec.task_id, task.init_pid
    ));
    let hello = Hello {
        task_id: spec.task_id.clone(),
        supervisor: sup_id,
        task: task_id,
        version: DRIVER_VERSION.to_owned(),
    };
    let supervisor = Arc::new(Supervisor::new(hello, task, cgroup, paths.clone()));
    // Threads from here on: the task is launched.
    let (done_tx, done_rx) = mpsc::channel();
    let mut pump_count = 0;
    for ((fd, stream), writer) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)]
        .into_iter()
        .zip(writers)
    {
        let done = done_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("pump-{stream:?}"))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                if let Err(e) = logs::pump_into(fd, writer) {
                    log(format_args!("log pump for {stream:?} failed: {e}"));
                }
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => pump_count += 1,
            Err(e) => log(format_args!("cannot start the {stream:?} log pump: {e}")),
        }
    }
    {
        let me = Arc::clone(&supervisor);
        let spawned = thread::Builder::new()
            .name("waiter".into())
            .stack_size(THREAD_STACK)
            .spawn(move || me.run_waiter(done_rx, pump_count));
        if let Err(e) = spawned {
            abort(&supervisor, &format!("cannot start the waiter: {e}"));
            return Err(format!("cannot start the waiter thread: {e}").into());
        }
    }
    Ok(Started {
        supervisor,
        listener,
        ready: Ready::Ready {
            supervisor: sup_id,
            task: task_id,
            cgroup: name,
        },
    })
}

/// The agent recorded where the task cgroup goes before starting us: we must agree, or a
/// later cleanup (which uses the record) would look somewhere else.
fn check_cgroup_record(
    paths: &StatePaths,
    options: &SuperviseOptions,
    parent: &CgroupParent,
    name: &str,
) -> Result<(), String> {
    let path = paths.cgroup_record();
    let record = CgroupRecord::read(&path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("cgroup record {} is missing", path.display()))?;
    let mut ours: Vec<PathBuf> = parent.paths().iter().map(|p| p.join(name)).collect();
    ours.sort();
    let mut recorded = record.paths.clone();
    recorded.sort();
    if record.name != name || record.parent != options.cgroup_parent || recorded != ours {
        return Err(format!(
            "cgroup record {} ({} under {:?} at {recorded:?}) is not what the supervisor \
             resolves ({name} under {:?} at {ours:?})",
            path.display(),
            record.name,
            record.parent,
            options.cgroup_parent
        ));
    }
    Ok(())
}

fn read_spec(path: &Path) -> Result<TaskSpec, String> {
    let mut text = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_SPEC).read_to_end(&mut text))
        .map_err(|e| format!("reading task spec {} failed: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("task spec {} is invalid: {e}", path.display()))
}

type Pipe = (OwnedFd, OwnedFd);

fn output_pipes() -> Result<(Pipe, Pipe), String> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("creating an output pipe failed: {e}"))
    };
    Ok((pipe()?, pipe()?))
}

/// Tears everything down after a start the agent never learned of, removing the state dir.
fn abort(supervisor: &Supervisor, why: &str) {
    log(format_args!("aborting: {why}"));
    if let protocol::Response::Error(e) = supervisor.destroy() {
        log(format_args!("abort cleanup: {e}"));
    }
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

/// Closes every fd above stderr. Called first, before any thread or fd of our own exists.
fn close_inherited_fds() {
    // SAFETY: close_range takes plain integers and only closes fds; nothing in this
    // process holds a descriptor above 2 yet.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists (the listing's own fd is gone by then).
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
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
