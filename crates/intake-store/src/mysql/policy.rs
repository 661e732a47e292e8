//! Policy state (valid recipients, greylisting), SMTP AUTH users and the shared `meta`
//! values, on the pool. Keys arrive normalized by the layer.

use intake_core::{GreyRecord, StoreError, User};
use sqlx::MySqlPool;

use super::{ER_DUP_ENTRY, error_number, unavailable};

/// Inserts a row; `false` when its key was there already (a plain INSERT, so that no
/// other error is turned into a warning as `INSERT IGNORE` would).
async fn insert_new(
    q: sqlx::query::Query<'_, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    pool: &MySqlPool,
) -> Result<bool, StoreError> {
    match q.execute(pool).await {
        Ok(_) => Ok(true),
        Err(e) if error_number(&e) == Some(ER_DUP_ENTRY) => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

/// The value under `key`, storing `value` first if there is none. Under concurrency the
/// primary key decides: one INSERT wins, the others read its value.
pub(super) async fn meta_get_or_insert(
    pool: &MySqlPool,
    key: &str,
    value: &str,
) -> Result<String, StoreError> {
    insert_new(
        sqlx::query("INSERT INTO meta (k, value) VALUES (?, ?)")
            .bind(key)
            .bind(value),
        pool,
    )
    .await?;
    sqlx::query_scalar("SELECT value FROM meta WHERE k = ?")
        .bind(key)
        .fetch_one(pool)
        .await
        .map_err(unavailable)
}

pub(super) async fn recipient_add(pool: &MySqlPool, address: &str) -> Result<bool, StoreError> {
    insert_new(
        sqlx::query("INSERT INTO recipients (address) VALUES (?)").bind(address),
        pool,
    )
    .await
}

pub(super) async fn recipient_remove(pool: &MySqlPool, address: &str) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM recipients WHERE address = ?")
        .bind(address)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(unavailable)
}

pub(super) async fn recipient_list(pool: &MySqlPool) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT address FROM recipients ORDER BY address")
        .fetch_all(pool)
        .await
        .map_err(unavailable)
}

/// `Some(listed)` for the address or its `@domain`; `None` when the table is empty.
pub(super) async fn recipient_lookup(
    pool: &MySqlPool,
    address: &str,
) -> Result<Option<bool>, StoreError> {
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    let (found, any): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE address IN (?, ?)),
                EXISTS (SELECT 1 FROM recipients)",
    )
    .bind(address)
    .bind(domain)
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    Ok(any.then_some(found))
}

#[derive(sqlx::FromRow)]
struct GreyRow {
    first_seen: i64,
    last_seen: i64,
    passes: i64,
}

pub(super) async fn greylist_get(
    pool: &MySqlPool,
    key: &str,
) -> Result<Option<GreyRecord>, StoreError> {
    let row: Option<GreyRow> =
        sqlx::query_as("SELECT first_seen, last_seen, passes FROM greylist WHERE k = ?")
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
    Ok(row.map(|r| GreyRecord {
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        passes: r.passes.clamp(0, u32::MAX as i64) as u32,
    }))
}

pub(super) async fn greylist_put(
    pool: &MySqlPool,
    key: &str,
    g: GreyRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO greylist (k, first_seen, last_seen, passes) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE first_seen = VALUES(first_seen),
             last_seen = VALUES(last_seen), passes = VALUES(passes)",
    )
    .bind(key)
    .bind(g.first_seen)
    .bind(g.last_seen)
    .bind(i64::from(g.passes))
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(unavailable)
}

pub(super) async fn greylist_expire(pool: &MySqlPool, before_ms: i64) -> Result<u64, StoreError> {
    sqlx::query("DELETE FROM greylist WHERE last_seen < ?")
        .bind(before_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(unavailable)
}

#[derive(sqlx::FromRow)]
struct UserRow {
    address: String,
    password_hash: String,
    enabled: bool,
    senders: String,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            address: r.address,
            password_hash: r.password_hash,
            enabled: r.enabled,
            senders: serde_json::from_str(&r.senders).unwrap_or_default(),
        }
    }
}

pub(super) async fn user_get(pool: &MySqlPool, address: &str) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT address, password_hash, enabled, senders FROM users WHERE address = ?",
    )
    .bind(address)
    .fetch_optional(pool)
    .await
    .map_err(unavailable)?;
    Ok(row.map(User::from))
}

pub(super) async fn user_add(pool: &MySqlPool, u: &User) -> Result<bool, StoreError> {
    let senders = serde_json::to_string(&u.senders).expect("strings serialize");
    insert_new(
        sqlx::query(
            "INSERT INTO users (address, password_hash, enabled, senders) VALUES (?, ?, ?, ?)",
        )
        .bind(u.address.as_str())
        .bind(u.password_hash.as_str())
        .bind(u.enabled)
        .bind(senders),
        pool,
    )
    .await
}

/// The connection reports rows matched (CLIENT_FOUND_ROWS), so setting a value to what it
/// is already still answers `true`.
pub(super) async fn user_set_password(
    pool: &MySqlPool,
    address: &str,
    hash: &str,
) -> Result<bool, StoreError> {
    sqlx::query("UPDATE users SET password_hash = ? WHERE address = ?")
        .bind(hash)
        .bind(address)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(unavailable)
}

pub(super) async fn user_set_enabled(
    pool: &MySqlPool,
    address: &str,
    enabled: bool,
) -> Result<bool, StoreError> {
    sqlx::query("UPDATE users SET enabled = ? WHERE address = ?")
        .bind(enabled)
        .bind(address)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(unavailable)
}

pub(super) async fn user_list(pool: &MySqlPool) -> Result<Vec<User>, StoreError> {
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT address, password_hash, enabled, senders FROM users ORDER BY address",
    )
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(rows.into_iter().map(User::from).collect())
}
