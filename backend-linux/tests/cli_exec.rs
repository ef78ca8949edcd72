//! `execdriver exec` end to end: the command sees the task's root, user, environment,
//! cgroup, PID namespace, no_new_privs and seccomp; its status is ours; a terminal when
//! asked; refused for an exited task; killed with its task. Needs root (fails loudly under
//! CI without it).

mod cli_support;
#[path = "../../tests/tests/linux_support/mod.rs"]
mod linux_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cli_support::{CLEAN, cli, command, env, text};
use execdriver_core::HandleId;
use linux_support::{TestEnv, eventually, unique_id};

/// `start --id <new id> <args...>`: the task id and its handle.
fn start_task(env: &TestEnv, args: &[&str]) -> (String, HandleId) {
    let id = unique_id("x");
    env.track_id(&id);
    let mut all = vec!["start", "--id", &id];
    all.extend_from_slice(args);
    let out = cli(env, &all);
    assert_eq!(out.status.code(), Some(0), "start: {}", text(&out.stderr));
    let handle = HandleId::parse(text(&out.stdout).trim()).expect("a handle id");
    env.track(handle.clone());
    (id, handle)
}

fn exec(env: &TestEnv, id: &str, cmd: &[&str]) -> Output {
    let mut all = vec!["exec", id, "--"];
    all.extend_from_slice(cmd);
    cli(env, &all)
}

fn status_line<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
}

