//! JSON shapes and parameters shared by the API routes and the live routes (events, wait).

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
