//! The operator's HTTP client for RAG nodes: their admin API (status, config, sync now,
//! backlog) and, for external nodes, the sync watermark. Short timeouts: a slow node makes
//! its member not ready, never a stuck reconcile.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::SyncConfig;
use crate::wire::Backlog;
use crate::wire::NodeStatus;
use crate::wire::WatermarkResponse;

/// A failed call to a node. An answer with an error status keeps the node's machine-readable
/// `error` code (see `crate::error::Error::code`) so callers classify failures by it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{method} {url}: timed out")]
    TimedOut { method: Method, url: String },
    #[error("{method} {url}: unreachable ({detail})")]
    Unreachable {
        method: Method,
        url: String,
        detail: String,
    },
    /// The answer's body could not be read.
    #[error("{method} {url}: {detail}")]
    Read {
        method: Method,
        url: String,
        detail: String,
    },
    /// The node answered with an error status.
    #[error("{method} {url} answered {status}: {message}")]
    Answered {
        method: Method,
        url: String,
        status: StatusCode,
        /// The `error` field of the node's JSON error, when the body is one.
        code: Option<String>,
        message: String,
    },
    /// A success whose body is not the expected JSON.
    #[error("{method} {url}: unexpected answer: {detail}")]
    Unexpected {
        method: Method,
        url: String,
        detail: String,
    },
}

impl NodeError {
    /// The node's error code, when it answered with a JSON error.
    pub fn code(&self) -> Option<&str> {
        match self {
            NodeError::Answered { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the node answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            NodeError::Answered { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when no answer came: the node is down, unroutable or too slow.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            NodeError::TimedOut { .. } | NodeError::Unreachable { .. }
        )
    }

    /// An error status answer with `body`: the node's JSON error, or the body as text.
    fn answered(method: Method, url: String, status: StatusCode, body: &[u8]) -> NodeError {
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v[name].as_str().map(str::to_string))
        };
        NodeError::Answered {
            code: field("error"),
            message: field("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
            method,
            url,
            status,
        }
    }
}

fn base_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .gzip(true)
}

/// Requests sent to nodes, by call (`GET /admin/status`, ...).
pub type CallCounter = Family<Vec<(String, String)>, Counter>;

/// Talks to nodes with an optional bearer token.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    token: Option<String>,
    calls: CallCounter,
}

impl NodeClient {
    pub fn new(token: Option<String>) -> Self {
        let http = base_builder()
            .build()
            .expect("a reqwest client with static settings builds");
        NodeClient {
            http,
            token,
            calls: CallCounter::default(),
        }
    }

    /// Counts every request in `calls` (the operator's `node_requests` metric).
    pub fn counting(self, calls: CallCounter) -> Self {
        NodeClient { calls, ..self }
    }

