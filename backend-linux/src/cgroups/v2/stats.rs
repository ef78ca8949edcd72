//! Resource use of a v2 task cgroup, from its one directory.

use std::path::Path;

use execdriver_core::{CpuStats, MemoryStats, TaskStats};

use crate::cgroups::{CgroupError, fs};

/// The stats of the task cgroup at `dir`.
pub(super) fn read(dir: &Path) -> Result<TaskStats, CgroupError> {
    Ok(TaskStats {
        memory: memory_stats(dir)?,
        cpu: cpu_stats(dir)?,
        pids: fs::read_u64(&dir.join("pids.current"))?,
        timestamp: Default::default(),
        read_at_unix_nanos: crate::clock::unix_nanos_now(),
        // The supervisor fills these in from the spec it applied.
        limits: None,
        // The supervisor fills these in: the cgroup knows nothing of logs.
        logs: Default::default(),
    })
}

fn memory_stats(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let path = dir.join("memory.stat");
    let text = fs::read(&path)?;
    let optional = |name: &str| -> Result<u64, CgroupError> {
        let file = dir.join(name);
        if file.exists() {
            fs::read_u64(&file)
        } else {
            Ok(0)
        }
    };
    Ok(MemoryStats {
        rss: fs::require_keyed(&path, &text, "anon")?,
        cache: fs::require_keyed(&path, &text, "file")?,
        swap: optional("memory.swap.current")?,
        // memory.peak exists from Linux 5.19; before that the peak is unknown.
        max_usage: optional("memory.peak")?,
    })
}

fn cpu_stats(dir: &Path) -> Result<CpuStats, CgroupError> {
    let path = dir.join("cpu.stat");
    let text = fs::read(&path)?;
    Ok(CpuStats {
        user_ns: fs::require_keyed(&path, &text, "user_usec")?.saturating_mul(1000),
        system_ns: fs::require_keyed(&path, &text, "system_usec")?.saturating_mul(1000),
        // Throttling lines appear only with the cpu controller enabled.
        throttled_periods: fs::keyed(&text, "nr_throttled").unwrap_or(0),
        throttled_ns: fs::keyed(&text, "throttled_usec")
            .unwrap_or(0)
            .saturating_mul(1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn memory_cpu_and_pids_from_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "memory.stat", "anon 10\nfile 20\nkernel 5\n");
        write(d, "memory.peak", "999\n");
        write(
            d,
            "cpu.stat",
            "usage_usec 30\nuser_usec 10\nsystem_usec 20\nnr_throttled 2\nthrottled_usec 7\n",
        );
        write(d, "pids.current", "4\n");
        let s = read(d).unwrap();
        let m = s.memory;
        assert_eq!((m.rss, m.cache, m.swap, m.max_usage), (10, 20, 0, 999));
        let c = s.cpu;
        assert_eq!(
            (c.user_ns, c.system_ns, c.throttled_periods, c.throttled_ns),
            (10_000, 20_000, 2, 7_000)
        );
        assert_eq!(s.pids, 4);
        write(d, "memory.swap.current", "8192\n");
        assert_eq!(read(d).unwrap().memory.swap, 8192);
    }

    #[test]
    fn missing_keys_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "cpu.stat", "usage_usec 1\n");
        let err = cpu_stats(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("cpu.stat") && err.contains("user_usec"),
            "{err}"
        );
    }
}
