//! The core's `backfill::Manager` (SPEC §4) for JavaScript, behind `BackfillManager` in
//! `js/api.js`, which checks the arguments and names the events.
//!
//! The raw class takes plain strings and numbers: one method for the copy requests, one for the
//! events about a copy (`copyEvent`, with the event's code), one for mutations, and
//! `pollOutput()` answering one action at a time in the wire form of [`crate::plan`]. A narrow
//! surface keeps the module small, since each export carries its own argument glue.
//!
//! Copies are named by the numbers the manager issued in `startCopy`; a number it never issued
//! is a `TypeError` here rather than reaching the core, which treats it as a bug.

use rangecache_core::backfill::{self, Config, CopyId, DiscardReason, Mode, MutationKind, Refusal};
use rangecache_core::key::{Key, Namespace};
use rangecache_core::{Generation, ObjectKey, TierIdx};
use wasm_bindgen::prelude::*;

use crate::args::{object_arg, quoted, size_of, type_error};
use crate::plan::{SEP, meta_of, push_number};

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

    /// The key's generation; taken before a read opens any tier.
    pub fn generation(&self, namespace: &str, key: &str) -> Result<Seen, JsValue> {
        let key = object_key(namespace, key)?;
        Ok(Seen { generation: self.manager.generation(&key) })
    }

    /// `Manager::request_copy`: a read served from tier `from` asks for a copy of the revision
    /// (`size`, `etag`, `last_modified`) into tier 0, teed or in the background. Answers at
    /// once, in the wire form of `pollOutput`: `startCopy, ...` or `refuse, ...`.
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = copyRequested)]
    pub fn copy_requested(
        &mut self,
        seen: &Seen,
        namespace: &str,
        key: &str,
        from: f64,
        size: f64,
        etag: Option<String>,
        last_modified: Option<String>,
        background: bool,
    ) -> Result<String, JsValue> {
        let key = object_key(namespace, key)?;
        let from = usize::try_from(size_of(from, "request.from")?)
            .map_err(|_| type_error("request.from is too large"))?;
        let size = size_of(size, "request.object.size")?;
        let object = object_arg(size, etag.as_deref(), last_modified.as_deref(), Vec::new())?;
        let mode = if background { Mode::Background } else { Mode::Tee };
        let request = backfill::CopyRequest {
            key,
            seen: seen.generation,
            from: TierIdx::new(from),
            meta: meta_of(object),
            mode,
        };
        let mut out = String::new();
        match self.manager.request_copy(&request) {
            Ok(copy) => {
                // Numbers are issued in increasing order, so this is nearly always a push.
                if let Err(at) = self.issued.binary_search_by_key(&copy.get(), |c| c.get()) {
                    self.issued.insert(at, copy);
                }
                let mode = match mode {
                    Mode::Tee => "tee",
                    Mode::Background => "background",
                };
                let key = &request.key;
                fields(&mut out, &["startCopy"]);
                push_number(&mut out, copy.get());
                fields(&mut out, &[ns(key), k(key)]);
                push_number(&mut out, from as u64);
                fields(&mut out, &[mode]);
            }
            Err(why) => {
                let (why, copy) = refusal(why);
                fields(&mut out, &["refuse", ns(&request.key), k(&request.key), why]);
                match copy {
                    Some(copy) => push_number(&mut out, copy.get()),
                    None => out.push(SEP),
                }
            }
        }
        out.pop();
        Ok(out)
    }

    /// An event about copy `copy`: 0 `SourceRead { bytes }`, 1 `ChunkWritten { bytes }`,
    /// 2 `SourceEnded`, 3 `SourceFailed`, 4 `WriterFailed`, 5 `ClientClosed`, 6 `CopyStopped`,
    /// 7 `CommitFinished { committed: true }`, 8 `CommitFinished { committed: false }`.
    #[wasm_bindgen(js_name = copyEvent)]
    pub fn copy_event(&mut self, event: u8, copy: f64, bytes: f64) -> Result<(), JsValue> {
        let copy = self.copy(copy)?;
        let input = match event {
            0 => backfill::Input::SourceRead { copy, bytes: size_of(bytes, "bytes")? },
            1 => backfill::Input::ChunkWritten { copy, bytes: size_of(bytes, "bytes")? },
            2 => backfill::Input::SourceEnded { copy },
            3 => backfill::Input::SourceFailed { copy },
            4 => backfill::Input::WriterFailed { copy },
            5 => backfill::Input::ClientClosed { copy },
            6 => backfill::Input::CopyStopped { copy },
            7 => backfill::Input::CommitFinished { copy, committed: true },
            8 => backfill::Input::CommitFinished { copy, committed: false },
            _ => return Err(type_error(format!("copy event {event} does not exist"))),
        };
        self.manager.handle_input(input);
        Ok(())
    }

    /// `MutationStarted` (or, with `ended`, `MutationEnded`) of the key; `kind` 0 write,
    /// 1 delete, 2 invalidate.
    pub fn mutation(
        &mut self,
        ended: bool,
        namespace: &str,
        key: &str,
        kind: u8,
    ) -> Result<(), JsValue> {
        let key = object_key(namespace, key)?;
        let kind = match kind {
            0 => MutationKind::Write,
            1 => MutationKind::Delete,
            2 => MutationKind::Invalidate,
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

    /// The next action, as `type` and its fields: `cancel, copy`; `commit, copy`;
    /// `finished, copy`; `discard, copy, why`; `proceedWithMutation, namespace, key`; `shutdownComplete`.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> Option<String> {
        let mut out = String::new();
        match self.manager.poll_output()? {
            backfill::Output::Cancel { copy } => {
                fields(&mut out, &["cancel"]);
                push_number(&mut out, copy.get());
            }
            backfill::Output::Commit { copy } => {
                fields(&mut out, &["commit"]);
                push_number(&mut out, copy.get());
            }
            backfill::Output::Finished { copy } => {
                fields(&mut out, &["finished"]);
                push_number(&mut out, copy.get());
            }
            backfill::Output::Discard { copy, why } => {
                fields(&mut out, &["discard"]);
                push_number(&mut out, copy.get());
                fields(&mut out, &[why.as_str()]);
            }
            backfill::Output::ProceedWithMutation { key } => {
                fields(&mut out, &["proceedWithMutation", ns(&key), k(&key)])
            }
            backfill::Output::ShutdownComplete => fields(&mut out, &["shutdownComplete"]),
        }
        out.pop();
        Some(out)
    }

    /// `started, deduped, committed, cancelled, skipped, inFlight`, then each discard reason
    /// and its count.
    pub fn counters(&self) -> String {
        let counters = self.manager.counters();
        let mut out = String::new();
        for n in [
            counters.started,
            counters.deduped,
            counters.committed,
            counters.cancelled,
            counters.skipped,
            self.manager.n_in_flight() as u64,
        ] {
            push_number(&mut out, n);
        }
        for why in DiscardReason::ALL {
            fields(&mut out, &[why.as_str()]);
            push_number(&mut out, counters.discarded(why));
        }
        out.pop();
        out
    }

    /// The number of the key's copy that may still commit.
    #[wasm_bindgen(js_name = liveCopy)]
    pub fn live_copy(&self, namespace: &str, key: &str) -> Result<Option<f64>, JsValue> {
        let key = object_key(namespace, key)?;
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
    /// The handle behind a number this manager issued.
    fn copy(&self, n: f64) -> Result<CopyId, JsValue> {
        let n = size_of(n, "copy")?;
        self.issued
            .binary_search_by_key(&n, |c| c.get())
            .map(|at| self.issued[at])
            .map_err(|_| type_error(format!("copy {n} was never issued by this manager")))
    }
}

fn ns(key: &ObjectKey) -> &str {
    key.namespace.as_str()
}

fn k(key: &ObjectKey) -> &str {
    key.key.as_str()
}

/// Appends each field and a separator.
fn fields(out: &mut String, values: &[&str]) {
    for value in values {
        out.push_str(value);
        out.push(SEP);
    }
}

/// The key of `/{namespace}/{key}`, as `objectKey` computes it.
fn object_key(namespace: &str, key: &str) -> Result<ObjectKey, JsValue> {
    let parsed = Namespace::parse(namespace).map_err(|_| {
        type_error(format!(
            "namespace {} must be letters, digits, '_' and '-', starting with a letter or digit",
            quoted(namespace)
        ))
    })?;
    Ok(ObjectKey { namespace: parsed, key: Key::from_segment(key) })
}

fn refusal(why: Refusal) -> (&'static str, Option<CopyId>) {
    match why {
        Refusal::Deduplicated { copy } => ("deduplicated", Some(copy)),
        Refusal::TooManyInFlight => ("tooManyInFlight", None),
        Refusal::KeyChanging => ("keyChanging", None),
        Refusal::Superseded => ("superseded", None),
        Refusal::TooLarge => ("tooLarge", None),
        Refusal::ShuttingDown => ("shuttingDown", None),
    }
}
