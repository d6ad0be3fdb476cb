//! rangecache-wasm: the core's decisions exported to JavaScript through wasm-bindgen.
//!
//! The package's public functions live in `js/api.js`, which checks the arguments (a bad one is
//! a `TypeError` naming the field), calls the raw exports below with plain strings and numbers,
//! and decodes their answers (see [`plan`]) into plain objects:
//!
//! * `planResponse(request, object)` over [`plan_raw`]: the core's `conditional::plan_response`
//!   (RFC 9110 §13.2.2, §14);
//! * `resolveRange(rangeHeader, size)` over [`resolve_raw`]: `range::parse_range` and
//!   `range::resolve`;
//! * `isDefinitive(request, object)` over [`definitive_raw`] and `copyMode(method, from, body)`
//!   over [`copy_mode_raw`]: the read machine's `read::is_definitive` and `read::copy_mode`, for
//!   a host (the edge worker) that walks its tiers itself;
//! * `objectKey(namespace, key)` and `describeObject(headers)`: the storage key of SPEC §3, and
//!   what a cache keeps of an origin's response;
//! * `BackfillManager` over the raw class of [`backfill`].
//!
//! Every raw export checks its arguments again and none reaches a panic, whatever it is passed,
//! so even a direct caller never aborts the instance. The core's types never reach JavaScript.

mod args;
mod backfill;
mod plan;

// Talc instead of the standard library's dlmalloc: several kilobytes smaller in the module, and
// an allocation, which every plan makes several of, is cheaper.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

use std::cell::RefCell;

use http::Method;
use rangecache_core::backfill::Mode;
use rangecache_core::key::{Key, Namespace};
use rangecache_core::read::copy_mode;
use rangecache_core::{Body, EntityTag, ObjectMeta, RangeLimits, TierIdx, Timestamp, Window};
use wasm_bindgen::prelude::*;

use crate::args::{ObjectArg, parse_date, parse_etag, quoted, size_of, type_error};
use crate::plan::{Answer, Inputs, Request, SEP};

/// What crosses the boundary for `planRaw` and `definitiveRaw`, kept from call to call so a
/// call allocates nothing for it: JavaScript encodes its input straight into `input` and reads
/// the answer straight from `answer`.
struct Boundary {
    input: Vec<u8>,
    /// The lengths of the fixed fields of `input` (method, the six request fields, entity-tag,
    /// Last-Modified; `-1` when absent), written by JavaScript when the input is all ASCII so
    /// the module need not search for separators; `lens[0] < 0` when it did not.
    lens: [f64; FIXED],
    answer: Answer,
    /// The stored fields of the last object, whose strings the next one reuses (an allocation
    /// in wasm costs several times a native one).
    stored: Vec<(String, String)>,
    validators: Validators,
}

/// The last object's validators as given and as parsed, so that planning for the same object
/// again (the usual case: many requests for one object) neither parses nor allocates them.
struct Validators {
    etag_raw: String,
    /// What `etag_raw` parses to; taken while a plan holds it.
    etag: Option<EntityTag>,
    date_raw: String,
    /// What `date_raw` parses to.
    date: Option<Timestamp>,
}

impl Validators {
    /// `raw` parsed, as [`parse_etag`] does.
    fn etag(&mut self, raw: &str) -> Result<EntityTag, JsValue> {
        match self.etag.take() {
            Some(tag) if self.etag_raw == raw => Ok(tag),
            _ => parse_etag(raw),
        }
    }

    /// Keeps `tag`, parsed from `raw`, for the next call.
    fn keep_etag(&mut self, raw: &str, tag: EntityTag) {
        self.etag_raw.clear();
        self.etag_raw.push_str(raw);
        self.etag = Some(tag);
    }

    /// `raw` parsed, as [`parse_date`] does.
    fn date(&mut self, raw: &str) -> Result<Timestamp, JsValue> {
        if let Some(date) = self.date
            && self.date_raw == raw
        {
            return Ok(date);
        }
        let date = parse_date(raw)?;
        self.date_raw.clear();
        self.date_raw.push_str(raw);
        self.date = Some(date);
        Ok(date)
    }
}

thread_local! {
    static BOUNDARY: RefCell<Boundary> = const {
        RefCell::new(Boundary {
            input: Vec::new(),
            lens: [-1.0; FIXED],
            answer: Answer::new(),
            stored: Vec::new(),
            validators: Validators {
                etag_raw: String::new(),
                etag: None,
                date_raw: String::new(),
                date: None,
            },
        })
    };
}

