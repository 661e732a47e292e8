//! SMTP AUTH users (the `users` table), written on the policy connection: a change is seen
//! by the next AUTH, no reload needed.

use intake_core::User;
use rusqlite::{Connection, OptionalExtension, params};

/// How an address is kept: trimmed and lower-cased.
pub(super) fn key(address: &str) -> String {
    address.trim().to_lowercase()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let senders: String = r.get(3)?;
    Ok(User {
        address: r.get(0)?,
        password_hash: r.get(1)?,
        enabled: r.get(2)?,
        senders: serde_json::from_str(&senders).unwrap_or_default(),
    })
}

pub(super) fn get(c: &Connection, address: &str) -> rusqlite::Result<Option<User>> {
    let mut st = c.prepare_cached(
        "SELECT address, password_hash, enabled, senders FROM users WHERE address = ?1",
    )?;
    st.query_row([address], row).optional()
}

pub(super) fn add(c: &Connection, u: &User) -> rusqlite::Result<bool> {
    let senders: Vec<String> = u.senders.iter().map(|s| key(s)).collect();
    c.execute(
        "INSERT INTO users (address, password_hash, enabled, senders) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![
            key(&u.address),
            u.password_hash,
            u.enabled,
            serde_json::to_string(&senders).expect("strings")
        ],
    )
    .map(|n| n > 0)
}

pub(super) fn set_password(c: &Connection, address: &str, hash: &str) -> rusqlite::Result<bool> {
    c.execute(
        "UPDATE users SET password_hash = ?2 WHERE address = ?1",
        params![address, hash],
    )
    .map(|n| n > 0)
}

pub(super) fn set_enabled(c: &Connection, address: &str, enabled: bool) -> rusqlite::Result<bool> {
    c.execute(
        "UPDATE users SET enabled = ?2 WHERE address = ?1",
        params![address, enabled],
    )
    .map(|n| n > 0)
}

pub(super) fn list(c: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut st = c.prepare_cached(
        "SELECT address, password_hash, enabled, senders FROM users ORDER BY address",
    )?;
    st.query_map([], row)?.collect()
}
