//! Talking to one supervisor: a fresh connection per request, so calls from many threads
//! never share one, checked against the handle's supervisor, answered by a deadline.
//!
//! A request that gets no answer is settled by [`liveness::settle`]; an error answer is
//! turned into the [`PlatformError`] of its kind.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use execdriver_core::{PlatformError, ProcessIdentity, Refusal};

use super::liveness::{self, Liveness};
use crate::protocol::{CallError, Client, ErrorCode, ErrorReply, Request, Response};
use crate::state::StatePaths;

/// A task's supervisor as the platform knows it: where to reach it, what it is, and where
/// its task's logs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConn {
    task_id: String,
    paths: StatePaths,
    process: ProcessIdentity,
    task: ProcessIdentity,
    logs: Option<LogLocation>,
}

/// Where a task's log files are, as its spec says: kept with the connection so they stay
/// readable once the task is collected and its state (with the spec) is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLocation {
    pub dir: std::path::PathBuf,
    pub task_name: String,
    pub rotation: execdriver_core::LogRotation,
}

impl LogLocation {
    pub(crate) fn of(spec: &execdriver_core::TaskSpec) -> Self {
        Self {
            dir: spec.alloc_dir.join("logs"),
            task_name: spec.task_name.clone(),
            rotation: spec.logs.clone(),
        }
    }
}

impl SupervisorConn {
    pub(crate) fn new(
        task_id: String,
        paths: StatePaths,
        process: ProcessIdentity,
        task: ProcessIdentity,
        logs: Option<LogLocation>,
    ) -> Self {
        Self {
            task_id,
            paths,
            process,
            task,
            logs,
        }
    }

    pub(crate) fn logs(&self) -> Option<&LogLocation> {
        self.logs.as_ref()
    }

    /// The task it supervises.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The supervisor process.
    pub fn process(&self) -> ProcessIdentity {
        self.process
    }
}

/// A request that got no answer, or could not be made.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// What the supervisor turned out to be.
    Settled(Liveness),
    /// The request could not be made for a reason that says nothing about the supervisor
    /// (out of fds, permission).
    Failed(PlatformError),
}

impl Unanswered {
    /// As a platform error, for callers with no use for an exit.
    pub(crate) fn into_error(self, task_id: &str) -> PlatformError {
        match self {
            Unanswered::Settled(Liveness::Exited(status)) => PlatformError::other(format!(
                "task {task_id} has exited (code {})",
                status.exit_code
            )),
            Unanswered::Settled(Liveness::Unresponsive(why)) => PlatformError::unresponsive(why),
            Unanswered::Settled(Liveness::Gone(why)) => PlatformError::gone(why),
            Unanswered::Settled(Liveness::NotOurs(why)) => {
                PlatformError::refused(Refusal::Reused, why)
            }
            Unanswered::Failed(e) => e,
        }
    }
}

/// Sends one request to `conn`'s supervisor and reads the answer, by `deadline`.
pub(crate) fn call(
    conn: &SupervisorConn,
    request: &Request,
    deadline: Instant,
) -> Result<Response, Unanswered> {
    call_with(conn, request, deadline, |client| {
        client.call(request, deadline).map(|r| (r, ()))
    })
    .map(|(response, ())| response)
}

/// As [`call`], for the answer that comes with a descriptor (the terminal's).
pub(crate) fn call_for_fd(
    conn: &SupervisorConn,
    request: &Request,
    deadline: Instant,
) -> Result<(Response, Option<OwnedFd>), Unanswered> {
    call_with(conn, request, deadline, |client| {
        client.call_for_fd(request, deadline)
    })
}

