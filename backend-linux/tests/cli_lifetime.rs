//! End to end through the `execdriver` binary: a task lives until it is removed (`rm`,
//! `run --rm`, `prune`), unique names usable wherever an id is, `list` and `inspect`.
//! Needs root (fails loudly under CI without it).

mod cli_support;
#[path = "../../tests/tests/linux_support/mod.rs"]
mod linux_support;

use std::process::{Output, Stdio};
use std::time::Duration;

use cli_support::{CLEAN, cli, command, env, text};
use execdriver_core::HandleId;
use linux_support::{TestEnv, find_cgroup_dirs, unique_id};

/// `start --id <new id> <args...>`: the task id.
fn start(env: &TestEnv, args: &[&str]) -> String {
    let id = unique_id("s");
    env.track_id(&id);
    let mut all = vec!["start", "--id", &id];
    all.extend_from_slice(args);
    let out = cli(env, &all);
    assert_eq!(out.status.code(), Some(0), "start: {}", text(&out.stderr));
    env.track(HandleId::parse(text(&out.stdout).trim()).expect("a handle id"));
    id
}

/// `run --id <new id> <args...>`: the task id and the output.
fn run(env: &TestEnv, args: &[&str]) -> (String, Output) {
    let id = unique_id("r");
    env.track_id(&id);
    let mut all = vec!["run", "--id", &id];
    all.extend_from_slice(args);
    (id.clone(), cli(env, &all))
}

/// What the data dir holds for a task, and whether any cgroup of it is left.
fn remains(env: &TestEnv, id: &str) -> Vec<String> {
    let mut left: Vec<String> = ["tasks", "allocs"]
        .iter()
        .map(|d| env.data.join(d).join(id))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    left.extend(
        find_cgroup_dirs(&format!("execdriver-{id}"))
            .into_iter()
            .map(|p| p.display().to_string()),
    );
    left
}

