//! The Driver against a mockall `Platform`: the exact order of the platform calls of a kill
//! (graceful signal, the platform's backup force kill scheduled, wait, force kill) and of the cleanup after a failed reattach (every
//! step attempted even when an earlier one fails, every failure reported together).
//!
//! mockall panics on any call without a matching expectation and, when the mock is dropped,
//! on any expectation not met, so each test also proves that nothing else was called.

#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use execdriver_core::handle::HANDLE_FORMAT_VERSION;
use execdriver_core::{
    Driver, DriverConfig, DriverError, ExitStatus, HandleId, MockPlatform, MockSupervisor,
    PlatformError, ProcessIdentity, Reattach, Signal, Spawned, SupervisorIdentity, TaskSpec,
    Timestamp, WaitResult,
};
use mockall::Sequence;
use mockall::predicate::eq;
use support::spec_with;

/// The mock's clock: it never moves, so every deadline is this plus a known duration.
const T0: Timestamp = Timestamp(Duration::from_secs(1000));
const SUP: MockSupervisor = MockSupervisor(7);
const KILL_TIMEOUT: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(2);

fn config() -> DriverConfig {
    DriverConfig {
        max_kill_timeout: Duration::from_secs(10),
        force_kill_grace: GRACE,
        ..DriverConfig::default()
    }
}

fn spec() -> TaskSpec {
    spec_with("t1", Signal::SIGTERM, KILL_TIMEOUT)
}

fn spawned(spec: &TaskSpec) -> Spawned<MockSupervisor> {
    let state_dir = PathBuf::from("/state").join(&spec.task_id);
    Spawned {
        supervisor: SUP,
        identity: SupervisorIdentity {
            process: ProcessIdentity {
                pid: 700,
                start_time: 1,
            },
            socket: state_dir.join("supervisor.sock"),
        },
        task: ProcessIdentity {
            pid: 701,
            start_time: 2,
        },
        cgroup: format!("execdriver-{}", spec.task_id),
        state_dir,
    }
}

fn handle_id(kill_signal: Signal, kill_timeout_ms: u64) -> HandleId {
    HandleId {
        format: HANDLE_FORMAT_VERSION,
        driver_version: execdriver_core::DRIVER_VERSION.to_owned(),
        task_id: "t1".into(),
        supervisor: SupervisorIdentity {
            process: ProcessIdentity {
                pid: 700,
                start_time: 1,
            },
            socket: "/state/t1/supervisor.sock".into(),
        },
        task: ProcessIdentity {
            pid: 701,
            start_time: 2,
        },
        cgroup: "execdriver-t1".into(),
        state_dir: "/state/t1".into(),
        task_dir: "/alloc/t1".into(),
        alloc_dir: "/alloc".into(),
        kill_timeout_ms,
        max_kill_timeout_ms: 4000,
        kill_signal,
    }
}

/// A mock whose clock reads `T0`, and a sequence already holding a successful spawn.
fn started() -> (MockPlatform, Sequence) {
    let mut p = MockPlatform::new();
    p.expect_now().return_const(T0);
    let mut seq = Sequence::new();
    p.expect_spawn()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|s| Ok(spawned(s)));
    (p, seq)
}

/// Expects the four orphan cleanup steps, in order, on the handle of task t1, each returning
/// the given result.
fn expect_orphan_cleanup(
    p: &mut MockPlatform,
    seq: &mut Sequence,
    results: [Result<(), PlatformError>; 4],
) {
    let [a, b, c, d] = results;
    let for_t1 = |h: &HandleId| h.task_id == "t1" && h.cgroup == "execdriver-t1";
    p.expect_kill_supervisor()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| a);
    p.expect_kill_cgroup()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| b);
    p.expect_destroy_cgroup()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| c);
    p.expect_remove_state()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| d);
}

fn failed(what: &str) -> Result<(), PlatformError> {
    Err(PlatformError::Failed(what.to_owned()))
}

