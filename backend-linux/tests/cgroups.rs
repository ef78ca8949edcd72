//! Real task cgroups, created under this test process's own cgroup in each hierarchy and
//! named `execdriver-test-<random>`. Needs root and the five controllers: without them each
//! test skips with a printed reason, unless `CI` is set, when it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use execdriver_core::Resources;
use execdriver_linux::cgroups::{
    CgroupError, CgroupParent, CgroupVersion, REQUIRED_CONTROLLERS, SUPERVISORS_CGROUP, TaskCgroup,
    join_supervisors_cgroup, probe, supervisors_cgroup_paths,
};
use execdriver_linux::testing;

const MIB: u64 = 1024 * 1024;

/// True when the test can run: root and every required controller (the skip and CI rule is
/// `execdriver_linux::testing`'s).
fn can_run(test: &str) -> bool {
    if !testing::require_root(test, "creates cgroups") {
        return false;
    }
    let p = probe();
    let unmet = (p.version.is_none() || !p.missing.is_empty())
        .then(|| format!("needs cgroups with {REQUIRED_CONTROLLERS:?}, probe found {p:?}"));
    testing::require(test, unmet)
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "execdriver-test-{}-{:08x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn resources(memory: u64, pids: u64) -> Resources {
    Resources {
        cpu_shares: 512,
        memory_limit_bytes: memory,
        memory_max_bytes: None,
        pids_max: pids,
        cpu_max_millicores: None,
        ..Default::default()
    }
}

/// Destroys the task cgroup on drop, so a failing test leaves nothing behind.
struct CgroupGuard {
    cgroup: Option<TaskCgroup>,
    paths: Vec<PathBuf>,
}

impl CgroupGuard {
    fn create(parent: &CgroupParent, res: &Resources) -> Self {
        let name = unique_name();
        let cgroup = TaskCgroup::create(parent, &name, res).expect("create task cgroup");
        Self {
            paths: cgroup.paths(),
            cgroup: Some(cgroup),
        }
    }

    fn get(&self) -> &TaskCgroup {
        self.cgroup.as_ref().expect("cgroup already destroyed")
    }

