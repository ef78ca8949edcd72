//! How a task is started: new mount, PID, IPC and UTS namespaces; a root made of the task dir
//! and read-only binds of the chroot env; a pid-1 init that forwards signals and reaps;
//! the user drop; exec.
//!
//! The sequence, from [`launch`]:
//! 1. In the supervisor: look up the user, create the (empty) mount points in the task dir,
//!    plan every mount as a list of steps with ready-made C strings, build argv and envp
//!    and the seccomp filter program. The network plan (module `network`) opens the
//!    namespace file to join, if any.
//! 2. clone(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, plus CLONE_NEWNET for
//!    `--network none`). The child is the namespace's init (module `init`): it closes the
//!    supervisor's fds and waits.
//! 3. The supervisor calls `place_in_cgroup(init_pid)` (unless the init was cloned straight
//!    into its cgroup v2 directory), then sends "go".
//! 4. The init joins the planned network namespace (or brings `lo` up in its new one),
//!    makes the mount tree private, binds the task dir onto itself, binds the chroot env
//!    read-only, covers the masked paths, mounts proc (it is in the new PID namespace
//!    already), /dev, alloc, secrets and /tmp, sets the hostname, pivot_roots, and forks
//!    the task.
//! 5. The task (module `exec`) does setsid, no_new_privs, drops capabilities outside
//!    [`TASK_CAPABILITIES`] (bounding set included), setgroups/setgid/setuid, closes
//!    stray fds, installs the seccomp filter built in step 1 (`crate::seccomp`) and execs. An exec failure becomes exit 126/127 plus a line on its stderr.
//! 6. The init reports "started", forwards signals, reaps, and when the task exits writes
//!    the task's status on the report pipe and exits: the kernel kills what is left.
//!
//! Every mount lives only in the task's mount namespace and disappears with it: there is
//! nothing to unmount on the host, ever.
//!
//! What the task sees:
//! - `/`: the task dir (bound onto itself, nosuid,nodev). The working directory is the
//!   spec's `workdir` (which must exist in the root), else `/`, as in Nomad and docker, so a
//!   command such as `local/run.sh` works.
//! - the spec's bind mounts, after the chroot env and the masks (nosuid,nodev; read-only
//!   when asked), their mount points made in the task dir, or found in a host dir.
//! - the chroot env dirs that exist on the host, bound read-only,nosuid,nodev (recursively,
//!   submounts read-only too, where mount_setattr exists); host symlinks such as the merged
//!   /usr `/bin -> usr/bin` are recreated as symlinks. Nothing is copied.
//! - the spec's masked paths (by default /etc/shadow, /etc/gshadow, sudoers, ssh host
//!   private keys and the like: `execdriver_core::spec::DEFAULT_MASKED_PATHS`) that exist
//!   inside the chroot env: each covered by an empty file or dir, read-only, bound from a
//!   tmpfs of the driver's own that nothing else reaches.
//! - network: the host's namespace (default), a private one with only `lo`, up (`none`),
//!   or an existing one joined through its nsfs file.
//! - `/proc` (its own PID namespace only), `/dev` (tmpfs with null, zero, full, random,
//!   urandom, tty bound from the host, nosuid,noexec but not nodev; a new devpts at
//!   `/dev/pts` with `/dev/ptmx`; tmpfs `/dev/shm`; fd, stdin, stdout, stderr links),
//!   `/alloc` (the alloc dir, read-write), `/secrets` (1 MiB tmpfs, 0700, owned by the
//!   task user), `/tmp` (tmpfs, 1777), `/local` (created for the task user if missing).
//! - hostname: the task name, cut to 64 bytes.
//! - environment: only `spec.env`, then `EXECDRIVER_TASK_DIR=/local`,
//!   `EXECDRIVER_ALLOC_DIR=/alloc`, `EXECDRIVER_SECRETS_DIR=/secrets`,
//!   `EXECDRIVER_TASK_NAME`, `EXECDRIVER_TASK_ID` (these win over `spec.env`), and
//!   [`DEFAULT_PATH`] unless `spec.env` sets PATH, and HOME (the passwd home when it is a
//!   dir in the task root, else `/`), USER and LOGNAME (when the user has a passwd entry)
//!   unless `spec.env` sets them. A bare command is looked up in that PATH inside the task
//!   root.
//! - stdin `/dev/null` (or the request's fd), stdout/stderr the request's fds, no other fd; umask 022; every
//!   signal at its default and unblocked; no_new_privs; no capabilities, and a task run as
//!   root keeps only [`TASK_CAPABILITIES`] (Docker's default set less NET_RAW and MKNOD), in
//!   its bounding set too: it cannot mount, mknod, load modules, trace or chroot.
//! - seccomp (`Seccomp: 2`): the default denylist of `crate::seccomp` unless the spec
//!   says unconfined or gives a profile.
//! - exec failure: exit 127 when nothing was found (ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG),
//!   126 when it was found but could not run (EACCES, ENOEXEC, ...), with
//!   `execdriver: cannot run "<command>": <reason>` on the task's stderr.

