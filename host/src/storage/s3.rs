//! The s3 tier: objects in an S3-compatible bucket through opendal.
//!
//! An object lives at `PREFIX/NAMESPACE/KEY`. The revision's metadata (ETag, Last-Modified,
//! stored headers, expiry) travels as one user-metadata field written with the object, so a
//! single GET returns the bytes and the metadata of the same revision (S3 serves each GET from
//! one object version). A read is exactly one GET: ranged (`Range: bytes=S-E`, `S-` or `-N`)
//! unless the whole object is read, never split and never preceded by a HEAD. The one exception
//! is a whole-object read pinned to one revision (a copy into tier 0): it asks for the first
//! 8 MiB, and a larger object's rest comes as parallel ranged GETs pinned to the S3 ETag of that
//! first answer (`rangecache_download`), each answer checked to name that ETag and size, since
//! s3s-fs ignores `If-Match` on a GET. A HEAD follows only on the paths that carry no body (416,
//! or a condition the server refused), to fetch the metadata those answers carry.
//!
//! Preconditions are sent with the GET when S3 can evaluate them, and the answer's metadata is
//! checked again by the core, because some servers (s3s-fs 0.14.1) ignore conditional GETs.
//! S3's own ETag is not ours, so entity-tags are translated through the S3 ETags this tier has
//! seen for a key, and sent only when every tag translates.
//!
//! A write is one opendal writer: objects up to [`PART_SIZE`] go up in one PUT at commit,
//! larger ones as a multipart upload completed at commit and aborted on abort or drop. Either
//! way nothing is visible before the commit. Write conditions are checked against the live
//! revision's metadata by the core and made atomic by sending the S3 ETag they were checked
//! against (`If-Match`) or `If-None-Match: *` with the PUT or the multipart completion.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use opendal::{ErrorKind, HttpTransporter, Metadata, Operator, services};
use opendal_http_transport_reqwest::ReqwestTransport;
use rangecache_core::range::Span;
use rangecache_core::read;
use rangecache_core::validators::{EtagList, parse_http_date};
use rangecache_core::{EntityTag, Namespace, ObjectKey, ObjectMeta, Timestamp};
use rangecache_download::{BodyStream, Options, PartError, PartSource, ordered};

use super::{
    ByteStream, Conditions, NewObject, OpenRequest, Opened, Tier, TierError, TierStats, TierWriter,
    WriteCondition,
};

/// Part size of multipart uploads, and the largest object sent in one PUT (S3's minimum part
/// size is 5 MiB; 8 MiB parts reach S3's 10 000-part limit at 80 GB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// User-metadata field (`x-amz-meta-rangecache`) holding the revision's metadata.
const META_FIELD: &str = "rangecache";
/// Entity-tag translations remembered; past this the map starts over (it is only an
/// optimisation of conditional GETs).
const MAX_TRANSLATIONS: usize = 16_384;
/// GETs (or HEADs) tried when the server pairs metadata and bytes of different revisions;
/// between them the tier waits 5, 10, 20 then 40 ms, longer than s3s-fs takes to store the
/// metadata after the bytes.
const MAX_ATTEMPTS: u32 = 5;
/// The error of a read that kept finding one revision's metadata with another's bytes.
pub const MIXED_REVISIONS: &str = "metadata and bytes of different revisions";
/// The size stored in the metadata field when the writer did not know it in advance.
const UNKNOWN_SIZE: u64 = u64::MAX;

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Prefix of every object key (e.g. `rangecache/`).
    pub prefix: String,
    /// Access key; `None` reads `AWS_ACCESS_KEY_ID` and the usual AWS configuration.
    pub access_key_id: Option<String>,
    /// Secret key; `None` reads `AWS_SECRET_ACCESS_KEY` and the usual AWS configuration.
    pub secret_access_key: Option<String>,
}

/// A tier in an S3-compatible bucket.
pub struct S3Tier {
    name: String,
    op: Operator,
    /// Per key, our entity-tag of the last revision seen and S3's ETag of it.
    translations: Arc<Mutex<HashMap<ObjectKey, (EntityTag, String)>>>,
    /// How a whole-object copy is split into parallel ranged GETs.
    download: Options,
}

