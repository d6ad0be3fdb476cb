//! Mutations of a key over the tiers: a write (PUT, POST), a delete and an invalidation
//! (SPEC §3, §4).
//!
//! One [`Machine`] per mutation decides which tier is asked what, in which order, which
//! failure fails the mutation and which only leaves a nearer tier out, and how the answer
//! reads (status, headers, `Cache-Status`). The host creates writers, moves the body's chunks,
//! commits and deletes, and reports what each tier answered.
//!
//! # Events and actions
//!
//! ```text
//! host reports (Input)                     machine answers (Output)
//! -------------------------------------    -------------------------------------------------
//! (construction)                           Fail(TooLarge)              announced too large
//!                                          StatTier { 0 }              If-None-Match with tags
//!                                                                      or both fields: look up
//!                                                                      the live revision
//!                                          StartMutation { kind }      otherwise
//! TierStatted { tier, meta } / TierFailed  StatTier { next } / StartMutation / Fail(412, 503)
//! MutationProceeded                        CreateWriter { 0, guard }   write
//!                                          LockKey                     delete, invalidate
//! WriterCreated { tier } / TierFailed      CreateWriter { next } / ReceiveBody
//!                                          AbortWriter { tier }        nearer tier left out
//!                                          Fail(tier's failure)        any other failure
//! ChunkReceived { bytes }                  WriteChunk, or Fail(413, 400) past a bound
//! TierFailed (writing a chunk)             AbortWriter { tier } / Fail
//! BodyEnded / BodyFailed                   LockKey / Fail(400)
//! KeyLocked                                CommitTier { last }         write, deepest first
//!                                          RemoveTier { 0 }            delete, nearest first
//!                                          InvalidateTier { 0 }        invalidate, all but last
//! Committed { tier, meta } / TierFailed    CommitTier { nearer } ... DropCopy { left out }..
//!                                          Finish(200) / Fail(authoritative tier's failure)
//! TierRemoved { tier, existed } / Failed   RemoveTier / InvalidateTier { next }
//!                                          Finish(200, 404 for a delete of nothing) / Fail
//! ShuttingDown                             Fail(503) until the commits begin
//! ```
//!
//! # States
//!
//! ```text
//!   write: new ──► LookingUp { tier, failed } ──► AwaitingProceed ──► Creating { tier }
//!            └──────(no lookup needed)──────────────┘                   │ every tier asked
//!                                                                       ▼
//!          Done ◄── Committing { tier } ◄── Locking ◄────────────── Receiving { received }
//!   delete, invalidate: new ──► AwaitingProceed ──► Locking ──► Removing / Invalidating ──► Done
//!   any state ──a failure that fails the mutation──► Done (Fail)
//! ```
//!
//! # Which failure fails a write
//!
//! Tiers commit deepest first, so the authoritative (last) tier judges the write's condition
//! before any nearer copy exists: only it gets the [`WriteGuard`]. A nearer tier that cannot
//! take the object (too large, or busy) when its writer is created or a chunk is written, or
//! whose commit fails once the authoritative tier committed, is left out of the write and its
//! older copy dropped ([`Output::DropCopy`]), so it never serves an older revision; the write
//! stands, since the authoritative tier holds it. Any other failure before the commits, and a
//! failure of the authoritative tier's commit, fails the write, and then nothing has been
//! committed anywhere.
//!
//! Concurrent mutations of one key commit one after the other ([`Output::LockKey`]), each
//! deepest first, so every tier ends with the same revision.
//!
//! # Conditional writes
//!
//! `If-Match` alone and `If-None-Match: *` alone map onto a guard the authoritative tier
//! checks atomically at commit ([`conditional::write_check`]). Anything else (an
//! `If-None-Match` listing entity-tags, or both fields) needs the live revision: the machine
//! asks the tiers for its metadata nearest first, as a HEAD would be answered (an expired copy
//! is passed over, a failed tier only matters if no tier has one), judges the fields against it
//! and pins the write to it ([`conditional::write_guard_for`]), so a write committed in between
//! makes the authoritative tier refuse this one rather than apply it unevaluated.
//!
//! # Deletes and invalidations
//!
//! A delete removes the key from every tier nearest first: once the authoritative copy is gone
//! nothing can bring it back, while a nearer copy that outlived it would be served. It answers
//! 404 when no tier held the key. An invalidation drops the copies of every tier but the last,
//! whose authoritative copy it leaves alone. Either stops at the first tier that fails.

use std::collections::VecDeque;

use http::StatusCode;
use http::header::{ETAG, LAST_MODIFIED};

use crate::backfill::MutationKind;
use crate::cache_status::{CacheStatus, CopyNote, Lookup, Member};
use crate::conditional::{self, Body, ResponsePlan, WriteCheck, WriteGuard};
use crate::object::ObjectMeta;
use crate::tier::{TierFault, TierIdx};
use crate::time::Timestamp;
use crate::validators::format_http_date;

/// The fields of a write that its policy depends on, as the host received them (raw field
/// values, joined with `, ` when a field repeats).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `If-Match`.
    pub if_match: Option<String>,
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `Content-Length`, when the client announced one.
    pub content_length: Option<u64>,
    /// The largest object a write may store.
    pub max_size: u64,
    /// When the write arrived: a copy that expires at or before it is no live revision.
    pub now: Timestamp,
}

