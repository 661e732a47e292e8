//! Queries on the pool: listings, search, one message; deletes and eviction (short
//! transactions of their own, never through the writer).

use intake_core::{Listing, MessageId, Page, Query, Removal, StoreError, StoredMessage, Summary};
use sqlx::mysql::MySqlArguments;
use sqlx::query::QueryAs;
use sqlx::{Connection, MySql, MySqlConnection, MySqlPool};

use super::{ServerLimits, unavailable};
use crate::columns::{MessageColumns, json};

const SUMMARY_COLS: &str = "m.id, m.received_at, m.mail_from, m.rcpt_to, m.from_addr, m.to_addr, \
                            m.subject, m.size, m.seen, m.attachment_count";

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Vec<u8>,
    received_at: i64,
    mail_from: String,
    rcpt_to: String,
    from_addr: Option<String>,
    to_addr: Option<String>,
    subject: Option<String>,
    size: i64,
    seen: bool,
    attachment_count: i32,
}

impl SummaryRow {
    fn summary(self) -> Summary {
        Summary {
            id: MessageId::from_slice(&self.id).unwrap_or(MessageId(uuid::Uuid::nil())),
            received_at: self.received_at,
            mail_from: self.mail_from,
            rcpt_to: serde_json::from_str(&self.rcpt_to).unwrap_or_default(),
            from: self.from_addr,
            to: self.to_addr,
            subject: self.subject,
            size: self.size as u64,
            seen: self.seen,
            attachments: self.attachment_count as u32,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Totals {
    total: i64,
    unread: i64,
}

fn limit(page: Page) -> (i64, i64) {
    (
        page.limit.min(i64::MAX as u64) as i64,
        page.offset.min(i64::MAX as u64) as i64,
    )
}

pub(super) async fn list_mailbox(
    pool: &MySqlPool,
    mailbox: &str,
    page: Page,
) -> Result<Listing, StoreError> {
    let t: Totals = sqlx::query_as(
        "SELECT COUNT(*) AS total, CAST(COALESCE(SUM(m.seen = 0), 0) AS SIGNED) AS unread
         FROM mailbox_messages b JOIN messages m ON m.id = b.id WHERE b.mailbox = ?",
    )
    .bind(mailbox)
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    let (lim, off) = limit(page);
    let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLS} FROM mailbox_messages b JOIN messages m ON m.id = b.id
         WHERE b.mailbox = ? ORDER BY b.id DESC LIMIT ? OFFSET ?"
    )))
    .bind(mailbox)
    .bind(lim)
    .bind(off)
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(Listing {
        total: t.total as u64,
        unread: t.unread as u64,
        messages: rows.into_iter().map(SummaryRow::summary).collect(),
    })
}

/// A value bound to a search query.
enum Arg {
    Text(String),
    Int(i64),
}

/// `%value%` for `LIKE … ESCAPE '!'` (the same in every `sql_mode`).
fn like(v: &str) -> Arg {
    let escaped = v.replace('!', "!!").replace('%', "!%").replace('_', "!_");
    Arg::Text(format!("%{escaped}%"))
}

/// Characters InnoDB's full-text parser keeps inside a word.
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// How one word of a query is searched: `MATCH` terms (boolean mode) for the tokens the
/// index holds, `LIKE` patterns for the tokens it does not (shorter than
/// `innodb_ft_min_token_size`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct WordPlan {
    /// Boolean-mode terms, each required (`+token`, `+token*`, `+"a phrase"`).
    pub terms: Vec<String>,
    /// Substrings that must occur in the search text.
    pub likes: Vec<String>,
}

/// Plans the words of a query. A word is split into tokens as InnoDB splits text (letters,
/// digits and `_`); a word of several tokens (`alice@example.org`, `"weekly report"`)
/// becomes a phrase when every token is long enough to be indexed; a trailing `*` makes the
/// last token a prefix. Tokens too short for the index become `LIKE` substrings (which also
/// match inside longer words: a superset, never a miss).
pub(crate) fn plan_words(words: &[String], min_token: usize) -> WordPlan {
    let mut plan = WordPlan::default();
    for w in words {
        let (w, prefix) = match w.strip_suffix('*') {
            Some(stem) if !stem.is_empty() => (stem, true),
            _ => (w.as_str(), false),
        };
        let tokens: Vec<&str> = w
            .split(|c: char| !word_char(c))
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            continue;
        }
        let long = |t: &&str| t.chars().count() >= min_token;
        if tokens.len() > 1 && !prefix && tokens.iter().all(long) {
            plan.terms.push(format!("+\"{}\"", tokens.join(" ")));
            continue;
        }
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            let star = if prefix && i == last { "*" } else { "" };
            if long(t) {
                plan.terms.push(format!("+{t}{star}"));
            } else {
                plan.likes.push(t.to_string());
            }
        }
    }
    plan
}

