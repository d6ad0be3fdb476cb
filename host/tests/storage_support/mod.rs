//! What the storage suites share: tiers to test, a real S3-compatible server, a counting proxy,
//! and small helpers to write and read objects.
//!
//! The s3 tests talk to the server named by `RANGECACHE_TEST_S3_ENDPOINT` (and
//! `RANGECACHE_TEST_S3_BUCKET`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), which
//! `cargo xtask test` starts. Without those variables each s3 test starts its own `s3s-fs`
//! from `.tools/bin` or PATH, and fails with a message naming `cargo xtask s3-server` when the
//! binary is missing: an s3 test never passes without talking to a server.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use rangecache::storage::{
    ByteStream, Conditions, NewObject, OpenRequest, Opened, S3Config, S3Tier, Tier, TierError,
    WriteCondition,
};
use rangecache_core::range::Span;
use rangecache_core::{EntityTag, Key, Namespace, ObjectKey, ObjectMeta, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The wall clock: commits judge whether a copy is still live by it, so expiries in the tests
/// are set relative to it, and reads pass later instants to see them expire.
pub fn now() -> Timestamp {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    Timestamp::from_millis(since.as_millis() as u64)
}

/// Where the test bucket is.
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    _server: Option<LocalServer>,
}

impl S3Env {
    /// The server `cargo xtask test` started, or one started for this test.
    pub fn get() -> S3Env {
        if let Ok(endpoint) = std::env::var("RANGECACHE_TEST_S3_ENDPOINT") {
            let var = |name: &str| {
                std::env::var(name).unwrap_or_else(|_| {
                    panic!("RANGECACHE_TEST_S3_ENDPOINT is set but {name} is not")
                })
            };
            return S3Env {
                endpoint,
                bucket: var("RANGECACHE_TEST_S3_BUCKET"),
                access_key: var("AWS_ACCESS_KEY_ID"),
                secret_key: var("AWS_SECRET_ACCESS_KEY"),
                _server: None,
            };
        }
        let server = LocalServer::start();
        S3Env {
            endpoint: format!("http://{}", server.addr),
            bucket: LocalServer::BUCKET.into(),
            access_key: LocalServer::ACCESS_KEY.into(),
            secret_key: LocalServer::SECRET_KEY.into(),
            _server: Some(server),
        }
    }

    /// A tier on a fresh prefix of the bucket, reached through `endpoint`.
    pub fn tier_at(&self, endpoint: &str, prefix: &str) -> S3Tier {
        let config = S3Config {
            bucket: self.bucket.clone(),
            endpoint: Some(endpoint.to_owned()),
            region: "us-east-1".into(),
            prefix: prefix.to_owned(),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
        };
        S3Tier::new("s3", &config).expect("the s3 tier builds")
    }

    /// A tier on a prefix no other test uses.
    pub fn fresh_tier(&self) -> (S3Tier, String) {
        let prefix = unique("t");
        (self.tier_at(&self.endpoint, &prefix), prefix)
    }
}

/// An `s3s-fs` started for one test, stopped when dropped.
struct LocalServer {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
}

impl LocalServer {
    const BUCKET: &str = "rangecache-test";
    const ACCESS_KEY: &str = "rangecache-test-access";
    const SECRET_KEY: &str = "rangecache-test-secret";

    fn start() -> LocalServer {
        let binary = find_s3s_fs().unwrap_or_else(|| {
            panic!(
                "RANGECACHE_TEST_S3_ENDPOINT is not set and no s3s-fs binary was found in \
                 .tools/bin or on PATH: run the suites with `cargo xtask test`, or start a server \
                 with `cargo xtask s3-server` and export the variables it prints"
            )
        });
        let data = std::env::temp_dir().join(unique("rangecache-s3-test"));
        std::fs::create_dir_all(data.join(Self::BUCKET)).expect("create the bucket directory");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY, "--secret-key", Self::SECRET_KEY])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("s3s-fs exited before serving: {status}");
            }
            assert!(Instant::now() < deadline, "s3s-fs did not accept connections within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        LocalServer { child, addr, data }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn find_s3s_fs() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/s3s-fs");
    [local, PathBuf::from("s3s-fs")].into_iter().find(|candidate| {
        Command::new(candidate).arg("--version").output().is_ok_and(|out| out.status.success())
    })
}

/// A name no other test in this run uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// One request seen by the [`CountingProxy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub range: Option<String>,
    /// Conditional fields sent (`if-match: "..."`, ...), lower-case names.
    pub conditions: Vec<String>,
}

