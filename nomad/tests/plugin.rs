//! The plugin binary driven over its real socket, started as Nomad starts it.

mod support;

use std::time::{Duration, Instant};

use execdriver_nomad::proto::base;
use execdriver_nomad::proto::drivers as d;
use execdriver_nomad::proto::hclspec::spec::Block;
use execdriver_nomad::proto::health;
use execdriver_nomad::proto::structs::attribute;
use execdriver_nomad::status::RECOVERABLE_ERROR_TYPE_URL;
use prost::Message;
use rmpv::Value as R;
use support::{
    AllocDir, PluginProcess, TaskGuard, msgpack, plugin_config, set_config_request, strings,
    task_config, wait_for_file, wait_for_line,
};
use tonic::Code;

fn attr_names(spec: &execdriver_nomad::proto::hclspec::Spec) -> Vec<String> {
    let Some(Block::Object(object)) = &spec.block else {
        panic!("the schema is not an object: {spec:?}");
    };
    let mut names: Vec<String> = object.attributes.keys().cloned().collect();
    names.sort();
    names
}

#[test]
fn started_by_hand_it_says_so_and_exits_1() {
    let output = std::process::Command::new(support::binary())
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "stdout: {:?}", output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not meant to be run directly"), "{stderr}");
}

#[test]
fn a_client_without_protocol_2_is_refused() {
    let output = std::process::Command::new(support::binary())
        .env(
            execdriver_nomad::handshake::MAGIC_COOKIE_KEY,
            execdriver_nomad::handshake::MAGIC_COOKIE_VALUE,
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "1,3")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("app protocol"));
}

#[tokio::test]
async fn base_plugin_answers_as_nomad_expects() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let health = c
        .health
        .check(health::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        health::health_check_response::ServingStatus::Serving as i32
    );

    let info = c
        .base
        .plugin_info(base::PluginInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.name, "execdriver");
    assert_eq!(info.r#type, base::PluginType::Driver as i32);
    assert_eq!(info.plugin_api_versions, vec!["v0.1.0".to_owned()]);
    assert_eq!(info.plugin_version, env!("CARGO_PKG_VERSION"));

    let schema = c
        .base
        .config_schema(base::ConfigSchemaRequest {})
        .await
        .expect("schema")
        .into_inner()
        .spec
        .expect("spec");
    assert_eq!(
        attr_names(&schema),
        [
            "allowed_users",
            "cgroup_parent",
            "chroot_env",
            "data_dir",
            "default_user",
            "fingerprint_period",
            "max_kill_timeout",
            "slice_name"
        ]
    );

    let task_schema = c
        .driver
        .task_config_schema(d::TaskConfigSchemaRequest {})
        .await
        .expect("task schema")
        .into_inner()
        .spec
        .expect("spec");
    assert_eq!(attr_names(&task_schema), ["args", "command", "seccomp"]);

    let caps = c
        .driver
        .capabilities(d::CapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner()
        .capabilities
        .expect("capabilities");
    assert!(caps.send_signals && caps.exec);
    assert_eq!(
        caps.fs_isolation,
        d::driver_capabilities::FsIsolation::Image as i32
    );
    assert_eq!(caps.network_isolation_modes, vec![0, 1]);
}

#[tokio::test]
async fn set_config_takes_good_configs_and_names_the_bad_key() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let data = tempfile::tempdir().expect("data dir");
    c.base
        .set_config(set_config_request(plugin_config(data.path())))
        .await
        .expect("good config");
    // Repeatable: Nomad sends it for validation and for real.
    c.base
        .set_config(set_config_request(plugin_config(data.path())))
        .await
        .expect("second set config");

    let cases = [
        (
            msgpack(vec![("data_dri", R::from("/x"))]),
            "`data_dri` is not a known key",
        ),
        (
            msgpack(vec![("chroot_env", R::from("/usr"))]),
            "`chroot_env` must be a list of strings, found a string",
        ),
        (
            msgpack(vec![("max_kill_timeout", R::from(30))]),
            "`max_kill_timeout` must be a string, found a number",
        ),
    ];
    for (config, needle) in cases {
        let err = c
            .base
            .set_config(set_config_request(config))
            .await
            .expect_err(needle);
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let mut wrong_version = set_config_request(plugin_config(data.path()));
    wrong_version.plugin_api_version = "v9.9.9".into();
    let err = c.base.set_config(wrong_version).await.expect_err("version");
    assert!(err.message().contains("v9.9.9"), "{}", err.message());
}

#[tokio::test]
async fn fingerprint_sends_its_first_message_at_once() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let data = tempfile::tempdir().expect("data dir");
    c.base
        .set_config(set_config_request(plugin_config(data.path())))
        .await
        .expect("config");
    let mut stream = c
        .driver
        .fingerprint(d::FingerprintRequest {})
        .await
        .expect("fingerprint")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a fingerprint within 10 s")
        .expect("stream")
        .expect("a message");
    assert_ne!(
        first.health,
        d::fingerprint_response::HealthState::Undetected as i32
    );
    assert!(!first.health_description.is_empty());
    let version = &first.attributes["driver.execdriver.version"];
    assert_eq!(
        version.value,
        Some(attribute::Value::StringVal(
            env!("CARGO_PKG_VERSION").into()
        ))
    );
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            first.health,
            d::fingerprint_response::HealthState::Healthy as i32,
            "{}",
            first.health_description
        );
        assert_eq!(
            first.attributes["driver.execdriver"].value,
            Some(attribute::Value::BoolVal(true))
        );
    }
}

