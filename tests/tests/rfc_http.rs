//! The core's RFC 9110 conformance table (core/tests/data/rfc_cases.json) replayed over real
//! HTTP against a real server: each case's object is stored with its ETag, Last-Modified and
//! headers, then requested with the case's fields, and the status, headers and body bytes that
//! reach the client are checked.
//!
//! Cases for methods other than GET and HEAD are planning-only in the core (a real PUT or
//! DELETE is a write, not a read), so they are left to `core/tests/rfc.rs`.

mod common;

use common::{Server, client, data, memory_and_disk, tempdir};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rfc_table_holds_end_to_end() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/data/rfc_cases.json");
    let table: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = tempdir();
    let server = Server::start_in(&dir, &memory_and_disk(&dir));
    let mut n_checked = 0;
    for (idx, case) in table["cases"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let method = case["request"]["method"].as_str().unwrap();
        if method != "GET" && method != "HEAD" {
            continue;
        }
        let object = &case["object"];
        let size = object["size"].as_u64().unwrap() as usize;
        let body = data(size, idx as u64);
        let url = server.object("rfc", &format!("case-{idx}"));
        let mut put = client()
            .put(&url)
            .header("etag", object["etag"].as_str().unwrap())
            .header("last-modified", object["lastModified"].as_str().unwrap());
        if let Some(headers) = object["headers"].as_object() {
            for (header, value) in headers {
                put = put.header(header, value.as_str().unwrap());
            }
        }
        let stored = put.body(body.clone()).send().await.unwrap();
        assert_eq!(stored.status(), 200, "{name}: storing the object");

        let mut request = client().request(method.parse().unwrap(), &url);
        for (header, value) in case["request"]["headers"].as_object().unwrap() {
            request = request.header(header, value.as_str().unwrap());
        }
        let response = request.send().await.unwrap();
        let expected = &case["expected"];
        assert_eq!(
            response.status().as_u16() as u64,
            expected["status"].as_u64().unwrap(),
            "{name}"
        );
        let headers = response.headers().clone();
        assert!(
            headers.contains_key("cache-status"),
            "{name}: Cache-Status on every object response"
        );
        for (header, value) in expected["headers"].as_object().unwrap() {
            let got: Vec<_> = headers.get_all(header).iter().collect();
            assert_eq!(got.len(), 1, "{name}: one {header}");
            assert_eq!(got[0].to_str().unwrap(), value.as_str().unwrap(), "{name}: {header}");
        }
        for header in expected["absentHeaders"].as_array().unwrap() {
            let header = header.as_str().unwrap();
            assert!(!headers.contains_key(header), "{name}: no {header}");
        }
        if let Some(prefixes) = expected["headerPrefixes"].as_object() {
            for (header, prefix) in prefixes {
                let got = headers[header.as_str()].to_str().unwrap();
                assert!(got.starts_with(prefix.as_str().unwrap()), "{name}: {header}: {got}");
            }
        }
        let got = response.bytes().await.unwrap();
        let want = &expected["body"];
        let window =
            |w: &Value| w["start"].as_u64().unwrap() as usize..w["end"].as_u64().unwrap() as usize;
        match (method, want["kind"].as_str().unwrap()) {
            ("HEAD", _) | (_, "none") => assert!(got.is_empty(), "{name}: no body"),
            (_, "full") => assert!(got[..] == body[..], "{name}: the whole object"),
            (_, "range") => assert!(got[..] == body[window(want)], "{name}: the window"),
            (_, "multipart") => {
                let length: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
                assert_eq!(got.len(), length, "{name}: Content-Length of the multipart body");
                let mut at = 0;
                for part in want["parts"].as_array().unwrap() {
                    let bytes = &body[window(part)];
                    let found = got[at..].windows(bytes.len()).position(|w| w == bytes);
                    let found = found.unwrap_or_else(|| panic!("{name}: part {part} in order"));
                    at += found + bytes.len();
                }
            }
            (_, other) => panic!("{name}: unknown body kind {other}"),
        }
        n_checked += 1;
    }
    assert!(n_checked >= 40, "most of the table is GET or HEAD ({n_checked} checked)");
}
