//! The caller's side of an exec'd command's terminal: copying its output out and setting its
//! window size, shared by every face (the CLI, the Nomad plugin).

use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// Copies what `src` (a terminal master or a pipe) gives to `sink` until it is closed (end
/// of file, or EIO: every slave fd is closed), or, once `done` is readable (the command has
/// exited), until nothing more is buffered, so that a background process still holding the
/// terminal does not keep the caller waiting. Stops early when `sink` returns false.
pub fn copy_output(src: BorrowedFd<'_>, done: BorrowedFd<'_>, sink: &mut dyn FnMut(&[u8]) -> bool) {
    let mut buf = [0u8; 8192];
    let mut draining = false;
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [
            PollFd::new(&src, PollFlags::IN),
            PollFd::new(&done, PollFlags::IN),
        ];
        match poll(&mut fds, draining.then_some(&now)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        if fds[1].revents().contains(PollFlags::IN) {
            draining = true;
        }
        if fds[0].revents().is_empty() {
            if draining {
                return;
            }
            continue;
        }
        match rustix::io::read(src, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !sink(&buf[..n]) {
                    return;
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => return,
        }
    }
}

/// Sets the window size of the terminal whose master is `master`.
pub fn set_window_size(master: impl AsFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(master, size)?)
}
