//! rangecache-wasm: the core's decisions exported to JavaScript through wasm-bindgen.
//!
//! The package's public functions live in `js/api.js`, which checks the arguments (a bad one is
//! a `TypeError` naming the field), calls the raw exports below and decodes their answers into
//! plain objects. Every call has the one layout of [`wire`]: strings in through one buffer,
//! answers out as numbers and one text, with the strings that cross as numbers listed once.
//!
//! * `planResponse(request, object)` over [`plan_raw`]: the core's `conditional::plan_response`
//!   (RFC 9110 §13.2.2, §14);
//! * `new ReadMachine(request, { tiers, now })` over the raw class of [`read`]: the core's
//!   `read::Machine`, the tiered read a host drives by events (which tier to open, which answer
//!   stands, the copy into tier 0, `Cache-Status`);
//! * `new BackfillManager(config)` over the raw class of [`backfill`];
//! * `resolveRange(rangeHeader, size)` over [`resolve_raw`]: `range::parse_range` and
//!   `range::resolve`;
//! * `objectKey(namespace, key)` and `describeObject(headers)`: the storage key of SPEC §3, and
//!   what a cache keeps of an origin's response.
//!
//! Every raw export checks its arguments again and none reaches a panic, whatever it is passed,
//! so even a direct caller never aborts the instance. The core's types never reach JavaScript.

mod args;
mod backfill;
mod plan;
mod read;
pub mod wire;

// Talc instead of the standard library's dlmalloc: several kilobytes smaller in the module, and
// an allocation, which every plan makes several of, is cheaper.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

use std::cell::RefCell;

use http::Method;
use rangecache_core::key::{Key, Namespace};
use rangecache_core::{EntityTag, ObjectMeta, PlanSpare, RangeLimits, Timestamp};
use wasm_bindgen::prelude::*;

use crate::args::{ObjectArg, parse_date, parse_etag, quoted, size_of, type_error};
use crate::plan::{Inputs, Request};
use crate::wire::{Answer, SEP};

/// What crosses the boundary, kept from call to call so a call allocates nothing for it:
/// JavaScript encodes its input straight into `input` and reads the answer straight from
/// `answer`.
pub(crate) struct Boundary {
    pub(crate) input: Vec<u8>,
    /// The lengths of the fixed fields of `planRaw`'s input (method, the six request fields,
    /// entity-tag, Last-Modified, expiry; `-1` when absent), written by JavaScript when the
    /// input is all ASCII so the module need not search for separators; `lens[0] < 0` when it
    /// did not.
    lens: [f64; FIXED],
    pub(crate) answer: Answer,
    /// The stored fields of the last object planned, whose strings the next one reuses (an
    /// allocation in wasm costs several times a native one).
    stored: Vec<(String, String)>,
    validators: Validators,
    /// What the last object planned for had, while `stored` and `validators` hold it parsed;
    /// `None` after a call that failed.
    last: Option<Last>,
    /// The strings of the last plan, which the next one writes its values into.
    spare: PlanSpare,
    /// How many objects `planRaw` has kept: the last one's number.
    objects: f64,
}

/// The last object a plan succeeded for: the number its caller gave it, which validators it had
/// (their parsed and raw forms are in [`Validators`]) and its expiry. A call naming that number
/// plans against it without the object being encoded or parsed again.
#[derive(Clone, Copy)]
struct Last {
    id: f64,
    etag: bool,
    last_modified: bool,
    expires: Option<Timestamp>,
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
        let date = parse_date(raw, "lastModified")?;
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
            last: None,
            spare: PlanSpare::new(),
            objects: 0.0,
        })
    };
}

/// Runs `f` with the boundary's buffers.
pub(crate) fn with_boundary<R>(f: impl FnOnce(&mut Boundary) -> R) -> R {
    BOUNDARY.with_borrow_mut(f)
}

/// The module's memory, for `js/api.js` to read and write the buffers below in place.
#[wasm_bindgen(js_name = memoryRaw, skip_typescript)]
pub fn memory_raw() -> JsValue {
    wasm_bindgen::memory()
}

/// How many fields of `planRaw`'s input come before the stored ones.
const FIXED: usize = 10;

/// The address of the lengths of `planRaw`'s fixed fields (`FIXED` numbers), which does not
/// change.
#[wasm_bindgen(js_name = lensBuffer, skip_typescript)]
pub fn lens_buffer() -> u32 {
    with_boundary(|b| b.lens.as_ptr() as usize as u32)
}