fn names(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.data.join("names"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn a_task_is_kept_after_run_until_rm_which_leaves_nothing() {
    let Some(env) = env("a_task_is_kept_after_run_until_rm_which_leaves_nothing") else {
        return;
    };
    let (id, out) = run(&env, &["--", "/bin/sh", "-c", "echo kept; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // Logs and exit stay readable after run collected the exit, from another process.
    assert_eq!(text(&cli(&env, &["logs", &id]).stdout), "kept\n");
    assert_eq!(cli(&env, &["wait", &id]).status.code(), Some(4));
    assert_eq!(cli(&env, &["wait", &id]).status.code(), Some(4));
    // The supervisor left once the exit was recorded: the record answers, not it.
    let doc: serde_json::Value =
        serde_json::from_slice(&cli(&env, &["inspect", &id]).stdout).expect("inspect json");
    let pid = doc["supervisor_pid"].as_i64().expect("a supervisor pid");
    assert!(
        linux_support::eventually(Duration::from_secs(5), || {
            !std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("supervise"))
        }),
        "supervisor {pid} stays after its exit was collected"
    );
    assert!(env.data.join("tasks").join(&id).join("exit.json").exists());
    let out = cli(&env, &["rm", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(remains(&env, &id), Vec::<String>::new());
    // Gone: every command says so with status 1.
    for args in [vec!["rm", &id], vec!["logs", &id], vec!["inspect", &id]] {
        let out = cli(&env, &args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    env.assert_clean(CLEAN);
}

#[test]
fn rm_of_a_running_task_needs_force_and_run_rm_removes_after_the_exit() {
    let Some(env) = env("rm_of_a_running_task_needs_force_and_run_rm_removes_after_the_exit")
    else {
        return;
    };
    let id = start(
        &env,
        &["--kill-timeout", "500ms", "--", "/bin/sleep", "100"],
    );
    let out = cli(&env, &["rm", &id]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("is running"),
        "{}",
        text(&out.stderr)
    );
    let status = cli(&env, &["status", "--json", &id]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(report["state"], "running", "{report}");
    let out = cli(&env, &["rm", "-f", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(remains(&env, &id), Vec::<String>::new());

    let (id, out) = run(&env, &["--rm", "--", "/bin/sh", "-c", "echo once; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "once\n");
    assert_eq!(remains(&env, &id), Vec::<String>::new());
    env.assert_clean(CLEAN);
}

#[test]
fn the_cli_starts_the_small_supervisor_entry_installed_beside_it() {
    let Some(env) = env("the_cli_starts_the_small_supervisor_entry_installed_beside_it") else {
        return;
    };
    let id = start(&env, &["--", "/bin/sleep", "100"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&cli(&env, &["inspect", &id]).stdout).expect("inspect json");
    let pid = doc["supervisor_pid"].as_i64().expect("a supervisor pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the supervisor's exe");
    assert_eq!(
        exe,
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_execdriver-supervisor"))
    );
    // What it does is the same: the task answers and goes as with any supervisor.
    let status = cli(&env, &["status", "--json", &id]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(report["state"], "running", "{report}");
    let out = cli(&env, &["rm", "-f", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(remains(&env, &id), Vec::<String>::new());
    env.assert_clean(CLEAN);
}

#[test]
fn a_name_is_unique_until_removed_and_works_wherever_an_id_does() {
    let Some(env) = env("a_name_is_unique_until_removed_and_works_wherever_an_id_does") else {
        return;
    };
    let (first, out) = run(
        &env,
        &["--name", "web", "--", "/bin/sh", "-c", "echo one; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let (second, out) = run(&env, &["--name", "web", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(err.contains("\"web\"") && err.contains(&first), "{err}");
    assert_eq!(
        remains(&env, &second),
        Vec::<String>::new(),
        "the refused start"
    );
    // Unnamed tasks claim nothing: the same command twice is fine.
    for _ in 0..2 {
        assert_eq!(run(&env, &["/bin/true"]).1.status.code(), Some(0));
    }
    // The name wherever an id goes.
    let status = cli(&env, &["status", "--json", "web"]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(report["task_id"], first.as_str(), "{report}");
    assert_eq!(report["state"], "exited", "{report}");
    assert_eq!(cli(&env, &["wait", "web"]).status.code(), Some(3));
    assert_eq!(text(&cli(&env, &["logs", "web"]).stdout), "one\n");
    let inspect = cli(&env, &["inspect", "web"]);
    assert_eq!(inspect.status.code(), Some(0), "{}", text(&inspect.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(doc["task_id"], first.as_str());
    assert_eq!(doc["name"], "web");
    assert_eq!(doc["state"], "exited");
    assert_eq!(doc["exit"]["exit_code"], 3);
    assert_eq!(doc["limits"]["pids_max"], 4096);
    assert_eq!(doc["spec"]["config"]["command"], "/bin/sh");
    assert!(
        doc["log_paths"][0]
            .as_str()
            .is_some_and(|p| p.ends_with("logs/web.stdout.0")),
        "{doc}"
    );
    assert!(HandleId::parse(doc["handle"].as_str().unwrap_or_default()).is_ok());
    let out = cli(&env, &["rm", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(names(&env), Vec::<String>::new());
    // Free again.
    let (third, out) = run(&env, &["--name", "web", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli(&env, &["rm", "web"]);
    assert_eq!(text(&out.stdout).trim(), third);
    let out = cli(&env, &["inspect", "nosuchtask"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn of_concurrent_starts_with_one_name_exactly_one_wins() {
    let Some(env) = env("of_concurrent_starts_with_one_name_exactly_one_wins") else {
        return;
    };
    let ids: Vec<String> = (0..6).map(|_| unique_id("c")).collect();
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            env.track_id(id);
            command(
                &env,
                &[
                    "start",
                    "--id",
                    id,
                    "--name",
                    "race",
                    "--",
                    "/bin/sleep",
                    "30",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn start")
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let winners: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        outs.iter().map(|o| text(&o.stderr)).collect::<Vec<_>>()
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            text(&o.stderr).contains("is held by task"),
            "{}",
            text(&o.stderr)
        );
    }
    let out = cli(&env, &["rm", "-f", "race"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for id in &ids {
        assert_eq!(remains(&env, id), Vec::<String>::new());
    }
    env.assert_clean(CLEAN);
}

#[test]
fn list_shows_a_table_and_json_and_prune_removes_exited_tasks() {
    let Some(env) = env("list_shows_a_table_and_json_and_prune_removes_exited_tasks") else {
        return;
    };
    let running = start(
        &env,
        &[
            "--name",
            "svc",
            "--kill-timeout",
            "500ms",
            "--",
            "/bin/sleep",
            "100",
        ],
    );
    let (exited, _) = run(&env, &["--", "/bin/sh", "-c", "exit 2"]);
    let out = cli(&env, &["ps"]);
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    let columns: Vec<&str> = header
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        ["NAME", "TASK ID", "STATE", "COMMAND", "CREATED"],
        "{table}"
    );
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row(&running).starts_with("svc "), "{table}");
    assert!(row(&running).contains("running"), "{table}");
    assert!(row(&running).contains("/bin/sleep 100"), "{table}");
    assert!(row(&running).contains("ago"), "{table}");
    assert!(row(&exited).contains("exited 2"), "{table}");
    let out = cli(&env, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let of = |id: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|t| t["task_id"] == id))
            .cloned()
            .unwrap_or_default()
    };
    let r = of(&running);
    assert_eq!(r["name"], "svc", "{list}");
    assert_eq!(r["state"], "running");
    assert_eq!(r["command"], serde_json::json!(["/bin/sleep", "100"]));
    assert!(
        r["created_unix_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1_600_000_000_000),
        "{r}"
    );
    assert!(
        r["created"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{r}"
    );
    assert!(r["supervisor_pid"].as_i64().is_some(), "{r}");
    let e = of(&exited);
    assert_eq!(e["state"], "exited", "{list}");
    assert_eq!(e["exit"]["exit_code"], 2);
    assert!(e["name"].is_null());
    // Too young for --until: kept.
    let out = cli(&env, &["prune", "--until", "1h"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(env.data.join("tasks").join(&exited).exists());
    // Without: the exited one goes, the running one stays.
    let out = cli(&env, &["prune"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), exited);
    assert_eq!(remains(&env, &exited), Vec::<String>::new());
    assert!(env.data.join("tasks").join(&running).exists());
    let out = cli(&env, &["rm", "-f", "svc"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn a_stopped_supervisor_does_not_stall_the_list() {
    let Some(env) = env("a_stopped_supervisor_does_not_stall_the_list") else {
        return;
    };
    let stuck = start(
        &env,
        &["--kill-timeout", "500ms", "--", "/bin/sleep", "100"],
    );
    let fine = start(
        &env,
        &["--kill-timeout", "500ms", "--", "/bin/sleep", "100"],
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&cli(&env, &["inspect", &stuck]).stdout).expect("inspect json");
    let pid = i32::try_from(doc["supervisor_pid"].as_i64().expect("pid")).expect("pid");
    // Our test's own supervisor, pinned by a pidfd: SIGSTOP makes it answer nothing.
    let pidfd = execdriver_linux::process::Pidfd::open(pid).expect("pidfd");
    pidfd
        .signal(execdriver_core::Signal::SIGSTOP)
        .expect("stop");
    let begun = std::time::Instant::now();
    let out = cli(&env, &["list", "--json"]);
    let took = begun.elapsed();
    pidfd
        .signal(execdriver_core::Signal::SIGCONT)
        .expect("cont");
    assert!(took < Duration::from_secs(6), "list took {took:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let state = |id: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|t| t["task_id"] == id))
            .map(|t| t["state"].clone())
            .unwrap_or_default()
    };
    assert_eq!(state(&stuck), "unresponsive", "{list}");
    assert_eq!(state(&fine), "running", "{list}");
    for id in [&stuck, &fine] {
        let out = cli(&env, &["rm", "-f", id]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    env.assert_clean(CLEAN);
}

#[test]
fn a_lost_task_is_listed_as_lost_until_rm_removes_it() {
    let Some(env) = env("a_lost_task_is_listed_as_lost_until_rm_removes_it") else {
        return;
    };
    let id = start(&env, &["--", "/bin/sleep", "100"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&cli(&env, &["inspect", &id]).stdout).expect("inspect json");
    let pid = i32::try_from(doc["supervisor_pid"].as_i64().expect("pid")).expect("pid");
    let pidfd = execdriver_linux::process::Pidfd::open(pid).expect("pidfd");
    pidfd
        .signal(execdriver_core::Signal::SIGKILL)
        .expect("kill");
    // Opening it cleans up its processes and cgroup, and reports the loss; it is kept.
    let out = cli(&env, &["wait", &id]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no exit record"),
        "{}",
        text(&out.stderr)
    );
    assert!(find_cgroup_dirs(&format!("execdriver-{id}")).is_empty());
    let out = cli(&env, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        list.as_array().is_some_and(|l| l
            .iter()
            .any(|t| t["task_id"] == id.as_str() && t["state"] == "lost")),
        "{list}"
    );
    let out = cli(&env, &["rm", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(remains(&env, &id), Vec::<String>::new());
    env.assert_clean(CLEAN);
}