pub(crate) mod enter;
mod exec;
mod init;
mod network;
mod rootfs;
pub(crate) mod sys;
mod user;
mod reaper;
mod wait_out;
mod wire;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
#[cfg(any(test, feature = "test-support"))]
use std::time::Duration;

use execdriver_core::{ExitStatus, Signal, TaskSpec};
use nix::fcntl::OFlag;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::process::{Pidfd, ProcessError};

#[cfg(any(test, feature = "test-support"))]
pub use exec::{DEFAULT_PATH, TASK_CAPABILITIES, task_environment};
pub(crate) use user::lookup as lookup_user;
pub use user::{TaskUser, UserEntry};
use wire::{RECORD_LEN, Record};

/// The namespaces a task gets.
const NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// A failure to start or follow the task, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// A device the task was given that cannot be put in its /dev.
    #[error("device {path:?} cannot be given to the task: {why}")]
    Device {
        /// The path in the task.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// The spec's user is not in the host's user database.
    #[error("user {user:?} does not exist on this node")]
    UnknownUser {
        /// The user name.
        user: String,
    },
    /// The group of a `NAME:GROUP` or `UID:GROUP` user is not in the host's group database.
    #[error("group {group:?} of user {user:?} does not exist on this node; give a gid or an existing group")]
    UnknownGroup {
        /// The user as given.
        user: String,
        /// The group name.
        group: String,
    },
    /// The user database could not be read.
    #[error("cannot look up user {user:?}: {source}")]
    UserLookup {
        /// The user name.
        user: String,
        /// Why.
        source: nix::Error,
    },
    /// The task dir or alloc dir is missing or not a directory.
    #[error("{what} {path:?} cannot be used: {source}")]
    Dir {
        /// `task dir` or `alloc dir`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The task user could not even enter its own root.
    #[error(
        "task dir {path:?} is not searchable by the task user {user:?} (uid {uid}); give it o+x or make the user its owner"
    )]
    NotSearchable {
        /// The task dir.
        path: PathBuf,
        /// The user.
        user: String,
        /// Its uid.
        uid: u32,
    },
    /// A chroot env dir that would replace a dir the driver mounts itself.
    #[error(
        "chroot env dir {path:?} would hide the task's own {name:?}; remove it from the chroot env"
    )]
    ReservedChrootDir {
        /// The chroot env entry.
        path: PathBuf,
        /// The reserved top-level name.
        name: &'static str,
    },
    /// A chroot env dir the spec names that the host does not have.
    #[error(
        "chroot env dir {path:?} does not exist on this node; create it or leave it out of the chroot env"
    )]
    MissingChrootDir {
        /// The entry.
        path: PathBuf,
    },
    /// A bind mount of the spec that cannot be made.
    #[error("mount {host:?} -> {destination:?} cannot be made: {why}")]
    Mount {
        /// The host path (the mount's source).
        host: PathBuf,
        /// Its destination in the task root.
        destination: PathBuf,
        /// Why.
        why: String,
    },
    /// A masked path of the spec that cannot be masked.
    #[error("masked path {path:?} cannot be masked: {why}")]
    MaskedPath {
        /// The path (or what it resolved to).
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A network namespace file that cannot be joined.
    #[error("network namespace {path:?} cannot be used: {why}")]
    NetworkNamespace {
        /// The path given.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// `none` asked of a kernel without network namespaces.
    #[error(
        "network `none` needs network namespaces, which this kernel lacks (no /proc/self/ns/net: CONFIG_NET_NS is off)"
    )]
    NoNetworkNamespaces,
    /// A network mode this backend does not know (a newer core).
    #[error("network {network:?} is not supported by this driver")]
    UnsupportedNetwork {
        /// The mode, as the spec writes it.
        network: String,
    },
    /// A mount point in the task dir could not be created or used.
    #[error("cannot prepare mount point {path:?} in the task dir: {why}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A string with a NUL byte where exec or mount needs a C string.
    #[error("{what} contains a nul byte")]
    Nul {
        /// Which value.
        what: String,
    },
    /// A system call in the supervisor failed.
    #[error("{call} failed: {source}")]
    Syscall {
        /// What was called.
        call: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The cgroup callback refused the init; the init was killed.
    #[error("cannot place the task's init (pid {pid}) in its cgroup: {reason}")]
    Cgroup {
        /// Host pid of the init.
        pid: i32,
        /// The callback's error.
        reason: String,
    },
    /// A step of the root setup or user drop failed in the child; nothing was run.
    #[error("task setup failed {step}: {source}")]
    Setup {
        /// The step, in words.
        step: String,
        /// The OS error.
        source: io::Error,
    },
    /// The init died before it reported anything (killed from outside, most likely).
    #[error("the task's init (pid {pid}) died before the task started: {status}")]
    InitDied {
        /// Host pid of the init.
        pid: i32,
        /// How it ended.
        status: String,
    },
    /// Reaping the init failed.
    #[error("waiting for the task's init (pid {pid}) failed: {source}")]
    Wait {
        /// Host pid of the init.
        pid: i32,
        /// The OS error.
        source: io::Error,
    },
    /// Sending a signal failed.
    #[error("cannot send signal {signal} to the task (init pid {pid}): {source}")]
    Signal {
        /// Host pid of the init.
        pid: i32,
        /// The signal number.
        signal: i32,
        /// The OS error.
        source: io::Error,
    },
    /// A pidfd operation.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The task's seccomp filter could not be built; nothing was started.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// Everything needed to start a task in its isolated root.
pub struct LaunchRequest<'a> {
    /// The task.
    pub spec: &'a TaskSpec,
    /// The task's stdin, `None` for `/dev/null`.
    pub stdin: Option<OwnedFd>,
    /// Where the task's stdout goes (write end of a pipe to the log pump).
    pub stdout: OwnedFd,
    /// Where the task's stderr goes.
    pub stderr: OwnedFd,
    /// The task cgroup's directory when the init can be born in it (cgroup v2): it is
    /// cloned into it, and `place_in_cgroup` is then not called.
    pub clone_into: Option<BorrowedFd<'a>>,
    /// Called in the parent with the init's host pid before the init may go on, unless it
    /// was born in its cgroup: the supervisor puts it into the task cgroup here, so the task
    /// never runs outside it.
    pub place_in_cgroup: &'a dyn Fn(i32) -> Result<(), String>,
    /// The spec's user as the agent looked it up; `None` looks it up here.
    pub user: Option<TaskUser>,
}

