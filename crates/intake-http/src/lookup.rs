//! What the routes share to find the message a path names: its id, parsed, and the
//! message itself, or the error the client gets.

use intake_core::{MessageId, StoredMessage};

use crate::AppState;
use crate::error::ApiError;

/// The message id in a path; `400` when it is not one.
pub(crate) fn parse_id(id: &str) -> Result<MessageId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a message id")))
}

/// The message `id` names; `400` for a malformed id, `404` when there is none.
pub(crate) async fn load(state: &AppState, id: &str) -> Result<StoredMessage, ApiError> {
    let id = parse_id(id)?;
    state
        .store
        .fetch(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message {id}")))
}
