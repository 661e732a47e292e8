//! The JSON API (`/api/v1`). Each handler is documented for the OpenAPI document.

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use intake_core::{Page, alias, mime};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::routes;

use crate::AppState;
use crate::access::{self, AccessInfo, Granted, Need, Routes, Rule};
use crate::batch;
use crate::error::{ApiError, ErrorBody};
use crate::events;
use crate::html_view;
use crate::lookup::{load, parse_id};
use crate::model::{
    AttachmentJson, ChecksJson, ClientJson, HeaderField, HeaderList, MessageDetail, MessageSummary,
    TlsJson, parse_query, rfc3339,
};
use crate::tags::{self, summaries};
use crate::ui::sandboxed;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Intake API",
        description = "Read the mail Intake received: mailboxes, messages, search, live updates."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The API routes, each with the access it needs.
pub(crate) fn routes() -> Routes<AppState> {
    register(Routes::new())
}

/// The API's OpenAPI document, built when it is asked for (see [`Routes`]).
pub(crate) fn doc() -> utoipa::openapi::OpenApi {
    register(Routes::documented(ApiDoc::openapi())).into_doc()
}

fn register(routes: Routes<AppState>) -> Routes<AppState> {
    let one_mailbox_search = Rule::ReadsMailboxIf(access::one_mailbox_query);
    routes
        .api(Need::MailboxRead, routes!(list_mailbox))
        .api(Need::MailboxDelete, routes!(delete_mailbox))
        .api(Need::MailboxRead, routes!(mailbox_alias))
        .api(Need::AllRead, routes!(list_messages))
        .api(Need::MailboxRead, routes!(get_message))
        .api(Need::MailboxDelete, routes!(delete_message))
        .api(Need::MailboxRead, routes!(mark_read, mark_unread))
        .api(Need::MailboxRead, routes!(batch::mark_many))
        .api(Need::MailboxDelete, routes!(batch::delete_many))
        .api(Need::MailboxRead, routes!(tags::set_tags))
        .api(Need::MailboxRead, routes!(tags::tag_many))
        .api(Need::AllRead, routes!(tags::all_tags))
        .api(Need::MailboxRead, routes!(raw_message))
        .api(Need::MailboxRead, routes!(message_headers))
        .api(Need::MailboxRead, routes!(html_view::message_html))
        .api(Need::MailboxRead, routes!(attachment))
        .api(one_mailbox_search, routes!(search))
        .api(one_mailbox_search, routes!(events::wait))
        .api(
            Rule::ReadsMailboxIf(access::one_mailbox_stream),
            routes!(events::events),
        )
        .api(Need::Page, routes!(access_info))
        .api(Need::Page, routes!(crate::checks_api::checks_enabled))
        .api(
            Need::MailboxRead,
            routes!(crate::checks_api::message_html_check),
        )
        .api(
            Need::MailboxRead,
            routes!(crate::checks_api::message_link_check),
        )
}

/// A page of a mailbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxPage {
    /// The mailbox (lower-cased address).
    pub mailbox: String,
    /// Its alias: mail to it lands here.
    pub alias: String,
    /// Messages in the mailbox.
    pub total: u64,
    /// Of which unread.
    pub unread: u64,
    /// This page (from 1).
    pub page: u64,
    /// Page size.
    pub per_page: u64,
    /// Newest first.
    pub messages: Vec<MessageSummary>,
}

/// A page of all mail, or of search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// The query, for search results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Messages in all pages.
    pub total: u64,
    /// Of which unread.
    pub unread: u64,
    /// This page (from 1).
    pub page: u64,
    /// Page size.
    pub per_page: u64,
    /// Newest first.
    pub messages: Vec<MessageSummary>,
}

/// Pagination.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page number, from 1 (default 1).
    pub page: Option<u64>,
    /// Messages per page (default 50, at most 500).
    pub per_page: Option<u64>,
}

impl Paging {
    fn resolve(&self, max: u64) -> Result<(Page, u64, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(50);
        if page == 0 {
            return Err(ApiError::BadRequest("page starts at 1".into()));
        }
        if per_page == 0 || per_page > max {
            return Err(ApiError::BadRequest(format!(
                "per_page must be between 1 and {max}"
            )));
        }
        let offset = (page - 1)
            .checked_mul(per_page)
            .ok_or_else(|| ApiError::BadRequest("page out of range".into()))?;
        Ok((
            Page {
                offset,
                limit: per_page,
            },
            page,
            per_page,
        ))
    }
}

