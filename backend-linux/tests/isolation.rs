//! Real isolated tasks (needs root): namespaces, the task root, the user drop, exec errors,
//! signals through the init, and that nothing (process, mount) outlives a task.
//!
//! Run: `cargo test -p execdriver-linux --test isolation` as root. Without root every test
//! is skipped with a printed reason, unless CI is set, in which case they fail.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use execdriver_core::{ExitStatus, ProcessIdentity, Resources, Signal, TaskConfig, TaskSpec};
use execdriver_linux::cgroups;
use execdriver_linux::isolation::{self, IsolationError, LaunchRequest, LaunchedTask};
use execdriver_linux::process;
use execdriver_linux::testing::{self, require_root};

/// What the root-only tests here need root for.
const NEEDS_ROOT: &str = "namespaces, mounts, user switch";

/// A task dir and an alloc dir in a fresh temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    task_dir: PathBuf,
    alloc_dir: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("execdriver-isolation-")
            .tempdir()
            .expect("tempdir");
        let task_dir = dir.path().join("web");
        let alloc_dir = dir.path().join("alloc");
        std::fs::create_dir(&task_dir).expect("task dir");
        std::fs::create_dir(&alloc_dir).expect("alloc dir");
        std::fs::set_permissions(&task_dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod task dir");
        std::fs::set_permissions(&alloc_dir, std::fs::Permissions::from_mode(0o777))
            .expect("chmod alloc dir");
        Self {
            dir,
            task_dir,
            alloc_dir,
        }
    }

    fn spec(&self, command: &str, args: &[&str]) -> TaskSpec {
        TaskSpec::new(
            "isolation-test",
            "web",
            &self.alloc_dir,
            &self.task_dir,
            TaskConfig::new(command, args.iter().copied()),
        )
    }

    fn sh(&self, script: &str) -> TaskSpec {
        self.spec("/bin/sh", &["-c", script])
    }

    /// Fails if the host mount table mentions this fixture: nothing may propagate out.
    fn assert_no_host_mounts(&self) {
        let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let needle = self.dir.path().to_string_lossy().into_owned();
        let leaked: Vec<&str> = table.lines().filter(|l| l.contains(&needle)).collect();
        assert!(leaked.is_empty(), "host mount table gained {leaked:#?}");
    }
}