/// What the host saw while carrying out the machine's outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Tier `tier` answered [`Output::StatTier`]: the metadata of its revision, `None` when it
    /// holds none.
    TierStatted {
        /// The tier.
        tier: TierIdx,
        /// Its revision, if any.
        meta: Option<ObjectMeta>,
    },
    /// The backfill manager let the mutation touch the tiers (`ProceedWithMutation`).
    MutationProceeded,
    /// Tier `tier`'s writer was created.
    WriterCreated {
        /// The tier.
        tier: TierIdx,
    },
    /// A chunk of `bytes` bytes of the body arrived; the host holds it.
    ChunkReceived {
        /// Its length.
        bytes: u64,
    },
    /// The body ended.
    BodyEnded,
    /// The body failed: the client went away, broke the framing or stopped sending.
    BodyFailed,
    /// The key's commit lock is held.
    KeyLocked,
    /// Tier `tier` committed the revision described by `meta`.
    Committed {
        /// The tier.
        tier: TierIdx,
        /// What the tier stored.
        meta: ObjectMeta,
    },
    /// Tier `tier` removed (or invalidated) its copy; `existed` if it held one.
    TierRemoved {
        /// The tier.
        tier: TierIdx,
        /// Whether a copy was there.
        existed: bool,
    },
    /// What was asked of tier `tier` (a stat, creating its writer, writing a chunk, a commit, a
    /// removal) failed with `fault`.
    TierFailed {
        /// The tier.
        tier: TierIdx,
        /// What kind of failure.
        fault: TierFault,
    },
    /// The server began shutting down while the mutation waited (for the manager, for the
    /// body, for the lock).
    ShuttingDown,
}

/// What the host must do next for this mutation.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Read the metadata of tier `tier`'s live revision of the key (no body), and report
    /// [`Input::TierStatted`] or [`Input::TierFailed`].
    StatTier {
        /// The tier.
        tier: TierIdx,
    },
    /// Report the mutation to the backfill manager (`MutationStarted`), wait for its
    /// `ProceedWithMutation` and report [`Input::MutationProceeded`] (or
    /// [`Input::ShuttingDown`]); report `MutationEnded` once this machine is done, whatever
    /// the outcome.
    StartMutation {
        /// What kind of mutation.
        kind: MutationKind,
    },
    /// Create tier `tier`'s writer for the new revision, which checks `guard` when it commits,
    /// and report [`Input::WriterCreated`] or [`Input::TierFailed`].
    CreateWriter {
        /// The tier.
        tier: TierIdx,
        /// The condition the tier checks at commit.
        guard: WriteGuard,
    },
    /// Read the request's body: report each chunk with [`Input::ChunkReceived`], then
    /// [`Input::BodyEnded`] or [`Input::BodyFailed`].
    ReceiveBody,
    /// Write the chunk just reported to every writer held, and report an [`Input::TierFailed`]
    /// for each that failed, nearest first.
    WriteChunk,
    /// Abort tier `tier`'s writer: the tier is left out of this write.
    AbortWriter {
        /// The tier.
        tier: TierIdx,
    },
    /// Take the key's commit lock, held until this machine is done, and report
    /// [`Input::KeyLocked`] (or [`Input::ShuttingDown`] if the tiers started closing).
    LockKey,
    /// Commit tier `tier`'s writer and report [`Input::Committed`] or [`Input::TierFailed`].
    CommitTier {
        /// The tier.
        tier: TierIdx,
    },
    /// Delete tier `tier`'s copy of the key, which this write left out, so that it never
    /// serves an older revision; nothing is reported (a failure is only logged).
    DropCopy {
        /// The tier.
        tier: TierIdx,
    },
    /// Delete tier `tier`'s copy of the key and report [`Input::TierRemoved`] or
    /// [`Input::TierFailed`].
    RemoveTier {
        /// The tier.
        tier: TierIdx,
    },
    /// Drop tier `tier`'s copy as a non-authoritative tier (a tier in front of another server
    /// forwards the invalidation) and report [`Input::TierRemoved`] or [`Input::TierFailed`].
    InvalidateTier {
        /// The tier.
        tier: TierIdx,
    },
    /// The mutation is done: answer with `plan` (no body) and `cache_status`.
    Finish {
        /// Status and headers.
        plan: ResponsePlan,
        /// The `Cache-Status` field.
        cache_status: CacheStatus,
    },
    /// The mutation failed and nothing of it was committed: abort every writer still held and
    /// answer with `failure`'s status and `cache_status`.
    Fail {
        /// Why.
        failure: Failure,
        /// The `Cache-Status` field.
        cache_status: CacheStatus,
    },
}

/// Why a mutation failed; [`Failure::status`] answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The write's condition does not hold for the live revision.
    #[error("write precondition failed")]
    PreconditionFailed,
    /// No tier could say what the live revision is, which the write's condition needs.
    #[error("the current revision could not be read to evaluate the write's preconditions")]
    CurrentUnknown,
    /// The body is larger than the largest object allowed (announced, or counted).
    #[error("object larger than the {max} bytes allowed")]
    TooLarge {
        /// The largest object allowed.
        max: u64,
    },
    /// More bytes arrived than Content-Length announced.
    #[error("incomplete upload: received more than the {expected} bytes announced")]
    LongerThanAnnounced {
        /// Content-Length.
        expected: u64,
    },
    /// The body ended before Content-Length bytes arrived.
    #[error("incomplete upload: received {received} of the {expected} bytes announced")]
    ShorterThanAnnounced {
        /// Bytes received.
        received: u64,
        /// Content-Length.
        expected: u64,
    },
    /// The body failed before its end.
    #[error("incomplete upload")]
    BodyFailed,
    /// A tier failed in a way that fails the mutation.
    #[error("tier {} failed: {fault}", tier.get())]
    Tier {
        /// The tier.
        tier: TierIdx,
        /// How.
        fault: TierFault,
    },
}

