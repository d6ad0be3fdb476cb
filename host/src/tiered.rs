//! The tiered driver: feeds what the tiers answered into the core's read and backfill machines
//! and carries out what they ask for on tokio.
//!
//! The backfill manager has one owner: a `std::sync::Mutex` held only while one input is
//! handled and the outputs are drained, never across an `.await`. Every copy into tier 0 (a
//! tee of a full read, or a background full copy for a ranged read) runs as a task in one
//! `JoinSet` with its own `CancellationToken`; shutdown cancels them all and drains the set
//! before any tier is closed.
//!
//! Every request that touches the tiers (a read until its body is dropped, a write, delete or
//! invalidate until it returns) holds an [`Operation`] guard. Once the tiers start closing, new
//! operations and commits are refused (503), bodies still streaming end with an error, and the
//! tiers close only when no operation is left: writes, deletes and invalidations get at most
//! [`CLOSE_WAIT`] to finish, reads (already cut off) at most [`READ_CUT_WAIT`] to let go.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use rangecache_core::backfill::{self, CopyId, DiscardReason, Mode, MutationKind, Refusal};
use rangecache_core::object::{copy_expires_at, expires_at};
use rangecache_core::range::Span;
use rangecache_core::read::{self, TierIdx};
use rangecache_core::{Body, RangeLimits};
use rangecache_core::{EntityTag, ObjectKey, ObjectMeta, Timestamp};

use crate::http::ApiError;
use crate::metrics::{Metrics, TierOpenLatency, TierReadCounters};
use crate::storage::{
    ByteStream, Conditions, NewObject, OpenRequest, Opened, Tier, TierError, TierStats, TierWriter,
    WriteCondition,
};

/// How long shutdown waits for cancelled copies to end before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a commit into tier 0 may take before it is abandoned (when the tier can promise it
/// then never lands): every write of the key waits for it, and a sound device commits a copy in
/// far less.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(30);
/// How long closing waits for requests still touching the tiers (a commit under way) to end.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long closing waits for bodies it cut off to be dropped; a body whose client stopped
/// reading is never polled again, and it reads nothing from the tiers once cut off.
pub const READ_CUT_WAIT: Duration = Duration::from_secs(1);

/// How long one readiness probe of a tier may take before it counts as unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two rounds of readiness probes.
const PROBE_MAX_WAIT: Duration = Duration::from_secs(5);

/// One configured tier with the limits the host applies to writes into it.
pub struct TierSlot {
    /// The tier.
    pub tier: Arc<dyn Tier>,
    /// Longest time-to-live of an object in this tier.
    pub max_ttl: Option<Duration>,
}

/// A read, as raw request fields and the host's clock; the core parses them.
pub type ReadRequest = read::Request;

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
    /// The write's precondition.
    pub condition: WriteCondition,
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
    backfills: Mutex<Backfills>,
    tasks: Mutex<JoinSet<()>>,
    shutdown: CancellationToken,
    drained: Notify,
    /// Cancelled when the tiers start closing: no operation may begin or commit after it.
    closing: CancellationToken,
    /// Requests touching the tiers right now, and a wake-up when the count reaches zero.
    operations: [std::sync::atomic::AtomicUsize; 2],
    idle: Notify,
    /// Serializes the commit phase of mutations of one key (see [`KeyLocks`]).
    commit_locks: KeyLocks,
    /// [`COMMIT_DEADLINE`], shorter in tests.
    commit_deadline: Duration,
}

impl Tiered {
    /// A driver over `slots`, nearest first.
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
            backfills: Mutex::new(Backfills {
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
            shutdown: CancellationToken::new(),
            drained: Notify::new(),
            closing: CancellationToken::new(),
            operations: Default::default(),
            idle: Notify::new(),
            commit_locks: KeyLocks::default(),
            commit_deadline: COMMIT_DEADLINE,
        }
    }

