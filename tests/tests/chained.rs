//! Two real servers chained: B (one disk tier, authoritative) and A (memory in front of B as
//! a remote tier). Backfill into A's memory, its dedupe, its discard on early close, a write
//! racing it, and shutdown in the middle of it.
//!
//! Where a test needs a copy to be still running at a given moment, A reaches B through a
//! [`HeldProxy`]: a real TCP proxy that passes each connection's first bytes from B and then
//! holds the rest until the test releases it, so the copy is in flight for as long as the test
//! says, not for as long as a transfer happens to take.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::proxy::{Plan, Proxy};
use common::{
    Server, client, data, disk_only, eventually, get_json, get_with, memory_and_remote, put,
    put_with, remote_tier, sha256, tempdir,
};
use futures::StreamExt;

const GET_200: &str =
    "rangecache_route_requests_total{route=\"object\",method=\"GET\",status=\"200\"}";
const COMMITTED: &str = "rangecache_backfills_total{event=\"committed\"}";
const DISCARDED: &str = "rangecache_backfills_total{event=\"discarded\"}";
const IN_FLIGHT: &str = "rangecache_backfills_in_flight";

/// A TCP proxy to `upstream` that forwards requests freely and, per connection, the first
/// `free` bytes of the answers; the rest waits until [`HeldProxy::release`].
struct HeldProxy {
    base: String,
    released: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HeldProxy {
    async fn start(upstream: SocketAddr, free: usize) -> HeldProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let base = format!("http://{}", listener.local_addr().expect("proxy address"));
        let (released, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(held_pipe(client, upstream, free, watching.clone()));
            }
        });
        HeldProxy { base, released, task }
    }

    /// Lets every held answer through, and every later one.
    fn release(&self) {
        self.released.send_replace(true);
    }
}

impl Drop for HeldProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn held_pipe(
    client: TcpStream,
    upstream: SocketAddr,
    free: usize,
    mut released: watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    };
    let answers = async move {
        let mut sent = 0;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if sent >= free && released.wait_for(|released| *released).await.is_err() {
                return;
            }
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
            sent += n;
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(requests, answers);
}

fn chain() -> (Server, Server) {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    (a, b)
}