/// Reads a pipe to its end on a thread, so a full pipe never blocks the task.
struct Collector {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Collector {
    fn new(read_end: OwnedFd) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(read_end);
            let mut out = Vec::new();
            let _ = file.read_to_end(&mut out);
            let _ = tx.send(out);
        });
        Self { rx }
    }

    /// Everything written, once every writer is gone (fails if one survives the task).
    fn finish(self) -> String {
        let out = self
            .rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the output pipe stayed open: something of the task survived it");
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A launched task with its output collectors.
struct Running {
    task: LaunchedTask,
    stdout: Collector,
    stderr: Collector,
}

fn start_with(
    spec: &TaskSpec,
    place: &dyn Fn(i32) -> Result<(), String>,
) -> Result<Running, IsolationError> {
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let task = isolation::launch(LaunchRequest {
        spec,
        stdin: None,
        stdout: out_w,
        stderr: err_w,
        clone_into: None,
        place_in_cgroup: place,
        user: None,
    })?;
    Ok(Running {
        task,
        stdout: Collector::new(out_r),
        stderr: Collector::new(err_r),
    })
}

fn start(spec: &TaskSpec) -> Running {
    start_with(spec, &|_| Ok(())).expect("launch")
}

/// What a finished task left.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Running {
    fn finish(self) -> Outcome {
        let status = self
            .task
            .wait_timeout(Duration::from_secs(60))
            .expect("wait")
            .expect("the task did not exit within 60 s");
        Outcome {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }
}

fn run(fx: &Fixture, spec: &TaskSpec) -> Outcome {
    fx.assert_no_host_mounts();
    let outcome = start(spec).finish();
    fx.assert_no_host_mounts();
    outcome
}

/// The processes (identities) in the pid namespace with this inode, once there are at
/// least `min` of them. Taken while the task runs: after a namespace dies its inode number
/// is free for the next namespace, so matching by inode later could find another task.
fn namespace_members(ns: u64, min: usize) -> Vec<ProcessIdentity> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/pid"))
                && meta.ino() == ns
                && let Ok(id) = process::identity(pid)
            {
                found.push(id);
            }
        }
        if found.len() >= min {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "only {} processes in the task's namespace, expected {min}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fails if any of these processes is still alive (a live pid with another start time is
/// someone else).
fn assert_all_gone(members: &[ProcessIdentity]) {
    let alive: Vec<&ProcessIdentity> = members
        .iter()
        .filter(|m| process::identity(m.pid).is_ok_and(|now| now.start_time == m.start_time))
        .collect();
    assert!(alive.is_empty(), "still running after the task: {alive:?}");
}

/// Writes a file to be exec'd later from a short-lived child process. Written from this
/// (multi-threaded) test process, the open fd could be inherited for a moment by another
/// test's freshly cloned init, and exec'ing the file would then fail with ETXTBSY.
fn write_program(path: &Path, content: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\"", "sh"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(content)
        .expect("write");
    assert!(child.wait().expect("wait").success(), "writing {path:?}");
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus::code(code)
}

#[test]
fn echo_prints_and_exits_zero() {
    if !require_root("echo_prints_and_exits_zero", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let out = run(&fx, &fx.spec("/bin/echo", &["hello"]));
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn exit_code_and_both_streams_come_through() {
    if !require_root("exit_code_and_both_streams_come_through", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let out = run(&fx, &fx.sh("echo out; echo err >&2; exit 3"));
    assert_eq!(out.status, exited(3), "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
}

#[test]
fn dns_settings_are_the_tasks_read_only_resolv_conf_and_the_hosts_is_untouched() {
    if !require_root(
        "dns_settings_are_the_tasks_read_only_resolv_conf_and_the_hosts_is_untouched",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let host_before = std::fs::read("/etc/resolv.conf").ok();
    let mut spec = fx.sh("cat /etc/resolv.conf; echo x >> /etc/resolv.conf && echo writable");
    spec.user = "root".into();
    spec.dns = Some(execdriver_core::DnsConfig {
        servers: vec!["10.0.0.2".into()],
        searches: vec!["a.example".into(), "b.example".into()],
        options: vec!["ndots:3".into()],
    });
    let out = run(&fx, &spec);
    assert_eq!(
        out.status,
        exited(2),
        "the shell refused the redirection: {out:?}"
    );
    assert_eq!(
        out.stdout,
        "# written by execdriver from the task's dns settings\nnameserver 10.0.0.2\n\
         search a.example b.example\noptions ndots:3\n"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), host_before);
    // Without dns settings the task sees the host's.
    let out = run(&fx, &fx.spec("/bin/cat", &["/etc/resolv.conf"]));
    assert_eq!(Some(out.stdout.into_bytes()), host_before);
}

#[test]
fn runs_as_nobody_without_capabilities_and_with_no_new_privs() {
    if !require_root(
        "runs_as_nobody_without_capabilities_and_with_no_new_privs",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let out = run(&fx, &fx.sh("id -u; id -g; cat /proc/self/status"));
    assert_eq!(out.status, exited(0), "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("65534"), "{out:?}");
    assert_eq!(lines.next(), Some("65534"), "{out:?}");
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {}", out.stdout))
            .to_owned()
    };
    assert_eq!(field("CapEff"), "0000000000000000");
    assert_eq!(field("CapPrm"), "0000000000000000");
    assert_eq!(field("CapAmb"), "0000000000000000");
    assert_eq!(field("NoNewPrivs"), "1");
    // Default dispositions and an empty mask, whatever the supervisor had.
    assert_eq!(field("SigBlk"), "0000000000000000");
    assert_eq!(field("SigIgn"), "0000000000000000");
    assert!(field("Uid").split_whitespace().all(|id| id == "65534"));
    assert!(field("Gid").split_whitespace().all(|id| id == "65534"));
}

#[test]
fn setuid_binaries_do_not_give_root_back() {
    if !require_root("setuid_binaries_do_not_give_root_back", NEEDS_ROOT) {
        return;
    }
    // A setuid-root copy of `id` in the task dir: with no_new_privs (and nosuid on the
    // task root) it must still report the task's uid.
    let fx = Fixture::new();
    let local = fx.task_dir.join("local");
    std::fs::create_dir(&local).expect("local");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    write_program(
        &local.join("suid-id"),
        &std::fs::read("/usr/bin/id").expect("read id"),
    );
    std::fs::set_permissions(
        local.join("suid-id"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .expect("setuid bit");
    let out = run(&fx, &fx.spec("/local/suid-id", &["-u"]));
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "65534\n");
}

#[test]
fn host_paths_outside_the_chroot_env_are_invisible() {
    if !require_root(
        "host_paths_outside_the_chroot_env_are_invisible",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let sibling = fx.dir.path().join("sibling");
    std::fs::create_dir(&sibling).expect("sibling");
    let script = format!(
        "for p in /root /var /home /work /boot /sys {} {} {}; do test -e $p && echo VISIBLE $p; done; ls /",
        fx.dir.path().display(),
        sibling.display(),
        fx.task_dir.display(),
    );
    let out = run(&fx, &fx.sh(&script));
    assert_eq!(out.status, exited(0), "{out:?}");
    assert!(!out.stdout.contains("VISIBLE"), "{}", out.stdout);
    let mut top: Vec<&str> = out.stdout.lines().collect();
    top.sort_unstable();
    for expected in [
        "alloc", "dev", "etc", "local", "proc", "secrets", "tmp", "usr",
    ] {
        assert!(top.contains(&expected), "no /{expected} in {top:?}");
    }
}

#[test]
fn the_chroot_env_is_read_only_even_for_root() {
    if !require_root("the_chroot_env_is_read_only_even_for_root", NEEDS_ROOT) {
        return;
    }
    // Root first tries to make /usr writable again (a plain remount and a bind remount),
    // then to write: every attempt must fail, not only the write.
    let fx = Fixture::new();
    let mut spec = fx.sh(
        "mount -o remount,rw /usr; echo remount=$?; mount -o remount,bind,rw /usr; echo bind=$?; \
         mount -t tmpfs none /usr; echo over=$?; \
         touch /usr/execdriver-ro-probe; echo usr=$?; touch /etc/execdriver-ro-probe; echo etc=$?; \
         touch /bin/execdriver-ro-probe; echo bin=$?; touch /tmp/ok; echo tmp=$?",
    );
    spec.user = "root".into();
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    for refused in ["remount=", "bind=", "over="] {
        assert!(
            !out.stdout.contains(&format!("{refused}0")),
            "{refused} succeeded: {out:?}"
        );
    }
    assert!(out.stdout.contains("usr=1"), "{out:?}");
    assert!(out.stdout.contains("etc=1"), "{out:?}");
    assert!(out.stdout.contains("bin=1"), "{out:?}");
    assert!(out.stdout.contains("tmp=0"), "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    for p in ["/usr", "/etc", "/usr/bin"] {
        assert!(!Path::new(p).join("execdriver-ro-probe").exists());
    }
}

/// A `/proc/<pid>/status` capability field as a mask.
fn cap_field(status: &str, name: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{name} {hex:?}: {e}"))
}

#[test]
fn a_root_task_keeps_only_the_allowed_capabilities() {
    if !require_root(
        "a_root_task_keeps_only_the_allowed_capabilities",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.sh("id -u; cat /proc/self/status");
    spec.user = "root".into();
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    assert!(out.stdout.starts_with("0\n"), "{out:?}");
    // What this test process may hold bounds what any child can have.
    let own = std::fs::read_to_string("/proc/self/status").expect("own status");
    let expected = isolation::TASK_CAPABILITIES & cap_field(&own, "CapBnd");
    for name in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(
            cap_field(&out.stdout, name),
            expected,
            "{name} of a root task: {out:?}"
        );
    }
    assert_eq!(cap_field(&out.stdout, "CapInh"), 0, "{out:?}");
    assert_eq!(cap_field(&out.stdout, "CapAmb"), 0, "{out:?}");
    // None of the dangerous ones, whatever the allowlist becomes.
    for cap in [2, 16, 17, 18, 19, 21, 22, 25, 27] {
        assert_eq!(
            isolation::TASK_CAPABILITIES & (1 << cap),
            0,
            "capability {cap} is allowed"
        );
    }
}

#[test]
fn a_root_task_cannot_mount_mknod_or_trigger_sysrq() {
    if !require_root(
        "a_root_task_cannot_mount_mknod_or_trigger_sysrq",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.sh(
        "mknod /tmp/blk b 8 0; echo mknod=$?; mknod /tmp/chr c 1 3; echo mknodc=$?; \
         mkdir /tmp/m; mount -t tmpfs -o dev none /tmp/m; echo tmpfs=$?; \
         mount -o remount,rw /proc; echo proc=$?; \
         echo h > /proc/sysrq-trigger; echo sysrq=$?; \
         chroot / /bin/true; echo chroot=$?",
    );
    spec.user = "root".into();
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    for step in ["mknod", "mknodc", "tmpfs", "proc", "sysrq", "chroot"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{step}=")))
            .unwrap_or_else(|| panic!("no {step} line: {out:?}"));
        assert_ne!(
            line,
            format!("{step}=0"),
            "{step} succeeded as root: {out:?}"
        );
    }
    assert!(!fx.task_dir.join("tmp/blk").exists());
}

/// `/proc` as container runtimes leave it: a task run as root writes no host sysctl, no
/// SysRq, no interrupt affinity (each written back with its current value, so a failure of
/// the guard changes nothing), and reads nothing of kernel memory, keyrings, timers or the
/// scheduler's internals.
#[test]
fn a_root_task_cannot_write_or_read_the_guarded_proc_entries() {
    if !require_root(
        "a_root_task_cannot_write_or_read_the_guarded_proc_entries",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.sh(
        "for f in /proc/sys/vm/swappiness /proc/sys/kernel/hostname /proc/irq/default_smp_affinity; do \
           if [ -e $f ]; then v=$(cat $f); (echo \"$v\" > $f) 2>/dev/null && echo \"wrote $f\"; fi; \
         done; \
         if [ -e /proc/sysrq-trigger ]; then (echo h > /proc/sysrq-trigger) 2>/dev/null && echo 'wrote sysrq'; fi; \
         for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
           if [ -e $f ] && [ -n \"$(head -c 1 $f 2>/dev/null)\" ]; then echo \"read $f\"; fi; \
         done; \
         for d in /proc/acpi /proc/scsi; do \
           if [ -d $d ] && [ -n \"$(ls -A $d)\" ]; then echo \"listed $d\"; fi; \
         done; \
         echo checked",
    );
    spec.user = "root".into();
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "checked", "{out:?}");
}

/// Puts this process's oom_score_adj back when dropped.
struct OomScoreGuard(String);

impl Drop for OomScoreGuard {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/self/oom_score_adj", &self.0);
    }
}

#[test]
fn a_supervisor_protected_from_the_oom_killer_does_not_protect_its_task() {
    if !require_root(
        "a_supervisor_protected_from_the_oom_killer_does_not_protect_its_task",
        NEEDS_ROOT,
    ) {
        return;
    }
    let before = std::fs::read_to_string("/proc/self/oom_score_adj").expect("read own score");
    let _restore = OomScoreGuard(before.trim().to_owned());
    let fx = Fixture::new();
    // A supervisor made more killable passes that on as it is: only protection is undone.
    std::fs::write("/proc/self/oom_score_adj", "500").expect("raise own score");
    let out = run(&fx, &fx.sh("cat /proc/self/oom_score_adj"));
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "500\n", "{out:?}");
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        // Lowering needs CAP_SYS_RESOURCE, which some sandboxes withhold even from root;
        // the decision itself is unit-tested in isolation::init.
        eprintln!("skipping: cannot lower this process's oom_score_adj to -1000: {e}");
        return;
    }
    let out = run(&fx, &fx.sh("cat /proc/self/oom_score_adj"));
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "0\n", "{out:?}");
}

#[test]
fn the_task_root_has_proc_dev_secrets_tmp_and_the_task_environment() {
    if !require_root(
        "the_task_root_has_proc_dev_secrets_tmp_and_the_task_environment",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.sh(
        "echo pwd=$(pwd); echo host=$(cat /proc/sys/kernel/hostname); \
         echo procs=$(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '); \
         echo dev=$(ls -A /dev | tr '\\n' ' '); \
         echo secrets=$(stat -c '%a %u' /secrets); echo tmp=$(stat -c '%a' /tmp); \
         echo s > /secrets/s && echo t > /tmp/t && echo a > /alloc/a && echo l > /local/l && echo writes=ok; \
         echo x > /dev/null && head -c 4 /dev/urandom | wc -c | sed 's/^/urandom=/'; \
         env | sort | sed 's/^/env: /'",
    );
    spec.env.insert("GREETING".into(), "hi there".into());
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    let value = |key: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {}", out.stdout))
            .trim()
            .to_owned()
    };
    assert_eq!(value("pwd"), "/");
    assert_eq!(value("host"), "web");
    let procs: Vec<u32> = value("procs")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert!(procs.contains(&1), "{procs:?}");
    assert!(
        procs.iter().all(|&p| p < 64),
        "host pids visible: {procs:?}"
    );
    let dev = value("dev");
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
    ] {
        assert!(
            dev.split_whitespace().any(|d| d == node),
            "no /dev/{node}: {dev}"
        );
    }
    assert!(!dev.contains("vda") && !dev.contains("kmsg"), "{dev}");
    assert_eq!(value("secrets"), "700 65534");
    assert_eq!(value("tmp"), "1777");
    assert_eq!(value("writes"), "ok");
    assert_eq!(value("urandom"), "4");
    let env: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env: "))
        .collect();
    let expected_env = [
        "EXECDRIVER_ALLOC_DIR=/alloc",
        "EXECDRIVER_SECRETS_DIR=/secrets",
        "EXECDRIVER_TASK_DIR=/local",
        "EXECDRIVER_TASK_ID=isolation-test",
        "EXECDRIVER_TASK_NAME=web",
        "GREETING=hi there",
    ];
    for e in expected_env {
        assert!(env.contains(&e), "{e} missing from {env:?}");
    }
    assert!(env.contains(&format!("PATH={}", isolation::DEFAULT_PATH).as_str()));
    // Nothing leaks from the test's own environment (sh adds PWD and SHLVL itself).
    assert!(
        env.iter().all(|e| expected_env.contains(e)
            || e.starts_with("PATH=")
            || e == &"HOME=/"
            || e == &"USER=nobody"
            || e == &"LOGNAME=nobody"
            || e.starts_with("PWD=")
            || e.starts_with("SHLVL=")
            || e.starts_with("_=")),
        "{env:?}"
    );
    assert_eq!(
        std::fs::read_to_string(fx.alloc_dir.join("a")).expect("alloc"),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(fx.task_dir.join("local/l")).expect("local"),
        "l\n"
    );
    // secrets and tmp were private tmpfs: nothing of them on the host.
    assert_eq!(
        std::fs::read_dir(fx.task_dir.join("secrets"))
            .expect("secrets")
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(fx.task_dir.join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}

/// The task's mount table as (mount point, per-mount options).
fn task_mounts(fx: &Fixture) -> Vec<(String, String)> {
    let out = run(fx, &fx.spec("/bin/cat", &["/proc/self/mountinfo"]));
    assert_eq!(out.status, exited(0), "{out:?}");
    out.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[4].to_owned(), f[5].to_owned())
        })
        .collect()
}

fn check_mount_table(mounts: &[(String, String)]) {
    let opts = |point: &str| -> Vec<&str> {
        mounts
            .iter()
            .find(|(p, _)| p == point)
            .map(|(_, o)| o.split(',').collect())
            .unwrap_or_else(|| panic!("no mount at {point}: {mounts:#?}"))
    };
    for point in ["/etc", "/usr"] {
        let o = opts(point);
        for flag in ["ro", "nosuid", "nodev"] {
            assert!(o.contains(&flag), "{point} lacks {flag}: {o:?}");
        }
    }
    for point in ["/", "/alloc"] {
        let o = opts(point);
        for flag in ["rw", "nosuid", "nodev"] {
            assert!(o.contains(&flag), "{point} lacks {flag}: {o:?}");
        }
    }
    let null = opts("/dev/null");
    assert!(
        null.contains(&"nosuid") && !null.contains(&"nodev"),
        "{null:?}"
    );
    for point in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/secrets", "/tmp"] {
        assert!(opts(point).contains(&"nosuid"), "{point}");
    }
    // The guarded parts of /proc: read-only, or hidden under read-only mounts.
    for point in mounts
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("/proc/"))
    {
        let o = opts(point);
        let hidden_file = point == "/proc/kcore"
            || point == "/proc/keys"
            || point == "/proc/timer_list"
            || point == "/proc/sched_debug";
        assert!(
            hidden_file || o.contains(&"ro"),
            "{point} is writable: {o:?}"
        );
    }
    // The default masks over what this host has: read-only, nothing to run or open as a
    // device (with mount_setattr and with the remount fallback alike).
    let mut masked = 0;
    for point in execdriver_core::spec::DEFAULT_MASKED_PATHS
        .iter()
        .filter(|p| !p.contains('*') && Path::new(p).exists())
    {
        let o = opts(point);
        for flag in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(o.contains(&flag), "mask {point} lacks {flag}: {o:?}");
        }
        masked += 1;
    }
    assert!(
        masked > 0 || !Path::new("/etc/shadow").exists(),
        "no mask in {mounts:#?}"
    );
    // Only what the plan mounts: nothing of the host's other mounts (/sys, /mnt, ...).
    let allowed = |p: &str| {
        ["/", "/etc", "/usr", "/proc", "/alloc", "/secrets", "/tmp"].contains(&p)
            || p.starts_with("/dev")
            || p.starts_with("/etc/")
            || p.starts_with("/usr/")
            || p.strip_prefix("/proc/").is_some_and(|rest| {
                [
                    "sys",
                    "sysrq-trigger",
                    "irq",
                    "bus",
                    "fs",
                    "kcore",
                    "keys",
                    "timer_list",
                    "sched_debug",
                    "acpi",
                    "scsi",
                ]
                .iter()
                .any(|g| rest == *g || rest.starts_with(&format!("{g}/")))
            })
    };
    let stray: Vec<&(String, String)> = mounts.iter().filter(|(p, _)| !allowed(p)).collect();
    assert!(
        stray.is_empty(),
        "unexpected mounts in the task: {stray:#?}"
    );
}

#[test]
fn the_task_mount_table_has_the_right_flags() {
    if !require_root("the_task_mount_table_has_the_right_flags", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    check_mount_table(&task_mounts(&fx));
}

#[test]
fn the_remount_fallback_gives_the_same_flags() {
    if !require_root("the_remount_fallback_gives_the_same_flags", NEEDS_ROOT) {
        return;
    }
    // Other tests may run while the switch is on: both paths must give the same results.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            isolation::force_bind_remount_fallback(false);
        }
    }
    let _reset = Reset;
    isolation::force_bind_remount_fallback(true);
    let fx = Fixture::new();
    check_mount_table(&task_mounts(&fx));
}