    /// Names of the tiers, nearest first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Asks every tier for the metadata of one key until each has answered, found or not: a
    /// tier that answers is reachable, and its credentials and certificates are accepted. A
    /// tier that fails or takes longer than [`PROBE_TIMEOUT`] is asked again after a wait that
    /// doubles from 100 ms to 5 s. Returns once all have answered, or when shutdown begins.
    pub async fn probe_until_answered(&self) {
        // Nobody writes this key; what a tier holds under it makes no difference.
        let key = ObjectKey {
            namespace: rangecache_core::Namespace::parse("rangecache").expect("a valid namespace"),
            key: rangecache_core::Key::from_segment("readiness-probe"),
        };
        let mut waiting: Vec<usize> = (0..self.slots.len()).collect();
        let mut wait = Duration::from_millis(100);
        while !waiting.is_empty() && !self.is_shutting_down() {
            let now = crate::http::now();
            let answers = futures::future::join_all(waiting.iter().map(|idx| {
                tokio::time::timeout(PROBE_TIMEOUT, self.slots[*idx].tier.stat(&key, now))
            }))
            .await;
            let mut failed = Vec::new();
            for (idx, answer) in waiting.iter().zip(answers) {
                let name = self.slots[*idx].tier.name();
                match answer {
                    Ok(Ok(_)) => tracing::info!(tier = name, "tier answered its readiness probe"),
                    Ok(Err(e)) => {
                        tracing::warn!(tier = name, error = %e, "tier failed its readiness probe");
                        failed.push(*idx);
                    }
                    Err(_) => {
                        let timeout = PROBE_TIMEOUT;
                        tracing::warn!(
                            tier = name,
                            ?timeout,
                            "tier did not answer its readiness probe"
                        );
                        failed.push(*idx);
                    }
                }
            }
            waiting = failed;
            if !waiting.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.shutdown.cancelled() => return,
                }
                wait = (wait * 2).min(PROBE_MAX_WAIT);
            }
        }
    }

    /// Stores `body` in every tier; visible only once every tier committed.
    ///
    /// Tiers commit deepest first, so the authoritative tier checks the write's condition
    /// before any nearer copy exists. A nearer tier too small for the object, or whose commit
    /// fails once the authoritative tier committed, is left out of the write and its copy of the
    /// key dropped, so it never serves an older revision; the write stands, since the
    /// authoritative tier holds it. Only a failure of the authoritative tier fails the write,
    /// and then no nearer tier has committed anything.
    pub async fn write(
        self: &Arc<Self>,
        key: &ObjectKey,
        write: WriteRequest,
        body: &mut WriteBody,
    ) -> Result<ObjectMeta, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        let _operation = self.enter(OpKind::Mutation)?;
        // A write cancels any copy of the key under way and waits for a commit in progress.
        let _mutation = self.start_mutation(key, MutationKind::Write).await?;
        let last = self.slots.len() - 1;
        let mut writers: Vec<Option<Box<dyn TierWriter>>> = Vec::with_capacity(self.slots.len());
        let mut left_out: Vec<usize> = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            let new = NewObject {
                etag: write.etag.clone(),
                last_modified: write.last_modified,
                headers: write.headers.clone(),
                expires: expires_at(write.now, write.ttl_millis, millis(slot.max_ttl)),
                // Only the authoritative tier judges the condition; nearer tiers follow it.
                condition: if idx == last { write.condition.clone() } else { WriteCondition::None },
                expected_size: write.content_length,
            };
            match slot.tier.create(key, new).await {
                Ok(writer) => writers.push(Some(writer)),
                Err(TierError::TooLarge { .. } | TierError::Busy { .. }) if idx < last => {
                    left_out.push(idx);
                    writers.push(None);
                }
                Err(e) => {
                    abort_all(writers).await;
                    return Err(e.into());
                }
            }
        }
        let mut received: u64 = 0;
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = self.shutdown.cancelled() => {
                    abort_all(writers).await;
                    return Err(ApiError::ShuttingDown);
                }
            };
            let chunk = match chunk {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    abort_all(writers).await;
                    return Err(ApiError::IncompleteUpload(e.to_string()));
                }
            };
            received += chunk.len() as u64;
            self.metrics.request_bytes.inc_by(chunk.len() as u64);
            if received > write.max_size {
                abort_all(writers).await;
                return Err(ApiError::TooLarge(write.max_size));
            }
            if let Some(expected) = write.content_length
                && received > expected
            {
                abort_all(writers).await;
                return Err(ApiError::IncompleteUpload(format!(
                    "received more than the {expected} bytes announced"
                )));
            }
            let results = futures::future::join_all(writers.iter_mut().map(|w| async {
                match w {
                    Some(writer) => writer.write(chunk.clone()).await,
                    None => Ok(()),
                }
            }))
            .await;
            for (idx, result) in results.into_iter().enumerate() {
                match result {
                    Ok(()) => {}
                    Err(TierError::TooLarge { .. } | TierError::Busy { .. }) if idx < last => {
                        if let Some(writer) = writers[idx].take() {
                            writer.abort().await;
                        }
                        left_out.push(idx);
                    }
                    Err(e) => {
                        abort_all(writers).await;
                        return Err(e.into());
                    }
                }
            }
        }
        if let Some(expected) = write.content_length
            && received != expected
        {
            abort_all(writers).await;
            return Err(ApiError::IncompleteUpload(format!(
                "received {received} of the {expected} bytes announced"
            )));
        }
        // Concurrent writes of one key commit one after the other, each deepest first, so every
        // tier ends with the same revision.
        let _commits = self.commit_locks.lock(key).await;
        if self.closing.is_cancelled() {
            // The tiers are closing: committing now could write into a closed tier.
            abort_all(writers).await;
            return Err(ApiError::ShuttingDown);
        }
        let mut meta = None;
        while let Some(writer) = writers.pop() {
            let idx = writers.len();
            let Some(writer) = writer else { continue };
            match writer.commit().await {
                Ok(m) => {
                    self.metrics.tier_write(self.slots[idx].tier.name(), "committed");
                    meta.get_or_insert(m);
                }
                Err(e) if idx == last => {
                    // Nothing committed yet: the write fails as a whole, leaving every tier as
                    // it was.
                    self.metrics.tier_write(self.slots[idx].tier.name(), "error");
                    abort_all(writers).await;
                    return Err(e.into());
                }
                Err(e) => {
                    // The authoritative tier already holds the new revision; losing it to a
                    // nearer tier's failure would lose the write.
                    self.metrics.tier_write(self.slots[idx].tier.name(), "error");
                    tracing::warn!(tier = self.slots[idx].tier.name(), %key, error = %e,
                        "a nearer tier failed to commit; its copy is dropped");
                    left_out.push(idx);
                }
            }
        }
        for idx in left_out {
            tracing::debug!(tier = self.slots[idx].tier.name(), %key, "tier left out of a write");
            if let Err(e) = self.slots[idx].tier.delete(key).await {
                tracing::warn!(%key, error = %e, "dropping an older copy the write left out");
            }
        }
        Ok(meta.expect("the authoritative tier committed"))
    }

    /// Removes the object from every tier; true if any tier held it.
    pub async fn delete(self: &Arc<Self>, key: &ObjectKey) -> Result<bool, ApiError> {
        let _operation = self.enter(OpKind::Mutation)?;
        let _mutation = self.start_mutation(key, MutationKind::Delete).await?;
        let _commits = self.commit_locks.lock(key).await;
        let mut existed = false;
        // Nearest first: once the authoritative copy is gone nothing can bring it back, and a
        // nearer copy that outlived it would be served.
        for slot in &self.slots {
            existed |= slot.tier.delete(key).await?;
        }
        Ok(existed)
    }

    /// Drops the copies held by the non-authoritative tiers.
    pub async fn invalidate(self: &Arc<Self>, key: &ObjectKey) -> Result<(), ApiError> {
        let _operation = self.enter(OpKind::Mutation)?;
        let _mutation = self.start_mutation(key, MutationKind::Invalidate).await?;
        let _commits = self.commit_locks.lock(key).await;
        for slot in &self.slots[..self.slots.len() - 1] {
            slot.tier.invalidate(key).await?;
        }
        Ok(())
    }

    /// Sizes of every tier.
    pub async fn stats(&self) -> Stats {
        let now = crate::http::now();
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
    pub async fn namespaces(&self) -> Result<Vec<String>, ApiError> {
        let last = self.slots.last().expect("at least one tier");
        Ok(last.tier.namespaces().await?)
    }

    /// Refuses new operations and commits, ends the bodies still streaming, waits (at most
    /// [`CLOSE_WAIT`]) for the operations under way, stops every copy and waits for them, then
    /// closes the tiers (SPEC §4: nothing is written to a closed tier).
    pub async fn shutdown(self: &Arc<Self>) {
        let drained = self.drained.notified();
        self.begin_shutdown();
        self.closing.cancel();
        for (kind, bound) in [(OpKind::Mutation, CLOSE_WAIT), (OpKind::Read, READ_CUT_WAIT)] {
            if tokio::time::timeout(bound, self.idle(kind)).await.is_err() {
                tracing::warn!(
                    ?kind,
                    left = self.operations[kind as usize].load(std::sync::atomic::Ordering::SeqCst),
                    "requests still holding the tiers after {bound:?}; closing regardless"
                );
            }
        }
        let stopped = self.backfills().manager.is_stopped();
        if !stopped && tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            tracing::warn!("the backfill manager did not report its drain in {DRAIN_TIMEOUT:?}");
        }
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("copies still running after {DRAIN_TIMEOUT:?}; aborting them");
            tasks.shutdown().await;
        }
        for slot in &self.slots {
            if let Err(e) = slot.tier.close().await {
                tracing::warn!(tier = slot.tier.name(), error = %e, "closing a tier");
            }
        }
    }

    /// Counts one request touching the tiers until the guard is dropped; refused once the tiers
    /// are closing. Counted before the check, so that [`Tiered::shutdown`], which sets `closing`
    /// before it reads the count, never misses an operation that got past the check.
    fn enter(self: &Arc<Self>, kind: OpKind) -> Result<Operation, ApiError> {
        self.operations[kind as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let operation = Operation { tiered: self.clone(), kind };
        if self.closing.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        Ok(operation)
    }

    /// Resolves when no operation of `kind` is under way.
    async fn idle(&self, kind: OpKind) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.operations[kind as usize].load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A body that holds its read's [`Operation`] and ends with an error once the tiers start
    /// closing, so no byte is read from a closed tier.
    fn guarded(&self, body: ByteStream, operation: Operation) -> ByteStream {
        Box::pin(Guarded {
            inner: Some(body),
            closing: self.closing.clone(),
            wake_on_closing: None,
            _operation: operation,
        })
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished copies so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

/// Reports a copy's task that ended without reporting its end (it panicked, or was aborted
/// at shutdown), so that the manager never waits for it: during its commit as a commit that
/// did not land, before it as a stop.
struct CopyTaskGuard {
    tiered: Arc<Tiered>,
    copy: CopyId,
    /// The task is committing: an end now is a commit that did not land.
    committing: bool,
    /// The task reported its end.
    reported: bool,
}

impl CopyTaskGuard {
    fn new(tiered: &Arc<Tiered>, copy: CopyId) -> CopyTaskGuard {
        CopyTaskGuard { tiered: Arc::clone(tiered), copy, committing: false, reported: false }
    }

    /// Reports `input`, which ends the task's part in the copy.
    fn report(&mut self, input: backfill::Input) {
        self.reported = true;
        self.tiered.handle(input);
    }
}

impl Drop for CopyTaskGuard {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        let copy = self.copy;
        tracing::warn!(%copy, "a copy's task ended without reporting; reported for it");
        let input = if self.committing {
            backfill::Input::CommitFinished { copy, committed: false }
        } else {
            backfill::Input::CopyStopped { copy }
        };
        self.tiered.handle(input);
    }
}

/// One lock per key with a commit under way or waiting: concurrent writes of a key commit one
/// after the other, each deepest first, so every tier ends with the same revision, while keys
/// never wait for each other (a slow multipart completion holds up only its own key). An entry
/// lives as long as someone holds or waits for it.
#[derive(Default)]
struct KeyLocks {
    held: Mutex<HashMap<ObjectKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyLocks {
    /// Waits for `key`'s lock; released when the guard is dropped.
    async fn lock(&self, key: &ObjectKey) -> KeyLockGuard<'_> {
        let lock = self.map().entry(key.clone()).or_default().clone();
        // The guard exists before the wait, so a cancelled wait still gives the entry back.
        let mut guard = KeyLockGuard { locks: self, key: key.clone(), lock, held: None };
        guard.held = Some(Arc::clone(&guard.lock).lock_owned().await);
        guard
    }

    fn map(&self) -> MutexGuard<'_, HashMap<ObjectKey, Arc<tokio::sync::Mutex<()>>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// See [`KeyLocks::lock`].
struct KeyLockGuard<'a> {
    locks: &'a KeyLocks,
    key: ObjectKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyLockGuard<'_> {
    fn drop(&mut self) {
        self.held = None;
        let mut map = self.locks.map();
        // Every holder or waiter took its clone under this lock: the map's and ours alone mean
        // nobody else wants the key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

/// One request touching the tiers; see [`Tiered::enter`].
struct Operation {
    tiered: Arc<Tiered>,
    kind: OpKind,
}

/// What an [`Operation`] does, for how long closing waits for it.
#[derive(Clone, Copy, Debug)]
enum OpKind {
    /// A write, delete or invalidate: it may be committing.
    Mutation = 0,
    /// A read and its body.
    Read = 1,
}

impl Drop for Operation {
    fn drop(&mut self) {
        let count = &self.tiered.operations[self.kind as usize];
        if count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.tiered.idle.notify_waiters();
        }
    }
}

/// See [`Tiered::guarded`].
struct Guarded {
    inner: Option<ByteStream>,
    closing: CancellationToken,
    /// Wakes the body when closing begins; set up only once the inner body has to wait, so a
    /// body that is always ready (a memory read) costs no allocation for it.
    wake_on_closing: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    _operation: Operation,
}

impl Guarded {
    fn cut(&mut self) -> Poll<Option<io::Result<Bytes>>> {
        // Dropping the inner body here releases whatever it holds of the tier.
        self.inner = None;
        Poll::Ready(Some(Err(io::Error::other("the server is shutting down"))))
    }
}

impl Stream for Guarded {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        if this.closing.is_cancelled() {
            return this.cut();
        }
        let polled = inner.as_mut().poll_next(cx);
        if polled.is_pending() {
            let closing = &this.closing;
            let wake = this
                .wake_on_closing
                .get_or_insert_with(|| Box::pin(closing.clone().cancelled_owned()));
            if wake.as_mut().poll(cx).is_ready() {
                return this.cut();
            }
        }
        polled
    }
}

fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn abort_all(writers: Vec<Option<Box<dyn TierWriter>>>) {
    futures::future::join_all(writers.into_iter().flatten().map(|w| w.abort())).await;
}

/// The backfill manager and what the host keeps beside it for each copy it started.
struct Backfills {
    manager: backfill::Manager,
    /// Commands to the task of each live copy, and its cancellation token.
    copies: HashMap<CopyId, CopyHandle>,
    /// Tee copies started and not yet attached to their read's body.
    pending_tees: HashMap<CopyId, CopyJob>,
    /// Mutations waiting for `ProceedWithMutation`, per key, in arrival order.
    mutations: HashMap<ObjectKey, VecDeque<oneshot::Sender<()>>>,
    /// Counters already exported, so each turn exports only what changed.
    exported: backfill::Counters,
}

struct CopyHandle {
    token: CancellationToken,
    commands: mpsc::UnboundedSender<CopyCommand>,
}

/// What a copy's task is told to do by the manager's outputs.
#[derive(Debug)]
enum CopyCommand {
    Commit,
    Discard,
}

/// What one turn of the manager asked of the caller itself (the rest is carried out).
#[derive(Default)]
struct Turn {
    /// `StartCopy` outputs, for the caller to run (a tee) or that were spawned (background).
    started: Vec<(CopyId, ObjectKey, Mode)>,
    /// `Refuse` outputs.
    refused: Vec<(ObjectKey, Refusal)>,
    /// Copies discarded this turn.
    discarded: Vec<CopyId>,
}

impl Tiered {
    /// True once shutdown has begun: `/healthz` then tells load balancers to look elsewhere.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Refuses new work and cancels every copy; [`Tiered::shutdown`] then waits for them.
    pub fn begin_shutdown(self: &Arc<Self>) {
        self.shutdown.cancel();
        self.handle(backfill::Input::ShutdownRequested);
    }

    /// The backfill state, locked. The guard is never held across an `.await`; a poisoned lock
    /// is taken as it is, like every lock in the host.
    fn backfills(&self) -> MutexGuard<'_, Backfills> {
        self.backfills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one input to the manager and carries out every output. The lock is held only for
    /// the input and the drain; spawning and signalling tasks never awaits.
    fn handle(self: &Arc<Self>, input: backfill::Input) -> Turn {
        let mut turn = Turn::default();
        let mut backfills = self.backfills();
        backfills.manager.handle_input(input);
        while let Some(output) = backfills.manager.poll_output() {
            match output {
                backfill::Output::StartCopy { copy, key, from, meta, mode } => {
                    let token = self.shutdown.child_token();
                    let (commands, receiver) = mpsc::unbounded_channel();
                    backfills.copies.insert(copy, CopyHandle { token: token.clone(), commands });
                    turn.started.push((copy, key.clone(), mode));
                    let job = CopyJob {
                        copy,
                        key,
                        from,
                        meta,
                        started: Instant::now(),
                        token,
                        commands: receiver,
                    };
                    match mode {
                        Mode::Background => {
                            let this = self.clone();
                            self.spawn(async move {
                                let mut guard = CopyTaskGuard::new(&this, job.copy);
                                this.run_background_copy(job, &mut guard).await;
                            });
                        }
                        Mode::Tee => {
                            backfills.pending_tees.insert(copy, job);
                        }
                    }
                }
                backfill::Output::Refuse { key, why } => turn.refused.push((key, why)),
                backfill::Output::Cancel { copy } => {
                    if let Some(handle) = backfills.copies.get(&copy) {
                        handle.token.cancel();
                    }
                }
                backfill::Output::Commit { copy } => {
                    if let Some(handle) = backfills.copies.get(&copy) {
                        let _ = handle.commands.send(CopyCommand::Commit);
                    }
                }
                backfill::Output::Finished { copy } => {
                    backfills.copies.remove(&copy);
                }
                backfill::Output::Discard { copy, why } => {
                    if let Some(handle) = backfills.copies.remove(&copy) {
                        let _ = handle.commands.send(CopyCommand::Discard);
                        handle.token.cancel();
                    }
                    backfills.pending_tees.remove(&copy);
                    if why != DiscardReason::Stale {
                        tracing::debug!(%copy, why = why.as_str(), "copy discarded");
                    }
                    turn.discarded.push(copy);
                }
                backfill::Output::ProceedWithMutation { key } => {
                    if let Some(waiters) = backfills.mutations.get_mut(&key) {
                        if let Some(waiter) = waiters.pop_front() {
                            let _ = waiter.send(());
                        }
                        if waiters.is_empty() {
                            backfills.mutations.remove(&key);
                        }
                    }
                }
                backfill::Output::ShutdownComplete => self.drained.notify_waiters(),
            }
        }
        self.export_counters(&mut backfills);
        turn
    }

    fn export_counters(&self, backfills: &mut Backfills) {
        let now = backfills.manager.counters().clone();
        let before = &backfills.exported;
        let events = &self.metrics.backfill_events;
        events.started.inc_by(now.started - before.started);
        events.deduped.inc_by(now.deduped - before.deduped);
        events.committed.inc_by(now.committed - before.committed);
        events.cancelled.inc_by(now.cancelled - before.cancelled);
        events.skipped.inc_by(now.skipped - before.skipped);
        events.discarded.inc_by(now.discarded_total() - before.discarded_total());
        self.metrics.backfills_in_flight.set(backfills.manager.n_in_flight() as i64);
        backfills.exported = now;
    }

    /// Reports a mutation of `key` and waits until the manager lets it touch the tiers; the
    /// guard reports its end when dropped, whatever the outcome.
    async fn start_mutation(
        self: &Arc<Self>,
        key: &ObjectKey,
        kind: MutationKind,
    ) -> Result<MutationGuard, ApiError> {
        let (sender, receiver) = oneshot::channel();
        self.backfills().mutations.entry(key.clone()).or_default().push_back(sender);
        let guard = MutationGuard { tiered: self.clone(), key: key.clone(), kind };
        self.handle(backfill::Input::MutationStarted { key: key.clone(), kind });
        tokio::select! {
            proceed = receiver => proceed.map_err(|_| ApiError::ShuttingDown)?,
            () = self.shutdown.cancelled() => return Err(ApiError::ShuttingDown),
        }
        Ok(guard)
    }
}

/// Reports `MutationEnded` when the mutation is over, however it ended.
struct MutationGuard {
    tiered: Arc<Tiered>,
    key: ObjectKey,
    kind: MutationKind,
}

impl Drop for MutationGuard {
    fn drop(&mut self) {
        let key = self.key.clone();
        self.tiered.handle(backfill::Input::MutationEnded { key, kind: self.kind });
    }
}

/// Everything a copy's task needs.
struct CopyJob {
    copy: CopyId,
    key: ObjectKey,
    from: TierIdx,
    meta: ObjectMeta,
    /// When the manager started the copy, for `rangecache_backfill_duration_seconds`.
    started: Instant,
    token: CancellationToken,
    commands: mpsc::UnboundedReceiver<CopyCommand>,
}

impl Tiered {
    /// A background full copy (ranged reads): read the whole revision from `from`, pinned to
    /// its entity-tag, and write it into tier 0.
    ///
    /// Tier 0 is asked first: when it cannot take the copy (its write buffers are full, say),
    /// nothing of the source is read.
    async fn run_background_copy(self: Arc<Self>, job: CopyJob, guard: &mut CopyTaskGuard) {
        let Some(writer) = self.copy_writer(&job, guard).await else { return };
        let request = OpenRequest {
            span: Span::WHOLE,
            conditions: Conditions::pinned(&job.meta.etag),
            now: crate::http::now(),
        };
        let source = tokio::select! {
            opened = self.slots[job.from.get()].tier.open(&job.key, &request) => opened,
            () = job.token.cancelled() => {
                writer.abort().await;
                guard.report(backfill::Input::CopyStopped { copy: job.copy });
                return;
            }
        };
        match source {
            // The revision the manager started the copy of, and no other.
            Ok(Opened::Body { meta, body, .. })
                if meta.etag.strong_eq(&job.meta.etag) && meta.size == job.meta.size =>
            {
                self.run_copy(job, writer, body, true, guard).await;
            }
            Ok(_) | Err(_) => {
                writer.abort().await;
                guard.report(backfill::Input::SourceFailed { copy: job.copy });
            }
        }
    }

    /// Tier 0's writer for a copy, or `None` when tier 0 refused it (reported to the manager).
    async fn copy_writer(
        self: &Arc<Self>,
        job: &CopyJob,
        guard: &mut CopyTaskGuard,
    ) -> Option<Box<dyn TierWriter>> {
        let tier0 = &self.slots[0];
        let new = NewObject {
            etag: job.meta.etag.clone(),
            last_modified: job.meta.last_modified,
            headers: job.meta.headers.clone(),
            expires: copy_expires_at(&job.meta, crate::http::now(), millis(tier0.max_ttl)),
            condition: WriteCondition::None,
            expected_size: Some(job.meta.size),
        };
        match tier0.tier.create(&job.key, new).await {
            Ok(writer) => Some(writer),
            Err(e) => {
                tracing::debug!(copy = %job.copy, error = %e, "tier 0 refused a copy");
                self.metrics.tier_write(tier0.tier.name(), "error");
                guard.report(backfill::Input::WriterFailed { copy: job.copy });
                None
            }
        }
    }

    /// Writes a copy's bytes into tier 0 and carries out the manager's decision about it.
    /// `reports_source`: the task itself reads the source (background) rather than a tee.
    async fn run_copy(
        self: &Arc<Self>,
        mut job: CopyJob,
        mut writer: Box<dyn TierWriter>,
        mut source: impl Stream<Item = io::Result<Bytes>> + Unpin,
        reports_source: bool,
        guard: &mut CopyTaskGuard,
    ) {
        let copy = job.copy;
        let tier0 = &self.slots[0];
        let mut source_done = false;
        loop {
            tokio::select! {
                biased;
                command = job.commands.recv() => {
                    match command {
                        Some(CopyCommand::Commit) => {
                            guard.committing = true;
                            let committed = self.commit_copy(copy, writer).await;
                            let result = if committed { "committed" } else { "error" };
                            self.metrics.tier_write(tier0.tier.name(), result);
                            if committed {
                                self.metrics.backfill_bytes.inc_by(job.meta.size);
                                self.metrics.backfill_size.observe(job.meta.size);
                                self.metrics
                                    .backfill_duration
                                    .observe_duration(job.started.elapsed());
                            }
                            guard.report(backfill::Input::CommitFinished { copy, committed });
                        }
                        Some(CopyCommand::Discard) | None => {
                            writer.abort().await;
                            self.metrics.tier_write(tier0.tier.name(), "aborted");
                            // Discarded already (its command sender went with its handle).
                            guard.reported = true;
                        }
                    }
                    return;
                }
                () = job.token.cancelled() => {
                    writer.abort().await;
                    self.metrics.tier_write(tier0.tier.name(), "aborted");
                    guard.report(backfill::Input::CopyStopped { copy });
                    return;
                }
                item = source.next(), if !source_done => match item {
                    Some(Ok(chunk)) => {
                        let bytes = chunk.len() as u64;
                        if reports_source {
                            self.handle(backfill::Input::SourceRead { copy, bytes });
                        }
                        match writer.write(chunk).await {
                            Ok(()) => {
                                self.handle(backfill::Input::ChunkWritten { copy, bytes });
                            }
                            Err(_) => {
                                self.handle(backfill::Input::WriterFailed { copy });
                            }
                        }
                    }
                    Some(Err(_)) => {
                        source_done = true;
                        if reports_source {
                            self.handle(backfill::Input::SourceFailed { copy });
                        }
                    }
                    None => {
                        source_done = true;
                        if reports_source {
                            self.handle(backfill::Input::SourceEnded { copy });
                        }
                    }
                },
            }
        }
    }

    /// Commits a copy's writer; `true` if the copy landed. A commit that outlives the deadline
    /// is abandoned when its tier can promise that it then never lands (a commit that could
    /// still land later must be waited for: it would overwrite whatever a write of the key
    /// committed meanwhile).
    async fn commit_copy(&self, copy: CopyId, writer: Box<dyn TierWriter>) -> bool {
        let fence = writer.fence();
        let commit = writer.commit();
        tokio::pin!(commit);
        let Some(fence) = fence else { return commit.await.is_ok() };
        match tokio::time::timeout(self.commit_deadline, &mut commit).await {
            Ok(result) => result.is_ok(),
            Err(_) if fence.abandon() => {
                tracing::warn!(%copy, deadline = ?self.commit_deadline, "a commit into tier 0 took too long and was abandoned");
                false
            }
            // Past its point of no return: it ends as soon as its rename does.
            Err(_) => commit.await.is_ok(),
        }
    }

    /// Wraps a full read from a deeper tier so that its bytes also flow into tier 0.
    fn tee(self: &Arc<Self>, copy: CopyId, body: ByteStream) -> ByteStream {
        let job = self.backfills().pending_tees.remove(&copy);
        let Some(job) = job else { return body };
        // Unbounded, yet bounded in fact: the manager discards a copy whose backlog (read by the
        // tee, not yet written by the task) passes its byte bound, which closes this channel,
        // and once the copy is cancelled the tee sends nothing more (the manager no longer
        // counts what is read then).
        let (sink, mut chunks) = mpsc::unbounded_channel::<Bytes>();
        let remaining = job.meta.size;
        let cancelled = job.token.clone();
        let this = self.clone();
        self.spawn(async move {
            let source = futures::stream::poll_fn(move |cx| {
                chunks.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, io::Error>))
            });
            let mut guard = CopyTaskGuard::new(&this, job.copy);
            let Some(writer) = this.copy_writer(&job, &mut guard).await else { return };
            this.run_copy(job, writer, Box::pin(source), false, &mut guard).await;
        });
        let mut tee =
            Tee { inner: body, copy, tiered: self.clone(), sink: Some(sink), cancelled, remaining };
        if remaining == 0 {
            // An empty object is whole before any byte flows.
            tee.ended();
        }
        Box::pin(tee)
    }
}

