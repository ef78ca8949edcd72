//! [`LinuxPlatform`]: the [`Platform`] an agent embeds in a `Driver`.
//!
//! Each task gets a supervisor process (see [`crate::supervisor`]); the platform talks to it
//! over its unix socket, one fresh connection per call, so calls from many threads never share
//! a connection. When the supervisor cannot be reached, its exit record is the fallback; when
//! there is none either, the supervisor is lost and the driver cleans up by cgroup.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use execdriver_core::{
    ExitStatus, Fingerprint, HandleId, Platform, PlatformError, ProcessIdentity, Reattach, Signal,
    Spawned, SupervisorIdentity, TaskSpec, TaskStats, Timestamp, validate_task_id,
};

use crate::cgroups::{CgroupParent, DESTROY_BUDGET, KILL_ALL_BUDGET, cgroup_name};
use crate::kill;
use crate::process::Pidfd;
use crate::state::{self, CgroupRecord, StatePaths};
use crate::supervisor::protocol::{self, CallError, Ready, Request, Response};
use crate::supervisor::{DEFAULT_LINGER, DESTROY_WAIT, exit_record};

/// The default data dir of the `execdriver` binary.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/execdriver";
/// How long a spawn waits for the supervisor's ready report.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a signal or stats request may take: the supervisor answers them at once.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a supervisor has to answer the `hello` that precedes a force kill: a supervisor
/// that cannot answer it is hung, and the kill goes to the cleanup by cgroup instead.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a supervisor request may wait for the task cgroup while another request
/// holds it: the holder is at worst a removal ([`DESTROY_BUDGET`], which includes a
/// [`KILL_ALL_BUDGET`] kill). One holder ahead is counted, not a queue of them.
const CGROUP_BUSY_WORST: Duration = DESTROY_BUDGET;
/// Time for a supervisor to answer beyond its cgroup work.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// How long a force kill may take: a wait for the cgroup, one `kill_all`, and the answer.
pub const FORCE_KILL_TIMEOUT: Duration = CGROUP_BUSY_WORST
    .saturating_add(KILL_ALL_BUDGET)
    .saturating_add(ANSWER_SLACK);
/// How long a `destroy` may take: a wait for the cgroup, a `kill_all`, the wait for the
/// exit, the removal (another `kill_all` and the rmdir retries), and the answer.
const RELEASE_TIMEOUT: Duration = CGROUP_BUSY_WORST
    .saturating_add(KILL_ALL_BUDGET)
    .saturating_add(DESTROY_WAIT)
    .saturating_add(DESTROY_BUDGET)
    .saturating_add(ANSWER_SLACK);
/// The longest a single `wait` request asks the supervisor to block; longer waits are sent
/// in chunks, so a supervisor that hangs is noticed within a chunk, not never.
pub const WAIT_CHUNK: Duration = Duration::from_secs(10);
/// How long a supervisor whose socket failed as if it were gone has to turn out dead.
const DYING_GRACE: Duration = Duration::from_secs(1);
/// Extra time given to a `wait` answer beyond the wait's own timeout.
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// Settings of the Linux platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxConfig {
    /// Where task state lives: `<data dir>/tasks/<task id>/`.
    pub data_dir: PathBuf,
    /// The `execdriver` binary started as the supervisor; default: the running executable.
    pub supervisor_binary: Option<PathBuf>,
    /// The cgroup parent, relative to each hierarchy root; default: the caller's own cgroup.
    pub cgroup_parent: Option<String>,
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
            cgroup_parent: None,
            supervisor_linger: DEFAULT_LINGER,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl Default for LinuxConfig {
    fn default() -> Self {
        Self::new(DEFAULT_DATA_DIR)
    }
}

/// A task's supervisor as the platform knows it: where to reach it and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConn {
    task_id: String,
    paths: StatePaths,
    process: ProcessIdentity,
    task: ProcessIdentity,
}

impl SupervisorConn {
    /// The task it supervises.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The supervisor process.
    pub fn process(&self) -> ProcessIdentity {
        self.process
    }

    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.paths.dir
    }

    pub(crate) fn new(
        task_id: String,
        paths: StatePaths,
        process: ProcessIdentity,
        task: ProcessIdentity,
    ) -> Self {
        Self {
            task_id,
            paths,
            process,
            task,
        }
    }
}

