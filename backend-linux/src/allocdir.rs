//! [`AllocDir`]: alloc dirs under the data dir, for callers that have none of their own (the
//! `execdriver` CLI): `<data dir>/allocs/<task id>/`, with the task dir
//! `<alloc dir>/<task name>`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// An alloc dir with one task dir in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocDir {
    dir: PathBuf,
    task_dir: PathBuf,
}

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
        let dir = allocs.join(task_id);
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(AllocDirError::InUse {
                    task_id: task_id.to_owned(),
                    path: dir,
                });
            }
            Err(e) => return Err(io_err("creating", &dir)(e)),
        }
        let task_dir = dir.join(task_name);
        let made = fs::DirBuilder::new()
            .mode(0o755)
            .create(&task_dir)
            .and_then(|()| {
                // The umask may have taken bits the task user needs to enter its dirs.
                for d in [&dir, &task_dir] {
                    fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
                }
                Ok(())
            });
        if let Err(e) = made {
            let _ = Self::remove(&dir);
            return Err(io_err("creating", &task_dir)(e));
        }
        Ok(Self { dir, task_dir })
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
    }
}
