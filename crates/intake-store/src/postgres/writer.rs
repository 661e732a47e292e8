//! The group-commit writer: one task, one dedicated connection, every delivery.
//!
//! Sessions send a [`Row`] with a oneshot over a bounded channel. The writer takes what is
//! queued (up to `max_batch`), lingers up to `commit_delay` only while [`Arrivals`] says
//! other sessions are receiving content, writes the batch in one transaction, and answers
//! the oneshots only after `COMMIT` returned. The connection has `synchronous_commit = on`:
//! `COMMIT` returns once the WAL is flushed.
//!
//! The batch is one statement (up to [`MAX_STATEMENT_BYTES`] of bodies and search text,
//! then the next, in the same transaction): every column goes as an array, `unnest` makes
//! the rows, and one `WITH … INSERT` fills `messages` and, joined by the message `id` (made
//! here) to the `seq` the insert returned, `bodies`, `mailbox_messages`, `search_index` and
//! `message_checks`. So `BEGIN`, one statement and `COMMIT` are three round trips per
//! batch, whatever its size, and the statement is prepared once per connection.
//!
//! Failures:
//! - A message the database refuses (a data or constraint error: the poison message) fails
//!   alone: the batch is written again with each message in a savepoint of its own (the
//!   same statement, one message at a time).
//! - A lost connection (the server restarted, an operator terminated the session): the
//!   connection is dropped and a new one made for the next batch. If the batch failed before
//!   `COMMIT` was sent, nothing of it was committed, so it is retried once on the new
//!   connection; otherwise (lost during `COMMIT`: it may or may not have been committed)
//!   every sender gets `Unavailable` (a 451: the sender retries; at worst a duplicate,
//!   never a lost message).
//! - No connection can be made within `store.connect_timeout`: the batch fails at once.

use crate::gather::gather;
use std::borrow::Cow;
use std::io;
use std::time::{Duration, Instant};

use intake_core::{Arrivals, Incoming, SearchMode, StoreError, mime};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgExecutor};
use tokio::sync::{mpsc, oneshot};

use super::{PostgresConfig, pg_text, unavailable};

/// A delivery waiting in a batch, and where to answer.
pub(super) type Queued = (Box<Row>, oneshot::Sender<Result<(), StoreError>>);

/// What became of each message of a batch.
type BatchResult = Vec<Result<(), StoreError>>;

/// A batch that has not answered within this long is abandoned (its connection dropped) and
/// its senders get `Unavailable`: a connection that stopped answering must not hold
/// deliveries until the SMTP deadline.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Text indexed for search per message, at most (a tsvector must stay under 1 MB).
const MAX_INDEX_BYTES: usize = 200_000;

/// Bodies and search text in one insert statement, at most (unless one message is larger).
const MAX_STATEMENT_BYTES: usize = 16 << 20;

/// A message as the writer inserts it: everything computed before it reaches the writer.
pub(super) struct Row {
    msg: Incoming,
    /// `msg.id` as text.
    id: String,
    /// The client's IP address as text.
    client_ip: String,
    mailboxes: Vec<String>,
    attachments: String,
    findings: Option<String>,
    /// The search document: lower-case words separated by spaces.
    doc: String,
}

impl Row {
    /// Prepares `msg` for insertion: serializes its parts and extracts the search text.
    pub(super) fn new(msg: Incoming, mailboxes: Vec<String>, search: SearchMode) -> Row {
        let attachments = json_text(&msg.meta.attachments);
        let findings = (!msg.findings.is_empty()).then(|| json_text(&msg.findings));
        let (text, headers) = match search {
            SearchMode::Full => mime::index_text(&msg.raw),
            SearchMode::Headers => (Default::default(), mime::index_headers(&msg.raw)),
            SearchMode::Off => Default::default(),
        };
        let m = &msg.meta;
        let mut doc = String::new();
        for part in (search != SearchMode::Off)
            .then_some([
                m.subject.as_deref().unwrap_or(""),
                &msg.envelope.mail_from,
                &msg.envelope.rcpt_to.join(" "),
                m.from.as_deref().unwrap_or(""),
                m.to.as_deref().unwrap_or(""),
                m.cc.as_deref().unwrap_or(""),
                &text,
                &headers,
            ])
            .into_iter()
            .flatten()
        {
            if !words(part, &mut doc) {
                break;
            }
        }
        Row {
            id: msg.id.to_string(),
            client_ip: msg.session.client.ip().to_string(),
            msg,
            mailboxes,
            attachments,
            findings,
            doc,
        }
    }
}

