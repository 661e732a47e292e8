//! The writer thread: the only connection that writes.
//!
//! Deliveries are batched into one transaction per commit (group commit, see the module
//! docs of `super`); every other write (delete, mark read, alias, eviction chunk) is a short
//! transaction of its own between batches. Each write answers what it changed (the layer
//! above publishes events from that, after the commit). When no delivery is waiting, the writer indexes new messages for search, so that indexing never
//! delays a 250; under sustained load it still indexes a chunk at least every
//! `SqliteConfig::index_max_lag`.

use std::time::{Duration, Instant};

use intake_core::{Arrivals, Incoming, MessageId, Removal, SearchMode, StoreError, mailbox_key};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::{SqliteConfig, unavailable};
use crate::gather::{Batch, gather};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write for the writer thread.
pub(super) enum Job {
    /// A message and the mailboxes to file it under.
    Deliver(Box<(Incoming, Vec<String>)>, Reply<()>),
    Delete(MessageId, Reply<Option<Removal>>),
    DeleteMailbox(String, Reply<Vec<Removal>>),
    SetSeen(MessageId, bool, Reply<bool>),
    RegisterAlias(String, String, Reply<()>),
    /// Store a value under a key unless one is there; answer the stored value.
    MetaInit(String, String, Reply<String>),
    /// Remove these mailbox links, then delete the messages no mailbox keeps any more.
    /// Answers how many messages were deleted, and every link removed.
    Unlink(Vec<(String, i64)>, Reply<(u64, Vec<Removal>)>),
    /// Delete these messages entirely.
    DeleteSeqs(Vec<i64>, Reply<Vec<Removal>>),
}

/// A delivery waiting in a batch.
type Queued = (Box<(Incoming, Vec<String>)>, Reply<()>);

/// Messages one indexing step takes at most. Each step is one transaction, and FTS5 writes
/// one index segment per transaction that later merges rewrite: larger steps mean fewer
/// segments and less merging (see docs/performance.md), while `index::INDEX_STEP_TIME` keeps a
/// step short enough that a delivery arriving meanwhile waits little. Steps of 2,048 (cut by
/// the clock at about a thousand 4 KB messages) merged less but made deliveries arriving
/// during them wait longer: +0.5 ms from end of data to durable, and a lower rate, under
/// 100 sessions (docs/performance.md, "The search index's merges").
const INDEX_CHUNK: i64 = 512;
/// How long the writer must have had nothing to do before it indexes.
const INDEX_WHEN_IDLE_FOR: Duration = Duration::from_millis(10);
/// Indexing time taken at once when mail has waited `index_max_lag` to be indexed.
const FORCED_INDEX_SLICE: Duration = Duration::from_millis(100);

pub(super) fn run(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    cfg: SqliteConfig,
    arrivals: Arrivals,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("writer runtime");
    let mut w = Writer {
        indexed_upto: read_state(&conn, "indexed_upto").unwrap_or(0),
        conn,
        cfg,
        arrivals,
        last_index: Instant::now(),
    };
    rt.block_on(w.run(rx));
}

struct Writer {
    conn: Connection,
    cfg: SqliteConfig,
    arrivals: Arrivals,
    /// Highest `seq` already in the search index.
    indexed_upto: i64,
    last_index: Instant,
}

fn read_state(conn: &Connection, key: &str) -> Option<i64> {
    conn.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
    .ok()
    .flatten()
}

