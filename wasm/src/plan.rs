//! The JavaScript-facing results of `planResponse` and `resolveRange`, and their translation
//! from the core's plans.
//!
//! These types are this crate's own: the core's `ResponsePlan` and `Resolved` never cross into
//! JavaScript, so the core can change its representation without changing the package.

use http::Method;
use rangecache_core::conditional::plan_response;
use rangecache_core::object::select_stored_headers;
use rangecache_core::range::{parse_range, resolve};
use rangecache_core::validators::parse_http_date;
use rangecache_core::{
    Body, EntityTag, ObjectMeta, RangeLimits, RequestHeaders, Resolved, Timestamp,
};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::args::{ObjectArg, Request};

/// `{ status, headers, body }`.
#[derive(serde::Serialize)]
pub(crate) struct PlanOut {
    status: u16,
    headers: Fields,
    body: BodyOut,
}

/// `body` of a plan, tagged by `kind`; positions are half-open `[start, end)`.
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum BodyOut {
    None,
    Full,
    Range {
        start: f64,
        end: f64,
    },
    Multipart {
        boundary: String,
        parts: Vec<PartOut>,
        /// The closing delimiter written after the last part.
        closing: String,
    },
}

/// One part of a multipart body.
#[derive(serde::Serialize)]
pub(crate) struct PartOut {
    start: f64,
    end: f64,
    /// The part's header fields, lower-case names.
    headers: Fields,
    /// The exact bytes written before the part's window: delimiter, headers, blank line.
    head: String,
}

/// `{ kind: "full" }`, `{ kind: "partial", ranges }` or `{ kind: "unsatisfiable" }`.
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum ResolvedOut {
    Full,
    Partial { ranges: Vec<RangeOut> },
    Unsatisfiable,
}

/// `{ start, end }`, half-open.
#[derive(serde::Serialize)]
pub(crate) struct RangeOut {
    start: f64,
    end: f64,
}

/// Header fields as a plain object whose keys keep the order the core planned them in.
pub(crate) struct Fields(Vec<(String, String)>);

// The placeholder entity-tag planned against when the caller gave none. It never reaches the
// output (the ETag field is dropped), and no client can hold it, so only `*` matches it in
// If-Match and If-None-Match and an If-Range with an entity-tag never holds, as RFC 9110 §13.1
// requires for a representation without one.
const NO_ETAG: &str = "rangecache-wasm:no-entity-tag";

/// Plans the answer to `request` for `object` with the core's `plan_response`.
pub(crate) fn plan(request: &Request, object: ObjectArg, limits: &RangeLimits) -> PlanOut {
    let has_etag = object.etag.is_some();
    let has_date = object.last_modified.is_some();
    let meta = meta_of(object);
    let method = request.method.clone().unwrap_or(Method::GET);
    let mut req = RequestHeaders::new(&method);
    req.if_match = request.if_match.as_deref();
    req.if_none_match = request.if_none_match.as_deref();
    req.range = request.range.as_deref();
    req.if_range = request.if_range.as_deref();
    // RFC 9110 §13.1.3, §13.1.4: both date conditions are ignored for a representation that has
    // no modification date (the placeholder date would make them decide).
    if has_date {
        req.if_modified_since = request.if_modified_since.as_deref();
        req.if_unmodified_since = request.if_unmodified_since.as_deref();
    }
    let planned = plan_response(&req, &meta, limits);
    let headers = planned
        .headers
        .iter()
        .filter(|(name, _)| {
            (has_etag || name != http::header::ETAG)
                && (has_date || name != http::header::LAST_MODIFIED)
        })
        .map(|(name, value)| (name.as_str().to_owned(), value.clone()));
    let body = match planned.body {
        Body::None => BodyOut::None,
        Body::Full => BodyOut::Full,
        Body::Window(window) => {
            BodyOut::Range { start: window.start() as f64, end: window.end() as f64 }
        }
        Body::Multipart { boundary, parts, closing } => BodyOut::Multipart {
            parts: parts
                .into_iter()
                .map(|part| PartOut {
                    start: part.window.start() as f64,
                    end: part.window.end() as f64,
                    headers: Fields::joined(part_fields(&part.head)),
                    head: part.head,
                })
                .collect(),
            boundary,
            closing,
        },
    };
    PlanOut { status: planned.status.as_u16(), headers: Fields::joined(headers), body }
}

/// The core's metadata for an object described from JavaScript; a missing entity-tag or date
/// is replaced by a placeholder that no client can match (see `NO_ETAG`).
pub(crate) fn meta_of(object: ObjectArg) -> ObjectMeta {
    ObjectMeta {
        size: object.size,
        etag: object
            .etag
            .unwrap_or_else(|| EntityTag::strong(NO_ETAG).expect("the placeholder is valid etagc")),
        last_modified: object.last_modified.unwrap_or(Timestamp::from_millis(0)),
        headers: object.headers,
        expires: None,
    }
}

/// Resolves a Range field value against `size` with the core's `parse_range` and `resolve`; an
/// absent or invalid Range selects the whole object.
pub(crate) fn resolve_range(range: Option<&str>, size: u64, limits: &RangeLimits) -> ResolvedOut {
    let Some(specs) = range.and_then(parse_range) else {
        return ResolvedOut::Full;
    };
    match resolve(&specs, size, limits) {
        Resolved::Full => ResolvedOut::Full,
        Resolved::Unsatisfiable => ResolvedOut::Unsatisfiable,
        Resolved::Partial(windows) => ResolvedOut::Partial {
            ranges: windows
                .into_iter()
                .map(|w| RangeOut { start: w.start() as f64, end: w.end() as f64 })
                .collect(),
        },
    }
}

impl Fields {
    /// Fields from (lower-case name, value) pairs; a repeated name is joined with `, `
    /// (RFC 9110 §5.3), since a plain object holds one value per name.
    fn joined(pairs: impl IntoIterator<Item = (String, String)>) -> Fields {
        let mut out: Vec<(String, String)> = Vec::new();
        for (name, value) in pairs {
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, joined)) => {
                    joined.push_str(", ");
                    joined.push_str(&value);
                }
                None => out.push((name, value)),
            }
        }
        Fields(out)
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The fields of a part's head (`--boundary` line, then `Name: value` lines), names lower-cased.
fn part_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect()
}

/// `{ size?, etag?, lastModified?, headers }`: an origin response described as an object.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribedOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    headers: Fields,
}

/// Describes a response from its fields: Content-Length as the size, validators that parse,
/// and the stored end-to-end fields chosen by the core's `select_stored_headers`.
pub(crate) fn describe(fields: &[(String, String)]) -> DescribedOut {
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    let size = field("content-length")
        .filter(|v| !v.is_empty() && v.len() <= 15 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n as f64);
    let etag = field("etag").and_then(EntityTag::parse).map(|tag| tag.to_string());
    let last_modified =
        field("last-modified").and_then(|v| parse_http_date(v).map(|_| v.to_owned()));
    let stored = select_stored_headers(fields.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    DescribedOut { size, etag, last_modified, headers: Fields(stored) }
}
