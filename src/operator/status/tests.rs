use super::*;
use crate::model::NodeId;
use crate::operator::crd::{SyncPeer, SyncPeerStatus, SyncPolicyStatus};
use crate::operator::topology::{Connectivity, CutOff, Problem};
use crate::wire::PeerStatus;
use reqwest::{Method, StatusCode};
use serde_json::json;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn stamp(now: &Time) -> Stamp<'_> {
    Stamp {
        generation: Some(3),
        now,
    }
}

/// (status, reason, message) of a condition, what the ladders decide.
fn verdict(c: &Condition) -> (&str, &str, &str) {
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn totals(members: i32, ready: i32) -> Totals {
    Totals {
        members,
        ready_members: ready,
        ..Default::default()
    }
}

fn report(peer: &str, pod: &str, error: Option<(&str, &'static str)>) -> MemberReport {
    MemberReport {
        peer: peer.into(),
        status: MemberStatus {
            pod: pod.into(),
            ready: error.is_none(),
            last_error: error.map(|(e, _)| e.to_string()),
            ..Default::default()
        },
        error_reason: error.map(|(_, r)| r),
    }
}

fn answered(code: Option<&str>, message: &str) -> NodeError {
    NodeError::Answered {
        method: Method::GET,
        url: "http://10.0.0.1:8090/admin/status".into(),
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: code.map(str::to_string),
        message: message.into(),
    }
}

fn node(conflicts: u64, peers: Vec<PeerStatus>) -> NodeStatus {
    NodeStatus {
        node_id: NodeId(0xa),
        incarnation: "i1".into(),
        watermark: Hlc::new(5_000, 1),
        applied: BTreeMap::from([(NodeId(0xb), Hlc(70)), (NodeId(0xc), Hlc(40))]),
        gc_horizon: None,
        documents: 0,
        tombstones: 0,
        conflicts,
        superseded: 0,
        checkpoint_pending: false,
        wall_ms: 0,
        max_clock_drift_ms: 0,
        peers,
        pullers: Vec::new(),
        config_digest: None,
    }
}

fn managed(name: &str) -> Member {
    Member {
        peer: "pods".into(),
        name: name.into(),
        endpoint: format!("http://{name}:8090"),
        address: None,
        node_id: Some("000a".into()),
        direction: Default::default(),
        collections: Vec::new(),
        managed: true,
    }
}

fn observed(member: Member, node: Result<NodeStatus, NodeError>) -> Observed {
    Observed {
        member,
        node,
        config: None,
    }
}

fn edge(from: &str, to: &str, mode: Mode) -> Edge {
    Edge {
        from: from.into(),
        to: to.into(),
        mode,
    }
}

fn plan(connected: bool, problems: Vec<Problem>) -> Plan {
    Plan {
        edges: Vec::new(),
        configs: BTreeMap::new(),
        connectivity: Connectivity {
            components: if connected {
                vec![vec!["a".into(), "b".into()]]
            } else {
                vec![vec!["a".into()], vec!["b".into()]]
            },
            cut_off: Vec::new(),
        },
        problems,
        warnings: Vec::new(),
    }
}

#[test]
fn node_errors_are_classified_by_their_code_not_their_text() {
    let timed_out = NodeError::TimedOut {
        method: Method::GET,
        url: "http://embedding-0:8090/admin/status".into(),
    };
    let unreachable = NodeError::Unreachable {
        method: Method::GET,
        url: "http://n".into(),
        detail: "connection refused".into(),
    };
    assert_eq!(node_error_reason(&timed_out), reason::NODE_UNREACHABLE);
    assert_eq!(node_error_reason(&unreachable), reason::NODE_UNREACHABLE);
    assert_eq!(
        node_error_reason(&answered(Some("clock_drift"), "remote HLC is ahead")),
        reason::CLOCK_DRIFT
    );
    assert_eq!(
        node_error_reason(&answered(Some("embedding_mismatch"), "models differ")),
        reason::EMBEDDING_MISMATCH
    );
    // The code decides, whatever the message says.
    assert_eq!(
        node_error_reason(&answered(Some("unauthorized"), "clock drift timed out")),
        reason::SYNC_FAILED
    );
    assert_eq!(
        node_error_reason(&answered(None, "<html>embedding</html>")),
        reason::SYNC_FAILED
    );
    let unexpected = NodeError::Unexpected {
        method: Method::GET,
        url: "http://n".into(),
        detail: "missing field".into(),
    };
    assert_eq!(node_error_reason(&unexpected), reason::SYNC_FAILED);
}

#[test]
fn peer_errors_are_classified_by_the_text_the_node_reports() {
    let cases = [
        (
            "clock drift: remote HLC 0000000100000000 is 900 ms ahead",
            reason::CLOCK_DRIFT,
        ),
        (
            "embedding settings differ for docs",
            reason::EMBEDDING_MISMATCH,
        ),
        (
            "peer b (http://b): GET /sync/watermark: connection failed: x",
            reason::NODE_UNREACHABLE,
        ),
        ("peer b: timed out: x", reason::NODE_UNREACHABLE),
        ("peer b: unreachable", reason::NODE_UNREACHABLE),
        (
            "peer b: pull stopped at a refused change",
            reason::SYNC_FAILED,
        ),
    ];
    for (message, want) in cases {
        assert_eq!(peer_error_reason(None, message), want, "{message}");
    }
}

#[test]
fn peer_errors_with_a_code_are_classified_by_it_not_their_text() {
    let cases = [
        (Some("clock_drift"), reason::CLOCK_DRIFT),
        (Some("embedding_mismatch"), reason::EMBEDDING_MISMATCH),
        (Some("peer_unreachable"), reason::NODE_UNREACHABLE),
        (Some("peer_error"), reason::SYNC_FAILED),
        (Some("storage_error"), reason::SYNC_FAILED),
    ];
    for (code, want) in cases {
        // Text that would mislead a reader of messages.
        assert_eq!(
            peer_error_reason(code, "clock drift timed out embedding"),
            want,
            "{code:?}"
        );
    }
}

#[test]
fn a_member_that_answered_reports_its_node() {
    let quiet = PeerStatus {
        peer_id: "b".into(),
        last_transfer_ms: Some(9_000_400),
        ..Default::default()
    };
    let newest = PeerStatus {
        peer_id: "c".into(),
        last_transfer_ms: Some(9_500_900),
        ..Default::default()
    };
    let lag = Lag {
        pending_changes: 4,
        lag_ms: 12_999,
    };
    let r = member(
        &observed(managed("a"), Ok(node(7, vec![quiet.clone(), newest]))),
        lag,
    );
    assert_eq!(r.peer, "pods");
    assert_eq!(r.error_reason, None);
    let s = &r.status;
    assert!(s.ready && s.last_error.is_none());
    assert_eq!(
        s.watermark.as_deref(),
        Some(Hlc::new(5_000, 1).to_hex().as_str())
    );
    assert_eq!((s.conflicts, s.pending_changes, s.lag_seconds), (7, 4, 12));
    assert_eq!(
        s.last_sync_time,
        Some(at(9_500)),
        "the newest transfer, whole seconds"
    );
    assert_eq!(s.endpoint.as_deref(), Some("http://a:8090"));
    assert_eq!(s.node_id.as_deref(), Some("000a"));

    let failing = PeerStatus {
        peer_id: "c".into(),
        last_error: Some("clock drift: remote HLC is ahead".into()),
        ..Default::default()
    };
    let r = member(
        &observed(managed("a"), Ok(node(0, vec![quiet, failing]))),
        Lag::ZERO,
    );
    assert!(!r.status.ready);
    assert_eq!(
        r.status.last_error.as_deref(),
        Some("with c: clock drift: remote HLC is ahead")
    );
    assert_eq!(r.error_reason, Some(reason::CLOCK_DRIFT));
}

#[test]
fn a_member_that_did_not_answer_reports_the_error() {
    let e = NodeError::TimedOut {
        method: Method::GET,
        url: "http://a:8090/admin/status".into(),
    };
    let r = member(&observed(managed("a"), Err(e)), Lag::ZERO);
    assert!(!r.status.ready);
    assert_eq!(r.status.watermark, None);
    assert_eq!(
        r.status.last_error.as_deref(),
        Some("GET http://a:8090/admin/status: timed out")
    );
    assert_eq!(r.error_reason, Some(reason::NODE_UNREACHABLE));

    let r = absent(&Absent {
        peer: "pods".into(),
        pod: "rag-2".into(),
    });
    assert_eq!(
        (r.peer.as_str(), r.status.pod.as_str(), r.status.ready),
        ("pods", "rag-2", false)
    );
    assert_eq!(
        r.status.last_error.as_deref(),
        Some("pod is not ready or has no IP; left out of the topology")
    );
    assert_eq!(r.error_reason, Some(reason::SYNC_FAILED));
}

#[test]
fn gc_horizon_is_held_back_by_external_and_silent_members() {
    let with = |id: u16, applied: [(u16, u64); 2]| {
        let mut n = node(0, Vec::new());
        n.node_id = NodeId(id);
        n.applied = applied.map(|(o, h)| (NodeId(o), Hlc(h))).into();
        Ok(n)
    };
    let member_with = |name: &str, id: &str| Member {
        node_id: Some(id.into()),
        ..managed(name)
    };
    let all = || {
        vec![
            observed(member_with("a", "000a"), with(0xa, [(0xb, 70), (0xc, 40)])),
            observed(member_with("b", "000b"), with(0xb, [(0xa, 55), (0xc, 90)])),
            observed(member_with("c", "000c"), with(0xc, [(0xa, 60), (0xb, 50)])),
        ]
    };
    assert_eq!(gc_horizon(&all()), Some(Hlc(40)));
    let mut with_external = all();
    with_external[2].member.managed = false;
    assert_eq!(gc_horizon(&with_external), None);
    let mut silent = all();
    silent[1].node = Err(answered(None, "down"));
    assert_eq!(gc_horizon(&silent), None);
}

#[test]
fn an_edge_is_measured_from_its_drivers_checkpoint() {
    let puller = PeerStatus {
        peer_id: "a".into(),
        checkpoint: Some(Hlc(11)),
        push_checkpoint: Some(Hlc(99)),
        collections: vec!["docs".into()],
        ..Default::default()
    };
    let pusher = PeerStatus {
        peer_id: "b".into(),
        checkpoint: Some(Hlc(98)),
        push_checkpoint: Some(Hlc(22)),
        ..Default::default()
    };
    let a = observed(managed("a"), Ok(node(0, vec![pusher])));
    let b = observed(managed("b"), Ok(node(0, vec![puller])));
    let cursor = |e, from, to| {
        let c = edge_cursor(&e, from, to);
        (c.checkpoint, c.collections)
    };
    assert_eq!(
        cursor(edge("a", "b", Mode::Pull), &a, &b),
        (Some(Hlc(11)), vec!["docs".to_string()])
    );
    assert_eq!(
        cursor(edge("a", "b", Mode::Push), &a, &b),
        (Some(Hlc(22)), Vec::new())
    );
    let silent = observed(managed("b"), Err(answered(None, "down")));
    assert_eq!(
        cursor(edge("a", "b", Mode::Pull), &a, &silent),
        (None, Vec::new())
    );
}

#[test]
fn edges_give_each_receiver_its_lag() {
    let lag = |p, s: u64| Lag {
        pending_changes: p,
        lag_ms: s * 1000,
    };
    let edges = [
        EdgeLag {
            edge: edge("a", "c", Mode::Pull),
            lag: lag(3, 10),
            checkpoint: None,
        },
        EdgeLag {
            edge: edge("b", "c", Mode::Push),
            lag: lag(2, 40),
            checkpoint: Some(Hlc(1)),
        },
        EdgeLag {
            edge: edge("c", "a", Mode::Pull),
            lag: Lag::ZERO,
            checkpoint: None,
        },
    ];
    let lags = member_lags(&edges);
    assert_eq!(lags["c"], lag(5, 40));
    assert_eq!(lags["a"], Lag::ZERO);
    assert!(!lags.contains_key("b"));
    let e = edge_status(&edges[1]);
    assert_eq!(
        (
            e.from.as_str(),
            e.to.as_str(),
            e.mode.as_str(),
            e.pending_changes,
            e.lag_seconds
        ),
        ("b", "c", "Push", 2, 40)
    );
}

#[test]
fn peer_ready() {
    let now = at(1_000);
    let at = stamp(&now);
    let others = ["b".to_string(), "c".to_string()];
    let c = peer::ready(at, &totals(2, 2), Some(&others));
    assert_eq!(
        verdict(&c),
        ("False", "SelectedByTwoPolicies", "also selected by b, c")
    );
    assert_eq!(
        verdict(&peer::ready(at, &totals(0, 0), None)),
        ("False", "NoMembers", "no ready pod matches the selector")
    );
    assert_eq!(
        verdict(&peer::ready(at, &totals(2, 2), None)),
        ("True", "AllMembersReady", "2 of 2 members ready")
    );
    let c = peer::ready(at, &totals(3, 1), None);
    assert_eq!(
        verdict(&c),
        ("False", "MembersNotReady", "1 of 3 members ready")
    );
    assert_eq!(
        (
            c.type_.as_str(),
            c.observed_generation,
            &c.last_transition_time
        ),
        ("Ready", Some(3), &now)
    );
}

#[test]
fn peer_synced() {
    let now = at(1_000);
    let at = stamp(&now);
    assert_eq!(
        verdict(&peer::synced(at, &["a → b", "c → b"], 5, 9)),
        (
            "False",
            "Stalled",
            "no progress over three sync intervals on a → b, c → b"
        )
    );
    assert_eq!(
        verdict(&peer::synced(at, &[], 5, 9)),
        ("False", "Lagging", "5 changes pending, max lag 9s")
    );
    assert_eq!(
        verdict(&peer::synced(at, &[], 5, 0)),
        (
            "True",
            "Synced",
            "5 changes in flight, none pending for a second"
        ),
        "changes under a second old are in flight, not lag"
    );
    let c = peer::synced(at, &[], 0, 0);
    assert_eq!(verdict(&c), ("True", "Synced", "no changes pending"));
    assert_eq!(c.type_, "Synced");
}

#[test]
fn peer_degraded() {
    let now = at(1_000);
    let at = stamp(&now);
    let failing = [
        report("p", "a", None),
        report(
            "p",
            "b",
            Some(("GET x: timed out", reason::NODE_UNREACHABLE)),
        ),
        report("p", "c", Some(("with d: clock drift", reason::CLOCK_DRIFT))),
    ];
    let failing: Vec<&MemberReport> = failing.iter().collect();
    let others = ["other".to_string()];
    assert_eq!(
        verdict(&peer::degraded(
            at,
            "docs",
            Some(&others),
            &["a → b"],
            &failing
        )),
        (
            "True",
            "SelectedByTwoPolicies",
            "selected by docs and other"
        )
    );
    assert_eq!(
        verdict(&peer::degraded(at, "docs", None, &["a → b"], &failing)),
        (
            "True",
            "Stalled",
            "no progress over three sync intervals on a → b"
        )
    );
    assert_eq!(
        verdict(&peer::degraded(at, "docs", None, &[], &failing)),
        (
            "True",
            "NodeUnreachable",
            "b: GET x: timed out; c: with d: clock drift"
        )
    );
    let healthy = [report("p", "a", None)];
    let c = peer::degraded(at, "docs", None, &[], &[&healthy[0]]);
    assert_eq!(verdict(&c), ("False", "Healthy", "all members healthy"));
    assert_eq!(c.type_, "Degraded");
}

#[test]
fn policy_ready() {
    let now = at(1_000);
    let at = stamp(&now);
    assert_eq!(
        verdict(&policy::ready(at, &totals(0, 0))),
        ("False", "NoMembers", "no members selected")
    );
    assert_eq!(
        verdict(&policy::ready(at, &totals(3, 3))),
        ("True", "AllMembersReady", "3 of 3 members ready")
    );
    assert_eq!(
        verdict(&policy::ready(at, &totals(3, 2))),
        ("False", "MembersNotReady", "2 of 3 members ready")
    );
}

#[test]
fn policy_converged() {
    let now = at(1_000);
    let at = stamp(&now);
    let cut = Problem::NotStronglyConnected(vec![CutOff {
        member: "b".into(),
        receives: false,
        sends: false,
    }]);
    let split = plan(false, vec![cut.clone()]);
    let whole = plan(true, Vec::new());
    let stalled = ["a → b".to_string()];
    let all = totals(2, 2);
    let c = |paused, plan: &Plan, stalled: &[String], pending, t: &Totals| {
        policy::converged(at, paused, plan, stalled, pending, t)
    };
    assert_eq!(
        verdict(&c(true, &split, &stalled, 4, &all)),
        ("False", "Paused", "sync is paused")
    );
    let not_connected = c(false, &split, &stalled, 4, &all);
    assert_eq!(
        verdict(&not_connected),
        ("False", "NotStronglyConnected", cut.to_string().as_str())
    );
    assert_eq!(
        verdict(&c(false, &whole, &stalled, 4, &all)),
        (
            "False",
            "Stalled",
            "no progress over three sync intervals on a → b"
        )
    );
    let t = Totals {
        max_lag_seconds: 7,
        ..all.clone()
    };
    assert_eq!(
        verdict(&c(false, &whole, &[], 4, &t)),
        (
            "False",
            "Lagging",
            "4 changes pending, max lag 7s, 2 of 2 members ready"
        )
    );
    assert_eq!(
        verdict(&c(false, &whole, &[], 0, &totals(2, 1))),
        (
            "False",
            "Lagging",
            "0 changes pending, max lag 0s, 1 of 2 members ready"
        )
    );
    assert_eq!(
        verdict(&c(false, &whole, &[], 0, &totals(0, 0))).1,
        "Lagging",
        "no members is not converged"
    );
    let done = c(false, &whole, &[], 0, &all);
    assert_eq!(
        verdict(&done),
        ("True", "Converged", "every member holds every change")
    );
    assert_eq!(done.type_, "Converged");
}

#[test]
fn policy_degraded() {
    let now = at(1_000);
    let at = stamp(&now);
    let problems = [
        ("TokenUnavailable".to_string(), "no Secret".to_string()),
        ("InvalidSpec".to_string(), "spec.interval: bad".to_string()),
    ];
    let failing = [report(
        "p",
        "a",
        Some(("with b: nope", reason::SYNC_FAILED)),
    )];
    let failing: Vec<&MemberReport> = failing.iter().collect();
    assert_eq!(
        verdict(&policy::degraded(
            at,
            &problems,
            true,
            "stalled on x",
            &failing
        )),
        ("True", "TokenUnavailable", "no Secret; spec.interval: bad")
    );
    assert_eq!(
        verdict(&policy::degraded(at, &[], true, "sync is paused", &failing)),
        ("True", "Stalled", "sync is paused"),
        "a stall says what Converged says"
    );
    assert_eq!(
        verdict(&policy::degraded(at, &[], false, "", &failing)),
        ("True", "SyncFailed", "a: with b: nope")
    );
    let c = policy::degraded(at, &[], false, "", &[]);
    assert_eq!(verdict(&c), ("False", "Healthy", "no problems"));
    assert_eq!(c.type_, "Degraded");
}

fn sync_policy(generation: i64, paused: bool) -> SyncPolicy {
    let mut p: SyncPolicy = serde_json::from_value(json!({
        "apiVersion": "ragsync.io/v1alpha1", "kind": "SyncPolicy",
        "metadata": {"name": "docs", "namespace": "ns", "generation": generation},
        "spec": {"peerSelector": {}, "paused": paused},
    }))
    .unwrap();
    p.status = None;
    p
}

fn sync_peer(name: &str, generation: i64) -> SyncPeer {
    serde_json::from_value(json!({
        "apiVersion": "ragsync.io/v1alpha1", "kind": "SyncPeer",
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "spec": {"selector": {"matchLabels": {"app": "rag"}}},
    }))
    .unwrap()
}

#[test]
fn problems_are_the_observed_then_the_plans_then_the_contested() {
    let policy = sync_policy(1, false);
    let contested = BTreeMap::from([("shared".to_string(), vec!["other".to_string()])]);
    let plan = plan(true, vec![Problem::UnknownPeer("hub".into())]);
    let found = [(
        "ConfigPushFailed".to_string(),
        "PUT x: timed out".to_string(),
    )];
    let now = at(1);
    let obs = Observation {
        policy: &policy,
        contested: &contested,
        members: &[],
        edges: &[],
        plan: &plan,
        problems: &found,
        stalled: &[],
        gc_horizon: None,
        now: &now,
    };
    let reasons: Vec<String> = policy::problems(&obs).into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        reasons,
        [
            "ConfigPushFailed",
            "UnknownSyncPeer",
            "SelectedByTwoPolicies"
        ]
    );
    assert_eq!(
        policy::problems(&obs)[2].1,
        "SyncPeer shared is also selected by other; it takes part in neither until one selector changes"
    );
}

#[test]
fn peer_status_holds_its_own_members_and_keeps_transition_times() {
    let policy = sync_policy(4, false);
    let mut peer = sync_peer("pods", 9);
    let members = [
        report("pods", "rag-1", None),
        report("ext", "ext", None),
        report("pods", "rag-0", None),
        report(
            "pods",
            "rag-2",
            Some(("pod is not ready", reason::SYNC_FAILED)),
        ),
    ];
    let plan = plan(true, Vec::new());
    let contested = BTreeMap::new();
    let obs_at = |now| Observation {
        policy: &policy,
        contested: &contested,
        members: &members,
        edges: &[],
        plan: &plan,
        problems: &[],
        stalled: &[],
        gc_horizon: None,
        now,
    };
    let first_now = at(100);
    let st: SyncPeerStatus = peer::status(&obs_at(&first_now), &peer);
    let pods: Vec<&str> = st.members.iter().map(|m| m.pod.as_str()).collect();
    assert_eq!(
        pods,
        ["rag-2", "rag-0", "rag-1"],
        "worst first (not ready), then by name"
    );
    assert_eq!(st.omitted_members, 0);
    assert_eq!((st.member_count, st.ready_members), (3, 2));
    assert_eq!(st.policy.as_deref(), Some("docs"));
    assert_eq!(st.observed_generation, Some(9));
    let types: Vec<&str> = st.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Synced", "Degraded"]);
    assert!(st
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(9)));
    assert!(st
        .conditions
        .iter()
        .all(|c| c.last_transition_time == first_now));

    // Nothing changed: the same status, times included.
    peer.status = Some(st.clone());
    let later = at(200);
    assert_eq!(peer::status(&obs_at(&later), &peer), st);
}

