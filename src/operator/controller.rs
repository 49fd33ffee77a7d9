//! The controllers: SyncPolicy (members → plan → node configs → status) and SyncPeer (a
//! finalizer that takes a deleted peer out of every node's config before the object goes).
//!
//! IO lives here: a pass observes (caches, node calls), hands the observations to the pure
//! functions of [`members`], [`topology`], [`lag`], [`status`] and [`events`], and writes what
//! they decide (node configs, statuses by server-side apply, events).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::config::SyncConfig;
use crate::operator::crd::{SyncPeer, SyncPolicy, SyncPolicySpec};
use crate::operator::event_queue::EventQueue;
use crate::operator::events::{self, Note};
use crate::operator::lag::{self, Lag, StallWatch};
use crate::operator::members::{self, Selection};
use crate::operator::metrics::OperatorMetrics;
use crate::operator::node_client::NodeClient;
use crate::operator::pod_dns::PodDns;
use crate::operator::status::{self, pacing, EdgeLag, MemberReport, Observation, Observed};
use crate::operator::topology::{self, Member, Plan};
use crate::wire::Backlog;

/// Field manager for server-side apply of status.
pub const FIELD_MANAGER: &str = "rag-sync-operator";
/// Finalizer on SyncPeers.
pub const FINALIZER: &str = "ragsync.io/cleanup";
/// Annotation whose change asks for an immediate sync round.
pub const SYNC_NOW: &str = "ragsync.io/sync-now";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Retry(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What the policy controller remembers between reconciles (rebuilt after a restart: only
/// used to decide when to emit events and when a member counts as stalled).
#[derive(Default)]
struct Memory {
    sync_now_seen: Option<String>,
    stall: BTreeMap<String, StallWatch>,
    errors: BTreeMap<String, String>,
    /// The plan warnings told last pass (see [`events::warnings`]).
    warnings: BTreeSet<String>,
    failures: u32,
    /// Each selected SyncPeer's member names at the last pass (status lists only the worst).
    peer_members: BTreeMap<String, BTreeSet<String>>,
    /// The last pass's edges, as [`events::topology_fingerprint`].
    topology: Option<u64>,
    /// Members with metric series, to remove those of members that left.
    metric_members: BTreeSet<String>,
    /// When each selected SyncPeer's status was last written (see [`pacing`]).
    status_written: BTreeMap<String, Instant>,
}

/// Longest a reconcile waits for the caches' first full list before it retries.
const CACHE_WAIT: Duration = Duration::from_secs(5);

/// Node calls one pass has in flight at most.
const NODE_CONCURRENCY: usize = 32;
/// SyncPeer status writes (and their events) in flight at once in one pass.
const STATUS_CONCURRENCY: usize = 8;

/// Shared state of the controllers.
pub struct Ctx {
    pub client: Client,
    pub events: EventQueue,
    pub nodes: NodeClient,
    pub metrics: Arc<OperatorMetrics>,
    policies: Store<SyncPolicy>,
    peers: Store<SyncPeer>,
    pods: Store<Pod>,
    memory: Mutex<HashMap<String, Memory>>,
    /// HTTPS clients of policies with `spec.tls`, by their CA and client certificate.
    tls_clients: Mutex<HashMap<u64, reqwest::Client>>,
    pod_dns: Arc<PodDns>,
}

fn now_ms() -> u64 {
    crate::hlc::WallClock::now_ms(&crate::hlc::SystemClock)
}

/// The policy's durations, parsed in this one place: `interval` (30 s when it does not parse;
/// `base_config` reports that) and `statusInterval` (15 s when it does not parse).
struct Intervals {
    sync: Duration,
    status: Duration,
}

fn intervals(spec: &SyncPolicySpec) -> Intervals {
    Intervals {
        sync: spec.interval(),
        status: spec.status_interval(),
    }
}

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default()
    )
}

fn hash_of(parts: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Passes an object on when `fingerprint` changes, and always on deletion: our own status
/// writes never wake the policy controller, so there is no self-triggered loop.
fn changed_or_deleted<K, S>(
    events: S,
    fingerprint: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |ev| {
        let out = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                let fp = fingerprint(&o);
                (seen.insert(key_of(&o), fp) != Some(fp)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key_of(&o));
                Some(Ok(o))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    })
}

