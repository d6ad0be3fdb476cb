//! A tier that injects faults into another (`kind = "faulty"`, built with the `faults`
//! feature): the fault-injection suite's way to make memory, disk and s3 tiers fail the way
//! real ones do, inside a real server.
//!
//! At each step of an operation (an open, a stat, each chunk of a body read, a create, each
//! chunk written, a commit, a delete or invalidation), or only at the steps the configuration
//! names, one draw from a generator seeded by the configuration decides whether a fault happens
//! there:
//!
//! * **error**: the step fails. A commit or delete fails half the time *after* the wrapped tier
//!   carried it out, as when an acknowledgement is lost; a body read ends with an error.
//! * **stall**: the step waits first, up to `stall_for`.
//! * **truncate**: a body ends early *without* an error, after part of a chunk (a lying tier
//!   whose short body only a length check catches); a write stores part of its chunk and fails.
//!
//! Every fault is counted in `rangecache_faults_injected_total{tier,step,fault}`. Closing, stats
//! and aborts are passed through untouched: they are the clean-up every failure relies on.
//! Concurrent operations draw from one generator, so a seed fixes the sequence of draws, not
//! which operation gets which.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rangecache_core::{ObjectKey, ObjectMeta, Timestamp};

use super::{ByteStream, NewObject, OpenRequest, Opened, Tier, TierError, TierStats, TierWriter};
use crate::config::FaultConfig;
use crate::metrics::FaultLabels;

/// A tier whose steps fail, stall and truncate at random.
pub struct FaultyTier {
    inner: Arc<dyn Tier>,
    faults: Arc<Faults>,
}

impl FaultyTier {
    /// `inner` with the faults of `config`; `idx` (the tier's position) is mixed into the seed
    /// so two faulty tiers of one server draw differently. Injections are counted in `counters`.
    pub fn new(
        inner: Arc<dyn Tier>,
        config: &FaultConfig,
        idx: usize,
        counters: Family<FaultLabels, Counter>,
    ) -> FaultyTier {
        let seed = config.seed ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let faults = Faults {
            tier: inner.name().to_owned(),
            config: config.clone(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            counters,
        };
        FaultyTier { inner, faults: Arc::new(faults) }
    }
}

/// Where a fault can happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Open,
    Stat,
    Read,
    Create,
    Write,
    Commit,
    Delete,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Open => "open",
            Step::Stat => "stat",
            Step::Read => "read",
            Step::Create => "create",
            Step::Write => "write",
            Step::Commit => "commit",
            Step::Delete => "delete",
        }
    }

    /// Only bytes in flight can be cut short.
    fn can_truncate(self) -> bool {
        match self {
            Step::Read | Step::Write => true,
            Step::Open | Step::Stat | Step::Create | Step::Commit | Step::Delete => false,
        }
    }
}

/// What happens at one step.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Error,
    Stall(Duration),
    Truncate,
}

struct Faults {
    tier: String,
    config: FaultConfig,
    rng: Mutex<fastrand::Rng>,
    counters: Family<FaultLabels, Counter>,
}

impl Faults {
    /// Draws the fault of one step, if any, and counts it.
    fn draw(&self, step: Step) -> Option<Fault> {
        let config = &self.config;
        if !config.steps.is_empty() && !config.steps.iter().any(|s| s == step.as_str()) {
            return None;
        }
        let (fault, label) = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            let x = rng.u32(0..1_000_000);
            if x < config.error_ppm {
                (Fault::Error, "error")
            } else if x < config.error_ppm + config.stall_ppm {
                let millis = u64::try_from(config.stall_for.as_millis()).unwrap_or(u64::MAX);
                (Fault::Stall(Duration::from_millis(rng.u64(0..=millis))), "stall")
            } else if step.can_truncate()
                && x < config.error_ppm + config.stall_ppm + config.truncate_ppm
            {
                (Fault::Truncate, "truncate")
            } else {
                return None;
            }
        };
        let labels = FaultLabels { tier: self.tier.clone(), step: step.as_str(), fault: label };
        self.counters.get_or_create(&labels).inc();
        Some(fault)
    }

    /// A coin from the same generator (whether a failing commit or delete happens first).
    fn coin(&self) -> bool {
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).bool()
    }

    fn error(&self, step: Step) -> TierError {
        TierError::Io {
            tier: self.tier.clone(),
            source: io::Error::other(format!("injected fault: {} failed", step.as_str())),
        }
    }

    /// Draws the fault of a step that cannot be truncated: `Err` for an error, after waiting
    /// out a stall.
    async fn before(&self, step: Step) -> Result<(), TierError> {
        match self.draw(step) {
            None | Some(Fault::Truncate) => Ok(()),
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                Ok(())
            }
            Some(Fault::Error) => Err(self.error(step)),
        }
    }
}

