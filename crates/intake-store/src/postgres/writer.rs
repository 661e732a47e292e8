//! The group-commit writer: one task, one dedicated connection, every delivery.
//!
//! Sessions send a [`Row`] with a oneshot over a bounded channel. The writer takes what is
//! queued (up to `max_batch`), lingers up to `commit_delay` only while [`Arrivals`] says
//! other sessions are receiving content, writes the batch in one transaction (one
//! statement per message: the message row, its body, its mailbox links, its search
//! document and its findings, as one `WITH … INSERT`), and answers the oneshots only after
//! `COMMIT` returned. The connection has `synchronous_commit = on`: `COMMIT` returns once
//! the WAL is flushed.
//!
//! Failures:
//! - A message the database refuses (a data or constraint error: the poison message) fails
//!   alone: the batch is written again with each message in a savepoint of its own.
//! - A lost connection (the server restarted, an operator terminated the session): the
//!   connection is dropped and a new one made for the next batch. If the batch failed before
//!   `COMMIT` was sent, nothing of it was committed, so it is retried once on the new
//!   connection; otherwise (lost during `COMMIT`: it may or may not have been committed)
//!   every sender gets `Unavailable` (a 451: the sender retries; at worst a duplicate,
//!   never a lost message).
//! - No connection can be made within `store.connect_timeout`: the batch fails at once.

use std::io;
use std::time::{Duration, Instant};

use intake_core::{Arrivals, Incoming, StoreError, mime};
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

/// A message as the writer inserts it: everything computed before it reaches the writer.
pub(super) struct Row {
    msg: Incoming,
    mailboxes: Vec<String>,
    attachments: String,
    findings: Option<String>,
    /// The search document: lower-case words separated by spaces.
    doc: String,
}

impl Row {
    /// Prepares `msg` for insertion: serializes its parts and extracts the search text.
    pub(super) fn new(msg: Incoming, mailboxes: Vec<String>) -> Row {
        let attachments = json_text(&msg.meta.attachments);
        let findings = (!msg.findings.is_empty()).then(|| json_text(&msg.findings));
        let (text, headers) = mime::index_text(&msg.raw);
        let m = &msg.meta;
        let mut doc = String::new();
        for part in [
            m.subject.as_deref().unwrap_or(""),
            &msg.envelope.mail_from,
            &msg.envelope.rcpt_to.join(" "),
            m.from.as_deref().unwrap_or(""),
            m.to.as_deref().unwrap_or(""),
            m.cc.as_deref().unwrap_or(""),
            &text,
            &headers,
        ] {
            if !words(part, &mut doc) {
                break;
            }
        }
        Row {
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
    let mut v = serde_json::to_value(value).expect("plain data serializes");
    clean(&mut v);
    v.to_string()
}

/// Appends `text` to `doc` as lower-case words (every character that is not a letter or a
/// digit separates words: `alice@example.org` is `alice example org`). The query side
/// splits words the same way. False once `doc` is full.
pub(super) fn words(text: &str, doc: &mut String) -> bool {
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
            self.gather(&mut rx, &mut batch).await;
            self.commit(batch).await;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Takes everything queued; lingers for deliveries that are on their way.
    async fn gather(&mut self, rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
        let max = self.max_batch;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        if self.commit_delay.is_zero() {
            return;
        }
        // Linger only while other sessions are receiving content: a lone client, or
        // clients all waiting on this commit, never wait.
        let deadline = tokio::time::Instant::now() + self.commit_delay;
        while batch.len() < max && self.arrivals.pending() > 0 {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let step = (now + Duration::from_micros(250)).min(deadline);
            match tokio::time::timeout_at(step, rx.recv()).await {
                Ok(Some(q)) => {
                    batch.push(q);
                    while batch.len() < max {
                        match rx.try_recv() {
                            Ok(q) => batch.push(q),
                            Err(_) => break,
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
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
                tracing::error!(messages = n, error = %e,
                    "commit failed: answering 451 to every message of the batch");
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
        for ((_, done), result) in batch.into_iter().zip(results) {
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
    for (row, _) in batch {
        sqlx::query("SAVEPOINT message")
            .execute(&mut *tx)
            .await
            .map_err(Failure::before)?;
        match insert(&mut *tx, row).await {
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

/// The fast path: every message of the batch in one transaction.
async fn write_all(conn: &mut PgConnection, batch: &[Queued]) -> Result<(), Failure> {
    let mut tx = conn.begin().await.map_err(Failure::before)?;
    for (row, _) in batch {
        insert(&mut *tx, row).await.map_err(Failure::before)?;
    }
    tx.commit().await.map_err(Failure::committing)
}

/// Inserts one message: metadata, body, mailbox links, search document, findings. One
/// statement (one round trip), prepared once per connection.
async fn insert<'c>(conn: impl PgExecutor<'c>, row: &Row) -> Result<(), sqlx::Error> {
    let m = &row.msg;
    let meta = &m.meta;
    let opt = |o: &Option<String>| o.as_deref().map(|s| pg_text(s).into_owned());
    sqlx::query(
        "WITH m AS (
            INSERT INTO messages (id, received_at, mail_from, rcpt_to, helo, client_ip,
                client_port, tls_version, tls_cipher, size, sha256, message_id, from_addr,
                to_addr, cc_addr, subject, date, content_type, charset, attachments)
            VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                $16, $17, $18, $19, $20::jsonb)
            RETURNING seq),
         b AS (INSERT INTO bodies (seq, raw) SELECT seq, $21 FROM m),
         l AS (INSERT INTO mailbox_messages (mailbox, seq)
               SELECT DISTINCT x.mailbox, m.seq FROM m, unnest($22::text[]) AS x(mailbox)),
         s AS (INSERT INTO search_index (seq, doc) SELECT seq, to_tsvector('simple', $23) FROM m),
         c AS (INSERT INTO message_checks (seq, findings)
               SELECT seq, $24::jsonb FROM m WHERE $24::text IS NOT NULL)
         SELECT seq FROM m",
    )
    .bind(m.id.to_string())
    .bind(m.received_at)
    .bind(pg_text(&m.envelope.mail_from))
    .bind(
        m.envelope
            .rcpt_to
            .iter()
            .map(|r| pg_text(r).into_owned())
            .collect::<Vec<_>>(),
    )
    .bind(pg_text(&m.session.helo))
    .bind(m.session.client.ip().to_string())
    .bind(i32::from(m.session.client.port()))
    .bind(
        m.session
            .tls
            .as_ref()
            .map(|t| pg_text(&t.version).into_owned()),
    )
    .bind(
        m.session
            .tls
            .as_ref()
            .map(|t| pg_text(&t.cipher).into_owned()),
    )
    .bind(i64::try_from(m.size).unwrap_or(i64::MAX))
    .bind(&m.sha256)
    .bind(opt(&meta.message_id))
    .bind(opt(&meta.from))
    .bind(opt(&meta.to))
    .bind(opt(&meta.cc))
    .bind(opt(&meta.subject))
    .bind(opt(&meta.date))
    .bind(opt(&meta.content_type))
    .bind(opt(&meta.charset))
    .bind(&row.attachments)
    .bind(&m.raw[..])
    .bind(
        row.mailboxes
            .iter()
            .map(|b| pg_text(b).into_owned())
            .collect::<Vec<_>>(),
    )
    .bind(&row.doc)
    .bind(row.findings.as_deref())
    .fetch_one(conn)
    .await?;
    Ok(())
}