impl Writer {
    fn max_seq(&self) -> i64 {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM messages", [], |r| {
                r.get(0)
            })
            .unwrap_or(0)
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Job>) {
        // Since when messages have been waiting to be indexed (None: index up to date).
        let indexing = self.cfg.search != SearchMode::Off;
        let mut unindexed_since =
            (indexing && self.max_seq() > self.indexed_upto).then(Instant::now);
        loop {
            let first = if unindexed_since.is_some() {
                // Index only once the writer has been idle a while: a burst of mail is
                // committed first and indexed after.
                match tokio::time::timeout(INDEX_WHEN_IDLE_FOR, rx.recv()).await {
                    Ok(Some(j)) => j,
                    Ok(None) => break,
                    Err(_) => {
                        if !self.index_step(INDEX_CHUNK) {
                            unindexed_since = None;
                        }
                        continue;
                    }
                }
            } else {
                match rx.recv().await {
                    Some(j) => j,
                    None => break,
                }
            };
            let mut batch = Vec::new();
            let mut others = Vec::new();
            let mut sorted = Sorted {
                batch: &mut batch,
                others: &mut others,
            };
            sorted.put(first);
            gather(
                &mut rx,
                &mut sorted,
                self.cfg.max_batch,
                self.cfg.commit_delay,
                &self.arrivals,
            )
            .await;
            if !batch.is_empty() {
                self.commit_deliveries(batch);
                if indexing {
                    unindexed_since.get_or_insert_with(Instant::now);
                }
            }
            for job in others {
                self.run_job(job);
            }
            if unindexed_since.is_some_and(|t| t.elapsed() >= self.cfg.index_max_lag) {
                // Never idle for long: index a bounded slice now so that search lags by
                // about `index_max_lag` at most.
                let until = Instant::now() + FORCED_INDEX_SLICE;
                let mut more = true;
                while more && Instant::now() < until {
                    more = self.index_step(INDEX_CHUNK);
                }
                unindexed_since = more.then(Instant::now);
            }
        }
        // Index what is left and fold the WAL into the database for a tidy shutdown.
        while indexing && self.index_step(INDEX_CHUNK) {}
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }

    fn commit_deliveries(&mut self, batch: Vec<Queued>) {
        let started = Instant::now();
        let results = write_batch(&mut self.conn, &batch);
        let n = batch.len();
        metrics::histogram!("intake_store_commit_batch_size").record(n as f64);
        metrics::histogram!("intake_store_commit_seconds").record(started.elapsed());
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            tracing::trace!(
                messages = n,
                micros = started.elapsed().as_micros() as u64,
                "committed"
            );
        } else {
            // A store that cannot write (disk full, locked, read-only) fails every batch
            // alike: logged once, then once per ten seconds with the number of batches.
            let kind = if failed == n { "all" } else { "some" };
            if let Some(repeats) = crate::common::WRITE_FAILURES.hit(&format!("sqlite {kind}")) {
                tracing::error!(
                    messages = n,
                    failed,
                    repeats,
                    "commit: some messages not stored; answering 451 to those"
                );
            }
        }
        for ((message, done), result) in batch.into_iter().zip(results) {
            // Dropped before the answer, so that the session finds its buffer no longer
            // shared and receives its next message into it.
            drop(message);
            let _ = done.send(result);
        }
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Deliver(..) => unreachable!("batched"),
            Job::Delete(id, done) => {
                let r = self.delete_ids(&[id]).map(|mut gone| gone.pop());
                let _ = done.send(r);
            }
            Job::DeleteMailbox(mailbox, done) => {
                let r = self.delete_mailbox(&mailbox);
                let _ = done.send(r);
            }
            Job::SetSeen(id, seen, done) => {
                let r = self
                    .conn
                    .execute(
                        "UPDATE messages SET seen = ?1 WHERE id = ?2",
                        params![seen, &id.as_bytes()[..]],
                    )
                    .map(|n| n > 0)
                    .map_err(unavailable);
                let _ = done.send(r);
            }
            Job::RegisterAlias(alias, mailbox, done) => {
                let r = self
                    .conn
                    .execute(
                        "INSERT INTO aliases (alias, mailbox) VALUES (?1, ?2)
                         ON CONFLICT (alias) DO UPDATE SET mailbox = excluded.mailbox",
                        params![mailbox_key(&alias), mailbox_key(&mailbox)],
                    )
                    .map(|_| ())
                    .map_err(unavailable);
                let _ = done.send(r);
            }
            Job::MetaInit(key, value, done) => {
                let r = meta_init(&self.conn, &key, &value).map_err(unavailable);
                let _ = done.send(r);
            }
            Job::Unlink(links, done) => {
                let r = self.unlink(&links);
                let _ = done.send(r);
            }
            Job::DeleteSeqs(seqs, done) => {
                let r = self.delete_seqs(&seqs);
                let _ = done.send(r);
            }
        }
    }

    /// Deletes messages by id; answers each one deleted.
    fn delete_ids(&mut self, ids: &[MessageId]) -> Result<Vec<Removal>, StoreError> {
        let mut seqs = Vec::new();
        for id in ids {
            let seq: Option<i64> = self
                .conn
                .query_row(
                    "SELECT seq FROM messages WHERE id = ?1",
                    [&id.as_bytes()[..]],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            seqs.extend(seq);
        }
        self.delete_seqs(&seqs)
    }

    fn delete_seqs(&mut self, seqs: &[i64]) -> Result<Vec<Removal>, StoreError> {
        let tx = self.conn.transaction().map_err(unavailable)?;
        let mut gone = Vec::new();
        for &seq in seqs {
            if let Some((id, mailboxes)) = delete_message(&tx, seq).map_err(unavailable)? {
                gone.push(Removal { id, mailboxes });
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(gone)
    }

    fn delete_mailbox(&mut self, mailbox: &str) -> Result<Vec<Removal>, StoreError> {
        let mailbox = mailbox_key(mailbox);
        let seqs: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT seq FROM mailbox_messages WHERE mailbox = ?1")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([&mailbox], |r| r.get(0))
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)?
        };
        let links: Vec<(String, i64)> = seqs.iter().map(|&s| (mailbox.clone(), s)).collect();
        let (_, removed) = self.unlink(&links)?;
        Ok(removed)
    }

    /// Removes mailbox links; deletes messages left in no mailbox. Answers how many
    /// messages were deleted, and a removal per link (for the mailbox that lost it).
    fn unlink(&mut self, links: &[(String, i64)]) -> Result<(u64, Vec<Removal>), StoreError> {
        let tx = self.conn.transaction().map_err(unavailable)?;
        let mut removed = Vec::new();
        let mut deleted = 0;
        for (mailbox, seq) in links {
            let Some((id, mut boxes)) = mailboxes_of(&tx, *seq).map_err(unavailable)? else {
                continue;
            };
            if !boxes.contains(mailbox) {
                continue;
            }
            boxes.retain(|b| b != mailbox);
            tx.prepare_cached("DELETE FROM mailbox_messages WHERE mailbox = ?1 AND seq = ?2")
                .and_then(|mut st| st.execute(params![mailbox, seq]))
                .map_err(unavailable)?;
            removed.push(Removal {
                id,
                mailboxes: vec![mailbox.clone()],
            });
            if boxes.is_empty() {
                delete_message(&tx, *seq).map_err(unavailable)?;
                deleted += 1;
            } else {
                tx.prepare_cached("UPDATE messages SET mailboxes = ?1 WHERE seq = ?2")
                    .and_then(|mut st| {
                        st.execute(params![
                            serde_json::to_string(&boxes).expect("strings"),
                            seq
                        ])
                    })
                    .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok((deleted, removed))
    }

    /// Indexes the next `limit` messages for search. Returns whether more remain.
    fn index_step(&mut self, limit: i64) -> bool {
        self.last_index = Instant::now();
        match super::index::index_chunk(&mut self.conn, self.indexed_upto, limit, self.cfg.search) {
            Ok(Some(upto)) => {
                self.indexed_upto = upto;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "search indexing failed; will retry");
                false
            }
        }
    }
}

/// What one gathering took: the deliveries for the group commit, and the other writes to run
/// after it.
struct Sorted<'a> {
    batch: &'a mut Vec<Queued>,
    others: &'a mut Vec<Job>,
}

