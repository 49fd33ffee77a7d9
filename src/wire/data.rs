//! Bodies of the data API (`/collections/...`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::model::{CollectionSettings, ConflictVersion, Metadata, Version};

/// The path parameter of `/collections/{name}` and the routes below it, as the OpenAPI
/// document describes it (the handlers take the segment as a string and validate it).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CollectionPath {
    /// Collection name.
    #[param(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    pub name: String,
}

/// The path parameters of `/collections/{name}/documents/{id}` and the routes below it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DocumentPath {
    /// Collection name.
    #[param(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    pub name: String,
    /// Document id (at most 512 bytes of UTF-8).
    #[param(pattern = "^[^/\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    pub id: String,
}

/// `PUT /collections/{name}` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionBody {
    #[serde(default)]
    pub settings: CollectionSettings,
}

/// A collection as the data API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CollectionView {
    pub name: String,
    pub settings: CollectionSettings,
    pub version: Version,
}

/// `GET /collections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CollectionList {
    pub collections: Vec<CollectionView>,
}

/// `PUT /collections/{name}/documents/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    pub content: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A document as the data API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentView {
    pub id: String,
    pub content: String,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    pub version: Version,
}

/// `GET /collections/{name}/documents`: a page in id order; `next` is the `after` of the
/// next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentView>,
    pub next: Option<String>,
}

/// `DELETE /collections/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CollectionDeleted {
    pub name: String,
    pub deleted: bool,
    pub version: Version,
}

/// `DELETE /collections/{name}/documents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentDeleted {
    pub id: String,
    pub deleted: bool,
    pub version: Version,
}

/// `GET /collections/{name}/documents/{id}/conflicts`: the losing versions it keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentConflicts {
    pub id: String,
    pub conflicts: Vec<ConflictVersion>,
}
