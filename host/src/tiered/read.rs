//! Reads: one GET or HEAD walks the tiers as the core's read machine asks, and is served with
//! exactly the bytes its plan describes.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use rangecache_core::backfill::{self, CopyId, Mode};
use rangecache_core::range::Span;
use rangecache_core::read;
use rangecache_core::{Body, ObjectKey, RangeLimits, TierIdx, Timestamp};

use super::lifecycle::OpKind;
use super::{Error, ReadRequest, Served, Tiered};
use crate::storage::{ByteStream, Conditions, OpenRequest, Opened};

impl Tiered {
    /// Walks the tiers for one GET or HEAD, driving the core's read machine, and returns the
    /// response it planned with exactly the bytes that plan sends.
    pub async fn read(
        self: &Arc<Self>,
        key: &ObjectKey,
        req: ReadRequest,
    ) -> Result<Served, Error> {
        let operation = self.enter(OpKind::Read)?;
        // Taken before any tier is opened, so a copy of what this read sees is refused if the
        // key changes meanwhile.
        let seen = self.backfills().manager.generation(key);
        let (is_head, now) = (req.method == http::Method::HEAD, req.now);
        let mut machine = read::Machine::new(req, &self.names, RangeLimits::default());
        let mut held: Option<ByteStream> = None;
        let mut tee_copy: Option<CopyId> = None;
        while let Some(output) = machine.poll_output() {
            match output {
                read::Output::OpenTier { tier, span, conditions } => {
                    held = None;
                    let input = if is_head {
                        self.stat_for(key, tier, now).await
                    } else {
                        self.open_for(key, tier, span, conditions, now, &mut held).await
                    };
                    machine.handle_input(input);
                }
                read::Output::DropBody { .. } => held = None,
                read::Output::RequestCopy { from, meta, mode } => {
                    let key = key.clone();
                    let answer =
                        self.request_copy(backfill::CopyRequest { key, seen, from, meta, mode });
                    if mode == Mode::Tee {
                        tee_copy = answer.ok();
                    }
                    machine.handle_input(read::Input::CopyAnswered { answer });
                }
                read::Output::Serve { plan, source, cache_status } => {
                    for member in &cache_status.members {
                        if let Some(label) = member.lookup.metric_label() {
                            self.read_counters[member.tier.get()].inc(label);
                        }
                    }
                    let cache_status = cache_status.to_field_value();
                    let body = match source {
                        read::Source::Nothing => None,
                        read::Source::Opened { .. } => {
                            let body = held.take();
                            match (body, tee_copy.take()) {
                                (Some(body), Some(copy)) => Some(self.tee(copy, body)),
                                (body, _) => body,
                            }
                        }
                        read::Source::Parts { .. } => {
                            let Body::Multipart { parts, closing, .. } = &plan.body else {
                                unreachable!("the machine sends parts only for a multipart plan")
                            };
                            Some(self.multipart(
                                key.clone(),
                                machine,
                                held.take(),
                                parts,
                                closing,
                                now,
                            ))
                        }
                    };
                    if let Some(copy) = tee_copy {
                        // A tee was started but the plan sends no whole body to carry it.
                        self.abandon_tee(copy);
                    }
                    let body = body.map(|body| self.guarded(body, operation));
                    return Ok(Served { plan, body, cache_status });
                }
                read::Output::SendPart { .. } | read::Output::Abort { .. } => {
                    unreachable!("parts are asked for only after Serve")
                }
            }
        }
        unreachable!("the read machine always ends in Serve")
    }

    /// A HEAD sends no byte, so the tier is asked for its metadata only (a HEAD upstream
    /// rather than a GET of the whole object); the machine evaluates the preconditions
    /// against that revision as it would against an opened one.
    async fn stat_for(&self, key: &ObjectKey, tier: TierIdx, now: Timestamp) -> read::Input {
        let slot = &self.slots[tier.get()];
        let started = Instant::now();
        let stat = slot.tier.stat(key, now).await;
        self.open_latency[tier.get()].stat.observe_duration(started.elapsed());
        match stat {
            Ok(Some(meta)) => read::Input::TierOpened { tier, meta, window: None },
            Ok(None) => read::Input::TierMissed { tier },
            Err(e) => {
                tracing::warn!(tier = slot.tier.name(), %key, error = %e, "tier stat failed");
                read::Input::TierFailed { tier }
            }
        }
    }