/// The address of the input buffer, grown to hold at least `capacity` bytes. The address stays
/// valid until the next call of this function (a larger buffer may move it); `js/api.js` keeps
/// it, so nothing else may grow the buffer in a module the package uses.
#[wasm_bindgen(js_name = inputBuffer, skip_typescript)]
pub fn input_buffer(capacity: u32) -> u32 {
    with_boundary(|b| {
        let capacity = capacity as usize;
        if b.input.len() < capacity {
            b.input.resize(capacity, 0);
        }
        b.input.as_ptr() as usize as u32
    })
}

/// The plan for a request and an object, both in the first `len` bytes of the input: the
/// method, then If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, Range,
/// If-Range, the entity-tag, Last-Modified and the expiry (each empty when absent, else its
/// value after a `=`), then the stored fields as `name, value` pairs. Answers the plan (see
/// [`plan`]); a value it echoes from the object refers to the object's strings in that order
/// (entity-tag 0, Last-Modified 1, expiry 2, then each stored name and value).
///
/// The module keeps the object it planned for under a number of its own ([`kept_object_raw`]);
/// `kept` names that object again when the caller knows it to be the same exactly (`js/api.js`
/// compares its strings): the input then holds the request alone (the object's fields absent),
/// so a run of requests for one object encodes and parses it once. Answers 0, planning nothing,
/// when `kept` is not the number of the object kept; the caller then sends the object whole.
/// `kept` is 0 when the input holds the object.
#[wasm_bindgen(js_name = planRaw, skip_typescript)]
pub fn plan_raw(len: u32, size: f64, kept: f64) -> Result<u32, JsValue> {
    with_boundary(|b| {
        let Boundary { input, lens, answer, stored, validators, last, spare, objects } = b;
        let limits = RangeLimits::default();
        if kept != 0.0 {
            let Some(kept) = last.take_if(|last| last.id == kept) else {
                return Ok(0);
            };
            let (fixed, _) = fields_of(input, lens, len)?;
            let request = request_of(&fixed)?;
            let etag = if kept.etag {
                let tag = validators.etag.take();
                Some(tag.ok_or_else(|| type_error("no entity-tag is kept"))?)
            } else {
                None
            };
            let object = ObjectArg {
                size: size_of(size, "object.size")?,
                etag,
                last_modified: if kept.last_modified { validators.date } else { None },
                expires: kept.expires,
                headers: std::mem::take(stored),
            };
            let inputs = Inputs {
                etag: kept.etag.then_some(validators.etag_raw.as_str()),
                last_modified: kept.last_modified.then_some(validators.date_raw.as_str()),
            };
            let meta = plan::plan(&request, object, &inputs, &limits, answer, spare);
            *stored = meta.headers;
            if kept.etag {
                validators.etag = Some(meta.etag);
            }
            *last = Some(kept);
        } else {
            *last = None;
            let parsed = parse_input(input, lens, len, size, stored, validators)?;
            *objects += 1.0;
            let shape = Last {
                id: *objects,
                etag: parsed.etag.is_some(),
                last_modified: parsed.last_modified.is_some(),
                expires: parsed.object.expires,
            };
            let inputs = Inputs { etag: parsed.etag, last_modified: parsed.last_modified };
            let meta = plan::plan(&parsed.request, parsed.object, &inputs, &limits, answer, spare);
            keep(meta, parsed.etag, stored, validators);
            *last = Some(shape);
        }
        Ok(answer.finish())
    })
}

/// The number of the object the last `planRaw` call kept (see [`plan_raw`]), 0 when it kept
/// none (the call failed).
#[wasm_bindgen(js_name = keptObjectRaw, skip_typescript)]
pub fn kept_object_raw() -> f64 {
    with_boundary(|b| b.last.map_or(0.0, |last| last.id))
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
    let (fixed, rest) = fields_of(input, lens, len)?;
    let request = request_of(&fixed)?;
    let [.., etag, last_modified, expires] = fixed;
    let mut stored = std::mem::take(spare);
    pairs_into(rest.split(SEP), &mut stored);
    let size = size_of(size, "object.size")?;
    let object = ObjectArg {
        size,
        etag: etag.map(|raw| validators.etag(raw)).transpose()?,
        last_modified: last_modified.map(|raw| validators.date(raw)).transpose()?,
        expires: expires.map(|raw| parse_date(raw, "expires")).transpose()?,
        headers: stored,
    };
    Ok(Parsed { request, etag, last_modified, object })
}

