//! Search indexing, done by the writer thread when no delivery waits: committed messages
//! are added to the contentless FTS5 index a step at a time, after their 250.

use std::time::{Duration, Instant};

use intake_core::{SearchMode, mime};
use rusqlite::{Connection, OptionalExtension, params};

/// How long one indexing step may run before it commits what it has.
pub(super) const INDEX_STEP_TIME: Duration = Duration::from_millis(25);

/// Indexes up to `limit` messages after `after` (fewer when [`INDEX_STEP_TIME`] runs out),
/// in one transaction. `Ok(None)`: nothing to index.
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
        let mut done = 0;
        {
            let mut next = tx.prepare_cached(
                "SELECT m.seq, coalesce(m.subject, ''),
                        m.mail_from || ' ' || m.rcpt_to || ' ' || coalesce(m.from_addr, '') || ' ' ||
                        coalesce(m.to_addr, '') || ' ' || coalesce(m.cc_addr, '')
                 FROM messages m WHERE m.seq > ?1 ORDER BY m.seq LIMIT ?2",
            )?;
            let mut body = tx.prepare_cached("SELECT raw FROM bodies WHERE seq = ?1")?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO search_index (rowid, subject, addresses, body, headers) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            // A few rows at a time, so that a step cut short by the clock has not read rows
            // it does not index.
            'step: while done < limit {
                let rows: Vec<(i64, String, String)> = next
                    .query_map(params![last, (limit - done).min(32)], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<Result<_, _>>()?;
                if rows.is_empty() {
                    break;
                }
                for (seq, subject, addresses) in &rows {
                    let (text, headers) = body
                        .query_row([seq], |r| {
                            let raw = r.get_ref(0)?.as_blob()?;
                            Ok(if mode.indexes_body() {
                                mime::index_text(raw)
                            } else {
                                (String::new(), mime::index_headers(raw))
                            })
                        })
                        .optional()?
                        .unwrap_or_default();
                    ins.execute(params![seq, subject, addresses, text, headers])?;
                    last = *seq;
                    done += 1;
                    if started.elapsed() >= INDEX_STEP_TIME {
                        break 'step;
                    }
                }
            }
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
