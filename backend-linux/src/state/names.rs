//! Unique task names: `<data dir>/names/<name>` holds the id of the task that claimed it.
//!
//! Every change (claim, release, taking over a stale claim) is made under an exclusive flock
//! of `names/.lock`, and a claim file is created with `O_EXCL`: of two starts with the same
//! name, exactly one wins, whatever their timing. A claim is stale when the task it names
//! has no state dir any more (it was removed, or its start failed before it could release
//! the claim): such a claim is taken over, so a name is never held by a task that is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use execdriver_core::validate_task_id;
use rustix::fs::{FlockOperation, flock};

use super::StatePaths;

/// The lock file every change of a name is made under.
const LOCK_FILE: &str = ".lock";

/// Why a name could not be claimed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NameError {
    /// A task that is there holds it.
    #[error("name {name:?} is held by task {holder}: remove that task first (execdriver rm {name})")]
    Taken {
        /// The name.
        name: String,
        /// The task that holds it.
        holder: String,
    },
    /// A file operation failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The dir of name claims.
pub(crate) fn names_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("names")
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Holds the names lock while it lives.
struct NamesLock {
    _file: File,
}

fn lock(dir: &Path) -> io::Result<NamesLock> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| context(e, "creating", dir))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| context(e, "opening", &path))?;
    flock(&file, FlockOperation::LockExclusive)
        .map_err(|e| context(io::Error::from(e), "locking", &path))?;
    Ok(NamesLock { _file: file })
}

/// The task id a claim file names, if it is a readable claim.
fn read_claim(path: &Path) -> io::Result<Option<String>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context(e, "reading", path)),
    };
    let mut text = String::new();
    file.take(256)
        .read_to_string(&mut text)
        .map_err(|e| context(e, "reading", path))?;
    let id = text.trim();
    Ok(validate_task_id(id).is_ok().then(|| id.to_owned()))
}

/// Whether `task_id` has a state dir in `data_dir`.
fn is_present(data_dir: &Path, task_id: &str) -> bool {
    StatePaths::new(data_dir, task_id).dir.is_dir()
}

/// Claims `name` for `task_id`, whose state dir must exist already (so that the claim is
/// never stale while the task is there).
pub(crate) fn claim(data_dir: &Path, name: &str, task_id: &str) -> Result<(), NameError> {
    let dir = names_dir(data_dir);
    let _lock = lock(&dir)?;
    let path = dir.join(name);
    if let Some(holder) = read_claim(&path)?
        && holder != task_id
        && is_present(data_dir, &holder)
    {
        return Err(NameError::Taken {
            name: name.to_owned(),
            holder,
        });
    }
    // Stale, unreadable or ours: replaced under the lock.
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e, "removing", &path).into()),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| context(e, "creating", &path))?;
    file.write_all(task_id.as_bytes())
        .map_err(|e| context(e, "writing", &path))?;
    Ok(())
}

/// Releases `name` if `task_id` holds it; a claim of another task is left alone.
pub(crate) fn release(data_dir: &Path, name: &str, task_id: &str) -> io::Result<()> {
    let dir = names_dir(data_dir);
    if !dir.is_dir() {
        return Ok(());
    }
    let _lock = lock(&dir)?;
    let path = dir.join(name);
    if read_claim(&path)?.as_deref() == Some(task_id) {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "removing", &path)),
        }
    }
    Ok(())
}

/// The task that holds `name`, if one that is there does.
pub(crate) fn holder(data_dir: &Path, name: &str) -> io::Result<Option<String>> {
    if validate_task_id(name).is_err() {
        return Ok(None);
    }
    let holder = read_claim(&names_dir(data_dir).join(name))?;
    Ok(holder.filter(|id| is_present(data_dir, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(data: &Path, id: &str) {
        fs::create_dir_all(StatePaths::new(data, id).dir).expect("mkdir");
    }

    #[test]
    fn a_name_is_held_until_released_or_its_task_is_gone() {
        let data = tempfile::tempdir().expect("tempdir");
        let data = data.path();
        task(data, "a");
        task(data, "b");
        claim(data, "web", "a").expect("claim");
        assert_eq!(holder(data, "web").expect("holder").as_deref(), Some("a"));
        let err = claim(data, "web", "b").expect_err("taken");
        assert!(err.to_string().contains("held by task a"), "{err}");
        release(data, "web", "b").expect("release of another's claim");
        assert_eq!(holder(data, "web").expect("holder").as_deref(), Some("a"));
        release(data, "web", "a").expect("release");
        assert_eq!(holder(data, "web").expect("holder"), None);
        claim(data, "web", "b").expect("claim after release");
        fs::remove_dir_all(StatePaths::new(data, "b").dir).expect("rm");
        assert_eq!(holder(data, "web").expect("holder"), None, "stale");
        claim(data, "web", "a").expect("stale claim taken over");
    }

    #[test]
    fn of_concurrent_claims_exactly_one_wins() {
        let data = tempfile::tempdir().expect("tempdir");
        let data = data.path();
        let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        for id in &ids {
            task(data, id);
        }
        let wins = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| s.spawn(move || claim(data, "web", id).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .filter(|won| *won)
                .count()
        });
        assert_eq!(wins, 1);
    }
}
