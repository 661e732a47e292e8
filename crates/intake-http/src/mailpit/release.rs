//! `POST /api/v1/message/{ID}/release` with `{"To": [...]}`: sends a caught message on, to
//! the one downstream the settings name (the `[relay]` target), never anywhere else: off
//! unless `mailpit.release` is on and `[relay]` is configured (400 otherwise). As Mailpit
//! does: the envelope sender is the message's `Sender:` or `From:` address, `Bcc:` is
//! removed, `Date:` is now and `Message-ID:` a new one. Answers `ok` (text/plain) when the
//! downstream took every recipient, 400 `SMTP error: …` with its reply otherwise.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use intake_core::{
    Envelope, Handoff, Incoming, MailParams, MessageId, RcptOutcome, SessionInfo, mime,
};
use serde::Deserialize;

use super::shapes::contacts;
use super::{ok, resolve};
use crate::AppState;
use crate::error::ApiError;
use crate::lookup::load;

#[derive(Debug, Deserialize)]
struct ReleaseRequest {
    #[serde(rename = "To", alias = "to", default)]
    to: Vec<String>,
}

/// The address of `text` (`a@b.test` or `Name <a@b.test>`), if it is one.
fn address(text: &str) -> Option<String> {
    let c = contacts(Some(text));
    let [one] = c.as_slice() else { return None };
    let a = one.address.trim();
    let (local, domain) = a.rsplit_once('@')?;
    let bad =
        |s: &str| s.is_empty() || s.contains(|c: char| c.is_whitespace() || "<>,;".contains(c));
    (!bad(local) && !bad(domain)).then(|| a.to_string())
}

/// `raw` without the header fields named in `drop` (with their folded lines), with
/// `add` (complete CRLF-terminated fields) in front.
fn rewrite_header(raw: &[u8], drop: &[&str], add: &str) -> Vec<u8> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(raw.len());
    let mut out = Vec::with_capacity(raw.len() + add.len());
    out.extend_from_slice(add.as_bytes());
    let mut skipping = false;
    for line in raw[..end].split_inclusive(|&b| b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            skipping = drop.iter().any(|d| name.eq_ignore_ascii_case(d.as_bytes()));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&raw[end..]);
    out
}

/// What a refusing downstream said, for the error text.
fn refusal(rcpt: &str, o: &RcptOutcome) -> String {
    match o {
        RcptOutcome::TempFail(Some(r)) | RcptOutcome::PermFail(Some(r)) => {
            format!("{rcpt}: {} {}", r.code, r.text)
        }
        RcptOutcome::TempFail(None) => format!("{rcpt}: the relay could not be reached"),
        RcptOutcome::PermFail(None) => format!("{rcpt}: refused"),
        RcptOutcome::Accepted => String::new(),
    }
}

pub(super) async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(release) = state.mailpit_services.release.clone() else {
        return Err(ApiError::BadRequest(
            "message release is not enabled (mailpit.release and a [relay] downstream)".into(),
        ));
    };
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    let req: ReleaseRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut to = Vec::new();
    for t in &req.to {
        to.push(
            address(t)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid email address: {t}")))?,
        );
    }
    if to.is_empty() {
        return Err(ApiError::BadRequest("No valid addresses found".into()));
    }
    let raw = m.raw.clone();
    let sender = mime::headers(&raw)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("sender"))
        .and_then(|(_, v)| address(&v));
    let from = sender
        .or_else(|| m.meta.from.as_deref().and_then(address))
        .ok_or_else(|| ApiError::BadRequest("No From header found".into()))?;
    let new_id = MessageId::new();
    let now = jiff::Zoned::now();
    let date =
        jiff::fmt::rfc2822::to_string(&now).map_err(|e| ApiError::Internal(e.to_string()))?;
    let content = rewrite_header(
        &raw,
        &["bcc", "date", "message-id"],
        &format!("Date: {date}\r\nMessage-ID: <{new_id}@intake>\r\n"),
    );
    let params = MailParams {
        body: if content.is_ascii() {
            intake_core::delivery::BodyType::SevenBit
        } else {
            intake_core::delivery::BodyType::EightBitMime
        },
        smtputf8: !from.is_ascii() || to.iter().any(|t| !t.is_ascii()),
    };
    let message = Incoming::new(
        new_id,
        now.timestamp().as_millisecond(),
        Envelope {
            mail_from: from,
            rcpt_to: to.clone(),
        },
        SessionInfo {
            helo: "mailpit-api".into(),
            client: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        },
        "",
        &content,
    );
    let outcomes = release.relay.deliver(&Handoff { message, params }).await;
    let refused: Vec<String> = to
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.is_accepted())
        .map(|(t, o)| refusal(t, o))
        .collect();
    if !refused.is_empty() {
        tracing::warn!(id = %m.id, refused = ?refused, "release refused by the relay");
        return Err(ApiError::BadRequest(format!(
            "SMTP error: {}",
            refused.join("; ")
        )));
    }
    tracing::info!(id = %m.id, released_as = %new_id, to = ?to, server = %release.server, "message released");
    Ok(ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_or_without_a_name() {
        assert_eq!(address("a@b.test").as_deref(), Some("a@b.test"));
        assert_eq!(address("Al <a@b.test>").as_deref(), Some("a@b.test"));
        assert_eq!(address("not an address"), None);
        assert_eq!(address("a@b.test, c@d.test"), None);
        assert_eq!(address("@b.test"), None);
    }

    #[test]
    fn header_fields_are_dropped_with_their_folded_lines() {
        let raw = b"Received: x\r\nBcc: a@b.test,\r\n c@d.test\r\nDate: old\r\nSubject: s\r\n\r\nBcc: body\r\n";
        let out = rewrite_header(raw, &["bcc", "date"], "Date: new\r\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Date: new\r\nReceived: x\r\nSubject: s\r\n\r\nBcc: body\r\n"
        );
    }
}
