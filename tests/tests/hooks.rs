//! `LifecycleHooks`: `on_running` once per handle that runs, `on_exited` once per handle that
//! ends, whatever path the end takes and however many callers wait, kill or signal.

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use execdriver_core::{Driver, DriverError, Signal, WaitResult};
use execdriver_mock::{Exit, Faults, ForceKill, MockPlatform, SignalResponse, TaskScript};
use proptest::prelude::*;
use support::{Hook, Recorder, spec, spec_with};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn driver(mock: &MockPlatform) -> (Driver<MockPlatform>, Arc<Recorder>) {
    let hooks = Arc::new(Recorder::default());
    (Driver::new(mock.clone()).with_hooks(hooks.clone()), hooks)
}

#[test]
fn a_natural_exit_is_reported_once_however_often_it_is_read() {
    let mock = MockPlatform::new();
    mock.script("a", TaskScript::exits_after(ms(10), Exit::Code(4)));
    let (d, hooks) = driver(&mock);
    let task = d.start(&spec("a")).expect("start");
    assert_eq!(hooks.of("a"), vec![Hook::Running]);
    let r = task.wait().expect("result");
    assert_eq!(r.exit_code, 4);
    for _ in 0..3 {
        assert_eq!(task.wait(), Ok(r.clone()));
        assert_eq!(task.wait_timeout(ms(5)), Ok(Some(r.clone())));
        task.kill().expect("kill of an exited task");
        assert!(matches!(
            task.signal(Signal::SIGUSR1),
            Err(DriverError::NotRunning { .. })
        ));
    }
    assert_eq!(hooks.of("a"), vec![Hook::Running, Hook::Exited(r)]);
}

#[test]
fn a_forced_kill_is_reported_once() {
    let mock = MockPlatform::new();
    mock.script("a", TaskScript::default().ignoring_kill_signal());
    let (d, hooks) = driver(&mock);
    let task = d.start(&spec("a")).expect("start");
    task.kill().expect("kill");
    task.kill().expect("kill again");
    assert_eq!(hooks.counts("a"), (1, 1));
}

#[test]
fn each_handle_of_a_reattached_task_gets_its_own_calls() {
    let mock = MockPlatform::new();
    let (d1, hooks) = driver(&mock);
    let first = d1.start(&spec("a")).expect("start");
    let id = first.id();
    drop((first, d1));
    // The agent restarts, with the same hooks registry.
    let d2 = Driver::new(mock.clone()).with_hooks(hooks.clone());
    let second = d2.open(&id).expect("open");
    assert_eq!(hooks.of("a"), vec![Hook::Running, Hook::Running]);
    second.kill().expect("kill");
    let r = second.wait().expect("result");
    assert_eq!(r.signal, Some(Signal::SIGINT));
    assert_eq!(
        hooks.of("a"),
        vec![Hook::Running, Hook::Running, Hook::Exited(r)]
    );
}

#[test]
fn a_reattach_that_finds_the_exit_record_only_reports_the_exit() {
    let mock = MockPlatform::new();
    mock.script(
        "a",
        TaskScript::exits_after(ms(10), Exit::Oom).supervisor_dies_after(ms(20)),
    );
    let (d, hooks) = driver(&mock);
    let id = d.start(&spec("a")).expect("start").id();
    mock.advance(ms(30));
    let task = d.open(&id).expect("open");
    let r = task.result().expect("exited");
    assert!(r.oom_killed);
    assert_eq!(hooks.of("a"), vec![Hook::Running, Hook::Exited(r)]);
    task.remove(false).expect("remove");
    assert!(mock.resources_of("a").is_empty());
    assert_eq!(hooks.of("a").len(), 2, "a removal calls no hook");
}

#[test]
fn a_failed_reattach_reports_the_failure_once() {
    let mock = MockPlatform::new();
    let (d, hooks) = driver(&mock);
    let id = d.start(&spec("a")).expect("start").id();
    mock.kill_supervisor_now("a");
    assert!(matches!(
        d.open(&id),
        Err(DriverError::ReattachFailed { .. })
    ));
    let calls = hooks.of("a");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(&calls[1], Hook::Exited(WaitResult { exit_code: -1, error: Some(e), .. }) if e.message.contains("no exit record"))
    );
    d.remove_task("a", false).expect("remove");
    assert!(mock.resources_of("a").is_empty());
}