#[tokio::test]
async fn driver_calls_before_set_config_are_refused_as_retryable() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let err = c
        .driver
        .fingerprint(d::FingerprintRequest {})
        .await
        .expect_err("not configured");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let details = execdriver_nomad::proto::rpc::Status::decode(err.details()).expect("details");
    assert_eq!(details.details[0].type_url, RECOVERABLE_ERROR_TYPE_URL);
}

#[tokio::test]
async fn bad_task_configs_are_refused_by_key_and_nothing_starts() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let data = tempfile::tempdir().expect("data dir");
    c.base
        .set_config(set_config_request(plugin_config(data.path())))
        .await
        .expect("config");
    let alloc = AllocDir::new("web");
    let cases = [
        (
            msgpack(vec![("args", strings(&["x"])), ("command", R::Nil)]),
            "`command` is required",
        ),
        (
            msgpack(vec![("command", R::from("/bin/true")), ("comand", R::Nil)]),
            "`comand` is not a known key",
        ),
        (
            msgpack(vec![
                ("args", R::from(5)),
                ("command", R::from("/bin/true")),
            ]),
            "`args` must be a list of strings, found a number",
        ),
        (
            msgpack(vec![("args", R::Nil), ("command", R::Boolean(true))]),
            "`command` must be a string, found a bool",
        ),
        (
            msgpack(vec![("args", R::Nil), ("command", R::from("sleep 5"))]),
            "contains whitespace",
        ),
    ];
    for (config, needle) in cases {
        let mut task = task_config(&alloc, "web", "1a2b3c4d", "/bin/true", &[]);
        task.msgpack_driver_config = config;
        let err = c
            .driver
            .start_task(d::StartTaskRequest { task: Some(task) })
            .await
            .expect_err(needle);
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(needle), "{}", err.message());
    }
    // Nothing was started: no task state, and the plugin knows no task.
    let tasks_dir = data.path().join("tasks");
    let states = std::fs::read_dir(&tasks_dir).map_or(0, Iterator::count);
    assert_eq!(
        states,
        0,
        "task state was created in {}",
        tasks_dir.display()
    );
    let err = c
        .driver
        .inspect_task(d::InspectTaskRequest {
            task_id: "0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11/web/1a2b3c4d".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn unsupported_task_features_are_refused_by_name() {
    let plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    let data = tempfile::tempdir().expect("data dir");
    c.base
        .set_config(set_config_request(plugin_config(data.path())))
        .await
        .expect("config");
    let alloc = AllocDir::new("web");
    let mut task = task_config(&alloc, "web", "1a2b3c4d", "/bin/true", &[]);
    // A network of the task's own (bridge/CNI in the task) is not offered.
    task.network_isolation_spec = Some(d::NetworkIsolationSpec {
        mode: d::network_isolation_spec::NetworkIsolationMode::Task as i32,
        ..Default::default()
    });
    let err = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .expect_err("a task network");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("not supported"), "{}", err.message());
}

#[tokio::test]
async fn sigint_is_ignored_and_shutdown_exits_promptly() {
    let mut plugin = PluginProcess::start();
    let mut c = plugin.clients().await;
    plugin.signal(nix::sys::signal::Signal::SIGINT);
    // Still serving after the signal.
    c.health
        .check(health::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .expect("health after SIGINT");
    // Open streams must not hold the exit up.
    let mut events = c
        .driver
        .task_events(d::TaskEventsRequest {})
        .await
        .expect("events")
        .into_inner();
    let _stdio = execdriver_nomad::proto::go_plugin::grpc_stdio_client::GrpcStdioClient::new(
        plugin.channel().await,
    )
    .stream_stdio(())
    .await
    .expect("stdio stream");
    let socket = plugin.socket.clone();
    let begun = Instant::now();
    c.controller
        .shutdown(execdriver_nomad::proto::go_plugin::Empty {})
        .await
        .expect("shutdown");
    let status = plugin
        .wait_exit(Duration::from_secs(2))
        .expect("the plugin exits within go-plugin's 2 s");
    assert!(status.success(), "{status:?}");
    assert!(begun.elapsed() < Duration::from_secs(2));
    // The events stream was open and quiet until then, and ends with the plugin.
    assert!(!matches!(events.message().await, Ok(Some(_))));
    assert!(!socket.exists(), "the socket {} is left", socket.display());
    assert!(
        socket.parent().is_none_or(|dir| !dir.exists()),
        "the socket dir is left"
    );
}

#[tokio::test]
async fn broken_stdout_and_stderr_do_not_kill_the_plugin() {
    let mut plugin = PluginProcess::start_with_broken_pipes();
    let mut c = plugin.clients().await;
    let data = tempfile::tempdir().expect("data dir");
    // Each of these logs a line to the closed stderr.
    for _ in 0..3 {
        c.base
            .set_config(set_config_request(plugin_config(data.path())))
            .await
            .expect("config with a broken stderr");
        let _ = c
            .base
            .set_config(set_config_request(msgpack(vec![("x", R::Nil)])))
            .await;
    }
    c.health
        .check(health::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .expect("still serving");
    c.controller
        .shutdown(execdriver_nomad::proto::go_plugin::Empty {})
        .await
        .expect("shutdown");
    let status = plugin.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut plugin = PluginProcess::start();
    let socket = plugin.socket.clone();
    plugin.signal(nix::sys::signal::Signal::SIGTERM);
    let status = plugin
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
}

#[tokio::test]
async fn stderr_lines_are_hclog_json() {
    let mut plugin = PluginProcess::start();
    plugin.signal(nix::sys::signal::Signal::SIGTERM);
    plugin.wait_exit(Duration::from_secs(5)).expect("exit");
    let stderr = plugin.stderr();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect(line);
        for key in ["@level", "@message", "@timestamp", "@module"] {
            assert!(value.get(key).is_some(), "{line} lacks {key}");
        }
    }
}

// ---- as root: real tasks ----

fn root(test: &str) -> bool {
    execdriver_linux::testing::require_root(test, "starts real tasks through the plugin")
}

async fn configured(plugin: &PluginProcess, data: &std::path::Path) -> support::Clients {
    let mut c = plugin.clients().await;
    c.base
        .set_config(set_config_request(plugin_config(data)))
        .await
        .expect("config");
    c
}

async fn wait_task(c: &mut support::Clients, task_id: &str) -> d::WaitTaskResponse {
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
}

#[tokio::test]
async fn a_task_runs_is_signalled_stopped_waited_and_destroyed() {
    if !root("a_task_runs_is_signalled_stopped_waited_and_destroyed") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, data.path()).await;
    let alloc = AllocDir::new("web");
    let script = "trap 'echo usr1 > /alloc/usr1' USR1; echo \"$FOO $(id -u)\" > /alloc/hi; \
                  while true; do sleep 0.05; done";
    let task = task_config(&alloc, "web", "1a2b3c4d", "/bin/sh", &["-c", script]);
    let task_id = task.id.clone();
    let begun = Instant::now();
    let started = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .expect("start")
        .into_inner();
    let latency = begun.elapsed();
    eprintln!("StartTask latency: {latency:?}");
    let handle = started.handle.expect("handle");
    guard.arm(&handle.driver_state);
    assert_eq!(handle.version, 1);
    assert_eq!(handle.state, d::TaskState::Running as i32);
    assert!(!handle.driver_state.is_empty());

    // The env and the shared alloc dir reach the task, which runs as nobody.
    let hi = wait_for_line(&alloc.shared().join("hi"), Duration::from_secs(10));
    assert_eq!(hi.trim(), "bar 65534");

    let inspect = c
        .driver
        .inspect_task(d::InspectTaskRequest {
            task_id: task_id.clone(),
        })
        .await
        .expect("inspect")
        .into_inner();
    let status = inspect.task.expect("status");
    assert_eq!(status.state, d::TaskState::Running as i32);
    assert_eq!(status.name, "web");
    assert!(status.started_at.is_some());

    let mut stats = c
        .driver
        .task_stats(d::TaskStatsRequest {
            task_id: task_id.clone(),
            collection_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
        })
        .await
        .expect("stats")
        .into_inner();
    for _ in 0..2 {
        let reading = tokio::time::timeout(Duration::from_secs(10), stats.message())
            .await
            .expect("stats in time")
            .expect("stream")
            .expect("a reading")
            .stats
            .expect("stats");
        assert_eq!(reading.id, task_id);
        let usage = reading.agg_resource_usage.expect("usage");
        let memory = usage.memory.expect("memory");
        assert!(memory.rss > 0 || memory.cache > 0, "{memory:?}");
        assert!(!memory.measured_fields.is_empty());
        let cpu = usage.cpu.expect("cpu");
        assert!(cpu.percent >= 0.0);
    }
    drop(stats);

    c.driver
        .signal_task(d::SignalTaskRequest {
            task_id: task_id.clone(),
            signal: "SIGUSR1".into(),
        })
        .await
        .expect("signal");
    wait_for_file(&alloc.shared().join("usr1"), Duration::from_secs(10));

    // Destroying a running task without force is refused.
    let err = c
        .driver
        .destroy_task(d::DestroyTaskRequest {
            task_id: task_id.clone(),
            force: false,
        })
        .await
        .expect_err("still running");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let begun = Instant::now();
    c.driver
        .stop_task(d::StopTaskRequest {
            task_id: task_id.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            signal: "SIGTERM".into(),
        })
        .await
        .expect("stop");
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "stop waited out the timeout"
    );
    let waited = wait_task(&mut c, &task_id).await;
    let result = waited.result.expect("result");
    assert_eq!(result.signal, 15, "{waited:?}");
    assert!(!result.oom_killed);
    // Answered again, until destroyed.
    let again = wait_task(&mut c, &task_id).await;
    assert_eq!(again.result, Some(result));
    // The task's records are kept until it is destroyed, and go with it.
    let state_dir = data
        .path()
        .join("tasks")
        .join(execdriver_nomad::start::engine_task_id(&task_id));
    assert!(
        state_dir.exists(),
        "{} is gone before the destroy",
        state_dir.display()
    );
    guard.disarm();

    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id: task_id.clone(),
            force: false,
        })
        .await
        .expect("destroy");
    assert!(!state_dir.exists(), "{} is left", state_dir.display());
    let err = c
        .driver
        .wait_task(d::WaitTaskRequest {
            task_id: task_id.clone(),
        })
        .await
        .expect_err("destroyed");
    assert_eq!(err.code(), Code::NotFound);
    // Destroy is idempotent.
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id,
            force: true,
        })
        .await
        .expect("destroy again");
}

