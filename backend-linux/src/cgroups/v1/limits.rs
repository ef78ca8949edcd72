//! A task's limits as cgroup v1 control-file values, in the order they are written.
//!
//! - cpu: `cpu.shares`; a hard limit as `cpu.cfs_period_us` = 100000 and
//!   `cpu.cfs_quota_us` = millicores * 100.
//! - memory: `memory.limit_in_bytes` is the hard limit (the memory max when one is given,
//!   else the memory limit). With a max, the limit becomes `memory.soft_limit_in_bytes`: v1
//!   has no `memory.high`, and the soft limit is what it reclaims towards under pressure.
//! - swap off: `memory.memsw.limit_in_bytes` = the hard limit (memory plus swap may not exceed
//!   memory alone), where the file exists; without swap accounting (`swapaccount=0`, or a
//!   kernel built without it) it does not, and the task may swap. `memory.swappiness` = 0
//!   where the kernel accepts it.
//! - pids: `pids.max`.
//! - cpuset: `cpuset.cpus` when the task has one (its directory in the cpuset hierarchy got
//!   the parent's `cpuset.mems` first).

use execdriver_core::Resources;

use crate::cgroups::limits::{CPU_PERIOD_US, Setting, When, cpu_quota_us, page_floor};

/// The v1 settings for `resources`, memory rounded down to `page`-byte pages.
pub(in crate::cgroups) fn settings(resources: &Resources, page: u64) -> Vec<Setting> {
    let limit = page_floor(resources.memory_limit_bytes, page);
    let hard = page_floor(
        resources
            .memory_max_bytes
            .unwrap_or(resources.memory_limit_bytes),
        page,
    );
    let mut out = vec![Setting::always("cpu", "cpu.shares", resources.cpu_shares)];
    if let Some(millicores) = resources.cpu_max_millicores {
        // The period first: the quota is checked against it.
        out.push(Setting::always("cpu", "cpu.cfs_period_us", CPU_PERIOD_US));
        out.push(Setting::always(
            "cpu",
            "cpu.cfs_quota_us",
            cpu_quota_us(millicores),
        ));
    }
    // The memory limit before memsw: memsw may never be below it.
    out.push(Setting::always("memory", "memory.limit_in_bytes", hard));
    if resources.memory_max_bytes.is_some() {
        out.push(Setting::always(
            "memory",
            "memory.soft_limit_in_bytes",
            limit,
        ));
    }
    out.push(Setting::always("memory", "memory.memsw.limit_in_bytes", hard).when(When::IfPresent));
    out.push(Setting::always("memory", "memory.swappiness", 0).when(When::IfAccepted));
    out.push(Setting::always("pids", "pids.max", resources.pids_max));
    if let Some(cpus) = crate::cgroups::cpuset::canonical(resources) {
        out.push(Setting::always("cpuset", "cpuset.cpus", cpus));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(r: &Resources) -> Vec<(&'static str, String, When)> {
        settings(r, 4096)
            .into_iter()
            .map(|s| (s.file, s.value, s.when))
            .collect()
    }

    #[test]
    fn defaults_set_shares_memory_swap_and_pids() {
        let r = Resources {
            cpu_shares: 512,
            memory_limit_bytes: 64 << 20,
            memory_max_bytes: None,
            pids_max: 64,
            cpu_max_millicores: None,
            ..Default::default()
        };
        let mib64 = (64u64 << 20).to_string();
        assert_eq!(
            values(&r),
            vec![
                ("cpu.shares", "512".into(), When::Always),
                ("memory.limit_in_bytes", mib64.clone(), When::Always),
                ("memory.memsw.limit_in_bytes", mib64, When::IfPresent),
                ("memory.swappiness", "0".into(), When::IfAccepted),
                ("pids.max", "64".into(), When::Always),
            ]
        );
    }

    #[test]
    fn max_is_the_hard_limit_and_limit_the_soft_one_and_cpus_a_quota() {
        let r = Resources {
            cpu_shares: 1024,
            memory_limit_bytes: 100_000_000,
            memory_max_bytes: Some(200_000_000),
            pids_max: 16,
            cpu_max_millicores: Some(1500),
            ..Default::default()
        };
        let v = values(&r);
        let get = |file: &str| {
            v.iter()
                .find(|(f, ..)| *f == file)
                .map(|(_, v, _)| v.as_str())
        };
        assert_eq!(get("cpu.cfs_period_us"), Some("100000"));
        assert_eq!(get("cpu.cfs_quota_us"), Some("150000"));
        // Rounded down to pages so that the read-back is exact.
        assert_eq!(get("memory.limit_in_bytes"), Some("199999488"));
        assert_eq!(get("memory.memsw.limit_in_bytes"), Some("199999488"));
        assert_eq!(get("memory.soft_limit_in_bytes"), Some("99999744"));
        let order: Vec<&str> = v.iter().map(|(f, ..)| *f).collect();
        let pos = |f: &str| order.iter().position(|o| *o == f).unwrap();
        assert!(pos("cpu.cfs_period_us") < pos("cpu.cfs_quota_us"));
        assert!(pos("memory.limit_in_bytes") < pos("memory.memsw.limit_in_bytes"));
        for (millicores, quota) in [(500, "50000"), (2000, "200000"), (10, "1000")] {
            let r = Resources {
                cpu_max_millicores: Some(millicores),
                ..r.clone()
            };
            let v = values(&r);
            let q = v.iter().find(|(f, ..)| *f == "cpu.cfs_quota_us").unwrap();
            assert_eq!(q.1, quota, "{millicores}");
        }
    }
}
