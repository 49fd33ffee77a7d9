//! RAG safety: a collection is never synced with a peer whose embedding model for it differs,
//! so vectors of different models never mix.

use crate::error::Result;
use crate::model::Value;
use crate::store::Store;
use crate::wire::CollectionSummary;

/// This node's live collections and their embedding settings.
pub async fn local_collections(store: &dyn Store) -> Result<Vec<CollectionSummary>> {
    Ok(store
        .list_collections()
        .await?
        .into_iter()
        .filter_map(|r| match r.value {
            Value::Collection { settings, .. } => Some(CollectionSummary {
                name: r.key.collection,
                embedding: settings.embedding,
            }),
            _ => None,
        })
        .collect())
}

/// Collections whose embedding models differ between two nodes, with a message each.
pub fn embedding_mismatches(
    local: &[CollectionSummary],
    remote: &[CollectionSummary],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in local {
        if let Some(r) = remote.iter().find(|r| r.name == l.name) {
            let (a, b) = (&l.embedding, &r.embedding);
            let model_differs = matches!((&a.model, &b.model), (Some(x), Some(y)) if x != y);
            let dims_differ = matches!((a.dimensions, b.dimensions), (Some(x), Some(y)) if x != y);
            if model_differs || dims_differ {
                out.push((
                    l.name.clone(),
                    format!(
                        "collection '{}' uses embedding model {:?} ({:?} dims) here but {:?} ({:?} dims) on the peer; its sync with this peer is stopped until the settings agree",
                        l.name, a.model, a.dimensions, b.model, b.dimensions
                    ),
                ));
            }
        }
    }
    out
}