/// Messages matching `q`, newest first (an empty query lists everything).
pub(super) async fn search(
    pool: &MySqlPool,
    limits: &ServerLimits,
    q: &Query,
    page: Page,
) -> Result<Listing, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let mut join = "";
    if !q.words.is_empty() {
        let plan = plan_words(&q.words, limits.ft_min_token);
        if !plan.terms.is_empty() || !plan.likes.is_empty() {
            join = "JOIN search_text s ON s.id = m.id";
        }
        if !plan.terms.is_empty() {
            clauses.push("MATCH (s.words) AGAINST (? IN BOOLEAN MODE)".into());
            args.push(Arg::Text(plan.terms.join(" ")));
        }
        for l in &plan.likes {
            clauses.push("s.words LIKE ? ESCAPE '!'".into());
            args.push(like(l));
        }
    }
    for v in &q.from {
        clauses.push(
            "(m.mail_from LIKE ? ESCAPE '!' OR COALESCE(m.from_addr, '') LIKE ? ESCAPE '!')".into(),
        );
        args.extend([like(v), like(v)]);
    }
    for v in &q.to {
        clauses.push(
            "(m.rcpt_to LIKE ? ESCAPE '!' OR COALESCE(m.to_addr, '') LIKE ? ESCAPE '!' \
             OR COALESCE(m.cc_addr, '') LIKE ? ESCAPE '!')"
                .into(),
        );
        args.extend([like(v), like(v), like(v)]);
    }
    for v in &q.subject {
        clauses.push("COALESCE(m.subject, '') LIKE ? ESCAPE '!'".into());
        args.push(like(v));
    }
    if let Some(mb) = &q.mailbox {
        clauses.push(
            "EXISTS (SELECT 1 FROM mailbox_messages b WHERE b.id = m.id AND b.mailbox = ?)".into(),
        );
        args.push(Arg::Text(mb.clone()));
    }
    if q.has_attachment {
        clauses.push("m.attachment_count > 0".into());
    }
    if let Some(seen) = q.seen {
        clauses.push("m.seen = ?".into());
        args.push(Arg::Int(seen as i64));
    }
    if let Some(t) = q.after {
        clauses.push("m.received_at > ?".into());
        args.push(Arg::Int(t));
    }
    if let Some(t) = q.before {
        clauses.push("m.received_at < ?".into());
        args.push(Arg::Int(t));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let totals_sql = format!(
        "SELECT COUNT(*) AS total, CAST(COALESCE(SUM(m.seen = 0), 0) AS SIGNED) AS unread
         FROM messages m {join} {filter}"
    );
    let t: Totals = bind_all(sqlx::query_as(sqlx::AssertSqlSafe(totals_sql)), &args)
        .fetch_one(pool)
        .await
        .map_err(bad_query)?;
    let (lim, off) = limit(page);
    let rows_sql = format!(
        "SELECT {SUMMARY_COLS} FROM messages m {join} {filter} ORDER BY m.id DESC LIMIT ? OFFSET ?"
    );
    let rows: Vec<SummaryRow> = bind_all(sqlx::query_as(sqlx::AssertSqlSafe(rows_sql)), &args)
        .bind(lim)
        .bind(off)
        .fetch_all(pool)
        .await
        .map_err(bad_query)?;
    Ok(Listing {
        total: t.total as u64,
        unread: t.unread as u64,
        messages: rows.into_iter().map(SummaryRow::summary).collect(),
    })
}

fn bind_all<'q, O>(
    mut q: QueryAs<'q, MySql, O, MySqlArguments>,
    args: &'q [Arg],
) -> QueryAs<'q, MySql, O, MySqlArguments> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    q
}

/// A full-text syntax error is the client's; anything else is ours.
fn bad_query(e: sqlx::Error) -> StoreError {
    // 1064: syntax error (in the AGAINST expression), 1191: no FULLTEXT index to match.
    match super::error_number(&e) {
        Some(1064) => StoreError::BadQuery(e.to_string()),
        _ => unavailable(e),
    }
}