    fn destroy(&mut self) {
        let cgroup = self.cgroup.take().expect("cgroup already destroyed");
        cgroup.destroy().expect("destroy");
        for p in &self.paths {
            assert!(!p.exists(), "{} left after destroy", p.display());
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take()
            && let Err(e) = cgroup.destroy()
        {
            eprintln!("cleanup: destroying the test cgroup failed: {e}");
            for p in &self.paths {
                let _ = std::fs::remove_dir(p);
            }
        }
    }
}

/// Kills and reaps a child we spawned on drop.
struct ChildGuard(Child);

impl ChildGuard {
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A shell that waits for one line on stdin before running `script`, so that it can be put
/// in the cgroup before it does anything.
fn gated_shell(script: &str) -> ChildGuard {
    ChildGuard(
        Command::new("sh")
            .arg("-c")
            .arg(format!("read _gate; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    )
}

fn open_gate(child: &mut ChildGuard) {
    let mut stdin = child.0.stdin.take().expect("stdin piped");
    stdin.write_all(b"go\n").expect("open the gate");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn create_applies_limits_in_required_controllers_only_and_destroy_removes_them() {
    if !can_run("create_applies_limits") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(64 * MIB, 64));
    let cg = guard.get();
    assert_eq!(cg.version(), parent.version());
    let name = cg.name().to_owned();
    for p in cg.paths() {
        assert!(p.is_dir(), "{} missing", p.display());
        assert!(p.ends_with(&name));
    }
    match cg.version() {
        CgroupVersion::V1 => {
            let cpu = cg.controller_path("cpu").unwrap();
            let mem = cg.controller_path("memory").unwrap();
            let pids = cg.controller_path("pids").unwrap();
            assert_eq!(read(&cpu.join("cpu.shares")), "512");
            assert_eq!(
                read(&mem.join("memory.limit_in_bytes")),
                (64 * MIB).to_string()
            );
            // Swap off where swap accounting is on (the file exists only then).
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read(&memsw), (64 * MIB).to_string());
            } else {
                eprintln!("no swap accounting here: memory.memsw.limit_in_bytes not checked");
            }
            assert_eq!(read(&pids.join("pids.max")), "64");
            // No cpu limit asked for: the kernel's "none".
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
            // Not created in hierarchies the driver does not need.
            for other in ["cpuset", "devices", "blkio", "systemd"] {
                let root = Path::new("/sys/fs/cgroup").join(other);
                if root.is_dir() {
                    let hits = find_dirs(&root, &name);
                    assert!(hits.is_empty(), "created in {other}: {hits:?}");
                }
            }
        }
        CgroupVersion::V2 => {
            let dir = cg.controller_path("memory").unwrap();
            assert_eq!(read(&dir.join("memory.max")), (64 * MIB).to_string());
            assert_eq!(read(&dir.join("pids.max")), "64");
            assert_eq!(read(&dir.join("cpu.weight")), "20");
            assert_eq!(read(&dir.join("cpu.max")), "max 100000");
            for (file, value) in [("memory.swap.max", "0"), ("memory.oom.group", "1")] {
                if dir.join(file).exists() {
                    assert_eq!(read(&dir.join(file)), value, "{file}");
                }
            }
        }
    }
    // What create reports it applied is what the files hold.
    assert!(!cg.applied_limits().is_empty());
    for applied in cg.applied_limits() {
        assert_eq!(
            read(&applied.path),
            applied.value,
            "{}",
            applied.path.display()
        );
    }
    assert!(parent.contains(&name).unwrap());

    // The same name again is refused, and the refusal does not harm the existing cgroup.
    let again = TaskCgroup::create(&parent, &name, &resources(64 * MIB, 64));
    assert!(
        matches!(again, Err(CgroupError::AlreadyExists { .. })),
        "{again:?}"
    );
    for p in guard.get().paths() {
        assert!(p.is_dir(), "{} removed by a refused create", p.display());
    }

    let opened = TaskCgroup::open(&parent, &name)
        .unwrap()
        .expect("open finds it");
    assert_eq!(opened.paths(), guard.get().paths());
    guard.destroy();
    assert!(TaskCgroup::open(&parent, &name).unwrap().is_none());
    assert!(!parent.contains(&name).unwrap());
}

fn find_dirs(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![(root.to_owned(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == name {
                    hits.push(e.path());
                }
                if depth < 6 {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    hits
}

#[test]
fn memory_max_is_the_hard_limit_and_limit_the_soft_one() {
    if !can_run("memory_max") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut res = resources(32 * MIB, 16);
    res.memory_max_bytes = Some(48 * MIB);
    let guard = CgroupGuard::create(&parent, &res);
    let mem = guard.get().controller_path("memory").unwrap();
    match guard.get().version() {
        CgroupVersion::V1 => {
            assert_eq!(
                read(&mem.join("memory.limit_in_bytes")),
                (48 * MIB).to_string()
            );
            assert_eq!(
                read(&mem.join("memory.soft_limit_in_bytes")),
                (32 * MIB).to_string()
            );
            // Swap off: memory plus swap no higher than the hard limit.
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read(&memsw), (48 * MIB).to_string());
            } else {
                eprintln!("no swap accounting here: memory.memsw.limit_in_bytes not checked");
            }
        }
        CgroupVersion::V2 => {
            assert_eq!(read(&mem.join("memory.max")), (48 * MIB).to_string());
            assert_eq!(read(&mem.join("memory.high")), (32 * MIB).to_string());
        }
    }
}

#[test]
fn unaligned_memory_is_rounded_to_pages_not_refused() {
    if !can_run("unaligned_memory") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let guard = CgroupGuard::create(&parent, &resources(100_000_000, 16));
    let mem = guard.get().controller_path("memory").unwrap();
    let file = match guard.get().version() {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    let kept: u64 = read(&mem.join(file)).parse().unwrap();
    assert!(kept <= 100_000_000 && 100_000_000 - kept < 65_536, "{kept}");
}

#[test]
fn bad_names_resources_and_unwritable_limits_are_refused_and_leave_nothing() {
    if !can_run("refusals") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "../escape",
        "x/../../y",
        ".hidden",
        "sp ace",
    ] {
        let r = TaskCgroup::create(&parent, bad, &resources(64 * MIB, 16));
        assert!(
            matches!(r, Err(CgroupError::InvalidName { .. })),
            "{bad:?}: {r:?}"
        );
        assert!(matches!(
            TaskCgroup::open(&parent, bad),
            Err(CgroupError::InvalidName { .. })
        ));
    }
    let name = unique_name();
    let r = TaskCgroup::create(&parent, &name, &resources(64 * MIB, 0));
    assert!(matches!(r, Err(CgroupError::InvalidResources(_))), "{r:?}");
    // The kernel refuses pids.max beyond its pid limit: an error naming the file, rolled back.
    let r = TaskCgroup::create(&parent, &name, &resources(64 * MIB, 1 << 40));
    let err = r.expect_err("a huge pids max must not be accepted");
    assert!(err.to_string().contains("pids.max"), "{err}");
    assert!(
        !parent.contains(&name).unwrap(),
        "a failed create left {name}"
    );
    for p in parent.paths() {
        assert!(!p.join(&name).exists());
    }
}

#[test]
fn add_process_pids_kill_all_and_stats() {
    if !can_run("add_process_pids_kill_all") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(64 * MIB, 64));
    let mut child = gated_shell(
        "sleep 1000 & sleep 1000 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; wait",
    );
    let cg = guard.get();
    assert!(matches!(cg.add_process(0), Err(CgroupError::InvalidPid(0))));
    cg.add_process(child.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    for p in cg.paths() {
        let procs = read(&p.join("cgroup.procs"));
        assert_eq!(procs, child.pid().to_string(), "in {}", p.display());
    }
    open_gate(&mut child);
    assert!(
        wait_until(Duration::from_secs(10), || cg.pids().unwrap().len() == 3),
        "expected sh and two sleeps, got {:?}",
        cg.pids()
    );
    // Let the shell's loop burn some cpu for the stats.
    std::thread::sleep(Duration::from_millis(300));
    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids, 3);
    assert!(stats.memory.rss > 0, "{stats:?}");
    assert!(stats.memory.max_usage >= stats.memory.rss, "{stats:?}");
    assert!(stats.cpu.user_ns + stats.cpu.system_ns > 0, "{stats:?}");
    assert!(!cg.oom_killed().unwrap());

    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    let status = child.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Killing an empty cgroup is fine.
    cg.kill_all().unwrap();
    guard.destroy();
}

#[test]
fn destroy_kills_members_and_removes_nested_cgroups() {
    if !can_run("destroy_nested") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(64 * MIB, 64));
    let cg = guard.get();
    let child = ChildGuard(Command::new("sleep").arg("1000").spawn().unwrap());
    // A cgroup nested in the task's one (a task may make its own), holding our child.
    let mut nested = Vec::new();
    for p in cg.paths() {
        let sub = p.join("nested");
        std::fs::create_dir(&sub).unwrap();
        nested.push(sub);
    }
    for sub in &nested {
        std::fs::write(sub.join("cgroup.procs"), child.pid().to_string()).unwrap();
    }
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    guard.destroy();
    for sub in &nested {
        assert!(!sub.exists());
    }
    drop(child);
}

#[test]
fn oom_kill_is_reported() {
    if !can_run("oom_kill_is_reported") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(16 * MIB, 16));
    let cg = guard.get();
    let mut child =
        gated_shell("exec python3 -c 'import time; x = b\"a\" * (64 << 20); time.sleep(30)'");
    cg.add_process(child.pid()).unwrap();
    assert!(!cg.oom_killed().unwrap());
    open_gate(&mut child);
    let exited = wait_until(Duration::from_secs(20), || {
        child.0.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the allocating child was not killed");
    let status = child.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(cg.oom_killed().unwrap());
    assert!(cg.oom_kill_count().unwrap() >= 1);
    guard.destroy();
}

#[test]
fn fork_bomb_is_held_by_pids_max_and_cleaned_up() {
    if !can_run("fork_bomb") {
        return;
    }
    const MAX: u64 = 16;
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(64 * MIB, MAX));
    let cg = guard.get();
    let mut child = gated_shell("while true; do sleep 1000 & done");
    cg.add_process(child.pid()).unwrap();
    open_gate(&mut child);
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = cg.pids().unwrap().len();
        let current = cg.stats().unwrap().pids;
        assert!(n as u64 <= MAX, "{n} processes with pids max {MAX}");
        assert!(current <= MAX, "pids.current {current} with pids max {MAX}");
        most = most.max(n);
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("fork bomb: at most {most} pids seen with pids max {MAX}");
    assert!(
        most as u64 >= MAX / 2,
        "the bomb never got going: at most {most} pids"
    );
    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    guard.destroy();
}

#[test]
fn parent_below_own_cgroup_is_created_validated_and_removable() {
    if !can_run("parent_below_own") {
        return;
    }
    for bad in ["", "/", "a//b", "../x", "a/../b", "x/./y"] {
        assert!(
            matches!(
                CgroupParent::at(bad),
                Err(CgroupError::InvalidParent { .. })
            ),
            "{bad:?}"
        );
        assert!(
            matches!(
                CgroupParent::under_own(bad),
                Err(CgroupError::InvalidParent { .. })
            ),
            "{bad:?}"
        );
    }
    let own = CgroupParent::own().unwrap();
    assert!(matches!(own.remove(), Err(CgroupError::NotOurs { .. })));
    let outer = unique_name();
    let relative = format!("{outer}/inner");
    if own.can_host_tasks().is_err() {
        // A v2 cgroup with processes (a service's): no parent below it can get the
        // controllers, and saying so is the whole answer.
        let err =
            CgroupParent::under_own(&relative).expect_err("no controllers below a busy cgroup");
        assert!(err.to_string().contains("subtree_control"), "{err}");
        cleanup_under_own(&own, &outer);
        return;
    }
    let parent = match CgroupParent::under_own(&relative) {
        Ok(p) => p,
        Err(e) => {
            cleanup_under_own(&own, &outer);
            panic!("under_own: {e}");
        }
    };
    struct ParentGuard<'a>(&'a CgroupParent, &'a CgroupParent, &'a str);
    impl Drop for ParentGuard<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove();
            cleanup_under_own(self.1, self.2);
        }
    }
    let _cleanup = ParentGuard(&parent, &own, &outer);
    for (p, o) in parent.paths().iter().zip(own.paths()) {
        assert_eq!(p, &o.join(&outer).join("inner"));
        assert!(p.is_dir());
    }
    // Idempotent: asking again adopts the existing parent.
    assert_eq!(CgroupParent::under_own(&relative).unwrap(), parent);
    let mut guard = CgroupGuard::create(&parent, &resources(32 * MIB, 8));
    let child = ChildGuard(Command::new("sleep").arg("1000").spawn().unwrap());
    guard.get().add_process(child.pid()).unwrap();
    guard.destroy();
    parent.remove().unwrap();
    for p in parent.paths() {
        assert!(!p.exists());
    }
}

