//! The Driver under real concurrency: a platform whose `wait` truly blocks (in real time, on
//! a condvar), so one thread can sit in `wait()` while others kill, signal and wait with
//! deadlines. The mock cannot show this: it never blocks and serialises every call.

#[allow(dead_code)]
mod support;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use execdriver_core::{
    Driver, ExitStatus, Fingerprint, FoundTask, HandleId, LogChunk, LogCursor, LogStream, Platform,
    PlatformError, ProcessIdentity, Reattach, Signal, Spawned, SupervisorIdentity, TaskRecord,
    TaskSpec, TaskStats, Timestamp,
};
use support::{Hook, Recorder, spec_with};

/// What the task and its supervisor do, shared by every thread.
#[derive(Debug, Default)]
struct World {
    exit: Option<ExitStatus>,
    /// The task ignores its kill signal; only a force kill ends it.
    stubborn: bool,
    /// Cleanup parks here until the test opens the gate.
    release_gate_open: bool,
    releases: u32,
    force_kills: u32,
    waits_in_flight: u32,
}

/// A platform whose task lives in real time.
#[derive(Debug)]
struct Blocking {
    world: Mutex<World>,
    changed: Condvar,
    epoch: Instant,
}

impl Blocking {
    fn new(stubborn: bool) -> Self {
        Self {
            world: Mutex::new(World {
                stubborn,
                release_gate_open: true,
                ..World::default()
            }),
            changed: Condvar::new(),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, f: impl FnOnce(&mut World)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Blocks until `pred` holds or `timeout` passes; true if it held.
    fn until(&self, timeout: Duration, pred: impl Fn(&World) -> bool) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |w| !pred(w))
            .unwrap_or_else(PoisonError::into_inner);
        pred(&guard)
    }
}

impl Platform for Blocking {
    type Supervisor = ();

    fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed())
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::default()
    }

    fn spawn(&self, spec: &TaskSpec) -> Result<Spawned<()>, PlatformError> {
        Ok(Spawned {
            supervisor: (),
            record: TaskRecord {
                task_id: spec.task_id.clone(),
                supervisor: SupervisorIdentity {
                    process: ProcessIdentity {
                        pid: 10,
                        start_time: 1,
                    },
                    socket: format!("/state/{}/supervisor.sock", spec.task_id).into(),
                },
                task: ProcessIdentity {
                    pid: 11,
                    start_time: 2,
                },
                cgroup: format!("execdriver-{}", spec.task_id),
                state_dir: format!("/state/{}", spec.task_id).into(),
                task_dir: spec.task_dir.clone(),
                alloc_dir: spec.alloc_dir.clone(),
                kill_timeout: spec.kill_timeout,
                kill_signal: spec.kill_signal,
            },
        })
    }

    fn task_ids(&self) -> Result<Vec<String>, PlatformError> {
        Ok(Vec::new())
    }

    fn find_task(&self, task_id: &str) -> Result<FoundTask, PlatformError> {
        Err(PlatformError::NotFound {
            task_id: task_id.to_owned(),
            reason: "not kept".into(),
        })
    }

    fn discard_incomplete(&self, _: &str, _: Timestamp) -> Result<(), PlatformError> {
        Ok(())
    }

    fn reattach(&self, _: &HandleId, _: Timestamp) -> Result<Reattach<()>, PlatformError> {
        Ok(Reattach::Live(()))
    }

    fn exec(
        &self,
        _: &(),
        _: &HandleId,
        _: execdriver_core::ExecRequest,
        _: Timestamp,
    ) -> Result<execdriver_core::ExecStarted, PlatformError> {
        Err(PlatformError::other("exec is not modelled here"))
    }

    fn begin_kill(
        &self,
        sup: &(),
        signal: Signal,
        _: Duration,
        deadline: Timestamp,
    ) -> Result<(), PlatformError> {
        self.signal(sup, signal, deadline)
    }

    fn read_logs(
        &self,
        _: &HandleId,
        _: Option<&()>,
        _: LogStream,
        cursor: LogCursor,
        _: usize,
    ) -> Result<LogChunk, PlatformError> {
        Ok(LogChunk {
            next: cursor,
            ..LogChunk::default()
        })
    }

    fn signal(&self, _: &(), signal: Signal, _: Timestamp) -> Result<(), PlatformError> {
        self.set(|w| {
            if !w.stubborn && w.exit.is_none() {
                w.exit = Some(ExitStatus::signaled(signal));
            }
        });
        Ok(())
    }

    fn wait(
        &self,
        _: &(),
        deadline: Option<Timestamp>,
    ) -> Result<Option<ExitStatus>, PlatformError> {
        self.set(|w| w.waits_in_flight += 1);
        let mut guard = self.lock();
        loop {
            if let Some(exit) = guard.exit {
                guard.waits_in_flight -= 1;
                return Ok(Some(exit));
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_since(self.now());
                    if left.is_zero() {
                        guard.waits_in_flight -= 1;
                        return Ok(None);
                    }
                    left
                }
                None => Duration::from_secs(3600),
            };
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn force_kill(&self, _: &(), _: Timestamp) -> Result<(), PlatformError> {
        self.set(|w| {
            w.force_kills += 1;
            if w.exit.is_none() {
                w.exit = Some(ExitStatus::signaled(Signal::SIGKILL));
            }
        });
        Ok(())
    }

    fn stats(&self, _: &(), _: Timestamp) -> Result<TaskStats, PlatformError> {
        Ok(TaskStats::default())
    }

    fn terminal(&self, _: &(), _: Timestamp) -> Result<std::os::fd::OwnedFd, PlatformError> {
        Err(PlatformError::other("no terminals here"))
    }

    fn release(&self, _: &(), _: Timestamp) -> Result<(), PlatformError> {
        let guard = self.lock();
        let mut guard = self
            .changed
            .wait_while(guard, |w| !w.release_gate_open)
            .unwrap_or_else(PoisonError::into_inner);
        guard.releases += 1;
        Ok(())
    }

    fn kill_supervisor(&self, _: &HandleId, _: Timestamp) -> Result<(), PlatformError> {
        Ok(())
    }

    fn kill_cgroup(&self, _: &HandleId, _: Timestamp) -> Result<(), PlatformError> {
        Ok(())
    }

    fn destroy_cgroup(&self, _: &HandleId, _: Timestamp) -> Result<(), PlatformError> {
        Ok(())
    }

    fn remove_state(&self, _: &HandleId) -> Result<(), PlatformError> {
        Ok(())
    }

    fn remove_task(&self, _: &HandleId, _: Timestamp) -> Result<(), PlatformError> {
        Ok(())
    }

    fn task_named(&self, _: &str) -> Result<Option<String>, PlatformError> {
        Ok(None)
    }

    fn details(&self, h: &HandleId) -> Result<execdriver_core::TaskDetails, PlatformError> {
        Err(PlatformError::NotFound {
            task_id: h.task_id.clone(),
            reason: "the blocking platform keeps no details".into(),
        })
    }
}

