//! The task's init: pid 1 of the new PID namespace, a tiny supervisor written in Rust.
//!
//! A namespace's init gets only the signals it has a handler for, and must reap every
//! orphan in the namespace; when it exits, the kernel kills everything else in it. So the
//! init builds the root, forks the real task (pid 2), forwards the supervisor's signals to
//! it, reaps everything, and when the task is gone reports the task's own status and exits,
//! taking any daemons the task left behind with it.
//!
//! This runs in a copy of the supervisor made by a raw clone: only system calls, no heap.
//! Once the task runs, the init execs the reaper (`reaper/main.rs`, see `super::reaper`),
//! which waits out the task with the same `wait_out`; where that exec is not possible
//! the init waits here, in place.

use std::os::fd::RawFd;

use super::exec::{self, ExecPlan, step::TASK_EXEC};
use super::network::NetworkPlan;
use super::rootfs::RootPlan;
use super::sys::{self, check_int};
use super::wait_out::{Sys, wait_out};
use super::wire::{CTL_FD, RECORD_LEN, REPORT_FD, Record};
use crate::process::CleanMappings;

/// The network namespace to join, when there is one, after the fds are arranged (closed
/// once joined).
const NETNS_FD: RawFd = 5;

/// The reaper's memfd, when there is one, after the fds are arranged.
const REAPER_FD: RawFd = 6;

/// The first of the detached mount trees of the root plan, after the fds are arranged (the
/// rest follow it in order).
pub(crate) const FIRST_TREE_FD: RawFd = REAPER_FD + 1;

/// The init's exit code when it gives up during setup (after reporting why).
pub(crate) const INIT_SETUP_FAILED: i32 = 125;

/// Step codes for failures of the init itself (past the end of any setup plan).
pub(crate) mod step {
    /// Blocking signals, installing handlers, signalfd.
    pub const INIT_SIGNALS: u32 = 0xFFFF_0001;
    /// Creating the exec status pipe.
    pub const INIT_PIPE: u32 = 0xFFFF_0002;
    /// Forking the task.
    pub const INIT_FORK: u32 = 0xFFFF_0003;
    /// Resetting a negative oom_score_adj inherited from the supervisor.
    pub const INIT_OOM_SCORE: u32 = 0xFFFF_0004;
    /// Joining the network namespace, or bringing loopback up in a new one.
    pub const INIT_NETWORK: u32 = 0xFFFF_0005;
    /// Opening the task's terminal in its devpts, or handing its master to the supervisor.
    pub const INIT_TERMINAL: u32 = 0xFFFF_0006;
}

/// The task's terminal, to open once its root (with its own devpts) is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TerminalPlan {
    /// Its size; 0 for a dimension not known.
    pub rows: u16,
    /// Its width.
    pub cols: u16,
    /// The task user, who owns it as a login's terminal is owned.
    pub uid: libc::uid_t,
}

/// The oom_score_adj the init should set given the one it inherited, if any: a supervisor
/// protected from the OOM killer (down to -1000, "never kill") must not pass that on to the
/// task, which would then be the one thing the kernel cannot kill when its memory runs out.
/// A positive value (more killable) is left alone.
pub(crate) fn oom_score_reset(inherited: i32) -> Option<&'static [u8]> {
    (inherited < 0).then_some(b"0")
}

/// Parses an oom_score_adj value as /proc prints it ("-1000\n"). No allocation.
fn parse_oom_score(text: &[u8]) -> Option<i32> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut value: i32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i32::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Raises a negative oom_score_adj to 0 (see [`oom_score_reset`]); the task inherits it.
fn reset_oom_score() -> Result<(), i32> {
    let path = c"/proc/self/oom_score_adj";
    // SAFETY: open/read/write/close on a local buffer and an fd we own.
    unsafe {
        let fd = check_int(libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC))?;
        let mut buf = [0u8; 16];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        let result = if n < 0 {
            Err(sys::errno())
        } else {
            match parse_oom_score(&buf[..n as usize]).and_then(oom_score_reset) {
                Some(value) => {
                    if libc::pwrite(fd, value.as_ptr().cast(), value.len(), 0) < 0 {
                        Err(sys::errno())
                    } else {
                        Ok(())
                    }
                }
                None => Ok(()),
            }
        };
        libc::close(fd);
        result
    }
}

