//! `rangecache-soak`: concurrent readers (whole, ranged, conditional, HEAD) and writers on a
//! few hot keys through a chain of two real servers, A (memory, then a remote tier pointing at
//! B) and B (disk), for as long as asked. Every answer is checked against the versions written
//! ([`rangecache_tests::model`]); a body that matches no written version at the offsets it
//! advertises is an error, and so is any 5xx, 404 (every key is written before the readers
//! start and none is deleted), failed write or cut connection. The one exception is a 503
//! that a second asking answers: the server's word that the object kept changing under the
//! read, counted and printed apart. It prints operations per second, the errors (which must
//! be 0) and the peak resident set of both servers.
//!
//! `cargo xtask soak --seconds N` runs it; `cargo xtask test` runs it for 60 seconds.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use rangecache_tests::model::{self, Read, Spec, Verdict, Version, Versions};
use rangecache_tests::process::Server;
use rangecache_tests::{RunOptions, client};

const NS: &str = "soak";
/// The hot keys every client reads and writes.
const KEYS: usize = 8;
/// One client in this many writes; the rest read.
const WRITER_EVERY: usize = 4;
/// The longest any one operation may take before the soak calls it stuck.
const OP_DEADLINE: Duration = Duration::from_secs(30);
/// How often a progress line is printed.
const REPORT_EVERY: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let defaults = RunOptions { duration: Duration::from_secs(60), seed: 1, clients: 12 };
    let options = match RunOptions::parse(std::env::args().skip(1), defaults) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("rangecache-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rangecache-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Soak {
    client: reqwest::Client,
    a: String,
    versions: Versions,
    n_versions: AtomicU64,
    /// (operation, outcome) → count.
    tallies: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    errors: Mutex<Vec<String>>,
    n_ops: AtomicU64,
}

impl Soak {
    fn tally(&self, op: &'static str, outcome: &'static str) {
        *self
            .tallies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((op, outcome))
            .or_default() += 1;
        self.n_ops.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, op: &'static str, what: String) {
        self.tally(op, "error");
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        // Every error counts; the first few are shown in full.
        if errors.len() < 20 {
            eprintln!("ERROR: {what}");
        }
        errors.push(what);
    }

