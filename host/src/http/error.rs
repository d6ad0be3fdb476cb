//! Host errors and the one function that maps them to HTTP statuses.
//!
//! Client mistakes are 4xx with a one-line reason; tier failures are 502/503/507; nothing a
//! client sends can reach a 500.

use http::StatusCode;

use super::render::Reply;
use rangecache_core::write::Failure;

use crate::storage::TierError;
use crate::tiered;

/// Why a request was not served as asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route for this path.
    #[error("no such route")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// A missing or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// A malformed request: bad namespace, bad header value.
    #[error("{0}")]
    BadRequest(String),
    /// A write, delete or invalidation failed as the core's write machine decided: its
    /// status, `Cache-Status` and message.
    #[error("{message}")]
    Mutation {
        /// Why, which decides the status.
        failure: Failure,
        /// The answer's message.
        message: String,
        /// The answer's `Cache-Status`.
        cache_status: String,
    },
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A tier failed.
    #[error(transparent)]
    Tier(#[from] TierError),
}

impl From<tiered::Error> for ApiError {
    fn from(error: tiered::Error) -> ApiError {
        let message = error.to_string();
        match error {
            tiered::Error::ShuttingDown => ApiError::ShuttingDown,
            tiered::Error::Failed { failure, cache_status, .. } => {
                ApiError::Mutation { failure, message, cache_status }
            }
            tiered::Error::Tier(e) => ApiError::Tier(e),
        }
    }
}

impl ApiError {
    /// The status answering this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            // Decided by the core with the failure.
            ApiError::Mutation { failure, .. } => failure.status(),
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Tier(TierError::PreconditionFailed { .. }) => StatusCode::PRECONDITION_FAILED,
            ApiError::Tier(TierError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Tier(TierError::Busy { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Tier(TierError::SizeMismatch { .. }) => StatusCode::BAD_REQUEST,
            ApiError::Tier(TierError::Io { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Tier(TierError::Backend { .. }) => StatusCode::BAD_GATEWAY,
        }
    }

    /// True for 413: the object is larger than `max_object_size` or than a tier that must
    /// hold it can store. The rest of the body may still be on its way.
    pub fn is_too_large(&self) -> bool {
        self.status() == StatusCode::PAYLOAD_TOO_LARGE
    }

    /// The error as a plain-text reply.
    pub fn into_response(self) -> Reply {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut reply = Reply::text(status, format!("{self}\n"));
        // The rest of a refused body may still be on its way: end the connection.
        if self.is_too_large() {
            reply.header(http::header::CONNECTION, "close");
        }
        match self {
            ApiError::Unauthorized => reply.header(http::header::WWW_AUTHENTICATE, "Bearer"),
            ApiError::MethodNotAllowed(allow) => reply.header(http::header::ALLOW, allow),
            ApiError::Mutation { cache_status, .. } => reply.set_cache_status(cache_status),
            _ => {}
        }
        reply
    }
}
