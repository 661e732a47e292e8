//! One message in Mailpit's shapes: `GET /api/v1/message/{ID}` (also `latest`; marks it
//! read), `…/headers`, `…/raw` (`?dl=1` to download), `…/part/{PartID}` (a MIME path,
//! `1.2`), and the rendered views `/view/{ID}.html` (`cid:` images pointed at their parts;
//! `?embed=1` opens links in a new window) and `/view/{ID}.txt`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use intake_core::mime;
use intake_core::mime::parts::MimePart;
use serde::Deserialize;

use super::shapes::{Checksums, Contact, ListUnsubscribe, Message, Part, contacts};
use super::{bcc_of, resolve};
use crate::AppState;
use crate::error::ApiError;
use crate::lookup::load;
use crate::model::rfc3339;

fn part_shape(p: &MimePart) -> Part {
    use md5::Digest as _;
    Part {
        part_id: p.path.clone(),
        file_name: p.file_name.clone().unwrap_or_default(),
        content_type: p.content_type.clone(),
        content_id: p.content_id.clone().unwrap_or_default(),
        size: p.bytes.len() as u64,
        checksums: Checksums {
            md5: hex::encode(md5::Md5::digest(&p.bytes)),
            sha1: hex::encode(sha1::Sha1::digest(&p.bytes)),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&p.bytes)),
        },
    }
}

/// Header names as Mailpit (Go's `textproto`) writes them: `Message-Id`, `X-Tags`.
pub(super) fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

