//! A Mailpit-compatible API (v1), so that test suites written against Mailpit's client
//! libraries run against Intake unchanged. It is one global view over all mailboxes, with
//! Mailpit's paths and PascalCase JSON shapes, served on a listener of its own
//! (`mailpit.listen`) because Intake's own API uses some of the same paths with other shapes.
//!
//! Routes: `GET/PUT/DELETE /api/v1/messages`, `GET/DELETE /api/v1/search`,
//! `GET /api/v1/message/{ID}` (also `latest`; marks read), `…/headers`, `…/raw`,
//! `…/part/{PartID}` ([`message`]: a `PartID` is Mailpit's MIME path, `1.2`),
//! `POST /api/v1/send` ([`send`]), `GET/PUT /api/v1/tags`, `PUT/DELETE /api/v1/tags/{Tag}`
//! ([`tags`]), `GET /api/v1/info`, `GET /api/v1/webui`, `/view/{ID}.html` and `.txt`,
//! `GET/PUT /api/v1/chaos` ([`chaos`]), `POST /api/v1/message/{ID}/release` ([`release`]),
//! `GET /api/v1/message/{ID}/sa-check` ([`sa_check`]), `…/part/{PartID}/thumb` ([`thumb`]),
//! `…/link-check` ([`link_check`], outbound requests only when allowed) and `…/html-check`
//! ([`html_check`], the caniemail data); what they reach beyond the store is in [`services`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query as QueryParams, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use intake_core::{MessageId, Page, Summary, mime};
use serde::Deserialize;

mod chaos;
pub(crate) mod html_check;
pub(crate) mod link_check;
mod message;
mod release;
mod sa_check;
mod send;
pub(crate) mod services;
mod shapes;
mod tags;
mod thumb;

pub use link_check::LinkCheck;

use shapes::{Contact, MessageSummary, MessagesPage, contacts};

use crate::AppState;
use crate::access::{Need, Routes};
use crate::error::ApiError;
use crate::lookup::parse_id;
use crate::model::{parse_query, rfc3339};

/// Envelope recipients not named in `To` or `Cc`: Mailpit's `Bcc`.
fn bcc_of(rcpt_to: &[String], to: Option<&str>, cc: Option<&str>) -> Vec<Contact> {
    let named: Vec<String> = contacts(to)
        .into_iter()
        .chain(contacts(cc))
        .map(|c| c.address.to_lowercase())
        .collect();
    rcpt_to
        .iter()
        .filter(|r| !named.contains(&r.to_lowercase()))
        .map(|r| Contact {
            name: String::new(),
            address: r.clone(),
        })
        .collect()
}

/// What `/api/v1/info` reports about this process.
pub(crate) struct Runtime {
    started: std::time::Instant,
    /// Messages deleted through this API since the start.
    deleted: std::sync::atomic::AtomicU64,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            started: std::time::Instant::now(),
            deleted: Default::default(),
        }
    }
}

