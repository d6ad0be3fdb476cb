//! The HTTP surface (SPEC §3): `/api/v1` over the tiers, `/metrics`, `/healthz` (liveness) and
//! `/readyz` (readiness), served by hyper from our own connection loop ([`server`]).
//!
//! Every request goes to [`handle`], which parses the path once into a [`Route`] and answers
//! it, so that every client mistake gets its own clear 4xx. Answers about objects render the
//! core's `ResponsePlan`; nothing here decides a status about an object.

mod auth;
mod error;
mod object;
mod render;
mod request_id;
pub mod server;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::{Auth, Limits};
use crate::metrics::{self, Metrics};
use crate::tiered::Tiered;

pub use error::ApiError;
pub use render::{ACCESS_LOG, Response, ResponseBody};
pub use request_id::{RequestIds, X_REQUEST_ID};

/// What every request handler reaches.
pub struct AppState {
    /// The tiers and the machines driving them.
    pub tiered: Arc<Tiered>,
    /// The metric families.
    pub metrics: Arc<Metrics>,
    /// Bearer tokens, if the server is not open.
    pub auth: Option<Auth>,
    /// Largest object a write may store.
    pub max_object_size: u64,
    /// Timeouts and the connection bound.
    pub limits: Limits,
    /// Where the ids of requests that bring none come from.
    pub request_ids: RequestIds,
    /// What `/readyz` answers.
    pub readiness: Readiness,
}

/// Whether the server should be sent traffic: not until every tier has answered a probe, and
/// no longer once shutdown has begun (`/readyz`). `/healthz` says only that the process serves.
#[derive(Debug, Default)]
pub struct Readiness {
    tiers_answered: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Every tier answered its probe.
    pub fn set_tiers_answered(&self) {
        self.tiers_answered.store(true, Ordering::SeqCst);
    }

    /// Shutdown has begun: the server still serves, but wants no new traffic.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    fn check(&self, tiered: &Tiered) -> Result<(), &'static str> {
        if self.draining.load(Ordering::SeqCst) || tiered.is_shutting_down() {
            return Err("shutting down\n");
        }
        if !self.tiers_answered.load(Ordering::SeqCst) {
            return Err("not ready: waiting for every tier to answer\n");
        }
        Ok(())
    }
}

/// The request body as a write sees it: chunks, or an error when the client went away.
pub type RequestBody = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The parts of a request every handler looks at.
pub struct Request {
    /// The method.
    pub method: Method,
    /// The target as received (path still percent-encoded).
    pub uri: Uri,
    /// The header fields.
    pub headers: HeaderMap,
}

/// The routes, parsed once from the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    Stats,
    Namespaces,
    /// `/api/v1/object/{namespace}/{key}`, segments still percent-encoded.
    Object(&'a str, &'a str),
    /// `/api/v1/object/{namespace}/{key}/invalidate`.
    Invalidate(&'a str, &'a str),
    Unknown,
}

impl Route<'_> {
    fn parse(path: &str) -> Route<'_> {
        match path.trim_start_matches('/') {
            "healthz" => Route::Healthz,
            "readyz" => Route::Readyz,
            "metrics" => Route::Metrics,
            "api/v1/stats" => Route::Stats,
            "api/v1/namespaces" => Route::Namespaces,
            other => {
                let Some(object) = other.strip_prefix("api/v1/object/") else {
                    return Route::Unknown;
                };
                let mut segments = object.split('/');
                match (segments.next(), segments.next(), segments.next(), segments.next()) {
                    (Some(namespace), Some(key), None, _) => Route::Object(namespace, key),
                    (Some(namespace), Some(key), Some("invalidate"), None) => {
                        Route::Invalidate(namespace, key)
                    }
                    _ => Route::Unknown,
                }
            }
        }
    }

    /// The label of `rangecache_route_requests_total`.
    fn label(self) -> metrics::Route {
        match self {
            Route::Healthz => metrics::Route::Healthz,
            Route::Readyz => metrics::Route::Readyz,
            Route::Metrics => metrics::Route::Metrics,
            Route::Stats => metrics::Route::Stats,
            Route::Namespaces => metrics::Route::Namespaces,
            Route::Object(..) => metrics::Route::Object,
            Route::Invalidate(..) => metrics::Route::Invalidate,
            Route::Unknown => metrics::Route::Other,
        }
    }
}

