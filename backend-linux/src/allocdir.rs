//! [`AllocDir`]: alloc dirs under the data dir, for callers that have none of their own (the
//! `execdriver` CLI): `<data dir>/allocs/<task id>/`, with the task dir
//! `<alloc dir>/<task name>`.
//!
//! A caller killed between making an alloc dir and starting its task leaves the dir behind
//! with no task to collect it by. To tell that debris from a start under way, the dir is
//! made under a temporary name, locked (flock on the dir itself, so the task sees no lock
//! file), and renamed into place; the [`AllocDir`] value holds the lock until it is dropped,
//! which is after the task's own state exists.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, RenameFlags, flock, renameat_with};

/// Prefix of an alloc dir still being made; never a valid task id.
const NEW_PREFIX: &str = ".new-";
/// How old an unlocked temporary alloc dir must be to be taken for abandoned: its maker locks
/// it right after making it, so only the moment between the two is unlocked.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// Why an alloc dir could not be made or removed; each message names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocDirError {
    /// The task id has an alloc dir already.
    #[error("task id {task_id} is already in use: {} exists", .path.display())]
    InUse {
        /// The task id.
        task_id: String,
        /// Its alloc dir.
        path: PathBuf,
    },
    /// Something is mounted inside: removing through it would remove the host's files.
    #[error("alloc dir {} was not removed: {} is still mounted inside it", .path.display(), .mount.display())]
    Mounted {
        /// The alloc dir.
        path: PathBuf,
        /// The mount found inside it.
        mount: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// An alloc dir with one task dir in it, locked against removal as debris while this value
/// (or a clone) lives.
#[derive(Debug, Clone)]
pub struct AllocDir {
    dir: PathBuf,
    task_dir: PathBuf,
    _creating: Arc<File>,
}

impl PartialEq for AllocDir {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir && self.task_dir == other.task_dir
    }
}

impl Eq for AllocDir {}

impl AllocDir {
    /// Where the alloc dir of `task_id` lives under `data_dir`.
    pub fn path(data_dir: impl AsRef<Path>, task_id: &str) -> PathBuf {
        crate::state::allocs_dir(data_dir.as_ref()).join(task_id)
    }

    /// Creates the alloc dir of `task_id` under `data_dir` (which is created if missing)
    /// and its task dir `task_name`, readable by the task's user.
    pub fn create(
        data_dir: impl AsRef<Path>,
        task_id: &str,
        task_name: &str,
    ) -> Result<Self, AllocDirError> {
        let io_err = |what, path: &Path| {
            let path = path.to_owned();
            move |source| AllocDirError::Io { what, path, source }
        };
        let data_dir = data_dir.as_ref();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(data_dir)
            .map_err(io_err("creating data dir", data_dir))?;
        let data_dir =
            fs::canonicalize(data_dir).map_err(io_err("resolving data dir", data_dir))?;
        let allocs = crate::state::allocs_dir(&data_dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&allocs)
            .map_err(io_err("creating", &allocs))?;
        sweep_abandoned(&allocs);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let temp = allocs.join(format!(
            "{NEW_PREFIX}{task_id}-{}-{nanos}",
            std::process::id()
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&temp)
            .map_err(io_err("creating", &temp))?;
        let dir = allocs.join(task_id);
        let made = (|| {
            let lock =
                lock_dir(&temp, FlockOperation::LockExclusive).map_err(io_err("locking", &temp))?;
            let task_dir = temp.join(task_name);
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&task_dir)
                .and_then(|()| {
                    // The umask may have taken bits the task user needs to enter its dirs.
                    for d in [&temp, &task_dir] {
                        fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
                    }
                    Ok(())
                })
                .map_err(io_err("creating", &task_dir))?;
            match renameat_with(
                rustix::fs::CWD,
                &temp,
                rustix::fs::CWD,
                &dir,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => Ok(lock),
                Err(rustix::io::Errno::EXIST) => Err(AllocDirError::InUse {
                    task_id: task_id.to_owned(),
                    path: dir.clone(),
                }),
                Err(e) => Err(io_err("renaming into place", &dir)(e.into())),
            }
        })();
        match made {
            Ok(lock) => Ok(Self {
                task_dir: dir.join(task_name),
                dir,
                _creating: Arc::new(lock),
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&temp);
                Err(e)
            }
        }
    }

