//! The reattach path: confine a handle id, connect, verify the supervisor's hello, fall back
//! to the exit record.
//!
//! A handle id comes from outside (an agent's state store) and may be forged or corrupt. Before
//! anything is touched, every path in it must be exactly what this platform would have
//! written for its task id, and its cgroup exactly that task's cgroup name. A supervisor that
//! answers must then confirm the whole identity (task id, its own pid and start time, the
//! task's pid and start time). Anything else is [`PlatformError::Refused`]: nothing signalled,
//! nothing removed.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use execdriver_core::{HandleId, PlatformError, Reattach};

use crate::cgroups::cgroup_name;
use crate::platform::{LinuxPlatform, Settled, SupervisorConn, settle_unreachable};
use crate::state::StatePaths;
use crate::supervisor::protocol::{Client, Request, Response};

/// How long a supervisor has to answer `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What confinement established about a handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confined {
    /// The task's state dir, as this platform lays it out.
    pub paths: StatePaths,
    /// The task's cgroup name.
    pub cgroup: String,
}

fn refused(why: String) -> PlatformError {
    PlatformError::Refused(why)
}

/// Checks the handle's state dir, socket and cgroup against what this platform derives from
/// its task id; used before any cleanup step touches anything.
pub(crate) fn confine_state(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<Confined, PlatformError> {
    handle
        .validate()
        .map_err(|e| refused(format!("invalid handle id: {e}")))?;
    let data = platform.data_dir().map_err(|e| {
        refused(format!(
            "the handle's task cannot be ours: the {e} is not accessible"
        ))
    })?;
    let paths = StatePaths::new(&data, &handle.task_id);
    if handle.state_dir != paths.dir {
        return Err(refused(format!(
            "state dir {} is not {}, the state dir of task {} in this driver's data dir",
            handle.state_dir.display(),
            paths.dir.display(),
            handle.task_id
        )));
    }
    match fs::symlink_metadata(&paths.dir) {
        Ok(meta) => {
            // The lexical check above is not enough if a component is a symlink.
            let real = fs::canonicalize(&paths.dir).map_err(|e| {
                refused(format!(
                    "state dir {} cannot be resolved: {e}",
                    paths.dir.display()
                ))
            })?;
            if !meta.is_dir() || real != paths.dir {
                return Err(refused(format!(
                    "state dir {} is not a plain directory in the data dir (resolves to {})",
                    paths.dir.display(),
                    real.display()
                )));
            }
        }
        // Absent is fine for the cleanup steps: each one touches only what the state dir
        // proves is ours, and with no state dir that is nothing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(refused(format!(
                "state dir {} cannot be inspected: {e}",
                paths.dir.display()
            )));
        }
    }
    if handle.supervisor.socket != paths.socket() {
        return Err(refused(format!(
            "supervisor socket {} is not {}",
            handle.supervisor.socket.display(),
            paths.socket().display()
        )));
    }
    let cgroup = cgroup_name(&handle.task_id);
    if handle.cgroup != cgroup {
        return Err(refused(format!(
            "cgroup {:?} is not {cgroup:?}, the cgroup of task {} under this driver's parent",
            handle.cgroup, handle.task_id
        )));
    }
    Ok(Confined { paths, cgroup })
}

