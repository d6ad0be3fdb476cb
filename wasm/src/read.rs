//! The core's `read::Machine` (SPEC §4) for JavaScript, behind `ReadMachine` in `js/api.js`: a
//! host (the edge worker) drives it by events exactly as the native server does, so which tier
//! is opened, which answer stands, what is copied into tier 0, expiry and `Cache-Status` all
//! come from the core.
//!
//! The raw class takes its strings through the input buffer and answers in the layout of
//! [`crate::wire`]. A host that holds whole objects (a key-value store, a fetch of the whole
//! origin object) reports what a tier holds with `tierOpened`; the window of it that the open
//! yields is resolved here with the core's `read::resolve_open`, against the span and
//! conditions of the open the machine asked for, as a storage tier does natively.

use http::header::ETAG;
use rangecache_core::backfill::{CopyRequest, Mode};
use rangecache_core::range::Span;
use rangecache_core::read::{self, AbortReason, Conditions, Source};
use rangecache_core::{ObjectMeta, RangeLimits, TierIdx, Timestamp};
use wasm_bindgen::prelude::*;

use crate::args::{parse_date, parse_etag, size_of, type_error};
use crate::backfill::{BackfillRaw, Seen, object_key, write_answer};
use crate::plan::{Field, is_no_etag, no_etag, write_plan};
use crate::wire::{Answer, K, SEP};
use crate::{method_of, pairs_into, split_fields, text_of, with_boundary};

/// One read's machine, and what the host asked of the tiers last.
#[wasm_bindgen(js_name = ReadRaw, skip_typescript)]
pub struct ReadRaw {
    machine: read::Machine,
    /// The latest `openTier`: the tier, and the span and conditions its answer is resolved
    /// against.
    asked: Option<(TierIdx, Span, Conditions)>,
    /// The latest `requestCopy`, which `requestCopy` hands to the backfill manager.
    copy: Option<(TierIdx, ObjectMeta, Mode)>,
    /// The host's clock when the read began: the Last-Modified of an object that has none, as
    /// the native server stores the time of a write that names none.
    now: Timestamp,
}

#[wasm_bindgen(js_class = ReadRaw)]
impl ReadRaw {
    /// The read of the request in the first `len` bytes of the input (the method, then
    /// If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, Range and If-Range, each
    /// empty when absent, else `=` and the value), then the names of the tiers, nearest first;
    /// `now` is the host's clock in milliseconds since the epoch.
    #[wasm_bindgen(constructor)]
    pub fn new(len: u32, now: f64) -> Result<ReadRaw, JsValue> {
        let now = Timestamp::from_millis(size_of(now, "now")?);
        with_boundary(|b| {
            let input = text_of(&b.input, len)?;
            let (fields, names) = split_fields::<7>(input);
            let [
                method,
                if_match,
                if_none_match,
                if_modified_since,
                if_unmodified_since,
                range,
                if_range,
            ] = fields;
            let names: Vec<&str> = names.split(SEP).filter(|name| !name.is_empty()).collect();
            if names.is_empty() {
                return Err(type_error("tiers must name at least one tier"));
            }
            let owned = |field: Option<&str>| field.map(str::to_owned);
            let request = read::Request {
                method: method_of(method.unwrap_or_default())?,
                if_match: owned(if_match),
                if_none_match: owned(if_none_match),
                if_modified_since: owned(if_modified_since),
                if_unmodified_since: owned(if_unmodified_since),
                range: owned(range),
                if_range: owned(if_range),
                now,
            };
            let machine = read::Machine::new(request, &names, RangeLimits::default());
            Ok(ReadRaw { machine, asked: None, copy: None, now })
        })
    }

    /// What the host saw, by its code: `tierOpened` (the tier holds the object of `size` bytes
    /// whose entity-tag, Last-Modified, expiry and stored fields are in the input, and a body of
    /// it is in hand unless `body` is false), `tierMissed`, `tierFailed` (of tier `n`), or
    /// `partSent` (part `n` of a multipart body was written).
    pub fn input(
        &mut self,
        event: u8,
        n: f64,
        len: u32,
        size: f64,
        body: bool,
    ) -> Result<(), JsValue> {
        let n =
            usize::try_from(size_of(n, "tier")?).map_err(|_| type_error("tier is too large"))?;
        let tier = TierIdx::new(n);
        let input = match K::from_code(event) {
            Some(K::TierOpened) => {
                let size = size_of(size, "object.size")?;
                let meta = with_boundary(|b| object_of(text_of(&b.input, len)?, size, self.now))?;
                let window = match &self.asked {
                    Some((asked, span, conditions)) if body && *asked == tier => {
                        read::resolve_open(&meta, conditions, *span).ok()
                    }
                    Some(_) | None => None,
                };
                read::Input::TierOpened { tier, meta, window }
            }
            Some(K::TierMissed) => read::Input::TierMissed { tier },
            Some(K::TierFailed) => read::Input::TierFailed { tier },
            Some(K::PartSent) => read::Input::PartSent { index: n },
            _ => return Err(type_error(format!("read event {event} does not exist"))),
        };
        self.machine.handle_input(input);
        Ok(())
    }

