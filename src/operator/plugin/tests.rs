//! The plugin's pure parts: members and targets, edge derivation, backlog views and their
//! order, conflict deduplication, and the rendered tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use serde_json::json;

use crate::config::Direction;
use crate::hlc::Hlc;
use crate::model::{ConflictVersion, Kind, NodeId, Value, Version, VersionVector};
use crate::operator::crd::{SyncPeer, SyncPolicy};
use crate::operator::topology::Mode;
use crate::wire::{Backlog, ConflictEntry, NodeStatus, PeerStatus, PullerStatus};

use super::render;
use super::view::*;

const NOW: u64 = 1_800_000_000_000;
const NOT_A_MEMBER_FOR_TESTS: &str = "not a member now (the pod is not ready or has no IP)";

fn hlc(ms: u64) -> Hlc {
    Hlc::new(ms, 0)
}

fn peer(name: &str, spec: serde_json::Value, members: serde_json::Value) -> SyncPeer {
    serde_json::from_value(json!({
        "apiVersion": "ragsync.io/v1alpha1", "kind": "SyncPeer",
        "metadata": {"name": name, "namespace": "rag"},
        "spec": spec,
        "status": {"members": members},
    }))
    .unwrap()
}

#[test]
fn members_come_from_the_peers_status_with_where_to_read_them() {
    let spokes = peer(
        "spokes",
        json!({"selector": {"matchLabels": {"role": "spoke"}}, "port": 9000}),
        json!([
            {"pod": "rag-1", "nodeId": "0001", "endpoint": "http://10.0.0.1:9000", "ready": true,
             "watermark": "0000000000000010", "conflicts": 2, "lagSeconds": 3, "pendingChanges": 4},
            {"pod": "rag-2", "ready": false, "lastError": "pod is not ready or has no IP; left out of the topology"},
        ]),
    );
    let hub = peer(
        "hub",
        json!({"selector": {"matchLabels": {"role": "hub"}}}),
        json!([{"pod": "rag-0", "endpoint": "http://10.0.0.9:8090", "ready": true}]),
    );
    let ext = peer(
        "us",
        json!({"endpoint": "https://rag.us.example.com:8090/"}),
        json!([]),
    );
    let ms = members(&[spokes.clone(), ext, hub], None);
    let names: Vec<(&str, &str)> = ms
        .iter()
        .map(|m| (m.view.peer.as_str(), m.view.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("hub", "rag-0"),
            ("spokes", "rag-1"),
            ("spokes", "rag-2"),
            ("us", "us")
        ],
        "peers by name, each peer's members in status order"
    );
    assert_eq!(
        ms[0].target,
        Target::Pod {
            pod: "rag-0".into(),
            port: 8090,
            endpoint: Some("http://10.0.0.9:8090".into())
        },
        "the default port"
    );
    assert_eq!(
        ms[1].target,
        Target::Pod {
            pod: "rag-1".into(),
            port: 9000,
            endpoint: Some("http://10.0.0.1:9000".into())
        },
        "the port from the SyncPeer's spec"
    );
    assert!(matches!(&ms[2].target, Target::Skip(why) if why.contains("not ready")));
    assert_eq!(
        ms[3].target,
        Target::External {
            endpoint: "https://rag.us.example.com:8090".into()
        }
    );
    assert!(ms[3].view.external);
    let m1 = &ms[1].view;
    assert_eq!(
        (m1.ready, m1.conflicts, m1.lag_seconds, m1.pending_changes),
        (true, 2, 3, 4)
    );
    assert_eq!(m1.node, NodeRead::NotRead);

    let empty = peer(
        "new",
        json!({"selector": {"matchLabels": {"a": "b"}}}),
        json!([]),
    );
    let peers = [empty, spokes];
    assert_eq!(
        peers_without_members(&peers, &members(&peers, None)),
        ["new"]
    );
}

fn pod(name: &str, labels: serde_json::Value, ip: &str, ready: bool) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "rag", "labels": labels},
            "status": {"podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap(),
    )
}

