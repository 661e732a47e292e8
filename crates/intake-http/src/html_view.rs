//! The HTML view of a message (`/api/v1/messages/{id}/html`): the page the web inbox shows
//! in its message frame. Inline images (`cid:` references) are pointed at the message's own
//! parts; nothing else of the mail's markup is changed, because the markup is never trusted:
//!
//! - The response's CSP is `sandbox allow-same-origin` (never `allow-scripts`, forms,
//!   popups or top navigation) with `default-src 'none'`: no script runs, no form posts,
//!   and nothing loads but inline styles, `data:` images and fonts, and images from this
//!   server (the message's inline parts). Remote images load only with `images=1`, when
//!   the reader asks for them.
//! - The inbox frames it with the same `sandbox="allow-same-origin"` attribute. The origin
//!   is kept (not opaque) for one reason: the page may then read the frame's content height
//!   and size the frame to it. Without scripts in the frame, that origin gives the mail's
//!   markup nothing to use it with.

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use intake_core::mime;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::lookup::load;

/// Options of the HTML view.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HtmlOptions {
    /// `1`: allow remote images (blocked by default).
    pub images: Option<u8>,
}

/// The HTML body as a page for a sandboxed iframe, with a CSP that forbids scripts and
/// (unless `images=1`) every remote load. `cid:` references to the message's inline parts
/// point at `/api/v1/messages/{id}/attachments/{part}`.
#[utoipa::path(get, path = "/api/v1/messages/{id}/html", tag = "messages",
    params(("id" = String, Path, description = "Message id"), HtmlOptions),
    responses((status = 200, content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub(crate) async fn message_html(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(opts): QueryParams<HtmlOptions>,
) -> Result<Response, ApiError> {
    let m = load(&state, &id).await?;
    let id = m.id.to_string();
    let raw = m.raw.clone();
    let html = tokio::task::spawn_blocking(move || match mime::html_body(&raw) {
        Some(html) => {
            let parts = mime::content_ids(&raw);
            resolve_cids(&html, &parts, |part| {
                format!("/api/v1/messages/{id}/attachments/{part}")
            })
        }
        None => {
            let text = mime::plain_text(&raw).unwrap_or_default();
            format!("<pre>{}</pre>", escape_html(&text))
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(framed_html(html, opts.images == Some(1)))
}

/// The page for the inbox's frame: see the module's documentation for its policy.
fn framed_html(html: String, remote_images: bool) -> Response {
    let images = if remote_images {
        "'self' data: http: https:"
    } else {
        "'self' data:"
    };
    let csp = format!(
        "sandbox allow-same-origin; default-src 'none'; script-src 'none'; \
         style-src 'unsafe-inline'; img-src {images}; font-src data:; form-action 'none'; \
         frame-ancestors 'self'; base-uri 'none'"
    );
    // Never cached: whether remote images load is decided per request.
    let h = crate::ui::page_headers(
        HeaderValue::from_static("text/html; charset=utf-8"),
        HeaderValue::from_str(&csp).expect("ascii"),
        "no-store",
    );
    (h, html).into_response()
}

/// `html` with each `cid:` reference to one of `parts` (index, Content-ID) replaced by
/// `url(index)`. References are found wherever they stand (`src`, `background`, CSS
/// `url()`), compared after percent-decoding (RFC 2392), exactly and then ignoring ASCII
/// case; unknown ones are left as they are (and stay unloadable).
pub(crate) fn resolve_cids(
    html: &str,
    parts: &[(usize, String)],
    url: impl Fn(usize) -> String,
) -> String {
    if parts.is_empty() {
        return html.to_string();
    }
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = find_cid(bytes, i) {
        let start = at + 4;
        let end = (start..bytes.len())
            .find(|&j| is_end(bytes[j]))
            .unwrap_or(bytes.len());
        let name = percent_decode(&html[start..end]);
        let found = (parts.iter().find(|(_, id)| *id == name))
            .or_else(|| parts.iter().find(|(_, id)| id.eq_ignore_ascii_case(&name)));
        if let Some((index, _)) = found.filter(|_| end > start) {
            out.push_str(&html[copied..at]);
            out.push_str(&url(*index));
            copied = end;
        }
        i = end.max(start);
    }
    out.push_str(&html[copied..]);
    out
}

/// The next `cid:` (any case) at or after `from` that does not end a longer word.
fn find_cid(b: &[u8], from: usize) -> Option<usize> {
    (from..b.len().saturating_sub(3)).find(|&j| {
        b[j..j + 4].eq_ignore_ascii_case(b"cid:")
            && (j == 0 || !(b[j - 1].is_ascii_alphanumeric() || b[j - 1] == b'-'))
    })
}

/// Where a reference ends: a quote, a bracket, white space or an entity.
fn is_end(c: u8) -> bool {
    matches!(c, b'"' | b'\'' | b'(' | b')' | b'<' | b'>' | b'&' | b'\\') || c.is_ascii_whitespace()
}

/// `%XX` escapes decoded; anything malformed kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` with the characters HTML gives a meaning escaped.
pub(crate) fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(i: usize) -> String {
        format!("/p/{i}")
    }

    #[test]
    fn known_references_point_at_their_parts_wherever_they_stand() {
        let parts = vec![(0, "logo@x".to_string()), (2, "Bg.1".to_string())];
        let html = r#"<img src="cid:logo@x"><img src='CID:logo%40x'><img src=cid:logo@x>
<td background="cid:bg.1" style="background:url(cid:Bg.1)">placid:logo@x cid:unknown"#;
        assert_eq!(
            resolve_cids(html, &parts, url),
            r#"<img src="/p/0"><img src='/p/0'><img src=/p/0>
<td background="/p/2" style="background:url(/p/2)">placid:logo@x cid:unknown"#
        );
    }

    #[test]
    fn without_parts_or_references_the_html_is_unchanged() {
        let html = "<p>cid: nothing here, cid:</p>";
        assert_eq!(resolve_cids(html, &[], url), html);
        assert_eq!(resolve_cids(html, &[(0, "x".into())], url), html);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
