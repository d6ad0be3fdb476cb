//! A server whose authoritative tier is a real S3-compatible bucket: writes land in the
//! bucket, a second server over the same bucket serves them, ranged reads come from S3 at once
//! and fill memory in the background, and conditional reads answer from S3's revision.

mod common;

use std::time::Duration;

use common::{S3, Server, client, data, eventually, put};

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
