//! The disk tier: one file per object in a directory that survives restarts, a size-bounded
//! LRU with TTL expiry over it, and atomic commits by rename.
//!
//! Layout: `ROOT/NAMESPACE/KEY`, where the namespace and the key are the core's validated
//! types (letters, digits, `_`, `-`; 64 hex digits), so no path can leave `ROOT`. Each file
//! holds one revision: a header carrying the revision's metadata, then its bytes. A reader
//! opens the file once and takes both the metadata and the bytes from that open file, so a
//! rename of a newer revision over the name, or a delete, cannot pair one revision's metadata
//! with another's bytes.
//!
//! A writer fills `ROOT/NAMESPACE/.tmp-KEY-PID-N` (same directory, so the rename is atomic),
//! and its commit patches the size into the header, `fsync`s the file's data, then renames it
//! over `KEY` under the index lock, after checking the write condition there. The directory is
//! not `fsync`ed: a crash may lose the latest commit of a cache entry, never expose a torn one.
//! On start every `.tmp-` leftover is deleted, and the index (sizes, expiry, recency by
//! modification time) is rebuilt from the headers. [`inspect`] judges the files for both that
//! scan and `rangecache fsck`, so the two never disagree about what is broken.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream;
use rangecache_core::read;
use rangecache_core::{Key, Namespace, ObjectKey, ObjectMeta, Timestamp};

use super::lru::Lru;
use super::{ByteStream, NewObject, OpenRequest, Opened, Tier, TierError, TierStats, TierWriter};

/// First bytes of every object file; the version digit changes with the header layout.
const MAGIC: &[u8; 8] = b"RCOBJ01\n";
/// Magic, the body size (u64 LE), the metadata length (u32 LE).
const FIXED_HEADER: u64 = 8 + 8 + 4;
/// Offset of the size field, patched at commit.
const SIZE_OFFSET: u64 = 8;
/// Largest metadata block accepted when reading a header (stored headers are small).
const MAX_META_LEN: u32 = 1 << 20;
/// Bytes read per step of a streamed read: large enough that the per-step cost (a syscall,
/// sometimes a blocking task) is small against the copy, small enough that a slow reader pins
/// little memory (one chunk in flight per read).
const READ_CHUNK: usize = 256 * 1024;
/// Most object files kept open for reads (nginx's `open_file_cache max`): a read of a recently
/// read object neither opens its file nor parses its header again.
const MAX_OPEN_FILES: u64 = 1024;
/// Prefix of in-progress writes; namespaces cannot start with '.', keys are hex, so it never
/// names an object.
const TMP_PREFIX: &str = ".tmp-";

/// A size-bounded LRU of objects in a directory.
pub struct DiskTier {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    root: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    tmp_counter: AtomicU64,
}

struct Index {
    /// Every revision's metadata, least recently used first, sized by its bytes.
    entries: Lru<ObjectKey, ObjectMeta>,
    /// Open files of recently read or written revisions, at most [`MAX_OPEN_FILES`]. A handle
    /// always holds the revision `entries` describes for its key: both change together, under
    /// this lock, whenever a commit, delete, expiry or eviction touches the key.
    open_files: Lru<ObjectKey, Arc<OpenFile>>,
    /// Commits so far: a file opened outside the lock is kept only if no commit came between
    /// the lookup and the open, so it is surely the revision the lookup saw.
    n_commits: u64,
    closed: bool,
}

/// One revision's file, open for reads: the bytes start at `data_offset`. The handle reads the
/// same inode however the name is later renamed over or unlinked.
struct OpenFile {
    file: File,
    data_offset: u64,
}

impl Index {
    fn new() -> Index {
        Index { entries: Lru::new(), open_files: Lru::new(), n_commits: 0, closed: false }
    }

    /// Drops `key`'s entry and open file; true if it had an entry.
    fn forget(&mut self, key: &ObjectKey) -> bool {
        self.open_files.remove(key);
        self.entries.remove(key).is_some()
    }