pub(super) async fn message(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    // Mailpit marks a message read when it is opened.
    state.store.set_seen(m.id, true).await?;
    let raw = m.raw.clone();
    let (text, html, hdrs, parts) = tokio::task::spawn_blocking(move || {
        (
            mime::text_body(&raw).unwrap_or_default(),
            mime::html_body(&raw).unwrap_or_default(),
            mime::headers(&raw),
            mime::parts::parts(&raw),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let header = |name: &str| {
        hdrs.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let meta = &m.meta;
    let (inline, attachments): (Vec<&MimePart>, Vec<&MimePart>) =
        parts.iter().partition(|p| p.inline);
    Ok(Json(Message {
        id: m.id.to_string(),
        message_id: meta.message_id.clone().unwrap_or_default(),
        read: true,
        from: contacts(meta.from.as_deref())
            .into_iter()
            .next()
            .unwrap_or(Contact {
                name: String::new(),
                address: m.envelope.mail_from.clone(),
            }),
        to: contacts(meta.to.as_deref()),
        cc: contacts(meta.cc.as_deref()),
        bcc: bcc_of(&m.envelope.rcpt_to, meta.to.as_deref(), meta.cc.as_deref()),
        reply_to: contacts(header("Reply-To").as_deref()),
        return_path: m.envelope.mail_from.clone(),
        subject: meta.subject.clone().unwrap_or_default(),
        list_unsubscribe: ListUnsubscribe {
            header: header("List-Unsubscribe").unwrap_or_default(),
            links: Vec::new(),
            errors: String::new(),
            header_post: header("List-Unsubscribe-Post").unwrap_or_default(),
        },
        date: meta.date.clone().unwrap_or_else(|| rfc3339(m.received_at)),
        tags: state.tags.tags_of(m.id).await?.unwrap_or_default(),
        username: String::new(),
        text,
        html,
        size: m.size,
        inline: inline.into_iter().map(part_shape).collect(),
        attachments: attachments.into_iter().map(part_shape).collect(),
    }))
}

pub(super) async fn headers(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BTreeMap<String, Vec<String>>>, ApiError> {
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in mime::raw_headers(&m.raw) {
        map.entry(canonical(&k)).or_default().push(v);
    }
    Ok(Json(map))
}

#[derive(Debug, Deserialize)]
pub(super) struct RawParams {
    dl: Option<String>,
}

pub(super) async fn raw(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(p): QueryParams<RawParams>,
) -> Result<Response, ApiError> {
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if p.dl.as_deref().is_some_and(|d| d == "1" || d == "true") {
        let v = format!("attachment; filename=\"{}.eml\"", m.id);
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&v).expect("an id is ASCII"),
        );
    }
    Ok((h, m.raw.clone()).into_response())
}

/// Part `path` (a MIME path) of message `id` (`latest` too), handed to `f` off the async
/// threads; None when the message has no such part.
pub(super) async fn with_part<T: Send + 'static>(
    state: &AppState,
    id: &str,
    path: &str,
    f: impl FnOnce(MimePart) -> T + Send + 'static,
) -> Result<Option<T>, ApiError> {
    let id = resolve(state, id).await?;
    let m = load(state, &id).await?;
    let raw = m.raw.clone();
    let wanted = path.to_string();
    tokio::task::spawn_blocking(move || mime::parts::part(&raw, &wanted).map(f))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

pub(super) async fn part(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let found = with_part(&state, &id, &path, |p| p).await?;
    let Some(p) = found else {
        return Err(ApiError::NotFound(format!("no part {path}")));
    };
    let mut h = crate::ui::sandboxed(&p.content_type);
    let kind = if p.inline { "inline" } else { "attachment" };
    let file = p
        .file_name
        .unwrap_or_else(|| format!("part-{path}"))
        .replace(['"', '\\', '\r', '\n'], "_");
    if let Ok(v) = HeaderValue::from_str(&format!("{kind}; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((h, p.bytes).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ViewParams {
    embed: Option<String>,
}

/// `cid:` references pointed at the parts' URLs (relative to `/view/`).
fn rewrite_cids(html: &str, id: &str, parts: &[MimePart]) -> String {
    let mut out = html.to_string();
    for p in parts {
        if let Some(cid) = &p.content_id {
            let url = format!("../api/v1/message/{id}/part/{}", p.path);
            for quote in ['"', '\''] {
                out = out.replace(
                    &format!("{quote}cid:{cid}{quote}"),
                    &format!("{quote}{url}{quote}"),
                );
            }
        }
    }
    out
}

pub(super) async fn view(
    State(state): State<AppState>,
    Path(file): Path<String>,
    QueryParams(p): QueryParams<ViewParams>,
) -> Result<Response, ApiError> {
    let (id, html) = if let Some(id) = file.strip_suffix(".html") {
        (id, true)
    } else if let Some(id) = file.strip_suffix(".txt") {
        (id, false)
    } else {
        return Err(ApiError::NotFound(format!("no view {file}")));
    };
    let id = resolve(&state, id).await?;
    let m = load(&state, &id).await?;
    let raw = m.raw.clone();
    if html {
        let embed = p.embed.as_deref().is_some_and(|e| e == "1" || e == "true");
        let sid = m.id.to_string();
        let body = tokio::task::spawn_blocking(move || {
            let html = mime::html_body(&raw)?;
            let mut html = rewrite_cids(&html, &sid, &mime::parts::parts(&raw));
            if embed {
                html = html
                    .replace("<a ", "<a target=\"_blank\" rel=\"noreferrer noopener\" ")
                    .replace("<A ", "<a target=\"_blank\" rel=\"noreferrer noopener\" ");
                if !html.to_ascii_lowercase().contains("<html") {
                    html = format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>{html}</body></html>");
                }
            }
            Some(html)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        // Mailpit answers 404 for a message without an HTML part.
        let Some(body) = body else {
            return Err(ApiError::NotFound("the message has no HTML part".into()));
        };
        return Ok(html_response(body));
    }
    let text = tokio::task::spawn_blocking(move || mime::plain_text(&raw).unwrap_or_default())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The HTML, sandboxed: no scripts, no forms, images only from this server or `data:`.
fn html_response(body: String) -> Response {
    let csp = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
               font-src data:; form-action 'none'; frame-ancestors 'self'; base-uri 'none'";
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonical_like_go() {
        assert_eq!(canonical("MESSAGE-ID"), "Message-Id");
        assert_eq!(canonical("x-tags"), "X-Tags");
        assert_eq!(canonical("DKIM-Signature"), "Dkim-Signature");
    }

    #[test]
    fn cid_images_point_at_their_parts() {
        let parts = vec![MimePart {
            path: "1.2".into(),
            content_type: "image/png".into(),
            file_name: None,
            content_id: Some("logo@x".into()),
            inline: true,
            bytes: Vec::new(),
        }];
        assert_eq!(
            rewrite_cids(
                "<img src=\"cid:logo@x\"><img src='cid:other'>",
                "ID",
                &parts
            ),
            "<img src=\"../api/v1/message/ID/part/1.2\"><img src='cid:other'>"
        );
    }
}
