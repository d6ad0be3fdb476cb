//! The remote tier: another rangecache (or cachew) server reached over its `/api/v1`.
//!
//! Reads send the span as a `Range` header and the preconditions as they are, and map the
//! answer back: 200/206 to [`Opened::Body`], 304, 404, 412 and 416 to the other [`Opened`]
//! variants. A whole-object read pinned to one revision (a copy into tier 0) asks for its first
//! 8 MiB; a larger object's rest comes as parallel ranged GETs pinned to the answer's
//! entity-tag (`rangecache_download`), handed out in order. Writes stream the body through a
//! bounded channel into one POST (the only upload cachew's `/api/v1` has), so nothing is visible
//! upstream until the whole body arrived and the upstream server committed it.

use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rangecache_download::http::{HttpParts, Target, range_value, strong_etag};
use rangecache_download::{Options, ordered};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::mpsc;

use rangecache_core::object::{EXPIRES_HEADER, select_stored_headers};
use rangecache_core::range::{OpenWindow, Span, Window};
use rangecache_core::validators::{format_http_date, parse_http_date};
use rangecache_core::{EntityTag, ObjectKey, ObjectMeta, Timestamp};

use crate::storage::{
    ByteStream, NewObject, OpenRequest, Opened, Tier, TierError, TierStats, TierWriter,
    WriteCondition,
};

/// Chunks buffered between a writer and its upload; 8 chunks of the usual 64 KiB keep the
/// socket busy without holding more than half a megabyte per upload.
const UPLOAD_CHANNEL_CHUNKS: usize = 8;
/// A tier backed by another server's `/api/v1`.
pub struct RemoteTier {
    name: String,
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    /// Uploads wait on the client's pace, so they get no read timeout.
    upload_client: reqwest::Client,
    /// Lifetime given to an answer whose expiry the upstream does not announce.
    copy_ttl: Duration,
    /// How a whole-object copy is split into parallel ranged GETs.
    download: Options,
}

impl RemoteTier {
    /// A tier named `name` talking to the server at `base` (e.g. `http://127.0.0.1:8081`).
    /// An answer that does not say when its object expires (cachew's never do) is treated as
    /// expiring `copy_ttl` after it was received, so no copy of it lives forever downstream.
    pub fn new(
        name: &str,
        base: &str,
        token: Option<String>,
        copy_ttl: Duration,
    ) -> Result<RemoteTier, TierError> {
        RemoteTier::with_roots(name, base, token, copy_ttl, &[])
    }

    /// [`RemoteTier::new`], trusting `extra_roots` beside the system's roots for an HTTPS
    /// upstream (a private CA).
    pub fn with_roots(
        name: &str,
        base: &str,
        token: Option<String>,
        copy_ttl: Duration,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<RemoteTier, TierError> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(30))
                .no_proxy()
                .tls_certs_merge(extra_roots.iter().cloned())
        };
        let built = |result: reqwest::Result<reqwest::Client>| {
            result.map_err(|e| backend(name, format!("cannot build an HTTP client: {e}")))
        };
        // A stalled upstream fails the read (the next tier or a 502 answers) instead of holding
        // the client forever.
        let client = built(builder().read_timeout(Duration::from_secs(30)).build())?;
        let upload_client = built(builder().build())?;
        Ok(RemoteTier {
            name: name.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            client,
            upload_client,
            copy_ttl,
            download: Options::default(),
        })
    }

    /// Splits whole-object copies as `options` say (`parallel` 1: one GET, as any other read).
    pub fn with_download_options(mut self, options: Options) -> RemoteTier {
        self.download = options;
        self
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        format!("{}/api/v1/object/{}/{}", self.base, key.namespace, key.key)
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        self.authorized(self.client.request(method, url))
    }

    /// An upload: `POST /api/v1/object/{ns}/{key}`, the one cachew has.
    fn upload(&self, key: &ObjectKey) -> reqwest::RequestBuilder {
        self.authorized(self.upload_client.post(self.object_url(key)))
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    fn send_error(&self, e: reqwest::Error) -> TierError {
        // With its causes: "error sending request" alone hides a refused certificate.
        let e = rangecache_download::http::error_chain(&e);
        backend(&self.name, format!("request failed: {e}"))
    }

    fn unexpected(&self, status: StatusCode) -> TierError {
        backend(&self.name, format!("unexpected status {status}"))
    }

    /// Sends a request without a body to the upstream.
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
    ) -> Result<reqwest::Response, TierError> {
        self.request(method, url).send().await.map_err(|e| self.send_error(e))
    }

    /// The body of a successful `GET /api/v1/{path}` of the upstream.
    async fn api_get(&self, path: &str) -> Result<Bytes, TierError> {
        let response =
            self.call(reqwest::Method::GET, format!("{}/api/v1/{path}", self.base)).await?;
        if !response.status().is_success() {
            return Err(self.unexpected(response.status()));
        }
        response.bytes().await.map_err(|e| self.send_error(e))
    }
}

