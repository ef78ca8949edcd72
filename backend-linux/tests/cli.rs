//! End to end through the `execdriver` binary: output and exit codes, isolation as seen by
//! the task, start in one process and wait in another, kill, signals, bad input.
//! Needs root (fails loudly under CI without it).

mod cli_support;
#[path = "../../tests/tests/linux_support/mod.rs"]
mod linux_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::{CLEAN, cli, command, env, text};
use execdriver_core::{HandleId, Signal};
use linux_support::{TestEnv, eventually, unique_id};

/// `run --id <new id> <args...>`, tracked for the leak check.
fn run_task(env: &TestEnv, args: &[&str]) -> (String, Output) {
    let id = unique_id("r");
    env.track_id(&id);
    let mut all = vec!["run", "--id", &id];
    all.extend_from_slice(args);
    let out = cli(env, &all);
    (id, out)
}

/// `start --id <new id> <args...>`: the task id and the handle id printed.
fn start_task(env: &TestEnv, args: &[&str]) -> (String, String) {
    let id = unique_id("s");
    env.track_id(&id);
    let mut all = vec!["start", "--id", &id];
    all.extend_from_slice(args);
    let out = cli(env, &all);
    assert_eq!(out.status.code(), Some(0), "start: {}", text(&out.stderr));
    let handle = text(&out.stdout).trim().to_owned();
    let parsed = HandleId::parse(&handle).expect("start prints a handle id");
    assert_eq!(parsed.task_id, id);
    env.track(parsed);
    (id, handle)
}

/// A task script that waits for [`let_go`], then exits with 7.
const UNTIL_GO_THEN_EXIT_7: &str = "while [ ! -e /alloc/go ]; do sleep 0.05; done; exit 7";

/// Lets a task running [`UNTIL_GO_THEN_EXIT_7`] finish.
fn let_go(env: &TestEnv, id: &str) {
    std::fs::write(env.data.join("allocs").join(id).join("go"), b"").expect("write go");
}

