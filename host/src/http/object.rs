//! The object routes: read (GET, HEAD), write (PUT, POST), delete and invalidate.
//!
//! Reads hand the request's raw fields to the tiered driver, which drives the core and returns
//! the plan to render with its body. Writes turn headers into a `NewObject` (the host supplies
//! what the core cannot: a fresh entity-tag and the time) and stream the body into every tier.
//!
//! Every answer about an object carries an RFC 9211 `Cache-Status` (SPEC §3), one member per
//! tier, deepest first. A read's comes from the core's read machine. The others say what each
//! tier did with a request that is not a lookup:
//!
//! | request                                                         | each tier's member         |
//! | --------------------------------------------------------------- | -------------------------- |
//! | refused before any tier was asked (400, 401, 405, 413 announced, 503 shutting down) | `fwd=bypass` |
//! | write, delete (any status)                                      | `fwd=method`               |
//! | write answered 200                                              | the authoritative tier also `stored` |
//! | invalidate                                                      | `fwd=method`; the authoritative tier, untouched, `fwd=bypass` |
//!
//! `fwd=method` says the method is not one a cache answers from a stored copy (RFC 9211 §2.2);
//! `stored` is claimed only where it is known: the authoritative tier committed every
//! successful write, while a nearer tier may have been left out of it (too small for the
//! object), which the driver does not report.

use std::borrow::Cow;
use std::time::Duration;

use futures::StreamExt;
use http::StatusCode;
use http::header::{self, HeaderMap};
use hyper::body::Incoming;

use rangecache_core::conditional::{WriteCheck, WriteGuard, write_check, write_guard_for};
use rangecache_core::object::{last_modified_on_write, parse_ttl, select_stored_headers};
use rangecache_core::validators::{EntityTag, format_http_date, parse_http_date};
use rangecache_core::{Key, Namespace, ObjectKey, Timestamp};

use super::render::Reply;
use super::{ApiError, AppState, Request, RequestBody};
use crate::clock::now;
use crate::storage::WriteCondition;
use crate::tiered::{ReadRequest, WriteRequest};

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

/// How far a request that is not a read got into the tiers, for its `Cache-Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handling {
    /// No tier was asked.
    Bypassed,
    /// Every tier was asked to write or delete.
    Mutated,
    /// A write every tier accepted (the authoritative tier committed it).
    Written,
    /// The nearer tiers were asked to drop their copies.
    Invalidated,
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
    let mut handling = Handling::Bypassed;
    let result = route_object(state, req, namespace, key, route, body, &mut handling).await;
    let mut reply = match result {
        Ok(reply) => reply,
        Err(error) => {
            // A refusal raised before the driver touched a tier is a bypass, whatever route.
            if matches!(error, ApiError::ShuttingDown) {
                handling = Handling::Bypassed;
            }
            error.into_response()
        }
    };
    if !reply.has_cache_status() {
        reply.set_cache_status(cache_status(state.tiered.names(), handling));
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
    handling: &mut Handling,
) -> Result<Reply, ApiError> {
    let auth = state.auth.as_ref();
    if route == Route::Invalidate {
        if req.method != http::Method::POST {
            return Err(ApiError::MethodNotAllowed("POST"));
        }
        let key = parse_key(namespace, key)?;
        super::auth::require_write(auth, &req.headers)?;
        *handling = Handling::Invalidated;
        return invalidate(state, key).await;
    }
    let key = parse_key(namespace, key)?;
    match req.method {
        http::Method::GET | http::Method::HEAD => {
            super::auth::require_read(auth, &req.headers)?;
            read(state, req, key).await
        }
        http::Method::PUT | http::Method::POST => {
            super::auth::require_write(auth, &req.headers)?;
            write(state, req, key, body, handling).await
        }
        http::Method::DELETE => {
            super::auth::require_write(auth, &req.headers)?;
            *handling = Handling::Mutated;
            delete(state, key).await
        }
        _ => Err(ApiError::MethodNotAllowed("GET, HEAD, PUT, POST, DELETE")),
    }
}

/// The `Cache-Status` of an answer that is not a read's: one member per tier, deepest first
/// (the table in the module documentation).
fn cache_status(names: &[String], handling: Handling) -> String {
    let last = names.len().saturating_sub(1);
    let members: Vec<String> = names
        .iter()
        .enumerate()
        .rev()
        .map(|(idx, name)| {
            let params = match handling {
                Handling::Bypassed => "fwd=bypass",
                Handling::Mutated => "fwd=method",
                Handling::Written if idx == last => "fwd=method; stored",
                Handling::Written => "fwd=method",
                Handling::Invalidated if idx == last => "fwd=bypass",
                Handling::Invalidated => "fwd=method",
            };
            format!("{}; {params}", cache_identifier(name))
        })
        .collect();
    members.join(", ")
}

