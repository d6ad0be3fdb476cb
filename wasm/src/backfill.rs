//! `BackfillManager`: the core's `backfill::Manager` (SPEC §4) as a JavaScript class.
//!
//! JavaScript pushes what it observed through one method per event (`copyRequested`,
//! `sourceRead`, `chunkWritten`, `sourceEnded`, ...) and, after each, drains `pollOutput()`
//! until it returns `null`, carrying out every action (`startCopy`, `refuse`, `cancel`,
//! `commit`, `discard`, `proceedWithMutation`, `shutdownComplete`) before the next event.
//!
//! Copies are named by the numbers the manager issued in `startCopy`; a number it never issued
//! is a `TypeError` here rather than reaching the core, which treats it as a bug.

use js_sys::{Object, Reflect};
use rangecache_core::backfill::{self, Config, CopyId, DiscardReason, Mode, MutationKind, Refusal};
use rangecache_core::key::{Key, Namespace};
use rangecache_core::{Generation, ObjectKey, TierIdx};
use wasm_bindgen::prelude::*;

use crate::args::{get, plain_object, quoted, read_object, read_size, required_string, type_error};
use crate::plan::meta_of;

/// The generation of a key as read before a read opens any tier; handed back to
/// `copyRequested` so a copy that spans a change of its key is refused.
#[wasm_bindgen(skip_typescript)]
pub struct Seen {
    generation: Generation,
}

/// The backfill manager: at most one copy per key, commit only of a complete and current copy.
#[wasm_bindgen(js_name = BackfillManager, skip_typescript)]
pub struct BackfillManager {
    manager: backfill::Manager,
    /// Every copy issued, sorted by number, so that JavaScript's numbers map back to handles (a
    /// sorted vector rather than a map: another map type would add its code to the module).
    issued: Vec<CopyId>,
}

/// A plain object built field by field (actions are few and small; the plans, which are many,
/// cross as one string instead).
struct Obj(Object);

impl Obj {
    fn new(kind: &str) -> Obj {
        Obj(Object::new()).set("type", kind)
    }

    fn set(self, name: &str, value: impl Into<JsValue>) -> Obj {
        // Defining a data property on a fresh plain object cannot fail.
        let _ = Reflect::set(&self.0, &JsValue::from_str(name), &value.into());
        self
    }

    fn key(self, key: &ObjectKey) -> Obj {
        self.set("namespace", key.namespace.as_str()).set("key", key.key.as_str())
    }
}

#[wasm_bindgen(js_class = BackfillManager)]
impl BackfillManager {
    /// A manager; `config = { maxInFlight?, maxBacklogBytes? }` overrides the core's defaults.
    #[wasm_bindgen(constructor)]
    pub fn new(config: JsValue) -> Result<BackfillManager, JsValue> {
        let mut bounds = Config::default();
        if !config.is_undefined() && !config.is_null() {
            let config = plain_object(&config, "config")?;
            let max_in_flight = get(&config, "config", "maxInFlight")?;
            if !max_in_flight.is_undefined() {
                let n = read_size(&max_in_flight, "config.maxInFlight")?;
                bounds.max_in_flight = usize::try_from(n)
                    .map_err(|_| type_error("config.maxInFlight is too large"))?;
            }
            let max_backlog = get(&config, "config", "maxBacklogBytes")?;
            if !max_backlog.is_undefined() {
                bounds.max_backlog_bytes = read_size(&max_backlog, "config.maxBacklogBytes")?;
            }
        }
        Ok(BackfillManager { manager: backfill::Manager::new(bounds), issued: Vec::new() })
    }

    /// The key's generation; take it before opening any tier for a read.
    pub fn generation(&self, namespace: JsValue, key: JsValue) -> Result<Seen, JsValue> {
        let key = object_key(&namespace, &key)?;
        Ok(Seen { generation: self.manager.generation(&key) })
    }

    /// A read served from tier `from` (> 0) asks for a copy into tier 0:
    /// `request = { namespace, key, from, object, mode }` with `object` as for `planResponse`
    /// and `mode` `"tee"` (a full read being streamed) or `"background"` (for a ranged read).
    #[wasm_bindgen(js_name = copyRequested)]
    pub fn copy_requested(&mut self, seen: &Seen, request: JsValue) -> Result<(), JsValue> {
        let request = plain_object(&request, "request")?;
        let namespace = get(&request, "request", "namespace")?;
        let key = get(&request, "request", "key")?;
        let key = object_key(&namespace, &key)?;
        let from = read_size(&get(&request, "request", "from")?, "request.from")?;
        let from = usize::try_from(from).map_err(|_| type_error("request.from is too large"))?;
        let object = read_object(&get(&request, "request", "object")?)?;
        let mode =
            match required_string(&get(&request, "request", "mode")?, "request.mode")?.as_str() {
                "tee" => Mode::Tee,
                "background" => Mode::Background,
                other => {
                    return Err(type_error(format!(
                        "request.mode {} is not \"tee\" or \"background\"",
                        quoted(other)
                    )));
                }
            };
        self.manager.handle_input(backfill::Input::CopyRequested {
            key,
            seen: seen.generation,
            from: TierIdx::new(from),
            meta: meta_of(object),
            mode,
        });
        Ok(())
    }

