//! Writes, deletes and invalidations, as the core's write machine (`rangecache_core::write`)
//! decides them: which tier is asked what and in which order, which failure fails the mutation
//! and which only leaves a nearer tier out, and the answer. This file creates writers, moves the
//! body's chunks, commits and deletes, and reports what each tier answered.
//!
//! Every mutation reports itself to the backfill manager, which cancels the key's copies and
//! holds the mutation back while a commit of the key is under way, and commits under the key's
//! commit lock ([`KeyLocks`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;

use rangecache_core::backfill::{self, MutationKind};
use rangecache_core::object::expires_at;
use rangecache_core::write::{self, Failure};
use rangecache_core::{ObjectKey, TierIdx};

use super::lifecycle::OpKind;
use super::{Error, Served, Tiered, WriteBody, WriteRequest, millis};
use crate::storage::{NewObject, TierError, TierWriter};

impl Tiered {
    /// Stores `body` in every tier as the write machine asks; visible only once the
    /// authoritative tier committed, and answered as the machine decides.
    pub async fn write(
        self: &Arc<Self>,
        key: &ObjectKey,
        write: WriteRequest,
        body: &mut WriteBody,
    ) -> Result<Served, Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let _operation = self.enter(OpKind::Mutation)?;
        let request = write::Request {
            if_match: write.if_match.clone(),
            if_none_match: write.if_none_match.clone(),
            content_length: write.content_length,
            max_size: write.max_size,
            now: write.now,
        };
        let machine = write::Machine::write(request, &self.names);
        Mutation::new(self, key, machine, Some(Upload { write, body })).run().await
    }

    /// Removes the object from every tier as the write machine asks; answered 404 when no tier
    /// held it.
    pub async fn delete(self: &Arc<Self>, key: &ObjectKey) -> Result<Served, Error> {
        let _operation = self.enter(OpKind::Mutation)?;
        Mutation::new(self, key, write::Machine::delete(&self.names), None).run().await
    }

    /// Drops the copies held by the non-authoritative tiers, as the write machine asks.
    pub async fn invalidate(self: &Arc<Self>, key: &ObjectKey) -> Result<Served, Error> {
        let _operation = self.enter(OpKind::Mutation)?;
        Mutation::new(self, key, write::Machine::invalidate(&self.names), None).run().await
    }

    /// Reports a mutation of `key` and waits until the manager lets it touch the tiers; the
    /// guard reports its end when dropped, whatever the outcome.
    pub(super) async fn start_mutation(
        self: &Arc<Self>,
        key: &ObjectKey,
        kind: MutationKind,
    ) -> Result<MutationGuard, Error> {
        let (sender, receiver) = oneshot::channel();
        self.backfills().mutations.entry(key.clone()).or_default().push_back(sender);
        let guard = MutationGuard { tiered: self.clone(), key: key.clone(), kind };
        self.handle(backfill::Input::MutationStarted { key: key.clone(), kind });
        tokio::select! {
            proceed = receiver => proceed.map_err(|_| Error::ShuttingDown)?,
            () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
        }
        Ok(guard)
    }
}

/// A write's own part: what the host supplied and the body to read.
struct Upload<'a> {
    write: WriteRequest,
    body: &'a mut WriteBody,
}

/// One mutation being carried out: its machine and what the host holds for it. Fields drop in
/// order: the commit lock is released before the backfill manager hears that the mutation
/// ended, so the next writer of the key may go on at once.
struct Mutation<'a> {
    tiered: &'a Arc<Tiered>,
    key: &'a ObjectKey,
    machine: write::Machine,
    upload: Option<Upload<'a>>,
    /// Each tier's writer, while it has one.
    writers: Vec<Option<Box<dyn TierWriter>>>,
    /// The chunk just received, until it is written.
    chunk: Option<Bytes>,
    /// The body is being read, as `ReceiveBody` asked.
    receiving: bool,
    /// Inputs for the machine, in the order they were observed.
    pending: VecDeque<write::Input>,
    /// What each tier's latest failure said, and the body's, for the answer's message.
    causes: Vec<Option<String>>,
    body_cause: Option<String>,
    lock: Option<KeyLockGuard<'a>>,
    mutation: Option<MutationGuard>,
}

