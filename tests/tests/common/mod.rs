//! What every end-to-end test needs: the real `rangecache` binary started on a free loopback
//! port with its own configuration and directory, an HTTP client, metric scrapes, and waiting
//! on a condition with a deadline.
#![allow(dead_code)] // each test file uses its own subset

pub mod pki;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The server binary: `RANGECACHE_BIN` (set by `cargo xtask test`), else built here once, with
/// the `faults` feature as `cargo xtask test` builds it (so the two builds do not take turns
/// overwriting `target/debug/rangecache`).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("RANGECACHE_BIN") {
            return PathBuf::from(path);
        }
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "rangecache", "--features", "faults", "--bin", "rangecache"])
            .current_dir(root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the rangecache binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("rangecache")
    })
    .clone()
}

/// One running `rangecache serve`; killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://ADDR`, or `https://ADDR` when it serves TLS.
    pub base: String,
    /// Its working directory (configuration, log, disk tiers).
    pub dir: PathBuf,
    _stdout: Option<std::process::ChildStdout>,
    /// The directory, when the server made it (removed after the server stops).
    own_dir: Option<Dir>,
}

impl Server {
    /// Starts a server in a fresh directory with `config` (TOML without `listen`).
    pub fn start(config: &str) -> Server {
        Server::start_with_env(config, &[])
    }

    /// Starts a server in a fresh directory with the configuration `config` makes for it.
    pub fn start_with(config: impl FnOnce(&Path) -> String) -> Server {
        let dir = tempdir();
        let mut server = Server::spawn(&dir, &config(&dir), &[]);
        server.own_dir = Some(dir);
        server
    }

    /// Starts a server in a fresh directory with `config` and extra environment variables.
    pub fn start_with_env(config: &str, env: &[(String, String)]) -> Server {
        let dir = tempdir();
        let mut server = Server::spawn(&dir, config, env);
        server.own_dir = Some(dir);
        server
    }

    /// Starts a server in `dir` (kept across restarts, owned by the caller) with `config`.
    pub fn start_in(dir: &Path, config: &str) -> Server {
        Server::spawn(dir, config, &[])
    }

