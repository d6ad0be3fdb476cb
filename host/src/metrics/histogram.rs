//! A Prometheus histogram recorded with two relaxed atomic additions and no lock.
//!
//! prometheus-client's own `Histogram` takes a write lock and scans its buckets for every
//! observation; on the request path that lock would be taken by every response on every core.
//! This one keeps a counter per bucket and the sum as integers in the base unit's fraction
//! (nanoseconds, bytes), finds the bucket by binary search over fixed bounds, and is exported
//! through prometheus-client's encoder like any of its metrics. A scrape reads the counters one
//! by one, so it may see an observation in a bucket before it sees it in the sum; Prometheus
//! rates over such scrapes are unaffected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the latency buckets in nanoseconds: 100 µs to 30 s in steps of 1, 2.5, 5, as
/// a cache's answers span a memory hit (a fraction of a millisecond) to a large object fetched
/// from S3 (seconds).
const LATENCY_BOUNDS_NANOS: [u64; 17] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Upper bounds of the size buckets in bytes: 1 KiB to 4 GiB in powers of 4, from a small
/// object to the large artefacts a cache of build outputs copies.
const SIZE_BOUNDS_BYTES: [u64; 12] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
    1 << 32,
];

/// A histogram with fixed buckets; clones share the counts.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds (inclusive) in integer units, ascending; the last bucket is `+Inf`.
    bounds: &'static [u64],
    /// Integer units per exported unit (1e9 for nanoseconds exported as seconds).
    units_per_exported: f64,
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations in integer units.
    sum: AtomicU64,
}

impl Histogram {
    /// Durations, exported in seconds, with buckets from 100 µs to 30 s.
    pub fn seconds() -> Histogram {
        Histogram::new(&LATENCY_BOUNDS_NANOS, 1e9)
    }

    /// Sizes, exported in bytes, with buckets from 1 KiB to 4 GiB.
    pub fn bytes() -> Histogram {
        Histogram::new(&SIZE_BOUNDS_BYTES, 1.0)
    }

    fn new(bounds: &'static [u64], units_per_exported: f64) -> Histogram {
        debug_assert!(bounds.is_sorted(), "bucket bounds ascend");
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            inner: Arc::new(Inner { bounds, units_per_exported, counts, sum: AtomicU64::new(0) }),
        }
    }

    /// Records one duration (of a histogram made by [`Histogram::seconds`]).
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value in integer units (nanoseconds, bytes).
    pub fn observe(&self, value: u64) {
        // A value equal to a bound belongs to that bound's bucket (`le`, less or equal).
        let idx = self.inner.bounds.partition_point(|bound| *bound < value);
        self.inner.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.inner.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = inner
            .counts
            .iter()
            .enumerate()
            .map(|(idx, n)| {
                let n = n.load(Ordering::Relaxed);
                count += n;
                // Divided rather than multiplied by the reciprocal, so 100 µs is written 0.0001.
                // prometheus-client writes f64::MAX as `+Inf`.
                let bound = inner
                    .bounds
                    .get(idx)
                    .map_or(f64::MAX, |b| *b as f64 / inner.units_per_exported);
                (bound, n)
            })
            .collect();
        let sum = inner.sum.load(Ordering::Relaxed) as f64 / inner.units_per_exported;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::{Registry, Unit};

    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = Histogram::seconds();
        histogram.observe_duration(Duration::from_micros(100)); // on the first bound
        histogram.observe_duration(Duration::from_micros(101)); // just past it
        histogram.observe_duration(Duration::from_secs(31)); // past the last bound
        let mut registry = Registry::default();
        registry.register_with_unit("latency", "test", Unit::Seconds, histogram.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE latency_seconds histogram",
            "# UNIT latency_seconds seconds",
            "latency_seconds_count 3",
            "latency_seconds_bucket{le=\"0.0001\"} 1",
            "latency_seconds_bucket{le=\"0.00025\"} 2",
            "latency_seconds_bucket{le=\"30.0\"} 2",
            "latency_seconds_bucket{le=\"+Inf\"} 3",
            "latency_seconds_sum 31.000201",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert_eq!(histogram.count(), 3);
    }

    #[test]
    fn sizes_are_exported_in_bytes() {
        let histogram = Histogram::bytes();
        histogram.observe(1024);
        histogram.observe(1025);
        let mut registry = Registry::default();
        registry.register_with_unit("size", "test", Unit::Bytes, histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "size_bytes_bucket{le=\"1024.0\"} 1",
            "size_bytes_bucket{le=\"4096.0\"} 2",
            "size_bytes_sum 2049.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
