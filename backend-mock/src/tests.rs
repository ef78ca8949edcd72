//! The mock's own contract: the virtual clock, resources, faults, and confinement.

use std::time::Duration;

use execdriver_core::{
    Driver, ExitStatus, HandleId, Platform, PlatformError, Reattach, Signal, TaskConfig, TaskSpec,
    Timestamp,
};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Timestamp {
    Timestamp(ms(n))
}

fn spec(id: &str) -> TaskSpec {
    TaskSpec::new(
        id,
        "web",
        "/alloc",
        format!("/alloc/{id}"),
        TaskConfig::new("/bin/sleep", ["100"]),
    )
}

fn handle_of(spawned: &Spawned<MockSupervisorHandle>, id: &str) -> HandleId {
    assert_eq!(spawned.record.task_id, id);
    HandleId::new(&spawned.record, Duration::from_secs(30))
}

/// A deadline no test call reaches.
fn far() -> Timestamp {
    Timestamp(Duration::from_secs(1 << 30))
}

#[test]
fn spawn_records_every_resource() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::default().with_children(2));
    let s = p.spawn(&spec("a")).expect("spawn");
    let r = p.resources_of("a");
    let count = |f: fn(&Resource) -> bool| r.iter().filter(|x| f(x)).count();
    assert_eq!(count(|x| matches!(x, Resource::Supervisor { .. })), 1);
    assert_eq!(count(|x| matches!(x, Resource::Process { .. })), 3);
    assert_eq!(count(|x| matches!(x, Resource::Cgroup(_))), 1);
    assert_eq!(count(|x| matches!(x, Resource::StateDir(_))), 1);
    // The default chroot env plus proc, dev, alloc and secrets.
    assert_eq!(count(|x| matches!(x, Resource::Mount(_))), 8 + 4);
    assert_eq!(s.record.cgroup, "execdriver-a");
    assert_eq!(s.record.state_dir, state_dir("a"));
    assert!(p.resources_of("b").is_empty());
}

#[test]
fn failed_spawn_leaves_nothing() {
    let p = MockPlatform::new();
    p.set_faults(
        "a",
        Faults {
            spawn_fails: true,
            ..Faults::default()
        },
    );
    assert!(p.spawn(&spec("a")).is_err());
    assert!(p.all_resources().is_empty());
    // A second spawn of a live task id is refused without touching the first.
    p.set_faults("a", Faults::default());
    p.spawn(&spec("a")).expect("spawn");
    let before = p.all_resources();
    let err = p.spawn(&spec("a")).expect_err("duplicate");
    assert!(err.to_string().contains("execdriver-a"), "{err}");
    assert_eq!(p.all_resources(), before);
}

#[test]
fn wait_moves_the_clock_to_the_deadline_or_the_exit() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::exits_after(ms(300), Exit::Code(3)));
    let s = p.spawn(&spec("a")).expect("spawn");
    assert_eq!(p.wait(&s.supervisor, Some(at(100))), Ok(None));
    assert_eq!(p.now(), at(100));
    // A deadline in the past does not move the clock back.
    assert_eq!(p.wait(&s.supervisor, Some(at(50))), Ok(None));
    assert_eq!(p.now(), at(100));
    assert_eq!(
        p.wait(&s.supervisor, Some(at(1000))),
        Ok(Some(ExitStatus::code(3)))
    );
    assert_eq!(p.now(), at(300));
    assert!(
        p.resources_of("a")
            .iter()
            .all(|r| !matches!(r, Resource::Process { .. } | Resource::Mount(_)))
    );
    p.release(&s.supervisor, far()).expect("release");
    // The records stay until the task is removed.
    let left = p.resources_of("a");
    assert!(
        left.iter().all(|r| matches!(r, Resource::StateDir(_))),
        "{left:?}"
    );
    p.remove_task(&handle_of(&s, "a"), far()).expect("remove");
    assert!(p.resources_of("a").is_empty());
}

#[test]
fn wait_forever_on_an_endless_task_is_an_error_not_a_hang() {
    let p = MockPlatform::new();
    let s = p.spawn(&spec("a")).expect("spawn");
    let err = p.wait(&s.supervisor, None).expect_err("would block");
    assert!(err.to_string().contains("block forever"), "{err}");
    p.script("b", TaskScript::exits_after(ms(7), Exit::Oom));
    let s = p.spawn(&spec("b")).expect("spawn");
    let status = p.wait(&s.supervisor, None).expect("exits").expect("status");
    assert!(status.oom_killed);
    assert_eq!(p.now(), at(7));
}

