//! Attaching to a terminal of a task's (`exec -t`, `run -t`): our terminal in raw mode while
//! attached, our window size followed, our stdin copied in.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread;

use rustix::termios::{self, OptionalActions, Termios};

use super::{Result, errln, fail};

/// Our terminal's settings before raw mode, put back on drop.
pub(super) struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Raw mode on `fd` if it is a terminal; `None` if it is not.
    pub(super) fn enter(fd: BorrowedFd<'a>) -> Result<Option<Self>> {
        if !termios::isatty(fd) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(fd).map_err(|e| fail!("reading the terminal mode: {e}"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        // At once, not flushing: what was typed ahead of the attach is the task's input.
        termios::tcsetattr(fd, OptionalActions::Now, &raw)
            .map_err(|e| fail!("setting the terminal to raw mode: {e}"))?;
        Ok(Some(Self { fd, saved }))
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

/// Our window size: of stdin if it is a terminal, else of stdout; `None` when neither is.
pub(super) fn window_size() -> Option<termios::Winsize> {
    termios::tcgetwinsize(io::stdin().as_fd())
        .or_else(|_| termios::tcgetwinsize(io::stdout().as_fd()))
        .ok()
}

/// Copies our window size to the command's or task's terminal.
pub(super) fn copy_window_size(master: BorrowedFd<'_>) {
    if let Some(size) = window_size() {
        let _ = termios::tcsetwinsize(master, size);
    }
}

/// Writes all of `data` to the terminal, waiting while it is full: a task's master comes
/// from its supervisor, which reads it without blocking, so the descriptor is non-blocking.
fn write_all(master: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    while !data.is_empty() {
        match rustix::io::write(master, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [PollFd::new(&master, PollFlags::OUT)];
                match poll(&mut fds, None) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Docker's default detach keys, Ctrl-P Ctrl-Q.
const DETACH: [u8; 2] = [0x10, 0x11];

/// Scans typed input for the detach keys: appends to `out` what goes to the terminal, and
/// says whether the keys were typed (the input after them is not the task's). A Ctrl-P at
/// the end of `input` is held back in `held` until the next input says what it was.
fn split_detach(held: &mut bool, input: &[u8], out: &mut Vec<u8>) -> bool {
    for &byte in input {
        if *held {
            *held = false;
            if byte == DETACH[1] {
                return true;
            }
            out.push(DETACH[0]);
        }
        if byte == DETACH[0] {
            *held = true;
        } else {
            out.push(byte);
        }
    }
    false
}

/// Copies our stdin to the terminal until our stdin ends; then sends the terminal's EOF.
/// With `detach`, Ctrl-P Ctrl-Q typed in it are not passed on: `detach` is called instead
/// and the copying stops.
pub(super) fn pump_input(master: Arc<OwnedFd>, detach: Option<Box<dyn FnOnce() + Send>>) {
    let spawned = thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = [0u8; 8192];
        let mut typed = Vec::with_capacity(buf.len() + 1);
        let mut held = false;
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => {
                    // ^D, as a user at the terminal ends input.
                    let _ = write_all(master.as_fd(), b"\x04");
                    return;
                }
                Ok(n) => {
                    typed.clear();
                    let detached = match &detach {
                        Some(_) => split_detach(&mut held, &buf[..n], &mut typed),
                        None => {
                            typed.extend_from_slice(&buf[..n]);
                            false
                        }
                    };
                    if write_all(master.as_fd(), &typed).is_err() {
                        return;
                    }
                    if detached {
                        if let Some(detach) = detach {
                            detach();
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    if let Err(e) = spawned {
        errln!("execdriver: our stdin will not reach the terminal: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut held = false;
        let mut out = Vec::new();
        for chunk in chunks {
            if split_detach(&mut held, chunk, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn ctrl_p_ctrl_q_detaches_and_anything_else_passes() {
        assert_eq!(split(&[b"ls\r"]), (b"ls\r".to_vec(), false));
        assert_eq!(split(&[b"ab\x10\x11cd"]), (b"ab".to_vec(), true));
        // Split across reads.
        assert_eq!(split(&[b"ab\x10", b"\x11cd"]), (b"ab".to_vec(), true));
        // A Ctrl-P not followed by Ctrl-Q is the task's, as typed.
        assert_eq!(split(&[b"\x10x"]), (b"\x10x".to_vec(), false));
        assert_eq!(split(&[b"\x10\x10\x11"]), (b"\x10".to_vec(), true));
        assert_eq!(split(&[b"\x11"]), (b"\x11".to_vec(), false));
    }
}
