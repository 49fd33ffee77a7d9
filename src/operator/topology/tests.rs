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
        live: true,
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
