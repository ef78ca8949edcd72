//! Nomad's task model on the engine, through the plugin's real socket: log FIFOs read,
//! dropped and read again, the task's resolv.conf, GROUP networking, the user policy, the
//! seccomp option, reserved cores and devices. Root-only tests fail loudly under CI without
//! root.

mod support;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use execdriver_nomad::proto::drivers as d;
use execdriver_nomad::proto::drivers::network_isolation_spec::NetworkIsolationMode;
use rmpv::Value as R;
use support::{
    AllocDir, PluginProcess, TaskGuard, msgpack, plugin_config, set_config_request, slice_for,
    strings, task_config, wait_for_file,
};
use tonic::Code;

fn root(test: &str) -> bool {
    execdriver_linux::testing::require_root(test, "starts real tasks through the plugin")
}

async fn configured(plugin: &PluginProcess, config: Vec<u8>) -> support::Clients {
    let mut c = plugin.clients().await;
    c.base
        .set_config(set_config_request(config))
        .await
        .expect("config");
    c
}

async fn start(c: &mut support::Clients, task: d::TaskConfig) -> Result<Vec<u8>, tonic::Status> {
    c.driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .map(|r| r.into_inner().handle.expect("handle").driver_state)
}

async fn wait_task(c: &mut support::Clients, task_id: &str) -> d::ExitResult {
    tokio::time::timeout(
        Duration::from_secs(30),
        c.driver.wait_task(d::WaitTaskRequest {
            task_id: task_id.into(),
        }),
    )
    .await
    .expect("wait within 30 s")
    .expect("wait")
    .into_inner()
    .result
    .expect("result")
}

async fn destroy(c: &mut support::Clients, task_id: &str) {
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id: task_id.into(),
            force: true,
        })
        .await
        .expect("destroy");
}

/// A FIFO as Nomad's logmon makes it.
fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// A reader of a FIFO, as logmon is: it opens it, reads, and may go away and come back.
struct FifoReader {
    file: std::fs::File,
    got: Vec<u8>,
}

impl FifoReader {
    fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .expect("open the FIFO to read");
        Self {
            file,
            got: Vec::new(),
        }
    }

    /// Reads until `needle` has arrived (bounded); false at EOF without it.
    fn read_until(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if String::from_utf8_lossy(&self.got).contains(needle) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not arrive within {timeout:?}; got {:?}",
                String::from_utf8_lossy(&self.got)
            );
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&self.file),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            match self.file.read(&mut buf) {
                Ok(0) => return String::from_utf8_lossy(&self.got).contains(needle),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("reading the FIFO: {e}"),
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }
}

