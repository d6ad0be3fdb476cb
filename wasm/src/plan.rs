//! Plans, resolved ranges and object descriptions, written into the [`Answer`] in the layout of
//! [`crate::wire`], which `js/api.js` turns into plain objects.
//!
//! A plan is `status, n, n × (name, value), body` where body is `code` (none, full), `code,
//! start, end` (range) or `code, boundary, closing, n, n × (start, end, head)` (multipart).
//! Known field names and `bytes` are sent as their [`KNOWN`](crate::wire::KNOWN) code, so
//! JavaScript builds the headers object from its own constants; a value the plan only echoes
//! from the object JavaScript gave is sent as a reference to that string. The core's types never
//! reach JavaScript, so the core can change them freely.

use http::Method;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, EXPIRES,
    HeaderName, LAST_MODIFIED,
};
use rangecache_core::conditional::{PlanSpare, plan_response_with};
use rangecache_core::object::{EXPIRES_HEADER, select_stored_headers};
use rangecache_core::range::{parse_range, resolve};
use rangecache_core::validators::parse_http_date;
use rangecache_core::{
    Body, EntityTag, ObjectMeta, RangeLimits, RequestHeaders, Resolved, ResponsePlan, Timestamp,
};

use crate::args::ObjectArg;
use crate::wire::{Answer, K};

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

/// The validators of the object as JavaScript encoded them, which the answer may refer to (the
/// stored fields are referred to in the object's own order).
pub(crate) struct Inputs<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
}

