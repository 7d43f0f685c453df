//! Latency samples to percentiles.

use std::time::Duration;

/// The summary of one series of signatures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Signatures measured.
    pub count: usize,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Slowest signature, µs.
    pub max_us: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Signatures per second over the whole run (wall clock), successful ones only.
    pub per_second: f64,
    /// Requests that failed (not in the latencies).
    pub errors: usize,
}

impl Summary {
    /// Summarises `latencies` measured over `wall` (the whole run's wall-clock time).
    pub fn new(mut latencies: Vec<Duration>, wall: Duration) -> Summary {
        latencies.sort_unstable();
        let count = latencies.len();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let total: Duration = latencies.iter().sum();
        Summary {
            count,
            p50_us: percentile(&latencies, 0.50).map_or(0.0, us),
            p99_us: percentile(&latencies, 0.99).map_or(0.0, us),
            max_us: latencies.last().copied().map_or(0.0, us),
            mean_us: if count == 0 {
                0.0
            } else {
                us(total) / count as f64
            },
            per_second: if wall.is_zero() {
                0.0
            } else {
                count as f64 / wall.as_secs_f64()
            },
            errors: 0,
        }
    }

    /// The same summary with `errors` failed requests.
    pub fn with_errors(self, errors: usize) -> Summary {
        Summary { errors, ..self }
    }
}

/// The nearest-rank percentile `p` (0 < p <= 1) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let summary = Summary::new(samples, Duration::from_secs(2));
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50_us, 50.0);
        assert_eq!(summary.p99_us, 99.0);
        assert_eq!(summary.max_us, 100.0);
        assert!((summary.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(summary.per_second, 50.0);
    }

    #[test]
    fn empty_series() {
        let summary = Summary::new(Vec::new(), Duration::ZERO);
        assert_eq!(summary.count, 0);
        assert_eq!(summary.p50_us, 0.0);
    }
}