#[test]
fn with_the_pods_members_are_decided_as_the_operator_does() {
    // Status lists rag-1 only (bounded, or not refreshed yet); rag-3 is a member all the same.
    let spokes = peer(
        "spokes",
        json!({"selector": {"matchLabels": {"role": "spoke"}}, "port": 9000}),
        json!([{"pod": "rag-1", "nodeId": "0001", "endpoint": "http://10.0.0.1:9000",
                "ready": false, "lastError": "with rag-0: peer unreachable", "lagSeconds": 7},
               {"pod": "gone", "endpoint": "http://10.0.0.99:9000", "ready": true}]),
    );
    let ext = peer(
        "us",
        json!({"endpoint": "https://rag.us.example.com:8090"}),
        json!([]),
    );
    let hub = peer(
        "hub",
        json!({"selector": {"matchLabels": {"role": "hub"}}}),
        json!([]),
    );
    let pods = [
        pod("rag-3", json!({"role": "spoke"}), "10.0.0.3", true),
        pod("rag-1", json!({"role": "spoke"}), "10.0.0.1", true),
        pod("rag-2", json!({"role": "spoke"}), "10.0.0.2", false),
        pod("other", json!({"role": "web"}), "10.0.0.4", true),
    ];
    let ms = members(&[spokes.clone(), ext, hub.clone()], Some(&pods));
    let got: Vec<(&str, &str, &Target)> = ms
        .iter()
        .map(|m| (m.view.peer.as_str(), m.view.name.as_str(), &m.target))
        .collect();
    let pod_target = |pod: &str, ip: &str| Target::Pod {
        pod: pod.into(),
        port: 9000,
        endpoint: Some(format!("http://{ip}:9000")),
    };
    assert_eq!(
        got,
        [
            ("spokes", "rag-1", &pod_target("rag-1", "10.0.0.1")),
            (
                "spokes",
                "rag-2",
                &Target::Skip(NOT_A_MEMBER_FOR_TESTS.into())
            ),
            ("spokes", "rag-3", &pod_target("rag-3", "10.0.0.3")),
            (
                "us",
                "us",
                &Target::External {
                    endpoint: "https://rag.us.example.com:8090".into()
                }
            ),
        ],
        "the hub selects no pod; `gone` is no pod any more"
    );
    // Joined with status where it has the member; else ready as its pod is.
    let (r1, r2, r3) = (&ms[0].view, &ms[1].view, &ms[2].view);
    assert_eq!((r1.ready, r1.lag_seconds), (false, 7));
    assert_eq!(
        r1.last_error.as_deref(),
        Some("with rag-0: peer unreachable")
    );
    assert_eq!(r1.node_id.as_deref(), Some("0001"));
    assert!(!r2.ready);
    assert!(r3.ready && r3.node_id.is_none() && r3.last_error.is_none());
    assert_eq!(peers_without_members(&[spokes, hub], &ms), ["hub"]);
}

fn node(id: u16, wall_ms: u64, peers: Vec<PeerStatus>, pullers: Vec<PullerStatus>) -> NodeStatus {
    NodeStatus {
        node_id: NodeId(id),
        incarnation: "i".into(),
        watermark: hlc(wall_ms),
        applied: BTreeMap::new(),
        gc_horizon: None,
        documents: 7,
        tombstones: 0,
        conflicts: 1,
        superseded: 0,
        checkpoint_pending: false,
        wall_ms,
        max_clock_drift_ms: 500,
        peers,
        pullers,
        config_digest: None,
    }
}

fn peer_status(id: &str, direction: Direction) -> PeerStatus {
    PeerStatus {
        peer_id: id.into(),
        endpoint: format!("http://{id}"),
        direction,
        ..Default::default()
    }
}

fn backlog(pending: u64, oldest_ms: u64) -> Backlog {
    Backlog {
        pending,
        oldest: (pending > 0).then(|| hlc(oldest_ms)),
    }
}

fn puller(id: u16, b: Backlog) -> PullerStatus {
    PullerStatus {
        node_id: NodeId(id),
        since: Hlc::ZERO,
        collections: Vec::new(),
        last_seen_ms: NOW,
        backlog: b,
    }
}

