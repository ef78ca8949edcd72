//! Resource use and the OOM-kill counter of a task cgroup, v1 and v2.

use std::path::Path;

use execdriver_core::{CpuStats, MemoryStats, TaskStats};

use super::{CgroupError, CgroupVersion, TaskCgroup, fs};

impl TaskCgroup {
    /// How many times the kernel OOM-killed a process in this cgroup (and its descendants).
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let dir = self.dir_for("memory")?;
        let path = match self.version {
            CgroupVersion::V1 => dir.join("memory.oom_control"),
            CgroupVersion::V2 => dir.join("memory.events"),
        };
        let text = fs::read(&path)?;
        fs::require_keyed(&path, &text, "oom_kill")
    }

    /// The stats behind [`TaskCgroup::stats`].
    pub(super) fn read_stats(&self) -> Result<TaskStats, CgroupError> {
        let memory = self.dir_for("memory")?;
        let cpu = self.dir_for("cpu")?;
        let cpuacct = self.dir_for("cpuacct")?;
        let pids_dir = self.dir_for("pids")?;
        let (memory, cpu) = match self.version {
            CgroupVersion::V1 => (memory_v1(memory)?, cpu_v1(cpu, cpuacct)?),
            CgroupVersion::V2 => (memory_v2(memory)?, cpu_v2(cpu)?),
        };
        Ok(TaskStats {
            memory,
            cpu,
            pids: fs::read_u64(&pids_dir.join("pids.current"))?,
            timestamp: Default::default(),
        })
    }
}

fn memory_v1(dir: &Path) -> Result<MemoryStats, CgroupError> {
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

fn memory_v2(dir: &Path) -> Result<MemoryStats, CgroupError> {
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

fn cpu_v1(cpu: &Path, cpuacct: &Path) -> Result<CpuStats, CgroupError> {
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

fn cpu_v2(dir: &Path) -> Result<CpuStats, CgroupError> {
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
    fn v1_memory_and_cpu_from_files() {
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
        let m = memory_v1(d).unwrap();
        assert_eq!((m.rss, m.cache, m.swap, m.max_usage), (200, 100, 3, 4096));
        let c = cpu_v1(d, d).unwrap();
        assert_eq!((c.user_ns, c.system_ns), (111, 222));
        assert_eq!((c.throttled_periods, c.throttled_ns), (5, 77));
    }

    #[test]
    fn v2_memory_and_cpu_from_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "memory.stat", "anon 10\nfile 20\nkernel 5\n");
        write(d, "memory.peak", "999\n");
        write(
            d,
            "cpu.stat",
            "usage_usec 30\nuser_usec 10\nsystem_usec 20\nnr_throttled 2\nthrottled_usec 7\n",
        );
        let m = memory_v2(d).unwrap();
        assert_eq!((m.rss, m.cache, m.swap, m.max_usage), (10, 20, 0, 999));
        let c = cpu_v2(d).unwrap();
        assert_eq!(
            (c.user_ns, c.system_ns, c.throttled_periods, c.throttled_ns),
            (10_000, 20_000, 2, 7_000)
        );
    }

    #[test]
    fn missing_keys_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "memory.stat", "cache 1\n");
        write(tmp.path(), "memory.max_usage_in_bytes", "0\n");
        let err = memory_v1(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("memory.stat") && err.contains("total_rss"),
            "{err}"
        );
    }
}
