//! Everything a supervisor does before the task runs: read the spec, check the cgroup
//! record, open the log files, bind the socket, create the cgroup, launch the task, record
//! it. On error, what was created here is removed (the agent removes the state dir it made),
//! or the failure says that the cgroup could not be.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use execdriver_core::{
    DRIVER_VERSION, ProcessIdentity, SpawnStep, SupervisorIdentity, TaskRecord, TaskSpec,
};

use super::{SuperviseOptions, log};
use crate::cgroups::{SUPERVISORS_CGROUP, TaskCgroup, cgroup_name, join_supervisors_cgroup};
use crate::isolation::{self, LaunchRequest, LaunchedTask};
use crate::logs::sink::{PathOutput, Sink};
use crate::logs::{self, Stream};
use crate::process;
use crate::protocol::Hello;
use crate::state::{self, CgroupRecord, MAX_SPEC, StatePaths, read_record, write_task_record};

/// A task that runs, with everything the event loop serves it with.
pub(super) struct Started {
    pub spec: TaskSpec,
    pub paths: StatePaths,
    pub hello: Hello,
    pub task: LaunchedTask,
    pub cgroup: TaskCgroup,
    pub listener: UnixListener,
    /// The read ends of the task's stdout and stderr, with where each goes; for a task with
    /// a terminal, its master alone, to the stdout log.
    pub outputs: Vec<(OwnedFd, Sink)>,
    /// The master of the task's terminal, when it has one, to hand to clients.
    pub terminal: Option<OwnedFd>,
}

/// Why a start failed, at which step, and whether something it created could not be removed.
pub(super) struct StartFailure {
    pub message: String,
    pub step: SpawnStep,
    pub cleanup_needed: bool,
}

fn failure(step: SpawnStep) -> impl Fn(String) -> StartFailure {
    move |message| StartFailure {
        message,
        step,
        cleanup_needed: false,
    }
}