#[test]
fn edges_are_derived_from_each_members_own_status() {
    // a pulls from b; b pulls from a and pushes to the external x; c pulls from "gone", which
    // was not read.
    let mut a_pulls_b = peer_status("b", Direction::Pull);
    a_pulls_b.checkpoint = Some(hlc(100));
    let mut b_pulls_a = peer_status("a", Direction::Pull);
    b_pulls_a.checkpoint = Some(hlc(200));
    b_pulls_a.collections = vec!["docs".into()];
    let mut b_pushes_x = peer_status("x", Direction::Push);
    b_pushes_x.push_checkpoint = Some(hlc(300));
    let nodes: BTreeMap<String, NodeStatus> = [
        ("a".to_string(), node(1, NOW, vec![a_pulls_b], vec![])),
        (
            "b".to_string(),
            node(
                2,
                NOW - 5,
                vec![b_pulls_a, b_pushes_x],
                // b serves a (node 1): its status says how far a is.
                vec![puller(1, backlog(3, NOW - 2_000))],
            ),
        ),
        (
            "c".to_string(),
            node(3, NOW, vec![peer_status("gone", Direction::Both)], vec![]),
        ),
    ]
    .into();
    let edges = derive_edges(&nodes);
    let got: Vec<(&str, &str, Mode, &BacklogSource)> = edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.mode, &e.backlog))
        .collect();
    assert_eq!(
        got,
        [
            // a pulls from b: b's status has a puller entry for node 1.
            (
                "b",
                "a",
                Mode::Pull,
                &BacklogSource::Served(backlog(3, NOW - 2_000))
            ),
            // b pulls from a: a reports no pullers (an older node): ask a from b's checkpoint.
            (
                "a",
                "b",
                Mode::Pull,
                &BacklogSource::Ask {
                    since: Some(hlc(200)),
                    collections: vec!["docs".into()]
                }
            ),
            // b pushes to x without a push_backlog: ask b from its push checkpoint.
            (
                "b",
                "x",
                Mode::Push,
                &BacklogSource::Ask {
                    since: Some(hlc(300)),
                    collections: vec![]
                }
            ),
            (
                "gone",
                "c",
                Mode::Pull,
                &BacklogSource::Unknown("gone was not read".into())
            ),
            // c pushes to gone (Both): c is the sender, it was read.
            (
                "c",
                "gone",
                Mode::Push,
                &BacklogSource::Ask {
                    since: None,
                    collections: vec![]
                }
            ),
        ]
    );
    // The sender's clock ages the backlog; an unread sender has none.
    assert_eq!(edges[0].sender_wall_ms, Some(NOW - 5));
    assert_eq!(edges[3].sender_wall_ms, None);

    // With push_backlog reported, the push edge is served.
    let mut pushes = peer_status("x", Direction::Push);
    pushes.push_backlog = Some(backlog(9, NOW - 60_000));
    let nodes: BTreeMap<String, NodeStatus> =
        [("b".to_string(), node(2, NOW, vec![pushes], vec![]))].into();
    assert_eq!(
        derive_edges(&nodes)[0].backlog,
        BacklogSource::Served(backlog(9, NOW - 60_000))
    );
    assert!(derive_edges(&BTreeMap::new()).is_empty());
}

fn plan(from: &str, to: &str, wall: Option<u64>) -> EdgePlan {
    EdgePlan {
        from: from.into(),
        to: to.into(),
        mode: Mode::Pull,
        backlog: BacklogSource::Unknown(String::new()),
        sender_wall_ms: wall,
    }
}

#[test]
fn an_edges_lag_is_the_age_of_its_oldest_pending_change_on_the_senders_clock() {
    let v = edge_view(
        &plan("a", "b", Some(NOW)),
        Measured::Served(backlog(3, NOW - 42_500)),
        NOW + 3_600_000,
    );
    assert_eq!(
        (v.pending_changes, v.lag_ms, v.source),
        (Some(3), Some(42_500), "status"),
        "aged with the sender's clock, not the local one"
    );
    assert_eq!(v.oldest, Some(hlc(NOW - 42_500)));
    let v = edge_view(
        &plan("a", "b", None),
        Measured::Asked(backlog(1, NOW - 1_000)),
        NOW,
    );
    assert_eq!((v.lag_ms, v.source), (Some(1_000), "backlog"));
    let v = edge_view(&plan("a", "b", None), Measured::Asked(backlog(0, 0)), NOW);
    assert_eq!(
        (v.pending_changes, v.lag_ms, v.oldest),
        (Some(0), Some(0), None)
    );
    let v = edge_view(
        &plan("a", "b", None),
        Measured::Unknown("a was not read".into()),
        NOW,
    );
    assert_eq!(
        (v.pending_changes, v.lag_ms, v.source),
        (None, None, "unknown")
    );
    assert_eq!(v.unknown_reason.as_deref(), Some("a was not read"));
}

