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

use intake_core::{Arrivals, StoreError};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor, MySql, QueryBuilder};
use tokio::sync::mpsc;

pub(crate) use super::rows::Delivery;
use super::{MysqlConfig, ServerLimits, connect_one, error_number, rows, unavailable};
use std::sync::Arc;

/// A batch that has not committed after this is abandoned (451 to each sender).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed connection attempt, batches fail at once for this long.
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// How long the check after a lost `COMMIT` may wait for the old session to end, on top
/// of its connection time.
const LOST_COMMIT_CHECK: Duration = Duration::from_secs(10);
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
    rows::insert(conn, batch, limits)
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
        match rows::insert(conn, std::slice::from_ref(d), limits).await {
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
