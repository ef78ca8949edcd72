//! The supervisor protocol: the one thing the agent side and the supervisor share about
//! talking. One JSON request per line, one JSON response per line, over the unix socket in
//! the task's state dir; the supervisor also writes its start reports ([`Ready`]) as lines
//! on the pipe the agent reads.
//!
//! ```text
//! {"op":"hello"}                               -> {"hello":{"task_id":..,"supervisor":..,"task":..,"version":..}}
//! {"op":"wait","timeout_ms":1000}              -> {"exited":{"exit_code":0,..}} | {"running":true}
//! {"op":"signal","signal":15}                  -> {"ok":true}
//! {"op":"shutdown","signal":2,"grace_ms":5000} -> {"ok":true}   (signal, kill the cgroup after the grace)
//! {"op":"kill","budget_ms":400}                -> {"ok":true}   (kill everything in the cgroup)
//! {"op":"destroy"}                             -> {"ok":true}   (kill, remove cgroup and state, exit)
//! {"op":"release"}                             -> {"ok":true}   (after the exit: keep the records, exit)
//! {"op":"stats"}                               -> {"stats":{..}}
//! {"op":"terminal"}                            -> {"ok":true} + the terminal's master (SCM_RIGHTS)
//! any failure                                  -> {"error":{"code":"cgroup","message":"..."}}
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use execdriver_core::{ExitStatus, ProcessIdentity, Signal, SpawnStep, TaskStats};
use serde::{Deserialize, Serialize};

/// Longest line either side reads: far above any real message, low enough to bound memory.
pub const MAX_LINE: u64 = 64 * 1024;

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Who are you?
    Hello,
    /// Block until the task exits or `timeout_ms` passes (forever if absent or null).
    Wait {
        /// How long to wait, in milliseconds.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Send a signal to the task.
    Signal {
        /// The signal.
        signal: Signal,
    },
    /// Send `signal` (if given), then kill everything in the task's cgroup after `grace_ms`
    /// unless the task has exited by then. The kill then completes even if the agent that
    /// asked dies during the grace period.
    Shutdown {
        /// The graceful signal; absent when the caller already sent it.
        #[serde(default)]
        signal: Option<Signal>,
        /// How long the task gets before everything is killed, in milliseconds.
        grace_ms: u64,
    },
    /// Kill everything in the task's cgroup now, spending at most `budget_ms` on it (the
    /// supervisor's own budget when absent), so the answer comes before the caller gives up.
    Kill {
        /// The most the kill may take, in milliseconds.
        #[serde(default)]
        budget_ms: Option<u64>,
    },
    /// Kill everything, remove the cgroup and the state dir, then exit. What agents before
    /// `release` sent after an exit; still served for them.
    Destroy,
    /// After the exit was collected: leave the state dir (spec, exit record) and the logs
    /// for a later `wait`, `logs` or `rm`, and exit. Refused while the task runs.
    Release,
    /// Resource use of the task's cgroup.
    Stats,
    /// A descriptor of the master side of the task's terminal, passed with the answer's
    /// first byte (`SCM_RIGHTS`).
    Terminal,
}

/// What the supervisor says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The task it supervises.
    pub task_id: String,
    /// The supervisor process.
    pub supervisor: ProcessIdentity,
    /// The task's main process (its init, as seen from the host).
    pub task: ProcessIdentity,
    /// The driver version of the supervisor binary.
    pub version: String,
}

/// A response from the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to `hello`.
    Hello(Hello),
    /// The task has exited (answer to `wait`).
    Exited(ExitStatus),
    /// The task still runs (answer to a `wait` that timed out).
    Running(bool),
    /// The request was carried out.
    Ok(bool),
    /// Answer to `stats` (the timestamp is the caller's to fill in).
    Stats(TaskStats),
    /// The request failed.
    Error(ErrorReply),
}

/// What kind of failure a supervisor reports, so the agent can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was not a protocol message.
    BadRequest,
    /// Too many connections are open: try again later.
    Busy,
    /// The supervisor is leaving after its linger: the exit record holds the result.
    Closing,
    /// The task has exited: there is nothing to measure.
    Exited,
    /// Delivering a signal failed.
    Signal,
    /// A cgroup operation failed (killing, removing, reading stats).
    Cgroup,
    /// Removing the task's state failed.
    State,
    /// The task was started without a terminal.
    NoTerminal,
}

/// The body of [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// The kind.
    pub code: ErrorCode,
    /// What failed, specific.
    pub message: String,
}

impl Response {
    /// An error answer.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorReply {
            code,
            message: message.into(),
        })
    }
}

