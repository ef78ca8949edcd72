//! Embedding execdriver in an agent: start a task with `Driver<LinuxPlatform>`, persist its
//! handle id, reattach from it as a restarted agent would, and collect the exit.
//!
//! As root, after `cargo build -p execdriver-linux` (the supervisor is the `execdriver` binary):
//! `cargo run -p execdriver-linux --example embed`

use std::path::PathBuf;
use std::time::Duration;

use execdriver_core::{Driver, DriverConfig, TaskConfig, TaskSpec};
use execdriver_linux::{LinuxConfig, LinuxPlatform};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = std::env::temp_dir().join(format!("execdriver-embed-{}", std::process::id()));
    let alloc_dir = work.join("alloc");
    let task_dir = work.join("hello");
    std::fs::create_dir_all(&alloc_dir)?;
    std::fs::create_dir_all(&task_dir)?;

    let mut config = LinuxConfig::new(work.join("data"));
    // The agent is not the execdriver binary, so it names the one that serves `supervise`.
    let exe = std::env::current_exe()?;
    let target = exe.parent().and_then(|examples| examples.parent());
    config.supervisor_binary = target
        .map(|dir| dir.join("execdriver"))
        .filter(|p| p.exists());
    if config.supervisor_binary.is_none() {
        return Err("build the execdriver binary first: cargo build -p execdriver-linux".into());
    }
    let driver = Driver::with_config(LinuxPlatform::new(config.clone()), DriverConfig::default());

    let mut spec = TaskSpec::new(
        format!("embed-{}", std::process::id()),
        "hello",
        &alloc_dir,
        &task_dir,
        TaskConfig::new(
            "/bin/sh",
            ["-c", "echo hello from the task; sleep 1; exit 3"],
        ),
    );
    spec.resources.memory_limit_bytes = 64 << 20;
    spec.kill_timeout = Duration::from_secs(2);

    let task = driver.start(&spec)?;
    let handle_id = task.id(); // persist this in the agent's state store
    drop(task);
    drop(driver); // the agent "restarts"; the supervisor and the task go on

    let driver = Driver::new(LinuxPlatform::new(config));
    let task = driver.open(&handle_id)?;
    let result = task.wait()?;
    println!(
        "exit code {} (signal {:?}, oom {})",
        result.exit_code, result.signal, result.oom_killed
    );
    let log: PathBuf = alloc_dir.join("logs").join("hello.stdout.0");
    print!(
        "stdout: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
