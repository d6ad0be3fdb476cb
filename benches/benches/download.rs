//! A whole-object copy of one 256 MiB object read as one stream against 8 parallel ranged parts,
//! from the S3 tier (s3s-fs) and from a remote rangecache, in one run.
//!
//! The bench drives the tiers' own `open` as a copy into tier 0 does (`Span::WHOLE` pinned by
//! `If-Match`), once with `parallel` 1 (one GET) and once with the defaults (parts of 8 MiB, the
//! first answer one of them, 8 in flight), and drains the body. Rounds alternate which mode
//! goes first so load from other processes weighs on both alike; the table gives each mode's
//! median and the ratio of the medians. Every mode's bytes are checked against the object's
//! SHA-256 before timing.
//!
//! Each source is measured twice: straight over loopback, where one stream is limited only by
//! the CPU of the machine, and through a proxy in this process that paces every connection's
//! answers to 90 MB/s, the ceiling of one HTTP/1.1 stream from an object store that the
//! downloader exists for. With `--sweep` (`cargo xtask bench-download --sweep`), the remote
//! source behind the paced proxy is also read with other part counts and sizes.
//!
//! Run it with `cargo xtask bench-download`, which starts s3s-fs and builds the release binary
//! (the remote rangecache this bench starts); by hand it needs the variables `cargo xtask
//! s3-server` prints and `RANGECACHE_BIN`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::num::NonZeroUsize;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use rangecache::storage::remote::RemoteTier;
use rangecache::storage::{NewObject, OpenRequest, Opened, S3Config, S3Tier, Tier, WriteCondition};
use rangecache_core::read::Conditions;
use rangecache_core::{EntityTag, Key, Namespace, ObjectKey, Span, Timestamp};
use rangecache_download::Options;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIZE: usize = 256 << 20;
const ROUNDS: usize = 5;
/// The pace of one paced connection's answers, in bytes per second.
const STREAM_CEILING: f64 = 90e6;