#[test]
fn policy_status_counts_every_member_once_and_moves_time_only_on_a_flip() {
    let policy = sync_policy(2, false);
    let members = [
        report("b", "zeta", None),
        report(
            "a",
            "alpha",
            Some(("GET x: timed out", reason::NODE_UNREACHABLE)),
        ),
    ];
    let edges = [EdgeStatus {
        from: "alpha".into(),
        to: "zeta".into(),
        mode: "Pull".into(),
        pending_changes: 0,
        lag_seconds: 3,
    }];
    let plan = plan(true, Vec::new());
    let contested = BTreeMap::new();
    let first_now = at(100);
    let obs = Observation {
        policy: &policy,
        contested: &contested,
        members: &members,
        edges: &edges,
        plan: &plan,
        problems: &[],
        stalled: &[],
        gc_horizon: Some(Hlc(0x42)),
        now: &first_now,
    };
    let st: SyncPolicyStatus = policy::status(&obs);
    assert_eq!(
        (st.members, st.ready_members, st.max_lag_seconds),
        (2, 1, 3)
    );
    assert_eq!(st.gc_horizon.as_deref(), Some("0000000000000042"));
    assert_eq!(st.observed_generation, Some(2));
    let types: Vec<&str> = st.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Converged", "Degraded"]);
    let degraded = conditions::find(&st.conditions, conditions::DEGRADED).unwrap();
    assert_eq!(
        verdict(degraded),
        ("True", "NodeUnreachable", "alpha: GET x: timed out")
    );

    // The member recovers: Ready and Degraded flip (new time), Converged too.
    let mut policy = sync_policy(2, false);
    policy.status = Some(st);
    let recovered = [report("b", "zeta", None), report("a", "alpha", None)];
    let later = at(200);
    let obs = Observation {
        policy: &policy,
        members: &recovered,
        now: &later,
        ..obs
    };
    let st = policy::status(&obs);
    for c in &st.conditions {
        assert_eq!(c.last_transition_time, later, "{} flipped", c.type_);
    }
    // Paused: only Converged flips; Ready and Degraded keep their time.
    let mut paused = sync_policy(3, true);
    paused.status = Some(st);
    let last = at(300);
    let obs = Observation {
        policy: &paused,
        now: &last,
        ..obs
    };
    let st = policy::status(&obs);
    let time = |t| {
        &conditions::find(&st.conditions, t)
            .unwrap()
            .last_transition_time
    };
    assert_eq!(time(conditions::CONVERGED), &last);
    assert_eq!(time(conditions::READY), &later);
    assert_eq!(time(conditions::DEGRADED), &later);
    assert!(st
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(3)));
}

