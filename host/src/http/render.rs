//! Turning an answer into a hyper response: a `ResponsePlan` and its body stream, or a small
//! host reply (JSON, text, metrics). Every response's body is a [`ResponseBody`], which counts
//! the bytes really sent, records the request's duration and time to first byte, and, when the
//! access log is on, writes the request's one log line when the body is done, so the line
//! carries the final byte count and duration.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body::{Frame, SizeHint};

use rangecache_core::ResponsePlan;

use super::request_id::X_REQUEST_ID;
use crate::metrics::{LatencySlot, Metrics};
use crate::storage::ByteStream;

/// The response type of every route.
pub type Response = http::Response<ResponseBody>;

/// The `tracing` target of the access log: one line per request at info level, so that
/// `RANGECACHE_LOG=info,rangecache::access=off` keeps every other line and drops these.
pub const ACCESS_LOG: &str = "rangecache::access";

/// A response before it is handed to hyper.
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Chunks,
    cache_status: Option<HeaderValue>,
}

/// The bytes of a body, in the cheapest form that holds them.
enum Chunks {
    Empty,
    Once(Bytes),
    Stream(ByteStream),
}

impl Reply {
    /// A plain-text reply.
    pub fn text(status: StatusCode, text: impl Into<String>) -> Reply {
        let text = Bytes::from(text.into());
        Reply::bytes(status, "text/plain; charset=utf-8", text)
    }

    /// A JSON reply with status 200.
    pub fn json(value: &impl serde::Serialize) -> Reply {
        let mut text = serde_json::to_vec(value).expect("our JSON values always serialize");
        text.push(b'\n');
        Reply::bytes(StatusCode::OK, "application/json", Bytes::from(text))
    }

    /// The metrics exposition, in the OpenMetrics text format `prometheus_client` writes.
    pub fn metrics(text: String) -> Reply {
        Reply::bytes(StatusCode::OK, crate::metrics::CONTENT_TYPE, Bytes::from(text))
    }

    /// A reply with no body.
    pub fn empty(status: StatusCode) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        Reply { status, headers, body: Chunks::Empty, cache_status: None }
    }

    /// The rendering of a core plan; `body` yields exactly the bytes the plan describes.
    pub fn plan(plan: ResponsePlan, body: Option<ByteStream>, cache_status: String) -> Reply {
        let mut headers = HeaderMap::with_capacity(plan.headers.len() + 2);
        for (name, value) in plan.headers {
            match HeaderValue::from_maybe_shared(Bytes::from(value)) {
                Ok(value) => {
                    headers.append(name, value);
                }
                Err(_) => tracing::warn!(header = %name, "stored header value is not sendable"),
            }
        }
        let body = body.map_or(Chunks::Empty, Chunks::Stream);
        let mut reply = Reply { status: plan.status, headers, body, cache_status: None };
        reply.set_cache_status(cache_status);
        reply
    }

    /// Sets the `Cache-Status` field (RFC 9211), also written to the request's log line.
    pub fn set_cache_status(&mut self, value: String) {
        if let Ok(header) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            self.headers.insert(HeaderName::from_static("cache-status"), header.clone());
            self.cache_status = Some(header);
        }
    }

    /// True if the reply already carries a `Cache-Status`.
    pub fn has_cache_status(&self) -> bool {
        self.cache_status.is_some()
    }

    /// Adds a header.
    pub fn header(&mut self, name: HeaderName, value: &'static str) {
        self.headers.insert(name, HeaderValue::from_static(value));
    }

    /// Adds a header with a computed value (skipped if it is not a valid field value).
    pub fn header_string(&mut self, name: HeaderName, value: String) {
        if let Ok(value) = HeaderValue::try_from(value) {
            self.headers.insert(name, value);
        }
    }

    /// The status this reply will carry.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Hands the reply to hyper, counting it, tagging it with its request id and arranging its
    /// log line.
    pub fn finish(
        mut self,
        metrics: &Arc<Metrics>,
        route: crate::metrics::Route,
        req: &super::Request,
        started: Instant,
        request_id: HeaderValue,
    ) -> Response {
        let latency = metrics.request(route, &req.method, self.status.as_u16());
        let chunks = if req.method == Method::HEAD { Chunks::Empty } else { self.body };
        let first_byte =
            if matches!(chunks, Chunks::Empty) { FirstByte::Bodiless } else { FirstByte::Awaiting };
        // The line's fields are gathered only when a line may be written: a body that fails is
        // logged at warn level, one that ends well at info.
        let line = tracing::enabled!(target: ACCESS_LOG, tracing::Level::WARN).then(|| LogLine {
            method: req.method.clone(),
            uri: req.uri.clone(),
            status: self.status.as_u16(),
            cache_status: self.cache_status,
            request_id: request_id.clone(),
            failed: None,
        });
        self.headers.insert(X_REQUEST_ID, request_id);
        let body = ResponseBody {
            chunks,
            sent: 0,
            metrics: metrics.clone(),
            latency,
            started,
            first_byte,
            line,
        };
        let mut response = http::Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }

    fn bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        Reply { status, headers, body: Chunks::Once(body), cache_status: None }
    }
}

