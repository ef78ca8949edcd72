//! The start path: claim the task id, record where the task's cgroup goes, start the
//! supervisor, read its two reports, and on any failure leave nothing behind (or keep the
//! state dir when the cgroup could not be removed, and say so).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execdriver_core::{
    PlatformError, ProcessIdentity, SpawnStep, Spawned, SupervisorIdentity, TaskRecord, TaskSpec,
};

use super::LinuxPlatform;
use super::client::{LogLocation, SupervisorConn};
use super::orphan::{destroy_recorded_cgroup, kill_supervisor_process, remove_dir};
use crate::cgroups::{CgroupError, cgroup_name, supervisors_clone_target};
use crate::isolation::TaskUser;
use crate::process::born_in_cgroup::{self, Program, spawn_in_cgroup};
use crate::protocol::{self, Ready};
use crate::state::{self, CgroupRecord, ClaimError, StatePaths, claim_task_dir};

/// The fd the supervisor finds the start lock on (see [`crate::state`]).
pub(crate) const START_LOCK_FD: i32 = 3;
/// How long a failed start's cleanup may take.
const CLEANUP_BUDGET: Duration = Duration::from_secs(10);

/// Why a spawn failed, and what may be left to clean.
struct SpawnFailure {
    error: PlatformError,
    cgroup_may_remain: bool,
    /// The daemonized supervisor, when it told us who it is: killed (by verified pidfd) if
    /// it still runs, since nobody will ever hold a handle to it.
    supervisor: Option<ProcessIdentity>,
}

impl SpawnFailure {
    fn clean(step: SpawnStep, message: impl Into<String>) -> Self {
        Self {
            error: PlatformError::spawn(step, message),
            cgroup_may_remain: false,
            supervisor: None,
        }
    }

    fn lost(step: SpawnStep, message: String, supervisor: Option<ProcessIdentity>) -> Self {
        Self {
            error: PlatformError::spawn(step, message),
            cgroup_may_remain: true,
            supervisor,
        }
    }
}

/// Starts `spec`'s task under a new supervisor.
pub(crate) fn spawn(
    platform: &LinuxPlatform,
    spec: &TaskSpec,
) -> Result<Spawned<SupervisorConn>, PlatformError> {
    let fail = PlatformError::spawn;
    execdriver_core::validate_task_id(&spec.task_id)
        .map_err(|e| fail(SpawnStep::Dirs, e.to_string()))?;
    // The supervisor builds the filter again before its clone; a profile it would refuse is
    // refused here, before any state, cgroup or process exists.
    crate::seccomp::check(&spec.seccomp).map_err(|e| fail(SpawnStep::Launch, e.to_string()))?;
    // Looked up here, once, rather than in each supervisor: a lookup there would map the
    // host's NSS modules (libnss_systemd, and libcap and libm with it) and their relocated
    // pages into every supervisor and init for the task's whole life. An unknown user is
    // refused before anything exists.
    let user = crate::isolation::lookup_user(&spec.user)
        .map_err(|e| fail(SpawnStep::Launch, e.to_string()))?;
    for (what, dir) in [("task dir", &spec.task_dir), ("alloc dir", &spec.alloc_dir)] {
        if !dir.is_absolute() || !is_dir(dir) {
            return Err(fail(
                SpawnStep::Dirs,
                format!(
                    "{what} {} does not exist or is not a directory",
                    dir.display()
                ),
            ));
        }
    }
    let data = platform.create_data_dir()?;
    let tasks = state::tasks_dir(&data);
    state::create_private_dir_all(&tasks).map_err(|e| {
        fail(
            SpawnStep::Claim,
            format!("creating {} failed: {e}", tasks.display()),
        )
    })?;
    state::sweep_abandoned_claims(&tasks);
    let parent = platform
        .cgroup_parent()
        .map_err(|e| fail(SpawnStep::Cgroup, e.to_string()))?;
    let name = cgroup_name(&spec.task_id);
    let placement = parent.task_placement(&name, &spec.resources).map_err(|e| {
        let step = match e {
            CgroupError::CpusetCgroup { .. } => SpawnStep::CpusetCgroup,
            _ => SpawnStep::Cgroup,
        };
        fail(step, e.to_string())
    })?;
    let mut cgroup_paths = placement.paths;
    cgroup_paths.sort();
    let spec_json = serde_json::to_vec(spec).map_err(|e| {
        fail(
            SpawnStep::Records,
            format!("serializing the task spec failed: {e}"),
        )
    })?;
    // Both records are in the state dir before it exists under its name: whatever the
    // supervisor then creates can be found again by any later cleanup, from any process.
    let claimed = claim_task_dir(&tasks, &spec.task_id, |paths| {
        write_private(&paths.spec(), &spec_json)?;
        CgroupRecord {
            name: name.clone(),
            parent: platform.config.cgroup_parent.clone(),
            paths: cgroup_paths,
            join: placement.join,
        }
        .write_new(&paths.cgroup_record())
    });
    let (paths, lock) = match claimed {
        Ok(claimed) => claimed,
        Err(e @ ClaimError::InUse { .. }) => return Err(fail(SpawnStep::Claim, e.to_string())),
        Err(ClaimError::Io(e)) => return Err(fail(SpawnStep::Records, e.to_string())),
    };
    // Claimed once the state dir is in place, so that the claim is never stale while the
    // task is there; refused, the state dir (nothing else exists yet) goes again.
    if let Some(task_name) = &spec.name
        && let Err(e) = state::names::claim(&data, task_name, &spec.task_id)
    {
        let mut message = e.to_string();
        if let Err(rm) = remove_dir(&paths.dir) {
            message.push_str(&format!("; {rm}"));
        }
        return Err(fail(SpawnStep::Name, message));
    }
    let result = start_supervisor(platform, spec, &user, &paths, &lock);
    // The supervisor holds the lock now, through the same open file, until the task record
    // exists; or it is gone and the cleanup below removes the state dir.
    drop(lock);
    match result {
        Ok(spawned) => Ok(spawned),
        Err(failure) => {
            let error = clean_up(failure, &paths, &spec.task_id);
            // Without its state dir the claim is stale anyway; released so nothing is left.
            if let Some(task_name) = &spec.name
                && !paths.dir.exists()
            {
                let _ = state::names::release(&data, task_name, &spec.task_id);
            }
            Err(error)
        }
    }
}

