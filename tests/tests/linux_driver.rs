//! End to end through the library: `Driver<LinuxPlatform>` with real supervisors, cgroups
//! and namespaces. Needs root (fails loudly under CI without it) and the `execdriver` binary
//! next to this test's target dir (built by `cargo test --workspace`).
//!
//! Every test has its own data dir and a guard that kills and removes what it left, then
//! checks that no cgroup, state dir, mount or process of its tasks remains.

mod linux_support;

use std::fs;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use execdriver_core::{
    Driver, DriverError, HandleId, Platform, PlatformError, ProcessIdentity, Refusal, Signal,
    State, TaskErrorKind,
};
use execdriver_linux::cgroups::cgroup_name;
use execdriver_linux::process::Pidfd;
use execdriver_linux::{LinuxConfig, LinuxPlatform};
use linux_support::{
    DirGuard, TestEnv, alive, binary_from_target_dir, eventually, pids_with_cmdline, unique_id,
};

const CLEAN: Duration = Duration::from_secs(5);

fn env(test: &str) -> Option<TestEnv> {
    execdriver_linux::testing::require_root(test, "it creates cgroups and namespaces")
        .then(|| TestEnv::new(binary_from_target_dir()))
}

#[test]
fn exit_code_and_clean_teardown() {
    let Some(env) = env("exit_code_and_clean_teardown") else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sh", &["-c", "exit 3"]))
        .expect("start");
    env.track(task.handle_id());
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 3, "{result:?}");
    assert_eq!(result.signal, None);
    assert!(!result.oom_killed);
    assert_eq!(result.error, None);
    assert_eq!(task.state(), State::Exited);
    env.assert_clean(CLEAN);
}

#[test]
fn memory_limit_gives_an_oom_kill() {
    let Some(env) = env("memory_limit_gives_an_oom_kill") else {
        return;
    };
    let driver = env.driver();
    // tail keeps the whole "line" of /dev/zero in memory: it grows until the limit.
    let mut spec = env.spec("/usr/bin/tail", &["/dev/zero"]);
    spec.resources.memory_limit_bytes = 32 << 20;
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    let result = task
        .wait_timeout(Duration::from_secs(60))
        .expect("wait")
        .expect("the task should be OOM-killed well within a minute");
    assert!(result.oom_killed, "{result:?}");
    assert_eq!(result.signal, Some(Signal::SIGKILL), "{result:?}");
    assert_eq!(result.exit_code, 137);
    env.assert_clean(CLEAN);
}

#[test]
fn pids_limit_holds_a_fork_bomb() {
    let Some(env) = env("pids_limit_holds_a_fork_bomb") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec(
        "/bin/sh",
        &[
            "-c", // The bomb runs in the background; the main process needs no more forks.
            "(b() { b | b & }; b) & exec /bin/sleep 1000",
        ],
    );
    spec.resources.pids_max = 40;
    // Forty shells and their kernel memory (charged on v1) need more than the default here.
    spec.resources.memory_limit_bytes = 512 << 20;
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    thread::sleep(Duration::from_secs(1));
    for _ in 0..10 {
        let stats = match task.stats() {
            Ok(stats) => stats,
            Err(e) => panic!("stats: {e}; result {:?}", task.wait()),
        };
        assert!(stats.pids <= 40, "pids {} above the limit", stats.pids);
        thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    task.kill().expect("kill");
    assert!(started.elapsed() < Duration::from_secs(10));
    let result = task.wait().expect("wait");
    assert!(
        result.signal.is_some() || result.exit_code != 0,
        "{result:?}"
    );
    env.assert_clean(CLEAN);
}

#[test]
fn double_forked_daemon_dies_with_the_task() {
    let Some(env) = env("double_forked_daemon_dies_with_the_task") else {
        return;
    };
    let driver = env.driver();
    // The daemon leaves the task's session and process group; only the cgroup holds it.
    let marker = "7771";
    let script = format!("/usr/bin/setsid /bin/sleep {marker} & sleep 0.3; exit 0");
    let task = driver
        .start(&env.spec("/bin/sh", &["-c", &script]))
        .expect("start");
    env.track(task.handle_id());
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert!(
        eventually(Duration::from_secs(5), || pids_with_cmdline(&[
            "/bin/sleep",
            marker
        ])
        .is_empty()),
        "the daemon survived its task"
    );
    env.assert_clean(CLEAN);
}

#[test]
fn kill_of_a_task_ignoring_sigint_ends_within_the_timeout() {
    let Some(env) = env("kill_of_a_task_ignoring_sigint_ends_within_the_timeout") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec(
        "/bin/sh",
        &["-c", "trap '' INT; echo ready; while :; do sleep 0.1; done"],
    );
    spec.kill_timeout = Duration::from_secs(1);
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    wait_ready(&task);
    let started = Instant::now();
    task.kill().expect("kill");
    let took = started.elapsed();
    println!("kill took {took:?} with a 1 s kill timeout");
    // The promise (README, "How long a kill takes") is the kill timeout plus 2 s; a tighter
    // bound failed in the emulated v2 guest (1.57 s) with nothing wrong.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "kill took {took:?}, not between the 1 s kill timeout and it + 2 s"
    );
    let result = task.wait().expect("wait");
    assert_eq!(result.signal, Some(Signal::SIGKILL), "{result:?}");
    env.assert_clean(CLEAN);
}