/// A client's body that also feeds a copy into tier 0 and reports the source's progress.
struct Tee {
    inner: ByteStream,
    copy: CopyId,
    tiered: Arc<Tiered>,
    sink: Option<mpsc::UnboundedSender<Bytes>>,
    /// Cancelled with the copy: the tee then stops feeding it, and the copy's task reports its
    /// end.
    cancelled: CancellationToken,
    /// Bytes of the object not seen yet. The server stops polling a body once it has sent
    /// Content-Length bytes, so the last byte, not the stream's end, is the source's EOF.
    remaining: u64,
}

impl Tee {
    fn ended(&mut self) {
        if self.sink.take().is_some() {
            self.tiered.handle(backfill::Input::SourceEnded { copy: self.copy });
        }
    }
}

impl Stream for Tee {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        let copy = self.copy;
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(chunk))) => {
                if self.cancelled.is_cancelled() {
                    self.sink = None;
                }
                if self.sink.is_some() {
                    // Report before sending, so the task never writes more than was read.
                    let bytes = chunk.len() as u64;
                    let turn = self.tiered.handle(backfill::Input::SourceRead { copy, bytes });
                    let sent = !turn.discarded.contains(&copy)
                        && self.sink.as_ref().is_some_and(|sink| sink.send(chunk.clone()).is_ok());
                    if !sent {
                        self.sink = None;
                    }
                }
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                if self.remaining == 0 {
                    self.ended();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if self.sink.take().is_some() {
                    self.tiered.handle(backfill::Input::SourceFailed { copy });
                }
            }
            Poll::Ready(None) => self.ended(),
        }
        polled
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped before EOF: the client went away, and the copy must not be committed.
        if self.sink.take().is_some() {
            self.tiered.handle(backfill::Input::ClientClosed { copy: self.copy });
        }
    }
}

