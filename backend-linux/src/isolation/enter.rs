//! Entering a running task (exec): a new process set up exactly as the task was, but joined
//! to what the task already has instead of creating it.
//!
//! The sequence, from [`enter`] (every fd and C string is prepared before the first clone,
//! so the children only make system calls):
//! 1. clone a helper; it joins the task's mount, PID, IPC, UTS and network namespaces at
//!    once through a pidfd of the task's init (setns with a pidfd), and chroots into the
//!    init's root (opened as `/proc/<init>/root` before, pinned by the pidfd).
//! 2. The helper clones the command process with CLONE_PARENT: a joined PID namespace only
//!    applies to children, so the command is in the task's PID namespace, and it is the
//!    caller's child, reaped by the caller. The helper reports its pid and exits.
//! 3. The command moves itself into every hierarchy of the task's cgroup (`0` written to
//!    the `cgroup.procs` files opened before), so that it is accounted to the task, counted
//!    against its pids limit and killed with it (cgroup.kill, or the init's death, which
//!    takes the whole PID namespace down).
//! 4. It puts its stdio (or the terminal) on 0, 1, 2, then runs the task's own last steps
//!    (module `exec`): setsid (and the terminal as controlling terminal), no_new_privs,
//!    capabilities dropped as for the task, the task's user and groups, the working dir,
//!    stray fds closed, the task's seccomp filter, execve.
//!
//! The caller reads a CLOEXEC pipe until EOF: EOF is a successful exec, a record is a
//! failure (at exec: 126/127 as for the task; before it: an error).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;

use super::exec::{ExecPlan, step::TASK_EXEC};
use super::sys::{self, check, check_int};
use super::user::TaskUser;
use super::wire::{RECORD_LEN, Record};
use super::{InitExit, IsolationError, reap_init};
use crate::process::Pidfd;

/// The namespaces an exec joins: every one a task has (a task in the host's network
/// namespace joins it again, which changes nothing).
const JOINED: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET;

/// Step codes of the exec's own setup, before the task's steps.
mod step {
    /// setns into the task's namespaces.
    pub const ENTER_SETNS: u32 = 0xFFFF_0201;
    /// fchdir + chroot into the task's root.
    pub const ENTER_ROOT: u32 = 0xFFFF_0202;
    /// Cloning the command process.
    pub const ENTER_CLONE: u32 = 0xFFFF_0203;
    /// Joining the task's cgroup.
    pub const ENTER_CGROUP: u32 = 0xFFFF_0204;
    /// Putting stdio on 0, 1, 2.
    pub const ENTER_STDIO: u32 = 0xFFFF_0205;
    /// prctl(PR_SET_DUMPABLE, 0).
    pub const ENTER_NOT_DUMPABLE: u32 = 0xFFFF_0206;
}

/// A command to start in a running task.
#[derive(Debug)]
pub(crate) struct EnterRequest<'a> {
    /// The task's init.
    pub init: &'a Pidfd,
    /// The task's root, `/proc/<init>/root` opened O_PATH while the init was pinned.
    pub root: BorrowedFd<'a>,
    /// The `cgroup.procs` files of the task's cgroup, opened for writing.
    pub cgroup_procs: &'a [OwnedFd],
    /// argv, environment, ids, seccomp, cwd: the task's, with the exec's command.
    pub plan: &'a ExecPlan,
    /// Its user, for messages.
    pub user: &'a TaskUser,
    /// Its stdin, stdout and stderr: raw fds of the caller, open until [`enter`] returns.
    pub stdio: [RawFd; 3],
}

/// A started exec'd command, the caller's child.
#[derive(Debug)]
pub(crate) struct Entered {
    /// A pidfd on it.
    pub pidfd: Pidfd,
    /// When its exec failed: its status (126 or 127) and the message.
    pub exec_failed: Option<(i32, String)>,
}

/// Reaps an exec'd command through its pidfd (blocking): its exit code, or 128 + N and the
/// signal N.
pub(crate) fn reap(pidfd: &Pidfd) -> io::Result<(i32, Option<i32>)> {
    Ok(match reap_init(pidfd)? {
        InitExit::Code(c) => (c, None),
        InitExit::Signaled(s) => (128 + s, Some(s)),
    })
}

