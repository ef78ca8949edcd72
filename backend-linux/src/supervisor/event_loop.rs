//! The supervisor once the task runs: one thread, one poll loop over the socket and its
//! connections, the task's pidfd, the two log pipes (or its terminal's master), a signalfd,
//! and the timers (kill grace, pending waits, idle connections, the log drain, the linger).
//!
//! The exit is published only after `exit.json` was written (or failed to be), so a `wait`
//! answered with a result normally finds it on disk too. When writing it fails (full disk),
//! waits are still answered with the status: the task has exited, and withholding its result
//! would only block the agent. The failure goes to the supervisor log, and the supervisor
//! then never lingers out (it stays until a `destroy`), because with no record on disk it is
//! the only holder of the result.
//!
//! SIGTERM (a service manager stopping the supervisor, a node shutting down) is an orderly
//! kill: the task gets its kill signal and its kill timeout, then everything in its cgroup is
//! killed; the exit is recorded, the cgroup removed, and the supervisor exits without
//! lingering, leaving the state dir with the exit record for a later `wait` to collect.
//!
//! The log pumps are bounded by a rate per stream (the spec's `logs.rate_bytes_per_sec`,
//! 4 MiB/s by default), not by charging their cpu to the task. Copying output costs the
//! supervisor about a millisecond of cpu per MiB, and the supervisor sits in the driver's
//! supervisors cgroup, so unbounded that cost lands on nobody: a task writing flat out kept
//! most of a core busy. Charging it to the task instead would need the pump in the task's
//! cgroup, where the task's kill-all, freezer and memory limit reach it (and the exit
//! record it must write after them), and the cost would still be unbounded for a task
//! without a cpu limit. A rate bounds the work per task whatever the task does: at most the
//! rate's worth of copying, plus a wake-up per tick while dropping. A stream over its rate
//! is not read (its pipe, enlarged to [`PIPE_SIZE`], fills and blocks the task's writes:
//! backpressure, nothing lost); one held back for a second has what waits dropped every
//! tick, counted in `stats` and marked in the log (see [`crate::logs::rate`]). The pipe is
//! then neither watched nor read between the limiter's wake-ups, which are timers of this
//! loop like any other, so a flooding task cannot make the loop spin, and `kill`, `wait` and
//! `stats` are served as promptly as ever. Once the task has exited its pipes are read
//! without a limit: what is left is at most a pipe-full each.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use execdriver_core::{ExitStatus, LogStats, Signal, TaskSpec};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::connection::{Connection, Input, PendingWait};
use super::start::Started;
use super::{DESTROY_WAIT, log};
use crate::cgroups::TaskCgroup;
use crate::isolation::LaunchedTask;
use crate::logs::rate::{HOLD_LIMIT, Limiter, Next};
use crate::logs::{LogPump, PUMP_CHUNK, Stream};
use crate::protocol::{ErrorCode, Hello, Ready, Request, Response};
use crate::state::{StatePaths, exit_record, recorded_cgroup, remove_cgroup_record};

/// How long the log pumps get to drain after the task died.
const PUMP_DRAIN: Duration = Duration::from_secs(5);
/// Connections served at once; one more is answered `busy` and closed, never queued.
const MAX_CONNECTIONS: usize = 64;
/// Poll slots on the stack: signals, listener, task, two outputs and up to
/// [`MAX_CONNECTIONS`] connections, with one to spare; more (which `accept` does not let
/// happen) would poll from the heap.
const POLL_SLOTS: usize = 5 + MAX_CONNECTIONS + 1;
/// How long a connection may sit without a request before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The size asked for each output pipe (the kernel's default `pipe-max-size`): the more a
/// pipe holds, the more a task over its rate gets through per drop, for the same wake-ups.
const PIPE_SIZE: usize = 1024 * 1024;

/// One of the task's output pipes and where it goes.
struct Output {
    pipe: File,
    pump: LogPump,
    limiter: Limiter,
    /// The pipe is left alone until then: the stream is over its rate.
    wake: Option<Instant>,
    /// The first drop was reported in the supervisor log.
    drop_reported: bool,
    /// It is the master of the task's terminal, not a pipe: no pipe size, no splice, and
    /// EIO (every holder of the terminal gone) is its end.
    terminal: bool,
}

/// A `destroy` under way.
struct Destroy {
    /// The connection to answer, if it is still there.
    conn: u64,
    /// When to give up waiting for the task to exit.
    deadline: Instant,
    failures: Vec<String>,
}

