//! Who syncs with whom: pure functions from a policy's members and topology to directed edges
//! and each managed member's node configuration.
//!
//! Nothing here talks to Kubernetes or the network, so every rule is unit- and property-tested.
//! The output depends only on the *set* of members (it is sorted internally), so reconciling
//! the same state twice gives byte-identical configs and the controller can skip the PUT.
//!
//! Semantics (DESIGN §3):
//! - A link between members `a` and `b` (Mesh, HubAndSpoke, Ring) puts `b` into `a`'s config
//!   when `a` is managed, with the direction `b`'s SyncPeer asks for (`Pull`: others pull from
//!   it, `Push`: others push to it, `Both`), and symmetrically. An external member gets no
//!   config, so it only exchanges what managed members pull from or push to it.
//! - An Explicit edge `from -> to` asks for changes to flow from every member of `from` to
//!   every member of `to`: the receiver pulls when it is managed and the sender may be pulled
//!   from, otherwise the sender pushes when it is managed and the receiver may be pushed to.
//! - A pair exchanges the collections in the policy's `include` (empty: all) that both
//!   SyncPeers list (empty: all), minus the policy's `exclude`; a pair with nothing in common
//!   gets no peer entry at all (an empty list would mean "all" to the node).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{Direction, PeerConfig, SyncConfig};
use crate::operator::crd::{CollectionFilter, PeerDirection, Topology, TopologyType};

/// One member of a policy: an in-cluster pod selected by a SyncPeer, or an external node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Name of the SyncPeer that contributed this member.
    pub peer: String,
    /// Member name, unique within the policy: the pod name, or the SyncPeer name for an
    /// external node. Used as `peer_id` in the other members' configs.
    pub name: String,
    /// Base URL of the member's sync server.
    pub endpoint: String,
    /// Node id the member reported, when known.
    pub node_id: Option<String>,
    /// The SyncPeer's `direction`: how the others exchange changes with this member.
    pub direction: PeerDirection,
    /// The SyncPeer's `collections` (empty: all).
    pub collections: Vec<String>,
    /// True for in-cluster pods the operator configures; false for an external endpoint.
    pub managed: bool,
}

/// How a directed edge is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The receiver pulls from the sender.
    Pull,
    /// The sender pushes to the receiver.
    Push,
}

impl Mode {
    /// `Pull` or `Push`, as written into status.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pull => "Pull",
            Mode::Push => "Push",
        }
    }
}

/// Changes flow from member `from` to member `to`, carried as `mode` says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub mode: Mode,
}

impl Edge {
    /// The member whose node runs this exchange (the puller or the pusher).
    pub fn driver(&self) -> &str {
        match self.mode {
            Mode::Pull => &self.to,
            Mode::Push => &self.from,
        }
    }
}

/// A member outside the largest strongly connected group of members.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CutOff {
    pub member: String,
    /// Changes written in the main group reach this member.
    pub receives: bool,
    /// Changes written on this member reach the main group.
    pub sends: bool,
}

/// Whether changes written anywhere can reach every member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connectivity {
    /// Strongly connected components of the edge graph (members sorted, groups sorted).
    pub components: Vec<Vec<String>>,
    /// Members outside the largest component, with what they miss.
    pub cut_off: Vec<CutOff>,
}

impl Connectivity {
    /// Every member's changes can reach every other member (trivially true for 0 or 1).
    pub fn strongly_connected(&self) -> bool {
        self.components.len() <= 1
    }
}

/// A configuration that is computable but wrong or risky; the controller turns these into
/// `Degraded`/`Converged` condition reasons and events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// Some members' changes can never reach some other members.
    NotStronglyConnected(Vec<CutOff>),
    /// Two or more members report the same node id (version vectors would be corrupted).
    DuplicateNodeId {
        node_id: String,
        members: Vec<String>,
    },
    /// Two members share a name; only the first (by SyncPeer, then pod) takes part.
    DuplicateMemberName { name: String, peers: Vec<String> },
    /// The topology names a SyncPeer that has no members.
    UnknownPeer(String),
    /// An Explicit edge between two members that neither can carry (both external, or the
    /// SyncPeers' directions forbid it).
    Unrealizable { from: String, to: String },
}

impl Problem {
    /// A `metav1.Condition` reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::NotStronglyConnected(_) => "NotStronglyConnected",
            Problem::DuplicateNodeId { .. } => "DuplicateNodeId",
            Problem::DuplicateMemberName { .. } => "DuplicateMemberName",
            Problem::UnknownPeer(_) => "UnknownSyncPeer",
            Problem::Unrealizable { .. } => "UnrealizableEdge",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotStronglyConnected(cut) => {
                let parts: Vec<String> = cut
                    .iter()
                    .map(|c| match (c.receives, c.sends) {
                        (false, false) => format!("{} is isolated", c.member),
                        (false, true) => format!("{} never receives the others' changes", c.member),
                        (true, false) => format!("{}'s changes never reach the others", c.member),
                        (true, true) => format!("{} is only partly connected", c.member),
                    })
                    .collect();
                write!(
                    f,
                    "topology is not strongly connected: {}; check the topology and the SyncPeers' direction",
                    parts.join(", ")
                )
            }
            Problem::DuplicateNodeId { node_id, members } => write!(
                f,
                "node id {node_id} is used by {}; give each node its own store",
                members.join(", ")
            ),
            Problem::DuplicateMemberName { name, peers } => write!(
                f,
                "member name {name} comes from SyncPeers {}; only the first takes part, rename one",
                peers.join(", ")
            ),
            Problem::UnknownPeer(p) => {
                write!(f, "topology names SyncPeer {p}, which has no members")
            }
            Problem::Unrealizable { from, to } => write!(
                f,
                "no member can carry changes from {from} to {to} (an external node is never configured; check the SyncPeers' direction)"
            ),
        }
    }
}