/// 200 members in the worst state a status can describe: long names, every member failing
/// with a long error and lagging, every edge of a full mesh lagging, stalled everywhere.
#[test]
fn statuses_stay_under_64_kib_at_200_members_whatever_their_state() {
    const LIMIT: usize = 64 * 1024;
    let long = |i: usize| format!("{}-{i:03}", "x".repeat(58));
    let names: Vec<String> = (0..200).map(long).collect();
    let error = "e".repeat(4000);
    let members: Vec<MemberReport> = names
        .iter()
        .map(|n| MemberReport {
            peer: "pods".into(),
            status: MemberStatus {
                pod: n.clone(),
                node_id: Some("abcd".into()),
                endpoint: Some(format!("http://{n}.rag.ns.svc.cluster.local:8090")),
                watermark: Some(Hlc(u64::MAX).to_hex()),
                lag_seconds: 86_400,
                pending_changes: i64::MAX,
                conflicts: i64::MAX,
                last_sync_time: Some(at(1)),
                last_error: Some(shorten(&error, MAX_ERROR_CHARS)),
                ..Default::default()
            },
            error_reason: Some(reason::NODE_UNREACHABLE),
        })
        .collect();
    let mesh: Vec<EdgeStatus> = names
        .iter()
        .flat_map(|a| names.iter().filter(move |b| *b != a).map(move |b| (a, b)))
        .enumerate()
        .map(|(i, (a, b))| EdgeStatus {
            from: a.clone(),
            to: b.clone(),
            mode: "Pull".into(),
            pending_changes: i as i64,
            lag_seconds: (i % 1000) as i64,
        })
        .collect();
    assert_eq!(mesh.len(), 200 * 199);
    let stalled: Vec<String> = mesh
        .iter()
        .map(|e| format!("{} → {}", e.from, e.to))
        .collect();
    let problems: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                "ConfigPushFailed".to_string(),
                format!("PUT {}: {error}", long(i)),
            )
        })
        .collect();
    let cut_off: Vec<CutOff> = names
        .iter()
        .map(|n| CutOff {
            member: n.clone(),
            receives: false,
            sends: false,
        })
        .collect();
    let plan = Plan {
        problems: vec![Problem::NotStronglyConnected(cut_off)],
        ..plan(false, Vec::new())
    };
    let contested = BTreeMap::new();
    let now = at(100);
    let mut policy = sync_policy(1, false);
    let mut peer = sync_peer("pods", 1);
    for edges in [&mesh[..], &mesh[..600]] {
        let obs = Observation {
            policy: &policy,
            contested: &contested,
            members: &members,
            edges,
            plan: &plan,
            problems: &problems,
            stalled: &stalled,
            gc_horizon: Some(Hlc(u64::MAX)),
            now: &now,
        };
        let st = policy::status(&obs);
        assert_eq!(st.edge_count as usize, edges.len());
        assert_eq!(st.edges.len(), crate::operator::lag::WORST_EDGES);
        let worst = edges.iter().map(|e| e.lag_seconds).max().unwrap();
        assert_eq!(st.edges[0].lag_seconds, worst, "the worst edge first");
        assert_eq!(
            st.lagging_edges as usize,
            edges.len() - 1,
            "all but the first"
        );
        let peer_st = peer::status(&obs, &peer);
        assert_eq!((peer_st.member_count, peer_st.omitted_members), (200, 150));
        assert_eq!(peer_st.members.len(), MAX_MEMBERS_SHOWN);
        policy.status = Some(st);
        let size = serde_json::to_vec(&policy).unwrap().len();
        assert!(
            size < LIMIT,
            "SyncPolicy of {} edges: {size} bytes",
            edges.len()
        );

        peer.status = Some(peer_st);
        let size = serde_json::to_vec(&peer).unwrap().len();
        assert!(size < LIMIT, "SyncPeer of 200 members: {size} bytes");
        for c in peer.status.iter().flat_map(|s| &s.conditions) {
            assert!(c.message.chars().count() <= MAX_MESSAGE_CHARS, "{c:?}");
        }
    }
    let degraded = conditions::find(
        &policy.status.as_ref().unwrap().conditions,
        conditions::DEGRADED,
    )
    .unwrap();
    assert!(
        degraded.message.chars().count() <= MAX_MESSAGE_CHARS,
        "{}",
        degraded.message
    );
}

