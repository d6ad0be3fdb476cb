//! `rangecache get`, the parallel ranged downloader, against real peers: a rangecache server,
//! nginx serving a file, and a TCP proxy that counts, cuts or holds connections. The result is
//! always compared with the original by SHA-256 (`sha256sum`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{Plan, Proxy};
use common::{Server, data, eventually, put, tempdir};

const MIB: usize = 1 << 20;
/// The large object of these tests.
const BIG: usize = 200 * MIB;
/// How long one download may take, even in a debug build on a busy machine.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(120);

/// A server whose memory tier holds two revisions of the large object at once.
fn server() -> Server {
    Server::start(
        "max_object_size = \"512MiB\"\n\n[[tier]]\nname = \"memory\"\nkind = \"memory\"\n\
         max_size = \"1GiB\"\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_object_comes_whole_in_8_parallel_parts() {
    let server = server();
    let dir = tempdir();
    let original = write_file(&dir, "original", data(BIG, 60));
    put(&server.object("dl", "big"), std::fs::read(&original).unwrap()).await;
    let proxy = Proxy::start(server.addr, Plan::default()).await;

    let out = dir.join("big");
    let url = proxy.url("/api/v1/object/dl/big");
    let (status, stderr) =
        get(&[&url, "-o", path_str(&out), "--parallel", "8"]).wait(DOWNLOAD_DEADLINE).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(sha256_file(&out), sha256_file(&original));
    // Connections, not requests: one back in the client's pool may linger beside its successor.
    assert!(proxy.most_open() >= 8, "eight ranged GETs were in flight at once");
    assert!(!record_of(&out).exists(), "the record is removed once the file is whole");
    assert!(stderr.is_empty(), "quiet when stderr is not a terminal: {stderr}");
    let path = "/api/v1/object/dl/big";
    // The server logs a request once its answer is sent, which may be just after the client
    // has it all.
    eventually("the server to log every part", Duration::from_secs(10), || async {
        access_log(&server, path).iter().map(|(_, bytes)| bytes).sum::<u64>() >= BIG as u64
    })
    .await;
    let answers = access_log(&server, path);
    assert!(answers.len() > 8, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| *status == 206), "{answers:?}");
    let sent: u64 = answers.iter().map(|(_, bytes)| bytes).sum();
    assert_eq!(sent, BIG as u64, "every byte was sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_during_the_download_gives_the_whole_new_object() {
    let server = server();
    let dir = tempdir();
    let old = data(BIG, 61);
    let new = write_file(&dir, "new", data(BIG, 62));
    let url = server.object("dl", "moving");
    put(&url, old).await;
    // The download gets 40 MiB of the old revision, then waits while the object is replaced by
    // one of the same size.
    let proxy = Proxy::start(server.addr, Plan { hold_after: Some(40 << 20), cut: None }).await;
    let out = dir.join("moving");
    let download = get(&[&proxy.url("/api/v1/object/dl/moving"), "-o", path_str(&out)]);
    eventually("the download to be held", Duration::from_secs(30), || async { proxy.is_holding() })
        .await;
    put(&url, std::fs::read(&new).unwrap()).await;
    proxy.release();

    let (status, stderr) = download.wait(DOWNLOAD_DEADLINE).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(sha256_file(&out), sha256_file(&new), "the whole new revision, nothing of the old");
    let answers = access_log(&server, "/api/v1/object/dl/moving");
    assert!(
        answers.iter().any(|(status, _)| *status == 412),
        "a part pinned to the old revision was refused: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_whose_connection_is_cut_is_asked_for_again() {
    let server = server();
    let dir = tempdir();
    let original = write_file(&dir, "original", data(64 * MIB, 63));
    put(&server.object("dl", "cut"), std::fs::read(&original).unwrap()).await;
    let path = "/api/v1/object/dl/cut";

    // A clean download counts the requests; then the third connection, which carries a part
    // after the first answer, is cut after 1 MiB of its answer.
    let clean = Proxy::start(server.addr, Plan::default()).await;
    let out = dir.join("clean");
    let (status, stderr) =
        get(&[&clean.url(path), "-o", path_str(&out)]).wait(DOWNLOAD_DEADLINE).await;
    assert!(status.success(), "{status}: {stderr}");
    let size = 64 * MIB as u64;
    eventually("the server to log every part", Duration::from_secs(10), || async {
        access_log(&server, path).iter().map(|(_, bytes)| bytes).sum::<u64>() >= size
    })
    .await;
    let requests = access_log(&server, path).len();

    let failing =
        Proxy::start(server.addr, Plan { cut: Some((3, MIB as u64)), hold_after: None }).await;
    let out = dir.join("cut");
    let (status, stderr) =
        get(&[&failing.url(path), "-o", path_str(&out)]).wait(DOWNLOAD_DEADLINE).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(failing.cuts(), 1);
    assert_eq!(sha256_file(&out), sha256_file(&original));
    eventually("the server to log the second download", Duration::from_secs(10), || async {
        access_log(&server, path).len() > 2 * requests
    })
    .await;
    let second = access_log(&server, path).len() - requests;
    assert_eq!(second, requests + 1, "the cut part was asked for once more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_kill_continues_and_the_result_is_whole() {
    let server = server();
    let dir = tempdir();
    let original = write_file(&dir, "original", data(BIG, 64));
    put(&server.object("dl", "resume"), std::fs::read(&original).unwrap()).await;
    // The first run gets 80 MiB, then its answers are held: it is killed while it waits.
    let proxy = Proxy::start(server.addr, Plan { hold_after: Some(80 << 20), cut: None }).await;
    let url = proxy.url("/api/v1/object/dl/resume");
    let out = dir.join("resume");
    let record = record_of(&out);
    let mut first = get(&[&url, "-o", path_str(&out)]);
    eventually("the record to show 32 MiB", Duration::from_secs(30), || async {
        present_in(&record) >= 32 << 20
    })
    .await;
    first.kill();
    let present = present_in(&record);
    // Every connection of the killed run is gone before anything is let through again, so what
    // the proxy passes from now on is what the second run asked for.
    eventually("the killed run's connections to close", Duration::from_secs(10), || async {
        proxy.open_now() == 0
    })
    .await;
    proxy.release();
    let before = proxy.answered();
    let (status, stderr) =
        get(&[&url, "-o", path_str(&out), "--resume"]).wait(DOWNLOAD_DEADLINE).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(sha256_file(&out), sha256_file(&original));
    assert!(!record.exists(), "the record is removed once the file is whole");
    let fetched = proxy.answered() - before;
    let missing = BIG as u64 - present;
    // What was missing, and little more than the answers' header fields.
    assert!(
        (missing..missing + 64 * 1024).contains(&fetched),
        "fetched {fetched} bytes again for {missing} missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serving_a_file_is_a_peer() {
    let dir = tempdir();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let original = write_file(&www, "object.bin", data(40 * MIB, 65));
    let nginx = Nginx::start(&dir, &www);

    let out = dir.join("object.bin");
    let url = format!("http://{}/object.bin", nginx.addr);
    let (status, stderr) = get(&[&url, "-o", path_str(&out)]).wait(DOWNLOAD_DEADLINE).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(sha256_file(&out), sha256_file(&original));
    let log = std::fs::read_to_string(dir.join("nginx/access.log")).unwrap();
    let partial = log.lines().filter(|line| line.contains("\" 206 ")).count();
    assert!(partial >= 3, "nginx answered the parts with 206:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_progress_bar_is_drawn() {
    let server = server();
    let dir = tempdir();
    let original = write_file(&dir, "original", data(20 * MIB, 66));
    put(&server.object("dl", "tty"), std::fs::read(&original).unwrap()).await;
    let out = dir.join("tty");
    // `script` runs the command on a pseudo-terminal and copies what it draws to stdout.
    let command = format!(
        "{} get {} -o {}",
        common::binary().display(),
        server.object("dl", "tty"),
        out.display()
    );
    let drawn = tokio::task::spawn_blocking(move || {
        Command::new("script").args(["-q", "-e", "-c", &command, "/dev/null"]).output()
    })
    .await
    .unwrap()
    .expect("script (util-linux) runs");
    let drawn = String::from_utf8_lossy(&drawn.stdout).into_owned();
    assert!(drawn.contains("20.00 MiB") && drawn.contains('['), "no progress bar in {drawn:?}");
    assert_eq!(sha256_file(&out), sha256_file(&original));
}

/// `rangecache get ARGS`, started; its stderr goes to a temporary file.
fn get(args: &[&str]) -> Running {
    let log = tempfile::NamedTempFile::new().expect("a file for stderr");
    let child = Command::new(common::binary())
        .arg("get")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("reopen stderr's file"))
        .spawn()
        .expect("start rangecache get");
    Running { child: Some(child), log }
}

/// A `rangecache get` process; killed if dropped before it ended.
struct Running {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Running {
    /// Waits for the exit, at most `deadline`; the status and what it wrote on stderr.
    async fn wait(mut self, deadline: Duration) -> (ExitStatus, String) {
        let started = Instant::now();
        let mut child = self.child.take().expect("waited once");
        loop {
            if let Some(status) = child.try_wait().expect("wait for rangecache get") {
                let stderr = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                return (status, stderr);
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rangecache get did not finish within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and the exit waited for.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill rangecache get");
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nginx serving `www` on a free port, configured for this test in `dir/nginx`; stopped when
/// dropped.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Nginx {
    fn start(dir: &Path, www: &Path) -> Nginx {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix).unwrap();
        // Workers may run as another user: they must be able to reach the files.
        for path in [dir, www] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let prefix_str = prefix.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {prefix_str}/nginx.pid;\n\
             error_log {prefix_str}/error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {prefix_str}/access.log;\n  sendfile on;\n\
             client_body_temp_path {prefix_str}/body;\n  proxy_temp_path {prefix_str}/proxy;\n\
             fastcgi_temp_path {prefix_str}/fastcgi;\n  uwsgi_temp_path {prefix_str}/uwsgi;\n\
             scgi_temp_path {prefix_str}/scgi;\n  default_type application/octet-stream;\n\
             server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            www.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // nginx lives in /usr/sbin, which is not on every user's PATH.
        let program = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|program| Command::new(program).arg("-v").output().is_ok())
            .expect("nginx must be installed (`cargo xtask test` installs it)");
        let child = Command::new(program)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nginx must be installed (`cargo xtask test` does it): {e}")
            });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx { child, addr };
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                let stderr = std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
                panic!("nginx exited before serving: {status}: {stderr}");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them serving).
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Writes `bytes` into `dir/name`; its path.
fn write_file(dir: &Path, name: &str, bytes: Vec<u8>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the file");
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The hex SHA-256 of a file, by `sha256sum` (the tests' own build of sha2 is unoptimised, and
/// these files are large).
fn sha256_file(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    assert!(output.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8(output.stdout).expect("hex");
    text.split_whitespace().next().expect("a digest").to_owned()
}

/// The record `rangecache get` keeps beside `out` while the download is incomplete.
fn record_of(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap().to_os_string();
    name.push(".rangecache");
    out.with_file_name(name)
}

/// The bytes the record says are in the file; 0 while there is no record.
fn present_in(record: &Path) -> u64 {
    let Ok(text) = std::fs::read(record) else { return 0 };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else { return 0 };
    json["parts"]
        .as_array()
        .map(|parts| parts.iter().filter_map(|part| part["present"].as_u64()).sum())
        .unwrap_or(0)
}

/// Status and body bytes of every GET of `path` in the server's access log, in order.
fn access_log(server: &Server, path: &str) -> Vec<(u16, u64)> {
    let request = format!(" method=GET path={path} ");
    server
        .log()
        .lines()
        .filter(|line| line.contains(&request))
        .filter_map(|line| {
            let field = |name: &str| line.split_once(name)?.1.split(' ').next();
            Some((field(" status=")?.parse().ok()?, field(" bytes=")?.parse().ok()?))
        })
        .collect()
}