    /// An HTTPS client that trusts only `ca` (PEM), presents `identity` (PEM certificate and
    /// key) when a node asks for one, and finds hosts with `resolver` ahead of DNS.
    pub fn tls_http(
        ca: &[u8],
        identity: Option<&[u8]>,
        resolver: Arc<dyn reqwest::dns::Resolve>,
    ) -> Result<reqwest::Client, String> {
        let roots = reqwest::Certificate::from_pem_bundle(ca)
            .map_err(|e| format!("the CA is not PEM certificates: {e}"))?;
        if roots.is_empty() {
            return Err("the CA holds no certificate".into());
        }
        let mut b = base_builder().tls_certs_only(roots).dns_resolver(resolver);
        if let Some(id) = identity {
            b = b.identity(
                reqwest::Identity::from_pem(id)
                    .map_err(|e| format!("the client certificate or key is not PEM: {e}"))?,
            );
        }
        b.build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))
    }

    /// The same token and counters over another client (e.g. [`NodeClient::tls_http`]).
    pub fn with_http(&self, http: reqwest::Client) -> Self {
        NodeClient {
            http,
            token: self.token.clone(),
            calls: self.calls.clone(),
        }
    }

    /// Same connection pool, another token.
    pub fn with_token(&self, token: Option<String>) -> Self {
        NodeClient {
            http: self.http.clone(),
            token,
            calls: self.calls.clone(),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: String,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T, NodeError> {
        let path = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let path = path.find('/').map_or("/", |i| &path[i..]);
        let path = path.split('?').next().unwrap_or(path);
        self.calls
            .get_or_create(&vec![("call".to_string(), format!("{method} {path}"))])
            .inc();
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(NodeError::TimedOut { method, url }),
            Err(e) => {
                return Err(NodeError::Unreachable {
                    method,
                    url,
                    detail: crate::sync::client::describe(&e),
                })
            }
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(NodeError::Read {
                    method,
                    url,
                    detail: e.to_string(),
                })
            }
        };
        if !status.is_success() {
            return Err(NodeError::answered(method, url, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Unexpected {
            method,
            url,
            detail: e.to_string(),
        })
    }

    /// `GET {endpoint}{path_and_query}`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path_and_query: &str,
    ) -> Result<T, NodeError> {
        self.call::<(), _>(
            Method::GET,
            format!("{endpoint}{path_and_query}"),
            None,
            None,
        )
        .await
    }

    pub async fn status(&self, endpoint: &str) -> Result<NodeStatus, NodeError> {
        self.call::<(), _>(Method::GET, format!("{endpoint}/admin/status"), None, None)
            .await
    }

    pub async fn config(&self, endpoint: &str) -> Result<SyncConfig, NodeError> {
        self.call::<(), _>(Method::GET, format!("{endpoint}/admin/config"), None, None)
            .await
    }

    pub async fn put_config(
        &self,
        endpoint: &str,
        cfg: &SyncConfig,
    ) -> Result<SyncConfig, NodeError> {
        self.call(
            Method::PUT,
            format!("{endpoint}/admin/config"),
            Some(cfg),
            None,
        )
        .await
    }

    /// Runs a sync round on the node and waits for it (bounded).
    pub async fn sync_now(&self, endpoint: &str) -> Result<serde_json::Value, NodeError> {
        self.call::<(), _>(
            Method::POST,
            format!("{endpoint}/admin/sync"),
            None,
            Some(Duration::from_secs(60)),
        )
        .await
    }

    pub async fn backlog(
        &self,
        endpoint: &str,
        since: Option<&str>,
        collections: &[String],
    ) -> Result<Backlog, NodeError> {
        let mut url = format!(
            "{endpoint}/admin/backlog?since={}",
            since.unwrap_or("0000000000000000")
        );
        if !collections.is_empty() {
            url.push_str("&collections=");
            url.push_str(&collections.join(","));
        }
        self.call::<(), _>(Method::GET, url, None, None).await
    }

    pub async fn watermark(&self, endpoint: &str) -> Result<WatermarkResponse, NodeError> {
        self.call::<(), _>(
            Method::GET,
            format!("{endpoint}/sync/watermark"),
            None,
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &str) -> NodeError {
        NodeError::answered(
            Method::GET,
            "http://10.0.0.7:8090/admin/status".into(),
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        )
    }

    #[test]
    fn a_json_error_keeps_its_code_status_and_message() {
        let e = answered(
            401,
            r#"{"error":"unauthorized","message":"missing bearer token"}"#,
        );
        assert_eq!(e.code(), Some("unauthorized"));
        assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
        assert!(!e.is_unreachable());
        assert_eq!(
            e.to_string(),
            "GET http://10.0.0.7:8090/admin/status answered 401 Unauthorized: missing bearer token"
        );
    }

    #[test]
    fn a_body_that_is_not_a_json_error_is_the_message_and_has_no_code() {
        let e = answered(502, "<html>bad gateway</html>");
        assert_eq!(e.code(), None);
        assert_eq!(e.status(), Some(StatusCode::BAD_GATEWAY));
        assert!(e
            .to_string()
            .ends_with("answered 502 Bad Gateway: <html>bad gateway</html>"));
    }

    #[test]
    fn no_answer_is_unreachable_without_code_or_status() {
        let e = NodeError::TimedOut {
            method: Method::POST,
            url: "http://n/admin/sync".into(),
        };
        assert!(e.is_unreachable() && e.code().is_none() && e.status().is_none());
        assert_eq!(e.to_string(), "POST http://n/admin/sync: timed out");
    }
}
