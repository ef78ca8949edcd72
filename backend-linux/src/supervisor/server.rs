//! The supervisor once the task runs: the waiter that records the exit, and the socket server.
//!
//! Shared state is one mutex plus a condvar: `exit` is set only after the attempt to write
//! `exit.json`, so a `wait` answered with a result normally finds it on disk too.
//!
//! When writing `exit.json` fails (full disk, I/O error), waits are still answered with the
//! status: the task has exited, and withholding its result would only block the agent. The
//! failure goes to the supervisor log, and the supervisor then never lingers out (it stays
//! until a `destroy`), because with no record on disk it is the only holder of the result.
//! If it dies before being collected, a reattach finds neither it nor a record and reports
//! the task lost; the cleanup by cgroup still runs, only the exit code is gone.

use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use execdriver_core::{ExitStatus, Signal};

use crate::cgroups::TaskCgroup;
use crate::isolation::LaunchedTask;
use crate::kill;
use crate::state::StatePaths;

use super::exit_record;
use super::protocol::{self, Hello, Request, Response};
use super::{DESTROY_WAIT, log};

/// How long the waiter waits for the log pumps to drain after the task died.
const PUMP_DRAIN: Duration = Duration::from_secs(5);
/// Stack size of the supervisor's threads: they parse small JSON lines and copy pipes.
pub(super) const THREAD_STACK: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Status {
    /// Set once the task has exited and `exit.json` was written (or failed to be).
    exit: Option<ExitStatus>,
    /// `exit.json` could not be written: this process is the only holder of the result, so
    /// it does not linger out; it stays until a `destroy` collects it.
    unrecorded: bool,
    /// A `destroy` is under way: the linger timer no longer applies.
    destroying: bool,
    /// The linger expired and the supervisor is exiting: `destroy` is refused.
    closing: bool,
    /// Everything is torn down: the main thread exits the process.
    done: bool,
}

/// The supervisor's shared state.
#[derive(Debug)]
pub(super) struct Supervisor {
    hello: Hello,
    task: LaunchedTask,
    cgroup: Mutex<Option<TaskCgroup>>,
    status: Mutex<Status>,
    changed: Condvar,
    paths: StatePaths,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few assignments or one cgroup call: a panic in one cannot
    // leave the data half-updated, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Supervisor {
    /// The state of a supervisor whose task was just launched.
    pub(super) fn new(
        hello: Hello,
        task: LaunchedTask,
        cgroup: TaskCgroup,
        paths: StatePaths,
    ) -> Self {
        Self {
            hello,
            task,
            cgroup: Mutex::new(Some(cgroup)),
            status: Mutex::new(Status::default()),
            changed: Condvar::new(),
            paths,
        }
    }

    /// Waits for the task, then records its exit and tears down its cgroup.
    /// `pumps` yields once per log pump that reached EOF.
    pub(super) fn run_waiter(&self, pumps: Receiver<()>, pump_count: usize) {
        let mut status = match self.task.wait() {
            Ok(status) => status,
            Err(e) => {
                log(format_args!("waiting for the task failed: {e}"));
                ExitStatus::code(-1)
            }
        };
        {
            let cgroup = lock(&self.cgroup);
            if let Some(cgroup) = cgroup.as_ref() {
                match cgroup.oom_killed() {
                    Ok(oom) => status.oom_killed |= oom,
                    Err(e) => log(format_args!("reading the oom state failed: {e}")),
                }
                // The init is gone, but a process that escaped its namespace's teardown (or
                // one the kernel has not reaped yet) must not outlive the task.
                if let Err(e) = cgroup.kill_all() {
                    log(format_args!("sweeping the task cgroup failed: {e}"));
                }
            }
        }
        // Every writer of the pipes is dead now: the pumps reach EOF. Waiting for them
        // means a reader who sees the exit also sees the last line of output.
        let deadline = Instant::now().checked_add(PUMP_DRAIN);
        for _ in 0..pump_count {
            let left = deadline.map_or(PUMP_DRAIN, |d| d.saturating_duration_since(Instant::now()));
            if pumps.recv_timeout(left).is_err() {
                log("log pumps did not finish in time; the log may miss its tail");
                break;
            }
        }
        let record = exit_record::ExitRecord {
            status,
            supervisor: self.hello.supervisor,
            task: self.hello.task,
        };
        let recorded = exit_record::write(&self.paths.exit_record(), &record);
        // Published before anything else can go wrong: every waiter is blocked on this.
        {
            let mut shared = lock(&self.status);
            shared.exit = Some(status);
            shared.unrecorded = recorded.is_err();
        }
        self.changed.notify_all();
        if let Err(e) = recorded {
            log(format_args!(
                "{e}; waits are answered from memory and the supervisor stays until destroyed"
            ));
        }
        log(format_args!(
            "task exited: code {}, signal {:?}, oom killed {}",
            status.exit_code, status.signal, status.oom_killed
        ));
        if let Err(e) = self.destroy_cgroup() {
            log(format_args!("{e}"));
        }
        reap_strays();
    }

