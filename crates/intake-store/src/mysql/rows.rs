//! The writer's batch as SQL: one multi-row `INSERT` per table, split into runs so that no
//! statement carries more than half of `max_allowed_packet` (nor more than [`MAX_ROWS`]
//! rows), and the search text each message gets.

use intake_core::{Incoming, StoreError, mime};
use sqlx::mysql::MySqlConnection;
use sqlx::{MySql, QueryBuilder};
use tokio::sync::oneshot;

use super::ServerLimits;

/// One message on its way to the writer.
pub(crate) struct Delivery {
    pub msg: Incoming,
    /// Lower-cased, distinct, aliases resolved.
    pub mailboxes: Vec<String>,
    /// What search looks at (made by the session's task).
    pub words: String,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// Rows of one multi-row `INSERT` at most.
const MAX_ROWS: usize = 500;

/// Splits `items` into runs whose `size` adds up to at most `budget` (a single larger item
/// is a run of its own) and of at most [`MAX_ROWS`] items.
fn runs<T>(items: &[T], size: impl Fn(&T) -> usize, budget: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && (bytes + s > budget || i - start >= MAX_ROWS) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The fields of a `messages` row that are not plain copies.
struct MessageRow<'a> {
    m: &'a Incoming,
    rcpt: String,
    attachments: String,
    ip: String,
}

impl MessageRow<'_> {
    fn size(&self) -> usize {
        let meta = &self.m.meta;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        256 + self.rcpt.len()
            + self.attachments.len()
            + self.m.envelope.mail_from.len()
            + self.m.session.helo.len()
            + [
                &meta.message_id,
                &meta.from,
                &meta.to,
                &meta.cc,
                &meta.subject,
                &meta.date,
                &meta.content_type,
                &meta.charset,
            ]
            .into_iter()
            .map(opt)
            .sum::<usize>()
    }
}

/// The bytes a message's `messages` row carries (a message whose row cannot fit in one
/// statement is refused before it reaches a batch).
pub(crate) fn row_size(m: &Incoming) -> usize {
    MessageRow {
        m,
        rcpt: serde_json::to_string(&m.envelope.rcpt_to).expect("strings serialize"),
        attachments: serde_json::to_string(&m.meta.attachments).expect("attachments serialize"),
        ip: String::new(),
    }
    .size()
}

