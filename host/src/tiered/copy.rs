//! Copies into tier 0: the driver's side of the backfill manager. The manager has one owner, a
//! mutex held only while one input is handled and the outputs are drained, never across an
//! `.await`. Every copy (a tee of a full read, or a background full copy for a ranged read) runs
//! as a task in one `JoinSet` with its own `CancellationToken`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use rangecache_core::backfill::{self, CopyId, DiscardReason, Mode, Refusal};
use rangecache_core::object::copy_expires_at;
use rangecache_core::range::Span;
use rangecache_core::{ObjectKey, ObjectMeta, TierIdx};

use super::{Tiered, millis};
use crate::storage::{
    ByteStream, Conditions, NewObject, OpenRequest, Opened, TierWriter, WriteCondition,
};

/// Longest a commit into tier 0 may take before it is abandoned (when the tier can promise it
/// then never lands): every write of the key waits for it, and a sound device commits a copy in
/// far less.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(30);

/// The backfill manager and what the host keeps beside it for each copy it started.
pub(super) struct Backfills {
    pub(super) manager: backfill::Manager,
    /// Commands to the task of each live copy, and its cancellation token.
    pub(super) copies: HashMap<CopyId, CopyHandle>,
    /// Tee copies started and not yet attached to their read's body.
    pub(super) pending_tees: HashMap<CopyId, CopyJob>,
    /// Mutations waiting for `ProceedWithMutation`, per key, in arrival order.
    pub(super) mutations: HashMap<ObjectKey, VecDeque<oneshot::Sender<()>>>,
    /// Counters already exported, so each turn exports only what changed.
    pub(super) exported: backfill::Counters,
}

pub(super) struct CopyHandle {
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
pub(super) struct Turn {
    /// Copies discarded this turn.
    pub(super) discarded: Vec<CopyId>,
}

impl Tiered {
    /// The backfill state, locked. The guard is never held across an `.await`; a poisoned lock
    /// is taken as it is, like every lock in the host.
    pub(super) fn backfills(&self) -> MutexGuard<'_, Backfills> {
        self.backfills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the manager for a copy into tier 0 and, when it starts one, starts it: a background
    /// copy's task at once, a tee when its read's body is wrapped ([`Tiered::tee`]). The answer
    /// goes straight back to the read machine.
    pub(super) fn request_copy(
        self: &Arc<Self>,
        request: backfill::CopyRequest,
    ) -> Result<CopyId, Refusal> {
        let mut backfills = self.backfills();
        let answer = backfills.manager.request_copy(&request);
        if let Ok(copy) = answer {
            let backfill::CopyRequest { key, from, meta, mode, .. } = request;
            let token = self.shutdown.child_token();
            let (commands, receiver) = mpsc::unbounded_channel();
            backfills.copies.insert(copy, CopyHandle { token: token.clone(), commands });
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
        self.export_counters(&mut backfills);
        answer
    }

    /// Hands one input to the manager and carries out every output. The lock is held only for
    /// the input and the drain; spawning and signalling tasks never awaits.
    pub(super) fn handle(self: &Arc<Self>, input: backfill::Input) -> Turn {
        let mut turn = Turn::default();
        let mut backfills = self.backfills();
        backfills.manager.handle_input(input);
        while let Some(output) = backfills.manager.poll_output() {
            match output {
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

/// Everything a copy's task needs.
pub(super) struct CopyJob {
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
            now: crate::clock::now(),
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
            Ok(Opened::Body { meta, body, .. }) => {
                // The manager checks that this is the revision it started the copy of; if not,
                // its Discard reaches the copy's commands before any byte is written.
                let (etag, size) = (meta.etag, meta.size);
                self.handle(backfill::Input::SourceOpened { copy: job.copy, etag, size });
                self.run_copy(job, writer, body, true, guard).await;
            }
            Ok(Opened::NotFound | Opened::NotSatisfiable { .. })
            | Ok(Opened::PreconditionFailed { .. } | Opened::NotModified { .. })
            | Err(_) => {
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
            expires: copy_expires_at(&job.meta, crate::clock::now(), millis(tier0.max_ttl)),
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
    pub(super) fn tee(self: &Arc<Self>, copy: CopyId, body: ByteStream) -> ByteStream {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use rangecache_core::backfill::MutationKind;
    use rangecache_core::{EntityTag, Timestamp};

    use super::*;
    use crate::metrics::Metrics;
    use crate::storage::{CommitFence, MemoryTier, Tier, TierError, TierStats};
    use crate::tiered::test_key as key;
    use crate::tiered::{ReadRequest, TierSlot};

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
        let mut req = ReadRequest::new(http::Method::GET, crate::clock::now());
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
        let req = ReadRequest::new(http::Method::GET, crate::clock::now());
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
}
