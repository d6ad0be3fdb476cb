//! `cargo xtask bench-http`: rangecache against nginx on the same box, in one run.
//!
//! Both servers get the same bytes: nginx serves them as files (sendfile, open_file_cache, no
//! access log: `benches/http/nginx.conf`), rangecache holds them in a memory tier or a disk tier
//! after a PUT. `wrk` drives each workload against both servers with the same script
//! (`benches/http/*.lua`), alternating which server goes first from one round to the next
//! (A B, then B A), and the table gives requests per second, throughput, p99 latency, errors
//! and the ratio rangecache / nginx of every workload, then each server's peak RSS.
//!
//! Options: `--seconds N` per run (default 5), `--rounds N` (default 2), `--only a,b,..` to run
//! some workloads, `--access-log` to run rangecache with its info-level access log on (written
//! to a file) instead of `RANGECACHE_LOG=warn`, the counterpart of nginx's `access_log off`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run, succeeds};

/// Size of the large object (a, b, c).
const BIG_SIZE: usize = 64 << 20;
/// Number and size of the small objects (d).
const N_SMALL: usize = 1000;
const SMALL_SIZE: usize = 1024;
/// How long a server may take to accept connections once started.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Which rangecache server a workload reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Memory,
    Disk,
}

struct Workload {
    id: &'static str,
    what: &'static str,
    tier: Tier,
    script: &'static str,
    path: &'static str,
    /// wrk's threads and connections.
    threads: u32,
    connections: u32,
    /// rangecache / nginx wanted (`None`: watched, no target).
    target: Option<f64>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        id: "a",
        what: "4 KiB ranges of 64 MiB, memory",
        tier: Tier::Memory,
        script: "range.lua",
        path: "/api/v1/object/bench/big",
        threads: 2,
        connections: 32,
        target: Some(1.2),
    },
    Workload {
        id: "b",
        what: "4 KiB ranges of 64 MiB, disk",
        tier: Tier::Disk,
        script: "range.lua",
        path: "/api/v1/object/bench/big",
        threads: 2,
        connections: 32,
        target: Some(1.0),
    },
    Workload {
        id: "c",
        what: "whole 64 MiB GETs, disk",
        tier: Tier::Disk,
        script: "whole.lua",
        path: "/api/v1/object/bench/big",
        threads: 2,
        connections: 32,
        target: Some(1.0),
    },
    Workload {
        id: "d",
        what: "random 1 KiB objects, memory",
        tier: Tier::Memory,
        script: "small.lua",
        path: "/api/v1/object/small/k0",
        threads: 2,
        connections: 32,
        target: Some(1.2),
    },
    Workload {
        id: "e",
        what: "If-None-Match -> 304, memory",
        tier: Tier::Memory,
        script: "not_modified.lua",
        path: "/api/v1/object/bench/big",
        threads: 2,
        connections: 32,
        target: Some(1.2),
    },
    Workload {
        id: "f",
        what: "4 KiB ranges, disk, one connection",
        tier: Tier::Disk,
        script: "range.lua",
        path: "/api/v1/object/bench/big",
        threads: 1,
        connections: 1,
        target: None,
    },
    Workload {
        id: "g",
        what: "4 KiB ranges, memory, one connection",
        tier: Tier::Memory,
        script: "range.lua",
        path: "/api/v1/object/bench/big",
        threads: 1,
        connections: 1,
        target: None,
    },
];

struct Options {
    seconds: u32,
    rounds: u32,
    only: Option<Vec<String>>,
    access_log: bool,
}

/// What one wrk run measured.
#[derive(Clone, Copy, Default)]
struct Measured {
    requests: u64,
    bytes: u64,
    duration_us: u64,
    errors: u64,
    status_errors: u64,
    p99_us: u64,
}

impl Measured {
    fn add(&mut self, other: &Measured) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.duration_us += other.duration_us;
        self.errors += other.errors;
        self.status_errors += other.status_errors;
        // The worst round's p99: a conservative summary of two short runs.
        self.p99_us = self.p99_us.max(other.p99_us);
    }

    fn per_second(&self, n: u64) -> f64 {
        n as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }
}

