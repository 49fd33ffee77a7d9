//! The node's HTTP API as an OpenAPI 3.1 document, generated from the handlers' annotations
//! and the wire types' schemas, served at `GET /openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::sync::server as sync;

use super::{admin, data};

#[derive(OpenApi)]
#[openapi(
    info(title = "rag-node", description = "A rag-sync node: the data API, the sync API its peers call, and the admin API the operator drives."),
    paths(
        data::list_collections, data::put_collection, data::get_collection,
        data::delete_collection, data::list_documents, data::put_document,
        data::get_document, data::delete_document, data::document_conflicts,
        sync::watermark, sync::changes, sync::push, sync::conflicts, sync::collections,
        admin::get_config, admin::put_config, admin::sync_now, admin::status,
        admin::backlog, admin::healthz, admin::readyz, admin::metrics, openapi_json,
    ),
    components(schemas(ErrorBody)),
    security(("bearer" = []), ("header" = [])),
    modifiers(&Common),
    tags(
        (name = "data", description = "Collections and documents. Either token opens it."),
        (name = "sync", description = "What peers call. The sync token opens it (the admin token too)."),
        (name = "admin", description = "What the operator calls. The admin token opens it (the sync token too when no admin token is set)."),
        (name = "probes", description = "Liveness, readiness and this document; no token needed."),
    )
)]
struct ApiDoc;

/// The document.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The security schemes, and the answers every operation can give: 400, 401 and 403 where a
/// token is needed, 500 where the store fails.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::auth::TOKEN_HEADER,
                "The token, where `Authorization` cannot travel (the API server's pod proxy).",
            ))),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let open = op.security.as_ref().is_some_and(|s| s.is_empty());
                if !open {
                    op.responses
                        .responses
                        .entry("400".into())
                        .or_insert_with(|| {
                            error("A path, query or body the schema does not admit.").into()
                        });
                    op.responses.responses.insert(
                        "401".into(),
                        error("No token, or not one this node accepts.").into(),
                    );
                    op.responses.responses.insert(
                        "403".into(),
                        error("A token without the power this route needs, or no client certificate where mutual TLS requires one.").into(),
                    );
                }
                op.responses.responses.insert(
                    "500".into(),
                    error("The store failed (a fault, never bad input).").into(),
                );
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", security(),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json")))]
pub async fn openapi_json() -> impl axum::response::IntoResponse {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("the OpenAPI document serialises")
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json.as_str(),
    )
}
