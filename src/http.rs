//! HTTP plumbing shared by every router: JSON errors, extractors whose rejections become
//! those errors, and body limits.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (status, axum::Json(crate::error::ErrorBody::from(&self))).into_response()
    }
}

/// `axum::Json`, but a rejection is a JSON error saying what is wrong with the body.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> Error {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            Error::PayloadTooLarge("request body is larger than the server accepts".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Error::bad("request body must be JSON with 'Content-Type: application/json'")
        }
        _ => Error::bad(format!("invalid JSON body: {}", rej.body_text())),
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with JSON errors.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> Error {
    Error::bad(format!("invalid query string: {}", rej.body_text()))
}

/// `axum::extract::Path` with JSON errors.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rej) => Err(Error::bad(format!("invalid path: {}", rej.body_text()))),
        }
    }
}

/// Refuses a request whose `Content-Length` exceeds `limit` at once, before reading the body
/// (`DefaultBodyLimit` still bounds bodies without a length, e.g. chunked or compressed).
pub async fn limit_content_length(limit: usize, req: Request, next: Next) -> Response {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match len {
        Some(len) if len > limit as u64 => Error::PayloadTooLarge(format!(
            "request body of {len} bytes is larger than the {limit} bytes this endpoint accepts"
        ))
        .into_response(),
        _ => next.run(req).await,
    }
}

/// JSON 404 for unknown routes.
pub async fn not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("no route for {}", uri.path()))
}