fn main() {
    // `cargo bench` passes `--bench`. Without it the binary runs as a test (`cargo test
    // --all-targets`), where nothing it needs is running: measure nothing.
    if !std::env::args().any(|arg| arg == "--bench") {
        let first = Options::default().first_request_end().expect("parts by default");
        assert_eq!(Options::default().plan(first, SIZE as u64).len(), 31);
        println!("download: not measuring (run it with cargo xtask bench-download)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench());
}

/// A tier of one kind over one path to its server, built with the options of a mode.
struct Source {
    name: String,
    tier: Box<dyn Fn(Options) -> Arc<dyn Tier>>,
}

async fn bench() {
    let sweep = std::env::args().any(|arg| arg == "--sweep");
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the bench with `cargo xtask bench-download`")
        })
    };
    let body = object();
    let digest = hex(&Sha256::digest(&body));
    let key = ObjectKey {
        namespace: Namespace::parse("bench").unwrap(),
        key: Key::from_segment("download"),
    };
    let etag = EntityTag::parse("\"bench-download-1\"").unwrap();

    let s3_endpoint = var("RANGECACHE_TEST_S3_ENDPOINT");
    let s3_config = S3Config {
        bucket: var("RANGECACHE_TEST_S3_BUCKET"),
        endpoint: Some(s3_endpoint.clone()),
        region: "us-east-1".into(),
        prefix: "bench-download/".into(),
        access_key_id: Some(var("AWS_ACCESS_KEY_ID")),
        secret_access_key: Some(var("AWS_SECRET_ACCESS_KEY")),
    };
    let upstream = Upstream::start(&var("RANGECACHE_BIN"));
    let s3_paced = paced_proxy(address(&s3_endpoint)).await;
    let remote_paced = paced_proxy(address(&upstream.base)).await;
    let s3 = |endpoint: String| -> Box<dyn Fn(Options) -> Arc<dyn Tier>> {
        let config = S3Config { endpoint: Some(endpoint), ..s3_config.clone() };
        Box::new(move |options| {
            Arc::new(S3Tier::new("s3", &config).unwrap().with_download_options(options))
        })
    };
    let remote = |base: String| -> Box<dyn Fn(Options) -> Arc<dyn Tier>> {
        Box::new(move |options| {
            let tier = RemoteTier::new("remote", &base, None, Duration::from_secs(3600));
            Arc::new(tier.unwrap().with_download_options(options))
        })
    };
    let sources = [
        Source { name: "s3 (s3s-fs), loopback".into(), tier: s3(s3_endpoint.clone()) },
        Source { name: "remote rangecache, loopback".into(), tier: remote(upstream.base.clone()) },
        Source { name: "s3 (s3s-fs), 90 MB/s per stream".into(), tier: s3(s3_paced) },
        Source {
            name: "remote rangecache, 90 MB/s per stream".into(),
            tier: remote(remote_paced.clone()),
        },
    ];
    write(&*(sources[0].tier)(Options::default()), &key, &etag, &body).await;
    write(&*(sources[1].tier)(Options::default()), &key, &etag, &body).await;

    let one = Options { parallel: NonZeroUsize::MIN, ..Options::default() };
    for source in &sources {
        for options in [&one, &Options::default()] {
            let (_, got) = read(&*(source.tier)(options.clone()), &key, &etag, true).await;
            assert_eq!(got, digest, "{}: the bytes read are the object's", source.name);
        }
    }

    let mut table = String::from(
        "| source | one stream | 8 parts of 8 MiB | ratio |\n| --- | --- | --- | --- |\n",
    );
    for source in &sources {
        let modes = [one.clone(), Options::default()];
        let [single, parts] = medians(source, &modes, &key, &etag).await[..] else {
            unreachable!("two modes")
        };
        table.push_str(&format!(
            "| {} | {single:.0} MB/s | {parts:.0} MB/s | {:.2}x |\n",
            source.name,
            parts / single
        ));
    }
    println!("\n{table}");

    if sweep {
        let source = &sources[3];
        let mut modes = Vec::new();
        for parallel in [1, 2, 4, 8, 16] {
            modes.push(options(8, parallel));
        }
        for part_mib in [4, 16] {
            modes.push(options(part_mib, 8));
        }
        // A first answer twice as long as the other parts.
        modes.push(Options { single_request_below: 16 << 20, ..options(8, 8) });
        let rates = medians(source, &modes, &key, &etag).await;
        println!("\n{}:\n", source.name);
        println!(
            "| parts in flight | part size | first answer | rate |\n| --- | --- | --- | --- |"
        );
        for (mode, rate) in modes.iter().zip(rates) {
            let part_mib = mode.part_size.get() >> 20;
            let first_mib = mode.first_request_end().unwrap_or(SIZE as u64) >> 20;
            println!("| {} | {part_mib} MiB | {first_mib} MiB | {rate:.0} MB/s |", mode.parallel);
        }
    }
    drop(upstream);
}

/// The median rate of each mode over the rounds, the modes' order rotating from round to round.
async fn medians(
    source: &Source,
    modes: &[Options],
    key: &ObjectKey,
    etag: &EntityTag,
) -> Vec<f64> {
    let tiers: Vec<Arc<dyn Tier>> = modes.iter().map(|mode| (source.tier)(mode.clone())).collect();
    let mut rates = vec![Vec::new(); modes.len()];
    for round in 0..ROUNDS {
        for i in (0..modes.len()).map(|i| (i + round) % modes.len()) {
            let (took, _) = read(&*tiers[i], key, etag, false).await;
            let rate = SIZE as f64 / took.as_secs_f64() / 1e6;
            let (parallel, part) = (modes[i].parallel, modes[i].part_size.get() >> 20);
            eprintln!("{} round {round}: {parallel} x {part} MiB: {rate:.0} MB/s", source.name);
            rates[i].push(rate);
        }
    }
    rates.iter_mut().map(|rates| median(rates)).collect()
}