    /// Keeps `file` as the open file of `key`'s current revision, closing the least recently
    /// used file past [`MAX_OPEN_FILES`].
    fn keep_open(&mut self, key: &ObjectKey, file: Arc<OpenFile>) {
        // Each open file counts one unit against the bound.
        self.open_files.insert(key.clone(), file, 1);
        while self.open_files.bytes() > MAX_OPEN_FILES {
            if self.open_files.pop_oldest().is_none() {
                break;
            }
        }
    }
}

impl DiskTier {
    /// Opens (creating if needed) the directory `root` holding at most `capacity` bytes of
    /// objects: deletes leftovers of interrupted writes and expired or unreadable entries, and
    /// rebuilds the index from the files.
    pub async fn open(name: &str, root: &Path, capacity: u64) -> Result<DiskTier, TierError> {
        let name = name.to_owned();
        let root = root.to_path_buf();
        let io_err = |tier: &str, source| TierError::Io { tier: tier.to_owned(), source };
        let tier_name = name.clone();
        tokio::task::spawn_blocking(move || {
            fs::create_dir_all(&root).map_err(|e| io_err(&name, e))?;
            let index = scan(&root, crate::clock::now()).map_err(|e| io_err(&name, e))?;
            let shared = Shared {
                name,
                root,
                capacity,
                index: Mutex::new(index),
                tmp_counter: AtomicU64::new(0),
            };
            {
                let mut index = shared.index();
                shared.evict(&mut index);
            }
            Ok(DiskTier { shared: Arc::new(shared) })
        })
        .await
        .map_err(|e| io_err(&tier_name, io::Error::other(e)))?
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }
}

#[async_trait::async_trait]
impl Tier for DiskTier {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn max_object_size(&self) -> Option<u64> {
        Some(self.shared.capacity)
    }

    async fn open(&self, key: &ObjectKey, req: &OpenRequest) -> Result<Opened, TierError> {
        let found = {
            let mut index = self.shared.index();
            // A read marks the entry used.
            match index.entries.get(key) {
                None => return Ok(Opened::NotFound),
                Some(meta) if meta.is_expired(req.now) => None,
                Some(meta) => {
                    let meta = meta.clone();
                    let open_file = index.open_files.get(key).cloned();
                    Some((meta, open_file, index.n_commits))
                }
            }
        };
        let Some((meta, open_file, n_commits)) = found else {
            self.shared.remove_expired(key.clone(), req.now).await?;
            return Ok(Opened::NotFound);
        };
        let (meta, file) = match open_file {
            Some(file) => (meta, file),
            None => {
                let path = self.shared.object_path(key);
                let opened = self.shared.blocking(move || open_object(&path)).await?;
                // The metadata comes from the file itself: whatever revision the name pointed
                // at when it was opened is the one described and read.
                let Some((file, meta, data_offset)) = opened else {
                    return Ok(Opened::NotFound);
                };
                let file = Arc::new(OpenFile { file, data_offset });
                let mut index = self.shared.index();
                if index.n_commits == n_commits && index.entries.contains(key) {
                    index.keep_open(key, Arc::clone(&file));
                }
                (meta, file)
            }
        };
        if meta.is_expired(req.now) {
            return Ok(Opened::NotFound);
        }
        let window = match read::resolve_open(&meta, &req.conditions, req.span) {
            Ok(window) => window,
            Err(refusal) => return Ok(Opened::without_body(refusal, meta)),
        };
        let bounds = window.bounds(meta.size);
        let body = read_stream(file, bounds.start, bounds.end - bounds.start);
        Ok(Opened::Body { meta, window, body })
    }

    async fn stat(&self, key: &ObjectKey, now: Timestamp) -> Result<Option<ObjectMeta>, TierError> {
        let meta = self.shared.index().entries.peek(key).cloned();
        Ok(meta.filter(|meta| !meta.is_expired(now)))
    }

