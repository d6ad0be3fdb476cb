//! The HTTP surface (SPEC §3): `/api/v1` over the tiers, `/metrics` and `/healthz`, on warp.
//!
//! One catch-all filter hands every request to [`dispatch`], which routes on the method and
//! the path segments, so that every client mistake gets its own clear 4xx instead of warp's
//! rejection cascade. Answers about objects render the core's `ResponsePlan`; nothing here
//! decides a status about an object.

mod auth;
mod error;
mod object;
mod render;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use warp::Filter;

use crate::config::Auth;
use crate::metrics::Metrics;
use crate::tiered::Tiered;

pub use error::ApiError;
pub use object::{EXPIRES_HEADER, now};
pub use render::Response;

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
}

/// The request body as the handlers see it: chunks, or an error when the client went away.
pub type RequestBody = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// The whole server as one warp filter.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream().map(boxed_body))
        .and_then(move |method: Method, path: warp::path::FullPath, headers: HeaderMap, body| {
            let state = state.clone();
            async move {
                let started = Instant::now();
                let request = Request { method, path: path.as_str().to_owned(), headers };
                let response = match dispatch(&state, &request, body).await {
                    Ok(response) => response,
                    Err(error) => error.into_response(),
                };
                Ok::<_, Infallible>(response.finish(&state.metrics, &request, started))
            }
        })
}

/// The parts of a request every handler looks at.
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path as received (still percent-encoded).
    pub path: String,
    /// The header fields.
    pub headers: HeaderMap,
}

async fn dispatch(
    state: &AppState,
    req: &Request,
    body: RequestBody,
) -> Result<render::Reply, ApiError> {
    let path = req.path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => {
            only_reads(req)?;
            Ok(if state.tiered.is_shutting_down() {
                render::Reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                render::Reply::text(StatusCode::OK, "ok\n")
            })
        }
        ["metrics"] => {
            only_reads(req)?;
            Ok(render::Reply::metrics(state.metrics.encode()))
        }
        ["api", "v1", "stats"] => {
            only_reads(req)?;
            auth::require_read(state.auth.as_ref(), &req.headers)?;
            let stats = state.tiered.stats().await;
            Ok(render::Reply::json(&stats))
        }
        ["api", "v1", "namespaces"] => {
            only_reads(req)?;
            auth::require_read(state.auth.as_ref(), &req.headers)?;
            let names = state.tiered.namespaces().await?;
            Ok(render::Reply::json(&names))
        }
        ["api", "v1", "object", namespace, key] => {
            Ok(object::answer(state, req, namespace, key, object::Route::Object, body).await)
        }
        ["api", "v1", "object", namespace, key, "invalidate"] => {
            Ok(object::answer(state, req, namespace, key, object::Route::Invalidate, body).await)
        }
        _ => Err(ApiError::NotFound),
    }
}

fn boxed_body<S, B>(body: S) -> RequestBody
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(body.map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining()))))
}

/// Accepts GET and HEAD, the only methods of the read-only routes.
fn only_reads(req: &Request) -> Result<(), ApiError> {
    if req.method == Method::GET || req.method == Method::HEAD {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed("GET, HEAD"))
}
