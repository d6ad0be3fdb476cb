//! `cargo xtask fuzz [TARGET...]`: the header-parser fuzzers under cargo-fuzz (not run by CI).
//!
//! Each target (all of `fuzz/`'s when none is named) runs for `RANGECACHE_FUZZ_SECS` seconds
//! (default 60). Only a stable toolchain is assumed: `--sanitizer none` needs no nightly
//! flag, since cargo-fuzz then passes only stable `-C` options (sancov instrumentation through
//! `-Cpasses` and `-Cllvm-args`). Crashes are kept under `fuzz/artifacts/TARGET/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{root, succeeds};

/// Installs cargo-fuzz if missing, then runs every requested target in turn.
pub fn run(targets: &[String]) -> Result<()> {
    ensure_cargo_fuzz()?;
    let secs: u64 = match std::env::var("RANGECACHE_FUZZ_SECS") {
        Ok(value) => value.parse().with_context(|| format!("RANGECACHE_FUZZ_SECS={value:?}"))?,
        Err(_) => 60,
    };
    let targets = if targets.is_empty() { list_targets()? } else { targets.to_vec() };
    let mut summary = Vec::new();
    for target in &targets {
        let done = run_target(target, secs)?;
        summary.push(format!("{target}: {done}"));
    }
    for line in summary {
        eprintln!("fuzz {line}");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    // --locked keeps the tested dependency versions; a lock file that no longer builds with
    // this toolchain is retried with fresh resolution.
    crate::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .or_else(|_| crate::run(Command::new("cargo").args(["install", "cargo-fuzz"])))
}

fn list_targets() -> Result<Vec<String>> {
    let out = Command::new("cargo")
        .args(["fuzz", "list"])
        .current_dir(root().join("fuzz"))
        .output()
        .context("could not run cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

/// Runs one target, echoing libFuzzer's output; returns its closing `Done N runs in S
/// second(s)` line.
fn run_target(target: &str, secs: u64) -> Result<String> {
    let max_time = format!("-max_total_time={secs}");
    let args = ["fuzz", "run", "--sanitizer", "none", target, "--", &max_time];
    eprintln!("==> cargo {}", args.join(" "));
    let started = Instant::now();
    let mut child = Command::new("cargo")
        .args(args)
        .current_dir(root().join("fuzz"))
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start cargo fuzz run")?;
    let stderr = child.stderr.take().expect("stderr was piped");
    let mut done = String::from("no summary line");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if line.starts_with("Done ") {
            done = line.clone();
        }
        eprintln!("{line}");
    }
    let status = child.wait()?;
    eprintln!("<== fuzz {target}: {status} in {:.1?}", started.elapsed());
    if !status.success() {
        bail!("fuzz target {target} failed ({status}); see fuzz/artifacts/{target}/");
    }
    Ok(done)
}
