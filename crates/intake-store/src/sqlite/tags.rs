//! Tags on messages (`message_tags`, schema version 7), written on the policy connection
//! in a transaction of their own; the writer drops a message's tags with the message.

use intake_core::MessageId;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The table, created by `IF NOT EXISTS` on open (one self-contained upgrade step).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS message_tags (
    seq INTEGER NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (seq, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_tags_tag ON message_tags (tag);
";

fn seq_of(c: &Connection, id: MessageId) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT seq FROM messages WHERE id = ?1")?
        .query_row([&id.as_bytes()[..]], |r| r.get(0))
        .optional()
}

pub(super) fn get(c: &Connection, id: MessageId) -> rusqlite::Result<Option<Vec<String>>> {
    let Some(seq) = seq_of(c, id)? else {
        return Ok(None);
    };
    let mut st = c.prepare_cached("SELECT tag FROM message_tags WHERE seq = ?1 ORDER BY tag")?;
    st.query_map([seq], |r| r.get(0))?
        .collect::<Result<_, _>>()
        .map(Some)
}

pub(super) fn put(c: &mut Connection, id: MessageId, tags: &[String]) -> rusqlite::Result<bool> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(seq) = seq_of(&tx, id)? else {
        return Ok(false);
    };
    tx.prepare_cached("DELETE FROM message_tags WHERE seq = ?1")?
        .execute([seq])?;
    for t in tags {
        tx.prepare_cached("INSERT OR IGNORE INTO message_tags (seq, tag) VALUES (?1, ?2)")?
            .execute(params![seq, t])?;
    }
    tx.commit()?;
    Ok(true)
}

pub(super) fn all(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT DISTINCT tag FROM message_tags ORDER BY tag")?;
    st.query_map([], |r| r.get(0))?.collect()
}

pub(super) fn rename(c: &mut Connection, from: &str, to: &str) -> rusqlite::Result<u64> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT OR IGNORE INTO message_tags (seq, tag)
         SELECT seq, ?2 FROM message_tags WHERE tag = ?1",
        params![from, to],
    )?;
    let n = tx.execute("DELETE FROM message_tags WHERE tag = ?1", [from])?;
    tx.commit()?;
    Ok(n as u64)
}

pub(super) fn remove(c: &Connection, tag: &str) -> rusqlite::Result<u64> {
    c.execute("DELETE FROM message_tags WHERE tag = ?1", [tag])
        .map(|n| n as u64)
}
