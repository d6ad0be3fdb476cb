//! The tiered read: which tier to open next and which to serve from (SPEC §4).
//!
//! One [`Machine`] per GET or HEAD. It asks the host to open tiers 0, 1, ... in turn, looks at
//! the metadata each answer carries, decides with [`conditional::plan_response`] what the
//! response is, and tells the host which tier's bytes to send. The host holds the streams; the
//! machine sees only metadata and windows.
//!
//! # Events and actions
//!
//! ```text
//! host reports (Input)                        machine answers (Output)
//! ---------------------------------------     ----------------------------------------------
//! (construction)                              OpenTier { 0, probe span, client conditions }
//! TierOpened { tier, meta, window }           OpenTier { next tier }        not definitive
//!   (window None: 304/412/416, no body)       OpenTier { tier, want, If-Match: "etag" }
//!                                                                           re-open pinned
//!                                             RequestCopy { from, meta, Tee | Background }
//!                                             Serve { plan, source, cache_status }
//! TierMissed { tier }                         OpenTier { next } / Serve (404, or the fallback)
//! TierFailed { tier }                         OpenTier { next } / Serve (502, or the fallback)
//! CopyAnswered { answer }                    Serve { plan, source, cache_status }
//! PartSent { index }                          OpenTier { tier, part, pinned } / (done)
//! TierOpened for a part                       SendPart { index } / Abort { why }
//! ```
//!
//! # States
//!
//! ```text
//!            new
//!             │ OpenTier(0)
//!             ▼
//!   ┌──► Probing { tier, fallback, failed } ──miss / failed / expired / not definitive──┐
//!   │         │  definitive answer              ▲         (OpenTier(tier + 1))          │
//!   │         │  or walk over with a fallback   └───────────────────────────────────────┘
//!   │         ▼
//!   │    body in hand? ──no──► Reopening { tier, want } ──revision changed──┐ (n_walks < 3)
//!   │         │ yes                    │ same revision, wanted window       │
//!   │         ▼                        ▼                                    │
//!   │    tier > 0 and bytes sent? ──yes──► AwaitingCopy ───CopyAnswered───────┐
//!   │         │ no                                                          │
//!   │         ▼                                                             ▼
//!   │       Serve ◄───────────────────────────────────────────────────────────
//!   │         │ multipart: SendPart(0) ─► SendingPart ─PartSent─► OpeningPart ─► SendingPart ...
//!   │         ▼
//!   │       Done
//!   └───────── restart (bounded) from Reopening when the pinned revision is gone
//! ```
//!
//! # Which answer stands (SPEC §4)
//!
//! Every answer that carries metadata is planned by the core, whatever the tier said (some
//! backends ignore conditional requests). A tier is *not definitive* when its plan is 412 (its
//! revision fails If-Match or If-Unmodified-Since) or when an If-Range holding a strong
//! entity-tag changed its plan (it holds another revision than the one named; a date or a weak
//! tag names none, so it never sends the read deeper): deeper tiers are then asked for the
//! named revision with the same conditions. The first such answer is kept as the fallback.
//! When the walk is over without a definitive answer (`is_definitive` decides):
//!
//! * a fallback whose plan sends the object (If-Range: the whole current object with 200)
//!   stands, even if a tier failed: that answer is right whatever the failed tier held;
//! * otherwise a failure met on the way gives 502, since the failed tier may have held the
//!   object or the named revision;
//! * otherwise the fallback (412) stands, or 404 when no tier had any copy.
//!
//! # Bodies
//!
//! The host keeps only the body of the latest [`Input::TierOpened`] and drops it as soon as the
//! machine asks for anything else. The probe opens the span of the request's first range (the
//! whole object without a usable Range, or for HEAD); when the final plan needs other bytes
//! (If-Range sends the whole object, a multi-range request sends parts, a fallback tier whose
//! body was dropped) the machine re-opens that tier with exactly those bytes, pinned with
//! `If-Match` to the planned entity-tag, so metadata and bytes come from one revision (SPEC §1).
//! If the pinned revision is gone, the walk restarts from tier 0, at most [`MAX_WALKS`] times in
//! all, then 503.
//!
//! A `multipart/byteranges` plan is sent part by part: after [`Output::Serve`] comes
//! [`Output::SendPart`] for part 0 (the body in hand); after each [`Input::PartSent`] the machine
//! asks for the next part's window, pinned, and checks the answer before its `SendPart`. The
//! host writes the plan's `closing` after the last part. A part whose pinned open fails ends
//! the response with [`Output::Abort`]: the status line is gone, so truncation is all that is
//! left.
//!
//! # Backfill
//!
//! A GET whose plan sends bytes from tier `i > 0` asks for a copy into tier 0 before it is
//! served: [`Output::RequestCopy`] with [`backfill::Mode::Tee`] when the whole object is sent
//! (the response stream is teed), else [`backfill::Mode::Background`] (a fragment is never
//! stored as the object). HEAD, 304, 412 and 416 read no bytes and copy nothing (`copy_mode`
//! decides). The host asks the [`backfill::Manager`] and reports its answer, which decides
//! `stored` in `Cache-Status`. Every host walks its tiers with this machine (the edge worker
//! too, through the wasm build), so none of these rules is written twice.
//!
//! Tier 0 is filled when its probe showed it held no live copy (it missed, or its copy had
//! expired), and when the bytes come from the last tier, which is authoritative: its revision is
//! current by definition, so copying it can only bring tier 0 up to date (`fills_tier_0`
//! decides). That is how a stale tier 0 is refreshed, for instance after another server of the
//! fleet wrote the shared last tier and a client's If-Match or If-Range names the new revision.
//! When tier 0 held a live revision the request's validators did not accept (a failed
//! If-Match, an If-Range naming another revision) and the named revision comes from a middle
//! tier, the read is served from there but copies nothing: which of the two revisions is newer
//! is unknown, and a client holding an old entity-tag must not roll tier 0 back. When tier 0
//! failed, nothing is copied whatever the source: a tier that just failed a read would most
//! likely fail the copy too, and each such read would cost a second full read of a deeper tier
//! (the authoritative one included) while tier 0 is down; the next read that finds it empty or
//! stale fills it. `Cache-Status` names no `stored` when nothing is copied.

use std::collections::VecDeque;

use http::{Method, StatusCode};

use crate::backfill;
use crate::cache_status::{CacheStatus, CopyNote, Lookup, Member};
use crate::conditional::{self, Body, Precondition, RequestHeaders, ResponsePlan};
use crate::object::ObjectMeta;
use crate::range::{self, OpenWindow, RangeLimits, Span, Window};
use crate::tier::TierIdx;
use crate::time::Timestamp;
use crate::validators::EntityTag;

/// Most walks over the tiers for one read: the first, plus restarts when a pinned revision
/// vanished between the probe and the re-open. Two restarts survive an object rewritten twice
/// during one read; an object rewritten faster than that gets 503 rather than a livelock.
pub const MAX_WALKS: u32 = 3;

/// Status when a tier failure hid the answer (the cache could not reach its store).
pub const TIER_FAILED_STATUS: StatusCode = StatusCode::BAD_GATEWAY;

/// Status when the object kept changing under the read ([`MAX_WALKS`] exhausted).
pub const UNSTABLE_STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// The request fields a read depends on, owned (raw field values, joined with `, ` when a
/// field repeats), and the host's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// GET or HEAD.
    pub method: Method,
    /// `If-Match`.
    pub if_match: Option<String>,
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<String>,
    /// `Range`.
    pub range: Option<String>,
    /// `If-Range`.
    pub if_range: Option<String>,
    /// When the request arrived; copies that expire at or before it are never served.
    pub now: Timestamp,
}