fn mailbox_param(address: &str) -> Result<String, ApiError> {
    let a = address.trim();
    if a.is_empty() || a.len() > 320 || a.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a mailbox is an address such as bob@example.com".into(),
        ));
    }
    Ok(intake_core::mailbox_key(a))
}

/// The alias of a mailbox, registered with the store so that mail to it is filed here.
pub(crate) async fn alias_of(state: &AppState, mailbox: &str) -> Result<String, ApiError> {
    let alias = alias::derive(&state.alias_secret, mailbox);
    if !state.registered_aliases.contains_key(&alias) {
        state.store.register_alias(&alias, mailbox).await?;
        state.registered_aliases.insert(alias.clone(), ());
    }
    Ok(alias)
}

/// List a mailbox, newest first.
#[utoipa::path(get, path = "/api/v1/mailboxes/{address}/messages", tag = "mailboxes",
    params(("address" = String, Path, description = "The mailbox: a recipient address, any case"), Paging),
    responses((status = 200, body = MailboxPage), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn list_mailbox(
    State(state): State<AppState>,
    Path(address): Path<String>,
    QueryParams(paging): QueryParams<Paging>,
) -> Result<Json<MailboxPage>, ApiError> {
    let mailbox = mailbox_param(&address)?;
    let (page, n, per_page) = paging.resolve(state.config.max_per_page)?;
    let listing = state.store.list_mailbox(&mailbox, page).await?;
    let alias = alias_of(&state, &mailbox).await?;
    Ok(Json(MailboxPage {
        mailbox,
        alias,
        total: listing.total,
        unread: listing.unread,
        page: n,
        per_page,
        messages: summaries(&state, &listing.messages).await?,
    }))
}

/// How many messages a delete removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Messages removed from the mailbox.
    pub deleted: u64,
}

/// Delete every message of a mailbox (messages also filed elsewhere stay there).
#[utoipa::path(delete, path = "/api/v1/mailboxes/{address}", tag = "mailboxes",
    params(("address" = String, Path, description = "The mailbox")),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody)))]
async fn delete_mailbox(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let mailbox = mailbox_param(&address)?;
    let deleted = state.store.delete_mailbox(&mailbox).await?;
    Ok(Json(Deleted { deleted }))
}

/// A mailbox's alias.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasInfo {
    /// The mailbox.
    pub mailbox: String,
    /// Give this address out: mail to it lands in the mailbox, and it does not reveal it.
    pub alias: String,
}

/// The stable alias of a mailbox.
#[utoipa::path(get, path = "/api/v1/mailboxes/{address}/alias", tag = "mailboxes",
    params(("address" = String, Path, description = "The mailbox")),
    responses((status = 200, body = AliasInfo), (status = 400, body = ErrorBody)))]
async fn mailbox_alias(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<AliasInfo>, ApiError> {
    let mailbox = mailbox_param(&address)?;
    let alias = alias_of(&state, &mailbox).await?;
    Ok(Json(AliasInfo { mailbox, alias }))
}

/// All mail, newest first.
#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", params(Paging),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody)))]
async fn list_messages(
    State(state): State<AppState>,
    QueryParams(paging): QueryParams<Paging>,
) -> Result<Json<MessagePage>, ApiError> {
    let (page, n, per_page) = paging.resolve(state.config.max_per_page)?;
    let l = state.store.list_all(page).await?;
    Ok(Json(MessagePage {
        query: None,
        total: l.total,
        unread: l.unread,
        page: n,
        per_page,
        messages: summaries(&state, &l.messages).await?,
    }))
}

fn headers_of(raw: &[u8]) -> Vec<HeaderField> {
    mime::headers(raw)
        .into_iter()
        .map(|(name, value)| HeaderField { name, value })
        .collect()
}

/// One message: envelope, headers, parsed fields, bodies, attachments.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = MessageDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageDetail>, ApiError> {
    let m = load(&state, &id).await?;
    let raw = m.raw.clone();
    let (text, html, headers) = tokio::task::spawn_blocking(move || {
        (
            mime::plain_text(&raw),
            mime::html_body(&raw),
            headers_of(&raw),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(MessageDetail {
        id: m.id.to_string(),
        received_at: rfc3339(m.received_at),
        mail_from: m.envelope.mail_from.clone(),
        rcpt_to: m.envelope.rcpt_to.clone(),
        mailboxes: m.mailboxes.clone(),
        from: m.meta.from.clone(),
        to: m.meta.to.clone(),
        cc: m.meta.cc.clone(),
        subject: m.meta.subject.clone(),
        size: m.size,
        seen: m.seen,
        attachments: m.meta.attachments.len() as u32,
        tags: state.tags.tags_of(m.id).await?.unwrap_or_default(),
        helo: m.helo.clone(),
        client: ClientJson {
            ip: m.client.ip().to_string(),
            port: m.client.port(),
        },
        tls: m.tls.as_ref().map(|t| TlsJson {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
        }),
        checks: m.findings.as_ref().map(ChecksJson::from),
        sha256: m.sha256.clone(),
        message_id: m.meta.message_id.clone(),
        date: m.meta.date.clone(),
        content_type: m.meta.content_type.clone(),
        charset: m.meta.charset.clone(),
        headers,
        text,
        html,
        attachment_list: m
            .meta
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| AttachmentJson {
                part: i.to_string(),
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
            })
            .collect(),
    }))
}

/// Delete a message (from every mailbox).
#[utoipa::path(delete, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if state.store.delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no message {id}")))
    }
}

