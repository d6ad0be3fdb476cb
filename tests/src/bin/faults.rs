//! `rangecache-faults`: a seeded run of concurrent writes, deletes, whole, ranged, conditional
//! and HEAD reads through one real server whose tiers (memory → disk → s3 on a real
//! S3-compatible server) are each wrapped in a `faulty` tier injecting errors, stalls and
//! truncations. Every answer is checked against the versions written
//! ([`rangecache_tests::model`]); afterwards the server must stop cleanly, `rangecache fsck`
//! must find nothing broken on its disk tier, and fault-free servers started on the disk
//! directory and on the S3 prefix must serve only whole written versions. So no bytes that
//! differ from a written version are served at the offsets advertised, no fragment is ever
//! committed to disk or s3, a failing deeper tier never corrupts a nearer one, and every
//! operation ends within a deadline.
//!
//! `cargo xtask faults --seconds N [--seed N]` runs it; `cargo xtask test` runs a short one.
//! It needs the `faults` feature in the server binary and an S3-compatible server
//! (`RANGECACHE_TEST_S3_*`, as `cargo xtask` provides). Exit 0 only when nothing contradicted
//! the model, faults were injected, and enough answers were checked to mean something.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use rangecache_tests::model::{self, Read, Spec, Verdict, Version, Versions};
use rangecache_tests::process::{S3Env, Server, binary, series};
use rangecache_tests::{RunOptions, client};

const NS: &str = "faults";
/// Keys that are written, read and deleted.
const KEYS: usize = 12;
/// Keys that are never deleted: once a write of one succeeded, it must never read as 404.
const STABLE_KEYS: usize = 4;
/// The longest any one operation may take; stalls are at most 50 ms a step, so a healthy
/// operation ends well within it and one that does not is stuck.
const OP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the server may take to stop after SIGTERM (its own bounds add up to under 20 s).
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Fewer answers checked than this and the run proves too little to pass.
const MIN_SERVED: u64 = 100;

