//! A download into a file: parts written in place, and a record beside the file (`FILE` +
//! [`RECORD_SUFFIX`]) that lets a later run resume an interrupted download.
//!
//! The record names the URL, the pinned entity-tag, the size and, per part, how many of its bytes
//! are in the file. It is rewritten every [`CHECKPOINT_EVERY`] and whenever a part completes:
//! the counts are read first, then the file's data is flushed to the disk, then the record is
//! replaced by a rename, so it never claims a byte that a crash could still lose. The record is
//! removed once the whole file is on the disk.
//!
//! A resumed run asks only for the missing bytes, pinned to the recorded entity-tag: if the
//! object changed meanwhile, the first answer says so and the download starts over. An object
//! without a strong entity-tag, or from a server that ignores Range, comes as one plain GET that
//! cannot be resumed.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::http::{HttpParts, Target, Wanted, body, error_chain, parse_content_range, strong_etag};
use crate::part::{self, Sink};
use crate::{BodyStream, Error, Observer, Options, PartSource};

/// Appended to the file's name to name its record.
pub const RECORD_SUFFIX: &str = ".rangecache";
/// How often the record is brought up to date while parts are running; what a killed download
/// fetches again is at most this long's worth of bytes plus one part per request in flight.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// What a finished download did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The object's size.
    pub size: u64,
    /// Bytes found in the file from an interrupted run and not fetched again.
    pub resumed: u64,
    /// Times the object changed during the download and it started over.
    pub restarts: u32,
    /// Whether the object came in ranged parts pinned to its entity-tag (false: one plain GET).
    pub ranged: bool,
}

/// Downloads `target` into `path` in parts, `options.parallel` at a time, and returns once the
/// whole object is in the file and on the disk. With `resume`, an interrupted download of the
/// same URL recorded beside `path` continues where it stopped, if the object has not changed.
///
/// On failure the file and its record stay, so a later run with `resume` continues.
pub async fn download(
    target: &Target,
    path: &Path,
    options: &Options,
    resume: bool,
    observer: Arc<dyn Observer>,
) -> Result<Outcome, Error> {
    let mut interrupted = if resume { Record::load(path, target.url()).await } else { None };
    let mut restarts = 0;
    loop {
        let attempt = match interrupted.take() {
            Some((record, file)) => {
                let resumed = record.present();
                run(target, path, file, record, None, options, &observer)
                    .await
                    .map(|size| Outcome { size, resumed, restarts: 0, ranged: true })
            }
            None => start(target, path, options, &observer).await,
        };
        match attempt {
            Err(Error::Changed(why)) => {
                if restarts == options.restarts {
                    return Err(Error::KeptChanging { attempts: restarts + 1, last: why });
                }
                restarts += 1;
                tracing::info!(%why, restarts, "the object changed; starting over");
                observer.restarting(&why);
            }
            other => return other.map(|outcome| Outcome { restarts, ..outcome }),
        }
    }
}

/// The record's path for the file at `path`.
pub fn record_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(RECORD_SUFFIX);
    path.with_file_name(name)
}

/// A download from the start: the first answer pins the revision and sizes the file.
async fn start(
    target: &Target,
    path: &Path,
    options: &Options,
    observer: &Arc<dyn Observer>,
) -> Result<Outcome, Error> {
    let wanted = match options.first_request_end() {
        Some(end) => Wanted::Window(0..end),
        None => Wanted::From(0),
    };
    let response = send(target.get(wanted, None)).await?;
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {}
        // The server ignores Range: its answer is the whole object.
        StatusCode::OK => return whole(path, response, observer).await,
        // An empty object has no byte to ask for; a plain GET answers it.
        StatusCode::RANGE_NOT_SATISFIABLE => return plain(target, path, observer).await,
        status => return Err(Error::Status(status.as_u16())),
    }
    let range = response.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
    let Some((first, size)) = range.and_then(parse_content_range).filter(|(w, _)| w.start == 0)
    else {
        return Err(Error::Protocol(format!("a 206 to a range from byte 0 with {range:?}")));
    };
    let Some(etag) = strong_etag(response.headers()) else {
        if first.end == size {
            return whole(path, response, observer).await;
        }
        // Nothing pins the next parts to this revision: read it in one answer instead.
        drop(response);
        return plain(target, path, observer).await;
    };
    let rest = options.plan(first.end, size);
    let windows = std::iter::once(first).chain(rest);
    let parts = windows.map(|w| RecordPart { start: w.start, end: w.end, present: 0 }).collect();
    let record = Record { url: target.url().to_owned(), etag, size, parts };
    let file = create(path, Some(size))?;
    record.save(path).await?;
    let size = run(target, path, file, record, Some(body(response)), options, observer).await?;
    Ok(Outcome { size, resumed: 0, restarts: 0, ranged: true })
}

