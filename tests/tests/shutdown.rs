//! Shutdown with a request still in flight: a download the client stopped reading does not
//! hold the process, its body is cut off the tiers, and the disk tier is intact afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, data, memory_and_disk, put, sha256, tempdir};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_download_exits_0_and_cuts_the_download() {
    let dir = tempdir();
    let config = memory_and_disk(&dir);
    let mut server = Server::start_in(&dir, &config);
    let body = data(64 << 20, 50);
    put(&server.object("down", "big"), body.clone()).await;

    let response = client().get(server.object("down", "big")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a first chunk").expect("chunk");
    let mut received = first.len();
    // The client stops reading: 64 MiB cannot fit in the socket buffers.

    let started = Instant::now();
    let status =
        tokio::task::block_in_place(|| server.signal_and_wait("TERM", Duration::from_secs(20)));
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(9), "prompt: {:?}", started.elapsed());
    let log = server.log();
    assert!(log.contains("cutting them off the tiers"), "{log}");

    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => received += chunk.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed || received < body.len(), "the download was cut: {received} bytes");

    let server = Server::start_in(&dir, &config);
    let response = client().get(server.object("down", "big")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sha256(&response.bytes().await.unwrap()), sha256(&body));
}