impl Batch<Job> for Sorted<'_> {
    fn put(&mut self, job: Job) {
        match job {
            Job::Deliver(m, done) => self.batch.push((m, done)),
            other => self.others.push(other),
        }
    }
    fn deliveries(&self) -> usize {
        self.batch.len()
    }
}

/// The mailboxes a message is filed under (from its row, so no index on `seq` is needed).
fn mailboxes_of(
    tx: &Transaction<'_>,
    seq: i64,
) -> rusqlite::Result<Option<(MessageId, Vec<String>)>> {
    let row: Option<(Vec<u8>, String)> = tx
        .prepare_cached("SELECT id, mailboxes FROM messages WHERE seq = ?1")?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(id, boxes)| {
        Some((
            MessageId::from_slice(&id)?,
            serde_json::from_str(&boxes).unwrap_or_default(),
        ))
    }))
}

/// Deletes one message and everything about it. Returns its id and former mailboxes.
fn delete_message(
    tx: &Transaction<'_>,
    seq: i64,
) -> rusqlite::Result<Option<(MessageId, Vec<String>)>> {
    let Some((id, mailboxes)) = mailboxes_of(tx, seq)? else {
        return Ok(None);
    };
    for mailbox in &mailboxes {
        tx.prepare_cached("DELETE FROM mailbox_messages WHERE mailbox = ?1 AND seq = ?2")?
            .execute(params![mailbox, seq])?;
    }
    tx.prepare_cached("DELETE FROM bodies WHERE seq = ?1")?
        .execute([seq])?;
    tx.prepare_cached("DELETE FROM message_checks WHERE seq = ?1")?
        .execute([seq])?;
    tx.prepare_cached("DELETE FROM message_tags WHERE seq = ?1")?
        .execute([seq])?;
    tx.prepare_cached("DELETE FROM search_index WHERE rowid = ?1")?
        .execute([seq])?;
    tx.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
        .execute([seq])?;
    count_messages(tx, -1)?;
    Ok(Some((id, mailboxes)))
}

