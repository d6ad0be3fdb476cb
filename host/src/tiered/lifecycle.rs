//! The driver's lifecycle: readiness probes of the tiers at start, the operation guards every request holds while it touches the tiers,
//! and shutdown, which refuses new work, cuts streaming bodies, drains the copies and only then
//! closes the tiers (SPEC §4: nothing is written to a closed tier).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio_util::sync::CancellationToken;

use rangecache_core::backfill;
use rangecache_core::{Key, Namespace, ObjectKey};

use super::{Error, Tiered};
use crate::storage::ByteStream;

/// How long shutdown waits for cancelled copies to end before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing waits for requests still touching the tiers (a commit under way) to end.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long closing waits for bodies it cut off to be dropped; a body whose client stopped
/// reading is never polled again, and it reads nothing from the tiers once cut off.
pub const READ_CUT_WAIT: Duration = Duration::from_secs(1);
/// How long one readiness probe of a tier may take before it counts as unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two rounds of readiness probes.
const PROBE_MAX_WAIT: Duration = Duration::from_secs(5);

impl Tiered {
    /// Asks every tier for the metadata of one key until each has answered, found or not: a
    /// tier that answers is reachable, and its credentials and certificates are accepted. A
    /// tier that fails or takes longer than [`PROBE_TIMEOUT`] is asked again after a wait that
    /// doubles from 100 ms to 5 s. Returns once all have answered, or when shutdown begins.
    pub async fn probe_until_answered(&self) {
        // Nobody writes this key; what a tier holds under it makes no difference.
        let key = ObjectKey {
            namespace: Namespace::parse("rangecache").expect("a valid namespace"),
            key: Key::from_segment("readiness-probe"),
        };
        let mut waiting: Vec<usize> = (0..self.slots.len()).collect();
        let mut wait = Duration::from_millis(100);
        while !waiting.is_empty() && !self.is_shutting_down() {
            let now = crate::clock::now();
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

    /// True once shutdown has begun: `/healthz` then tells load balancers to look elsewhere.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Refuses new work and cancels every copy; [`Tiered::shutdown`] then waits for them.
    pub fn begin_shutdown(self: &Arc<Self>) {
        self.shutdown.cancel();
        self.handle(backfill::Input::ShutdownRequested);
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
                    left = self.operations[kind as usize].load(Ordering::SeqCst),
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
    pub(super) fn enter(self: &Arc<Self>, kind: OpKind) -> Result<Operation, Error> {
        self.operations[kind as usize].fetch_add(1, Ordering::SeqCst);
        let operation = Operation { tiered: self.clone(), kind };
        if self.closing.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        Ok(operation)
    }

    /// Resolves when no operation of `kind` is under way.
    async fn idle(&self, kind: OpKind) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.operations[kind as usize].load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A body that holds its read's [`Operation`] and ends with an error once the tiers start
    /// closing, so no byte is read from a closed tier.
    pub(super) fn guarded(&self, body: ByteStream, operation: Operation) -> ByteStream {
        Box::pin(Guarded {
            inner: Some(body),
            closing: self.closing.clone(),
            wake_on_closing: None,
            _operation: operation,
        })
    }

    pub(super) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished copies so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(task, &self.runtime);
    }
}

/// One request touching the tiers; see [`Tiered::enter`].
pub(super) struct Operation {
    tiered: Arc<Tiered>,
    kind: OpKind,
}

/// What an [`Operation`] does, for how long closing waits for it.
#[derive(Clone, Copy, Debug)]
pub(super) enum OpKind {
    /// A write, delete or invalidate: it may be committing.
    Mutation = 0,
    /// A read and its body.
    Read = 1,
}

impl Drop for Operation {
    fn drop(&mut self) {
        let count = &self.tiered.operations[self.kind as usize];
        if count.fetch_sub(1, Ordering::SeqCst) == 1 {
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
