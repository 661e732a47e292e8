//! Queries on the pool: listings, search, one message, and the deletes (by id, by seq,
//! mailbox links) that answer what they removed.

use intake_core::{Listing, MessageId, Page, Query, Removal, StoreError, StoredMessage, Summary};
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{FromRow, QueryBuilder};

use super::{pg_text, unavailable, writer};
use crate::columns::MessageColumns;

const SUMMARY_COLS: &str = "m.id::text AS id, m.received_at, m.mail_from, m.rcpt_to, m.from_addr, \
     m.to_addr, m.subject, m.size, m.seen, jsonb_array_length(m.attachments) AS attachments";

/// One line of a listing, as selected by [`SUMMARY_COLS`].
#[derive(FromRow)]
struct SummaryRow {
    id: String,
    received_at: i64,
    mail_from: String,
    rcpt_to: Vec<String>,
    from_addr: Option<String>,
    to_addr: Option<String>,
    subject: Option<String>,
    size: i64,
    seen: bool,
    attachments: i32,
}

impl SummaryRow {
    fn summary(self) -> Summary {
        Summary {
            id: parse_id(&self.id),
            received_at: self.received_at,
            mail_from: self.mail_from,
            rcpt_to: self.rcpt_to,
            from: self.from_addr,
            to: self.to_addr,
            subject: self.subject,
            size: self.size.max(0) as u64,
            seen: self.seen,
            attachments: self.attachments.max(0) as u32,
        }
    }
}

fn parse_id(id: &str) -> MessageId {
    id.parse().unwrap_or(MessageId(uuid::Uuid::nil()))
}

/// Totals of a listing.
#[derive(FromRow)]
struct Totals {
    total: i64,
    unread: i64,
}

pub(super) async fn list_mailbox(
    pool: &PgPool,
    mailbox: &str,
    page: Page,
) -> Result<Listing, StoreError> {
    let t: Totals = sqlx::query_as(
        "SELECT count(*) AS total, count(*) FILTER (WHERE NOT m.seen) AS unread
         FROM mailbox_messages b JOIN messages m ON m.seq = b.seq WHERE b.mailbox = $1",
    )
    .bind(pg_text(mailbox))
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {SUMMARY_COLS} FROM mailbox_messages b JOIN messages m ON m.seq = b.seq
         WHERE b.mailbox = "
    ));
    q.push_bind(pg_text(mailbox).into_owned());
    paged(&mut q, "b.seq", page);
    let rows: Vec<SummaryRow> = q
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    Ok(Listing {
        total: t.total as u64,
        unread: t.unread as u64,
        messages: rows.into_iter().map(SummaryRow::summary).collect(),
    })
}

fn paged(q: &mut QueryBuilder<Postgres>, seq: &str, page: Page) {
    q.push(format!(" ORDER BY {seq} DESC LIMIT "));
    q.push_bind(i64::try_from(page.limit).unwrap_or(i64::MAX));
    q.push(" OFFSET ");
    q.push_bind(i64::try_from(page.offset).unwrap_or(i64::MAX));
}

/// The `tsquery` for free words: each word split into lower-case words as the documents
/// are (`alice@example.org` is `alice <-> example <-> org`, a phrase), `word*` a prefix,
/// words ANDed. Words with no letter or digit match anything. `None`: no words.
pub(super) fn tsquery(words: &[String]) -> Option<String> {
    let mut parts = Vec::new();
    for w in words {
        let (w, prefix) = match w.strip_suffix('*') {
            Some(stem) if !stem.is_empty() => (stem, true),
            _ => (w.as_str(), false),
        };
        let mut doc = String::new();
        writer::words(w, &mut doc);
        let lexemes: Vec<&str> = doc.split_whitespace().collect();
        if lexemes.is_empty() {
            continue;
        }
        let last = lexemes.len() - 1;
        let phrase: Vec<String> = lexemes
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // Letters and digits only: nothing to escape inside the quotes.
                if prefix && i == last {
                    format!("'{l}':*")
                } else {
                    format!("'{l}'")
                }
            })
            .collect();
        parts.push(format!("({})", phrase.join(" <-> ")));
    }
    (!parts.is_empty()).then(|| parts.join(" & "))
}