/// Removes what a failed start left: the supervisor first (it could still create things),
/// then what it made, found through the cgroup record; its task dies with the cgroup.
fn clean_up(failure: SpawnFailure, paths: &StatePaths, task_id: &str) -> PlatformError {
    let deadline = Instant::now() + CLEANUP_BUDGET;
    let (step, mut message) = match failure.error {
        PlatformError::Spawn { step, reason } => (step, reason),
        other => (SpawnStep::Supervisor, other.to_string()),
    };
    if let Some(supervisor) = failure.supervisor
        && let Err(e) = kill_supervisor_process(&supervisor, paths, deadline)
    {
        message.push_str(&format!("; killing the supervisor failed: {e}"));
    }
    let cgroup_kept = failure.cgroup_may_remain
        && match destroy_recorded_cgroup(paths, task_id, deadline) {
            Ok(()) => false,
            Err(e) => {
                message.push_str(&format!(
                    "; cleanup of the task cgroup failed: {e}; state dir {} is kept: its \
                     record is needed to remove the cgroup later",
                    paths.dir.display()
                ));
                true
            }
        };
    if !cgroup_kept && let Err(e) = remove_dir(&paths.dir) {
        message.push_str(&format!("; {e}"));
    }
    PlatformError::spawn(step, message)
}