/// A TCP proxy in front of the S3 server that records the head of every HTTP request passing
/// through (bodies are forwarded by their Content-Length; responses are piped untouched).
pub struct CountingProxy {
    pub endpoint: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> CountingProxy {
        let upstream: SocketAddr =
            upstream.trim_start_matches("http://").parse().expect("endpoint is host:port");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let responses = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let _ = forward_requests(&mut client_read, &mut server_write, &log).await;
                    let _ = server_write.shutdown().await;
                    let _ = responses.await;
                });
            }
        });
        CountingProxy { endpoint, seen }
    }

    /// The requests seen so far, and forgets them.
    pub fn take(&self) -> Vec<SeenRequest> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn forward_requests(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    log: &Mutex<Vec<SeenRequest>>,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let target = request_line.next().unwrap_or_default().to_owned();
        let mut range = None;
        let mut conditions = Vec::new();
        let mut body_len: usize = 0;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "range" => range = Some(value.trim().to_owned()),
                "content-length" => body_len = value.trim().parse().unwrap_or(0),
                n if n.starts_with("if-") => conditions.push(format!("{n}: {}", value.trim())),
                _ => {}
            }
        }
        conditions.sort();
        log.lock().unwrap().push(SeenRequest { method, target, range, conditions });
        to.write_all(&buf[..head_end]).await?;
        buf.drain(..head_end);
        while buf.len() < body_len {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        to.write_all(&buf[..body_len]).await?;
        buf.drain(..body_len);
    }
}

/// The object key for a segment in a namespace.
pub fn key(namespace: &str, segment: &str) -> ObjectKey {
    ObjectKey { namespace: Namespace::parse(namespace).unwrap(), key: Key::from_segment(segment) }
}

/// A strong entity-tag.
pub fn etag(opaque: &str) -> EntityTag {
    EntityTag::strong(opaque).unwrap()
}

/// What an unconditional write of an object tagged `tag` stores.
pub fn new_object(tag: &str) -> NewObject {
    NewObject {
        etag: etag(tag),
        last_modified: Timestamp::from_secs(1_700_000_000),
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        expires: None,
        condition: WriteCondition::None,
        expected_size: None,
    }
}

/// Writes `body` in chunks of at most `chunk` bytes and commits.
pub async fn put_with(
    tier: &dyn Tier,
    key: &ObjectKey,
    new: NewObject,
    body: &[u8],
    chunk: usize,
) -> Result<ObjectMeta, TierError> {
    let mut writer = tier.create(key, new).await?;
    for piece in body.chunks(chunk.max(1)) {
        writer.write(Bytes::copy_from_slice(piece)).await?;
    }
    writer.commit().await
}

/// Writes `body` under tag `tag` and commits, panicking on failure.
pub async fn put(tier: &dyn Tier, key: &ObjectKey, tag: &str, body: &[u8]) -> ObjectMeta {
    put_with(tier, key, new_object(tag), body, 7_000).await.expect("the write commits")
}

/// A read of `span` with no preconditions, now.
pub fn request(span: Span) -> OpenRequest {
    OpenRequest { span, conditions: Conditions::default(), now: now() }
}

/// Every byte of a body.
pub async fn collect(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("the body streams without error"));
    }
    out
}

/// What a read answered, with the body collected, for comparisons in tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Body { etag: String, size: u64, range: (u64, u64), bytes: Vec<u8> },
    NotFound,
    NotSatisfiable { etag: String },
    PreconditionFailed { etag: String },
    NotModified { etag: String },
}

/// Opens `key` with `req` and collects the answer.
pub async fn read(tier: &dyn Tier, key: &ObjectKey, req: &OpenRequest) -> Got {
    try_read(tier, key, req).await.expect("the tier answers")
}

/// Opens `key` with `req` and collects the answer, or the tier's error.
pub async fn try_read(
    tier: &dyn Tier,
    key: &ObjectKey,
    req: &OpenRequest,
) -> Result<Got, TierError> {
    Ok(match tier.open(key, req).await? {
        Opened::Body { meta, window, body } => {
            let bounds = window.bounds(meta.size);
            Got::Body {
                etag: meta.etag.opaque.clone(),
                size: meta.size,
                range: (bounds.start, bounds.end),
                bytes: collect(body).await,
            }
        }
        Opened::NotFound => Got::NotFound,
        Opened::NotSatisfiable { meta } => Got::NotSatisfiable { etag: meta.etag.opaque },
        Opened::PreconditionFailed { meta } => Got::PreconditionFailed { etag: meta.etag.opaque },
        Opened::NotModified { meta } => Got::NotModified { etag: meta.etag.opaque },
    })
}

/// `len` bytes that differ from position to position, so a misplaced window shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