/// A `[[tier]]` table of `kind` with its own `keys`; with a seed, that tier wrapped in a faulty
/// one (error 1%, stall 2% up to 50 ms, truncate 1% per step).
fn tier(name: &str, kind: &str, keys: &str, faults: Option<u64>) -> String {
    let Some(seed) = faults else {
        return format!("[[tier]]\nname = \"{name}\"\nkind = \"{kind}\"\n{keys}");
    };
    format!(
        "[[tier]]\nname = \"{name}\"\nkind = \"faulty\"\nwraps = \"{kind}\"\n{keys}\
         [tier.faults]\nseed = {seed}\nerror = 0.01\nstall = 0.02\nstall_for = \"50ms\"\n\
         truncate = 0.01\n"
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let defaults = RunOptions { duration: Duration::from_secs(30), seed: 1, clients: 6 };
    let options = match RunOptions::parse(std::env::args().skip(1), defaults) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("rangecache-faults: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rangecache-faults: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Everything the clients share.
struct Run {
    client: reqwest::Client,
    base: String,
    versions: Versions,
    /// Per stable key, when its first successful write returned.
    stored: Mutex<HashMap<String, Instant>>,
    /// (operation, outcome) → count.
    tallies: Mutex<BTreeMap<(&'static str, String), u64>>,
    violations: Mutex<Vec<String>>,
    bytes_checked: AtomicU64,
    n_versions: AtomicU64,
    /// The longest any operation took, in milliseconds.
    longest_millis: AtomicU64,
}

impl Run {
    fn tally(&self, op: &'static str, outcome: impl Into<String>) {
        *lock(&self.tallies).entry((op, outcome.into())).or_default() += 1;
    }

    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        lock(&self.violations).push(what);
    }

    fn n_served(&self) -> u64 {
        lock(&self.tallies).iter().filter(|((_, o), _)| o == "served").map(|(_, n)| n).sum()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run(options: &RunOptions) -> Result<bool> {
    let s3 = S3Env::from_env()?;
    let work = tempfile::Builder::new().prefix("rangecache-faults-").tempdir()?;
    let disk = work.path().join("disk");
    let prefix = format!("faults-{}-{}/", std::process::id(), options.seed);
    let s3_keys = format!(
        "bucket = \"{}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nprefix = \"{prefix}\"\n",
        s3.bucket, s3.endpoint
    );
    let disk_keys = format!("path = \"{}\"\nmax_size = \"1GiB\"\n", disk.display());
    let seed = |idx: u64| Some(options.seed.wrapping_add(idx));
    // Memory is small enough that the working set (16 keys of up to 1.2 MB) does not fit:
    // reads miss it often and copy from the deeper tiers, which is where fragments could slip
    // in.
    let config = format!(
        "max_object_size = \"16MiB\"\n\n{}\n{}\n{}",
        tier("memory", "memory", "max_size = \"4MiB\"\n", seed(0)),
        tier("disk", "disk", &disk_keys, seed(1)),
        tier("s3", "s3", &s3_keys, seed(2)),
    );
    let disk_tier = tier("disk", "disk", &disk_keys, None);
    let s3_tier = tier("s3", "s3", &s3_keys, None);
    eprintln!(
        "fault run: seed {}, {:?}, {} clients, {} keys ({} never deleted), tiers memory → disk → \
         s3, each faulty (error 1%, stall 2% up to 50 ms, truncate 1% per step)",
        options.seed,
        options.duration,
        options.clients,
        KEYS + STABLE_KEYS,
        STABLE_KEYS
    );
    let mut server =
        Server::start("the faulty server", &work.path().join("a"), &config, &s3.env)
            .context("the server binary must be built with --features rangecache/faults")?;
    let run = Arc::new(Run {
        client: client()?,
        base: server.base.clone(),
        versions: Versions::default(),
        stored: Mutex::new(HashMap::new()),
        tallies: Mutex::new(BTreeMap::new()),
        violations: Mutex::new(Vec::new()),
        bytes_checked: AtomicU64::new(0),
        n_versions: AtomicU64::new(0),
        longest_millis: AtomicU64::new(0),
    });

    let started = Instant::now();
    let until = started + options.duration;
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..options.clients {
        let run = run.clone();
        let seed = options.seed.wrapping_mul(1000).wrapping_add(id as u64);
        clients.spawn(async move { client_loop(&run, seed, until).await });
    }
    while let Some(done) = clients.join_next().await {
        done.context("a client task panicked")?;
    }
    let elapsed = started.elapsed();

    // Every key once more, whole, with the faults still on.
    for key in keys() {
        for _ in 0..3 {
            one_read(&run, &key, Read::Whole).await;
        }
    }
    let metrics = server.scrape(&run.client).await.context("scrape /metrics")?;
    let status = server.terminate(STOP_DEADLINE)?;
    if !status.success() {
        run.violation(format!("the server exited with {status} after SIGTERM"));
    }
    if server.log().contains("panicked") {
        run.violation(format!("the server panicked:\n{}", server.log()));
    }

    // What the tiers hold at rest, read without faults.
    let fsck = fsck(work.path(), &disk_tier)?;
    let at_rest_disk = at_rest(&run, "disk", work.path(), &disk_tier, &[], "disk; hit").await?;
    let at_rest_s3 = at_rest(&run, "s3", work.path(), &s3_tier, &s3.env, "s3; hit").await?;

    let faults = series(&metrics, "rangecache_faults_injected_total");
    let n_faults: f64 = faults.iter().map(|(_, n)| n).sum();
    println!(
        "fault run: seed {}, {:.1?} of load, {} clients",
        options.seed, elapsed, options.clients
    );
    println!("faults injected: {n_faults}");
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, n) in &faults {
        *by_kind.entry((*labels).to_owned()).or_default() += n;
    }
    for (labels, n) in &by_kind {
        println!("  {labels}: {n}");
    }
    let n_ops: u64 = lock(&run.tallies).values().sum();
    println!(
        "operations checked: {n_ops} ({} versions written, {} body bytes compared)",
        run.n_versions.load(Ordering::Relaxed),
        run.bytes_checked.load(Ordering::Relaxed)
    );
    for ((op, outcome), n) in lock(&run.tallies).iter() {
        println!("  {op} {outcome}: {n}");
    }
    println!(
        "longest operation: {} ms (deadline {OP_DEADLINE:?})",
        run.longest_millis.load(Ordering::Relaxed)
    );
    for family in ["rangecache_tier_reads_total", "rangecache_backfills_total"] {
        let shown: Vec<String> =
            series(&metrics, family).iter().map(|(labels, n)| format!("{labels} {n}")).collect();
        println!("{family}: {}", shown.join(", "));
    }
    println!("after the run: {fsck}");
    println!("after the run: {at_rest_disk}");
    println!("after the run: {at_rest_s3}");
    let violations = lock(&run.violations).len();
    println!("violations: {violations}");
    if violations > 0 {
        // Kept for the post-mortem: the servers' logs and the disk tier.
        println!("kept for inspection: {}", work.keep().display());
    }
    let mut ok = violations == 0;
    if n_faults == 0.0 {
        println!("FAILED: no fault was injected, so the run proves nothing");
        ok = false;
    }
    if run.n_served() < MIN_SERVED {
        println!("FAILED: only {} answers served bytes (at least {MIN_SERVED})", run.n_served());
        ok = false;
    }
    Ok(ok)
}

fn keys() -> Vec<String> {
    let stable = (0..STABLE_KEYS).map(|i| format!("s{i:02}"));
    (0..KEYS).map(|i| format!("k{i:02}")).chain(stable).collect()
}

fn is_stable(key: &str) -> bool {
    key.starts_with('s')
}

async fn client_loop(run: &Run, seed: u64, until: Instant) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let keys = keys();
    while Instant::now() < until {
        let key = keys[rng.usize(..keys.len())].clone();
        let roll = rng.u32(0..100);
        let op = if roll < 20 {
            Op::Write(new_version(run, &key, &mut rng))
        } else if roll < 25 && !is_stable(&key) {
            Op::Delete
        } else if roll < 28 {
            Op::Invalidate
        } else {
            Op::Read(pick_read(run, &key, &mut rng))
        };
        let name = op.name();
        let began = Instant::now();
        let done = tokio::time::timeout(OP_DEADLINE, async {
            match op {
                Op::Write(version) => write(run, &key, version).await,
                Op::Delete => delete(run, &key).await,
                Op::Invalidate => invalidate(run, &key).await,
                Op::Read(read) => read_checked(run, &key, read, began).await,
            }
        })
        .await;
        let took = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        run.longest_millis.fetch_max(took, Ordering::Relaxed);
        if done.is_err() {
            run.violation(format!("{name} of {key} did not end within {OP_DEADLINE:?}"));
            run.tally(name, "deadline");
        }
    }
}

enum Op {
    Write(Version),
    Delete,
    /// Drops the memory and disk copies, so the next reads copy from s3 again.
    Invalidate,
    Read(Read),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Write(_) => "put",
            Op::Delete => "delete",
            Op::Invalidate => "invalidate",
            Op::Read(read) => read.kind(),
        }
    }
}

fn new_version(run: &Run, key: &str, rng: &mut fastrand::Rng) -> Version {
    let n = run.n_versions.fetch_add(1, Ordering::Relaxed);
    let len = match rng.u32(0..100) {
        0..5 => 0,
        5..25 => rng.u64(1..=1000),
        25..60 => rng.u64(1000..=64 << 10),
        60..90 => rng.u64(64 << 10..=400 << 10),
        _ => rng.u64(400 << 10..=1200 << 10),
    };
    Version { etag: format!("\"{key}-{n}\""), len, seed: rng.u64(..) }
}

fn pick_read(run: &Run, key: &str, rng: &mut fastrand::Rng) -> Read {
    let known = run.versions.of(key);
    // Mostly one of the latest versions, which the tiers may still hold, sometimes any.
    let back = if rng.u32(0..5) == 0 { known.len() } else { known.len().min(3) };
    let version = (!known.is_empty()).then(|| &known[known.len() - 1 - rng.usize(..back)]);
    let etag = version.map_or_else(|| "\"never-written\"".to_owned(), |v| v.etag.clone());
    let len = version.map_or(1000, |v| v.len);
    // Mostly inside the version's bytes, sometimes past them.
    let position = |rng: &mut fastrand::Rng| {
        if rng.u32(0..10) == 0 { rng.u64(len..=len + 1000) } else { rng.u64(0..=len) }
    };
    let spec = match rng.u32(0..3) {
        0 => {
            let first = position(rng);
            Spec::FromTo(first, first + rng.u64(0..=300_000))
        }
        1 => Spec::From(position(rng)),
        _ => Spec::Suffix(rng.u64(1..=len.max(1) + 10)),
    };
    match rng.u32(0..100) {
        0..35 => Read::Whole,
        35..75 => Read::Range(spec),
        75..82 => Read::Head,
        82..88 => Read::IfNoneMatch(etag),
        88..94 => Read::IfMatch(etag),
        _ => Read::IfRange(etag, spec),
    }
}

async fn write(run: &Run, key: &str, version: Version) {
    run.versions.add(key, version.clone());
    let url = format!("{}/api/v1/object/{NS}/{key}", run.base);
    let sent = run.client.put(&url).header("etag", &version.etag).body(version.bytes()).send();
    let response = match sent.await {
        Ok(response) => response,
        Err(_) => return run.tally("put", "cut"),
    };
    let status = response.status();
    if status.is_success() {
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok());
        if etag != Some(version.etag.as_str()) {
            run.violation(format!("PUT {key} stored {etag:?}, not {}", version.etag));
        }
        if is_stable(key) {
            lock(&run.stored).entry(key.to_owned()).or_insert_with(Instant::now);
        }
        run.tally("put", "200");
    } else if status.is_server_error() {
        run.tally("put", "5xx");
    } else {
        let body = response.text().await.unwrap_or_default();
        run.violation(format!("PUT {key} answered {status}: {}", body.trim()));
        run.tally("put", status.as_str().to_owned());
    }
}

