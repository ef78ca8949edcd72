//! ExecTask and ExecTaskStreaming: a command in a running task, over the engine's exec.
//!
//! Output is copied by blocking threads (`execdriver_linux::exec_io::copy_output`) until the
//! command has exited and its pipes or terminal hold nothing more, so a background process
//! that keeps them open does not hold the answer back.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use execdriver_core::{ExecExit, ExecRequest, ExecSession, ExecStdio, Signal};
use execdriver_linux::exec_io::{copy_output, set_window_size};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::proto::drivers as d;
use crate::status;
use crate::tasks::TaskEntry;

/// The most output ExecTask keeps per stream; the rest is dropped (script checks print
/// little, and the answer is one message).
const MAX_COLLECTED: usize = 4 * 1024 * 1024;

fn pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Status::internal(format!("creating a pipe for exec: {e}")))
}

fn exit_result(exit: &ExecExit) -> d::ExitResult {
    d::ExitResult {
        exit_code: exit.status.exit_code,
        signal: exit.status.signal.map_or(0, |s| s.number()),
        oom_killed: false,
    }
}

fn split_command(task_id: &str, command: Vec<String>) -> Result<(String, Vec<String>), Status> {
    let mut argv = command.into_iter();
    let program = argv
        .next()
        .ok_or_else(|| status::invalid(format!("exec in task {task_id:?}: no command given")))?;
    Ok((program, argv.collect()))
}

/// Starts `request` in the task of `entry`, in the blocking pool.
async fn start(
    entry: &TaskEntry,
    request: ExecRequest,
) -> Result<(Arc<dyn ExecSession>, Option<OwnedFd>), Status> {
    let context = format!("exec in task {:?}", entry.nomad_id);
    let task = Arc::clone(&entry.task);
    match tokio::task::spawn_blocking(move || task.exec(request)).await {
        Ok(Ok(started)) => Ok((Arc::from(started.session), started.pty)),
        Ok(Err(e)) => Err(status::engine(&context, &e)),
        Err(e) => Err(status::join(&context, &e)),
    }
}

/// Waits for the command in the blocking pool; after `timeout` (if not zero) kills it.
async fn wait(session: Arc<dyn ExecSession>, timeout: Duration) -> Result<ExecExit, Status> {
    let waiter = {
        let session = Arc::clone(&session);
        tokio::task::spawn_blocking(move || session.wait(None))
    };
    tokio::pin!(waiter);
    let joined = if timeout.is_zero() {
        waiter.await
    } else {
        match tokio::time::timeout(timeout, &mut waiter).await {
            Ok(joined) => joined,
            Err(_) => {
                let _ = session.signal(Signal::SIGKILL);
                waiter.await
            }
        }
    };
    match joined {
        Ok(Ok(Some(exit))) => Ok(exit),
        Ok(Ok(None)) => Err(Status::internal(
            "waiting for an exec'd command returned without its exit",
        )),
        Ok(Err(e)) => Err(Status::internal(format!(
            "waiting for an exec'd command: {e}"
        ))),
        Err(e) => Err(status::join("waiting for an exec'd command", &e)),
    }
}

/// Collects what `src` gives until the command is done (`done` readable), at most
/// [`MAX_COLLECTED`] bytes.
fn collect(src: OwnedFd, done: Arc<OwnedFd>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        copy_output(src.as_fd(), done.as_fd(), &mut |data| {
            let room = MAX_COLLECTED.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
            true
        });
        out
    })
}

/// ExecTask: runs `command` to its end (or `timeout`), its output collected.
pub async fn exec_task(
    entry: Arc<TaskEntry>,
    command: Vec<String>,
    timeout: Duration,
) -> Result<d::ExecTaskResponse, Status> {
    let (program, args) = split_command(&entry.nomad_id, command)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    let request = ExecRequest {
        stdio: ExecStdio {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        },
        ..ExecRequest::new(program, args)
    };
    let (session, _) = start(&entry, request).await?;
    let done_r = Arc::new(done_r);
    let stdout = collect(out_r, Arc::clone(&done_r));
    let stderr = collect(err_r, done_r);
    let exit = wait(session, timeout).await;
    let _ = rustix::io::write(&done_w, b"x");
    let (stdout, mut stderr) = tokio::task::spawn_blocking(move || {
        (
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default(),
        )
    })
    .await
    .map_err(|e| status::join("collecting exec output", &e))?;
    let exit = exit?;
    if let Some(failure) = &exit.failure {
        stderr.extend_from_slice(format!("{failure}\n").as_bytes());
    }
    Ok(d::ExecTaskResponse {
        stdout,
        stderr,
        result: Some(exit_result(&exit)),
    })
}

fn frame(stream_is_stderr: bool, data: Vec<u8>, close: bool) -> d::ExecTaskStreamingResponse {
    let op = Some(d::ExecTaskStreamingIoOperation { data, close });
    if stream_is_stderr {
        d::ExecTaskStreamingResponse {
            stderr: op,
            ..Default::default()
        }
    } else {
        d::ExecTaskStreamingResponse {
            stdout: op,
            ..Default::default()
        }
    }
}