/// What the cloned child needs, prepared by the supervisor before the clone.
#[derive(Debug)]
pub(crate) struct ChildContext<'a> {
    /// The task's stdin: /dev/null (read) unless the request gave one.
    pub null: RawFd,
    /// The task's stdout.
    pub stdout: RawFd,
    /// The task's stderr.
    pub stderr: RawFd,
    /// The init's end of the control socket.
    pub ctl: RawFd,
    /// The write end of the report pipe.
    pub report: RawFd,
    /// The root setup.
    pub root: &'a RootPlan,
    /// The network namespace to enter.
    pub network: &'a NetworkPlan,
    /// The exec of the task.
    pub exec: &'a ExecPlan,
    /// The task's terminal, if it has one.
    pub terminal: Option<TerminalPlan>,
    /// What `ps` should show for the init instead of the supervisor's command line.
    pub title: &'a [u8],
    /// The task id: the reaper's argument, which `ps` shows.
    pub task_id: &'a std::ffi::CStr,
    /// The reaper's memfd (see `reaper`), or -1: the init then waits in place.
    pub reaper: RawFd,
    /// The supervisor's argv area `[start, end)`, the same addresses in the child's copy.
    pub arg_area: Option<(usize, usize)>,
    /// The clean file mappings, the same in the child's copy: given back once the task runs.
    pub clean: CleanMappings,
}

fn report(record: Record) {
    sys::write_all(REPORT_FD, &record.encode());
}

fn give_up(step: u32, errno: i32) -> ! {
    report(Record::SetupFailed { step, errno });
    // SAFETY: leaving without Rust cleanup; the kernel kills what is left in the namespace.
    unsafe { libc::_exit(INIT_SETUP_FAILED) }
}

/// Overwrites the child's copy of the argv area so `ps` shows the init as such rather than
/// as a second copy of the supervisor (it is a fork, until it execs the reaper, if ever).
fn set_title(cx: &ChildContext<'_>) {
    // SAFETY: prctl with a nul-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"execdriver-init".as_ptr(), 0, 0, 0) };
    let Some((start, end)) = cx.arg_area else {
        return;
    };
    if end <= start {
        return;
    }
    let len = end - start;
    // SAFETY: [start, end) is the argv area of the process we are a copy of (read from
    // /proc/self/stat just before the clone); it is writable stack memory, and writing it
    // here only touches our own copy-on-write pages.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    let n = cx.title.len().min(len - 1);
    area[..n].copy_from_slice(&cx.title[..n]);
    area[n..].fill(0);
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Moves the fds the init keeps to 0..=4 (stdin, stdout, stderr, control, report), the
/// network namespace to join, if any, to [`NETNS_FD`], the reaper, if any, to
/// [`REAPER_FD`], and the root plan's trees from [`FIRST_TREE_FD`] on; closes everything
/// else the supervisor had open.
fn arrange_fds(cx: &ChildContext<'_>) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    const SLOTS: usize = FIRST_TREE_FD as usize + super::rootfs::MAX_PROPAGATING_MOUNTS;
    let netns = cx.network.join_fd();
    let mut wanted = [-1; SLOTS];
    for (slot, fd) in wanted.iter_mut().zip([
        cx.null,
        cx.stdout,
        cx.stderr,
        cx.ctl,
        cx.report,
        netns.unwrap_or(-1),
        cx.reaper,
    ]) {
        *slot = fd;
    }
    let trees = cx.root.trees.len().min(super::rootfs::MAX_PROPAGATING_MOUNTS);
    for (slot, tree) in wanted[FIRST_TREE_FD as usize..].iter_mut().zip(&cx.root.trees) {
        *slot = tree.as_raw_fd();
    }
    let mut high = [-1; SLOTS];
    // Copy all of them above the slots first, so placing one cannot close another still
    // needed.
    for (slot, fd) in high.iter_mut().zip(wanted) {
        if fd >= 0 {
            // SAFETY: duplicating an fd we inherited.
            *slot = check_int(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, SLOTS as i32) })?;
        }
    }
    for (target, fd) in high.into_iter().enumerate() {
        if fd < 0 {
            continue;
        }
        let target = target as RawFd;
        let flags = if target >= CTL_FD { libc::O_CLOEXEC } else { 0 };
        // SAFETY: dup3 onto a low fd number; fd >= SLOTS so they never coincide.
        check_int(unsafe { libc::dup3(fd, target, flags) })?;
    }
    for (fd, kept) in [(NETNS_FD, netns.is_some()), (REAPER_FD, cx.reaper >= 0)] {
        if !kept {
            // SAFETY: closing an fd number of ours that holds nothing we need.
            unsafe { libc::close(fd) };
        }
    }
    sys::close_from(FIRST_TREE_FD + trees as RawFd);
    Ok(())
}

