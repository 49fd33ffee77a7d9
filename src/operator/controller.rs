//! The controllers: SyncPolicy (members → plan → node configs → status) and SyncPeer (a
//! finalizer that takes a deleted peer out of every node's config before the object goes).
//!
//! IO lives here; the decisions are the pure functions of [`topology`], [`lag`],
//! [`conditions`] and [`selector`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::config::SyncConfig;
use crate::hlc::Hlc;
use crate::operator::conditions::{self, reason, Status};
use crate::operator::crd::{
    EdgeStatus, MemberStatus, SyncPeer, SyncPeerStatus, SyncPolicy, SyncPolicyStatus,
};
use crate::operator::lag::{self, Backlog, GcReport, Lag, StallWatch};
use crate::operator::metrics::OperatorMetrics;
use crate::operator::node_client::NodeClient;
use crate::operator::selector;
use crate::operator::topology::{self, Member, Mode, Plan};
use crate::wire::NodeStatus;

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
    failures: u32,
}

/// Shared state of the controllers.
pub struct Ctx {
    pub client: Client,
    pub recorder: Recorder,
    pub nodes: NodeClient,
    pub metrics: Arc<OperatorMetrics>,
    policies: Store<SyncPolicy>,
    peers: Store<SyncPeer>,
    pods: Store<Pod>,
    memory: Mutex<HashMap<String, Memory>>,
}

fn now_ms() -> u64 {
    crate::hlc::WallClock::now_ms(&crate::hlc::SystemClock)
}

fn time_from_ms(ms: u64) -> Option<Time> {
    Timestamp::from_millisecond(ms as i64)
        .ok()
        .map(|t| conditions::whole_seconds(&Time(t)))
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

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn pod_fingerprint(p: &Pod) -> u64 {
    hash_of((
        p.labels(),
        pod_ready(p),
        p.status.as_ref().and_then(|s| s.pod_ip.clone()),
    ))
}

impl Ctx {
    fn policies_in(&self, ns: &str) -> Vec<Arc<SyncPolicy>> {
        let mut v: Vec<_> = self
            .policies
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns))
            .collect();
        v.sort_by_key(|p| p.name_any());
        v
    }

    fn policies_selecting(&self, peer: &SyncPeer) -> Vec<Arc<SyncPolicy>> {
        let ns = peer.namespace().unwrap_or_default();
        self.policies_in(&ns)
            .into_iter()
            .filter(|p| selector::matches(&p.spec.peer_selector, Some(peer.labels())))
            .collect()
    }

    async fn event(
        &self,
        obj: &impl Resource<DynamicType = ()>,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    async fn token(&self, policy: &SyncPolicy) -> Result<Option<String>, String> {
        let Some(r) = &policy.spec.auth_secret_ref else {
            return Ok(None);
        };
        let ns = policy.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = api
            .get(&r.name)
            .await
            .map_err(|e| format!("reading Secret {ns}/{}: {e}", r.name))?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .ok_or_else(|| format!("Secret {ns}/{} has no key '{}'", r.name, r.key))?;
        let token = String::from_utf8(value.0.clone())
            .map_err(|_| format!("Secret {ns}/{} key '{}' is not UTF-8", r.name, r.key))?;
        Ok(Some(token.trim().to_string()))
    }
}

/// One member with what the operator observed of it.
struct Observed {
    member: Member,
    status: Result<NodeStatus, String>,
    config: Option<SyncConfig>,
}

/// A pod selected by a peer that is not (yet) a member: not ready or without an IP.
struct Absent {
    peer: String,
    pod: String,
}

/// What one pass over a policy did.
pub struct Outcome {
    /// Every reachable managed member has its desired config.
    pub configs_applied: bool,
}

fn node_hex(s: &NodeStatus) -> String {
    s.node_id.to_hex()
}

