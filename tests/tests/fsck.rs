//! `rangecache fsck` on a disk tier damaged on purpose: a truncated object, a garbage header,
//! a temporary file of a write that never committed, an expired object. The real binary
//! reports each, says so in its exit status, removes them with `--repair`, and a server started
//! on the repaired directory serves the objects that were intact.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Server, binary, client, data, memory_and_disk, put, put_with, tempdir};

const NS: &str = "fsck";
const INTACT: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const TRUNCATED: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
const GARBAGE: &str = "cccc000000000000000000000000000000000000000000000000000000000003";
const EXPIRED: &str = "dddd000000000000000000000000000000000000000000000000000000000004";
const LEFTOVER: &str =
    ".tmp-eeee000000000000000000000000000000000000000000000000000000000005-4242-0";

fn fsck(config: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let Output { status, stdout, stderr } = Command::new(binary())
        .arg("fsck")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .expect("run rangecache fsck");
    let stdout = String::from_utf8(stdout).expect("the report is UTF-8");
    assert!(stderr.is_empty(), "fsck wrote to stderr: {}", String::from_utf8_lossy(&stderr));
    (status.code(), stdout)
}

#[track_caller]
fn assert_line(report: &str, starts: &str, contains: &str) {
    assert!(
        report.lines().any(|line| line.starts_with(starts) && line.contains(contains)),
        "no line starting {starts:?} containing {contains:?} in:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_and_repairs_a_damaged_disk_tier_and_the_intact_objects_survive() {
    let dir = tempdir();
    let config_text = memory_and_disk(&dir);
    let config = dir.join("rangecache.toml");
    let objects = dir.join("disk").join(NS);
    let intact = data(300_000, 1);

    let mut server = Server::start_in(&dir, &config_text);
    let etag = put(&server.object(NS, INTACT), intact.clone()).await;
    put(&server.object(NS, TRUNCATED), data(200_000, 2)).await;
    put(&server.object(NS, GARBAGE), data(5_000, 3)).await;
    let response = put_with(&server.object(NS, EXPIRED), &[("time-to-live", "1s")], "brief").await;
    assert_eq!(response.status(), 200);
    let status = server.signal_and_wait("TERM", Duration::from_secs(10));
    assert!(status.success(), "{status:?}");

    // A clean shutdown leaves no temporary file and nothing broken (the object with a TTL of
    // one second may have expired already).
    let (_, report) = fsck(&config, &[]);
    assert!(!report.contains("temporary file"), "{report}");
    assert!(!report.contains("size mismatch") && !report.contains("unreadable"), "{report}");

    let truncated = objects.join(TRUNCATED);
    let length = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(length - 1000)
        .unwrap();
    let garbage = objects.join(GARBAGE);
    let mut bytes = std::fs::read(&garbage).unwrap();
    bytes[..16].copy_from_slice(b"not a header....");
    std::fs::write(&garbage, bytes).unwrap();
    let leftover = objects.join(LEFTOVER);
    std::fs::write(&leftover, b"RCOBJ01\nhalf of a write").unwrap();

    // The TTL of one second runs out on the wall clock: wait for fsck to see it, with a bound.
    let started = std::time::Instant::now();
    let (code, report) = loop {
        let (code, report) = fsck(&config, &[]);
        if report.contains("expired at") {
            break (code, report);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never expired:\n{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(1), "broken files found is exit 1:\n{report}");
    let line = |key: &str| format!("disk: {NS}/{key}: ");
    assert_line(&report, &line(TRUNCATED), "size mismatch: the header says 200000 bytes");
    assert_line(&report, &line(GARBAGE), "unreadable header: not an object file");
    assert_line(&report, &line(LEFTOVER), "temporary file of a write that never committed");
    assert_line(&report, &line(EXPIRED), "expired at");
    assert_line(&report, "memory: ", "not a disk tier");
    assert_line(&report, "disk: ", "1 object intact, 4 broken files");
    assert!(!report.contains(INTACT), "the intact object is not reported:\n{report}");
    assert!(!report.contains("; removed"), "nothing is removed without --repair:\n{report}");
    for path in [&truncated, &garbage, &leftover, &objects.join(EXPIRED)] {
        assert!(path.exists(), "{} was removed without --repair", path.display());
    }

    let (code, report) = fsck(&config, &["--repair"]);
    assert_eq!(code, Some(1), "a repair still reports what was wrong:\n{report}");
    for key in [TRUNCATED, GARBAGE, LEFTOVER, EXPIRED] {
        assert_line(&report, &line(key), "; removed");
        assert!(!objects.join(key).exists(), "{key} survived --repair");
    }
    assert!(objects.join(INTACT).exists());

    let (code, report) = fsck(&config, &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_line(&report, "fsck: ", "1 disk tier, 1 object intact, 0 broken files");

    let server = Server::start_in(&dir, &config_text);
    let response = client().get(server.object(NS, INTACT)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.headers()["cache-status"], "disk; hit, memory; fwd=uri-miss; stored");
    assert_eq!(response.bytes().await.unwrap(), intact);
    for key in [TRUNCATED, GARBAGE, EXPIRED] {
        let response = client().get(server.object(NS, key)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{key}");
    }
}

#[test]
fn fsck_of_a_configuration_that_does_not_parse_is_exit_2() {
    let dir = tempdir();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[[tier]]\nname = 'd'\nkind = 'tape'\n").unwrap();
    let output = Command::new(binary()).arg("fsck").arg("--config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tier[0].kind"), "{stderr}");
}