impl std::fmt::Debug for LaunchRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("task_id", &self.spec.task_id)
            .finish_non_exhaustive()
    }
}

/// A started task: its pid-1 init, as seen from the host.
///
/// Dropping it before [`LaunchedTask::wait`] returned kills the task (SIGKILL to the init,
/// which takes the whole PID namespace down) and reaps the init: a task is never left
/// running without its handle.
#[derive(Debug)]
pub struct LaunchedTask {
    /// Host pid of the task's init (pid 1 of its namespace).
    pub init_pid: i32,
    /// A pidfd on the init.
    pub pidfd: Pidfd,
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))]
    pid_namespace: u64,
    report: OwnedFd,
    control: OwnedFd,
    /// The master of the task's terminal, when it has one, until the supervisor takes it.
    pub terminal: Option<OwnedFd>,
    /// Whether the init was cloned straight into its cgroup (see [`LaunchRequest::clone_into`]).
    pub born_in_cgroup: bool,
    status: Mutex<Option<ExitStatus>>,
}

/// How the init itself ended.
enum InitExit {
    Code(i32),
    Signaled(i32),
}

impl std::fmt::Display for InitExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitExit::Code(c) => write!(f, "exit code {c}"),
            InitExit::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Reaps the init through its pidfd (blocking).