/// ` WHERE …` for a query (nothing for the empty query).
fn filter(q: &mut QueryBuilder<Postgres>, query: &Query) {
    let mut first = true;
    let mut and = |q: &mut QueryBuilder<Postgres>| {
        q.push(if first { " WHERE " } else { " AND " });
        first = false;
    };
    if let Some(ts) = tsquery(&query.words) {
        and(q);
        q.push("m.seq IN (SELECT seq FROM search_index WHERE doc @@ to_tsquery('simple', ");
        q.push_bind(ts);
        q.push("))");
    }
    // Substrings, case-insensitively (the values are lower-cased by the parser).
    for v in &query.from {
        and(q);
        q.push("strpos(lower(m.mail_from || ' ' || coalesce(m.from_addr, '')), ");
        q.push_bind(pg_text(v).into_owned());
        q.push(") > 0");
    }
    for v in &query.to {
        and(q);
        q.push(
            "strpos(lower(array_to_string(m.rcpt_to, ' ') || ' ' || coalesce(m.to_addr, '') \
             || ' ' || coalesce(m.cc_addr, '')), ",
        );
        q.push_bind(pg_text(v).into_owned());
        q.push(") > 0");
    }
    for v in &query.subject {
        and(q);
        q.push("strpos(lower(coalesce(m.subject, '')), ");
        q.push_bind(pg_text(v).into_owned());
        q.push(") > 0");
    }
    if let Some(mb) = &query.mailbox {
        and(q);
        q.push("EXISTS (SELECT 1 FROM mailbox_messages b WHERE b.seq = m.seq AND b.mailbox = ");
        q.push_bind(pg_text(mb).into_owned());
        q.push(")");
    }
    if query.has_attachment {
        and(q);
        q.push("jsonb_array_length(m.attachments) > 0");
    }
    if let Some(seen) = query.seen {
        and(q);
        q.push("m.seen = ");
        q.push_bind(seen);
    }
    if let Some(t) = query.after {
        and(q);
        q.push("m.received_at > ");
        q.push_bind(t);
    }
    if let Some(t) = query.before {
        and(q);
        q.push("m.received_at < ");
        q.push_bind(t);
    }
}

/// Messages matching `query` (every message for the empty one), newest first.
pub(super) async fn search(
    pool: &PgPool,
    query: &Query,
    page: Page,
) -> Result<Listing, StoreError> {
    let mut count = QueryBuilder::<Postgres>::new(
        "SELECT count(*) AS total, count(*) FILTER (WHERE NOT m.seen) AS unread FROM messages m",
    );
    filter(&mut count, query);
    let t: Totals = count
        .build_query_as()
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {SUMMARY_COLS} FROM messages m"));
    filter(&mut q, query);
    paged(&mut q, "m.seq", page);
    let rows: Vec<SummaryRow> = q
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    Ok(Listing {
        total: t.total as u64,
        unread: t.unread as u64,
        messages: rows.into_iter().map(SummaryRow::summary).collect(),
    })
}

/// The summary of one message and its mailboxes (for events from other nodes).
pub(super) async fn summary(
    pool: &PgPool,
    id: MessageId,
) -> Result<Option<(Summary, Vec<String>)>, StoreError> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        summary: SummaryRow,
        mailboxes: Vec<String>,
    }
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLS},
            ARRAY(SELECT b.mailbox FROM mailbox_messages b WHERE b.seq = m.seq
                  ORDER BY b.mailbox) AS mailboxes
         FROM messages m WHERE m.id = $1::uuid"
    )))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(unavailable)?;
    Ok(row.map(|r| (r.summary.summary(), r.mailboxes)))
}

/// Everything kept about one message.
#[derive(FromRow)]
struct MessageRow {
    received_at: i64,
    mail_from: String,
    rcpt_to: Vec<String>,
    helo: String,
    client_ip: String,
    client_port: i32,
    tls_version: Option<String>,
    tls_cipher: Option<String>,
    size: i64,
    sha256: String,
    message_id: Option<String>,
    from_addr: Option<String>,
    to_addr: Option<String>,
    cc_addr: Option<String>,
    subject: Option<String>,
    date: Option<String>,
    content_type: Option<String>,
    charset: Option<String>,
    attachments: String,
    seen: bool,
    raw: Vec<u8>,
    mailboxes: Vec<String>,
    findings: Option<String>,
}