fn cleanup_under_own(own: &CgroupParent, outer: &str) {
    for o in own.paths() {
        let _ = std::fs::remove_dir(o.join(outer).join("inner"));
        let _ = std::fs::remove_dir(o.join(outer));
    }
}

/// The orphan cleanup's way in: a task cgroup found again from its recorded paths alone,
/// without resolving a parent, and nothing created for paths that are gone or refused.
#[test]
fn open_recorded_finds_kills_and_destroys_and_refuses_foreign_paths() {
    if !can_run("open_recorded") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(32 * MIB, 16));
    let name = guard.get().name().to_owned();
    let mut recorded = guard.get().paths();
    recorded.sort();
    let child = ChildGuard(Command::new("sleep").arg("1000").spawn().unwrap());
    guard.get().add_process(child.pid()).unwrap();

    let refused = |name: &str, paths: &[PathBuf]| {
        let result = TaskCgroup::open_recorded(name, paths);
        assert!(
            matches!(
                result,
                Err(CgroupError::InvalidRecordedPath { .. } | CgroupError::InvalidName { .. })
            ),
            "{name} at {paths:?} accepted: {result:?}"
        );
    };
    let outside = std::env::temp_dir().join(&name);
    let first = recorded[0].clone();
    let dotdot = first
        .parent()
        .unwrap()
        .join("..")
        .join(first.parent().unwrap().file_name().unwrap_or_default())
        .join(&name);
    let mut with_outside = recorded.clone();
    with_outside.push(outside.clone());
    refused(&name, std::slice::from_ref(&outside));
    refused(&name, &with_outside);
    refused(&name, std::slice::from_ref(&dotdot));
    refused(&name, &[PathBuf::from(&name)]);
    refused("execdriver-someone-else", &recorded);
    refused("../x", &recorded);
    // The same hierarchy twice is not a record this driver writes.
    refused(&name, &[first.clone(), first.clone()]);
    if let Some(blkio) = Some(Path::new("/sys/fs/cgroup/blkio")).filter(|p| p.is_dir()) {
        // A hierarchy the driver does not use.
        refused(&name, &[blkio.join(&name)]);
    }
    if let Some(cpuset) = Some(Path::new("/sys/fs/cgroup/cpuset")).filter(|p| p.is_dir()) {
        // One it uses for a task with a cpuset: accepted, and a directory that is not there
        // is not made.
        let path = cpuset.join(&name);
        assert!(matches!(
            TaskCgroup::open_recorded(&name, std::slice::from_ref(&path)),
            Ok(None)
        ));
        assert!(!path.exists());
    }
    assert!(!outside.exists(), "a refused path was created");

    // Found from the record alone; its members are killed, then it is removed.
    let opened = TaskCgroup::open_recorded(&name, &recorded)
        .unwrap()
        .expect("the recorded cgroup is there");
    assert_eq!(opened.name(), name);
    assert_eq!(opened.version(), parent.version());
    let mut paths = opened.paths();
    paths.sort();
    assert_eq!(paths, recorded);
    assert_eq!(opened.pids().unwrap(), vec![child.pid()]);
    opened.kill_all().unwrap();
    assert!(opened.pids().unwrap().is_empty());
    opened.destroy().unwrap();
    for p in &recorded {
        assert!(!p.exists(), "{} left after destroy", p.display());
    }
    // Gone: nothing to open, and nothing is made by asking.
    assert!(
        TaskCgroup::open_recorded(&name, &recorded)
            .unwrap()
            .is_none()
    );
    for p in &recorded {
        assert!(!p.exists(), "{} created by open_recorded", p.display());
    }
    // Already destroyed here: the guard has nothing left to do.
    drop(guard.cgroup.take());
}