/// The module's memory, for `js/api.js` to read and write the buffers below in place.
#[wasm_bindgen(js_name = memoryRaw, skip_typescript)]
pub fn memory_raw() -> JsValue {
    wasm_bindgen::memory()
}

/// How many fields of the input come before the stored ones.
const FIXED: usize = 9;

/// The address of the lengths of the input's fixed fields (`FIXED` numbers), which does not
/// change.
#[wasm_bindgen(js_name = lensBuffer, skip_typescript)]
pub fn lens_buffer() -> u32 {
    BOUNDARY.with_borrow(|b| b.lens.as_ptr() as usize as u32)
}

/// The address of the input buffer, grown to hold at least `capacity` bytes. The address stays
/// valid until the next call of this function (a larger buffer may move it); `js/api.js` keeps
/// it, so nothing else may grow the buffer in a module the package uses.
#[wasm_bindgen(js_name = inputBuffer, skip_typescript)]
pub fn input_buffer(capacity: u32) -> u32 {
    BOUNDARY.with_borrow_mut(|b| {
        let capacity = capacity as usize;
        if b.input.len() < capacity {
            b.input.resize(capacity, 0);
        }
        b.input.as_ptr() as usize as u32
    })
}

/// The plan for a request and an object, both encoded by `js/api.js` into the first `len`
/// bytes of the input buffer: the method, then If-Match, If-None-Match, If-Modified-Since,
/// If-Unmodified-Since, Range, If-Range, the entity-tag and Last-Modified (each empty when
/// absent, else its value after a `=`), then the stored fields as `name, value` pairs, all
/// separated by NUL. Answers the address of the plan's numbers (see [`Answer`]).
///
/// One UTF-8 buffer rather than an argument per field: `api.js` encodes it with
/// `TextEncoder.encodeInto`, where passing strings costs a character-by-character copy each.
#[wasm_bindgen(js_name = planRaw, skip_typescript)]
pub fn plan_raw(len: u32, size: f64) -> Result<u32, JsValue> {
    BOUNDARY.with_borrow_mut(|b| {
        let Boundary { input, lens, answer, stored, validators } = b;
        let parsed = parse_input(input, lens, len, size, stored, validators)?;
        let inputs = Inputs { etag: parsed.etag, last_modified: parsed.last_modified };
        let meta =
            plan::plan(&parsed.request, parsed.object, &inputs, &RangeLimits::default(), answer);
        keep(meta, parsed.etag, stored, validators);
        Ok(answer.nums.as_ptr() as usize as u32)
    })
}

/// Whether the plan for the request and object in the first `len` bytes of the input buffer
/// (as for [`plan_raw`]) is the final answer of a tier holding that object (SPEC §4).
#[wasm_bindgen(js_name = definitiveRaw, skip_typescript)]
pub fn definitive_raw(len: u32, size: f64) -> Result<bool, JsValue> {
    BOUNDARY.with_borrow_mut(|b| {
        let Boundary { input, lens, stored, validators, .. } = b;
        let parsed = parse_input(input, lens, len, size, stored, validators)?;
        let (definitive, meta) =
            plan::definitive(&parsed.request, parsed.object, &RangeLimits::default());
        keep(meta, parsed.etag, stored, validators);
        Ok(definitive)
    })
}

/// How a read copies into tier 0 what it serves from tier `from` with a body of kind `body`
/// (0 none, 1 full, 2 range, 3 multipart): the core's `read::copy_mode`, answered as 0 (no
/// copy), 1 (tee) or 2 (background).
#[wasm_bindgen(js_name = copyModeRaw, skip_typescript)]
pub fn copy_mode_raw(method: &str, from: f64, body: u8) -> Result<u8, JsValue> {
    let method = method_of(method)?;
    let from =
        usize::try_from(size_of(from, "from")?).map_err(|_| type_error("from is too large"))?;
    // Only the kind of body matters to the decision.
    let body = match body {
        0 => Body::None,
        1 => Body::Full,
        2 => Window::new(0, 1).map_or(Body::Full, Body::Window),
        _ => Body::Multipart { boundary: String::new(), parts: Vec::new(), closing: String::new() },
    };
    Ok(match copy_mode(&method, TierIdx::new(from), &body) {
        None => 0,
        Some(Mode::Tee) => 1,
        Some(Mode::Background) => 2,
    })
}

/// Keeps what the next call can reuse of an object's metadata: its stored fields' strings and,
/// when `etag` was given, its entity-tag.
fn keep(
    meta: ObjectMeta,
    etag: Option<&str>,
    stored: &mut Vec<(String, String)>,
    validators: &mut Validators,
) {
    *stored = meta.headers;
    if let Some(raw) = etag {
        validators.keep_etag(raw, meta.etag);
    }
}

