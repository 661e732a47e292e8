//! `POST /api/v1/send`: Mailpit's way to inject a message from JSON. The message is built
//! here (MIME, base64 attachments) and handed to the same delivery targets as mail the
//! default SMTP listener accepts (`delivery.targets` and the `[[route]]`s: the store, a
//! relay, a webhook, a program), as a [`Handoff`]; then tagged with `Tags` when stored.
//! Answers `{"ID": …}`, or 400 with what a target said when one did not take a recipient.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use base64::Engine;
use intake_core::{
    BodyType, Envelope, Handoff, Incoming, MailParams, MessageId, RcptOutcome, SessionInfo,
    Targets, mime,
};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Address {
    email: String,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Attachment {
    content: String,
    filename: String,
    content_type: String,
    #[serde(rename = "ContentID")]
    content_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SendRequest {
    from: Address,
    to: Vec<Address>,
    cc: Vec<Address>,
    bcc: Vec<String>,
    reply_to: Vec<Address>,
    subject: String,
    text: String,
    #[serde(rename = "HTML")]
    html: String,
    headers: BTreeMap<String, String>,
    tags: Vec<String>,
    attachments: Vec<Attachment>,
}

/// A header value with no line breaks, RFC 2047-encoded when it is not ASCII.
fn value(v: &str) -> Result<String, ApiError> {
    if v.contains(['\r', '\n']) {
        return Err(ApiError::BadRequest(
            "a header value has a line break".into(),
        ));
    }
    if v.is_ascii() {
        return Ok(v.to_string());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(v.as_bytes());
    Ok(format!("=?UTF-8?B?{b64}?="))
}

fn mailbox(a: &Address) -> Result<String, ApiError> {
    if a.email.is_empty() || a.email.contains(['<', '>', ',', ' ', '\r', '\n']) {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not an address",
            a.email
        )));
    }
    Ok(if a.name.is_empty() {
        a.email.clone()
    } else {
        format!("\"{}\" <{}>", value(&a.name)?.replace('"', "'"), a.email)
    })
}

fn list(addresses: &[Address]) -> Result<String, ApiError> {
    Ok(addresses
        .iter()
        .map(mailbox)
        .collect::<Result<Vec<_>, _>>()?
        .join(", "))
}

fn base64_lines(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

fn text_part(ctype: &str, body: &str) -> String {
    format!(
        "Content-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(body.as_bytes())
    )
}

/// The message's content (header and body), MIME.
fn build(req: &SendRequest, id: MessageId) -> Result<String, ApiError> {
    let mut h = format!("From: {}\r\n", mailbox(&req.from)?);
    if !req.to.is_empty() {
        h += &format!("To: {}\r\n", list(&req.to)?);
    }
    if !req.cc.is_empty() {
        h += &format!("Cc: {}\r\n", list(&req.cc)?);
    }
    if !req.reply_to.is_empty() {
        h += &format!("Reply-To: {}\r\n", list(&req.reply_to)?);
    }
    h += &format!("Subject: {}\r\n", value(&req.subject)?);
    let now = jiff::Zoned::now();
    let date =
        jiff::fmt::rfc2822::to_string(&now).map_err(|e| ApiError::Internal(e.to_string()))?;
    h += &format!("Date: {date}\r\nMessage-ID: <{id}@intake>\r\nMIME-Version: 1.0\r\n");
    for (k, v) in &req.headers {
        let name_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok {
            return Err(ApiError::BadRequest(format!("{k:?} is not a header name")));
        }
        h += &format!("{k}: {}\r\n", value(v)?);
    }
    let body = match (req.text.is_empty(), req.html.is_empty()) {
        (false, false) => {
            let b = format!("alt-{}", id.0.simple());
            format!(
                "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n--{b}\r\n{}--{b}\r\n{}--{b}--\r\n",
                text_part("text/plain", &req.text),
                text_part("text/html", &req.html)
            )
        }
        (true, false) => text_part("text/html", &req.html),
        _ => text_part("text/plain", &req.text),
    };
    if req.attachments.is_empty() {
        return Ok(h + &body);
    }
    let b = format!("mixed-{}", id.0.simple());
    let mut out =
        format!("{h}Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n{body}");
    for a in &req.attachments {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.content.trim())
            .map_err(|_| ApiError::BadRequest(format!("{}: Content is not base64", a.filename)))?;
        let ctype = if a.content_type.is_empty() {
            "application/octet-stream"
        } else {
            &a.content_type
        };
        let name = value(&a.filename)?.replace('"', "'");
        let disposition = if a.content_id.is_empty() {
            "attachment"
        } else {
            "inline"
        };
        out += &format!(
            "--{b}\r\nContent-Type: {}; name=\"{name}\"\r\nContent-Disposition: {disposition}; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n",
            value(ctype)?
        );
        if !a.content_id.is_empty() {
            out += &format!("Content-ID: <{}>\r\n", value(&a.content_id)?);
        }
        out += &format!("\r\n{}", base64_lines(&bytes));
    }
    out += &format!("--{b}--\r\n");
    Ok(out)
}