/// The agent dies right after the kill signal: the supervisor still force-kills the task
/// when the grace period ends, and a new agent collects the exit.
#[test]
fn a_kill_completes_when_the_agent_dies_in_the_grace_period() {
    let Some(env) = env("a_kill_completes_when_the_agent_dies_in_the_grace_period") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec(
        "/bin/sh",
        &["-c", "trap '' INT; echo ready; while :; do sleep 0.1; done"],
    );
    spec.kill_timeout = Duration::from_secs(1);
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    let id = task.id();
    wait_ready(&task);
    // What kill() does before its wait, done by hand; then the "agent" is gone.
    let platform = env.platform();
    let soon = platform.now() + Duration::from_secs(5);
    let execdriver_core::Reattach::Live(conn) = platform
        .reattach(&task.handle_id(), soon)
        .expect("reattach")
    else {
        panic!("the supervisor should be live");
    };
    platform
        .begin_kill(&conn, Signal::SIGINT, Duration::from_secs(1), soon)
        .expect("begin the kill");
    drop((conn, platform, task, driver));

    let started = Instant::now();
    let task = env.driver().open(&id).expect("reopen");
    let result = task
        .wait_timeout(Duration::from_secs(20))
        .expect("wait")
        .expect("the supervisor should have killed the task after its grace");
    assert_eq!(result.signal, Some(Signal::SIGKILL), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    env.assert_clean(CLEAN);
}

#[test]
fn graceful_kill_lets_the_task_handle_its_signal() {
    let Some(env) = env("graceful_kill_lets_the_task_handle_its_signal") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec(
        "/bin/sh",
        &[
            "-c",
            "trap 'exit 9' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    spec.kill_signal = Signal::SIGTERM;
    spec.kill_timeout = Duration::from_secs(5);
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    wait_ready(&task);
    let started = Instant::now();
    task.kill().expect("kill");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(task.wait().expect("wait").exit_code, 9);
    env.assert_clean(CLEAN);
}

#[test]
fn wait_in_one_thread_kill_in_another() {
    let Some(env) = env("wait_in_one_thread_kill_in_another") else {
        return;
    };
    let driver = env.driver();
    let task = Arc::new(
        driver
            .start(&env.spec("/bin/sleep", &["1000"]))
            .expect("start"),
    );
    env.track(task.handle_id());
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let task = Arc::clone(&task);
            thread::spawn(move || task.wait())
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        task.wait_timeout(Duration::from_millis(100)).expect("wait"),
        None
    );
    task.kill().expect("kill");
    let results: Vec<_> = waiters
        .into_iter()
        .map(|w| w.join().expect("join").expect("wait"))
        .collect();
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    assert_eq!(results[0].signal, Some(Signal::SIGINT), "{:?}", results[0]);
    env.assert_clean(CLEAN);
}

/// On a node with only the unified hierarchy the supervisor is cloned straight into the
/// supervisors cgroup and the task's init into its own cgroup (clone3 with
/// CLONE_INTO_CGROUP), so that no write to `cgroup.procs` makes the start wait out an RCU
/// grace period; elsewhere both are moved by writes. Either way each ends up where it
/// belongs, and the supervisor starts with its own environment, which the task does not get.
#[test]
fn the_supervisor_and_the_init_are_born_in_their_cgroups_on_v2() {
    let Some(env) = env("the_supervisor_and_the_init_are_born_in_their_cgroups_on_v2") else {
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroups");
    // SAFETY: clone3 without arguments creates nothing: EINVAL, or ENOSYS where the kernel
    // (or a seccomp profile around us) has no clone3, and the driver then falls back.
    let no_clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) } == -1
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
    let only_unified = own.lines().count() == 1 && own.starts_with("0::") && !no_clone3;
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["60"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    let log = std::fs::read_to_string(handle.state_dir.join("supervisor.log")).expect("log");
    let how = if only_unified {
        "born in"
    } else {
        "moved into"
    };
    assert!(
        log.contains(&format!("{how} the supervisors cgroup")),
        "expected the supervisor {how} its cgroup: {log}"
    );
    assert!(
        log.contains(&format!("{how} cgroup {}", cgroup_name(&handle.task_id))),
        "expected the init {how} its cgroup: {log}"
    );
    let place = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("a process's cgroups")
    };
    let supervisor = place(handle.supervisor.process.pid);
    assert!(
        supervisor.contains(&format!("{}.slice/supervisors\n", env.slice)),
        "supervisor in {supervisor}"
    );
    let init = place(handle.task.pid);
    assert!(
        init.contains(&format!("{}\n", cgroup_name(&handle.task_id))),
        "init in {init}"
    );
    let environ = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .expect("a process's environment")
            .split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        environ(handle.supervisor.process.pid),
        ["GLIBC_TUNABLES=glibc.malloc.tcache_count=0"]
    );
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", handle.task.pid))
        .expect("the init's children");
    let sleep: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the task's sleep");
    let task_env = environ(sleep);
    assert!(
        task_env.iter().all(|e| !e.starts_with("GLIBC_TUNABLES=")),
        "{task_env:?}"
    );
    assert!(
        task_env.iter().any(|e| e.starts_with("PATH=")),
        "{task_env:?}"
    );
    task.kill().expect("kill");
    task.wait().expect("wait");
    env.assert_clean(CLEAN);
}

/// The agent looks the task's user up and hands the ids to the supervisor: neither the
/// supervisor nor the init maps an NSS module (and what such a module pulls in) for the
/// task's whole life, and the task still runs as that user with its groups.
#[test]
fn the_user_is_looked_up_by_the_agent_so_no_supervisor_maps_nss() {
    let Some(env) = env("the_user_is_looked_up_by_the_agent_so_no_supervisor_maps_nss") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec("/bin/sleep", &["60"]);
    spec.user = "nobody".into();
    let task = driver.start(&spec).expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    for (who, pid) in [
        ("supervisor", handle.supervisor.process.pid),
        ("init", handle.task.pid),
    ] {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
        let libs: Vec<&str> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.contains("/libnss_") || p.contains("/libcap"))
            .collect();
        assert!(libs.is_empty(), "the {who} maps {libs:?}");
    }
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", handle.task.pid))
        .expect("the init's children");
    let sleep = children
        .split_whitespace()
        .next()
        .expect("the task's sleep");
    let status = std::fs::read_to_string(format!("/proc/{sleep}/status")).expect("status");
    let field = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    let uid = nobody.uid.as_raw();
    let gid = nobody.gid.as_raw();
    assert_eq!(field("Uid:"), [uid; 4]);
    assert_eq!(field("Gid:"), [gid; 4]);
    let name = std::ffi::CString::new(nobody.name).expect("name");
    let mut want: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .expect("groups")
        .into_iter()
        .map(nix::unistd::Gid::as_raw)
        .collect();
    want.sort_unstable();
    want.dedup();
    let mut groups = field("Groups:");
    groups.sort_unstable();
    assert_eq!(groups, want);
    task.kill().expect("kill");
    task.wait().expect("wait");
    env.assert_clean(CLEAN);
}

