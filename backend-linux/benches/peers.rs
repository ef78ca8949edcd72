//! The figures of issue 11, each beside the peers installed on this node (crun, runc, bwrap,
//! conmon; `.ci/bench-peers` installs them from Debian's packages and runs this bench):
//!
//! - `run -- /bin/true`: wall time and the CPU of everything it starts, summed in a wrapping
//!   cgroup (`<bench slice>/meter`, which the runner joins before its exec), so that the
//!   double-forked supervisor and the task count. The driver's supervisors cgroup and task
//!   cgroups, and crun's and runc's container cgroups, are all under the bench's own slice,
//!   and the sample is read once the slice holds no process any more;
//! - the memory of each process a running `sleep` task costs (`/proc/PID/smaps_rollup`):
//!   the supervisor and the task's init, beside conmon (with crun) for one container;
//! - 200 tasks started at once, and the node's used memory (MemTotal - MemAvailable) before
//!   and after them (with a baseline: twice, in both orders, averaged), the kernel's own part
//!   of it (slabs, per-cpu, stacks, page tables), and the mean Pss of the supervisors and the
//!   inits while all of them run (their shares of the text they map together); the kernel's
//!   share of the task's own `sleep`, measured on 200 bare sleeps in the same passes, is
//!   taken off for the host memory a task costs beyond its own process;
//! - sequential start+kill cycles (1000, or `--cycles N`), p50 and p99;
//! - `status` (a reattach) from a new process, and `kill` of a task that obeys SIGINT;
//! - the floor those stand on: `execdriver --version` and `/bin/true`, each from a new process.
//!
//! Runs alternate between the runners (A/B/C.., their order rotated each round), so a burst
//! of load from the rest of the machine hits all alike; medians and ratios are printed as one
//! markdown table. With `EXECDRIVER_BENCH_BASELINE=<an older execdriver binary>`, that binary
//! is one more runner of every figure; `EXECDRIVER_BENCH_BINARY` replaces the binary built
//! with the bench (to measure a copy while the tree is rebuilt; either starts the
//! `execdriver-supervisor` beside it when there is one, so copy the pair).
//!
//! Run as root: `cargo bench -p execdriver-linux --features test-support --bench peers --
//! [--rounds N] [--cycles N] [--tasks N] [--drop-caches]` (the last drops the node's clean
//! caches before each at-once pass, for steadier memory figures). Everything it makes (tasks, cgroups, bundles,
//! state) is removed at the end, on a panic, and on SIGINT/SIGTERM (checked between runs;
//! the runners are in process groups of their own so that a ^C reaches only the bench).

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("peers bench skipped: it needs root (namespaces, cgroups)");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = flag("--rounds", 30);
    let cycles = flag("--cycles", 1000);
    let tasks = flag("--tasks", 200);
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_signal),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        unsafe { nix::sys::signal::sigaction(sig, &action) }.expect("sigaction");
    }
    let bench = Bench::new(args.iter().any(|a| a == "--drop-caches"));
    let mut table = Table::default();
    let mut runners = vec![Runner::Execdriver(bench.binary.clone())];
    if let Some(old) = std::env::var_os("EXECDRIVER_BENCH_BASELINE") {
        runners.push(Runner::Baseline(PathBuf::from(old)));
    }
    for peer in ["crun", "runc", "bwrap"] {
        match which(peer) {
            Some(path) => runners.push(Runner::peer(peer, path, &bench)),
            None => println!("{peer} is not installed: `.ci/bench-peers` installs it"),
        }
    }
    run_true(&bench, &runners, rounds, &mut table);
    memory(&bench, &runners, &mut table);
    let drivers: Vec<&Runner> = runners.iter().filter(|r| r.is_driver()).collect();
    if !stopped() {
        many_at_once(&bench, &drivers, tasks, &mut table);
    }
    if !stopped() {
        cycle(&bench, &drivers, cycles, &mut table);
    }
    if !stopped() {
        status_and_kill(&bench, &drivers, rounds, &mut table);
    }
    table.print();
    if stopped() {
        println!("(interrupted: the figures above are what was measured before)");
    }
}

/// What the bench owns: its slice (with the meter cgroup), its data dir, the peers' bundle
/// and state dirs, and the handles of the tasks it started; all removed on drop.
struct Bench {
    binary: PathBuf,
    slice: String,
    /// The slice's dir in the hierarchy that accounts CPU.
    slice_dir: PathBuf,
    meter: PathBuf,
    usage: Usage,
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    live: std::sync::Mutex<Vec<(PathBuf, String)>>,
    /// `--drop-caches`: drop the node's caches before each at-once pass.
    drop_caches: bool,
}

#[derive(Clone, Copy)]
enum Usage {
    /// cgroup v1 `cpuacct.usage`, nanoseconds.
    V1,
    /// cgroup v2 `cpu.stat` `usage_usec`.
    V2,
}

