//! The Prometheus families of SPEC §4, exposed at `/metrics` in the OpenMetrics text format
//! (what `prometheus_client` writes: counters as `NAME_total`, ending in `# EOF`), which
//! Prometheus scrapes when served as [`CONTENT_TYPE`].
//!
//! Every count is taken from what happened (a response sent, a tier's answer, a backfill
//! manager output), never re-derived from policy here.
//!
//! Latencies and sizes are [`Histogram`]s named in base units (`_seconds`, `_bytes`), recorded
//! without a lock: a response's histograms are resolved once per (method, status class), a
//! tier's once per tier, as its counters are.

mod histogram;

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use http::Method;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use histogram::Histogram;

/// The media type of [`Metrics::encode`]'s text (OpenMetrics 1.0.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `rangecache_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The request method.
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of `rangecache_route_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `object`, `invalidate`, `stats`, `namespaces`, `metrics`, `healthz`, `readyz` or `other`.
    pub route: &'static str,
    /// The request method.
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of `rangecache_tier_reads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierReadLabels {
    /// The tier's configured name.
    pub tier: String,
    /// `hit`, `miss` or `error`.
    pub result: &'static str,
}

/// Labels of `rangecache_backfills_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackfillLabels {
    /// `started`, `deduped`, `committed`, `discarded`, `cancelled` or `skipped`.
    pub event: &'static str,
}

/// Labels of `rangecache_tier_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierWriteLabels {
    /// The tier's configured name.
    pub tier: String,
    /// `committed`, `aborted` or `error`.
    pub result: &'static str,
}

/// Labels of `rangecache_request_duration_seconds` and `rangecache_time_to_first_byte_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The request method, or `other` for a method the server has no route for.
    pub method: &'static str,
    /// `1xx`, `2xx`, `3xx`, `4xx` or `5xx`.
    pub status_class: &'static str,
}

/// Labels of `rangecache_tier_open_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierOpenLabels {
    /// The tier's configured name.
    pub tier: String,
    /// `open` (a read of bytes) or `stat` (metadata only, for a HEAD).
    pub op: &'static str,
}

/// A histogram family whose histograms all have the same buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of `rangecache_faults_injected_total` (built with the `faults` feature).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// The faulty tier's configured name.
    pub tier: String,
    /// `open`, `stat`, `read`, `create`, `write`, `commit` or `delete`.
    pub step: &'static str,
    /// `error`, `stall` or `truncate`.
    pub fault: &'static str,
}

/// The routes of `rangecache_route_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/api/v1/object/{namespace}/{key}`.
    Object,
    /// `/api/v1/object/{namespace}/{key}/invalidate`.
    Invalidate,
    /// `/api/v1/stats`.
    Stats,
    /// `/api/v1/namespaces`.
    Namespaces,
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Healthz,
    /// `/readyz`.
    Readyz,
    /// Anything else.
    Other,
}

impl Route {
    const ALL: [Route; 8] = [
        Route::Object,
        Route::Invalidate,
        Route::Stats,
        Route::Namespaces,
        Route::Metrics,
        Route::Healthz,
        Route::Readyz,
        Route::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Object => "object",
            Route::Invalidate => "invalidate",
            Route::Stats => "stats",
            Route::Namespaces => "namespaces",
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Other => "other",
        }
    }
}

/// Methods whose request counters are resolved once (any other is looked up each time).
const METHODS: [Method; 6] =
    [Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE, Method::OPTIONS];
/// The `method` label of the latency histograms: [`METHODS`], then every other method as one,
/// so a client cannot add series by inventing methods.
const LATENCY_METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "other"];
/// The `status_class` label of the latency histograms, by the status's first digit.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Statuses whose request counters are resolved once: every status the server answers with
/// on its own (any other is looked up each time).
const STATUSES: [u16; 14] = [200, 206, 304, 400, 401, 404, 405, 412, 413, 416, 431, 500, 502, 503];

/// The counters of one (route, method, status): one request is two atomic increments, with no
/// label built, hashed or looked up under the families' lock.
type RequestCounters = (Counter, Counter);

/// The `rangecache_tier_reads_total` counters of one tier, resolved once.
#[derive(Clone, Debug)]
pub struct TierReadCounters {
    hit: Counter,
    miss: Counter,
    error: Counter,
}

