//! Plans, resolved ranges and object descriptions, translated from the core's types into the
//! package's own wire forms, which `js/api.js` turns into plain objects: a plan as numbers and
//! one short text in buffers kept in wasm memory ([`Answer`]), the rest as one string of fields
//! separated by NUL.
//!
//! Building the result object field by field from Rust would cost a crossing and a UTF-8 decode
//! per name and value, ten times the plan itself. NUL never occurs in what is encoded: header
//! names and values are checked by the core (`HeaderValue` refuses control characters), and the
//! rest are numbers and tokens. The core's types never reach JavaScript, so the core can change
//! them freely.

use std::fmt::Write;

use http::Method;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, EXPIRES,
    HeaderName, LAST_MODIFIED,
};
use rangecache_core::conditional::plan_response;
use rangecache_core::object::select_stored_headers;
use rangecache_core::range::{parse_range, resolve};
use rangecache_core::read::is_definitive;
use rangecache_core::validators::parse_http_date;
use rangecache_core::{
    Body, EntityTag, ObjectMeta, RangeLimits, RequestHeaders, Resolved, Timestamp,
};

use crate::args::ObjectArg;

/// Separates the fields of the wire form.
pub(crate) const SEP: char = '\0';

/// The request fields a plan reads, as raw field values.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

// The placeholder entity-tag planned against when the caller gave none. It never reaches the
// output (the ETag field is dropped), and no client can hold it, so only `*` matches it in
// If-Match and If-None-Match and an If-Range with an entity-tag never holds, as RFC 9110 §13.1
// requires for a representation without one.
const NO_ETAG: &str = "rangecache-wasm:no-entity-tag";

/// A plan's answer as `js/api.js` reads it straight from wasm memory, in buffers kept from call
/// to call (no allocation, copy or free at the boundary): `nums`, read as a `Float64Array`, and
/// `text`, decoded once with `TextDecoder`.
///
/// `nums` is `textPtr, textLen, status, n, n × (name, value), body` where body is `0` (none),
/// `1` (full), `2, start, end` (range) or `3, boundary, closing, n, n × (start, end, head)`
/// (multipart). Each string is two numbers `a, b`: `a >= 0` is the UTF-8 bytes `[a, a + b)` of
/// the text, `a = -1` the constant `KNOWN[b]`, and `a = -2` the `b`-th
/// string JavaScript encoded from the object (entity-tag, date, then each stored name and
/// value), which saves decoding what the plan only echoes.
pub(crate) struct Answer {
    pub nums: Vec<f64>,
    pub text: Vec<u8>,
}

/// The validators of the object as JavaScript encoded them, which the answer may refer to (the
/// stored fields are referred to in the object's own order).
pub(crate) struct Inputs<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
}

impl Answer {
    pub(crate) const fn new() -> Answer {
        Answer { nums: Vec::new(), text: Vec::new() }
    }

    fn clear(&mut self) {
        self.nums.clear();
        self.text.clear();
        // Filled in by `finish`.
        self.nums.extend_from_slice(&[0.0, 0.0]);
    }

    fn number(&mut self, n: u64) {
        // Exact: every number written is a size or a status, below 2^53.
        self.nums.push(n as f64);
    }

    fn string(&mut self, s: &str) {
        self.nums.extend_from_slice(&[self.text.len() as f64, s.len() as f64]);
        self.text.extend_from_slice(s.as_bytes());
    }

    /// A field name: a known one as its constant (standard names compare without their bytes).
    fn name(&mut self, name: &HeaderName) {
        match KNOWN_HEADERS.iter().position(|k| k == name) {
            Some(idx) => self.nums.extend_from_slice(&[-1.0, idx as f64]),
            None => self.string(name.as_str()),
        }
    }

    /// A field value: `bytes` (Accept-Ranges) as its constant.
    fn value(&mut self, s: &str) {
        if s == KNOWN[KNOWN_NAMES] {
            self.nums.extend_from_slice(&[-1.0, KNOWN_NAMES as f64]);
        } else {
            self.string(s);
        }
    }

    fn reference(&mut self, idx: usize) {
        self.nums.extend_from_slice(&[-2.0, idx as f64]);
    }

