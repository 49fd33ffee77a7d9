//! Membership, pure: which SyncPeers a policy selects, which of them another policy selects
//! too (contested), and which pods become topology members. Decided from the reflector caches,
//! never by asking the API server.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector, SelectorExt};
use kube::ResourceExt;

use crate::operator::crd::{SyncPeer, SyncPolicy};
use crate::operator::topology::Member;

/// `selector` as kube's [`Selector`], or what is wrong with it.
///
/// `In` and `NotIn` without `values` mean an empty set (so `In` matches nothing and `NotIn`
/// everything), as this operator has always read them; kube would refuse them instead.
pub fn selector(selector: &LabelSelector) -> Result<Selector, String> {
    let mut s: Selector = selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let mut req = req.clone();
        if matches!(req.operator.as_str(), "In" | "NotIn") {
            req.values.get_or_insert_with(Vec::new);
        }
        let what = format!("matchExpressions[{i}] ({} {})", req.key, req.operator);
        let e = Expression::try_from(req).map_err(|e| format!("{what}: {e}"))?;
        s.extend(e);
    }
    Ok(s)
}

/// Whether `labels` satisfy `selector` (an empty selector selects everything, an invalid one
/// nothing).
pub fn matches(selector_: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector(selector_).is_ok_and(|s| s.matches(labels))
}

/// What a policy selects.
#[derive(Debug, Default)]
pub struct Selection {
    /// Selected SyncPeers (in the policy's namespace), by name, deleted ones included.
    pub peers: Vec<Arc<SyncPeer>>,
    /// Selected peers that other policies select too, with those policies' names: such a peer
    /// belongs to neither policy.
    pub contested: BTreeMap<String, Vec<String>>,
    /// Why some selectors select nothing (they could not be read).
    pub invalid: Vec<String>,
    /// The policy's nodes serve HTTPS (`spec.tls`): pods are named by DNS name.
    pub tls: bool,
}

impl Selection {
    /// Peers being deleted: their pods leave the topology.
    pub fn deleting(&self) -> impl Iterator<Item = &Arc<SyncPeer>> {
        self.peers
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
    }

    /// Peers whose members take part: neither being deleted nor contested.
    pub fn taking_part(&self) -> impl Iterator<Item = &Arc<SyncPeer>> {
        self.peers.iter().filter(|p| {
            p.metadata.deletion_timestamp.is_none() && !self.contested.contains_key(&p.name_any())
        })
    }
}

fn in_namespace<K: ResourceExt>(o: &K, ns: Option<&str>) -> bool {
    o.namespace().as_deref() == ns
}

fn sorted_by_name<K: ResourceExt>(mut v: Vec<Arc<K>>) -> Vec<Arc<K>> {
    v.sort_by_key(|o| o.name_any());
    v
}

/// The policies (of `policies`, any namespace) that select `peer`, by name.
pub fn policies_selecting(peer: &SyncPeer, policies: &[Arc<SyncPolicy>]) -> Vec<Arc<SyncPolicy>> {
    let ns = peer.namespace();
    sorted_by_name(
        policies
            .iter()
            .filter(|p| in_namespace(p.as_ref(), ns.as_deref()))
            .filter(|p| matches(&p.spec.peer_selector, peer.labels()))
            .cloned()
            .collect(),
    )
}

/// What `policy` selects among `peers`, given every policy in `policies` (any namespace).
pub fn select(
    policy: &SyncPolicy,
    policies: &[Arc<SyncPolicy>],
    peers: &[Arc<SyncPeer>],
) -> Selection {
    let ns = policy.namespace();
    let name = policy.name_any();
    let mut invalid = Vec::new();
    let own = match selector(&policy.spec.peer_selector) {
        Ok(s) => Some(s),
        Err(e) => {
            invalid.push(format!("SyncPolicy {name} spec.peerSelector: {e}"));
            None
        }
    };
    let selected = sorted_by_name(
        peers
            .iter()
            .filter(|p| in_namespace(p.as_ref(), ns.as_deref()))
            .filter(|p| own.as_ref().is_some_and(|s| s.matches(p.labels())))
            .cloned()
            .collect(),
    );
    let mut contested = BTreeMap::new();
    for p in &selected {
        let others: Vec<String> = policies_selecting(p, policies)
            .iter()
            .map(|x| x.name_any())
            .filter(|n| *n != name)
            .collect();
        if !others.is_empty() {
            contested.insert(p.name_any(), others);
        }
    }
    Selection {
        peers: selected,
        contested,
        invalid,
        tls: policy.spec.tls.is_some(),
    }
}