#[test]
fn signals_follow_the_script() {
    let p = MockPlatform::new();
    let script = TaskScript {
        on_kill_signal: SignalResponse::ExitAfter(ms(40), 0),
        ..TaskScript::default()
    };
    p.script("a", script);
    let s = p.spawn(&spec("a")).expect("spawn");
    p.signal(&s.supervisor, Signal::SIGUSR1, far())
        .expect("signal");
    assert_eq!(p.wait(&s.supervisor, Some(at(10))), Ok(None));
    p.signal(&s.supervisor, Signal::SIGINT, far())
        .expect("signal");
    assert_eq!(
        p.wait(&s.supervisor, Some(at(1000))),
        Ok(Some(ExitStatus::code(0)))
    );
    assert_eq!(p.now(), at(50));
    assert_eq!(
        p.signals_of("a"),
        vec![(at(0), Signal::SIGUSR1), (at(10), Signal::SIGINT)]
    );

    p.script("b", TaskScript::default().ignoring_kill_signal());
    let s = p.spawn(&spec("b")).expect("spawn");
    p.signal(&s.supervisor, Signal::SIGINT, far())
        .expect("signal");
    assert_eq!(p.wait(&s.supervisor, Some(at(500))), Ok(None));
    p.force_kill(&s.supervisor, far()).expect("force kill");
    assert_eq!(
        p.wait(&s.supervisor, Some(at(500))),
        Ok(Some(ExitStatus::signaled(Signal::SIGKILL)))
    );
}

#[test]
fn a_dead_supervisor_keeps_the_exit_it_recorded() {
    let p = MockPlatform::new();
    p.script(
        "a",
        TaskScript::exits_after(ms(10), Exit::Code(1)).supervisor_dies_after(ms(20)),
    );
    let s = p.spawn(&spec("a")).expect("spawn");
    let h = handle_of(&s, "a");
    p.advance(ms(30));
    assert!(!p.supervisor_alive("a"));
    assert_eq!(p.wait(&s.supervisor, None), Ok(Some(ExitStatus::code(1))));
    assert!(matches!(
        p.reattach(&h, far()),
        Ok(Reattach::Exited(status)) if status == ExitStatus::code(1)
    ));
    assert!(matches!(
        p.release(&s.supervisor, far()),
        Err(PlatformError::SupervisorGone { .. })
    ));
}

#[test]
fn a_supervisor_that_dies_first_leaves_an_orphan() {
    let p = MockPlatform::new();
    p.script(
        "a",
        TaskScript::exits_after(ms(20), Exit::Code(0)).supervisor_dies_after(ms(10)),
    );
    let s = p.spawn(&spec("a")).expect("spawn");
    let h = handle_of(&s, "a");
    assert!(matches!(
        p.wait(&s.supervisor, None),
        Err(PlatformError::SupervisorGone { .. })
    ));
    assert_eq!(p.now(), at(10));
    assert!(matches!(p.reattach(&h, far()), Ok(Reattach::Gone { .. })));
    // The task still runs in its cgroup: destroying the cgroup first fails like rmdir would.
    assert!(p.destroy_cgroup(&h, far()).is_err());
    p.kill_supervisor(&h, far()).expect("nothing to kill");
    p.kill_cgroup(&h, far()).expect("kill cgroup");
    p.destroy_cgroup(&h, far()).expect("destroy");
    p.remove_state(&h).expect("remove");
    assert!(p.resources_of("a").is_empty());
    // The steps are idempotent.
    p.kill_cgroup(&h, far()).expect("again");
    p.destroy_cgroup(&h, far()).expect("again");
    p.remove_state(&h).expect("again");
}