/// A cgroup left in only some hierarchies (a crash mid-create or mid-destroy) is still found
/// through the paths that remain.
#[test]
fn open_recorded_keeps_the_paths_that_remain() {
    if !can_run("open_recorded_partial") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let guard = CgroupGuard::create(&parent, &resources(32 * MIB, 16));
    let name = guard.get().name().to_owned();
    let mut recorded = guard.get().paths();
    recorded.sort();
    if recorded.len() < 2 {
        eprintln!("one hierarchy only: nothing partial to test");
        return;
    }
    std::fs::remove_dir(&recorded[0]).unwrap();
    let opened = TaskCgroup::open_recorded(&name, &recorded)
        .unwrap()
        .expect("the rest is found");
    assert_eq!(opened.paths(), recorded[1..].to_vec());
    assert!(!recorded[0].exists(), "a gone path was re-created");
    opened.destroy().unwrap();
    for p in &recorded {
        assert!(!p.exists(), "{} left after destroy", p.display());
    }
}

#[test]
fn cpu_limit_is_a_cfs_quota_read_back_and_enforced() {
    if !can_run("cpu_limit") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    for (millicores, quota) in [(500, "50000"), (1500, "150000"), (2000, "200000")] {
        let mut res = resources(32 * MIB, 16);
        res.cpu_max_millicores = Some(millicores);
        let guard = CgroupGuard::create(&parent, &res);
        let cpu = guard.get().controller_path("cpu").unwrap();
        match guard.get().version() {
            CgroupVersion::V1 => {
                let (period, got) = (
                    read(&cpu.join("cpu.cfs_period_us")),
                    read(&cpu.join("cpu.cfs_quota_us")),
                );
                eprintln!("{millicores} millicores: cfs_period_us {period}, cfs_quota_us {got}");
                assert_eq!(period, "100000");
                assert_eq!(got, quota);
            }
            CgroupVersion::V2 => {
                let line = read(&cpu.join("cpu.max"));
                eprintln!("{millicores} millicores: cpu.max {line}");
                assert_eq!(line, format!("{quota} 100000"));
            }
        }
    }

    // Enforced: a busy loop held to 0.1 cpu is throttled within a few periods.
    let mut res = resources(32 * MIB, 16);
    res.cpu_max_millicores = Some(100);
    let mut guard = CgroupGuard::create(&parent, &res);
    let mut child = gated_shell("while :; do :; done");
    guard.get().add_process(child.pid()).unwrap();
    open_gate(&mut child);
    let cg = guard.get();
    assert!(
        wait_until(Duration::from_secs(20), || {
            cg.stats().unwrap().cpu.throttled_periods > 0
        }),
        "a busy loop at 0.1 cpu was never throttled: {:?}",
        cg.stats()
    );
    cg.kill_all().unwrap();
    guard.destroy();
}