impl Bench {
    fn new(drop_caches: bool) -> Self {
        let slice = format!("execdriver-bench-peers-{}", std::process::id());
        let (root, usage) = if Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists() {
            (PathBuf::from("/sys/fs/cgroup/cpuacct"), Usage::V1)
        } else {
            (PathBuf::from("/sys/fs/cgroup"), Usage::V2)
        };
        let slice_dir = root.join(format!("{slice}.slice"));
        let meter = slice_dir.join("meter");
        fs::create_dir_all(&meter).expect("create the meter cgroup");
        let dir = tempfile::Builder::new()
            .prefix("execdriver-bench-peers-")
            .tempdir()
            .expect("temp dir");
        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).expect("data dir");
        // SAFETY: set before any thread is started; every runner inherits it.
        unsafe { std::env::set_var("EXECDRIVER_SLICE", &slice) };
        Self {
            binary: std::env::var_os("EXECDRIVER_BENCH_BINARY").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_execdriver")),
                PathBuf::from,
            ),
            slice,
            slice_dir,
            meter,
            usage,
            dir,
            data_dir,
            live: std::sync::Mutex::new(Vec::new()),
            drop_caches,
        }
    }

    /// CPU time used so far by everything that ran under the slice.
    fn cpu(&self) -> Duration {
        match self.usage {
            Usage::V1 => Duration::from_nanos(
                read(&self.slice_dir.join("cpuacct.usage"))
                    .trim()
                    .parse()
                    .unwrap_or(0),
            ),
            Usage::V2 => Duration::from_micros(
                read(&self.slice_dir.join("cpu.stat"))
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            ),
        }
    }

    /// Waits (up to 10 s) until no process is left anywhere under the slice: a supervisor
    /// that outlives its `run` by a moment still counts in that run's sample.
    fn settle(&self) {
        let by = Instant::now() + Duration::from_secs(10);
        while Instant::now() < by && has_procs(&self.slice_dir) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn remember(&self, binary: &Path, handle: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.push((binary.to_owned(), handle.to_owned()));
    }

    fn forget(&self, handle: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, h)| h != handle);
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        for (binary, handle) in live {
            let _ = kill_handle(&binary, &self.data_dir, &handle);
        }
        let by = Instant::now() + Duration::from_secs(15);
        while Instant::now() < by && has_procs(&self.slice_dir) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Children first: the meter, the supervisors cgroup of every hierarchy, then the
        // slice of every hierarchy.
        let _ = fs::remove_dir(&self.meter);
        if let Ok(dirs) = execdriver_linux::cgroups::supervisors_cgroup_paths(&self.slice) {
            for dir in dirs {
                remove_tree(&dir);
                if let Some(slice) = dir.parent() {
                    remove_tree(slice);
                }
            }
        }
        remove_tree(&self.slice_dir);
    }
}

/// Removes an (empty of processes) cgroup and what is left below it, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    if dir.exists()
        && let Err(e) = fs::remove_dir(dir)
    {
        eprintln!("bench cgroup {} remains: {e}", dir.display());
    }
}

fn has_procs(dir: &Path) -> bool {
    if !read(&dir.join("cgroup.procs")).trim().is_empty() {
        return true;
    }
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()) && has_procs(&e.path()))
    })
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// One way to run `/bin/true` (and, for the drivers, to start and kill a `sleep`).
enum Runner {
    Execdriver(PathBuf),
    Baseline(PathBuf),
    /// crun or runc with a busybox bundle; their state under the bench's dir.
    Oci {
        name: &'static str,
        binary: PathBuf,
        bundle: PathBuf,
        root: PathBuf,
    },
    Bwrap(PathBuf),
}

impl Runner {
    fn peer(name: &'static str, binary: PathBuf, bench: &Bench) -> Self {
        if name == "bwrap" {
            return Self::Bwrap(binary);
        }
        let bundle = bench.dir.path().join(format!("{name}-bundle"));
        let root = bench.dir.path().join(format!("{name}-state"));
        make_bundle(&bundle, &bench.slice, name);
        fs::create_dir_all(&root).expect("runtime state dir");
        Self::Oci {
            name,
            binary,
            bundle,
            root,
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Execdriver(_) => "execdriver",
            Self::Baseline(_) => "baseline",
            Self::Oci { name, .. } => name,
            Self::Bwrap(_) => "bwrap",
        }
    }

    fn is_driver(&self) -> bool {
        matches!(self, Self::Execdriver(_) | Self::Baseline(_))
    }

    fn driver_binary(&self) -> Option<&Path> {
        match self {
            Self::Execdriver(b) | Self::Baseline(b) => Some(b),
            _ => None,
        }
    }

