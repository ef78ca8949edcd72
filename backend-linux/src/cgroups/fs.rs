//! Small cgroupfs file helpers whose errors name the file: read, write, write and read back,
//! walk a cgroup tree, remove a cgroup and check it is gone.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{CgroupError, REMOVE_WAIT};

/// Reads a whole cgroup file.
pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file holding one unsigned number.
pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    parse_u64(path, text.trim())
}

/// Parses one unsigned number, naming `path` on failure.
pub(super) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        detail: format!("expected an unsigned number, found {text:?}"),
    })
}

/// Writes `value` in one write(2), as cgroupfs wants, without creating or truncating.
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

/// Writes `value`, then reads the file back: the kernel clamps, rounds and sometimes ignores
/// what it is given, and a value it did not keep is [`CgroupError::LimitMismatch`]. Returns
/// what the file reads (trimmed).
pub(super) fn write_verified(path: &Path, value: &str) -> Result<String, CgroupError> {
    write(path, value)?;
    expect(path, value)
}

/// Checks that the file reads `wanted` (both trimmed); returns what it reads.
pub(super) fn expect(path: &Path, wanted: &str) -> Result<String, CgroupError> {
    let actual = read(path)?;
    let actual = actual.trim();
    if actual == wanted.trim() {
        Ok(actual.to_owned())
    } else {
        Err(CgroupError::LimitMismatch {
            path: path.to_owned(),
            wanted: wanted.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line, as memory.stat).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            fields.next().and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}

/// Like [`keyed`], but a missing key is an error naming the file.
pub(super) fn require_keyed(path: &Path, text: &str, key: &str) -> Result<u64, CgroupError> {
    keyed(text, key).ok_or_else(|| CgroupError::Parse {
        path: path.to_owned(),
        detail: format!("no numeric {key:?} entry"),
    })
}

/// The pids listed in a cgroup.procs file.
pub(super) fn parse_pids(path: &Path, text: &str) -> Result<Vec<i32>, CgroupError> {
    text.split_whitespace()
        .map(|word| {
            word.parse::<i32>()
                .ok()
                .filter(|pid| *pid > 0)
                .ok_or_else(|| CgroupError::Parse {
                    path: path.to_owned(),
                    detail: format!("expected a pid, found {word:?}"),
                })
        })
        .collect()
}

/// Bound on cgroup nesting walked below a task cgroup.
const MAX_DEPTH: usize = 32;

/// `dir` and every cgroup below it (empty when `dir` does not exist).
pub(super) fn descendants(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0usize)];
    while let Some((cur, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&cur) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path: cur, source }),
        };
        if depth < MAX_DEPTH {
            for entry in entries {
                let entry = entry.map_err(|source| CgroupError::Read {
                    path: cur.clone(),
                    source,
                })?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        out.push(cur);
    }
    Ok(out)
}

/// Every pid in the cgroup at `dir` and its descendants (unsorted, maybe repeated); a cgroup
/// removed meanwhile contributes nothing, an unreadable one is an error.
pub(super) fn tree_pids(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut pids = Vec::new();
    for dir in descendants(dir)? {
        let path = dir.join("cgroup.procs");
        match std::fs::read_to_string(&path) {
            Ok(text) => pids.extend(parse_pids(&path, &text)?),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(CgroupError::Read { path, source }),
        }
    }
    Ok(pids)
}

/// Removes the cgroup at `dir` and everything below it, deepest first (a cgroup with
/// children cannot be removed), each as [`remove_dir_until`].
pub(super) fn remove_tree_until(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let mut dirs = descendants(dir)?;
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in dirs {
        remove_dir_until(&dir, deadline)?;
    }
    Ok(())
}

/// rmdir, retried for up to [`REMOVE_WAIT`] while the kernel still reports the cgroup busy,
/// then checked gone.
pub(super) fn remove_dir_verified(dir: &Path) -> Result<(), CgroupError> {
    remove_dir_until(dir, Instant::now() + REMOVE_WAIT)
}

/// rmdir, retried until `deadline` while the kernel still reports the cgroup busy (tried at
/// least once), then checked gone. An absent directory is fine.
pub(super) fn remove_dir_until(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                sleep(delay.min(left));
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
    if dir.exists() {
        return Err(CgroupError::StillExists {
            path: dir.to_owned(),
            waited_ms: start.elapsed().as_millis(),
        });
    }
    Ok(())
}

