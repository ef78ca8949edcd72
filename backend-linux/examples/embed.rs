//! Embedding execdriver in an agent: the agent's own binary serves the supervisor, starts a
//! task with `Driver<LinuxPlatform>`, persists its handle id, reattaches from it as a
//! restarted agent would, collects the exit, and branches on error kinds, not on messages.
//!
//! As root: `cargo run -p execdriver-linux --example embed` (set `EXECDRIVER_SLICE` to keep
//! its supervisors out of the node's `execdriver.slice`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use execdriver_core::{
    Driver, DriverError, LogCursor, LogStream, PlatformError, Refusal, SpawnStep, TaskConfig,
    TaskErrorKind, TaskSpec,
};
use execdriver_linux::{AllocDir, LinuxConfig, LinuxPlatform};

/// Removes the example's own data dir, also when it fails half-way.
struct Work(PathBuf);

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing: the driver starts this very binary as `<it> supervise ...` for each task.
    if let Some(code) = execdriver_linux::supervise_main() {
        std::process::exit(code);
    }
    let work = Work(std::env::temp_dir().join(format!("execdriver-embed-{}", std::process::id())));
    let data: &Path = &work.0;
    let slice = std::env::var("EXECDRIVER_SLICE").unwrap_or_else(|_| "execdriver".to_owned());
    let config = LinuxConfig::new(data).with_slice_name(slice);
    let driver = Driver::new(LinuxPlatform::new(config.clone()));

    let id = format!("embed-{}", std::process::id());
    let alloc = AllocDir::create(data, &id, "hello")?;
    let mut spec = TaskSpec::new(
        &id,
        "hello",
        alloc.dir(),
        alloc.task_dir(),
        TaskConfig::new(
            "/bin/sh",
            ["-c", "echo hello from the task; sleep 1; exit 3"],
        ),
    );
    spec.resources.memory_limit_bytes = 64 << 20;
    spec.kill_timeout = Duration::from_secs(2);

    let task = match driver.start(&spec) {
        Ok(task) => task,
        // What the task asked for cannot work here: tell the job's owner.
        Err(DriverError::Spawn {
            source:
                PlatformError::Spawn {
                    step: SpawnStep::Launch | SpawnStep::Dirs,
                    reason,
                },
            ..
        }) => return Err(format!("the task cannot run: {reason}").into()),
        // The node's side failed (cgroups, records): worth another try elsewhere or later.
        Err(e @ DriverError::Spawn { .. }) => return Err(format!("node problem: {e}").into()),
        Err(e) => return Err(e.into()),
    };
    let handle_id = task.id(); // persist this in the agent's state store
    drop(task);
    drop(driver); // the agent "restarts"; the supervisor and the task go on

    let driver = Driver::new(LinuxPlatform::new(config));
    let task = driver.open(&handle_id)?;
    let result = task.wait()?;
    match &result.error {
        None => println!(
            "exit code {} (signal {:?}, oom {})",
            result.exit_code, result.signal, result.oom_killed
        ),
        Some(e) if e.kind == TaskErrorKind::SupervisorLost => {
            println!("the supervisor was lost; the exit code is unknown: {e}")
        }
        Some(e) => println!("the task ended, but: {e}"),
    }
    // Through the handle: readable even though collecting the exit removed the task's state.
    let out = task.read_logs(LogStream::Stdout, LogCursor::default(), 4096)?;
    print!("stdout: {}", String::from_utf8_lossy(&out.data));

    // A handle whose task was collected touches nothing: the refusal says why, by kind.
    match driver.open(&handle_id) {
        Err(DriverError::ReattachRefused {
            source:
                PlatformError::Refused {
                    kind: Refusal::Collected,
                    ..
                },
            ..
        }) => println!("reopening the collected task is refused, as it should be"),
        other => return Err(format!("unexpected: {other:?}").into()),
    }
    match driver.open_task("no-such-task") {
        Err(DriverError::NotFound { task_id, .. }) => println!("no task {task_id}, as expected"),
        other => return Err(format!("unexpected: {other:?}").into()),
    }
    AllocDir::remove(alloc.dir())?;
    Ok(())
}
