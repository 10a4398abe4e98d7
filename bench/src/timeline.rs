//! Acknowledgement latency over the course of a run (`--timeline-ms N`): the records
//! grouped by their due time into intervals of N ms, each with its own percentiles, as
//! the OpenMessaging Benchmark reports latency per period. It shows where in a run its
//! tail comes from: the first fraction of a second, a disk stall, a failover.
//!
//! Every record's latency, the warm-up's included, is kept (4 bytes each) until the
//! end of the run, so the percentiles of each interval are exact.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Intervals a run may have: beyond them, records count in the last one.
const MAX_INTERVALS: usize = 1_000_000;

/// Latencies grouped by due time.
pub struct Timeline {
    start: Instant,
    interval: Duration,
    /// Per interval, the latencies of its records in µs.
    intervals: Vec<Vec<u32>>,
}

/// One interval's records.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Start of the interval, in ms from the start of the load.
    pub from_ms: u64,
    pub records: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Timeline {
    pub fn new(start: Instant, interval: Duration) -> Timeline {
        Timeline {
            start,
            interval: interval.max(Duration::from_millis(1)),
            intervals: Vec::new(),
        }
    }

    /// Notes a record due at `due` that took `latency`.
    pub fn record(&mut self, due: Instant, latency: Duration) {
        let at = due.saturating_duration_since(self.start).as_nanos() / self.interval.as_nanos();
        let at = (at as usize).min(MAX_INTERVALS - 1);
        if self.intervals.len() <= at {
            self.intervals.resize_with(at + 1, Vec::new);
        }
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.intervals[at].push(micros);
    }

    /// Adds another producer's timeline (same start and interval).
    pub fn merge(&mut self, other: Timeline) {
        if self.intervals.len() < other.intervals.len() {
            self.intervals.resize_with(other.intervals.len(), Vec::new);
        }
        for (mine, theirs) in self.intervals.iter_mut().zip(other.intervals) {
            mine.extend(theirs);
        }
    }

    /// The intervals' exact percentiles, empty intervals included.
    pub fn finish(self) -> Vec<Interval> {
        let step = self.interval.as_millis() as u64;
        self.intervals
            .into_iter()
            .enumerate()
            .map(|(i, mut latencies)| {
                latencies.sort_unstable();
                let at = |q: f64| -> f64 {
                    if latencies.is_empty() {
                        return 0.0;
                    }
                    let rank =
                        ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
                    f64::from(latencies[rank - 1]) / 1000.0
                };
                Interval {
                    from_ms: i as u64 * step,
                    records: latencies.len() as u64,
                    p50_ms: at(0.5),
                    p99_ms: at(0.99),
                    max_ms: at(1.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_records_by_due_time_with_exact_percentiles() {
        let start = Instant::now();
        let mut a = Timeline::new(start, Duration::from_millis(10));
        let mut b = Timeline::new(start, Duration::from_millis(10));
        for i in 1..=100u64 {
            a.record(
                start + Duration::from_millis(3),
                Duration::from_micros(i * 100),
            );
        }
        b.record(start + Duration::from_millis(25), Duration::from_millis(7));
        a.merge(b);
        let intervals = a.finish();
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[0].records, 100);
        assert_eq!(intervals[0].p50_ms, 5.0);
        assert_eq!(intervals[0].p99_ms, 9.9);
        assert_eq!(intervals[0].max_ms, 10.0);
        assert_eq!(intervals[1].records, 0);
        assert_eq!((intervals[2].from_ms, intervals[2].records), (20, 1));
        assert_eq!(intervals[2].max_ms, 7.0);
    }
}
