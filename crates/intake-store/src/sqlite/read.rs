//! Queries on read connections: a mailbox's listing, one message, retention's candidates
//! (search and the all-mail listing are in `search.rs`).

use intake_core::{Listing, MessageId, Page, StoreError, StoredMessage, Summary, mailbox_key};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::unavailable;
use crate::columns::{MessageColumns, json};

pub(super) const SUMMARY_COLS: &str = "m.id, m.received_at, m.mail_from, m.rcpt_to, m.from_addr, m.to_addr, m.subject, \
                            m.size, m.seen, json_array_length(m.attachments)";

fn summary_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    let id: Vec<u8> = row.get(0)?;
    let rcpt: String = row.get(3)?;
    Ok(Summary {
        id: MessageId::from_slice(&id).unwrap_or(MessageId(uuid::Uuid::nil())),
        received_at: row.get(1)?,
        mail_from: row.get(2)?,
        rcpt_to: serde_json::from_str(&rcpt).unwrap_or_default(),
        from: row.get(4)?,
        to: row.get(5)?,
        subject: row.get(6)?,
        size: row.get::<_, i64>(7)? as u64,
        seen: row.get(8)?,
        attachments: row.get::<_, i64>(9)? as u32,
    })
}

pub(super) fn collect(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: &[Value],
) -> Result<Vec<Summary>, StoreError> {
    let rows = stmt
        .query_map(params_from_iter(params.iter()), summary_from_row)
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

pub(super) fn list_mailbox(
    conn: &Connection,
    mailbox: &str,
    page: Page,
) -> Result<Listing, StoreError> {
    let mailbox = mailbox_key(mailbox);
    let (total, unread): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(m.seen = 0), 0) FROM mailbox_messages b
             JOIN messages m ON m.seq = b.seq WHERE b.mailbox = ?1",
        )
        .and_then(|mut s| s.query_row([&mailbox], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(unavailable)?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLS} FROM mailbox_messages b JOIN messages m ON m.seq = b.seq
             WHERE b.mailbox = ?1 ORDER BY b.seq DESC LIMIT ?2 OFFSET ?3"
        ))
        .map_err(unavailable)?;
    let messages = collect(
        &mut stmt,
        &[
            Value::Text(mailbox),
            Value::Integer(page.limit as i64),
            Value::Integer(page.offset as i64),
        ],
    )?;
    Ok(Listing {
        total: total as u64,
        unread: unread as u64,
        messages,
    })
}

pub(super) fn fetch(conn: &Connection, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.seq, m.received_at, m.mail_from, m.rcpt_to, m.helo, m.client_ip, m.client_port,
                    m.tls_version, m.tls_cipher, m.size, m.sha256, m.message_id, m.from_addr,
                    m.to_addr, m.cc_addr, m.subject, m.date, m.content_type, m.charset,
                    m.attachments, m.seen, b.raw, m.mailboxes,
                    (SELECT c.findings FROM message_checks c WHERE c.seq = m.seq)
             FROM messages m JOIN bodies b ON b.seq = m.seq WHERE m.id = ?1",
        )
        .map_err(unavailable)?;
    let row = stmt
        .query_row(params![&id.as_bytes()[..]], |r| {
            // rcpt_to and mailboxes are JSON here: parsed below, outside the row callback.
            let columns = MessageColumns {
                received_at: r.get(1)?,
                mail_from: r.get(2)?,
                rcpt_to: Vec::new(),
                helo: r.get(4)?,
                client_ip: r.get(5)?,
                client_port: r.get(6)?,
                tls_version: r.get(7)?,
                tls_cipher: r.get(8)?,
                size: r.get(9)?,
                sha256: r.get(10)?,
                message_id: r.get(11)?,
                from_addr: r.get(12)?,
                to_addr: r.get(13)?,
                cc_addr: r.get(14)?,
                subject: r.get(15)?,
                date: r.get(16)?,
                content_type: r.get(17)?,
                charset: r.get(18)?,
                attachments: r.get(19)?,
                seen: r.get(20)?,
                raw: r.get(21)?,
                mailboxes: Vec::new(),
                findings: r.get(23)?,
            };
            Ok((r.get::<_, String>(3)?, r.get::<_, String>(22)?, columns))
        })
        .optional()
        .map_err(unavailable)?;
    let Some((rcpt_to, mailboxes, mut columns)) = row else {
        return Ok(None);
    };
    columns.rcpt_to = json(id, &rcpt_to)?;
    columns.mailboxes = json(id, &mailboxes)?;
    columns.mailboxes.sort();
    columns.into_stored(id).map(Some)
}

/// Mailbox links to drop so that each mailbox keeps its newest `keep` messages.
pub(super) fn over_mailbox_cap(
    conn: &Connection,
    keep: u64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT mailbox, seq FROM (
                SELECT mailbox, seq, row_number() OVER (PARTITION BY mailbox ORDER BY seq DESC) AS n
                FROM mailbox_messages WHERE mailbox IN (
                    SELECT mailbox FROM mailbox_messages GROUP BY mailbox HAVING count(*) > ?1))
             WHERE n > ?1",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([keep as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

/// Messages received before `before_ms`.
pub(super) fn older_than(conn: &Connection, before_ms: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq FROM messages WHERE received_at < ?1 ORDER BY seq")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([before_ms], |r| r.get(0))
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

/// The oldest messages to delete so that the rest add up to at most `max_bytes`.
pub(super) fn over_size_cap(conn: &Connection, max_bytes: u64) -> Result<Vec<i64>, StoreError> {
    let total: i64 = conn
        .query_row("SELECT coalesce(sum(size), 0) FROM messages", [], |r| {
            r.get(0)
        })
        .map_err(unavailable)?;
    let mut excess = total - max_bytes as i64;
    if excess <= 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached("SELECT seq, size FROM messages ORDER BY seq")
        .map_err(unavailable)?;
    let mut rows = stmt.query([]).map_err(unavailable)?;
    let mut out = Vec::new();
    while excess > 0 {
        let Some(row) = rows.next().map_err(unavailable)? else {
            break;
        };
        let (seq, size): (i64, i64) = (
            row.get(0).map_err(unavailable)?,
            row.get(1).map_err(unavailable)?,
        );
        out.push(seq);
        excess -= size;
    }
    Ok(out)
}

/// The mailbox an alias is registered for.
pub(super) fn alias_get(conn: &Connection, alias: &str) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT mailbox FROM aliases WHERE alias = ?1",
        [alias],
        |r| r.get(0),
    )
    .optional()
    .map_err(unavailable)
}