    /// The command that runs `/bin/true` once, to its end.
    fn true_command(&self, bench: &Bench, round: usize) -> Command {
        match self {
            Self::Execdriver(binary) | Self::Baseline(binary) => {
                let mut c = Command::new(binary);
                c.arg("run")
                    .arg("--data-dir")
                    .arg(&bench.data_dir)
                    .args(["--", "/bin/true"]);
                c
            }
            Self::Oci {
                name,
                binary,
                bundle,
                root,
            } => {
                let mut c = Command::new(binary);
                c.arg("--root")
                    .arg(root)
                    .args(["run", "--bundle"])
                    .arg(bundle)
                    .arg(format!("bench-{name}-{round}"));
                if *name == "crun" {
                    hide_unified(&mut c);
                }
                c
            }
            Self::Bwrap(binary) => {
                let mut c = Command::new(binary);
                c.args(["--unshare-all", "--share-net", "--die-with-parent"]);
                for dir in ["/bin", "/etc", "/lib", "/lib64", "/sbin", "/usr"] {
                    if Path::new(dir).exists() {
                        c.args(["--ro-bind", dir, dir]);
                    }
                }
                c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
                    .args(["--uid", "65534", "--gid", "65534", "/bin/true"]);
                c
            }
        }
    }
}

/// crun refuses a "hybrid" node (v1 controllers and a cgroup2 mount at
/// /sys/fs/cgroup/unified): it runs in a mount namespace of its own where an empty tmpfs
/// hides that mount.
fn hide_unified(command: &mut Command) {
    if !Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        return;
    }
    // SAFETY: unshare and mount are plain system calls, async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            use nix::mount::{MsFlags, mount};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some("tmpfs"),
                "/sys/fs/cgroup/unified",
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )?;
            Ok(())
        });
    }
}

/// An OCI bundle of busybox-static: `/bin/true` and `/bin/sleep` as uid 65534, in pid,
/// ipc, uts and mount namespaces (the host's network, as `execdriver run` has by default),
/// its cgroup under the bench's slice.
fn make_bundle(bundle: &Path, slice: &str, runtime: &str) {
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).expect("bundle rootfs");
    for dir in ["proc", "dev", "tmp"] {
        fs::create_dir_all(bundle.join("rootfs").join(dir)).expect("bundle dir");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (`.ci/bench-peers` installs it)");
    fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    for applet in ["true", "sleep", "sh"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 65534, "gid": 65534},
            "args": ["/bin/true"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "ambient": []},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}
        ],
        "linux": {
            "cgroupsPath": format!("/{slice}.slice/{runtime}"),
            "resources": {"pids": {"limit": 64}},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        }
    });
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("config json"),
    )
    .expect("write config.json");
}

/// Runs `command` in the meter cgroup (in a process group of its own) to its end: its wall
/// time and the CPU of everything under the slice meanwhile.
fn metered(bench: &Bench, mut command: Command) -> (Duration, Duration) {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(bench.meter.join("cgroup.procs"))
        .expect("open the meter's cgroup.procs");
    let fd = procs.as_raw_fd();
    // SAFETY: write(2) of a constant buffer to an open fd is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    bench.settle();
    let cpu = bench.cpu();
    let t = Instant::now();
    let status = command.status().expect("spawn a runner");
    let wall = t.elapsed();
    assert!(status.success(), "{command:?}: {status}");
    bench.settle();
    (wall, bench.cpu().saturating_sub(cpu))
}

fn run_true(bench: &Bench, runners: &[Runner], rounds: usize, table: &mut Table) {
    let mut wall = vec![Vec::new(); runners.len()];
    let mut cpu = vec![Vec::new(); runners.len()];
    // One warm-up of each, then the rounds, each in a rotated order.
    for round in 0..=rounds {
        for k in 0..runners.len() {
            if stopped() {
                return;
            }
            let i = (round + k) % runners.len();
            let (w, c) = metered(bench, runners[i].true_command(bench, round));
            if round > 0 {
                wall[i].push(w);
                cpu[i].push(c);
            }
        }
    }
    let cells = |samples: &mut Vec<Vec<Duration>>| -> Vec<(String, f64)> {
        runners
            .iter()
            .zip(samples.iter_mut())
            .map(|(r, s)| (r.name().to_owned(), ms(median(s))))
            .collect()
    };
    table.row(
        format!("`run -- /bin/true`, CPU summed in a wrapping cgroup (median of {rounds})"),
        "ms",
        cells(&mut cpu),
    );
    table.row(
        format!("`run -- /bin/true`, wall (median of {rounds})"),
        "ms",
        cells(&mut wall),
    );
}

/// `smaps_rollup` fields and the thread count of one process.
#[derive(Default, Clone, Copy)]
struct Mem {
    pss_kb: f64,
    rss_kb: f64,
    threads: f64,
}

