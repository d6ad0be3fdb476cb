//! Checking the raw exports' arguments.
//!
//! `js/api.js` checks types and shapes before it calls in; what only the core can check (an
//! entity-tag or a date that does not parse) and what a direct caller of a raw export could get
//! wrong (a size that is no safe integer) is checked here. Either way the mistake becomes a
//! `TypeError` whose message names the field, never a trap that would abort the instance.

use rangecache_core::Timestamp;
use rangecache_core::validators::{EntityTag, parse_http_date};
use wasm_bindgen::prelude::*;

// The two JavaScript built-ins the module calls, imported here rather than through js-sys,
// whose bindings bring a few kilobytes of closure glue into the module whatever is used.
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = TypeError)]
    type JsTypeError;

    #[wasm_bindgen(constructor, js_class = "TypeError")]
    fn new(message: &str) -> JsTypeError;

    /// `JSON.stringify` of a string, which never throws.
    #[wasm_bindgen(js_namespace = JSON, js_name = stringify)]
    fn stringify(text: &str) -> String;
}

/// Largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// An object's description as JavaScript gives it: validators are optional there.
#[derive(Debug)]
pub(crate) struct ObjectArg {
    pub size: u64,
    pub etag: Option<EntityTag>,
    pub last_modified: Option<Timestamp>,
    pub expires: Option<Timestamp>,
    pub headers: Vec<(String, String)>,
}

/// A `TypeError` carrying `message`, as thrown to JavaScript.
pub(crate) fn type_error(message: impl AsRef<str>) -> JsValue {
    JsTypeError::new(message.as_ref()).into()
}

/// An object's entity-tag; one that does not parse is a `TypeError` naming it.
pub(crate) fn parse_etag(raw: &str) -> Result<EntityTag, JsValue> {
    EntityTag::parse(raw).ok_or_else(|| {
        type_error(format!(
            "object.etag {} is not an entity-tag; expected a quoted value such as '\"v1\"'",
            quoted(raw)
        ))
    })
}

/// An object's date (`what`: `lastModified`, `expires`); one that does not parse is a
/// `TypeError` naming it.
pub(crate) fn parse_date(raw: &str, what: &str) -> Result<Timestamp, JsValue> {
    parse_http_date(raw).ok_or_else(|| {
        type_error(format!(
            "object.{what} {} is not an HTTP date such as 'Sun, 06 Nov 1994 08:49:37 GMT'",
            quoted(raw)
        ))
    })
}

/// Reads a size passed as a number by the package's own JavaScript, which checked it already;
/// checked again so that no caller of the raw export can reach a panic.
pub(crate) fn size_of(value: f64, what: &str) -> Result<u64, JsValue> {
    if !((0.0..=MAX_SAFE_INTEGER).contains(&value) && value.fract() == 0.0) {
        return Err(type_error(format!(
            "{what} must be a non-negative integer no larger than Number.MAX_SAFE_INTEGER"
        )));
    }
    // Exact: a non-negative integer below 2^53.
    Ok(value as u64)
}

/// `text` quoted and escaped as JavaScript would print it; Rust's `{:?}` would link the Unicode
/// printability tables for error messages alone.
pub(crate) fn quoted(text: &str) -> String {
    stringify(text)
}
