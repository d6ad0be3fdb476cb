//! Reading the JavaScript arguments into checked Rust values.
//!
//! Every mistake a caller can make (a missing field, a value of the wrong type, a negative size,
//! a malformed entity-tag or date) becomes a `TypeError` whose message names the field, so a bad
//! argument is an exception in JavaScript and never a trap that would abort the instance.

use js_sys::{Array, Object, Reflect};
use rangecache_core::Timestamp;
use rangecache_core::validators::{EntityTag, parse_http_date};
use wasm_bindgen::{JsCast, JsValue};

/// Largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// An object's description as JavaScript gives it: validators are optional there.
#[derive(Debug)]
pub(crate) struct ObjectArg {
    pub size: u64,
    pub etag: Option<EntityTag>,
    pub last_modified: Option<Timestamp>,
    pub headers: Vec<(String, String)>,
}

/// A `TypeError` carrying `message`, as thrown to JavaScript.
pub(crate) fn type_error(message: impl AsRef<str>) -> JsValue {
    js_sys::TypeError::new(message.as_ref()).into()
}

/// Reads `object = { size, etag?, lastModified?, headers? }`: `etag` as sent in an ETag field
/// (`"abc"` with its quotes, or `W/"abc"`), `lastModified` an HTTP date, `headers` the stored
/// end-to-end fields returned with the object (such as `content-type`).
pub(crate) fn read_object(value: &JsValue) -> Result<ObjectArg, JsValue> {
    let object = plain_object(value, "object")?;
    let size = get(&object, "object", "size")?;
    let size = read_size(&size, "object.size")?;
    let etag = string_field(&object, "object", "etag")?;
    let last_modified = string_field(&object, "object", "lastModified")?;
    let headers = get(&object, "object", "headers")?;
    let headers = if headers.is_undefined() || headers.is_null() {
        Vec::new()
    } else {
        read_string_map(&headers, "object.headers")?
    };
    object_arg(size, etag.as_deref(), last_modified.as_deref(), headers)
}

/// An object from its parts: the validators are parsed here, and one that does not parse is a
/// `TypeError` naming it.
pub(crate) fn object_arg(
    size: u64,
    etag: Option<&str>,
    last_modified: Option<&str>,
    headers: Vec<(String, String)>,
) -> Result<ObjectArg, JsValue> {
    let etag = match etag {
        None => None,
        Some(raw) => Some(EntityTag::parse(raw).ok_or_else(|| {
            type_error(format!(
                "object.etag {} is not an entity-tag; expected a quoted value such as '\"v1\"'",
                quoted(raw)
            ))
        })?),
    };
    let last_modified = match last_modified {
        None => None,
        Some(raw) => Some(parse_http_date(raw).ok_or_else(|| {
            type_error(format!(
                "object.lastModified {} is not an HTTP date such as 'Sun, 06 Nov 1994 08:49:37 GMT'",
                quoted(raw)
            ))
        })?),
    };
    Ok(ObjectArg { size, etag, last_modified, headers })
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

/// Reads an object size: a non-negative integer number no larger than
/// `Number.MAX_SAFE_INTEGER`.
pub(crate) fn read_size(value: &JsValue, what: &str) -> Result<u64, JsValue> {
    let Some(n) = value.as_f64() else {
        return Err(type_error(format!("{what} must be a number, got {}", describe(value))));
    };
    if !((0.0..=MAX_SAFE_INTEGER).contains(&n) && n.fract() == 0.0) {
        return Err(type_error(format!(
            "{what} must be a non-negative integer no larger than Number.MAX_SAFE_INTEGER, got {}",
            number_text(value)
        )));
    }
    // Exact: `n` is a non-negative integer below 2^53.
    Ok(n as u64)
}

/// Reads an optional string argument: `undefined` and `null` are `None`, a string is itself,
/// anything else is a `TypeError`.
pub(crate) fn optional_string(value: &JsValue, what: &str) -> Result<Option<String>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| type_error(format!("{what} must be a string, got {}", describe(value))))
}

/// Reads a required string argument.
pub(crate) fn required_string(value: &JsValue, what: &str) -> Result<String, JsValue> {
    optional_string(value, what)?.ok_or_else(|| type_error(format!("{what} is missing")))
}

/// Reads a plain object of string values into (lower-case name, value) pairs, in order;
/// names that differ only in case are joined with `, ` as RFC 9110 §5.3 joins a repeated field.
pub(crate) fn read_string_map(
    value: &JsValue,
    what: &str,
) -> Result<Vec<(String, String)>, JsValue> {
    let map = plain_object(value, what)?;
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in Object::entries(&map).iter() {
        let entry: Array = entry.unchecked_into();
        let name = entry.get(0).as_string().unwrap_or_default().to_ascii_lowercase();
        let value = entry.get(1);
        let Some(value) = value.as_string() else {
            return Err(type_error(format!(
                "{what}[{}] must be a string, got {}",
                quoted(&name),
                describe(&value)
            )));
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    Ok(out)
}

/// A property of `object`, read without invoking anything that could trap.
pub(crate) fn get(object: &Object, owner: &str, name: &str) -> Result<JsValue, JsValue> {
    Reflect::get(object, &JsValue::from_str(name))
        .map_err(|_| type_error(format!("{owner}.{name} could not be read")))
}

/// A property that must be a string when present.
pub(crate) fn string_field(
    object: &Object,
    owner: &str,
    name: &str,
) -> Result<Option<String>, JsValue> {
    let value = get(object, owner, name)?;
    optional_string(&value, &format!("{owner}.{name}"))
}

/// `value` as an object that is not `null`, an array or a function.
pub(crate) fn plain_object(value: &JsValue, what: &str) -> Result<Object, JsValue> {
    if !value.is_object() || Array::is_array(value) {
        return Err(type_error(format!("{what} must be an object, got {}", describe(value))));
    }
    Ok(value.clone().unchecked_into())
}

/// How a bad value is named in a message: its type, and the value itself when it is short.
pub(crate) fn describe(value: &JsValue) -> String {
    if value.is_null() {
        return "null".to_owned();
    }
    if Array::is_array(value) {
        return "an array".to_owned();
    }
    if value.as_f64().is_some() {
        return format!("the number {}", number_text(value));
    }
    if let Some(b) = value.as_bool() {
        return format!("the boolean {b}");
    }
    match value.js_typeof().as_string() {
        Some(kind) => kind,
        None => "a value of unknown type".to_owned(),
    }
}

/// A number as JavaScript prints it; formatting it in Rust would link the float printer, a
/// tenth of the module's size, for error messages alone.
fn number_text(value: &JsValue) -> String {
    js_sys::Number::unchecked_from_js_ref(value)
        .to_string_with_radix(10)
        .map(String::from)
        .unwrap_or_else(|_| "a number".to_owned())
}

/// `text` quoted and escaped as JavaScript would print it; Rust's `{:?}` would link the Unicode
/// printability tables for error messages alone.
pub(crate) fn quoted(text: &str) -> String {
    js_sys::JSON::stringify(&JsValue::from_str(text))
        .map(String::from)
        .unwrap_or_else(|_| format!("\"{text}\""))
}
