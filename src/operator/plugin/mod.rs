//! `kubectl ragsync`: a kubectl plugin (binary `kubectl-ragsync`) for looking at a SyncPolicy
//! the way its nodes see it, asking the operator for a sync round, and listing conflicts.
//!
//! - [`view`] (pure): members from the SyncPeers' status, edges and backlogs from the nodes'
//!   own `/admin/status`, conflicts deduplicated across members.
//! - [`render`] (pure): the tables.
//! - [`read`]: the caller's kubeconfig, the resources, the token, and the nodes (through the
//!   API server's pod proxy with the caller's RBAC, or directly with `--direct`).
//!
//! The functions here tie them together; the binary only parses arguments and prints.

pub mod read;
pub mod render;
#[cfg(test)]
mod tests;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::operator::controller::SYNC_NOW;
use crate::operator::crd::{SyncPeer, SyncPolicy};
use crate::operator::members;
use crate::wire::NodeStatus;

use read::{NodeReader, Unread};
use view::{
    Access, BacklogSource, ConflictsReport, Measured, MemberRef, NodeRead, StatusReport, Target,
};

/// Node reads in flight at once.
const PARALLEL_READS: usize = 16;

/// Exit status when the report was printed but some members' nodes could not be read.
pub const EXIT_PARTIAL: i32 = 3;

fn now_ms() -> u64 {
    crate::hlc::WallClock::now_ms(&crate::hlc::SystemClock)
}

/// What every command that reads nodes starts from: the policy, its members and a reader.
struct Setup {
    policy: SyncPolicy,
    members: Vec<MemberRef>,
    reader: NodeReader,
    notes: Vec<String>,
}

async fn setup(client: &Client, ns: &str, name: &str, access: Access) -> Result<Setup, String> {
    let policy = read::policy(client, ns, name).await?;
    let mut peers = read::peers_of(client, &policy).await?;
    let mut notes = Vec::new();
    if peers.is_empty() {
        notes.push("the policy's peerSelector selects no SyncPeer".to_string());
    }
    // A SyncPeer another policy selects too takes part in neither (as the operator decides).
    match read::policies(client, ns).await {
        Ok(all) => {
            let all: Vec<Arc<SyncPolicy>> = all.into_iter().map(Arc::new).collect();
            let arcs: Vec<Arc<SyncPeer>> = peers.iter().cloned().map(Arc::new).collect();
            let selection = members::select(&policy, &all, &arcs);
            for (peer, others) in &selection.contested {
                notes.push(format!(
                    "SyncPeer {peer} is selected by {} too: it takes part in neither policy",
                    others.join(", ")
                ));
            }
            peers.retain(|p| !selection.contested.contains_key(&p.name_any()));
        }
        Err(e) => notes.push(format!(
            "{e}; SyncPeers that other policies select too are not detected"
        )),
    }
    let pods = match read::pods(client, ns).await {
        Ok(pods) => Some(pods),
        Err(e) => {
            notes.push(format!(
                "{e}; the members are those the SyncPeers' status lists (a bounded list)"
            ));
            None
        }
    };
    let members = view::members(&peers, pods.as_deref());
    for p in view::peers_without_members(&peers, &members) {
        notes.push(match pods {
            Some(_) => format!("SyncPeer {p} selects no pod"),
            None => format!("SyncPeer {p} lists no members (the operator has not reported on it?)"),
        });
    }
    let (token, note) = read::token(client, &policy).await;
    notes.extend(note);
    Ok(Setup {
        reader: NodeReader::new(client.clone(), ns, access, token, policy.spec.tls.is_some()),
        members,
        policy,
        notes,
    })
}

fn node_read<T>(r: &Result<T, Unread>, ok: impl FnOnce(&T) -> NodeRead) -> NodeRead {
    match r {
        Ok(v) => ok(v),
        Err(Unread::Skipped(reason)) => NodeRead::Skipped {
            reason: reason.clone(),
        },
        Err(Unread::Failed(error)) => NodeRead::Failed {
            error: error.clone(),
        },
    }
}