/// Runs the record's missing parts, `first` (the first answer's body) feeding the first one.
/// Returns the size once every part is in the file and on the disk.
async fn run(
    target: &Target,
    path: &Path,
    file: std::fs::File,
    mut record: Record,
    mut first: Option<BodyStream>,
    options: &Options,
    observer: &Arc<dyn Observer>,
) -> Result<u64, Error> {
    let file = Arc::new(file);
    let shown: Arc<str> = path.display().to_string().into();
    let source: Arc<dyn PartSource> =
        Arc::new(HttpParts::new(target.clone(), record.etag.clone(), record.size));
    let present: Vec<Arc<AtomicU64>> =
        record.parts.iter().map(|part| Arc::new(AtomicU64::new(part.present))).collect();
    let mut waiting: VecDeque<usize> =
        (0..record.parts.len()).filter(|&i| !record.parts[i].is_complete()).collect();
    observer.started(Some(record.size), record.present());
    let cancel = CancellationToken::new();
    let mut parts = JoinSet::new();
    let mut checkpoint = tokio::time::interval(CHECKPOINT_EVERY);
    checkpoint.tick().await;
    let mut part_ended = false;
    let result = loop {
        while parts.len() < options.parallel.get() {
            let Some(i) = waiting.pop_front() else { break };
            let part = &record.parts[i];
            let window = part.start + part.present..part.end;
            let mut sink = Sink::File {
                file: Arc::clone(&file),
                path: Arc::clone(&shown),
                present: Arc::clone(&present[i]),
                observer: Arc::clone(observer),
            };
            let (source, options, cancel) = (Arc::clone(&source), options.clone(), cancel.clone());
            let first = first.take();
            parts.spawn(async move {
                part::fetch(&*source, window, first, &mut sink, &options, &cancel).await
            });
        }
        // A part ended: record it once the next one is under way, so a slow flush of the file
        // delays no request.
        if std::mem::take(&mut part_ended)
            && !parts.is_empty()
            && let Err(e) = record.checkpoint(path, &file, &present).await
        {
            break Err(e);
        }
        let Some(joined) = (tokio::select! {
            joined = parts.join_next() => joined,
            _ = checkpoint.tick() => {
                if let Err(e) = record.checkpoint(path, &file, &present).await {
                    break Err(e);
                }
                continue;
            }
        }) else {
            break Ok(());
        };
        match joined {
            Ok(Ok(())) => part_ended = true,
            Ok(Err(e)) => break Err(e),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => break Err(Error::Protocol(format!("a part stopped: {e}"))),
        }
    };
    // Every part stops, and its write under way lands, before the record is written for the
    // last time or the file is touched again.
    cancel.cancel();
    while parts.join_next().await.is_some() {}
    if let Err(e) = result {
        // What the parts wrote stays recorded for --resume.
        if let Err(not_recorded) = record.checkpoint(path, &file, &present).await {
            tracing::warn!(error = %not_recorded, "cannot record the download's progress");
        }
        return Err(e);
    }
    let flushed = Arc::clone(&file);
    blocking(move || flushed.sync_data()).await.map_err(|e| io_error(path, e))?;
    remove_if_present(&record_path(path)).await?;
    Ok(record.size)
}

/// One plain GET of the whole object, for a server that cannot pin parts.
async fn plain(
    target: &Target,
    path: &Path,
    observer: &Arc<dyn Observer>,
) -> Result<Outcome, Error> {
    let response = send(target.get(Wanted::Whole, None)).await?;
    match response.status() {
        StatusCode::OK => whole(path, response, observer).await,
        status => Err(Error::Status(status.as_u16())),
    }
}

/// Writes an answer that holds the whole object into the file, in order.
async fn whole(
    path: &Path,
    response: reqwest::Response,
    observer: &Arc<dyn Observer>,
) -> Result<Outcome, Error> {
    let size = response.content_length();
    let file = Arc::new(create(path, None)?);
    remove_if_present(&record_path(path)).await?;
    observer.started(size, 0);
    let mut body = body(response);
    let mut at = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Request(e.to_string()))?;
        let n = chunk.len() as u64;
        let written = Arc::clone(&file);
        blocking(move || std::os::unix::fs::FileExt::write_all_at(&*written, &chunk, at))
            .await
            .map_err(|e| io_error(path, e))?;
        at += n;
        observer.advanced(n);
    }
    if size.is_some_and(|size| size != at) {
        return Err(Error::Protocol(format!("the body ended after {at} of {size:?} bytes")));
    }
    blocking(move || file.sync_data()).await.map_err(|e| io_error(path, e))?;
    Ok(Outcome { size: at, resumed: 0, restarts: 0, ranged: false })
}

/// The record of an interrupted download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    url: String,
    /// The pinned strong entity-tag, quotes included.
    etag: String,
    size: u64,
    /// Every part of the object, in order, with how much of each is in the file.
    parts: Vec<RecordPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordPart {
    start: u64,
    end: u64,
    /// Bytes from `start` that are in the file.
    present: u64,
}