#[derive(sqlx::FromRow)]
struct FullRow {
    received_at: i64,
    mail_from: String,
    rcpt_to: String,
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
    findings: Option<String>,
}

pub(super) async fn fetch(
    pool: &MySqlPool,
    id: MessageId,
) -> Result<Option<StoredMessage>, StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    let key = &id.as_bytes()[..];
    let row: Option<FullRow> = sqlx::query_as(
        "SELECT m.received_at, m.mail_from, m.rcpt_to, m.helo, m.client_ip, m.client_port,
                m.tls_version, m.tls_cipher, m.size, m.sha256, m.message_id, m.from_addr,
                m.to_addr, m.cc_addr, m.subject, m.date, m.content_type, m.charset,
                m.attachments, m.seen, c.findings
         FROM messages m LEFT JOIN message_checks c ON c.id = m.id WHERE m.id = ?",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(unavailable)?;
    let Some(r) = row else {
        return Ok(None);
    };
    let parts: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT data FROM bodies WHERE id = ? ORDER BY part")
            .bind(key)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
    let mailboxes = mailboxes_of(&mut conn, id, false)
        .await
        .map_err(unavailable)?;
    MessageColumns {
        received_at: r.received_at,
        mail_from: r.mail_from,
        rcpt_to: json(id, &r.rcpt_to)?,
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
        raw: parts.concat(),
        mailboxes,
        findings: r.findings,
    }
    .into_stored(id)
    .map(Some)
}

/// The mailboxes a message is filed under, sorted (locked for the transaction when
/// `lock`).
async fn mailboxes_of(
    conn: &mut MySqlConnection,
    id: MessageId,
    lock: bool,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = if lock {
        "SELECT mailbox FROM mailbox_messages WHERE id = ? ORDER BY mailbox FOR UPDATE"
    } else {
        "SELECT mailbox FROM mailbox_messages WHERE id = ? ORDER BY mailbox"
    };
    sqlx::query_scalar(sql)
        .bind(&id.as_bytes()[..])
        .fetch_all(&mut *conn)
        .await
}

/// Deletes one message and everything about it, inside the caller's transaction. Its
/// former mailboxes, or `None` if there was no such message.
async fn delete_message(
    conn: &mut MySqlConnection,
    id: MessageId,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let key = &id.as_bytes()[..];
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM messages WHERE id = ? FOR UPDATE")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Ok(None);
    }
    let mailboxes = mailboxes_of(conn, id, true).await?;
    for table in [
        "mailbox_messages",
        "bodies",
        "message_checks",
        "message_tags",
        "search_text",
        "messages",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id = ?"
        )))
        .bind(key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(mailboxes))
}

/// Runs `f` in a transaction on a pool connection.
macro_rules! in_transaction {
    ($pool:expr, |$conn:ident| $body:block) => {{
        let mut c = $pool.acquire().await.map_err(unavailable)?;
        let mut tx = c.begin().await.map_err(unavailable)?;
        let out = {
            let $conn: &mut MySqlConnection = &mut tx;
            async { $body }.await
        };
        match out {
            Ok(v) => {
                tx.commit().await.map_err(unavailable)?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(unavailable(e))
            }
        }
    }};
}

/// Deletes messages by id; a removal for each one there was.
pub(super) async fn delete_ids(
    pool: &MySqlPool,
    ids: &[MessageId],
) -> Result<Vec<Removal>, StoreError> {
    in_transaction!(pool, |conn| {
        let mut gone = Vec::new();
        for &id in ids {
            if let Some(mailboxes) = delete_message(conn, id).await? {
                gone.push(Removal { id, mailboxes });
            }
        }
        Ok::<_, sqlx::Error>(gone)
    })
}

/// Removes mailbox links; deletes the messages left in no mailbox. Answers how many
/// messages were deleted, and a removal per link (for the mailbox that lost it).
pub(super) async fn unlink(
    pool: &MySqlPool,
    links: &[(String, MessageId)],
) -> Result<(u64, Vec<Removal>), StoreError> {
    in_transaction!(pool, |conn| {
        let mut removed = Vec::new();
        let mut deleted = 0;
        for (mailbox, id) in links {
            let mut boxes = mailboxes_of(conn, *id, true).await?;
            if !boxes.contains(mailbox) {
                continue;
            }
            boxes.retain(|b| b != mailbox);
            sqlx::query("DELETE FROM mailbox_messages WHERE mailbox = ? AND id = ?")
                .bind(mailbox.as_str())
                .bind(&id.as_bytes()[..])
                .execute(&mut *conn)
                .await?;
            removed.push(Removal {
                id: *id,
                mailboxes: vec![mailbox.clone()],
            });
            if boxes.is_empty() {
                delete_message(conn, *id).await?;
                deleted += 1;
            }
        }
        Ok::<_, sqlx::Error>((deleted, removed))
    })
}