impl TierReadCounters {
    /// Counts one open with `result`: `hit`, `miss` or `error`.
    pub fn inc(&self, result: &str) {
        match result {
            "hit" => self.hit.inc(),
            "miss" => self.miss.inc(),
            _ => self.error.inc(),
        };
    }
}

/// The latency histograms of one (method, status class).
#[derive(Clone, Debug)]
pub struct Latency {
    /// `rangecache_request_duration_seconds`: from the request's head to its body's end.
    pub duration: Histogram,
    /// `rangecache_time_to_first_byte_seconds`: from the request's head to the first byte of
    /// the response body handed to the connection (the head, for an answer without a body).
    pub first_byte: Histogram,
}

/// Which (method, status class) a response's timings go to; see [`Metrics::latency`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySlot(u8);

/// The `rangecache_tier_open_duration_seconds` histograms of one tier, resolved once.
#[derive(Clone, Debug)]
pub struct TierOpenLatency {
    /// Opens of bytes.
    pub open: Histogram,
    /// Metadata lookups (HEAD).
    pub stat: Histogram,
}

/// The `rangecache_backfills_total` counter of each event, resolved once (so each is exported
/// from the start, and a scrape sees zeros rather than nothing).
#[derive(Clone, Debug)]
pub struct BackfillCounters {
    /// `started`.
    pub started: Counter,
    /// `deduped`.
    pub deduped: Counter,
    /// `committed`.
    pub committed: Counter,
    /// `discarded`.
    pub discarded: Counter,
    /// `cancelled`.
    pub cancelled: Counter,
    /// `skipped`.
    pub skipped: Counter,
}

