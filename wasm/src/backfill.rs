//! The core's `backfill::Manager` (SPEC §4) for JavaScript, behind `BackfillManager` in
//! `js/api.js`, which checks the arguments and names the events.
//!
//! The raw class takes its strings through the input buffer and numbers as arguments, and
//! answers in the layout of [`crate::wire`]: a copy request at once (`startCopy` or `refuse`),
//! the events about a copy as one method taking the event's code, and `pollOutput()` one action
//! at a time. A narrow surface keeps the module small, since each export carries its own glue.
//!
//! Copies are named by the numbers the manager issued in `startCopy`; a number it never issued
//! is a `TypeError` here rather than reaching the core, which treats it as a bug.

use rangecache_core::backfill::{
    self, Config, CopyId, CopyRequest, DiscardReason, Mode, MutationKind, Refusal,
};
use rangecache_core::key::{Key, Namespace};
use rangecache_core::{Generation, ObjectKey, TierIdx, Timestamp};
use wasm_bindgen::prelude::*;

use crate::args::{quoted, size_of, type_error};
use crate::wire::{Answer, K, SEP};
use crate::{text_of, with_boundary};

/// The generation of a key as read before a read opens any tier; handed back to
/// `copyRequested` so a copy that spans a change of its key is refused.
#[wasm_bindgen(skip_typescript)]
pub struct Seen {
    generation: Generation,
}

/// The manager and the handles it issued.
#[wasm_bindgen(js_name = BackfillRaw, skip_typescript)]
pub struct BackfillRaw {
    manager: backfill::Manager,
    /// Every copy issued, sorted by number, so that JavaScript's numbers map back to handles (a
    /// sorted vector rather than a map: another map type would add its code to the module).
    issued: Vec<CopyId>,
}

#[wasm_bindgen(js_class = BackfillRaw)]
impl BackfillRaw {
    /// A manager with the core's default bounds, or these.
    #[wasm_bindgen(constructor)]
    pub fn new(
        max_in_flight: Option<f64>,
        max_backlog_bytes: Option<f64>,
    ) -> Result<BackfillRaw, JsValue> {
        let mut bounds = Config::default();
        if let Some(n) = max_in_flight {
            bounds.max_in_flight = usize::try_from(size_of(n, "config.maxInFlight")?)
                .map_err(|_| type_error("config.maxInFlight is too large"))?;
        }
        if let Some(n) = max_backlog_bytes {
            bounds.max_backlog_bytes = size_of(n, "config.maxBacklogBytes")?;
        }
        Ok(BackfillRaw { manager: backfill::Manager::new(bounds), issued: Vec::new() })
    }

    /// The generation of the key `namespace, key` in the input; taken before a read opens any
    /// tier.
    pub fn generation(&self, len: u32) -> Result<Seen, JsValue> {
        let key = with_boundary(|b| object_key(text_of(&b.input, len)?).map(|(key, _)| key))?;
        Ok(Seen { generation: self.manager.generation(&key) })
    }

    /// `Manager::request_copy`: a read served from tier `from` asks for a copy into tier 0,
    /// teed or in the background, of the revision of key `namespace, key` described by `size`
    /// and the input's entity-tag, Last-Modified and expiry (optional fields, after the key).
    /// Answers at once: `startCopy, copy, namespace, key, from, mode` or `refuse, namespace,
    /// key, why, copy (or -1)`.
    #[wasm_bindgen(js_name = copyRequested)]
    pub fn copy_requested(
        &mut self,
        seen: &Seen,
        len: u32,
        from: f64,
        size: f64,
        background: bool,
    ) -> Result<u32, JsValue> {
        let from = usize::try_from(size_of(from, "request.from")?)
            .map_err(|_| type_error("request.from is too large"))?;
        let size = size_of(size, "request.object.size")?;
        let mode = if background { Mode::Background } else { Mode::Tee };
        with_boundary(|b| {
            let (key, rest) = object_key(text_of(&b.input, len)?)?;
            let meta = crate::read::object_of(rest, size, Timestamp::from_millis(0))?;
            let request =
                CopyRequest { key, seen: seen.generation, from: TierIdx::new(from), meta, mode };
            let answer = self.request(&request);
            b.answer.clear();
            write_answer(&mut b.answer, &request, answer);
            Ok(b.answer.finish())
        })
    }