impl Request {
    /// A GET or HEAD with no conditional or range field.
    pub fn new(method: Method, now: Timestamp) -> Request {
        Request {
            method,
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
            range: None,
            if_range: None,
            now,
        }
    }

    /// The borrowed view [`conditional::plan_response`] takes.
    pub fn headers(&self) -> RequestHeaders<'_> {
        RequestHeaders {
            method: &self.method,
            if_match: self.if_match.as_deref(),
            if_none_match: self.if_none_match.as_deref(),
            if_modified_since: self.if_modified_since.as_deref(),
            if_unmodified_since: self.if_unmodified_since.as_deref(),
            range: self.range.as_deref(),
            if_range: self.if_range.as_deref(),
        }
    }
}

/// Preconditions for a tier to evaluate against the revision it opens, as raw field values;
/// the host passes them on in its open request. Tiers that can send them upstream do so, and
/// every tier also checks the revision it got back with [`resolve_open`], since some servers
/// ignore conditional requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match`; also pins a re-open to one revision (`"etag"`).
    pub if_match: Option<String>,
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<String>,
}

impl Conditions {
    /// The client's own preconditions.
    pub fn of(request: &Request) -> Conditions {
        Conditions {
            if_match: request.if_match.clone(),
            if_none_match: request.if_none_match.clone(),
            if_modified_since: request.if_modified_since.clone(),
            if_unmodified_since: request.if_unmodified_since.clone(),
        }
    }

    /// Only the revision tagged `etag`: `If-Match: "etag"`.
    pub fn pinned(etag: &EntityTag) -> Conditions {
        Conditions { if_match: Some(format!("\"{}\"", etag.opaque)), ..Conditions::default() }
    }

    /// True when no precondition is present.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }
}

/// Why a tier answers an open of a live revision without a body ([`resolve_open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBody {
    /// The span does not overlap the object (SPEC §1).
    NotSatisfiable,
    /// `If-Match` or `If-Unmodified-Since` failed.
    PreconditionFailed,
    /// `If-None-Match` or `If-Modified-Since` says the client's copy is current.
    NotModified,
}

/// What the host saw while carrying out the machine's outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Tier `tier` found a revision described by `meta`. `window` is the window whose body the
    /// host now holds, `None` when the tier answered without a body (not satisfiable,
    /// precondition failed, not modified).
    TierOpened {
        /// The tier.
        tier: TierIdx,
        /// The revision found.
        meta: ObjectMeta,
        /// The window opened, if a body was opened.
        window: Option<OpenWindow>,
    },
    /// Tier `tier` holds no live copy.
    TierMissed {
        /// The tier.
        tier: TierIdx,
    },
    /// Tier `tier` failed.
    TierFailed {
        /// The tier.
        tier: TierIdx,
    },
    /// The backfill manager's answer ([`backfill::Manager::request_copy`]) to the copy asked
    /// for by [`Output::RequestCopy`].
    CopyAnswered {
        /// The copy that started, or why none did.
        answer: Result<backfill::CopyId, backfill::Refusal>,
    },
    /// Part `index` of a multipart body was written to the client.
    PartSent {
        /// The part.
        index: usize,
    },
}

/// What the host must do next for this read.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open `span` of tier `tier`, evaluating `conditions` against the revision found, and
    /// report what it answered; drop any body held before.
    OpenTier {
        /// The tier.
        tier: TierIdx,
        /// The bytes wanted.
        span: Span,
        /// Preconditions for the tier.
        conditions: Conditions,
    },
    /// Ask the backfill manager for a copy of `meta`'s revision from `from` into tier 0, and
    /// report its answer with [`Input::CopyAnswered`]. The host adds what only it knows (the
    /// key, and the generation it took before opening any tier) to make the
    /// [`backfill::CopyRequest`].
    RequestCopy {
        /// The tier served from.
        from: TierIdx,
        /// The revision served.
        meta: ObjectMeta,
        /// Tee the response, or copy in the background.
        mode: backfill::Mode,
    },
    /// Send the response: status and headers from `plan` plus `Cache-Status`, the body from
    /// `source`.
    Serve {
        /// Status, headers and body layout.
        plan: ResponsePlan,
        /// Where the body's bytes come from.
        source: Source,
        /// The `Cache-Status` field (render it with `to_string()`).
        cache_status: CacheStatus,
    },
    /// Write part `index` of the multipart body: its head, then the body held, then report
    /// [`Input::PartSent`].
    SendPart {
        /// The part.
        index: usize,
    },
    /// Stop sending the response now, mid-body: the bytes promised cannot be delivered.
    Abort {
        /// Why.
        why: AbortReason,
    },
    /// Drop the body just reported from `tier`: the machine did not ask for it.
    DropBody {
        /// The tier.
        tier: TierIdx,
    },
}

/// Where a served body comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// No body (HEAD, 304, 404, 412, 416, 502, 503); drop anything held.
    Nothing,
    /// The body held from the latest open of `tier`: exactly the plan's bytes.
    Opened {
        /// The tier.
        tier: TierIdx,
    },
    /// A multipart body from `tier`, sent part by part as [`Output::SendPart`] says.
    Parts {
        /// The tier.
        tier: TierIdx,
    },
}

/// Why a response was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// A part's pinned open found another revision, or none.
    RevisionChanged,
    /// A part's open failed.
    TierFailed,
}

/// The tiered read of one GET or HEAD; see the module doc for its events and states.
#[derive(Debug)]
pub struct Machine {
    request: Request,
    names: Vec<String>,
    limits: RangeLimits,
    probe: Span,
    members: Vec<Member>,
    n_walks: u32,
    state: State,
    outputs: VecDeque<Output>,
}

/// What the machine waits for.
///
/// ```text
///   Probing ──definitive, body in hand──────────────► AwaitingCopy / Done
///   Probing ──definitive or fallback, body missing──► Reopening ──► AwaitingCopy / Done
///   Reopening ──revision changed──► Probing (tier 0)            (bounded by MAX_WALKS)
///   AwaitingCopy ──CopyAnswered──► Done, or SendingPart (multipart)
///   SendingPart ──PartSent──► OpeningPart ──TierOpened──► SendingPart ... ──► Done
/// ```
#[derive(Debug)]
enum State {
    /// Waiting for tier `tier`'s answer to the probe.
    Probing {
        tier: TierIdx,
        /// The first answer that was not definitive, kept in case no deeper tier has better.
        fallback: Option<Candidate>,
        /// Whether a tier failed during this walk.
        failed: bool,
    },
    /// Waiting for a pinned re-open of `answer.tier` returning `want`.
    Reopening { answer: Candidate, want: OpenWindow },
    /// Waiting for the backfill manager's answer; the body is held.
    AwaitingCopy { answer: Candidate },
    /// Waiting for the host to finish part `index`.
    SendingPart { parts: PartsToSend, index: usize },
    /// Waiting for the pinned open of part `index`.
    OpeningPart { parts: PartsToSend, index: usize },
    /// The response is sent or abandoned; every input is ignored.
    Done,
}

/// A tier's answer and the plan made from it.
#[derive(Clone, Debug)]
struct Candidate {
    tier: TierIdx,
    meta: ObjectMeta,
    plan: ResponsePlan,
}

#[derive(Clone, Debug)]
struct PartsToSend {
    tier: TierIdx,
    etag: EntityTag,
    size: u64,
    windows: Vec<Window>,
}