fn reap_init(pidfd: &Pidfd) -> io::Result<InitExit> {
    loop {
        // SAFETY: waitid writes one siginfo_t.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid filled in a CLD_* record, for which si_status is valid.
        let value = unsafe { info.si_status() };
        return Ok(if info.si_code == libc::CLD_EXITED {
            InitExit::Code(value)
        } else {
            InitExit::Signaled(value)
        });
    }
}

fn signal_status(signal: i32) -> ExitStatus {
    match Signal::new(signal) {
        Ok(s) => ExitStatus::signaled(s),
        Err(_) => ExitStatus::code(128 + signal),
    }
}

impl LaunchedTask {
    /// Forwards `signal` to the task (through its init).
    ///
    /// SIGKILL goes to the init itself, which takes the whole namespace down with it.
    /// SIGSTOP cannot be caught, so it goes over the control socket for the init to send.
    /// Signalling a task that already exited is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), IsolationError> {
        if signal.number() != libc::SIGSTOP {
            return Ok(self.pidfd.signal(signal)?);
        }
        let msg = Record::Forward {
            signal: signal.number(),
        }
        .encode();
        // SAFETY: sending a local buffer; MSG_NOSIGNAL turns a dead init into EPIPE.
        let n = unsafe {
            libc::send(
                self.control.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if matches!(
                err.raw_os_error(),
                Some(libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED)
            ) {
                return Ok(());
            }
            return Err(IsolationError::Signal {
                pid: self.init_pid,
                signal: signal.number(),
                source: err,
            });
        }
        Ok(())
    }

    /// Blocks until the task has exited and reaps its init; the status is the task's own
    /// (its exit code or signal), not the init's. `oom_killed` is always false here: the
    /// caller knows the cgroup. Calling it again returns the same status.
    ///
    /// When the init died without a report (SIGKILL from a force kill), the status is the
    /// init's signal. The caller must not reap the init by other means (waitpid(-1)).
    pub fn wait(&self) -> Result<ExitStatus, IsolationError> {
        let mut cached = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = *cached {
            return Ok(status);
        }
        let init = reap_init(&self.pidfd);
        let status = match (self.read_exit_record(), init) {
            (Some(Record::Exited { code }), _) => ExitStatus::code(code),
            (Some(Record::Killed { signal }), _) => signal_status(signal),
            (_, Ok(InitExit::Signaled(signal))) => signal_status(signal),
            (_, Ok(InitExit::Code(code))) => ExitStatus::code(code),
            (_, Err(source)) => {
                return Err(IsolationError::Wait {
                    pid: self.init_pid,
                    source,
                });
            }
        };
        *cached = Some(status);
        Ok(status)
    }

    /// Like [`LaunchedTask::wait`], but gives up after `timeout` with `Ok(None)`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>, IsolationError> {
        // try_lock: another thread blocked in wait() holds the lock, and waiting for it here
        // would ignore the timeout.
        if let Ok(cached) = self.status.try_lock()
            && let Some(status) = *cached
        {
            return Ok(Some(status));
        }
        if !self.pidfd.wait_exit(Some(timeout))? {
            return Ok(None);
        }
        self.wait().map(Some)
    }

    #[cfg(any(test, feature = "test-support"))]
    /// The inode of the task's PID namespace (`/proc/<pid>/ns/pid`), recorded at launch: a
    /// process whose namespace has this inode belongs to the task, while the task lives
    /// (once the namespace is gone the kernel reuses the number for new namespaces).
    pub fn pid_namespace(&self) -> u64 {
        self.pid_namespace
    }

    /// The last exit record on the report pipe; read once the init is dead, so it never
    /// blocks (non-blocking anyway, in case another copy of the write end survives).
    fn read_exit_record(&self) -> Option<Record> {
        let fd = self.report.as_raw_fd();
        // SAFETY: fcntl on our own fd.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        let mut last = None;
        loop {
            let mut buf = [0u8; RECORD_LEN];
            match sys::read_full(fd, &mut buf) {
                Ok(RECORD_LEN) => {
                    if let Some(r @ (Record::Exited { .. } | Record::Killed { .. })) =
                        Record::decode(&buf)
                    {
                        last = Some(r);
                    }
                }
                _ => return last,
            }
        }
    }
}

impl Drop for LaunchedTask {
    fn drop(&mut self) {
        let status = self
            .status
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if status.is_none() {
            let _ = self.pidfd.signal(Signal::SIGKILL);
            let _ = reap_init(&self.pidfd);
        }
    }
}