#[test]
fn orphan_steps_act_by_address_and_refuse_foreign_addresses() {
    let p = MockPlatform::new();
    let a = p.spawn(&spec("a")).expect("spawn");
    let b = p.spawn(&spec("b")).expect("spawn");
    let ha = handle_of(&a, "a");
    let before_b = p.resources_of("b");
    let mut forged = ha.clone();
    forged.cgroup = b.record.cgroup.clone();
    for r in [
        p.kill_cgroup(&forged, far()),
        p.destroy_cgroup(&forged, far()),
        p.remove_state(&forged),
        p.kill_supervisor(&forged, far()),
    ] {
        assert!(matches!(r, Err(PlatformError::Refused { .. })), "{r:?}");
    }
    assert!(matches!(
        p.reattach(&forged, far()),
        Err(PlatformError::Refused { .. })
    ));
    // A supervisor identity with the wrong start time is not the recorded process.
    let mut stale = ha.clone();
    stale.supervisor.process.start_time += 100;
    p.kill_supervisor(&stale, far()).expect("nothing to do");
    assert!(p.supervisor_alive("a"));
    p.kill_supervisor(&ha, far()).expect("kill supervisor");
    p.kill_cgroup(&ha, far()).expect("kill cgroup");
    p.destroy_cgroup(&ha, far()).expect("destroy cgroup");
    p.remove_state(&ha).expect("remove state");
    assert!(p.resources_of("a").is_empty());
    assert_eq!(p.resources_of("b"), before_b);
    assert!(p.removals().iter().all(|r| r.owner == "a"));
    let _ = b;
}

#[test]
fn faults_fail_the_step_and_touch_nothing() {
    let p = MockPlatform::new();
    let a = p.spawn(&spec("a")).expect("spawn");
    let h = handle_of(&a, "a");
    p.set_faults(
        "a",
        Faults {
            kill_supervisor_fails: true,
            kill_cgroup_fails: true,
            destroy_cgroup_fails: true,
            remove_state_fails: true,
            release_fails: true,
            signal_fails: true,
            stats_fails: true,
            ..Faults::default()
        },
    );
    let before = p.all_resources();
    assert!(p.kill_supervisor(&h, far()).is_err());
    assert!(p.kill_cgroup(&h, far()).is_err());
    assert!(p.destroy_cgroup(&h, far()).is_err());
    assert!(p.remove_state(&h).is_err());
    assert!(p.release(&a.supervisor, far()).is_err());
    assert!(p.signal(&a.supervisor, Signal::SIGKILL, far()).is_err());
    assert!(p.stats(&a.supervisor, far()).is_err());
    assert_eq!(p.all_resources(), before);
    p.set_faults(
        "a",
        Faults {
            reattach: ReattachFault::Unreachable,
            ..Faults::default()
        },
    );
    assert!(matches!(p.reattach(&h, far()), Ok(Reattach::Gone { .. })));
    p.set_faults(
        "a",
        Faults {
            reattach: ReattachFault::Refused,
            ..Faults::default()
        },
    );
    assert!(matches!(
        p.reattach(&h, far()),
        Err(PlatformError::Refused { .. })
    ));
    p.set_faults("a", Faults::default());
    assert!(matches!(p.reattach(&h, far()), Ok(Reattach::Live(_))));
    assert_eq!(p.stats(&a.supervisor, far()).map(|s| s.pids), Ok(1));
}

#[test]
fn force_kill_scripts() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::default().with_force_kill(ForceKill::Fails));
    p.script(
        "b",
        TaskScript::default().with_force_kill(ForceKill::Ineffective),
    );
    let a = p.spawn(&spec("a")).expect("spawn");
    let b = p.spawn(&spec("b")).expect("spawn");
    assert!(p.force_kill(&a.supervisor, far()).is_err());
    p.force_kill(&b.supervisor, far()).expect("reports success");
    assert_eq!(p.exit_of("a"), None);
    assert_eq!(p.exit_of("b"), None);
}

#[test]
fn a_driver_over_the_mock_kills_within_the_timeout() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::default().ignoring_kill_signal());
    let d = Driver::new(p.clone());
    let task = d.start(&spec("a")).expect("start");
    task.kill().expect("kill");
    let r = task.wait().expect("result");
    assert_eq!(r.signal, Some(Signal::SIGKILL));
    assert_eq!(
        p.now(),
        Timestamp(execdriver_core::spec::DEFAULT_KILL_TIMEOUT)
    );
    task.remove(false).expect("remove");
    assert!(p.all_resources().is_empty(), "{:?}", p.all_resources());
    let ops: Vec<Op> = p.calls().iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        vec![
            Op::Spawn,
            Op::BeginKill,
            Op::Wait,
            Op::ForceKill,
            Op::Wait,
            Op::Release,
            Op::RemoveTask
        ]
    );
}

#[test]
fn a_failing_wait_does_not_move_the_clock() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::exits_after(ms(10), Exit::Code(0)));
    let s = p.spawn(&spec("a")).expect("spawn");
    p.set_faults(
        "a",
        Faults {
            wait_fails: true,
            ..Faults::default()
        },
    );
    assert!(matches!(
        p.wait(&s.supervisor, None),
        Err(PlatformError::Other { .. })
    ));
    assert_eq!(p.now(), at(0));
}

