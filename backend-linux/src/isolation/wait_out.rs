//! What the task's init does once the task runs, written once for the two programs that do
//! it: the init itself when it waits in place (`init.rs`, through libc) and the reaper it
//! otherwise execs (`reaper/main.rs`, through raw system calls; it includes this file).
//! Both reach the kernel through [`Sys`]; nothing here allocates, and it needs only `core`.
//!
//! Forwards to the task the signals sent to pid 1 from outside the namespace and those the
//! supervisor asks for on the control socket, reaps every child, and once the task is among
//! them reports its status and exits (the kernel kills what is left in the namespace).

use super::wire::{RECORD_LEN, Record};

/// The system calls the wait needs, as each program makes them.
pub(crate) trait Sys {
    /// SIGCHLD's number on this architecture.
    const SIGCHLD: i32;
    /// Blocks until `fds[0]` or `fds[1]` (a negative one is skipped) is readable or hung
    /// up; which of them, or `None` when the poll failed (an interruption included).
    fn poll_in(&self, fds: [i32; 2]) -> Option<[bool; 2]>;
    /// The next record of the signalfd `sfd`: its signal, `si_code` and sender pid (0 from
    /// outside the namespace); `None` once none is pending.
    fn read_signal(&self, sfd: i32) -> Option<(i32, i32, u32)>;
    /// Reads one message from the control socket without blocking: its length (0 once the
    /// socket is closed or failed), or `None` when there is nothing to read yet (EAGAIN,
    /// EINTR).
    fn recv_control(&self, buf: &mut [u8; RECORD_LEN]) -> Option<usize>;
    /// Sends `signal` to `pid` (errors are of no use here: a task gone is reaped next).
    fn kill(&self, pid: i32, signal: i32);
    /// Reaps one exited child without blocking: its pid and wait status.
    fn reap_one(&self) -> Option<(i32, i32)>;
    /// Writes `record` to the report pipe.
    fn report(&self, record: Record);
    /// Leaves the process.
    fn exit(&self, code: i32) -> !;
}

/// Waits out the task `task`, whose signals arrive on the signalfd `sfd`; never returns.
#[unsafe(link_section = ".text.hot.execdriver_idle")]
pub(crate) fn wait_out<S: Sys>(sys: &S, task: i32, sfd: i32) -> ! {
    let mut ctl_open = true;
    loop {
        if let Some(record) = reap(sys, task) {
            sys.report(record);
            sys.exit(0);
        }
        let ctl = if ctl_open { super::wire::CTL_FD } else { -1 };
        let Some([signals, control]) = sys.poll_in([sfd, ctl]) else {
            continue;
        };
        if signals {
            forward_signals(sys, task, sfd);
        }
        if control {
            let mut msg = [0u8; RECORD_LEN];
            match sys.recv_control(&mut msg) {
                Some(RECORD_LEN) => {
                    if let Some(Record::Forward { signal }) = Record::decode(&msg) {
                        sys.kill(task, signal);
                    }
                }
                // The supervisor closed its end (or the socket failed): PR_SET_PDEATHSIG
                // covers the supervisor's death.
                Some(0) => ctl_open = false,
                Some(_) | None => {}
            }
        }
    }
}

/// Reads every pending signal and forwards those sent from outside the namespace.
#[unsafe(link_section = ".text.hot.execdriver_idle")]
fn forward_signals<S: Sys>(sys: &S, task: i32, sfd: i32) {
    while let Some((signo, code, pid)) = sys.read_signal(sfd) {
        // A sender pid of 0 means outside this namespace (the supervisor); signals from the
        // task's own processes to pid 1, or from the kernel to the init itself, stay here.
        let from_outside = pid == 0;
        let user_sent = code <= 0;
        let forward = if signo == S::SIGCHLD {
            from_outside && user_sent
        } else {
            from_outside
        };
        if forward {
            sys.kill(task, signo);
        }
    }
}

/// Reaps every exited child; the task's status when it is among them.
#[unsafe(link_section = ".text.hot.execdriver_idle")]
fn reap<S: Sys>(sys: &S, task: i32) -> Option<Record> {
    let mut status = None;
    while let Some((pid, wstatus)) = sys.reap_one() {
        if pid == task {
            status = Some(task_status(wstatus));
        }
    }
    status
}

