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

use execdriver_core::{DRIVER_VERSION, TaskSpec};

use crate::cgroups::{CgroupParent, TaskCgroup, cgroup_name};
use crate::isolation::{self, LaunchRequest};
use crate::logs::{self, Stream};
use crate::process;
use crate::state::StatePaths;

use protocol::{Hello, Ready};
use server::{Supervisor, THREAD_STACK};

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
    if let Err(e) = daemonize() {
        report(&Ready::Error(format!(
            "cannot daemonize the supervisor: {e}"
        )));
        return 1;
    }
    // From here on we are the daemonized grandchild.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = std::env::set_current_dir("/");
    let paths = StatePaths::at(&options.state_dir);
    let started = match start(options, &paths) {
        Ok(started) => started,
        Err(e) => {
            log(format_args!("start failed: {e}"));
            report(&Ready::Error(e));
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

/// Everything up to a running task; on error, what was created is removed (the agent removes
/// the state dir it created).
fn start(options: &SuperviseOptions, paths: &StatePaths) -> Result<Started, String> {
    let spec = read_spec(&paths.spec())?;
    let dir_name = paths.dir.file_name().and_then(|n| n.to_str());
    if dir_name != Some(spec.task_id.as_str()) {
        return Err(format!(
            "state dir {} does not belong to task {}",
            paths.dir.display(),
            spec.task_id
        ));
    }
    spec.validate(Duration::MAX)
        .map_err(|e| format!("invalid task spec: {e}"))?;
    let parent = match &options.cgroup_parent {
        Some(relative) => CgroupParent::at(relative),
        None => CgroupParent::own(),
    }
    .map_err(|e| format!("resolving the cgroup parent failed: {e}"))?;
    let log_dir = spec.alloc_dir.join("logs");
    fs::create_dir_all(&log_dir)
        .map_err(|e| format!("creating log dir {} failed: {e}", log_dir.display()))?;
    let socket = paths.socket();
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("binding socket {} failed: {e}", socket.display()))?;
    let cleanup_socket = || {
        let _ = fs::remove_file(&socket);
    };
    if let Err(e) = fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)) {
        cleanup_socket();
        return Err(format!("chmod of socket {} failed: {e}", socket.display()));
    }
    let name = cgroup_name(&spec.task_id);
    let cgroup = match TaskCgroup::create(&parent, &name, &spec.resources) {
        Ok(cgroup) => cgroup,
        Err(e) => {
            cleanup_socket();
            return Err(format!("creating cgroup {name} failed: {e}"));
        }
    };
    let fail = |cgroup: TaskCgroup, message: String| {
        if let Err(e) = cgroup.destroy() {
            log(format_args!(
                "removing cgroup {name} after a failed start: {e}"
            ));
        }
        cleanup_socket();
        Err(message)
    };
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
    let identities = process::identity(std::process::id().cast_signed())
        .and_then(|sup| process::identity(task.init_pid).map(|task| (sup, task)));
    let (sup_id, task_id) = match identities {
        Ok(ids) => ids,
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
    for (fd, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
        let (log_dir, task_name, rotation) =
            (log_dir.clone(), spec.task_name.clone(), spec.logs.clone());
        let done = done_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("pump-{stream:?}"))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                if let Err(e) = logs::pump(fd, &log_dir, &task_name, stream, &rotation) {
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
            return Err(format!("cannot start the waiter thread: {e}"));
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