#[test]
fn exec_sees_the_task_root_user_env_cgroup_and_confinement() {
    let Some(env) = env("exec_sees_the_task_root_user_env_cgroup_and_confinement") else {
        return;
    };
    let (id, handle) = start_task(
        &env,
        &[
            "--env",
            "TASK_VAR=from-task",
            "--",
            "/bin/sh",
            "-c",
            "echo private > /tmp/mark; exec sleep 600",
        ],
    );
    // /tmp is the task's private tmpfs: seeing the mark proves the mount namespace.
    assert!(eventually(Duration::from_secs(5), || {
        text(&exec(&env, &id, &["cat", "/tmp/mark"]).stdout) == "private\n"
    }));
    let out = exec(
        &env,
        &id,
        &[
            "/bin/sh",
            "-c",
            "id -u; id -g; echo $TASK_VAR; echo $EXECDRIVER_TASK_ID; echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "65534", "{stdout}");
    assert_eq!(lines[2], "from-task", "{stdout}");
    assert_eq!(lines[3], id, "{stdout}");
    // In the task's PID namespace: a small pid, and pid 1 is the task's init.
    let pid: i32 = lines[4].parse().expect("pid");
    assert!(pid > 1 && pid < 100, "{stdout}");
    let init_cmdline =
        std::fs::read(format!("/proc/{}/cmdline", handle.task.pid)).expect("init cmdline");
    assert_eq!(
        lines[5].trim(),
        text(&init_cmdline).replace('\0', " ").trim(),
        "{stdout}"
    );

    let out = exec(&env, &id, &["cat", "/proc/self/status"]);
    let status = text(&out.stdout);
    assert_eq!(status_line(&status, "NoNewPrivs:"), Some("1"), "{status}");
    assert_eq!(status_line(&status, "Seccomp:"), Some("2"), "{status}");
    assert_eq!(
        status_line(&status, "CapEff:"),
        Some("0000000000000000"),
        "{status}"
    );

    // The exec'd command is where the task is, in every hierarchy.
    let out = exec(&env, &id, &["cat", "/proc/self/cgroup"]);
    let exec_cgroups = text(&out.stdout);
    let task_cgroups =
        std::fs::read_to_string(format!("/proc/{}/cgroup", handle.task.pid)).expect("cgroup");
    assert_eq!(exec_cgroups, task_cgroups);
    assert!(
        task_cgroups.contains(&format!("execdriver-{id}")),
        "{task_cgroups}"
    );

    // -e and -w.
    let out = cli(
        &env,
        &[
            "exec",
            "-e",
            "TASK_VAR=mine",
            "-e",
            "NEW=1",
            "-w",
            "/tmp",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "echo $TASK_VAR $NEW; pwd",
        ],
    );
    assert_eq!(text(&out.stdout), "mine 1\n/tmp\n", "{}", text(&out.stderr));

    // -i: our stdin reaches the command.
    let mut child = command(&env, &["exec", "-i", &id, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"abc\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(text(&out.stdout), "abc\n");

    assert_eq!(cli(&env, &["kill", &id]).status.code(), Some(0));
    env.assert_clean(CLEAN);
}

#[test]
fn exec_exit_codes_follow_docker_exec() {
    let Some(env) = env("exec_exit_codes_follow_docker_exec") else {
        return;
    };
    let (id, _) = start_task(&env, &["--", "/bin/sleep", "600"]);
    assert_eq!(
        exec(&env, &id, &["/bin/sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(exec(&env, &id, &["true"]).status.code(), Some(0));
    let out = exec(&env, &id, &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("cannot run \"no-such-command\": command not found"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(&env, &id, &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    // Killed by a signal: 128 + N.
    assert_eq!(
        exec(&env, &id, &["/bin/sh", "-c", "kill -TERM $$"])
            .status
            .code(),
        Some(143)
    );
    let out = exec(&env, &id, &["/bin/sh", "-c", "cd /nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&env, &["exec", "-w", "/nonexistent", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("working directory"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&env, &["exec", "no-such-task", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no-such-task"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cli(&env, &["kill", &id]).status.code(), Some(0));
    env.assert_clean(CLEAN);
}

#[test]
fn exec_into_an_exited_task_is_a_clear_error() {
    let Some(env) = env("exec_into_an_exited_task_is_a_clear_error") else {
        return;
    };
    let (id, _) = start_task(&env, &["--", "/bin/sh", "-c", "exit 3"]);
    assert!(eventually(Duration::from_secs(5), || {
        text(&cli(&env, &["status", &id]).stdout).contains("exited")
    }));
    let out = exec(&env, &id, &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&id) && stderr.contains("has exited"),
        "{stderr}"
    );
    assert_eq!(cli(&env, &["wait", &id]).status.code(), Some(3));
    env.assert_clean(CLEAN);
}

#[test]
fn exec_with_a_tty_gets_a_terminal_of_the_task() {
    let Some(env) = env("exec_with_a_tty_gets_a_terminal_of_the_task") else {
        return;
    };
    let (id, _) = start_task(&env, &["--", "/bin/sleep", "600"]);
    // Our own stdin is not a terminal: the command's is all the same.
    let out = cli(&env, &["exec", "-t", &id, "--", "tty"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout);
    assert!(name.trim().starts_with("/dev/pts/"), "{name:?}");
    // Without -t there is none.
    let out = exec(&env, &id, &["tty"]);
    assert_eq!(out.status.code(), Some(1));
    // A controlling terminal, in raw mode on our side: run under a terminal of its own
    // (script(1)) with -i, our window size set to 33x77 first.
    let line = format!(
        "stty rows 33 cols 77; {} --data-dir {} --slice {} exec -i -t {id} -- sh -c 'stty size; tty; test -e /dev/tty && echo ctty; exit 5'",
        env.binary.display(),
        env.data.display(),
        env.slice
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) is installed");
    let shown = text(&out.stdout);
    println!("under script: {shown:?}");
    assert!(shown.contains("33 77"), "{shown:?}");
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    assert!(shown.contains("ctty"), "{shown:?}");
    assert_eq!(out.status.code(), Some(5), "{shown:?}");
    assert_eq!(cli(&env, &["kill", &id]).status.code(), Some(0));
    env.assert_clean(CLEAN);
}

#[test]
fn a_killed_task_ends_its_exec_processes() {
    let Some(env) = env("a_killed_task_ends_its_exec_processes") else {
        return;
    };
    let (id, _) = start_task(&env, &["--kill-timeout", "5s", "--", "/bin/sleep", "600"]);
    let child = command(&env, &["exec", &id, "--", "/bin/sleep", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    // The exec'd sleep is counted in the task's cgroup.
    assert!(eventually(Duration::from_secs(5), || {
        let out = cli(&env, &["stats", "--json", "--no-stream", &id]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|s| s["pids"].as_u64())
            .is_some_and(|p| p >= 3)
    }));
    assert_eq!(cli(&env, &["kill", &id]).status.code(), Some(0));
    let out = child.wait_with_output().expect("exec ends");
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}
