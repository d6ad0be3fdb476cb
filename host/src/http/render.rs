//! Turning an answer into a warp response: a `ResponsePlan` and its body stream, or a small
//! host reply (JSON, text, metrics). Every response's body passes through [`LoggedBody`],
//! which counts the bytes really sent and writes the request's one log line when the body is
//! done, so the line carries the final byte count and duration.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use warp::Reply as _;

use rangecache_core::ResponsePlan;

use super::Request;
use crate::metrics::Metrics;
use crate::storage::ByteStream;

/// The response type of every route.
pub type Response = warp::reply::Response;

/// A response before it is handed to warp.
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<ByteStream>,
    cache_status: Option<String>,
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
        Reply { status, headers, body: None, cache_status: None }
    }

    /// The rendering of a core plan; `body` yields exactly the bytes the plan describes.
    pub fn plan(plan: ResponsePlan, body: Option<ByteStream>, cache_status: String) -> Reply {
        let mut headers = HeaderMap::new();
        for (name, value) in plan.headers {
            match HeaderValue::try_from(value) {
                Ok(value) => {
                    headers.append(name, value);
                }
                Err(_) => tracing::warn!(header = %name, "stored header value is not sendable"),
            }
        }
        let mut reply = Reply { status: plan.status, headers, body, cache_status: None };
        reply.set_cache_status(cache_status);
        reply
    }

    /// Sets the `Cache-Status` field (RFC 9211), also written to the request's log line.
    pub fn set_cache_status(&mut self, value: String) {
        if let Ok(header) = HeaderValue::try_from(value.as_str()) {
            self.headers.insert(HeaderName::from_static("cache-status"), header);
            self.cache_status = Some(value);
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

    /// Hands the reply to warp, counting it and arranging its log line.
    pub fn finish(self, metrics: &Arc<Metrics>, req: &Request, started: Instant) -> Response {
        metrics.request(route_of(&req.path), req.method.as_str(), self.status.as_u16());
        let head_only = req.method == http::Method::HEAD;
        let inner: ByteStream = match self.body {
            Some(body) if !head_only => body,
            _ => Box::pin(futures::stream::empty()),
        };
        let logged = LoggedBody {
            inner: Mutex::new(inner),
            sent: 0,
            line: LogLine {
                metrics: metrics.clone(),
                method: req.method.to_string(),
                path: req.path.clone(),
                status: self.status.as_u16(),
                cache_status: self.cache_status,
                started,
                failed: None,
            },
        };
        let mut response = warp::reply::stream(logged).into_response();
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }

    fn bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(body) }));
        Reply { status, headers, body: Some(body), cache_status: None }
    }
}

struct LogLine {
    metrics: Arc<Metrics>,
    method: String,
    path: String,
    status: u16,
    cache_status: Option<String>,
    started: Instant,
    failed: Option<String>,
}

/// The body of every response: counts what is sent and logs once when dropped.
///
/// The Mutex only makes the boxed stream `Sync`, which warp asks of a body; it is never
/// contended, since only the connection task polls the body.
struct LoggedBody {
    inner: Mutex<ByteStream>,
    sent: u64,
    line: LogLine,
}

impl Stream for LoggedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let inner = this.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        let polled = inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => this.sent += chunk.len() as u64,
            Poll::Ready(Some(Err(e))) => this.line.failed = Some(e.to_string()),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let line = &self.line;
        line.metrics.response_bytes.inc_by(self.sent);
        let cache_status = line.cache_status.as_deref().unwrap_or("-");
        let duration_ms = line.started.elapsed().as_secs_f64() * 1000.0;
        match &line.failed {
            None => tracing::info!(
                method = %line.method,
                path = %line.path,
                status = line.status,
                bytes = self.sent,
                duration_ms = format_args!("{duration_ms:.1}"),
                cache_status,
                "request"
            ),
            Some(error) => tracing::warn!(
                method = %line.method,
                path = %line.path,
                status = line.status,
                bytes = self.sent,
                duration_ms = format_args!("{duration_ms:.1}"),
                cache_status,
                error = %error,
                "request body ended early"
            ),
        }
    }
}

/// The route label of a path, for `rangecache_route_requests_total`.
fn route_of(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or("");
    match path.trim_start_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1", "object", _, _] => "object",
        ["api", "v1", "object", _, _, "invalidate"] => "invalidate",
        ["api", "v1", "stats"] => "stats",
        ["api", "v1", "namespaces"] => "namespaces",
        ["metrics"] => "metrics",
        ["healthz"] => "healthz",
        _ => "other",
    }
}