#[tokio::test]
async fn a_task_survives_the_plugin_and_is_recovered_by_a_new_one() {
    if !root("a_task_survives_the_plugin_and_is_recovered_by_a_new_one") {
        return;
    }
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let alloc = AllocDir::new("db");
    let task = task_config(
        &alloc,
        "db",
        "9f8e7d6c",
        "/bin/sh",
        &["-c", "echo up > /alloc/up; exec sleep 60"],
    );
    let task_id = task.id.clone();

    let mut first = PluginProcess::start();
    let mut c = configured(&first, data.path()).await;
    let handle = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .expect("start")
        .into_inner()
        .handle
        .expect("handle");
    guard.arm(&handle.driver_state);
    wait_for_file(&alloc.shared().join("up"), Duration::from_secs(10));
    drop(c);
    first.kill();

    let second = PluginProcess::start();
    let mut c = configured(&second, data.path()).await;
    for _ in 0..2 {
        c.driver
            .recover_task(d::RecoverTaskRequest {
                task_id: task_id.clone(),
                handle: Some(handle.clone()),
            })
            .await
            .expect("recover (idempotent)");
    }
    let inspect = c
        .driver
        .inspect_task(d::InspectTaskRequest {
            task_id: task_id.clone(),
        })
        .await
        .expect("inspect")
        .into_inner();
    assert_eq!(
        inspect.task.expect("status").state,
        d::TaskState::Running as i32
    );

    // A handle of another task is refused.
    let err = c
        .driver
        .recover_task(d::RecoverTaskRequest {
            task_id: "0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11/other/00000000".into(),
            handle: Some(handle.clone()),
        })
        .await
        .expect_err("foreign handle");
    assert_eq!(err.code(), Code::InvalidArgument);

    c.driver
        .stop_task(d::StopTaskRequest {
            task_id: task_id.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            signal: String::new(),
        })
        .await
        .expect("stop");
    let waited = wait_task(&mut c, &task_id).await;
    let result = waited.result.expect("result");
    // `exec sleep` gets the default stop signal, SIGINT.
    assert_eq!(result.signal, 2, "{waited:?}");
    guard.disarm();
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id,
            force: false,
        })
        .await
        .expect("destroy");
}

