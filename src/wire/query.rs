//! Query parameters: encoded by the clients, parsed (with a 400 that names the parameter)
//! by the servers.

use std::time::Duration;

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::{validate_name, Change, NodeId};
use crate::wire::sync::{DEFAULT_PAGE, MAX_PAGE};

/// Which changes a pull wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// Only these collections; empty means all.
    pub collections: Vec<String>,
    /// Never these collections (e.g. while their embedding settings disagree).
    pub exclude_collections: Vec<String>,
    /// Leave out entries that are only the puller's own writes (echo suppression).
    pub exclude_origin: Option<NodeId>,
}

impl ChangeFilter {
    /// Whether `change` passes. Echo suppression drops an entry only when its whole history
    /// is the excluded node's and it carries no conflicts, so merged versions still flow back.
    pub fn admits(&self, change: &Change) -> bool {
        if !self.collections.is_empty()
            && !self
                .collections
                .iter()
                .any(|c| c == change.body.collection())
        {
            return false;
        }
        if self
            .exclude_collections
            .iter()
            .any(|c| c == change.body.collection())
        {
            return false;
        }
        if let Some(origin) = self.exclude_origin {
            let own_only = change.version.node == origin
                && change.version.vv.0.keys().all(|n| *n == origin)
                && change.conflicts.is_empty();
            if own_only {
                return false;
            }
        }
        true
    }
}

/// Longest a `GET /sync/changes` may wait for a change.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// `GET /sync/changes?since=&limit=&collections=&exclude_collections=&exclude_origin=&wait=&quiet=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesQuery {
    pub since: Hlc,
    pub limit: usize,
    pub filter: ChangeFilter,
    /// When nothing lies after `since`: how long to hold the request for a commit.
    pub wait: Option<Duration>,
    /// With `wait`: changes last written by these nodes do not end the wait (the puller
    /// receives them from those nodes directly); they are still in the page when something
    /// else, or the deadline, ends it.
    pub quiet: Vec<NodeId>,
    /// The store incarnation the client expects; another one answers 409 (its checkpoint
    /// belongs to the old one).
    pub incarnation: Option<String>,
}

/// The raw parameters of [`ChangesQuery`], as axum's `Query` extracts them.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// The changes after this cursor of this node's log (default: from the start).
    #[param(value_type = Option<Hlc>)]
    since: Option<String>,
    /// Changes per page (default 1000; larger values are clamped to 10000).
    #[param(value_type = Option<u32>, minimum = 1)]
    limit: Option<String>,
    /// Only these collections (comma-separated; default all).
    #[param(
        pattern = "^([A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(,([A-Za-z0-9_][A-Za-z0-9._-]{0,127})?)*$"
    )]
    collections: Option<String>,
    /// Not these collections (comma-separated).
    #[param(
        pattern = "^([A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(,([A-Za-z0-9_][A-Za-z0-9._-]{0,127})?)*$"
    )]
    exclude_collections: Option<String>,
    /// The caller's node id: its own writes are left out, and it shows up in `pullers`.
    #[param(value_type = Option<NodeId>)]
    exclude_origin: Option<String>,
    /// When nothing lies after `since`, hold the request this long for a commit (whole
    /// `ms` or `s`, at most 30s; longer waits are clamped).
    #[param(pattern = "^[0-9]{1,12}m?s$")]
    wait: Option<String>,
    /// With `wait`: changes last written by these nodes (comma-separated ids, at most 1024)
    /// do not end the wait.
    #[param(pattern = "^[0-9a-f]{4}(,[0-9a-f]{4}){0,1023}$")]
    quiet: Option<String>,
    /// The store incarnation the caller's checkpoint belongs to; another answers 409.
    #[param(pattern = "^[0-9a-fA-F]+$")]
    incarnation: Option<String>,
}

impl ChangesQuery {
    /// The path and query of the request.
    pub fn to_path_and_query(&self) -> String {
        let mut q = format!("/sync/changes?since={}&limit={}", self.since, self.limit);
        push_list(&mut q, "collections", &self.filter.collections);
        push_list(
            &mut q,
            "exclude_collections",
            &self.filter.exclude_collections,
        );
        if let Some(o) = self.filter.exclude_origin {
            q.push_str("&exclude_origin=");
            q.push_str(&o.to_hex());
        }
        if let Some(w) = self.wait {
            q.push_str(&format!("&wait={}ms", w.as_millis()));
        }
        if !self.quiet.is_empty() {
            let ids: Vec<String> = self.quiet.iter().map(|n| n.to_hex()).collect();
            q.push_str("&quiet=");
            q.push_str(&ids.join(","));
        }
        if let Some(i) = &self.incarnation {
            q.push_str("&incarnation=");
            q.push_str(i);
        }
        q
    }