    /// The copy's source delivered `bytes` more bytes.
    #[wasm_bindgen(js_name = sourceRead)]
    pub fn source_read(&mut self, copy: JsValue, bytes: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        let bytes = read_size(&bytes, "bytes")?;
        self.manager.handle_input(backfill::Input::SourceRead { copy, bytes });
        Ok(())
    }

    /// Tier 0's writer accepted `bytes` more bytes of the copy.
    #[wasm_bindgen(js_name = chunkWritten)]
    pub fn chunk_written(&mut self, copy: JsValue, bytes: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        let bytes = read_size(&bytes, "bytes")?;
        self.manager.handle_input(backfill::Input::ChunkWritten { copy, bytes });
        Ok(())
    }

    /// The copy's source reached its end.
    #[wasm_bindgen(js_name = sourceEnded)]
    pub fn source_ended(&mut self, copy: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        self.manager.handle_input(backfill::Input::SourceEnded { copy });
        Ok(())
    }

    /// The copy's source failed.
    #[wasm_bindgen(js_name = sourceFailed)]
    pub fn source_failed(&mut self, copy: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        self.manager.handle_input(backfill::Input::SourceFailed { copy });
        Ok(())
    }

    /// Tier 0's writer failed.
    #[wasm_bindgen(js_name = writerFailed)]
    pub fn writer_failed(&mut self, copy: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        self.manager.handle_input(backfill::Input::WriterFailed { copy });
        Ok(())
    }

    /// The client of a teed read went away before the source's end.
    #[wasm_bindgen(js_name = clientClosed)]
    pub fn client_closed(&mut self, copy: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        self.manager.handle_input(backfill::Input::ClientClosed { copy });
        Ok(())
    }

    /// The task of a cancelled copy stopped.
    #[wasm_bindgen(js_name = copyStopped)]
    pub fn copy_stopped(&mut self, copy: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        self.manager.handle_input(backfill::Input::CopyStopped { copy });
        Ok(())
    }

    /// The commit asked for by a `commit` action finished; `committed` is false if tier 0
    /// refused it.
    #[wasm_bindgen(js_name = commitFinished)]
    pub fn commit_finished(&mut self, copy: JsValue, committed: JsValue) -> Result<(), JsValue> {
        let copy = self.copy(&copy)?;
        let committed = committed.as_bool().ok_or_else(|| {
            type_error(format!(
                "committed must be a boolean, got {}",
                crate::args::describe(&committed)
            ))
        })?;
        self.manager.handle_input(backfill::Input::CommitFinished { copy, committed });
        Ok(())
    }

    /// A write, delete or invalidate (`kind`) of the key is about to start; wait for
    /// `proceedWithMutation` before touching a tier.
    #[wasm_bindgen(js_name = mutationStarted)]
    pub fn mutation_started(
        &mut self,
        namespace: JsValue,
        key: JsValue,
        kind: JsValue,
    ) -> Result<(), JsValue> {
        let key = object_key(&namespace, &key)?;
        let kind = mutation_kind(&kind)?;
        self.manager.handle_input(backfill::Input::MutationStarted { key, kind });
        Ok(())
    }

    /// The mutation reported by `mutationStarted` finished.
    #[wasm_bindgen(js_name = mutationEnded)]
    pub fn mutation_ended(
        &mut self,
        namespace: JsValue,
        key: JsValue,
        kind: JsValue,
    ) -> Result<(), JsValue> {
        let key = object_key(&namespace, &key)?;
        let kind = mutation_kind(&kind)?;
        self.manager.handle_input(backfill::Input::MutationEnded { key, kind });
        Ok(())
    }

    /// The worker is stopping: every copy is cancelled, `shutdownComplete` follows the last.
    #[wasm_bindgen(js_name = shutdownRequested)]
    pub fn shutdown_requested(&mut self) {
        self.manager.handle_input(backfill::Input::ShutdownRequested);
    }