    fn finish(&mut self) {
        self.nums[0] = self.text.as_ptr() as usize as f64;
        self.nums[1] = self.text.len() as f64;
    }
}

/// The core's request view of `request` against an object with or without a date.
fn request_headers<'a>(request: &'a Request<'a>, has_date: bool) -> RequestHeaders<'a> {
    let mut req = RequestHeaders::new(&request.method);
    req.if_match = request.if_match;
    req.if_none_match = request.if_none_match;
    req.range = request.range;
    req.if_range = request.if_range;
    // RFC 9110 §13.1.3, §13.1.4: both date conditions are ignored for a representation that has
    // no modification date (the placeholder date would make them decide).
    if has_date {
        req.if_modified_since = request.if_modified_since;
        req.if_unmodified_since = request.if_unmodified_since;
    }
    req
}

/// Whether the plan for `request` is the final answer of a tier holding `object`: the core's
/// `read::is_definitive` (SPEC §4); hands back the object's metadata for reuse.
pub(crate) fn definitive(
    request: &Request<'_>,
    object: ObjectArg,
    limits: &RangeLimits,
) -> (bool, ObjectMeta) {
    let req = request_headers(request, object.last_modified.is_some());
    let meta = meta_of(object);
    let planned = plan_response(&req, &meta, limits);
    (is_definitive(&req, &meta, &planned, limits), meta)
}

/// Plans the answer to `request` for `object` with the core's `plan_response` into `out`;
/// hands back the object's metadata for reuse.
pub(crate) fn plan(
    request: &Request<'_>,
    object: ObjectArg,
    inputs: &Inputs<'_>,
    limits: &RangeLimits,
    out: &mut Answer,
) -> ObjectMeta {
    let has_etag = object.etag.is_some();
    let has_date = object.last_modified.is_some();
    let req = request_headers(request, has_date);
    let meta = meta_of(object);
    let planned = plan_response(&req, &meta, limits);
    out.clear();
    out.number(u64::from(planned.status.as_u16()));
    let count = out.nums.len();
    out.nums.push(0.0);
    let mut n = 0;
    for (name, value) in &planned.headers {
        // Without a validator the placeholder's is never shown.
        if (!has_etag && name == ETAG) || (!has_date && name == LAST_MODIFIED) {
            continue;
        }
        n += 1;
        out.name(name);
        match echoed(name, value, inputs, &meta.headers) {
            Some(idx) => out.reference(idx),
            None => out.value(value),
        }
    }
    out.nums[count] = f64::from(n);
    match &planned.body {
        Body::None => out.number(0),
        Body::Full => out.number(1),
        Body::Window(window) => {
            out.number(2);
            out.number(window.start());
            out.number(window.end());
        }
        Body::Multipart { boundary, parts, closing } => {
            out.number(3);
            out.string(boundary);
            out.string(closing);
            out.number(parts.len() as u64);
            for part in parts {
                out.number(part.window.start());
                out.number(part.window.end());
                out.string(&part.head);
            }
        }
    }
    out.finish();
    meta
}

/// Which of the object's strings, if any, is exactly `value` of the planned field `name`.
fn echoed(
    name: &HeaderName,
    value: &str,
    inputs: &Inputs<'_>,
    stored: &[(String, String)],
) -> Option<usize> {
    if name == ETAG {
        (inputs.etag == Some(value)).then_some(0)
    } else if name == LAST_MODIFIED {
        (inputs.last_modified == Some(value)).then_some(1)
    } else {
        let name = name.as_str();
        stored.iter().position(|(n, v)| n == name && v == value).map(|i| 3 + 2 * i)
    }
}

/// The core's metadata for an object described from JavaScript; a missing entity-tag or date
/// is replaced by a placeholder that no client can match (see `NO_ETAG`).
pub(crate) fn meta_of(object: ObjectArg) -> ObjectMeta {
    ObjectMeta {
        size: object.size,
        // Built directly: the placeholder's characters are known to be valid etagc.
        etag: object.etag.unwrap_or_else(|| EntityTag { weak: false, opaque: NO_ETAG.to_owned() }),
        last_modified: object.last_modified.unwrap_or(Timestamp::from_millis(0)),
        headers: object.headers,
        expires: None,
    }
}