impl RecordPart {
    fn is_complete(&self) -> bool {
        self.start + self.present == self.end
    }
}

impl Record {
    /// The record beside `path` and the file it describes, if they describe an interrupted
    /// download of `url` that can go on; says why not otherwise.
    async fn load(path: &Path, url: &str) -> Option<(Record, std::fs::File)> {
        let record_path = record_path(path);
        let refuse = |why: &str| {
            tracing::warn!(record = %record_path.display(), "cannot resume: {why}; starting over");
            None
        };
        let text = match tokio::fs::read(&record_path).await {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return refuse("no record of an interrupted download");
            }
            Err(e) => return refuse(&e.to_string()),
        };
        let record: Record = match serde_json::from_slice(&text) {
            Ok(record) => record,
            Err(e) => return refuse(&format!("the record does not parse: {e}")),
        };
        if record.url != url {
            return refuse(&format!("the record is of {}", record.url));
        }
        if !record.is_consistent() {
            return refuse("the record's parts do not cover the object");
        }
        let file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) => return refuse(&e.to_string()),
        };
        match file.metadata() {
            Ok(meta) if meta.len() == record.size => Some((record, file)),
            Ok(meta) => refuse(&format!("the file has {} bytes, not {}", meta.len(), record.size)),
            Err(e) => refuse(&e.to_string()),
        }
    }

    /// The parts follow each other from byte 0 to the size, each with no more bytes present than
    /// it holds.
    fn is_consistent(&self) -> bool {
        let mut at = 0;
        for part in &self.parts {
            if part.start != at || part.end <= part.start || part.present > part.end - part.start {
                return false;
            }
            at = part.end;
        }
        at == self.size
    }

    fn present(&self) -> u64 {
        self.parts.iter().map(|part| part.present).sum()
    }

    /// Records the bytes the parts have written so far, once they are on the disk.
    async fn checkpoint(
        &mut self,
        path: &Path,
        file: &Arc<std::fs::File>,
        present: &[Arc<AtomicU64>],
    ) -> Result<(), Error> {
        // Counts first, then the flush: every byte counted was written before the flush began.
        for (part, present) in self.parts.iter_mut().zip(present) {
            part.present = present.load(Ordering::Acquire);
        }
        let flushed = Arc::clone(file);
        blocking(move || flushed.sync_data()).await.map_err(|e| io_error(path, e))?;
        self.save(path).await
    }

    /// Replaces the record beside `path` at once (write aside, then rename).
    async fn save(&self, path: &Path) -> Result<(), Error> {
        let record_path = record_path(path);
        let mut aside = record_path.clone().into_os_string();
        aside.push(".new");
        let text = serde_json::to_vec(self).expect("a record always serialises");
        tokio::fs::write(&aside, text).await.map_err(|e| io_error(&record_path, e))?;
        tokio::fs::rename(&aside, &record_path).await.map_err(|e| io_error(&record_path, e))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
    request.send().await.map_err(|e| Error::Request(error_chain(&e)))
}

/// The file at `path`, emptied, `size` bytes long when given (its parts are written in place).
fn create(path: &Path, size: Option<u64>) -> Result<std::fs::File, Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    if let Some(size) = size {
        file.set_len(size).map_err(|e| io_error(path, e))?;
    }
    Ok(file)
}

async fn remove_if_present(path: &Path) -> Result<(), Error> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

async fn blocking(f: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<()> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(parts: &[(u64, u64, u64)], size: u64) -> Record {
        Record {
            url: "http://example.invalid/object".into(),
            etag: "\"v1\"".into(),
            size,
            parts: parts
                .iter()
                .map(|&(start, end, present)| RecordPart { start, end, present })
                .collect(),
        }
    }

    #[test]
    fn the_record_sits_beside_the_file() {
        assert_eq!(
            record_path(Path::new("/tmp/a/big.bin")),
            Path::new("/tmp/a/big.bin.rangecache")
        );
    }

    #[test]
    fn only_a_record_whose_parts_tile_the_object_is_resumed() {
        assert!(record(&[(0, 10, 10), (10, 25, 3)], 25).is_consistent());
        assert_eq!(record(&[(0, 10, 10), (10, 25, 3)], 25).present(), 13);
        assert!(!record(&[(0, 10, 10), (11, 25, 0)], 25).is_consistent(), "a gap");
        assert!(!record(&[(0, 10, 10), (10, 20, 0)], 25).is_consistent(), "short of the size");
        assert!(!record(&[(0, 10, 11)], 10).is_consistent(), "more present than the part holds");
        assert!(!record(&[(0, 0, 0), (0, 10, 0)], 10).is_consistent(), "an empty part");
    }
}