/// Deletes messages, counting them for `info`.
async fn delete_ids(state: &AppState, ids: Vec<MessageId>) -> Result<(), ApiError> {
    for id in ids {
        if state.store.delete(id).await? {
            state
                .mailpit
                .deleted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The Mailpit routes. Every one spans all mail: reads (and marking read) need `read`,
/// deletes `delete`.
pub(crate) fn routes() -> Routes<AppState> {
    let (read, delete) = (Need::AllRead, Need::AllDelete);
    Routes::new()
        .on(Method::GET, "/api/v1/messages", read, list)
        .on(Method::PUT, "/api/v1/messages", read, set_read)
        .on(Method::DELETE, "/api/v1/messages", delete, delete_messages)
        .on(Method::GET, "/api/v1/search", read, search)
        .on(Method::DELETE, "/api/v1/search", delete, delete_search)
        .on(Method::GET, "/api/v1/message/{id}", read, message::message)
        .on(
            Method::GET,
            "/api/v1/message/{id}/headers",
            read,
            message::headers,
        )
        .on(Method::GET, "/api/v1/message/{id}/raw", read, message::raw)
        .on(
            Method::GET,
            "/api/v1/message/{id}/part/{part}",
            read,
            message::part,
        )
        .on(
            Method::GET,
            "/api/v1/message/{id}/part/{part}/thumb",
            read,
            thumb::thumb,
        )
        .on(
            Method::GET,
            "/api/v1/message/{id}/link-check",
            read,
            link_check::link_check,
        )
        .on(
            Method::GET,
            "/api/v1/message/{id}/html-check",
            read,
            html_check::html_check,
        )
        .on(Method::GET, "/api/v1/info", read, info)
        .on(Method::GET, "/api/v1/webui", read, webui)
        .on(Method::POST, "/api/v1/send", delete, send::send)
        .on(Method::GET, "/api/v1/tags", read, tags::list)
        .on(Method::PUT, "/api/v1/tags", read, tags::set)
        .on(Method::PUT, "/api/v1/tags/{tag}", read, tags::rename)
        .on(Method::DELETE, "/api/v1/tags/{tag}", read, tags::delete)
        .on(Method::GET, "/view/{file}", read, message::view)
        .on(Method::GET, "/api/v1/chaos", read, chaos::get)
        .on(Method::PUT, "/api/v1/chaos", delete, chaos::set)
        .on(
            Method::POST,
            "/api/v1/message/{id}/release",
            delete,
            release::release,
        )
        .on(
            Method::GET,
            "/api/v1/message/{id}/sa-check",
            read,
            sa_check::check,
        )
}

#[derive(Debug, Deserialize)]
struct Paging {
    start: Option<u64>,
    limit: Option<u64>,
}

fn page(p: &Paging, max: u64) -> Page {
    Page {
        offset: p.start.unwrap_or(0),
        limit: p.limit.unwrap_or(50).clamp(1, max),
    }
}

/// What a listing line shows that the store's summary does not hold: read from the source.
#[derive(Default)]
struct Details {
    snippet: String,
    message_id: String,
    tags: Vec<String>,
    cc: Vec<Contact>,
    bcc: Vec<Contact>,
    reply_to: Vec<Contact>,
}

/// The snippet and Message-ID of a message (read from its source).
async fn details(state: &AppState, s: &Summary) -> Details {
    let Ok(Some(m)) = state.store.fetch(s.id).await else {
        return Details::default();
    };
    let message_id = m.meta.message_id.clone().unwrap_or_default();
    let tags = state
        .tags
        .tags_of(s.id)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let raw = m.raw.clone();
    let (snippet, reply_to) = tokio::task::spawn_blocking(move || {
        let text = mime::plain_text(&raw).unwrap_or_default();
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let reply_to = mime::headers(&raw)
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("reply-to"))
            .map(|(_, v)| v);
        (flat.chars().take(250).collect::<String>(), reply_to)
    })
    .await
    .unwrap_or_default();
    Details {
        snippet,
        message_id,
        tags,
        cc: contacts(m.meta.cc.as_deref()),
        bcc: bcc_of(
            &m.envelope.rcpt_to,
            m.meta.to.as_deref(),
            m.meta.cc.as_deref(),
        ),
        reply_to: contacts(reply_to.as_deref()),
    }
}

impl From<(&Summary, Details)> for MessageSummary {
    fn from((s, d): (&Summary, Details)) -> Self {
        MessageSummary {
            id: s.id.to_string(),
            message_id: d.message_id,
            read: s.seen,
            from: contacts(s.from.as_deref())
                .into_iter()
                .next()
                .unwrap_or(Contact {
                    name: String::new(),
                    address: s.mail_from.clone(),
                }),
            to: contacts(s.to.as_deref()),
            cc: d.cc,
            bcc: d.bcc,
            reply_to: d.reply_to,
            subject: s.subject.clone().unwrap_or_default(),
            created: rfc3339(s.received_at),
            username: String::new(),
            tags: d.tags,
            size: s.size,
            attachments: s.attachments,
            snippet: d.snippet,
        }
    }
}

async fn summaries(state: &AppState, list: &[Summary]) -> Vec<MessageSummary> {
    let details = futures_util::future::join_all(list.iter().map(|s| details(state, s))).await;
    list.iter().zip(details).map(MessageSummary::from).collect()
}

/// A page as Mailpit counts it: `total`/`unread` over all mail, `messages_count`/
/// `messages_unread` over the matches (the same for a plain listing).
async fn page_of(
    state: &AppState,
    listing: intake_core::Listing,
    all: Option<(u64, u64)>,
    start: u64,
) -> Json<MessagesPage> {
    let messages = summaries(state, &listing.messages).await;
    let (total, unread) = all.unwrap_or((listing.total, listing.unread));
    Json(MessagesPage {
        total,
        unread,
        count: messages.len(),
        messages_count: listing.total,
        messages_unread: listing.unread,
        start,
        tags: state.tags.all_tags().await.unwrap_or_default(),
        messages,
    })
}

async fn list(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<Paging>,
) -> Result<Json<MessagesPage>, ApiError> {
    let pg = page(&p, state.config.max_per_page);
    let listing = state.store.list_all(pg).await?;
    Ok(page_of(&state, listing, None, pg.offset).await)
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    query: Option<String>,
    start: Option<u64>,
    limit: Option<u64>,
}

async fn search(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<SearchParams>,
) -> Result<Json<MessagesPage>, ApiError> {
    let q = parse_query(p.query.as_deref().unwrap_or(""))?;
    let pg = page(
        &Paging {
            start: p.start,
            limit: p.limit,
        },
        state.config.max_per_page,
    );
    let listing = state.store.search(&q, pg).await?;
    let everything = state.store.list_all(Page::FIRST).await?;
    let all = Some((everything.total, everything.unread));
    Ok(page_of(&state, listing, all, pg.offset).await)
}

/// `{IDs, Read, Search}` as JSON (Mailpit's own clients) or as a form (`ids=…&Read=true`,
/// as some clients send it). An empty body is an empty request.
#[derive(Debug, Default, Deserialize)]
struct Selection {
    #[serde(rename = "IDs", alias = "ids", default)]
    ids: Vec<String>,
    #[serde(rename = "Read", alias = "read", default)]
    read: Option<bool>,
    #[serde(rename = "Search", alias = "search", default)]
    search: Option<String>,
}

fn selection(headers: &HeaderMap, body: &Bytes) -> Result<Selection, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Selection::default());
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the form is not UTF-8".into()))?;
        let pairs = crate::model::form_pairs(text)
            .ok_or_else(|| ApiError::BadRequest("not a form".into()))?;
        let mut s = Selection::default();
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "ids" | "ids[]" => s.ids.push(v),
                "read" => s.read = Some(matches!(v.to_ascii_lowercase().as_str(), "true" | "1")),
                "search" => s.search = Some(v),
                _ => {}
            }
        }
        return Ok(s);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))
}