    /// An event about copy `copy`, by its code: `sourceRead` and `chunkWritten` with `bytes`,
    /// `sourceEnded`, `sourceFailed`, `writerFailed`, `clientClosed`, `copyStopped`, and
    /// `commitFinished` with `bytes` 1 when tier 0 took the copy, 0 when not.
    #[wasm_bindgen(js_name = copyEvent)]
    pub fn copy_event(&mut self, event: u8, copy: f64, bytes: f64) -> Result<(), JsValue> {
        let copy = self.copy(copy)?;
        let input = match K::from_code(event) {
            Some(K::SourceRead) => {
                backfill::Input::SourceRead { copy, bytes: size_of(bytes, "bytes")? }
            }
            Some(K::ChunkWritten) => {
                backfill::Input::ChunkWritten { copy, bytes: size_of(bytes, "bytes")? }
            }
            Some(K::SourceEnded) => backfill::Input::SourceEnded { copy },
            Some(K::SourceFailed) => backfill::Input::SourceFailed { copy },
            Some(K::WriterFailed) => backfill::Input::WriterFailed { copy },
            Some(K::ClientClosed) => backfill::Input::ClientClosed { copy },
            Some(K::CopyStopped) => backfill::Input::CopyStopped { copy },
            Some(K::CommitFinished) => {
                backfill::Input::CommitFinished { copy, committed: bytes == 1.0 }
            }
            _ => return Err(type_error(format!("copy event {event} does not exist"))),
        };
        self.manager.handle_input(input);
        Ok(())
    }

    /// `MutationStarted` (or, with `ended`, `MutationEnded`) of the key `namespace, key` in the
    /// input; `kind` the code of `write`, `delete` or `invalidate`.
    pub fn mutation(&mut self, ended: bool, len: u32, kind: u8) -> Result<(), JsValue> {
        let key = with_boundary(|b| object_key(text_of(&b.input, len)?).map(|(key, _)| key))?;
        let kind = match K::from_code(kind) {
            Some(K::Write) => MutationKind::Write,
            Some(K::Delete) => MutationKind::Delete,
            Some(K::Invalidate) => MutationKind::Invalidate,
            _ => return Err(type_error(format!("mutation kind {kind} does not exist"))),
        };
        self.manager.handle_input(if ended {
            backfill::Input::MutationEnded { key, kind }
        } else {
            backfill::Input::MutationStarted { key, kind }
        });
        Ok(())
    }

    /// `Input::ShutdownRequested`.
    #[wasm_bindgen(js_name = shutdownRequested)]
    pub fn shutdown_requested(&mut self) {
        self.manager.handle_input(backfill::Input::ShutdownRequested);
    }

    /// The next action, as its type's code and its fields: `cancel, copy`; `commit, copy`;
    /// `finished, copy`; `discard, copy, why`; `proceedWithMutation, namespace, key`;
    /// `shutdownComplete`; 0 when there is none.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> u32 {
        let Some(output) = self.manager.poll_output() else { return 0 };
        with_boundary(|b| {
            let out = &mut b.answer;
            out.clear();
            match output {
                backfill::Output::Cancel { copy } => copy_action(out, K::Cancel, copy),
                backfill::Output::Commit { copy } => copy_action(out, K::Commit, copy),
                backfill::Output::Finished { copy } => copy_action(out, K::Finished, copy),
                backfill::Output::Discard { copy, why } => {
                    copy_action(out, K::Discard, copy);
                    out.known(discard_reason(why));
                }
                backfill::Output::ProceedWithMutation { key } => {
                    out.code(K::ProceedWithMutation);
                    out.string(key.namespace.as_str());
                    out.string(key.key.as_str());
                }
                backfill::Output::ShutdownComplete => out.code(K::ShutdownComplete),
            }
            out.finish()
        })
    }

    /// `started, deduped, committed, cancelled, skipped, inFlight, n`, then `n` times a
    /// discard reason and its count.
    pub fn counters(&self) -> u32 {
        let counters = self.manager.counters();
        with_boundary(|b| {
            let out = &mut b.answer;
            out.clear();
            for n in [
                counters.started,
                counters.deduped,
                counters.committed,
                counters.cancelled,
                counters.skipped,
                self.manager.n_in_flight() as u64,
                DiscardReason::ALL.len() as u64,
            ] {
                out.number(n);
            }
            for why in DiscardReason::ALL {
                out.known(discard_reason(why));
                out.number(counters.discarded(why));
            }
            out.finish()
        })
    }

    /// The number of the copy of key `namespace, key` (in the input) that may still commit.
    #[wasm_bindgen(js_name = liveCopy)]
    pub fn live_copy(&self, len: u32) -> Result<Option<f64>, JsValue> {
        let key = with_boundary(|b| object_key(text_of(&b.input, len)?).map(|(key, _)| key))?;
        Ok(self.manager.live_copy(&key).map(|copy| copy.get() as f64))
    }

    /// True once a shutdown was requested.
    #[wasm_bindgen(js_name = isShuttingDown)]
    pub fn is_shutting_down(&self) -> bool {
        self.manager.is_shutting_down()
    }

    /// True once `shutdownComplete` was emitted.
    #[wasm_bindgen(js_name = isStopped)]
    pub fn is_stopped(&self) -> bool {
        self.manager.is_stopped()
    }
}

