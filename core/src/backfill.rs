//! The backfill manager: copies from a deeper tier into tier 0, one per key at a time (SPEC §4).
//!
//! One [`Manager`] per server decides which copies start, which commit and which are thrown
//! away; the host runs the copies (reads the source, writes tier 0) and reports what happened.
//!
//! # Copy requests
//!
//! A read that asks for a copy (`read::Output::RequestCopy`) gets its answer at once
//! from [`Manager::request_copy`], like a function call: the copy's handle when it starts, or
//! why it does not. That answer is all the read machine needs, so no host ferries it between
//! the two machines, and nothing else happens on a request (no output is queued).
//!
//! ```text
//! request_copy(key, seen, from, meta, mode)  Ok(copy)                          a new copy
//!                                            Err(Deduplicated { copy })        one is in
//!                                                     flight, or one of this revision
//!                                                     committed after `seen` was read
//!                                            Err(TooManyInFlight)              limit reached
//!                                            Err(KeyChanging)                  a write is running
//!                                            Err(Superseded)                   key changed (or a
//!                                                     copy of another revision committed)
//!                                                     after `seen` was read
//!                                            Err(TooLarge)                     tier 0 cannot hold it
//!                                            Err(ShuttingDown)
//! ```
//!
//! # Events and actions
//!
//! ```text
//! host reports (Input)                      manager answers (Output)
//! ------------------------------------      ---------------------------------------------------
//! SourceOpened { copy, etag, size }         Discard { SourceFailed } unless it is the revision
//!                                           the copy was started for (strongly the same
//!                                           entity-tag, the same size)
//! SourceRead { copy, bytes }                Discard { Lagging } past the backlog bound,
//! ChunkWritten { copy, bytes }              Discard { SizeMismatch } past the expected size,
//!                                           Commit once all is written after the source's EOF
//! SourceEnded { copy }                      Commit, or Discard { SizeMismatch }
//! SourceFailed / WriterFailed / ClientClosed Discard { SourceFailed | WriterFailed | EarlyClose }
//!                                           (once committing, only WriterFailed: the writer of
//!                                           an empty object failed to start)
//! CommitFinished { copy, committed }        Finished { copy } (counts; a commit advances the
//!                                           generation; may finish a shutdown or free a
//!                                           mutation)
//! MutationStarted { key, kind }             Cancel { copy } of the key's copy in flight, then
//!                                           ProceedWithMutation { key } once no commit of the
//!                                           key is under way
//! MutationEnded { key, kind }               (advances the generation again)
//! CopyStopped { copy }                      Discard { Superseded | ShuttingDown } after a Cancel
//! ShutdownRequested                         Cancel every copy; ShutdownComplete when none is left
//! any input naming a finished copy          Discard { Stale }
//! ```
//!
//! # Life of one copy
//!
//! ```text
//!   request_copy ──Ok(copy)──► Copying { read, written }
//!                                  │ SourceRead / ChunkWritten (backlog = read - written)
//!                                  │   backlog > bound ─────────────────► Discard(Lagging)
//!                                  │ SourceFailed / WriterFailed / ClientClosed ► Discard(..)
//!                                  │ SourceEnded, read == expected
//!                                  ▼
//!                                Flushing { written }   (source done, tier 0 catching up)
//!                                  │ ChunkWritten until written == expected
//!                                  │ generation current, not shutting down ──► Commit
//!                                  ▼
//!                                Committing ──CommitFinished──► Finished (gone; if committed,
//!                                  │                                remembered as the key's fill)
//!                                  └─WriterFailed (an empty object's writer never started)
//!                                                 ──► Discard(WriterFailed)
//!
//!   Every copy started ends with exactly one Finished or one Discard (other than Stale), so
//!   the host can forget whatever it keeps per copy at that output.
//!
//!   Copying / Flushing ──MutationStarted or ShutdownRequested──► Cancel ► Cancelling
//!   Cancelling ──any report that the host task ended──► Discard(Superseded | ShuttingDown)
//! ```
//!
//! # Generations
//!
//! Generations are the manager's clock: every mutation start, mutation end and committed copy
//! takes the next one. A read looks up [`Manager::generation`] *before* it opens any tier and
//! hands it back as `seen` in its [`CopyRequest`], which is then judged by what happened to the
//! key after `seen`:
//!
//! * a write, delete or invalidate: the copy would carry bytes older than that change, so it
//!   is refused (`Superseded`). No copy of a key starts while a mutation of it runs, and one
//!   in flight is cancelled, so a copy never spans a change of its key. A mutation must wait
//!   for [`Output::ProceedWithMutation`] before it touches a tier: that is emitted at once
//!   unless a commit of the key is under way, and then when that commit finished, so a copy's
//!   commit can never land after the newer write it raced.
//! * a copy committed into tier 0 (reported by `CommitFinished`, after it landed): the read
//!   probed tier 0 before the copy was there. If the copy is of the same revision the read asks
//!   for, it already did this read's work (`Deduplicated`, naming the committed copy); of
//!   another revision, which one is newer is unknown and tier 0 keeps what it has
//!   (`Superseded`). Either way the deeper tier is not read whole a second time, which under a
//!   burst of cold reads of one key would otherwise happen as soon as the first copy is no
//!   longer in flight. A read that looks up its generation after `CommitFinished` probes a
//!   tier 0 that holds the copy, and if tier 0 has since lost it, that read's request starts a
//!   new copy.
//! * nothing: the copy may start.
//!
//! ```text
//!   seen ──► [ mutation started/ended ]  ──► request: Superseded
//!   seen ──► [ copy committed, same revision ] ──► request: Deduplicated { committed copy }
//!   seen ──► [ copy committed, other revision ] ──► request: Superseded
//!   [ copy committed ] ──► seen ──► request: Ok(copy) (tier 0 lost it)
//! ```
//!
//! Idle keys are forgotten to keep the map small. The latest change of the keys forgotten most
//! lately (at most 4096 entries) is kept by key, so a read that began before a change of a
//! forgotten key still sees it as changed, and a change of *another* key refuses nothing. A key
//! pushed out of that bounded memory raises a floor, the latest change of any key no longer remembered, and a
//! request for a key in neither memory is judged against the floor. A committed copy keeps its
//! key remembered until 4096 more copies committed, so that the reads racing it find it; a
//! mutation of the key ends that memory at once. The price of the bound is that a read running
//! while more than 4096 other keys changed and were forgotten may have a safe copy refused
//! (`Superseded`); the next read asks again.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::key::ObjectKey;
use crate::object::ObjectMeta;
use crate::tier::TierIdx;
use crate::validators::EntityTag;

/// Names one copy; issued by the manager from a counter, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CopyId(u64);

impl CopyId {
    /// The number behind the handle (for logs and maps in the host).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CopyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy#{}", self.0)
    }
}

/// A point in the manager's history: advanced by every write, delete and invalidate and by
/// every copy committed into tier 0, never reused. A read takes one before it opens any tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

/// How a copy gets its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The client's full read from a deeper tier is teed into tier 0 as it streams.
    Tee,
    /// A background task reads the whole object from the deeper tier, pinned to its entity-tag.
    Background,
}

/// What changed a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MutationKind {
    /// A write (PUT or POST).
    Write,
    /// A delete.
    Delete,
    /// An invalidation of the non-authoritative tiers.
    Invalidate,
}

/// The manager's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most copies alive at once (including those cancelled but not yet stopped); beyond it a
    /// request is refused with [`Refusal::TooManyInFlight`] and a later read asks again.
    pub max_in_flight: usize,
    /// Most bytes read from the source but not yet written to tier 0; a copy past it is
    /// abandoned ([`DiscardReason::Lagging`]) so a slow tier 0 never holds memory unboundedly.
    pub max_backlog_bytes: u64,
    /// Largest object tier 0 can ever hold (its capacity), if bounded: a copy of a larger
    /// revision is refused ([`Refusal::TooLarge`]) instead of reading the whole source for a
    /// tier 0 that must refuse it, on every ranged read of that object.
    pub tier_0_max_size: Option<u64>,
}

