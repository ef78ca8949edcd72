//! Exec into a running task, from any process that has the task's handle: everything needed
//! comes from the handle and the task's records (its spec for argv context, user, env and
//! seccomp; its cgroup record for the cgroup; its init's identity for the namespaces and
//! root). The setup itself is `crate::isolation::enter`.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use execdriver_core::{
    ExecExit, ExecRequest, ExecSession, ExecStarted, ExitStatus, HandleId, PlatformError, Signal,
    Timestamp,
};

use super::confine::confine;
use crate::isolation::enter::{self, EnterRequest};
use crate::isolation::{IsolationError, lookup_user};
use crate::process::Pidfd;
use crate::state::recorded_cgroup;

fn exited(handle: &HandleId, why: &str) -> PlatformError {
    PlatformError::other(format!(
        "task {} has exited ({why}): there is nothing to exec in",
        handle.task_id
    ))
}

fn failed(handle: &HandleId, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::other(format!("exec in task {} failed: {e}", handle.task_id))
}

/// A copy of `fd` numbered 3 or above, CLOEXEC (see `enter`: no dup2 may clobber a source).
fn high_copy(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Starts `request` in the task of `handle` (confined against `data_dir`).
pub(crate) fn exec(
    data_dir: &Path,
    handle: &HandleId,
    request: ExecRequest,
    epoch: Instant,
) -> Result<ExecStarted, PlatformError> {
    let confined = confine(data_dir, handle)?;
    let mut spec = super::read_spec(&confined.paths.spec())?;
    let init = match Pidfd::open_verified(&handle.task) {
        Ok(Some(init)) => init,
        Ok(None) => return Err(exited(handle, "its init process is gone")),
        Err(e) => return Err(failed(handle, e)),
    };
    if init.wait_exit(Some(Duration::ZERO)).unwrap_or(false) {
        return Err(exited(handle, "its init process has ended"));
    }
    let root = enter::open_root(&init).map_err(|e| match e {
        IsolationError::InitDied { .. } => exited(handle, "its init process has ended"),
        e => failed(handle, e),
    })?;
    let cgroup = recorded_cgroup(&confined.paths, &handle.task_id)
        .map_err(|e| failed(handle, e))?
        .ok_or_else(|| failed(handle, "its cgroup record is missing"))?;
    // The task's cgroup (from its record: the hierarchies it is accounted and killed in),
    // and the init's place in every other hierarchy, so the command is where the task is.
    let mut dirs = cgroup.paths();
    let elsewhere = crate::cgroups::cgroup_dirs_of(init.pid()).map_err(|e| failed(handle, e))?;
    if init.wait_exit(Some(Duration::ZERO)).unwrap_or(false) {
        return Err(exited(handle, "its init process has ended"));
    }
    for dir in elsewhere {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let mut cgroup_procs = Vec::new();
    for dir in dirs {
        let path = dir.join("cgroup.procs");
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| failed(handle, format!("opening {}: {e}", path.display())))?;
        cgroup_procs.push(OwnedFd::from(file));
    }

    spec.config.command = request.command;
    spec.config.args = request.args;
    spec.env.extend(request.env);
    let user = lookup_user(&spec.user).map_err(|e| failed(handle, e))?;
    // HOME as the task got it: the user's home when it is a dir in the task's root.
    let home = user
        .entry
        .as_ref()
        .map(|e| e.home.clone())
        .filter(|home| {
            let rel = home.strip_prefix("/").unwrap_or(home);
            // Resolved inside the task's root: a link the task planted cannot lead the
            // look to a host dir.
            !rel.as_os_str().is_empty()
                && rustix::fs::openat2(
                    root.as_fd(),
                    rel,
                    rustix::fs::OFlags::PATH
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                    rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
                )
                .is_ok()
        })
        .unwrap_or_else(|| std::path::PathBuf::from("/"));
    let plan = enter::plan(&spec, &user, &home, request.cwd.as_deref(), request.tty)
        .map_err(|e| failed(handle, e))?;

    let copy = |fd: &OwnedFd| high_copy(fd).map_err(|e| failed(handle, format!("dup: {e}")));
    let (pty, stdio) = if request.tty {
        let (master, slave) =
            enter::open_task_pty(root.as_fd(), &user).map_err(|e| failed(handle, e))?;
        if let Some((rows, cols)) = request.window_size {
            crate::exec_io::set_window_size(&master, rows, cols)
                .map_err(|e| failed(handle, format!("setting the terminal's size: {e}")))?;
        }
        let slave = copy(&slave)?;
        (Some(master), [copy(&slave)?, copy(&slave)?, slave])
    } else {
        let null = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| failed(handle, format!("opening /dev/null: {e}")))
        };
        let pick = |fd: Option<OwnedFd>| match fd {
            Some(fd) => copy(&fd),
            None => copy(&null()?),
        };
        let s = request.stdio;
        (None, [pick(s.stdin)?, pick(s.stdout)?, pick(s.stderr)?])
    };
    let entered = enter::enter(&EnterRequest {
        init: &init,
        root: root.as_fd(),
        cgroup_procs: &cgroup_procs,
        plan: &plan,
        user: &user,
        stdio: [
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
        ],
    })
    .map_err(|e| {
        if init.wait_exit(Some(Duration::ZERO)).unwrap_or(false) {
            exited(handle, "its init process has ended")
        } else {
            failed(handle, e)
        }
    })?;
    drop(stdio);
    let exit = entered.exec_failed.map(|(code, message)| ExecExit {
        status: ExitStatus::code(code),
        failure: Some(message),
    });
    Ok(ExecStarted {
        session: Box::new(LinuxExec {
            pidfd: entered.pidfd,
            task_id: handle.task_id.clone(),
            epoch,
            exit: Mutex::new(exit),
        }),
        pty,
    })
}

