//! Search indexing, done by the writer thread when no delivery waits: committed messages
//! are added to the contentless FTS5 index a step at a time, after their 250.

use std::time::{Duration, Instant};

use intake_core::{SearchMode, mime};
use rusqlite::{Connection, params};

/// How long one indexing step may run before it commits what it has.
pub(super) const INDEX_STEP_TIME: Duration = Duration::from_millis(25);

/// Indexes up to `limit` messages after `after` (fewer when [`INDEX_STEP_TIME`] runs out),
/// in one transaction. `Ok(None)`: nothing to index.
///
/// The messages are read with their bodies in one pass (a join, in `seq` order), and each
/// row is indexed while it is read: its text is borrowed from the row (a plain-text body is
/// not copied at all) and nothing is read that the step does not index.
///
/// The index is rebuildable from the stored messages (`indexed_upto` in `state`, written in
/// the same transaction, says how far it got), so its commits are not fsync'd
/// (`synchronous = NORMAL` for this transaction only): a crash can lose the last index
/// commits, never a message, and the writer indexes those messages again after a restart.
/// The next delivery commit (`FULL`) syncs the WAL, index frames included.
pub(super) fn index_chunk(
    conn: &mut Connection,
    after: i64,
    limit: i64,
    mode: SearchMode,
) -> rusqlite::Result<Option<i64>> {
    let started = Instant::now();
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE seq > ?1)")?
        .query_row([after], |r| r.get(0))?;
    if !any {
        return Ok(None);
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let result = (|| {
        let tx = conn.transaction()?;
        let mut last = after;
        {
            // A message whose body row is missing is indexed from its columns alone.
            let mut next = tx.prepare_cached(
                "SELECT m.seq, coalesce(m.subject, ''),
                        m.mail_from || ' ' || m.rcpt_to || ' ' || coalesce(m.from_addr, '') || ' ' ||
                        coalesce(m.to_addr, '') || ' ' || coalesce(m.cc_addr, ''),
                        b.raw
                 FROM messages m LEFT JOIN bodies b ON b.seq = m.seq
                 WHERE m.seq > ?1 ORDER BY m.seq LIMIT ?2",
            )?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO search_index (rowid, subject, addresses, body, headers) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut rows = next.query(params![after, limit])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let subject = row.get_ref(1)?.as_str()?;
                let addresses = row.get_ref(2)?.as_str()?;
                let raw = row.get_ref(3)?.as_blob_or_null()?.unwrap_or_default();
                let (text, headers) = if mode.indexes_body() {
                    mime::index_text(raw)
                } else {
                    (Default::default(), mime::index_headers(raw))
                };
                ins.execute(params![seq, subject, addresses, &*text, headers])?;
                last = seq;
                if started.elapsed() >= INDEX_STEP_TIME {
                    break;
                }
            }
            drop(rows);
            tx.execute(
                "INSERT INTO state (key, value) VALUES ('indexed_upto', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [last],
            )?;
        }
        tx.commit()?;
        Ok(Some(last))
    })();
    conn.pragma_update(None, "synchronous", "FULL")?;
    result
}