/// What a supervisor that did not answer turned out to be.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Its exit record is there: the task has exited.
    Exited(ExitStatus),
    /// It is still alive (or may be): the call failed for another reason, try again.
    Alive(String),
    /// It is dead and left no exit record: the task is lost.
    Dead(String),
    /// The exit record there belongs to another supervisor and task (a reused task id).
    NotOurs(String),
}

impl Settled {
    /// As a platform error, for callers with no use for an exit.
    fn into_error(self, task_id: &str) -> PlatformError {
        match self {
            Settled::Exited(status) => PlatformError::Failed(format!(
                "task {task_id} has exited (code {})",
                status.exit_code
            )),
            Settled::Alive(why) => PlatformError::Failed(why),
            Settled::Dead(why) => PlatformError::SupervisorLost(why),
            Settled::NotOurs(why) => PlatformError::Refused(why),
        }
    }
}

/// Decides what an unanswered call means: the exit record if there is one (and it is this
/// task's), else whether the supervisor process still exists. Only a supervisor that is dead
/// (gone, or a zombie) with no record is lost; a live one whose socket failed is not, because
/// the driver's answer to a lost supervisor is to kill the task.
pub(crate) fn settle_unreachable(
    task_id: &str,
    supervisor: &ProcessIdentity,
    task: &ProcessIdentity,
    paths: &StatePaths,
    error: &CallError,
) -> Settled {
    let record = match exit_record::read(&paths.exit_record()) {
        Ok(Some(record)) => {
            return match record.check(supervisor, task) {
                Ok(status) => Settled::Exited(status),
                Err(why) => {
                    Settled::NotOurs(format!("task {task_id}: {why}; nothing of it was touched"))
                }
            };
        }
        Ok(None) => "no exit record".to_owned(),
        Err(e) => e.to_string(),
    };
    let what = format!("supervisor {} of task {task_id}", supervisor.pid);
    match Pidfd::open_verified(supervisor) {
        Ok(None) => Settled::Dead(format!("{what} is gone ({error}) and left {record}")),
        // A supervisor that was just killed drops its connections a moment before it is a
        // zombie: give it that moment before calling it alive.
        Ok(Some(pidfd)) => match pidfd.wait_exit(Some(DYING_GRACE)) {
            Ok(true) => Settled::Dead(format!("{what} died ({error}) and left {record}")),
            Ok(false) => Settled::Alive(format!(
                "{what} is alive but did not answer: {error}; try again"
            )),
            Err(e) => Settled::Alive(format!(
                "{what} did not answer ({error}) and its state is unknown: {e}"
            )),
        },
        Err(crate::process::ProcessError::Syscall { source, .. })
            if source.raw_os_error() == Some(libc::ENOSYS) =>
        {
            settle_by_proc(supervisor, &what, error, &record)
        }
        Err(e) => Settled::Alive(format!(
            "{what} did not answer ({error}) and its state is unknown: {e}"
        )),
    }
}