    async fn create(
        &self,
        key: &ObjectKey,
        new: NewObject,
    ) -> Result<Box<dyn TierWriter>, TierError> {
        if let Some(size) = new.expected_size {
            TierError::unless_fits(&self.shared.name, size, self.shared.capacity)?;
        }
        if self.shared.index().closed {
            return Err(TierError::closed(&self.shared.name));
        }
        let dir = self.shared.root.join(key.namespace.as_str());
        let n = self.shared.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!("{TMP_PREFIX}{}-{}-{n}", key.key, std::process::id()));
        let meta = ObjectMeta {
            size: 0,
            etag: new.etag.clone(),
            last_modified: new.last_modified,
            headers: new.headers.clone(),
            expires: new.expires,
        };
        let header = encode_header(&meta)?;
        let data_offset = header.len() as u64;
        let path = tmp_path.clone();
        let file = self
            .shared
            .blocking(move || {
                fs::create_dir_all(&dir)?;
                // Readable too: at commit the handle becomes the revision's open file.
                let mut file =
                    File::options().read(true).write(true).create_new(true).open(&path)?;
                file.write_all(&header)?;
                Ok(file)
            })
            .await?;
        Ok(Box::new(DiskWriter {
            shared: Arc::clone(&self.shared),
            key: key.clone(),
            meta,
            condition: new.condition,
            expected_size: new.expected_size,
            tmp_path,
            file: Some(file),
            data_offset,
            received: 0,
            finished: false,
            fence: super::CommitFence::default(),
        }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, TierError> {
        let shared = Arc::clone(&self.shared);
        let key = key.clone();
        self.shared
            .blocking(move || {
                // Under the lock, so that a commit of the same key cannot land in between.
                let mut index = shared.index();
                let existed = index.forget(&key);
                match fs::remove_file(shared.object_path(&key)) {
                    Ok(()) => Ok(existed),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(existed),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    async fn stats(&self, now: Timestamp) -> Result<TierStats, TierError> {
        let shared = Arc::clone(&self.shared);
        self.shared
            .blocking(move || {
                let mut index = shared.index();
                let expired: Vec<ObjectKey> = index
                    .entries
                    .iter()
                    .filter(|(_, meta)| meta.is_expired(now))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in expired {
                    shared.forget_and_unlink(&mut index, &key);
                }
                Ok(TierStats {
                    objects: index.entries.len() as u64,
                    bytes: index.entries.bytes(),
                    capacity: Some(shared.capacity),
                })
            })
            .await
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        let index = self.shared.index();
        let names: BTreeSet<&str> =
            index.entries.iter().map(|(key, _)| key.namespace.as_str()).collect();
        Ok(names.into_iter().map(str::to_owned).collect())
    }

    async fn close(&self) -> Result<(), TierError> {
        self.shared.index().closed = true;
        Ok(())
    }
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // Every mutation under the lock is a single map operation, so a poisoned lock still
        // guards a consistent index.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.namespace.as_str()).join(key.key.as_str())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, TierError> {
        let joined = tokio::task::spawn_blocking(work).await.map_err(io::Error::other);
        joined.and_then(|result| result).map_err(|source| self.io(source))
    }

    fn io(&self, source: io::Error) -> TierError {
        TierError::Io { tier: self.name.clone(), source }
    }

    /// Drops `key` from the index and unlinks its file; the caller holds the lock.
    fn forget_and_unlink(&self, index: &mut Index, key: &ObjectKey) {
        index.forget(key);
        if let Err(e) = fs::remove_file(self.object_path(key))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(tier = %self.name, %key, error = %e, "cannot remove an evicted entry");
        }
    }

    /// Evicts least recently used entries until the tier fits its capacity.
    fn evict(&self, index: &mut Index) {
        while index.entries.bytes() > self.capacity {
            let Some((oldest, _)) = index.entries.pop_oldest() else { break };
            self.forget_and_unlink(index, &oldest);
        }
    }

    async fn remove_expired(
        self: &Arc<Self>,
        key: ObjectKey,
        now: Timestamp,
    ) -> Result<(), TierError> {
        let shared = Arc::clone(self);
        self.blocking(move || {
            let mut index = shared.index();
            if index.entries.peek(&key).is_some_and(|meta| meta.is_expired(now)) {
                shared.forget_and_unlink(&mut index, &key);
            }
            Ok(())
        })
        .await
    }
}

/// A write into a temporary file beside its final name.
struct DiskWriter {
    shared: Arc<Shared>,
    key: ObjectKey,
    meta: ObjectMeta,
    condition: super::WriteCondition,
    expected_size: Option<u64>,
    tmp_path: PathBuf,
    file: Option<File>,
    /// Where the bytes start: the header's length.
    data_offset: u64,
    received: u64,
    /// Committed or aborted: the temporary file is renamed or already gone.
    finished: bool,
    /// Lets the host give up a commit stuck on the device (its fsync) for good.
    fence: super::CommitFence,
}

#[async_trait::async_trait]
impl TierWriter for DiskWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), TierError> {
        self.received += chunk.len() as u64;
        TierError::unless_fits(&self.shared.name, self.received, self.shared.capacity)?;
        let mut file = self.file.take().ok_or_else(|| self.failed_earlier())?;
        let file = self
            .shared
            .blocking(move || {
                file.write_all(&chunk)?;
                Ok(file)
            })
            .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, TierError> {
        if let Some(expected) = self.expected_size
            && expected != self.received
        {
            return Err(TierError::SizeMismatch {
                tier: self.shared.name.clone(),
                expected,
                received: self.received,
            });
        }
        let file = self.file.take().ok_or_else(|| self.failed_earlier())?;
        let shared = Arc::clone(&self.shared);
        let key = self.key.clone();
        let tmp_path = self.tmp_path.clone();
        let condition = self.condition.clone();
        let mut meta = self.meta.clone();
        meta.size = self.received;
        let size = self.received;
        let data_offset = self.data_offset;
        let fence = self.fence.clone();
        let committed = self
            .shared
            .blocking(move || {
                file.write_all_at(&size.to_le_bytes(), SIZE_OFFSET)?;
                // Data reaches the disk before the name does, so after a crash the name holds
                // an old revision or a complete new one.
                file.sync_data()?;
                let mut index = shared.index();
                if index.closed {
                    return Ok(Err(TierError::closed(&shared.name)));
                }
                // The point of no return, under the lock the rename is made under.
                if !fence.enter() {
                    return Ok(Err(TierError::Backend {
                        tier: shared.name.clone(),
                        message: "the commit was abandoned".into(),
                    }));
                }
                let current =
                    index.entries.peek(&key).filter(|meta| !meta.is_expired(crate::clock::now()));
                if !condition.allows(current) {
                    return Ok(Err(TierError::PreconditionFailed { tier: shared.name.clone() }));
                }
                fs::rename(&tmp_path, shared.object_path(&key))?;
                index.n_commits += 1;
                index.entries.insert(key.clone(), meta.clone(), size);
                // The handle written through is the new revision's file: reads start warm.
                index.keep_open(&key, Arc::new(OpenFile { file, data_offset }));
                shared.evict(&mut index);
                Ok(Ok(meta))
            })
            .await;
        let renamed = matches!(committed, Ok(Ok(_)));
        if renamed {
            self.finished = true;
        }
        // On failure the temporary file is removed when `self` drops.
        committed?
    }

    fn fence(&self) -> Option<super::CommitFence> {
        Some(self.fence.clone())
    }

    async fn abort(mut self: Box<Self>) {
        self.file = None;
        let path = self.tmp_path.clone();
        self.finished = true;
        if let Err(e) = tokio::task::spawn_blocking(move || fs::remove_file(path)).await {
            tracing::warn!(error = %e, "cannot remove an aborted write");
        }
    }
}

impl DiskWriter {
    fn failed_earlier(&self) -> TierError {
        self.shared.io(io::Error::other("an earlier write into this writer failed"))
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped mid-write (a cancelled upload, a discarded copy): nothing may remain.
            self.file = None;
            if let Err(e) = fs::remove_file(&self.tmp_path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.tmp_path.display(), error = %e, "cannot remove an abandoned write");
            }
        }
    }
}

/// The header of a file holding `meta` (the size is patched in at commit).
fn encode_header(meta: &ObjectMeta) -> Result<Vec<u8>, TierError> {
    let json = serde_json::to_vec(meta).map_err(|e| TierError::Backend {
        tier: "disk".into(),
        message: format!("cannot encode metadata: {e}"),
    })?;
    let len =
        u32::try_from(json.len()).ok().filter(|len| *len <= MAX_META_LEN).ok_or_else(|| {
            TierError::Backend { tier: "disk".into(), message: "metadata too large".into() }
        })?;
    let mut header = Vec::with_capacity(FIXED_HEADER as usize + json.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&meta.size.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&json);
    Ok(header)
}

/// Opens an object file and reads its header; `None` if the file is gone. Also returns where
/// the bytes start.
fn open_object(path: &Path) -> io::Result<Option<(File, ObjectMeta, u64)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (meta, offset) = read_header(&mut file)?;
    Ok(Some((file, meta, offset)))
}

