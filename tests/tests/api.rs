//! `/api/v1` of one real server (memory + disk) over real HTTP: the RFC 9110 behaviour of
//! reads, conditional and atomic writes, bad input, auth, and the side routes.

mod common;

use std::time::Duration;

use common::{
    Server, client, data, eventually, get_json, get_with, memory_and_disk, put, put_with, tempdir,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn server() -> Server {
    Server::start_with(memory_and_disk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_rfc_9110_ranges_and_preconditions() {
    let server = server();
    let url = server.object("rfc", "object-1");
    let body = data(1000, 1);
    let response = put_with(&url, &[("content-type", "application/x-test")], body.clone()).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong quoted ETag: {etag}");

    // The whole object.
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-length"], "1000");
    assert_eq!(headers["etag"].to_str().unwrap(), etag);
    assert_eq!(headers["content-type"], "application/x-test");
    assert!(headers.contains_key("last-modified"));
    assert_eq!(headers["cache-status"], "memory; hit");
    let last_modified = headers["last-modified"].to_str().unwrap().to_owned();
    assert_eq!(response.bytes().await.unwrap(), body);

    // RFC 9110 §14.1.2: first-last, open-ended and suffix ranges.
    for (range, start, end) in [
        ("bytes=10-19", 10, 20),
        ("bytes=990-", 990, 1000),
        ("bytes=-5", 995, 1000),
        ("bytes=0-5000", 0, 1000),
    ] {
        let response = get_with(&url, &[("range", range)]).await;
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{}/1000", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(response.headers()["content-length"], (end - start).to_string().as_str());
        assert_eq!(response.headers()["accept-ranges"], "bytes");
        assert_eq!(response.bytes().await.unwrap(), body[start..end], "{range}");
    }

    // §15.5.17: unsatisfiable → 416 with bytes */SIZE and no body.
    let response = get_with(&url, &[("range", "bytes=2000-")]).await;
    assert_eq!(response.status(), 416);
    assert_eq!(response.headers()["content-range"], "bytes */1000");
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(response.bytes().await.unwrap().is_empty());

    // §14.2: a syntactically invalid Range is ignored.
    let response = get_with(&url, &[("range", "bytes=oops")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), body);

    // §14.6: several ranges → multipart/byteranges.
    let response = get_with(&url, &[("range", "bytes=0-1,900-901")]).await;
    assert_eq!(response.status(), 206);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart content type")
        .to_owned();
    let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let multipart = response.bytes().await.unwrap();
    assert_eq!(multipart.len(), length, "Content-Length matches the multipart body");
    let text = String::from_utf8_lossy(&multipart);
    assert!(
        text.contains("Content-Range: bytes 0-1/1000")
            || text.contains("content-range: bytes 0-1/1000")
    );
    assert!(text.contains("bytes 900-901/1000"));
    assert!(text.trim_end().ends_with(&format!("--{boundary}--")));
    let first = find(&multipart, &body[0..2]);
    assert!(first.is_some(), "part 1 carries bytes 0-1");

    // §13.1.2: If-None-Match matching → 304 with validators and no body.
    let response = get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.headers()["last-modified"].to_str().unwrap(), last_modified);
    assert!(response.headers().contains_key("cache-status"));
    assert!(response.bytes().await.unwrap().is_empty());

    // §13.1.3: If-Modified-Since at Last-Modified → 304.
    let response = get_with(&url, &[("if-modified-since", &last_modified)]).await;
    assert_eq!(response.status(), 304);

    // §13.1.1: If-Match failing → 412, before any Range.
    let response = get_with(&url, &[("if-match", "\"another\""), ("range", "bytes=0-0")]).await;
    assert_eq!(response.status(), 412);

    // §13.1.4: If-Unmodified-Since before Last-Modified → 412.
    let response =
        get_with(&url, &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]).await;
    assert_eq!(response.status(), 412);

    // §13.1.5: If-Range naming another revision → the whole object with 200.
    let response = get_with(&url, &[("range", "bytes=0-9"), ("if-range", "\"another\"")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), body);
    let response = get_with(&url, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), body[0..10]);

    // HEAD answers as GET without a body, ignoring Range.
    let response = client().head(&url).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1000");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(response.headers().contains_key("cache-status"));
    let response = client().head(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(response.status(), 304);

    // A missing object.
    let response = client().get(server.object("rfc", "absent")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["cache-status"], "disk; fwd=uri-miss, memory; fwd=uri-miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_modified_in_the_future_is_stored_as_the_time_of_the_write() {
    // RFC 9110 §8.8.2.1: a later Last-Modified is replaced by the time of the message, so
    // If-Unmodified-Since with the current time still lets a write through.
    let server = server();
    let url = server.object("writes", "future");
    let future = "Fri, 31 Dec 9999 23:59:59 GMT";
    let stored = put_with(&url, &[("last-modified", future)], "later").await;
    assert_eq!(stored.status(), 200);
    let read = get_with(&url, &[]).await;
    let last_modified = read.headers()["last-modified"].to_str().unwrap().to_owned();
    assert_ne!(last_modified, future);
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let unmodified = get_with(&url, &[("if-unmodified-since", &now)]).await;
    assert_eq!(unmodified.status(), 200, "stored Last-Modified {last_modified}, now {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_store_nothing_when_they_fail() {
    let server = server();
    let url = server.object("writes", "cond");
    // If-None-Match: * creates only when absent.
    let created = put_with(&url, &[("if-none-match", "*"), ("etag", "\"v1\"")], "one").await;
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["etag"], "\"v1\"", "a client-supplied ETag is stored");
    let refused = put_with(&url, &[("if-none-match", "*")], "two").await;
    assert_eq!(refused.status(), 412);
    // If-Match replaces only that version.
    let refused = put_with(&url, &[("if-match", "\"v0\"")], "three").await;
    assert_eq!(refused.status(), 412);
    let body = client().get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body, "one", "failed conditional writes stored nothing");
    let replaced = put_with(&url, &[("if-match", "\"v1\""), ("etag", "\"v2\"")], "four").await;
    assert_eq!(replaced.status(), 200);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"v2\"");
    assert_eq!(response.bytes().await.unwrap(), "four");
    // RFC 9110 §13.2.2 on a write: If-Match first, then an If-None-Match listing tags is 412
    // when one names the live revision and lets the write proceed otherwise.
    let send = |if_match: Option<&'static str>, if_none_match: &'static str, etag, body| {
        let mut request = client().put(&url).header("if-none-match", if_none_match);
        if let Some(if_match) = if_match {
            request = request.header("if-match", if_match);
        }
        request.header("etag", etag).body(body).send()
    };
    for (if_match, if_none_match, expect) in [
        (None, "\"v2\"", 412),
        (None, "W/\"v2\", \"v9\"", 412),
        (Some("\"v2\""), "\"v2\"", 412),
        (Some("\"v1\""), "\"v0\"", 412),
        (Some("\"v2\""), "*", 412),
    ] {
        let response = send(if_match, if_none_match, "\"bad\"", "five").await.unwrap();
        assert_eq!(
            response.status(),
            expect,
            "If-Match {if_match:?}, If-None-Match {if_none_match}"
        );
        assert_eq!(response.headers()["cache-status"], "disk; fwd=method, memory; fwd=method");
    }
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"v2\"", "refused writes stored nothing");
    let response = send(None, "\"v0\", \"v1\"", "\"v3\"", "six").await.unwrap();
    assert_eq!(response.status(), 200, "no listed tag names the live revision");
    let response = send(Some("\"v3\""), "\"v2\"", "\"v4\"", "seven").await.unwrap();
    assert_eq!(response.status(), 200, "If-Match holds and If-None-Match names another");
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"v4\"");
    assert_eq!(response.bytes().await.unwrap(), "seven");
    let fresh = server.object("writes", "fresh");
    let response = put_with(&fresh, &[("if-none-match", "\"v1\"")], "new").await;
    assert_eq!(response.status(), 200, "an If-None-Match with tags creates an absent object");
    // Generated ETags are unique per write.
    let a = put(&server.object("writes", "gen"), b"same".to_vec()).await;
    let b = put(&server.object("writes", "gen"), b"same".to_vec()).await;
    assert_ne!(a, b, "each write gets its own ETag");
    // Weak ETags cannot be stored.
    let weak = put_with(&url, &[("etag", "W/\"x\"")], "x").await;
    assert_eq!(weak.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_loses_nothing() {
    let dir = tempdir();
    let config =
        memory_and_disk(&dir).replace("max_object_size = \"256MiB\"", "max_object_size = \"1KiB\"");
    let server = Server::start_in(&dir, &config);
    let status = |r: reqwest::Response| r.status().as_u16();
    let get = |path: &str| client().get(server.url(path)).send();
    assert_eq!(status(get("/api/v1/object/_bad/key").await.unwrap()), 400);
    assert_eq!(status(get("/api/v1/object/a.b/key").await.unwrap()), 400);
    assert_eq!(status(get("/api/v1/nowhere").await.unwrap()), 404);
    assert_eq!(status(get("/api/v1/object/ns/absent").await.unwrap()), 404);
    let patch = client().patch(server.object("ns", "k")).send().await.unwrap();
    assert_eq!(patch.status(), 405);
    // Too large: announced up front, or counted while streaming a chunked body.
    let url = server.object("ns", "big");
    let response = client().put(&url).body(vec![0u8; 2048]).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["cache-status"], "disk; fwd=bypass, memory; fwd=bypass");
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![1u8; 512])));
    let response =
        client().put(&url).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(get("/api/v1/object/ns/big").await.unwrap().status(), 404, "413 stored nothing");
    let response = put_with(&url, &[("time-to-live", "soon")], "x").await;
    assert_eq!(response.status(), 400);
    let response = put_with(&url, &[("last-modified", "yesterday")], "x").await;
    assert_eq!(response.status(), 400);
    // Delete: 200, then 404.
    put(&server.object("ns", "gone"), b"x".to_vec()).await;
    assert_eq!(client().delete(server.object("ns", "gone")).send().await.unwrap().status(), 200);
    assert_eq!(client().delete(server.object("ns", "gone")).send().await.unwrap().status(), 404);
    assert_eq!(get("/api/v1/object/ns/gone").await.unwrap().status(), 404);
    // A conditional field that is not text, and a header block far too large.
    let response = client()
        .get(server.object("ns", "gone"))
        .header("if-none-match", reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    head.extend(std::iter::repeat_n(b'x', 600_000));
    head.extend(b"\r\n\r\n");
    let _ = stream.write_all(&head).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The server survived all of it.
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert!(!server.log().contains("panicked"), "no panic:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_short_leaves_nothing_behind() {
    let server = server();
    for (name, close_early) in [("short", false), ("disconnected", true)] {
        let path = format!("/api/v1/object/cut/{name}");
        let refused = "rangecache_requests_total{method=\"PUT\",status=\"400\"}";
        let refused_before = server.metric_opt(refused).await.unwrap_or(0.0);
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 100000\r\n\r\n",
            server.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&data(50_000, 3)).await.unwrap();
        if close_early {
            drop(stream);
        } else {
            // Half-close: the server sees EOF with half of the announced bytes, and answers.
            stream.shutdown().await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await
                .expect("the server answers a short upload within 10 s")
                .unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 400"), "a short upload is refused: {answer:?}");
            assert!(answer.contains("incomplete upload"), "{answer}");
        }
        // This upload's own refusal: its log line, and one more 400 counted for a PUT.
        let logged = |log: &str| {
            log.lines()
                .any(|line| line.contains(&format!("path={path} ")) && line.contains("status=400"))
        };
        eventually(&format!("the refusal of {path}"), Duration::from_secs(10), || async {
            logged(&server.log())
                && server.metric_opt(refused).await.unwrap_or(0.0) > refused_before
        })
        .await;
        let response = client().get(server.object("cut", name)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{name}: nothing stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_reads_and_writes() {
    let dir = tempdir();
    let config = format!(
        "{}\n[auth]\nread_token = \"r-secret\"\nwrite_token = \"w-secret\"\n",
        memory_and_disk(&dir)
    );
    let server = Server::start_in(&dir, &config);
    let url = server.object("auth", "k");
    let response = client().put(&url).body("x").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(response.headers()["cache-status"], "disk; fwd=bypass, memory; fwd=bypass");
    let response = client().put(&url).bearer_auth("r-secret").body("x").send().await.unwrap();
    assert_eq!(response.status(), 401, "the read token cannot write");
    let response = client().put(&url).bearer_auth("w-secret").body("x").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = client().get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), 401);
    for token in ["r-secret", "w-secret"] {
        let response = client().get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200, "{token} reads");
    }
    let response = client().delete(&url).bearer_auth("r-secret").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(client().get(server.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_namespaces_health_and_metrics() {
    let server = server();
    put(&server.object("zeta", "a"), data(100, 4)).await;
    put(&server.object("alpha", "b"), data(50, 5)).await;
    let names = get_json(&server.url("/api/v1/namespaces")).await;
    assert_eq!(names, serde_json::json!(["alpha", "zeta"]));
    let stats = get_json(&server.url("/api/v1/stats")).await;
    assert_eq!(stats["objects"], 2, "{stats}");
    assert_eq!(stats["size"], 150, "{stats}");
    assert_eq!(stats["tiers"][0]["name"], "memory");
    assert_eq!(stats["tiers"][0]["objects"], 2);
    assert_eq!(stats["tiers"][1]["name"], "disk");
    let _ = get_with(server.object("zeta", "a"), &[("range", "bytes=0-9")]).await;
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let metrics = response.text().await.unwrap();
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text:\n{metrics}");
    for family in [
        "rangecache_requests_total{method=\"PUT\",status=\"200\"} 2",
        "rangecache_requests_total{method=\"GET\",status=\"206\"} 1",
        "rangecache_tier_reads_total{tier=\"memory\",result=\"hit\"} 1",
        "rangecache_backfills_total{event=\"started\"} 0",
        "rangecache_backfills_in_flight 0",
        "rangecache_response_bytes_total",
    ] {
        assert!(metrics.contains(family), "missing {family:?} in\n{metrics}");
    }
    assert_eq!(client().get(server.url("/healthz")).send().await.unwrap().status(), 200);
    // One log line per request, with what happened.
    let ranged_line = |log: &str| {
        log.lines().any(|line| {
            ["method=GET", "path=/api/v1/object/zeta/a", "status=206", "bytes=10", "duration_ms="]
                .iter()
                .all(|part| line.contains(part))
                && line.contains("cache_status=\"memory; hit\"")
        })
    };
    eventually("the ranged read's log line", Duration::from_secs(10), || async {
        ranged_line(&server.log())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_objects_are_never_served() {
    let server = server();
    let url = server.object("ttl", "short");
    let response = put_with(&url, &[("time-to-live", "1s")], "brief").await;
    assert_eq!(response.status(), 200);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    eventually("the object to expire", Duration::from_secs(10), || async {
        client().get(&url).send().await.unwrap().status() == 404
    })
    .await;

    // A tier's max_ttl caps a longer Time-To-Live.
    let capped = Server::start_with(|dir| {
        format!(
            "[[tier]]\nname = \"disk\"\nkind = \"disk\"\npath = \"{}\"\nmax_ttl = \"1s\"\n",
            dir.join("disk").display()
        )
    });
    let url = capped.object("ttl", "capped");
    let response = put_with(&url, &[("time-to-live", "1h")], "x").await;
    assert_eq!(response.status(), 200);
    eventually("the capped object to expire", Duration::from_secs(10), || async {
        client().get(&url).send().await.unwrap().status() == 404
    })
    .await;
}

#[test]
fn a_configuration_error_exits_2_with_one_line_naming_the_field() {
    let dir = tempdir();
    for (config, field) in [
        ("bogus = 1\n", "bogus"),
        ("[[tier]]\nname = \"m\"\nkind = \"memory\"\nmax_size = \"lots\"\n", "tier[0].max_size"),
        ("listen = \"127.0.0.1:8080\"\n", "tier"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let output = std::process::Command::new(common::binary())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{config}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(field), "{stderr:?} names {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_will_not_start_where_something_already_listens() {
    // Each serving thread has a listener of its own on the one address (SO_REUSEPORT), which
    // alone would let a second server share the port of the first and take half its clients.
    let first = server();
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = [first.addr, plain.local_addr().unwrap()];
    let dir = tempdir();
    let path = dir.join("second.toml");
    std::fs::write(&path, "[[tier]]\nname = \"m\"\nkind = \"memory\"\nmax_size = \"1MiB\"\n")
        .unwrap();
    for addr in taken {
        let mut second = std::process::Command::new(common::binary())
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &addr.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = second.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                second.kill().unwrap();
                panic!("a second server started on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{addr}: {stderr}");
        assert!(stderr.contains("cannot listen on"), "{addr}: {stderr}");
    }
    // The first server still answers every connection.
    for _ in 0..20 {
        let response = reqwest::Client::new().get(first.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_too_large_for_memory_is_stored_deeper_and_the_old_copy_dropped() {
    let dir = tempdir();
    let config = memory_and_disk(&dir).replace("max_size = \"512MiB\"", "max_size = \"4KiB\"");
    let server = Server::start_in(&dir, &config);
    let url = server.object("sizes", "grows");
    put(&url, data(1000, 40)).await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "memory; hit");
    // Announced up front, and discovered while streaming a chunked body.
    for (round, chunked) in [(41, false), (42, true)] {
        let big = data(64 << 10, round);
        let request = client().put(&url);
        let request = if chunked {
            let chunks =
                big.chunks(8192).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>();
            request.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        } else {
            request.body(big.clone())
        };
        assert_eq!(request.send().await.unwrap().status(), 200, "chunked: {chunked}");
        let response = client().get(&url).send().await.unwrap();
        let cache_status = response.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(cache_status.starts_with("disk; hit, memory; fwd=uri-miss"), "{cache_status}");
        assert!(response.bytes().await.unwrap() == big, "the new revision, chunked: {chunked}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_server_with_exit_0_and_the_disk_tier_keeps_its_objects() {
    let dir = tempdir();
    let config = memory_and_disk(&dir);
    let mut server = Server::start_in(&dir, &config);
    let body = data(10_000, 50);
    put(&server.object("keep", "k"), body.clone()).await;
    let status = server.signal_and_wait("INT", Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("stopped"));
    let server = Server::start_in(&dir, &config);
    let response = client().get(server.object("keep", "k")).send().await.unwrap();
    assert_eq!(response.headers()["cache-status"], "disk; hit, memory; fwd=uri-miss; stored");
    assert_eq!(response.bytes().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_segments_are_percent_decoded_before_they_name_an_object() {
    let server = server();
    let body = data(300, 50);
    put(&server.url("/api/v1/object/ns/my%20file"), body.clone()).await;
    // The same name spelled differently on the wire is the same object.
    for spelling in ["/api/v1/object/ns/my%20fil%65", "/api/v1/object/n%73/%6Dy%20file"] {
        let response = client().get(server.url(spelling)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{spelling}");
        assert_eq!(response.bytes().await.unwrap(), body, "{spelling}");
    }
    // The key is the SHA-256 of the decoded name, as cachew hashes it.
    let on_disk = server.dir.join("disk").join("ns").join(common::sha256(b"my file"));
    assert!(on_disk.exists(), "{} exists", on_disk.display());
    // `%61bc` is the valid namespace `abc`.
    put(&server.url("/api/v1/object/%61bc/k"), b"x".to_vec()).await;
    let response = client().get(server.object("abc", "k")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(get_json(&server.url("/api/v1/namespaces")).await, serde_json::json!(["abc", "ns"]));
    // A segment that is not UTF-8 once decoded, and a namespace that is invalid once decoded.
    for path in ["/api/v1/object/ns/%FF%FE", "/api/v1/object/%FF/k", "/api/v1/object/a%2Fb/k"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_too_large_for_the_authoritative_tier_is_413_and_ends_the_connection() {
    let dir = tempdir();
    let config = memory_and_disk(&dir).replace("max_size = \"2GiB\"", "max_size = \"4KiB\"");
    let server = Server::start_in(&dir, &config);
    let url = server.object("sizes", "huge");
    // Announced up front (refused when the tier is asked to create it), and discovered while
    // streaming a chunked body (refused by the tier's writer).
    for chunked in [false, true] {
        let big = data(64 << 10, 60);
        let request = client().put(&url);
        let request = if chunked {
            let chunks =
                big.chunks(8192).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>();
            request.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        } else {
            request.body(big)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 413, "chunked: {chunked}");
        assert_eq!(response.headers()["connection"], "close", "chunked: {chunked}");
        assert_eq!(
            response.headers()["cache-status"],
            "disk; fwd=method, memory; fwd=method",
            "chunked: {chunked}"
        );
    }
    assert_eq!(client().get(&url).send().await.unwrap().status(), 404, "413 stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_answer_carries_cache_status() {
    let server = server();
    let url = server.object("status", "k");
    let bypass = "disk; fwd=bypass, memory; fwd=bypass";
    let touched = "disk; fwd=method, memory; fwd=method";
    let check = |response: reqwest::Response, status: u16, cache_status: &'static str| {
        assert_eq!(response.status(), status, "{cache_status}");
        assert_eq!(response.headers()["cache-status"], cache_status, "{status}");
    };
    let response = client().put(&url).body("one").send().await.unwrap();
    check(response, 200, "disk; fwd=method; stored, memory; fwd=method");
    let response = put_with(&url, &[("if-none-match", "*")], "x").await;
    check(response, 412, touched);
    let response = put_with(&url, &[("etag", "W/\"x\"")], "x").await;
    check(response, 400, bypass);
    check(client().patch(&url).send().await.unwrap(), 405, bypass);
    check(client().get(server.object("_bad", "k")).send().await.unwrap(), 400, bypass);
    let invalidate = format!("{url}/invalidate");
    check(client().get(&invalidate).send().await.unwrap(), 405, bypass);
    let response = client().post(&invalidate).send().await.unwrap();
    check(response, 200, "disk; fwd=bypass, memory; fwd=method");
    check(client().delete(&url).send().await.unwrap(), 200, touched);
    check(client().delete(&url).send().await.unwrap(), 404, touched);
    let response = client().get(&url).send().await.unwrap();
    check(response, 404, "disk; fwd=uri-miss, memory; fwd=uri-miss");
}