/// Answers one request; never fails (every error is a response).
pub async fn handle(state: &AppState, req: hyper::Request<Incoming>) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request = Request { method: parts.method, uri: parts.uri, headers: parts.headers };
    let route = Route::parse(request.uri.path());
    let request_id = state.request_ids.for_request(&request.headers);
    let reply = match dispatch(state, &request, route, body).await {
        Ok(reply) => reply,
        Err(error) => error.into_response(),
    };
    reply.finish(&state.metrics, route.label(), &request, started, request_id)
}

async fn dispatch(
    state: &AppState,
    req: &Request,
    route: Route<'_>,
    body: Incoming,
) -> Result<render::Reply, ApiError> {
    match route {
        Route::Healthz => {
            only_reads(req)?;
            Ok(if state.tiered.is_shutting_down() {
                render::Reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                render::Reply::text(StatusCode::OK, "ok\n")
            })
        }
        Route::Readyz => {
            only_reads(req)?;
            Ok(match state.readiness.check(&state.tiered) {
                Ok(()) => render::Reply::text(StatusCode::OK, "ready\n"),
                Err(why) => render::Reply::text(StatusCode::SERVICE_UNAVAILABLE, why),
            })
        }
        Route::Metrics => {
            only_reads(req)?;
            Ok(render::Reply::metrics(state.metrics.encode()))
        }
        Route::Stats => {
            only_reads(req)?;
            auth::require_read(state.auth.as_ref(), &req.headers)?;
            let stats = state.tiered.stats().await;
            Ok(render::Reply::json(&stats))
        }
        Route::Namespaces => {
            only_reads(req)?;
            auth::require_read(state.auth.as_ref(), &req.headers)?;
            let names = state.tiered.namespaces().await?;
            Ok(render::Reply::json(&names))
        }
        Route::Object(namespace, key) => {
            Ok(object::answer(state, req, namespace, key, object::Route::Object, body).await)
        }
        Route::Invalidate(namespace, key) => {
            Ok(object::answer(state, req, namespace, key, object::Route::Invalidate, body).await)
        }
        Route::Unknown => Err(ApiError::NotFound),
    }
}

/// The request body as a stream of chunks; an error means the client went away, broke the
/// framing or sent nothing for `idle` (its bytes are then not waited for any longer).
fn body_stream(body: Incoming, idle: Duration) -> RequestBody {
    Box::pin(IdleLimited {
        inner: body.into_data_stream().map_err(std::io::Error::other),
        idle,
        deadline: Box::pin(tokio::time::sleep(idle)),
    })
}

/// A request body that fails once it has sent nothing for `idle`.
struct IdleLimited<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Stream for IdleLimited<S> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(item)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no byte of the body arrived for {:?}", this.idle),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Accepts GET and HEAD, the only methods of the read-only routes.
fn only_reads(req: &Request) -> Result<(), ApiError> {
    if req.method == Method::GET || req.method == Method::HEAD {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed("GET, HEAD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_routes() {
        for (path, route) in [
            ("/healthz", Route::Healthz),
            ("/readyz", Route::Readyz),
            ("/metrics", Route::Metrics),
            ("/api/v1/stats", Route::Stats),
            ("/api/v1/namespaces", Route::Namespaces),
            ("/api/v1/object/ns/key", Route::Object("ns", "key")),
            ("/api/v1/object/ns/key/invalidate", Route::Invalidate("ns", "key")),
            ("/api/v1/object/ns", Route::Unknown),
            ("/api/v1/object/ns/key/other", Route::Unknown),
            ("/api/v1/object/ns/key/invalidate/x", Route::Unknown),
            ("/healthz/", Route::Unknown),
            ("//healthz", Route::Healthz),
            ("/api/v1/object/ns/", Route::Object("ns", "")),
            ("/api/v1/objects", Route::Unknown),
            ("/", Route::Unknown),
        ] {
            assert_eq!(Route::parse(path), route, "{path}");
        }
    }
}
