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
    CgroupError, CgroupParent, CgroupVersion, REQUIRED_CONTROLLERS, TaskCgroup, probe,
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
    let parent = CgroupParent::own().unwrap();
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
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read(&memsw), (64 * MIB).to_string());
            }
            assert_eq!(read(&pids.join("pids.max")), "64");
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
        }
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    let parent = CgroupParent::own().unwrap();
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
    if let Some(cpuset) = Some(Path::new("/sys/fs/cgroup/cpuset")).filter(|p| p.is_dir()) {
        // A hierarchy the driver does not use.
        refused(&name, &[cpuset.join(&name)]);
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
    let parent = CgroupParent::own().unwrap();
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