#[test]
fn a_failed_start_calls_no_hook() {
    let mock = MockPlatform::new();
    mock.set_faults(
        "a",
        Faults {
            spawn_fails: true,
            ..Faults::default()
        },
    );
    let (d, hooks) = driver(&mock);
    assert!(d.start(&spec("a")).is_err());
    assert_eq!(hooks.counts("a"), (0, 0));
}

#[test]
fn concurrent_waiters_and_killers_see_one_result_and_one_call() {
    for round in 0..20u64 {
        let mock = MockPlatform::new();
        let mut script = TaskScript::exits_after(ms(10 + round), Exit::Code(0));
        script.on_kill_signal = SignalResponse::DieAfter(ms(round % 3));
        mock.script("a", script);
        let (d, hooks) = driver(&mock);
        let task = Arc::new(d.start(&spec("a")).expect("start"));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let task = Arc::clone(&task);
                thread::spawn(move || {
                    if i % 4 == 0 {
                        task.kill().expect("kill");
                    }
                    task.wait().expect("wait")
                })
            })
            .collect();
        let results: Vec<WaitResult> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let calls = hooks.of("a");
        assert_eq!(calls.len(), 2, "round {round}: {calls:?}");
        let Hook::Exited(delivered) = &calls[1] else {
            panic!("round {round}: {calls:?}");
        };
        assert!(results.iter().all(|r| r == delivered), "round {round}");
        task.remove(false).expect("remove");
        assert!(mock.all_resources().is_empty(), "round {round}");
    }
}

fn script() -> impl Strategy<Value = TaskScript> {
    (
        prop::option::of(0..2000u64),
        prop_oneof![
            Just(SignalResponse::Ignore),
            (0..2000u64).prop_map(|d| SignalResponse::DieAfter(ms(d)))
        ],
        prop::option::weighted(0.3, 0..2000u64),
        prop_oneof![
            Just(ForceKill::Works),
            Just(ForceKill::Fails),
            Just(ForceKill::Ineffective)
        ],
    )
        .prop_map(|(exit, on_kill, sup_dies, force_kill)| TaskScript {
            exit_after: exit.map(|d| (ms(d), Exit::Code(1))),
            on_kill_signal: on_kill,
            supervisor_dies_after: sup_dies.map(ms),
            force_kill,
            ..TaskScript::default()
        })
}

#[derive(Debug, Clone)]
enum Op {
    WaitTimeout(u64),
    Signal,
    Kill,
    Stats,
    Update(u64),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..1000u64).prop_map(Op::WaitTimeout),
        Just(Op::Signal),
        Just(Op::Kill),
        Just(Op::Stats),
        (0..60_000u64).prop_map(Op::Update),
        (0..1000u64).prop_map(Op::Advance),
    ]
}

proptest! {
    // 256 cases of up to 12 calls on one handle: the hooks are counted after each call.
    #![proptest_config(proptest_config!(256, "hooks.txt"))]

    #[test]
    fn hooks_run_once_per_handle_whatever_the_calls(s in script(), ops in prop::collection::vec(op(), 0..12)) {
        let mock = MockPlatform::new();
        mock.script("a", s);
        let (d, hooks) = driver(&mock);
        let task = d.start(&spec_with("a", Signal::SIGTERM, ms(500))).expect("start");
        for op in ops {
            match op {
                Op::WaitTimeout(t) => { let _ = task.wait_timeout(ms(t)); }
                Op::Signal => { let _ = task.signal(Signal::SIGUSR1); }
                Op::Kill => task.kill().expect("kill"),
                Op::Stats => { let _ = task.stats(); }
                Op::Update(t) => { task.update(ms(t)); }
                Op::Advance(t) => mock.advance(ms(t)),
            }
            let exited = usize::from(task.result().is_some());
            prop_assert_eq!(hooks.counts("a"), (1, exited));
        }
        task.kill().expect("kill");
        prop_assert_eq!(hooks.counts("a"), (1, 1));
        let Some(Hook::Exited(r)) = hooks.of("a").pop() else {
            return Err(TestCaseError::fail("no exit hook"));
        };
        prop_assert_eq!(task.wait(), Ok(r));
    }
}