/// [`confine_state`], plus the state dir must exist: it is the proof that this data dir
/// started the task, and without it there is nothing to reattach to or clean up.
///
/// A missing state dir is a refusal rather than a lost task: "lost" would send the driver
/// to kill a cgroup by a name that may now belong to a task of another data dir sharing the
/// parent, and would tell the user the task was lost when it was most likely collected.
pub(crate) fn confine(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<Confined, PlatformError> {
    let confined = confine_state(platform, handle)?;
    if !confined.paths.dir.is_dir() {
        let data = confined.paths.dir.parent().and_then(Path::parent);
        return Err(refused(format!(
            "task {} has no state in {}: it was already collected, or never started here; \
             nothing was touched",
            handle.task_id,
            data.unwrap_or(&confined.paths.dir).display()
        )));
    }
    Ok(confined)
}

/// The reattach itself: see the module doc.
pub(crate) fn reattach(
    platform: &LinuxPlatform,
    handle: &HandleId,
) -> Result<Reattach<SupervisorConn>, PlatformError> {
    let confined = confine(platform, handle)?;
    let socket = confined.paths.socket();
    let error = match Client::connect(&socket) {
        Ok(mut client) => match client.call(&Request::Hello, Some(HELLO_TIMEOUT)) {
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
                if !mismatches.is_empty() {
                    return Err(refused(format!(
                        "the supervisor at {} is not the one in the handle: {}",
                        socket.display(),
                        mismatches.join(", ")
                    )));
                }
                return Ok(Reattach::Live(SupervisorConn::new(
                    handle.task_id.clone(),
                    confined.paths,
                    hello.supervisor,
                    hello.task,
                )));
            }
            Ok(other) => {
                return Err(refused(format!(
                    "the process at {} answered hello with {other:?}",
                    socket.display()
                )));
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    if !error.may_be_gone() {
        return Err(PlatformError::Failed(format!(
            "supervisor of task {} at {}: {error}",
            handle.task_id,
            socket.display()
        )));
    }
    match settle_unreachable(
        &handle.task_id,
        &handle.supervisor.process,
        &handle.task,
        &confined.paths,
        &error,
    ) {
        Settled::Exited(status) => Ok(Reattach::Exited(status)),
        Settled::Dead(reason) => Ok(Reattach::Gone { reason }),
        Settled::Alive(why) => Err(PlatformError::Failed(why)),
        Settled::NotOurs(why) => Err(refused(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::LinuxConfig;
    use crate::supervisor::exit_record;
    use execdriver_core::{ProcessIdentity, Signal, SupervisorIdentity};

    struct Fixture {
        _data: tempfile::TempDir,
        platform: LinuxPlatform,
        handle: HandleId,
    }

    fn fixture() -> Fixture {
        let data = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(data.path()).expect("canonical");
        let alloc = root.join("allocs/t1");
        fs::create_dir_all(alloc.join("web")).expect("mkdir");
        let paths = StatePaths::new(&root, "t1");
        fs::create_dir_all(&paths.dir).expect("mkdir");
        let handle = HandleId {
            format: execdriver_core::handle::HANDLE_FORMAT_VERSION,
            driver_version: "0.1.0".into(),
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
            kill_timeout_ms: 100,
            max_kill_timeout_ms: 1000,
            kill_signal: Signal::SIGINT,
        };
        Fixture {
            platform: LinuxPlatform::new(LinuxConfig::new(data.path())),
            _data: data,
            handle,
        }
    }

    fn assert_refused(f: &Fixture, h: &HandleId, needle: &str) {
        match reattach(&f.platform, h) {
            Err(PlatformError::Refused(why)) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected a refusal mentioning {needle}, got {other:?}"),
        }
    }

    #[test]
    fn own_handle_passes_confinement() {
        let f = fixture();
        assert!(confine(&f.platform, &f.handle).is_ok());
        // No supervisor and no record: gone, which the driver turns into a cleanup.
        assert!(matches!(
            reattach(&f.platform, &f.handle),
            Ok(Reattach::Gone { .. })
        ));
    }

    #[test]
    fn exit_record_is_found() {
        let f = fixture();
        let status = execdriver_core::ExitStatus::code(7);
        let record = exit_record::ExitRecord {
            status,
            supervisor: f.handle.supervisor.process,
            task: f.handle.task,
        };
        let path = StatePaths::at(&f.handle.state_dir).exit_record();
        exit_record::write(&path, &record).expect("write");
        assert!(matches!(
            reattach(&f.platform, &f.handle),
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
    fn cleanup_steps_refuse_a_state_dir_of_a_reused_task_id() {
        let f = fixture();
        let paths = StatePaths::at(&f.handle.state_dir);
        let record = exit_record::ExitRecord {
            status: execdriver_core::ExitStatus::code(0),
            supervisor: ProcessIdentity {
                pid: f.handle.supervisor.process.pid,
                start_time: f.handle.supervisor.process.start_time + 1,
            },
            task: f.handle.task,
        };
        exit_record::write(&paths.exit_record(), &record).expect("write");
        for step in [
            crate::kill::kill_cgroup,
            crate::kill::destroy_cgroup,
            crate::kill::remove_state,
        ] {
            match step(&f.platform, &f.handle) {
                Err(PlatformError::Refused(why)) => assert!(why.contains("reused"), "{why}"),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(
            paths.exit_record().exists(),
            "nothing of the new task was touched"
        );
    }

    #[test]
    fn calls_to_a_socket_served_by_another_process_are_refused() {
        use execdriver_core::Platform;
        let f = fixture();
        let paths = StatePaths::at(&f.handle.state_dir);
        // Served by this test process: neither the handle's supervisor pid nor its start time.
        let _listener = std::os::unix::net::UnixListener::bind(paths.socket()).expect("bind");
        let conn = SupervisorConn::new(
            f.handle.task_id.clone(),
            paths.clone(),
            f.handle.supervisor.process,
            f.handle.task,
        );
        match f.platform.signal(&conn, Signal::SIGTERM) {
            Err(PlatformError::Refused(why)) => assert!(why.contains("reused"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let me = crate::process::identity(i32::try_from(std::process::id()).expect("pid"))
            .expect("own identity");
        let stale = ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        let conn = SupervisorConn::new(f.handle.task_id.clone(), paths, stale, f.handle.task);
        match f.platform.stats(&conn) {
            Err(PlatformError::Refused(why)) => assert!(why.contains("reused"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn missing_state_dir_is_refused_and_touches_nothing() {
        let f = fixture();
        fs::remove_dir(&f.handle.state_dir).expect("rmdir");
        assert_refused(&f, &f.handle, "already collected");
        // The cleanup steps accept it (nothing to do) and create nothing.
        assert_eq!(crate::kill::destroy_cgroup(&f.platform, &f.handle), Ok(()));
        assert!(!f.handle.state_dir.exists());
    }

    #[test]
    fn missing_alloc_dir_does_not_block_a_reattach() {
        let f = fixture();
        fs::remove_dir_all(&f.handle.alloc_dir).expect("rm alloc");
        assert!(matches!(
            reattach(&f.platform, &f.handle),
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
        fs::remove_dir(&f.handle.state_dir).expect("rmdir");
        std::os::unix::fs::symlink(target.path(), &f.handle.state_dir).expect("symlink");
        assert_refused(&f, &f.handle, "not a plain directory");
    }
}