/// Ready, not being deleted, and with an IP: a pod that can be a member.
pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The sync server's base URL of a pod at `port` (an IPv6 address in brackets).
pub fn pod_endpoint(pod: &Pod, port: u16, tls: bool) -> (String, Option<IpAddr>) {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or_default();
    if tls {
        // A certificate names a pod by its stable DNS name (a StatefulSet pod behind its
        // headless Service), never by its IP, which changes on every restart.
        let spec = pod.spec.as_ref();
        let hostname = spec.and_then(|s| s.hostname.as_deref());
        let subdomain = spec.and_then(|s| s.subdomain.as_deref());
        if let (Some(h), Some(d), Some(ns)) = (hostname, subdomain, pod.namespace()) {
            return (format!("https://{h}.{d}.{ns}.svc:{port}"), ip.parse().ok());
        }
    }
    let scheme = if tls { "https" } else { "http" };
    if ip.contains(':') {
        (format!("{scheme}://[{ip}]:{port}"), None)
    } else {
        (format!("{scheme}://{ip}:{port}"), None)
    }
}

/// The pods (in its namespace) that `peer` selects, by name; none for an external peer.
pub fn pods_of(peer: &SyncPeer, pods: &[Arc<Pod>]) -> Result<Vec<Arc<Pod>>, String> {
    let Some(sel) = &peer.spec.selector else {
        return Ok(Vec::new());
    };
    let sel =
        selector(sel).map_err(|e| format!("SyncPeer {} spec.selector: {e}", peer.name_any()))?;
    let ns = peer.namespace();
    Ok(sorted_by_name(
        pods.iter()
            .filter(|p| in_namespace(p.as_ref(), ns.as_deref()))
            .filter(|p| sel.matches(p.labels()))
            .cloned()
            .collect(),
    ))
}

/// A pod selected by a peer that is not (yet) a member: not ready or without an IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Absent {
    pub peer: String,
    pub pod: String,
}

/// The topology members of a selection, and the selected pods left out.
#[derive(Debug, Default)]
pub struct Membership {
    /// In peer order, each peer's pods by name; an external peer is one member.
    pub members: Vec<Member>,
    pub absent: Vec<Absent>,
    /// Why some peers contribute no pods (their selector could not be read).
    pub invalid: Vec<String>,
}

/// Members: the ready pods of the peers taking part, and their external endpoints.
pub fn membership(selection: &Selection, pods: &[Arc<Pod>]) -> Membership {
    let mut out = Membership::default();
    for peer in selection.taking_part() {
        let spec = &peer.spec;
        let member =
            |name: String, (endpoint, address): (String, Option<IpAddr>), managed: bool| Member {
                peer: peer.name_any(),
                name,
                endpoint,
                address,
                node_id: None,
                direction: spec.direction,
                collections: spec.collections.clone(),
                managed,
            };
        if let Some(endpoint) = &spec.endpoint {
            let endpoint = endpoint.trim_end_matches('/').to_string();
            out.members
                .push(member(peer.name_any(), (endpoint, None), false));
            continue;
        }
        let selected = match pods_of(peer, pods) {
            Ok(p) => p,
            Err(e) => {
                out.invalid.push(e);
                continue;
            }
        };
        for pod in selected {
            if pod_ready(&pod) {
                let endpoint = pod_endpoint(&pod, spec.effective_port(), selection.tls);
                out.members.push(member(pod.name_any(), endpoint, true));
            } else {
                out.absent.push(Absent {
                    peer: peer.name_any(),
                    pod: pod.name_any(),
                });
            }
        }
    }
    out
}

