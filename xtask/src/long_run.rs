//! The long runs: `cargo xtask faults` (faults injected inside the tiers of a real server, on a
//! real S3-compatible server) and `cargo xtask soak` (a chain of two real servers under load).
//! Both are debug binaries of the tests crate, built with the server binary they start; their
//! own arguments (`--seconds`, `--seed`, `--clients`) are passed through.

use anyhow::Result;

use crate::{FAULTS, bin_path, cargo, run, s3};

/// `cargo xtask faults [ARGS]`: 300 seconds unless `--seconds` says otherwise.
pub fn faults(args: &[String]) -> Result<()> {
    build(&["rangecache-faults"])?;
    let s3 = s3::Server::start()?;
    run_faults(&s3, &with_default_seconds(args, "300"))
}

/// `cargo xtask soak [ARGS]`: 60 seconds unless `--seconds` says otherwise.
pub fn soak(args: &[String]) -> Result<()> {
    build(&["rangecache-soak"])?;
    run_soak(&with_default_seconds(args, "60"))
}

/// Runs the built fault run against `s3`.
pub fn run_faults(s3: &s3::Server, args: &[String]) -> Result<()> {
    run(std::process::Command::new(bin_path("rangecache-faults"))
        .args(args)
        .envs(s3.env())
        .env("RANGECACHE_BIN", bin_path("rangecache")))
}

/// Runs the built soak.
pub fn run_soak(args: &[String]) -> Result<()> {
    run(std::process::Command::new(bin_path("rangecache-soak"))
        .args(args)
        .env("RANGECACHE_BIN", bin_path("rangecache")))
}

/// Builds the server (with the faults feature, as the suites use it) and the named binaries.
fn build(bins: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "rangecache", "-p", "rangecache-tests", "--features", FAULTS]);
    cmd.args(["--bin", "rangecache"]);
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    run(&mut cmd)
}

fn with_default_seconds(args: &[String], seconds: &str) -> Vec<String> {
    let mut args = args.to_vec();
    if !args.iter().any(|arg| arg == "--seconds") {
        args.extend(["--seconds".to_owned(), seconds.to_owned()]);
    }
    args
}
