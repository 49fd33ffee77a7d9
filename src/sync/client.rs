//! `HttpSyncPeer`: the client side of the sync protocol over HTTP (reqwest), with timeouts,
//! bounded retries with backoff, compressed responses, and errors that name the peer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::Token;
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::{Change, NodeId};
use crate::wire::{
    ChangeFilter, ChangesPage, ChangesQuery, CollectionsResponse, PushRequest, PushResponse,
    WatermarkResponse, HAS_MORE_HEADER, WATERMARK_HEADER,
};

/// Client settings shared by all peers of a node.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts per request (1 = no retry). Only transport errors and 5xx are retried.
    pub attempts: u32,
    pub backoff: Duration,
    /// The sync token presented to peers (re-read from its file when it changes).
    pub token: Option<Token>,
    /// How peers are verified and what this node presents ([`crate::tls`]); `None`:
    /// reqwest's defaults.
    pub tls: Option<rustls::ClientConfig>,
    /// Where hosts of peer endpoints are (`PeerConfig::address`), ahead of DNS.
    pub addresses: Addresses,
}

/// Host name → address overrides shared by every peer's requests: the operator names a pod by
/// its stable DNS name (what its certificate holds) and says which IP that is, so a node
/// needs no DNS lookup and connects to the pod the operator saw.
#[derive(Debug, Clone, Default)]
pub struct Addresses(Arc<RwLock<HashMap<String, IpAddr>>>);

impl Addresses {
    /// Replaces every override.
    pub fn set(&self, map: HashMap<String, IpAddr>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    fn get(&self, host: &str) -> Option<IpAddr> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .copied()
    }
}

impl reqwest::dns::Resolve for Addresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        resolve_or_lookup(self.get(name.as_str()), name)
    }
}

/// A resolver's answer: `known` when there is one, else the system's lookup of `name`.
pub fn resolve_or_lookup(
    known: Option<IpAddr>,
    name: reqwest::dns::Name,
) -> reqwest::dns::Resolving {
    let host = name.as_str().to_string();
    Box::pin(async move {
        // reqwest puts the URL's port on whatever address comes back.
        let addrs: reqwest::dns::Addrs = match known {
            Some(ip) => Box::new(std::iter::once(SocketAddr::new(ip, 0))),
            None => Box::new(
                tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
        };
        Ok(addrs)
    })
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            attempts: 3,
            backoff: Duration::from_millis(200),
            token: None,
            tls: None,
            addresses: Addresses::default(),
        }
    }
}

/// Builds the shared reqwest client.
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .gzip(true)
        .zstd(true)
        .dns_resolver(opts.addresses.clone());
    if let Some(tls) = &opts.tls {
        b = b.tls_backend_preconfigured(tls.clone());
    }
    b.build()
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

    fn peer(&self) -> String {
        format!("{} ({})", self.peer_id, self.base)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Peer {
            peer: self.peer(),
            message: message.into(),
        }
    }

    fn unreachable(&self, message: String) -> Error {
        Error::PeerUnreachable {
            peer: self.peer(),
            message,
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
        let (_, bytes) = self
            .fetch(method, path_and_query, body, content_encoding, None)
            .await?;
        self.decode(path_and_query, &bytes)
    }

    /// A successful response's JSON body as `T`.
    fn decode<T: DeserializeOwned>(&self, path_and_query: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| self.err(format!("unexpected response to {path_and_query}: {e}")))
    }

    /// Sends a request (with retries) and returns a successful response's headers and body,
    /// decompressed but not decoded.
    async fn fetch(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        content_encoding: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<(reqwest::header::HeaderMap, axum::body::Bytes)> {
        let url = format!("{}{}", self.base, path_and_query);
        // Bytes: a retry resends the body without copying it.
        let body = body.map(axum::body::Bytes::from);
        let mut last = None;
        for attempt in 0..self.opts.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.opts.backoff * 2u32.pow(attempt - 1)).await;
            }
            let mut req = self.client.request(method.clone(), &url);
            if let Some(w) = wait {
                req = req.timeout(self.opts.request_timeout + w);
            }
            if let Some(t) = &self.opts.token {
                req = req.bearer_auth(t.current());
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
                    last = Some(self.unreachable(format!(
                        "{} {path_and_query}: {}",
                        method,
                        describe(&e)
                    )));
                    continue;
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = Some(self.unreachable(format!("reading response: {}", describe(&e))));
                    continue;
                }
            };
            if status.is_success() {
                return Ok((headers, bytes));
            }
            let (code, detail) = error_body(&bytes);
            let message = format!("{method} {path_and_query} answered {status}: {detail}");
            let e = match code {
                Some(code) => Error::PeerRefused {
                    peer: self.peer(),
                    message,
                    code,
                },
                None => self.err(message),
            };
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
    ) -> Result<ChangesPage> {
        self.changes_raw(since, limit, filter).await?.decode()
    }

    /// A page of the peer's log as it arrived: [`RawPage::next`] says where the next one
    /// starts (when the peer sends that in headers), so it can be requested while this one
    /// is decoded.
    pub async fn changes_raw(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
    ) -> Result<RawPage> {
        let q = ChangesQuery {
            since,
            limit,
            filter: filter.clone(),
            wait: None,
            quiet: Vec::new(),
            incarnation: None,
        }
        .to_path_and_query();
        self.raw_page(q, None).await
    }

    /// Fetches a page; a waiting one may take `wait` longer than the request timeout.
    async fn raw_page(&self, q: String, wait: Option<Duration>) -> Result<RawPage> {
        let (headers, body) = self.fetch(Method::GET, &q, None, None, wait).await?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let next = match (header(WATERMARK_HEADER), header(HAS_MORE_HEADER)) {
            (None, None) => None,
            (Some(w), Some(m)) => Some((
                Hlc::from_hex(w).map_err(|e| self.err(format!("{WATERMARK_HEADER}: {e}")))?,
                m.parse::<bool>()
                    .map_err(|e| self.err(format!("{HAS_MORE_HEADER}: {e}")))?,
            )),
            _ => {
                return Err(self.err(format!(
                    "a page came with only one of {WATERMARK_HEADER} and {HAS_MORE_HEADER}"
                )))
            }
        };
        Ok(RawPage {
            peer: self.clone(),
            path_and_query: q,
            body,
            next,
        })
    }

    /// The page after `since` (as [`HttpSyncPeer::changes_raw`]), waiting up to `wait` on
    /// the peer for a change to be committed (an empty page when none came); changes last
    /// written by a node in `quiet` do not end the wait, and a store of another
    /// `incarnation` answers 409.
    pub async fn wait_changes(&self, q: WaitFor<'_>) -> Result<RawPage> {
        let wait = q.wait;
        let q = ChangesQuery {
            since: q.since,
            limit: q.limit,
            filter: q.filter.clone(),
            wait: Some(q.wait),
            quiet: q.quiet,
            incarnation: q.incarnation,
        }
        .to_path_and_query();
        self.raw_page(q, Some(wait)).await
    }
}

