//! rangecache-wasm: the core's decisions exported to JavaScript through wasm-bindgen.
//!
//! The package's public functions live in `js/api.js`, which checks the arguments (a bad one is
//! a `TypeError` naming the field), calls the raw exports below with plain strings and numbers,
//! and decodes their one-string answers (see [`plan`]) into plain objects:
//!
//! * `planResponse(request, object)` over [`plan_raw`]: the core's `conditional::plan_response`
//!   (RFC 9110 §13.2.2, §14);
//! * `resolveRange(rangeHeader, size)` over [`resolve_raw`]: `range::parse_range` and
//!   `range::resolve`;
//! * `objectKey(namespace, key)` and `describeObject(headers)`: the storage key of SPEC §3, and
//!   what a cache keeps of an origin's response;
//! * `BackfillManager` over the raw class of [`backfill`].
//!
//! Every raw export checks its arguments again and none reaches a panic, whatever it is passed,
//! so even a direct caller never aborts the instance. The core's types never reach JavaScript.

mod args;
mod backfill;
mod plan;

use http::Method;
use rangecache_core::RangeLimits;
use rangecache_core::key::{Key, Namespace};
use wasm_bindgen::prelude::*;

use crate::args::{object_arg, quoted, size_of, type_error};
use crate::plan::{Request, SEP};

/// The plan for a request and an object, both encoded by `js/api.js` into `input`: the method,
/// then If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, Range, If-Range, the
/// entity-tag and Last-Modified (each empty when absent, else its value after a `=`), then the
/// stored fields as `name, value` pairs, all separated by NUL. Answers in the wire form of
/// [`plan`].
///
/// One UTF-8 buffer rather than an argument per field: `api.js` encodes it with
/// `TextEncoder.encodeInto`, where passing strings costs a character-by-character copy each,
/// a sixth of the call.
#[wasm_bindgen(js_name = planRaw, skip_typescript)]
pub fn plan_raw(input: &[u8], size: f64) -> Result<String, JsValue> {
    let input = std::str::from_utf8(input)
        .map_err(|_| type_error("planRaw: input is not UTF-8; call planResponse instead"))?;
    let mut fields = input.split(SEP);
    let method = fields.next().unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| {
        type_error(format!("request.method {} is not an HTTP method token", quoted(method)))
    })?;
    let mut next = || fields.next().and_then(|field| field.strip_prefix('='));
    let request = Request {
        method,
        if_match: next(),
        if_none_match: next(),
        if_modified_since: next(),
        if_unmodified_since: next(),
        range: next(),
        if_range: next(),
    };
    let etag = next();
    let last_modified = next();
    let stored = pairs(fields);
    let size = size_of(size, "object.size")?;
    let object = object_arg(size, etag, last_modified, stored)?;
    Ok(plan::plan(&request, object, &RangeLimits::default()))
}

/// What a Range selects from `size` bytes, in the wire form of [`plan`].
#[wasm_bindgen(js_name = resolveRaw, skip_typescript)]
pub fn resolve_raw(range: Option<String>, size: f64) -> Result<String, JsValue> {
    let size = size_of(size, "size")?;
    Ok(plan::resolve_range(range.as_deref(), size, &RangeLimits::default()))
}

/// The storage key for `/{namespace}/{key}` (SPEC §3): `namespace/key`, where a key of exactly
/// 64 hex characters is kept and any other is replaced by its hex SHA-256; `None` for a
/// namespace outside `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`.
#[wasm_bindgen(js_name = objectKeyRaw, skip_typescript)]
pub fn object_key_raw(namespace: &str, key: &str) -> Option<String> {
    let namespace = Namespace::parse(namespace).ok()?;
    Some(format!("{namespace}/{}", Key::from_segment(key)))
}

/// An origin response's fields (`name NUL value NUL ...`, lower-case names) described as an
/// object, in the wire form of [`plan`].
#[wasm_bindgen(js_name = describeRaw, skip_typescript)]
pub fn describe_raw(fields: &str) -> String {
    let fields = pairs(fields.split(SEP));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    plan::describe(&fields)
}

/// `name, value, ...` as pairs; a trailing unpaired name is dropped.
fn pairs<'a>(mut fields: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if !name.is_empty() {
            out.push((name.to_owned(), value.to_owned()));
        }
    }
    out
}
