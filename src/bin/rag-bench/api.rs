//! The nodes' HTTP API as the bench drives it: requests, bulk and single-document writes,
//! sync rounds, and waits on `GET /admin/status`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use rag_sync::model::Document;

use crate::corpus::{Loader, COLLECTION};
use crate::nodes::Node;

/// `method url` with an optional JSON body; the answer's JSON, or an error with its status.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method.clone(), &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "{method} {url} answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

async fn push_raw(http: &reqwest::Client, node: &str, body: Vec<u8>) -> Result<()> {
    let resp = http
        .post(format!("{node}/sync/changes"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "bulk push answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
    }
    Ok(())
}

/// Pushes documents `ids` (at `revision`) into `node` in batches, two requests in flight
/// (one being built while the other is applied). Returns the elapsed time.
pub async fn bulk_write(
    http: &reqwest::Client,
    loader: &Loader,
    node: &str,
    ids: Vec<usize>,
    batch: usize,
    revision: u64,
) -> Result<Duration> {
    let started = Instant::now();
    futures::stream::iter(ids.chunks(batch.max(1)))
        .map(|chunk| {
            let body = loader.push_body(chunk.iter().copied(), revision);
            async move { push_raw(http, node, body?).await }
        })
        .buffer_unordered(2)
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed())
}

/// One sync round on `node` (`POST /admin/sync`): its duration and the answer; an error if
/// any peer's round failed.
pub async fn sync_now(http: &reqwest::Client, node: &Node) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let v = call(
        http,
        reqwest::Method::POST,
        format!("{}/admin/sync", node.url()),
        None,
    )
    .await?;
    let elapsed = started.elapsed();
    let peers = v["peers"]
        .as_array()
        .ok_or_else(|| anyhow!("bad /admin/sync answer: {v}"))?;
    for p in peers {
        if !p["error"].is_null() {
            bail!("sync round on {} failed: {}", node.name, p["error"]);
        }
    }
    Ok((elapsed, v))
}

/// Changes a `POST /admin/sync` answer says were pulled, over all peers.
pub fn pulled(v: &Value) -> u64 {
    v["peers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["pulled"].as_u64()).sum())
        .unwrap_or(0)
}

/// Polls `node`'s `GET /admin/status` until `done` holds for it; fails after `limit`.
async fn wait_status(
    http: &reqwest::Client,
    node: &Node,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let s = call(
            http,
            reqwest::Method::GET,
            format!("{}/admin/status", node.url()),
            None,
        )
        .await?;
        if done(&s) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{}: {what} did not happen within {limit:?}", node.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` holds no superseded versions (its writer compacts once idle).
pub async fn wait_compacted(http: &reqwest::Client, node: &Node) -> Result<()> {
    wait_status(http, node, "compaction", Duration::from_secs(120), |s| {
        s["superseded"].as_u64() == Some(0)
    })
    .await
}

/// Waits until `node`'s store has no background work left: every commit copied into the
/// database file and every replaced version deleted.
pub async fn wait_idle(http: &reqwest::Client, node: &Node) -> Result<()> {
    wait_status(
        http,
        node,
        "background work",
        Duration::from_secs(120),
        |s| s["superseded"].as_u64() == Some(0) && s["checkpoint_pending"] == false,
    )
    .await
}

/// Waits until `node` has finished a round with `peer` (the one its scheduler starts when
/// the config changes), so that the timed round is the only one that moves data.
pub async fn wait_round(http: &reqwest::Client, node: &Node, peer: &str) -> Result<()> {
    wait_status(http, node, "a first round", Duration::from_secs(60), |s| {
        s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["peer_id"] == peer && !p["last_attempt_ms"].is_null())
    })
    .await
}

/// Waits until `node` has finished a round with every peer it is configured with (the one
/// a config change starts).
pub async fn wait_rounds(http: &reqwest::Client, node: &Node) -> Result<()> {
    wait_status(
        http,
        node,
        "a first round with every peer",
        Duration::from_secs(60),
        |s| {
            s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|p| !p["last_attempt_ms"].is_null())
        },
    )
    .await
}

/// Has `node` pull from every other node of `peers`, with a one-day interval (rounds run
/// only when the bench asks) and pages of `batch`.
pub async fn configure(
    http: &reqwest::Client,
    node: &Node,
    peers: &[&Node],
    batch: usize,
) -> Result<()> {
    let sources: Vec<&Node> = peers
        .iter()
        .copied()
        .filter(|p| p.name != node.name)
        .collect();
    // Rounds only: the mesh figure times POST /admin/sync after the heal.
    configure_pulls(http, node, &sources, 86_400, batch, false).await
}

/// Replaces `node`'s peers with pulls from each of `sources` (`PUT /admin/config`), at
/// `interval_seconds` and pages of `batch`, with live delivery on or off.
pub async fn configure_pulls(
    http: &reqwest::Client,
    node: &Node,
    sources: &[&Node],
    interval_seconds: u64,
    batch: usize,
    live: bool,
) -> Result<()> {
    let peers: Vec<Value> = sources
        .iter()
        .map(|p| json!({"peer_id": p.name, "endpoint": p.url(), "direction": "pull"}))
        .collect();
    call(
        http,
        reqwest::Method::PUT,
        format!("{}/admin/config", node.url()),
        Some(json!({
            "peers": peers,
            "interval_seconds": interval_seconds,
            "batch_size": batch,
            "live": live,
        })),
    )
    .await?;
    Ok(())
}

/// One local write through the data API: `PUT {node}/collections/{collection}/documents/{id}`
/// with `doc`'s content and metadata.
pub async fn put_document(
    http: &reqwest::Client,
    node: &str,
    collection: &str,
    id: &str,
    doc: &Document,
) -> Result<()> {
    call(
        http,
        reqwest::Method::PUT,
        format!("{node}/collections/{collection}/documents/{id}"),
        Some(json!({"content": doc.content, "metadata": doc.metadata})),
    )
    .await
    .map(|_| ())
}

/// Local writes through the data API (`PUT /collections/docs/documents/{id}`), 32 in flight,
/// spread over `nodes`.
pub async fn put_documents(
    http: &reqwest::Client,
    loader: &Loader,
    nodes: &[&Node],
    ids: Vec<String>,
    revision: u64,
) -> Result<()> {
    futures::stream::iter(ids.into_iter().enumerate())
        .map(|(k, id)| {
            let node = nodes[k % nodes.len()].url();
            let mut doc = loader.document(k, revision);
            doc.id = id.clone();
            async move { put_document(http, &node, COLLECTION, &id, &doc).await }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
}
