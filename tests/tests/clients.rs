//! Real download clients through A (memory in front of B): resumed downloads with curl and
//! wget, a segmented download with aria2c, and an If-Range resume across an overwrite.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, client, data, disk_only, memory_and_remote, put, sha256, tempdir};

const SIZE: usize = 50 << 20;

fn file_sha256(path: &Path) -> String {
    sha256(&std::fs::read(path).expect("downloaded file"))
}

fn run(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_wget_and_aria2c_download_through_a_with_the_right_checksum() {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    let body = data(SIZE, 20);
    let expected = sha256(&body);
    put(&b.object("dl", "big"), body.clone()).await;
    let url = a.object("dl", "big");
    let dir = tempdir();

    // curl -C -: resumes a file that already holds the first 10 MiB.
    let curl_file = dir.join("curl.bin");
    std::fs::write(&curl_file, &body[..10 << 20]).unwrap();
    let curl_url = url.clone();
    let curl_path = curl_file.clone();
    tokio::task::spawn_blocking(move || {
        run(Command::new("curl")
            .args(["-sS", "-f", "-C", "-", "-o"])
            .arg(&curl_path)
            .arg(&curl_url))
    })
    .await
    .unwrap();
    assert_eq!(file_sha256(&curl_file), expected, "curl -C -");

    // wget -c: resumes a file that already holds the first 20 MiB.
    let wget_file = dir.join("wget.bin");
    std::fs::write(&wget_file, &body[..20 << 20]).unwrap();
    let wget_url = url.clone();
    let wget_path = wget_file.clone();
    tokio::task::spawn_blocking(move || {
        run(Command::new("wget").args(["-q", "-c", "-O"]).arg(&wget_path).arg(&wget_url))
    })
    .await
    .unwrap();
    assert_eq!(file_sha256(&wget_file), expected, "wget -c");

    // aria2c: four connections, each a ranged GET.
    let aria_dir = dir.to_path_buf();
    let aria_url = url.clone();
    tokio::task::spawn_blocking(move || {
        run(Command::new("aria2c")
            .args([
                "-q",
                "-x4",
                "-s4",
                "-k1M",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
            ])
            .arg("-d")
            .arg(&aria_dir)
            .args(["-o", "aria.bin"])
            .arg(&aria_url))
    })
    .await
    .unwrap();
    assert_eq!(file_sha256(&dir.join("aria.bin")), expected, "aria2c -x4 -s4");
    let ranged = a
        .metric_opt("rangecache_requests_total{method=\"GET\",status=\"206\"}")
        .await
        .expect("ranged reads were counted");
    assert!(ranged >= 3.0, "the resumes and segments were ranged reads ({ranged})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_if_range_resume_across_an_overwrite_gets_the_whole_new_object() {
    let b = Server::start_with(disk_only);
    let a = Server::start(&memory_and_remote(&b.base));
    let url = a.object("dl", "rewritten");
    let old = data(4 << 20, 21);
    let old_etag = put(&url, old.clone()).await;

    // The first part of the old revision was downloaded...
    let response = client().get(&url).header("range", "bytes=0-1048575").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), old[..1 << 20]);
    // ...then the object is replaced, and the resume names the old revision.
    let new = data(3 << 20, 22);
    let new_etag = put(&url, new.clone()).await;
    assert_ne!(old_etag, new_etag);
    let response = client()
        .get(&url)
        .header("range", "bytes=1048576-")
        .header("if-range", &old_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "never a 206 of the new object");
    assert!(response.headers().get("content-range").is_none());
    assert_eq!(response.headers()["etag"].to_str().unwrap(), new_etag);
    assert_eq!(response.bytes().await.unwrap(), new);

    // A plain curl resume of the new revision completes it.
    let dir = tempdir();
    let file = dir.join("resumed.bin");
    std::fs::write(&file, &new[..1 << 20]).unwrap();
    let curl_url = url.clone();
    let path = file.clone();
    tokio::task::spawn_blocking(move || {
        run(Command::new("curl").args(["-sS", "-f", "-C", "-", "-o"]).arg(&path).arg(&curl_url))
    })
    .await
    .unwrap();
    assert_eq!(file_sha256(&file), sha256(&new));
}
