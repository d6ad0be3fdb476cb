//! The bytes of one revision as one ordered stream over parts fetched ahead.
//!
//! Each part runs as its own task and passes its chunks through a channel of its own; the
//! stream hands out the front part's chunks as they arrive and starts the next waiting part each
//! time the front one is done, so at most `parallel` parts are started and not yet handed out.
//! A part holds at most its own length, so the stream holds at most `parallel` parts (the first
//! one as large as the first answer), whatever pace the reader keeps.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::part::{self, Sink};
use crate::{BodyStream, Options, PartSource};

/// The bytes `[0, size)` of the revision `source` is pinned to, in order: `first` carries the
/// beginning `[0, first_end)` (the first answer's body), the rest is fetched by `source` in
/// parts, `options.parallel` at a time. Dropping the stream stops every part.
///
/// An error (a part that kept failing, a revision change) is the stream's last item. Must be
/// called within a tokio runtime: the parts are tasks.
pub fn ordered(
    source: Arc<dyn PartSource>,
    first: BodyStream,
    first_end: u64,
    size: u64,
    options: &Options,
) -> BodyStream {
    let cancel = CancellationToken::new();
    let mut stream = Ordered {
        source,
        options: options.clone(),
        waiting: options.plan(first_end.min(size), size).into(),
        running: VecDeque::new(),
        cancel: cancel.clone(),
        _stop_on_drop: cancel.drop_guard(),
        ended: false,
    };
    if first_end > 0 {
        stream.start(0..first_end.min(size), Some(first));
    }
    stream.fill();
    Box::pin(stream)
}

struct Ordered {
    source: Arc<dyn PartSource>,
    options: Options,
    /// Windows not started yet, in order.
    waiting: VecDeque<Range<u64>>,
    /// Parts started, in order; the front one is being handed out.
    running: VecDeque<Running>,
    cancel: CancellationToken,
    _stop_on_drop: DropGuard,
    /// Every byte, or an error, was handed out.
    ended: bool,
}

struct Running {
    window: Range<u64>,
    handed_out: u64,
    chunks: mpsc::UnboundedReceiver<io::Result<Bytes>>,
}

impl Ordered {
    fn start(&mut self, window: Range<u64>, first: Option<BodyStream>) {
        // Unbounded: a part never sends more than its own window, which is the bound.
        let (sender, chunks) = mpsc::unbounded_channel();
        let source = Arc::clone(&self.source);
        let options = self.options.clone();
        let cancel = self.cancel.clone();
        let part = window.clone();
        tokio::spawn(async move {
            let mut sink = Sink::Channel(sender);
            let result = part::fetch(&*source, part, first, &mut sink, &options, &cancel).await;
            if let (Err(e), Sink::Channel(sender)) = (result, sink) {
                let _ = sender.send(Err(io::Error::other(e)));
            }
        });
        self.running.push_back(Running { window, handed_out: 0, chunks });
    }

