//! The Driver against a mockall `Platform`: the exact order of the platform calls of a kill
//! (the kill signal with the supervisor's backup armed, the wait until the grace ends, the
//! force kill, the wait for its effect, the release) with the deadline of each, the takeover
//! by cgroup when the supervisor fails, and the cleanup after a failed reattach (every step
//! attempted even when an earlier one fails, every failure reported together).
//!
//! mockall panics on any call without a matching expectation and, when the mock is dropped,
//! on any expectation not met, so each test also proves that nothing else was called. The
//! clock is the test's: it moves only when a wait or an unanswered call says time passed.

#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use execdriver_core::handle::HANDLE_FORMAT_VERSION;
use execdriver_core::{
    CleanupStep, Driver, DriverConfig, DriverError, ExitStatus, HandleId, MockPlatform,
    MockSupervisor, PlatformError, ProcessIdentity, Reattach, Refusal, Signal, Spawned,
    SupervisorIdentity, TaskErrorKind, TaskRecord, TaskSpec, Timestamp, WaitResult,
};
use mockall::Sequence;
use mockall::predicate::eq;
use support::spec_with;

/// When every test starts.
const T0: Timestamp = Timestamp(Duration::from_secs(1000));
const SUP: MockSupervisor = MockSupervisor(7);
const KILL_TIMEOUT: Duration = Duration::from_secs(3);
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
/// The default timeouts: what each step of a kill may take.
const ANSWER: Duration = ms(500);
const FORCE: Duration = ms(1000);
const OVERRUN: Duration = ms(2000);
const CALL: Duration = ms(5000);
const CLEANUP: Duration = ms(10_000);

fn config() -> DriverConfig {
    DriverConfig::default().with_max_kill_timeout(Duration::from_secs(10))
}

fn spec() -> TaskSpec {
    spec_with("t1", Signal::SIGTERM, KILL_TIMEOUT)
}

fn spawned(spec: &TaskSpec) -> Spawned<MockSupervisor> {
    let state_dir = PathBuf::from("/state").join(&spec.task_id);
    Spawned {
        supervisor: SUP,
        record: TaskRecord {
            task_id: spec.task_id.clone(),
            supervisor: SupervisorIdentity {
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
            task_dir: spec.task_dir.clone(),
            alloc_dir: spec.alloc_dir.clone(),
            kill_timeout: spec.kill_timeout,
            kill_signal: spec.kill_signal,
        },
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

/// The test's clock, shared with the mock's `now`.
#[derive(Clone)]
struct Clock(Arc<Mutex<Timestamp>>);

impl Clock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, t: Timestamp) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = (*now).max(t);
    }
}

/// A mock on the test's clock.
fn platform() -> (MockPlatform, Clock) {
    let clock = Clock(Arc::new(Mutex::new(T0)));
    let mut p = MockPlatform::new();
    let c = clock.clone();
    p.expect_now().returning(move || c.now());
    (p, clock)
}

/// A mock whose spawn succeeds, and a sequence already holding it.
fn started() -> (MockPlatform, Sequence, Clock) {
    let (mut p, clock) = platform();
    let mut seq = Sequence::new();
    p.expect_spawn()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|s| Ok(spawned(s)));
    (p, seq, clock)
}

/// Expects one wait until `until` that lets the time pass and reports the task running.
fn expect_wait_out(p: &mut MockPlatform, seq: &mut Sequence, clock: &Clock, until: Timestamp) {
    let c = clock.clone();
    p.expect_wait()
        .with(eq(SUP), eq(Some(until)))
        .times(1)
        .in_sequence(seq)
        .returning(move |_, until| {
            if let Some(until) = until {
                c.set(until);
            }
            Ok(None)
        });
}

/// Expects the force kill through the supervisor (by `force_ends`, the end of its window),
/// the task's SIGKILL exit seen by the wait that follows, and the release by `release_by`.
fn expect_forced_exit(
    p: &mut MockPlatform,
    seq: &mut Sequence,
    force_ends: Timestamp,
    release_by: Timestamp,
) {
    p.expect_force_kill()
        .with(eq(SUP), eq(force_ends))
        .times(1)
        .in_sequence(seq)
        .returning(|_, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(force_ends)))
        .times(1)
        .in_sequence(seq)
        .returning(|_, _| Ok(Some(ExitStatus::signaled(Signal::SIGKILL))));
    p.expect_release()
        .with(eq(SUP), eq(release_by))
        .times(1)
        .in_sequence(seq)
        .returning(|_, _| Ok(()));
}