#[async_trait::async_trait]
impl Tier for RemoteTier {
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
        let mut builder = self.request(reqwest::Method::GET, self.object_url(key));
        let range = range_header(req.span);
        if let Some(range) = &range {
            builder = builder.header(header::RANGE, range);
        }
        let conditions = [
            (header::IF_MATCH, &req.conditions.if_match),
            (header::IF_NONE_MATCH, &req.conditions.if_none_match),
            (header::IF_MODIFIED_SINCE, &req.conditions.if_modified_since),
            (header::IF_UNMODIFIED_SINCE, &req.conditions.if_unmodified_since),
        ];
        for (name, value) in conditions {
            if let Some(value) = value {
                builder = builder.header(name, value);
            }
        }
        let response = builder.send().await.map_err(|e| self.send_error(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        match status {
            StatusCode::NOT_FOUND => Ok(Opened::NotFound),
            StatusCode::NOT_MODIFIED => {
                let meta = match self.meta(&headers, None) {
                    Ok(meta) => meta,
                    Err(_) => match self.stat(key, req.now).await? {
                        Some(meta) => meta,
                        None => return Ok(Opened::NotFound),
                    },
                };
                Ok(Opened::NotModified { meta })
            }
            StatusCode::PRECONDITION_FAILED | StatusCode::RANGE_NOT_SATISFIABLE => {
                // rangecache's 412 and 416 carry no validators (RFC 9110 has none there), so
                // a HEAD describes the revision the answer was about.
                let Some(meta) = self.stat(key, req.now).await? else {
                    return Ok(Opened::NotFound);
                };
                if status == StatusCode::PRECONDITION_FAILED {
                    Ok(Opened::PreconditionFailed { meta })
                } else {
                    Ok(Opened::NotSatisfiable { meta })
                }
            }
            StatusCode::OK => {
                let (meta, body) = self.whole(response)?;
                if range.is_none() {
                    return Ok(Opened::Body { meta, window: OpenWindow::Whole, body });
                }
                // The whole object answering a Range: what a rangecache upstream sends for a
                // suffix of a zero-byte object (RFC 9110 §14.1.2 leaves no Content-Range to
                // describe it), and what any server may send (§14.2). The span is resolved
                // against that revision as a local tier would: nothing to send is unsatisfiable,
                // and the core plans the answer from the metadata; a window covering the whole
                // object is this very body. A narrower window would have to be cut out of a
                // whole download nobody asked for, so that stays a failure.
                match req.span.resolve(meta.size) {
                    None => Ok(Opened::NotSatisfiable { meta }),
                    Some(window) if window.bounds(meta.size) == (0..meta.size) => {
                        Ok(Opened::Body { meta, window, body })
                    }
                    Some(_) => Err(backend(&self.name, "upstream ignored the Range header")),
                }
            }
            StatusCode::PARTIAL_CONTENT => {
                let (window, size) = headers
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .ok_or_else(|| backend(&self.name, "206 without a single Content-Range"))?;
                if let Some(length) = content_length(&headers)
                    && length != window.len()
                {
                    return Err(backend(
                        &self.name,
                        format!("206 of {length} bytes for a Content-Range of {}", window.len()),
                    ));
                }
                let meta = self.meta(&headers, Some(size))?;
                Ok(Opened::Body {
                    meta,
                    window: OpenWindow::Part(window),
                    body: body_stream(response, window.len()),
                })
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn stat(
        &self,
        key: &ObjectKey,
        _now: Timestamp,
    ) -> Result<Option<ObjectMeta>, TierError> {
        let response = self.call(reqwest::Method::HEAD, self.object_url(key)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let length = content_length(response.headers())
                    .ok_or_else(|| backend(&self.name, "HEAD without Content-Length"))?;
                Ok(Some(self.meta(response.headers(), Some(length))?))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn create(
        &self,
        key: &ObjectKey,
        new: NewObject,
    ) -> Result<Box<dyn TierWriter>, TierError> {
        let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(UPLOAD_CHANNEL_CHUNKS);
        let body = reqwest::Body::wrap_stream(tokio_stream_from(receiver));
        let mut builder = self
            .upload(key)
            .header(header::ETAG, new.etag.to_string())
            .header(header::LAST_MODIFIED, format_http_date(new.last_modified));
        if let Some(expires) = new.expires {
            // The upstream caps the TTL by its own tiers' maxima; a whole second at least, so an
            // object about to expire is not stored forever.
            let now = crate::clock::now();
            let secs = expires.as_millis().saturating_sub(now.as_millis()).div_ceil(1000).max(1);
            builder = builder.header("time-to-live", format!("{secs}s"));
        }
        if let Some(size) = new.expected_size {
            builder = builder.header(header::CONTENT_LENGTH, size);
        }
        match &new.condition {
            WriteCondition::None => {}
            WriteCondition::IfAbsent => builder = builder.header(header::IF_NONE_MATCH, "*"),
            WriteCondition::IfMatch(tags) => builder = builder.header(header::IF_MATCH, tags),
        }
        for (name, value) in &new.headers {
            if let (Ok(name), Ok(value)) =
                (header::HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            {
                builder = builder.header(name, value);
            }
        }
        let upload = tokio::spawn(builder.body(body).send());
        Ok(Box::new(RemoteWriter {
            tier: self.name.clone(),
            sender: Some(sender),
            upload: Some(upload),
            new,
            written: 0,
        }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, TierError> {
        let response = self.call(reqwest::Method::DELETE, self.object_url(key)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            status if status.is_success() => Ok(true),
            other => Err(self.unexpected(other)),
        }
    }

    /// The upstream keeps its own authoritative copy: ask it to drop only the copies in its
    /// nearer tiers, never delete.
    async fn invalidate(&self, key: &ObjectKey) -> Result<(), TierError> {
        let response = self
            .call(reqwest::Method::POST, format!("{}/invalidate", self.object_url(key)))
            .await?;
        match response.status() {
            status if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    async fn stats(&self, _now: Timestamp) -> Result<TierStats, TierError> {
        let body = self.api_get("stats").await?;
        let stats: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| backend(&self.name, format!("stats are not JSON: {e}")))?;
        let number = |name: &str| stats.get(name).and_then(serde_json::Value::as_u64);
        Ok(TierStats {
            objects: number("objects").unwrap_or(0),
            bytes: number("size").or_else(|| number("bytes")).unwrap_or(0),
            capacity: number("capacity").filter(|c| *c > 0),
        })
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        let body = self.api_get("namespaces").await?;
        let mut names: Vec<String> = serde_json::from_slice::<Option<Vec<String>>>(&body)
            .map_err(|e| backend(&self.name, format!("namespaces are not a JSON array: {e}")))?
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    async fn close(&self) -> Result<(), TierError> {
        Ok(())
    }
}

impl RemoteTier {
    /// A whole-object read pinned to one revision: a GET of its first `first_end` bytes, and when
    /// the object is larger, the rest as parallel ranged GETs pinned to the answer's entity-tag.
    /// `None` when the answer is one the one-GET read handles (304, 412, or 416 for an empty
    /// object, which has no first byte to ask for).
    async fn open_in_parts(
        &self,
        key: &ObjectKey,
        req: &OpenRequest,
        first_end: u64,
    ) -> Result<Option<Opened>, TierError> {
        let url = self.object_url(key);
        let mut builder = self
            .request(reqwest::Method::GET, url.clone())
            .header(header::RANGE, range_value(0, Some(first_end)));
        if let Some(pin) = &req.conditions.if_match {
            builder = builder.header(header::IF_MATCH, pin);
        }
        let response = builder.send().await.map_err(|e| self.send_error(e))?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_FOUND => return Ok(Some(Opened::NotFound)),
            // The upstream ignored the Range: its answer is the whole object.
            StatusCode::OK => {
                let (meta, body) = self.whole(response)?;
                return Ok(Some(Opened::Body { meta, window: OpenWindow::Whole, body }));
            }
            _ => return Ok(None),
        }
        let headers = response.headers();
        let Some((first, size)) = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(rangecache_download::http::parse_content_range)
            .filter(|(first, _)| first.start == 0)
        else {
            return Err(backend(&self.name, "206 without a Content-Range from byte 0"));
        };
        let meta = self.meta(headers, Some(size))?;
        if first.end == size {
            return Ok(Some(Opened::Body {
                meta,
                window: OpenWindow::Whole,
                body: body_stream(response, size),
            }));
        }
        let etag = strong_etag(headers)
            .ok_or_else(|| backend(&self.name, "answer without a strong ETag"))?;
        let mut auth = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| backend(&self.name, "the token is not a valid header value"))?;
            value.set_sensitive(true);
            auth.insert(header::AUTHORIZATION, value);
        }
        let target = Target::new(self.client.clone(), url).with_headers(auth);
        let parts = Arc::new(HttpParts::new(target, etag, size));
        let body =
            ordered(parts, body_stream(response, first.end), first.end, size, &self.download);
        Ok(Some(Opened::Body { meta, window: OpenWindow::Whole, body }))
    }

    /// A 200: the whole object's revision and its body, held to its Content-Length.
    fn whole(&self, response: reqwest::Response) -> Result<(ObjectMeta, ByteStream), TierError> {
        let headers = response.headers();
        let length = content_length(headers)
            .ok_or_else(|| backend(&self.name, "200 without Content-Length"))?;
        let meta = self.meta(headers, Some(length))?;
        Ok((meta, body_stream(response, length)))
    }

    /// Metadata from a response's headers; `size` from Content-Length or Content-Range.
    fn meta(&self, headers: &HeaderMap, size: Option<u64>) -> Result<ObjectMeta, TierError> {
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_strong_etag)
            .ok_or_else(|| backend(&self.name, "answer without a strong ETag"))?;
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .unwrap_or(Timestamp::from_secs(0));
        // The upstream answers with its stored end-to-end headers among its own; the core's
        // selection keeps exactly those, so custom headers survive a chain of servers.
        let stored = select_stored_headers(
            headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        );
        // A rangecache upstream says when its revision expires; a copy here must not outlive it.
        // Without that (cachew), the copy gets the tier's copy_ttl.
        let expires = headers
            .get(EXPIRES_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .unwrap_or_else(|| {
                let ttl = u64::try_from(self.copy_ttl.as_millis()).unwrap_or(u64::MAX);
                crate::clock::now().saturating_add_millis(ttl)
            });
        let expires = Some(expires);
        Ok(ObjectMeta { size: size.unwrap_or(0), etag, last_modified, headers: stored, expires })
    }
}

struct RemoteWriter {
    tier: String,
    sender: Option<mpsc::Sender<io::Result<Bytes>>>,
    /// The upload's task; `None` once its answer was taken.
    upload: Option<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>>,
    new: NewObject,
    written: u64,
}

#[async_trait::async_trait]
impl TierWriter for RemoteWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), TierError> {
        let len = chunk.len() as u64;
        let sender = self.sender.as_ref().expect("a writer is not used after commit or abort");
        if sender.send(Ok(chunk)).await.is_err() {
            // The upload stopped reading: the upstream answered before the body ended (a 412 or
            // 413 decided from the headers) or the connection failed; its answer says which.
            drop(self.sender.take());
            return Err(self.outcome().await.err().unwrap_or_else(|| {
                backend(&self.tier, "upload answered before the whole body was sent")
            }));
        }
        self.written += len;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ObjectMeta, TierError> {
        if let Some(expected) = self.new.expected_size
            && expected != self.written
        {
            self.abort_upload().await;
            return Err(TierError::SizeMismatch {
                tier: self.tier.clone(),
                expected,
                received: self.written,
            });
        }
        drop(self.sender.take());
        self.outcome().await
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

impl RemoteWriter {
    /// Waits for the upload's answer and maps its status.
    async fn outcome(&mut self) -> Result<ObjectMeta, TierError> {
        let upload = self.upload.take().expect("an upload's answer is taken once");
        let response = upload
            .await
            .map_err(|e| backend(&self.tier, format!("upload task failed: {e}")))?
            .map_err(|e| backend(&self.tier, format!("upload failed: {e}")))?;
        match response.status() {
            status if status.is_success() => Ok(ObjectMeta {
                size: self.written,
                etag: self.new.etag.clone(),
                last_modified: self.new.last_modified.truncated_to_secs(),
                headers: self.new.headers.clone(),
                expires: self.new.expires,
            }),
            StatusCode::PRECONDITION_FAILED => {
                Err(TierError::PreconditionFailed { tier: self.tier.clone() })
            }
            StatusCode::PAYLOAD_TOO_LARGE => Err(TierError::TooLarge {
                tier: self.tier.clone(),
                size: self.written,
                capacity: 0,
            }),
            other => Err(backend(&self.tier, format!("upload answered {other}"))),
        }
    }

    /// Ends the upload with an error so the upstream server discards what it received.
    async fn abort_upload(&mut self) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Err(io::Error::other("upload aborted"))).await;
        }
        if let Some(upload) = self.upload.take() {
            upload.abort();
            let _ = upload.await;
        }
    }
}

fn backend(tier: &str, message: impl Into<String>) -> TierError {
    TierError::Backend { tier: tier.to_owned(), message: message.into() }
}

/// The body of `response`, which must be exactly `expected` bytes: a body that ends early or
/// runs long ends with an error, so a tier never hands on fewer or more bytes than the window
/// it opened (a chunked answer has no Content-Length for the HTTP client to hold it to).
fn body_stream(response: reqwest::Response, expected: u64) -> ByteStream {
    let mut chunks = response.bytes_stream();
    let mut received: u64 = 0;
    let mut failed = false;
    Box::pin(futures::stream::poll_fn(move |cx| {
        if failed {
            return Poll::Ready(None);
        }
        let item = match std::task::ready!(chunks.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                received = received.saturating_add(chunk.len() as u64);
                if received <= expected {
                    return Poll::Ready(Some(Ok(chunk)));
                }
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("upstream sent more than the {expected} bytes it announced"),
                )
            }
            Some(Err(e)) => io::Error::other(e),
            None if received == expected => return Poll::Ready(None),
            None => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("upstream body ended after {received} of {expected} bytes"),
            ),
        };
        failed = true;
        Poll::Ready(Some(Err(item)))
    }))
}

fn tokio_stream_from(
    mut receiver: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Sync + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// The `Range` header asking for `span`; `None` for the whole object.
fn range_header(span: Span) -> Option<String> {
    match span {
        Span::From { start: 0, end: None } => None,
        Span::From { start, end: None } => Some(format!("bytes={start}-")),
        // An empty span cannot be asked for on the wire; ask for its first byte so the
        // upstream answers 416 or a window the core then judges. No `start + 1`: a position
        // the Range parser saturated is `u64::MAX`, which has no successor.
        Span::From { start, end: Some(end) } => {
            let last = if end > start { end - 1 } else { start };
            Some(format!("bytes={start}-{last}"))
        }
        Span::Last(n) => Some(format!("bytes=-{n}")),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// `bytes S-E/SIZE` → the half-open window `[S, E + 1)` and SIZE.
fn parse_content_range(value: &str) -> Option<(Window, u64)> {
    let (range, size) = rangecache_download::http::parse_content_range(value)?;
    Some((Window::new(range.start, range.end)?, size))
}

fn parse_strong_etag(value: &str) -> Option<EntityTag> {
    EntityTag::parse(value).filter(EntityTag::is_strong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_range_headers() {
        assert_eq!(range_header(Span::WHOLE), None);
        assert_eq!(range_header(Span::From { start: 5, end: None }).as_deref(), Some("bytes=5-"));
        assert_eq!(
            range_header(Span::From { start: 5, end: Some(10) }).as_deref(),
            Some("bytes=5-9")
        );
        assert_eq!(range_header(Span::Last(7)).as_deref(), Some("bytes=-7"));
    }

    #[test]
    fn an_empty_span_at_the_largest_position_asks_for_that_one_byte() {
        // `bytes=18446744073709551615-18446744073709551615` from a client saturates to this
        // span; asking for `start + 1` overflowed.
        let span = Span::From { start: u64::MAX, end: Some(u64::MAX) };
        let max = u64::MAX;
        assert_eq!(range_header(span), Some(format!("bytes={max}-{max}")));
        assert_eq!(
            range_header(Span::From { start: 5, end: Some(5) }).as_deref(),
            Some("bytes=5-5")
        );
    }

    #[tokio::test]
    async fn a_whole_empty_object_answering_a_suffix_range_is_not_satisfiable_here() {
        // What a rangecache upstream answers to `bytes=-5` of a zero-byte object (RFC 9110
        // §14.1.2): 200 with the empty object. The core then plans the client's answer.
        let tier = tier_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\n\r\n");
        match tier.open(&key(), &open(Span::Last(5))).await {
            Ok(Opened::NotSatisfiable { meta }) => {
                assert_eq!((meta.size, meta.etag.to_string()), (0, "\"e\"".to_owned()));
            }
            Ok(_) => panic!("expected NotSatisfiable"),
            Err(e) => panic!("a legitimate 200 was taken for a failure: {e}"),
        }
    }

    #[tokio::test]
    async fn a_whole_object_answering_a_narrower_range_is_still_a_failure() {
        let tier = tier_answering(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nETag: \"e\"\r\n\r\n0123456789",
        );
        let opened = tier.open(&key(), &open(Span::From { start: 2, end: Some(4) })).await;
        assert!(opened.is_err(), "bytes 2-3 cannot be served from a whole answer here");
        // A range covering the whole object is that very body.
        let opened = tier.open(&key(), &open(Span::Last(50))).await;
        assert_eq!(body_of(opened).await.unwrap(), "0123456789");
    }

    #[tokio::test]
    async fn a_206_body_shorter_than_its_content_range_ends_in_an_error() {
        // Chunked, so the HTTP client has no Content-Length to hold the body to.
        let tier = tier_answering(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nETag: \"e\"\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        let opened = tier.open(&key(), &open(Span::From { start: 0, end: Some(10) })).await;
        let body = body_of(opened).await;
        assert!(body.is_err(), "5 bytes for a 10-byte window were passed on: {body:?}");
    }

    #[tokio::test]
    async fn a_206_body_longer_than_its_content_range_ends_in_an_error() {
        let tier = tier_answering(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/100\r\nETag: \"e\"\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        let opened = tier.open(&key(), &open(Span::From { start: 0, end: Some(2) })).await;
        let body = body_of(opened).await;
        assert!(body.is_err(), "5 bytes for a 2-byte window were passed on: {body:?}");
    }

    #[tokio::test]
    async fn a_206_whose_content_length_disagrees_with_its_content_range_is_refused() {
        let tier = tier_answering(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nETag: \"e\"\r\n\
              Content-Length: 5\r\n\r\nhello",
        );
        let opened = tier.open(&key(), &open(Span::From { start: 0, end: Some(10) })).await;
        let body = body_of(opened).await;
        assert!(body.is_err(), "5 bytes for a 10-byte window were passed on: {body:?}");
    }

    #[tokio::test]
    async fn a_206_of_exactly_its_content_range_is_passed_on() {
        let tier = tier_answering(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 3-7/100\r\nETag: \"e\"\r\n\
              Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
        );
        let opened = tier.open(&key(), &open(Span::From { start: 3, end: Some(8) })).await;
        assert_eq!(body_of(opened).await.unwrap(), "hello");
    }

    /// A remote tier whose upstream answers every request with `answer`, verbatim, on a
    /// connection of its own: a misbehaving server no real one can be made to imitate.
    fn tier_answering(answer: &'static [u8]) -> RemoteTier {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The request has no body: its head ends the first read that ends in a
                    // blank line.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket.write_all(answer).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        RemoteTier::new("upstream", &base, None, Duration::from_secs(60)).expect("a tier")
    }

    fn key() -> ObjectKey {
        ObjectKey {
            namespace: rangecache_core::Namespace::parse("ns").expect("a namespace"),
            key: rangecache_core::Key::from_segment("k"),
        }
    }

    fn open(span: Span) -> OpenRequest {
        OpenRequest {
            span,
            conditions: Default::default(),
            now: Timestamp::from_secs(1_700_000_000),
        }
    }

    /// The whole body of an opened answer, or the first error on the way.
    async fn body_of(opened: Result<Opened, TierError>) -> Result<Bytes, String> {
        let Opened::Body { mut body, .. } = opened.map_err(|e| e.to_string())? else {
            return Err("no body".into());
        };
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        Ok(Bytes::from(all))
    }

    #[test]
    fn content_range_is_read_back_as_a_window() {
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((Window::new(5, 10).unwrap(), 100)));
        assert_eq!(parse_content_range("bytes 5-200/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
