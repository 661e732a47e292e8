//! Messages on their way in and on their way out of a store.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::mime;
pub use crate::mime::{Attachment, ParsedMeta};

/// A message id: a UUIDv7, so ids sort by time of receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A new id for a message received now.
    pub fn new() -> Self {
        MessageId(Uuid::now_v7())
    }

    /// The 16 raw bytes (how stores keep it).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From 16 raw bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Uuid::from_slice(b).ok().map(MessageId)
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(MessageId)
    }
}

/// The mailbox a recipient's mail is filed under: the address, lower-cased.
pub fn mailbox_key(address: &str) -> String {
    address.to_lowercase()
}

/// The SMTP envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse-path; empty for the null sender.
    pub mail_from: String,
    /// Forward-paths, in the order they were accepted.
    pub rcpt_to: Vec<String>,
}

/// TLS parameters of the session a message arrived on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// Who sent a message, as seen by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The EHLO/HELO name (empty when the client gave none).
    pub helo: String,
    /// The client's address (from the PROXY header when there is one).
    pub client: SocketAddr,
    /// TLS, when the session was encrypted.
    pub tls: Option<TlsInfo>,
}

/// A message ready to be stored: everything a store writes, computed before the write so
/// that the store's single writer does no parsing.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Time-ordered id.
    pub id: MessageId,
    /// When the end of data was received, Unix milliseconds.
    pub received_at: i64,
    /// The SMTP envelope.
    pub envelope: Envelope,
    /// HELO name, client address, TLS.
    pub session: SessionInfo,
    /// Size of the message content as received (without our `Received:` header).
    pub size: u64,
    /// SHA-256 of the content as received, lower-case hex.
    pub sha256: String,
    /// Parsed header fields.
    pub meta: ParsedMeta,
    /// The stored bytes: our `Received:` header, then the content exactly as received.
    pub raw: Bytes,
    /// What the policy checks found (empty when none ran).
    pub findings: crate::Findings,
}

impl Incoming {
    /// Assembles a message: hashes and parses `content`, prepends `received_header`.
    pub fn new(
        id: MessageId,
        received_at: i64,
        envelope: Envelope,
        session: SessionInfo,
        received_header: &str,
        content: &[u8],
    ) -> Incoming {
        let mut raw = Vec::with_capacity(received_header.len() + content.len());
        raw.extend_from_slice(received_header.as_bytes());
        raw.extend_from_slice(content);
        let header_len = received_header.len();
        Incoming::from_raw(id, received_at, envelope, session, raw.into(), header_len)
    }

    /// Assembles a message whose stored bytes are already in one buffer: our header fields
    /// (the first `header_len` bytes of `raw`), then the content as received. Hashes and
    /// parses the content; `raw` is kept as it is, not copied.
    pub fn from_raw(
        id: MessageId,
        received_at: i64,
        envelope: Envelope,
        session: SessionInfo,
        raw: Bytes,
        header_len: usize,
    ) -> Incoming {
        let content = &raw[header_len..];
        let sha256 = hex::encode(Sha256::digest(content));
        let meta = mime::parse_meta(content);
        Incoming {
            id,
            received_at,
            envelope,
            session,
            size: content.len() as u64,
            sha256,
            meta,
            raw,
            findings: crate::Findings::default(),
        }
    }

    /// The distinct mailboxes this message is filed under.
    pub fn mailboxes(&self) -> Vec<String> {
        let mut boxes: Vec<String> = self
            .envelope
            .rcpt_to
            .iter()
            .map(|a| mailbox_key(a))
            .collect();
        boxes.sort();
        boxes.dedup();
        boxes
    }
}

/// One line of a mailbox listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Message id.
    pub id: MessageId,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// `From:` header.
    pub from: Option<String>,
    /// `To:` header.
    pub to: Option<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// Content size in octets.
    pub size: u64,
    /// Marked read.
    pub seen: bool,
    /// Number of attachments.
    pub attachments: u32,
}

impl Summary {
    /// The one place a summary is made from a message's parts; every other constructor
    /// (from an [`Incoming`] or a [`StoredMessage`]) goes through it. The SQL engines read
    /// the same fields from their columns.
    fn new(
        id: MessageId,
        received_at: i64,
        envelope: &Envelope,
        meta: &ParsedMeta,
        size: u64,
        seen: bool,
    ) -> Summary {
        Summary {
            id,
            received_at,
            mail_from: envelope.mail_from.clone(),
            rcpt_to: envelope.rcpt_to.clone(),
            from: meta.from.clone(),
            to: meta.to.clone(),
            subject: meta.subject.clone(),
            size,
            seen,
            attachments: meta.attachments.len() as u32,
        }
    }
}

/// The summary of a message about to be stored (for events published on commit): unread.
impl From<&Incoming> for Summary {
    fn from(m: &Incoming) -> Summary {
        Summary::new(m.id, m.received_at, &m.envelope, &m.meta, m.size, false)
    }
}

/// The summary of a stored message.
impl From<&StoredMessage> for Summary {
    fn from(m: &StoredMessage) -> Summary {
        Summary::new(m.id, m.received_at, &m.envelope, &m.meta, m.size, m.seen)
    }
}

/// A stored message with everything kept about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Message id.
    pub id: MessageId,
    /// Unix milliseconds.
    pub received_at: i64,
    /// The SMTP envelope.
    pub envelope: Envelope,
    /// EHLO/HELO name.
    pub helo: String,
    /// Client IP and port.
    pub client: SocketAddr,
    /// TLS, if any.
    pub tls: Option<TlsInfo>,
    /// Content size in octets.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Parsed header fields.
    pub meta: ParsedMeta,
    /// The raw message with our `Received:` header first.
    pub raw: Bytes,
    /// Marked read.
    pub seen: bool,
    /// The mailboxes it is filed under.
    pub mailboxes: Vec<String>,
    /// What the policy checks found, when any ran.
    pub findings: Option<crate::Findings>,
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
