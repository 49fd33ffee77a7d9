//! The data API of the reference node: collections and documents.

use axum::extract::State;
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::http::{Json, Path, Query};
use crate::model::{Document, Metadata, Record, RecordKey, Value};
use crate::node::NodeState;
use crate::wire::data::{
    CollectionBody, CollectionDeleted, CollectionList, CollectionView, DocumentBody,
    DocumentConflicts, DocumentDeleted, DocumentList, DocumentView,
};
use crate::wire::query::parse_limit;

pub fn routes() -> Router<NodeState> {
    Router::new()
        .route("/collections", get(list_collections))
        .route(
            "/collections/{name}",
            put(put_collection)
                .get(get_collection)
                .delete(delete_collection),
        )
        .route("/collections/{name}/documents", get(list_documents))
        .route(
            "/collections/{name}/documents/{id}",
            put(put_document).get(get_document).delete(delete_document),
        )
        .route(
            "/collections/{name}/documents/{id}/conflicts",
            get(document_conflicts),
        )
}

fn collection_view(r: Record) -> Result<CollectionView> {
    match r.value {
        Value::Collection { settings, .. } => Ok(CollectionView {
            name: r.key.collection,
            settings,
            version: r.version,
        }),
        _ => Err(Error::NotFound(format!(
            "collection '{}' does not exist",
            r.key.collection
        ))),
    }
}

fn document_view(r: Record) -> Result<DocumentView> {
    match r.value {
        Value::Document { document } => Ok(DocumentView {
            id: document.id,
            content: document.content,
            metadata: document.metadata,
            embedding: document.embedding,
            version: r.version,
        }),
        _ => Err(Error::NotFound(format!(
            "document '{}' does not exist in collection '{}'",
            r.key.id, r.key.collection
        ))),
    }
}

async fn list_collections(State(s): State<NodeState>) -> Result<Json<CollectionList>> {
    let list = s
        .store
        .list_collections()
        .await?
        .into_iter()
        .map(collection_view)
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(CollectionList { collections: list }))
}

async fn put_collection(
    State(s): State<NodeState>,
    Path(name): Path<String>,
    Json(body): Json<CollectionBody>,
) -> Result<Json<CollectionView>> {
    let r = s.store.put_collection(&name, body.settings).await?;
    Ok(Json(collection_view(r)?))
}

async fn get_collection(
    State(s): State<NodeState>,
    Path(name): Path<String>,
) -> Result<Json<CollectionView>> {
    crate::model::validate_name(&name).map_err(Error::BadRequest)?;
    match s.store.get_collection(&name).await? {
        Some(r) => Ok(Json(collection_view(r)?)),
        None => Err(Error::NotFound(format!(
            "collection '{name}' does not exist"
        ))),
    }
}

async fn delete_collection(
    State(s): State<NodeState>,
    Path(name): Path<String>,
) -> Result<Json<CollectionDeleted>> {
    let r = s.store.delete_collection(&name).await?;
    Ok(Json(CollectionDeleted {
        name,
        deleted: true,
        version: r.version,
    }))
}

async fn put_document(
    State(s): State<NodeState>,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<DocumentBody>,
) -> Result<Json<DocumentView>> {
    let doc = Document {
        id,
        content: body.content,
        metadata: Metadata::from_value(body.metadata).map_err(Error::bad)?,
        embedding: body.embedding,
    };
    let r = s.store.put_document(&name, doc).await?;
    Ok(Json(document_view(r)?))
}

async fn get_document(
    State(s): State<NodeState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<DocumentView>> {
    crate::model::validate_name(&name).map_err(Error::BadRequest)?;
    crate::model::validate_doc_id(&id).map_err(Error::BadRequest)?;
    let store = &s.store;
    if store.get_collection(&name).await?.is_none() {
        return Err(Error::NotFound(format!(
            "collection '{name}' does not exist"
        )));
    }
    match store.get_record(&RecordKey::document(&name, &id)).await? {
        Some(r) => Ok(Json(document_view(r)?)),
        None => Err(Error::NotFound(format!(
            "document '{id}' does not exist in collection '{name}'"
        ))),
    }
}

async fn delete_document(
    State(s): State<NodeState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<DocumentDeleted>> {
    let r = s.store.delete_document(&name, &id).await?;
    Ok(Json(DocumentDeleted {
        id,
        deleted: true,
        version: r.version,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
}

async fn list_documents(
    State(s): State<NodeState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<DocumentList>> {
    crate::model::validate_name(&name).map_err(Error::BadRequest)?;
    let limit = parse_limit(q.limit.as_deref(), 100, 1000)?;
    let store = &s.store;
    if store.get_collection(&name).await?.is_none() {
        return Err(Error::NotFound(format!(
            "collection '{name}' does not exist"
        )));
    }
    let page = store
        .list_documents(&name, q.after.as_deref(), limit)
        .await?;
    let docs = page
        .documents
        .into_iter()
        .map(document_view)
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(DocumentList {
        documents: docs,
        next: page.next,
    }))
}

async fn document_conflicts(
    State(s): State<NodeState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<DocumentConflicts>> {
    crate::model::validate_name(&name).map_err(Error::BadRequest)?;
    crate::model::validate_doc_id(&id).map_err(Error::BadRequest)?;
    let store = &s.store;
    if store
        .get_record(&RecordKey::document(&name, &id))
        .await?
        .is_none()
    {
        return Err(Error::NotFound(format!(
            "document '{id}' does not exist in collection '{name}'"
        )));
    }
    let entries = store.conflicts(Some(&name), Some(&id)).await?;
    let conflicts = entries.into_iter().flat_map(|e| e.losers).collect();
    Ok(Json(DocumentConflicts { id, conflicts }))
}
