//! The memory tier: whole objects as `bytes::Bytes` in a size-bounded LRU.
//!
//! A ranged read is a zero-copy slice of the stored buffer. A writer buffers its chunks and
//! only its commit, under the tier's lock, checks the write condition and swaps the new
//! revision in, so a reader sees either the old revision or the new one, never a mix: the
//! metadata and the buffer of a revision live in one map entry and are cloned together.
//!
//! The bytes a writer buffers are counted before it holds them: it reserves its announced size
//! (`NewObject::expected_size`) at `create` and grows the reservation chunk by chunk, against a
//! write budget shared by every writer of the tier (the tier's capacity unless configured
//! otherwise). A write that would take the reservations past the budget is refused with
//! [`TierError::Busy`] (a later write may fit; one larger than the whole budget is
//! [`TierError::TooLarge`]), so a slow
//! client or a burst of backfills holds at most the budget in buffers next to the committed
//! objects, whatever their number. The reservation ends when the writer commits (its bytes then
//! count in the LRU, which evicts down to the capacity), aborts or is dropped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use futures::stream;
use rangecache_core::read;
use rangecache_core::{ObjectKey, ObjectMeta, Timestamp};

use super::lru::Lru;
use super::{ByteStream, NewObject, OpenRequest, Opened, Tier, TierError, TierStats, TierWriter};

/// A size-bounded LRU of whole objects in memory.
pub struct MemoryTier {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    capacity: u64,
    /// Most bytes all writers in flight may hold at once.
    write_budget: u64,
    /// Bytes reserved by writers in flight; never above `write_budget`.
    reserved: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// Every revision, least recently used first, sized by its bytes.
    objects: Lru<ObjectKey, Stored>,
    closed: bool,
}

/// One revision: its metadata and its bytes, always replaced together.
#[derive(Clone)]
struct Stored {
    meta: ObjectMeta,
    bytes: Bytes,
}

impl MemoryTier {
    /// An empty tier holding at most `capacity` bytes of objects, whose writers in flight
    /// together buffer at most `capacity` bytes more (so any object that fits the tier can be
    /// written while no other write holds the budget).
    pub fn new(name: &str, capacity: u64) -> MemoryTier {
        MemoryTier::with_write_budget(name, capacity, capacity)
    }