impl Tiered {
    /// Walks the tiers for one GET or HEAD, driving the core's read machine, and returns the
    /// response it planned with exactly the bytes that plan sends.
    pub async fn read(
        self: &Arc<Self>,
        key: &ObjectKey,
        req: ReadRequest,
    ) -> Result<Served, ApiError> {
        let operation = self.enter(OpKind::Read)?;
        // Taken before any tier is opened, so a copy of what this read sees is refused if the
        // key changes meanwhile.
        let seen = self.backfills().manager.generation(key);
        let (is_head, now) = (req.method == http::Method::HEAD, req.now);
        let mut machine = read::Machine::new(req, &self.names, RangeLimits::default());
        let mut held: Option<ByteStream> = None;
        let mut tee_copy: Option<CopyId> = None;
        while let Some(output) = machine.poll_output() {
            match output {
                read::Output::OpenTier { tier, span, conditions } => {
                    held = None;
                    let input = if is_head {
                        self.stat_for(key, tier, now).await
                    } else {
                        self.open_for(key, tier, span, conditions, now, &mut held).await
                    };
                    machine.handle_input(input);
                }
                read::Output::DropBody { .. } => held = None,
                read::Output::RequestCopy { from, meta, mode } => {
                    let turn = self.handle(backfill::Input::CopyRequested {
                        key: key.clone(),
                        seen,
                        from,
                        meta,
                        mode,
                    });
                    let input = match (turn.started.first(), turn.refused.first()) {
                        (Some((copy, _, started_mode)), _) => {
                            if *started_mode == Mode::Tee {
                                tee_copy = Some(*copy);
                            }
                            read::Input::CopyStarted
                        }
                        (None, Some((_, why))) => read::Input::CopyRefused { why: *why },
                        (None, None) => read::Input::CopyRefused { why: Refusal::ShuttingDown },
                    };
                    machine.handle_input(input);
                }
                read::Output::Serve { plan, source, cache_status } => {
                    for member in &cache_status.members {
                        self.read_counters[member.tier.get()].inc(member.lookup.metric_label());
                    }
                    let cache_status = cache_status.to_field_value();
                    let body = match source {
                        read::Source::Nothing => None,
                        read::Source::Opened { .. } => {
                            let body = held.take();
                            match (body, tee_copy.take()) {
                                (Some(body), Some(copy)) => Some(self.tee(copy, body)),
                                (body, _) => body,
                            }
                        }
                        read::Source::Parts { .. } => {
                            let Body::Multipart { parts, closing, .. } = &plan.body else {
                                unreachable!("the machine sends parts only for a multipart plan")
                            };
                            Some(self.multipart(
                                key.clone(),
                                machine,
                                held.take(),
                                parts,
                                closing,
                                now,
                            ))
                        }
                    };
                    if let Some(copy) = tee_copy {
                        // A tee was started but the plan sends no whole body to carry it.
                        self.abandon_tee(copy);
                    }
                    let body = body.map(|body| self.guarded(body, operation));
                    return Ok(Served { plan, body, cache_status });
                }
                read::Output::SendPart { .. } | read::Output::Abort { .. } => {
                    unreachable!("parts are asked for only after Serve")
                }
            }
        }
        unreachable!("the read machine always ends in Serve")
    }

