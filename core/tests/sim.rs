//! Deterministic simulation of the tiered read, the writes and the backfill manager (SPEC §3,
//! §4).
//!
//! The real [`read::Machine`]s, [`write::Machine`]s and one real [`backfill::Manager`] are
//! driven by a simulated host: a seeded RNG picks, step by step, which of many concurrent actors
//! moves next (reads of several keys over 2–3 tiers, copies, writes (some conditional, some too
//! large or cut short), deletes, invalidations, another server changing the shared tier behind
//! our back, shutdown). Every decision about a write is the write machine's; the host only
//! carries out its outputs on a small model of what every tier holds (version numbers), with
//! tiers that refuse writers, fail chunks and commits, and judge the write's guard at commit,
//! and a per-key commit lock. It checks after every step:
//!
//! * no fragment is ever committed as a whole object: a commit carries exactly the bytes of
//!   one whole version;
//! * no stale generation is committed over a newer write: no write, delete or invalidate of the
//!   key started between the read that fed a copy and the copy's commit decision, and none
//!   touched a tier before the commit landed;
//! * at most one copy per key can still commit, and the manager's count of copies in flight
//!   equals the host's;
//! * nothing starts or commits after shutdown, `ShutdownComplete` comes once every copy is over
//!   and a shutdown always completes;
//! * no copy starts for a read that began before a copy of its key committed into tier 0,
//!   unless a write, delete or invalidate came between (tier 0 already got a copy after the read
//!   probed it: asking again would read the whole object upstream twice), and a request refused
//!   as deduplicated names the copy in flight or the copy of that very revision that committed;
//! * a copy never replaces a live revision tier 0 held when the read probed it (an old
//!   entity-tag must not roll tier 0 back) unless the copy comes from the authoritative (last)
//!   tier, whose revision is current by definition, and no copy follows a probe of tier 0
//!   that failed;
//! * a full read from tier i > 0 that reached EOF with its copy started, every byte written and
//!   no competing write leaves tier 0 holding exactly that version;
//! * every served plan's Content-Range, Content-Length and ETag match the version whose bytes
//!   are sent, no expired version is served, and If-Match / If-Range are honoured;
//! * every discard has a cause the host can see, and so has every request refused as
//!   superseded (a mutation of its key, or a commit of its key into tier 0, since the read
//!   began; a change of another key is no cause);
//! * a write commits the authoritative tier first and never leaves it out, hands its condition
//!   to that tier only, and when it answers 200 every tier holds its version or nothing (a tier
//!   left out has its older copy dropped), unless another server changed the key meanwhile; a
//!   write that fails left its version in no tier; a delete empties every tier and answers 404
//!   exactly when no tier held the key; an invalidation empties every tier but the last and
//!   never touches it.
//!
//! No threads, no clock: time is a step counter. `cargo test` runs a fixed budget; set
//! `RANGECACHE_SIM_SEED` (first seed), `RANGECACHE_SIM_STEPS` (total steps) or
//! `RANGECACHE_SIM_LONG=1` (what `cargo xtask sim` sets) to run longer. A failure prints the
//! seed, the step and the last events, and the command that replays it.

use std::collections::{BTreeMap, VecDeque};

use http::{Method, StatusCode};
use rangecache_core::TierIdx;
use rangecache_core::backfill::{self, CopyId, DiscardReason, Generation, MutationKind};
use rangecache_core::conditional::{self, WriteGuard};
use rangecache_core::range::{OpenWindow, RangeLimits, Span};
use rangecache_core::read;
use rangecache_core::tier::TierFault;
use rangecache_core::validators::EtagList;
use rangecache_core::write;
use rangecache_core::{Body, EntityTag, Key, Namespace, ObjectKey, ObjectMeta, Timestamp};

/// Steps of one seed; long enough for shutdown to meet copies in every state.
const STEPS_PER_SEED: u64 = 4_000;
/// Total steps of a plain `cargo test` run (debug build, well under the 30 s budget).
const DEFAULT_STEPS: u64 = 600_000;
/// Total steps when `RANGECACHE_SIM_LONG=1`.
const LONG_STEPS: u64 = 20_000_000;
/// Most steps a drain after shutdown may take before it counts as a livelock.
const DRAIN_BOUND: u64 = 200_000;
const N_KEYS: usize = 4;
const MAX_READS: usize = 8;
const MAX_MUTATIONS: usize = 3;
const BACKLOG_BOUND: u64 = 128;
const MAX_IN_FLIGHT: usize = 2;
/// The largest object a write may store: within the sizes `new_version` draws, so that some
/// writes are refused as too large, announced or counted.
const MAX_OBJECT_SIZE: u64 = 360;

#[test]
fn simulation_holds_every_invariant() {
    let (first_seed, total_steps) = budget();
    let mut seed = first_seed;
    let mut done = 0;
    let mut n_seeds = 0;
    let mut totals = Totals::default();
    while done < total_steps {
        let steps = STEPS_PER_SEED.min(total_steps - done);
        let sim = Sim::run(seed, steps);
        totals.add(&sim);
        done += steps;
        n_seeds += 1;
        seed += 1;
    }
    eprintln!(
        "sim: {done} steps over {n_seeds} seeds from seed {first_seed}: {} reads served, \
         {} copies started, {} committed, {} discarded, {} cancelled, {} deduped, {} skipped, \
         {} mutations, {} shutdown drain steps",
        totals.served,
        totals.started,
        totals.committed,
        totals.discarded,
        totals.cancelled,
        totals.deduped,
        totals.skipped,
        totals.mutations,
        totals.drain_steps,
    );
    eprintln!(
        "sim: {} multipart, {} passed over, {} from deeper tiers, {} teed commits, \
         {} mutations waited for a commit, {} requests deduplicated by a committed copy, \
         {} deeper reads that left tier 0's live revision alone, \
         {} copies from the last tier that refresh a live tier 0",
        totals.multipart,
        totals.not_definitive,
        totals.served_from_deeper,
        totals.tee_commits,
        totals.waited,
        totals.deduped_by_commit,
        totals.kept_tier_0,
        totals.refreshed_tier_0,
    );
    eprintln!(
        "sim: {} writes stored, {} tiers left out of a write, {} conditional writes looked up \
         the live revision, {} deletes of nothing, {} copy sources of another revision; \
         mutations failed by reason {:?}",
        totals.writes_stored,
        totals.left_out,
        totals.lookups,
        totals.deletes_of_nothing,
        totals.wrong_source,
        totals.failed_by,
    );
    eprintln!("sim: discarded by reason {:?}", totals.discarded_by);
    eprintln!("sim: refused by reason {:?}", totals.refused_by);
    // The budget must exercise what the invariants are about, or it proves nothing.
    if total_steps >= 50_000 {
        assert!(totals.committed > 0, "no copy ever committed");
        assert!(totals.cancelled > 0, "no copy was ever cancelled");
        assert!(totals.lagging > 0, "no copy ever lagged");
        assert!(totals.deduped > 0, "no copy was ever deduplicated");
        assert!(totals.served_from_deeper > 0, "no read was served from a deeper tier");
        assert!(totals.multipart > 0, "no multipart response");
        assert!(totals.not_definitive > 0, "no tier was ever passed over for its validators");
        assert!(totals.tee_commits > 0, "no teed full read ever filled tier 0");
        assert!(totals.waited > 0, "no mutation ever waited for a commit");
        assert!(totals.deduped_by_commit > 0, "no request ever met a copy that had committed");
        assert!(totals.kept_tier_0 > 0, "no read from a deeper tier ever met a live tier 0");
        assert!(totals.refreshed_tier_0 > 0, "no copy from the last tier ever refreshed tier 0");
        assert!(totals.writes_stored > 0, "no write was ever stored");
        assert!(totals.left_out > 0, "no write ever left a nearer tier out");
        assert!(totals.lookups > 0, "no conditional write ever looked up the live revision");
        assert!(totals.deletes_of_nothing > 0, "no delete ever found nothing");
        assert!(totals.wrong_source > 0, "no copy's source ever answered another revision");
        for failure in ["PreconditionFailed", "TooLarge", "Tier", "ShuttingDown", "BodyFailed"] {
            assert!(totals.failed_by.contains_key(failure), "no mutation ever failed: {failure}");
        }
    }
}

/// (first seed, total steps) from the environment, or the fixed default budget.
#[allow(clippy::disallowed_methods, reason = "the test's own budget is configuration")]
fn budget() -> (u64, u64) {
    let number = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.replace('_', "")
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
    };
    let long = std::env::var("RANGECACHE_SIM_LONG").is_ok_and(|v| v == "1");
    let default = if long { LONG_STEPS } else { DEFAULT_STEPS };
    (number("RANGECACHE_SIM_SEED").unwrap_or(0), number("RANGECACHE_SIM_STEPS").unwrap_or(default))
}