fn start_supervisor(
    platform: &LinuxPlatform,
    spec: &TaskSpec,
    user: &TaskUser,
    paths: &StatePaths,
    lock: &state::StartLock,
) -> Result<Spawned<SupervisorConn>, SpawnFailure> {
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(paths.log())
        .map_err(|e| {
            SpawnFailure::clean(
                SpawnStep::Records,
                format!("creating {} failed: {e}", paths.log().display()),
            )
        })?;
    let binary = platform
        .binary()
        .map_err(|e| SpawnFailure::clean(SpawnStep::Supervisor, e.to_string()))?;
    let linger = platform.config.supervisor_linger.as_millis().to_string();
    let lock_at = START_LOCK_FD.to_string();
    let user_ids = user.ids_arg();
    let mut args: Vec<&OsStr> = vec![
        "supervise".as_ref(),
        "--state-dir".as_ref(),
        paths.dir.as_os_str(),
        "--linger-ms".as_ref(),
        linger.as_ref(),
        "--start-lock-fd".as_ref(),
        lock_at.as_ref(),
        "--slice".as_ref(),
        platform.config.slice_name.as_ref(),
        "--user-ids".as_ref(),
        user_ids.as_ref(),
    ];
    if let Some(entry) = &user.entry {
        args.extend::<[&OsStr; 4]>([
            "--user-login".as_ref(),
            entry.name.as_ref(),
            "--user-home".as_ref(),
            entry.home.as_os_str(),
        ]);
    }
    let (mut child, stdout) = match supervisors_clone_target(&platform.config.slice_name) {
        Some(cgroup) => match spawn_born_in(&binary, &args, spec, &log, lock, cgroup.as_fd()) {
            Ok(born) => born,
            // The kernel or the cgroup refuses (a kernel before 5.7, a restricted mount):
            // the supervisor then moves itself, and says so in its log if it cannot.
            Err(_) => spawn_moving(&binary, &args, spec, log, lock)?,
        },
        None => spawn_moving(&binary, &args, spec, log, lock)?,
    };
    let mut reader = ReadyReader::new(stdout, platform.config.ready_timeout);
    // First line: who the daemonized supervisor is, so that it can be killed if it never
    // gets as far as the ready report. Second line: the ready report. An error report says
    // itself whether anything may remain and at which step it failed; any other failure
    // here leaves that unknown, so the cleanup by record runs.
    let started = match reader.line() {
        Ok(line) => match serde_json::from_str(&line) {
            Ok(Ready::Started { supervisor }) => Ok(supervisor),
            Ok(Ready::Error {
                message,
                step,
                cleanup_needed,
            }) => Err((step, message, cleanup_needed)),
            _ => Err((
                SpawnStep::Supervisor,
                format!("supervisor sent {line:?} instead of its identity"),
                true,
            )),
        },
        Err(why) => Err((SpawnStep::Supervisor, why, true)),
    };
    reap_intermediate(&mut child);
    let supervisor = started.map_err(|(step, why, cleanup_needed)| SpawnFailure {
        error: PlatformError::spawn(step, format!("{why}{}", log_tail(paths))),
        cgroup_may_remain: cleanup_needed,
        supervisor: None,
    })?;
    let lost = |why: String| {
        SpawnFailure::lost(
            SpawnStep::Supervisor,
            format!("{why}{}", log_tail(paths)),
            Some(supervisor),
        )
    };
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
        } if reported == supervisor => Ok(Spawned {
            supervisor: SupervisorConn::new(
                spec.task_id.clone(),
                paths.clone(),
                supervisor,
                task,
                Some(LogLocation::of(spec)),
            ),
            record: TaskRecord {
                task_id: spec.task_id.clone(),
                supervisor: SupervisorIdentity {
                    process: supervisor,
                    socket: paths.socket(),
                },
                task,
                cgroup,
                state_dir: paths.dir.clone(),
                task_dir: spec.task_dir.clone(),
                alloc_dir: spec.alloc_dir.clone(),
                kill_timeout: spec.kill_timeout,
                kill_signal: spec.kill_signal,
            },
        }),
        Ready::Ready {
            supervisor: reported,
            ..
        } => Err(lost(format!(
            "supervisor reported itself as {supervisor:?}, then as {reported:?}"
        ))),
        Ready::Error {
            message,
            step,
            cleanup_needed,
        } => Err(SpawnFailure {
            error: PlatformError::spawn(step, message),
            cgroup_may_remain: cleanup_needed,
            supervisor: Some(supervisor),
        }),
        Ready::Started { .. } => Err(lost("supervisor reported its identity twice".into())),
    }
}

/// The process the agent started, which forks the real supervisor and exits.
enum Intermediate {
    /// Started by std's `Command`.
    Std(Child),
    /// Started born in the supervisors cgroup: our own child, by pid.
    Born(i32),
}

/// The supervisor's whole environment. It needs nothing from the agent's, and the task's
/// comes from the spec alone. glibc's per-thread cache of freed chunks is off: chunks in it
/// count as used, so `malloc_trim` after the start could not give their pages back, and
/// they were half of the heap a waiting supervisor held (72 KiB resident against 36);
/// its speed is of no use to a process that mostly waits.
const SUPERVISOR_ENV: &[&str] = &["GLIBC_TUNABLES=glibc.malloc.tcache_count=0"];