/// Reads and checks the header of an object file (magic, metadata, and a length that matches):
/// the revision's metadata and where its bytes start.
fn read_header(file: &mut File) -> io::Result<(ObjectMeta, u64)> {
    let (meta, offset) = parse_header(file)?;
    // Checked: the size is whatever the file says, and a damaged one must not overflow.
    if offset.checked_add(meta.size) != Some(file.metadata()?.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file length does not match its header",
        ));
    }
    Ok((meta, offset))
}

/// Reads the header of an object file (magic, metadata) without comparing the file's length
/// with it: the revision's metadata and where its bytes start.
fn parse_header(file: &mut File) -> io::Result<(ObjectMeta, u64)> {
    let corrupt = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut fixed = [0u8; FIXED_HEADER as usize];
    file.read_exact(&mut fixed)?;
    if &fixed[..8] != MAGIC {
        return Err(corrupt("not an object file"));
    }
    let size = u64::from_le_bytes(fixed[8..16].try_into().expect("eight bytes"));
    let meta_len = u32::from_le_bytes(fixed[16..20].try_into().expect("four bytes"));
    if meta_len > MAX_META_LEN {
        return Err(corrupt("metadata block too large"));
    }
    let mut json = vec![0u8; meta_len as usize];
    file.read_exact(&mut json)?;
    let mut meta: ObjectMeta =
        serde_json::from_slice(&json).map_err(|e| corrupt(&format!("bad metadata: {e}")))?;
    meta.size = size;
    Ok((meta, FIXED_HEADER + u64::from(meta_len)))
}