async fn delete(run: &Run, key: &str) {
    let url = format!("{}/api/v1/object/{NS}/{key}", run.base);
    match run.client.delete(&url).send().await {
        Err(_) => run.tally("delete", "cut"),
        Ok(response) => match response.status().as_u16() {
            200 | 404 => run.tally("delete", response.status().as_str().to_owned()),
            500.. => run.tally("delete", "5xx"),
            other => {
                run.violation(format!("DELETE {key} answered {other}"));
                run.tally("delete", other.to_string());
            }
        },
    }
}

async fn invalidate(run: &Run, key: &str) {
    let url = format!("{}/api/v1/object/{NS}/{key}/invalidate", run.base);
    match run.client.post(&url).send().await {
        Err(_) => run.tally("invalidate", "cut"),
        Ok(response) => match response.status().as_u16() {
            200 | 204 | 404 => run.tally("invalidate", response.status().as_str().to_owned()),
            500.. => run.tally("invalidate", "5xx"),
            other => {
                run.violation(format!("invalidate {key} answered {other}"));
                run.tally("invalidate", other.to_string());
            }
        },
    }
}

async fn read_checked(run: &Run, key: &str, read: Read, began: Instant) {
    let verdict = one_read(run, key, read).await;
    let stored = lock(&run.stored).get(key).copied();
    if verdict == Some(Verdict::NotFound) && stored.is_some_and(|at| at < began) {
        run.violation(format!("{key}, never deleted and stored before this read, read as 404"));
    }
}