    /// The next action to carry out, or `null` when there is none.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> Result<JsValue, JsValue> {
        let Some(output) = self.manager.poll_output() else {
            return Ok(JsValue::NULL);
        };
        let out = match output {
            backfill::Output::StartCopy { copy, key, from, meta: _, mode } => {
                // Numbers are issued in increasing order, so this is nearly always a push.
                if let Err(at) = self.issued.binary_search_by_key(&copy.get(), |c| c.get()) {
                    self.issued.insert(at, copy);
                }
                let mode = match mode {
                    Mode::Tee => "tee",
                    Mode::Background => "background",
                };
                Obj::new("startCopy")
                    .set("copy", copy.get() as f64)
                    .key(&key)
                    .set("from", from.get() as f64)
                    .set("mode", mode)
            }
            backfill::Output::Refuse { key, why } => {
                let (why, copy) = refusal(why);
                let out = Obj::new("refuse").key(&key).set("why", why);
                match copy {
                    Some(copy) => out.set("copy", copy),
                    None => out,
                }
            }
            backfill::Output::Cancel { copy } => Obj::new("cancel").set("copy", copy.get() as f64),
            backfill::Output::Commit { copy } => Obj::new("commit").set("copy", copy.get() as f64),
            backfill::Output::Discard { copy, why } => {
                Obj::new("discard").set("copy", copy.get() as f64).set("why", why.as_str())
            }
            backfill::Output::ProceedWithMutation { key } => {
                Obj::new("proceedWithMutation").key(&key)
            }
            backfill::Output::ShutdownComplete => Obj::new("shutdownComplete"),
        };
        Ok(out.0.into())
    }

    /// `{ started, deduped, committed, cancelled, skipped, discarded: { reason: n }, inFlight }`.
    pub fn counters(&self) -> JsValue {
        let counters = self.manager.counters();
        let discarded = Object::new();
        for why in DiscardReason::ALL {
            let n = JsValue::from_f64(counters.discarded(why) as f64);
            let _ = Reflect::set(&discarded, &JsValue::from_str(why.as_str()), &n);
        }
        let out = Obj(Object::new())
            .set("started", counters.started as f64)
            .set("deduped", counters.deduped as f64)
            .set("committed", counters.committed as f64)
            .set("cancelled", counters.cancelled as f64)
            .set("skipped", counters.skipped as f64)
            .set("discarded", discarded)
            .set("inFlight", self.manager.n_in_flight() as f64);
        out.0.into()
    }

    /// The number of the key's copy that may still commit, or `null`.
    #[wasm_bindgen(js_name = liveCopy)]
    pub fn live_copy(&self, namespace: JsValue, key: JsValue) -> Result<JsValue, JsValue> {
        let key = object_key(&namespace, &key)?;
        Ok(self
            .manager
            .live_copy(&key)
            .map_or(JsValue::NULL, |copy| JsValue::from_f64(copy.get() as f64)))
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

impl BackfillManager {
    /// The handle behind a number this manager issued.
    fn copy(&self, value: &JsValue) -> Result<CopyId, JsValue> {
        let n = read_size(value, "copy")?;
        self.issued
            .binary_search_by_key(&n, |c| c.get())
            .map(|at| self.issued[at])
            .map_err(|_| type_error(format!("copy {n} was never issued by this manager")))
    }
}

/// The key of `/{namespace}/{key}`, as `objectKey` computes it.
fn object_key(namespace: &JsValue, key: &JsValue) -> Result<ObjectKey, JsValue> {
    let raw = required_string(namespace, "namespace")?;
    let namespace = Namespace::parse(&raw).map_err(|_| {
        type_error(format!(
            "namespace {} must be letters, digits, '_' and '-', starting with a letter or digit",
            quoted(&raw)
        ))
    })?;
    let key = Key::from_segment(&required_string(key, "key")?);
    Ok(ObjectKey { namespace, key })
}

fn mutation_kind(value: &JsValue) -> Result<MutationKind, JsValue> {
    match required_string(value, "kind")?.as_str() {
        "write" => Ok(MutationKind::Write),
        "delete" => Ok(MutationKind::Delete),
        "invalidate" => Ok(MutationKind::Invalidate),
        other => Err(type_error(format!(
            "kind {} is not \"write\", \"delete\" or \"invalidate\"",
            quoted(other)
        ))),
    }
}

fn refusal(why: Refusal) -> (&'static str, Option<f64>) {
    match why {
        Refusal::Deduplicated { copy } => ("deduplicated", Some(copy.get() as f64)),
        Refusal::TooManyInFlight => ("tooManyInFlight", None),
        Refusal::KeyChanging => ("keyChanging", None),
        Refusal::Superseded => ("superseded", None),
        Refusal::ShuttingDown => ("shuttingDown", None),
    }
}