pub fn run_bench(args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    ensure_programs()?;
    run(cargo().args(["build", "--release", "--quiet", "-p", "rangecache"]))?;
    let binary = target_dir().join("release").join("rangecache");
    let work = target_dir().join("bench-http");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    let started = Instant::now();
    let data = write_data(&work)?;
    eprintln!("bench-http: wrote the objects in {:.1?}", started.elapsed());

    let nginx = Nginx::start(&work)?;
    let access_log = options.access_log;
    let memory = Rangecache::start(&binary, &work, Tier::Memory, access_log)?;
    let disk = Rangecache::start(&binary, &work, Tier::Disk, access_log)?;
    for server in [&memory, &disk] {
        server.load(&data)?;
    }
    let scripts = work.join("scripts");
    std::fs::create_dir_all(&scripts)?;
    let report = std::fs::read_to_string(bench_dir().join("report.lua"))?;
    let mut rows = Vec::new();
    for workload in WORKLOADS {
        if let Some(only) = &options.only
            && !only.iter().any(|id| id == workload.id)
        {
            continue;
        }
        let script = scripts.join(workload.script);
        let body = std::fs::read_to_string(bench_dir().join(workload.script))?;
        std::fs::write(&script, format!("{body}\n{report}"))?;
        let ours = match workload.tier {
            Tier::Memory => &memory,
            Tier::Disk => &disk,
        };
        let peers = [("nginx", nginx.addr), ("rangecache", ours.addr)];
        let mut args = [Vec::new(), Vec::new()];
        for (side, (name, addr)) in peers.iter().enumerate() {
            check_answer(*addr, workload, name)?;
            if workload.script == "not_modified.lua" {
                args[side].push(etag_of(*addr, workload.path)?);
            }
        }
        let mut totals = [Measured::default(); 2];
        for round in 0..options.rounds {
            // A B, then B A: neither server always runs on a cooler machine.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let (name, addr) = peers[side];
                let measured = wrk(workload, addr, &script, &args[side], options.seconds)?;
                eprintln!(
                    "bench-http: ({}) {name} round {}: {:.0} req/s, p99 {} µs",
                    workload.id,
                    round + 1,
                    measured.per_second(measured.requests),
                    measured.p99_us
                );
                totals[side].add(&measured);
            }
        }
        rows.push((workload, totals));
    }
    let rss = [
        ("nginx (master + workers)", nginx.peak_rss_kib()),
        ("rangecache, memory tier", memory.peak_rss_kib()),
        ("rangecache, disk tier", disk.peak_rss_kib()),
    ];
    print!("{}", table(&rows, &rss, &options));
    drop((nginx, memory, disk));
    Ok(())
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options { seconds: 5, rounds: 2, only: None, access_log: false };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().with_context(|| format!("{name} needs a value")).map(String::as_str)
        };
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?.parse()?,
            "--rounds" => options.rounds = value("--rounds")?.parse()?,
            "--only" => {
                options.only = Some(value("--only")?.split(',').map(str::to_owned).collect());
            }
            "--access-log" => options.access_log = true,
            other => bail!(
                "unknown option {other:?}; use --seconds N, --rounds N, --only a,b,.. or \
                 --access-log"
            ),
        }
    }
    if options.seconds == 0 || options.rounds == 0 {
        bail!("--seconds and --rounds must be at least 1");
    }
    Ok(options)
}