#[tokio::test]
async fn logs_reach_nomads_fifos_are_dropped_without_a_reader_and_flow_again_when_it_returns() {
    if !root("logs_reach_nomads_fifos_are_dropped_without_a_reader_and_flow_again_when_it_returns")
    {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    let logs = alloc.shared().join("logs");
    let (out, err) = (logs.join(".web.stdout.fifo"), logs.join(".web.stderr.fifo"));
    mkfifo(&out);
    mkfifo(&err);
    // 3 MiB while nobody reads: more than the FIFO holds (1 MiB at most), under the
    // default log rate's hold-back so nothing is dropped for the rate.
    let script = "echo one; echo to-stderr >&2; \
                  while [ ! -e /alloc/go1 ]; do sleep 0.02; done; \
                  head -c 3145728 /dev/zero | tr '\\0' x; echo; \
                  echo flooded > /alloc/flooded; \
                  while [ ! -e /alloc/go2 ]; do sleep 0.02; done; echo two";
    let mut task = task_config(&alloc, "web", "0000f1f0", "/bin/sh", &["-c", script]);
    task.stdout_path = out.display().to_string();
    task.stderr_path = err.display().to_string();
    let task_id = task.id.clone();

    let mut reader = FifoReader::open(&out);
    let mut err_reader = FifoReader::open(&err);
    guard.arm(&start(&mut c, task).await.expect("start"));
    assert!(reader.read_until("one\n", Duration::from_secs(10)));
    assert!(err_reader.read_until("to-stderr\n", Duration::from_secs(10)));

    // The reader goes away (logmon restarting): the task writes on and is not blocked.
    drop(reader);
    std::fs::write(alloc.shared().join("go1"), "").expect("go1");
    wait_for_file(&alloc.shared().join("flooded"), Duration::from_secs(30));
    // Our own log files are not written beside Nomad's.
    assert!(!logs.join("web.stdout.0").exists());

    // It comes back: what the FIFO kept, the drop marker, then the new output.
    let mut reader = FifoReader::open(&out);
    std::fs::write(alloc.shared().join("go2"), "").expect("go2");
    assert!(reader.read_until("two\n", Duration::from_secs(10)));
    let text = reader.text();
    let marker = text
        .lines()
        .find_map(|l| l.strip_prefix("[execdriver: "))
        .and_then(|l| {
            l.strip_suffix(" bytes dropped, the log output was full (no reader, or a slow one)]")
        })
        .unwrap_or_else(|| panic!("no drop marker in {} bytes", text.len()));
    let dropped: u64 = marker.parse().expect("dropped count");
    let after = format!(
        "{marker} bytes dropped, the log output was full (no reader, or a slow one)]\ntwo\n"
    );
    assert!(
        text.ends_with(&after),
        "the marker comes before what follows the drop: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    let kept = text.bytes().filter(|b| *b == b'x').count() as u64 - 1; // "execdriver"
    // Every x kept or counted; the flood's newline may be among the dropped.
    let total = kept + dropped;
    assert!(
        total == 3 * 1024 * 1024 || total == 3 * 1024 * 1024 + 1,
        "kept {kept} + dropped {dropped}"
    );
    assert!(dropped > 0);

    let result = wait_task(&mut c, &task_id).await;
    assert_eq!((result.exit_code, result.signal), (0, 0));
    guard.disarm();
    // The supervisor held the FIFO for the task's life only: the reader sees its end.
    assert!(!reader.read_until("never", Duration::from_secs(10)));
    destroy(&mut c, &task_id).await;
}

#[tokio::test]
async fn dns_is_the_tasks_resolv_conf() {
    if !root("dns_is_the_tasks_resolv_conf") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    let script =
        "cat /etc/resolv.conf > /alloc/resolv; echo x >> /etc/resolv.conf || echo ro > /alloc/ro";
    let mut task = task_config(&alloc, "web", "000000d5", "/bin/sh", &["-c", script]);
    task.dns = Some(d::DnsConfig {
        servers: vec!["10.0.0.2".into(), "fd00::53".into()],
        searches: vec!["service.consul".into()],
        options: vec!["ndots:2".into()],
    });
    let task_id = task.id.clone();
    guard.arm(&start(&mut c, task).await.expect("start"));
    let result = wait_task(&mut c, &task_id).await;
    guard.disarm();
    assert_eq!(result.exit_code, 0);
    let resolv = std::fs::read_to_string(alloc.shared().join("resolv")).expect("resolv");
    let lines: Vec<&str> = resolv.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "nameserver 10.0.0.2",
            "nameserver fd00::53",
            "search service.consul",
            "options ndots:2"
        ]
    );
    assert!(
        alloc.shared().join("ro").exists(),
        "the task could write its resolv.conf"
    );
    destroy(&mut c, &task_id).await;

    // A server that is not an address is refused by name, and nothing starts.
    let mut bad = task_config(&alloc, "web", "000000d6", "/bin/true", &[]);
    bad.dns = Some(d::DnsConfig {
        servers: vec!["dns.example".into()],
        ..Default::default()
    });
    let err = start(&mut c, bad).await.expect_err("bad dns");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("dns servers \"dns.example\""),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn volume_and_host_mounts_are_bound_read_only_or_read_write() {
    if !root("volume_and_host_mounts_are_bound_read_only_or_read_write") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    let host = tempfile::tempdir().expect("host dir");
    let (ro, rw) = (host.path().join("ro"), host.path().join("rw"));
    for dir in [&ro, &rw] {
        std::fs::create_dir(dir).expect("mkdir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    std::fs::write(ro.join("hello"), "from the host\n").expect("write");
    let script = "cat /srv/ro/hello > /alloc/seen; echo x > /srv/ro/x || echo refused > /alloc/ro; \
                  echo written > /srv/rw/out";
    let mut task = task_config(&alloc, "web", "000000d7", "/bin/sh", &["-c", script]);
    for (dir, readonly, mode) in [(&ro, true, "private"), (&rw, false, "")] {
        task.mounts.push(d::Mount {
            host_path: dir.display().to_string(),
            task_path: format!(
                "/srv/{}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("")
            ),
            readonly,
            propagation_mode: mode.into(),
            ..Default::default()
        });
    }
    let task_id = task.id.clone();
    guard.arm(&start(&mut c, task).await.expect("start"));
    let result = wait_task(&mut c, &task_id).await;
    guard.disarm();
    assert_eq!(result.exit_code, 0);
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    assert_eq!(read(alloc.shared().join("seen")), "from the host\n");
    assert_eq!(read(alloc.shared().join("ro")), "refused\n");
    assert!(
        !ro.join("x").exists(),
        "the task wrote through a read-only mount"
    );
    assert_eq!(read(rw.join("out")), "written\n");
    destroy(&mut c, &task_id).await;

    // A mode Nomad does not have is refused by name, and nothing starts.
    let mut bad = task_config(&alloc, "web", "000000d8", "/bin/true", &[]);
    bad.mounts.push(d::Mount {
        host_path: ro.display().to_string(),
        task_path: "/srv/ro".into(),
        propagation_mode: "sideways".into(),
        ..Default::default()
    });
    let err = start(&mut c, bad).await.expect_err("bad mode");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("sideways"), "{}", err.message());
}

/// A network namespace of the test's own, held by a process it started and ends.
struct Netns {
    child: std::process::Child,
}

impl Netns {
    fn new() -> Self {
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let child = std::process::Command::new("unshare")
            .args(["--net", "--", "sleep", "600"])
            .spawn()
            .expect("unshare --net sleep");
        let ns = Self { child };
        // Wait on the thing: the child's netns is its own once unshare has run.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(ns.path()).ok().is_none_or(|l| l == ours) {
            assert!(Instant::now() < deadline, "unshare did not enter a netns");
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn group_networking_joins_the_allocs_network_namespace() {
    if !root("group_networking_joins_the_allocs_network_namespace") {
        return;
    }
    let netns = Netns::new();
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    let script = "readlink /proc/self/ns/net > /alloc/ns";
    let mut task = task_config(&alloc, "web", "000000a1", "/bin/sh", &["-c", script]);
    task.network_isolation_spec = Some(d::NetworkIsolationSpec {
        mode: NetworkIsolationMode::Group as i32,
        path: netns.path().display().to_string(),
        ..Default::default()
    });
    let task_id = task.id.clone();
    guard.arm(&start(&mut c, task).await.expect("start"));
    assert_eq!(wait_task(&mut c, &task_id).await.exit_code, 0);
    guard.disarm();
    let seen = std::fs::read_to_string(alloc.shared().join("ns")).expect("ns");
    let want = std::fs::read_link(netns.path()).expect("netns link");
    assert_eq!(seen.trim(), want.to_string_lossy());
    destroy(&mut c, &task_id).await;

    // HOST: the host's.
    let mut host = task_config(
        &alloc,
        "web",
        "000000a2",
        "/bin/sh",
        &["-c", "readlink /proc/self/ns/net > /alloc/host-ns"],
    );
    host.network_isolation_spec = Some(d::NetworkIsolationSpec::default());
    let host_id = host.id.clone();
    guard.arm(&start(&mut c, host).await.expect("start"));
    assert_eq!(wait_task(&mut c, &host_id).await.exit_code, 0);
    guard.disarm();
    let seen = std::fs::read_to_string(alloc.shared().join("host-ns")).expect("host ns");
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    assert_eq!(seen.trim(), ours.to_string_lossy());
    destroy(&mut c, &host_id).await;
}

#[tokio::test]
async fn the_user_is_the_default_or_an_allowed_one() {
    if !root("the_user_is_the_default_or_an_allowed_one") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let config = msgpack(vec![
        ("data_dir", R::from(data.path().display().to_string())),
        ("slice_name", R::from(slice_for(data.path()))),
        ("default_user", R::from("daemon")),
        ("allowed_users", strings(&["daemon", "nobody"])),
    ]);
    let mut c = configured(&plugin, config).await;
    let alloc = AllocDir::new("web");
    let mut task = task_config(
        &alloc,
        "web",
        "000000e1",
        "/bin/sh",
        &["-c", "id -un > /alloc/user"],
    );
    task.user = String::new();
    let task_id = task.id.clone();
    guard.arm(&start(&mut c, task).await.expect("start"));
    assert_eq!(wait_task(&mut c, &task_id).await.exit_code, 0);
    guard.disarm();
    let user = std::fs::read_to_string(alloc.shared().join("user")).expect("user");
    assert_eq!(user.trim(), "daemon");
    destroy(&mut c, &task_id).await;

    let mut root_task = task_config(&alloc, "web", "000000e2", "/bin/true", &[]);
    root_task.user = "root".into();
    let err = start(&mut c, root_task)
        .await
        .expect_err("root is not allowed");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("user \"root\" is not allowed") && err.message().contains("nobody"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn the_seccomp_option_is_checked_before_anything_starts() {
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    let profile = data.path().join("profile.json");
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).expect("profile");
    for (value, needle) in [
        ("strict".to_owned(), "use \"default\", \"unconfined\""),
        (
            "/nonexistent/profile.json".to_owned(),
            "cannot open the profile",
        ),
        (profile.display().to_string(), "defaultAction"),
    ] {
        let mut task = task_config(&alloc, "web", "000000c1", "/bin/true", &[]);
        task.msgpack_driver_config = msgpack(vec![
            ("args", R::Nil),
            ("command", R::from("/bin/true")),
            ("seccomp", R::from(value.as_str())),
        ]);
        let err = start(&mut c, task).await.expect_err(&value);
        assert_eq!(err.code(), Code::InvalidArgument, "{value}: {err:?}");
        assert!(err.message().contains(needle), "{value}: {}", err.message());
    }
    assert!(
        !data.path().join("tasks").exists()
            || std::fs::read_dir(data.path().join("tasks"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0
    );
}

#[tokio::test]
async fn an_unconfined_task_may_do_what_the_default_filter_denies() {
    if !root("an_unconfined_task_may_do_what_the_default_filter_denies") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    // unshare(CLONE_NEWUSER) is one of the namespace calls the default filter denies.
    let mut codes = Vec::new();
    for (suffix, seccomp) in [("000000c2", "default"), ("000000c3", "unconfined")] {
        let mut task = task_config(
            &alloc,
            "web",
            suffix,
            "/usr/bin/unshare",
            &["--user", "true"],
        );
        task.msgpack_driver_config = msgpack(vec![
            ("args", strings(&["--user", "true"])),
            ("command", R::from("/usr/bin/unshare")),
            ("seccomp", R::from(seccomp)),
        ]);
        let task_id = task.id.clone();
        guard.arm(&start(&mut c, task).await.expect("start"));
        codes.push(wait_task(&mut c, &task_id).await.exit_code);
        guard.disarm();
        destroy(&mut c, &task_id).await;
    }
    assert_ne!(codes[0], 0, "the default filter let unshare --user through");
    assert_eq!(codes[1], 0, "unconfined, unshare --user works");
}

/// Sets Nomad's reserved cores (`cpuset_cpus`) of a task.
fn reserve_cores(task: &mut d::TaskConfig, cpus: &str) {
    if let Some(r) = task.resources.as_mut() {
        r.linux_resources = Some(d::LinuxResources {
            cpuset_cpus: cpus.into(),
            ..Default::default()
        });
    }
}

#[tokio::test]
async fn reserved_cores_pin_the_task_and_devices_appear_in_its_dev() {
    if !root("reserved_cores_pin_the_task_and_devices_appear_in_its_dev") {
        return;
    }
    let v1 = execdriver_linux::cgroups::probe().version
        == Some(execdriver_linux::cgroups::CgroupVersion::V1);
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let first = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| l.trim().split([',', '-']).next().map(str::to_owned))
        .expect("a cpu");
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");
    let script = "grep Cpus_allowed_list /proc/self/status > /alloc/cpus; \
                  ls /dev/mydev > /alloc/dev 2>&1; true";
    let mut task = task_config(&alloc, "web", "000000c1", "/bin/sh", &["-c", script]);
    reserve_cores(&mut task, &first);
    if v1 {
        task.devices.push(d::Device {
            host_path: "/dev/null".into(),
            task_path: "/dev/mydev".into(),
            cgroup_permissions: "rw".into(),
        });
    }
    let task_id = task.id.clone();
    guard.arm(&start(&mut c, task).await.expect("start"));
    let result = wait_task(&mut c, &task_id).await;
    guard.disarm();
    assert_eq!(result.exit_code, 0);
    let cpus = std::fs::read_to_string(alloc.shared().join("cpus")).expect("cpus");
    assert_eq!(cpus, format!("Cpus_allowed_list:\t{first}\n"));
    if v1 {
        let dev = std::fs::read_to_string(alloc.shared().join("dev")).expect("dev");
        assert_eq!(dev, "/dev/mydev\n");
    }
    destroy(&mut c, &task_id).await;

    // Cores the node does not have: refused by name, and nothing starts.
    let mut bad = task_config(&alloc, "web", "000000c2", "/bin/true", &[]);
    reserve_cores(&mut bad, "8191");
    let err = start(&mut c, bad).await.expect_err("cpu 8191");
    assert!(err.message().contains("8191"), "{}", err.message());
    if !v1 {
        let mut bad = task_config(&alloc, "web", "000000c3", "/bin/true", &[]);
        bad.devices.push(d::Device {
            host_path: "/dev/null".into(),
            ..Default::default()
        });
        let err = start(&mut c, bad).await.expect_err("devices on v2");
        assert!(
            err.message().contains("devices need cgroup v1"),
            "{}",
            err.message()
        );
    }
}

/// Sets Nomad's `cpuset_cgroup` of a task, with reserved cores when `cpus` is not empty.
fn cpuset_cgroup(task: &mut d::TaskConfig, path: &Path, cpus: &str) {
    if let Some(r) = task.resources.as_mut() {
        r.linux_resources = Some(d::LinuxResources {
            cpuset_cpus: cpus.into(),
            cpuset_cgroup: path.display().to_string(),
            ..Default::default()
        });
    }
}

/// Nomad's `cpuset_cgroup`, stood in for by a cgroup the test makes beneath its own: the task
/// lives in it (v1 without reserved cores: joined, so Nomad can still narrow the partition's
/// cpus under it) or beneath it, destroying the task leaves it (empty), and a path that is no
/// cgroup is refused as an invalid argument with nothing started.
#[tokio::test]
async fn nomads_cpuset_cgroup_holds_the_task_and_outlives_it() {
    if !root("nomads_cpuset_cgroup_holds_the_task_and_outlives_it") {
        return;
    }
    let v1 = execdriver_linux::cgroups::probe().version
        == Some(execdriver_linux::cgroups::CgroupVersion::V1);
    let mount = if v1 {
        Path::new("/sys/fs/cgroup/cpuset")
    } else {
        Path::new("/sys/fs/cgroup")
    };
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_owned())
        .expect("cpus");
    let first = cpus.split([',', '-']).next().expect("a cpu").to_owned();
    let test_parent =
        execdriver_linux::testing::TestParent::new("nomad-cpuset-cgroup").expect("test parent");
    // Declared before the task guard, so dropped after it: the task's cgroup goes first.
    let mut share = execdriver_linux::cgroups::NomadCgroup::create(
        &format!("execdriver-test-nomad-share-{}", std::process::id()),
        &test_parent.parent().paths()[0],
    )
    .expect("stand-in of Nomad's cgroup");
    let rel = |p: &Path| {
        format!(
            "/{}",
            p.strip_prefix(mount).expect("in the mount").display()
        )
    };
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, plugin_config(data.path())).await;
    let alloc = AllocDir::new("web");

    // The shared partition.
    let script = "cat /proc/self/cgroup > /alloc/cg.tmp && mv /alloc/cg.tmp /alloc/cg; \
                  exec sleep 600";
    let mut task = task_config(&alloc, "web", "000000d1", "/bin/sh", &["-c", script]);
    cpuset_cgroup(&mut task, share.path(), "");
    let task_id = task.id.clone();
    guard.arm(&start(&mut c, task).await.expect("start"));
    let seen = wait_for_file(&alloc.shared().join("cg"), Duration::from_secs(10));
    let at = share
        .hierarchy_path_in(&seen)
        .unwrap_or_else(|| panic!("no cpuset line in {seen:?}"))
        .to_owned();
    let share_rel = rel(share.path());
    if v1 {
        assert_eq!(at, share_rel, "the task is not in Nomad's share cgroup");
        let pid = share
            .pids()
            .expect("pids")
            .first()
            .copied()
            .expect("the task");
        let allowed = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .expect("status")
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Cpus_allowed_list:")
                        .map(|c| c.trim().to_owned())
                })
                .expect("cpus")
        };
        assert_eq!(allowed(pid), cpus);
        if first != cpus {
            // Nomad narrows the share when another task reserves cores.
            std::fs::write(share.path().join("cpuset.cpus"), &first).expect("narrow");
            assert_eq!(allowed(pid), first);
            std::fs::write(share.path().join("cpuset.cpus"), &cpus).expect("widen");
        }
    } else {
        let (parent, child) = at.rsplit_once('/').expect("a child");
        assert_eq!(parent, share_rel);
        assert!(child.starts_with("execdriver-"), "{at}");
    }
    destroy(&mut c, &task_id).await;
    guard.disarm();
    assert!(share.path().is_dir(), "Nomad's cgroup went with the task");
    assert_eq!(share.pids().expect("pids"), Vec::<i32>::new());
    let children = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(children(share.path()), Vec::<String>::new());

    // Reserved cores, beneath the cgroup Nomad made for the task.
    let scope = share.child("0b4e2d6a.web").expect("scope");
    let offers_cpuset = v1
        || std::fs::read_to_string(scope.join("cgroup.controllers"))
            .expect("controllers")
            .split_whitespace()
            .any(|c| c == "cpuset");
    if offers_cpuset {
        let script = "cat /proc/self/cgroup > /alloc/cg2; \
                      grep Cpus_allowed_list /proc/self/status > /alloc/cpus2";
        let mut task = task_config(&alloc, "web", "000000d2", "/bin/sh", &["-c", script]);
        cpuset_cgroup(&mut task, &scope, &first);
        let task_id = task.id.clone();
        guard.arm(&start(&mut c, task).await.expect("start reserved"));
        assert_eq!(wait_task(&mut c, &task_id).await.exit_code, 0);
        guard.disarm();
        let seen = std::fs::read_to_string(alloc.shared().join("cg2")).expect("cg2");
        let at = share
            .hierarchy_path_in(&seen)
            .unwrap_or_else(|| panic!("no cpuset line in {seen:?}"))
            .to_owned();
        let (parent, child) = at.rsplit_once('/').expect("a child");
        assert_eq!(parent, rel(&scope));
        assert!(child.starts_with("execdriver-"), "{at}");
        let got = std::fs::read_to_string(alloc.shared().join("cpus2")).expect("cpus2");
        assert_eq!(got, format!("Cpus_allowed_list:\t{first}\n"));
        destroy(&mut c, &task_id).await;
        assert!(scope.is_dir());
        assert_eq!(children(&scope), Vec::<String>::new());
    } else {
        eprintln!("the stand-in's parent offers no cpuset: the reserved-cores case is not run");
    }

    // No cgroup there, or no absolute path: an invalid argument, and nothing starts.
    for (suffix, path) in [("000000d3", "/tmp"), ("000000d4", "nomad/share")] {
        let mut bad = task_config(&alloc, "web", suffix, "/bin/true", &[]);
        cpuset_cgroup(&mut bad, Path::new(path), "");
        let err = start(&mut c, bad).await.expect_err(path);
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains("cpuset cgroup") && err.message().contains(path),
            "{}",
            err.message()
        );
    }
    let tasks = data.path().join("tasks");
    let left: Vec<_> = std::fs::read_dir(&tasks)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tasks.display());
}
