//! Changes to many messages at once, chosen by id (the web inbox's selection): mark them
//! read or unread, delete them (tag them: `tags.rs`). A message id carries 74 random bits, so naming one counts
//! as reading (or deleting from) its mailbox, as the routes for one message do; these need
//! the same access as those.

use axum::Json;
use axum::extract::State;
use intake_core::MessageId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::lookup::parse_id;

/// Messages chosen by id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Message ids (at most the largest page size, 500 by default).
    pub ids: Vec<String>,
}

/// Messages to mark read or unread.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadChange {
    /// Message ids (at most the largest page size, 500 by default).
    pub ids: Vec<String>,
    /// `true`: mark them read; `false`: unread.
    pub read: bool,
}

/// How many of the named messages a batch changed (ids of messages that no longer exist
/// are not counted, and are not an error).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// Messages found and changed.
    pub changed: u64,
}

pub(crate) fn ids(state: &AppState, ids: &[String]) -> Result<Vec<MessageId>, ApiError> {
    let max = state.config.max_per_page;
    if ids.len() as u64 > max {
        return Err(ApiError::BadRequest(format!(
            "at most {max} ids at once, not {}",
            ids.len()
        )));
    }
    ids.iter().map(|id| parse_id(id)).collect()
}

/// Mark many messages read or unread.
#[utoipa::path(post, path = "/api/v1/messages/read", tag = "messages", request_body = ReadChange,
    responses((status = 200, body = BatchResult), (status = 400, body = ErrorBody)))]
pub(crate) async fn mark_many(
    State(state): State<AppState>,
    Json(change): Json<ReadChange>,
) -> Result<Json<BatchResult>, ApiError> {
    let mut changed = 0;
    for id in ids(&state, &change.ids)? {
        if state.store.set_seen(id, change.read).await? {
            changed += 1;
        }
    }
    Ok(Json(BatchResult { changed }))
}

/// Delete many messages (each from every mailbox).
#[utoipa::path(post, path = "/api/v1/messages/delete", tag = "messages", request_body = Selection,
    responses((status = 200, body = BatchResult), (status = 400, body = ErrorBody)))]
pub(crate) async fn delete_many(
    State(state): State<AppState>,
    Json(selection): Json<Selection>,
) -> Result<Json<BatchResult>, ApiError> {
    let mut changed = 0;
    for id in ids(&state, &selection.ids)? {
        if state.store.delete(id).await? {
            changed += 1;
        }
    }
    Ok(Json(BatchResult { changed }))
}