#[test]
fn lists_in_messages_name_a_few_and_count_the_rest() {
    let items: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    assert_eq!(some_of(&items, ", "), "m0, m1, m2, m3, m4 and 3 more");
    assert_eq!(some_of(&items[..2], "; "), "m0; m1");
    assert_eq!(shorten("abcdef", 4), "abc…");
    assert_eq!(shorten("abc", 4), "abc");
}

#[test]
fn the_config_is_in_place_by_value_or_by_the_digest_the_node_reports() {
    let desired = SyncConfig {
        peers: vec![PeerConfig {
            peer_id: "b".into(),
            endpoint: "http://b:8090".into(),
            address: None,
            direction: crate::config::Direction::Pull,
            collections: Vec::new(),
            exclude_collections: Vec::new(),
        }],
        ..SyncConfig::default()
    };
    let mut n = node(0, Vec::new());
    let o = observed(managed("a"), Ok(n.clone()));
    assert!(!config_in_place(&o, &desired), "no config, no digest");
    assert!(!peers_in_place(&o, &desired));
    n.config_digest = Some(desired.digest());
    n.peers = vec![PeerStatus {
        peer_id: "b".into(),
        endpoint: "http://b:8090".into(),
        direction: crate::config::Direction::Pull,
        ..Default::default()
    }];
    let o = observed(managed("a"), Ok(n.clone()));
    assert!(config_in_place(&o, &desired));
    assert!(peers_in_place(&o, &desired));
    let other = SyncConfig {
        interval_seconds: 7,
        ..desired.clone()
    };
    assert!(!config_in_place(&o, &other), "another digest");
    assert!(peers_in_place(&o, &other), "same peers, other settings");
    let fewer = SyncConfig {
        peers: Vec::new(),
        ..desired.clone()
    };
    assert!(!peers_in_place(&o, &fewer));
    // A config read whole is compared whole, whatever the digest says.
    let o = Observed {
        config: Some(other.clone()),
        ..observed(managed("a"), Ok(n))
    };
    assert!(config_in_place(&o, &other) && !config_in_place(&o, &desired));
}
