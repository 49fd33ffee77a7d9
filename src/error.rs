//! One error type for the library; each variant knows its HTTP status and wire code, so a
//! bad input always becomes a clear 4xx and only real faults become 5xx.

use http::StatusCode;

use crate::hlc::DriftError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    ClockDrift(#[from] DriftError),
    #[error("{0}")]
    EmbeddingMismatch(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A peer could not be reached or answered with an error.
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::ClockDrift(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::EmbeddingMismatch(_) => StatusCode::CONFLICT,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Peer { .. } => StatusCode::BAD_GATEWAY,
            Error::Storage(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code for the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::ClockDrift(_) => "clock_drift",
            Error::EmbeddingMismatch(_) => "embedding_mismatch",
            Error::Unauthorized(_) => "unauthorized",
            Error::PayloadTooLarge(_) => "body_too_large",
            Error::Peer { .. } => "peer_error",
            Error::Storage(_) => "storage_error",
            Error::Internal(_) => "internal_error",
        }
    }

    pub fn bad(msg: impl Into<String>) -> Error {
        Error::BadRequest(msg.into())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(format!("corrupt stored JSON: {e}"))
    }
}
