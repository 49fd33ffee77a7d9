//! Who may call what: the sync token opens `/sync/*`, the admin token `/admin/*`, either one
//! the data API and `/metrics`; the probes are open. With mutual TLS a client certificate is
//! needed too (the TLS layer has verified it; see [`ClientCertificate`]).
//!
//! Tokens come from files (re-read on change, so a rotated Secret takes effect without a
//! restart) or fixed values. A token file holds one token per line: every line is accepted
//! and the first is the one this node sends its peers, so a token is rotated without a
//! moment where some nodes refuse the others (add the new one second, roll, then swap).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::reload::Reloading;

/// Paths that never need a token or a client certificate: the liveness and readiness probes,
/// which the kubelet calls with neither, and the API's OpenAPI document, which holds nothing
/// secret.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// The header that carries the token where `Authorization` cannot travel: the Kubernetes API
/// server's pod proxy (`.../pods/{pod}:{port}/proxy/...`) consumes the caller's own
/// `Authorization` header and does not forward it, so `kubectl ragsync` sends the node's token
/// here instead.
pub const TOKEN_HEADER: &str = "x-ragsync-token";

/// Marks a request that came over a connection whose client presented a certificate the
/// server verified against its client CA.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate;

/// The tokens of one kind (sync or admin).
#[derive(Clone)]
pub struct Token(Arc<Source>);

enum Source {
    Fixed(Vec<String>),
    File(Reloading<Vec<String>>),
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::Fixed(_) => f.write_str("Token(fixed, redacted)"),
            Source::File(r) => write!(f, "Token({r:?})"),
        }
    }
}

fn parse_tokens(text: &str) -> Result<Vec<String>, String> {
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(tokens)
}

fn token_file(what: &str, path: PathBuf) -> Result<Reloading<Vec<String>>, String> {
    Reloading::new(what, vec![path], |p| {
        parse_tokens(&crate::reload::read_to_string(&p[0])?)
            .map_err(|e| format!("{}: {e}", p[0].display()))
    })
}

impl Token {
    /// One fixed token (e.g. from an environment variable).
    pub fn fixed(token: &str) -> Result<Token, String> {
        Ok(Token(Arc::new(Source::Fixed(parse_tokens(token)?))))
    }

    /// The tokens in `path`, one per line, re-read when the file changes.
    pub fn from_file(what: &str, path: PathBuf) -> Result<Token, String> {
        Ok(Token(Arc::new(Source::File(token_file(what, path)?))))
    }

    fn with<R>(&self, f: impl FnOnce(&[String]) -> R) -> R {
        match &*self.0 {
            Source::Fixed(t) => f(t),
            Source::File(r) => f(&r.get()),
        }
    }