#[tokio::test]
async fn an_exit_code_reaches_wait_task_and_force_destroy_kills() {
    if !root("an_exit_code_reaches_wait_task_and_force_destroy_kills") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, data.path()).await;
    let alloc = AllocDir::new("job");
    let quick = task_config(&alloc, "job", "00000001", "/bin/sh", &["-c", "exit 3"]);
    let quick_id = quick.id.clone();
    c.driver
        .start_task(d::StartTaskRequest { task: Some(quick) })
        .await
        .expect("start");
    let waited = wait_task(&mut c, &quick_id).await;
    assert_eq!(waited.result.map(|r| (r.exit_code, r.signal)), Some((3, 0)));
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id: quick_id.clone(),
            force: false,
        })
        .await
        .expect("destroy exited");
    let quick_state = data
        .path()
        .join("tasks")
        .join(execdriver_nomad::start::engine_task_id(&quick_id));
    assert!(!quick_state.exists(), "{} is left", quick_state.display());

    let slow = task_config(&alloc, "job", "00000002", "/bin/sleep", &["60"]);
    let slow_id = slow.id.clone();
    let handle = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(slow) })
        .await
        .expect("start")
        .into_inner()
        .handle
        .expect("handle");
    guard.arm(&handle.driver_state);
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id: slow_id.clone(),
            force: true,
        })
        .await
        .expect("force destroy");
    guard.disarm();
    let state_dir = data
        .path()
        .join("tasks")
        .join(execdriver_nomad::start::engine_task_id(&slow_id));
    assert!(!state_dir.exists(), "{} is left", state_dir.display());
}