fn mem_of(pid: i64) -> Mem {
    let field = |file: &str, key: &str| -> f64 {
        read(Path::new(&format!("/proc/{pid}/{file}")))
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Mem {
        pss_kb: field("smaps_rollup", "Pss:"),
        rss_kb: field("smaps_rollup", "Rss:"),
        threads: field("status", "Threads:"),
    }
}

/// Starts a `sleep 600` under `binary`; its handle id.
fn start_sleep(bench: &Bench, binary: &Path) -> String {
    let out = Command::new(binary)
        .arg("start")
        .arg("--data-dir")
        .arg(&bench.data_dir)
        .args(["--kill-timeout", "5s", "--", "/bin/sleep", "600"])
        .process_group(0)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn execdriver start");
    assert!(out.status.success(), "{} start failed", binary.display());
    let handle = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    bench.remember(binary, &handle);
    handle
}

fn kill_handle(binary: &Path, data_dir: &Path, handle: &str) -> std::io::Result<()> {
    let mut child = Command::new(binary)
        .arg("kill")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("-")
        .process_group(0)
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(handle.as_bytes())?;
    }
    let status = child.wait()?;
    // The kill's status is the task's (killed by a signal); only a driver failure counts.
    if status.code() == Some(125) {
        return Err(std::io::Error::other(format!("kill {handle}: {status}")));
    }
    Ok(())
}

fn kill_sleep(bench: &Bench, binary: &Path, handle: &str) {
    kill_handle(binary, &bench.data_dir, handle).expect("execdriver kill");
    bench.forget(handle);
}

fn pid_in(handle: &str, path: &[&str]) -> i64 {
    let mut v: serde_json::Value = serde_json::from_str(handle).expect("handle id is json");
    for key in path {
        v = v[*key].take();
    }
    v.as_i64().unwrap_or(0)
}

/// How many tasks (or containers) each memory figure is the median of.
const MEMORY_SAMPLES: usize = 5;

fn memory(bench: &Bench, runners: &[Runner], table: &mut Table) {
    let mut supervisor = Vec::new();
    let mut init = Vec::new();
    for runner in runners {
        let (mut sup, mut ini) = (Vec::new(), Vec::new());
        for _ in 0..MEMORY_SAMPLES {
            if stopped() {
                return;
            }
            if let Some(binary) = runner.driver_binary() {
                let handle = start_sleep(bench, binary);
                let pids = [
                    pid_in(&handle, &["supervisor", "process", "pid"]),
                    pid_in(&handle, &["task", "pid"]),
                ];
                // Both finish their start after the handle is out (the supervisor gives
                // back its start's pages once the ready report is read): measured once
                // both wait.
                wait_until_waiting(&pids);
                sup.push(mem_of(pids[0]));
                ini.push(mem_of(pids[1]));
                kill_sleep(bench, binary, &handle);
            } else if let Runner::Oci {
                name: "crun",
                binary,
                bundle,
                root,
            } = runner
                && let Some(conmon) = which("conmon")
            {
                match conmon_memory(bench, &conmon, binary, bundle, root) {
                    Ok(mem) => sup.push(mem),
                    Err(e) => {
                        println!("conmon not measured: {e}");
                        break;
                    }
                }
            } else {
                break;
            }
        }
        let name = if runner.is_driver() {
            runner.name()
        } else {
            "conmon"
        };
        if !sup.is_empty() {
            supervisor.push((name.to_owned(), median_mem(&mut sup)));
        }
        if !ini.is_empty() {
            init.push((name.to_owned(), median_mem(&mut ini)));
        }
    }
    let pick = |rows: &[(String, Mem)], f: fn(&Mem) -> f64| -> Vec<(String, f64)> {
        rows.iter().map(|(n, m)| (n.clone(), f(m))).collect()
    };
    table.row(
        format!("supervisor while a `sleep` runs: Pss (median of {MEMORY_SAMPLES})"),
        "KiB",
        pick(&supervisor, |m| m.pss_kb),
    );
    table.row(
        "supervisor: RSS (of that sample)".into(),
        "KiB",
        pick(&supervisor, |m| m.rss_kb),
    );
    table.row(
        "supervisor: threads".into(),
        "",
        pick(&supervisor, |m| m.threads),
    );
    table.row(
        "the task's init (pid 1 of its namespace): Pss".into(),
        "KiB",
        pick(&init, |m| m.pss_kb),
    );
}

/// The sample of median Pss.
fn median_mem(samples: &mut [Mem]) -> Mem {
    samples.sort_by(|a, b| a.pss_kb.total_cmp(&b.pss_kb));
    samples[samples.len() / 2]
}

