use super::*;
use crate::operator::crd::TopologyEdge;
use proptest::prelude::*;

fn m(peer: &str, name: &str) -> Member {
    Member {
        peer: peer.into(),
        name: name.into(),
        endpoint: format!("http://{name}:8090"),
        address: None,
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
        address: None,
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
        ..Default::default()
    }
}

fn sparse(fanout: Option<i32>) -> Topology {
    Topology {
        type_: TopologyType::Sparse,
        fanout,
        ..Default::default()
    }
}

fn explicit(edges: &[(&str, &str)]) -> Topology {
    Topology {
        type_: TopologyType::Explicit,
        edges: edges
            .iter()
            .map(|(f, t)| TopologyEdge {
                from: f.to_string(),
                to: t.to_string(),
            })
            .collect(),
        ..Default::default()
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
        live: true,
        interval_seconds: 7,
        batch_size: 42,
        conflict_strategy: crate::config::ConflictStrategy::Merge,
        peers: vec![PeerConfig {
            peer_id: "stale".into(),
            endpoint: "http://x".into(),
            address: None,
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
        cut.iter().all(|c| c.receives && !c.sends) || cut.iter().all(|c| !c.receives && c.sends)
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
                address: None,
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
    let fanout = prop::option::of(2..17i32);
    (0..5u8, names, edges, fanout).prop_map(|(t, hubs, edges, fanout)| Topology {
        type_: [
            TopologyType::Mesh,
            TopologyType::HubAndSpoke,
            TopologyType::Ring,
            TopologyType::Explicit,
            TopologyType::Sparse,
        ][t as usize],
        fanout,
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

// ---- Sparse and HubAndSpoke with many hubs ----------------------------------------------

/// Members with these names, all managed and `Both`, spread over three SyncPeers by a rule
/// that depends on the name only (so adding a name does not move the others).
fn named<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<Member> {
    names
        .into_iter()
        .map(|n| m(&format!("p{}", n.len() % 3), n))
        .collect()
}

/// How many members each member receives changes from (by edge), members without any absent.
fn sources(p: &Plan) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for e in &p.edges {
        *out.entry(e.to.as_str()).or_default() += 1;
    }
    out
}

/// The longest shortest directed path over the edges; `usize::MAX` when some member cannot
/// reach another.
fn diameter(p: &Plan, ms: &[Member]) -> usize {
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut adj = vec![Vec::new(); names.len()];
    for e in &p.edges {
        adj[index[e.from.as_str()]].push(index[e.to.as_str()]);
    }
    let mut worst = 0;
    for s in 0..names.len() {
        let mut dist = vec![usize::MAX; names.len()];
        dist[s] = 0;
        let mut queue = std::collections::VecDeque::from([s]);
        while let Some(u) = queue.pop_front() {
            for &v in &adj[u] {
                if dist[v] == usize::MAX {
                    dist[v] = dist[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        worst = worst.max(dist.into_iter().max().unwrap_or(0));
    }
    worst
}

/// Edges in one plan and not the other.
fn churn(a: &Plan, b: &Plan) -> usize {
    let a: BTreeSet<&Edge> = a.edges.iter().collect();
    let b: BTreeSet<&Edge> = b.edges.iter().collect();
    a.symmetric_difference(&b).count()
}

/// ceil(log_base(n)) for n >= 1, in integers.
fn ceil_log(n: usize, base: usize) -> usize {
    let (mut k, mut reach) = (0, 1);
    while reach < n {
        reach *= base;
        k += 1;
    }
    k
}

/// Deterministic pseudo-random pod-like names (xorshift), for the exploratory run.
fn random_names(seed: u64, n: usize) -> BTreeSet<String> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = BTreeSet::new();
    while out.len() < n {
        out.insert(format!("rag-{:x}-{}", next() % 0xfffff, next() % 100));
    }
    out
}

#[test]
fn positions_are_pinned() {
    // The first 8 bytes of SHA-256, big-endian: must never change, or every Sparse policy
    // would rewire on an operator upgrade.
    assert_eq!(position("rag-0"), 0xd370_da5c_5961_0d53);
    assert_eq!(position("embedding-12"), 0xa23d_ef20_cc05_62d7);
}

#[test]
fn sparse_with_few_members() {
    let p = run(&[], &sparse(None));
    assert!(p.edges.is_empty() && p.configs.is_empty() && p.problems.is_empty());

    let p = run(&[m("a", "a-0")], &sparse(None));
    assert!(p.configs["a-0"].peers.is_empty() && p.edges.is_empty());
    assert!(p.problems.is_empty() && p.connectivity.strongly_connected());

    // Two: each receives from the other (its ring predecessor), by pulling.
    let p = run(&[m("a", "a-0"), m("a", "a-1")], &sparse(Some(5)));
    assert_eq!(peer_ids(&p, "a-0"), ["a-1"]);
    assert_eq!(peer_ids(&p, "a-1"), ["a-0"]);
    assert_eq!(p.edges.len(), 2);
    assert!(p.edges.iter().all(|e| e.mode == Mode::Pull));
    assert!(p.problems.is_empty());

    // Three with the default fanout 3 >= n: everyone receives from both others, like Mesh.
    let three = [m("a", "a-0"), m("a", "a-1"), m("b", "b-0")];
    let p = run(&three, &sparse(None));
    let mesh = run(&three, &topo(TopologyType::Mesh));
    assert_eq!(p.edges, mesh.edges);
    assert_eq!(p.configs, mesh.configs);

    // fanout >= n in general: the same as Mesh.
    let five = all_managed(5);
    let p = run(&five, &sparse(Some(16)));
    assert_eq!(p.edges, run(&five, &topo(TopologyType::Mesh)).edges);
    assert!(p.warnings.is_empty());

    // Four with fanout 2: two sources each, one of them the ring predecessor.
    let four = all_managed(4);
    let p = run(&four, &sparse(Some(2)));
    assert_eq!(p.edges.len(), 8);
    assert!(sources(&p).values().all(|&k| k == 2), "{:?}", p.edges);
    assert!(p.connectivity.strongly_connected() && p.problems.is_empty());
}

#[test]
fn sparse_defaults_to_fanout_3() {
    let ms = all_managed(12);
    let p = run(&ms, &sparse(None));
    assert_eq!(p, run(&ms, &sparse(Some(3))));
    assert_eq!(p.edges.len(), 36);
    assert!(sources(&p).values().all(|&k| k == 3));
    for c in p.configs.values() {
        c.validate().unwrap();
    }
}

#[test]
fn sparse_carries_flows_like_explicit_edges() {
    // An external Both node is pushed to by its managed sources and pulled from by its
    // managed receivers; a Pull-only external node cannot receive at all.
    let mut ms = all_managed(6);
    ms.push(ext("partner", PeerDirection::Both));
    let p = run(&ms, &sparse(Some(2)));
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert!(p
        .edges
        .iter()
        .filter(|e| e.to == "partner")
        .all(|e| e.mode == Mode::Push));
    assert_eq!(p.edges.iter().filter(|e| e.to == "partner").count(), 2);

    let mut ms = all_managed(6);
    ms.push(ext("src", PeerDirection::Pull));
    let p = run(&ms, &sparse(Some(2)));
    assert!(p
        .problems
        .iter()
        .any(|x| matches!(x, Problem::Unrealizable { to, .. } if to == "src")));
    assert!(!p.connectivity.strongly_connected());
}

#[test]
fn hub_and_spoke_with_many_hubs_links_each_spoke_with_two() {
    let mut ms: Vec<Member> = (0..4).map(|i| m("eu", &format!("eu-{i}"))).collect();
    ms.extend((0..10).map(|i| m("us", &format!("us-{i}"))));
    let p = run(&ms, &hub(&["eu"]));
    for i in 0..4 {
        let ids = peer_ids(&p, &format!("eu-{i}"));
        // the other three hubs, and some spokes
        assert_eq!(ids.iter().filter(|x| x.starts_with("eu-")).count(), 3);
    }
    for i in 0..10 {
        let ids = peer_ids(&p, &format!("us-{i}"));
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.iter().all(|x| x.starts_with("eu-")));
    }
    // 6 hub-hub links and 2 per spoke, each carried by a pull both ways
    assert_eq!(p.edges.len(), 2 * (6 + 2 * 10));
    assert!(p.connectivity.strongly_connected() && p.problems.is_empty());
    // Not all spokes on the same two hubs.
    let picks: BTreeSet<Vec<String>> = (0..10).map(|i| peer_ids(&p, &format!("us-{i}"))).collect();
    assert!(picks.len() > 1, "{picks:?}");
}

#[test]
fn a_large_mesh_is_warned_about() {
    let p = run(&all_managed(32), &topo(TopologyType::Mesh));
    assert!(p.warnings.is_empty());
    let p = run(&all_managed(33), &topo(TopologyType::Mesh));
    assert_eq!(
        p.warnings,
        [Warning::LargeMesh {
            members: 33,
            edges: 33 * 32
        }]
    );
    assert!(p.problems.is_empty(), "a warning, not a problem");
    let msg = p.warnings[0].to_string();
    assert!(msg.contains("1056 edges"), "{msg}");
    assert!(
        msg.contains("`topology: {type: Sparse, fanout: 3}`: 99 edges"),
        "{msg}"
    );
    assert_eq!(p.warnings[0].reason(), "LargeMesh");
    for t in [sparse(None), topo(TopologyType::Ring), hub(&["p0"])] {
        assert!(run(&all_managed(40), &t).warnings.is_empty());
    }
}

/// Exploratory: prints the worst diameter and churn over many name sets per (n, fanout), the
/// figures the bounds in the properties below are chosen from.
/// `cargo test --lib operator::topology::tests::sparse_figures -- --ignored --nocapture`
#[test]
#[ignore]
fn sparse_figures() {
    // SPARSE_FIGURES="runs n,n,.. f,f,.." narrows it, e.g. "300 32,64,200 2,3".
    let args = std::env::var("SPARSE_FIGURES").unwrap_or_default();
    let mut args = args.split_whitespace();
    let runs: u64 = args.next().map_or(40, |r| r.parse().unwrap());
    let list = |s: Option<&str>, default: &[i32]| -> Vec<i32> {
        s.map_or(default.to_vec(), |s| {
            s.split(',').map(|x| x.parse().unwrap()).collect()
        })
    };
    let sizes = list(args.next(), &[4, 8, 16, 32, 64, 100, 150, 200]);
    let fanouts = list(args.next(), &[2, 3, 4, 6, 8, 12, 16]);
    for &n in &sizes {
        let n = n as usize;
        for &f in &fanouts {
            let (mut diam, mut add, mut remove, mut sum) = (0, 0, 0, 0);
            for seed in 0..runs {
                let names = random_names(seed * 1000 + n as u64, n + 1);
                let extra = names.iter().next().unwrap().clone();
                let base: Vec<&String> = names.iter().filter(|x| **x != extra).collect();
                let ms = named(base.iter().copied());
                let p = run(&ms, &sparse(Some(f)));
                diam = diam.max(diameter(&p, &ms));
                let grown = run(&named(&names), &sparse(Some(f)));
                let c = churn(&p, &grown);
                add = add.max(c);
                sum += c;
                let gone = base[(seed as usize * 7) % base.len()];
                let shrunk = named(base.iter().copied().filter(|x| *x != gone));
                remove = remove.max(churn(&p, &run(&shrunk, &sparse(Some(f)))));
            }
            let f = f as usize;
            println!(
                "n={n:3} f={f:2} ceil(log_f n)={} diameter<={diam:2} add churn max {add:3} mean {:.1} remove churn max {remove:3} (6f+6={})",
                ceil_log(n, f),
                sum as f64 / runs as f64,
                6 * f + 6
            );
        }
    }
    for hubs in [1, 2, 3, 4, 6, 8, 12] {
        let (mut worst, mut sum) = (0, 0);
        let spokes = 60;
        for seed in 0..40u64 {
            let names = random_names(seed, spokes + hubs + 1);
            let all: Vec<&String> = names.iter().collect();
            let (hub_names, spoke_names) = all.split_at(hubs + 1);
            let mk = |hub_count: usize| -> Vec<Member> {
                hub_names[..hub_count]
                    .iter()
                    .map(|n| m("hub", n))
                    .chain(spoke_names.iter().map(|n| m("spoke", n)))
                    .collect()
            };
            let before = run(&mk(hubs), &hub(&["hub"]));
            let after = run(&mk(hubs + 1), &hub(&["hub"]));
            let c = spoke_link_churn(&before, &after, spoke_names);
            worst = worst.max(c);
            sum += c;
        }
        println!(
            "hubs={hubs:2}->{} spokes={spokes} spoke-hub links changed: max {worst} mean {:.1} (4*spokes/(hubs+1) = {:.1})",
            hubs + 1,
            sum as f64 / 40.0,
            4.0 * spokes as f64 / (hubs + 1) as f64
        );
    }
}

/// Spoke-hub links (as unordered pairs) in one plan and not the other.
fn spoke_link_churn(a: &Plan, b: &Plan, spokes: &[&String]) -> usize {
    let links = |p: &Plan| -> BTreeSet<(String, String)> {
        p.edges
            .iter()
            .filter(|e| spokes.contains(&&e.from) || spokes.contains(&&e.to))
            .map(|e| {
                (
                    e.from.clone().min(e.to.clone()),
                    e.from.clone().max(e.to.clone()),
                )
            })
            .collect()
    };
    links(a).symmetric_difference(&links(b)).count()
}

/// Pod-like names, `min` to `max` of them.
fn arb_names(
    prefix: &'static str,
    min: usize,
    max: usize,
) -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set("[a-z0-9]{1,8}(-[0-9]{1,3})?", min..max)
        .prop_map(move |s| s.into_iter().map(|n| format!("{prefix}{n}")).collect())
}

/// Each member's sources (from the edges).
fn source_sets(p: &Plan) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &p.edges {
        out.entry(e.to.clone()).or_default().insert(e.from.clone());
    }
    out
}

/// `big` is `small` with member `x` joined, as rendezvous hashing promises: every other
/// member either keeps its sources or gains `x` in exchange for at most one of them (x's ring
/// successor trades its old predecessor or one pick; a member that picks x drops its lowest
/// pick). Returns how many members gained x.
fn check_join(small: &Plan, big: &Plan, x: &str) -> Result<usize, TestCaseError> {
    let (before, after) = (source_sets(small), source_sets(big));
    let none = BTreeSet::new();
    let mut gained = 0;
    for (r, now) in &after {
        if r == x {
            continue;
        }
        let was = before.get(r).unwrap_or(&none);
        let added: Vec<&String> = now.difference(was).collect();
        let removed = was.difference(now).count();
        prop_assert!(added.iter().all(|a| *a == x), "{r} gained {added:?}");
        prop_assert!(removed <= added.len(), "{r} lost {removed} for {added:?}");
        gained += added.len();
    }
    prop_assert!(before.keys().all(|r| after.contains_key(r)));
    Ok(gained)
}

proptest! {
    // Fixed seed: the cases are the same on every run and machine (positions are a pure
    // function of the names), so the measured bounds below cannot flake.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x5ba5_e000_0016),
        ..ProptestConfig::default()
    })]

    /// Measured (`sparse_figures`, 400 to 2,000 name sets per size): the worst diameter is
    /// 20 at fanout 2 (n = 128 and 200; 21 at n = 40, ceil(log2 40) = 6) and 12 at fanout 3
    /// (n = 128, 200): about 3.5 * ceil(log_f n) at most for fanout 2, where a run of members
    /// nobody picked is crossed only along the ring. 4 * ceil(log_f n) + 4 leaves 7 hops.
    #[test]
    fn sparse_is_strongly_connected_with_fanout_sources_and_a_short_diameter(
        names in arb_names("", 0, 200),
        fanout in 2..=16i32,
    ) {
        let ms = named(&names);
        let p = run(&ms, &sparse(Some(fanout)));
        let (n, f) = (ms.len(), fanout as usize);
        prop_assert!(p.connectivity.strongly_connected(), "{:?}", p.connectivity);
        prop_assert!(p.problems.is_empty(), "{:?}", p.problems);
        let sources = sources(&p);
        for m in &ms {
            let k = sources.get(m.name.as_str()).copied().unwrap_or(0);
            prop_assert_eq!(k, f.min(n.saturating_sub(1)), "{}", m.name);
            prop_assert!(p.configs[&m.name].peers.len() >= k, "a source per peer entry");
        }
        let d = diameter(&p, &ms);
        prop_assert!(d <= 4 * ceil_log(n, f) + 4, "n={n} f={f}: diameter {d}");
    }

    /// One member joining or leaving: every other member's sources change by at most one
    /// swap for that member (exact), so the edges changed are its own min(f, n - 1) plus two
    /// per member that picked it (about f - 1 of them, and its ring successor). Measured
    /// (400 to 2,000 sets per size): at most 20 at fanout 2, 23 at fanout 3, 68 at fanout 16
    /// (mean about 3f); 6f + 6 was exceeded at fanout 2 (20 > 18), 8f + 8 leaves 4 or more.
    #[test]
    fn sparse_churn_is_bounded_by_fanout(
        names in arb_names("", 1, 200),
        extra in "[a-z0-9]{1,8}(-[0-9]{1,3})?",
        pick in any::<prop::sample::Index>(),
        fanout in 2..=16i32,
    ) {
        prop_assume!(!names.contains(&extra));
        let f = fanout as usize;
        let t = sparse(Some(fanout));
        let p = run(&named(&names), &t);

        let mut grown = names.clone();
        grown.insert(extra.clone());
        let big = run(&named(&grown), &t);
        check_join(&p, &big, &extra)?;
        prop_assert!(churn(&p, &big) <= 8 * f + 8, "join: {}", churn(&p, &big));

        let gone = pick.get(&names.iter().collect::<Vec<_>>()).to_string();
        let mut shrunk = names.clone();
        shrunk.remove(&gone);
        let small = run(&named(&shrunk), &t);
        check_join(&small, &p, &gone)?;
        prop_assert!(churn(&small, &p) <= 8 * f + 8, "leave: {}", churn(&small, &p));
    }

    /// The same members in any order, planned twice: the same plan and byte-identical configs.
    #[test]
    fn sparse_replans_are_byte_identical(
        names in arb_names("", 0, 120),
        fanout in prop::option::of(2..=16i32),
        seed in any::<u64>(),
    ) {
        let ms = named(&names);
        let mut shuffled = ms.clone();
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let a = run(&ms, &sparse(fanout));
        let b = run(&shuffled, &sparse(fanout));
        let bytes = |p: &Plan| serde_json::to_vec(&p.configs).unwrap();
        prop_assert_eq!(bytes(&a), bytes(&b));
        prop_assert_eq!(bytes(&a), bytes(&run(&ms, &sparse(fanout))));
        prop_assert_eq!(a, b);
    }

    /// Every spoke links with exactly min(2, hub members) hub members and no spoke; with
    /// `Both` it is strongly connected; a hub member added moves each spoke by at most one
    /// swap (exact), and about 2 / (hubs + 1) of the spokes. Measured (60 spokes, 40 sets):
    /// mean 4 * spokes / (hubs + 1) links changed, at most 94 for 2 -> 3 hubs (bound 168).
    #[test]
    fn hub_and_spoke_links_each_spoke_with_two_hubs(
        hubs in arb_names("h", 1, 12),
        spokes in arb_names("s", 0, 80),
        extra in "h[a-z0-9]{1,8}",
    ) {
        prop_assume!(!hubs.contains(&extra));
        let mk = |hubs: &BTreeSet<String>| -> Vec<Member> {
            hubs.iter()
                .map(|n| m("hub", n))
                .chain(spokes.iter().map(|n| m("spoke", n)))
                .collect()
        };
        let p = run(&mk(&hubs), &hub(&["hub"]));
        prop_assert!(p.connectivity.strongly_connected());
        prop_assert!(p.problems.is_empty(), "{:?}", p.problems);
        let links = |p: &Plan, s: &str| -> BTreeSet<String> {
            p.configs[s].peers.iter().map(|c| c.peer_id.clone()).collect()
        };
        for s in &spokes {
            let l = links(&p, s);
            prop_assert_eq!(l.len(), hubs.len().min(2), "{}", s);
            prop_assert!(l.iter().all(|h| hubs.contains(h)), "{} links {:?}", s, l);
        }
        for h in &hubs {
            let others = links(&p, h).into_iter().filter(|x| hubs.contains(x)).count();
            prop_assert_eq!(others, hubs.len() - 1, "hubs mesh");
        }

        let mut more = hubs.clone();
        more.insert(extra.clone());
        let q = run(&mk(&more), &hub(&["hub"]));
        let mut moved = 0;
        for s in &spokes {
            let (was, now) = (links(&p, s), links(&q, s));
            let added: Vec<&String> = now.difference(&was).collect();
            prop_assert!(added.iter().all(|a| **a == extra), "{} gained {:?}", s, added);
            prop_assert!(was.difference(&now).count() <= added.len());
            moved += usize::from(!added.is_empty());
        }
        let names: Vec<&String> = spokes.iter().collect();
        let changed = spoke_link_churn(&p, &q, &names);
        let (h, n) = (hubs.len(), spokes.len());
        prop_assert!(changed <= 2 * moved);
        prop_assert!(changed <= 8 * n / (h + 1) + 8, "{changed} links for {n} spokes, {h} hubs");
    }
}