fn ids(rows: Vec<Vec<u8>>) -> Vec<MessageId> {
    rows.iter()
        .filter_map(|b| MessageId::from_slice(b))
        .collect()
}

/// The messages of a mailbox.
pub(super) async fn mailbox_ids(
    pool: &MySqlPool,
    mailbox: &str,
) -> Result<Vec<MessageId>, StoreError> {
    sqlx::query_scalar("SELECT id FROM mailbox_messages WHERE mailbox = ? ORDER BY id")
        .bind(mailbox)
        .fetch_all(pool)
        .await
        .map(ids)
        .map_err(unavailable)
}

/// Mailbox links to drop so that each mailbox keeps its newest `keep` messages.
pub(super) async fn over_mailbox_cap(
    pool: &MySqlPool,
    keep: u64,
) -> Result<Vec<(String, MessageId)>, StoreError> {
    let keep = keep.min(i64::MAX as u64) as i64;
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT mailbox, id FROM (
            SELECT mailbox, id, ROW_NUMBER() OVER (PARTITION BY mailbox ORDER BY id DESC) AS n
            FROM mailbox_messages WHERE mailbox IN (
                SELECT mailbox FROM mailbox_messages GROUP BY mailbox HAVING COUNT(*) > ?)) t
         WHERE n > ? ORDER BY id",
    )
    .bind(keep)
    .bind(keep)
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(rows
        .into_iter()
        .filter_map(|(b, id)| Some((b, MessageId::from_slice(&id)?)))
        .collect())
}

/// Messages received before `before_ms`.
pub(super) async fn older_than(
    pool: &MySqlPool,
    before_ms: i64,
) -> Result<Vec<MessageId>, StoreError> {
    sqlx::query_scalar("SELECT id FROM messages WHERE received_at < ? ORDER BY id")
        .bind(before_ms)
        .fetch_all(pool)
        .await
        .map(ids)
        .map_err(unavailable)
}

/// The oldest messages to delete so that the rest add up to at most `max_bytes`.
pub(super) async fn over_size_cap(
    pool: &MySqlPool,
    max_bytes: u64,
) -> Result<Vec<MessageId>, StoreError> {
    let total: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(size), 0) AS SIGNED) FROM messages")
            .fetch_one(pool)
            .await
            .map_err(unavailable)?;
    let mut excess = total - max_bytes.min(i64::MAX as u64) as i64;
    let mut out = Vec::new();
    let mut after: Vec<u8> = Vec::new();
    while excess > 0 {
        let rows: Vec<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT id, size FROM messages WHERE id > ? ORDER BY id LIMIT 1000")
                .bind(&after[..])
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
        if rows.is_empty() {
            break;
        }
        for (id, size) in rows {
            if excess <= 0 {
                break;
            }
            excess -= size;
            out.extend(MessageId::from_slice(&id));
            after = id;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn plan(q: &str) -> WordPlan {
        plan_words(&intake_core::Query::parse(q).unwrap().words, 3)
    }

    #[test]
    fn words_become_required_terms_phrases_prefixes_or_substrings() {
        assert_eq!(
            plan("bill numb*"),
            WordPlan {
                terms: vec!["+bill".into(), "+numb*".into()],
                likes: vec![],
            }
        );
        assert_eq!(plan("alice@example.org").terms, ["+\"alice example org\""]);
        assert_eq!(
            plan("42 is ok+"),
            WordPlan {
                terms: vec![],
                likes: vec!["42".into(), "is".into(), "ok".into()],
            }
        );
        assert_eq!(
            plan("ann@x.test"),
            WordPlan {
                terms: vec!["+ann".into(), "+test".into()],
                likes: vec!["x".into()],
            }
        );
        assert_eq!(plan("\"+-<>()~\" *"), WordPlan::default(), "operators only");
        assert_eq!(plan("\"weekly report\"").terms, ["+\"weekly report\""]);
    }
}
