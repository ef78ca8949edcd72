//! Claiming a task id, and the lock that tells a start under way from debris.
//!
//! A state dir appears complete or not at all: it is made under a temporary name, its
//! records are written, its `start.lock` is taken, and only then is it renamed into place
//! (without replacing anything, so a task id in use is refused). The lock is held by the
//! agent during the spawn and, through the same open file, by the supervisor until the task
//! record exists; the kernel drops it when the last of them exits. So a state dir without a
//! task record whose lock is free was abandoned by a starter that died: debris, never a start
//! that a concurrent `list` could disturb.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, RenameFlags, flock, renameat_with};

use super::StatePaths;

/// Prefix of a state dir still being claimed; never a valid task id (those cannot start
/// with `.`).
pub(crate) const CLAIM_PREFIX: &str = ".claim-";

/// An open `start.lock`, held (exclusively) while it lives.
#[derive(Debug)]
pub(crate) struct StartLock {
    file: File,
}

/// What the start lock of a state dir says.
#[derive(Debug)]
pub(crate) enum LockState {
    /// Someone holds it: a start is under way.
    Held,
    /// Nobody did: it is ours now, held until dropped.
    Free(StartLock),
    /// There is no lock file (a state dir from before locks, or one being removed).
    Missing,
}

impl StartLock {
    /// The fd to hand to the supervisor, which keeps the lock held after we let go.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Whether the start lock of `paths` is held, taking it when it is free.
    pub(crate) fn probe(paths: &StatePaths) -> io::Result<LockState> {
        let path = paths.start_lock();
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockState::Missing),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("opening {}: {e}", path.display()),
                ));
            }
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(LockState::Free(StartLock { file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(LockState::Held),
            Err(e) => Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("locking {}: {e}", path.display()),
            )),
        }
    }
}

/// Why a task id could not be claimed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    /// A state dir of that id exists.
    #[error("task id {task_id} is already in use: its state dir {} exists", .dir.display())]
    InUse {
        /// The id.
        task_id: String,
        /// Its state dir.
        dir: std::path::PathBuf,
    },
    /// Anything else, naming the path.
    #[error("{0}")]
    Io(io::Error),
}

/// Claims `task_id` under `tasks_dir`: makes its state dir with `fill` writing the records
/// first, and returns it with its start lock held.
pub(crate) fn claim_task_dir(
    tasks_dir: &Path,
    task_id: &str,
    fill: impl FnOnce(&StatePaths) -> io::Result<()>,
) -> Result<(StatePaths, StartLock), ClaimError> {
    let io_err = |path: &Path, e: io::Error| {
        ClaimError::Io(io::Error::new(
            e.kind(),
            format!("claiming {}: {e}", path.display()),
        ))
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let temp = StatePaths::at(tasks_dir.join(format!(
        "{CLAIM_PREFIX}{task_id}-{}-{nanos}",
        std::process::id()
    )));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&temp.dir)
        .map_err(|e| io_err(&temp.dir, e))?;
    let claimed = (|| {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(temp.start_lock())
            .map_err(|e| io_err(&temp.start_lock(), e))?;
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| io_err(&temp.start_lock(), e.into()))?;
        fill(&temp).map_err(ClaimError::Io)?;
        let paths = StatePaths::at(tasks_dir.join(task_id));
        match renameat_with(
            rustix::fs::CWD,
            &temp.dir,
            rustix::fs::CWD,
            &paths.dir,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok((paths, StartLock { file: lock })),
            Err(rustix::io::Errno::EXIST) => Err(ClaimError::InUse {
                task_id: task_id.to_owned(),
                dir: paths.dir,
            }),
            Err(e) => Err(io_err(&paths.dir, e.into())),
        }
    })();
    if claimed.is_err() {
        let _ = fs::remove_dir_all(&temp.dir);
    }
    claimed
}

/// How old a claim dir nobody holds must be to be taken for abandoned.
const ABANDONED_CLAIM_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes claim dirs under `tasks_dir` whose claimer died before renaming them into place.
pub(crate) fn sweep_abandoned_claims(tasks_dir: &Path) {
    let Ok(names) = super::names_with_prefix(tasks_dir, CLAIM_PREFIX) else {
        return;
    };
    for name in names {
        let path = tasks_dir.join(name);
        let paths = StatePaths::at(&path);
        // Held: a claim under way. Missing or free: the claimer died, or is a moment from
        // locking (its lock file exists a moment before it is locked: a sweep in between
        // took a live claim for abandoned and removed it under a concurrent start). A claim
        // is a few milliseconds, so only one older than a minute is taken for abandoned.
        let old = || {
            fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > ABANDONED_CLAIM_AGE)
        };
        let abandoned = match StartLock::probe(&paths) {
            Ok(LockState::Free(_) | LockState::Missing) => old(),
            _ => false,
        };
        if abandoned {
            let _ = fs::remove_dir_all(&paths.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_atomic_exclusive_and_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, lock) = claim_task_dir(dir.path(), "t1", |p| {
            fs::write(p.spec(), b"{}")
        })
        .expect("claim");
        assert!(paths.spec().exists());
        assert!(matches!(StartLock::probe(&paths), Ok(LockState::Held)));
        let again = claim_task_dir(dir.path(), "t1", |_| Ok(()));
        assert!(matches!(again, Err(ClaimError::InUse { .. })), "{again:?}");
        drop(lock);
        assert!(matches!(StartLock::probe(&paths), Ok(LockState::Free(_))));
        // A failed fill leaves nothing, not even the temporary dir.
        let failed = claim_task_dir(dir.path(), "t2", |_| Err(io::Error::other("full")));
        assert!(failed.is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("t1")]);
    }

    #[test]
    fn abandoned_claims_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join(format!("{CLAIM_PREFIX}a-1-1"));
        let dead = dir.path().join(format!("{CLAIM_PREFIX}b-1-1"));
        for d in [&live, &dead] {
            fs::create_dir(d).expect("mkdir");
            fs::write(d.join("start.lock"), b"").expect("lock file");
        }
        let held = File::open(live.join("start.lock")).expect("open");
        flock(&held, FlockOperation::LockExclusive).expect("lock");
        // A free claim just made may be one a moment from being locked: kept.
        sweep_abandoned_claims(dir.path());
        assert!(live.exists());
        assert!(dead.exists());
        let long_ago = SystemTime::now() - ABANDONED_CLAIM_AGE * 2;
        for d in [&live, &dead] {
            File::open(d)
                .and_then(|f| f.set_modified(long_ago))
                .expect("age the claim");
        }
        sweep_abandoned_claims(dir.path());
        assert!(live.exists(), "held, however old");
        assert!(!dead.exists());
    }
}