fn policy_fingerprint(p: &SyncPolicy) -> u64 {
    hash_of((
        p.metadata.generation,
        p.annotations().get(SYNC_NOW),
        p.metadata.deletion_timestamp.is_some(),
    ))
}

fn peer_fingerprint(p: &SyncPeer) -> u64 {
    hash_of((
        p.metadata.generation,
        p.labels(),
        p.metadata.deletion_timestamp.is_some(),
    ))
}

fn pod_fingerprint(p: &Pod) -> u64 {
    hash_of((
        p.labels(),
        members::pod_ready(p),
        p.status.as_ref().and_then(|s| s.pod_ip.clone()),
    ))
}

impl Ctx {
    /// Never decide from half-filled caches (a new leader would see no members and write an
    /// empty status): waits until the first full list of policies, peers and pods is in.
    async fn caches_ready(&self) -> Result<(), Error> {
        // Bounded: a reconcile that started while the caches were filling was seen to wait
        // on a store's readiness forever (49 of 50 policies never got a status); retrying
        // after a backoff finds the store ready.
        let ready = async {
            let retry = |what: &str, e: reflector::store::WriterDropped| {
                Error::Retry(format!("{what} cache: {e}"))
            };
            self.policies
                .wait_until_ready()
                .await
                .map_err(|e| retry("SyncPolicy", e))?;
            self.peers
                .wait_until_ready()
                .await
                .map_err(|e| retry("SyncPeer", e))?;
            self.pods
                .wait_until_ready()
                .await
                .map_err(|e| retry("Pod", e))
        };
        tokio::time::timeout(CACHE_WAIT, ready)
            .await
            .map_err(|_| Error::Retry("caches not filled yet".into()))?
    }

    fn memory<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut mem = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(mem.entry(key.to_string()).or_default())
    }

    fn event(&self, obj: &impl Resource<DynamicType = ()>, note: Note) {
        self.events.send(obj.object_ref(&()), note);
    }

    /// The data of a Secret in the policy's namespace.
    async fn secret_data(&self, ns: &str, name: &str) -> Result<SecretData, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api
            .get(name)
            .await
            .map_err(|e| format!("reading Secret {ns}/{name}: {e}"))?;
        Ok(SecretData {
            what: format!("Secret {ns}/{name}"),
            data: secret.data.unwrap_or_default(),
        })
    }

    async fn token(&self, policy: &SyncPolicy) -> Result<Option<String>, String> {
        let Some(r) = &policy.spec.auth_secret_ref else {
            return Ok(None);
        };
        let ns = policy.namespace().unwrap_or_default();
        let value = self.secret_data(&ns, &r.name).await?.take(&r.key)?;
        let token = String::from_utf8(value)
            .map_err(|_| format!("Secret {ns}/{} key '{}' is not UTF-8", r.name, r.key))?;
        Ok(Some(token.trim().to_string()))
    }

    /// The HTTPS client of a policy with `spec.tls`, shared by the policies whose CA and
    /// client certificate are the same; `None` without `spec.tls`.
    async fn tls_http(&self, policy: &SyncPolicy) -> Result<Option<reqwest::Client>, String> {
        let Some(tls) = &policy.spec.tls else {
            return Ok(None);
        };
        let ns = policy.namespace().unwrap_or_default();
        let r = &tls.ca_secret_ref;
        let mut ca_secret = self.secret_data(&ns, &r.name).await?;
        let ca = ca_secret.take(&r.key)?;
        let identity = match &tls.client_cert_secret_ref {
            Some(c) => {
                // Often the same Secret as the CA's (the rag-node chart's): read once.
                let mut secret = if c.name == r.name {
                    ca_secret
                } else {
                    self.secret_data(&ns, &c.name).await?
                };
                let mut pem = secret.take("tls.crt")?;
                pem.push(b'\n');
                pem.extend(secret.take("tls.key")?);
                Some(pem)
            }
            None => None,
        };
        let key = hash_of((&ca, &identity));
        if let Some(c) = self.lock_tls_clients().get(&key) {
            return Ok(Some(c.clone()));
        }
        let client = NodeClient::tls_http(&ca, identity.as_deref(), self.pod_dns.clone())
            .map_err(|e| format!("spec.tls: {e}"))?;
        let mut clients = self.lock_tls_clients();
        // Rotated CAs leave old entries behind; a few policies' worth is plenty.
        if clients.len() >= 64 {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(Some(client))
    }

    fn lock_tls_clients(&self) -> std::sync::MutexGuard<'_, HashMap<u64, reqwest::Client>> {
        self.tls_clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Secret's data, named for errors.
struct SecretData {
    what: String,
    data: BTreeMap<String, k8s_openapi::ByteString>,
}

impl SecretData {
    fn take(&mut self, key: &str) -> Result<Vec<u8>, String> {
        self.data
            .remove(key)
            .map(|v| v.0)
            .ok_or_else(|| format!("{} has no key '{key}'", self.what))
    }
}

/// What one pass over a policy did.
pub struct Outcome {
    /// Every reachable managed member has its desired config.
    pub configs_applied: bool,
}

/// One pass over a policy: its context and the node client with its token.
struct Pass<'a> {
    ctx: &'a Ctx,
    policy: &'a SyncPolicy,
    key: String,
    nodes: NodeClient,
}

