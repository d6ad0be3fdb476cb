//! Conditional requests (RFC 9110 §13) evaluated in the order of §13.2.2, then ranges (§14),
//! producing one [`ResponsePlan`] that every host renders.

use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED,
};
use http::{HeaderName, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::object::{EXPIRES_HEADER, ObjectMeta, is_stored_header};
use crate::range::{
    RangeLimits, Resolved, Window, content_range, parse_range, resolve, unsatisfied_content_range,
    write_content_range,
};
use crate::time::Timestamp;
use crate::validators::{EntityTag, EtagList, format_http_date, parse_http_date, write_http_date};

/// The request fields a plan depends on, as raw field values (joined with `, ` when a field
/// repeats, RFC 9110 §5.3); the core does all the parsing.
#[derive(Clone, Debug)]
pub struct RequestHeaders<'a> {
    /// The request method; only GET and HEAD read an object.
    pub method: &'a Method,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a str>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a str>,
    /// `Range`.
    pub range: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
}

/// Status, headers and body of the answer to one GET or HEAD of one object revision.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    /// 200, 206, 304, 412 or 416.
    pub status: StatusCode,
    /// Headers to emit, in order (stored end-to-end headers included).
    pub headers: Vec<(HeaderName, String)>,
    /// What bytes of the object the body carries.
    pub body: Body,
}

/// The body of a [`ResponsePlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 304, 412, 416).
    None,
    /// The whole object.
    Full,
    /// One window of the object.
    Window(Window),
    /// `multipart/byteranges`: each part is its header block followed by its window, and the
    /// body ends with `closing`.
    Multipart {
        /// The boundary named in Content-Type.
        boundary: String,
        /// The parts in order.
        parts: Vec<Part>,
        /// The closing delimiter, `\r\n--boundary--\r\n`.
        closing: String,
    },
}

/// One part of a `multipart/byteranges` body (RFC 9110 §14.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The bytes written before the window: delimiter and part headers, ending in a blank line.
    pub head: String,
    /// The window of the object this part carries.
    pub window: Window,
}

/// The outcome of evaluating a request's preconditions against one revision (RFC 9110 §13.2.2).
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Every condition holds (or none was sent): go on to Range and the body.
    Proceed,
    /// `If-None-Match` matched or `If-Modified-Since` found no change, on a GET or HEAD: 304.
    NotModified,
    /// `If-Match` or `If-Unmodified-Since` failed, or `If-None-Match` matched on another
    /// method: 412.
    Failed,
}

impl<'a> RequestHeaders<'a> {
    /// A request with `method` and none of the fields set.
    pub fn new(method: &'a Method) -> RequestHeaders<'a> {
        RequestHeaders {
            method,
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
            range: None,
            if_range: None,
        }
    }
}

impl ResponsePlan {
    /// The value of the first planned header called `name`, if any.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Body {
    /// Number of bytes this body sends, for an object of `object_size` bytes (what
    /// Content-Length announces for a GET). A planned multipart body never exceeds `u64::MAX`
    /// ([`plan_response`] ignores the Range instead), so the saturation is never reached.
    pub fn len(&self, object_size: u64) -> u64 {
        match self {
            Body::None => 0,
            Body::Full => object_size,
            Body::Window(window) => window.len(),
            Body::Multipart { parts, closing, .. } => {
                multipart_len(parts, closing).unwrap_or(u64::MAX)
            }
        }
    }