/// [`settle_unreachable`] on kernels without `pidfd_open` (before 5.3): the start time and
/// state in `/proc/<pid>/stat`, polled for the same dying grace.
fn settle_by_proc(
    supervisor: &ProcessIdentity,
    what: &str,
    error: &CallError,
    record: &str,
) -> Settled {
    let deadline = Instant::now().checked_add(DYING_GRACE);
    loop {
        match crate::process::is_gone_or_dead(supervisor) {
            Ok(true) => {
                return Settled::Dead(format!("{what} is gone ({error}) and left {record}"));
            }
            Ok(false) => {}
            Err(e) => {
                return Settled::Alive(format!(
                    "{what} did not answer ({error}) and its state is unknown: {e}"
                ));
            }
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            return Settled::Alive(format!(
                "{what} is alive but did not answer: {error}; try again"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Linux platform.
#[derive(Debug)]
pub struct LinuxPlatform {
    config: LinuxConfig,
    epoch: Instant,
}

impl LinuxPlatform {
    /// A platform with `config`.
    pub fn new(config: LinuxConfig) -> Self {
        Self {
            config,
            epoch: Instant::now(),
        }
    }

    /// Its config.
    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }

    /// The cgroup parent tasks are created under (the configured one is created if missing).
    pub(crate) fn cgroup_parent(&self) -> Result<CgroupParent, PlatformError> {
        match &self.config.cgroup_parent {
            Some(relative) => CgroupParent::at(relative),
            None => CgroupParent::own(),
        }
        .map_err(|e| PlatformError::Failed(format!("resolving the cgroup parent failed: {e}")))
    }

    /// The data dir with symlinks resolved; it must exist.
    pub(crate) fn data_dir(&self) -> Result<PathBuf, io::Error> {
        fs::canonicalize(&self.config.data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("data dir {}: {e}", self.config.data_dir.display()),
            )
        })
    }

    fn binary(&self) -> Result<PathBuf, PlatformError> {
        match &self.config.supervisor_binary {
            Some(path) => Ok(path.clone()),
            None => std::env::current_exe().map_err(|e| {
                PlatformError::Failed(format!("cannot find the execdriver binary: {e}"))
            }),
        }
    }

    /// One request; an unanswered one is settled (see [`settle_unreachable`]).
    fn call(
        &self,
        conn: &SupervisorConn,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Unanswered> {
        let mut client = protocol::Client::connect(&conn.paths.socket())
            .map_err(|e| self.unanswered(conn, e))?;
        check_peer(&client, conn)?;
        client
            .call(request, Some(timeout))
            .map_err(|e| self.unanswered(conn, e))
    }

    fn unanswered(&self, conn: &SupervisorConn, e: CallError) -> Unanswered {
        if e.may_be_gone() {
            Unanswered(settle_unreachable(
                &conn.task_id,
                &conn.process,
                &conn.task,
                &conn.paths,
                &e,
            ))
        } else {
            Unanswered(Settled::Alive(format!(
                "supervisor {} of task {}: {e}",
                conn.process.pid, conn.task_id
            )))
        }
    }

    fn spawn_inner(
        &self,
        spec: &TaskSpec,
        paths: &StatePaths,
    ) -> Result<Spawned<SupervisorConn>, SpawnFailure> {
        write_private(
            &paths.spec(),
            &serde_json::to_vec(spec).map_err(|e| {
                SpawnFailure::clean(format!("serializing the task spec failed: {e}"))
            })?,
        )
        .map_err(SpawnFailure::clean)?;
        // Recorded before the supervisor exists, so that whatever it creates can be found
        // again by any later cleanup, from any process.
        let parent = self
            .cgroup_parent()
            .map_err(|e| SpawnFailure::clean(e.to_string()))?;
        let name = cgroup_name(&spec.task_id);
        let mut cgroup_paths: Vec<PathBuf> = parent.paths().iter().map(|p| p.join(&name)).collect();
        cgroup_paths.sort();
        CgroupRecord {
            name,
            parent: self.config.cgroup_parent.clone(),
            paths: cgroup_paths,
        }
        .write_new(&paths.cgroup_record())
        .map_err(|e| SpawnFailure::clean(e.to_string()))?;
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(paths.log())
            .map_err(|e| {
                SpawnFailure::clean(format!("creating {} failed: {e}", paths.log().display()))
            })?;
        let binary = self
            .binary()
            .map_err(|e| SpawnFailure::clean(e.to_string()))?;
        let mut command = Command::new(&binary);
        command
            .arg("supervise")
            .arg("--state-dir")
            .arg(&paths.dir)
            .arg("--linger-ms")
            .arg(self.config.supervisor_linger.as_millis().to_string());
        if let Some(parent) = &self.config.cgroup_parent {
            command.arg("--cgroup-parent").arg(parent);
        }
        // The supervisor needs nothing from the agent's environment, and the task's
        // environment comes from the spec alone.
        command
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command.spawn().map_err(|e| {
            SpawnFailure::clean(format!(
                "starting supervisor {} failed: {e}",
                binary.display()
            ))
        })?;
        let Some(stdout) = child.stdout.take() else {
            reap_intermediate(&mut child);
            return Err(SpawnFailure::lost(
                "supervisor stdout was not captured".to_owned(),
                None,
            ));
        };
        let mut reader = ReadyReader::new(stdout, self.config.ready_timeout);
        // First line: who the daemonized supervisor is, so that it can be killed if it
        // never gets as far as the ready report. Second line: the ready report.
        // An error report says itself whether anything may remain; any other failure here
        // leaves that unknown, so the cleanup by record runs.
        let started = match reader.line() {
            Ok(line) => match serde_json::from_str(&line) {
                Ok(Ready::Started { supervisor }) => Ok(supervisor),
                Ok(Ready::Error {
                    message,
                    cleanup_needed,
                }) => Err((message, cleanup_needed)),
                _ => Err((
                    format!("supervisor sent {line:?} instead of its identity"),
                    true,
                )),
            },
            Err(why) => Err((why, true)),
        };
        reap_intermediate(&mut child);
        let supervisor = started.map_err(|(why, cleanup_needed)| SpawnFailure {
            message: format!("{why}{}", log_tail(paths)),
            cgroup_may_remain: cleanup_needed,
            supervisor: None,
        })?;
        let lost =
            |why: String| SpawnFailure::lost(format!("{why}{}", log_tail(paths)), Some(supervisor));
        let line = reader.line().map_err(lost)?;
        let ready: Ready = serde_json::from_str(&line).map_err(|e| {
            lost(format!(
                "supervisor sent an invalid ready report {line:?}: {e}"
            ))
        })?;
        match ready {
            Ready::Ready {
                supervisor: reported,
                task,
                cgroup,
            } if reported == supervisor => {
                let conn =
                    SupervisorConn::new(spec.task_id.clone(), paths.clone(), supervisor, task);
                Ok(Spawned {
                    supervisor: conn,
                    identity: SupervisorIdentity {
                        process: supervisor,
                        socket: paths.socket(),
                    },
                    task,
                    cgroup,
                    state_dir: paths.dir.clone(),
                })
            }
            Ready::Ready {
                supervisor: reported,
                ..
            } => Err(lost(format!(
                "supervisor reported itself as {supervisor:?}, then as {reported:?}"
            ))),
            Ready::Error {
                message,
                cleanup_needed,
            } => Err(SpawnFailure {
                message,
                cgroup_may_remain: cleanup_needed,
                supervisor: Some(supervisor),
            }),
            Ready::Started { .. } => Err(lost("supervisor reported its identity twice".into())),
        }
    }
}

/// Why a spawn failed, and what may be left to clean.
struct SpawnFailure {
    message: String,
    cgroup_may_remain: bool,
    /// The daemonized supervisor, when it told us who it is: killed (by verified pidfd) if
    /// it still runs, since nobody will ever hold a handle to it.
    supervisor: Option<ProcessIdentity>,
}

impl SpawnFailure {
    fn clean(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            cgroup_may_remain: false,
            supervisor: None,
        }
    }

    fn lost(message: String, supervisor: Option<ProcessIdentity>) -> Self {
        Self {
            message,
            cgroup_may_remain: true,
            supervisor,
        }
    }
}

/// Refuses a socket served by another process than the handle's supervisor: after the task
/// was collected and its id reused, a stale handle would otherwise steer the new task.
fn check_peer(client: &protocol::Client, conn: &SupervisorConn) -> Result<(), Unanswered> {
    let reused = |served: String| {
        Unanswered(Settled::NotOurs(format!(
            "task {}: the socket is served by another supervisor ({served}, not {:?}): the \
             task id was reused; nothing was sent",
            conn.task_id, conn.process
        )))
    };
    let pid = client.peer_pid().map_err(|e| {
        Unanswered(Settled::Alive(format!(
            "cannot tell who serves the socket of task {}: {e}",
            conn.task_id
        )))
    })?;
    if pid != conn.process.pid {
        return Err(reused(format!("pid {pid}")));
    }
    // Same pid: a recycled pid shows another start time. A process gone since the connect
    // has nothing to answer with, which the call itself then reports.
    match crate::process::identity(pid) {
        Ok(found) if found != conn.process => Err(reused(format!("{found:?}"))),
        _ => Ok(()),
    }
}

/// A call that got no answer, settled by [`settle_unreachable`].
struct Unanswered(Settled);

fn unexpected(conn: &SupervisorConn, what: &str, response: Response) -> PlatformError {
    match response {
        Response::Error(e) => {
            PlatformError::Failed(format!("{what} of task {}: {e}", conn.task_id))
        }
        other => PlatformError::Failed(format!(
            "supervisor of task {} answered {what} with {other:?}",
            conn.task_id
        )),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("writing {} failed: {e}", path.display()))
}

/// Reads the supervisor's report lines, all within one `timeout` from its creation.
struct ReadyReader {
    stdout: ChildStdout,
    timeout: Duration,
    deadline: Option<Instant>,
    buf: Vec<u8>,
}

impl ReadyReader {
    fn new(stdout: ChildStdout, timeout: Duration) -> Self {
        Self {
            stdout,
            timeout,
            // A timeout too large for the clock (Duration::MAX) means no deadline, not a panic.
            deadline: Instant::now().checked_add(timeout),
            buf: Vec::new(),
        }
    }

    /// The next line, without its newline.
    fn line(&mut self) -> Result<String, String> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.truncate(end);
                return String::from_utf8(line)
                    .map_err(|_| "supervisor report is not utf-8".to_owned());
            }
            if self.buf.len() as u64 > protocol::MAX_LINE {
                return Err("supervisor report is too long".to_owned());
            }
            let left = self.deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(format!(
                    "supervisor did not report readiness within {:?}",
                    self.timeout
                ));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waiting for the supervisor's report failed: {e}")),
            }
            match self.stdout.read(&mut chunk) {
                Ok(0) => return Err("supervisor exited before reporting readiness".to_owned()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the supervisor's report failed: {e}")),
            }
        }
    }
}

