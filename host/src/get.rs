//! `rangecache get URL -o FILE [--parallel N] [--resume] [--token TOKEN] [--ca-file FILE]`: one
//! object from any server that honours Range and If-Range (rangecache, cachew, nginx serving a
//! file), fetched as parallel ranged GETs pinned to one revision and written in place into
//! `FILE` (`rangecache_download::file`); over HTTPS, trusting the system's roots and those of
//! `--ca-file`.
//!
//! On a terminal, stderr shows a progress bar; otherwise the command prints nothing but errors.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rangecache_download::file::Outcome;
use rangecache_download::http::Target;
use rangecache_download::{Error, Observer, Options, Quiet};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

/// What `rangecache get` was asked to do.
#[derive(Clone, Debug)]
pub struct GetArgs {
    /// The object's URL.
    pub url: String,
    /// The file to write.
    pub output: PathBuf,
    /// Ranged GETs in flight at once.
    pub parallel: NonZeroUsize,
    /// Continue an interrupted download of the same URL into the same file.
    pub resume: bool,
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// PEM certificates trusted beside the system's roots (`--ca-file`).
    pub ca_file: Option<PathBuf>,
}

/// A stalled connection fails its part (which is then asked for again) instead of hanging the
/// download.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Downloads `args.url` into `args.output`, with a progress bar when stderr is a terminal.
pub async fn get(args: &GetArgs) -> Result<Outcome, Error> {
    let extra_roots = match &args.ca_file {
        Some(file) => crate::tls::extra_roots(file).map_err(Error::Request)?,
        None => Vec::new(),
    };
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .tls_certs_merge(extra_roots)
        .build()
        .map_err(|e| Error::Request(e.to_string()))?;
    let mut headers = HeaderMap::new();
    if let Some(token) = &args.token {
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::Request("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let target = Target::new(client, &args.url).with_headers(headers);
    let options = Options { parallel: args.parallel, ..Options::default() };
    let bar = std::io::stderr().is_terminal().then(Bar::new);
    let observer: Arc<dyn Observer> = match &bar {
        Some(bar) => Arc::new(bar.clone()),
        None => Arc::new(Quiet),
    };
    let outcome =
        rangecache_download::file::download(&target, &args.output, &options, args.resume, observer)
            .await;
    if let Some(bar) = bar {
        bar.0.finish_and_clear();
    }
    outcome
}

/// The progress bar on stderr.
#[derive(Clone)]
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{bytes:>10} / {total_bytes:10} [{wide_bar}] {binary_bytes_per_sec:>12} {eta:>4}",
        )
        .expect("the template parses")
        .progress_chars("=> ");
        bar.set_style(style);
        Bar(bar)
    }
}

impl Observer for Bar {
    fn started(&self, size: Option<u64>, present: u64) {
        match size {
            Some(size) => self.0.set_length(size),
            None => self.0.unset_length(),
        }
        self.0.set_position(present);
        self.0.reset_eta();
    }

    fn advanced(&self, n: u64) {
        self.0.inc(n);
    }

    fn restarting(&self, why: &str) {
        self.0.println(format!("the object changed ({why}); starting over"));
    }
}
