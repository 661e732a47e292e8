//! The API's documentation: the OpenAPI document (`/api/v1/openapi.json`) and the Swagger
//! UI page that reads it (`/api/docs/`).
//!
//! The documents are built from the routes when first asked for and kept as JSON from then
//! on, not held as utoipa's structures from start-up (see [`access::Routes`]).

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::access::{self, Routes};
use crate::api;

/// Where the API's document is served.
const API_DOC: &str = "/api/v1/openapi.json";

static DOC: OnceLock<Bytes> = OnceLock::new();

/// The docs page and the API's document, each open to whoever may see the pages.
pub(crate) fn routes() -> Routes<AppState> {
    let page = utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .config(utoipa_swagger_ui::Config::from(API_DOC));
    Routes::new()
        .merge_get(
            access::Need::Page,
            &["/api/docs", "/api/docs/", "/api/docs/{*rest}"],
            axum::Router::<AppState>::from(page),
        )
        .on(Method::GET, API_DOC, access::Need::Page, || async {
            json(&DOC, api::doc)
        })
}

/// A document as a JSON response, built by `build` the first time and kept in `cell`.
pub(crate) fn json(cell: &OnceLock<Bytes>, build: fn() -> utoipa::openapi::OpenApi) -> Response {
    let body = cell.get_or_init(|| {
        Bytes::from(serde_json::to_vec(&build()).expect("an OpenAPI document serializes"))
    });
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}
