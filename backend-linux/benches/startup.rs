//! Start-up cost and supervisor memory, measured side by side in one run so that the ratios
//! hold on a noisy machine:
//!
//! - `fork+exec`: `/bin/true` started by std::process, the floor;
//! - `launch`: `isolation::launch` of `/bin/true` (namespaces, task root, user drop, seccomp
//!   filter, exec), and the same with `Seccomp::Unconfined`;
//! - `run`: `execdriver run -- /bin/true` end to end (CLI, supervisor, cgroup, exit record),
//!   and the same with `--seccomp unconfined`: the difference is the filter's share (building
//!   it in the CLI's check and in the supervisor, installing it in the task);
//! - `run --network none`: the same in a network namespace of its own, loopback up.
//!
//! Then the cost of building the default filter program alone.
//!
//! With `EXECDRIVER_BENCH_BASELINE=<an older execdriver binary>`, that binary's `run` is
//! timed in the same rounds, for a before/after ratio.
//!
//! Then the supervisor's VmRSS, Pss and threads while a `sleep` task runs.
//!
//! Run as root: `cargo bench -p execdriver-linux --features test-support --bench startup
//! [-- ROUNDS]` (default 20). Its supervisors and cgroups go to a slice of its own, removed
//! at the end; the node's `execdriver.slice` is not touched.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use execdriver_core::{Seccomp, TaskConfig, TaskSpec};
use execdriver_linux::isolation::{self, LaunchRequest};

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("startup bench skipped: it needs root (namespaces, cgroups)");
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::Builder::new()
        .prefix("execdriver-bench-")
        .tempdir()
        .expect("temp dir");
    let data_dir = dir.path().join("data");
    let task_dir = dir.path().join("task");
    let alloc_dir = dir.path().join("alloc");
    for d in [&data_dir, &task_dir, &alloc_dir] {
        std::fs::create_dir(d).expect("bench dir");
    }
    let spec = TaskSpec::new(
        "bench",
        "bench",
        &alloc_dir,
        &task_dir,
        TaskConfig::new("/bin/true", Vec::<String>::new()),
    );
    let unconfined = TaskSpec {
        seccomp: Seccomp::Unconfined,
        ..spec.clone()
    };
    let binary = Path::new(env!("CARGO_BIN_EXE_execdriver"));
    let baseline = std::env::var_os("EXECDRIVER_BENCH_BASELINE").map(std::path::PathBuf::from);
    let slice = Slice(format!("execdriver-bench-{}", std::process::id()));
    // SAFETY: set before any thread is started; the children inherit it (an older binary
    // without slices ignores it).
    unsafe { std::env::set_var("EXECDRIVER_SLICE", &slice.0) };
    let run_true = |binary: &Path, options: &[&str]| {
        let status = Command::new(binary)
            .arg("run")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(options)
            .args(["--", "/bin/true"])
            .status()
            .expect("spawn execdriver run");
        assert!(
            status.success(),
            "{} run -- /bin/true: {status}",
            binary.display()
        );
    };

    let (mut exec, mut launch, mut launch_unconfined) = (Vec::new(), Vec::new(), Vec::new());
    let (mut run, mut run_unconfined, mut run_netns, mut before) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleaved rounds: a burst of load hits all alike.
    for round in 0..rounds {
        exec.push(time(|| {
            let status = Command::new("/bin/true").status().expect("spawn /bin/true");
            assert!(status.success());
        }));
        // The pairs swap places every round: the first of two like runs costs more (by some
        // milliseconds for `run`), which would otherwise be charged to one side.
        let swap = round % 2 == 1;
        for unconfined_now in [swap, !swap] {
            if unconfined_now {
                launch_unconfined.push(time(|| launch_true(&unconfined)));
            } else {
                launch.push(time(|| launch_true(&spec)));
            }
        }
        for unconfined_now in [swap, !swap] {
            if unconfined_now {
                run_unconfined.push(time(|| run_true(binary, &["--seccomp", "unconfined"])));
            } else {
                run.push(time(|| run_true(binary, &[])));
            }
        }
        run_netns.push(time(|| run_true(binary, &["--network", "none"])));
        if let Some(old) = &baseline {
            before.push(time(|| run_true(old, &[])));
        }
    }
    let base = median(&mut exec);
    println!("start-up of /bin/true, median of {rounds} interleaved rounds:");
    let run_median = median(&mut run);
    let run_unconfined_median = median(&mut run_unconfined);
    let launch_median = median(&mut launch);
    let launch_unconfined_median = median(&mut launch_unconfined);
    for (name, samples) in [
        ("fork+exec", &mut exec),
        ("isolation::launch", &mut launch),
        ("launch unconfined", &mut launch_unconfined),
        ("execdriver run", &mut run),
        ("run unconfined", &mut run_unconfined),
        ("run --network none", &mut run_netns),
        ("baseline run", &mut before),
    ] {
        if samples.is_empty() {
            continue;
        }
        let m = median(samples);
        println!(
            "  {name:<18} median {:>8.2} ms  min {:>8.2} ms  max {:>8.2} ms  ({:.1}x fork+exec)",
            ms(m),
            ms(samples[0]),
            ms(samples[samples.len() - 1]),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!(
        "  run --network none / execdriver run: {:.2}",
        median(&mut run_netns).as_secs_f64() / run_median.as_secs_f64()
    );
    for (what, filtered, unfiltered) in [
        ("run", run_median, run_unconfined_median),
        ("launch", launch_median, launch_unconfined_median),
    ] {
        println!(
            "  {what} default / unconfined seccomp: {:.3} (the filter's share {:+.3} ms, {:+.1}%)",
            filtered.as_secs_f64() / unfiltered.as_secs_f64(),
            ms(filtered) - ms(unfiltered),
            100.0 * (filtered.as_secs_f64() - unfiltered.as_secs_f64()) / filtered.as_secs_f64()
        );
    }
    let mut builds: Vec<Duration> = (0..200)
        .map(|_| {
            time(|| {
                let program = execdriver_linux::seccomp::program(&Seccomp::Default)
                    .expect("build the default filter");
                assert!(program.is_some_and(|p| !p.is_empty()));
            })
        })
        .collect();
    let build = median(&mut builds);
    println!(
        "  building the default seccomp program: median {:.1} us of 200",
        build.as_secs_f64() * 1e6
    );
    if !before.is_empty() {
        let old = median(&mut before);
        println!(
            "  execdriver run / baseline run: {:.2}",
            run_median.as_secs_f64() / old.as_secs_f64()
        );
    }
    supervisor_memory(binary, &data_dir);
}

/// The bench's own driver slice, removed (supervisors cgroup, then the slice, in every
/// hierarchy) once its last supervisor has left.
struct Slice(String);

impl Drop for Slice {
    fn drop(&mut self) {
        let Ok(dirs) = execdriver_linux::cgroups::supervisors_cgroup_paths(&self.0) else {
            return;
        };
        for dir in dirs {
            let by = Instant::now() + Duration::from_secs(10);
            while dir.exists() && std::fs::remove_dir(&dir).is_err() && Instant::now() < by {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(slice) = dir.parent()
                && slice.exists()
                && let Err(e) = std::fs::remove_dir(slice)
            {
                eprintln!("bench slice {} remains: {e}", slice.display());
            }
        }
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn launch_true(spec: &TaskSpec) {
    let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
    let (err_r, err_w) = nix::unistd::pipe().expect("pipe");
    let task = isolation::launch(LaunchRequest {
        spec,
        stdin: None,
        stdout: out_w,
        stderr: err_w,
        clone_into: None,
        place_in_cgroup: &|_| Ok(()),
        user: None,
    })
    .expect("launch /bin/true");
    let status = task.wait().expect("wait for /bin/true");
    assert_eq!(status.exit_code, 0, "{status:?}");
    drop::<(OwnedFd, OwnedFd)>((out_r, err_r));
}

/// Starts a `sleep`, reads its supervisor's memory, then kills it.
fn supervisor_memory(binary: &Path, data_dir: &Path) {
    let out = Command::new(binary)
        .arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--kill-timeout", "1s", "--", "/bin/sleep", "60"])
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn execdriver start");
    assert!(out.status.success(), "execdriver start failed");
    let handle = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let parsed: serde_json::Value = serde_json::from_str(&handle).expect("handle id is json");
    let pid = parsed["supervisor"]["process"]["pid"]
        .as_i64()
        .expect("supervisor pid");
    let field = |file: &str, key: &str| -> String {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l[key.len()..].trim().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    println!(
        "supervisor (pid {pid}) while a sleep runs: VmRSS {}, Pss {}, Pss_Anon {}, threads {}",
        field("status", "VmRSS:"),
        field("smaps_rollup", "Pss:"),
        field("smaps_rollup", "Pss_Anon:"),
        field("status", "Threads:"),
    );
    let killed = Command::new(binary)
        .arg("kill")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("-")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(handle.as_bytes())?;
            }
            child.wait()
        })
        .expect("spawn execdriver kill");
    // The kill's status is the task's (killed by a signal), so only a driver failure counts.
    assert_ne!(killed.code(), Some(125), "execdriver kill failed");
}