/// Blocks every signal, installs a do-nothing handler for each (a namespace init drops
/// signals left at SIG_DFL, even from outside), and returns a signalfd for all of them.
fn setup_signals() -> Result<RawFd, i32> {
    // SAFETY: sigset and sigaction calls on local structs.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check_int(libc::sigprocmask(
            libc::SIG_SETMASK,
            &all,
            std::ptr::null_mut(),
        ))?;
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_mask = all;
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            act.sa_flags = libc::SA_RESTART;
            if sig == libc::SIGCHLD {
                act.sa_flags |= libc::SA_NOCLDSTOP;
            }
            // glibc refuses its two internal real-time signals (32, 33): those are not
            // forwarded, but at least do not stay ignored if the supervisor inherited that.
            if libc::sigaction(sig, &act, std::ptr::null_mut()) < 0 {
                sys::reset_signal_default(sig);
            }
        }
        check_int(libc::signalfd(
            -1,
            &all,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))
    }
}

/// The init's main: never returns.
///
/// # Safety
/// Call only in the child of the namespace clone, right after it.
pub(crate) unsafe fn init_main(cx: &ChildContext<'_>) -> ! {
    // SAFETY: system calls only, on fds and values prepared before the clone.
    unsafe {
        // Never outlive the supervisor unsupervised. If it is already gone, the control
        // socket reads end-of-file below and we leave.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if arrange_fds(cx).is_err() {
            libc::_exit(INIT_SETUP_FAILED);
        }
        set_title(cx);

        // Wait until the supervisor has put us in the task's cgroup.
        let mut msg = [0u8; RECORD_LEN];
        let n = loop {
            let n = libc::recv(CTL_FD, msg.as_mut_ptr().cast(), RECORD_LEN, 0);
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            break n;
        };
        if n != RECORD_LEN as isize || Record::decode(&msg) != Some(Record::Go) {
            libc::_exit(0);
        }
        // On the host's /proc, before the root is built; the task inherits the value.
        if let Err(errno) = reset_oom_score() {
            give_up(step::INIT_OOM_SCORE, errno);
        }
        if let Err(errno) = cx.network.enter(NETNS_FD) {
            give_up(step::INIT_NETWORK, errno);
        }
        if cx.network.join_fd().is_some() {
            libc::close(NETNS_FD);
        }

        for (i, step) in cx.root.steps.iter().enumerate() {
            if let Err(errno) = step.run(cx.root.have_setattr) {
                give_up(i as u32, errno);
            }
        }

        if let Some(plan) = &cx.terminal
            && let Err(errno) = open_terminal(plan)
        {
            give_up(step::INIT_TERMINAL, errno);
        }

        let sfd = setup_signals().unwrap_or_else(|e| give_up(step::INIT_SIGNALS, e));
        let mut pipe = [0 as RawFd; 2];
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            give_up(step::INIT_PIPE, sys::errno());
        }
        let [exec_r, exec_w] = pipe;
        let task = match sys::clone_fork(0) {
            Ok(0) => {
                libc::close(exec_r);
                exec::task_main(cx.exec, exec_w)
            }
            Ok(pid) => pid,
            Err(e) => give_up(step::INIT_FORK, e),
        };
        libc::close(exec_w);
        let mut rec = [0u8; RECORD_LEN];
        let got = sys::read_full(exec_r, &mut rec).unwrap_or(0);
        libc::close(exec_r);
        if got == RECORD_LEN
            && let Some(Record::TaskFailed { step, errno, flags }) = Record::decode(&rec)
        {
            if step == TASK_EXEC {
                // The task exits 126/127 on its own; say why where the user will look.
                let message = exec::exec_failure_message(cx.exec.command.to_bytes(), errno, flags);
                sys::write_all(2, message.as_bytes());
            } else {
                libc::kill(task, libc::SIGKILL);
                give_up(step, errno);
            }
        }
        report(Record::Started);
        if cx.reaper >= 0 && exec_keeps_credentials() {
            exec_reaper(cx.task_id, task, sfd);
        }
        idle(cx.clean, task, sfd)
    }
}

