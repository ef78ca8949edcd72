//! Starting a program as a child born in a cgroup v2 directory (clone3 with
//! CLONE_INTO_CGROUP), for the supervisor: std's `Command` cannot do it, and moving the child
//! afterwards by a write to `cgroup.procs` waits out an RCU grace period, the longest single
//! wait of a task's start on a node that does not mount cgroup2 with `favordynmods`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::isolation::sys;

/// The lowest fd the child's descriptors are parked on before they are put in place, so that
/// no target number (0 to 9) can be a source still to be moved.
const PARKED: RawFd = 10;

/// What the child is given besides its cgroup.
#[derive(Debug)]
pub(crate) struct Program<'a> {
    /// The executable, by path.
    pub binary: &'a Path,
    /// Its arguments after `argv[0]` (which is `binary`).
    pub args: &'a [&'a OsStr],
    /// Its whole environment, as `NAME=value` entries.
    pub env: &'a [&'a str],
    /// Its stdin, stdout and stderr, in that order.
    pub stdio: [BorrowedFd<'a>; 3],
    /// One more descriptor the child keeps, at the given number (below 10).
    pub extra: Option<(BorrowedFd<'a>, RawFd)>,
}

/// Starts `program` with its own environment only, in `/`, with no signal blocked and SIGPIPE at its
/// default (as std's `Command` leaves them), born in the cgroup v2 directory `cgroup`.
/// Returns its pid once it has exec'd; an exec that failed is reaped and its errno returned.
pub(crate) fn spawn_in_cgroup(program: &Program<'_>, cgroup: BorrowedFd<'_>) -> io::Result<i32> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let cstring = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| invalid("a nul byte"));
    let binary = cstring(program.binary.as_os_str())?;
    let mut argv = vec![binary.clone()];
    for arg in program.args {
        argv.push(cstring(arg)?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let env = program
        .env
        .iter()
        .map(|e| cstring(OsStr::new(e)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let root = c"/";
    if program.extra.is_some_and(|(_, at)| !(3..PARKED).contains(&at)) {
        return Err(invalid("the extra descriptor must go to 3 to 9"));
    }
    let park = |fd: BorrowedFd<'_>| -> io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we then own.
        let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, PARKED) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    };
    let mut moves: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(4);
    for (fd, at) in program.stdio.iter().zip(0..) {
        moves.push((park(*fd)?, at));
    }
    if let Some((fd, at)) = program.extra {
        moves.push((park(fd)?, at));
    }
    let raw_moves: Vec<(RawFd, RawFd)> = moves.iter().map(|(fd, at)| (fd.as_raw_fd(), *at)).collect();
    let (report_r, unparked) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Parked too: a caller with a standard fd closed would get it as 0 to 2, where a dup2
    // below would close it in the child and a failed exec would pass for a start. The
    // unparked end is closed at once: while we hold any write end, no end of file comes.
    let report_w = park(unparked.as_fd())?;
    drop(unparked);

    // No handler of ours may run in the child's copy before its exec.
    let blocked = sys::block_all_signals();
    // SAFETY: the child makes system calls only, on data prepared above, and leaves by
    // execve or _exit.
    let cloned = unsafe { sys::clone_fork_into(0, cgroup.as_raw_fd()) };
    if let Ok(0) = cloned {
        // SAFETY: as above; every pointer refers to memory the copy still holds.
        unsafe {
            for &(from, to) in &raw_moves {
                if libc::dup2(from, to) < 0 {
                    fail(report_w.as_raw_fd());
                }
            }
            if libc::chdir(root.as_ptr()) < 0 {
                fail(report_w.as_raw_fd());
            }
            // As posix_spawn does: a handler of ours must not run in the copy once the mask
            // is lifted (a signal sent to our process group in between), and an ignored
            // SIGPIPE would outlive the exec.
            for sig in 1..=64 {
                if sig == libc::SIGPIPE || sys::has_handler(sig) {
                    sys::reset_signal_default(sig);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(binary.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr());
            fail(report_w.as_raw_fd());
        }
    }
    sys::restore_signals(&blocked);
    let pid = cloned.map_err(io::Error::from_raw_os_error)?;
    drop(report_w);
    drop(moves);
    let mut errno = [0u8; 4];
    match sys::read_full(report_r.as_raw_fd(), &mut errno) {
        Ok(4) => {
            reap(pid);
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        Ok(n) if n > 0 => {
            reap(pid);
            Err(io::Error::other(
                "the child's report of its failed exec was cut short",
            ))
        }
        // End of file: the exec closed our CLOEXEC pipe. A read that failed says nothing
        // either way: the child may run, so it counts as started and the supervisor's own
        // report decides (an error here would start a second one beside it).
        Ok(_) | Err(_) => Ok(pid),
    }
}

/// In the child: reports errno on the pipe and exits as a failed exec does.
///
/// # Safety
/// Only for the cloned child, which must not return into the parent's code.
unsafe fn fail(report: RawFd) -> ! {
    let errno = sys::errno().to_ne_bytes();
    sys::write_all(report, &errno);
    // SAFETY: _exit runs no handler of the copied process.
    unsafe { libc::_exit(127) }
}

/// Waits for our own child `pid` (it cannot have been reused: it is not reaped yet).
pub(crate) fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child writes only `status`.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && sys::errno() == libc::EINTR {}
}

/// Whether our own child `pid` has exited; reaped if so (an error counts as gone).
pub(crate) fn try_reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: as in `reap`.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    ret != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::PathBuf;

    /// Our own cgroup's directory in the unified hierarchy (cgroup2 at any mountpoint).
    fn own_unified_dir() -> Option<(PathBuf, String)> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mountpoint = mountinfo.lines().find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            (rest.split(' ').next() == Some("cgroup2")).then(|| fields.split(' ').nth(4))?
        })?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned();
        let dir = Path::new(mountpoint).join(rel.trim_start_matches('/'));
        Some((dir, rel))
    }

    struct RemoveDir(PathBuf);

    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn a_child_is_born_in_the_cgroup_and_a_failed_exec_is_reported() {
        let test = "a_child_is_born_in_the_cgroup_and_a_failed_exec_is_reported";
        if !crate::testing::require_root(test, "it makes a cgroup in the unified hierarchy") {
            return;
        }
        let found = own_unified_dir();
        let unmet = found.is_none().then(|| "no cgroup2 mount here".to_owned());
        if !crate::testing::require(test, unmet) {
            return;
        }
        let Some((own, rel)) = found else { return };
        let name = format!("execdriver-born-test-{}", std::process::id());
        let dir = RemoveDir(own.join(&name));
        std::fs::create_dir(&dir.0).expect("a cgroup below our own");
        let cgroup = std::fs::File::open(&dir.0).expect("open the cgroup dir");
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let args: [&OsStr; 2] = [
            "-c".as_ref(),
            "cat /proc/self/cgroup; pwd; echo \"$BORN\"".as_ref(),
        ];
        let program = Program {
            binary: Path::new("/bin/sh"),
            args: &args,
            env: &["BORN=in a cgroup"],
            stdio: [null.as_fd(), out_w.as_fd(), null.as_fd()],
            extra: None,
        };
        let pid = spawn_in_cgroup(&program, cgroup.as_fd()).expect("spawn");
        drop(out_w);
        let mut out = String::new();
        std::fs::File::from(out_r)
            .read_to_string(&mut out)
            .expect("the child's output");
        reap(pid);
        let want = format!("0::{}/{name}", rel.trim_end_matches('/'));
        assert!(out.lines().any(|l| l == want), "{want:?} not in {out:?}");
        let tail: Vec<&str> = out.lines().rev().take(2).collect();
        assert_eq!(tail, ["in a cgroup", "/"], "{out:?}");
        let missing = Program {
            binary: Path::new("/nonexistent/execdriver-test"),
            args: &[],
            env: &[],
            stdio: [null.as_fd(), null.as_fd(), null.as_fd()],
            extra: None,
        };
        let err = spawn_in_cgroup(&missing, cgroup.as_fd()).expect_err("no such binary");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}
