//! HTTP plumbing shared by every router: JSON errors, extractors whose rejections become
//! those errors, and bearer-token authentication.

use std::sync::Arc;

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
        let body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        (status, axum::Json(body)).into_response()
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

/// Paths that never need a token (liveness and readiness probes).
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// The header that carries the token where `Authorization` cannot travel: the Kubernetes API
/// server's pod proxy (`.../pods/{pod}:{port}/proxy/...`) consumes the caller's own
/// `Authorization` header and does not forward it, so `kubectl ragsync` sends the node's token
/// here instead.
pub const TOKEN_HEADER: &str = "x-ragsync-token";

/// Requires the token on every route but the probes when one is configured, as
/// `Authorization: Bearer <token>` or as `X-RagSync-Token: <token>` ([`TOKEN_HEADER`]). A
/// request is let through when a token it presents matches; the comparison takes the same
/// time wherever the tokens differ.
pub async fn require_token(token: Option<Arc<str>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    match check_token(req.headers(), &token) {
        Ok(()) => next.run(req).await,
        Err(message) => Error::Unauthorized(message.into()).into_response(),
    }
}

/// Whether `headers` present `token` (see [`require_token`]), or why not.
fn check_token(headers: &header::HeaderMap, token: &str) -> Result<(), &'static str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let custom = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    // Both are compared whenever both are present, so the time does not tell which matched.
    let bearer_ok = bearer.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
    let custom_ok = custom.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
    match (bearer, custom) {
        _ if bearer_ok || custom_ok => Ok(()),
        (Some(_), _) => Err("the bearer token is not valid"),
        (None, Some(_)) => Err("the token in the X-RagSync-Token header is not valid"),
        (None, None) => Err(
            "this node requires 'Authorization: Bearer <token>' (or 'X-RagSync-Token: <token>')",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }

    /// A router with the token middleware in front of one route, as the node mounts it.
    fn app(token: &str) -> axum::Router {
        let token: Option<Arc<str>> = Some(token.into());
        axum::Router::new()
            .route("/admin/status", get(|| async { "status" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(move |req, next| {
                require_token(token.clone(), req, next)
            }))
    }

    /// Status and JSON body of a GET with `headers`.
    async fn get_with(path: &str, headers: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app("s3cret")
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    #[tokio::test]
    async fn the_token_is_accepted_as_bearer_or_in_x_ragsync_token() {
        for headers in [
            &[("authorization", "Bearer s3cret")][..],
            &[("x-ragsync-token", "s3cret")],
            &[("X-RagSync-Token", "s3cret")],
            // The proxy case: the caller's own credentials in Authorization, the node's here.
            &[
                ("authorization", "Bearer apiserver-user"),
                ("x-ragsync-token", "s3cret"),
            ],
            &[
                ("authorization", "Bearer s3cret"),
                ("x-ragsync-token", "wrong"),
            ],
        ] {
            let (status, body) = get_with("/admin/status", headers).await;
            assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
            assert_eq!(body, "status");
        }
    }

    #[tokio::test]
    async fn a_missing_or_wrong_token_is_refused_with_a_clear_message() {
        for (headers, message) in [
            (&[][..], "this node requires 'Authorization: Bearer <token>' (or 'X-RagSync-Token: <token>')"),
            (&[("authorization", "Bearer wrong")], "the bearer token is not valid"),
            (&[("authorization", "s3cret")], "this node requires 'Authorization: Bearer <token>' (or 'X-RagSync-Token: <token>')"),
            (&[("x-ragsync-token", "wrong")], "the token in the X-RagSync-Token header is not valid"),
            (&[("x-ragsync-token", "s3cret ")], "the token in the X-RagSync-Token header is not valid"),
            (&[("x-ragsync-token", "")], "the token in the X-RagSync-Token header is not valid"),
            (
                &[("authorization", "Bearer wrong"), ("x-ragsync-token", "wrong")],
                "the bearer token is not valid",
            ),
        ] {
            let (status, body) = get_with("/admin/status", headers).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert_eq!(body["error"], "unauthorized", "{headers:?}");
            assert_eq!(body["message"], message, "{headers:?}");
        }
        // The probes stay open.
        let (status, _) = get_with("/healthz", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
}