/// Kills and reaps the cloned init unless disarmed: every early return of `launch` after
/// the clone goes through it.
struct InitGuard {
    pid: libc::pid_t,
    armed: bool,
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: our own unreaped child, so the pid cannot have been reused.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                while libc::waitpid(self.pid, &mut status, 0) < 0 && sys::errno() == libc::EINTR {}
            }
        }
    }
}

impl InitGuard {
    /// Reaps the (already dying) init and says how it ended.
    fn reap(mut self) -> String {
        self.armed = false;
        let mut status = 0;
        // SAFETY: our own child.
        let ret = loop {
            let ret = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if ret < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            break ret;
        };
        if ret < 0 {
            return format!("cannot reap it: {}", io::Error::last_os_error());
        }
        if libc::WIFSIGNALED(status) {
            InitExit::Signaled(libc::WTERMSIG(status)).to_string()
        } else {
            InitExit::Code(libc::WEXITSTATUS(status)).to_string()
        }
    }
}

fn describe_step(
    step: u32,
    root: &rootfs::RootPlan,
    network: &network::NetworkPlan,
    user: &user::TaskUser,
    exec: &exec::ExecPlan,
) -> String {
    use init::step::*;
    if let Some(s) = root.steps.get(step as usize) {
        return format!("while {}", s.describe());
    }
    match step {
        INIT_NETWORK => network.describe(),
        INIT_SIGNALS => "while setting up the init's signal handling".to_owned(),
        INIT_PIPE => "while creating the exec status pipe".to_owned(),
        INIT_FORK => "while forking the task from its init".to_owned(),
        INIT_TERMINAL => {
            "while opening the task's terminal in its /dev/pts (or handing it to the supervisor)"
                .to_owned()
        }
        INIT_OOM_SCORE => {
            "while resetting the negative oom_score_adj inherited from the supervisor to 0"
                .to_owned()
        }
        _ => describe_task_step(step, user, &exec.cwd),
    }
}

/// What a failed step of the task process (module `exec`) was, in words.
fn describe_task_step(step: u32, user: &user::TaskUser, cwd: &std::ffi::CStr) -> String {
    use exec::step::*;
    match step {
        TASK_SETSID => "while starting a new session (setsid)".to_owned(),
        TASK_NO_NEW_PRIVS => "while setting no_new_privs".to_owned(),
        TASK_SETGROUPS => format!(
            "while setting the groups of user {:?} ({:?})",
            user.name, user.groups
        ),
        TASK_SETGID => format!(
            "while switching to group {} of user {:?} (setgid)",
            user.gid, user.name
        ),
        TASK_SETUID => format!(
            "while switching to user {:?} (setuid {})",
            user.name, user.uid
        ),
        TASK_CHDIR => format!(
            "while changing to the working directory {} (it must exist in the task's root)",
            cwd.to_string_lossy()
        ),
        TASK_CAPABILITIES => {
            "while dropping the capabilities a task may not have (capset, PR_CAPBSET_DROP)"
                .to_owned()
        }
        TASK_SECCOMP => "while installing the seccomp filter".to_owned(),
        _ => format!("at unknown step {step}"),
    }
}

/// This process's argv area (fields 48 and 49 of /proc/self/stat).
fn own_arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read("/proc/self/stat").ok()?;
    let field = |n| {
        crate::process::stat_field(&stat, n)
            .ok()
            .flatten()
            .and_then(|v| usize::try_from(v).ok())
    };
    Some((field(48)?, field(49)?))
}

fn syscall_error(call: &'static str) -> impl FnOnce(nix::Error) -> IsolationError {
    move |e| IsolationError::Syscall {
        call,
        source: io::Error::from(e),
    }
}

