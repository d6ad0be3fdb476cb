//! What an operator relies on, against the real binary: latency and size histograms read from a
//! real scrape, JSON access lines carrying the request id, readiness that waits for the tiers
//! and fails once shutdown begins, the environment overriding the file, and `check-config`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::proxy::{Plan, Proxy};
use common::{
    Server, binary, client, data, disk_only, eventually, memory_and_disk, memory_and_remote,
    memory_tier, put, tempdir,
};

/// One histogram series of a scrape: its buckets by upper bound, in the order written, its sum
/// and its count.
#[derive(Debug, Default)]
struct Series {
    buckets: Vec<(String, u64)>,
    sum: Option<f64>,
    count: Option<u64>,
}

/// The histograms of an OpenMetrics exposition, by family and then by labels without `le`;
/// checks the rules of the format on the way: a `# TYPE` and a `# UNIT` matching the name's
/// suffix, buckets cumulative and ending in `+Inf` equal to the count.
fn histograms(text: &str) -> BTreeMap<String, BTreeMap<String, Series>> {
    let mut families: BTreeMap<String, BTreeMap<String, Series>> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" histogram") {
                families.insert(name.to_owned(), BTreeMap::new());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').expect("# UNIT name unit");
            units.insert(name.to_owned(), unit.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let Some((family, suffix)) = families
            .keys()
            .find_map(|family| Some((family.clone(), name.strip_prefix(family.as_str())?)))
        else {
            continue;
        };
        let mut le = None;
        let others: Vec<&str> = labels
            .split(',')
            .filter(|label| !label.is_empty())
            .filter(|label| match label.strip_prefix("le=") {
                Some(bound) => {
                    le = Some(bound.trim_matches('"').to_owned());
                    false
                }
                None => true,
            })
            .collect();
        let entry = families.get_mut(&family).unwrap().entry(others.join(",")).or_default();
        match suffix {
            "_bucket" => entry.buckets.push((le.expect("a bucket has le"), value.parse().unwrap())),
            "_sum" => entry.sum = Some(value.parse().unwrap()),
            "_count" => entry.count = Some(value.parse().unwrap()),
            other => panic!("{name}: unexpected histogram suffix {other:?}"),
        }
    }
    for (family, series) in &families {
        let unit = family.rsplit('_').next().unwrap();
        assert_eq!(units.get(family).map(String::as_str), Some(unit), "{family}: # UNIT");
        assert!(matches!(unit, "seconds" | "bytes"), "{family}: a base unit");
        for (labels, s) in series {
            let counts: Vec<u64> = s.buckets.iter().map(|(_, n)| *n).collect();
            assert!(counts.is_sorted(), "{family}{{{labels}}}: cumulative buckets {counts:?}");
            assert_eq!(s.buckets.last().map(|(le, _)| le.as_str()), Some("+Inf"), "{family}");
            assert_eq!(counts.last().copied(), s.count, "{family}{{{labels}}}: +Inf is the count");
            assert!(s.sum.is_some_and(|sum| sum >= 0.0), "{family}{{{labels}}}: a sum");
        }
    }
    families
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_size_histograms_are_scraped_in_base_units() {
    let server = Server::start_with(memory_and_disk);
    let body = data(300_000, 1);
    put(&server.object("hist", "a"), body.clone()).await;
    for _ in 0..3 {
        let response = client().get(server.object("hist", "a")).send().await.unwrap();
        assert_eq!(response.bytes().await.unwrap().len(), body.len());
    }
    let response = client().head(server.object("hist", "a")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client().get(server.object("hist", "absent")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    // A copy into memory: drop memory's copy, then a ranged read from disk starts a background
    // copy of the whole object.
    let response = client().post(server.url("/api/v1/object/hist/a/invalidate")).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let response =
        client().get(server.object("hist", "a")).header("range", "bytes=0-9").send().await;
    assert_eq!(response.unwrap().status(), 206);
    eventually("the copy into memory to commit", Duration::from_secs(10), || async {
        server.metric("rangecache_backfills_total{event=\"committed\"}").await == 1.0
    })
    .await;

    let text = server.scrape().await;
    let families = histograms(&text);
    let series = |family: &str, labels: &str| -> &Series {
        families
            .get(family)
            .unwrap_or_else(|| panic!("no histogram {family} in\n{text}"))
            .get(labels)
            .unwrap_or_else(|| panic!("no series {family}{{{labels}}} in\n{text}"))
    };
    let get_2xx = "method=\"GET\",status_class=\"2xx\"";
    // Three whole reads and one ranged read; the scrape itself is counted once it has ended.
    let duration = series("rangecache_request_duration_seconds", get_2xx);
    assert!(duration.count.unwrap() >= 4, "{duration:?}");
    let bounds: Vec<&str> = duration.buckets.iter().map(|(le, _)| le.as_str()).collect();
    assert_eq!(bounds.first(), Some(&"0.0001"), "from 100 µs");
    assert_eq!(bounds[bounds.len() - 2], "30.0", "to 30 s");
    assert!(series("rangecache_time_to_first_byte_seconds", get_2xx).count.unwrap() >= 4);
    let not_found = "method=\"GET\",status_class=\"4xx\"";
    assert_eq!(series("rangecache_request_duration_seconds", not_found).count, Some(1));
    let head = "method=\"HEAD\",status_class=\"2xx\"";
    assert_eq!(series("rangecache_time_to_first_byte_seconds", head).count, Some(1));
    let put_2xx = "method=\"PUT\",status_class=\"2xx\"";
    assert_eq!(series("rangecache_request_duration_seconds", put_2xx).count, Some(1));

    // Per tier: memory answered every GET and the 404; disk the ranged read, the 404 and the
    // copy's source is not a client's open. HEAD asks for metadata only.
    let memory_opens =
        series("rangecache_tier_open_duration_seconds", "tier=\"memory\",op=\"open\"");
    assert_eq!(memory_opens.count, Some(5), "three hits, a miss, the ranged read's miss");
    let disk_opens = series("rangecache_tier_open_duration_seconds", "tier=\"disk\",op=\"open\"");
    assert_eq!(disk_opens.count, Some(2), "the 404's miss and the ranged read");
    let stats = series("rangecache_tier_open_duration_seconds", "tier=\"memory\",op=\"stat\"");
    assert_eq!(stats.count, Some(1));

    let size = series("rangecache_backfill_size_bytes", "");
    assert_eq!((size.count, size.sum), (Some(1), Some(body.len() as f64)));
    assert!(size.buckets.iter().any(|(le, n)| le == "1048576.0" && *n == 1), "{size:?}");
    assert!(size.buckets.iter().any(|(le, n)| le == "262144.0" && *n == 0), "{size:?}");
    assert_eq!(series("rangecache_backfill_duration_seconds", "").count, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_carry_the_request_id_the_response_carries() {
    let env = [("RANGECACHE_LOG_FORMAT".to_owned(), "json".to_owned())];
    let server = Server::start_with_env(&memory_tier("64MiB"), &env);
    put(&server.object("logs", "a"), data(1000, 2)).await;

    let response = client()
        .get(server.object("logs", "a"))
        .header("x-request-id", "client-chosen-42")
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42", "passed through");
    let response = client().get(server.object("logs", "a")).send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.len() > 16, "an id is made when the client sends none: {generated}");
    let response =
        client().get(server.object("logs", "a")).header("x-request-id", "a b").send().await;
    let replaced = response.unwrap().headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(replaced, "a b", "an id with a space is replaced");

    let access_line = |id: String| {
        let server = &server;
        async move {
            server.log().lines().find_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                (value["request_id"] == id.as_str()).then_some(value)
            })
        }
    };
    eventually("the access lines to be written", Duration::from_secs(10), || async {
        access_line(generated.clone()).await.is_some()
    })
    .await;
    for line in server.log().lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    let line = access_line("client-chosen-42".to_owned()).await.expect("the ranged read's line");
    assert_eq!(line["target"], "rangecache::access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/v1/object/logs/a");
    assert_eq!(line["status"], 206);
    assert_eq!(line["bytes"], 100);
    assert_eq!(line["cache_status"], "memory; hit");
    assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_every_tier_to_answer() {
    let upstream = Server::start_with(disk_only);
    // Every answer of the upstream is held until released: the probe cannot be answered.
    let proxy = Proxy::start(upstream.addr, Plan { hold_after: Some(0), ..Plan::default() }).await;
    let server = Server::start(&memory_and_remote(&proxy.base));
    eventually("the probe to reach the upstream", Duration::from_secs(10), || async {
        proxy.is_holding()
    })
    .await;
    let readyz = || async { client().get(server.url("/readyz")).send().await.unwrap() };
    let response = readyz().await;
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("waiting for every tier"));
    let healthz = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "liveness does not wait for the tiers");

    proxy.release();
    eventually("the server to become ready", Duration::from_secs(20), || async {
        readyz().await.status() == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_once_shutdown_begins_while_the_server_serves_on() {
    let dir = tempdir();
    let mut server =
        Server::start_in(&dir, &format!("shutdown_delay = \"10m\"\n{}", memory_and_disk(&dir)));
    let etag = put(&server.object("drain", "a"), data(5000, 3)).await;
    let readyz = || async { client().get(server.url("/readyz")).send().await.unwrap().status() };
    eventually("the server to become ready", Duration::from_secs(10), || async {
        readyz().await == 200
    })
    .await;

    server.signal("TERM");
    eventually("/readyz to fail after SIGTERM", Duration::from_secs(10), || async {
        readyz().await == 503
    })
    .await;
    // Still serving through the delay: liveness and reads.
    assert_eq!(client().get(server.url("/healthz")).send().await.unwrap().status(), 200);
    let response = client().get(server.object("drain", "a")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);

    // A second signal ends the ten-minute delay.
    server.signal("TERM");
    let status =
        tokio::task::block_in_place(|| server.wait_for_exit("TERM", Duration::from_secs(20)));
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("shutdown delay cut short"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_overrides_the_file() {
    let dir = tempdir();
    let token_file = dir.join("write-token");
    std::fs::write(&token_file, "w-from-a-file\n").unwrap();
    let env = [
        ("RANGECACHE_MAX_OBJECT_SIZE".to_owned(), "4KiB".to_owned()),
        ("RANGECACHE_AUTH_WRITE_TOKEN_FILE".to_owned(), token_file.display().to_string()),
    ];
    // The file says 1 MiB and no [auth]; the environment says 4 KiB and a write token.
    let config = format!("max_object_size = \"1MiB\"\n{}", memory_tier("64MiB"));
    let server = Server::start_with_env(&config, &env);
    let url = server.object("env", "a");

    let response = client().put(&url).body(data(100, 4)).send().await.unwrap();
    assert_eq!(response.status(), 401, "writes need the token from the file");
    let authorized = |body: Vec<u8>| client().put(&url).bearer_auth("w-from-a-file").body(body);
    assert_eq!(authorized(data(100, 4)).send().await.unwrap().status(), 200);
    assert_eq!(authorized(data(5000, 4)).send().await.unwrap().status(), 413, "4 KiB at most");
}

#[test]
fn check_config_prints_the_configuration_in_effect_with_tokens_masked() {
    let dir = tempdir();
    let config = dir.join("rangecache.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\n[auth]\nread_token = \"r-secret\"\nwrite_token = \
             \"w-secret\"\n{}\n[[tier]]\nname = \"upstream\"\nkind = \"remote\"\n\
             url = \"http://127.0.0.1:9\"\ntoken = \"t-secret\"\n",
            memory_tier("64MiB")
        ),
    )
    .unwrap();
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&config)
        .env("RANGECACHE_LISTEN", "0.0.0.0:8080")
        .output()
        .expect("run check-config");
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{output:?}\n{shown}");
    for secret in ["r-secret", "w-secret", "t-secret"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    for line in [
        "listen = \"0.0.0.0:8080\"  # RANGECACHE_LISTEN",
        "read_token = \"********\"",
        "write_token = \"********\"",
        "token = \"********\"",
        "max_connections = 4096",
        "url = \"http://127.0.0.1:9\"",
    ] {
        assert!(shown.lines().any(|l| l == line), "missing {line:?} in\n{shown}");
    }

    // A bad value from the environment: exit 2 and one line naming the variable.
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&config)
        .env("RANGECACHE_LIMITS_HEADER_TIMEOUT", "soon")
        .output()
        .expect("run check-config");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let error = String::from_utf8(output.stderr).unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("limits.header_timeout (from RANGECACHE_LIMITS_HEADER_TIMEOUT)"),
        "{error}"
    );
}