impl Machine {
    /// Starts the read of `request` over the tiers named `tier_names` (tier 0 first); the
    /// first output opens tier 0.
    pub fn new(request: Request, tier_names: &[impl AsRef<str>], limits: RangeLimits) -> Machine {
        let probe = probe_span(&request, &limits);
        let mut machine = Machine {
            request,
            names: tier_names.iter().map(|name| name.as_ref().to_owned()).collect(),
            limits,
            probe,
            members: Vec::new(),
            n_walks: 0,
            state: State::Done,
            outputs: VecDeque::new(),
        };
        machine.start_walk();
        machine
    }

    /// Feeds one observation; drain [`Machine::poll_output`] before the next.
    pub fn handle_input(&mut self, input: Input) {
        let state = std::mem::replace(&mut self.state, State::Done);
        self.state = match (state, input) {
            (
                State::Probing { tier, fallback, failed },
                Input::TierOpened { tier: t, meta, window },
            ) if t == tier => self.on_probe_opened(tier, fallback, failed, meta, window),
            (State::Probing { tier, fallback, failed }, Input::TierMissed { tier: t })
                if t == tier =>
            {
                self.record(tier, Lookup::Missed);
                self.next_tier(tier, fallback, failed)
            }
            (State::Probing { tier, fallback, .. }, Input::TierFailed { tier: t }) if t == tier => {
                self.record(tier, Lookup::Failed);
                self.next_tier(tier, fallback, true)
            }
            (State::Reopening { answer, want }, Input::TierOpened { tier, meta, window })
                if tier == answer.tier =>
            {
                if window.is_some_and(|w| same_revision_window(&answer.meta, &meta, w, want)) {
                    self.ready(answer)
                } else {
                    if window.is_some() {
                        self.outputs.push_back(Output::DropBody { tier });
                    }
                    self.restart()
                }
            }
            (State::Reopening { answer, .. }, Input::TierMissed { tier })
                if tier == answer.tier =>
            {
                self.restart()
            }
            (State::Reopening { answer, .. }, Input::TierFailed { tier })
                if tier == answer.tier =>
            {
                self.record(tier, Lookup::Failed);
                self.respond_without_tier(TIER_FAILED_STATUS)
            }
            (State::AwaitingCopy { answer }, Input::CopyAnswered { answer: copy }) => {
                let note = match copy {
                    Ok(_) => CopyNote::Started,
                    Err(why) if why.is_deduplicated() => CopyNote::Deduplicated,
                    Err(_) => CopyNote::Skipped,
                };
                self.serve(answer, note)
            }
            (State::SendingPart { parts, index }, Input::PartSent { index: i }) if i == index => {
                self.next_part(parts, index + 1)
            }
            (State::OpeningPart { parts, index }, Input::TierOpened { tier, meta, window })
                if tier == parts.tier =>
            {
                let want = OpenWindow::Part(parts.windows[index]);
                let same = meta.etag.strong_eq(&parts.etag) && meta.size == parts.size;
                if same && window.is_some_and(|w| w.bounds(meta.size) == want.bounds(meta.size)) {
                    self.outputs.push_back(Output::SendPart { index });
                    State::SendingPart { parts, index }
                } else {
                    self.abort(AbortReason::RevisionChanged)
                }
            }
            (State::OpeningPart { parts, .. }, Input::TierMissed { tier })
                if tier == parts.tier =>
            {
                self.abort(AbortReason::RevisionChanged)
            }
            (State::OpeningPart { parts, .. }, Input::TierFailed { tier })
                if tier == parts.tier =>
            {
                self.abort(AbortReason::TierFailed)
            }
            // Anything else answers a question this machine did not ask (a host bug or a late
            // report): the state is unchanged and a body that came with it is dropped.
            (
                state @ (State::Probing { .. }
                | State::Reopening { .. }
                | State::AwaitingCopy { .. }
                | State::SendingPart { .. }
                | State::OpeningPart { .. }
                | State::Done),
                input @ (Input::TierOpened { .. }
                | Input::TierMissed { .. }
                | Input::TierFailed { .. }
                | Input::CopyAnswered { .. }
                | Input::PartSent { .. }),
            ) => {
                if let Input::TierOpened { tier, window: Some(_), .. } = input {
                    self.outputs.push_back(Output::DropBody { tier });
                }
                state
            }
        };
    }

    /// The next action to carry out, in order; `None` when there is nothing left to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// True once the response was handed over (or abandoned) and nothing more will be asked.
    pub fn is_done(&self) -> bool {
        match self.state {
            State::Done => self.outputs.is_empty(),
            State::Probing { .. }
            | State::Reopening { .. }
            | State::AwaitingCopy { .. }
            | State::SendingPart { .. }
            | State::OpeningPart { .. } => false,
        }
    }

    fn start_walk(&mut self) {
        self.n_walks += 1;
        self.members.clear();
        self.state = self.probe_tier(TierIdx::new(0), None, false);
    }

    fn probe_tier(&mut self, tier: TierIdx, fallback: Option<Candidate>, failed: bool) -> State {
        if tier.get() >= self.names.len() {
            return self.walk_over(fallback, failed);
        }
        self.outputs.push_back(Output::OpenTier {
            tier,
            span: self.probe,
            conditions: Conditions::of(&self.request),
        });
        State::Probing { tier, fallback, failed }
    }

    fn next_tier(&mut self, tier: TierIdx, fallback: Option<Candidate>, failed: bool) -> State {
        self.probe_tier(TierIdx::new(tier.get() + 1), fallback, failed)
    }

    fn on_probe_opened(
        &mut self,
        tier: TierIdx,
        fallback: Option<Candidate>,
        failed: bool,
        meta: ObjectMeta,
        window: Option<OpenWindow>,
    ) -> State {
        // SPEC §3: expired objects are never served, whatever the tier thought.
        if meta.is_expired(self.request.now) {
            self.record(tier, Lookup::Expired);
            return self.next_tier(tier, fallback, failed);
        }
        let plan = self.plan(&meta);
        let answer = Candidate { tier, meta, plan };
        if self.is_definitive(&answer) {
            self.record(tier, Lookup::Hit);
            return self.fetch_body(answer, window);
        }
        self.record(tier, Lookup::NotAccepted);
        self.next_tier(tier, fallback.or(Some(answer)), failed)
    }

    fn walk_over(&mut self, fallback: Option<Candidate>, failed: bool) -> State {
        // An answer that sends the object (If-Range's whole current object) is right whatever a
        // failed tier held; a 412 or a 404 might not be.
        if failed && !fallback.as_ref().is_some_and(|answer| plan_sends_bytes(&answer.plan)) {
            return self.respond_without_tier(TIER_FAILED_STATUS);
        }
        match fallback {
            Some(answer) => {
                self.record(answer.tier, Lookup::Hit);
                self.fetch_body(answer, None)
            }
            None => self.respond_without_tier(StatusCode::NOT_FOUND),
        }
    }

    /// Makes sure the host holds exactly the bytes `answer.plan` sends, re-opening if not.
    fn fetch_body(&mut self, answer: Candidate, held: Option<OpenWindow>) -> State {
        let Some(want) = wanted_window(&answer.plan) else {
            return self.ready(answer);
        };
        let size = answer.meta.size;
        if held.is_some_and(|held| held.bounds(size) == want.bounds(size)) {
            return self.ready(answer);
        }
        let span = match want {
            OpenWindow::Whole => Span::WHOLE,
            OpenWindow::Part(window) => Span::from(window),
        };
        self.outputs.push_back(Output::OpenTier {
            tier: answer.tier,
            span,
            conditions: Conditions::pinned(&answer.meta.etag),
        });
        State::Reopening { answer, want }
    }

