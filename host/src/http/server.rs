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

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::AppState;

/// How long the loop pauses after an accept error that is not about one connection (out of
/// file descriptors, say), so it does not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `listener` until `stop` resolves, then stops accepting, lets every connection finish
/// the request it is serving (idle ones are closed at once) and returns when all are closed.
///
/// At most `state.limits.max_connections` connections are served at once: past it the loop
/// accepts nothing until one closes, and new clients wait in the kernel's accept queue. A
/// request's head must arrive within `state.limits.header_timeout` of the server starting to
/// wait for it (hyper's header read timeout, which also ends idle keep-alive connections).
/// With `tls`, every connection is a TLS one; a handshake must end within the header timeout.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(state.limits.header_timeout);
    let slots = Arc::new(Semaphore::new(state.limits.max_connections));
    let handshake_timeout = state.limits.header_timeout;
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => {
                slot.expect("the connection semaphore is never closed")
            }
            () = &mut stop => break,
        };
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