    /// Opens one tier and turns its answer into the machine's input, keeping the body.
    async fn open_for(
        &self,
        key: &ObjectKey,
        tier: TierIdx,
        span: Span,
        conditions: Conditions,
        now: Timestamp,
        held: &mut Option<ByteStream>,
    ) -> read::Input {
        let request = OpenRequest { span, conditions, now };
        let slot = &self.slots[tier.get()];
        let started = Instant::now();
        let opened = slot.tier.open(key, &request).await;
        self.open_latency[tier.get()].open.observe_duration(started.elapsed());
        match opened {
            Ok(Opened::Body { meta, window, body }) => {
                *held = Some(body);
                read::Input::TierOpened { tier, meta, window: Some(window) }
            }
            Ok(Opened::NotFound) => read::Input::TierMissed { tier },
            Ok(
                Opened::NotSatisfiable { meta }
                | Opened::PreconditionFailed { meta }
                | Opened::NotModified { meta },
            ) => read::Input::TierOpened { tier, meta, window: None },
            Err(e) => {
                tracing::warn!(tier = slot.tier.name(), %key, error = %e, "tier read failed");
                read::Input::TierFailed { tier }
            }
        }
    }

    fn abandon_tee(self: &Arc<Self>, copy: CopyId) {
        let job = self.backfills().pending_tees.remove(&copy);
        if job.is_some() {
            self.handle(backfill::Input::ClientClosed { copy });
        }
    }

    /// A `multipart/byteranges` body: each part's head, then its window opened pinned to the
    /// planned revision as the machine asks, then the closing delimiter.
    fn multipart(
        self: &Arc<Self>,
        key: ObjectKey,
        machine: read::Machine,
        held: Option<ByteStream>,
        parts: &[rangecache_core::Part],
        closing: &str,
        now: Timestamp,
    ) -> ByteStream {
        let state = Multipart {
            tiered: self.clone(),
            key,
            machine,
            held,
            current: None,
            sending: 0,
            heads: parts.iter().map(|part| Bytes::from(part.head.clone())).collect(),
            closing: Some(Bytes::from(closing.to_owned())),
            now,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        }))
    }
}

struct Multipart {
    tiered: Arc<Tiered>,
    key: ObjectKey,
    machine: read::Machine,
    held: Option<ByteStream>,
    current: Option<ByteStream>,
    sending: usize,
    heads: Vec<Bytes>,
    closing: Option<Bytes>,
    now: Timestamp,
}

impl Multipart {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if let Some(current) = self.current.as_mut() {
                match current.next().await {
                    Some(Ok(chunk)) => return Some(Ok(chunk)),
                    Some(Err(e)) => {
                        self.closing = None;
                        self.current = None;
                        return Some(Err(e));
                    }
                    None => {
                        self.current = None;
                        self.machine.handle_input(read::Input::PartSent { index: self.sending });
                        continue;
                    }
                }
            }
            match self.machine.poll_output() {
                Some(read::Output::SendPart { index }) => {
                    let Some(body) = self.held.take() else {
                        self.closing = None;
                        return Some(Err(io::Error::other("a part's body was not opened")));
                    };
                    self.current = Some(body);
                    self.sending = index;
                    return Some(Ok(self.heads[index].clone()));
                }
                Some(read::Output::OpenTier { tier, span, conditions }) => {
                    self.held = None;
                    let input = self
                        .tiered
                        .open_for(&self.key, tier, span, conditions, self.now, &mut self.held)
                        .await;
                    self.machine.handle_input(input);
                }
                Some(read::Output::DropBody { .. }) => self.held = None,
                Some(read::Output::Abort { why }) => {
                    self.closing = None;
                    return Some(Err(io::Error::other(format!(
                        "multipart body cut short: {why:?}"
                    ))));
                }
                Some(read::Output::Serve { .. } | read::Output::RequestCopy { .. }) => {}
                None => return self.closing.take().map(Ok),
            }
        }
    }
}