impl Failure {
    /// The status answering the failure.
    pub fn status(self) -> StatusCode {
        match self {
            Failure::ShuttingDown | Failure::CurrentUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Failure::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Failure::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::LongerThanAnnounced { .. }
            | Failure::ShorterThanAnnounced { .. }
            | Failure::BodyFailed => StatusCode::BAD_REQUEST,
            Failure::Tier { fault, .. } => match fault {
                TierFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                TierFault::Busy | TierFault::Io => StatusCode::SERVICE_UNAVAILABLE,
                TierFault::ConditionFailed => StatusCode::PRECONDITION_FAILED,
                TierFault::SizeMismatch => StatusCode::BAD_REQUEST,
                TierFault::Backend => StatusCode::BAD_GATEWAY,
            },
        }
    }
}

/// One write, delete or invalidation of a key; see the module doc for its events and states.
#[derive(Debug)]
pub struct Machine {
    job: Job,
    names: Vec<String>,
    state: State,
    outputs: VecDeque<Output>,
}

/// What the mutation is.
#[derive(Debug)]
enum Job {
    Write(Request),
    Delete,
    Invalidate,
}

/// What the machine waits for.
///
/// ```text
///   LookingUp ──every tier asked, or one holds a live revision──► AwaitingProceed
///   AwaitingProceed ──MutationProceeded──► Creating (write) / Locking (delete, invalidate)
///   Creating ──last writer created──► Receiving ──BodyEnded──► Locking
///   Locking ──KeyLocked──► Committing / Removing / Invalidating ──last tier──► Done
/// ```
#[derive(Debug)]
enum State {
    /// Waiting for tier `tier`'s metadata, to judge a condition the tiers cannot judge alone.
    LookingUp {
        tier: TierIdx,
        /// Whether a tier failed during the lookup.
        failed: bool,
    },
    /// Waiting for the backfill manager; then the write checks `guard` at its last tier.
    AwaitingProceed { guard: WriteGuard },
    /// Waiting for tier `tier`'s writer.
    Creating { tier: TierIdx, guard: WriteGuard, left_out: Vec<TierIdx> },
    /// Receiving the body, `received` bytes so far.
    Receiving { received: u64, left_out: Vec<TierIdx> },
    /// Waiting for the key's commit lock.
    Locking { left_out: Vec<TierIdx> },
    /// Waiting for tier `tier`'s commit; `meta` is what the authoritative tier stored.
    Committing { tier: TierIdx, left_out: Vec<TierIdx>, meta: Option<ObjectMeta> },
    /// Waiting for tier `tier`'s delete; `existed` if a nearer tier held a copy.
    Removing { tier: TierIdx, existed: bool },
    /// Waiting for tier `tier`'s invalidation.
    Invalidating { tier: TierIdx },
    /// Finished or failed; every input is ignored.
    Done,
}

/// How far a mutation got, for its `Cache-Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// No tier was asked.
    Bypassed,
    /// Every tier was asked (to look up, write, delete).
    Asked,
    /// A write the authoritative tier committed.
    Written,
    /// The nearer tiers were asked to drop their copies.
    Invalidated,
}

impl Machine {
    /// Starts the write of `request` over the tiers named `tier_names` (tier 0 first).
    pub fn write(request: Request, tier_names: &[impl AsRef<str>]) -> Machine {
        let mut machine = Machine::new(Job::Write(request), tier_names);
        let Job::Write(request) = &machine.job else { unreachable!("made as a write above") };
        if request.content_length.is_some_and(|length| length > request.max_size) {
            // Refused before a byte is stored, or any tier asked.
            let failure = Failure::TooLarge { max: request.max_size };
            machine.state = machine.fail(failure, Reach::Bypassed);
            return machine;
        }
        let check =
            conditional::write_check(request.if_match.as_deref(), request.if_none_match.as_deref());
        machine.state = match check {
            WriteCheck::Guard(guard) => machine.start_mutation(MutationKind::Write, guard),
            WriteCheck::NeedsCurrent => machine.look_up(TierIdx::new(0), false),
        };
        machine
    }

    /// Starts the delete of a key from every tier named in `tier_names` (tier 0 first).
    pub fn delete(tier_names: &[impl AsRef<str>]) -> Machine {
        let mut machine = Machine::new(Job::Delete, tier_names);
        machine.state = machine.start_mutation(MutationKind::Delete, WriteGuard::None);
        machine
    }

    /// Starts the invalidation of a key in every tier named in `tier_names` but the last.
    pub fn invalidate(tier_names: &[impl AsRef<str>]) -> Machine {
        let mut machine = Machine::new(Job::Invalidate, tier_names);
        machine.state = machine.start_mutation(MutationKind::Invalidate, WriteGuard::None);
        machine
    }

    fn new(job: Job, tier_names: &[impl AsRef<str>]) -> Machine {
        assert!(!tier_names.is_empty(), "a mutation needs at least one tier");
        Machine {
            job,
            names: tier_names.iter().map(|name| name.as_ref().to_owned()).collect(),
            state: State::Done,
            outputs: VecDeque::new(),
        }
    }