#[derive(Default)]
struct Totals {
    started: u64,
    deduped: u64,
    committed: u64,
    cancelled: u64,
    skipped: u64,
    discarded: u64,
    lagging: u64,
    discarded_by: Vec<(DiscardReason, u64)>,
    refused_by: BTreeMap<String, u64>,
    served: u64,
    served_from_deeper: u64,
    multipart: u64,
    not_definitive: u64,
    mutations: u64,
    drain_steps: u64,
    waited: u64,
    tee_commits: u64,
    deduped_by_commit: u64,
    kept_tier_0: u64,
    refreshed_tier_0: u64,
    writes_stored: u64,
    left_out: u64,
    lookups: u64,
    deletes_of_nothing: u64,
    wrong_source: u64,
    failed_by: BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, sim: &Sim) {
        let c = sim.manager.counters();
        self.started += c.started;
        self.deduped += c.deduped;
        self.committed += c.committed;
        self.cancelled += c.cancelled;
        self.skipped += c.skipped;
        self.discarded += c.discarded_total();
        self.lagging += c.discarded(DiscardReason::Lagging);
        for why in DiscardReason::ALL {
            match self.discarded_by.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += c.discarded(why),
                None => self.discarded_by.push((why, c.discarded(why))),
            }
        }
        for (why, n) in &sim.stats.refused {
            *self.refused_by.entry(why.clone()).or_default() += n;
        }
        self.served += sim.stats.served;
        self.served_from_deeper += sim.stats.served_from_deeper;
        self.multipart += sim.stats.multipart;
        self.not_definitive += sim.stats.not_definitive;
        self.mutations += sim.stats.mutations;
        self.drain_steps += sim.stats.drain_steps;
        self.waited += sim.stats.waited;
        self.tee_commits += sim.stats.tee_commits;
        self.deduped_by_commit += sim.stats.deduped_by_commit;
        self.kept_tier_0 += sim.stats.kept_tier_0;
        self.refreshed_tier_0 += sim.stats.refreshed_tier_0;
        self.writes_stored += sim.stats.writes_stored;
        self.left_out += sim.stats.left_out;
        self.lookups += sim.stats.lookups;
        self.deletes_of_nothing += sim.stats.deletes_of_nothing;
        self.wrong_source += sim.stats.wrong_source;
        for (why, n) in &sim.stats.failed_by {
            *self.failed_by.entry(why.clone()).or_default() += n;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model of the tiers.

/// One revision of an object, as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    id: u64,
    size: u64,
    /// Step at which it expires, if it does.
    expires: Option<u64>,
}

impl Version {
    fn etag(self) -> EntityTag {
        EntityTag::strong(format!("v{}", self.id)).expect("digits are etagc")
    }

    fn meta(self) -> ObjectMeta {
        ObjectMeta {
            size: self.size,
            etag: self.etag(),
            last_modified: Timestamp::from_secs(1_700_000_000 + self.id),
            headers: Vec::new(),
            expires: self.expires.map(clock),
        }
    }

    fn is_expired(self, step: u64) -> bool {
        self.expires.is_some_and(|at| step >= at)
    }
}

/// The virtual clock: one second per step.
fn clock(step: u64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + step)
}

