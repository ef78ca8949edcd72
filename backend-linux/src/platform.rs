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

use crate::cgroups::{CgroupParent, cgroup_name};
use crate::kill;
use crate::state::{self, StatePaths};
use crate::supervisor::protocol::{self, CallError, Ready, Request, Response};
use crate::supervisor::{DEFAULT_LINGER, exit_record};

/// The default data dir of the `execdriver` binary.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/execdriver";
/// How long a spawn waits for the supervisor's ready report.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a short request (signal, stats, hello) may take before the supervisor counts as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kill or destroy may take: the cgroup is emptied and removed before the answer.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
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
    cgroup: String,
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

    /// The task's state dir.
    pub fn state_dir(&self) -> &Path {
        &self.paths.dir
    }

    pub(crate) fn new(
        task_id: String,
        paths: StatePaths,
        process: ProcessIdentity,
        cgroup: String,
    ) -> Self {
        Self {
            task_id,
            paths,
            process,
            cgroup,
        }
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

    /// The cgroup parent tasks are created under.
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

    fn call(
        &self,
        conn: &SupervisorConn,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, PlatformError> {
        protocol::call_once(&conn.paths.socket(), request, Some(timeout))
            .map_err(|e| call_error(conn, e))
    }

    /// The orphan cleanup for a supervisor that exited on its own before `release`.
    fn cleanup_after_supervisor(&self, conn: &SupervisorConn) -> Result<(), PlatformError> {
        let mut failures = Vec::new();
        if let Err(e) = kill::kill_supervisor_process(&conn.process, &conn.paths) {
            failures.push(format!("kill supervisor: {e}"));
        }
        match self.cgroup_parent() {
            Ok(parent) => {
                if let Err(e) = kill::kill_cgroup_named(&parent, &conn.cgroup) {
                    failures.push(format!("kill cgroup: {e}"));
                }
                if let Err(e) = kill::destroy_cgroup_named(&parent, &conn.cgroup) {
                    failures.push(format!("destroy cgroup: {e}"));
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        if let Err(e) = kill::remove_dir(&conn.paths.dir) {
            failures.push(format!("remove state: {e}"));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PlatformError::Failed(failures.join("; ")))
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
        let line = match child.stdout.take() {
            Some(stdout) => read_ready(stdout, self.config.ready_timeout),
            None => Err("supervisor stdout was not captured".to_owned()),
        };
        reap_intermediate(&mut child);
        let line = line.map_err(|why| SpawnFailure::lost(format!("{why}{}", log_tail(paths))))?;
        let ready: Ready = serde_json::from_str(&line).map_err(|e| {
            SpawnFailure::lost(format!(
                "supervisor sent an invalid ready report {line:?}: {e}{}",
                log_tail(paths)
            ))
        })?;
        match ready {
            Ready::Ready {
                supervisor,
                task,
                cgroup,
            } => {
                let conn = SupervisorConn::new(
                    spec.task_id.clone(),
                    paths.clone(),
                    supervisor,
                    cgroup.clone(),
                );
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
            // The supervisor removed what it created before reporting.
            Ready::Error(message) => Err(SpawnFailure::clean(message)),
        }
    }
}

/// Why a spawn failed, and whether the supervisor may have left a cgroup behind.
struct SpawnFailure {
    message: String,
    cgroup_may_remain: bool,
}

impl SpawnFailure {
    fn clean(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            cgroup_may_remain: false,
        }
    }

    fn lost(message: String) -> Self {
        Self {
            message,
            cgroup_may_remain: true,
        }
    }
}

fn call_error(conn: &SupervisorConn, e: CallError) -> PlatformError {
    if e.is_gone() {
        PlatformError::SupervisorLost(format!(
            "supervisor {} of task {}: {e}",
            conn.process.pid, conn.task_id
        ))
    } else {
        PlatformError::Failed(format!(
            "supervisor {} of task {}: {e}",
            conn.process.pid, conn.task_id
        ))
    }
}

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

/// Reads the supervisor's one ready line, giving up after `timeout`.
fn read_ready(mut stdout: ChildStdout, timeout: Duration) -> Result<String, String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // A timeout too large for the clock (Duration::MAX) means no deadline, not a panic.
    let deadline = Instant::now().checked_add(timeout);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            return String::from_utf8(buf)
                .map_err(|_| "supervisor ready report is not utf-8".to_owned());
        }
        if buf.len() as u64 > protocol::MAX_LINE {
            return Err("supervisor ready report is too long".to_owned());
        }
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err(format!(
                "supervisor did not report readiness within {timeout:?}"
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the supervisor's report failed: {e}")),
        }
        match stdout.read(&mut chunk) {
            Ok(0) => {
                return Err("supervisor exited before reporting readiness".to_owned());
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the supervisor's report failed: {e}")),
        }
    }
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
        crate::fingerprint::fingerprint()
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
                if failure.cgroup_may_remain {
                    // The supervisor died or hung without reporting: whatever it created
                    // is removed by name. Its task dies with it (parent-death signal).
                    let name = cgroup_name(&spec.task_id);
                    let cleaned = self.cgroup_parent().and_then(|parent| {
                        kill::kill_cgroup_named(&parent, &name)?;
                        kill::destroy_cgroup_named(&parent, &name)
                    });
                    if let Err(e) = cleaned {
                        message.push_str(&format!("; cleanup of cgroup {name} failed: {e}"));
                    }
                }
                if let Err(e) = kill::remove_dir(&paths.dir) {
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
        match self.call(conn, &Request::Signal { signal }, CALL_TIMEOUT)? {
            Response::Ok(_) => Ok(()),
            other => Err(unexpected(conn, "signal", other)),
        }
    }

    fn wait(
        &self,
        conn: &SupervisorConn,
        deadline: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError> {
        loop {
            let left = deadline.map(|d| d.saturating_since(self.now()));
            let request = Request::Wait {
                timeout_ms: left.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            };
            let answer = protocol::call_once(
                &conn.paths.socket(),
                &request,
                left.map(|l| l.saturating_add(WAIT_SLACK)),
            );
            match answer {
                Ok(Response::Exited(status)) => return Ok(Some(status)),
                Ok(Response::Running(_)) => {
                    if deadline.is_some_and(|d| self.now() >= d) {
                        return Ok(None);
                    }
                }
                Ok(other) => return Err(unexpected(conn, "wait", other)),
                Err(e) if e.is_gone() => {
                    // Exited and lingered out, or died: the exit record tells which.
                    return match exit_record::read(&conn.paths.exit_record()) {
                        Ok(Some(status)) => Ok(Some(status)),
                        Ok(None) => Err(PlatformError::SupervisorLost(format!(
                            "supervisor {} of task {} is gone ({e}) and left no exit record",
                            conn.process.pid, conn.task_id
                        ))),
                        Err(read) => Err(PlatformError::SupervisorLost(format!(
                            "supervisor {} of task {} is gone ({e}): {read}",
                            conn.process.pid, conn.task_id
                        ))),
                    };
                }
                Err(e) => return Err(call_error(conn, e)),
            }
        }
    }

    fn force_kill(&self, conn: &SupervisorConn) -> Result<(), PlatformError> {
        match self.call(conn, &Request::Kill, TEARDOWN_TIMEOUT)? {
            Response::Ok(_) => Ok(()),
            other => Err(unexpected(conn, "kill", other)),
        }
    }

    fn stats(&self, conn: &SupervisorConn) -> Result<TaskStats, PlatformError> {
        match self.call(conn, &Request::Stats, CALL_TIMEOUT)? {
            Response::Stats(mut stats) => {
                stats.timestamp = self.now();
                Ok(stats)
            }
            other => Err(unexpected(conn, "stats", other)),
        }
    }

    fn release(&self, conn: &SupervisorConn) -> Result<(), PlatformError> {
        match protocol::call_once(
            &conn.paths.socket(),
            &Request::Destroy,
            Some(TEARDOWN_TIMEOUT),
        ) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "destroy", other)),
            // It lingered out (or died) after the exit: do its cleanup here.
            Err(e) if e.is_gone() => self.cleanup_after_supervisor(conn),
            Err(e) => Err(call_error(conn, e)),
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
    fn clock_is_monotonic() {
        let p = LinuxPlatform::new(LinuxConfig::new("/nonexistent"));
        let a = p.now();
        let b = p.now();
        assert!(b >= a);
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
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let out = child.stdout.take().expect("stdout");
        let err = read_ready(out, Duration::from_secs(5)).expect_err("eof");
        assert!(err.contains("before reporting"), "{err}");
        let _ = child.wait();
        let mut child = Command::new("/bin/sh")
            .args(["-c", "printf '{\"error\":\"x\"}\\n'; sleep 1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let out = child.stdout.take().expect("stdout");
        assert_eq!(
            read_ready(out, Duration::from_secs(5)).ok().as_deref(),
            Some("{\"error\":\"x\"}")
        );
        let _ = child.wait();
        let mut child = Command::new("/bin/sleep")
            .arg("2")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sleep");
        let out = child.stdout.take().expect("stdout");
        let err = read_ready(out, Duration::from_millis(100)).expect_err("timeout");
        assert!(err.contains("within"), "{err}");
        let _ = child.kill();
        let _ = child.wait();
        // A timeout beyond the clock's range is no deadline, not an overflow panic.
        let mut child = Command::new("/bin/sh")
            .args(["-c", "printf 'x\\n'"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let out = child.stdout.take().expect("stdout");
        assert_eq!(read_ready(out, Duration::MAX).ok().as_deref(), Some("x"));
        let _ = child.wait();
        let mut child = Command::new("/bin/sleep")
            .arg("2")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sleep");
        let out = child.stdout.take().expect("stdout");
        let err = read_ready(out, Duration::from_millis(100)).expect_err("timeout");
        assert!(err.contains("within"), "{err}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
