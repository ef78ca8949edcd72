//! The Driver's rules for exec, over the mock: refused for an exited task and for a bad
//! request; the exec'd process is the task's, can be signalled alone, and ends with the task.

use std::time::Duration;

use execdriver_core::{
    Driver, DriverError, ExecRequest, ExitStatus, Operation, Signal, TaskConfig, TaskSpec,
};
use execdriver_mock::{Exit, MockPlatform, Resource, TaskScript};

fn spec(id: &str) -> TaskSpec {
    TaskSpec::new(
        id,
        "web",
        "/alloc",
        format!("/alloc/{id}"),
        TaskConfig::new("/bin/sleep", ["100"]),
    )
}

fn processes(mock: &MockPlatform, id: &str) -> usize {
    mock.resources_of(id)
        .iter()
        .filter(|r| matches!(r, Resource::Process { .. }))
        .count()
}

#[test]
fn exec_returns_the_command_exit_code() {
    let mock = MockPlatform::new();
    let driver = Driver::new(mock.clone());
    let task = driver.start(&spec("a")).expect("start");
    let started = task
        .exec(ExecRequest::new("exit", vec!["3".into()]))
        .expect("exec");
    let exit = started.session.wait(None).expect("wait").expect("exit");
    assert_eq!(exit.status, ExitStatus::code(3));
    assert!(started.pty.is_none());
}

#[test]
fn exec_process_is_in_the_task_and_dies_with_it() {
    let mock = MockPlatform::new();
    let driver = Driver::new(mock.clone());
    let task = driver.start(&spec("a")).expect("start");
    let before = processes(&mock, "a");
    let started = task
        .exec(ExecRequest::new("/bin/sleep", vec!["1000".into()]))
        .expect("exec");
    assert_eq!(processes(&mock, "a"), before + 1);
    let t0 = mock.time();
    assert_eq!(
        started
            .session
            .wait(Some(t0 + Duration::from_secs(1)))
            .expect("wait"),
        None
    );
    task.kill().expect("kill");
    let exit = started.session.wait(None).expect("wait").expect("exit");
    assert_eq!(exit.status, ExitStatus::signaled(Signal::SIGKILL));
    // The kept records go with the task's removal; nothing else of it may be left.
    task.remove(false).expect("remove");
    assert!(
        mock.resources_of("a").is_empty(),
        "{:?}",
        mock.resources_of("a")
    );
}

#[test]
fn exec_can_be_signalled_without_touching_the_task() {
    let mock = MockPlatform::new();
    let driver = Driver::new(mock.clone());
    let task = driver.start(&spec("a")).expect("start");
    let started = task
        .exec(ExecRequest::new("/bin/sleep", vec!["1000".into()]))
        .expect("exec");
    started.session.signal(Signal::SIGTERM).expect("signal");
    let exit = started.session.wait(None).expect("wait").expect("exit");
    assert_eq!(exit.status, ExitStatus::signaled(Signal::SIGTERM));
    assert!(mock.signals_of("a").is_empty());
    assert!(task.result().is_none());
}

#[test]
fn exec_into_an_exited_task_is_refused() {
    let mock = MockPlatform::new();
    mock.script(
        "a",
        TaskScript::exits_after(Duration::from_millis(10), Exit::Code(0)),
    );
    let driver = Driver::new(mock.clone());
    let task = driver.start(&spec("a")).expect("start");
    task.wait().expect("wait");
    let err = task
        .exec(ExecRequest::new("true", vec![]))
        .expect_err("refused");
    assert!(
        matches!(
            err,
            DriverError::NotRunning {
                op: Operation::Exec,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "cannot exec in task a: it has exited");
}

#[test]
fn exec_into_an_exited_task_reopened_by_handle_is_refused() {
    let mock = MockPlatform::new();
    mock.script(
        "a",
        TaskScript::exits_after(Duration::from_millis(10), Exit::Code(0)),
    );
    let driver = Driver::new(mock.clone());
    let id = driver.start(&spec("a")).expect("start").id();
    mock.advance(Duration::from_secs(1));
    let task = Driver::new(mock.clone()).open(&id).expect("open");
    let err = task
        .exec(ExecRequest::new("true", vec![]))
        .expect_err("refused");
    assert!(matches!(err, DriverError::NotRunning { .. }), "{err:?}");
}

#[test]
fn exec_works_from_a_reopened_handle() {
    let mock = MockPlatform::new();
    let driver = Driver::new(mock.clone());
    let id = driver.start(&spec("a")).expect("start").id();
    let task = Driver::new(mock.clone()).open(&id).expect("open");
    let started = task.exec(ExecRequest::new("true", vec![])).expect("exec");
    let exit = started.session.wait(None).expect("wait").expect("exit");
    assert_eq!(exit.status, ExitStatus::code(0));
}

#[test]
fn a_bad_request_is_refused_before_the_platform() {
    let mock = MockPlatform::new();
    let driver = Driver::new(mock.clone());
    let task = driver.start(&spec("a")).expect("start");
    let calls = mock.calls().len();
    for (request, needle) in [
        (ExecRequest::new(" ", vec![]), "no command"),
        (ExecRequest::new("a\0b", vec![]), "nul byte"),
        (
            ExecRequest {
                cwd: Some("tmp".into()),
                ..ExecRequest::new("true", vec![])
            },
            "absolute",
        ),
    ] {
        let err = task.exec(request).expect_err("refused");
        assert!(matches!(err, DriverError::ExecRefused { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert_eq!(mock.calls().len(), calls);
}