impl BackfillRaw {
    /// Asks the manager for a copy, remembering the handle it issues.
    pub(crate) fn request(&mut self, request: &CopyRequest) -> Result<CopyId, Refusal> {
        let answer = self.manager.request_copy(request);
        if let Ok(copy) = answer {
            // Numbers are issued in increasing order, so this is nearly always a push.
            if let Err(at) = self.issued.binary_search_by_key(&copy.get(), |c| c.get()) {
                self.issued.insert(at, copy);
            }
        }
        answer
    }

    /// The handle behind a number this manager issued.
    fn copy(&self, n: f64) -> Result<CopyId, JsValue> {
        let n = size_of(n, "copy")?;
        self.issued
            .binary_search_by_key(&n, |c| c.get())
            .map(|at| self.issued[at])
            .map_err(|_| type_error(format!("copy {n} was never issued by this manager")))
    }
}

impl Seen {
    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }
}

/// Writes the manager's answer to `request`: `startCopy, copy, namespace, key, from, mode` or
/// `refuse, namespace, key, why, copy (or -1)`.
pub(crate) fn write_answer(
    out: &mut Answer,
    request: &CopyRequest,
    answer: Result<CopyId, Refusal>,
) {
    let key = &request.key;
    match answer {
        Ok(copy) => {
            out.code(K::StartCopy);
            out.number(copy.get());
            out.string(key.namespace.as_str());
            out.string(key.key.as_str());
            out.number(request.from.get() as u64);
            out.known(match request.mode {
                Mode::Tee => K::Tee,
                Mode::Background => K::Background,
            });
        }
        Err(why) => {
            out.code(K::Refuse);
            out.string(key.namespace.as_str());
            out.string(key.key.as_str());
            let (why, copy) = match why {
                Refusal::Deduplicated { copy } => (K::Deduplicated, Some(copy)),
                Refusal::TooManyInFlight => (K::TooManyInFlight, None),
                Refusal::KeyChanging => (K::KeyChanging, None),
                Refusal::Superseded => (K::Superseded, None),
                Refusal::TooLarge => (K::TooLarge, None),
                Refusal::ShuttingDown => (K::ShuttingDown, None),
            };
            out.known(why);
            match copy {
                Some(copy) => out.number(copy.get()),
                None => out.nums.push(-1.0),
            }
        }
    }
}

fn copy_action(out: &mut Answer, code: K, copy: CopyId) {
    out.code(code);
    out.number(copy.get());
}

fn discard_reason(why: DiscardReason) -> K {
    match why {
        DiscardReason::EarlyClose => K::EarlyClose,
        DiscardReason::SourceFailed => K::SourceFailedReason,
        DiscardReason::WriterFailed => K::WriterFailedReason,
        DiscardReason::SizeMismatch => K::SizeMismatch,
        DiscardReason::Lagging => K::Lagging,
        DiscardReason::Superseded => K::Superseded,
        DiscardReason::ShuttingDown => K::ShuttingDownReason,
        DiscardReason::Stale => K::Stale,
    }
}

/// The key of `/{namespace}/{key}` given as the first two fields of `input`, as `objectKey`
/// computes it, and the fields after it.
pub(crate) fn object_key(input: &str) -> Result<(ObjectKey, &str), JsValue> {
    let (namespace, rest) = input.split_once(SEP).unwrap_or((input, ""));
    let (key, rest) = rest.split_once(SEP).unwrap_or((rest, ""));
    let parsed = Namespace::parse(namespace).map_err(|_| {
        type_error(format!(
            "namespace {} must be letters, digits, '_' and '-', starting with a letter or digit",
            quoted(namespace)
        ))
    })?;
    Ok((ObjectKey { namespace: parsed, key: Key::from_segment(key) }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KNOWN;

    #[test]
    fn every_discard_reason_is_sent_as_its_metric_label() {
        for why in DiscardReason::ALL {
            assert_eq!(KNOWN[discard_reason(why) as usize], why.as_str());
        }
    }
}