    pub fn parse(p: ChangesParams) -> Result<ChangesQuery> {
        Ok(ChangesQuery {
            since: parse_hlc(p.since.as_deref(), "since")?,
            limit: parse_limit(p.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?,
            filter: ChangeFilter {
                collections: parse_collections(p.collections.as_deref(), "collections")?,
                exclude_collections: parse_collections(
                    p.exclude_collections.as_deref(),
                    "exclude_collections",
                )?,
                exclude_origin: p
                    .exclude_origin
                    .as_deref()
                    .map(|s| {
                        NodeId::from_hex(s).map_err(|e| Error::bad(format!("exclude_origin: {e}")))
                    })
                    .transpose()?,
            },
            wait: parse_wait(p.wait.as_deref())?.filter(|w| !w.is_zero()),
            quiet: parse_node_ids(p.quiet.as_deref(), "quiet")?,
            incarnation: p
                .incarnation
                .map(|i| {
                    if !i.is_empty() && i.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Ok(i)
                    } else {
                        Err(Error::bad(format!(
                            "incarnation must be the hex id from /sync/watermark, got '{i}'"
                        )))
                    }
                })
                .transpose()?,
        })
    }
}

/// Parses a comma-separated list of node ids in hex, at most [`MAX_QUIET`].
pub fn parse_node_ids(param: Option<&str>, field: &str) -> Result<Vec<NodeId>> {
    let Some(s) = param else {
        return Ok(Vec::new());
    };
    let ids: Vec<NodeId> = s
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| NodeId::from_hex(n).map_err(|e| Error::bad(format!("{field}: {e}"))))
        .collect::<Result<_>>()?;
    if ids.len() > MAX_QUIET {
        return Err(Error::bad(format!(
            "{field} lists at most {MAX_QUIET} node ids, got {}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// Most node ids a `quiet` list may hold (a node id is 16 bits).
pub const MAX_QUIET: usize = 1024;

/// Parses `wait`: a whole number of `ms` or `s`, clamped to [`MAX_WAIT`].
pub fn parse_wait(param: Option<&str>) -> Result<Option<Duration>> {
    let Some(s) = param else {
        return Ok(None);
    };
    let bad = || {
        Error::bad(format!(
            "wait must be a whole number of ms or s (e.g. 250ms, 25s), got '{s}'"
        ))
    };
    let (digits, unit): (&str, fn(u64) -> Duration) = if let Some(n) = s.strip_suffix("ms") {
        (n, Duration::from_millis)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, Duration::from_secs)
    } else {
        return Err(bad());
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().unwrap_or(u64::MAX);
    Ok(Some(unit(n.min(MAX_WAIT.as_millis() as u64)).min(MAX_WAIT)))
}

/// `GET /admin/backlog?since=&collections=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogQuery {
    pub since: Hlc,
    pub collections: Vec<String>,
}

/// The raw parameters of [`BacklogQuery`].
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BacklogParams {
    /// Count the log after this cursor (default: from the start).
    #[param(value_type = Option<Hlc>)]
    since: Option<String>,
    /// Only these collections (comma-separated; default all).
    #[param(
        pattern = "^([A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(,([A-Za-z0-9_][A-Za-z0-9._-]{0,127})?)*$"
    )]
    collections: Option<String>,
}

impl BacklogQuery {
    pub fn to_path_and_query(&self) -> String {
        let mut q = format!("/admin/backlog?since={}", self.since);
        push_list(&mut q, "collections", &self.collections);
        q
    }

    pub fn parse(p: BacklogParams) -> Result<BacklogQuery> {
        Ok(BacklogQuery {
            since: parse_hlc(p.since.as_deref(), "since")?,
            collections: parse_collections(p.collections.as_deref(), "collections")?,
        })
    }
}

fn push_list(q: &mut String, name: &str, list: &[String]) {
    if !list.is_empty() {
        q.push('&');
        q.push_str(name);
        q.push('=');
        q.push_str(&list.join(","));
    }
}

/// Parses a comma-separated list of collection names (empty means none).
pub fn parse_collections(param: Option<&str>, field: &str) -> Result<Vec<String>> {
    let Some(s) = param else {
        return Ok(Vec::new());
    };
    s.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            validate_name(c)
                .map(|_| c.to_string())
                .map_err(|e| Error::bad(format!("{field}: {e}")))
        })
        .collect()
}