#[test]
fn a_handle_naming_another_tasks_supervisor_cannot_kill_it() {
    let p = MockPlatform::new();
    let a = p.spawn(&spec("a")).expect("spawn a");
    let b = p.spawn(&spec("b")).expect("spawn b");
    let mut forged = handle_of(&a, "a");
    forged.supervisor = b.record.supervisor.clone();
    let before = p.resources_of("b");
    assert!(matches!(
        p.kill_supervisor(&forged, far()),
        Err(PlatformError::Refused { .. })
    ));
    assert_eq!(p.resources_of("b"), before);
}

/// The agent dies right after the kill signal: the supervisor's backup kill still ends a
/// task that ignores the signal, just after the deadline, and a new agent collects it.
#[test]
fn a_kill_scheduled_before_the_agent_died_still_lands() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::default().ignoring_kill_signal());
    let id = {
        let d = Driver::new(p.clone());
        let task = d.start(&spec("a")).expect("start");
        let Ok(Reattach::Live(sup)) = p.reattach(&task.handle_id(), far()) else {
            panic!("live supervisor expected");
        };
        p.begin_kill(&sup, Signal::SIGINT, ms(1000), far())
            .expect("begin kill");
        task.id()
    };
    let d = Driver::new(p.clone());
    let task = d.open(&id).expect("reopen");
    let r = task
        .wait_timeout(ms(2000))
        .expect("wait")
        .expect("the backup kill ended the task");
    assert_eq!(r.signal, Some(Signal::SIGKILL));
    assert!(p.time() <= at(1001), "killed at {:?}", p.time());
}

/// Without the backup, the same task outlives its dead agent's deadline.
#[test]
fn without_the_backup_an_ignored_kill_signal_leaves_the_task_running() {
    let p = MockPlatform::new();
    p.script("a", TaskScript::default().ignoring_kill_signal());
    let d = Driver::new(p.clone());
    let task = d.start(&spec("a")).expect("start");
    let Ok(Reattach::Live(sup)) = p.reattach(&task.handle_id(), far()) else {
        panic!("live supervisor expected");
    };
    p.signal(&sup, Signal::SIGINT, far()).expect("signal");
    assert_eq!(task.wait_timeout(ms(2000)), Ok(None));
}

#[test]
fn a_hung_supervisor_takes_every_call_to_its_deadline() {
    let p = MockPlatform::new();
    let s = p.spawn(&spec("a")).expect("spawn");
    let h = handle_of(&s, "a");
    p.set_faults(
        "a",
        Faults {
            hung: true,
            ..Faults::default()
        },
    );
    let r = p.signal(&s.supervisor, Signal::SIGINT, at(100));
    assert!(
        matches!(r, Err(PlatformError::Unresponsive { .. })),
        "{r:?}"
    );
    assert_eq!(p.now(), at(100));
    assert!(matches!(
        p.wait(&s.supervisor, Some(at(300))),
        Err(PlatformError::Unresponsive { .. })
    ));
    assert_eq!(p.now(), at(300));
    assert!(matches!(
        p.reattach(&h, at(400)),
        Ok(Reattach::Unresponsive { .. })
    ));
    assert!(p.signals_of("a").is_empty(), "nothing reached the task");
    // SIGKILL still ends it; the task then dies with its cgroup.
    p.kill_supervisor(&h, far()).expect("kill supervisor");
    p.kill_cgroup(&h, far()).expect("kill cgroup");
    p.destroy_cgroup(&h, far()).expect("destroy");
    p.remove_state(&h).expect("remove");
    assert!(p.all_resources().is_empty());
}

#[test]
fn latency_is_spent_and_a_call_that_does_not_fit_is_unresponsive() {
    let p = MockPlatform::new();
    let s = p.spawn(&spec("a")).expect("spawn");
    p.set_faults(
        "a",
        Faults {
            latency: ms(40),
            ..Faults::default()
        },
    );
    p.stats(&s.supervisor, at(100)).expect("fits");
    assert_eq!(p.now(), at(40));
    assert!(matches!(
        p.stats(&s.supervisor, at(60)),
        Err(PlatformError::Unresponsive { .. })
    ));
    assert_eq!(p.now(), at(60));
}
