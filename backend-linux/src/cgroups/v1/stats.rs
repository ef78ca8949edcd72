//! Resource use of a v1 task cgroup, from its memory, cpu, cpuacct and pids directories.

use std::path::Path;

use execdriver_core::{CpuStats, MemoryStats, TaskStats};

use crate::cgroups::{CgroupError, fs};

/// The stats of a task cgroup whose directories these are.
pub(super) fn read(
    memory: &Path,
    cpu: &Path,
    cpuacct: &Path,
    pids: &Path,
) -> Result<TaskStats, CgroupError> {
    Ok(TaskStats {
        memory: memory_stats(memory)?,
        cpu: cpu_stats(cpu, cpuacct)?,
        pids: fs::read_u64(&pids.join("pids.current"))?,
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
    Ok(MemoryStats {
        rss: fs::require_keyed(&path, &text, "total_rss")?,
        cache: fs::require_keyed(&path, &text, "total_cache")?,
        // Present only with swap accounting; without it nothing is accounted as swapped.
        swap: fs::keyed(&text, "total_swap").unwrap_or(0),
        max_usage: fs::read_u64(&dir.join("memory.max_usage_in_bytes"))?,
    })
}

fn cpu_stats(cpu: &Path, cpuacct: &Path) -> Result<CpuStats, CgroupError> {
    let user = cpuacct.join("cpuacct.usage_user");
    let (user_ns, system_ns) = if user.exists() {
        (
            fs::read_u64(&user)?,
            fs::read_u64(&cpuacct.join("cpuacct.usage_sys"))?,
        )
    } else {
        // Kernels before 4.7 have only cpuacct.stat, in clock ticks.
        let path = cpuacct.join("cpuacct.stat");
        let text = fs::read(&path)?;
        let tick = ns_per_tick();
        (
            fs::require_keyed(&path, &text, "user")?.saturating_mul(tick),
            fs::require_keyed(&path, &text, "system")?.saturating_mul(tick),
        )
    };
    let stat = fs::read(&cpu.join("cpu.stat"))?;
    Ok(CpuStats {
        user_ns,
        system_ns,
        throttled_periods: fs::keyed(&stat, "nr_throttled").unwrap_or(0),
        throttled_ns: fs::keyed(&stat, "throttled_time").unwrap_or(0),
    })
}

fn ns_per_tick() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100);
    1_000_000_000 / hz
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
        write(
            d,
            "memory.stat",
            "cache 1\nrss 2\ntotal_cache 100\ntotal_rss 200\ntotal_swap 3\n",
        );
        write(d, "memory.max_usage_in_bytes", "4096\n");
        write(d, "cpuacct.usage_user", "111\n");
        write(d, "cpuacct.usage_sys", "222\n");
        write(
            d,
            "cpu.stat",
            "nr_periods 9\nnr_throttled 5\nthrottled_time 77\n",
        );
        write(d, "pids.current", "3\n");
        let s = read(d, d, d, d).unwrap();
        let m = s.memory;
        assert_eq!((m.rss, m.cache, m.swap, m.max_usage), (200, 100, 3, 4096));
        let c = s.cpu;
        assert_eq!((c.user_ns, c.system_ns), (111, 222));
        assert_eq!((c.throttled_periods, c.throttled_ns), (5, 77));
        assert_eq!(s.pids, 3);
    }

    #[test]
    fn old_kernels_cpuacct_stat_in_ticks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "cpuacct.stat", "user 2\nsystem 3\n");
        write(d, "cpu.stat", "nr_periods 0\n");
        let c = cpu_stats(d, d).unwrap();
        assert_eq!(c.user_ns, 2 * ns_per_tick());
        assert_eq!(c.system_ns, 3 * ns_per_tick());
    }

    #[test]
    fn missing_keys_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "memory.stat", "cache 1\n");
        write(tmp.path(), "memory.max_usage_in_bytes", "0\n");
        let err = memory_stats(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("memory.stat") && err.contains("total_rss"),
            "{err}"
        );
    }
}