type Outbound = mpsc::Sender<Result<d::ExecTaskStreamingResponse, Status>>;

/// Sends what `src` gives as frames of one stream, until the command is done.
fn forward(
    src: Arc<OwnedFd>,
    done: Arc<OwnedFd>,
    stderr: bool,
    tx: Outbound,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        copy_output(src.as_fd(), done.as_fd(), &mut |data| {
            tx.blocking_send(Ok(frame(stderr, data.to_vec(), false)))
                .is_ok()
        });
    })
}

/// Where the client's stdin goes: the terminal (EOF is ^D) or a pipe (EOF closes it).
enum Input {
    Tty(Arc<OwnedFd>),
    Pipe(Option<OwnedFd>),
}

impl Input {
    fn write(&mut self, data: &[u8]) {
        let fd = match &*self {
            Input::Tty(master) => Some(master.as_fd()),
            Input::Pipe(fd) => fd.as_ref().map(|fd| fd.as_fd()),
        };
        let Some(fd) = fd else { return };
        let mut rest = data;
        while !rest.is_empty() {
            match rustix::io::write(fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    fn close(&mut self) {
        match self {
            Input::Tty(_) => self.write(b"\x04"),
            Input::Pipe(fd) => drop(fd.take()),
        }
    }
}

/// Applies one client message: a window size, stdin data, stdin's end.
fn apply(message: &d::ExecTaskStreamingRequest, input: &mut Input) {
    if let (Some(size), Input::Tty(master)) = (&message.tty_size, &*input) {
        let rows = u16::try_from(size.height.max(0)).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.width.max(0)).unwrap_or(u16::MAX);
        let _ = set_window_size(master.as_fd(), rows, cols);
    }
    if let Some(stdin) = &message.stdin {
        if !stdin.data.is_empty() {
            input.write(&stdin.data);
        }
        if stdin.close {
            input.close();
        }
    }
}

/// ExecTaskStreaming: the first message names the task and command; then stdin and window
/// sizes in, stdout and stderr frames out, and a last message with the exit.
pub async fn exec_streaming(
    lookup: impl FnOnce(&str) -> Result<Arc<TaskEntry>, Status>,
    mut inbound: Streaming<d::ExecTaskStreamingRequest>,
) -> Result<ReceiverStream<Result<d::ExecTaskStreamingResponse, Status>>, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| status::invalid("exec stream ended before its setup message"))?;
    let setup = first
        .setup
        .clone()
        .ok_or_else(|| status::invalid("the first message of an exec stream must carry setup"))?;
    let entry = lookup(&setup.task_id)?;
    let (program, args) = split_command(&entry.nomad_id, setup.command)?;
    let (done_r, done_w) = pipe()?;
    let done_r = Arc::new(done_r);
    let (tx, rx) = mpsc::channel(16);
    let (session, mut input, readers) = if setup.tty {
        let request = ExecRequest {
            tty: true,
            ..ExecRequest::new(program, args)
        };
        let (session, pty) = start(&entry, request).await?;
        let master =
            Arc::new(pty.ok_or_else(|| Status::internal("exec with a tty returned no terminal"))?);
        let readers = vec![forward(
            Arc::clone(&master),
            Arc::clone(&done_r),
            false,
            tx.clone(),
        )];
        (session, Input::Tty(master), readers)
    } else {
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let request = ExecRequest {
            stdio: ExecStdio {
                stdin: Some(in_r),
                stdout: Some(out_w),
                stderr: Some(err_w),
            },
            ..ExecRequest::new(program, args)
        };
        let (session, _) = start(&entry, request).await?;
        let readers = vec![
            forward(Arc::new(out_r), Arc::clone(&done_r), false, tx.clone()),
            forward(Arc::new(err_r), Arc::clone(&done_r), true, tx.clone()),
        ];
        (session, Input::Pipe(Some(in_w)), readers)
    };
    apply(&first, &mut input);
    // The client's messages, in order, until it closes its side or the command ends.
    let input_task = tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            apply(&message, &mut input);
        }
        input.close();
    });
    tokio::spawn(async move {
        let exit = wait(session, Duration::ZERO).await;
        let _ = rustix::io::write(&done_w, b"x");
        let _ = tokio::task::spawn_blocking(move || {
            for reader in readers {
                let _ = reader.join();
            }
        })
        .await;
        input_task.abort();
        let message = exit.map(|exit| {
            if let Some(failure) = &exit.failure {
                // Before the exit, as the command's own stderr would have shown it.
                let _ = tx.try_send(Ok(frame(true, format!("{failure}\n").into_bytes(), false)));
            }
            d::ExecTaskStreamingResponse {
                exited: true,
                result: Some(exit_result(&exit)),
                ..Default::default()
            }
        });
        let _ = tx.send(Ok(frame(false, Vec::new(), true))).await;
        let _ = tx.send(Ok(frame(true, Vec::new(), true))).await;
        let _ = tx.send(message).await;
    });
    Ok(ReceiverStream::new(rx))
}
