//! rangecache-wasm: the core's decisions exported to JavaScript through wasm-bindgen.
//!
//! * `planResponse(request, object)`: status, headers and body of the answer to a GET or HEAD,
//!   from the core's `conditional::plan_response` (RFC 9110 §13.2.2, §14).
//! * `resolveRange(rangeHeader, size)`: what a Range selects, from `range::parse_range` and
//!   `range::resolve`.
//! * `objectKey(namespace, key)`: the storage key of SPEC §3 for a request path.
//!
//! The JavaScript surface has its own types (arguments read in [`args`], results serialized
//! with serde-wasm-bindgen from the types of [`plan`]); the core's types never cross it. A bad
//! argument becomes a `TypeError` naming the field, and no input reaches a panic, so a caller's
//! mistake never aborts the instance.

mod args;
mod backfill;
mod plan;

use rangecache_core::RangeLimits;
use rangecache_core::key::{Key, Namespace};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::args::{
    optional_string, read_object, read_request, read_size, required_string, type_error,
};

/// Plans the answer to a GET or HEAD of one object revision.
///
/// `request = { method, headers }` (`headers` a plain object of field name to string value);
/// `object = { size, etag?, lastModified?, headers? }`. Returns `{ status, headers, body }`
/// where `body` is `{ kind: "none" }`, `{ kind: "full" }`, `{ kind: "range", start, end }`
/// (half-open) or `{ kind: "multipart", boundary, parts: [{ start, end, headers, head }],
/// closing }`. Throws a `TypeError` on a bad argument.
#[wasm_bindgen(js_name = planResponse, skip_typescript)]
pub fn plan_response(request: JsValue, object: JsValue) -> Result<JsValue, JsValue> {
    let request = read_request(&request)?;
    let object = read_object(&object)?;
    to_js(&plan::plan(&request, object, &RangeLimits::default()))
}

/// What a Range field value selects from an object of `size` bytes: `{ kind: "full" }`,
/// `{ kind: "partial", ranges: [{ start, end }] }` (half-open) or `{ kind: "unsatisfiable" }`.
/// An absent (`null`, `undefined`) or invalid Range selects the whole object. Throws a
/// `TypeError` on a bad argument.
#[wasm_bindgen(js_name = resolveRange, skip_typescript)]
pub fn resolve_range(range_header: JsValue, size: JsValue) -> Result<JsValue, JsValue> {
    let range = optional_string(&range_header, "rangeHeader")?;
    let size = read_size(&size, "size")?;
    to_js(&plan::resolve_range(range.as_deref(), size, &RangeLimits::default()))
}

/// The storage key for `/{namespace}/{key}` (SPEC §3): `namespace/key`, where a key of exactly
/// 64 hex characters is kept and any other is replaced by its hex SHA-256. Returns `null` for a
/// namespace outside `^[a-zA-Z0-9][a-zA-Z0-9_-]*$` (answer 400). Throws a `TypeError` on a bad
/// argument.
#[wasm_bindgen(js_name = objectKey, skip_typescript)]
pub fn object_key(namespace: JsValue, key: JsValue) -> Result<JsValue, JsValue> {
    let namespace = required_string(&namespace, "namespace")?;
    let key = required_string(&key, "key")?;
    let Ok(namespace) = Namespace::parse(&namespace) else {
        return Ok(JsValue::NULL);
    };
    Ok(JsValue::from_str(&format!("{namespace}/{}", Key::from_segment(&key))))
}

/// Describes an origin's response for `planResponse` and the store, from its header fields (a
/// plain object, lower-case names): `{ size?, etag?, lastModified?, headers }` with `size` from
/// Content-Length, the validators when they parse, and the end-to-end fields a cache stores with
/// an object (SPEC §3). Throws a `TypeError` on a bad argument.
#[wasm_bindgen(js_name = describeObject, skip_typescript)]
pub fn describe_object(headers: JsValue) -> Result<JsValue, JsValue> {
    let fields = args::read_string_map(&headers, "headers")?;
    to_js(&plan::describe(&fields))
}

/// Serializes a result: maps as plain objects, numbers as numbers.
fn to_js(value: &impl Serialize) -> Result<JsValue, JsValue> {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    value.serialize(&serializer).map_err(|e| type_error(format!("result could not be built: {e}")))
}
