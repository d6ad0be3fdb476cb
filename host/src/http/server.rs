//! The connection loop: accepts TCP connections, turns Nagle's algorithm off on each, and
//! serves HTTP/1.1 on it with hyper (over TLS when `[tls]` is configured), handing every
//! request to [`super::handle`].
//!
//! The loop is ours rather than a framework's because what it decides per connection matters
//! for speed and robustness: `TCP_NODELAY`, since a response whose head and body leave in two
//! writes must not wait for the client's delayed ACK of the first (up to 40 ms a request on a
//! keep-alive connection); HTTP/1.1 only, so no connection is sniffed for an HTTP/2 preface;
//! and a graceful stop that lets requests under way finish.
//!
//! With TLS, the handshake runs in the connection's own task, bounded by the header timeout,
//! so a client that is slow to shake hands holds its connection slot, never the accept loop.
//!
//! The server runs one loop per core, each on a single-threaded runtime of its own thread with a
//! listener of its own bound to the same address (`SO_REUSEPORT`, so the kernel spreads new
//! connections over them): a connection's requests are served on the thread that accepted it,
//! with no work-stealing scheduler and no wake-up crossing threads on the way.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::AppState;

/// The length of each listener's queue of connections not yet accepted.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `n` listeners to `addr` with `SO_REUSEPORT`, all on one port (the first one's, when
/// `addr` asks for any). Must be called on a runtime; the listeners are handed back detached
/// from it, for [`start`] to give each to a runtime of its own.
///
/// A plain listener is bound first and closed again, so that the server still fails to start,
/// as it always did, where anything already listens on `addr` (another rangecache included,
/// which `SO_REUSEPORT` alone would let share the port).
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let addr = std::net::TcpListener::bind(addr)?.local_addr()?;
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        listeners.push(socket.listen(LISTEN_BACKLOG)?.into_std()?);
    }
    Ok(listeners)
}

/// Starts one accept loop per listener ([`serve`]), each on a single-threaded runtime of its
/// own thread, sharing `state.limits.max_connections` connection slots, until `stop` is
/// cancelled. The receiver hears once from each loop when it has ended: `Ok` when it stopped
/// with every connection it served closed, `Err` when it could not start or failed (a panic
/// included). An error here (a thread that cannot be made) leaves the loops already started
/// running; the caller stops them with `stop`.
///
/// A loop's runtime lasts as long as the process once its loop ended, also after a panic: what
/// was started on it (an upstream connection a tier's client pools, say) may still serve the
/// shutdown.
pub fn start(
    listeners: Vec<std::net::TcpListener>,
    state: &Arc<AppState>,
    tls: Option<&TlsAcceptor>,
    stop: &CancellationToken,
) -> io::Result<mpsc::UnboundedReceiver<Result<(), String>>> {
    let slots = Arc::new(Semaphore::new(state.limits.max_connections));
    let (ended, ends) = mpsc::unbounded_channel();
    for (n, listener) in listeners.into_iter().enumerate() {
        let (state, tls, slots, stop) = (state.clone(), tls.cloned(), slots.clone(), stop.clone());
        let ended = ended.clone();
        // The runtime is made in the thread: one dropped here, on the caller's runtime, would
        // panic.
        std::thread::Builder::new().name(format!("rangecache-http-{n}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ended.send(Err(format!("cannot start a runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let outcome = match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let serving = serve(listener, state, tls, slots, stop.cancelled_owned());
                        AssertUnwindSafe(serving)
                            .catch_unwind()
                            .await
                            .map_err(|_| "the accept loop panicked".to_owned())
                    }
                    Err(e) => Err(format!("cannot serve on its listener: {e}")),
                };
                let _ = ended.send(outcome);
                std::future::pending::<()>().await;
            });
        })?;
    }
    Ok(ends)
}

/// How long the loop pauses after an accept error that is not about one connection (out of
/// file descriptors, say), so it does not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `listener` until `stop` resolves, then stops accepting, lets every connection finish
/// the request it is serving (idle ones are closed at once) and returns when all are closed.
///
/// A connection is served only with one of `slots`, which every loop of the server shares
/// (`state.limits.max_connections` of them): past it a loop holds the one connection it
/// accepted until a slot frees, and accepts nothing more, so new clients wait in the kernel's
/// accept queue. (A loop that took its slot first could wait on an empty queue of its own while
/// the connection the slot freed for sat in another loop's.) A request's head must arrive within
/// `state.limits.header_timeout` of the server starting to wait for it (hyper's header read
/// timeout, which also ends idle keep-alive connections). With `tls`, every connection is a TLS
/// one; a handshake must end within the header timeout.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(state.limits.header_timeout);
    let handshake_timeout = state.limits.header_timeout;
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => {
                slot.expect("the connection semaphore is never closed")
            }
            () = &mut stop => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(super::handle(&state, req).await) }
        });
        let Some(tls) = &tls else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
            continue;
        };
        // Watched from before the handshake, so a stop waits for (and reaches) it as well.
        let (watcher, acceptor, http) = (graceful.watcher(), tls.clone(), http.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake took longer than {handshake_timeout:?}");
                    return;
                }
            };
            let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors that concern only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