impl<'a> Mutation<'a> {
    fn new(
        tiered: &'a Arc<Tiered>,
        key: &'a ObjectKey,
        machine: write::Machine,
        upload: Option<Upload<'a>>,
    ) -> Mutation<'a> {
        let n_tiers = tiered.slots.len();
        Mutation {
            tiered,
            key,
            machine,
            upload,
            writers: (0..n_tiers).map(|_| None).collect(),
            chunk: None,
            receiving: false,
            pending: VecDeque::new(),
            causes: vec![None; n_tiers],
            body_cause: None,
            lock: None,
            mutation: None,
        }
    }

    /// Carries out every output, handing the machine what was observed, until it answers.
    async fn run(mut self) -> Result<Served, Error> {
        loop {
            while let Some(output) = self.machine.poll_output() {
                if let Some(answer) = self.carry_out(output).await {
                    return answer;
                }
            }
            if let Some(input) = self.pending.pop_front() {
                self.machine.handle_input(input);
            } else if self.receiving {
                let input = self.receive().await;
                self.machine.handle_input(input);
            } else {
                unreachable!("the write machine waits for nothing and has not answered");
            }
        }
    }

    /// Carries out one output; `Some` with the answer once the machine gave it.
    async fn carry_out(&mut self, output: write::Output) -> Option<Result<Served, Error>> {
        let tiered = self.tiered;
        let key = self.key;
        match output {
            write::Output::StatTier { tier } => {
                let slot = &tiered.slots[tier.get()];
                let input = match slot.tier.stat(key, crate::clock::now()).await {
                    Ok(meta) => write::Input::TierStatted { tier, meta },
                    Err(e) => {
                        tracing::warn!(tier = slot.tier.name(), %key, error = %e, "tier stat failed");
                        self.failed(tier, &e)
                    }
                };
                self.pending.push_back(input);
            }
            write::Output::StartMutation { kind } => {
                // Cancels any copy of the key under way and waits for a commit in progress.
                let input = match tiered.start_mutation(key, kind).await {
                    Ok(guard) => {
                        self.mutation = Some(guard);
                        write::Input::MutationProceeded
                    }
                    Err(_) => write::Input::ShuttingDown,
                };
                self.pending.push_back(input);
            }
            write::Output::CreateWriter { tier, guard } => {
                let write = &self.upload.as_ref().expect("only a write creates writers").write;
                let slot = &tiered.slots[tier.get()];
                let new = NewObject {
                    etag: write.etag.clone(),
                    last_modified: write.last_modified,
                    headers: write.headers.clone(),
                    expires: expires_at(write.now, write.ttl_millis, millis(slot.max_ttl)),
                    condition: guard.into(),
                    expected_size: write.content_length,
                };
                let input = match slot.tier.create(key, new).await {
                    Ok(writer) => {
                        self.writers[tier.get()] = Some(writer);
                        write::Input::WriterCreated { tier }
                    }
                    Err(e) => self.failed(tier, &e),
                };
                self.pending.push_back(input);
            }
            write::Output::ReceiveBody => self.receiving = true,
            write::Output::WriteChunk => {
                let chunk = self.chunk.take().expect("WriteChunk follows ChunkReceived");
                let results = futures::future::join_all(self.writers.iter_mut().map(|w| async {
                    match w {
                        Some(writer) => writer.write(chunk.clone()).await,
                        None => Ok(()),
                    }
                }))
                .await;
                for (idx, result) in results.into_iter().enumerate() {
                    if let Err(e) = result {
                        let input = self.failed(TierIdx::new(idx), &e);
                        self.pending.push_back(input);
                    }
                }
            }
            write::Output::AbortWriter { tier } => {
                tracing::debug!(tier = tiered.slots[tier.get()].tier.name(), %key, "tier left out of a write");
                if let Some(writer) = self.writers[tier.get()].take() {
                    writer.abort().await;
                }
            }
            write::Output::LockKey => {
                self.lock = Some(tiered.commit_locks.lock(key).await);
                // Once the tiers are closing, committing could write into a closed tier.
                let input = if tiered.closing.is_cancelled() {
                    write::Input::ShuttingDown
                } else {
                    write::Input::KeyLocked
                };
                self.pending.push_back(input);
            }
            write::Output::CommitTier { tier } => {
                let writer = self.writers[tier.get()]
                    .take()
                    .expect("the machine commits only tiers whose writer was created");
                let name = tiered.slots[tier.get()].tier.name();
                let input = match writer.commit().await {
                    Ok(meta) => {
                        tiered.metrics.tier_write(name, "committed");
                        write::Input::Committed { tier, meta }
                    }
                    Err(e) => {
                        tiered.metrics.tier_write(name, "error");
                        tracing::warn!(tier = name, %key, error = %e, "a tier failed to commit");
                        self.failed(tier, &e)
                    }
                };
                self.pending.push_back(input);
            }
            write::Output::DropCopy { tier } => {
                let slot = &tiered.slots[tier.get()];
                tracing::debug!(tier = slot.tier.name(), %key, "tier left out of a write");
                if let Err(e) = slot.tier.delete(key).await {
                    tracing::warn!(%key, error = %e, "dropping an older copy the write left out");
                }
            }
            write::Output::RemoveTier { tier } => {
                let input = match tiered.slots[tier.get()].tier.delete(key).await {
                    Ok(existed) => write::Input::TierRemoved { tier, existed },
                    Err(e) => self.failed(tier, &e),
                };
                self.pending.push_back(input);
            }
            write::Output::InvalidateTier { tier } => {
                let input = match tiered.slots[tier.get()].tier.invalidate(key).await {
                    Ok(()) => write::Input::TierRemoved { tier, existed: false },
                    Err(e) => self.failed(tier, &e),
                };
                self.pending.push_back(input);
            }
            write::Output::Finish { plan, cache_status } => {
                let cache_status = cache_status.to_field_value();
                return Some(Ok(Served { plan, body: None, cache_status }));
            }
            write::Output::Fail { failure, cache_status } => {
                abort_all(&mut self.writers).await;
                let cause = match failure {
                    Failure::Tier { tier, .. } => self.causes[tier.get()].take(),
                    Failure::BodyFailed => self.body_cause.take(),
                    Failure::ShuttingDown
                    | Failure::PreconditionFailed
                    | Failure::CurrentUnknown
                    | Failure::TooLarge { .. }
                    | Failure::LongerThanAnnounced { .. }
                    | Failure::ShorterThanAnnounced { .. } => None,
                };
                let cache_status = cache_status.to_field_value();
                return Some(Err(Error::Failed { failure, cache_status, cause }));
            }
        }
        None
    }

    /// The next piece of the body, as an input.
    async fn receive(&mut self) -> write::Input {
        let body = &mut self.upload.as_mut().expect("only a write reads a body").body;
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            () = self.tiered.shutdown.cancelled() => {
                self.receiving = false;
                return write::Input::ShuttingDown;
            }
        };
        match chunk {
            Some(Ok(chunk)) => {
                let bytes = chunk.len() as u64;
                self.tiered.metrics.request_bytes.inc_by(bytes);
                self.chunk = Some(chunk);
                write::Input::ChunkReceived { bytes }
            }
            Some(Err(e)) => {
                self.receiving = false;
                self.body_cause = Some(e.to_string());
                write::Input::BodyFailed
            }
            None => {
                self.receiving = false;
                write::Input::BodyEnded
            }
        }
    }

    /// Tier `tier` failed with `error`: the input reporting it, its message kept.
    fn failed(&mut self, tier: TierIdx, error: &TierError) -> write::Input {
        self.causes[tier.get()] = Some(error.to_string());
        write::Input::TierFailed { tier, fault: error.fault() }
    }
}

/// Reports `MutationEnded` when the mutation is over, however it ended.
pub(super) struct MutationGuard {
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

/// One lock per key with a commit under way or waiting: concurrent writes of a key commit one
/// after the other, each deepest first, so every tier ends with the same revision, while keys
/// never wait for each other (a slow multipart completion holds up only its own key). An entry
/// lives as long as someone holds or waits for it.
#[derive(Default)]
pub(super) struct KeyLocks {
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

async fn abort_all(writers: &mut [Option<Box<dyn TierWriter>>]) {
    futures::future::join_all(writers.iter_mut().filter_map(Option::take).map(|w| w.abort())).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tiered::test_key as key;

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