struct LogLine {
    method: Method,
    uri: Uri,
    status: u16,
    cache_status: Option<HeaderValue>,
    request_id: HeaderValue,
    failed: Option<String>,
}

/// Whether a response's time to first byte is still to be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstByte {
    /// The body has handed nothing to the connection yet.
    Awaiting,
    /// Recorded.
    Seen,
    /// The answer has no body: its head is its first byte, recorded when hyper drops the body
    /// after writing the head.
    Bodiless,
}

/// The body of every response: counts what is sent, records its timings and logs once when
/// dropped.
pub struct ResponseBody {
    chunks: Chunks,
    sent: u64,
    metrics: Arc<Metrics>,
    latency: LatencySlot,
    /// When the request's head had been read.
    started: Instant,
    first_byte: FirstByte,
    line: Option<LogLine>,
}

impl ResponseBody {
    fn first_byte_sent(&mut self) {
        self.first_byte = FirstByte::Seen;
        self.metrics.latency(self.latency).first_byte.observe_duration(self.started.elapsed());
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.chunks {
            Chunks::Empty => Poll::Ready(None),
            Chunks::Once(_) => {
                let Chunks::Once(bytes) = std::mem::replace(&mut this.chunks, Chunks::Empty) else {
                    unreachable!("matched just above")
                };
                Poll::Ready(Some(Ok(bytes)))
            }
            Chunks::Stream(stream) => stream.as_mut().poll_next(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.sent += chunk.len() as u64;
                if this.first_byte == FirstByte::Awaiting && !chunk.is_empty() {
                    this.first_byte_sent();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(line) = &mut this.line {
                    line.failed = Some(e.to_string());
                }
            }
            // A body that ends without a byte (an empty object's stream): the head went first.
            Poll::Ready(None) if this.first_byte == FirstByte::Awaiting => this.first_byte_sent(),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled.map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.chunks, Chunks::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.chunks {
            Chunks::Empty => SizeHint::with_exact(0),
            Chunks::Once(bytes) => SizeHint::with_exact(bytes.len() as u64),
            // The plan's Content-Length says how long; hyper reads it from the header.
            Chunks::Stream(_) => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.metrics.response_bytes.inc_by(self.sent);
        let elapsed = self.started.elapsed();
        let latency = self.metrics.latency(self.latency);
        latency.duration.observe_duration(elapsed);
        if self.first_byte == FirstByte::Bodiless {
            latency.first_byte.observe_duration(elapsed);
        }
        let Some(line) = &self.line else { return };
        let cache_status = line.cache_status.as_ref().and_then(|v| v.to_str().ok());
        let request_id = line.request_id.to_str().unwrap_or("-");
        // Milliseconds to the microsecond: a number in JSON, short in the human format.
        let duration_ms = (elapsed.as_micros() as f64) / 1000.0;
        let path = line.uri.path_and_query().map_or("/", |p| p.as_str());
        match &line.failed {
            None if !tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO) => {}
            None => tracing::info!(
                target: ACCESS_LOG,
                method = %line.method,
                path = %path,
                status = line.status,
                bytes = self.sent,
                duration_ms,
                cache_status,
                request_id = %request_id,
                "request"
            ),
            Some(error) => tracing::warn!(
                target: ACCESS_LOG,
                method = %line.method,
                path = %path,
                status = line.status,
                bytes = self.sent,
                duration_ms,
                cache_status,
                request_id = %request_id,
                error = %error,
                "request body ended early"
            ),
        }
    }
}