/// Streams `len` bytes from `offset` of the object's bytes in `file`, a chunk at a time, each
/// read straight into the buffer that is handed on, with positioned reads so nothing but the
/// window is read.
///
/// A chunk already in the page cache is read on the spot (`RWF_NOWAIT`), so a small window is
/// ready when the response's head is written and both leave in one write; only what must come
/// from the device is read on a blocking thread.
fn read_stream(file: Arc<OpenFile>, offset: u64, len: u64) -> ByteStream {
    Box::pin(stream::try_unfold((file, offset, len), |(file, offset, remaining)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        let n = remaining.min(READ_CHUNK as u64) as usize;
        let chunk = read_chunk(Arc::clone(&file), offset, n).await?;
        Ok(Some((chunk, (file, offset + n as u64, remaining - n as u64))))
    }))
}

/// `n` bytes from `offset` of the object's bytes.
async fn read_chunk(file: Arc<OpenFile>, offset: u64, n: usize) -> io::Result<Bytes> {
    let at = file.data_offset + offset;
    let mut buf = vec![0u8; n];
    let cached = read_cached(&file.file, &mut buf, at)?;
    if cached == n {
        return Ok(Bytes::from(buf));
    }
    let buf = tokio::task::spawn_blocking(move || {
        file.file.read_exact_at(&mut buf[cached..], at + cached as u64)?;
        Ok::<_, io::Error>(buf)
    })
    .await
    .map_err(io::Error::other)??;
    Ok(Bytes::from(buf))
}

