//! Applying a task's limits through cgroups-rs and reading every one of them back.
//!
//! cgroups-rs writes a value and returns; it never checks what the kernel kept (the kernel
//! clamps cpu shares, rounds memory to pages, and silently ignores memsw when swap accounting
//! is off), so each write here is followed by a read of the same file.

use std::path::Path;

use cgroups_rs::MaxValue;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::memory::{MemController, SetMemory};
use cgroups_rs::pid::PidController;
use execdriver_core::Resources;

use super::{CgroupError, CgroupVersion, fs};

/// Applies `resources` to a new task cgroup and verifies each value.
/// `dir_of` maps a controller name to the task cgroup's directory for it.
pub(super) fn apply<'a>(
    version: CgroupVersion,
    dir_of: impl Fn(&str) -> Result<&'a Path, CgroupError>,
    resources: &Resources,
) -> Result<(), CgroupError> {
    let page = page_size();
    let limit = page_floor(resources.memory_limit_bytes, page);
    let hard = page_floor(
        resources
            .memory_max_bytes
            .unwrap_or(resources.memory_limit_bytes),
        page,
    );
    let v2 = version == CgroupVersion::V2;

    let cpu_dir = dir_of("cpu")?;
    let cpu = CpuController::new(cpu_dir.to_owned(), v2);
    let (cpu_file, cpu_value) = if v2 {
        ("cpu.weight", shares_to_weight(resources.cpu_shares))
    } else {
        ("cpu.shares", resources.cpu_shares)
    };
    cpu.set_shares(cpu_value)
        .map_err(|e| lib_error(&cpu_dir.join(cpu_file), &cpu_value.to_string(), e))?;
    expect_u64(&cpu_dir.join(cpu_file), cpu_value)?;

    let mem_dir = dir_of("memory")?;
    let mem = MemController::new(mem_dir.to_owned(), v2);
    if v2 {
        let high = resources.memory_max_bytes.map(|_| limit);
        let to_max = |v: u64| i64::try_from(v).map(MaxValue::Value);
        let set = SetMemory {
            low: None,
            min: None,
            high: high
                .map(to_max)
                .transpose()
                .map_err(|_| too_big(mem_dir, limit))?,
            max: Some(to_max(hard).map_err(|_| too_big(mem_dir, hard))?),
        };
        mem.set_mem(set)
            .map_err(|e| lib_error(&mem_dir.join("memory.max"), &hard.to_string(), e))?;
        expect_u64(&mem_dir.join("memory.max"), hard)?;
        if let Some(high) = high {
            expect_u64(&mem_dir.join("memory.high"), high)?;
        }
        let swap = mem_dir.join("memory.swap.max");
        if swap.exists() {
            mem.set_memswap_limit(0)
                .map_err(|e| lib_error(&swap, "0", e))?;
            expect_u64(&swap, 0)?;
        }
    } else {
        let hard_i = i64::try_from(hard).map_err(|_| too_big(mem_dir, hard))?;
        let file = mem_dir.join("memory.limit_in_bytes");
        mem.set_limit(hard_i)
            .map_err(|e| lib_error(&file, &hard.to_string(), e))?;
        expect_u64(&file, hard)?;
        if resources.memory_max_bytes.is_some() {
            // v1 has no memory.high; the soft limit is the closest: reclaimed to it under pressure.
            let soft = mem_dir.join("memory.soft_limit_in_bytes");
            let limit_i = i64::try_from(limit).map_err(|_| too_big(mem_dir, limit))?;
            mem.set_soft_limit(limit_i)
                .map_err(|e| lib_error(&soft, &limit.to_string(), e))?;
            expect_u64(&soft, limit)?;
        }
        // memsw exists only with swap accounting; equal to the memory limit means no swap.
        let memsw = mem_dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            mem.set_memswap_limit(hard_i)
                .map_err(|e| lib_error(&memsw, &hard.to_string(), e))?;
            expect_u64(&memsw, hard)?;
        }
        let swappiness = mem_dir.join("memory.swappiness");
        // Some kernels refuse swappiness in non-root or hierarchical cgroups: "where allowed".
        if swappiness.exists() && mem.set_swappiness(0).is_ok() {
            expect_u64(&swappiness, 0)?;
        }
    }

    let pids_dir = dir_of("pids")?;
    let pids = PidController::new(pids_dir.to_owned(), v2);
    let pids_file = pids_dir.join("pids.max");
    let pids_max = i64::try_from(resources.pids_max).map_err(|_| CgroupError::Write {
        path: pids_file.clone(),
        value: resources.pids_max.to_string(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    pids.set_pid_max(MaxValue::Value(pids_max))
        .map_err(|e| lib_error(&pids_file, &resources.pids_max.to_string(), e))?;
    expect_u64(&pids_file, resources.pids_max)?;
    Ok(())
}

/// v1 cpu shares to v2 cpu.weight, the mapping runc and crun use: [2, 262144] -> [1, 10000].
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The kernel keeps memory limits in whole pages, rounded down.
pub(super) fn page_floor(bytes: u64, page: u64) -> u64 {
    bytes - bytes % page.max(1)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

fn expect_u64(path: &Path, wanted: u64) -> Result<(), CgroupError> {
    let actual = fs::read(path)?;
    let actual = actual.trim();
    if actual.parse::<u64>().ok() == Some(wanted) {
        Ok(())
    } else {
        Err(CgroupError::LimitMismatch {
            path: path.to_owned(),
            wanted: wanted.to_string(),
            actual: actual.to_owned(),
        })
    }
}

fn too_big(dir: &Path, bytes: u64) -> CgroupError {
    CgroupError::Write {
        path: dir.to_owned(),
        value: bytes.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "memory size out of range"),
    }
}

/// A cgroups-rs failure as our error, with the OS error it wraps (its Display prints Debug).
pub(super) fn lib_error(path: &Path, value: &str, err: cgroups_rs::error::Error) -> CgroupError {
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|e| match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        })
        .unwrap_or_else(|| std::io::Error::other(err.kind().to_string()));
    CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source: io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_mapping_ends_and_default() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn read_back_mismatch_names_file_and_values() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cpu.shares");
        std::fs::write(&file, "2\n").unwrap();
        expect_u64(&file, 2).unwrap();
        let err = expect_u64(&file, 1).unwrap_err();
        assert!(matches!(err, CgroupError::LimitMismatch { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("cpu.shares") && msg.contains("wrote 1") && msg.contains("\"2\""),
            "{msg}"
        );
        std::fs::write(&file, "max\n").unwrap();
        assert!(expect_u64(&file, 5).is_err());
    }

    #[test]
    fn page_floor_rounds_down() {
        assert_eq!(page_floor(16 * 1024 * 1024, 4096), 16 * 1024 * 1024);
        assert_eq!(page_floor(100_000_000, 4096), 99_999_744);
        assert_eq!(page_floor(4095, 4096), 0);
        assert_eq!(page_floor(5, 0), 5);
    }
}
