//! Killing everything in a task cgroup, once for every [`TaskCgroupOps`]: the kernel's own
//! kill (v2 `cgroup.kill`) where there is one, otherwise (and for what survives it) rounds of
//! freeze, SIGKILL each member by pidfd, thaw, until the cgroup is empty or the budget is
//! spent.

use std::thread::sleep;
use std::time::{Duration, Instant};

use execdriver_core::Signal;

use crate::process::{Pidfd, ProcessError};

use super::{CgroupError, TaskCgroupOps};

/// How long one round waits for the freezer to report frozen (at most).
const FREEZE_WAIT: Duration = Duration::from_millis(500);
/// How long one round waits for killed members to leave the cgroup (at most).
const EXIT_WAIT: Duration = Duration::from_millis(500);
/// The most that the kernel's kill gets before the per-pid rounds, which name the
/// survivors, take over; also never more than 60 % of the budget.
const KERNEL_KILL_WAIT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(5);

/// The algorithm behind [`TaskCgroupOps::kill_all_within`].
pub(super) fn kill_all<C: TaskCgroupOps + ?Sized>(
    cg: &C,
    budget: Duration,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    let deadline = start + budget;
    if cg.pids()?.is_empty() {
        return Ok(());
    }
    if cg.kill_by_kernel()? {
        let kernel_wait = KERNEL_KILL_WAIT.min(budget.mul_f64(0.6));
        if wait_empty(cg, (start + kernel_wait).min(deadline))? {
            return Ok(());
        }
        // Fall through to the per-pid rounds, which name the survivors.
    }
    let freezer = cg.has_freezer();
    let mut rounds = 0;
    // At least one round, however little of the budget is left.
    while rounds == 0 || Instant::now() < deadline {
        rounds += 1;
        if freezer {
            // The freeze only keeps members from forking while they are killed; when it
            // fails, SIGKILL rounds still converge, so a freeze error does not stop the kill.
            let _ = freeze_until(cg, (Instant::now() + FREEZE_WAIT).min(deadline));
        }
        let killed = cg.pids().and_then(|pids| {
            pids.into_iter()
                .try_for_each(|pid| cg.signal_member(pid, libc::SIGKILL))
        });
        // Thaw even after a failed kill: a frozen task would otherwise stay stuck forever.
        let thawed = if freezer { cg.thaw() } else { Ok(()) };
        killed?;
        thawed?;
        if wait_empty(cg, (Instant::now() + EXIT_WAIT).min(deadline))? {
            return Ok(());
        }
    }
    Err(CgroupError::NotEmpty {
        path: cg.primary_path(),
        rounds,
        pids: cg.pids()?,
    })
}

/// Polls until no pid is left; true if that happened by `deadline` (checked at least once,
/// even past it).
fn wait_empty<C: TaskCgroupOps + ?Sized>(cg: &C, deadline: Instant) -> Result<bool, CgroupError> {
    loop {
        if cg.pids()?.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(POLL);
    }
}

/// Freezes and waits (bounded) until the kernel reports the cgroup frozen; true if it did.
/// A cgroup that stays freezing is still killed: SIGKILL reaches its members once thawed.
pub(super) fn freeze_until<C: TaskCgroupOps + ?Sized>(
    cg: &C,
    deadline: Instant,
) -> Result<bool, CgroupError> {
    cg.freeze()?;
    loop {
        if cg.is_frozen()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(POLL);
    }
}

/// Sends `signal` to `pid` through a pidfd, but only if `is_member` accepts its
/// `/proc/<pid>/cgroup`: a pid reused by a process outside the cgroup is left alone, and once
/// the pidfd is open the signal can only reach the process it was opened on.
pub(super) fn signal_member(
    pid: i32,
    signal: i32,
    is_member: impl Fn(&str) -> bool,
) -> Result<(), CgroupError> {
    let pidfd = match Pidfd::open(pid) {
        Ok(fd) => Some(fd),
        Err(ProcessError::NotFound { .. } | ProcessError::InvalidPid { .. }) => return Ok(()),
        // Kernels before 5.3: fall back to kill(2) after the membership check below.
        Err(ProcessError::Syscall { source, .. })
            if source.raw_os_error() == Some(libc::ENOSYS) =>
        {
            None
        }
        Err(e) => {
            return Err(CgroupError::Signal {
                pid,
                source: process_io_error(e),
            });
        }
    };
    let text = match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(source) => return Err(CgroupError::Signal { pid, source }),
    };
    if !is_member(&text) {
        return Ok(());
    }
    let sig = Signal::new(signal).map_err(|e| CgroupError::Signal {
        pid,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    match &pidfd {
        // If the pidfd's process had already exited, /proc/<pid> may have shown another
        // process; the signal then fails with ESRCH (not an error for Pidfd::signal)
        // instead of reaching that one.
        Some(fd) => fd.signal(sig).map_err(|e| CgroupError::Signal {
            pid,
            source: process_io_error(e),
        }),
        None => {
            // SAFETY: kill(2) takes plain integers.
            let rc = unsafe { libc::kill(pid, signal) };
            let err = std::io::Error::last_os_error();
            if rc == 0 || err.raw_os_error() == Some(libc::ESRCH) {
                Ok(())
            } else {
                Err(CgroupError::Signal { pid, source: err })
            }
        }
    }
}

/// The OS error inside a [`ProcessError`], or the error as text.
fn process_io_error(e: ProcessError) -> std::io::Error {
    match e {
        ProcessError::Syscall { source, .. } | ProcessError::ReadStat { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_member_skips_non_members_and_dead_pids() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        signal_member(pid, libc::SIGKILL, |_| false).unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "a non-member was signalled"
        );
        signal_member(pid, libc::SIGKILL, |_| true).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        // Reaped: the pid is gone (or reused by a stranger, which the predicate refuses).
        signal_member(pid, libc::SIGKILL, |_| false).unwrap();
    }
}