impl Default for Config {
    /// 64 copies and 8 MiB of backlog each: at most 512 MiB of backlog, which builds up only
    /// behind a slow tier 0. A memory tier 0 also buffers each copy's whole object until
    /// commit; those buffers are bounded by the memory tier's write budget (by default its
    /// capacity), not by this config, and a copy that does not fit is refused and discarded.
    fn default() -> Config {
        Config { max_in_flight: 64, max_backlog_bytes: 8_388_608, tier_0_max_size: None }
    }
}

/// A read served from tier `from` > 0 asks for a copy of `meta`'s revision into tier 0
/// ([`Manager::request_copy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyRequest {
    /// The object.
    pub key: ObjectKey,
    /// [`Manager::generation`] of the key, read before the read opened any tier.
    pub seen: Generation,
    /// The tier the bytes come from.
    pub from: TierIdx,
    /// The revision served (its entity-tag pins the copy, its size is expected at EOF).
    pub meta: ObjectMeta,
    /// Tee of a full read, or a background copy for a ranged read.
    pub mode: Mode,
}

/// What the host observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The source of a background copy, opened whole and pinned to the copy's entity-tag,
    /// answered with the revision `etag` of `size` bytes. Some backends ignore the pin, so the
    /// manager checks the revision itself. (A tee's source is the read being served, whose
    /// revision the read machine checked.)
    SourceOpened {
        /// The copy.
        copy: CopyId,
        /// The entity-tag of the revision opened.
        etag: EntityTag,
        /// Its size.
        size: u64,
    },
    /// The copy's source delivered `bytes` more bytes.
    SourceRead {
        /// The copy.
        copy: CopyId,
        /// Bytes in this chunk.
        bytes: u64,
    },
    /// Tier 0's writer accepted `bytes` more bytes.
    ChunkWritten {
        /// The copy.
        copy: CopyId,
        /// Bytes in this chunk.
        bytes: u64,
    },
    /// The copy's source reached EOF.
    SourceEnded {
        /// The copy.
        copy: CopyId,
    },
    /// The copy's source failed.
    SourceFailed {
        /// The copy.
        copy: CopyId,
    },
    /// Tier 0's writer failed.
    WriterFailed {
        /// The copy.
        copy: CopyId,
    },
    /// The client of a teed read went away before the source's EOF.
    ClientClosed {
        /// The copy.
        copy: CopyId,
    },
    /// The host task of a cancelled copy stopped.
    CopyStopped {
        /// The copy.
        copy: CopyId,
    },
    /// The commit asked for by [`Output::Commit`] finished.
    CommitFinished {
        /// The copy.
        copy: CopyId,
        /// False if tier 0 refused it (for example a size mismatch seen by the writer).
        committed: bool,
    },
    /// A write, delete or invalidate of `key` is about to start.
    MutationStarted {
        /// The object.
        key: ObjectKey,
        /// What kind of change.
        kind: MutationKind,
    },
    /// A mutation reported by [`Input::MutationStarted`] finished (committed or not).
    MutationEnded {
        /// The object.
        key: ObjectKey,
        /// What kind of change.
        kind: MutationKind,
    },
    /// The server is stopping.
    ShutdownRequested,
}

/// What the host must do.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Stop the task of `copy`; a [`Output::Discard`] follows once it reported its end.
    Cancel {
        /// The copy.
        copy: CopyId,
    },
    /// Commit tier 0's writer of `copy`, then report [`Input::CommitFinished`].
    Commit {
        /// The copy.
        copy: CopyId,
    },
    /// Copy `copy` is over: its commit was reported with [`Input::CommitFinished`], whether
    /// tier 0 took it or not. Forget what is kept for it; nothing more will be asked of it.
    Finished {
        /// The copy.
        copy: CopyId,
    },
    /// Abort tier 0's writer of `copy` and stop teeing or reading; the client's read goes on.
    Discard {
        /// The copy.
        copy: CopyId,
        /// Why (the metric label).
        why: DiscardReason,
    },
    /// The mutation of `key` reported by [`Input::MutationStarted`] may now touch the tiers.
    ProceedWithMutation {
        /// The object.
        key: ObjectKey,
    },
    /// Every copy has finished after a shutdown; tiers may be closed. Nothing starts or
    /// commits any more.
    ShutdownComplete,
}

/// Why a copy was not started ([`Manager::request_copy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// A copy of the key is already in flight and will fill tier 0 for this read too, or a
    /// copy of the same revision committed into tier 0 after the read looked up its generation.
    Deduplicated {
        /// The copy in flight, or the copy that committed.
        copy: CopyId,
    },
    /// [`Config::max_in_flight`] copies are alive.
    TooManyInFlight,
    /// A write, delete or invalidate of the key is running.
    KeyChanging,
    /// The key changed after the read looked up its generation, or a copy of another revision
    /// committed into tier 0 since.
    Superseded,
    /// The revision is larger than tier 0 can ever hold ([`Config::tier_0_max_size`]).
    TooLarge,
    /// The manager is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// True when the refusal counts as `deduped` rather than `skipped` in the metrics.
    pub fn is_deduplicated(self) -> bool {
        match self {
            Refusal::Deduplicated { .. } => true,
            Refusal::TooManyInFlight
            | Refusal::KeyChanging
            | Refusal::Superseded
            | Refusal::TooLarge
            | Refusal::ShuttingDown => false,
        }
    }
}

/// Why a copy was thrown away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiscardReason {
    /// The client of a teed read closed before EOF.
    EarlyClose,
    /// The source failed.
    SourceFailed,
    /// Tier 0's writer failed, or refused the commit.
    WriterFailed,
    /// The source's byte count differs from the expected size (short or long).
    SizeMismatch,
    /// Tier 0 fell more than [`Config::max_backlog_bytes`] behind the source.
    Lagging,
    /// A write, delete or invalidate of the key cancelled the copy.
    Superseded,
    /// Shutdown cancelled the copy.
    ShuttingDown,
    /// The input named a copy that had already finished; nothing is left to do.
    Stale,
}

impl DiscardReason {
    /// Every reason, in a fixed order (for exporting counters).
    pub const ALL: [DiscardReason; 8] = [
        DiscardReason::EarlyClose,
        DiscardReason::SourceFailed,
        DiscardReason::WriterFailed,
        DiscardReason::SizeMismatch,
        DiscardReason::Lagging,
        DiscardReason::Superseded,
        DiscardReason::ShuttingDown,
        DiscardReason::Stale,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::EarlyClose => "early_close",
            DiscardReason::SourceFailed => "source_failed",
            DiscardReason::WriterFailed => "writer_failed",
            DiscardReason::SizeMismatch => "size_mismatch",
            DiscardReason::Lagging => "lagging",
            DiscardReason::Superseded => "superseded",
            DiscardReason::ShuttingDown => "shutting_down",
            DiscardReason::Stale => "stale",
        }
    }

    fn index(self) -> usize {
        match self {
            DiscardReason::EarlyClose => 0,
            DiscardReason::SourceFailed => 1,
            DiscardReason::WriterFailed => 2,
            DiscardReason::SizeMismatch => 3,
            DiscardReason::Lagging => 4,
            DiscardReason::Superseded => 5,
            DiscardReason::ShuttingDown => 6,
            DiscardReason::Stale => 7,
        }
    }
}

/// Counters for the host to export (`rangecache_backfills_total{event}` and
/// `rangecache_backfills_in_flight`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Copies started.
    pub started: u64,
    /// Requests refused because a copy of the key was in flight or had committed since.
    pub deduped: u64,
    /// Copies committed into tier 0.
    pub committed: u64,
    /// Copies cancelled (by a mutation or shutdown).
    pub cancelled: u64,
    /// Requests refused for any other reason.
    pub skipped: u64,
    discarded: [u64; 8],
}