impl S3Tier {
    /// A tier over `config`'s bucket; makes no request.
    pub fn new(name: &str, config: &S3Config) -> Result<S3Tier, TierError> {
        S3Tier::with_roots(name, config, &[])
    }

    /// [`S3Tier::new`], trusting `extra_roots` beside the system's roots for an HTTPS endpoint
    /// (a private CA).
    pub fn with_roots(
        name: &str,
        config: &S3Config,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<S3Tier, TierError> {
        let backend = |message: String| TierError::Backend { tier: name.to_owned(), message };
        let mut builder = services::S3::default()
            .bucket(&config.bucket)
            .region(&config.region)
            .root(&format!("/{}", config.prefix.trim_matches('/')));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint(endpoint);
        }
        let access_key =
            config.access_key_id.clone().or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret_key = config
            .secret_access_key
            .clone()
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        if let (Some(access_key), Some(secret_key)) = (access_key, secret_key) {
            builder = builder.access_key_id(&access_key).secret_access_key(&secret_key);
        }
        let op = Operator::new(builder).map_err(|e| backend(e.to_string()))?;
        // A client of its own rather than opendal's process-wide one: its pooled connections
        // belong to the runtime that uses this tier, never to another one that may have ended.
        let client = reqwest::Client::builder()
            .tls_certs_merge(extra_roots.iter().cloned())
            .build()
            .map_err(|e| backend(e.to_string()))?;
        let transport = HttpTransporter::new(ReqwestTransport::new(client));
        let context = op.context().with_http_transport(transport);
        let op = op.with_context(context);
        Ok(S3Tier {
            name: name.to_owned(),
            op,
            translations: Arc::new(Mutex::new(HashMap::new())),
            download: Options::default(),
        })
    }

    /// Splits whole-object copies as `options` say (`parallel` 1: one GET, as any other read).
    pub fn with_download_options(mut self, options: Options) -> S3Tier {
        self.download = options;
        self
    }

    fn backend(&self, error: impl std::fmt::Display) -> TierError {
        TierError::Backend { tier: self.name.clone(), message: error.to_string() }
    }