    /// Feeds one observation; drain [`Machine::poll_output`] before the next.
    pub fn handle_input(&mut self, input: Input) {
        let state = std::mem::replace(&mut self.state, State::Done);
        self.state = match (state, input) {
            (State::LookingUp { tier, failed }, Input::TierStatted { tier: t, meta })
                if t == tier =>
            {
                let now = self.request().now;
                match meta.filter(|meta| !meta.is_expired(now)) {
                    Some(live) => self.judge(Some(&live)),
                    None => self.look_up(self.next(tier), failed),
                }
            }
            (State::LookingUp { tier, .. }, Input::TierFailed { tier: t, .. }) if t == tier => {
                self.look_up(self.next(tier), true)
            }
            (State::AwaitingProceed { guard }, Input::MutationProceeded) => match self.job {
                Job::Write(_) => self.create(TierIdx::new(0), guard, Vec::new()),
                Job::Delete | Job::Invalidate => self.lock(Vec::new()),
            },
            (State::Creating { tier, guard, left_out }, Input::WriterCreated { tier: t })
                if t == tier =>
            {
                self.create(self.next(tier), guard, left_out)
            }
            (
                State::Creating { tier, guard, mut left_out },
                Input::TierFailed { tier: t, fault },
            ) if t == tier => {
                if !self.may_leave_out(tier, fault) {
                    return self.state = self.fail(Failure::Tier { tier, fault }, Reach::Asked);
                }
                left_out.push(tier);
                self.create(self.next(tier), guard, left_out)
            }
            (State::Receiving { received, left_out }, Input::ChunkReceived { bytes }) => {
                self.on_chunk(received.saturating_add(bytes), left_out)
            }
            (State::Receiving { received, mut left_out }, Input::TierFailed { tier, fault })
                if !left_out.contains(&tier) =>
            {
                if !self.may_leave_out(tier, fault) {
                    return self.state = self.fail(Failure::Tier { tier, fault }, Reach::Asked);
                }
                self.outputs.push_back(Output::AbortWriter { tier });
                left_out.push(tier);
                State::Receiving { received, left_out }
            }
            (State::Receiving { received, left_out }, Input::BodyEnded) => {
                match self.request().content_length {
                    Some(expected) if received != expected => {
                        let failure = Failure::ShorterThanAnnounced { received, expected };
                        self.fail(failure, Reach::Asked)
                    }
                    Some(_) | None => self.lock(left_out),
                }
            }
            (State::Receiving { .. }, Input::BodyFailed) => {
                self.fail(Failure::BodyFailed, Reach::Asked)
            }
            (State::Locking { left_out }, Input::KeyLocked) => match self.job {
                Job::Write(_) => self.commit(Some(self.last()), left_out, None),
                Job::Delete => self.remove(TierIdx::new(0), false),
                Job::Invalidate => self.invalidate_next(TierIdx::new(0)),
            },
            (
                State::AwaitingProceed { .. }
                | State::Creating { .. }
                | State::Receiving { .. }
                | State::Locking { .. },
                Input::ShuttingDown,
            ) => self.fail(Failure::ShuttingDown, Reach::Bypassed),
            (State::Committing { tier, left_out, meta }, Input::Committed { tier: t, meta: m })
                if t == tier =>
            {
                // The deepest commit is the revision every tier now holds.
                let meta = meta.or(Some(m));
                self.commit(self.nearer(tier, &left_out), left_out, meta)
            }
            (
                State::Committing { tier, mut left_out, meta },
                Input::TierFailed { tier: t, fault },
            ) if t == tier => {
                if tier == self.last() {
                    // Nothing committed yet: the write fails as a whole, every tier as it was.
                    return self.state = self.fail(Failure::Tier { tier, fault }, Reach::Asked);
                }
                // The authoritative tier holds the new revision already; losing it to a nearer
                // tier's failure would lose the write.
                left_out.push(tier);
                self.commit(self.nearer(tier, &left_out), left_out, meta)
            }
            (State::Removing { tier, existed }, Input::TierRemoved { tier: t, existed: e })
                if t == tier =>
            {
                self.remove(self.next(tier), existed || e)
            }
            (State::Invalidating { tier }, Input::TierRemoved { tier: t, .. }) if t == tier => {
                self.invalidate_next(self.next(tier))
            }
            (
                State::Removing { tier, .. } | State::Invalidating { tier },
                Input::TierFailed { tier: t, fault },
            ) if t == tier => {
                let reach = match self.job {
                    Job::Invalidate => Reach::Invalidated,
                    Job::Write(_) | Job::Delete => Reach::Asked,
                };
                self.fail(Failure::Tier { tier, fault }, reach)
            }
            // Anything else answers a question this machine did not ask (a host bug or a late
            // report, such as a shutdown once the commits began): nothing changes.
            (
                state @ (State::LookingUp { .. }
                | State::AwaitingProceed { .. }
                | State::Creating { .. }
                | State::Receiving { .. }
                | State::Locking { .. }
                | State::Committing { .. }
                | State::Removing { .. }
                | State::Invalidating { .. }
                | State::Done),
                Input::TierStatted { .. }
                | Input::MutationProceeded
                | Input::WriterCreated { .. }
                | Input::ChunkReceived { .. }
                | Input::BodyEnded
                | Input::BodyFailed
                | Input::KeyLocked
                | Input::Committed { .. }
                | Input::TierRemoved { .. }
                | Input::TierFailed { .. }
                | Input::ShuttingDown,
            ) => state,
        };
    }

    /// The next action to carry out, in order; `None` when there is nothing left to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// True once the mutation finished or failed and its answer was handed over.
    pub fn is_done(&self) -> bool {
        match self.state {
            State::Done => self.outputs.is_empty(),
            State::LookingUp { .. }
            | State::AwaitingProceed { .. }
            | State::Creating { .. }
            | State::Receiving { .. }
            | State::Locking { .. }
            | State::Committing { .. }
            | State::Removing { .. }
            | State::Invalidating { .. } => false,
        }
    }

    fn request(&self) -> &Request {
        match &self.job {
            Job::Write(request) => request,
            Job::Delete | Job::Invalidate => unreachable!("only a write has a request"),
        }
    }

    fn last(&self) -> TierIdx {
        TierIdx::new(self.names.len() - 1)
    }