    /// A HEAD sends no byte, so the tier is asked for its metadata only (a HEAD upstream
    /// rather than a GET of the whole object); the machine evaluates the preconditions
    /// against that revision as it would against an opened one.
    async fn stat_for(&self, key: &ObjectKey, tier: TierIdx, now: Timestamp) -> read::Input {
        let slot = &self.slots[tier.get()];
        let started = Instant::now();
        let stat = slot.tier.stat(key, now).await;
        self.open_latency[tier.get()].stat.observe_duration(started.elapsed());
        match stat {
            Ok(Some(meta)) => read::Input::TierOpened { tier, meta, window: None },
            Ok(None) => read::Input::TierMissed { tier },
            Err(e) => {
                tracing::warn!(tier = slot.tier.name(), %key, error = %e, "tier stat failed");
                read::Input::TierFailed { tier }
            }
        }
    }

    /// Opens one tier and turns its answer into the machine's input, keeping the body.
    async fn open_for(
        &self,
        key: &ObjectKey,
        tier: TierIdx,
        span: Span,
        conditions: Conditions,
        now: Timestamp,
        held: &mut Option<ByteStream>,
    ) -> read::Input {
        let request = OpenRequest { span, conditions, now };
        let slot = &self.slots[tier.get()];
        let started = Instant::now();
        let opened = slot.tier.open(key, &request).await;
        self.open_latency[tier.get()].open.observe_duration(started.elapsed());
        match opened {
            Ok(Opened::Body { meta, window, body }) => {
                *held = Some(body);
                read::Input::TierOpened { tier, meta, window: Some(window) }
            }
            Ok(Opened::NotFound) => read::Input::TierMissed { tier },
            Ok(
                Opened::NotSatisfiable { meta }
                | Opened::PreconditionFailed { meta }
                | Opened::NotModified { meta },
            ) => read::Input::TierOpened { tier, meta, window: None },
            Err(e) => {
                tracing::warn!(tier = slot.tier.name(), %key, error = %e, "tier read failed");
                read::Input::TierFailed { tier }
            }
        }
    }

