//! What the long-running end-to-end runs share (`rangecache-faults`, `rangecache-soak`): real
//! `rangecache` processes, an independent model of the versions written and of what a read of
//! them may answer, and a small argument parser. The end-to-end tests live in `tests/`.

pub mod model;
pub mod process;

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The options every run takes: `--seconds N`, `--seed N`, `--clients N`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long the load runs.
    pub duration: Duration,
    /// Seed of every random choice of the clients (and of the faults).
    pub seed: u64,
    /// Concurrent clients.
    pub clients: usize,
}

impl RunOptions {
    /// Parses the arguments after the program name; `defaults` fills what is not given.
    pub fn parse(args: impl IntoIterator<Item = String>, defaults: RunOptions) -> Result<Self> {
        let mut options = defaults;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<u64> {
                let text = args.next().with_context(|| format!("{name} needs a value"))?;
                text.parse().with_context(|| format!("{name} {text:?} is not a number"))
            };
            match arg.as_str() {
                "--seconds" => options.duration = Duration::from_secs(value("--seconds")?),
                "--seed" => options.seed = value("--seed")?,
                "--clients" => options.clients = usize::try_from(value("--clients")?)?,
                other => bail!("unknown argument {other:?} (--seconds N, --seed N, --clients N)"),
            }
        }
        if options.clients == 0 {
            bail!("--clients must be at least 1");
        }
        Ok(options)
    }
}

/// A client with no proxy and no automatic decompression; no overall timeout, so that a
/// request that never ends is caught by the run's own deadline and reported as such.
pub fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .build()?)
}
