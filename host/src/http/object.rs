//! The object routes: read (GET, HEAD), write (PUT, POST), delete and invalidate.
//!
//! Reads hand the request's raw fields to the tiered driver, which drives the core's read machine
//! and returns the plan to render with its body. Writes turn headers into a `WriteRequest` (the
//! host supplies what the core cannot: a fresh entity-tag and the time) and hand it and the body
//! to the tiered driver, which carries out the core's write machine; deletes and invalidations
//! likewise. This file renders what the machines answered and decides nothing about an object.
//!
//! Every answer about an object carries an RFC 9211 `Cache-Status` (SPEC §3), one member per
//! tier, deepest first. A read's comes from the core's read machine, a write's, delete's or
//! invalidation's from the core's write machine; an answer refused before any tier was asked
//! (400, 401, 405, 503 shutting down) says every tier was bypassed
//! (`CacheStatus::bypassed`).

use std::borrow::Cow;
use std::time::Duration;

use futures::StreamExt;
use http::header::{self, HeaderMap};
use hyper::body::Incoming;

use rangecache_core::object::{last_modified_on_write, parse_ttl, select_stored_headers};
use rangecache_core::validators::{EntityTag, parse_http_date};
use rangecache_core::{CacheStatus, Key, Namespace, ObjectKey};

use super::render::Reply;
use super::{ApiError, AppState, Request, RequestBody};
use crate::clock::now;
use crate::tiered::{ReadRequest, Served, WriteRequest};

/// The object address of a path's two segments as received (percent-encoded), or 400.
///
/// Each segment is percent-decoded before it is validated or hashed, as cachew's router does
/// (Go's `PathValue`), so `my%20file` and `my file` name one object and `%61bc` is the
/// namespace `abc`. A segment that does not decode to UTF-8 is 400.
fn parse_key(namespace: &str, key: &str) -> Result<ObjectKey, ApiError> {
    let namespace = decode_segment(namespace, "namespace")?;
    let key = decode_segment(key, "key")?;
    let namespace =
        Namespace::parse(&namespace).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if key.is_empty() {
        return Err(ApiError::BadRequest("key is empty".into()));
    }
    Ok(ObjectKey { namespace, key: Key::from_segment(&key) })
}

/// One path segment percent-decoded (RFC 3986 §2.1), or 400 if the result is not UTF-8.
fn decode_segment<'a>(segment: &'a str, what: &str) -> Result<Cow<'a, str>, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest(format!("the {what} is not UTF-8 once percent-decoded")))
}

/// The object routes under `/api/v1/object/{namespace}/{key}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `…/{namespace}/{key}`: GET, HEAD, PUT, POST, DELETE.
    Object,
    /// `…/{namespace}/{key}/invalidate`: POST.
    Invalidate,
}

/// Answers one object route, always with a `Cache-Status`.
pub async fn answer(
    state: &AppState,
    req: &Request,
    namespace: &str,
    key: &str,
    route: Route,
    body: Incoming,
) -> Reply {
    let result = route_object(state, req, namespace, key, route, body).await;
    let mut reply = match result {
        Ok(reply) => reply,
        Err(error) => error.into_response(),
    };
    // Only an answer refused before any tier was asked lacks one.
    if !reply.has_cache_status() {
        reply.set_cache_status(CacheStatus::bypassed(state.tiered.names()).to_field_value());
    }
    reply
}

async fn route_object(
    state: &AppState,
    req: &Request,
    namespace: &str,
    key: &str,
    route: Route,
    body: Incoming,
) -> Result<Reply, ApiError> {
    let auth = state.auth.as_ref();
    if route == Route::Invalidate {
        if req.method != http::Method::POST {
            return Err(ApiError::MethodNotAllowed("POST"));
        }
        let key = parse_key(namespace, key)?;
        super::auth::require_write(auth, &req.headers)?;
        return answered(state.tiered.invalidate(&key).await);
    }
    let key = parse_key(namespace, key)?;
    match req.method {
        http::Method::GET | http::Method::HEAD => {
            super::auth::require_read(auth, &req.headers)?;
            read(state, req, key).await
        }
        http::Method::PUT | http::Method::POST => {
            super::auth::require_write(auth, &req.headers)?;
            write(state, req, key, body).await
        }
        http::Method::DELETE => {
            super::auth::require_write(auth, &req.headers)?;
            answered(state.tiered.delete(&key).await)
        }
        _ => Err(ApiError::MethodNotAllowed("GET, HEAD, PUT, POST, DELETE")),
    }
}

/// The rendering of a mutation's answer, as the core's write machine decided it.
fn answered(result: Result<Served, crate::tiered::Error>) -> Result<Reply, ApiError> {
    let served = result?;
    Ok(Reply::plan(served.plan, served.body, served.cache_status))
}