/// Resolves members, pushes configs, triggers syncs and writes status for one policy.
pub async fn sync_policy(ctx: &Ctx, policy: &SyncPolicy) -> Result<Outcome, Error> {
    // Never decide from half-filled caches (a new leader would see no members and write
    // an empty status): wait until the first full list of peers and pods is in.
    ctx.policies
        .wait_until_ready()
        .await
        .map_err(|e| Error::Retry(format!("SyncPolicy cache: {e}")))?;
    ctx.peers
        .wait_until_ready()
        .await
        .map_err(|e| Error::Retry(format!("SyncPeer cache: {e}")))?;
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|e| Error::Retry(format!("Pod cache: {e}")))?;
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let key = format!("{ns}/{name}");
    let spec = &policy.spec;
    let interval_ms = spec.interval().as_millis() as u64;
    let mut problems: Vec<(String, String)> = Vec::new();
    let token = match ctx.token(policy).await {
        Ok(t) => t,
        Err(e) => {
            problems.push(("TokenUnavailable".into(), e));
            None
        }
    };
    let nodes = ctx.nodes.with_token(token);

    // Peers this policy selects; a peer selected by two policies belongs to neither.
    let mut selected: Vec<Arc<SyncPeer>> = ctx
        .peers
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| selector::matches(&spec.peer_selector, Some(p.labels())))
        .collect();
    selected.sort_by_key(|p| p.name_any());
    let mut contested = BTreeMap::new();
    for p in &selected {
        let others: Vec<String> = ctx
            .policies_selecting(p)
            .iter()
            .map(|x| x.name_any())
            .filter(|n| *n != name)
            .collect();
        if !others.is_empty() {
            contested.insert(p.name_any(), others);
        }
    }
    let (deleting, active): (Vec<_>, Vec<_>) = selected
        .iter()
        .cloned()
        .partition(|p| p.metadata.deletion_timestamp.is_some());

    // Members: ready pods with an IP, and external endpoints.
    let mut members = Vec::new();
    let mut absent = Vec::new();
    let pods_of = |peer: &SyncPeer| -> Vec<Arc<Pod>> {
        let Some(sel) = &peer.spec.selector else {
            return Vec::new();
        };
        let mut v: Vec<_> = ctx
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| selector::matches(sel, Some(p.labels())))
            .collect();
        v.sort_by_key(|p| p.name_any());
        v
    };
    for peer in active
        .iter()
        .filter(|p| !contested.contains_key(&p.name_any()))
    {
        if let Some(endpoint) = &peer.spec.endpoint {
            members.push(Member {
                peer: peer.name_any(),
                name: peer.name_any(),
                endpoint: endpoint.trim_end_matches('/').to_string(),
                node_id: None,
                direction: peer.spec.direction,
                collections: peer.spec.collections.clone(),
                managed: false,
            });
            continue;
        }
        for pod in pods_of(peer) {
            if !pod_ready(&pod) {
                absent.push(Absent {
                    peer: peer.name_any(),
                    pod: pod.name_any(),
                });
                continue;
            }
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            members.push(Member {
                peer: peer.name_any(),
                name: pod.name_any(),
                endpoint: format!("http://{host}:{}", peer.spec.effective_port()),
                node_id: None,
                direction: peer.spec.direction,
                collections: peer.spec.collections.clone(),
                managed: true,
            });
        }
    }

    // Observe every member.
    let observe = |m: Member| {
        let nodes = nodes.clone();
        async move {
            if m.managed {
                let (status, config) =
                    futures::join!(nodes.status(&m.endpoint), nodes.config(&m.endpoint));
                Observed {
                    member: m,
                    status,
                    config: config.ok(),
                }
            } else {
                let status = nodes.watermark(&m.endpoint).await.map(|w| NodeStatus {
                    node_id: w.node_id,
                    incarnation: w.incarnation,
                    watermark: w.hlc,
                    applied: BTreeMap::new(),
                    gc_horizon: None,
                    documents: 0,
                    tombstones: 0,
                    conflicts: 0,
                    superseded: 0,
                    checkpoint_pending: false,
                    wall_ms: 0,
                    max_clock_drift_ms: 0,
                    peers: Vec::new(),
                });
                Observed {
                    member: m,
                    status,
                    config: None,
                }
            }
        }
    };
    let mut observed: Vec<Observed> =
        futures::future::join_all(members.iter().cloned().map(observe)).await;
    for o in &mut observed {
        if let Ok(s) = &o.status {
            o.member.node_id = Some(node_hex(s));
        }
    }

    // GC horizon: the minimum applied HLC over all members and origins; any member that did
    // not answer (or an external one, whose applied HLCs are unknown) holds it back.
    let reports: Vec<GcReport> = observed
        .iter()
        .map(|o| GcReport {
            node_id: o.member.node_id.clone().unwrap_or_default(),
            applied: match (&o.status, o.member.managed) {
                (Ok(s), true) => Some(s.applied.iter().map(|(k, v)| (k.to_hex(), v.0)).collect()),
                _ => None,
            },
        })
        .collect();
    let gc = lag::gc_horizon(&reports).map(Hlc);
    let base = match spec.base_config(gc) {
        Ok(b) => b,
        Err(e) => {
            problems.push(("InvalidSpec".into(), e));
            SyncConfig::default()
        }
    };
    let plan_members: Vec<Member> = observed.iter().map(|o| o.member.clone()).collect();
    let plan: Plan = topology::plan(&plan_members, &spec.topology, &spec.collections, &base);

    // Push configs that differ; trigger a sync where peers changed or on request.
    let mut configs_applied = true;
    let mut to_sync: Vec<String> = Vec::new();
    for o in &observed {
        if !o.member.managed || o.status.is_err() {
            continue;
        }
        let mut desired = plan
            .configs
            .get(&o.member.name)
            .cloned()
            .unwrap_or_else(|| base.clone());
        if spec.paused {
            desired.peers.clear();
        }
        if o.config.as_ref() == Some(&desired) {
            continue;
        }
        let peers_changed = o.config.as_ref().map(|c| &c.peers) != Some(&desired.peers);
        ctx.metrics.config_pushes.inc();
        match nodes.put_config(&o.member.endpoint, &desired).await {
            Ok(_) => {
                tracing::info!(policy = %key, member = %o.member.name, peers = desired.peers.len(), "node config updated");
                if peers_changed {
                    to_sync.push(o.member.endpoint.clone());
                }
            }
            Err(e) => {
                configs_applied = false;
                problems.push(("ConfigPushFailed".into(), e));
            }
        }
    }
    // Pods of SyncPeers being deleted leave the topology: clear their peers (best effort).
    for peer in &deleting {
        for pod in pods_of(peer).into_iter().filter(|p| pod_ready(p)) {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let endpoint = format!("http://{ip}:{}", peer.spec.effective_port());
            if let Ok(cfg) = nodes.config(&endpoint).await {
                if !cfg.peers.is_empty() {
                    ctx.metrics.config_pushes.inc();
                    let cleared = SyncConfig {
                        peers: Vec::new(),
                        ..cfg
                    };
                    let _ = nodes.put_config(&endpoint, &cleared).await;
                }
            }
        }
    }
    let sync_now = policy.annotations().get(SYNC_NOW).cloned();
    let requested = {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = mem.entry(key.clone()).or_default();
        let new = sync_now.is_some() && m.sync_now_seen != sync_now;
        m.sync_now_seen = sync_now;
        new
    };
    if requested && !spec.paused {
        to_sync = observed
            .iter()
            .filter(|o| o.member.managed && o.status.is_ok())
            .map(|o| o.member.endpoint.clone())
            .collect();
    }
    if !to_sync.is_empty() {
        ctx.metrics.sync_triggers.inc_by(to_sync.len() as u64);
        futures::future::join_all(to_sync.iter().map(|e| nodes.sync_now(e))).await;
        // Second round, so that what one member pulled reaches those that pulled first.
        futures::future::join_all(to_sync.iter().map(|e| nodes.sync_now(e))).await;
        for o in &mut observed {
            if o.member.managed {
                o.status = nodes.status(&o.member.endpoint).await;
            }
        }
    }

    // Lag per edge: entries in the sender's log after the receiver's checkpoint.
    let by_name: BTreeMap<&str, &Observed> = observed
        .iter()
        .map(|o| (o.member.name.as_str(), o))
        .collect();
    let now = now_ms();
    let mut edges = Vec::new();
    let mut incoming: BTreeMap<String, Vec<(String, Lag)>> = BTreeMap::new();
    for e in &plan.edges {
        let (Some(from), Some(to)) = (by_name.get(e.from.as_str()), by_name.get(e.to.as_str()))
        else {
            continue;
        };
        let (driver, other) = match e.mode {
            Mode::Pull => (to, from),
            Mode::Push => (from, to),
        };
        let peer_entry = driver
            .status
            .as_ref()
            .ok()
            .and_then(|s| s.peers.iter().find(|p| p.peer_id == other.member.name));
        let checkpoint = peer_entry.and_then(|p| match e.mode {
            Mode::Pull => p.checkpoint,
            Mode::Push => p.push_checkpoint,
        });
        let collections = peer_entry
            .map(|p| p.collections.clone())
            .unwrap_or_default();
        let backlog = if from.status.is_ok() {
            nodes
                .backlog(
                    &from.member.endpoint,
                    checkpoint.map(|c| c.to_hex()).as_deref(),
                    &collections,
                )
                .await
                .ok()
        } else {
            None
        };
        let l = backlog
            .map(|b| {
                lag::edge_lag(
                    &Backlog {
                        pending: b.pending,
                        oldest: b.oldest.map(|h| h.0),
                    },
                    now,
                )
            })
            .unwrap_or(Lag::ZERO);
        let labels = OperatorMetrics::labels(&[("policy", &key), ("from", &e.from), ("to", &e.to)]);
        ctx.metrics
            .edge_lag_seconds
            .get_or_create(&labels)
            .set(l.seconds());
        ctx.metrics
            .edge_pending
            .get_or_create(&labels)
            .set(l.pending());
        incoming
            .entry(e.to.clone())
            .or_default()
            .push((e.from.clone(), l));
        edges.push((
            EdgeStatus {
                from: e.from.clone(),
                to: e.to.clone(),
                mode: e.mode.as_str().into(),
                pending_changes: l.pending(),
                lag_seconds: l.seconds(),
            },
            checkpoint,
        ));
    }

    // Member statuses, stalls and events.
    let mut member_status: BTreeMap<String, MemberStatus> = BTreeMap::new();
    let mut stalled: Vec<String> = Vec::new();
    {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = mem.entry(key.clone()).or_default();
        for (edge, checkpoint) in &edges {
            let watch = m
                .stall
                .entry(format!("{}->{}", edge.from, edge.to))
                .or_default();
            let cp = checkpoint.map(|c| c.to_hex());
            if watch.observe(now, edge.pending_changes as u64, cp.as_deref(), interval_ms) {
                stalled.push(format!("{} → {}", edge.from, edge.to));
            }
        }
    }
    for o in &observed {
        let lag = lag::member_lag(
            incoming
                .get(&o.member.name)
                .into_iter()
                .flatten()
                .map(|(f, l)| (f.as_str(), *l)),
        );
        let (ready, watermark, conflicts, last_sync, last_error) = match &o.status {
            Ok(s) => {
                let err = s.peers.iter().find_map(|p| {
                    p.last_error
                        .as_ref()
                        .map(|e| format!("with {}: {e}", p.peer_id))
                });
                let last = s.peers.iter().filter_map(|p| p.last_transfer_ms).max();
                (
                    err.is_none(),
                    Some(s.watermark.to_hex()),
                    s.conflicts as i64,
                    last,
                    err,
                )
            }
            Err(e) => (false, None, 0, None, Some(e.clone())),
        };
        member_status.insert(
            o.member.name.clone(),
            MemberStatus {
                pod: o.member.name.clone(),
                node_id: o.member.node_id.clone(),
                endpoint: Some(o.member.endpoint.clone()),
                ready,
                watermark,
                lag_seconds: lag.seconds(),
                pending_changes: lag.pending(),
                conflicts,
                last_sync_time: last_sync.and_then(time_from_ms),
                last_error,
            },
        );
    }
    for a in &absent {
        member_status.insert(
            a.pod.clone(),
            MemberStatus {
                pod: a.pod.clone(),
                ready: false,
                last_error: Some("pod is not ready or has no IP; left out of the topology".into()),
                ..Default::default()
            },
        );
    }

    let outcome = Outcome { configs_applied };
    write_statuses(
        ctx,
        policy,
        &selected,
        &contested,
        &observed,
        &absent,
        member_status,
        &plan,
        edges,
        problems,
        stalled,
        gc,
    )
    .await?;
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn write_statuses(
    ctx: &Ctx,
    policy: &SyncPolicy,
    selected: &[Arc<SyncPeer>],
    contested: &BTreeMap<String, Vec<String>>,
    observed: &[Observed],
    absent: &[Absent],
    member_status: BTreeMap<String, MemberStatus>,
    plan: &Plan,
    edges: Vec<(EdgeStatus, Option<Hlc>)>,
    mut problems: Vec<(String, String)>,
    stalled: Vec<String>,
    gc: Option<Hlc>,
) -> Result<(), Error> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let key = format!("{ns}/{name}");
    let now_t = Time(Timestamp::now());
    let generation = policy.metadata.generation;
    for p in &plan.problems {
        problems.push((p.reason().to_string(), p.to_string()));
    }
    for (peer, others) in contested {
        problems.push((
            reason::SELECTED_BY_TWO_POLICIES.into(),
            format!("SyncPeer {peer} is also selected by {}; it takes part in neither until one selector changes", others.join(", ")),
        ));
    }

    // SyncPeer statuses.
    for peer in selected {
        let pname = peer.name_any();
        let mut members: Vec<MemberStatus> = observed
            .iter()
            .filter(|o| o.member.peer == pname)
            .filter_map(|o| member_status.get(&o.member.name).cloned())
            .collect();
        members.extend(
            absent
                .iter()
                .filter(|a| a.peer == pname)
                .filter_map(|a| member_status.get(&a.pod).cloned()),
        );
        let totals = lag::aggregate(&members);
        let old = peer.status.clone().unwrap_or_default();
        let mut st = SyncPeerStatus {
            members: members.clone(),
            member_count: totals.members,
            ready_members: totals.ready_members,
            watermark: totals.watermark.clone(),
            lag_seconds: totals.max_lag_seconds,
            conflicts: totals.conflicts,
            policy: Some(name.clone()),
            conditions: old.conditions.clone(),
            observed_generation: peer.metadata.generation,
        };
        let contested_by = contested.get(&pname);
        let (ready, ready_reason, ready_msg) = if let Some(others) = contested_by {
            (
                false,
                reason::SELECTED_BY_TWO_POLICIES,
                format!("also selected by {}", others.join(", ")),
            )
        } else {
            readiness(&totals, "no ready pod matches the selector")
        };
        let gen = peer.metadata.generation;
        conditions::set(
            &mut st.conditions,
            conditions::READY,
            Status::from(ready),
            ready_reason,
            &ready_msg,
            gen,
            &now_t,
        );
        let pending: i64 = members.iter().map(|m| m.pending_changes).sum();
        let peer_stalled: Vec<&String> = stalled
            .iter()
            .filter(|s| members.iter().any(|m| s.ends_with(&format!("→ {}", m.pod))))
            .collect();
        let (synced, s_reason, s_msg) = if !peer_stalled.is_empty() {
            (
                false,
                reason::STALLED,
                format!(
                    "no progress over three sync intervals on {}",
                    peer_stalled
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else if pending > 0 {
            (
                false,
                reason::LAGGING,
                format!(
                    "{pending} changes pending, max lag {}s",
                    totals.max_lag_seconds
                ),
            )
        } else {
            (true, reason::SYNCED, "no changes pending".to_string())
        };
        conditions::set(
            &mut st.conditions,
            conditions::SYNCED,
            Status::from(synced),
            s_reason,
            &s_msg,
            gen,
            &now_t,
        );
        let errors: Vec<String> = members
            .iter()
            .filter_map(|m| m.last_error.as_ref().map(|e| format!("{}: {e}", m.pod)))
            .collect();
        let (degraded, d_reason, d_msg) = if let Some(others) = contested_by {
            (
                true,
                reason::SELECTED_BY_TWO_POLICIES.to_string(),
                format!("selected by {name} and {}", others.join(", ")),
            )
        } else if !peer_stalled.is_empty() {
            (true, reason::STALLED.to_string(), s_msg.clone())
        } else if let Some(first) = errors.first() {
            (true, error_reason(first).to_string(), errors.join("; "))
        } else {
            (
                false,
                reason::HEALTHY.to_string(),
                "all members healthy".to_string(),
            )
        };
        conditions::set(
            &mut st.conditions,
            conditions::DEGRADED,
            Status::from(degraded),
            &d_reason,
            &d_msg,
            gen,
            &now_t,
        );
        if peer.metadata.deletion_timestamp.is_none() && Some(&st) != peer.status.as_ref() {
            patch_status::<SyncPeer>(ctx, &ns, &pname, json!(st)).await?;
        }
        // Events on the peer: members added and removed.
        let before: BTreeSet<&str> = old.members.iter().map(|m| m.pod.as_str()).collect();
        let after: BTreeSet<&str> = members.iter().map(|m| m.pod.as_str()).collect();
        for added in after.difference(&before) {
            ctx.event(
                peer.as_ref(),
                false,
                "MemberAdded",
                format!("member {added} joined"),
            )
            .await;
        }
        for removed in before.difference(&after) {
            ctx.event(
                peer.as_ref(),
                false,
                "MemberRemoved",
                format!("member {removed} left"),
            )
            .await;
        }
    }

    // SyncPolicy status.
    let all_members: Vec<MemberStatus> = member_status.values().cloned().collect();
    let edge_status: Vec<EdgeStatus> = edges.into_iter().map(|(e, _)| e).collect();
    let totals = lag::aggregate_policy(&all_members, &edge_status);
    let old = policy.status.clone().unwrap_or_default();
    let mut st = SyncPolicyStatus {
        members: totals.members,
        ready_members: totals.ready_members,
        edges: edge_status.clone(),
        max_lag_seconds: totals.max_lag_seconds,
        conflicts: totals.conflicts,
        gc_horizon: gc.map(|h| h.to_hex()),
        last_sync_time: all_members
            .iter()
            .filter_map(|m| m.last_sync_time.clone())
            .max(),
        conditions: old.conditions.clone(),
        observed_generation: generation,
    };
    let pending: i64 = edge_status.iter().map(|e| e.pending_changes).sum();
    let all_ready = totals.members > 0 && totals.ready_members == totals.members;
    let (r, rr, rm) = readiness(&totals, "no members selected");
    conditions::set(
        &mut st.conditions,
        conditions::READY,
        Status::from(r),
        rr,
        &rm,
        generation,
        &now_t,
    );
    let (c, cr, cm) = if policy.spec.paused {
        (
            false,
            reason::PAUSED.to_string(),
            "sync is paused".to_string(),
        )
    } else if !plan.connectivity.strongly_connected() {
        (
            false,
            reason::NOT_STRONGLY_CONNECTED.to_string(),
            plan.problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if !stalled.is_empty() {
        (
            false,
            reason::STALLED.to_string(),
            format!(
                "no progress over three sync intervals on {}",
                stalled.join(", ")
            ),
        )
    } else if pending > 0 || !all_ready {
        (
            false,
            reason::LAGGING.to_string(),
            format!(
                "{pending} changes pending, max lag {}s, {} of {} members ready",
                totals.max_lag_seconds, totals.ready_members, totals.members
            ),
        )
    } else {
        (
            true,
            reason::CONVERGED.to_string(),
            "every member holds every change".to_string(),
        )
    };
    conditions::set(
        &mut st.conditions,
        conditions::CONVERGED,
        Status::from(c),
        &cr,
        &cm,
        generation,
        &now_t,
    );
    let member_errors: Vec<String> = all_members
        .iter()
        .filter_map(|m| m.last_error.as_ref().map(|e| format!("{}: {e}", m.pod)))
        .collect();
    let (d, dr, dm) = if let Some((r, _)) = problems.first() {
        (
            true,
            r.clone(),
            problems
                .iter()
                .map(|(_, m)| m.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if !stalled.is_empty() {
        (true, reason::STALLED.to_string(), cm.clone())
    } else if let Some(first) = member_errors.first() {
        (
            true,
            error_reason(first).to_string(),
            member_errors.join("; "),
        )
    } else {
        (
            false,
            reason::HEALTHY.to_string(),
            "no problems".to_string(),
        )
    };
    conditions::set(
        &mut st.conditions,
        conditions::DEGRADED,
        Status::from(d),
        &dr,
        &dm,
        generation,
        &now_t,
    );
    ctx.metrics
        .conflicts
        .get_or_create(&OperatorMetrics::labels(&[("policy", &key)]))
        .set(st.conflicts);
    if Some(&st) != policy.status.as_ref() {
        patch_status::<SyncPolicy>(ctx, &ns, &name, json!(st)).await?;
    }

    // Events on the policy, only on transitions.
    if st.conflicts > old.conflicts {
        ctx.event(
            policy,
            true,
            "ConflictsDetected",
            format!(
                "{} conflicts recorded (was {})",
                st.conflicts, old.conflicts
            ),
        )
        .await;
    }
    let old_members: BTreeSet<&str> = old
        .edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    let new_members: BTreeSet<&str> = st
        .edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    if old_members != new_members && !old.edges.is_empty() {
        ctx.event(
            policy,
            false,
            "TopologyChanged",
            format!(
                "{} edges among {} members",
                st.edges.len(),
                new_members.len()
            ),
        )
        .await;
    }
    let mut fresh_errors = Vec::new();
    {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = mem.entry(key.clone()).or_default();
        let now_errors: BTreeMap<String, String> = all_members
            .iter()
            .filter_map(|x| x.last_error.clone().map(|e| (x.pod.clone(), e)))
            .collect();
        for (pod, e) in &now_errors {
            if m.errors.get(pod) != Some(e) {
                fresh_errors.push((pod.clone(), e.clone()));
            }
        }
        m.errors = now_errors;
    }
    for (pod, e) in fresh_errors {
        let r = error_reason(&e);
        let reason = if r == reason::CLOCK_DRIFT {
            "ClockDrift"
        } else {
            "SyncFailed"
        };
        ctx.event(policy, true, reason, format!("{pod}: {e}")).await;
    }
    if !stalled.is_empty()
        && conditions::find(&old.conditions, conditions::CONVERGED)
            .is_none_or(|c| c.reason != reason::STALLED)
    {
        ctx.event(
            policy,
            true,
            "Stalled",
            format!(
                "no progress over three sync intervals on {}",
                stalled.join(", ")
            ),
        )
        .await;
    }
    Ok(())
}

/// The `Ready` condition from member counts: (ready, reason, message).
fn readiness(totals: &lag::Totals, none_message: &str) -> (bool, &'static str, String) {
    let counts = format!(
        "{} of {} members ready",
        totals.ready_members, totals.members
    );
    if totals.members == 0 {
        (false, reason::NO_MEMBERS, none_message.to_string())
    } else if totals.ready_members == totals.members {
        (true, reason::ALL_MEMBERS_READY, counts)
    } else {
        (false, reason::MEMBERS_NOT_READY, counts)
    }
}

/// A condition reason for a member error message.
fn error_reason(msg: &str) -> &'static str {
    if msg.contains("clock drift") {
        reason::CLOCK_DRIFT
    } else if msg.contains("embedding") {
        reason::EMBEDDING_MISMATCH
    } else if msg.contains("unreachable")
        || msg.contains("timed out")
        || msg.contains("connection failed")
    {
        reason::NODE_UNREACHABLE
    } else {
        reason::SYNC_FAILED
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
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
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
    let every = policy.spec.status_interval();
    sync_policy(&ctx, &policy).await?;
    ctx.memory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key_of(policy.as_ref()))
        .or_default()
        .failures = 0;
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(every))
}

/// Exponential backoff per object (1 s doubling to 2 min), never a hot loop.
fn policy_error(policy: Arc<SyncPolicy>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&OperatorMetrics::labels(&[("controller", "syncpolicy")]))
        .inc();
    let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    let m = mem.entry(key_of(policy.as_ref())).or_default();
    m.failures = (m.failures + 1).min(8);
    let delay = Duration::from_secs(1 << (m.failures - 1).min(7));
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
                for policy in ctx.policies_selecting(&peer) {
                    let outcome = sync_policy(&ctx, &policy).await?;
                    if !outcome.configs_applied {
                        return Err(Error::Retry(format!(
                            "could not update every member of {} yet",
                            policy.name_any()
                        )));
                    }
                    ctx.event(
                        policy.as_ref(),
                        false,
                        "PeerRemoved",
                        format!(
                            "SyncPeer {} removed from every member's config",
                            peer.name_any()
                        ),
                    )
                    .await;
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
            .reflect(policy_writer),
        policy_fingerprint,
    );
    let peer_stream = changed_or_deleted(
        watcher(peers_api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(peer_writer),
        peer_fingerprint,
    );
    let pod_stream = changed_or_deleted(
        watcher(pods_api, watcher::Config::default())
            .default_backoff()
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
        recorder,
        nodes: NodeClient::new(None),
        metrics,
        policies: policies.clone(),
        peers: peers.clone(),
        pods: pods.clone(),
        memory: Mutex::new(HashMap::new()),
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
