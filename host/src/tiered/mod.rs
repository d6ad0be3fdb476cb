//! The tiered driver: carries out on tokio what the core's machines decide, and feeds back what
//! the tiers answered. It decides no status, range or commit itself. By concern:
//!
//! * `read`: one GET or HEAD walks the tiers as its `read::Machine` asks and is served with the
//!   bytes its plan describes.
//! * `write`: writes, deletes and invalidations, each driven by the core's write policy and
//!   reported to the backfill manager, under a per-key commit lock.
//! * `copy`: the one owner of the `backfill::Manager` (a `std::sync::Mutex` held only while
//!   one input is handled and the outputs are drained, never across an `.await`), and the
//!   copies into tier 0 it starts: a tee of a full read, or a background full copy for a
//!   ranged read, each a task in one `JoinSet` with its own `CancellationToken`.
//! * `lifecycle`: every request that touches the tiers (a read until its body is dropped, a
//!   write, delete or invalidate until it returns) holds an operation guard. Once the tiers
//!   start closing, new operations and commits are refused (503), bodies still streaming end
//!   with an error, and the tiers close only when no operation is left: writes, deletes and
//!   invalidations get at most [`CLOSE_WAIT`] to finish, reads (already cut off) at most
//!   [`READ_CUT_WAIT`] to let go. Copies are drained before any tier is closed.
//!
//! Nothing here imports from `http/`: the HTTP layer turns an [`Error`] into its answer.

mod copy;
mod lifecycle;
mod read;
mod write;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use rangecache_core::backfill;
use rangecache_core::write::Failure;
use rangecache_core::{EntityTag, Timestamp};

use crate::metrics::{Metrics, TierOpenLatency, TierReadCounters};
use crate::storage::{ByteStream, Tier, TierError, TierStats};

pub use copy::COMMIT_DEADLINE;
pub use lifecycle::{CLOSE_WAIT, PROBE_TIMEOUT, READ_CUT_WAIT};

/// One configured tier with the limits the host applies to writes into it.
pub struct TierSlot {
    /// The tier.
    pub tier: Arc<dyn Tier>,
    /// Longest time-to-live of an object in this tier.
    pub max_ttl: Option<Duration>,
}

/// A read, as raw request fields and the host's clock; the core parses them.
pub type ReadRequest = rangecache_core::read::Request;

/// A read's answer: the plan to render and exactly the bytes its body describes.
pub struct Served {
    /// Status and headers.
    pub plan: rangecache_core::ResponsePlan,
    /// The body, `None` when the plan has none.
    pub body: Option<ByteStream>,
    /// The `Cache-Status` field value.
    pub cache_status: String,
}

/// A write, with everything the host supplied (entity-tag, time) already decided.
#[derive(Clone, Debug)]
pub struct WriteRequest {
    /// The entity-tag to store.
    pub etag: EntityTag,
    /// Last-Modified.
    pub last_modified: Timestamp,
    /// The requested time-to-live in milliseconds, capped per tier.
    pub ttl_millis: Option<u64>,
    /// End-to-end headers to store.
    pub headers: Vec<(String, String)>,
    /// `If-Match`, as received (joined when repeated).
    pub if_match: Option<String>,
    /// `If-None-Match`, as received (joined when repeated).
    pub if_none_match: Option<String>,
    /// Content-Length, when announced.
    pub content_length: Option<u64>,
    /// Largest object accepted.
    pub max_size: u64,
    /// The host's clock.
    pub now: Timestamp,
}

/// The body of a write.
pub type WriteBody = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Sizes of every tier, for `/api/v1/stats`.
#[derive(Debug, serde::Serialize)]
pub struct Stats {
    /// Objects in the authoritative tier (cachew's field).
    pub objects: u64,
    /// Bytes in the authoritative tier (cachew's field).
    pub size: u64,
    /// Capacity of the authoritative tier, 0 when unbounded (cachew's field).
    pub capacity: u64,
    /// Every tier, nearest first.
    pub tiers: Vec<TierStatsEntry>,
}

