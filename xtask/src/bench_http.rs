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
//! to a file) instead of `RANGECACHE_LOG=warn`, the counterpart of nginx's `access_log off`, and
//! `--baseline BINARY` to measure another build of rangecache (an older commit's) in the same
//! run, so a change is reported as a before/after ratio of one run.

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
    /// Another rangecache binary (an older build) measured in the same run.
    baseline: Option<PathBuf>,
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
    /// User and system CPU time the server used during the run, in clock ticks.
    cpu_ticks: u64,
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
        self.cpu_ticks += other.cpu_ticks;
    }

    /// The server's CPU time (user and system) per request, in microseconds.
    fn cpu_micros_per_request(&self) -> f64 {
        self.cpu_ticks as f64 * 1e6 / clock_ticks_per_second() / self.requests.max(1) as f64
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
    let mut peers = vec![Peer::Nginx(nginx)];
    let mut binaries = vec![("rangecache", binary)];
    if let Some(baseline) = &options.baseline {
        binaries.push(("baseline", baseline.clone()));
    }
    for (name, binary) in binaries {
        let memory = Rangecache::start(&binary, &work, name, Tier::Memory, options.access_log)?;
        let disk = Rangecache::start(&binary, &work, name, Tier::Disk, options.access_log)?;
        memory.load(&data)?;
        disk.load(&data)?;
        peers.push(Peer::Rangecache { name, memory, disk });
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
        let mut args = Vec::new();
        for peer in &peers {
            let server = peer.server(workload.tier);
            check_answer(server.addr, workload, peer.name())?;
            args.push(if workload.script == "not_modified.lua" {
                vec![etag_of(server.addr, workload.path)?]
            } else {
                Vec::new()
            });
        }
        let mut totals = vec![Measured::default(); peers.len()];
        for round in 0..options.rounds {
            // Forward, then backward: neither server always runs on a cooler machine.
            let mut order: Vec<usize> = (0..peers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for side in order {
                let server = peers[side].server(workload.tier);
                let cpu_before = cpu_ticks(&server.pids());
                let mut measured =
                    wrk(workload, server.addr, &script, &args[side], options.seconds)?;
                measured.cpu_ticks = cpu_ticks(&server.pids()).saturating_sub(cpu_before);
                eprintln!(
                    "bench-http: ({}) {} round {}: {:.0} req/s, p99 {} µs, {:.1} µs CPU a request",
                    workload.id,
                    peers[side].name(),
                    round + 1,
                    measured.per_second(measured.requests),
                    measured.p99_us,
                    measured.cpu_micros_per_request(),
                );
                totals[side].add(&measured);
            }
        }
        rows.push((workload, totals));
    }
    let mut rss = Vec::new();
    for peer in &peers {
        match peer {
            Peer::Nginx(nginx) => {
                rss.push(("nginx (master + workers)".to_owned(), nginx.peak_rss_kib()))
            }
            Peer::Rangecache { name, memory, disk } => {
                rss.push((format!("{name}, memory tier"), peak_rss_kib(memory.child.id())));
                rss.push((format!("{name}, disk tier"), peak_rss_kib(disk.child.id())));
            }
        }
    }
    let names: Vec<&str> = peers.iter().map(Peer::name).collect();
    print!("{}", table(&names, &rows, &rss, &options));
    Ok(())
}

/// A server the workloads run against: nginx serves both tiers' workloads from its files.
enum Peer {
    Nginx(Nginx),
    Rangecache { name: &'static str, memory: Rangecache, disk: Rangecache },
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Peer::Nginx(_) => "nginx",
            Peer::Rangecache { name, .. } => name,
        }
    }

    fn server(&self, tier: Tier) -> &Server {
        match (self, tier) {
            (Peer::Nginx(nginx), _) => nginx,
            (Peer::Rangecache { memory, .. }, Tier::Memory) => memory,
            (Peer::Rangecache { disk, .. }, Tier::Disk) => disk,
        }
    }
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options =
        Options { seconds: 5, rounds: 2, only: None, access_log: false, baseline: None };
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
            "--baseline" => options.baseline = Some(PathBuf::from(value("--baseline")?)),
            other => bail!(
                "unknown option {other:?}; use --seconds N, --rounds N, --only a,b,.., \
                 --access-log or --baseline BINARY"
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

impl Server {
    /// The server's processes: itself and its children (nginx's workers).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|child| child.parse().ok()))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: nginx's master stops its workers on SIGTERM, while a killed
        // master leaves them serving; rangecache drains and exits on it.
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if !terminated {
            let _ = self.child.kill();
        }
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

    /// The master's peak RSS plus every worker's.
    fn peak_rss_kib(&self) -> Option<u64> {
        self.pids().into_iter().map(peak_rss_kib).sum()
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
    fn start(
        binary: &Path,
        work: &Path,
        peer: &str,
        tier: Tier,
        access_log: bool,
    ) -> Result<Rangecache> {
        let name = match tier {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        };
        let port = free_port()?;
        let tier_table = match tier {
            Tier::Memory => "kind = \"memory\"\nmax_size = \"512MiB\"\n".to_owned(),
            Tier::Disk => format!(
                "kind = \"disk\"\npath = \"{}\"\nmax_size = \"4GiB\"\n",
                work.join(format!("{peer}-disk")).display()
            ),
        };
        let config =
            format!("listen = \"127.0.0.1:{port}\"\n\n[[tier]]\nname = \"{name}\"\n{tier_table}");
        let config_path = work.join(format!("{peer}-{name}.toml"));
        std::fs::write(&config_path, config)?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RANGECACHE_LOG", if access_log { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join(format!("{peer}-{name}.log")))?)
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
}

/// User plus system time of `pids`, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may hold spaces; the fields after it are counted from its ')'.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output();
    output
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
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
        cpu_ticks: 0,
    })
}

fn table(
    names: &[&str],
    rows: &[(&Workload, Vec<Measured>)],
    rss: &[(String, Option<u64>)],
    options: &Options,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbench-http: {} round(s) of {} s per server and workload, rangecache log {}; ratio = \
         req/s against nginx's; CPU = the server's user + system time per request\n",
        options.rounds,
        options.seconds,
        if options.access_log { "info (access log on)" } else { "warn" }
    );
    let mut head = "| workload | wrk |".to_owned();
    let mut rule = "| --- | --- |".to_owned();
    for name in names {
        let _ = write!(head, " {name} req/s |");
        rule.push_str(" ---: |");
        if *name != "nginx" {
            let _ = write!(head, " {name} ratio |");
            rule.push_str(" ---: |");
        }
    }
    head.push_str(" target |");
    rule.push_str(" --- |");
    for name in names {
        let _ = write!(head, " {name} MB/s | {name} p99 | {name} CPU | {name} errors |");
        rule.push_str(" ---: | ---: | ---: | ---: |");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for (workload, measured) in rows {
        let nginx_rps = measured[0].per_second(measured[0].requests).max(f64::MIN_POSITIVE);
        let _ = write!(
            out,
            "| ({}) {} | -t{} -c{} |",
            workload.id, workload.what, workload.threads, workload.connections
        );
        for (idx, m) in measured.iter().enumerate() {
            let rps = m.per_second(m.requests);
            let _ = write!(out, " {rps:.0} |");
            if idx > 0 {
                let _ = write!(out, " {:.2} |", rps / nginx_rps);
            }
        }
        let ratio = measured.get(1).map_or(0.0, |m| m.per_second(m.requests) / nginx_rps);
        let _ = write!(
            out,
            " {} |",
            match workload.target {
                Some(target) if ratio >= target => format!("≥ {target}: met"),
                Some(target) => format!("≥ {target}: **missed**"),
                None => "-".to_owned(),
            }
        );
        for m in measured {
            let _ = write!(
                out,
                " {:.1} | {} | {:.1} µs | {} |",
                m.per_second(m.bytes) / 1e6,
                micros(m.p99_us),
                m.cpu_micros_per_request(),
                m.errors + m.status_errors
            );
        }
        out.push('\n');
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