    /// Remembers that our `etag` of `key` is S3's `s3_etag`.
    fn learn(&self, key: &ObjectKey, etag: &EntityTag, s3_etag: Option<&str>) {
        let Some(s3_etag) = s3_etag else { return };
        let mut map = self.translations.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRANSLATIONS && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.clone(), (etag.clone(), s3_etag.to_owned()));
    }

    /// An `If-Match`/`If-None-Match` value in S3's terms: `*` as is, one of our entity-tags as
    /// the S3 ETag known for it; `None` when it cannot be translated (then only the core
    /// checks it, on the answer).
    fn translate(&self, key: &ObjectKey, value: &str) -> Option<String> {
        match EtagList::parse(value)? {
            EtagList::Any => Some("*".to_owned()),
            EtagList::Tags(tags) => {
                let map = self.translations.lock().unwrap_or_else(PoisonError::into_inner);
                let (ours, theirs) = map.get(key)?;
                let [tag] = tags.as_slice() else { return None };
                tag.weak_eq(ours).then(|| theirs.clone())
            }
        }
    }

    /// The metadata of the live revision with S3's ETag, by HEAD; `None` when absent.
    ///
    /// Like a GET, a HEAD during an overwrite can pair one revision's metadata with the other's
    /// size on a server that stores them apart (s3s-fs): it is asked again, and refused as
    /// [`MIXED_REVISIONS`] if it keeps doing so, rather than describe a revision that never was.
    async fn head(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<(ObjectMeta, Option<String>)>, TierError> {
        for attempt in 0..MAX_ATTEMPTS {
            let found = match self.op.stat(&path(key)).await {
                Ok(found) => found,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.backend(with_cause(&e))),
            };
            let (meta, announced) = decode_meta(&found).map_err(|e| self.backend(e))?;
            if announced.is_some_and(|size| size != meta.size) {
                tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
                continue;
            }
            let s3_etag = found.etag().map(str::to_owned);
            self.learn(key, &meta.etag, s3_etag.as_deref());
            return Ok(Some((meta, s3_etag)));
        }
        Err(self.backend(MIXED_REVISIONS))
    }

    /// Answers a read that carries no body from a HEAD: preconditions, then the span.
    async fn answer_from_head(
        &self,
        key: &ObjectKey,
        req: &OpenRequest,
    ) -> Result<Opened, TierError> {
        match self.head(key).await? {
            Some((meta, _)) if !meta.is_expired(req.now) => {
                match read::resolve_open(&meta, &req.conditions, req.span) {
                    Err(refusal) => Ok(Opened::without_body(refusal, meta)),
                    // The span is satisfiable for this revision after all (it changed since
                    // the GET); the caller retries the GET.
                    Ok(_) => Err(self.backend("the object changed during the read")),
                }
            }
            Some(_) | None => Ok(Opened::NotFound),
        }
    }

    /// One GET of `span`, with `conditions` sent when S3 can evaluate them, or pinned to one S3
    /// ETag.
    async fn get(
        &self,
        key: &ObjectKey,
        span: Span,
        conditions: &Conditions,
        pin: Option<&str>,
    ) -> opendal::Result<(Metadata, opendal::FuturesBytesStream)> {
        let object_path = path(key);
        let mut reader = self.op.reader_with(&object_path);
        let if_match = conditions.if_match.as_deref().and_then(|v| self.translate(key, v));
        if let Some(value) = pin.map(str::to_owned).or(if_match) {
            reader = reader.if_match(&value);
        }
        if let Some(value) =
            conditions.if_none_match.as_deref().and_then(|v| self.translate(key, v))
        {
            reader = reader.if_none_match(&value);
        }
        // Dates only when no entity-tag field is present, as RFC 9110 §13.2.2 reads them, and
        // compared by S3 against its own modification time, which is never earlier than the
        // Last-Modified we store; a refusal is double-checked against our metadata by a HEAD.
        if conditions.if_match.is_none()
            && let Some(at) = conditions.if_unmodified_since.as_deref().and_then(to_opendal_time)
        {
            reader = reader.if_unmodified_since(at);
        }
        if conditions.if_none_match.is_none()
            && let Some(at) = conditions.if_modified_since.as_deref().and_then(to_opendal_time)
        {
            reader = reader.if_modified_since(at);
        }
        // No `chunk` and no `concurrent`: opendal streams the range from a single request.
        let mut stream = reader.await?.into_bytes_stream(bytes_range(span)).await?;
        let found = stream.metadata().await?;
        Ok((found, stream))
    }
}

impl S3Tier {
    /// A whole-object read pinned to one revision: one GET of its first `first_end` bytes, and
    /// when the object is larger, the rest as parallel ranged GETs pinned to that answer's S3
    /// ETag. `None` when the one-GET read should answer instead: a refusal or error it knows how
    /// to sort out (416 for an empty object, a condition a server got wrong), or metadata and
    /// bytes of different revisions, which it reads again.
    async fn open_in_parts(
        &self,
        key: &ObjectKey,
        req: &OpenRequest,
        first_end: u64,
    ) -> Result<Option<Opened>, TierError> {
        let first = Span::From { start: 0, end: Some(first_end) };
        let (found, stream) = match self.get(key, first, &req.conditions, None).await {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Some(Opened::NotFound)),
            Err(_) => return Ok(None),
        };
        let (meta, announced) = decode_meta(&found).map_err(|e| self.backend(e))?;
        self.learn(key, &meta.etag, found.etag());
        if meta.is_expired(req.now) {
            return Ok(Some(Opened::NotFound));
        }
        if announced.is_some_and(|size| size != meta.size) {
            return Ok(None);
        }
        let window = match read::resolve_open(&meta, &req.conditions, req.span) {
            Ok(window) => window,
            Err(refusal) => return Ok(Some(Opened::without_body(refusal, meta))),
        };
        let first_len = first_end.min(meta.size);
        let first = exact_length(stream, first_len);
        if first_len == meta.size {
            return Ok(Some(Opened::Body { meta, window, body: first }));
        }
        let Some(s3_etag) = found.etag() else { return Ok(None) };
        let parts = Arc::new(S3Parts {
            op: self.op.clone(),
            path: path(key),
            s3_etag: s3_etag.to_owned(),
            size: meta.size,
        });
        let body = ordered(parts, first, first_len, meta.size, &self.download);
        Ok(Some(Opened::Body { meta, window, body }))
    }
}