    fn spawn(dir: &Path, config: &str, env: &[(String, String)]) -> Server {
        std::fs::create_dir_all(dir).expect("create the server directory");
        let config_path = dir.join("rangecache.toml");
        std::fs::write(&config_path, config).expect("write the configuration");
        let log = std::fs::File::create(dir.join("server.log")).expect("create the log");
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("RANGECACHE_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the rangecache binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send((line, reader.into_inner()));
        });
        let (line, stdout) = match receiver.recv_timeout(START_DEADLINE) {
            Ok(got) => got,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start in {START_DEADLINE:?}:\n{}", read_log(dir));
            }
        };
        let Some(base) = line.trim().strip_prefix("rangecache listening on ") else {
            let status = child.wait();
            panic!("server did not start ({status:?}): {line:?}\n{}", read_log(dir));
        };
        let addr = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
        let addr: SocketAddr =
            addr.and_then(|addr| addr.parse().ok()).expect("the printed URL names an address");
        Server {
            child: Some(child),
            addr,
            base: base.to_owned(),
            dir: dir.to_path_buf(),
            _stdout: Some(stdout),
            own_dir: None,
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL of an object.
    pub fn object(&self, namespace: &str, key: &str) -> String {
        self.url(&format!("/api/v1/object/{namespace}/{key}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Sends `signal` (e.g. "TERM") and waits for the exit, at most `deadline`.
    pub fn signal_and_wait(&mut self, signal: &str, deadline: Duration) -> ExitStatus {
        self.signal(signal);
        self.wait_for_exit(signal, deadline)
    }

    /// Sends `signal` (e.g. "TERM") and returns at once.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// Waits for the exit that the last `signal` asked for, at most `deadline`.
    pub fn wait_for_exit(&mut self, signal: &str, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {deadline:?} of SIG{signal}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// The value of one metric line, e.g. `rangecache_requests_total{method="GET",status="200"}`,
    /// or `None` when the exposition has no such line.
    pub async fn metric_opt(&self, series: &str) -> Option<f64> {
        metric_value(&self.scrape().await, series)
    }

    /// The value of one series of a family the server exports: 0 when the family has no such
    /// series yet (a labelled counter appears at its first increment). Panics when the family
    /// itself is not exported, so a misspelled name fails instead of reading as 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.scrape().await;
        assert!(
            exports_family(&text, series),
            "/metrics exports no family for {series:?}:\n{text}"
        );
        metric_value(&text, series).unwrap_or(0.0)
    }

    /// The `/metrics` text.
    pub async fn scrape(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `series` (name and labels exactly as exposed) in an OpenMetrics or Prometheus
/// text exposition, `None` when no line has it.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// True if the exposition declares the family of `series` (`# TYPE`), whose name is the
/// series' name without its labels and, for a counter, without `_total`.
pub fn exports_family(text: &str, series: &str) -> bool {
    let name = series.split('{').next().unwrap_or(series);
    let family = name.strip_suffix("_total").unwrap_or(name);
    text.lines().any(|line| {
        line.strip_prefix("# TYPE ")
            .and_then(|rest| rest.split(' ').next())
            .is_some_and(|declared| declared == name || declared == family)
    })
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// A directory removed when dropped, unless the thread is panicking (then it is kept for the
/// post-mortem, and its path is in the failure message of any server started in it).
pub struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Dir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh directory under the system's temporary directory.
pub fn tempdir() -> Dir {
    let dir = tempfile::Builder::new().prefix("rangecache-e2e-").tempdir().expect("tempdir");
    Dir(dir.keep())
}

/// A shared HTTP client with no proxy and no automatic decompression.
pub fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| reqwest::Client::builder().no_proxy().build().expect("client")).clone()
}

/// `n` bytes that differ from object to object (`seed`) and are cheap to make.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = vec![0u8; n];
    rng.fill(&mut out);
    out
}

/// Hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Waits until `check` is true, polling, at most `deadline`; panics naming `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PUTs `body` and asserts 200; returns the stored ETag.
pub async fn put(url: &str, body: Vec<u8>) -> String {
    let response = client().put(url).body(body).send().await.expect("PUT");
    assert_eq!(response.status(), 200, "PUT {url}");
    response.headers()["etag"].to_str().expect("etag").to_owned()
}

/// Configuration of a server with one memory tier and one disk tier under `dir`.
pub fn memory_and_disk(dir: &Path) -> String {
    format!("max_object_size = \"256MiB\"\n\n{}\n{}", memory_tier("512MiB"), disk_only(dir))
}

/// Configuration of B in the chained tests: one authoritative disk tier.
pub fn disk_only(dir: &Path) -> String {
    format!(
        r#"[[tier]]
name = "disk"
kind = "disk"
path = "{}"
max_size = "2GiB"
"#,
        dir.join("disk").display()
    )
}

/// Configuration of A in the chained tests: memory in front of the remote server `upstream`.
pub fn memory_and_remote(upstream: &str) -> String {
    format!("{}\n{}", memory_tier("512MiB"), remote_tier("upstream", upstream))
}

/// A `[[tier]]` table: a memory tier called "memory" of `max_size`.
pub fn memory_tier(max_size: &str) -> String {
    format!("[[tier]]\nname = \"memory\"\nkind = \"memory\"\nmax_size = \"{max_size}\"\n")
}

/// A `[[tier]]` table: a remote tier called `name` in front of the server at `url`.
pub fn remote_tier(name: &str, url: &str) -> String {
    format!("[[tier]]\nname = \"{name}\"\nkind = \"remote\"\nurl = \"{url}\"\n")
}

/// Asserts that `response` is a 200 carrying the whole `body` tagged `etag`, and that the first
/// member of its Cache-Status (the tier that answered) starts with `cache_status`.
pub async fn assert_served(
    response: reqwest::Response,
    cache_status: &str,
    etag: &str,
    body: &[u8],
) {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-status"].to_str().unwrap().starts_with(cache_status),
        "{:?}",
        response.headers()["cache-status"]
    );
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.bytes().await.unwrap(), body);
}

/// GETs `url` with the request header fields `headers`, in order.
pub async fn get_with(url: impl AsRef<str>, headers: &[(&str, &str)]) -> reqwest::Response {
    let url = url.as_ref();
    let mut request = client().get(url);
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// PUTs `body` to `url` with the request header fields `headers`, in order.
pub async fn put_with(
    url: impl AsRef<str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let url = url.as_ref();
    let mut request = client().put(url);
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.body(body).send().await.unwrap_or_else(|e| panic!("PUT {url}: {e}"))
}

/// GETs `url` and parses its JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    let body = client().get(url).send().await.expect("GET").bytes().await.expect("body");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body:?}"))
}

/// A real S3-compatible server: the one `cargo xtask test` started (named by
/// `RANGECACHE_TEST_S3_ENDPOINT`), or an `s3s-fs` started here from `.tools/bin` or PATH. Without
/// either the test fails, naming `cargo xtask s3-server`: it never passes without a server.
pub struct S3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket to use.
    pub bucket: String,
    /// `AWS_*` variables for the rangecache process.
    pub env: Vec<(String, String)>,
    _server: Option<ChildGuard>,
}

struct ChildGuard(Child, Dir);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl S3 {
    /// The server for this test.
    pub fn get() -> S3 {
        if let Ok(endpoint) = std::env::var("RANGECACHE_TEST_S3_ENDPOINT") {
            let var = |name: &str| {
                std::env::var(name).unwrap_or_else(|_| {
                    panic!("RANGECACHE_TEST_S3_ENDPOINT is set but {name} is not")
                })
            };
            let bucket = var("RANGECACHE_TEST_S3_BUCKET");
            let env = vec![
                ("AWS_ACCESS_KEY_ID".to_owned(), var("AWS_ACCESS_KEY_ID")),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), var("AWS_SECRET_ACCESS_KEY")),
            ];
            return S3 { endpoint, bucket, env, _server: None };
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary = [root.join(".tools/bin/s3s-fs"), PathBuf::from("s3s-fs")]
            .into_iter()
            .find(|candidate| {
                Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no S3-compatible server: run the suites with `cargo xtask test`, or start one \
                     with `cargo xtask s3-server` and export the variables it prints"
                )
            });
        let (bucket, access, secret) = ("rangecache-e2e", "e2e-access", "e2e-secret");
        let data = tempdir();
        std::fs::create_dir_all(data.join(bucket)).expect("create the bucket directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access, "--secret-key", secret])
            .arg(&*data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("s3s-fs exited before serving: {status}");
            }
            assert!(started.elapsed() < START_DEADLINE, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let env = vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), access.to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), secret.to_owned()),
        ];
        S3 {
            endpoint: format!("http://{addr}"),
            bucket: bucket.to_owned(),
            env,
            _server: Some(ChildGuard(child, data)),
        }
    }

    /// A `[[tier]]` table for this bucket under `prefix`.
    pub fn tier(&self, name: &str, prefix: &str) -> String {
        format!(
            "[[tier]]\nname = \"{name}\"\nkind = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\nprefix = \"{prefix}\"\n",
            self.bucket, self.endpoint
        )
    }
}