    /// True if nothing at all is sent.
    pub fn is_empty(&self) -> bool {
        matches!(self, Body::None)
    }
}

/// Status, headers and body for a request for `meta` (RFC 9110 §13.2.2, §14, §15).
///
/// Preconditions first ([`evaluate_preconditions`]): 412 carries only `Content-Length: 0`;
/// 304 carries ETag, Last-Modified and the stored Cache-Control and Expires (§15.4.5), no
/// body. Then, for GET only, the Range, honoured when `If-Range` is absent or
/// [`if_range_holds`]; an invalid Range, a failed If-Range, too many ranges or a suffix of a
/// zero-byte object give the full object ([`crate::range::resolve`]).
///
/// Every 200, 206 and 416 carries `Accept-Ranges: bytes`; 200 and 206 carry Content-Length,
/// ETag, Last-Modified, the revision's expiry (`rangecache-expires`, when it has one, as does
/// a 304) and the stored headers, except that a 206 answering a holding If-Range
/// sends of the stored headers only Cache-Control and Expires (§15.3.7: the client already has
/// the others). A 416 carries `Content-Range: bytes */SIZE`, `Content-Length: 0` and no body.
///
/// HEAD plans exactly as GET without the Range and without a body. Other methods plan as HEAD
/// (their preconditions are what matters; `If-None-Match` then fails with 412).
///
/// Several windows are sent as `multipart/byteranges` (§14.6) whose boundary is derived from
/// the validators ([`multipart_boundary`]), so the same request for the same revision always
/// gets the same bytes; each part carries the stored Content-Type, if any, and its
/// Content-Range.
pub fn plan_response(
    req: &RequestHeaders<'_>,
    meta: &ObjectMeta,
    limits: &RangeLimits,
) -> ResponsePlan {
    plan_response_with(req, meta, limits, &mut PlanSpare::default())
}

/// [`plan_response`], writing the field values into the strings of `spare`, which a host that
/// plans one answer after another refills with each plan it is done with
/// ([`PlanSpare::recycle`]), so that a plan allocates next to nothing.
pub fn plan_response_with(
    req: &RequestHeaders<'_>,
    meta: &ObjectMeta,
    limits: &RangeLimits,
    spare: &mut PlanSpare,
) -> ResponsePlan {
    match evaluate_preconditions(req, meta) {
        Precondition::Proceed => {}
        Precondition::NotModified => return not_modified(meta, spare),
        Precondition::Failed => return precondition_failed(spare),
    }
    let is_get = req.method == Method::GET;
    let range = if is_get { req.range.and_then(parse_range) } else { None };
    let Some(specs) = range else {
        return full(meta, is_get, spare);
    };
    // RFC 9110 §13.1.5: If-Range only matters with a Range; when it does not hold, the Range
    // is ignored and the full current representation is sent.
    let if_range_held = match req.if_range {
        None => false,
        Some(value) if if_range_holds(value, meta) => true,
        Some(_) => return full(meta, is_get, spare),
    };
    match resolve(&specs, meta.size, limits) {
        Resolved::Full => full(meta, is_get, spare),
        Resolved::Unsatisfiable => unsatisfiable(meta, spare),
        Resolved::Partial(windows) => partial(meta, &windows, if_range_held, spare),
    }
}

/// The strings and the header list of plans a host is done with, for the next plan to write
/// into (see [`plan_response_with`]). It holds at most the values of the last plan handed back.
#[derive(Debug, Default)]
pub struct PlanSpare {
    headers: Vec<(HeaderName, String)>,
    strings: Vec<String>,
}

// The helpers below are inlined into the native build, where a plan without a spare then costs
// what it did before there was one; the module, built for size, keeps one copy of each.
impl PlanSpare {
    /// An empty one (a `const` function, for a `static` or `thread_local!` holder).
    pub const fn new() -> PlanSpare {
        PlanSpare { headers: Vec::new(), strings: Vec::new() }
    }

    /// Keeps `plan`'s header list and field values for the next plan.
    pub fn recycle(&mut self, plan: ResponsePlan) {
        let mut headers = plan.headers;
        let n = headers.len();
        self.strings.extend(headers.drain(..).map(|(_, value)| value));
        // A plan may use fewer spare strings than it hands back (a value made otherwise); what
        // is kept is bounded by the plan handed back last.
        self.strings.truncate(n);
        self.headers = headers;
    }

    /// An empty header list with room for `n` fields.
    #[cfg_attr(not(target_family = "wasm"), inline(always))]
    fn list(&mut self, n: usize) -> Vec<(HeaderName, String)> {
        if self.headers.capacity() == 0 {
            // Allocated at its size at once, as a plan without a spare always is.
            return Vec::with_capacity(n);
        }
        let mut list = std::mem::take(&mut self.headers);
        list.clear();
        list.reserve(n);
        list
    }

    /// A spare string with `write` written into it, or `fresh()` when none is left (which
    /// allocates the string at its size at once, as a plan without a spare always does).
    #[cfg_attr(not(target_family = "wasm"), inline(always))]
    fn make(&mut self, fresh: impl FnOnce() -> String, write: impl FnOnce(&mut String)) -> String {
        match self.strings.pop() {
            Some(mut string) => {
                string.clear();
                write(&mut string);
                string
            }
            None => fresh(),
        }
    }

    /// `text` in a string.
    #[cfg_attr(not(target_family = "wasm"), inline(always))]
    fn text(&mut self, text: &str) -> String {
        self.make(|| text.to_owned(), |string| string.push_str(text))
    }

    /// `n` in decimal.
    #[cfg_attr(not(target_family = "wasm"), inline(always))]
    fn decimal(&mut self, n: u64) -> String {
        self.text(itoa::Buffer::new().format(n))
    }