/// mkdir of one cgroup directory; an existing one is [`CgroupError::AlreadyExists`].
pub(super) fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir(dir).map_err(|source| {
        if source.kind() == ErrorKind::AlreadyExists {
            CgroupError::AlreadyExists {
                path: dir.to_owned(),
            }
        } else {
            CgroupError::Create {
                path: dir.to_owned(),
                source,
            }
        }
    })
}

/// mkdir of one cgroup directory, adopting an existing one.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), CgroupError> {
    match create_dir(dir) {
        Err(CgroupError::AlreadyExists { .. }) if dir.is_dir() => Ok(()),
        other => other,
    }
}

/// A cgroup directory opened for a child to be born in it (clone3's CLONE_INTO_CGROUP
/// takes a directory fd), never through a symlink; `None` when it cannot be opened, for a
/// caller that then moves the child by a write instead.
pub(super) fn open_clone_target(dir: &Path) -> Option<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .ok()
        .map(OwnedFd::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verified_reports_what_the_file_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cpu.shares");
        std::fs::write(&file, "").unwrap();
        assert_eq!(write_verified(&file, "512").unwrap(), "512");
        // A file that keeps something else (as the kernel does when it clamps).
        std::fs::write(&file, "2\n").unwrap();
        expect(&file, "2").unwrap();
        let err = expect(&file, "1").unwrap_err();
        assert!(matches!(err, CgroupError::LimitMismatch { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("cpu.shares") && msg.contains("wrote 1") && msg.contains("\"2\""),
            "{msg}"
        );
        // Writing never creates a control file.
        let missing = tmp.path().join("memory.oom.group");
        assert!(matches!(
            write_verified(&missing, "1"),
            Err(CgroupError::Write { .. })
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn tree_walks_and_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("t");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::fs::write(top.join("cgroup.procs"), "5\n").unwrap();
        std::fs::write(top.join("a/b/cgroup.procs"), "7\n9\n").unwrap();
        let mut pids = tree_pids(&top).unwrap();
        pids.sort_unstable();
        assert_eq!(pids, vec![5, 7, 9]);
        assert_eq!(descendants(&top).unwrap().len(), 3);
        assert!(tree_pids(&tmp.path().join("gone")).unwrap().is_empty());
        assert!(matches!(
            create_dir(&top),
            Err(CgroupError::AlreadyExists { .. })
        ));
        ensure_dir(&top).unwrap();
        // Plain directories with files cannot be rmdir'd: an error naming the directory.
        let err = remove_tree_until(&top, Instant::now()).unwrap_err();
        assert!(err.to_string().contains("a/b"), "{err}");
        std::fs::remove_file(top.join("a/b/cgroup.procs")).unwrap();
        std::fs::remove_file(top.join("cgroup.procs")).unwrap();
        remove_tree_until(&top, Instant::now()).unwrap();
        assert!(!top.exists());
        remove_dir_verified(&top).unwrap();
    }

    #[test]
    fn keyed_finds_exact_keys_only() {
        let text = "total_rss 10\nrss 5\ntotal_rss_huge 7\noom_kill 3\n";
        assert_eq!(keyed(text, "rss"), Some(5));
        assert_eq!(keyed(text, "total_rss"), Some(10));
        assert_eq!(keyed(text, "oom_kill"), Some(3));
        assert_eq!(keyed(text, "total"), None);
        assert!(require_keyed(Path::new("/x"), text, "swap").is_err());
    }

    #[test]
    fn parse_pids_rejects_garbage() {
        let p = Path::new("/cg/cgroup.procs");
        assert_eq!(parse_pids(p, "1\n22\n333\n").unwrap(), vec![1, 22, 333]);
        assert_eq!(parse_pids(p, "").unwrap(), Vec::<i32>::new());
        assert!(parse_pids(p, "12\nabc\n").is_err());
        assert!(parse_pids(p, "0\n").is_err());
        assert!(parse_pids(p, "-4\n").is_err());
    }

    #[test]
    fn parse_u64_names_the_file() {
        let err = parse_u64(Path::new("/cg/pids.max"), "max").unwrap_err();
        assert!(err.to_string().contains("/cg/pids.max"), "{err}");
    }
}