    fn next(&self, tier: TierIdx) -> TierIdx {
        TierIdx::new(tier.get() + 1)
    }

    /// The nearest tier after `tier` going towards tier 0 that still takes part in the write.
    fn nearer(&self, tier: TierIdx, left_out: &[TierIdx]) -> Option<TierIdx> {
        (0..tier.get()).rev().map(TierIdx::new).find(|t| !left_out.contains(t))
    }

    /// A nearer tier that cannot take the object now is left out; any other failure, and any
    /// failure of the authoritative tier, fails the write.
    fn may_leave_out(&self, tier: TierIdx, fault: TierFault) -> bool {
        let can_be_dropped = match fault {
            TierFault::TooLarge | TierFault::Busy => true,
            TierFault::ConditionFailed
            | TierFault::SizeMismatch
            | TierFault::Io
            | TierFault::Backend => false,
        };
        can_be_dropped && tier < self.last()
    }

    fn look_up(&mut self, tier: TierIdx, failed: bool) -> State {
        if tier.get() < self.names.len() {
            self.outputs.push_back(Output::StatTier { tier });
            return State::LookingUp { tier, failed };
        }
        // No tier holds a live revision; one that failed might have.
        if failed {
            return self.fail(Failure::CurrentUnknown, Reach::Asked);
        }
        self.judge(None)
    }

    /// Judges the write's fields against the live revision `current` (RFC 9110 §13.2.2).
    fn judge(&mut self, current: Option<&ObjectMeta>) -> State {
        let request = self.request();
        let guard = conditional::write_guard_for(
            request.if_match.as_deref(),
            request.if_none_match.as_deref(),
            current.map(|meta| &meta.etag),
        );
        match guard {
            Some(guard) => self.start_mutation(MutationKind::Write, guard),
            None => self.fail(Failure::PreconditionFailed, Reach::Asked),
        }
    }

    fn start_mutation(&mut self, kind: MutationKind, guard: WriteGuard) -> State {
        self.outputs.push_back(Output::StartMutation { kind });
        State::AwaitingProceed { guard }
    }

    fn create(&mut self, tier: TierIdx, guard: WriteGuard, left_out: Vec<TierIdx>) -> State {
        if tier.get() >= self.names.len() {
            self.outputs.push_back(Output::ReceiveBody);
            return State::Receiving { received: 0, left_out };
        }
        // Only the authoritative tier judges the condition; nearer tiers follow it.
        let guard_here = if tier == self.last() { guard.clone() } else { WriteGuard::None };
        self.outputs.push_back(Output::CreateWriter { tier, guard: guard_here });
        State::Creating { tier, guard, left_out }
    }

    fn on_chunk(&mut self, received: u64, left_out: Vec<TierIdx>) -> State {
        let request = self.request();
        if received > request.max_size {
            let failure = Failure::TooLarge { max: request.max_size };
            return self.fail(failure, Reach::Asked);
        }
        if let Some(expected) = request.content_length
            && received > expected
        {
            return self.fail(Failure::LongerThanAnnounced { expected }, Reach::Asked);
        }
        self.outputs.push_back(Output::WriteChunk);
        State::Receiving { received, left_out }
    }

    fn lock(&mut self, left_out: Vec<TierIdx>) -> State {
        self.outputs.push_back(Output::LockKey);
        State::Locking { left_out }
    }

    /// Commits `tier` next, or, past tier 0, drops what was left out and finishes.
    fn commit(
        &mut self,
        tier: Option<TierIdx>,
        left_out: Vec<TierIdx>,
        meta: Option<ObjectMeta>,
    ) -> State {
        if let Some(tier) = tier {
            self.outputs.push_back(Output::CommitTier { tier });
            return State::Committing { tier, left_out, meta };
        }
        for tier in left_out {
            self.outputs.push_back(Output::DropCopy { tier });
        }
        let meta = meta.expect("the authoritative tier committed before any nearer one");
        let headers = vec![
            (ETAG, meta.etag.to_field_value()),
            (LAST_MODIFIED, format_http_date(meta.last_modified)),
        ];
        self.finish(StatusCode::OK, headers, Reach::Written)
    }

    fn remove(&mut self, tier: TierIdx, existed: bool) -> State {
        if tier.get() < self.names.len() {
            self.outputs.push_back(Output::RemoveTier { tier });
            return State::Removing { tier, existed };
        }
        let status = if existed { StatusCode::OK } else { StatusCode::NOT_FOUND };
        self.finish(status, Vec::new(), Reach::Asked)
    }

    fn invalidate_next(&mut self, tier: TierIdx) -> State {
        if tier < self.last() {
            self.outputs.push_back(Output::InvalidateTier { tier });
            return State::Invalidating { tier };
        }
        self.finish(StatusCode::OK, Vec::new(), Reach::Invalidated)
    }

    fn finish(
        &mut self,
        status: StatusCode,
        headers: Vec<(http::HeaderName, String)>,
        reach: Reach,
    ) -> State {
        let plan = ResponsePlan { status, headers, body: Body::None };
        let cache_status = self.cache_status(reach);
        self.outputs.push_back(Output::Finish { plan, cache_status });
        State::Done
    }

    fn fail(&mut self, failure: Failure, reach: Reach) -> State {
        let cache_status = self.cache_status(reach);
        self.outputs.push_back(Output::Fail { failure, cache_status });
        State::Done
    }

