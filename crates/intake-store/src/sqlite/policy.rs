//! Policy state: valid recipients and greylisting records.

use intake_core::GreyRecord;
use rusqlite::{Connection, OptionalExtension, params};

/// Policy writes are small and frequent and need not survive a power cut (a lost greylist
/// record costs the sender one more retry), so this connection does not fsync each commit.
pub(super) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")
}

/// How a recipient entry is kept: trimmed, lower-cased (`@domain` stays as it is).
pub(super) fn recipient_key(address: &str) -> String {
    address.trim().trim_end_matches('.').to_lowercase()
}

pub(super) fn recipient_add(c: &Connection, address: &str) -> rusqlite::Result<bool> {
    c.execute(
        "INSERT INTO recipients (address) VALUES (?1) ON CONFLICT DO NOTHING",
        [address],
    )
    .map(|n| n > 0)
}

pub(super) fn recipient_remove(c: &Connection, address: &str) -> rusqlite::Result<bool> {
    c.execute("DELETE FROM recipients WHERE address = ?1", [address])
        .map(|n| n > 0)
}

pub(super) fn recipient_list(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT address FROM recipients ORDER BY address")?;
    st.query_map([], |r| r.get(0))?.collect()
}

/// `Some(listed)` for the address or its `@domain`; `None` when the table is empty.
pub(super) fn recipient_lookup(c: &Connection, address: &str) -> rusqlite::Result<Option<bool>> {
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    let mut st = c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE address IN (?1, ?2)),
                EXISTS (SELECT 1 FROM recipients)",
    )?;
    let (found, any): (bool, bool) =
        st.query_row(params![address, domain], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(any.then_some(found))
}

pub(super) fn greylist_get(c: &Connection, key: &str) -> rusqlite::Result<Option<GreyRecord>> {
    let mut st =
        c.prepare_cached("SELECT first_seen, last_seen, passes FROM greylist WHERE key = ?1")?;
    st.query_row([key], |r| {
        Ok(GreyRecord {
            first_seen: r.get(0)?,
            last_seen: r.get(1)?,
            passes: r.get(2)?,
        })
    })
    .optional()
}

pub(super) fn greylist_put(c: &Connection, key: &str, g: GreyRecord) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO greylist (key, first_seen, last_seen, passes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen,
             last_seen = excluded.last_seen, passes = excluded.passes",
    )?;
    st.execute(params![key, g.first_seen, g.last_seen, g.passes])
        .map(|_| ())
}

pub(super) fn greylist_expire(c: &Connection, before_ms: i64) -> rusqlite::Result<u64> {
    c.execute("DELETE FROM greylist WHERE last_seen < ?1", [before_ms])
        .map(|n| n as u64)
}