/// The supervisor's whole state, owned by its one thread.
pub(super) struct Supervisor {
    spec: TaskSpec,
    paths: StatePaths,
    hello: Hello,
    task: LaunchedTask,
    cgroup: Option<TaskCgroup>,
    listener: UnixListener,
    signals: Option<SignalFd>,
    outputs: Vec<Option<Output>>,
    /// The master of the task's terminal, when it has one, for `terminal` requests.
    terminal: Option<OwnedFd>,
    /// Where dropped output goes by splice, without being copied: `/dev/null`.
    sink: Option<File>,
    /// The pumps' read buffer.
    buf: Vec<u8>,
    /// Output dropped over the rate, the closed pumps' included.
    dropped: LogStats,
    conns: Vec<Connection>,
    /// The id the next connection gets.
    next_conn: u64,
    linger: Duration,
    /// The init has exited with this status; the exit is published once the pumps drained
    /// or this deadline passed.
    draining: Option<(ExitStatus, Instant)>,
    /// Published: every wait is answered with it.
    exit: Option<ExitStatus>,
    exited_at: Option<Instant>,
    /// `exit.json` could not be written: never linger out.
    unrecorded: bool,
    /// The supervisor's own backup of a kill: kill everything at this instant.
    kill_at: Option<Instant>,
    /// SIGTERM arrived: exit once the task's exit is recorded.
    terminating: bool,
    destroy: Option<Destroy>,
    /// A `destroy` removed everything: there is no socket left to remove.
    destroyed: bool,
    done: bool,
}