    fn n_errors(&self) -> usize {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn url(&self, key: &str) -> String {
        format!("{}/api/v1/object/{NS}/{key}", self.a)
    }
}

async fn run(options: &RunOptions) -> Result<bool> {
    let work = tempfile::Builder::new().prefix("rangecache-soak-").tempdir()?;
    let b_config = format!(
        "[[tier]]\nname = \"disk\"\nkind = \"disk\"\npath = \"{}\"\nmax_size = \"2GiB\"\n",
        work.path().join("b").join("disk").display()
    );
    let mut b = Server::start("B", &work.path().join("b"), &b_config, &[])?;
    let a_config = format!(
        "[[tier]]\nname = \"memory\"\nkind = \"memory\"\nmax_size = \"64MiB\"\n\n\
         [[tier]]\nname = \"upstream\"\nkind = \"remote\"\nurl = \"{}\"\n",
        b.base
    );
    let mut a = Server::start("A", &work.path().join("a"), &a_config, &[])?;
    let soak = Arc::new(Soak {
        client: client()?,
        a: a.base.clone(),
        versions: Versions::default(),
        n_versions: AtomicU64::new(0),
        tallies: Mutex::new(BTreeMap::new()),
        errors: Mutex::new(Vec::new()),
        n_ops: AtomicU64::new(0),
    });
    let n_writers = options.clients.div_ceil(WRITER_EVERY);
    eprintln!(
        "soak: seed {}, {:?}, {} readers and {n_writers} writers on {KEYS} hot keys through A \
         (memory, remote) → B (disk)",
        options.seed,
        options.duration,
        options.clients - n_writers
    );
    let mut rng = fastrand::Rng::with_seed(options.seed);
    for key in keys() {
        let version = new_version(&soak, &key, &mut rng);
        if !write(&soak, &key, version).await {
            bail!("the first write of {key} failed; the soak cannot start");
        }
    }

    let started = Instant::now();
    let until = started + options.duration;
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..options.clients {
        let soak = soak.clone();
        let seed = options.seed.wrapping_mul(1000).wrapping_add(id as u64);
        let writes = id % WRITER_EVERY == 0;
        clients.spawn(async move { client_loop(&soak, seed, writes, until).await });
    }
    let mut last = (Instant::now(), 0);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    loop {
        tokio::select! {
            done = clients.join_next() => match done {
                Some(done) => done.context("a client task panicked")?,
                None => break,
            },
            _ = ticker.tick() => {
                let n = soak.n_ops.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), n);
                eprintln!(
                    "soak: {:>4.0?}: {n} operations, {rate:.0}/s, {} errors, RSS A {} MiB, B {} MiB",
                    started.elapsed(),
                    soak.n_errors(),
                    a.rss_kib().unwrap_or(0) / 1024,
                    b.rss_kib().unwrap_or(0) / 1024,
                );
            }
        }
    }
    let elapsed = started.elapsed();
    let (peak_a, peak_b) = (a.peak_rss_kib(), b.peak_rss_kib());
    for (name, server) in [("A", &mut a), ("B", &mut b)] {
        let status = server.terminate(Duration::from_secs(30))?;
        if !status.success() {
            soak.error("stop", format!("{name} exited with {status} after SIGTERM"));
        }
        if server.log().contains("panicked") {
            soak.error("stop", format!("{name} panicked:\n{}", server.log()));
        }
    }

    let n_ops = soak.n_ops.load(Ordering::Relaxed);
    let n_errors = soak.n_errors();
    let mib = |kib: Option<u64>| {
        kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
    };
    println!(
        "soak: {n_ops} operations in {elapsed:.1?}: {:.0} operations/s",
        n_ops as f64 / elapsed.as_secs_f64()
    );
    for ((op, outcome), n) in soak.tallies.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        println!("  {op} {outcome}: {n}");
    }
    println!("versions written: {}", soak.n_versions.load(Ordering::Relaxed));
    let retried: u64 = soak
        .tallies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|((_, outcome), _)| *outcome == "503 retried")
        .map(|(_, n)| n)
        .sum();
    println!("503 answers asked again (the object changed under the read each time): {retried}");
    println!("peak RSS: A {} MiB, B {} MiB", mib(peak_a), mib(peak_b));
    println!("errors: {n_errors}");
    Ok(n_errors == 0 && n_ops > 0)
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("hot{i}")).collect()
}

async fn client_loop(soak: &Soak, seed: u64, writes: bool, until: Instant) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let keys = keys();
    while Instant::now() < until {
        let key = &keys[rng.usize(..keys.len())];
        let (name, done) = if writes {
            let version = new_version(soak, key, &mut rng);
            ("put", tokio::time::timeout(OP_DEADLINE, write(soak, key, version)).await.map(drop))
        } else {
            let read = pick_read(soak, key, &mut rng);
            let name = read.kind();
            (name, tokio::time::timeout(OP_DEADLINE, read_with_retry(soak, key, read)).await)
        };
        if done.is_err() {
            soak.error(name, format!("{name} of {key} did not end within {OP_DEADLINE:?}"));
        }
    }
}

fn new_version(soak: &Soak, key: &str, rng: &mut fastrand::Rng) -> Version {
    let n = soak.n_versions.fetch_add(1, Ordering::Relaxed);
    let len = match rng.u32(0..100) {
        0..3 => 0,
        3..40 => rng.u64(1..=4096),
        40..90 => rng.u64(4096..=64 << 10),
        _ => rng.u64(64 << 10..=512 << 10),
    };
    Version { etag: format!("\"{key}-{n}\""), len, seed: rng.u64(..) }
}