/// The fixed fields of `planRaw`'s input in its first `len` bytes, and the stored fields after
/// them.
fn fields_of<'a>(
    input: &'a [u8],
    lens: &[f64; FIXED],
    len: u32,
) -> Result<([Option<&'a str>; FIXED], &'a str), JsValue> {
    let input = text_of(input, len)?;
    Ok(fixed_fields(input, lens).unwrap_or_else(|| split_fields(input)))
}

/// The request of `planRaw`'s fixed fields.
fn request_of<'a>(fixed: &[Option<&'a str>; FIXED]) -> Result<Request<'a>, JsValue> {
    let [
        method,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        if_range,
        ..,
    ] = *fixed;
    Ok(Request {
        method: method_of(method.unwrap_or_default())?,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        if_range,
    })
}

/// The first `len` bytes of the input, which must be UTF-8.
pub(crate) fn text_of(input: &[u8], len: u32) -> Result<&str, JsValue> {
    let input = input
        .get(..len as usize)
        .ok_or_else(|| type_error("len is past the input buffer; call the package's functions"))?;
    std::str::from_utf8(input)
        .map_err(|_| type_error("the input is not UTF-8; call the package's functions"))
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

/// The first `N` fields found by their separators (the first as it is, the others optional:
/// empty when absent, else `=` and the value), and what follows them.
pub(crate) fn split_fields<const N: usize>(input: &str) -> ([Option<&str>; N], &str) {
    let mut out = [None; N];
    let mut rest = input;
    for (i, field) in out.iter_mut().enumerate() {
        let (head, tail) = rest.split_once(SEP).unwrap_or((rest, ""));
        *field = if i == 0 { Some(head) } else { head.strip_prefix('=') };
        rest = tail;
    }
    (out, rest)
}

pub(crate) fn method_of(method: &str) -> Result<Method, JsValue> {
    Method::from_bytes(method.as_bytes()).map_err(|_| {
        type_error(format!("request.method {} is not an HTTP method token", quoted(method)))
    })
}

/// What a Range selects from `size` bytes (see `plan::resolve_range`); the Range is the first
/// `len` bytes of the input when `present`.
#[wasm_bindgen(js_name = resolveRaw, skip_typescript)]
pub fn resolve_raw(len: u32, present: bool, size: f64) -> Result<u32, JsValue> {
    let size = size_of(size, "size")?;
    with_boundary(|b| {
        let range = if present { Some(text_of(&b.input, len)?) } else { None };
        b.answer.clear();
        plan::resolve_range(range, size, &RangeLimits::default(), &mut b.answer);
        Ok(b.answer.finish())
    })
}

/// The storage key for `/{namespace}/{key}` (SPEC §3), given as `namespace, key` in the first
/// `len` bytes of the input: `namespace/key`, where a key of exactly 64 hex characters is kept
/// and any other is replaced by its hex SHA-256; absent for a namespace outside
/// `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`.
#[wasm_bindgen(js_name = objectKeyRaw, skip_typescript)]
pub fn object_key_raw(len: u32) -> Result<u32, JsValue> {
    with_boundary(|b| {
        let (namespace, key) = text_of(&b.input, len)?.split_once(SEP).unwrap_or(("", ""));
        let storage_key = Namespace::parse(namespace)
            .ok()
            .map(|namespace| format!("{namespace}/{}", Key::from_segment(key)));
        b.answer.clear();
        b.answer.optional(storage_key.as_deref());
        Ok(b.answer.finish())
    })
}

/// An origin response's fields (`name, value, ...`, lower-case names) in the first `len` bytes
/// of the input, described as an object (see `plan::describe`).
#[wasm_bindgen(js_name = describeRaw, skip_typescript)]
pub fn describe_raw(len: u32) -> Result<u32, JsValue> {
    with_boundary(|b| {
        let fields = pairs(text_of(&b.input, len)?.split(SEP));
        b.answer.clear();
        plan::describe(&fields, &mut b.answer);
        Ok(b.answer.finish())
    })
}

/// `name, value, ...` as pairs in `out`, reusing its strings; a trailing unpaired name and an
/// empty name are dropped.
pub(crate) fn pairs_into<'a>(
    mut fields: impl Iterator<Item = &'a str>,
    out: &mut Vec<(String, String)>,
) {
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