/// Resolves members, pushes configs, triggers syncs and writes status for one policy.
pub async fn sync_policy(ctx: &Ctx, policy: &SyncPolicy) -> Result<Outcome, Error> {
    let mut phases = Phases::start();
    ctx.caches_ready().await?;
    phases.mark("caches");
    let spec = &policy.spec;
    let mut problems: Vec<(String, String)> = Vec::new();
    let token = ctx.token(policy).await.unwrap_or_else(|e| {
        problems.push(("TokenUnavailable".into(), e));
        None
    });
    let mut nodes = ctx.nodes.with_token(token);
    match ctx.tls_http(policy).await {
        Ok(Some(http)) => nodes = nodes.with_http(http),
        Ok(None) => {}
        // The default client then refuses the nodes' certificates, so each member reports it.
        Err(e) => problems.push(("TlsUnavailable".into(), e)),
    }
    let pass = Pass {
        ctx,
        policy,
        key: key_of(policy),
        nodes,
    };
    let selection = members::select(policy, &ctx.policies.state(), &ctx.peers.state());
    let pods = ctx.pods.state();
    let membership = members::membership(&selection, &pods);
    for e in selection.invalid.iter().chain(&membership.invalid) {
        tracing::warn!(policy = %pass.key, "selector selects nothing: {e}");
    }
    let mut observed = pass.observe(membership.members).await;
    phases.mark("observe");
    let gc = status::gc_horizon(&observed);
    let base = spec.base_config(gc).unwrap_or_else(|e| {
        problems.push(("InvalidSpec".into(), e));
        SyncConfig::default()
    });
    let plan_members: Vec<Member> = observed.iter().map(|o| o.member.clone()).collect();
    let plan = topology::plan(&plan_members, &spec.topology, &spec.collections, &base);
    let warned = ctx.memory(&pass.key, |m| {
        events::warnings(&plan.warnings, &mut m.warnings)
    });
    for note in warned {
        ctx.event(policy, note);
    }

    let (configs_applied, peers_changed) = pass
        .push_configs(&plan, &base, &observed, &mut problems)
        .await;
    phases.mark("configs");
    // A node runs a round itself when its config changes, and a live one delivers from then
    // on; only batch-only nodes get the two rounds that spread what the first pulled.
    let mut to_sync = if base.live { Vec::new() } else { peers_changed };
    pass.clear_configs(&members::leaving(&selection, &pods))
        .await;
    if pass.sync_requested() && !spec.paused {
        to_sync = observed
            .iter()
            .filter(|o| o.member.managed && o.node.is_ok())
            .map(|o| o.member.endpoint.clone())
            .collect();
    }
    if !to_sync.is_empty() {
        pass.sync(&to_sync, &mut observed).await;
    }
    phases.mark("sync");

    let edges = pass.measure(&plan, &observed).await;
    phases.mark("lag");
    let stalled = pass.stalled(&edges, intervals(spec).sync);
    let lags = status::member_lags(&edges);
    pass.record_lag(&lags, &observed, &edges);
    let reports: Vec<MemberReport> = observed
        .iter()
        .map(|o| status::member(o, lags.get(&o.member.name).copied().unwrap_or(Lag::ZERO)))
        .chain(membership.absent.iter().map(status::absent))
        .collect();
    let edge_status: Vec<_> = edges.iter().map(status::edge_status).collect();
    let now = Time(Timestamp::now());
    let obs = Observation {
        policy,
        contested: &selection.contested,
        members: &reports,
        edges: &edge_status,
        plan: &plan,
        problems: &problems,
        stalled: &stalled,
        gc_horizon: gc,
        now: &now,
    };
    let status_writes = pass.write_statuses(&selection, &obs).await?;
    phases.mark("statuses");
    phases.log(&pass.key, observed.len(), status_writes);
    Ok(Outcome { configs_applied })
}

