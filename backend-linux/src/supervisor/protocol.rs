//! The supervisor's socket protocol: one JSON request per line, one JSON response per line.
//!
//! ```text
//! {"op":"hello"}                               -> {"hello":{"task_id":..,"supervisor":..,"task":..,"version":..}}
//! {"op":"wait","timeout_ms":1000}              -> {"exited":{"exit_code":0,..}} | {"running":true}
//! {"op":"signal","signal":15}                  -> {"ok":true}
//! {"op":"shutdown","signal":2,"grace_ms":5000} -> {"ok":true}   (signal now, kill all after grace)
//! {"op":"kill"}                                -> {"ok":true}   (kill everything in the cgroup)
//! {"op":"destroy"}                             -> {"ok":true}   (kill, remove cgroup and state, exit)
//! {"op":"stats"}                               -> {"stats":{..}}
//! any failure                                  -> {"error":"..."}
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use execdriver_core::{ExitStatus, ProcessIdentity, Signal, TaskStats};
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
    /// Send `signal`, then kill everything in the cgroup if the task still runs after the grace.
    Shutdown {
        /// The graceful signal.
        signal: Signal,
        /// How long the task gets, in milliseconds.
        grace_ms: u64,
    },
    /// Kill everything in the task's cgroup now.
    Kill,
    /// Kill everything, remove the cgroup and the state dir, then exit.
    Destroy,
    /// Resource use of the task's cgroup.
    Stats,
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
    Error(String),
}

/// The one line a supervisor writes to the agent once the task runs, or when it cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Ready {
    /// The task runs.
    Ready {
        /// The supervisor (the daemonized process, not the one the agent started).
        supervisor: ProcessIdentity,
        /// The task's main process.
        task: ProcessIdentity,
        /// The task's cgroup name under the parent.
        cgroup: String,
    },
    /// The task could not be started; the supervisor cleaned up what it had created.
    Error(String),
}

/// Why a call to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nobody listens on the socket (absent file, refused connection).
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
    /// No answer within the time allowed.
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
    /// True when the supervisor is gone rather than slow or confused.
    pub fn is_gone(&self) -> bool {
        match self {
            CallError::Unreachable { .. } | CallError::Closed => true,
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
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, CallError> {
        let stream = UnixStream::connect(path).map_err(|source| CallError::Unreachable {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` and reads its answer, waiting at most `timeout` (forever if `None`).
    pub fn call(
        &mut self,
        request: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, CallError> {
        let stream = self.reader.get_mut();
        // A zero timeout means "none" to the socket API: keep at least a millisecond.
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        stream.set_read_timeout(timeout).map_err(CallError::Io)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(CallError::Io)?;
        write_line(stream, request).map_err(CallError::Io)?;
        match read_line(&mut self.reader) {
            Ok(Some(line)) => serde_json::from_str(&line)
                .map_err(|e| CallError::Protocol(format!("{e} in {line:?}"))),
            Ok(None) => Err(CallError::Closed),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(CallError::Closed),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(CallError::Timeout(timeout.unwrap_or_default()))
            }
            Err(e) => Err(CallError::Io(e)),
        }
    }
}

/// Connects, sends one request and reads its answer.
pub fn call_once(
    socket: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Response, CallError> {
    Client::connect(socket)?.call(request, timeout)
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
                    signal: Signal::SIGINT,
                    grace_ms: 10,
                },
                r#"{"op":"shutdown","signal":2,"grace_ms":10}"#,
            ),
            (Request::Kill, r#"{"op":"kill"}"#),
            (Request::Destroy, r#"{"op":"destroy"}"#),
            (Request::Stats, r#"{"op":"stats"}"#),
        ];
        for (request, text) in cases {
            assert_eq!(serde_json::to_string(&request).ok().as_deref(), Some(text));
            assert_eq!(serde_json::from_str::<Request>(text).ok(), Some(request));
        }
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"wait"}"#).ok(),
            Some(Request::Wait { timeout_ms: None })
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
            serde_json::to_string(&Response::Error("no".into()))
                .ok()
                .as_deref(),
            Some(r#"{"error":"no"}"#)
        );
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
