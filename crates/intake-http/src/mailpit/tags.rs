//! Mailpit's tag routes: `GET/PUT /api/v1/tags`, `PUT/DELETE /api/v1/tags/{Tag}`.
//! Tags are cleaned as Mailpit does (letters, digits, `-`, `_`, `.`, spaces).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::ok;
use crate::AppState;
use crate::error::ApiError;
use crate::lookup::parse_id;

/// Every tag in use, sorted.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.tags.all_tags().await?))
}

/// `{IDs, Tags}`: the messages' tags become `Tags` (none when absent).
#[derive(Debug, Deserialize)]
struct SetTags {
    #[serde(rename = "IDs", alias = "ids", default)]
    ids: Vec<String>,
    #[serde(rename = "Tags", alias = "tags", default)]
    tags: Vec<String>,
}

fn json<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))
}

/// Replaces the tags of the messages listed.
pub(super) async fn set(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: SetTags = json(&body)?;
    let ids = req
        .ids
        .iter()
        .map(|i| parse_id(i))
        .collect::<Result<Vec<_>, _>>()?;
    for id in ids {
        state.tags.set_tags(id, &req.tags).await?;
    }
    Ok(ok())
}

/// `{Name}`: the new name of a tag.
#[derive(Debug, Deserialize)]
struct Rename {
    #[serde(rename = "Name", alias = "name")]
    name: String,
}

/// Renames a tag on every message.
pub(super) async fn rename(
    State(state): State<AppState>,
    Path(tag): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: Rename = json(&body)?;
    if intake_core::clean_tag(&req.name).is_none() {
        return Err(ApiError::BadRequest("the new tag name is empty".into()));
    }
    state.tags.rename_tag(&tag, &req.name).await?;
    Ok(ok())
}

/// Removes a tag from every message (the messages stay).
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(tag): Path<String>,
) -> Result<Response, ApiError> {
    state.tags.delete_tag(&tag).await?;
    Ok(ok())
}
