//! Tags in the main API (the web inbox's tags; the same tags as Mailpit's, `X-Tags` and
//! plus-addressing): on every listed message and on one message, set on one message, added
//! to or removed from a selection, and every tag in use. Searching by tag is the query
//! language's (`tag:name`, `is:tagged`).
//!
//! Tagging a message by its id needs what marking it read needs (reading its mailbox: the
//! id's random bits name it); the list of every tag spans all mail.

use axum::Json;
use axum::extract::{Path, State};
use intake_core::Summary;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::batch::{BatchResult, ids};
use crate::error::{ApiError, ErrorBody};
use crate::lookup::parse_id;
use crate::model::MessageSummary;

/// Listed messages with their tags (one tag read per message, as Mailpit's listing does).
pub(crate) async fn summaries(
    state: &AppState,
    messages: &[Summary],
) -> Result<Vec<MessageSummary>, ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    for s in messages {
        let mut m = MessageSummary::from(s);
        m.tags = state.tags.tags_of(s.id).await?.unwrap_or_default();
        out.push(m);
    }
    Ok(out)
}

/// Tags: a message's, or every tag in use.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagList {
    /// Sorted. Set as Mailpit cleans them: letters, digits, `-`, `_`, `.` and spaces are
    /// kept (others dropped), at most 100 characters; repeats differing only in case are
    /// kept once.
    pub tags: Vec<String>,
}

/// Tags to add to and remove from many messages.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagChange {
    /// Message ids (at most the largest page size, 500 by default).
    pub ids: Vec<String>,
    /// Tags to add (kept where a message has them).
    #[serde(default)]
    pub add: Vec<String>,
    /// Tags to remove (compared without case).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Replace a message's tags; answers the tags it now has.
#[utoipa::path(put, path = "/api/v1/messages/{id}/tags", tag = "tags", request_body = TagList,
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = TagList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(list): Json<TagList>,
) -> Result<Json<TagList>, ApiError> {
    let id = parse_id(&id)?;
    let not_found = || ApiError::NotFound(format!("no message {id}"));
    if !state.tags.set_tags(id, &list.tags).await? {
        return Err(not_found());
    }
    let tags = state.tags.tags_of(id).await?.ok_or_else(not_found)?;
    Ok(Json(TagList { tags }))
}

/// Add tags to and remove tags from many messages (a tag in both is removed).
#[utoipa::path(post, path = "/api/v1/messages/tags", tag = "tags", request_body = TagChange,
    responses((status = 200, body = BatchResult), (status = 400, body = ErrorBody)))]
pub(crate) async fn tag_many(
    State(state): State<AppState>,
    Json(change): Json<TagChange>,
) -> Result<Json<BatchResult>, ApiError> {
    if change.add.is_empty() && change.remove.is_empty() {
        return Err(ApiError::BadRequest("name tags to add or to remove".into()));
    }
    let mut changed = 0;
    for id in ids(&state, &change.ids)? {
        let mut found = true;
        if !change.add.is_empty() {
            found = state.tags.add_tags(id, &change.add).await?;
        }
        if found && !change.remove.is_empty() {
            found = state.tags.remove_tags(id, &change.remove).await?;
        }
        changed += u64::from(found);
    }
    Ok(Json(BatchResult { changed }))
}

/// Every tag some message has, sorted.
#[utoipa::path(get, path = "/api/v1/tags", tag = "tags",
    responses((status = 200, body = TagList)))]
pub(crate) async fn all_tags(State(state): State<AppState>) -> Result<Json<TagList>, ApiError> {
    Ok(Json(TagList {
        tags: state.tags.all_tags().await?,
    }))
}