fn no_backtrace(out: &Output) {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

#[test]
fn run_passes_output_and_exit_code() {
    let Some(env) = env("run_passes_output_and_exit_code") else {
        return;
    };
    let (_, out) = run_task(
        &env,
        &["--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
    let (_, out) = run_task(&env, &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Output larger than a pipe buffer and than one read arrives whole and in order.
    let (_, out) = run_task(&env, &["--", "/usr/bin/seq", "1", "100000"]);
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert!(text(&out.stdout) == expected, "seq output differs");
    env.assert_clean(CLEAN);
}

#[test]
fn missing_and_non_executable_commands() {
    let Some(env) = env("missing_and_non_executable_commands") else {
        return;
    };
    let (_, out) = run_task(&env, &["/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).trim().is_empty());
    let (_, out) = run_task(&env, &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).trim().is_empty());
    no_backtrace(&out);
    env.assert_clean(CLEAN);
}

#[test]
fn task_runs_as_nobody_in_its_own_root() {
    let Some(env) = env("task_runs_as_nobody_in_its_own_root") else {
        return;
    };
    let (_, out) = run_task(&env, &["--", "/usr/bin/id", "-u"]);
    assert_eq!(text(&out.stdout), "65534\n", "{}", text(&out.stderr));
    // The data dir (under the host's temp dir) is not in the chroot env: invisible.
    let secret = env.data.join("secret");
    std::fs::write(&secret, "x").expect("write");
    let probe = format!(
        "test -e {} && echo visible || echo hidden",
        secret.display()
    );
    let (_, out) = run_task(&env, &["--", "/bin/sh", "-c", &probe]);
    assert_eq!(text(&out.stdout), "hidden\n", "{}", text(&out.stderr));
    // The chroot env is read-only, even for root inside the task.
    let marker = format!("/etc/execdriver-ro-{}", unique_id("m"));
    let probe = format!("touch {marker} 2>/dev/null && echo writable || echo read-only");
    let (_, out) = run_task(&env, &["--user", "root", "--", "/bin/sh", "-c", &probe]);
    assert_eq!(text(&out.stdout), "read-only\n", "{}", text(&out.stderr));
    assert!(!PathBuf::from(&marker).exists());
    // A replaced chroot env list hides the rest (here /etc).
    let (_, out) = run_task(
        &env,
        &[
            "--chroot-env-only",
            "--chroot-env",
            "/bin",
            "--chroot-env",
            "/lib",
            "--chroot-env",
            "/lib64",
            "--chroot-env",
            "/usr",
            "--",
            "/bin/sh",
            "-c",
            "test -e /etc/passwd && echo visible || echo hidden",
        ],
    );
    assert_eq!(text(&out.stdout), "hidden\n", "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn start_then_wait_from_another_process() {
    let Some(env) = env("start_then_wait_from_another_process") else {
        return;
    };
    // Runs until the test lets it go, however slow the CLI calls before that are.
    let (id, _) = start_task(&env, &["--", "/bin/sh", "-c", UNTIL_GO_THEN_EXIT_7]);
    let (_, handle2) = start_task(&env, &["--", "/bin/sh", "-c", "exit 2"]);
    let status = cli(&env, &["status", "--json", &id]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(report["state"], "running", "{report}");
    let out = cli(&env, &["wait", "--timeout", "100ms", &id]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    let_go(&env, &id);
    // By task id, with a timeout too large to add to any clock: no overflow, no panic.
    let out = cli(&env, &["wait", "--timeout", "18446744073709551615", &id]);
    no_backtrace(&out);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // The task is kept: waiting again, from another process, answers the same.
    assert!(env.data.join("allocs").join(&id).exists());
    let again = cli(&env, &["wait", "--json", &id]);
    assert_eq!(again.status.code(), Some(7), "{}", text(&again.stderr));
    let result: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(result["exit_code"], 7, "{result}");
    // By handle id on stdin, with the result as JSON.
    let mut child = command(&env, &["wait", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(handle2.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(result["exit_code"], 2);
    assert_eq!(result["oom_killed"], false);
    assert!(result["error"].is_null());
    // Removed: the task id no longer resolves (1, as docker gives for an unknown container).
    let out = cli(&env, &["rm", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), id);
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no task"),
        "{}",
        text(&out.stderr)
    );
    env.assert_clean(CLEAN);
}

#[test]
fn kill_signal_stats_logs_and_list() {
    let Some(env) = env("kill_signal_stats_logs_and_list") else {
        return;
    };
    let (id, _) = start_task(
        &env,
        &[
            "--kill-timeout",
            "500ms",
            "--",
            "/bin/sh",
            "-c",
            "echo hello; trap 'echo usr1' USR1; trap '' INT; while :; do sleep 0.05; done",
        ],
    );
    assert!(eventually(Duration::from_secs(5), || {
        text(&cli(&env, &["logs", &id]).stdout).contains("hello")
    }));
    let out = cli(&env, &["signal", &id, "USR1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(eventually(Duration::from_secs(5), || {
        text(&cli(&env, &["logs", &id]).stdout).contains("usr1")
    }));
    let out = cli(&env, &["stats", "--json", "--no-stream", &id]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    assert!(stats["pids"].as_u64().unwrap_or(0) >= 1, "{stats}");
    let out = cli(&env, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list json");
    assert!(
        list.as_array().is_some_and(|l| l
            .iter()
            .any(|t| t["task_id"] == id.as_str() && t["state"] == "running")),
        "{list}"
    );
    // The task ignores SIGINT: kill ends it by force after the 500 ms timeout.
    let started = Instant::now();
    let out = cli(&env, &["kill", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // kill says how the task ended, as wait would; the task and its logs are kept.
    assert!(
        text(&out.stdout).contains(&format!("{id}: killed by SIGKILL")),
        "{}",
        text(&out.stdout)
    );
    let wait = cli(&env, &["wait", &id]);
    assert_eq!(wait.status.code(), Some(137), "{}", text(&wait.stderr));
    let logs = cli(&env, &["logs", &id]);
    assert!(
        text(&logs.stdout).starts_with("hello\n"),
        "{}",
        text(&logs.stdout)
    );
    assert!(env.data.join("allocs").join(&id).exists());
    env.assert_clean(CLEAN);
}

#[test]
fn sigterm_to_run_kills_the_task_gracefully() {
    let Some(env) = env("sigterm_to_run_kills_the_task_gracefully") else {
        return;
    };
    let id = unique_id("r");
    env.track_id(&id);
    let child = command(
        &env,
        &[
            "run",
            "--id",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo bye; exit 9' INT; echo up; while :; do sleep 0.05; done",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_dir(env.data.join("allocs").join(&id).join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("up")))
    }));
    // Our own child, unreaped: its pid cannot have been reused.
    execdriver_linux::process::Pidfd::open(pid)
        .expect("pidfd")
        .signal(Signal::SIGTERM)
        .expect("sigterm");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "up\nbye\n");
    env.assert_clean(CLEAN);
}

#[test]
fn task_outlives_a_killed_run_and_is_collected_by_id() {
    let Some(env) = env("task_outlives_a_killed_run_and_is_collected_by_id") else {
        return;
    };
    let id = unique_id("r");
    env.track_id(&id);
    let mut child = command(
        &env,
        &[
            "run",
            "--id",
            &id,
            "--",
            "/bin/sh",
            "-c",
            UNTIL_GO_THEN_EXIT_7,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    // Running means the supervisor has reported the start; before that, a starter that dies
    // takes its start with it (a_caller_killed_during_start_... covers that side).
    let state = |env: &TestEnv| {
        let out = cli(env, &["status", "--json", &id]);
        match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(report) => report["state"].as_str().unwrap_or_default().to_owned(),
            Err(_) => format!("no report: {}", text(&out.stderr)),
        }
    };
    let mut last = String::new();
    if !eventually(Duration::from_secs(10), || {
        last = state(&env);
        last == "running"
    }) {
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        panic!(
            "the task never ran: {last}; run said: {}",
            text(&out.stderr)
        );
    }
    // The agent dies without a chance to clean up; the supervisor carries on.
    child.kill().expect("kill run");
    let _ = child.wait();
    assert_eq!(state(&env), "running");
    let_go(&env, &id);
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn bad_input_is_one_line_and_status_125() {
    let Some(env) = env("bad_input_is_one_line_and_status_125") else {
        return;
    };
    for (args, needle) in [
        (vec!["run", "--memory", "12X", "--", "/bin/true"], "12X"),
        (vec!["run", "--memory", "1K", "--", "/bin/true"], "1024"),
        (vec!["run", "--kill-timeout", "5x", "--", "/bin/true"], "5x"),
        (vec!["run", "--name", "logs", "--", "/bin/true"], "reserved"),
        (
            vec!["run", "--kill-signal", "SIGNOPE", "--", "/bin/true"],
            "SIGNOPE",
        ),
        (vec!["run", "--pids-max", "many", "--", "/bin/true"], "many"),
        (vec!["run", "--id", "../x", "--", "/bin/true"], "../x"),
        (vec!["run", "--env", "=NONAME", "--", "/bin/true"], "NONAME"),
        (vec!["run", "--", "/bin/echo hi"], "whitespace"),
        (
            vec!["run", "--pids-max", "1", "--", "/bin/true"],
            "pids max 1",
        ),
        (vec!["wait", "{\"format\":1}"], "handle id"),
        (vec!["wait", "--timeout", "soon", "x"], "soon"),
        (vec!["signal", "x", "NOPE"], "NOPE"),
        (
            vec!["run", "--log-rate", "0", "--", "/bin/true"],
            "unlimited",
        ),
        (vec!["run", "--log-rate", "fast", "--", "/bin/true"], "fast"),
    ] {
        let out = cli(&env, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        no_backtrace(&out);
    }
    // A usage error is execdriver refusing its input too: 125, as docker and podman give.
    let out = cli(&env, &["run", "--no-such-option", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    // An unknown task is 1, as `docker inspect` gives for an unknown container.
    for sub in ["wait", "status", "kill", "signal", "stats", "logs"] {
        let mut args = vec![sub, "no-such-task"];
        if sub == "signal" {
            args.push("TERM");
        }
        let out = cli(&env, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no-such-task"), "{args:?}: {err}");
    }
    for sub in [
        "run",
        "start",
        "wait",
        "kill",
        "status",
        "signal",
        "stats",
        "logs",
        "list",
        "fingerprint",
    ] {
        let out = cli(&env, &[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        assert!(text(&out.stdout).contains("Usage:"), "{sub} --help");
    }
    // Nothing was started by any of it.
    assert!(
        std::fs::read_dir(env.data.join("tasks"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
}

/// A task that removes its live log file (as root, from inside) does not lose what it
/// writes afterwards: the supervisor notices and goes on in a new file, which `logs` shows.
#[test]
fn output_after_the_live_log_file_is_removed_is_in_a_new_file_logs_shows() {
    let Some(env) = env("output_after_the_live_log_file_is_removed_is_in_a_new_file_logs_shows")
    else {
        return;
    };
    let (id, _) = start_task(
        &env,
        &[
            "--user",
            "root",
            "--name",
            "web",
            "--",
            "/bin/sh",
            "-c",
            "echo first; until grep -q first /alloc/logs/web.stdout.0; do sleep 0.05; done; \
             rm /alloc/logs/web.stdout.0 || exit 3; echo second; \
             while [ ! -e /alloc/go ]; do sleep 0.05; done; echo third; exit 7",
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            text(&cli(&env, &["logs", &id]).stdout).contains("second")
        }),
        "what the task wrote after removing its log file is lost: {}",
        text(&cli(&env, &["logs", &id]).stdout)
    );
    let_go(&env, &id);
    assert!(eventually(Duration::from_secs(10), || {
        text(&cli(&env, &["logs", &id]).stdout).contains("third")
    }));
    let logs = env.data.join("allocs").join(&id).join("logs");
    assert!(!logs.join("web.stdout.0").exists());
    assert_eq!(
        std::fs::read_to_string(logs.join("web.stdout.1")).expect("the new live file"),
        "second\nthird\n"
    );
    assert_eq!(text(&cli(&env, &["logs", &id]).stdout), "second\nthird\n");
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn seccomp_default_unconfined_or_a_profile_file() {
    let Some(env) = env("seccomp_default_unconfined_or_a_profile_file") else {
        return;
    };
    let status = ["--", "/bin/grep", "^Seccomp:", "/proc/self/status"];
    let (_, out) = run_task(&env, &status);
    assert_eq!(text(&out.stdout), "Seccomp:\t2\n", "{}", text(&out.stderr));
    for user in ["nobody", "root"] {
        let (_, out) = run_task(
            &env,
            &[
                "--user",
                user,
                "--",
                "/bin/sh",
                "-c",
                "/usr/bin/unshare -U -r true || /usr/bin/unshare -m true || exit 9",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(9),
            "as {user}: {}",
            text(&out.stderr)
        );
    }
    let mut unconfined = vec!["--seccomp", "unconfined"];
    unconfined.extend_from_slice(&status);
    let (_, out) = run_task(&env, &unconfined);
    assert_eq!(text(&out.stdout), "Seccomp:\t0\n", "{}", text(&out.stderr));

    // A profile file, through start (the spec the supervisor reads) and wait.
    let profile = env.data.join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 28, "comment": "ENOSPC"}]}"#,
    )
    .expect("write profile");
    let profile = profile.to_string_lossy().into_owned();
    let (id, _) = start_task(
        &env,
        &[
            "--seccomp",
            &profile,
            "--",
            "/bin/sh",
            "-c",
            "mkdir /tmp/d 2>&1; exit 4",
        ],
    );
    let out = cli(&env, &["logs", "--follow", &id]);
    assert!(
        text(&out.stdout).contains("No space left on device"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

    // Refused at run, naming the field, before anything exists.
    let bad = env.data.join("bad.json");
    for (content, needle) in [
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_EPERM"}]}"#,
            "syscalls[0].action",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdri"], "action": "SCMP_ACT_ERRNO"}]}"#,
            "syscalls[0].names[0]",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}"#,
            "listenerPath",
        ),
        (r#"{"defaultAction": "#, "not valid JSON"),
    ] {
        std::fs::write(&bad, content).expect("write profile");
        let bad = bad.to_string_lossy().into_owned();
        let (id, out) = run_task(&env, &["--seccomp", &bad, "--", "/bin/true"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{content}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err} should name {needle}");
        assert!(err.contains("--seccomp"), "{err}");
        assert!(!env.data.join("tasks").join(&id).exists());
        no_backtrace(&out);
    }
    let (_, out) = run_task(
        &env,
        &["--seccomp", "/no/such/profile.json", "--", "/bin/true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("/no/such/profile.json"));
    env.assert_clean(CLEAN);
}

#[test]
fn forged_handle_is_refused_by_wait() {
    let Some(env) = env("forged_handle_is_refused_by_wait") else {
        return;
    };
    let (id, handle) = start_task(&env, &["/bin/sleep", "1000"]);
    let mut forged: serde_json::Value = serde_json::from_str(&handle).expect("json");
    forged["state_dir"] = "/etc".into();
    let out = cli(&env, &["wait", &forged.to_string()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    let mut forged: serde_json::Value = serde_json::from_str(&handle).expect("json");
    forged["task"]["pid"] = 1.into();
    let out = cli(&env, &["kill", &forged.to_string()]);
    assert_eq!(out.status.code(), Some(125));
    // The real task is untouched.
    let status = cli(&env, &["status", "--json", &id]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(report["state"], "running", "{report}");
    let out = cli(&env, &["kill", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn fingerprint_is_healthy_here() {
    let Some(env) = env("fingerprint_is_healthy_here") else {
        return;
    };
    let out = cli(&env, &["fingerprint", "--json"]);
    let fp: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(fp["healthy"], true, "{fp}");
    assert_eq!(fp["attributes"]["driver.exec"], "1");
    assert_eq!(out.status.code(), Some(0));
}

/// A caller killed at any moment of a start leaves nothing that a new process cannot collect
/// by task id: the task (killed), debris of a start abandoned half-way (removed), or its alloc
/// dir alone (removed); afterwards nothing of any of them is left.
#[test]
fn a_caller_killed_during_start_leaves_only_what_its_task_id_collects() {
    let Some(env) = env("a_caller_killed_during_start_leaves_only_what_its_task_id_collects")
    else {
        return;
    };
    let mut ids = Vec::new();
    // The moments the caller dies at, after it was spawned: a fault injected at every stage
    // of a start, from before the claim to after the ready report.
    for delay_ms in [0u64, 1, 2, 3, 5, 8, 12, 18, 25, 35, 50, 80] {
        let id = unique_id("k");
        env.track_id(&id);
        let mut child = command(&env, &["run", "--id", &id, "--", "/bin/sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn run");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        ids.push(id);
    }
    for id in &ids {
        // A start still under way (a supervisor finishing or aborting its start) settles
        // within its ready timeout; then the id is either a task, debris, or nothing.
        let mut last = String::new();
        let settled = eventually(Duration::from_secs(30), || {
            let out = cli(&env, &["rm", "-f", id]);
            last = text(&out.stderr);
            !last.contains("still being started")
        });
        assert!(settled, "{id}: {last}");
        let out = cli(&env, &["status", id]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{id} still known: {}",
            text(&out.stdout)
        );
        assert!(
            !env.data.join("allocs").join(id).exists(),
            "{id}: its alloc dir is left"
        );
        assert!(
            !env.data.join("tasks").join(id).exists(),
            "{id}: its state dir is left"
        );
    }
    let out = cli(&env, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list json");
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    env.assert_clean(CLEAN);
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let Some(env) = env("completions_and_man_pages_come_from_the_cli_definition") else {
        return;
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = cli(&env, &["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(
            script.contains("execdriver") && script.contains("kill-timeout"),
            "{shell}"
        );
    }
    let out = cli(&env, &["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(125));
    let out = cli(&env, &["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(".TH execdriver 1"));
    let pages = env.data.join("man");
    let out = cli(&env, &["man", "--dir", pages.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in ["execdriver.1", "execdriver-run.1", "execdriver-kill.1"] {
        let roff = std::fs::read_to_string(pages.join(page)).expect(page);
        assert!(roff.contains(".TH"), "{page}");
    }
}

#[test]
fn default_masks_hide_the_hosts_shadow_and_can_be_added_to_or_cleared() {
    let Some(env) = env("default_masks_hide_the_hosts_shadow_and_can_be_added_to_or_cleared")
    else {
        return;
    };
    let probe = "echo shadow=$(cat /etc/shadow 2>/dev/null | wc -c); \
                 echo passwd=$(grep -c '^root:' /etc/passwd)";
    for user in ["nobody", "root"] {
        let (_, out) = run_task(&env, &["--user", user, "--", "/bin/sh", "-c", probe]);
        assert_eq!(out.status.code(), Some(0), "{user}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "shadow=0\npasswd=1\n", "{user}");
    }
    let (_, out) = run_task(
        &env,
        &[
            "--mask",
            "/etc/hostname",
            "--",
            "/bin/sh",
            "-c",
            "echo \"[$(cat /etc/hostname)]\"; echo shadow=$(cat /etc/shadow | wc -c)",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "[]\nshadow=0\n",
        "--mask adds to the defaults"
    );
    // Cleared defaults: root reads the host's shadow again (compared by size only).
    let host_shadow = std::fs::metadata("/etc/shadow")
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        host_shadow > 0,
        "this test needs a non-empty /etc/shadow on the host"
    );
    let (_, out) = run_task(
        &env,
        &[
            "--user",
            "root",
            "--no-default-masks",
            "--",
            "/bin/sh",
            "-c",
            "wc -c < /etc/shadow",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), host_shadow.to_string());
    for (mask, needle) in [
        ("etc/shadow", "absolute"),
        ("/etc/../root", "absolute"),
        ("/etc/*/key", "last component"),
        ("/proc/kcore", "/proc"),
    ] {
        let (_, out) = run_task(&env, &["--mask", mask, "--", "/bin/true"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{mask}: {err}");
        assert!(err.contains(mask) && err.contains(needle), "{mask}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{mask}: {err}");
        no_backtrace(&out);
    }
    env.assert_clean(CLEAN);
}

#[test]
fn network_none_has_only_loopback_and_a_bad_network_is_refused() {
    let Some(env) = env("network_none_has_only_loopback_and_a_bad_network_is_refused") else {
        return;
    };
    let names = "sed -n '3,$p' /proc/net/dev | cut -d: -f1 | tr -d ' '";
    let (_, out) = run_task(&env, &["--network", "none", "--", "/bin/sh", "-c", names]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lo\n");
    // The default is the host's network.
    let (_, out) = run_task(&env, &["--", "/bin/sh", "-c", names]);
    let host = std::fs::read_to_string("/proc/self/net/dev").expect("net dev");
    assert_eq!(
        text(&out.stdout).lines().count(),
        host.lines().count() - 2,
        "{}",
        text(&out.stdout)
    );
    for (network, needle) in [
        ("/etc/passwd", "not a namespace file"),
        ("/proc/self/ns/pid", "not a network namespace"),
        ("/no/such/netns", "/no/such/netns"),
        ("bridge", "host"),
        ("netns/x", "absolute"),
    ] {
        let (_, out) = run_task(&env, &["--network", network, "--", "/bin/true"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{network}: {err}");
        assert!(
            err.contains(network) && err.contains(needle),
            "{network}: {err}"
        );
        no_backtrace(&out);
    }
    env.assert_clean(CLEAN);
}

/// `logs` text of `args`, with our stdout and stderr into one file, as a terminal shows them.
fn logs_together(env: &TestEnv, args: &[&str]) -> String {
    let file = tempfile::tempfile().expect("tempfile");
    let mut cmd = command(env, &[&["logs"], args].concat());
    let status = cmd
        .stdout(file.try_clone().expect("dup"))
        .stderr(file.try_clone().expect("dup"))
        .status()
        .expect("run execdriver logs");
    assert_eq!(status.code(), Some(0));
    let mut file = file;
    use std::io::{Read, Seek};
    file.rewind().expect("rewind");
    let mut out = String::new();
    file.read_to_string(&mut out).expect("read");
    out
}

fn gate(env: &TestEnv, id: &str, name: &str) {
    std::fs::write(env.data.join("allocs").join(id).join(name), b"").expect("write gate");
}

/// Both streams in arrival order (each line gated on the test having seen the one before),
/// `--stdout`/`--stderr` alone, `--tail`, `--since` a time noted between two outputs, and
/// `--timestamps` as docker prints them.
#[test]
fn logs_tail_since_timestamps_and_both_streams_in_arrival_order() {
    let Some(env) = env("logs_tail_since_timestamps_and_both_streams_in_arrival_order") else {
        return;
    };
    let wait = |f: &str| format!("until [ -e /alloc/{f} ]; do sleep 0.02; done");
    let script = format!(
        "for i in 1 2 3; do echo out$i; {}; echo err$i >&2; {}; done; {}; echo late1; echo late2; {}",
        wait("o$i"),
        wait("e$i"),
        wait("late"),
        wait("go")
    );
    let (id, _) = start_task(&env, &["--name", "web", "--", "/bin/sh", "-c", &script]);
    let mut expected = String::new();
    for i in 1..=3 {
        for (stream, gate_name) in [("out", "o"), ("err", "e")] {
            let line = format!("{stream}{i}\n");
            expected.push_str(&line);
            assert!(
                eventually(Duration::from_secs(10), || logs_together(&env, &[&id])
                    .ends_with(&line)),
                "{line:?} never came: {:?}",
                logs_together(&env, &[&id])
            );
            gate(&env, &id, &format!("{gate_name}{i}"));
        }
    }
    assert_eq!(logs_together(&env, &[&id]), expected);
    // Each stream on its own descriptor, and alone when asked.
    let out = cli(&env, &["logs", &id]);
    assert_eq!(text(&out.stdout), "out1\nout2\nout3\n");
    assert_eq!(text(&out.stderr), "err1\nerr2\nerr3\n");
    assert_eq!(
        text(&cli(&env, &["logs", "--stderr", &id]).stdout),
        "err1\nerr2\nerr3\n"
    );
    let out = cli(&env, &["logs", "--stdout", &id]);
    assert_eq!(
        (text(&out.stdout).as_str(), text(&out.stderr).as_str()),
        ("out1\nout2\nout3\n", "")
    );

    // Everything before this moment arrived before it.
    let between = std::time::SystemTime::now();
    gate(&env, &id, "late");
    assert!(eventually(Duration::from_secs(10), || {
        logs_together(&env, &[&id]).ends_with("late2\n")
    }));
    let since = humantime::format_rfc3339_nanos(between).to_string();
    assert_eq!(
        logs_together(&env, &["--since", &since, &id]),
        "late1\nlate2\n"
    );
    assert_eq!(
        logs_together(&env, &["--since", "10m", &id]),
        format!("{expected}late1\nlate2\n")
    );

    // Five lines on stdout; the last two, and the last three of both streams together.
    assert_eq!(
        logs_together(&env, &["--stdout", "--tail", "2", &id]),
        "late1\nlate2\n"
    );
    assert_eq!(
        logs_together(&env, &["-n", "3", &id]),
        "err3\nlate1\nlate2\n"
    );
    assert_eq!(logs_together(&env, &["--tail", "0", &id]), "");
    assert_eq!(
        logs_together(&env, &["--tail", "all", &id]),
        format!("{expected}late1\nlate2\n")
    );

    // RFC 3339 with nanoseconds in UTC, in order, and about now.
    let stamped = logs_together(&env, &["-t", &id]);
    let mut last = std::time::UNIX_EPOCH;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 8, "{stamped}");
    for line in lines {
        let (stamp, rest) = line.split_once(' ').expect("a stamp and the line");
        assert_eq!(
            stamp.len(),
            "2026-12-03T10:00:00.123456789Z".len(),
            "{line}"
        );
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{line}"
        );
        let at = humantime::parse_rfc3339(stamp).expect("rfc 3339");
        assert!(at >= last, "out of order: {stamped}");
        let age = std::time::SystemTime::now()
            .duration_since(at)
            .expect("in the past");
        assert!(age < Duration::from_secs(60), "{line}");
        assert!(!rest.is_empty());
        last = at;
    }
    // The log files themselves stay the raw output.
    let logs = env.data.join("allocs").join(&id).join("logs");
    assert_eq!(
        std::fs::read_to_string(logs.join("web.stdout.0")).expect("log file"),
        "out1\nout2\nout3\nlate1\nlate2\n"
    );
    assert!(logs.join(".web.stdout.0.idx").is_file());
    gate(&env, &id, "go");
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

/// The last lines are found across a rotation; an index the task replaced with a FIFO or a
/// symlink is neither followed nor blocking: its lines just have no time.
#[test]
fn logs_tail_across_a_rotation_and_planted_indexes() {
    let Some(env) = env("logs_tail_across_a_rotation_and_planted_indexes") else {
        return;
    };
    // 10 MiB files: the filler ends 5 bytes short, so "abc\nd" ends file 0, "e\n" starts 1.
    let script = "yes line | head -c 10485755; printf 'abc\\nde\\n'; echo to-err >&2; \
         until [ -e /alloc/plant ]; do sleep 0.02; done; \
         cd /alloc/logs && rm .web.stdout.0.idx .web.stderr.0.idx && mkfifo .web.stdout.0.idx \
         && ln -s /etc/hostname .web.stderr.0.idx && touch /alloc/planted; \
         until [ -e /alloc/go ]; do sleep 0.02; done";
    let (id, _) = start_task(
        &env,
        &[
            "--user",
            "root",
            "--name",
            "web",
            "--log-rate",
            "unlimited",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    );
    let alloc = env.data.join("allocs").join(&id);
    assert!(eventually(Duration::from_secs(20), || {
        text(&cli(&env, &["logs", "--stderr", &id]).stdout) == "to-err\n"
    }));
    assert!(alloc.join("logs/web.stdout.1").exists());
    assert_eq!(
        logs_together(&env, &["--stdout", "--tail", "2", &id]),
        "abc\nde\n"
    );
    assert_eq!(
        logs_together(&env, &["--stdout", "--tail", "1", &id]),
        "de\n"
    );
    let stamped = logs_together(&env, &["--tail", "1", "--stdout", "-t", &id]);
    assert!(!stamped.starts_with("0001-"), "{stamped}");
    gate(&env, &id, "plant");
    assert!(eventually(Duration::from_secs(10), || alloc
        .join("planted")
        .exists()));
    // Would hang on the FIFO, or show the host's hostname, if either were opened.
    let out = cli(&env, &["logs", "--stderr", "-t", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert_eq!(
        text(&out.stdout),
        "0001-01-01T00:00:00.000000000Z to-err\n",
        "the planted symlink was followed? host name {hostname:?}"
    );
    let out = cli(&env, &["logs", "--stdout", "--tail", "1", "-t", &id]);
    assert_eq!(text(&out.stdout), "0001-01-01T00:00:00.000000000Z de\n");
    gate(&env, &id, "go");
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

/// `stats --no-stream` shows the limits and percentages; `--json` has the wall-clock time
/// of the reading and the limits.
#[test]
fn stats_table_and_json_with_limits_and_wall_clock_time() {
    let Some(env) = env("stats_table_and_json_with_limits_and_wall_clock_time") else {
        return;
    };
    let (id, _) = start_task(
        &env,
        &[
            "--memory",
            "64M",
            "--pids-max",
            "50",
            "--cpus",
            "0.5",
            "--",
            "/bin/sh",
            "-c",
            UNTIL_GO_THEN_EXIT_7,
        ],
    );
    let out = cli(&env, &["stats", "--no-stream", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    for column in [
        "TASK ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS / LIMIT",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with(&id), "{table}");
    assert!(row.contains("/ 64MiB") && row.contains("/ 50"), "{table}");
    assert!(row.matches('%').count() == 2, "{table}");
    assert!(lines.next().is_none(), "{table}");

    let out = cli(&env, &["stats", "--json", "--no-stream", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one json object");
    let read_at = std::time::UNIX_EPOCH
        + Duration::from_nanos(stats["read_at_unix_nanos"].as_u64().expect("nanos"));
    let now = std::time::SystemTime::now();
    let skew = now.duration_since(read_at).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(1), "{stats}");
    let rfc = humantime::parse_rfc3339(stats["read_at"].as_str().expect("read_at")).expect("rfc");
    assert_eq!(rfc, read_at);
    assert_eq!(stats["limits"]["memory_limit_bytes"], 64 << 20, "{stats}");
    assert_eq!(stats["limits"]["pids_max"], 50, "{stats}");
    assert_eq!(stats["limits"]["cpu_max_millicores"], 500, "{stats}");
    assert!(stats["cpu_percent"].as_f64().is_some(), "{stats}");
    assert!(stats["memory_percent"].as_f64().is_some(), "{stats}");
    assert!(stats["pids"].as_u64().unwrap_or(0) >= 1, "{stats}");

    // Without arguments: every running task, this one among them.
    let out = cli(&env, &["stats", "--no-stream"]);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    let_go(&env, &id);
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

/// `-f` with the other options: the last line so far, then what comes, both streams in
/// order, stamped, until the task exits; `stats` streams until its task exits.
#[test]
fn logs_follow_with_tail_and_timestamps_and_stats_stream_end_with_the_task() {
    let Some(env) = env("logs_follow_with_tail_and_timestamps_and_stats_stream_end_with_the_task")
    else {
        return;
    };
    let script = "echo old; echo last-old; until [ -e /alloc/more ]; do sleep 0.02; done; \
         echo new-out; until [ -e /alloc/err ]; do sleep 0.02; done; echo new-err >&2; \
         until [ -e /alloc/go ]; do sleep 0.02; done";
    let (id, _) = start_task(&env, &["--", "/bin/sh", "-c", script]);
    assert!(eventually(Duration::from_secs(10), || {
        text(&cli(&env, &["logs", &id]).stdout).ends_with("last-old\n")
    }));
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    // One open file for both, as a terminal is: a shared offset.
    let shared = file.reopen().expect("reopen");
    let mut follower = command(&env, &["logs", "-f", "-t", "--tail", "1", &id])
        .stdout(shared.try_clone().expect("dup"))
        .stderr(shared)
        .spawn()
        .expect("logs -f");
    let stats = command(&env, &["stats", "--json", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("stats");
    let seen = |what: &str| {
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(file.path()).is_ok_and(|t| t.contains(what))
        })
    };
    assert!(seen("last-old\n"));
    gate(&env, &id, "more");
    assert!(seen("new-out\n"));
    gate(&env, &id, "err");
    assert!(seen("new-err\n"));
    gate(&env, &id, "go");
    // Both end by themselves once the task has exited.
    assert_eq!(follower.wait().expect("logs -f").code(), Some(0));
    let out = stats.wait_with_output().expect("stats");
    assert_eq!(out.status.code(), Some(0));
    let samples: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one json object a line"))
        .collect();
    assert!(!samples.is_empty() && samples.iter().all(|s| s["task_id"] == id.as_str()));
    let followed = std::fs::read_to_string(file.path()).expect("read");
    let lines: Vec<&str> = followed
        .lines()
        .map(|l| l.split_once(' ').expect("stamp").1)
        .collect();
    assert_eq!(lines, ["last-old", "new-out", "new-err"], "{followed}");
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

/// Runs `execdriver ARGS` and gives it `limit` to finish; a command still running then is
/// killed (by its pid: it is ours) and reported, so a hang fails the test instead of CI.
fn cli_within(env: &TestEnv, args: &[&str], limit: Duration) -> Output {
    let mut child = command(env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn execdriver");
    let finished = eventually(limit, || child.try_wait().ok().flatten().is_some());
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect execdriver");
    assert!(
        finished,
        "execdriver {args:?} still ran after {limit:?}: it blocked"
    );
    out
}

#[test]
fn logs_neither_follows_a_planted_link_nor_blocks_on_a_planted_fifo() {
    let Some(env) = env("logs_neither_follows_a_planted_link_nor_blocks_on_a_planted_fifo") else {
        return;
    };
    // A host file the task cannot see but a reader following links would print.
    let secret_dir = linux_support::DirGuard::new("execdriver-planted-secret-");
    let secret = secret_dir.0.join("secret");
    std::fs::write(&secret, "host secret 4711\n").expect("write secret");
    let script = format!(
        "echo mine; echo mine >&2; \
         until grep -q mine /alloc/logs/web.stdout.0 && grep -q mine /alloc/logs/web.stderr.0; \
         do sleep 0.05; done; \
         rm /alloc/logs/web.stdout.0 /alloc/logs/web.stderr.0 || exit 3; \
         ln -s {} /alloc/logs/web.stdout.0 || exit 4; \
         mkfifo /alloc/logs/web.stderr.0 || exit 5; \
         touch /alloc/planted; \
         while [ ! -e /alloc/go ]; do sleep 0.05; done",
        secret.display()
    );
    let (id, _) = start_task(
        &env,
        &[
            "--user", "root", "--name", "web", "--", "/bin/sh", "-c", &script,
        ],
    );
    let planted = env.data.join("allocs").join(&id).join("planted");
    assert!(
        eventually(Duration::from_secs(10), || planted.exists()),
        "the task did not plant its link and fifo"
    );
    let limit = Duration::from_secs(10);
    for args in [
        vec!["logs", id.as_str()],
        vec!["logs", "--stderr", id.as_str()],
    ] {
        let out = cli_within(&env, &args, limit);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains("4711"),
            "{args:?} printed the host file: {all}"
        );
        no_backtrace(&out);
    }
    let_go(&env, &id);
    let out = cli_within(&env, &["wait", &id], limit);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn a_task_writing_faster_than_its_log_rate_finishes_and_its_drops_are_counted() {
    let Some(env) =
        env("a_task_writing_faster_than_its_log_rate_finishes_and_its_drops_are_counted")
    else {
        return;
    };
    // 64 MiB at 1 MiB/s: held back for a second, then dropped instead of blocking the task.
    let (id, _) = start_task(
        &env,
        &[
            "--log-rate",
            "1M",
            "--user",
            "root",
            "--name",
            "flood",
            "--",
            "/bin/sh",
            "-c",
            "head -c 67108864 /dev/zero; touch /alloc/done; \
             while [ ! -e /alloc/go ]; do sleep 0.05; done",
        ],
    );
    let done = env.data.join("allocs").join(&id).join("done");
    assert!(
        eventually(Duration::from_secs(60), || done.exists()),
        "the flooding task was blocked by its log rate"
    );
    let logs = env.data.join("allocs").join(&id).join("logs");
    let kept = || -> u64 {
        std::fs::read_dir(&logs)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("flood.stdout."))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let dropped = || -> u64 {
        let out = cli(&env, &["stats", "--json", "--no-stream", &id]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|s| s["logs"]["stdout_dropped_bytes"].as_u64())
            .unwrap_or(0)
    };
    // What was kept (markers included) and what was dropped account for all the task
    // wrote, once the pump has taken the rest of the pipe.
    assert!(
        eventually(Duration::from_secs(10), || kept() + dropped() >= 64 << 20),
        "kept {} dropped {}",
        kept(),
        dropped()
    );
    assert!(dropped() > 0, "nothing counted as dropped");
    assert!(kept() < 32 << 20, "kept {} at 1 MiB/s", kept());
    let marked = std::fs::read_dir(&logs)
        .expect("log dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("flood.stdout."))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .any(|bytes| String::from_utf8_lossy(&bytes).contains("dropped"));
    assert!(marked, "no drop marker in the log");
    let_go(&env, &id);
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn cpus_is_a_quota_read_back_from_the_tasks_cgroup() {
    let Some(env) = env("cpus_is_a_quota_read_back_from_the_tasks_cgroup") else {
        return;
    };
    let (id, _) = start_task(
        &env,
        &["--cpus", "0.5", "--", "/bin/sh", "-c", UNTIL_GO_THEN_EXIT_7],
    );
    let out = cli(&env, &["inspect", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    let paths: Vec<PathBuf> = inspected["cgroup_paths"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    // v1: quota and period in the cpu hierarchy; v2: "quota period" in cpu.max.
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let quota = paths.iter().find_map(|dir| {
        match (
            read(dir.join("cpu.cfs_quota_us")),
            read(dir.join("cpu.cfs_period_us")),
        ) {
            (Some(q), Some(p)) => Some(format!("{q} {p}")),
            _ => read(dir.join("cpu.max")),
        }
    });
    assert_eq!(quota.as_deref(), Some("50000 100000"), "{paths:?}");
    let_go(&env, &id);
    assert_eq!(cli(&env, &["wait", &id]).status.code(), Some(7));
    env.assert_clean(CLEAN);
}

/// The cpus this process may run on, as the kernel lists them.
fn own_cpus() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned()
}

#[test]
fn cpuset_cpus_pins_the_task_and_an_impossible_cpu_is_refused_before_it_starts() {
    let Some(env) =
        env("cpuset_cpus_pins_the_task_and_an_impossible_cpu_is_refused_before_it_starts")
    else {
        return;
    };
    let first = own_cpus()
        .split([',', '-'])
        .next()
        .expect("a cpu")
        .to_owned();
    let show = "grep Cpus_allowed_list /proc/self/status";
    let (_, out) = run_task(
        &env,
        &["--cpuset-cpus", &first, "--", "/bin/sh", "-c", show],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("Cpus_allowed_list:\t{first}\n"));
    // cpu 8191 exists on no machine this runs on: refused, naming it, with nothing started.
    let (id, out) = run_task(&env, &["--cpuset-cpus", "8191", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("8191") && err.contains("does not allow"),
        "{err}"
    );
    assert!(!env.data.join("tasks").join(&id).exists());
    let (_, out) = run_task(&env, &["--cpuset-cpus", "3-1", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--cpuset-cpus"),
        "{}",
        text(&out.stderr)
    );
    env.assert_clean(CLEAN);
}

#[test]
fn a_given_device_is_in_the_tasks_dev_and_others_are_absent() {
    let Some(env) = env("a_given_device_is_in_the_tasks_dev_and_others_are_absent") else {
        return;
    };
    let v1 = execdriver_linux::cgroups::probe().version
        == Some(execdriver_linux::cgroups::CgroupVersion::V1);
    let script = "echo hi > /dev/mydev && head -c 4 /dev/mydev | wc -c && ls /dev && \
                  cat /proc/self/cgroup";
    let (_, out) = run_task(
        &env,
        &[
            "--device",
            "/dev/null:/dev/mydev:rw",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    );
    if !v1 {
        assert_eq!(out.status.code(), Some(125), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("devices need cgroup v1"),
            "{}",
            text(&out.stderr)
        );
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0"), "{stdout}");
    let names: Vec<&str> = stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.contains(':'))
        .collect();
    assert!(names.contains(&"mydev"), "{stdout}");
    for absent in ["loop0", "sda", "vda", "mem", "kmsg"] {
        assert!(!names.contains(&absent), "{absent} in {stdout}");
    }
    // The task's devices cgroup is its own (which denies everything not listed).
    let devices_line = stdout
        .lines()
        .find(|l| l.contains(":devices:"))
        .unwrap_or_default();
    assert!(devices_line.contains("execdriver-"), "{stdout}");
    // Permissions are the cgroup's: a read-only device given to root can be read, not written.
    if std::path::Path::new("/dev/loop0").exists() {
        let script = "head -c 1 /dev/l > /dev/null && echo read; (echo x > /dev/l) 2>&1; \
                      ls /dev/loop0 2>&1";
        let (_, out) = run_task(
            &env,
            &[
                "--user",
                "root",
                "--device",
                "/dev/loop0:/dev/l:r",
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("read\n"),
            "{stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("Operation not permitted"), "{stdout}");
        assert!(stdout.contains("No such file"), "{stdout}");
    }
    for (bad, needle) in [
        ("/etc/passwd:/dev/x", "not a character or block device"),
        ("/dev/null:/tmp/x", "under /dev"),
        ("/dev/null:/dev/x:rwx", "subset of rwm"),
    ] {
        let (_, out) = run_task(&env, &["--device", bad, "--", "/bin/true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(needle),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    env.assert_clean(CLEAN);
}

/// A running task with a cpuset and a device has a directory in those hierarchies too (v1),
/// and the kill and the collection remove them with the rest.
#[test]
fn a_killed_task_with_a_cpuset_and_a_device_leaves_nothing() {
    let Some(env) = env("a_killed_task_with_a_cpuset_and_a_device_leaves_nothing") else {
        return;
    };
    let v1 = execdriver_linux::cgroups::probe().version
        == Some(execdriver_linux::cgroups::CgroupVersion::V1);
    let first = own_cpus()
        .split([',', '-'])
        .next()
        .expect("a cpu")
        .to_owned();
    let mut args = vec!["--cpuset-cpus", first.as_str()];
    if v1 {
        args.extend(["--device", "/dev/null:/dev/mydev"]);
    }
    args.extend(["--", "/bin/sh", "-c", UNTIL_GO_THEN_EXIT_7]);
    let (id, _) = start_task(&env, &args);
    let dirs = linux_support::find_cgroup_dirs(&execdriver_linux::cgroups::cgroup_name(&id));
    if v1 {
        for hierarchy in ["cpuset", "devices"] {
            let wanted = format!("/sys/fs/cgroup/{hierarchy}/");
            assert!(
                dirs.iter().any(|d| d.starts_with(&wanted)),
                "no {hierarchy} dir in {dirs:?}"
            );
        }
    }
    let out = cli(&env, &["kill", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli(&env, &["wait", &id]);
    no_backtrace(&out);
    env.assert_clean(CLEAN);
}