/// The lines a supervisor writes to the agent on its stdout: first `started` (right after it
/// daemonized, so the agent can kill it if it never reports), then `ready` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Ready {
    /// The daemonized supervisor exists.
    Started {
        /// The supervisor (the daemonized process, not the one the agent started).
        supervisor: ProcessIdentity,
    },
    /// The task runs.
    Ready {
        /// The supervisor (the daemonized process, not the one the agent started).
        supervisor: ProcessIdentity,
        /// The task's main process.
        task: ProcessIdentity,
        /// The task's cgroup name under the parent.
        cgroup: String,
    },
    /// The task could not be started.
    Error {
        /// Why.
        message: String,
        /// The step that failed.
        step: SpawnStep,
        /// The supervisor could not remove everything it created (the task's cgroup): the
        /// agent must clean up by the cgroup record.
        cleanup_needed: bool,
    },
}

/// Why a call to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connect failed (absent socket, refused, permission, out of fds, ...).
    #[error("supervisor socket {path} is not reachable: {source}")]
    Unreachable {
        /// The socket.
        path: String,
        /// The connect error.
        source: io::Error,
    },
    /// The supervisor closed the connection without answering.
    #[error("supervisor closed the connection without answering")]
    Closed,
    /// No connection or no answer within the time allowed.
    #[error("supervisor did not answer within {0:?}")]
    Timeout(Duration),
    /// Reading or writing the socket failed.
    #[error("supervisor connection failed: {0}")]
    Io(io::Error),
    /// The answer was not a protocol message.
    #[error("supervisor sent an invalid answer: {0}")]
    Protocol(String),
}

impl CallError {
    /// True when the error is what a supervisor that is gone looks like: no socket file,
    /// nobody listening, a connection dropped without an answer. Only a hint: a supervisor
    /// that crashed one thread or is exiting after its linger looks the same, so the caller
    /// decides by the supervisor's process (see `platform::liveness`). Every other
    /// failure (EACCES, EMFILE, ENAMETOOLONG, timeouts) says nothing about the supervisor.
    pub fn may_be_gone(&self) -> bool {
        match self {
            CallError::Unreachable { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT | libc::ECONNREFUSED)
            ),
            CallError::Closed => true,
            CallError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            CallError::Timeout(_) | CallError::Protocol(_) => false,
        }
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` on EOF before any byte.
pub fn read_line<R: BufRead>(reader: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader.take(MAX_LINE + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() as u64 > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
        // EOF in the middle of a line: the peer died while writing.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a line",
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not utf-8"))
}

/// Writes `value` as one JSON line.
pub fn write_line<W: Write, T: Serialize>(writer: &mut W, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_vec(value).map_err(io::Error::other)?;
    text.push(b'\n');
    writer.write_all(&text)?;
    writer.flush()
}


/// One connection to a supervisor.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`, giving up at `deadline`.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, CallError> {
        Self::connect_within(path, deadline.saturating_duration_since(Instant::now()))
    }