/// The record for a wait status: WIFSIGNALED's signal (neither 0, exited, nor 0x7f,
/// stopped, which a wait reports only with WUNTRACED), else the exit code.
fn task_status(wstatus: i32) -> Record {
    let signal = wstatus & 0x7f;
    if signal != 0 && signal != 0x7f {
        Record::Killed { signal }
    } else {
        Record::Exited {
            code: (wstatus >> 8) & 0xff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A scripted kernel: what each call returns, and what the wait did.
    #[derive(Default)]
    struct Script {
        /// The answers of the polls, in order.
        polls: RefCell<Vec<Option<[bool; 2]>>>,
        /// The children that exit (pid, wait status) once the last poll is answered.
        exits: RefCell<Vec<(i32, i32)>>,
        signals: RefCell<Vec<(i32, i32, u32)>>,
        control: RefCell<Vec<Option<Vec<u8>>>>,
        reapable: RefCell<Vec<(i32, i32)>>,
        polled: RefCell<Vec<[i32; 2]>>,
        killed: RefCell<Vec<(i32, i32)>>,
        reported: RefCell<Vec<Record>>,
    }

    /// The payload `exit` unwinds with, so the test gets its thread back.
    struct Exited;

    impl Sys for Script {
        const SIGCHLD: i32 = libc::SIGCHLD;
        fn poll_in(&self, fds: [i32; 2]) -> Option<[bool; 2]> {
            self.polled.borrow_mut().push(fds);
            let mut polls = self.polls.borrow_mut();
            assert!(!polls.is_empty(), "the wait polled past the script");
            let ready = polls.remove(0);
            if polls.is_empty() {
                self.reapable
                    .borrow_mut()
                    .append(&mut self.exits.borrow_mut());
            }
            ready
        }
        fn read_signal(&self, _: i32) -> Option<(i32, i32, u32)> {
            let mut signals = self.signals.borrow_mut();
            (!signals.is_empty()).then(|| signals.remove(0))
        }
        fn recv_control(&self, buf: &mut [u8; RECORD_LEN]) -> Option<usize> {
            let msg = self.control.borrow_mut().remove(0)?;
            buf[..msg.len()].copy_from_slice(&msg);
            Some(msg.len())
        }
        fn kill(&self, pid: i32, signal: i32) {
            self.killed.borrow_mut().push((pid, signal));
        }
        fn reap_one(&self) -> Option<(i32, i32)> {
            self.reapable.borrow_mut().pop()
        }
        fn report(&self, record: Record) {
            self.reported.borrow_mut().push(record);
        }
        fn exit(&self, _: i32) -> ! {
            std::panic::panic_any(Exited)
        }
    }

    const TASK: i32 = 2;
    const SFD: i32 = 7;

    fn run(script: &Script) {
        let out =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_out(script, TASK, SFD)));
        let payload = out.expect_err("the wait returns only by exit");
        assert!(payload.is::<Exited>(), "the wait panicked");
    }

    #[test]
    fn signals_from_outside_are_forwarded_and_the_tasks_end_reported() {
        let script = Script::default();
        *script.polls.borrow_mut() = vec![Some([true, false])];
        *script.signals.borrow_mut() = vec![
            (libc::SIGTERM, 0, 0),
            (libc::SIGTERM, 0, 9),
            (libc::SIGCHLD, 1, 0),
            (libc::SIGCHLD, 0, 0),
        ];
        *script.exits.borrow_mut() = vec![(TASK, libc::SIGTERM)];
        run(&script);
        // From inside (pid 9) and the kernel's own SIGCHLD (a positive code) stay.
        assert_eq!(
            *script.killed.borrow(),
            [(TASK, libc::SIGTERM), (TASK, libc::SIGCHLD)]
        );
        assert_eq!(
            *script.reported.borrow(),
            [Record::Killed {
                signal: libc::SIGTERM
            }]
        );
    }

    #[test]
    fn forward_records_are_sent_and_a_closed_control_socket_is_not_polled_again() {
        let script = Script::default();
        *script.polls.borrow_mut() = vec![
            Some([false, true]),
            Some([false, true]),
            Some([false, true]),
            None,
        ];
        let forward = Record::Forward {
            signal: libc::SIGSTOP,
        };
        *script.control.borrow_mut() =
            vec![Some(forward.encode().to_vec()), None, Some(Vec::new())];
        // An orphan and the task, reaped together.
        *script.exits.borrow_mut() = vec![(TASK, 3 << 8), (9, 0)];
        run(&script);
        assert_eq!(*script.killed.borrow(), [(TASK, libc::SIGSTOP)]);
        let ctl = crate::isolation::wire::CTL_FD;
        assert_eq!(
            *script.polled.borrow(),
            [[SFD, ctl], [SFD, ctl], [SFD, ctl], [SFD, -1]]
        );
        assert_eq!(*script.reported.borrow(), [Record::Exited { code: 3 }]);
    }

    #[test]
    fn wait_statuses_decode_as_the_wait_macros_do() {
        assert_eq!(task_status(0), Record::Exited { code: 0 });
        assert_eq!(task_status(3 << 8), Record::Exited { code: 3 });
        assert_eq!(task_status(libc::SIGKILL), Record::Killed { signal: 9 });
        // The core dump flag beside the signal.
        assert_eq!(
            task_status(0x80 | libc::SIGSEGV),
            Record::Killed { signal: 11 }
        );
    }
}