/// Sends one read, checks the answer and tallies it; the verdict, `None` when the answer did
/// not arrive whole (the connection was cut) or contradicted the model.
async fn one_read(run: &Run, key: &str, read: Read) -> Option<Verdict> {
    let url = format!("{}/api/v1/object/{NS}/{key}", run.base);
    let mut request = if read == Read::Head { run.client.head(&url) } else { run.client.get(&url) };
    for (name, value) in read.headers() {
        request = request.header(name, value);
    }
    let Ok(response) = request.send().await else {
        run.tally(read.kind(), "cut");
        return None;
    };
    let (status, headers) = (response.status(), response.headers().clone());
    let body = if read == Read::Head {
        None
    } else {
        match response.bytes().await {
            Ok(body) => Some(body),
            Err(_) => {
                // Content-Length promised more than arrived: the client knows it is short.
                run.tally(read.kind(), "cut");
                return None;
            }
        }
    };
    match model::check(&run.versions, key, &read, status, &headers, body.as_ref()) {
        Ok(verdict) => {
            if verdict == Verdict::Served {
                let n = body.as_ref().map_or(0, Bytes::len) as u64;
                run.bytes_checked.fetch_add(n, Ordering::Relaxed);
            }
            run.tally(read.kind(), verdict.as_str());
            Some(verdict)
        }
        Err(why) => {
            let cache_status = headers.get("cache-status");
            run.violation(format!(
                "{} of {key} ({:?}) answered {status} ({cache_status:?}): {why}",
                read.kind(),
                read.headers()
            ));
            run.tally(read.kind(), "contradicted");
            None
        }
    }
}

/// Runs `rangecache fsck` on the disk tier; a broken file or any failure is a violation.
fn fsck(work: &std::path::Path, disk_tier: &str) -> Result<String> {
    let config = work.join("fsck.toml");
    std::fs::write(&config, disk_tier)?;
    let output =
        std::process::Command::new(binary()?).arg("fsck").arg("--config").arg(&config).output()?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("fsck of the disk tier after the run found something ({}):\n{report}", output.status);
    }
    Ok(report.lines().last().unwrap_or_default().to_owned())
}

/// Starts a fault-free server on one tier alone (the disk directory, or the s3 prefix) and
/// reads every key whole: each answer must be a whole written version, served by that tier.
async fn at_rest(
    run: &Run,
    name: &str,
    work: &std::path::Path,
    tier: &str,
    env: &[(String, String)],
    cache_status: &str,
) -> Result<String> {
    let mut server = Server::start(name, &work.join(format!("at-rest-{name}")), tier, env)?;
    let (mut n_whole, mut n_absent) = (0, 0);
    for key in keys() {
        let url = server.object(NS, &key);
        let response = run.client.get(&url).send().await?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await?;
        match model::check(&run.versions, &key, &Read::Whole, status, &headers, Some(&body)) {
            Ok(Verdict::Served) => {
                let got = headers.get("cache-status").and_then(|v| v.to_str().ok());
                if got != Some(cache_status) {
                    run.violation(format!("{name} at rest: {key} served as {got:?}"));
                }
                n_whole += 1;
            }
            Ok(Verdict::NotFound) => n_absent += 1,
            Ok(other) => run.violation(format!("{name} at rest: {key} answered {other:?}")),
            Err(why) => run.violation(format!("{name} at rest holds a bad {key}: {why}")),
        }
    }
    server.terminate(STOP_DEADLINE)?;
    Ok(format!(
        "{name} holds {n_whole} keys, each a whole written version, and {n_absent} are absent"
    ))
}