/// The server's metric families.
pub struct Metrics {
    registry: Registry,
    /// Responses sent, by method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Responses sent, by route, method and status (object traffic apart from scrapes).
    pub route_requests: Family<RouteLabels, Counter>,
    /// Body bytes sent to clients.
    pub response_bytes: Counter,
    /// Body bytes received from clients on writes.
    pub request_bytes: Counter,
    /// Tier opens, by tier and result.
    pub tier_reads: Family<TierReadLabels, Counter>,
    /// Tier writes (client writes and backfills), by tier and result.
    pub tier_writes: Family<TierWriteLabels, Counter>,
    /// Backfill lifecycle events.
    pub backfills: Family<BackfillLabels, Counter>,
    /// `backfills`' counters, one per event, resolved once.
    pub backfill_events: BackfillCounters,
    /// Backfills currently copying.
    pub backfills_in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Bytes copied into tier 0 by committed backfills and tees.
    pub backfill_bytes: Counter<u64, AtomicU64>,
    /// Request durations, by method and status class.
    pub request_duration: Histograms<LatencyLabels>,
    /// Times to the first byte of the response, by method and status class.
    pub time_to_first_byte: Histograms<LatencyLabels>,
    /// Latency of each tier's opens and stats, by tier and operation.
    pub tier_open_duration: Histograms<TierOpenLabels>,
    /// How long committed copies into tier 0 took, from their start to their commit.
    pub backfill_duration: Histogram,
    /// Sizes of committed copies into tier 0.
    pub backfill_size: Histogram,
    /// Faults injected by `faulty` tiers, by tier, step and fault.
    #[cfg(feature = "faults")]
    pub faults_injected: Family<FaultLabels, Counter>,
    /// `requests` and `route_requests` counters resolved on first use, by
    /// [`Metrics::request_slot`].
    request_counters: Box<[OnceLock<RequestCounters>]>,
    /// Latency histograms resolved on first use, per (method, status class).
    latencies: Box<[OnceLock<Latency>]>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("rangecache");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Responses sent, by method and status", requests.clone());
        let route_requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "route_requests",
            "Responses sent, by route, method and status",
            route_requests.clone(),
        );
        let response_bytes = Counter::default();
        registry.register("response_bytes", "Body bytes sent to clients", response_bytes.clone());
        let request_bytes = Counter::default();
        registry.register(
            "request_bytes",
            "Body bytes received from clients on writes",
            request_bytes.clone(),
        );
        let tier_reads = Family::<TierReadLabels, Counter>::default();
        registry.register("tier_reads", "Tier opens, by tier and result", tier_reads.clone());
        let tier_writes = Family::<TierWriteLabels, Counter>::default();
        registry.register("tier_writes", "Tier writes, by tier and result", tier_writes.clone());
        let backfills = Family::<BackfillLabels, Counter>::default();
        registry.register("backfills", "Backfill lifecycle events", backfills.clone());
        let event = |event| backfills.get_or_create(&BackfillLabels { event }).clone();
        let backfill_events = BackfillCounters {
            started: event("started"),
            deduped: event("deduped"),
            committed: event("committed"),
            discarded: event("discarded"),
            cancelled: event("cancelled"),
            skipped: event("skipped"),
        };
        let backfills_in_flight = Gauge::default();
        registry.register(
            "backfills_in_flight",
            "Backfills currently copying into tier 0",
            backfills_in_flight.clone(),
        );
        let backfill_bytes = Counter::default();
        registry.register(
            "backfill_bytes",
            "Bytes copied into tier 0 by committed copies",
            backfill_bytes.clone(),
        );
        let request_duration =
            Histograms::<LatencyLabels>::new_with_constructor(Histogram::seconds);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's head to the end of its response, by method and status class",
            Unit::Seconds,
            request_duration.clone(),
        );
        let time_to_first_byte =
            Histograms::<LatencyLabels>::new_with_constructor(Histogram::seconds);
        registry.register_with_unit(
            "time_to_first_byte",
            "Time from a request's head to the first byte of its response body (the head when \
             there is no body), by method and status class",
            Unit::Seconds,
            time_to_first_byte.clone(),
        );
        let tier_open_duration =
            Histograms::<TierOpenLabels>::new_with_constructor(Histogram::seconds);
        registry.register_with_unit(
            "tier_open_duration",
            "Time a tier took to answer an open (bytes) or a stat (metadata), by tier",
            Unit::Seconds,
            tier_open_duration.clone(),
        );
        let backfill_duration = Histogram::seconds();
        registry.register_with_unit(
            "backfill_duration",
            "Time from a copy into tier 0 starting to its commit, for committed copies",
            Unit::Seconds,
            backfill_duration.clone(),
        );
        let backfill_size = Histogram::bytes();
        registry.register_with_unit(
            "backfill_size",
            "Sizes of the committed copies into tier 0",
            Unit::Bytes,
            backfill_size.clone(),
        );
        #[cfg(feature = "faults")]
        let faults_injected = Family::<FaultLabels, Counter>::default();
        #[cfg(feature = "faults")]
        registry.register(
            "faults_injected",
            "Faults injected by faulty tiers, by tier, step and fault",
            faults_injected.clone(),
        );
        Metrics {
            registry,
            #[cfg(feature = "faults")]
            faults_injected,
            requests,
            route_requests,
            response_bytes,
            request_bytes,
            tier_reads,
            tier_writes,
            backfills,
            backfill_events,
            backfills_in_flight,
            backfill_bytes,
            request_duration,
            time_to_first_byte,
            tier_open_duration,
            backfill_duration,
            backfill_size,
            request_counters: (0..Route::ALL.len() * METHODS.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            latencies: (0..LATENCY_METHODS.len() * STATUS_CLASSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }
}

impl Metrics {
    /// Counts one response and says where its timings go ([`Metrics::latency`]).
    pub fn request(&self, route: Route, method: &Method, status: u16) -> LatencySlot {
        let method_idx = METHODS.iter().position(|m| m == method);
        let looked_up;
        let (requests, route_requests) = match Metrics::request_slot(route, method_idx, status) {
            Some(slot) => self.request_counters[slot]
                .get_or_init(|| self.request_counters_of(route, method, status)),
            None => {
                looked_up = self.request_counters_of(route, method, status);
                &looked_up
            }
        };
        requests.inc();
        route_requests.inc();
        let method_idx = method_idx.unwrap_or(LATENCY_METHODS.len() - 1);
        // The http crate holds statuses to 100..=999; the server sends none past 5xx.
        let class_idx = usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        let slot = method_idx * STATUS_CLASSES.len() + class_idx;
        self.latencies[slot].get_or_init(|| {
            let labels = LatencyLabels {
                method: LATENCY_METHODS[method_idx],
                status_class: STATUS_CLASSES[class_idx],
            };
            Latency {
                duration: self.request_duration.get_or_create(&labels).clone(),
                first_byte: self.time_to_first_byte.get_or_create(&labels).clone(),
            }
        });
        LatencySlot(u8::try_from(slot).expect("35 slots fit in a byte"))
    }

    /// The latency histograms of a response counted by [`Metrics::request`].
    pub fn latency(&self, slot: LatencySlot) -> &Latency {
        self.latencies[usize::from(slot.0)].get().expect("resolved when the response was counted")
    }

    /// The `rangecache_tier_open_duration_seconds` histograms of one tier, to keep.
    pub fn tier_open_latency(&self, tier: &str) -> TierOpenLatency {
        let histogram = |op| {
            self.tier_open_duration
                .get_or_create(&TierOpenLabels { tier: tier.to_owned(), op })
                .clone()
        };
        TierOpenLatency { open: histogram("open"), stat: histogram("stat") }
    }

    /// The `rangecache_tier_reads_total` counters of one tier, to keep and increment.
    pub fn tier_read_counters(&self, tier: &str) -> TierReadCounters {
        let counter = |result| {
            self.tier_reads.get_or_create(&TierReadLabels { tier: tier.to_owned(), result }).clone()
        };
        TierReadCounters { hit: counter("hit"), miss: counter("miss"), error: counter("error") }
    }

    /// Counts one tier write outcome.
    pub fn tier_write(&self, tier: &str, result: &'static str) {
        self.tier_writes.get_or_create(&TierWriteLabels { tier: tier.to_owned(), result }).inc();
    }

    /// Where the counters of (route, method, status) are kept, if they are kept.
    fn request_slot(route: Route, method_idx: Option<usize>, status: u16) -> Option<usize> {
        let route = Route::ALL.iter().position(|r| *r == route)?;
        let method = method_idx?;
        let status = STATUSES.iter().position(|s| *s == status)?;
        Some((route * METHODS.len() + method) * STATUSES.len() + status)
    }

    fn request_counters_of(&self, route: Route, method: &Method, status: u16) -> RequestCounters {
        let method = method.as_str();
        let requests =
            self.requests.get_or_create(&RequestLabels { method: method.to_owned(), status });
        let labels = RouteLabels { route: route.as_str(), method: method.to_owned(), status };
        (requests.clone(), self.route_requests.get_or_create(&labels).clone())
    }

    /// The registry in the OpenMetrics text format, served as [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn latencies_are_resolved_per_method_and_status_class() {
        let metrics = Metrics::default();
        let get_206 = metrics.request(Route::Object, &Method::GET, 206);
        let get_200 = metrics.request(Route::Healthz, &Method::GET, 200);
        let patch = metrics.request(Route::Other, &Method::PATCH, 405);
        let brew = metrics.request(Route::Other, &Method::from_bytes(b"BREW").unwrap(), 418);
        assert_eq!(get_206, get_200, "one slot for every 2xx of a GET, whatever the route");
        assert_eq!(patch, brew, "methods without a route share the label other");
        metrics.latency(get_206).duration.observe_duration(Duration::from_millis(2));
        metrics.latency(patch).first_byte.observe_duration(Duration::from_millis(2));
        let text = metrics.encode();
        for line in [
            "rangecache_request_duration_seconds_count{method=\"GET\",status_class=\"2xx\"} 1",
            "rangecache_request_duration_seconds_bucket{le=\"0.0025\",method=\"GET\",status_class=\"2xx\"} 1",
            "rangecache_request_duration_seconds_bucket{le=\"0.001\",method=\"GET\",status_class=\"2xx\"} 0",
            "rangecache_time_to_first_byte_seconds_count{method=\"other\",status_class=\"4xx\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn families_of_the_spec_are_exposed() {
        let metrics = Metrics::default();
        metrics.request(Route::Object, &Method::GET, 206);
        metrics.request(Route::Object, &Method::GET, 206);
        metrics.request(Route::Other, &Method::PATCH, 418);
        metrics.tier_read_counters("memory").inc("miss");
        metrics.backfill_events.started.inc();
        metrics.response_bytes.inc_by(10);
        let text = metrics.encode();
        for line in [
            "rangecache_requests_total{method=\"GET\",status=\"206\"} 2",
            "rangecache_route_requests_total{route=\"object\",method=\"GET\",status=\"206\"} 2",
            "rangecache_requests_total{method=\"PATCH\",status=\"418\"} 1",
            "rangecache_response_bytes_total 10",
            "rangecache_tier_reads_total{tier=\"memory\",result=\"miss\"} 1",
            "rangecache_backfills_total{event=\"started\"} 1",
            "rangecache_backfills_in_flight 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("# TYPE rangecache_requests counter\n"), "{text}");
        assert!(text.contains("# TYPE rangecache_request_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("# TYPE rangecache_backfill_size_bytes histogram\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF:\n{text}");
    }
}