#[test]
fn nothing_is_copied_into_the_task_dir() {
    if !require_root("nothing_is_copied_into_the_task_dir", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let out = run(&fx, &fx.spec("/bin/true", &[]));
    assert_eq!(out.status, exited(0), "{out:?}");
    // Only empty mount points and symlinks: no file content from the host.
    let mut stack = vec![fx.task_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).expect("stat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                assert!(
                    meta.file_type().is_symlink() || meta.len() == 0,
                    "{:?} has content",
                    entry.path()
                );
            }
        }
    }
    for link in ["bin", "lib", "lib64", "sbin"] {
        let host = Path::new("/").join(link);
        if let Ok(target) = std::fs::read_link(&host) {
            assert_eq!(
                std::fs::read_link(fx.task_dir.join(link)).expect("link kept"),
                target
            );
        }
    }
}

#[test]
fn a_missing_command_exits_127_with_a_message() {
    if !require_root("a_missing_command_exits_127_with_a_message", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let out = run(&fx, &fx.spec("/bin/nope", &[]));
    assert_eq!(out.status, exited(127), "{out:?}");
    assert_eq!(
        out.stderr,
        "execdriver: cannot run \"/bin/nope\": no such file or directory\n"
    );
    let out = run(&fx, &fx.spec("no-such-command-anywhere", &[]));
    assert_eq!(out.status, exited(127), "{out:?}");
    assert!(
        out.stderr
            .contains("\"no-such-command-anywhere\": command not found in PATH"),
        "{out:?}"
    );
    // A bare name is looked up in the task root's PATH.
    let out = run(&fx, &fx.spec("echo", &["found"]));
    assert_eq!((out.status, out.stdout.as_str()), (exited(0), "found\n"));
}

#[test]
fn a_file_that_cannot_be_executed_exits_126() {
    if !require_root("a_file_that_cannot_be_executed_exits_126", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let local = fx.task_dir.join("local");
    std::fs::create_dir(&local).expect("local");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    write_program(&local.join("script.sh"), b"#!/bin/sh\necho ran\n");
    std::fs::set_permissions(
        local.join("script.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = run(&fx, &fx.spec("/local/script.sh", &[]));
    assert_eq!(out.status, exited(126), "{out:?}");
    assert_eq!(
        out.stderr,
        "execdriver: cannot run \"/local/script.sh\": permission denied\n"
    );
    // Made executable, it runs, also by a path relative to the working dir (/).
    std::fs::set_permissions(
        local.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let out = run(&fx, &fx.spec("local/script.sh", &[]));
    assert_eq!((out.status, out.stdout.as_str()), (exited(0), "ran\n"));
    // An interpreter missing from the root is named as such.
    write_program(&local.join("orphan.sh"), b"#!/no/such/interpreter\n");
    std::fs::set_permissions(
        local.join("orphan.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let out = run(&fx, &fx.spec("/local/orphan.sh", &[]));
    assert_eq!(out.status, exited(127), "{out:?}");
    assert!(out.stderr.contains("interpreter"), "{out:?}");
}

#[test]
fn a_double_forked_daemon_dies_with_the_task() {
    if !require_root("a_double_forked_daemon_dies_with_the_task", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    // The task starts two daemons, then waits for the test to have seen them.
    let running = start(&fx.sh(
        "(setsid sleep 1000 &) ; nohup sleep 1000 >/dev/null 2>&1 & \
         while [ ! -e /alloc/go ]; do sleep 0.05; done; echo started; exit 0",
    ));
    // init, sh, and the two sleeps (the polling `sleep 0.05` comes and goes).
    let members = namespace_members(running.task.pid_namespace(), 4);
    std::fs::write(fx.alloc_dir.join("go"), "").expect("go");
    let out = running.finish();
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "started\n");
    assert_all_gone(&members);
    fx.assert_no_host_mounts();
}

#[test]
fn sigterm_reaches_the_task_promptly() {
    if !require_root("sigterm_reaches_the_task_promptly", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let running = start(&fx.spec("/bin/sleep", &["1000"]));
    let sent = Instant::now();
    running.task.signal(Signal::SIGTERM).expect("signal");
    let out = running.finish();
    assert_eq!(out.status, ExitStatus::signaled(Signal::SIGTERM), "{out:?}");
    assert_eq!(out.status.exit_code, 143);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?}",
        sent.elapsed()
    );
}

#[test]
fn sigkill_takes_the_whole_namespace_down() {
    if !require_root("sigkill_takes_the_whole_namespace_down", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let running = start(&fx.sh("sleep 1000 & trap '' TERM INT; sleep 1000; wait"));
    let members = namespace_members(running.task.pid_namespace(), 4);
    running.task.signal(Signal::SIGKILL).expect("signal");
    let out = running.finish();
    assert_eq!(out.status, ExitStatus::signaled(Signal::SIGKILL), "{out:?}");
    assert_all_gone(&members);
}

/// The host pid of the init's first child (the task), from /proc.
fn task_host_pid(init_pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children"))
                .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the init has no child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_state(pid: i32, want: char) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never reached state {want}: {stat}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigstop_and_sigcont_are_forwarded() {
    if !require_root("sigstop_and_sigcont_are_forwarded", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let running = start(&fx.spec("/bin/sleep", &["1000"]));
    let task = task_host_pid(running.task.init_pid);
    wait_for_state(task, 'S');
    running
        .task
        .signal(Signal::new(libc::SIGSTOP).expect("signal"))
        .expect("stop");
    wait_for_state(task, 'T');
    // The init itself keeps running.
    wait_for_state(running.task.init_pid, 'S');
    running
        .task
        .signal(Signal::new(libc::SIGCONT).expect("signal"))
        .expect("cont");
    wait_for_state(task, 'S');
    running.task.signal(Signal::SIGUSR1).expect("usr1");
    let out = running.finish();
    assert_eq!(out.status, ExitStatus::signaled(Signal::SIGUSR1), "{out:?}");
}

#[test]
fn the_cgroup_callback_gets_the_init_before_it_runs() {
    if !require_root(
        "the_cgroup_callback_gets_the_init_before_it_runs",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let seen = Mutex::new(Vec::new());
    let record = |pid: i32| {
        // The init must not have built the root yet: it is still blocked, in the host's
        // mount view (its root is still /).
        let root = std::fs::read_link(format!("/proc/{pid}/root")).map_err(|e| e.to_string())?;
        seen.lock().expect("lock").push((pid, root));
        Ok(())
    };
    let running = start_with(&fx.spec("/bin/true", &[]), &record).expect("launch");
    let init_pid = running.task.init_pid;
    let out = running.finish();
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![(init_pid, PathBuf::from("/"))]
    );

    // A refusal kills the init: nothing runs, nothing is left.
    let pid_seen = Mutex::new(0);
    let refuse = |pid: i32| {
        *pid_seen.lock().expect("lock") = pid;
        Err("no room in the cgroup".to_owned())
    };
    let err = start_with(&fx.spec("/bin/true", &[]), &refuse)
        .err()
        .expect("refused");
    assert!(
        matches!(&err, IsolationError::Cgroup { reason, .. } if reason == "no room in the cgroup"),
        "{err}"
    );
    let pid = *pid_seen.lock().expect("lock");
    assert!(pid > 0);
    assert!(
        matches!(
            process::identity(pid),
            Err(process::ProcessError::NotFound { .. })
        ),
        "the refused init (pid {pid}) is still there"
    );
    fx.assert_no_host_mounts();
}

/// A task cgroup (crate::cgroups, v1 or v2) under this process's own cgroup, destroyed on
/// drop; `None` with the reason when the node has no usable cgroups.
/// The cgroup, and the parent it was made under (dropped after it).
struct TestCgroup(
    Option<cgroups::TaskCgroup>,
    // Never read: held so that the parent goes after the cgroup.
    #[allow(dead_code)] testing::TestParent,
);

impl TestCgroup {
    fn create(pids_max: u64) -> Result<Self, String> {
        let probe = cgroups::probe();
        if probe.version.is_none() || !probe.missing.is_empty() {
            return Err(format!("no usable cgroups: {probe:?}"));
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("execdriver-isolation-{}-{n}", std::process::id());
        let test_parent = testing::TestParent::new("isolation").map_err(|e| e.to_string())?;
        let parent = test_parent.parent().clone();
        let resources = Resources {
            cpu_shares: 512,
            memory_limit_bytes: 256 << 20,
            memory_max_bytes: None,
            pids_max,
            cpu_max_millicores: None,
            ..Default::default()
        };
        cgroups::TaskCgroup::create(&parent, &name, &resources)
            .map(|cg| Self(Some(cg), test_parent))
            .map_err(|e| e.to_string())
    }

    /// Writes `max` into the cgroup's pids limit, below what a spec may ask for.
    fn set_pids_max(&self, max: u64) {
        let cg = self.0.as_ref().expect("not destroyed");
        let dir = cg.controller_path("pids").expect("pids controller");
        std::fs::write(dir.join("pids.max"), max.to_string()).expect("write pids.max");
    }

    fn add(&self, pid: i32) -> Result<(), String> {
        self.0
            .as_ref()
            .ok_or_else(|| "destroyed".to_owned())?
            .add_process(pid)
            .map_err(|e| e.to_string())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take()
            && let Err(e) = cg.destroy()
        {
            eprintln!("could not remove test cgroup: {e}");
        }
    }
}

/// A test cgroup, or a printed skip (a panic under CI) when the node has none.
fn test_cgroup_or_skip(test: &str, pids_max: u64) -> Option<TestCgroup> {
    match TestCgroup::create(pids_max) {
        Ok(cg) => Some(cg),
        Err(reason) => {
            testing::require(test, Some(reason));
            None
        }
    }
}

#[test]
fn the_init_runs_in_the_cgroup_from_the_start() {
    if !require_root("the_init_runs_in_the_cgroup_from_the_start", NEEDS_ROOT) {
        return;
    }
    // pids.max = 1 holds the init alone: if it is in the cgroup before it does anything,
    // forking the task fails, and that is reported as a setup error naming the step. (A
    // spec cannot ask for 1, which no task can start under: the test writes it itself.)
    let Some(cg) = test_cgroup_or_skip("the_init_runs_in_the_cgroup_from_the_start", 2) else {
        return;
    };
    cg.set_pids_max(1);
    let fx = Fixture::new();
    let err = start_with(&fx.spec("/bin/true", &[]), &|pid| cg.add(pid))
        .err()
        .expect("the task cannot be forked");
    assert!(
        matches!(&err, IsolationError::Setup { step, source }
            if step.contains("forking the task") && source.raw_os_error() == Some(libc::EAGAIN)),
        "{err}"
    );
    // With room for init + task + one child of the task, a fork bomb stays held.
    drop(cg);
    let cg = TestCgroup::create(3).expect("second cgroup");
    let out = start_with(
        &fx.sh("sleep 0.2 & sleep 0.2 & echo forked=$?; wait"),
        &|pid| cg.add(pid),
    )
    .expect("launch")
    .finish();
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource"),
        "{out:?}"
    );
    fx.assert_no_host_mounts();
}

#[test]
fn links_in_the_task_dir_never_make_root_chown_or_chmod_host_files() {
    if !require_root(
        "links_in_the_task_dir_never_make_root_chown_or_chmod_host_files",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    // Host files outside the task dir, with an owner and mode the preparation would change.
    let victim_file = fx.dir.path().join("victim-file");
    let victim_dir = fx.dir.path().join("victim-dir");
    std::fs::write(&victim_file, b"secret").expect("victim file");
    std::fs::create_dir(&victim_dir).expect("victim dir");
    for v in [&victim_file, &victim_dir] {
        std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let state = |p: &Path| {
        let m = std::fs::metadata(p).expect("stat victim");
        (m.uid(), m.gid(), m.mode())
    };
    let before = (state(&victim_file), state(&victim_dir));
    for (name, target) in [
        ("local", &victim_file),
        ("local", &victim_dir),
        ("tmp", &victim_dir),
    ] {
        let link = fx.task_dir.join(name);
        // An earlier refused start may have made it as a real (empty) directory.
        let _ = std::fs::remove_dir(&link);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("plant link");
        let err = start_with(&fx.spec("/bin/true", &[]), &|_| Ok(()))
            .err()
            .unwrap_or_else(|| panic!("a task dir with {name} -> {target:?} was accepted"));
        assert!(err.to_string().contains("symlink"), "{err}");
        std::fs::remove_file(&link).expect("remove link");
    }
    // The task dir itself a link to a host dir.
    let linked = fx.dir.path().join("linked-task-dir");
    std::os::unix::fs::symlink(&victim_dir, &linked).expect("link task dir");
    let mut spec = fx.spec("/bin/true", &[]);
    spec.task_dir = linked.clone();
    let err = start_with(&spec, &|_| Ok(()))
        .err()
        .expect("a linked task dir was accepted");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!((state(&victim_file), state(&victim_dir)), before);
    assert_eq!(
        std::fs::read_dir(&victim_dir).expect("victim dir").count(),
        0
    );
    fx.assert_no_host_mounts();
}

#[test]
fn bad_specs_are_refused_before_anything_starts() {
    if !require_root("bad_specs_are_refused_before_anything_starts", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.spec("/bin/true", &[]);
    spec.user = "no-such-user-execdriver".into();
    let err = start_with(&spec, &|_| panic!("must not clone"))
        .err()
        .expect("unknown user");
    assert!(err.to_string().contains("no-such-user-execdriver"), "{err}");

    let mut spec = fx.spec("/bin/true", &[]);
    spec.task_dir = fx.dir.path().join("missing");
    let err = start_with(&spec, &|_| panic!("must not clone"))
        .err()
        .expect("missing task dir");
    assert!(err.to_string().contains("task dir"), "{err}");

    let mut spec = fx.spec("/bin/true", &[]);
    spec.chroot_env.push("/proc".into());
    let err = start_with(&spec, &|_| panic!("must not clone"))
        .err()
        .expect("reserved dir");
    assert!(err.to_string().contains("/proc"), "{err}");

    std::fs::set_permissions(&fx.task_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let err = start_with(&fx.spec("/bin/true", &[]), &|_| panic!("must not clone"))
        .err()
        .expect("unsearchable");
    assert!(err.to_string().contains("not searchable"), "{err}");
}

/// The init's executable once the task runs: the reaper's memfd, or (waiting in place) the
/// binary it is a fork of. Waits until the exec, which follows the task's start report.
fn init_image_once_settled(pid: i32, reaper: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if exe.starts_with("/memfd:execdriver-init") == reaper {
            return exe;
        }
        assert!(
            Instant::now() < deadline,
            "the init of pid {pid} is still {exe}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Once the task runs its init execs the reaper: nothing of the supervisor's address space
/// (binary, libraries, heap) stays mapped for the task's life, `ps` still shows it as the
/// task's init, and it still forwards a signal from outside and reports the task's end.
#[test]
fn the_init_becomes_the_small_reaper_once_the_task_runs() {
    if !require_root(
        "the_init_becomes_the_small_reaper_once_the_task_runs",
        NEEDS_ROOT,
    ) {
        return;
    }
    if !isolation::reaper_built() {
        // Only x86-64 Linux with glibc has it; there the init always waits in place.
        if cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
            panic!("this build has no reaper: see the build script's warning");
        }
        eprintln!("the_init_becomes_the_small_reaper_once_the_task_runs skipped: no reaper here");
        return;
    }
    let fx = Fixture::new();
    let running = start(&fx.spec("/bin/sleep", &["1000"]));
    let pid = running.task.init_pid;
    init_image_once_settled(pid, true);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    for line in maps.lines() {
        let name = line.split_whitespace().nth(5).unwrap_or("");
        assert!(
            name.starts_with("/memfd:execdriver-init")
                || ["[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"].contains(&name),
            "the reaper maps {line}"
        );
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim_end(), "execdriver-init");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, b"execdriver-init\0isolation-test\0");
    wait_for_state(task_host_pid(pid), 'S');
    // From outside the namespace, as the supervisor's kill does.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the init");
    let out = running.finish();
    assert_eq!(out.status, ExitStatus::signaled(Signal::SIGTERM), "{out:?}");
}

/// Where the reaper cannot be exec'd, the init waits in place, titled as the task's init
/// rather than shown as a second copy of the supervisor, and does the same job.
#[test]
fn an_init_without_the_reaper_waits_in_place() {
    if !require_root("an_init_without_the_reaper_waits_in_place", NEEDS_ROOT) {
        return;
    }
    /// Switches the process-wide setting back even when the test fails.
    struct InPlace;
    impl Drop for InPlace {
        fn drop(&mut self) {
            isolation::force_init_waiting_in_place(false);
        }
    }
    isolation::force_init_waiting_in_place(true);
    let in_place = InPlace;
    let fx = Fixture::new();
    let running = start(&fx.spec("/bin/sh", &["-c", "sleep 1000; exit 3"]));
    drop(in_place);
    let pid = running.task.init_pid;
    wait_for_state(task_host_pid(pid), 'S');
    init_image_once_settled(pid, false);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim_end(), "execdriver-init");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let shown = shown.trim_end();
    let own = std::fs::read(format!("/proc/{}/cmdline", std::process::id())).expect("own");
    // The title is cut to the length of our own argv area.
    let expected = "execdriver-init isolation-test";
    assert_eq!(shown, &expected[..expected.len().min(own.len() - 1)]);
    running.task.signal(Signal::SIGUSR1).expect("usr1");
    let out = running.finish();
    assert_eq!(out.status, ExitStatus::signaled(Signal::SIGUSR1), "{out:?}");
}

#[test]
fn dropping_a_running_task_kills_it() {
    if !require_root("dropping_a_running_task_kills_it", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let running = start(&fx.sh("sleep 1000 & sleep 1000"));
    let members = namespace_members(running.task.pid_namespace(), 4);
    let Running {
        task,
        stdout,
        stderr,
    } = running;
    drop(task);
    assert_all_gone(&members);
    stdout.finish();
    stderr.finish();
}

#[test]
fn the_task_dies_with_the_thread_that_launched_it() {
    if !require_root("the_task_dies_with_the_thread_that_launched_it", NEEDS_ROOT) {
        return;
    }
    // PR_SET_PDEATHSIG: when the launching thread (the supervisor's main thread in real
    // use) ends, the init is SIGKILLed and the namespace with it.
    let fx = Fixture::new();
    let spec = fx.spec("/bin/sleep", &["1000"]);
    let (launched_tx, launched_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let running = std::thread::scope(|s| {
        let spec = &spec;
        s.spawn(move || {
            launched_tx.send(start(spec)).expect("send");
            // Stay alive until the test has seen the task running.
            let _ = end_rx.recv();
        });
        let running = launched_rx.recv().expect("launched");
        let members = namespace_members(running.task.pid_namespace(), 2);
        // The parent-death signal must hold for the reaper the init becomes, too.
        if isolation::reaper_built() {
            init_image_once_settled(running.task.init_pid, true);
        }
        drop(end_tx);
        (running, members)
    });
    let (running, members) = running;
    let out = running.finish();
    assert_eq!(out.status, ExitStatus::signaled(Signal::SIGKILL), "{out:?}");
    assert_all_gone(&members);
}

#[test]
fn launches_from_many_threads_at_once_do_not_interfere() {
    if !require_root(
        "launches_from_many_threads_at_once_do_not_interfere",
        NEEDS_ROOT,
    ) {
        return;
    }
    // The child only makes system calls, so a clone taken while other threads hold the
    // allocator's or stdio's locks must not hang; each task sees only its own output.
    let fx = Fixture::new();
    std::thread::scope(|s| {
        for t in 0..6 {
            let fx = &fx;
            s.spawn(move || {
                for i in 0..10 {
                    let word = format!("t{t}-{i}");
                    let noise: Vec<u8> = vec![0; 64 * 1024];
                    let out = start(&fx.spec("/bin/echo", &[&word])).finish();
                    drop(noise);
                    assert_eq!(out.status, exited(0), "{out:?}");
                    assert_eq!(out.stdout, format!("{word}\n"));
                }
            });
        }
    });
    fx.assert_no_host_mounts();
}

/// A chroot env dir of the test's own with planted secrets, so the masking tests do not
/// depend on what this host has in /etc. In /var/tmp: not in /tmp, which is the task's own,
/// and writable in the CI's cgroup v2 guest too (where the target dir is read-only).
struct Planted {
    dir: tempfile::TempDir,
}

impl Planted {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("execdriver-planted-")
            .tempdir_in("/var/tmp")
            .expect("planted dir");
        let etc = dir.path().join("etc");
        for d in ["", "ssh", "sudoers.d", "ssl/private"] {
            std::fs::create_dir_all(etc.join(d)).expect("mkdir");
        }
        for (file, content, mode) in [
            ("shadow", "root:planted-hash:19000::::::\n", 0o640),
            ("gshadow", "root:planted-ghash::\n", 0o640),
            ("passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
            ("sudoers.d/admins", "planted ALL=(ALL) ALL\n", 0o440),
            ("ssl/private/node.key", "PLANTED TLS KEY\n", 0o600),
            ("ssh/ssh_host_ed25519_key", "PLANTED PRIVATE KEY\n", 0o600),
            (
                "ssh/ssh_host_ed25519_key.pub",
                "ssh-ed25519 PLANTED\n",
                0o644,
            ),
        ] {
            let path = etc.join(file);
            std::fs::write(&path, content).expect("plant");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod planted dir");
        Self { dir }
    }

    /// The planted copy of an /etc path.
    fn path(&self, etc_path: &str) -> PathBuf {
        self.dir.path().join(etc_path.trim_start_matches('/'))
    }

    /// `spec` with the planted dir in its chroot env and the default masks moved into it.
    fn apply(&self, spec: &mut TaskSpec) {
        spec.chroot_env.push(self.dir.path().to_owned());
        spec.masked_paths = execdriver_core::spec::DEFAULT_MASKED_PATHS
            .iter()
            .map(|m| self.path(m))
            .collect();
    }
}

#[test]
fn the_default_masks_hide_the_secrets_of_etc_from_root_and_nobody() {
    if !require_root(
        "the_default_masks_hide_the_secrets_of_etc_from_root_and_nobody",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let planted = Planted::new();
    let show = |name: &str, path: PathBuf| {
        format!(
            "echo \"{name}=[$(cat {} 2>&1 | tr '\\n' ' ')]\"; ",
            path.display()
        )
    };
    let mut script = String::new();
    for (name, path) in [
        ("shadow", "/etc/shadow"),
        ("gshadow", "/etc/gshadow"),
        ("key", "/etc/ssh/ssh_host_ed25519_key"),
        ("pub", "/etc/ssh/ssh_host_ed25519_key.pub"),
        ("passwd", "/etc/passwd"),
    ] {
        script.push_str(&show(name, planted.path(path)));
    }
    script.push_str(&format!(
        "echo \"sudoers.d=[$(ls -A {})]\"; echo \"tls=[$(ls -A {} 2>&1)]\"; \
         (echo x > {}) 2>/dev/null && echo wrote-shadow; \
         echo \"host-passwd=$(grep -c '^root:' /etc/passwd)\"; \
         grep -F {} /proc/self/mountinfo | cut -d' ' -f5,6",
        planted.path("/etc/sudoers.d").display(),
        planted.path("/etc/ssl/private").display(),
        planted.path("/etc/shadow").display(),
        planted.path("/etc").display(),
    ));
    for user in ["nobody", "root"] {
        let mut spec = fx.sh(&script);
        spec.user = user.into();
        planted.apply(&mut spec);
        let out = run(&fx, &spec);
        assert_eq!(out.status, exited(0), "{user}: {out:?}");
        for line in [
            "shadow=[]",
            "gshadow=[]",
            "key=[]",
            "pub=[ssh-ed25519 PLANTED ]",
            "passwd=[root:x:0:0:root:/root:/bin/sh ]",
            "sudoers.d=[]",
            "tls=[]",
            "host-passwd=1",
        ] {
            assert!(
                out.stdout.lines().any(|l| l == line),
                "{user}: no {line:?} in {out:?}"
            );
        }
        assert!(!out.stdout.contains("wrote-shadow"), "{user}: {out:?}");
        assert!(!out.stdout.contains("PLANTED PRIVATE"), "{user}: {out:?}");
        // Each mask is a read-only mount of its own with nothing to run or use as a device.
        let masks: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| {
                ["/shadow ", "/gshadow ", "_key ", "/sudoers.d ", "/private "]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .collect();
        assert_eq!(masks.len(), 5, "{user}: {out:?}");
        for mask in masks {
            let opts: Vec<&str> = mask.split(' ').nth(1).unwrap_or("").split(',').collect();
            for flag in ["ro", "nosuid", "nodev", "noexec"] {
                assert!(opts.contains(&flag), "{user}: {mask} lacks {flag}");
            }
        }
    }
    // Without masks root reads them all.
    let mut spec = fx.sh(&show("shadow", planted.path("/etc/shadow")));
    spec.user = "root".into();
    planted.apply(&mut spec);
    spec.masked_paths.clear();
    let out = run(&fx, &spec);
    assert_eq!(
        out.stdout, "shadow=[root:planted-hash:19000:::::: ]\n",
        "{out:?}"
    );
}

#[test]
fn a_mask_outside_the_chroot_env_or_on_the_tasks_own_dirs() {
    if !require_root(
        "a_mask_outside_the_chroot_env_or_on_the_tasks_own_dirs",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let planted = Planted::new();
    // A host symlink to a file out of the task's sight is not followed there: the task sees
    // a dangling link, and the file outside is not touched.
    let outside = planted.path("/outside");
    std::fs::write(&outside, "host file").expect("write");
    std::os::unix::fs::symlink(&outside, planted.path("/etc/out")).expect("symlink");
    let mut spec = fx.sh(&format!(
        "cat {} 2>/dev/null || echo unreadable",
        planted.path("/etc/out").display()
    ));
    spec.chroot_env.push(planted.path("/etc"));
    spec.masked_paths = vec![planted.path("/etc/out")];
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "unreadable\n", "{out:?}");
    for path in ["/proc/kcore", "/tmp/x", "/alloc/data"] {
        let mut spec = fx.spec("/bin/true", &[]);
        spec.masked_paths.push(path.into());
        let err = start_with(&spec, &|_| panic!("must not clone"))
            .err()
            .expect(path);
        assert!(
            matches!(err, IsolationError::MaskedPath { .. }) && err.to_string().contains(path),
            "{err}"
        );
    }
}

/// A process in a network namespace of its own; killed and reaped on drop, which ends the
/// namespace with it.
struct NetnsHolder(std::process::Child);

impl NetnsHolder {
    fn new() -> Self {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sleep");
        cmd.arg("600")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: unshare is a system call, fine between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            })
        };
        // spawn returns once the exec succeeded, so the unshare is done by then.
        Self(cmd.spawn().expect("sleep in a new network namespace"))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The interface names in a /proc/net/dev text.
fn interfaces(net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| !name.contains('|'))
        .collect();
    names.sort();
    names
}

/// What a task prints of its network: its namespace, then its /proc/net/dev.
const SHOW_NETWORK: &str = "readlink /proc/self/ns/net; cat /proc/net/dev";

fn netns_inode(link: &str) -> u64 {
    link.trim()
        .strip_prefix("net:[")
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a netns link: {link:?}"))
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    if !require_root("network_none_has_only_loopback_and_it_is_up", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.sh(SHOW_NETWORK);
    spec.network = execdriver_core::Network::None;
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    let own = std::fs::metadata("/proc/self/ns/net")
        .expect("own netns")
        .ino();
    let (link, dev) = out.stdout.split_once('\n').expect("two parts");
    assert_ne!(netns_inode(link), own, "the task is in the host's netns");
    assert_eq!(interfaces(dev), vec!["lo"], "{out:?}");
    // Loopback is up: a listener on 127.0.0.1 accepts a connection (perl is in Debian's
    // essential set; `ip` shows the flag where it is installed).
    assert!(
        Path::new("/usr/bin/perl").exists(),
        "this test needs /usr/bin/perl for its loopback listener"
    );
    let mut spec = fx.spec(
        "/usr/bin/perl",
        &[
            "-MIO::Socket::INET",
            "-e",
            "my $l = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) \
               or die \"listen: $!\\n\"; \
             my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $l->sockport) \
               or die \"connect: $!\\n\"; \
             my $a = $l->accept or die \"accept: $!\\n\"; \
             print $c \"ping\\n\"; print scalar <$a>;",
        ],
    );
    spec.network = execdriver_core::Network::None;
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    assert_eq!(out.stdout, "ping\n", "{out:?}");
    if let Some(ip) = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    {
        let mut spec = fx.spec(ip, &["-o", "link", "show"]);
        spec.network = execdriver_core::Network::None;
        let out = run(&fx, &spec);
        assert_eq!(out.status, exited(0), "{out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{out:?}");
        assert!(lines[0].contains(": lo: <LOOPBACK,UP,LOWER_UP>"), "{out:?}");
    }
}

#[test]
fn network_host_is_the_hosts_namespace() {
    if !require_root("network_host_is_the_hosts_namespace", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let out = run(&fx, &fx.sh(SHOW_NETWORK));
    assert_eq!(out.status, exited(0), "{out:?}");
    let (link, dev) = out.stdout.split_once('\n').expect("two parts");
    let own = std::fs::metadata("/proc/self/ns/net")
        .expect("own netns")
        .ino();
    assert_eq!(netns_inode(link), own);
    let host = std::fs::read_to_string("/proc/self/net/dev").expect("host net dev");
    assert_eq!(interfaces(dev), interfaces(&host), "{out:?}");
}

#[test]
fn network_path_joins_that_namespace() {
    if !require_root("network_path_joins_that_namespace", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let holder = NetnsHolder::new();
    let want = std::fs::metadata(holder.path())
        .expect("holder's netns")
        .ino();
    let mut spec = fx.sh(SHOW_NETWORK);
    spec.network = execdriver_core::Network::Path(holder.path());
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    let (link, dev) = out.stdout.split_once('\n').expect("two parts");
    assert_eq!(netns_inode(link), want, "{out:?}");
    // A fresh namespace: loopback only, and the driver leaves it as it found it (down).
    assert_eq!(interfaces(dev), vec!["lo"], "{out:?}");
    drop(holder);

    // Files that are not a network namespace are refused before anything starts.
    for path in [
        "/proc/self/ns/pid",
        "/etc/passwd",
        "/dev/null",
        "/no/such/netns",
    ] {
        let mut spec = fx.spec("/bin/true", &[]);
        spec.network = execdriver_core::Network::Path(path.into());
        let err = start_with(&spec, &|_| panic!("must not clone"))
            .err()
            .expect(path);
        assert!(
            matches!(err, IsolationError::NetworkNamespace { .. })
                && err.to_string().contains(path),
            "{err}"
        );
    }
}

/// Tells [`seccomp_probe_in_task`] to probe.
const SECCOMP_PROBE_ENV: &str = "EXECDRIVER_TEST_SECCOMP_PROBE";

/// Not a test of its own: run inside a task by the seccomp tests (this test binary, as
/// `/probe` in the task dir), it makes a keyctl and a bpf call that fail whatever
/// the filter (ENOKEY and EINVAL unfiltered, so nothing is created) and prints their
/// errnos. Without the variable it does nothing.
#[test]
fn seccomp_probe_in_task() {
    if std::env::var_os(SECCOMP_PROBE_ENV).is_none() {
        return;
    }
    let errno = |ret: libc::c_long| {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    };
    // KEYCTL_GET_KEYRING_ID of the thread keyring, not created: ENOKEY unfiltered.
    // SAFETY: a call with integer arguments only.
    let keyctl = errno(unsafe { libc::syscall(libc::SYS_keyctl, 0, -1, 0) });
    // A bpf command that does not exist, with no attr: EINVAL unfiltered.
    // SAFETY: as above; the null attr of size 0 is never read.
    let bpf = errno(unsafe { libc::syscall(libc::SYS_bpf, 1000, 0, 0) });
    println!("\nSECCOMP-PROBE keyctl={keyctl} bpf={bpf}");
}

/// Whether this kernel lets an unprivileged process make a user namespace (the control
/// case of the seccomp tests needs it).
fn user_namespaces_allowed() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    read("/proc/sys/user/max_user_namespaces").is_some_and(|n| n > 0)
        && read("/proc/sys/kernel/unprivileged_userns_clone").is_none_or(|n| n != 0)
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_none_or(|n| n == 0)
}

/// A task (as `user`, with `seccomp`) that reports its seccomp mode, tries the namespace and
/// mount calls through the host's own tools, then runs [`seccomp_probe_in_task`] from
/// `/probe`: this test binary, linked (or copied) into the task dir, since its own dir may
/// be under /tmp, which no chroot env dir may be.
fn seccomp_probe_spec(fx: &Fixture, user: &str, seccomp: execdriver_core::Seccomp) -> TaskSpec {
    let probe = fx.task_dir.join("probe");
    if !probe.exists() {
        let exe = std::env::current_exe().expect("current exe");
        if std::fs::hard_link(&exe, &probe).is_err() {
            write_program(&probe, &std::fs::read(&exe).expect("read the test binary"));
            std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755))
                .expect("chmod probe");
        }
    }
    let mut spec = fx.sh("grep '^Seccomp:' /proc/self/status; \
         /usr/bin/unshare -U -r true; echo userns=$?; \
         /usr/bin/unshare -m true; echo mountns=$?; \
         /bin/mount -t tmpfs x /tmp; echo mount=$?; \
         /probe --exact seccomp_probe_in_task --nocapture --test-threads=1");
    spec.user = user.into();
    spec.seccomp = seccomp;
    spec.env.insert(SECCOMP_PROBE_ENV.into(), "1".into());
    spec
}

fn probe_line(out: &Outcome) -> &str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("SECCOMP-PROBE "))
        .unwrap_or_else(|| panic!("the probe did not run: {out:?}"))
}

#[test]
fn a_default_task_has_a_seccomp_filter_denying_namespaces_mounts_keyrings_and_bpf() {
    if !require_root(
        "a_default_task_has_a_seccomp_filter_denying_namespaces_mounts_keyrings_and_bpf",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    for user in ["nobody", "root"] {
        let spec = seccomp_probe_spec(&fx, user, execdriver_core::Seccomp::Default);
        let out = run(&fx, &spec);
        assert_eq!(out.status, exited(0), "as {user}: {out:?}");
        assert!(
            out.stdout.starts_with("Seccomp:\t2\n"),
            "as {user}: {out:?}"
        );
        for refused in ["userns=", "mountns=", "mount="] {
            assert!(
                !out.stdout.contains(&format!("{refused}0")),
                "{refused} succeeded as {user}: {out:?}"
            );
        }
        assert!(
            out.stderr
                .contains("unshare failed: Operation not permitted"),
            "as {user}: {out:?}"
        );
        assert_eq!(probe_line(&out), "keyctl=1 bpf=1", "as {user}: {out:?}");
    }
}

#[test]
fn an_unconfined_task_has_no_filter() {
    if !require_root("an_unconfined_task_has_no_filter", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let spec = seccomp_probe_spec(&fx, "nobody", execdriver_core::Seccomp::Unconfined);
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    assert!(out.stdout.starts_with("Seccomp:\t0\n"), "{out:?}");
    // The calls reach the kernel, which answers for itself: ENOKEY, and EINVAL for bpf (or
    // EPERM where the kernel refuses every bpf command to the unprivileged, before 6.x).
    let probe = probe_line(&out);
    assert!(
        ["keyctl=126 bpf=22", "keyctl=126 bpf=1"].contains(&probe),
        "{out:?}"
    );
    if user_namespaces_allowed() {
        assert!(out.stdout.contains("userns=0"), "{out:?}");
    }
}

#[test]
fn a_seccomp_profile_replaces_the_default() {
    if !require_root("a_seccomp_profile_replaces_the_default", NEEDS_ROOT) {
        return;
    }
    let fx = Fixture::new();
    let profile = execdriver_core::SeccompProfile::from_json(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 28}]}"#,
    )
    .expect("profile");
    let mut spec = fx.sh(
        "grep '^Seccomp:' /proc/self/status; mkdir /tmp/d; echo mkdir=$?; \
         /usr/bin/unshare -U -r true; echo userns=$?; test -d /tmp/d || echo absent",
    );
    spec.seccomp = execdriver_core::Seccomp::Profile(profile);
    let out = run(&fx, &spec);
    assert_eq!(out.status, exited(0), "{out:?}");
    assert!(out.stdout.starts_with("Seccomp:\t2\n"), "{out:?}");
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
    assert!(out.stdout.contains("absent"), "{out:?}");
    assert!(out.stderr.contains("No space left on device"), "{out:?}");
    // Only the profile applies: what the default denies is up to it.
    if user_namespaces_allowed() {
        assert!(out.stdout.contains("userns=0"), "{out:?}");
    }
}

#[test]
fn an_unusable_profile_is_refused_before_anything_runs() {
    if !require_root(
        "an_unusable_profile_is_refused_before_anything_runs",
        NEEDS_ROOT,
    ) {
        return;
    }
    let fx = Fixture::new();
    let profile = execdriver_core::SeccompProfile::from_json(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("the shape is right");
    let marker = fx.task_dir.join("ran");
    let mut spec = fx.sh(&format!("touch {}", marker.display()));
    spec.seccomp = execdriver_core::Seccomp::Profile(profile);
    match start_with(&spec, &|_| Ok(())) {
        Err(IsolationError::Seccomp(e)) => {
            assert!(e.to_string().contains("syscalls[0].names[0]"), "{e}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("the task was started"),
    }
    assert!(!marker.exists());
    fx.assert_no_host_mounts();
}