/// Waits (up to 3 s each) until every one of `pids` sleeps in poll(2), where the
/// supervisor's event loop and the init's reaper wait.
fn wait_until_waiting(pids: &[i64]) {
    for pid in pids {
        let by = Instant::now() + Duration::from_secs(3);
        while Instant::now() < by
            && !read(Path::new(&format!("/proc/{pid}/wchan"))).contains("poll")
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The last steps before the wait (madvise, malloc_trim) are done by then; a moment more
    // for a supervisor woken once more by its log pipes.
    std::thread::sleep(Duration::from_millis(50));
}

/// conmon with crun for one `sleep` container: conmon's memory while it runs.
fn conmon_memory(
    bench: &Bench,
    conmon: &Path,
    crun: &Path,
    bundle: &Path,
    root: &Path,
) -> Result<Mem, String> {
    let dir = bench.dir.path().join("conmon");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sleep_bundle = bench.dir.path().join("conmon-bundle");
    if !sleep_bundle.exists() {
        fs::create_dir_all(&sleep_bundle).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(bundle.join("rootfs"), sleep_bundle.join("rootfs"))
            .map_err(|e| e.to_string())?;
        let mut config: serde_json::Value = serde_json::from_slice(
            &fs::read(bundle.join("config.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        config["process"]["args"] = serde_json::json!(["/bin/sleep", "600"]);
        config["linux"]["cgroupsPath"] =
            serde_json::json!(format!("/{}.slice/conmon", bench.slice));
        fs::write(
            sleep_bundle.join("config.json"),
            serde_json::to_vec(&config).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    }
    // A wrapper that hides the unified mount from crun, as for `crun run`.
    let wrapper = dir.join("crun");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m sh -c 'mount --make-rprivate / && mount -t tmpfs none \
             /sys/fs/cgroup/unified && exec {} --root {} \"$0\" \"$@\"' \"$@\"\n",
            crun.display(),
            root.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let id = "bench-conmon";
    let pidfile = dir.join("conmon.pid");
    // The last sample's pid files would say too early that this one is up.
    for file in ["conmon.pid", "container.pid"] {
        let _ = fs::remove_file(dir.join(file));
    }
    let status = Command::new(conmon)
        .args(["--cid", id, "--cuuid", id, "--name", id, "--runtime"])
        .arg(&wrapper)
        .arg("--bundle")
        .arg(&sleep_bundle)
        .arg("--container-pidfile")
        .arg(dir.join("container.pid"))
        .arg("--conmon-pidfile")
        .arg(&pidfile)
        .arg("--exit-dir")
        .arg(&dir)
        .arg("--socket-dir-path")
        .arg(&dir)
        .arg("--log-path")
        .arg(format!("k8s-file:{}", dir.join("ctr.log").display()))
        .arg("--persist-dir")
        .arg(&dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("spawning conmon: {e}"))?;
    let pid: i64 = read(&pidfile).trim().parse().unwrap_or(0);
    let runtime = |args: &[&str]| {
        Command::new(&wrapper)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // conmon returns before its runtime has created the container: the pid file says when.
    let created = dir.join("container.pid");
    let by = Instant::now() + Duration::from_secs(10);
    while !created.exists() && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Started, the container's `sleep` runs under conmon.
    let mem = if !status.success() || pid <= 0 {
        Err(format!("conmon {status}, pid file {:?}", read(&pidfile)))
    } else if !runtime(&["start", id]) {
        Err("crun start after conmon failed".to_owned())
    } else {
        Ok(mem_of(pid))
    };
    let _ = runtime(&["kill", id, "KILL"]);
    let by = Instant::now() + Duration::from_secs(10);
    while !runtime(&["delete", id]) && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = runtime(&["delete", "--force", id]);
    let by = Instant::now() + Duration::from_secs(10);
    while pid > 0 && Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(10));
    }
    mem
}

/// The kernel memory once it has stopped falling: what the last batch's cgroups, mounts
/// and processes held is freed lazily (RCU, workqueues) for a while after they are gone,
/// and freed during a measurement it would make that batch look smaller (by up to 60 KiB
/// a task here). Polls every 250 ms until two readings are within 256 KiB, for 10 s at
/// most.
fn steady_kernel_memory_kb() -> f64 {
    let by = Instant::now() + Duration::from_secs(10);
    let mut last = kernel_memory_kb();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = kernel_memory_kb();
        if (last - now).abs() < 256.0 || Instant::now() >= by {
            return now;
        }
        last = now;
    }
}

/// Writes back dirty pages and drops the clean caches and reclaimable slabs (root only; a
/// failure leaves them, and the figures noisier).
fn drop_caches() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// The `/proc/meminfo` fields `keys` (with their colons), in KiB, in one reading.
fn meminfo_kb<const N: usize>(keys: [&str; N]) -> [f64; N] {
    let meminfo = read(Path::new("/proc/meminfo"));
    keys.map(|key| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    })
}

fn used_memory_kb() -> f64 {
    let [total, available] = meminfo_kb(["MemTotal:", "MemAvailable:"]);
    total - available
}

/// The kernel's own memory in `/proc/meminfo`, in KiB: slabs, per-cpu areas, kernel
/// stacks and page tables. Unlike MemAvailable it does not move with the page cache, so its
/// change over 200 tasks says what their processes, mounts, namespaces and cgroups cost the
/// kernel.
fn kernel_memory_kb() -> f64 {
    meminfo_kb(["Slab:", "Percpu:", "KernelStack:", "PageTables:"])
        .iter()
        .sum()
}

/// What [`many_at_once_pass`] measures, one `(runner, value)` list per figure.
#[derive(Default)]
struct AtOnce {
    took: Vec<(String, f64)>,
    per_task: Vec<(String, f64)>,
    own: Vec<(String, f64)>,
    supervisor: Vec<(String, f64)>,
    init: Vec<(String, f64)>,
    kernel: Vec<(String, f64)>,
    /// The kernel memory of one bare `sleep` process, per pass.
    bare: Vec<f64>,
}

fn many_at_once(bench: &Bench, drivers: &[&Runner], n: usize, table: &mut Table) {
    let mut m = AtOnce::default();
    // The node's memory counts what the kernel keeps cached from the runner before (slabs of
    // freed cgroups, mounts, processes): the second runner of a pass reuses the first's. With
    // more than one runner there are two passes, the second in reverse order, and each
    // figure is the mean of a runner's two. A batch's cgroups and caches are freed lazily,
    // partly while the next batch is measured, which then looks smaller: an unmeasured batch
    // of the first runner goes before, so that in the two passes each runner follows each
    // runner once (without it the second runner followed a batch twice, the first once, and
    // measured 20 to 90 KiB a task less kernel memory in every run).
    let passes = if drivers.len() > 1 { 2 } else { 1 };
    let mut order: Vec<&Runner> = drivers.to_vec();
    if passes > 1 {
        many_at_once_pass(bench, &order[..1], n, &mut AtOnce::default());
    }
    for pass in 0..passes {
        if stopped() {
            break;
        }
        if pass > 0 {
            order.reverse();
        }
        m.bare.push(bare_sleeps_kernel_kb(bench, n));
        many_at_once_pass(bench, &order, n, &mut m);
    }
    let mean = |rows: Vec<(String, f64)>| -> Vec<(String, f64)> {
        drivers
            .iter()
            .map(|r| {
                let mine: Vec<f64> = rows
                    .iter()
                    .filter(|(name, _)| name == r.name())
                    .map(|(_, v)| *v)
                    .collect();
                (
                    r.name().to_owned(),
                    mine.iter().sum::<f64>() / mine.len().max(1) as f64,
                )
            })
            .collect()
    };
    table.row(format!("{n} tasks started at once"), "ms", mean(m.took));
    table.row(
        format!("node memory used per task (of {n}), beyond the task's own `sleep`"),
        "MiB",
        mean(m.per_task),
    );
    table.row("(the task's own `sleep`, Pss)".into(), "KiB", mean(m.own));
    table.row(
        format!("supervisor Pss, mean of the {n} running at once"),
        "KiB",
        mean(m.supervisor.clone()),
    );
    // The goal counts what a task costs beyond its own processes, so the kernel's share of
    // the `sleep` itself (its task_struct, mm, page tables, stack), measured on n bare
    // sleeps in the same passes, is taken off.
    let mean_of = |values: Vec<f64>| {
        let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            f64::NAN
        } else {
            finite.iter().sum::<f64>() / finite.len() as f64
        }
    };
    let bare = mean_of(m.bare.clone());
    let mut kernel = mean(m.kernel);
    let beyond: Vec<(String, f64)> = kernel.iter().map(|(r, v)| (r.clone(), v - bare)).collect();
    let supervisor = mean(m.supervisor);
    let init = mean(m.init);
    let host: Vec<(String, f64)> = beyond
        .iter()
        .map(|(r, k)| {
            let of = |rows: &[(String, f64)]| {
                rows.iter()
                    .find(|(n, _)| n == r)
                    .map_or(f64::NAN, |(_, v)| *v)
            };
            (r.clone(), of(&supervisor) + of(&init) + k)
        })
        .collect();
    kernel.push(("/bin/sleep".to_owned(), bare));
    table.row(format!("the task's init Pss, mean of the {n}"), "KiB", init);
    table.row(
        format!(
            "kernel memory per task (of {n}): slab, per-cpu, stacks, page tables \
             (/bin/sleep: per bare `sleep` of {n})"
        ),
        "KiB",
        kernel,
    );
    table.row(
        "kernel memory per task, beyond its `sleep`'s own".into(),
        "KiB",
        beyond,
    );
    table.row(
        "host memory per task beyond its `sleep`: supervisor + init Pss + that kernel memory"
            .into(),
        "KiB",
        host,
    );
}

/// The kernel memory (as [`kernel_memory_kb`] counts it) that each of `n` bare `sleep`
/// processes costs: what a task's own process costs the kernel, without any driver.
fn bare_sleeps_kernel_kb(bench: &Bench, n: usize) -> f64 {
    bench.settle();
    if bench.drop_caches {
        drop_caches();
    }
    let before = steady_kernel_memory_kb();
    let mut sleeps = Vec::with_capacity(n);
    for _ in 0..n {
        match Command::new("/bin/sleep")
            .arg("600")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(child) => sleeps.push(child),
            Err(e) => {
                println!("a bare /bin/sleep did not start: {e}");
                break;
            }
        }
    }
    // Each is counted once its exec is done and it sleeps.
    for child in &sleeps {
        let pid = child.id();
        let by = Instant::now() + Duration::from_secs(3);
        while Instant::now() < by
            && !read(Path::new(&format!("/proc/{pid}/wchan"))).contains("sleep")
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let after = kernel_memory_kb();
    let started = sleeps.len();
    for mut child in sleeps {
        let _ = child.kill();
        let _ = child.wait();
    }
    if started == 0 {
        return f64::NAN;
    }
    (after - before) / started as f64
}

/// One pass of [`many_at_once`]: each runner in `order` starts `n` tasks at once, then
/// kills them.
fn many_at_once_pass(bench: &Bench, order: &[&Runner], n: usize, m: &mut AtOnce) {
    for runner in order {
        let Some(binary) = runner.driver_binary() else {
            continue;
        };
        bench.settle();
        // The reclaimable caches (dentries, inodes, page cache) that the last runner left
        // are otherwise reused or reclaimed by this one's tasks, and move both memory figures
        // by more than the runners differ; dropping them is the whole node's, so only when
        // asked.
        if bench.drop_caches {
            drop_caches();
        }
        let kernel_before = steady_kernel_memory_kb();
        let before = used_memory_kb();
        let t = Instant::now();
        let handles: Vec<String> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..n)
                .map(|_| s.spawn(|| start_sleep(bench, binary)))
                .collect();
            starts.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        m.took.push((runner.name().to_owned(), ms(t.elapsed())));
        if handles.len() < n {
            println!(
                "{}: {} of {n} starts at once failed (see above)",
                runner.name(),
                n - handles.len()
            );
        }
        // Measured once every supervisor and init has given back its start's pages (after
        // its ready report, so not yet when the start returns).
        let supervisor = ["supervisor", "process", "pid"];
        let init = ["task", "pid"];
        let pids: Vec<i64> = handles
            .iter()
            .flat_map(|h| [pid_in(h, &supervisor), pid_in(h, &init)])
            .collect();
        wait_until_waiting(&pids);
        let after = used_memory_kb();
        let kernel_after = kernel_memory_kb();
        // Each process's share of what the tasks' processes map together (the binary's
        // text above all), as it is with n of them on the node.
        let mean_pss = |path: &[&str]| -> f64 {
            let all: Vec<f64> = handles
                .iter()
                .map(|h| mem_of(pid_in(h, path)).pss_kb)
                .filter(|p| p.is_finite())
                .collect();
            if all.is_empty() {
                f64::NAN
            } else {
                all.iter().sum::<f64>() / all.len() as f64
            }
        };
        let name = runner.name().to_owned();
        let started = handles.len().max(1) as f64;
        m.supervisor.push((name.clone(), mean_pss(&supervisor)));
        m.init.push((name.clone(), mean_pss(&init)));
        m.kernel
            .push((name, (kernel_after - kernel_before) / started));
        // The tasks' own processes (each `sleep`): the init's child in its pid namespace.
        let sleeps: f64 = handles
            .iter()
            .map(|h| {
                let pid = pid_in(h, &init);
                let children = read(Path::new(&format!("/proc/{pid}/task/{pid}/children")));
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(|p| mem_of(p).pss_kb)
                    .filter(|p| p.is_finite())
                    .sum::<f64>()
            })
            .sum();
        m.per_task.push((
            runner.name().to_owned(),
            (after - before - sleeps) / started / 1024.0,
        ));
        m.own.push((runner.name().to_owned(), sleeps / started));
        std::thread::scope(|s| {
            for handle in &handles {
                s.spawn(|| kill_sleep(bench, binary, handle));
            }
        });
    }
}