/// A tier name as an RFC 9211 cache identifier: an sf-token when it starts with a letter (the
/// configuration allows only letters, digits, `_` and `-`), else an sf-string.
fn cache_identifier(name: &str) -> Cow<'_, str> {
    if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("\"{name}\""))
    }
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

/// PUT or POST: store the body in every tier.
async fn write(
    state: &AppState,
    req: &Request,
    key: ObjectKey,
    body: Incoming,
    handling: &mut Handling,
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
    // Refuse before storing a byte when the client announces too much.
    if let Some(length) = content_length
        && length > state.max_object_size
    {
        linger(&mut body).await;
        return Err(ApiError::TooLarge(state.max_object_size));
    }
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
    // From here on the tiers are asked: to look up the live revision, then to store.
    *handling = Handling::Mutated;
    let condition = write_condition(state, &key, headers, now).await?;
    let stored = stored_headers(headers);
    let write = WriteRequest {
        etag,
        last_modified,
        ttl_millis: ttl,
        headers: stored,
        condition,
        content_length,
        max_size: state.max_object_size,
        now,
    };
    let meta = match state.tiered.write(&key, write, &mut body).await {
        Ok(meta) => meta,
        Err(e) => {
            let e = ApiError::from(e);
            // Too large for `max_object_size` or for a tier that must hold the object.
            if e.is_too_large() {
                linger(&mut body).await;
            }
            return Err(e);
        }
    };
    *handling = Handling::Written;
    let mut reply = Reply::empty(StatusCode::OK);
    reply.header_string(header::ETAG, meta.etag.to_string());
    reply.header_string(header::LAST_MODIFIED, format_http_date(meta.last_modified));
    Ok(reply)
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

/// DELETE: remove the object from every tier.
async fn delete(state: &AppState, key: ObjectKey) -> Result<Reply, ApiError> {
    if state.tiered.delete(&key).await? {
        Ok(Reply::empty(StatusCode::OK))
    } else {
        Err(ApiError::ObjectNotFound)
    }
}

/// POST …/invalidate: drop the copies of the non-authoritative tiers.
async fn invalidate(state: &AppState, key: ObjectKey) -> Result<Reply, ApiError> {
    state.tiered.invalidate(&key).await?;
    Ok(Reply::empty(StatusCode::OK))
}

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

/// The condition the tiers check when they commit this write, as the core decides it from
/// `If-Match` and `If-None-Match` (RFC 9110 §13.2.2: If-Match first; an If-None-Match naming
/// the live revision is 412, one naming others lets the write proceed).
///
/// When the core needs the live revision, it is looked up with a HEAD through the tiers (the
/// nearest tier holding the key answers; every tier holds the revision the authoritative tier
/// committed), and the core's verdict is pinned to that revision, so a write committed in
/// between makes the tiers refuse this one rather than apply it unevaluated.
async fn write_condition(
    state: &AppState,
    key: &ObjectKey,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<WriteCondition, ApiError> {
    let if_match = joined(headers, header::IF_MATCH)?;
    let if_none_match = joined(headers, header::IF_NONE_MATCH)?;
    let (if_match, if_none_match) = (if_match.as_deref(), if_none_match.as_deref());
    let guard = match write_check(if_match, if_none_match) {
        WriteCheck::Guard(guard) => guard,
        WriteCheck::NeedsCurrent => {
            let current = current_etag(state, key, now).await?;
            write_guard_for(if_match, if_none_match, current.as_ref())
                .ok_or(ApiError::WritePreconditionFailed)?
        }
    };
    Ok(match guard {
        WriteGuard::None => WriteCondition::None,
        WriteGuard::IfAbsent => WriteCondition::IfAbsent,
        WriteGuard::IfMatch(list) => WriteCondition::IfMatch(list),
    })
}

/// The entity-tag of the live revision of `key` (`None` when there is none), from a HEAD
/// planned by the core through the tiers.
async fn current_etag(
    state: &AppState,
    key: &ObjectKey,
    now: Timestamp,
) -> Result<Option<EntityTag>, ApiError> {
    let head = ReadRequest::new(http::Method::HEAD, now);
    let served = state.tiered.read(key, head).await?;
    match served.plan.status {
        StatusCode::NOT_FOUND => Ok(None),
        status if status.is_success() => served
            .plan
            .header(&header::ETAG)
            .and_then(EntityTag::parse)
            .map(Some)
            .ok_or(ApiError::CurrentUnknown),
        _ => Err(ApiError::CurrentUnknown),
    }
}

/// End-to-end headers stored with the object and returned on reads (SPEC §3), as the core
/// selects them.
fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    select_stored_headers(
        headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    )
}
