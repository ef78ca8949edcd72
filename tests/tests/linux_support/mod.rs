//! Shared support of the Linux end-to-end tests (included by `linux_*.rs` here and by
//! `backend-linux/tests/cli.rs`): a private data dir per test, and a guard
//! that kills and removes whatever a test left, then checks that nothing of it remains.
//!
//! Uses std and the driver crates only: the tests crate has no tempfile, nix or libc.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use execdriver_core::{Driver, HandleId, Platform, TaskConfig, TaskSpec};
use execdriver_linux::cgroups::cgroup_name;
use execdriver_linux::{LinuxConfig, LinuxPlatform};

/// The `execdriver` binary next to this test's target dir (`target/<profile>/execdriver`).
pub fn binary_from_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is in target/<profile>/deps");
    let bin = profile_dir.join("execdriver");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p execdriver-linux, or run the tests with --workspace)",
        bin.display()
    );
    bin
}

/// A directory removed when dropped, also when the test fails.
pub struct DirGuard(pub PathBuf);

impl DirGuard {
    /// Creates a fresh dir under the temp dir.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_id(prefix));
        fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique task id for this test process.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One test's private world: a data dir, a driver slice of its own, a platform on them, and
/// the handles to clean up.
pub struct TestEnv {
    /// The data dir (canonical), removed on drop.
    pub data: PathBuf,
    /// The name of this env's driver slice (`/<slice>.slice`, with the supervisors cgroup in
    /// it), removed on drop: the shared node's own `execdriver.slice` is never touched.
    pub slice: String,
    /// The execdriver binary.
    pub binary: PathBuf,
    handles: Mutex<Vec<HandleId>>,
    task_ids: Mutex<Vec<String>>,
}

impl TestEnv {
    /// A fresh data dir under the temp dir.
    pub fn new(binary: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(unique_id("execdriver-test"));
        fs::create_dir_all(&dir).expect("create data dir");
        let data = fs::canonicalize(&dir).expect("canonical data dir");
        Self {
            data,
            slice: unique_id("execdriver-test"),
            binary,
            handles: Mutex::new(Vec::new()),
            task_ids: Mutex::new(Vec::new()),
        }
    }

    /// The platform config of this env, with a short linger: a supervisor whose task a
    /// failed test never collected exits after 30 s instead of 5 minutes.
    pub fn config(&self) -> LinuxConfig {
        LinuxConfig::new(&self.data)
            .with_slice_name(&self.slice)
            .with_supervisor_binary(&self.binary)
            .with_supervisor_linger(Duration::from_secs(30))
    }

    /// A platform on this env's data dir.
    pub fn platform(&self) -> LinuxPlatform {
        LinuxPlatform::new(self.config())
    }

    /// A driver on this env's data dir.
    pub fn driver(&self) -> Driver<LinuxPlatform> {
        Driver::new(self.platform())
    }

    /// A spec with a fresh task id, its alloc dir and task dir created, and short timeouts.
    pub fn spec(&self, command: &str, args: &[&str]) -> TaskSpec {
        let id = unique_id("t");
        let alloc = self.data.join("allocs").join(&id);
        let task_dir = alloc.join("task");
        fs::create_dir_all(&task_dir).expect("create task dir");
        let mut spec = TaskSpec::new(
            &id,
            "task",
            &alloc,
            &task_dir,
            TaskConfig::new(command, args.iter().copied()),
        );
        spec.kill_timeout = Duration::from_millis(500);
        spec.resources.memory_limit_bytes = 64 << 20;
        self.track_id(&id);
        spec
    }

