//! Live updates (Server-Sent Events) and wait-for-mail.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query as QueryParams, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use intake_core::{Event, MailTags, Page, Summary, mailbox_key, mime};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{MessageSummary, parse_query};
use crate::slots::{Slot, client_ip};

/// Which events to stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events of this mailbox.
    pub mailbox: Option<String>,
}

#[derive(Serialize)]
struct NewJson<'a> {
    mailboxes: &'a [String],
    message: MessageSummary,
}

#[derive(Serialize)]
struct DeletedJson<'a> {
    mailboxes: &'a [String],
    id: String,
}

/// A place among the client's open streams (`http.max_streams_per_ip`), held while an
/// event stream or a wait is open.
pub(crate) struct StreamSlot(#[allow(dead_code)] Slot);

impl axum::extract::FromRequestParts<AppState> for StreamSlot {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        state
            .streams
            .try_acquire(client_ip(&parts.extensions))
            .map(StreamSlot)
            .ok_or(ApiError::TooManyStreams(state.config.max_streams_per_ip))
    }
}

/// The event as the page reads it. A new message's tags (from `X-Tags` or
/// plus-addressing) are read here: the store's event does not carry them.
async fn to_sse(e: &Event, tags: &dyn MailTags) -> SseEvent {
    match e {
        Event::New { mailboxes, message } => SseEvent::default().event("new").data(
            serde_json::to_string(&NewJson {
                mailboxes,
                message: with_tags(message, tags).await,
            })
            .expect("serializable"),
        ),
        Event::Deleted { mailboxes, id } => SseEvent::default().event("deleted").data(
            serde_json::to_string(&DeletedJson {
                mailboxes,
                id: id.to_string(),
            })
            .expect("serializable"),
        ),
    }
}

/// A summary with its tags (none where they cannot be read: the event still goes out).
async fn with_tags(message: &Summary, tags: &dyn MailTags) -> MessageSummary {
    let mut m = MessageSummary::from(message);
    m.tags = tags
        .tags_of(message.id)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    m
}

/// Server-Sent Events: `new` and `deleted`, for one mailbox or all. A `: keep-alive`
/// comment every 15 s.
#[utoipa::path(get, path = "/api/v1/events", tag = "live", params(EventParams),
    responses((status = 200, content_type = "text/event-stream", description = "event: new / event: deleted, data: JSON"),
        (status = 429, body = ErrorBody, description = "too many streams from this client")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    slot: StreamSlot,
    QueryParams(p): QueryParams<EventParams>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.events.subscribe();
    let missed = state.events.watch_missed();
    let filter = p.mailbox.map(|m| mailbox_key(m.trim()));
    // The slot lives in the stream: it is given back when the client goes away.
    let init = (rx, missed, filter, slot, state.tags.clone());
    let stream = futures_util::stream::unfold(
        init,
        |(mut rx, mut missed, filter, slot, tags)| async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    Ok(()) = missed.changed() => {
                        // The feed between nodes was disconnected: events from other nodes
                        // may be missing. Same as a lag: the page reloads the list.
                        let ev = SseEvent::default().event("lagged").data("feed");
                        return Some((Ok(ev), (rx, missed, filter, slot, tags)));
                    }
                };
                match next {
                    Ok(e) => {
                        if filter.as_deref().is_none_or(|m| e.touches(m)) {
                            let ev = to_sse(&e, tags.as_ref()).await;
                            return Some((Ok(ev), (rx, missed, filter, slot, tags)));
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Tell the page it missed events; it reloads the list.
                        let ev = SseEvent::default().event("lagged").data(n.to_string());
                        return Some((Ok(ev), (rx, missed, filter, slot, tags)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}

/// What to wait for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// A search query (see `/api/v1/search`); empty matches any message.
    pub query: Option<String>,
    /// Seconds to wait (default 30, at most the server's limit, 300 by default).
    pub timeout: Option<u64>,
}

/// Waits for a message matching `query` that arrives after the request started.
#[utoipa::path(get, path = "/api/v1/wait", tag = "live", params(WaitParams),
    responses((status = 200, body = MessageSummary), (status = 400, body = ErrorBody), (status = 408, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many streams from this client")))]
pub(crate) async fn wait(
    State(state): State<AppState>,
    _slot: StreamSlot,
    QueryParams(p): QueryParams<WaitParams>,
) -> Result<Json<MessageSummary>, ApiError> {
    let text = p.query.unwrap_or_default();
    let query = parse_query(&text)?;
    let secs = p.timeout.unwrap_or(30);
    let max = state.config.max_wait.as_secs();
    if secs == 0 || secs > max {
        return Err(ApiError::BadRequest(format!(
            "timeout must be between 1 and {max} seconds"
        )));
    }
    // Subscribe before anything else, so nothing arriving from now on is missed.
    let mut rx = state.events.subscribe();
    let mut missed = state.events.watch_missed();
    let started = jiff::Timestamp::now().as_millisecond();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            // Events from other nodes may be missing (the feed reconnected): look in the
            // store, as after a lag.
            Ok(()) = missed.changed() => Err(RecvError::Lagged(0)),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::Timeout(format!(
                    "no message matching {text:?} within {secs} s"
                )));
            }
        };
        match next {
            Ok(Event::New { mailboxes, message }) => {
                let Some(m) = state.store.fetch(message.id).await? else {
                    continue;
                };
                let raw = m.raw.clone();
                let body =
                    tokio::task::spawn_blocking(move || mime::plain_text(&raw).unwrap_or_default())
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                // Tags given on delivery (X-Tags, plus-addresses) are stored before the event.
                let tags = if query.needs_tags() {
                    state.tags.tags_of(m.id).await?.unwrap_or_default()
                } else {
                    Vec::new()
                };
                if query.core().matches(&m, &mailboxes, &body)
                    && query.matches_rest(&m, &mailboxes, &body, &tags)
                {
                    return Ok(Json(with_tags(&message, state.tags.as_ref()).await));
                }
            }
            Ok(Event::Deleted { .. }) => {}
            Err(RecvError::Lagged(_)) => {
                // Missed events under load: look in the store for what arrived since.
                let mut q = query.clone();
                q.after = Some(q.after.map_or(started - 1, |a| a.max(started - 1)));
                let found = state.store.search(&q, Page::FIRST).await?;
                if let Some(s) = found.messages.last() {
                    return Ok(Json(with_tags(s, state.tags.as_ref()).await));
                }
            }
            Err(RecvError::Closed) => return Err(ApiError::Internal("event bus closed".into())),
        }
    }
}
