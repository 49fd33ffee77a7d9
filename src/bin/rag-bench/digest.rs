//! What "B holds exactly A's records" means: a count and an order-independent digest of a
//! node's whole log, read through `GET /sync/changes`.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::call;
use crate::nodes::Node;

/// Count and order-independent digest of a node's records: every change of its log,
/// without the node-local cursor and with Insert/Update (node-local history) folded.
pub async fn digest(http: &reqwest::Client, node: String) -> Result<(u64, u128)> {
    let mut since = "0000000000000000".to_string();
    let (mut count, mut sum) = (0u64, 0u128);
    loop {
        let page = call(
            http,
            reqwest::Method::GET,
            format!("{node}/sync/changes?since={since}&limit=10000"),
            None,
        )
        .await?;
        let changes = page["changes"]
            .as_array()
            .ok_or_else(|| anyhow!("no changes array from {node}"))?;
        for c in changes {
            sum = sum.wrapping_add(record_hash(c)?);
            count += 1;
        }
        since = page["watermark"]
            .as_str()
            .ok_or_else(|| anyhow!("no watermark"))?
            .to_string();
        if !page["has_more"].as_bool().unwrap_or(false) {
            return Ok((count, sum));
        }
    }
}

/// The first 16 bytes of the SHA-256 of one change as a record: without its cursor, an
/// insert counted as an update, and keys in sorted order (`Value`'s Display, with
/// serde_json's `Map` a `BTreeMap`), so that equal records hash equally on every node.
fn record_hash(change: &Value) -> Result<u128> {
    let mut c = change.clone();
    let obj = c
        .as_object_mut()
        .ok_or_else(|| anyhow!("change is not an object"))?;
    obj.remove("cursor");
    if obj.get("op").and_then(Value::as_str) == Some("DocumentInsert") {
        obj.insert("op".into(), json!("DocumentUpdate"));
    }
    let h = Sha256::digest(c.to_string().as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    Ok(u128::from_le_bytes(b))
}

/// Checks that `a` and `b` hold the same records; returns how many.
pub async fn same_records(http: &reqwest::Client, a: &Node, b: &Node) -> Result<u64> {
    let (da, db) = futures::try_join!(digest(http, a.url()), digest(http, b.url()))?;
    if da != db {
        bail!(
            "{} and {} differ: {} records (digest {:032x}) vs {} records (digest {:032x})",
            a.name,
            b.name,
            da.0,
            da.1,
            db.0,
            db.1
        );
    }
    Ok(da.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_writes_object_keys_sorted_at_every_depth() {
        let v: Value =
            serde_json::from_str(r#"{"z": {"y": 1, "b": [{"q": null, "a": "x"}]}, "a": 2.5}"#)
                .unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"a":2.5,"z":{"b":[{"a":"x","q":null}],"y":1}}"#
        );
    }

    #[test]
    fn equal_records_hash_equally_whatever_their_key_order_cursor_and_insert_or_update() {
        let on_a: Value = serde_json::from_str(
            r#"{"cursor": "0001", "op": "DocumentInsert", "collection": "docs",
                "document": {"id": "d", "metadata": {"rev": 0, "lang": "en"}}}"#,
        )
        .unwrap();
        let on_b: Value = serde_json::from_str(
            r#"{"document": {"metadata": {"lang": "en", "rev": 0}, "id": "d"},
                "collection": "docs", "op": "DocumentUpdate", "cursor": "0009"}"#,
        )
        .unwrap();
        assert_eq!(record_hash(&on_a).unwrap(), record_hash(&on_b).unwrap());
        let other: Value = serde_json::from_str(
            r#"{"cursor": "0001", "op": "DocumentInsert", "collection": "docs",
                "document": {"id": "d", "metadata": {"rev": 1, "lang": "en"}}}"#,
        )
        .unwrap();
        assert_ne!(record_hash(&on_a).unwrap(), record_hash(&other).unwrap());
        assert!(record_hash(&json!([1])).is_err());
    }
}