#[test]
fn kill_signals_waits_out_the_timeout_then_forces() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .with(eq(SUP), eq(Signal::SIGTERM))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_schedule_force_kill()
        .with(eq(SUP), eq(KILL_TIMEOUT))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + KILL_TIMEOUT)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(None));
    p.expect_force_kill()
        .with(eq(SUP))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + GRACE)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::signaled(Signal::SIGKILL))));
    p.expect_release()
        .with(eq(SUP))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    assert_eq!(
        task.wait(),
        Ok(WaitResult::from(ExitStatus::signaled(Signal::SIGKILL)))
    );
    // A second kill of an exited task calls nothing.
    task.kill().expect("kill again");
}

#[test]
fn kill_stops_at_the_graceful_exit() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .with(eq(SUP), eq(Signal::SIGTERM))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_schedule_force_kill()
        .withf(|s, after| *s == SUP && *after <= KILL_TIMEOUT)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + KILL_TIMEOUT)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    p.expect_force_kill().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    assert!(task.wait().expect("result").successful());
}

#[test]
fn kill_forces_at_once_when_the_signal_cannot_be_sent() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::Failed("no such process".into())));
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + GRACE)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::signaled(Signal::SIGKILL))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
}

#[test]
fn kill_forces_when_the_graceful_wait_fails() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_schedule_force_kill()
        .withf(|s, after| *s == SUP && *after <= KILL_TIMEOUT)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + KILL_TIMEOUT)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::Failed("connection reset".into())));
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + GRACE)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::Failed("connection reset".into())));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("connection reset")),
        "{r:?}"
    );
}

#[test]
fn a_task_that_survives_the_force_kill_is_cleaned_up_by_cgroup() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_schedule_force_kill()
        .withf(|s, after| *s == SUP && *after <= KILL_TIMEOUT)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(None));
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + GRACE)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(None));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), Ok(()), Ok(())]);
    p.expect_release().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, -1);
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("did not exit within 2s of a force kill")),
        "{r:?}"
    );
}

#[test]
fn a_failing_force_kill_falls_back_to_the_cgroup() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_schedule_force_kill()
        .withf(|s, after| *s == SUP && *after <= KILL_TIMEOUT)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(None));
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(PlatformError::Failed("stuck".into())));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("force kill failed")),
        "{r:?}"
    );
}

#[test]
fn kill_with_a_lost_supervisor_cleans_up_by_cgroup_without_waiting() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::SupervisorLost("eof".into())));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), Ok(()), Ok(())]);
    p.expect_wait().never();
    p.expect_force_kill().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, -1);
    assert_eq!(r.error.as_deref(), Some("eof"));
}

#[test]
fn reattach_failure_attempts_every_step_and_reports_every_failure() {
    let mut p = MockPlatform::new();
    p.expect_now().return_const(T0);
    let mut seq = Sequence::new();
    p.expect_reattach()
        .withf(|h| h.task_id == "t1")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(Reattach::Gone {
                reason: "supervisor pid 700 is gone".into(),
            })
        });
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        [
            failed("pid 700: permission denied"),
            failed("cgroup.kill: device busy"),
            Ok(()),
            failed("/state/t1: read-only file system"),
        ],
    );
    let driver = Driver::with_config(p, config());
    let err = driver
        .open(&handle_id(Signal::SIGINT, 1000).to_string())
        .expect_err("reattach must fail");
    let DriverError::ReattachFailed {
        task_id,
        reason,
        failures,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(task_id, "t1");
    assert_eq!(reason, "supervisor pid 700 is gone");
    assert_eq!(
        failures,
        &vec![
            "kill supervisor: pid 700: permission denied".to_owned(),
            "kill cgroup: cgroup.kill: device busy".to_owned(),
            "remove state: /state/t1: read-only file system".to_owned(),
        ]
    );
    let message = err.to_string();
    for f in failures {
        assert!(message.contains(f.as_str()), "{message} lacks {f}");
    }
}