/// Inserts the messages of `batch` (rows, body parts, mailbox links, findings, search
/// text), one multi-row statement per table and run.
pub(crate) async fn insert(
    conn: &mut MySqlConnection,
    batch: &[Delivery],
    limits: &ServerLimits,
) -> Result<(), sqlx::Error> {
    let budget = limits.statement_budget;
    let rows: Vec<MessageRow<'_>> = batch
        .iter()
        .map(|d| MessageRow {
            m: &d.msg,
            rcpt: serde_json::to_string(&d.msg.envelope.rcpt_to).expect("strings serialize"),
            attachments: serde_json::to_string(&d.msg.meta.attachments)
                .expect("attachments serialize"),
            ip: d.msg.session.client.ip().to_string(),
        })
        .collect();
    for run in runs(&rows, MessageRow::size, budget) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO messages (id, received_at, mail_from, rcpt_to, helo, client_ip, \
             client_port, tls_version, tls_cipher, size, sha256, message_id, from_addr, to_addr, \
             cc_addr, subject, date, content_type, charset, attachments, attachment_count) ",
        );
        q.push_values(run, |mut b, r| {
            let m = r.m;
            b.push_bind(&m.id.as_bytes()[..])
                .push_bind(m.received_at)
                .push_bind(m.envelope.mail_from.as_str())
                .push_bind(r.rcpt.as_str())
                .push_bind(m.session.helo.as_str())
                .push_bind(r.ip.as_str())
                .push_bind(i32::from(m.session.client.port()))
                .push_bind(m.session.tls.as_ref().map(|t| t.version.as_str()))
                .push_bind(m.session.tls.as_ref().map(|t| t.cipher.as_str()))
                .push_bind(m.size as i64)
                .push_bind(m.sha256.as_str())
                .push_bind(m.meta.message_id.as_deref())
                .push_bind(m.meta.from.as_deref())
                .push_bind(m.meta.to.as_deref())
                .push_bind(m.meta.cc.as_deref())
                .push_bind(m.meta.subject.as_deref())
                .push_bind(m.meta.date.as_deref())
                .push_bind(m.meta.content_type.as_deref())
                .push_bind(m.meta.charset.as_deref())
                .push_bind(r.attachments.as_str())
                .push_bind(m.meta.attachments.len() as i32);
        });
        q.build().execute(&mut *conn).await?;
    }

    let parts: Vec<(&[u8], i32, &[u8])> = batch
        .iter()
        .flat_map(|d| {
            let id = &d.msg.id.as_bytes()[..];
            d.msg
                .raw
                .chunks(limits.chunk)
                .enumerate()
                .map(move |(i, data)| (id, i as i32, data))
        })
        .collect();
    for run in runs(&parts, |p| p.2.len() + 32, budget) {
        let mut q = QueryBuilder::<MySql>::new("INSERT INTO bodies (id, part, data) ");
        q.push_values(run, |mut b, (id, part, data)| {
            b.push_bind(*id).push_bind(*part).push_bind(*data);
        });
        q.build().execute(&mut *conn).await?;
    }

    let links: Vec<(&str, &[u8])> = batch
        .iter()
        .flat_map(|d| {
            let id = &d.msg.id.as_bytes()[..];
            d.mailboxes.iter().map(move |b| (b.as_str(), id))
        })
        .collect();
    for run in runs(&links, |l| l.0.len() + 32, budget) {
        let mut q = QueryBuilder::<MySql>::new("INSERT INTO mailbox_messages (mailbox, id) ");
        q.push_values(run, |mut b, (mailbox, id)| {
            b.push_bind(*mailbox).push_bind(*id);
        });
        q.build().execute(&mut *conn).await?;
    }

    let checks: Vec<(&[u8], String)> = batch
        .iter()
        .filter(|d| !d.msg.findings.is_empty())
        .map(|d| {
            (
                &d.msg.id.as_bytes()[..],
                serde_json::to_string(&d.msg.findings).expect("findings serialize"),
            )
        })
        .collect();
    for run in runs(&checks, |c| c.1.len() + 32, budget) {
        let mut q = QueryBuilder::<MySql>::new("INSERT INTO message_checks (id, findings) ");
        q.push_values(run, |mut b, (id, findings)| {
            b.push_bind(*id).push_bind(findings.as_str());
        });
        q.build().execute(&mut *conn).await?;
    }

    for run in runs(batch, |d| d.words.len() + 32, budget) {
        let mut q = QueryBuilder::<MySql>::new("INSERT INTO search_text (id, words) ");
        q.push_values(run, |mut b, d| {
            b.push_bind(&d.msg.id.as_bytes()[..])
                .push_bind(d.words.as_str());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The search text from the envelope and parsed header fields.
pub(crate) fn header_words(m: &Incoming) -> String {
    let meta = &m.meta;
    let mut out = vec![m.envelope.mail_from.as_str()];
    out.extend(m.envelope.rcpt_to.iter().map(String::as_str));
    out.extend(
        [&meta.subject, &meta.from, &meta.to, &meta.cc]
            .into_iter()
            .filter_map(|s| s.as_deref()),
    );
    out.join("\n")
}

/// The search text from the message itself: header values, then the body text.
pub(crate) fn search_words(raw: &[u8], max: usize) -> String {
    let (body, headers) = mime::index_text(raw);
    truncate(format!("{headers}\n{body}"), max)
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn runs_respect_the_budget_and_keep_every_item() {
        let items = [5usize, 5, 5, 20, 1, 1];
        let r = runs(&items, |x| *x, 10);
        assert_eq!(r, [&[5, 5][..], &[5][..], &[20][..], &[1, 1][..]]);
        assert!(runs(&[] as &[usize], |x| *x, 10).is_empty());
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("caf\u{e9}!".into(), 4), "caf");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