/// How one planned field is written.
pub(crate) enum Field {
    /// Not at all (a placeholder validator).
    Skip,
    /// As the `idx`-th string JavaScript encoded for the call.
    Echo(usize),
    /// As the value planned.
    Value,
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

/// Plans the answer to `request` for `object` with the core's `plan_response` into `out`,
/// writing the plan's values into `spare` and handing them back to it; hands back the object's
/// metadata for reuse.
pub(crate) fn plan(
    request: &Request<'_>,
    object: ObjectArg,
    inputs: &Inputs<'_>,
    limits: &RangeLimits,
    out: &mut Answer,
    spare: &mut PlanSpare,
) -> ObjectMeta {
    let has_etag = object.etag.is_some();
    let has_date = object.last_modified.is_some();
    let req = request_headers(request, has_date);
    let meta = meta_of(object);
    let planned = plan_response_with(&req, &meta, limits, spare);
    out.clear();
    write_plan(out, &planned, |name, value| {
        // Without a validator the placeholder's is never shown.
        if (!has_etag && name == ETAG) || (!has_date && name == LAST_MODIFIED) {
            return Field::Skip;
        }
        match echoed(name, value, inputs, &meta.headers) {
            Some(idx) => Field::Echo(idx),
            None => Field::Value,
        }
    });
    spare.recycle(planned);
    meta
}

/// Writes `planned` (see the module doc), each field as `field` says.
pub(crate) fn write_plan(
    out: &mut Answer,
    planned: &ResponsePlan,
    mut field: impl FnMut(&HeaderName, &str) -> Field,
) {
    out.number(u64::from(planned.status.as_u16()));
    let count = out.nums.len();
    out.nums.push(0.0);
    let mut n = 0;
    for (name, value) in &planned.headers {
        let how = field(name, value);
        if let Field::Skip = how {
            continue;
        }
        n += 1;
        write_name(out, name);
        match how {
            Field::Echo(idx) => out.callers(idx),
            Field::Value if value == "bytes" => out.known(K::Bytes),
            Field::Value | Field::Skip => out.string(value),
        }
    }
    out.nums[count] = f64::from(n);
    match &planned.body {
        Body::None => out.code(K::None),
        Body::Full => out.code(K::Full),
        Body::Window(window) => {
            out.code(K::Range);
            out.number(window.start());
            out.number(window.end());
        }
        Body::Multipart { boundary, parts, closing } => {
            out.code(K::Multipart);
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
}

/// A field name: a known one as its constant (standard names compare without their bytes).
fn write_name(out: &mut Answer, name: &HeaderName) {
    match KNOWN_HEADERS.iter().position(|k| k == name) {
        Some(idx) => out.known(K::ALL[idx]),
        None => out.string(name.as_str()),
    }
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
        // Each stored value follows its name, after the entity-tag, date and expiry.
        stored.iter().position(|(n, v)| n == name && v == value).map(|i| 4 + 2 * i)
    }
}

/// The core's metadata for an object described from JavaScript; a missing entity-tag or date
/// is replaced by a placeholder that no client can match (see `NO_ETAG`).
pub(crate) fn meta_of(object: ObjectArg) -> ObjectMeta {
    ObjectMeta {
        size: object.size,
        etag: object.etag.unwrap_or_else(no_etag),
        last_modified: object.last_modified.unwrap_or(Timestamp::from_millis(0)),
        headers: object.headers,
        expires: object.expires,
    }
}

/// The placeholder entity-tag (see `NO_ETAG`), built directly: its characters are known to be
/// valid etagc.
pub(crate) fn no_etag() -> EntityTag {
    EntityTag { weak: false, opaque: NO_ETAG.to_owned() }
}

/// True if `value` is the ETag field of the placeholder entity-tag.
pub(crate) fn is_no_etag(value: &str) -> bool {
    value.len() == NO_ETAG.len() + 2 && value.get(1..value.len() - 1) == Some(NO_ETAG)
}

/// Resolves a Range field value against `size` with the core's `parse_range` and `resolve`:
/// `code, n, n × (start, end)` with `code` full, partial or unsatisfiable; an absent or invalid
/// Range selects the whole object.
pub(crate) fn resolve_range(
    range: Option<&str>,
    size: u64,
    limits: &RangeLimits,
    out: &mut Answer,
) {
    let resolved = range.and_then(parse_range).map(|specs| resolve(&specs, size, limits));
    match resolved {
        None | Some(Resolved::Full) => out.code(K::Full),
        Some(Resolved::Unsatisfiable) => out.code(K::Unsatisfiable),
        Some(Resolved::Partial(windows)) => {
            out.code(K::Partial);
            out.number(windows.len() as u64);
            for window in windows {
                out.number(window.start());
                out.number(window.end());
            }
        }
    }
}

/// Describes a response from its fields: `size (-1 when absent), etag, lastModified, expires,
/// n, n × (name, value)` (optional strings): Content-Length as the size, validators that parse,
/// the expiry a rangecache origin names (`Rangecache-Expires`), and the stored end-to-end fields
/// chosen by the core's `select_stored_headers`.
pub(crate) fn describe(fields: &[(&str, &str)], out: &mut Answer) {
    let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.trim());
    let size = field("content-length")
        .filter(|v| !v.is_empty() && v.len() <= 15 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok());
    let etag = field("etag").and_then(EntityTag::parse);
    let date = |name: &str| field(name).filter(|v| parse_http_date(v).is_some());
    let stored = select_stored_headers(fields.iter().copied());
    match size {
        Some(size) => out.number(size),
        None => out.nums.push(-1.0),
    }
    out.optional(etag.map(|tag| tag.to_field_value()).as_deref());
    out.optional(date("last-modified"));
    out.optional(date(EXPIRES_HEADER));
    out.number(stored.len() as u64);
    for (name, value) in &stored {
        match KNOWN_HEADERS.iter().position(|k| k.as_str() == name) {
            Some(idx) => out.known(K::ALL[idx]),
            None => out.string(name),
        }
        out.string(value);
    }
}

/// The field names a plan sends as codes: the first codes of `KNOWN`, in the same order.
const KNOWN_HEADERS: [HeaderName; 8] = [
    ACCEPT_RANGES,
    CONTENT_LENGTH,
    CONTENT_RANGE,
    CONTENT_TYPE,
    ETAG,
    LAST_MODIFIED,
    CACHE_CONTROL,
    EXPIRES,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KNOWN;

    #[test]
    fn known_headers_are_the_first_known_strings_in_order() {
        let names: Vec<&str> = KNOWN_HEADERS.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, KNOWN[..KNOWN_HEADERS.len()]);
        assert_eq!(KNOWN[K::Bytes as usize], "bytes");
    }

    #[test]
    fn the_placeholder_entity_tag_is_recognised_by_its_field_value() {
        assert!(is_no_etag(&no_etag().to_field_value()));
        assert!(!is_no_etag("\"v1\""));
    }
}