/// Expects the three orphan cleanup steps (the records stay until the task is removed), in order, on the handle of task t1 with the
/// deadline `deadline`, each returning the given result.
fn expect_orphan_cleanup(
    p: &mut MockPlatform,
    seq: &mut Sequence,
    deadline: Timestamp,
    results: [Result<(), PlatformError>; 3],
) {
    let [a, b, c] = results;
    let for_t1 = move |h: &HandleId, at: &Timestamp| {
        h.task_id == "t1" && h.cgroup == "execdriver-t1" && *at == deadline
    };
    p.expect_kill_supervisor()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _| a);
    p.expect_kill_cgroup()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _| b);
    p.expect_destroy_cgroup()
        .withf(for_t1)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _| c);
    p.expect_remove_state().never();
}

fn failed(what: &str) -> Result<(), PlatformError> {
    Err(PlatformError::other(what))
}

fn error_of(r: &WaitResult) -> (TaskErrorKind, String) {
    let e = r.error.as_ref().expect("an error");
    (e.kind, e.to_string())
}

#[test]
fn kill_signals_waits_out_the_timeout_then_forces() {
    let (mut p, mut seq, clock) = started();
    p.expect_begin_kill()
        .with(
            eq(SUP),
            eq(Signal::SIGTERM),
            eq(KILL_TIMEOUT),
            // The supervisor has the grace (3 s) to take the signal on.
            eq(T0 + KILL_TIMEOUT),
        )
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    let grace_ends = T0 + KILL_TIMEOUT;
    expect_wait_out(&mut p, &mut seq, &clock, grace_ends);
    expect_forced_exit(&mut p, &mut seq, grace_ends + FORCE, grace_ends + ANSWER);
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

/// A wait over the grace that goes unanswered (the supervisor killing the cgroup itself as
/// the grace ends) leads to the force kill, which the supervisor then answers: a kill, not a
/// takeover.
#[test]
fn an_unanswered_wait_at_the_graces_end_goes_on_to_the_force_kill() {
    let (mut p, mut seq, clock) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    let grace_ends = T0 + KILL_TIMEOUT;
    let c = clock.clone();
    p.expect_wait()
        .with(eq(SUP), eq(Some(grace_ends)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| {
            c.set(grace_ends + ms(250));
            Err(PlatformError::unresponsive("no answer within 3.25s"))
        });
    expect_forced_exit(
        &mut p,
        &mut seq,
        grace_ends + FORCE,
        grace_ends + ms(250) + ANSWER,
    );
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    assert_eq!(
        task.wait(),
        Ok(WaitResult::from(ExitStatus::signaled(Signal::SIGKILL)))
    );
}

/// Before the grace's end an unanswered wait is an unresponsive supervisor: taken over.
#[test]
fn an_unanswered_wait_within_the_grace_is_taken_over_by_cgroup() {
    let (mut p, mut seq, clock) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    let grace_ends = T0 + KILL_TIMEOUT;
    let c = clock.clone();
    p.expect_wait()
        .with(eq(SUP), eq(Some(grace_ends)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| {
            c.set(T0 + ms(1500));
            Err(PlatformError::unresponsive("no answer"))
        });
    p.expect_force_kill().never();
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        grace_ends + OVERRUN,
        [Ok(()), Ok(()), Ok(())],
    );
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let (kind, _) = error_of(&task.wait().expect("result"));
    assert_eq!(kind, TaskErrorKind::SupervisorUnresponsive);
}

#[test]
fn stop_sends_its_own_signal_waits_its_own_grace_capped_at_the_maximum_then_forces() {
    let (mut p, mut seq, clock) = started();
    // Asked for 60 s: the driver's maximum (10 s) is what it gets.
    let grace = Duration::from_secs(10);
    p.expect_begin_kill()
        .with(eq(SUP), eq(Signal::SIGUSR2), eq(grace), eq(T0 + CALL))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    let grace_ends = T0 + grace;
    expect_wait_out(&mut p, &mut seq, &clock, grace_ends);
    expect_forced_exit(&mut p, &mut seq, grace_ends + FORCE, grace_ends + ANSWER);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.stop(Signal::SIGUSR2, Duration::from_secs(60))
        .expect("stop");
    assert_eq!(task.handle_id().kill_timeout(), grace);
    assert_eq!(
        task.wait(),
        Ok(WaitResult::from(ExitStatus::signaled(Signal::SIGKILL)))
    );
    // Stopping an exited task calls nothing.
    task.stop(Signal::SIGTERM, Duration::ZERO)
        .expect("stop again");
}

#[test]
fn kill_stops_at_the_graceful_exit() {
    let (mut p, mut seq, _) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + KILL_TIMEOUT)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .with(eq(SUP), eq(T0 + ANSWER))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    p.expect_force_kill().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    assert!(task.wait().expect("result").successful());
}

#[test]
fn kill_forces_at_once_when_the_signal_cannot_be_sent() {
    let (mut p, mut seq, _) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Err(PlatformError::other("no such process")));
    expect_forced_exit(&mut p, &mut seq, T0 + FORCE, T0 + ANSWER);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
}