/// Reads into `buf` from `offset` only what the page cache holds, without blocking; returns how
/// many bytes were read (possibly none).
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    let mut done = 0;
    while done < buf.len() {
        let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
        match preadv2(file, &mut slices, offset + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object file is shorter than its header says",
                ));
            }
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            // Not cached (AGAIN), or a kernel or filesystem without RWF_NOWAIT.
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
    Ok(0)
}

/// Rebuilds the index from `root`, deleting temporary leftovers and expired or unreadable
/// object files.
fn scan(root: &Path, now: Timestamp) -> io::Result<Index> {
    let mut found: Vec<(SystemTime, ObjectKey, ObjectMeta)> = Vec::new();
    for Finding { path, state } in inspect(root, now)? {
        match state {
            FileState::Intact { key, meta, modified } => found.push((modified, key, meta)),
            FileState::Leftover | FileState::Expired { .. } => remove_quietly(&path),
            FileState::SizeMismatch { .. } | FileState::Unreadable { .. } => {
                tracing::warn!(path = %path.display(), problem = %state, "removing an unreadable entry");
                remove_quietly(&path);
            }
        }
    }
    // Least recently written first, so the LRU evicts the oldest entries first after a restart.
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut index = Index::new();
    for (_, key, meta) in found {
        let size = meta.size;
        index.entries.insert(key, meta, size);
    }
    Ok(index)
}

/// One file a disk tier's directory holds, as the tier judges it on start (and `rangecache
/// fsck` reports it).
#[derive(Debug)]
pub struct Finding {
    /// The file.
    pub path: PathBuf,
    /// What it holds.
    pub state: FileState,
}

/// What one file of a disk tier holds.
#[derive(Debug)]
pub enum FileState {
    /// A whole, live revision of `key`.
    Intact {
        /// The object it holds.
        key: ObjectKey,
        /// The revision's metadata.
        meta: ObjectMeta,
        /// Its modification time: when it was last written.
        modified: SystemTime,
    },
    /// The temporary file of a write that never committed (the writer's process died).
    Leftover,
    /// A whole revision whose expiry has passed.
    Expired {
        /// The revision's metadata.
        meta: ObjectMeta,
    },
    /// A readable header whose size disagrees with the bytes the file holds (a truncated or
    /// overlong file).
    SizeMismatch {
        /// The size the header announces.
        announced: u64,
        /// The bytes the file holds after its header.
        held: u64,
    },
    /// The header cannot be read (not an object file, cut short, bad metadata).
    Unreadable {
        /// Why.
        error: io::Error,
    },
}

impl FileState {
    /// True for a file a server starting on the directory would keep.
    pub fn is_intact(&self) -> bool {
        matches!(self, FileState::Intact { .. })
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileState::Intact { meta, .. } => write!(f, "intact, {} bytes", meta.size),
            FileState::Leftover => f.write_str("temporary file of a write that never committed"),
            FileState::Expired { meta } => match meta.expires {
                Some(at) => {
                    write!(f, "expired at {}", rangecache_core::validators::format_http_date(at))
                }
                None => f.write_str("expired"),
            },
            FileState::SizeMismatch { announced, held } => {
                write!(f, "size mismatch: the header says {announced} bytes, the file holds {held}")
            }
            FileState::Unreadable { error } => write!(f, "unreadable header: {error}"),
        }
    }
}