/// nginx and wrk from Debian's packages, installed when missing.
fn ensure_programs() -> Result<()> {
    let missing: Vec<&str> = [("nginx", "nginx"), ("wrk", "wrk"), ("curl", "curl")]
        .into_iter()
        .filter(|(program, _)| !succeeds(Command::new("which").arg(program)))
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn bench_dir() -> PathBuf {
    root().join("benches").join("http")
}

/// The objects, as files under `WORK/www` laid out as the API's paths, so nginx serves each at
/// the URL rangecache serves it at.
struct Data {
    files: Vec<(String, PathBuf)>,
}

fn write_data(work: &Path) -> Result<Data> {
    let www = work.join("www").join("api").join("v1").join("object");
    std::fs::create_dir_all(www.join("bench"))?;
    std::fs::create_dir_all(www.join("small"))?;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = |len: usize| {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            // xorshift64: incompressible enough, and the same bytes every run.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    };
    let mut files = Vec::new();
    let big = www.join("bench").join("big");
    std::fs::write(&big, noise(BIG_SIZE))?;
    files.push(("/api/v1/object/bench/big".to_owned(), big));
    for i in 0..N_SMALL {
        let path = www.join("small").join(format!("k{i}"));
        std::fs::write(&path, noise(SMALL_SIZE))?;
        files.push((format!("/api/v1/object/small/k{i}"), path));
    }
    Ok(Data { files })
}

/// A child process killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Nginx(Server);

impl std::ops::Deref for Nginx {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl Nginx {
    fn start(work: &Path) -> Result<Nginx> {
        let prefix = work.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        let port = free_port()?;
        let conf = std::fs::read_to_string(bench_dir().join("nginx.conf"))?
            .replace("{ROOT}", &work.join("www").display().to_string())
            .replace("{PORT}", &port.to_string())
            .replace("{PREFIX}", &prefix.display().to_string());
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log"))?)
            .spawn()
            .context("cannot start nginx")?;
        let server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        wait_ready(&server, "nginx")?;
        Ok(Nginx(server))
    }

    /// The master's peak RSS plus every worker's (children of the master).
    fn peak_rss_kib(&self) -> Option<u64> {
        let master = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
        let mut total = peak_rss_kib(master)?;
        for pid in children.split_whitespace().filter_map(|pid| pid.parse().ok()) {
            total += peak_rss_kib(pid)?;
        }
        Some(total)
    }
}

struct Rangecache(Server);

impl std::ops::Deref for Rangecache {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl Rangecache {
    fn start(binary: &Path, work: &Path, tier: Tier, access_log: bool) -> Result<Rangecache> {
        let name = match tier {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        };
        let port = free_port()?;
        let tier_table = match tier {
            Tier::Memory => "kind = \"memory\"\nmax_size = \"512MiB\"\n".to_owned(),
            Tier::Disk => format!(
                "kind = \"disk\"\npath = \"{}\"\nmax_size = \"4GiB\"\n",
                work.join("rangecache-disk").display()
            ),
        };
        let config =
            format!("listen = \"127.0.0.1:{port}\"\n\n[[tier]]\nname = \"{name}\"\n{tier_table}");
        let config_path = work.join(format!("rangecache-{name}.toml"));
        std::fs::write(&config_path, config)?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RANGECACHE_LOG", if access_log { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join(format!("rangecache-{name}.log")))?)
            .spawn()
            .context("cannot start rangecache")?;
        let server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        wait_ready(&server, "rangecache")?;
        Ok(Rangecache(server))
    }

    /// PUTs every object.
    fn load(&self, data: &Data) -> Result<()> {
        for (path, file) in &data.files {
            let body = std::fs::read(file)?;
            let answer = request(self.addr, "PUT", path, &[], &body)?;
            if answer.status != 200 {
                bail!("PUT {path} answered {}", answer.status);
            }
        }
        Ok(())
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(server: &Server, name: &str) -> Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not accept connections on {} within {READY_DEADLINE:?}", server.addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One answer of [`request`].
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, the body read to EOF); the
/// bench's own set-up and checks need nothing more.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        write!(head, "{name}: {value}\r\n")?;
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{method} {path}: no end of head in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{method} {path}: no status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Answer { status, headers, body: raw[split + 4..].to_vec() })
}

fn etag_of(addr: SocketAddr, path: &str) -> Result<String> {
    let answer = request(addr, "HEAD", path, &[], &[])?;
    answer.header("etag").map(str::to_owned).with_context(|| format!("HEAD {path}: no ETag"))
}

/// Checks that a server answers the workload's kind of request as it should, so a fast run of
/// wrong answers is never reported.
fn check_answer(addr: SocketAddr, workload: &Workload, name: &str) -> Result<()> {
    let (headers, status, length): (Vec<(&str, String)>, u16, usize) = match workload.script {
        "range.lua" => (vec![("Range", "bytes=4096-8191".to_owned())], 206, 4096),
        "small.lua" => (Vec::new(), 200, SMALL_SIZE),
        "whole.lua" => (Vec::new(), 200, BIG_SIZE),
        "not_modified.lua" => (vec![("If-None-Match", etag_of(addr, workload.path)?)], 304, 0),
        other => bail!("no check for {other}"),
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let answer = request(addr, "GET", workload.path, &headers, &[])?;
    if answer.status != status || answer.body.len() != length {
        bail!(
            "({}) {name} answered {} with {} bytes; wanted {status} with {length}",
            workload.id,
            answer.status,
            answer.body.len()
        );
    }
    Ok(())
}

fn wrk(
    workload: &Workload,
    addr: SocketAddr,
    script: &Path,
    args: &[String],
    seconds: u32,
) -> Result<Measured> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", workload.threads))
        .arg(format!("-c{}", workload.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}{}", workload.path));
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let output = cmd.output().context("cannot run wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {}\n{stdout}{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .with_context(|| format!("no RESULT line from wrk:\n{stdout}"))?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in {line:?}"))?
            .parse()
            .with_context(|| format!("bad {name} in {line:?}"))
    };
    Ok(Measured {
        requests: field("requests")?,
        bytes: field("bytes")?,
        duration_us: field("duration_us")?,
        errors: field("errors")?,
        status_errors: field("status_errors")?,
        p99_us: field("p99_us")?,
    })
}

fn table(
    rows: &[(&Workload, [Measured; 2])],
    rss: &[(&str, Option<u64>)],
    options: &Options,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbench-http: {} round(s) of {} s per server and workload, rangecache log {}\n",
        options.rounds,
        options.seconds,
        if options.access_log { "info (access log on)" } else { "warn" }
    );
    let _ = writeln!(
        out,
        "| workload | wrk | nginx req/s | rangecache req/s | ratio | target | nginx MB/s | \
         rangecache MB/s | nginx p99 | rangecache p99 | errors (nginx / rangecache) |"
    );
    let _ =
        writeln!(out, "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |");
    for (workload, [nginx, ours]) in rows {
        let (theirs_rps, ours_rps) =
            (nginx.per_second(nginx.requests), ours.per_second(ours.requests));
        let ratio = ours_rps / theirs_rps.max(f64::MIN_POSITIVE);
        let target = match workload.target {
            Some(target) if ratio >= target => format!("≥ {target}: met"),
            Some(target) => format!("≥ {target}: **missed**"),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| ({}) {} | -t{} -c{} | {:.0} | {:.0} | {:.2} | {target} | {:.1} | {:.1} | {} | {} | \
             {} / {} |",
            workload.id,
            workload.what,
            workload.threads,
            workload.connections,
            theirs_rps,
            ours_rps,
            ratio,
            nginx.per_second(nginx.bytes) / 1e6,
            ours.per_second(ours.bytes) / 1e6,
            micros(nginx.p99_us),
            micros(ours.p99_us),
            nginx.errors + nginx.status_errors,
            ours.errors + ours.status_errors,
        );
    }
    let _ = writeln!(out, "\n| server | peak RSS |\n| --- | ---: |");
    for (name, kib) in rss {
        let shown =
            kib.map_or("unknown".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
        let _ = writeln!(out, "| {name} | {shown} |");
    }
    out
}

fn micros(us: u64) -> String {
    if us >= 10_000 { format!("{:.1} ms", us as f64 / 1000.0) } else { format!("{us} µs") }
}
