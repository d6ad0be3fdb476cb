//! `cargo xtask test|wasm|bench|bench-http|bench-download|fuzz|sim|faults|soak`: rangecache's
//! multi-step tasks.
//!
//! Every step prints what it runs and how long it took, checks before it installs, and stops at
//! the first failure.

mod bench_http;
mod fuzz;
mod long_run;
mod s3;
mod tools;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let task = args.first().map(String::as_str).unwrap_or("help");
    match task {
        "test" => test()?,
        "wasm" => wasm::build_package()?,
        "fuzz" => fuzz::run(&args[1..])?,
        "bench" => bench(&args[1..])?,
        "bench-http" => bench_http::run_bench(&args[1..])?,
        "bench-download" => bench_download(&args[1..])?,
        "sim" => sim()?,
        "faults" => long_run::faults(&args[1..])?,
        "soak" => long_run::soak(&args[1..])?,
        "s3-server" => s3::serve_foreground()?,
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 test       install what is missing, then run every suite (what CI runs)\n\
                 wasm       build the npm package into wasm/pkg\n\
                 bench      run the criterion benches (extra arguments go to cargo bench)\n\
                 bench-http rangecache against nginx under wrk, in one run (--seconds, --rounds,\n\
                 \x20          --only a,b,.., --access-log, --baseline BINARY)\n\
                 bench-download\n\
                 \x20          a 256 MiB copy from the s3 tier (s3s-fs) and from a remote\n\
                 \x20          rangecache, one stream against 8 parallel parts, in one run\n\
                 \x20          (--sweep: also other part counts and sizes)\n\
                 fuzz       run the parser fuzzers (RANGECACHE_FUZZ_SECS per target, default 60)\n\
                 sim        run the core simulation as long as RANGECACHE_SIM_STEPS asks\n\
                 faults     faults injected inside the tiers of a real server, every answer\n\
                 \x20          checked (--seconds N, default 300; --seed N; --clients N)\n\
                 soak       readers and writers through a chain of two real servers; ops/s,\n\
                 \x20          errors, peak RSS (--seconds N, default 60; --clients N)\n\
                 s3-server  install and run the S3-compatible test server in the foreground"
            );
            if task != "help" {
                bail!("unknown task {task:?}");
            }
            return Ok(());
        }
    }
    eprintln!("xtask {task}: done in {:.1?}", started.elapsed());
    Ok(())
}

/// What CI runs: every check and every suite, one build reused across them.
fn test() -> Result<()> {
    tools::ensure_rust_components()?;
    tools::ensure_apt_packages()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // With the faults feature the fault-injecting tier is linted too (a superset of the code).
    run(cargo()
        .args(["clippy", "--workspace", "--all-targets", "--features", FAULTS])
        .args(["--", "-D", "warnings"]))?;
    run(cargo().args([
        "clippy",
        "-p",
        "rangecache-core",
        "-p",
        "rangecache-wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["build", "-p", "rangecache-core", "--target", "wasm32-unknown-unknown"]))?;
    // The package comes before the suites: the wasm bench, run once as a test, loads it.
    wasm::build_package()?;
    {
        // The S3-compatible server lives exactly as long as the suites that talk to it. The
        // server binary every suite starts is built with the faults feature, which the fault
        // run needs and which changes nothing for a configuration without a faulty tier.
        let s3 = s3::Server::start()?;
        run(cargo()
            .args(["test", "--workspace", "--all-targets", "--no-fail-fast", "--features", FAULTS])
            .envs(s3.env())
            .env("RANGECACHE_BIN", bin_path("rangecache")))?;
        long_run::run_faults(&s3, &["--seconds".into(), "30".into()])?;
    }
    long_run::run_soak(&["--seconds".into(), "60".into()])?;
    // Doc tests are not part of --all-targets.
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    wasm::test_package()?;
    Ok(())
}

/// The cargo feature of the server binary the suites start: `faulty` tiers.
pub const FAULTS: &str = "rangecache/faults";

fn bench(extra: &[String]) -> Result<()> {
    run(cargo().args(["bench", "--package", "rangecache-benches"]).args(extra))
}

/// The download bench (`benches/benches/download.rs`) with what it reads from: s3s-fs, and the
/// release binary, which it starts as the remote rangecache.
fn bench_download(extra: &[String]) -> Result<()> {
    run(cargo().args(["build", "--release", "--quiet", "-p", "rangecache"]))?;
    let s3 = s3::Server::start()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    run(cargo()
        .args(["bench", "--package", "rangecache-benches", "--bench", "download", "--"])
        .args(extra)
        .envs(s3.env())
        .env("RANGECACHE_BIN", target.join("release").join("rangecache")))
}

fn sim() -> Result<()> {
    run(cargo()
        .args(["test", "--release", "-p", "rangecache-core", "--test", "sim", "--", "--nocapture"])
        .env("RANGECACHE_SIM_LONG", "1"))
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts the workspace's debug binaries.
pub fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("debug").join(name)
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, printing it and how long it took; fails if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("==> {shown}");
    let started = Instant::now();
    let status = cmd.status().with_context(|| format!("could not start {shown}"))?;
    eprintln!("<== {shown}: {status} in {:.1?}", started.elapsed());
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// True if `cmd` runs and exits zero, with its output discarded; used by the install checks.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn show(cmd: &Command) -> String {
    let mut shown = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}
