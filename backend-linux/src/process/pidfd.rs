//! [`Pidfd`]: `pidfd_open`, `pidfd_send_signal` and polling for exit, through rustix (nix
//! 0.29 has no wrappers for them).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};

use execdriver_core::{ProcessIdentity, Signal};

use super::{ProcessError, identity};

/// A pidfd: a handle on one process that stays valid if its pid is reused.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    /// Opens a pidfd on `pid` (pidfd_open).
    pub fn open(pid: i32) -> Result<Self, ProcessError> {
        if pid <= 0 {
            return Err(ProcessError::InvalidPid { pid });
        }
        let not_a_pid = || ProcessError::InvalidPid { pid };
        let fd = pidfd_open(Pid::from_raw(pid).ok_or_else(not_a_pid)?, PidfdFlags::empty())
            .map_err(|e| {
                if e == rustix::io::Errno::SRCH {
                    ProcessError::NotFound { pid }
                } else {
                    ProcessError::Syscall {
                        call: "pidfd_open",
                        pid,
                        source: e.into(),
                    }
                }
            })?;
        Ok(Self { fd, pid })
    }

    /// Opens a pidfd on the process only if its start time still matches `identity`:
    /// `Ok(None)` when the process is gone or the pid now belongs to another process.
    ///
    /// The pidfd is opened first and the start time checked second: if the check passes,
    /// the pid was held by the identified process at a moment after the pidfd existed, so
    /// the pidfd is that process (a recycled pid would show a later start time).
    pub fn open_verified(identity: &ProcessIdentity) -> Result<Option<Self>, ProcessError> {
        if identity.pid <= 0 {
            return Ok(None);
        }
        let pidfd = match Self::open(identity.pid) {
            Ok(pidfd) => pidfd,
            Err(ProcessError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match self::identity(identity.pid) {
            Ok(now) if now.start_time == identity.start_time => Ok(Some(pidfd)),
            Ok(_) | Err(ProcessError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The pid the pidfd was opened on, as seen from this process's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` (pidfd_send_signal); a process that already exited is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        // SAFETY: a core Signal is a number from 1 to 64, the kernel's own range (rustix
        // names only the standard signals, and tasks may be sent real-time ones).
        let sig = unsafe { rustix::process::Signal::from_raw_unchecked(signal.number()) };
        match pidfd_send_signal(&self.fd, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(ProcessError::Syscall {
                call: "pidfd_send_signal",
                pid: self.pid,
                source: e.into(),
            }),
        }
    }

    /// Waits until the process exits or `timeout` passes; true if it exited.
    ///
    /// Exited means dead, not reaped: a zombie counts, and the parent still has to reap it.
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Result<bool, ProcessError> {
        // A timeout too large for the clock is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let wait = left.map(|left| Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, wait.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(ProcessError::Syscall {
                        call: "poll",
                        pid: self.pid,
                        source: e.into(),
                    });
                }
            }
            if fds[0]
                .revents()
                .intersects(PollFlags::IN | PollFlags::HUP)
            {
                return Ok(true);
            }
            if left.is_some_and(|l| l.is_zero())
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Ok(false);
            }
        }
    }
}

/// Whether this kernel has what launching and watching a task needs: `pidfd_open` (Linux
/// 5.3) and `waitid(P_PIDFD)` (Linux 5.4). Probed by calling them on this process, which
/// changes nothing; the error names what is missing.
pub fn check_kernel_floor() -> Result<(), String> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let own = match Pidfd::open(me) {
        Ok(pidfd) => pidfd,
        Err(ProcessError::Syscall { source, .. }) if source.raw_os_error() == Some(libc::ENOSYS) => {
            return Err("the kernel has no pidfd_open (Linux 5.3 or later is needed)".to_owned());
        }
        Err(e) => return Err(format!("pidfd_open on this process failed: {e}")),
    };
    // We are not our own child: a kernel that knows P_PIDFD answers ECHILD.
    match rustix::process::waitid(
        rustix::process::WaitId::PidFd(own.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    ) {
        Err(rustix::io::Errno::CHILD) | Ok(_) => Ok(()),
        Err(rustix::io::Errno::INVAL) => Err(
            "the kernel has no waitid(P_PIDFD) (Linux 5.4 or later is needed)".to_owned(),
        ),
        Err(e) => Err(format!("waitid(P_PIDFD) on this process failed: {e}")),
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("100")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep")
    }

    fn pid_of(child: &std::process::Child) -> i32 {
        i32::try_from(child.id()).expect("pid fits i32")
    }

    #[test]
    fn signal_and_wait_for_a_child() {
        let mut child = sleeper();
        let pidfd = Pidfd::open(pid_of(&child)).expect("pidfd_open");
        assert_eq!(pidfd.pid(), pid_of(&child));
        assert!(
            !pidfd
                .wait_exit(Some(Duration::from_millis(50)))
                .expect("poll")
        );
        pidfd.signal(Signal::SIGTERM).expect("signal");
        assert!(
            pidfd
                .wait_exit(Some(Duration::from_secs(10)))
                .expect("poll")
        );
        let status = child.wait().expect("reap");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Reaped: the pid may be anyone's now, but the pidfd still names the dead process.
        pidfd
            .signal(Signal::SIGKILL)
            .expect("signal to a reaped process is not an error");
        assert!(pidfd.wait_exit(Some(Duration::ZERO)).expect("poll"));
    }

    #[test]
    fn open_verified_checks_the_start_time() {
        let mut child = sleeper();
        let pid = pid_of(&child);
        let id = identity(pid).expect("identity");
        let ok = Pidfd::open_verified(&id).expect("open_verified");
        assert!(ok.is_some());
        let forged = ProcessIdentity {
            pid,
            start_time: id.start_time + 1,
        };
        assert!(
            Pidfd::open_verified(&forged)
                .expect("open_verified")
                .is_none()
        );
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(Pidfd::open_verified(&id).expect("open_verified").is_none());
    }

    #[test]
    fn bad_pids() {
        assert!(matches!(
            Pidfd::open(0),
            Err(ProcessError::InvalidPid { .. })
        ));
        assert!(matches!(
            Pidfd::open(i32::MAX),
            Err(ProcessError::NotFound { .. })
        ));
        let gone = ProcessIdentity {
            pid: i32::MAX,
            start_time: 1,
        };
        assert!(Pidfd::open_verified(&gone).expect("no error").is_none());
    }
}