async fn set_seen(state: &AppState, id: &str, seen: bool) -> Result<StatusCode, ApiError> {
    let id = parse_id(id)?;
    if state.store.set_seen(id, seen).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no message {id}")))
    }
}

/// Mark a message read.
#[utoipa::path(post, path = "/api/v1/messages/{id}/read", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_seen(&state, &id, true).await
}

/// Mark a message unread.
#[utoipa::path(delete, path = "/api/v1/messages/{id}/read", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn mark_unread(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_seen(&state, &id, false).await
}

/// The raw source, exactly as stored (Intake's `Received:` header first), as a `.eml` file.
#[utoipa::path(get, path = "/api/v1/messages/{id}/raw", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, content_type = "message/rfc822", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn raw_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let m = load(&state, &id).await?;
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/rfc822"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{}.eml\"", m.id)).expect("ascii"),
    );
    Ok((h, m.raw).into_response())
}

/// The header fields, in order.
#[utoipa::path(get, path = "/api/v1/messages/{id}/headers", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = HeaderList), (status = 404, body = ErrorBody)))]
async fn message_headers(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HeaderList>, ApiError> {
    let m = load(&state, &id).await?;
    Ok(Json(HeaderList {
        headers: headers_of(&m.raw),
    }))
}

/// One attachment, as a download.
#[utoipa::path(get, path = "/api/v1/messages/{id}/attachments/{part}", tag = "messages",
    params(("id" = String, Path, description = "Message id"), ("part" = String, Path, description = "Part id from attachment_list")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attachment(
    State(state): State<AppState>,
    Path((id, part)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index: usize = part
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{part:?} is not a part id")))?;
    let m = load(&state, &id).await?;
    let raw = m.raw.clone();
    let found = tokio::task::spawn_blocking(move || mime::attachment(&raw, index))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some((content_type, name, bytes)) = found else {
        return Err(ApiError::NotFound(format!(
            "message {id} has no attachment {part}"
        )));
    };
    let filename: String = name
        .unwrap_or_else(|| format!("attachment-{index}"))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut h = sandboxed(&content_type);
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")).expect("sanitized"),
    );
    Ok((h, bytes).into_response())
}

/// A search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words and filters: `invoice from:alice to:bob subject:"weekly report" has:attachment
    /// is:unread after:2026-11-01 before:2026-11-22 mailbox:bob@example.com`.
    pub query: String,
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Messages per page (default 50).
    pub per_page: Option<u64>,
}

/// Search all mail: full text over subject, addresses, body and header values, plus filters.
#[utoipa::path(get, path = "/api/v1/search", tag = "messages", params(SearchParams),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody)))]
async fn search(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<SearchParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let q = parse_query(&p.query)?;
    let (page, n, per_page) = Paging {
        page: p.page,
        per_page: p.per_page,
    }
    .resolve(state.config.max_per_page)?;
    let l = state.store.search(&q, page).await?;
    Ok(Json(MessagePage {
        query: Some(p.query),
        total: l.total,
        unread: l.unread,
        page: n,
        per_page,
        messages: summaries(&state, &l.messages).await?,
    }))
}

/// What this client may do here (the server's access mode and the scopes of the credential
/// it sent). The web page hides what is not allowed.
#[utoipa::path(get, path = "/api/v1/access", tag = "access",
    responses((status = 200, body = AccessInfo)))]
async fn access_info(
    State(state): State<AppState>,
    granted: Option<axum::Extension<Granted>>,
) -> Json<AccessInfo> {
    Json(AccessInfo::of(
        state.guard.config(),
        granted.map(|axum::Extension(g)| g),
    ))
}