/// GET or HEAD.
async fn read(state: &AppState, req: &Request, key: ObjectKey) -> Result<Reply, ApiError> {
    let mut read = ReadRequest::new(req.method.clone(), now());
    // One pass over the fields rather than a lookup per field the core reads.
    for (name, value) in &req.headers {
        let field = if name == header::IF_MATCH {
            &mut read.if_match
        } else if name == header::IF_NONE_MATCH {
            &mut read.if_none_match
        } else if name == header::IF_MODIFIED_SINCE {
            &mut read.if_modified_since
        } else if name == header::IF_UNMODIFIED_SINCE {
            &mut read.if_unmodified_since
        } else if name == header::RANGE {
            &mut read.range
        } else if name == header::IF_RANGE {
            &mut read.if_range
        } else {
            continue;
        };
        join_into(field, name, value)?;
    }
    let served = state.tiered.read(&key, read).await?;
    // The plan already carries every header, the revision's expiry included.
    Ok(Reply::plan(served.plan, served.body, served.cache_status))
}

/// PUT or POST: store the body in every tier, as the core's write machine decides.
async fn write(
    state: &AppState,
    req: &Request,
    key: ObjectKey,
    body: Incoming,
) -> Result<Reply, ApiError> {
    let mut body = super::body_stream(body, state.limits.body_timeout);
    let headers = &req.headers;
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Content-Length is not a number".into()))?,
        ),
    };
    let etag = match headers.get(header::ETAG) {
        None => generate_etag(),
        Some(value) => {
            let tag =
                value.to_str().ok().and_then(EntityTag::parse).ok_or_else(|| {
                    ApiError::BadRequest("ETag must be one quoted entity-tag".into())
                })?;
            if !tag.is_strong() {
                return Err(ApiError::BadRequest("ETag must be strong, not W/\"...\"".into()));
            }
            tag
        }
    };
    let now = now();
    let given =
        match headers.get(header::LAST_MODIFIED) {
            None => None,
            Some(value) => {
                Some(value.to_str().ok().and_then(parse_http_date).ok_or_else(|| {
                    ApiError::BadRequest("Last-Modified is not an HTTP date".into())
                })?)
            }
        };
    let last_modified = last_modified_on_write(given, now);
    let ttl = match headers.get("time-to-live") {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::BadRequest("Time-To-Live is not a duration like 90s, 30m or 1h".into())
            })?;
            Some(parse_ttl(text).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
    };
    let write = WriteRequest {
        etag,
        last_modified,
        ttl_millis: ttl,
        headers: stored_headers(headers),
        if_match: joined(headers, header::IF_MATCH)?,
        if_none_match: joined(headers, header::IF_NONE_MATCH)?,
        content_length,
        max_size: state.max_object_size,
        now,
    };
    match state.tiered.write(&key, write, &mut body).await {
        Ok(served) => Ok(Reply::plan(served.plan, served.body, served.cache_status)),
        Err(e) => {
            let e = ApiError::from(e);
            // Too large for `max_object_size` or for a tier that must hold the object: the
            // rest of the body may still be on its way.
            if e.is_too_large() {
                linger(&mut body).await;
            }
            Err(e)
        }
    }
}

/// Reads and drops what is left of a refused upload, at most [`LINGER_BYTES`] for at most
/// [`LINGER_TIME`], so that the client reads the 413 instead of a reset: closing a socket with
/// unread bytes makes the kernel reset the connection, and the answer can be lost with it.
async fn linger(body: &mut RequestBody) {
    let drain = async {
        let mut n_dropped = 0;
        while let Some(Ok(chunk)) = body.next().await {
            n_dropped += chunk.len();
            if n_dropped > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Most bytes of a refused upload read and dropped before answering (1 MiB: a larger upload
/// should use `Expect: 100-continue`, which gets the 413 before sending its body).
const LINGER_BYTES: usize = 1 << 20;
/// Longest time spent dropping a refused upload.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// A fresh strong entity-tag: 128 random bits, so two writes never share one.
fn generate_etag() -> EntityTag {
    let opaque = format!("{:032x}", fastrand::u128(..));
    EntityTag::strong(opaque).expect("hex digits are entity-tag characters")
}

/// All values of a field joined with ", " (RFC 9110 §5.3), or 400 if one is not text.
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<String>, ApiError> {
    let mut joined = None;
    for value in headers.get_all(&name) {
        join_into(&mut joined, &name, value)?;
    }
    Ok(joined)
}

/// Appends one value of field `name` to the values joined so far (RFC 9110 §5.3), or 400 if it
/// is not text.
fn join_into(
    joined: &mut Option<String>,
    name: &header::HeaderName,
    value: &header::HeaderValue,
) -> Result<(), ApiError> {
    let text =
        value.to_str().map_err(|_| ApiError::BadRequest(format!("{name} is not visible ASCII")))?;
    match joined {
        None => *joined = Some(text.to_owned()),
        Some(joined) => {
            joined.push_str(", ");
            joined.push_str(text);
        }
    }
    Ok(())
}

/// End-to-end headers stored with the object and returned on reads (SPEC §3), as the core
/// selects them.
fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    select_stored_headers(
        headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    )
}