/// Builds, stores and tags the message.
pub(super) async fn send(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: SendRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))?;
    let rcpts: Vec<String> = req
        .to
        .iter()
        .chain(&req.cc)
        .map(|a| a.email.clone())
        .chain(req.bcc.iter().cloned())
        .collect();
    if rcpts.is_empty() {
        return Err(ApiError::BadRequest("no recipients (To, Cc or Bcc)".into()));
    }
    let services = &state.mailpit_services;
    // As SMTP refuses a recipient outside smtp.domains: never a relay for other domains.
    if let Some(accepts) = &services.domains {
        let denied: Vec<&String> = rcpts
            .iter()
            .filter(|r| !r.rsplit_once('@').is_some_and(|(_, d)| accepts(d)))
            .collect();
        if !denied.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "Relay access denied: {}",
                denied
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let id = MessageId::new();
    let built = build(&req, id)?;
    // As from SMTP mail: no `Authentication-Results:` claiming to be ours.
    let content = mime::without_auth_results(built.as_bytes(), &services.hostname);
    let now = jiff::Timestamp::now();
    let received = format!(
        "Received: from the Mailpit API (POST /api/v1/send) by intake; {}\r\n",
        jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC))
            .map_err(|e| ApiError::Internal(e.to_string()))?
    );
    let msg = Incoming::new(
        id,
        now.as_millisecond(),
        Envelope {
            mail_from: req.from.email.clone(),
            rcpt_to: rcpts,
        },
        SessionInfo {
            helo: "mailpit-api".into(),
            client: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        },
        &received,
        &content,
    );
    let params = MailParams {
        body: BodyType::SevenBit,
        smtputf8: !msg.envelope.mail_from.is_ascii()
            || msg.envelope.rcpt_to.iter().any(|r| !r.is_ascii()),
    };
    let rcpts = msg.envelope.rcpt_to.clone();
    let targets = (services.targets.clone()).unwrap_or_else(|| Targets::store(state.store.clone()));
    let report = targets
        .deliver(&Handoff {
            message: msg,
            params,
        })
        .await;
    let refused: Vec<String> = rcpts
        .iter()
        .zip(&report.rcpts)
        .filter(|(_, o)| !o.is_accepted())
        .map(|(r, o)| match o {
            RcptOutcome::TempFail(Some(d)) | RcptOutcome::PermFail(Some(d)) => {
                format!("{r}: {} {}", d.code, d.text)
            }
            _ if report.store_failed => format!("{r}: the store did not take it"),
            _ => format!("{r}: not delivered"),
        })
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "not delivered: {}",
            refused.join("; ")
        )));
    }
    if report.stored && !req.tags.is_empty() {
        state.tags.add_tags(id, &req.tags).await?;
    }
    Ok(Json(serde_json::json!({ "ID": id.to_string() })))
}
