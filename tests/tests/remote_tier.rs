//! The remote tier as cachew's `/api/v1` sees it: uploads are POSTs, an upstream's early refusal
//! comes back as its own status, an invalidation passes through a remote tier in the middle
//! of a chain without deleting the upstream's data, and a copy of an object whose upstream
//! announces no expiry (as cachew never does) still expires.

mod common;

use std::time::Duration;

use common::{Server, client, data, disk_only, eventually, memory_and_remote, put};

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
    let b = Server::start_with(|dir| format!("max_object_size = \"1MiB\"\n{}", disk_only(dir)));
    let a = Server::start(&memory_and_remote(&b.base));

    // B refuses from the announced length, before the body is sent: A says 413, not 502.
    let response =
        client().put(a.object("early", "big")).body(data(4 << 20, 42)).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(client().get(b.object("early", "big")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(a.object("early", "big")).send().await.unwrap().status(), 404);

    // A create-only write of an object B holds fails B's condition: A says 412, stores nothing.
    let etag = put(&a.object("early", "there"), data(512 << 10, 43)).await;
    let response = client()
        .put(a.object("early", "there"))
        .header("if-none-match", "*")
        .body(data(512 << 10, 44))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 412);
    let response = client().get(b.object("early", "there")).send().await.unwrap();
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag, "B kept the first write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_through_a_remote_tier_in_the_middle_keeps_the_upstreams_data() {
    // B: memory in front of disk. A: memory, then B, then its own authoritative disk.
    let b = Server::start_with(|dir| {
        format!(
            "[[tier]]\nname = \"memory\"\nkind = \"memory\"\nmax_size = \"64MiB\"\n\n{}",
            disk_only(dir)
        )
    });
    let a = Server::start_with(|dir| {
        format!(
            "[[tier]]\nname = \"memory\"\nkind = \"memory\"\nmax_size = \"64MiB\"\n\n\
             [[tier]]\nname = \"middle\"\nkind = \"remote\"\nurl = \"{}\"\n\n{}",
            b.base,
            disk_only(dir)
        )
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
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-status"].to_str().unwrap().starts_with("disk; hit"),
        "{:?}",
        response.headers()["cache-status"]
    );
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.bytes().await.unwrap(), body);
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
