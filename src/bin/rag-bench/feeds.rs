//! Sees writes arrive without polling: on each watched node one waiting request
//! `GET /sync/changes?since=<cursor>&wait=25s&collections=lat` stays open, `since` moves to
//! each answer's watermark, and the time each document first appears in an answer is kept.
//! Shared by `rag-bench --latency` and the operator scale test (`tests/scale.rs` includes
//! this file), so it uses nothing of the bench but external crates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rag_sync::hlc::Hlc;
use rag_sync::model::ChangeBody;
use rag_sync::wire::{ChangesPage, MAX_PAGE};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The collection the watched writes go to.
pub const COLLECTION: &str = "lat";
/// What the waiting requests ask for.
const WAIT: &str = "25s";
/// How long writes may take to reach every watched node before a wait fails.
pub const DELIVERY_LIMIT: Duration = Duration::from_secs(60);

/// What the feeds have shown so far.
pub struct Seen {
    /// Per watched node, when each document id first appeared in its feed.
    pub docs: Vec<HashMap<String, Instant>>,
    /// Per watched node, whether its feed has shown the collection.
    pub collection: Vec<bool>,
    /// The first feed that failed, and how.
    pub error: Option<String>,
}

/// The bench's waiting requests, one per watched node, and what they have seen.
pub struct Feeds {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Feeds {
    /// Follows the feed of the node at each of `urls` from the start of its log, with
    /// `token` as the bearer token when the nodes require one.
    pub fn start(http: &reqwest::Client, urls: &[String], token: Option<&str>) -> Feeds {
        let seen = Arc::new(Mutex::new(Seen {
            docs: vec![HashMap::new(); urls.len()],
            collection: vec![false; urls.len()],
            error: None,
        }));
        let changed = Arc::new(Notify::new());
        let tasks = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let (http, url) = (http.clone(), url.clone());
                let token = token.map(str::to_string);
                let (seen, changed) = (seen.clone(), changed.clone());
                tokio::spawn(async move {
                    if let Err(e) = follow(&http, &url, token.as_deref(), i, &seen, &changed).await
                    {
                        let mut s = seen.lock().unwrap();
                        s.error
                            .get_or_insert_with(|| format!("{url}'s change feed: {e:#}"));
                        drop(s);
                        changed.notify_waiters();
                    }
                })
            })
            .collect();
        Feeds {
            seen,
            changed,
            tasks,
        }
    }

    /// Waits (woken by the feeds, not polling) until `done` holds for what they have seen;
    /// fails if a feed failed or `limit` passed first.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a page that lands in between still wakes us.
            notified.as_mut().enable();
            {
                let seen = self.seen.lock().unwrap();
                if let Some(e) = &seen.error {
                    bail!("{e}");
                }
                if done(&seen) {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen = self.seen.lock().unwrap();
                let counts: Vec<usize> = seen.docs.iter().map(HashMap::len).collect();
                bail!(
                    "{what} did not happen within {limit:?} (documents seen per watched node: {counts:?}); \
                     do the nodes deliver live?"
                );
            }
        }
    }

    /// Waits until every feed has shown the collection: each node has it, and each feed
    /// has had its first answer (so it is waiting from then on).
    pub async fn wait_collection(&self) -> Result<()> {
        self.wait_until("the collection reaching every node", DELIVERY_LIMIT, |s| {
            s.collection.iter().all(|c| *c)
        })
        .await
    }

    /// Waits until every feed has shown `count` distinct documents.
    pub async fn wait_docs(&self, count: usize) -> Result<()> {
        self.wait_until(
            &format!("delivery of {count} writes to every node"),
            DELIVERY_LIMIT,
            |s| s.docs.iter().all(|d| d.len() >= count),
        )
        .await
    }

    /// Per watched node, when each document first appeared.
    pub fn arrivals(&self) -> Vec<HashMap<String, Instant>> {
        self.seen.lock().unwrap().docs.clone()
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Follows one node's feed of collection `lat` with waiting requests, recording what each
/// answer shows as of the moment it was read.
async fn follow(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    node: usize,
    seen: &Mutex<Seen>,
    changed: &Notify,
) -> Result<()> {
    let mut since = Hlc::ZERO;
    loop {
        let mut req = http.get(format!(
            "{url}/sync/changes?since={since}&limit={MAX_PAGE}&wait={WAIT}&collections={COLLECTION}"
        ));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let at = Instant::now();
        if !status.is_success() {
            bail!(
                "answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
        }
        let page: ChangesPage = serde_json::from_slice(&bytes)?;
        {
            let mut s = seen.lock().unwrap();
            for c in page.changes {
                match c.body {
                    ChangeBody::DocumentInsert { document, .. }
                    | ChangeBody::DocumentUpdate { document, .. } => {
                        s.docs[node].entry(document.id).or_insert(at);
                    }
                    ChangeBody::CollectionCreate { .. } => s.collection[node] = true,
                    _ => {}
                }
            }
        }
        changed.notify_waiters();
        since = page.watermark;
    }
}
