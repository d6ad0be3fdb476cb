//! The Prometheus families of SPEC §4, exposed at `/metrics` in the OpenMetrics text format
//! (what `prometheus_client` writes: counters as `NAME_total`, ending in `# EOF`), which
//! Prometheus scrapes when served as [`CONTENT_TYPE`].
//!
//! Every count is taken from what happened (a response sent, a tier's answer, a backfill
//! manager output), never re-derived from policy here.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use http::Method;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    /// `object`, `invalidate`, `stats`, `namespaces`, `metrics`, `healthz` or `other`.
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
    /// Anything else.
    Other,
}

impl Route {
    const ALL: [Route; 7] = [
        Route::Object,
        Route::Invalidate,
        Route::Stats,
        Route::Namespaces,
        Route::Metrics,
        Route::Healthz,
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
            Route::Other => "other",
        }
    }
}

/// Methods whose request counters are resolved once (any other is looked up each time).
const METHODS: [Method; 6] =
    [Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE, Method::OPTIONS];
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
    /// Faults injected by `faulty` tiers, by tier, step and fault.
    #[cfg(feature = "faults")]
    pub faults_injected: Family<FaultLabels, Counter>,
    /// `requests` and `route_requests` counters resolved on first use, by
    /// [`Metrics::request_slot`].
    request_counters: Box<[OnceLock<RequestCounters>]>,
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
            request_counters: (0..Route::ALL.len() * METHODS.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }
}

impl Metrics {
    /// Counts one response.
    pub fn request(&self, route: Route, method: &Method, status: u16) {
        let looked_up;
        let (requests, route_requests) = match Metrics::request_slot(route, method, status) {
            Some(slot) => self.request_counters[slot]
                .get_or_init(|| self.request_counters_of(route, method, status)),
            None => {
                looked_up = self.request_counters_of(route, method, status);
                &looked_up
            }
        };
        requests.inc();
        route_requests.inc();
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
    fn request_slot(route: Route, method: &Method, status: u16) -> Option<usize> {
        let route = Route::ALL.iter().position(|r| *r == route)?;
        let method = METHODS.iter().position(|m| m == method)?;
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
    use super::*;

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
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF:\n{text}");
    }
}