#[test]
fn kill_all_within_a_budget_kills_and_returns_in_time() {
    if !can_run("kill_all_within") {
        return;
    }
    let test_parent = testing::TestParent::new("cgroups").unwrap();
    let parent = test_parent.parent().clone();
    let mut guard = CgroupGuard::create(&parent, &resources(64 * MIB, 64));
    let mut child = gated_shell("sleep 1000 & sleep 1000 & wait");
    guard.get().add_process(child.pid()).unwrap();
    open_gate(&mut child);
    let cg = guard.get();
    assert!(
        wait_until(Duration::from_secs(10), || cg.pids().unwrap().len() == 3),
        "{:?}",
        cg.pids()
    );
    let budget = Duration::from_secs(1);
    let started = Instant::now();
    cg.kill_all_within(budget).unwrap();
    let took = started.elapsed();
    assert!(took < budget + Duration::from_secs(2), "{took:?}");
    assert!(cg.pids().unwrap().is_empty());
    guard.destroy();
}

/// Removes, on drop, every directory given (deepest first, each tried until gone or 2 s),
/// after killing and reaping the child, so that a failing test leaves nothing behind.
struct DirsGuard {
    child: Option<ChildGuard>,
    dirs: Vec<PathBuf>,
}

impl Drop for DirsGuard {
    fn drop(&mut self) {
        drop(self.child.take());
        let mut dirs = self.dirs.clone();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(2);
            while dir.exists() && std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if dir.exists() {
                eprintln!("cleanup: {} is still there", dir.display());
            }
        }
    }
}

fn test_slice_name(what: &str) -> String {
    format!("execdriver-test-{what}-{}", std::process::id())
}