/// A driver over a `Blocking` platform (reached through `Driver::platform`), and a hook
/// recorder.
fn driver(platform: Blocking) -> (Driver<Blocking>, Arc<Recorder>) {
    let hooks = Arc::new(Recorder::default());
    let driver = Driver::new(platform).with_hooks(hooks.clone());
    (driver, hooks)
}

const GENEROUS: Duration = Duration::from_secs(20);

#[test]
fn a_kill_ends_a_wait_that_is_already_blocked() {
    let (driver, hooks) = driver(Blocking::new(false));
    let platform = driver.platform();
    let task = Arc::new(
        driver
            .start(&spec_with("t", Signal::SIGTERM, Duration::from_secs(5)))
            .expect("start"),
    );
    let waiter = {
        let task = Arc::clone(&task);
        thread::spawn(move || task.wait())
    };
    assert!(
        platform.until(GENEROUS, |w| w.waits_in_flight == 1),
        "the waiter never blocked in the platform"
    );
    task.kill().expect("kill");
    let waited = waiter.join().expect("waiter thread").expect("wait");
    assert_eq!(waited.signal, Some(Signal::SIGTERM));
    assert_eq!(task.wait(), Ok(waited.clone()));
    assert_eq!(platform.lock().releases, 1, "released once");
    assert_eq!(platform.lock().force_kills, 0);
    assert_eq!(hooks.of("t"), vec![Hook::Running, Hook::Exited(waited)]);
}

#[test]
fn many_threads_wait_kill_and_signal_one_stubborn_task() {
    let (driver, hooks) = driver(Blocking::new(true));
    let platform = driver.platform();
    let task = Arc::new(
        driver
            .start(&spec_with("t", Signal::SIGINT, Duration::from_millis(200)))
            .expect("start"),
    );
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let task = Arc::clone(&task);
            thread::spawn(move || match i % 4 {
                0 => task.wait().map(Some),
                1 => task.kill().map(|()| task.result()),
                2 => task.wait_timeout(Duration::from_millis(50)),
                _ => {
                    let _ = task.signal(Signal::SIGUSR1);
                    task.wait_timeout(GENEROUS)
                }
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread").expect("call"))
        .collect();
    assert!(
        started.elapsed() < Duration::from_millis(200) + Duration::from_secs(5),
        "the kill took {:?}",
        started.elapsed()
    );
    let result = task.result().expect("a result after every kill returned");
    assert_eq!(
        result.signal,
        Some(Signal::SIGKILL),
        "forced after the timeout"
    );
    for r in results.into_iter().flatten() {
        assert_eq!(r, result, "every caller sees the one result");
    }
    assert_eq!(platform.lock().releases, 1);
    assert_eq!(hooks.counts("t"), (1, 1));
}

#[test]
fn a_wait_during_another_threads_cleanup_gets_the_result_once_it_is_done() {
    let (driver, hooks) = driver(Blocking::new(false));
    let platform = driver.platform();
    platform.set(|w| w.release_gate_open = false);
    let task = Arc::new(
        driver
            .start(&spec_with("t", Signal::SIGTERM, Duration::from_secs(5)))
            .expect("start"),
    );
    platform.set(|w| w.exit = Some(ExitStatus::code(7)));
    // The first waiter sees the exit and parks in release (cleanup).
    let first = {
        let task = Arc::clone(&task);
        thread::spawn(move || task.wait())
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
        task.result().is_none(),
        "delivered before its cleanup finished"
    );
    let second = {
        let task = Arc::clone(&task);
        thread::spawn(move || task.wait_timeout(GENEROUS))
    };
    thread::sleep(Duration::from_millis(50));
    platform.set(|w| w.release_gate_open = true);
    let a = first.join().expect("first").expect("wait");
    let b = second
        .join()
        .expect("second")
        .expect("wait")
        .expect("result");
    assert_eq!(a.exit_code, 7);
    assert_eq!(a, b);
    assert_eq!(platform.lock().releases, 1);
    assert_eq!(hooks.counts("t"), (1, 1));
}