fn cycle(bench: &Bench, drivers: &[&Runner], n: usize, table: &mut Table) {
    let mut samples = vec![Vec::new(); drivers.len()];
    for round in 0..n {
        for k in 0..drivers.len() {
            if stopped() {
                return;
            }
            let i = (round + k) % drivers.len();
            let Some(binary) = drivers[i].driver_binary() else {
                continue;
            };
            let t = Instant::now();
            let handle = start_sleep(bench, binary);
            kill_sleep(bench, binary, &handle);
            samples[i].push(t.elapsed());
        }
    }
    let mut pct = |p: f64| -> Vec<(String, f64)> {
        drivers
            .iter()
            .zip(samples.iter_mut())
            .map(|(r, s)| (r.name().to_owned(), ms(percentile(s, p))))
            .collect()
    };
    table.row(format!("start+kill cycle, p50 of {n}"), "ms", pct(0.5));
    table.row(format!("start+kill cycle, p99 of {n}"), "ms", pct(0.99));
}

fn status_and_kill(bench: &Bench, drivers: &[&Runner], rounds: usize, table: &mut Table) {
    let mut status = vec![Vec::new(); drivers.len()];
    let mut kill = vec![Vec::new(); drivers.len()];
    let mut version = vec![Vec::new(); drivers.len()];
    let mut floor = Vec::new();
    for round in 0..rounds {
        floor.push(spawned(Command::new("/bin/true")));
        for k in 0..drivers.len() {
            if stopped() {
                return;
            }
            let i = (round + k) % drivers.len();
            let Some(binary) = drivers[i].driver_binary() else {
                continue;
            };
            let mut bare = Command::new(binary);
            bare.arg("--version");
            version[i].push(spawned(bare));
            let handle = start_sleep(bench, binary);
            let t = Instant::now();
            let out = Command::new(binary)
                .arg("status")
                .arg("--data-dir")
                .arg(&bench.data_dir)
                .arg(&handle)
                .stdout(Stdio::null())
                .status()
                .expect("spawn execdriver status");
            status[i].push(t.elapsed());
            assert!(out.success(), "execdriver status: {out}");
            // `sleep` dies of the kill signal (SIGINT) at once: this is the driver's cost.
            let t = Instant::now();
            kill_sleep(bench, binary, &handle);
            kill[i].push(t.elapsed());
        }
    }
    let cells = |samples: &mut Vec<Vec<Duration>>| -> Vec<(String, f64)> {
        drivers
            .iter()
            .zip(samples.iter_mut())
            .map(|(r, s)| (r.name().to_owned(), ms(median(s))))
            .collect()
    };
    table.row(
        format!("`status` (reattach) from a new process (median of {rounds})"),
        "ms",
        cells(&mut status),
    );
    table.row(
        format!("`kill` of a task that obeys SIGINT (median of {rounds})"),
        "ms",
        cells(&mut kill),
    );
    // What any new process costs on this node, to read the figures above against: a
    // goal below these is out of reach of a CLI, whatever the CLI does.
    table.row(
        format!("`--version` from a new process: its exec and start alone (median of {rounds})"),
        "ms",
        cells(&mut version),
    );
    table.row(
        format!("`/bin/true` from a new process: this node's floor (median of {rounds})"),
        "ms",
        vec![("/bin/true".to_owned(), ms(median(&mut floor)))],
    );
}