fn ev(from: &str, pending: Option<u64>, lag_ms: u64) -> EdgeView {
    EdgeView {
        from: from.into(),
        to: "z".into(),
        mode: "Pull",
        pending_changes: pending,
        lag_ms: pending.map(|_| lag_ms),
        oldest: None,
        source: if pending.is_some() {
            "status"
        } else {
            "unknown"
        },
        unknown_reason: pending.is_none().then(|| "x".to_string()),
    }
}

#[test]
fn edges_sort_worst_first_then_unknown_then_idle() {
    let mut edges = vec![
        ev("idle", Some(0), 0),
        ev("unknown", None, 0),
        ev("small", Some(1), 500),
        ev("old", Some(2), 90_000),
        ev("many", Some(50), 500),
        ev("another-idle", Some(0), 0),
    ];
    sort_worst_first(&mut edges);
    let order: Vec<&str> = edges.iter().map(|e| e.from.as_str()).collect();
    assert_eq!(
        order,
        ["old", "many", "small", "unknown", "another-idle", "idle"]
    );
}

fn entry(id: &str, winner: (u64, u16), losers: &[(u64, u16)]) -> ConflictEntry {
    ConflictEntry {
        collection: "docs".into(),
        kind: Kind::Document,
        id: id.into(),
        winner: Version {
            hlc: hlc(winner.0),
            node: NodeId(winner.1),
            vv: VersionVector::default(),
        },
        losers: losers
            .iter()
            .map(|(ms, n)| ConflictVersion {
                hlc: hlc(*ms),
                node: NodeId(*n),
                value: Value::Deleted,
            })
            .collect(),
    }
}

#[test]
fn conflicts_held_by_several_members_are_one_row() {
    let writers: BTreeMap<NodeId, String> = [
        (NodeId(1), "rag-1".to_string()),
        (NodeId(2), "rag-2".to_string()),
    ]
    .into();
    let per_member = vec![
        (
            "rag-0".to_string(),
            vec![entry("d", (NOW, 2), &[(NOW - 5, 1), (NOW - 9, 3)])],
        ),
        // The same conflict, losers listed in another order.
        (
            "rag-1".to_string(),
            vec![
                entry("d", (NOW, 2), &[(NOW - 9, 3), (NOW - 5, 1)]),
                entry("a", (NOW, 1), &[(NOW - 1, 2)]),
            ],
        ),
        // A member that has not received the latest loser yet: its own view, its own row.
        (
            "rag-2".to_string(),
            vec![entry("d", (NOW, 2), &[(NOW - 5, 1)])],
        ),
    ];
    let rows = dedupe_conflicts(&per_member, &writers);
    let got: Vec<(&str, usize, Vec<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.losers.len(),
                r.members.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a", 1, vec!["rag-1"]),
            ("d", 1, vec!["rag-2"]),
            ("d", 2, vec!["rag-0", "rag-1"]),
        ]
    );
    let d = &rows[2];
    assert_eq!(d.winner.who(), "rag-2");
    assert_eq!(d.winner.time, "2027-01-15T08:00:00.000Z");
    assert_eq!(
        d.losers.iter().map(VersionView::who).collect::<Vec<_>>(),
        ["rag-1", "0003"],
        "newest loser first; an unknown writer by node id"
    );
    assert!(dedupe_conflicts(&[], &writers).is_empty());
}

#[test]
fn writers_are_named_from_status_and_live_reads() {
    let mut a = members(
        &[peer(
        "p",
        json!({"selector": {"matchLabels": {"a": "b"}}}),
        json!([{"pod": "rag-0", "nodeId": "00aa", "endpoint": "http://e"}, {"pod": "rag-1", "endpoint": "http://f"}]),
    )],
        None,
    )
    .into_iter()
    .map(|m| m.view)
    .collect::<Vec<_>>();
    a[1].node = NodeRead::of(&node(0xbb, NOW, vec![], vec![]));
    let w = writers(&a);
    assert_eq!(w.get(&NodeId(0xaa)).map(String::as_str), Some("rag-0"));
    assert_eq!(w.get(&NodeId(0xbb)).map(String::as_str), Some("rag-1"));
}

fn policy() -> SyncPolicy {
    serde_json::from_value(json!({
        "apiVersion": "ragsync.io/v1alpha1", "kind": "SyncPolicy",
        "metadata": {"name": "docs", "namespace": "rag", "generation": 3},
        "spec": {"peerSelector": {"matchLabels": {"ragsync.io/policy": "docs"}},
                 "topology": {"type": "HubAndSpoke", "hubs": ["hub"]}, "interval": "30s"},
        "status": {"members": 3, "readyMembers": 2, "maxLagSeconds": 12, "conflicts": 4,
                   "observedGeneration": 2,
                   "conditions": [{"type": "Ready", "status": "False", "reason": "NodeUnreachable",
                                   "message": "1 of 3 members not ready",
                                   "lastTransitionTime": "2027-01-15T08:00:00Z"}]},
    }))
    .unwrap()
}

