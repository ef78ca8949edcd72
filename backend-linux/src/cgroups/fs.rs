//! Small cgroupfs file helpers whose errors name the file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use super::CgroupError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