/// The body bytes `server` sent in answer to GETs of `path`, from its access log: how often it
/// sent an object, whatever requests A split the reading into.
fn object_bytes_sent(server: &Server, path: &str) -> u64 {
    let request = format!(" method=GET path={path} ");
    server
        .log()
        .lines()
        .filter(|line| line.contains(&request))
        .filter_map(|line| line.split_once(" bytes=")?.1.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn memory_objects(server: &Server) -> u64 {
    let stats = get_json(&server.url("/api/v1/stats")).await;
    stats["tiers"][0]["objects"].as_u64().expect("tier 0 objects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_ranged_read_is_served_from_b_and_fills_a_with_the_whole_object() {
    let (a, mut b) = chain();
    let body = data(1 << 20, 10);
    put(&b.object("chain", "cold"), body.clone()).await;

    // A HEAD on A reads no byte from B: B answers a HEAD, not a GET of the object.
    let response = client().head(a.object("chain", "cold")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1048576");
    assert_eq!(response.headers()["cache-status"], "upstream; hit, memory; fwd=uri-miss");
    assert_eq!(b.metric(GET_200).await, 0.0);
    let b_heads =
        "rangecache_route_requests_total{route=\"object\",method=\"HEAD\",status=\"200\"}";
    assert_eq!(b.metric(b_heads).await, 1.0);

    let response = get_with(a.object("chain", "cold"), &[("range", "bytes=100-199")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 100-199/1048576");
    assert_eq!(response.headers()["cache-status"], "upstream; hit, memory; fwd=uri-miss; stored");
    assert_eq!(response.bytes().await.unwrap(), body[100..200]);

    eventually("the background copy to commit", Duration::from_secs(20), || async {
        a.metric(COMMITTED).await >= 1.0
    })
    .await;
    // With B gone, A's memory alone answers, whole and ranged.
    let _ = b.signal_and_wait("TERM", Duration::from_secs(10));
    let response = client().get(a.object("chain", "cold")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    assert_eq!(sha256(&response.bytes().await.unwrap()), sha256(&body));
    let response = get_with(a.object("chain", "cold"), &[("range", "bytes=-10")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    assert_eq!(response.bytes().await.unwrap(), body[body.len() - 10..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_ranged_reads_cause_one_whole_read_upstream() {
    let (a, b) = chain();
    let size = 20 << 20;
    let body = std::sync::Arc::new(data(size, 11));
    put(&b.object("chain", "herd"), body.to_vec()).await;

    let reads = (0..50).map(|i| {
        let url = a.object("chain", "herd");
        let body = body.clone();
        async move {
            let start = i * 300_000;
            let end = start + 65_536;
            let response = get_with(url, &[("range", &format!("bytes={start}-{}", end - 1))]).await;
            assert_eq!(response.status(), 206, "read {i}");
            let got = response.bytes().await.unwrap();
            assert_eq!(got.len(), end - start, "read {i}");
            assert!(got[..] == body[start..end], "read {i} has the right bytes");
        }
    });
    futures::future::join_all(reads).await;

    eventually("the one copy to commit", Duration::from_secs(60), || async {
        a.metric(COMMITTED).await >= 1.0 && a.metric(IN_FLIGHT).await == 0.0
    })
    .await;
    // The copy reads B in parallel parts (the object is over 8 MiB): B sent the fifty ranges
    // and the whole object exactly once.
    let expected = 50 * 65_536 + size as u64;
    // A names the object upstream by its hashed key.
    let path = format!("/api/v1/object/chain/{}", sha256(b"herd"));
    eventually("B to log what it sent", Duration::from_secs(10), || async {
        object_bytes_sent(&b, &path) >= expected
    })
    .await;
    let a_metrics = client().get(a.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        object_bytes_sent(&b, &path),
        expected,
        "B sent the object once; A's metrics:\n{a_metrics}"
    );
    assert_eq!(a.metric(COMMITTED).await, 1.0);
    let response = client().get(a.object("chain", "herd")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    assert_eq!(sha256(&response.bytes().await.unwrap()), sha256(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_comes_from_b_in_parallel_parts_and_is_whole() {
    let b = Server::start_with(disk_only);
    let size = 64 << 20;
    let body = data(size, 21);
    put(&b.object("chain", "large"), body.clone()).await;
    // A reaches B through a proxy that sees how many connections are open at once.
    let proxy = Proxy::start(b.addr, Plan::default()).await;
    let a = Server::start(&memory_and_remote(&proxy.base));

    let response = get_with(a.object("chain", "large"), &[("range", "bytes=0-9")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), body[..10]);
    eventually("the background copy to commit", Duration::from_secs(60), || async {
        a.metric(COMMITTED).await >= 1.0
    })
    .await;
    let response = client().get(a.object("chain", "large")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    assert!(response.bytes().await.unwrap() == body, "the copy in A is the object");
    // 64 MiB: eight parts of 8 MiB (the first answer is one), all in flight at once.
    assert!(proxy.most_open() >= 8, "{} connections at most", proxy.most_open());
    let path = format!("/api/v1/object/chain/{}", sha256(b"large"));
    eventually("B to log what it sent", Duration::from_secs(10), || async {
        object_bytes_sent(&b, &path) >= 10 + size as u64
    })
    .await;
    assert_eq!(object_bytes_sent(&b, &path), 10 + size as u64, "B sent the object once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_closed_early_leaves_no_copy_in_tier_0() {
    let (a, b) = chain();
    let body = data(32 << 20, 12);
    put(&b.object("chain", "early"), body.clone()).await;

    let response = client().get(a.object("chain", "early")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .ends_with("memory; fwd=uri-miss; stored"),
        "{:?}",
        response.headers()["cache-status"]
    );
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a first chunk").expect("chunk");
    assert!(!first.is_empty());
    drop(stream);

    eventually("the teed copy to be discarded", Duration::from_secs(20), || async {
        a.metric(DISCARDED).await >= 1.0 && a.metric(IN_FLIGHT).await == 0.0
    })
    .await;
    assert_eq!(a.metric(COMMITTED).await, 0.0);
    assert_eq!(memory_objects(&a).await, 0, "no partial copy in A's memory");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_backfill_wins() {
    let b = Server::start_with(disk_only);
    let old = data(48 << 20, 13);
    put(&b.object("chain", "race"), old.clone()).await;
    // Each answer from B passes its first MiB, then waits: the copy of 48 MiB cannot finish.
    let proxy = HeldProxy::start(b.addr, 1 << 20).await;
    let a = Server::start(&memory_and_remote(&proxy.base));

    // A ranged read starts a background copy of the old revision...
    let response = get_with(a.object("chain", "race"), &[("range", "bytes=0-9")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), old[..10]);
    assert_eq!(a.metric(IN_FLIGHT).await, 1.0, "the background copy is held in flight");
    // ...and a write through A replaces the object while it is held.
    let new = data(1000, 14);
    let etag = put(&a.object("chain", "race"), new.clone()).await;
    proxy.release();

    eventually("no copy in flight", Duration::from_secs(30), || async {
        a.metric(IN_FLIGHT).await == 0.0
    })
    .await;
    for server in [&a, &b] {
        let response = client().get(server.object("chain", "race")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(response.bytes().await.unwrap(), new, "the write won on {}", server.base);
    }
    let cancelled = a.metric("rangecache_backfills_total{event=\"cancelled\"}").await;
    let committed = a.metric(COMMITTED).await;
    assert_eq!(cancelled, 1.0, "the write cancelled the copy in flight");
    assert_eq!(committed, 0.0, "the stale copy never committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_backfill_exits_0_promptly_and_leaves_no_partial_object() {
    let b = Server::start_with(disk_only);
    let body = data(64 << 20, 15);
    put(&b.object("chain", "term"), body.clone()).await;
    // The copy's answer from B stops after its first MiB: it is in flight when SIGTERM comes.
    let proxy = HeldProxy::start(b.addr, 1 << 20).await;
    // A keeps its tier 0 on disk here, so what a cut copy would leave is visible after restart.
    let a_dir = tempdir();
    let a_config = format!(
        "[[tier]]\nname = \"near\"\nkind = \"disk\"\npath = \"{}\"\nmax_size = \"1GiB\"\n\n{}",
        a_dir.join("near").display(),
        remote_tier("upstream", &proxy.base)
    );
    let mut a = Server::start_in(&a_dir, &a_config);
    let response = get_with(a.object("chain", "term"), &[("range", "bytes=0-9")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), body[..10]);
    assert_eq!(a.metric(IN_FLIGHT).await, 1.0, "the background copy is held in flight");
    let started = std::time::Instant::now();
    let status = a.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}\n{}", a.log());
    assert!(started.elapsed() < Duration::from_secs(10), "prompt: {:?}", started.elapsed());

    proxy.release();
    let a = Server::start_in(&a_dir, &a_config);
    let stats = get_json(&a.url("/api/v1/stats")).await;
    let near = &stats["tiers"][0];
    assert_eq!(near["objects"].as_u64(), Some(0), "the cut copy left nothing: {stats}");
    assert_eq!(near["bytes"].as_u64(), Some(0), "{stats}");
    let response = client().head(a.object("chain", "term")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], body.len().to_string().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_tier_sends_its_token_upstream() {
    let b_dir = tempdir();
    let b_config =
        format!("{}\n[auth]\nread_token = \"r-b\"\nwrite_token = \"w-b\"\n", disk_only(&b_dir));
    let b = Server::start_in(&b_dir, &b_config);
    let with_token = format!("{}token = \"w-b\"\n", memory_and_remote(&b.base));
    let a = Server::start(&with_token);
    let etag = put(&a.object("chain", "tok"), data(1000, 16)).await;
    let response = client().get(b.object("chain", "tok")).bearer_auth("r-b").send().await.unwrap();
    assert_eq!(response.status(), 200, "the write through A reached B");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);

    // Without the token B refuses A, and A says its upstream failed rather than "not found".
    let without = Server::start(&memory_and_remote(&b.base));
    let response = client().get(without.object("chain", "tok")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let cache_status = response.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(cache_status.starts_with("upstream; fwd=miss"), "{cache_status}");
    assert!(cache_status.contains("detail=error"), "{cache_status}");
    let response = client().put(without.object("chain", "tok")).body("x").send().await.unwrap();
    assert_eq!(response.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cold_read_is_teed_into_memory_and_committed_at_eof() {
    let (a, b) = chain();
    let body = data(5 << 20, 17);
    put(&b.object("chain", "tee"), body.clone()).await;
    let response = client().get(a.object("chain", "tee")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-status"], "upstream; hit, memory; fwd=uri-miss; stored");
    assert_eq!(sha256(&response.bytes().await.unwrap()), sha256(&body));
    eventually("the tee to commit", Duration::from_secs(20), || async {
        a.metric(COMMITTED).await == 1.0
    })
    .await;
    assert_eq!(b.metric(GET_200).await, 1.0, "the client's read was the only read of B");
    let response = client().get(a.object("chain", "tee")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    assert_eq!(sha256(&response.bytes().await.unwrap()), sha256(&body));

    // An empty object is whole at once, and is copied too.
    put(&b.object("chain", "empty"), Vec::new()).await;
    let response = client().get(a.object("chain", "empty")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap().is_empty());
    eventually("the empty copy to commit", Duration::from_secs(20), || async {
        a.metric(COMMITTED).await == 2.0
    })
    .await;
    let response = client().get(a.object("chain", "empty")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_read_through_a_is_sent_part_by_part_from_b() {
    let (a, b) = chain();
    let body = data(1 << 20, 18);
    put(&b.object("chain", "parts"), body.clone()).await;
    let response =
        get_with(a.object("chain", "parts"), &[("range", "bytes=0-99,500000-500099,-100")]).await;
    assert_eq!(response.status(), 206);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("multipart/byteranges; boundary="), "{content_type}");
    let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let got = response.bytes().await.unwrap();
    assert_eq!(got.len(), length);
    let mut at = 0;
    for window in [0..100, 500_000..500_100, body.len() - 100..body.len()] {
        let part = &body[window.clone()];
        let found = got[at..].windows(part.len()).position(|w| w == part);
        at += found.unwrap_or_else(|| panic!("part {window:?} in order")) + part.len();
    }
    // The parts were ranged reads of B; the whole object came once, in the background, in one
    // request (it is under 8 MiB).
    eventually("the background copy to commit", Duration::from_secs(20), || async {
        a.metric(COMMITTED).await == 1.0
    })
    .await;
    let sent = 300 + body.len() as u64;
    let path = format!("/api/v1/object/chain/{}", sha256(b"parts"));
    eventually("B to log what it sent", Duration::from_secs(10), || async {
        object_bytes_sent(&b, &path) >= sent
    })
    .await;
    assert_eq!(object_bytes_sent(&b, &path), sent);
    let b_206 = "rangecache_route_requests_total{route=\"object\",method=\"GET\",status=\"206\"}";
    assert_eq!(b.metric(b_206).await, 4.0, "three parts and one copy, each one request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_drops_a_copy_and_the_next_read_refills_it() {
    let (a, b) = chain();
    let body = data(100_000, 19);
    put(&a.object("chain", "inv"), body.clone()).await;
    let response = client().get(a.object("chain", "inv")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    let response =
        client().post(a.url("/api/v1/object/chain/inv/invalidate")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client().get(a.object("chain", "inv")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "upstream; hit, memory; fwd=uri-miss; stored");
    assert_eq!(response.bytes().await.unwrap(), body);
    // Delete through A removes it from B too.
    assert_eq!(client().delete(a.object("chain", "inv")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(b.object("chain", "inv")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(a.object("chain", "inv")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_unsatisfiable_answers_come_back_through_the_remote_tier() {
    let (a, b) = chain();
    let etag = put(&b.object("chain", "cond"), data(5000, 20)).await;
    let url = a.object("chain", "cond");
    let response = get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.headers()["cache-status"], "upstream; hit, memory; fwd=uri-miss");
    let response = get_with(&url, &[("if-match", "\"other\"")]).await;
    assert_eq!(response.status(), 412);
    let response = get_with(&url, &[("range", "bytes=9000-")]).await;
    assert_eq!(response.status(), 416);
    assert_eq!(response.headers()["content-range"], "bytes */5000");
    // If-Range naming the current revision: the range, from B.
    let response = get_with(&url, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(response.status(), 206);
    let started = a.metric("rangecache_backfills_total{event=\"started\"}").await;
    assert_eq!(started, 1.0, "only the range read copies; 304, 412 and 416 read no byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_in_a_never_outlives_the_object_in_b() {
    let (a, b) = chain();
    let url = b.object("chain", "brief");
    let response = put_with(&url, &[("time-to-live", "3s")], "brief").await;
    assert_eq!(response.status(), 200);
    let response = client().get(a.object("chain", "brief")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("rangecache-expires"));
    assert_eq!(response.bytes().await.unwrap(), "brief");
    eventually("the copy to commit", Duration::from_secs(10), || async {
        a.metric(COMMITTED).await == 1.0
    })
    .await;
    let response = client().get(a.object("chain", "brief")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    eventually("A's copy to expire with B's object", Duration::from_secs(10), || async {
        client().get(a.object("chain", "brief")).send().await.unwrap().status() == 404
    })
    .await;
}
