//! A parallel ranged downloader: one object fetched as concurrent ranged reads (RFC 9110 §14)
//! of one revision.
//!
//! A single HTTP/1.1 stream from an object store tops out near 90 MB/s; reading the object as
//! several ranged requests at once multiplies that. The first answer names the revision (its
//! strong entity-tag) and the size. Every later part is pinned to that revision (`If-Match` and
//! `If-Range` over HTTP, `If-Match` to S3), and its answer must name the same entity-tag and the
//! same size, so a download never splices two revisions, even from a server that ignores the
//! preconditions. A failed part is asked for again, from its first missing byte, a bounded number
//! of times with a doubling wait in between.
//!
//! Two shapes of result:
//!
//! * [`ordered`]: the bytes as one stream, in order, with the parts after the one being handed out
//!   fetched ahead by a bounded window, so memory stays under `parallel` parts. A revision change
//!   ends the stream with an error: bytes already handed out cannot be taken back. The tiers'
//!   whole-object copies into tier 0 read this way.
//! * [`file::download`]: parts written in place into a file, with a record beside it that lets a
//!   later run resume an interrupted download; a revision change starts the download over
//!   against the new revision. `rangecache get` is this.
//!
//! Parts come from a [`PartSource`]: [`http::HttpParts`] for any server that honours Range and
//! If-Range (rangecache, cachew, nginx serving a file), or the s3 tier's over opendal.

use std::io;
use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

pub mod file;
pub mod http;
mod ordered;
mod part;

pub use ordered::ordered;

/// The bytes of one answer, in order.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// How an object is split and fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Bytes asked for by one ranged request after the first.
    pub part_size: NonZeroU64,
    /// Requests in flight at once. With 1 the object is read as one stream (still resumable,
    /// and a failure is retried from the first missing byte).
    pub parallel: NonZeroUsize,
    /// The first request asks for this many bytes (or `part_size`, if larger), so an object no
    /// larger than this is read with exactly one request.
    pub single_request_below: u64,
    /// How many times one part is asked for again after a failure before the download fails.
    pub retries: u32,
    /// The wait before a part's first retry; it doubles with every further retry of that part,
    /// plus up to half again at random so parts that failed together do not retry together.
    pub backoff: Duration,
    /// How many times a download into a file starts over because the object changed.
    pub restarts: u32,
}

impl Default for Options {
    /// 8 parts of 8 MiB in flight, the first request asking for one part (so an object of up to
    /// 8 MiB is one request), 3 retries from 200 ms, 3 restarts. BENCHMARKS.md has the figures:
    ///
    /// * 8 in flight: against streams capped at 90 MB/s, 7.8 times one stream, for a window of
    ///   64 MiB; 16 in flight gave 10 times for twice the memory and connections.
    /// * 8 MiB parts: AWS's S3 performance guidelines name 8 or 16 MB as typical sizes for
    ///   ranged GETs, and the s3 tier uploads in parts of 8 MiB, so the GETs align with them.
    /// * A first answer of one part, not 16 MiB: the ordered stream hands parts out in order, so
    ///   a first answer twice as long as the others holds the window for a whole part's time
    ///   (6.3 times one stream instead of 7.8). Objects of 8 to 16 MiB take two requests, which
    ///   run at once.
    fn default() -> Options {
        Options {
            part_size: NonZeroU64::new(8 << 20).expect("not zero"),
            parallel: NonZeroUsize::new(8).expect("not zero"),
            single_request_below: 8 << 20,
            retries: 3,
            backoff: Duration::from_millis(200),
            restarts: 3,
        }
    }
}

impl Options {
    /// The bytes `[0, end)` the first request asks for; `None` asks for the whole object, as a
    /// single stream does.
    pub fn first_request_end(&self) -> Option<u64> {
        (self.parallel.get() > 1).then(|| self.single_request_below.max(self.part_size.get()))
    }

    /// The windows of `[from, size)`, one per request, in order.
    pub fn plan(&self, from: u64, size: u64) -> Vec<Range<u64>> {
        let step = if self.parallel.get() > 1 { self.part_size.get() } else { u64::MAX };
        let mut windows = Vec::new();
        let mut start = from;
        while start < size {
            let end = start.saturating_add(step).min(size);
            windows.push(start..end);
            start = end;
        }
        windows
    }
}

/// Where the parts of one pinned revision come from.
#[async_trait::async_trait]
pub trait PartSource: Send + Sync + 'static {
    /// Opens exactly the bytes of `window` of the pinned revision, after checking that the
    /// answer is about that revision.
    async fn open(&self, window: Range<u64>) -> Result<BodyStream, PartError>;
}

/// Why a part could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// The source holds another revision now, or none: going on would splice two.
    #[error("the object changed: {0}")]
    Changed(String),
    /// This attempt failed (a connection, a timeout, a 5xx); another may succeed.
    #[error("{0}")]
    Failed(String),
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object changed (or vanished) during the download.
    #[error("the object changed during the download: {0}")]
    Changed(String),
    /// The object changed during every attempt the options allow.
    #[error("the object changed during {attempts} attempts in a row; last: {last}")]
    KeptChanging {
        /// Attempts made.
        attempts: u32,
        /// What the last change looked like.
        last: String,
    },
    /// One part failed more often than the options allow.
    #[error(
        "bytes {start}-{end} failed {attempts} times; last: {last}",
        start = .window.start,
        end = .window.end - 1
    )]
    PartFailed {
        /// The bytes still missing from the part.
        window: Range<u64>,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The first request got no answer.
    #[error("request failed: {0}")]
    Request(String),
    /// The first answer was an error status.
    #[error("the server answered {0}")]
    Status(u16),
    /// The first answer could not be understood.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Writing the file or its record failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What a download into a file reports as it goes; every method may be called from several
/// tasks at once.
pub trait Observer: Send + Sync {
    /// The download (re)started: `size` bytes in all when known, `present` of them already in the
    /// file from an interrupted run.
    fn started(&self, size: Option<u64>, present: u64) {
        let _ = (size, present);
    }
    /// `n` more bytes are in the file.
    fn advanced(&self, n: u64) {
        let _ = n;
    }
    /// The object changed; the download starts over against the new revision.
    fn restarting(&self, why: &str) {
        let _ = why;
    }
}

/// An observer that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(part_size: u64, parallel: usize) -> Options {
        Options {
            part_size: NonZeroU64::new(part_size).unwrap(),
            parallel: NonZeroUsize::new(parallel).unwrap(),
            single_request_below: 0,
            ..Options::default()
        }
    }

    #[test]
    fn a_plan_covers_the_rest_in_parts_of_the_part_size() {
        assert_eq!(options(10, 4).plan(5, 30), vec![5..15, 15..25, 25..30]);
        assert_eq!(options(10, 4).plan(30, 30), Vec::<Range<u64>>::new());
        assert_eq!(options(10, 1).plan(5, 30), vec![5..30], "one stream is one part");
    }

    #[test]
    fn the_first_request_covers_small_objects_whole() {
        let defaults = Options::default();
        assert_eq!(defaults.first_request_end(), Some(8 << 20));
        assert_eq!(options(8 << 20, 1).first_request_end(), None, "one stream asks for all");
        assert_eq!(options(32 << 20, 8).first_request_end(), Some(32 << 20));
    }
}
