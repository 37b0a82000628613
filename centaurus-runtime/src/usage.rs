//! What workloads use: CPU rates from cumulative counters (cgroups for runc containers,
//! `/proc` for QEMU guests and the host), working-set memory, and figures for simulated
//! workloads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use centaurus_core::remote::Usage;

/// A rate is taken over at least this long; a shorter gap reuses the last rate.
const MIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// CPU rates from cumulative counters, by workload: each reading against the one before
/// (at least [`MIN_WINDOW`] before), or against the workload's start for the first.
#[derive(Default)]
pub struct Rates(Mutex<HashMap<String, Reading>>);

#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    total_ns: u64,
    rate: u64,
}

impl Rates {
    /// The CPU rate of `key` (nanocores) from its cumulative CPU time `total_ns`, now;
    /// `running_for` is how long it has run (for the first reading).
    pub fn rate(&self, key: &str, total_ns: u64, running_for: std::time::Duration) -> u64 {
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let rate = match m.get(key) {
            Some(r) if now - r.at < MIN_WINDOW => return r.rate,
            Some(r) => per_second(total_ns.saturating_sub(r.total_ns), now - r.at),
            None => per_second(total_ns, running_for.max(MIN_WINDOW)),
        };
        m.insert(
            key.to_owned(),
            Reading {
                at: now,
                total_ns,
                rate,
            },
        );
        rate
    }

    /// Forgets workloads not in `live`.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live(k));
    }
}

fn per_second(ns: u64, over: std::time::Duration) -> u64 {
    (u128::from(ns) * 1_000_000_000 / over.as_nanos().max(1)) as u64
}

fn read(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        (k.trim_end_matches(':') == name)
            .then(|| v.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// Cumulative CPU time (ns) and working set (bytes) of the cgroup `path` (as in an OCI
/// spec's `cgroupsPath`), from cgroup v2 or v1 files.
pub fn cgroup(path: &str) -> Option<(u64, u64)> {
    let rel = path.trim_start_matches('/');
    let root = std::path::Path::new("/sys/fs/cgroup");
    let v2 = root.join(rel);
    if let Some(stat) = read(&v2.join("cpu.stat")) {
        let cpu = field(&stat, "usage_usec")? * 1000;
        let current: u64 = read(&v2.join("memory.current"))?.trim().parse().ok()?;
        let inactive = read(&v2.join("memory.stat"))
            .and_then(|s| field(&s, "inactive_file"))
            .unwrap_or(0);
        return Some((cpu, current.saturating_sub(inactive)));
    }
    let cpu: u64 = read(&root.join("cpuacct").join(rel).join("cpuacct.usage"))?
        .trim()
        .parse()
        .ok()?;
    let memory = root.join("memory").join(rel);
    let used: u64 = read(&memory.join("memory.usage_in_bytes"))?
        .trim()
        .parse()
        .ok()?;
    let inactive = read(&memory.join("memory.stat"))
        .and_then(|s| field(&s, "total_inactive_file"))
        .unwrap_or(0);
    Some((cpu, used.saturating_sub(inactive)))
}

/// Cumulative CPU time (ns) and resident memory (bytes) of the process `pid`.
pub fn process(pid: u32) -> Option<(u64, u64)> {
    let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")))?;
    // Fields after the command (which may hold spaces), from its closing parenthesis:
    // state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let statm = read(std::path::Path::new(&format!("/proc/{pid}/statm")))?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        ticks * 1_000_000_000 / hz,
        resident * rustix::param::page_size() as u64,
    ))
}

/// The host's cumulative busy CPU time (ns, every core) and memory in use (bytes).
pub fn host() -> Option<(u64, u64)> {
    let stat = read(std::path::Path::new("/proc/stat"))?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: u64 = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4).unwrap_or(&0);
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let meminfo = read(std::path::Path::new("/proc/meminfo"))?;
    let total = field(&meminfo, "MemTotal")? * 1024;
    let available = field(&meminfo, "MemAvailable")? * 1024;
    Some((busy * 1_000_000_000 / hz, total.saturating_sub(available)))
}

/// Figures for a simulated workload: steady, different from workload to workload (2 to
/// 40 millicores, 4 to 64 MiB), the same on every reading.
pub fn simulated(key: &str) -> Usage {
    let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    Usage {
        cpu_nanocores: (2 + h % 39) * 1_000_000,
        memory_bytes: (4 + (h >> 16) % 61) * 1024 * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_counter_and_hold_within_a_window() {
        let rates = Rates::default();
        // Half a core for two seconds since the start.
        assert_eq!(
            rates.rate("w", 1_000_000_000, std::time::Duration::from_secs(2)),
            500_000_000
        );
        // Read again at once: the same rate, not a division by almost nothing.
        assert_eq!(
            rates.rate("w", 1_000_000_001, std::time::Duration::from_secs(2)),
            500_000_000
        );
        rates.retain(|k| k != "w");
        assert_eq!(rates.rate("w", 0, std::time::Duration::ZERO), 0);
    }

    #[test]
    fn this_host_and_process_can_be_read() {
        let (cpu, mem) = host().expect("/proc/stat and /proc/meminfo");
        assert!(cpu > 0 && mem > 0);
        let (_, rss) = process(std::process::id()).expect("our own /proc entry");
        assert!(rss > 0);
        let a = simulated("uid/c");
        assert_eq!(a, simulated("uid/c"));
        assert!((2_000_000..=40_000_000).contains(&a.cpu_nanocores));
    }
}
