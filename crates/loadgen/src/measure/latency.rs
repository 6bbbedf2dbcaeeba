//! Emit-to-client latency: an HDR histogram of (client receive time − the event's
//! `timestamp`), in microseconds, and its summary.
//!
//! The server stamps each event when it is emitted, with microseconds, from the same machine
//! clock loadgen reads, so the difference is the whole path: the bridge, the connection's
//! queue, the socket, and the client's own scheduling (which is why loadgen reports its own
//! CPU next to these figures).

use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded, in microseconds (10 minutes); larger values are clamped.
const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
    /// Events whose timestamp was after the receive time (a clock step); recorded as 0.
    clock_skewed: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            // Three significant digits: 0.1% resolution from 1 µs to 10 minutes.
            // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low).
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("constant histogram bounds are valid"),
            clock_skewed: 0,
        }
    }
}

impl Latencies {
    /// Records one event emitted at `emitted` and received at `received`.
    pub fn record(&mut self, emitted: SystemTime, received: SystemTime) {
        let micros = match received.duration_since(emitted) {
            Ok(d) => u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS),
            Err(_) => {
                self.clock_skewed += 1;
                0
            }
        };
        self.record_micros(micros);
    }

    /// Records one latency in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.histogram.saturating_record(micros.min(MAX_MICROS));
    }

    /// The percentiles and extremes, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let ms = |micros: u64| micros as f64 / 1_000.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1_000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            clock_skewed: self.clock_skewed,
        }
    }
}

/// The summary of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Events recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Events stamped after they were received (a clock step); counted as 0 ms.
    pub clock_skewed: u64,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Records `values` (µs) and compares the summary's percentiles within HDR's precision.
    fn check(values: &[u64], expected: [f64; 5]) {
        let mut latencies = Latencies::default();
        for &v in values {
            latencies.record_micros(v);
        }
        let s = latencies.summary();
        let got = [s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms];
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() <= e * 0.001 + 0.001,
                "{got:?} vs {expected:?}"
            );
        }
        assert_eq!(s.count, values.len() as u64);
    }

    #[test]
    fn percentiles_of_known_distributions() {
        // 1..=1000 ms: the p-th percentile is p·1000 ms.
        let uniform: Vec<u64> = (1..=1_000).map(|ms| ms * 1_000).collect();
        check(&uniform, [500.0, 900.0, 990.0, 999.0, 1_000.0]);
        // One slow event among 10,000 fast ones shows up only in the max.
        let mut spiky = vec![200; 10_000];
        spiky.push(9_000_000);
        check(&spiky, [0.2, 0.2, 0.2, 0.2, 9_000.0]);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }

    #[test]
    fn receive_before_emit_counts_as_skew_not_as_a_huge_value() {
        let now = SystemTime::now();
        let mut latencies = Latencies::default();
        latencies.record(now + Duration::from_millis(5), now);
        latencies.record(now, now + Duration::from_millis(7));
        let s = latencies.summary();
        assert_eq!(s.clock_skewed, 1);
        assert!((s.max_ms - 7.0).abs() < 0.01, "{s:?}");
    }
}