#[test]
fn driver_slice_is_top_level_hosts_tasks_and_is_removable() {
    if !can_run("driver_slice") {
        return;
    }
    let name = test_slice_name("slice");
    let slice_dirs: Vec<PathBuf> = {
        let own = CgroupParent::own().unwrap();
        // The slice's place in each required hierarchy: under the mountpoint, top level.
        own.paths()
            .iter()
            .map(|p| mountpoint_of(p).join(format!("{name}.slice")))
            .collect()
    };
    let mut cleanup = DirsGuard {
        child: None,
        dirs: slice_dirs.clone(),
    };
    assert!(
        slice_dirs.iter().all(|d| !d.exists()),
        "{slice_dirs:?} exist already"
    );
    let parent = CgroupParent::slice(&name).unwrap();
    let mut paths = parent.paths();
    paths.sort();
    let mut want = slice_dirs.clone();
    want.sort();
    assert_eq!(paths, want);
    // Idempotent: the slice is adopted when it exists.
    assert_eq!(CgroupParent::slice(&name).unwrap(), parent);
    assert!(CgroupParent::slice("a/b").is_err());
    if parent.version() == CgroupVersion::V1 {
        for other in ["cpuset", "devices", "blkio", "systemd"] {
            let dir = Path::new("/sys/fs/cgroup")
                .join(other)
                .join(format!("{name}.slice"));
            assert!(!dir.exists(), "slice made in {other}");
        }
    }
    parent.can_host_tasks().unwrap();
    let mut guard = CgroupGuard::create(&parent, &resources(32 * MIB, 16));
    for p in guard.get().paths() {
        assert_eq!(
            p.parent().and_then(Path::file_name),
            Some(std::ffi::OsStr::new(&format!("{name}.slice")))
        );
    }
    cleanup.child = Some(ChildGuard(
        Command::new("sleep").arg("1000").spawn().unwrap(),
    ));
    let pid = cleanup.child.as_ref().map(ChildGuard::pid).unwrap();
    guard.get().add_process(pid).unwrap();
    assert_eq!(guard.get().pids().unwrap(), vec![pid]);
    guard.destroy();
    parent.remove().unwrap();
    for d in &slice_dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
}

/// The mountpoint of the v1 hierarchy (or v2 mount) holding `dir`, from mountinfo.
fn mountpoint_of(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            (*fstype == "cgroup" || *fstype == "cgroup2").then(|| PathBuf::from(fields[4]))
        })
        .filter(|m| dir.starts_with(m))
        .max_by_key(|m| m.components().count())
        .expect("a cgroup mount holds the dir")
}

const JOIN_CHILD_ENV: &str = "EXECDRIVER_TEST_JOIN_SUPERVISORS_SLICE";

/// Not a test of its own: the child process of
/// `supervisors_cgroup_takes_the_calling_process_only_in_every_hierarchy`, which re-runs this
/// test binary with only this test and the slice name in the environment. It joins, says
/// where it is, and stays until its stdin closes. Without the variable it does nothing.
#[test]
fn join_supervisors_child_process() {
    let Ok(slice) = std::env::var(JOIN_CHILD_ENV) else {
        return;
    };
    match join_supervisors_cgroup(&slice) {
        Ok(joined) => {
            let paths: Vec<String> = joined
                .paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            println!("\nJOINED {}", paths.join("\t"));
        }
        Err(e) => println!("\nJOIN-FAILED {e}"),
    }
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
}

