//! Real `rangecache` processes for the long runs: started with a configuration in a directory of
//! their own, ready once they print their address, stopped with SIGTERM and a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The server binary: `RANGECACHE_BIN`, else `rangecache` beside the running program (both
/// are built into the same target directory).
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RANGECACHE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().context("where is this program")?;
    Ok(me.with_file_name("rangecache"))
}

/// One running `rangecache serve`; killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://ADDR`.
    pub base: String,
    /// Its working directory (configuration, log).
    pub dir: PathBuf,
    name: String,
}

impl Server {
    /// Starts `rangecache serve` on a free loopback port in `dir` (created if missing) with
    /// `config` (TOML without `listen`) and extra environment variables; `name` labels reports.
    pub fn start(name: &str, dir: &Path, config: &str, env: &[(String, String)]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("rangecache.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut child = Command::new(binary()?)
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir)
            // Warnings only, unless the caller asks for more (`RANGECACHE_LOG=info` logs every
            // request).
            .env(
                "RANGECACHE_LOG",
                std::env::var("RANGECACHE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary().unwrap_or_default().display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Keep reading so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match receiver.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("{name} did not start in {START_DEADLINE:?}:\n{}", read_log(dir));
            }
        };
        let Some(addr) = line.trim().strip_prefix("rangecache listening on ") else {
            let status = child.wait();
            bail!("{name} did not start ({status:?}): {line:?}\n{}", read_log(dir));
        };
        Ok(Server {
            child: Some(child),
            base: addr.to_owned(),
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        })
    }

    /// The URL of an object.
    pub fn object(&self, namespace: &str, key: &str) -> String {
        format!("{}/api/v1/object/{namespace}/{key}", self.base)
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The largest resident set the process has had so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_status("VmHWM:")
    }

    /// The resident set now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_status("VmRSS:")
    }

    fn proc_status(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM and waits for the exit, at most `deadline`.
    pub fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("the server is not running")?;
        let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        if !sent.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within {deadline:?} of SIGTERM:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// The `/metrics` text.
    pub async fn scrape(&self, client: &reqwest::Client) -> Result<String> {
        Ok(client.get(self.url("/metrics")).send().await?.error_for_status()?.text().await?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// The series of the family `name` in a metrics exposition, as (labels, value).
pub fn series<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            let labels = labels.strip_prefix('{')?.strip_suffix('}')?;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The S3-compatible server the run talks to, from the variables `cargo xtask s3-server`
/// prints (and `cargo xtask test` sets): endpoint, bucket and the `AWS_*` credentials.
pub struct S3Env {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// `AWS_*` variables for the server processes.
    pub env: Vec<(String, String)>,
}

impl S3Env {
    /// Reads the variables; an error names the missing one and how to get a server.
    pub fn from_env() -> Result<S3Env> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!(
                    "{name} is not set: run this through `cargo xtask`, or start \
                     `cargo xtask s3-server` and export the variables it prints"
                )
            })
        };
        Ok(S3Env {
            endpoint: var("RANGECACHE_TEST_S3_ENDPOINT")?,
            bucket: var("RANGECACHE_TEST_S3_BUCKET")?,
            env: vec![
                ("AWS_ACCESS_KEY_ID".to_owned(), var("AWS_ACCESS_KEY_ID")?),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), var("AWS_SECRET_ACCESS_KEY")?),
            ],
        })
    }
}