    fn abandon_tee(self: &Arc<Self>, copy: CopyId) {
        let job = self.backfills().pending_tees.remove(&copy);
        if job.is_some() {
            self.handle(backfill::Input::ClientClosed { copy });
        }
    }

    /// A `multipart/byteranges` body: each part's head, then its window opened pinned to the
    /// planned revision as the machine asks, then the closing delimiter.
    fn multipart(
        self: &Arc<Self>,
        key: ObjectKey,
        machine: read::Machine,
        held: Option<ByteStream>,
        parts: &[rangecache_core::Part],
        closing: &str,
        now: Timestamp,
    ) -> ByteStream {
        let state = Multipart {
            tiered: self.clone(),
            key,
            machine,
            held,
            current: None,
            sending: 0,
            heads: parts.iter().map(|part| Bytes::from(part.head.clone())).collect(),
            closing: Some(Bytes::from(closing.to_owned())),
            now,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        }))
    }
}

struct Multipart {
    tiered: Arc<Tiered>,
    key: ObjectKey,
    machine: read::Machine,
    held: Option<ByteStream>,
    current: Option<ByteStream>,
    sending: usize,
    heads: Vec<Bytes>,
    closing: Option<Bytes>,
    now: Timestamp,
}

impl Multipart {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if let Some(current) = self.current.as_mut() {
                match current.next().await {
                    Some(Ok(chunk)) => return Some(Ok(chunk)),
                    Some(Err(e)) => {
                        self.closing = None;
                        self.current = None;
                        return Some(Err(e));
                    }
                    None => {
                        self.current = None;
                        self.machine.handle_input(read::Input::PartSent { index: self.sending });
                        continue;
                    }
                }
            }
            match self.machine.poll_output() {
                Some(read::Output::SendPart { index }) => {
                    let Some(body) = self.held.take() else {
                        self.closing = None;
                        return Some(Err(io::Error::other("a part's body was not opened")));
                    };
                    self.current = Some(body);
                    self.sending = index;
                    return Some(Ok(self.heads[index].clone()));
                }
                Some(read::Output::OpenTier { tier, span, conditions }) => {
                    self.held = None;
                    let input = self
                        .tiered
                        .open_for(&self.key, tier, span, conditions, self.now, &mut self.held)
                        .await;
                    self.machine.handle_input(input);
                }
                Some(read::Output::DropBody { .. }) => self.held = None,
                Some(read::Output::Abort { why }) => {
                    self.closing = None;
                    return Some(Err(io::Error::other(format!(
                        "multipart body cut short: {why:?}"
                    ))));
                }
                Some(read::Output::Serve { .. } | read::Output::RequestCopy { .. }) => {}
                None => return self.closing.take().map(Ok),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use rangecache_core::{Key, Namespace};

    use super::*;
    use crate::storage::{CommitFence, MemoryTier};

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Namespace::parse("ns").expect("valid"),
            key: Key::from_segment(name),
        }
    }

    /// Stores `bytes` under `key` in `tier`, tagged `etag`.
    async fn store(tier: &dyn Tier, key: &ObjectKey, etag: &str, bytes: Vec<u8>) {
        let new = NewObject {
            etag: EntityTag::strong(etag).expect("valid"),
            last_modified: Timestamp::from_secs(1_700_000_000),
            headers: Vec::new(),
            expires: None,
            condition: WriteCondition::None,
            expected_size: Some(bytes.len() as u64),
        };
        let mut writer = tier.create(key, new).await.expect("create");
        writer.write(Bytes::from(bytes)).await.expect("write");
        writer.commit().await.expect("commit");
    }

    /// A driver over `near` and `far`, nearest first.
    fn driver(near: Arc<dyn Tier>, far: Arc<dyn Tier>, commit_deadline: Duration) -> Arc<Tiered> {
        let slots = [near, far].map(|tier| TierSlot { tier, max_ttl: None });
        let mut tiered = Tiered::new(slots.into(), Arc::new(Metrics::default()));
        tiered.commit_deadline = commit_deadline;
        Arc::new(tiered)
    }

    /// Reads `key` whole (a tee into tier 0) or one byte of it (a background copy), to the end.
    async fn read_to_end(tiered: &Arc<Tiered>, key: &ObjectKey, ranged: bool) {
        let mut req = ReadRequest::new(http::Method::GET, crate::http::now());
        if ranged {
            req.range = Some("bytes=0-0".into());
        }
        let served = tiered.read(key, req).await.expect("served");
        let mut body = served.body.expect("a body");
        while let Some(chunk) = body.next().await {
            chunk.expect("a chunk");
        }
    }

    /// Waits (at most 10 s) until no copy is in flight.
    async fn copies_over(tiered: &Arc<Tiered>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tiered.backfills().manager.n_in_flight() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the copies ended within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// What a [`Hooked`] tier's writers do.
    #[derive(Clone)]
    enum Writers {
        /// Write and commit as the memory tier does.
        Plain,
        /// Wait for a permit before every chunk.
        Gated(Arc<tokio::sync::Semaphore>),
        /// Panic at the first chunk.
        PanicOnWrite,
        /// Never end a commit (which can be abandoned through its fence).
        HangInCommit,
    }

    /// A memory tier that counts its opens of whole objects (what a background copy reads) and
    /// whose writers behave as `writers` says.
    struct Hooked {
        inner: MemoryTier,
        writers: Writers,
        whole_opens: AtomicUsize,
    }

    impl Hooked {
        fn new(name: &str, capacity: u64, writers: Writers) -> Hooked {
            Hooked {
                inner: MemoryTier::new(name, capacity),
                writers,
                whole_opens: AtomicUsize::new(0),
            }
        }
    }

    struct HookedWriter {
        inner: Box<dyn TierWriter>,
        writers: Writers,
        fence: CommitFence,
    }

    #[async_trait::async_trait]
    impl TierWriter for HookedWriter {
        async fn write(&mut self, chunk: Bytes) -> Result<(), TierError> {
            match &self.writers {
                Writers::Gated(permits) => permits.acquire().await.expect("never closed").forget(),
                Writers::PanicOnWrite => {
                    panic!("a tier 0 writer that panics (on purpose, in a test)")
                }
                Writers::Plain | Writers::HangInCommit => {}
            }
            self.inner.write(chunk).await
        }
        async fn commit(self: Box<Self>) -> Result<ObjectMeta, TierError> {
            if let Writers::HangInCommit = self.writers {
                std::future::pending::<()>().await;
            }
            self.inner.commit().await
        }
        async fn abort(self: Box<Self>) {
            self.inner.abort().await;
        }
        fn fence(&self) -> Option<CommitFence> {
            // A commit that never ends never lands: abandoning it is safe. The others are the
            // memory tier's, which ends at once and offers no fence.
            match self.writers {
                Writers::HangInCommit => Some(self.fence.clone()),
                Writers::Plain | Writers::Gated(_) | Writers::PanicOnWrite => self.inner.fence(),
            }
        }
    }

    #[async_trait::async_trait]
    impl Tier for Hooked {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn max_object_size(&self) -> Option<u64> {
            self.inner.max_object_size()
        }
        async fn open(&self, key: &ObjectKey, req: &OpenRequest) -> Result<Opened, TierError> {
            if req.span == Span::WHOLE {
                self.whole_opens.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.open(key, req).await
        }
        async fn stat(
            &self,
            key: &ObjectKey,
            now: Timestamp,
        ) -> Result<Option<ObjectMeta>, TierError> {
            self.inner.stat(key, now).await
        }
        async fn create(
            &self,
            key: &ObjectKey,
            new: NewObject,
        ) -> Result<Box<dyn TierWriter>, TierError> {
            let inner = self.inner.create(key, new).await?;
            let writers = self.writers.clone();
            Ok(Box::new(HookedWriter { inner, writers, fence: CommitFence::default() }))
        }
        async fn delete(&self, key: &ObjectKey) -> Result<bool, TierError> {
            self.inner.delete(key).await
        }
        async fn stats(&self, now: Timestamp) -> Result<TierStats, TierError> {
            self.inner.stats(now).await
        }
        async fn namespaces(&self) -> Result<Vec<String>, TierError> {
            self.inner.namespaces().await
        }
        async fn close(&self) -> Result<(), TierError> {
            self.inner.close().await
        }
    }

    #[tokio::test]
    async fn every_finished_copy_leaves_the_drivers_maps() {
        let far = MemoryTier::new("far", 1 << 30);
        for n in 0..40 {
            store(&far, &key(&format!("k{n}")), &format!("v{n}"), vec![n as u8; 10_000]).await;
        }
        let near = MemoryTier::new("near", 1 << 30);
        let tiered = driver(Arc::new(near), Arc::new(far), COMMIT_DEADLINE);
        for n in 0..40 {
            read_to_end(&tiered, &key(&format!("k{n}")), n % 2 == 0).await;
        }
        copies_over(&tiered).await;
        let backfills = tiered.backfills();
        assert_eq!(backfills.manager.counters().committed, 40, "every copy committed");
        assert!(backfills.copies.is_empty(), "{} copy handles left", backfills.copies.len());
        assert!(backfills.pending_tees.is_empty(), "no tee waits for its read");
    }

    /// Counts the chunks of a [`Chunked`] tier's bodies still alive anywhere.
    struct Tracked(Arc<AtomicUsize>, Vec<u8>);

    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.1
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A deeper tier holding one object that it reads as `n_chunks` chunks of 1 KiB, each
    /// counted while alive.
    struct Chunked {
        meta: ObjectMeta,
        n_chunks: usize,
        alive: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Tier for Chunked {
        fn name(&self) -> &str {
            "chunked"
        }
        async fn open(&self, _: &ObjectKey, _: &OpenRequest) -> Result<Opened, TierError> {
            let alive = Arc::clone(&self.alive);
            let chunks = (0..self.n_chunks).map(move |_| {
                alive.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from_owner(Tracked(Arc::clone(&alive), vec![7; 1024])))
            });
            let body: ByteStream = Box::pin(futures::stream::iter(chunks));
            let window = rangecache_core::range::OpenWindow::Whole;
            Ok(Opened::Body { meta: self.meta.clone(), window, body })
        }
        async fn stat(&self, _: &ObjectKey, _: Timestamp) -> Result<Option<ObjectMeta>, TierError> {
            Ok(Some(self.meta.clone()))
        }
        async fn create(
            &self,
            _: &ObjectKey,
            _: NewObject,
        ) -> Result<Box<dyn TierWriter>, TierError> {
            Err(TierError::closed("chunked"))
        }
        async fn delete(&self, _: &ObjectKey) -> Result<bool, TierError> {
            Ok(false)
        }
        async fn stats(&self, _: Timestamp) -> Result<TierStats, TierError> {
            Ok(TierStats::default())
        }
        async fn namespaces(&self) -> Result<Vec<String>, TierError> {
            Ok(Vec::new())
        }
        async fn close(&self) -> Result<(), TierError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_cancelled_tee_queues_nothing_for_its_stalled_writer() {
        const N_CHUNKS: usize = 200;
        let alive = Arc::new(AtomicUsize::new(0));
        let meta = ObjectMeta {
            size: (N_CHUNKS * 1024) as u64,
            etag: EntityTag::strong("v1").expect("valid"),
            last_modified: Timestamp::from_secs(1_700_000_000),
            headers: Vec::new(),
            expires: None,
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let near = Hooked::new("near", 1 << 30, Writers::Gated(Arc::clone(&permits)));
        let far = Chunked { meta, n_chunks: N_CHUNKS, alive: Arc::clone(&alive) };
        let tiered = driver(Arc::new(near), Arc::new(far), COMMIT_DEADLINE);
        let key = key("big");
        let req = ReadRequest::new(http::Method::GET, crate::http::now());
        let mut body = tiered.read(&key, req).await.expect("served").body.expect("a body");
        // The first chunk reaches the copy's writer, which stalls on it.
        drop(body.next().await.expect("a chunk").expect("ok"));
        // A write of the key cancels the copy while its writer is stalled.
        let _ = tiered.handle(backfill::Input::MutationStarted {
            key: key.clone(),
            kind: MutationKind::Write,
        });
        // The client reads the rest; none of it may wait in the copy's queue.
        let mut n_read = 1;
        while let Some(chunk) = body.next().await {
            drop(chunk.expect("ok"));
            n_read += 1;
        }
        assert_eq!(n_read, N_CHUNKS);
        let held = alive.load(Ordering::SeqCst);
        assert!(held <= 2, "{held} chunks of a cancelled copy are still held");
        drop(body);
        permits.add_permits(N_CHUNKS);
        let _ = tiered.handle(backfill::Input::MutationEnded { key, kind: MutationKind::Write });
        copies_over(&tiered).await;
        assert!(tiered.backfills().copies.is_empty());
    }

    /// Five ranged reads of a cold 10 KiB object over `near`, a tier 0 that cannot take it; how
    /// many copies started and how many whole reads of the deeper tier they made.
    async fn ranged_reads_over(near: MemoryTier) -> (u64, usize) {
        let far = Arc::new(Hooked::new("far", 1 << 20, Writers::Plain));
        store(&*far, &key("big"), "v1", vec![1; 10_240]).await;
        let tiered = driver(Arc::new(near), far.clone(), COMMIT_DEADLINE);
        for _ in 0..5 {
            read_to_end(&tiered, &key("big"), true).await;
            copies_over(&tiered).await;
        }
        let started = tiered.backfills().manager.counters().started;
        (started, far.whole_opens.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_tier_0_that_cannot_take_a_copy_costs_no_whole_read_of_the_source() {
        // Too small for the object: no copy starts at all.
        let (started, whole) = ranged_reads_over(MemoryTier::new("near", 4096)).await;
        assert_eq!((started, whole), (0, 0), "copies started, whole reads");
        // Able to hold it but refusing writers (closed): copies start, and each is refused by
        // tier 0 before the source is opened.
        let closed = MemoryTier::new("near", 1 << 20);
        closed.close().await.expect("close");
        let (started, whole) = ranged_reads_over(closed).await;
        assert_eq!((started, whole), (5, 0), "copies started, whole reads");
    }

    /// A ranged read of a cold object over a tier 0 whose writers misbehave as `writers` says;
    /// then a write of the key must be let through within a few seconds, and the copy be over.
    async fn a_write_after_a_faulty_copy_proceeds(writers: Writers) {
        let far = MemoryTier::new("far", 1 << 20);
        store(&far, &key("k"), "v1", vec![1; 4096]).await;
        let near = Hooked::new("near", 1 << 20, writers);
        let tiered = driver(Arc::new(near), Arc::new(far), Duration::from_millis(200));
        read_to_end(&tiered, &key("k"), true).await;
        let written = key("k");
        let mutation = tiered.start_mutation(&written, MutationKind::Write);
        let proceeded = tokio::time::timeout(Duration::from_secs(5), mutation).await;
        assert!(proceeded.is_ok_and(|guard| guard.is_ok()), "the write was let through");
        copies_over(&tiered).await;
        assert!(tiered.backfills().copies.is_empty());
    }

    #[tokio::test]
    async fn a_copy_task_that_panics_is_reported_and_holds_nothing_up() {
        a_write_after_a_faulty_copy_proceeds(Writers::PanicOnWrite).await;
    }

    #[tokio::test]
    async fn a_commit_past_its_deadline_is_abandoned_and_lets_writes_through() {
        a_write_after_a_faulty_copy_proceeds(Writers::HangInCommit).await;
    }

    #[tokio::test]
    async fn a_key_lock_serializes_one_key_only_and_leaves_nothing_behind() {
        let locks = KeyLocks::default();
        let first = locks.lock(&key("a")).await;
        // Another key is free at once.
        let other = locks.lock(&key("b")).await;
        // The same key waits for the first holder.
        let waiting = tokio::time::timeout(Duration::from_millis(50), locks.lock(&key("a"))).await;
        assert!(waiting.is_err(), "a second lock of one key waits for the first");
        drop(first);
        let second = locks.lock(&key("a")).await;
        assert_eq!(locks.map().len(), 2);
        drop((second, other));
        // The cancelled wait above gave its entry back too.
        assert!(locks.map().is_empty(), "no entry outlives its holders and waiters");
    }
}