/// Parses `limit`: a positive integer, clamped to `max`.
pub fn parse_limit(param: Option<&str>, default: usize, max: usize) -> Result<usize> {
    match param {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok((n as usize).min(max)),
            Ok(n) => Err(Error::bad(format!("limit must be at least 1, got {n}"))),
            Err(_) => Err(Error::bad(format!(
                "limit must be a positive integer, got '{s}'"
            ))),
        },
    }
}

/// Parses an HLC in hex; absent means zero.
pub fn parse_hlc(param: Option<&str>, field: &str) -> Result<Hlc> {
    match param {
        None => Ok(Hlc::ZERO),
        Some(s) => Hlc::from_hex(s).map_err(|e| Error::bad(format!("{field}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> ChangesParams {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).unwrap()
    }

    #[test]
    fn a_changes_query_reads_back_what_the_client_wrote() {
        let q = ChangesQuery {
            since: Hlc::new(1_700_000_000_000, 5),
            limit: 250,
            filter: ChangeFilter {
                collections: vec!["a".into(), "b".into()],
                exclude_collections: vec!["z".into()],
                exclude_origin: Some(NodeId(0x2a)),
            },
            wait: Some(Duration::from_millis(25_000)),
            quiet: vec![NodeId(0x2b), NodeId(0x2c)],
            incarnation: Some("0123abcd".into()),
        };
        let written = q.to_path_and_query();
        let query = written.strip_prefix("/sync/changes?").unwrap();
        assert_eq!(ChangesQuery::parse(params(query)).unwrap(), q);
    }

    #[test]
    fn a_limit_above_the_largest_page_is_clamped_and_bad_ones_are_named() {
        assert_eq!(
            ChangesQuery::parse(params("limit=999999")).unwrap().limit,
            MAX_PAGE
        );
        assert_eq!(ChangesQuery::parse(params("")).unwrap().limit, DEFAULT_PAGE);
        let e = ChangesQuery::parse(params("limit=0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit must be at least 1"), "{e}");
        let e = ChangesQuery::parse(params("since=xyz"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("since:") || e.contains("since"), "{e}");
        let e = ChangesQuery::parse(params("collections=ok,.bad"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("collections"), "{e}");
    }

    #[test]
    fn quiet_is_a_list_of_node_ids_and_a_bad_one_is_named() {
        let quiet = |q: &str| ChangesQuery::parse(params(q)).map(|q| q.quiet);
        assert_eq!(quiet("").unwrap(), vec![]);
        assert_eq!(
            quiet("quiet=0001,00ff").unwrap(),
            vec![NodeId(1), NodeId(0xff)]
        );
        let e = quiet("quiet=0001,zz").unwrap_err().to_string();
        assert!(e.starts_with("quiet:"), "{e}");
        let many: Vec<String> = (0..=MAX_QUIET as u16).map(|n| NodeId(n).to_hex()).collect();
        let e = quiet(&format!("quiet={}", many.join(",")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn wait_is_ms_or_s_clamped_and_anything_else_is_named() {
        let wait = |q: &str| ChangesQuery::parse(params(q)).map(|q| q.wait);
        assert_eq!(
            wait("wait=250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(wait("wait=25s").unwrap(), Some(Duration::from_secs(25)));
        assert_eq!(wait("wait=3600s").unwrap(), Some(MAX_WAIT));
        assert_eq!(wait("wait=99999999999999999999ms").unwrap(), Some(MAX_WAIT));
        assert_eq!(wait("wait=0s").unwrap(), None);
        assert_eq!(wait("").unwrap(), None);
        for bad in [
            "wait=abc",
            "wait=5",
            "wait=-1s",
            "wait=1.5s",
            "wait=s",
            "wait=2m",
        ] {
            let e = wait(bad).unwrap_err().to_string();
            assert!(e.starts_with("wait must be"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_backlog_query_reads_back_what_the_operator_wrote() {
        let q = BacklogQuery {
            since: Hlc::new(1_700_000_000_000, 0),
            collections: vec!["docs".into()],
        };
        let written = q.to_path_and_query();
        let query = written.strip_prefix("/admin/backlog?").unwrap();
        let pairs: serde_json::Map<String, serde_json::Value> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
        let p: BacklogParams = serde_json::from_value(serde_json::Value::Object(pairs)).unwrap();
        assert_eq!(BacklogQuery::parse(p).unwrap(), q);
    }
}