impl Supervisor {
    /// The event loop's state for a task that was just started, and what went wrong setting
    /// it up, if anything did: then the caller tears the task down.
    pub(super) fn new(started: Started, linger: Duration) -> (Self, Option<String>) {
        let Started {
            spec,
            paths,
            hello,
            task,
            cgroup,
            listener,
            outputs,
            terminal,
        } = started;
        let mut errors = Vec::new();
        let mut mask = SigSet::empty();
        for s in [
            NixSignal::SIGTERM,
            NixSignal::SIGINT,
            NixSignal::SIGHUP,
            NixSignal::SIGQUIT,
        ] {
            mask.add(s);
        }
        // Without a signalfd the supervisor still serves its task; only SIGTERM then kills
        // it at once instead of stopping the task in order.
        let signals = match mask.thread_block().and_then(|()| {
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        }) {
            Ok(fd) => Some(fd),
            Err(e) => {
                log(format_args!(
                    "cannot handle SIGTERM in order (signalfd: {e}); SIGTERM will end the supervisor at once"
                ));
                let _ = mask.thread_unblock();
                None
            }
        };
        if let Err(e) = listener.set_nonblocking(true) {
            errors.push(format!("making the socket non-blocking failed: {e}"));
        }
        let now = Instant::now();
        let rate = spec.logs.rate_bytes_per_sec;
        let is_terminal = terminal.is_some();
        let outputs = outputs
            .into_iter()
            .map(|(fd, writer)| match set_nonblocking(&fd) {
                Ok(()) => {
                    // A smaller pipe only lets less through while dropping.
                    if !is_terminal && let Err(e) = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_SIZE)
                    {
                        log(format_args!(
                            "cannot enlarge a log pipe to {PIPE_SIZE} bytes: {e}"
                        ));
                    }
                    Some(Output {
                        pipe: File::from(fd),
                        pump: LogPump::new(writer, rate),
                        limiter: Limiter::new(rate, now),
                        wake: None,
                        drop_reported: false,
                        terminal: is_terminal,
                    })
                }
                Err(e) => {
                    errors.push(format!("making a log pipe non-blocking failed: {e}"));
                    None
                }
            })
            .collect();
        // Without it dropped output is read and thrown away: a copy more, nothing else.
        let sink = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
            Ok(f) => Some(f),
            Err(e) => {
                log(format_args!(
                    "cannot open /dev/null ({e}); output over the log rate is read to drop it"
                ));
                None
            }
        };
        let supervisor = Self {
            spec,
            paths,
            hello,
            task,
            cgroup: Some(cgroup),
            listener,
            signals,
            outputs,
            terminal,
            sink,
            buf: vec![0u8; PUMP_CHUNK],
            dropped: LogStats::default(),
            conns: Vec::new(),
            next_conn: 0,
            linger,
            draining: None,
            exit: None,
            exited_at: None,
            unrecorded: false,
            kill_at: None,
            terminating: false,
            destroy: None,
            destroyed: false,
            done: false,
        };
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        (supervisor, error)
    }

    /// The ready report for the agent.
    pub(super) fn ready(&self) -> Ready {
        Ready::Ready {
            supervisor: self.hello.supervisor,
            task: self.hello.task,
            cgroup: self
                .cgroup
                .as_ref()
                .map(|c| c.name().to_owned())
                .unwrap_or_default(),
        }
    }

    /// Tears everything down after a start the agent never learned of, removing the state
    /// dir: nobody holds a handle to the task.
    pub(super) fn abort(&mut self, why: &str) {
        log(format_args!("aborting: {why}"));
        if let Some(cgroup) = &self.cgroup
            && let Err(e) = cgroup.kill_all()
        {
            log(format_args!("abort: killing the task cgroup failed: {e}"));
        }
        if let Err(e) = self.task.wait() {
            log(format_args!("abort: reaping the task failed: {e}"));
        }
        let (_, failures) = self.finish_destroy();
        if !failures.is_empty() {
            log(format_args!("abort cleanup: {}", failures.join("; ")));
        }
    }

    /// Runs the loop until the task's result is collected, or its linger ran out.
    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    pub(super) fn run(&mut self) {
        while !self.done {
            // Every timer is one of `next_deadline`'s: with none armed (the task runs, nobody
            // is connected) there is nothing to fire, and the loop blocks without reading the
            // clock, whose std function lies outside the idle section.
            if self.next_deadline().is_some() {
                self.fire_timers(Instant::now());
                if self.done {
                    break;
                }
            }
            let timeout = self
                .next_deadline()
                .map(|d| timespec(d.saturating_duration_since(Instant::now())));
            let ready = match self.poll_once(timeout.as_ref()) {
                Ok(ready) => ready,
                Err(e) => {
                    log(format_args!("poll failed: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            self.dispatch(ready);
            self.maybe_publish_exit();
        }
        if !self.destroyed {
            // Lingered out or terminated: the record stays for a reattach; the socket goes.
            let _ = std::fs::remove_file(self.paths.socket());
        }
    }

    /// Which sources are ready, after one poll.
    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn poll_once(&self, timeout: Option<&libc::timespec>) -> io::Result<Ready2> {
        // On the stack, and by raw fd: this runs just before the loop blocks, and what it
        // calls is what a waiting supervisor keeps mapped (see `process::footprint`); an
        // allocation or a trait call into another crate would each fault in one more window.
        // (After a wake, `Ready2` and whatever serves the event allocate: that is code a
        // request needs anyway.)
        // Zeroed, not filled with a pattern: a pattern is a vector constant read from
        // .rodata, one more window. Every slot is set below.
        let unset = libc::pollfd {
            fd: 0,
            events: 0,
            revents: 0,
        };
        let mut on_stack = [unset; POLL_SLOTS];
        let mut on_heap;
        let needed = 3 + self.outputs.len() + self.conns.len();
        let fds: &mut [libc::pollfd] = if needed <= POLL_SLOTS {
            &mut on_stack[..needed]
        } else {
            on_heap = vec![unset; needed];
            &mut on_heap
        };
        // A negative fd is a slot poll skips; the slots keep their places for `Ready2`.
        let watch = |fd: Option<RawFd>, events: libc::c_short| libc::pollfd {
            fd: fd.unwrap_or(-1),
            events,
            revents: 0,
        };
        fds[0] = watch(self.signals.as_ref().map(|s| s.as_raw_fd()), libc::POLLIN);
        let accepting = self.conns.len() <= MAX_CONNECTIONS;
        fds[1] = watch(accepting.then(|| self.listener.as_raw_fd()), libc::POLLIN);
        // Once reaped, a pidfd reports a hang-up even with no events asked for: left in, it
        // would spin the loop for the whole linger.
        let waiting = self.draining.is_none() && self.exit.is_none();
        fds[2] = watch(waiting.then(|| self.task.pidfd.as_raw_fd()), libc::POLLIN);
        let outputs_at = 3;
        for (slot, output) in fds[outputs_at..].iter_mut().zip(&self.outputs) {
            // A pipe over its rate is left out altogether: a hang-up would still be
            // reported with no events asked for, and spin the loop.
            let pipe = output
                .as_ref()
                .filter(|o| o.wake.is_none())
                .map(|o| o.pipe.as_raw_fd());
            *slot = watch(pipe, libc::POLLIN);
        }
        let conns_at = outputs_at + self.outputs.len();
        for (slot, conn) in fds[conns_at..].iter_mut().zip(&self.conns) {
            let mut events = 0;
            if conn.wants_read() {
                events |= libc::POLLIN;
            }
            if conn.wants_write() {
                events |= libc::POLLOUT;
            }
            *slot = watch(Some(conn.stream().as_raw_fd()), events);
        }
        let timeout = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
        loop {
            // SAFETY: `fds` is a slice of initialised pollfds that ppoll may write the
            // revents of; the timeout is null or points to a live timespec; no signal mask.
            let n = unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    timeout,
                    std::ptr::null(),
                )
            };
            if n >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let hit = |fd: &libc::pollfd| fd.fd >= 0 && fd.revents != 0;
        Ok(Ready2 {
            signal: hit(&fds[0]),
            listener: hit(&fds[1]),
            task: hit(&fds[2]),
            outputs: (0..self.outputs.len())
                .map(|i| hit(&fds[outputs_at + i]))
                .collect(),
            conns: (0..self.conns.len())
                .map(|i| hit(&fds[conns_at + i]))
                .collect(),
        })
    }

    fn dispatch(&mut self, ready: Ready2) {
        let now = Instant::now();
        if ready.signal {
            self.read_signals(now);
        }
        if ready.task {
            self.task_exited(now);
        }
        for (i, hit) in ready.outputs.iter().enumerate() {
            if *hit {
                self.pump(i, now);
            }
        }
        for (i, hit) in ready.conns.iter().enumerate() {
            if *hit {
                self.conns[i].fill(now);
            }
        }
        if ready.listener {
            self.accept(now);
        }
        self.serve(now);
        for conn in &mut self.conns {
            conn.flush(now);
        }
        self.drop_finished_connections();
    }

    fn read_signals(&mut self, now: Instant) {
        let Some(signals) = &self.signals else {
            return;
        };
        let mut received = Vec::new();
        while let Ok(Some(info)) = signals.read_signal() {
            received.push(info.ssi_signo);
        }
        for signo in received {
            let info_signo = signo;
            let signal = i32::try_from(info_signo).unwrap_or(0);
            if signal != libc::SIGTERM {
                log(format_args!("ignoring signal {signal}"));
                continue;
            }
            if self.terminating {
                continue;
            }
            self.terminating = true;
            match self.exit {
                Some(_) => {
                    log("SIGTERM: the task has exited and its exit is recorded; exiting");
                    self.done = true;
                }
                None => {
                    log(format_args!(
                        "SIGTERM: stopping the task ({} now, everything after {:?})",
                        self.spec.kill_signal, self.spec.kill_timeout
                    ));
                    if let Err(e) = self.signal_task(self.spec.kill_signal) {
                        log(e);
                    }
                    self.arm_kill(now + self.spec.kill_timeout);
                }
            }
        }
    }

    fn arm_kill(&mut self, at: Instant) {
        self.kill_at = Some(self.kill_at.map_or(at, |t| t.min(at)));
    }

    /// The init is gone: note how the task ended, and sweep what escaped its namespace's
    /// teardown before the pumps are drained.
    fn task_exited(&mut self, now: Instant) {
        if self.draining.is_some() || self.exit.is_some() {
            return;
        }
        let mut status = match self.task.wait() {
            Ok(status) => status,
            Err(e) => {
                log(format_args!("waiting for the task failed: {e}"));
                ExitStatus::code(-1)
            }
        };
        if let Some(cgroup) = &self.cgroup {
            match cgroup.oom_killed() {
                Ok(oom) => status.oom_killed |= oom,
                Err(e) => log(format_args!("reading the oom state failed: {e}")),
            }
            if let Err(e) = cgroup.kill_all() {
                log(format_args!("sweeping the task cgroup failed: {e}"));
            }
        }
        self.draining = Some((status, now + PUMP_DRAIN));
        self.terminal = None;
        // What is left in the pipes is at most a pipe-full each: read it all, at once.
        for output in self.outputs.iter_mut().flatten() {
            output.limiter.lift();
            output.wake = None;
        }
    }

    /// Copies what the rate allows from output `i` to its log, drops what waits when the
    /// stream has been held back too long, and says when to look at the pipe again.
    fn pump(&mut self, i: usize, now: Instant) {
        let Some(output) = self.outputs[i].as_mut() else {
            return;
        };
        output.wake = None;
        let mut empty = false;
        // Bounded per wake-up, so a task writing flat out cannot starve the socket.
        for _ in 0..16 {
            let allowed = output.limiter.allowance(now, self.buf.len());
            if allowed == 0 {
                break;
            }
            match output.pipe.read(&mut self.buf[..allowed]) {
                Ok(0) => return self.close_output(i, now),
                Ok(n) => {
                    output.limiter.spend(n);
                    let unread = output.pump.write(&self.buf[..n], now);
                    if unread > 0 {
                        let total = match output.pump.stream() {
                            Stream::Stdout => &mut self.dropped.stdout_dropped_bytes,
                            Stream::Stderr => &mut self.dropped.stderr_dropped_bytes,
                        };
                        *total = total.saturating_add(unread);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    empty = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if output.terminal && e.raw_os_error() == Some(libc::EIO) => {
                    return self.close_output(i, now);
                }
                Err(e) => {
                    log(format_args!("reading a log pipe failed: {e}"));
                    return self.close_output(i, now);
                }
            }
        }
        // Unknown is taken for waiting: held back at worst, never spinning.
        let waiting = if empty {
            0
        } else {
            rustix::io::ioctl_fionread(&output.pipe).unwrap_or(1)
        };
        if waiting == 0 {
            output.pump.settle(now);
        }
        let wake = match output.limiter.after(now, waiting) {
            Next::Watch => return,
            Next::WakeAt(at) => at,
            Next::DropAndWakeAt(at) => at,
        };
        output.wake = Some(wake);
        if !output.limiter.dropping(now) {
            return;
        }
        let stream = output.pump.stream();
        if !output.drop_reported {
            output.drop_reported = true;
            log(format_args!(
                "the task's {} was held back over its log rate of {} bytes/s for {HOLD_LIMIT:?}: \
                 dropping what it writes beyond the rate (counted in stats, marked in the log)",
                stream.as_str(),
                output.limiter.rate().unwrap_or_default(),
            ));
        }
        // A terminal cannot be spliced from: its output is read to be dropped.
        let sink = self.sink.as_ref().filter(|_| !output.terminal);
        match discard(&output.pipe, sink, &mut self.buf, output.terminal) {
            Ok((n, eof)) => {
                output.pump.dropped(n);
                let total = match stream {
                    Stream::Stdout => &mut self.dropped.stdout_dropped_bytes,
                    Stream::Stderr => &mut self.dropped.stderr_dropped_bytes,
                };
                *total = total.saturating_add(n);
                if eof {
                    self.close_output(i, now);
                }
            }
            Err(e) => {
                log(format_args!("dropping from a log pipe failed: {e}"));
                self.close_output(i, now);
            }
        }
    }

    /// Output `i` is done with (its end, or an error): its last marker goes to the log.
    fn close_output(&mut self, i: usize, now: Instant) {
        if let Some(mut output) = self.outputs[i].take() {
            output.pump.settle(now);
            let dropped = output.pump.dropped_bytes();
            if dropped > 0 {
                log(format_args!(
                    "the task's {} closed; {dropped} bytes of it were dropped (over its log rate, or not taken by a full log output)",
                    output.pump.stream().as_str()
                ));
            }
        }
    }

    /// Publishes the exit once the init is gone and its output drained (or the drain ran
    /// out of time): the record first, then every waiter, then the cgroup goes.
    fn maybe_publish_exit(&mut self) {
        let Some((status, drain_until)) = self.draining else {
            return;
        };
        let drained = self.outputs.iter().all(Option::is_none);
        if !drained && Instant::now() < drain_until {
            return;
        }
        if !drained {
            log("log pumps did not finish in time; the log may miss its tail");
            let now = Instant::now();
            for i in 0..self.outputs.len() {
                self.close_output(i, now);
            }
        }
        self.draining = None;
        let record = exit_record::ExitRecord {
            status,
            supervisor: self.hello.supervisor,
            task: self.hello.task,
        };
        let recorded = exit_record::write(&self.paths.exit_record(), &record);
        self.exit = Some(status);
        self.exited_at = Some(Instant::now());
        self.unrecorded = recorded.is_err();
        self.kill_at = None;
        if let Err(e) = recorded {
            log(format_args!(
                "{e}; waits are answered from memory and the supervisor stays until destroyed"
            ));
        }
        log(format_args!(
            "task exited: code {}, signal {:?}, oom killed {}",
            status.exit_code, status.signal, status.oom_killed
        ));
        let now = Instant::now();
        for conn in &mut self.conns {
            if conn.wait.take().is_some() {
                conn.answer(&Response::Exited(status));
                conn.flush(now);
            }
        }
        if let Err(e) = self.destroy_cgroup() {
            log(e);
        }
        reap_strays();
        if self.destroy.is_some() {
            self.complete_destroy();
        } else if self.terminating {
            log("terminating after SIGTERM: leaving the exit record");
            self.done = !self.unrecorded;
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let id = self.next_conn;
                    self.next_conn += 1;
                    let mut conn = match Connection::new(id, stream, now) {
                        Ok(conn) => conn,
                        Err(e) => {
                            log(format_args!("cannot set up a connection: {e}"));
                            continue;
                        }
                    };
                    // Connections whose peers left in this same poll still sit in the list
                    // until the end of the round: they do not count against the bound.
                    let serving =
                        |conns: &[Connection]| conns.iter().filter(|c| !c.is_done()).count();
                    // Nor do those this loop accepted from the backlog after their peers had
                    // already hung up (their end of file is not read yet): at the bound, read
                    // what every connection has before refusing this one.
                    if serving(&self.conns) >= MAX_CONNECTIONS {
                        for c in &mut self.conns {
                            c.fill(now);
                        }
                    }
                    if serving(&self.conns) >= MAX_CONNECTIONS {
                        conn.answer(&Response::error(
                            ErrorCode::Busy,
                            format!("the supervisor serves {MAX_CONNECTIONS} connections already"),
                        ));
                        conn.close_after_write();
                        conn.flush(now);
                        continue;
                    }
                    self.conns.push(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Serves every complete request of every connection.
    fn serve(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            loop {
                match self.conns[i].next_input() {
                    Input::Nothing => break,
                    Input::Invalid(reply) => self.conns[i].answer(&reply),
                    Input::Request(request) => {
                        if let Some(reply) = self.handle(i, request, now) {
                            self.conns[i].answer(&reply);
                        }
                    }
                }
            }
        }
    }

    /// The answer to one request, or `None` when it is answered later (a `wait` held open,
    /// a `destroy` under way).
    fn handle(&mut self, conn: usize, request: Request, now: Instant) -> Option<Response> {
        Some(match request {
            Request::Hello => Response::Hello(self.hello.clone()),
            Request::Wait { timeout_ms } => {
                if let Some(status) = self.exit {
                    return Some(Response::Exited(status));
                }
                self.conns[conn].wait = Some(match timeout_ms {
                    Some(ms) => PendingWait::Until(now + Duration::from_millis(ms)),
                    None => PendingWait::Forever,
                });
                return None;
            }
            Request::Signal { signal } => match self.signal_task(signal) {
                Ok(()) => Response::Ok(true),
                Err(e) => Response::error(ErrorCode::Signal, e),
            },
            Request::Shutdown { signal, grace_ms } => {
                if let Some(signal) = signal
                    && let Err(e) = self.signal_task(signal)
                {
                    return Some(Response::error(ErrorCode::Signal, e));
                }
                if self.exit.is_none() && self.draining.is_none() {
                    self.arm_kill(now + Duration::from_millis(grace_ms));
                }
                Response::Ok(true)
            }
            Request::Kill { budget_ms } => {
                let budget =
                    budget_ms.map_or(crate::cgroups::KILL_ALL_BUDGET, Duration::from_millis);
                match self.kill_all(budget) {
                    Ok(()) => Response::Ok(true),
                    Err(e) => Response::error(ErrorCode::Cgroup, e),
                }
            }
            Request::Destroy => {
                let id = self.conns[conn].id();
                return self.start_destroy(id, now);
            }
            Request::Release => return self.release(conn, now),
            Request::Terminal => {
                let reply = match (
                    &self.terminal,
                    self.exit.is_some() || self.draining.is_some(),
                ) {
                    (_, true) => Err(Response::error(
                        ErrorCode::Exited,
                        "it has exited: its terminal is gone",
                    )),
                    (None, false) => Err(Response::error(
                        ErrorCode::NoTerminal,
                        "it was started without a terminal (`run -t` or `start -t` gives one)",
                    )),
                    (Some(master), false) => master.try_clone().map_err(|e| {
                        Response::error(
                            ErrorCode::State,
                            format!("duplicating the terminal's descriptor failed: {e}"),
                        )
                    }),
                };
                match reply {
                    Ok(fd) => {
                        self.conns[conn].answer_with_fd(&Response::Ok(true), fd);
                        return None;
                    }
                    Err(reply) => reply,
                }
            }
            Request::Stats => match self.cgroup.as_ref() {
                Some(cgroup) if self.exit.is_none() => match cgroup.stats() {
                    Ok(stats) => Response::Stats(execdriver_core::TaskStats {
                        logs: self.dropped,
                        limits: Some((&self.spec.resources).into()),
                        ..stats
                    }),
                    Err(e) => {
                        Response::error(ErrorCode::Cgroup, format!("reading stats failed: {e}"))
                    }
                },
                _ => Response::error(
                    ErrorCode::Exited,
                    format!("task {} has exited: no stats", self.hello.task_id),
                ),
            },
        })
    }

    fn signal_task(&self, signal: Signal) -> Result<(), String> {
        if self.exit.is_some() || self.draining.is_some() {
            // The task is gone: there is nothing to deliver to, and nothing went wrong.
            return Ok(());
        }
        self.task
            .signal(signal)
            .map_err(|e| format!("sending {signal} to the task failed: {e}"))
    }

    /// Kills every process in the task's cgroup; nothing to do once the cgroup is gone.
    fn kill_all(&self, budget: Duration) -> Result<(), String> {
        match self.cgroup.as_ref() {
            Some(cgroup) => cgroup
                .kill_all_within(budget)
                .map_err(|e| format!("killing the task's cgroup failed: {e}")),
            None => Ok(()),
        }
    }

    /// Removes the task cgroup and its record. It is forgotten only once removed, so a
    /// failed removal is still known to a later `destroy`, which then keeps the state dir.
    fn destroy_cgroup(&mut self) -> Result<(), String> {
        let Some(cgroup) = self.cgroup.as_ref() else {
            return Ok(());
        };
        cgroup
            .destroy()
            .map_err(|e| format!("destroying cgroup {} failed: {e}", cgroup.name()))?;
        self.cgroup = None;
        // A record left behind would let a later cleanup act on a new cgroup of the same
        // name that another data dir sharing the parent may create.
        remove_cgroup_record(&self.paths)
            .map_err(|e| format!("cgroup removed, but its record stays: {e}"))
    }

    /// The agent collected the exit: the supervisor leaves, keeping the state dir, whose
    /// exit record answers every later `wait` (the task lives until it is removed). An exit
    /// that could not be recorded is written again first: without it the supervisor is the
    /// only holder of the result and stays.
    fn release(&mut self, conn: usize, now: Instant) -> Option<Response> {
        let Some(status) = self.exit else {
            return Some(Response::error(
                ErrorCode::Busy,
                format!(
                    "task {} has not exited: nothing to release",
                    self.hello.task_id
                ),
            ));
        };
        if self.unrecorded {
            let record = exit_record::ExitRecord {
                status,
                supervisor: self.hello.supervisor,
                task: self.hello.task,
            };
            if let Err(e) = exit_record::write(&self.paths.exit_record(), &record) {
                return Some(Response::error(
                    ErrorCode::State,
                    format!("{e}; the supervisor stays to answer waits from memory"),
                ));
            }
            self.unrecorded = false;
        }
        log("released: the exit is collected; leaving the exit record and exiting");
        // Answered here, not by the caller: the loop ends before its next round.
        self.conns[conn].answer(&Response::Ok(true));
        self.conns[conn].close_after_write();
        self.conns[conn].flush(now);
        self.done = true;
        None
    }

    fn start_destroy(&mut self, conn: u64, now: Instant) -> Option<Response> {
        if self.done {
            return Some(Response::error(
                ErrorCode::Closing,
                "supervisor is exiting after its linger period",
            ));
        }
        if self.destroy.is_some() {
            return Some(Response::error(ErrorCode::Busy, "a destroy is under way"));
        }
        let mut failures = Vec::new();
        if self.exit.is_none()
            && let Err(e) = self.kill_all(crate::cgroups::KILL_ALL_BUDGET)
        {
            failures.push(e);
        }
        self.destroy = Some(Destroy {
            conn,
            deadline: now + DESTROY_WAIT,
            failures,
        });
        if self.exit.is_some() {
            self.complete_destroy();
        }
        None
    }

    /// Finishes a `destroy`: the cgroup and the state dir go (the state dir only once the
    /// cgroup is verifiably gone), the caller is answered, and the supervisor exits.
    fn complete_destroy(&mut self) {
        let Some(mut destroy) = self.destroy.take() else {
            return;
        };
        let code = if destroy.failures.is_empty() {
            ErrorCode::State
        } else {
            ErrorCode::Cgroup
        };
        let (cgroup_failed, failures) = self.finish_destroy();
        let code = if cgroup_failed {
            ErrorCode::Cgroup
        } else {
            code
        };
        destroy.failures.extend(failures);
        let reply = if destroy.failures.is_empty() {
            log("destroyed: cgroup and state dir removed");
            Response::Ok(true)
        } else {
            let message = destroy.failures.join("; ");
            log(format_args!("destroy: {message}"));
            Response::error(code, message)
        };
        if let Some(conn) = self.conns.iter_mut().find(|c| c.id() == destroy.conn) {
            conn.answer(&reply);
            conn.close_after_write();
            // The answer fits the socket buffer: the agent reads it even after we exit.
            conn.flush(Instant::now());
        }
        self.destroyed = true;
        self.done = true;
    }

    /// Removes the cgroup and, once it is verifiably gone, the state dir: whether the
    /// cgroup removal failed, and every failure.
    fn finish_destroy(&mut self) -> (bool, Vec<String>) {
        let mut failures = Vec::new();
        let mut cgroup_failed = false;
        if let Err(e) = self.destroy_cgroup() {
            failures.push(e);
            cgroup_failed = true;
        }
        let remaining = self.cgroup.as_ref().map(|cg| cg.name().to_owned());
        let recorded = recorded_cgroup(&self.paths, &self.hello.task_id)
            .map(|cg| cg.map(|cg| cg.name().to_owned()));
        match keep_state_for(remaining.as_deref(), recorded) {
            Some(why) => {
                cgroup_failed = true;
                failures.push(format!(
                    "kept state dir {}: {why}",
                    self.paths.dir.display()
                ));
            }
            None => match std::fs::remove_dir_all(&self.paths.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!(
                    "removing state dir {} failed: {e}",
                    self.paths.dir.display()
                )),
            },
        }
        (cgroup_failed, failures)
    }

    /// Runs every timer that is due.
    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn fire_timers(&mut self, now: Instant) {
        if let Some(destroy) = &mut self.destroy
            && self.exit.is_none()
            && now >= destroy.deadline
        {
            destroy.failures.push(format!(
                "task did not exit within {DESTROY_WAIT:?} of killing its cgroup"
            ));
            self.complete_destroy();
        }
        // Waits first: an agent waiting out a kill's grace asks to be answered when it ends,
        // which is when the kill below fires, and the kill may take its budget while the
        // agent gives a wait only a short slack before calling us unresponsive.
        for conn in &mut self.conns {
            match conn.wait {
                Some(PendingWait::Until(at)) if now >= at => {
                    conn.wait = None;
                    conn.answer(&Response::Running(true));
                    conn.flush(now);
                }
                None if now.saturating_duration_since(conn.last_active) >= IDLE_TIMEOUT => {
                    conn.close_after_write();
                }
                _ => {}
            }
        }
        self.drop_finished_connections();
        if let Some(at) = self.kill_at
            && now >= at
        {
            self.kill_at = None;
            if self.exit.is_none() && self.draining.is_none() {
                log("the task outlived its kill grace: killing its cgroup");
                if let Err(e) = self.kill_all(crate::cgroups::KILL_ALL_BUDGET) {
                    log(e);
                }
            }
        }
        for i in 0..self.outputs.len() {
            let due = self.outputs[i]
                .as_ref()
                .and_then(|o| o.wake)
                .is_some_and(|at| now >= at);
            if due {
                self.pump(i, now);
            }
        }
        if let Some(exited) = self.exited_at
            && self.destroy.is_none()
            && !self.unrecorded
            && now.saturating_duration_since(exited) >= self.linger
        {
            log(format_args!(
                "no destroy within {:?} of the exit: leaving the exit record and exiting",
                self.linger
            ));
            self.done = true;
        }
    }

    /// The earliest timer, if any.
    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.kill_at {
            consider(t);
        }
        if let Some((_, t)) = self.draining {
            consider(t);
        }
        for at in self.outputs.iter().flatten().filter_map(|o| o.wake) {
            consider(at);
        }
        if let Some(d) = &self.destroy
            && self.exit.is_none()
        {
            consider(d.deadline);
        }
        if let Some(exited) = self.exited_at
            && self.destroy.is_none()
            && !self.unrecorded
        {
            consider(exited + self.linger);
        }
        for conn in &self.conns {
            match conn.wait {
                Some(PendingWait::Until(t)) => consider(t),
                Some(PendingWait::Forever) => {}
                None => consider(conn.last_active + IDLE_TIMEOUT),
            }
        }
        next
    }

    #[unsafe(link_section = ".text.hot.execdriver_idle")]
    fn drop_finished_connections(&mut self) {
        // Checked first: `retain` is not inlined, and an idle loop calls this with none done.
        if self.conns.iter().any(Connection::is_done) {
            self.conns.retain(|c| !c.is_done());
        }
    }
}

/// Which sources a poll found ready.
struct Ready2 {
    signal: bool,
    listener: bool,
    task: bool,
    outputs: Vec<bool>,
    conns: Vec<bool>,
}

#[unsafe(link_section = ".text.hot.execdriver_idle")]
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    }
}

/// Empties what waits in `pipe`: into `sink` by splice when there is one (no copy, and one
/// call takes a whole pipe-full), else read into `buf` and thrown away. At most about a
/// pipe-full, since the task may be refilling it as fast. The bytes dropped, and whether the
/// pipe reached its end.
fn discard(
    pipe: &File,
    sink: Option<&File>,
    buf: &mut [u8],
    terminal: bool,
) -> io::Result<(u64, bool)> {
    let mut dropped = 0u64;
    let mut calls = match sink {
        Some(_) => 1,
        None => PIPE_SIZE.div_ceil(buf.len().max(1)),
    };
    while calls > 0 {
        let n = match sink {
            Some(sink) => rustix::pipe::splice(
                pipe,
                None,
                sink,
                None,
                PIPE_SIZE,
                rustix::pipe::SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from),
            None => (&*pipe).read(buf),
        };
        match n {
            Ok(0) => return Ok((dropped, true)),
            Ok(n) => {
                dropped = dropped.saturating_add(n as u64);
                calls -= 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if terminal && e.raw_os_error() == Some(libc::EIO) => {
                return Ok((dropped, true));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((dropped, false))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd.as_fd())?;
    rustix::fs::fcntl_setfl(fd.as_fd(), flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Why the state dir must stay, if it must: it holds the record a later cleanup needs to
/// find the task's cgroup, so it goes only once the cgroup is verifiably gone, both as this
/// supervisor knows it (`remaining`) and as the record resolves (`recorded`).
fn keep_state_for(
    remaining: Option<&str>,
    recorded: Result<Option<String>, String>,
) -> Option<String> {
    let still = |name: &str| {
        format!("task cgroup {name} still exists, and its record is needed to remove it later")
    };
    match (remaining, recorded) {
        (Some(name), _) => Some(still(name)),
        (None, Ok(Some(name))) => Some(still(&name)),
        (None, Err(e)) => Some(format!(
            "cannot tell whether the task cgroup is gone ({e}), and its record may be needed"
        )),
        (None, Ok(None)) => None,
    }
}

/// Reaps children other than the task's init that were reparented to us as a subreaper.
fn reap_strays() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_kept_while_the_cgroup_may_remain() {
        assert_eq!(keep_state_for(None, Ok(None)), None);
        let held = keep_state_for(Some("execdriver-t1"), Ok(None)).unwrap_or_default();
        assert!(held.contains("execdriver-t1"), "{held}");
        let recorded = keep_state_for(None, Ok(Some("execdriver-t2".into()))).unwrap_or_default();
        assert!(recorded.contains("execdriver-t2"), "{recorded}");
        let unknown = keep_state_for(None, Err("corrupt record".into())).unwrap_or_default();
        assert!(unknown.contains("corrupt record"), "{unknown}");
    }
}