/// What a waiting pull asks for (see [`HttpSyncPeer::wait_changes`]).
pub struct WaitFor<'a> {
    pub since: Hlc,
    pub limit: usize,
    pub filter: &'a ChangeFilter,
    pub wait: Duration,
    pub quiet: Vec<NodeId>,
    pub incarnation: Option<String>,
}

impl HttpSyncPeer {
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

/// A page of a peer's log as it arrived, decompressed but not decoded.
#[derive(Debug)]
pub struct RawPage {
    peer: HttpSyncPeer,
    path_and_query: String,
    body: axum::body::Bytes,
    /// The page's `watermark` and `has_more` from its headers (`None` if the peer did not
    /// send them): where the next page starts.
    pub next: Option<(Hlc, bool)>,
}

impl RawPage {
    /// Decodes the page (CPU work: a few milliseconds for a thousand documents). A page
    /// whose body disagrees with its headers is refused: its successor was requested from
    /// the headers' watermark.
    pub fn decode(self) -> Result<ChangesPage> {
        let page: ChangesPage = self.peer.decode(&self.path_and_query, &self.body)?;
        if let Some((watermark, has_more)) = self.next {
            if (watermark, has_more) != (page.watermark, page.has_more) {
                return Err(self.peer.err(format!(
                    "page headers say watermark {watermark}, has_more {has_more}; its body says {}, {}",
                    page.watermark, page.has_more
                )));
            }
        }
        Ok(page)
    }
}

/// The code (if one of ours) and `message` of a JSON error body, or the body itself.
fn error_body(bytes: &[u8]) -> (Option<&'static str>, String) {
    let json = serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let field = |name: &str| json.as_ref()?.get(name)?.as_str().map(str::to_string);
    let code = field("error").and_then(|c| Error::known_code(&c));
    let message = field("message")
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned());
    (code, message)
}

/// A reqwest error with its causes (a refused certificate says why only in its sources).
pub fn describe(e: &reqwest::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn page(next: Option<(Hlc, bool)>) -> RawPage {
        let opts = ClientOptions::default();
        let peer = HttpSyncPeer::new(
            "p",
            "http://127.0.0.1:1",
            build_client(&opts).unwrap(),
            opts,
        );
        RawPage {
            peer,
            path_and_query: "/sync/changes".into(),
            body: axum::body::Bytes::from_static(
                br#"{"changes":[],"watermark":"00000000000000ff","has_more":true}"#,
            ),
            next,
        }
    }

    /// The next page was requested from the headers' watermark: a body that says otherwise
    /// must not be applied as if nothing had been skipped.
    #[test]
    fn a_page_whose_body_disagrees_with_its_headers_is_refused() {
        let wm = Hlc::from_i64(0xff);
        assert_eq!(page(Some((wm, true))).decode().unwrap().watermark, wm);
        assert_eq!(page(None).decode().unwrap().watermark, wm);
        for next in [(Hlc::from_i64(0xfe), true), (wm, false)] {
            let err = page(Some(next)).decode().unwrap_err().to_string();
            assert!(err.contains("page headers say"), "{err}");
        }
    }
}