#[test]
fn supervisors_cgroup_takes_the_calling_process_only_in_every_hierarchy() {
    if !can_run("supervisors_cgroup") {
        return;
    }
    let name = test_slice_name("sup");
    let sup_dirs = supervisors_cgroup_paths(&name).unwrap();
    let mut dirs: Vec<PathBuf> = sup_dirs.clone();
    dirs.extend(
        sup_dirs
            .iter()
            .filter_map(|d| d.parent().map(Path::to_owned)),
    );
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?} exist already");
    let mut cleanup = DirsGuard { child: None, dirs };
    let own_before = std::fs::read_to_string("/proc/self/cgroup").unwrap();

    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "join_supervisors_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(JOIN_CHILD_ENV, &name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = cleanup.child.insert(ChildGuard(child));
    let pid = child.pid();
    let stdout = child.0.stdout.take().unwrap();
    // libtest prints "test <name> ... " before the child's own output, on the same line;
    // a child that ends without a word ends the lines too, so this cannot hang.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok);
    let line = lines
        .by_ref()
        .find(|l| l.contains("JOINED ") || l.contains("JOIN-FAILED "))
        .expect("the child says whether it joined");
    let (_, joined) = line
        .split_once("JOINED ")
        .unwrap_or_else(|| panic!("the child did not join: {line}"));
    let mut joined: Vec<PathBuf> = joined.split('\t').map(PathBuf::from).collect();
    joined.sort();
    let mut want = sup_dirs.clone();
    want.sort();
    assert_eq!(joined, want);

    // Every hierarchy, name=systemd and the ones without our controllers included.
    let rel = format!("/{name}.slice/{SUPERVISORS_CGROUP}");
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in theirs.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap();
        assert_eq!(path, rel, "{line} in {theirs}");
    }
    assert!(theirs.contains("name=systemd") || !Path::new("/sys/fs/cgroup/systemd").exists());
    for dir in &sup_dirs {
        assert_eq!(
            read(&dir.join("cgroup.procs")),
            pid.to_string(),
            "{}",
            dir.display()
        );
        let cpus = dir.join("cpuset.cpus");
        if cpus.exists() {
            assert!(
                !read(&cpus).is_empty(),
                "cpuset.cpus not copied into {}",
                dir.display()
            );
        }
    }
    // Only the child moved.
    assert_eq!(
        std::fs::read_to_string("/proc/self/cgroup").unwrap(),
        own_before
    );

    drop(child.0.stdin.take());
    // Read to the end: a child whose stdout is closed dies of EPIPE on its last words.
    lines.for_each(drop);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(cleanup);
    for dir in sup_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(sup_dirs.iter().filter_map(|d| d.parent()))
    {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

/// The cpus a process may run on, as the kernel lists them.
fn cpus_allowed(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned()
}

/// A cpuset through the way the driver makes a task cgroup: the paths decided (and the cpus
/// checked) by the parent, the cgroup created from them, a member pinned, everything removed.
#[test]
fn a_cpuset_pins_a_member_and_goes_with_the_cgroup() {
    if !can_run("a_cpuset_pins_a_member_and_goes_with_the_cgroup") {
        return;
    }
    let test_parent = testing::TestParent::new("cpuset").unwrap();
    let parent = test_parent.parent().clone();
    let name = unique_name();
    let first = cpus_allowed("self")
        .split([',', '-'])
        .next()
        .expect("a cpu")
        .to_owned();
    let res = Resources {
        cpuset_cpus: Some(first.clone()),
        ..resources(32 * MIB, 16)
    };
    let bad = Resources {
        cpuset_cpus: Some("8191".into()),
        ..res.clone()
    };
    let err = parent.task_paths(&name, &bad).unwrap_err();
    assert!(
        matches!(err, CgroupError::CpusNotAllowed { .. }) && err.to_string().contains("8191"),
        "{err}"
    );
    let paths = parent.task_paths(&name, &res).expect("task paths");
    if parent.version() == CgroupVersion::V1 {
        assert!(
            paths.iter().any(|p| p.starts_with("/sys/fs/cgroup/cpuset")),
            "{paths:?}"
        );
    }
    let cgroup = TaskCgroup::create_recorded(&name, &paths, &res).expect("create");
    let mut guard = CgroupGuard {
        paths: cgroup.paths(),
        cgroup: Some(cgroup),
    };
    let child = ChildGuard(Command::new("sleep").arg("1000").spawn().unwrap());
    guard.get().add_process(child.pid()).unwrap();
    assert_eq!(cpus_allowed(&child.pid().to_string()), first);
    // Found again from the record alone, and destroyed in every hierarchy.
    let opened = TaskCgroup::open_recorded(&name, &paths)
        .unwrap()
        .expect("there");
    // Destroyed through the record, not by the guard.
    let destroyed = opened.destroy();
    guard.cgroup = None;
    destroyed.unwrap();
    assert_eq!(opened.paths().len(), paths.len());
    drop(child);
    for p in &paths {
        assert!(!p.exists(), "{} left", p.display());
    }
}

/// The directory `pid` is in within `standin`'s hierarchy (the cpuset one on v1, the unified
/// one on v2), below that hierarchy's `mountpoint`.
fn dir_of(standin: &execdriver_linux::cgroups::NomadCgroup, mountpoint: &str, pid: i32) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let rel = standin
        .hierarchy_path_in(&text)
        .expect("a cpuset or unified line");
    under_mount(mountpoint, rel)
}

/// The directory of hierarchy path `rel` below a mountpoint (no container mount roots here).
fn under_mount(mountpoint: &str, rel: &str) -> PathBuf {
    Path::new(mountpoint).join(rel.trim_start_matches('/'))
}