/// Whether an exec leaves this process's credentials as they are: root with no securebits
/// and every capability of the bounding set permitted. Otherwise the exec would change
/// them (root's exec is given the whole bounding set), which clears the parent-death signal
/// and, with securebits, could leave the reaper unable to signal the task: the init then
/// waits in place. Only system calls.
fn exec_keeps_credentials() -> bool {
    // SAFETY: getters and prctl queries without pointers.
    unsafe {
        if libc::getuid() != 0 || libc::geteuid() != 0 || libc::getgid() != libc::getegid() {
            return false;
        }
        if libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) != 0 {
            return false;
        }
        let Ok(permitted) = exec::permitted_capabilities() else {
            return false;
        };
        for cap in 0..64 {
            match libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) {
                1 if permitted & (1 << cap) == 0 => return false,
                // Past the last capability this kernel knows.
                r if r < 0 => break,
                _ => {}
            }
        }
        true
    }
}

/// Becomes the reaper (see `reaper`), which waits out the task with the same [`wait_out`]; returns
/// only if the exec fails, and the init then waits in place. The signal mask (all blocked)
/// and the parent-death signal survive the exec; the handlers do not, and need not: a
/// blocked signal is queued for the signalfd even at SIG_DFL.
///
/// # Safety
/// In the init, after the task's fork: the fds it keeps are this process's.
unsafe fn exec_reaper(task_id: &std::ffi::CStr, task: libc::pid_t, sfd: RawFd) {
    let handover = super::reaper::handover(task, sfd);
    // SAFETY: fcntl and execveat on our own fds, with nul-terminated strings and
    // null-terminated vectors on this stack.
    unsafe {
        for fd in [CTL_FD, REPORT_FD, sfd] {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return;
            }
        }
        let argv = [c"execdriver-init".as_ptr(), task_id.as_ptr(), std::ptr::null()];
        let envp = [handover.as_bytes().as_ptr().cast::<libc::c_char>(), std::ptr::null()];
        libc::syscall(
            libc::SYS_execveat,
            REAPER_FD,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        // Failed: the in-place wait does not exec, so the flags need no restoring.
    }
}

/// Gives back the start's pages and waits out the task. Its waiting loop is in the idle
/// section (see `process::footprint`) beside the supervisor's own (traced: a waiting init
/// faults in nothing else of its binary), and touches no byte of the heap: nothing here uses
/// `cx` or allocates.
///
/// # Safety
/// As for [`CleanMappings::discard_heap`]: nothing may use the heap afterwards.
#[unsafe(link_section = ".text.hot.execdriver_idle")]
// Not inlined into the start code it is called from, which the release gives back.
#[inline(never)]
unsafe fn idle(clean: CleanMappings, task: libc::pid_t, sfd: RawFd) -> ! {
    clean.release();
    // SAFETY: `wait_out` and what it calls allocate nothing and read no heap memory.
    unsafe { clean.discard_heap() };
    wait_out(&InPlace, task, sfd)
}