/// The desired state for one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Every directed edge, sorted.
    pub edges: Vec<Edge>,
    /// Desired config per managed member name (members without peers get an empty list).
    pub configs: BTreeMap<String, SyncConfig>,
    pub connectivity: Connectivity,
    /// Sorted; empty when the plan is clean.
    pub problems: Vec<Problem>,
}

/// Computes edges and per-member configs. `base` supplies interval, batch size, strategy
/// and GC horizon (its `peers` are replaced).
pub fn plan(
    members: &[Member],
    topology: &Topology,
    collections: &CollectionFilter,
    base: &SyncConfig,
) -> Plan {
    let mut problems = BTreeSet::new();

    // Stable order: SyncPeer name, then member name; duplicates of a name keep the first.
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a == b);
    let mut by_name: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in &sorted {
        by_name.entry(m.name.as_str()).or_default().push(m);
    }
    let mut ms: Vec<&Member> = Vec::with_capacity(sorted.len());
    for m in &sorted {
        let same = &by_name[m.name.as_str()];
        if std::ptr::eq(same[0], *m) {
            ms.push(m);
        }
    }
    for (name, same) in &by_name {
        if same.len() > 1 {
            let peers: BTreeSet<String> = same.iter().map(|m| m.peer.clone()).collect();
            problems.insert(Problem::DuplicateMemberName {
                name: name.to_string(),
                peers: peers.into_iter().collect(),
            });
        }
    }

    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for m in &ms {
        if let Some(id) = m.node_id.as_deref() {
            ids.entry(id).or_default().insert(&m.name);
        }
    }
    for (id, names) in ids {
        if names.len() > 1 {
            problems.insert(Problem::DuplicateNodeId {
                node_id: id.to_string(),
                members: names.into_iter().map(str::to_string).collect(),
            });
        }
    }

    let n = ms.len();
    let peers_present: BTreeSet<&str> = ms.iter().map(|m| m.peer.as_str()).collect();
    let need_peer = |p: &str, problems: &mut BTreeSet<Problem>| {
        if !peers_present.contains(p) {
            problems.insert(Problem::UnknownPeer(p.to_string()));
        }
    };

    // Undirected links (i < j) or directed flows (i -> j), by member index.
    let mut links: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut flows: BTreeSet<(usize, usize)> = BTreeSet::new();
    match topology.type_ {
        TopologyType::Mesh => {
            for i in 0..n {
                for j in i + 1..n {
                    links.insert((i, j));
                }
            }
        }
        TopologyType::HubAndSpoke => {
            let hubs: BTreeSet<&str> = topology.hubs.iter().map(String::as_str).collect();
            for h in &hubs {
                need_peer(h, &mut problems);
            }
            let is_hub = |i: usize| hubs.contains(ms[i].peer.as_str());
            for i in 0..n {
                for j in i + 1..n {
                    if is_hub(i) || is_hub(j) {
                        links.insert((i, j));
                    }
                }
            }
        }
        TopologyType::Ring => {
            if n == 2 {
                links.insert((0, 1));
            } else if n >= 3 {
                for i in 0..n {
                    let j = (i + 1) % n;
                    links.insert((i.min(j), i.max(j)));
                }
            }
        }
        TopologyType::Explicit => {
            let edges: BTreeSet<(&str, &str)> = topology
                .edges
                .iter()
                .map(|e| (e.from.as_str(), e.to.as_str()))
                .collect();
            for (from, to) in edges {
                need_peer(from, &mut problems);
                need_peer(to, &mut problems);
                for i in (0..n).filter(|&i| ms[i].peer == from) {
                    for j in (0..n).filter(|&j| ms[j].peer == to && j != i) {
                        flows.insert((i, j));
                    }
                }
            }
        }
    }

    // What each managed member does with each of its peers: (pull, push) by (member, peer).
    let include = CollSet::of(&collections.include);
    let exclude: BTreeSet<&str> = collections.exclude.iter().map(String::as_str).collect();
    let pair_collections = |i: usize, j: usize| -> Option<Vec<String>> {
        let set = include
            .intersect(&CollSet::of(&ms[i].collections))
            .intersect(&CollSet::of(&ms[j].collections));
        // "All" stays all: the policy's exclusions travel as `exclude_collections`.
        let set: BTreeSet<&str> = match set {
            CollSet::All => return Some(Vec::new()),
            CollSet::Only(s) => s,
        };
        let kept: Vec<String> = set
            .into_iter()
            .filter(|c| !exclude.contains(c))
            .map(str::to_string)
            .collect();
        (!kept.is_empty()).then_some(kept)
    };

    let mut entries: BTreeMap<(usize, usize), (bool, bool, Vec<String>)> = BTreeMap::new();
    let mut add = |me: usize, other: usize, pull: bool, push: bool, colls: &Vec<String>| {
        if !(pull || push) {
            return;
        }
        let e = entries
            .entry((me, other))
            .or_insert_with(|| (false, false, colls.clone()));
        e.0 |= pull;
        e.1 |= push;
    };
    for &(i, j) in &links {
        let Some(colls) = pair_collections(i, j) else {
            continue;
        };
        let (a, b) = (ms[i], ms[j]);
        // Each change travels once: a member pushes to another only when that one will not
        // pull the change itself (it is external, or this member may not be pulled from).
        let b_pulls_a = b.managed && a.direction.is_pulled_from();
        let a_pulls_b = a.managed && b.direction.is_pulled_from();
        if a.managed {
            add(
                i,
                j,
                b.direction.is_pulled_from(),
                b.direction.is_pushed_to() && !b_pulls_a,
                &colls,
            );
        }
        if b.managed {
            add(
                j,
                i,
                a.direction.is_pulled_from(),
                a.direction.is_pushed_to() && !a_pulls_b,
                &colls,
            );
        }
    }
    for &(i, j) in &flows {
        let Some(colls) = pair_collections(i, j) else {
            continue;
        };
        let (x, y) = (ms[i], ms[j]);
        if y.managed && x.direction.is_pulled_from() {
            add(j, i, true, false, &colls);
        } else if x.managed && y.direction.is_pushed_to() {
            add(i, j, false, true, &colls);
        } else {
            problems.insert(Problem::Unrealizable {
                from: x.name.clone(),
                to: y.name.clone(),
            });
        }
    }

    let mut configs: BTreeMap<String, SyncConfig> = ms
        .iter()
        .filter(|m| m.managed)
        .map(|m| {
            let mut c = base.clone();
            c.peers.clear();
            (m.name.clone(), c)
        })
        .collect();
    let mut edges = BTreeSet::new();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (&(me, other), (pull, push, colls)) in &entries {
        let direction = match (pull, push) {
            (true, true) => Direction::Both,
            (true, false) => Direction::Pull,
            _ => Direction::Push,
        };
        let cfg = configs
            .get_mut(&ms[me].name)
            .expect("entries are only added for managed members");
        cfg.peers.push(PeerConfig {
            peer_id: ms[other].name.clone(),
            endpoint: ms[other].endpoint.clone(),
            direction,
            collections: colls.clone(),
            // An empty list means all collections, so the exclusions still apply.
            exclude_collections: if colls.is_empty() {
                collections.exclude.clone()
            } else {
                Vec::new()
            },
        });
        if *pull {
            edges.insert(Edge {
                from: ms[other].name.clone(),
                to: ms[me].name.clone(),
                mode: Mode::Pull,
            });
            adj[other].push(me);
        }
        if *push {
            edges.insert(Edge {
                from: ms[me].name.clone(),
                to: ms[other].name.clone(),
                mode: Mode::Push,
            });
            adj[me].push(other);
        }
    }
    for c in configs.values_mut() {
        c.peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    }

    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    let connectivity = connectivity(&names, &adj);
    if !connectivity.strongly_connected() {
        problems.insert(Problem::NotStronglyConnected(connectivity.cut_off.clone()));
    }

    Plan {
        edges: edges.into_iter().collect(),
        configs,
        connectivity,
        problems: problems.into_iter().collect(),
    }
}

