//! The `rangecache` binary: `rangecache serve [--config FILE] [--listen ADDR] [--log-format
//! FORMAT]`, `rangecache check-config FILE`,
//! `rangecache get URL -o FILE [--parallel N] [--resume] [--token TOKEN]` and
//! `rangecache fsck [--config FILE] [--repair]`.
//!
//! `serve`: start-up reads the configuration (the file, then `RANGECACHE_*` overrides; an error
//! is one line naming the field, exit 2), opens the tiers, binds, and prints
//! `rangecache listening on http://ADDR` (`https://` with `[tls]`) on stdout once it accepts
//! connections. `/readyz` answers 200 once every tier has answered a probe. SIGINT or SIGTERM
//! turns `/readyz` to 503, serves on for `shutdown_delay` (a second signal cuts it short), then
//! stops accepting, ends in-flight work, drains the copies into tier 0, closes the tiers and
//! exits 0.
//!
//! `check-config`: reads and checks the configuration as `serve` would, prints it in effect
//! with its tokens masked, and exits 0, or 2 with the one-line error.
//!
//! `fsck` checks the files of the disk tiers and exits 0 when nothing is wrong, 1 when it found
//! broken files (removed with `--repair`), 2 on a configuration error and 3 when a directory
//! could not be read or a file could not be removed.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use rangecache::config::env::Overrides;
use rangecache::config::{Config, ConfigError, LogFormat};
use rangecache::get::GetArgs;
use rangecache::http::{AppState, Readiness};
use rangecache::metrics::Metrics;
use rangecache::tiered::Tiered;

/// A request allocates a few dozen small, short-lived buffers (header maps, strings of the
/// plan, boxed streams); mimalloc's thread-local free lists serve them at a fraction of the
/// system allocator's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long in-flight requests may take to finish after a shutdown signal before their
/// connections are dropped; a slow download must not hold the process hostage.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "rangecache", version, about = "A tiered, range-aware object cache")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /api/v1 over the configured tiers.
    Serve {
        /// TOML configuration file; without it, memory + disk under ./rangecache-data.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the file (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// How log lines are written: `human`, or `json` (one object per line), overriding the
        /// file and RANGECACHE_LOG_FORMAT.
        #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
        log_format: Option<String>,
    },
    /// Check a configuration file as `serve` would read it (RANGECACHE_* overrides included)
    /// and print the configuration in effect, tokens masked.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Download one object as parallel ranged GETs pinned to one revision.
    Get {
        /// The object's URL (rangecache, cachew, or any server that honours Range and If-Range).
        url: String,
        /// The file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Ranged GETs in flight at once; 1 reads the object as one stream.
        #[arg(long, value_name = "N", default_value = "8")]
        parallel: NonZeroUsize,
        /// Continue an interrupted download of the same URL into FILE, if the object has not
        /// changed since.
        #[arg(long)]
        resume: bool,
        /// Sent as `Authorization: Bearer TOKEN`.
        #[arg(long, value_name = "TOKEN", env = "RANGECACHE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM certificates to trust beside the system's for an HTTPS URL (a private CA).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Check the files of the disk tiers (run it while no server uses them).
    Fsck {
        /// TOML configuration file; without it, the disk tier under ./rangecache-data.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Remove the broken files found.
        #[arg(long)]
        repair: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config, listen, log_format } => serve_command(config, listen, log_format),
        Command::CheckConfig { file } => check_config(&file),
        Command::Get { url, output, parallel, resume, token, ca_file } => {
            // A command run by hand: only warnings, unless RANGECACHE_LOG asks for more.
            let _flush_on_exit = init_logging("warn", LogFormat::Human);
            get_command(&GetArgs { url, output, parallel, resume, token, ca_file })
        }
        Command::Fsck { config, repair } => {
            let _flush_on_exit = init_logging("warn", LogFormat::Human);
            fsck(config, repair)
        }
    }
}

/// Logs to stderr at `default` level unless `RANGECACHE_LOG` says otherwise, as text or as one
/// JSON object per line (the event's fields at the top level beside `timestamp`, `level`,
/// `target` and `message`). Lines are written by a thread of their own, so a request never
/// waits on the terminal or the log file; none is dropped (a full buffer makes the logger
/// wait), and the returned guard flushes what is left when it is dropped.
fn init_logging(default: &str, format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, flush_on_drop) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("rangecache-log")
        .finish(std::io::stderr());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RANGECACHE_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(writer);
    match format {
        LogFormat::Human => {
            subscriber.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    flush_on_drop
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("rangecache: cannot start the runtime: {e}");
            None
        }
    }
}

fn get_command(args: &GetArgs) -> ExitCode {
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(rangecache::get::get(args)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rangecache get: {}: {e}", args.url);
            ExitCode::FAILURE
        }
    }
}

