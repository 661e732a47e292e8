//! The writer task: the one connection that writes mail, with group commit.
//!
//! Sessions queue a [`Delivery`] (message, mailboxes, search text, oneshot). The writer
//! takes what is queued (up to `max_batch`), lingers up to `commit_delay` only while
//! [`Arrivals`] says other sessions are receiving content, and writes the batch in one
//! transaction: one multi-row `INSERT` per table (split so that no statement carries more
//! than half of `max_allowed_packet`). The oneshots are answered only after `COMMIT` has
//! returned.
//!
//! Failures:
//! - `BEGIN` fails (the connection was lost while idle: killed, `wait_timeout`, a server
//!   restart): nothing was written, so the writer reconnects and tries once more.
//! - Deadlock or lock wait timeout: the batch is rolled back and written again (twice).
//! - A statement the server refuses (a poison message: a value it will not take): the
//!   batch is rolled back and written again with each message in a savepoint of its own;
//!   only the failing message is answered 451, and logged.
//! - The connection breaks mid-batch, or the batch takes longer than [`WRITE_TIMEOUT`]:
//!   every message of the batch is answered 451 and the connection is dropped (the next
//!   batch reconnects).
//! - `COMMIT` fails without an answer (the connection was killed or lost during it): the
//!   batch may or may not have committed. The writer ends the old session (`KILL`, then
//!   waits until the server has let it go, so a commit still in progress has finished),
//!   then asks on a new connection which of the batch's ids are stored: those are
//!   answered as stored, the others 451. Only if that check fails too (the server is
//!   unreachable) is every message answered 451; the sender retries and the message may
//!   then be stored twice, never lost.
//! - No connection (the server is down): every message answers 451 at once; after a failed
//!   attempt the writer does not try again for [`RECONNECT_BACKOFF`], so that sessions are
//!   not each held for a connect timeout.

use crate::gather::gather;
use std::time::{Duration, Instant};

use intake_core::{Arrivals, Incoming, StoreError, mime};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor, MySql, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

use super::{MysqlConfig, ServerLimits, connect_one, error_number, unavailable};
use std::sync::Arc;