/// `parallel` parts of `part_mib` MiB in flight, the first answer one of them.
fn options(part_mib: u64, parallel: usize) -> Options {
    Options {
        part_size: NonZeroU64::new(part_mib << 20).unwrap(),
        parallel: NonZeroUsize::new(parallel).unwrap(),
        single_request_below: part_mib << 20,
        ..Options::default()
    }
}

fn address(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").trim_end_matches('/').parse().expect("http://IP:PORT")
}

/// A proxy to `upstream` whose every connection passes answers at [`STREAM_CEILING`]; its URL.
async fn paced_proxy(upstream: SocketAddr) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(paced_pipe(client, upstream));
        }
    });
    base
}

async fn paced_pipe(client: TcpStream, upstream: SocketAddr) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    // The pace is kept over each answer burst: a connection idle between requests does not
    // save up a budget.
    let mut burst: Option<(Instant, u64)> = None;
    loop {
        let n = match from_server.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (started, passed) = match burst {
            Some((started, passed))
                if started.elapsed().as_secs_f64() <= passed as f64 / STREAM_CEILING + 0.05 =>
            {
                (started, passed)
            }
            _ => (Instant::now(), 0),
        };
        let passed = passed + n as u64;
        let due = started + Duration::from_secs_f64(passed as f64 / STREAM_CEILING);
        tokio::time::sleep_until(due.into()).await;
        if to_client.write_all(&buf[..n]).await.is_err() {
            break;
        }
        burst = Some((started, passed));
    }
    requests.abort();
}

/// The object: 256 MiB that do not compress.
fn object() -> Bytes {
    let mut rng = fastrand::Rng::with_seed(256);
    let mut bytes = vec![0u8; SIZE];
    rng.fill(&mut bytes);
    Bytes::from(bytes)
}

async fn write(tier: &dyn Tier, key: &ObjectKey, etag: &EntityTag, body: &Bytes) {
    let new = NewObject {
        etag: etag.clone(),
        last_modified: now(),
        headers: Vec::new(),
        expires: None,
        condition: WriteCondition::None,
        expected_size: Some(SIZE as u64),
    };
    let mut writer = tier.create(key, new).await.expect("start the write");
    for chunk in body.chunks(1 << 20) {
        writer.write(body.slice_ref(chunk)).await.expect("write");
    }
    writer.commit().await.expect("commit");
}

/// One whole-object read as a copy into tier 0 asks for it; how long it took, and the SHA-256
/// of the bytes when `hash`.
async fn read(
    tier: &dyn Tier,
    key: &ObjectKey,
    etag: &EntityTag,
    hash: bool,
) -> (Duration, String) {
    let started = Instant::now();
    let request =
        OpenRequest { span: Span::WHOLE, conditions: Conditions::pinned(etag), now: now() };
    let Ok(Opened::Body { mut body, .. }) = tier.open(key, &request).await else {
        panic!("{}: the object opens", tier.name());
    };
    let mut hasher = Sha256::new();
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the body reads");
        n += chunk.len();
        if hash {
            hasher.update(&chunk);
        }
    }
    let took = started.elapsed();
    assert_eq!(n, SIZE, "{}: the whole object", tier.name());
    (took, hex(&hasher.finalize()))
}

fn now() -> Timestamp {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The remote rangecache: the release binary with one memory tier, on a free port.
struct Upstream {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
}

impl Upstream {
    fn start(binary: &str) -> Upstream {
        let dir =
            std::env::temp_dir().join(format!("rangecache-bench-download-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("rangecache.toml");
        std::fs::write(
            &config,
            "max_object_size = \"512MiB\"\n[[tier]]\nname = \"memory\"\nkind = \"memory\"\n\
             max_size = \"1GiB\"\n",
        )
        .unwrap();
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RANGECACHE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the rangecache binary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("rangecache listening on ").expect("the server starts");
        Upstream { child, base: addr.to_owned(), dir }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