#[test]
fn a_supervisor_that_fails_a_wait_during_the_kill_is_taken_over() {
    let (mut p, mut seq, _) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + KILL_TIMEOUT)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::other("connection reset")));
    let bound = T0 + KILL_TIMEOUT + OVERRUN;
    expect_orphan_cleanup(&mut p, &mut seq, bound, [Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let (kind, message) = error_of(&task.wait().expect("result"));
    assert_eq!(kind, TaskErrorKind::SupervisorUnresponsive);
    assert!(message.contains("connection reset"), "{message}");
}

#[test]
fn an_unresponsive_supervisor_is_taken_over_within_the_bound() {
    let (mut p, mut seq, clock) = started();
    let c = clock.clone();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _, deadline| {
            c.set(deadline);
            Err(PlatformError::unresponsive("no answer within 500ms"))
        });
    let bound = T0 + KILL_TIMEOUT + OVERRUN;
    expect_orphan_cleanup(&mut p, &mut seq, bound, [Ok(()), Ok(()), Ok(())]);
    p.expect_wait().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    assert!(clock.now() <= bound);
    let (kind, message) = error_of(&task.wait().expect("result"));
    assert_eq!(kind, TaskErrorKind::SupervisorUnresponsive);
    assert!(
        message.contains("killed the task by its cgroup"),
        "{message}"
    );
}

#[test]
fn a_task_that_survives_the_force_kill_is_cleaned_up_by_cgroup() {
    let (mut p, mut seq, clock) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    let grace_ends = T0 + KILL_TIMEOUT;
    expect_wait_out(&mut p, &mut seq, &clock, grace_ends);
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    expect_wait_out(&mut p, &mut seq, &clock, grace_ends + FORCE);
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        grace_ends + OVERRUN,
        [Ok(()), Ok(()), Ok(())],
    );
    p.expect_release().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, -1);
    let (kind, message) = error_of(&r);
    assert_eq!(kind, TaskErrorKind::ForceKillFailed);
    assert!(
        message.contains("did not exit within 1s of a force kill"),
        "{message}"
    );
    assert!(clock.now() <= grace_ends + OVERRUN);
}

#[test]
fn a_failing_force_kill_falls_back_to_the_cgroup() {
    let (mut p, mut seq, clock) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    expect_wait_out(&mut p, &mut seq, &clock, T0 + KILL_TIMEOUT);
    p.expect_force_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::cgroup("stuck")));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + KILL_TIMEOUT + OVERRUN,
        [Ok(()), Ok(()), Ok(())],
    );
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let (kind, message) = error_of(&task.wait().expect("result"));
    assert_eq!(kind, TaskErrorKind::ForceKillFailed);
    assert!(
        message.contains("force kill through the supervisor failed: stuck"),
        "{message}"
    );
}

#[test]
fn kill_with_a_lost_supervisor_cleans_up_by_cgroup_without_waiting() {
    let (mut p, mut seq, _) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Err(PlatformError::gone("eof")));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + KILL_TIMEOUT + OVERRUN,
        [Ok(()), Ok(()), Ok(())],
    );
    p.expect_wait().never();
    p.expect_force_kill().never();
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, -1);
    assert_eq!(
        error_of(&r),
        (TaskErrorKind::SupervisorLost, "eof".to_owned())
    );
}