#[tokio::test]
async fn an_oom_kill_is_reported_by_wait_task_and_task_events() {
    if !root("an_oom_kill_is_reported_by_wait_task_and_task_events") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, data.path()).await;
    let mut events = c
        .driver
        .task_events(d::TaskEventsRequest {})
        .await
        .expect("events")
        .into_inner();
    let alloc = AllocDir::new("hog");
    // Doubles a string until the 8 MiB limit ends it.
    let mut task = task_config(
        &alloc,
        "hog",
        "0000beef",
        "/bin/sh",
        &["-c", "x=aaaaaaaa; while true; do x=$x$x; done"],
    );
    if let Some(memory) = task
        .resources
        .as_mut()
        .and_then(|r| r.allocated_resources.as_mut())
        .and_then(|a| a.memory.as_mut())
    {
        memory.memory_mb = 8;
    }
    let task_id = task.id.clone();
    let handle = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .expect("start")
        .into_inner()
        .handle
        .expect("handle");
    guard.arm(&handle.driver_state);
    let waited = wait_task(&mut c, &task_id).await;
    guard.disarm();
    let result = waited.result.expect("result");
    assert!(result.oom_killed, "{waited:?}");
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event in time")
        .expect("stream")
        .expect("an event");
    assert_eq!(event.task_id, task_id);
    assert_eq!(event.task_name, "hog");
    assert!(event.message.contains("OOM"), "{}", event.message);
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id,
            force: false,
        })
        .await
        .expect("destroy");
}