/// JSON for a `jsonb` column, which refuses `\u0000`: NUL in strings becomes U+FFFD.
fn json_text(value: &impl serde::Serialize) -> String {
    fn clean(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
            serde_json::Value::Array(a) => a.iter_mut().for_each(clean),
            serde_json::Value::Object(o) => o.values_mut().for_each(clean),
            _ => {}
        }
    }
    let text = serde_json::to_string(value).expect("plain data serializes");
    // serde_json writes NUL as `\u0000`; without that sequence there is nothing to clean.
    if !text.contains("\\u0000") {
        return text;
    }
    let mut v = serde_json::to_value(value).expect("plain data serializes");
    clean(&mut v);
    v.to_string()
}

/// Appends `text` to `doc` as lower-case words (every character that is not a letter or a
/// digit separates words: `alice@example.org` is `alice example org`). The query side
/// splits words the same way. False once `doc` is full.
pub(super) fn words(text: &str, doc: &mut String) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if doc.len() >= MAX_INDEX_BYTES {
            return false;
        }
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            // A run of ASCII letters and digits: one byte each, copied and lower-cased at
            // once, as far as there is room.
            let run = bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count()
                .min(MAX_INDEX_BYTES - doc.len());
            let at = doc.len();
            doc.push_str(&text[i..i + run]);
            doc[at..].make_ascii_lowercase();
            i += run;
        } else if b.is_ascii() {
            separate(doc);
            i += 1;
        } else {
            let c = text[i..].chars().next().expect("a char starts here");
            if c.is_alphanumeric() {
                doc.extend(c.to_lowercase());
            } else {
                separate(doc);
            }
            i += c.len_utf8();
        }
    }
    separate(doc);
    true
}

/// Ends the word `doc` ends with, if any.
fn separate(doc: &mut String) {
    if !doc.ends_with(' ') && !doc.is_empty() {
        doc.push(' ');
    }
}

/// Why a batch failed as a whole.
struct Failure {
    error: sqlx::Error,
    /// The failure came from `COMMIT`: the batch may have been committed.
    committing: bool,
}

impl Failure {
    fn before(error: sqlx::Error) -> Failure {
        Failure {
            error,
            committing: false,
        }
    }

    fn committing(error: sqlx::Error) -> Failure {
        Failure {
            error,
            committing: true,
        }
    }
}

/// The connection is gone (or unusable): make a new one.
pub(super) fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 57: operator intervention (pg_terminate_backend,
        // shutdown); 25: the transaction state is confused.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57") || c.starts_with("25")),
        _ => false,
    }
}

/// The database refused this message (data exception, constraint, a program limit such as
/// an oversized value): the other messages of its batch can still be stored.
fn is_message_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54"))
}

/// The group-commit writer (see the module docs).
pub(super) struct Writer {
    connect: PgConnectOptions,
    connect_timeout: Duration,
    max_batch: usize,
    commit_delay: Duration,
    arrivals: Arrivals,
    conn: Option<PgConnection>,
}

