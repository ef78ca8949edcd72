//! ExecTask and ExecTaskStreaming over the plugin's real socket: output and exit codes, a
//! timeout, a TTY with a resize, stdin, and clear statuses for an unknown or exited task.

mod support;

use std::time::Duration;

use execdriver_nomad::proto::drivers as d;
use support::{AllocDir, PluginProcess, TaskGuard, plugin_config, set_config_request, task_config};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn root(test: &str) -> bool {
    execdriver_linux::testing::require_root(test, "starts real tasks through the plugin")
}

async fn configured(plugin: &PluginProcess, data: &std::path::Path) -> support::Clients {
    let mut c = plugin.clients().await;
    c.base
        .set_config(set_config_request(plugin_config(data)))
        .await
        .expect("config");
    c
}

/// Starts a `sleep 600` task; its Nomad task id.
async fn start_sleeper(
    c: &mut support::Clients,
    alloc: &AllocDir,
    guard: &mut TaskGuard,
    suffix: &str,
) -> String {
    let task = task_config(alloc, "web", suffix, "/bin/sleep", &["600"]);
    let task_id = task.id.clone();
    let started = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .expect("start")
        .into_inner();
    guard.arm(&started.handle.expect("handle").driver_state);
    task_id
}

async fn exec(c: &mut support::Clients, task_id: &str, command: &[&str]) -> d::ExecTaskResponse {
    c.driver
        .exec_task(d::ExecTaskRequest {
            task_id: task_id.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .expect("exec")
        .into_inner()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn stdin(data: &[u8], close: bool) -> d::ExecTaskStreamingRequest {
    d::ExecTaskStreamingRequest {
        stdin: Some(d::ExecTaskStreamingIoOperation {
            data: data.to_vec(),
            close,
        }),
        ..Default::default()
    }
}

/// Runs a streaming exec: sends `first` (with setup) and `then`, collects stdout, stderr
/// and the exit result.
async fn stream(
    c: &mut support::Clients,
    first: d::ExecTaskStreamingRequest,
    then: Vec<d::ExecTaskStreamingRequest>,
) -> (String, String, d::ExitResult) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("send setup");
    let mut responses = c
        .driver
        .exec_task_streaming(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    for message in then {
        tx.send(message).await.expect("send");
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .expect("a message in time")
            .expect("stream")
            .expect("the stream ends with the exit");
        if let Some(op) = message.stdout {
            out.extend_from_slice(&op.data);
        }
        if let Some(op) = message.stderr {
            err.extend_from_slice(&op.data);
        }
        if message.exited {
            drop(tx);
            return (text(&out), text(&err), message.result.expect("result"));
        }
    }
}

fn setup(task_id: &str, command: &[&str], tty: bool) -> d::ExecTaskStreamingRequest {
    d::ExecTaskStreamingRequest {
        setup: Some(d::exec_task_streaming_request::Setup {
            task_id: task_id.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            tty,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_into_an_unknown_task_is_not_found() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let err = c
        .driver
        .exec_task(d::ExecTaskRequest {
            task_id: "x".into(),
            command: vec!["/bin/true".into()],
            timeout: None,
        })
        .await
        .expect_err("exec");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("\"x\""), "{}", err.message());
}

#[tokio::test]
async fn exec_task_collects_output_and_exit_codes_and_honours_its_timeout() {
    if !root("exec_task_collects_output_and_exit_codes_and_honours_its_timeout") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, data.path()).await;
    let alloc = AllocDir::new("web");
    let task_id = start_sleeper(&mut c, &alloc, &mut guard, "e1e1e1e1").await;

    let r = exec(
        &mut c,
        &task_id,
        &[
            "/bin/sh",
            "-c",
            "echo out $FOO $(id -u); echo err >&2; exit 3",
        ],
    )
    .await;
    assert_eq!(text(&r.stdout), "out bar 65534\n");
    assert_eq!(text(&r.stderr), "err\n");
    assert_eq!(r.result.expect("result").exit_code, 3);

    let r = exec(&mut c, &task_id, &["no-such-command"]).await;
    assert_eq!(r.result.expect("result").exit_code, 127);
    assert!(text(&r.stderr).contains("command not found"), "{r:?}");

    // The timeout kills the command, not the task.
    let r = c
        .driver
        .exec_task(d::ExecTaskRequest {
            task_id: task_id.clone(),
            command: vec!["/bin/sleep".into(), "600".into()],
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
        })
        .await
        .expect("exec")
        .into_inner();
    let result = r.result.expect("result");
    assert_eq!((result.exit_code, result.signal), (137, 9), "{result:?}");
    let r = exec(&mut c, &task_id, &["true"]).await;
    assert_eq!(r.result.expect("result").exit_code, 0);

    // Once the task has exited, exec is refused with a clear status.
    c.driver
        .stop_task(d::StopTaskRequest {
            task_id: task_id.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            signal: "SIGKILL".into(),
        })
        .await
        .expect("stop");
    let err = c
        .driver
        .exec_task(d::ExecTaskRequest {
            task_id: task_id.clone(),
            command: vec!["true".into()],
            timeout: None,
        })
        .await
        .expect_err("exec into an exited task");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("has exited"), "{}", err.message());
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id,
            force: true,
        })
        .await
        .expect("destroy");
    guard.disarm();
}

#[tokio::test]
async fn exec_streaming_with_and_without_a_tty() {
    if !root("exec_streaming_with_and_without_a_tty") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, data.path()).await;
    let alloc = AllocDir::new("web");
    let task_id = start_sleeper(&mut c, &alloc, &mut guard, "e2e2e2e2").await;

    // Without a TTY: stdin through, both streams apart, the exit code.
    let (out, err, result) = stream(
        &mut c,
        setup(
            &task_id,
            &[
                "/bin/sh",
                "-c",
                "read line; echo got $line; echo oops >&2; exit 4",
            ],
            false,
        ),
        vec![stdin(b"hello\n", true)],
    )
    .await;
    assert_eq!(out, "got hello\n");
    assert_eq!(err, "oops\n");
    assert_eq!(result.exit_code, 4);

    // With a TTY: a terminal of the task, resized by the client before the command reads
    // the size (it waits for a line of stdin, which comes after the resize).
    let resize = d::ExecTaskStreamingRequest {
        tty_size: Some(d::exec_task_streaming_request::TerminalSize {
            height: 42,
            width: 99,
        }),
        ..Default::default()
    };
    let (out, _, result) = stream(
        &mut c,
        setup(
            &task_id,
            &["/bin/sh", "-c", "read x; stty size; tty; exit 6"],
            true,
        ),
        vec![resize, stdin(b"go\n", false)],
    )
    .await;
    assert!(out.contains("42 99"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert_eq!(result.exit_code, 6);

    // A stream into an unknown task is refused at once.
    let (tx, rx) = mpsc::channel(1);
    tx.send(setup("nope", &["true"], false))
        .await
        .expect("send");
    let err = c
        .driver
        .exec_task_streaming(ReceiverStream::new(rx))
        .await
        .expect_err("unknown task");
    assert_eq!(err.code(), Code::NotFound);

    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id,
            force: true,
        })
        .await
        .expect("destroy");
    guard.disarm();
}
