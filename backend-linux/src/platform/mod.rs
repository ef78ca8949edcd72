//! [`LinuxPlatform`]: the agent side of the Linux backend, the [`Platform`] an agent embeds
//! in a `Driver`.
//!
//! Each task gets a supervisor process (the `supervise` entry point); the platform talks to
//! it over the supervisor protocol and acts without it only by the task's records. Where
//! each job is:
//!
//! - [`spawn`]: claim the task id, start the supervisor, read its reports;
//! - [`client`]: one request to a supervisor, by a deadline, checked against the handle;
//! - [`liveness`]: the one rule for alive, unresponsive or gone;
//! - [`confine`]: a handle id checked against this data dir and the task's records;
//! - [`reattach`]: confine, connect, verify;
//! - [`orphan`]: the cleanup steps without a supervisor (kill it, kill and remove the
//!   cgroup, remove the state);
//! - [`tasks`]: the tasks of the data dir (list, find by id, discard abandoned starts);
//! - [`remove`]: removing an exited task's remains (records, cgroup, name, alloc dir), and
//!   reading its details.

mod client;
mod config;
mod confine;
mod exec;
mod liveness;
mod orphan;
mod reattach;
mod remove;
mod spawn;
mod tasks;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use execdriver_core::{
    ExecRequest, ExecStarted, ExitStatus, Fingerprint, FoundTask, HandleId, LogChunk, LogCursor,
    LogStream, Platform, PlatformError, Reattach, Refusal, Signal, Spawned, TaskDetails, TaskSpec,
    TaskStats, Timestamp,
};

pub use client::SupervisorConn;
pub use config::{
    DEFAULT_DATA_DIR, DEFAULT_LINGER, DEFAULT_READY_TIMEOUT, LinuxConfig, SUPERVISOR_ENTRY,
};
pub(crate) use spawn::START_LOCK_FD;

use crate::cgroups::CgroupParent;
use crate::protocol::{Request, Response};
use client::{Unanswered, call, call_for_fd, unexpected};
use liveness::Liveness;

/// The longest a single `wait` request asks the supervisor to block; longer waits are sent
/// in chunks, so a supervisor that hangs is noticed within a chunk, not never.
const WAIT_CHUNK: Duration = Duration::from_secs(10);
/// Time for a `wait` answer to arrive beyond the wait itself.
const WAIT_SLACK: Duration = Duration::from_millis(250);
/// Time kept back from a force kill's deadline for the answer to travel.
const KILL_ANSWER_MARGIN: Duration = Duration::from_millis(100);

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

    /// The cgroup parent tasks are created under (the configured one, or the driver's slice,
    /// is created if missing).
    pub(crate) fn cgroup_parent(&self) -> Result<CgroupParent, String> {
        match &self.config.cgroup_parent {
            Some(relative) => CgroupParent::at(relative),
            None => crate::cgroups::detect_default_parent(&self.config.slice_name)
                .and_then(|decision| decision.resolve()),
        }
        .map_err(|e| format!("resolving the cgroup parent failed: {e}"))
    }

    /// The data dir with symlinks resolved; `None` when it does not exist (so nothing of a
    /// task can be in it).
    fn data_dir(&self) -> Result<Option<PathBuf>, PlatformError> {
        match fs::canonicalize(&self.config.data_dir) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PlatformError::io(
                &self.config.data_dir,
                e.kind(),
                format!("data dir {}: {e}", self.config.data_dir.display()),
            )),
        }
    }

    /// The data dir, which a handle's task must be in.
    fn data_dir_of(&self, handle: &HandleId) -> Result<PathBuf, PlatformError> {
        self.data_dir()?.ok_or_else(|| {
            PlatformError::refused(
                Refusal::Collected,
                format!(
                    "task {} cannot be in data dir {}: it does not exist",
                    handle.task_id,
                    self.config.data_dir.display()
                ),
            )
        })
    }

    /// The data dir, created (0711) if missing, resolved.
    fn create_data_dir(&self) -> Result<PathBuf, PlatformError> {
        let dir = &self.config.data_dir;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .and_then(|()| fs::canonicalize(dir))
            .map_err(|e| {
                PlatformError::io(
                    dir,
                    e.kind(),
                    format!("creating data dir {} failed: {e}", dir.display()),
                )
            })
    }

    fn binary(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.config.supervisor_binary {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the execdriver binary: {e}"))?;
        if self.config.supervisor_entry_beside {
            let entry = exe.with_file_name(SUPERVISOR_ENTRY);
            if entry.is_file() {
                return Ok(entry);
            }
        }
        Ok(exe)
    }

    /// A point on the platform clock as an [`Instant`].
    fn instant(&self, at: Timestamp) -> Instant {
        self.epoch.checked_add(at.0).unwrap_or_else(|| {
            // Beyond the clock's range: as good as never.
            Instant::now() + Duration::from_secs(60 * 60 * 24 * 365)
        })
    }
}