#[async_trait::async_trait]
impl Tier for FaultyTier {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn max_object_size(&self) -> Option<u64> {
        self.inner.max_object_size()
    }

    async fn open(&self, key: &ObjectKey, req: &OpenRequest) -> Result<Opened, TierError> {
        self.faults.before(Step::Open).await?;
        match self.inner.open(key, req).await? {
            Opened::Body { meta, window, body } => {
                Ok(Opened::Body { meta, window, body: faulty_body(body, self.faults.clone()) })
            }
            other => Ok(other),
        }
    }

    async fn stat(&self, key: &ObjectKey, now: Timestamp) -> Result<Option<ObjectMeta>, TierError> {
        self.faults.before(Step::Stat).await?;
        self.inner.stat(key, now).await
    }

    async fn create(
        &self,
        key: &ObjectKey,
        new: NewObject,
    ) -> Result<Box<dyn TierWriter>, TierError> {
        self.faults.before(Step::Create).await?;
        let inner = self.inner.create(key, new).await?;
        Ok(Box::new(FaultyWriter { inner, faults: self.faults.clone() }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, TierError> {
        match self.faults.draw(Step::Delete) {
            Some(Fault::Error) => {
                if self.faults.coin() {
                    // Carried out, then the answer is lost.
                    let _ = self.inner.delete(key).await;
                }
                Err(self.faults.error(Step::Delete))
            }
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                self.inner.delete(key).await
            }
            None | Some(Fault::Truncate) => self.inner.delete(key).await,
        }
    }

    async fn invalidate(&self, key: &ObjectKey) -> Result<(), TierError> {
        match self.faults.draw(Step::Delete) {
            Some(Fault::Error) => {
                if self.faults.coin() {
                    let _ = self.inner.invalidate(key).await;
                }
                Err(self.faults.error(Step::Delete))
            }
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                self.inner.invalidate(key).await
            }
            None | Some(Fault::Truncate) => self.inner.invalidate(key).await,
        }
    }

    async fn stats(&self, now: Timestamp) -> Result<TierStats, TierError> {
        self.inner.stats(now).await
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        self.inner.namespaces().await
    }

    async fn close(&self) -> Result<(), TierError> {
        self.inner.close().await
    }
}

/// A writer whose chunks and commit fail, stall and truncate.
struct FaultyWriter {
    inner: Box<dyn TierWriter>,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl TierWriter for FaultyWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), TierError> {
        match self.faults.draw(Step::Write) {
            None => self.inner.write(chunk).await,
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                self.inner.write(chunk).await
            }
            Some(Fault::Error) => Err(self.faults.error(Step::Write)),
            Some(Fault::Truncate) => {
                // Part of the chunk reaches the tier, then the write fails (a full disk).
                let part = chunk.len() / 2;
                if part > 0 {
                    self.inner.write(chunk.slice(..part)).await?;
                }
                Err(self.faults.error(Step::Write))
            }
        }
    }

    async fn commit(self: Box<Self>) -> Result<ObjectMeta, TierError> {
        let FaultyWriter { inner, faults } = *self;
        match faults.draw(Step::Commit) {
            Some(Fault::Error) => {
                if faults.coin() {
                    // Committed, then the answer is lost.
                    let _ = inner.commit().await;
                } else {
                    inner.abort().await;
                }
                Err(faults.error(Step::Commit))
            }
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                inner.commit().await
            }
            None | Some(Fault::Truncate) => inner.commit().await,
        }
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await;
    }

    fn fence(&self) -> Option<super::CommitFence> {
        self.inner.fence()
    }
}

/// `body` with a draw before each chunk: an error ends it with an error, a stall delays the
/// chunk, a truncation sends a strict prefix of the chunk and ends the body as if complete.
fn faulty_body(body: ByteStream, faults: Arc<Faults>) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), move |body| {
        let faults = faults.clone();
        async move {
            let mut body = body?;
            match faults.draw(Step::Read) {
                None => {}
                Some(Fault::Stall(duration)) => tokio::time::sleep(duration).await,
                Some(Fault::Error) => {
                    return Some((Err(io::Error::other("injected fault: read failed")), None));
                }
                Some(Fault::Truncate) => {
                    let chunk = match body.next().await? {
                        Ok(chunk) => chunk,
                        Err(e) => return Some((Err(e), None)),
                    };
                    let part = chunk.len() / 2;
                    return (part > 0).then(|| (Ok(chunk.slice(..part)), None));
                }
            }
            let item = body.next().await?;
            Some((item, Some(body)))
        }
    }))
}
