//! One client connection of the supervisor's event loop: a non-blocking socket with its
//! input and output buffers, served one request at a time.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::protocol::{ErrorCode, MAX_LINE, Request, Response};

/// A `wait` that has not been answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingWait {
    /// Answer `running` at this instant unless the task exits first.
    Until(Instant),
    /// Answer only when the task exits.
    Forever,
}

/// What reading from a connection produced.
#[derive(Debug)]
pub(super) enum Input {
    /// A request to serve.
    Request(Request),
    /// A line that is not a request: answer it with this error.
    Invalid(Response),
    /// Nothing complete yet.
    Nothing,
}

/// A client of the supervisor.
#[derive(Debug)]
pub(super) struct Connection {
    id: u64,
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The peer closed its end, or the connection failed: drop it once flushed.
    closed: bool,
    /// The connection is dropped once its output is written.
    close_after_write: bool,
    /// A descriptor to pass (`SCM_RIGHTS`) with the next bytes written.
    fd: Option<OwnedFd>,
    /// A `wait` being held open.
    pub wait: Option<PendingWait>,
    /// When it last did something; idle connections are closed.
    pub last_active: Instant,
}

impl Connection {
    /// A connection on an accepted stream.
    pub(super) fn new(id: u64, stream: UnixStream, now: Instant) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            id,
            stream,
            input: Vec::new(),
            output: Vec::new(),
            closed: false,
            close_after_write: false,
            fd: None,
            wait: None,
            last_active: now,
        })
    }

    /// Its id, stable while it lives.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The socket, for polling.
    pub(super) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Whether it has output to write.
    pub(super) fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }

    /// Whether it should be read: not while a request is being served (a `wait` held
    /// open), since requests are answered in order, one at a time.
    pub(super) fn wants_read(&self) -> bool {
        self.wait.is_none() && !self.closed && !self.close_after_write
    }

    /// Whether it is finished with and can be dropped.
    pub(super) fn is_done(&self) -> bool {
        (self.closed || self.close_after_write) && self.output.is_empty()
    }

    /// Reads what the socket has; marks the connection closed on EOF or error.
    pub(super) fn fill(&mut self, now: Instant) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    self.last_active = now;
                    if self.input.len() as u64 > MAX_LINE {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// The next complete request line, if there is one.
    pub(super) fn next_input(&mut self) -> Input {
        if !self.wants_read() && !self.closed {
            return Input::Nothing;
        }
        let Some(end) = self.input.iter().position(|b| *b == b'\n') else {
            if self.input.len() as u64 > MAX_LINE {
                // The line would never end within bounds: answer once and hang up.
                self.input.clear();
                self.close_after_write = true;
                return Input::Invalid(Response::error(
                    ErrorCode::BadRequest,
                    format!("bad request: line longer than {MAX_LINE} bytes"),
                ));
            }
            return Input::Nothing;
        };
        let line: Vec<u8> = self.input.drain(..=end).collect();
        let line = &line[..line.len() - 1];
        match std::str::from_utf8(line)
            .map_err(|_| "line is not utf-8".to_owned())
            .and_then(|text| serde_json::from_str::<Request>(text).map_err(|e| e.to_string()))
        {
            Ok(request) => Input::Request(request),
            Err(e) => Input::Invalid(Response::error(
                ErrorCode::BadRequest,
                format!("bad request: {e}"),
            )),
        }
    }

    /// Queues `response` as one line.
    pub(super) fn answer(&mut self, response: &Response) {
        match serde_json::to_vec(response) {
            Ok(mut text) => {
                text.push(b'\n');
                self.output.extend_from_slice(&text);
            }
            // Our own response types always serialize; a failure ends the connection.
            Err(_) => self.closed = true,
        }
    }

    /// Queues `response` as one line, with `fd` passed along with its bytes.
    pub(super) fn answer_with_fd(&mut self, response: &Response, fd: OwnedFd) {
        self.answer(response);
        self.fd = Some(fd);
    }

    /// Hangs up once the output is written.
    pub(super) fn close_after_write(&mut self) {
        self.close_after_write = true;
    }

    /// Writes what the socket takes.
    pub(super) fn flush(&mut self, now: Instant) {
        while !self.output.is_empty() {
            let written = match self.fd.take() {
                Some(fd) => self.write_with_fd(fd),
                None => self.stream.write(&self.output),
            };
            match written {
                Ok(0) => {
                    self.closed = true;
                    self.output.clear();
                    return;
                }
                Ok(n) => {
                    self.output.drain(..n);
                    self.last_active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The peer is gone: nobody to write to (a descriptor still held is
                    // closed with the connection).
                    self.closed = true;
                    self.output.clear();
                    return;
                }
            }
        }
    }

    /// One write of the output with `fd` attached; the descriptor is kept for the next try
    /// when nothing could be written.
    fn write_with_fd(&mut self, fd: OwnedFd) -> io::Result<usize> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let fds = [fd.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.stream.as_raw_fd(),
            &[io::IoSlice::new(&self.output)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(n) => Ok(n),
            Err(e) => {
                self.fd = Some(fd);
                Err(io::Error::from(e))
            }
        }
    }
}
