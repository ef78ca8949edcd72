//! The reattach path: confine a handle id, connect, check the supervisor's hello, and when
//! it does not answer, settle what it is (exited, gone, or only unresponsive).

use std::path::Path;
use std::time::Instant;

use execdriver_core::{HandleId, PlatformError, Reattach, Refusal};

use super::client::{self, LogLocation, SupervisorConn, Unanswered};
use super::confine::confine;
use super::liveness::Liveness;
use crate::protocol::{Request, Response};

/// Reconnects to the handle's supervisor by `deadline`; changes nothing.
pub(crate) fn reattach(
    data_dir: &Path,
    handle: &HandleId,
    deadline: Instant,
) -> Result<Reattach<SupervisorConn>, PlatformError> {
    let confined = confine(data_dir, handle)?;
    let logs = super::read_spec(&confined.paths.spec())
        .ok()
        .map(|spec| LogLocation::of(&spec));
    let conn = SupervisorConn::new(
        handle.task_id.clone(),
        confined.paths,
        handle.supervisor.process,
        handle.task,
        logs,
    );
    match client::call(&conn, &Request::Hello, deadline) {
        Ok(Response::Hello(hello)) => {
            let mut mismatches = Vec::new();
            if hello.task_id != handle.task_id {
                mismatches.push(format!(
                    "task id {} (handle: {})",
                    hello.task_id, handle.task_id
                ));
            }
            if hello.supervisor != handle.supervisor.process {
                mismatches.push(format!(
                    "supervisor {:?} (handle: {:?})",
                    hello.supervisor, handle.supervisor.process
                ));
            }
            if hello.task != handle.task {
                mismatches.push(format!("task {:?} (handle: {:?})", hello.task, handle.task));
            }
            if mismatches.is_empty() {
                Ok(Reattach::Live(conn))
            } else {
                Err(PlatformError::refused(
                    Refusal::Reused,
                    format!(
                        "the supervisor at {} is not the one in the handle: {}",
                        handle.supervisor.socket.display(),
                        mismatches.join(", ")
                    ),
                ))
            }
        }
        Ok(other) => Err(PlatformError::refused(
            Refusal::NotSupervisor,
            format!(
                "the process at {} answered hello with {other:?}",
                handle.supervisor.socket.display()
            ),
        )),
        Err(Unanswered::Settled(Liveness::Exited(status))) => Ok(Reattach::Exited(status)),
        Err(Unanswered::Settled(Liveness::Gone(reason))) => Ok(Reattach::Gone { reason }),
        Err(Unanswered::Settled(Liveness::Unresponsive(reason))) => Ok(Reattach::Unresponsive {
            supervisor: conn,
            reason,
        }),
        Err(unanswered) => Err(unanswered.into_error(&handle.task_id)),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use execdriver_core::{
        ExitStatus, Platform, ProcessIdentity, Signal, SupervisorIdentity, TaskRecord, Timestamp,
    };

    use super::*;
    use crate::cgroups::cgroup_name;
    use crate::platform::{LinuxConfig, LinuxPlatform};
    use crate::state::{StatePaths, exit_record, write_task_record};

    struct Fixture {
        _data: tempfile::TempDir,
        platform: LinuxPlatform,
        handle: HandleId,
        record: TaskRecord,
    }

    fn fixture() -> Fixture {
        let data = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(data.path()).expect("canonical");
        let alloc = root.join("allocs/t1");
        fs::create_dir_all(alloc.join("web")).expect("mkdir");
        let paths = StatePaths::new(&root, "t1");
        fs::create_dir_all(&paths.dir).expect("mkdir");
        let record = TaskRecord {
            task_id: "t1".into(),
            supervisor: SupervisorIdentity {
                process: ProcessIdentity {
                    pid: 999_999,
                    start_time: 1,
                },
                socket: paths.socket(),
            },
            task: ProcessIdentity {
                pid: 999_998,
                start_time: 2,
            },
            cgroup: cgroup_name("t1"),
            state_dir: paths.dir.clone(),
            task_dir: alloc.join("web"),
            alloc_dir: alloc,
            kill_timeout: Duration::from_millis(100),
            kill_signal: Signal::SIGINT,
        };
        write_task_record(&paths.task_record(), &record).expect("record");
        Fixture {
            platform: LinuxPlatform::new(LinuxConfig::new(data.path())),
            _data: data,
            handle: HandleId::new(&record, Duration::from_secs(1)),
            record,
        }
    }

    fn far() -> Timestamp {
        Timestamp(Duration::from_secs(1 << 20))
    }

    fn assert_refused(f: &Fixture, h: &HandleId, needle: &str) {
        match f.platform.reattach(h, far()) {
            Err(PlatformError::Refused { reason, .. }) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("expected a refusal mentioning {needle}, got {other:?}"),
        }
    }

    #[test]
    fn own_handle_passes_confinement() {
        let f = fixture();
        // No supervisor and no record: gone, which the driver turns into a cleanup.
        assert!(matches!(
            f.platform.reattach(&f.handle, far()),
            Ok(Reattach::Gone { .. })
        ));
    }

    #[test]
    fn exit_record_is_found() {
        let f = fixture();
        let status = ExitStatus::code(7);
        let record = exit_record::ExitRecord {
            status,
            supervisor: f.handle.supervisor.process,
            task: f.handle.task,
        };
        let path = StatePaths::at(&f.handle.state_dir).exit_record();
        exit_record::write(&path, &record).expect("write");
        assert!(matches!(
            f.platform.reattach(&f.handle, far()),
            Ok(Reattach::Exited(s)) if s == status
        ));
        // The record of a later task that reused the id is not this handle's to take.
        let mut reused = record;
        reused.task.start_time += 1;
        exit_record::write(&path, &reused).expect("write");
        assert_refused(&f, &f.handle, "reused");
        assert!(path.exists(), "a refused record is left alone");
    }

    #[test]
    fn a_handle_of_an_earlier_task_with_the_same_id_is_refused_everywhere() {
        let f = fixture();
        let mut stale = f.handle.clone();
        stale.task.start_time += 5;
        assert_refused(&f, &stale, "reused");
        let deadline = far();
        for result in [
            f.platform.kill_cgroup(&stale, deadline),
            f.platform.destroy_cgroup(&stale, deadline),
            f.platform.remove_state(&stale),
            f.platform.kill_supervisor(&stale, deadline),
        ] {
            match result {
                Err(PlatformError::Refused { kind, .. }) => assert_eq!(kind, Refusal::Reused),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(
            f.handle.state_dir.exists(),
            "nothing of the new task was touched"
        );
    }

    #[test]
    fn forged_task_and_alloc_dirs_are_refused() {
        let f = fixture();
        let mut h = f.handle.clone();
        h.task_dir = "/etc".into();
        assert_refused(&f, &h, "task dir");
        let mut h = f.handle.clone();
        h.alloc_dir = f.record.alloc_dir.join("other");
        assert_refused(&f, &h, "alloc dir");
    }

    #[test]
    fn calls_to_a_socket_served_by_another_process_are_refused() {
        let f = fixture();
        let paths = StatePaths::at(&f.handle.state_dir);
        // Served by this test process: neither the handle's supervisor pid nor its start time.
        let _listener = std::os::unix::net::UnixListener::bind(paths.socket()).expect("bind");
        let conn = SupervisorConn::new(
            f.handle.task_id.clone(),
            paths.clone(),
            f.handle.supervisor.process,
            f.handle.task,
            None,
        );
        match f.platform.signal(&conn, Signal::SIGTERM, far()) {
            Err(PlatformError::Refused { reason, .. }) => {
                assert!(reason.contains("reused"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let me = crate::process::identity(i32::try_from(std::process::id()).expect("pid"))
            .expect("own identity");
        let stale = ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        let conn = SupervisorConn::new(f.handle.task_id.clone(), paths, stale, f.handle.task, None);
        match f.platform.stats(&conn, far()) {
            Err(PlatformError::Refused { reason, .. }) => {
                assert!(reason.contains("reused"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn missing_state_dir_is_refused_and_touches_nothing() {
        let f = fixture();
        fs::remove_dir_all(&f.handle.state_dir).expect("rmdir");
        assert_refused(&f, &f.handle, "already collected");
        // The cleanup steps accept it (nothing to do) and create nothing.
        assert_eq!(f.platform.destroy_cgroup(&f.handle, far()), Ok(()));
        assert!(!f.handle.state_dir.exists());
    }

    #[test]
    fn missing_alloc_dir_does_not_block_a_reattach() {
        let f = fixture();
        fs::remove_dir_all(&f.handle.alloc_dir).expect("rm alloc");
        assert!(matches!(
            f.platform.reattach(&f.handle, far()),
            Ok(Reattach::Gone { .. })
        ));
    }

    #[test]
    fn forged_paths_are_refused() {
        let f = fixture();
        let mut h = f.handle.clone();
        h.state_dir = "/etc".into();
        assert_refused(&f, &h, "state dir");
        let mut h = f.handle.clone();
        h.supervisor.socket = "/run/other.sock".into();
        assert_refused(&f, &h, "socket");
        let mut h = f.handle.clone();
        h.cgroup = "system.slice".into();
        assert_refused(&f, &h, "cgroup");
        let mut h = f.handle.clone();
        h.task_id = "t2".into();
        assert_refused(&f, &h, "state dir");
    }

    #[test]
    fn symlinked_state_dir_is_refused() {
        let f = fixture();
        let target = tempfile::tempdir().expect("tempdir");
        fs::remove_dir_all(&f.handle.state_dir).expect("rmdir");
        std::os::unix::fs::symlink(target.path(), &f.handle.state_dir).expect("symlink");
        assert_refused(&f, &f.handle, "not a plain directory");
    }
}
