//! Task stats as Nomad reads them: cpu percentages from the difference of two readings,
//! memory as read, and the list of fields actually measured.

use crate::engine::Usage;
use crate::proto::drivers::{self, cpu_usage, memory_usage};

/// Turns successive readings of one task into Nomad's usage records.
#[derive(Debug, Clone, Default)]
pub struct CpuTracker {
    previous: Option<Usage>,
    mhz_per_core: Option<f64>,
}

impl CpuTracker {
    /// A tracker; `mhz_per_core` turns percentages into Nomad's MHz "ticks" when known.
    pub fn new(mhz_per_core: Option<f64>) -> Self {
        Self {
            previous: None,
            mhz_per_core,
        }
    }

    /// The usage record for reading `now`. The first reading has no earlier one to compare
    /// with, so its percentages are 0.
    pub fn record(&mut self, now: Usage) -> drivers::TaskResourceUsage {
        let (user, system) = match self.previous {
            Some(prev) if now.at > prev.at => {
                let wall = (now.at - prev.at).as_nanos() as f64;
                let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 / wall * 100.0;
                (
                    pct(now.user_ns, prev.user_ns),
                    pct(now.system_ns, prev.system_ns),
                )
            }
            _ => (0.0, 0.0),
        };
        self.previous = Some(now);
        let percent = user + system;
        let mut cpu_fields = vec![
            cpu_usage::Fields::SystemMode,
            cpu_usage::Fields::UserMode,
            cpu_usage::Fields::Percent,
            cpu_usage::Fields::ThrottledPeriods,
            cpu_usage::Fields::ThrottledTime,
        ];
        let total_ticks = match self.mhz_per_core {
            Some(mhz) => {
                cpu_fields.push(cpu_usage::Fields::TotalTicks);
                percent / 100.0 * mhz
            }
            None => 0.0,
        };
        drivers::TaskResourceUsage {
            cpu: Some(drivers::CpuUsage {
                system_mode: system,
                user_mode: user,
                total_ticks,
                throttled_periods: now.throttled_periods,
                throttled_time: now.throttled_ns,
                percent,
                measured_fields: cpu_fields.into_iter().map(|f| f as i32).collect(),
            }),
            memory: Some(drivers::MemoryUsage {
                rss: now.rss,
                cache: now.cache,
                max_usage: now.max_usage,
                swap: now.swap,
                // The engine reports no total usage and no kernel memory yet: left out of
                // measured_fields so Nomad does not show zeros as readings.
                measured_fields: [
                    memory_usage::Fields::Rss,
                    memory_usage::Fields::Cache,
                    memory_usage::Fields::MaxUsage,
                    memory_usage::Fields::Swap,
                ]
                .into_iter()
                .map(|f| f as i32)
                .collect(),
                ..Default::default()
            }),
        }
    }
}

/// The node's cpu speed in MHz per core, from /proc/cpuinfo (the highest `cpu MHz` line).
pub fn cpu_mhz_per_core() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz(&text)
}

fn parse_cpu_mhz(cpuinfo: &str) -> Option<f64> {
    cpuinfo
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "cpu MHz").then(|| value.trim().parse::<f64>().ok())?
        })
        .filter(|mhz| mhz.is_finite() && *mhz > 0.0)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn usage(at_ms: u64, user_ms: u64, system_ms: u64) -> Usage {
        Usage {
            at: Duration::from_millis(at_ms),
            user_ns: user_ms * 1_000_000,
            system_ns: system_ms * 1_000_000,
            rss: 10,
            cache: 20,
            swap: 30,
            max_usage: 40,
            throttled_periods: 2,
            throttled_ns: 3,
            pids: 1,
            read_at: None,
        }
    }

    #[test]
    fn percent_comes_from_deltas() {
        let mut t = CpuTracker::new(Some(2000.0));
        let first = t.record(usage(1000, 500, 100));
        let cpu = first.cpu.expect("cpu");
        assert_eq!(cpu.percent, 0.0);
        // 1 s later: 250 ms user + 250 ms system = 50 % of one core.
        let second = t.record(usage(2000, 750, 350)).cpu.expect("cpu");
        assert!((second.user_mode - 25.0).abs() < 1e-9);
        assert!((second.system_mode - 25.0).abs() < 1e-9);
        assert!((second.percent - 50.0).abs() < 1e-9);
        assert!((second.total_ticks - 1000.0).abs() < 1e-9);
        assert!(
            second
                .measured_fields
                .contains(&(cpu_usage::Fields::TotalTicks as i32))
        );
        assert_eq!(second.throttled_periods, 2);
        // A clock that did not move gives 0, not a division by zero.
        let third = t.record(usage(2000, 900, 400)).cpu.expect("cpu");
        assert_eq!(third.percent, 0.0);
    }

    #[test]
    fn memory_fields_are_the_measured_ones() {
        let mut t = CpuTracker::new(None);
        let r = t.record(usage(1, 0, 0));
        let m = r.memory.expect("memory");
        assert_eq!((m.rss, m.cache, m.swap, m.max_usage), (10, 20, 30, 40));
        assert_eq!(m.measured_fields.len(), 4);
        assert!(
            !m.measured_fields
                .contains(&(memory_usage::Fields::Usage as i32))
        );
        let cpu = r.cpu.expect("cpu");
        assert!(
            !cpu.measured_fields
                .contains(&(cpu_usage::Fields::TotalTicks as i32))
        );
    }

    #[test]
    fn cpuinfo_mhz_is_the_highest() {
        let text = "processor\t: 0\ncpu MHz\t\t: 2400.000\nprocessor\t: 1\ncpu MHz\t\t: 2600.5\n";
        assert_eq!(parse_cpu_mhz(text), Some(2600.5));
        assert_eq!(parse_cpu_mhz("processor : 0\n"), None);
    }
}