#[test]
fn reattach_failure_attempts_every_step_and_reports_every_failure() {
    let (mut p, _) = platform();
    let mut seq = Sequence::new();
    p.expect_reattach()
        .withf(|h, at| h.task_id == "t1" && *at == T0 + ANSWER)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Ok(Reattach::Gone {
                reason: "supervisor pid 700 is gone".into(),
            })
        });
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + CLEANUP,
        [
            failed("pid 700: permission denied"),
            failed("cgroup.kill: device busy"),
            Ok(()),
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
    let steps: Vec<CleanupStep> = failures.iter().map(|f| f.step).collect();
    assert_eq!(
        steps,
        vec![CleanupStep::KillSupervisor, CleanupStep::KillCgroup]
    );
    let texts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        vec![
            "kill supervisor: pid 700: permission denied",
            "kill cgroup: cgroup.kill: device busy",
        ]
    );
    let message = err.to_string();
    for f in &texts {
        assert!(message.contains(f.as_str()), "{message} lacks {f}");
    }
}

#[test]
fn reattach_failure_with_every_step_failing_still_runs_them_all() {
    let (mut p, _) = platform();
    let mut seq = Sequence::new();
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Reattach::Gone { reason: "r".into() }));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + CLEANUP,
        [failed("a"), failed("b"), failed("c")],
    );
    let driver = Driver::with_config(p, config());
    match driver.open(&handle_id(Signal::SIGINT, 1000).to_string()) {
        Err(DriverError::ReattachFailed { failures, .. }) => assert_eq!(
            failures.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["kill supervisor: a", "kill cgroup: b", "destroy cgroup: c",]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reattach_finding_an_exit_record_cleans_up_and_reports_the_exit() {
    let (mut p, _) = platform();
    let mut seq = Sequence::new();
    let oom = ExitStatus {
        oom_killed: true,
        ..ExitStatus::signaled(Signal::SIGKILL)
    };
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Reattach::Exited(oom)));
    expect_orphan_cleanup(&mut p, &mut seq, T0 + CLEANUP, [Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver
        .open(&handle_id(Signal::SIGINT, 1000).to_string())
        .expect("open");
    assert_eq!(task.wait(), Ok(WaitResult::from(oom)));
    task.kill().expect("kill of an exited task does nothing");
}

#[test]
fn an_unresponsive_supervisor_still_opens_and_is_killed_by_cgroup() {
    let (mut p, clock) = platform();
    let mut seq = Sequence::new();
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Ok(Reattach::Unresponsive {
                supervisor: SUP,
                reason: "stopped".into(),
            })
        });
    let c = clock.clone();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _, deadline| {
            c.set(deadline);
            Err(PlatformError::unresponsive("stopped"))
        });
    // The kill signal's request had the whole grace (1 s) to be answered.
    let start = T0 + Duration::from_secs(1);
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + Duration::from_secs(1) + OVERRUN,
        [Ok(()), Ok(()), Ok(())],
    );
    let driver = Driver::with_config(p, config());
    // The reattach itself took no time on this clock; the kill starts at T0.
    let task = driver
        .open(&handle_id(Signal::SIGINT, 1000).to_string())
        .expect("an unresponsive supervisor still gives a handle");
    task.kill().expect("kill");
    assert!(clock.now() <= start);
    assert_eq!(
        task.result().and_then(|r| r.error).map(|e| e.kind),
        Some(TaskErrorKind::SupervisorUnresponsive)
    );
}

#[test]
fn a_refused_reattach_touches_nothing() {
    let (mut p, _) = platform();
    p.expect_reattach().times(1).returning(|_, _| {
        Err(PlatformError::refused(
            Refusal::NotOurs,
            "not under the data dir",
        ))
    });
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
    p.expect_spawn().times(1).returning(|_| {
        Err(PlatformError::spawn(
            execdriver_core::SpawnStep::Cgroup,
            "no cgroup controllers",
        ))
    });
    let driver = Driver::with_config(p, config());
    assert!(matches!(
        driver.start(&spec()),
        Err(DriverError::Spawn {
            source: PlatformError::Spawn {
                step: execdriver_core::SpawnStep::Cgroup,
                ..
            },
            ..
        })
    ));
}