impl Writer {
    /// A writer with its connection made (so that a bad URL fails at start).
    pub(super) async fn connect(
        cfg: &PostgresConfig,
        arrivals: Arrivals,
    ) -> Result<Writer, sqlx::Error> {
        let mut w = Writer {
            connect: cfg.connect.clone(),
            connect_timeout: cfg.connect_timeout,
            max_batch: cfg.max_batch,
            commit_delay: cfg.commit_delay,
            arrivals,
            conn: None,
        };
        w.conn = Some(w.open_connection().await?);
        Ok(w)
    }

    async fn open_connection(&self) -> Result<PgConnection, sqlx::Error> {
        let connecting = async {
            let mut conn = PgConnection::connect_with(&self.connect).await?;
            // Also in the startup options; said again here so that no server, database or
            // role default can turn it off for the connection that acknowledges mail.
            sqlx::query("SET synchronous_commit = on")
                .execute(&mut conn)
                .await?;
            Ok(conn)
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "no connection to PostgreSQL within store.connect_timeout",
            ))),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            gather(
                &mut rx,
                &mut batch,
                self.max_batch,
                self.commit_delay,
                &self.arrivals,
            )
            .await;
            self.commit(batch).await;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    async fn commit(&mut self, batch: Vec<Queued>) {
        let started = Instant::now();
        let results = self.write(&batch).await;
        let n = batch.len();
        metrics::histogram!("intake_store_commit_batch_size").record(n as f64);
        metrics::histogram!("intake_store_commit_seconds").record(started.elapsed());
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                if let Some(repeats) = crate::common::WRITE_FAILURES.hit(&e.to_string()) {
                    tracing::error!(messages = n, error = %e, repeats,
                        "commit failed: answering 451 to every message of the batch");
                }
                batch.iter().map(|_| Err(unavailable(&e))).collect()
            }
        };
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            tracing::trace!(
                messages = n,
                micros = started.elapsed().as_micros() as u64,
                "committed"
            );
        } else if failed < n {
            tracing::error!(
                messages = n,
                failed,
                "commit: some messages not stored; answering 451 to those"
            );
        }
        for ((message, done), result) in batch.into_iter().zip(results) {
            // Dropped before the answer, so that the session finds its buffer no longer
            // shared and receives its next message into it.
            drop(message);
            let _ = done.send(result);
        }
    }

    /// Writes a batch, on a new connection if the last one was lost (see the module docs).
    async fn write(&mut self, batch: &[Queued]) -> Result<BatchResult, sqlx::Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.conn.is_none() {
                self.conn = Some(self.open_connection().await?);
            }
            let conn = self.conn.as_mut().expect("connected above");
            let failure = match tokio::time::timeout(BATCH_TIMEOUT, write_batch(conn, batch)).await
            {
                Ok(Ok(results)) => return Ok(results),
                Ok(Err(f)) => f,
                Err(_) => {
                    // Abandoned mid-statement: the connection's state is unknown.
                    self.conn = None;
                    return Err(sqlx::Error::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "PostgreSQL did not complete the commit in time",
                    )));
                }
            };
            if !is_connection_error(&failure.error) {
                return Err(failure.error);
            }
            self.conn = None;
            if failure.committing || attempt > 1 {
                return Err(failure.error);
            }
            tracing::warn!(error = %failure.error, messages = batch.len(),
                "the store's connection was lost before the commit; writing the batch on a new one");
        }
    }
}

