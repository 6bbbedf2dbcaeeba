//! Emit-to-client latency: an HDR histogram of (client receive time − the event's
//! `timestamp`), in microseconds, and its summary.
//!
//! The server stamps each event when it is emitted, with microseconds, from the same machine
//! clock loadgen reads, so the difference is the whole path: the bridge, the connection's
//! queue, the socket, and the client's own scheduling (which is why loadgen reports its own
//! CPU next to these figures).
//!
//! Beside the whole load's histogram, each [`WINDOW`] of receive time (from the first event
//! received) has one of its own, so a latency that grows as a load goes on shows as such
//! rather than as one wide distribution.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded, in microseconds (10 minutes); larger values are clamped.
const MAX_MICROS: u64 = 600_000_000;

/// Windows kept: an hour of load. Events received later count in the whole load's
/// histogram only.
const MAX_WINDOWS: usize = 720;

/// The span of receive time each window's histogram covers.
pub const WINDOW: Duration = Duration::from_secs(5);

/// A latency histogram, for the whole load and for each [`WINDOW`] of it.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
    /// Events whose timestamp was after the receive time (a clock step); recorded as 0.
    clock_skewed: u64,
    /// When the first event was received: window 0 starts there.
    first: Option<SystemTime>,
    /// One histogram per window, in order (a window with no event holds an empty one).
    windows: Vec<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            histogram: histogram(3),
            clock_skewed: 0,
            first: None,
            windows: Vec::new(),
        }
    }
}

/// A histogram from 1 µs to [`MAX_MICROS`] with `digits` significant digits (3: 0.1%
/// resolution). The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low).
fn histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, digits).expect("constant histogram bounds are valid")
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
        let first = *self.first.get_or_insert(received);
        // A receive time before the first one (threads racing to the lock) counts in window 0.
        let since = received.duration_since(first).unwrap_or_default();
        let index = usize::try_from(since.as_secs() / WINDOW.as_secs()).unwrap_or(usize::MAX);
        if index >= MAX_WINDOWS {
            return;
        }
        if self.windows.len() <= index {
            // Two digits (1%) are plenty for a window's percentiles and keep each small.
            self.windows.resize_with(index + 1, || histogram(2));
        }
        self.windows[index].saturating_record(micros.min(MAX_MICROS));
    }

    /// Records one latency in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.histogram.saturating_record(micros.min(MAX_MICROS));
    }

    /// The percentiles and extremes, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        summarise(&self.histogram, self.clock_skewed)
    }

    /// Each window's percentiles, in order from the first event received.
    pub fn windows(&self) -> Vec<LatencyWindow> {
        (0u64..)
            .zip(&self.windows)
            .map(|(i, h)| {
                let s = summarise(h, 0);
                LatencyWindow {
                    from_s: i * WINDOW.as_secs(),
                    count: s.count,
                    p50_ms: s.p50_ms,
                    p99_ms: s.p99_ms,
                    max_ms: s.max_ms,
                }
            })
            .collect()
    }
}

/// The percentiles and extremes of `h`, in milliseconds.
fn summarise(h: &Histogram<u64>, clock_skewed: u64) -> LatencySummary {
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
        clock_skewed,
    }
}

/// One [`WINDOW`] of a load's latencies, by receive time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyWindow {
    /// Its start, in seconds after the first event was received.
    pub from_s: u64,
    /// Events received in it.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
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
    fn each_window_holds_the_events_received_in_it() {
        let start = SystemTime::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut latencies = Latencies::default();
        // Window 0 (0 to 5 s): 1 ms each; window 1 is empty; window 2 (10 to 15 s): 20 ms.
        for ms in [0, 1_000, 4_999] {
            latencies.record(at(ms) - Duration::from_millis(1), at(ms));
        }
        for ms in [10_000, 14_000] {
            latencies.record(at(ms) - Duration::from_millis(20), at(ms));
        }
        let windows = latencies.windows();
        let got: Vec<(u64, u64)> = windows.iter().map(|w| (w.from_s, w.count)).collect();
        assert_eq!(got, [(0, 3), (5, 0), (10, 2)]);
        assert!((windows[0].p99_ms - 1.0).abs() < 0.02, "{windows:?}");
        assert!((windows[2].p50_ms - 20.0).abs() < 0.2, "{windows:?}");
        assert_eq!(latencies.summary().count, 5);
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
