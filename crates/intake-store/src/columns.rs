//! A message as the SQL backends (SQLite, PostgreSQL, MariaDB) keep it in their columns,
//! and the one place those columns become a [`StoredMessage`] (or `Corrupt` when they cannot).

use intake_core::{Envelope, MessageId, ParsedMeta, StoreError, StoredMessage, TlsInfo};

/// The columns of one stored message, as read (JSON columns still text).
pub(crate) struct MessageColumns {
    pub received_at: i64,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub helo: String,
    pub client_ip: String,
    pub client_port: i64,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub message_id: Option<String>,
    pub from_addr: Option<String>,
    pub to_addr: Option<String>,
    pub cc_addr: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    pub content_type: Option<String>,
    pub charset: Option<String>,
    /// JSON: the attachments' names, types and sizes.
    pub attachments: String,
    pub seen: bool,
    pub raw: Vec<u8>,
    pub mailboxes: Vec<String>,
    /// JSON: what the checks found, if they found anything.
    pub findings: Option<String>,
}

/// `StoreError::Corrupt` for a column of message `id` that does not read back.
pub(crate) fn corrupt(id: MessageId, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("message {id}: {e}"))
}

/// A JSON column of message `id`.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    id: MessageId,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(id, &e))
}

impl MessageColumns {
    /// The message `id` these columns hold.
    pub fn into_stored(self, id: MessageId) -> Result<StoredMessage, StoreError> {
        let ip: std::net::IpAddr = self.client_ip.parse().map_err(|e| corrupt(id, &e))?;
        let port = u16::try_from(self.client_port).map_err(|e| corrupt(id, &e))?;
        let findings = match self.findings {
            Some(f) => Some(json(id, &f)?),
            None => None,
        };
        Ok(StoredMessage {
            id,
            received_at: self.received_at,
            envelope: Envelope {
                mail_from: self.mail_from,
                rcpt_to: self.rcpt_to,
            },
            helo: self.helo,
            client: std::net::SocketAddr::new(ip, port),
            tls: match (self.tls_version, self.tls_cipher) {
                (Some(version), Some(cipher)) => Some(TlsInfo { version, cipher }),
                _ => None,
            },
            size: self.size.max(0) as u64,
            sha256: self.sha256,
            meta: ParsedMeta {
                message_id: self.message_id,
                from: self.from_addr,
                to: self.to_addr,
                cc: self.cc_addr,
                subject: self.subject,
                date: self.date,
                content_type: self.content_type,
                charset: self.charset,
                attachments: json(id, &self.attachments)?,
            },
            raw: self.raw.into(),
            seen: self.seen,
            mailboxes: self.mailboxes,
            findings,
        })
    }
}
