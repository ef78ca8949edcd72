//! A task lives until it is removed, over the mock: collecting its exit keeps its records,
//! so the result is answered again from a new driver; removal refuses a running task unless
//! forced (then kills it through the one kill path) and leaves nothing; unique names.

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use execdriver_core::{Driver, DriverError, PlatformError, SpawnStep};
use execdriver_mock::{Exit, MockPlatform, Op, Resource, TaskScript};
use support::{Hook, Recorder, spec};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn driver(mock: &MockPlatform) -> (Driver<MockPlatform>, Arc<Recorder>) {
    let hooks = Arc::new(Recorder::default());
    (Driver::new(mock.clone()).with_hooks(hooks.clone()), hooks)
}

#[test]
fn a_collected_exit_is_answered_again_until_the_task_is_removed() {
    let mock = MockPlatform::new();
    mock.script("a", TaskScript::exits_after(ms(10), Exit::Code(3)));
    let (d, hooks) = driver(&mock);
    let task = d.start(&spec("a")).expect("start");
    let result = task.wait().expect("wait");
    assert_eq!(result.exit_code, 3);
    // Only the records are left: no process, cgroup or mount.
    let left = mock.resources_of("a");
    assert!(
        !left.is_empty() && left.iter().all(|r| matches!(r, Resource::StateDir(_))),
        "{left:?}"
    );
    // A new driver (another process) gets the same answer, as often as it asks.
    for _ in 0..2 {
        let (again, _) = driver(&mock);
        let reopened = again.open_task("a").expect("open");
        assert_eq!(reopened.wait().expect("wait"), result);
    }
    let hooks_before = hooks.of("a");
    assert_eq!(d.remove_task("a", false).expect("remove"), Some(result));
    assert!(mock.resources_of("a").is_empty());
    assert_eq!(hooks.of("a"), hooks_before, "a removal is not a second end");
    assert!(matches!(
        d.remove_task("a", false),
        Err(DriverError::NotFound { .. })
    ));
}

#[test]
fn removing_a_running_task_needs_force_which_kills_it_first() {
    let mock = MockPlatform::new();
    let (d, _) = driver(&mock);
    let task = d.start(&spec("a")).expect("start");
    match task.remove(false) {
        Err(DriverError::StillRunning { task_id }) => assert_eq!(task_id, "a"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        d.remove_task("a", false),
        Err(DriverError::StillRunning { .. })
    ));
    assert!(
        mock.exit_of("a").is_none(),
        "a refused removal touches nothing"
    );
    let (other, hooks) = driver(&mock);
    let result = other.remove_task("a", true).expect("forced removal");
    let result = result.expect("the killed task's result");
    assert!(result.signal.is_some(), "{result:?}");
    assert!(mock.resources_of("a").is_empty());
    let ops: Vec<Op> = mock.calls().iter().map(|c| c.op).collect();
    assert!(
        ops.contains(&Op::BeginKill),
        "killed by the kill path: {ops:?}"
    );
    assert_eq!(ops.last(), Some(&Op::RemoveTask), "{ops:?}");
    // The forced removal's kill is the task's end: reported, once, with its result.
    assert_eq!(hooks.of("a"), vec![Hook::Running, Hook::Exited(result)]);
}

#[test]
fn a_name_is_held_until_its_task_is_removed() {
    let mock = MockPlatform::new();
    mock.script("a", TaskScript::exits_after(ms(10), Exit::Code(0)));
    let (d, _) = driver(&mock);
    let mut first = spec("a");
    first.name = Some("web".into());
    d.start(&first).expect("start").wait().expect("wait");
    assert_eq!(d.resolve("web").expect("by name"), "a");
    assert_eq!(d.resolve("a").expect("by id"), "a");
    let mut second = spec("b");
    second.name = Some("web".into());
    match d.start(&second) {
        Err(DriverError::Spawn {
            source: PlatformError::Spawn { step, reason },
            ..
        }) => {
            assert_eq!(step, SpawnStep::Name);
            assert!(reason.contains("task a"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(mock.resources_of("b").is_empty());
    d.remove_task("a", false).expect("remove");
    assert!(matches!(
        d.resolve("web"),
        Err(DriverError::NotFound { .. })
    ));
    let b = d.start(&second).expect("the name is free again");
    assert_eq!(d.resolve("web").expect("by name"), "b");
    b.remove(true).expect("remove");
}