/// One message on its way to the writer.
pub(crate) struct Delivery {
    pub msg: Incoming,
    /// Lower-cased, distinct, aliases resolved.
    pub mailboxes: Vec<String>,
    /// What search looks at (made by the session's task).
    pub words: String,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// A batch that has not committed after this is abandoned (451 to each sender).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed connection attempt, batches fail at once for this long.
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// How long the check after a lost `COMMIT` may wait for the old session to end, on top
/// of its connection time.
const LOST_COMMIT_CHECK: Duration = Duration::from_secs(10);
/// Rows of one multi-row `INSERT` at most.
const MAX_ROWS: usize = 500;
/// Deadlock (1213) and lock wait timeout (1205): the transaction can be tried again.
const RETRYABLE: [u16; 2] = [1213, 1205];

pub(crate) struct Writer {
    opts: MySqlConnectOptions,
    cfg: MysqlConfig,
    limits: Arc<ServerLimits>,
    arrivals: Arrivals,
    conn: Option<MySqlConnection>,
    /// When the last connection attempt failed (None: connected, or never tried).
    failed_at: Option<(Instant, String)>,
    /// The server's id of `conn` (`CONNECTION_ID()`), to end it after a lost `COMMIT`.
    conn_id: Option<u64>,
}

/// What became of each message of a batch.
type BatchResult = Vec<Result<(), StoreError>>;

fn fail_all(n: usize, e: &dyn std::fmt::Display) -> BatchResult {
    (0..n).map(|_| Err(unavailable(e))).collect()
}

/// Where a write went wrong.
enum Failure {
    /// `BEGIN`: nothing was written.
    Begin(sqlx::Error),
    /// A statement inside the transaction.
    Statement(sqlx::Error),
    /// `COMMIT` (its outcome may be unknown).
    Commit(sqlx::Error),
}

impl Writer {
    pub(crate) fn new(
        opts: MySqlConnectOptions,
        cfg: MysqlConfig,
        limits: Arc<ServerLimits>,
        arrivals: Arrivals,
    ) -> Writer {
        Writer {
            opts,
            cfg,
            limits,
            arrivals,
            conn: None,
            failed_at: None,
            conn_id: None,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Delivery>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            gather(
                &mut rx,
                &mut batch,
                self.cfg.max_batch,
                self.cfg.commit_delay,
                &self.arrivals,
            )
            .await;
            self.commit(batch).await;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    async fn commit(&mut self, batch: Vec<Delivery>) {
        let started = Instant::now();
        let n = batch.len();
        let results = match tokio::time::timeout(WRITE_TIMEOUT, self.write(&batch)).await {
            Ok(r) => r,
            Err(_) => {
                // The connection is in an unknown state: drop it (the server rolls back
                // what it has not committed when it notices).
                self.conn = None;
                fail_all(
                    n,
                    &format!("the batch did not commit within {WRITE_TIMEOUT:?}"),
                )
            }
        };
        metrics::histogram!("intake_store_commit_batch_size").record(n as f64);
        metrics::histogram!("intake_store_commit_seconds").record(started.elapsed());
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
        } else {
            let why = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            if let Some(repeats) = crate::common::WRITE_FAILURES.hit(&why) {
                tracing::error!(messages = n, error = %why, repeats, "commit failed; answering 451");
            }
        }
        for (d, result) in batch.into_iter().zip(results) {
            let _ = d.done.send(result);
        }
    }

    /// The writer's connection, connecting if needed.
    async fn connection(&mut self) -> Result<&mut MySqlConnection, StoreError> {
        if self.conn.is_none() {
            if let Some((at, why)) = &self.failed_at
                && at.elapsed() < RECONNECT_BACKOFF
            {
                return Err(StoreError::Unavailable(format!(
                    "the database is unreachable ({why}); retrying"
                )));
            }
            match connect_one(&self.opts, self.cfg.connect_timeout, false).await {
                Ok(mut c) => {
                    if self.failed_at.take().is_some() {
                        tracing::warn!("store: the writer is connected again");
                    }
                    self.conn_id = sqlx::query_scalar::<_, u64>("SELECT CONNECTION_ID()")
                        .fetch_one(&mut c)
                        .await
                        .ok();
                    self.conn = Some(c);
                }
                Err(e) => {
                    if let Some(repeats) = crate::common::WRITE_FAILURES.hit(&e.to_string()) {
                        tracing::warn!(error = %e, repeats, "store: the writer cannot connect");
                    }
                    self.failed_at = Some((Instant::now(), e.to_string()));
                    return Err(e);
                }
            }
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn write(&mut self, batch: &[Delivery]) -> BatchResult {
        let n = batch.len();
        let limits = self.limits.clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(e) => return fail_all(n, &e),
            };
            let failure = match write_all(conn, batch, &limits).await {
                Ok(()) => return batch.iter().map(|_| Ok(())).collect(),
                Err(f) => f,
            };
            match failure {
                Failure::Begin(e) => {
                    self.conn = None;
                    if attempts > 1 {
                        return fail_all(n, &e);
                    }
                    tracing::debug!(error = %e, "store: the writer's connection was lost while idle; reconnecting");
                }
                Failure::Statement(e) => {
                    if rollback(conn).await.is_err() {
                        self.conn = None;
                        return fail_all(n, &e);
                    }
                    let number = error_number(&e);
                    match number {
                        Some(code) if RETRYABLE.contains(&code) && attempts < 3 => {
                            tracing::debug!(error = %e, "store: batch rolled back; trying again");
                        }
                        Some(_) if n > 1 => {
                            tracing::warn!(messages = n, error = %e,
                                "a batch failed: writing its messages one by one to isolate the failing one");
                            return self.isolate(batch).await;
                        }
                        _ => {
                            if number.is_none() {
                                self.conn = None;
                            }
                            if n == 1 {
                                tracing::error!(id = %batch[0].msg.id, error = %e, "message not stored");
                            }
                            return fail_all(n, &e);
                        }
                    }
                }
                Failure::Commit(e) => {
                    self.conn = None;
                    let old = self.conn_id.take();
                    return self.after_lost_commit(batch, old, e).await;
                }
            }
        }
    }

    /// `COMMIT` failed with no answer: the batch may be stored. Ends the old session
    /// `old` and waits until the server has let it go (a commit in progress finishes or
    /// rolls back first), then looks the batch's ids up on a new connection: the messages
    /// found are answered as stored, the others 451.
    async fn after_lost_commit(
        &self,
        batch: &[Delivery],
        old: Option<u64>,
        e: sqlx::Error,
    ) -> BatchResult {
        let n = batch.len();
        let check = async {
            let mut c = connect_one(&self.opts, self.cfg.connect_timeout, false)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(id) = old {
                // Fails with "unknown thread" when it is gone already.
                let _ = c.execute(sqlx::AssertSqlSafe(format!("KILL {id}"))).await;
                loop {
                    let alive: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?",
                    )
                    .bind(id)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                    if alive == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut q = QueryBuilder::<MySql>::new("SELECT id FROM messages WHERE id IN (");
            let mut list = q.separated(", ");
            for d in batch {
                list.push_bind(&d.msg.id.as_bytes()[..]);
            }
            q.push(")");
            let found: Vec<Vec<u8>> = q
                .build_query_scalar()
                .fetch_all(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            let _ = c.close().await;
            Ok::<_, String>(found)
        };
        let limit = self.cfg.connect_timeout.saturating_mul(2) + LOST_COMMIT_CHECK;
        let found = match tokio::time::timeout(limit, check).await {
            Ok(Ok(found)) => found,
            Ok(Err(why)) => {
                tracing::error!(messages = n, error = %e, check = %why,
                    "COMMIT lost and the batch could not be checked: answering 451 (a retry may store a message twice)");
                return fail_all(n, &e);
            }
            Err(_) => {
                tracing::error!(messages = n, error = %e,
                    "COMMIT lost and the check did not finish in time: answering 451 (a retry may store a message twice)");
                return fail_all(n, &e);
            }
        };
        let stored = batch
            .iter()
            .filter(|d| found.iter().any(|f| f[..] == d.msg.id.as_bytes()[..]))
            .count();
        tracing::warn!(messages = n, stored, error = %e,
            "COMMIT lost: checked on a new connection; stored messages answered as stored, the others 451");
        batch
            .iter()
            .map(|d| {
                if found.iter().any(|f| f[..] == d.msg.id.as_bytes()[..]) {
                    Ok(())
                } else {
                    Err(unavailable(&e))
                }
            })
            .collect()
    }

    /// Writes the batch again, each message in a savepoint of its own: only the messages
    /// the server refuses fail.
    async fn isolate(&mut self, batch: &[Delivery]) -> BatchResult {
        let n = batch.len();
        let limits = self.limits.clone();
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return fail_all(n, &e),
        };
        match isolated(conn, batch, &limits).await {
            Ok(results) => results,
            Err(e) => {
                let _ = rollback(conn).await;
                self.conn = None;
                fail_all(n, &e)
            }
        }
    }
}

async fn rollback(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    conn.execute("ROLLBACK").await.map(|_| ())
}

/// The fast path: the whole batch, then COMMIT.
async fn write_all(
    conn: &mut MySqlConnection,
    batch: &[Delivery],
    limits: &ServerLimits,
) -> Result<(), Failure> {
    conn.execute("BEGIN").await.map_err(Failure::Begin)?;
    insert(conn, batch, limits)
        .await
        .map_err(Failure::Statement)?;
    conn.execute("COMMIT").await.map_err(Failure::Commit)?;
    Ok(())
}

/// One transaction, a savepoint per message. `Err`: the transaction itself failed.
async fn isolated(
    conn: &mut MySqlConnection,
    batch: &[Delivery],
    limits: &ServerLimits,
) -> Result<BatchResult, sqlx::Error> {
    conn.execute("BEGIN").await?;
    let mut results = Vec::with_capacity(batch.len());
    for d in batch {
        conn.execute("SAVEPOINT one_message").await?;
        match insert(conn, std::slice::from_ref(d), limits).await {
            Ok(()) => results.push(Ok(())),
            Err(e) if error_number(&e).is_some() => {
                conn.execute("ROLLBACK TO SAVEPOINT one_message").await?;
                tracing::error!(id = %d.msg.id, error = %e,
                    "message not stored: answering 451 to its sender only");
                results.push(Err(unavailable(&e)));
            }
            Err(e) => return Err(e),
        }
    }
    conn.execute("COMMIT").await?;
    Ok(results)
}

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
async fn insert(
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