    /// Serves the socket until the process exits.
    pub(super) fn serve(self: &Arc<Self>, listener: UnixListener) {
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => {
                    let me = Arc::clone(self);
                    let spawned = thread::Builder::new()
                        .name("conn".into())
                        .stack_size(THREAD_STACK)
                        .spawn(move || me.serve_connection(stream));
                    if let Err(e) = spawned {
                        log(format_args!("cannot start a connection thread: {e}"));
                    }
                }
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn serve_connection(self: &Arc<Self>, stream: UnixStream) {
        let mut writer = match stream.try_clone() {
            Ok(w) => w,
            Err(e) => {
                log(format_args!("cannot clone a connection: {e}"));
                return;
            }
        };
        let mut reader = BufReader::new(stream);
        loop {
            let line = match protocol::read_line(&mut reader) {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) => {
                    let _ = protocol::write_line(
                        &mut writer,
                        &Response::Error(format!("bad request: {e}")),
                    );
                    return;
                }
            };
            let request = match serde_json::from_str::<Request>(&line) {
                Ok(request) => request,
                Err(e) => {
                    let reply = Response::Error(format!("bad request: {e}"));
                    if protocol::write_line(&mut writer, &reply).is_err() {
                        return;
                    }
                    continue;
                }
            };
            let destroy = request == Request::Destroy;
            let reply = self.handle(request);
            let written = protocol::write_line(&mut writer, &reply);
            let _ = writer.flush();
            if destroy {
                // The answer is in the socket buffer: the agent reads it even after we exit.
                self.finish();
                return;
            }
            if written.is_err() {
                return;
            }
        }
    }

    fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Hello => Response::Hello(self.hello.clone()),
            Request::Wait { timeout_ms } => {
                match self.wait_exit(timeout_ms.map(Duration::from_millis)) {
                    Some(status) => Response::Exited(status),
                    None => Response::Running(true),
                }
            }
            Request::Signal { signal } => self.signal(signal),
            Request::Shutdown { signal, grace_ms } => {
                self.shutdown(signal, Duration::from_millis(grace_ms))
            }
            Request::Kill => match self.kill_all() {
                Ok(()) => Response::Ok(true),
                Err(e) => Response::Error(e),
            },
            Request::Destroy => self.destroy(),
            Request::Stats => match lock(&self.cgroup).as_ref() {
                Some(cgroup) => match cgroup.stats() {
                    Ok(stats) => Response::Stats(stats),
                    Err(e) => Response::Error(format!("reading stats failed: {e}")),
                },
                None => {
                    Response::Error(format!("task {} has exited: no stats", self.hello.task_id))
                }
            },
        }
    }

    /// The exit status once known, waiting up to `timeout` (forever if `None`).
    pub(super) fn wait_exit(&self, timeout: Option<Duration>) -> Option<ExitStatus> {
        let status = lock(&self.status);
        let status = match timeout {
            None => self
                .changed
                .wait_while(status, |s| s.exit.is_none())
                .unwrap_or_else(PoisonError::into_inner),
            Some(timeout) => {
                self.changed
                    .wait_timeout_while(status, timeout, |s| s.exit.is_none())
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        status.exit
    }

    fn signal(&self, signal: Signal) -> Response {
        if lock(&self.status).exit.is_some() {
            // The task is gone: there is nothing to deliver to, and nothing went wrong.
            return Response::Ok(true);
        }
        match self.task.signal(signal) {
            Ok(()) => Response::Ok(true),
            Err(e) => Response::Error(format!("sending {signal} to the task failed: {e}")),
        }
    }

    /// Signals the task, then kills its cgroup after `grace` unless it exits first. The grace
    /// runs here, in the supervisor, so the kill completes whatever happens to the agent.
    fn shutdown(self: &Arc<Self>, signal: Option<Signal>, grace: Duration) -> Response {
        if let Some(signal) = signal
            && let Response::Error(e) = self.signal(signal)
        {
            return Response::Error(e);
        }
        let me = Arc::clone(self);
        let armed = thread::Builder::new()
            .name("shutdown".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                if me.wait_exit(Some(grace)).is_some() {
                    return;
                }
                log(format_args!(
                    "the task outlived its {grace:?} kill grace: killing its cgroup"
                ));
                if let Err(e) = me.kill_all() {
                    log(e);
                }
            });
        match armed {
            Ok(_) => Response::Ok(true),
            Err(e) => Response::Error(format!("cannot arm the kill grace timer: {e}")),
        }
    }

    /// Kills every process in the task's cgroup; nothing to do once the cgroup is gone.
    pub(super) fn kill_all(&self) -> Result<(), String> {
        match lock(&self.cgroup).as_ref() {
            Some(cgroup) => cgroup
                .kill_all()
                .map_err(|e| format!("killing the task's cgroup failed: {e}")),
            None => Ok(()),
        }
    }

    fn destroy_cgroup(&self) -> Result<(), String> {
        // Destroyed under the lock: a concurrent caller waits, then finds it gone. It is
        // forgotten only once removed, so a failed removal (after the exit, say) is still
        // known to a later `destroy`, which then keeps the state dir and reports it.
        let mut cgroup = lock(&self.cgroup);
        let Some(cg) = cgroup.as_ref() else {
            return Ok(());
        };
        cg.destroy()
            .map_err(|e| format!("destroying cgroup {} failed: {e}", cg.name()))?;
        *cgroup = None;
        // A record left behind would let a later cleanup act on a new cgroup of the same
        // name that another data dir sharing the parent may create.
        crate::state::remove_cgroup_record(&self.paths)
            .map_err(|e| format!("cgroup removed, but its record stays: {e}"))
    }

    /// Kills the task, removes its cgroup and state dir. The caller then ends the process.
    pub(super) fn destroy(&self) -> Response {
        {
            let mut status = lock(&self.status);
            if status.closing {
                return Response::Error("supervisor is exiting after its linger period".into());
            }
            status.destroying = true;
        }
        self.changed.notify_all();
        let mut failures = Vec::new();
        if lock(&self.status).exit.is_none() {
            if let Err(e) = self.kill_all() {
                failures.push(e);
            }
            if self.wait_exit(Some(DESTROY_WAIT)).is_none() {
                failures.push(format!(
                    "task did not exit within {DESTROY_WAIT:?} of killing its cgroup"
                ));
            }
        }
        if let Err(e) = self.destroy_cgroup() {
            failures.push(e);
        }
        let remaining = lock(&self.cgroup).as_ref().map(|cg| cg.name().to_owned());
        let recorded = kill::recorded_cgroup(&self.paths, &self.hello.task_id)
            .map(|cg| cg.map(|cg| cg.name().to_owned()))
            .map_err(|e| e.to_string());
        match keep_state_for(remaining.as_deref(), recorded) {
            Some(why) => failures.push(format!(
                "kept state dir {}: {why}",
                self.paths.dir.display()
            )),
            None => match std::fs::remove_dir_all(&self.paths.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!(
                    "removing state dir {} failed: {e}",
                    self.paths.dir.display()
                )),
            },
        }
        if failures.is_empty() {
            log("destroyed: cgroup and state dir removed");
            Response::Ok(true)
        } else {
            let message = failures.join("; ");
            log(format_args!("destroy: {message}"));
            Response::Error(message)
        }
    }

    fn finish(&self) {
        lock(&self.status).done = true;
        self.changed.notify_all();
    }

    /// Blocks until a `destroy` finished, or until the task has exited and `linger` passed
    /// without one; in that case removes the socket and leaves the exit record for a reattach.
    pub(super) fn wait_for_end(&self, linger: Duration) {
        let mut status = lock(&self.status);
        loop {
            if status.done {
                return;
            }
            if status.exit.is_some() && !status.destroying && !status.unrecorded {
                let (next, timeout) = self
                    .changed
                    .wait_timeout_while(status, linger, |s| !s.done && !s.destroying)
                    .unwrap_or_else(PoisonError::into_inner);
                status = next;
                if timeout.timed_out() {
                    status.closing = true;
                    drop(status);
                    log(format_args!(
                        "no destroy within {linger:?} of the exit: leaving the exit record and exiting"
                    ));
                    let _ = std::fs::remove_file(self.paths.socket());
                    return;
                }
                continue;
            }
            status = self
                .changed
                .wait(status)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
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