#[test]
fn the_status_report_frame_comes_from_the_policy() {
    let r = StatusReport::of_policy(&policy(), Access::Direct);
    assert_eq!((r.namespace.as_str(), r.policy.as_str()), ("rag", "docs"));
    assert_eq!(r.interval, "30s");
    assert_eq!(r.totals.members, 3);
    assert_eq!(r.totals.max_lag_seconds, 12);
    assert_eq!(r.conditions[0].reason, "NodeUnreachable");
    assert!(
        r.notes[0].contains("generation 2") && r.notes[0].contains("at 3"),
        "{:?}",
        r.notes
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["topology"],
        json!({"type": "HubAndSpoke", "hubs": ["hub"]})
    );
    assert_eq!(json["access"], "direct");
    assert_eq!(json["conditions"][0]["type"], "Ready");
}

fn report_with_edges(n: usize) -> StatusReport {
    let mut r = StatusReport::of_policy(&policy(), Access::Proxy);
    r.notes.clear();
    let mut ms = members(&[peer(
        "hub",
        json!({"selector": {"matchLabels": {"a": "b"}}}),
        json!([
            {"pod": "rag-0", "nodeId": "00aa", "endpoint": "http://10.0.0.1:8090", "ready": true,
             "watermark": "0000000000000010", "conflicts": 1},
            {"pod": "rag-1", "endpoint": "http://10.0.0.2:8090", "ready": false,
             "lastError": "with rag-0: peer unreachable"},
        ]),
    )], None)
    .into_iter()
    .map(|m| m.view)
    .collect::<Vec<_>>();
    ms[0].node = NodeRead::of(&node(0xaa, NOW, vec![], vec![]));
    ms[1].node = NodeRead::Failed {
        error: "the API server refused the proxy request (400 Bad Request): address not allowed"
            .into(),
    };
    r.members = ms;
    r.edges = (0..n)
        .map(|i| EdgeView {
            from: format!("rag-{i}"),
            to: "rag-0".into(),
            mode: "Pull",
            pending_changes: Some(i as u64),
            lag_ms: Some(i as u64 * 1_500),
            oldest: None,
            source: "status",
            unknown_reason: None,
        })
        .chain(std::iter::once(ev("rag-x", None, 0)))
        .collect();
    r
}

