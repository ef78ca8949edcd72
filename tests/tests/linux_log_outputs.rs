//! End to end through the library: a task's streams to the spec's log outputs (a FIFO read by
//! someone else, a file) instead of the rotating files. Needs root (fails loudly under CI
//! without it) and the `execdriver` binary next to this test's target dir.

mod linux_support;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use linux_support::{TestEnv, binary_from_target_dir, eventually};

const CLEAN: Duration = Duration::from_secs(5);

fn env(test: &str) -> Option<TestEnv> {
    execdriver_linux::testing::require_root(test, "it creates cgroups and namespaces")
        .then(|| TestEnv::new(binary_from_target_dir()))
}

fn open_reader(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("open the FIFO to read")
}

/// Reads what is there now, without blocking.
fn read_now(file: &mut std::fs::File, into: &mut Vec<u8>) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn a_fifo_output_never_blocks_the_task_counts_what_it_drops_and_serves_a_returning_reader() {
    let Some(env) = env(
        "a_fifo_output_never_blocks_the_task_counts_what_it_drops_and_serves_a_returning_reader",
    ) else {
        return;
    };
    let script = "echo one; echo err >&2; while [ ! -e /alloc/go1 ]; do sleep 0.02; done; \
                  head -c 3145728 /dev/zero; echo flooded > /alloc/flooded; \
                  while [ ! -e /alloc/go2 ]; do sleep 0.02; done; echo two";
    let mut spec = env.spec("/bin/sh", &["-c", script]);
    let outputs = env.data.join(format!("outputs-{}", spec.task_id));
    std::fs::create_dir(&outputs).expect("outputs dir");
    let fifo = outputs.join("stdout.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let file = outputs.join("stderr.log");
    spec.log_outputs.stdout = Some(fifo.clone());
    spec.log_outputs.stderr = Some(file.clone());
    std::fs::set_permissions(
        &spec.alloc_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod alloc");
    let driver = env.driver();
    let mut reader = open_reader(&fifo);
    let task = driver.start(&spec).expect("start");
    env.track(task.handle_id());
    let mut got = Vec::new();
    assert!(eventually(Duration::from_secs(10), || {
        read_now(&mut reader, &mut got);
        got == b"one\n"
    }));
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t == "err\n")
    }));
    // Not in the rotating files.
    assert!(!spec.alloc_dir.join("logs").join("task.stdout.0").exists());

    drop(reader);
    std::fs::write(spec.alloc_dir.join("go1"), "").expect("go1");
    assert!(
        eventually(Duration::from_secs(30), || spec
            .alloc_dir
            .join("flooded")
            .exists()),
        "the task was blocked by a FIFO nobody reads"
    );
    let dropped = task.stats().expect("stats").logs;
    assert!(dropped.stdout_dropped_bytes > 0, "{dropped:?}");
    assert_eq!(dropped.stderr_dropped_bytes, 0, "{dropped:?}");

    let mut reader = open_reader(&fifo);
    std::fs::write(spec.alloc_dir.join("go2"), "").expect("go2");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).ends_with("two\n") {
        assert!(Instant::now() < deadline, "two did not arrive");
        read_now(&mut reader, &mut got);
        std::thread::sleep(Duration::from_millis(10));
    }
    let zeros = got.iter().filter(|b| **b == 0).count() as u64;
    assert_eq!(zeros + dropped.stdout_dropped_bytes, 3 * 1024 * 1024);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains(&format!(
            "[execdriver: {} bytes dropped, the log output was full (no reader, or a slow one)]\ntwo\n",
            dropped.stdout_dropped_bytes
        )),
        "{:?}",
        &text[text.len().saturating_sub(200)..]
    );
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 0, "{result:?}");
    // Released with the task: the reader sees the end.
    assert!(eventually(Duration::from_secs(10), || !read_now(
        &mut reader,
        &mut got
    )));
    env.assert_clean(CLEAN);
}