/// Opens a new terminal in the task's own devpts (so that its name, `/dev/pts/N`, is right
/// inside the task), owned by the task user: `(master, slave)`.
pub(crate) fn open_task_pty(
    root: BorrowedFd<'_>,
    user: &TaskUser,
) -> Result<(OwnedFd, OwnedFd), IsolationError> {
    let sys_err = |call: &'static str| move |e: rustix::io::Errno| IsolationError::Syscall {
        call,
        source: io::Error::from(e),
    };
    // Resolved beneath the task's root: a link planted there cannot lead out of it.
    let master = rustix::fs::openat2(
        root,
        "dev/pts/ptmx",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(sys_err("opening the task's /dev/pts/ptmx"))?;
    let stat = rustix::fs::fstat(&master).map_err(sys_err("fstat of the task's ptmx"))?;
    let is_ptmx = rustix::fs::FileType::from_raw_mode(stat.st_mode)
        == rustix::fs::FileType::CharacterDevice
        && rustix::fs::major(stat.st_rdev) == 5
        && rustix::fs::minor(stat.st_rdev) == 2;
    if !is_ptmx {
        return Err(IsolationError::Syscall {
            call: "opening the task's /dev/pts/ptmx",
            source: io::Error::other("it is not a pseudo-terminal multiplexer"),
        });
    }
    rustix::pty::unlockpt(&master).map_err(sys_err("unlockpt"))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR
            | rustix::pty::OpenptFlags::NOCTTY
            | rustix::pty::OpenptFlags::CLOEXEC,
    )
    .map_err(sys_err("opening the terminal's peer (TIOCGPTPEER)"))?;
    // As login does: the user's own terminal.
    rustix::fs::fchown(
        &slave,
        Some(rustix::process::Uid::from_raw(user.uid)),
        None,
    )
    .map_err(sys_err("fchown of the terminal"))?;
    Ok((master, slave))
}

/// Opens `/proc/<pid>/root` of the init (O_PATH), and checks the init is still the pinned
/// process afterwards, so the pid was not reused in between.
pub(crate) fn open_root(init: &Pidfd) -> Result<OwnedFd, IsolationError> {
    let path = format!("/proc/{}/root", init.pid());
    let fd = nix::fcntl::open(
        Path::new(&path),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| IsolationError::Syscall {
        call: "opening the task's root",
        source: io::Error::from(e),
    })?;
    // SAFETY: open just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if init.wait_exit(Some(std::time::Duration::ZERO))? {
        return Err(IsolationError::InitDied {
            pid: init.pid(),
            status: "exited while the exec was being prepared".to_owned(),
        });
    }
    Ok(fd)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), IsolationError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| IsolationError::Syscall {
        call: "pipe2",
        source: io::Error::from(e),
    })
}

fn report_failure(w: RawFd, step: u32, errno: i32) -> ! {
    sys::write_all(
        w,
        &Record::TaskFailed {
            step,
            errno,
            flags: 0,
        }
        .encode(),
    );
    // SAFETY: leaving the child without running any Rust cleanup.
    unsafe { libc::_exit(125) }
}

/// The helper: joins, chroots, clones the command and reports its pid. Never returns.
///
/// # Safety
/// Only in a fresh clone of the caller; system calls only.
unsafe fn helper_main(request: &EnterRequest<'_>, pid_w: RawFd, exec_w: RawFd) -> ! {
    // SAFETY: system calls on fds and values prepared before the clone.
    unsafe {
        // Not dumpable until the command's execve (which resets it): once in the task's pid
        // namespace, a root task could otherwise open the fds this copy of the caller holds
        // (other sessions' terminals, the cgroup.procs fds) through /proc/PID/fd before they
        // are closed, as runc's CVE-2016-9962 allowed.
        if let Err(e) = check_int(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)) {
            report_failure(exec_w, step::ENTER_NOT_DUMPABLE, e);
        }
        if let Err(e) = check_int(libc::setns(request.init.as_fd().as_raw_fd(), JOINED)) {
            report_failure(exec_w, step::ENTER_SETNS, e);
        }
        if let Err(e) = check_int(libc::fchdir(request.root.as_raw_fd()))
            .and_then(|_| check_int(libc::chroot(c".".as_ptr())))
        {
            report_failure(exec_w, step::ENTER_ROOT, e);
        }
        match sys::clone_fork(libc::CLONE_PARENT) {
            Ok(0) => command_main(request, exec_w),
            Ok(pid) => {
                sys::write_all(pid_w, &pid.to_ne_bytes());
                libc::_exit(0)
            }
            Err(e) => report_failure(exec_w, step::ENTER_CLONE, e),
        }
    }
}

/// The command: cgroup, stdio, then the task's own steps to exec. Never returns.
///
/// # Safety
/// Only in a fresh clone of the helper; system calls only.
unsafe fn command_main(request: &EnterRequest<'_>, exec_w: RawFd) -> ! {
    // SAFETY: system calls on fds and values prepared before the clones.
    unsafe {
        for procs in request.cgroup_procs {
            if let Err(e) = check(libc::write(
                procs.as_raw_fd(),
                b"0".as_ptr().cast(),
                1,
            ) as libc::c_long)
            {
                report_failure(exec_w, step::ENTER_CGROUP, e);
            }
        }
        // The caller's copies are all above 2 (dup'd with F_DUPFD_CLOEXEC from 3), so no
        // dup2 here overwrites a source still to be used.
        for (target, fd) in request.stdio.iter().enumerate() {
            if let Err(e) = check_int(libc::dup2(*fd, target as libc::c_int)) {
                report_failure(exec_w, step::ENTER_STDIO, e);
            }
        }
        super::exec::task_main(request.plan, exec_w)
    }
}

