//! `HttpSyncPeer`: the client side of the sync protocol over HTTP (reqwest), with timeouts,
//! bounded retries with backoff, compressed responses, and errors that name the peer.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::Change;
use crate::store::ChangeFilter;
use crate::sync::{
    ChangesResponse, CollectionsResponse, PushRequest, PushResponse, WatermarkResponse,
};

/// Client settings shared by all peers of a node.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts per request (1 = no retry). Only transport errors and 5xx are retried.
    pub attempts: u32,
    pub backoff: Duration,
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            attempts: 3,
            backoff: Duration::from_millis(200),
            token: None,
        }
    }
}

/// Builds the shared reqwest client.
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .gzip(true)
        .zstd(true)
        .build()
        .map_err(|e| Error::Internal(format!("cannot build HTTP client: {e}")))
}

/// One remote peer's sync server.
#[derive(Debug, Clone)]
pub struct HttpSyncPeer {
    peer_id: String,
    base: String,
    client: reqwest::Client,
    opts: ClientOptions,
}

impl HttpSyncPeer {
    pub fn new(
        peer_id: &str,
        endpoint: &str,
        client: reqwest::Client,
        opts: ClientOptions,
    ) -> Self {
        HttpSyncPeer {
            peer_id: peer_id.to_string(),
            base: endpoint.trim_end_matches('/').to_string(),
            client,
            opts,
        }
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Peer {
            peer: format!("{} ({})", self.peer_id, self.base),
            message: message.into(),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| Error::Internal(format!("encode request: {e}")))?,
            ),
            None => None,
        };
        self.call_raw(method, path_and_query, body, None).await
    }

    /// [`HttpSyncPeer::call`] with a JSON body that is encoded already.
    async fn call_raw<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        content_encoding: Option<&str>,
    ) -> Result<T> {
        let url = format!("{}{}", self.base, path_and_query);
        // Bytes: a retry resends the body without copying it.
        let body = body.map(axum::body::Bytes::from);
        let mut last = None;
        for attempt in 0..self.opts.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.opts.backoff * 2u32.pow(attempt - 1)).await;
            }
            let mut req = self.client.request(method.clone(), &url);
            if let Some(t) = &self.opts.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
                if let Some(e) = content_encoding {
                    req = req.header(reqwest::header::CONTENT_ENCODING, e);
                }
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(self.err(format!("{} {path_and_query}: {}", method, describe(&e))));
                    continue;
                }
            };
            let status = resp.status();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = Some(self.err(format!("reading response: {}", describe(&e))));
                    continue;
                }
            };
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    self.err(format!("unexpected response to {path_and_query}: {e}"))
                });
            }
            let detail = error_message(&bytes);
            let e = self.err(format!(
                "{method} {path_and_query} answered {status}: {detail}"
            ));
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                last = Some(e);
                continue;
            }
            // A 4xx will not change on retry.
            return Err(e);
        }
        Err(last.unwrap_or_else(|| self.err("no attempt was made")))
    }

    pub async fn watermark(&self) -> Result<WatermarkResponse> {
        self.call::<(), _>(Method::GET, "/sync/watermark", None)
            .await
    }

    pub async fn collections(&self) -> Result<CollectionsResponse> {
        self.call::<(), _>(Method::GET, "/sync/collections", None)
            .await
    }

    pub async fn changes(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
    ) -> Result<ChangesResponse> {
        let mut q = format!("/sync/changes?since={since}&limit={limit}");
        if !filter.collections.is_empty() {
            q.push_str("&collections=");
            q.push_str(&filter.collections.join(","));
        }
        if !filter.exclude_collections.is_empty() {
            q.push_str("&exclude_collections=");
            q.push_str(&filter.exclude_collections.join(","));
        }
        if let Some(o) = filter.exclude_origin {
            q.push_str("&exclude_origin=");
            q.push_str(&o.to_hex());
        }
        self.call::<(), _>(Method::GET, &q, None).await
    }

    /// Pushes a `POST /sync/changes` body encoded already, zstd-compressed if `zstd`.
    pub async fn push_json(&self, body: Vec<u8>, zstd: bool) -> Result<PushResponse> {
        let encoding = zstd.then_some("zstd");
        self.call_raw(Method::POST, "/sync/changes", Some(body), encoding)
            .await
    }

    pub async fn push(&self, changes: Vec<Change>, source_watermark: Hlc) -> Result<PushResponse> {
        let body = PushRequest {
            changes,
            source_watermark,
        };
        self.call(Method::POST, "/sync/changes", Some(&body)).await
    }
}

/// The `message` of a JSON error body, or the body itself.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned())
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
