//! One part: a window of the pinned revision fetched into a sink, asked for again from its first
//! missing byte after a failure, a bounded number of times with a doubling wait.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{BodyStream, Error, Observer, Options, PartError, PartSource};

/// Where one part's bytes go.
pub(crate) enum Sink {
    /// In order, to the consumer of an ordered stream.
    Channel(mpsc::UnboundedSender<io::Result<Bytes>>),
    /// In place, into a file.
    File {
        file: Arc<std::fs::File>,
        path: Arc<str>,
        /// Bytes of the part in the file (handed to the kernel), counted from the part's start.
        present: Arc<AtomicU64>,
        observer: Arc<dyn Observer>,
    },
}

/// Fetches `window` into `sink`, starting with `first` when the window's beginning is already
/// open. Returns early (`Ok`) once `cancel` fires; a write already under way completes first,
/// so no write lands after this returns.
pub(crate) async fn fetch(
    source: &dyn PartSource,
    window: Range<u64>,
    mut first: Option<BodyStream>,
    sink: &mut Sink,
    options: &Options,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let mut at = window.start;
    let mut failures = 0;
    while at < window.end {
        let failure = match first.take() {
            Some(body) => pump(body, &mut at, window.end, sink, cancel).await,
            None => {
                let opened = tokio::select! {
                    opened = source.open(at..window.end) => opened,
                    () = cancel.cancelled() => return Ok(()),
                };
                match opened {
                    Ok(body) => pump(body, &mut at, window.end, sink, cancel).await,
                    Err(PartError::Changed(why)) => return Err(Error::Changed(why)),
                    Err(PartError::Failed(why)) => Err(Attempt::Source(why)),
                }
            }
        };
        let why = match failure {
            Ok(()) => continue,
            Err(Attempt::Cancelled) => return Ok(()),
            Err(Attempt::Sink(source)) => return Err(sink.error(source)),
            Err(Attempt::Source(why)) => why,
        };
        failures += 1;
        if failures > options.retries {
            return Err(Error::PartFailed {
                window: at..window.end,
                attempts: failures,
                last: why,
            });
        }
        let wait = backoff(options.backoff, failures);
        tracing::debug!(start = at, end = window.end, failures, ?wait, error = %why, "retrying");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
    Ok(())
}

impl Sink {
    async fn put(&mut self, at: u64, chunk: Bytes) -> io::Result<()> {
        match self {
            Sink::Channel(sender) => sender
                .send(Ok(chunk))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away")),
            Sink::File { file, present, observer, .. } => {
                let n = chunk.len() as u64;
                let file = Arc::clone(file);
                tokio::task::spawn_blocking(move || write_at(&file, &chunk, at))
                    .await
                    .map_err(io::Error::other)??;
                present.fetch_add(n, Ordering::Release);
                observer.advanced(n);
                Ok(())
            }
        }
    }

    fn error(&self, source: io::Error) -> Error {
        match self {
            Sink::Channel(_) => Error::Io { path: "the ordered stream".into(), source },
            Sink::File { path, .. } => Error::Io { path: path.to_string(), source },
        }
    }
}

/// How one attempt ended early.
enum Attempt {
    /// The source failed or misbehaved; worth another attempt.
    Source(String),
    /// The bytes could not be delivered; another attempt would fail the same way.
    Sink(io::Error),
    Cancelled,
}

/// Moves `body` into `sink` from `at` until `end`, advancing `at` past every byte delivered.
async fn pump(
    mut body: BodyStream,
    at: &mut u64,
    end: u64,
    sink: &mut Sink,
    cancel: &CancellationToken,
) -> Result<(), Attempt> {
    loop {
        let next = tokio::select! {
            next = body.next() => next,
            () = cancel.cancelled() => return Err(Attempt::Cancelled),
        };
        match next {
            None if *at == end => return Ok(()),
            None => {
                return Err(Attempt::Source(format!("the body ended {} bytes short", end - *at)));
            }
            Some(Err(e)) => return Err(Attempt::Source(e.to_string())),
            Some(Ok(chunk)) => {
                let n = chunk.len() as u64;
                if n > end - *at {
                    return Err(Attempt::Source(format!(
                        "the body runs past byte {} of the part",
                        end - 1
                    )));
                }
                sink.put(*at, chunk).await.map_err(Attempt::Sink)?;
                *at += n;
            }
        }
    }
}

/// The project builds for Unix only (the host uses rustix); positional writes let every part
/// write through one shared handle.
fn write_at(file: &std::fs::File, chunk: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, chunk, at)
}

/// The wait before retry number `failures` (from 1): `first` doubled for every retry before it,
/// plus up to half of that at random.
fn backoff(first: Duration, failures: u32) -> Duration {
    let base = first.saturating_mul(1 << (failures - 1).min(16));
    let jitter_ms = u64::try_from(base.as_millis() / 2).unwrap_or(u64::MAX);
    base + Duration::from_millis(fastrand::u64(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_and_adds_at_most_half() {
        let first = Duration::from_millis(200);
        for (failures, base) in [(1, 200), (2, 400), (3, 800)] {
            let wait = backoff(first, failures).as_millis();
            assert!((base..=base + base / 2).contains(&wait), "retry {failures}: {wait} ms");
        }
    }
}