pub(super) async fn fetch(
    pool: &PgPool,
    id: MessageId,
) -> Result<Option<StoredMessage>, StoreError> {
    let row: Option<MessageRow> = sqlx::query_as(
        "SELECT m.received_at, m.mail_from, m.rcpt_to, m.helo, m.client_ip, m.client_port,
                m.tls_version, m.tls_cipher, m.size, m.sha256, m.message_id, m.from_addr,
                m.to_addr, m.cc_addr, m.subject, m.date, m.content_type, m.charset,
                m.attachments::text AS attachments, m.seen, b.raw,
                ARRAY(SELECT x.mailbox FROM mailbox_messages x WHERE x.seq = m.seq
                      ORDER BY x.mailbox) AS mailboxes,
                (SELECT c.findings::text FROM message_checks c WHERE c.seq = m.seq) AS findings
         FROM messages m JOIN bodies b ON b.seq = m.seq WHERE m.id = $1::uuid",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(unavailable)?;
    let Some(r) = row else {
        return Ok(None);
    };
    MessageColumns {
        received_at: r.received_at,
        mail_from: r.mail_from,
        rcpt_to: r.rcpt_to,
        helo: r.helo,
        client_ip: r.client_ip,
        client_port: r.client_port.into(),
        tls_version: r.tls_version,
        tls_cipher: r.tls_cipher,
        size: r.size,
        sha256: r.sha256,
        message_id: r.message_id,
        from_addr: r.from_addr,
        to_addr: r.to_addr,
        cc_addr: r.cc_addr,
        subject: r.subject,
        date: r.date,
        content_type: r.content_type,
        charset: r.charset,
        attachments: r.attachments,
        seen: r.seen,
        raw: r.raw,
        mailboxes: r.mailboxes,
        findings: r.findings,
    }
    .into_stored(id)
    .map(Some)
}

/// A deleted message, as `DELETE … RETURNING` gives it.
#[derive(FromRow)]
struct Gone {
    id: String,
    mailboxes: Vec<String>,
}

impl Gone {
    fn removal(self) -> Removal {
        Removal {
            id: parse_id(&self.id),
            mailboxes: self.mailboxes,
        }
    }
}

// The mailboxes are read in RETURNING, from the statement's snapshot: the links are still
// there (the cascade runs at the end of the statement).
const DELETE_RETURNING: &str = "RETURNING m.id::text AS id,
    ARRAY(SELECT b.mailbox FROM mailbox_messages b WHERE b.seq = m.seq ORDER BY b.mailbox)
        AS mailboxes";

/// Deletes messages by id (and everything about them): each one deleted, with its former
/// mailboxes. A message another node deleted first is not reported here.
pub(super) async fn delete_ids(
    pool: &PgPool,
    ids: &[MessageId],
) -> Result<Vec<Removal>, StoreError> {
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let gone: Vec<Gone> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM messages m WHERE m.id = ANY($1::text[]::uuid[]) {DELETE_RETURNING}"
    )))
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(gone.into_iter().map(Gone::removal).collect())
}

/// Deletes messages by seq, oldest first.
pub(super) async fn delete_seqs(pool: &PgPool, seqs: &[i64]) -> Result<Vec<Removal>, StoreError> {
    let gone: Vec<Gone> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH d AS (DELETE FROM messages m WHERE m.seq = ANY($1::bigint[])
                    {DELETE_RETURNING}, m.seq)
         SELECT id, mailboxes FROM d ORDER BY seq"
    )))
    .bind(seqs.to_vec())
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(gone.into_iter().map(Gone::removal).collect())
}

/// Removes mailbox links `(mailbox, seq)` and deletes the messages left in no mailbox, in
/// one transaction. Answers how many messages were deleted, and a removal per link removed
/// (with the mailbox that lost it).
pub(super) async fn unlink(
    pool: &PgPool,
    links: &[(String, i64)],
) -> Result<(u64, Vec<Removal>), StoreError> {
    #[derive(FromRow)]
    struct Link {
        mailbox: String,
        id: String,
        seq: i64,
    }
    let (boxes, seqs): (Vec<String>, Vec<i64>) = links.iter().cloned().unzip();
    let mut tx = pool.begin().await.map_err(unavailable)?;
    let gone: Vec<Link> = sqlx::query_as(
        "WITH l AS (SELECT * FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS l(mailbox, seq, n)),
              d AS (DELETE FROM mailbox_messages b USING l
                    WHERE b.mailbox = l.mailbox AND b.seq = l.seq RETURNING b.mailbox, b.seq, l.n)
         SELECT d.mailbox, m.id::text AS id, d.seq FROM d JOIN messages m ON m.seq = d.seq
         ORDER BY d.n",
    )
    .bind(boxes)
    .bind(seqs)
    .fetch_all(&mut *tx)
    .await
    .map_err(unavailable)?;
    let touched: Vec<i64> = gone.iter().map(|l| l.seq).collect();
    let deleted = sqlx::query(
        "DELETE FROM messages m WHERE m.seq = ANY($1::bigint[])
           AND NOT EXISTS (SELECT 1 FROM mailbox_messages b WHERE b.seq = m.seq)",
    )
    .bind(touched)
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?
    .rows_affected();
    tx.commit().await.map_err(unavailable)?;
    let removed = gone
        .into_iter()
        .map(|l| Removal {
            id: parse_id(&l.id),
            mailboxes: vec![l.mailbox],
        })
        .collect();
    Ok((deleted, removed))
}

/// Mailbox links to drop so that each mailbox keeps its newest `keep` messages.
pub(super) async fn over_mailbox_cap(
    pool: &PgPool,
    keep: u64,
) -> Result<Vec<(String, i64)>, StoreError> {
    sqlx::query_as(
        "SELECT mailbox, seq FROM (
            SELECT mailbox, seq, row_number() OVER (PARTITION BY mailbox ORDER BY seq DESC) AS n
            FROM mailbox_messages WHERE mailbox IN (
                SELECT mailbox FROM mailbox_messages GROUP BY mailbox HAVING count(*) > $1)) t
         WHERE n > $1 ORDER BY seq",
    )
    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(unavailable)
}