    /// An empty tier holding at most `capacity` bytes of objects, whose writers in flight
    /// together buffer at most `write_budget` bytes; an object larger than the budget can never
    /// be written.
    pub fn with_write_budget(name: &str, capacity: u64, write_budget: u64) -> MemoryTier {
        MemoryTier {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                capacity,
                write_budget,
                reserved: AtomicU64::new(0),
                state: Mutex::new(State { objects: Lru::new(), closed: false }),
            }),
        }
    }

    /// Bytes currently reserved by writers in flight (zero once every writer has committed,
    /// aborted or been dropped).
    pub fn reserved_bytes(&self) -> u64 {
        self.shared.reserved.load(Ordering::Acquire)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map consistent (every mutation is a single
        // insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The metadata of the live revision of `key`, dropping it if it expired.
    fn live(&mut self, key: &ObjectKey, now: Timestamp) -> Option<&ObjectMeta> {
        if self.objects.peek(key)?.meta.is_expired(now) {
            self.objects.remove(key);
            return None;
        }
        self.objects.peek(key).map(|stored| &stored.meta)
    }

    /// The live revision of `key`, marked as just read, dropping it if it expired.
    fn read(&mut self, key: &ObjectKey, now: Timestamp) -> Option<Stored> {
        match self.objects.get(key) {
            Some(stored) if !stored.meta.is_expired(now) => Some(stored.clone()),
            Some(_) => {
                self.objects.remove(key);
                None
            }
            None => None,
        }
    }

    fn purge_expired(&mut self, now: Timestamp) {
        let expired: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(_, stored)| stored.meta.is_expired(now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.objects.remove(&key);
        }
    }
}

#[async_trait::async_trait]
impl Tier for MemoryTier {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn max_object_size(&self) -> Option<u64> {
        Some(self.shared.capacity.min(self.shared.write_budget))
    }

    async fn open(&self, key: &ObjectKey, req: &OpenRequest) -> Result<Opened, TierError> {
        let Some(stored) = self.state().read(key, req.now) else {
            return Ok(Opened::NotFound);
        };
        let window = match read::resolve_open(&stored.meta, &req.conditions, req.span) {
            Ok(window) => window,
            Err(refusal) => return Ok(Opened::without_body(refusal, stored.meta)),
        };
        let bounds = window.bounds(stored.meta.size);
        // Both bounds lie inside the buffer: the core resolved them against this revision's size.
        let slice = stored.bytes.slice(bounds.start as usize..bounds.end as usize);
        let body: ByteStream = if slice.is_empty() {
            Box::pin(stream::empty())
        } else {
            Box::pin(stream::iter([Ok(slice)]))
        };
        Ok(Opened::Body { meta: stored.meta, window, body })
    }

    async fn stat(&self, key: &ObjectKey, now: Timestamp) -> Result<Option<ObjectMeta>, TierError> {
        Ok(self.state().live(key, now).cloned())
    }

    async fn create(
        &self,
        key: &ObjectKey,
        new: NewObject,
    ) -> Result<Box<dyn TierWriter>, TierError> {
        if self.state().closed {
            return Err(TierError::closed(&self.shared.name));
        }
        let mut reservation = Reservation { shared: Arc::clone(&self.shared), bytes: 0 };
        if let Some(size) = new.expected_size {
            TierError::unless_fits(&self.shared.name, size, self.shared.capacity)?;
            reservation.grow_to(size)?;
        }
        let buffer = match new.expected_size {
            // Reserved above, so the whole size fits the budget.
            Some(size) => Buffer::Sized(BytesMut::with_capacity(size as usize)),
            None => Buffer::Chunks(Vec::new()),
        };
        Ok(Box::new(MemoryWriter { reservation, key: key.clone(), new, buffer, received: 0 }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, TierError> {
        Ok(self.state().objects.remove(key).is_some())
    }

    async fn stats(&self, now: Timestamp) -> Result<TierStats, TierError> {
        let mut state = self.state();
        state.purge_expired(now);
        Ok(TierStats {
            objects: state.objects.len() as u64,
            bytes: state.objects.bytes(),
            capacity: Some(self.shared.capacity),
        })
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        let state = self.state();
        let names: BTreeSet<&str> =
            state.objects.iter().map(|(key, _)| key.namespace.as_str()).collect();
        Ok(names.into_iter().map(str::to_owned).collect())
    }

    async fn close(&self) -> Result<(), TierError> {
        self.state().closed = true;
        Ok(())
    }
}

impl Shared {
    /// Adds `more` bytes to the writers' reservations, unless that would pass the budget.
    fn reserve(&self, more: u64) -> Result<(), TierError> {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                reserved.checked_add(more).filter(|&total| total <= self.write_budget)
            })
            .map(drop)
            .map_err(|reserved| TierError::Busy {
                tier: self.name.clone(),
                needed: more,
                available: self.write_budget.saturating_sub(reserved),
            })
    }
}

/// Bytes of the write budget held by one writer, given back when it is dropped.
struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Reservation {
    /// Makes the reservation at least `total` bytes; on refusal it is left as it was.
    fn grow_to(&mut self, total: u64) -> Result<(), TierError> {
        if total > self.shared.write_budget {
            // No amount of waiting lets this writer fit: the object is too large, not the tier
            // busy.
            return Err(TierError::TooLarge {
                tier: self.shared.name.clone(),
                size: total,
                capacity: self.shared.write_budget,
            });
        }
        if total > self.bytes {
            self.shared.reserve(total - self.bytes)?;
            self.bytes = total;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A write into the memory tier: chunks are held privately until the commit, and counted in
/// the tier's write budget by `reservation` meanwhile.
struct MemoryWriter {
    reservation: Reservation,
    key: ObjectKey,
    new: NewObject,
    buffer: Buffer,
    received: u64,
}

/// Where a writer keeps its bytes until the commit.
enum Buffer {
    /// The size was announced: one buffer of that size, filled as chunks arrive, so each chunk
    /// is let go at once and the object never exists twice.
    Sized(BytesMut),
    /// The size is unknown: the chunks, joined at the commit.
    Chunks(Vec<Bytes>),
}

#[async_trait::async_trait]
impl TierWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), TierError> {
        let received = self.received + chunk.len() as u64;
        TierError::unless_fits(
            &self.reservation.shared.name,
            received,
            self.reservation.shared.capacity,
        )?;
        // A refused chunk is neither kept nor counted: the writer stays as it was.
        self.reservation.grow_to(received)?;
        self.received = received;
        match &mut self.buffer {
            Buffer::Sized(buffer) => buffer.extend_from_slice(&chunk),
            Buffer::Chunks(chunks) if !chunk.is_empty() => chunks.push(chunk),
            Buffer::Chunks(_) => {}
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<ObjectMeta, TierError> {
        let MemoryWriter { reservation, key, new, buffer, received } = *self;
        let shared = Arc::clone(&reservation.shared);
        if let Some(expected) = new.expected_size
            && expected != received
        {
            return Err(TierError::SizeMismatch { tier: shared.name.clone(), expected, received });
        }
        // One contiguous buffer of its own, so every later ranged read is a slice of it and no
        // stored object holds on to a larger buffer it was received in.
        let bytes = match buffer {
            Buffer::Sized(buffer) => buffer.freeze(),
            Buffer::Chunks(chunks) => {
                let mut joined = BytesMut::with_capacity(received as usize);
                for chunk in chunks {
                    joined.extend_from_slice(&chunk);
                }
                joined.freeze()
            }
        };
        let meta = ObjectMeta {
            size: received,
            etag: new.etag,
            last_modified: new.last_modified,
            headers: new.headers,
            expires: new.expires,
        };
        let mut state = shared.state();
        if state.closed {
            return Err(TierError::closed(&shared.name));
        }
        let current = state.live(&key, crate::clock::now());
        if !new.condition.allows(current) {
            return Err(TierError::PreconditionFailed { tier: shared.name.clone() });
        }
        state.objects.insert(key, Stored { meta: meta.clone(), bytes }, received);
        while state.objects.bytes() > shared.capacity {
            if state.objects.pop_oldest().is_none() {
                break;
            }
        }
        // Given back only now that the LRU counts the bytes (and has evicted to make room for
        // them), so there is no moment when the buffer is counted nowhere; every earlier return
        // gives it back by dropping it.
        drop(reservation);
        Ok(meta)
    }

    async fn abort(self: Box<Self>) {}
}