    /// The token this node presents (the first line of the file).
    pub fn current(&self) -> String {
        self.with(|t| t[0].clone())
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in time that
    /// does not depend on where it differs.
    pub fn accepts(&self, presented: &str) -> bool {
        self.with(|tokens| {
            tokens.iter().fold(false, |ok, t| {
                ok | constant_time_eq(t.as_bytes(), presented.as_bytes())
            })
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the node requires of its callers.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Opens `/sync/*`, the data API and `/metrics`.
    pub sync: Option<Token>,
    /// Opens everything. Without it, the sync token opens `/admin/*` too (one token, as
    /// before there were two).
    pub admin: Option<Token>,
    /// Mutual TLS: every request but the probes needs a verified client certificate.
    pub client_certificates: bool,
}

/// Which token a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Open,
    Sync,
    Admin,
    Data,
}

fn class(path: &str) -> Class {
    if OPEN_PATHS.contains(&path) {
        Class::Open
    } else if path == "/admin" || path.starts_with("/admin/") {
        Class::Admin
    } else if path.starts_with("/sync/") {
        Class::Sync
    } else {
        Class::Data
    }
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Unauthorized(&'static str),
    Forbidden(&'static str),
}

impl Access {
    /// Whether any check applies (else the middleware is a no-op).
    pub fn is_open(&self) -> bool {
        self.sync.is_none() && self.admin.is_none() && !self.client_certificates
    }

    fn check(&self, path: &str, headers: &header::HeaderMap, cert: bool) -> Result<(), Refusal> {
        let class = class(path);
        if class == Class::Open {
            return Ok(());
        }
        if self.client_certificates && !cert {
            return Err(Refusal::Unauthorized(
                "this node requires a client certificate (mutual TLS) from the CA it trusts",
            ));
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let custom = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        // Every presented value against every configured token, so the time tells nothing.
        let matches = |t: &Option<Token>| {
            t.as_ref().is_some_and(|t| {
                bearer.is_some_and(|p| t.accepts(p)) | custom.is_some_and(|p| t.accepts(p))
            })
        };
        let (sync_ok, admin_ok) = (matches(&self.sync), matches(&self.admin));
        let needed = match class {
            Class::Admin if self.admin.is_some() => {
                if admin_ok {
                    return Ok(());
                }
                if sync_ok {
                    return Err(Refusal::Forbidden(
                        "the sync token does not open /admin/*: it needs the admin token",
                    ));
                }
                true
            }
            // /sync/* serves every document, so any configured token guards it.
            Class::Admin | Class::Data | Class::Sync => self.sync.is_some() || self.admin.is_some(),
            Class::Open => false,
        };
        if !needed || sync_ok || admin_ok {
            return Ok(());
        }
        Err(Refusal::Unauthorized(match (bearer, custom) {
            (Some(_), _) => "the bearer token is not valid",
            (None, Some(_)) => "the token in the X-RagSync-Token header is not valid",
            (None, None) => {
                "this node requires 'Authorization: Bearer <token>' (or 'X-RagSync-Token: <token>')"
            }
        }))
    }
}

/// The middleware: lets a request through when [`Access`] allows it, else a 401 (no or a
/// wrong credential) or 403 (a valid token without the power the path needs) saying why.
pub async fn authorize(access: Arc<Access>, req: Request, next: Next) -> Response {
    if access.is_open() {
        return next.run(req).await;
    }
    let cert = req.extensions().get::<ClientCertificate>().is_some();
    match access.check(req.uri().path(), req.headers(), cert) {
        Ok(()) => next.run(req).await,
        Err(Refusal::Unauthorized(m)) => Error::Unauthorized(m.into()).into_response(),
        Err(Refusal::Forbidden(m)) => Error::Forbidden(m.into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    /// A router with the middleware in front of a route of each class, as the node mounts it.
    fn app(access: Access) -> axum::Router {
        let access = Arc::new(access);
        axum::Router::new()
            .route("/admin/status", get(|| async { "admin" }))
            .route("/sync/watermark", get(|| async { "sync" }))
            .route("/collections", get(|| async { "data" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(move |req, next| {
                authorize(access.clone(), req, next)
            }))
    }

    fn one_token() -> Access {
        Access {
            sync: Some(Token::fixed("s3cret").unwrap()),
            ..Access::default()
        }
    }

    fn two_tokens() -> Access {
        Access {
            sync: Some(Token::fixed("sync-t").unwrap()),
            admin: Some(Token::fixed("admin-t").unwrap()),
            client_certificates: false,
        }
    }

    /// Status and JSON body of a GET with `headers`.
    async fn get_with(
        access: Access,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app(access)
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
            let (status, body) = get_with(one_token(), "/admin/status", headers).await;
            assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
            assert_eq!(body, "admin");
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
            let (status, body) = get_with(one_token(), "/admin/status", headers).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert_eq!(body["error"], "unauthorized", "{headers:?}");
            assert_eq!(body["message"], message, "{headers:?}");
        }
        // The probes stay open.
        let (status, _) = get_with(one_token(), "/healthz", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn with_two_tokens_the_sync_token_opens_sync_and_data_but_not_admin() {
        let sync = [("authorization", "Bearer sync-t")];
        let admin = [("authorization", "Bearer admin-t")];
        for (path, headers, want) in [
            ("/sync/watermark", &sync, StatusCode::OK),
            ("/collections", &sync, StatusCode::OK),
            ("/admin/status", &sync, StatusCode::FORBIDDEN),
            ("/admin/status", &admin, StatusCode::OK),
            ("/sync/watermark", &admin, StatusCode::OK),
            ("/collections", &admin, StatusCode::OK),
        ] {
            let (status, body) = get_with(two_tokens(), path, headers).await;
            assert_eq!(status, want, "{path} {headers:?}: {body}");
            if want == StatusCode::FORBIDDEN {
                assert_eq!(body["error"], "forbidden");
                assert_eq!(
                    body["message"],
                    "the sync token does not open /admin/*: it needs the admin token"
                );
            }
        }
        let (status, _) = get_with(two_tokens(), "/admin/status", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn an_admin_token_alone_locks_sync_admin_and_data() {
        let access = || Access {
            admin: Some(Token::fixed("admin-t").unwrap()),
            ..Access::default()
        };
        assert_eq!(
            get_with(access(), "/sync/watermark", &[]).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get_with(
                access(),
                "/sync/watermark",
                &[("authorization", "Bearer admin-t")]
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(
            get_with(access(), "/admin/status", &[]).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get_with(access(), "/collections", &[]).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn mutual_tls_needs_a_client_certificate_everywhere_but_the_probes() {
        let access = || Access {
            client_certificates: true,
            ..Access::default()
        };
        let (status, body) = get_with(access(), "/sync/watermark", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body["message"],
            "this node requires a client certificate (mutual TLS) from the CA it trusts"
        );
        assert_eq!(get_with(access(), "/healthz", &[]).await.0, StatusCode::OK);
    }

    #[test]
    fn a_token_file_holds_one_token_per_line_and_is_reread_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "old\n").unwrap();
        // Checked on every use, not once a second.
        let t = Token(Arc::new(Source::File(
            token_file("sync token", f.clone()).unwrap().check_always(),
        )));
        assert!(t.accepts("old") && !t.accepts("new"));
        std::fs::write(&f, "new\nold\n").unwrap();
        assert_eq!(t.current(), "new");
        assert!(t.accepts("old") && t.accepts("new"));
        std::fs::write(&f, "new\n").unwrap();
        assert!(!t.accepts("old") && t.accepts("new"));
        // An emptied file keeps the last tokens (a rotation caught half-way).
        std::fs::write(&f, "\n").unwrap();
        assert!(t.accepts("new"));
        assert!(Token::fixed(" \n").is_err());
    }
}