/// Ids of every message matching `query` (all mail when None).
async fn select(state: &AppState, query: Option<&str>) -> Result<Vec<MessageId>, ApiError> {
    let q = match query {
        Some(t) if !t.trim().is_empty() => Some(parse_query(t)?),
        _ => None,
    };
    let mut ids = Vec::new();
    let mut offset = 0;
    loop {
        let pg = Page { offset, limit: 500 };
        let listing = match &q {
            Some(q) => state.store.search(q, pg).await?,
            None => state.store.list_all(pg).await?,
        };
        let n = listing.messages.len() as u64;
        ids.extend(listing.messages.iter().map(|m| m.id));
        if n < pg.limit {
            return Ok(ids);
        }
        offset += n;
    }
}

fn ok() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        "ok",
    )
        .into_response()
}

async fn set_read(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sel = selection(&headers, &body)?;
    let ids = if sel.ids.is_empty() {
        select(&state, sel.search.as_deref()).await?
    } else {
        sel.ids
            .iter()
            .map(|i| parse_id(i))
            .collect::<Result<_, _>>()?
    };
    let read = sel.read.unwrap_or(false);
    for id in ids {
        state.store.set_seen(id, read).await?;
    }
    Ok(ok())
}

async fn delete_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sel = selection(&headers, &body)?;
    let ids = if sel.ids.is_empty() {
        select(&state, None).await?
    } else {
        sel.ids
            .iter()
            .map(|i| parse_id(i))
            .collect::<Result<_, _>>()?
    };
    delete_ids(&state, ids).await?;
    Ok(ok())
}