fn call_with<T>(
    conn: &SupervisorConn,
    request: &Request,
    deadline: Instant,
    exchange: impl Fn(&mut Client) -> Result<(Response, T), CallError>,
) -> Result<(Response, T), Unanswered> {
    let settle = |e: CallError| unanswered(conn, e, deadline);
    // A supervisor at its connection bound says busy before it reads the request, and hangs
    // up; slots come free as other clients leave, so the call is tried again until its
    // deadline. (A destroy's busy means another destroy runs: that one is the answer.)
    let retry_busy = !matches!(request, Request::Destroy);
    let mut pause = BUSY_RETRY_FIRST;
    loop {
        let mut client = Client::connect(&conn.paths.socket(), deadline).map_err(settle)?;
        check_peer(&client, conn)?;
        let answer = exchange(&mut client).map_err(settle)?;
        let busy = matches!(&answer.0, Response::Error(reply) if reply.code == ErrorCode::Busy);
        if !busy || !retry_busy || Instant::now() + pause >= deadline {
            return Ok(answer);
        }
        drop(client);
        std::thread::sleep(pause);
        pause = (pause * 2).min(BUSY_RETRY_MAX);
    }
}

/// The first pause before a call refused as busy is tried again; it doubles up to the next.
const BUSY_RETRY_FIRST: Duration = Duration::from_millis(5);
/// The longest pause between tries of a busy call.
const BUSY_RETRY_MAX: Duration = Duration::from_millis(100);

fn unanswered(conn: &SupervisorConn, e: CallError, deadline: Instant) -> Unanswered {
    if e.may_be_gone() || matches!(e, CallError::Timeout(_)) {
        Unanswered::Settled(liveness::settle(
            &conn.task_id,
            &conn.process,
            &conn.task,
            &conn.paths,
            &e,
            deadline,
        ))
    } else {
        Unanswered::Failed(PlatformError::other(format!(
            "supervisor {} of task {}: {e}",
            conn.process.pid, conn.task_id
        )))
    }
}

/// Refuses a socket served by another process than the handle's supervisor: after the task
/// was collected and its id reused, a stale handle would otherwise steer the new task.
fn check_peer(client: &Client, conn: &SupervisorConn) -> Result<(), Unanswered> {
    let reused = |served: String| {
        Unanswered::Settled(Liveness::NotOurs(format!(
            "task {}: the socket is served by another supervisor ({served}, not {:?}): the \
             task id was reused; nothing was sent",
            conn.task_id, conn.process
        )))
    };
    let pid = client.peer_pid().map_err(|e| {
        Unanswered::Failed(PlatformError::other(format!(
            "cannot tell who serves the socket of task {}: {e}",
            conn.task_id
        )))
    })?;
    if pid != conn.process.pid {
        return Err(reused(format!("pid {pid}")));
    }
    // Same pid: a recycled pid shows another start time. A process gone since the connect
    // has nothing to answer with, which the call itself then reports.
    match crate::process::identity(pid) {
        Ok(found) if found != conn.process => Err(reused(format!("{found:?}"))),
        _ => Ok(()),
    }
}

/// The platform error for an answer that is not the one `what` expects.
pub(crate) fn unexpected(conn: &SupervisorConn, what: &str, response: Response) -> PlatformError {
    match response {
        Response::Error(reply) => reply_error(conn, what, reply),
        other => PlatformError::other(format!(
            "supervisor of task {} answered {what} with {other:?}",
            conn.task_id
        )),
    }
}

/// The platform error of an error answer, by its code.
fn reply_error(conn: &SupervisorConn, what: &str, reply: ErrorReply) -> PlatformError {
    let message = format!("{what} of task {}: {}", conn.task_id, reply.message);
    match reply.code {
        ErrorCode::Busy => PlatformError::unresponsive(message),
        ErrorCode::Cgroup => PlatformError::cgroup(message),
        ErrorCode::State => {
            PlatformError::io(conn.paths.dir.clone(), std::io::ErrorKind::Other, message)
        }
        ErrorCode::BadRequest
        | ErrorCode::Closing
        | ErrorCode::Exited
        | ErrorCode::Signal
        | ErrorCode::NoTerminal => PlatformError::other(message),
    }
}