/// Endpoints of the ready pods of peers being deleted: their configs lose every peer.
pub fn leaving(selection: &Selection, pods: &[Arc<Pod>]) -> Vec<String> {
    selection
        .deleting()
        .flat_map(|peer| {
            let port = peer.spec.effective_port();
            pods_of(peer, pods)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| pod_ready(p))
                .map(move |p| pod_endpoint(&p, port, selection.tls).0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn policy(ns: &str, name: &str, selector: serde_json::Value) -> Arc<SyncPolicy> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ragsync.io/v1alpha1", "kind": "SyncPolicy",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"peerSelector": selector},
            }))
            .unwrap(),
        )
    }

    fn peer(ns: &str, name: &str, l: &[(&str, &str)], spec: serde_json::Value) -> Arc<SyncPeer> {
        let mut p: SyncPeer = serde_json::from_value(json!({
            "apiVersion": "ragsync.io/v1alpha1", "kind": "SyncPeer",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap();
        p.metadata.labels = Some(labels(l));
        Arc::new(p)
    }

    fn deleted(p: Arc<SyncPeer>) -> Arc<SyncPeer> {
        let mut p = (*p).clone();
        p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        Arc::new(p)
    }

    fn pod(ns: &str, name: &str, l: &[(&str, &str)], ip: &str, ready: bool) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .unwrap();
        p.metadata.labels = Some(labels(l));
        Arc::new(p)
    }

    fn names<K: ResourceExt>(v: &[Arc<K>]) -> Vec<String> {
        v.iter().map(|o| o.name_any()).collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("app", "rag"), ("region", "eu")]);
        assert!(matches(&LabelSelector::default(), &l));
        assert!(matches(&LabelSelector::default(), &BTreeMap::new()));
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "rag")])),
            match_expressions: Some(vec![req("region", "In", Some(&["eu", "us"]))]),
        };
        assert!(matches(&s, &l));
        assert!(!matches(&s, &labels(&[("app", "rag"), ("region", "ap")])));
        assert!(!matches(&s, &labels(&[("region", "eu")])));
        let s = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                req("tier", "NotIn", Some(&["cold"])),
                req("app", "Exists", None),
                req("legacy", "DoesNotExist", None),
            ]),
        };
        assert!(matches(&s, &l));
        assert!(!matches(&s, &labels(&[("app", "x"), ("tier", "cold")])));
        assert!(!matches(&s, &labels(&[("app", "x"), ("legacy", "1")])));
    }

    #[test]
    fn in_and_not_in_without_values_are_an_empty_set() {
        let only = |r| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![r]),
        };
        let l = labels(&[("app", "rag")]);
        assert!(!matches(&only(req("app", "In", None)), &l));
        assert!(matches(&only(req("app", "NotIn", None)), &l));
        assert!(matches(&only(req("other", "NotIn", None)), &l));
    }

    #[test]
    fn an_invalid_selector_selects_nothing_and_says_where_it_is_wrong() {
        let bad = LabelSelector {
            match_labels: Some(labels(&[("app", "rag")])),
            match_expressions: Some(vec![
                req("region", "Exists", None),
                req("app", "Bogus", None),
            ]),
        };
        assert!(!matches(&bad, &labels(&[("app", "rag"), ("region", "eu")])));
        let e = selector(&bad).unwrap_err();
        assert!(e.starts_with("matchExpressions[1] (app Bogus): "), "{e}");
        assert!(e.contains("operator"), "{e}");
    }

    #[test]
    fn the_selector_string_is_the_api_form() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "rag")])),
            match_expressions: Some(vec![
                req("region", "In", Some(&["us", "eu"])),
                req("legacy", "DoesNotExist", None),
            ]),
        };
        assert_eq!(
            selector(&s).unwrap().to_string(),
            "app=rag,region in (eu,us),!legacy"
        );
    }

    #[test]
    fn selection_is_by_namespace_and_name_and_marks_contested_peers() {
        let docs = policy("a", "docs", json!({"matchLabels": {"p": "docs"}}));
        let all = policy("a", "all", json!({"matchLabels": {"shared": "yes"}}));
        let elsewhere = policy("b", "docs", json!({}));
        let policies = [docs.clone(), all, elsewhere];
        let ext = json!({"endpoint": "http://x"});
        let peers = [
            peer("a", "zeta", &[("p", "docs")], ext.clone()),
            peer(
                "a",
                "alpha",
                &[("p", "docs"), ("shared", "yes")],
                ext.clone(),
            ),
            peer("a", "other", &[("p", "other")], ext.clone()),
            peer("b", "beta", &[("p", "docs")], ext),
        ];
        let sel = select(&docs, &policies, &peers);
        assert_eq!(names(&sel.peers), ["alpha", "zeta"]);
        assert_eq!(
            sel.contested,
            BTreeMap::from([("alpha".to_string(), vec!["all".to_string()])])
        );
        assert!(sel.invalid.is_empty());
        assert_eq!(
            names(&sel.taking_part().cloned().collect::<Vec<_>>()),
            ["zeta"]
        );
        assert_eq!(
            names(&policies_selecting(&peers[1], &policies)),
            ["all", "docs"]
        );
        assert_eq!(names(&policies_selecting(&peers[3], &policies)), ["docs"]);
    }

    #[test]
    fn an_invalid_policy_selector_selects_no_peer() {
        let bad = policy(
            "a",
            "bad",
            json!({"matchExpressions": [{"key": "p", "operator": "Bogus"}]}),
        );
        let peers = [peer(
            "a",
            "x",
            &[("p", "docs")],
            json!({"endpoint": "http://x"}),
        )];
        let sel = select(&bad, std::slice::from_ref(&bad), &peers);
        assert!(sel.peers.is_empty());
        assert_eq!(sel.invalid.len(), 1);
        assert!(sel.invalid[0].starts_with("SyncPolicy bad spec.peerSelector: matchExpressions[0]"));
    }

    #[test]
    fn ready_pods_and_external_endpoints_become_members() {
        let docs = policy("a", "docs", json!({}));
        let peers = [
            peer(
                "a",
                "in",
                &[],
                json!({"selector": {"matchLabels": {"app": "rag"}}, "port": 9000, "collections": ["c"]}),
            ),
            peer(
                "a",
                "out",
                &[],
                json!({"endpoint": "https://rag.example.com:8090/", "direction": "Pull"}),
            ),
            peer(
                "a",
                "gone",
                &[],
                json!({"selector": {"matchLabels": {"app": "old"}}}),
            ),
        ];
        let peers = [
            peers[0].clone(),
            peers[1].clone(),
            deleted(peers[2].clone()),
        ];
        let pods = [
            pod("a", "rag-1", &[("app", "rag")], "10.0.0.2", true),
            pod("a", "rag-0", &[("app", "rag")], "fd00::1", true),
            pod("a", "rag-2", &[("app", "rag")], "10.0.0.3", false),
            pod("a", "old-0", &[("app", "old")], "10.0.0.9", true),
            pod("b", "rag-9", &[("app", "rag")], "10.0.1.1", true),
        ];
        let sel = select(&docs, std::slice::from_ref(&docs), &peers);
        let m = membership(&sel, &pods);
        let got: Vec<(&str, &str, &str, bool)> = m
            .members
            .iter()
            .map(|x| {
                (
                    x.peer.as_str(),
                    x.name.as_str(),
                    x.endpoint.as_str(),
                    x.managed,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("in", "rag-0", "http://[fd00::1]:9000", true),
                ("in", "rag-1", "http://10.0.0.2:9000", true),
                ("out", "out", "https://rag.example.com:8090", false),
            ]
        );
        assert_eq!(m.members[0].collections, ["c"]);
        assert_eq!(m.members[2].direction, peers[1].spec.direction);
        assert_eq!(
            m.absent,
            [Absent {
                peer: "in".into(),
                pod: "rag-2".into()
            }]
        );
        assert_eq!(leaving(&sel, &pods), ["http://10.0.0.9:8090"]);
    }

    #[test]
    fn contested_peers_contribute_no_members() {
        let one = policy("a", "one", json!({}));
        let two = policy("a", "two", json!({}));
        let policies = [one.clone(), two];
        let peers = [peer(
            "a",
            "p",
            &[],
            json!({"selector": {"matchLabels": {"app": "rag"}}}),
        )];
        let pods = [pod("a", "rag-0", &[("app", "rag")], "10.0.0.2", true)];
        let sel = select(&one, &policies, &peers);
        assert_eq!(sel.contested["p"], ["two"]);
        let m = membership(&sel, &pods);
        assert!(m.members.is_empty() && m.absent.is_empty());
        assert!(leaving(&sel, &pods).is_empty());
    }

    #[test]
    fn a_pod_is_ready_only_with_an_ip_a_ready_condition_and_no_deletion() {
        assert!(pod_ready(&pod("a", "p", &[], "10.0.0.1", true)));
        assert!(!pod_ready(&pod("a", "p", &[], "10.0.0.1", false)));
        assert!(!pod_ready(&pod("a", "p", &[], "", true)));
        let mut p = (*pod("a", "p", &[], "10.0.0.1", true)).clone();
        p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        assert!(!pod_ready(&p));
        assert!(!pod_ready(&Pod::default()));
    }
}