/// Opens a new terminal in the task's devpts (the root is the task's by now, so its name
/// inside the task, `/dev/pts/N`, is right), sends the master to the supervisor and makes
/// the peer our stdin, stdout and stderr, which the task inherits. No allocation.
fn open_terminal(plan: &TerminalPlan) -> Result<(), i32> {
    // SAFETY: opening, ioctls and closes on fds of our own, with local buffers.
    unsafe {
        let master = check_int(libc::open(
            c"/dev/pts/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let peer = (|| {
            let unlock: libc::c_int = 0;
            check_int(libc::ioctl(master, libc::TIOCSPTLCK, &unlock))?;
            // The peer by the master itself, not by a path a mount could have swapped.
            let peer = check_int(libc::ioctl(
                master,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            ))?;
            let set_up = (|| {
                check_int(libc::fchown(peer, plan.uid, libc::gid_t::MAX))?;
                if plan.rows != 0 || plan.cols != 0 {
                    let size = libc::winsize {
                        ws_row: plan.rows,
                        ws_col: plan.cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    check_int(libc::ioctl(master, libc::TIOCSWINSZ, &size))?;
                }
                send_terminal(master)
            })();
            match set_up {
                Ok(()) => Ok(peer),
                Err(errno) => {
                    libc::close(peer);
                    Err(errno)
                }
            }
        })();
        // Only the supervisor keeps the master: its pump reads EIO once the task and
        // everything it started have let go of the terminal.
        libc::close(master);
        let peer = peer?;
        for fd in 0..=2 {
            check_int(libc::dup2(peer, fd))?;
        }
        libc::close(peer);
        Ok(())
    }
}

/// Sends [`Record::Terminal`] with `master` attached on the control socket.
fn send_terminal(master: RawFd) -> Result<(), i32> {
    const SPACE: usize = 64;
    // A u64 array keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; SPACE / 8];
    let mut record = Record::Terminal.encode();
    // SAFETY: the header and control buffer are local and sized by CMSG_SPACE, which is
    // far below SPACE for one fd.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        if space > SPACE {
            return Err(libc::EINVAL);
        }
        let mut iov = libc::iovec {
            iov_base: record.as_mut_ptr().cast(),
            iov_len: RECORD_LEN,
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(libc::EINVAL);
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), master);
        loop {
            let sent = libc::sendmsg(CTL_FD, &msg, libc::MSG_NOSIGNAL);
            if sent == RECORD_LEN as isize {
                return Ok(());
            }
            if sent < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            return Err(if sent < 0 { sys::errno() } else { libc::EIO });
        }
    }
}

/// The in-place wait's system calls, through libc.
struct InPlace;

impl Sys for InPlace {
    const SIGCHLD: i32 = libc::SIGCHLD;

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn poll_in(&self, fds: [i32; 2]) -> Option<[bool; 2]> {
        let watch = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut polled = [watch(fds[0]), watch(fds[1])];
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            return None;
        }
        Some([polled[0].revents != 0, polled[1].revents != 0])
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn read_signal(&self, sfd: i32) -> Option<(i32, i32, u32)> {
        // SAFETY: reading whole signalfd_siginfo records into a local.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = unsafe { libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        (n == size as isize).then_some((info.ssi_signo as i32, info.ssi_code, info.ssi_pid))
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn recv_control(&self, buf: &mut [u8; RECORD_LEN]) -> Option<usize> {
        // SAFETY: reading one message into the caller's buffer.
        let n = unsafe {
            libc::recv(CTL_FD, buf.as_mut_ptr().cast(), RECORD_LEN, libc::MSG_DONTWAIT)
        };
        match usize::try_from(n) {
            Ok(n) => Some(n),
            Err(_) if matches!(sys::errno(), libc::EAGAIN | libc::EINTR) => None,
            Err(_) => Some(0),
        }
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn kill(&self, pid: i32, signal: i32) {
        // SAFETY: signalling our own child, which is not reaped yet.
        unsafe { libc::kill(pid, signal) };
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn reap_one(&self) -> Option<(i32, i32)> {
        let mut wstatus = 0;
        // SAFETY: waitpid writes one int.
        let pid = unsafe { libc::waitpid(-1, &mut wstatus, libc::WNOHANG) };
        (pid > 0).then_some((pid, wstatus))
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn report(&self, record: Record) {
        report(record);
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn exit(&self, code: i32) -> ! {
        // SAFETY: leaving; the kernel kills the rest of the namespace.
        unsafe { libc::_exit(code) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_score_values_parse_as_proc_prints_them() {
        assert_eq!(parse_oom_score(b"0\n"), Some(0));
        assert_eq!(parse_oom_score(b"-1000\n"), Some(-1000));
        assert_eq!(parse_oom_score(b"1000"), Some(1000));
        assert_eq!(parse_oom_score(b""), None);
        assert_eq!(parse_oom_score(b"-"), None);
        assert_eq!(parse_oom_score(b"12x"), None);
        assert_eq!(parse_oom_score(b"9999999999"), None);
    }

    #[test]
    fn only_a_protected_score_is_reset() {
        assert_eq!(oom_score_reset(-1000), Some(&b"0"[..]));
        assert_eq!(oom_score_reset(-1), Some(&b"0"[..]));
        assert_eq!(oom_score_reset(0), None);
        assert_eq!(oom_score_reset(500), None);
    }
}
