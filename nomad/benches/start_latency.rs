//! StartTask latency beside the CLI's start-up, and the plugin's footprint, in one run:
//!
//! - `StartTask`: request to answer (the task runs) of a `sleep`, over the plugin socket;
//! - `StartTask+WaitTask /bin/true`: request to the exit reaching WaitTask;
//! - `execdriver run -- /bin/true`: the CLI end to end, when `target/<profile>/execdriver`
//!   is built (`cargo build --release -p execdriver-linux`);
//!
//! then the plugin's VmRSS with 0 tasks and with 50 running, and processes per task.
//!
//! Run as root: `cargo bench -p execdriver-nomad --bench start_latency [-- ROUNDS]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use execdriver_nomad::proto::drivers as d;
use support::{AllocDir, PluginProcess, TaskGuard, plugin_config, set_config_request, task_config};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, samples: &mut [Duration]) {
    samples.sort();
    if samples.is_empty() {
        return;
    }
    println!(
        "  {name:<32} median {:>8.2} ms  min {:>8.2} ms  max {:>8.2} ms",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let cli = profile_dir.join("execdriver");
    cli.exists().then_some(cli)
}

fn stop(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("start_latency bench skipped: it needs root");
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    // Removes the bench's own driver slice at the end, once its supervisors have left.
    let _slice = TaskGuard::new(data.path());
    let mut c = plugin.clients().await;
    c.base
        .set_config(set_config_request(plugin_config(data.path())))
        .await
        .expect("config");
    let alloc = AllocDir::new("bench");
    let cli = cli_binary();
    let cli_data = tempfile::tempdir().expect("cli data dir");

    let (mut start, mut cycle, mut run) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let task = task_config(
            &alloc,
            "bench",
            &format!("{round:08x}"),
            "/bin/sleep",
            &["60"],
        );
        let id = task.id.clone();
        let begun = Instant::now();
        c.driver
            .start_task(d::StartTaskRequest { task: Some(task) })
            .await
            .expect("start");
        start.push(begun.elapsed());
        c.driver
            .stop_task(d::StopTaskRequest {
                task_id: id.clone(),
                timeout: stop(5),
                signal: "SIGKILL".into(),
            })
            .await
            .expect("stop");
        c.driver
            .destroy_task(d::DestroyTaskRequest {
                task_id: id,
                force: true,
            })
            .await
            .expect("destroy");

        let task = task_config(
            &alloc,
            "bench",
            &format!("{:08x}", round + 0x1000),
            "/bin/true",
            &[],
        );
        let id = task.id.clone();
        let begun = Instant::now();
        c.driver
            .start_task(d::StartTaskRequest { task: Some(task) })
            .await
            .expect("start true");
        c.driver
            .wait_task(d::WaitTaskRequest {
                task_id: id.clone(),
            })
            .await
            .expect("wait true");
        cycle.push(begun.elapsed());
        c.driver
            .destroy_task(d::DestroyTaskRequest {
                task_id: id,
                force: true,
            })
            .await
            .expect("destroy true");

        if let Some(cli) = &cli {
            let begun = Instant::now();
            let status = Command::new(cli)
                .arg("run")
                .arg("--data-dir")
                .arg(cli_data.path())
                // The plugin's slice, which the guard removes; never the node's own.
                .env("EXECDRIVER_SLICE", support::slice_for(data.path()))
                .args(["--", "/bin/true"])
                .status()
                .expect("execdriver run");
            run.push(begun.elapsed());
            assert!(status.success());
        }
    }
    println!("{rounds} interleaved rounds:");
    summary("StartTask (request to running)", &mut start);
    summary("StartTask+WaitTask /bin/true", &mut cycle);
    match &cli {
        Some(_) => summary("execdriver run -- /bin/true", &mut run),
        None => println!("  (build target/<profile>/execdriver to time `execdriver run`)"),
    }

    let idle = rss_kib(plugin.pid());
    let mut ids = Vec::new();
    for i in 0..50u32 {
        let task = task_config(
            &alloc,
            "bench",
            &format!("{:08x}", 0x2000 + i),
            "/bin/sleep",
            &["600"],
        );
        ids.push(task.id.clone());
        c.driver
            .start_task(d::StartTaskRequest { task: Some(task) })
            .await
            .expect("start one of 50");
    }
    let busy = rss_kib(plugin.pid());
    let engine_ids: Vec<String> = ids
        .iter()
        .map(|id| execdriver_nomad::start::engine_task_id(id))
        .collect();
    let (supervisors, in_cgroups) = processes_of(data.path(), &engine_ids);
    for id in ids {
        c.driver
            .destroy_task(d::DestroyTaskRequest {
                task_id: id,
                force: true,
            })
            .await
            .expect("destroy one of 50");
    }
    println!("plugin VmRSS: {idle} KiB with 0 tasks, {busy} KiB with 50 running");
    println!(
        "processes per running task: {:.1} supervisor + {:.1} in the task cgroup",
        supervisors as f64 / 50.0,
        in_cgroups as f64 / 50.0
    );
}

/// Supervisors serving a state dir under `data_dir`, and processes in the tasks' cgroups.
fn processes_of(data_dir: &std::path::Path, engine_ids: &[String]) -> (usize, usize) {
    let data = data_dir.display().to_string();
    let (mut supervisors, mut tasks) = (0, 0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&format!("{data}/")) {
            supervisors += 1;
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if engine_ids
            .iter()
            .any(|id| cgroup.contains(&format!("execdriver-{id}")))
        {
            tasks += 1;
        }
    }
    (supervisors, tasks)
}