/// Adds `change` to the count of stored messages (`state`, key `messages`), in the
/// transaction that stores or deletes them.
fn count_messages(tx: &rusqlite::Connection, change: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE state SET value = value + ?1 WHERE key = 'messages'")?
        .execute([change])?;
    Ok(())
}

/// What became of each message of a batch: stored, or why it was not.
type BatchResult = Vec<Result<(), StoreError>>;

/// The value under `key` in `meta`, inserting `value` first if there is none.
fn meta_init(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<String> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        params![key, value],
    )?;
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
}

/// Writes a batch of deliveries in one transaction (the fast path). When one message fails
/// (a poison message: a constraint, a value the database refuses), the batch is written
/// again with each message in a savepoint of its own, so only that message fails and every
/// other sender in the batch still gets its 250. A failure of the transaction itself (disk
/// full, I/O) fails every message.
fn write_batch(conn: &mut Connection, batch: &[Queued]) -> BatchResult {
    let fail_all = |e: rusqlite::Error| -> BatchResult {
        batch.iter().map(|_| Err(unavailable(&e))).collect()
    };
    let first = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (m, _) in batch {
            insert_message(&tx, &m.0, &m.1)?;
        }
        count_messages(&tx, batch.len() as i64)?;
        tx.commit()
    })();
    let first_error = match first {
        Ok(()) => return batch.iter().map(|_| Ok(())).collect(),
        Err(e) => e,
    };
    if batch.len() == 1 {
        return vec![Err(unavailable(&first_error))];
    }
    if let Some(repeats) = crate::common::WRITE_FAILURES.hit(&first_error.to_string()) {
        tracing::warn!(messages = batch.len(), error = %first_error, repeats,
            "a batch failed: writing its messages one by one to isolate the failing one");
    }
    let isolated = (|| -> rusqlite::Result<BatchResult> {
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut results: BatchResult = Vec::with_capacity(batch.len());
        for (m, _) in batch {
            let mut sp = tx.savepoint()?;
            match insert_message(&sp, &m.0, &m.1) {
                Ok(()) => {
                    sp.commit()?;
                    results.push(Ok(()));
                }
                Err(e) => {
                    sp.rollback()?;
                    drop(sp);
                    if let Some(repeats) =
                        crate::common::WRITE_FAILURES.hit(&format!("message: {e}"))
                    {
                        tracing::error!(id = %m.0.id, error = %e, repeats,
                            "message not stored: answering 451 to its sender only");
                    }
                    results.push(Err(unavailable(&e)));
                }
            }
        }
        count_messages(&tx, results.iter().filter(|r| r.is_ok()).count() as i64)?;
        tx.commit()?;
        Ok(results)
    })();
    isolated.unwrap_or_else(fail_all)
}