    /// Removes the alloc dir of `task_id` under `data_dir` if it is debris: nobody is making
    /// or starting it (its lock is free) and, asked while the lock is ours so that no start
    /// can complete meanwhile, `unclaimed()` says no task of that id exists. True if removed.
    pub fn remove_abandoned(
        data_dir: impl AsRef<Path>,
        task_id: &str,
        unclaimed: impl FnOnce() -> bool,
    ) -> Result<bool, AllocDirError> {
        let data_dir = data_dir.as_ref();
        let data_dir = match fs::canonicalize(data_dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(AllocDirError::Io {
                    what: "resolving data dir",
                    path: data_dir.to_owned(),
                    source,
                });
            }
        };
        let dir = Self::path(&data_dir, task_id);
        let _lock = match lock_dir(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(source) => {
                return Err(AllocDirError::Io {
                    what: "locking",
                    path: dir,
                    source,
                });
            }
        };
        if !unclaimed() {
            return Ok(false);
        }
        Self::remove(&dir).map(|()| true)
    }

    /// The alloc dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The task dir inside it.
    pub fn task_dir(&self) -> &Path {
        &self.task_dir
    }

    /// Removes an alloc dir and everything in it, unless something is still mounted inside
    /// it; an absent dir is fine.
    pub fn remove(dir: &Path) -> Result<(), AllocDirError> {
        let text =
            fs::read_to_string("/proc/self/mountinfo").map_err(|source| AllocDirError::Io {
                what: "reading",
                path: "/proc/self/mountinfo".into(),
                source,
            })?;
        if let Some(mount) = crate::mountinfo::parse(&text)
            .into_iter()
            .find(|m| m.mountpoint.starts_with(dir))
        {
            return Err(AllocDirError::Mounted {
                path: dir.to_owned(),
                mount: mount.mountpoint,
            });
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AllocDirError::Io {
                what: "removing alloc dir",
                path: dir.to_owned(),
                source,
            }),
        }
    }
}

/// Opens `dir` (not following a symlink) and flocks it with `op`.
fn lock_dir(dir: &Path, op: FlockOperation) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    flock(&file, op).map_err(io::Error::from)?;
    Ok(file)
}

/// Removes temporary alloc dirs whose maker died before renaming them into place.
fn sweep_abandoned(allocs: &Path) {
    let Ok(names) = crate::state::names_with_prefix(allocs, NEW_PREFIX) else {
        return;
    };
    for name in names {
        let path = allocs.join(name);
        let old = fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ABANDONED_AFTER);
        if old && let Ok(_lock) = lock_dir(&path, FlockOperation::NonBlockingLockExclusive) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_and_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let a = AllocDir::create(data.path(), "t1", "web").expect("create");
        assert!(a.task_dir().is_dir());
        assert_eq!(a.task_dir().parent(), Some(a.dir()));
        assert!(matches!(
            AllocDir::create(data.path(), "t1", "web"),
            Err(AllocDirError::InUse { .. })
        ));
        AllocDir::remove(a.dir()).expect("remove");
        assert!(!a.dir().exists());
        AllocDir::remove(a.dir()).expect("absent is fine");
        let leftovers: Vec<_> = fs::read_dir(data.path().join("allocs"))
            .expect("allocs")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn only_an_unlocked_unclaimed_dir_is_debris() {
        let data = tempfile::tempdir().expect("tempdir");
        let a = AllocDir::create(data.path(), "t1", "web").expect("create");
        // Its maker lives: not debris, and the claim check is not even asked.
        assert!(matches!(
            AllocDir::remove_abandoned(data.path(), "t1", || panic!("asked while locked")),
            Ok(false)
        ));
        let dir = a.dir().to_owned();
        drop(a);
        // Its task exists: kept.
        assert!(matches!(
            AllocDir::remove_abandoned(data.path(), "t1", || false),
            Ok(false)
        ));
        assert!(dir.is_dir());
        assert!(matches!(
            AllocDir::remove_abandoned(data.path(), "t1", || true),
            Ok(true)
        ));
        assert!(!dir.exists());
        assert!(matches!(
            AllocDir::remove_abandoned(data.path(), "t1", || true),
            Ok(false)
        ));
    }
}