    /// The body is in hand (or none is needed): ask for a copy if one is due, else serve.
    fn ready(&mut self, answer: Candidate) -> State {
        let Some(mode) = self.copy_mode(&answer) else {
            return self.serve(answer, CopyNote::None);
        };
        self.outputs.push_back(Output::RequestCopy {
            from: answer.tier,
            meta: answer.meta.clone(),
            mode,
        });
        State::AwaitingCopy { answer }
    }

    fn serve(&mut self, answer: Candidate, copy: CopyNote) -> State {
        let Candidate { tier, meta, plan } = answer;
        if let Some(nearest) = self.members.iter_mut().find(|m| m.tier.get() == 0) {
            nearest.copy = copy;
        }
        let cache_status = self.cache_status(plan.status);
        let parts = match &plan.body {
            Body::None => None,
            Body::Full | Body::Window(_) => None,
            Body::Multipart { parts, .. } => Some(PartsToSend {
                tier,
                etag: meta.etag.clone(),
                size: meta.size,
                windows: parts.iter().map(|part| part.window).collect(),
            }),
        };
        let source = match &plan.body {
            Body::None => Source::Nothing,
            Body::Full | Body::Window(_) => Source::Opened { tier },
            Body::Multipart { .. } => Source::Parts { tier },
        };
        self.outputs.push_back(Output::Serve { plan, source, cache_status });
        match parts {
            None => State::Done,
            Some(parts) => {
                // Part 0 is the body in hand: fetch_body opened exactly its window.
                self.outputs.push_back(Output::SendPart { index: 0 });
                State::SendingPart { parts, index: 0 }
            }
        }
    }

    fn next_part(&mut self, parts: PartsToSend, index: usize) -> State {
        let Some(window) = parts.windows.get(index) else {
            return State::Done;
        };
        self.outputs.push_back(Output::OpenTier {
            tier: parts.tier,
            span: Span::from(*window),
            conditions: Conditions::pinned(&parts.etag),
        });
        State::OpeningPart { parts, index }
    }

    fn restart(&mut self) -> State {
        if self.n_walks >= MAX_WALKS {
            return self.respond_without_tier(UNSTABLE_STATUS);
        }
        self.start_walk();
        std::mem::replace(&mut self.state, State::Done)
    }

    fn respond_without_tier(&mut self, status: StatusCode) -> State {
        let plan = ResponsePlan { status, headers: Vec::new(), body: Body::None };
        for member in &mut self.members {
            if member.lookup == Lookup::Hit {
                // The answer this tier gave could not be used after all.
                member.lookup = Lookup::NotAccepted;
            }
        }
        let cache_status = self.cache_status(status);
        self.outputs.push_back(Output::Serve { plan, source: Source::Nothing, cache_status });
        State::Done
    }

    fn abort(&mut self, why: AbortReason) -> State {
        self.outputs.push_back(Output::Abort { why });
        State::Done
    }

    fn record(&mut self, tier: TierIdx, lookup: Lookup) {
        if let Some(member) = self.members.iter_mut().find(|m| m.tier == tier) {
            member.lookup = lookup;
            return;
        }
        // Kept in tier order by inserting in place (a sort would add its routine to the wasm
        // module for a list of at most a few tiers).
        let at = self.members.iter().position(|m| m.tier > tier).unwrap_or(self.members.len());
        let name = self.names[tier.get()].clone();
        self.members
            .insert(at, Member { tier, name, lookup, fwd_status: None, copy: CopyNote::None });
    }

    fn plan(&self, meta: &ObjectMeta) -> ResponsePlan {
        conditional::plan_response(&self.request.headers(), meta, &self.limits)
    }

    fn is_definitive(&self, answer: &Candidate) -> bool {
        is_definitive(&self.request.headers(), &answer.meta, &answer.plan, &self.limits)
    }

    fn copy_mode(&self, answer: &Candidate) -> Option<backfill::Mode> {
        let tier_0 = self.members.iter().find(|m| m.tier.get() == 0).map(|m| m.lookup);
        if !tier_0.is_some_and(|probed| fills_tier_0(probed, answer.tier, self.names.len())) {
            return None;
        }
        copy_mode(&self.request.method, answer.tier, &answer.plan.body)
    }