/// A set of collections where an empty list means "all".
#[derive(Clone, Debug, PartialEq, Eq)]
enum CollSet<'a> {
    All,
    Only(BTreeSet<&'a str>),
}

impl<'a> CollSet<'a> {
    fn of(list: &'a [String]) -> Self {
        if list.is_empty() {
            CollSet::All
        } else {
            CollSet::Only(list.iter().map(String::as_str).collect())
        }
    }

    fn intersect(&self, other: &CollSet<'a>) -> CollSet<'a> {
        match (self, other) {
            (CollSet::All, x) | (x, CollSet::All) => x.clone(),
            (CollSet::Only(a), CollSet::Only(b)) => {
                CollSet::Only(a.intersection(b).copied().collect())
            }
        }
    }
}

/// Strongly connected components (Kosaraju) and the members outside the largest one.
fn connectivity(names: &[&str], adj: &[Vec<usize>]) -> Connectivity {
    let n = names.len();
    if n == 0 {
        return Connectivity::default();
    }
    let mut radj: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (u, vs) in adj.iter().enumerate() {
        for &v in vs {
            radj[v].push(u);
        }
    }

    // Pass 1: finish order on the forward graph (iterative DFS).
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for s in 0..n {
        if seen[s] {
            continue;
        }
        seen[s] = true;
        let mut stack = vec![(s, 0usize)];
        while let Some((u, k)) = stack.pop() {
            if let Some(&v) = adj[u].get(k) {
                stack.push((u, k + 1));
                if !seen[v] {
                    seen[v] = true;
                    stack.push((v, 0));
                }
            } else {
                order.push(u);
            }
        }
    }
    // Pass 2: components on the reverse graph in reverse finish order.
    let mut comp = vec![usize::MAX; n];
    let mut count = 0;
    for &s in order.iter().rev() {
        if comp[s] != usize::MAX {
            continue;
        }
        comp[s] = count;
        let mut stack = vec![s];
        while let Some(u) = stack.pop() {
            for &v in &radj[u] {
                if comp[v] == usize::MAX {
                    comp[v] = count;
                    stack.push(v);
                }
            }
        }
        count += 1;
    }

    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (u, &c) in comp.iter().enumerate() {
        groups[c].push(u);
    }
    // Main group: the largest; ties go to the one holding the earliest member in stable order.
    let main = groups
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| a.len().cmp(&b.len()).then(b[0].cmp(&a[0])))
        .map(|(c, _)| c)
        .expect("at least one member");

