//! Request metrics in the Prometheus text format, served at `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

/// Latency bucket bounds in seconds (Kubernetes' apiserver buckets, trimmed).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and latency histograms per verb, and the number of open watches.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    watches: AtomicI64,
}

impl Metrics {
    /// Records one finished request. Watches are not timed (they last until closed).
    pub fn observe(&self, verb: &'static str, code: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((verb, code))
            .or_default() += 1;
        if verb == "WATCH" {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().expect("metrics lock");
        let h = latency.entry(verb).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts a watch opening (`+1`) or closing (`-1`).
    pub fn watch_delta(&self, delta: i64) {
        self.watches.fetch_add(delta, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Requests by verb and HTTP code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, code), n) in self.requests.lock().expect("metrics lock").iter() {
            out.push_str(&format!(
                "apiserver_request_total{{verb=\"{verb}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP apiserver_request_duration_seconds Request latency by verb (watches excluded).\n# TYPE apiserver_request_duration_seconds histogram\n");
        for (verb, h) in self.latency.lock().expect("metrics lock").iter() {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                out.push_str(&format!("apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",le=\"{bound}\"}} {n}\n"));
            }
            out.push_str(&format!(
                "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",le=\"+Inf\"}} {}\n",
                h.count
            ));
            out.push_str(&format!(
                "apiserver_request_duration_seconds_sum{{verb=\"{verb}\"}} {}\n",
                h.sum
            ));
            out.push_str(&format!(
                "apiserver_request_duration_seconds_count{{verb=\"{verb}\"}} {}\n",
                h.count
            ));
        }
        out.push_str(&format!(
            "# HELP apiserver_watches Open watch streams.\n# TYPE apiserver_watches gauge\napiserver_watches {}\n",
            self.watches.load(Ordering::Relaxed)
        ));
        if let Some(rss) = resident_bytes() {
            out.push_str(&format!(
                "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"
            ));
        }
        out
    }
}

/// The resident memory of this process, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.observe("GET", 200, Duration::from_micros(500));
        m.observe("GET", 404, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains("apiserver_request_total{verb=\"GET\",code=\"404\"} 1"));
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{verb=\"GET\",le=\"0.001\"} 1")
        );
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{verb=\"GET\",le=\"0.05\"} 2")
        );
        assert!(text.contains("apiserver_request_duration_seconds_count{verb=\"GET\"} 2"));
    }
}