/// `kubectl ragsync status POLICY`: the policy's status, its members, and every edge's backlog
/// read live from the senders.
pub async fn status(
    client: &Client,
    ns: &str,
    name: &str,
    access: Access,
) -> Result<StatusReport, String> {
    let s = setup(client, ns, name, access).await?;
    let mut report = StatusReport::of_policy(&s.policy, access);
    report.notes.extend(s.notes.iter().cloned());
    let reads: Vec<Result<NodeStatus, Unread>> = futures::stream::iter(&s.members)
        .map(|m| s.reader.status(&m.target))
        .buffered(PARALLEL_READS)
        .collect()
        .await;
    let mut nodes = BTreeMap::new();
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    for (m, r) in s.members.iter().zip(reads) {
        let mut v = m.view.clone();
        v.node = node_read(&r, NodeRead::of);
        if let Ok(st) = r {
            nodes.insert(v.name.clone(), st);
        }
        targets.insert(v.name.clone(), m.target.clone());
        report.members.push(v);
    }
    let plans = view::derive_edges(&nodes);
    let reader = &s.reader;
    let targets = &targets;
    let measured: Vec<Measured> = futures::stream::iter(&plans)
        .map(|p| async move {
            match &p.backlog {
                BacklogSource::Served(b) => Measured::Served(*b),
                BacklogSource::Unknown(why) => Measured::Unknown(why.clone()),
                BacklogSource::Ask { since, collections } => match targets.get(&p.from) {
                    None => Measured::Unknown(format!("{} is not a member of the policy", p.from)),
                    Some(t) => match reader.backlog(t, *since, collections).await {
                        Ok(b) => Measured::Asked(b),
                        Err(Unread::Skipped(e) | Unread::Failed(e)) => {
                            Measured::Unknown(format!("asking {} for the backlog: {e}", p.from))
                        }
                    },
                },
            }
        })
        .buffered(PARALLEL_READS)
        .collect()
        .await;
    let now = now_ms();
    report.edges = plans
        .iter()
        .zip(measured)
        .map(|(p, m)| view::edge_view(p, m, now))
        .collect();
    view::sort_worst_first(&mut report.edges);
    view::live_member_lag(&mut report.members, &report.edges);
    if report.unread() > 0 {
        report.notes.push(format!(
            "edges are derived from the nodes that were read: the pulls of the {} members not read, and their pushes, are not listed",
            report.unread()
        ));
    }
    Ok(report)
}

/// What `kubectl ragsync sync` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    pub namespace: String,
    pub policy: String,
    pub annotation: String,
    pub value: String,
    pub previous: Option<String>,
    pub paused: bool,
}

impl SyncRequest {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "syncpolicy.ragsync.io/{} annotated: {}={} (was {})\n",
            self.policy,
            self.annotation,
            self.value,
            self.previous.as_deref().unwrap_or("unset")
        );
        if self.paused {
            s.push_str("The policy is paused: the operator runs no sync round for it until spec.paused is false.\n");
        } else {
            s.push_str("The operator runs a sync round on every in-cluster member it can reach at its next pass over the policy (at once while it runs and leads).\n");
        }
        s
    }
}

/// `kubectl ragsync sync POLICY`: sets the sync-now annotation to a fresh timestamp (a merge
/// patch), which the operator answers with a sync round on every member.
pub async fn sync(client: &Client, ns: &str, name: &str) -> Result<SyncRequest, String> {
    let api: Api<SyncPolicy> = Api::namespaced(client.clone(), ns);
    let before = read::policy(client, ns, name).await?;
    let previous = before.annotations().get(SYNC_NOW).cloned();
    let mut value = format!("{:.3}", Timestamp::now());
    if previous.as_deref() == Some(value.as_str()) {
        // Each new value asks once: never write the one already there.
        value = format!("{:.6}", Timestamp::now());
    }
    let patch = json!({"metadata": {"annotations": {SYNC_NOW: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| read::api_error(&format!("cannot annotate SyncPolicy {ns}/{name}"), &e))?;
    Ok(SyncRequest {
        namespace: ns.to_string(),
        policy: name.to_string(),
        annotation: SYNC_NOW.to_string(),
        value,
        previous,
        paused: before.spec.paused,
    })
}

/// `kubectl ragsync conflicts POLICY [--collection C]`: the conflicts the members' nodes
/// retain, deduplicated across members.
pub async fn conflicts(
    client: &Client,
    ns: &str,
    name: &str,
    collection: Option<&str>,
    access: Access,
) -> Result<ConflictsReport, String> {
    let s = setup(client, ns, name, access).await?;
    let reads: Vec<_> = futures::stream::iter(&s.members)
        .map(|m| s.reader.conflicts(&m.target, collection))
        .buffered(PARALLEL_READS)
        .collect()
        .await;
    let mut members = Vec::new();
    let mut per_member = Vec::new();
    for (m, r) in s.members.iter().zip(reads) {
        let mut v = m.view.clone();
        v.node = node_read(&r, |c| NodeRead::Listed {
            records: c.conflicts.len(),
        });
        if let Ok(c) = r {
            per_member.push((v.name.clone(), c.conflicts));
        }
        members.push(v);
    }
    let writers = view::writers(&members);
    Ok(ConflictsReport {
        namespace: ns.to_string(),
        policy: name.to_string(),
        collection: collection.map(str::to_string),
        access,
        conflicts: view::dedupe_conflicts(&per_member, &writers),
        members,
        notes: s.notes,
    })
}
