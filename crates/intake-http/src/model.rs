//! JSON shapes and parameters shared by the API routes and the live routes (events, wait),
//! and the shape of one message in full.

use intake_core::{Query, Summary};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A message in a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageSummary {
    /// Message id (time-ordered).
    pub id: String,
    /// When Intake received it (RFC 3339, UTC).
    pub received_at: String,
    /// Envelope sender (empty for the null sender).
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// `From:` header.
    pub from: Option<String>,
    /// `To:` header.
    pub to: Option<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// Size in octets, as received.
    pub size: u64,
    /// Marked read.
    pub seen: bool,
    /// Number of attachments.
    pub attachments: u32,
    /// Tags, sorted (set through the API, `X-Tags` or plus-addressing).
    pub tags: Vec<String>,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

impl From<&Summary> for MessageSummary {
    fn from(s: &Summary) -> Self {
        MessageSummary {
            id: s.id.to_string(),
            received_at: rfc3339(s.received_at),
            mail_from: s.mail_from.clone(),
            rcpt_to: s.rcpt_to.clone(),
            from: s.from.clone(),
            to: s.to.clone(),
            subject: s.subject.clone(),
            size: s.size,
            seen: s.seen,
            attachments: s.attachments,
            tags: Vec::new(),
        }
    }
}

pub(crate) fn parse_query(text: &str) -> Result<Query, ApiError> {
    Query::parse(text).map_err(|e| ApiError::BadRequest(format!("query: {e}")))
}

/// The `key=value` pairs of a query string or url-encoded form, percent-decoded, in order.
pub(crate) fn form_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let uri: axum::http::Uri = format!("/?{text}").parse().ok()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    Some(pairs)
}

/// A header field.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderField {
    /// Field name as sent.
    pub name: String,
    /// Value, decoded where it was an encoded word.
    pub value: String,
}

/// TLS of the session the message came in on.
#[derive(Debug, Serialize, ToSchema)]
pub struct TlsJson {
    /// e.g. TLSv1.3.
    pub version: String,
    /// e.g. TLS13_AES_256_GCM_SHA384.
    pub cipher: String,
}

/// What the policy checks found about a message (absent when no check looked at it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChecksJson {
    /// Sum of the checks' scores (DNS lists that tag, rspamd, spamd).
    pub score: f32,
    /// Rule names: `DNSBL_LISTED`, `DNSWL_ALLOWLISTED`, `DMARC_POLICY_REJECT`,
    /// `RSPAMD:<symbol>`, `SA:<rule>`, ...
    pub symbols: Vec<String>,
    /// DNS lists that listed the client, as `zone=weight`.
    pub lists: Vec<String>,
    /// SPF result (`pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`).
    pub spf: Option<String>,
    /// DKIM result of the best signature.
    pub dkim: Option<String>,
    /// DMARC result and the domain's policy, e.g. `fail (p=reject)`.
    pub dmarc: Option<String>,
    /// ARC chain result.
    pub arc: Option<String>,
    /// The content scanner's verdict, e.g. `rspamd: add header (7.20/15.00)`.
    pub scanner: Option<String>,
    /// Checks that could not decide and let the message in unchecked (`on_error =
    /// "pass"`); the message also carries an `X-Intake-Unchecked:` header for each.
    pub undecided: Vec<UndecidedJson>,
}

/// A check that could not decide about a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct UndecidedJson {
    /// The check, e.g. `rspamd`.
    pub check: String,
    /// Why it could not decide, e.g. `timed out after 20s`.
    pub reason: String,
}

impl From<&intake_core::Findings> for ChecksJson {
    fn from(f: &intake_core::Findings) -> Self {
        ChecksJson {
            score: f.score,
            symbols: f.symbols.clone(),
            lists: f.lists.clone(),
            spf: f.spf.clone(),
            dkim: f.dkim.clone(),
            dmarc: f.dmarc.clone(),
            arc: f.arc.clone(),
            scanner: f.scanner.clone(),
            undecided: (f.undecided.iter())
                .map(|u| UndecidedJson {
                    check: u.check.clone(),
                    reason: u.reason.clone(),
                })
                .collect(),
        }
    }
}

/// The SMTP client.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientJson {
    /// IP address.
    pub ip: String,
    /// Source port.
    pub port: u16,
}

/// An attachment of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentJson {
    /// Part id for `/attachments/{part}`.
    pub part: String,
    /// File name, if any.
    pub name: Option<String>,
    /// MIME type.
    pub content_type: String,
    /// Decoded size in octets.
    pub size: u64,
}

/// One message with everything known about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    /// Message id.
    pub id: String,
    /// When Intake received it (RFC 3339, UTC).
    pub received_at: String,
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// Mailboxes it is filed under.
    pub mailboxes: Vec<String>,
    /// `From:`.
    pub from: Option<String>,
    /// `To:`.
    pub to: Option<String>,
    /// `Cc:`.
    pub cc: Option<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// Size in octets, as received.
    pub size: u64,
    /// Marked read.
    pub seen: bool,
    /// Number of attachments.
    pub attachments: u32,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// EHLO/HELO name.
    pub helo: String,
    /// SMTP client.
    pub client: ClientJson,
    /// TLS, if the session was encrypted.
    pub tls: Option<TlsJson>,
    /// What the policy checks found (score, symbols, DNS lists, SPF/DKIM/DMARC/ARC,
    /// scanner); `null` when no check looked at the message.
    pub checks: Option<ChecksJson>,
    /// SHA-256 of the content as received.
    pub sha256: String,
    /// `Message-ID:`.
    pub message_id: Option<String>,
    /// `Date:` (RFC 3339).
    pub date: Option<String>,
    /// Top-level MIME type.
    pub content_type: Option<String>,
    /// Its charset.
    pub charset: Option<String>,
    /// All header fields in order.
    pub headers: Vec<HeaderField>,
    /// Plain-text body (HTML converted when there is no plain part).
    pub text: Option<String>,
    /// HTML body, if the message has one. Render it only in a sandboxed frame
    /// (`/api/v1/messages/{id}/html` does that safely).
    pub html: Option<String>,
    /// Attachments.
    pub attachment_list: Vec<AttachmentJson>,
}

/// The header fields alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderList {
    /// In order.
    pub headers: Vec<HeaderField>,
}
