//! A server whose authoritative tier is a real S3-compatible bucket: writes land in the
//! bucket, a second server over the same bucket serves them, ranged reads come from S3 at once
//! and fill memory in the background, and conditional reads answer from S3's revision.

mod common;

use std::time::Duration;

use common::proxy::{Plan, Proxy};
use common::{S3, Server, client, data, eventually, put, sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_tier_is_authoritative_behind_memory() {
    let s3 = S3::get();
    let prefix = format!("e2e-{}/", std::process::id());
    let config = format!(
        "[[tier]]\nname = \"memory\"\nkind = \"memory\"\nmax_size = \"64MiB\"\n\n{}",
        s3.tier("shared", &prefix)
    );
    let writer = Server::start_with_env(&config, &s3.env);
    let body = data(3 << 20, 30);
    let etag = put(&writer.object("s3ns", "blob"), body.clone()).await;

    // A second server over the same bucket starts cold: S3 answers the range at once...
    let reader = Server::start_with_env(&config, &s3.env);
    let url = reader.object("s3ns", "blob");
    let response = client().get(&url).header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 1000-1999/3145728");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.headers()["cache-status"], "shared; hit, memory; fwd=uri-miss; stored");
    assert_eq!(response.bytes().await.unwrap(), body[1000..2000]);
    // ...and the whole object lands in memory in the background.
    eventually("the copy from S3 to commit", Duration::from_secs(30), || async {
        reader.metric("rangecache_backfills_total{event=\"committed\"}").await >= 1.0
    })
    .await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    assert_eq!(response.bytes().await.unwrap(), body);

    // Conditional answers from the S3 revision, on a third cold server.
    let cold = Server::start_with_env(&config, &s3.env);
    let url = cold.object("s3ns", "blob");
    let response = client().get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    let response = client().get(&url).header("if-match", "\"other\"").send().await.unwrap();
    assert_eq!(response.status(), 412);
    let response = client().get(&url).header("range", "bytes=99999999-").send().await.unwrap();
    assert_eq!(response.status(), 416);
    assert_eq!(response.headers()["content-range"], "bytes */3145728");

    // Delete through one server removes it from the bucket for all.
    let response = client().delete(writer.object("s3ns", "blob")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client().head(cold.object("s3ns", "blob")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_from_s3_comes_in_parallel_parts_and_is_whole() {
    let s3 = S3::get();
    let prefix = format!("e2e-large-{}/", std::process::id());
    let memory = "[[tier]]\nname = \"memory\"\nkind = \"memory\"\nmax_size = \"256MiB\"\n\n";
    let writer =
        Server::start_with_env(&format!("{memory}{}", s3.tier("shared", &prefix)), &s3.env);
    let size = 40 << 20;
    let body = data(size, 31);
    put(&writer.object("s3ns", "large"), body.clone()).await;

    // A cold server reaches the bucket through a proxy that sees the connections.
    let s3_addr = s3.endpoint.trim_start_matches("http://").parse().expect("an address");
    let proxy = Proxy::start(s3_addr, Plan::default()).await;
    let tier = s3.tier("shared", &prefix).replace(&s3.endpoint, &proxy.base);
    let reader = Server::start_with_env(&format!("{memory}{tier}"), &s3.env);
    let url = reader.object("s3ns", "large");
    let response = client().get(&url).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), body[..10]);
    eventually("the copy from S3 to commit", Duration::from_secs(60), || async {
        reader.metric("rangecache_backfills_total{event=\"committed\"}").await >= 1.0
    })
    .await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    let copied = response.bytes().await.unwrap();
    assert_eq!(sha256(&copied), sha256(&body), "the copy in memory is the object");
    // 40 MiB: five parts of 8 MiB (the first answer is one), all in flight at once.
    assert!(proxy.most_open() >= 5, "{} connections at most", proxy.most_open());
}