struct Parsed<'a> {
    request: Request<'a>,
    etag: Option<&'a str>,
    last_modified: Option<&'a str>,
    object: ObjectArg,
}

/// The request and object encoded in `input[..len]`; the stored fields reuse the strings of
/// `spare`.
fn parse_input<'a>(
    input: &'a [u8],
    lens: &[f64; FIXED],
    len: u32,
    size: f64,
    spare: &mut Vec<(String, String)>,
    validators: &mut Validators,
) -> Result<Parsed<'a>, JsValue> {
    let input = input
        .get(..len as usize)
        .ok_or_else(|| type_error("len is past the input buffer; call planResponse instead"))?;
    let input = std::str::from_utf8(input)
        .map_err(|_| type_error("the input is not UTF-8; call planResponse instead"))?;
    let (fixed, rest) = match fixed_fields(input, lens) {
        Some(found) => found,
        None => split_fields(input),
    };
    let [
        method,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        if_range,
        etag,
        last_modified,
    ] = fixed;
    let request = Request {
        method: method_of(method.unwrap_or_default())?,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        if_range,
    };
    let mut stored = std::mem::take(spare);
    pairs_into(rest.split(SEP), &mut stored);
    let size = size_of(size, "object.size")?;
    let object = ObjectArg {
        size,
        etag: etag.map(|raw| validators.etag(raw)).transpose()?,
        last_modified: last_modified.map(|raw| validators.date(raw)).transpose()?,
        headers: stored,
    };
    Ok(Parsed { request, etag, last_modified, object })
}

/// The fixed fields where `lens` says they are, and what follows them; `None` unless the
/// lengths describe `input` exactly (separators and `=` where expected).
fn fixed_fields<'a>(
    input: &'a str,
    lens: &[f64; FIXED],
) -> Option<([Option<&'a str>; FIXED], &'a str)> {
    let bytes = input.as_bytes();
    let mut out = [None; FIXED];
    let mut pos = 0;
    for (i, &len) in lens.iter().enumerate() {
        if i > 0 {
            (bytes.get(pos) == Some(&0)).then_some(())?;
            pos += 1;
        }
        if len < 0.0 && i > 0 {
            continue;
        }
        // Also refuses NaN and a negative method length.
        (0.0..=f64::from(u32::MAX)).contains(&len).then_some(())?;
        if i > 0 {
            (bytes.get(pos) == Some(&b'=')).then_some(())?;
            pos += 1;
        }
        let end = pos.checked_add(len as usize)?;
        out[i] = Some(input.get(pos..end)?);
        pos = end;
    }
    let rest = input.get(pos..)?;
    let rest = if rest.is_empty() { rest } else { rest.strip_prefix(SEP)? };
    Some((out, rest))
}

/// The fixed fields found by their separators, and what follows them.
fn split_fields(input: &str) -> ([Option<&str>; FIXED], &str) {
    let mut out = [None; FIXED];
    let mut rest = input;
    for (i, field) in out.iter_mut().enumerate() {
        let (head, tail) = rest.split_once(SEP).unwrap_or((rest, ""));
        *field = if i == 0 { Some(head) } else { head.strip_prefix('=') };
        rest = tail;
    }
    (out, rest)
}

fn method_of(method: &str) -> Result<Method, JsValue> {
    Method::from_bytes(method.as_bytes()).map_err(|_| {
        type_error(format!("request.method {} is not an HTTP method token", quoted(method)))
    })
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
    plan::describe(&pairs(fields.split(SEP)))
}

/// `name, value, ...` as pairs in `out`, reusing its strings; a trailing unpaired name and an
/// empty name are dropped.
fn pairs_into<'a>(mut fields: impl Iterator<Item = &'a str>, out: &mut Vec<(String, String)>) {
    let mut n = 0;
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.is_empty() {
            continue;
        }
        match out.get_mut(n) {
            Some((old_name, old_value)) => {
                old_name.clear();
                old_name.push_str(name);
                old_value.clear();
                old_value.push_str(value);
            }
            None => out.push((name.to_owned(), value.to_owned())),
        }
        n += 1;
    }
    out.truncate(n);
}

/// `name, value, ...` as pairs; a trailing unpaired name and an empty name are dropped.
fn pairs<'a>(mut fields: impl Iterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if !name.is_empty() {
            out.push((name, value));
        }
    }
    out
}
