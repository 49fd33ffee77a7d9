//! The data API of the reference node: collections and documents.

use axum::extract::State;
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{Error, Result};
use crate::http::{Json, Path, Query};
use crate::model::{Document, Metadata, Record, RecordKey, Value};
use crate::node::NodeState;
use crate::wire::data::{
    CollectionBody, CollectionDeleted, CollectionList, CollectionPath, CollectionView,
    DocumentBody, DocumentConflicts, DocumentDeleted, DocumentList, DocumentPath, DocumentView,
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

/// Every collection, in name order.
#[utoipa::path(get, path = "/collections", tag = "data",
    responses((status = 200, description = "The collections.", body = CollectionList)))]
pub async fn list_collections(State(s): State<NodeState>) -> Result<Json<CollectionList>> {
    let list = s
        .store
        .list_collections()
        .await?
        .into_iter()
        .map(collection_view)
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(CollectionList { collections: list }))
}

/// Creates a collection or updates its settings.
#[utoipa::path(put, path = "/collections/{name}", tag = "data",
    params(CollectionPath),
    request_body = CollectionBody,
    responses(
        (status = 200, description = "The collection as stored.", body = CollectionView),
        (status = 400, description = "Settings that break a rule the schema cannot state (`chunking.min_tokens` above `max_tokens`, `overlap_tokens` not below it), or an invalid body.", body = crate::error::ErrorBody),
        (status = 409, description = "The embedding settings differ from the collection's documents.", body = crate::error::ErrorBody),
        (status = 413, description = "The body is too large.", body = crate::error::ErrorBody),
        (status = 507, description = "The disk is full.", body = crate::error::ErrorBody)))]
pub async fn put_collection(
    State(s): State<NodeState>,
    Path(name): Path<String>,
    Json(body): Json<CollectionBody>,
) -> Result<Json<CollectionView>> {
    let r = s.store.put_collection(&name, body.settings).await?;
    Ok(Json(collection_view(r)?))
}

#[utoipa::path(get, path = "/collections/{name}", tag = "data",
    params(CollectionPath),
    responses(
        (status = 200, description = "The collection.", body = CollectionView),
        (status = 404, description = "No such collection.", body = crate::error::ErrorBody)))]
pub async fn get_collection(
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

/// Deletes a collection and its documents (a tombstone that replicates).
#[utoipa::path(delete, path = "/collections/{name}", tag = "data",
    params(CollectionPath),
    responses(
        (status = 200, description = "Deleted.", body = CollectionDeleted),
        (status = 404, description = "No such collection.", body = crate::error::ErrorBody),
        (status = 507, description = "The disk is full.", body = crate::error::ErrorBody)))]
pub async fn delete_collection(
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

/// Creates or replaces a document.
#[utoipa::path(put, path = "/collections/{name}/documents/{id}", tag = "data",
    params(DocumentPath),
    request_body = DocumentBody,
    responses(
        (status = 200, description = "The document as stored.", body = DocumentView),
        (status = 400, description = "An embedding whose dimension differs from the collection's `embedding.dimensions`, or an invalid body.", body = crate::error::ErrorBody),
        (status = 404, description = "No such collection.", body = crate::error::ErrorBody),
        (status = 409, description = "The embedding does not fit the collection's embedding settings.", body = crate::error::ErrorBody),
        (status = 413, description = "The body is too large.", body = crate::error::ErrorBody),
        (status = 507, description = "The disk is full.", body = crate::error::ErrorBody)))]
pub async fn put_document(
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

#[utoipa::path(get, path = "/collections/{name}/documents/{id}", tag = "data",
    params(DocumentPath),
    responses(
        (status = 200, description = "The document.", body = DocumentView),
        (status = 404, description = "No such collection or document.", body = crate::error::ErrorBody)))]
pub async fn get_document(
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

/// Deletes a document (a tombstone that replicates).
#[utoipa::path(delete, path = "/collections/{name}/documents/{id}", tag = "data",
    params(DocumentPath),
    responses(
        (status = 200, description = "Deleted.", body = DocumentDeleted),
        (status = 404, description = "No such collection or document.", body = crate::error::ErrorBody),
        (status = 507, description = "The disk is full.", body = crate::error::ErrorBody)))]
pub async fn delete_document(
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next` of the previous page: the documents after this id.
    after: Option<String>,
    /// Documents per page (default 100; larger values are clamped to 1000).
    #[param(value_type = Option<u32>, minimum = 1)]
    limit: Option<String>,
}

/// A page of a collection's documents in id order.
#[utoipa::path(get, path = "/collections/{name}/documents", tag = "data",
    params(CollectionPath, ListQuery),
    responses(
        (status = 200, description = "A page of documents.", body = DocumentList),
        (status = 404, description = "No such collection.", body = crate::error::ErrorBody)))]
pub async fn list_documents(
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

/// The losing versions a document keeps.
#[utoipa::path(get, path = "/collections/{name}/documents/{id}/conflicts", tag = "data",
    params(DocumentPath),
    responses(
        (status = 200, description = "Its retained conflicts.", body = DocumentConflicts),
        (status = 404, description = "No such document.", body = crate::error::ErrorBody)))]
pub async fn document_conflicts(
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