async fn delete_search(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<SearchParams>,
) -> Result<Response, ApiError> {
    let Some(q) = p.query.filter(|q| !q.trim().is_empty()) else {
        return Err(ApiError::BadRequest("query is required".into()));
    };
    let ids = select(&state, Some(&q)).await?;
    delete_ids(&state, ids).await?;
    Ok(ok())
}

/// `latest` or an id.
async fn resolve(state: &AppState, id: &str) -> Result<String, ApiError> {
    if id != "latest" {
        return Ok(id.to_string());
    }
    let l = state.store.list_all(Page::FIRST).await?;
    l.messages
        .first()
        .map(|m| m.id.to_string())
        .ok_or_else(|| ApiError::NotFound("no messages".into()))
}

async fn info(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let l = state.store.list_all(Page::FIRST).await?;
    // Messages per tag, as Mailpit reports them.
    let mut tags = serde_json::Map::new();
    for t in state.tags.all_tags().await? {
        let q = intake_core::Query {
            extra: vec![intake_core::search::Term::Tag(t.to_lowercase())],
            ..Default::default()
        };
        let n = state.store.search(&q, Page::FIRST).await?.total;
        tags.insert(t, n.into());
    }
    Ok(Json(serde_json::json!({
        "Version": concat!("intake-", env!("CARGO_PKG_VERSION")),
        "LatestVersion": "",
        "Database": "intake",
        "DatabaseSize": state.store.size_on_disk().unwrap_or(0),
        "Messages": l.total,
        "Unread": l.unread,
        "Tags": tags,
        "RuntimeStats": {
            "Uptime": state.mailpit.started.elapsed().as_secs(),
            "Memory": 0,
            "MessagesDeleted": state.mailpit.deleted.load(std::sync::atomic::Ordering::Relaxed),
            "SMTPAccepted": 0,
            "SMTPAcceptedSize": 0, "SMTPRejected": 0, "SMTPIgnored": 0
        }
    })))
}

async fn webui(State(state): State<AppState>) -> Json<serde_json::Value> {
    let s = &state.mailpit_services;
    let relay = s.release.as_ref().map(|r| r.server.clone());
    Json(serde_json::json!({
        "Label": "Intake",
        "MessageRelay": {
            "Enabled": relay.is_some(), "SMTPServer": relay.unwrap_or_default(), "ReturnPath": "",
            "AllowedRecipients": "", "BlockedRecipients": "", "OverrideFrom": "",
            "PreserveMessageIDs": false
        },
        "SpamAssassin": s.spamassassin.is_some(),
        "ChaosEnabled": s.chaos.is_enabled(),
        "DuplicatesIgnored": false,
        "HideDeleteAllButton": false
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, address: &str) -> Contact {
        Contact {
            name: name.into(),
            address: address.into(),
        }
    }

    #[test]
    fn address_lists_split_like_a_mail_reader() {
        assert_eq!(
            contacts(Some(
                "\"Doe, Jane\" <jane@x.test>, bob@y.test, Al <al@z.test>"
            )),
            vec![
                c("Doe, Jane", "jane@x.test"),
                c("", "bob@y.test"),
                c("Al", "al@z.test")
            ]
        );
        assert!(contacts(None).is_empty());
        assert!(contacts(Some("  ")).is_empty());
    }

    #[test]
    fn selections_from_json_forms_and_empty_bodies() {
        let mut h = HeaderMap::new();
        let s = selection(&h, &Bytes::from_static(b"{\"IDs\":[\"a\"],\"Read\":true}")).unwrap();
        assert_eq!((s.ids, s.read), (vec!["a".to_string()], Some(true)));
        let s = selection(&h, &Bytes::new()).unwrap();
        assert!(s.ids.is_empty() && s.read.is_none());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let s = selection(&h, &Bytes::from_static(b"ids=a&ids=b&Read=True")).unwrap();
        assert_eq!(
            (s.ids, s.read),
            (vec!["a".to_string(), "b".to_string()], Some(true))
        );
    }
}
