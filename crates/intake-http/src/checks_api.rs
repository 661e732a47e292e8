//! The message checks on Intake's own API, for the web inbox's "HTML check" and "Link
//! check" tabs: the same reports as the Mailpit listener's `html-check` and `link-check`
//! (`mailpit/html_check`, `mailpit/link_check`), under the same settings, for a message the
//! client may read. `GET /api/v1/checks` tells the page which of them are on.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::lookup::load;
use crate::mailpit::{html_check, link_check};

/// Which message checks this server answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChecksEnabled {
    /// `GET /api/v1/messages/{id}/html-check` (`mailpit.html_check`).
    pub html: bool,
    /// `GET /api/v1/messages/{id}/link-check` (`mailpit.link_check`).
    pub link: bool,
}

/// Which message checks are on (the web page shows a tab for each).
#[utoipa::path(get, path = "/api/v1/checks", tag = "messages",
    responses((status = 200, body = ChecksEnabled)))]
pub(crate) async fn checks_enabled(State(state): State<AppState>) -> Json<ChecksEnabled> {
    Json(ChecksEnabled {
        html: state.config.html_check,
        link: state.config.link_check.enabled,
    })
}

/// Which email clients support the HTML and CSS of the message (the caniemail data), in
/// Mailpit's shape. `400` when the check is off or the message has no HTML.
#[utoipa::path(get, path = "/api/v1/messages/{id}/html-check", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = html_check::Report), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn message_html_check(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<html_check::Report>, ApiError> {
    let m = load(&state, &id).await?;
    Ok(Json(html_check::report(&state, &m).await?))
}

/// The HTTP status of each link of the message (`HEAD` requests, public addresses only
/// unless allowed), in Mailpit's shape. `400` unless `mailpit.link_check` is on.
#[utoipa::path(get, path = "/api/v1/messages/{id}/link-check", tag = "messages",
    params(("id" = String, Path, description = "Message id"), link_check::Params),
    responses((status = 200, body = link_check::Report), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn message_link_check(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<link_check::Params>,
) -> Result<Json<link_check::Report>, ApiError> {
    let m = load(&state, &id).await?;
    Ok(Json(link_check::report(&state, &m, p.follows()).await?))
}
