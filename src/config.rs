//! The sync configuration a node runs with: what `PUT /admin/config` takes and the operator
//! computes. Validation lives here so the node and the operator agree on what is valid.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hlc::Hlc;

/// Which way changes flow between this node and a peer.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This node pulls the peer's changes.
    Pull,
    /// This node pushes its changes to the peer.
    Push,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    pub fn pulls(self) -> bool {
        matches!(self, Direction::Pull | Direction::Both)
    }
    pub fn pushes(self) -> bool {
        matches!(self, Direction::Push | Direction::Both)
    }
}

/// How a concurrent update (neither version vector dominates) is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, ToSchema)]
pub enum ConflictStrategy {
    /// Greater `(hlc, node_id)` wins everywhere; converges in any topology.
    #[default]
    LastWriterWins,
    /// The receiving node's version wins. Converges only where one side is authoritative.
    PreferLocal,
    /// The incoming version wins. Converges only where one side is authoritative.
    PreferRemote,
    /// Collection settings merge field-wise (a semilattice join); documents use LWW.
    Merge,
}

/// One peer of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// A stable name for the peer (the operator uses the pod name).
    pub peer_id: String,
    /// Base URL of the peer's sync server, e.g. `http://10.0.0.6:8090`.
    pub endpoint: String,
    /// The IP address the endpoint's host name stands for, used instead of a DNS lookup
    /// (the operator names pods by their stable DNS names, which their certificates hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub address: Option<std::net::IpAddr>,
    #[serde(default)]
    pub direction: Direction,
    /// Collections exchanged with this peer; empty means all.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Collections never exchanged with this peer (applied after `collections`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_collections: Vec<String>,
}

/// The whole sync configuration of a node, replaced at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default = "default_interval")]
    #[schema(minimum = 1, maximum = 86_400)]
    pub interval_seconds: u64,
    #[serde(default = "default_batch")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub batch_size: usize,
    #[serde(default)]
    pub conflict_strategy: ConflictStrategy,
    /// Tombstones older than this HLC may be purged (set by the operator).
    #[serde(default)]
    pub gc_horizon: Option<Hlc>,
    /// Deliver changes as they commit (the default). Off, changes move only in the rounds
    /// every `interval_seconds` and on `POST /admin/sync`.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub live: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

fn default_interval() -> u64 {
    30
}
fn default_batch() -> usize {
    1000
}

pub const MAX_BATCH_SIZE: usize = 10_000;
pub const MAX_INTERVAL_SECONDS: u64 = 86_400;

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            peers: Vec::new(),
            interval_seconds: default_interval(),
            batch_size: default_batch(),
            conflict_strategy: ConflictStrategy::default(),
            gc_horizon: None,
            live: true,
        }
    }
}

impl SyncConfig {
    /// SHA-256 (hex) of the config as `GET /admin/config` serialises it: `/admin/status`
    /// reports it so the operator can tell whether its desired config is in place.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(self).expect("a SyncConfig always serialises");
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Checks every field; the error names the field and what is wrong with it.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_INTERVAL_SECONDS).contains(&self.interval_seconds) {
            return Err(format!(
                "interval_seconds must be between 1 and {MAX_INTERVAL_SECONDS}, got {}",
                self.interval_seconds
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}",
                self.batch_size
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut addresses = std::collections::BTreeMap::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.peer_id.trim().is_empty() {
                return Err(format!("peers[{i}].peer_id must not be empty"));
            }
            if !seen.insert(p.peer_id.as_str()) {
                return Err(format!(
                    "peers[{i}].peer_id '{}' is listed twice",
                    p.peer_id
                ));
            }
            validate_endpoint(&p.endpoint).map_err(|e| format!("peers[{i}].endpoint: {e}"))?;
            if let Some(ip) = p.address {
                let host = endpoint_dns_name(&p.endpoint).ok_or_else(|| {
                    format!(
                        "peers[{i}].address: '{}' names its host by IP; an address is only for a DNS name",
                        p.endpoint
                    )
                })?;
                if let Some((j, other)) = addresses.insert(host.clone(), (i, ip)) {
                    if other != ip {
                        return Err(format!(
                            "peers[{i}].address: {ip} for '{host}', but peers[{j}] says {other}"
                        ));
                    }
                }
            }
            for c in &p.collections {
                crate::model::validate_name(c)
                    .map_err(|e| format!("peers[{i}].collections: {e}"))?;
            }
            for c in &p.exclude_collections {
                crate::model::validate_name(c)
                    .map_err(|e| format!("peers[{i}].exclude_collections: {e}"))?;
            }
        }
        Ok(())
    }
}

/// The host of `endpoint` when it is a DNS name (not an IP address).
pub fn endpoint_dns_name(endpoint: &str) -> Option<String> {
    match url::Url::parse(endpoint).ok()?.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        _ => None,
    }
}

/// An endpoint must be an absolute http(s) URL with a host and nothing after the path.
pub fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("'{endpoint}' is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("'{endpoint}' must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{endpoint}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{endpoint}' must not have a query or fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_design_example_and_defaults() {
        let c: SyncConfig = serde_json::from_str(
            r#"{"peers": [{"peer_id": "rag-1", "endpoint": "http://10.0.0.6:8090",
              "direction": "pull", "collections": []}],
              "interval_seconds": 30, "batch_size": 1000,
              "conflict_strategy": "LastWriterWins", "gc_horizon": null}"#,
        )
        .unwrap();
        assert_eq!(c.peers[0].direction, Direction::Pull);
        c.validate().unwrap();
        let d: SyncConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(d, SyncConfig::default());
    }

    #[test]
    fn live_is_the_default_and_only_its_absence_is_written() {
        let d = SyncConfig::default();
        assert!(d.live);
        assert!(!serde_json::to_string(&d).unwrap().contains("live"));
        let off: SyncConfig = serde_json::from_str(r#"{"live": false}"#).unwrap();
        assert!(!off.live);
        let text = serde_json::to_string(&off).unwrap();
        assert!(text.contains(r#""live":false"#), "{text}");
        assert_eq!(serde_json::from_str::<SyncConfig>(&text).unwrap(), off);
    }

    #[test]
    fn rejects_bad_fields_with_their_names() {
        let c = SyncConfig {
            batch_size: 0,
            ..SyncConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("batch_size"));
        let mut c = SyncConfig::default();
        c.peers.push(PeerConfig {
            peer_id: "a".into(),
            endpoint: "ftp://x".into(),
            address: None,
            direction: Direction::Both,
            collections: vec![],
            exclude_collections: vec![],
        });
        assert!(c.validate().unwrap_err().contains("peers[0].endpoint"));
        assert!(serde_json::from_str::<SyncConfig>(r#"{"bogus": 1}"#).is_err());
        assert!(serde_json::from_str::<SyncConfig>(r#"{"conflict_strategy": "Nope"}"#).is_err());
    }
}