    /// Connects to the socket at `path`, giving up after `timeout`.
    ///
    /// A blocking connect to a unix socket whose backlog is full blocks until the listener
    /// accepts, which a hung supervisor never does. A non-blocking one fails with EAGAIN
    /// instead (unix sockets never report EINPROGRESS), so it is retried until `timeout`.
    pub fn connect_within(path: &Path, timeout: Duration) -> Result<Self, CallError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
        let unreachable = |source: io::Error| CallError::Unreachable {
            path: path.display().to_string(),
            source,
        };
        let addr = UnixAddr::new(path).map_err(|e| unreachable(e.into()))?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| unreachable(e.into()))?;
        let started = Instant::now();
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    if started.elapsed() >= timeout {
                        return Err(CallError::Timeout(timeout));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(unreachable(e.into())),
            }
        }
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false).map_err(CallError::Io)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// The pid of the process serving the socket (the one that bound it), as the kernel
    /// recorded it at connect time (`SO_PEERCRED`).
    pub fn peer_pid(&self) -> io::Result<i32> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        getsockopt(self.reader.get_ref(), PeerCredentials)
            .map(|cred| cred.pid())
            .map_err(io::Error::from)
    }

    /// Sends `request` and reads its answer, giving up at `deadline`.
    pub fn call(&mut self, request: &Request, deadline: Instant) -> Result<Response, CallError> {
        let timeout = self.send(request, deadline)?;
        match read_line(&mut self.reader) {
            Ok(Some(line)) => parse_response(&line),
            Ok(None) => Err(CallError::Closed),
            Err(e) => Err(read_error(e, timeout)),
        }
    }

    /// As [`Client::call`], for an answer that may come with a descriptor (`SCM_RIGHTS` on
    /// its first byte), which a plain read would discard.
    pub fn call_for_fd(
        &mut self,
        request: &Request,
        deadline: Instant,
    ) -> Result<(Response, Option<OwnedFd>), CallError> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let timeout = self.send(request, deadline)?;
        if !self.reader.buffer().is_empty() {
            return Err(CallError::Protocol(
                "bytes before the answer to a terminal request".to_owned(),
            ));
        }
        let stream = self.reader.get_mut();
        let mut line = Vec::new();
        let mut fd = None;
        let mut chunk = [0u8; 4096];
        while !line.contains(&b'\n') {
            if line.len() as u64 > MAX_LINE {
                return Err(CallError::Protocol(format!(
                    "answer longer than {MAX_LINE} bytes"
                )));
            }
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [io::IoSliceMut::new(&mut chunk)];
            let msg = match recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(read_error(e.into(), timeout)),
            };
            let got = msg.bytes;
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: the kernel just installed this fd in our table for
                            // us; nothing else owns it.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            // Only one is ever sent; any other is closed here.
                            fd.get_or_insert(owned);
                        }
                    }
                }
            }
            if got == 0 {
                return Err(CallError::Closed);
            }
            line.extend_from_slice(&chunk[..got]);
        }
        let end = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
        let text = std::str::from_utf8(&line[..end])
            .map_err(|_| CallError::Protocol("answer is not utf-8".to_owned()))?;
        Ok((parse_response(text)?, fd))
    }

    /// Writes `request`, with the time left until `deadline` as the socket's timeouts; the
    /// read timeout it set.
    fn send(&mut self, request: &Request, deadline: Instant) -> Result<Duration, CallError> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let timeout = left();
        if timeout.is_zero() {
            return Err(CallError::Timeout(timeout));
        }
        let stream = self.reader.get_mut();
        // A zero timeout means "none" to the socket API: keep at least a millisecond.
        let timeout = timeout.max(Duration::from_millis(1));
        stream
            .set_write_timeout(Some(timeout))
            .map_err(CallError::Io)?;
        match write_line(stream, request) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(CallError::Timeout(timeout));
            }
            // A supervisor at its connection bound answers busy before it reads anything,
            // and hangs up: the request then meets a closed socket, but the answer is
            // there to read (and says to come back), so it is read as any other.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => return Err(CallError::Io(e)),
        }
        let timeout = left().max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(timeout))
            .map_err(CallError::Io)?;
        Ok(timeout)
    }
}

fn parse_response(line: &str) -> Result<Response, CallError> {
    serde_json::from_str(line).map_err(|e| CallError::Protocol(format!("{e} in {line:?}")))
}