#[test]
fn a_release_failure_repaired_by_the_fallback_is_not_an_error() {
    let (mut p, mut seq, _) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .with(eq(SUP), eq(T0 + CALL))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::gone("eof")));
    expect_orphan_cleanup(&mut p, &mut seq, T0 + CLEANUP, [Ok(()), Ok(()), Ok(())]);
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    let r = task.wait().expect("result");
    assert!(r.successful(), "{r:?}");
}

#[test]
fn a_release_failure_is_reported_with_the_fallback_failures() {
    let (mut p, mut seq, _) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(PlatformError::unresponsive("timeout")));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + CLEANUP,
        [Ok(()), Ok(()), failed("busy")],
    );
    let driver = Driver::with_config(p, config());
    let task = driver.start(&spec()).expect("start");
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, 0);
    let (kind, message) = error_of(&r);
    assert_eq!(kind, TaskErrorKind::CleanupFailed);
    assert!(
        message.ends_with(
            "cleanup failed: release supervisor: supervisor unresponsive: timeout; destroy cgroup: busy"
        ),
        "{message}"
    );
}

#[test]
fn a_reattached_task_is_killed_with_its_recorded_signal_and_capped_timeout() {
    let (mut p, _) = platform();
    let mut seq = Sequence::new();
    p.expect_reattach()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Reattach::Live(SUP)));
    // The update asked for 10 s; the handle's maximum is 4 s.
    p.expect_begin_kill()
        .with(
            eq(SUP),
            eq(Signal::SIGUSR2),
            eq(Duration::from_secs(4)),
            eq(T0 + Duration::from_secs(4)),
        )
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    p.expect_wait()
        .with(eq(SUP), eq(Some(T0 + Duration::from_secs(4))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::signaled(Signal::SIGUSR2))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
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
    let (mut p, _) = platform();
    p.expect_reattach()
        .times(1)
        .returning(|_, _| Ok(Reattach::Live(SUP)));
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
    let (mut p, mut seq, _) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(0))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| panic!("release blew up"));
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
        assert!(result.error.is_some_and(|e| e.message.contains("panicked")));
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
    let (mut p, mut seq, _) = started();
    p.expect_wait()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Some(ExitStatus::code(3))));
    p.expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
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
    let (mut p, mut seq, _) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Err(PlatformError::gone("eof")));
    expect_orphan_cleanup(
        &mut p,
        &mut seq,
        T0 + KILL_TIMEOUT + OVERRUN,
        [Ok(()), Err(PlatformError::cgroup("cgroup busy")), Ok(())],
    );
    let d = Driver::with_config(p, config());
    let task = d.start(&spec()).expect("start");
    match task.kill() {
        Err(DriverError::KillIncomplete { failures, .. }) => {
            assert_eq!(
                failures.iter().map(ToString::to_string).collect::<Vec<_>>(),
                vec!["kill cgroup: cgroup busy".to_owned()]
            );
        }
        other => panic!("expected KillIncomplete, got {other:?}"),
    }
    assert!(task.result().is_some_and(|r| r.error.is_some()));
}

/// A kill the platform refuses (the supervisor it reached is not this task's, as after an id
/// reuse) is an error, and nothing is cleaned up by cgroup: that would hit the other task.
#[test]
fn a_refused_kill_cleans_up_nothing() {
    let (mut p, mut seq, _) = started();
    p.expect_begin_kill()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| {
            Err(PlatformError::refused(
                Refusal::Reused,
                "another supervisor",
            ))
        });
    p.expect_force_kill().never();
    p.expect_kill_supervisor().never();
    p.expect_kill_cgroup().never();
    p.expect_destroy_cgroup().never();
    p.expect_remove_state().never();
    let d = Driver::with_config(p, config());
    let task = d.start(&spec()).expect("start");
    assert!(matches!(
        task.kill(),
        Err(DriverError::Platform {
            source: PlatformError::Refused {
                kind: Refusal::Reused,
                ..
            },
            ..
        })
    ));
}
