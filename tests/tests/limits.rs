//! What a client may hold of the server: a request head trickled byte by byte, an idle
//! keep-alive connection, a stalled upload and more connections than allowed are all cut off or
//! held back at their bounds, while ordinary requests go on.

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, memory_tier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

fn limited(limits: &str) -> String {
    format!("[limits]\n{limits}\n\n{}", memory_tier("64MiB"))
}

/// Reads until the server closes the connection (or resets it); how long that took, or `None`
/// if it was still open after `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_is_cut_off_at_the_deadline_while_gets_go_on() {
    let server = Server::start(&limited("header_timeout = \"1s\""));
    let url = server.object("lim", "k");
    common::put(&url, b"ordinary".to_vec()).await;
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        slow.push(Some(stream));
    }
    let started = Instant::now();
    let mut open = slow.len();
    let mut closed_after = Vec::new();
    let mut gets = 0;
    // One byte a tenth of a second on every slow connection, with an ordinary GET between.
    while open > 0 && started.elapsed() < Duration::from_secs(10) {
        for stream in slow.iter_mut().flatten() {
            // A write may fail once the server has closed; the read below tells.
            let _ = stream.write_all(b"a").await;
        }
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "ordinary GETs are served meanwhile");
        assert_eq!(response.bytes().await.unwrap(), "ordinary");
        gets += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = 0;
        for slot in slow.iter_mut() {
            let Some(stream) = slot else { continue };
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
                // Still open and silent.
                Err(_) => open += 1,
                // Closed (or answered before closing): no byte of a head was ever complete.
                Ok(_) => {
                    closed_after.push(started.elapsed());
                    *slot = None;
                }
            }
        }
    }
    assert_eq!(open, 0, "every trickling connection was closed within 10 s");
    let earliest = closed_after.iter().min().copied().unwrap_or_default();
    let latest = closed_after.iter().max().copied().unwrap_or_default();
    eprintln!(
        "10 trickling connections closed after {earliest:?} to {latest:?}, {gets} GETs meanwhile"
    );
    assert!(earliest >= HEADER_TIMEOUT.mul_f64(0.8), "not before the deadline: {closed_after:?}");
    assert!(latest < HEADER_TIMEOUT * 3, "closed near the 1 s deadline: {closed_after:?}");
    assert!(gets >= 5, "ordinary GETs went on ({gets})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(&limited("header_timeout = \"1s\""));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 256];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("the idle connection was closed");
    assert!(closed < HEADER_TIMEOUT * 3, "closed after {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_abandoned_after_the_body_timeout_and_stores_nothing() {
    let server = Server::start(&limited("body_timeout = \"1s\""));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = "PUT /api/v1/object/lim/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[7u8; 10]).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server answered a stalled upload within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "a stalled upload is refused: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "after about 1 s: {:?}", started.elapsed());
    let response = client().get(server.object("lim", "stalled")).send().await.unwrap();
    assert_eq!(response.status(), 404, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_wait_until_one_closes() {
    let server = Server::start(&limited("max_connections = 2\nheader_timeout = \"30s\""));
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = [0u8; 256];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "the first two are served");
        held.push(stream);
    }
    // The third connects (the kernel queues it) but is not served while both are held.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut answer = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut answer)).await;
    assert!(early.is_err(), "a third connection is not served while two are held");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut answer))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
}