/// For tests: every init started from now on in this process waits in place instead of
/// exec'ing the reaper, as on a node where that exec is refused.
#[doc(hidden)]
#[cfg(any(test, feature = "test-support"))]
pub fn force_init_waiting_in_place(on: bool) {
    reaper::IN_PLACE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// For tests: whether this build has the reaper for the init to exec (x86-64 Linux, gnu).
#[doc(hidden)]
#[cfg(any(test, feature = "test-support"))]
pub fn reaper_built() -> bool {
    reaper::BUILT
}

/// For tests: plan bind flags with MS_REMOUNT (the path for kernels older than 5.12, which
/// lack mount_setattr, where binds are not recursive) instead of mount_setattr.
#[doc(hidden)]
#[cfg(any(test, feature = "test-support"))]
pub fn force_bind_remount_fallback(on: bool) {
    rootfs::FORCE_REMOUNT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Starts the task: clone into new namespaces, place in cgroup, build the root, drop to the
/// user, exec. Returns once the exec happened or failed (a failed exec is an exit 126/127,
/// reported by [`LaunchedTask::wait`], with a one-line reason on the task's stderr).
///
/// Call it from the thread that will live as long as the task is supervised (the main
/// thread): the init is bound to it with PR_SET_PDEATHSIG, so it is SIGKILLed (and the task
/// with it) when that thread ends. The caller should be single-threaded; the child only
/// makes system calls (no allocation, no locks), so other threads do not deadlock it, but
/// they may briefly leak fds into it until it closes them.
pub fn launch(request: LaunchRequest<'_>) -> Result<LaunchedTask, IsolationError> {
    let LaunchRequest {
        spec,
        stdin,
        stdout,
        stderr,
        clone_into,
        place_in_cgroup,
        user,
    } = request;
    let user = match user {
        Some(user) => user,
        None => user::lookup(&spec.user)?,
    };
    let root = rootfs::plan(spec, &user)?;
    let network = network::NetworkPlan::new(&spec.network)?;
    let mut exec = exec::ExecPlan::new(spec, &user, &root.home)?;
    if spec.tty.is_some() {
        exec = exec.with_controlling_tty();
    }

    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(syscall_error("opening /dev/null"))?;
    // SAFETY: open just returned this fd.
    let null = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(null) };
    let stdin = stdin.unwrap_or(null);
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(syscall_error("pipe2"))?;
    let (control, control_child) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(syscall_error("socketpair"))?;

    let title = format!("execdriver-init {}", spec.task_id);
    let task_id = std::ffi::CString::new(spec.task_id.as_str()).map_err(|_| IsolationError::Nul {
        what: format!("task id {:?}", spec.task_id),
    })?;
    let reaper = reaper::image();
    let cx = init::ChildContext {
        null: stdin.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        ctl: control_child.as_raw_fd(),
        report: report_w.as_raw_fd(),
        root: &root,
        network: &network,
        exec: &exec,
        terminal: spec.tty.map(|size| init::TerminalPlan {
            rows: size.rows,
            cols: size.cols,
            uid: user.uid,
        }),
        title: title.as_bytes(),
        task_id: &task_id,
        reaper: reaper.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        arg_area: own_arg_area(),
        clean: crate::process::CleanMappings::of_self(),
    };
    // The child starts with every signal blocked: a handler of the supervisor's must never
    // run in the init's copy (it would write to fds that mean something else there). The
    // init keeps them blocked and reads them from a signalfd; the task unblocks them.
    let blocked = sys::block_all_signals();
    crate::process::trim_heap();
    // SAFETY: the child runs only init_main, which makes system calls on data prepared
    // above and leaves with _exit.
    let flags = NAMESPACES | network.clone_flags();
    // SAFETY: as above.
    let born_in_cgroup = clone_into.map(|dir| unsafe { sys::clone_fork_into(flags, dir.as_raw_fd()) });
    let (cloned, placed) = match born_in_cgroup {
        Some(Ok(pid)) => (Ok(pid), true),
        // A kernel without CLONE_INTO_CGROUP (before 5.7), or a cgroup it refuses: the
        // init is moved by a write instead, which says what is wrong if anything is.
        // SAFETY: as above.
        _ => (unsafe { sys::clone_fork(flags) }, false),
    };
    // In the child (of either clone), which only ever gets this far.
    if let Ok(0) = cloned {
        // SAFETY: as above; never returns.
        unsafe { init::init_main(&cx) }
    }
    sys::restore_signals(&blocked);
    let pid = match cloned {
        Ok(pid) => pid,
        Err(errno) => {
            return Err(IsolationError::Syscall {
                call: "clone into new namespaces",
                source: io::Error::from_raw_os_error(errno),
            });
        }
    };
    let guard = InitGuard { pid, armed: true };
    // Only the child keeps these: the log pump must see end-of-file when the task is gone.
    drop((stdin, stdout, stderr, report_w, control_child, reaper));

    let pidfd = Pidfd::open(pid)?;
    let pid_namespace = std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .map(|m| m.ino())
        .map_err(|source| IsolationError::Syscall {
            call: "reading the init's pid namespace",
            source,
        })?;
    if !placed {
        place_in_cgroup(pid).map_err(|reason| IsolationError::Cgroup { pid, reason })?;
    }

    let go = Record::Go.encode();
    // SAFETY: sending a local buffer; a dead init shows up as end-of-file below.
    unsafe {
        libc::send(
            control.as_raw_fd(),
            go.as_ptr().cast(),
            go.len(),
            libc::MSG_NOSIGNAL,
        )
    };

    let mut buf = [0u8; RECORD_LEN];
    let got = sys::read_full(report_r.as_raw_fd(), &mut buf).map_err(|errno| {
        IsolationError::Syscall {
            call: "reading the init's report",
            source: io::Error::from_raw_os_error(errno),
        }
    })?;
    match (got, Record::decode(&buf)) {
        (RECORD_LEN, Some(Record::Started)) => {}
        (RECORD_LEN, Some(Record::SetupFailed { step, errno })) => {
            let _ = guard.reap();
            return Err(IsolationError::Setup {
                step: describe_step(step, &root, &network, &user, &exec),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        _ => {
            let status = guard.reap();
            return Err(IsolationError::InitDied { pid, status });
        }
    }
    let terminal = match spec.tty {
        Some(_) => match receive_terminal(&control) {
            Ok(master) => Some(master),
            Err(e) => {
                let _ = guard.reap();
                return Err(e);
            }
        },
        None => None,
    };
    let mut guard = guard;
    guard.armed = false;
    Ok(LaunchedTask {
        init_pid: pid,
        pidfd,
        pid_namespace,
        report: report_r,
        control,
        terminal,
        born_in_cgroup: placed,
        status: Mutex::new(None),
    })
}

/// The master of the task's terminal, which the init sent on the control socket before it
/// reported the task started (so it waits there now).
fn receive_terminal(control: &OwnedFd) -> Result<OwnedFd, IsolationError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut record = [0u8; RECORD_LEN];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(&mut record)];
    let msg = recvmsg::<()>(
        control.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(syscall_error("receiving the task's terminal from its init"))?;
    let mut master = None;
    for cmsg in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed this fd for us; nothing else owns it.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                master.get_or_insert(fd);
            }
        }
    }
    let got = msg.bytes;
    match (got, master) {
        (RECORD_LEN, Some(master)) if Record::decode(&record) == Some(Record::Terminal) => {
            Ok(master)
        }
        _ => Err(IsolationError::Syscall {
            call: "receiving the task's terminal from its init",
            source: io::Error::other("the init sent no terminal"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_failures_are_described_in_words() {
        let root = rootfs::RootPlan {
            steps: vec![rootfs::Step::Bind {
                src: c"/usr".to_owned(),
                dst: c"/tasks/web/usr".to_owned(),
                recursive: true,
                attrs: sys::MOUNT_ATTR_RDONLY,
            }],
            have_setattr: true,
            home: "/".into(),
            trees: Vec::new(),
        };
        let user = user::TaskUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            entry: None,
        };
        let net = network::NetworkPlan::Private;
        let mut spec = TaskSpec::new(
            "t",
            "web",
            "/a",
            "/a/web",
            execdriver_core::TaskConfig::new("/bin/true", Vec::<String>::new()),
        );
        spec.workdir = Some("/srv/app".into());
        let exec = exec::ExecPlan::new(&spec, &user, std::path::Path::new("/")).expect("plan");
        assert!(
            describe_step(exec::step::TASK_CHDIR, &root, &net, &user, &exec).contains("/srv/app")
        );
        assert_eq!(
            describe_step(0, &root, &net, &user, &exec),
            "while bind-mounting \"/usr\" read-only at \"/tasks/web/usr\""
        );
        assert!(
            describe_step(exec::step::TASK_SETUID, &root, &net, &user, &exec).contains("setuid 65534")
        );
        assert!(
            describe_step(init::step::INIT_FORK, &root, &net, &user, &exec).contains("forking the task")
        );
        assert!(describe_step(init::step::INIT_NETWORK, &root, &net, &user, &exec).contains("loopback"));
        assert!(describe_step(7, &root, &net, &user, &exec).contains("unknown step 7"));
    }

    #[test]
    fn a_launched_task_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LaunchedTask>();
    }
}