    let reach = |start: usize, graph: &[Vec<usize>]| -> Vec<bool> {
        let mut r = vec![false; n];
        r[start] = true;
        let mut stack = vec![start];
        while let Some(u) = stack.pop() {
            for &v in &graph[u] {
                if !r[v] {
                    r[v] = true;
                    stack.push(v);
                }
            }
        }
        r
    };
    let root = groups[main][0];
    let from_main = reach(root, adj);
    let to_main = reach(root, &radj);

    let mut components: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let mut v: Vec<String> = g.iter().map(|&u| names[u].to_string()).collect();
            v.sort();
            v
        })
        .collect();
    components.sort();
    let mut cut_off: Vec<CutOff> = (0..n)
        .filter(|&u| comp[u] != main)
        .map(|u| CutOff {
            member: names[u].to_string(),
            receives: from_main[u],
            sends: to_main[u],
        })
        .collect();
    cut_off.sort();
    Connectivity {
        components,
        cut_off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::TopologyEdge;
    use proptest::prelude::*;

    fn m(peer: &str, name: &str) -> Member {
        Member {
            peer: peer.into(),
            name: name.into(),
            endpoint: format!("http://{name}:8090"),
            node_id: None,
            direction: PeerDirection::Both,
            collections: vec![],
            managed: true,
        }
    }

    fn ext(peer: &str, direction: PeerDirection) -> Member {
        Member {
            managed: false,
            direction,
            endpoint: format!("https://{peer}.example.com:8090"),
            ..m(peer, peer)
        }
    }

    fn topo(type_: TopologyType) -> Topology {
        Topology {
            type_,
            ..Default::default()
        }
    }

    fn hub(hubs: &[&str]) -> Topology {
        Topology {
            type_: TopologyType::HubAndSpoke,
            hubs: hubs.iter().map(|s| s.to_string()).collect(),
            edges: vec![],
        }
    }

    fn explicit(edges: &[(&str, &str)]) -> Topology {
        Topology {
            type_: TopologyType::Explicit,
            hubs: vec![],
            edges: edges
                .iter()
                .map(|(f, t)| TopologyEdge {
                    from: f.to_string(),
                    to: t.to_string(),
                })
                .collect(),
        }
    }

    fn run(members: &[Member], t: &Topology) -> Plan {
        plan(
            members,
            t,
            &CollectionFilter::default(),
            &SyncConfig::default(),
        )
    }

    fn peer_ids(p: &Plan, member: &str) -> Vec<String> {
        p.configs[member]
            .peers
            .iter()
            .map(|p| p.peer_id.clone())
            .collect()
    }

    fn peer<'a>(p: &'a Plan, member: &str, other: &str) -> Option<&'a PeerConfig> {
        p.configs[member].peers.iter().find(|c| c.peer_id == other)
    }

    #[test]
    fn mesh_of_three_lists_the_other_two() {
        let ms = [m("rag", "rag-0"), m("rag", "rag-1"), m("rag", "rag-2")];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert_eq!(peer_ids(&p, "rag-0"), ["rag-1", "rag-2"]);
        assert_eq!(peer_ids(&p, "rag-1"), ["rag-0", "rag-2"]);
        assert_eq!(peer_ids(&p, "rag-2"), ["rag-0", "rag-1"]);
        let c = peer(&p, "rag-0", "rag-1").unwrap();
        // Both sides may be pulled from, so each pulls and nobody pushes: a change
        // travels once per ordered pair.
        assert_eq!(c.direction, Direction::Pull);
        assert_eq!(c.endpoint, "http://rag-1:8090");
        assert!(c.collections.is_empty());
        assert_eq!(p.edges.len(), 6);
        assert!(p.edges.iter().all(|e| e.mode == Mode::Pull));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert!(p.connectivity.strongly_connected());
    }

    #[test]
    fn empty_and_single_member() {
        let p = run(&[], &topo(TopologyType::Mesh));
        assert!(p.configs.is_empty() && p.edges.is_empty() && p.problems.is_empty());
        let p = run(&[m("a", "a-0")], &topo(TopologyType::Ring));
        assert!(p.configs["a-0"].peers.is_empty());
        assert!(p.problems.is_empty());
    }

    #[test]
    fn config_keeps_policy_settings() {
        let base = SyncConfig {
            interval_seconds: 7,
            batch_size: 42,
            conflict_strategy: crate::config::ConflictStrategy::Merge,
            peers: vec![PeerConfig {
                peer_id: "stale".into(),
                endpoint: "http://x".into(),
                direction: Direction::Both,
                collections: vec![],
                exclude_collections: vec![],
            }],
            gc_horizon: None,
        };
        let p = plan(
            &[m("a", "a-0"), m("a", "a-1")],
            &topo(TopologyType::Mesh),
            &CollectionFilter::default(),
            &base,
        );
        let c = &p.configs["a-0"];
        assert_eq!((c.interval_seconds, c.batch_size), (7, 42));
        assert_eq!(c.conflict_strategy, crate::config::ConflictStrategy::Merge);
        assert_eq!(peer_ids(&p, "a-0"), ["a-1"]);
    }

    #[test]
    fn hub_and_spoke() {
        let ms = [
            m("eu", "eu-0"),
            m("eu", "eu-1"),
            m("us", "us-0"),
            m("us", "us-1"),
            m("ap", "ap-0"),
        ];
        let p = run(&ms, &hub(&["eu"]));
        // hubs mesh among themselves and reach every spoke
        assert_eq!(peer_ids(&p, "eu-0"), ["ap-0", "eu-1", "us-0", "us-1"]);
        // spokes only with hubs, not even with their own SyncPeer's other pods
        assert_eq!(peer_ids(&p, "us-0"), ["eu-0", "eu-1"]);
        assert_eq!(peer_ids(&p, "ap-0"), ["eu-0", "eu-1"]);
        assert!(p.connectivity.strongly_connected());
        assert!(p.problems.is_empty());
    }

    #[test]
    fn hub_and_spoke_without_hub_members_is_flagged() {
        let ms = [m("us", "us-0"), m("ap", "ap-0")];
        let p = run(&ms, &hub(&["eu"]));
        assert!(p.problems.contains(&Problem::UnknownPeer("eu".into())));
        assert!(matches!(
            p.problems.iter().find(|x| x.reason() == "NotStronglyConnected"),
            Some(Problem::NotStronglyConnected(cut)) if cut.len() == 1
        ));
        assert!(p.edges.is_empty());
    }

    #[test]
    fn ring_order_is_peer_then_pod() {
        let ms = [
            m("b", "b-0"),
            m("a", "a-1"),
            m("a", "a-0"),
            m("c", "c-0"),
            m("b", "b-1"),
        ];
        let p = run(&ms, &topo(TopologyType::Ring));
        // order: a-0 a-1 b-0 b-1 c-0 (and back to a-0)
        assert_eq!(peer_ids(&p, "a-0"), ["a-1", "c-0"]);
        assert_eq!(peer_ids(&p, "a-1"), ["a-0", "b-0"]);
        assert_eq!(peer_ids(&p, "b-1"), ["b-0", "c-0"]);
        assert_eq!(peer_ids(&p, "c-0"), ["a-0", "b-1"]);
        assert!(p.connectivity.strongly_connected());
        let two = run(&ms[..2], &topo(TopologyType::Ring));
        assert_eq!(peer_ids(&two, "a-1"), ["b-0"]);
    }

    #[test]
    fn explicit_edges_flow_one_way() {
        let ms = [m("eu", "eu-0"), m("us", "us-0"), m("us", "us-1")];
        let p = run(&ms, &explicit(&[("eu", "us")]));
        // receivers pull from the sender; the sender has nothing to do
        assert_eq!(peer(&p, "us-0", "eu-0").unwrap().direction, Direction::Pull);
        assert!(peer_ids(&p, "eu-0").is_empty());
        assert!(
            peer_ids(&p, "us-0") == ["eu-0"],
            "members of one SyncPeer are not linked"
        );
        assert_eq!(
            p.edges,
            [
                Edge {
                    from: "eu-0".into(),
                    to: "us-0".into(),
                    mode: Mode::Pull
                },
                Edge {
                    from: "eu-0".into(),
                    to: "us-1".into(),
                    mode: Mode::Pull
                },
            ]
        );
        // us changes never reach eu: reported
        let Some(Problem::NotStronglyConnected(cut)) = p.problems.first().cloned() else {
            panic!("{:?}", p.problems)
        };
        assert!(
            cut.iter().all(|c| c.receives && !c.sends)
                || cut.iter().all(|c| !c.receives && c.sends)
        );

        let both = run(&ms, &explicit(&[("eu", "us"), ("us", "eu"), ("us", "us")]));
        assert!(both.problems.is_empty(), "{:?}", both.problems);
        assert_eq!(peer_ids(&both, "us-0"), ["eu-0", "us-1"]);
        assert_eq!(
            peer(&both, "us-0", "eu-0").unwrap().direction,
            Direction::Pull
        );
    }

    #[test]
    fn explicit_to_an_external_node_pushes() {
        let ms = [m("eu", "eu-0"), ext("partner", PeerDirection::Both)];
        let p = run(&ms, &explicit(&[("eu", "partner")]));
        assert_eq!(
            peer(&p, "eu-0", "partner").unwrap().direction,
            Direction::Push
        );
        assert!(!p.configs.contains_key("partner"));

        // a Pull-only external node cannot be pushed to, and cannot pull by itself
        let ms = [m("eu", "eu-0"), ext("src", PeerDirection::Pull)];
        let p = run(&ms, &explicit(&[("eu", "src"), ("src", "eu")]));
        assert!(p.problems.contains(&Problem::Unrealizable {
            from: "eu-0".into(),
            to: "src".into()
        }));
        assert_eq!(peer(&p, "eu-0", "src").unwrap().direction, Direction::Pull);
    }

    #[test]
    fn external_member_direction_limits_flows() {
        // Pull: members pull from it, nothing reaches it
        let ms = [
            m("rag", "rag-0"),
            m("rag", "rag-1"),
            ext("us", PeerDirection::Pull),
        ];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert_eq!(peer(&p, "rag-0", "us").unwrap().direction, Direction::Pull);
        assert!(!p.configs.contains_key("us"));
        assert!(p.edges.iter().all(|e| e.to != "us"));
        assert!(p
            .problems
            .contains(&Problem::NotStronglyConnected(vec![CutOff {
                member: "us".into(),
                receives: false,
                sends: true,
            }])));
        // Both: fully connected through managed members' pulls and pushes
        let ms = [m("rag", "rag-0"), ext("us", PeerDirection::Both)];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert_eq!(peer(&p, "rag-0", "us").unwrap().direction, Direction::Both);
        assert!(p.problems.is_empty());
        // the member's own SyncPeer direction governs what the *external* side would do,
        // which never happens: rag-0 with Push direction still reaches the external node
        let ms = [
            Member {
                direction: PeerDirection::Push,
                ..m("rag", "rag-0")
            },
            ext("us", PeerDirection::Push),
        ];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert_eq!(peer(&p, "rag-0", "us").unwrap().direction, Direction::Push);
        assert!(!p.connectivity.strongly_connected());
    }

    #[test]
    fn two_external_members_never_talk_directly() {
        let ms = [ext("x", PeerDirection::Both), ext("y", PeerDirection::Both)];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert!(p.edges.is_empty() && p.configs.is_empty());
        assert_eq!(p.connectivity.components.len(), 2);
        let ms = [
            ext("x", PeerDirection::Both),
            ext("y", PeerDirection::Both),
            m("r", "r-0"),
        ];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert!(p.connectivity.strongly_connected(), "relayed through r-0");
    }

    #[test]
    fn collections_are_intersected_and_excluded() {
        let ms = [
            Member {
                collections: vec!["docs".into(), "faq".into()],
                ..m("a", "a-0")
            },
            Member {
                collections: vec!["docs".into(), "kb".into()],
                ..m("b", "b-0")
            },
            m("c", "c-0"),
        ];
        let filter = CollectionFilter {
            include: vec![],
            exclude: vec!["kb".into()],
        };
        let p = plan(
            &ms,
            &topo(TopologyType::Mesh),
            &filter,
            &SyncConfig::default(),
        );
        assert_eq!(peer(&p, "a-0", "b-0").unwrap().collections, ["docs"]);
        assert_eq!(peer(&p, "a-0", "c-0").unwrap().collections, ["docs", "faq"]);
        assert_eq!(peer(&p, "b-0", "c-0").unwrap().collections, ["docs"]);
        assert_eq!(peer(&p, "c-0", "a-0").unwrap().collections, ["docs", "faq"]);
        assert!(p.problems.is_empty());

        // nothing in common: no entry at all (an empty list would mean all)
        let ms = [
            Member {
                collections: vec!["x".into()],
                ..m("a", "a-0")
            },
            Member {
                collections: vec!["y".into()],
                ..m("b", "b-0")
            },
        ];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert!(p.configs["a-0"].peers.is_empty());
        assert!(!p.connectivity.strongly_connected());

        // policy include narrows everything
        let filter = CollectionFilter {
            include: vec!["docs".into()],
            exclude: vec![],
        };
        let ms = [m("a", "a-0"), m("b", "b-0")];
        let p = plan(
            &ms,
            &topo(TopologyType::Mesh),
            &filter,
            &SyncConfig::default(),
        );
        assert_eq!(peer(&p, "a-0", "b-0").unwrap().collections, ["docs"]);

        // exclude without knowing the collections: the node filters them out itself
        let filter = CollectionFilter {
            include: vec![],
            exclude: vec!["secret".into()],
        };
        let p = plan(
            &ms,
            &topo(TopologyType::Mesh),
            &filter,
            &SyncConfig::default(),
        );
        assert_eq!(p.configs["a-0"].peers[0].exclude_collections, ["secret"]);
        assert!(p.problems.is_empty());
    }

    #[test]
    fn duplicate_node_ids_and_names_are_reported() {
        let ms = [
            Member {
                node_id: Some("abcd".into()),
                ..m("a", "a-0")
            },
            Member {
                node_id: Some("abcd".into()),
                ..m("a", "a-1")
            },
            Member {
                node_id: Some("1234".into()),
                ..m("b", "b-0")
            },
        ];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert_eq!(
            p.problems,
            [Problem::DuplicateNodeId {
                node_id: "abcd".into(),
                members: vec!["a-0".into(), "a-1".into()]
            }]
        );
        assert_eq!(p.problems[0].reason(), "DuplicateNodeId");
        assert!(p.problems[0].to_string().contains("a-0, a-1"));

        // an external SyncPeer named like a pod of another SyncPeer
        let ms = [m("a", "x"), ext("x", PeerDirection::Both), m("a", "a-1")];
        let p = run(&ms, &topo(TopologyType::Mesh));
        assert!(p.problems.contains(&Problem::DuplicateMemberName {
            name: "x".into(),
            peers: vec!["a".into(), "x".into()]
        }));
        assert_eq!(peer_ids(&p, "a-1"), ["x"]);
        assert_eq!(
            peer(&p, "a-1", "x").unwrap().endpoint,
            "http://x:8090",
            "SyncPeer a sorts first"
        );
    }

    #[test]
    fn problems_read_as_instructions() {
        let cut = Problem::NotStronglyConnected(vec![CutOff {
            member: "us".into(),
            receives: false,
            sends: true,
        }]);
        assert!(cut
            .to_string()
            .contains("us never receives the others' changes"));
        for p in [
            cut,
            Problem::UnknownPeer("x".into()),
            Problem::Unrealizable {
                from: "a".into(),
                to: "b".into(),
            },
            Problem::DuplicateMemberName {
                name: "x".into(),
                peers: vec![],
            },
        ] {
            let r = p.reason();
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()) && r.len() > 3);
        }
    }

    #[test]
    fn configs_validate_on_the_node_side() {
        let ms = [m("a", "a-0"), m("a", "a-1"), m("b", "b-0")];
        let p = run(&ms, &topo(TopologyType::Mesh));
        for c in p.configs.values() {
            c.validate().unwrap();
        }
    }

    // ---- properties -------------------------------------------------------------------------

    fn arb_direction() -> impl Strategy<Value = PeerDirection> {
        prop_oneof![
            Just(PeerDirection::Pull),
            Just(PeerDirection::Push),
            Just(PeerDirection::Both)
        ]
    }

    /// Members with unique names from up to 4 SyncPeers; some external, mixed directions.
    fn arb_members(max: usize) -> impl Strategy<Value = Vec<Member>> {
        prop::collection::vec(
            (
                0..4usize,
                arb_direction(),
                any::<bool>(),
                prop::option::of(0..6u8),
            ),
            0..max,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (p, direction, managed, coll))| Member {
                    peer: format!("p{p}"),
                    name: format!("m{i}"),
                    endpoint: format!("http://10.0.0.{i}:8090"),
                    node_id: Some(format!("{:04x}", i % 7)),
                    direction,
                    collections: coll
                        .map(|c| vec![format!("c{}", c % 3)])
                        .unwrap_or_default(),
                    managed,
                })
                .collect()
        })
    }

    fn arb_topology() -> impl Strategy<Value = Topology> {
        let names = prop::collection::vec(0..5usize, 0..4);
        let edges = prop::collection::vec((0..5usize, 0..5usize), 0..6);
        (0..4u8, names, edges).prop_map(|(t, hubs, edges)| Topology {
            type_: [
                TopologyType::Mesh,
                TopologyType::HubAndSpoke,
                TopologyType::Ring,
                TopologyType::Explicit,
            ][t as usize],
            hubs: hubs.into_iter().map(|h| format!("p{h}")).collect(),
            edges: edges
                .into_iter()
                .map(|(f, t)| TopologyEdge {
                    from: format!("p{f}"),
                    to: format!("p{t}"),
                })
                .collect(),
        })
    }

    fn all_managed(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| m(&format!("p{}", i % 3), &format!("m{i:02}")))
            .collect()
    }

    proptest! {
        // Failures print their minimal input; no regression files are written into the tree.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mesh_is_strongly_connected(n in 1usize..20) {
            let p = run(&all_managed(n), &topo(TopologyType::Mesh));
            prop_assert!(p.connectivity.strongly_connected(), "{:?}", p.connectivity);
            prop_assert!(p.problems.is_empty());
            for c in p.configs.values() {
                prop_assert_eq!(c.peers.len(), n - 1);
            }
        }

        /// With directions, a managed mesh only breaks when it has sinks (`Push`: the others
        /// push to it) and sources (`Pull`: the others pull from it) but nothing in between:
        /// no sink can then reach a source.
        #[test]
        fn mesh_with_directions_breaks_only_between_sinks_and_sources(
            n in 1usize..20,
            dirs in prop::collection::vec(arb_direction(), 20),
        ) {
            let ms: Vec<Member> = all_managed(n)
                .into_iter()
                .zip(dirs)
                .map(|(m, direction)| Member { direction, ..m })
                .collect();
            let has = |d| ms.iter().any(|m| m.direction == d);
            let broken = has(PeerDirection::Push) && has(PeerDirection::Pull) && !has(PeerDirection::Both);
            let p = run(&ms, &topo(TopologyType::Mesh));
            prop_assert_eq!(p.connectivity.strongly_connected(), !broken, "{:?}", p.connectivity);
            for c in p.configs.values() {
                // A member may have nothing to do with a peer that pulls from it and pushes
                // to it; never more than one entry per other member.
                prop_assert!(c.peers.len() < n.max(1));
            }
            // Never both a pull and a push for the same ordered pair.
            for e in &p.edges {
                let twin = p.edges.iter().filter(|x| x.from == e.from && x.to == e.to).count();
                prop_assert_eq!(twin, 1, "{:?}", e);
            }
        }

        #[test]
        fn ring_gives_each_member_two_neighbours(n in 3usize..30) {
            let p = run(&all_managed(n), &topo(TopologyType::Ring));
            for c in p.configs.values() {
                prop_assert_eq!(c.peers.len(), 2);
            }
            prop_assert!(p.connectivity.strongly_connected());
        }

        #[test]
        fn hub_and_spoke_with_a_hub_member_is_strongly_connected(n in 1usize..20) {
            let p = run(&all_managed(n), &hub(&["p0"]));
            prop_assert!(p.connectivity.strongly_connected());
            for (name, c) in &p.configs {
                let i: usize = name[1..].parse().unwrap();
                if !i.is_multiple_of(3) {
                    // spokes talk to hub members only
                    for peer in &c.peers {
                        let j: usize = peer.peer_id[1..].parse().unwrap();
                        prop_assert_eq!(j % 3, 0);
                    }
                }
            }
        }

        #[test]
        fn output_is_invariant_under_input_permutation(
            ms in arb_members(12),
            t in arb_topology(),
            seed in any::<u64>(),
        ) {
            let mut shuffled = ms.clone();
            // a deterministic Fisher-Yates driven by the seed
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut t2 = t.clone();
            t2.hubs.reverse();
            t2.edges.reverse();
            let filter = CollectionFilter { include: vec![], exclude: vec!["c2".into()] };
            let a = plan(&ms, &t, &filter, &SyncConfig::default());
            let b = plan(&shuffled, &t2, &filter, &SyncConfig::default());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn edges_and_configs_are_consistent(ms in arb_members(12), t in arb_topology()) {
            let p = run(&ms, &t);
            let names: BTreeSet<&str> = ms.iter().map(|m| m.name.as_str()).collect();
            for e in &p.edges {
                prop_assert_ne!(&e.from, &e.to, "self edge");
                prop_assert!(names.contains(e.from.as_str()) && names.contains(e.to.as_str()));
                // the driver is managed and lists the other side with a matching direction
                let (other, want_pull) = match e.mode {
                    Mode::Pull => (&e.from, true),
                    Mode::Push => (&e.to, false),
                };
                let entry = p.configs[e.driver()].peers.iter().find(|c| &c.peer_id == other);
                let entry = entry.expect("edge without config entry");
                let ok = if want_pull { entry.direction.pulls() } else { entry.direction.pushes() };
                prop_assert!(ok, "edge {:?} not carried by {:?}", e, entry);
            }
            for (name, c) in &p.configs {
                prop_assert!(ms.iter().any(|m| &m.name == name && m.managed), "config for an unmanaged member");
                let ids: BTreeSet<&str> = c.peers.iter().map(|p| p.peer_id.as_str()).collect();
                prop_assert_eq!(ids.len(), c.peers.len(), "duplicate peer ids");
                prop_assert!(!ids.contains(name.as_str()), "member lists itself");
                prop_assert!(c.peers.windows(2).all(|w| w[0].peer_id < w[1].peer_id), "peers not sorted");
            }
            prop_assert!(p.edges.windows(2).all(|w| w[0] < w[1]), "edges not sorted and unique");
            // the components partition the members
            let mut all: Vec<&str> = p.connectivity.components.iter().flatten().map(String::as_str).collect();
            all.sort();
            prop_assert_eq!(all, names.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(
                p.connectivity.strongly_connected(),
                !p.problems.iter().any(|x| matches!(x, Problem::NotStronglyConnected(_)))
            );
        }

        #[test]
        fn cut_off_flags_match_reachability(ms in arb_members(10), t in arb_topology()) {
            let p = run(&ms, &t);
            // brute-force reachability over the edges
            let names: Vec<String> = {
                let s: BTreeSet<String> = ms.iter().map(|m| m.name.clone()).collect();
                s.into_iter().collect()
            };
            let reach = |from: &str| -> BTreeSet<String> {
                let mut r = BTreeSet::from([from.to_string()]);
                loop {
                    let before = r.len();
                    for e in &p.edges {
                        if r.contains(&e.from) { r.insert(e.to.clone()); }
                    }
                    if r.len() == before { return r; }
                }
            };
            let all_reach_all = names.iter().all(|a| reach(a).len() == names.len());
            prop_assert_eq!(all_reach_all, p.connectivity.strongly_connected());
            let cut: BTreeSet<&String> = p.connectivity.cut_off.iter().map(|c| &c.member).collect();
            let main: Vec<&Vec<String>> = p
                .connectivity
                .components
                .iter()
                .filter(|c| c.iter().all(|m| !cut.contains(m)))
                .collect();
            prop_assert_eq!(main.len(), usize::from(!names.is_empty()), "exactly one main group");
            if let Some(main) = main.first() {
                prop_assert!(p.connectivity.components.iter().all(|c| c.len() <= main.len()));
                let rep = &main[0];
                for c in &p.connectivity.cut_off {
                    prop_assert_eq!(c.receives, reach(rep).contains(&c.member));
                    prop_assert_eq!(c.sends, reach(&c.member).contains(rep));
                }
            }
        }
    }
}