/// A failed read of an answer as a call error: a timeout, the peer gone, or other.
fn read_error(e: io::Error, timeout: Duration) -> CallError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => CallError::Closed,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::Timeout(timeout),
        _ => CallError::Io(e),
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let cases = [
            (Request::Hello, r#"{"op":"hello"}"#),
            (
                Request::Wait {
                    timeout_ms: Some(5),
                },
                r#"{"op":"wait","timeout_ms":5}"#,
            ),
            (
                Request::Wait { timeout_ms: None },
                r#"{"op":"wait","timeout_ms":null}"#,
            ),
            (
                Request::Signal {
                    signal: Signal::SIGTERM,
                },
                r#"{"op":"signal","signal":15}"#,
            ),
            (
                Request::Shutdown {
                    signal: Some(Signal::SIGINT),
                    grace_ms: 5000,
                },
                r#"{"op":"shutdown","signal":2,"grace_ms":5000}"#,
            ),
            (
                Request::Kill {
                    budget_ms: Some(400),
                },
                r#"{"op":"kill","budget_ms":400}"#,
            ),
            (Request::Destroy, r#"{"op":"destroy"}"#),
            (Request::Release, r#"{"op":"release"}"#),
            (Request::Stats, r#"{"op":"stats"}"#),
            (Request::Terminal, r#"{"op":"terminal"}"#),
        ];
        for (request, text) in cases {
            assert_eq!(serde_json::to_string(&request).ok().as_deref(), Some(text));
            assert_eq!(serde_json::from_str::<Request>(text).ok(), Some(request));
        }
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"wait"}"#).ok(),
            Some(Request::Wait { timeout_ms: None })
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"kill"}"#).ok(),
            Some(Request::Kill { budget_ms: None })
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"wait","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"signal","signal":0}"#).is_err());
    }

    #[test]
    fn responses_have_the_documented_shape() {
        assert_eq!(
            serde_json::to_string(&Response::Running(true))
                .ok()
                .as_deref(),
            Some(r#"{"running":true}"#)
        );
        assert_eq!(
            serde_json::to_string(&Response::Exited(ExitStatus::code(3)))
                .ok()
                .as_deref(),
            Some(r#"{"exited":{"exit_code":3,"signal":null,"oom_killed":false}}"#)
        );
        assert_eq!(
            serde_json::to_string(&Response::error(ErrorCode::Busy, "no"))
                .ok()
                .as_deref(),
            Some(r#"{"error":{"code":"busy","message":"no"}}"#)
        );
    }

    /// The busy answer of a supervisor at its bound reaches the client even when the
    /// supervisor hung up before the request was written.
    #[test]
    fn an_answer_sent_before_a_hang_up_is_read_after_the_request_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let mut client = Client::connect(&path, Instant::now() + Duration::from_secs(5))
            .expect("connect");
        let (mut stream, _) = listener.accept().expect("accept");
        write_line(
            &mut stream,
            &Response::error(ErrorCode::Busy, "the supervisor serves 64 connections already"),
        )
        .expect("answer");
        drop(stream);
        let answer = client
            .call(&Request::Stats, Instant::now() + Duration::from_secs(5))
            .expect("the busy answer");
        assert!(
            matches!(&answer, Response::Error(reply) if reply.code == ErrorCode::Busy),
            "{answer:?}"
        );
        // And a hang-up without an answer is still the peer gone.
        let mut client = Client::connect(&path, Instant::now() + Duration::from_secs(5))
            .expect("connect");
        drop(listener.accept().expect("accept"));
        let err = client
            .call(&Request::Stats, Instant::now() + Duration::from_secs(5))
            .expect_err("no answer");
        assert!(matches!(err, CallError::Closed), "{err:?}");
    }

    #[test]
    fn connect_to_a_full_backlog_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        // Never accepts: a hung supervisor as the kernel sees it. A backlog of 1 fills fast.
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
        };
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new(&path).expect("address"),
        )
        .expect("bind");
        listen(&listener, Backlog::new(1).expect("backlog")).expect("listen");
        // Fill the backlog: a connect that can be queued succeeds at once, so the first
        // timeout (however slow the machine) means the queue is full.
        let mut held = Vec::new();
        let full =
            (0..64).any(
                |_| match Client::connect_within(&path, Duration::from_millis(50)) {
                    Ok(client) => {
                        held.push(client);
                        false
                    }
                    Err(CallError::Timeout(_)) => true,
                    Err(e) => panic!("unexpected connect error: {e}"),
                },
            );
        assert!(
            full,
            "the backlog never filled after {} connections",
            held.len()
        );
        // The claim: a connect to the full backlog gives up after its timeout instead of
        // blocking forever. Run in a thread so that a blocking connect fails this test within
        // a generous bound instead of hanging it; the bound is no timing claim.
        let timeout = Duration::from_millis(200);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let path = path.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let result = Client::connect_within(&path, timeout);
                let _ = tx.send((result.map(|_| ()), started.elapsed()));
            })
        };
        let (result, elapsed) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("connect to a full backlog still blocked after 60 s");
        worker.join().expect("connect thread");
        assert!(
            matches!(result, Err(CallError::Timeout(t)) if t == timeout),
            "{result:?}"
        );
        assert!(
            elapsed >= timeout,
            "gave up after {elapsed:?}, before {timeout:?}"
        );
        drop(held);
    }

    #[test]
    fn only_absent_or_refused_sockets_may_mean_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let soon = Instant::now() + Duration::from_secs(5);
        let absent = Client::connect(&dir.path().join("absent.sock"), soon).expect_err("absent");
        assert!(absent.may_be_gone(), "{absent}");
        let long = dir.path().join("x".repeat(200));
        let too_long = Client::connect(&long, soon).expect_err("too long");
        assert!(!too_long.may_be_gone(), "{too_long}");
        assert!(CallError::Closed.may_be_gone());
        assert!(!CallError::Timeout(Duration::from_secs(1)).may_be_gone());
    }

    #[test]
    fn lines_are_bounded() {
        let long = vec![b'a'; MAX_LINE as usize + 10];
        let mut reader = io::Cursor::new(long);
        assert!(read_line(&mut reader).is_err());
        let mut reader = io::Cursor::new(b"abc\ndef".to_vec());
        assert_eq!(
            read_line(&mut reader).ok().flatten().as_deref(),
            Some("abc")
        );
        assert_eq!(
            read_line(&mut reader).map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::UnexpectedEof)
        );
        let mut reader = io::Cursor::new(Vec::new());
        assert_eq!(read_line(&mut reader).ok(), Some(None));
    }
}