/// The parts of one revision of an object, pinned to its S3 ETag.
struct S3Parts {
    op: Operator,
    path: String,
    s3_etag: String,
    size: u64,
}

#[async_trait::async_trait]
impl PartSource for S3Parts {
    async fn open(&self, window: Range<u64>) -> Result<BodyStream, PartError> {
        let failed = |e: opendal::Error| match e.kind() {
            ErrorKind::ConditionNotMatch | ErrorKind::NotFound | ErrorKind::RangeNotSatisfied => {
                PartError::Changed(e.to_string())
            }
            _ => PartError::Failed(e.to_string()),
        };
        let reader =
            self.op.reader_with(&self.path).if_match(&self.s3_etag).await.map_err(failed)?;
        let mut stream = reader.into_bytes_stream(window).await.map_err(failed)?;
        let found = stream.metadata().await.map_err(failed)?;
        if found.etag() != Some(self.s3_etag.as_str()) {
            let named = found.etag().unwrap_or("no ETag");
            return Err(PartError::Changed(format!("a part names {named}, not {}", self.s3_etag)));
        }
        if found.content_length() != self.size {
            return Err(PartError::Changed(format!(
                "a part says the object has {} bytes, not {}",
                found.content_length(),
                self.size
            )));
        }
        Ok(Box::pin(stream))
    }
}