    /// The members as they stand, each forwarding member with the `fwd-status` its forwarded
    /// request got when that differs from `status` (RFC 9211 §2.3: absent, it defaults to the
    /// response's status). What a tier's forward got is the answer of the deeper tiers: the
    /// response when one of them answered it, else 502 if one failed, else 404. A failed tier
    /// with no deeper tier consulted received no response at all (an unreachable upstream), so
    /// it claims no status: §2.3 has `fwd-status` only for a response that was received.
    fn cache_status(&self, status: StatusCode) -> CacheStatus {
        let mut members = self.members.clone();
        for member in &mut members {
            member.fwd_status = match member.lookup {
                // A read records neither of the last two; they answer mutations.
                Lookup::Hit | Lookup::Method | Lookup::Bypassed => None,
                Lookup::Failed if !self.members.iter().any(|d| d.tier > member.tier) => None,
                Lookup::Missed | Lookup::Expired | Lookup::NotAccepted | Lookup::Failed => {
                    let deeper = self.members.iter().filter(|d| d.tier > member.tier);
                    let below = if deeper.clone().any(|d| d.lookup == Lookup::Hit) {
                        status
                    } else if deeper.clone().any(|d| d.lookup == Lookup::Failed) {
                        TIER_FAILED_STATUS
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    (below != status).then_some(below)
                }
            };
        }
        CacheStatus { members }
    }
}

/// Whether `plan`, made by [`conditional::plan_response`] for `request` against the revision
/// `meta` a tier holds, is that tier's final answer (SPEC §4). It is not when the revision
/// fails the request's validators: the plan is 412 (If-Match or If-Unmodified-Since), or an
/// If-Range holding a strong entity-tag turned what would have been a range answer into the
/// whole object. A deeper tier is then asked for the named revision, and the answer stands only
/// when none has it.
///
/// Only a strong entity-tag names a revision another tier might hold: a date never holds
/// (Last-Modified is weak, `ObjectMeta::is_last_modified_strong`) and neither does a weak tag,
/// so those get the whole object from the first tier without a deeper look.
fn is_definitive(
    request: &RequestHeaders<'_>,
    meta: &ObjectMeta,
    plan: &ResponsePlan,
    limits: &RangeLimits,
) -> bool {
    if plan.status == StatusCode::PRECONDITION_FAILED {
        return false;
    }
    let names_revision =
        request.if_range.and_then(EntityTag::parse).is_some_and(|tag| tag.is_strong());
    if !names_revision || request.range.is_none() {
        return true;
    }
    let mut without = request.clone();
    without.if_range = None;
    conditional::plan_response(&without, meta, limits).status == plan.status
}

/// How a read copies into tier 0 the revision it serves from tier `from` with a plan whose
/// body is `body` (SPEC §4): [`backfill::Mode::Tee`] when a GET sends the whole object (the
/// response stream is teed), [`backfill::Mode::Background`] when it sends a range or parts (a
/// fragment is never stored as the object), and no copy at all from tier 0 itself, for HEAD, or
/// for an answer without a body (304, 412, 416).
fn copy_mode(method: &Method, from: TierIdx, body: &Body) -> Option<backfill::Mode> {
    if from.get() == 0 || *method != Method::GET {
        return None;
    }
    match body {
        Body::None => None,
        Body::Full => Some(backfill::Mode::Tee),
        Body::Window(_) | Body::Multipart { .. } => Some(backfill::Mode::Background),
    }
}

/// Whether a copy of what a read serves from tier `from`, out of `n_tiers`, may go into tier 0
/// after this walk's probe of tier 0 was recorded as `probed` (SPEC §4).
///
/// * A tier 0 that missed, or whose copy had expired, held no live copy: it is filled.
/// * A tier 0 that held a live revision ([`Lookup::Hit`], or [`Lookup::NotAccepted`] when the
///   request's validators named another one) is filled only from the last tier, the
///   authoritative one, whose revision is current by definition: that refreshes a stale tier 0
///   (another server wrote the shared last tier). From a middle tier it keeps what it holds:
///   which revision is newer is unknown, and an old entity-tag must not roll tier 0 back.
/// * A tier 0 that failed is not filled, whatever the source: a copy into a tier that just
///   failed would most likely fail too, and would read the object from a deeper tier a second
///   time on every read while tier 0 is down.
fn fills_tier_0(probed: Lookup, from: TierIdx, n_tiers: usize) -> bool {
    match probed {
        Lookup::Missed | Lookup::Expired => true,
        Lookup::Hit | Lookup::NotAccepted => from.get() + 1 == n_tiers,
        Lookup::Failed => false,
        // Never recorded by a read: they answer mutations.
        Lookup::Method | Lookup::Bypassed => false,
    }
}

/// What a tier answers to an open of `span` of its live revision `meta` under `conditions`:
/// the window whose bytes it sends, or why it sends none. Preconditions come first, evaluated
/// as for a GET (RFC 9110 §13.2.2), so a failed or not-modified revision is reported even when
/// the span misses it; only then is the span resolved against the revision's size (SPEC §1).
pub fn resolve_open(
    meta: &ObjectMeta,
    conditions: &Conditions,
    span: Span,
) -> Result<OpenWindow, NoBody> {
    let mut req = RequestHeaders::new(&Method::GET);
    req.if_match = conditions.if_match.as_deref();
    req.if_none_match = conditions.if_none_match.as_deref();
    req.if_modified_since = conditions.if_modified_since.as_deref();
    req.if_unmodified_since = conditions.if_unmodified_since.as_deref();
    match conditional::evaluate_preconditions(&req, meta) {
        Precondition::Failed => Err(NoBody::PreconditionFailed),
        Precondition::NotModified => Err(NoBody::NotModified),
        Precondition::Proceed => span.resolve(meta.size).ok_or(NoBody::NotSatisfiable),
    }
}

/// What the probe opens: the first range of a GET (the answer's body is then often the one to
/// send), else the whole object. Any span works as a probe, since every answer but a miss
/// carries the revision's metadata.
fn probe_span(request: &Request, limits: &RangeLimits) -> Span {
    if request.method != Method::GET {
        return Span::WHOLE;
    }
    let Some(specs) = request.range.as_deref().and_then(range::parse_range) else {
        return Span::WHOLE;
    };
    match specs.first() {
        Some(first) if specs.len() <= limits.max_ranges => first.to_span(),
        Some(_) | None => Span::WHOLE,
    }
}

/// The window whose bytes the plan sends first: the whole object, its one window, or its first
/// part; `None` without a body.
fn wanted_window(plan: &ResponsePlan) -> Option<OpenWindow> {
    match &plan.body {
        Body::None => None,
        Body::Full => Some(OpenWindow::Whole),
        Body::Window(window) => Some(OpenWindow::Part(*window)),
        Body::Multipart { parts, .. } => parts.first().map(|part| OpenWindow::Part(part.window)),
    }
}

fn plan_sends_bytes(plan: &ResponsePlan) -> bool {
    match plan.body {
        Body::None => false,
        Body::Full | Body::Window(_) | Body::Multipart { .. } => true,
    }
}

/// True when a pinned re-open returned the planned revision and exactly the wanted window.
fn same_revision_window(
    planned: &ObjectMeta,
    opened: &ObjectMeta,
    window: OpenWindow,
    want: OpenWindow,
) -> bool {
    opened.etag.strong_eq(&planned.etag)
        && opened.size == planned.size
        && window.bounds(opened.size) == want.bounds(opened.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["memory", "disk", "s3"];

    fn meta(etag: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: EntityTag::strong(etag).expect("test tags are valid"),
            last_modified: Timestamp::from_secs(1_700_000_000),
            headers: Vec::new(),
            expires: None,
        }
    }

    fn get() -> Request {
        Request::new(Method::GET, Timestamp::from_secs(1_700_000_100))
    }

    fn ranged(range: &str) -> Request {
        Request { range: Some(range.into()), ..get() }
    }

    fn part(start: u64, end: u64) -> Option<OpenWindow> {
        Some(OpenWindow::Part(Window::new(start, end).expect("test windows are non-empty")))
    }

    fn tier(idx: usize) -> TierIdx {
        TierIdx::new(idx)
    }

    /// One line per output, short enough to compare a whole transcript with a literal list.
    fn describe(output: &Output) -> String {
        match output {
            Output::OpenTier { tier, span, conditions } => {
                let span = match span {
                    Span::From { start, end: None } => format!("{start}-"),
                    Span::From { start, end: Some(end) } => format!("{start}-{end}"),
                    Span::Last(n) => format!("-{n}"),
                };
                match &conditions.if_match {
                    Some(tag) => format!("OpenTier({}, {span}, if-match {tag})", tier.get()),
                    None => format!("OpenTier({}, {span})", tier.get()),
                }
            }
            Output::RequestCopy { from, mode, .. } => {
                format!("RequestCopy({}, {mode:?})", from.get())
            }
            Output::Serve { plan, source, cache_status } => {
                let source = match source {
                    Source::Nothing => "nothing".to_owned(),
                    Source::Opened { tier } => format!("opened {}", tier.get()),
                    Source::Parts { tier } => format!("parts {}", tier.get()),
                };
                format!("Serve({}, {source}; {cache_status})", plan.status.as_u16())
            }
            Output::SendPart { index } => format!("SendPart({index})"),
            Output::Abort { why } => format!("Abort({why:?})"),
            Output::DropBody { tier } => format!("DropBody({})", tier.get()),
        }
    }

    struct Script {
        machine: Machine,
        transcript: Vec<String>,
    }

    impl Script {
        fn new(request: Request, n_tiers: usize) -> Script {
            let machine = Machine::new(request, &NAMES[..n_tiers], RangeLimits::default());
            let mut script = Script { machine, transcript: Vec::new() };
            script.drain();
            script
        }

        fn feed(&mut self, input: Input) -> &mut Script {
            self.machine.handle_input(input);
            self.drain();
            self
        }

        fn opened(
            &mut self,
            idx: usize,
            meta: ObjectMeta,
            window: Option<OpenWindow>,
        ) -> &mut Script {
            self.feed(Input::TierOpened { tier: tier(idx), meta, window })
        }

        fn missed(&mut self, idx: usize) -> &mut Script {
            self.feed(Input::TierMissed { tier: tier(idx) })
        }

        fn failed(&mut self, idx: usize) -> &mut Script {
            self.feed(Input::TierFailed { tier: tier(idx) })
        }

        fn drain(&mut self) {
            while let Some(output) = self.machine.poll_output() {
                self.transcript.push(describe(&output));
            }
        }

        #[track_caller]
        fn expect(&self, expected: &[&str]) {
            assert_eq!(self.transcript, expected);
        }
    }

    #[test]
    fn hit_in_tier_0_is_served_at_once_without_a_copy() {
        let mut s = Script::new(get(), 2);
        s.opened(0, meta("a", 10), Some(OpenWindow::Whole));
        s.expect(&["OpenTier(0, 0-)", "Serve(200, opened 0; memory; hit)"]);
        assert!(s.machine.is_done());
    }

    #[test]
    fn full_read_from_a_deeper_tier_is_teed_into_tier_0() {
        let mut s = Script::new(get(), 2);
        s.missed(0).opened(1, meta("a", 10), Some(OpenWindow::Whole)).feed(started());
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "RequestCopy(1, Tee)",
            "Serve(200, opened 1; disk; hit, memory; fwd=uri-miss; stored)",
        ]);
    }

    #[test]
    fn ranged_read_from_a_deeper_tier_starts_a_background_copy() {
        let mut s = Script::new(ranged("bytes=2-4"), 3);
        s.missed(0).failed(1).opened(2, meta("a", 10), part(2, 5));
        s.feed(refused(backfill::Refusal::TooManyInFlight));
        s.expect(&[
            "OpenTier(0, 2-5)",
            "OpenTier(1, 2-5)",
            "OpenTier(2, 2-5)",
            "RequestCopy(2, Background)",
            "Serve(206, opened 2; s3; hit, disk; fwd=miss; detail=error, \
             memory; fwd=uri-miss; detail=backfill-skipped)",
        ]);
    }

    #[test]
    fn a_miss_everywhere_is_404_and_a_failure_makes_it_502() {
        let mut s = Script::new(get(), 2);
        s.missed(0).missed(1);
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "Serve(404, nothing; disk; fwd=uri-miss, memory; fwd=uri-miss)",
        ]);
        let mut s = Script::new(get(), 2);
        s.failed(0).missed(1);
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "Serve(502, nothing; disk; fwd=uri-miss; fwd-status=404, memory; fwd=miss; fwd-status=404; detail=error)",
        ]);
    }

    #[test]
    fn an_unreachable_last_tier_claims_no_upstream_status() {
        // RFC 9211 §2.3: fwd-status is the status the next hop returned; a tier that failed
        // with nothing deeper (a stopped upstream server) received none, so it names none, and
        // the nearer tier's forward got the 502 the response carries.
        let mut s = Script::new(get(), 2);
        s.missed(0).failed(1);
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "Serve(502, nothing; disk; fwd=miss; detail=error, memory; fwd=uri-miss)",
        ]);
    }

    #[test]
    fn if_match_failing_in_tier_0_is_looked_for_deeper() {
        let request = Request { if_match: Some("\"old\"".into()), ..get() };
        // Disk, the last tier, has it: it is served from there, and since the last tier's
        // revision is current by definition it replaces tier 0's.
        let mut s = Script::new(request.clone(), 2);
        s.opened(0, meta("new", 10), None).opened(1, meta("old", 10), Some(OpenWindow::Whole));
        s.feed(started());
        s.expect(&[
            "OpenTier(0, 0-, if-match \"old\")",
            "OpenTier(1, 0-, if-match \"old\")",
            "RequestCopy(1, Tee)",
            "Serve(200, opened 1; disk; hit, memory; fwd=request; stored)",
        ]);
        // No deeper tier has it: tier 0's 412 stands.
        let mut s = Script::new(request.clone(), 2);
        s.opened(0, meta("new", 10), None).missed(1);
        s.expect(&[
            "OpenTier(0, 0-, if-match \"old\")",
            "OpenTier(1, 0-, if-match \"old\")",
            "Serve(412, nothing; disk; fwd=uri-miss; fwd-status=404, memory; hit)",
        ]);
        // A failure on the way takes precedence over the 412.
        let mut s = Script::new(request, 3);
        s.opened(0, meta("new", 10), None).failed(1).missed(2);
        s.expect(&[
            "OpenTier(0, 0-, if-match \"old\")",
            "OpenTier(1, 0-, if-match \"old\")",
            "OpenTier(2, 0-, if-match \"old\")",
            "Serve(502, nothing; s3; fwd=uri-miss; fwd-status=404, \
             disk; fwd=miss; fwd-status=404; detail=error, memory; fwd=request)",
        ]);
    }

    #[test]
    fn if_range_naming_another_version_is_looked_for_deeper() {
        let request = Request { if_range: Some("\"old\"".into()), ..ranged("bytes=0-3") };
        let mut s = Script::new(request, 2);
        s.opened(0, meta("new", 10), part(0, 4)).opened(1, meta("old", 8), part(0, 4));
        s.feed(started());
        s.expect(&[
            "OpenTier(0, 0-4)",
            "OpenTier(1, 0-4)",
            "RequestCopy(1, Background)",
            "Serve(206, opened 1; disk; hit, memory; fwd=request; stored)",
        ]);
    }

    #[test]
    fn an_old_entity_tag_never_rolls_tier_0_back() {
        // Tier 0 holds v2 (committed earlier), disk (a middle tier) still holds v1, and a client
        // that kept v1's tag asks for the rest of it: it gets v1's bytes from disk, and tier 0
        // keeps v2.
        let request = Request { if_range: Some("\"v1\"".into()), ..ranged("bytes=500-") };
        let mut s = Script::new(request, 3);
        s.opened(0, meta("v2", 1000), part(500, 1000));
        s.opened(1, meta("v1", 1000), part(500, 1000));
        s.expect(&[
            "OpenTier(0, 500-)",
            "OpenTier(1, 500-)",
            "Serve(206, opened 1; disk; hit, memory; fwd=request)",
        ]);
        assert!(s.machine.is_done());
        // The same with If-Match, the middle tier holding the named v1.
        let request = Request { if_match: Some("\"v1\"".into()), ..get() };
        let mut s = Script::new(request, 3);
        s.opened(0, meta("v2", 10), None).opened(1, meta("v1", 10), Some(OpenWindow::Whole));
        s.expect(&[
            "OpenTier(0, 0-, if-match \"v1\")",
            "OpenTier(1, 0-, if-match \"v1\")",
            "Serve(200, opened 1; disk; hit, memory; fwd=request)",
        ]);
    }

    #[test]
    fn the_authoritative_revision_refreshes_a_stale_tier_0() {
        // Tier 0 holds v2, disk v1, and s3 (the last tier) v3, written by another server of the
        // fleet. If-Match "v3" is served from s3, and v3 is copied into tier 0.
        let request = Request { if_match: Some("\"v3\"".into()), ..get() };
        let mut s = Script::new(request, 3);
        s.opened(0, meta("v2", 10), None).opened(1, meta("v1", 10), None);
        s.opened(2, meta("v3", 10), Some(OpenWindow::Whole)).feed(started());
        s.expect(&[
            "OpenTier(0, 0-, if-match \"v3\")",
            "OpenTier(1, 0-, if-match \"v3\")",
            "OpenTier(2, 0-, if-match \"v3\")",
            "RequestCopy(2, Tee)",
            "Serve(200, opened 2; s3; hit, disk; fwd=request, memory; fwd=request; stored)",
        ]);
        assert!(s.machine.is_done());
        // If-Range "v3" for a range: the range is served from s3, a background copy refreshes
        // tier 0.
        let request = Request { if_range: Some("\"v3\"".into()), ..ranged("bytes=2-5") };
        let mut s = Script::new(request, 3);
        s.opened(0, meta("v2", 10), part(2, 6)).opened(1, meta("v1", 10), part(2, 6));
        s.opened(2, meta("v3", 10), part(2, 6)).feed(started());
        s.expect(&[
            "OpenTier(0, 2-6)",
            "OpenTier(1, 2-6)",
            "OpenTier(2, 2-6)",
            "RequestCopy(2, Background)",
            "Serve(206, opened 2; s3; hit, disk; fwd=request, memory; fwd=request; stored)",
        ]);
        // If-Range "v1" is served from disk, a middle tier: tier 0 keeps v2.
        let request = Request { if_range: Some("\"v1\"".into()), ..ranged("bytes=2-5") };
        let mut s = Script::new(request, 3);
        s.opened(0, meta("v2", 10), part(2, 6)).opened(1, meta("v1", 10), part(2, 6));
        s.expect(&[
            "OpenTier(0, 2-6)",
            "OpenTier(1, 2-6)",
            "Serve(206, opened 1; disk; hit, memory; fwd=request)",
        ]);
        assert!(s.machine.is_done());
    }

    #[test]
    fn tier_0_is_filled_when_it_showed_no_live_copy_or_from_the_last_tier() {
        // A failed tier 0 may hold anything and is likely to fail a copy: the read is served
        // from disk, nothing is copied, even though disk is the last, authoritative tier.
        let mut s = Script::new(get(), 2);
        s.failed(0).opened(1, meta("a", 10), Some(OpenWindow::Whole));
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "Serve(200, opened 1; disk; hit, memory; fwd=miss; detail=error)",
        ]);
        // A tier 0 that missed, or only held an expired copy, is filled.
        let mut expired = meta("a", 10);
        expired.expires = Some(Timestamp::from_secs(1_700_000_050));
        for probe in [
            Input::TierMissed { tier: tier(0) },
            Input::TierOpened { tier: tier(0), meta: expired, window: part(0, 4) },
        ] {
            let mut s = Script::new(ranged("bytes=0-3"), 2);
            s.feed(probe).opened(1, meta("a", 10), part(0, 4));
            assert_eq!(s.transcript[2], "RequestCopy(1, Background)");
        }
        // Over three tiers: from the middle tier (1) and from the authoritative last one (2).
        let lookups =
            [Lookup::Missed, Lookup::Expired, Lookup::Hit, Lookup::NotAccepted, Lookup::Failed];
        let from = |idx: usize| -> Vec<bool> {
            lookups.into_iter().map(|probed| fills_tier_0(probed, tier(idx), 3)).collect()
        };
        assert_eq!(from(1), [true, true, false, false, false]);
        assert_eq!(from(2), [true, true, true, true, false]);
    }

    #[test]
    fn if_range_with_a_date_is_answered_by_the_first_tier() {
        let request = Request {
            if_range: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()),
            ..ranged("bytes=0-3")
        };
        let mut s = Script::new(request, 2);
        s.opened(0, meta("a", 10), part(0, 4)).opened(0, meta("a", 10), Some(OpenWindow::Whole));
        s.expect(&[
            "OpenTier(0, 0-4)",
            "OpenTier(0, 0-, if-match \"a\")",
            "Serve(200, opened 0; memory; hit)",
        ]);
    }

    #[test]
    fn if_range_miss_everywhere_reopens_tier_0_whole_pinned_to_its_etag() {
        let request = Request { if_range: Some("\"old\"".into()), ..ranged("bytes=0-3") };
        let mut s = Script::new(request, 3);
        s.opened(0, meta("new", 10), part(0, 4)).missed(1).failed(2);
        s.opened(0, meta("new", 10), Some(OpenWindow::Whole));
        s.expect(&[
            "OpenTier(0, 0-4)",
            "OpenTier(1, 0-4)",
            "OpenTier(2, 0-4)",
            // The whole current object stands even though tier 2 failed: it is right anyway.
            "OpenTier(0, 0-, if-match \"new\")",
            "Serve(200, opened 0; s3; fwd=miss; detail=error, \
             disk; fwd=uri-miss; fwd-status=502, memory; hit)",
        ]);
    }

    #[test]
    fn a_revision_gone_before_the_reopen_restarts_the_walk_then_gives_up() {
        let request = Request { if_range: Some("\"old\"".into()), ..ranged("bytes=0-3") };
        let mut s = Script::new(request, 1);
        for round in 0..MAX_WALKS {
            let etag = format!("v{round}");
            s.opened(0, meta(&etag, 10), part(0, 4));
            s.opened(0, meta("other", 10), Some(OpenWindow::Whole));
        }
        s.expect(&[
            "OpenTier(0, 0-4)",
            "OpenTier(0, 0-, if-match \"v0\")",
            "DropBody(0)",
            "OpenTier(0, 0-4)",
            "OpenTier(0, 0-, if-match \"v1\")",
            "DropBody(0)",
            "OpenTier(0, 0-4)",
            "OpenTier(0, 0-, if-match \"v2\")",
            "DropBody(0)",
            "Serve(503, nothing; memory; fwd=request; fwd-status=404)",
        ]);
    }

    #[test]
    fn a_failure_of_the_pinned_reopen_is_502() {
        let request = Request { if_range: Some("\"old\"".into()), ..ranged("bytes=0-3") };
        let mut s = Script::new(request, 1);
        s.opened(0, meta("new", 10), part(0, 4)).failed(0);
        s.expect(&[
            "OpenTier(0, 0-4)",
            "OpenTier(0, 0-, if-match \"new\")",
            "Serve(502, nothing; memory; fwd=miss; detail=error)",
        ]);
    }

    #[test]
    fn not_modified_and_unsatisfiable_answers_copy_nothing() {
        let request = Request { if_none_match: Some("\"a\"".into()), ..get() };
        let mut s = Script::new(request, 2);
        s.missed(0).opened(1, meta("a", 10), None);
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "Serve(304, nothing; disk; hit, memory; fwd=uri-miss)",
        ]);
        let mut s = Script::new(ranged("bytes=20-"), 2);
        s.missed(0).opened(1, meta("a", 10), None);
        s.expect(&[
            "OpenTier(0, 20-)",
            "OpenTier(1, 20-)",
            "Serve(416, nothing; disk; hit, memory; fwd=uri-miss)",
        ]);
    }

    #[test]
    fn head_reads_whole_serves_nothing_and_copies_nothing() {
        let mut s = Script::new(
            Request {
                range: Some("bytes=0-1".into()),
                ..Request::new(Method::HEAD, Timestamp::from_secs(1))
            },
            2,
        );
        s.missed(0).opened(1, meta("a", 10), Some(OpenWindow::Whole));
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "Serve(200, nothing; disk; hit, memory; fwd=uri-miss)",
        ]);
    }

    #[test]
    fn an_expired_copy_is_passed_over() {
        let mut expired = meta("a", 10);
        expired.expires = Some(Timestamp::from_secs(1_700_000_050));
        let mut s = Script::new(get(), 2);
        s.opened(0, expired, Some(OpenWindow::Whole)).opened(
            1,
            meta("a", 10),
            Some(OpenWindow::Whole),
        );
        s.feed(refused(backfill::Refusal::Deduplicated { copy: first_copy() }));
        s.expect(&[
            "OpenTier(0, 0-)",
            "OpenTier(1, 0-)",
            "RequestCopy(1, Tee)",
            "Serve(200, opened 1; disk; hit, memory; fwd=stale; detail=backfill-deduplicated)",
        ]);
    }

    #[test]
    fn multipart_is_sent_part_by_part_each_pinned() {
        let mut s = Script::new(ranged("bytes=0-1,500-509"), 2);
        s.missed(0).opened(1, meta("a", 1000), part(0, 2));
        s.feed(started()).feed(Input::PartSent { index: 0 });
        s.opened(1, meta("a", 1000), part(500, 510)).feed(Input::PartSent { index: 1 });
        s.expect(&[
            "OpenTier(0, 0-2)",
            "OpenTier(1, 0-2)",
            "RequestCopy(1, Background)",
            "Serve(206, parts 1; disk; hit, memory; fwd=uri-miss; stored)",
            "SendPart(0)",
            "OpenTier(1, 500-510, if-match \"a\")",
            "SendPart(1)",
        ]);
        assert!(s.machine.is_done());
    }

    #[test]
    fn a_part_of_another_revision_aborts_the_response() {
        let mut s = Script::new(ranged("bytes=0-1,500-509"), 1);
        s.opened(0, meta("a", 1000), part(0, 2)).feed(Input::PartSent { index: 0 });
        s.opened(0, meta("b", 1000), part(500, 510));
        s.expect(&[
            "OpenTier(0, 0-2)",
            "Serve(206, parts 0; memory; hit)",
            "SendPart(0)",
            "OpenTier(0, 500-510, if-match \"a\")",
            "Abort(RevisionChanged)",
        ]);
    }

    #[test]
    fn an_answer_nobody_asked_for_is_dropped_and_changes_nothing() {
        let mut s = Script::new(get(), 2);
        s.opened(1, meta("a", 10), Some(OpenWindow::Whole)).feed(started());
        s.opened(0, meta("a", 10), Some(OpenWindow::Whole));
        s.opened(0, meta("a", 10), Some(OpenWindow::Whole));
        s.expect(&[
            "OpenTier(0, 0-)",
            "DropBody(1)",
            "Serve(200, opened 0; memory; hit)",
            "DropBody(0)",
        ]);
    }

    #[test]
    fn copy_mode_tees_a_whole_get_and_copies_fragments_in_the_background() {
        let window = Body::Window(Window::new(0, 4).expect("non-empty"));
        assert_eq!(copy_mode(&Method::GET, tier(1), &Body::Full), Some(backfill::Mode::Tee));
        assert_eq!(copy_mode(&Method::GET, tier(1), &window), Some(backfill::Mode::Background));
        assert_eq!(copy_mode(&Method::GET, tier(0), &Body::Full), None);
        assert_eq!(copy_mode(&Method::HEAD, tier(1), &Body::Full), None);
        assert_eq!(copy_mode(&Method::GET, tier(1), &Body::None), None);
    }

    #[test]
    fn is_definitive_only_when_the_revision_satisfies_the_validators() {
        let limits = RangeLimits::default();
        let check = |request: &Request, etag: &str| {
            let meta = meta(etag, 10);
            let plan = conditional::plan_response(&request.headers(), &meta, &limits);
            is_definitive(&request.headers(), &meta, &plan, &limits)
        };
        let if_range = Request { if_range: Some("\"old\"".into()), ..ranged("bytes=0-3") };
        assert!(check(&if_range, "old"));
        assert!(!check(&if_range, "new"));
        let weak = Request { if_range: Some("W/\"old\"".into()), ..ranged("bytes=0-3") };
        assert!(check(&weak, "new"));
        let if_match = Request { if_match: Some("\"old\"".into()), ..get() };
        assert!(check(&if_match, "old"));
        assert!(!check(&if_match, "new"));
        assert!(check(&get(), "new"));
    }

    /// Renders what [`resolve_open`] decides for `conditions` and `span` against a 10-byte
    /// revision tagged "v1", last modified at 1_700_000_000 s.
    #[track_caller]
    fn check_open(conditions: Conditions, span: Span, expect: &str) {
        let got = match resolve_open(&meta("v1", 10), &conditions, span) {
            Ok(OpenWindow::Whole) => "whole".to_owned(),
            Ok(OpenWindow::Part(window)) => format!("[{}, {})", window.start(), window.end()),
            Err(NoBody::NotSatisfiable) => "416".to_owned(),
            Err(NoBody::PreconditionFailed) => "412".to_owned(),
            Err(NoBody::NotModified) => "304".to_owned(),
        };
        assert_eq!(got, expect, "{conditions:?} with {span:?}");
    }

    fn when(field: &str, value: &str) -> Conditions {
        let value = Some(value.to_owned());
        match field {
            "If-Match" => Conditions { if_match: value, ..Conditions::default() },
            "If-None-Match" => Conditions { if_none_match: value, ..Conditions::default() },
            "If-Modified-Since" => Conditions { if_modified_since: value, ..Conditions::default() },
            "If-Unmodified-Since" => {
                Conditions { if_unmodified_since: value, ..Conditions::default() }
            }
            other => panic!("no such precondition field {other}"),
        }
    }

    const BEFORE: &str = "Tue, 14 Nov 2023 22:13:19 GMT";
    const AT: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

    #[test]
    fn resolve_open_sends_the_span_when_every_precondition_holds() {
        check_open(Conditions::default(), Span::WHOLE, "whole");
        check_open(Conditions::default(), Span::Last(3), "[7, 10)");
        check_open(Conditions::pinned(&meta("v1", 10).etag), Span::WHOLE, "whole");
        check_open(when("If-Match", "*"), Span::From { start: 2, end: Some(4) }, "[2, 4)");
        check_open(when("If-None-Match", "\"v0\""), Span::WHOLE, "whole");
        check_open(when("If-Unmodified-Since", AT), Span::WHOLE, "whole");
        check_open(when("If-Modified-Since", BEFORE), Span::WHOLE, "whole");
    }

    #[test]
    fn resolve_open_refuses_a_revision_that_fails_its_preconditions() {
        // RFC 9110 §13.1.1: If-Match compares strongly, so a weak tag never matches.
        check_open(when("If-Match", "\"v0\""), Span::WHOLE, "412");
        check_open(when("If-Match", "W/\"v1\""), Span::WHOLE, "412");
        check_open(Conditions::pinned(&meta("v0", 10).etag), Span::WHOLE, "412");
        check_open(when("If-Unmodified-Since", BEFORE), Span::WHOLE, "412");
        // RFC 9110 §13.1.2, §13.1.3: the client's copy is current, as for a GET.
        check_open(when("If-None-Match", "\"v1\""), Span::WHOLE, "304");
        check_open(when("If-None-Match", "W/\"v1\""), Span::WHOLE, "304");
        check_open(when("If-Modified-Since", AT), Span::WHOLE, "304");
    }

    #[test]
    fn resolve_open_judges_preconditions_before_the_span() {
        // RFC 9110 §13.2.2 puts the preconditions before Range; SPEC §1 then resolves the span.
        let beyond = Span::From { start: 10, end: None };
        check_open(Conditions::default(), beyond, "416");
        check_open(when("If-Match", "\"v1\""), beyond, "416");
        check_open(when("If-Match", "\"v0\""), beyond, "412");
        check_open(when("If-None-Match", "\"v1\""), beyond, "304");
    }

    #[test]
    fn conditions_are_empty_only_without_any_field() {
        assert!(Conditions::default().is_empty());
        for field in ["If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"] {
            assert!(!when(field, "x").is_empty(), "{field} set");
        }
        assert!(!Conditions::pinned(&meta("v1", 10).etag).is_empty());
    }

    /// The handle of the first copy a manager starts.
    fn first_copy() -> backfill::CopyId {
        let mut manager = backfill::Manager::new(backfill::Config::default());
        let key = crate::key::ObjectKey {
            namespace: crate::key::Namespace::parse("ns").expect("valid"),
            key: crate::key::Key::from_segment("k"),
        };
        let seen = manager.generation(&key);
        let request = backfill::CopyRequest {
            key,
            seen,
            from: tier(1),
            meta: meta("a", 1),
            mode: backfill::Mode::Tee,
        };
        manager.request_copy(&request).expect("the first request of an idle manager starts")
    }

    /// The manager's answer that the copy started.
    fn started() -> Input {
        Input::CopyAnswered { answer: Ok(first_copy()) }
    }

    /// The manager's answer that the copy was refused for `why`.
    fn refused(why: backfill::Refusal) -> Input {
        Input::CopyAnswered { answer: Err(why) }
    }
}