/// Writes a batch in one transaction; isolates a poison message with savepoints.
async fn write_batch(conn: &mut PgConnection, batch: &[Queued]) -> Result<BatchResult, Failure> {
    let first = match write_all(conn, batch).await {
        Ok(()) => return Ok(batch.iter().map(|_| Ok(())).collect()),
        Err(f) => f,
    };
    if first.committing || !is_message_error(&first.error) {
        return Err(first);
    }
    if batch.len() == 1 {
        tracing::error!(id = %batch[0].0.msg.id, error = %first.error,
            "message not stored: answering 451 to its sender");
        return Ok(vec![Err(unavailable(&first.error))]);
    }
    tracing::warn!(messages = batch.len(), error = %first.error,
        "a batch failed: writing its messages one by one to isolate the failing one");
    let mut tx = conn.begin().await.map_err(Failure::before)?;
    let mut results: BatchResult = Vec::with_capacity(batch.len());
    for (i, (row, _)) in batch.iter().enumerate() {
        sqlx::query("SAVEPOINT message")
            .execute(&mut *tx)
            .await
            .map_err(Failure::before)?;
        match insert(&mut *tx, &batch[i..=i]).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT message")
                    .execute(&mut *tx)
                    .await
                    .map_err(Failure::before)?;
                results.push(Ok(()));
            }
            Err(e) if is_message_error(&e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT message")
                    .execute(&mut *tx)
                    .await
                    .map_err(Failure::before)?;
                tracing::error!(id = %row.msg.id, error = %e,
                    "message not stored: answering 451 to its sender only");
                results.push(Err(unavailable(&e)));
            }
            Err(e) => return Err(Failure::before(e)),
        }
    }
    tx.commit().await.map_err(Failure::committing)?;
    Ok(results)
}

/// The fast path: every message of the batch in one transaction, one statement per chunk.
async fn write_all(conn: &mut PgConnection, batch: &[Queued]) -> Result<(), Failure> {
    let mut tx = conn.begin().await.map_err(Failure::before)?;
    for chunk in chunks(batch) {
        insert(&mut *tx, chunk).await.map_err(Failure::before)?;
    }
    tx.commit().await.map_err(Failure::committing)
}