#[test]
fn reattach_failure_with_every_step_failing_still_runs_them_all() {
    let mut p = MockPlatform::new();
    p.expect_now().return_const(T0);
    let mut seq = Sequence::new();
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Reattach::Gone { reason: "r".into() }));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        [failed("a"), failed("b"), failed("c"), failed("d")],
    );
    let driver = Driver::with_config(p, config());
    match driver.open(&handle_id(Signal::SIGINT, 1000).to_string()) {
        Err(DriverError::ReattachFailed { failures, .. }) => assert_eq!(
            failures,
            vec![
                "kill supervisor: a",
                "kill cgroup: b",
                "destroy cgroup: c",
                "remove state: d"
            ]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reattach_finding_an_exit_record_cleans_up_and_reports_the_exit() {
    let mut p = MockPlatform::new();
    p.expect_now().return_const(T0);
    let mut seq = Sequence::new();
    let oom = ExitStatus {
        oom_killed: true,
        ..ExitStatus::signaled(Signal::SIGKILL)
    };
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(Reattach::Exited(oom)));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver
        .open(&handle_id(Signal::SIGINT, 1000).to_string())
        .expect("open");
    assert_eq!(task.wait(), Ok(WaitResult::from(oom)));
    task.kill().expect("kill of an exited task does nothing");
}

#[test]
fn a_refused_reattach_touches_nothing() {
    let mut p = MockPlatform::new();
    p.expect_reattach()
        .times(1)
        .returning(|_| Err(PlatformError::Refused("not under the data dir".into())));
    let driver = Driver::with_config(p, config());
    assert!(matches!(
        driver.open(&handle_id(Signal::SIGINT, 1000).to_string()),
        Err(DriverError::ReattachRefused { .. })
    ));
}

#[test]
fn a_forged_handle_id_reaches_no_platform_call() {
    let p = MockPlatform::new();
    let driver = Driver::with_config(p, config());
    let mut forged = handle_id(Signal::SIGINT, 1000);
    forged.cgroup = "../system.slice".into();
    let text = serde_json::to_string(&forged).expect("serialize");
    assert!(matches!(driver.open(&text), Err(DriverError::Handle(_))));
}

#[test]
fn a_failed_spawn_calls_nothing_else() {
    let mut p = MockPlatform::new();
    p.expect_spawn()
        .times(1)
        .returning(|_| Err(PlatformError::Failed("no cgroup controllers".into())));
    let driver = Driver::with_config(p, config());
    assert!(matches!(
        driver.start(&spec()),
        Err(DriverError::Spawn { .. })
    ));
}

#[test]
fn a_release_failure_repaired_by_the_fallback_is_not_an_error() {
    let (mut p, mut seq) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(PlatformError::SupervisorLost("eof".into())));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    let r = task.wait().expect("result");
    assert!(r.successful(), "{r:?}");
}

#[test]
fn a_release_failure_is_reported_with_the_fallback_failures() {
    let (mut p, mut seq) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(PlatformError::Failed("timeout".into())));
    expect_orphan_cleanup(&mut p, &mut seq, [Ok(()), Ok(()), failed("busy"), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, 0);
    assert_eq!(
        r.error.as_deref(),
        Some("cleanup failed: release supervisor: timeout; destroy cgroup: busy")
    );
}