/// Reads the first report line, giving up after `timeout`.
#[cfg(test)]
fn read_ready(stdout: ChildStdout, timeout: Duration) -> Result<String, String> {
    ReadyReader::new(stdout, timeout).line()
}

/// Reaps the process the agent started; it exits right after forking the real supervisor.
fn reap_intermediate(child: &mut Child) {
    for _ in 0..200 {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // Still there after a second: it is not a supervisor that daemonized (or it hangs).
    // It is our own unreaped child, so its pid cannot have been reused.
    let _ = child.kill();
    let _ = child.wait();
}

/// The end of the supervisor's log, to explain a failed start.
fn log_tail(paths: &StatePaths) -> String {
    let Ok(mut file) = File::open(paths.log()) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut text = String::new();
    let _ = file.take(2048).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; supervisor log: {}", text.replace('\n', " | "))
    }
}

fn is_dir(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

impl Platform for LinuxPlatform {
    type Supervisor = SupervisorConn;

    fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed())
    }

    fn fingerprint(&self) -> Fingerprint {
        crate::fingerprint::fingerprint(self.config.cgroup_parent.as_deref())
    }

    fn spawn(&self, spec: &TaskSpec) -> Result<Spawned<SupervisorConn>, PlatformError> {
        validate_task_id(&spec.task_id).map_err(|e| PlatformError::Failed(e.to_string()))?;
        for (what, dir) in [("task dir", &spec.task_dir), ("alloc dir", &spec.alloc_dir)] {
            if !dir.is_absolute() || !is_dir(dir) {
                return Err(PlatformError::Failed(format!(
                    "{what} {} does not exist or is not a directory",
                    dir.display()
                )));
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.config.data_dir)
            .map_err(|e| {
                PlatformError::Failed(format!(
                    "creating data dir {} failed: {e}",
                    self.config.data_dir.display()
                ))
            })?;
        let data = self
            .data_dir()
            .map_err(|e| PlatformError::Failed(e.to_string()))?;
        let tasks = state::tasks_dir(&data);
        state::create_private_dir_all(&tasks).map_err(|e| {
            PlatformError::Failed(format!("creating {} failed: {e}", tasks.display()))
        })?;
        let paths = StatePaths::new(&data, &spec.task_id);
        match state::create_private_dir(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(PlatformError::Failed(format!(
                    "task id {} is already in use: its state dir {} exists",
                    spec.task_id,
                    paths.dir.display()
                )));
            }
            Err(e) => {
                return Err(PlatformError::Failed(format!(
                    "creating state dir {} failed: {e}",
                    paths.dir.display()
                )));
            }
        }
        match self.spawn_inner(spec, &paths) {
            Ok(spawned) => Ok(spawned),
            Err(failure) => {
                let mut message = failure.message;
                // The supervisor first (it could still create things), then what it made,
                // found through the cgroup record. Its task dies with the cgroup.
                if let Some(supervisor) = failure.supervisor
                    && let Err(e) = kill::kill_supervisor_process(&supervisor, &paths)
                {
                    message.push_str(&format!("; killing the supervisor failed: {e}"));
                }
                let cgroup_kept = failure.cgroup_may_remain
                    && match kill::destroy_recorded_cgroup(&paths, &spec.task_id) {
                        Ok(()) => false,
                        Err(e) => {
                            message.push_str(&format!(
                                "; cleanup of the task cgroup failed: {e}; state dir {} is \
                                 kept: its record is needed to remove the cgroup later",
                                paths.dir.display()
                            ));
                            true
                        }
                    };
                if !cgroup_kept && let Err(e) = kill::remove_dir(&paths.dir) {
                    message.push_str(&format!("; {e}"));
                }
                Err(PlatformError::Failed(message))
            }
        }
    }

    fn reattach(&self, handle: &HandleId) -> Result<Reattach<SupervisorConn>, PlatformError> {
        crate::reattach::reattach(self, handle)
    }

    fn signal(&self, conn: &SupervisorConn, signal: Signal) -> Result<(), PlatformError> {
        match self.call(conn, &Request::Signal { signal }, CALL_TIMEOUT) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "signal", other)),
            // Nothing left to signal: the exit is collected by the next wait.
            Err(Unanswered(Settled::Exited(_))) => Ok(()),
            Err(Unanswered(settled)) => Err(settled.into_error(&conn.task_id)),
        }
    }

    fn wait(
        &self,
        conn: &SupervisorConn,
        deadline: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError> {
        loop {
            let left = deadline.map(|d| d.saturating_since(self.now()));
            let chunk = left.map_or(WAIT_CHUNK, |l| l.min(WAIT_CHUNK));
            let request = Request::Wait {
                timeout_ms: Some(u64::try_from(chunk.as_millis()).unwrap_or(u64::MAX)),
            };
            match self.call(conn, &request, chunk.saturating_add(WAIT_SLACK)) {
                Ok(Response::Exited(status)) => return Ok(Some(status)),
                Ok(Response::Running(_)) => {
                    if deadline.is_some_and(|d| self.now() >= d) {
                        return Ok(None);
                    }
                }
                Ok(other) => return Err(unexpected(conn, "wait", other)),
                Err(Unanswered(Settled::Exited(status))) => return Ok(Some(status)),
                Err(Unanswered(settled)) => return Err(settled.into_error(&conn.task_id)),
            }
        }
    }

    fn schedule_force_kill(
        &self,
        conn: &SupervisorConn,
        after: Duration,
    ) -> Result<(), PlatformError> {
        let request = Request::Shutdown {
            signal: None,
            grace_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(conn, &request, CALL_TIMEOUT) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "shutdown", other)),
            Err(Unanswered(Settled::Exited(_))) => Ok(()),
            Err(Unanswered(settled)) => Err(settled.into_error(&conn.task_id)),
        }
    }

    fn force_kill(&self, conn: &SupervisorConn) -> Result<(), PlatformError> {
        // A hung supervisor (stopped, deadlocked) would hold the kill for the whole budget:
        // one quick hello tells it apart from one that is busy killing a large cgroup.
        match self.call(conn, &Request::Hello, PING_TIMEOUT) {
            Ok(Response::Hello(_)) => {}
            Ok(other) => return Err(unexpected(conn, "hello", other)),
            Err(Unanswered(Settled::Exited(_))) => return Ok(()),
            Err(Unanswered(settled)) => return Err(settled.into_error(&conn.task_id)),
        }
        match self.call(conn, &Request::Kill, FORCE_KILL_TIMEOUT) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "kill", other)),
            Err(Unanswered(Settled::Exited(_))) => Ok(()),
            Err(Unanswered(settled)) => Err(settled.into_error(&conn.task_id)),
        }
    }

    fn stats(&self, conn: &SupervisorConn) -> Result<TaskStats, PlatformError> {
        match self.call(conn, &Request::Stats, CALL_TIMEOUT) {
            Ok(Response::Stats(mut stats)) => {
                stats.timestamp = self.now();
                Ok(stats)
            }
            Ok(other) => Err(unexpected(conn, "stats", other)),
            Err(Unanswered(settled)) => Err(settled.into_error(&conn.task_id)),
        }
    }

    fn release(&self, conn: &SupervisorConn) -> Result<(), PlatformError> {
        // Any failure here makes the driver run its orphan cleanup (kill supervisor, kill and
        // destroy the recorded cgroup, remove state), which also covers a supervisor that
        // lingered out after the exit.
        match self.call(conn, &Request::Destroy, RELEASE_TIMEOUT) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "destroy", other)),
            Err(Unanswered(Settled::Exited(_))) => Err(PlatformError::SupervisorLost(format!(
                "supervisor {} of task {} exited after recording the exit",
                conn.process.pid, conn.task_id
            ))),
            Err(Unanswered(settled)) => Err(settled.into_error(&conn.task_id)),
        }
    }

    fn kill_supervisor(&self, handle: &HandleId) -> Result<(), PlatformError> {
        kill::kill_supervisor(self, handle)
    }

    fn kill_cgroup(&self, handle: &HandleId) -> Result<(), PlatformError> {
        kill::kill_cgroup(self, handle)
    }

    fn destroy_cgroup(&self, handle: &HandleId) -> Result<(), PlatformError> {
        kill::destroy_cgroup(self, handle)
    }

    fn remove_state(&self, handle: &HandleId) -> Result<(), PlatformError> {
        kill::remove_state(self, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<LinuxPlatform>();
        check::<SupervisorConn>();
    }

    #[test]
    fn the_clock_moves_with_real_time() {
        let p = LinuxPlatform::new(LinuxConfig::new("/nonexistent"));
        let a = p.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = p.now();
        assert!(
            b.saturating_since(a) >= Duration::from_millis(20),
            "{a:?} -> {b:?}"
        );
    }

    #[test]
    fn spawn_names_the_missing_dir() {
        let data = tempfile::tempdir().expect("tempdir");
        let p = LinuxPlatform::new(LinuxConfig::new(data.path()));
        let alloc = data.path().join("alloc");
        std::fs::create_dir(&alloc).expect("mkdir");
        let spec = TaskSpec::new(
            "t1",
            "web",
            &alloc,
            alloc.join("missing"),
            execdriver_core::TaskConfig::new("/bin/true", Vec::<String>::new()),
        );
        let err = p.spawn(&spec).expect_err("missing task dir");
        assert!(err.to_string().contains("task dir"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!data.path().join("tasks").exists());
    }

    #[test]
    fn ready_report_timeout_and_eof() {
        // Runs `script` with its stdout as the report pipe, reads the report within
        // `timeout`, then ends the script.
        let report = |script: &str, timeout: Duration| {
            let mut child = Command::new("/bin/sh")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("sh");
            let out = child.stdout.take().expect("stdout");
            let read = read_ready(out, timeout);
            let _ = child.kill();
            let _ = child.wait();
            read
        };
        let err = report("exit 0", Duration::from_secs(5)).expect_err("eof");
        assert!(err.contains("before reporting"), "{err}");
        assert_eq!(
            report(
                "printf '{\"error\":\"x\"}\\n'; exec sleep 1",
                Duration::from_secs(5)
            )
            .ok()
            .as_deref(),
            Some("{\"error\":\"x\"}")
        );
        let err = report("exec sleep 2", Duration::from_millis(100)).expect_err("timeout");
        assert!(err.contains("within"), "{err}");
        // A timeout beyond the clock's range is no deadline, not an overflow panic.
        assert_eq!(
            report("printf 'x\\n'", Duration::MAX).ok().as_deref(),
            Some("x")
        );
    }
}