    /// Starts waiting parts until `parallel` are running.
    fn fill(&mut self) {
        while self.running.len() < self.options.parallel.get() {
            let Some(window) = self.waiting.pop_front() else { return };
            self.start(window, None);
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<io::Result<Bytes>>> {
        self.ended = true;
        self.cancel.cancel();
        self.running.clear();
        self.waiting.clear();
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Ordered {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let Some(front) = this.running.front_mut() else {
                this.ended = true;
                return Poll::Ready(None);
            };
            match ready!(front.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    front.handed_out += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Some(Err(e)) => return this.fail(e),
                None => {
                    let expected = front.window.end - front.window.start;
                    if front.handed_out != expected {
                        // Only a part task that panicked closes its channel early.
                        let message = format!(
                            "part {}-{} ended after {} of {expected} bytes",
                            front.window.start,
                            front.window.end - 1,
                            front.handed_out
                        );
                        return this.fail(io::Error::other(message));
                    }
                    this.running.pop_front();
                    this.fill();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU64, NonZeroUsize};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::PartError;

    /// An object in memory whose revision can change, and whose opens can be made to fail.
    struct Memory {
        bytes: Vec<u8>,
        /// Opens that fail before any byte, then succeed.
        failing_opens: AtomicUsize,
        /// Windows whose body fails half-way once.
        cut: Mutex<Vec<u64>>,
        changed: std::sync::atomic::AtomicBool,
        opens: Mutex<Vec<Range<u64>>>,
        /// Bytes the reader has taken so far, and what it was at each open.
        taken: AtomicU64,
        taken_at_open: Mutex<Vec<(u64, u64)>>,
    }

    impl Memory {
        fn new(size: usize) -> Arc<Memory> {
            Arc::new(Memory {
                bytes: (0..size).map(|i| (i % 251) as u8).collect(),
                failing_opens: AtomicUsize::new(0),
                cut: Mutex::new(Vec::new()),
                changed: Default::default(),
                opens: Mutex::new(Vec::new()),
                taken: AtomicU64::new(0),
                taken_at_open: Mutex::new(Vec::new()),
            })
        }

        fn body(&self, window: Range<u64>) -> BodyStream {
            let bytes =
                Bytes::copy_from_slice(&self.bytes[window.start as usize..window.end as usize]);
            let chunks: Vec<io::Result<Bytes>> = (0..bytes.len())
                .step_by(1000)
                .map(|i| Ok(bytes.slice(i..(i + 1000).min(bytes.len()))))
                .collect();
            Box::pin(futures::stream::iter(chunks))
        }
    }

    #[async_trait::async_trait]
    impl PartSource for Memory {
        async fn open(&self, window: Range<u64>) -> Result<BodyStream, PartError> {
            self.opens.lock().unwrap().push(window.clone());
            if self.changed.load(Ordering::SeqCst) {
                return Err(PartError::Changed("412".into()));
            }
            if self
                .failing_opens
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(PartError::Failed("connection reset".into()));
            }
            let taken = self.taken.load(Ordering::SeqCst);
            self.taken_at_open.lock().unwrap().push((window.start, taken));
            let mut cut = self.cut.lock().unwrap();
            if let Some(i) = cut.iter().position(|start| *start == window.start) {
                cut.remove(i);
                let half = window.start + (window.end - window.start) / 2;
                let body = self.body(window.start..half);
                let broken = futures::stream::iter([Err(io::Error::other("reset"))]);
                return Ok(Box::pin(body.chain(broken)));
            }
            Ok(self.body(window))
        }
    }

    fn options(part_size: u64, parallel: usize) -> Options {
        Options {
            part_size: NonZeroU64::new(part_size).unwrap(),
            parallel: NonZeroUsize::new(parallel).unwrap(),
            single_request_below: 0,
            backoff: Duration::from_millis(1),
            ..Options::default()
        }
    }

    async fn read(
        source: &Arc<Memory>,
        first_end: u64,
        options: &Options,
    ) -> (Vec<u8>, Option<io::Error>) {
        let first = source.body(0..first_end);
        let size = source.bytes.len() as u64;
        let dyn_source: Arc<dyn PartSource> = source.clone();
        let mut stream = ordered(dyn_source, first, first_end, size, options);
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    got.extend_from_slice(&chunk);
                    source.taken.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    // A slow reader: the parts have every chance to run ahead.
                    tokio::task::yield_now().await;
                }
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn the_parts_come_out_in_order_and_whole() {
        let source = Memory::new(100_000);
        let (got, error) = read(&source, 30_000, &options(7_000, 4)).await;
        assert!(error.is_none(), "{error:?}");
        assert!(got == source.bytes);
        let opens = source.opens.lock().unwrap().clone();
        assert_eq!(opens.len(), 10, "one request per part after the first: {opens:?}");
        assert_eq!(opens.first(), Some(&(30_000..37_000)));
        assert_eq!(opens.last(), Some(&(93_000..100_000)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_starts_only_when_fewer_than_parallel_are_ahead_of_the_reader() {
        let source = Memory::new(1_000_000);
        let (got, error) = read(&source, 10_000, &options(10_000, 3)).await;
        assert!(error.is_none(), "{error:?}");
        assert!(got == source.bytes);
        // Part k (of 10,000 bytes) may start once parts up to k - 3 are handed out.
        for (start, taken) in source.taken_at_open.lock().unwrap().iter() {
            assert!(taken + 2 * 10_000 >= *start, "part at {start} opened after {taken} bytes");
        }
    }

    #[tokio::test]
    async fn a_failed_part_is_asked_again_from_its_first_missing_byte() {
        let source = Memory::new(50_000);
        source.cut.lock().unwrap().push(20_000);
        source.failing_opens.store(2, Ordering::SeqCst);
        let (got, error) = read(&source, 10_000, &options(10_000, 2)).await;
        assert!(error.is_none(), "{error:?}");
        assert!(got == source.bytes);
        let opens = source.opens.lock().unwrap().clone();
        assert!(opens.contains(&(25_000..30_000)), "the cut part resumed at its middle: {opens:?}");
    }

    #[tokio::test]
    async fn a_part_that_keeps_failing_ends_the_stream_with_an_error() {
        let source = Memory::new(50_000);
        source.failing_opens.store(usize::MAX, Ordering::SeqCst);
        let mut options = options(10_000, 2);
        options.retries = 2;
        let (got, error) = read(&source, 10_000, &options).await;
        assert_eq!(got.len(), 10_000, "the first answer's bytes came out");
        let error = error.expect("an error").to_string();
        assert!(error.contains("failed 3 times"), "{error}");
    }

    #[tokio::test]
    async fn a_revision_change_ends_the_stream_with_an_error_and_no_foreign_byte() {
        let source = Memory::new(50_000);
        source.changed.store(true, Ordering::SeqCst);
        let (got, error) = read(&source, 10_000, &options(10_000, 2)).await;
        assert!(got == source.bytes[..10_000]);
        let error = error.expect("an error").to_string();
        assert!(error.contains("changed"), "{error}");
        let opens = source.opens.lock().unwrap().clone();
        let asked = opens.iter().filter(|w| **w == (10_000..20_000)).count();
        assert_eq!(asked, 1, "a change is not retried: {opens:?}");
    }
}