fn serve_command(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    log_format: Option<String>,
) -> ExitCode {
    let mut config = match Config::from_sources(config.as_deref(), &Overrides::from_env(), listen) {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    if let Some(format) = log_format.as_deref().and_then(LogFormat::parse) {
        config.log_format = format;
    }
    let _flush_on_exit = init_logging("info", config.log_format);
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    runtime.block_on(serve(config))
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let overrides = Overrides::from_env();
    match Config::from_sources(Some(file), &overrides, None) {
        Ok(config) => {
            println!("# {}: valid; the configuration in effect, tokens masked", file.display());
            print!("{}", rangecache::config::show::render(&config, &overrides));
            ExitCode::SUCCESS
        }
        Err(e) => config_failure(&e),
    }
}

fn fsck(config: Option<PathBuf>, repair: bool) -> ExitCode {
    let config = match config {
        Some(path) => Config::load(&path, None),
        None => Config::default_with(None),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    let now = rangecache::clock::now();
    match rangecache::fsck::run(&config, now, repair, &mut std::io::stdout().lock()) {
        Ok(summary) if summary.n_failures > 0 => ExitCode::from(3),
        Ok(summary) if summary.n_broken > 0 => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rangecache fsck: cannot write the report: {e}");
            ExitCode::from(3)
        }
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("rangecache: configuration error: {e}");
    ExitCode::from(2)
}

async fn serve(config: Config) -> ExitCode {
    raise_file_limit(config.limits.max_connections);
    let tls = match config.tls.as_ref().map(rangecache::tls::acceptor).transpose() {
        Ok(tls) => tls,
        Err(e) => return config_failure(&e),
    };
    // Watched from before the server says it listens, so no signal sent after that is missed.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("rangecache: cannot watch SIGINT and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let slots = match rangecache::build_tiers(&config, &metrics).await {
        Ok(slots) => slots,
        Err(e) => return config_failure(&e),
    };
    let tiered = Arc::new(Tiered::new(slots, metrics.clone()));
    let state = Arc::new(AppState {
        tiered: tiered.clone(),
        metrics,
        auth: config.auth.clone(),
        max_object_size: config.max_object_size,
        limits: config.limits,
        request_ids: Default::default(),
        readiness: Readiness::default(),
    });
    let loops = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let listeners = match rangecache::http::server::bind(config.listen, loops) {
        Ok(listeners) => listeners,
        Err(e) => {
            return config_failure(&ConfigError {
                field: "listen".into(),
                message: format!("cannot listen on {}: {e}", config.listen),
            });
        }
    };
    let addr = listeners[0].local_addr().unwrap_or(config.listen);
    let probing = tokio::spawn({
        let state = state.clone();
        async move {
            state.tiered.probe_until_answered().await;
            if !state.tiered.is_shutting_down() {
                state.readiness.set_tiers_answered();
                tracing::info!("ready: every tier answered its probe");
            }
        }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let stop = tokio_util::sync::CancellationToken::new();
    let mut ends = match rangecache::http::server::start(listeners, &state, tls.as_ref(), &stop) {
        Ok(ends) => ends,
        Err(e) => {
            eprintln!("rangecache: cannot start the server's threads: {e}");
            stop.cancel();
            tiered.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, tiers = ?tiered.names(), threads = loops, "serving");
    println!("rangecache listening on {scheme}://{addr}");

    let mut loops_left = loops;
    // Whether a loop failed or stopped on its own: the exit status says so.
    let mut failed = false;
    let signal = tokio::select! {
        signal = signals.next() => signal,
        outcome = ends.recv() => {
            let why = outcome.and_then(Result::err).unwrap_or_else(|| "it ended".to_owned());
            tracing::error!(why, "a server thread stopped on its own; shutting down");
            loops_left -= 1;
            failed = true;
            "server exit"
        }
    };
    state.readiness.set_draining();
    probing.abort();
    if !config.shutdown_delay.is_zero() && loops_left == loops {
        // Load balancers see /readyz fail and stop sending; until the delay ends, whatever
        // still arrives is served.
        tracing::info!(signal, delay = ?config.shutdown_delay,
            "not ready: serving on for the shutdown delay (another signal ends it)");
        tokio::select! {
            () = tokio::time::sleep(config.shutdown_delay) => {}
            signal = signals.next() => tracing::info!(signal, "shutdown delay cut short"),
        }
    }
    tracing::info!(signal, "shutting down: no new connections");
    // Graceful: the listener closes, idle connections are closed, and the server future ends
    // once every connection has finished its request.
    stop.cancel();
    // Copies and uploads still receiving their body observe the driver's shutdown at once;
    // downloads and commits under way get a short grace.
    tiered.begin_shutdown();
    let ended = async {
        while loops_left > 0
            && let Some(outcome) = ends.recv().await
        {
            loops_left -= 1;
            if let Err(why) = outcome {
                tracing::error!(why, "a server thread failed while stopping");
                failed = true;
            }
        }
    };
    if tokio::time::timeout(GRACE, ended).await.is_err() {
        // Closing the tiers does what is needed: the bodies still streaming end with an error,
        // new commits get 503, and the tiers close once the requests under way let go (or after
        // a bound).
        tracing::warn!("requests still in flight after {GRACE:?}; cutting them off the tiers");
    }
    tiered.shutdown().await;
    tracing::info!("stopped");
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Descriptors a server needs beside its connections: listening socket, log, tiers' open files
/// (a disk tier keeps up to 1,024), upstream connections.
const FILES_BESIDE_CONNECTIONS: u64 = 2048;

/// Raises the soft limit on open files to the hard limit, as a server that holds thousands of
/// connections must (the soft limit is often 1,024), and warns when even that leaves too few
/// descriptors for `max_connections`.
fn raise_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
    let current = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(e) => {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
            limit.current
        }
    };
    let wanted = max_connections as u64 + FILES_BESIDE_CONNECTIONS;
    if let Some(current) = current
        && current < wanted
    {
        tracing::warn!(
            open_file_limit = current,
            max_connections,
            "the open-file limit may run out before limits.max_connections; raise it \
             (ulimit -n) or lower limits.max_connections"
        );
    }
}

/// SIGINT and SIGTERM, watched from creation on: a signal that arrives while nobody waits is
/// seen by the next wait.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