    /// `at` as an IMF-fixdate.
    #[cfg_attr(not(target_family = "wasm"), inline(always))]
    fn date(&mut self, at: Timestamp) -> String {
        self.make(|| format_http_date(at), |s| write_http_date(s, at))
    }
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since`
/// against `meta` in the order of RFC 9110 §13.2.2.
///
/// * An If-Match that does not parse holds for no representation (§13.1.1 step 3): 412.
/// * An If-None-Match that does not parse matches nothing and is otherwise ignored, though
///   its presence still turns off If-Modified-Since (§13.1.3).
/// * A date field that is not one valid HTTP-date (a list of dates included) is ignored
///   (§13.1.3, §13.1.4). Dates compare at one-second resolution.
/// * If-Modified-Since counts only for GET and HEAD.
pub fn evaluate_preconditions(req: &RequestHeaders<'_>, meta: &ObjectMeta) -> Precondition {
    let is_get_or_head = req.method == Method::GET || req.method == Method::HEAD;
    // Steps 1 and 2: If-Unmodified-Since is only looked at when If-Match is absent.
    if let Some(value) = req.if_match {
        if !EtagList::value_matches_strong(value, &meta.etag) {
            return Precondition::Failed;
        }
    } else if let Some(date) = req.if_unmodified_since.and_then(parse_http_date)
        && meta.last_modified.as_secs() > date.as_secs()
    {
        return Precondition::Failed;
    }
    // Steps 3 and 4: a present If-None-Match makes If-Modified-Since irrelevant.
    if let Some(value) = req.if_none_match {
        if EtagList::value_matches_weak(value, &meta.etag) {
            return if is_get_or_head { Precondition::NotModified } else { Precondition::Failed };
        }
    } else if is_get_or_head
        && let Some(date) = req.if_modified_since.and_then(parse_http_date)
        && meta.last_modified.as_secs() <= date.as_secs()
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// True if an `If-Range` value holds for `meta`, so the Range may be honoured (RFC 9110
/// §13.1.5): an entity-tag must match by strong comparison (a weak one never does); a date
/// must equal Last-Modified exactly and Last-Modified must be strong
/// ([`ObjectMeta::is_last_modified_strong`]); anything else does not hold.
pub fn if_range_holds(if_range: &str, meta: &ObjectMeta) -> bool {
    let value = if_range.trim_matches([' ', '\t']);
    if value.starts_with('"') || value.starts_with("W/") {
        return meta.etag.strong_eq_value(value);
    }
    parse_http_date(value).is_some_and(|date| {
        meta.is_last_modified_strong() && date.as_secs() == meta.last_modified.as_secs()
    })
}

/// True if a write carrying these `If-Match` and `If-None-Match` values may replace `current`,
/// the live (unexpired) revision or `None` (SPEC §3, RFC 9110 §13.1.1–13.1.2, in the order of
/// §13.2.2); false means 412 and nothing stored.
///
/// `If-Match` is evaluated first: it allows the write only when a live revision exists and
/// matches strongly (`*`: any live revision); one that does not parse never allows it. Then
/// `If-None-Match`: `*` allows the write only when there is no live revision; a list of tags
/// refuses it when one matches the live revision weakly; one that does not parse is ignored.
/// When both are present both must hold.
pub fn is_write_allowed(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    current: Option<&ObjectMeta>,
) -> bool {
    write_allowed_for(if_match, if_none_match, current.map(|meta| &meta.etag))
}

fn write_allowed_for(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    current: Option<&EntityTag>,
) -> bool {
    let if_match_holds = if_match.is_none_or(|value| {
        current.is_some_and(|etag| EtagList::value_matches_strong(value, etag))
    });
    let if_none_match_holds = if_none_match
        .is_none_or(|value| current.is_none_or(|etag| !EtagList::value_matches_weak(value, etag)));
    if_match_holds && if_none_match_holds
}

/// The condition a write hands to the tiers, which check it atomically when they commit (the
/// authoritative tier judges it against its live revision with [`is_write_allowed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteGuard {
    /// Store unconditionally.
    None,
    /// Store only if no live revision exists (`If-None-Match: *`).
    IfAbsent,
    /// Store only if the live revision matches this `If-Match` value strongly (`*`: any).
    IfMatch(String),
}

/// How a write's `If-Match` and `If-None-Match` are evaluated (SPEC §3, RFC 9110 §13.2.2).
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteCheck {
    /// The tiers can evaluate the fields exactly at commit: hand them this guard.
    Guard(WriteGuard),
    /// The fields need the live revision (an `If-None-Match` listing entity-tags, or both
    /// fields at once): look up its entity-tag and ask [`write_guard_for`].
    NeedsCurrent,
}

/// Decides how a write's precondition fields are evaluated, before anything is looked up.
///
/// No field, `If-None-Match: *` alone, or `If-Match` alone map exactly onto a [`WriteGuard`]
/// the tiers enforce atomically. Anything else needs the live revision ([`write_guard_for`]).
pub fn write_check(if_match: Option<&str>, if_none_match: Option<&str>) -> WriteCheck {
    match (if_match, if_none_match) {
        (None, None) => WriteCheck::Guard(WriteGuard::None),
        (None, Some(value)) if EtagList::parse(value) == Some(EtagList::Any) => {
            WriteCheck::Guard(WriteGuard::IfAbsent)
        }
        (Some(value), None) => WriteCheck::Guard(WriteGuard::IfMatch(value.to_owned())),
        _ => WriteCheck::NeedsCurrent,
    }
}

/// Evaluates a write's `If-Match` and `If-None-Match` against `current`, the entity-tag of the
/// live revision looked up for [`WriteCheck::NeedsCurrent`] (`None`: no live revision).
///
/// `None` means the preconditions fail: 412, nothing stored. Otherwise the guard pins the
/// write to the state the fields were judged against (`IfAbsent`, or `IfMatch` of that
/// revision's tag), so that if another write commits between the lookup and this commit, the
/// tiers refuse this one (412) rather than apply it to a revision nobody evaluated.
pub fn write_guard_for(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    current: Option<&EntityTag>,
) -> Option<WriteGuard> {
    if !write_allowed_for(if_match, if_none_match, current) {
        return None;
    }
    Some(match current {
        None => WriteGuard::IfAbsent,
        Some(etag) => WriteGuard::IfMatch(etag.to_string()),
    })
}

/// The `multipart/byteranges` boundary for a revision: `rangecache-` and 32 hex digits of the
/// SHA-256 of its ETag, Last-Modified and size.
///
/// The core has no randomness, and a boundary that depends only on the revision keeps plans
/// reproducible (the same request always gets the same bytes, which also lets caches in front
/// compare them). A hash of the validators is vanishingly unlikely to occur in the object's
/// bytes unless the writer chose those bytes to contain it, which only spoils the writer's own
/// multipart answers.
pub fn multipart_boundary(meta: &ObjectMeta) -> String {
    let mut hasher = Sha256::new();
    hasher.update(meta.etag.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(meta.last_modified.as_millis().to_be_bytes());
    hasher.update(meta.size.to_be_bytes());
    let digest = hasher.finalize();
    format!("rangecache-{}", hex::encode(&digest[..16]))
}

// Stored fields a 304 still sends (RFC 9110 §15.4.5) and a 206 answering an If-Range still
// sends (§15.3.7); the others describe the representation the client already has.
const CACHE_UPDATE: &[&str] = &["cache-control", "content-location", "expires", "vary"];

/// `fields`, then ETag, Last-Modified and, when the revision expires, [`EXPIRES_HEADER`], then
/// the stored fields passing `keep`: what every answer
/// describing the revision (200, 206, 304) carries. The expiry lets a downstream rangecache
/// whose remote tier caches this answer drop its copy when the object expires here (SPEC §3:
/// expired objects are never served); it is written to the second, rounded down, so a copy
/// never outlives the original.
///
/// The list is allocated once, with room for `fields` first, the validators, then every stored
/// field passing `keep`.
fn describing(
    meta: &ObjectMeta,
    fields: impl ExactSizeIterator<Item = (HeaderName, String)>,
    keep: impl Fn(&str) -> bool,
    spare: &mut PlanSpare,
) -> Vec<(HeaderName, String)> {
    let mut headers = spare.list(fields.len() + 3 + meta.headers.len());
    headers.extend(fields);
    let etag = spare.make(|| meta.etag.to_field_value(), |s| meta.etag.write_field_value(s));
    headers.push((ETAG, etag));
    headers.push((LAST_MODIFIED, spare.date(meta.last_modified)));
    if let Some(expires) = meta.expires {
        headers.push((HeaderName::from_static(EXPIRES_HEADER), spare.date(expires)));
    }
    for (name, value) in stored(meta, keep) {
        headers.push((name, spare.text(value)));
    }
    headers
}

/// Stored headers that pass `keep`, skipping every name that is never stored
/// ([`is_stored_header`]: it covers each field the core plans itself, so a stored copy can
/// neither duplicate nor contradict one) and anything that is not a valid field name and value
/// (a corrupt store, or an older one, must not reach the wire).
fn stored(
    meta: &ObjectMeta,
    keep: impl Fn(&str) -> bool,
) -> impl Iterator<Item = (HeaderName, &str)> {
    meta.headers.iter().filter(move |(name, _)| keep(name)).filter_map(|(name, value)| {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let sendable = is_field_value(value) && is_stored_header(name.as_str());
        sendable.then_some((name, value.as_str()))
    })
}

/// True if `value` is a field value `http` accepts (`HeaderValue::from_str`): visible ASCII,
/// spaces and tabs; checked in place rather than by building a `HeaderValue` to throw away.
fn is_field_value(value: &str) -> bool {
    value.bytes().all(|b| (b >= b' ' && b != 0x7f) || b == b'\t')
}

fn full(meta: &ObjectMeta, with_body: bool, spare: &mut PlanSpare) -> ResponsePlan {
    let fields = [(ACCEPT_RANGES, spare.text("bytes")), (CONTENT_LENGTH, spare.decimal(meta.size))];
    let headers = describing(meta, fields.into_iter(), |_| true, spare);
    let body = if with_body { Body::Full } else { Body::None };
    ResponsePlan { status: StatusCode::OK, headers, body }
}

fn partial(
    meta: &ObjectMeta,
    windows: &[Window],
    if_range_held: bool,
    spare: &mut PlanSpare,
) -> ResponsePlan {
    let keep_stored = |name: &str| !if_range_held || CACHE_UPDATE.contains(&name);
    if let [window] = windows {
        let (window, size) = (*window, meta.size);
        let range =
            spare.make(|| content_range(window, size), |s| write_content_range(s, window, size));
        let fields = [
            (ACCEPT_RANGES, spare.text("bytes")),
            (CONTENT_LENGTH, spare.decimal(window.len())),
            (CONTENT_RANGE, range),
        ];
        let headers = describing(meta, fields.into_iter(), keep_stored, spare);
        return ResponsePlan {
            status: StatusCode::PARTIAL_CONTENT,
            headers,
            body: Body::Window(window),
        };
    }
    let boundary = multipart_boundary(meta);
    let part_type = stored(meta, |name| name == "content-type")
        .next()
        .map(|(_, value)| format!("Content-Type: {value}\r\n"))
        .unwrap_or_default();
    let parts: Vec<Part> = windows
        .iter()
        .enumerate()
        .map(|(i, window)| {
            // RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it; the first delimiter
            // opens the body and needs none.
            let crlf = if i == 0 { "" } else { "\r\n" };
            let range = content_range(*window, meta.size);
            let head = format!("{crlf}--{boundary}\r\n{part_type}Content-Range: {range}\r\n\r\n");
            Part { head, window: *window }
        })
        .collect();
    let closing = format!("\r\n--{boundary}--\r\n");
    if multipart_len(&parts, &closing).is_none() {
        // Only an object within a few kilobytes of 2^64 bytes (a size a corrupt store or a
        // confused upstream can claim) gets here; RFC 9110 §14.2 lets a server ignore Range.
        return full(meta, true, spare);
    }
    let multipart_type = spare.make(
        || format!("multipart/byteranges; boundary={boundary}"),
        |s| {
            s.push_str("multipart/byteranges; boundary=");
            s.push_str(&boundary);
        },
    );
    let body = Body::Multipart { boundary, parts, closing };
    let fields = [
        (ACCEPT_RANGES, spare.text("bytes")),
        (CONTENT_LENGTH, spare.decimal(body.len(meta.size))),
        (CONTENT_TYPE, multipart_type),
    ];
    // The stored Content-Type moved into the parts (RFC 9110 §14.6).
    let keep = |name: &str| name != "content-type" && keep_stored(name);
    let headers = describing(meta, fields.into_iter(), keep, spare);
    ResponsePlan { status: StatusCode::PARTIAL_CONTENT, headers, body }
}

/// Bytes of a multipart body: part heads, windows and the closing delimiter; `None` past
/// `u64::MAX`.
fn multipart_len(parts: &[Part], closing: &str) -> Option<u64> {
    parts.iter().try_fold(closing.len() as u64, |total, part| {
        total.checked_add(part.head.len() as u64)?.checked_add(part.window.len())
    })
}

fn unsatisfiable(meta: &ObjectMeta, spare: &mut PlanSpare) -> ResponsePlan {
    let mut headers = spare.list(3);
    headers.push((ACCEPT_RANGES, spare.text("bytes")));
    headers.push((CONTENT_LENGTH, spare.text("0")));
    let size = meta.size;
    let range = spare.make(
        || unsatisfied_content_range(size),
        |s| {
            s.push_str("bytes */");
            s.push_str(itoa::Buffer::new().format(size));
        },
    );
    headers.push((CONTENT_RANGE, range));
    ResponsePlan { status: StatusCode::RANGE_NOT_SATISFIABLE, headers, body: Body::None }
}

fn not_modified(meta: &ObjectMeta, spare: &mut PlanSpare) -> ResponsePlan {
    // RFC 9110 §15.4.5: the validators and the cache-update fields, nothing describing a body
    // (no Content-Length: a 304 answers a conditional request whose client has the content).
    let keep = |name: &str| CACHE_UPDATE.contains(&name);
    let headers = describing(meta, std::iter::empty(), keep, spare);
    ResponsePlan { status: StatusCode::NOT_MODIFIED, headers, body: Body::None }
}

fn precondition_failed(spare: &mut PlanSpare) -> ResponsePlan {
    let mut headers = spare.list(1);
    headers.push((CONTENT_LENGTH, spare.text("0")));
    ResponsePlan { status: StatusCode::PRECONDITION_FAILED, headers, body: Body::None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    const LM: &str = "Sat, 29 Oct 1994 19:43:31 GMT";
    const EARLIER: &str = "Fri, 28 Oct 1994 19:43:31 GMT";
    const LATER: &str = "Sun, 30 Oct 1994 19:43:31 GMT";

    fn meta() -> ObjectMeta {
        ObjectMeta {
            size: 100,
            etag: EntityTag::strong("v1").unwrap(),
            last_modified: parse_http_date(LM).unwrap(),
            headers: vec![("content-type".into(), "text/plain".into())],
            expires: None,
        }
    }

    #[track_caller]
    fn check_pre(method: Method, fields: &[(&str, &str)], expect: Precondition) {
        let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let req = RequestHeaders {
            method: &method,
            if_match: field("if-match"),
            if_none_match: field("if-none-match"),
            if_modified_since: field("if-modified-since"),
            if_unmodified_since: field("if-unmodified-since"),
            range: None,
            if_range: None,
        };
        assert_eq!(evaluate_preconditions(&req, &meta()), expect, "{method} {fields:?}");
    }

    #[test]
    fn a_field_value_is_checked_as_http_checks_it() {
        use http::HeaderValue;
        for byte in 0..=u8::MAX {
            let value = format!("a{}b", char::from(byte));
            assert_eq!(is_field_value(&value), HeaderValue::from_str(&value).is_ok(), "{byte:#x}");
        }
    }

    #[test]
    fn preconditions_are_evaluated_in_the_order_of_section_13_2_2() {
        use Precondition::*;
        check_pre(Method::GET, &[], Proceed);
        check_pre(Method::GET, &[("if-match", "\"v1\"")], Proceed);
        check_pre(Method::GET, &[("if-match", "\"v0\""), ("if-none-match", "\"v1\"")], Failed);
        check_pre(
            Method::GET,
            &[("if-match", "\"v1\""), ("if-unmodified-since", EARLIER)],
            Proceed,
        );
        check_pre(Method::GET, &[("if-unmodified-since", EARLIER)], Failed);
        check_pre(Method::GET, &[("if-unmodified-since", LM)], Proceed);
        check_pre(Method::GET, &[("if-none-match", "\"v1\"")], NotModified);
        check_pre(Method::HEAD, &[("if-none-match", "*")], NotModified);
        check_pre(Method::PUT, &[("if-none-match", "*")], Failed);
        check_pre(
            Method::GET,
            &[("if-none-match", "\"v0\""), ("if-modified-since", LATER)],
            Proceed,
        );
        check_pre(Method::GET, &[("if-modified-since", LM)], NotModified);
        check_pre(Method::GET, &[("if-modified-since", EARLIER)], Proceed);
        // If-Modified-Since means nothing to methods other than GET and HEAD (§13.1.3).
        check_pre(Method::DELETE, &[("if-modified-since", LATER)], Proceed);
        check_pre(
            Method::GET,
            &[("if-unmodified-since", EARLIER), ("if-modified-since", LM)],
            Failed,
        );
    }

    #[test]
    fn a_spare_keeps_no_more_strings_than_the_last_plan_handed_back() {
        // Every kind of answer in turn through one spare, many times over: what it keeps must
        // not grow with the number of plans (a 416 and a multipart 206 each make a value that
        // no other answer does).
        let (meta, get, limits) = (meta(), Method::GET, RangeLimits::default());
        let with = |range| RequestHeaders { range: Some(range), ..RequestHeaders::new(&get) };
        let requests = [
            RequestHeaders::new(&get),
            with("bytes=0-9"),
            with("bytes=0-0,50-59"),
            with("bytes=500-"),
            RequestHeaders { if_none_match: Some("\"v1\""), ..RequestHeaders::new(&get) },
            RequestHeaders { if_match: Some("\"v0\""), ..RequestHeaders::new(&get) },
        ];
        let mut spare = PlanSpare::new();
        for _ in 0..1_000 {
            for req in &requests {
                let plan = plan_response_with(req, &meta, &limits, &mut spare);
                assert_eq!(plan, plan_response(req, &meta, &limits));
                let n = plan.headers.len();
                spare.recycle(plan);
                assert!(spare.strings.len() <= n, "{} strings kept", spare.strings.len());
            }
        }
    }

    #[test]
    fn a_multipart_body_too_large_to_count_is_answered_with_the_whole_object() {
        // A size near 2^64 can only come from a corrupt store or a confused upstream; the
        // part heads would push Content-Length past u64::MAX, so the Range is ignored.
        let mut meta = meta();
        meta.size = u64::MAX;
        let mut req = RequestHeaders::new(&Method::GET);
        req.range = Some("bytes=0-18446744073709551400,-100");
        let plan = plan_response(&req, &meta, &RangeLimits::default());
        assert_eq!(plan.status, StatusCode::OK);
        assert_eq!(plan.body, Body::Full);
        assert_eq!(plan.header(&CONTENT_LENGTH), Some(u64::MAX.to_string().as_str()));
    }

    #[test]
    fn dates_compare_at_one_second_resolution() {
        let mut meta = meta();
        meta.last_modified = Timestamp::from_millis(meta.last_modified.as_millis() + 999);
        let method = Method::GET;
        let req = RequestHeaders { if_modified_since: Some(LM), ..RequestHeaders::new(&method) };
        assert_eq!(evaluate_preconditions(&req, &meta), Precondition::NotModified);
        let req = RequestHeaders { if_unmodified_since: Some(LM), ..RequestHeaders::new(&method) };
        assert_eq!(evaluate_preconditions(&req, &meta), Precondition::Proceed);
    }

    #[test]
    fn if_range_holds_only_for_the_current_strong_tag() {
        for (value, holds) in [
            ("\"v1\"", true),
            (" \"v1\" ", true),
            ("W/\"v1\"", false),
            ("\"v0\"", false),
            ("\"v1\", \"v2\"", false),
            (LM, false),
            (EARLIER, false),
            ("v1", false),
            ("", false),
        ] {
            assert_eq!(if_range_holds(value, &meta()), holds, "If-Range: {value}");
        }
    }

    #[test]
    fn conditional_writes_follow_spec_section_3() {
        let current = meta();
        for (if_match, if_none_match, present, allowed) in [
            (None, None, false, true),
            (None, None, true, true),
            (None, Some("*"), false, true),
            (None, Some("*"), true, false),
            (None, Some("W/\"v1\""), true, false),
            (None, Some("\"v0\""), true, true),
            (Some("\"v1\""), None, true, true),
            (Some("\"v1\""), None, false, false),
            (Some("W/\"v1\""), None, true, false),
            (Some("\"v0\", \"v1\""), None, true, true),
            (Some("*"), None, true, true),
            (Some("*"), None, false, false),
            (Some("garbage"), None, true, false),
            (Some("\"v1\""), Some("*"), true, false),
        ] {
            let current = present.then_some(&current);
            assert_eq!(
                is_write_allowed(if_match, if_none_match, current),
                allowed,
                "If-Match {if_match:?}, If-None-Match {if_none_match:?}, present {present}"
            );
        }
    }

    #[test]
    fn a_write_check_needs_the_live_revision_only_when_the_tiers_cannot_judge_alone() {
        use WriteCheck::*;
        assert_eq!(write_check(None, None), Guard(WriteGuard::None));
        assert_eq!(write_check(None, Some(" * ")), Guard(WriteGuard::IfAbsent));
        assert_eq!(
            write_check(Some("\"a\", \"b\""), None),
            Guard(WriteGuard::IfMatch("\"a\", \"b\"".into()))
        );
        assert_eq!(
            write_check(Some("garbage"), None),
            Guard(WriteGuard::IfMatch("garbage".into()))
        );
        assert_eq!(write_check(None, Some("\"a\"")), NeedsCurrent);
        assert_eq!(write_check(None, Some("garbage")), NeedsCurrent);
        assert_eq!(write_check(Some("\"a\""), Some("*")), NeedsCurrent);
        assert_eq!(write_check(Some("\"a\""), Some("\"b\"")), NeedsCurrent);
    }

    #[test]
    fn a_write_guard_pins_the_revision_the_fields_were_judged_against() {
        let v1 = EntityTag::strong("v1").unwrap();
        let pinned = Some(WriteGuard::IfMatch("\"v1\"".into()));
        for (if_match, if_none_match, current, expect) in [
            // If-None-Match with tags: 412 when one matches (weakly), else proceed.
            (None, Some("\"v1\""), Some(&v1), None),
            (None, Some("W/\"v1\""), Some(&v1), None),
            (None, Some("\"v0\", \"v2\""), Some(&v1), pinned.clone()),
            (None, Some("\"v1\""), None, Some(WriteGuard::IfAbsent)),
            (None, Some("garbage"), Some(&v1), pinned.clone()),
            // If-Match first, then If-None-Match.
            (Some("\"v1\""), Some("\"v0\""), Some(&v1), pinned.clone()),
            (Some("\"v1\""), Some("\"v1\""), Some(&v1), None),
            (Some("\"v0\""), Some("\"v2\""), Some(&v1), None),
            (Some("*"), Some("\"v2\""), Some(&v1), pinned.clone()),
            (Some("*"), Some("\"v2\""), None, None),
            (Some("\"v1\""), Some("*"), Some(&v1), None),
            (Some("\"v1\""), Some("*"), None, None),
        ] {
            assert_eq!(
                write_guard_for(if_match, if_none_match, current),
                expect,
                "If-Match {if_match:?}, If-None-Match {if_none_match:?}, current {current:?}"
            );
        }
    }

    #[test]
    fn the_boundary_is_a_valid_token_fixed_per_revision() {
        let a = multipart_boundary(&meta());
        assert_eq!(a, multipart_boundary(&meta()));
        assert!(a.len() <= 70, "RFC 2046 §5.1.1 allows at most 70 characters");
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        let mut other = meta();
        other.etag = EntityTag::strong("v2").unwrap();
        assert_ne!(a, multipart_boundary(&other));
    }

    #[test]
    fn a_full_plan_lists_generated_headers_then_stored_ones() {
        let mut meta = meta();
        meta.headers.push(("etag".into(), "\"forged\"".into()));
        meta.headers.push(("content-length".into(), "1".into()));
        meta.headers.push(("connection".into(), "close".into()));
        meta.headers.push(("x-build".into(), "7".into()));
        meta.headers.push(("x-bad".into(), "line\nbreak".into()));
        meta.headers.push(("bad name".into(), "x".into()));
        let method = Method::GET;
        let plan = plan_response(&RequestHeaders::new(&method), &meta, &RangeLimits::default());
        let names: Vec<&str> = plan.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["accept-ranges", "content-length", "etag", "last-modified", "content-type", "x-build"]
        );
        assert_eq!(plan.header(&ETAG), Some("\"v1\""));
        assert_eq!(plan.body, Body::Full);
    }

    #[test]
    fn answers_describing_the_revision_carry_its_expiry_and_no_other_does() {
        let meta = ObjectMeta { expires: Some(Timestamp::from_millis(784_111_777_999)), ..meta() };
        let expiry = "Sun, 06 Nov 1994 08:49:37 GMT";
        let get = Method::GET;
        for (fields, status, carries) in [
            (RequestHeaders::new(&get), StatusCode::OK, true),
            (
                RequestHeaders { range: Some("bytes=0-9"), ..RequestHeaders::new(&get) },
                StatusCode::PARTIAL_CONTENT,
                true,
            ),
            (
                RequestHeaders { range: Some("bytes=0-0,50-59"), ..RequestHeaders::new(&get) },
                StatusCode::PARTIAL_CONTENT,
                true,
            ),
            (
                RequestHeaders { if_none_match: Some("\"v1\""), ..RequestHeaders::new(&get) },
                StatusCode::NOT_MODIFIED,
                true,
            ),
            (
                RequestHeaders { if_match: Some("\"v0\""), ..RequestHeaders::new(&get) },
                StatusCode::PRECONDITION_FAILED,
                false,
            ),
            (
                RequestHeaders { range: Some("bytes=500-"), ..RequestHeaders::new(&get) },
                StatusCode::RANGE_NOT_SATISFIABLE,
                false,
            ),
        ] {
            let plan = plan_response(&fields, &meta, &RangeLimits::default());
            assert_eq!(plan.status, status);
            let name = HeaderName::from_static(EXPIRES_HEADER);
            assert_eq!(plan.header(&name), carries.then_some(expiry), "{status}");
        }
        let plan = plan_response(
            &RequestHeaders::new(&get),
            &super::tests::meta(),
            &RangeLimits::default(),
        );
        assert_eq!(plan.header(&HeaderName::from_static(EXPIRES_HEADER)), None, "never expires");
    }

    #[test]
    fn a_multipart_body_counts_every_delimiter_and_header() {
        let method = Method::GET;
        let req =
            RequestHeaders { range: Some("bytes=0-9,990-999"), ..RequestHeaders::new(&method) };
        let meta = ObjectMeta { size: 1000, ..meta() };
        let plan = plan_response(&req, &meta, &RangeLimits::default());
        let Body::Multipart { boundary, parts, closing } = &plan.body else {
            panic!("two distant ranges are multipart: {plan:?}");
        };
        assert_eq!(
            parts[0].head,
            format!(
                "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-9/1000\r\n\r\n"
            )
        );
        assert_eq!(
            parts[1].head,
            format!(
                "\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 990-999/1000\r\n\r\n"
            )
        );
        let expected_len = parts[0].head.len() + 10 + parts[1].head.len() + 10 + closing.len();
        assert_eq!(plan.header(&CONTENT_LENGTH), Some(expected_len.to_string().as_str()));
        assert_eq!(plan.body.len(1000), expected_len as u64);
    }
}