#[test]
fn a_reattached_task_is_killed_with_its_recorded_signal_and_capped_timeout() {
    let mut p = MockPlatform::new();
    p.expect_now().return_const(T0);
    let mut seq = Sequence::new();
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Reattach::Live(SUP)));
    p.expect_signal()
        .with(eq(SUP), eq(Signal::SIGUSR2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    // The update asked for 10 s; the handle's maximum is 4 s.
    p.expect_schedule_force_kill()
        .with(eq(SUP), eq(Duration::from_secs(4)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + Duration::from_secs(4))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::signaled(Signal::SIGUSR2))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let driver = Driver::with_config(p, config());
    let task = driver
        .open(&handle_id(Signal::SIGUSR2, 1000).to_string())
        .expect("open");
    assert_eq!(task.update(Duration::from_secs(10)), Duration::from_secs(4));
    assert_eq!(task.handle_id().kill_timeout_ms, 4000);
    task.kill().expect("kill");
}

/// A handle written under a laxer maximum (or forged) cannot stretch a kill past this
/// driver's maximum: open caps both timeouts.
#[test]
fn open_caps_the_handle_timeouts_at_the_drivers_maximum() {
    let mut p = MockPlatform::new();
    p.expect_now().return_const(T0);
    p.expect_reattach()
        .times(1)
        .returning(|_| Ok(Reattach::Live(SUP)));
    let mut lax = handle_id(Signal::SIGTERM, 3_600_000);
    lax.max_kill_timeout_ms = u64::MAX;
    let d = Driver::with_config(p, config());
    let task = d.open(&lax.to_string()).expect("open");
    let max = config().max_kill_timeout;
    assert_eq!(task.handle_id().kill_timeout(), max);
    assert_eq!(task.handle_id().max_kill_timeout(), max);
    assert_eq!(task.update(Duration::from_secs(86_400)), max);
}

/// A panic in the platform while the task is finishing must not leave later waiters blocked
/// on a result nobody will deliver.
#[test]
fn a_panic_while_finishing_still_delivers_a_result() {
    let (mut p, mut seq) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| panic!("release blew up"));
    let d = Driver::with_config(p, config());
    let task = d.start(&spec()).expect("start");
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.wait()));
    assert!(
        first.is_err(),
        "the platform's panic reaches the first caller"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(task.wait_timeout(Duration::from_millis(1))));
        let later = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a later wait must not block forever");
        let result = later.expect("wait").expect("a result");
        assert!(result.error.is_some_and(|e| e.contains("panicked")));
    });
    task.kill().expect("killing the finished task does nothing");
}

/// A panicking hook is the agent's bug, but it must not leak the task it was told about.
#[test]
fn a_panicking_hook_does_not_leak_the_task() {
    struct Panicky;
    impl execdriver_core::LifecycleHooks for Panicky {
        fn on_running(&self, _: &str) {
            panic!("registry down");
        }
        fn on_exited(&self, _: &str, _: &WaitResult) {
            panic!("registry down");
        }
    }
    let (mut p, mut seq) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(3))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let d = Driver::with_config(p, config()).with_hooks(std::sync::Arc::new(Panicky));
    let task = d
        .start(&spec())
        .expect("start returns the handle despite the hook");
    assert_eq!(task.wait().map(|r| r.exit_code), Ok(3));
}

/// When the supervisor is lost during a kill and the cleanup by cgroup fails, kill says so:
/// the caller must not believe the task is gone.
#[test]
fn a_kill_whose_cleanup_fails_is_an_error() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::SupervisorLost("eof".into())));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        [
            Ok(()),
            Err(PlatformError::Failed("cgroup busy".into())),
            Ok(()),
            Ok(()),
        ],
    );
    let d = Driver::with_config(p, config());
    let task = d.start(&spec()).expect("start");
    match task.kill() {
        Err(DriverError::KillIncomplete { failures, .. }) => {
            assert_eq!(failures, vec!["kill cgroup: cgroup busy".to_owned()]);
        }
        other => panic!("expected KillIncomplete, got {other:?}"),
    }
    assert!(task.result().is_some_and(|r| r.error.is_some()));
}

/// A force kill the platform refuses (the supervisor it reached is not this task's, as after
/// an id reuse) is an error, and nothing is cleaned up by cgroup: that would hit the other
/// task.
#[test]
fn a_refused_force_kill_cleans_up_nothing() {
    let (mut p, mut seq) = started();
    p.expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::Refused("another supervisor".into())));
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(PlatformError::Refused("another supervisor".into())));
    p.expect_kill_supervisor().never();
    p.expect_kill_cgroup().never();
    p.expect_destroy_cgroup().never();
    p.expect_remove_state().never();
    let d = Driver::with_config(p, config());
    let task = d.start(&spec()).expect("start");
    assert!(matches!(
        task.kill(),
        Err(DriverError::Platform {
            source: PlatformError::Refused(_),
            ..
        })
    ));
}