/// The batch in runs of at most [`MAX_STATEMENT_BYTES`] of bodies and search text (a run
/// holds one message at least), so that a statement's arrays stay far below PostgreSQL's
/// limits on a value and on a protocol message.
fn chunks(batch: &[Queued]) -> impl Iterator<Item = &[Queued]> {
    let mut rest = batch;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        for (row, _) in rest {
            bytes += row.msg.raw.len() + row.doc.len();
            if n > 0 && bytes > MAX_STATEMENT_BYTES {
                break;
            }
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

fn opt(o: &Option<String>) -> Option<Cow<'_, str>> {
    o.as_deref().map(pg_text)
}

/// Inserts messages (all of a chunk, or one in its savepoint): metadata, bodies, mailbox
/// links, search documents, findings. One statement (one round trip), prepared once per
/// connection: each column goes as an array, `unnest` makes the rows, and the rows of the
/// other tables find their message's `seq` by its `id` (generated here, unique).
async fn insert<'c>(conn: impl PgExecutor<'c>, rows: &[Queued]) -> Result<(), sqlx::Error> {
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut received_at = Vec::with_capacity(n);
    let mut mail_from = Vec::with_capacity(n);
    let mut rcpt_of = Vec::with_capacity(n);
    let mut rcpt = Vec::with_capacity(n);
    let mut helo = Vec::with_capacity(n);
    let mut client_ip = Vec::with_capacity(n);
    let mut client_port = Vec::with_capacity(n);
    let mut tls_version = Vec::with_capacity(n);
    let mut tls_cipher = Vec::with_capacity(n);
    let mut size = Vec::with_capacity(n);
    let mut sha256 = Vec::with_capacity(n);
    let mut message_id = Vec::with_capacity(n);
    let mut from_addr = Vec::with_capacity(n);
    let mut to_addr = Vec::with_capacity(n);
    let mut cc_addr = Vec::with_capacity(n);
    let mut subject = Vec::with_capacity(n);
    let mut date = Vec::with_capacity(n);
    let mut content_type = Vec::with_capacity(n);
    let mut charset = Vec::with_capacity(n);
    let mut attachments = Vec::with_capacity(n);
    let mut raw = Vec::with_capacity(n);
    let mut docs = Vec::with_capacity(n);
    let mut findings = Vec::with_capacity(n);
    let mut link_of = Vec::with_capacity(n);
    let mut link_mailbox = Vec::with_capacity(n);
    for (i, (row, _)) in rows.iter().enumerate() {
        let m = &row.msg;
        let meta = &m.meta;
        // 1-based, as `WITH ORDINALITY` counts.
        let ord = i as i64 + 1;
        ids.push(row.id.as_str());
        received_at.push(m.received_at);
        mail_from.push(pg_text(&m.envelope.mail_from));
        for r in &m.envelope.rcpt_to {
            rcpt_of.push(ord);
            rcpt.push(pg_text(r));
        }
        helo.push(pg_text(&m.session.helo));
        client_ip.push(row.client_ip.as_str());
        client_port.push(i32::from(m.session.client.port()));
        tls_version.push(m.session.tls.as_ref().map(|t| pg_text(&t.version)));
        tls_cipher.push(m.session.tls.as_ref().map(|t| pg_text(&t.cipher)));
        size.push(i64::try_from(m.size).unwrap_or(i64::MAX));
        sha256.push(m.sha256.as_str());
        message_id.push(opt(&meta.message_id));
        from_addr.push(opt(&meta.from));
        to_addr.push(opt(&meta.to));
        cc_addr.push(opt(&meta.cc));
        subject.push(opt(&meta.subject));
        date.push(opt(&meta.date));
        content_type.push(opt(&meta.content_type));
        charset.push(opt(&meta.charset));
        attachments.push(row.attachments.as_str());
        raw.push(&m.raw[..]);
        docs.push(row.doc.as_str());
        findings.push(row.findings.as_deref());
        for b in &row.mailboxes {
            link_of.push(row.id.as_str());
            link_mailbox.push(pg_text(b));
        }
    }
    sqlx::query(
        "WITH r AS (
            SELECT r.ord, array_agg(r.rcpt ORDER BY r.n) AS rcpt_to
            FROM unnest($4::int8[], $5::text[]) WITH ORDINALITY AS r(ord, rcpt, n)
            GROUP BY r.ord),
         m AS (
            INSERT INTO messages (id, received_at, mail_from, rcpt_to, helo, client_ip,
                client_port, tls_version, tls_cipher, size, sha256, message_id, from_addr,
                to_addr, cc_addr, subject, date, content_type, charset, attachments)
            SELECT u.id, u.received_at, u.mail_from, coalesce(r.rcpt_to, '{}'), u.helo,
                u.client_ip, u.client_port, u.tls_version, u.tls_cipher, u.size, u.sha256,
                u.message_id, u.from_addr, u.to_addr, u.cc_addr, u.subject, u.date,
                u.content_type, u.charset, u.attachments
            FROM unnest($1::uuid[], $2::int8[], $3::text[], $6::text[], $7::text[],
                    $8::int4[], $9::text[], $10::text[], $11::int8[], $12::text[],
                    $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
                    $18::text[], $19::text[], $20::text[], $21::jsonb[])
                WITH ORDINALITY AS u(id, received_at, mail_from, helo, client_ip,
                    client_port, tls_version, tls_cipher, size, sha256, message_id,
                    from_addr, to_addr, cc_addr, subject, date, content_type, charset,
                    attachments, ord)
            LEFT JOIN r ON r.ord = u.ord
            ORDER BY u.ord
            RETURNING seq, id),
         b AS (INSERT INTO bodies (seq, raw)
               SELECT m.seq, x.raw FROM unnest($1::uuid[], $22::bytea[]) AS x(id, raw)
               JOIN m ON m.id = x.id),
         l AS (INSERT INTO mailbox_messages (mailbox, seq)
               SELECT DISTINCT x.mailbox, m.seq
               FROM unnest($25::uuid[], $26::text[]) AS x(id, mailbox)
               JOIN m ON m.id = x.id),
         s AS (INSERT INTO search_index (seq, doc)
               SELECT m.seq, to_tsvector('simple', x.doc)
               FROM unnest($1::uuid[], $23::text[]) AS x(id, doc)
               JOIN m ON m.id = x.id),
         c AS (INSERT INTO message_checks (seq, findings)
               SELECT m.seq, x.findings
               FROM unnest($1::uuid[], $24::jsonb[]) AS x(id, findings)
               JOIN m ON m.id = x.id
               WHERE x.findings IS NOT NULL)
         SELECT count(*) FROM m",
    )
    .bind(ids)
    .bind(received_at)
    .bind(mail_from)
    .bind(rcpt_of)
    .bind(rcpt)
    .bind(helo)
    .bind(client_ip)
    .bind(client_port)
    .bind(tls_version)
    .bind(tls_cipher)
    .bind(size)
    .bind(sha256)
    .bind(message_id)
    .bind(from_addr)
    .bind(to_addr)
    .bind(cc_addr)
    .bind(subject)
    .bind(date)
    .bind(content_type)
    .bind(charset)
    .bind(attachments)
    .bind(raw)
    .bind(docs)
    .bind(findings)
    .bind(link_of)
    .bind(link_mailbox)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: character by character.
    fn words_reference(text: &str, doc: &mut String) -> bool {
        for c in text.chars() {
            if doc.len() >= MAX_INDEX_BYTES {
                return false;
            }
            if c.is_alphanumeric() {
                doc.extend(c.to_lowercase());
            } else if !doc.ends_with(' ') && !doc.is_empty() {
                doc.push(' ');
            }
        }
        if !doc.ends_with(' ') && !doc.is_empty() {
            doc.push(' ');
        }
        true
    }

    fn both(parts: &[&str], start: &str) {
        let (mut a, mut b) = (start.to_string(), start.to_string());
        for p in parts {
            let (ra, rb) = (words(p, &mut a), words_reference(p, &mut b));
            assert_eq!(ra, rb, "{p:?}");
            assert_eq!(a, b, "{p:?}");
            if !ra {
                break;
            }
        }
    }

    #[test]
    fn words_split_and_fold_like_the_plain_definition() {
        let mut doc = String::new();
        assert!(words("Hello, Wörld! alice@Example.ORG İx ǅz 42", &mut doc));
        assert_eq!(doc, "hello wörld alice example org i\u{307}x ǆz 42 ");
        let alphabet: Vec<char> = "aZ9 .@-_\tÉß\u{130}ǅ\u{3a3}中\u{1F600}\0\u{300}"
            .chars()
            .collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            let mut s = String::new();
            for _ in 0..(seed % 64) {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                s.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            both(&[&s, &s], "");
            both(&[&s], "x");
            both(&[&s], "x ");
        }
    }

    #[test]
    fn words_stop_where_the_plain_definition_stops() {
        let long = "Abc ".repeat(MAX_INDEX_BYTES / 4 + 10);
        both(&[&long, "more"], "");
        let exact = "A".repeat(MAX_INDEX_BYTES);
        both(&[&exact], "");
        both(&[&exact, "b"], "");
        both(&[&exact[1..], "ÉÉ", "c"], "");
        both(&["é".repeat(MAX_INDEX_BYTES).as_str()], "");
        for near in [MAX_INDEX_BYTES - 2, MAX_INDEX_BYTES - 1] {
            both(&[&"x".repeat(near), "YZW q"], "");
            both(&[&"x".repeat(near), "ÉYZ"], "");
        }
    }

    #[test]
    fn json_for_jsonb_has_no_nul() {
        assert_eq!(json_text(&vec!["a", "b"]), r#"["a","b"]"#);
        assert_eq!(json_text(&vec!["a\0b"]), "[\"a\u{fffd}b\"]");
        // A backslash and `u0000` as text is not a NUL, and stays as it was.
        assert_eq!(json_text(&vec!["\\u0000"]), r#"["\\u0000"]"#);
    }
}
