//! Writes, deletes and invalidations: every mutation of a key first reports itself to the
//! backfill manager (which cancels the key's copies and holds the mutation back while a commit of
//! the key is under way), then touches the tiers under the key's commit lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use tokio::sync::oneshot;

use rangecache_core::backfill::{self, MutationKind};
use rangecache_core::object::expires_at;
use rangecache_core::{ObjectKey, ObjectMeta};

use super::lifecycle::OpKind;
use super::{Error, Tiered, WriteBody, WriteRequest, millis};
use crate::storage::{NewObject, TierError, TierWriter, WriteCondition};

impl Tiered {
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
    ) -> Result<ObjectMeta, Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
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
                    return Err(Error::ShuttingDown);
                }
            };
            let chunk = match chunk {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    abort_all(writers).await;
                    return Err(Error::IncompleteUpload(e.to_string()));
                }
            };
            received += chunk.len() as u64;
            self.metrics.request_bytes.inc_by(chunk.len() as u64);
            if received > write.max_size {
                abort_all(writers).await;
                return Err(Error::TooLarge(write.max_size));
            }
            if let Some(expected) = write.content_length
                && received > expected
            {
                abort_all(writers).await;
                return Err(Error::IncompleteUpload(format!(
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
            return Err(Error::IncompleteUpload(format!(
                "received {received} of the {expected} bytes announced"
            )));
        }
        // Concurrent writes of one key commit one after the other, each deepest first, so every
        // tier ends with the same revision.
        let _commits = self.commit_locks.lock(key).await;
        if self.closing.is_cancelled() {
            // The tiers are closing: committing now could write into a closed tier.
            abort_all(writers).await;
            return Err(Error::ShuttingDown);
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
    pub async fn delete(self: &Arc<Self>, key: &ObjectKey) -> Result<bool, Error> {
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
    pub async fn invalidate(self: &Arc<Self>, key: &ObjectKey) -> Result<(), Error> {
        let _operation = self.enter(OpKind::Mutation)?;
        let _mutation = self.start_mutation(key, MutationKind::Invalidate).await?;
        let _commits = self.commit_locks.lock(key).await;
        for slot in &self.slots[..self.slots.len() - 1] {
            slot.tier.invalidate(key).await?;
        }
        Ok(())
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

async fn abort_all(writers: Vec<Option<Box<dyn TierWriter>>>) {
    futures::future::join_all(writers.into_iter().flatten().map(|w| w.abort())).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rangecache_core::{Key, Namespace};

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Namespace::parse("ns").expect("valid"),
            key: Key::from_segment(name),
        }
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