/// How long `command` took from its spawn to its reaping, output discarded.
fn spawned(mut command: Command) -> Duration {
    let t = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .status()
        .expect("spawn a command");
    let took = t.elapsed();
    assert!(status.success(), "{command:?}: {status}");
    took
}

fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let i = ((samples.len() as f64 * p) as usize).min(samples.len() - 1);
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rows of figures by runner, printed as one markdown table with each peer's ratio to
/// execdriver.
#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

/// What was measured, its unit, and the figure of each runner.
type Row = (String, &'static str, Vec<(String, f64)>);

impl Table {
    fn row(&mut self, what: String, unit: &'static str, cells: Vec<(String, f64)>) {
        if !cells.is_empty() {
            self.rows.push((what, unit, cells));
        }
    }

    fn print(&self) {
        let mut names: Vec<String> = Vec::new();
        for (_, _, cells) in &self.rows {
            for (name, _) in cells {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        // A bare command (a floor, named by its path) gets a column but no ratio.
        let peers: Vec<&String> = names
            .iter()
            .filter(|n| *n != "execdriver" && !n.starts_with('/'))
            .collect();
        print!("\n| figure | unit |");
        for name in &names {
            print!(" {name} |");
        }
        for peer in &peers {
            print!(" execdriver / {peer} |");
        }
        print!("\n|---|---|");
        for _ in 0..names.len() + peers.len() {
            print!("---|");
        }
        println!();
        for (what, unit, cells) in &self.rows {
            let get = |name: &str| cells.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            print!("| {what} | {unit} |");
            for name in &names {
                match get(name) {
                    Some(v) if v.is_finite() => print!(" {} |", fmt(v)),
                    _ => print!(" - |"),
                }
            }
            for peer in &peers {
                match (get("execdriver"), get(peer)) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b > 0.0 => {
                        print!(" {:.2}x |", a / b)
                    }
                    _ => print!(" - |"),
                }
            }
            println!();
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
