//! Plans, resolved ranges and object descriptions, translated from the core's types into the
//! package's own wire form: one string of fields separated by NUL, which `js/api.js` turns into
//! plain objects.
//!
//! One string per call is the cheapest way across the boundary: building the result object
//! field by field from Rust costs a crossing and a UTF-8 decode per name and value, ten times
//! the plan itself. NUL never occurs in what is encoded: header names and values are checked by
//! the core (`HeaderValue` refuses control characters), and the rest are numbers and tokens.
//! The core's types never reach JavaScript, so the core can change them freely.

use std::fmt::Write;

use http::Method;
use rangecache_core::conditional::plan_response;
use rangecache_core::object::select_stored_headers;
use rangecache_core::range::{parse_range, resolve};
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

/// Plans the answer to `request` for `object` with the core's `plan_response`, encoded as
/// `status, n, n × (name, value), body` where body is `none`, `full`, `range, start, end` or
/// `multipart, boundary, closing, n, n × (start, end, head)`.
pub(crate) fn plan(request: &Request<'_>, object: ObjectArg, limits: &RangeLimits) -> String {
    let has_etag = object.etag.is_some();
    let has_date = object.last_modified.is_some();
    let meta = meta_of(object);
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
    let planned = plan_response(&req, &meta, limits);
    let headers: Vec<(&str, &str)> = planned
        .headers
        .iter()
        .filter(|(name, _)| {
            (has_etag || name != http::header::ETAG)
                && (has_date || name != http::header::LAST_MODIFIED)
        })
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut out = String::with_capacity(256);
    push_number(&mut out, u64::from(planned.status.as_u16()));
    push_fields(&mut out, &headers);
    match &planned.body {
        Body::None => push_str(&mut out, "none"),
        Body::Full => push_str(&mut out, "full"),
        Body::Window(window) => {
            push_str(&mut out, "range");
            push_number(&mut out, window.start());
            push_number(&mut out, window.end());
        }
        Body::Multipart { boundary, parts, closing } => {
            push_str(&mut out, "multipart");
            push_str(&mut out, boundary);
            push_str(&mut out, closing);
            push_number(&mut out, parts.len() as u64);
            for part in parts {
                push_number(&mut out, part.window.start());
                push_number(&mut out, part.window.end());
                push_str(&mut out, &part.head);
            }
        }
    }
    out.pop();
    out
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
            for window in windows {
                let _ = write!(out, "{SEP}{}{SEP}{}", window.start(), window.end());
            }
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
    let stored: Vec<(&str, &str)> = stored.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
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
fn push_number(out: &mut String, mut n: u64) {
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

/// Field names sent as `\u{1}` and a letter (`a` for the first): JavaScript then uses its own
/// constant for the name, which makes the result object as cheap to build as a literal, where a
/// name sliced from the answer must be hashed and interned first. `js/api.js` holds the same
/// list in the same order.
const KNOWN_NAMES: [&str; 8] = [
    "accept-ranges",
    "content-length",
    "content-range",
    "content-type",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
];

/// The position of `name` in `KNOWN_NAMES`; a `match` compares lengths before bytes.
fn known_name(name: &str) -> Option<u8> {
    let idx = match name {
        "accept-ranges" => 0,
        "content-length" => 1,
        "content-range" => 2,
        "content-type" => 3,
        "etag" => 4,
        "last-modified" => 5,
        "cache-control" => 6,
        "expires" => 7,
        _ => return None,
    };
    debug_assert_eq!(KNOWN_NAMES[usize::from(idx)], name);
    Some(idx)
}

/// Appends `n, n × (name, value)`; `api.js` joins a repeated name.
fn push_fields(out: &mut String, fields: &[(&str, &str)]) {
    push_number(out, fields.len() as u64);
    for (name, value) in fields {
        match known_name(name) {
            Some(idx) => {
                out.push('\u{1}');
                out.push(char::from(b'a' + idx));
            }
            None => out.push_str(name),
        }
        out.push(SEP);
        out.push_str(value);
        out.push(SEP);
    }
}