impl Platform for LinuxPlatform {
    type Supervisor = SupervisorConn;

    fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed())
    }

    fn fingerprint(&self) -> Fingerprint {
        crate::fingerprint::fingerprint(
            self.config.cgroup_parent.as_deref(),
            &self.config.slice_name,
        )
    }

    fn spawn(&self, spec: &TaskSpec) -> Result<Spawned<SupervisorConn>, PlatformError> {
        spawn::spawn(self, spec)
    }

    fn task_ids(&self) -> Result<Vec<String>, PlatformError> {
        tasks::task_ids(self.data_dir()?.as_deref())
    }

    fn find_task(&self, task_id: &str) -> Result<FoundTask, PlatformError> {
        tasks::find_task(self.data_dir()?.as_deref(), task_id)
    }

    fn discard_incomplete(&self, task_id: &str, deadline: Timestamp) -> Result<(), PlatformError> {
        tasks::discard_incomplete(self.data_dir()?.as_deref(), task_id, self.instant(deadline))
    }

    fn reattach(
        &self,
        handle: &HandleId,
        deadline: Timestamp,
    ) -> Result<Reattach<SupervisorConn>, PlatformError> {
        reattach::reattach(&self.data_dir_of(handle)?, handle, self.instant(deadline))
    }

    fn signal(
        &self,
        conn: &SupervisorConn,
        signal: Signal,
        deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        match call(conn, &Request::Signal { signal }, self.instant(deadline)) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "signal", other)),
            // Nothing left to signal: the exit is collected by the next wait.
            Err(Unanswered::Settled(Liveness::Exited(_))) => Ok(()),
            Err(u) => Err(u.into_error(conn.task_id())),
        }
    }

    fn begin_kill(
        &self,
        conn: &SupervisorConn,
        signal: Signal,
        grace: Duration,
        deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        let request = Request::Shutdown {
            signal: Some(signal),
            grace_ms: millis(grace),
        };
        match call(conn, &request, self.instant(deadline)) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "kill", other)),
            Err(Unanswered::Settled(Liveness::Exited(_))) => Ok(()),
            Err(u) => Err(u.into_error(conn.task_id())),
        }
    }

    fn wait(
        &self,
        conn: &SupervisorConn,
        until: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError> {
        loop {
            let left = until.map(|d| d.saturating_since(self.now()));
            let chunk = left.map_or(WAIT_CHUNK, |l| l.min(WAIT_CHUNK));
            let request = Request::Wait {
                timeout_ms: Some(millis(chunk)),
            };
            let deadline = Instant::now() + chunk + WAIT_SLACK;
            match call(conn, &request, deadline) {
                Ok(Response::Exited(status)) => return Ok(Some(status)),
                Ok(Response::Running(_)) => {
                    if until.is_some_and(|d| self.now() >= d) {
                        return Ok(None);
                    }
                }
                Ok(other) => return Err(unexpected(conn, "wait", other)),
                Err(Unanswered::Settled(Liveness::Exited(status))) => return Ok(Some(status)),
                Err(u) => return Err(u.into_error(conn.task_id())),
            }
        }
    }

    fn force_kill(&self, conn: &SupervisorConn, deadline: Timestamp) -> Result<(), PlatformError> {
        let deadline = self.instant(deadline);
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(KILL_ANSWER_MARGIN);
        let request = Request::Kill {
            budget_ms: Some(millis(budget)),
        };
        match call(conn, &request, deadline) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "kill", other)),
            Err(Unanswered::Settled(Liveness::Exited(_))) => Ok(()),
            Err(u) => Err(u.into_error(conn.task_id())),
        }
    }

    fn stats(
        &self,
        conn: &SupervisorConn,
        deadline: Timestamp,
    ) -> Result<TaskStats, PlatformError> {
        match call(conn, &Request::Stats, self.instant(deadline)) {
            Ok(Response::Stats(mut stats)) => {
                stats.timestamp = self.now();
                Ok(stats)
            }
            Ok(other) => Err(unexpected(conn, "stats", other)),
            Err(u) => Err(u.into_error(conn.task_id())),
        }
    }

    fn exec(
        &self,
        _conn: &SupervisorConn,
        handle: &HandleId,
        request: ExecRequest,
        _deadline: Timestamp,
    ) -> Result<ExecStarted, PlatformError> {
        exec::exec(&self.data_dir_of(handle)?, handle, request, self.epoch)
    }

    fn terminal(
        &self,
        conn: &SupervisorConn,
        deadline: Timestamp,
    ) -> Result<std::os::fd::OwnedFd, PlatformError> {
        match call_for_fd(conn, &Request::Terminal, self.instant(deadline)) {
            Ok((Response::Ok(_), Some(fd))) => Ok(fd),
            Ok((Response::Ok(_), None)) => Err(PlatformError::other(format!(
                "supervisor of task {} answered the terminal request without the terminal",
                conn.task_id()
            ))),
            Ok((other, _)) => Err(unexpected(conn, "terminal", other)),
            Err(u) => Err(u.into_error(conn.task_id())),
        }
    }

    fn release(&self, conn: &SupervisorConn, deadline: Timestamp) -> Result<(), PlatformError> {
        // The supervisor leaves and the state dir stays, with the exit record that answers
        // every later wait; `remove_task` removes it. A failure makes the driver run its
        // orphan cleanup, which also covers a supervisor that cannot record the exit.
        match call(conn, &Request::Release, self.instant(deadline)) {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(unexpected(conn, "release", other)),
            // It lingered out after recording the exit: nothing more to do.
            Err(Unanswered::Settled(Liveness::Exited(_))) => Ok(()),
            Err(u) => Err(u.into_error(conn.task_id())),
        }
    }

    fn read_logs(
        &self,
        handle: &HandleId,
        supervisor: Option<&SupervisorConn>,
        stream: LogStream,
        cursor: LogCursor,
        max: usize,
    ) -> Result<LogChunk, PlatformError> {
        let paths = crate::state::StatePaths::at(&handle.state_dir);
        let location = match supervisor.and_then(SupervisorConn::logs) {
            // Found by the connection, which was made after confinement.
            Some(location) => location.clone(),
            None => {
                let data = self.data_dir_of(handle)?;
                let confined = confine::confine(&data, handle)?;
                client::LogLocation::of(&read_spec(&confined.paths.spec())?)
            }
        };
        // Looked at before the files are read: the supervisor writes the last output before
        // the exit record, and removes the state only after that, so once the record is
        // there, or the state is gone, or the supervisor is dead, this read sees everything
        // and nothing more comes.
        let more_may_come = paths.dir.is_dir()
            && !paths.exit_record().exists()
            && !liveness::is_dead(&handle.supervisor.process).unwrap_or(false);
        let read = crate::logs::reader::read_from(
            &location.dir,
            &location.task_name,
            stream,
            &location.rotation,
            cursor,
            max,
        )
        .map_err(|e| PlatformError::io(&location.dir, e.kind(), e.to_string()))?;
        Ok(LogChunk {
            data: read.data,
            next: read.next,
            skipped: read.skipped,
            more_may_come,
            times: read
                .times
                .into_iter()
                .map(|(at, unix_nanos)| execdriver_core::LogTime { at, unix_nanos })
                .collect(),
        })
    }

    fn kill_supervisor(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError> {
        orphan::kill_supervisor(&self.data_dir_of(handle)?, handle, self.instant(deadline))
    }

    fn kill_cgroup(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError> {
        orphan::kill_cgroup(&self.data_dir_of(handle)?, handle, self.instant(deadline))
    }

    fn destroy_cgroup(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError> {
        match self.data_dir()? {
            Some(data) => orphan::destroy_cgroup(&data, handle, self.instant(deadline)),
            None => Ok(()),
        }
    }

    fn remove_state(&self, handle: &HandleId) -> Result<(), PlatformError> {
        match self.data_dir()? {
            Some(data) => orphan::remove_state(&data, handle),
            None => Ok(()),
        }
    }

    fn remove_task(&self, handle: &HandleId, deadline: Timestamp) -> Result<(), PlatformError> {
        match self.data_dir()? {
            Some(data) => remove::remove_task(&data, handle, self.instant(deadline)),
            None => Ok(()),
        }
    }

    fn task_named(&self, name: &str) -> Result<Option<String>, PlatformError> {
        let Some(data) = self.data_dir()? else {
            return Ok(None);
        };
        crate::state::names::holder(&data, name).map_err(|e| {
            PlatformError::io(
                crate::state::names::names_dir(&data),
                e.kind(),
                e.to_string(),
            )
        })
    }

    fn details(&self, handle: &HandleId) -> Result<TaskDetails, PlatformError> {
        remove::details(&self.data_dir_of(handle)?, handle)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The spec the agent wrote into a state dir.
fn read_spec(path: &std::path::Path) -> Result<TaskSpec, PlatformError> {
    match crate::state::read_record(path, crate::state::MAX_SPEC, "task spec") {
        Ok(Some(spec)) => Ok(spec),
        Ok(None) => Err(PlatformError::io(
            path,
            io::ErrorKind::NotFound,
            format!("task spec {} is missing", path.display()),
        )),
        Err(e) => Err(PlatformError::io(path, e.kind(), e.to_string())),
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
        assert!(
            matches!(
                err,
                PlatformError::Spawn {
                    step: execdriver_core::SpawnStep::Dirs,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("task dir"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!data.path().join("tasks").exists());
    }
}