#[test]
fn reattach_from_a_new_driver() {
    let Some(env) = env("reattach_from_a_new_driver") else {
        return;
    };
    let id = {
        let driver = env.driver();
        let task = driver
            .start(&env.spec("/bin/sh", &["-c", "sleep 1; exit 5"]))
            .expect("start");
        env.track(task.handle_id());
        task.id()
        // The first driver and its handle are dropped: the agent "restarts".
    };
    let driver = env.driver();
    let task = driver.open(&id).expect("reattach");
    assert_eq!(task.state(), State::Running);
    assert!(task.stats().is_ok());
    assert_eq!(task.wait().expect("wait").exit_code, 5);
    env.assert_clean(CLEAN);
}

#[test]
fn exit_record_outlives_the_supervisor() {
    let Some(env) = env("exit_record_outlives_the_supervisor") else {
        return;
    };
    let config = env
        .config()
        .with_supervisor_linger(Duration::from_millis(200));
    let platform = execdriver_linux::LinuxPlatform::new(config);
    let driver = execdriver_core::Driver::new(platform);
    let task = driver
        .start(&env.spec("/bin/sh", &["-c", "exit 4"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    let id = task.id();
    drop(task);
    // Nobody collects the exit: the supervisor lingers, then leaves only the record.
    assert!(
        eventually(Duration::from_secs(10), || !alive(
            &handle.supervisor.process
        )),
        "supervisor did not exit after its linger"
    );
    assert!(handle.state_dir.join("exit.json").exists());
    // The cgroup went with the exit, and so did the proof that its name is ours: a cgroup
    // of that name created since (by another data dir sharing the parent) is never touched.
    assert!(!handle.state_dir.join("cgroup.created").exists());
    assert!(!handle.state_dir.join("cgroup.json").exists());
    let task = env.driver().open(&id).expect("reattach to the exit record");
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 4, "{result:?}");
    env.assert_clean(CLEAN);
}

/// SIGKILLs the task's supervisor (our own, by verified pidfd) and waits until it is dead.
fn kill_supervisor(handle: &HandleId) {
    let supervisor = Pidfd::open_verified(&handle.supervisor.process)
        .expect("pidfd")
        .expect("supervisor alive");
    supervisor.signal(Signal::SIGKILL).expect("kill supervisor");
    assert!(
        supervisor
            .wait_exit(Some(Duration::from_secs(10)))
            .expect("wait for the supervisor"),
        "the supervisor survived SIGKILL"
    );
}

#[test]
fn killed_supervisor_is_reported_and_the_task_cleaned_up() {
    let Some(env) = env("killed_supervisor_is_reported_and_the_task_cleaned_up") else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["1000"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    kill_supervisor(&handle);
    let result = task
        .wait_timeout(Duration::from_secs(20))
        .expect("wait")
        .expect("a lost supervisor ends the wait");
    let error = result.error.clone().expect("an error");
    assert_eq!(error.kind, TaskErrorKind::SupervisorLost, "{result:?}");
    assert!(error.message.contains("supervisor"), "{result:?}");
    assert_eq!(result.exit_code, -1);
    env.assert_clean(CLEAN);
}

/// The state dir is the only proof the cgroup is ours: removing it while the cgroup is still
/// there (an earlier cleanup step failed) is refused, so a later cleanup can still find it.
#[test]
fn state_is_kept_while_the_task_cgroup_remains() {
    let Some(env) = env("state_is_kept_while_the_task_cgroup_remains") else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["1000"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    kill_supervisor(&handle);
    drop(task);
    let platform = env.platform();
    let kept = platform.remove_state(&handle);
    assert!(
        matches!(&kept, Err(e) if e.to_string().contains("still exists")),
        "{kept:?}"
    );
    assert!(
        handle.state_dir.is_dir(),
        "the record went with the state dir"
    );
    let soon = platform.now() + Duration::from_secs(10);
    platform.kill_cgroup(&handle, soon).expect("kill cgroup");
    platform
        .destroy_cgroup(&handle, soon)
        .expect("destroy cgroup");
    platform.remove_state(&handle).expect("remove state");
    assert!(!handle.state_dir.exists());
    env.assert_clean(CLEAN);
}

/// A supervisor of our own held by pidfd, so a test can stop or kill it; on drop it is
/// killed and continued (a no-op once the kill cleaned it up; the pidfd reaches no other
/// process), so a stopped supervisor never outlives its test.
struct HeldSupervisor(Pidfd);

impl HeldSupervisor {
    fn of(handle: &HandleId) -> Self {
        Self(
            Pidfd::open_verified(&handle.supervisor.process)
                .expect("pidfd")
                .expect("supervisor alive"),
        )
    }

    fn stop(&self) {
        // SIGSTOP: the kernel still queues connections for it, nobody answers them.
        self.0.signal(Signal::SIGSTOP).expect("stop supervisor");
    }

    fn kill(&self) {
        self.0.signal(Signal::SIGKILL).expect("kill supervisor");
    }
}

impl Drop for HeldSupervisor {
    fn drop(&mut self) {
        let _ = self.0.signal(Signal::SIGKILL);
        let _ = self.0.signal(Signal::SIGCONT);
    }
}

/// What the supervisor does while a kill runs.
#[derive(Debug, Clone, Copy)]
enum Supervisor {
    /// It answers every request.
    Answers,
    /// It is stopped before the kill starts: nothing it is asked is answered.
    StoppedBefore,
    /// It is stopped once the kill is under way, during the task's grace.
    StoppedDuring,
    /// It is killed once the kill is under way.
    DiesDuring,
}

/// A kill returns within the kill timeout plus 2 s whatever the supervisor does, and leaves
/// nothing: no cgroup, process or state.
fn kill_is_bounded(test: &str, supervisor: Supervisor) {
    let Some(env) = env(test) else {
        return;
    };
    let driver = env.driver();
    // Ignores the kill signal: every kill needs the force, the longest path.
    let mut spec = env.spec(
        "/bin/sh",
        &["-c", "trap '' INT; echo ready; while :; do sleep 0.1; done"],
    );
    spec.kill_timeout = Duration::from_secs(1);
    let task = Arc::new(driver.start(&spec).expect("start"));
    let handle = task.handle_id();
    env.track(handle.clone());
    wait_ready(&task);
    let held = HeldSupervisor::of(&handle);
    if let Supervisor::StoppedBefore = supervisor {
        held.stop();
    }
    let bound = spec.kill_timeout + Duration::from_secs(2);
    let started = Instant::now();
    let killed = thread::scope(|scope| {
        let killer = {
            let task = Arc::clone(&task);
            scope.spawn(move || task.kill())
        };
        if matches!(
            supervisor,
            Supervisor::StoppedDuring | Supervisor::DiesDuring
        ) {
            assert!(
                eventually(Duration::from_secs(5), || task.state() != State::Running),
                "the kill never started"
            );
            match supervisor {
                Supervisor::StoppedDuring => held.stop(),
                _ => held.kill(),
            }
        }
        killer.join().expect("kill thread")
    });
    let took = started.elapsed();
    assert!(killed.is_ok(), "{supervisor:?}: {killed:?}");
    assert!(
        took <= bound,
        "{supervisor:?}: kill took {took:?}, more than {bound:?}"
    );
    let result = task.wait().expect("wait");
    match supervisor {
        Supervisor::Answers => {
            assert_eq!(result.signal, Some(Signal::SIGKILL), "{result:?}");
            assert_eq!(result.error, None, "{result:?}");
        }
        _ => assert!(result.error.is_some(), "{supervisor:?}: {result:?}"),
    }
    // The kill returns once the task's cgroup is empty; a process leaves its cgroup early
    // in its exit, a moment before it is a zombie, which a loaded machine can show.
    assert!(
        eventually(Duration::from_secs(2), || !alive(&handle.task)),
        "{supervisor:?}: the task survived the kill"
    );
    // A released supervisor exits right after its answer.
    assert!(
        eventually(Duration::from_secs(5), || !alive(
            &handle.supervisor.process
        )),
        "{supervisor:?}: the supervisor survived"
    );
    drop(held);
    env.assert_clean(CLEAN);
}

#[test]
fn kill_is_bounded_when_the_supervisor_answers() {
    kill_is_bounded(
        "kill_is_bounded_when_the_supervisor_answers",
        Supervisor::Answers,
    );
}

#[test]
fn kill_is_bounded_when_the_supervisor_hangs() {
    kill_is_bounded(
        "kill_is_bounded_when_the_supervisor_hangs",
        Supervisor::StoppedBefore,
    );
}

#[test]
fn kill_is_bounded_when_the_supervisor_is_stopped_mid_kill() {
    kill_is_bounded(
        "kill_is_bounded_when_the_supervisor_is_stopped_mid_kill",
        Supervisor::StoppedDuring,
    );
}

#[test]
fn kill_is_bounded_when_the_supervisor_dies_mid_kill() {
    kill_is_bounded(
        "kill_is_bounded_when_the_supervisor_dies_mid_kill",
        Supervisor::DiesDuring,
    );
}

/// A process of our own to stand in for someone else's: forged handles point at it.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Self {
        Self(
            std::process::Command::new("/bin/sleep")
                .arg("1000")
                .spawn()
                .expect("sleep"),
        )
    }

    fn identity(&self) -> ProcessIdentity {
        execdriver_linux::process::identity(i32::try_from(self.0.id()).expect("pid"))
            .expect("identity")
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn forged_handles_are_refused_and_nothing_is_signalled() {
    let Some(env) = env("forged_handles_are_refused_and_nothing_is_signalled") else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["1000"]))
        .expect("start");
    let real = task.handle_id();
    env.track(real.clone());
    let mut bystander = Bystander::start();
    let outside_guard = linux_support::DirGuard::new("execdriver-outside");
    let outside = outside_guard.0.clone();

    let forge = |mutate: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&real.to_string()).expect("json");
        mutate(&mut v);
        v.to_string()
    };
    let bystander_id = bystander.identity();
    let cases: Vec<(&str, String)> = vec![
        ("pid 1", forge(&|v| v["task"]["pid"] = 1.into())),
        (
            "supervisor pid 1",
            forge(&|v| v["supervisor"]["process"]["pid"] = 1.into()),
        ),
        (
            "state dir outside the data dir",
            forge(&|v| {
                v["state_dir"] = outside.display().to_string().into();
                v["supervisor"]["socket"] =
                    outside.join("supervisor.sock").display().to_string().into();
            }),
        ),
        (
            "cgroup outside the parent",
            forge(&|v| v["cgroup"] = "system.slice".into()),
        ),
        (
            "cgroup with a path",
            forge(&|v| v["cgroup"] = "../x".into()),
        ),
        (
            "someone else's process as the supervisor",
            forge(&|v| {
                v["supervisor"]["process"] = serde_json::to_value(bystander_id).expect("json");
            }),
        ),
    ];
    for (what, text) in &cases {
        match driver.open(text) {
            Err(DriverError::Handle(_) | DriverError::ReattachRefused { .. }) => {}
            Err(other) => panic!("{what}: expected a refusal, got {other}"),
            Ok(task) => panic!("{what}: accepted, state {:?}", task.state()),
        }
    }
    // A handle for a task that does not exist, naming the bystander as its supervisor.
    let ghost = forge(&|v| {
        let ghost_dir = env.data.join("tasks").join("ghost");
        v["task_id"] = "ghost".into();
        v["cgroup"] = "execdriver-ghost".into();
        v["state_dir"] = ghost_dir.display().to_string().into();
        v["supervisor"]["socket"] = ghost_dir
            .join("supervisor.sock")
            .display()
            .to_string()
            .into();
        v["supervisor"]["process"] = serde_json::to_value(bystander_id).expect("json");
    });
    // No state dir: refused as already collected, with nothing touched (no cgroup by name).
    match driver.open(&ghost) {
        Err(DriverError::ReattachRefused {
            source:
                PlatformError::Refused {
                    kind: Refusal::Collected,
                    reason,
                },
            ..
        }) => assert!(reason.contains("already collected"), "{reason}"),
        other => panic!("ghost handle: {other:?}"),
    }
    // With a state dir but no task record there: it is not the handle's task (a start of
    // that id under way, or abandoned), so nothing is signalled or cleaned up.
    let ghost_dir = linux_support::DirGuard(env.data.join("tasks").join("ghost"));
    std::fs::create_dir_all(&ghost_dir.0).expect("mkdir ghost");
    match driver.open(&ghost) {
        Err(DriverError::ReattachRefused {
            source: PlatformError::Refused { kind, .. },
            ..
        }) => assert_eq!(kind, Refusal::Reused),
        other => panic!("ghost handle with a state dir: {other:?}"),
    }
    assert!(
        ghost_dir.0.exists(),
        "a live supervisor's state was removed"
    );
    drop(ghost_dir);
    assert!(
        bystander.alive(),
        "a forged handle got the bystander signalled"
    );
    assert!(
        alive(&real.task),
        "a forged handle got the real task signalled"
    );
    assert_eq!(
        task.wait_timeout(Duration::from_millis(10)).expect("wait"),
        None
    );
    drop(outside_guard);
    task.kill().expect("kill");
    env.assert_clean(CLEAN);
}