/// One tier's line in [`Stats`].
#[derive(Debug, serde::Serialize)]
pub struct TierStatsEntry {
    /// The tier's name.
    pub name: String,
    /// Live objects.
    pub objects: u64,
    /// Bytes of live objects.
    pub bytes: u64,
    /// Capacity in bytes; absent when unbounded.
    pub capacity: Option<u64>,
    /// Why the figures are missing, if the tier failed to answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the driver did not carry out a request; the HTTP layer turns it into an answer.
#[derive(Debug)]
pub enum Error {
    /// The server is shutting down: the request was refused before it touched a tier.
    ShuttingDown,
    /// The write machine failed a write, delete or invalidation; nothing of it was committed.
    Failed {
        /// Why, as the machine decided (its status included).
        failure: Failure,
        /// The answer's `Cache-Status` field, as the machine decided it.
        cache_status: String,
        /// What the failing tier or the body said, when one failed.
        cause: Option<String>,
    },
    /// A tier failed.
    Tier(TierError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ShuttingDown => f.write_str("shutting down"),
            Error::Failed { failure: Failure::BodyFailed, cause: Some(cause), .. } => {
                write!(f, "{}: {cause}", Failure::BodyFailed)
            }
            // A tier's own message names the tier.
            Error::Failed { failure: Failure::Tier { .. }, cause: Some(cause), .. } => {
                f.write_str(cause)
            }
            Error::Failed { failure, .. } => write!(f, "{failure}"),
            Error::Tier(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<TierError> for Error {
    fn from(e: TierError) -> Error {
        Error::Tier(e)
    }
}

/// The tiers and the machines that drive them.
pub struct Tiered {
    slots: Vec<TierSlot>,
    /// The tiers' names, nearest first.
    names: Vec<String>,
    metrics: Arc<Metrics>,
    /// `rangecache_tier_reads_total` of each tier, nearest first.
    read_counters: Vec<TierReadCounters>,
    /// `rangecache_tier_open_duration_seconds` of each tier, nearest first.
    open_latency: Vec<TierOpenLatency>,
    backfills: Mutex<copy::Backfills>,
    tasks: Mutex<JoinSet<()>>,
    /// The runtime the driver was made on, where every copy runs: a copy outlives the request
    /// that started it, whichever runtime served that request, and is drained before the tiers
    /// close.
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    drained: Notify,
    /// Cancelled when the tiers start closing: no operation may begin or commit after it.
    closing: CancellationToken,
    /// Requests touching the tiers right now, and a wake-up when the count reaches zero.
    operations: [AtomicUsize; 2],
    idle: Notify,
    /// Serializes the commit phase of mutations of one key (see [`KeyLocks`]).
    commit_locks: write::KeyLocks,
    /// [`COMMIT_DEADLINE`], shorter in tests.
    commit_deadline: Duration,
}

impl Tiered {
    /// A driver over `slots`, nearest first; its copies run on the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(slots: Vec<TierSlot>, metrics: Arc<Metrics>) -> Tiered {
        assert!(!slots.is_empty(), "configuration guarantees at least one tier");
        let tier_0_max_size = slots[0].tier.max_object_size();
        Tiered {
            read_counters: slots
                .iter()
                .map(|s| metrics.tier_read_counters(s.tier.name()))
                .collect(),
            open_latency: slots.iter().map(|s| metrics.tier_open_latency(s.tier.name())).collect(),
            names: slots.iter().map(|s| s.tier.name().to_owned()).collect(),
            slots,
            metrics,
            backfills: Mutex::new(copy::Backfills {
                manager: backfill::Manager::new(backfill::Config {
                    tier_0_max_size,
                    ..backfill::Config::default()
                }),
                copies: HashMap::new(),
                pending_tees: HashMap::new(),
                mutations: HashMap::new(),
                exported: backfill::Counters::default(),
            }),
            tasks: Mutex::new(JoinSet::new()),
            runtime: tokio::runtime::Handle::current(),
            shutdown: CancellationToken::new(),
            drained: Notify::new(),
            closing: CancellationToken::new(),
            operations: Default::default(),
            idle: Notify::new(),
            commit_locks: write::KeyLocks::default(),
            commit_deadline: COMMIT_DEADLINE,
        }
    }

    /// Names of the tiers, nearest first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Sizes of every tier.
    pub async fn stats(&self) -> Stats {
        let now = crate::clock::now();
        let mut tiers = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let name = slot.tier.name().to_owned();
            tiers.push(match slot.tier.stats(now).await {
                Ok(TierStats { objects, bytes, capacity }) => {
                    TierStatsEntry { name, objects, bytes, capacity, error: None }
                }
                Err(e) => TierStatsEntry {
                    name,
                    objects: 0,
                    bytes: 0,
                    capacity: None,
                    error: Some(e.to_string()),
                },
            });
        }
        let last = tiers.last().expect("at least one tier");
        Stats {
            objects: last.objects,
            size: last.bytes,
            capacity: last.capacity.unwrap_or(0),
            tiers,
        }
    }

    /// Namespaces of the authoritative tier, sorted.
    pub async fn namespaces(&self) -> Result<Vec<String>, Error> {
        let last = self.slots.last().expect("at least one tier");
        Ok(last.tier.namespaces().await?)
    }
}

/// `ns/{name}`: the key the tests of these modules read and write.
#[cfg(test)]
fn test_key(name: &str) -> rangecache_core::ObjectKey {
    rangecache_core::ObjectKey {
        namespace: rangecache_core::Namespace::parse("ns").expect("valid"),
        key: rangecache_core::Key::from_segment(name),
    }
}

fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