/// Where a pass spent its time: logged at info when the pass was slow, so a slow reconcile
/// says which phase (node calls, config PUTs, status writes) to look at.
struct Phases {
    started: Instant,
    last: Instant,
    spent: Vec<(&'static str, Duration)>,
}

impl Phases {
    const SLOW: Duration = Duration::from_secs(1);

    fn start() -> Self {
        let now = Instant::now();
        Phases {
            started: now,
            last: now,
            spent: Vec::new(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.spent.push((phase, now - self.last));
        self.last = now;
    }

    fn log(&self, policy: &str, members: usize, status_writes: usize) {
        let elapsed = self.started.elapsed();
        let total = format!("{:.3}s", elapsed.as_secs_f64());
        let phases = self
            .spent
            .iter()
            .map(|(p, d)| format!("{p}={:.3}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ");
        if elapsed >= Self::SLOW {
            tracing::info!(%policy, members, status_writes, %total, %phases, "slow reconcile");
        } else {
            tracing::debug!(%policy, members, status_writes, %total, %phases, "reconcile");
        }
    }
}

impl Pass<'_> {
    /// Asks every member for its status (and a managed one for its config).
    async fn observe(&self, members: Vec<Member>) -> Vec<Observed> {
        let observe = |mut member: Member| async move {
            let (node, config) = if member.managed {
                let status = self.nodes.status(&member.endpoint).await;
                // A node that reports its config's digest needs no second call.
                let config = match &status {
                    Ok(s) if s.config_digest.is_none() => {
                        self.nodes.config(&member.endpoint).await.ok()
                    }
                    _ => None,
                };
                (status, config)
            } else {
                let watermark = self.nodes.watermark(&member.endpoint).await;
                (watermark.map(status::external_node), None)
            };
            if let Ok(s) = &node {
                member.node_id = Some(s.node_id.to_hex());
            }
            Observed {
                member,
                node,
                config,
            }
        };
        let calls: Vec<_> = members.into_iter().map(observe).collect();
        futures::stream::iter(calls)
            .buffered(NODE_CONCURRENCY)
            .collect()
            .await
    }

    /// Pushes the configs that differ from the plan; returns whether every push worked and
    /// the members whose peers changed (they sync now).
    async fn push_configs(
        &self,
        plan: &Plan,
        base: &SyncConfig,
        observed: &[Observed],
        problems: &mut Vec<(String, String)>,
    ) -> (bool, Vec<String>) {
        let mut pushes = Vec::new();
        for o in observed
            .iter()
            .filter(|o| o.member.managed && o.node.is_ok())
        {
            let mut desired = plan
                .configs
                .get(&o.member.name)
                .cloned()
                .unwrap_or_else(|| base.clone());
            if self.policy.spec.paused {
                desired.peers.clear();
            }
            if !status::config_in_place(o, &desired) {
                pushes.push(self.push_config(o, desired));
            }
        }
        let results: Vec<_> = futures::stream::iter(pushes)
            .buffered(NODE_CONCURRENCY)
            .collect()
            .await;
        let mut applied = true;
        let mut peers_changed = Vec::new();
        for r in results {
            match r {
                Ok(Some(endpoint)) => peers_changed.push(endpoint),
                Ok(None) => {}
                Err(e) => {
                    applied = false;
                    problems.push(("ConfigPushFailed".into(), e));
                }
            }
        }
        (applied, peers_changed)
    }

    /// PUTs `desired` to the member; `Some(endpoint)` when that changed its peers.
    async fn push_config(
        &self,
        o: &Observed,
        desired: SyncConfig,
    ) -> Result<Option<String>, String> {
        self.ctx.metrics.config_pushes.inc();
        match self.nodes.put_config(&o.member.endpoint, &desired).await {
            Ok(_) => {
                tracing::info!(policy = %self.key, member = %o.member.name, peers = desired.peers.len(), "node config updated");
                Ok((!status::peers_in_place(o, &desired)).then(|| o.member.endpoint.clone()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Takes every peer out of the configs at `endpoints` (best effort).
    async fn clear_configs(&self, endpoints: &[String]) {
        for endpoint in endpoints {
            let Ok(cfg) = self.nodes.config(endpoint).await else {
                continue;
            };
            if !cfg.peers.is_empty() {
                self.ctx.metrics.config_pushes.inc();
                let cleared = SyncConfig {
                    peers: Vec::new(),
                    ..cfg
                };
                let _ = self.nodes.put_config(endpoint, &cleared).await;
            }
        }
    }

    /// A new value of the sync-now annotation (remembered, so each value asks once).
    fn sync_requested(&self) -> bool {
        let sync_now = self.policy.annotations().get(SYNC_NOW).cloned();
        self.ctx.memory(&self.key, |m| {
            let new = sync_now.is_some() && m.sync_now_seen != sync_now;
            m.sync_now_seen = sync_now;
            new
        })
    }

    /// Runs two sync rounds at `endpoints`, then observes the managed members again.
    async fn sync(&self, endpoints: &[String], observed: &mut [Observed]) {
        self.ctx
            .metrics
            .sync_triggers
            .inc_by(endpoints.len() as u64);
        let round = || {
            let calls: Vec<_> = endpoints.iter().map(|e| self.nodes.sync_now(e)).collect();
            futures::stream::iter(calls)
                .buffer_unordered(NODE_CONCURRENCY)
                .for_each(|_| std::future::ready(()))
        };
        round().await;
        // Second round, so that what one member pulled reaches those that pulled first.
        round().await;
        let managed: Vec<&mut Observed> =
            observed.iter_mut().filter(|o| o.member.managed).collect();
        let calls: Vec<_> = managed
            .iter()
            .map(|o| self.nodes.status(&o.member.endpoint))
            .collect();
        let answers: Vec<_> = futures::stream::iter(calls)
            .buffered(NODE_CONCURRENCY)
            .collect()
            .await;
        for (o, answer) in managed.into_iter().zip(answers) {
            o.node = answer;
        }
    }

    /// Lag per edge: the entries in the sender's log after the receiver's position, as the
    /// sender's status reports them; only for a sender that does not (an older node, or a
    /// puller it has not seen since it started) and whose status does not show the receiver
    /// at its head, one `/admin/backlog` call.
    async fn measure(&self, plan: &Plan, observed: &[Observed]) -> Vec<EdgeLag> {
        let by_name: BTreeMap<&str, &Observed> = observed
            .iter()
            .map(|o| (o.member.name.as_str(), o))
            .collect();
        let now = now_ms();
        // Collected first: a stream over a closure's futures trips the `Send` check of the
        // controller's future (a higher-ranked lifetime error).
        let calls: Vec<_> = plan
            .edges
            .iter()
            .filter_map(|edge| {
                let from = by_name.get(edge.from.as_str())?;
                let to = by_name.get(edge.to.as_str())?;
                Some(self.edge_lag(edge, from, to, now))
            })
            .collect();
        futures::stream::iter(calls)
            .buffered(NODE_CONCURRENCY)
            .collect()
            .await
    }

    async fn edge_lag(
        &self,
        edge: &topology::Edge,
        from: &Observed,
        to: &Observed,
        now: u64,
    ) -> EdgeLag {
        let status::EdgeCursor {
            checkpoint,
            incarnation,
            collections,
        } = status::edge_cursor(edge, from, to);
        // A backlog is aged on the sender's clock when it answered, as `kubectl ragsync` does:
        // aged at the end of the pass, a change in flight when the sender answered would count
        // the time the other 199 answers took as lag.
        let backlog = match &from.node {
            Ok(s) => {
                let to_node = to.node.as_ref().ok().map(|t| t.node_id);
                let answered = if s.wall_ms > 0 { s.wall_ms } else { now };
                match lag::served_backlog(s, edge.mode, &edge.to, to_node) {
                    Some(b) => Some((b, answered)),
                    None if lag::nothing_pending(s, checkpoint, incarnation.as_deref()) => {
                        Some((Backlog::default(), answered))
                    }
                    None => {
                        let since = checkpoint.map(|c| c.to_hex());
                        self.nodes
                            .backlog(&from.member.endpoint, since.as_deref(), &collections)
                            .await
                            .ok()
                            .map(|b| (b, now_ms()))
                    }
                }
            }
            Err(_) => None,
        };
        EdgeLag {
            edge: edge.clone(),
            lag: backlog.map_or(Lag::ZERO, |(b, at)| lag::edge_lag(&b, at)),
            checkpoint,
        }
    }

    /// Per-member lag gauges and the policy's worst-edge gauges; series of members that left
    /// are removed, so the series stay one per member.
    fn record_lag(&self, lags: &BTreeMap<String, Lag>, members: &[Observed], edges: &[EdgeLag]) {
        let m = &self.ctx.metrics;
        let names: BTreeSet<String> = members.iter().map(|o| o.member.name.clone()).collect();
        let member_labels =
            |name: &str| OperatorMetrics::labels(&[("policy", &self.key), ("member", name)]);
        for name in &names {
            let lag = lags.get(name).copied().unwrap_or(Lag::ZERO);
            let labels = member_labels(name);
            m.member_lag_seconds
                .get_or_create(&labels)
                .set(lag.seconds());
            m.member_pending.get_or_create(&labels).set(lag.pending());
        }
        let gone = self.ctx.memory(&self.key, |mem| {
            let gone: Vec<String> = mem.metric_members.difference(&names).cloned().collect();
            mem.metric_members = names.clone();
            gone
        });
        for name in gone {
            let labels = member_labels(&name);
            m.member_lag_seconds.remove(&labels);
            m.member_pending.remove(&labels);
        }
        let policy = OperatorMetrics::labels(&[("policy", &self.key)]);
        let worst = edges.iter().map(|e| e.lag.seconds()).max().unwrap_or(0);
        let lagging = edges.iter().filter(|e| e.lag.pending_changes > 0).count();
        m.policy_max_lag_seconds.get_or_create(&policy).set(worst);
        m.policy_lagging_edges
            .get_or_create(&policy)
            .set(i64::try_from(lagging).unwrap_or(i64::MAX));
    }

    /// The edges stalled now, as "from → to" (each edge's watch is remembered).
    fn stalled(&self, edges: &[EdgeLag], interval: Duration) -> Vec<String> {
        let now = now_ms();
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.ctx.memory(&self.key, |m| {
            edges
                .iter()
                .filter(|e| {
                    let watch: &mut StallWatch = m
                        .stall
                        .entry(format!("{}->{}", e.edge.from, e.edge.to))
                        .or_default();
                    watch.observe(now, e.lag.pending_changes, e.checkpoint, interval_ms)
                })
                .map(|e| format!("{} → {}", e.edge.from, e.edge.to))
                .collect()
        })
    }

    /// Writes the selected peers' statuses and the policy's, and emits their events; returns
    /// how many statuses it wrote.
    async fn write_statuses(
        &self,
        selection: &Selection,
        obs: &Observation<'_>,
    ) -> Result<usize, Error> {
        let ctx = self.ctx;
        let ns = self.policy.namespace().unwrap_or_default();
        // Several peers' status patches at once (a large policy's first pass has 20 to write),
        // beside the policy's; each object's events are queued once its status is written.
        let mut planned = Vec::new();
        for peer in &selection.peers {
            let st = status::peer::status(obs, peer);
            let change = if peer.metadata.deletion_timestamp.is_some() {
                pacing::Change::None
            } else {
                pacing::change(peer.status.as_ref(), &st)
            };
            let name = peer.name_any();
            let now: BTreeSet<String> = obs
                .members
                .iter()
                .filter(|r| r.peer == name)
                .map(|r| r.status.pod.clone())
                .collect();
            let before = ctx.memory(&self.key, |m| m.peer_members.insert(name, now.clone()));
            // After a start, the old status names every member unless it was capped (a new
            // peer has none yet).
            let before = before.or_else(|| match &peer.status {
                None => Some(BTreeSet::new()),
                Some(s) if s.omitted_members == 0 => {
                    Some(s.members.iter().map(|m| m.pod.clone()).collect())
                }
                Some(_) => None,
            });
            planned.push((peer, st, change, events::peer(before.as_ref(), &now)));
        }
        let names: BTreeSet<String> = selection.peers.iter().map(|p| p.name_any()).collect();
        let waiting: Vec<(String, Option<Instant>)> = ctx.memory(&self.key, |m| {
            m.status_written.retain(|name, _| names.contains(name));
            planned
                .iter()
                .filter(|p| p.2 == pacing::Change::Progress)
                .map(|p| {
                    let name = p.0.name_any();
                    let at = m.status_written.get(&name).copied();
                    (name, at)
                })
                .collect()
        });
        let due: BTreeSet<String> =
            pacing::pick(&waiting, pacing::progress_budget(selection.peers.len()))
                .into_iter()
                .collect();
        ctx.metrics
            .status_deferred
            .get_or_create(&OperatorMetrics::labels(&[("policy", &self.key)]))
            .set(i64::try_from(waiting.len() - due.len()).unwrap_or(i64::MAX));
        let mut writes = Vec::new();
        for (peer, st, change, notes) in planned {
            let name = peer.name_any();
            let write = match change {
                pacing::Change::None => false,
                pacing::Change::Progress => due.contains(&name),
                pacing::Change::Significant => true,
            };
            let patch = write.then(|| json!(st));
            let ns = &ns;
            writes.push(async move {
                let wrote = patch.is_some();
                if let Some(st) = patch {
                    patch_status::<SyncPeer>(ctx, ns, &name, st).await?;
                    ctx.memory(&self.key, |m| m.status_written.insert(name, Instant::now()));
                }
                for note in notes {
                    ctx.event(peer.as_ref(), note);
                }
                Ok::<usize, Error>(usize::from(wrote))
            });
        }
        let peer_writes = futures::stream::iter(writes)
            .buffer_unordered(STATUS_CONCURRENCY)
            .try_fold(0, |n, w| std::future::ready(Ok(n + w)));
        let fingerprint = events::topology_fingerprint(&obs.plan.edges);
        let before = ctx.memory(&self.key, |m| m.topology.replace(fingerprint));
        let members = obs.plan.connectivity.components.iter().map(Vec::len).sum();
        let topology = events::topology(before, fingerprint, obs.plan.edges.len(), members);

        let st = status::policy::status(obs);
        ctx.metrics
            .conflicts
            .get_or_create(&OperatorMetrics::labels(&[("policy", &self.key)]))
            .set(st.conflicts);
        let write_policy = Some(&st) != self.policy.status.as_ref();
        let policy_write = async {
            if write_policy {
                patch_status::<SyncPolicy>(ctx, &ns, &self.policy.name_any(), json!(st)).await?;
            }
            Ok::<usize, Error>(usize::from(write_policy))
        };
        let (peers_written, policy_written) = futures::try_join!(peer_writes, policy_write)?;
        let old = self.policy.status.clone().unwrap_or_default();
        let members = status::policy_members(obs.members);
        let notes = ctx.memory(&self.key, |m| {
            events::policy(&old, &st, &members, &mut m.errors, obs.stalled)
        });
        for note in topology.into_iter().chain(notes) {
            ctx.event(self.policy, note);
        }
        Ok(peers_written + policy_written)
    }
}

async fn patch_status<K>(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    status: serde_json::Value,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let started = Instant::now();
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    // With a slow pass's phases: whether its status writes were slow one by one (they queue
    // in the API server behind other writes of the same user).
    let took = started.elapsed();
    if took >= Phases::SLOW {
        tracing::debug!(kind = K::kind(&()).as_ref(), %name, took = %format!("{:.3}s", took.as_secs_f64()), "slow status write");
    }
    Ok(())
}

async fn reconcile_policy(policy: Arc<SyncPolicy>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics
        .reconciles
        .get_or_create(&OperatorMetrics::labels(&[("controller", "syncpolicy")]))
        .inc();
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let every = intervals(&policy.spec).status;
    sync_policy(&ctx, &policy).await?;
    ctx.memory(&key_of(policy.as_ref()), |m| m.failures = 0);
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&OperatorMetrics::labels(&[(
            "policy",
            &key_of(policy.as_ref()),
        )]))
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(every))
}

/// Exponential backoff per object (1 s doubling to 2 min), never a hot loop.
fn policy_error(policy: Arc<SyncPolicy>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&OperatorMetrics::labels(&[("controller", "syncpolicy")]))
        .inc();
    let failures = ctx.memory(&key_of(policy.as_ref()), |m| {
        m.failures = (m.failures + 1).min(8);
        m.failures
    });
    let delay = Duration::from_secs(1 << (failures - 1).min(7));
    tracing::warn!(policy = %key_of(policy.as_ref()), error = %err, ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_peer(peer: Arc<SyncPeer>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .get_or_create(&OperatorMetrics::labels(&[("controller", "syncpeer")]))
        .inc();
    let ns = peer.namespace().unwrap_or_default();
    let api: Api<SyncPeer> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, peer, |event| async {
        match event {
            FinalizerEvent::Apply(_) => Ok(Action::await_change()),
            FinalizerEvent::Cleanup(peer) => {
                // Take the peer out of every node's config before the object goes.
                for policy in members::policies_selecting(&peer, &ctx.policies.state()) {
                    let outcome = sync_policy(&ctx, &policy).await?;
                    if !outcome.configs_applied {
                        return Err(Error::Retry(format!(
                            "could not update every member of {} yet",
                            policy.name_any()
                        )));
                    }
                    let note = Note {
                        warning: false,
                        reason: "PeerRemoved",
                        message: format!(
                            "SyncPeer {} removed from every member's config",
                            peer.name_any()
                        ),
                    };
                    ctx.event(policy.as_ref(), note);
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

fn peer_error(_peer: Arc<SyncPeer>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&OperatorMetrics::labels(&[("controller", "syncpeer")]))
        .inc();
    tracing::warn!(error = %err, "SyncPeer reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// What the caches keep of an object: no `managedFields` (the operator never reads them,
/// and they are most of a small object's size; 1,000 SyncPeers and 200 Pods are held).
fn trim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Runs both controllers (in one namespace, or all) until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    identity: String,
    metrics: Arc<OperatorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let policies_api: Api<SyncPolicy> = api(&client, &namespace);
    let peers_api: Api<SyncPeer> = api(&client, &namespace);
    let pods_api: Api<Pod> = api(&client, &namespace);
    let (policies, policy_writer) = reflector::store();
    let (peers, peer_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let policy_stream = changed_or_deleted(
        watcher(policies_api, watcher::Config::default())
            .default_backoff()
            .modify(trim)
            .reflect(policy_writer),
        policy_fingerprint,
    );
    let peer_stream = changed_or_deleted(
        watcher(peers_api.clone(), watcher::Config::default())
            .default_backoff()
            .modify(trim)
            .reflect(peer_writer),
        peer_fingerprint,
    );
    let pod_stream = changed_or_deleted(
        watcher(pods_api, watcher::Config::default())
            .default_backoff()
            .modify(trim)
            .reflect(pod_writer),
        pod_fingerprint,
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rag-sync-operator".into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        events: EventQueue::start(recorder, metrics.events_dropped.clone()),
        nodes: NodeClient::new(None).counting(metrics.node_requests.clone()),
        metrics,
        policies: policies.clone(),
        peers: peers.clone(),
        pods: pods.clone(),
        memory: Mutex::new(HashMap::new()),
        tls_clients: Mutex::new(HashMap::new()),
        pod_dns: Arc::new(PodDns(pods.clone())),
    });
    let by_ns = |store: Store<SyncPolicy>| {
        move |ns: Option<String>| -> Vec<ObjectRef<SyncPolicy>> {
            store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect()
        }
    };
    let for_peer = by_ns(policies.clone());
    let for_pod = by_ns(policies.clone());
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let policy_ctl = Controller::for_stream(policy_stream, policies)
        .watches_stream(peer_stream, move |p: SyncPeer| for_peer(p.namespace()))
        .watches_stream(pod_stream, move |p: Pod| for_pod(p.namespace()))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_policy, policy_error, ctx.clone())
        .for_each(|_| std::future::ready(()));
    let peer_ctl = Controller::new(peers_api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile_peer, peer_error, ctx)
        .for_each(|_| std::future::ready(()));
    futures::join!(policy_ctl, peer_ctl);
}