#[tokio::test]
async fn stop_task_force_kills_a_task_that_ignores_the_signal_at_the_timeout() {
    if !root("stop_task_force_kills_a_task_that_ignores_the_signal_at_the_timeout") {
        return;
    }
    let plugin = PluginProcess::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut guard = TaskGuard::new(data.path());
    let mut c = configured(&plugin, data.path()).await;
    let alloc = AllocDir::new("stubborn");
    let task = task_config(
        &alloc,
        "stubborn",
        "0000dead",
        "/bin/sh",
        &[
            "-c",
            // INT too: today's force kill sends the kill signal (SIGINT) just before SIGKILL.
            "trap '' TERM INT; echo ready > /alloc/ready; while true; do sleep 0.05; done",
        ],
    );
    let task_id = task.id.clone();
    let handle = c
        .driver
        .start_task(d::StartTaskRequest { task: Some(task) })
        .await
        .expect("start")
        .into_inner()
        .handle
        .expect("handle");
    guard.arm(&handle.driver_state);
    wait_for_file(&alloc.shared().join("ready"), Duration::from_secs(10));
    let timeout = Duration::from_secs(1);
    let begun = Instant::now();
    c.driver
        .stop_task(d::StopTaskRequest {
            task_id: task_id.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            signal: "SIGTERM".into(),
        })
        .await
        .expect("stop");
    let took = begun.elapsed();
    // The signal is ignored, so the stop lasts the timeout, then the force kill ends it.
    assert!(
        took >= timeout,
        "stop returned after {took:?}, before the timeout"
    );
    assert!(
        took < timeout + Duration::from_secs(10),
        "stop took {took:?}"
    );
    let waited = wait_task(&mut c, &task_id).await;
    assert_eq!(waited.result.map(|r| r.signal), Some(9), "{:?}", waited.err);
    guard.disarm();
    c.driver
        .destroy_task(d::DestroyTaskRequest {
            task_id,
            force: false,
        })
        .await
        .expect("destroy");
}