impl Counters {
    /// Copies discarded for `why` ([`DiscardReason::Stale`] counts stale inputs, not copies).
    pub fn discarded(&self, why: DiscardReason) -> u64 {
        self.discarded[why.index()]
    }

    /// Copies discarded for any reason but [`DiscardReason::Stale`].
    pub fn discarded_total(&self) -> u64 {
        DiscardReason::ALL
            .iter()
            .filter(|why| **why != DiscardReason::Stale)
            .map(|why| self.discarded(*why))
            .sum()
    }
}

/// The generation-keyed backfill manager (SPEC §4); see the module doc for its events.
#[derive(Debug)]
pub struct Manager {
    config: Config,
    phase: Phase,
    /// What is remembered of each key: its state while it is active, its latest change once
    /// it was forgotten lately (at most [`FORGOTTEN_REMEMBERED`] of those).
    keys: Keys,
    copies: Copies,
    next_copy: u64,
    /// The last generation issued.
    clock: u64,
    /// The latest change of every key `keys` does not remember: the floor.
    forgotten: u64,
    /// The order forgotten keys were remembered in, oldest first; an entry whose generation
    /// `keys` no longer holds for its key is stale and skipped.
    recent_order: VecDeque<(ObjectKey, Generation)>,
    /// Commits remembered by their keys, oldest first; see [`FILLS_REMEMBERED`].
    fills: VecDeque<(ObjectKey, CopyId)>,
    counters: Counters,
    outputs: VecDeque<Output>,
}

/// Whether the manager still takes copies.
///
/// ```text
///   Running ──ShutdownRequested──► Draining ──last copy finished──► Stopped
///      └──────ShutdownRequested with no copy alive─────────────────────┘
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Stopped,
}

/// Most commits remembered: a filled key stays in the map until this many later commits, so a
/// read that probed tier 0 before the commit still finds it when it asks for a copy. Past
/// that, the key is forgotten like any other.
const FILLS_REMEMBERED: usize = 4096;

/// Most forgotten keys whose latest change is kept by key; past that, the oldest raises the
/// floor every key in no memory is judged against.
const FORGOTTEN_REMEMBERED: usize = 4096;

#[derive(Debug)]
struct KeyState {
    /// The latest write, delete or invalidate of the key, or commit no longer remembered as
    /// `filled`; for a key made again after being forgotten, its change remembered then, or if
    /// that memory is gone the floor (the latest change of any key no longer remembered).
    changed: Generation,
    /// The copy committed into tier 0 after `changed`, if one did and it is still remembered.
    filled: Option<Fill>,
    /// The one copy of this key that may still commit (Copying, Flushing or Committing).
    live: Option<CopyId>,
    /// Mutations started and not yet ended.
    n_mutating: u32,
    /// Mutations waiting for a commit of this key to finish before they may proceed.
    n_waiting: u32,
}

/// A copy that committed into tier 0.
#[derive(Debug)]
struct Fill {
    copy: CopyId,
    /// When it committed.
    at: Generation,
    /// The revision it put there.
    etag: EntityTag,
    size: u64,
}

#[derive(Debug)]
struct Copy {
    key: ObjectKey,
    /// The generation its request was checked against.
    generation: Generation,
    etag: EntityTag,
    expected: u64,
    state: CopyState,
}

/// Where one copy is; see the module doc for the diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyState {
    /// Bytes flow from the source to tier 0.
    Copying { read: u64, written: u64 },
    /// The source reached EOF with the expected size; tier 0 has `written` of them.
    Flushing { written: u64 },
    /// A commit was asked for; waiting for the host to report it.
    Committing,
    /// Cancelled; waiting for the host task to report that it ended.
    Cancelling { why: DiscardReason },
}

impl Manager {
    /// A manager with no copy and nothing changed yet.
    pub fn new(config: Config) -> Manager {
        Manager {
            config,
            phase: Phase::Running,
            keys: Keys::default(),
            copies: Copies::default(),
            next_copy: 0,
            clock: 0,
            forgotten: 0,
            recent_order: VecDeque::new(),
            fills: VecDeque::new(),
            counters: Counters::default(),
            outputs: VecDeque::new(),
        }
    }

    /// Answers a read's request for a copy into tier 0: the new copy's handle, or why no copy
    /// starts. On `Ok`, run the copy: for [`Mode::Background`] open tier `from` whole, pinned
    /// with `If-Match` to `meta.etag`; for [`Mode::Tee`] tee the read already streaming. Either
    /// way write into tier 0 a new object described by `meta`, expecting exactly `meta.size`
    /// bytes, and report the copy's progress with [`Manager::handle_input`]. Queues no output.
    pub fn request_copy(&mut self, request: &CopyRequest) -> Result<CopyId, Refusal> {
        let CopyRequest { key, seen, from: _, meta, mode: _ } = request;
        let refusal = match self.phase {
            Phase::Draining | Phase::Stopped => Some(Refusal::ShuttingDown),
            Phase::Running => self.refusal(key, *seen, meta),
        };
        if let Some(why) = refusal {
            if why.is_deduplicated() {
                self.counters.deduped += 1;
            } else {
                self.counters.skipped += 1;
            }
            return Err(why);
        }
        let copy = CopyId(self.next_copy);
        self.next_copy += 1;
        let state = self.key_state(key);
        state.live = Some(copy);
        self.copies.insert(
            copy,
            Copy {
                key: key.clone(),
                generation: *seen,
                etag: meta.etag.clone(),
                expected: meta.size,
                state: CopyState::Copying { read: 0, written: 0 },
            },
        );
        self.counters.started += 1;
        Ok(copy)
    }

    /// Feeds one observation; drain [`Manager::poll_output`] before the next.
    pub fn handle_input(&mut self, input: Input) {
        match input {
            Input::SourceOpened { copy, etag, size } => self.on_source_opened(copy, &etag, size),
            Input::SourceRead { copy, bytes } => self.on_source_read(copy, bytes),
            Input::ChunkWritten { copy, bytes } => self.on_chunk_written(copy, bytes),
            Input::SourceEnded { copy } => self.on_source_ended(copy),
            Input::SourceFailed { copy } => self.on_copy_failed(copy, DiscardReason::SourceFailed),
            Input::WriterFailed { copy } => self.on_copy_failed(copy, DiscardReason::WriterFailed),
            Input::ClientClosed { copy } => self.on_copy_failed(copy, DiscardReason::EarlyClose),
            Input::CopyStopped { copy } => self.on_copy_stopped(copy),
            Input::CommitFinished { copy, committed } => self.on_commit_finished(copy, committed),
            Input::MutationStarted { key, kind: _ } => self.on_mutation_started(key),
            Input::MutationEnded { key, kind: _ } => self.on_mutation_ended(key),
            Input::ShutdownRequested => self.on_shutdown_requested(),
        }
    }

