//! Faults injected inside a real server's tiers (`kind = "faulty"`, in the binary the suites
//! build with the `faults` feature), each pinned to one step so the failure happens exactly
//! where the test says. The seeded random run over every step is `cargo xtask faults`.

mod common;

use std::time::Duration;

use common::{Server, client, disk_only, eventually, put, tempdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_object_whose_copy_into_tier_0_cannot_start_does_not_hold_its_key() {
    let dir = tempdir();
    let mut plain = Server::start_in(&dir.join("plain"), &disk_only(&dir));
    let etag = put(&plain.object("faults", "empty"), Vec::new()).await;
    assert!(plain.signal_and_wait("TERM", Duration::from_secs(10)).success());

    // Tier 0 refuses every writer; its reads work, so it misses and a copy into it starts.
    let config = format!(
        "[[tier]]\nname = \"memory\"\nkind = \"faulty\"\nwraps = \"memory\"\nmax_size = \"1MiB\"\n\
         [tier.faults]\nerror = 1.0\nsteps = [\"create\"]\n\n{}",
        disk_only(&dir)
    );
    let server = Server::start_in(&dir.join("faulty"), &config);
    let url = server.object("faults", "empty");
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.headers()["cache-status"], "disk; hit, memory; fwd=uri-miss; stored");
    assert!(response.bytes().await.unwrap().is_empty());

    // An empty object's copy is asked to commit before its writer exists; the writer then
    // fails to start. The copy must end there, or it holds the key and every write, delete
    // and invalidation of it waits for a commit that never comes.
    eventually("the copy to end", Duration::from_secs(10), || async {
        server.metric("rangecache_backfills_in_flight").await == 0.0
    })
    .await;
    let deleted = tokio::time::timeout(Duration::from_secs(10), client().delete(&url).send())
        .await
        .expect("the DELETE ended within 10 s")
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let injected =
        "rangecache_faults_injected_total{tier=\"memory\",step=\"create\",fault=\"error\"}";
    assert_eq!(server.metric(injected).await, 1.0);
    assert_eq!(server.metric("rangecache_backfills_total{event=\"discarded\"}").await, 1.0);
}
