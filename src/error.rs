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
    /// A valid credential without the power the request needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The node holds as many waiting requests as it allows.
    #[error("{0}")]
    TooManyWaiting(String),
    /// A peer answered with an error, or with something that is not the protocol.
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    /// A peer refused a request with one of this crate's errors; `code` is the peer's.
    #[error("peer {peer}: {message}")]
    PeerRefused {
        peer: String,
        message: String,
        code: &'static str,
    },
    /// A peer could not be reached, or its answer did not arrive in time.
    #[error("peer {peer}: {message}")]
    PeerUnreachable { peer: String, message: String },
    /// A pull applied what came before a change this node refused (clock drift, an
    /// embedding that does not fit), and stopped there; the code is the refusal's.
    #[error("peer {peer}: pull stopped at a refused change: {refusal}")]
    Stopped { peer: String, refusal: Box<Error> },
    #[error("storage error: {0}")]
    Storage(String),
    /// The store's disk is full: not a server fault, and it passes once space returns.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The node cannot serve now (a readiness probe's answer).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body of every error response: `{"error": <code>, "message": <what is wrong>}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorBody {
    /// A stable machine-readable code, one of [`Error::CODES`].
    pub error: &'static str,
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody {
            error: e.code(),
            message: e.to_string(),
        }
    }
}

impl utoipa::PartialSchema for ErrorBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "error": {"type": "string", "enum": Error::CODES},
                "message": {"type": "string"},
            },
            "required": ["error", "message"],
        });
        serde_json::from_value(schema).expect("a hand-written schema is a valid schema object")
    }
}
impl utoipa::ToSchema for ErrorBody {}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::ClockDrift(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::EmbeddingMismatch(_) => StatusCode::CONFLICT,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyWaiting(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Peer { .. } | Error::PeerRefused { .. } | Error::PeerUnreachable { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Error::Stopped { refusal, .. } => refusal.status(),
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
            Error::Forbidden(_) => "forbidden",
            Error::InsufficientStorage(_) => "insufficient_storage",
            Error::Unavailable(_) => "unavailable",
            Error::PayloadTooLarge(_) => "body_too_large",
            Error::TooManyWaiting(_) => "too_many_waiting",
            Error::Peer { .. } => "peer_error",
            Error::PeerRefused { code, .. } => code,
            Error::PeerUnreachable { .. } => "peer_unreachable",
            Error::Stopped { refusal, .. } => refusal.code(),
            Error::Storage(_) => "storage_error",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Every code [`Error::code`] gives, so that a peer's can be told apart from text.
    pub const CODES: &'static [&'static str] = &[
        "bad_request",
        "not_found",
        "conflict",
        "clock_drift",
        "embedding_mismatch",
        "unauthorized",
        "forbidden",
        "body_too_large",
        "too_many_waiting",
        "peer_error",
        "peer_unreachable",
        "storage_error",
        "insufficient_storage",
        "unavailable",
        "internal_error",
    ];

    /// The code among [`Error::CODES`] that `code` is.
    pub fn known_code(code: &str) -> Option<&'static str> {
        Self::CODES.iter().copied().find(|c| *c == code)
    }

    pub fn bad(msg: impl Into<String>) -> Error {
        Error::BadRequest(msg.into())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                Error::InsufficientStorage(format!("the disk is full ({e})"))
            }
            _ => Error::Storage(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(format!("corrupt stored JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed() {
        let peer = || "p".to_string();
        let all = [
            Error::bad("x"),
            Error::NotFound("x".into()),
            Error::Conflict("x".into()),
            Error::EmbeddingMismatch("x".into()),
            Error::Unauthorized("x".into()),
            Error::Forbidden("x".into()),
            Error::PayloadTooLarge("x".into()),
            Error::TooManyWaiting("x".into()),
            Error::Peer {
                peer: peer(),
                message: "x".into(),
            },
            Error::PeerUnreachable {
                peer: peer(),
                message: "x".into(),
            },
            Error::Storage("x".into()),
            Error::InsufficientStorage("x".into()),
            Error::Unavailable("x".into()),
            Error::Internal("x".into()),
        ];
        for e in &all {
            assert_eq!(Error::known_code(e.code()), Some(e.code()));
        }
        assert_eq!(Error::known_code("no_such_code"), None);
    }

    #[test]
    fn a_stopped_pull_has_its_refusals_code_and_status() {
        let e = Error::Stopped {
            peer: "p".into(),
            refusal: Box::new(Error::EmbeddingMismatch("dims".into())),
        };
        assert_eq!(e.code(), "embedding_mismatch");
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(
            e.to_string(),
            "peer p: pull stopped at a refused change: dims"
        );
    }
}