/// Inserts one message (metadata, body, links to the mailboxes it is filed in).
/// Bodies from this size on are written through the incremental blob API (see
/// `insert_message`); smaller ones are bound, which costs one statement less.
const LARGE_BODY: usize = 256 * 1024;

fn insert_message(
    tx: &rusqlite::Connection,
    m: &Incoming,
    filed: &[String],
) -> rusqlite::Result<()> {
    let mut ins_msg = tx.prepare_cached(
        // `seq` past both the newest row and what the search index has covered: once every
        // message was deleted, SQLite would otherwise hand out old numbers again, below
        // `indexed_upto`, and the new mail would never be indexed for search.
        "INSERT INTO messages (seq, id, received_at, mail_from, rcpt_to, helo, client_ip, client_port,
            tls_version, tls_cipher, size, sha256, message_id, from_addr, to_addr, cc_addr,
            subject, date, content_type, charset, attachments, mailboxes)
         VALUES (max(coalesce((SELECT max(seq) FROM messages), 0),
                     coalesce((SELECT value FROM state WHERE key = 'indexed_upto'), 0)) + 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    let mut ins_body = tx.prepare_cached("INSERT INTO bodies (seq, raw) VALUES (?1, ?2)")?;
    let mut ins_box =
        tx.prepare_cached("INSERT OR IGNORE INTO mailbox_messages (mailbox, seq) VALUES (?1, ?2)")?;
    let rcpt = serde_json::to_string(&m.envelope.rcpt_to).expect("strings serialize");
    let attachments = serde_json::to_string(&m.meta.attachments).expect("attachments serialize");
    let mailboxes = serde_json::to_string(filed).expect("strings serialize");
    ins_msg.execute(params![
        &m.id.as_bytes()[..],
        m.received_at,
        m.envelope.mail_from,
        rcpt,
        m.session.helo,
        m.session.client.ip().to_string(),
        m.session.client.port(),
        m.session.tls.as_ref().map(|t| t.version.as_str()),
        m.session.tls.as_ref().map(|t| t.cipher.as_str()),
        m.size as i64,
        m.sha256,
        m.meta.message_id,
        m.meta.from,
        m.meta.to,
        m.meta.cc,
        m.meta.subject,
        m.meta.date,
        m.meta.content_type,
        m.meta.charset,
        attachments,
        mailboxes,
    ])?;
    let seq = tx.last_insert_rowid();
    if m.raw.len() < LARGE_BODY {
        ins_body.execute(params![seq, &m.raw[..]])?;
    } else {
        // A large body is written in place: binding it would make SQLite copy it (the bound
        // value, then the record built around it) while we still hold it, tripling what one
        // message costs in memory. A zero-filled blob of the right length, then the bytes
        // written into it through the incremental blob API (same transaction, same fsync).
        tx.prepare_cached("INSERT INTO bodies (seq, raw) VALUES (?1, zeroblob(?2))")?
            .execute(params![seq, m.raw.len() as i64])?;
        let mut blob = tx.blob_open(rusqlite::MAIN_DB, "bodies", "raw", seq, false)?;
        blob.write_all_at(&m.raw, 0)?;
    }
    if !m.findings.is_empty() {
        let findings = serde_json::to_string(&m.findings).expect("findings serialize");
        tx.prepare_cached("INSERT INTO message_checks (seq, findings) VALUES (?1, ?2)")?
            .execute(params![seq, findings])?;
    }
    for target in filed {
        ins_box.execute(params![target, seq])?;
    }
    Ok(())
}
