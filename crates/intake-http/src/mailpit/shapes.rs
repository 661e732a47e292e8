//! The JSON shapes of the Mailpit API (PascalCase, as Mailpit's clients expect them).

use serde::Serialize;

/// `{Name, Address}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Contact {
    pub(super) name: String,
    pub(super) address: String,
}

/// Splits an address-list header value (`"Doe, Jane" <j@x>, bob@y`) into contacts.
pub(super) fn contacts(value: Option<&str>) -> Vec<Contact> {
    let Some(v) = value else { return Vec::new() };
    let mut parts = Vec::new();
    let (mut cur, mut quoted, mut angle) = (String::new(), false, false);
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| match (p.rfind('<'), p.rfind('>')) {
            (Some(l), Some(r)) if l < r => Contact {
                name: p[..l].trim().trim_matches('"').trim().to_string(),
                address: p[l + 1..r].trim().to_string(),
            },
            _ => Contact {
                name: String::new(),
                address: p.to_string(),
            },
        })
        .collect()
}

/// A message in a listing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MessageSummary {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "MessageID")]
    pub(super) message_id: String,
    pub(super) read: bool,
    pub(super) from: Contact,
    pub(super) to: Vec<Contact>,
    pub(super) cc: Vec<Contact>,
    pub(super) bcc: Vec<Contact>,
    pub(super) reply_to: Vec<Contact>,
    pub(super) subject: String,
    pub(super) created: String,
    pub(super) username: String,
    pub(super) tags: Vec<String>,
    pub(super) size: u64,
    pub(super) attachments: u32,
    pub(super) snippet: String,
}

/// A page of messages (`/messages`, `/search`).
#[derive(Debug, Serialize)]
pub(super) struct MessagesPage {
    pub(super) total: u64,
    pub(super) unread: u64,
    pub(super) count: usize,
    pub(super) messages_count: u64,
    pub(super) messages_unread: u64,
    pub(super) start: u64,
    pub(super) tags: Vec<String>,
    pub(super) messages: Vec<MessageSummary>,
}

/// An attachment or inline part of a message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Part {
    #[serde(rename = "PartID")]
    pub(super) part_id: String,
    pub(super) file_name: String,
    pub(super) content_type: String,
    #[serde(rename = "ContentID")]
    pub(super) content_id: String,
    pub(super) size: u64,
    pub(super) checksums: Checksums,
}

/// Digests of a part's decoded content (hex).
#[derive(Debug, Serialize)]
pub(super) struct Checksums {
    #[serde(rename = "MD5")]
    pub(super) md5: String,
    #[serde(rename = "SHA1")]
    pub(super) sha1: String,
    #[serde(rename = "SHA256")]
    pub(super) sha256: String,
}

/// The `List-Unsubscribe` header, as Mailpit reports it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListUnsubscribe {
    pub(super) header: String,
    pub(super) links: Vec<String>,
    pub(super) errors: String,
    pub(super) header_post: String,
}

/// One message in full (`/api/v1/message/{ID}`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Message {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "MessageID")]
    pub(super) message_id: String,
    pub(super) read: bool,
    pub(super) from: Contact,
    pub(super) to: Vec<Contact>,
    pub(super) cc: Vec<Contact>,
    pub(super) bcc: Vec<Contact>,
    pub(super) reply_to: Vec<Contact>,
    pub(super) return_path: String,
    pub(super) subject: String,
    pub(super) list_unsubscribe: ListUnsubscribe,
    pub(super) date: String,
    pub(super) tags: Vec<String>,
    pub(super) username: String,
    pub(super) text: String,
    #[serde(rename = "HTML")]
    pub(super) html: String,
    pub(super) size: u64,
    pub(super) inline: Vec<Part>,
    pub(super) attachments: Vec<Part>,
}