#[async_trait::async_trait]
impl Tier for S3Tier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, key: &ObjectKey, req: &OpenRequest) -> Result<Opened, TierError> {
        if let Some(first_end) = self.download.first_request_end()
            && req.pinned_whole().is_some()
            && let Some(opened) = self.open_in_parts(key, req, first_end).await?
        {
            return Ok(opened);
        }
        if is_empty_span(req.span) {
            // Reads nothing whatever the size: no GET can express it.
            return self.answer_from_head(key, req).await;
        }
        let mut conditions = req.conditions.clone();
        // What the GET asks for: the span itself, or the explicit window a HEAD resolved it to.
        let mut sent = req.span;
        let mut pin: Option<String> = None;
        let mut last_error = None;
        for attempt in 0..MAX_ATTEMPTS {
            let (found, stream) = match self.get(key, sent, &conditions, pin.as_deref()).await {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Opened::NotFound),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::RangeNotSatisfied | ErrorKind::ConditionNotMatch
                    ) =>
                {
                    match self.answer_from_head(key, req).await {
                        Ok(answer) => return Ok(answer),
                        Err(e) => {
                            // Our metadata says the server was wrong to refuse (its ETag or date
                            // is not ours): read again and let the core judge the answer.
                            conditions = Conditions::default();
                            last_error = Some(e);
                            continue;
                        }
                    }
                }
                // s3s-fs 0.14.1 answers a suffix range longer than the object (or any suffix of
                // an empty object) with 500 instead of the whole object (or 416). Only then is
                // the size fetched first: the window is resolved from a HEAD and read as an
                // explicit range pinned to the revision the HEAD saw, three requests instead of
                // one.
                Err(e) if matches!(sent, Span::Last(_)) && e.kind() == ErrorKind::Unexpected => {
                    let Some((meta, s3_etag)) = self.head(key).await? else {
                        return Ok(Opened::NotFound);
                    };
                    if meta.is_expired(req.now) {
                        return Ok(Opened::NotFound);
                    }
                    match read::resolve_open(&meta, &req.conditions, req.span) {
                        Err(refusal) => return Ok(Opened::without_body(refusal, meta)),
                        Ok(window) => {
                            let bounds = window.bounds(meta.size);
                            sent = Span::From { start: bounds.start, end: Some(bounds.end) };
                            pin = s3_etag;
                            last_error = Some(self.backend(e));
                            continue;
                        }
                    }
                }
                Err(e) => return Err(self.backend(with_cause(&e))),
            };
            let (meta, announced) = decode_meta(&found).map_err(|e| self.backend(e))?;
            self.learn(key, &meta.etag, found.etag());
            if meta.is_expired(req.now) {
                return Ok(Opened::NotFound);
            }
            if announced.is_some_and(|size| size != meta.size) {
                // A server that stores metadata beside the bytes (s3s-fs) can pair two revisions
                // during an overwrite; read again rather than serve the mix.
                last_error = Some(self.backend(MIXED_REVISIONS));
                tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
                continue;
            }
            let window = match read::resolve_open(&meta, &req.conditions, req.span) {
                Ok(window) => window,
                Err(refusal) => return Ok(Opened::without_body(refusal, meta)),
            };
            if sent != req.span {
                let bounds = window.bounds(meta.size);
                if sent != (Span::From { start: bounds.start, end: Some(bounds.end) }) {
                    // The object changed between the HEAD and the GET: start over.
                    (sent, pin) = (req.span, None);
                    last_error = Some(self.backend("the object changed during the read"));
                    continue;
                }
            }
            let len = window.len(meta.size);
            let body = exact_length(stream, len);
            return Ok(Opened::Body { meta, window, body });
        }
        Err(last_error.unwrap_or_else(|| self.backend("read failed")))
    }

    async fn stat(&self, key: &ObjectKey, now: Timestamp) -> Result<Option<ObjectMeta>, TierError> {
        Ok(self.head(key).await?.map(|(meta, _)| meta).filter(|meta| !meta.is_expired(now)))
    }

    async fn create(
        &self,
        key: &ObjectKey,
        new: NewObject,
    ) -> Result<Box<dyn TierWriter>, TierError> {
        // The condition is judged now by the core against the live revision, and S3 makes it
        // hold until the commit: the PUT or the multipart completion carries the S3 ETag judged
        // (If-Match) or If-None-Match: *.
        let guard = match &new.condition {
            WriteCondition::None => Guard::None,
            condition @ (WriteCondition::IfAbsent | WriteCondition::IfMatch(_)) => {
                let current = self.head(key).await?;
                let live =
                    current.as_ref().filter(|(meta, _)| !meta.is_expired(crate::clock::now()));
                if !condition.allows(live.map(|(meta, _)| meta)) {
                    return Err(TierError::PreconditionFailed { tier: self.name.clone() });
                }
                match current {
                    Some((_, Some(s3_etag))) => Guard::IfMatch(s3_etag),
                    Some((_, None)) => return Err(self.backend("the server sent no ETag")),
                    None => Guard::IfAbsent,
                }
            }
        };
        let meta = ObjectMeta {
            size: new.expected_size.unwrap_or(UNKNOWN_SIZE),
            etag: new.etag,
            last_modified: new.last_modified,
            headers: new.headers,
            expires: new.expires,
        };
        Ok(Box::new(S3Writer {
            tier: self.name.clone(),
            op: self.op.clone(),
            key: key.clone(),
            translations: Arc::clone(&self.translations),
            meta,
            guard,
            expected_size: new.expected_size,
            pending: Vec::new(),
            writer: None,
            received: 0,
            closed: false,
        }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, TierError> {
        let existed = self.head(key).await?.is_some();
        self.op.delete(&path(key)).await.map_err(|e| self.backend(e))?;
        Ok(existed)
    }

    async fn stats(&self, _now: Timestamp) -> Result<TierStats, TierError> {
        // One listing of the whole prefix: fine for the stats endpoint of a test or a small
        // bucket, and the only way S3 counts objects.
        let entries = self.op.list_with("/").recursive(true).await.map_err(|e| self.backend(e))?;
        let mut stats = TierStats::default();
        for entry in entries.iter().filter(|e| e.metadata().is_file()) {
            stats.objects += 1;
            stats.bytes += entry.metadata().content_length();
        }
        Ok(stats)
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        let entries = self.op.list("/").await.map_err(|e| self.backend(e))?;
        let mut names: Vec<String> = entries
            .iter()
            .filter(|e| e.metadata().is_dir())
            .filter_map(|e| Namespace::parse(e.name().trim_end_matches('/')).ok())
            .map(|ns| ns.as_str().to_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn close(&self) -> Result<(), TierError> {
        Ok(())
    }
}

/// A write in progress; nothing is visible until the commit completes the PUT or the upload.
///
/// The first [`PART_SIZE`] bytes are held here: an object that fits goes up in one PUT at the
/// commit, whose metadata then always names its size (so a read can tell when a server paired
/// it with another revision's bytes). A larger one starts a multipart upload, announcing the
/// size only if the writer was told it in advance.
struct S3Writer {
    tier: String,
    op: Operator,
    key: ObjectKey,
    translations: Arc<Mutex<HashMap<ObjectKey, (EntityTag, String)>>>,
    meta: ObjectMeta,
    guard: Guard,
    expected_size: Option<u64>,
    pending: Vec<Bytes>,
    writer: Option<opendal::Writer>,
    received: u64,
    /// Committed or aborted.
    closed: bool,
}

/// What S3 checks when the object is completed.
enum Guard {
    None,
    /// `If-None-Match: *`.
    IfAbsent,
    /// `If-Match` with S3's ETag of the revision the condition was judged against.
    IfMatch(String),
}

impl S3Writer {
    fn backend(&self, error: impl std::fmt::Display) -> TierError {
        TierError::Backend { tier: self.tier.clone(), message: error.to_string() }
    }

    /// Starts the upload with the metadata as it is now known, and hands it the held bytes.
    async fn start_upload(&mut self) -> Result<(), TierError> {
        let object_path = path(&self.key);
        let encoded = encode_meta(&self.meta).map_err(|e| self.backend(e))?;
        let mut writer = self
            .op
            .writer_with(&object_path)
            .chunk(PART_SIZE)
            .concurrent(1)
            .user_metadata([(META_FIELD.to_owned(), encoded)]);
        match &self.guard {
            Guard::None => {}
            Guard::IfAbsent => writer = writer.if_not_exists(true),
            Guard::IfMatch(s3_etag) => writer = writer.if_match(s3_etag),
        }
        let writer = writer.await.map_err(|e| self.backend(e))?;
        let writer = self.writer.insert(writer);
        for chunk in self.pending.drain(..) {
            // A failed part leaves the upload to be aborted when the writer is dropped.
            if let Err(e) = writer.write(chunk).await {
                return Err(TierError::Backend { tier: self.tier.clone(), message: e.to_string() });
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl TierWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), TierError> {
        if self.closed {
            return Err(self.backend("writer already closed"));
        }
        self.received += chunk.len() as u64;
        if let Some(writer) = self.writer.as_mut() {
            let written = writer.write(chunk).await;
            return written.map_err(|e| self.backend(e));
        }
        self.pending.push(chunk);
        if self.received > PART_SIZE as u64 {
            self.start_upload().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, TierError> {
        if let Some(expected) = self.expected_size
            && expected != self.received
        {
            return Err(TierError::SizeMismatch {
                tier: self.tier.clone(),
                expected,
                received: self.received,
            });
        }
        if self.writer.is_none() {
            self.meta.size = self.received;
            self.start_upload().await?;
        }
        self.closed = true;
        let mut writer = self.writer.take().expect("the upload was started above");
        match writer.close().await {
            Ok(written) => {
                let meta = ObjectMeta { size: self.received, ..self.meta.clone() };
                if let Some(s3_etag) = written.etag() {
                    let mut map = self.translations.lock().unwrap_or_else(PoisonError::into_inner);
                    map.insert(self.key.clone(), (meta.etag.clone(), s3_etag.to_owned()));
                }
                Ok(meta)
            }
            Err(e) => {
                // A failed completion may leave a multipart upload behind.
                abort_quietly(writer).await;
                if e.kind() == ErrorKind::ConditionNotMatch {
                    return Err(TierError::PreconditionFailed { tier: self.tier.clone() });
                }
                Err(self.backend(e))
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.closed = true;
        if let Some(writer) = self.writer.take() {
            abort_quietly(writer).await;
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped mid-write (a cancelled upload): abort the multipart upload in the background;
        // bytes still held here were never sent, so there is nothing else to undo.
        if let Some(writer) = self.writer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(abort_quietly(writer));
        }
    }
}

async fn abort_quietly(mut writer: opendal::Writer) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "cannot abort an S3 upload");
    }
}

fn path(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.key)
}

fn is_empty_span(span: Span) -> bool {
    match span {
        Span::From { start, end: Some(end) } => end <= start,
        Span::From { end: None, .. } => false,
        Span::Last(n) => n == 0,
    }
}

fn bytes_range(span: Span) -> opendal::BytesRange {
    use opendal::BytesRange;
    match span {
        Span::From { start, end } => BytesRange::new(start, end.map(|end| end - start)),
        Span::Last(n) => BytesRange::suffix(n),
    }
}

fn to_opendal_time(value: &str) -> Option<opendal::raw::Timestamp> {
    let at = parse_http_date(value)?;
    opendal::raw::Timestamp::from_second(i64::try_from(at.as_secs()).ok()?).ok()
}

/// The metadata stored with the object, with the object's real size, and the size the writer
/// announced when it knew it in advance.
fn decode_meta(found: &Metadata) -> Result<(ObjectMeta, Option<u64>), String> {
    let field = found
        .user_metadata()
        .and_then(|user| user.get(META_FIELD))
        .ok_or("the object carries no rangecache metadata")?;
    let json = percent_decode(field).ok_or("the rangecache metadata is not percent-encoded")?;
    let mut meta: ObjectMeta =
        serde_json::from_slice(&json).map_err(|e| format!("bad rangecache metadata: {e}"))?;
    let announced = (meta.size != UNKNOWN_SIZE).then_some(meta.size);
    meta.size = found.content_length();
    Ok((meta, announced))
}

/// The metadata as a header value: JSON with every byte outside visible ASCII, and `%`,
/// percent-encoded, so any stored header survives HTTP and SigV4 unchanged.
fn encode_meta(meta: &ObjectMeta) -> Result<String, String> {
    let json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(json.len());
    for byte in json {
        if (0x21..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

fn percent_decode(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Passes `stream` on, failing it if it ends before or runs past `len` bytes, so a short body
/// is never taken for a whole one.
fn exact_length(
    stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    len: u64,
) -> ByteStream {
    let mut stream = Box::pin(stream);
    let mut seen: u64 = 0;
    let mut done = false;
    Box::pin(futures::stream::poll_fn(move |cx| {
        if done {
            return Poll::Ready(None);
        }
        if seen == len {
            // The window is complete. opendal would next check the byte count against the
            // range it asked for, which exceeds the window when the end was clamped to the
            // size, so the stream ends here.
            done = true;
            return Poll::Ready(None);
        }
        match stream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                seen += chunk.len() as u64;
                if seen > len {
                    done = true;
                    return Poll::Ready(Some(Err(io::Error::other(
                        "the server sent too many bytes",
                    ))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                done = true;
                if seen < len {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the server sent {seen} of {len} bytes"),
                    ))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }))
}

/// An opendal error's message and, when the message does not already say it, its innermost
/// cause: opendal stops at reqwest's "error sending request", which hides a refused
/// certificate or a refused connection.
fn with_cause(error: &opendal::Error) -> String {
    let message = error.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(next) = cause.and_then(std::error::Error::source) {
        cause = Some(next);
    }
    match cause.map(ToString::to_string) {
        Some(cause) if !message.contains(&cause) => format!("{message}: {cause}"),
        _ => message,
    }
}