#[test]
fn duplicate_task_id_is_refused_and_leaves_the_first_alone() {
    let Some(env) = env("duplicate_task_id_is_refused_and_leaves_the_first_alone") else {
        return;
    };
    let driver = env.driver();
    let spec = env.spec("/bin/sleep", &["1000"]);
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    let err = driver
        .start(&spec)
        .expect_err("second start with the same id");
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(
        task.wait_timeout(Duration::from_millis(10)).expect("wait"),
        None
    );
    task.kill().expect("kill");
    env.assert_clean(CLEAN);
}

#[test]
fn failed_start_leaves_nothing_behind() {
    let Some(env) = env("failed_start_leaves_nothing_behind") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec("/bin/true", &[]);
    spec.user = "no-such-user-here".into();
    let id = spec.task_id.clone();
    let err = driver.start(&spec).expect_err("unknown user");
    assert!(err.to_string().contains("no-such-user-here"), "{err}");
    assert!(!env.data.join("tasks").join(&id).exists());
    env.assert_clean(CLEAN);
}

#[test]
fn the_specs_seccomp_setting_reaches_the_task() {
    let Some(env) = env("the_specs_seccomp_setting_reaches_the_task") else {
        return;
    };
    let driver = env.driver();
    let profile = execdriver_core::SeccompProfile::from_json(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("profile");
    for (seccomp, script) in [
        (
            execdriver_core::Seccomp::Default,
            "grep -q '^Seccomp:.2$' /proc/self/status || exit 10; \
             /usr/bin/unshare -m true 2>/dev/null && exit 11; mkdir /tmp/d || exit 12",
        ),
        (
            execdriver_core::Seccomp::Unconfined,
            "grep -q '^Seccomp:.0$' /proc/self/status || exit 10",
        ),
        (
            execdriver_core::Seccomp::Profile(profile),
            "grep -q '^Seccomp:.2$' /proc/self/status || exit 10; \
             mkdir /tmp/d 2>/dev/null && exit 11; exit 0",
        ),
    ] {
        let mut spec = env.spec("/bin/sh", &["-c", script]);
        spec.seccomp = seccomp.clone();
        let task = driver.start(&spec).expect("start");
        env.track(task.handle_id());
        let result = task.wait().expect("wait");
        assert_eq!(result.exit_code, 0, "{seccomp:?}: {result:?}");
    }
    // A profile naming no system call of this machine: refused by the start, nothing left.
    let mut spec = env.spec("/bin/true", &[]);
    spec.seccomp = execdriver_core::Seccomp::Profile(
        execdriver_core::SeccompProfile::from_json(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdri"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("the shape is right"),
    );
    let id = spec.task_id.clone();
    let err = driver.start(&spec).expect_err("unknown system call");
    assert!(err.to_string().contains("syscalls[0].names[0]"), "{err}");
    assert!(!env.data.join("tasks").join(&id).exists());
    env.assert_clean(CLEAN);
}

#[test]
fn a_planted_log_dir_symlink_fails_the_start_before_the_task_runs() {
    let Some(env) = env("a_planted_log_dir_symlink_fails_the_start_before_the_task_runs") else {
        return;
    };
    let driver = env.driver();
    let spec = env.spec("/bin/true", &[]);
    let elsewhere = DirGuard::new("execdriver-elsewhere");
    std::os::unix::fs::symlink(&elsewhere.0, spec.alloc_dir.join("logs")).expect("symlink");
    let id = spec.task_id.clone();
    let err = driver.start(&spec).expect_err("symlinked log dir");
    assert!(err.to_string().contains("log"), "{err}");
    assert!(!env.data.join("tasks").join(&id).exists());
    assert_eq!(
        std::fs::read_dir(&elsewhere.0).expect("read").count(),
        0,
        "nothing was written through the symlink"
    );
    env.assert_clean(CLEAN);
}

#[test]
fn handle_ids_round_trip_through_the_platform() {
    let Some(env) = env("handle_ids_round_trip_through_the_platform") else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["1000"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    assert_eq!(HandleId::parse(&task.id()), Ok(handle.clone()));
    assert!(handle.state_dir.starts_with(&env.data));
    assert!(alive(&handle.supervisor.process));
    assert!(alive(&handle.task));
    let fp = driver.fingerprint();
    assert!(fp.healthy, "{fp:?}");
    task.kill().expect("kill");
    env.assert_clean(CLEAN);
}

/// Hands the child side of the cross-cgroup cleanup test the handle id to open.
const CLEANUP_HANDLE_ENV: &str = "EXECDRIVER_TEST_CLEANUP_HANDLE";
/// Hands the child side of the cross-cgroup cleanup test the data dir.
const CLEANUP_DATA_ENV: &str = "EXECDRIVER_TEST_CLEANUP_DATA";
/// What the child side prints once its cleanup succeeded.
const CLEANUP_DONE: &str = "cross-cgroup cleanup done";

/// The child side of `reattach_failed_cleanup_works_from_another_cgroup`: a new agent, in
/// another cgroup than the one that started the task, opens the handle of a task whose
/// supervisor is gone. Does nothing unless that test started it.
#[test]
fn cross_cgroup_cleanup_child_side() {
    let (Some(id), Some(data)) = (
        std::env::var_os(CLEANUP_HANDLE_ENV),
        std::env::var_os(CLEANUP_DATA_ENV),
    ) else {
        return;
    };
    // Gate: the parent moves this process into its other cgroup before letting it go on.
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("read the gate");
    let id = id.into_string().expect("utf-8 handle id");
    let driver = Driver::new(LinuxPlatform::new(LinuxConfig::new(data)));
    match driver.open(&id) {
        Err(DriverError::ReattachFailed { failures, .. }) => {
            assert!(failures.is_empty(), "cleanup steps failed: {failures:#?}");
        }
        Err(e) => panic!("expected a failed reattach with a full cleanup, got: {e}"),
        Ok(task) => panic!(
            "reattached to a task whose supervisor is dead: {:?}",
            task.state()
        ),
    }
    println!("{CLEANUP_DONE}");
}

/// The orphan cleanup uses the cgroup paths recorded at spawn, not the caller's own cgroup:
/// an agent in another cgroup than the one that started the task still kills the task and
/// removes its cgroup. The other cgroup is one this test creates below its own, holding only
/// a child process this test spawned (a re-run of this test binary).
#[test]
fn reattach_failed_cleanup_works_from_another_cgroup() {
    let Some(env) = env("reattach_failed_cleanup_works_from_another_cgroup") else {
        return;
    };
    let id = {
        let driver = env.driver();
        let task = driver
            .start(&env.spec("/bin/sleep", &["1000"]))
            .expect("start");
        env.track(task.handle_id());
        task.id()
    };
    let handle = HandleId::parse(&id).expect("handle id");
    kill_supervisor(&handle);
    // The task dies with the supervisor (it is its pid namespace's init's child); its
    // cgroup stays until a cleanup removes it.
    let cgroup = linux_support::find_cgroup_dirs(&cgroup_name(&handle.task_id));
    assert!(!cgroup.is_empty(), "no task cgroup to clean up");

    struct Caller {
        cgroup: execdriver_linux::cgroups::ServiceCgroup,
        child: Option<Child>,
    }
    impl Drop for Caller {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            // The cgroup goes with its guard, once the child is dead.
        }
    }
    let mut caller = Caller {
        cgroup: execdriver_linux::cgroups::ServiceCgroup::create(&unique_id(
            "execdriver-test-caller",
        ))
        .expect("a cgroup below our own, in every hierarchy"),
        child: None,
    };
    let exe = std::env::current_exe().expect("current exe");
    let child = caller.child.insert(
        Command::new(exe)
            .args([
                "cross_cgroup_cleanup_child_side",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CLEANUP_HANDLE_ENV, &id)
            .env(CLEANUP_DATA_ENV, &env.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child side"),
    );
    let pid = child.id().to_string();
    caller
        .cgroup
        .add(i32::try_from(child.id()).expect("pid"))
        .expect("move the child");
    let ours = fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
    let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("child's cgroup");
    assert_ne!(ours, theirs, "the child is not in another cgroup");
    let mut gate = child.stdin.take().expect("child stdin");
    gate.write_all(b"go\n").expect("open the gate");
    drop(gate);
    let output = caller
        .child
        .take()
        .expect("child")
        .wait_with_output()
        .expect("wait for the child side");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(CLEANUP_DONE),
        "child side failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for dir in &cgroup {
        assert!(!dir.exists(), "{} left by the cleanup", dir.display());
    }
    assert!(!alive(&handle.task), "the task survived the cleanup");
    env.assert_clean(CLEAN);
    drop(caller);
}

/// Hands the agent side of the service test its data dir, slice and supervisor binary.
const AGENT_ENV: [&str; 3] = [
    "EXECDRIVER_TEST_AGENT_DATA",
    "EXECDRIVER_TEST_AGENT_SLICE",
    "EXECDRIVER_TEST_AGENT_BINARY",
];
/// What the agent side prints before each handle id it started.
const AGENT_HANDLE: &str = "agent started ";
/// How many tasks the agent side starts.
const AGENT_TASKS: usize = 2;

/// The agent side of `stopping_the_agents_service_leaves_its_tasks_running`: once moved into
/// its service cgroup, it starts tasks, prints their handle ids and waits to be killed with
/// its service. Does nothing unless that test started it.
#[test]
fn agent_service_child_side() {
    let [Some(data), Some(slice), Some(binary)] = AGENT_ENV.map(std::env::var_os) else {
        return;
    };
    let mut line = String::new();
    // Gate: the parent moves this process into the service cgroup before letting it go on.
    std::io::stdin()
        .read_line(&mut line)
        .expect("read the gate");
    let slice = slice.into_string().expect("utf-8 slice");
    let config = LinuxConfig::new(&data)
        .with_slice_name(slice)
        .with_supervisor_binary(binary);
    let driver = Driver::new(LinuxPlatform::new(config));
    for i in 0..AGENT_TASKS {
        let id = unique_id(&format!("agent{i}"));
        let alloc = std::path::Path::new(&data).join("allocs").join(&id);
        fs::create_dir_all(alloc.join("task")).expect("alloc dir");
        let spec = execdriver_core::TaskSpec::new(
            &id,
            "task",
            &alloc,
            alloc.join("task"),
            execdriver_core::TaskConfig::new(
                "/bin/sh",
                [
                    "-c",
                    "while [ ! -e /alloc/go ]; do sleep 0.05; done; exit 7",
                ],
            ),
        );
        let task = driver.start(&spec).expect("start");
        println!("{AGENT_HANDLE}{}", task.id());
    }
    std::io::stdout().flush().expect("flush");
    // Until the service is stopped: nothing more comes on stdin.
    let _ = std::io::stdin().read_line(&mut line);
}

/// Stopping the agent's service (SIGKILL to every process in its cgroup, systemd's default)
/// leaves the supervisors and their tasks running, since each supervisor moved itself into
/// the driver's own supervisors cgroup before its task started; a new agent process then
/// reattaches and collects every exit.
#[test]
fn stopping_the_agents_service_leaves_its_tasks_running() {
    let Some(env) = env("stopping_the_agents_service_leaves_its_tasks_running") else {
        return;
    };
    let service = execdriver_linux::cgroups::ServiceCgroup::create(&unique_id(
        "execdriver-test-agent.service",
    ))
    .expect("a service-like cgroup below our own, in every hierarchy");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "agent_service_child_side",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(AGENT_ENV[0], &env.data)
        .env(AGENT_ENV[1], &env.slice)
        .env(AGENT_ENV[2], &env.binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the agent side");
    // Our own child: if the test fails from here on, it dies with its service on drop.
    struct Agent(Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent_pid = i32::try_from(child.id()).expect("pid");
    service
        .add(agent_pid)
        .expect("move the agent into its service");
    let mut gate = child.stdin.take().expect("agent stdin");
    gate.write_all(b"go\n").expect("open the gate");
    let stdout = child.stdout.take().expect("agent stdout");
    let agent = Agent(child);
    let mut handles = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.expect("agent output");
        // libtest prints the test's name on the same line as its first output.
        if let Some((_, id)) = line.split_once(AGENT_HANDLE) {
            let handle = HandleId::parse(id).expect("handle id");
            env.track(handle.clone());
            handles.push(id.to_owned());
            if handles.len() == AGENT_TASKS {
                break;
            }
        }
    }
    assert_eq!(
        handles.len(),
        AGENT_TASKS,
        "the agent side did not start its tasks"
    );
    let members = service.pids().expect("service members");
    assert!(members.contains(&agent_pid), "{members:?}");
    let parsed: Vec<HandleId> = handles
        .iter()
        .map(|h| HandleId::parse(h).expect("handle id"))
        .collect();
    for h in &parsed {
        for (what, pid) in [
            ("supervisor", h.supervisor.process.pid),
            ("task", h.task.pid),
        ] {
            assert!(
                !members.contains(&pid),
                "the {what} of {} is in the agent's service cgroup",
                h.task_id
            );
        }
    }
    // The service manager stops the agent.
    let killed = service
        .kill_every_process(Duration::from_secs(10))
        .expect("the service stops");
    assert!(killed.contains(&agent_pid), "{killed:?}");
    drop((agent, gate));
    for h in &parsed {
        assert!(
            alive(&h.supervisor.process),
            "{}: supervisor died with the agent",
            h.task_id
        );
        assert!(alive(&h.task), "{}: task died with the agent", h.task_id);
    }
    // A new agent collects every exit.
    let driver = env.driver();
    for (text, h) in handles.iter().zip(&parsed) {
        fs::write(h.alloc_dir.join("go"), b"").expect("let the task go");
        let task = driver.open(text).expect("reattach from a new agent");
        assert_eq!(task.wait().expect("wait").exit_code, 7);
    }
    drop(service);
    env.assert_clean(CLEAN);
}

/// SIGTERM to a supervisor (a service manager stopping it, a node shutting down) is an
/// orderly stop: the task gets its kill signal and grace, the exit is recorded, the cgroup
/// removed, and the supervisor exits; a new agent then collects the recorded exit.
#[test]
fn sigterm_to_a_supervisor_stops_its_task_in_order() {
    let Some(env) = env("sigterm_to_a_supervisor_stops_its_task_in_order") else {
        return;
    };
    let driver = env.driver();
    let mut spec = env.spec(
        "/bin/sh",
        &[
            "-c",
            "trap 'echo bye; exit 9' INT; echo ready; while :; do sleep 0.05; done",
        ],
    );
    spec.kill_timeout = Duration::from_secs(5);
    let task = driver.start(&spec).expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    assert!(
        eventually(Duration::from_secs(10), || {
            task.read_logs(execdriver_core::LogStream::Stdout, Default::default(), 64)
                .is_ok_and(|c| c.data.starts_with(b"ready"))
        }),
        "the task never got ready"
    );
    let id = task.id();
    drop(task);
    let supervisor = HeldSupervisor::of(&handle);
    supervisor.0.signal(Signal::SIGTERM).expect("SIGTERM");
    assert!(
        supervisor
            .0
            .wait_exit(Some(Duration::from_secs(20)))
            .expect("wait for the supervisor"),
        "the supervisor did not exit after SIGTERM"
    );
    assert!(!alive(&handle.task), "the task outlived its supervisor");
    assert!(
        handle.state_dir.join("exit.json").exists(),
        "no exit record"
    );
    assert!(
        linux_support::find_cgroup_dirs(&cgroup_name(&handle.task_id)).is_empty(),
        "the task cgroup stayed"
    );
    let result = env.driver().open(&id).expect("open").wait().expect("wait");
    assert_eq!(result.exit_code, 9, "{result:?}");
    assert_eq!(result.error, None, "{result:?}");
    env.assert_clean(CLEAN);
}

/// The number of threads of a live process.
fn threads_of(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line")
}

/// A supervisor is one thread whatever its clients do: hundreds of idle connections cost it
/// no thread, connections beyond its bound are answered busy and closed, and it still
/// serves its task.
#[test]
fn a_supervisor_serves_many_connections_on_one_thread_and_refuses_beyond_its_bound() {
    let Some(env) =
        env("a_supervisor_serves_many_connections_on_one_thread_and_refuses_beyond_its_bound")
    else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["1000"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let stream =
            std::os::unix::net::UnixStream::connect(&handle.supervisor.socket).expect("connect");
        held.push(stream);
    }
    // The ones past the bound get one busy answer, then end of file.
    for stream in held.iter_mut().skip(64) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut answer = String::new();
        if std::io::Read::read_to_string(stream, &mut answer).is_ok() && answer.contains("busy") {
            refused += 1;
        }
    }
    assert!(refused > 0, "no connection beyond the bound was refused");
    assert_eq!(threads_of(handle.supervisor.process.pid), 1);
    // Still serving: the driver's own calls get through once the idle ones are gone.
    drop(held);
    if let Err(e) = task.stats() {
        panic!("stats after the idle connections left: {e}");
    }
    assert_eq!(threads_of(handle.supervisor.process.pid), 1);
    task.kill().expect("kill");
    env.assert_clean(CLEAN);
}

/// The state letter of a live process (`R`, `S`, `T`, ...).
fn state_of(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// At its connection bound, a supervisor does not count against it the connections whose
/// clients hung up while they waited in its backlog: a newcomer is served, not told busy.
#[test]
fn connections_that_left_the_backlog_do_not_keep_a_newcomer_out() {
    use execdriver_linux::protocol::{Client, ErrorCode, Request, Response};
    let Some(env) = env("connections_that_left_the_backlog_do_not_keep_a_newcomer_out") else {
        return;
    };
    let driver = env.driver();
    let task = driver
        .start(&env.spec("/bin/sleep", &["1000"]))
        .expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    let socket = handle.supervisor.socket.clone();
    let deadline = || Instant::now() + Duration::from_secs(20);
    let connect = || Client::connect(&socket, deadline()).expect("connect");
    // Connections up to the bound (the driver's own, if it keeps any, count too), each
    // answered once so that each is known accepted; the first one told busy is the bound.
    let busy = |answer: &Response| matches!(answer, Response::Error(reply) if reply.code == ErrorCode::Busy);
    let mut held: Vec<Client> = Vec::new();
    loop {
        let mut client = connect();
        if busy(&client.call(&Request::Hello, deadline()).expect("hello")) {
            break;
        }
        held.push(client);
        assert!(
            held.len() <= 64,
            "no bound after {} connections",
            held.len()
        );
    }
    let supervisor = nix::unistd::Pid::from_raw(handle.supervisor.process.pid);
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGSTOP).expect("stop");
    assert!(
        eventually(Duration::from_secs(10), || state_of(supervisor.as_raw())
            == Some('T')),
        "the supervisor did not stop"
    );
    // Queued and gone before the supervisor looks; then one accepted client leaves too, and
    // the newcomer queues behind them all.
    for _ in 0..8 {
        drop(connect());
    }
    drop(held.pop());
    let mut newcomer = connect();
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGCONT).expect("cont");
    let answer = newcomer
        .call(&Request::Hello, deadline())
        .expect("an answer");
    assert!(!busy(&answer), "the newcomer was told busy: {answer:?}");
    drop(held);
    task.kill().expect("kill");
    env.assert_clean(CLEAN);
}

/// Waits for the task's first line of output, `ready`: a kill signal sent before its shell
/// set its trap would end it at once, the wrong path for a test of the trap.
fn wait_ready(task: &execdriver_core::TaskHandle<impl execdriver_core::Platform>) {
    assert!(
        eventually(Duration::from_secs(10), || {
            task.read_logs(execdriver_core::LogStream::Stdout, Default::default(), 64)
                .is_ok_and(|c| c.data.starts_with(b"ready"))
        }),
        "the task never got ready"
    );
}

#[test]
fn a_task_terminal_is_handed_to_any_handle_and_takes_input() {
    let Some(env) = env("a_task_terminal_is_handed_to_any_handle_and_takes_input") else {
        return;
    };
    let driver = env.driver();
    let plain = driver
        .start(&env.spec("/bin/sleep", &["600"]))
        .expect("start");
    env.track(plain.handle_id());
    let err = plain.terminal().expect_err("no terminal without tty");
    assert!(err.to_string().contains("without a terminal"), "{err}");
    plain.kill().expect("kill");

    let mut spec = env.spec("/bin/sh", &["-c", "read x; echo got-$x; stty size"]);
    spec.tty = Some(execdriver_core::TerminalSize { rows: 12, cols: 34 });
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    // From another process's handle, as a restarted agent would attach.
    let other = env.driver().open(&task.id()).expect("reattach");
    let master = other.terminal().expect("terminal");
    nix::unistd::write(&master, b"hello\n").expect("type");
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 0, "{result:?}");
    let chunk = task
        .read_logs(execdriver_core::LogStream::Stdout, Default::default(), 4096)
        .expect("logs");
    let out = String::from_utf8_lossy(&chunk.data).replace("\r\n", "\n");
    assert!(out.contains("got-hello\n12 34\n"), "{out:?}");
    // Once the task is gone there is nothing to attach to.
    assert!(other.terminal().is_err());
    env.assert_clean(CLEAN);
}

/// The path `pid` has in `standin`'s hierarchy, from /proc/PID/cgroup.
fn standin_path_of(standin: &execdriver_linux::cgroups::NomadCgroup, pid: i32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    standin
        .hierarchy_path_in(&text)
        .expect("a cpuset or unified line")
        .to_owned()
}

/// A task whose spec names a cpuset cgroup (Nomad's `cpuset_cgroup`, stood in for by one of
/// the test's): it lives in it (v1, joined) or beneath it (v2), a new driver (the plugin
/// restarted) finds it there and kills it, a lost supervisor's cleanup removes only the
/// task's own cgroup, and the stand-in is left empty. Runs in the v2 guest too.
#[test]
fn a_named_cpuset_cgroup_holds_the_task_across_restarts_and_cleanups() {
    let test = "a_named_cpuset_cgroup_holds_the_task_across_restarts_and_cleanups";
    if !execdriver_linux::testing::require_root(test, "it creates cgroups and namespaces") {
        return;
    }
    let v1 = execdriver_linux::cgroups::probe().version
        == Some(execdriver_linux::cgroups::CgroupVersion::V1);
    let mount = if v1 {
        "/sys/fs/cgroup/cpuset"
    } else {
        "/sys/fs/cgroup"
    };
    // Made before the env, so removed after it: the env's cleanup takes the tasks first.
    let test_parent =
        execdriver_linux::testing::TestParent::new("driver-cpuset-cgroup").expect("parent");
    let share = execdriver_linux::cgroups::NomadCgroup::create(
        &unique_id("execdriver-test-share"),
        &test_parent.parent().paths()[0],
    )
    .expect("stand-in");
    let share_rel = format!(
        "/{}",
        share
            .path()
            .strip_prefix(mount)
            .expect("in the mount")
            .display()
    );
    let env = TestEnv::new(binary_from_target_dir());
    let expected = |task_id: &str| {
        if v1 {
            share_rel.clone()
        } else {
            format!("{share_rel}/{}", cgroup_name(task_id))
        }
    };

    // Started, found again by a new driver, killed through it.
    let mut spec = env.spec("/bin/sleep", &["1000"]);
    spec.resources.cpuset_cgroup = Some(share.path().to_owned());
    let id = {
        let driver = env.driver();
        let task = driver.start(&spec).expect("start");
        let handle = task.handle_id();
        env.track(handle.clone());
        assert_eq!(
            standin_path_of(&share, handle.task.pid),
            expected(&handle.task_id)
        );
        task.id()
    };
    let task = env.driver().open(&id).expect("reattach");
    assert_eq!(task.state(), State::Running);
    assert!(task.stats().is_ok());
    task.kill().expect("kill");
    task.wait().expect("wait");

    // A lost supervisor: the cleanup goes by the task's own recorded cgroup.
    let mut spec = env.spec("/bin/sleep", &["1000"]);
    spec.resources.cpuset_cgroup = Some(share.path().to_owned());
    let driver = env.driver();
    let task = driver.start(&spec).expect("start");
    let handle = task.handle_id();
    env.track(handle.clone());
    assert_eq!(
        standin_path_of(&share, handle.task.pid),
        expected(&handle.task_id)
    );
    kill_supervisor(&handle);
    drop(task);
    let reopened = env.driver().open(&handle.to_string());
    assert!(
        reopened.is_err(),
        "a task without its supervisor reattached"
    );
    assert!(!alive(&handle.task), "the task outlived its cleanup");

    env.assert_clean(CLEAN);
    assert!(share.path().is_dir(), "the named cgroup went with a task");
    assert_eq!(share.pids().expect("pids"), Vec::<i32>::new());
    let children: Vec<_> = fs::read_dir(share.path())
        .expect("read")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(children.is_empty(), "{children:?}");
}