/// Starts the task; see the module doc.
pub(super) fn start(
    options: &SuperviseOptions,
    paths: &StatePaths,
    me: ProcessIdentity,
) -> Result<Started, StartFailure> {
    let records = failure(SpawnStep::Records);
    let spec: TaskSpec = match read_record(&paths.spec(), MAX_SPEC, "task spec") {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            return Err(records(format!(
                "task spec {} is missing",
                paths.spec().display()
            )));
        }
        Err(e) => return Err(records(e.to_string())),
    };
    let dir_name = paths.dir.file_name().and_then(|n| n.to_str());
    if dir_name != Some(spec.task_id.as_str()) {
        return Err(records(format!(
            "state dir {} does not belong to task {}",
            paths.dir.display(),
            spec.task_id
        )));
    }
    spec.validate(Duration::MAX)
        .map_err(|e| records(format!("invalid task spec: {e}")))?;
    let cgroup_failure = failure(SpawnStep::Cgroup);
    // Out of the agent's cgroup before anything else: a service manager stopping the agent
    // kills its cgroup, and the task (cloned from us) must not start in it either. A node
    // where that cannot be done (a restricted cgroup mount) still runs tasks; the log says
    // the supervisor then shares the agent's fate.
    match join_supervisors_cgroup(&options.slice) {
        Ok(joined) => log(format_args!(
            "{} the supervisors cgroup {}",
            if joined.born_there() {
                "born in"
            } else {
                "moved into"
            },
            joined
                .paths()
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )),
        Err(e) => log(format_args!(
            "cannot leave the agent's cgroup for /{}.slice/{SUPERVISORS_CGROUP}: {e}; this \
             supervisor dies if the agent's cgroup is killed",
            options.slice
        )),
    }
    let name = cgroup_name(&spec.task_id);
    let record = CgroupRecord::read(&paths.cgroup_record())
        .map_err(|e| records(e.to_string()))?
        .ok_or_else(|| {
            records(format!(
                "cgroup record {} is missing",
                paths.cgroup_record().display()
            ))
        })?;
    if record.name != name {
        return Err(records(format!(
            "cgroup record {} names cgroup {:?}, not {name:?}",
            paths.cgroup_record().display(),
            record.name
        )));
    }
    // Opened (the dir created if missing, never through a symlink) before anything else is
    // created and before the task runs: once it runs, a pump that cannot open its files
    // could only drop its output.
    let log_dir = spec.alloc_dir.join("logs");
    let mut writers = Vec::with_capacity(2);
    for stream in [Stream::Stdout, Stream::Stderr] {
        let output = match stream {
            Stream::Stdout => &spec.log_outputs.stdout,
            Stream::Stderr => &spec.log_outputs.stderr,
        };
        // A stream with an output of its own is written there only: Nomad's log collector
        // writes the same `<task>.<stream>.<n>` names in the same logs/ dir, so our files
        // beside its would be two writers of one file.
        let writer = match output {
            Some(path) => PathOutput::open(path, stream).map(Sink::Path),
            None => logs::RotatingWriter::open(&log_dir, &spec.task_name, stream, &spec.logs)
                .map(Sink::Files),
        }
        .map_err(|e| {
            failure(SpawnStep::Logs)(format!(
                "opening the task's {} log failed: {e}",
                stream.as_str()
            ))
        })?;
        writers.push(writer);
    }
    let socket = paths.socket();
    let listener = UnixListener::bind(&socket).map_err(|e| {
        failure(SpawnStep::Supervisor)(format!("binding socket {} failed: {e}", socket.display()))
    })?;
    let cleanup_socket = || {
        let _ = fs::remove_file(&socket);
    };
    if let Err(e) = fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)) {
        cleanup_socket();
        return Err(failure(SpawnStep::Supervisor)(format!(
            "chmod of socket {} failed: {e}",
            socket.display()
        )));
    }
    // Where the agent recorded it: the cleanup of a lost task finds it there.
    let cgroup = match TaskCgroup::create_recorded_joining(
        &name,
        &record.paths,
        &record.join,
        &spec.resources,
    ) {
        Ok(cgroup) => cgroup,
        Err(e) => {
            cleanup_socket();
            return Err(cgroup_failure(format!(
                "creating cgroup {name} failed: {e}"
            )));
        }
    };
    let fail = |cgroup: TaskCgroup, step: SpawnStep, message: String| {
        cleanup_socket();
        match cgroup.destroy() {
            Ok(()) => {
                if let Err(e) = state::remove_cgroup_record(paths) {
                    log(format_args!("after removing cgroup {name}: {e}"));
                }
                Err(failure(step)(message))
            }
            Err(e) => {
                log(format_args!(
                    "removing cgroup {name} after a failed start: {e}"
                ));
                Err(StartFailure {
                    message: format!("{message}; removing cgroup {name} failed too: {e}"),
                    step,
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
            SpawnStep::Records,
            format!("recording that cgroup {name} was created failed: {e}"),
        );
    }
    let pipes = match output_pipes() {
        Ok(pipes) => pipes,
        Err(e) => return fail(cgroup, SpawnStep::Launch, e),
    };
    // Orphans of the task are reparented to its init, inside its namespace; this only
    // matters for a process that gets out of it, which must still be reaped by us.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        log(format_args!("cannot become a child subreaper: {e}"));
    }
    let ((out_r, out_w), (err_r, err_w)) = pipes;
    let place = |pid: i32| cgroup.add_process(pid).map_err(|e| e.to_string());
    let clone_target = cgroup.clone_target();
    let launched = isolation::launch(LaunchRequest {
        spec: &spec,
        stdin: task_stdin(&spec),
        stdout: out_w,
        stderr: err_w,
        clone_into: clone_target.as_ref().map(AsFd::as_fd),
        place_in_cgroup: &place,
        user: options.user.clone().map(|user| isolation::TaskUser {
            name: spec.user.clone(),
            ..user
        }),
    });
    drop(clone_target);
    let mut task = match launched {
        Ok(task) => task,
        Err(e) => {
            // The step names the launch already; the error says what in it failed.
            return fail(cgroup, SpawnStep::Launch, e.to_string());
        }
    };
    // Past the launch a failure must take the running task down before the cgroup goes.
    let fail_launched = |cgroup: TaskCgroup, task: &LaunchedTask, step, message: String| {
        let _ = cgroup.kill_all();
        let _ = task.wait();
        fail(cgroup, step, message)
    };
    let stdout = writers.remove(0);
    let stderr = writers.remove(0);
    // With a terminal the task's pipes were replaced by it in the init: their read ends
    // only ever see end-of-file, and everything the task writes comes through the master.
    let (outputs, terminal) = match task.terminal.take() {
        Some(master) => match master.try_clone() {
            Ok(handed) => (vec![(master, stdout)], Some(handed)),
            Err(e) => {
                return fail_launched(
                    cgroup,
                    &task,
                    SpawnStep::Launch,
                    format!("duplicating the task's terminal failed: {e}"),
                );
            }
        },
        None => (vec![(out_r, stdout), (err_r, stderr)], None),
    };
    let task_identity = match process::identity(task.init_pid) {
        Ok(identity) => identity,
        Err(e) => {
            return fail_launched(
                cgroup,
                &task,
                SpawnStep::Launch,
                format!("reading the task's identity failed: {e}"),
            );
        }
    };
    let record = TaskRecord {
        task_id: spec.task_id.clone(),
        supervisor: SupervisorIdentity {
            process: me,
            socket: paths.socket(),
        },
        task: task_identity,
        cgroup: name.clone(),
        state_dir: paths.dir.clone(),
        task_dir: spec.task_dir.clone(),
        alloc_dir: spec.alloc_dir.clone(),
        kill_timeout: spec.kill_timeout,
        kill_signal: spec.kill_signal,
    };
    // Before the ready report: from here on the task can be found again by its id from any
    // process, even if the agent dies before it reads the report.
    if let Err(e) = write_task_record(&paths.task_record(), &record) {
        return fail_launched(cgroup, &task, SpawnStep::Records, e.to_string());
    }
    log(format_args!(
        "task {} launched: init pid {}, {} cgroup {name}",
        spec.task_id,
        task.init_pid,
        if task.born_in_cgroup {
            "born in"
        } else {
            "moved into"
        }
    ));
    let hello = Hello {
        task_id: spec.task_id.clone(),
        supervisor: me,
        task: task_identity,
        version: DRIVER_VERSION.to_owned(),
    };
    Ok(Started {
        spec,
        paths: paths.clone(),
        hello,
        task,
        cgroup,
        listener,
        outputs,
        terminal,
    })
}

type Pipe = (OwnedFd, OwnedFd);

fn output_pipes() -> Result<(Pipe, Pipe), String> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("creating an output pipe failed: {e}"))
    };
    Ok((pipe()?, pipe()?))
}

/// The task's stdin: with [`Stdin::Inherit`](execdriver_core::Stdin), ours (the starter's,
/// handed over as our fd 0), which we then let go of (fd 0 becomes /dev/null) so that only
/// the task holds it; else `None` for /dev/null. A PTY slave would come the same way.
fn task_stdin(spec: &execdriver_core::TaskSpec) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    if spec.stdin != execdriver_core::Stdin::Inherit {
        return None;
    }
    let taken = match nix::fcntl::fcntl(
        std::io::stdin().as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            log(format_args!(
                "cannot take the starter's stdin for the task ({e}); it gets /dev/null"
            ));
            return None;
        }
    };
    // SAFETY: fcntl just made this fd, owned by nothing else.
    let taken = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(taken) };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), libc::STDIN_FILENO);
    }
    Some(taken)
}
