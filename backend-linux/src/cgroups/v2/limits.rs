//! A task's limits as cgroup v2 control-file values, in the order they are written.
//!
//! - cpu: `cpu.weight` from the shares ([`crate::cgroups::limits::shares_to_weight`]); a
//!   hard limit as `cpu.max` = `"<millicores * 100> 100000"`.
//! - memory: with a memory max, `memory.high` = the limit (throttled and reclaimed above it)
//!   and `memory.max` = the max (OOM-killed above it); without one, `memory.max` = the limit.
//! - swap off: `memory.swap.max` = 0 where the file exists (kernels built without swap
//!   accounting lack it).
//! - `memory.oom.group` = 1 where it exists (Linux 4.19+), so that an OOM kill takes every
//!   process of the task, not one.
//! - pids: `pids.max`.
//! - cpuset: `cpuset.cpus` when the task has one (the parent enables cpuset for it).

use execdriver_core::Resources;

use crate::cgroups::limits::{Setting, When, cpu_max_line, page_floor, shares_to_weight};

/// The v2 settings for `resources`, memory rounded down to `page`-byte pages.
pub(in crate::cgroups) fn settings(resources: &Resources, page: u64) -> Vec<Setting> {
    let limit = page_floor(resources.memory_limit_bytes, page);
    let mut out = vec![Setting::always(
        "cpu",
        "cpu.weight",
        shares_to_weight(resources.cpu_shares),
    )];
    if let Some(millicores) = resources.cpu_max_millicores {
        out.push(Setting::always("cpu", "cpu.max", cpu_max_line(millicores)));
    }
    match resources.memory_max_bytes {
        Some(max) => {
            out.push(Setting::always("memory", "memory.high", limit));
            out.push(Setting::always(
                "memory",
                "memory.max",
                page_floor(max, page),
            ));
        }
        None => out.push(Setting::always("memory", "memory.max", limit)),
    }
    out.push(Setting::always("memory", "memory.swap.max", 0).when(When::IfPresent));
    out.push(Setting::always("memory", "memory.oom.group", 1).when(When::IfPresent));
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
    fn limit_alone_is_memory_max() {
        let r = Resources {
            cpu_shares: 1024,
            memory_limit_bytes: 64 << 20,
            memory_max_bytes: None,
            pids_max: 64,
            cpu_max_millicores: None,
            ..Default::default()
        };
        assert_eq!(
            values(&r),
            vec![
                ("cpu.weight", "39".into(), When::Always),
                ("memory.max", (64u64 << 20).to_string(), When::Always),
                ("memory.swap.max", "0".into(), When::IfPresent),
                ("memory.oom.group", "1".into(), When::IfPresent),
                ("pids.max", "64".into(), When::Always),
            ]
        );
    }

    #[test]
    fn max_with_high_at_the_limit_and_cpu_max() {
        let r = Resources {
            cpu_shares: 2,
            memory_limit_bytes: 100_000_000,
            memory_max_bytes: Some(200_000_000),
            pids_max: 16,
            cpu_max_millicores: Some(500),
            ..Default::default()
        };
        let v = values(&r);
        let get = |file: &str| {
            v.iter()
                .find(|(f, ..)| *f == file)
                .map(|(_, v, _)| v.as_str())
        };
        assert_eq!(get("cpu.weight"), Some("1"));
        assert_eq!(get("cpu.max"), Some("50000 100000"));
        assert_eq!(get("memory.high"), Some("99999744"));
        assert_eq!(get("memory.max"), Some("199999488"));
        for (shares, weight) in [(262_144, "10000"), (1024, "39")] {
            let v = values(&Resources {
                cpu_shares: shares,
                ..r.clone()
            });
            assert_eq!(v[0].1, weight, "{shares}");
        }
        for (millicores, line) in [(1500, "150000 100000"), (2000, "200000 100000")] {
            let v = values(&Resources {
                cpu_max_millicores: Some(millicores),
                ..r.clone()
            });
            assert_eq!(v[1], ("cpu.max", line.to_owned(), When::Always));
        }
    }
}