    /// The next action to carry out, in order; `None` when there is nothing left to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The current generation of `key`: every change of it so far, and every copy of it
    /// committed so far, is at or before it. A read takes it before opening any tier.
    pub fn generation(&self, key: &ObjectKey) -> Generation {
        // The manager's clock serves every key: it is never older than the key's own history,
        // and a change of some other key after it makes no copy of this one look stale.
        let _ = key;
        Generation(self.clock)
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Copies alive: started and not yet committed or discarded (cancelled ones included).
    pub fn n_in_flight(&self) -> usize {
        self.copies.len()
    }

    /// True once a shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        match self.phase {
            Phase::Running => false,
            Phase::Draining | Phase::Stopped => true,
        }
    }

    /// True once [`Output::ShutdownComplete`] was emitted.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// The copy of `key` that may still commit, if any.
    pub fn live_copy(&self, key: &ObjectKey) -> Option<CopyId> {
        self.keys.get(key).and_then(|state| state.live)
    }

    fn refusal(&self, key: &ObjectKey, seen: Generation, meta: &ObjectMeta) -> Option<Refusal> {
        if self.config.tier_0_max_size.is_some_and(|max| meta.size > max) {
            return Some(Refusal::TooLarge);
        }
        match self.keys.get(key) {
            Some(state) => {
                if state.n_mutating > 0 {
                    return Some(Refusal::KeyChanging);
                }
                if let Some(copy) = state.live {
                    return Some(Refusal::Deduplicated { copy });
                }
                if seen < state.changed {
                    return Some(Refusal::Superseded);
                }
                // Tier 0 got a copy after this read probed it: another would read the whole
                // object from the deeper tier again. Of the same revision, this read's copy is
                // done; of another, which one is newer is unknown, so tier 0 keeps what it has.
                if let Some(fill) = &state.filled
                    && seen < fill.at
                {
                    let same = fill.etag == meta.etag && fill.size == meta.size;
                    return Some(if same {
                        Refusal::Deduplicated { copy: fill.copy }
                    } else {
                        Refusal::Superseded
                    });
                }
            }
            // Whatever happened to a forgotten key happened at or before its remembered
            // change, or if that memory is gone, at or before the floor.
            None if seen < self.forgotten_change(key) => return Some(Refusal::Superseded),
            None => {}
        }
        if self.copies.len() >= self.config.max_in_flight {
            return Some(Refusal::TooManyInFlight);
        }
        None
    }

    fn on_source_opened(&mut self, copy: CopyId, etag: &EntityTag, size: u64) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Copying { .. } | CopyState::Flushing { .. } => {
                let found = &self.copies[&copy];
                // Only the revision the read served may fill tier 0 (SPEC §1: one revision's
                // bytes under one revision's metadata).
                if !(etag.strong_eq(&found.etag) && size == found.expected) {
                    self.discard(copy, DiscardReason::SourceFailed);
                }
            }
            CopyState::Committing | CopyState::Cancelling { .. } => {}
        }
    }

    fn on_source_read(&mut self, copy: CopyId, bytes: u64) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Copying { read, written } => {
                let read = read.saturating_add(bytes);
                let expected = self.copies[&copy].expected;
                if read > expected {
                    return self.discard(copy, DiscardReason::SizeMismatch);
                }
                if read - written > self.config.max_backlog_bytes {
                    return self.discard(copy, DiscardReason::Lagging);
                }
                self.set_state(copy, CopyState::Copying { read, written });
            }
            // Bytes after EOF: the source lied about its end.
            CopyState::Flushing { .. } => self.discard(copy, DiscardReason::SizeMismatch),
            // The copy's fate is sealed; late reports change nothing.
            CopyState::Committing | CopyState::Cancelling { .. } => {}
        }
    }

    fn on_chunk_written(&mut self, copy: CopyId, bytes: u64) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Copying { read, written } => {
                let written = written.saturating_add(bytes);
                // A writer cannot have accepted bytes the source never delivered.
                if written > read {
                    return self.discard(copy, DiscardReason::SizeMismatch);
                }
                self.set_state(copy, CopyState::Copying { read, written });
            }
            CopyState::Flushing { written } => {
                let written = written.saturating_add(bytes);
                let expected = self.copies[&copy].expected;
                if written > expected {
                    return self.discard(copy, DiscardReason::SizeMismatch);
                }
                self.set_state(copy, CopyState::Flushing { written });
                self.try_commit(copy);
            }
            CopyState::Committing | CopyState::Cancelling { .. } => {}
        }
    }

    fn on_source_ended(&mut self, copy: CopyId) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Copying { read, written } => {
                if read != self.copies[&copy].expected {
                    return self.discard(copy, DiscardReason::SizeMismatch);
                }
                self.set_state(copy, CopyState::Flushing { written });
                self.try_commit(copy);
            }
            CopyState::Flushing { .. } => self.discard(copy, DiscardReason::SizeMismatch),
            CopyState::Committing => {}
            CopyState::Cancelling { why } => self.finish_discard(copy, why),
        }
    }

    fn on_copy_failed(&mut self, copy: CopyId, why: DiscardReason) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Copying { .. } | CopyState::Flushing { .. } => self.discard(copy, why),
            // The commit of an empty object is asked for before its first (and only) step, the
            // creation of tier 0's writer: a writer that then fails to start is the commit
            // failing, and no CommitFinished will follow. Waiting for one would hold the key,
            // and every mutation of it, forever.
            CopyState::Committing if why == DiscardReason::WriterFailed => self.discard(copy, why),
            // A client closing after the last byte was handed to tier 0 changes nothing.
            CopyState::Committing => {}
            CopyState::Cancelling { why } => self.finish_discard(copy, why),
        }
    }

    fn on_copy_stopped(&mut self, copy: CopyId) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Cancelling { why } => self.finish_discard(copy, why),
            // A task that stops on its own before EOF leaves a fragment: never committed.
            CopyState::Copying { .. } | CopyState::Flushing { .. } => {
                self.discard(copy, DiscardReason::SourceFailed)
            }
            CopyState::Committing => {}
        }
    }

    fn on_commit_finished(&mut self, copy: CopyId, committed: bool) {
        let Some(state) = self.state_of(copy) else { return };
        match state {
            CopyState::Committing => {
                if committed {
                    self.counters.committed += 1;
                    self.remember_fill(copy);
                } else {
                    self.counters.discarded[DiscardReason::WriterFailed.index()] += 1;
                }
                // Before what the removal may free (a waiting mutation, the end of a shutdown).
                self.outputs.push_back(Output::Finished { copy });
                self.remove(copy);
            }
            // A commit never asked for: treat the copy as failed rather than trust it.
            CopyState::Copying { .. } | CopyState::Flushing { .. } => {
                self.discard(copy, DiscardReason::WriterFailed)
            }
            CopyState::Cancelling { why } => self.finish_discard(copy, why),
        }
    }

    fn on_mutation_started(&mut self, key: ObjectKey) {
        self.clock += 1;
        let generation = Generation(self.clock);
        let state = self.key_state(&key);
        state.changed = generation;
        state.filled = None;
        state.n_mutating += 1;
        let live = state.live;
        let mut committing = false;
        if let Some(copy) = live {
            match self.copies[&copy].state {
                CopyState::Copying { .. } | CopyState::Flushing { .. } => {
                    self.cancel(copy, DiscardReason::Superseded)
                }
                CopyState::Committing => committing = true,
                CopyState::Cancelling { .. } => {
                    unreachable!("a cancelled copy is never the live copy of its key")
                }
            }
        }
        if committing {
            self.keys.get_mut(&key).expect("entry made above").n_waiting += 1;
        } else {
            self.outputs.push_back(Output::ProceedWithMutation { key });
        }
    }

    fn on_mutation_ended(&mut self, key: ObjectKey) {
        self.clock += 1;
        let generation = Generation(self.clock);
        let Some(state) = self.keys.get_mut(&key) else {
            // A mutation never reported as started: still make sure older reads see a change.
            self.remember_forgotten(key, generation);
            return;
        };
        state.changed = generation;
        state.filled = None;
        state.n_mutating = state.n_mutating.saturating_sub(1);
        self.forget_if_idle(&key);
    }

    fn on_shutdown_requested(&mut self) {
        match self.phase {
            Phase::Running => {}
            Phase::Draining => return,
            Phase::Stopped => {
                self.outputs.push_back(Output::ShutdownComplete);
                return;
            }
        }
        self.phase = Phase::Draining;
        let cancellable: Vec<CopyId> = self
            .copies
            .iter()
            .filter(|(_, copy)| match copy.state {
                CopyState::Copying { .. } | CopyState::Flushing { .. } => true,
                CopyState::Committing | CopyState::Cancelling { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for copy in cancellable {
            self.cancel(copy, DiscardReason::ShuttingDown);
        }
        self.finish_shutdown_if_drained();
    }

    /// The state of `copy`, or `None` after answering a stale input with a Discard.
    fn state_of(&mut self, copy: CopyId) -> Option<CopyState> {
        if let Some(found) = self.copies.get(&copy) {
            return Some(found.state);
        }
        assert!(copy.0 < self.next_copy, "{copy} was never issued by this manager");
        self.counters.discarded[DiscardReason::Stale.index()] += 1;
        self.outputs.push_back(Output::Discard { copy, why: DiscardReason::Stale });
        None
    }

    fn set_state(&mut self, copy: CopyId, state: CopyState) {
        self.copies.get_mut(&copy).expect("state_of found this copy").state = state;
    }

    fn try_commit(&mut self, copy: CopyId) {
        let found = &self.copies[&copy];
        let CopyState::Flushing { written } = found.state else {
            unreachable!("only a flushing copy is offered for commit")
        };
        if written != found.expected {
            return;
        }
        // The last line of defence: cancellation should already have caught both.
        let changed = self.keys.get(&found.key).map(|state| state.changed);
        if changed.is_none_or(|changed| changed > found.generation) {
            return self.discard(copy, DiscardReason::Superseded);
        }
        match self.phase {
            Phase::Running => {}
            Phase::Draining | Phase::Stopped => {
                return self.discard(copy, DiscardReason::ShuttingDown);
            }
        }
        self.set_state(copy, CopyState::Committing);
        self.outputs.push_back(Output::Commit { copy });
    }

    fn cancel(&mut self, copy: CopyId, why: DiscardReason) {
        self.counters.cancelled += 1;
        self.release_key(copy);
        self.set_state(copy, CopyState::Cancelling { why });
        self.outputs.push_back(Output::Cancel { copy });
    }

    /// Ends a copy that had not been cancelled: its writer is aborted at once.
    fn discard(&mut self, copy: CopyId, why: DiscardReason) {
        self.counters.discarded[why.index()] += 1;
        self.outputs.push_back(Output::Discard { copy, why });
        self.remove(copy);
    }

    /// Ends a cancelled copy whose task reported its end.
    fn finish_discard(&mut self, copy: CopyId, why: DiscardReason) {
        self.discard(copy, why);
    }

    fn remove(&mut self, copy: CopyId) {
        self.release_key(copy);
        let removed = self.copies.remove(&copy).expect("removing a copy that exists");
        self.forget_if_idle(&removed.key);
        self.finish_shutdown_if_drained();
    }

    /// Frees the key's slot if `copy` holds it, releasing mutations that waited for its commit.
    fn release_key(&mut self, copy: CopyId) {
        let key = self.copies[&copy].key.clone();
        // A cancelled copy no longer holds its key, whose entry may be gone.
        let Some(state) = self.keys.get_mut(&key) else { return };
        if state.live != Some(copy) {
            return;
        }
        state.live = None;
        let n_waiting = std::mem::take(&mut state.n_waiting);
        for _ in 0..n_waiting {
            self.outputs.push_back(Output::ProceedWithMutation { key: key.clone() });
        }
    }

    /// The entry of `key`, made if it was forgotten (its queue entry then goes stale): it changed
    /// last at its remembered change, or if that memory is gone, possibly as late as the floor.
    fn key_state(&mut self, key: &ObjectKey) -> &mut KeyState {
        if !self.keys.contains_key(key) {
            let changed = self.forgotten_change(key);
            self.keys.insert(
                key.clone(),
                KeyState { changed, filled: None, live: None, n_mutating: 0, n_waiting: 0 },
            );
        }
        self.keys.get_mut(key).expect("made above")
    }

    /// The latest change of `key`, which is not in `keys`: its remembered change, else the
    /// floor.
    fn forgotten_change(&self, key: &ObjectKey) -> Generation {
        self.keys.forgotten(key).unwrap_or(Generation(self.forgotten))
    }

    /// Keeps `changed` as the latest change of the forgotten `key`; the oldest memory past
    /// [`FORGOTTEN_REMEMBERED`] is folded into the floor.
    fn remember_forgotten(&mut self, key: ObjectKey, changed: Generation) {
        let changed = changed.max(self.forgotten_change(&key));
        self.keys.forget(key.clone(), changed);
        self.recent_order.push_back((key, changed));
        while self.recent_order.len() > FORGOTTEN_REMEMBERED {
            let (key, at) = self.recent_order.pop_front().expect("longer than the bound");
            if self.keys.forgotten(&key) == Some(at) {
                self.keys.remove_forgotten(&key);
                self.forgotten = self.forgotten.max(at.0);
            }
        }
    }

    /// Notes that `copy`, committing, is now in tier 0: a commit is a change of its key, after
    /// which a request from a read that probed tier 0 before it is refused.
    fn remember_fill(&mut self, copy: CopyId) {
        self.clock += 1;
        let at = Generation(self.clock);
        let found = &self.copies[&copy];
        let key = found.key.clone();
        let fill = Fill { copy, at, etag: found.etag.clone(), size: found.expected };
        let state = self.keys.get_mut(&key).expect("a committing copy holds its key");
        if state.n_mutating > 0 {
            // A mutation waits for this commit and will replace what it put in tier 0: every
            // request meanwhile is refused as `KeyChanging`, every later one predates its end.
            return;
        }
        state.filled = Some(fill);
        self.fills.push_back((key, copy));
        while self.fills.len() > FILLS_REMEMBERED {
            let (key, copy) = self.fills.pop_front().expect("longer than the bound");
            let Some(state) = self.keys.get_mut(&key) else { continue };
            if let Some(fill) = state.filled.take_if(|fill| fill.copy == copy) {
                // Kept as a change: a read from before it is refused, only without a name.
                state.changed = state.changed.max(fill.at);
                self.forget_if_idle(&key);
            }
        }
    }

    fn forget_if_idle(&mut self, key: &ObjectKey) {
        let Some(state) = self.keys.get(key) else { return };
        if state.live.is_some() || state.n_mutating > 0 || state.filled.is_some() {
            return;
        }
        let changed = state.changed;
        self.keys.remove(key);
        self.remember_forgotten(key.clone(), changed);
    }

    fn finish_shutdown_if_drained(&mut self) {
        if self.phase == Phase::Draining && self.copies.is_empty() {
            self.phase = Phase::Stopped;
            self.outputs.push_back(Output::ShutdownComplete);
        }
    }
}

/// What the manager remembers of each key, in one ordered map: the state of an active key, or
/// the latest change of one forgotten lately. One map rather than two keeps a single map type in
/// the wasm module (each instantiation costs kilobytes there).
#[derive(Debug, Default)]
struct Keys(BTreeMap<ObjectKey, Remembered>);

#[derive(Debug)]
enum Remembered {
    Active(KeyState),
    Forgotten(Generation),
}

impl Keys {
    /// The state of `key`, if it is active.
    fn get(&self, key: &ObjectKey) -> Option<&KeyState> {
        match self.0.get(key)? {
            Remembered::Active(state) => Some(state),
            Remembered::Forgotten(_) => None,
        }
    }

    fn get_mut(&mut self, key: &ObjectKey) -> Option<&mut KeyState> {
        match self.0.get_mut(key)? {
            Remembered::Active(state) => Some(state),
            Remembered::Forgotten(_) => None,
        }
    }

    fn contains_key(&self, key: &ObjectKey) -> bool {
        self.get(key).is_some()
    }

    /// Makes `key` active with `state`, replacing what was remembered of it.
    fn insert(&mut self, key: ObjectKey, state: KeyState) {
        self.0.insert(key, Remembered::Active(state));
    }

    /// Forgets the active `key` entirely.
    fn remove(&mut self, key: &ObjectKey) {
        if self.contains_key(key) {
            self.0.remove(key);
        }
    }

    /// The latest change of `key`, if it was forgotten and is still remembered.
    fn forgotten(&self, key: &ObjectKey) -> Option<Generation> {
        match self.0.get(key)? {
            Remembered::Active(_) => None,
            Remembered::Forgotten(changed) => Some(*changed),
        }
    }

    /// Remembers `changed` as the latest change of the forgotten (not active) `key`.
    fn forget(&mut self, key: ObjectKey, changed: Generation) {
        let previous = self.0.insert(key, Remembered::Forgotten(changed));
        debug_assert!(
            !matches!(previous, Some(Remembered::Active(_))),
            "only a key no longer active is forgotten"
        );
    }

    /// Stops remembering the forgotten `key`.
    fn remove_forgotten(&mut self, key: &ObjectKey) {
        if self.forgotten(key).is_some() {
            self.0.remove(key);
        }
    }

    /// Active keys (for tests).
    #[cfg(test)]
    fn n_active(&self) -> usize {
        self.0.values().filter(|r| matches!(r, Remembered::Active(_))).count()
    }

    /// Forgotten keys still remembered (for tests).
    #[cfg(test)]
    fn n_forgotten(&self) -> usize {
        self.0.len() - self.n_active()
    }
}

/// The copies alive, ordered by handle: a vector rather than a map, since there are at most
/// [`Config::max_in_flight`] of them and handles are issued in increasing order (a new one is
/// pushed at the end), which also spares the wasm module another map type.
#[derive(Debug, Default)]
struct Copies(Vec<(CopyId, Copy)>);

impl Copies {
    fn position(&self, copy: CopyId) -> Option<usize> {
        self.0.binary_search_by_key(&copy, |(id, _)| *id).ok()
    }

    fn get(&self, copy: &CopyId) -> Option<&Copy> {
        self.position(*copy).map(|at| &self.0[at].1)
    }

    fn get_mut(&mut self, copy: &CopyId) -> Option<&mut Copy> {
        self.position(*copy).map(|at| &mut self.0[at].1)
    }

    fn insert(&mut self, copy: CopyId, found: Copy) {
        debug_assert!(self.0.last().is_none_or(|(last, _)| *last < copy), "handles only grow");
        self.0.push((copy, found));
    }

    fn remove(&mut self, copy: &CopyId) -> Option<Copy> {
        self.position(*copy).map(|at| self.0.remove(at).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&CopyId, &Copy)> {
        self.0.iter().map(|(id, found)| (id, found))
    }
}

impl std::ops::Index<&CopyId> for Copies {
    type Output = Copy;

    fn index(&self, copy: &CopyId) -> &Copy {
        self.get(copy).expect("indexing a copy that exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Key, Namespace};
    use crate::time::Timestamp;
    use crate::validators::EntityTag;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Namespace::parse("ns").expect("valid"),
            key: Key::from_segment(name),
        }
    }

    fn meta(size: u64) -> ObjectMeta {
        revision("v1", size)
    }

    fn revision(etag: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: EntityTag::strong(etag).expect("valid"),
            last_modified: Timestamp::from_secs(1_700_000_000),
            headers: Vec::new(),
            expires: None,
        }
    }

    fn config() -> Config {
        Config { max_in_flight: 2, max_backlog_bytes: 100, tier_0_max_size: Some(1000) }
    }

    /// Drives a manager and keeps a transcript of output names.
    struct Script {
        manager: Manager,
        transcript: Vec<String>,
    }

    impl Script {
        fn new() -> Script {
            Script { manager: Manager::new(config()), transcript: Vec::new() }
        }

        fn feed(&mut self, input: Input) -> &mut Script {
            self.manager.handle_input(input);
            while let Some(output) = self.manager.poll_output() {
                self.transcript.push(describe(&output));
            }
            self
        }

        fn request(&mut self, name: &str, size: u64) -> &mut Script {
            let seen = self.manager.generation(&key(name));
            self.ask(name, seen, meta(size))
        }

        /// A request from a read that looked up `seen` earlier; its answer joins the transcript.
        fn ask(&mut self, name: &str, seen: Generation, meta: ObjectMeta) -> &mut Script {
            let request = CopyRequest {
                key: key(name),
                seen,
                from: TierIdx::new(1),
                meta,
                mode: Mode::Background,
            };
            let answer = match self.manager.request_copy(&request) {
                Ok(copy) => format!("Started({})", copy.0),
                Err(why) => format!("Refused({why:?})"),
            };
            self.transcript.push(answer);
            assert!(self.manager.poll_output().is_none(), "a request queues no output");
            self
        }

        /// Copies all `size` bytes of copy `n` and commits it.
        fn fill(&mut self, n: u64, size: u64) -> &mut Script {
            self.copy(n, size).feed(Input::SourceEnded { copy: CopyId(n) });
            self.feed(Input::CommitFinished { copy: CopyId(n), committed: true })
        }

        fn copy(&mut self, n: u64, bytes: u64) -> &mut Script {
            self.feed(Input::SourceRead { copy: CopyId(n), bytes });
            self.feed(Input::ChunkWritten { copy: CopyId(n), bytes })
        }

        #[track_caller]
        fn expect(&mut self, expected: &[&str]) {
            assert_eq!(std::mem::take(&mut self.transcript), expected);
        }
    }

    fn describe(output: &Output) -> String {
        match output {
            Output::Cancel { copy } => format!("Cancel({})", copy.0),
            Output::Commit { copy } => format!("Commit({})", copy.0),
            Output::Finished { copy } => format!("Finished({})", copy.0),
            Output::Discard { copy, why } => format!("Discard({}, {why:?})", copy.0),
            Output::ProceedWithMutation { .. } => "ProceedWithMutation".to_owned(),
            Output::ShutdownComplete => "ShutdownComplete".to_owned(),
        }
    }

    #[test]
    fn a_revision_larger_than_tier_0_can_hold_is_refused_before_any_byte_is_read() {
        let mut s = Script::new();
        s.request("a", 1001).request("a", 1000);
        s.expect(&["Refused(TooLarge)", "Started(0)"]);
        let counters = s.manager.counters();
        assert_eq!((counters.started, counters.skipped), (1, 1));
    }

    #[test]
    fn a_copy_commits_only_after_eof_with_every_byte_written() {
        let mut s = Script::new();
        s.request("a", 10).copy(0, 6).feed(Input::SourceRead { copy: CopyId(0), bytes: 4 });
        s.feed(Input::SourceEnded { copy: CopyId(0) });
        s.expect(&["Started(0)"]);
        s.feed(Input::ChunkWritten { copy: CopyId(0), bytes: 4 });
        s.expect(&["Commit(0)"]);
        s.feed(Input::CommitFinished { copy: CopyId(0), committed: true });
        s.expect(&["Finished(0)"]);
        assert_eq!(s.manager.counters().committed, 1);
        assert_eq!(s.manager.n_in_flight(), 0);
    }

    #[test]
    fn a_zero_byte_object_commits_at_eof() {
        let mut s = Script::new();
        s.request("a", 0).feed(Input::SourceEnded { copy: CopyId(0) });
        s.expect(&["Started(0)", "Commit(0)"]);
    }

    #[test]
    fn a_second_request_for_the_same_key_is_deduplicated() {
        let mut s = Script::new();
        s.request("a", 10).request("a", 10).request("b", 10).request("c", 10);
        s.expect(&[
            "Started(0)",
            "Refused(Deduplicated { copy: CopyId(0) })",
            "Started(1)",
            "Refused(TooManyInFlight)",
        ]);
        let counters = s.manager.counters();
        assert_eq!((counters.started, counters.deduped, counters.skipped), (2, 1, 1));
    }

    #[test]
    fn every_failure_before_eof_discards_the_copy() {
        let cases = [
            (Input::ClientClosed { copy: CopyId(0) }, "Discard(0, EarlyClose)"),
            (Input::SourceFailed { copy: CopyId(0) }, "Discard(0, SourceFailed)"),
            (Input::WriterFailed { copy: CopyId(0) }, "Discard(0, WriterFailed)"),
            (Input::SourceEnded { copy: CopyId(0) }, "Discard(0, SizeMismatch)"),
            (Input::SourceRead { copy: CopyId(0), bytes: 20 }, "Discard(0, SizeMismatch)"),
            (Input::ChunkWritten { copy: CopyId(0), bytes: 9 }, "Discard(0, SizeMismatch)"),
            (Input::CopyStopped { copy: CopyId(0) }, "Discard(0, SourceFailed)"),
        ];
        for (input, expected) in cases {
            let mut s = Script::new();
            s.request("a", 10).copy(0, 5).feed(input);
            s.expect(&["Started(0)", expected]);
            assert_eq!(s.manager.counters().discarded_total(), 1);
            assert_eq!(s.manager.n_in_flight(), 0);
        }
    }

    #[test]
    fn an_empty_copy_whose_writer_fails_to_start_frees_its_key() {
        // The host asks for tier 0's writer only once its task runs; an empty object's commit
        // is asked for before that, at the source's EOF.
        let mut s = Script::new();
        s.request("a", 0).feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::MutationStarted { key: key("a"), kind: MutationKind::Delete });
        s.expect(&["Started(0)", "Commit(0)"]);
        s.feed(Input::WriterFailed { copy: CopyId(0) });
        s.expect(&["Discard(0, WriterFailed)", "ProceedWithMutation"]);
        assert_eq!(s.manager.n_in_flight(), 0);
        // A client closing once every byte was handed over still changes nothing.
        let mut s = Script::new();
        s.request("a", 0).feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::ClientClosed { copy: CopyId(0) });
        s.feed(Input::CommitFinished { copy: CopyId(0), committed: true });
        s.expect(&["Started(0)", "Commit(0)", "Finished(0)"]);
        assert_eq!(s.manager.counters().committed, 1);
    }

    #[test]
    fn a_source_of_another_revision_is_discarded_before_any_byte_is_copied() {
        let opened = |etag: &str, size: u64| Input::SourceOpened {
            copy: CopyId(0),
            etag: EntityTag::strong(etag).expect("valid"),
            size,
        };
        for (input, expected) in [
            (opened("v1", 10), None),
            (opened("v2", 10), Some("Discard(0, SourceFailed)")),
            (opened("v1", 11), Some("Discard(0, SourceFailed)")),
        ] {
            let mut s = Script::new();
            s.request("a", 10).feed(input);
            let mut transcript = vec!["Started(0)"];
            transcript.extend(expected);
            s.expect(&transcript);
        }
        // A weak tag names no revision to copy.
        let mut s = Script::new();
        s.request("a", 10).feed(Input::SourceOpened {
            copy: CopyId(0),
            etag: EntityTag::parse("W/\"v1\"").expect("valid"),
            size: 10,
        });
        s.expect(&["Started(0)", "Discard(0, SourceFailed)"]);
    }

    #[test]
    fn a_tier_0_that_falls_too_far_behind_abandons_the_copy() {
        let mut s = Script::new();
        s.request("a", 1000).feed(Input::SourceRead { copy: CopyId(0), bytes: 100 });
        s.feed(Input::SourceRead { copy: CopyId(0), bytes: 1 });
        s.expect(&["Started(0)", "Discard(0, Lagging)"]);
        assert_eq!(s.manager.counters().discarded(DiscardReason::Lagging), 1);
    }

    #[test]
    fn write_during_backfill_cancels_and_discards_the_copy() {
        let mut s = Script::new();
        s.request("a", 10).copy(0, 5);
        s.feed(Input::MutationStarted { key: key("a"), kind: MutationKind::Write });
        s.request("a", 10);
        s.feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::MutationEnded { key: key("a"), kind: MutationKind::Write });
        s.request("a", 10);
        s.expect(&[
            "Started(0)",
            "Cancel(0)",
            "ProceedWithMutation",
            "Refused(KeyChanging)",
            "Discard(0, Superseded)",
            "Started(1)",
        ]);
        assert_eq!(s.manager.counters().cancelled, 1);
    }

    #[test]
    fn a_read_that_began_before_a_mutation_gets_no_copy() {
        let mut s = Script::new();
        let seen = s.manager.generation(&key("a"));
        s.feed(Input::MutationStarted { key: key("a"), kind: MutationKind::Delete });
        s.feed(Input::MutationEnded { key: key("a"), kind: MutationKind::Delete });
        s.ask("a", seen, meta(10));
        s.expect(&["ProceedWithMutation", "Refused(Superseded)"]);
    }

    #[test]
    fn a_mutation_waits_for_a_commit_under_way() {
        let mut s = Script::new();
        s.request("a", 4).copy(0, 4).feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::MutationStarted { key: key("a"), kind: MutationKind::Invalidate });
        s.expect(&["Started(0)", "Commit(0)"]);
        // A late report about the committing copy changes nothing.
        s.feed(Input::ClientClosed { copy: CopyId(0) });
        s.feed(Input::CommitFinished { copy: CopyId(0), committed: true });
        s.expect(&["Finished(0)", "ProceedWithMutation"]);
    }

    #[test]
    fn shutdown_cancels_every_copy_and_reports_when_the_last_one_finished() {
        let mut s = Script::new();
        s.request("a", 4).request("b", 4).copy(1, 4).feed(Input::SourceEnded { copy: CopyId(1) });
        s.feed(Input::ShutdownRequested);
        s.request("c", 4);
        s.feed(Input::CopyStopped { copy: CopyId(0) });
        s.feed(Input::CommitFinished { copy: CopyId(1), committed: true });
        s.feed(Input::ShutdownRequested);
        s.expect(&[
            "Started(0)",
            "Started(1)",
            "Commit(1)",
            "Cancel(0)",
            "Refused(ShuttingDown)",
            "Discard(0, ShuttingDown)",
            "Finished(1)",
            "ShutdownComplete",
            "ShutdownComplete",
        ]);
        assert!(s.manager.is_stopped());
    }

    #[test]
    fn shutdown_with_nothing_in_flight_completes_at_once() {
        let mut s = Script::new();
        s.feed(Input::ShutdownRequested);
        s.expect(&["ShutdownComplete"]);
    }

    #[test]
    fn an_input_for_a_finished_copy_is_answered_with_a_stale_discard() {
        let mut s = Script::new();
        s.request("a", 4).feed(Input::SourceFailed { copy: CopyId(0) });
        s.feed(Input::SourceRead { copy: CopyId(0), bytes: 4 });
        s.expect(&["Started(0)", "Discard(0, SourceFailed)", "Discard(0, Stale)"]);
        assert_eq!(s.manager.counters().discarded_total(), 1);
        assert_eq!(s.manager.counters().discarded(DiscardReason::Stale), 1);
    }

    #[test]
    fn a_refused_commit_counts_as_a_writer_failure() {
        let mut s = Script::new();
        s.request("a", 4).copy(0, 4).feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::CommitFinished { copy: CopyId(0), committed: false });
        assert_eq!(s.manager.counters().discarded(DiscardReason::WriterFailed), 1);
        assert_eq!(s.manager.counters().committed, 0);
    }

    #[test]
    fn a_read_that_probed_before_a_commit_of_the_same_revision_gets_no_second_copy() {
        let mut s = Script::new();
        // Two cold reads look up the generation and miss tier 0 before either asks for a copy.
        let first = s.manager.generation(&key("a"));
        let second = s.manager.generation(&key("a"));
        s.ask("a", first, meta(10)).fill(0, 10);
        s.ask("a", second, meta(10));
        // A read that began after the commit saw it in tier 0; if tier 0 lost it since, it may
        // copy again.
        let third = s.manager.generation(&key("a"));
        s.ask("a", third, meta(10));
        s.expect(&[
            "Started(0)",
            "Commit(0)",
            "Finished(0)",
            "Refused(Deduplicated { copy: CopyId(0) })",
            "Started(1)",
        ]);
        let counters = s.manager.counters();
        assert_eq!((counters.started, counters.deduped, counters.skipped), (2, 1, 0));
    }

    #[test]
    fn a_commit_of_another_revision_after_the_probe_supersedes_the_request() {
        let mut s = Script::new();
        let first = s.manager.generation(&key("a"));
        let second = s.manager.generation(&key("a"));
        s.ask("a", first, revision("v1", 10)).fill(0, 10);
        s.ask("a", second, revision("v2", 10));
        s.ask("a", second, revision("v1", 11));
        s.expect(&[
            "Started(0)",
            "Commit(0)",
            "Finished(0)",
            "Refused(Superseded)",
            "Refused(Superseded)",
        ]);
    }

    #[test]
    fn a_refused_commit_leaves_the_racing_read_free_to_copy() {
        let mut s = Script::new();
        let first = s.manager.generation(&key("a"));
        let second = s.manager.generation(&key("a"));
        s.ask("a", first, meta(4)).copy(0, 4).feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::CommitFinished { copy: CopyId(0), committed: false });
        s.ask("a", second, meta(4));
        s.expect(&["Started(0)", "Commit(0)", "Finished(0)", "Started(1)"]);
    }

    #[test]
    fn a_mutation_after_a_commit_supersedes_reads_from_before_it() {
        let mut s = Script::new();
        let before = s.manager.generation(&key("a"));
        s.ask("a", before, meta(4)).fill(0, 4);
        let between = s.manager.generation(&key("a"));
        s.feed(Input::MutationStarted { key: key("a"), kind: MutationKind::Write });
        s.feed(Input::MutationEnded { key: key("a"), kind: MutationKind::Write });
        s.ask("a", before, meta(4)).ask("a", between, meta(4));
        s.request("a", 4);
        s.expect(&[
            "Started(0)",
            "Commit(0)",
            "Finished(0)",
            "ProceedWithMutation",
            "Refused(Superseded)",
            "Refused(Superseded)",
            "Started(1)",
        ]);
        // The mutation ended the key's memory of the commit, and the copy holds it now.
        assert!(s.manager.keys.get(&key("a")).expect("active").filled.is_none());
    }

    #[test]
    fn a_commit_a_mutation_waited_for_is_not_remembered_as_a_fill() {
        let mut s = Script::new();
        let before = s.manager.generation(&key("a"));
        s.ask("a", before, meta(4)).copy(0, 4).feed(Input::SourceEnded { copy: CopyId(0) });
        s.feed(Input::MutationStarted { key: key("a"), kind: MutationKind::Delete });
        s.feed(Input::CommitFinished { copy: CopyId(0), committed: true });
        s.ask("a", before, meta(4));
        s.feed(Input::MutationEnded { key: key("a"), kind: MutationKind::Delete });
        s.ask("a", before, meta(4));
        s.expect(&[
            "Started(0)",
            "Commit(0)",
            "Finished(0)",
            "ProceedWithMutation",
            "Refused(KeyChanging)",
            "Refused(Superseded)",
        ]);
        assert_eq!(s.manager.keys.n_active(), 0);
    }

    #[test]
    fn a_commit_is_remembered_for_a_bounded_number_of_later_commits() {
        let mut s = Script {
            manager: Manager::new(Config { max_in_flight: 1, ..config() }),
            transcript: Vec::new(),
        };
        let early = s.manager.generation(&key("first"));
        s.ask("first", early, meta(1)).fill(0, 1);
        for n in 1..=FILLS_REMEMBERED as u64 {
            let name = format!("k{n}");
            s.request(&name, 1).fill(n, 1);
            if n == FILLS_REMEMBERED as u64 - 1 {
                // Still remembered: the racing read is told which copy did its work.
                s.transcript.clear();
                s.ask("first", early, meta(1));
                s.expect(&["Refused(Deduplicated { copy: CopyId(0) })"]);
            }
        }
        // Forgotten now, and the map holds no more than the bound; the racing read is still
        // refused, only without naming the copy.
        assert!(!s.manager.keys.contains_key(&key("first")));
        assert_eq!(s.manager.keys.n_active(), FILLS_REMEMBERED);
        assert_eq!(s.manager.fills.len(), FILLS_REMEMBERED);
        s.transcript.clear();
        s.ask("first", early, meta(1));
        s.request("first", 1);
        s.expect(&["Refused(Superseded)", &format!("Started({})", FILLS_REMEMBERED + 1)]);
    }

    #[test]
    fn shutdown_refuses_a_read_that_raced_a_commit_as_shutting_down() {
        let mut s = Script::new();
        let seen = s.manager.generation(&key("a"));
        s.ask("a", seen, meta(2)).fill(0, 2).feed(Input::ShutdownRequested);
        s.ask("a", seen, meta(2));
        s.expect(&[
            "Started(0)",
            "Commit(0)",
            "Finished(0)",
            "ShutdownComplete",
            "Refused(ShuttingDown)",
        ]);
    }

    #[test]
    fn a_change_of_another_key_before_the_read_began_refuses_nothing() {
        let mut s = Script::new();
        s.feed(Input::MutationStarted { key: key("b"), kind: MutationKind::Write });
        s.feed(Input::MutationEnded { key: key("b"), kind: MutationKind::Write });
        s.request("a", 4);
        s.expect(&["ProceedWithMutation", "Started(0)"]);
    }

    #[test]
    fn a_change_of_another_key_while_a_read_runs_refuses_nothing() {
        let mut s = Script::new();
        let seen = s.manager.generation(&key("cold"));
        s.feed(Input::MutationStarted { key: key("other"), kind: MutationKind::Write });
        s.feed(Input::MutationEnded { key: key("other"), kind: MutationKind::Write });
        s.ask("cold", seen, meta(4));
        // The other key is forgotten, yet its change is still its own.
        let other_seen = s.manager.generation(&key("other"));
        s.feed(Input::MutationStarted { key: key("other"), kind: MutationKind::Delete });
        s.feed(Input::MutationEnded { key: key("other"), kind: MutationKind::Delete });
        s.ask("other", other_seen, meta(4));
        s.expect(&[
            "ProceedWithMutation",
            "Started(0)",
            "ProceedWithMutation",
            "Refused(Superseded)",
        ]);
        assert!(!s.manager.keys.contains_key(&key("other")));
    }

    #[test]
    fn a_change_pushed_out_of_the_bounded_memory_still_refuses_older_reads() {
        let mut s = Script::new();
        let seen = s.manager.generation(&key("a"));
        let mutate = |s: &mut Script, name: &str| {
            s.feed(Input::MutationStarted { key: key(name), kind: MutationKind::Write });
            s.feed(Input::MutationEnded { key: key(name), kind: MutationKind::Write });
        };
        mutate(&mut s, "a");
        for n in 0..FORGOTTEN_REMEMBERED - 1 {
            mutate(&mut s, &format!("k{n}"));
        }
        // Still remembered by key: a read of an unchanged key that began as early is free.
        assert!(s.manager.keys.forgotten(&key("a")).is_some());
        s.transcript.clear();
        s.ask("fresh", seen, meta(4));
        s.expect(&["Started(0)"]);
        s.fill(0, 4);
        mutate(&mut s, "last");
        // Pushed out: the change of "a" is kept in the floor, and both memories stay bounded.
        assert!(s.manager.keys.forgotten(&key("a")).is_none());
        assert!(s.manager.keys.n_forgotten() <= FORGOTTEN_REMEMBERED);
        assert!(s.manager.recent_order.len() <= FORGOTTEN_REMEMBERED);
        assert!(s.manager.keys.n_active() <= 1);
        s.transcript.clear();
        s.ask("a", seen, meta(4));
        s.request("a", 4);
        s.expect(&["Refused(Superseded)", "Started(1)"]);
    }

    #[test]
    fn idle_keys_are_forgotten_without_losing_a_change() {
        let mut s = Script::new();
        let seen = s.manager.generation(&key("a"));
        s.feed(Input::MutationStarted { key: key("b"), kind: MutationKind::Write });
        s.feed(Input::MutationEnded { key: key("b"), kind: MutationKind::Write });
        assert_eq!(s.manager.keys.n_active(), 0);
        assert!(s.manager.generation(&key("b")) > seen);
    }
}
