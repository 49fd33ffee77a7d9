//! The operator's HTTP client for RAG nodes: their admin API (status, config, sync now,
//! backlog) and, for external nodes, the sync watermark. Short timeouts: a slow node makes
//! its member not ready, never a stuck reconcile.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::SyncConfig;
use crate::wire::Backlog;
use crate::wire::NodeStatus;
use crate::wire::WatermarkResponse;

/// Talks to nodes with an optional bearer token.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    token: Option<String>,
}

impl NodeClient {
    pub fn new(token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .gzip(true)
            .build()
            .expect("a reqwest client with static settings builds");
        NodeClient { http, token }
    }

    /// Same connection pool, another token.
    pub fn with_token(&self, token: Option<String>) -> Self {
        NodeClient {
            http: self.http.clone(),
            token,
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: String,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T, String> {
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
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("{method} {url}: timed out")
            } else {
                format!("{method} {url}: unreachable ({e})")
            }
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(format!("{method} {url} answered {status}: {msg}"));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{method} {url}: unexpected answer: {e}"))
    }

    pub async fn status(&self, endpoint: &str) -> Result<NodeStatus, String> {
        self.call::<(), _>(Method::GET, format!("{endpoint}/admin/status"), None, None)
            .await
    }

    pub async fn config(&self, endpoint: &str) -> Result<SyncConfig, String> {
        self.call::<(), _>(Method::GET, format!("{endpoint}/admin/config"), None, None)
            .await
    }

    pub async fn put_config(&self, endpoint: &str, cfg: &SyncConfig) -> Result<SyncConfig, String> {
        self.call(
            Method::PUT,
            format!("{endpoint}/admin/config"),
            Some(cfg),
            None,
        )
        .await
    }

    /// Runs a sync round on the node and waits for it (bounded).
    pub async fn sync_now(&self, endpoint: &str) -> Result<serde_json::Value, String> {
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
    ) -> Result<Backlog, String> {
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

    pub async fn watermark(&self, endpoint: &str) -> Result<WatermarkResponse, String> {
        self.call::<(), _>(
            Method::GET,
            format!("{endpoint}/sync/watermark"),
            None,
            None,
        )
        .await
    }
}
