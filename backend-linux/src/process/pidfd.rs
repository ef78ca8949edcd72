//! [`Pidfd`]: `pidfd_open`, `pidfd_send_signal` and polling for exit, through libc::syscall
//! (nix 0.29 has no wrappers for them).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

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
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::ESRCH) {
                ProcessError::NotFound { pid }
            } else {
                ProcessError::Syscall {
                    call: "pidfd_open",
                    pid,
                    source: err,
                }
            });
        }
        let raw = RawFd::try_from(ret).map_err(|_| ProcessError::Syscall {
            call: "pidfd_open",
            pid,
            source: io::Error::other("fd out of range"),
        })?;
        // SAFETY: the kernel just returned this fd to us (O_CLOEXEC is implied for pidfds).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
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

    #[cfg(any(test, feature = "test-support"))]
    /// The pid the pidfd was opened on, as seen from this process's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` (pidfd_send_signal); a process that already exited is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        // SAFETY: pidfd_send_signal(fd, sig, NULL, 0) sends like kill(2); a null siginfo
        // makes the kernel fill in SI_USER with our pid and uid.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal.number(),
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(ProcessError::Syscall {
                call: "pidfd_send_signal",
                pid: self.pid,
                source: err,
            });
        }
        Ok(())
    }

    /// Waits until the process exits or `timeout` passes; true if it exited.
    ///
    /// Exited means dead, not reaped: a zombie counts, and the parent still has to reap it.
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Result<bool, ProcessError> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            let wait_ms: libc::c_int = match deadline {
                None | Some(None) => -1,
                Some(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Round up so a sub-millisecond remainder does not spin at 0 ms.
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, count 1.
            let ret = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ProcessError::Syscall {
                    call: "poll",
                    pid: self.pid,
                    source: err,
                });
            }
            if ret > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                return Ok(true);
            }
            if wait_ms == 0 {
                return Ok(false);
            }
            if ret == 0 && matches!(deadline, Some(Some(d)) if Instant::now() >= d) {
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
