//! End to end through the library: the log pump's rate with real supervisors and a task
//! writing as fast as it can. Needs root (fails loudly under CI without it) and the
//! `execdriver` binary next to this test's target dir.
//!
//! Nothing here waits on a clock: the tests wait on the log files (a marker line, the
//! task's last line), and the durations they measure are only compared with bounds.

mod linux_support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use execdriver_core::{LogStream, Signal, TaskSpec};
use linux_support::{TestEnv, binary_from_target_dir, eventually};

const CLEAN: Duration = Duration::from_secs(5);

/// A low rate, so that the flood is over it from its first milliseconds.
const RATE: u64 = 256 * 1024;

fn env(test: &str) -> Option<TestEnv> {
    execdriver_linux::testing::require_root(test, "it creates cgroups and namespaces")
        .then(|| TestEnv::new(binary_from_target_dir()))
}

/// `dd` writing zeros to stdout flat out, `count` MiB of them or without end, at [`RATE`].
fn flood(env: &TestEnv, count: Option<u64>) -> TaskSpec {
    let count = count.map(|c| format!("count={c}"));
    let mut args = vec!["if=/dev/zero", "bs=1M"];
    args.extend(count.as_deref());
    let mut spec = env.spec("/bin/dd", &args);
    spec.logs.rate_bytes_per_sec = Some(RATE);
    spec
}

/// Everything in a stream's log files, oldest first.
fn log_of(spec: &TaskSpec, stream: LogStream) -> Vec<u8> {
    let dir = spec.alloc_dir.join("logs");
    let prefix = format!("{}.{}.", spec.task_name, stream.as_str());
    let mut files: Vec<(u64, std::path::PathBuf)> = fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let index = name.strip_prefix(&prefix)?.parse().ok()?;
                    Some((index, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|(_, p)| fs::read(p).unwrap_or_default())
        .collect()
}

/// The marker lines in `log`, and the bytes each says were dropped.
fn markers(log: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(log);
    text.lines()
        .filter_map(|l| l.strip_prefix("[execdriver: "))
        .filter_map(|l| l.split_once(" bytes dropped, over the log rate of "))
        .map(|(n, rest)| {
            assert_eq!(rest, format!("{RATE} bytes/s]"), "marker names the rate");
            n.parse().expect("marker count")
        })
        .collect()
}

/// utime + stime of a live process, from `/proc/<pid>/stat`, in clock ticks (USER_HZ,
/// 100 a second on Linux).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("supervisor stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the name: state is field 3, utime 14, stime 15.
    let at = |n: usize| -> u64 { fields[n - 3].parse().expect("a tick count") };
    at(14) + at(15)
}

fn waits_on(path: &Path, what: &str, check: impl Fn(&[u8]) -> bool) {
    assert!(
        eventually(Duration::from_secs(60), || check(
            &fs::read(path).unwrap_or_default()
        )),
        "{what} never showed in {}",
        path.display()
    );
}

/// A task writing stdout as fast as it can (`dd`, 1.2 GB/s or so here), at a low log rate:
/// its supervisor's cpu stays bounded, what it writes beyond the rate is dropped, counted in
/// stats and marked in the log, every byte is either in the log or counted as dropped, and
/// the task is never blocked for good: it finishes.
///
/// The bound: a tenth of a core over the flood, plus 100 ms for the supervisor's start and
/// the burst. Held to its rate the pump wakes 50 times a second and frees about 50 MiB of
/// pipe pages a second, about 2 to 4% of a core here even in a debug build; unbounded, the
/// same flood costs the supervisor about 0.8 ms of cpu per MiB at 90% of a core, over 400 ms
/// in well under a second, far above the bound.
#[test]
fn a_flooding_task_is_held_to_its_log_rate_and_the_rest_dropped() {
    let Some(env) = env("a_flooding_task_is_held_to_its_log_rate_and_the_rest_dropped") else {
        return;
    };
    const MIB: u64 = 1024 * 1024;
    let count = 512;
    let spec = flood(&env, Some(count));
    let driver = env.driver();
    let started = Instant::now();
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    let supervisor = task.handle_id().supervisor.process.pid;
    let logs = spec.alloc_dir.join("logs");
    let stdout = logs.join(format!("{}.stdout.0", spec.task_name));
    waits_on(&stdout, "a drop marker", |log| !markers(log).is_empty());
    let dropped = task.stats().expect("stats during the flood").logs;
    assert!(dropped.stdout_dropped_bytes > 0, "{dropped:?}");
    assert_eq!(dropped.stderr_dropped_bytes, 0, "{dropped:?}");
    // dd's last words: the flood is over, the task about to exit.
    let stderr = logs.join(format!("{}.stderr.0", spec.task_name));
    waits_on(&stderr, "dd's summary", |log| {
        String::from_utf8_lossy(log).contains("copied")
    });
    let ticks = cpu_ticks(supervisor);
    let flood_took = started.elapsed();
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 0, "{result:?}");
    let cpu = Duration::from_millis(ticks * 10);
    let bound = flood_took / 10 + Duration::from_millis(100);
    eprintln!("flood of {count} MiB: {flood_took:?}, supervisor cpu {cpu:?}, bound {bound:?}");
    assert!(
        cpu <= bound,
        "the supervisor used {cpu:?} of cpu over a {flood_took:?} flood, above {bound:?}"
    );
    let log = log_of(&spec, LogStream::Stdout);
    let zeros = log.iter().filter(|b| **b == 0).count() as u64;
    let marked: u64 = markers(&log).iter().sum();
    assert_eq!(
        zeros + marked,
        count * MIB,
        "every byte is in the log or counted as dropped"
    );
    assert!(
        marked >= dropped.stdout_dropped_bytes,
        "{marked} < {dropped:?}"
    );
    // Held to the rate: the burst (two seconds of it), the rate over the flood, and what
    // was left in the pipe at the exit (at most the 1 MiB pipe), read at once.
    let allowed = 2 * RATE + RATE * flood_took.as_millis() as u64 / 1000 + MIB + 64 * 1024;
    assert!(zeros <= allowed, "{zeros} bytes logged, above {allowed}");
    env.assert_clean(CLEAN);
}

/// `kill` is as prompt during a flood as ever: within the kill timeout plus 2 s.
#[test]
fn a_kill_during_a_flood_returns_within_its_bound() {
    let Some(env) = env("a_kill_during_a_flood_returns_within_its_bound") else {
        return;
    };
    let spec = flood(&env, None);
    let driver = env.driver();
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    let stdout = spec
        .alloc_dir
        .join("logs")
        .join(format!("{}.stdout.0", spec.task_name));
    // Dropping is under way: the supervisor is as busy as a flood makes it.
    waits_on(&stdout, "a drop marker", |log| !markers(log).is_empty());
    let started = Instant::now();
    task.kill().expect("kill");
    let took = started.elapsed();
    let bound = spec.kill_timeout + Duration::from_secs(2);
    assert!(took <= bound, "kill took {took:?}, above {bound:?}");
    let result = task.wait().expect("wait");
    assert!(
        matches!(result.signal, Some(Signal::SIGINT | Signal::SIGKILL)) || result.exit_code != 0,
        "{result:?}"
    );
    env.assert_clean(CLEAN);
}
