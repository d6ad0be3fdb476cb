//! The remote tier as cachew's `/api/v1` sees it: uploads are POSTs, an upstream's early refusal
//! comes back as its own status, an invalidation passes through a remote tier in the middle
//! of a chain without deleting the upstream's data, and a copy of an object whose upstream
//! announces no expiry (as cachew never does) still expires.

mod common;

use std::time::Duration;

use common::{
    Server, assert_served, client, data, disk_only, eventually, memory_and_remote, memory_tier,
    put, put_with, remote_tier, sha256,
};

const B_POST_200: &str = "rangecache_requests_total{method=\"POST\",status=\"200\"}";
const B_PUT_200: &str = "rangecache_requests_total{method=\"PUT\",status=\"200\"}";
const B_DELETE_200: &str = "rangecache_requests_total{method=\"DELETE\",status=\"200\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_remote_tier_are_posts() {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    let body = data(300_000, 40);
    let etag = put(&a.object("post", "one"), body.clone()).await;
    let response = client().post(a.object("post", "two")).body(data(10, 41)).send().await.unwrap();
    assert_eq!(response.status(), 200);

    assert_eq!(b.metric(B_POST_200).await, 2.0, "both writes reached B as POSTs");
    assert_eq!(b.metric(B_PUT_200).await, 0.0, "B saw no PUT");
    let response = client().get(b.object("post", "one")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.bytes().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_an_upload_early_is_answered_with_its_status() {
    let b = Server::start_with(|dir| format!("max_object_size = \"64KiB\"\n{}", disk_only(dir)));
    let a = Server::start(&memory_and_remote(&b.base));

    // B refuses from the announced length and answers while A is still uploading: the client
    // sends a first part, waits until B has answered 413, then sends the rest, which A can no
    // longer pass on. A says 413, not 502. (The rest stays within the 1 MiB a refusing server
    // drains, so neither A nor B resets a connection with bytes unread.)
    let body = data(1280 << 10, 42);
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let upload = tokio::spawn(
        client()
            .put(a.object("early", "big"))
            .header("content-length", body.len())
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    let (first, rest) = body.split_at(256 << 10);
    chunks.send(Ok(first.to_vec())).await.unwrap();
    eventually("B to refuse the upload", Duration::from_secs(10), || async {
        b.metric("rangecache_requests_total{method=\"POST\",status=\"413\"}").await == 1.0
    })
    .await;
    let rest: Vec<Vec<u8>> = rest.chunks(64 << 10).map(<[u8]>::to_vec).collect();
    // Sent aside: once A has answered it reads no more, and the sender just stops.
    tokio::spawn(async move {
        for chunk in rest {
            if chunks.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(client().get(b.object("early", "big")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(a.object("early", "big")).send().await.unwrap().status(), 404);

    // A create-only write of an object B holds fails B's condition: A says 412, stores nothing.
    let etag = put(&a.object("early", "there"), data(32 << 10, 43)).await;
    let response =
        put_with(a.object("early", "there"), &[("if-none-match", "*")], data(32 << 10, 44)).await;
    assert_eq!(response.status(), 412);
    let response = client().get(b.object("early", "there")).send().await.unwrap();
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag, "B kept the first write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_through_a_remote_tier_in_the_middle_keeps_the_upstreams_data() {
    // B: memory in front of disk. A: memory, then B, then its own authoritative disk.
    let b = Server::start_with(|dir| format!("{}\n{}", memory_tier("64MiB"), disk_only(dir)));
    let a = Server::start_with(|dir| {
        let middle = remote_tier("middle", &b.base);
        format!("{}\n{middle}\n{}", memory_tier("64MiB"), disk_only(dir))
    });
    let body = data(100_000, 45);
    let etag = put(&a.object("inv", "kept"), body.clone()).await;
    let response = client().get(b.object("inv", "kept")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");

    let response = client().post(a.url("/api/v1/object/inv/kept/invalidate")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(b.metric(B_DELETE_200).await, 0.0, "A sent B no DELETE");
    // B dropped only its nearer copy: its disk still serves the object.
    let response = client().get(b.object("inv", "kept")).send().await.unwrap();
    assert_served(response, "disk; hit", &etag, &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_object_without_an_announced_expiry_lives_copy_ttl() {
    // B stores the object with no Time-To-Live and no max_ttl: it announces no expiry.
    let b = Server::start_with(disk_only);
    let a = Server::start(&format!("{}copy_ttl = \"2s\"\n", memory_and_remote(&b.base)));
    put(&b.object("ttl", "open"), data(1000, 46)).await;
    let response = client().head(b.object("ttl", "open")).send().await.unwrap();
    assert!(!response.headers().contains_key("rangecache-expires"), "B announces no expiry");

    let response = client().get(a.object("ttl", "open")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("rangecache-expires"), "A's answer expires");
    assert_eq!(response.bytes().await.unwrap().len(), 1000);
    eventually("the copy to commit", Duration::from_secs(10), || async {
        a.metric("rangecache_backfills_total{event=\"committed\"}").await == 1.0
    })
    .await;
    let response = client().get(a.object("ttl", "open")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    // Once copy_ttl has passed, A's memory no longer answers: B does, and A copies it again.
    eventually("A's copy to expire", Duration::from_secs(10), || async {
        let response = client().get(a.object("ttl", "open")).send().await.unwrap();
        response.headers()["cache-status"].to_str().unwrap().starts_with("upstream; hit")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearer_tier_failing_its_commit_does_not_undo_the_write() {
    // C, A's tier 0, cannot commit this key: a directory stands where its disk tier renames the
    // finished file (rename over a non-empty directory fails, for root too). C notices only at
    // commit, after the whole body arrived, so its failure comes after A's authoritative disk
    // committed.
    let c = Server::start_with(disk_only);
    let blocker = c.dir.join("disk").join("commitfail").join(sha256(b"k"));
    std::fs::create_dir_all(&blocker).unwrap();
    std::fs::write(blocker.join("in-the-way"), b"x").unwrap();
    let a =
        Server::start_with(|dir| format!("{}\n{}", remote_tier("near", &c.base), disk_only(dir)));

    let body = data(1000, 47);
    let response =
        client().put(a.object("commitfail", "k")).body(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200, "the authoritative tier holds the write\n{}", a.log());
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        a.metric("rangecache_tier_writes_total{tier=\"near\",result=\"error\"}").await,
        1.0,
        "C's commit did fail"
    );
    assert_eq!(client().get(c.object("commitfail", "k")).send().await.unwrap().status(), 404);
    let response = client().get(a.object("commitfail", "k")).send().await.unwrap();
    assert_served(response, "disk; hit", &etag, &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_end_to_end_headers_survive_a_chain_of_servers() {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    let response = put_with(
        b.object("hdr", "one"),
        &[("content-type", "application/x-tar"), ("x-build-id", "4711")],
        data(1_000, 43),
    )
    .await;
    assert_eq!(response.status(), 200);

    // A cold read on A copies B's revision, stored headers included, into A's memory tier.
    let read = || async { client().get(a.object("hdr", "one")).send().await.unwrap() };
    let cold = read().await;
    assert_eq!(cold.headers()["x-build-id"], "4711");
    assert_eq!(cold.bytes().await.unwrap(), data(1_000, 43));
    eventually("A's memory tier to serve the copy", Duration::from_secs(10), || async {
        let response = read().await;
        response.headers()["cache-status"].to_str().unwrap().starts_with("memory; hit")
    })
    .await;
    let warm = read().await;
    assert_eq!(warm.status(), 200);
    assert_eq!(warm.headers()["x-build-id"], "4711");
    assert_eq!(warm.headers()["content-type"], "application/x-tar");
    assert_eq!(warm.bytes().await.unwrap(), data(1_000, 43));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_that_claims_no_upstream_status() {
    let mut b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    put(&b.object("gone", "k"), data(100, 60)).await;
    b.kill();
    let response = client().get(a.object("gone", "k")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    // RFC 9211 §2.3: no response came back from B, so no fwd-status names one; memory's
    // forward got the 502 the response carries, which needs no fwd-status either.
    assert_eq!(
        response.headers()["cache-status"],
        "upstream; fwd=miss; detail=error, memory; fwd=uri-miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_at_the_largest_position_is_unsatisfiable_through_a_remote_tier() {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    put(&b.object("huge", "k"), data(10, 61)).await;
    // Both positions saturate to u64::MAX in the Range parser.
    for range in [
        "bytes=18446744073709551615-18446744073709551615",
        "bytes=99999999999999999999-99999999999999999999",
    ] {
        let response = client().get(a.object("huge", "k")).header("range", range).send().await;
        let response = response.unwrap_or_else(|e| panic!("{range}: {e}\n{}", a.log()));
        assert_eq!(response.status(), 416, "{range}");
        assert_eq!(response.headers()["content-range"], "bytes */10");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_range_of_an_empty_object_upstream_is_the_empty_object() {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    let etag = put(&b.object("empty", "k"), Vec::new()).await;
    // RFC 9110 §14.1.2: satisfiable, yet no Content-Range can describe it; B answers 200.
    let response = client().get(b.object("empty", "k")).header("range", "bytes=-5").send().await;
    assert_eq!(response.unwrap().status(), 200);
    let response =
        client().get(a.object("empty", "k")).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.headers().get("cache-status"));
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert!(
        response.headers()["cache-status"].to_str().unwrap().starts_with("upstream; hit"),
        "{:?}",
        response.headers()["cache-status"]
    );
    assert_eq!(response.bytes().await.unwrap().len(), 0);
}