/// An exec'd command: a child of this process, in the task.
#[derive(Debug)]
struct LinuxExec {
    pidfd: Pidfd,
    task_id: String,
    epoch: Instant,
    /// Once reaped.
    exit: Mutex<Option<ExecExit>>,
}

impl ExecSession for LinuxExec {
    fn wait(&self, until: Option<Timestamp>) -> Result<Option<ExecExit>, PlatformError> {
        let mut exit = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = exit.as_ref() {
            return Ok(Some(done.clone()));
        }
        let timeout = until.map(|t| {
            self.epoch.checked_add(t.0).map_or(Duration::MAX, |at| {
                at.saturating_duration_since(Instant::now())
            })
        });
        let ended = self.pidfd.wait_exit(timeout).map_err(|e| {
            PlatformError::other(format!("waiting for an exec in task {}: {e}", self.task_id))
        })?;
        if !ended {
            return Ok(None);
        }
        let (code, signal) = enter::reap(&self.pidfd).map_err(|e| {
            PlatformError::other(format!("reaping an exec in task {}: {e}", self.task_id))
        })?;
        let status = match signal.map(Signal::new) {
            Some(Ok(signal)) => ExitStatus::signaled(signal),
            _ => ExitStatus::code(code),
        };
        let done = ExecExit {
            status,
            failure: None,
        };
        *exit = Some(done.clone());
        Ok(Some(done))
    }

    fn signal(&self, signal: Signal) -> Result<(), PlatformError> {
        // The pidfd pins the command even once reaped: a signal can reach nothing else.
        match self.pidfd.signal(signal) {
            Ok(()) => Ok(()),
            Err(_) if self.pidfd.wait_exit(Some(Duration::ZERO)).unwrap_or(true) => Ok(()),
            Err(e) => Err(PlatformError::other(format!(
                "signalling an exec in task {}: {e}",
                self.task_id
            ))),
        }
    }
}
