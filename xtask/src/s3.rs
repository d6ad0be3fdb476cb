//! The S3-compatible test server: `s3s-fs` 0.14.1 from crates.io (newer versions need a newer
//! rustc), installed into `.tools/` when missing and started on 127.0.0.1.
//!
//! The server keeps its buckets as directories under a temporary root, so the test bucket is
//! created by creating its directory before the server starts. It listens on a free port,
//! checks the fixed test credentials, and is ready when its port accepts a connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::{root, run};

/// The version the suites are written against; 0.14.1 honours conditional PUTs and ignores
/// conditional GETs, which the s3 tier is built to cope with.
const VERSION: &str = "0.14.1";
/// The bucket the suites use.
pub const BUCKET: &str = "rangecache-test";
/// Fixed test credentials (the server accepts only these).
pub const ACCESS_KEY: &str = "rangecache-test-access";
/// Fixed test credentials (the server accepts only these).
pub const SECRET_KEY: &str = "rangecache-test-secret";
/// How long the server may take to accept connections after it is spawned.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running test server; stopped (and its data removed) when dropped.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
}

impl Server {
    /// Installs the server if missing and starts it on a free loopback port.
    pub fn start() -> Result<Server> {
        let binary = ensure_installed()?;
        let data = std::env::temp_dir().join(format!(
            "rangecache-s3-{}-{}",
            std::process::id(),
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos()
        ));
        std::fs::create_dir_all(data.join(BUCKET))
            .with_context(|| format!("cannot create {}", data.display()))?;
        // The port is free when probed; another process could take it before the server binds,
        // in which case the server exits and the next attempt probes again.
        let mut last_error = None;
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            match spawn(&binary, &data, port) {
                Ok((child, addr)) => {
                    eprintln!("s3s-fs {VERSION} serving bucket {BUCKET} on http://{addr}");
                    return Ok(Server { child, addr, data });
                }
                Err(e) => last_error = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&data);
        Err(last_error.expect("at least one attempt ran"))
    }

    /// Environment variables that point the tests at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("RANGECACHE_TEST_S3_ENDPOINT", format!("http://{}", self.addr)),
            ("RANGECACHE_TEST_S3_BUCKET", BUCKET.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(self.data.with_extension("log"));
    }
}

/// `cargo xtask s3-server`: run the server until interrupted, printing its environment.
pub fn serve_foreground() -> Result<()> {
    let mut server = Server::start()?;
    for (key, value) in server.env() {
        println!("export {key}={value}");
    }
    eprintln!("press Ctrl-C to stop");
    // Ctrl-C reaches the server too (same process group); it exits and so does this wait.
    let status = server.child.wait()?;
    eprintln!("s3s-fs exited: {status}");
    Ok(())
}

/// The server binary: on PATH or in `.tools/bin`, installed there with cargo when missing.
fn ensure_installed() -> Result<PathBuf> {
    let tools = root().join(".tools");
    let local = tools.join("bin").join("s3s-fs");
    for candidate in [local.clone(), PathBuf::from("s3s-fs")] {
        if has_version(&candidate) {
            return Ok(candidate);
        }
    }
    let install = |locked: bool| {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["install", "s3s-fs", "--version", VERSION, "--features", "binary"]);
        if locked {
            cmd.arg("--locked");
        }
        cmd.arg("--root").arg(&tools);
        run(&mut cmd)
    };
    // `--locked` builds with the dependency versions the release was tested with; if the lock
    // file no longer resolves (a yanked crate), fall back to a fresh resolution.
    if let Err(e) = install(true) {
        eprintln!("install with --locked failed ({e}); retrying without it");
        install(false)?;
    }
    if !has_version(&local) {
        bail!("{} is not s3s-fs {VERSION} after installing it", local.display());
    }
    Ok(local)
}

fn has_version(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == format!("s3s-fs {VERSION}"))
}

/// Spawns the server on `port` and waits until it accepts connections.
fn spawn(binary: &Path, data: &Path, port: u16) -> Result<(Child, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::fs::File::create(data.with_extension("log"))?;
    let mut child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "s3s-fs exited before serving: {status} (log: {})",
                data.with_extension("log").display()
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok((child, addr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("s3s-fs did not accept connections on {addr} within {READY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