/// What a step of the exec's setup was, in words.
fn describe(step_code: u32, user: &TaskUser, cwd: &std::ffi::CStr) -> String {
    match step_code {
        step::ENTER_SETNS => "while joining the task's namespaces (setns)".to_owned(),
        step::ENTER_ROOT => "while entering the task's root (chroot)".to_owned(),
        step::ENTER_CLONE => "while forking the command in the task's namespaces".to_owned(),
        step::ENTER_CGROUP => "while joining the task's cgroup".to_owned(),
        step::ENTER_STDIO => "while setting up stdin, stdout and stderr".to_owned(),
        step::ENTER_NOT_DUMPABLE => {
            "while making the exec helper not dumpable (PR_SET_DUMPABLE)".to_owned()
        }
        super::exec::step::TASK_CONTROLLING_TTY => {
            "while making the terminal the controlling terminal (TIOCSCTTY)".to_owned()
        }
        other => super::describe_task_step(other, user, cwd),
    }
}

/// Starts the command of `request` in the task; returns once it has exec'd (or failed to).
pub(crate) fn enter(request: &EnterRequest<'_>) -> Result<Entered, IsolationError> {
    let (pid_r, pid_w) = pipe()?;
    let (exec_r, exec_w) = pipe()?;
    // SAFETY: the helper only makes system calls and leaves with _exit.
    let helper = unsafe { sys::clone_fork(0) }.map_err(|e| IsolationError::Syscall {
        call: "clone",
        source: io::Error::from_raw_os_error(e),
    })?;
    if helper == 0 {
        // SAFETY: this is the fresh clone.
        unsafe { helper_main(request, pid_w.as_raw_fd(), exec_w.as_raw_fd()) }
    }
    drop(pid_w);
    drop(exec_w);
    let helper_fd = Pidfd::open(helper)?;
    let helper_status = reap(&helper_fd).map_err(|source| IsolationError::Wait {
        pid: helper,
        source,
    })?;
    let mut pid_buf = [0u8; 4];
    let got = sys::read_full(pid_r.as_raw_fd(), &mut pid_buf).unwrap_or(0);
    // Read to EOF: the command's exec (CLOEXEC) or its death closes the last writer.
    let mut record = [0u8; RECORD_LEN];
    let record_len = sys::read_full(exec_r.as_raw_fd(), &mut record).unwrap_or(0);
    let failure = (record_len == RECORD_LEN)
        .then(|| Record::decode(&record))
        .flatten();
    if got != pid_buf.len() {
        return Err(match failure {
            Some(Record::TaskFailed { step, errno, .. }) => IsolationError::Setup {
                step: describe(step, request.user, &request.plan.cwd),
                source: io::Error::from_raw_os_error(errno),
            },
            _ => IsolationError::InitDied {
                pid: helper,
                status: format!(
                    "the exec helper ended with status {} before starting the command",
                    helper_status.0
                ),
            },
        });
    }
    let pid = i32::from_ne_bytes(pid_buf);
    // Our child (CLONE_PARENT): it cannot be reaped by anyone else, so its pid is stable.
    let pidfd = Pidfd::open(pid)?;
    match failure {
        None => Ok(Entered {
            pidfd,
            exec_failed: None,
        }),
        Some(Record::TaskFailed {
            step,
            errno,
            flags,
        }) if step == TASK_EXEC => {
            let message = super::exec::exec_failure_message(
                request.plan.command.to_bytes(),
                errno,
                flags,
            );
            let message = String::from_utf8_lossy(message.as_bytes())
                .trim_end()
                .to_owned();
            let code = super::exec::exec_failure_code(errno);
            let _ = reap(&pidfd);
            Ok(Entered {
                pidfd,
                exec_failed: Some((code, message)),
            })
        }
        Some(Record::TaskFailed { step, errno, .. }) => {
            let _ = reap(&pidfd);
            Err(IsolationError::Setup {
                step: describe(step, request.user, &request.plan.cwd),
                source: io::Error::from_raw_os_error(errno),
            })
        }
        Some(_) => {
            let _ = reap(&pidfd);
            Err(IsolationError::InitDied {
                pid,
                status: "the exec'd command sent an unexpected record".to_owned(),
            })
        }
    }
}

/// The plan for `argv` in the task of `spec`: its user, env (plus `env`, HOME `home`),
/// seccomp; `cwd`.
pub(crate) fn plan(
    spec: &execdriver_core::TaskSpec,
    user: &TaskUser,
    home: &std::path::Path,
    cwd: Option<&str>,
    tty: bool,
) -> Result<ExecPlan, IsolationError> {
    let mut plan = ExecPlan::new(spec, user, home)?;
    if let Some(cwd) = cwd {
        plan = plan.with_cwd(cwd)?;
    }
    if tty {
        plan = plan.with_controlling_tty();
    }
    Ok(plan)
}