/// A cgroup named for the task's cpuset (Nomad's `cpuset_cgroup`): the task's cgroup goes
/// beneath it (v2; v1 with cpus) or the task joins it (v1 without cpus), the stand-in can
/// still narrow its cpus while the task runs, and destroying the task's cgroup leaves the
/// stand-in alone. Runs in the v2 guest too.
#[test]
fn a_named_cpuset_cgroup_holds_the_task_and_outlives_it() {
    if !can_run("a_named_cpuset_cgroup_holds_the_task_and_outlives_it") {
        return;
    }
    let test_parent = testing::TestParent::new("named-cpuset").unwrap();
    let parent = test_parent.parent().clone();
    let v1 = parent.version() == CgroupVersion::V1;
    let mount = if v1 {
        "/sys/fs/cgroup/cpuset"
    } else {
        "/sys/fs/cgroup"
    };
    let cpus = cpus_allowed("self");
    let first = cpus.split([',', '-']).next().expect("a cpu").to_owned();
    let standin_name = format!("{}-nomad", unique_name());
    let share = execdriver_linux::cgroups::NomadCgroup::create(&standin_name, &parent.paths()[0])
        .expect("stand-in");

    // The shared partition, without reserved cores.
    let name = unique_name();
    let res = Resources {
        cpuset_cgroup: Some(share.path().to_owned()),
        ..resources(32 * MIB, 16)
    };
    let placement = parent.task_placement(&name, &res).expect("placement");
    if v1 {
        assert_eq!(placement.join, vec![share.path().to_owned()]);
        assert!(matches!(
            parent.task_paths(&name, &res),
            Err(CgroupError::CpusetCgroup { .. })
        ));
        assert!(
            !placement.paths.iter().any(|p| p.starts_with(mount)),
            "{placement:?}"
        );
    } else {
        assert_eq!(placement.paths, vec![share.path().join(&name)]);
        assert!(placement.join.is_empty());
    }
    let cgroup =
        TaskCgroup::create_recorded_joining(&name, &placement.paths, &placement.join, &res)
            .expect("create");
    let mut guard = CgroupGuard {
        paths: cgroup.paths(),
        cgroup: Some(cgroup),
    };
    let child = ChildGuard(Command::new("sleep").arg("1000").spawn().unwrap());
    guard.get().add_process(child.pid()).unwrap();
    let at = dir_of(&share, mount, child.pid());
    let expected = if v1 {
        share.path().to_owned()
    } else {
        share.path().join(&name)
    };
    assert_eq!(at, expected);
    assert_eq!(cpus_allowed(&child.pid().to_string()), cpus);
    if v1 && first != cpus {
        // What Nomad does when another task reserves cores: a child holding a copy of the
        // cpus would make this EBUSY.
        std::fs::write(share.path().join("cpuset.cpus"), &first).expect("narrow the share");
        assert_eq!(cpus_allowed(&child.pid().to_string()), first);
        std::fs::write(share.path().join("cpuset.cpus"), &cpus).expect("widen the share");
    }
    let opened = TaskCgroup::open_recorded(&name, &placement.paths)
        .unwrap()
        .expect("there");
    let destroyed = opened.destroy();
    guard.cgroup = None;
    destroyed.unwrap();
    drop(child);
    for p in &placement.paths {
        assert!(!p.exists(), "{} left", p.display());
    }
    assert!(share.path().is_dir(), "the stand-in went with the task");
    assert!(share.pids().unwrap().is_empty());

    // A task with reserved cores beneath the cgroup Nomad made for it (on v1 with mems
    // only: its cpus are the driver's to write).
    let mut reserve = share;
    let scope = reserve.child("a1.web").expect("scope");
    let name = unique_name();
    let res = Resources {
        cpuset_cpus: Some(first.clone()),
        cpuset_cgroup: Some(scope.clone()),
        ..resources(32 * MIB, 16)
    };
    let supports_cpuset = v1
        || std::fs::read_to_string(scope.join("cgroup.controllers"))
            .unwrap()
            .split_whitespace()
            .any(|c| c == "cpuset");
    if supports_cpuset {
        let placement = parent.task_placement(&name, &res).expect("placement");
        assert!(placement.join.is_empty());
        assert!(
            placement.paths.contains(&scope.join(&name)),
            "{placement:?}"
        );
        let cgroup = TaskCgroup::create_recorded(&name, &placement.paths, &res).expect("create");
        let mut guard = CgroupGuard {
            paths: cgroup.paths(),
            cgroup: Some(cgroup),
        };
        let child = ChildGuard(Command::new("sleep").arg("1000").spawn().unwrap());
        guard.get().add_process(child.pid()).unwrap();
        assert_eq!(dir_of(&reserve, mount, child.pid()), scope.join(&name));
        assert_eq!(cpus_allowed(&child.pid().to_string()), first);
        guard.destroy();
        drop(child);
        assert!(scope.is_dir(), "Nomad's task cgroup went with the task");
        assert!(!scope.join(&name).exists());
    } else {
        eprintln!("the stand-in's parent offers no cpuset: the reserved-cores case is not run");
    }

    // Refused by name before anything is made: outside the hierarchy, missing, the root.
    let missing = reserve.top().join("never-made");
    for (path, needle) in [
        (PathBuf::from("/tmp"), "not a cgroup inside"),
        (missing.clone(), "does not exist"),
        (PathBuf::from(mount), "not a cgroup inside"),
    ] {
        let name = unique_name();
        let res = Resources {
            cpuset_cgroup: Some(path.clone()),
            ..resources(32 * MIB, 16)
        };
        let err = parent.task_placement(&name, &res).unwrap_err();
        assert!(
            matches!(err, CgroupError::CpusetCgroup { .. }) && err.to_string().contains(needle),
            "{}: {err}",
            path.display()
        );
        assert!(!parent.contains(&name).unwrap());
    }
    assert!(!missing.exists());
}
