//! The `rangecache` binary: `rangecache serve [--config FILE] [--listen ADDR]`,
//! `rangecache get URL -o FILE [--parallel N] [--resume] [--token TOKEN]` and
//! `rangecache fsck [--config FILE] [--repair]`.
//!
//! `serve`: start-up reads the configuration (an error is one line naming the field, exit 2),
//! opens the tiers, binds, and prints `rangecache listening on http://ADDR` on stdout once it
//! accepts connections. SIGINT or SIGTERM stops accepting, ends in-flight work, drains the copies into
//! tier 0, closes the tiers and exits 0.
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

use rangecache::config::{Config, ConfigError};
use rangecache::get::GetArgs;
use rangecache::http::AppState;
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
        Command::Serve { config, listen } => {
            let _flush_on_exit = init_logging("info");
            serve_command(config, listen)
        }
        Command::Get { url, output, parallel, resume, token } => {
            // A command run by hand: only warnings, unless RANGECACHE_LOG asks for more.
            let _flush_on_exit = init_logging("warn");
            get_command(&GetArgs { url, output, parallel, resume, token })
        }
        Command::Fsck { config, repair } => {
            let _flush_on_exit = init_logging("warn");
            fsck(config, repair)
        }
    }
}

/// Logs to stderr at `default` level unless `RANGECACHE_LOG` says otherwise. Lines are
/// written by a thread of their own, so a request never waits on the terminal or the log
/// file; none is dropped (a full buffer makes the logger wait), and the returned guard flushes
/// what is left when it is dropped.
fn init_logging(default: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, flush_on_drop) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("rangecache-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RANGECACHE_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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

fn serve_command(config: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    let config = match config {
        Some(path) => Config::load(&path, listen),
        None => Config::default_with(listen),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    runtime.block_on(serve(config))
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
    });
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            return config_failure(&ConfigError {
                field: "listen".into(),
                message: format!("cannot listen on {}: {e}", config.listen),
            });
        }
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rangecache::http::server::serve(listener, state, async {
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(server);
    tracing::info!(%addr, tiers = ?tiered.names(), "serving");
    println!("rangecache listening on http://{addr}");

    let signal = tokio::select! {
        signal = shutdown_signal() => signal,
        result = &mut server => {
            tracing::error!(?result, "server stopped on its own");
            "server exit"
        }
    };
    tracing::info!(signal, "shutting down: no new connections");
    // Graceful: the listener closes, idle connections are closed, and the server future ends
    // once every connection has finished its request.
    let _ = stop_tx.send(());
    // Copies and uploads still receiving their body observe the driver's shutdown at once;
    // downloads and commits under way get a short grace.
    tiered.begin_shutdown();
    if tokio::time::timeout(GRACE, &mut server).await.is_err() {
        // Aborting the server's task does not end its connections' tasks; closing the tiers
        // does what is needed: their bodies end with an error, new commits get 503, and the
        // tiers close once the requests under way let go (or after a bound).
        tracing::warn!("requests still in flight after {GRACE:?}; cutting them off the tiers");
        server.abort();
    }
    tiered.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
