//! A task's limits as control-file values: the pure conversions (cpu shares to weight, cpu
//! millicores to a CFS quota, memory to whole pages), and the writer that applies a version's
//! list of [`Setting`]s and reads every one back.
//!
//! The per-version lists are in `v1/limits.rs` and `v2/limits.rs`; both are pure functions of
//! [`execdriver_core::Resources`] so that the values can be tested without a cgroup.

use std::path::Path;

use super::{AppliedLimit, CgroupError, fs};

/// The CFS period the driver uses for a hard cpu limit, in microseconds (the kernel default:
/// 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup v1 `cpu.shares` range.
const SHARES_MIN: u64 = 2;
const SHARES_MAX: u64 = 262_144;
/// The cgroup v2 `cpu.weight` range.
const WEIGHT_MIN: u64 = 1;
const WEIGHT_MAX: u64 = 10_000;

/// v1 cpu shares to v2 `cpu.weight`, linearly from [2, 262144] onto [1, 10000]:
/// `weight = 1 + ((shares - 2) * 9999) / 262142` (integer division), so 2 -> 1,
/// 1024 -> 39, 262144 -> 10000. This is the OCI runtimes' conversion (runc before 1.3.2, crun
/// before 1.23, and Nomad through them); since then those two map on a curve that puts the
/// v1 default 1024 at the v2 default 100, and systemd's `CPUShares=` uses
/// `shares * 100 / 1024`. Shares outside the range are clamped first, as the kernel clamps
/// `cpu.shares`.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(SHARES_MIN, SHARES_MAX);
    WEIGHT_MIN + ((shares - SHARES_MIN) * (WEIGHT_MAX - WEIGHT_MIN)) / (SHARES_MAX - SHARES_MIN)
}

/// A hard cpu limit in millicores as a CFS quota over [`CPU_PERIOD_US`]: 1000 millicores
/// (one cpu) is the whole period, so the quota is `millicores * 100` microseconds.
pub fn cpu_quota_us(millicores: u64) -> u64 {
    millicores.saturating_mul(CPU_PERIOD_US / 1000)
}

/// The v2 `cpu.max` line for a hard cpu limit: `"<quota> <period>"`.
pub fn cpu_max_line(millicores: u64) -> String {
    format!("{} {CPU_PERIOD_US}", cpu_quota_us(millicores))
}

/// The kernel keeps memory limits in whole pages, rounded down; writing the rounded value
/// makes the read-back exact.
pub fn page_floor(bytes: u64, page: u64) -> u64 {
    bytes - bytes % page.max(1)
}

/// The page size of this machine.
pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// When a [`Setting`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    /// Always: a missing file or a refused write is an error.
    Always,
    /// Where the kernel has the file (a feature that may be compiled out or off, such as
    /// swap accounting); skipped otherwise.
    IfPresent,
    /// Where the file exists and the kernel accepts the write (some refuse it in some
    /// cgroups); skipped otherwise. A value it accepts is still read back.
    IfAccepted,
}

/// One control-file value of a task's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    /// The controller whose directory holds the file.
    pub controller: &'static str,
    /// The file.
    pub file: &'static str,
    /// The value written, and expected back.
    pub value: String,
    /// When it is written.
    pub when: When,
}

impl Setting {
    /// A setting written always.
    pub fn always(controller: &'static str, file: &'static str, value: impl ToString) -> Self {
        Self {
            controller,
            file,
            value: value.to_string(),
            when: When::Always,
        }
    }

    /// The same setting under another condition.
    pub fn when(self, when: When) -> Self {
        Self { when, ..self }
    }
}

/// Writes each setting in order into the directory `dir_of` gives for its controller and
/// reads it back; returns what was applied. Stops at the first failure (the caller removes
/// the cgroup, which discards whatever was written).
pub(super) fn apply<'a>(
    settings: &[Setting],
    dir_of: impl Fn(&str) -> Result<&'a Path, CgroupError>,
) -> Result<Vec<AppliedLimit>, CgroupError> {
    let mut applied = Vec::with_capacity(settings.len());
    for s in settings {
        let path = dir_of(s.controller)?.join(s.file);
        if s.when != When::Always && !path.exists() {
            continue;
        }
        if let Err(e) = fs::write(&path, &s.value) {
            if s.when == When::IfAccepted {
                continue;
            }
            return Err(e);
        }
        let value = fs::expect(&path, &s.value)?;
        applied.push(AppliedLimit { path, value });
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_mapping_ends_middle_and_default() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(3), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(131_073), 5000);
        assert_eq!(shares_to_weight(262_143), 9999);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Clamped like the kernel clamps cpu.shares.
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn weight_mapping_is_monotonic_and_in_range() {
        let mut last = 0;
        for shares in (2..=262_144).step_by(97).chain([262_144]) {
            let w = shares_to_weight(shares);
            assert!((1..=10_000).contains(&w), "{shares} -> {w}");
            assert!(w >= last, "{shares} -> {w} after {last}");
            last = w;
        }
    }

    #[test]
    fn cpu_quota_and_max_line() {
        assert_eq!(cpu_quota_us(10), 1_000);
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(1500), 150_000);
        assert_eq!(cpu_quota_us(2000), 200_000);
        assert_eq!(cpu_quota_us(1_024_000), 102_400_000);
        assert_eq!(cpu_max_line(500), "50000 100000");
        assert_eq!(cpu_max_line(1500), "150000 100000");
        assert_eq!(cpu_max_line(2000), "200000 100000");
    }

    #[test]
    fn page_floor_rounds_down() {
        assert_eq!(page_floor(16 * 1024 * 1024, 4096), 16 * 1024 * 1024);
        assert_eq!(page_floor(100_000_000, 4096), 99_999_744);
        assert_eq!(page_floor(4095, 4096), 0);
        assert_eq!(page_floor(5, 0), 5);
        assert!(page_size() >= 4096);
    }

    #[test]
    fn apply_writes_reads_back_and_skips_what_is_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // Empty stand-ins: a plain file keeps what lies past a shorter write, cgroupfs does not.
        std::fs::write(d.join("pids.max"), "").unwrap();
        std::fs::write(d.join("memory.swap.max"), "").unwrap();
        let settings = [
            Setting::always("pids", "pids.max", 64),
            Setting::always("memory", "memory.swap.max", 0).when(When::IfPresent),
            Setting::always("memory", "memory.oom.group", 1).when(When::IfPresent),
            Setting::always("memory", "memory.swappiness", 0).when(When::IfAccepted),
        ];
        let applied = apply(&settings, |_| Ok(d)).unwrap();
        let got: Vec<(String, &str)> = applied
            .iter()
            .map(|a| {
                (
                    a.path.file_name().unwrap().to_string_lossy().into(),
                    a.value.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("pids.max".to_owned(), "64"),
                ("memory.swap.max".to_owned(), "0")
            ]
        );
        assert!(!d.join("memory.oom.group").exists());
        // A file that must be there and is not: an error naming it.
        let err = apply(&[Setting::always("cpu", "cpu.weight", 39)], |_| Ok(d)).unwrap_err();
        assert!(err.to_string().contains("cpu.weight"), "{err}");
        // The directory lookup's error passes through.
        let err = apply(&settings, |c| {
            Err(CgroupError::MissingControllers(vec![c.to_owned()]))
        })
        .unwrap_err();
        assert!(matches!(err, CgroupError::MissingControllers(_)));
    }
}