fn object_key(idx: usize) -> ObjectKey {
    ObjectKey {
        namespace: Namespace::parse("sim").expect("valid namespace"),
        key: Key::from_segment(&format!("key-{idx}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Actors.

/// A body the host holds: the window of one version opened from one tier.
#[derive(Clone, Copy, Debug)]
struct Held {
    tier: TierIdx,
    version: Version,
    window: OpenWindow,
}

/// Bytes being sent to the client.
#[derive(Debug)]
struct Streaming {
    remaining: u64,
    /// `Some(index)` while a multipart part is being sent.
    part: Option<usize>,
}

struct ReadActor {
    key: usize,
    request: read::Request,
    machine: read::Machine,
    pending: VecDeque<read::Output>,
    held: Option<Held>,
    /// What `Serve` promised: the version, the plan's body.
    served: Option<(Version, Body)>,
    streaming: Option<Streaming>,
    tee: Option<CopyId>,
    seen: Generation,
    marks: Marks,
    /// `fills[key].count` when the read began.
    fills_seen: u64,
    /// The live version tier 0 held when this read last opened it (its probe), if any.
    tier0_live: Option<Version>,
    /// Whether that open of tier 0 failed.
    tier0_failed: bool,
    finished: bool,
    abandoned: bool,
}

/// The copies of a key that committed into tier 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fills {
    count: u64,
    /// The last one and the version it put into tier 0.
    last: Option<(CopyId, Version)>,
}

/// What the model knew of a key's mutations when a read began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Marks {
    started: u64,
    ended: u64,
    applied: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyPhase {
    Running,
    Cancelled,
    Committing,
}

#[derive(Clone, Copy)]
struct CopyActor {
    key: usize,
    version: Version,
    from: TierIdx,
    mode: backfill::Mode,
    /// Background copies: whether the pinned source was opened.
    opened: bool,
    read: u64,
    written: u64,
    source_ended: bool,
    /// For a tee, the window the client's body covers (must be the whole object).
    tee_window: Option<OpenWindow>,
    marks: Marks,
    phase: CopyPhase,
    /// Events the host reported that justify a discard.
    client_closed: bool,
    source_failed: bool,
    writer_failed: bool,
}

/// A write, delete or invalidation: the real write machine, carried out on the model tiers.
struct MutationActor {
    id: u64,
    key: usize,
    kind: MutationKind,
    /// The version a write stores.
    version: Version,
    machine: write::Machine,
    /// Outputs not carried out yet, in order.
    outputs: VecDeque<write::Output>,
    /// What the host observed, not yet handed to the machine, in order.
    inputs: VecDeque<write::Input>,
    /// What the actor waits for outside its machine.
    wait: Wait,
    /// Whether each tier's writer is held.
    writers: Vec<bool>,
    /// The guard the last tier checks when it commits.
    guard: WriteGuard,
    /// Bytes of the body the client sends, and how many it sent so far.
    body_size: u64,
    sent: u64,
    /// `MutationStarted` was reported, so `MutationEnded` is owed.
    started: bool,
    /// Whether a tier held a copy when this delete removed it.
    existed: bool,
    /// Whether the authoritative tier committed this write.
    committed_last: bool,
    /// `drifts[key]` when the key's lock was taken.
    drifts_at_lock: u64,
}

/// What a mutation waits for outside its machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Nothing,
    /// The backfill manager's `ProceedWithMutation`.
    Proceed,
    /// The key's commit lock.
    Lock,
    /// The next piece of the body.
    Body,
}

struct Stats {
    refused: BTreeMap<String, u64>,
    /// Mutations that had to wait for a commit under way.
    waited: u64,
    /// Teed full reads whose commit left tier 0 holding their version.
    tee_commits: u64,
    /// Requests refused as deduplicated by a copy that had already committed.
    deduped_by_commit: u64,
    /// Bodies from a deeper tier that left tier 0's other live revision alone.
    kept_tier_0: u64,
    /// Copies from the last tier started while tier 0 held another live revision.
    refreshed_tier_0: u64,
    served: u64,
    served_from_deeper: u64,
    multipart: u64,
    not_definitive: u64,
    mutations: u64,
    drain_steps: u64,
    /// Writes that stored their version, and how many tiers they left out.
    writes_stored: u64,
    left_out: u64,
    /// Mutations that failed, by failure.
    failed_by: BTreeMap<String, u64>,
    /// Conditional writes that looked up the live revision first.
    lookups: u64,
    /// Deletes answered 404.
    deletes_of_nothing: u64,
    /// Background copies whose pinned source answered another revision.
    wrong_source: u64,
}

struct Sim {
    seed: u64,
    rng: fastrand::Rng,
    step: u64,
    n_tiers: usize,
    names: Vec<String>,
    /// `tiers[t][k]`: the version tier `t` holds of key `k`.
    tiers: Vec<Vec<Option<Version>>>,
    next_version: u64,
    marks: Vec<Marks>,
    fills: Vec<Fills>,
    manager: backfill::Manager,
    reads: Vec<ReadActor>,
    copies: BTreeMap<CopyId, CopyActor>,
    mutations: Vec<MutationActor>,
    next_mutation: u64,
    /// Per key, the mutations that reported `MutationStarted` and wait for their
    /// `ProceedWithMutation`, in order; one that gave up (shutdown) keeps its place, as a host's
    /// dropped waiter does.
    proceed_queue: Vec<VecDeque<u64>>,
    /// Per key, the mutation holding the commit lock and those waiting for it, in order.
    lock_queue: Vec<VecDeque<u64>>,
    /// Per key, how many times another server or an eviction changed a tier.
    drifts: Vec<u64>,
    /// Copies that finished, for late reports.
    finished: Vec<CopyId>,
    shutdown_requested: bool,
    /// The copy whose commit was just reported, until its `Finished` arrives.
    awaiting_finish: Option<CopyId>,
    shutdown_complete: bool,
    log: VecDeque<String>,
    stats: Stats,
}

impl Sim {
    fn run(seed: u64, steps: u64) -> Sim {
        let mut sim = Sim::new(seed);
        let shutdown_at = if sim.rng.bool() { sim.rng.u64(steps / 2..steps.max(2)) } else { steps };
        while sim.step < steps {
            sim.step += 1;
            if sim.step == shutdown_at {
                sim.request_shutdown();
            } else {
                sim.random_step(true);
            }
            sim.check_invariants();
        }
        sim.drain();
        sim
    }

    fn new(seed: u64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let n_tiers = rng.usize(2..=3);
        let names = ["memory", "disk", "s3"][..n_tiers].iter().map(|s| s.to_string()).collect();
        let mut sim = Sim {
            seed,
            rng,
            step: 0,
            n_tiers,
            names,
            tiers: vec![vec![None; N_KEYS]; n_tiers],
            next_version: 1,
            marks: vec![Marks { started: 0, ended: 0, applied: 0 }; N_KEYS],
            fills: vec![Fills::default(); N_KEYS],
            manager: backfill::Manager::new(backfill::Config {
                max_in_flight: MAX_IN_FLIGHT,
                max_backlog_bytes: BACKLOG_BOUND,
                tier_0_max_size: None,
            }),
            reads: Vec::new(),
            copies: BTreeMap::new(),
            mutations: Vec::new(),
            next_mutation: 0,
            proceed_queue: vec![VecDeque::new(); N_KEYS],
            lock_queue: vec![VecDeque::new(); N_KEYS],
            drifts: vec![0; N_KEYS],
            finished: Vec::new(),
            shutdown_requested: false,
            shutdown_complete: false,
            awaiting_finish: None,
            log: VecDeque::new(),
            stats: Stats {
                refused: BTreeMap::new(),
                waited: 0,
                tee_commits: 0,
                deduped_by_commit: 0,
                kept_tier_0: 0,
                refreshed_tier_0: 0,
                served: 0,
                served_from_deeper: 0,
                multipart: 0,
                not_definitive: 0,
                mutations: 0,
                drain_steps: 0,
                writes_stored: 0,
                left_out: 0,
                failed_by: BTreeMap::new(),
                lookups: 0,
                deletes_of_nothing: 0,
                wrong_source: 0,
            },
        };
        // Start with keys held by the deeper tiers only, some everywhere, some nowhere.
        for key in 0..N_KEYS {
            let version = sim.new_version();
            let lowest = sim.rng.usize(0..=n_tiers);
            for tier in lowest..n_tiers {
                sim.tiers[tier][key] = Some(version);
            }
        }
        sim
    }

    fn new_version(&mut self) -> Version {
        let id = self.next_version;
        self.next_version += 1;
        // Sizes around the coalescing gap of multi-range plans (80) and the backlog bound, so
        // that multipart bodies and lagging copies both happen; some objects are empty.
        let size = match self.rng.u8(0..10) {
            0 => 0,
            1..=5 => self.rng.u64(1..120),
            _ => self.rng.u64(120..400),
        };
        let expires = self.rng.u8(0..10).eq(&0).then(|| self.step + self.rng.u64(20..400));
        Version { id, size, expires }
    }

    fn note(&mut self, event: String) {
        if self.log.len() == 80 {
            self.log.pop_front();
        }
        self.log.push_back(format!("[{}] {event}", self.step));
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        panic!(
            "simulation invariant broken: {what}\nseed {} step {} ({} tiers)\nlast events:\n  {}\n\
             replay: RANGECACHE_SIM_SEED={} RANGECACHE_SIM_STEPS={} cargo test -p rangecache-core \
             --test sim",
            self.seed,
            self.step,
            self.n_tiers,
            log.join("\n  "),
            self.seed,
            STEPS_PER_SEED,
        )
    }

    /// One random move; `new_work` allows new reads and mutations.
    fn random_step(&mut self, new_work: bool) {
        let roll = self.rng.u32(0..100);
        match roll {
            0..=11 if new_work && self.reads.len() < MAX_READS => self.start_read(),
            12 if new_work && self.mutations.len() < MAX_MUTATIONS => self.start_mutation(),
            13 if new_work => self.drift(),
            14..=21 if !self.mutations.is_empty() => {
                let idx = self.rng.usize(0..self.mutations.len());
                self.advance_mutation(idx);
            }
            22..=55 if !self.copies.is_empty() => {
                let ids: Vec<CopyId> = self.copies.keys().copied().collect();
                let copy = ids[self.rng.usize(0..ids.len())];
                self.advance_copy(copy);
            }
            56 => self.report_stale(),
            _ if !self.reads.is_empty() => {
                let idx = self.rng.usize(0..self.reads.len());
                self.advance_read(idx);
            }
            _ => {}
        }
    }

    fn request_shutdown(&mut self) {
        self.note("shutdown requested".into());
        self.shutdown_requested = true;
        self.manager.handle_input(backfill::Input::ShutdownRequested);
        self.dispatch_manager();
    }

    /// After the last step: shut down if not yet, then let every actor finish.
    fn drain(&mut self) {
        if !self.shutdown_requested {
            self.step += 1;
            self.request_shutdown();
            self.check_invariants();
        }
        let mut n = 0;
        while !self.reads.is_empty() || !self.copies.is_empty() || !self.mutations.is_empty() {
            n += 1;
            if n > DRAIN_BOUND {
                self.fail("the drain after shutdown did not finish");
            }
            self.step += 1;
            self.random_step(false);
            self.check_invariants();
        }
        self.stats.drain_steps += n;
        if !self.shutdown_complete {
            self.fail("every copy finished but ShutdownComplete never came");
        }
        // Asking again answers again, and nothing else.
        self.manager.handle_input(backfill::Input::ShutdownRequested);
        match (self.manager.poll_output(), self.manager.poll_output()) {
            (Some(backfill::Output::ShutdownComplete), None) => {}
            other => self.fail(&format!("a repeated shutdown answered {other:?}")),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads.

    fn start_read(&mut self) {
        let key = self.rng.usize(0..N_KEYS);
        let request = self.random_request(key);
        self.note(format!("read k{key} start: {}", show_request(&request)));
        let seen = self.manager.generation(&object_key(key));
        let mut machine = read::Machine::new(request.clone(), &self.names, RangeLimits::default());
        let mut pending = VecDeque::new();
        while let Some(output) = machine.poll_output() {
            pending.push_back(output);
        }
        self.reads.push(ReadActor {
            key,
            request,
            machine,
            pending,
            held: None,
            served: None,
            streaming: None,
            tee: None,
            seen,
            marks: self.marks[key],
            fills_seen: self.fills[key].count,
            tier0_live: None,
            tier0_failed: false,
            finished: false,
            abandoned: false,
        });
    }

    fn random_request(&mut self, key: usize) -> read::Request {
        let now = clock(self.step);
        let mut request = read::Request::new(Method::GET, now);
        let size_hint = self.current_size_hint(key);
        let some_etag = |sim: &mut Sim| {
            // Mostly a version some tier holds, sometimes one no tier has.
            let held: Vec<u64> =
                (0..sim.n_tiers).filter_map(|t| sim.tiers[t][key]).map(|v| v.id).collect();
            let id = if !held.is_empty() && sim.rng.u8(0..4) != 0 {
                held[sim.rng.usize(0..held.len())]
            } else {
                sim.rng.u64(1..sim.next_version + 1)
            };
            format!("\"v{id}\"")
        };
        match self.rng.u8(0..20) {
            0..=6 => {}
            7..=11 => request.range = Some(self.random_range(size_hint)),
            12 => {
                let a = self.rng.u64(0..size_hint.max(1));
                let b = a + 90 + self.rng.u64(0..100);
                request.range =
                    Some(format!("bytes={}-{},{}-{}", a, a + self.rng.u64(0..20), b, b + 5));
            }
            13..=14 => {
                request.range = Some(self.random_range(size_hint));
                request.if_range = Some(some_etag(self));
            }
            15 => request.if_match = Some(some_etag(self)),
            16 => {
                request.if_match = Some(some_etag(self));
                request.range = Some(self.random_range(size_hint));
            }
            17 => request.if_none_match = Some(some_etag(self)),
            18 => request.method = Method::HEAD,
            _ => {
                request.range =
                    Some(format!("bytes=0-{},{}-", self.rng.u64(0..40), self.rng.u64(100..300)));
                request.if_range = Some(some_etag(self));
            }
        }
        request
    }

    fn current_size_hint(&self, key: usize) -> u64 {
        (0..self.n_tiers).filter_map(|t| self.tiers[t][key]).map(|v| v.size).max().unwrap_or(100)
    }

    fn random_range(&mut self, size: u64) -> String {
        let size = size.max(1);
        match self.rng.u8(0..4) {
            0 => format!("bytes={}-", self.rng.u64(0..size + 10)),
            1 => format!("bytes=-{}", self.rng.u64(0..size + 10)),
            _ => {
                let a = self.rng.u64(0..size + 5);
                format!("bytes={}-{}", a, a + self.rng.u64(0..size))
            }
        }
    }

    fn advance_read(&mut self, idx: usize) {
        if let Some(output) = self.reads[idx].pending.pop_front() {
            self.carry_out_read(idx, output);
        } else if self.reads[idx].streaming.is_some() {
            self.stream_chunk(idx);
        } else if self.reads[idx].machine.is_done() || self.reads[idx].finished {
            self.finish_read(idx);
        } else {
            self.fail("a read waits for nothing: the machine asked for nothing and is not done");
        }
    }

    fn feed_read(&mut self, idx: usize, input: read::Input) {
        let actor = &mut self.reads[idx];
        actor.machine.handle_input(input);
        while let Some(output) = actor.machine.poll_output() {
            actor.pending.push_back(output);
        }
    }

    fn carry_out_read(&mut self, idx: usize, output: read::Output) {
        let key = self.reads[idx].key;
        match output {
            read::Output::OpenTier { tier, span, conditions } => {
                self.reads[idx].held = None;
                if tier.get() == 0 {
                    let step = self.step;
                    self.reads[idx].tier0_live =
                        self.tiers[0][key].filter(|version| !version.is_expired(step));
                }
                let input = self.open_tier(idx, tier, span, &conditions);
                if tier.get() == 0 {
                    self.reads[idx].tier0_failed = matches!(input, read::Input::TierFailed { .. });
                }
                self.note(format!(
                    "read k{key} open {} {span:?} {:?} -> {}",
                    tier.get(),
                    conditions.if_match,
                    show_input(&input)
                ));
                self.feed_read(idx, input);
            }
            read::Output::RequestCopy { from, meta, mode } => {
                if from.get() == 0 {
                    self.fail("a copy from tier 0 into tier 0 was requested");
                }
                let seen = self.reads[idx].seen;
                let request =
                    backfill::CopyRequest { key: object_key(key), seen, from, meta, mode };
                let answer = self.manager.request_copy(&request);
                if let Some(output) = self.manager.poll_output() {
                    self.fail(&format!("a copy request queued {output:?}"));
                }
                match answer {
                    Ok(copy) => self.start_copy(idx, copy, from, &request.meta, mode),
                    Err(why) => {
                        self.note(format!("read k{key} copy refused: {why:?}"));
                        self.check_refusal(idx, why);
                        let label =
                            format!("{why:?}").split([' ', '{']).next().unwrap_or("").to_owned();
                        *self.stats.refused.entry(label).or_default() += 1;
                    }
                }
                self.feed_read(idx, read::Input::CopyAnswered { answer });
            }
            read::Output::Serve { plan, source, cache_status } => {
                self.note(format!(
                    "read k{key} serve {} {source:?} [{cache_status}]",
                    plan.status.as_u16()
                ));
                self.check_served(idx, &plan, source, &cache_status.to_string());
                self.check_tier_0_kept(idx, source, &cache_status.to_string());
                self.stats.served += 1;
                match source {
                    read::Source::Nothing => {
                        self.reads[idx].held = None;
                        self.reads[idx].finished = true;
                    }
                    read::Source::Opened { tier } => {
                        if tier.get() > 0 {
                            self.stats.served_from_deeper += 1;
                        }
                        let held = self.reads[idx].held.expect("checked by check_served");
                        self.reads[idx].served = Some((held.version, plan.body.clone()));
                        self.reads[idx].streaming = Some(Streaming {
                            remaining: held.window.len(held.version.size),
                            part: None,
                        });
                    }
                    read::Source::Parts { tier } => {
                        if tier.get() > 0 {
                            self.stats.served_from_deeper += 1;
                        }
                        self.stats.multipart += 1;
                        let held = self.reads[idx].held.expect("checked by check_served");
                        self.reads[idx].served = Some((held.version, plan.body.clone()));
                    }
                }
            }
            read::Output::SendPart { index } => {
                let Some((version, Body::Multipart { parts, .. })) = self.reads[idx].served.clone()
                else {
                    self.fail("SendPart without a multipart Serve");
                };
                let Some(held) = self.reads[idx].held else {
                    self.fail("SendPart with no body held");
                };
                let window = parts[index].window;
                if held.version != version
                    || held.window.bounds(version.size) != (window.start()..window.end())
                {
                    self.fail(&format!(
                        "part {index} would send {held:?}, not {window:?} of {version:?}"
                    ));
                }
                self.reads[idx].streaming =
                    Some(Streaming { remaining: window.len(), part: Some(index) });
            }
            read::Output::Abort { why } => {
                self.note(format!("read k{key} abort {why:?}"));
                self.end_tee(idx, TeeEnd::SourceFailed);
                self.reads[idx].streaming = None;
                self.reads[idx].finished = true;
            }
            read::Output::DropBody { tier } => {
                if self.reads[idx].held.is_some_and(|h| h.tier == tier) {
                    self.reads[idx].held = None;
                }
            }
        }
    }

    /// The model tier's answer to an open, as the host would report it.
    fn open_tier(
        &mut self,
        idx: usize,
        tier: TierIdx,
        span: Span,
        conditions: &read::Conditions,
    ) -> read::Input {
        let key = self.reads[idx].key;
        if self.rng.u8(0..25) == 0 {
            return read::Input::TierFailed { tier };
        }
        let Some(version) = self.tiers[tier.get()][key] else {
            return read::Input::TierMissed { tier };
        };
        // A tier normally hides an expired copy; one in ten lets it through for the core to catch.
        if version.is_expired(self.step) && self.rng.u8(0..10) != 0 {
            return read::Input::TierMissed { tier };
        }
        let meta = version.meta();
        // Some backends ignore conditional requests: the core must not trust the tier's verdict.
        if self.rng.u8(0..8) != 0 {
            if let Some(if_match) = &conditions.if_match
                && !EtagList::parse(if_match).is_some_and(|list| list.matches_strong(&meta.etag))
            {
                return read::Input::TierOpened { tier, meta, window: None };
            }
            if let Some(inm) = &conditions.if_none_match
                && EtagList::parse(inm).is_some_and(|list| list.matches_weak(&meta.etag))
            {
                return read::Input::TierOpened { tier, meta, window: None };
            }
        }
        let window = span.resolve(version.size);
        if let Some(window) = window {
            self.reads[idx].held = Some(Held { tier, version, window });
        }
        read::Input::TierOpened { tier, meta, window }
    }

    fn stream_chunk(&mut self, idx: usize) {
        let key = self.reads[idx].key;
        match self.rng.u8(0..60) {
            0 => {
                self.note(format!("read k{key} client closed"));
                self.abandon_read(idx, TeeEnd::ClientClosed);
                return;
            }
            1 => {
                self.note(format!("read k{key} source failed mid-stream"));
                self.abandon_read(idx, TeeEnd::SourceFailed);
                return;
            }
            _ => {}
        }
        let streaming = self.reads[idx].streaming.as_mut().expect("caller checked");
        let n = streaming.remaining.min(self.rng.u64(1..=48));
        streaming.remaining -= n;
        let (remaining, part) = (streaming.remaining, streaming.part);
        if let Some(copy) = self.reads[idx].tee
            && n > 0
        {
            self.copies.get_mut(&copy).expect("a teed copy exists while attached").read += n;
            self.manager.handle_input(backfill::Input::SourceRead { copy, bytes: n });
            self.dispatch_manager();
        }
        if remaining > 0 {
            return;
        }
        self.reads[idx].streaming = None;
        match part {
            Some(index) => self.feed_read(idx, read::Input::PartSent { index }),
            None => {
                self.note(format!("read k{key} reached EOF"));
                self.end_tee(idx, TeeEnd::Eof);
                self.reads[idx].finished = true;
            }
        }
    }

    /// A read that stops before its end: its tee ends with `end` and nothing more is sent.
    fn abandon_read(&mut self, idx: usize, end: TeeEnd) {
        self.end_tee(idx, end);
        let read = &mut self.reads[idx];
        read.streaming = None;
        read.finished = true;
        read.abandoned = true;
        read.pending.clear();
    }

    fn end_tee(&mut self, idx: usize, end: TeeEnd) {
        let Some(copy) = self.reads[idx].tee.take() else { return };
        let actor = self.copies.get_mut(&copy).expect("a teed copy exists while attached");
        let input = match end {
            TeeEnd::Eof => {
                actor.source_ended = true;
                backfill::Input::SourceEnded { copy }
            }
            TeeEnd::ClientClosed => {
                actor.client_closed = true;
                backfill::Input::ClientClosed { copy }
            }
            TeeEnd::SourceFailed => {
                actor.source_failed = true;
                backfill::Input::SourceFailed { copy }
            }
        };
        self.manager.handle_input(input);
        self.dispatch_manager();
        if let TeeEnd::Eof = end {
            self.expect_commit_if_complete(copy);
        }
    }

    fn finish_read(&mut self, idx: usize) {
        let actor = self.reads.swap_remove(idx);
        if actor.tee.is_some() {
            self.fail("a read finished with its tee still attached");
        }
        // A response cut short (client gone, source failed) drops its machine mid-way.
        if !actor.abandoned && !actor.machine.is_done() {
            self.fail("a read finished while its machine still wanted something");
        }
    }

    /// A body from a middle tier while tier 0 held another live revision at the probe, or
    /// from any deeper tier after tier 0's probe failed, leaves tier 0 alone: no copy was asked
    /// for, and `Cache-Status` says nothing was stored. (From the last tier after a good probe
    /// the copy refreshes tier 0; `start_copy` counts it.)
    fn check_tier_0_kept(&mut self, idx: usize, source: read::Source, cache_status: &str) {
        let tier = match source {
            read::Source::Nothing => return,
            read::Source::Opened { tier } | read::Source::Parts { tier } => tier,
        };
        let (Some(held), Some(live)) = (self.reads[idx].held, self.reads[idx].tier0_live) else {
            return;
        };
        let authoritative = tier.get() + 1 == self.n_tiers && !self.reads[idx].tier0_failed;
        if tier.get() == 0 || held.version == live || authoritative {
            return;
        }
        if cache_status.contains("stored") {
            self.fail(&format!(
                "v{} served from tier {} with tier 0 holding v{} live, yet [{cache_status}]",
                held.version.id,
                tier.get(),
                live.id
            ));
        }
        self.stats.kept_tier_0 += 1;
    }

    /// The checks every served plan must pass.
    fn check_served(
        &mut self,
        idx: usize,
        plan: &rangecache_core::ResponsePlan,
        source: read::Source,
        cache_status: &str,
    ) {
        let actor = &self.reads[idx];
        let request = &actor.request;
        let header = |name: &str| {
            plan.header(&http::HeaderName::from_bytes(name.as_bytes()).expect("valid"))
        };
        if cache_status.is_empty() {
            self.fail("a response without Cache-Status members");
        }
        let tier = match source {
            read::Source::Nothing => {
                if !matches!(plan.body, Body::None) {
                    self.fail("a plan with a body served from nothing");
                }
                return;
            }
            read::Source::Opened { tier } | read::Source::Parts { tier } => tier,
        };
        let Some(held) = actor.held else {
            self.fail("a body served while none is held");
        };
        if held.tier != tier {
            self.fail(&format!(
                "serving tier {} while holding tier {}'s body",
                tier.get(),
                held.tier.get()
            ));
        }
        let version = held.version;
        if version.meta().is_expired(request.now) {
            self.fail("an expired version was served");
        }
        if header("etag") != Some(version.etag().to_string().as_str()) {
            self.fail(&format!(
                "ETag {:?} does not name the version sent ({version:?})",
                header("etag")
            ));
        }
        let bounds = held.window.bounds(version.size);
        match &plan.body {
            Body::None => self.fail("source given for a plan without a body"),
            Body::Full => {
                if plan.status != StatusCode::OK || bounds != (0..version.size) {
                    self.fail(&format!("200 of {version:?} sends {bounds:?}"));
                }
                if header("content-length") != Some(version.size.to_string().as_str()) {
                    self.fail("Content-Length of a 200 is not the version's size");
                }
            }
            Body::Window(window) => {
                let expected =
                    format!("bytes {}-{}/{}", window.start(), window.end() - 1, version.size);
                if plan.status != StatusCode::PARTIAL_CONTENT
                    || bounds != (window.start()..window.end())
                    || header("content-range") != Some(expected.as_str())
                    || header("content-length") != Some(window.len().to_string().as_str())
                {
                    self.fail(&format!(
                        "206 {:?} / {:?} disagrees with the body {bounds:?} of {version:?}",
                        header("content-range"),
                        header("content-length")
                    ));
                }
            }
            Body::Multipart { parts, .. } => {
                let first = parts[0].window;
                if bounds != (first.start()..first.end()) {
                    self.fail("the first part is not the body held");
                }
                for part in parts {
                    let expected = format!(
                        "bytes {}-{}/{}",
                        part.window.start(),
                        part.window.end() - 1,
                        version.size
                    );
                    if !part
                        .head
                        .to_ascii_lowercase()
                        .contains(&format!("content-range: {expected}"))
                    {
                        self.fail(&format!("part head {:?} lacks {expected}", part.head));
                    }
                }
            }
        }
        // The validators the client sent hold for what it gets.
        if let Some(if_match) = &request.if_match
            && !EtagList::parse(if_match).is_some_and(|list| list.matches_strong(&version.etag()))
        {
            self.fail("a version failing If-Match was served");
        }
        if plan.status == StatusCode::PARTIAL_CONTENT
            && let Some(if_range) = &request.if_range
            && *if_range != version.etag().to_string()
        {
            self.fail("a 206 of a version If-Range does not name");
        }
        if plan.status == StatusCode::OK && request.range.is_some() && request.if_range.is_some() {
            self.stats.not_definitive += 1;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Copies.

    fn start_copy(
        &mut self,
        idx: usize,
        copy: CopyId,
        from: TierIdx,
        meta: &ObjectMeta,
        mode: backfill::Mode,
    ) {
        if self.shutdown_requested {
            self.fail("a copy started after shutdown");
        }
        let key = self.reads[idx].key;
        let held = self.reads[idx].held.expect("a copy is requested with the body held");
        if held.version.etag() != meta.etag {
            self.fail("a copy of another version than the one held");
        }
        // A tier 0 whose probe failed gets no copy, whatever the source.
        if self.reads[idx].tier0_failed {
            self.fail(&format!(
                "{copy} of k{key} v{} from {} after tier 0's probe failed",
                held.version.id,
                from.get()
            ));
        }
        // Tier 0 keeps a live revision it held at the probe (one the validators did not
        // accept) against a middle tier: which one is newer is unknown. The last tier's
        // revision is current by definition, so a copy from there refreshes it.
        if let Some(live) = self.reads[idx].tier0_live
            && live != held.version
        {
            if from.get() + 1 != self.n_tiers {
                self.fail(&format!(
                    "{copy} of k{key} v{} from middle tier {} would replace v{} that tier 0 \
                     held live at the probe",
                    held.version.id,
                    from.get(),
                    live.id
                ));
            }
            self.stats.refreshed_tier_0 += 1;
        }
        // Tier 0 got a copy after this read probed it and nothing changed the key since:
        // another copy would read the whole object from the deeper tier a second time.
        let fills = self.fills[key];
        if fills.count != self.reads[idx].fills_seen && self.marks[key] == self.reads[idx].marks {
            self.fail(&format!(
                "{copy} of k{key} v{} started after {:?} committed since the read began",
                held.version.id, fills.last
            ));
        }
        self.note(format!(
            "copy {copy} of k{key} v{} from {} {mode:?}",
            held.version.id,
            from.get()
        ));
        let tee_window = match mode {
            backfill::Mode::Tee => {
                self.reads[idx].tee = Some(copy);
                Some(held.window)
            }
            backfill::Mode::Background => None,
        };
        self.copies.insert(
            copy,
            CopyActor {
                key,
                version: held.version,
                from,
                mode,
                opened: false,
                read: 0,
                written: 0,
                source_ended: false,
                tee_window,
                marks: self.reads[idx].marks,
                phase: CopyPhase::Running,
                client_closed: false,
                source_failed: false,
                writer_failed: false,
            },
        );
    }

    fn advance_copy(&mut self, copy: CopyId) {
        let actor = &self.copies[&copy];
        match actor.phase {
            CopyPhase::Cancelled => {
                self.note(format!("{copy} stopped"));
                self.manager.handle_input(backfill::Input::CopyStopped { copy });
                self.dispatch_manager();
            }
            CopyPhase::Committing => self.land_commit(copy),
            CopyPhase::Running => {
                let backlog = actor.read - actor.written;
                let can_read = actor.mode == backfill::Mode::Background && !actor.source_ended;
                let roll = self.rng.u16(0..400);
                if roll < 2 {
                    self.note(format!("{copy} writer failed"));
                    self.copies.get_mut(&copy).expect("exists").writer_failed = true;
                    self.manager.handle_input(backfill::Input::WriterFailed { copy });
                    self.dispatch_manager();
                } else if can_read && (backlog == 0 || roll < 220) {
                    self.background_read(copy);
                } else if backlog > 0 {
                    // Tier 0 writes slower than most sources read, so some copies lag.
                    let n = backlog.min(self.rng.u64(1..=48));
                    self.copies.get_mut(&copy).expect("exists").written += n;
                    self.manager.handle_input(backfill::Input::ChunkWritten { copy, bytes: n });
                    self.dispatch_manager();
                    self.expect_commit_if_complete(copy);
                }
            }
        }
    }

    fn background_read(&mut self, copy: CopyId) {
        let actor = self.copies.get_mut(&copy).expect("exists");
        if !actor.opened {
            // The pinned open. A tier answers another revision with 412 (a failed open), except
            // a backend that ignores the pin and sends whatever it holds: the manager must
            // refuse that revision itself.
            let found = self.tiers[actor.from.get()][actor.key];
            let holds = found == Some(actor.version);
            let ignores_pin = self.rng.u8(0..3) == 0;
            let answered = match found {
                Some(other) if holds || ignores_pin => Some(other),
                Some(_) | None => None,
            };
            let Some(opened) = answered.filter(|_| self.rng.u8(0..30) != 0) else {
                actor.source_failed = true;
                self.note(format!("{copy} pinned source open failed (holds: {holds})"));
                self.manager.handle_input(backfill::Input::SourceFailed { copy });
                self.dispatch_manager();
                return;
            };
            actor.opened = true;
            actor.source_failed = !holds;
            self.note(format!("{copy} source opened: v{}", opened.id));
            self.manager.handle_input(backfill::Input::SourceOpened {
                copy,
                etag: opened.etag(),
                size: opened.size,
            });
            self.dispatch_manager();
            if !holds {
                if self.copies.contains_key(&copy) {
                    self.fail(&format!("{copy} goes on from another revision, v{}", opened.id));
                }
                self.stats.wrong_source += 1;
                return;
            }
        }
        let actor = self.copies.get_mut(&copy).expect("exists");
        let left = actor.version.size - actor.read;
        if left == 0 {
            actor.source_ended = true;
            self.manager.handle_input(backfill::Input::SourceEnded { copy });
            self.dispatch_manager();
            self.expect_commit_if_complete(copy);
            return;
        }
        if self.rng.u8(0..80) == 0 {
            actor.source_failed = true;
            self.manager.handle_input(backfill::Input::SourceFailed { copy });
            self.dispatch_manager();
            return;
        }
        let n = left.min(self.rng.u64(1..=40));
        actor.read += n;
        self.manager.handle_input(backfill::Input::SourceRead { copy, bytes: n });
        self.dispatch_manager();
    }

    /// A copy whose source ended and whose bytes are all written, with nothing against it,
    /// must be committing now.
    fn expect_commit_if_complete(&mut self, copy: CopyId) {
        let Some(actor) = self.copies.get(&copy) else { return };
        let complete = actor.source_ended
            && actor.written == actor.version.size
            && actor.read == actor.version.size;
        let undisturbed = self.marks[actor.key] == actor.marks && !self.shutdown_requested;
        if complete && undisturbed && actor.phase == CopyPhase::Running {
            self.fail(&format!("{copy} reached EOF with every byte written but was not committed"));
        }
    }

    fn land_commit(&mut self, copy: CopyId) {
        let actor = &self.copies[&copy];
        let key = actor.key;
        if self.shutdown_complete {
            self.fail("a commit landed after ShutdownComplete");
        }
        if self.marks[key].applied != actor.marks.applied {
            self.fail(&format!("{copy} landed after a newer mutation of k{key} touched the tiers"));
        }
        let committed = self.rng.u8(0..40) != 0;
        if committed {
            self.tiers[0][key] = Some(actor.version);
            self.fills[key].count += 1;
            self.fills[key].last = Some((copy, actor.version));
        }
        let (version, mode) = (actor.version, actor.mode);
        self.note(format!("{copy} commit landed: {committed}"));
        self.copies.remove(&copy);
        if self.finished.len() < 64 {
            self.finished.push(copy);
        }
        let in_flight = self.manager.n_in_flight();
        self.awaiting_finish = Some(copy);
        self.manager.handle_input(backfill::Input::CommitFinished { copy, committed });
        self.dispatch_manager();
        if self.manager.n_in_flight() + 1 != in_flight {
            self.fail(&format!("{copy} still alive after CommitFinished"));
        }
        if self.awaiting_finish.is_some() {
            self.fail(&format!("{copy} got no Finished after its commit was reported"));
        }
        if committed && self.tiers[0][key] != Some(version) {
            self.fail("tier 0 does not hold the version just committed");
        }
        if committed && mode == backfill::Mode::Tee {
            self.stats.tee_commits += 1;
        }
    }

    /// Now and then, a late report for a copy that already finished: the answer must be a
    /// stale Discard and nothing else.
    fn report_stale(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        let copy = self.finished[self.rng.usize(0..self.finished.len())];
        self.manager.handle_input(backfill::Input::ChunkWritten { copy, bytes: 1 });
        match (self.manager.poll_output(), self.manager.poll_output()) {
            (Some(backfill::Output::Discard { copy: c, why: DiscardReason::Stale }), None)
                if c == copy => {}
            other => self.fail(&format!("a stale report for {copy} was answered with {other:?}")),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Mutations and drift.

    fn start_mutation(&mut self) {
        let key = self.rng.usize(0..N_KEYS);
        let kind = match self.rng.u8(0..6) {
            0..=3 => MutationKind::Write,
            4 => MutationKind::Delete,
            _ => MutationKind::Invalidate,
        };
        let version = self.new_version();
        let (machine, body_size) = match kind {
            MutationKind::Write => {
                let request = self.random_write(key, version);
                self.note(format!(
                    "mutation Write k{key} v{} start: If-Match {:?}, If-None-Match {:?}, \
                     Content-Length {:?}",
                    version.id, request.if_match, request.if_none_match, request.content_length
                ));
                // Now and then the client sends a byte more or less than it announced.
                let body_size = match (request.content_length, self.rng.u8(0..40)) {
                    (Some(length), 0) => length + 1,
                    (Some(length), 1) => length.saturating_sub(1),
                    (Some(_) | None, _) => version.size,
                };
                (write::Machine::write(request, &self.names), body_size)
            }
            MutationKind::Delete => (write::Machine::delete(&self.names), 0),
            MutationKind::Invalidate => (write::Machine::invalidate(&self.names), 0),
        };
        if kind != MutationKind::Write {
            self.note(format!("mutation {kind:?} k{key} start"));
        }
        let id = self.next_mutation;
        self.next_mutation += 1;
        let mut actor = MutationActor {
            id,
            key,
            kind,
            version,
            machine,
            outputs: VecDeque::new(),
            inputs: VecDeque::new(),
            wait: Wait::Nothing,
            writers: vec![false; self.n_tiers],
            guard: WriteGuard::None,
            body_size,
            sent: 0,
            started: false,
            existed: false,
            committed_last: false,
            drifts_at_lock: 0,
        };
        while let Some(output) = actor.machine.poll_output() {
            actor.outputs.push_back(output);
        }
        self.mutations.push(actor);
    }

    /// A write's fields: mostly unconditional, sometimes a condition the authoritative tier
    /// judges alone, sometimes one that needs the live revision looked up first; now and then
    /// larger than allowed, or sent without Content-Length.
    fn random_write(&mut self, key: usize, version: Version) -> write::Request {
        let some_etag = |sim: &mut Sim| {
            let held: Vec<u64> =
                (0..sim.n_tiers).filter_map(|t| sim.tiers[t][key]).map(|v| v.id).collect();
            let id = if !held.is_empty() && sim.rng.u8(0..3) != 0 {
                held[sim.rng.usize(0..held.len())]
            } else {
                sim.rng.u64(1..sim.next_version + 1)
            };
            format!("\"v{id}\"")
        };
        let (if_match, if_none_match) = match self.rng.u8(0..12) {
            0 => (None, Some("*".to_owned())),
            1 => (Some(some_etag(self)), None),
            2 => (None, Some(some_etag(self))),
            3 => (Some(some_etag(self)), Some(some_etag(self))),
            _ => (None, None),
        };
        write::Request {
            if_match,
            if_none_match,
            content_length: (self.rng.u8(0..5) != 0).then_some(version.size),
            max_size: MAX_OBJECT_SIZE,
            now: clock(self.step),
        }
    }

    /// Moves a mutation on by a few actions (its machine takes many more steps than the other
    /// actors, each a chance for them to interleave), stopping where it must wait.
    fn advance_mutation(&mut self, idx: usize) {
        let id = self.mutations[idx].id;
        loop {
            let ready = {
                let actor = &self.mutations[idx];
                !actor.outputs.is_empty() || !actor.inputs.is_empty() || actor.wait == Wait::Body
            };
            self.mutation_action(idx);
            let still_here = self.mutations.get(idx).is_some_and(|m| m.id == id);
            if !ready || !still_here || self.rng.u8(0..4) == 0 {
                return;
            }
        }
    }

    /// One action of a mutation: an output carried out, an observation handed to its machine,
    /// or a step of what it waits for.
    fn mutation_action(&mut self, idx: usize) {
        if let Some(output) = self.mutations[idx].outputs.pop_front() {
            self.carry_out_mutation(idx, output);
            return;
        }
        if let Some(input) = self.mutations[idx].inputs.pop_front() {
            self.feed_mutation(idx, input);
            return;
        }
        let MutationActor { id, key, wait, .. } = self.mutations[idx];
        match wait {
            Wait::Nothing => {
                if !self.mutations[idx].machine.is_done() {
                    self.fail("a mutation waits for nothing and has not answered");
                }
            }
            // A host stops waiting once the server is shutting down.
            Wait::Proceed if self.shutdown_requested && self.rng.u8(0..4) == 0 => {
                self.note(format!("mutation k{key} gives up waiting: shutting down"));
                self.mutations[idx].wait = Wait::Nothing;
                self.feed_mutation(idx, write::Input::ShuttingDown);
            }
            Wait::Proceed => {}
            Wait::Lock => {
                if self.lock_queue[key].front() != Some(&id) {
                    return;
                }
                self.mutations[idx].wait = Wait::Nothing;
                self.mutations[idx].drifts_at_lock = self.drifts[key];
                // Once the tiers are closing, committing could write into a closed tier.
                let input = if self.shutdown_requested {
                    write::Input::ShuttingDown
                } else {
                    write::Input::KeyLocked
                };
                self.feed_mutation(idx, input);
            }
            Wait::Body => self.send_body(idx),
        }
    }

    fn send_body(&mut self, idx: usize) {
        let actor = &mut self.mutations[idx];
        let input = if self.shutdown_requested && self.rng.u8(0..3) == 0 {
            write::Input::ShuttingDown
        } else if self.rng.u8(0..80) == 0 {
            write::Input::BodyFailed
        } else if actor.sent == actor.body_size {
            write::Input::BodyEnded
        } else {
            let bytes = (actor.body_size - actor.sent).min(self.rng.u64(1..=64));
            actor.sent += bytes;
            write::Input::ChunkReceived { bytes }
        };
        match input {
            write::Input::ChunkReceived { .. } => {}
            _ => actor.wait = Wait::Nothing,
        }
        self.feed_mutation(idx, input);
    }

    fn feed_mutation(&mut self, idx: usize, input: write::Input) {
        let actor = &mut self.mutations[idx];
        actor.machine.handle_input(input);
        while let Some(output) = actor.machine.poll_output() {
            actor.outputs.push_back(output);
        }
    }

    /// Carries out one output of a mutation's machine against the model tiers; what the tiers
    /// answer is queued as the machine's next input.
    fn carry_out_mutation(&mut self, idx: usize, output: write::Output) {
        let MutationActor { id, key, kind, version, .. } = self.mutations[idx];
        let last = self.n_tiers - 1;
        let answer = match output {
            write::Output::StatTier { tier } => {
                self.stats.lookups += u64::from(tier.get() == 0);
                if self.rng.u8(0..25) == 0 {
                    Some(write::Input::TierFailed { tier, fault: TierFault::Io })
                } else {
                    let meta = self.tiers[tier.get()][key].map(Version::meta);
                    Some(write::Input::TierStatted { tier, meta })
                }
            }
            write::Output::StartMutation { kind: k } => {
                if k != kind {
                    self.fail(&format!("a {kind:?} started as a {k:?}"));
                }
                self.marks[key].started += 1;
                self.stats.mutations += 1;
                let actor = &mut self.mutations[idx];
                actor.started = true;
                actor.wait = Wait::Proceed;
                self.proceed_queue[key].push_back(id);
                self.manager
                    .handle_input(backfill::Input::MutationStarted { key: object_key(key), kind });
                self.dispatch_manager();
                if self.mutations[idx].wait == Wait::Proceed {
                    self.stats.waited += 1;
                }
                None
            }
            write::Output::CreateWriter { tier, guard } => {
                if tier.get() < last && guard != WriteGuard::None {
                    self.fail("a nearer tier was handed the write's condition");
                }
                let roll = self.rng.u8(0..60);
                let fault = match (tier.get() == last, roll) {
                    (false, 0..=3) => Some(TierFault::TooLarge),
                    (false, 4..=5) => Some(TierFault::Busy),
                    (true, 0) => Some(TierFault::Backend),
                    (true, 1) => Some(TierFault::TooLarge),
                    (false | true, _) => None,
                };
                Some(match fault {
                    Some(fault) => write::Input::TierFailed { tier, fault },
                    None => {
                        let actor = &mut self.mutations[idx];
                        actor.writers[tier.get()] = true;
                        if tier.get() == last {
                            actor.guard = guard;
                        }
                        write::Input::WriterCreated { tier }
                    }
                })
            }
            write::Output::ReceiveBody => {
                self.mutations[idx].wait = Wait::Body;
                None
            }
            write::Output::WriteChunk => {
                let held: Vec<usize> =
                    (0..self.n_tiers).filter(|t| self.mutations[idx].writers[*t]).collect();
                for tier in held {
                    let fault = match (tier == last, self.rng.u16(0..300)) {
                        (false, 0) => Some(TierFault::Busy),
                        (false, 1) => Some(TierFault::Io),
                        (true, 0) => Some(TierFault::Io),
                        (true, 1) => Some(TierFault::Busy),
                        (false | true, _) => None,
                    };
                    if let Some(fault) = fault {
                        let input = write::Input::TierFailed { tier: TierIdx::new(tier), fault };
                        self.mutations[idx].inputs.push_back(input);
                    }
                }
                None
            }
            write::Output::AbortWriter { tier } => {
                if tier.get() == last {
                    self.fail("the authoritative tier was left out of a write");
                }
                self.mutations[idx].writers[tier.get()] = false;
                self.stats.left_out += 1;
                None
            }
            write::Output::LockKey => {
                self.mutations[idx].wait = Wait::Lock;
                self.lock_queue[key].push_back(id);
                None
            }
            write::Output::CommitTier { tier } => Some(self.commit_write(idx, tier)),
            write::Output::DropCopy { tier } => {
                if tier.get() == last {
                    self.fail("a write dropped the authoritative copy");
                }
                if self.mutations[idx].writers[tier.get()] {
                    self.stats.left_out += 1;
                }
                self.mutations[idx].writers[tier.get()] = false;
                self.tiers[tier.get()][key] = None;
                None
            }
            write::Output::RemoveTier { tier } | write::Output::InvalidateTier { tier } => {
                if kind == MutationKind::Invalidate && tier.get() == last {
                    self.fail("an invalidation touched the authoritative tier");
                }
                if self.rng.u8(0..40) == 0 {
                    Some(write::Input::TierFailed { tier, fault: TierFault::Io })
                } else {
                    let existed = self.tiers[tier.get()][key].take().is_some();
                    self.mutations[idx].existed |= existed;
                    Some(write::Input::TierRemoved { tier, existed })
                }
            }
            write::Output::Finish { plan, cache_status } => {
                self.check_finished(idx, &plan, &cache_status.to_string());
                self.end_mutation(idx);
                None
            }
            write::Output::Fail { failure, cache_status } => {
                self.note(format!("mutation {kind:?} k{key} v{} failed: {failure:?}", version.id));
                if cache_status.members.len() != self.n_tiers {
                    self.fail("a failed mutation's Cache-Status does not name every tier");
                }
                // Nothing of a failed write was committed anywhere.
                if (0..self.n_tiers).any(|t| self.tiers[t][key] == Some(version)) {
                    self.fail(&format!("a failed write left v{} in a tier", version.id));
                }
                let label =
                    format!("{failure:?}").split([' ', '{']).next().unwrap_or("").to_owned();
                *self.stats.failed_by.entry(label).or_default() += 1;
                self.end_mutation(idx);
                None
            }
        };
        if let Some(input) = answer {
            self.mutations[idx].inputs.push_back(input);
        }
    }

    /// The commit of a write's writer in tier `tier`: the authoritative tier checks the
    /// write's guard against its live revision atomically, as the storage tiers do.
    fn commit_write(&mut self, idx: usize, tier: TierIdx) -> write::Input {
        let MutationActor { key, version, .. } = self.mutations[idx];
        if !self.mutations[idx].writers[tier.get()] {
            self.fail(&format!("a commit of tier {} with no writer", tier.get()));
        }
        self.mutations[idx].writers[tier.get()] = false;
        let last = self.n_tiers - 1;
        if tier.get() == last {
            let step = self.step;
            let live = self.tiers[last][key].filter(|v| !v.is_expired(step)).map(Version::meta);
            let allowed = match &self.mutations[idx].guard {
                WriteGuard::None => true,
                WriteGuard::IfAbsent => {
                    conditional::is_write_allowed(None, Some("*"), live.as_ref())
                }
                WriteGuard::IfMatch(list) => {
                    conditional::is_write_allowed(Some(list), None, live.as_ref())
                }
            };
            if !allowed {
                return write::Input::TierFailed { tier, fault: TierFault::ConditionFailed };
            }
        } else if !self.mutations[idx].committed_last {
            self.fail("a nearer tier committed before the authoritative one");
        }
        if self.rng.u8(0..40) == 0 {
            return write::Input::TierFailed { tier, fault: TierFault::Backend };
        }
        self.mutations[idx].committed_last |= tier.get() == last;
        self.tiers[tier.get()][key] = Some(version);
        write::Input::Committed { tier, meta: version.meta() }
    }

    /// What a finished mutation must have done, unless another server or an eviction changed
    /// the key's tiers since it took the lock.
    fn check_finished(&mut self, idx: usize, plan: &rangecache_core::ResponsePlan, status: &str) {
        let MutationActor { key, kind, version, existed, drifts_at_lock, .. } = self.mutations[idx];
        self.note(format!("mutation {kind:?} k{key} finished: {} [{status}]", plan.status));
        if status.matches(", ").count() + 1 != self.n_tiers {
            self.fail(&format!("Cache-Status [{status}] does not name every tier"));
        }
        let undisturbed = self.drifts[key] == drifts_at_lock;
        let last = self.n_tiers - 1;
        match kind {
            MutationKind::Write => {
                if plan.status != StatusCode::OK || !status.contains("fwd=method; stored") {
                    self.fail(&format!("a stored write answered {} [{status}]", plan.status));
                }
                let etag = plan.header(&http::header::ETAG);
                if etag != Some(version.etag().to_string().as_str()) {
                    self.fail(&format!("a write answered ETag {etag:?} for v{}", version.id));
                }
                if undisturbed
                    && (self.tiers[last][key] != Some(version)
                        || (0..last).any(|t| self.tiers[t][key].is_some_and(|v| v != version)))
                {
                    self.fail(&format!(
                        "after a write of v{} the tiers hold {:?}",
                        version.id,
                        self.holdings(key)
                    ));
                }
                self.stats.writes_stored += 1;
            }
            MutationKind::Delete => {
                let expected = if existed { StatusCode::OK } else { StatusCode::NOT_FOUND };
                if plan.status != expected {
                    self.fail(&format!("a delete answered {}, expected {expected}", plan.status));
                }
                if undisturbed && (0..self.n_tiers).any(|t| self.tiers[t][key].is_some()) {
                    self.fail(&format!("after a delete the tiers hold {:?}", self.holdings(key)));
                }
                self.stats.deletes_of_nothing += u64::from(!existed);
            }
            MutationKind::Invalidate => {
                if undisturbed && (0..last).any(|t| self.tiers[t][key].is_some()) {
                    self.fail(&format!(
                        "after an invalidation the tiers hold {:?}",
                        self.holdings(key)
                    ));
                }
            }
        }
    }

    fn holdings(&self, key: usize) -> Vec<Option<u64>> {
        (0..self.n_tiers).map(|t| self.tiers[t][key].map(|v| v.id)).collect()
    }

    /// A mutation answered: it lets go of the key's lock and, if it reported its start, reports
    /// its end, whatever the outcome.
    fn end_mutation(&mut self, idx: usize) {
        let actor = self.mutations.swap_remove(idx);
        let (id, key, kind) = (actor.id, actor.key, actor.kind);
        if !actor.outputs.is_empty() || !actor.machine.is_done() {
            self.fail("a mutation answered with work still asked of it");
        }
        self.lock_queue[key].retain(|m| *m != id);
        if actor.started {
            self.marks[key].ended += 1;
            self.note(format!("mutation {kind:?} k{key} end"));
            self.manager
                .handle_input(backfill::Input::MutationEnded { key: object_key(key), kind });
            self.dispatch_manager();
        }
    }

    /// Another server writes or deletes the key in the shared (last) tier, or a tier loses its
    /// copy (eviction): the manager is not told, as it would not be.
    fn drift(&mut self) {
        let last = self.n_tiers - 1;
        // Half the time the key of a background copy from the last tier that has not opened its
        // source yet: another server replaces what the copy is about to read.
        let copying: Vec<usize> = self
            .copies
            .values()
            .filter(|c| c.mode == backfill::Mode::Background && !c.opened && c.from.get() == last)
            .map(|c| c.key)
            .collect();
        let (key, tier) = if !copying.is_empty() && self.rng.bool() {
            (copying[self.rng.usize(0..copying.len())], last)
        } else {
            (self.rng.usize(0..N_KEYS), self.rng.usize(0..self.n_tiers))
        };
        if tier == last && self.rng.bool() {
            let version = self.new_version();
            self.note(format!("drift: tier {tier} k{key} becomes v{}", version.id));
            self.tiers[tier][key] = Some(version);
        } else {
            self.note(format!("drift: tier {tier} k{key} evicted"));
            self.tiers[tier][key] = None;
        }
        self.drifts[key] += 1;
    }

    // -----------------------------------------------------------------------------------------
    // The manager's outputs.

    fn dispatch_manager(&mut self) {
        while let Some(output) = self.manager.poll_output() {
            match output {
                backfill::Output::Cancel { copy } => {
                    self.note(format!("{copy} cancel"));
                    let Some(actor) = self.copies.get(&copy).copied() else {
                        self.fail(&format!("cancel of unknown {copy}"));
                    };
                    if actor.phase != CopyPhase::Running {
                        self.fail(&format!("cancel of {copy} in {:?}", actor.phase));
                    }
                    self.copies.get_mut(&copy).expect("found above").phase = CopyPhase::Cancelled;
                    // The client's read goes on without its tee.
                    for read in &mut self.reads {
                        if read.tee == Some(copy) {
                            read.tee = None;
                        }
                    }
                }
                backfill::Output::Commit { copy } => self.decide_commit(copy),
                backfill::Output::Finished { copy } => {
                    self.note(format!("{copy} finished"));
                    if self.awaiting_finish.take() != Some(copy) {
                        self.fail(&format!("{copy} finished without its commit being reported"));
                    }
                }
                backfill::Output::Discard { copy, why } => self.discard(copy, why),
                backfill::Output::ProceedWithMutation { key } => {
                    let idx = (0..N_KEYS).find(|k| object_key(*k) == key).expect("a sim key");
                    let Some(id) = self.proceed_queue[idx].pop_front() else {
                        self.fail("ProceedWithMutation with no mutation waiting");
                    };
                    self.marks[idx].applied += 1;
                    // A mutation that gave up waiting (shutdown) is gone; its turn passes.
                    let Some(mutation) = self.mutations.iter_mut().find(|m| m.id == id) else {
                        self.note(format!("mutation k{idx} proceeds, but gave up already"));
                        continue;
                    };
                    if mutation.wait != Wait::Proceed {
                        self.fail("ProceedWithMutation for a mutation that did not wait for it");
                    }
                    mutation.wait = Wait::Nothing;
                    mutation.inputs.push_back(write::Input::MutationProceeded);
                    self.note(format!("mutation k{idx} proceeds"));
                }
                backfill::Output::ShutdownComplete => {
                    self.note("shutdown complete".into());
                    if !self.shutdown_requested {
                        self.fail("ShutdownComplete without a shutdown");
                    }
                    if !self.copies.is_empty() {
                        self.fail("ShutdownComplete while copies are alive");
                    }
                    if self.shutdown_complete {
                        self.fail("ShutdownComplete twice for one shutdown");
                    }
                    self.shutdown_complete = true;
                }
            }
        }
    }

    /// A deduplicated refusal names the copy of the key that may still commit, or the copy of
    /// the very version requested that committed last, after the read began. A request refused
    /// as superseded has a cause on its own key: a mutation or a commit into tier 0 since the
    /// read began (the sim's few keys never overflow the manager's bounded memories, so a change
    /// of another key is never a cause).
    fn check_refusal(&mut self, idx: usize, why: backfill::Refusal) {
        let key = self.reads[idx].key;
        if why == backfill::Refusal::Superseded
            && self.marks[key] == self.reads[idx].marks
            && self.fills[key].count == self.reads[idx].fills_seen
        {
            self.fail(&format!(
                "k{key} refused as superseded though nothing changed it since the read began"
            ));
        }
        let backfill::Refusal::Deduplicated { copy } = why else { return };
        let in_flight = self
            .copies
            .get(&copy)
            .is_some_and(|actor| actor.key == key && actor.phase != CopyPhase::Cancelled);
        if in_flight {
            return;
        }
        let held = self.reads[idx].held.expect("a copy is requested with the body held");
        let fills = self.fills[key];
        if fills.last != Some((copy, held.version)) || fills.count == self.reads[idx].fills_seen {
            self.fail(&format!(
                "k{key} v{} deduplicated by {copy}, neither in flight nor its commit since the \
                 read began (last commit {:?})",
                held.version.id, fills.last
            ));
        }
        self.stats.deduped_by_commit += 1;
    }

    fn decide_commit(&mut self, copy: CopyId) {
        let Some(actor) = self.copies.get(&copy).copied() else {
            self.fail(&format!("commit of unknown {copy}"));
        };
        let (key, version, marks) = (actor.key, actor.version, actor.marks);
        self.note(format!("{copy} commit decided"));
        if self.shutdown_requested {
            self.fail("a commit was decided after shutdown");
        }
        if actor.phase != CopyPhase::Running {
            self.fail(&format!("commit of {copy} in {:?}", actor.phase));
        }
        // No fragment as a whole object.
        if !actor.source_ended || actor.read != version.size || actor.written != version.size {
            self.fail(&format!("{copy} commits {} of {} bytes", actor.written, version.size));
        }
        if let Some(window) = actor.tee_window
            && window.bounds(version.size) != (0..version.size)
        {
            self.fail(&format!("{copy} tees the fragment {window:?} as the whole object"));
        }
        if actor.client_closed || actor.source_failed || actor.writer_failed {
            self.fail(&format!("{copy} commits after a failure"));
        }
        // No stale generation: nothing changed the key since the read began, and no change
        // was running when it began.
        if self.marks[key] != marks || marks.started != marks.ended {
            self.fail(&format!("{copy} of k{key} commits across a mutation"));
        }
        self.copies.get_mut(&copy).expect("found above").phase = CopyPhase::Committing;
    }

    fn discard(&mut self, copy: CopyId, why: DiscardReason) {
        self.note(format!("{copy} discard {why:?}"));
        let Some(actor) = self.copies.remove(&copy) else {
            if why != DiscardReason::Stale {
                self.fail(&format!("{copy} discarded ({why:?}) twice"));
            }
            return;
        };
        if why == DiscardReason::Stale {
            self.fail(&format!("a live {copy} was called stale"));
        }
        if self.finished.len() < 64 {
            self.finished.push(copy);
        }
        let justified = match why {
            DiscardReason::EarlyClose => actor.client_closed,
            DiscardReason::SourceFailed => actor.source_failed,
            DiscardReason::WriterFailed => actor.writer_failed,
            DiscardReason::Lagging => actor.read - actor.written > BACKLOG_BOUND,
            DiscardReason::Superseded => self.marks[actor.key] != actor.marks,
            DiscardReason::ShuttingDown => self.shutdown_requested,
            DiscardReason::SizeMismatch | DiscardReason::Stale => false,
        };
        if !justified {
            self.fail(&format!("{copy} discarded for {why:?} without cause"));
        }
        for read in &mut self.reads {
            if read.tee == Some(copy) {
                read.tee = None;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Checked after every step.

    fn check_invariants(&mut self) {
        let mut live = [0u32; N_KEYS];
        for actor in self.copies.values() {
            match actor.phase {
                CopyPhase::Running | CopyPhase::Committing => live[actor.key] += 1,
                CopyPhase::Cancelled => {}
            }
        }
        if let Some(key) = live.iter().position(|n| *n > 1) {
            self.fail(&format!("{} copies of k{key} may still commit", live[key]));
        }
        if self.manager.n_in_flight() != self.copies.len() {
            self.fail(&format!(
                "the manager counts {} copies in flight, the host runs {}",
                self.manager.n_in_flight(),
                self.copies.len()
            ));
        }
        if self.shutdown_complete && !self.copies.is_empty() {
            self.fail("copies alive after ShutdownComplete");
        }
    }
}

#[derive(Clone, Copy)]
enum TeeEnd {
    Eof,
    ClientClosed,
    SourceFailed,
}

fn show_request(request: &read::Request) -> String {
    let mut shown = request.method.to_string();
    for (name, value) in [
        ("Range", &request.range),
        ("If-Range", &request.if_range),
        ("If-Match", &request.if_match),
        ("If-None-Match", &request.if_none_match),
    ] {
        if let Some(value) = value {
            shown.push_str(&format!(" {name}: {value}"));
        }
    }
    shown
}

fn show_input(input: &read::Input) -> String {
    match input {
        read::Input::TierOpened { meta, window, .. } => {
            format!("opened {}/{}B {window:?}", meta.etag, meta.size)
        }
        read::Input::TierMissed { .. } => "missed".into(),
        read::Input::TierFailed { .. } => "failed".into(),
        other => format!("{other:?}"),
    }
}