/// Resolves a Range field value against `size` with the core's `parse_range` and `resolve`,
/// encoded as `full`, `unsatisfiable` or `partial, n × (start, end)`; an absent or invalid
/// Range selects the whole object.
pub(crate) fn resolve_range(range: Option<&str>, size: u64, limits: &RangeLimits) -> String {
    let Some(specs) = range.and_then(parse_range) else {
        return "full".to_owned();
    };
    match resolve(&specs, size, limits) {
        Resolved::Full => "full".to_owned(),
        Resolved::Unsatisfiable => "unsatisfiable".to_owned(),
        Resolved::Partial(windows) => {
            let mut out = String::from("partial");
            out.push(SEP);
            for window in windows {
                push_number(&mut out, window.start());
                push_number(&mut out, window.end());
            }
            out.pop();
            out
        }
    }
}

/// Describes a response from its fields, encoded as `size, etag, lastModified, n × (name,
/// value)` (empty when absent): Content-Length as the size, validators that parse, and the
/// stored end-to-end fields chosen by the core's `select_stored_headers`.
pub(crate) fn describe(fields: &[(&str, &str)]) -> String {
    let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.trim());
    let size = field("content-length")
        .filter(|v| !v.is_empty() && v.len() <= 15 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok());
    let etag = field("etag").and_then(EntityTag::parse);
    let last_modified = field("last-modified").filter(|v| parse_http_date(v).is_some());
    let stored = select_stored_headers(fields.iter().copied());
    let mut out = String::new();
    match size {
        Some(size) => push_number(&mut out, size),
        None => out.push(SEP),
    }
    match etag {
        Some(tag) => push(&mut out, tag),
        None => out.push(SEP),
    }
    push_str(&mut out, last_modified.unwrap_or(""));
    push_fields(&mut out, &stored);
    out.pop();
    out
}

/// Appends `value` and a separator.
fn push(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
    out.push(SEP);
}

/// Appends `n` in decimal and a separator, without the formatting machinery (a tenth of a call
/// went to formatting four numbers).
pub(crate) fn push_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
    out.push(SEP);
}

/// Appends `text` and a separator, without the formatting machinery.
fn push_str(out: &mut String, text: &str) {
    out.push_str(text);
    out.push(SEP);
}

/// Strings sent as their position here (`a = -1` in [`Answer`]): JavaScript then uses its own
/// constant, which makes the headers object as cheap to build as a literal, where a name sliced
/// from the answer must be hashed and interned first. `js/api.js` holds the same list in the same
/// order.
const KNOWN: [&str; 9] = [
    "accept-ranges",
    "content-length",
    "content-range",
    "content-type",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "bytes",
];

/// How many of `KNOWN` are field names; the rest are values.
const KNOWN_NAMES: usize = 8;

/// The field names of `KNOWN`, in the same order.
const KNOWN_HEADERS: [HeaderName; KNOWN_NAMES] = [
    ACCEPT_RANGES,
    CONTENT_LENGTH,
    CONTENT_RANGE,
    CONTENT_TYPE,
    ETAG,
    LAST_MODIFIED,
    CACHE_CONTROL,
    EXPIRES,
];

/// Appends `n, n × (name, value)`, a name of `KNOWN` as `\u{1}` and a letter (`a` for the
/// first); `api.js` joins a repeated name.
fn push_fields(out: &mut String, fields: &[(String, String)]) {
    push_number(out, fields.len() as u64);
    for (name, value) in fields {
        match KNOWN[..KNOWN_NAMES].iter().position(|k| k == name) {
            Some(idx) => {
                out.push('\u{1}');
                out.push(char::from(b'a' + idx as u8));
            }
            None => out.push_str(name),
        }
        out.push(SEP);
        out.push_str(value);
        out.push(SEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_headers_are_the_known_names_in_order() {
        let names: Vec<&str> = KNOWN_HEADERS.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, KNOWN[..KNOWN_NAMES]);
    }
}