    /// Hands the copy the latest `requestCopy` asked for, of the key `namespace, key` in the
    /// input, to `manager` with the generation `seen`, tells the machine its answer and returns
    /// it (as `copyRequested` does). No host ferries the answer between the two machines.
    #[wasm_bindgen(js_name = requestCopy)]
    pub fn request_copy(
        &mut self,
        manager: &mut BackfillRaw,
        seen: &Seen,
        len: u32,
    ) -> Result<u32, JsValue> {
        let Some((from, meta, mode)) = self.copy.take() else {
            return Err(type_error(
                "no copy was asked for: call requestCopy after a requestCopy action",
            ));
        };
        with_boundary(|b| {
            let (key, _) = object_key(text_of(&b.input, len)?)?;
            let request = CopyRequest { key, seen: seen.generation(), from, meta, mode };
            let answer = manager.request(&request);
            self.machine.handle_input(read::Input::CopyAnswered { answer });
            b.answer.clear();
            write_answer(&mut b.answer, &request, answer);
            Ok(b.answer.finish())
        })
    }

    /// The next action, as its type's code and its fields (0 when there is none):
    /// `openTier, tier, start, end, if-match, if-none-match, if-modified-since,
    /// if-unmodified-since` (a span `start, end` with end -1 for the end of the object, or
    /// `-1, n` for the last `n` bytes); `requestCopy, from, mode`; `serve, source, tier,
    /// cache-status, plan` (source `nothing`, `opened` or `parts`, tier -1 for nothing);
    /// `sendPart, index`; `abort, why`; `dropBody, tier`.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> u32 {
        let Some(output) = self.machine.poll_output() else { return 0 };
        with_boundary(|b| {
            let out = &mut b.answer;
            out.clear();
            self.write(out, output);
            out.finish()
        })
    }

    /// True once the response was handed over (or abandoned) and nothing more will be asked.
    #[wasm_bindgen(js_name = isDone)]
    pub fn is_done(&self) -> bool {
        self.machine.is_done()
    }
}

impl ReadRaw {
    fn write(&mut self, out: &mut Answer, output: read::Output) {
        match output {
            read::Output::OpenTier { tier, span, conditions } => {
                out.code(K::OpenTier);
                out.number(tier.get() as u64);
                match span {
                    Span::From { start, end } => {
                        out.number(start);
                        match end {
                            Some(end) => out.number(end),
                            None => out.nums.push(-1.0),
                        }
                    }
                    Span::Last(n) => {
                        out.nums.push(-1.0);
                        out.number(n);
                    }
                }
                out.optional(conditions.if_match.as_deref());
                out.optional(conditions.if_none_match.as_deref());
                out.optional(conditions.if_modified_since.as_deref());
                out.optional(conditions.if_unmodified_since.as_deref());
                self.asked = Some((tier, span, conditions));
            }
            read::Output::RequestCopy { from, meta, mode } => {
                out.code(K::RequestCopy);
                out.number(from.get() as u64);
                out.known(match mode {
                    Mode::Tee => K::Tee,
                    Mode::Background => K::Background,
                });
                self.copy = Some((from, meta, mode));
            }
            read::Output::Serve { plan, source, cache_status } => {
                out.code(K::Serve);
                let (kind, tier) = match source {
                    Source::Nothing => (K::Nothing, None),
                    Source::Opened { tier } => (K::Opened, Some(tier)),
                    Source::Parts { tier } => (K::Parts, Some(tier)),
                };
                out.known(kind);
                match tier {
                    Some(tier) => out.number(tier.get() as u64),
                    None => out.nums.push(-1.0),
                }
                out.string(&cache_status.to_field_value());
                // An object without an entity-tag is planned against a placeholder, never shown.
                write_plan(out, &plan, |name, value| {
                    if name == ETAG && is_no_etag(value) { Field::Skip } else { Field::Value }
                });
            }
            read::Output::SendPart { index } => {
                out.code(K::SendPart);
                out.number(index as u64);
            }
            read::Output::Abort { why } => {
                out.code(K::Abort);
                out.known(match why {
                    AbortReason::RevisionChanged => K::RevisionChanged,
                    AbortReason::TierFailed => K::TierFailed,
                });
            }
            read::Output::DropBody { tier } => {
                out.code(K::DropBody);
                out.number(tier.get() as u64);
            }
        }
    }
}

/// The revision of `size` bytes described by `input`: its entity-tag, Last-Modified and expiry
/// (each empty when absent, else `=` and the value), then its stored fields as `name, value`
/// pairs. Without an entity-tag it is planned against a placeholder no client can match;
/// without a date, `no_date` stands for one.
pub(crate) fn object_of(input: &str, size: u64, no_date: Timestamp) -> Result<ObjectMeta, JsValue> {
    let ([etag, last_modified, expires], rest) = split_optional::<3>(input);
    let mut headers = Vec::new();
    if !rest.is_empty() {
        pairs_into(rest.split(SEP), &mut headers);
    }
    Ok(ObjectMeta {
        size,
        etag: etag.map(parse_etag).transpose()?.unwrap_or_else(no_etag),
        last_modified: last_modified
            .map(|raw| parse_date(raw, "lastModified"))
            .transpose()?
            .unwrap_or(no_date),
        headers,
        expires: expires.map(|raw| parse_date(raw, "expires")).transpose()?,
    })
}

/// `N` optional fields (empty when absent, else `=` and the value), and what follows them.
fn split_optional<const N: usize>(input: &str) -> ([Option<&str>; N], &str) {
    let mut out = [None; N];
    let mut rest = input;
    for field in &mut out {
        let (head, tail) = rest.split_once(SEP).unwrap_or((rest, ""));
        *field = head.strip_prefix('=');
        rest = tail;
    }
    (out, rest)
}