    /// Remembers a handle to clean up and check at the end.
    pub fn track(&self, handle: HandleId) {
        self.track_id(&handle.task_id);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Remembers a task id whose cgroup and state dir are checked at the end.
    pub fn track_id(&self, task_id: &str) {
        let mut ids = self.task_ids.lock().unwrap_or_else(|e| e.into_inner());
        if !ids.iter().any(|i| i == task_id) {
            ids.push(task_id.to_owned());
        }
    }

    /// The handles of every task recorded in this env's data dir (`execdriver start` and
    /// friends record them there).
    fn stored_handles(&self) -> Vec<HandleId> {
        let driver = self.driver();
        let Ok(dir) = fs::read_dir(self.data.join("tasks")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter_map(|id| driver.handle_of(&id).ok())
            .collect()
    }

    /// Kills and removes everything of this env's tasks; returns what could not be done.
    pub fn cleanup(&self) -> Vec<String> {
        let platform = self.platform();
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        handles.extend(self.stored_handles());
        let mut failures = Vec::new();
        for h in &handles {
            let deadline = platform.now() + Duration::from_secs(10);
            for (step, result) in [
                ("kill supervisor", platform.kill_supervisor(h, deadline)),
                ("kill cgroup", platform.kill_cgroup(h, deadline)),
                ("destroy cgroup", platform.destroy_cgroup(h, deadline)),
                ("remove state", platform.remove_state(h)),
            ] {
                if let Err(e) = result {
                    failures.push(format!("{}: {step}: {e}", h.task_id));
                }
            }
        }
        failures
    }

    /// Checks that nothing of the env's tasks remains: no cgroup, no state dir, no mount
    /// under the data dir, no live supervisor or task process.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let ids = self
            .task_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for id in &ids {
            for dir in find_cgroup_dirs(&cgroup_name(id)) {
                found.push(format!("cgroup {}", dir.display()));
            }
            let state = self.data.join("tasks").join(id);
            if state.exists() {
                found.push(format!("state dir {}", state.display()));
            }
        }
        let handles = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for h in &handles {
            for (what, p) in [("supervisor", h.supervisor.process), ("task", h.task)] {
                if alive(&p) {
                    found.push(format!("{what} process {} of {}", p.pid, h.task_id));
                }
            }
        }
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            let data = self.data.to_string_lossy().into_owned();
            for line in mounts.lines().filter(|l| l.contains(&data)) {
                found.push(format!("mount {line}"));
            }
        }
        found
    }

    /// Removes every exited task of the env, as `execdriver rm` does, then waits up to
    /// `timeout` for the env to be clean and asserts it is: a task lives until it is
    /// removed, and its removal leaves nothing.
    pub fn assert_clean(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let driver = self.driver();
            let ids = self
                .task_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for id in &ids {
                // Refused for a task that still runs: then it is reported below.
                let _ = driver.remove_task(id, false);
            }
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("left behind: {left:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl TestEnv {
    /// Removes this env's slice (its supervisors cgroup, then the slice) in every
    /// hierarchy; what could not be removed.
    fn remove_slice(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let Ok(supervisors) = execdriver_linux::cgroups::supervisors_cgroup_paths(&self.slice)
        else {
            return failures;
        };
        for dir in supervisors {
            // Supervisors leave it as they exit: give the last ones a moment.
            let gone = eventually(Duration::from_secs(10), || {
                fs::remove_dir(&dir).is_ok() || !dir.exists()
            });
            let slice = dir.parent().map(Path::to_owned);
            let slice_gone = slice
                .as_ref()
                .is_none_or(|s| fs::remove_dir(s).is_ok() || !s.exists());
            if !gone || !slice_gone {
                failures.push(format!("slice dir {} or {slice:?} remains", dir.display()));
            }
        }
        failures
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let mut failures = self.cleanup();
        failures.extend(self.remove_slice());
        if !failures.is_empty() {
            eprintln!("cleanup of {}: {failures:#?}", self.data.display());
        }
        let _ = fs::remove_dir_all(&self.data);
    }
}

/// Whether the process with this identity still runs (not merely a zombie).
pub fn alive(p: &execdriver_core::ProcessIdentity) -> bool {
    match execdriver_linux::process::identity(p.pid) {
        Ok(now) if now == *p => {
            // A zombie has the same identity until reaped, but has run its course.
            let stat = fs::read_to_string(format!("/proc/{}/stat", p.pid)).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z")
        }
        _ => false,
    }
}

/// Every directory named `name` in the cgroup filesystems, up to the depth of the
/// repository's leak check.
pub fn find_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), name, 7, &mut found);
    found
}

fn walk(dir: &Path, name: &str, depth: u32, found: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        walk(&path, name, depth - 1, found);
    }
}

/// Pids of processes whose command line is exactly `args`.
pub fn pids_with_cmdline(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