    /// One member per tier: what the mutation asked of it (RFC 9211 §2.2: a method a cache
    /// does not answer from a stored copy is `fwd=method`).
    fn cache_status(&self, reach: Reach) -> CacheStatus {
        let last = self.last();
        let members = self
            .names
            .iter()
            .enumerate()
            .map(|(idx, name)| {
                let tier = TierIdx::new(idx);
                let (lookup, copy) = match reach {
                    Reach::Bypassed => (Lookup::Bypassed, CopyNote::None),
                    Reach::Asked => (Lookup::Method, CopyNote::None),
                    // Stored is claimed only where it is known: a nearer tier may have been
                    // left out of the write.
                    Reach::Written if tier == last => (Lookup::Method, CopyNote::Started),
                    Reach::Written => (Lookup::Method, CopyNote::None),
                    Reach::Invalidated if tier == last => (Lookup::Bypassed, CopyNote::None),
                    Reach::Invalidated => (Lookup::Method, CopyNote::None),
                };
                Member { tier, name: name.clone(), lookup, fwd_status: None, copy }
            })
            .collect();
        CacheStatus { members }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::EntityTag;

    const NAMES: [&str; 3] = ["memory", "disk", "s3"];

    fn meta(etag: &str) -> ObjectMeta {
        ObjectMeta {
            size: 3,
            etag: EntityTag::strong(etag).expect("test tags are valid"),
            last_modified: Timestamp::from_secs(1_700_000_000),
            headers: Vec::new(),
            expires: None,
        }
    }

    fn request() -> Request {
        Request {
            if_match: None,
            if_none_match: None,
            content_length: Some(3),
            max_size: 100,
            now: Timestamp::from_secs(1_700_000_100),
        }
    }

    fn tier(idx: usize) -> TierIdx {
        TierIdx::new(idx)
    }

    /// One line per output, short enough to compare a whole transcript with a literal list.
    fn describe(output: &Output) -> String {
        match output {
            Output::StatTier { tier } => format!("StatTier({})", tier.get()),
            Output::StartMutation { kind } => format!("StartMutation({kind:?})"),
            Output::CreateWriter { tier, guard } => match guard {
                WriteGuard::None => format!("CreateWriter({})", tier.get()),
                WriteGuard::IfAbsent => format!("CreateWriter({}, if absent)", tier.get()),
                WriteGuard::IfMatch(tag) => format!("CreateWriter({}, if-match {tag})", tier.get()),
            },
            Output::ReceiveBody => "ReceiveBody".to_owned(),
            Output::WriteChunk => "WriteChunk".to_owned(),
            Output::AbortWriter { tier } => format!("AbortWriter({})", tier.get()),
            Output::LockKey => "LockKey".to_owned(),
            Output::CommitTier { tier } => format!("CommitTier({})", tier.get()),
            Output::DropCopy { tier } => format!("DropCopy({})", tier.get()),
            Output::RemoveTier { tier } => format!("RemoveTier({})", tier.get()),
            Output::InvalidateTier { tier } => format!("InvalidateTier({})", tier.get()),
            Output::Finish { plan, cache_status } => {
                let headers: Vec<String> =
                    plan.headers.iter().map(|(name, value)| format!(" {name}: {value}")).collect();
                format!("Finish({}{}; {cache_status})", plan.status.as_u16(), headers.concat())
            }
            Output::Fail { failure, cache_status } => {
                format!("Fail({}, {failure:?}; {cache_status})", failure.status().as_u16())
            }
        }
    }

    struct Script {
        machine: Machine,
        transcript: Vec<String>,
    }

    impl Script {
        fn new(machine: Machine) -> Script {
            let mut script = Script { machine, transcript: Vec::new() };
            script.drain();
            script
        }

        fn write(request: Request, n_tiers: usize) -> Script {
            Script::new(Machine::write(request, &NAMES[..n_tiers]))
        }

        fn feed(&mut self, input: Input) -> &mut Script {
            self.machine.handle_input(input);
            self.drain();
            self
        }

        fn created(&mut self, tiers: &[usize]) -> &mut Script {
            for &idx in tiers {
                self.feed(Input::WriterCreated { tier: tier(idx) });
            }
            self
        }

        fn failed(&mut self, idx: usize, fault: TierFault) -> &mut Script {
            self.feed(Input::TierFailed { tier: tier(idx), fault })
        }

        /// The whole body in one chunk of `bytes`, then its end.
        fn body(&mut self, bytes: u64) -> &mut Script {
            self.feed(Input::ChunkReceived { bytes }).feed(Input::BodyEnded)
        }

        fn committed(&mut self, tiers: &[usize]) -> &mut Script {
            for &idx in tiers {
                self.feed(Input::Committed { tier: tier(idx), meta: meta("new") });
            }
            self
        }

        fn drain(&mut self) {
            while let Some(output) = self.machine.poll_output() {
                self.transcript.push(describe(&output));
            }
        }

        #[track_caller]
        fn expect(&mut self, expected: &[&str]) {
            assert_eq!(std::mem::take(&mut self.transcript), expected);
        }
    }

    #[test]
    fn a_write_creates_nearest_first_and_commits_deepest_first() {
        let mut s = Script::write(request(), 3);
        s.feed(Input::MutationProceeded).created(&[0, 1, 2]);
        s.feed(Input::ChunkReceived { bytes: 3 }).feed(Input::BodyEnded);
        s.feed(Input::KeyLocked).committed(&[2, 1, 0]);
        s.expect(&[
            "StartMutation(Write)",
            "CreateWriter(0)",
            "CreateWriter(1)",
            "CreateWriter(2)",
            "ReceiveBody",
            "WriteChunk",
            "LockKey",
            "CommitTier(2)",
            "CommitTier(1)",
            "CommitTier(0)",
            "Finish(200 etag: \"new\" last-modified: Tue, 14 Nov 2023 22:13:20 GMT; \
             s3; fwd=method; stored, disk; fwd=method, memory; fwd=method)",
        ]);
        assert!(s.machine.is_done());
    }

    #[test]
    fn a_nearer_tier_that_cannot_take_the_object_is_left_out_and_its_copy_dropped() {
        // Too large at creation, busy on a chunk: both left out, and dropped after the commit.
        let mut s = Script::write(request(), 3);
        s.feed(Input::MutationProceeded).created(&[0]).failed(1, TierFault::TooLarge);
        s.created(&[2]).feed(Input::ChunkReceived { bytes: 3 }).failed(0, TierFault::Busy);
        s.feed(Input::BodyEnded).feed(Input::KeyLocked).committed(&[2]);
        s.expect(&[
            "StartMutation(Write)",
            "CreateWriter(0)",
            "CreateWriter(1)",
            "CreateWriter(2)",
            "ReceiveBody",
            "WriteChunk",
            "AbortWriter(0)",
            "LockKey",
            "CommitTier(2)",
            "DropCopy(1)",
            "DropCopy(0)",
            "Finish(200 etag: \"new\" last-modified: Tue, 14 Nov 2023 22:13:20 GMT; \
             s3; fwd=method; stored, disk; fwd=method, memory; fwd=method)",
        ]);
    }

    #[test]
    fn only_the_authoritative_tiers_commit_failure_fails_the_write() {
        // A nearer commit failing after the authoritative one committed: left out, dropped.
        let mut s = Script::write(request(), 2);
        s.feed(Input::MutationProceeded).created(&[0, 1]).body(3);
        s.feed(Input::KeyLocked).committed(&[1]).failed(0, TierFault::Io);
        assert_eq!(s.transcript[6..9], ["CommitTier(1)", "CommitTier(0)", "DropCopy(0)"]);
        assert!(s.transcript[9].starts_with("Finish(200"), "{:?}", s.transcript);
        // The authoritative tier failing its commit fails the write before any nearer commit.
        let mut s = Script::write(request(), 2);
        s.feed(Input::MutationProceeded).created(&[0, 1]).body(3);
        s.feed(Input::KeyLocked).failed(1, TierFault::Backend);
        s.expect(&[
            "StartMutation(Write)",
            "CreateWriter(0)",
            "CreateWriter(1)",
            "ReceiveBody",
            "WriteChunk",
            "LockKey",
            "CommitTier(1)",
            "Fail(502, Tier { tier: TierIdx(1), fault: Backend }; \
             disk; fwd=method, memory; fwd=method)",
        ]);
    }

    #[test]
    fn a_failure_that_cannot_be_left_out_fails_the_write() {
        // The authoritative tier too large, a nearer tier failing its I/O.
        for (idx, fault, status) in [(1, TierFault::TooLarge, 413), (0, TierFault::Io, 503)] {
            let mut s = Script::write(request(), 2);
            s.feed(Input::MutationProceeded).created(&[0]);
            if idx == 1 {
                s.failed(1, fault);
            } else {
                s.created(&[1]).feed(Input::ChunkReceived { bytes: 1 }).failed(0, fault);
            }
            let last = s.transcript.last().expect("an answer");
            assert!(last.starts_with(&format!("Fail({status},")), "{last}");
            assert!(s.machine.is_done());
        }
    }

    #[test]
    fn the_body_is_bounded_by_the_largest_object_and_by_content_length() {
        let announced = Request { content_length: Some(101), ..request() };
        let mut s = Script::write(announced, 2);
        s.expect(&["Fail(413, TooLarge { max: 100 }; disk; fwd=bypass, memory; fwd=bypass)"]);
        let chunked = Request { content_length: None, ..request() };
        let mut s = Script::write(chunked, 1);
        s.feed(Input::MutationProceeded).created(&[0]);
        s.feed(Input::ChunkReceived { bytes: 60 }).feed(Input::ChunkReceived { bytes: 41 });
        s.expect(&[
            "StartMutation(Write)",
            "CreateWriter(0)",
            "ReceiveBody",
            "WriteChunk",
            "Fail(413, TooLarge { max: 100 }; memory; fwd=method)",
        ]);
        for (chunks, expect) in [
            (&[4][..], "Fail(400, LongerThanAnnounced { expected: 3 }; memory; fwd=method)"),
            (
                &[2][..],
                "Fail(400, ShorterThanAnnounced { received: 2, expected: 3 }; memory; fwd=method)",
            ),
        ] {
            let mut s = Script::write(request(), 1);
            s.feed(Input::MutationProceeded).created(&[0]);
            for &bytes in chunks {
                s.feed(Input::ChunkReceived { bytes });
            }
            s.feed(Input::BodyEnded);
            assert_eq!(s.transcript.last().map(String::as_str), Some(expect));
        }
    }

    #[test]
    fn a_shutdown_before_the_commits_fails_as_a_bypass_and_after_them_changes_nothing() {
        let mut s = Script::write(request(), 2);
        s.feed(Input::MutationProceeded).created(&[0, 1]).feed(Input::ShuttingDown);
        assert_eq!(
            s.transcript.last().map(String::as_str),
            Some("Fail(503, ShuttingDown; disk; fwd=bypass, memory; fwd=bypass)")
        );
        let mut s = Script::write(request(), 2);
        s.feed(Input::MutationProceeded).created(&[0, 1]).body(3);
        s.feed(Input::KeyLocked).feed(Input::ShuttingDown).committed(&[1, 0]);
        assert!(s.transcript.last().is_some_and(|last| last.starts_with("Finish(200")));
    }

    #[test]
    fn a_condition_the_tiers_cannot_judge_alone_looks_up_the_live_revision_first() {
        // If-None-Match listing the live revision: 412 without touching the backfill manager.
        let request = Request { if_none_match: Some("\"v1\"".into()), ..request() };
        let mut s = Script::write(request.clone(), 3);
        s.feed(Input::TierStatted { tier: tier(0), meta: None });
        s.failed(1, TierFault::Io)
            .feed(Input::TierStatted { tier: tier(2), meta: Some(meta("v1")) });
        s.expect(&[
            "StatTier(0)",
            "StatTier(1)",
            "StatTier(2)",
            "Fail(412, PreconditionFailed; s3; fwd=method, disk; fwd=method, memory; fwd=method)",
        ]);
        // Naming another revision: the write is pinned to the one found.
        let mut s = Script::write(request.clone(), 2);
        s.feed(Input::TierStatted { tier: tier(0), meta: Some(meta("v2")) });
        s.feed(Input::MutationProceeded).created(&[0]);
        s.expect(&[
            "StatTier(0)",
            "StartMutation(Write)",
            "CreateWriter(0)",
            "CreateWriter(1, if-match \"v2\")",
        ]);
        // An expired copy is no live revision; none anywhere pins the write to the absence.
        let mut expired = meta("v1");
        expired.expires = Some(Timestamp::from_secs(1_700_000_050));
        let mut s = Script::write(request.clone(), 2);
        s.feed(Input::TierStatted { tier: tier(0), meta: Some(expired) });
        s.feed(Input::TierStatted { tier: tier(1), meta: None });
        s.feed(Input::MutationProceeded).created(&[0]);
        assert_eq!(
            s.transcript[2..],
            ["StartMutation(Write)", "CreateWriter(0)", "CreateWriter(1, if absent)"]
        );
        // A tier that failed might have held the revision: 503.
        let mut s = Script::write(request, 2);
        s.feed(Input::TierStatted { tier: tier(0), meta: None }).failed(1, TierFault::Backend);
        assert_eq!(
            s.transcript.last().map(String::as_str),
            Some("Fail(503, CurrentUnknown; disk; fwd=method, memory; fwd=method)")
        );
    }

    #[test]
    fn if_match_alone_is_left_to_the_authoritative_tier() {
        let request = Request { if_match: Some("\"v1\"".into()), ..request() };
        let mut s = Script::write(request, 2);
        s.feed(Input::MutationProceeded).created(&[0, 1]).body(3);
        s.feed(Input::KeyLocked).failed(1, TierFault::ConditionFailed);
        assert_eq!(
            s.transcript[..3],
            ["StartMutation(Write)", "CreateWriter(0)", "CreateWriter(1, if-match \"v1\")"]
        );
        assert!(s.transcript.last().is_some_and(|last| last.starts_with("Fail(412,")));
    }

    #[test]
    fn a_delete_goes_nearest_first_and_is_404_when_no_tier_held_the_key() {
        let mut s = Script::new(Machine::delete(&NAMES[..2]));
        s.feed(Input::MutationProceeded).feed(Input::KeyLocked);
        s.feed(Input::TierRemoved { tier: tier(0), existed: false });
        s.feed(Input::TierRemoved { tier: tier(1), existed: true });
        s.expect(&[
            "StartMutation(Delete)",
            "LockKey",
            "RemoveTier(0)",
            "RemoveTier(1)",
            "Finish(200; disk; fwd=method, memory; fwd=method)",
        ]);
        let mut s = Script::new(Machine::delete(&NAMES[..2]));
        s.feed(Input::MutationProceeded).feed(Input::KeyLocked);
        s.feed(Input::TierRemoved { tier: tier(0), existed: false }).failed(1, TierFault::Io);
        assert_eq!(
            s.transcript.last().map(String::as_str),
            Some(
                "Fail(503, Tier { tier: TierIdx(1), fault: Io }; disk; fwd=method, memory; fwd=method)"
            )
        );
        let mut s = Script::new(Machine::delete(&NAMES[..1]));
        s.feed(Input::MutationProceeded).feed(Input::KeyLocked);
        s.feed(Input::TierRemoved { tier: tier(0), existed: false });
        assert_eq!(
            s.transcript.last().map(String::as_str),
            Some("Finish(404; memory; fwd=method)")
        );
    }

    #[test]
    fn an_invalidation_leaves_the_authoritative_tier_alone() {
        let mut s = Script::new(Machine::invalidate(&NAMES));
        s.feed(Input::MutationProceeded).feed(Input::KeyLocked);
        s.feed(Input::TierRemoved { tier: tier(0), existed: true });
        s.feed(Input::TierRemoved { tier: tier(1), existed: false });
        s.expect(&[
            "StartMutation(Invalidate)",
            "LockKey",
            "InvalidateTier(0)",
            "InvalidateTier(1)",
            "Finish(200; s3; fwd=bypass, disk; fwd=method, memory; fwd=method)",
        ]);
        // With one tier there is nothing to invalidate.
        let mut s = Script::new(Machine::invalidate(&NAMES[..1]));
        s.feed(Input::MutationProceeded).feed(Input::KeyLocked);
        s.expect(&["StartMutation(Invalidate)", "LockKey", "Finish(200; memory; fwd=bypass)"]);
    }

    #[test]
    fn an_answer_nobody_asked_for_changes_nothing() {
        let mut s = Script::write(request(), 2);
        s.feed(Input::WriterCreated { tier: tier(0) }).feed(Input::KeyLocked);
        s.feed(Input::MutationProceeded).feed(Input::WriterCreated { tier: tier(1) });
        s.expect(&["StartMutation(Write)", "CreateWriter(0)"]);
        assert!(!s.machine.is_done());
    }
}