fn pick_read(soak: &Soak, key: &str, rng: &mut fastrand::Rng) -> Read {
    let known = soak.versions.of(key);
    // The latest versions are the ones the tiers hold; older ones exercise the misses.
    let version = &known[known.len() - 1 - rng.usize(..known.len().min(3))];
    let len = version.len;
    let first = rng.u64(0..=len);
    let spec = match rng.u32(0..3) {
        0 => Spec::FromTo(first, first + rng.u64(0..=64 << 10)),
        1 => Spec::From(first),
        _ => Spec::Suffix(rng.u64(1..=len.max(1) + 10)),
    };
    match rng.u32(0..100) {
        0..35 => Read::Whole,
        35..65 => Read::Range(spec),
        65..70 => Read::Head,
        70..82 => Read::IfNoneMatch(version.etag.clone()),
        82..88 => Read::IfMatch(version.etag.clone()),
        _ => Read::IfRange(version.etag.clone(), spec),
    }
}

/// PUTs `version` through A; true if it was stored.
async fn write(soak: &Soak, key: &str, version: Version) -> bool {
    soak.versions.add(key, version.clone());
    let sent = soak.client.put(soak.url(key)).header("etag", &version.etag).body(version.bytes());
    let response = match sent.send().await {
        Ok(response) => response,
        Err(e) => {
            soak.error("put", format!("PUT {key}: {e}"));
            return false;
        }
    };
    let status = response.status();
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if status != 200 || etag.as_deref() != Some(&version.etag) {
        let body = response.text().await.unwrap_or_default();
        soak.error("put", format!("PUT {key} answered {status} {etag:?}: {}", body.trim()));
        return false;
    }
    soak.tally("put", "200");
    true
}

/// One read, checked. A 503 is asked once more, as RFC 9110 §15.6.4 lets a client do, and
/// counted apart (`503 retried`): the server answers it when the object changed under the read
/// at every one of its attempts (`read::MAX_WALKS`), which a key rewritten several times a
/// second makes happen a few times a minute. Any other 5xx, and a 503 to the second asking,
/// is an error.
async fn read_with_retry(soak: &Soak, key: &str, read: Read) {
    if one_read(soak, key, &read, true).await == Retry::Once {
        one_read(soak, key, &read, false).await;
    }
}

#[derive(PartialEq, Eq)]
enum Retry {
    No,
    Once,
}

async fn one_read(soak: &Soak, key: &str, read: &Read, may_retry: bool) -> Retry {
    let url = soak.url(key);
    let mut request =
        if *read == Read::Head { soak.client.head(&url) } else { soak.client.get(&url) };
    for (name, value) in read.headers() {
        request = request.header(name, value);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            soak.error(read.kind(), format!("{} of {key}: {e}", read.kind()));
            return Retry::No;
        }
    };
    let (status, headers) = (response.status(), response.headers().clone());
    let body = if *read == Read::Head {
        None
    } else {
        match response.bytes().await {
            Ok(body) => Some(body),
            Err(e) => {
                soak.error(read.kind(), format!("{} of {key}: body cut: {e}", read.kind()));
                return Retry::No;
            }
        }
    };
    if status == 503 && may_retry {
        soak.tally(read.kind(), "503 retried");
        return Retry::Once;
    }
    match model::check(&soak.versions, key, read, status, &headers, body.as_ref()) {
        Ok(
            verdict @ (Verdict::Served
            | Verdict::NotModified
            | Verdict::PreconditionFailed
            | Verdict::Unsatisfiable),
        ) => {
            soak.tally(read.kind(), verdict.as_str());
        }
        Ok(verdict @ (Verdict::NotFound | Verdict::ServerError)) => soak.error(
            read.kind(),
            format!(
                "{} of {key} ({:?}) answered {status}: {}",
                read.kind(),
                read.headers(),
                verdict.as_str()
            ),
        ),
        Err(why) => soak.error(
            read.kind(),
            format!(
                "{} of {key} ({:?}) answered {status} ({:?}): {why}",
                read.kind(),
                read.headers(),
                headers.get("cache-status")
            ),
        ),
    }
    Retry::No
}