/// Judges every file of the disk tier in `root` without changing anything: object files
/// (`NAMESPACE/KEY`) by their header, size and expiry at `now`, and temporary leftovers.
/// Anything else in the directory is not the tier's and is passed over.
pub fn inspect(root: &Path, now: Timestamp) -> io::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for dir in fs::read_dir(root)? {
        let dir = dir?;
        let Some(namespace) = dir.file_name().to_str().and_then(|n| Namespace::parse(n).ok())
        else {
            continue;
        };
        if !dir.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(dir.path())? {
            let file = file?;
            let path = file.path();
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            let state = if name.starts_with(TMP_PREFIX) {
                FileState::Leftover
            } else if is_key_name(name) {
                let key = ObjectKey { namespace: namespace.clone(), key: Key::from_segment(name) };
                judge(&path, key, now)
            } else {
                continue;
            };
            findings.push(Finding { path, state });
        }
    }
    Ok(findings)
}

/// What the object file at `path` holds; a file that cannot even be opened or looked at is
/// unreadable too (the tier could never serve it).
fn judge(path: &Path, key: ObjectKey, now: Timestamp) -> FileState {
    let unreadable = |error| FileState::Unreadable { error };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) => return unreadable(error),
    };
    let (meta, offset) = match parse_header(&mut file) {
        Ok(header) => header,
        Err(error) => return unreadable(error),
    };
    let stat = match file.metadata() {
        Ok(stat) => stat,
        Err(error) => return unreadable(error),
    };
    let held = stat.len().saturating_sub(offset);
    if held != meta.size {
        return FileState::SizeMismatch { announced: meta.size, held };
    }
    if meta.is_expired(now) {
        return FileState::Expired { meta };
    }
    let modified = stat.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    FileState::Intact { key, meta, modified }
}

fn is_key_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover");
    }
}

#[cfg(test)]
mod tests {
    use rangecache_core::{EntityTag, Key, Namespace};

    use super::*;
    use crate::storage::WriteCondition;

    #[tokio::test]
    async fn an_abandoned_commit_never_lands_and_one_under_way_cannot_be_abandoned() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tier = DiskTier::open("disk", dir.path(), 1 << 20).await.expect("open");
        let key = ObjectKey {
            namespace: Namespace::parse("ns").expect("valid"),
            key: Key::from_segment("k"),
        };
        let new = NewObject {
            etag: EntityTag::strong("v1").expect("valid"),
            last_modified: Timestamp::from_secs(1_700_000_000),
            headers: Vec::new(),
            expires: None,
            condition: WriteCondition::None,
            expected_size: Some(3),
        };
        let mut writer = tier.create(&key, new.clone()).await.expect("create");
        writer.write(Bytes::from_static(b"abc")).await.expect("write");
        let fence = writer.fence().expect("a disk commit can be abandoned");
        assert!(fence.abandon(), "nothing had started to land");
        assert!(writer.commit().await.is_err(), "an abandoned commit fails");
        assert!(tier.stat(&key, Timestamp::from_secs(1_700_000_000)).await.unwrap().is_none());
        let mut writer = tier.create(&key, new).await.expect("create");
        writer.write(Bytes::from_static(b"abc")).await.expect("write");
        let fence = writer.fence().expect("a disk commit can be abandoned");
        writer.commit().await.expect("commit");
        assert!(!fence.abandon(), "a commit that landed cannot be abandoned");
        assert!(tier.stat(&key, Timestamp::from_secs(1_700_000_000)).await.unwrap().is_some());
    }

    #[test]
    fn a_header_announcing_an_impossible_size_is_refused_not_a_panic() {
        let meta = ObjectMeta {
            size: u64::MAX,
            etag: rangecache_core::EntityTag::parse("\"e\"").expect("a strong tag"),
            last_modified: Timestamp::from_secs(0),
            headers: Vec::new(),
            expires: None,
        };
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&encode_header(&meta).unwrap()).unwrap();
        file.write_all(b"a few bytes").unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let error = read_header(&mut file).expect_err("the length cannot match");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