/// Starts the supervisor's first process by std's `Command`, in our cgroup: the
/// supervisor then moves itself into the supervisors cgroup.
fn spawn_moving(
    binary: &Path,
    args: &[&OsStr],
    spec: &TaskSpec,
    log: File,
    lock: &state::StartLock,
) -> Result<(Intermediate, OwnedFd), SpawnFailure> {
    // The supervisor's stdin is the task's to be: ours when the spec asks for it (the
    // supervisor hands it on and lets go of it), else nothing.
    let stdin = match spec.stdin {
        execdriver_core::Stdin::Inherit => Stdio::inherit(),
        _ => Stdio::null(),
    };
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_clear()
        .envs(SUPERVISOR_ENV.iter().filter_map(|e| e.split_once('=')))
        .current_dir("/")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(log);
    let lock_fd = lock.fd().as_raw_fd();
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe; the fd
    // at START_LOCK_FD (without CLOEXEC) hands the held lock to the supervisor. dup2 onto
    // itself keeps CLOEXEC, so a lock that is already fd 3 has the flag cleared instead.
    unsafe {
        command.pre_exec(move || {
            let ret = if lock_fd == START_LOCK_FD {
                libc::fcntl(lock_fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(lock_fd, START_LOCK_FD)
            };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        SpawnFailure::clean(
            SpawnStep::Supervisor,
            format!("starting supervisor {} failed: {e}", binary.display()),
        )
    })?;
    let Some(stdout) = child.stdout.take() else {
        let mut child = Intermediate::Std(child);
        reap_intermediate(&mut child);
        return Err(SpawnFailure::lost(
            SpawnStep::Supervisor,
            "supervisor stdout was not captured".to_owned(),
            None,
        ));
    };
    Ok((Intermediate::Std(child), OwnedFd::from(stdout)))
}

/// Starts the supervisor's first process born in the supervisors cgroup `cgroup` (see
/// [`supervisors_clone_target`]): the same program, descriptors and environment as
/// [`spawn_moving`] gives it, without the write that would move it there afterwards.
fn spawn_born_in(
    binary: &Path,
    args: &[&OsStr],
    spec: &TaskSpec,
    log: &File,
    lock: &state::StartLock,
    cgroup: BorrowedFd<'_>,
) -> io::Result<(Intermediate, OwnedFd)> {
    let null;
    let ours = io::stdin();
    let stdin = match spec.stdin {
        execdriver_core::Stdin::Inherit => ours.as_fd(),
        _ => {
            null = File::open("/dev/null")?;
            null.as_fd()
        }
    };
    let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let program = Program {
        binary,
        args,
        env: SUPERVISOR_ENV,
        stdio: [stdin, stdout_w.as_fd(), log.as_fd()],
        extra: Some((lock.fd(), START_LOCK_FD)),
    };
    let pid = spawn_in_cgroup(&program, cgroup)?;
    Ok((Intermediate::Born(pid), stdout_r))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

/// Reads the supervisor's report lines, all within one `timeout` from its creation.
struct ReadyReader {
    stdout: File,
    timeout: Duration,
    deadline: Option<Instant>,
    buf: Vec<u8>,
}

impl ReadyReader {
    fn new(stdout: OwnedFd, timeout: Duration) -> Self {
        Self {
            stdout: File::from(stdout),
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

/// Reaps the process the agent started; it exits right after forking the real supervisor.
fn reap_intermediate(child: &mut Intermediate) {
    for _ in 0..200 {
        let gone = match child {
            Intermediate::Std(child) => !matches!(child.try_wait(), Ok(None)),
            Intermediate::Born(pid) => born_in_cgroup::try_reap(*pid),
        };
        if gone {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Still there after a second: it is not a supervisor that daemonized (or it hangs).
    // It is our own unreaped child, so its pid cannot have been reused.
    match child {
        Intermediate::Std(child) => {
            let _ = child.kill();
            let _ = child.wait();
        }
        Intermediate::Born(pid) => {
            // SAFETY: kill of our own unreaped child.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            born_in_cgroup::reap(*pid);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let read = ReadyReader::new(OwnedFd::from(out), timeout).line();
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
