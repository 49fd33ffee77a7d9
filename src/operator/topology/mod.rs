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
//!   every member of `to` (a Sparse source to its receiver likewise): the receiver pulls
//!   when it is managed and the sender may be pulled from, otherwise the sender pushes when it
//!   is managed and the receiver may be pushed to.
//! - A pair exchanges the collections in the policy's `include` (empty: all) that both
//!   SyncPeers list (empty: all), minus the policy's `exclude`; a pair with nothing in common
//!   gets no peer entry at all (an empty list would mean "all" to the node).
//!
//! Sparse (`fanout` f): every member gets a stable 64-bit position, the first 8 bytes of the
//! SHA-256 of its name (the same on every platform and operator version). Sorted by position
//! the members form a ring, and each receives from its ring predecessor: a directed cycle
//! through everyone, so the plan is strongly connected whatever the names. Each member also
//! receives from the f - 1 others with the highest rendezvous (HRW) score
//! `mix(receiver, source)`, its predecessor and itself aside, so it has exactly min(f, n - 1)
//! sources. HRW bounds the churn: a member joining changes the ring in 3 edges, gets its own
//! f sources, and enters about f - 1 others' choices (each evicting one); apart from its ring
//! successor (whose predecessor, never among its choices, changes) nobody else's choices
//! move. Leaving is the reverse. And a digraph whose members pick their sources at
//! random has a diameter of about log_f(n) (each hop multiplies the members reached by about
//! f), where the ring alone would need n - 1 hops.
//!
//! HubAndSpoke: the hub members (members of the hub SyncPeers) mesh among themselves, and each
//! spoke links with the min(2, hub members) hub members of the highest rendezvous score
//! `mix(spoke, hub)`, so adding a hub member moves only about 2/(hubs + 1) of the spokes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest, Sha256};

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
    /// The IP address the endpoint's host name stands for, when the operator knows it (a
    /// pod named by its DNS name); peers connect there without a DNS lookup.
    pub address: Option<std::net::IpAddr>,
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
    /// An Explicit or Sparse edge between two members that neither can carry (both external, or the
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

/// Above this many members a Mesh is reported as [`Warning::LargeMesh`].
pub const LARGE_MESH: usize = 32;

/// A plan that works but is costly; the controller tells these as Warning events, they do not
/// make the policy `Degraded`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    /// A Mesh of more than [`LARGE_MESH`] members: `edges` grows with the square of `members`.
    LargeMesh { members: usize, edges: usize },
}

impl Warning {
    /// An event reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Warning::LargeMesh { .. } => "LargeMesh",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::LargeMesh { members, edges } => write!(
                f,
                "Mesh of {members} members syncs over {edges} edges (every member with every other); \
                 consider `topology: {{type: Sparse, fanout: 3}}`: {} edges, each member receiving \
                 from 3 others, strongly connected",
                members * 3
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
    /// Sorted; what works but costs more than it should.
    pub warnings: Vec<Warning>,
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
            let (hub_members, spokes): (Vec<usize>, Vec<usize>) =
                (0..n).partition(|&i| hubs.contains(ms[i].peer.as_str()));
            for (k, &i) in hub_members.iter().enumerate() {
                for &j in &hub_members[k + 1..] {
                    links.insert((i, j));
                }
            }
            let pos: Vec<u64> = ms.iter().map(|m| position(&m.name)).collect();
            for s in spokes {
                for h in top_scored(&pos, &ms, s, hub_members.iter().copied(), 2) {
                    links.insert((s.min(h), s.max(h)));
                }
            }
        }
        TopologyType::Sparse => {
            flows.extend(sparse_flows(&ms, topology.fanout()));
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
            address: ms[other].address,
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

    let mut warnings = Vec::new();
    if topology.type_ == TopologyType::Mesh && n > LARGE_MESH {
        warnings.push(Warning::LargeMesh {
            members: n,
            edges: edges.len(),
        });
    }

    Plan {
        edges: edges.into_iter().collect(),
        configs,
        connectivity,
        problems: problems.into_iter().collect(),
        warnings,
    }
}

/// A member's stable position: the first 8 bytes of the SHA-256 of its name, big-endian.
pub fn position(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// The splitmix64 finalizer: a cheap, stable, well-mixing bijection on `u64`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rendezvous score of `candidate` for `chooser`, from their positions.
fn score(chooser: u64, candidate: u64) -> u64 {
    mix(chooser ^ mix(candidate))
}

/// The (at most) `k` of `candidates` with the highest score for `chooser` (ties, which take a
/// 64-bit collision, go to the smaller name), in no particular order.
fn top_scored(
    pos: &[u64],
    ms: &[&Member],
    chooser: usize,
    candidates: impl Iterator<Item = usize>,
    k: usize,
) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = candidates
        .map(|c| (score(pos[chooser], pos[c]), c))
        .collect();
    let order = |a: &(u64, usize), b: &(u64, usize)| {
        b.0.cmp(&a.0).then_with(|| ms[a.1].name.cmp(&ms[b.1].name))
    };
    if k == 0 {
        return Vec::new();
    }
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.into_iter().map(|(_, c)| c).collect()
}

/// Sparse flows `(from, to)` by member index: each member receives from its predecessor on
/// the ring of positions and from the `fanout - 1` others of the highest score (module doc).
fn sparse_flows(ms: &[&Member], fanout: usize) -> Vec<(usize, usize)> {
    let n = ms.len();
    if n < 2 {
        return Vec::new();
    }
    let pos: Vec<u64> = ms.iter().map(|m| position(&m.name)).collect();
    let mut ring: Vec<usize> = (0..n).collect();
    ring.sort_by(|&a, &b| {
        pos[a]
            .cmp(&pos[b])
            .then_with(|| ms[a].name.cmp(&ms[b].name))
    });
    let mut flows = Vec::with_capacity(n * fanout.min(n - 1));
    for (k, &to) in ring.iter().enumerate() {
        let pred = ring[(k + n - 1) % n];
        flows.push((pred, to));
        let others = (0..n).filter(|&c| c != to && c != pred);
        let picks = top_scored(&pos, ms, to, others, fanout.saturating_sub(1));
        flows.extend(picks.into_iter().map(|from| (from, to)));
    }
    flows
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
mod tests;