#[test]
fn the_status_table_shows_members_errors_and_the_worst_edges() {
    let mut r = report_with_edges(3);
    live_member_lag(&mut r.members, &r.edges);
    assert_eq!(r.unread(), 1);
    let text = render::status(&r, Some(render::DEFAULT_EDGE_LIMIT));
    println!("{text}");
    for needle in [
        "SyncPolicy rag/docs: HubAndSpoke (hubs: hub), interval 30s",
        "Totals: 3 members, 2 ready, max lag 12s, 4 conflicts",
        "Nodes read through the API server's pod proxy",
        "Ready  False   NodeUnreachable  1 of 3 members not ready",
        "MEMBER  SYNCPEER  NODE-ID  READY  WATERMARK         CONFLICTS  LAG  PENDING  NODE",
        // Read: live (the node's watermark and conflicts, the lag over its incoming edges).
        "rag-0   hub       00aa     true   01a3185c50000000  1          3s   3        ok",
        // Not read: as status reports it.
        "rag-1   hub       -        false  -                 0          0s   0        FAILED",
        "  rag-1: node not read: the API server refused the proxy request (400 Bad Request): address not allowed",
        "  rag-1: last error (status): with rag-0: peer unreachable",
        "Edges (4, worst first",
        "FROM   TO     MODE  PENDING  LAG      SOURCE",
        "rag-2  rag-0  Pull  2        3s       status",
        "rag-x  z      Pull  unknown  unknown  unknown: x",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    assert!(!text.contains("more edges"), "{text}");

    // More edges than the limit: the worst shown and the rest counted.
    let r = report_with_edges(30);
    let text = render::status(&r, Some(render::DEFAULT_EDGE_LIMIT));
    assert!(
        text.contains("  ... and 11 more edges (--all-edges shows them)"),
        "{text}"
    );
    let edge_lines = text.lines().filter(|l| l.contains("  Pull  ")).count();
    assert_eq!(edge_lines, render::DEFAULT_EDGE_LIMIT);
    let all = render::status(&r, None);
    assert_eq!(all.lines().filter(|l| l.contains("  Pull  ")).count(), 31);
    assert!(!all.contains("more edges"));
}

#[test]
fn a_members_live_lag_is_over_its_incoming_edges() {
    let mut ms: Vec<MemberView> = members(
        &[peer(
            "p",
            json!({"selector": {"matchLabels": {"a": "b"}}}),
            json!([{"pod": "a", "endpoint": "http://e"}, {"pod": "b", "endpoint": "http://f"},
               {"pod": "c", "endpoint": "http://g", "lagSeconds": 9}]),
        )],
        None,
    )
    .into_iter()
    .map(|m| m.view)
    .collect();
    for m in &mut ms[..2] {
        m.node = NodeRead::of(&node(1, NOW, vec![], vec![]));
    }
    let mut to_b = ev("x", None, 0);
    to_b.to = "b".into();
    let mut edges = vec![ev("x", Some(4), 2_000), ev("y", Some(1), 7_000), to_b];
    for e in &mut edges[..2] {
        e.to = "a".into();
    }
    live_member_lag(&mut ms, &edges);
    let live = |m: &MemberView| match &m.node {
        NodeRead::Read {
            pending_changes,
            lag_ms,
            ..
        } => (*pending_changes, *lag_ms),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        live(&ms[0]),
        (Some(5), Some(7_000)),
        "summed, the largest lag"
    );
    assert_eq!(live(&ms[1]), (None, None), "an incoming edge is unknown");
    assert_eq!(
        ms[2].node,
        NodeRead::NotRead,
        "not read: status values stay"
    );
    assert_eq!(ms[2].lag_seconds, 9);
}

#[test]
fn the_conflicts_table_lists_versions_and_holders() {
    let writers: BTreeMap<NodeId, String> = [
        (NodeId(1), "rag-1".to_string()),
        (NodeId(2), "rag-2".to_string()),
    ]
    .into();
    let mut collection = entry("docs", (NOW, 1), &[(NOW - 1, 2)]);
    collection.kind = Kind::Collection;
    let rows = dedupe_conflicts(
        &[
            ("rag-1".into(), vec![entry("d1", (NOW, 2), &[(NOW - 1, 1)])]),
            (
                "rag-2".into(),
                vec![entry("d1", (NOW, 2), &[(NOW - 1, 1)]), collection],
            ),
        ],
        &writers,
    );
    let r = ConflictsReport {
        namespace: "rag".into(),
        policy: "docs".into(),
        collection: None,
        access: Access::Direct,
        conflicts: rows,
        members: vec![],
        notes: vec![],
    };
    let text = render::conflicts(&r);
    println!("{text}");
    for needle in [
        "Conflicts retained by the members of SyncPolicy rag/docs\nNodes read directly at their endpoints (--direct)\n",
        "COLLECTION  DOCUMENT    WINNER                          LOSERS                          HELD BY",
        "docs        (settings)  rag-1@2027-01-15T08:00:00.000Z  rag-2@2027-01-15T07:59:59.999Z  rag-2",
        "docs        d1          rag-2@2027-01-15T08:00:00.000Z  rag-1@2027-01-15T07:59:59.999Z  rag-1,rag-2",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["conflicts"][1]["kind"], "document");
    assert_eq!(json["conflicts"][1]["members"], json!(["rag-1", "rag-2"]));
    assert_eq!(json["conflicts"][1]["winner"]["writer"], "rag-2");
}

#[test]
fn tables_align_and_durations_are_short() {
    let t = render::table(
        &["A", "LONGER"],
        &[
            vec!["xyz".into(), "1".into()],
            vec!["q".into(), "22".into()],
        ],
    );
    assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
    for (ms, s) in [
        (0, "0s"),
        (850, "850ms"),
        (12_345, "12.3s"),
        (30_000, "30s"),
        (30_050, "30s"),
        (60_000, "1m"),
        (3_600_000, "1h"),
        (245_000, "4m05s"),
        (7_800_000, "2h10m"),
        (3 * 86_400_000 + 4 * 3_600_000, "3d4h"),
    ] {
        assert_eq!(render::duration_ms(ms), s);
    }
}
